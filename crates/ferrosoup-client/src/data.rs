//! Data producers and data consumers: SCTP streams over a transport's DTLS, as
//! mediasoup-client's `produceData` / `consumeData`.
//!
//! Every data channel is negotiated out of band (no DCEP): a data producer takes the next
//! free stream id of its send transport and announces it in `produceData`; a data consumer
//! uses the stream id the server chose in `consumeData`. The first channel of a transport
//! adds the `m=application` section to its description; later ones need no renegotiation.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ferrosoup_proto::transport::SctpStreamParameters;
use serde_json::{Value, json};
use webrtc::data_channel::{
    DataChannel, DataChannelEvent, RTCDataChannelInit, RTCDataChannelState,
};

use crate::error::{ClientError, Result};
use crate::transport::{RecvTransport, SCTP_BOOTSTRAP_STREAM, SendTransport, TransportShared};

/// Options of [`SendTransport::produce_data`].
#[derive(Debug, Clone, Default)]
pub struct DataProduceOptions {
    /// Channel label (`label`), shown to consumers.
    pub label: String,
    /// Sub-protocol name (`protocol`).
    pub protocol: String,
    /// In-order delivery. Default: true, unless a lifetime or retransmit limit is given
    /// (then false, as mediasoup-client does).
    pub ordered: Option<bool>,
    /// Partial reliability: drop a message not delivered within this many milliseconds.
    pub max_packet_life_time: Option<u16>,
    /// Partial reliability: retransmit a message at most this many times (0: never).
    pub max_retransmits: Option<u16>,
    /// `appData` of the data producer.
    pub app_data: Option<Value>,
}

impl DataProduceOptions {
    /// The SCTP stream parameters of these options on `stream_id`.
    fn stream_parameters(&self, stream_id: u16) -> SctpStreamParameters {
        let partial = self.max_packet_life_time.is_some() || self.max_retransmits.is_some();
        SctpStreamParameters {
            stream_id,
            ordered: Some(self.ordered.unwrap_or(!partial)),
            max_packet_life_time: self.max_packet_life_time,
            max_retransmits: self.max_retransmits,
        }
    }
}

/// The webrtc-rs options of a negotiated channel on `params`.
fn channel_init(params: &SctpStreamParameters, protocol: &str) -> RTCDataChannelInit {
    RTCDataChannelInit {
        ordered: params.ordered.unwrap_or(true),
        max_packet_life_time: params.max_packet_life_time,
        max_retransmits: params.max_retransmits,
        protocol: protocol.to_owned(),
        negotiated: Some(params.stream_id),
    }
}

/// One message received on a data consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataMessage {
    /// Sent as a string (PPID 51 or 56) rather than binary (53 or 57).
    pub is_text: bool,
    /// The payload (UTF-8 when `is_text`).
    pub data: Bytes,
}

impl DataMessage {
    /// The payload as text, when it was sent as a string and is valid UTF-8.
    pub fn text(&self) -> Option<&str> {
        self.is_text
            .then(|| std::str::from_utf8(&self.data).ok())
            .flatten()
    }
}

/// Waits until `channel` is open; consumes its events up to `OnOpen`.
async fn wait_open(channel: &Arc<dyn DataChannel>) -> Result<()> {
    if channel.ready_state().await? == RTCDataChannelState::Open {
        return Ok(());
    }
    while let Some(event) = channel.poll().await {
        match event {
            DataChannelEvent::OnOpen => return Ok(()),
            DataChannelEvent::OnClose => break,
            _ => {}
        }
    }
    Err(ClientError::InvalidState(
        "data channel closed before it opened".into(),
    ))
}

impl SendTransport {
    /// Opens a data channel on the next free SCTP stream id and sends `produceData`.
    /// The transport must have been created with
    /// [`TransportOptions::data_channels`](crate::TransportOptions::data_channels).
    pub async fn produce_data(&self, options: DataProduceOptions) -> Result<DataProducer> {
        let shared = &self.shared;
        if shared.sctp.is_none() {
            return Err(ClientError::InvalidState(
                "transport was created without data_channels".into(),
            ));
        }
        let mut neg = shared.negotiation.lock().await;
        let stream_id = neg.next_stream_id;
        neg.next_stream_id = (stream_id + 1) % SCTP_BOOTSTRAP_STREAM;
        let params = options.stream_parameters(stream_id);
        let channel = shared
            .pc
            .create_data_channel(
                &options.label,
                Some(channel_init(&params, &options.protocol)),
            )
            .await?;
        if neg.remote.data_mid().is_none() {
            // The offer now has m=application; the answer gets it too.
            shared.negotiate_as_offerer(&mut neg, |_, _| Ok(())).await?;
        }
        drop(neg);
        let mut request = json!({
            "transportId": shared.id,
            "sctpStreamParameters": params,
            "label": options.label,
            "protocol": options.protocol,
        });
        if let Some(app_data) = options.app_data {
            request["appData"] = app_data;
        }
        let answer = match shared.signaling.request("produceData", request).await {
            Ok(answer) => answer,
            Err(e) => {
                let _ = channel.close().await;
                return Err(e);
            }
        };
        let id = answer
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| ClientError::InvalidState("produceData answer lacks id".into()))?
            .to_owned();
        Ok(DataProducer {
            id,
            params,
            label: options.label,
            channel,
            shared: Arc::clone(shared),
        })
    }
}

impl RecvTransport {
    /// Sends `consumeData {dataProducerId}` and opens a data channel on the stream id the
    /// server chose. The transport must have been created with
    /// [`TransportOptions::data_channels`](crate::TransportOptions::data_channels).
    pub async fn consume_data(&self, data_producer_id: &str) -> Result<DataConsumer> {
        let shared = &self.shared;
        if shared.sctp.is_none() {
            return Err(ClientError::InvalidState(
                "transport was created without data_channels".into(),
            ));
        }
        let answer = shared
            .signaling
            .request(
                "consumeData",
                json!({ "transportId": shared.id, "dataProducerId": data_producer_id }),
            )
            .await?;
        let text = |k: &str| {
            answer
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_default()
        };
        let id = text("id");
        if id.is_empty() {
            return Err(ClientError::InvalidState(
                "consumeData answer lacks id".into(),
            ));
        }
        let params: SctpStreamParameters = serde_json::from_value(
            answer
                .get("sctpStreamParameters")
                .cloned()
                .unwrap_or_default(),
        )?;
        let label = text("label");
        let protocol = text("protocol");
        let mut neg = shared.negotiation.lock().await;
        // Registered before the association can carry anything on its stream.
        let channel = shared
            .pc
            .create_data_channel(&label, Some(channel_init(&params, &protocol)))
            .await?;
        if neg.remote.data_mid().is_none() {
            // The first negotiation of this transport: it adds m=application.
            shared.negotiate_as_answerer(&mut neg).await?;
        }
        drop(neg);
        Ok(DataConsumer {
            id,
            data_producer_id: data_producer_id.to_owned(),
            params,
            label,
            protocol,
            channel,
            shared: Arc::clone(shared),
        })
    }
}

/// A data channel the client sends on (`produceData`).
pub struct DataProducer {
    id: String,
    params: SctpStreamParameters,
    label: String,
    channel: Arc<dyn DataChannel>,
    shared: Arc<TransportShared>,
}

impl DataProducer {
    /// The server's data producer id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The SCTP stream parameters announced in `produceData`.
    pub fn sctp_stream_parameters(&self) -> &SctpStreamParameters {
        &self.params
    }

    /// The channel label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Waits until the channel is open (the SCTP association is up).
    pub async fn wait_open(&self) -> Result<()> {
        wait_open(&self.channel).await
    }

    /// Sends a string message (PPID 51, or 56 when empty).
    pub async fn send_text(&self, text: &str) -> Result<()> {
        self.channel.send_text(text).await?;
        Ok(())
    }

    /// Sends a binary message (PPID 53, or 57 when empty).
    pub async fn send_binary(&self, data: &[u8]) -> Result<()> {
        self.channel.send(BytesMut::from(data)).await?;
        Ok(())
    }

    /// Sends `closeDataProducer` and closes the channel; the server closes its data
    /// consumers (`dataConsumerClosed` to their peers).
    pub async fn close(self) -> Result<()> {
        let result = self
            .shared
            .signaling
            .request("closeDataProducer", json!({ "dataProducerId": self.id }))
            .await;
        self.channel.close().await?;
        result.map(|_| ())
    }
}

/// A data channel the client receives on (`consumeData`).
pub struct DataConsumer {
    id: String,
    data_producer_id: String,
    params: SctpStreamParameters,
    label: String,
    protocol: String,
    channel: Arc<dyn DataChannel>,
    shared: Arc<TransportShared>,
}

impl DataConsumer {
    /// The server's data consumer id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The data producer this consumes.
    pub fn data_producer_id(&self) -> &str {
        &self.data_producer_id
    }

    /// The SCTP stream parameters the server chose (stream id, reliability).
    pub fn sctp_stream_parameters(&self) -> &SctpStreamParameters {
        &self.params
    }

    /// The producer's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The producer's sub-protocol.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// Waits until the channel is open (the SCTP association is up).
    pub async fn wait_open(&self) -> Result<()> {
        wait_open(&self.channel).await
    }

    /// The next message; `None` once the channel is closed.
    pub async fn recv(&self) -> Option<DataMessage> {
        while let Some(event) = self.channel.poll().await {
            match event {
                DataChannelEvent::OnMessage(message) => {
                    return Some(DataMessage {
                        is_text: message.is_string,
                        data: message.data.freeze(),
                    });
                }
                DataChannelEvent::OnClose => return None,
                _ => {}
            }
        }
        None
    }

    /// Sends `closeDataConsumer` and closes the channel.
    pub async fn close(self) -> Result<()> {
        let result = self
            .shared
            .signaling
            .request("closeDataConsumer", json!({ "dataConsumerId": self.id }))
            .await;
        self.channel.close().await?;
        result.map(|_| ())
    }
}
