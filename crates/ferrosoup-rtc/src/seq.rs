//! Sequence number and timestamp widening (16/32 → 64 bits, once at ingress) and the
//! per-consumer rewriting of sequence numbers and timestamps.
//!
//! Inside the SFU every sequence number is an extended `u64`; only the wire carries 16-bit
//! values. [`SeqRewriter`] maps a producer stream's extended input onto one consumer's
//! continuous output; [`TimestampRewriter`] keeps a consumer's timestamps continuous across
//! simulcast source switches.

/// Value of the first extended number's cycle: the first packet lands in cycle 1, so a
/// packet reordered before it still gets a (smaller) value instead of underflowing.
const FIRST_CYCLE: u64 = 1;

/// A wire counter that wraps: RTP sequence numbers (16 bits) and timestamps (32 bits).
pub trait Wrapping: Copy {
    /// Width in bits.
    const BITS: u32;
    /// The value as `u64`.
    fn widen(self) -> u64;
    /// `self - other` on the wire, as a signed distance within half the range.
    fn distance(self, other: u64) -> i64;
}

impl Wrapping for u16 {
    const BITS: u32 = 16;
    fn widen(self) -> u64 {
        u64::from(self)
    }
    fn distance(self, other: u64) -> i64 {
        i64::from(self.wrapping_sub(other as u16) as i16)
    }
}

impl Wrapping for u32 {
    const BITS: u32 = 32;
    fn widen(self) -> u64 {
        u64::from(self)
    }
    fn distance(self, other: u64) -> i64 {
        i64::from(self.wrapping_sub(other as u32) as i32)
    }
}

/// Widens a wrapping wire counter to monotonic `u64` values.
///
/// Each value is placed within half the range of the highest one seen so far, which
/// handles wraparound and reordering. The first value `v` maps to `2^BITS + v`.
#[derive(Debug, Clone)]
pub struct Extender<T> {
    highest: Option<u64>,
    wire: std::marker::PhantomData<T>,
}

impl<T> Default for Extender<T> {
    fn default() -> Self {
        Self {
            highest: None,
            wire: std::marker::PhantomData,
        }
    }
}

impl<T: Wrapping> Extender<T> {
    /// A new extender that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Extended value of `v`.
    pub fn extend(&mut self, v: T) -> u64 {
        let ext = match self.highest {
            None => (FIRST_CYCLE << T::BITS) + v.widen(),
            Some(h) => h.saturating_add_signed(v.distance(h)),
        };
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        ext
    }

    /// Highest extended value returned so far.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }
}

/// Widens 16-bit RTP sequence numbers (the first maps to `65536 + seq`).
pub type SeqExtender = Extender<u16>;
/// Widens 32-bit RTP timestamps (the first maps to `2^32 + ts`).
pub type TimestampExtender = Extender<u32>;

/// How far back (in outputs) a NACKed sequence number is mapped to its input: as many
/// packets as a producer stream's packet store holds, an older one cannot be served anyway.
pub const SEQ_HISTORY: usize = 512;
/// Number of offset changes (drops and syncs) remembered for reordered packets and NACKs.
const OFFSET_CHANGES: usize = 64;

/// From `input` on (until the next change), `output = input + delta` (wrapping).
#[derive(Debug, Clone, Copy, Default)]
struct OffsetChange {
    input: u64,
    delta: u64,
}

impl OffsetChange {
    /// The output of the change's first input.
    fn first_output(&self) -> u64 {
        self.input.wrapping_add(self.delta)
    }
}

/// Output sequence numbers for one consumer stream.
///
/// Outputs are continuous: dropping the newest input packets (paused consumer, layer not
/// selected) closes the gap for the next forwarded one, while a real loss in the input
/// stays a gap in the output so the consumer can NACK it. [`SeqRewriter::sync`] re-bases
/// on a source switch. Reordered packets keep their relative position.
///
/// The mapping is piecewise `output = input + delta`, one piece per offset change, so a
/// NACKed output is mapped back by the same pieces: no per-packet history is written. The
/// newest change is kept inline, so forwarding in order touches nothing but this struct.
/// All storage is allocated in [`SeqRewriter::new`].
#[derive(Debug, Clone)]
pub struct SeqRewriter {
    /// Output for the very first packet.
    initial_output: u16,
    /// Whether any sync point (explicit or implicit on the first forward) exists.
    started: bool,
    /// Inputs below this are refused.
    sync_input: u64,
    /// Highest input forwarded or dropped since the sync point.
    max_input: Option<u64>,
    /// Highest extended output produced.
    max_output: Option<u64>,
    /// Copy of the newest change (valid when `changes_len > 0`).
    newest: OffsetChange,
    /// Ring of offset changes since the sync point, the newest at `changes_head - 1`.
    changes: Box<[OffsetChange]>,
    changes_head: usize,
    changes_len: usize,
}

impl SeqRewriter {
    /// A rewriter whose first forwarded packet gets `initial_output`.
    pub fn new(initial_output: u16) -> Self {
        Self {
            initial_output,
            started: false,
            sync_input: 0,
            max_input: None,
            max_output: None,
            newest: OffsetChange::default(),
            changes: vec![OffsetChange::default(); OFFSET_CHANGES].into_boxed_slice(),
            changes_head: 0,
            changes_len: 0,
        }
    }

    /// Sets the output of the first forwarded packet, if nothing was forwarded yet.
    pub fn start_at(&mut self, initial_output: u16) {
        if !self.started {
            self.initial_output = initial_output;
        }
    }

    /// Whether a packet was forwarded (or a sync point set) yet.
    pub fn is_started(&self) -> bool {
        self.started
    }

    fn push_change(&mut self, change: OffsetChange) {
        self.changes[self.changes_head] = change;
        self.changes_head = (self.changes_head + 1) % OFFSET_CHANGES;
        self.changes_len = (self.changes_len + 1).min(OFFSET_CHANGES);
        self.newest = change;
    }

    /// The `i`-th newest change (0: the newest); `i < changes_len`.
    fn change(&self, i: usize) -> OffsetChange {
        self.changes[(self.changes_head + OFFSET_CHANGES - 1 - i) % OFFSET_CHANGES]
    }

    /// Delta applying to `input`: the newest change at or below it. `None` if `input`
    /// is older than all remembered changes or was itself dropped: the drops that made a
    /// change are the inputs right before it, as many as its delta went down by.
    fn delta_for(&self, input: u64) -> Option<u64> {
        if self.changes_len == 0 {
            return None;
        }
        // In-order packets: the newest change applies and no newer one can rule it out.
        if input >= self.newest.input {
            return Some(self.newest.delta);
        }
        let mut newer = self.newest;
        for i in 1..self.changes_len {
            let c = self.change(i);
            if c.input <= input {
                let dropped = c.delta.wrapping_sub(newer.delta);
                if input >= newer.input.saturating_sub(dropped) {
                    return None;
                }
                return Some(c.delta);
            }
            newer = c;
        }
        None
    }

    /// Output sequence number for a forwarded input packet, or `None` if the packet is
    /// older than the last sync point, was dropped before (its output slot was given to
    /// the next packet), or is too old to place.
    pub fn forward(&mut self, input_ext: u64) -> Option<u16> {
        if !self.started {
            self.sync(input_ext);
        }
        if input_ext < self.sync_input {
            return None;
        }
        let delta = self.delta_for(input_ext)?;
        let output = input_ext.wrapping_add(delta);
        self.max_input = Some(self.max_input.map_or(input_ext, |m| m.max(input_ext)));
        self.max_output = Some(self.max_output.map_or(output, |m| m.max(output)));
        Some(output as u16)
    }

    /// Records that `input_ext` is intentionally not forwarded. If it is the newest input,
    /// the packets after it move down by one so the output has no gap; an older (reordered)
    /// input's output slot is already taken by position and stays a gap.
    pub fn drop(&mut self, input_ext: u64) {
        if !self.started || input_ext < self.sync_input {
            return;
        }
        if self.max_input.is_some_and(|m| input_ext <= m) {
            return;
        }
        self.max_input = Some(input_ext);
        if self.changes_len == 0 {
            return;
        }
        let current = self.newest;
        let moved = OffsetChange {
            input: input_ext + 1,
            delta: current.delta.wrapping_sub(1),
        };
        if current.input == input_ext {
            // Contiguous with the previous change (consecutive drops, or a drop right at
            // the sync point): move that change forward instead of adding one.
            let i = (self.changes_head + OFFSET_CHANGES - 1) % OFFSET_CHANGES;
            self.changes[i] = moved;
            self.newest = moved;
        } else {
            self.push_change(moved);
        }
    }

    /// Re-bases the stream: the next forwarded packet with input `input_ext` gets the
    /// output right after the highest output so far (`initial_output` if none), and inputs
    /// below `input_ext` are refused from now on. Used on layer and source switches.
    pub fn sync(&mut self, input_ext: u64) {
        let next_output = match self.max_output {
            Some(m) => m + 1,
            // Cycle 1 keeps the extended output arithmetic away from zero.
            None => (1 << 16) + u64::from(self.initial_output),
        };
        self.started = true;
        self.sync_input = input_ext;
        // Nothing at or above the sync point has been seen yet.
        self.max_input = None;
        self.changes_len = 0;
        self.push_change(OffsetChange {
            input: input_ext,
            delta: next_output.wrapping_sub(input_ext),
        });
    }

    /// The input extended sequence number that holds output slot `output` since the last
    /// sync, if it is among the last [`SEQ_HISTORY`] outputs. Used to answer NACKs from the
    /// producer's packet store, which has the packet only if it arrived: a slot whose input
    /// was lost upstream maps to that lost input.
    pub fn input_for_output(&self, output: u16) -> Option<u64> {
        let max = self.max_output?;
        let back = u64::from((max as u16).wrapping_sub(output));
        if back >= SEQ_HISTORY as u64 {
            return None;
        }
        let output_ext = max.checked_sub(back)?;
        // The newest piece starting at or below the output holds it.
        (0..self.changes_len)
            .map(|i| self.change(i))
            .find(|c| c.first_output() <= output_ext)
            .map(|c| output_ext.wrapping_sub(c.delta))
            .filter(|&input| input >= self.sync_input)
    }
}

/// Timestamp offset for one consumer stream that may switch sources (simulcast layers
/// have unrelated RTP timestamps): `output = input + offset` (wrapping).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimestampRewriter {
    offset: u32,
    last_output: Option<u32>,
}

impl TimestampRewriter {
    /// A rewriter with offset 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Output timestamp for `input`.
    pub fn rewrite(&mut self, input: u32) -> u32 {
        let out = input.wrapping_add(self.offset);
        self.last_output = Some(out);
        out
    }

    /// Re-bases so that `input` maps to `output_target` (e.g. the last output plus the
    /// wall-clock time since it, in clock-rate units).
    pub fn sync(&mut self, input: u32, output_target: u32) {
        self.offset = output_target.wrapping_sub(input);
    }

    /// Last timestamp returned by [`TimestampRewriter::rewrite`].
    pub fn last_output(&self) -> Option<u32> {
        self.last_output
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_extender_first_value_and_forward_run() {
        let mut e = SeqExtender::new();
        assert_eq!(e.highest(), None);
        assert_eq!(e.extend(100), 65536 + 100);
        assert_eq!(e.extend(101), 65536 + 101);
        assert_eq!(e.highest(), Some(65536 + 101));
    }

    #[test]
    fn seq_extender_wraps_from_every_start() {
        // Walk 3 full cycles from several starting points, including around the wrap.
        for start in [0u16, 1, 32767, 32768, 65534, 65535] {
            let mut e = SeqExtender::new();
            let first = e.extend(start);
            for i in 1..3 * 65536u64 {
                let seq = start.wrapping_add(i as u16);
                assert_eq!(e.extend(seq), first + i, "start {start} i {i}");
            }
        }
    }

    #[test]
    fn seq_extender_reordering_across_wrap() {
        let mut e = SeqExtender::new();
        let base = e.extend(65534);
        assert_eq!(e.extend(0), base + 2);
        assert_eq!(e.extend(65535), base + 1); // late packet from before the wrap
        assert_eq!(e.extend(1), base + 3);
        assert_eq!(e.extend(65533), base - 1); // older than the first packet
        assert_eq!(e.highest(), Some(base + 3));
        // Maximum forward jump (32767) and maximum backward (-32768) around the highest.
        let h = base + 3;
        assert_eq!(e.extend(1u16.wrapping_add(32767)), h + 32767);
        assert_eq!(
            e.extend(1u16.wrapping_add(32767).wrapping_sub(32768)),
            h - 1
        );
        assert_eq!(
            e.extend(1u16.wrapping_add(32767).wrapping_add(32768)),
            h - 1
        );
    }

    #[test]
    fn timestamp_extender_wraps() {
        for start in [0u32, 1, u32::MAX / 2, u32::MAX - 1000, u32::MAX] {
            let mut e = TimestampExtender::new();
            let first = e.extend(start);
            assert_eq!(first, (1 << 32) + u64::from(start));
            let step = 90_000 * 3; // 3 s at 90 kHz
            for i in 1..50_000u64 {
                let ts = start.wrapping_add((i * step) as u32);
                assert_eq!(e.extend(ts), first + i * step, "start {start} i {i}");
            }
        }
        let mut e = TimestampExtender::new();
        let base = e.extend(u32::MAX - 10);
        assert_eq!(e.extend(5), base + 16);
        assert_eq!(e.extend(u32::MAX), base + 10); // reordered from before the wrap
        assert_eq!(e.extend(u32::MAX - 20), base - 10); // before the first
        assert_eq!(e.highest(), Some(base + 16));
    }

    #[test]
    fn rewriter_starts_at_initial_output_and_follows_input() {
        let mut r = SeqRewriter::new(65534);
        let base = 65536 + 1000;
        let outs: Vec<_> = (0..5).map(|i| r.forward(base + i)).collect();
        assert_eq!(outs, [Some(65534), Some(65535), Some(0), Some(1), Some(2)]);
        for (i, out) in outs.iter().enumerate() {
            assert_eq!(r.input_for_output(out.unwrap()), Some(base + i as u64));
        }
        assert_eq!(r.input_for_output(3), None);
    }

    #[test]
    fn rewriter_closes_gaps_of_dropped_packets() {
        let mut r = SeqRewriter::new(10);
        assert_eq!(r.forward(100), Some(10));
        r.drop(101);
        r.drop(102);
        assert_eq!(r.forward(103), Some(11));
        r.drop(104);
        assert_eq!(r.forward(105), Some(12));
        assert_eq!(r.input_for_output(11), Some(103));
        assert_eq!(r.input_for_output(12), Some(105));
        // Dropped inputs stay dropped; the forwarded ones keep their outputs.
        for dropped in [101, 102, 104] {
            assert_eq!(r.forward(dropped), None, "input {dropped}");
        }
        assert_eq!(r.forward(100), Some(10));
        assert_eq!(r.forward(103), Some(11));
    }

    #[test]
    fn rewriter_keeps_real_losses_as_gaps() {
        let mut r = SeqRewriter::new(0);
        assert_eq!(r.forward(200), Some(0));
        // 201 is lost upstream, 202 arrives; slot 1 is 201's (the packet store decides
        // whether a NACK for it can be served).
        assert_eq!(r.forward(202), Some(2));
        assert_eq!(r.input_for_output(1), Some(201));
        // The retransmission of 201 fills the gap.
        assert_eq!(r.forward(201), Some(1));
        assert_eq!(r.input_for_output(1), Some(201));
        // Drop of a reordered packet after a newer one was forwarded: its gap stays.
        assert_eq!(r.forward(204), Some(4));
        r.drop(203);
        assert_eq!(r.forward(205), Some(5));
    }

    #[test]
    fn rewriter_reordered_packets_keep_their_position_across_drops() {
        let mut r = SeqRewriter::new(500);
        assert_eq!(r.forward(10), Some(500));
        // 11 is late; 12 is dropped; 13 forwarded.
        r.drop(12);
        assert_eq!(r.forward(13), Some(502));
        // 11 arrives now and takes the slot before 13.
        assert_eq!(r.forward(11), Some(501));
        // Gap of missing 14..=15, then drop 16, forward 17; 14 and 15 arrive late.
        r.drop(16);
        assert_eq!(r.forward(17), Some(505));
        assert_eq!(r.forward(15), Some(504));
        assert_eq!(r.forward(14), Some(503));
        // Duplicates map to the same output.
        assert_eq!(r.forward(13), Some(502));
        // A dropped packet arriving again (e.g. retransmitted) cannot be placed.
        assert_eq!(r.forward(12), None);
        assert_eq!(r.forward(16), None);
    }

    #[test]
    fn rewriter_sync_continues_after_last_output() {
        let mut r = SeqRewriter::new(65533);
        assert_eq!(r.forward(1000), Some(65533));
        assert_eq!(r.forward(1001), Some(65534));
        // Switch to another source whose numbers are unrelated.
        r.sync(70_000);
        assert_eq!(r.forward(70_000), Some(65535));
        assert_eq!(r.forward(70_001), Some(0));
        // Older than the sync point: refused, even from the new source.
        assert_eq!(r.forward(69_999), None);
        assert_eq!(r.forward(1002), None);
        assert_eq!(r.input_for_output(65535), Some(70_000));
        assert_eq!(r.input_for_output(0), Some(70_001));
        // Outputs before the sync came from another piece of the mapping: not mapped.
        assert_eq!(r.input_for_output(65534), None);
        // Switch back to a source with higher numbers; drops right at the sync point.
        r.sync(2000);
        r.drop(2000);
        r.drop(2001);
        assert_eq!(r.forward(2002), Some(1));
        assert_eq!(r.forward(2000), None);
        assert_eq!(r.forward(2001), None);
    }

    #[test]
    fn rewriter_drops_before_first_forward_do_not_shift() {
        let mut r = SeqRewriter::new(7);
        r.drop(50);
        r.drop(51);
        assert_eq!(r.forward(52), Some(7));
        assert_eq!(r.forward(53), Some(8));
    }

    #[test]
    fn rewriter_sync_before_any_output_uses_initial_output() {
        let mut r = SeqRewriter::new(3);
        r.sync(900);
        r.drop(900);
        assert_eq!(r.forward(901), Some(3));
    }

    #[test]
    fn rewriter_every_other_packet_dropped_through_wraparound() {
        // Temporal layer filtering: every second packet dropped, for 3 output cycles.
        let mut r = SeqRewriter::new(65000);
        let mut expected = 65000u16;
        let start = 65536 * 5 + 65000;
        for i in 0..6 * 65536u64 {
            let input = start + i;
            if i % 2 == 1 {
                r.drop(input);
            } else {
                assert_eq!(r.forward(input), Some(expected), "i {i}");
                assert_eq!(r.input_for_output(expected), Some(input));
                expected = expected.wrapping_add(1);
            }
        }
    }

    #[test]
    fn rewriter_pseudo_random_reorder_and_drops_keep_order_without_collisions() {
        // Deterministic LCG; inputs delivered with local reordering, a third dropped.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut rand = move |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % n
        };
        let start = 65536 + 60_000;
        let mut order: Vec<u64> = (start..start + 20_000).collect();
        for i in 0..order.len() - 4 {
            let j = i + rand(4) as usize;
            order.swap(i, j);
        }
        let mut r = SeqRewriter::new(65_500);
        let mut outputs: Vec<(u64, u16)> = Vec::new();
        for input in order {
            if rand(3) == 0 {
                r.drop(input);
            } else if let Some(out) = r.forward(input) {
                outputs.push((input, out));
            }
        }
        assert!(outputs.len() > 12_000, "{}", outputs.len());
        outputs.sort_unstable();
        let first = outputs[0].1;
        let mut previous: Option<i64> = None;
        for (input, out) in outputs {
            // Distance from the first output, unwrapped (stays well below 32768 steps).
            let pos = i64::from(out.wrapping_sub(first));
            if let Some(p) = previous {
                assert!(pos > p, "input {input}: output {pos} not after {p}");
            }
            previous = Some(pos);
        }
    }

    #[test]
    fn rewriter_history_forgets_after_seq_history_outputs() {
        let mut r = SeqRewriter::new(0);
        for i in 0..2000u64 {
            r.forward(100 + i);
        }
        let last = SEQ_HISTORY as u64 - 1;
        assert_eq!(r.input_for_output(1999), Some(2099));
        assert_eq!(r.input_for_output(1999 - last as u16), Some(2099 - last));
        assert_eq!(r.input_for_output(1999 - SEQ_HISTORY as u16), None);
        // Input 0 under output 0 is a real mapping.
        let mut r = SeqRewriter::new(0);
        r.sync(0);
        assert_eq!(r.forward(0), Some(0));
        assert_eq!(r.input_for_output(0), Some(0));
        assert_eq!(SeqRewriter::new(0).input_for_output(0), None);
    }

    #[test]
    fn rewriter_refuses_packets_older_than_the_remembered_changes() {
        let mut r = SeqRewriter::new(0);
        r.forward(0);
        // Many separate drops: each is an offset change.
        for i in 0..OFFSET_CHANGES as u64 + 10 {
            r.drop(1 + 2 * i);
            r.forward(2 + 2 * i);
        }
        // Packet 0 was the first; its change has been evicted from the ring.
        assert_eq!(r.forward(0), None);
        // A recent one is still placed.
        let last_out = r.forward(2 + 2 * (OFFSET_CHANGES as u64 + 9)).unwrap();
        assert_eq!(last_out as u64, OFFSET_CHANGES as u64 + 10);
    }

    #[test]
    fn timestamp_rewriter_offsets_and_wraps() {
        let mut t = TimestampRewriter::new();
        assert_eq!(t.last_output(), None);
        assert_eq!(t.rewrite(1234), 1234);
        t.sync(u32::MAX - 5, 100);
        assert_eq!(t.rewrite(u32::MAX - 5), 100);
        assert_eq!(t.rewrite(4), 110);
        t.sync(10, u32::MAX);
        assert_eq!(t.rewrite(10), u32::MAX);
        assert_eq!(t.rewrite(11), 0);
        assert_eq!(t.last_output(), Some(0));
        // Exhaustive: a full 2^32 cycle in coarse steps keeps the offset exact.
        let mut t = TimestampRewriter::new();
        t.sync(0, 3_000_000_000);
        let mut input = 0u32;
        for _ in 0..100_000 {
            assert_eq!(t.rewrite(input), input.wrapping_add(3_000_000_000));
            input = input.wrapping_add(90_001);
        }
    }
}
