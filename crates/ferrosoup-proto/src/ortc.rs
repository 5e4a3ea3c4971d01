//! ORTC capability rules: what the SFU supports, router capabilities, validation of
//! client-supplied capabilities and parameters, and the producer → router → consumer
//! RTP parameter transformations, with mediasoup's semantics.
//!
//! The flow for one producer and one consumer:
//!
//! 1. [`generate_router_rtp_capabilities`] from the configured media codecs
//!    (answered to `createRoom` for `Device.load`).
//! 2. On `produce`: [`validate_rtp_parameters`], then
//!    [`get_producer_rtp_parameters_mapping`] (producer payload types and SSRCs →
//!    router ones) and [`get_consumable_rtp_parameters`] (the producer's streams as
//!    the router forwards them).
//! 3. On `consume`: [`can_consume`], then [`get_consumer_rtp_parameters`] and
//!    [`assign_consumer_ssrcs`].
//!
//! Everything here is pure: no randomness (SSRC bases are arguments), no I/O.

mod h264;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::rtp_parameters::{
    MediaKind, ParameterValue, Parameters, RtcpFeedback, RtcpParameters, RtpCapabilities,
    RtpCodecCapability, RtpCodecParameters, RtpEncodingParameters, RtpHeaderExtension,
    RtpHeaderExtensionDirection, RtpHeaderExtensionParameters, RtpParameters, RtxParameters, uri,
};

/// Why capabilities or parameters were rejected. Messages name the offending field
/// (e.g. `codecs[1].payloadType`) or the codec.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OrtcError {
    /// A field has an invalid value.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Path of the field, e.g. `codecs[0].mimeType`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configured media codec is not in [`supported_rtp_capabilities`].
    #[error("media codec not supported [mimeType:{mime_type}]")]
    MediaCodecNotSupported {
        /// The codec's MIME type.
        mime_type: String,
    },
    /// Two router codecs ended up with the same payload type.
    #[error("duplicated codec.preferredPayloadType {payload_type}")]
    DuplicatedPreferredPayloadType {
        /// The payload type.
        payload_type: u8,
    },
    /// The dynamic payload type range 96..=127 is used up.
    #[error("cannot allocate more dynamic codec payload types")]
    NoMorePayloadTypes,
    /// A producer codec the router does not support.
    #[error("unsupported codec [mimeType:{mime_type}, payloadType:{payload_type}]")]
    UnsupportedCodec {
        /// The codec's MIME type.
        mime_type: String,
        /// The codec's payload type.
        payload_type: u8,
    },
    /// A producer RTX codec whose `apt` names no media codec.
    #[error("missing media codec found for RTX PT {payload_type} (codecs[].parameters.apt)")]
    MissingRtxMediaCodec {
        /// The RTX codec's payload type.
        payload_type: u8,
    },
    /// The router has no RTX codec for a media codec the producer sends RTX for.
    #[error("no RTX codec for capability codec PT {payload_type}")]
    NoRtxCodecInCapabilities {
        /// The router media codec's payload type.
        payload_type: u8,
    },
    /// An [`RtpMapping`] that was not made from the given producer parameters.
    #[error("rtpMapping does not match the producer's RTP parameters: {0}")]
    MappingMismatch(&'static str),
    /// The consumer's capabilities share no media codec with the producer.
    #[error("no compatible media codecs")]
    NoCompatibleMediaCodecs,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> OrtcError {
    OrtcError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Result of this module's functions.
pub type Result<T, E = OrtcError> = std::result::Result<T, E>;

/// Dynamic payload types in the order mediasoup hands them out.
const DYNAMIC_PAYLOAD_TYPES: [u8; 32] = [
    100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118,
    119, 120, 121, 122, 123, 124, 125, 126, 127, 96, 97, 98, 99,
];

/// Highest valid RTP payload type.
const MAX_PAYLOAD_TYPE: u8 = 127;

// ---------------------------------------------------------------------------------
// Supported capabilities and router capabilities
// ---------------------------------------------------------------------------------

fn video_feedback() -> Vec<RtcpFeedback> {
    vec![
        RtcpFeedback::new("nack", ""),
        RtcpFeedback::new("nack", "pli"),
        RtcpFeedback::new("ccm", "fir"),
        RtcpFeedback::new("goog-remb", ""),
        RtcpFeedback::new("transport-cc", ""),
    ]
}

fn video_codec(mime_type: &str, parameters: Parameters) -> RtpCodecCapability {
    RtpCodecCapability {
        kind: MediaKind::Video,
        mime_type: mime_type.to_owned(),
        preferred_payload_type: None,
        clock_rate: 90_000,
        channels: None,
        parameters,
        rtcp_feedback: video_feedback(),
    }
}

fn header_extension(
    kind: MediaKind,
    uri: &str,
    preferred_id: u8,
    direction: RtpHeaderExtensionDirection,
) -> RtpHeaderExtension {
    RtpHeaderExtension {
        kind,
        uri: uri.to_owned(),
        preferred_id,
        preferred_encrypt: false,
        direction,
    }
}

fn parameters<const N: usize>(pairs: [(&str, ParameterValue); N]) -> Parameters {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// What the SFU can receive and forward: the subset of mediasoup's supported RTP
/// capabilities it implements (opus, VP8, VP9, H264; RTX is added per video codec by
/// [`generate_router_rtp_capabilities`]), with mediasoup's RTCP feedback, header
/// extension ids and directions.
pub fn supported_rtp_capabilities() -> RtpCapabilities {
    use MediaKind::{Audio, Video};
    use RtpHeaderExtensionDirection::{Recvonly, Sendrecv};

    let opus = RtpCodecCapability {
        kind: Audio,
        mime_type: "audio/opus".to_owned(),
        preferred_payload_type: None,
        clock_rate: 48_000,
        channels: Some(2),
        parameters: Parameters::new(),
        rtcp_feedback: vec![
            RtcpFeedback::new("nack", ""),
            RtcpFeedback::new("transport-cc", ""),
        ],
    };
    RtpCapabilities {
        codecs: vec![
            opus,
            video_codec("video/VP8", Parameters::new()),
            video_codec("video/VP9", Parameters::new()),
            video_codec(
                "video/H264",
                parameters([("level-asymmetry-allowed", 1u8.into())]),
            ),
        ],
        header_extensions: vec![
            header_extension(Audio, uri::MID, 1, Sendrecv),
            header_extension(Video, uri::MID, 1, Sendrecv),
            header_extension(Video, uri::RID, 2, Recvonly),
            header_extension(Video, uri::REPAIRED_RID, 3, Recvonly),
            header_extension(Audio, uri::ABS_SEND_TIME, 4, Sendrecv),
            header_extension(Video, uri::ABS_SEND_TIME, 4, Sendrecv),
            // As mediasoup: transport-wide-cc for audio only when receiving.
            header_extension(Audio, uri::TRANSPORT_WIDE_CC_01, 5, Recvonly),
            header_extension(Video, uri::TRANSPORT_WIDE_CC_01, 5, Sendrecv),
            header_extension(Audio, uri::SSRC_AUDIO_LEVEL, 10, Sendrecv),
            header_extension(Video, uri::VIDEO_ORIENTATION, 11, Sendrecv),
            header_extension(Video, uri::TOFFSET, 12, Sendrecv),
        ],
    }
}

/// The media codecs a router gets when none are configured: opus 48000/2, VP8,
/// VP9 profile 0 and H264 constrained baseline 3.1 with packetization-mode 1.
pub fn default_media_codecs() -> Vec<RtpCodecCapability> {
    let opus = RtpCodecCapability {
        kind: MediaKind::Audio,
        mime_type: "audio/opus".to_owned(),
        preferred_payload_type: None,
        clock_rate: 48_000,
        channels: Some(2),
        parameters: Parameters::new(),
        rtcp_feedback: Vec::new(),
    };
    let video = |mime_type: &str, parameters: Parameters| RtpCodecCapability {
        rtcp_feedback: Vec::new(),
        ..video_codec(mime_type, parameters)
    };
    vec![
        opus,
        video("video/VP8", Parameters::new()),
        video("video/VP9", parameters([("profile-id", 0u8.into())])),
        video(
            "video/H264",
            parameters([
                ("packetization-mode", 1u8.into()),
                ("profile-level-id", "42e01f".into()),
                ("level-asymmetry-allowed", 1u8.into()),
            ]),
        ),
    ]
}

/// Router RTP capabilities for the given media codecs, as mediasoup's
/// `generateRouterRtpCapabilities`: each codec is matched against
/// [`supported_rtp_capabilities`] (taking its feedback), keeps its
/// `preferredPayloadType` or gets the next free dynamic one, merges its parameters
/// over the supported codec's, and video codecs are followed by an RTX codec whose
/// `apt` names them. Header extensions are the supported ones.
pub fn generate_router_rtp_capabilities(
    media_codecs: &[RtpCodecCapability],
) -> Result<RtpCapabilities> {
    let supported = supported_rtp_capabilities();
    let mut dynamic_payload_types = DYNAMIC_PAYLOAD_TYPES.to_vec();
    let mut caps = RtpCapabilities {
        codecs: Vec::new(),
        header_extensions: supported.header_extensions,
    };

    for (i, media_codec) in media_codecs.iter().enumerate() {
        validate_codec_capability(media_codec, &format!("mediaCodecs[{i}]"))?;
        let supported_codec = supported
            .codecs
            .iter()
            .find(|s| match_codecs(media_codec.into(), (*s).into(), false))
            .ok_or_else(|| OrtcError::MediaCodecNotSupported {
                mime_type: media_codec.mime_type.clone(),
            })?;
        let mut codec = supported_codec.clone();

        let payload_type = match (
            media_codec.preferred_payload_type,
            codec.preferred_payload_type,
        ) {
            (Some(pt), _) => {
                dynamic_payload_types.retain(|p| *p != pt);
                pt
            }
            (None, Some(pt)) => pt,
            (None, None) => take_dynamic_payload_type(&mut dynamic_payload_types)?,
        };
        if caps
            .codecs
            .iter()
            .any(|c| c.preferred_payload_type == Some(payload_type))
        {
            return Err(OrtcError::DuplicatedPreferredPayloadType { payload_type });
        }
        codec.preferred_payload_type = Some(payload_type);
        codec.parameters.extend(
            media_codec
                .parameters
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let kind = codec.kind;
        let clock_rate = codec.clock_rate;
        caps.codecs.push(codec);

        if kind == MediaKind::Video {
            let rtx_payload_type = take_dynamic_payload_type(&mut dynamic_payload_types)?;
            caps.codecs.push(RtpCodecCapability {
                kind,
                mime_type: format!("{kind}/rtx"),
                preferred_payload_type: Some(rtx_payload_type),
                clock_rate,
                channels: None,
                parameters: parameters([("apt", payload_type.into())]),
                rtcp_feedback: Vec::new(),
            });
        }
    }
    Ok(caps)
}

fn take_dynamic_payload_type(available: &mut Vec<u8>) -> Result<u8> {
    if available.is_empty() {
        return Err(OrtcError::NoMorePayloadTypes);
    }
    Ok(available.remove(0))
}

// ---------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------

/// Validates RTP capabilities (e.g. a device's, given at `joinRoom` or `consume`)
/// with mediasoup's rules: codec MIME types `audio/*` or `video/*`, payload types
/// and `apt` within 0..=127, non-zero clock rates, non-empty feedback types, header
/// extensions with a URI and a non-zero id.
pub fn validate_rtp_capabilities(caps: &RtpCapabilities) -> Result<()> {
    for (i, codec) in caps.codecs.iter().enumerate() {
        validate_codec_capability(codec, &format!("codecs[{i}]"))?;
    }
    for (i, ext) in caps.header_extensions.iter().enumerate() {
        if ext.uri.is_empty() {
            return Err(invalid(format!("headerExtensions[{i}].uri"), "empty"));
        }
        if ext.preferred_id == 0 {
            return Err(invalid(
                format!("headerExtensions[{i}].preferredId"),
                "must be 1..=255",
            ));
        }
    }
    Ok(())
}

fn validate_mime_type(mime_type: &str, field: &str) -> Result<MediaKind> {
    MediaKind::from_mime_type(mime_type).ok_or_else(|| {
        invalid(
            format!("{field}.mimeType"),
            format!("{mime_type:?} is not audio/* or video/*"),
        )
    })
}

fn validate_codec_capability(codec: &RtpCodecCapability, field: &str) -> Result<()> {
    validate_mime_type(&codec.mime_type, field)?;
    if let Some(pt) = codec.preferred_payload_type
        && pt > MAX_PAYLOAD_TYPE
    {
        return Err(invalid(
            format!("{field}.preferredPayloadType"),
            format!("{pt} is not in 0..=127"),
        ));
    }
    validate_codec_common(
        codec.clock_rate,
        &codec.parameters,
        &codec.rtcp_feedback,
        field,
    )
}

fn validate_codec_common(
    clock_rate: u32,
    parameters: &Parameters,
    feedback: &[RtcpFeedback],
    field: &str,
) -> Result<()> {
    if clock_rate == 0 {
        return Err(invalid(format!("{field}.clockRate"), "must not be 0"));
    }
    if let Some(apt) = parameters.get("apt") {
        match apt.as_i64() {
            Some(n) if (0..=i64::from(MAX_PAYLOAD_TYPE)).contains(&n) => {}
            _ => {
                return Err(invalid(
                    format!("{field}.parameters.apt"),
                    "must be a payload type number",
                ));
            }
        }
    }
    for (j, fb) in feedback.iter().enumerate() {
        if fb.r#type.is_empty() {
            return Err(invalid(format!("{field}.rtcpFeedback[{j}].type"), "empty"));
        }
    }
    Ok(())
}

/// Validates RTP parameters (e.g. a producer's, given at `produce`) with mediasoup's
/// rules (those of its Node layer and its worker): a non-empty `mid` if any; at least
/// one media codec; MIME types `audio/*` or `video/*`; unique payload types within
/// 0..=127; RTX `apt` naming an existing media codec; header extensions with a URI
/// and unique non-zero ids; encodings' `codecPayloadType` naming a media codec; no
/// simulcast combined with multi-spatial-layer SVC. Missing encodings are allowed
/// (mediasoup then assumes a single encoding).
pub fn validate_rtp_parameters(params: &RtpParameters) -> Result<()> {
    if params.mid.as_deref() == Some("") {
        return Err(invalid("mid", "empty"));
    }
    if params.codecs.is_empty() {
        return Err(invalid("codecs", "empty"));
    }
    for (i, codec) in params.codecs.iter().enumerate() {
        let field = format!("codecs[{i}]");
        validate_mime_type(&codec.mime_type, &field)?;
        if codec.payload_type > MAX_PAYLOAD_TYPE {
            return Err(invalid(
                format!("{field}.payloadType"),
                format!("{} is not in 0..=127", codec.payload_type),
            ));
        }
        if params.codecs[..i]
            .iter()
            .any(|c| c.payload_type == codec.payload_type)
        {
            return Err(invalid(
                format!("{field}.payloadType"),
                format!("duplicated payloadType {}", codec.payload_type),
            ));
        }
        validate_codec_common(
            codec.clock_rate,
            &codec.parameters,
            &codec.rtcp_feedback,
            &field,
        )?;
        if codec.is_rtx() {
            let apt = codec.parameters.get("apt").and_then(ParameterValue::as_i64);
            let Some(apt) = apt else {
                return Err(invalid(format!("{field}.parameters.apt"), "missing"));
            };
            match params
                .codecs
                .iter()
                .find(|c| i64::from(c.payload_type) == apt)
            {
                None => {
                    return Err(invalid(
                        format!("{field}.parameters.apt"),
                        "points to a non existing codec",
                    ));
                }
                Some(c) if c.is_rtx() => {
                    return Err(invalid(
                        format!("{field}.parameters.apt"),
                        "points to a RTX codec",
                    ));
                }
                Some(_) => {}
            }
        }
    }
    if params.codecs.iter().all(RtpCodecParameters::is_rtx) {
        return Err(invalid("codecs", "no media codecs found"));
    }

    for (i, ext) in params.header_extensions.iter().enumerate() {
        if ext.uri.is_empty() {
            return Err(invalid(format!("headerExtensions[{i}].uri"), "empty"));
        }
        if ext.id == 0 {
            return Err(invalid(
                format!("headerExtensions[{i}].id"),
                "must be 1..=255",
            ));
        }
        if params.header_extensions[..i].iter().any(|e| e.id == ext.id) {
            return Err(invalid(
                format!("headerExtensions[{i}].id"),
                format!("duplicated id {}", ext.id),
            ));
        }
    }

    for (i, encoding) in params.encodings.iter().enumerate() {
        if let Some(pt) = encoding.codec_payload_type
            && !params
                .codecs
                .iter()
                .any(|c| c.payload_type == pt && !c.is_rtx())
        {
            return Err(invalid(
                format!("encodings[{i}].codecPayloadType"),
                format!("{pt} names no media codec"),
            ));
        }
        let spatial_layers =
            parse_scalability_mode(encoding.scalability_mode.as_deref()).spatial_layers;
        if spatial_layers > 1 && params.encodings.len() > 1 {
            return Err(invalid(
                format!("encodings[{i}].scalabilityMode"),
                "cannot use both simulcast and encodings with multiple SVC spatial layers",
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Scalability modes and producer type
// ---------------------------------------------------------------------------------

/// Layers described by a scalability mode such as `L1T3`, `S3T3` or `L3T3_KEY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalabilityMode {
    /// Number of spatial layers (1..=99).
    pub spatial_layers: u8,
    /// Number of temporal layers (1..=99).
    pub temporal_layers: u8,
    /// K-SVC (`_KEY`): spatial layers depend on each other only on key frames.
    pub ksvc: bool,
}

/// Parses a scalability mode as mediasoup does (`^[LS](\d{1,2})T(\d{1,2})(_KEY)?`
/// matched at the start); anything else, or `None`, is one spatial and one temporal
/// layer.
pub fn parse_scalability_mode(mode: Option<&str>) -> ScalabilityMode {
    fn layers(s: &[u8]) -> Option<(u8, &[u8])> {
        let first = *s.first()?;
        if !(b'1'..=b'9').contains(&first) {
            return None;
        }
        let mut value = first - b'0';
        let mut rest = &s[1..];
        if let Some(&d) = rest.first()
            && d.is_ascii_digit()
        {
            value = value * 10 + (d - b'0');
            rest = &rest[1..];
        }
        Some((value, rest))
    }

    let parsed = mode.and_then(|mode| {
        let s = mode.as_bytes();
        if !matches!(s.first(), Some(b'L' | b'S')) {
            return None;
        }
        let (spatial_layers, rest) = layers(&s[1..])?;
        let rest = rest.strip_prefix(b"T")?;
        let (temporal_layers, rest) = layers(rest)?;
        Some(ScalabilityMode {
            spatial_layers,
            temporal_layers,
            ksvc: rest.starts_with(b"_KEY"),
        })
    });
    parsed.unwrap_or(ScalabilityMode {
        spatial_layers: 1,
        temporal_layers: 1,
        ksvc: false,
    })
}

/// How a producer's (and so its consumers') streams are layered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProducerType {
    /// One stream without spatial layers.
    Simple,
    /// Several encodings (one per spatial layer).
    Simulcast,
    /// One stream with several spatial layers.
    Svc,
}

/// The type mediasoup's worker gives a producer with these parameters: simulcast
/// when there are several encodings, SVC when the single encoding has more than
/// one spatial layer, simple otherwise.
pub fn producer_type(params: &RtpParameters) -> ProducerType {
    match params.encodings.as_slice() {
        [_, _, ..] => ProducerType::Simulcast,
        [encoding]
            if parse_scalability_mode(encoding.scalability_mode.as_deref()).spatial_layers > 1 =>
        {
            ProducerType::Svc
        }
        _ => ProducerType::Simple,
    }
}

// ---------------------------------------------------------------------------------
// Codec matching
// ---------------------------------------------------------------------------------

/// The fields of a codec capability or codec parameters that matching looks at.
#[derive(Clone, Copy)]
struct CodecView<'a> {
    mime_type: &'a str,
    clock_rate: u32,
    channels: Option<u8>,
    parameters: &'a Parameters,
}

impl<'a> From<&'a RtpCodecCapability> for CodecView<'a> {
    fn from(c: &'a RtpCodecCapability) -> Self {
        Self {
            mime_type: &c.mime_type,
            clock_rate: c.clock_rate,
            channels: c.channels,
            parameters: &c.parameters,
        }
    }
}

impl<'a> From<&'a RtpCodecParameters> for CodecView<'a> {
    fn from(c: &'a RtpCodecParameters) -> Self {
        Self {
            mime_type: &c.mime_type,
            clock_rate: c.clock_rate,
            channels: c.channels,
            parameters: &c.parameters,
        }
    }
}

impl CodecView<'_> {
    /// Channels after mediasoup's normalization: 1 when missing for audio, ignored
    /// for video.
    fn effective_channels(&self) -> Option<u8> {
        match MediaKind::from_mime_type(self.mime_type) {
            Some(MediaKind::Audio) => Some(self.channels.unwrap_or(1)),
            _ => None,
        }
    }

    fn integer_parameter(&self, name: &str) -> i64 {
        self.parameters
            .get(name)
            .and_then(ParameterValue::as_i64)
            .unwrap_or(0)
    }
}

/// mediasoup's `matchCodecs`: same MIME type (case-insensitive), clock rate and
/// channels; when `strict`, H264 also needs the same packetization-mode and a
/// compatible profile, VP9 the same profile-id.
fn match_codecs(a: CodecView<'_>, b: CodecView<'_>, strict: bool) -> bool {
    if !a.mime_type.eq_ignore_ascii_case(b.mime_type)
        || a.clock_rate != b.clock_rate
        || a.effective_channels() != b.effective_channels()
    {
        return false;
    }
    let mime_type = a.mime_type.to_ascii_lowercase();
    match mime_type.as_str() {
        "video/h264" | "video/h264-svc" if strict => {
            a.integer_parameter("packetization-mode") == b.integer_parameter("packetization-mode")
                && h264::is_same_profile(a.parameters, b.parameters)
                && h264::profile_level_id_for_answer(a.parameters, b.parameters).is_ok()
        }
        "video/vp9" if strict => {
            a.integer_parameter("profile-id") == b.integer_parameter("profile-id")
        }
        _ => true,
    }
}

fn is_h264(mime_type: &str) -> bool {
    mime_type.eq_ignore_ascii_case("video/h264") || mime_type.eq_ignore_ascii_case("video/h264-svc")
}

fn apt_of(parameters: &Parameters) -> Option<i64> {
    parameters.get("apt").and_then(ParameterValue::as_i64)
}

fn capability_payload_type(codec: &RtpCodecCapability) -> Result<u8> {
    codec.preferred_payload_type.ok_or_else(|| {
        invalid(
            "routerRtpCapabilities.codecs[].preferredPayloadType",
            format!("missing for {}", codec.mime_type),
        )
    })
}

// ---------------------------------------------------------------------------------
// Producer mapping and consumable parameters
// ---------------------------------------------------------------------------------

/// How a producer's payload types and streams map onto the router's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpMapping {
    /// Producer payload type → router payload type (media codecs first, then RTX).
    pub codecs: Vec<RtpMappingCodec>,
    /// One entry per producer encoding, in order.
    pub encodings: Vec<RtpMappingEncoding>,
}

/// One payload type mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpMappingCodec {
    /// Payload type the producer sends.
    pub payload_type: u8,
    /// Payload type in the router (consumable parameters).
    pub mapped_payload_type: u8,
}

/// One producer encoding and the SSRC it gets inside the router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpMappingEncoding {
    /// The encoding's SSRC, if signaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssrc: Option<u32>,
    /// The encoding's RID, if signaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    /// The encoding's scalability mode, if signaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalability_mode: Option<String>,
    /// SSRC of this stream in the consumable parameters.
    pub mapped_ssrc: u32,
}

/// The producer's encodings, or a single empty one when it gave none (as mediasoup).
fn producer_encodings(params: &RtpParameters) -> Vec<RtpEncodingParameters> {
    if params.encodings.is_empty() {
        vec![RtpEncodingParameters::default()]
    } else {
        params.encodings.clone()
    }
}

/// Maps a producer's RTP parameters onto the router's capabilities, as mediasoup's
/// `getProducerRtpParametersMapping`: each media codec must match a router codec
/// strictly (else [`OrtcError::UnsupportedCodec`]), each RTX codec maps to the RTX
/// codec of the router codec its media codec mapped to, and encoding `i` gets the
/// mapped SSRC `mapped_ssrc_base + i` (the caller picks the random base).
///
/// `params` should have passed [`validate_rtp_parameters`].
pub fn get_producer_rtp_parameters_mapping(
    params: &RtpParameters,
    caps: &RtpCapabilities,
    mapped_ssrc_base: u32,
) -> Result<RtpMapping> {
    // (index of producer codec, router codec), media codecs first.
    let mut pairs: Vec<(usize, &RtpCodecCapability)> = Vec::new();

    for (i, codec) in params.codecs.iter().enumerate() {
        if codec.is_rtx() {
            continue;
        }
        let cap_codec = caps
            .codecs
            .iter()
            .find(|cap| match_codecs(codec.into(), (*cap).into(), true))
            .ok_or_else(|| OrtcError::UnsupportedCodec {
                mime_type: codec.mime_type.clone(),
                payload_type: codec.payload_type,
            })?;
        pairs.push((i, cap_codec));
    }

    for (i, codec) in params.codecs.iter().enumerate() {
        if !codec.is_rtx() {
            continue;
        }
        let apt = apt_of(&codec.parameters);
        let media_index = params
            .codecs
            .iter()
            .position(|c| Some(i64::from(c.payload_type)) == apt)
            .ok_or(OrtcError::MissingRtxMediaCodec {
                payload_type: codec.payload_type,
            })?;
        let cap_media = pairs
            .iter()
            .find(|(j, _)| *j == media_index)
            .map(|(_, cap)| *cap)
            .ok_or_else(|| {
                invalid(
                    format!("codecs[{i}].parameters.apt"),
                    "points to a RTX codec",
                )
            })?;
        let cap_media_pt = capability_payload_type(cap_media)?;
        let cap_rtx = caps
            .codecs
            .iter()
            .find(|cap| cap.is_rtx() && apt_of(&cap.parameters) == Some(i64::from(cap_media_pt)))
            .ok_or(OrtcError::NoRtxCodecInCapabilities {
                payload_type: cap_media_pt,
            })?;
        pairs.push((i, cap_rtx));
    }

    let codecs = pairs
        .iter()
        .map(|(i, cap)| {
            Ok(RtpMappingCodec {
                payload_type: params.codecs[*i].payload_type,
                mapped_payload_type: capability_payload_type(cap)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;

    let encodings = producer_encodings(params)
        .into_iter()
        .zip(0u32..)
        .map(|(encoding, i)| RtpMappingEncoding {
            ssrc: encoding.ssrc.filter(|s| *s != 0),
            rid: encoding.rid.filter(|r| !r.is_empty()),
            scalability_mode: encoding.scalability_mode.filter(|m| !m.is_empty()),
            mapped_ssrc: mapped_ssrc_base.wrapping_add(i),
        })
        .collect();

    Ok(RtpMapping { codecs, encodings })
}

/// The producer's streams as the router forwards them to consumers, as mediasoup's
/// `getConsumableRtpParameters`: router payload types, codec feedback and RTX, the
/// producer's codec parameters (H264 `profile-level-id` settled against the router
/// codec), the header extensions of `kind` the router sends, encodings with their
/// mapped SSRCs (without rid/rtx/codecPayloadType) and the producer's CNAME.
pub fn get_consumable_rtp_parameters(
    kind: MediaKind,
    params: &RtpParameters,
    caps: &RtpCapabilities,
    mapping: &RtpMapping,
) -> Result<RtpParameters> {
    let mut consumable = RtpParameters::default();

    for codec in params.codecs.iter().filter(|c| !c.is_rtx()) {
        let mapped_pt = mapping
            .codecs
            .iter()
            .find(|m| m.payload_type == codec.payload_type)
            .ok_or(OrtcError::MappingMismatch("codec payload type not mapped"))?
            .mapped_payload_type;
        let cap_codec = caps
            .codecs
            .iter()
            .find(|c| c.preferred_payload_type == Some(mapped_pt))
            .ok_or(OrtcError::MappingMismatch(
                "mapped payload type not in router",
            ))?;

        let mut parameters = codec.parameters.clone();
        if is_h264(&codec.mime_type) {
            // mediasoup's strict match with `modify` rewrites the producer's
            // profile-level-id to the answer against the router codec.
            match h264::profile_level_id_for_answer(&codec.parameters, &cap_codec.parameters) {
                Ok(Some(id)) => {
                    parameters.insert("profile-level-id".to_owned(), id.into());
                }
                Ok(None) => {
                    parameters.remove("profile-level-id");
                }
                Err(h264::ProfileMismatch) => {
                    return Err(OrtcError::UnsupportedCodec {
                        mime_type: codec.mime_type.clone(),
                        payload_type: codec.payload_type,
                    });
                }
            }
        }

        consumable.codecs.push(RtpCodecParameters {
            mime_type: cap_codec.mime_type.clone(),
            payload_type: mapped_pt,
            clock_rate: cap_codec.clock_rate,
            channels: cap_codec.channels,
            parameters,
            rtcp_feedback: cap_codec.rtcp_feedback.clone(),
        });

        if let Some(cap_rtx) = caps
            .codecs
            .iter()
            .find(|c| c.is_rtx() && apt_of(&c.parameters) == Some(i64::from(mapped_pt)))
        {
            consumable.codecs.push(RtpCodecParameters {
                mime_type: cap_rtx.mime_type.clone(),
                payload_type: capability_payload_type(cap_rtx)?,
                clock_rate: cap_rtx.clock_rate,
                channels: None,
                parameters: cap_rtx.parameters.clone(),
                rtcp_feedback: cap_rtx.rtcp_feedback.clone(),
            });
        }
    }

    consumable.header_extensions = caps
        .header_extensions
        .iter()
        .filter(|ext| {
            ext.kind == kind
                && matches!(
                    ext.direction,
                    RtpHeaderExtensionDirection::Sendrecv | RtpHeaderExtensionDirection::Sendonly
                )
        })
        .map(|ext| RtpHeaderExtensionParameters {
            uri: ext.uri.clone(),
            id: ext.preferred_id,
            encrypt: ext.preferred_encrypt,
            parameters: Parameters::new(),
        })
        .collect();

    for (i, mut encoding) in producer_encodings(params).into_iter().enumerate() {
        let mapped = mapping
            .encodings
            .get(i)
            .ok_or(OrtcError::MappingMismatch("encoding not mapped"))?;
        encoding.rid = None;
        encoding.rtx = None;
        encoding.codec_payload_type = None;
        encoding.ssrc = Some(mapped.mapped_ssrc);
        consumable.encodings.push(encoding);
    }

    consumable.rtcp = RtcpParameters {
        cname: params.rtcp.cname.clone(),
        reduced_size: Some(true),
        mux: None,
    };
    Ok(consumable)
}

// ---------------------------------------------------------------------------------
// Consumers
// ---------------------------------------------------------------------------------

/// Whether an endpoint with `caps` can receive a producer whose consumable
/// parameters are `consumable`: its first codec in common must be a media codec
/// (strict matching). Errors only when `caps` is invalid.
pub fn can_consume(consumable: &RtpParameters, caps: &RtpCapabilities) -> Result<bool> {
    validate_rtp_capabilities(caps)?;
    let first_match = consumable.codecs.iter().find(|codec| {
        caps.codecs
            .iter()
            .any(|cap| match_codecs(cap.into(), (*codec).into(), true))
    });
    Ok(first_match.is_some_and(|codec| !codec.is_rtx()))
}

/// RTP parameters for a consumer on an endpoint with `caps`, as mediasoup's
/// `getConsumerRtpParameters`: codecs the endpoint supports (with the endpoint's
/// feedback; RTX and plain NACK only for video, as mediasoup's default `enableRtx`),
/// header extensions it supports with the same id, transport-cc preferred over REMB.
///
/// Without `pipe` the result has one encoding whose `scalabilityMode` describes all
/// the producer's layers (`L3T3` for three simulcast streams of three temporal
/// layers) and the highest `maxBitrate`; with `pipe` every consumable encoding is
/// kept. SSRCs are left unset: fill them with [`assign_consumer_ssrcs`].
pub fn get_consumer_rtp_parameters(
    consumable: &RtpParameters,
    caps: &RtpCapabilities,
    pipe: bool,
) -> Result<RtpParameters> {
    validate_rtp_capabilities(caps)?;
    let enable_rtx = consumable
        .codecs
        .first()
        .and_then(|c| MediaKind::from_mime_type(&c.mime_type))
        == Some(MediaKind::Video);

    let mut consumer = RtpParameters {
        rtcp: consumable.rtcp.clone(),
        ..RtpParameters::default()
    };

    for codec in &consumable.codecs {
        if !enable_rtx && codec.is_rtx() {
            continue;
        }
        let Some(cap) = caps
            .codecs
            .iter()
            .find(|cap| match_codecs((*cap).into(), codec.into(), true))
        else {
            continue;
        };
        let mut codec = codec.clone();
        codec.rtcp_feedback = cap
            .rtcp_feedback
            .iter()
            .filter(|fb| enable_rtx || fb.r#type != "nack" || !fb.parameter.is_empty())
            .cloned()
            .collect();
        consumer.codecs.push(codec);
    }

    // Drop RTX codecs whose media codec did not survive.
    let media_pts: Vec<i64> = consumer
        .codecs
        .iter()
        .filter(|c| !c.is_rtx())
        .map(|c| i64::from(c.payload_type))
        .collect();
    consumer.codecs.retain(|c| {
        !c.is_rtx() || apt_of(&c.parameters).is_some_and(|apt| media_pts.contains(&apt))
    });

    if consumer
        .codecs
        .first()
        .is_none_or(RtpCodecParameters::is_rtx)
    {
        return Err(OrtcError::NoCompatibleMediaCodecs);
    }

    consumer.header_extensions = consumable
        .header_extensions
        .iter()
        .filter(|ext| {
            caps.header_extensions
                .iter()
                .any(|cap| cap.preferred_id == ext.id && cap.uri == ext.uri)
        })
        .cloned()
        .collect();

    let has_ext = |u: &str| consumer.header_extensions.iter().any(|e| e.uri == u);
    let removed: &[&str] = if has_ext(uri::TRANSPORT_WIDE_CC_01) {
        &["goog-remb"]
    } else if has_ext(uri::ABS_SEND_TIME) {
        &["transport-cc"]
    } else {
        &["transport-cc", "goog-remb"]
    };
    for codec in &mut consumer.codecs {
        codec
            .rtcp_feedback
            .retain(|fb| !removed.contains(&fb.r#type.as_str()));
    }

    if pipe {
        consumer.encodings = consumable
            .encodings
            .iter()
            .map(|e| RtpEncodingParameters {
                ssrc: None,
                rtx: None,
                ..e.clone()
            })
            .collect();
    } else {
        let mut encoding = RtpEncodingParameters::default();
        let mut scalability_mode = consumable
            .encodings
            .iter()
            .find_map(|e| e.scalability_mode.clone().filter(|m| !m.is_empty()));
        if consumable.encodings.len() > 1 {
            let temporal_layers =
                parse_scalability_mode(scalability_mode.as_deref()).temporal_layers;
            scalability_mode = Some(format!(
                "L{}T{}",
                consumable.encodings.len(),
                temporal_layers
            ));
        }
        encoding.scalability_mode = scalability_mode;
        encoding.max_bitrate = consumable
            .encodings
            .iter()
            .filter_map(|e| e.max_bitrate)
            .max()
            .filter(|b| *b > 0);
        consumer.encodings.push(encoding);
    }
    Ok(consumer)
}

/// Sets the SSRCs of a consumer's encodings: encoding `i` gets `ssrc_base + i` and,
/// when the parameters contain an RTX codec, an RTX stream `rtx_ssrc_base + i`.
/// (mediasoup uses `rtx_ssrc_base = ssrc_base + 1` for a single-encoding consumer.)
pub fn assign_consumer_ssrcs(params: &mut RtpParameters, ssrc_base: u32, rtx_ssrc_base: u32) {
    let has_rtx = params.codecs.iter().any(RtpCodecParameters::is_rtx);
    for (encoding, i) in params.encodings.iter_mut().zip(0u32..) {
        encoding.ssrc = Some(ssrc_base.wrapping_add(i));
        encoding.rtx = has_rtx.then(|| RtxParameters {
            ssrc: rtx_ssrc_base.wrapping_add(i),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn router_caps() -> RtpCapabilities {
        generate_router_rtp_capabilities(&default_media_codecs()).unwrap()
    }

    fn pt_of(caps: &RtpCapabilities, mime_type: &str) -> Vec<u8> {
        caps.codecs
            .iter()
            .filter(|c| c.mime_type == mime_type)
            .filter_map(|c| c.preferred_payload_type)
            .collect()
    }

    /// A Chrome VP8 simulcast `produce` as mediasoup-client sends it.
    fn chrome_vp8_simulcast() -> serde_json::Value {
        json!({
            "mid": "1",
            "codecs": [
                {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000, "parameters": {},
                 "rtcpFeedback": [{"type": "goog-remb", "parameter": ""},
                                  {"type": "transport-cc", "parameter": ""},
                                  {"type": "ccm", "parameter": "fir"},
                                  {"type": "nack", "parameter": ""},
                                  {"type": "nack", "parameter": "pli"}]},
                {"mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000,
                 "parameters": {"apt": 96}, "rtcpFeedback": []}
            ],
            "headerExtensions": [
                {"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 4, "encrypt": false, "parameters": {}},
                {"uri": "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id", "id": 10, "encrypt": false, "parameters": {}},
                {"uri": "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id", "id": 11, "encrypt": false, "parameters": {}},
                {"uri": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time", "id": 2, "encrypt": false, "parameters": {}},
                {"uri": "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01", "id": 3, "encrypt": false, "parameters": {}},
                {"uri": "urn:3gpp:video-orientation", "id": 13, "encrypt": false, "parameters": {}},
                {"uri": "urn:ietf:params:rtp-hdrext:toffset", "id": 14, "encrypt": false, "parameters": {}}
            ],
            "encodings": [
                {"active": true, "scaleResolutionDownBy": 4.0, "maxBitrate": 100000, "rid": "r0", "scalabilityMode": "L1T3", "dtx": false},
                {"active": true, "scaleResolutionDownBy": 2.0, "maxBitrate": 300000, "rid": "r1", "scalabilityMode": "L1T3", "dtx": false},
                {"active": true, "scaleResolutionDownBy": 1.0, "maxBitrate": 900000, "rid": "r2", "scalabilityMode": "L1T3", "dtx": false}
            ],
            "rtcp": {"cname": "Zx1aB2cD", "reducedSize": true},
            "msid": "b1f0c9a2 3e1d7c6b"
        })
    }

    /// A Chrome opus `produce` as mediasoup-client sends it.
    fn chrome_opus() -> serde_json::Value {
        json!({
            "mid": "0",
            "codecs": [
                {"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2,
                 "parameters": {"minptime": 10, "useinbandfec": 1, "usedtx": 1},
                 "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}]}
            ],
            "headerExtensions": [
                {"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 4, "encrypt": false, "parameters": {}},
                {"uri": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time", "id": 2, "encrypt": false, "parameters": {}},
                {"uri": "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01", "id": 3, "encrypt": false, "parameters": {}},
                {"uri": "urn:ietf:params:rtp-hdrext:ssrc-audio-level", "id": 1, "encrypt": false, "parameters": {}}
            ],
            "encodings": [{"ssrc": 2_315_662_389_u32, "dtx": false}],
            "rtcp": {"cname": "Zx1aB2cD", "reducedSize": true}
        })
    }

    /// Receive capabilities of a Chrome device loaded with the default router.
    fn chrome_device_caps() -> RtpCapabilities {
        let video_fb = json!([{"type": "goog-remb", "parameter": ""},
                              {"type": "transport-cc", "parameter": ""},
                              {"type": "ccm", "parameter": "fir"},
                              {"type": "nack", "parameter": ""},
                              {"type": "nack", "parameter": "pli"}]);
        let ext = |kind: &str, uri: &str, id: u8| json!({"kind": kind, "uri": uri, "preferredId": id, "preferredEncrypt": false, "direction": "sendrecv"});
        serde_json::from_value(json!({
            "codecs": [
                {"mimeType": "audio/opus", "kind": "audio", "preferredPayloadType": 100, "clockRate": 48000,
                 "channels": 2, "parameters": {"minptime": 10, "useinbandfec": 1},
                 "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}]},
                {"mimeType": "video/VP8", "kind": "video", "preferredPayloadType": 101, "clockRate": 90000,
                 "parameters": {}, "rtcpFeedback": video_fb},
                {"mimeType": "video/rtx", "kind": "video", "preferredPayloadType": 102, "clockRate": 90000,
                 "parameters": {"apt": 101}, "rtcpFeedback": []},
                {"mimeType": "video/H264", "kind": "video", "preferredPayloadType": 105, "clockRate": 90000,
                 "parameters": {"level-asymmetry-allowed": 1, "packetization-mode": 1, "profile-level-id": "42e01f"},
                 "rtcpFeedback": video_fb},
                {"mimeType": "video/rtx", "kind": "video", "preferredPayloadType": 106, "clockRate": 90000,
                 "parameters": {"apt": 105}, "rtcpFeedback": []}
            ],
            "headerExtensions": [
                ext("audio", uri::MID, 1), ext("video", uri::MID, 1),
                ext("audio", uri::ABS_SEND_TIME, 4), ext("video", uri::ABS_SEND_TIME, 4),
                ext("video", uri::TRANSPORT_WIDE_CC_01, 5),
                ext("audio", uri::SSRC_AUDIO_LEVEL, 10),
                ext("video", uri::VIDEO_ORIENTATION, 11), ext("video", uri::TOFFSET, 12)
            ]
        }))
        .unwrap()
    }

    fn produce(
        params: serde_json::Value,
        kind: MediaKind,
    ) -> (RtpParameters, RtpMapping, RtpParameters) {
        let params: RtpParameters = serde_json::from_value(params).unwrap();
        validate_rtp_parameters(&params).unwrap();
        let caps = router_caps();
        let mapping = get_producer_rtp_parameters_mapping(&params, &caps, 5000).unwrap();
        let consumable = get_consumable_rtp_parameters(kind, &params, &caps, &mapping).unwrap();
        (params, mapping, consumable)
    }

    fn fb_types(codec: &RtpCodecParameters) -> Vec<(String, String)> {
        codec
            .rtcp_feedback
            .iter()
            .map(|f| (f.r#type.clone(), f.parameter.clone()))
            .collect()
    }

    #[test]
    fn router_caps_from_default_codecs() {
        let caps = router_caps();
        assert_eq!(pt_of(&caps, "audio/opus"), vec![100]);
        assert_eq!(pt_of(&caps, "video/VP8"), vec![101]);
        assert_eq!(pt_of(&caps, "video/VP9"), vec![103]);
        assert_eq!(pt_of(&caps, "video/H264"), vec![105]);
        assert_eq!(pt_of(&caps, "video/rtx"), vec![102, 104, 106]);
        let apts: Vec<_> = caps
            .codecs
            .iter()
            .filter(|c| c.is_rtx())
            .map(|c| c.parameters["apt"].as_i64())
            .collect();
        assert_eq!(apts, vec![Some(101), Some(103), Some(105)]);

        let opus = &caps.codecs[0];
        assert_eq!(opus.channels, Some(2));
        assert_eq!(
            opus.rtcp_feedback,
            vec![
                RtcpFeedback::new("nack", ""),
                RtcpFeedback::new("transport-cc", "")
            ]
        );
        let h264 = caps
            .codecs
            .iter()
            .find(|c| c.mime_type == "video/H264")
            .unwrap();
        assert_eq!(
            h264.parameters["packetization-mode"],
            ParameterValue::Number(1)
        );
        assert_eq!(
            h264.parameters["level-asymmetry-allowed"],
            ParameterValue::Number(1)
        );
        assert_eq!(h264.parameters["profile-level-id"].as_str(), Some("42e01f"));
        assert_eq!(h264.rtcp_feedback.len(), 5);
        let vp9 = caps
            .codecs
            .iter()
            .find(|c| c.mime_type == "video/VP9")
            .unwrap();
        assert_eq!(vp9.parameters["profile-id"], ParameterValue::Number(0));

        for u in [
            uri::MID,
            uri::RID,
            uri::REPAIRED_RID,
            uri::ABS_SEND_TIME,
            uri::TRANSPORT_WIDE_CC_01,
            uri::SSRC_AUDIO_LEVEL,
            uri::VIDEO_ORIENTATION,
            uri::TOFFSET,
        ] {
            assert!(caps.header_extensions.iter().any(|e| e.uri == u), "{u}");
        }
        validate_rtp_capabilities(&caps).unwrap();

        // The JSON mediasoup-client's Device.load gets.
        let json = serde_json::to_value(&caps).unwrap();
        assert_eq!(
            json["codecs"][2],
            json!({"kind": "video", "mimeType": "video/rtx", "preferredPayloadType": 102,
                   "clockRate": 90000, "parameters": {"apt": 101}, "rtcpFeedback": []})
        );
        assert_eq!(
            json["codecs"][0]["rtcpFeedback"][0],
            json!({"type": "nack", "parameter": ""})
        );
        assert_eq!(
            json["headerExtensions"][2],
            json!({"kind": "video", "uri": uri::RID, "preferredId": 2, "preferredEncrypt": false,
                   "direction": "recvonly"})
        );
        let back: RtpCapabilities = serde_json::from_value(json).unwrap();
        assert_eq!(back, caps);
    }

    #[test]
    fn router_caps_keep_preferred_payload_types() {
        let mut codecs = default_media_codecs();
        codecs[0].preferred_payload_type = Some(111);
        codecs[3].preferred_payload_type = Some(96);
        let caps = generate_router_rtp_capabilities(&codecs).unwrap();
        assert_eq!(pt_of(&caps, "audio/opus"), vec![111]);
        assert_eq!(pt_of(&caps, "video/VP8"), vec![100]);
        assert_eq!(pt_of(&caps, "video/H264"), vec![96]);
        assert_eq!(pt_of(&caps, "video/rtx"), vec![101, 103, 104]);

        // VP8 asks for the payload type opus was already given.
        let mut codecs = default_media_codecs();
        codecs[1].preferred_payload_type = Some(100);
        assert_eq!(
            generate_router_rtp_capabilities(&codecs),
            Err(OrtcError::DuplicatedPreferredPayloadType { payload_type: 100 })
        );
    }

    #[test]
    fn router_caps_reject_unsupported_media_codecs() {
        let mut h265 = default_media_codecs()[1].clone();
        h265.mime_type = "video/H265".into();
        let err = generate_router_rtp_capabilities(&[h265]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "media codec not supported [mimeType:video/H265]"
        );

        // mediasoup normalizes missing channels to 1, which opus/48000/2 does not match.
        let mut mono = default_media_codecs()[0].clone();
        mono.channels = None;
        assert!(matches!(
            generate_router_rtp_capabilities(&[mono]),
            Err(OrtcError::MediaCodecNotSupported { .. })
        ));

        let mut bad = default_media_codecs()[0].clone();
        bad.mime_type = "opus".into();
        let err = generate_router_rtp_capabilities(&[bad]).unwrap_err();
        assert!(err.to_string().contains("mediaCodecs[0].mimeType"), "{err}");
    }

    #[test]
    fn maps_chrome_vp8_simulcast_producer() {
        let (params, mapping, consumable) = produce(chrome_vp8_simulcast(), MediaKind::Video);
        assert_eq!(producer_type(&params), ProducerType::Simulcast);
        assert_eq!(
            mapping.codecs,
            vec![
                RtpMappingCodec {
                    payload_type: 96,
                    mapped_payload_type: 101
                },
                RtpMappingCodec {
                    payload_type: 97,
                    mapped_payload_type: 102
                },
            ]
        );
        let rids: Vec<_> = mapping.encodings.iter().map(|e| e.rid.as_deref()).collect();
        assert_eq!(rids, vec![Some("r0"), Some("r1"), Some("r2")]);
        let mapped: Vec<_> = mapping.encodings.iter().map(|e| e.mapped_ssrc).collect();
        assert_eq!(mapped, vec![5000, 5001, 5002]);
        assert!(mapping.encodings.iter().all(|e| e.ssrc.is_none()));
        assert_eq!(
            mapping.encodings[0].scalability_mode.as_deref(),
            Some("L1T3")
        );

        assert_eq!(consumable.codecs.len(), 2);
        assert_eq!(consumable.codecs[0].payload_type, 101);
        assert_eq!(consumable.codecs[0].rtcp_feedback.len(), 5);
        assert_eq!(consumable.codecs[1].mime_type, "video/rtx");
        assert_eq!(
            consumable.codecs[1].parameters["apt"],
            ParameterValue::Number(101)
        );
        let uris: Vec<_> = consumable
            .header_extensions
            .iter()
            .map(|e| (e.uri.as_str(), e.id))
            .collect();
        assert_eq!(
            uris,
            vec![
                (uri::MID, 1),
                (uri::ABS_SEND_TIME, 4),
                (uri::TRANSPORT_WIDE_CC_01, 5),
                (uri::VIDEO_ORIENTATION, 11),
                (uri::TOFFSET, 12)
            ]
        );
        assert_eq!(consumable.encodings.len(), 3);
        for (i, e) in consumable.encodings.iter().enumerate() {
            assert_eq!(e.ssrc, Some(5000 + i as u32));
            assert_eq!(e.rid, None);
            assert_eq!(e.rtx, None);
            assert_eq!(e.scalability_mode.as_deref(), Some("L1T3"));
        }
        assert_eq!(consumable.rtcp.cname.as_deref(), Some("Zx1aB2cD"));
        assert_eq!(consumable.rtcp.reduced_size, Some(true));
    }

    #[test]
    fn maps_opus_producer() {
        let (params, mapping, consumable) = produce(chrome_opus(), MediaKind::Audio);
        assert_eq!(producer_type(&params), ProducerType::Simple);
        assert_eq!(
            mapping.codecs,
            vec![RtpMappingCodec {
                payload_type: 111,
                mapped_payload_type: 100
            }]
        );
        assert_eq!(mapping.encodings[0].ssrc, Some(2_315_662_389));
        assert_eq!(consumable.codecs.len(), 1);
        let opus = &consumable.codecs[0];
        assert_eq!((opus.payload_type, opus.channels), (100, Some(2)));
        // The producer's codec parameters are kept.
        assert_eq!(opus.parameters["useinbandfec"], ParameterValue::Number(1));
        let uris: Vec<_> = consumable
            .header_extensions
            .iter()
            .map(|e| e.uri.as_str())
            .collect();
        assert_eq!(
            uris,
            vec![uri::MID, uri::ABS_SEND_TIME, uri::SSRC_AUDIO_LEVEL]
        );
        assert_eq!(consumable.encodings[0].ssrc, Some(5000));
    }

    #[test]
    fn producer_without_encodings_gets_one() {
        let mut params: RtpParameters = serde_json::from_value(chrome_opus()).unwrap();
        params.encodings.clear();
        let caps = router_caps();
        let mapping = get_producer_rtp_parameters_mapping(&params, &caps, u32::MAX).unwrap();
        assert_eq!(mapping.encodings.len(), 1);
        assert_eq!(mapping.encodings[0].mapped_ssrc, u32::MAX);
        let consumable =
            get_consumable_rtp_parameters(MediaKind::Audio, &params, &caps, &mapping).unwrap();
        assert_eq!(consumable.encodings[0].ssrc, Some(u32::MAX));
    }

    #[test]
    fn unsupported_producer_codecs_are_rejected() {
        let caps = router_caps();
        let mut params: RtpParameters = serde_json::from_value(chrome_vp8_simulcast()).unwrap();
        params.codecs[0].mime_type = "video/H265".into();
        let err = get_producer_rtp_parameters_mapping(&params, &caps, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported codec [mimeType:video/H265, payloadType:96]"
        );

        // VP9 profile 2 does not match the router's profile 0.
        params.codecs[0].mime_type = "video/VP9".into();
        params.codecs[0]
            .parameters
            .insert("profile-id".into(), 2u8.into());
        assert!(matches!(
            get_producer_rtp_parameters_mapping(&params, &caps, 1),
            Err(OrtcError::UnsupportedCodec {
                payload_type: 96,
                ..
            })
        ));
        params.codecs[0]
            .parameters
            .insert("profile-id".into(), 0u8.into());
        assert!(get_producer_rtp_parameters_mapping(&params, &caps, 1).is_ok());
    }

    #[test]
    fn rtx_without_media_codec_is_rejected() {
        let caps = router_caps();
        let mut params: RtpParameters = serde_json::from_value(chrome_vp8_simulcast()).unwrap();
        params.codecs[1]
            .parameters
            .insert("apt".into(), 98u8.into());
        assert_eq!(
            get_producer_rtp_parameters_mapping(&params, &caps, 1),
            Err(OrtcError::MissingRtxMediaCodec { payload_type: 97 })
        );
        // A router without RTX for the codec.
        let mut no_rtx = caps.clone();
        no_rtx.codecs.retain(|c| !c.is_rtx());
        let params: RtpParameters = serde_json::from_value(chrome_vp8_simulcast()).unwrap();
        assert_eq!(
            get_producer_rtp_parameters_mapping(&params, &no_rtx, 1),
            Err(OrtcError::NoRtxCodecInCapabilities { payload_type: 101 })
        );
    }

    fn h264_producer(parameters: serde_json::Value) -> RtpParameters {
        serde_json::from_value(json!({
            "mid": "2",
            "codecs": [{"mimeType": "video/H264", "payloadType": 102, "clockRate": 90000,
                        "parameters": parameters, "rtcpFeedback": []}],
            "encodings": [{"ssrc": 1234}]
        }))
        .unwrap()
    }

    #[test]
    fn h264_matching_follows_mediasoup() {
        let caps = router_caps();
        let ok = h264_producer(
            json!({"packetization-mode": 1, "profile-level-id": "42e01f", "level-asymmetry-allowed": 1}),
        );
        let mapping = get_producer_rtp_parameters_mapping(&ok, &caps, 7).unwrap();
        assert_eq!(mapping.codecs[0].mapped_payload_type, 105);

        // Baseline (42001f) is a different profile from constrained baseline.
        for params in [
            json!({"packetization-mode": 0, "profile-level-id": "42e01f"}),
            json!({"packetization-mode": 1, "profile-level-id": "640c1f"}),
            json!({"packetization-mode": 1, "profile-level-id": "42001f"}),
            json!({"packetization-mode": 1, "profile-level-id": "bogus!"}),
        ] {
            let p = h264_producer(params.clone());
            assert!(
                matches!(
                    get_producer_rtp_parameters_mapping(&p, &caps, 7),
                    Err(OrtcError::UnsupportedCodec { .. })
                ),
                "{params}"
            );
        }

        // Without level asymmetry the producer's level is capped to the router's.
        let high_level =
            h264_producer(json!({"packetization-mode": 1, "profile-level-id": "42e034"}));
        let mapping = get_producer_rtp_parameters_mapping(&high_level, &caps, 7).unwrap();
        let consumable =
            get_consumable_rtp_parameters(MediaKind::Video, &high_level, &caps, &mapping).unwrap();
        assert_eq!(
            consumable.codecs[0].parameters["profile-level-id"].as_str(),
            Some("42e01f")
        );
        assert_eq!(consumable.codecs[1].mime_type, "video/rtx");

        // Packetization mode 0 works when the router has such a codec.
        let mut codecs = default_media_codecs();
        let mut pm0 = codecs[3].clone();
        pm0.parameters
            .insert("packetization-mode".into(), 0u8.into());
        codecs.push(pm0);
        let caps = generate_router_rtp_capabilities(&codecs).unwrap();
        let p = h264_producer(json!({"packetization-mode": 0, "profile-level-id": "42e01f"}));
        let mapping = get_producer_rtp_parameters_mapping(&p, &caps, 7).unwrap();
        assert_eq!(mapping.codecs[0].mapped_payload_type, 107);
    }

    #[test]
    fn consumer_params_for_chrome_device_simulcast() {
        let (_, _, consumable) = produce(chrome_vp8_simulcast(), MediaKind::Video);
        let device = chrome_device_caps();
        assert!(can_consume(&consumable, &device).unwrap());
        let mut consumer = get_consumer_rtp_parameters(&consumable, &device, false).unwrap();
        assert_eq!(consumer.codecs.len(), 2);
        // transport-cc negotiated, so goog-remb is dropped.
        assert_eq!(
            fb_types(&consumer.codecs[0]),
            vec![
                ("transport-cc".into(), "".into()),
                ("ccm".into(), "fir".into()),
                ("nack".into(), "".into()),
                ("nack".into(), "pli".into())
            ]
        );
        assert_eq!(consumer.header_extensions.len(), 5);
        assert_eq!(consumer.encodings.len(), 1);
        assert_eq!(
            consumer.encodings[0].scalability_mode.as_deref(),
            Some("L3T3")
        );
        assert_eq!(consumer.encodings[0].max_bitrate, Some(900_000));
        assert_eq!(consumer.encodings[0].ssrc, None);

        assign_consumer_ssrcs(&mut consumer, 1000, 1001);
        let json = serde_json::to_value(&consumer).unwrap();
        assert_eq!(
            json["encodings"],
            json!([{"ssrc": 1000, "rtx": {"ssrc": 1001}, "scalabilityMode": "L3T3", "maxBitrate": 900000}])
        );
        assert_eq!(
            json["rtcp"],
            json!({"cname": "Zx1aB2cD", "reducedSize": true})
        );
        assert!(json["codecs"][0].get("channels").is_none());
        assert!(json.get("mid").is_none());

        // Pipe consumers keep every stream.
        let mut piped = get_consumer_rtp_parameters(&consumable, &device, true).unwrap();
        assert_eq!(piped.encodings.len(), 3);
        assign_consumer_ssrcs(&mut piped, 10, 20);
        let ssrcs: Vec<_> = piped
            .encodings
            .iter()
            .map(|e| (e.ssrc, e.rtx.map(|r| r.ssrc)))
            .collect();
        assert_eq!(
            ssrcs,
            vec![
                (Some(10), Some(20)),
                (Some(11), Some(21)),
                (Some(12), Some(22))
            ]
        );
    }

    #[test]
    fn consumer_params_for_audio() {
        let (_, _, consumable) = produce(chrome_opus(), MediaKind::Audio);
        let device = chrome_device_caps();
        let mut consumer = get_consumer_rtp_parameters(&consumable, &device, false).unwrap();
        assert_eq!(consumer.codecs.len(), 1);
        let uris: Vec<_> = consumer
            .header_extensions
            .iter()
            .map(|e| e.uri.as_str())
            .collect();
        assert_eq!(
            uris,
            vec![uri::MID, uri::ABS_SEND_TIME, uri::SSRC_AUDIO_LEVEL]
        );
        // No transport-wide-cc extension for audio, so no transport-cc feedback.
        assert!(consumer.codecs[0].rtcp_feedback.is_empty());
        assert_eq!(consumer.encodings, vec![RtpEncodingParameters::default()]);
        assign_consumer_ssrcs(&mut consumer, 42, 43);
        assert_eq!(consumer.encodings[0].ssrc, Some(42));
        assert_eq!(consumer.encodings[0].rtx, None);
    }

    #[test]
    fn consumer_feedback_without_bwe_extensions() {
        let (_, _, consumable) = produce(chrome_vp8_simulcast(), MediaKind::Video);
        let mut device = chrome_device_caps();
        device.header_extensions.retain(|e| e.uri == uri::MID);
        let consumer = get_consumer_rtp_parameters(&consumable, &device, false).unwrap();
        let types: Vec<_> = fb_types(&consumer.codecs[0])
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(types, vec!["ccm", "nack", "nack"]);

        // Without RTX in the device caps there is no RTX codec and no rtx ssrc.
        device.codecs.retain(|c| !c.is_rtx());
        let mut consumer = get_consumer_rtp_parameters(&consumable, &device, false).unwrap();
        assert_eq!(consumer.codecs.len(), 1);
        assign_consumer_ssrcs(&mut consumer, 1, 2);
        assert_eq!(consumer.encodings[0].rtx, None);
    }

    #[test]
    fn cannot_consume_without_common_codec() {
        let (_, _, consumable) = produce(chrome_vp8_simulcast(), MediaKind::Video);
        let mut device = chrome_device_caps();
        device.codecs.retain(|c| c.mime_type != "video/VP8");
        // Only RTX (and H264) left in common: no media codec.
        assert!(!can_consume(&consumable, &device).unwrap());
        assert_eq!(
            get_consumer_rtp_parameters(&consumable, &device, false),
            Err(OrtcError::NoCompatibleMediaCodecs)
        );
        assert!(!can_consume(&consumable, &RtpCapabilities::default()).unwrap());

        // A device with a different H264 profile cannot consume an H264 producer.
        let caps = router_caps();
        let p = h264_producer(json!({"packetization-mode": 1, "profile-level-id": "42e01f"}));
        let mapping = get_producer_rtp_parameters_mapping(&p, &caps, 7).unwrap();
        let consumable =
            get_consumable_rtp_parameters(MediaKind::Video, &p, &caps, &mapping).unwrap();
        let mut device = chrome_device_caps();
        assert!(can_consume(&consumable, &device).unwrap());
        for c in &mut device.codecs {
            if c.mime_type == "video/H264" {
                c.parameters
                    .insert("profile-level-id".into(), "4d001f".into());
            }
        }
        assert!(!can_consume(&consumable, &device).unwrap());
    }

    #[test]
    fn can_consume_rejects_invalid_caps() {
        let (_, _, consumable) = produce(chrome_opus(), MediaKind::Audio);
        let mut device = chrome_device_caps();
        device.codecs[0].mime_type = "opus".into();
        let err = can_consume(&consumable, &device).unwrap_err();
        assert!(err.to_string().contains("codecs[0].mimeType"), "{err}");
    }

    #[test]
    fn json_round_trip_of_client_samples() {
        for sample in [chrome_vp8_simulcast(), chrome_opus()] {
            let params: RtpParameters = serde_json::from_value(sample.clone()).unwrap();
            assert_eq!(serde_json::to_value(&params).unwrap(), sample);
        }
        let device = chrome_device_caps();
        let again: RtpCapabilities =
            serde_json::from_value(serde_json::to_value(&device).unwrap()).unwrap();
        assert_eq!(again, device);
    }

    #[test]
    fn validation_names_the_field() {
        let base: RtpParameters = serde_json::from_value(chrome_vp8_simulcast()).unwrap();
        let check = |f: &dyn Fn(&mut RtpParameters), expected: &str| {
            let mut p = base.clone();
            f(&mut p);
            let err = validate_rtp_parameters(&p).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} does not name {expected}");
        };
        check(
            &|p| p.codecs[0].mime_type = "VP8".into(),
            "codecs[0].mimeType",
        );
        check(&|p| p.codecs[1].payload_type = 96, "codecs[1].payloadType");
        check(&|p| p.codecs[0].payload_type = 200, "codecs[0].payloadType");
        check(&|p| p.codecs[0].clock_rate = 0, "codecs[0].clockRate");
        check(
            &|p| {
                p.codecs[1].parameters.remove("apt");
            },
            "codecs[1].parameters.apt",
        );
        check(
            &|p| {
                p.codecs[1].parameters.insert("apt".into(), 99u8.into());
            },
            "codecs[1].parameters.apt",
        );
        check(
            &|p| {
                p.codecs[1].parameters.insert("apt".into(), "x".into());
            },
            "codecs[1].parameters.apt",
        );
        check(&|p| p.codecs.clear(), "codecs");
        check(
            &|p| {
                p.codecs.remove(0);
            },
            "codecs[0].parameters.apt",
        );
        check(
            &|p| p.codecs[0].rtcp_feedback[0].r#type.clear(),
            "codecs[0].rtcpFeedback[0].type",
        );
        check(&|p| p.header_extensions[1].id = 0, "headerExtensions[1].id");
        check(&|p| p.header_extensions[1].id = 4, "headerExtensions[1].id");
        check(
            &|p| p.header_extensions[0].uri.clear(),
            "headerExtensions[0].uri",
        );
        check(
            &|p| p.encodings[2].codec_payload_type = Some(97),
            "encodings[2].codecPayloadType",
        );
        check(
            &|p| p.encodings[0].scalability_mode = Some("L3T3".into()),
            "encodings[0].scalabilityMode",
        );
        check(&|p| p.mid = Some(String::new()), "mid");

        let mut ok = base.clone();
        ok.encodings[1].codec_payload_type = Some(96);
        validate_rtp_parameters(&ok).unwrap();

        let mut caps = chrome_device_caps();
        caps.codecs[0].preferred_payload_type = Some(128);
        let err = validate_rtp_capabilities(&caps).unwrap_err().to_string();
        assert!(err.contains("codecs[0].preferredPayloadType"), "{err}");
        let mut caps = chrome_device_caps();
        caps.header_extensions[3].preferred_id = 0;
        let err = validate_rtp_capabilities(&caps).unwrap_err().to_string();
        assert!(err.contains("headerExtensions[3].preferredId"), "{err}");
    }

    #[test]
    fn scalability_modes() {
        let p = |m: Option<&str>| {
            let s = parse_scalability_mode(m);
            (s.spatial_layers, s.temporal_layers, s.ksvc)
        };
        assert_eq!(p(Some("L1T3")), (1, 3, false));
        assert_eq!(p(Some("S3T3")), (3, 3, false));
        assert_eq!(p(Some("L3T3_KEY")), (3, 3, true));
        assert_eq!(p(Some("L12T2")), (12, 2, false));
        assert_eq!(p(Some("L2T3h")), (2, 3, false));
        assert_eq!(p(Some("L123T1")), (1, 1, false));
        assert_eq!(p(Some("L0T1")), (1, 1, false));
        assert_eq!(p(Some("X1T1")), (1, 1, false));
        assert_eq!(p(Some("")), (1, 1, false));
        assert_eq!(p(None), (1, 1, false));
    }

    #[test]
    fn producer_types() {
        let mut params: RtpParameters = serde_json::from_value(chrome_opus()).unwrap();
        assert_eq!(producer_type(&params), ProducerType::Simple);
        params.encodings[0].scalability_mode = Some("L3T3_KEY".into());
        assert_eq!(producer_type(&params), ProducerType::Svc);
        params.encodings[0].scalability_mode = Some("L1T3".into());
        assert_eq!(producer_type(&params), ProducerType::Simple);
        params.encodings.clear();
        assert_eq!(producer_type(&params), ProducerType::Simple);
        assert_eq!(serde_json::to_value(ProducerType::Svc).unwrap(), "svc");
    }

    #[test]
    fn svc_consumer_keeps_scalability_mode() {
        let mut params: RtpParameters = serde_json::from_value(chrome_vp8_simulcast()).unwrap();
        params.encodings.truncate(1);
        params.encodings[0].scalability_mode = Some("L3T3_KEY".into());
        params.encodings[0].rid = None;
        params.encodings[0].ssrc = Some(99);
        let caps = router_caps();
        let mapping = get_producer_rtp_parameters_mapping(&params, &caps, 1).unwrap();
        let consumable =
            get_consumable_rtp_parameters(MediaKind::Video, &params, &caps, &mapping).unwrap();
        let consumer =
            get_consumer_rtp_parameters(&consumable, &chrome_device_caps(), false).unwrap();
        assert_eq!(
            consumer.encodings[0].scalability_mode.as_deref(),
            Some("L3T3_KEY")
        );
    }

    #[test]
    fn mismatched_mapping_is_an_error() {
        let params: RtpParameters = serde_json::from_value(chrome_opus()).unwrap();
        let caps = router_caps();
        let mut mapping = get_producer_rtp_parameters_mapping(&params, &caps, 1).unwrap();
        mapping.encodings.clear();
        assert!(matches!(
            get_consumable_rtp_parameters(MediaKind::Audio, &params, &caps, &mapping),
            Err(OrtcError::MappingMismatch(_))
        ));
        assert!(matches!(
            get_consumable_rtp_parameters(MediaKind::Audio, &params, &caps, &RtpMapping::default()),
            Err(OrtcError::MappingMismatch(_))
        ));
    }
}
