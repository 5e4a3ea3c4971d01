//! Server notifications, typed: one [`ServerNotification`] variant per notification of the
//! contract, carrying its data struct. The variant decides the method name, so a server
//! never writes one by hand; several notifications share a data shape
//! (`producerPaused` / `producerResumed` / `producerClosed`), which is why the name lives
//! on the variant and not on the struct.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::payloads::{
    ActiveSpeakerNotification, ConsumerClosedNotification, ConsumerLayersChangedNotification,
    ConsumerNotification, ConsumerScoreNotification, DataConsumerIdRequest, DataProducerIdRequest,
    IceRestartRequiredNotification, NewDataProducerNotification, P2pSignalNotification,
    PeerJoinedNotification, PeerLeftNotification, ProducerPeerNotification,
    ProducerScoreNotification, RoomClosedNotification, RoomProducerInfo,
    TransportStateChangedNotification,
};
use super::request::RequestError;
use super::{Message, Notification, notification};

/// A notification the server sends, with its typed data.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerNotification {
    /// `peerJoined`.
    PeerJoined(PeerJoinedNotification),
    /// `peerLeft`.
    PeerLeft(PeerLeftNotification),
    /// `newProducer`.
    NewProducer(RoomProducerInfo),
    /// `producerClosed`.
    ProducerClosed(ProducerPeerNotification),
    /// `producerPaused`.
    ProducerPaused(ProducerPeerNotification),
    /// `producerResumed`.
    ProducerResumed(ProducerPeerNotification),
    /// `consumerClosed`.
    ConsumerClosed(ConsumerClosedNotification),
    /// `consumerPaused` (its producer paused).
    ConsumerPaused(ConsumerNotification),
    /// `consumerResumed` (its producer resumed).
    ConsumerResumed(ConsumerNotification),
    /// `consumerLayersChanged`.
    ConsumerLayersChanged(ConsumerLayersChangedNotification),
    /// `consumerScore`.
    ConsumerScore(ConsumerScoreNotification),
    /// `producerScore`.
    ProducerScore(ProducerScoreNotification),
    /// `activeSpeaker`.
    ActiveSpeaker(ActiveSpeakerNotification),
    /// `transportStateChanged`.
    TransportStateChanged(TransportStateChangedNotification),
    /// `iceRestartRequired`.
    IceRestartRequired(IceRestartRequiredNotification),
    /// `newDataProducer`.
    NewDataProducer(NewDataProducerNotification),
    /// `dataProducerClosed`.
    DataProducerClosed(DataProducerIdRequest),
    /// `dataConsumerClosed`.
    DataConsumerClosed(DataConsumerIdRequest),
    /// `roomClosed`.
    RoomClosed(RoomClosedNotification),
    /// `p2pSignal` (relayed from another peer).
    P2pSignal(P2pSignalNotification),
}

fn json<T: Serialize>(t: &T) -> Result<Value, serde_json::Error> {
    serde_json::to_value(t)
}

fn read<T: DeserializeOwned>(data: &Value) -> Result<T, RequestError> {
    T::deserialize(data).map_err(|e| RequestError::InvalidData {
        path: None,
        message: e.to_string(),
    })
}

impl ServerNotification {
    /// The notification's method name.
    pub fn method(&self) -> &'static str {
        use notification as n;
        match self {
            Self::PeerJoined(_) => n::PEER_JOINED,
            Self::PeerLeft(_) => n::PEER_LEFT,
            Self::NewProducer(_) => n::NEW_PRODUCER,
            Self::ProducerClosed(_) => n::PRODUCER_CLOSED,
            Self::ProducerPaused(_) => n::PRODUCER_PAUSED,
            Self::ProducerResumed(_) => n::PRODUCER_RESUMED,
            Self::ConsumerClosed(_) => n::CONSUMER_CLOSED,
            Self::ConsumerPaused(_) => n::CONSUMER_PAUSED,
            Self::ConsumerResumed(_) => n::CONSUMER_RESUMED,
            Self::ConsumerLayersChanged(_) => n::CONSUMER_LAYERS_CHANGED,
            Self::ConsumerScore(_) => n::CONSUMER_SCORE,
            Self::ProducerScore(_) => n::PRODUCER_SCORE,
            Self::ActiveSpeaker(_) => n::ACTIVE_SPEAKER,
            Self::TransportStateChanged(_) => n::TRANSPORT_STATE_CHANGED,
            Self::IceRestartRequired(_) => n::ICE_RESTART_REQUIRED,
            Self::NewDataProducer(_) => n::NEW_DATA_PRODUCER,
            Self::DataProducerClosed(_) => n::DATA_PRODUCER_CLOSED,
            Self::DataConsumerClosed(_) => n::DATA_CONSUMER_CLOSED,
            Self::RoomClosed(_) => n::ROOM_CLOSED,
            Self::P2pSignal(_) => n::P2P_SIGNAL,
        }
    }

    /// The notification's data as sent (an error only if a payload failed to serialize).
    pub fn data(&self) -> Result<Value, serde_json::Error> {
        match self {
            Self::PeerJoined(d) => json(d),
            Self::PeerLeft(d) => json(d),
            Self::NewProducer(d) => json(d),
            Self::ProducerClosed(d) | Self::ProducerPaused(d) | Self::ProducerResumed(d) => json(d),
            Self::ConsumerClosed(d) => json(d),
            Self::ConsumerPaused(d) | Self::ConsumerResumed(d) => json(d),
            Self::ConsumerLayersChanged(d) => json(d),
            Self::ConsumerScore(d) => json(d),
            Self::ProducerScore(d) => json(d),
            Self::ActiveSpeaker(d) => json(d),
            Self::TransportStateChanged(d) => json(d),
            Self::IceRestartRequired(d) => json(d),
            Self::NewDataProducer(d) => json(d),
            Self::DataProducerClosed(d) => json(d),
            Self::DataConsumerClosed(d) => json(d),
            Self::RoomClosed(d) => json(d),
            Self::P2pSignal(d) => json(d),
        }
    }

    /// The protoo frame.
    pub fn to_message(&self) -> Result<Message, serde_json::Error> {
        Ok(Message::Notification(Notification {
            method: self.method().to_owned(),
            data: self.data()?,
        }))
    }

    /// The frame the server sends ([`Message::to_canonical_json`] of
    /// [`ServerNotification::to_message`]).
    pub fn to_frame(&self) -> Result<String, serde_json::Error> {
        Ok(self.to_message()?.to_canonical_json())
    }

    /// Reads a received notification (for clients); a method the contract does not have
    /// is [`RequestError::UnknownMethod`].
    pub fn parse(method: &str, data: &Value) -> Result<Self, RequestError> {
        use notification as n;
        Ok(match method {
            n::PEER_JOINED => Self::PeerJoined(read(data)?),
            n::PEER_LEFT => Self::PeerLeft(read(data)?),
            n::NEW_PRODUCER => Self::NewProducer(read(data)?),
            n::PRODUCER_CLOSED => Self::ProducerClosed(read(data)?),
            n::PRODUCER_PAUSED => Self::ProducerPaused(read(data)?),
            n::PRODUCER_RESUMED => Self::ProducerResumed(read(data)?),
            n::CONSUMER_CLOSED => Self::ConsumerClosed(read(data)?),
            n::CONSUMER_PAUSED => Self::ConsumerPaused(read(data)?),
            n::CONSUMER_RESUMED => Self::ConsumerResumed(read(data)?),
            n::CONSUMER_LAYERS_CHANGED => Self::ConsumerLayersChanged(read(data)?),
            n::CONSUMER_SCORE => Self::ConsumerScore(read(data)?),
            n::PRODUCER_SCORE => Self::ProducerScore(read(data)?),
            n::ACTIVE_SPEAKER => Self::ActiveSpeaker(read(data)?),
            n::TRANSPORT_STATE_CHANGED => Self::TransportStateChanged(read(data)?),
            n::ICE_RESTART_REQUIRED => Self::IceRestartRequired(read(data)?),
            n::NEW_DATA_PRODUCER => Self::NewDataProducer(read(data)?),
            n::DATA_PRODUCER_CLOSED => Self::DataProducerClosed(read(data)?),
            n::DATA_CONSUMER_CLOSED => Self::DataConsumerClosed(read(data)?),
            n::ROOM_CLOSED => Self::RoomClosed(read(data)?),
            n::P2P_SIGNAL => Self::P2pSignal(read(data)?),
            other => return Err(RequestError::UnknownMethod(other.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp_parameters::MediaKind;
    use crate::transport::{DtlsState, IceState};
    use serde_json::json;

    /// One of each, with the data the server sends (the shapes of PROTOCOL.md).
    fn samples() -> Vec<(ServerNotification, Value)> {
        let producer = ProducerPeerNotification {
            producer_id: "p".into(),
            peer_id: "a".into(),
        };
        let consumer = ConsumerNotification {
            consumer_id: "c".into(),
        };
        vec![
            (
                ServerNotification::PeerJoined(PeerJoinedNotification {
                    peer_id: "a".into(),
                    display_name: "Ann".into(),
                    app_data: json!({"k": 1}),
                }),
                json!({"peerId": "a", "displayName": "Ann", "appData": {"k": 1}}),
            ),
            (
                ServerNotification::PeerLeft(PeerLeftNotification {
                    peer_id: "a".into(),
                }),
                json!({"peerId": "a"}),
            ),
            (
                ServerNotification::NewProducer(RoomProducerInfo {
                    producer_id: "p".into(),
                    peer_id: "a".into(),
                    kind: MediaKind::Video,
                    app_data: json!({}),
                    paused: false,
                }),
                json!({"producerId": "p", "peerId": "a", "kind": "video", "appData": {}, "paused": false}),
            ),
            (
                ServerNotification::ProducerClosed(producer.clone()),
                json!({"producerId": "p", "peerId": "a"}),
            ),
            (
                ServerNotification::ProducerPaused(producer.clone()),
                json!({"producerId": "p", "peerId": "a"}),
            ),
            (
                ServerNotification::ProducerResumed(producer),
                json!({"producerId": "p", "peerId": "a"}),
            ),
            (
                ServerNotification::ConsumerClosed(ConsumerClosedNotification {
                    consumer_id: "c".into(),
                    producer_id: "p".into(),
                    reason: "producerClosed".into(),
                }),
                json!({"consumerId": "c", "producerId": "p", "reason": "producerClosed"}),
            ),
            (
                ServerNotification::ConsumerPaused(consumer.clone()),
                json!({"consumerId": "c"}),
            ),
            (
                ServerNotification::ConsumerResumed(consumer),
                json!({"consumerId": "c"}),
            ),
            (
                ServerNotification::ConsumerLayersChanged(ConsumerLayersChangedNotification {
                    consumer_id: "c".into(),
                    spatial_layer: Some(1),
                    temporal_layer: None,
                }),
                json!({"consumerId": "c", "spatialLayer": 1, "temporalLayer": null}),
            ),
            (
                ServerNotification::ConsumerScore(ConsumerScoreNotification {
                    consumer_id: "c".into(),
                    score: 9,
                    producer_score: 10,
                }),
                json!({"consumerId": "c", "score": 9, "producerScore": 10}),
            ),
            (
                ServerNotification::ProducerScore(ProducerScoreNotification {
                    producer_id: "p".into(),
                    score: 7,
                }),
                json!({"producerId": "p", "score": 7}),
            ),
            (
                ServerNotification::ActiveSpeaker(ActiveSpeakerNotification {
                    peer_id: "a".into(),
                    producer_id: "p".into(),
                    volume: -30,
                }),
                json!({"peerId": "a", "producerId": "p", "volume": -30}),
            ),
            (
                ServerNotification::TransportStateChanged(TransportStateChangedNotification {
                    transport_id: "t".into(),
                    ice_state: IceState::Connected,
                    dtls_state: DtlsState::Connecting,
                }),
                json!({"transportId": "t", "iceState": "connected", "dtlsState": "connecting"}),
            ),
            (
                ServerNotification::IceRestartRequired(IceRestartRequiredNotification {
                    transport_id: "t".into(),
                }),
                json!({"transportId": "t"}),
            ),
            (
                ServerNotification::NewDataProducer(NewDataProducerNotification {
                    data_producer_id: "d".into(),
                    peer_id: "a".into(),
                    label: "chat".into(),
                    protocol: "".into(),
                    app_data: json!({"x": 1}),
                }),
                json!({"dataProducerId": "d", "peerId": "a", "label": "chat", "protocol": "",
                       "appData": {"x": 1}}),
            ),
            (
                ServerNotification::DataProducerClosed(DataProducerIdRequest {
                    data_producer_id: "d".into(),
                }),
                json!({"dataProducerId": "d"}),
            ),
            (
                ServerNotification::DataConsumerClosed(DataConsumerIdRequest {
                    data_consumer_id: "d".into(),
                }),
                json!({"dataConsumerId": "d"}),
            ),
            (
                ServerNotification::RoomClosed(RoomClosedNotification {
                    room_id: "r".into(),
                    reason: "admin".into(),
                }),
                json!({"roomId": "r", "reason": "admin"}),
            ),
            (
                ServerNotification::P2pSignal(P2pSignalNotification {
                    from_peer_id: "a".into(),
                    seq: 3,
                    payload: json!({"sdp": {"type": "offer", "sdp": "v=0"}}),
                }),
                json!({"fromPeerId": "a", "seq": 3, "payload": {"sdp": {"type": "offer", "sdp": "v=0"}}}),
            ),
        ]
    }

    #[test]
    fn every_notification_has_its_name_and_contract_shape() {
        let samples = samples();
        let mut names: Vec<&str> = samples.iter().map(|(n, _)| n.method()).collect();
        assert_eq!(
            names.len(),
            20,
            "one sample per notification of the contract"
        );
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 20, "names are distinct");
        for (n, data) in samples {
            assert_eq!(n.data().unwrap(), data, "{}", n.method());
            let Message::Notification(frame) = n.to_message().unwrap() else {
                unreachable!()
            };
            assert_eq!(frame.method, n.method());
            assert_eq!(
                ServerNotification::parse(&frame.method, &frame.data).unwrap(),
                n
            );
        }
        assert!(ServerNotification::parse("peerDanced", &json!({})).is_err());
    }

    #[test]
    fn frames_are_canonical_json() {
        let n = ServerNotification::PeerLeft(PeerLeftNotification {
            peer_id: "a".into(),
        });
        assert_eq!(
            n.to_frame().unwrap(),
            r#"{"data":{"peerId":"a"},"method":"peerLeft","notification":true}"#
        );
    }
}
