//! `p2pSignal`: relays an opaque payload (an SDP offer or answer, an ICE candidate) from
//! one peer to another peer of the same room, for calls that go peer to peer. The server
//! never reads the payload; it bounds its size (`InputLimits::max_p2p_payload_bytes`),
//! the rate per sender ([`crate::Limits::max_p2p_signals_per_second`]), and numbers and
//! deduplicates what it relays per (sender, target):
//!
//! - a request with `seq` is relayed under that number when it is above the last one
//!   relayed to that target; at or below, it is a duplicate (a retry after a lost answer,
//!   a resumed session sending again): answered `{seq, duplicate: true}`, not relayed;
//! - a request without `seq` is relayed under the last number + 1.
//!
//! So the receiver sees strictly growing `seq` from each sender, each payload once. The
//! numbering starts again when the sender joins a room again.

use std::collections::HashMap;
use std::time::Instant;

use ferrosoup_proto::signaling::{
    P2pSignalNotification, P2pSignalRequest, P2pSignalResponse, ServerNotification,
};

use super::{Answer, Session, reply};
use crate::config::Limits;
use crate::error::SignalError;
use crate::hub::Room;
use crate::limits::RateLimiter;

/// Targets one sender remembers the last `seq` of; beyond, those no longer in the room
/// are forgotten first.
const MAX_TARGETS: usize = 1024;

/// One sender's relay state: its rate and the last `seq` relayed to each target.
#[derive(Debug)]
pub(super) struct P2pRelay {
    rate: RateLimiter,
    last_seq: HashMap<String, u64>,
}

/// What to do with one `p2pSignal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Relay {
    /// Relay it under this number.
    Send(u64),
    /// Already relayed (or older than the last one): answer, do not relay.
    Duplicate(u64),
}

impl P2pRelay {
    /// Fresh state (at `joinRoom`): a full rate bucket, no numbers yet.
    pub(super) fn new(limits: &Limits, now: Instant) -> Self {
        let per_second = limits.max_p2p_signals_per_second;
        Self {
            rate: RateLimiter::new(per_second, per_second.saturating_mul(2), now),
            last_seq: HashMap::new(),
        }
    }

    /// Decides on a payload for `to` with the sender's `seq`; a duplicate takes no rate.
    pub(super) fn admit(
        &mut self,
        to: &str,
        seq: Option<u64>,
        now: Instant,
    ) -> Result<Relay, SignalError> {
        let last = self.last_seq.get(to).copied().unwrap_or(0);
        if let Some(seq) = seq
            && seq <= last
        {
            return Ok(Relay::Duplicate(seq));
        }
        if !self.rate.allow(now) {
            return Err(SignalError::too_many("p2pSignal: rate limit"));
        }
        Ok(Relay::Send(seq.unwrap_or(last.saturating_add(1))))
    }

    /// Records that `seq` was relayed to `to`; `in_room` tells which targets may be
    /// forgotten when the table is full.
    pub(super) fn relayed(&mut self, to: &str, seq: u64, in_room: impl Fn(&str) -> bool) {
        if self.last_seq.len() >= MAX_TARGETS && !self.last_seq.contains_key(to) {
            self.last_seq.retain(|peer, _| in_room(peer));
            if self.last_seq.len() >= MAX_TARGETS {
                // Every one is still in the room (only with rooms above MAX_TARGETS peers):
                // forget the one with the lowest number.
                if let Some(oldest) = self
                    .last_seq
                    .iter()
                    .min_by_key(|(_, s)| **s)
                    .map(|(p, _)| p.clone())
                {
                    self.last_seq.remove(&oldest);
                }
            }
        }
        self.last_seq.insert(to.to_owned(), seq);
    }
}

impl Session {
    pub(super) fn p2p_signal(
        &mut self,
        room: &Room,
        peer_id: &str,
        req: P2pSignalRequest,
    ) -> Answer {
        if req.to_peer_id == peer_id {
            return Err(SignalError::bad_request("toPeerId: that is the sender"));
        }
        let now = Instant::now();
        let limits = &self.hub.config().limits;
        let relay = self.p2p.get_or_insert_with(|| P2pRelay::new(limits, now));
        // The target is looked up before a number is spent on it.
        if !room.peers().contains_key(&req.to_peer_id) {
            return Err(SignalError::new(
                ferrosoup_proto::signaling::ErrorCode::NotFound,
                format!("toPeerId: peer {:?} is not in the room", req.to_peer_id),
            ));
        }
        let seq = match relay.admit(&req.to_peer_id, req.seq, now)? {
            Relay::Duplicate(seq) => {
                return reply(&P2pSignalResponse {
                    seq,
                    duplicate: true,
                });
            }
            Relay::Send(seq) => seq,
        };
        let notification = ServerNotification::P2pSignal(P2pSignalNotification {
            from_peer_id: peer_id.to_owned(),
            seq,
            payload: req.payload,
        });
        {
            let peers = room.peers();
            let Some(target) = peers.get(&req.to_peer_id) else {
                return Err(SignalError::new(
                    ferrosoup_proto::signaling::ErrorCode::NotFound,
                    format!("toPeerId: peer {:?} left the room", req.to_peer_id),
                ));
            };
            target.notifier.notify(&notification);
            relay.relayed(&req.to_peer_id, seq, |p| peers.contains_key(p));
        }
        reply(&P2pSignalResponse {
            seq,
            duplicate: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(per_second: u32) -> Limits {
        Limits {
            max_p2p_signals_per_second: per_second,
            ..Limits::default()
        }
    }

    #[test]
    fn numbers_grow_per_target_and_duplicates_are_not_relayed() {
        let t0 = Instant::now();
        let mut r = P2pRelay::new(&limits(100), t0);
        assert_eq!(r.admit("b", None, t0), Ok(Relay::Send(1)));
        r.relayed("b", 1, |_| true);
        assert_eq!(r.admit("b", None, t0), Ok(Relay::Send(2)));
        r.relayed("b", 2, |_| true);
        // Another target has its own numbers.
        assert_eq!(r.admit("c", None, t0), Ok(Relay::Send(1)));
        // The sender's own numbers: gaps are fine, repeats and older ones are duplicates.
        assert_eq!(r.admit("b", Some(7), t0), Ok(Relay::Send(7)));
        r.relayed("b", 7, |_| true);
        assert_eq!(r.admit("b", Some(7), t0), Ok(Relay::Duplicate(7)));
        assert_eq!(r.admit("b", Some(3), t0), Ok(Relay::Duplicate(3)));
        assert_eq!(r.admit("b", None, t0), Ok(Relay::Send(8)));
    }

    #[test]
    fn rate_allows_two_seconds_at_once_then_the_rate_and_duplicates_are_free() {
        let t0 = Instant::now();
        let mut r = P2pRelay::new(&limits(5), t0);
        for seq in 1..=10 {
            assert_eq!(r.admit("b", Some(seq), t0), Ok(Relay::Send(seq)));
            r.relayed("b", seq, |_| true);
        }
        let refused = r.admit("b", Some(11), t0).unwrap_err();
        assert_eq!(refused.code.code(), 429);
        assert_eq!(r.admit("b", Some(10), t0), Ok(Relay::Duplicate(10)));
        let t1 = t0 + Duration::from_millis(200);
        assert_eq!(r.admit("b", Some(11), t1), Ok(Relay::Send(11)));
    }

    #[test]
    fn the_target_table_is_bounded() {
        let t0 = Instant::now();
        let mut r = P2pRelay::new(&limits(100), t0);
        for i in 0..MAX_TARGETS + 10 {
            r.relayed(&format!("p{i}"), 1, |p| p.ends_with('7'));
        }
        assert!(r.last_seq.len() <= MAX_TARGETS);
        assert!(r.last_seq.contains_key(&format!("p{}", MAX_TARGETS + 9)));
    }
}
