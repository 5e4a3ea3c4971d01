//! The pacer's budget: a leaky bucket at the pacing rate (about 1.1 × the estimate) that
//! says whether a packet may leave now or when the next may.

/// Burst the bucket lets through at once, in µs of the pacing rate: a frame of the
/// media the estimate carries leaves at once (at 1.1 × the rate, a 5 ms burst spread
/// every frame over most of its frame interval: ~15 ms added to the last packets of a
/// 30 fps stream), a keyframe several times that size is spread, and the bottleneck
/// queues no more than 40 ms of it at once.
const BURST_US: u64 = 40_000;
/// A burst is at least one full packet.
const MIN_BURST_BYTES: f64 = 1_500.0;

/// A leaky bucket of bytes sent ahead of the pacing rate.
#[derive(Clone, Copy, Debug)]
pub struct PacerBudget {
    rate_bps: u64,
    debt_bytes: f64,
    last_us: i64,
}

impl PacerBudget {
    /// A budget pacing at `rate_bps`.
    pub fn new(rate_bps: u64) -> Self {
        Self {
            rate_bps: rate_bps.max(1),
            debt_bytes: 0.0,
            last_us: 0,
        }
    }

    /// Changes the pacing rate.
    pub fn set_rate(&mut self, now_us: i64, rate_bps: u64) {
        self.drain(now_us);
        self.rate_bps = rate_bps.max(1);
    }

    /// The pacing rate, bit/s.
    pub fn rate_bps(&self) -> u64 {
        self.rate_bps
    }

    fn burst(&self) -> f64 {
        (self.rate_bps * BURST_US / 8_000_000) as f64
    }

    fn drain(&mut self, now_us: i64) {
        let dt = (now_us - self.last_us).max(0) as f64;
        self.debt_bytes = (self.debt_bytes - self.rate_bps as f64 * dt / 8e6).max(0.0);
        self.last_us = self.last_us.max(now_us);
    }

    /// Whether a packet may leave at `now_us`.
    pub fn can_send(&mut self, now_us: i64) -> bool {
        self.drain(now_us);
        self.debt_bytes < self.burst().max(MIN_BURST_BYTES)
    }

    /// Counts a packet that left.
    pub fn on_sent(&mut self, now_us: i64, bytes: usize) {
        self.drain(now_us);
        self.debt_bytes += bytes as f64;
    }

    /// When the next packet may leave (now when it may already).
    pub fn next_send_us(&mut self, now_us: i64) -> i64 {
        self.drain(now_us);
        let over = self.debt_bytes - self.burst().max(MIN_BURST_BYTES);
        if over < 0.0 {
            return now_us;
        }
        now_us + (over * 8e6 / self.rate_bps as f64).ceil() as i64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_spread_at_the_rate() {
        // 1 Mbit/s: a 100-packet keyframe of 1,250 bytes leaves over ~1 s, not at once.
        let mut p = PacerBudget::new(1_000_000);
        let mut now = 0;
        let mut sent_at = Vec::new();
        while sent_at.len() < 100 {
            if p.can_send(now) {
                p.on_sent(now, 1_250);
                sent_at.push(now);
            } else {
                let next = p.next_send_us(now);
                assert!(next > now);
                now = next;
            }
        }
        let span = sent_at[99] - sent_at[0];
        assert!((950_000..=1_010_000).contains(&span), "{span}");
    }
}
