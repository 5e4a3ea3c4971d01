//! Bandwidth toward each client: the transport's estimator reads the client's
//! transport-cc feedback, the allocation shares the estimate among the transport's
//! consumers (allocator.rs) and sets their layers, and probe clusters (RTX padding on top
//! of media) look for headroom when a consumer is held below its preferred layer.

use std::time::{Duration, Instant};

use ferrosoup_bwe::{BweConfig, PACING_FACTOR};
use ferrosoup_proto::ortc::ProducerType;
use ferrosoup_proto::rtp_parameters::MediaKind;

use super::Engine;
use crate::allocator::{self, Demand, Layer, MAX_LAYERS, Step};
use crate::arena::{ConsumerKey, TransportKey};
use crate::consumer::{Allocation, Consumer, Outgoing};
use crate::layers::{PacketLayer, SvcMode};
use crate::stats::{BandwidthGauges, Distribution, RtpDrop};
use crate::timers::Timer;
use crate::transmit::Transmit;
use crate::transport::SendBandwidth;
use ferrosoup_rtc::rtp::{abs_send_time, parse_rtp};

/// How often padding goes out while a probe cluster sends.
const PROBE_TICK: Duration = Duration::from_millis(2);
/// Padding packets per tick at most.
const MAX_PADDING_PER_TICK: usize = 32;
/// RTP header and transport-cc extension of a padding packet.
const PADDING_OVERHEAD: usize = 20;

impl Engine {
    /// Starts bandwidth estimation on a transport once a consumer with transport-cc sends
    /// on it (idempotent).
    pub(super) fn start_bandwidth_estimation(&mut self, key: TransportKey, now: Instant) {
        if let Some(t) = self.transports.get_mut(key)
            && t.bwe.is_none()
        {
            t.bwe = Some(Box::new(SendBandwidth::new(now, BweConfig::default())));
        }
    }

    /// Transport-cc feedback from a client about what its transport sent.
    pub(super) fn on_transport_feedback(
        &mut self,
        now: Instant,
        key: TransportKey,
        raw: &[u8],
        out: &mut dyn Transmit,
    ) {
        let t = &mut self.transports[key];
        let rtt = t.rtt;
        let Some(bwe) = t.bwe.as_deref_mut() else {
            return;
        };
        bwe.feedback_seen = true;
        if let Some(rtt) = rtt {
            bwe.estimator.set_rtt(rtt);
        }
        if bwe.estimator.on_feedback(now, raw).is_err() {
            self.counters.dropped_malformed += 1;
            return;
        }
        tracing::trace!(transport = %t.id, stats = ?bwe.estimator.stats(), "transport-cc feedback");
        self.steer_bandwidth(key, now, out);
    }

    /// Acts on the transport's estimate: allocation, pacing rate, and a probe if one is
    /// due. Runs on every feedback, and on every report round too: with every video
    /// consumer paused nothing sent carries a transport-wide sequence number, no feedback
    /// comes, and only a probe (on the probator) finds when one fits again.
    pub(super) fn steer_bandwidth(
        &mut self,
        key: TransportKey,
        now: Instant,
        out: &mut dyn Transmit,
    ) {
        self.allocate(key, now, out);
        let Some(bwe) = self
            .transports
            .get_mut(key)
            .and_then(|t| t.bwe.as_deref_mut())
        else {
            return;
        };
        // Pacing follows a measured estimate only: the start value is a guess, and pacing
        // the keyframes of a join at 1.1 × that guess holds the first frames back (five
        // peers' keyframes at 660 kbit/s: about half a second). A link that cannot take
        // them shows an overuse or loss within a feedback or two, and pacing starts.
        if bwe.feedback_seen && bwe.estimator.is_measured() {
            // Never below what the allocation forwards (audio and single-layer video it
            // cannot lower included): the pacer spreads bursts, and holding media that
            // no layer switch will reduce would only queue it until it is dropped.
            let floor = (bwe.allocated_bps as f64 * PACING_FACTOR) as u64;
            let pacing = bwe.estimator.pacing_bps().max(floor);
            bwe.pacer.set_rate(now, pacing);
        }
        // Probes only where what they find can change a layer: audio and single-stream
        // video get what they send whatever the estimate, and padding for them would
        // only load the link and the worker.
        if bwe.steerable && bwe.estimator.poll_probe(now).is_some() {
            self.timers.arm(Timer::Probe(key), now);
        }
    }

    /// Shares the transport's estimate among its consumers: audio and single-layer video
    /// first, then consumers with layer steps (simulcast, SVC, temporal layers) by
    /// priority (allocator.rs); a consumer whose allocation changed gets its new layer.
    pub(super) fn allocate(&mut self, key: TransportKey, now: Instant, out: &mut dyn Transmit) {
        // The engine's reused buffers: an allocation round allocates nothing.
        let mut scratch = std::mem::take(&mut self.scratch.allocation);
        scratch.demands.clear();
        scratch.keys.clear();
        scratch.layers.clear();
        self.allocate_with(key, now, &mut scratch, out);
        self.scratch.allocation = scratch;
    }

    fn allocate_with(
        &mut self,
        key: TransportKey,
        now: Instant,
        scratch: &mut AllocationScratch,
        out: &mut dyn Transmit,
    ) {
        let AllocationScratch {
            demands,
            keys,
            layers,
            order,
        } = scratch;
        let Self {
            transports,
            producers,
            consumers,
            ..
        } = self;
        let Some(t) = transports.get_mut(key) else {
            return;
        };
        let Some(bwe) = t.bwe.as_deref_mut() else {
            return;
        };
        let estimate = bwe.estimator.estimate_bps();
        let mut reserved = 0u64;
        let mut wanted = 0u64;
        for &c in &t.consumers {
            let consumer = &mut consumers[c];
            if !consumer.is_active() {
                continue;
            }
            let Some(producer) = producers.get_mut(consumer.producer) else {
                continue;
            };
            let layers = if consumer.kind == MediaKind::Audio {
                [0; MAX_LAYERS]
            } else {
                // A layer too young to be measured costs nothing yet.
                producer.layer_steps(now, consumer.preferred_spatial, consumer.preferred_temporal)
            };
            if consumer.kind == MediaKind::Audio
                || (consumer.consumer_type == ProducerType::Simple
                    && layers.iter().filter(|&&b| b > 0).count() <= 1)
            {
                reserved += producer
                    .streams
                    .iter_mut()
                    .filter_map(|s| s.bitrate.bps(now))
                    .sum::<u64>();
                continue;
            }
            if layers.iter().all(|&b| b == 0) {
                // Its producer sends nothing yet: nothing to share, nothing to pause for.
                continue;
            }
            let mut demand = Demand {
                priority: consumer.priority,
                layers,
                // A switch waiting for its keyframe counts as made: the next feedback
                // must not take an upgrade back for want of the upgrade margin, nor a
                // downgrade for the keep margin of the layer it leaves.
                current: target_step(consumer, &layers),
            };
            // Probes look for what it wants even while its upgrades are held back, so a
            // link that got better is known when the hold ends.
            wanted += demand.wanted();
            demand.limit_to_keyframes_that_fit(&producer.keyframe_bits(), estimate);
            demand.limit_to_smooth_frame_rates(&producer.frame_rates(now));
            if consumer.upgrade_hold.holds(now) {
                // No upgrade (nor resume) for now: it keeps what it has.
                let Some(target) = demand.current else {
                    continue;
                };
                if let Some(above) = demand.layers.get_mut(target + 1..) {
                    above.fill(0);
                }
            }
            demands.push(demand);
            keys.push(c);
        }
        layers.resize(demands.len(), None);
        let budget = estimate.saturating_sub(reserved);
        let left = allocator::allocate(budget, demands, layers, order);
        bwe.estimator.set_desired(reserved + wanted);
        bwe.allocated_bps = reserved + budget - left;
        bwe.steerable = !demands.is_empty();
        bwe.last = bwe.estimator.stats();
        let steers = bwe.steers(now);
        let measured = bwe.feedback_seen && bwe.estimator.is_measured();
        for ((&c, &layer), demand) in keys.iter().zip(layers.iter()).zip(demands.iter()) {
            let allocation = match (steers, layer) {
                (false, _) => Allocation::Unlimited,
                (true, Some(l)) => Allocation::Layer(Layer::from_step(l)),
                // Only a measured limit pauses a consumer: a joiner whose room has more
                // video than the start estimate (or what additive increase made of it while
                // the first consumers flowed) sees everyone's lowest layer at once, and the
                // probe that follows tells whether the link carries it.
                (true, None) if !measured => demand.lowest().map_or(Allocation::Paused, |l| {
                    Allocation::Layer(Layer::from_step(l))
                }),
                (true, None) => Allocation::Paused,
            };
            if self.consumers[c].allocation != allocation {
                tracing::debug!(
                    consumer = %self.consumers[c].id,
                    ?allocation,
                    estimate,
                    reserved,
                    layer_bps = ?demand.layers,
                    keyframe_bits = ?self
                        .producers
                        .get(self.consumers[c].producer)
                        .map(|p| p.keyframe_bits()),
                    "allocation changed"
                );
                let consumer = &mut self.consumers[c];
                if let Some(to) = layer_of(allocation) {
                    let from = demand.current;
                    let step = Step::between(from, to);
                    // Given all it asks for (its preferred layer went down, or a stream
                    // stopped), the link took nothing back: no upgrade failed.
                    if step == Step::Up || to != demand.top() {
                        consumer.upgrade_hold.on_change(now, from, to);
                    }
                    match step {
                        Step::Up => self.counters.bwe_layer_upgrades += 1,
                        Step::Down => self.counters.bwe_layer_downgrades += 1,
                        Step::Same => {}
                    }
                }
                consumer.allocation = allocation;
                self.update_consumer_target(c, now, out);
            }
        }
        self.count_bandwidth(key, now);
    }

    /// Recounts the transport's share of the worker's bandwidth gauges after an allocation
    /// round: its estimate, allocation and desire once its client sends feedback, and its
    /// video consumers paused or held below the best layer they prefer and can get.
    fn count_bandwidth(&mut self, key: TransportKey, now: Instant) {
        let Self {
            transports,
            producers,
            consumers,
            counters,
            ..
        } = self;
        let Some(t) = transports.get_mut(key) else {
            return;
        };
        let Some(bwe) = t.bwe.as_deref_mut() else {
            return;
        };
        let mut share = BandwidthGauges::default();
        if bwe.feedback_seen {
            share.transports = 1;
            share.estimate_bps = bwe.last.estimate_bps;
            share.allocated_bps = bwe.allocated_bps;
            share.desired_bps = bwe.last.desired_bps;
        }
        for c in t.consumers.iter().filter_map(|&c| consumers.get(c)) {
            if !c.is_active() || c.kind != MediaKind::Video {
                continue;
            }
            match c.allocation {
                Allocation::Paused => share.consumers_paused += 1,
                Allocation::Layer(layer) => {
                    let best = producers.get_mut(c.producer).and_then(|p| {
                        p.layer_steps(now, c.preferred_spatial, c.preferred_temporal)
                            .iter()
                            .rposition(|&b| b > 0)
                    });
                    if best.is_some_and(|best| best > layer.step()) {
                        share.consumers_limited += 1;
                    }
                }
                Allocation::Unlimited => {}
            }
        }
        counters.bwe.replace(&bwe.gauges, &share);
        bwe.gauges = share;
    }

    /// Sends the padding a probe cluster still needs, and re-arms while it lasts.
    pub(super) fn on_probe_timer(
        &mut self,
        key: TransportKey,
        now: Instant,
        out: &mut dyn Transmit,
    ) {
        let Self {
            transports,
            consumers,
            counters,
            timers,
            ..
        } = self;
        let Some(t) = transports.get_mut(key) else {
            return;
        };
        let Some(bwe) = t.bwe.as_deref() else {
            return;
        };
        let Some(end) = bwe.estimator.probe_end(now) else {
            return;
        };
        let mut due = bwe.estimator.padding_due(now, PROBE_TICK);
        // Padding rides on the RTX stream of a video consumer that is forwarding, else on
        // the probator (every video consumer paused: probes find when one fits again).
        let carrier = t
            .consumers
            .iter()
            .copied()
            .find(|&c| is_padding_carrier(&consumers[c]));
        let probator_twcc = t
            .consumers
            .iter()
            .map(|&c| &consumers[c])
            .find(|c| c.kind == MediaKind::Video && c.twcc_ext != 0)
            .map(|c| c.twcc_ext);
        for _ in 0..MAX_PADDING_PER_TICK {
            if due == 0 {
                break;
            }
            let padding = due.saturating_sub(PADDING_OVERHEAD).clamp(1, 255);
            let sent = match (carrier, probator_twcc) {
                (Some(c), _) => consumers[c].send_padding(now, padding, t.egress(), out),
                (None, Some(twcc_ext)) => t
                    .egress()
                    .ok_or(RtpDrop::NoRoute)
                    .and_then(|mut e| e.send_probator_padding(now, twcc_ext, padding, out)),
                (None, None) => break,
            };
            match sent {
                Ok(len) => {
                    due = due.saturating_sub(len);
                    counters.padding_packets += 1;
                    counters.padding_bytes += len as u64;
                    counters.rtp_bytes_out += len as u64;
                }
                Err(reason) => {
                    counters.rtp_dropped.add(reason);
                    break;
                }
            }
        }
        let next = now + PROBE_TICK;
        if next < end {
            timers.arm(Timer::Probe(key), next);
        }
    }

    /// Sends what the transport's pacer lets go now, and re-arms for the rest.
    pub(super) fn on_pace_timer(
        &mut self,
        key: TransportKey,
        now: Instant,
        out: &mut dyn Transmit,
    ) {
        let abs_send_time = abs_send_time(self.since_epoch(now));
        let Self {
            transports,
            producers,
            consumers,
            counters,
            timers,
            ..
        } = self;
        let Some(t) = transports.get_mut(key) else {
            return;
        };
        loop {
            let Some(bwe) = t.bwe.as_deref_mut() else {
                return;
            };
            let Some(paced) = bwe.pacer.pop(now) else {
                if let Some(at) = bwe.pacer.next_send(now) {
                    timers.arm(Timer::Pace(key), at);
                }
                return;
            };
            let Some(consumer) = consumers.get_mut(paced.consumer) else {
                continue;
            };
            let original = producers
                .get(consumer.producer)
                .and_then(|p| p.streams.get(paced.stream))
                .and_then(|s| s.store.as_ref())
                .and_then(|store| store.get(paced.ext_seq));
            let Some(original) = original else {
                counters.rtp_dropped.add(RtpDrop::NotStored);
                continue;
            };
            let Ok(info) = parse_rtp(original) else {
                counters.rtp_dropped.add(RtpDrop::Malformed);
                continue;
            };
            let packet = Outgoing {
                packet: original,
                info: &info,
                stream: paced.stream,
                ext_seq: paced.ext_seq,
                keyframe: false,
                layer: PacketLayer::default(),
                abs_send_time,
            };
            match consumer.send(now, &packet, paced.header, t.egress(), out) {
                Ok(bytes) => {
                    counters.rtp_packets_out += 1;
                    counters.rtp_bytes_out += bytes as u64;
                    // The turn's own processing until the flush is not added (tens of µs).
                    let queued = now.saturating_duration_since(paced.queued_at);
                    counters
                        .histograms
                        .record(Distribution::ForwardingDelay, queued.as_micros() as u64);
                }
                Err(reason) => counters.rtp_dropped.add(reason),
            }
        }
    }
}

/// Buffers an allocation round reuses.
#[derive(Default)]
pub(super) struct AllocationScratch {
    demands: Vec<Demand>,
    keys: Vec<ConsumerKey>,
    layers: Vec<Option<usize>>,
    order: Vec<usize>,
}

/// The layer step an allocation gives (`Some(None)`: paused; `None`: no limit).
fn layer_of(allocation: Allocation) -> Option<Option<usize>> {
    match allocation {
        Allocation::Unlimited => None,
        Allocation::Layer(l) => Some(Some(l.step())),
        Allocation::Paused => Some(None),
    }
}

/// The layer step a consumer forwards or switches to: its target stream (or SVC spatial
/// layer) at the highest of `layers` up to its target temporal layer.
fn target_step(consumer: &Consumer, layers: &[u64; MAX_LAYERS]) -> Option<usize> {
    let stream = consumer.forwarder.target()?;
    let inside = consumer.forwarder.layer_target();
    let spatial = if consumer.forwarder.svc() == SvcMode::None {
        u8::try_from(stream).unwrap_or(u8::MAX)
    } else {
        inside.spatial
    };
    let target = Layer {
        spatial,
        temporal: inside.temporal,
    };
    let lowest = Layer {
        spatial,
        temporal: 0,
    };
    // Temporal layers the stream does not have are not a step of their own.
    let step = (lowest.step()..=target.step().min(MAX_LAYERS - 1))
        .rev()
        .find(|&i| layers[i] > 0);
    Some(step.unwrap_or_else(|| target.step()))
}

/// A consumer padding can ride on: video, forwarding, with RTX.
fn is_padding_carrier(c: &crate::consumer::Consumer) -> bool {
    c.kind == MediaKind::Video
        && c.is_active()
        && c.rtx.is_some()
        && c.forwarder.current().is_some()
}
