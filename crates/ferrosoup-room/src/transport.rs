//! A WebRTC transport as the worker keeps it: ICE-lite, DTLS and SRTP state of one client
//! connection, plus the tables that route its packets.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use ferrosoup_proto::transport::{DtlsState, IceState};
use ferrosoup_rtc::dtls::{DtlsRole, DtlsSession, Fingerprint};
use ferrosoup_rtc::ice::IceLiteServer;
use ferrosoup_rtc::srtp::SrtpSession;
use ferrosoup_rtc::twcc::TwccRecorder;

use crate::ids::{RouterId, TransportId};

/// Where an incoming SSRC goes: a producer stream (slab key, stream index), and whether the
/// SSRC is the stream's RTX SSRC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamRef {
    /// Producer slab key.
    pub producer: usize,
    /// Stream index within the producer.
    pub stream: usize,
    /// The SSRC carries RTX.
    pub rtx: bool,
}

/// One WebRTC transport.
pub struct Transport {
    /// Public id.
    pub id: TransportId,
    /// The router it belongs to.
    pub router_id: RouterId,
    /// ICE-lite state.
    pub ice: IceLiteServer,
    /// DTLS session, created by `connectTransport`.
    pub dtls: Option<DtlsSession>,
    /// Role and fingerprints the client gave in `connectTransport`.
    pub remote_dtls: Option<(DtlsRole, Vec<Fingerprint>)>,
    /// SRTP contexts once DTLS is connected.
    pub srtp: Option<SrtpSession>,
    /// Last states reported to the control path.
    pub reported: (IceState, DtlsState),
    /// 5-tuples registered in the worker's tuple map for this transport.
    pub tuples: Vec<SocketAddr>,
    /// Incoming SSRC → producer stream.
    pub ssrc_table: HashMap<u32, StreamRef>,
    /// MID → producer slab key, to learn SSRCs of producers announced without them.
    pub mid_table: HashMap<String, usize>,
    /// Outgoing consumer SSRC (media and RTX) → consumer slab key, for RTCP feedback.
    pub consumer_ssrcs: HashMap<u32, usize>,
    /// Producers on this transport (owned).
    pub producers: Vec<usize>,
    /// Consumers on this transport (owned).
    pub consumers: Vec<usize>,
    /// `setMaxIncomingBitrate` value (0: unlimited).
    pub max_incoming_bitrate: u32,
    /// When ICE went to `disconnected` (for `iceRestartRequired`).
    pub ice_disconnected_at: Option<Instant>,
    /// When `iceRestartRequired` was last sent.
    pub ice_restart_notified_at: Option<Instant>,
    /// Counters for stats.
    pub counters: TransportCounters,
    /// When the next RTCP report round is due.
    pub next_rtcp_at: Instant,
    /// Latest REMB estimate from the client, bits per second.
    pub remb_bitrate: Option<u64>,
    /// Next transport-wide sequence number written into packets sent on this transport.
    pub twcc_seq: u16,
    /// Arrivals of the client's packets, for transport-cc feedback to it.
    pub twcc: TwccRecorder,
    /// When the next transport-cc feedback is due.
    pub next_twcc_feedback_at: Instant,
}

/// Per-transport packet counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct TransportCounters {
    /// RTP packets received.
    pub rtp_packets_in: u64,
    /// RTP bytes received.
    pub rtp_bytes_in: u64,
    /// RTP packets sent.
    pub rtp_packets_out: u64,
    /// RTP bytes sent.
    pub rtp_bytes_out: u64,
    /// RTCP packets received.
    pub rtcp_in: u64,
    /// RTCP packets sent.
    pub rtcp_out: u64,
    /// Packets dropped because SRTP/SRTCP authentication failed.
    pub srtp_failures: u64,
    /// RTP packets whose SSRC matched no producer.
    pub unknown_ssrc: u64,
}

impl Transport {
    /// The DTLS state as mediasoup names it.
    pub fn dtls_state(&self) -> DtlsState {
        use ferrosoup_rtc::dtls::DtlsState as S;
        match self.dtls.as_ref().map(|d| d.state()) {
            None => DtlsState::New,
            Some(S::New) => DtlsState::New,
            Some(S::Connecting) => DtlsState::Connecting,
            Some(S::Connected) => DtlsState::Connected,
            Some(S::Failed) => DtlsState::Failed,
            Some(S::Closed) => DtlsState::Closed,
        }
    }

    /// The ICE state as mediasoup names it.
    pub fn ice_state(&self) -> IceState {
        use ferrosoup_rtc::ice::IceState as S;
        match self.ice.state() {
            S::New => IceState::New,
            S::Connected => IceState::Connected,
            S::Completed => IceState::Completed,
            S::Disconnected => IceState::Disconnected,
            S::Closed => IceState::Closed,
        }
    }

    /// Where to send: the selected ICE tuple.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.ice.selected_tuple()
    }
}
