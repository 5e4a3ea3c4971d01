//! Signaling request counters, by method and outcome, the join time and the join →
//! connected time, for `/stats`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferrosoup_room::stats::Histogram;

/// Upper bounds of the join-time buckets, microseconds (1 ms .. 10 s).
pub const JOIN_TIME_BOUNDS_US: &[u64] = &[
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// Requests handled, keyed by (method, outcome code), how long joins took, and how long
/// from a join until each transport of the peer connected.
#[derive(Debug, Default)]
pub struct RequestStats {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    counts: BTreeMap<(String, u16), u64>,
    join_time: Histogram,
    /// Transports not connected yet (ICE and DTLS), with their peer's join instant: one
    /// entry per open transport at most (removed when it connects or closes).
    connecting: HashMap<uuid::Uuid, Instant>,
    join_connected_time: Histogram,
}

impl RequestStats {
    /// Counts one request that took `took` to answer. Unknown methods are counted under
    /// `unknown` so a client cannot grow the table without bound; a successful `joinRoom`
    /// also counts in the join-time histogram.
    pub fn record(&self, method: &str, known: bool, code: u16, took: Duration) {
        let method = if known { method } else { "unknown" };
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *inner.counts.entry((method.to_owned(), code)).or_insert(0) += 1;
        if method == "joinRoom" && code == 200 {
            let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            inner.join_time.record_n(JOIN_TIME_BOUNDS_US, us, 1);
        }
    }

    /// A transport was created for a peer whose `joinRoom` request began at `joined_at`.
    pub fn transport_created(&self, transport: uuid::Uuid, joined_at: Instant) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.connecting.insert(transport, joined_at);
    }

    /// A transport's ICE and DTLS are connected at `now`: the first time, the time since
    /// its peer's join counts in the join → connected histogram.
    pub fn transport_connected(&self, transport: uuid::Uuid, now: Instant) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(joined_at) = inner.connecting.remove(&transport) {
            let us = u64::try_from(now.saturating_duration_since(joined_at).as_micros())
                .unwrap_or(u64::MAX);
            inner
                .join_connected_time
                .record_n(JOIN_TIME_BOUNDS_US, us, 1);
        }
    }

    /// An object closed (a transport that never connected counts nowhere).
    pub fn forget(&self, id: uuid::Uuid) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.connecting.remove(&id);
    }

    /// Time from a `joinRoom` request to each of the peer's transports' first ICE + DTLS
    /// connected state, microseconds, in [`JOIN_TIME_BOUNDS_US`] buckets: what a user
    /// waits for, including the client's own requests and ICE and DTLS handshakes.
    pub fn join_connected_time(&self) -> Histogram {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join_connected_time
    }

    /// `(method, code, count)` for every counted pair.
    pub fn snapshot(&self) -> Vec<(String, u16, u64)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .counts
            .iter()
            .map(|((m, c), n)| (m.clone(), *c, *n))
            .collect()
    }

    /// Time from a `joinRoom` request to its successful answer, microseconds, in
    /// [`JOIN_TIME_BOUNDS_US`] buckets.
    pub fn join_time(&self) -> Histogram {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join_time
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successful_joins_count_in_the_join_time() {
        let stats = RequestStats::default();
        stats.record("joinRoom", true, 200, Duration::from_millis(3));
        stats.record("joinRoom", true, 429, Duration::from_millis(1));
        stats.record("produce", true, 200, Duration::from_millis(1));
        let join = stats.join_time();
        assert_eq!(join.count(), 1);
        assert_eq!(join.sum, 3_000);
        assert_eq!(join.counts[2], 1, "3 ms is in the 5 ms bucket");
        assert_eq!(stats.snapshot().len(), 3);
    }

    #[test]
    fn transports_count_once_from_their_peers_join_to_connected() {
        let stats = RequestStats::default();
        let joined = Instant::now();
        let (a, b, c) = (
            uuid::Uuid::new_v4(),
            uuid::Uuid::new_v4(),
            uuid::Uuid::new_v4(),
        );
        stats.transport_created(a, joined);
        stats.transport_created(b, joined);
        stats.transport_created(c, joined);
        stats.transport_connected(a, joined + Duration::from_millis(40));
        // Connected again after an ICE restart: not a second sample.
        stats.transport_connected(a, joined + Duration::from_millis(900));
        stats.transport_connected(b, joined + Duration::from_millis(300));
        // Closed before it connected: no sample, no entry left.
        stats.forget(c);
        stats.transport_connected(c, joined + Duration::from_millis(5));
        let h = stats.join_connected_time();
        assert_eq!(h.count(), 2);
        assert_eq!(h.sum, 340_000);
        assert_eq!(h.counts[5], 1, "40 ms is in the 50 ms bucket");
        assert_eq!(h.counts[8], 1, "300 ms is in the 500 ms bucket");
        assert!(stats.inner.lock().unwrap().connecting.is_empty());
    }
}
