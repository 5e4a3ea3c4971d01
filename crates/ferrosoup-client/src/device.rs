//! What this client can send and receive, given the router's capabilities.

use ferrosoup_proto::rtp_parameters::{
    MediaKind, ParameterValue, RtcpFeedback, RtpCapabilities, RtpCodecCapability,
    RtpHeaderExtension, RtpHeaderExtensionDirection, uri,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};

use crate::error::{ClientError, Result};
use crate::sdp::fmtp_line;

/// Media codecs webrtc-rs can carry (it does not encode: the application brings the payload).
const MEDIA_MIME_TYPES: &[&str] = &["audio/opus", "video/VP8", "video/VP9", "video/H264"];

/// RTCP feedback webrtc-rs 0.21 acts on or passes through.
const FEEDBACK: &[(&str, &str)] = &[
    ("nack", ""),
    ("nack", "pli"),
    ("ccm", "fir"),
    ("goog-remb", ""),
    ("transport-cc", ""),
];

/// Header extensions negotiated by this client. webrtc-rs only maps their ids; it does not
/// write any of them on sent packets itself (see the crate docs).
const HEADER_EXTENSIONS: &[&str] = &[
    uri::MID,
    uri::RID,
    uri::REPAIRED_RID,
    uri::ABS_SEND_TIME,
    uri::TRANSPORT_WIDE_CC_01,
    uri::SSRC_AUDIO_LEVEL,
    uri::VIDEO_ORIENTATION,
    uri::TOFFSET,
];

/// A loaded device: the subset of the router's capabilities this client supports, with the
/// router's payload types and extension ids (so no remapping is needed anywhere).
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    rtp_capabilities: RtpCapabilities,
}

impl Device {
    /// Computes the client's capabilities from `router` (the `createRoom` /
    /// `getRouterRtpCapabilities` answer): opus, VP8, VP9 and H264 with their RTX codecs, the
    /// feedback and header extensions webrtc-rs handles.
    pub fn load(router: &RtpCapabilities) -> Result<Self> {
        let mut codecs: Vec<RtpCodecCapability> = Vec::new();
        for codec in &router.codecs {
            if codec.is_rtx() || codec.preferred_payload_type.is_none() {
                continue;
            }
            if !MEDIA_MIME_TYPES
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&codec.mime_type))
            {
                continue;
            }
            let mut codec = codec.clone();
            codec.rtcp_feedback.retain(|fb| {
                FEEDBACK
                    .iter()
                    .any(|(t, p)| fb.r#type == *t && fb.parameter == *p)
            });
            let pt = codec.preferred_payload_type;
            codecs.push(codec);
            // Its RTX codec, if the router has one.
            if let Some(rtx) = router.codecs.iter().find(|c| {
                c.is_rtx()
                    && c.preferred_payload_type.is_some()
                    && c.parameters.get("apt").and_then(ParameterValue::as_i64) == pt.map(i64::from)
            }) {
                codecs.push(rtx.clone());
            }
        }
        if codecs.is_empty() {
            return Err(ClientError::Unsupported(
                "router offers no codec this client supports".into(),
            ));
        }
        let header_extensions = router
            .header_extensions
            .iter()
            .filter(|e| HEADER_EXTENSIONS.contains(&e.uri.as_str()))
            .filter(|e| e.direction != RtpHeaderExtensionDirection::Inactive)
            .cloned()
            .collect();
        Ok(Self {
            rtp_capabilities: RtpCapabilities {
                codecs,
                header_extensions,
            },
        })
    }

    /// The client's RTP capabilities, for `joinRoom` and `consume`.
    pub fn rtp_capabilities(&self) -> &RtpCapabilities {
        &self.rtp_capabilities
    }

    /// Whether the device can send (and receive) media of `kind`.
    pub fn can_produce(&self, kind: MediaKind) -> bool {
        self.rtp_capabilities
            .codecs
            .iter()
            .any(|c| c.kind == kind && !c.is_rtx())
    }

    /// The media codec of `kind` to send: the first whose MIME type matches `mime_type`
    /// (case-insensitive), or the first of that kind when `mime_type` is `None`.
    pub fn send_codec(
        &self,
        kind: MediaKind,
        mime_type: Option<&str>,
    ) -> Result<&RtpCodecCapability> {
        self.rtp_capabilities
            .codecs
            .iter()
            .filter(|c| c.kind == kind && !c.is_rtx())
            .find(|c| mime_type.is_none_or(|m| c.mime_type.eq_ignore_ascii_case(m)))
            .ok_or_else(|| {
                ClientError::Unsupported(format!(
                    "no {kind} codec {} in the device capabilities",
                    mime_type.unwrap_or("")
                ))
            })
    }

    /// The RTX codec repairing payload type `pt`, if any.
    pub fn rtx_codec_for(&self, pt: u8) -> Option<&RtpCodecCapability> {
        self.rtp_capabilities.codecs.iter().find(|c| {
            c.is_rtx()
                && c.parameters.get("apt").and_then(ParameterValue::as_i64) == Some(pt.into())
        })
    }

    /// A webrtc-rs media engine with exactly these codecs (router payload types) and header
    /// extensions registered. `only` restricts the media codecs to the given payload types
    /// (and their RTX), so a send transport offers just the codec the caller chose.
    pub(crate) fn media_engine(&self, only: Option<&[u8]>) -> Result<MediaEngine> {
        let mut engine = MediaEngine::default();
        for codec in &self.rtp_capabilities.codecs {
            let Some(pt) = codec.preferred_payload_type else {
                continue;
            };
            if let Some(only) = only {
                let key = if codec.is_rtx() {
                    codec
                        .parameters
                        .get("apt")
                        .and_then(ParameterValue::as_i64)
                        .and_then(|a| u8::try_from(a).ok())
                } else {
                    Some(pt)
                };
                if !key.is_some_and(|k| only.contains(&k)) {
                    continue;
                }
            }
            engine.register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: codec.mime_type.clone(),
                        clock_rate: codec.clock_rate,
                        channels: codec.channels.map(u16::from).unwrap_or(0),
                        sdp_fmtp_line: fmtp_line(&codec.parameters),
                        rtcp_feedback: codec.rtcp_feedback.iter().map(to_rtc_feedback).collect(),
                    },
                    payload_type: pt,
                },
                rtc_kind(codec.kind),
            )?;
        }
        for ext in &self.rtp_capabilities.header_extensions {
            register_extension(&mut engine, ext)?;
        }
        Ok(engine)
    }
}

fn register_extension(engine: &mut MediaEngine, ext: &RtpHeaderExtension) -> Result<()> {
    engine.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: ext.uri.clone(),
        },
        rtc_kind(ext.kind),
        None,
    )?;
    Ok(())
}

fn to_rtc_feedback(fb: &RtcpFeedback) -> RTCPFeedback {
    RTCPFeedback {
        typ: fb.r#type.clone(),
        parameter: fb.parameter.clone(),
    }
}

/// The webrtc-rs kind of a media kind.
pub(crate) fn rtc_kind(kind: MediaKind) -> RtpCodecKind {
    match kind {
        MediaKind::Audio => RtpCodecKind::Audio,
        MediaKind::Video => RtpCodecKind::Video,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Router capabilities as mediasoup's default config produces them (abridged).
    pub(crate) fn router_caps() -> RtpCapabilities {
        serde_json::from_value(serde_json::json!({
            "codecs": [
                {"kind": "audio", "mimeType": "audio/opus", "preferredPayloadType": 100,
                 "clockRate": 48000, "channels": 2, "parameters": {},
                 "rtcpFeedback": [{"type": "nack"}, {"type": "transport-cc"}]},
                {"kind": "video", "mimeType": "video/VP8", "preferredPayloadType": 101,
                 "clockRate": 90000, "parameters": {},
                 "rtcpFeedback": [{"type": "nack"}, {"type": "nack", "parameter": "pli"},
                     {"type": "ccm", "parameter": "fir"}, {"type": "goog-remb"},
                     {"type": "transport-cc"}, {"type": "weird"}]},
                {"kind": "video", "mimeType": "video/rtx", "preferredPayloadType": 102,
                 "clockRate": 90000, "parameters": {"apt": 101}, "rtcpFeedback": []},
                {"kind": "video", "mimeType": "video/H265", "preferredPayloadType": 103,
                 "clockRate": 90000, "parameters": {}, "rtcpFeedback": []},
                {"kind": "video", "mimeType": "video/H264", "preferredPayloadType": 107,
                 "clockRate": 90000, "parameters": {"packetization-mode": 1,
                 "level-asymmetry-allowed": 1, "profile-level-id": "42e01f"},
                 "rtcpFeedback": [{"type": "nack"}]},
                {"kind": "video", "mimeType": "video/rtx", "preferredPayloadType": 108,
                 "clockRate": 90000, "parameters": {"apt": 107}, "rtcpFeedback": []}
            ],
            "headerExtensions": [
                {"kind": "audio", "uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "preferredId": 1},
                {"kind": "video", "uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "preferredId": 1},
                {"kind": "video", "uri": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
                 "preferredId": 4},
                {"kind": "video", "uri": "urn:ietf:params:rtp-hdrext:framemarking", "preferredId": 7},
                {"kind": "audio", "uri": "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
                 "preferredId": 10}
            ]
        }))
        .expect("static test capabilities are valid")
    }

    #[test]
    fn load_keeps_supported_codecs_with_their_rtx() {
        let device = Device::load(&router_caps()).expect("loads");
        let caps = device.rtp_capabilities();
        let mimes: Vec<(&str, Option<u8>)> = caps
            .codecs
            .iter()
            .map(|c| (c.mime_type.as_str(), c.preferred_payload_type))
            .collect();
        assert_eq!(
            mimes,
            vec![
                ("audio/opus", Some(100)),
                ("video/VP8", Some(101)),
                ("video/rtx", Some(102)),
                ("video/H264", Some(107)),
                ("video/rtx", Some(108)),
            ]
        );
        let vp8 = &caps.codecs[1];
        assert_eq!(vp8.rtcp_feedback.len(), 5, "unknown feedback dropped");
        let uris: Vec<&str> = caps
            .header_extensions
            .iter()
            .map(|e| e.uri.as_str())
            .collect();
        assert!(!uris.contains(&"urn:ietf:params:rtp-hdrext:framemarking"));
        assert_eq!(uris.len(), 4);
        assert!(device.can_produce(MediaKind::Audio));
        assert_eq!(
            device
                .rtx_codec_for(101)
                .and_then(|c| c.preferred_payload_type),
            Some(102)
        );
        assert_eq!(
            device
                .send_codec(MediaKind::Video, Some("video/h264"))
                .map(|c| c.preferred_payload_type)
                .ok(),
            Some(Some(107))
        );
        assert!(
            device
                .send_codec(MediaKind::Video, Some("video/AV1"))
                .is_err()
        );
    }

    #[test]
    fn load_fails_without_common_codec() {
        let caps = RtpCapabilities::default();
        assert!(matches!(
            Device::load(&caps),
            Err(ClientError::Unsupported(_))
        ));
    }
}
