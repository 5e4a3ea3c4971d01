//! Receive-side loss tracking and NACK generation for a producer stream (RFC 4585 generic
//! NACK). Time is passed in; storage is allocated once in [`NackGenerator::new`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Most missing packets tracked at once; beyond this the stream needs a keyframe.
pub const MAX_MISSING: usize = 1000;
/// How many times one missing packet is requested before it is given up.
pub const MAX_REQUESTS: u8 = 10;
/// Shortest interval between two requests for the same packet.
pub const MIN_RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// One missing packet.
#[derive(Debug, Clone, Copy)]
struct Missing {
    ext_seq: u64,
    /// When it is next due for a request.
    due: Instant,
    /// Requests sent so far.
    requests: u8,
}

/// Tracks missing sequence numbers of one received stream and says which to NACK when.
///
/// Gaps in the extended sequence numbers become missing entries, due for a request at
/// once; each is requested up to [`MAX_REQUESTS`] times, at most once per
/// `max(rtt, 20 ms)`, and forgotten when the packet arrives, when it is given up, or when
/// a later keyframe makes it useless.
#[derive(Debug, Clone)]
pub struct NackGenerator {
    highest: Option<u64>,
    /// Sorted by `ext_seq`; capacity [`MAX_MISSING`], never grown.
    missing: VecDeque<Missing>,
    too_many: bool,
}

impl Default for NackGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl NackGenerator {
    /// An empty generator with its storage allocated.
    pub fn new() -> Self {
        Self {
            highest: None,
            missing: VecDeque::with_capacity(MAX_MISSING),
            too_many: false,
        }
    }

    /// Records a received packet. `is_keyframe` marks the first packet of a keyframe
    /// (missing packets before it are no longer needed); `is_recovered` marks a packet
    /// obtained by RTX or FEC, which only fills its own gap and never opens new ones.
    /// Returns true when the packet opened a gap: NACKs (or a keyframe request, if too many
    /// are missing) are due at once.
    pub fn on_packet(
        &mut self,
        now: Instant,
        ext_seq: u64,
        is_keyframe: bool,
        is_recovered: bool,
    ) -> bool {
        let mut gap = false;
        match self.highest {
            None if is_recovered => {}
            None => self.highest = Some(ext_seq),
            Some(h) if ext_seq > h && !is_recovered => {
                self.highest = Some(ext_seq);
                gap = ext_seq > h + 1;
                if gap {
                    self.add_gap(now, h + 1, ext_seq);
                }
            }
            Some(_) => self.remove(ext_seq),
        }
        if is_keyframe {
            self.too_many = false;
            let keep_from = self.missing.partition_point(|m| m.ext_seq < ext_seq);
            self.missing.drain(..keep_from);
        }
        gap
    }

    /// Marks `from..to` missing.
    fn add_gap(&mut self, now: Instant, from: u64, to: u64) {
        if to - from > MAX_MISSING as u64 {
            // Too far behind to repair by retransmission.
            self.missing.clear();
            self.too_many = true;
            return;
        }
        for seq in from..to {
            if self.missing.len() == MAX_MISSING {
                self.missing.pop_front();
                self.too_many = true;
            }
            self.missing.push_back(Missing {
                ext_seq: seq,
                due: now,
                requests: 0,
            });
        }
    }

    fn remove(&mut self, ext_seq: u64) {
        if let Ok(i) = self.missing.binary_search_by_key(&ext_seq, |m| m.ext_seq) {
            self.missing.remove(i);
        }
    }

    /// Fills `out` (cleared first) with the sequence numbers due for a request now, in
    /// ascending order, and schedules their next retry; packets requested
    /// [`MAX_REQUESTS`] times are given up. Give `out` enough capacity (up to
    /// [`MAX_MISSING`]) to avoid allocating.
    pub fn poll_nacks(&mut self, now: Instant, rtt: Duration, out: &mut Vec<u16>) {
        out.clear();
        let interval = rtt.max(MIN_RETRY_INTERVAL);
        self.missing.retain_mut(|m| {
            if m.due > now {
                return true;
            }
            if m.requests >= MAX_REQUESTS {
                return false;
            }
            m.requests += 1;
            m.due = now + interval;
            out.push(m.ext_seq as u16);
            true
        });
    }

    /// When [`NackGenerator::poll_nacks`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.missing.iter().map(|m| m.due).min()
    }

    /// Whether losses exceeded what NACK can repair since the last keyframe; the caller
    /// should request a keyframe (PLI/FIR).
    pub fn too_many_missing(&self) -> bool {
        self.too_many
    }

    /// Number of packets currently considered missing.
    pub fn missing_count(&self) -> usize {
        self.missing.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(50);

    fn poll(g: &mut NackGenerator, now: Instant) -> Vec<u16> {
        let mut out = vec![0xdead];
        g.poll_nacks(now, RTT, &mut out);
        out
    }

    #[test]
    fn in_order_stream_has_nothing_to_nack() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new();
        for seq in 65536..65636 {
            g.on_packet(t0, seq, false, false);
        }
        assert_eq!(poll(&mut g, t0), Vec::<u16>::new());
        assert_eq!(g.poll_timeout(), None);
        assert!(!g.too_many_missing());
    }

    #[test]
    fn gaps_are_nacked_and_retried_until_given_up() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new();
        g.on_packet(t0, 65536 + 65534, false, false);
        g.on_packet(t0, 65536 + 65538, false, false); // 65535, 0, 1 (wrapped) missing
        assert_eq!(g.missing_count(), 3);
        assert_eq!(g.poll_timeout(), Some(t0));
        assert_eq!(poll(&mut g, t0), vec![65535, 0, 1]);
        // Not again before the retry interval.
        assert_eq!(
            poll(&mut g, t0 + RTT - Duration::from_millis(1)),
            Vec::<u16>::new()
        );
        assert_eq!(g.poll_timeout(), Some(t0 + RTT));
        // Packet 0 arrives (reordered); the others are retried.
        g.on_packet(t0, 65536 + 65536, false, false);
        assert_eq!(poll(&mut g, t0 + RTT), vec![65535, 1]);
        // Requests 3..=10, then given up.
        let mut now = t0 + RTT;
        for _ in 3..=MAX_REQUESTS {
            now += RTT;
            assert_eq!(poll(&mut g, now), vec![65535, 1]);
        }
        now += RTT;
        assert_eq!(poll(&mut g, now), Vec::<u16>::new());
        assert_eq!(g.missing_count(), 0);
        assert_eq!(g.poll_timeout(), None);
    }

    #[test]
    fn retry_interval_is_at_least_20ms() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new();
        g.on_packet(t0, 10, false, false);
        g.on_packet(t0, 12, false, false);
        let mut out = Vec::new();
        g.poll_nacks(t0, Duration::from_millis(1), &mut out);
        assert_eq!(out, [11]);
        g.poll_nacks(
            t0 + Duration::from_millis(19),
            Duration::from_millis(1),
            &mut out,
        );
        assert!(out.is_empty());
        g.poll_nacks(
            t0 + Duration::from_millis(20),
            Duration::from_millis(1),
            &mut out,
        );
        assert_eq!(out, [11]);
    }

    #[test]
    fn keyframe_clears_older_missing_packets() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new();
        g.on_packet(t0, 100, false, false);
        g.on_packet(t0, 103, false, false); // 101, 102 missing
        g.on_packet(t0, 106, true, false); // keyframe; 104, 105 missing but before it
        assert_eq!(g.missing_count(), 0);
        g.on_packet(t0, 110, false, false); // 107..=109 missing
        // A reordered keyframe packet in the middle clears only what is before it.
        g.on_packet(t0, 108, true, false);
        assert_eq!(poll(&mut g, t0), vec![109]);
    }

    #[test]
    fn recovered_packets_fill_gaps_but_open_none() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new();
        g.on_packet(t0, 100, false, false);
        g.on_packet(t0, 103, false, false);
        g.on_packet(t0, 102, false, true);
        assert_eq!(poll(&mut g, t0), vec![101]);
        // Recovered beyond the highest: no new gap (and the highest is unchanged).
        g.on_packet(t0, 120, false, true);
        assert_eq!(g.missing_count(), 1);
        g.on_packet(t0, 104, false, false);
        assert_eq!(g.missing_count(), 1);
        // A recovered packet before any media does not start tracking.
        let mut g = NackGenerator::new();
        g.on_packet(t0, 50, false, true);
        g.on_packet(t0, 60, false, false);
        assert_eq!(g.missing_count(), 0);
    }

    #[test]
    fn too_many_missing_until_keyframe() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new();
        g.on_packet(t0, 0, false, false);
        // A gap larger than what is tracked: nothing to NACK, ask for a keyframe.
        g.on_packet(t0, MAX_MISSING as u64 + 2, false, false);
        assert!(g.too_many_missing());
        assert_eq!(g.missing_count(), 0);
        g.on_packet(t0, MAX_MISSING as u64 + 3, true, false);
        assert!(!g.too_many_missing());
        // Many smaller gaps overflow the list: the oldest go first.
        let mut seq = 10_000;
        g.on_packet(t0, seq, false, false);
        for _ in 0..MAX_MISSING / 2 + 1 {
            seq += 3;
            g.on_packet(t0, seq, false, false);
        }
        assert!(g.too_many_missing());
        assert_eq!(g.missing_count(), MAX_MISSING);
        let mut out = Vec::with_capacity(MAX_MISSING);
        g.poll_nacks(t0, RTT, &mut out);
        assert_eq!(out.len(), MAX_MISSING);
        assert_eq!(*out.last().unwrap(), (seq - 1) as u16);
        // The first pair (10_001, 10_002) was evicted.
        assert_eq!(out[0], 10_004);
        assert!(out.windows(2).all(|w| w[0] != w[1]));
    }
}
