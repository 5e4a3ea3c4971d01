//! protoo-style request/response signaling over a WebSocket (see `PROTOCOL.md`).
//!
//! One writer task owns the sink, one reader task owns the stream: responses are matched to
//! waiting requests by id, notifications go to a channel the caller reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tracing::{debug, warn};

use crate::error::{ClientError, Result};

/// A server → client notification (`{"notification": true, "method", "data"}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Notification name, e.g. `newProducer`.
    pub method: String,
    /// Its payload (`{}` when absent).
    pub data: Value,
}

/// Notifications in arrival order; ends when the connection closes.
pub type NotificationStream = mpsc::UnboundedReceiver<Notification>;

type Waiter = oneshot::Sender<Result<Value>>;

struct Inner {
    next_id: AtomicU64,
    /// Requests sent and not yet answered, by id. Emptied (answered with `Closed`) when the
    /// reader ends; `None` afterwards so late requests fail at once.
    pending: Mutex<Option<HashMap<u64, Waiter>>>,
    out: mpsc::UnboundedSender<WsMessage>,
}

/// A protoo client connection. Cheap to clone; all clones share the connection, which is
/// closed when the last clone is dropped.
#[derive(Clone)]
pub struct Signaling {
    inner: Arc<Inner>,
}

impl Signaling {
    /// Opens `url` (e.g. `ws://127.0.0.1:3000/ws`) with the `protoo` subprotocol and starts the
    /// reader and writer tasks. Must be called inside a tokio runtime.
    pub async fn connect(url: &str) -> Result<(Signaling, NotificationStream)> {
        let mut request = url.into_client_request()?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("protoo"));
        // TCP_NODELAY: small requests must not wait for the server's delayed ACK.
        let (ws, _response) =
            tokio_tungstenite::connect_async_with_config(request, None, true).await?;
        let (mut sink, mut stream) = ws.split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<WsMessage>();
        let (notify_tx, notify_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            // protoo-client picks random ids; any scheme unique per connection is fine.
            next_id: AtomicU64::new(u64::from(rand::random::<u32>())),
            pending: Mutex::new(Some(HashMap::new())),
            out: out_tx,
        });

        tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                let is_close = matches!(msg, WsMessage::Close(_));
                if let Err(e) = sink.send(msg).await {
                    debug!("signaling writer stopped: {e}");
                    return;
                }
                if is_close {
                    return;
                }
            }
            // Every `Signaling` handle is gone: close the connection so the server sees the
            // peer leave.
            let _ = sink.send(WsMessage::Close(None)).await;
            let _ = sink.close().await;
        });

        // The reader holds the shared state weakly, so dropping the last handle ends the
        // writer (above) and with it the connection.
        let reader_inner = Arc::downgrade(&inner);
        tokio::spawn(async move {
            while let Some(frame) = stream.next().await {
                match frame {
                    Ok(WsMessage::Text(text)) => {
                        let Some(inner) = reader_inner.upgrade() else {
                            break;
                        };
                        inner.dispatch(text.as_str(), &notify_tx);
                    }
                    Ok(WsMessage::Close(_)) => break,
                    Ok(_) => {}
                    Err(e) => {
                        debug!("signaling reader stopped: {e}");
                        break;
                    }
                }
            }
            if let Some(inner) = reader_inner.upgrade() {
                inner.fail_all();
            }
        });

        Ok((Signaling { inner }, notify_rx))
    }

    /// Sends request `method` with `data` and waits for its answer: the response's `data` on
    /// success, [`ClientError::Server`] on an error response, [`ClientError::Closed`] if the
    /// connection ends first.
    pub async fn request(&self, method: &str, data: Value) -> Result<Value> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.inner.pending.lock().map_err(|_| ClientError::Closed)?;
            match pending.as_mut() {
                Some(map) => map.insert(id, tx),
                None => return Err(ClientError::Closed),
            };
        }
        let frame = json!({"request": true, "id": id, "method": method, "data": data});
        if self
            .inner
            .out
            .send(WsMessage::text(frame.to_string()))
            .is_err()
        {
            self.inner.forget(id);
            return Err(ClientError::Closed);
        }
        debug!(method, id, "signaling request sent");
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Closes the WebSocket (close frame); pending requests fail with [`ClientError::Closed`].
    pub fn close(&self) {
        // An error means the writer is already gone, which is the goal.
        let _ = self.inner.out.send(WsMessage::Close(None));
    }

    /// Whether the connection is still usable for requests.
    pub fn is_open(&self) -> bool {
        !self.inner.out.is_closed()
            && self
                .inner
                .pending
                .lock()
                .map(|p| p.is_some())
                .unwrap_or(false)
    }
}

impl Inner {
    fn forget(&self, id: u64) {
        if let Ok(mut pending) = self.pending.lock()
            && let Some(map) = pending.as_mut()
        {
            map.remove(&id);
        }
    }

    fn fail_all(&self) {
        let waiters = match self.pending.lock() {
            Ok(mut pending) => pending.take(),
            Err(_) => None,
        };
        for (_, waiter) in waiters.into_iter().flatten() {
            let _ = waiter.send(Err(ClientError::Closed));
        }
    }

    /// Handles one text frame from the server.
    fn dispatch(&self, text: &str, notify_tx: &mpsc::UnboundedSender<Notification>) {
        let frame: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                warn!("dropping non-JSON signaling frame: {e}");
                return;
            }
        };
        match parse_frame(frame) {
            Some(Frame::Response { id, result }) => {
                let waiter = self
                    .pending
                    .lock()
                    .ok()
                    .and_then(|mut p| p.as_mut().and_then(|m| m.remove(&id)));
                match waiter {
                    // The requester may have given up (dropped); nothing to do then.
                    Some(waiter) => {
                        let _ = waiter.send(result);
                    }
                    None => debug!(id, "response to unknown request id dropped"),
                }
            }
            Some(Frame::Notification(n)) => {
                // The receiver may be dropped by an application not interested in them.
                let _ = notify_tx.send(n);
            }
            Some(Frame::Request { id, method }) => {
                let answer = json!({
                    "response": true, "id": id, "ok": false,
                    "errorCode": 400, "errorReason": format!("unknown method {method}"),
                });
                let _ = self.out.send(WsMessage::text(answer.to_string()));
            }
            None => warn!("dropping malformed signaling frame"),
        }
    }
}

/// A decoded protoo envelope.
#[derive(Debug)]
enum Frame {
    Response { id: u64, result: Result<Value> },
    Notification(Notification),
    Request { id: Value, method: String },
}

fn parse_frame(mut frame: Value) -> Option<Frame> {
    let flag = |frame: &Value, key: &str| frame.get(key).and_then(Value::as_bool) == Some(true);
    let data = frame
        .get_mut("data")
        .map(Value::take)
        .filter(|d| !d.is_null())
        .unwrap_or_else(|| json!({}));
    if flag(&frame, "response") {
        let id = frame.get("id")?.as_u64()?;
        let result = if flag(&frame, "ok") {
            Ok(data)
        } else {
            let code = frame
                .get("errorCode")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(500);
            let reason = frame
                .get("errorReason")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            Err(ClientError::Server { code, reason })
        };
        Some(Frame::Response { id, result })
    } else if flag(&frame, "notification") {
        let method = frame.get("method")?.as_str()?.to_owned();
        Some(Frame::Notification(Notification { method, data }))
    } else if flag(&frame, "request") {
        let id = frame.get("id")?.clone();
        let method = frame.get("method")?.as_str()?.to_owned();
        Some(Frame::Request { id, method })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ok_response() {
        let f = parse_frame(json!({"response": true, "id": 7, "ok": true, "data": {"a": 1}}));
        match f {
            Some(Frame::Response {
                id: 7,
                result: Ok(data),
            }) => assert_eq!(data, json!({"a": 1})),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn parses_error_response() {
        let f = parse_frame(json!({"response": true, "id": 8, "ok": false,
            "errorCode": 404, "errorReason": "transport not found"}));
        match f {
            Some(Frame::Response {
                id: 8,
                result: Err(ClientError::Server { code, reason }),
            }) => {
                assert_eq!(code, 404);
                assert_eq!(reason, "transport not found");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn parses_notification_without_data() {
        let f = parse_frame(json!({"notification": true, "method": "peerLeft"}));
        match f {
            Some(Frame::Notification(n)) => {
                assert_eq!(
                    n,
                    Notification {
                        method: "peerLeft".into(),
                        data: json!({})
                    }
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn parses_server_request() {
        let f = parse_frame(json!({"request": true, "id": 3, "method": "x", "data": {}}));
        assert!(matches!(f, Some(Frame::Request { method, .. }) if method == "x"));
    }

    #[test]
    fn rejects_unknown_envelope() {
        assert!(parse_frame(json!({"foo": 1})).is_none());
        assert!(parse_frame(json!({"response": true, "id": "x"})).is_none());
    }
}
