//! Client requests read once: the method name into a [`Method`], then the method and its
//! data into a [`SignalRequest`] whose variant carries the typed data. A server matches on
//! the enum; nothing after this point looks at method strings or raw JSON.
//!
//! The two steps are separate so a server can refuse a request for its state (e.g. 409
//! `joinRoom first`, see [`Method::is_in_room`]) before it reads the data.

use serde::de::DeserializeOwned;
use serde_json::Value;
use thiserror::Error;

use super::limits::InputLimits;
use super::payloads::{
    ConnectTransportRequest, ConsumeDataRequest, ConsumeRequest, ConsumerIdRequest,
    CreateRoomRequest, CreateTransportRequest, DataConsumerIdRequest, DataProducerIdRequest,
    JoinRoomRequest, P2pSignalRequest, ProduceDataRequest, ProduceRequest, ProducerIdRequest,
    SetConsumerPreferredLayersRequest, SetConsumerPriorityRequest, SetMaxIncomingBitrateRequest,
    TransportIdRequest,
};
use super::{ErrorCode, empty_object, method};

/// Why a request could not be read. Both are 400 answers ([`RequestError::code`]); the
/// text ([`std::fmt::Display`]) is the `errorReason`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    /// The method is not one of the contract's (`unknown method makeCoffee`).
    #[error("unknown method {0}")]
    UnknownMethod(String),
    /// The data does not fit the method: `roomId: invalid type: integer ...`, or
    /// ``invalid data: missing field `roomId` `` when no single field is at fault.
    #[error("{}: {message}", path.as_deref().unwrap_or("invalid data"))]
    InvalidData {
        /// Path of the offending field (`rtpParameters.codecs[0].clockRate`), when the
        /// error is inside one.
        path: Option<String>,
        /// What is wrong with it (serde's message).
        message: String,
    },
}

impl RequestError {
    /// The error code to answer with: 400.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::BadRequest
    }
}

/// Reads a request's data; the error names the offending field by its path.
fn data<T: DeserializeOwned>(data: &Value) -> Result<T, RequestError> {
    serde_path_to_error::deserialize(data).map_err(|e| {
        let path = e.path().to_string();
        RequestError::InvalidData {
            path: (path != ".").then_some(path),
            message: e.inner().to_string(),
        }
    })
}

macro_rules! methods {
    ($($(#[$doc:meta])* $variant:ident = $name:ident,)*) => {
        /// A request method of the contract, without its data.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Method {
            $($(#[$doc])* $variant,)*
        }

        impl Method {
            /// Every method, in the contract's order.
            pub const ALL: &[Method] = &[$(Method::$variant,)*];

            /// The method's wire name (for `createTransport`, the canonical one).
            pub fn name(self) -> &'static str {
                match self {
                    $(Method::$variant => method::$name,)*
                }
            }
        }
    };
}

methods! {
    /// `createRoom`.
    CreateRoom = CREATE_ROOM,
    /// `getRouterRtpCapabilities`.
    GetRouterRtpCapabilities = GET_ROUTER_RTP_CAPABILITIES,
    /// `joinRoom`.
    JoinRoom = JOIN_ROOM,
    /// `leaveRoom`.
    LeaveRoom = LEAVE_ROOM,
    /// `createTransport` (and its alias `createWebRtcTransport`).
    CreateTransport = CREATE_TRANSPORT,
    /// `connectTransport`.
    ConnectTransport = CONNECT_TRANSPORT,
    /// `restartIce`.
    RestartIce = RESTART_ICE,
    /// `setMaxIncomingBitrate`.
    SetMaxIncomingBitrate = SET_MAX_INCOMING_BITRATE,
    /// `closeTransport`.
    CloseTransport = CLOSE_TRANSPORT,
    /// `produce`.
    Produce = PRODUCE,
    /// `pauseProducer`.
    PauseProducer = PAUSE_PRODUCER,
    /// `resumeProducer`.
    ResumeProducer = RESUME_PRODUCER,
    /// `closeProducer`.
    CloseProducer = CLOSE_PRODUCER,
    /// `getProducers`.
    GetProducers = GET_PRODUCERS,
    /// `consume`.
    Consume = CONSUME,
    /// `resumeConsumer`.
    ResumeConsumer = RESUME_CONSUMER,
    /// `pauseConsumer`.
    PauseConsumer = PAUSE_CONSUMER,
    /// `closeConsumer`.
    CloseConsumer = CLOSE_CONSUMER,
    /// `setConsumerPreferredLayers`.
    SetConsumerPreferredLayers = SET_CONSUMER_PREFERRED_LAYERS,
    /// `setConsumerPriority`.
    SetConsumerPriority = SET_CONSUMER_PRIORITY,
    /// `requestConsumerKeyFrame`.
    RequestConsumerKeyFrame = REQUEST_CONSUMER_KEY_FRAME,
    /// `produceData`.
    ProduceData = PRODUCE_DATA,
    /// `consumeData`.
    ConsumeData = CONSUME_DATA,
    /// `closeDataProducer`.
    CloseDataProducer = CLOSE_DATA_PRODUCER,
    /// `closeDataConsumer`.
    CloseDataConsumer = CLOSE_DATA_CONSUMER,
    /// `getTransportStats`.
    GetTransportStats = GET_TRANSPORT_STATS,
    /// `getProducerStats`.
    GetProducerStats = GET_PRODUCER_STATS,
    /// `getConsumerStats`.
    GetConsumerStats = GET_CONSUMER_STATS,
    /// `ping`.
    Ping = PING,
    /// `p2pSignal`.
    P2pSignal = P2P_SIGNAL,
}

impl Method {
    /// The method of a wire name; `None` for a name the contract does not have.
    pub fn from_name(name: &str) -> Option<Self> {
        if name == method::CREATE_WEBRTC_TRANSPORT {
            return Some(Self::CreateTransport);
        }
        Self::ALL.iter().copied().find(|m| m.name() == name)
    }

    /// Whether the request acts inside the room the peer joined (transports, producers,
    /// consumers, data channels, stats): before `joinRoom` it is a 409 (`joinRoom first`),
    /// whatever its data. `createRoom`, `getRouterRtpCapabilities`, `joinRoom`, `leaveRoom`
    /// and `ping` are not.
    pub fn is_in_room(self) -> bool {
        !matches!(
            self,
            Self::CreateRoom
                | Self::GetRouterRtpCapabilities
                | Self::JoinRoom
                | Self::LeaveRoom
                | Self::Ping
        )
    }
}

impl Method {
    /// Whether the request is about data channels (`produceData`, `consumeData`,
    /// `closeDataProducer`, `closeDataConsumer`).
    pub fn is_data_channel(self) -> bool {
        matches!(
            self,
            Self::ProduceData
                | Self::ConsumeData
                | Self::CloseDataProducer
                | Self::CloseDataConsumer
        )
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A client request, read: one variant per method of the contract, with its typed data.
/// `leaveRoom`, `getProducers` and `ping` take no data (whatever is sent is ignored).
#[derive(Debug, Clone, PartialEq)]
pub enum SignalRequest {
    /// `createRoom`.
    CreateRoom(CreateRoomRequest),
    /// `getRouterRtpCapabilities`.
    GetRouterRtpCapabilities(CreateRoomRequest),
    /// `joinRoom`.
    JoinRoom(JoinRoomRequest),
    /// `leaveRoom`.
    LeaveRoom,
    /// `createTransport` / `createWebRtcTransport`.
    CreateTransport(CreateTransportRequest),
    /// `connectTransport`.
    ConnectTransport(ConnectTransportRequest),
    /// `restartIce`.
    RestartIce(TransportIdRequest),
    /// `setMaxIncomingBitrate`.
    SetMaxIncomingBitrate(SetMaxIncomingBitrateRequest),
    /// `closeTransport`.
    CloseTransport(TransportIdRequest),
    /// `produce`.
    Produce(ProduceRequest),
    /// `pauseProducer`.
    PauseProducer(ProducerIdRequest),
    /// `resumeProducer`.
    ResumeProducer(ProducerIdRequest),
    /// `closeProducer`.
    CloseProducer(ProducerIdRequest),
    /// `getProducers`.
    GetProducers,
    /// `consume`.
    Consume(ConsumeRequest),
    /// `resumeConsumer`.
    ResumeConsumer(ConsumerIdRequest),
    /// `pauseConsumer`.
    PauseConsumer(ConsumerIdRequest),
    /// `closeConsumer`.
    CloseConsumer(ConsumerIdRequest),
    /// `setConsumerPreferredLayers`.
    SetConsumerPreferredLayers(SetConsumerPreferredLayersRequest),
    /// `setConsumerPriority`.
    SetConsumerPriority(SetConsumerPriorityRequest),
    /// `requestConsumerKeyFrame`.
    RequestConsumerKeyFrame(ConsumerIdRequest),
    /// `produceData`.
    ProduceData(ProduceDataRequest),
    /// `consumeData`.
    ConsumeData(ConsumeDataRequest),
    /// `closeDataProducer`.
    CloseDataProducer(DataProducerIdRequest),
    /// `closeDataConsumer`.
    CloseDataConsumer(DataConsumerIdRequest),
    /// `getTransportStats`.
    GetTransportStats(TransportIdRequest),
    /// `getProducerStats`.
    GetProducerStats(ProducerIdRequest),
    /// `getConsumerStats`.
    GetConsumerStats(ConsumerIdRequest),
    /// `ping`.
    Ping,
    /// `p2pSignal`.
    P2pSignal(P2pSignalRequest),
}

impl SignalRequest {
    /// Reads a request from its method name and data within the contract's default
    /// [`InputLimits`]: [`RequestError::UnknownMethod`] for a name the contract does not
    /// have, [`RequestError::InvalidData`] naming the field.
    pub fn parse(method: &str, data: &Value) -> Result<Self, RequestError> {
        let m = Method::from_name(method)
            .ok_or_else(|| RequestError::UnknownMethod(method.to_owned()))?;
        Self::parse_data(m, data, &InputLimits::default())
    }

    /// Reads the data of a known method and checks it against `limits`.
    pub fn parse_data(
        method: Method,
        d: &Value,
        limits: &InputLimits,
    ) -> Result<Self, RequestError> {
        let request = Self::read_data(method, d)?;
        limits.check(&request)?;
        Ok(request)
    }

    /// Reads the data of a known method.
    fn read_data(method: Method, d: &Value) -> Result<Self, RequestError> {
        Ok(match method {
            Method::CreateRoom => Self::CreateRoom(data(d)?),
            Method::GetRouterRtpCapabilities => Self::GetRouterRtpCapabilities(data(d)?),
            Method::JoinRoom => Self::JoinRoom(data(d)?),
            Method::LeaveRoom => Self::LeaveRoom,
            Method::CreateTransport => Self::CreateTransport(data(d)?),
            Method::ConnectTransport => Self::ConnectTransport(data(d)?),
            Method::RestartIce => Self::RestartIce(data(d)?),
            Method::SetMaxIncomingBitrate => Self::SetMaxIncomingBitrate(data(d)?),
            Method::CloseTransport => Self::CloseTransport(data(d)?),
            Method::Produce => Self::Produce(data(d)?),
            Method::PauseProducer => Self::PauseProducer(data(d)?),
            Method::ResumeProducer => Self::ResumeProducer(data(d)?),
            Method::CloseProducer => Self::CloseProducer(data(d)?),
            Method::GetProducers => Self::GetProducers,
            Method::Consume => Self::Consume(data(d)?),
            Method::ResumeConsumer => Self::ResumeConsumer(data(d)?),
            Method::PauseConsumer => Self::PauseConsumer(data(d)?),
            Method::CloseConsumer => Self::CloseConsumer(data(d)?),
            Method::SetConsumerPreferredLayers => Self::SetConsumerPreferredLayers(data(d)?),
            Method::SetConsumerPriority => Self::SetConsumerPriority(data(d)?),
            Method::RequestConsumerKeyFrame => Self::RequestConsumerKeyFrame(data(d)?),
            Method::ProduceData => Self::ProduceData(data(d)?),
            Method::ConsumeData => Self::ConsumeData(data(d)?),
            Method::CloseDataProducer => Self::CloseDataProducer(data(d)?),
            Method::CloseDataConsumer => Self::CloseDataConsumer(data(d)?),
            Method::GetTransportStats => Self::GetTransportStats(data(d)?),
            Method::GetProducerStats => Self::GetProducerStats(data(d)?),
            Method::GetConsumerStats => Self::GetConsumerStats(data(d)?),
            Method::Ping => Self::Ping,
            Method::P2pSignal => Self::P2pSignal(data(d)?),
        })
    }

    /// The request's method.
    pub fn method(&self) -> Method {
        match self {
            Self::CreateRoom(_) => Method::CreateRoom,
            Self::GetRouterRtpCapabilities(_) => Method::GetRouterRtpCapabilities,
            Self::JoinRoom(_) => Method::JoinRoom,
            Self::LeaveRoom => Method::LeaveRoom,
            Self::CreateTransport(_) => Method::CreateTransport,
            Self::ConnectTransport(_) => Method::ConnectTransport,
            Self::RestartIce(_) => Method::RestartIce,
            Self::SetMaxIncomingBitrate(_) => Method::SetMaxIncomingBitrate,
            Self::CloseTransport(_) => Method::CloseTransport,
            Self::Produce(_) => Method::Produce,
            Self::PauseProducer(_) => Method::PauseProducer,
            Self::ResumeProducer(_) => Method::ResumeProducer,
            Self::CloseProducer(_) => Method::CloseProducer,
            Self::GetProducers => Method::GetProducers,
            Self::Consume(_) => Method::Consume,
            Self::ResumeConsumer(_) => Method::ResumeConsumer,
            Self::PauseConsumer(_) => Method::PauseConsumer,
            Self::CloseConsumer(_) => Method::CloseConsumer,
            Self::SetConsumerPreferredLayers(_) => Method::SetConsumerPreferredLayers,
            Self::SetConsumerPriority(_) => Method::SetConsumerPriority,
            Self::RequestConsumerKeyFrame(_) => Method::RequestConsumerKeyFrame,
            Self::ProduceData(_) => Method::ProduceData,
            Self::ConsumeData(_) => Method::ConsumeData,
            Self::CloseDataProducer(_) => Method::CloseDataProducer,
            Self::CloseDataConsumer(_) => Method::CloseDataConsumer,
            Self::GetTransportStats(_) => Method::GetTransportStats,
            Self::GetProducerStats(_) => Method::GetProducerStats,
            Self::GetConsumerStats(_) => Method::GetConsumerStats,
            Self::Ping => Method::Ping,
            Self::P2pSignal(_) => Method::P2pSignal,
        }
    }

    /// The request's data as sent on the wire (`{}` for the methods without data), for
    /// clients building a [`super::Message::request`].
    pub fn data(&self) -> Result<Value, serde_json::Error> {
        fn json<T: serde::Serialize>(t: &T) -> Result<Value, serde_json::Error> {
            serde_json::to_value(t)
        }
        match self {
            Self::LeaveRoom | Self::GetProducers | Self::Ping => Ok(empty_object()),
            Self::CreateRoom(d) | Self::GetRouterRtpCapabilities(d) => json(d),
            Self::JoinRoom(d) => json(d),
            Self::CreateTransport(d) => json(d),
            Self::ConnectTransport(d) => json(d),
            Self::RestartIce(d) | Self::CloseTransport(d) | Self::GetTransportStats(d) => json(d),
            Self::SetMaxIncomingBitrate(d) => json(d),
            Self::Produce(d) => json(d),
            Self::PauseProducer(d)
            | Self::ResumeProducer(d)
            | Self::CloseProducer(d)
            | Self::GetProducerStats(d) => json(d),
            Self::Consume(d) => json(d),
            Self::ResumeConsumer(d)
            | Self::PauseConsumer(d)
            | Self::CloseConsumer(d)
            | Self::RequestConsumerKeyFrame(d)
            | Self::GetConsumerStats(d) => json(d),
            Self::SetConsumerPreferredLayers(d) => json(d),
            Self::SetConsumerPriority(d) => json(d),
            Self::ProduceData(d) => json(d),
            Self::ConsumeData(d) => json(d),
            Self::CloseDataProducer(d) => json(d),
            Self::CloseDataConsumer(d) => json(d),
            Self::P2pSignal(d) => json(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signaling::{Message, TransportDirection};
    use serde_json::json;

    #[test]
    fn every_method_name_is_a_method_and_back() {
        assert_eq!(
            Method::ALL.len() + 1,
            method::ALL.len(),
            "all but the alias"
        );
        for name in method::ALL {
            let m = Method::from_name(name).unwrap_or_else(|| panic!("{name} not parsed"));
            assert!(
                m.name() == *name || *name == method::CREATE_WEBRTC_TRANSPORT,
                "{name} -> {m}"
            );
        }
        for m in Method::ALL {
            assert!(method::ALL.contains(&m.name()), "{m} not in method::ALL");
        }
        assert_eq!(
            Method::from_name("createWebRtcTransport"),
            Some(Method::CreateTransport)
        );
        assert_eq!(Method::from_name("makeCoffee"), None);
        assert_eq!(Method::from_name("Ping"), None, "names are case-sensitive");
    }

    #[test]
    fn room_requests_are_the_ones_after_join() {
        let outside: Vec<&str> = Method::ALL
            .iter()
            .filter(|m| !m.is_in_room())
            .map(|m| m.name())
            .collect();
        assert_eq!(
            outside,
            [
                "createRoom",
                "getRouterRtpCapabilities",
                "joinRoom",
                "leaveRoom",
                "ping"
            ]
        );
    }

    #[test]
    fn data_channel_methods() {
        let names: Vec<&str> = Method::ALL
            .iter()
            .filter(|m| m.is_data_channel())
            .map(|m| m.name())
            .collect();
        assert_eq!(
            names,
            [
                "produceData",
                "consumeData",
                "closeDataProducer",
                "closeDataConsumer"
            ]
        );
    }

    #[test]
    fn unknown_method_names_it() {
        let e = SignalRequest::parse("makeCoffee", &json!({})).unwrap_err();
        assert_eq!(e, RequestError::UnknownMethod("makeCoffee".into()));
        assert_eq!(e.to_string(), "unknown method makeCoffee");
        assert_eq!(e.code(), ErrorCode::BadRequest);
    }

    #[test]
    fn invalid_data_names_the_field_path() {
        let reason = |method: &str, data: Value| {
            SignalRequest::parse(method, &data).unwrap_err().to_string()
        };
        assert_eq!(
            reason("createRoom", json!({})),
            "invalid data: missing field `roomId`"
        );
        assert!(reason("createRoom", json!({"roomId": 42})).starts_with("roomId: invalid type"));
        assert!(
            reason("createTransport", json!({"direction": "sideways"}))
                .starts_with("direction: unknown variant")
        );
        assert!(
            reason(
                "setConsumerPriority",
                json!({"consumerId": "c", "priority": "high"})
            )
            .starts_with("priority: invalid type")
        );
        let nested = reason(
            "produce",
            json!({"transportId": "t", "kind": "video",
                   "rtpParameters": {"codecs": [{"mimeType": "video/VP8", "clockRate": "fast"}]}}),
        );
        assert!(nested.starts_with("rtpParameters.codecs[0]"), "{nested}");
        // serde reads a struct from an array too, field by field: the path is the index.
        let array = reason("joinRoom", json!([1]));
        assert!(array.starts_with("[0]: invalid type"), "{array}");
        let number = reason("joinRoom", json!(7));
        assert!(number.starts_with("invalid data: invalid type"), "{number}");
    }

    #[test]
    fn methods_without_data_ignore_it() {
        for (name, expected) in [
            ("leaveRoom", SignalRequest::LeaveRoom),
            ("getProducers", SignalRequest::GetProducers),
            ("ping", SignalRequest::Ping),
        ] {
            assert_eq!(
                SignalRequest::parse(name, &json!([1, 2])).unwrap(),
                expected
            );
        }
    }

    #[test]
    fn parsed_requests_carry_typed_data_and_round_trip() {
        let r =
            SignalRequest::parse("createWebRtcTransport", &json!({"direction": "recv"})).unwrap();
        let SignalRequest::CreateTransport(t) = &r else {
            panic!("{r:?}")
        };
        assert_eq!(t.direction, TransportDirection::Recv);
        assert_eq!(r.method(), Method::CreateTransport);

        let samples = [
            ("createRoom", json!({"roomId": "r"})),
            ("getRouterRtpCapabilities", json!({"roomId": "r"})),
            (
                "joinRoom",
                json!({"roomId": "r", "peerId": "p", "appData": {"x": 1}}),
            ),
            ("leaveRoom", json!({})),
            (
                "createTransport",
                json!({"direction": "send", "forceTcp": false, "preferTcp": false, "appData": {}}),
            ),
            ("restartIce", json!({"transportId": "t"})),
            (
                "setMaxIncomingBitrate",
                json!({"transportId": "t", "bitrate": 1000}),
            ),
            ("closeTransport", json!({"transportId": "t"})),
            ("pauseProducer", json!({"producerId": "p"})),
            ("resumeProducer", json!({"producerId": "p"})),
            ("closeProducer", json!({"producerId": "p"})),
            ("getProducers", json!({})),
            (
                "consume",
                json!({"transportId": "t", "producerId": "p", "paused": true, "appData": {}}),
            ),
            ("resumeConsumer", json!({"consumerId": "c"})),
            ("pauseConsumer", json!({"consumerId": "c"})),
            ("closeConsumer", json!({"consumerId": "c"})),
            (
                "setConsumerPreferredLayers",
                json!({"consumerId": "c", "spatialLayer": 1}),
            ),
            (
                "setConsumerPriority",
                json!({"consumerId": "c", "priority": 7}),
            ),
            ("requestConsumerKeyFrame", json!({"consumerId": "c"})),
            (
                "consumeData",
                json!({"transportId": "t", "dataProducerId": "d"}),
            ),
            ("closeDataProducer", json!({"dataProducerId": "d"})),
            ("closeDataConsumer", json!({"dataConsumerId": "d"})),
            ("getTransportStats", json!({"transportId": "t"})),
            ("getProducerStats", json!({"producerId": "p"})),
            ("getConsumerStats", json!({"consumerId": "c"})),
            ("ping", json!({})),
            (
                "p2pSignal",
                json!({"toPeerId": "b", "seq": 2, "payload": {"candidate": null}}),
            ),
            ("p2pSignal", json!({"toPeerId": "b", "payload": "bye"})),
        ];
        for (name, data) in samples {
            let r = SignalRequest::parse(name, &data).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(r.method().name(), name);
            assert_eq!(r.data().unwrap(), data, "{name}: data written back as read");
            let Message::Request(envelope) =
                Message::request(1, r.method().name(), r.data().unwrap())
            else {
                unreachable!()
            };
            assert_eq!(
                SignalRequest::parse(&envelope.method, &envelope.data).unwrap(),
                r
            );
        }
    }
}
