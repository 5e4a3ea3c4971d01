//! The broadcasters of the HTTP API: one [`Session`] each, without a connection, keyed by
//! room and broadcaster id. Each one's requests run one at a time (its session lock); a
//! broadcaster lives until it is deleted or its room is closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ferrosoup_proto::broadcaster::CreateBroadcasterRequest;
use serde_json::Value;

use crate::error::SignalError;
use crate::hub::Hub;
use crate::link::Notifier;
use crate::session::{Session, SharedSession, parse_body};

/// The broadcasters of one server.
#[derive(Default)]
pub struct Broadcasters {
    table: Mutex<HashMap<(String, String), SharedSession>>,
}

impl Broadcasters {
    fn table(&self) -> MutexGuard<'_, HashMap<(String, String), SharedSession>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `POST /rooms/{roomId}/broadcasters`: a broadcaster joins the room (created if
    /// needed) as a peer.
    pub async fn create(
        &self,
        hub: &Arc<Hub>,
        room_id: &str,
        body: &[u8],
    ) -> Result<Value, SignalError> {
        let req: CreateBroadcasterRequest = parse_body(body)?;
        let key = (room_id.to_owned(), req.id.clone());
        // Broadcasters whose room was closed meanwhile are forgotten here.
        self.table()
            .retain(|_, s| s.try_lock().map_or(true, |mut s| s.is_joined()));
        if self.table().contains_key(&key) {
            return Err(SignalError::conflict(format!(
                "broadcaster {} already exists",
                req.id
            )));
        }
        let mut session = Session::new(hub.clone(), Notifier::unattached(), None);
        let answer = session.join_as_broadcaster(room_id, req).await?;
        let session = Arc::new(tokio::sync::Mutex::new(session));
        let replaced = self.table().insert(key, session);
        if let Some(old) = replaced {
            // Cannot happen (the peer id is unique in its room); leave nothing behind.
            old.lock().await.close().await;
        }
        Ok(answer)
    }

    /// The session of a broadcaster (404 when unknown).
    pub fn get(&self, room_id: &str, id: &str) -> Result<SharedSession, SignalError> {
        self.table()
            .get(&(room_id.to_owned(), id.to_owned()))
            .cloned()
            .ok_or_else(|| SignalError::not_found("broadcaster"))
    }

    /// `DELETE /rooms/{roomId}/broadcasters/{id}`: the broadcaster leaves, closing its
    /// transports (the room hears `peerLeft`).
    pub async fn delete(&self, room_id: &str, id: &str) -> Result<(), SignalError> {
        let removed = self.table().remove(&(room_id.to_owned(), id.to_owned()));
        let session = removed.ok_or_else(|| SignalError::not_found("broadcaster"))?;
        session.lock().await.close().await;
        Ok(())
    }
}
