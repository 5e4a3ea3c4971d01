//! The broadcaster HTTP API (mediasoup-demo's `ApiServer` routes and JSON): ffmpeg,
//! GStreamer and recorders join a room as a peer and publish or consume over plain RTP
//! transports (or WebRTC ones).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::rtp_parameters::{MediaKind, RtpCapabilities, RtpParameters};
use crate::transport::{DtlsParameters, SctpCapabilities};

/// The device a broadcaster says it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BroadcasterDevice {
    /// Its name (e.g. `FFmpeg`).
    pub name: String,
    /// Its version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `POST /rooms/{roomId}/broadcasters` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateBroadcasterRequest {
    /// Broadcaster id (its peer id in the room).
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// What it is.
    pub device: BroadcasterDevice,
    /// What it can receive; needed to consume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtp_capabilities: Option<RtpCapabilities>,
}

/// A producer as the broadcaster answer lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BroadcasterProducerInfo {
    /// Producer id.
    pub id: String,
    /// Audio or video.
    pub kind: MediaKind,
}

/// A peer of the room as the broadcaster answer lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BroadcasterPeerInfo {
    /// Peer id.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// The peer's `appData.device` (`{}` when it gave none).
    pub device: Value,
    /// Its producers the broadcaster can consume.
    pub producers: Vec<BroadcasterProducerInfo>,
}

/// Answer to `POST /rooms/{roomId}/broadcasters`: the other peers, listed only when the
/// broadcaster gave `rtpCapabilities` (as mediasoup-demo does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateBroadcasterResponse {
    /// Peers in the room.
    pub peers: Vec<BroadcasterPeerInfo>,
}

/// Kind of a broadcaster transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BroadcasterTransportType {
    /// Plain RTP over UDP.
    Plain,
    /// WebRTC (ICE + DTLS).
    Webrtc,
}

/// SRTP crypto suites of plain transports (mediasoup's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SrtpCryptoSuite {
    /// AEAD AES-256-GCM (RFC 7714).
    #[serde(rename = "AEAD_AES_256_GCM")]
    AeadAes256Gcm,
    /// AEAD AES-128-GCM (RFC 7714).
    #[serde(rename = "AEAD_AES_128_GCM")]
    AeadAes128Gcm,
    /// AES-128 counter mode with an 80-bit HMAC-SHA1 tag (RFC 3711).
    #[serde(rename = "AES_CM_128_HMAC_SHA1_80")]
    AesCm128HmacSha1_80,
}

/// One side's SRTP master key and salt (mediasoup's `SrtpParameters`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SrtpParameters {
    /// Crypto suite.
    pub crypto_suite: SrtpCryptoSuite,
    /// Master key followed by master salt, base64.
    pub key_base64: String,
}

impl std::fmt::Debug for SrtpParameters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material stays out of logs.
        f.debug_struct("SrtpParameters")
            .field("crypto_suite", &self.crypto_suite)
            .finish_non_exhaustive()
    }
}

/// `POST .../broadcasters/{id}/transports` body. For plain transports `comedia` defaults
/// to true and `rtcpMux` to false, as mediasoup-demo's broadcaster API has them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateBroadcasterTransportRequest {
    /// `plain` or `webrtc`.
    #[serde(rename = "type")]
    pub r#type: BroadcasterTransportType,
    /// Plain: learn the remote address from the first packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comedia: Option<bool>,
    /// Plain: RTCP on the RTP port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtcp_mux: Option<bool>,
    /// Plain: use SRTP.
    #[serde(default)]
    pub enable_srtp: bool,
    /// Plain: the SRTP crypto suite (default `AES_CM_128_HMAC_SHA1_80`, as mediasoup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srtp_crypto_suite: Option<SrtpCryptoSuite>,
    /// WebRTC: SCTP capabilities, to enable data channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp_capabilities: Option<SctpCapabilities>,
}

/// Answer for a plain transport.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlainTransportResponse {
    /// Transport id.
    pub id: String,
    /// IP to send RTP (and RTCP) to.
    pub ip: String,
    /// RTP port.
    pub port: u16,
    /// RTCP port without `rtcpMux`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtcp_port: Option<u16>,
    /// The server's SRTP key, with `enableSrtp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srtp_parameters: Option<SrtpParameters>,
}

/// `POST .../transports/{transportId}/connect` body: plain transports take the remote
/// address (unless `comedia`) and SRTP key, WebRTC ones the DTLS parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectBroadcasterTransportRequest {
    /// Plain: remote IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Plain: remote RTP port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Plain: remote RTCP port without `rtcpMux` (default: port + 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtcp_port: Option<u16>,
    /// Plain: the remote SRTP key, required when the transport uses SRTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srtp_parameters: Option<SrtpParameters>,
    /// WebRTC: DTLS parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtls_parameters: Option<DtlsParameters>,
}

/// `POST .../transports/{transportId}/producers` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateBroadcasterProducerRequest {
    /// Audio or video.
    pub kind: MediaKind,
    /// What the broadcaster sends (its SSRCs and payload types).
    pub rtp_parameters: RtpParameters,
}
