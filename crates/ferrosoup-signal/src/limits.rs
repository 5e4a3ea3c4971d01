//! Per-connection request rate limiting (a token bucket; time is an argument).

use std::time::Instant;

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A full bucket.
    pub fn new(per_second: u32, burst: u32, now: Instant) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Takes one token; false when the bucket is empty (the request is refused).
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, 5, t0);
        assert!((0..5).all(|_| r.allow(t0)));
        assert!(!r.allow(t0));
        // 100 ms later one token is back, not two.
        let t1 = t0 + Duration::from_millis(100);
        assert!(r.allow(t1));
        assert!(!r.allow(t1));
        // Idle time refills up to the burst only.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| r.allow(t2)).count(), 5);
    }
}
