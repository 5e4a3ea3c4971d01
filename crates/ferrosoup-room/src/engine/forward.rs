//! What goes out to consumers: the fan-out of one received packet (each consumer does its
//! own send work, consumer.rs), retransmissions on NACK, and which producer stream
//! (simulcast layer) each consumer forwards.

use std::time::Instant;

use ferrosoup_proto::ortc::ProducerType;
use ferrosoup_proto::rtp_parameters::MediaKind;

use ferrosoup_rtc::rtp::abs_send_time;

use super::Engine;
use crate::arena::{ConsumerKey, ProducerKey};
use crate::consumer::{Allocation, Outgoing, Resend};
use crate::events::MediaEvent;
use crate::forwarder::LayerChange;
use crate::layers::{MAX_TEMPORAL_LAYERS, StreamLayers, SvcMode};
use crate::producer::{ACTIVE_TIMEOUT, Arrived};
use crate::stats::RtpDrop;
use crate::timers::Timer;
use crate::transmit::Transmit;

impl Engine {
    /// Sends one received packet (`packet`, as its producer left it) to every consumer of
    /// producer `p`.
    pub(super) fn fan_out(
        &mut self,
        now: Instant,
        p: ProducerKey,
        packet: &[u8],
        arrived: &Arrived,
        out: &mut dyn Transmit,
    ) {
        let outgoing = Outgoing {
            packet,
            info: &arrived.info,
            stream: arrived.stream,
            ext_seq: arrived.received.ext_seq,
            keyframe: arrived.received.keyframe,
            layer: arrived.received.layer,
            abs_send_time: abs_send_time(self.since_epoch(now)),
        };
        let Self {
            producers,
            consumers,
            transports,
            counters,
            events,
            timers,
            ..
        } = self;
        let mut want_keyframe = false;
        for &c in &producers[p].consumers {
            let consumer = &mut consumers[c];
            let forwarded = consumer.forward(c, now, &outgoing, transports, out);
            match forwarded.sent {
                Ok(0) => {
                    // Queued by the pacer: its timer sends it.
                    counters.paced_packets += 1;
                    if let Some(at) = transports
                        .get_mut(consumer.transport)
                        .and_then(|t| t.bwe.as_deref_mut())
                        .and_then(|b| b.pacer.next_send(now))
                    {
                        timers.arm(Timer::Pace(consumer.transport), at);
                    }
                }
                Ok(bytes) => {
                    counters.rtp_packets_out += 1;
                    counters.rtp_bytes_out += bytes as u64;
                }
                Err(reason) => counters.rtp_dropped.add(reason),
            }
            if let Some(change) = forwarded.layer_change {
                tracing::debug!(consumer = %consumer.id, layer = ?change.spatial, "forwarded layer switched");
                let _ = events.send(layers_event(consumer.id, change));
            }
            want_keyframe |= forwarded.wants_keyframe;
        }
        if want_keyframe {
            self.request_keyframe(p, arrived.stream, now, out);
        }
    }

    /// Serves one NACKed output sequence number of a consumer from its producer's store.
    pub(super) fn retransmit(
        &mut self,
        now: Instant,
        c: ConsumerKey,
        seq: u16,
        out: &mut dyn Transmit,
    ) {
        self.counters.nacks_received += 1;
        let since_epoch = self.since_epoch(now);
        let Self {
            producers,
            consumers,
            transports,
            counters,
            scratch,
            ..
        } = self;
        let consumer = &mut consumers[c];
        let input = consumer.forwarder.input_for_output(seq);
        let stream_bps = input
            .and_then(|(stream, _)| {
                producers
                    .get_mut(consumer.producer)?
                    .streams
                    .get_mut(stream)?
                    .bitrate
                    .bps(now)
            })
            .unwrap_or(0);
        let original = input.and_then(|(stream, ext)| {
            producers
                .get(consumer.producer)?
                .streams
                .get(stream)?
                .store
                .as_ref()?
                .get(ext)
        });
        let Some(original) = original else {
            consumer.nack_misses += 1;
            counters.rtp_dropped.add(RtpDrop::NotStored);
            return;
        };
        let resend = Resend {
            seq,
            original,
            now,
            now_ms: (since_epoch.as_millis() as u32).max(1),
            stream_bps,
            abs_send_time: abs_send_time(since_epoch),
        };
        let egress = transports
            .get_mut(consumer.transport)
            .and_then(|t| t.egress());
        match consumer.retransmit(resend, egress, &mut scratch.rtx, out) {
            Ok(_) => counters.retransmissions += 1,
            Err(reason) => counters.rtp_dropped.add(reason),
        }
    }

    /// Serves one NACKed sequence number of a pipe consumer's stream `stream` from its
    /// producer's store (the pipe carries the producer's own sequence numbers).
    pub(super) fn retransmit_pipe(
        &mut self,
        now: Instant,
        c: ConsumerKey,
        stream: usize,
        seq: u16,
        out: &mut dyn Transmit,
    ) {
        self.counters.nacks_received += 1;
        let Self {
            producers,
            consumers,
            transports,
            counters,
            ..
        } = self;
        let consumer = &mut consumers[c];
        let original = producers
            .get(consumer.producer)
            .and_then(|p| p.streams.get(stream))
            .and_then(|s| {
                // Widened against the newest packet of the stream: the NACK names one
                // within half the sequence space behind it.
                let highest = s.seq.highest()?;
                let distance = i64::from(seq.wrapping_sub(highest as u16) as i16);
                let ext = highest.checked_add_signed(distance)?;
                Some((ext, s.store.as_ref()?.get(ext)?))
            });
        let Some((ext, original)) = original else {
            consumer.nack_misses += 1;
            counters.rtp_dropped.add(RtpDrop::NotStored);
            return;
        };
        let egress = transports
            .get_mut(consumer.transport)
            .and_then(|t| t.egress());
        match consumer.retransmit_pipe(stream, ext, original, now, egress, out) {
            Ok(_) => counters.retransmissions += 1,
            Err(reason) => counters.rtp_dropped.add(reason),
        }
    }

    /// A consumer was paused or resumed (by its client or with its producer).
    pub(super) fn on_consumer_activity_changed(
        &mut self,
        key: ConsumerKey,
        now: Instant,
        out: &mut dyn Transmit,
    ) {
        let c = &mut self.consumers[key];
        if c.is_active() {
            self.update_consumer_target(key, now, out);
            self.request_keyframe_for_consumer(key, now, out);
        } else {
            let change = c.forwarder.restart();
            c.forwarder.set_target(None);
            if let Some(change) = change
                && c.consumer_type != ProducerType::Simple
            {
                let event = layers_event(c.id, change);
                self.emit(event);
            }
        }
    }

    /// Recomputes which producer stream (simulcast layer) a consumer should forward, and
    /// which layers inside it: its preferred layers capped by its allocation, or the best
    /// below them that is receiving. The preferred temporal layer applies at the preferred
    /// spatial layer; below it every temporal layer is forwarded.
    pub(super) fn update_consumer_target(
        &mut self,
        key: ConsumerKey,
        now: Instant,
        out: &mut dyn Transmit,
    ) {
        let c = &self.consumers[key];
        if !c.is_active() {
            return;
        }
        let (cap, allocated) = match c.allocation {
            Allocation::Unlimited => (c.preferred_spatial, None),
            Allocation::Layer(l) => (
                Some(c.preferred_spatial.map_or(l.spatial, |p| p.min(l.spatial))),
                Some(l),
            ),
            Allocation::Paused => {
                self.pause_for_bandwidth(key);
                return;
            }
        };
        let (preferred_spatial, preferred_temporal) = (c.preferred_spatial, c.preferred_temporal);
        let producer = &mut self.producers[c.producer];
        let (target, spatial) = if producer.svc == SvcMode::None {
            let stream = producer.best_active_stream(now, cap).unwrap_or(0);
            (Some(stream), u8::try_from(stream).unwrap_or(u8::MAX))
        } else {
            (Some(0), producer.svc_top_spatial(now, cap))
        };
        let top_temporal = (MAX_TEMPORAL_LAYERS - 1) as u8;
        let temporal = match allocated {
            Some(l) if l.spatial == spatial => l.temporal,
            _ if preferred_spatial == Some(spatial) => preferred_temporal.unwrap_or(top_temporal),
            _ => top_temporal,
        };
        let inside = StreamLayers {
            spatial: if producer.svc == SvcMode::None {
                0
            } else {
                spatial
            },
            temporal,
        };
        let c = &mut self.consumers[key];
        let stream_changed = c.forwarder.target() != target;
        let inside_changed = c.forwarder.layer_target() != inside;
        c.forwarder.set_target(target);
        c.forwarder.set_layer_target(inside);
        if c.kind == MediaKind::Video
            && (stream_changed || (inside_changed && c.forwarder.needs_keyframe()))
        {
            self.request_keyframe_for_consumer(key, now, out);
        }
    }

    /// Stops a consumer the bandwidth allocation cannot fit (audio keeps flowing); it
    /// resumes on a keyframe when the allocation gives it a layer again.
    fn pause_for_bandwidth(&mut self, key: ConsumerKey) {
        let c = &mut self.consumers[key];
        if c.forwarder.target().is_none() && c.forwarder.current().is_none() {
            return;
        }
        let change = c.forwarder.restart();
        c.forwarder.set_target(None);
        if c.consumer_type != ProducerType::Simple {
            let event = layers_event(c.id, change.unwrap_or(LayerChange::NONE));
            self.emit(event);
        }
    }

    /// A simulcast producer's stream started, resumed or may have stopped: its consumers'
    /// targets are recomputed, and the check is armed for when the next active stream
    /// would time out.
    pub(super) fn on_stream_activity_timer(
        &mut self,
        p: ProducerKey,
        now: Instant,
        out: &mut dyn Transmit,
    ) {
        let Some(producer) = self.producers.get(p) else {
            return;
        };
        let next = producer
            .streams
            .iter()
            .filter(|s| s.is_active(now))
            .filter_map(|s| s.last_packet)
            .min()
            .map(|last| last + ACTIVE_TIMEOUT);
        let consumers = producer.consumers.clone();
        for c in consumers {
            self.update_consumer_target(c, now, out);
        }
        if let Some(at) = next {
            self.timers.arm(Timer::StreamActivity(p), at);
        }
    }
}

/// The event reporting a consumer's new layers.
pub(super) fn layers_event(consumer_id: crate::ids::ConsumerId, change: LayerChange) -> MediaEvent {
    MediaEvent::ConsumerLayersChanged {
        consumer_id,
        spatial_layer: change.spatial,
        temporal_layer: change.temporal,
    }
}
