//! The signaling protocol: the protoo envelope ([`Message`]) and the typed `data`
//! of every request, answer and notification in `PROTOCOL.md`.
//!
//! Frames are parsed with [`Message::parse`], which tells invalid JSON apart from an
//! unknown envelope and keeps the request id when it can be read, so the server can
//! answer 400 to it. A request's method and data are then read once into a
//! [`SignalRequest`] (one variant per method, its data typed), whose errors name the
//! unknown method or the missing or mistyped field by its path. What the server sends
//! back is built from the answer structs of [`payloads`] and, for notifications, from a
//! [`ServerNotification`], which knows its method name.
//!
//! - this module: method and notification names, [`ErrorCode`], the envelope;
//! - [`payloads`]: the `data` of every request, answer and notification;
//! - [`request`]: [`Method`] and [`SignalRequest`], the parsed client requests;
//! - [`limits`]: [`InputLimits`], the bounds a request is checked against once read;
//! - [`notify`]: [`ServerNotification`], the typed server notifications.

use serde::de::{DeserializeOwned, Error as _};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use thiserror::Error;

pub mod limits;
pub mod notify;
pub mod payloads;
pub mod request;

pub use limits::InputLimits;
pub use notify::ServerNotification;
pub use payloads::*;
pub use request::{Method, RequestError, SignalRequest};

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
    /// Relays an opaque payload to another peer of the room (peer-to-peer call signaling).
    pub const P2P_SIGNAL: &str = "p2pSignal";

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
        P2P_SIGNAL,
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
    /// Another peer relayed a payload to this one (`p2pSignal` request).
    pub const P2P_SIGNAL: &str = "p2pSignal";
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
    /// 501: a request of the contract this server does not implement yet (data channels).
    /// Not in PROTOCOL.md's list (an extension): clients treat it as "not available here".
    NotImplemented,
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
            Self::NotImplemented => 501,
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
            Self::NotImplemented,
            Self::Unavailable,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }
}

impl std::fmt::Display for ErrorCode {
    /// The numeric code, as sent.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code())
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

    /// The frame as a JSON value, built field by field (nothing in it can fail to
    /// serialize, so no serializer error needs handling).
    pub fn to_value(&self) -> Value {
        let mut map = serde_json::Map::new();
        match self {
            Self::Request(r) => {
                map.insert("request".into(), Value::Bool(true));
                map.insert("id".into(), r.id.into());
                map.insert("method".into(), r.method.clone().into());
                map.insert("data".into(), r.data.clone());
            }
            Self::Response(r) => {
                map.insert("response".into(), Value::Bool(true));
                map.insert("id".into(), r.id.into());
                match &r.result {
                    Ok(data) => {
                        map.insert("ok".into(), Value::Bool(true));
                        map.insert("data".into(), data.clone());
                    }
                    Err(e) => {
                        map.insert("ok".into(), Value::Bool(false));
                        map.insert("errorCode".into(), e.code.into());
                        map.insert("errorReason".into(), e.reason.clone().into());
                    }
                }
            }
            Self::Notification(n) => {
                map.insert("notification".into(), Value::Bool(true));
                map.insert("method".into(), n.method.clone().into());
                map.insert("data".into(), n.data.clone());
            }
        }
        Value::Object(map)
    }

    /// The frame's JSON text with the keys of every object in alphabetical order, envelope
    /// included: what the server sends (docs/protocol.md: key order is not significant, the
    /// server's is alphabetical), so its frames are the same bytes for the same content.
    pub fn to_canonical_json(&self) -> String {
        // serde_json's `Value` keeps object keys sorted (no `preserve_order` feature).
        self.to_value().to_string()
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
            serde_json::to_string(&Message::ok(5, json!({}))).unwrap(),
            r#"{"response":true,"id":5,"ok":true,"data":{}}"#
        );
        assert_eq!(
            serde_json::to_string(&Message::error(
                5,
                ErrorCode::BadRequest,
                "unknown method \"x\""
            ))
            .unwrap(),
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
            let back: Message = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
            assert_eq!(back, m);
            // The value built by hand is what serde makes of the frame.
            assert_eq!(m.to_value(), serde_json::to_value(&m).unwrap(), "{m:?}");
        }
    }

    #[test]
    fn canonical_json_sorts_keys_everywhere() {
        let ok = Message::ok(5, json!({"rtpCapabilities": {"codecs": []}, "roomId": "r"}));
        assert_eq!(
            ok.to_canonical_json(),
            r#"{"data":{"roomId":"r","rtpCapabilities":{"codecs":[]}},"id":5,"ok":true,"response":true}"#
        );
        assert_eq!(
            Message::error(6, ErrorCode::NotFound, "transport not found").to_canonical_json(),
            r#"{"errorCode":404,"errorReason":"transport not found","id":6,"ok":false,"response":true}"#
        );
        let back = Message::parse(&ok.to_canonical_json()).unwrap();
        assert_eq!(back, ok);
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
            ErrorCode::NotImplemented,
            ErrorCode::Unavailable,
        ]
        .iter()
        .map(|c| c.code())
        .collect();
        assert_eq!(codes, vec![400, 401, 403, 404, 409, 429, 500, 501, 503]);
        assert_eq!(ErrorCode::Conflict.to_string(), "409");
        for c in codes {
            assert_eq!(ErrorCode::from_code(c).map(ErrorCode::code), Some(c));
        }
        assert_eq!(ErrorCode::from_code(418), None);
    }

    #[test]
    fn method_names() {
        assert_eq!(method::CREATE_WEBRTC_TRANSPORT, "createWebRtcTransport");
        assert_eq!(method::ALL.len(), 31);
        let mut sorted = method::ALL.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), method::ALL.len());
    }
}
