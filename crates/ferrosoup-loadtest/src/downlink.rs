//! A subscriber's capped downlink (`--downlink-kbps`), simulated in user space on receive:
//! a token bucket filter as Linux's `tc ... tbf` shapes a link. Every datagram the server
//! sends to a capped transport goes through it before the media loop looks at it.
//!
//! Tokens are bytes; they fill at the link rate up to the burst. A datagram costs its
//! length plus 28 bytes of IPv4 and UDP headers. One that arrives to an empty queue with
//! enough tokens passes at once; otherwise it waits in a queue of at most `queue_limit`
//! bytes (a datagram that does not fit is dropped: the link's tail drop) and leaves when
//! the tokens for it have come. A datagram "arrives" at the subscriber when it leaves the
//! bucket: that is the arrival time its transport-cc feedback reports, so the server's
//! estimator sees the capped link's queueing delay and losses.
//!
//! Time is an argument and the queue is a fixed byte ring allocated with the filter:
//! nothing is allocated per datagram.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// IPv4 and UDP header bytes a datagram costs on the link besides its payload.
pub const IP_UDP_OVERHEAD: usize = 28;

/// What [`Downlink::offer`] did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The link is free: the datagram arrives now.
    Pass,
    /// Queued; it arrives when [`Downlink::release`] hands it out.
    Queued,
    /// The queue is full: the datagram is lost.
    Dropped,
}

/// Shape of a capped link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkShape {
    /// Link rate in bit/s.
    pub rate_bps: u64,
    /// Bucket size in bytes: what may pass at line rate after the link was idle.
    pub burst_bytes: usize,
    /// Largest backlog in bytes (link overhead included); more is dropped.
    pub queue_limit_bytes: usize,
}

impl LinkShape {
    /// A link of `kbps` kbit/s with a `burst`-byte bucket and a queue of `queue` at that
    /// rate (never smaller than two full datagrams of `max_datagram` bytes).
    pub fn new(kbps: u32, burst: usize, queue: Duration, max_datagram: usize) -> Self {
        let rate_bps = u64::from(kbps.max(1)) * 1000;
        let per_queue = (rate_bps as f64 / 8.0 * queue.as_secs_f64()) as usize;
        Self {
            rate_bps,
            burst_bytes: burst.max(max_datagram + IP_UDP_OVERHEAD),
            queue_limit_bytes: per_queue.max(2 * (max_datagram + IP_UDP_OVERHEAD)),
        }
    }
}

/// Counts of a capped link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DownlinkCounters {
    /// Datagrams that passed at once.
    pub passed: u64,
    /// Datagrams that waited in the queue.
    pub queued: u64,
    /// Datagrams dropped because the queue was full.
    pub dropped: u64,
    /// Bytes (link overhead included) that left the bucket.
    pub bytes: u64,
}

/// A token bucket filter with its queue.
pub struct Downlink {
    shape: LinkShape,
    /// Tokens (bytes) at `at`.
    tokens: f64,
    /// When `tokens` was counted; never goes backwards.
    at: Instant,
    /// Queued datagrams' bytes, back to back around the ring.
    ring: Box<[u8]>,
    /// Ring offset of the oldest queued byte.
    head: usize,
    /// Bytes in the ring.
    filled: usize,
    /// Lengths of the queued datagrams, oldest first (capacity reserved up front).
    lens: VecDeque<u16>,
    /// Backlog in link bytes (datagrams plus overhead).
    backlog: usize,
    counters: DownlinkCounters,
}

impl std::fmt::Debug for Downlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downlink")
            .field("shape", &self.shape)
            .field("queued", &self.lens.len())
            .field("backlog", &self.backlog)
            .field("counters", &self.counters)
            .finish()
    }
}

impl Downlink {
    /// An idle link (full bucket, empty queue) at `now`.
    pub fn new(shape: LinkShape, now: Instant) -> Self {
        let ring = vec![0; shape.queue_limit_bytes].into_boxed_slice();
        Self {
            shape,
            tokens: shape.burst_bytes as f64,
            at: now,
            ring,
            head: 0,
            filled: 0,
            // Every queued datagram costs at least the overhead plus one byte.
            lens: VecDeque::with_capacity(shape.queue_limit_bytes / (IP_UDP_OVERHEAD + 1) + 1),
            backlog: 0,
            counters: DownlinkCounters::default(),
        }
    }

    /// Counts so far.
    pub fn counters(&self) -> DownlinkCounters {
        self.counters
    }

    /// Adds the tokens that came in until `now` (a time before the last one counts as it).
    fn refill(&mut self, now: Instant) {
        if now <= self.at {
            return;
        }
        let dt = now.duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.shape.rate_bps as f64 / 8.0)
            .min(self.shape.burst_bytes as f64);
        self.at = now;
    }

    /// A datagram reaches the link at `now`.
    pub fn offer(&mut self, now: Instant, datagram: &[u8]) -> Verdict {
        let cost = datagram.len() + IP_UDP_OVERHEAD;
        self.refill(now);
        if self.lens.is_empty() && self.tokens >= cost as f64 {
            self.tokens -= cost as f64;
            self.counters.passed += 1;
            self.counters.bytes += cost as u64;
            return Verdict::Pass;
        }
        let Ok(len) = u16::try_from(datagram.len()) else {
            self.counters.dropped += 1;
            return Verdict::Dropped;
        };
        if self.backlog + cost > self.shape.queue_limit_bytes
            || self.lens.len() == self.lens.capacity()
        {
            self.counters.dropped += 1;
            return Verdict::Dropped;
        }
        let cap = self.ring.len();
        let tail = (self.head + self.filled) % cap;
        let first = datagram.len().min(cap - tail);
        self.ring[tail..tail + first].copy_from_slice(&datagram[..first]);
        self.ring[..datagram.len() - first].copy_from_slice(&datagram[first..]);
        self.filled += datagram.len();
        self.backlog += cost;
        self.lens.push_back(len);
        self.counters.queued += 1;
        Verdict::Queued
    }

    /// When the oldest queued datagram leaves the bucket (`None`: the queue is empty).
    pub fn next_release(&self) -> Option<Instant> {
        let len = usize::from(*self.lens.front()?);
        let missing = (len + IP_UDP_OVERHEAD) as f64 - self.tokens;
        if missing <= 0.0 {
            return Some(self.at);
        }
        let wait = missing * 8.0 / self.shape.rate_bps as f64;
        // Rounded up to the next nanosecond, so the tokens are there at that time.
        Some(self.at + Duration::from_secs_f64(wait) + Duration::from_nanos(1))
    }

    /// Hands out the oldest queued datagram if it has left the bucket by `now`: copies it
    /// into `buf` and returns its length and the moment it left (its arrival time at the
    /// subscriber). `buf` must hold any datagram offered.
    pub fn release(&mut self, now: Instant, buf: &mut [u8]) -> Option<(usize, Instant)> {
        let left = self.next_release()?;
        if left > now {
            return None;
        }
        let len = usize::from(self.lens.pop_front()?);
        let cost = len + IP_UDP_OVERHEAD;
        // Counted at the moment it left, however late the caller comes: the link's rate
        // does not depend on the load tester's timer accuracy.
        self.refill(left);
        self.tokens -= cost as f64;
        let cap = self.ring.len();
        let first = len.min(cap - self.head);
        buf[..first].copy_from_slice(&self.ring[self.head..self.head + first]);
        buf[first..len].copy_from_slice(&self.ring[..len - first]);
        self.head = (self.head + len) % cap;
        self.filled -= len;
        self.backlog -= cost;
        self.counters.bytes += cost as u64;
        Some((len, left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(kbps: u32) -> LinkShape {
        LinkShape::new(kbps, 3000, Duration::from_millis(100), 1200)
    }

    #[test]
    fn shape_keeps_a_burst_and_a_queue_of_whole_datagrams() {
        let s = LinkShape::new(400, 3000, Duration::from_millis(300), 1200);
        assert_eq!(s.rate_bps, 400_000);
        assert_eq!(s.burst_bytes, 3000);
        assert_eq!(s.queue_limit_bytes, 15_000);
        // A tiny link still queues two full datagrams and passes one.
        let s = LinkShape::new(8, 10, Duration::from_millis(1), 1200);
        assert_eq!(s.burst_bytes, 1228);
        assert_eq!(s.queue_limit_bytes, 2456);
    }

    #[test]
    fn the_burst_passes_then_datagrams_leave_at_the_rate() {
        let t0 = Instant::now();
        let mut link = Downlink::new(shape(800), t0); // 100 bytes per ms
        let packet = [7u8; 972]; // 1000 bytes on the link
        // The 3000-byte bucket passes three at once.
        for _ in 0..3 {
            assert_eq!(link.offer(t0, &packet), Verdict::Pass);
        }
        // The queue (10,000 bytes: 100 ms at 800 kbit/s) takes ten more, then drops.
        for _ in 0..10 {
            assert_eq!(link.offer(t0, &packet), Verdict::Queued);
        }
        assert_eq!(link.offer(t0, &packet), Verdict::Dropped);
        // Each queued one leaves 10 ms after the one before.
        let mut buf = [0u8; 2048];
        assert_eq!(link.release(t0, &mut buf), None);
        let mut left = Vec::new();
        let mut now = t0;
        while let Some(at) = link.next_release() {
            now = now.max(at);
            let (len, at) = link.release(now, &mut buf).expect("due");
            assert_eq!(&buf[..len], &packet[..]);
            left.push(at.duration_since(t0).as_micros());
        }
        assert_eq!(left.len(), 10);
        for (i, us) in left.iter().enumerate() {
            let expected = 10_000 * (i as u128 + 1);
            assert!(us.abs_diff(expected) <= 1, "{i}: {us} µs");
        }
        let c = link.counters();
        assert_eq!((c.passed, c.queued, c.dropped), (3, 10, 1));
        assert_eq!(c.bytes, 13_000);
    }

    #[test]
    fn a_late_release_keeps_the_link_rate_and_the_order() {
        let t0 = Instant::now();
        let mut link = Downlink::new(shape(800), t0);
        let mut buf = [0u8; 2048];
        // Drain the bucket, then queue datagrams of different sizes and contents.
        for _ in 0..3 {
            link.offer(t0, &[0u8; 972]);
        }
        let sizes = [72usize, 1172, 472, 272];
        for (i, &n) in sizes.iter().enumerate() {
            assert_eq!(link.offer(t0, &vec![i as u8; n]), Verdict::Queued);
        }
        // Released 1 s late all at once: in order, at the times the link would have let
        // them go (100, 1200, 500 and 300 link bytes at 100 bytes per ms).
        let late = t0 + Duration::from_secs(1);
        let mut at_ms = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let (len, at) = link.release(late, &mut buf).expect("due");
            assert_eq!(len, n);
            assert!(buf[..len].iter().all(|&b| b == i as u8));
            at_ms.push(at.duration_since(t0).as_secs_f64() * 1000.0);
        }
        for (got, want) in at_ms.iter().zip([1.0, 13.0, 18.0, 21.0]) {
            assert!((got - want).abs() < 0.01, "{at_ms:?}");
        }
        assert_eq!(link.release(late, &mut buf), None);
        // Idle since: the bucket is full again.
        assert_eq!(link.offer(late, &[0u8; 972]), Verdict::Pass);
    }

    #[test]
    fn the_ring_wraps_without_mixing_datagrams() {
        let t0 = Instant::now();
        let mut link = Downlink::new(shape(800), t0);
        for _ in 0..3 {
            link.offer(t0, &[0u8; 972]);
        }
        let mut buf = [0u8; 2048];
        let mut now = t0;
        // Many rounds of queue two, release one: the ring wraps many times.
        let mut sent = 0u32;
        let mut got = 0u32;
        for _ in 0..200 {
            for _ in 0..2 {
                let n = 300 + (sent as usize * 37) % 900;
                let packet: Vec<u8> = (0..n).map(|i| (sent as usize + i) as u8).collect();
                if link.offer(now, &packet) == Verdict::Queued {
                    sent += 1;
                }
            }
            now = link.next_release().expect("queued");
            let (len, _) = link.release(now, &mut buf).expect("due");
            let first = buf[0];
            assert!(
                buf[..len]
                    .iter()
                    .enumerate()
                    .all(|(i, &b)| b == first.wrapping_add(i as u8))
            );
            got += 1;
        }
        assert!(sent > got && link.counters().dropped > 0);
    }
}
