//! Counters and stats documents. A worker counts in plain integers on its own thread and
//! publishes a copy to atomics once per tick, so `/stats` never touches the media path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::{Value, json};

use crate::arena::{Arena, ConsumerKey};
use crate::consumer::Consumer;
use crate::forwarder::DropReason;
use crate::producer::Producer;
use crate::transport::{SendBandwidth, Transport};
use crate::udp::FlushOutcome;

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $field:ident),* $(,)?) => {
        /// A worker's counters, owned by its thread.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct WorkerCounters {
            $($(#[doc = $doc])* pub $field: u64,)*
            /// RTP packets dropped, by reason.
            pub rtp_dropped: RtpDropCounts,
            /// Bandwidth toward clients (gauges).
            pub bwe: BandwidthGauges,
            /// Distributions: forwarding delay, and what receivers report.
            pub histograms: WorkerHistograms,
        }

        /// The last published copy of a worker's counters, readable from any thread.
        #[derive(Debug, Default)]
        pub struct SharedCounters {
            $($field: AtomicU64,)*
            rtp_dropped: [AtomicU64; RtpDrop::ALL.len()],
            bwe: [AtomicU64; BandwidthGauges::LEN],
            histograms: [[AtomicU64; HISTOGRAM_SLOTS + 1]; Distribution::ALL.len()],
        }

        impl SharedCounters {
            /// Stores a copy of `c`.
            pub fn publish(&self, c: &WorkerCounters) {
                $(self.$field.store(c.$field, Ordering::Relaxed);)*
                for (slot, n) in self.rtp_dropped.iter().zip(c.rtp_dropped.0) {
                    slot.store(n, Ordering::Relaxed);
                }
                for (slot, (_, _, n)) in self.bwe.iter().zip(c.bwe.fields()) {
                    slot.store(n, Ordering::Relaxed);
                }
                for (slots, h) in self.histograms.iter().zip(&c.histograms.0) {
                    for (slot, n) in slots.iter().zip(h.counts.iter().chain([&h.sum])) {
                        slot.store(*n, Ordering::Relaxed);
                    }
                }
            }

            /// Reads the last published copy.
            pub fn snapshot(&self) -> WorkerCounters {
                WorkerCounters {
                    $($field: self.$field.load(Ordering::Relaxed),)*
                    rtp_dropped: RtpDropCounts(std::array::from_fn(|i| {
                        self.rtp_dropped[i].load(Ordering::Relaxed)
                    })),
                    bwe: BandwidthGauges::from_values(std::array::from_fn(|i| {
                        self.bwe[i].load(Ordering::Relaxed)
                    })),
                    histograms: WorkerHistograms(std::array::from_fn(|d| {
                        let slots = &self.histograms[d];
                        Histogram {
                            counts: std::array::from_fn(|i| slots[i].load(Ordering::Relaxed)),
                            sum: slots[HISTOGRAM_SLOTS].load(Ordering::Relaxed),
                        }
                    })),
                }
            }
        }

        impl WorkerCounters {
            /// `(name, value)` pairs of the plain counters, for exposition.
            pub fn fields(&self) -> [(&'static str, u64); counters!(@count $($field)*)] {
                [$((stringify!($field), self.$field),)*]
            }

            /// `(name, help)` of every plain counter, the help being its doc comment.
            pub fn help() -> [(&'static str, &'static str); counters!(@count $($field)*)] {
                [$((stringify!($field), concat!($($doc),*).trim_ascii_start()),)*]
            }
        }
    };
    (@count $($x:ident)*) => { <[()]>::len(&[$(counters!(@unit $x)),*]) };
    (@unit $x:ident) => { () };
}

/// Why a worker dropped an RTP packet (`ferrosoup_rtp_dropped_total{reason}`). Every path
/// that drops one names its reason; none is computed and thrown away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtpDrop {
    /// Arrived before DTLS completed.
    NotConnected,
    /// SRTP authentication failed.
    SrtpAuth,
    /// SRTP replay (a duplicate).
    SrtpReplay,
    /// The RTP header (or an RTX payload) does not parse.
    Malformed,
    /// Its SSRC (or MID/RID) matches no producer stream.
    UnknownSsrc,
    /// Its payload type is none the producer declared.
    UnknownPayloadType,
    /// An RTX packet without payload (a bandwidth probe).
    RtxPadding,
    /// Not forwarded to a consumer: the producer is paused.
    ProducerPaused,
    /// Not forwarded to a consumer: the consumer is paused.
    ConsumerPaused,
    /// Not forwarded to a consumer: another layer is forwarded.
    OtherLayer,
    /// Not forwarded to a consumer: it waits for a keyframe.
    WaitingKeyframe,
    /// Not forwarded to a consumer: older than its last sync point.
    TooOld,
    /// Not forwarded to a consumer: its client cannot receive the payload type.
    UnsupportedByConsumer,
    /// The consumer's transport has no connected path yet.
    NoRoute,
    /// Too big for a datagram with SRTP overhead.
    TooBig,
    /// SRTP protection failed.
    ProtectFailed,
    /// A NACKed packet resent less than a round trip ago (not sent again).
    ResentRecently,
    /// A NACKed packet no longer in the store (or from before a layer switch).
    NotStored,
    /// A NACK from a client without RTX: a resend on the media SSRC would protect an SRTP
    /// index a second time with other bytes (this hop's extensions), a nonce reuse.
    NoRtx,
    /// A packet the producer stream already received (a spurious retransmission).
    Duplicate,
    /// The transport's pacer queue was full (the client NACKs it back).
    PacerOverflow,
    /// A retransmission beyond the consumer's budget (its stream's bitrate), or while the
    /// transport's pacer holds media back (the estimate has no room for it).
    RetransmitBudget,
}

impl RtpDrop {
    /// Every reason, in label order.
    pub const ALL: [RtpDrop; 22] = [
        Self::NotConnected,
        Self::SrtpAuth,
        Self::SrtpReplay,
        Self::Malformed,
        Self::UnknownSsrc,
        Self::UnknownPayloadType,
        Self::RtxPadding,
        Self::ProducerPaused,
        Self::ConsumerPaused,
        Self::OtherLayer,
        Self::WaitingKeyframe,
        Self::TooOld,
        Self::UnsupportedByConsumer,
        Self::NoRoute,
        Self::TooBig,
        Self::ProtectFailed,
        Self::ResentRecently,
        Self::NotStored,
        Self::NoRtx,
        Self::Duplicate,
        Self::PacerOverflow,
        Self::RetransmitBudget,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::NotConnected => "not_connected",
            Self::SrtpAuth => "srtp_auth",
            Self::SrtpReplay => "srtp_replay",
            Self::Malformed => "malformed",
            Self::UnknownSsrc => "unknown_ssrc",
            Self::UnknownPayloadType => "unknown_payload_type",
            Self::RtxPadding => "rtx_padding",
            Self::ProducerPaused => "producer_paused",
            Self::ConsumerPaused => "consumer_paused",
            Self::OtherLayer => "other_layer",
            Self::WaitingKeyframe => "waiting_keyframe",
            Self::TooOld => "too_old",
            Self::UnsupportedByConsumer => "unsupported_by_consumer",
            Self::NoRoute => "no_route",
            Self::TooBig => "too_big",
            Self::ProtectFailed => "protect_failed",
            Self::ResentRecently => "resent_recently",
            Self::NotStored => "not_stored",
            Self::NoRtx => "no_rtx",
            Self::Duplicate => "duplicate",
            Self::PacerOverflow => "pacer_overflow",
            Self::RetransmitBudget => "retransmit_budget",
        }
    }
}

impl From<DropReason> for RtpDrop {
    fn from(r: DropReason) -> Self {
        match r {
            DropReason::OtherLayer | DropReason::FilteredLayer => Self::OtherLayer,
            DropReason::WaitingKeyframe => Self::WaitingKeyframe,
            DropReason::TooOld => Self::TooOld,
            DropReason::UnknownPayloadType => Self::UnsupportedByConsumer,
        }
    }
}

/// RTP drop counts, indexed like [`RtpDrop::ALL`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtpDropCounts(pub [u64; RtpDrop::ALL.len()]);

impl RtpDropCounts {
    /// Counts one drop.
    pub fn add(&mut self, reason: RtpDrop) {
        self.0[reason as usize] += 1;
    }

    /// Drops for one reason.
    pub fn get(&self, reason: RtpDrop) -> u64 {
        self.0[reason as usize]
    }

    /// `(label, count)` for every reason.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        RtpDrop::ALL.iter().map(|r| (r.label(), self.get(*r)))
    }
}

counters!(
    /// Routers alive.
    routers,
    /// Transports alive.
    transports,
    /// Producers alive.
    producers,
    /// Consumers alive.
    consumers,
    /// Datagrams received.
    datagrams_in,
    /// Bytes received.
    bytes_in,
    /// Datagrams sent.
    datagrams_out,
    /// Bytes sent.
    bytes_out,
    /// Datagrams dropped on send (socket buffer full).
    send_dropped,
    /// RTP packets received (after SRTP).
    rtp_packets_in,
    /// RTP bytes received.
    rtp_bytes_in,
    /// RTP packets forwarded.
    rtp_packets_out,
    /// RTP bytes forwarded.
    rtp_bytes_out,
    /// RTCP packets received.
    rtcp_in,
    /// RTCP packets sent.
    rtcp_out,
    /// NACKed packets requested by consumers.
    nacks_received,
    /// Lost packets NACKed to producers.
    nacks_sent,
    /// Packets retransmitted to consumers.
    retransmissions,
    /// Padding packets sent to probe for bandwidth.
    padding_packets,
    /// Bytes of those padding packets (RTP headers included).
    padding_bytes,
    /// Video packets the pacers held back before sending.
    paced_packets,
    /// PLI/FIR received from consumers.
    plis_received,
    /// PLIs sent to producers.
    plis_sent,
    /// STUN requests rejected (bad credentials, integrity, unknown ufrag).
    stun_rejected,
    /// Packets failing SRTP/SRTCP authentication.
    srtp_failures,
    /// Datagrams from a 5-tuple that passed no ICE check.
    dropped_unknown_tuple,
    /// Datagrams of no known kind, and malformed RTCP.
    dropped_malformed,
    /// RTCP dropped: before DTLS completed, or failing SRTCP authentication.
    rtcp_dropped,
    /// Consumers the bandwidth allocation moved to a higher layer (or resumed), after a
    /// new estimate or a new preferred layer.
    bwe_layer_upgrades,
    /// Consumers the bandwidth allocation moved to a lower layer (or paused).
    bwe_layer_downgrades,
    /// ICE-TCP connections open now.
    tcp_connections,
    /// ICE-TCP connections refused (over the limit) or closed for passing no ICE check in
    /// time or for a frame larger than any packet.
    tcp_connections_rejected,
    /// Frames queued on ICE-TCP connections.
    tcp_frames_out,
    /// Bytes of those frames.
    tcp_bytes_out,
    /// Frames dropped because an ICE-TCP connection's send buffer was full (a client
    /// reading slower than its media arrives).
    tcp_frames_dropped,
    /// UDP datagrams dropped for coming from the address of an open ICE-TCP connection.
    tcp_shadowed_udp,
    /// Data producers alive.
    data_producers,
    /// Data consumers alive.
    data_consumers,
    /// Data channel messages received from data producers (accepted).
    data_messages_in,
    /// Bytes of those messages.
    data_bytes_in,
    /// Data channel messages sent to data consumers.
    data_messages_out,
    /// Bytes of those messages.
    data_bytes_out,
    /// Data messages dropped: larger than the maximum message size.
    data_dropped_too_big,
    /// Data messages dropped: over their data producer's message rate.
    data_dropped_rate_limited,
    /// Data messages dropped: on an SCTP stream no data producer uses (one on a stream id
    /// beyond the association's `SCTP_STREAMS` also aborts the association).
    data_dropped_unknown_stream,
    /// Data messages dropped: DCEP or an unknown payload protocol identifier.
    data_dropped_unsupported_ppid,
    /// Data messages not sent to a data consumer: its SCTP association refused them (not
    /// connected yet, closing).
    data_dropped_send_failed,
);

/// Bandwidth toward clients, summed over a worker's transports that send to one with
/// transport-cc: gauges (they go down as well as up), each transport's share refreshed at
/// its allocation rounds (every transport-cc feedback and every report round) and taken
/// away when it closes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BandwidthGauges {
    /// Transports whose client sends transport-cc feedback (the estimate steers them).
    pub transports: u64,
    /// Sum of their estimates, bit/s.
    pub estimate_bps: u64,
    /// Sum of what their allocations gave out, bit/s.
    pub allocated_bps: u64,
    /// Sum of what their consumers would take with nothing held back, bit/s.
    pub desired_bps: u64,
    /// Video consumers paused because not even their lowest layer fits.
    pub consumers_paused: u64,
    /// Video consumers the allocation gives a layer below the best one they prefer and
    /// their producer sends.
    pub consumers_limited: u64,
}

impl BandwidthGauges {
    /// Number of gauges.
    pub const LEN: usize = 6;

    /// `(name, help, value)` of every gauge, for exposition.
    pub fn fields(&self) -> [(&'static str, &'static str, u64); Self::LEN] {
        [
            (
                "transports",
                "Transports whose client sends transport-cc feedback",
                self.transports,
            ),
            (
                "estimate_bps",
                "Sum of those transports' bandwidth estimates, bit/s",
                self.estimate_bps,
            ),
            (
                "allocated_bps",
                "Sum of what their allocations gave out, bit/s",
                self.allocated_bps,
            ),
            (
                "desired_bps",
                "Sum of what their consumers would take with nothing held back, bit/s",
                self.desired_bps,
            ),
            (
                "consumers_paused",
                "Video consumers paused because not even their lowest layer fits",
                self.consumers_paused,
            ),
            (
                "consumers_limited",
                "Video consumers given a layer below the best they prefer and can get",
                self.consumers_limited,
            ),
        ]
    }

    /// Gauges from values in [`fields`](Self::fields) order.
    fn from_values(v: [u64; Self::LEN]) -> Self {
        let [
            transports,
            estimate_bps,
            allocated_bps,
            desired_bps,
            consumers_paused,
            consumers_limited,
        ] = v;
        Self {
            transports,
            estimate_bps,
            allocated_bps,
            desired_bps,
            consumers_paused,
            consumers_limited,
        }
    }

    /// Replaces one transport's share `old` of these sums with `new`.
    pub fn replace(&mut self, old: &BandwidthGauges, new: &BandwidthGauges) {
        let mut v = self.fields().map(|(_, _, n)| n);
        for ((total, (_, _, o)), (_, _, n)) in v.iter_mut().zip(old.fields()).zip(new.fields()) {
            *total = total.saturating_sub(o).saturating_add(n);
        }
        *self = Self::from_values(v);
    }
}

/// Buckets a [`Histogram`] has at most, the one above every bound included.
pub const HISTOGRAM_SLOTS: usize = 16;

/// A fixed-bucket histogram counted on one thread: recording is a few comparisons and an
/// add, no allocation. The bounds live in its [`Distribution`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative): `counts[i]` for values up to `bounds[i]`
    /// and above `bounds[i - 1]`; `counts[bounds.len()]` above every bound.
    pub counts: [u64; HISTOGRAM_SLOTS],
    /// Sum of the observed values, in the distribution's unit.
    pub sum: u64,
}

impl Histogram {
    /// Counts `n` observations of `value` against `bounds` (ascending, fewer than
    /// [`HISTOGRAM_SLOTS`]).
    #[inline]
    pub fn record_n(&mut self, bounds: &[u64], value: u64, n: u64) {
        let i = bounds.partition_point(|&b| b < value);
        if let Some(slot) = self.counts.get_mut(i) {
            *slot += n;
            self.sum = self.sum.saturating_add(value.saturating_mul(n));
        }
    }

    /// Observations in all buckets.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// What a worker histogram measures; each has its unit, bounds and exported name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    /// Time from reading a packet off the socket to handing its forwarded copy to the
    /// socket, microseconds: the batch's processing, plus the pacer queue for paced video.
    ForwardingDelay,
    /// Round-trip time from the receiver reports of consumers' clients, microseconds.
    Rtt,
    /// Interarrival jitter in those reports, microseconds.
    Jitter,
    /// Fraction lost in those reports, per mille.
    Loss,
}

impl Distribution {
    /// Every distribution, in [`WorkerHistograms`] order.
    pub const ALL: [Distribution; 4] = [Self::ForwardingDelay, Self::Rtt, Self::Jitter, Self::Loss];

    /// Upper bounds of the buckets, in the unit.
    pub fn bounds(self) -> &'static [u64] {
        match self {
            Self::ForwardingDelay => &[
                50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
                500_000,
            ],
            Self::Rtt => &[
                5_000, 10_000, 20_000, 30_000, 50_000, 75_000, 100_000, 150_000, 200_000, 300_000,
                500_000, 1_000_000, 2_000_000,
            ],
            Self::Jitter => &[
                1_000, 2_000, 5_000, 10_000, 20_000, 30_000, 50_000, 75_000, 100_000, 200_000,
                500_000,
            ],
            Self::Loss => &[0, 5, 10, 20, 50, 100, 200, 500, 1_000],
        }
    }

    /// Units in one of the exported base unit (seconds, or a ratio).
    pub fn per_base_unit(self) -> f64 {
        match self {
            Self::ForwardingDelay | Self::Rtt | Self::Jitter => 1e6,
            Self::Loss => 1e3,
        }
    }

    /// The exported name (after `ferrosoup_`) and its help.
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            Self::ForwardingDelay => (
                "forwarding_delay_seconds",
                "Time from reading an RTP packet off the socket to sending its forwarded copy \
                 (the pacer queue included for paced video), per packet forwarded",
            ),
            Self::Rtt => (
                "rtt_seconds",
                "Round-trip time to the clients, from their RTCP receiver reports (one \
                 observation per report block of a consumer's stream)",
            ),
            Self::Jitter => (
                "jitter_seconds",
                "Interarrival jitter the clients report for the streams they consume (RTCP \
                 receiver reports)",
            ),
            Self::Loss => (
                "loss_ratio",
                "Fraction of packets lost toward the clients, as their RTCP receiver reports \
                 give it per consumer stream",
            ),
        }
    }
}

/// A worker's histograms, indexed like [`Distribution::ALL`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerHistograms(pub [Histogram; Distribution::ALL.len()]);

impl WorkerHistograms {
    /// Counts `n` observations of `value` (in `d`'s unit).
    #[inline]
    pub fn record_n(&mut self, d: Distribution, value: u64, n: u64) {
        self.0[d as usize].record_n(d.bounds(), value, n);
    }

    /// Counts one observation of `value` (in `d`'s unit).
    #[inline]
    pub fn record(&mut self, d: Distribution, value: u64) {
        self.record_n(d, value, 1);
    }

    /// The histogram of `d`.
    pub fn get(&self, d: Distribution) -> &Histogram {
        &self.0[d as usize]
    }
}

impl WorkerCounters {
    /// Adds the outcome of a send flush.
    pub fn on_tcp(&mut self, tcp: crate::tcp::TcpCounters) {
        self.tcp_connections = tcp.open;
        self.tcp_connections_rejected = tcp.rejected;
        self.tcp_frames_out = tcp.frames_out;
        self.tcp_bytes_out = tcp.bytes_out;
        self.tcp_frames_dropped = tcp.frames_dropped;
        self.tcp_shadowed_udp = tcp.udp_dropped;
    }

    /// Adds what a flush sent and dropped.
    pub fn on_flush(&mut self, out: FlushOutcome) {
        self.datagrams_out += out.sent as u64;
        self.bytes_out += out.bytes as u64;
        self.send_dropped += out.dropped as u64;
    }
}

/// Milliseconds since the Unix epoch, as mediasoup's stats `timestamp`.
fn timestamp_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `getTransportStats` document (mediasoup's `WebRtcTransportStat` shape, subset).
pub fn transport_stats(t: &Transport, paths: &dyn crate::transmit::Transmit) -> Value {
    let c = &t.counters;
    json!([{
        "type": "webrtc-transport",
        "transportId": t.id.to_string(),
        "timestamp": timestamp_ms(),
        "iceRole": "controlled",
        "iceState": t.ice_state(),
        "dtlsState": t.dtls_state(),
        "iceSelectedTuple": t.remote().map(|r| json!({
            "remoteIp": r.ip().to_string(), "remotePort": r.port(),
            "protocol": if paths.is_connection(r) { "tcp" } else { "udp" }
        })),
        "rtpPacketsReceived": c.rtp_packets_in,
        "rtpBytesReceived": c.rtp_bytes_in,
        "rtpPacketsSent": c.rtp_packets_out,
        "rtpBytesSent": c.rtp_bytes_out,
        "rtcpPacketsReceived": c.rtcp_in,
        "rtcpPacketsSent": c.rtcp_out,
        "srtpFailures": c.srtp_failures,
        "maxIncomingBitrate": t.max_incoming_bitrate,
        "availableOutgoingBitrate": t
            .bwe
            .as_ref()
            .map(|b| b.last.estimate_bps)
            .or(t.remb_bitrate),
        "bandwidthEstimation": t.bwe.as_deref().map(bandwidth_estimation),
    }])
}

/// The `bandwidthEstimation` object of a transport's stats: the estimator's state at the
/// last allocation round and what that round gave out.
fn bandwidth_estimation(b: &SendBandwidth) -> Value {
    json!({
        "estimate": b.last.estimate_bps,
        "delayBased": b.last.delay_based_bps,
        "lossBound": b.last.loss_bound_bps,
        "acked": b.last.acked_bps,
        "sent": b.last.sent_bps,
        "desired": b.last.desired_bps,
        "allocated": b.allocated_bps,
        "applicationLimited": b.last.in_alr,
        "loss": b.last.loss,
        "probes": b.last.probes,
        "feedbacks": b.last.feedbacks,
    })
}

/// Bandwidth toward the client of a transport that estimates it (`None` otherwise), for
/// `/api/stats`: its `bandwidthEstimation` (as in `getTransportStats`) and what the
/// allocation gives each of its consumers.
pub fn transport_bandwidth(
    t: &Transport,
    consumers: &Arena<ConsumerKey, Consumer>,
) -> Option<Value> {
    let bwe = t.bwe.as_deref()?;
    let consumers: Vec<Value> = t
        .consumers
        .iter()
        .filter_map(|&k| consumers.get(k))
        .map(|c| {
            json!({
                "consumerId": c.id.to_string(),
                "producerId": c.producer_id.to_string(),
                "kind": c.kind,
                "type": c.consumer_type,
                "paused": c.paused || c.producer_paused,
                "priority": c.priority,
                "preferredSpatialLayer": c.preferred_spatial,
                "preferredTemporalLayer": c.preferred_temporal,
                "allocation": c.allocation.name(),
                "allocatedSpatialLayer": c.allocation.layer().map(|l| l.spatial),
                "allocatedTemporalLayer": c.allocation.layer().map(|l| l.temporal),
                "spatialLayer": c.forwarder.current_layers().map(|l| l.0),
                "temporalLayer": c.forwarder.current_layers().map(|l| l.1),
            })
        })
        .collect();
    Some(json!({
        "transportId": t.id.to_string(),
        "availableOutgoingBitrate": bwe.last.estimate_bps,
        "bandwidthEstimation": bandwidth_estimation(bwe),
        "consumers": consumers,
    }))
}

/// `getProducerStats` document: one `inbound-rtp` entry per stream.
pub fn producer_stats(p: &Producer, now: Instant) -> Value {
    let ts = timestamp_ms();
    Value::Array(
        p.streams
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let ssrc = s.ssrc?;
                Some(json!({
                    "type": "inbound-rtp",
                    "timestamp": ts,
                    "ssrc": ssrc,
                    "rtxSsrc": s.rtx_ssrc,
                    "rid": s.rid,
                    "spatialLayer": i,
                    "kind": p.kind,
                    "packetCount": s.stats.packets(),
                    "byteCount": s.stats.bytes(),
                    "packetsLost": s.stats.cumulative_lost(),
                    "jitter": s.stats.jitter(),
                    "nackCount": s.nacks_sent,
                    "pliCount": s.plis_sent,
                    "keyFrames": s.keyframes,
                    "score": s.score,
                    "active": s.is_active(now),
                }))
            })
            .collect(),
    )
}

/// `getConsumerStats` document: the `outbound-rtp` entry, then the producer stream it forwards.
pub fn consumer_stats(c: &Consumer, p: Option<&Producer>) -> Value {
    let ts = timestamp_ms();
    let mut entries = vec![json!({
        "type": "outbound-rtp",
        "timestamp": ts,
        "ssrc": c.ssrc,
        "rtxSsrc": c.rtx.map(|r| r.ssrc),
        "kind": c.kind,
        "packetCount": c.send_stats.packets(),
        "byteCount": c.send_stats.octets(),
        "roundTripTime": c.rtt.map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        "fractionLost": c.fraction_lost,
        "packetsRetransmitted": c.retransmitted,
        "nackCount": c.retransmitted + c.nack_misses,
        "pliCount": c.keyframe_requests,
        "score": c.score,
        "spatialLayer": c.forwarder.current_layers().map(|l| l.0),
        "temporalLayer": c.forwarder.current_layers().map(|l| l.1),
        "preferredSpatialLayer": c.preferred_spatial,
        "preferredTemporalLayer": c.preferred_temporal,
        "priority": c.priority,
        "allocation": c.allocation.name(),
        "allocatedSpatialLayer": c.allocation.layer().map(|l| l.spatial),
        "allocatedTemporalLayer": c.allocation.layer().map(|l| l.temporal),
    })];
    if let Some(s) = p.and_then(|p| c.forwarder.current().and_then(|i| p.streams.get(i))) {
        entries.push(json!({
            "type": "inbound-rtp",
            "timestamp": ts,
            "ssrc": s.ssrc,
            "packetCount": s.stats.packets(),
            "byteCount": s.stats.bytes(),
            "packetsLost": s.stats.cumulative_lost(),
            "jitter": s.stats.jitter(),
            "score": s.score,
        }));
    }
    Value::Array(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_goes_to_the_first_bucket_whose_bound_it_does_not_exceed() {
        let bounds = [10, 20, 50];
        let mut h = Histogram::default();
        h.record_n(&bounds, 10, 1);
        h.record_n(&bounds, 11, 2);
        h.record_n(&bounds, 0, 1);
        h.record_n(&bounds, 51, 1);
        assert_eq!(h.counts[..4], [2, 2, 0, 1]);
        assert_eq!(h.count(), 5);
        assert_eq!(h.sum, 10 + 22 + 51);
    }

    #[test]
    fn every_distribution_fits_the_slots_with_ascending_bounds() {
        for d in Distribution::ALL {
            let b = d.bounds();
            assert!(b.len() < HISTOGRAM_SLOTS, "{d:?}");
            assert!(b.windows(2).all(|w| w[0] < w[1]), "{d:?}");
        }
    }

    #[test]
    fn histograms_are_published_and_read_back_whole() {
        let mut c = WorkerCounters::default();
        c.histograms.record(Distribution::Rtt, 42_000);
        c.histograms
            .record_n(Distribution::ForwardingDelay, 3_000_000, 7);
        c.rtp_packets_out = 9;
        let shared = SharedCounters::default();
        shared.publish(&c);
        assert_eq!(shared.snapshot(), c);
    }

    #[test]
    fn every_counter_has_help_from_its_doc_comment() {
        let help = WorkerCounters::help();
        assert_eq!(help.len(), WorkerCounters::default().fields().len());
        for (name, text) in help {
            assert!(
                !text.is_empty() && !text.starts_with(' '),
                "{name}: {text:?}"
            );
        }
        assert!(help.contains(&("datagrams_in", "Datagrams received.")));
    }
}
