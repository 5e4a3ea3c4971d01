//! Counting helpers of the media loop: a fixed-size latency histogram and a duplicate
//! filter over extended sequence numbers. Both are allocated once and cost no allocation
//! per packet.

/// Fine buckets: 10 µs wide up to 50 ms.
const FINE_WIDTH_US: u64 = 10;
const FINE_BUCKETS: usize = 5_000;
/// Coarse buckets: 1 ms wide from 50 ms up to 10 s; slower samples land in the last one.
const COARSE_WIDTH_US: u64 = 1_000;
const COARSE_BUCKETS: usize = 9_950;
const FINE_LIMIT_US: u64 = FINE_WIDTH_US * FINE_BUCKETS as u64;

/// Latency histogram in microseconds: 10 µs resolution below 50 ms, 1 ms up to 10 s.
#[derive(Debug, Clone)]
pub struct Histogram {
    fine: Box<[u64]>,
    coarse: Box<[u64]>,
    count: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            fine: vec![0; FINE_BUCKETS].into_boxed_slice(),
            coarse: vec![0; COARSE_BUCKETS].into_boxed_slice(),
            count: 0,
            max_us: 0,
        }
    }

    /// Records one sample.
    pub fn record(&mut self, us: u64) {
        self.count += 1;
        self.max_us = self.max_us.max(us);
        if us < FINE_LIMIT_US {
            self.fine[(us / FINE_WIDTH_US) as usize] += 1;
        } else {
            let i = ((us - FINE_LIMIT_US) / COARSE_WIDTH_US) as usize;
            self.coarse[i.min(COARSE_BUCKETS - 1)] += 1;
        }
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Largest sample, in microseconds.
    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// The `q`-quantile (0..=1) in microseconds: the upper edge of the bucket holding it
    /// (never above the largest sample); `None` without samples.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.fine.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(((i as u64 + 1) * FINE_WIDTH_US).min(self.max_us));
            }
        }
        for (i, n) in self.coarse.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some((FINE_LIMIT_US + (i as u64 + 1) * COARSE_WIDTH_US).min(self.max_us));
            }
        }
        Some(self.max_us)
    }
}

/// Bits remembered by [`SeqWindow`].
const WINDOW_BITS: u64 = 1024;

/// Remembers which of the last 1024 extended sequence numbers were received, to count
/// each packet once even when it also arrives as a retransmission.
#[derive(Debug, Clone)]
pub struct SeqWindow {
    bits: [u64; (WINDOW_BITS / 64) as usize],
    highest: Option<u64>,
}

impl Default for SeqWindow {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`SeqWindow::insert`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// First time seen; `gap` newer sequence numbers were skipped before it (0 when it is
    /// the next one or an old one filling a hole).
    New {
        /// Sequence numbers skipped between the previous highest and this one.
        gap: u64,
    },
    /// Seen before (or too old to tell).
    Duplicate,
}

impl SeqWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self {
            bits: [0; (WINDOW_BITS / 64) as usize],
            highest: None,
        }
    }

    /// Highest sequence number inserted.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    fn bit(&mut self, seq: u64) -> (&mut u64, u64) {
        let i = seq % WINDOW_BITS;
        (&mut self.bits[(i / 64) as usize], 1 << (i % 64))
    }

    /// Records `seq`.
    pub fn insert(&mut self, seq: u64) -> SeqVerdict {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            let (word, mask) = self.bit(seq);
            *word |= mask;
            return SeqVerdict::New { gap: 0 };
        };
        if seq > highest {
            // Clear the bits of the sequence numbers skipped over (at most the whole window).
            let skipped = seq - highest - 1;
            for s in (highest + 1)..seq.min(highest + 1 + WINDOW_BITS) {
                let (word, mask) = self.bit(s);
                *word &= !mask;
            }
            self.highest = Some(seq);
            let (word, mask) = self.bit(seq);
            *word |= mask;
            return SeqVerdict::New { gap: skipped };
        }
        if highest - seq >= WINDOW_BITS {
            return SeqVerdict::Duplicate;
        }
        let (word, mask) = self.bit(seq);
        if *word & mask != 0 {
            SeqVerdict::Duplicate
        } else {
            *word |= mask;
            SeqVerdict::New { gap: 0 }
        }
    }
}

/// The `q`-quantile (0..=1) of unsorted values (nearest rank); `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::new();
        assert_eq!(h.quantile_us(0.5), None);
        for us in 1..=1000 {
            h.record(us * 10); // 10 µs .. 10 ms
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.quantile_us(0.5), Some(5_010));
        assert_eq!(h.quantile_us(0.99), Some(9_910));
        assert_eq!(h.quantile_us(1.0), Some(10_000));
        h.record(2_000_000);
        assert_eq!(h.max_us(), 2_000_000);
        assert_eq!(h.quantile_us(1.0), Some(2_000_000));
        // Beyond the last bucket the sample still counts.
        h.record(60_000_000);
        assert_eq!(h.quantile_us(1.0), Some(10_000_000));
    }

    #[test]
    fn seq_window_counts_gaps_and_duplicates() {
        let mut w = SeqWindow::new();
        assert_eq!(w.insert(100), SeqVerdict::New { gap: 0 });
        assert_eq!(w.insert(101), SeqVerdict::New { gap: 0 });
        assert_eq!(w.insert(101), SeqVerdict::Duplicate);
        assert_eq!(w.insert(105), SeqVerdict::New { gap: 3 });
        assert_eq!(w.insert(103), SeqVerdict::New { gap: 0 });
        assert_eq!(w.insert(103), SeqVerdict::Duplicate);
        assert_eq!(w.highest(), Some(105));
        // A jump clears what the window remembered about the slots it reuses.
        assert_eq!(w.insert(105 + 1024), SeqVerdict::New { gap: 1023 });
        assert_eq!(w.insert(105 + 1023), SeqVerdict::New { gap: 0 });
        assert_eq!(w.insert(105), SeqVerdict::Duplicate);
    }

    #[test]
    fn quantile_of_values() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 1.0), Some(3.0));
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.0), Some(1.0));
    }
}
