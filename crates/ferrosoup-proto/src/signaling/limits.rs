//! Bounds on what one request may carry (PROTOCOL.md, "Limits and hostile clients"). A
//! request is checked right after it is read, before anything is created for it or sent
//! to a worker; a request over a bound is a 400 whose reason names the field.

use serde_json::Value;

use super::payloads::{
    ConsumeRequest, CreateRoomRequest, CreateTransportRequest, JoinRoomRequest, P2pSignalRequest,
    ProduceDataRequest, ProduceRequest,
};
use super::request::{RequestError, SignalRequest};
use crate::rtp_parameters::{RtpCapabilities, RtpParameters};

/// The bounds. [`Default`] holds the contract's: 8 encodings, 32 codecs and header
/// extensions, 16 KiB of appData, 256-character display names, 128-character ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputLimits {
    /// `encodings` per producer.
    pub max_encodings: usize,
    /// `codecs` in RTP parameters or capabilities.
    pub max_codecs: usize,
    /// `headerExtensions` in RTP parameters or capabilities.
    pub max_header_extensions: usize,
    /// `appData` of one object, as serialized JSON.
    pub max_app_data_bytes: usize,
    /// `displayName`, in characters.
    pub max_display_name_chars: usize,
    /// `roomId` and `peerId`, in characters.
    pub max_id_chars: usize,
    /// `payload` of one `p2pSignal`, as serialized JSON.
    pub max_p2p_payload_bytes: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        Self {
            max_encodings: 8,
            max_codecs: 32,
            max_header_extensions: 32,
            max_app_data_bytes: 16 * 1024,
            max_display_name_chars: 256,
            max_id_chars: 128,
            max_p2p_payload_bytes: 32 * 1024,
        }
    }
}

/// A 400 naming `path`.
fn invalid(path: &str, message: String) -> RequestError {
    RequestError::InvalidData {
        path: Some(path.to_owned()),
        message,
    }
}

impl InputLimits {
    /// Checks a request's data against the bounds.
    pub fn check(&self, request: &SignalRequest) -> Result<(), RequestError> {
        match request {
            SignalRequest::CreateRoom(CreateRoomRequest { room_id })
            | SignalRequest::GetRouterRtpCapabilities(CreateRoomRequest { room_id }) => {
                self.id("roomId", room_id)
            }
            SignalRequest::JoinRoom(r) => self.join_room(r),
            SignalRequest::CreateTransport(CreateTransportRequest { app_data, .. }) => {
                self.app_data("appData", app_data)
            }
            SignalRequest::Produce(r) => self.produce(r),
            SignalRequest::Consume(r) => self.consume(r),
            SignalRequest::ProduceData(ProduceDataRequest { app_data, .. }) => {
                self.app_data("appData", app_data)
            }
            SignalRequest::P2pSignal(r) => self.p2p_signal(r),
            _ => Ok(()),
        }
    }

    fn join_room(&self, r: &JoinRoomRequest) -> Result<(), RequestError> {
        self.id("roomId", &r.room_id)?;
        if let Some(peer_id) = &r.peer_id {
            self.id("peerId", peer_id)?;
        }
        if let Some(name) = &r.display_name {
            let max = self.max_display_name_chars;
            if name.chars().nth(max).is_some() {
                return Err(invalid(
                    "displayName",
                    format!("longer than {max} characters"),
                ));
            }
        }
        if let Some(caps) = &r.rtp_capabilities {
            self.capabilities("rtpCapabilities", caps)?;
        }
        self.app_data("appData", &r.app_data)
    }

    fn produce(&self, r: &ProduceRequest) -> Result<(), RequestError> {
        self.rtp_parameters("rtpParameters", &r.rtp_parameters)?;
        self.app_data("appData", &r.app_data)
    }

    fn consume(&self, r: &ConsumeRequest) -> Result<(), RequestError> {
        if let Some(caps) = &r.rtp_capabilities {
            self.capabilities("rtpCapabilities", caps)?;
        }
        self.app_data("appData", &r.app_data)
    }

    fn p2p_signal(&self, r: &P2pSignalRequest) -> Result<(), RequestError> {
        self.id("toPeerId", &r.to_peer_id)?;
        if r.seq == Some(0) {
            return Err(invalid("seq", "must be at least 1".to_owned()));
        }
        let max = self.max_p2p_payload_bytes;
        if json_len_exceeds(&r.payload, max) {
            return Err(invalid(
                "payload",
                format!("larger than {max} bytes as JSON"),
            ));
        }
        Ok(())
    }

    /// A room or peer id: 1 to `max_id_chars` characters.
    fn id(&self, path: &str, id: &str) -> Result<(), RequestError> {
        let max = self.max_id_chars;
        if id.is_empty() || id.chars().nth(max).is_some() {
            return Err(invalid(path, format!("must be 1..{max} characters")));
        }
        Ok(())
    }

    fn rtp_parameters(&self, path: &str, p: &RtpParameters) -> Result<(), RequestError> {
        self.count(
            &format!("{path}.encodings"),
            p.encodings.len(),
            self.max_encodings,
        )?;
        self.count(&format!("{path}.codecs"), p.codecs.len(), self.max_codecs)?;
        self.count(
            &format!("{path}.headerExtensions"),
            p.header_extensions.len(),
            self.max_header_extensions,
        )
    }

    fn capabilities(&self, path: &str, c: &RtpCapabilities) -> Result<(), RequestError> {
        self.count(&format!("{path}.codecs"), c.codecs.len(), self.max_codecs)?;
        self.count(
            &format!("{path}.headerExtensions"),
            c.header_extensions.len(),
            self.max_header_extensions,
        )
    }

    fn count(&self, path: &str, n: usize, max: usize) -> Result<(), RequestError> {
        if n > max {
            return Err(invalid(path, format!("{n} entries, at most {max} allowed")));
        }
        Ok(())
    }

    /// appData: at most `max_app_data_bytes` as JSON (counted without building the text).
    fn app_data(&self, path: &str, app_data: &Value) -> Result<(), RequestError> {
        let max = self.max_app_data_bytes;
        if json_len_exceeds(app_data, max) {
            return Err(invalid(path, format!("larger than {max} bytes as JSON")));
        }
        Ok(())
    }
}

/// Whether `value` serializes to more than `max` bytes of JSON. Writing stops at the bound.
fn json_len_exceeds(value: &Value, max: usize) -> bool {
    /// Counts bytes and fails once past the bound.
    struct Counter {
        len: usize,
        max: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.len += buf.len();
            if self.len > self.max {
                return Err(std::io::Error::other("over the bound"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { len: 0, max };
    serde_json::to_writer(&mut counter, value).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reason(method: &str, data: Value) -> String {
        SignalRequest::parse(method, &data).unwrap_err().to_string()
    }

    fn produce(encodings: usize, codecs: usize, extensions: usize) -> Value {
        let codec = json!({"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000});
        let ext = json!({"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 1});
        json!({"transportId": "t", "kind": "video", "rtpParameters": {
            "codecs": vec![codec; codecs],
            "headerExtensions": vec![ext; extensions],
            "encodings": (0..encodings).map(|i| json!({"ssrc": i})).collect::<Vec<_>>(),
        }})
    }

    #[test]
    fn bounds_hold_at_the_limit_and_name_the_field_beyond() {
        assert!(SignalRequest::parse("produce", &produce(8, 32, 32)).is_ok());
        assert_eq!(
            reason("produce", produce(3000, 1, 0)),
            "rtpParameters.encodings: 3000 entries, at most 8 allowed"
        );
        assert_eq!(
            reason("produce", produce(1, 33, 0)),
            "rtpParameters.codecs: 33 entries, at most 32 allowed"
        );
        assert_eq!(
            reason("produce", produce(1, 1, 33)),
            "rtpParameters.headerExtensions: 33 entries, at most 32 allowed"
        );
        let codec = json!({"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000});
        let caps = json!({"codecs": vec![codec; 33]});
        assert_eq!(
            reason(
                "joinRoom",
                json!({"roomId": "r", "rtpCapabilities": caps.clone()})
            ),
            "rtpCapabilities.codecs: 33 entries, at most 32 allowed"
        );
        assert_eq!(
            reason(
                "consume",
                json!({"transportId": "t", "producerId": "p", "rtpCapabilities": caps})
            ),
            "rtpCapabilities.codecs: 33 entries, at most 32 allowed"
        );
    }

    #[test]
    fn ids_and_display_names_are_counted_in_characters() {
        let ok = |data: Value| SignalRequest::parse("joinRoom", &data).is_ok();
        assert!(ok(
            json!({"roomId": "é".repeat(128), "peerId": "p".repeat(128)})
        ));
        assert!(ok(json!({"roomId": "r", "displayName": "ü".repeat(256)})));
        assert_eq!(
            reason("joinRoom", json!({"roomId": "r".repeat(129)})),
            "roomId: must be 1..128 characters"
        );
        assert_eq!(
            reason("createRoom", json!({"roomId": ""})),
            "roomId: must be 1..128 characters"
        );
        assert_eq!(
            reason(
                "joinRoom",
                json!({"roomId": "r", "peerId": "p".repeat(129)})
            ),
            "peerId: must be 1..128 characters"
        );
        assert_eq!(
            reason(
                "joinRoom",
                json!({"roomId": "r", "displayName": "n".repeat(257)})
            ),
            "displayName: longer than 256 characters"
        );
    }

    #[test]
    fn app_data_is_bounded_on_every_request_that_carries_it() {
        let limit = InputLimits::default().max_app_data_bytes;
        // {"x":"…"} is 8 bytes around the string.
        let at_limit = json!({"x": "a".repeat(limit - 8)});
        assert_eq!(serde_json::to_string(&at_limit).unwrap().len(), limit);
        let over = json!({"x": "a".repeat(limit - 7)});
        let requests = [
            ("joinRoom", json!({"roomId": "r"})),
            ("createTransport", json!({"direction": "send"})),
            ("produce", produce(1, 1, 0)),
            ("consume", json!({"transportId": "t", "producerId": "p"})),
            (
                "produceData",
                json!({"transportId": "t", "sctpStreamParameters": {"streamId": 1}}),
            ),
        ];
        for (method, mut data) in requests {
            data["appData"] = at_limit.clone();
            assert!(
                SignalRequest::parse(method, &data).is_ok(),
                "{method} at the limit"
            );
            data["appData"] = over.clone();
            assert_eq!(
                reason(method, data),
                format!("appData: larger than {limit} bytes as JSON"),
                "{method}"
            );
        }
    }

    #[test]
    fn limits_are_settable() {
        let limits = InputLimits {
            max_app_data_bytes: 10,
            ..InputLimits::default()
        };
        let data = json!({"roomId": "r", "appData": {"k": "0123456789"}});
        let e = SignalRequest::parse_data(super::super::Method::JoinRoom, &data, &limits);
        assert_eq!(
            e.unwrap_err().to_string(),
            "appData: larger than 10 bytes as JSON"
        );
    }

    #[test]
    fn p2p_signal_payload_target_and_seq_are_bounded() {
        let limits = InputLimits {
            max_p2p_payload_bytes: 12,
            ..InputLimits::default()
        };
        let check = |data: Value| {
            SignalRequest::parse_data(super::super::Method::P2pSignal, &data, &limits)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        // "0123456789" is 12 bytes of JSON with its quotes.
        assert_eq!(
            check(json!({"toPeerId": "b", "payload": "0123456789"})),
            Ok(())
        );
        assert_eq!(
            check(json!({"toPeerId": "b", "payload": "0123456789a"})),
            Err("payload: larger than 12 bytes as JSON".to_owned())
        );
        assert_eq!(
            check(json!({"toPeerId": "", "payload": 1})),
            Err("toPeerId: must be 1..128 characters".to_owned())
        );
        assert_eq!(
            check(json!({"toPeerId": "b", "seq": 0, "payload": 1})),
            Err("seq: must be at least 1".to_owned())
        );
        assert!(
            check(json!({"toPeerId": "b", "seq": -1, "payload": 1}))
                .is_err_and(|e| e.starts_with("seq: invalid value"))
        );
        assert!(
            check(json!({"toPeerId": "b"})).is_err_and(|e| e.contains("missing field `payload`"))
        );
    }
}
