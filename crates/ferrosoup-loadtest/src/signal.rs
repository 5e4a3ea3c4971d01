//! One simulated peer's signaling, on the test kit's protoo client (requests by id,
//! notifications dropped: the scenario is fixed in advance, so none of them changes what a
//! simulated peer does), and a tiny HTTP GET for the server's JSON API.

use std::time::Duration;

use ferrosoup_testkit::protoo::{Frame, ProtooClient};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use ferrosoup_testkit::protoo::ProtooError;

/// One peer's WebSocket.
#[derive(Debug)]
pub struct Signal {
    client: ProtooClient,
}

impl Signal {
    /// Opens the WebSocket; each request then waits at most `timeout` for its answer.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self, ProtooError> {
        let mut client = ProtooClient::connect(url).await?;
        client.set_keep_notifications(false);
        client.set_timeout(Some(timeout));
        Ok(Self { client })
    }

    /// Sends a request and waits for its answer's data ([`ProtooError::Refused`] for an
    /// error answer). Notifications arriving meanwhile are dropped.
    pub async fn request(&mut self, method: &str, data: Value) -> Result<Value, ProtooError> {
        self.client.ok(method, data).await
    }

    /// Keeps the connection serviced (pongs, notifications dropped) until it closes or
    /// `stop` resolves; then closes it.
    pub async fn idle_until(mut self, stop: impl std::future::Future<Output = ()>) {
        if self.serve_until(stop).await {
            self.close().await;
        }
    }

    /// Keeps the connection serviced (pongs, notifications dropped) until `stop` resolves
    /// (`true`) or the server closes it (`false`).
    pub async fn serve_until(&mut self, stop: impl std::future::Future<Output = ()>) -> bool {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return true,
                frame = self.client.recv() => match frame {
                    Ok(Frame::Json(_)) => {}
                    Ok(Frame::Closed(_)) | Err(_) => return false,
                },
            }
        }
    }

    /// Closes the WebSocket with a close frame (waiting at most the request timeout).
    pub async fn close(mut self) {
        let _ = self.client.close().await;
    }
}

/// Whether `host` (as [`host_port`] reads it from a URL) names this machine's loopback.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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

/// `GET path` on the server's HTTP port, parsed as JSON (`None` on any failure); with
/// `bearer`, sent as `Authorization: Bearer` (the server's `ADMIN_KEY` for `/api/*`).
pub async fn http_get_json(
    host: &str,
    port: u16,
    path: &str,
    bearer: Option<&str>,
) -> Option<Value> {
    let mut stream = TcpStream::connect((host, port)).await.ok()?;
    let auth = bearer
        .map(|key| format!("Authorization: Bearer {key}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n");
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

    #[test]
    fn loopback_hosts() {
        for host in ["localhost", "127.0.0.1", "127.3.2.1", "::1", "LOCALHOST"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["10.0.0.1", "0.0.0.0", "sfu.example.com", "::"] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
