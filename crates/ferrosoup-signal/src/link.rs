//! The link from a peer to its current WebSocket connection. Notifications for a peer go
//! through its [`Notifier`]; while the connection is down (the resume grace period) they are
//! queued, bounded, and delivered first, in order, when a new connection takes the peer over.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A frame the session sends to its client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// A JSON text frame.
    Text(String),
    /// Close the WebSocket with this code and reason.
    Close(u16, String),
}

/// Notifications kept for a disconnected peer; older ones are dropped beyond this.
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
    /// A link attached to a connection.
    pub fn attached(tx: mpsc::UnboundedSender<Outgoing>, connection: ConnectionId) -> Self {
        Self(Arc::new(Mutex::new(LinkState {
            link: Link::Attached { tx, connection },
            generation: 0,
        })))
    }

    fn state(&self) -> MutexGuard<'_, LinkState> {
        // Nothing panics while holding this lock; recover the data if it ever happened.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends (or queues) a protoo notification.
    pub fn notify(&self, method: &str, data: Value) {
        let text = json!({"notification": true, "method": method, "data": data}).to_string();
        let mut state = self.state();
        match &mut state.link {
            Link::Attached { tx, connection } => {
                // The connection may be gone before its end was noticed: keep the
                // notification for a resume instead of losing it.
                if let Err(mpsc::error::SendError(Outgoing::Text(text))) =
                    tx.send(Outgoing::Text(text))
                {
                    let last = *connection;
                    state.link = Link::Detached {
                        queue: VecDeque::from([text]),
                        dropped: 0,
                        last,
                    };
                }
            }
            Link::Detached { queue, dropped, .. } => {
                if queue.len() == MAX_QUEUED_NOTIFICATIONS {
                    queue.pop_front();
                    *dropped += 1;
                }
                queue.push_back(text);
            }
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

    fn texts(rx: &mut mpsc::UnboundedReceiver<Outgoing>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(Outgoing::Text(t)) = rx.try_recv() {
            out.push(
                serde_json::from_str::<Value>(&t).unwrap()["method"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        out
    }

    #[test]
    fn queued_notifications_are_delivered_first_in_order_on_attach() {
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let n = Notifier::attached(tx1, 1);
        n.notify("a", json!({}));
        let generation = n.detach(1).unwrap();
        n.notify("b", json!({}));
        n.notify("c", json!({}));
        assert!(n.still_detached(generation));
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        assert!(n.attach(tx2, 2).is_none());
        n.notify("d", json!({}));
        assert!(!n.still_detached(generation));
        assert_eq!(texts(&mut rx1), ["a"]);
        assert_eq!(texts(&mut rx2), ["b", "c", "d"]);
    }

    #[test]
    fn notifications_to_a_dead_connection_are_queued_for_resume() {
        let (tx1, rx1) = mpsc::unbounded_channel();
        let n = Notifier::attached(tx1, 1);
        drop(rx1);
        n.notify("lost-otherwise", json!({}));
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
        let n = Notifier::attached(tx, 1);
        n.detach(1).unwrap();
        for i in 0..MAX_QUEUED_NOTIFICATIONS + 10 {
            n.notify(&format!("m{i}"), json!({}));
        }
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        n.attach(tx2, 2);
        let got = texts(&mut rx2);
        assert_eq!(got.len(), MAX_QUEUED_NOTIFICATIONS);
        assert_eq!(got[0], "m10");
    }

    #[test]
    fn takeover_returns_the_old_connection_and_stale_detach_is_ignored() {
        let (tx1, _rx1) = mpsc::unbounded_channel();
        let n = Notifier::attached(tx1, 1);
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
