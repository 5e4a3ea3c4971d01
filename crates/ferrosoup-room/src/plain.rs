//! Plain RTP transports (mediasoup's `PlainTransport`): RTP and RTCP over UDP without ICE or
//! DTLS, for ffmpeg, GStreamer and recorders. Each plain transport has its own UDP port
//! (and a second one for RTCP without `rtcpMux`), opened by the worker loop and registered
//! in its poll like the worker socket, so that `comedia` can tell transports apart by the
//! port a first packet arrives on. The engine names these sockets by [`LocalSocket`] and
//! keeps per transport a [`PlainPath`]: where its RTP and RTCP go and come from.

use std::net::SocketAddr;

pub use ferrosoup_rtc::srtp::SrtpProfile;

/// A UDP socket the worker opened for a plain transport, as the engine names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalSocket(pub usize);

/// How a plain transport is created (mediasoup's `createPlainTransport` options).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlainOptions {
    /// Learn the remote address from the first packet instead of `connect`.
    pub comedia: bool,
    /// RTCP on the RTP port; otherwise a second port carries RTCP.
    pub rtcp_mux: bool,
    /// SRTP with this crypto suite (keys exchanged in the create answer and `connect`).
    pub srtp: Option<SrtpProfile>,
}

/// SRTP master key and salt of one side of a plain transport (mediasoup's
/// `srtpParameters`).
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpMasterKey {
    /// Crypto suite.
    pub profile: SrtpProfile,
    /// Master key followed by master salt.
    pub key_and_salt: Vec<u8>,
}

impl std::fmt::Debug for SrtpMasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material stays out of logs.
        f.debug_struct("SrtpMasterKey")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl SrtpMasterKey {
    /// A random key and salt for `profile`.
    pub fn generate(profile: SrtpProfile) -> Self {
        let len = profile.master_key_len() + profile.master_salt_len();
        Self {
            profile,
            key_and_salt: (0..len).map(|_| rand::random::<u8>()).collect(),
        }
    }

    /// Bytes of key and salt `profile` needs.
    pub fn expected_len(profile: SrtpProfile) -> usize {
        profile.master_key_len() + profile.master_salt_len()
    }
}

/// What a new plain transport tells its client.
#[derive(Clone, Debug)]
pub struct PlainTransportInfo {
    /// Transport id.
    pub id: crate::ids::TransportId,
    /// Its RTP socket's address.
    pub local: SocketAddr,
    /// Its RTCP socket's address, without `rtcpMux`.
    pub local_rtcp: Option<SocketAddr>,
    /// The local SRTP key, when SRTP is enabled.
    pub srtp: Option<SrtpMasterKey>,
}

/// The path of a plain transport: its sockets, the remote addresses and SRTP keys.
#[derive(Debug)]
pub struct PlainPath {
    /// Socket of RTP (and of RTCP with `rtcpMux`).
    pub rtp_socket: LocalSocket,
    /// Socket of RTCP without `rtcpMux`.
    pub rtcp_socket: Option<LocalSocket>,
    /// Learn the remote addresses from the first packets.
    pub comedia: bool,
    /// Where RTP goes (and comes from).
    pub remote: Option<SocketAddr>,
    /// Where RTCP goes without `rtcpMux` (and comes from).
    pub remote_rtcp: Option<SocketAddr>,
    /// Our SRTP key when SRTP is enabled (the session starts when `connect` gives the
    /// remote one).
    pub local_key: Option<SrtpMasterKey>,
    /// Media flows: SRTP ready and the remote RTP address known (consumers started).
    pub connected: bool,
}

impl PlainPath {
    /// Where RTCP goes: the RTCP address without `rtcpMux`, else the RTP one.
    pub fn rtcp_remote(&self) -> Option<SocketAddr> {
        if self.rtcp_socket.is_some() {
            self.remote_rtcp
        } else {
            self.remote
        }
    }
}
