//! A consumer: one outgoing RTP stream that forwards one of its producer's streams
//! (one simulcast layer at a time) to a receiving transport.
//!
//! The per-packet work is split in two: [`ConsumerForwarder::decide`] computes a plain
//! [`Decision`] (forward with these output values, or drop and why), and the worker applies
//! it as a header rewrite on the packet buffer.

use std::time::Instant;

use ferrosoup_proto::rtp_parameters::MediaKind;
use ferrosoup_rtc::rtcp::SendStats;
use ferrosoup_rtc::seq::{SeqRewriter, TimestampRewriter};

use crate::ids::{ConsumerId, ProducerId};

/// Why a packet was not forwarded to a consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The consumer or its producer is paused.
    Paused,
    /// The packet belongs to a layer this consumer does not forward now.
    OtherLayer,
    /// The consumer waits for a keyframe before it (re)starts forwarding video.
    WaitingKeyframe,
    /// The packet is older than the consumer's last sync point.
    TooOld,
    /// The packet's payload type has no counterpart in the consumer's parameters.
    UnknownPayloadType,
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
    },
    /// Do not send it.
    Drop(DropReason),
}

/// A switch of the forwarded layer, reported to the client as `consumerLayersChanged`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerChange {
    /// The newly forwarded spatial layer (`None`: nothing forwarded).
    pub spatial: Option<u8>,
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
    /// Random offset of the output timeline, applied at the first sync.
    initial_ts_offset: u32,
    /// Current input → output timestamp offset (as set on the rewriter at the last sync).
    ts_offset: u32,
}

/// Marks a payload type the consumer cannot receive.
pub const NO_PT: u8 = 0xff;

impl ConsumerForwarder {
    /// A forwarder starting at random output sequence number and timestamp.
    pub fn new(kind: MediaKind, pt_map: [u8; 128], clock_rate: u32, initial_seq: u16, initial_ts: u32) -> Self {
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
            initial_ts_offset: initial_ts,
            ts_offset: initial_ts,
        }
    }

    /// Sets the stream the consumer should forward; the switch happens on its next keyframe
    /// (at once for audio).
    pub fn set_target(&mut self, target: Option<usize>) {
        if self.target != target {
            self.target = target;
            if self.kind == MediaKind::Video && target.is_some() && target != self.current {
                self.need_keyframe = true;
            }
        }
    }

    /// The stream the consumer wants.
    pub fn target(&self) -> Option<usize> {
        self.target
    }

    /// The stream currently forwarded.
    pub fn current(&self) -> Option<usize> {
        self.current
    }

    /// True while the consumer waits for a keyframe (the worker asks the producer for one).
    pub fn needs_keyframe(&self) -> bool {
        self.need_keyframe && self.target.is_some()
    }

    /// Forgets the current stream (after a pause): the next packet re-syncs, video on a
    /// keyframe.
    pub fn restart(&mut self) -> Option<LayerChange> {
        self.need_keyframe = self.kind == MediaKind::Video;
        self.current.take().map(|_| LayerChange { spatial: None })
    }

    /// Decides what to do with packet `ext_seq` (widened input sequence number) of producer
    /// stream `stream`.
    pub fn decide(
        &mut self,
        now: Instant,
        stream: usize,
        ext_seq: u64,
        timestamp: u32,
        payload_type: u8,
        keyframe: bool,
    ) -> (Decision, Option<LayerChange>) {
        let out_pt = self.pt_map.get(payload_type as usize).copied().unwrap_or(NO_PT);
        if out_pt == NO_PT {
            if self.current == Some(stream) {
                self.seq.drop(ext_seq);
            }
            return (Decision::Drop(DropReason::UnknownPayloadType), None);
        }
        let mut change = None;
        if self.current != Some(stream) || self.need_keyframe {
            // A packet of a stream we do not forward now: switch to it if it is the target
            // and it can start there.
            if self.target != Some(stream) {
                return (Decision::Drop(DropReason::OtherLayer), None);
            }
            if self.kind == MediaKind::Video && !keyframe {
                if self.current == Some(stream) {
                    self.seq.drop(ext_seq);
                }
                return (Decision::Drop(DropReason::WaitingKeyframe), None);
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
            if self.current != Some(stream) {
                change = Some(LayerChange { spatial: u8::try_from(stream).ok() });
            }
            self.current = Some(stream);
            self.need_keyframe = false;
            self.switched_at_seq = None;
            let Some(out_seq) = self.seq.forward(ext_seq) else {
                return (Decision::Drop(DropReason::TooOld), change);
            };
            self.switched_at_seq = Some(out_seq);
            let out_ts = self.timestamp.rewrite(timestamp);
            self.last_output = Some((out_ts, now));
            return (Decision::Forward { seq: out_seq, timestamp: out_ts, payload_type: out_pt }, change);
        }
        match self.seq.forward(ext_seq) {
            Some(out_seq) => {
                let out_ts = self.timestamp.rewrite(timestamp);
                self.last_output = Some((out_ts, now));
                (Decision::Forward { seq: out_seq, timestamp: out_ts, payload_type: out_pt }, change)
            }
            None => (Decision::Drop(DropReason::TooOld), change),
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
            // Outputs before the switch belong to the previous stream.
            if output_seq.wrapping_sub(first) >= 0x8000 {
                return None;
            }
        }
        self.seq.input_for_output(output_seq).map(|ext| (stream, ext))
    }

    /// Output timestamp for an input timestamp of the current stream (retransmissions).
    pub fn output_timestamp(&self, input: u32) -> u32 {
        input.wrapping_add(self.ts_offset)
    }

    /// The output payload type for a producer payload type.
    pub fn output_payload_type(&self, input: u8) -> Option<u8> {
        self.pt_map.get(input as usize).copied().filter(|pt| *pt != NO_PT)
    }
}

/// A consumer as the worker keeps it.
pub struct Consumer {
    /// Public id.
    pub id: ConsumerId,
    /// Public id of the producer it consumes.
    pub producer_id: ProducerId,
    /// Slab key of that producer (indexed, not owned).
    pub producer: usize,
    /// Slab key of the transport it sends on (its owner).
    pub transport: usize,
    /// Audio or video.
    pub kind: MediaKind,
    /// `simple`, `simulcast` or `svc`.
    pub consumer_type: &'static str,
    /// Paused by its client.
    pub paused: bool,
    /// Paused because its producer is.
    pub producer_paused: bool,
    /// Outgoing SSRC.
    pub ssrc: u32,
    /// Outgoing RTX SSRC and payload type, when the client negotiated RTX.
    pub rtx: Option<(u32, u8)>,
    /// Next RTX sequence number.
    pub rtx_seq: u16,
    /// Producer header extension id → consumer id (0: removed).
    pub ext_map: [u8; 256],
    /// Codec clock rate.
    pub clock_rate: u32,
    /// Layer selection and rewriting.
    pub forwarder: ConsumerForwarder,
    /// Preferred spatial layer (`None`: the highest).
    pub preferred_spatial: Option<u8>,
    /// Preferred temporal layer (kept for stats; temporal filtering comes with SVC).
    pub preferred_temporal: Option<u8>,
    /// Bandwidth priority 1..255.
    pub priority: u8,
    /// Counters for Sender Reports and stats.
    pub send_stats: SendStats,
    /// Round-trip time from the receiver's reports, in ms.
    pub rtt_ms: f64,
    /// Fraction lost reported by the receiver (0..1).
    pub fraction_lost: f64,
    /// Packets retransmitted on NACK.
    pub retransmitted: u64,
    /// NACKed packets the consumer could not serve.
    pub nack_misses: u64,
    /// Keyframe requests (PLI/FIR) received from the client.
    pub keyframe_requests: u64,
    /// Last score sent to the client.
    pub score: u8,
    /// When the consumer was created.
    pub created: Instant,
}

impl Consumer {
    /// True when packets may flow to the client.
    pub fn is_active(&self) -> bool {
        !self.paused && !self.producer_paused
    }
}
