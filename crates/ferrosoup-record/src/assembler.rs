//! RTP depacketization for recording: a reorder window over extended sequence numbers,
//! then codec frames. Opus packets are frames as they are; VP8 frames are the payloads of
//! one timestamp after their payload descriptors (RFC 7741), from a packet with the S bit
//! (partition 0) to the one with the marker bit. A frame with a lost packet is dropped,
//! and after any loss video waits for the next keyframe (its later frames reference what
//! was lost) and asks for one ([`FrameAssembler::take_keyframe_request`]).
//!
//! All buffers are allocated in [`FrameAssembler::new`]; pushing a packet allocates nothing
//! (a frame larger than the preallocated frame buffer grows it once).

use std::io;

use ferrosoup_rtc::seq::{SeqExtender, TimestampExtender};

/// Packets kept for reordering (a power of two; the window of a ring buffer).
const WINDOW: u64 = 512;
/// A missing packet is declared lost when this many later ones have arrived.
const REORDER_PACKETS: u64 = 64;
/// Largest RTP payload kept (a UDP datagram on Ethernet is smaller).
const MAX_PAYLOAD: usize = 1500;
/// Preallocated frame buffer (a 1080p VP8 keyframe fits).
const FRAME_CAPACITY: usize = 1 << 20;

/// What a recorded stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCodec {
    /// Opus audio: one packet, one frame.
    Opus,
    /// VP8 video (RFC 7741 payload descriptor).
    Vp8,
    /// VP9 video (RFC 9628 payload descriptor). Of an SVC stream only the lowest spatial
    /// layer is kept: its frames decode alone (K-SVC, L1Tx), the layers above need it.
    Vp9,
}

struct Slot {
    seq: u64,
    filled: bool,
    ts: u64,
    marker: bool,
    payload: Vec<u8>,
}

/// Counters of what the assembler dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssemblerStats {
    /// Packets that never arrived within the reorder window.
    pub lost_packets: u64,
    /// Packets that arrived too late or twice.
    pub late_packets: u64,
    /// Frames dropped: incomplete, or waiting for a keyframe.
    pub dropped_frames: u64,
    /// Frames handed out.
    pub frames: u64,
}

/// Turns one stream's RTP packets into codec frames in sequence order.
pub struct FrameAssembler {
    codec: StreamCodec,
    slots: Vec<Slot>,
    seqs: SeqExtender,
    timestamps: TimestampExtender,
    /// Next sequence number to hand on; `None` before the first packet.
    next: Option<u64>,
    highest: u64,
    frame: Vec<u8>,
    frame_ts: u64,
    /// A frame is being assembled and none of its packets was lost so far.
    in_frame: bool,
    frame_keyframe: bool,
    waiting_keyframe: bool,
    keyframe_request: bool,
    stats: AssemblerStats,
}

impl FrameAssembler {
    /// An assembler for `codec`; video starts waiting for (and asking for) a keyframe.
    pub fn new(codec: StreamCodec) -> Self {
        let video = codec != StreamCodec::Opus;
        Self {
            codec,
            slots: (0..WINDOW)
                .map(|_| Slot {
                    seq: 0,
                    filled: false,
                    ts: 0,
                    marker: false,
                    payload: Vec::with_capacity(MAX_PAYLOAD),
                })
                .collect(),
            seqs: SeqExtender::new(),
            timestamps: TimestampExtender::new(),
            next: None,
            highest: 0,
            frame: Vec::with_capacity(if video { FRAME_CAPACITY } else { 0 }),
            frame_ts: 0,
            in_frame: false,
            frame_keyframe: false,
            waiting_keyframe: video,
            keyframe_request: video,
            stats: AssemblerStats::default(),
        }
    }

    /// What was dropped and handed out so far.
    pub fn stats(&self) -> AssemblerStats {
        self.stats
    }

    /// True once after video lost something (or at start): send a PLI.
    pub fn take_keyframe_request(&mut self) -> bool {
        std::mem::take(&mut self.keyframe_request)
    }

    /// Video is waiting for a keyframe (nothing is written until one arrives).
    pub fn waiting_for_keyframe(&self) -> bool {
        self.waiting_keyframe
    }

    /// Takes one RTP packet (sequence number, timestamp, marker bit, payload); complete
    /// frames go to `out` as (extended RTP timestamp, frame bytes).
    pub fn push(
        &mut self,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: &[u8],
        out: &mut impl FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        if payload.is_empty() || payload.len() > MAX_PAYLOAD {
            return Ok(());
        }
        let seq = self.seqs.extend(seq);
        let ts = self.timestamps.extend(ts);
        let next = *self.next.get_or_insert(seq);
        if seq < next {
            self.stats.late_packets += 1;
            return Ok(());
        }
        // Far ahead: give up on what the window can no longer hold.
        while seq >= self.next.unwrap_or(seq) + WINDOW {
            self.release_next(out)?;
        }
        let slot = &mut self.slots[(seq % WINDOW) as usize];
        if slot.filled && slot.seq == seq {
            self.stats.late_packets += 1;
            return Ok(());
        }
        slot.seq = seq;
        slot.filled = true;
        slot.ts = ts;
        slot.marker = marker;
        slot.payload.clear();
        slot.payload.extend_from_slice(payload);
        self.highest = self.highest.max(seq);
        self.drain(out)
    }

    /// Hands on everything still held, in order, as if the stream ended.
    pub fn finish(&mut self, out: &mut impl FnMut(u64, &[u8]) -> io::Result<()>) -> io::Result<()> {
        while self.next.is_some_and(|n| n <= self.highest) {
            self.release_next(out)?;
        }
        Ok(())
    }

    /// Hands on the in-order packets; skips a missing one when enough later ones came.
    fn drain(&mut self, out: &mut impl FnMut(u64, &[u8]) -> io::Result<()>) -> io::Result<()> {
        while let Some(next) = self.next {
            let ready = self.slot_of(next).is_some();
            if !ready && self.highest < next + REORDER_PACKETS {
                break;
            }
            self.release_next(out)?;
        }
        Ok(())
    }

    fn slot_of(&self, seq: u64) -> Option<usize> {
        let i = (seq % WINDOW) as usize;
        (self.slots[i].filled && self.slots[i].seq == seq).then_some(i)
    }

    /// Processes packet `next` (or its loss) and moves on.
    fn release_next(
        &mut self,
        out: &mut impl FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let Some(next) = self.next else {
            return Ok(());
        };
        self.next = Some(next + 1);
        match self.slot_of(next) {
            Some(i) => {
                self.slots[i].filled = false;
                self.process(i, out)
            }
            None => {
                self.stats.lost_packets += 1;
                self.on_loss();
                Ok(())
            }
        }
    }

    fn on_loss(&mut self) {
        if self.codec == StreamCodec::Opus {
            return;
        }
        if self.in_frame {
            self.in_frame = false;
            self.stats.dropped_frames += 1;
        }
        if !self.waiting_keyframe {
            self.waiting_keyframe = true;
            self.keyframe_request = true;
        }
    }

    fn process(
        &mut self,
        i: usize,
        out: &mut impl FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let slot = &self.slots[i];
        match self.codec {
            StreamCodec::Opus => {
                self.stats.frames += 1;
                out(slot.ts, &slot.payload)
            }
            StreamCodec::Vp9 => {
                let Some((start, end, offset)) = vp9_descriptor(&slot.payload) else {
                    return Ok(());
                };
                let keyframe = start
                    && ferrosoup_rtc::vp9::parse_descriptor(&slot.payload)
                        .is_some_and(|d| !d.inter_picture);
                self.frame_part(i, start, end, offset, keyframe, out)
            }
            StreamCodec::Vp8 => {
                let Some((start, offset)) = vp8_descriptor(&slot.payload) else {
                    return Ok(());
                };
                let keyframe = start && slot.payload.get(offset).is_some_and(|b| b & 0x01 == 0);
                self.frame_part(i, start, slot.marker, offset, keyframe, out)
            }
        }
    }

    /// Adds the bitstream of slot `i` (from `offset`) to the frame being assembled: `start`
    /// begins one (a `keyframe` or not), `end` completes it, which then goes to `out`
    /// unless a keyframe is awaited.
    fn frame_part(
        &mut self,
        i: usize,
        start: bool,
        end: bool,
        offset: usize,
        keyframe: bool,
        out: &mut impl FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let slot = &self.slots[i];
        if self.in_frame && slot.ts != self.frame_ts {
            // The previous frame never saw its end.
            self.in_frame = false;
            self.stats.dropped_frames += 1;
        }
        if start {
            self.frame.clear();
            self.frame_ts = slot.ts;
            self.in_frame = true;
            self.frame_keyframe = keyframe;
        } else if !self.in_frame {
            return Ok(());
        }
        self.frame.extend_from_slice(&slot.payload[offset..]);
        if !end {
            return Ok(());
        }
        self.in_frame = false;
        if self.waiting_keyframe && !self.frame_keyframe {
            self.stats.dropped_frames += 1;
            return Ok(());
        }
        self.waiting_keyframe = false;
        self.stats.frames += 1;
        out(self.frame_ts, &self.frame)
    }
}

/// Whether a VP9 payload begins and ends a frame of the lowest spatial layer, and the
/// length of its payload descriptor; `None` for other layers and truncated payloads.
fn vp9_descriptor(payload: &[u8]) -> Option<(bool, bool, usize)> {
    let d = ferrosoup_rtc::vp9::parse_descriptor(payload)?;
    if d.layers.is_some_and(|l| l.spatial > 0) {
        return None;
    }
    Some((d.begin, d.end, ferrosoup_rtc::vp9::descriptor_len(payload)?))
}

/// Whether a VP8 payload starts a frame (S bit, partition 0) and the length of its payload
/// descriptor (RFC 7741 §4.2); `None` when it is truncated.
fn vp8_descriptor(payload: &[u8]) -> Option<(bool, usize)> {
    let d = ferrosoup_rtc::vp8::parse_descriptor(payload)?;
    let first = payload[0];
    let mut len = 1;
    if first & 0x80 != 0 {
        let ext = *payload.get(1)?;
        len = 2;
        if ext & 0x80 != 0 {
            len += if payload.get(len)? & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            len += 1;
        }
        if ext & 0x30 != 0 {
            len += 1;
        }
    }
    (len < payload.len()).then_some((d.start_of_frame, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Frames = Vec<(u64, Vec<u8>)>;

    fn run(assembler: &mut FrameAssembler, packets: &[(u16, u32, bool, &[u8])]) -> Frames {
        let mut frames = Vec::new();
        for &(seq, ts, marker, payload) in packets {
            assembler
                .push(seq, ts, marker, payload, &mut |ts, f| {
                    frames.push((ts, f.to_vec()));
                    Ok(())
                })
                .expect("push");
        }
        assembler
            .finish(&mut |ts, f| {
                frames.push((ts, f.to_vec()));
                Ok(())
            })
            .expect("finish");
        frames
    }

    const TS0: u64 = 1 << 32;

    #[test]
    fn vp8_frames_are_assembled_across_reordering_and_start_with_a_keyframe() {
        let mut a = FrameAssembler::new(StreamCodec::Vp8);
        assert!(a.take_keyframe_request(), "asks for a keyframe at start");
        let frames = run(
            &mut a,
            &[
                // An interframe before any keyframe: dropped.
                (10, 0, true, &[0x10, 0x01, 0xaa]),
                // Keyframe in two packets, arriving out of order.
                (12, 3000, true, &[0x00, 0xbb]),
                (11, 3000, false, &[0x10, 0x00, 0x9d]),
                // Extended descriptor (X, I with 15-bit PictureID): 4 bytes.
                (13, 6000, true, &[0x90, 0x80, 0x81, 0x02, 0x01, 0xcc]),
            ],
        );
        assert_eq!(
            frames,
            vec![
                (TS0 + 3000, vec![0x00, 0x9d, 0xbb]),
                (TS0 + 6000, vec![0x01, 0xcc])
            ]
        );
        assert_eq!(a.stats().dropped_frames, 1);
        assert!(!a.take_keyframe_request());
    }

    #[test]
    fn vp9_keeps_the_lowest_spatial_layer_frames_from_begin_to_end() {
        let mut a = FrameAssembler::new(StreamCodec::Vp9);
        let frames = run(
            &mut a,
            &[
                // An inter picture (P) before any keyframe: dropped.
                (20, 0, true, &[0x4c, 0x01]),
                // Keyframe of spatial layer 0 in two packets (L, non-flexible: layer
                // byte and TL0PICIDX), then spatial layer 1 of the same picture: skipped.
                (21, 3000, false, &[0x28, 0x00, 7, 0xaa]),
                (22, 3000, false, &[0x24, 0x00, 7, 0xbb]),
                (23, 3000, true, &[0x2c, 0x02, 7, 0xcc]),
                // Next picture, predicted, layer 0 in one packet.
                (24, 6000, false, &[0x6c, 0x00, 8, 0xdd]),
                (25, 6000, true, &[0x6c, 0x02, 8, 0xee]),
            ],
        );
        assert_eq!(
            frames,
            vec![(TS0 + 3000, vec![0xaa, 0xbb]), (TS0 + 6000, vec![0xdd])]
        );
        assert_eq!(a.stats().dropped_frames, 1);
    }

    #[test]
    fn a_lost_packet_drops_its_frame_and_waits_for_the_next_keyframe() {
        let mut a = FrameAssembler::new(StreamCodec::Vp8);
        let mut packets: Vec<(u16, u32, bool, &[u8])> = vec![(100, 0, true, &[0x10, 0x00, 1])];
        // Frame at 3000 loses its second packet (101 arrives, 102 never does).
        packets.push((101, 3000, false, &[0x10, 0x01, 2]));
        // Enough later interframes for the gap to be declared lost.
        for i in 0..REORDER_PACKETS as u16 {
            packets.push((103 + i, 6000 + u32::from(i) * 3000, true, &[0x10, 0x01, 3]));
        }
        let last = 103 + REORDER_PACKETS as u16;
        packets.push((last, 900_000, true, &[0x10, 0x00, 4])); // keyframe
        let frames = run(&mut a, &packets);
        assert_eq!(
            frames.len(),
            2,
            "the first keyframe and the one after the loss"
        );
        assert_eq!(frames[1].1, vec![0x00, 4]);
        assert_eq!(a.stats().lost_packets, 1);
        assert!(a.take_keyframe_request(), "the loss asked for a keyframe");
    }

    #[test]
    fn opus_packets_pass_in_order_with_wrapping_sequence_numbers() {
        let mut a = FrameAssembler::new(StreamCodec::Opus);
        assert!(!a.take_keyframe_request());
        let frames = run(
            &mut a,
            &[
                (65534, 0, false, &[1]),
                (0, 1920, false, &[3]),
                (65535, 960, false, &[2]),
                (0, 1920, false, &[3]),
            ],
        );
        let payloads: Vec<u8> = frames.iter().map(|f| f.1[0]).collect();
        assert_eq!(payloads, vec![1, 2, 3]);
        assert_eq!(a.stats().late_packets, 1, "the duplicate");
    }
}
