//! A consumer's forwarding decision, as a plain value: [`ConsumerForwarder::decide`] says
//! forward with these output values, or drop and why; the consumer (consumer.rs) applies
//! it as a header rewrite on the packet buffer. It picks the producer stream (simulcast
//! layer) and, inside it, the layers a [`LayerFilter`] keeps (temporal layers, SVC
//! spatial layers). Pure logic, no I/O.

use std::time::Instant;

use ferrosoup_proto::rtp_parameters::MediaKind;
use ferrosoup_rtc::seq::{SEQ_HISTORY, SeqRewriter, TimestampRewriter};

use crate::layers::{Filtered, LayerFilter, PacketLayer, StreamLayers, SvcMode};

/// Why a packet was not forwarded to a consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The packet belongs to a layer this consumer does not forward now.
    OtherLayer,
    /// The consumer waits for a keyframe before it (re)starts forwarding video.
    WaitingKeyframe,
    /// The packet is older than the consumer's last sync point.
    TooOld,
    /// The packet's payload type has no counterpart in the consumer's parameters.
    UnknownPayloadType,
    /// A layer inside the forwarded stream above the consumer's (a temporal layer, an SVC
    /// spatial layer).
    FilteredLayer,
}

/// What to do with one producer packet for one consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Rewrite the packet with these values and send it.
    Forward {
        /// Output sequence number.
        seq: u16,
        /// Output RTP timestamp.
        timestamp: u32,
        /// Output payload type.
        payload_type: u8,
        /// Set the marker bit: the packet ends the highest SVC spatial layer forwarded of
        /// its picture.
        marker: bool,
    },
    /// Do not send it.
    Drop(DropReason),
}

/// A switch of the forwarded layer, reported to the client as `consumerLayersChanged`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerChange {
    /// The newly forwarded spatial layer (`None`: nothing forwarded).
    pub spatial: Option<u8>,
    /// The newly forwarded temporal layer (`None`: nothing forwarded).
    pub temporal: Option<u8>,
}

impl LayerChange {
    /// Nothing forwarded.
    pub const NONE: Self = Self {
        spatial: None,
        temporal: None,
    };
}

/// The forwarding state of a consumer: layer selection and sequence/timestamp rewriting.
/// Pure logic, no I/O: unit-tested on its own.
pub struct ConsumerForwarder {
    kind: MediaKind,
    /// Producer payload type → consumer payload type (`NO_PT`: not forwardable).
    pt_map: [u8; 128],
    seq: SeqRewriter,
    timestamp: TimestampRewriter,
    clock_rate: u32,
    /// Stream (spatial layer) currently forwarded.
    current: Option<usize>,
    /// Stream the consumer wants to forward (preferred layer capped by what is active).
    target: Option<usize>,
    /// Video must restart on a keyframe of the target stream.
    need_keyframe: bool,
    /// Last forwarded output timestamp and when it was sent, to re-base on switches.
    last_output: Option<(u32, Instant)>,
    /// Output sequence number at the last switch; NACKs for earlier outputs are ignored
    /// because those packets came from another stream.
    switched_at_seq: Option<u16>,
    /// Span of output sequence numbers since the last switch (capped at the NACK history size).
    outputs_since_switch: u32,
    /// Random offset of the output timeline, applied at the first sync.
    initial_ts_offset: u32,
    /// Current input → output timestamp offset (as set on the rewriter at the last sync).
    ts_offset: u32,
    /// Layers kept inside the forwarded stream.
    layers: LayerFilter,
}

/// Marks a payload type the consumer cannot receive.
pub const NO_PT: u8 = 0xff;

impl ConsumerForwarder {
    /// A forwarder starting at random output sequence number and timestamp, for streams
    /// whose spatial layers depend on each other as `svc` says.
    pub fn new(
        kind: MediaKind,
        pt_map: [u8; 128],
        clock_rate: u32,
        initial_seq: u16,
        initial_ts: u32,
        svc: SvcMode,
    ) -> Self {
        Self {
            kind,
            pt_map,
            seq: SeqRewriter::new(initial_seq),
            timestamp: TimestampRewriter::new(),
            clock_rate,
            current: None,
            target: None,
            need_keyframe: kind == MediaKind::Video,
            last_output: None,
            switched_at_seq: None,
            outputs_since_switch: 0,
            initial_ts_offset: initial_ts,
            ts_offset: initial_ts,
            layers: LayerFilter::new(svc),
        }
    }

    /// Sets the stream the consumer should forward; the switch happens on its next keyframe
    /// (at once for audio).
    pub fn set_target(&mut self, target: Option<usize>) {
        if self.target != target {
            self.target = target;
            if self.kind == MediaKind::Video && target.is_some() && target != self.current {
                self.need_keyframe = true;
            } else if target.is_some() && target == self.current {
                // Back to the stream already flowing: nothing to wait for.
                self.need_keyframe = false;
            }
        }
    }

    /// Sets the layers to forward inside the stream (temporal; spatial for SVC): see
    /// [`LayerFilter::set_target`].
    pub fn set_layer_target(&mut self, target: StreamLayers) {
        self.layers.set_target(target);
    }

    /// The layers the consumer wants inside the stream.
    pub fn layer_target(&self) -> StreamLayers {
        self.layers.target()
    }

    /// How the spatial layers inside the forwarded stream depend on each other.
    pub fn svc(&self) -> SvcMode {
        self.layers.svc()
    }

    /// The stream the consumer wants.
    pub fn target(&self) -> Option<usize> {
        self.target
    }

    /// The (spatial, temporal) layers forwarded now, as `consumerLayersChanged` reports
    /// them: the simulcast stream or the SVC spatial layer, and the temporal layer.
    pub fn current_layers(&self) -> Option<(u8, u8)> {
        let stream = self.current?;
        let inside = self.layers.current()?;
        let spatial = if self.layers.svc() == SvcMode::None {
            u8::try_from(stream).ok()?
        } else {
            inside.spatial
        };
        Some((spatial, inside.temporal))
    }

    fn change_from(&self, before: Option<(u8, u8)>) -> Option<LayerChange> {
        let now = self.current_layers();
        (now != before).then(|| LayerChange {
            spatial: now.map(|l| l.0),
            temporal: now.map(|l| l.1),
        })
    }

    /// What the consumer does now with a packet of layer `layer` of the current stream,
    /// sent again on a NACK: a retransmission of a dropped layer would reach a receiver
    /// that never had its picture.
    pub fn keeps_layer(&self, layer: &PacketLayer) -> Filtered {
        self.layers.keeps(layer)
    }

    /// The stream currently forwarded.
    pub fn current(&self) -> Option<usize> {
        self.current
    }

    /// True while the consumer waits for a keyframe (the worker asks the producer for one):
    /// to start or switch streams, or to reach its SVC spatial layer.
    pub fn needs_keyframe(&self) -> bool {
        (self.need_keyframe || self.layers.needs_keyframe()) && self.target.is_some()
    }

    /// Forgets the current stream (after a pause): the next packet re-syncs, video on a
    /// keyframe.
    pub fn restart(&mut self) -> Option<LayerChange> {
        self.need_keyframe = self.kind == MediaKind::Video;
        self.layers.restart();
        self.current.take().map(|_| LayerChange::NONE)
    }

    /// Decides what to do with packet `ext_seq` (widened input sequence number) of producer
    /// stream `stream`, whose payload descriptor says `layer`.
    #[allow(clippy::too_many_arguments)]
    pub fn decide(
        &mut self,
        now: Instant,
        stream: usize,
        ext_seq: u64,
        timestamp: u32,
        payload_type: u8,
        keyframe: bool,
        layer: &PacketLayer,
    ) -> (Decision, Option<LayerChange>) {
        let before = self.current_layers();
        let decision = self.decide_packet(
            now,
            stream,
            ext_seq,
            timestamp,
            payload_type,
            keyframe,
            layer,
        );
        (decision, self.change_from(before))
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_packet(
        &mut self,
        now: Instant,
        stream: usize,
        ext_seq: u64,
        timestamp: u32,
        payload_type: u8,
        keyframe: bool,
        layer: &PacketLayer,
    ) -> Decision {
        let out_pt = self
            .pt_map
            .get(payload_type as usize)
            .copied()
            .unwrap_or(NO_PT);
        if out_pt == NO_PT {
            if self.current == Some(stream) {
                self.seq.drop(ext_seq);
            }
            return Decision::Drop(DropReason::UnknownPayloadType);
        }
        // A pending switch to another stream leaves the current one flowing until the
        // target's keyframe arrives.
        let switching =
            self.current != Some(stream) || (self.need_keyframe && self.target == Some(stream));
        if switching {
            // A packet of a stream we do not forward now: switch to it if it is the target
            // and it can start there.
            if self.target != Some(stream) {
                return Decision::Drop(DropReason::OtherLayer);
            }
            if self.kind == MediaKind::Video && !keyframe {
                if self.current == Some(stream) {
                    self.seq.drop(ext_seq);
                }
                return Decision::Drop(DropReason::WaitingKeyframe);
            }
            self.seq.sync(ext_seq);
            let output_ts = match self.last_output {
                // Continue the output timeline: as much later as wall time has passed.
                Some((last_ts, at)) => {
                    let elapsed = now.saturating_duration_since(at).as_secs_f64();
                    let ticks = ((elapsed * self.clock_rate as f64) as u32).max(1);
                    last_ts.wrapping_add(ticks)
                }
                None => timestamp.wrapping_add(self.initial_ts_offset),
            };
            self.timestamp.sync(timestamp, output_ts);
            self.ts_offset = output_ts.wrapping_sub(timestamp);
            self.current = Some(stream);
            self.need_keyframe = false;
            self.switched_at_seq = None;
            // The stream starts here: every layer of the target from this keyframe on.
            self.layers.restart();
            let marker = matches!(
                self.layers.filter(timestamp, layer, keyframe),
                Filtered::Keep { marker: true }
            );
            let Some(out_seq) = self.seq.forward(ext_seq) else {
                return Decision::Drop(DropReason::TooOld);
            };
            self.switched_at_seq = Some(out_seq);
            self.outputs_since_switch = 1;
            let out_ts = self.timestamp.rewrite(timestamp);
            self.last_output = Some((out_ts, now));
            return Decision::Forward {
                seq: out_seq,
                timestamp: out_ts,
                payload_type: out_pt,
                marker,
            };
        }
        let Filtered::Keep { marker } = self.layers.filter(timestamp, layer, keyframe) else {
            // Dropped on purpose: the output has no gap for it.
            self.seq.drop(ext_seq);
            return Decision::Drop(DropReason::FilteredLayer);
        };
        match self.seq.forward(ext_seq) {
            Some(out_seq) => {
                if let Some(first) = self.switched_at_seq {
                    // Span of outputs since the switch (upstream gaps included), capped at the
                    // NACK history size, where it stays.
                    let span = u32::from(out_seq.wrapping_sub(first)) + 1;
                    self.outputs_since_switch =
                        self.outputs_since_switch.max(span).min(SEQ_HISTORY as u32);
                }
                let out_ts = self.timestamp.rewrite(timestamp);
                self.last_output = Some((out_ts, now));
                Decision::Forward {
                    seq: out_seq,
                    timestamp: out_ts,
                    payload_type: out_pt,
                    marker,
                }
            }
            None => Decision::Drop(DropReason::TooOld),
        }
    }

    /// Records that packet `ext_seq` of the current stream is skipped on purpose (paused),
    /// so the output has no gap for it.
    pub fn skip(&mut self, stream: usize, ext_seq: u64) {
        if self.current == Some(stream) {
            self.seq.drop(ext_seq);
        }
    }

    /// For a NACKed output sequence number: the input (stream, widened sequence number) that
    /// was sent under it, if it is still known and came from the current stream.
    pub fn input_for_output(&self, output_seq: u16) -> Option<(usize, u64)> {
        let stream = self.current?;
        if let Some(first) = self.switched_at_seq {
            // Outputs before the switch belong to the previous stream; once the NACK history
            // holds only outputs of the current stream there is nothing to rule out.
            let since = u32::from(output_seq.wrapping_sub(first));
            if self.outputs_since_switch < SEQ_HISTORY as u32 && since >= self.outputs_since_switch
            {
                return None;
            }
        }
        self.seq
            .input_for_output(output_seq)
            .map(|ext| (stream, ext))
    }

    /// The output timestamp of the last forwarded packet.
    pub fn last_output_timestamp(&self) -> Option<u32> {
        self.last_output.map(|(ts, _)| ts)
    }

    /// Output timestamp for an input timestamp of the current stream (retransmissions).
    pub fn output_timestamp(&self, input: u32) -> u32 {
        input.wrapping_add(self.ts_offset)
    }

    /// Whether `output_seq` is the first packet after the last (re)start or switch, where
    /// per-source numbering (VP8 PictureID) must be re-based.
    pub fn is_sync_point(&self, output_seq: u16) -> bool {
        self.switched_at_seq == Some(output_seq)
    }

    /// The output payload type for a producer payload type.
    pub fn output_payload_type(&self, input: u8) -> Option<u8> {
        self.pt_map
            .get(input as usize)
            .copied()
            .filter(|pt| *pt != NO_PT)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A packet without layer indices.
    const NO_LAYER: PacketLayer = PacketLayer {
        described: false,
        spatial: 0,
        temporal: 0,
        switch_up: false,
        end_of_layer_frame: false,
        inter_picture: false,
    };

    const VP8_IN: u8 = 96;
    const VP8_OUT: u8 = 101;
    const OPUS_IN: u8 = 111;
    const OPUS_OUT: u8 = 100;
    /// A payload type the consumers below have no mapping for.
    const UNMAPPED_PT: u8 = 97;
    /// First widened input sequence number of stream 0 (cycle 1, as `SeqExtender` yields).
    const BASE: u64 = 65_536 + 1_000;
    /// First widened input sequence number of stream 1 (unrelated to stream 0's).
    const BASE1: u64 = 65_536 + 40_000;

    fn pt_map(input: u8, output: u8) -> [u8; 128] {
        let mut map = [NO_PT; 128];
        map[usize::from(input)] = output;
        map
    }

    fn video(initial_seq: u16, initial_ts: u32) -> ConsumerForwarder {
        ConsumerForwarder::new(
            MediaKind::Video,
            pt_map(VP8_IN, VP8_OUT),
            90_000,
            initial_seq,
            initial_ts,
            SvcMode::None,
        )
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A forwarded VP8 packet without a layer change.
    fn fwd(seq: u16, timestamp: u32) -> (Decision, Option<LayerChange>) {
        (
            Decision::Forward {
                seq,
                timestamp,
                payload_type: VP8_OUT,
                marker: false,
            },
            None,
        )
    }

    /// A forwarded VP8 packet that starts forwarding `spatial`.
    fn switched(seq: u16, timestamp: u32, spatial: u8) -> (Decision, Option<LayerChange>) {
        (
            Decision::Forward {
                seq,
                timestamp,
                payload_type: VP8_OUT,
                marker: false,
            },
            Some(LayerChange {
                spatial: Some(spatial),
                temporal: Some(0),
            }),
        )
    }

    fn dropped(reason: DropReason) -> (Decision, Option<LayerChange>) {
        (Decision::Drop(reason), None)
    }

    #[test]
    fn audio_forwards_at_once_with_continuous_seq_and_rebased_timestamps() {
        let t0 = Instant::now();
        let initial_ts = 1_000;
        let mut f = ConsumerForwarder::new(
            MediaKind::Audio,
            pt_map(OPUS_IN, OPUS_OUT),
            48_000,
            500,
            initial_ts,
            SvcMode::None,
        );
        f.set_target(Some(0));
        assert!(!f.needs_keyframe());
        // Input timestamps close to the 32-bit wrap: the rebased output wraps as well.
        let ts0 = u32::MAX - 1_919;
        let opus = |seq: u16, timestamp: u32| Decision::Forward {
            seq,
            timestamp,
            payload_type: OPUS_OUT,
            marker: false,
        };
        assert_eq!(
            f.decide(t0, 0, BASE, ts0, OPUS_IN, false, &NO_LAYER),
            (
                opus(500, ts0.wrapping_add(initial_ts)),
                Some(LayerChange {
                    spatial: Some(0),
                    temporal: Some(0)
                })
            )
        );
        assert_eq!(f.current(), Some(0));
        let mut got = Vec::new();
        for i in 1..4u32 {
            let ts = ts0.wrapping_add(960 * i);
            got.push(f.decide(
                t0 + ms(20 * u64::from(i)),
                0,
                BASE + u64::from(i),
                ts,
                OPUS_IN,
                false,
                &NO_LAYER,
            ));
        }
        assert_eq!(
            got,
            [
                (opus(501, 40), None),
                (opus(502, initial_ts), None),
                (opus(503, 960 + initial_ts), None),
            ]
        );
        // Input 4 lost upstream: the gap stays so the receiver can NACK it.
        assert_eq!(
            f.decide(
                t0 + ms(100),
                0,
                BASE + 5,
                ts0.wrapping_add(4_800),
                OPUS_IN,
                false,
                &NO_LAYER
            ),
            (opus(505, 2_880 + initial_ts), None)
        );
    }

    #[test]
    fn video_waits_for_a_keyframe_then_forwards() {
        let t0 = Instant::now();
        let off = 0x1234_5678;
        let mut f = video(1_000, off);
        assert!(!f.needs_keyframe(), "no target yet: nothing to ask for");
        f.set_target(Some(0));
        assert!(f.needs_keyframe());
        for i in 0..3 {
            assert_eq!(
                f.decide(t0, 0, BASE + i, 3_000, VP8_IN, false, &NO_LAYER),
                dropped(DropReason::WaitingKeyframe)
            );
        }
        assert_eq!(f.current(), None);
        assert_eq!(
            f.decide(t0 + ms(40), 0, BASE + 3, 6_000, VP8_IN, true, &NO_LAYER),
            switched(1_000, 6_000 + off, 0)
        );
        assert!(!f.needs_keyframe());
        assert_eq!(f.current(), Some(0));
        assert_eq!(
            f.decide(t0 + ms(41), 0, BASE + 4, 6_000, VP8_IN, false, &NO_LAYER),
            fwd(1_001, 6_000 + off)
        );
        assert_eq!(
            f.decide(t0 + ms(73), 0, BASE + 5, 9_000, VP8_IN, false, &NO_LAYER),
            fwd(1_002, 9_000 + off)
        );
        // A reordered packet from before the keyframe cannot be placed any more.
        assert_eq!(
            f.decide(t0 + ms(74), 0, BASE + 2, 3_000, VP8_IN, false, &NO_LAYER),
            dropped(DropReason::TooOld)
        );
        // A later keyframe of the same stream changes nothing.
        assert_eq!(
            f.decide(t0 + ms(106), 0, BASE + 6, 12_000, VP8_IN, true, &NO_LAYER),
            fwd(1_003, 12_000 + off)
        );
    }

    #[test]
    fn unknown_payload_type_is_dropped_without_a_gap() {
        let t0 = Instant::now();
        let mut f = video(7, 0);
        f.set_target(Some(0));
        // Before anything is forwarded.
        assert_eq!(
            f.decide(t0, 0, BASE, 0, UNMAPPED_PT, true, &NO_LAYER),
            dropped(DropReason::UnknownPayloadType)
        );
        assert_eq!(
            f.decide(t0, 0, BASE + 1, 0, VP8_IN, true, &NO_LAYER),
            switched(7, 0, 0)
        );
        assert_eq!(
            f.decide(t0, 0, BASE + 2, 0, UNMAPPED_PT, false, &NO_LAYER),
            dropped(DropReason::UnknownPayloadType)
        );
        assert_eq!(
            f.decide(t0, 0, BASE + 3, 0, 127, false, &NO_LAYER),
            dropped(DropReason::UnknownPayloadType)
        );
        // Both were dropped on purpose: the next output follows on directly.
        assert_eq!(
            f.decide(t0, 0, BASE + 4, 0, VP8_IN, false, &NO_LAYER),
            fwd(8, 0)
        );
        assert_eq!(f.output_payload_type(VP8_IN), Some(VP8_OUT));
        assert_eq!(f.output_payload_type(UNMAPPED_PT), None);
        assert_eq!(f.output_payload_type(200), None);
    }

    #[test]
    fn packets_of_other_streams_are_dropped() {
        let t0 = Instant::now();
        let mut f = video(0, 0);
        f.set_target(Some(1));
        for stream in [0, 2] {
            assert_eq!(
                f.decide(t0, stream, BASE, 0, VP8_IN, true, &NO_LAYER),
                dropped(DropReason::OtherLayer)
            );
        }
        assert_eq!(
            f.decide(t0, 1, BASE1, 0, VP8_IN, true, &NO_LAYER),
            switched(0, 0, 1)
        );
        assert_eq!(
            f.decide(t0, 0, BASE + 1, 0, VP8_IN, true, &NO_LAYER),
            dropped(DropReason::OtherLayer)
        );
        assert_eq!(
            f.decide(t0, 1, BASE1 + 1, 0, VP8_IN, false, &NO_LAYER),
            fwd(1, 0)
        );
        assert_eq!(f.current(), Some(1));
    }

    #[test]
    fn switch_waits_for_the_target_keyframe_and_continues_seq_and_timestamp() {
        let t0 = Instant::now();
        let off = 50_000;
        let mut f = video(2_000, off);
        f.set_target(Some(0));
        assert_eq!(
            f.decide(t0, 0, BASE, 90_000, VP8_IN, true, &NO_LAYER),
            switched(2_000, 90_000 + off, 0)
        );
        assert_eq!(
            f.decide(t0, 0, BASE + 1, 90_000, VP8_IN, false, &NO_LAYER),
            fwd(2_001, 90_000 + off)
        );
        assert_eq!(
            f.decide(t0 + ms(33), 0, BASE + 2, 93_000, VP8_IN, false, &NO_LAYER),
            fwd(2_002, 93_000 + off)
        );
        f.set_target(Some(1));
        assert_eq!(f.target(), Some(1));
        assert!(f.needs_keyframe());
        assert_eq!(
            f.decide(t0 + ms(100), 1, BASE1, 3_000_000, VP8_IN, false, &NO_LAYER),
            dropped(DropReason::WaitingKeyframe)
        );
        assert_eq!(f.current(), Some(0));
        // The keyframe comes 250 ms after the last output: 22 500 ticks at 90 kHz later.
        let t1 = t0 + ms(283);
        let last_out = 93_000 + off;
        assert_eq!(
            f.decide(t1, 1, BASE1 + 1, 4_000_000, VP8_IN, true, &NO_LAYER),
            switched(2_003, last_out + 22_500, 1)
        );
        assert!(!f.needs_keyframe());
        assert_eq!(
            f.decide(
                t1 + ms(33),
                1,
                BASE1 + 2,
                4_003_000,
                VP8_IN,
                false,
                &NO_LAYER
            ),
            fwd(2_004, last_out + 25_500)
        );
        assert_eq!(
            f.output_timestamp(4_003_000),
            last_out + 25_500,
            "retransmissions use the new offset"
        );
        assert_eq!(
            f.decide(t1 + ms(34), 0, BASE + 3, 96_000, VP8_IN, true, &NO_LAYER),
            dropped(DropReason::OtherLayer)
        );
        // Switching back at the very instant of the last output still moves time on by
        // one tick, so two frames never share a timestamp.
        f.set_target(Some(0));
        assert_eq!(
            f.decide(t1 + ms(33), 0, BASE + 4, 99_000, VP8_IN, true, &NO_LAYER),
            switched(2_005, last_out + 25_501, 0)
        );
    }

    #[test]
    fn skipped_packets_during_pause_leave_no_gap_after_restart() {
        let t0 = Instant::now();
        let mut f = video(300, 0);
        f.set_target(Some(0));
        assert_eq!(
            f.decide(t0, 0, BASE, 9_000, VP8_IN, true, &NO_LAYER),
            switched(300, 9_000, 0)
        );
        assert_eq!(
            f.decide(t0 + ms(10), 0, BASE + 1, 9_000, VP8_IN, false, &NO_LAYER),
            fwd(301, 9_000)
        );
        // Pause, as the worker does it.
        assert_eq!(f.restart(), Some(LayerChange::NONE));
        f.set_target(None);
        assert!(!f.needs_keyframe());
        assert_eq!(f.current(), None);
        for i in 2..200 {
            f.skip(0, BASE + i);
        }
        assert_eq!(f.restart(), None, "nothing was forwarded any more");
        // Resume two seconds after the last output.
        f.set_target(Some(0));
        assert!(f.needs_keyframe());
        let t1 = t0 + ms(2_010);
        assert_eq!(
            f.decide(t1, 0, BASE + 200, 500_000, VP8_IN, false, &NO_LAYER),
            dropped(DropReason::WaitingKeyframe)
        );
        assert_eq!(
            f.decide(t1, 0, BASE + 201, 500_000, VP8_IN, true, &NO_LAYER),
            switched(302, 9_000 + 180_000, 0)
        );
        assert_eq!(
            f.decide(t1, 0, BASE + 202, 503_000, VP8_IN, false, &NO_LAYER),
            fwd(303, 9_000 + 183_000)
        );
    }

    #[test]
    fn input_for_output_maps_nacks_back_and_refuses_outputs_before_a_switch() {
        let t0 = Instant::now();
        let mut f = video(100, 0);
        assert_eq!(f.input_for_output(100), None, "nothing sent yet");
        f.set_target(Some(0));
        assert_eq!(
            f.decide(t0, 0, BASE, 0, VP8_IN, true, &NO_LAYER),
            switched(100, 0, 0)
        );
        assert_eq!(
            f.decide(t0, 0, BASE + 1, 0, VP8_IN, false, &NO_LAYER),
            fwd(101, 0)
        );
        // BASE + 2 lost upstream.
        assert_eq!(
            f.decide(t0, 0, BASE + 3, 0, VP8_IN, false, &NO_LAYER),
            fwd(103, 0)
        );
        assert_eq!(f.input_for_output(100), Some((0, BASE)));
        assert_eq!(f.input_for_output(101), Some((0, BASE + 1)));
        // The slot of the lost packet maps to it: served if the packet store gets it.
        assert_eq!(f.input_for_output(102), Some((0, BASE + 2)));
        assert_eq!(f.input_for_output(103), Some((0, BASE + 3)));
        assert_eq!(f.input_for_output(104), None);
        f.set_target(Some(1));
        assert_eq!(
            f.decide(t0, 1, BASE1, 0, VP8_IN, true, &NO_LAYER),
            switched(104, 1, 1)
        );
        assert_eq!(
            f.decide(t0, 1, BASE1 + 1, 0, VP8_IN, false, &NO_LAYER),
            fwd(105, 1)
        );
        assert_eq!(f.input_for_output(104), Some((1, BASE1)));
        assert_eq!(f.input_for_output(105), Some((1, BASE1 + 1)));
        // Sent from stream 0 under another timestamp offset: not served any more.
        for before in [100, 101, 103] {
            assert_eq!(f.input_for_output(before), None, "output {before}");
        }
    }

    #[test]
    fn output_sequence_wraps_around() {
        let t0 = Instant::now();
        let mut f = video(65_533, u32::MAX - 2_999);
        f.set_target(Some(0));
        // Inputs cross their own 16-bit wrap too (widened values are just larger).
        let base = 2 * 65_536 - 2;
        assert_eq!(
            f.decide(t0, 0, base, 0, VP8_IN, true, &NO_LAYER),
            switched(65_533, u32::MAX - 2_999, 0)
        );
        let got: Vec<_> = (1..6u32)
            .map(|i| {
                f.decide(
                    t0,
                    0,
                    base + u64::from(i),
                    3_000 * i,
                    VP8_IN,
                    false,
                    &NO_LAYER,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                fwd(65_534, 0),
                fwd(65_535, 3_000),
                fwd(0, 6_000),
                fwd(1, 9_000),
                fwd(2, 12_000),
            ]
        );
        assert_eq!(f.input_for_output(65_535), Some((0, base + 2)));
        assert_eq!(f.input_for_output(0), Some((0, base + 3)));
        // A switch right after the wrap: outputs before it, on both sides of the wrap,
        // are refused.
        f.set_target(Some(1));
        assert_eq!(
            f.decide(t0 + ms(100), 1, BASE1, 0, VP8_IN, true, &NO_LAYER),
            switched(3, 12_000 + 9_000, 1)
        );
        assert_eq!(f.input_for_output(3), Some((1, BASE1)));
        assert_eq!(f.input_for_output(0), None);
        assert_eq!(f.input_for_output(65_534), None);
    }

    #[test]
    fn current_layer_keeps_flowing_until_the_target_keyframe() {
        let t0 = Instant::now();
        let mut f = video(1_000, 0);
        f.set_target(Some(0));
        assert_eq!(
            f.decide(t0, 0, BASE, 0, VP8_IN, true, &NO_LAYER),
            switched(1_000, 0, 0)
        );
        f.set_target(Some(1));
        // Stream 1's keyframe is not there yet: stream 0 must go on (no freeze).
        assert_eq!(
            f.decide(t0, 0, BASE + 1, 0, VP8_IN, false, &NO_LAYER),
            fwd(1_001, 0)
        );
    }

    #[test]
    fn target_back_to_current_needs_no_keyframe() {
        let t0 = Instant::now();
        let mut f = video(1_000, 0);
        f.set_target(Some(0));
        assert_eq!(
            f.decide(t0, 0, BASE, 0, VP8_IN, true, &NO_LAYER),
            switched(1_000, 0, 0)
        );
        f.set_target(Some(1));
        f.set_target(Some(0));
        assert!(!f.needs_keyframe());
        assert_eq!(
            f.decide(t0, 0, BASE + 1, 0, VP8_IN, false, &NO_LAYER),
            fwd(1_001, 0)
        );
    }

    #[test]
    fn nacks_served_more_than_32768_outputs_after_the_last_switch() {
        let t0 = Instant::now();
        let mut f = video(0, 0);
        f.set_target(Some(0));
        assert_eq!(
            f.decide(t0, 0, BASE, 0, VP8_IN, true, &NO_LAYER),
            switched(0, 0, 0)
        );
        for i in 1..40_000u64 {
            f.decide(t0, 0, BASE + i, 0, VP8_IN, false, &NO_LAYER);
        }
        assert_eq!(f.input_for_output(39_999), Some((0, BASE + 39_999)));
    }
}
