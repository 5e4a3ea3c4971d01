//! A small JSON client for the broadcaster HTTP API (one HTTP/1.1 connection a request).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::RecordError;

/// The server's HTTP base (`http://host:port`) and its admin key.
#[derive(Debug, Clone)]
pub struct Api {
    base: Uri,
    admin_key: Option<String>,
}

impl Api {
    /// An API client for `base` (`http://127.0.0.1:3000`).
    pub fn new(base: &str, admin_key: Option<String>) -> Result<Self, RecordError> {
        let base: Uri = base
            .trim_end_matches('/')
            .parse()
            .map_err(|e| RecordError::Http(format!("server URL {base}: {e}")))?;
        if base.authority().is_none() {
            return Err(RecordError::Http(format!("server URL {base} has no host")));
        }
        Ok(Self { base, admin_key })
    }

    /// The host the server was reached at (where its plain transports listen by default).
    pub fn host(&self) -> &str {
        self.base.host().unwrap_or("127.0.0.1")
    }

    /// Sends `method path` with an optional JSON body; the JSON answer of a 2xx response.
    pub async fn request(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, RecordError> {
        let fail = |e: &dyn std::fmt::Display| RecordError::Http(format!("{method} {path}: {e}"));
        let authority = self.base.authority().ok_or_else(|| fail(&"no host"))?;
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
                tracing::debug!("recorder API connection: {e}");
            }
        });
        let mut request = hyper::Request::builder()
            .method(method.clone())
            .uri(path)
            .header(hyper::header::HOST, authority.as_str());
        if let Some(key) = &self.admin_key {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let payload = match body {
            Some(v) => {
                request = request.header(hyper::header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(v)?)
            }
            None => Bytes::new(),
        };
        let request = request.body(Full::new(payload)).map_err(|e| fail(&e))?;
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
        if body.is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&body)?)
    }
}
