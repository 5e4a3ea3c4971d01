//! The pacer of a transport that sends to a client: video packets leave at about 1.1 ×
//! the bandwidth estimate, so a keyframe fanned out to a consumer does not arrive as one
//! burst that overflows the bottleneck queue. What waits is a small record per packet
//! (the consumer, the producer packet's place in its store, the rewritten header values):
//! the bytes stay in the producer's store, rewritten and protected when they leave.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ferrosoup_bwe::PacerBudget;

use crate::arena::ConsumerKey;
use crate::consumer::Rewrite;

/// Packets waiting at most (beyond, the newest is dropped and repaired by NACK).
pub const MAX_QUEUE: usize = 1024;
/// Queue entries reserved when a transport starts sending (no growth in steady state).
const RESERVED: usize = 128;
/// What waits is sent within this much time, faster than the pacing rate if need be.
pub const QUEUE_TIME_LIMIT: Duration = Duration::from_millis(400);

/// One video packet waiting to leave.
#[derive(Clone, Copy, Debug)]
pub struct Paced {
    /// The consumer that forwards it.
    pub consumer: ConsumerKey,
    /// Producer stream it belongs to.
    pub stream: usize,
    /// Its widened sequence number in that stream (its key in the producer's store).
    pub ext_seq: u64,
    /// The header values the consumer gave it.
    pub header: Rewrite,
    /// When it was queued.
    pub queued_at: Instant,
}

/// A transport's pacer.
#[derive(Debug)]
pub struct Pacer {
    budget: PacerBudget,
    queue: VecDeque<Paced>,
    epoch: Instant,
    /// Pacing follows an estimate (the client sends feedback).
    enabled: bool,
}

impl Pacer {
    /// A pacer at `rate_bps`, not pacing until enabled.
    pub fn new(now: Instant, rate_bps: u64) -> Self {
        Self {
            budget: PacerBudget::new(rate_bps),
            queue: VecDeque::with_capacity(RESERVED),
            epoch: now,
            enabled: false,
        }
    }

    fn us(&self, now: Instant) -> i64 {
        now.saturating_duration_since(self.epoch).as_micros() as i64
    }

    /// Starts pacing at `rate_bps` (the estimate changed).
    pub fn set_rate(&mut self, now: Instant, rate_bps: u64) {
        self.enabled = true;
        let at = self.us(now);
        self.budget.set_rate(at, rate_bps);
    }

    /// Whether a packet must wait: others wait, or the budget is spent.
    pub fn holds(&mut self, now: Instant) -> bool {
        if !self.enabled {
            return false;
        }
        let at = self.us(now);
        !self.queue.is_empty() || !self.budget.can_send(at)
    }

    /// Queues a packet; `false` when the queue is full.
    pub fn enqueue(&mut self, paced: Paced) -> bool {
        if self.queue.len() >= MAX_QUEUE {
            return false;
        }
        self.queue.push_back(paced);
        true
    }

    /// Counts a packet that left (queued or not).
    pub fn on_sent(&mut self, now: Instant, bytes: usize) {
        let at = self.us(now);
        self.budget.on_sent(at, bytes);
    }

    /// The next packet that may leave now, if any.
    pub fn pop(&mut self, now: Instant) -> Option<Paced> {
        let first = *self.queue.front()?;
        let at = self.us(now);
        // Late packets go whatever the budget: nothing waits beyond the time limit.
        let late = now.saturating_duration_since(first.queued_at) >= QUEUE_TIME_LIMIT;
        if !late && !self.budget.can_send(at) {
            return None;
        }
        self.queue.pop_front();
        Some(first)
    }

    /// When the next packet may leave (`None`: nothing waits).
    pub fn next_send(&mut self, now: Instant) -> Option<Instant> {
        let first = self.queue.front()?.queued_at;
        let at = self.us(now);
        let by_budget =
            self.epoch + Duration::from_micros(self.budget.next_send_us(at).max(0) as u64);
        Some(by_budget.min(first + QUEUE_TIME_LIMIT).max(now))
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::ConsumerKey;

    fn paced(at: Instant, seq: u64) -> Paced {
        Paced {
            consumer: ConsumerKey::from(0),
            stream: 0,
            ext_seq: seq,
            header: Rewrite {
                seq: seq as u16,
                timestamp: 0,
                payload_type: 96,
                marker: false,
                vp8: None,
            },
            queued_at: at,
        }
    }

    #[test]
    fn a_burst_leaves_at_the_pacing_rate_and_nothing_waits_past_the_limit() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, 1_000_000);
        assert!(!p.holds(t0), "not pacing before an estimate");
        p.set_rate(t0, 1_000_000);
        // A 40-packet keyframe (50 kB) at 1 Mbit/s: spread over ~360 ms.
        let mut sent = Vec::new();
        for k in 0..40 {
            if p.holds(t0) {
                assert!(p.enqueue(paced(t0, k)));
            } else {
                p.on_sent(t0, 1_250);
                sent.push((t0, k));
            }
        }
        // At once: the bucket's 40 ms burst (5 kB).
        assert!(sent.len() <= 5, "{} left at once", sent.len());
        let mut now = t0;
        while let Some(at) = p.next_send(now) {
            now = at;
            while let Some(x) = p.pop(now) {
                p.on_sent(now, 1_250);
                sent.push((now, x.ext_seq));
            }
        }
        let order: Vec<u64> = sent.iter().map(|(_, k)| *k).collect();
        assert_eq!(order, (0..40).collect::<Vec<_>>(), "in order");
        let span = sent[39].0 - t0;
        assert!(
            span >= Duration::from_millis(350) && span <= QUEUE_TIME_LIMIT,
            "{span:?}"
        );
        assert!(p.is_empty());

        // Far more than the limit allows at the rate: the late ones go anyway.
        let mut p = Pacer::new(t0, 100_000);
        p.set_rate(t0, 100_000);
        p.on_sent(t0, 10_000);
        for k in 0..100 {
            assert!(p.enqueue(paced(t0, k)));
        }
        let mut now = t0;
        let mut n = 0;
        while let Some(at) = p.next_send(now) {
            now = at;
            while p.pop(now).is_some() {
                n += 1;
            }
        }
        assert_eq!(n, 100);
        assert!(now - t0 <= QUEUE_TIME_LIMIT + Duration::from_millis(1));
    }
}
