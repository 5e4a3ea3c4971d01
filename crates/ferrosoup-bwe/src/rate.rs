//! A bitrate over a sliding window of time buckets: fixed storage, nothing allocated per
//! sample.

use std::time::{Duration, Instant};

/// Buckets in a window.
const BUCKETS: usize = 20;

/// Bytes counted in `BUCKETS` buckets covering a sliding window; times are µs on any
/// monotonic clock the caller picks (one meter, one clock).
#[derive(Clone, Debug)]
pub struct RateMeter {
    bucket_us: i64,
    bytes: [u64; BUCKETS],
    /// Index (time / bucket_us) of the newest bucket.
    newest: Option<i64>,
    /// Time of the first sample, to rate a window not yet full over what it saw.
    first_us: Option<i64>,
}

impl RateMeter {
    /// A meter over a window of `window_us` µs.
    pub fn new(window_us: i64) -> Self {
        Self {
            bucket_us: (window_us / BUCKETS as i64).max(1),
            bytes: [0; BUCKETS],
            newest: None,
            first_us: None,
        }
    }

    /// Forgets every sample.
    pub fn reset(&mut self) {
        self.bytes = [0; BUCKETS];
        self.newest = None;
        self.first_us = None;
    }

    /// Counts `bytes` at `at_us`. Samples older than the window are ignored; a clock that
    /// jumps back by more than a window restarts the meter.
    pub fn add(&mut self, at_us: i64, bytes: usize) {
        let index = at_us.div_euclid(self.bucket_us);
        if let Some(newest) = self.newest
            && index < newest - BUCKETS as i64 * 2
        {
            self.reset();
        }
        self.advance(index);
        let newest = self.newest.unwrap_or(index);
        if index <= newest - BUCKETS as i64 {
            return;
        }
        self.bytes[index.rem_euclid(BUCKETS as i64) as usize] += bytes as u64;
        if self.first_us.is_none_or(|f| at_us < f) {
            self.first_us = Some(at_us);
        }
    }

    /// Moves the window so its newest bucket is `index`, clearing buckets that left it.
    fn advance(&mut self, index: i64) {
        let Some(newest) = self.newest else {
            self.newest = Some(index);
            return;
        };
        if index <= newest {
            return;
        }
        let steps = (index - newest).min(BUCKETS as i64);
        for k in 1..=steps {
            self.bytes[(newest + k).rem_euclid(BUCKETS as i64) as usize] = 0;
        }
        self.newest = Some(index);
    }

    /// Bits per second over the window ending at `now_us` (over less while the meter has
    /// seen less than a window); `None` before the meter saw 1/4 of a window.
    pub fn rate_bps(&mut self, now_us: i64) -> Option<u64> {
        self.advance(now_us.div_euclid(self.bucket_us));
        let first = self.first_us?;
        let window = self.bucket_us * BUCKETS as i64;
        let span = (now_us - first).clamp(0, window);
        if span < window / 4 {
            return None;
        }
        let bytes: u64 = self.bytes.iter().sum();
        Some(bytes * 8 * 1_000_000 / span as u64)
    }
}

/// A [`RateMeter`] over `Instant`s: its clock starts at the first sample.
#[derive(Clone, Debug)]
pub struct BitrateMeter {
    epoch: Option<Instant>,
    meter: RateMeter,
}

impl BitrateMeter {
    /// A meter over `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            epoch: None,
            meter: RateMeter::new(window.as_micros() as i64),
        }
    }

    fn us(&mut self, now: Instant) -> i64 {
        now.saturating_duration_since(*self.epoch.get_or_insert(now))
            .as_micros() as i64
    }

    /// Counts `bytes` at `now`.
    pub fn add(&mut self, now: Instant, bytes: usize) {
        let at = self.us(now);
        self.meter.add(at, bytes);
    }

    /// Bits per second over the window ending at `now` (`None` while too young).
    pub fn bps(&mut self, now: Instant) -> Option<u64> {
        self.epoch?;
        let at = self.us(now);
        self.meter.rate_bps(at)
    }

    /// What [`BitrateMeter::add`] counted per second over the window ending at `now`, for
    /// a meter of things other than bytes (pictures).
    pub fn per_second(&mut self, now: Instant) -> Option<f64> {
        self.bps(now).map(|bps| bps as f64 / 8.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_rate_is_measured_and_old_samples_leave_the_window() {
        let mut m = RateMeter::new(1_000_000);
        assert_eq!(m.rate_bps(0), None);
        // 1,250 bytes every 10 ms = 1 Mbit/s.
        for k in 0..300 {
            m.add(k * 10_000, 1_250);
        }
        let r = m.rate_bps(3_000_000).unwrap();
        assert!((950_000..=1_050_000).contains(&r), "{r}");
        // Silence: the window empties.
        assert_eq!(m.rate_bps(5_000_000), Some(0));
    }

    #[test]
    fn a_young_meter_rates_what_it_saw() {
        let mut m = RateMeter::new(1_000_000);
        for k in 0..30 {
            m.add(k * 10_000, 1_250);
        }
        let r = m.rate_bps(300_000).unwrap();
        assert!((950_000..=1_050_000).contains(&r), "{r}");
    }
}
