//! The resume registry: session tokens → the sessions of joined peers, so that a connection
//! opened with `?resume=TOKEN` takes its peer over (PROTOCOL.md, Sessions).
//!
//! Sessions do not register themselves: they record the tokens they issue (`joinRoom`) and
//! revoke (leaving, or their room closed) as [`TokenChange`]s, and whoever drives a session
//! (the connection loop, the grace timer) brings the registry up to date with
//! [`ResumeRegistry::update`] after each step. So this module depends on [`crate::session`]
//! and nothing below it depends on this one.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::link::Notifier;
use crate::session::{Session, SharedSession, TokenChange};

/// Session token → the session of a joined peer (connected, or in its grace period) and
/// the link to its connection.
#[derive(Default)]
pub struct ResumeRegistry {
    entries: Mutex<HashMap<String, (SharedSession, Notifier)>>,
}

impl ResumeRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, (SharedSession, Notifier)>> {
        // Nothing panics while holding this lock; recover the map if it ever happened.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies the token changes of `session` (locked by the caller; `shared` is the same
    /// session): issued tokens now resume it, revoked ones no longer do.
    pub fn update(&self, session: &mut Session, shared: &SharedSession) {
        let changes = session.take_token_changes();
        if changes.is_empty() {
            return;
        }
        let mut entries = self.entries();
        for change in changes {
            match change {
                TokenChange::Issued(token) => {
                    entries.insert(token, (shared.clone(), session.notifier().clone()));
                }
                TokenChange::Revoked(token) => {
                    entries.remove(&token);
                }
            }
        }
    }

    /// The session and link of a token, for a resuming connection.
    pub fn find(&self, token: &str) -> Option<(SharedSession, Notifier)> {
        self.entries().get(token).cloned()
    }

    /// Number of sessions that can be resumed (joined peers, connected or in their grace
    /// period).
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether no session can be resumed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
