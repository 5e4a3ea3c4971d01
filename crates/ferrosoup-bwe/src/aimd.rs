//! The delay-based rate: additive-increase / multiplicative-decrease driven by the
//! trendline's usage signal, with the increase capped by what the receiver acknowledged.

use crate::delay::Usage;

/// Decrease factor on overuse (of the acknowledged rate).
const BETA: f64 = 0.85;
/// Multiplicative increase per second, far from the last known capacity.
const MULTIPLICATIVE_PER_SECOND: f64 = 1.08;
/// The assumed frame rate, for the additive step (one packet per response time).
const FRAME_RATE: f64 = 30.0;
/// Decreases are at least a round trip apart (clamped to this range, ms): a decrease shows
/// in the feedback one round trip later, and an overuse signal before that reports the
/// congestion already answered. Sooner only when the receiver gets less than half the rate.
const DECREASE_INTERVAL_MS: (f64, f64) = (200.0, 500.0);
/// Packet size the additive step assumes at most, bits.
const MAX_PACKET_BITS: f64 = 1_200.0 * 8.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Hold,
    Increase,
    Decrease,
}

/// The capacity the link showed at past overuses: its mean and deviation decide between
/// cautious additive increase near it and multiplicative increase away from it.
#[derive(Clone, Copy, Debug, Default)]
struct LinkCapacity {
    /// kbit/s
    estimate: Option<f64>,
    variance: f64,
}

impl LinkCapacity {
    fn on_overuse(&mut self, sample_bps: f64) {
        let sample = sample_bps / 1000.0;
        let est = match self.estimate {
            None => sample,
            Some(e) => 0.95 * e + 0.05 * sample,
        };
        let norm = est.max(1.0);
        let error = est - sample;
        self.variance = (0.95 * self.variance + 0.05 * error * error / norm).clamp(0.4, 2.5);
        self.estimate = Some(est);
    }

    fn deviation(&self, est: f64) -> f64 {
        (self.variance * est).sqrt()
    }

    fn upper_bps(&self) -> Option<f64> {
        self.estimate
            .map(|e| (e + 3.0 * self.deviation(e)) * 1000.0)
    }

    fn lower_bps(&self) -> Option<f64> {
        self.estimate
            .map(|e| (e - 3.0 * self.deviation(e)).max(0.0) * 1000.0)
    }
}

/// The AIMD rate controller.
#[derive(Clone, Debug)]
pub struct AimdControl {
    state: State,
    bitrate: f64,
    min: f64,
    max: f64,
    link: LinkCapacity,
    /// Last update, µs on the sender's clock.
    last_change_us: Option<i64>,
    /// Last decrease, µs on the sender's clock.
    last_decrease_us: Option<i64>,
    rtt_ms: f64,
}

impl AimdControl {
    /// Starts at `start` bit/s, kept within `min..=max`.
    pub fn new(start: u64, min: u64, max: u64) -> Self {
        Self {
            state: State::Hold,
            bitrate: start as f64,
            min: min as f64,
            max: max as f64,
            link: LinkCapacity::default(),
            last_change_us: None,
            last_decrease_us: None,
            rtt_ms: 100.0,
        }
    }

    /// The current rate, bit/s.
    pub fn bitrate(&self) -> u64 {
        self.bitrate as u64
    }

    /// Sets the round-trip time the additive step is paced by.
    pub fn set_rtt_ms(&mut self, rtt_ms: f64) {
        self.rtt_ms = rtt_ms.clamp(1.0, 2_000.0);
    }

    /// Moves the rate to `bps` (a probe found it), forgetting the old capacity.
    pub fn set_bitrate(&mut self, now_us: i64, bps: u64) {
        self.bitrate = (bps as f64).clamp(self.min, self.max);
        self.link = LinkCapacity::default();
        self.last_change_us = Some(now_us);
    }

    /// Applies one usage signal at `now_us`, with `acked` the rate the receiver
    /// acknowledged (bit/s) when known.
    pub fn update(&mut self, now_us: i64, usage: Usage, acked: Option<u64>) {
        if usage == Usage::Overusing && !self.time_to_decrease(now_us, acked) {
            return;
        }
        self.state = match (usage, self.state) {
            (Usage::Overusing, s) if s != State::Decrease => State::Decrease,
            (Usage::Overusing, s) => s,
            (Usage::Normal, State::Hold) => State::Increase,
            (Usage::Normal, s) => s,
            (Usage::Underusing, _) => State::Hold,
        };
        let last = self.last_change_us.unwrap_or(now_us);
        let dt_s = ((now_us - last) as f64 / 1e6).clamp(0.0, 1.0);
        let acked = acked.map(|a| a as f64);
        match self.state {
            State::Hold => {}
            State::Increase => {
                if let Some(upper) = self.link.upper_bps()
                    && self.bitrate > upper
                {
                    self.link = LinkCapacity::default();
                }
                let limit = acked.map(|a| 1.5 * a + 10_000.0);
                if limit.is_none_or(|l| self.bitrate < l) {
                    let step = if self.link.estimate.is_some() {
                        self.additive_per_second() * dt_s
                    } else {
                        (self.bitrate * (MULTIPLICATIVE_PER_SECOND.powf(dt_s) - 1.0))
                            .max(1_000.0 * dt_s)
                    };
                    let next = self.bitrate + step;
                    self.bitrate = limit.map_or(next, |l| next.min(l)).max(self.bitrate);
                }
            }
            State::Decrease => {
                let base = acked.unwrap_or(self.bitrate);
                let mut next = BETA * base;
                if next > self.bitrate {
                    // Acked above the estimate (a probe, a burst): decrease from the capacity.
                    next = self
                        .link
                        .estimate
                        .map_or(self.bitrate, |e| BETA * e * 1000.0);
                }
                if let Some(lower) = self.link.lower_bps()
                    && base < lower
                {
                    self.link = LinkCapacity::default();
                }
                self.link.on_overuse(base);
                self.bitrate = next.min(self.bitrate);
                self.state = State::Hold;
                self.last_decrease_us = Some(now_us);
            }
        }
        self.bitrate = self.bitrate.clamp(self.min, self.max);
        self.last_change_us = Some(now_us);
    }

    /// Whether an overuse at `now_us` may decrease the rate again.
    fn time_to_decrease(&self, now_us: i64, acked: Option<u64>) -> bool {
        let Some(last) = self.last_decrease_us else {
            return true;
        };
        let (lo, hi) = DECREASE_INTERVAL_MS;
        let interval_us = (self.rtt_ms.clamp(lo, hi) * 1000.0) as i64;
        now_us - last >= interval_us || acked.is_some_and(|a| (a as f64) < 0.5 * self.bitrate)
    }

    fn additive_per_second(&self) -> f64 {
        let response_s = (self.rtt_ms + 100.0) / 1000.0;
        let bits_per_frame = self.bitrate / FRAME_RATE;
        let packets = (bits_per_frame / MAX_PACKET_BITS).ceil().max(1.0);
        let packet_bits = bits_per_frame / packets;
        (packet_bits / response_s).max(4_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increases_multiplicatively_then_decreases_to_beta_of_acked() {
        let mut a = AimdControl::new(300_000, 30_000, 10_000_000);
        let mut t = 0;
        for _ in 0..50 {
            t += 100_000;
            a.update(t, Usage::Normal, None);
        }
        // ~8 % per second for 5 s.
        let up = a.bitrate();
        assert!((420_000..470_000).contains(&up), "{up}");
        a.update(t + 100_000, Usage::Overusing, Some(400_000));
        assert_eq!(a.bitrate(), 340_000);
        // Near the capacity just seen, the increase is additive (slow).
        let mut t = t + 100_000;
        for _ in 0..10 {
            t += 100_000;
            a.update(t, Usage::Normal, Some(340_000));
        }
        assert!(a.bitrate() < 380_000, "{}", a.bitrate());
    }

    #[test]
    fn increase_is_capped_by_what_was_acknowledged() {
        let mut a = AimdControl::new(1_000_000, 30_000, 10_000_000);
        let mut t = 0;
        for _ in 0..100 {
            t += 100_000;
            a.update(t, Usage::Normal, Some(200_000));
        }
        assert_eq!(a.bitrate(), 1_000_000, "held, not lowered, not raised");
    }

    #[test]
    fn decreases_are_a_round_trip_apart_unless_the_rate_halved() {
        let mut a = AimdControl::new(1_000_000, 30_000, 10_000_000);
        a.set_rtt_ms(300.0);
        a.update(0, Usage::Overusing, Some(800_000));
        assert_eq!(a.bitrate(), 680_000);
        // The same congestion reported again before the decrease could show: held.
        a.update(100_000, Usage::Overusing, Some(600_000));
        assert_eq!(a.bitrate(), 680_000);
        a.update(300_000, Usage::Overusing, Some(600_000));
        assert_eq!(a.bitrate(), 510_000, "a round trip later");
        // The receiver gets less than half the rate: at once.
        a.update(350_000, Usage::Overusing, Some(200_000));
        assert_eq!(a.bitrate(), 170_000);
    }
}
