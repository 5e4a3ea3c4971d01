//! The link from a peer to its current WebSocket connection. Notifications for a peer go
//! through its [`Notifier`]; while the connection is down (the resume grace period) they are
//! queued, bounded, and delivered first, in order, when a new connection takes the peer over.
//!
//! The link is also how the hub, which knows peers but not sessions, tells a peer's session
//! that its room was closed under it ([`Notifier::room_closed`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use ferrosoup_proto::signaling::ServerNotification;
use tokio::sync::mpsc;

/// A frame the session sends to its client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// A JSON text frame.
    Text(String),
    /// Close the WebSocket with this code and reason.
    Close(u16, String),
}

/// WebSocket close codes the signaling layer sends (docs/protocol.md, "Close codes").
pub mod close_code {
    /// The room was closed, or the server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// Too many invalid frames on the connection.
    pub const TOO_MANY_INVALID_FRAMES: u16 = 1008;
    /// Another connection took the session over with `?resume=`.
    pub const TAKEN_OVER: u16 = 4000;
    /// `?resume=` with an access token for another peer.
    pub const NOT_YOUR_SESSION: u16 = 4403;
    /// `?resume=` with a token the server does not know (any more).
    pub const UNKNOWN_SESSION: u16 = 4404;
    /// The connection did not read what the server sent: its send queue went over
    /// `max_send_queue_bytes`, or one send stalled for `send_timeout`. The peer is kept for
    /// the resume grace period.
    pub const NOT_READING: u16 = 4408;
}

/// Notifications kept for a disconnected peer; older ones are dropped beyond this (or
/// beyond the link's byte bound, see [`Notifier::attached`]).
pub const MAX_QUEUED_NOTIFICATIONS: usize = 1024;

/// Identifies one WebSocket connection.
pub type ConnectionId = u64;

enum Link {
    Attached {
        tx: mpsc::UnboundedSender<Outgoing>,
        connection: ConnectionId,
    },
    Detached {
        queue: VecDeque<String>,
        /// Bytes in `queue`.
        bytes: usize,
        /// Notifications dropped because the queue was full.
        dropped: u64,
        /// The connection that was attached last; its end still owns the detach.
        last: ConnectionId,
    },
}

struct LinkState {
    link: Link,
    /// Incremented on every attach, so a grace timer can tell whether the peer came back.
    generation: u64,
    /// Set by the hub when it closed the peer's room (and removed the peer with it); taken
    /// by the session, which then forgets the room.
    room_closed: bool,
    /// Bytes of notifications kept while detached.
    max_queued_bytes: usize,
}

/// Appends `text` to a detached peer's queue, dropping the oldest entries beyond
/// [`MAX_QUEUED_NOTIFICATIONS`] or `max_bytes`.
fn enqueue(
    queue: &mut VecDeque<String>,
    bytes: &mut usize,
    dropped: &mut u64,
    text: String,
    max_bytes: usize,
) {
    *bytes += text.len();
    queue.push_back(text);
    while queue.len() > MAX_QUEUED_NOTIFICATIONS || (*bytes > max_bytes && !queue.is_empty()) {
        if let Some(old) = queue.pop_front() {
            *bytes -= old.len();
            *dropped += 1;
        }
    }
}

/// Sends notifications to a peer's current connection, or queues them while it has none.
/// Cheap to clone; clones share the link.
#[derive(Clone)]
pub struct Notifier(Arc<Mutex<LinkState>>);

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("attached", &self.is_attached())
            .finish()
    }
}

impl Notifier {
    /// A link attached to a connection; while detached it keeps at most
    /// `max_queued_bytes` of notifications (and [`MAX_QUEUED_NOTIFICATIONS`]).
    pub fn attached(
        tx: mpsc::UnboundedSender<Outgoing>,
        connection: ConnectionId,
        max_queued_bytes: usize,
    ) -> Self {
        Self(Arc::new(Mutex::new(LinkState {
            link: Link::Attached { tx, connection },
            generation: 0,
            room_closed: false,
            max_queued_bytes,
        })))
    }

    /// A link to no connection that keeps nothing: a peer that reads no notifications
    /// (a broadcaster driven over HTTP).
    pub fn unattached() -> Self {
        Self(Arc::new(Mutex::new(LinkState {
            link: Link::Detached {
                queue: VecDeque::new(),
                bytes: 0,
                dropped: 0,
                last: 0,
            },
            generation: 0,
            room_closed: false,
            max_queued_bytes: 0,
        })))
    }

    fn state(&self) -> MutexGuard<'_, LinkState> {
        // Nothing panics while holding this lock; recover the data if it ever happened.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends (or queues) a notification.
    pub fn notify(&self, notification: &ServerNotification) {
        match notification.to_frame() {
            Ok(frame) => self.notify_frame(frame),
            Err(e) => {
                tracing::error!(method = notification.method(), "notification not sent: {e}");
            }
        }
    }

    /// Sends (or queues) a notification frame serialized by the caller (one serialization
    /// for a notification broadcast to many peers).
    pub fn notify_frame(&self, text: String) {
        let mut state = self.state();
        let max_bytes = state.max_queued_bytes;
        match &mut state.link {
            Link::Attached { tx, connection } => {
                // The connection may be gone before its end was noticed: keep the
                // notification for a resume instead of losing it.
                if let Err(mpsc::error::SendError(Outgoing::Text(text))) =
                    tx.send(Outgoing::Text(text))
                {
                    let last = *connection;
                    let (mut queue, mut bytes, mut dropped) = (VecDeque::new(), 0, 0);
                    enqueue(&mut queue, &mut bytes, &mut dropped, text, max_bytes);
                    state.link = Link::Detached {
                        queue,
                        bytes,
                        dropped,
                        last,
                    };
                }
            }
            Link::Detached {
                queue,
                bytes,
                dropped,
                ..
            } => enqueue(queue, bytes, dropped, text, max_bytes),
        }
    }

    /// Moves the peer to a new connection: queued notifications are sent to it first, in
    /// order. Returns the previous connection's sender, if it was still attached (the caller
    /// closes it).
    pub fn attach(
        &self,
        tx: mpsc::UnboundedSender<Outgoing>,
        connection: ConnectionId,
    ) -> Option<mpsc::UnboundedSender<Outgoing>> {
        let mut state = self.state();
        state.generation += 1;
        let old = std::mem::replace(
            &mut state.link,
            Link::Attached {
                tx: tx.clone(),
                connection,
            },
        );
        match old {
            Link::Attached { tx: old_tx, .. } => Some(old_tx),
            Link::Detached { queue, dropped, .. } => {
                if dropped > 0 {
                    tracing::info!(
                        dropped,
                        "notifications dropped while the peer was disconnected"
                    );
                }
                for text in queue {
                    let _ = tx.send(Outgoing::Text(text));
                }
                None
            }
        }
    }

    /// Detaches the link from `connection` (if it is still the attached one) and starts
    /// queueing. Returns the generation to check later with [`Notifier::still_detached`].
    pub fn detach(&self, connection: ConnectionId) -> Option<u64> {
        let mut state = self.state();
        match &state.link {
            Link::Attached { connection: c, .. } if *c == connection => {
                state.link = Link::Detached {
                    queue: VecDeque::new(),
                    bytes: 0,
                    dropped: 0,
                    last: connection,
                };
                Some(state.generation)
            }
            // Already detached by a failed send on this connection.
            Link::Detached { last, .. } if *last == connection => Some(state.generation),
            _ => None,
        }
    }

    /// True when no connection took the peer over since the detach that returned
    /// `generation`.
    pub fn still_detached(&self, generation: u64) -> bool {
        let state = self.state();
        state.generation == generation && matches!(state.link, Link::Detached { .. })
    }

    /// Tells the peer's session that the hub closed its room, the peer with it: the session
    /// forgets the room at its next step ([`Notifier::take_room_closed`]), and `close` is sent
    /// to the connection when one is attached (a detached peer's resume is refused).
    pub fn room_closed(&self, close: Outgoing) {
        let mut state = self.state();
        state.room_closed = true;
        if let Link::Attached { tx, .. } = &state.link {
            let _ = tx.send(close);
        }
    }

    /// Whether the hub closed the peer's room since the last call (see
    /// [`Notifier::room_closed`]).
    pub fn take_room_closed(&self) -> bool {
        std::mem::take(&mut self.state().room_closed)
    }

    /// Whether two notifiers are the same peer's link.
    pub fn same_link(&self, other: &Notifier) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Whether a connection is attached.
    pub fn is_attached(&self) -> bool {
        matches!(self.state().link, Link::Attached { .. })
    }

    /// Sends a frame to the attached connection (dropped while detached).
    pub fn send(&self, frame: Outgoing) {
        if let Link::Attached { tx, .. } = &self.state().link {
            let _ = tx.send(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrosoup_proto::signaling::PeerLeftNotification;
    use serde_json::Value;

    /// A notification told apart by its peer id.
    fn left(peer: &str) -> ServerNotification {
        ServerNotification::PeerLeft(PeerLeftNotification {
            peer_id: peer.to_owned(),
        })
    }

    /// The peer ids of the `peerLeft` notifications received.
    fn texts(rx: &mut mpsc::UnboundedReceiver<Outgoing>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(Outgoing::Text(t)) = rx.try_recv() {
            let frame = serde_json::from_str::<Value>(&t).unwrap();
            assert_eq!(frame["notification"], true);
            assert_eq!(frame["method"], "peerLeft");
            out.push(frame["data"]["peerId"].as_str().unwrap().to_owned());
        }
        out
    }

    #[test]
    fn queued_notifications_are_delivered_first_in_order_on_attach() {
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let n = Notifier::attached(tx1, 1, usize::MAX);
        n.notify(&left("a"));
        let generation = n.detach(1).unwrap();
        n.notify(&left("b"));
        n.notify(&left("c"));
        assert!(n.still_detached(generation));
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        assert!(n.attach(tx2, 2).is_none());
        n.notify(&left("d"));
        assert!(!n.still_detached(generation));
        assert_eq!(texts(&mut rx1), ["a"]);
        assert_eq!(texts(&mut rx2), ["b", "c", "d"]);
    }

    #[test]
    fn notifications_to_a_dead_connection_are_queued_for_resume() {
        let (tx1, rx1) = mpsc::unbounded_channel();
        let n = Notifier::attached(tx1, 1, usize::MAX);
        drop(rx1);
        n.notify(&left("lost-otherwise"));
        let generation = n
            .detach(1)
            .expect("the dead connection still owns the detach");
        assert!(n.still_detached(generation));
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        n.attach(tx2, 2);
        assert_eq!(texts(&mut rx2), ["lost-otherwise"]);
    }

    #[test]
    fn queue_is_bounded_and_keeps_the_newest() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let n = Notifier::attached(tx, 1, usize::MAX);
        n.detach(1).unwrap();
        for i in 0..MAX_QUEUED_NOTIFICATIONS + 10 {
            n.notify(&left(&format!("m{i}")));
        }
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        n.attach(tx2, 2);
        let got = texts(&mut rx2);
        assert_eq!(got.len(), MAX_QUEUED_NOTIFICATIONS);
        assert_eq!(got[0], "m10");
    }

    #[test]
    fn queue_is_bounded_in_bytes_and_keeps_the_newest() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let frame_len = left("m00").to_frame().unwrap().len();
        let n = Notifier::attached(tx, 1, frame_len * 10);
        n.detach(1).unwrap();
        for i in 0..50 {
            n.notify(&left(&format!("m{i:02}")));
        }
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        n.attach(tx2, 2);
        let got = texts(&mut rx2);
        assert_eq!(got.len(), 10);
        assert_eq!(got[0], "m40");
    }

    #[test]
    fn room_closed_closes_the_connection_and_is_taken_once() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let n = Notifier::attached(tx, 1, usize::MAX);
        assert!(!n.take_room_closed());
        let close = || Outgoing::Close(close_code::GOING_AWAY, "room closed: admin".into());
        n.room_closed(close());
        assert_eq!(rx.try_recv().unwrap(), close());
        assert!(n.clone().take_room_closed(), "clones share the link");
        assert!(!n.take_room_closed());
        // Detached: nothing to close, the flag still reaches the session.
        n.detach(1).unwrap();
        n.room_closed(close());
        assert!(n.take_room_closed());
    }

    #[test]
    fn takeover_returns_the_old_connection_and_stale_detach_is_ignored() {
        let (tx1, _rx1) = mpsc::unbounded_channel();
        let n = Notifier::attached(tx1, 1, usize::MAX);
        let (tx2, _rx2) = mpsc::unbounded_channel();
        assert!(
            n.attach(tx2, 2).is_some(),
            "old connection handed back to be closed"
        );
        assert_eq!(
            n.detach(1),
            None,
            "the replaced connection no longer owns the link"
        );
        assert!(n.is_attached());
    }
}
