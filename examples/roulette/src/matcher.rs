//! The matching queue, without I/O: clients join, wait, get paired, skip (`next`), report,
//! leave, drop and come back; time is an argument and every call returns the messages to
//! send. The server shell (`main.rs`) owns the sockets and the clock.
//!
//! Fairness: the queue is first in, first out; the longest waiting client is paired with
//! the next compatible one. Two clients who were just together (one skipped the other)
//! are not paired again for [`Settings::repair_hold`], so with anyone else waiting each
//! meets someone new; a reported pair is never paired again. Timeouts: a client waiting
//! longer than [`Settings::wait_timeout`] is told so and taken out of the queue; a pair
//! that does not report a connected call within [`Settings::setup_timeout`] is split and
//! both go back to the front of the queue; a client whose socket dropped has
//! [`Settings::reconnect_grace`] to come back before it counts as gone.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A client of the roulette (its id is also its peer id in the call's room).
pub type ClientId = String;

/// Timeouts of the queue.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long two former partners are kept apart.
    pub repair_hold: Duration,
    /// Longest wait in the queue.
    pub wait_timeout: Duration,
    /// Longest time from pairing to a connected call.
    pub setup_timeout: Duration,
    /// How long a dropped client keeps its place or call.
    pub reconnect_grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            repair_hold: Duration::from_secs(10),
            wait_timeout: Duration::from_secs(300),
            setup_timeout: Duration::from_secs(30),
            reconnect_grace: Duration::from_secs(15),
        }
    }
}

/// A message from a client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ClientMsg {
    /// Enter the queue (again, after a timeout).
    Join {
        /// Display name.
        name: String,
    },
    /// End this call and meet someone else.
    Next,
    /// End this call, never be paired with this partner again.
    Report {
        /// What happened.
        #[serde(default)]
        reason: String,
    },
    /// Leave the roulette.
    Leave,
    /// The call is up (`p2p` or `sfu`).
    Connected {
        /// How the media flows.
        mode: String,
    },
}

/// A message to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerMsg {
    /// In the queue.
    Waiting {
        /// Clients ahead of this one.
        ahead: usize,
    },
    /// Paired: join `room` as `peerId` and call `partner`.
    #[serde(rename_all = "camelCase")]
    Paired {
        /// The call's id (also its room id).
        pair_id: String,
        /// The partner's peer id.
        partner_id: ClientId,
        /// The partner's display name.
        partner_name: String,
        /// This side makes the peer-to-peer offer.
        initiator: bool,
    },
    /// The partner skipped, reported, left, or the call did not come up.
    PartnerLeft {
        /// `next`, `report`, `left`, `setupTimeout`.
        reason: String,
    },
    /// Waited longer than the wait timeout; send `join` to wait again.
    Timeout,
    /// A message that does not fit the client's state.
    Error {
        /// What is wrong.
        message: String,
    },
}

/// Where a client is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// Connected, not in the queue (new, or after a timeout).
    Idle,
    /// In the queue since.
    Waiting(Instant),
    /// In a call.
    Paired {
        pair_id: String,
        partner: ClientId,
        since: Instant,
        initiator: bool,
    },
}

#[derive(Debug)]
struct Client {
    name: String,
    place: Place,
    /// The partner it was last with, and when they parted.
    last_partner: Option<(ClientId, Instant)>,
    /// Partners it must never meet again (reports, either way).
    blocked: HashSet<ClientId>,
    /// The socket dropped at this time; `None` while connected.
    away_since: Option<Instant>,
    /// Whether this side said the call is up.
    connected: bool,
}

/// Counters for `/stats`.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Pairs made.
    pub pairs: u64,
    /// Calls connected peer to peer / through the SFU (each side counts).
    pub connected_p2p: u64,
    /// Calls connected through the SFU (each side counts).
    pub connected_sfu: u64,
    /// Reports.
    pub reports: u64,
    /// Waits that timed out.
    pub wait_timeouts: u64,
    /// Pairs split because the call did not come up.
    pub setup_timeouts: u64,
}

/// The queue and the calls.
#[derive(Debug, Default)]
pub struct Matcher {
    settings: Settings,
    clients: HashMap<ClientId, Client>,
    queue: VecDeque<ClientId>,
    counters: Counters,
}

/// Messages to send: (to, message).
pub type Out = Vec<(ClientId, ServerMsg)>;

impl Matcher {
    /// An empty roulette.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Clients known (connected or within their reconnect grace).
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Clients waiting.
    pub fn waiting_count(&self) -> usize {
        self.queue.len()
    }

    /// A new client (connected, idle).
    pub fn connect(&mut self, id: &str) {
        self.clients.insert(
            id.to_owned(),
            Client {
                name: String::new(),
                place: Place::Idle,
                last_partner: None,
                blocked: HashSet::new(),
                away_since: None,
                connected: false,
            },
        );
    }

    /// A client's socket is back within its grace: the message that restores its view.
    pub fn reconnect(&mut self, id: &str) -> Option<ServerMsg> {
        self.clients.get_mut(id)?.away_since = None;
        let client = self.clients.get(id)?;
        Some(match &client.place {
            Place::Idle => ServerMsg::Timeout,
            Place::Waiting(_) => ServerMsg::Waiting {
                ahead: self.queue.iter().position(|c| c == id).unwrap_or(0),
            },
            Place::Paired {
                pair_id,
                partner,
                initiator,
                ..
            } => ServerMsg::Paired {
                pair_id: pair_id.clone(),
                partner_id: partner.clone(),
                partner_name: self
                    .clients
                    .get(partner)
                    .map(|p| p.name.clone())
                    .unwrap_or_default(),
                initiator: *initiator,
            },
        })
    }

    /// A client's socket dropped: it has the reconnect grace to come back.
    pub fn disconnect(&mut self, id: &str, now: Instant) {
        if let Some(client) = self.clients.get_mut(id) {
            client.away_since = Some(now);
        }
    }

    /// Whether the client exists (for reconnection).
    pub fn knows(&self, id: &str) -> bool {
        self.clients.contains_key(id)
    }

    /// Handles one message of client `id`.
    pub fn handle(&mut self, id: &str, msg: ClientMsg, now: Instant) -> Out {
        let mut out = Vec::new();
        let Some(client) = self.clients.get_mut(id) else {
            return out;
        };
        match msg {
            ClientMsg::Join { name } => {
                if client.place != Place::Idle {
                    out.push((id.to_owned(), error("already waiting or in a call")));
                    return out;
                }
                client.name = name.chars().take(64).collect();
                self.enqueue(id, now, false);
            }
            ClientMsg::Next => {
                if !self.split(id, "next", now, &mut out) {
                    out.push((id.to_owned(), error("not in a call")));
                    return out;
                }
            }
            ClientMsg::Report { reason } => {
                let partner = match &client.place {
                    Place::Paired { partner, .. } => partner.clone(),
                    _ => {
                        out.push((id.to_owned(), error("not in a call")));
                        return out;
                    }
                };
                tracing::info!(reporter = %id, reported = %partner, %reason, "report");
                self.counters.reports += 1;
                client.blocked.insert(partner.clone());
                if let Some(p) = self.clients.get_mut(&partner) {
                    p.blocked.insert(id.to_owned());
                }
                self.split(id, "report", now, &mut out);
            }
            ClientMsg::Leave => {
                self.remove(id, now, &mut out);
            }
            ClientMsg::Connected { mode } => {
                if matches!(client.place, Place::Paired { .. }) && !client.connected {
                    client.connected = true;
                    match mode.as_str() {
                        "p2p" => self.counters.connected_p2p += 1,
                        _ => self.counters.connected_sfu += 1,
                    }
                }
                return out;
            }
        }
        self.pair_waiting(now, &mut out);
        self.positions(&mut out);
        out
    }

    /// Timeouts due at `now`, then pairs that became possible (holds expired).
    pub fn tick(&mut self, now: Instant) -> Out {
        let mut out = Vec::new();
        let gone: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                c.away_since.is_some_and(|t| {
                    now.saturating_duration_since(t) >= self.settings.reconnect_grace
                })
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove(&id, now, &mut out);
        }
        let expired: Vec<ClientId> = self
            .queue
            .iter()
            .filter(|id| {
                matches!(self.clients.get(*id).map(|c| &c.place),
                    Some(Place::Waiting(t)) if now.saturating_duration_since(*t) >= self.settings.wait_timeout)
            })
            .cloned()
            .collect();
        for id in expired {
            self.queue.retain(|c| *c != id);
            if let Some(c) = self.clients.get_mut(&id) {
                c.place = Place::Idle;
            }
            self.counters.wait_timeouts += 1;
            out.push((id, ServerMsg::Timeout));
        }
        let stalled: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, c)| match &c.place {
                Place::Paired {
                    since, initiator, ..
                } => {
                    *initiator
                        && now.saturating_duration_since(*since) >= self.settings.setup_timeout
                }
                _ => false,
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in stalled {
            let up = self.clients.get(&id).is_some_and(|c| c.connected)
                && self
                    .partner_of(&id)
                    .is_some_and(|p| self.clients.get(&p).is_some_and(|c| c.connected));
            if !up {
                self.counters.setup_timeouts += 1;
                if let Some(partner) = self.partner_of(&id) {
                    out.push((
                        id.clone(),
                        ServerMsg::PartnerLeft {
                            reason: "setupTimeout".into(),
                        },
                    ));
                    out.push((
                        partner.clone(),
                        ServerMsg::PartnerLeft {
                            reason: "setupTimeout".into(),
                        },
                    ));
                    self.unpair(&id, &partner, now);
                    self.enqueue(&id, now, true);
                    self.enqueue(&partner, now, true);
                }
            }
        }
        self.pair_waiting(now, &mut out);
        if !out.is_empty() {
            self.positions(&mut out);
        }
        out
    }

    fn partner_of(&self, id: &str) -> Option<ClientId> {
        match &self.clients.get(id)?.place {
            Place::Paired { partner, .. } => Some(partner.clone()),
            _ => None,
        }
    }

    /// Ends `id`'s call (`reason` for the partner); both wait again, the partner first.
    fn split(&mut self, id: &str, reason: &str, now: Instant, out: &mut Out) -> bool {
        let Some(partner) = self.partner_of(id) else {
            return false;
        };
        self.unpair(id, &partner, now);
        out.push((
            partner.clone(),
            ServerMsg::PartnerLeft {
                reason: reason.to_owned(),
            },
        ));
        self.enqueue(&partner, now, true);
        self.enqueue(id, now, false);
        true
    }

    fn unpair(&mut self, a: &str, b: &str, now: Instant) {
        for (x, y) in [(a, b), (b, a)] {
            if let Some(c) = self.clients.get_mut(x) {
                c.place = Place::Idle;
                c.connected = false;
                c.last_partner = Some((y.to_owned(), now));
            }
        }
    }

    /// Puts a client in the queue: at the back, or at the front for one whose call ended
    /// through no doing of its own.
    fn enqueue(&mut self, id: &str, now: Instant, front: bool) {
        let Some(c) = self.clients.get_mut(id) else {
            return;
        };
        c.place = Place::Waiting(now);
        self.queue.retain(|q| q != id);
        if front {
            self.queue.push_front(id.to_owned());
        } else {
            self.queue.push_back(id.to_owned());
        }
    }

    /// Takes a client out for good; its partner waits again.
    fn remove(&mut self, id: &str, now: Instant, out: &mut Out) {
        if let Some(partner) = self.partner_of(id) {
            self.unpair(id, &partner, now);
            out.push((
                partner.clone(),
                ServerMsg::PartnerLeft {
                    reason: "left".into(),
                },
            ));
            self.enqueue(&partner, now, true);
        }
        self.queue.retain(|q| q != id);
        self.clients.remove(id);
        for c in self.clients.values_mut() {
            c.blocked.remove(id);
            if c.last_partner.as_ref().is_some_and(|(p, _)| p == id) {
                c.last_partner = None;
            }
        }
    }

    /// Whether `a` and `b` may be paired now.
    fn compatible(&self, a: &str, b: &str, now: Instant) -> bool {
        let (Some(ca), Some(cb)) = (self.clients.get(a), self.clients.get(b)) else {
            return false;
        };
        if ca.blocked.contains(b) || cb.blocked.contains(a) {
            return false;
        }
        let held = |c: &Client, other: &str| {
            c.last_partner.as_ref().is_some_and(|(p, t)| {
                p == other && now.saturating_duration_since(*t) < self.settings.repair_hold
            })
        };
        !held(ca, b) && !held(cb, a)
    }

    /// Pairs waiting clients, oldest first, each with the first compatible one after it.
    /// Clients whose socket is down are skipped (they keep their place).
    fn pair_waiting(&mut self, now: Instant, out: &mut Out) {
        let mut i = 0;
        while i < self.queue.len() {
            let a = self.queue[i].clone();
            if self.clients.get(&a).is_none_or(|c| c.away_since.is_some()) {
                i += 1;
                continue;
            }
            let found = (i + 1..self.queue.len()).find(|&j| {
                let b = &self.queue[j];
                self.clients.get(b).is_some_and(|c| c.away_since.is_none())
                    && self.compatible(&a, b, now)
            });
            let Some(j) = found else {
                i += 1;
                continue;
            };
            let b = self.queue.remove(j).unwrap_or_default();
            self.queue.remove(i);
            let pair_id = format!("roulette-{}", uuid::Uuid::new_v4().simple());
            self.counters.pairs += 1;
            for (me, other, initiator) in [(&a, &b, true), (&b, &a, false)] {
                let other_name = self
                    .clients
                    .get(other)
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                if let Some(c) = self.clients.get_mut(me) {
                    c.place = Place::Paired {
                        pair_id: pair_id.clone(),
                        partner: other.clone(),
                        since: now,
                        initiator,
                    };
                    c.connected = false;
                }
                out.push((
                    me.clone(),
                    ServerMsg::Paired {
                        pair_id: pair_id.clone(),
                        partner_id: other.clone(),
                        partner_name: other_name,
                        initiator,
                    },
                ));
            }
        }
    }

    /// Tells every waiting client its place.
    fn positions(&self, out: &mut Out) {
        for (ahead, id) in self.queue.iter().enumerate() {
            out.push((id.clone(), ServerMsg::Waiting { ahead }));
        }
    }
}

fn error(message: &str) -> ServerMsg {
    ServerMsg::Error {
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(m: &mut Matcher, id: &str, now: Instant) -> Out {
        m.connect(id);
        m.handle(
            id,
            ClientMsg::Join {
                name: id.to_uppercase(),
            },
            now,
        )
    }

    /// The pairs announced in `out`, as (initiator, partner).
    fn pairs(out: &Out) -> Vec<(String, String)> {
        out.iter()
            .filter_map(|(to, m)| match m {
                ServerMsg::Paired {
                    partner_id,
                    initiator: true,
                    ..
                } => Some((to.clone(), partner_id.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn first_come_first_paired() {
        let t = Instant::now();
        let mut m = Matcher::new(Settings::default());
        assert!(pairs(&join(&mut m, "a", t)).is_empty());
        assert_eq!(pairs(&join(&mut m, "b", t)), [("a".into(), "b".into())]);
        assert!(pairs(&join(&mut m, "c", t)).is_empty());
        assert_eq!(pairs(&join(&mut m, "d", t)), [("c".into(), "d".into())]);
        assert_eq!(m.waiting_count(), 0);
        assert_eq!(m.counters().pairs, 2);
    }

    #[test]
    fn next_meets_someone_else_while_others_wait_and_the_old_partner_only_after_the_hold() {
        let t = Instant::now();
        let mut m = Matcher::new(Settings::default());
        for id in ["a", "b", "c", "d"] {
            join(&mut m, id, t);
        }
        // a skips b: b waits (first), a waits; nobody else does: no re-pair yet.
        let out = m.handle("a", ClientMsg::Next, t);
        assert!(out.contains(&(
            "b".into(),
            ServerMsg::PartnerLeft {
                reason: "next".into()
            }
        )));
        assert!(pairs(&out).is_empty(), "{out:?}");
        // c skips d: the four wait as d, b, a, c (skipped ones first); d meets b, a meets c.
        let out = m.handle("c", ClientMsg::Next, t);
        assert_eq!(
            pairs(&out),
            [("d".into(), "b".into()), ("a".into(), "c".into())]
        );
        // Alone with the old partner: they meet again once the hold is over.
        let mut m = Matcher::new(Settings::default());
        join(&mut m, "a", t);
        join(&mut m, "b", t);
        assert!(pairs(&m.handle("a", ClientMsg::Next, t)).is_empty());
        assert!(pairs(&m.tick(t + Duration::from_secs(9))).is_empty());
        assert_eq!(
            pairs(&m.tick(t + Duration::from_secs(10))),
            [("b".into(), "a".into())]
        );
    }

    #[test]
    fn a_client_that_leaves_is_replaced_and_reported_ones_never_meet_again() {
        let t = Instant::now();
        let mut m = Matcher::new(Settings::default());
        for id in ["a", "b", "c"] {
            join(&mut m, id, t);
        }
        let out = m.handle("a", ClientMsg::Leave, t);
        assert!(out.contains(&(
            "b".into(),
            ServerMsg::PartnerLeft {
                reason: "left".into()
            }
        )));
        assert_eq!(
            pairs(&out),
            [("b".into(), "c".into())],
            "b is replaced by c"
        );
        assert_eq!(m.client_count(), 2);
        let out = m.handle(
            "c",
            ClientMsg::Report {
                reason: "rude".into(),
            },
            t,
        );
        assert!(out.contains(&(
            "b".into(),
            ServerMsg::PartnerLeft {
                reason: "report".into()
            }
        )));
        assert!(pairs(&m.tick(t + Duration::from_secs(60))).is_empty());
        let out = join(&mut m, "e", t + Duration::from_secs(60));
        assert_eq!(pairs(&out), [("b".into(), "e".into())]);
        assert_eq!(m.counters().reports, 1);
    }

    #[test]
    fn waits_calls_and_dropped_sockets_time_out() {
        let t = Instant::now();
        let settings = Settings::default();
        let mut m = Matcher::new(settings.clone());
        join(&mut m, "a", t);
        let out = m.tick(t + settings.wait_timeout);
        assert_eq!(out, [("a".into(), ServerMsg::Timeout)]);
        assert_eq!(m.waiting_count(), 0);
        // A call that never comes up is split; both wait again and meet once the hold ends.
        join(&mut m, "b", t);
        m.handle("a", ClientMsg::Join { name: "A".into() }, t);
        m.handle("b", ClientMsg::Connected { mode: "p2p".into() }, t);
        let out = m.tick(t + settings.setup_timeout);
        assert!(out.contains(&(
            "a".into(),
            ServerMsg::PartnerLeft {
                reason: "setupTimeout".into()
            }
        )));
        assert_eq!(m.counters().setup_timeouts, 1);
        assert_eq!(m.waiting_count(), 2);
        // A dropped socket keeps its place for the grace, then is gone and its partner waits.
        let t2 = t + settings.setup_timeout + settings.repair_hold;
        assert_eq!(pairs(&m.tick(t2)).len(), 1);
        m.disconnect("a", t2);
        assert!(matches!(m.reconnect("a"), Some(ServerMsg::Paired { .. })));
        m.disconnect("a", t2);
        let out = m.tick(t2 + settings.reconnect_grace);
        assert!(out.contains(&(
            "b".into(),
            ServerMsg::PartnerLeft {
                reason: "left".into()
            }
        )));
        assert!(!m.knows("a"));
    }
}
