//! Signaling request counters, by method and outcome, for `/stats`.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Requests handled, keyed by (method, outcome code).
#[derive(Debug, Default)]
pub struct RequestStats {
    counts: Mutex<BTreeMap<(String, u16), u64>>,
}

impl RequestStats {
    /// Counts one request. Unknown methods are counted under `unknown` so a client cannot
    /// grow the table without bound.
    pub fn record(&self, method: &str, known: bool, code: u16) {
        let method = if known { method } else { "unknown" };
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry((method.to_owned(), code)).or_insert(0) += 1;
    }

    /// `(method, code, count)` for every counted pair.
    pub fn snapshot(&self) -> Vec<(String, u16, u64)> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .iter()
            .map(|((m, c), n)| (m.clone(), *c, *n))
            .collect()
    }
}
