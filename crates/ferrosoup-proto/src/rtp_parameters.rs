//! RTP capabilities and parameters in mediasoup v3's JSON shapes (camelCase).
//!
//! These are the objects `Device.load`, `transport.produce` and `transport.consume`
//! of mediasoup-client exchange with the server. Input is tolerant: unknown fields are
//! ignored and optional fields take mediasoup's defaults; output skips optional fields
//! that are `None`, like mediasoup does after its own normalization.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// Header extension URIs the SFU understands, spelled as mediasoup spells them.
pub mod uri {
    /// MID (RFC 8843): which m-section (producer) an RTP packet belongs to.
    pub const MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
    /// RID (RFC 8852): which simulcast encoding an RTP packet belongs to.
    pub const RID: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
    /// Repaired RID: the encoding an RTX packet repairs.
    pub const REPAIRED_RID: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";
    /// Absolute send time (REMB bandwidth estimation).
    pub const ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
    /// Transport-wide sequence number (transport-cc feedback).
    pub const TRANSPORT_WIDE_CC_01: &str =
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
    /// Client-to-mixer audio level (RFC 6464), used for active speaker detection.
    pub const SSRC_AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
    /// Coordination of video orientation (3GPP).
    pub const VIDEO_ORIENTATION: &str = "urn:3gpp:video-orientation";
    /// Transmission time offset (RFC 5450).
    pub const TOFFSET: &str = "urn:ietf:params:rtp-hdrext:toffset";
}

/// Media kind of a codec, header extension, producer or consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    /// `"audio"`.
    Audio,
    /// `"video"`.
    Video,
}

impl MediaKind {
    /// The kind named by a MIME type's top-level type (`audio/opus` → audio),
    /// case-insensitively; `None` for anything else.
    pub fn from_mime_type(mime_type: &str) -> Option<Self> {
        let (top, sub) = mime_type.split_once('/')?;
        if sub.is_empty() {
            return None;
        }
        if top.eq_ignore_ascii_case("audio") {
            Some(Self::Audio)
        } else if top.eq_ignore_ascii_case("video") {
            Some(Self::Video)
        } else {
            None
        }
    }

    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audio => "audio",
            Self::Video => "video",
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value of a codec's (or header extension's) `parameters` map: mediasoup
/// accepts strings and numbers (mediasoup-client sends `packetization-mode: 1`,
/// `apt: 96`, `profile-level-id: "42e01f"`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ParameterValue {
    /// An integral JSON number.
    Number(i64),
    /// A JSON number with a fraction (or beyond the `i64` range).
    Float(f64),
    /// A JSON string.
    String(String),
}

impl ParameterValue {
    /// The value as an integer: an integral number, or a string holding one
    /// (SDP-derived parameters may arrive either way).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Number(n) => Some(*n),
            Self::Float(_) => None,
            Self::String(s) => s.trim().parse().ok(),
        }
    }

    /// The value if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }
}

impl From<i64> for ParameterValue {
    fn from(n: i64) -> Self {
        Self::Number(n)
    }
}

impl From<u8> for ParameterValue {
    fn from(n: u8) -> Self {
        Self::Number(i64::from(n))
    }
}

impl From<u32> for ParameterValue {
    fn from(n: u32) -> Self {
        Self::Number(i64::from(n))
    }
}

impl From<&str> for ParameterValue {
    fn from(s: &str) -> Self {
        Self::String(s.to_owned())
    }
}

impl From<String> for ParameterValue {
    fn from(s: String) -> Self {
        Self::String(s)
    }
}

impl<'de> Deserialize<'de> for ParameterValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;

        impl Visitor<'_> for ValueVisitor {
            type Value = ParameterValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(ParameterValue::Number(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v)
                    .map(ParameterValue::Number)
                    .unwrap_or(ParameterValue::Float(v as f64)))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(ParameterValue::Float(v))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ParameterValue::String(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(ParameterValue::String(v))
            }
        }

        deserializer.deserialize_any(ValueVisitor)
    }
}

/// A codec's or header extension's `parameters`: key → string or number.
pub type Parameters = BTreeMap<String, ParameterValue>;

/// RTCP feedback mechanism of a codec (`{type: "nack", parameter: "pli"}`).
///
/// mediasoup normalizes a missing `parameter` to `""` and emits it, so this does too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RtcpFeedback {
    /// Feedback type: `nack`, `ccm`, `goog-remb`, `transport-cc`, ...
    #[serde(rename = "type")]
    pub r#type: String,
    /// Feedback parameter (`pli`, `fir`) or `""`.
    #[serde(default)]
    pub parameter: String,
}

impl RtcpFeedback {
    /// Feedback of the given type and parameter (`""` for none).
    pub fn new(r#type: &str, parameter: &str) -> Self {
        Self {
            r#type: r#type.to_owned(),
            parameter: parameter.to_owned(),
        }
    }
}

/// RTP capabilities of a router or of a receiving endpoint (`Device.rtpCapabilities`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpCapabilities {
    /// Supported media and RTX codecs.
    #[serde(default)]
    pub codecs: Vec<RtpCodecCapability>,
    /// Supported RTP header extensions.
    #[serde(default)]
    pub header_extensions: Vec<RtpHeaderExtension>,
}

/// A codec an endpoint supports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpCodecCapability {
    /// Media kind (mediasoup derives it from `mimeType`).
    pub kind: MediaKind,
    /// `type/subtype`, e.g. `video/VP8`.
    pub mime_type: String,
    /// Payload type the endpoint prefers (always set in router capabilities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_payload_type: Option<u8>,
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Audio channels (mediasoup treats a missing value as 1 for audio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u8>,
    /// Codec-specific parameters (fmtp).
    #[serde(default)]
    pub parameters: Parameters,
    /// Supported RTCP feedback.
    #[serde(default)]
    pub rtcp_feedback: Vec<RtcpFeedback>,
}

/// Direction of a header extension in capabilities, as seen from the router.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtpHeaderExtensionDirection {
    /// Used both ways (mediasoup's default when missing).
    #[default]
    Sendrecv,
    /// Only sent by the router.
    Sendonly,
    /// Only received by the router.
    Recvonly,
    /// Not used.
    Inactive,
}

/// A header extension an endpoint supports.
///
/// `direction` is always emitted: mediasoup fills in `sendrecv` when it is missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpHeaderExtension {
    /// Media kind the extension applies to.
    pub kind: MediaKind,
    /// Extension URI (see [`uri`]).
    pub uri: String,
    /// Preferred extension id (1..=14 for one-byte headers).
    pub preferred_id: u8,
    /// Whether the extension should be encrypted (RFC 6904).
    #[serde(default)]
    pub preferred_encrypt: bool,
    /// Direction of use.
    #[serde(default)]
    pub direction: RtpHeaderExtensionDirection,
}

/// RTP parameters of a producer (as sent by `transport.produce`) or a consumer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpParameters {
    /// MID of the m-section, when the endpoint uses the MID extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    /// Media and RTX codecs, the first media codec being the one in use.
    pub codecs: Vec<RtpCodecParameters>,
    /// Header extensions with their negotiated ids.
    #[serde(default)]
    pub header_extensions: Vec<RtpHeaderExtensionParameters>,
    /// Encodings (simulcast streams or a single stream).
    #[serde(default)]
    pub encodings: Vec<RtpEncodingParameters>,
    /// RTCP parameters.
    #[serde(default)]
    pub rtcp: RtcpParameters,
    /// MediaStream id and track id (`"stream track"`), sent by recent mediasoup-client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msid: Option<String>,
}

/// A codec in use with its negotiated payload type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpCodecParameters {
    /// `type/subtype`, e.g. `audio/opus`.
    pub mime_type: String,
    /// Negotiated payload type.
    pub payload_type: u8,
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Audio channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u8>,
    /// Codec-specific parameters (fmtp).
    #[serde(default)]
    pub parameters: Parameters,
    /// RTCP feedback in use.
    #[serde(default)]
    pub rtcp_feedback: Vec<RtcpFeedback>,
}

impl RtpCodecParameters {
    /// Whether this is a retransmission codec (`*/rtx`).
    pub fn is_rtx(&self) -> bool {
        is_rtx_mime_type(&self.mime_type)
    }
}

impl RtpCodecCapability {
    /// Whether this is a retransmission codec (`*/rtx`).
    pub fn is_rtx(&self) -> bool {
        is_rtx_mime_type(&self.mime_type)
    }
}

/// Whether a MIME type names RTX (`audio/rtx`, `video/RTX`).
pub fn is_rtx_mime_type(mime_type: &str) -> bool {
    mime_type
        .split_once('/')
        .is_some_and(|(top, sub)| !top.is_empty() && sub.eq_ignore_ascii_case("rtx"))
}

/// A header extension in use with its negotiated id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpHeaderExtensionParameters {
    /// Extension URI (see [`uri`]).
    pub uri: String,
    /// Negotiated id.
    pub id: u8,
    /// Whether the extension is encrypted.
    #[serde(default)]
    pub encrypt: bool,
    /// Extension parameters (normally empty).
    #[serde(default)]
    pub parameters: Parameters,
}

/// The RTX stream of an encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RtxParameters {
    /// SSRC of the RTX stream.
    pub ssrc: u32,
}

/// One encoding (RTP stream) of a producer or consumer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpEncodingParameters {
    /// SSRC of the stream, when signaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssrc: Option<u32>,
    /// RID of the stream (simulcast without signaled SSRCs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    /// Payload type of the codec this encoding uses, if not the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec_payload_type: Option<u8>,
    /// RTX stream of this encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtx: Option<RtxParameters>,
    /// Discontinuous transmission (audio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtx: Option<bool>,
    /// Scalability mode such as `L1T3` or `L3T3_KEY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalability_mode: Option<String>,
    /// Resolution divisor of a simulcast encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_resolution_down_by: Option<f64>,
    /// Maximum bitrate in bps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bitrate: Option<u32>,
    /// Maximum frame rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_framerate: Option<f64>,
    /// Whether the encoding is being sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Adaptive packet time (audio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive_ptime: Option<bool>,
    /// Sender priority (`very-low`, `low`, `medium`, `high`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// Network (DSCP) priority (`very-low`, `low`, `medium`, `high`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_priority: Option<String>,
}

/// RTCP parameters of a producer or consumer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtcpParameters {
    /// Canonical name used in RTCP SDES.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cname: Option<String>,
    /// Reduced-size RTCP (RFC 5506); mediasoup treats a missing value as `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduced_size: Option<bool>,
    /// RTCP multiplexed with RTP (always the case for WebRTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mux: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_values_keep_numbers_and_strings() {
        let params: Parameters = serde_json::from_str(
            r#"{"packetization-mode":1,"profile-level-id":"42e01f","x":1.5,"big":18446744073709551615}"#,
        )
        .unwrap();
        assert_eq!(params["packetization-mode"], ParameterValue::Number(1));
        assert_eq!(params["profile-level-id"].as_str(), Some("42e01f"));
        assert_eq!(params["x"], ParameterValue::Float(1.5));
        assert!(matches!(params["big"], ParameterValue::Float(_)));
        let json = serde_json::to_string(&params).unwrap();
        assert!(json.contains(r#""packetization-mode":1"#), "{json}");
        assert!(json.contains(r#""profile-level-id":"42e01f""#), "{json}");
    }

    #[test]
    fn parameter_value_rejects_other_types() {
        let err = serde_json::from_str::<Parameters>(r#"{"a":true}"#).unwrap_err();
        assert!(err.to_string().contains("a string or a number"), "{err}");
        assert!(serde_json::from_str::<Parameters>(r#"{"a":[1]}"#).is_err());
    }

    #[test]
    fn as_i64_reads_numeric_strings() {
        assert_eq!(ParameterValue::from("1").as_i64(), Some(1));
        assert_eq!(ParameterValue::from(96u8).as_i64(), Some(96));
        assert_eq!(ParameterValue::from("x").as_i64(), None);
        assert_eq!(ParameterValue::Float(1.5).as_i64(), None);
    }

    #[test]
    fn media_kind_from_mime_type() {
        assert_eq!(
            MediaKind::from_mime_type("audio/opus"),
            Some(MediaKind::Audio)
        );
        assert_eq!(
            MediaKind::from_mime_type("VIDEO/VP8"),
            Some(MediaKind::Video)
        );
        assert_eq!(MediaKind::from_mime_type("video/"), None);
        assert_eq!(MediaKind::from_mime_type("text/plain"), None);
        assert_eq!(MediaKind::from_mime_type("opus"), None);
    }

    #[test]
    fn rtx_mime_types() {
        assert!(is_rtx_mime_type("video/rtx"));
        assert!(is_rtx_mime_type("audio/RTX"));
        assert!(!is_rtx_mime_type("video/VP8"));
        assert!(!is_rtx_mime_type("rtx"));
    }

    #[test]
    fn optional_fields_skipped_and_defaults_filled() {
        let params: RtpParameters = serde_json::from_str(
            r#"{"codecs":[{"mimeType":"video/VP8","payloadType":96,"clockRate":90000,
                 "rtcpFeedback":[{"type":"nack"}],"unknownField":1}],
                "encodings":[{"ssrc":1111}],"somethingNew":{}}"#,
        )
        .unwrap();
        assert_eq!(
            params.codecs[0].rtcp_feedback,
            vec![RtcpFeedback::new("nack", "")]
        );
        assert!(params.header_extensions.is_empty());
        assert_eq!(params.rtcp, RtcpParameters::default());
        let json = serde_json::to_value(&params).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "codecs": [{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000,
                            "parameters": {}, "rtcpFeedback": [{"type": "nack", "parameter": ""}]}],
                "headerExtensions": [],
                "encodings": [{"ssrc": 1111}],
                "rtcp": {}
            })
        );
    }

    #[test]
    fn header_extension_direction_defaults_to_sendrecv() {
        let ext: RtpHeaderExtension =
            serde_json::from_str(r#"{"kind":"audio","uri":"urn:x","preferredId":3}"#).unwrap();
        assert_eq!(ext.direction, RtpHeaderExtensionDirection::Sendrecv);
        assert!(!ext.preferred_encrypt);
        let json = serde_json::to_value(&ext).unwrap();
        assert_eq!(json["direction"], "sendrecv");
    }

    #[test]
    fn missing_codecs_is_an_error_naming_the_field() {
        let err = serde_json::from_str::<RtpParameters>(r#"{"encodings":[]}"#).unwrap_err();
        assert!(err.to_string().contains("codecs"), "{err}");
    }
}
