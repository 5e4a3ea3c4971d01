//! A WebRTC transport as the worker keeps it: ICE-lite, DTLS and SRTP state of one client
//! connection, plus the tables that route its packets.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pacer::Pacer;
use ferrosoup_bwe::{BandwidthEstimator, BweConfig, BweStats};
use ferrosoup_proto::transport::{DtlsState, IceState};
use ferrosoup_rtc::dtls::{DtlsCertificate, DtlsError, DtlsRole, DtlsSession, Fingerprint};
use ferrosoup_rtc::ice::IceLiteServer;
use ferrosoup_rtc::rtp::{self, PaddingHeader};
use ferrosoup_rtc::sctp::{SctpAssociation, SctpDrops};
use ferrosoup_rtc::srtp::{SendIndex, SrtpSession};
use ferrosoup_rtc::twcc::TwccRecorder;

use crate::arena::{ConsumerKey, DataConsumerKey, DataProducerKey, ProducerKey};
use crate::ids::{RouterId, TransportId};
use crate::stats::{BandwidthGauges, RtpDrop};
use crate::transmit::Transmit;

/// Where an incoming SSRC goes: a producer stream, and whether the SSRC is the stream's RTX
/// SSRC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamRef {
    /// The producer.
    pub producer: ProducerKey,
    /// Stream index within the producer.
    pub stream: usize,
    /// The SSRC carries RTX.
    pub rtx: bool,
}

/// How many incoming SSRCs a transport routes at most: the media and RTX SSRC of each
/// encoding of its producers, counted two per encoding whether announced or learned from
/// MID/RID; `produce` refuses a producer beyond (128 encodings: e.g. 32 producers of 4
/// simulcast layers). The same as the SRTP session's bound, so that every SSRC a transport
/// routes keeps its SRTP state.
pub const MAX_INCOMING_SSRCS: usize = ferrosoup_rtc::srtp::MAX_REMOTE_SSRCS;

/// Sizes of a transport's per-address and per-SSRC state, each bounded whatever the client
/// sends ([`crate::Engine::transport_tables`]; for tests and debugging).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportTables {
    /// Remote addresses the worker routes to the transport (at most
    /// [`ferrosoup_rtc::ice::MAX_TUPLES`]).
    pub addresses: usize,
    /// Incoming SSRCs routed to a producer stream (at most [`MAX_INCOMING_SSRCS`]).
    pub ssrcs: usize,
    /// Remote SSRCs with SRTP replay state (at most
    /// [`ferrosoup_rtc::srtp::MAX_REMOTE_SSRCS`]).
    pub srtp_ssrcs: usize,
    /// Remote sender SSRCs with SRTCP replay state (at most
    /// [`ferrosoup_rtc::srtp::MAX_REMOTE_SSRCS`]).
    pub srtcp_ssrcs: usize,
}

/// The DTLS role and fingerprints a client gave in `connectTransport`.
#[derive(Clone, Debug)]
pub struct RemoteDtls {
    /// Our role (the opposite of the client's).
    pub local_role: DtlsRole,
    /// Fingerprints the client's certificate must match.
    pub fingerprints: Vec<Fingerprint>,
}

/// One WebRTC transport.
pub struct Transport {
    /// Public id.
    pub id: TransportId,
    /// The router it belongs to.
    pub router_id: RouterId,
    /// ICE-lite state.
    pub ice: IceLiteServer,
    /// DTLS session, created once `connectTransport` came and ICE has a tuple.
    pub dtls: Option<DtlsSession>,
    /// What the client gave in `connectTransport`.
    pub remote_dtls: Option<RemoteDtls>,
    /// SRTP contexts once DTLS is connected.
    pub srtp: Option<SrtpSession>,
    /// Last states reported to the control path.
    pub reported: (IceState, DtlsState),
    /// 5-tuples registered in the worker's tuple map for this transport: those its ICE
    /// holds valid (at most `ice::MAX_TUPLES`).
    pub tuples: Vec<SocketAddr>,
    /// Incoming SSRC → producer stream: the current media and RTX SSRC of each stream, at
    /// most [`MAX_INCOMING_SSRCS`].
    pub ssrc_table: HashMap<u32, StreamRef>,
    /// MID → producer, to learn SSRCs of producers announced without them.
    pub mid_table: HashMap<String, ProducerKey>,
    /// Outgoing consumer SSRC (media and RTX) → consumer, for RTCP feedback.
    pub consumer_ssrcs: HashMap<u32, ConsumerKey>,
    /// Producers on this transport (owned).
    pub producers: Vec<ProducerKey>,
    /// Consumers on this transport (owned).
    pub consumers: Vec<ConsumerKey>,
    /// `setMaxIncomingBitrate` value (0: unlimited), sent to the client as a REMB on every
    /// report round while the transport has producers.
    pub max_incoming_bitrate: u32,
    /// REMBs of bitrate 0 (no limit) still to send since the limit was lifted: the client
    /// keeps the last REMB's cap until one of them arrives.
    pub unlimited_rembs: u8,
    /// When ICE went to `disconnected` (for `iceRestartRequired`).
    pub ice_disconnected_at: Option<Instant>,
    /// When `iceRestartRequired` was last sent.
    pub ice_restart_notified_at: Option<Instant>,
    /// Counters for stats.
    pub counters: TransportCounters,
    /// Latest REMB estimate from the client, bits per second.
    pub remb_bitrate: Option<u64>,
    /// Next transport-wide sequence number written into packets sent on this transport.
    pub twcc_seq: u16,
    /// Arrivals of the client's packets, for transport-cc feedback to it.
    pub twcc: TwccRecorder,
    /// Round-trip time to the client: from its receiver reports about our consumers' streams
    /// (SR/RR), or from its DLRR answers to our XR receiver reference times.
    pub rtt: Option<Duration>,
    /// Send-side bandwidth estimation, once a consumer with transport-cc sends here.
    pub bwe: Option<Box<SendBandwidth>>,
    /// The SCTP association of its data channels, when the client asked for SCTP
    /// (`sctpCapabilities` in `createTransport`); it starts when DTLS connects.
    pub sctp: Option<Box<SctpAssociation>>,
    /// Data producers on this transport (owned).
    pub data_producers: Vec<DataProducerKey>,
    /// Data consumers on this transport (owned).
    pub data_consumers: Vec<DataConsumerKey>,
    /// The association's drops already added to the worker counters.
    pub sctp_drops_counted: SctpDrops,
    /// A plain RTP transport's sockets and remote addresses (its `ice` stays unused).
    pub plain: Option<crate::plain::PlainPath>,
}

/// How long a transport's allocation waits for the client's first transport-cc feedback;
/// a client that sends none gets every consumer's preferred layer, as without estimation.
pub const FEEDBACK_GRACE: Duration = Duration::from_secs(2);

/// The bandwidth estimation of a transport that sends to its client.
pub struct SendBandwidth {
    /// The estimator.
    pub estimator: BandwidthEstimator,
    /// The client sent transport-cc feedback: it estimates with us.
    pub feedback_seen: bool,
    /// When estimation started.
    pub since: Instant,
    /// The estimator's state at the last allocation (for stats).
    pub last: BweStats,
    /// Bandwidth the allocation gave out at the last run, bit/s.
    pub allocated_bps: u64,
    /// At the last run, some consumer had layers to choose from: headroom a probe finds
    /// could change what it gets.
    pub steerable: bool,
    /// This transport's share of the worker's [`BandwidthGauges`], as last counted.
    pub gauges: BandwidthGauges,
    /// The pacer of the transport's video.
    pub pacer: Pacer,
    /// The probator stream's next sequence number.
    pub probator_seq: u16,
    /// The probator stream's SRTP index.
    pub probator_index: SendIndex,
}

/// SSRC of the probator: a receive-only video stream mediasoup-client sets up on every
/// transport that consumes video (mid `probator`, the header extensions of the first video
/// consumer), for probe padding that needs no forwarding consumer to ride on.
pub const PROBATOR_SSRC: u32 = 1234;
/// Payload type of the probator stream.
pub const PROBATOR_PAYLOAD_TYPE: u8 = 127;

impl SendBandwidth {
    /// Estimation starting now at `config.start_bps`.
    pub fn new(now: Instant, config: BweConfig) -> Self {
        Self {
            estimator: BandwidthEstimator::new(now, config),
            feedback_seen: false,
            since: now,
            last: BweStats {
                estimate_bps: config.start_bps,
                ..BweStats::default()
            },
            allocated_bps: 0,
            steerable: false,
            gauges: BandwidthGauges::default(),
            pacer: Pacer::new(now, config.start_bps),
            probator_seq: 0,
            probator_index: SendIndex::default(),
        }
    }

    /// Whether the allocation follows the estimate: feedback came, or may still come.
    pub fn steers(&self, now: Instant) -> bool {
        self.feedback_seen || now < self.since + FEEDBACK_GRACE
    }
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

/// What sending media on a connected transport needs: SRTP, the client's address and the
/// transport-wide sequence counter.
pub struct Egress<'a> {
    /// SRTP contexts.
    pub srtp: &'a mut SrtpSession,
    /// Where to send.
    pub to: SocketAddr,
    /// Next transport-wide sequence number.
    pub twcc_seq: &'a mut u16,
    /// Counters of the transport.
    pub counters: &'a mut TransportCounters,
    /// The transport's bandwidth estimation and pacer, which note every packet sent.
    pub bwe: Option<&'a mut SendBandwidth>,
}

/// IPv4 and UDP headers of a datagram (what a link carries beyond the SRTP packet).
pub const IP_UDP_OVERHEAD: usize = 28;

impl Egress<'_> {
    /// Accounts for an RTP packet of `len` bytes about to be protected and sent: the
    /// estimator notes its transport-wide sequence number (when `twcc` says the packet
    /// carries it) and the number advances; the pacer's budget counts it when `paced`.
    pub fn on_sending(&mut self, now: Instant, len: usize, twcc: bool, paced: bool) {
        let wire = len + self.srtp.profile().rtp_overhead() + IP_UDP_OVERHEAD;
        if let Some(bwe) = self.bwe.as_deref_mut() {
            if twcc {
                bwe.estimator.on_sent(now, *self.twcc_seq, wire);
            }
            if paced {
                bwe.pacer.on_sent(now, wire);
            }
        }
        if twcc {
            *self.twcc_seq = self.twcc_seq.wrapping_add(1);
        }
    }

    /// Sends one padding-only packet of `padding` bytes (1..=255) with `header` and this
    /// transport's next transport-wide sequence number, protected with `index`: probe
    /// traffic the client counts in its feedback and then drops. Returns bytes sent.
    pub fn send_padding(
        &mut self,
        now: Instant,
        mut header: PaddingHeader,
        padding: usize,
        index: &mut SendIndex,
        out: &mut dyn Transmit,
    ) -> Result<usize, RtpDrop> {
        header.transport_cc = *self.twcc_seq;
        let buf = out.buffer();
        let len = rtp::write_padding_packet(buf, &header, padding).ok_or(RtpDrop::TooBig)?;
        // Probes are on top of the pacing rate.
        self.on_sending(now, len, header.transport_cc_id != 0, false);
        let sent = self
            .srtp
            .protect_rtp_stream(index, &mut buf[..], len)
            .map_err(|_| RtpDrop::ProtectFailed)?;
        out.commit(sent, self.to);
        self.counters.rtp_packets_out += 1;
        self.counters.rtp_bytes_out += len as u64;
        Ok(len)
    }

    /// Sends one padding-only packet on the probator stream ([`PROBATOR_SSRC`]), whose
    /// transport-wide-cc extension has id `twcc_ext`. Returns bytes sent.
    pub fn send_probator_padding(
        &mut self,
        now: Instant,
        twcc_ext: u8,
        padding: usize,
        out: &mut dyn Transmit,
    ) -> Result<usize, RtpDrop> {
        let bwe = self.bwe.as_deref_mut().ok_or(RtpDrop::NoRoute)?;
        let seq = bwe.probator_seq;
        let mut index = bwe.probator_index;
        let header = PaddingHeader {
            ssrc: PROBATOR_SSRC,
            payload_type: PROBATOR_PAYLOAD_TYPE,
            sequence_number: seq,
            timestamp: 0,
            transport_cc_id: twcc_ext,
            transport_cc: 0,
        };
        let len = self.send_padding(now, header, padding, &mut index, out)?;
        if let Some(bwe) = self.bwe.as_deref_mut() {
            bwe.probator_seq = seq.wrapping_add(1);
            bwe.probator_index = index;
        }
        Ok(len)
    }
}

impl Transport {
    /// A new transport of `router_id` with ICE-lite state.
    pub fn new(id: TransportId, router_id: RouterId, ice: IceLiteServer, now: Instant) -> Self {
        Self {
            id,
            router_id,
            ice,
            dtls: None,
            remote_dtls: None,
            srtp: None,
            reported: (IceState::New, DtlsState::New),
            tuples: Vec::new(),
            ssrc_table: HashMap::new(),
            mid_table: HashMap::new(),
            consumer_ssrcs: HashMap::new(),
            producers: Vec::new(),
            consumers: Vec::new(),
            max_incoming_bitrate: 0,
            unlimited_rembs: 0,
            ice_disconnected_at: None,
            ice_restart_notified_at: None,
            counters: TransportCounters::default(),
            remb_bitrate: None,
            twcc_seq: 0,
            twcc: TwccRecorder::new(now),
            rtt: None,
            bwe: None,
            sctp: None,
            data_producers: Vec::new(),
            data_consumers: Vec::new(),
            sctp_drops_counted: SctpDrops::default(),
            plain: None,
        }
    }

    /// Whether it is one end of a pipe between workers ([`crate::worker_pipe`]).
    pub fn is_worker_pipe(&self) -> bool {
        self.plain
            .as_ref()
            .is_some_and(|p| crate::worker_pipe::is_pipe_socket(p.rtp_socket))
    }

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

    /// Where to send: the selected ICE tuple, or a plain transport's remote RTP address.
    pub fn remote(&self) -> Option<SocketAddr> {
        match &self.plain {
            Some(plain) => plain.remote,
            None => self.ice.selected_tuple(),
        }
    }

    /// Where RTCP goes: as RTP, except for a plain transport without `rtcpMux`.
    pub fn rtcp_remote(&self) -> Option<SocketAddr> {
        match &self.plain {
            Some(plain) => plain.rtcp_remote(),
            None => self.ice.selected_tuple(),
        }
    }

    /// Whether consumers may send: DTLS connected (WebRTC), or SRTP ready and the remote
    /// known (plain).
    pub fn can_send(&self) -> bool {
        match &self.plain {
            Some(plain) => plain.connected,
            None => self.srtp.is_some(),
        }
    }

    /// SRTP and address for sending, once DTLS connected and ICE selected a tuple (or a
    /// plain transport knows its remote).
    pub fn egress(&mut self) -> Option<Egress<'_>> {
        let to = self.remote()?;
        Some(Egress {
            srtp: self.srtp.as_mut()?,
            to,
            twcc_seq: &mut self.twcc_seq,
            counters: &mut self.counters,
            bwe: self.bwe.as_deref_mut(),
        })
    }

    /// Starts DTLS once the client's parameters are known (idempotent).
    pub fn start_dtls(
        &mut self,
        certificate: &Arc<DtlsCertificate>,
        now: Instant,
    ) -> Result<(), DtlsError> {
        let Some(remote) = &self.remote_dtls else {
            return Ok(());
        };
        if self.dtls.is_none() {
            self.dtls = Some(DtlsSession::new(
                certificate.clone(),
                remote.local_role,
                remote.fingerprints.clone(),
                now,
            )?);
        }
        Ok(())
    }

    /// When the next `iceRestartRequired` is due: `timeout` after ICE went `disconnected`,
    /// then every `timeout` while it stays so.
    pub fn restart_notice_due(&self, timeout: Duration) -> Option<Instant> {
        let since = self.ice_disconnected_at?;
        Some(
            self.ice_restart_notified_at
                .map_or(since, |at| at.max(since))
                + timeout,
        )
    }
}
