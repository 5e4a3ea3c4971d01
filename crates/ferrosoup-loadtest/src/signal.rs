//! A minimal protoo client over one WebSocket: sequential requests, notifications
//! queued, and a tiny HTTP GET for the server's JSON API.

use ferrosoup_proto::signaling::Message;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};

/// Signaling failures.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The WebSocket failed or closed.
    #[error("websocket: {0}")]
    WebSocket(String),
    /// The server answered a request with an error.
    #[error("{method} failed: {code} {reason}")]
    Refused {
        /// The request's method.
        method: String,
        /// `errorCode`.
        code: u16,
        /// `errorReason`.
        reason: String,
    },
    /// An answer lacks a field this client needs.
    #[error("{0}")]
    BadAnswer(String),
}

/// One peer's WebSocket.
pub struct Signal {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl std::fmt::Debug for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signal")
            .field("next_id", &self.next_id)
            .finish_non_exhaustive()
    }
}

impl Signal {
    /// Opens the WebSocket.
    pub async fn connect(url: &str) -> Result<Self, SignalError> {
        // No Nagle: a request written in two segments would wait for the server's delayed
        // ACK (40 ms), which was most of a peer's join time.
        let (ws, _) = connect_async_with_config(url, None, true)
            .await
            .map_err(|e| SignalError::WebSocket(e.to_string()))?;
        Ok(Self { ws, next_id: 1 })
    }

    /// Sends a request and waits for its answer. Notifications arriving meanwhile are
    /// dropped: the scenario is fixed in advance, so none of them changes what a simulated
    /// peer does.
    pub async fn request(&mut self, method: &str, data: Value) -> Result<Value, SignalError> {
        let id = self.next_id;
        self.next_id += 1;
        let text = Message::request(id, method, data).to_json();
        self.ws
            .send(WsMessage::text(text))
            .await
            .map_err(|e| SignalError::WebSocket(e.to_string()))?;
        loop {
            match self.read().await? {
                Message::Response(r) if r.id == id => {
                    return r.result.map_err(|e| SignalError::Refused {
                        method: method.to_owned(),
                        code: e.code,
                        reason: e.reason,
                    });
                }
                Message::Response(_) | Message::Request(_) | Message::Notification(_) => {}
            }
        }
    }

    /// Next protoo message (skipping pings, binary frames and invalid JSON).
    async fn read(&mut self) -> Result<Message, SignalError> {
        loop {
            let frame = self
                .ws
                .next()
                .await
                .ok_or_else(|| SignalError::WebSocket("closed".into()))?
                .map_err(|e| SignalError::WebSocket(e.to_string()))?;
            match frame {
                WsMessage::Text(text) => {
                    if let Ok(message) = Message::parse(text.as_str()) {
                        return Ok(message);
                    }
                }
                WsMessage::Close(_) => return Err(SignalError::WebSocket("closed".into())),
                _ => {}
            }
        }
    }

    /// Keeps the connection serviced (pongs, notifications dropped) until it closes or
    /// `stop` resolves; then closes it.
    pub async fn idle_until(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                frame = self.ws.next() => match frame {
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return,
                },
            }
        }
        let _ = self.ws.close(None).await;
    }
}

/// Host and port of a `ws://` / `wss://` URL.
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default_port = match scheme {
        "ws" | "http" => 80,
        "wss" | "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default_port,
        };
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None if !authority.is_empty() => Some((authority.to_owned(), default_port)),
        None => None,
    }
}

/// `GET path` on the server's HTTP port, parsed as JSON (`None` on any failure).
pub async fn http_get_json(host: &str, port: u16, path: &str) -> Option<Value> {
    let mut stream = TcpStream::connect((host, port)).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut body = Vec::new();
    stream.read_to_end(&mut body).await.ok()?;
    let text = String::from_utf8_lossy(&body);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return None;
    }
    // The API answers with a Content-Length; chunked bodies are not expected from it.
    serde_json::from_str(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_of_urls() {
        assert_eq!(
            host_port("ws://127.0.0.1:3000/ws"),
            Some(("127.0.0.1".into(), 3000))
        );
        assert_eq!(
            host_port("wss://sfu.example.com/ws"),
            Some(("sfu.example.com".into(), 443))
        );
        assert_eq!(
            host_port("ws://[::1]:4000/ws?x=1"),
            Some(("::1".into(), 4000))
        );
        assert_eq!(host_port("ws://localhost"), Some(("localhost".into(), 80)));
        assert_eq!(host_port("ftp://x/"), None);
        assert_eq!(host_port("ws://h:notaport/"), None);
    }
}
