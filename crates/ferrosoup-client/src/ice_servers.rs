//! The server's STUN and TURN servers (`GET /api/ice-servers`), for
//! [`TransportOptions::ice_servers`](crate::TransportOptions::ice_servers).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Uri;
use hyper_util::rt::TokioIo;

use crate::error::{ClientError, Result};

pub use ferrosoup_proto::ice_servers::{IceServer, IceServers};

/// How long fetching the list may take, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The `/api/ice-servers` URL of the server whose signaling URL is `ws_url`
/// (`ws://host:port/ws?token=...` → `http://host:port/api/ice-servers?token=...`; the
/// query, and so the access token, is kept).
pub fn ice_servers_url(ws_url: &str) -> Result<Uri> {
    let ws: Uri = ws_url
        .parse()
        .map_err(|e| ClientError::Http(format!("{ws_url:?} is no URL: {e}")))?;
    match ws.scheme_str() {
        Some("ws" | "http") => {}
        Some("wss" | "https") => {
            return Err(ClientError::Unsupported(
                "TLS (wss:, https:): the SDK speaks plain ws: and http: only".into(),
            ));
        }
        _ => {
            return Err(ClientError::Http(format!("{ws_url:?} is no ws: URL")));
        }
    }
    let authority = ws
        .authority()
        .ok_or_else(|| ClientError::Http(format!("{ws_url:?} names no host")))?;
    let query = ws.query().map(|q| format!("?{q}")).unwrap_or_default();
    format!("http://{authority}/api/ice-servers{query}")
        .parse()
        .map_err(|e| ClientError::Http(format!("ice-servers URL of {ws_url:?}: {e}")))
}

/// Fetches the STUN and TURN servers (with TURN credentials made for this client) from the
/// server whose signaling URL is `ws_url`; the access token in its `?token=` is sent along.
pub async fn fetch_ice_servers(ws_url: &str) -> Result<Vec<IceServer>> {
    let url = ice_servers_url(ws_url)?;
    tokio::time::timeout(FETCH_TIMEOUT, get_json(&url))
        .await
        .map_err(|_| ClientError::Http(format!("GET {url}: no answer within {FETCH_TIMEOUT:?}")))?
        .map(|servers: IceServers| servers.ice_servers)
}

/// One HTTP/1.1 GET of a JSON document.
async fn get_json<T: serde::de::DeserializeOwned>(url: &Uri) -> Result<T> {
    let fail = |e: &dyn std::fmt::Display| ClientError::Http(format!("GET {url}: {e}"));
    let authority = url.authority().ok_or_else(|| fail(&"no host"))?;
    // An IPv6 host comes in brackets.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((host, authority.port_u16().unwrap_or(80)))
        .await
        .map_err(|e| fail(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(&e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("ice-servers connection: {e}");
        }
    });
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(&e))?;
    let response = sender.send_request(request).await.map_err(|e| fail(&e))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(&e))?
        .to_bytes();
    if !status.is_success() {
        return Err(fail(&format!(
            "{status}: {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_follows_the_signaling_url() {
        for (ws, http) in [
            (
                "ws://127.0.0.1:3000/ws",
                "http://127.0.0.1:3000/api/ice-servers",
            ),
            (
                "ws://sfu.example.com/ws?token=abc.def.ghi",
                "http://sfu.example.com/api/ice-servers?token=abc.def.ghi",
            ),
            ("ws://[::1]:3000/ws", "http://[::1]:3000/api/ice-servers"),
        ] {
            assert_eq!(ice_servers_url(ws).unwrap().to_string(), http);
        }
        assert!(matches!(
            ice_servers_url("wss://sfu.example.com/ws"),
            Err(ClientError::Unsupported(_))
        ));
        assert!(matches!(
            ice_servers_url("not a url"),
            Err(ClientError::Http(_))
        ));
    }
}
