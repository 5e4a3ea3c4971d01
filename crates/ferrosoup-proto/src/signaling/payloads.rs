//! The `data` of every request, answer and notification of `PROTOCOL.md`, in the
//! wire's camelCase shapes. Requests are read with serde (unknown fields are ignored,
//! optional ones default as the contract says); answers and notifications are written
//! with serde, so a field added here is a field added on the wire.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::empty_object;
use crate::ortc::ProducerType;
use crate::rtp_parameters::{MediaKind, RtpCapabilities, RtpParameters};
use crate::transport::{
    DtlsParameters, DtlsState, IceCandidate, IceParameters, IceState, SctpCapabilities,
    SctpParameters, SctpStreamParameters,
};

// ---------------------------------------------------------------------------------
// Shared payload pieces
// ---------------------------------------------------------------------------------

/// Empty data (`{}`): `leaveRoom`, `ping`, and most answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// Direction of a WebRTC transport, from the client's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportDirection {
    /// The client sends media on it.
    Send,
    /// The client receives media on it.
    Recv,
}

/// Type of a consumer: that of its producer.
pub type ConsumerType = ProducerType;

fn default_true() -> bool {
    true
}

// ---------------------------------------------------------------------------------
// Requests and answers
// ---------------------------------------------------------------------------------

/// `createRoom` and `getRouterRtpCapabilities` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRoomRequest {
    /// Room to get or create.
    pub room_id: String,
}

/// Data of `getRouterRtpCapabilities` (same shape as `createRoom`).
pub type GetRouterRtpCapabilitiesRequest = CreateRoomRequest;

/// Answer to `createRoom`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRoomResponse {
    /// The room.
    pub room_id: String,
    /// The router's capabilities, for `Device.load`.
    pub rtp_capabilities: RtpCapabilities,
}

/// Answer to `getRouterRtpCapabilities`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetRouterRtpCapabilitiesResponse {
    /// The router's capabilities, for `Device.load`.
    pub rtp_capabilities: RtpCapabilities,
}

/// `joinRoom` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRoomRequest {
    /// Room to join.
    pub room_id: String,
    /// Wanted peer id (the server picks one when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
    /// Name shown to other peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The device's receive capabilities (default for `consume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtp_capabilities: Option<RtpCapabilities>,
    /// The device's SCTP capabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp_capabilities: Option<SctpCapabilities>,
    /// Application data shown to other peers.
    #[serde(default = "empty_object")]
    pub app_data: Value,
}

/// A producer in a [`PeerInfo`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerInfo {
    /// Producer id.
    pub producer_id: String,
    /// Media kind.
    pub kind: MediaKind,
    /// The producer's application data.
    #[serde(default = "empty_object")]
    pub app_data: Value,
    /// Whether it is paused.
    #[serde(default)]
    pub paused: bool,
}

/// A peer already in the room, in the `joinRoom` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerInfo {
    /// Peer id.
    pub peer_id: String,
    /// Display name (`""` when the peer gave none).
    #[serde(default)]
    pub display_name: String,
    /// The peer's application data.
    #[serde(default = "empty_object")]
    pub app_data: Value,
    /// The peer's producers.
    #[serde(default)]
    pub producers: Vec<ProducerInfo>,
    /// The peer's data producers (an extension of the contract: late joiners see the data
    /// producers that exist, as `newDataProducer` tells the peers already there).
    #[serde(default)]
    pub data_producers: Vec<DataProducerInfo>,
}

/// A data producer in a [`PeerInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataProducerInfo {
    /// Data producer id.
    pub data_producer_id: String,
    /// Data channel label.
    pub label: String,
    /// Data channel sub-protocol.
    pub protocol: String,
    /// The data producer's application data.
    #[serde(default = "empty_object")]
    pub app_data: Value,
}

/// Answer to `joinRoom`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRoomResponse {
    /// The peer's id.
    pub peer_id: String,
    /// Token to resume the session after a disconnection.
    pub session_token: String,
    /// The other peers in the room.
    pub peers: Vec<PeerInfo>,
}

/// `createTransport` / `createWebRtcTransport` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateTransportRequest {
    /// Whether the client sends or receives on it.
    pub direction: TransportDirection,
    /// Only TCP candidates.
    #[serde(default)]
    pub force_tcp: bool,
    /// TCP candidates first.
    #[serde(default)]
    pub prefer_tcp: bool,
    /// SCTP capabilities, to enable data channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp_capabilities: Option<SctpCapabilities>,
    /// Application data.
    #[serde(default = "empty_object")]
    pub app_data: Value,
}

/// Answer to `createTransport`: what `device.createSendTransport` /
/// `createRecvTransport` take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateTransportResponse {
    /// Transport id.
    pub id: String,
    /// Server ICE credentials.
    pub ice_parameters: IceParameters,
    /// Server ICE candidates.
    pub ice_candidates: Vec<IceCandidate>,
    /// Server DTLS parameters.
    pub dtls_parameters: DtlsParameters,
    /// SCTP parameters, when data channels are enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp_parameters: Option<SctpParameters>,
}

/// `connectTransport` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectTransportRequest {
    /// Transport id.
    pub transport_id: String,
    /// The client's DTLS parameters.
    pub dtls_parameters: DtlsParameters,
}

/// Data naming a transport: `restartIce`, `closeTransport`, `getTransportStats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransportIdRequest {
    /// Transport id.
    pub transport_id: String,
}

/// `restartIce` data.
pub type RestartIceRequest = TransportIdRequest;
/// `closeTransport` data.
pub type CloseTransportRequest = TransportIdRequest;
/// `getTransportStats` data.
pub type GetTransportStatsRequest = TransportIdRequest;

/// Answer to `restartIce`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartIceResponse {
    /// The new server ICE credentials.
    pub ice_parameters: IceParameters,
}

/// `setMaxIncomingBitrate` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetMaxIncomingBitrateRequest {
    /// Transport id.
    pub transport_id: String,
    /// Maximum incoming bitrate in bps.
    pub bitrate: u32,
}

/// `produce` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProduceRequest {
    /// Send transport id.
    pub transport_id: String,
    /// Media kind.
    pub kind: MediaKind,
    /// What the client sends.
    pub rtp_parameters: RtpParameters,
    /// Start paused.
    #[serde(default)]
    pub paused: bool,
    /// Application data.
    #[serde(default = "empty_object")]
    pub app_data: Value,
}

/// Answer to `produce`, `produceData` and other creations: the new id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdResponse {
    /// The new object's id.
    pub id: String,
}

/// Answer to `produce`.
pub type ProduceResponse = IdResponse;
/// Answer to `produceData`.
pub type ProduceDataResponse = IdResponse;

/// Data naming a producer: `pauseProducer`, `resumeProducer`, `closeProducer`,
/// `getProducerStats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerIdRequest {
    /// Producer id.
    pub producer_id: String,
}

/// `getProducerStats` data.
pub type GetProducerStatsRequest = ProducerIdRequest;

/// A producer of another peer: `getProducers` entries and `newProducer` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomProducerInfo {
    /// Producer id.
    pub producer_id: String,
    /// Owner peer id.
    pub peer_id: String,
    /// Media kind.
    pub kind: MediaKind,
    /// The producer's application data.
    #[serde(default = "empty_object")]
    pub app_data: Value,
    /// Whether it is paused.
    #[serde(default)]
    pub paused: bool,
}

/// Answer to `getProducers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetProducersResponse {
    /// Every producer in the room but the caller's own.
    pub producers: Vec<RoomProducerInfo>,
}

/// Spatial and (optionally) temporal layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerLayers {
    /// Spatial layer (0-based).
    pub spatial_layer: u8,
    /// Temporal layer (0-based); the highest when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporal_layer: Option<u8>,
}

/// `consume` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumeRequest {
    /// Receive transport id.
    pub transport_id: String,
    /// Producer to receive.
    pub producer_id: String,
    /// The device's capabilities (default: those given at `joinRoom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtp_capabilities: Option<RtpCapabilities>,
    /// Start paused (default `true`; resume once the client consumer exists).
    #[serde(default = "default_true")]
    pub paused: bool,
    /// Preferred layers for simulcast/SVC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_layers: Option<ConsumerLayers>,
    /// Application data.
    #[serde(default = "empty_object")]
    pub app_data: Value,
}

/// Answer to `consume`: what `transport.consume` takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumeResponse {
    /// Consumer id.
    pub id: String,
    /// Producer id.
    pub producer_id: String,
    /// Media kind.
    pub kind: MediaKind,
    /// What the server sends.
    pub rtp_parameters: RtpParameters,
    /// `simple`, `simulcast` or `svc`.
    #[serde(rename = "type")]
    pub r#type: ConsumerType,
    /// Whether the producer is paused.
    pub producer_paused: bool,
}

/// Data naming a consumer: `resumeConsumer`, `pauseConsumer`, `closeConsumer`,
/// `requestConsumerKeyFrame`, `getConsumerStats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerIdRequest {
    /// Consumer id.
    pub consumer_id: String,
}

/// `getConsumerStats` data.
pub type GetConsumerStatsRequest = ConsumerIdRequest;

/// `setConsumerPreferredLayers` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetConsumerPreferredLayersRequest {
    /// Consumer id.
    pub consumer_id: String,
    /// Spatial layer (0-based).
    pub spatial_layer: u8,
    /// Temporal layer (0-based); the highest when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporal_layer: Option<u8>,
}

/// `setConsumerPriority` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetConsumerPriorityRequest {
    /// Consumer id.
    pub consumer_id: String,
    /// Priority 1..=255, higher gets bandwidth first (0 is invalid).
    pub priority: u8,
}

/// `produceData` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProduceDataRequest {
    /// Send transport id.
    pub transport_id: String,
    /// SCTP stream used.
    pub sctp_stream_parameters: SctpStreamParameters,
    /// Data channel label.
    #[serde(default)]
    pub label: String,
    /// Data channel sub-protocol.
    #[serde(default)]
    pub protocol: String,
    /// Application data.
    #[serde(default = "empty_object")]
    pub app_data: Value,
}

/// `consumeData` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumeDataRequest {
    /// Receive transport id.
    pub transport_id: String,
    /// Data producer to receive.
    pub data_producer_id: String,
}

/// Answer to `consumeData`: what `transport.consumeData` takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumeDataResponse {
    /// Data consumer id.
    pub id: String,
    /// Data producer id.
    pub data_producer_id: String,
    /// SCTP stream used.
    pub sctp_stream_parameters: SctpStreamParameters,
    /// Data channel label.
    pub label: String,
    /// Data channel sub-protocol.
    pub protocol: String,
    /// The data producer's application data (an extension: what `transport.consumeData`
    /// may take as `appData`).
    #[serde(default = "empty_object")]
    pub app_data: Value,
}

/// `closeDataProducer` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataProducerIdRequest {
    /// Data producer id.
    pub data_producer_id: String,
}

/// `closeDataConsumer` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataConsumerIdRequest {
    /// Data consumer id.
    pub data_consumer_id: String,
}

/// Answer to `getTransportStats`, `getProducerStats` and `getConsumerStats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsResponse {
    /// Stats entries (RTT, packet loss, jitter, bitrate, score, layers).
    pub stats: Vec<Value>,
}

impl From<Value> for StatsResponse {
    /// The stats document of a transport, producer or consumer: an array is the entries,
    /// any other value one entry.
    fn from(stats: Value) -> Self {
        match stats {
            Value::Array(stats) => Self { stats },
            other => Self { stats: vec![other] },
        }
    }
}

// ---------------------------------------------------------------------------------
// Notifications
// ---------------------------------------------------------------------------------

/// `peerJoined` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerJoinedNotification {
    /// Peer id.
    pub peer_id: String,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    /// The peer's application data.
    #[serde(default = "empty_object")]
    pub app_data: Value,
}

/// `peerLeft` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerLeftNotification {
    /// Peer id.
    pub peer_id: String,
}

/// `newProducer` data.
pub type NewProducerNotification = RoomProducerInfo;

/// `producerClosed`, `producerPaused` and `producerResumed` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerPeerNotification {
    /// Producer id.
    pub producer_id: String,
    /// Owner peer id.
    pub peer_id: String,
}

/// `producerClosed` data.
pub type ProducerClosedNotification = ProducerPeerNotification;
/// `producerPaused` data.
pub type ProducerPausedNotification = ProducerPeerNotification;
/// `producerResumed` data.
pub type ProducerResumedNotification = ProducerPeerNotification;

/// `consumerClosed` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerClosedNotification {
    /// Consumer id.
    pub consumer_id: String,
    /// Its producer.
    pub producer_id: String,
    /// Why (e.g. `producerClosed`, `transportClosed`).
    pub reason: String,
}

/// `consumerPaused` and `consumerResumed` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerNotification {
    /// Consumer id.
    pub consumer_id: String,
}

/// `consumerPaused` data.
pub type ConsumerPausedNotification = ConsumerNotification;
/// `consumerResumed` data.
pub type ConsumerResumedNotification = ConsumerNotification;

/// `consumerLayersChanged` data; both layers are `null` when nothing is forwarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerLayersChangedNotification {
    /// Consumer id.
    pub consumer_id: String,
    /// Spatial layer forwarded.
    pub spatial_layer: Option<u8>,
    /// Temporal layer forwarded.
    pub temporal_layer: Option<u8>,
}

/// `consumerScore` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerScoreNotification {
    /// Consumer id.
    pub consumer_id: String,
    /// Score of the stream sent to the consumer (0..=10).
    pub score: u8,
    /// Score of the producer stream forwarded (0..=10).
    pub producer_score: u8,
}

/// `producerScore` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerScoreNotification {
    /// Producer id.
    pub producer_id: String,
    /// Score (0..=10).
    pub score: u8,
}

/// `activeSpeaker` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveSpeakerNotification {
    /// The loudest peer.
    pub peer_id: String,
    /// Its audio producer.
    pub producer_id: String,
    /// Volume in dBov (-127..=0).
    pub volume: i8,
}

/// `transportStateChanged` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransportStateChangedNotification {
    /// Transport id.
    pub transport_id: String,
    /// ICE state.
    pub ice_state: IceState,
    /// DTLS state.
    pub dtls_state: DtlsState,
}

/// `iceRestartRequired` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceRestartRequiredNotification {
    /// Transport id.
    pub transport_id: String,
}

/// `newDataProducer` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewDataProducerNotification {
    /// Data producer id.
    pub data_producer_id: String,
    /// Owner peer id.
    pub peer_id: String,
    /// Data channel label.
    pub label: String,
    /// Data channel sub-protocol.
    pub protocol: String,
    /// The data producer's application data (an extension).
    #[serde(default = "empty_object")]
    pub app_data: Value,
}

/// `dataProducerClosed` data.
pub type DataProducerClosedNotification = DataProducerIdRequest;
/// `dataConsumerClosed` data.
pub type DataConsumerClosedNotification = DataConsumerIdRequest;

/// `p2pSignal` data: an opaque `payload` (an SDP, an ICE candidate, ...) for the peer
/// `toPeerId` of the same room. `seq`, when given, must grow per (sender, target): a `seq`
/// at or below the last one relayed to that target is a duplicate (answered, not relayed);
/// without it the server takes the next number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct P2pSignalRequest {
    /// The peer to relay to.
    pub to_peer_id: String,
    /// The sender's sequence number for this target (1, 2, ...); the server's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// What to relay, as it is.
    pub payload: Value,
}

/// `p2pSignal` answer: the sequence number the payload was relayed under (or, for a
/// duplicate, the one it repeated), and whether it was a duplicate and not relayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct P2pSignalResponse {
    /// The payload's sequence number.
    pub seq: u64,
    /// `true`: this `seq` was relayed before (or is older than the last one); not relayed again.
    pub duplicate: bool,
}

/// `p2pSignal` notification data: a payload another peer of the room relayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct P2pSignalNotification {
    /// The sender.
    pub from_peer_id: String,
    /// Its sequence number for this receiver: grows by at least one per relayed payload.
    pub seq: u64,
    /// The payload, as sent.
    pub payload: Value,
}

/// `roomClosed` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomClosedNotification {
    /// Room id.
    pub room_id: String,
    /// Why (e.g. `closedByAdmin`, `shutdown`).
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signaling::{Message, Notification, Request, method, notification};
    use serde_json::json;

    #[test]
    fn typed_requests_default_and_name_fields() {
        let r = Message::parse(
            r#"{"request":true,"id":1,"method":"consume","data":{"transportId":"t","producerId":"p"}}"#,
        )
        .unwrap();
        let Message::Request(r) = r else {
            panic!("not a request")
        };
        let c: ConsumeRequest = r.parse_data().unwrap();
        assert!(c.paused);
        assert_eq!(c.app_data, json!({}));
        assert_eq!(c.rtp_capabilities, None);

        let bad = Request {
            id: 2,
            method: method::CONSUME.into(),
            data: json!({"transportId": "t"}),
        };
        let err = bad.parse_data::<ConsumeRequest>().unwrap_err();
        assert!(err.to_string().contains("producerId"), "{err}");

        let t: CreateTransportRequest =
            serde_json::from_value(json!({"direction": "send"})).unwrap();
        assert_eq!(t.direction, TransportDirection::Send);
        assert!(!t.force_tcp && !t.prefer_tcp);
        assert!(
            serde_json::from_value::<CreateTransportRequest>(json!({"direction": "up"})).is_err()
        );

        let j: JoinRoomRequest = serde_json::from_value(json!({
            "roomId": "r", "displayName": "Ann", "unknown": 1,
            "sctpCapabilities": {"numStreams": {"OS": 1024, "MIS": 1024}}
        }))
        .unwrap();
        assert_eq!(j.display_name.as_deref(), Some("Ann"));
        assert_eq!(j.peer_id, None);
        assert!(j.sctp_capabilities.is_some());

        let l: SetConsumerPreferredLayersRequest =
            serde_json::from_value(json!({"consumerId": "c", "spatialLayer": 2})).unwrap();
        assert_eq!((l.spatial_layer, l.temporal_layer), (2, None));
        assert!(
            serde_json::from_value::<SetConsumerPriorityRequest>(
                json!({"consumerId": "c", "priority": 256})
            )
            .is_err()
        );
    }

    #[test]
    fn answers_have_client_shapes() {
        let join = JoinRoomResponse {
            peer_id: "p1".into(),
            session_token: "s".into(),
            peers: vec![PeerInfo {
                peer_id: "p2".into(),
                display_name: "Bob".into(),
                app_data: json!({}),
                producers: vec![ProducerInfo {
                    producer_id: "x".into(),
                    kind: MediaKind::Video,
                    app_data: json!({"share": true}),
                    paused: false,
                }],
                data_producers: vec![DataProducerInfo {
                    data_producer_id: "d".into(),
                    label: "chat".into(),
                    protocol: "".into(),
                    app_data: json!({}),
                }],
            }],
        };
        assert_eq!(
            serde_json::to_value(&join).unwrap(),
            json!({"peerId": "p1", "sessionToken": "s", "peers": [{
                "peerId": "p2", "displayName": "Bob", "appData": {},
                "producers": [{"producerId": "x", "kind": "video", "appData": {"share": true}, "paused": false}],
                "dataProducers": [{"dataProducerId": "d", "label": "chat", "protocol": "", "appData": {}}]
            }]})
        );

        let consume = ConsumeResponse {
            id: "c".into(),
            producer_id: "p".into(),
            kind: MediaKind::Audio,
            rtp_parameters: RtpParameters::default(),
            r#type: ConsumerType::Simulcast,
            producer_paused: true,
        };
        let v = serde_json::to_value(&consume).unwrap();
        assert_eq!(v["type"], "simulcast");
        assert_eq!(v["producerPaused"], true);
        assert_eq!(v["rtpParameters"]["codecs"], json!([]));

        let layers = ConsumerLayersChangedNotification {
            consumer_id: "c".into(),
            spatial_layer: None,
            temporal_layer: None,
        };
        assert_eq!(
            serde_json::to_value(&layers).unwrap(),
            json!({"consumerId": "c", "spatialLayer": null, "temporalLayer": null})
        );

        let state = Notification::new(
            notification::TRANSPORT_STATE_CHANGED,
            &TransportStateChangedNotification {
                transport_id: "t".into(),
                ice_state: IceState::Completed,
                dtls_state: DtlsState::Connected,
            },
        )
        .unwrap();
        let text = serde_json::to_string(&Message::Notification(state)).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"notification": true, "method": "transportStateChanged",
                   "data": {"transportId": "t", "iceState": "completed", "dtlsState": "connected"}})
        );
    }
}
