//! Who may use the HTTP surface: the admin key on `/api/*`, allowed WebSocket origins and
//! the per-IP connection cap (PROTOCOL.md, "HTTP").

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

/// The admin key that `/api/*` requires.
#[derive(Clone)]
pub struct AdminKey(pub Arc<str>);

/// Middleware: 401 unless the request carries `Authorization: Bearer <ADMIN_KEY>`.
pub async fn require_admin(State(key): State<AdminKey>, request: Request, next: Next) -> Response {
    if bearer_matches(request.headers(), &key.0) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "admin key required (Authorization: Bearer <ADMIN_KEY>)",
    )
        .into_response()
}

/// Whether the `Authorization` header is `Bearer <key>`, compared in constant time.
fn bearer_matches(headers: &HeaderMap, key: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.as_bytes().ct_eq(key.as_bytes()).into()
}

/// Origins allowed to open the WebSocket; empty: any.
#[derive(Clone, Debug, Default)]
pub struct AllowedOrigins(Arc<Vec<String>>);

impl AllowedOrigins {
    /// From the configured list (trailing `/` and case do not matter).
    pub fn new(origins: &[String]) -> Self {
        Self(Arc::new(
            origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|o| !o.is_empty())
                .collect(),
        ))
    }

    /// Whether a handshake with these headers may open the WebSocket: no list, no `Origin`
    /// header (native clients), or a listed one.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        self.0.contains(&origin)
    }

    /// The `Access-Control-Allow-Origin` value for a cross-origin `fetch` with these headers
    /// (pages served elsewhere reading `/api/ice-servers`): `*` without a list, the request's
    /// `Origin` when listed, none otherwise.
    pub fn cors_allow(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        if self.0.is_empty() {
            return Some(HeaderValue::from_static("*"));
        }
        let origin = headers.get(header::ORIGIN)?;
        self.allows(headers).then(|| origin.clone())
    }
}

/// Open WebSocket connections per client IP, capped.
#[derive(Debug)]
pub struct IpConnections {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl IpConnections {
    /// A cap of `max` connections per IP (0: unlimited).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn open(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a connection from `ip` until the guard is dropped; `None` when `ip` already
    /// has the most allowed. Nothing is counted without a cap.
    pub fn try_open(self: &Arc<Self>, ip: IpAddr) -> Option<Option<IpGuard>> {
        if self.max == 0 {
            return Some(None);
        }
        let mut open = self.open();
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Some(IpGuard {
            ip,
            table: self.clone(),
        }))
    }
}

/// One counted connection of an IP.
#[derive(Debug)]
pub struct IpGuard {
    ip: IpAddr,
    table: Arc<IpConnections>,
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        let mut open = self.table.open();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_key_must_match_exactly() {
        let key = "k3y-0123456789";
        assert!(bearer_matches(
            &headers(header::AUTHORIZATION, "Bearer k3y-0123456789"),
            key
        ));
        for wrong in [
            "Bearer k3y-012345678",
            "Bearer k3y-0123456789x",
            "k3y-0123456789",
            "Basic k3y-0123456789",
        ] {
            assert!(
                !bearer_matches(&headers(header::AUTHORIZATION, wrong), key),
                "{wrong}"
            );
        }
        assert!(!bearer_matches(&HeaderMap::new(), key));
    }

    #[test]
    fn origins_listed_or_absent_pass() {
        let any = AllowedOrigins::new(&[]);
        assert!(any.allows(&headers(header::ORIGIN, "https://evil.example")));
        let list = AllowedOrigins::new(&[
            "https://App.example.com/".into(),
            " http://localhost:3000".into(),
        ]);
        assert!(list.allows(&HeaderMap::new()));
        assert!(list.allows(&headers(header::ORIGIN, "https://app.example.com")));
        assert!(list.allows(&headers(header::ORIGIN, "http://localhost:3000")));
        assert!(!list.allows(&headers(header::ORIGIN, "https://evil.example")));
        assert!(!list.allows(&headers(
            header::ORIGIN,
            "https://app.example.com.evil.example"
        )));
        assert!(!list.allows(&headers(header::ORIGIN, "null")));
    }

    #[test]
    fn cors_allows_what_the_origin_list_allows() {
        let any = AllowedOrigins::new(&[]);
        assert_eq!(any.cors_allow(&HeaderMap::new()).unwrap(), "*");
        let list = AllowedOrigins::new(&["https://app.example.com".into()]);
        assert_eq!(
            list.cors_allow(&headers(header::ORIGIN, "https://app.example.com"))
                .unwrap(),
            "https://app.example.com"
        );
        assert!(
            list.cors_allow(&headers(header::ORIGIN, "https://evil.example"))
                .is_none()
        );
        assert!(list.cors_allow(&HeaderMap::new()).is_none());
    }

    #[test]
    fn ip_cap_counts_until_guards_drop() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let table = IpConnections::new(2);
        let a = table.try_open(ip).unwrap();
        let b = table.try_open(ip).unwrap();
        assert!(table.try_open(ip).is_none());
        assert!(table.try_open(other).unwrap().is_some());
        drop(a);
        let c = table.try_open(ip).unwrap();
        drop((b, c));
        assert!(
            table.open().is_empty(),
            "entries go with their last connection"
        );
        let unlimited = IpConnections::new(0);
        assert!((0..100).all(|_| unlimited.try_open(ip).is_some_and(|g| g.is_none())));
    }
}
