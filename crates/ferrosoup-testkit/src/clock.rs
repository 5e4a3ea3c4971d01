//! A clock that only moves when the test says so.

use std::time::{Duration, Instant};

/// Simulated time: starts at a base [`Instant`] read once at creation and only moves
/// forward through [`advance`](Self::advance) and [`advance_to`](Self::advance_to).
///
/// `Instant` values are used (not a custom time type) so that the sans-IO state machines of
/// `ferrosoup-rtc` and the engine take simulated time unchanged. Nothing in a test
/// depends on the real base value, only on offsets from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManualClock {
    base: Instant,
    now: Instant,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock whose base is the real time now (the only read of the system clock).
    pub fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// A clock whose base and current time are `base`.
    pub fn starting_at(base: Instant) -> Self {
        Self { base, now: base }
    }

    /// The base the clock started at.
    pub fn base(&self) -> Instant {
        self.base
    }

    /// The current simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Simulated time elapsed since the base.
    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    /// The instant `offset` after the base (whatever the current time is).
    pub fn at(&self, offset: Duration) -> Instant {
        self.base + offset
    }

    /// Moves the clock forward by `by`; returns the new time.
    pub fn advance(&mut self, by: Duration) -> Instant {
        self.now += by;
        self.now
    }

    /// Moves the clock to `to`, or leaves it where it is when `to` is in the past (time
    /// never goes backwards); returns the new time.
    pub fn advance_to(&mut self, to: Instant) -> Instant {
        self.now = self.now.max(to);
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_forward_only() {
        let mut clock = ManualClock::new();
        let t0 = clock.now();
        assert_eq!(clock.base(), t0);
        assert_eq!(
            clock.advance(Duration::from_millis(5)),
            t0 + Duration::from_millis(5)
        );
        clock.advance_to(t0 + Duration::from_secs(1));
        assert_eq!(clock.elapsed(), Duration::from_secs(1));
        // Backwards is a no-op.
        assert_eq!(clock.advance_to(t0), t0 + Duration::from_secs(1));
        assert_eq!(
            clock.at(Duration::from_secs(3)),
            t0 + Duration::from_secs(3)
        );
    }
}
