//! The signaling protocol: the protoo envelope ([`Message`]) and the typed `data`
//! of every request, answer and notification in `PROTOCOL.md`.
//!
//! Frames are parsed with [`Message::parse`], which tells invalid JSON apart from an
//! unknown envelope and keeps the request id when it can be read, so the server can
//! answer 400 to it. Request data is read with [`Request::parse_data`] into the
//! structs below; their serde errors name the missing or mistyped field.

use serde::de::{DeserializeOwned, Error as _};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::ortc::ProducerType;
use crate::rtp_parameters::{MediaKind, RtpCapabilities, RtpParameters};
use crate::transport::{
    DtlsParameters, DtlsState, IceCandidate, IceParameters, IceState, SctpCapabilities,
    SctpParameters, SctpStreamParameters,
};

/// Request method names.
pub mod method {
    /// Get or create a room; answers its router capabilities.
    pub const CREATE_ROOM: &str = "createRoom";
    /// The router capabilities of a room.
    pub const GET_ROUTER_RTP_CAPABILITIES: &str = "getRouterRtpCapabilities";
    /// Join a room as a peer.
    pub const JOIN_ROOM: &str = "joinRoom";
    /// Leave the room, closing everything the peer owns.
    pub const LEAVE_ROOM: &str = "leaveRoom";
    /// Create a WebRTC transport.
    pub const CREATE_TRANSPORT: &str = "createTransport";
    /// Alias of [`CREATE_TRANSPORT`] (mediasoup-demo's name).
    pub const CREATE_WEBRTC_TRANSPORT: &str = "createWebRtcTransport";
    /// Give the server the client's DTLS parameters.
    pub const CONNECT_TRANSPORT: &str = "connectTransport";
    /// New ICE credentials for a transport.
    pub const RESTART_ICE: &str = "restartIce";
    /// Limit a transport's incoming bitrate.
    pub const SET_MAX_INCOMING_BITRATE: &str = "setMaxIncomingBitrate";
    /// Close a transport.
    pub const CLOSE_TRANSPORT: &str = "closeTransport";
    /// Start sending a track.
    pub const PRODUCE: &str = "produce";
    /// Pause a producer.
    pub const PAUSE_PRODUCER: &str = "pauseProducer";
    /// Resume a producer.
    pub const RESUME_PRODUCER: &str = "resumeProducer";
    /// Close a producer.
    pub const CLOSE_PRODUCER: &str = "closeProducer";
    /// Every producer in the room but the caller's.
    pub const GET_PRODUCERS: &str = "getProducers";
    /// Receive a producer.
    pub const CONSUME: &str = "consume";
    /// Resume a consumer.
    pub const RESUME_CONSUMER: &str = "resumeConsumer";
    /// Pause a consumer.
    pub const PAUSE_CONSUMER: &str = "pauseConsumer";
    /// Close a consumer.
    pub const CLOSE_CONSUMER: &str = "closeConsumer";
    /// Choose a consumer's spatial/temporal layers.
    pub const SET_CONSUMER_PREFERRED_LAYERS: &str = "setConsumerPreferredLayers";
    /// Set a consumer's bandwidth priority.
    pub const SET_CONSUMER_PRIORITY: &str = "setConsumerPriority";
    /// Ask for a key frame on a consumer.
    pub const REQUEST_CONSUMER_KEY_FRAME: &str = "requestConsumerKeyFrame";
    /// Start sending on a data channel.
    pub const PRODUCE_DATA: &str = "produceData";
    /// Receive a data producer.
    pub const CONSUME_DATA: &str = "consumeData";
    /// Close a data producer.
    pub const CLOSE_DATA_PRODUCER: &str = "closeDataProducer";
    /// Close a data consumer.
    pub const CLOSE_DATA_CONSUMER: &str = "closeDataConsumer";
    /// Statistics of a transport.
    pub const GET_TRANSPORT_STATS: &str = "getTransportStats";
    /// Statistics of a producer.
    pub const GET_PRODUCER_STATS: &str = "getProducerStats";
    /// Statistics of a consumer.
    pub const GET_CONSUMER_STATS: &str = "getConsumerStats";
    /// Application-level keepalive.
    pub const PING: &str = "ping";

    /// Every request method the server knows.
    pub const ALL: &[&str] = &[
        CREATE_ROOM,
        GET_ROUTER_RTP_CAPABILITIES,
        JOIN_ROOM,
        LEAVE_ROOM,
        CREATE_TRANSPORT,
        CREATE_WEBRTC_TRANSPORT,
        CONNECT_TRANSPORT,
        RESTART_ICE,
        SET_MAX_INCOMING_BITRATE,
        CLOSE_TRANSPORT,
        PRODUCE,
        PAUSE_PRODUCER,
        RESUME_PRODUCER,
        CLOSE_PRODUCER,
        GET_PRODUCERS,
        CONSUME,
        RESUME_CONSUMER,
        PAUSE_CONSUMER,
        CLOSE_CONSUMER,
        SET_CONSUMER_PREFERRED_LAYERS,
        SET_CONSUMER_PRIORITY,
        REQUEST_CONSUMER_KEY_FRAME,
        PRODUCE_DATA,
        CONSUME_DATA,
        CLOSE_DATA_PRODUCER,
        CLOSE_DATA_CONSUMER,
        GET_TRANSPORT_STATS,
        GET_PRODUCER_STATS,
        GET_CONSUMER_STATS,
        PING,
    ];
}

/// Notification method names.
pub mod notification {
    /// A peer joined the room.
    pub const PEER_JOINED: &str = "peerJoined";
    /// A peer left the room.
    pub const PEER_LEFT: &str = "peerLeft";
    /// A peer started producing.
    pub const NEW_PRODUCER: &str = "newProducer";
    /// A producer was closed.
    pub const PRODUCER_CLOSED: &str = "producerClosed";
    /// A producer was paused.
    pub const PRODUCER_PAUSED: &str = "producerPaused";
    /// A producer was resumed.
    pub const PRODUCER_RESUMED: &str = "producerResumed";
    /// One of the peer's consumers was closed.
    pub const CONSUMER_CLOSED: &str = "consumerClosed";
    /// A consumer was paused because its producer was.
    pub const CONSUMER_PAUSED: &str = "consumerPaused";
    /// A consumer was resumed because its producer was.
    pub const CONSUMER_RESUMED: &str = "consumerResumed";
    /// A consumer now forwards other layers.
    pub const CONSUMER_LAYERS_CHANGED: &str = "consumerLayersChanged";
    /// A consumer's score changed.
    pub const CONSUMER_SCORE: &str = "consumerScore";
    /// A producer's score changed.
    pub const PRODUCER_SCORE: &str = "producerScore";
    /// The loudest peer changed.
    pub const ACTIVE_SPEAKER: &str = "activeSpeaker";
    /// A transport's ICE or DTLS state changed.
    pub const TRANSPORT_STATE_CHANGED: &str = "transportStateChanged";
    /// ICE was lost for too long; the client should call `restartIce`.
    pub const ICE_RESTART_REQUIRED: &str = "iceRestartRequired";
    /// A peer started producing data.
    pub const NEW_DATA_PRODUCER: &str = "newDataProducer";
    /// A data producer was closed.
    pub const DATA_PRODUCER_CLOSED: &str = "dataProducerClosed";
    /// One of the peer's data consumers was closed.
    pub const DATA_CONSUMER_CLOSED: &str = "dataConsumerClosed";
    /// The room was closed.
    pub const ROOM_CLOSED: &str = "roomClosed";
}

/// Error codes of error responses, with HTTP meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400: malformed or invalid data, unknown method.
    BadRequest,
    /// 401: no or bad token.
    Unauthorized,
    /// 403: not allowed by the token.
    Forbidden,
    /// 404: unknown id.
    NotFound,
    /// 409: wrong state (e.g. produce before joinRoom, duplicate peerId).
    Conflict,
    /// 429: rate limited.
    TooManyRequests,
    /// 500: internal error.
    Internal,
    /// 503: overloaded or shutting down.
    Unavailable,
}

impl ErrorCode {
    /// The numeric code sent as `errorCode`.
    pub fn code(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::TooManyRequests => 429,
            Self::Internal => 500,
            Self::Unavailable => 503,
        }
    }

    /// The variant for a numeric code, if it is one of ours.
    pub fn from_code(code: u16) -> Option<Self> {
        [
            Self::BadRequest,
            Self::Unauthorized,
            Self::Forbidden,
            Self::NotFound,
            Self::Conflict,
            Self::TooManyRequests,
            Self::Internal,
            Self::Unavailable,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }
}

/// A request (`{request: true, id, method, data}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Sender-chosen id, echoed in the response.
    pub id: u64,
    /// Method name (see [`method`]).
    pub method: String,
    /// Method-specific data (`{}` when absent).
    pub data: Value,
}

impl Request {
    /// Reads the data as a typed request; the error names the offending field.
    pub fn parse_data<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.data)
    }
}

/// The error part of an error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseError {
    /// `errorCode` (see [`ErrorCode`]).
    pub code: u16,
    /// `errorReason`, human-readable.
    pub reason: String,
}

/// A response (`{response: true, id, ok, data}` or `{..., ok: false, errorCode,
/// errorReason}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Id of the request answered.
    pub id: u64,
    /// The answer's data, or the error.
    pub result: Result<Value, ResponseError>,
}

/// A notification (`{notification: true, method, data}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Notification name (see [`notification`]).
    pub method: String,
    /// Notification-specific data.
    pub data: Value,
}

impl Notification {
    /// A notification with a typed payload.
    pub fn new<T: Serialize>(method: &str, payload: &T) -> Result<Self, serde_json::Error> {
        Ok(Self {
            method: method.to_owned(),
            data: serde_json::to_value(payload)?,
        })
    }
}

/// One protoo frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response to a request.
    Response(Response),
    /// A notification.
    Notification(Notification),
}

/// Why a frame is not a protoo message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// The frame is not JSON.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// The frame is JSON but not a request, response or notification.
    #[error("unknown envelope: {reason}")]
    UnknownEnvelope {
        /// The frame's `id`, when it has a numeric one.
        id: Option<u64>,
        /// What is missing or wrong.
        reason: &'static str,
    },
}

impl ParseError {
    /// The id of the offending frame, when it could be read (answer 400 to it).
    pub fn id(&self) -> Option<u64> {
        match self {
            Self::InvalidJson(_) => None,
            Self::UnknownEnvelope { id, .. } => *id,
        }
    }
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

impl Message {
    /// A request.
    pub fn request(id: u64, method: impl Into<String>, data: Value) -> Self {
        Self::Request(Request {
            id,
            method: method.into(),
            data,
        })
    }

    /// A successful response.
    pub fn ok(id: u64, data: Value) -> Self {
        Self::Response(Response {
            id,
            result: Ok(data),
        })
    }

    /// An error response.
    pub fn error(id: u64, code: ErrorCode, reason: impl Into<String>) -> Self {
        Self::Response(Response {
            id,
            result: Err(ResponseError {
                code: code.code(),
                reason: reason.into(),
            }),
        })
    }

    /// A notification.
    pub fn notification(method: impl Into<String>, data: Value) -> Self {
        Self::Notification(Notification {
            method: method.into(),
            data,
        })
    }

    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| ParseError::InvalidJson(e.to_string()))?;
        Self::from_value(value)
    }

    /// Interprets an already parsed JSON value as a protoo message.
    pub fn from_value(value: Value) -> Result<Self, ParseError> {
        let Value::Object(mut obj) = value else {
            return Err(ParseError::UnknownEnvelope {
                id: None,
                reason: "not an object",
            });
        };
        let id = obj.get("id").and_then(Value::as_u64);
        let unknown = |reason| ParseError::UnknownEnvelope { id, reason };
        let flag = |obj: &Map<String, Value>, name: &str| obj.get(name) == Some(&Value::Bool(true));
        let data = |obj: &mut Map<String, Value>| obj.remove("data").unwrap_or_else(empty_object);
        let method = |obj: &mut Map<String, Value>| match obj.remove("method") {
            Some(Value::String(m)) => Ok(m),
            _ => Err(unknown("missing or non-string method")),
        };

        if flag(&obj, "request") {
            let id = id.ok_or(unknown("request without a numeric id"))?;
            let method = method(&mut obj)?;
            Ok(Self::request(id, method, data(&mut obj)))
        } else if flag(&obj, "response") {
            let id = id.ok_or(unknown("response without a numeric id"))?;
            let result = match obj.get("ok") {
                Some(Value::Bool(true)) => Ok(data(&mut obj)),
                Some(Value::Bool(false)) => Err(ResponseError {
                    code: obj
                        .get("errorCode")
                        .and_then(Value::as_u64)
                        .and_then(|c| u16::try_from(c).ok())
                        .unwrap_or(ErrorCode::Internal.code()),
                    reason: obj
                        .get("errorReason")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                }),
                _ => return Err(unknown("response without a boolean ok")),
            };
            Ok(Self::Response(Response { id, result }))
        } else if flag(&obj, "notification") {
            let method = method(&mut obj)?;
            Ok(Self::notification(method, data(&mut obj)))
        } else {
            Err(unknown("not a request, response or notification"))
        }
    }

    /// The frame's JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .expect("a Message holds only strings, numbers and JSON values, which always serialize")
    }
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match self {
            Self::Request(r) => {
                map.serialize_entry("request", &true)?;
                map.serialize_entry("id", &r.id)?;
                map.serialize_entry("method", &r.method)?;
                map.serialize_entry("data", &r.data)?;
            }
            Self::Response(r) => {
                map.serialize_entry("response", &true)?;
                map.serialize_entry("id", &r.id)?;
                match &r.result {
                    Ok(data) => {
                        map.serialize_entry("ok", &true)?;
                        map.serialize_entry("data", data)?;
                    }
                    Err(e) => {
                        map.serialize_entry("ok", &false)?;
                        map.serialize_entry("errorCode", &e.code)?;
                        map.serialize_entry("errorReason", &e.reason)?;
                    }
                }
            }
            Self::Notification(n) => {
                map.serialize_entry("notification", &true)?;
                map.serialize_entry("method", &n.method)?;
                map.serialize_entry("data", &n.data)?;
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::from_value(value).map_err(D::Error::custom)
    }
}

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
}

/// `dataProducerClosed` data.
pub type DataProducerClosedNotification = DataProducerIdRequest;
/// `dataConsumerClosed` data.
pub type DataConsumerClosedNotification = DataConsumerIdRequest;

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
    use serde_json::json;

    #[test]
    fn parses_the_three_envelopes() {
        let m = Message::parse(r#"{"request":true,"id":17,"method":"produce","data":{"a":1}}"#)
            .unwrap();
        assert_eq!(m, Message::request(17, "produce", json!({"a": 1})));
        let m = Message::parse(r#"{"response":true,"id":17,"ok":true,"data":{"id":"c0ffee"}}"#)
            .unwrap();
        assert_eq!(m, Message::ok(17, json!({"id": "c0ffee"})));
        let m = Message::parse(
            r#"{"response":true,"id":17,"ok":false,"errorCode":404,"errorReason":"transport not found"}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            Message::error(17, ErrorCode::NotFound, "transport not found")
        );
        let m =
            Message::parse(r#"{"notification":true,"method":"newProducer","data":{}}"#).unwrap();
        assert_eq!(m, Message::notification("newProducer", json!({})));
    }

    #[test]
    fn missing_data_defaults_to_empty_object() {
        let m = Message::parse(r#"{"request":true,"id":1,"method":"ping"}"#).unwrap();
        let Message::Request(r) = m else {
            panic!("not a request")
        };
        assert_eq!(r.data, json!({}));
        assert_eq!(r.parse_data::<Empty>().unwrap(), Empty {});
    }

    #[test]
    fn serializes_protoo_shapes() {
        assert_eq!(
            serde_json::to_value(Message::request(5, "ping", json!({}))).unwrap(),
            json!({"request": true, "id": 5, "method": "ping", "data": {}})
        );
        assert_eq!(
            Message::ok(5, json!({})).to_json(),
            r#"{"response":true,"id":5,"ok":true,"data":{}}"#
        );
        assert_eq!(
            Message::error(5, ErrorCode::BadRequest, "unknown method \"x\"").to_json(),
            r#"{"response":true,"id":5,"ok":false,"errorCode":400,"errorReason":"unknown method \"x\""}"#
        );
        assert_eq!(
            serde_json::to_value(Message::notification("peerLeft", json!({"peerId": "p"})))
                .unwrap(),
            json!({"notification": true, "method": "peerLeft", "data": {"peerId": "p"}})
        );
        for m in [
            Message::request(1, "a", json!([1])),
            Message::ok(2, json!(null)),
            Message::error(3, ErrorCode::Unavailable, "busy"),
            Message::notification("n", json!({"x": true})),
        ] {
            let back: Message = serde_json::from_str(&m.to_json()).unwrap();
            assert_eq!(back, m);
        }
    }

    #[test]
    fn invalid_json_and_unknown_envelopes_are_distinguished() {
        let e = Message::parse("{nope").unwrap_err();
        assert!(matches!(e, ParseError::InvalidJson(_)));
        assert_eq!(e.id(), None);

        let e = Message::parse(r#"{"request":true,"id":9,"data":{}}"#).unwrap_err();
        assert!(matches!(e, ParseError::UnknownEnvelope { .. }));
        assert_eq!(e.id(), Some(9));
        let e = Message::parse(r#"{"request":true,"id":9,"method":7}"#).unwrap_err();
        assert_eq!(e.id(), Some(9));
        let e = Message::parse(r#"{"id":3,"method":"x"}"#).unwrap_err();
        assert_eq!(e.id(), Some(3));
        let e = Message::parse(r#"{"request":"yes","id":4,"method":"x"}"#).unwrap_err();
        assert_eq!(e.id(), Some(4));
        let e = Message::parse(r#"{"request":true,"id":"abc","method":"x"}"#).unwrap_err();
        assert!(matches!(e, ParseError::UnknownEnvelope { id: None, .. }));
        let e = Message::parse(r#"{"response":true,"id":4}"#).unwrap_err();
        assert_eq!(e.id(), Some(4));
        let e = Message::parse("[1,2]").unwrap_err();
        assert!(matches!(e, ParseError::UnknownEnvelope { id: None, .. }));
        assert!(e.to_string().starts_with("unknown envelope"));
    }

    #[test]
    fn error_codes() {
        let codes: Vec<u16> = [
            ErrorCode::BadRequest,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::Conflict,
            ErrorCode::TooManyRequests,
            ErrorCode::Internal,
            ErrorCode::Unavailable,
        ]
        .iter()
        .map(|c| c.code())
        .collect();
        assert_eq!(codes, vec![400, 401, 403, 404, 409, 429, 500, 503]);
        for c in codes {
            assert_eq!(ErrorCode::from_code(c).map(ErrorCode::code), Some(c));
        }
        assert_eq!(ErrorCode::from_code(418), None);
    }

    #[test]
    fn method_names() {
        assert_eq!(method::CREATE_WEBRTC_TRANSPORT, "createWebRtcTransport");
        assert_eq!(method::ALL.len(), 30);
        let mut sorted = method::ALL.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), method::ALL.len());
    }

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
            }],
        };
        assert_eq!(
            serde_json::to_value(&join).unwrap(),
            json!({"peerId": "p1", "sessionToken": "s", "peers": [{
                "peerId": "p2", "displayName": "Bob", "appData": {},
                "producers": [{"producerId": "x", "kind": "video", "appData": {"share": true}, "paused": false}]
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
        let text = Message::Notification(state).to_json();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"notification": true, "method": "transportStateChanged",
                   "data": {"transportId": "t", "iceState": "completed", "dtlsState": "connected"}})
        );
    }
}
