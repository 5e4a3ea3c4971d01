//! Signaling request counters, by method and outcome, and the join time, for `/stats`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use ferrosoup_room::stats::Histogram;

/// Upper bounds of the join-time buckets, microseconds (1 ms .. 10 s).
pub const JOIN_TIME_BOUNDS_US: &[u64] = &[
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// Requests handled, keyed by (method, outcome code), and how long joins took.
#[derive(Debug, Default)]
pub struct RequestStats {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    counts: BTreeMap<(String, u16), u64>,
    join_time: Histogram,
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
}
