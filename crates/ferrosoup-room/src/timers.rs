//! The worker's one timer table: every deadline of every object (ICE consent, DTLS
//! retransmission, RTCP reports, transport-cc feedback, NACK rounds, keyframe request
//! retries, layer checks, active speaker) is an entry here, and `poll_timeout` is the
//! earliest of them. Nothing runs on a fixed tick.
//!
//! Entries are cancelled lazily: a timer has at most one armed deadline; arming it again
//! earlier replaces it, later is a no-op (the earlier firing re-arms it). Handlers are
//! idempotent: a timer firing for an object that has nothing due (or is gone) only re-arms.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use crate::arena::{ProducerKey, TransportKey};
use crate::ids::RouterId;

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// ICE consent, DTLS retransmission and `iceRestartRequired` of a transport.
    Connection(TransportKey),
    /// The transport's next round of RTCP reports (SR, RR) and scores.
    Reports(TransportKey),
    /// Transport-cc feedback about what the transport's client sent.
    TwccFeedback(TransportKey),
    /// NACKs for the missing packets of a producer stream.
    Nack(ProducerKey, u8),
    /// A keyframe request of a producer stream to retry, or one the rate limit deferred.
    KeyframeRequest(ProducerKey, u8),
    /// A simulcast producer's streams may have stopped: its consumers' layers are checked.
    StreamActivity(ProducerKey),
    /// The loudest audio producer of a router is looked for.
    ActiveSpeaker(RouterId),
    /// A probe cluster of a transport sends its next padding.
    Probe(TransportKey),
    /// A transport's pacer lets its next packets go.
    Pace(TransportKey),
    /// A transport's SCTP association retransmits or acknowledges.
    Sctp(TransportKey),
}

/// Capacity below which [`TimerTable::release_unused`] leaves a table as it is.
const MIN_SHRINK_CAPACITY: usize = 64;

/// Deadlines by timer, earliest first.
#[derive(Default)]
pub struct TimerTable {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
    armed: HashMap<Timer, Instant>,
}

impl TimerTable {
    /// Makes `timer` fire at `at`, unless it is already armed for then or earlier.
    pub fn arm(&mut self, timer: Timer, at: Instant) {
        if self.armed.get(&timer).is_some_and(|&t| t <= at) {
            return;
        }
        self.armed.insert(timer, at);
        self.heap.push(Reverse((at, timer)));
    }

    /// Gives back the room the table grew to for objects that are gone: once it holds
    /// more cancelled entries than live ones it drops them, and once either table is less
    /// than half full it shrinks to what it holds and a quarter more. For the control
    /// path, after objects closed (it may reallocate).
    pub fn release_unused(&mut self) {
        if self.heap.len() > MIN_SHRINK_CAPACITY && self.heap.len() > 2 * self.armed.len() {
            let armed = &self.armed;
            self.heap
                .retain(|Reverse((at, timer))| armed.get(timer) == Some(at));
        }
        if self.heap.capacity() > MIN_SHRINK_CAPACITY && self.heap.len() * 2 <= self.heap.capacity()
        {
            self.heap.shrink_to(self.heap.len() + self.heap.len() / 4);
        }
        if self.armed.capacity() > MIN_SHRINK_CAPACITY
            && self.armed.len() * 2 <= self.armed.capacity()
        {
            self.armed
                .shrink_to(self.armed.len() + self.armed.len() / 4);
        }
    }

    /// Cancels `timer`.
    pub fn disarm(&mut self, timer: Timer) {
        self.armed.remove(&timer);
    }

    /// When `timer` is armed for, if it is.
    #[cfg(test)]
    fn deadline(&self, timer: Timer) -> Option<Instant> {
        self.armed.get(&timer).copied()
    }

    /// The earliest deadline (possibly of a cancelled entry: waking early is harmless).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// The next timer due at `now`, disarmed; `None` when nothing is due.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        while let Some(&Reverse((at, timer))) = self.heap.peek() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if self.armed.get(&timer) == Some(&at) {
                self.armed.remove(&timer);
                return Some(timer);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn cancelled_timers_give_their_room_back() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        let steady = Timer::Reports(TransportKey::from(0));
        table.arm(steady, t0 + ms(10));
        for k in 1..2000 {
            table.arm(Timer::Pace(TransportKey::from(k)), t0 + ms(k as u64));
        }
        let peak = table.heap.capacity();
        for k in 1..2000 {
            table.disarm(Timer::Pace(TransportKey::from(k)));
        }
        table.release_unused();
        assert!(table.heap.capacity() <= MIN_SHRINK_CAPACITY && peak >= 2000);
        assert!(table.armed.capacity() <= MIN_SHRINK_CAPACITY);
        // What is still armed still fires, and only that.
        assert_eq!(table.poll_timeout(), Some(t0 + ms(10)));
        assert_eq!(table.pop_due(t0 + ms(5000)), Some(steady));
        assert_eq!(table.pop_due(t0 + ms(5000)), None);
    }

    #[test]
    fn fires_in_deadline_order_once() {
        let t0 = Instant::now();
        let a = Timer::Reports(TransportKey::from(1));
        let b = Timer::Connection(TransportKey::from(2));
        let mut table = TimerTable::default();
        table.arm(a, t0 + ms(30));
        table.arm(b, t0 + ms(10));
        assert_eq!(table.poll_timeout(), Some(t0 + ms(10)));
        assert_eq!(table.pop_due(t0 + ms(9)), None);
        assert_eq!(table.pop_due(t0 + ms(40)), Some(b));
        assert_eq!(table.pop_due(t0 + ms(40)), Some(a));
        assert_eq!(table.pop_due(t0 + ms(40)), None);
        assert_eq!(table.deadline(a), None);
        assert_eq!(table.deadline(b), None);
    }

    #[test]
    fn arming_earlier_replaces_later_is_ignored() {
        let t0 = Instant::now();
        let n = Timer::Nack(ProducerKey::from(0), 1);
        let mut table = TimerTable::default();
        table.arm(n, t0 + ms(50));
        table.arm(n, t0 + ms(20));
        table.arm(n, t0 + ms(80));
        assert_eq!(table.deadline(n), Some(t0 + ms(20)));
        assert_eq!(table.pop_due(t0 + ms(100)), Some(n));
        // The stale 50 ms entry does not fire a second time.
        assert_eq!(table.pop_due(t0 + ms(100)), None);
        assert_eq!(table.deadline(n), None);
    }

    #[test]
    fn disarmed_timers_never_fire() {
        let t0 = Instant::now();
        let k = Timer::KeyframeRequest(ProducerKey::from(3), 0);
        let mut table = TimerTable::default();
        table.arm(k, t0 + ms(5));
        table.disarm(k);
        assert_eq!(table.pop_due(t0 + ms(10)), None);
        // Re-armed after a disarm, it fires at its new deadline only.
        table.arm(k, t0 + ms(15));
        assert_eq!(table.pop_due(t0 + ms(10)), None);
        assert_eq!(table.pop_due(t0 + ms(15)), Some(k));
    }
}
