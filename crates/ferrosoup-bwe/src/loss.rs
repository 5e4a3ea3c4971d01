//! The loss-based bound: heavy loss lowers the rate whatever the delay says, light loss
//! lets it rise again, and so does moderate loss while the bottleneck queue is empty (the
//! link loses packets at random; congestion does not lose them from an empty queue).

/// Loss above this lowers the bound.
const HIGH_LOSS: f64 = 0.10;
/// Loss below this lets the bound rise.
const LOW_LOSS: f64 = 0.02;
/// Below this queuing delay the bottleneck queue is taken for empty, µs: moderate loss
/// there is the link's, and does not hold the bound down.
const EMPTY_QUEUE_US: i64 = 25_000;
/// Packets a loss figure needs (fewer give a figure too noisy to act on: 3 of 20 is
/// 15 %, and happens often on a link with 5 % random loss).
const MIN_PACKETS: u32 = 100;

/// The loss-based upper bound on the rate.
#[derive(Clone, Debug)]
pub struct LossBound {
    bound: Option<f64>,
    lost: u32,
    total: u32,
    last_decrease_us: Option<i64>,
    last_update_us: Option<i64>,
    last_loss: f64,
    /// Largest mean queuing delay of a feedback in the interval being counted, µs.
    max_queue_us: Option<i64>,
    /// Round-trip time, which spaces decreases, ms.
    rtt_ms: f64,
}

impl Default for LossBound {
    fn default() -> Self {
        Self {
            bound: None,
            lost: 0,
            total: 0,
            last_decrease_us: None,
            last_update_us: None,
            last_loss: 0.0,
            max_queue_us: None,
            rtt_ms: 100.0,
        }
    }
}

impl LossBound {
    /// Sets the round-trip time, which spaces decreases.
    pub fn set_rtt_ms(&mut self, rtt_ms: f64) {
        self.rtt_ms = rtt_ms;
    }

    /// Counts one feedback's packets; once enough are counted, updates the bound: heavy
    /// loss lowers it from `current` (the rate in force, bit/s), light loss raises it until
    /// it is far above `delay_based` (the delay-based rate) and bounds nothing. Moderate
    /// loss holds the bound while `queue_us` (the mean queuing delay, `None`: unknown)
    /// showed a queue in the interval, and counts as light without one.
    pub fn on_feedback(
        &mut self,
        now_us: i64,
        lost: u32,
        total: u32,
        current: u64,
        delay_based: u64,
        queue_us: Option<i64>,
    ) {
        self.lost += lost;
        self.total += total;
        if let Some(q) = queue_us {
            self.max_queue_us = Some(self.max_queue_us.map_or(q, |m| m.max(q)));
        }
        if self.total < MIN_PACKETS {
            return;
        }
        let queue_us = self.max_queue_us.take();
        let loss = f64::from(self.lost) / f64::from(self.total);
        self.last_loss = loss;
        self.lost = 0;
        self.total = 0;
        let current = current as f64;
        let dt_s = self
            .last_update_us
            .map_or(0.0, |l| ((now_us - l) as f64 / 1e6).clamp(0.0, 1.0));
        self.last_update_us = Some(now_us);
        if loss > HIGH_LOSS {
            let spacing_us = (300.0 + self.rtt_ms) as i64 * 1000;
            if self
                .last_decrease_us
                .is_none_or(|d| now_us - d >= spacing_us)
            {
                self.bound = Some(current * (1.0 - 0.5 * loss));
                self.last_decrease_us = Some(now_us);
            }
        } else if (loss < LOW_LOSS || queue_us.is_some_and(|q| q < EMPTY_QUEUE_US))
            && let Some(b) = self.bound
        {
            let raised = b * 1.08f64.powf(dt_s) + 1_000.0 * dt_s;
            // Far above the delay-based rate it bounds nothing: drop it.
            self.bound = (raised < delay_based as f64 * 1.5).then_some(raised);
        }
    }

    /// A probe showed the link carrying `bps`: a bound below that is stale (set when the
    /// link was worse, rising only 8 % a second since) and moves up to it.
    pub fn on_probe(&mut self, bps: u64) {
        if let Some(b) = self.bound.as_mut() {
            *b = b.max(bps as f64);
        }
    }

    /// The bound, bit/s (`None`: no bound).
    pub fn bound(&self) -> Option<u64> {
        self.bound.map(|b| b as u64)
    }

    /// Loss fraction of the last measured interval.
    pub fn last_loss(&self) -> f64 {
        self.last_loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_loss_bounds_moderate_loss_holds_light_loss_releases() {
        let mut l = LossBound::default();
        l.on_feedback(0, 10, 100, 1_000_000, 1_000_000, None);
        assert_eq!(l.bound(), None, "10 % is not above the threshold");
        l.on_feedback(100_000, 20, 100, 1_000_000, 1_000_000, None);
        assert_eq!(l.bound(), Some(900_000), "20 % loss: × 0.9");
        // Spaced by 300 ms + rtt.
        l.on_feedback(200_000, 20, 100, 900_000, 1_000_000, None);
        assert_eq!(l.bound(), Some(900_000));
        l.on_feedback(500_000, 4, 100, 900_000, 1_000_000, None);
        assert_eq!(l.bound(), Some(900_000), "4 % holds");
        let mut t = 500_000;
        while l.bound().is_some() {
            t += 100_000;
            l.on_feedback(t, 0, 100, 900_000, 1_000_000, None);
            assert!(t < 10_000_000);
        }
    }

    #[test]
    fn a_probe_lifts_a_stale_bound() {
        let mut l = LossBound::default();
        l.on_feedback(0, 30, 100, 400_000, 400_000, Some(150_000));
        assert_eq!(l.bound(), Some(340_000));
        l.on_probe(300_000);
        assert_eq!(l.bound(), Some(340_000), "a lower probe leaves it");
        l.on_probe(500_000);
        assert_eq!(l.bound(), Some(500_000));
    }

    #[test]
    fn heavy_loss_lowers_the_rate_in_force_not_the_delay_based_rate() {
        // A full drop-tail queue: the delay is flat (the delay-based rate stays high) while
        // a third of the packets are lost. Each decrease starts from the bound in force.
        let mut l = LossBound::default();
        let mut current = 600_000;
        for i in 0..4 {
            l.on_feedback(i * 400_000, 33, 100, current, 1_000_000, None);
            let bound = l.bound().unwrap();
            assert!(bound < current, "{bound} after {current}");
            current = bound;
        }
        assert!(current < 300_000, "{current}");
    }

    #[test]
    fn moderate_loss_with_an_empty_queue_is_the_links_and_releases() {
        let mut l = LossBound::default();
        l.on_feedback(0, 20, 100, 1_000_000, 1_000_000, Some(150_000));
        assert_eq!(l.bound(), Some(900_000));
        // 5 % with a full queue holds (a drop-tail queue overflowing)...
        l.on_feedback(500_000, 5, 100, 900_000, 1_000_000, Some(150_000));
        assert_eq!(l.bound(), Some(900_000));
        // ...and with an empty queue rises: the link loses packets at random.
        l.on_feedback(1_000_000, 5, 100, 900_000, 1_000_000, Some(2_000));
        assert!(l.bound().unwrap() > 900_000, "{:?}", l.bound());
        // A queue in any feedback of the interval counts.
        let b = l.bound();
        l.on_feedback(1_500_000, 2, 50, 900_000, 1_000_000, Some(100_000));
        l.on_feedback(1_600_000, 3, 50, 900_000, 1_000_000, Some(1_000));
        assert_eq!(l.bound(), b);
    }
}
