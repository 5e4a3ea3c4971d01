//! Send-side bandwidth estimation for one transport, sans-IO: the engine notes every
//! packet it sends with a transport-wide sequence number and hands over the client's
//! transport-cc feedback; out come the estimate the allocator shares among consumers,
//! the pacing rate, and the probe clusters to send.
//!
//! The design follows libwebrtc's GoogCC, the estimator browsers run on the same feedback:
//! a delay trendline with an adaptive overuse threshold drives AIMD (capped by the rate
//! the receiver acknowledged), a loss-based bound caps it, and probes (media plus RTX
//! padding at a target rate) find headroom in one round trip instead of 8 % a second.

pub mod aimd;
pub mod delay;
pub mod history;
pub mod loss;
pub mod pacer;
pub mod probe;
pub mod rate;

use std::time::{Duration, Instant};

use ferrosoup_rtc::twcc::{MalformedFeedback, read_feedback};

use crate::aimd::AimdControl;
use crate::delay::{InterArrival, QueueDelay, Trendline, Usage};
use crate::history::{PacketResult, SendHistory};
use crate::loss::LossBound;
pub use crate::pacer::PacerBudget;
use crate::probe::Prober;
pub use crate::probe::{ProbeCluster, ProbeResult};
use crate::rate::RateMeter;

/// The pacing rate over the estimate.
pub const PACING_FACTOR: f64 = 1.1;
/// Window of the acknowledged rate. Short, so that during an overuse (the bottleneck
/// busy) it measures the bottleneck's rate rather than what was sent before: a layer
/// switch's keyframe must not pull the decrease down to the old layer's rate.
const ACKED_WINDOW_US: i64 = 200_000;
/// Window of the sent rate (application-limited detection).
const SENT_WINDOW_US: i64 = 500_000;
/// Arrivals further apart than this (or a reference time that jumped back) start the
/// delay measurements and the acknowledged rate afresh.
const ARRIVAL_GAP_US: i64 = 4 * ACKED_WINDOW_US;
/// After a probe, for this long the throughput an overuse decreases from is at least the
/// estimate before it (or, when the probe reached the link's capacity, what it measured):
/// the probe's own queue shows as an overuse a round trip later, while what the receiver
/// acknowledged is only what the layers sent (an SFU sending one low layer is
/// application-limited), and decreasing from that undid every probe (the estimate fell
/// back to 1.5 × the low layer; on a 400 kbit/s link, from 250 to 90 kbit/s, which left
/// one consumer at a quarter of its frame rate for 10 s).
const PROBE_THROUGHPUT_US: i64 = 500_000;
/// The sender is application-limited below this share of the estimate...
const ALR_ENTER: f64 = 0.65;
/// ...until it sends more than this share again.
const ALR_EXIT: f64 = 0.8;

/// The estimate before any feedback, bit/s (libwebrtc's send-side default): what the
/// first allocation shares. Higher starts (mediasoup's 1 Mbit/s, this one's 600 kbit/s
/// before) put a 400 kbit/s downlink under a top layer and its retransmissions for the
/// first seconds, which froze its picture for as long; probes from the first feedback
/// find a faster link within a few round trips.
pub const START_BPS: u64 = 300_000;

/// Limits of one estimator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BweConfig {
    /// Estimate before any feedback (mediasoup's `initialAvailableOutgoingBitrate`), bit/s.
    pub start_bps: u64,
    /// Floor, bit/s.
    pub min_bps: u64,
    /// Ceiling, bit/s.
    pub max_bps: u64,
}

impl Default for BweConfig {
    fn default() -> Self {
        Self {
            start_bps: START_BPS,
            min_bps: 30_000,
            max_bps: 50_000_000,
        }
    }
}

/// What the estimator knows, for stats.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BweStats {
    /// The estimate in force, bit/s.
    pub estimate_bps: u64,
    /// The delay-based rate, bit/s.
    pub delay_based_bps: u64,
    /// The loss-based bound, bit/s (0: none).
    pub loss_bound_bps: u64,
    /// What the receiver acknowledged lately, bit/s.
    pub acked_bps: u64,
    /// What was sent lately, bit/s.
    pub sent_bps: u64,
    /// What the allocator would send with nothing held back, bit/s.
    pub desired_bps: u64,
    /// Sending well below the estimate (application-limited).
    pub in_alr: bool,
    /// The delay signal: 0 normal, 1 overusing, -1 underusing.
    pub usage: i8,
    /// Loss of the last measured interval, 0..1.
    pub loss: f64,
    /// Probe clusters started.
    pub probes: u64,
    /// Feedback packets read.
    pub feedbacks: u64,
    /// What the last probe cluster measured.
    pub last_probe: Option<ProbeResult>,
}

/// The estimator of one sending transport.
pub struct BandwidthEstimator {
    config: BweConfig,
    epoch: Instant,
    history: SendHistory,
    inter_arrival: InterArrival,
    trendline: Trendline,
    queue: QueueDelay,
    aimd: AimdControl,
    loss: LossBound,
    acked: RateMeter,
    last_arrival_us: Option<i64>,
    prober: Prober,
    /// A decrease within [`PROBE_THROUGHPUT_US`] after this time (µs) starts from at least
    /// this rate (bit/s): the estimate in force when a probe cluster ended (the queue the
    /// probe left is its own, not news of the link), or what a probe that reached the
    /// link's capacity measured.
    probe_capacity: Option<(i64, u64)>,
    in_alr: bool,
    desired: u64,
    estimate: u64,
    feedbacks: u64,
    /// A measurement moved the estimate (see [`BandwidthEstimator::is_measured`]).
    measured: bool,
    /// One feedback's results (reused: allocated once).
    results: Vec<PacketResult>,
    last_probe: Option<ProbeResult>,
}

impl BandwidthEstimator {
    /// An estimator starting at `config.start_bps`.
    pub fn new(now: Instant, config: BweConfig) -> Self {
        let start = config.start_bps.clamp(config.min_bps, config.max_bps);
        Self {
            config,
            epoch: now,
            history: SendHistory::new(),
            inter_arrival: InterArrival::default(),
            trendline: Trendline::default(),
            queue: QueueDelay::default(),
            aimd: AimdControl::new(start, config.min_bps, config.max_bps),
            loss: LossBound::default(),
            acked: RateMeter::new(ACKED_WINDOW_US),
            last_arrival_us: None,
            prober: Prober::default(),
            probe_capacity: None,
            in_alr: false,
            desired: 0,
            estimate: start,
            feedbacks: 0,
            measured: false,
            last_probe: None,
            results: Vec::with_capacity(256),
        }
    }

    fn us(&self, now: Instant) -> i64 {
        now.saturating_duration_since(self.epoch).as_micros() as i64
    }

    /// The estimate, bit/s.
    pub fn estimate_bps(&self) -> u64 {
        self.estimate
    }

    /// Whether the estimate rests on a measurement of the link: the delay-based rate went
    /// down on an overuse, the loss bound held it, or a probe raised it. Until then it is
    /// the start value grown by the additive increase: a guess, not a limit the link showed.
    pub fn is_measured(&self) -> bool {
        self.measured
    }

    /// The pacing rate, bit/s.
    pub fn pacing_bps(&self) -> u64 {
        (self.estimate as f64 * PACING_FACTOR) as u64
    }

    /// Notes a packet sent at `now` under transport-wide sequence number `seq` (RTP
    /// header and payload bytes). Nothing is allocated after the first call.
    pub fn on_sent(&mut self, now: Instant, seq: u16, size: usize) {
        let at = self.us(now);
        let cluster = self.prober.cluster_at(at);
        self.history.on_sent(seq, at, size, cluster);
        self.prober.on_sent(cluster, at, size as u32);
    }

    /// Reads one transport-cc feedback (the whole RTCP packet) and updates the estimate.
    pub fn on_feedback(&mut self, now: Instant, raw: &[u8]) -> Result<(), MalformedFeedback> {
        let mut results = std::mem::take(&mut self.results);
        results.clear();
        let history = &mut self.history;
        let read = read_feedback(raw, |seq, arrival| {
            if let Some(r) = history.on_reported(seq, arrival) {
                results.push(r);
            }
        });
        if read.is_ok() && !results.is_empty() {
            self.feedbacks += 1;
            self.apply(now, &results);
        }
        self.results = results;
        read.map(|_| ())
    }

    fn apply(&mut self, now: Instant, results: &[PacketResult]) {
        let now_us = self.us(now);
        let (mut lost, mut total) = (0u32, 0u32);
        let mut probe = None;
        for r in results {
            total += 1;
            match r.arrival_us {
                None => lost += 1,
                Some(at) => {
                    if self
                        .last_arrival_us
                        .is_some_and(|l| at < l - ARRIVAL_GAP_US)
                    {
                        // The receiver's clock jumped back (its reference time wrapped).
                        self.acked.reset();
                        self.inter_arrival = InterArrival::default();
                        self.queue.reset();
                    } else if self
                        .last_arrival_us
                        .is_some_and(|l| at > l + ARRIVAL_GAP_US)
                    {
                        // Nothing arrived for a while (every video consumer paused, say):
                        // the delay trend and the acknowledged rate are of another time.
                        // An overuse seen before the silence, judged with the few bytes of
                        // its first feedback, would cut the estimate to a tenth.
                        self.acked.reset();
                        self.inter_arrival = InterArrival::default();
                        self.trendline.restart();
                        self.queue.reset();
                    }
                    self.last_arrival_us = Some(self.last_arrival_us.map_or(at, |l| l.max(at)));
                    self.acked.add(at, r.size as usize);
                    self.queue.on_packet(r.sent_us, at);
                    if let Some(delta) = self.inter_arrival.on_packet(r.sent_us, at) {
                        self.trendline.update(delta);
                    }
                }
            }
            if r.cluster != 0
                && let Some(result) =
                    self.prober
                        .on_result(now_us, r.cluster, r.sent_us, r.arrival_us, r.size)
            {
                probe = Some(result);
            }
        }
        let mut throughput = self.last_arrival_us.and_then(|l| self.acked.rate_bps(l));
        if let Some((at, rate)) = self.probe_capacity
            && now_us - at <= PROBE_THROUGHPUT_US
        {
            throughput = Some(throughput.map_or(rate, |t| t.max(rate)));
        }
        let before = self.aimd.bitrate();
        self.aimd.update(now_us, self.trendline.usage(), throughput);
        if self.aimd.bitrate() < before {
            // Decreased: the probe's queue is answered, the next overuse is the link's.
            self.measured = true;
            self.probe_capacity = None;
        }
        if let Some(result) = probe {
            self.last_probe = Some(result);
            if result.at_capacity {
                self.probe_capacity = Some((now_us, result.bitrate));
            }
            if result.bitrate > self.aimd.bitrate() {
                self.aimd.set_bitrate(now_us, result.bitrate);
                self.measured = true;
            }
            // As GoogCC hands a probe's result to its loss-based estimate.
            self.loss.on_probe(result.bitrate);
        }
        self.loss.on_feedback(
            now_us,
            lost,
            total,
            self.estimate,
            self.aimd.bitrate(),
            self.queue.take_mean(),
        );
        let bounded = self
            .loss
            .bound()
            .map_or(self.aimd.bitrate(), |b| b.min(self.aimd.bitrate()));
        self.measured |= bounded < self.aimd.bitrate();
        self.estimate = bounded.clamp(self.config.min_bps, self.config.max_bps);
        self.update_alr();
    }

    /// The rate sent over the last [`SENT_WINDOW_US`], bit/s.
    fn sent_bps(&self) -> u64 {
        self.history.sent_bytes(SENT_WINDOW_US) * 8_000_000 / SENT_WINDOW_US as u64
    }

    fn update_alr(&mut self) {
        let sent = self.sent_bps() as f64;
        let estimate = self.estimate as f64;
        if self.in_alr && sent > ALR_EXIT * estimate {
            self.in_alr = false;
        } else if !self.in_alr && sent < ALR_ENTER * estimate {
            self.in_alr = true;
        }
    }

    /// Sets the round-trip time to the client.
    pub fn set_rtt(&mut self, rtt: Duration) {
        let rtt_ms = rtt.as_secs_f64() * 1000.0;
        self.aimd.set_rtt_ms(rtt_ms);
        self.loss.set_rtt_ms(rtt_ms);
    }

    /// Sets what the allocator would send with nothing held back, bit/s: probes look for
    /// headroom only while it is above the estimate.
    pub fn set_desired(&mut self, bps: u64) {
        self.desired = bps.min(self.config.max_bps);
    }

    /// Starts a probe cluster if one is due.
    pub fn poll_probe(&mut self, now: Instant) -> Option<ProbeCluster> {
        let now_us = self.us(now);
        let cluster = self.prober.poll(now_us, self.estimate, self.desired)?;
        self.probe_capacity = Some((cluster.end_us(), self.estimate));
        Some(cluster)
    }

    /// Padding bytes the probe sending at `now` needs by `ahead` from now (by its end when
    /// that comes first; 0 without a probe).
    pub fn padding_due(&self, now: Instant, ahead: Duration) -> usize {
        let now_us = self.us(now);
        self.prober.sending(now_us).map_or(0, |c| {
            c.bytes_due(now_us + ahead.as_micros() as i64)
                .saturating_sub(self.prober.cluster_bytes()) as usize
        })
    }

    /// When the probe in progress stops sending.
    pub fn probe_end(&self, now: Instant) -> Option<Instant> {
        let now_us = self.us(now);
        self.prober
            .sending(now_us)
            .map(|c| self.epoch + Duration::from_micros(c.end_us() as u64))
    }

    /// The estimator's state, for stats.
    pub fn stats(&mut self) -> BweStats {
        BweStats {
            estimate_bps: self.estimate,
            delay_based_bps: self.aimd.bitrate(),
            loss_bound_bps: self.loss.bound().unwrap_or(0),
            acked_bps: self
                .last_arrival_us
                .and_then(|l| self.acked.rate_bps(l))
                .unwrap_or(0),
            sent_bps: self.sent_bps(),
            desired_bps: self.desired,
            in_alr: self.in_alr,
            usage: match self.trendline.usage() {
                Usage::Normal => 0,
                Usage::Overusing => 1,
                Usage::Underusing => -1,
            },
            loss: self.loss.last_loss(),
            probes: self.prober.probes(),
            feedbacks: self.feedbacks,
            last_probe: self.last_probe,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrosoup_rtc::twcc::TwccRecorder;

    /// A sender and a receiver over a link of `capacity_bps` with no other delay: packets
    /// of 1,000 bytes, feedback every 100 ms.
    struct Link {
        t0: Instant,
        estimator: BandwidthEstimator,
        receiver: TwccRecorder,
        seq: u16,
        /// When the link is busy until, µs.
        busy_until_us: i64,
        capacity_bps: u64,
    }

    impl Link {
        fn new(capacity_bps: u64) -> Self {
            let t0 = Instant::now();
            Self {
                t0,
                estimator: BandwidthEstimator::new(t0, BweConfig::default()),
                receiver: TwccRecorder::new(t0),
                seq: 0,
                busy_until_us: 0,
                capacity_bps,
            }
        }

        fn at(&self, us: i64) -> Instant {
            self.t0 + Duration::from_micros(us as u64)
        }

        /// Sends at `rate_bps` from `from_us` for `duration_us`, with feedback.
        fn send(&mut self, from_us: i64, duration_us: i64, rate_bps: u64) {
            let gap_us = (8_000 * 1_000_000 / rate_bps) as i64;
            let mut now = from_us;
            let mut next_feedback = from_us + 100_000;
            while now < from_us + duration_us {
                self.estimator.on_sent(self.at(now), self.seq, 1_000);
                let serve_us = (8_000 * 1_000_000 / self.capacity_bps) as i64;
                self.busy_until_us = self.busy_until_us.max(now) + serve_us;
                self.receiver
                    .on_packet(self.at(self.busy_until_us), self.seq);
                self.seq = self.seq.wrapping_add(1);
                now += gap_us;
                if now >= next_feedback {
                    let mut buf = [0u8; 1_500];
                    while let Some(len) = self.receiver.write_feedback(&mut buf, 1, 2) {
                        let _ = self.estimator.on_feedback(self.at(now), &buf[..len]);
                    }
                    next_feedback += 100_000;
                }
            }
        }
    }

    #[test]
    fn an_overuse_before_a_silence_does_not_cut_the_estimate_after_it() {
        // Overuse a 1 Mbit/s link (its queue drains by 2.6 s), fall silent (every video
        // consumer paused), then send a trickle: one packet per feedback.
        let mut link = Link::new(1_000_000);
        link.send(0, 2_000_000, 1_300_000);
        let before = link.estimator.estimate_bps();
        assert_eq!(
            link.estimator.stats().usage,
            1,
            "overusing when it fell silent"
        );
        link.send(4_000_000, 300_000, 80_000);
        let after = link.estimator.estimate_bps();
        assert!(after >= before * 9 / 10, "{before} → {after}");
    }
}
