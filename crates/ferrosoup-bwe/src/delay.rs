//! Delay-based congestion detection, as GoogCC does it: packets are grouped by send time,
//! the growth of one-way delay between groups is smoothed and fitted to a line (the
//! trendline), and its slope is compared with an adaptive threshold.

use std::collections::VecDeque;

/// Packets sent within this span form one group.
const GROUP_SPAN_US: i64 = 5_000;
/// A packet arriving this soon after the group's last, with less delay growth than send
/// spacing, belongs to the same burst.
const BURST_DELTA_US: i64 = 5_000;
/// A burst is not longer than this.
const MAX_BURST_US: i64 = 100_000;
/// An arrival jump this large (clock reset, long silence) restarts the grouping.
const ARRIVAL_RESET_US: i64 = 3_000_000;

/// Delay samples fitted to the trendline.
const WINDOW: usize = 20;
/// Smoothing of the accumulated delay.
const SMOOTHING: f64 = 0.9;
/// The slope is scaled by this (and by the number of deltas, up to `MAX_DELTAS`).
const THRESHOLD_GAIN: f64 = 4.0;
const MAX_DELTAS: u32 = 60;
/// How fast the threshold follows the trend up and down.
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
/// Overuse must last this long (ms) before it is signalled.
const OVERUSE_TIME_MS: f64 = 10.0;

/// What the delay says about the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Usage {
    /// Delay is stable.
    #[default]
    Normal,
    /// Delay grows: the bottleneck queue fills.
    Overusing,
    /// Delay shrinks: the queue drains.
    Underusing,
}

#[derive(Clone, Copy, Debug)]
struct Group {
    first_send: i64,
    last_send: i64,
    first_arrival: i64,
    last_arrival: i64,
}

/// Send and arrival spacing between consecutive packet groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupDelta {
    /// Send time difference, µs.
    pub send_us: i64,
    /// Arrival time difference, µs.
    pub arrival_us: i64,
    /// Arrival time of the group that completed, µs (receiver clock).
    pub at_us: i64,
}

/// Groups packets and yields deltas between completed groups.
#[derive(Debug, Default)]
pub struct InterArrival {
    current: Option<Group>,
    previous: Option<Group>,
}

impl InterArrival {
    /// Feeds one received packet in feedback order; returns the delta when it completed
    /// a group.
    pub fn on_packet(&mut self, sent_us: i64, arrival_us: i64) -> Option<GroupDelta> {
        let Some(cur) = self.current.as_mut() else {
            self.current = Some(Group {
                first_send: sent_us,
                last_send: sent_us,
                first_arrival: arrival_us,
                last_arrival: arrival_us,
            });
            return None;
        };
        if sent_us < cur.first_send {
            return None; // reordered: belongs to an older group
        }
        let in_burst = {
            let arrival_delta = arrival_us - cur.last_arrival;
            let send_delta = sent_us - cur.last_send;
            (0..BURST_DELTA_US).contains(&arrival_delta)
                && arrival_delta - send_delta < 0
                && arrival_us - cur.first_arrival < MAX_BURST_US
        };
        if sent_us - cur.first_send <= GROUP_SPAN_US || in_burst {
            cur.last_send = cur.last_send.max(sent_us);
            cur.last_arrival = cur.last_arrival.max(arrival_us);
            return None;
        }
        let done = *cur;
        let delta = self.previous.and_then(|prev| {
            let d = GroupDelta {
                send_us: done.last_send - prev.last_send,
                arrival_us: done.last_arrival - prev.last_arrival,
                at_us: done.last_arrival,
            };
            (d.arrival_us >= 0 && d.arrival_us - d.send_us < ARRIVAL_RESET_US).then_some(d)
        });
        if self.previous.is_some() && delta.is_none() {
            // Out of order or a clock jump: start over from this packet.
            self.previous = None;
        } else {
            self.previous = Some(done);
        }
        self.current = Some(Group {
            first_send: sent_us,
            last_send: sent_us,
            first_arrival: arrival_us,
            last_arrival: arrival_us,
        });
        delta
    }
}

/// The trendline of queuing delay and the overuse detector on it.
#[derive(Debug)]
pub struct Trendline {
    deltas: u32,
    first_arrival_ms: Option<f64>,
    accumulated_ms: f64,
    smoothed_ms: f64,
    /// (arrival ms since first, smoothed delay ms).
    samples: VecDeque<(f64, f64)>,
    trend: f64,
    prev_trend: f64,
    threshold: f64,
    last_threshold_update_ms: Option<f64>,
    time_over_using_ms: Option<f64>,
    overuse_count: u32,
    usage: Usage,
}

impl Default for Trendline {
    fn default() -> Self {
        Self {
            samples: VecDeque::with_capacity(WINDOW + 1),
            ..Self::default_empty()
        }
    }
}

impl Trendline {
    /// The initial state with no sample storage.
    fn default_empty() -> Self {
        Self {
            deltas: 0,
            first_arrival_ms: None,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            samples: VecDeque::new(),
            trend: 0.0,
            prev_trend: 0.0,
            threshold: 12.5,
            last_threshold_update_ms: None,
            time_over_using_ms: None,
            overuse_count: 0,
            usage: Usage::Normal,
        }
    }

    /// Feeds a group delta; returns the usage it leads to.
    pub fn update(&mut self, delta: GroupDelta) -> Usage {
        let delay_ms = (delta.arrival_us - delta.send_us) as f64 / 1000.0;
        let at_ms = delta.at_us as f64 / 1000.0;
        self.deltas = (self.deltas + 1).min(1000);
        let first = *self.first_arrival_ms.get_or_insert(at_ms);
        self.accumulated_ms += delay_ms;
        self.smoothed_ms = SMOOTHING * self.smoothed_ms + (1.0 - SMOOTHING) * self.accumulated_ms;
        self.samples.push_back((at_ms - first, self.smoothed_ms));
        if self.samples.len() > WINDOW {
            self.samples.pop_front();
        }
        if self.samples.len() == WINDOW
            && let Some(slope) = slope(&self.samples)
        {
            self.trend = slope;
        }
        self.detect(delta.send_us as f64 / 1000.0, at_ms);
        self.usage
    }

    /// Starts afresh (usage normal, no samples), keeping the adaptive threshold and the
    /// samples' storage.
    pub fn restart(&mut self) {
        let mut samples = std::mem::take(&mut self.samples);
        samples.clear();
        *self = Self {
            samples,
            threshold: self.threshold,
            ..Self::default_empty()
        };
    }

    /// The current usage.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    fn detect(&mut self, send_delta_ms: f64, now_ms: f64) {
        if self.deltas < 2 {
            self.usage = Usage::Normal;
            return;
        }
        let modified = f64::from(self.deltas.min(MAX_DELTAS)) * self.trend * THRESHOLD_GAIN;
        if modified > self.threshold {
            let over = match self.time_over_using_ms {
                None => send_delta_ms / 2.0,
                Some(t) => t + send_delta_ms,
            };
            self.time_over_using_ms = Some(over);
            self.overuse_count += 1;
            if over > OVERUSE_TIME_MS && self.overuse_count > 1 && self.trend >= self.prev_trend {
                self.time_over_using_ms = Some(0.0);
                self.overuse_count = 0;
                self.usage = Usage::Overusing;
            }
        } else if modified < -self.threshold {
            self.time_over_using_ms = None;
            self.overuse_count = 0;
            self.usage = Usage::Underusing;
        } else {
            self.time_over_using_ms = None;
            self.overuse_count = 0;
            self.usage = Usage::Normal;
        }
        self.prev_trend = self.trend;
        self.adapt_threshold(modified, now_ms);
    }

    fn adapt_threshold(&mut self, modified: f64, now_ms: f64) {
        let last = *self.last_threshold_update_ms.get_or_insert(now_ms);
        if modified.abs() > self.threshold + 15.0 {
            // A spike (e.g. a route change) does not move the threshold.
            self.last_threshold_update_ms = Some(now_ms);
            return;
        }
        let k = if modified.abs() < self.threshold {
            K_DOWN
        } else {
            K_UP
        };
        let dt = (now_ms - last).clamp(0.0, 100.0);
        self.threshold =
            (self.threshold + k * (modified.abs() - self.threshold) * dt).clamp(6.0, 600.0);
        self.last_threshold_update_ms = Some(now_ms);
    }
}

/// Least-squares slope of (x, y) points.
fn slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den != 0.0).then(|| num / den)
}

/// Span of each of the two windows the base one-way delay is the minimum of: the base
/// follows a route change within two spans, and a queue that stays full for less than one
/// span is still measured against the empty queue's delay.
const BASE_SPAN_US: i64 = 10_000_000;

/// Queuing delay at the bottleneck: one-way delay (arrival on the receiver's clock minus
/// send on ours, so offset by the clocks' difference) above its recent minimum, the delay
/// through an empty queue. Tells random link loss (queue empty) from a drop-tail queue's
/// overflow (queue full) where the trendline cannot: a full queue's delay is high but flat.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueDelay {
    /// Minimum one-way delay in the current window and the one before, µs.
    base: [Option<i64>; 2],
    window_start_us: Option<i64>,
    /// Sum and count of the queuing delays since the last `take_mean`.
    sum_us: i64,
    count: u32,
}

impl QueueDelay {
    /// Notes one received packet: sent at `sent_us` (sender clock), arrived at
    /// `arrival_us` (receiver clock).
    pub fn on_packet(&mut self, sent_us: i64, arrival_us: i64) {
        let owd = arrival_us - sent_us;
        let start = *self.window_start_us.get_or_insert(sent_us);
        if sent_us - start >= BASE_SPAN_US {
            self.base = [self.base[1], None];
            self.window_start_us = Some(sent_us);
        }
        self.base[1] = Some(self.base[1].map_or(owd, |b| b.min(owd)));
        let base = self.base.iter().flatten().copied().min().unwrap_or(owd);
        self.sum_us += owd - base;
        self.count += 1;
    }

    /// Mean queuing delay of the packets noted since the last call (`None`: none), µs.
    pub fn take_mean(&mut self) -> Option<i64> {
        let mean = (self.count > 0).then(|| self.sum_us / i64::from(self.count));
        self.sum_us = 0;
        self.count = 0;
        mean
    }

    /// Forgets the base delay (the receiver's clock jumped).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packets every `gap_us`, each arriving `extra_us` later than the one before relative
    /// to its send time (queue growth per packet).
    fn run(packets: i64, gap_us: i64, extra_us: i64) -> (Vec<Usage>, usize) {
        let mut ia = InterArrival::default();
        let mut t = Trendline::default();
        let mut usages = Vec::new();
        let mut deltas = 0;
        for k in 0..packets {
            let sent = k * gap_us;
            let arrival = 50_000 + sent + k * extra_us;
            if let Some(d) = ia.on_packet(sent, arrival) {
                deltas += 1;
                usages.push(t.update(d));
            }
        }
        (usages, deltas)
    }

    #[test]
    fn steady_delay_is_normal() {
        let (usages, deltas) = run(500, 10_000, 0);
        assert!(deltas > 400);
        assert!(usages.iter().all(|u| *u == Usage::Normal));
    }

    #[test]
    fn growing_delay_is_overuse_and_shrinking_delay_underuse() {
        // 1 ms more queuing per 10 ms: the queue grows at 10 % of the send rate.
        let (usages, _) = run(200, 10_000, 1_000);
        assert_eq!(usages.last(), Some(&Usage::Overusing));
        let (usages, _) = run(200, 10_000, -1_000);
        assert_eq!(usages.last(), Some(&Usage::Underusing));
    }

    #[test]
    fn packets_sent_together_are_one_group() {
        let mut ia = InterArrival::default();
        // Three groups of 4 packets sent 1 ms apart, groups 20 ms apart.
        let mut got = Vec::new();
        for g in 0..4i64 {
            for p in 0..4i64 {
                let sent = g * 20_000 + p * 1_000;
                if let Some(d) = ia.on_packet(sent, sent + 30_000 + g * 2_000) {
                    got.push(d);
                }
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].send_us, 20_000);
        assert_eq!(got[0].arrival_us, 22_000);
    }

    #[test]
    fn queue_delay_is_measured_from_the_recent_minimum_one_way_delay() {
        let mut q = QueueDelay::default();
        // Clocks 7 s apart, 50 ms of path: an empty queue reads as none.
        for k in 0..100 {
            q.on_packet(k * 10_000, 7_000_000 + 50_000 + k * 10_000);
        }
        assert_eq!(q.take_mean(), Some(0));
        assert_eq!(q.take_mean(), None, "taken");
        // A full queue: 200 ms more.
        for k in 100..200 {
            q.on_packet(k * 10_000, 7_000_000 + 250_000 + k * 10_000);
        }
        assert_eq!(q.take_mean(), Some(200_000));
        // A route 30 ms shorter: the new minimum takes over within two windows.
        let mut sent = 2_000_000;
        while sent < 2_000_000 + 2 * BASE_SPAN_US + 10_000 {
            q.on_packet(sent, 7_000_000 + 20_000 + sent);
            sent += 10_000;
        }
        q.take_mean();
        q.on_packet(sent, 7_000_000 + 20_000 + sent);
        assert_eq!(q.take_mean(), Some(0));
    }
}
