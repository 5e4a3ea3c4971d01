//! Answers of recent requests, so a request re-sent with the same id, method and data (after
//! a reconnect) gets the same answer instead of running twice.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::Value;

/// How many answered requests a session remembers.
pub const CACHED_REQUESTS: usize = 256;

struct Entry {
    id: u64,
    method: String,
    /// Fingerprint of the request's data: requests such as `join` carry KiBs of
    /// capabilities, which a session need not keep 256 of.
    data: u64,
    answer: String,
}

/// A 64-bit fingerprint of request data (SipHash with fixed keys): two different data of
/// the same id and method would have to collide for a wrong answer to be replayed.
fn fingerprint(data: &Value) -> u64 {
    let mut h = DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

/// The last [`CACHED_REQUESTS`] answered requests of a session.
#[derive(Default)]
pub struct RequestCache {
    entries: VecDeque<Entry>,
}

impl RequestCache {
    /// The cached answer of the same request (same id, method and data), if any.
    pub fn lookup(&self, id: u64, method: &str, data: &Value) -> Option<&str> {
        let entry = self.entries.iter().find(|e| e.id == id)?;
        (entry.method == method && entry.data == fingerprint(data))
            .then_some(entry)
            .map(|e| e.answer.as_str())
    }

    /// Remembers an answer; a different request reusing an id replaces the old entry.
    pub fn store(&mut self, id: u64, method: &str, data: &Value, answer: String) {
        self.entries.retain(|e| e.id != id);
        if self.entries.len() == CACHED_REQUESTS {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry {
            id,
            method: method.to_owned(),
            data: fingerprint(data),
            answer,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn same_request_hits_different_data_misses() {
        let mut c = RequestCache::default();
        c.store(7, "produce", &json!({"a": 1}), "answer".into());
        assert_eq!(c.lookup(7, "produce", &json!({"a": 1})), Some("answer"));
        assert_eq!(c.lookup(7, "produce", &json!({"a": 2})), None);
        assert_eq!(c.lookup(7, "consume", &json!({"a": 1})), None);
        c.store(7, "consume", &json!({}), "other".into());
        assert_eq!(
            c.lookup(7, "produce", &json!({"a": 1})),
            None,
            "id reused by a new request"
        );
    }

    #[test]
    fn keeps_the_last_256() {
        let mut c = RequestCache::default();
        for id in 0..300u64 {
            c.store(id, "ping", &json!({}), id.to_string());
        }
        assert_eq!(c.lookup(43, "ping", &json!({})), None);
        assert_eq!(c.lookup(44, "ping", &json!({})), Some("44"));
        assert_eq!(c.lookup(299, "ping", &json!({})), Some("299"));
    }
}
