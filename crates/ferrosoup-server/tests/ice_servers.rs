//! `GET /api/ice-servers` (PROTOCOL.md, "HTTP"): STUN and TURN entries from the settings,
//! TURN REST credentials that a coturn with `use-auth-secret` accepts (checked here by
//! recomputing the HMAC; web-demo/tests/turn-relay.mjs checks them against a real coturn),
//! static credentials, the access token it needs with `AUTH_SECRET`, and the settings the
//! server refuses to start with.

mod common;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

use common::*;

const AUTH_SECRET: &str = "integration-test-secret-of-32-bytes+";
const TURN_SECRET: &str = "shared-with-coturn";
const TURN_TTL: u64 = 600;

/// A GET's status line code, headers (lower-case names) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// GET `path` with extra request header lines.
async fn get(server: &TestServer, path: &str, extra_headers: &[(&str, &str)]) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect to the server");
    let extra: String = extra_headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send the request");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read the answer");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(secret: &str, peer: &str) -> String {
    ferrosoup_signal::auth::mint(
        &ferrosoup_signal::Claims {
            sub: peer.into(),
            room: "main".into(),
            can_publish: true,
            can_subscribe: true,
            can_publish_data: true,
            exp: unix_now() + 3600,
            nbf: None,
            aud: None,
            iss: None,
        },
        secret,
    )
    .unwrap()
}

/// What coturn computes for a TURN REST username with `static-auth-secret`.
fn coturn_password(secret: &str, username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks a TURN entry's time-limited credentials for `peer`: the username is
/// `"<expiry>:<peer>"` with an expiry TURN_TTL after the request (between `before` and
/// `after`, the clock read around it), the credential the HMAC coturn recomputes.
fn check_rest_credentials(turn: &Value, peer: &str, before: u64, after: u64) {
    let username = turn["username"].as_str().expect("a TURN username");
    let (expiry, user) = username.split_once(':').expect("<expiry>:<user>");
    assert_eq!(user, peer, "the user part of {username:?}");
    let expiry: u64 = expiry.parse().expect("a Unix time");
    assert!(
        (before + TURN_TTL..=after + TURN_TTL).contains(&expiry),
        "expiry {expiry} is not TURN_TTL ({TURN_TTL} s) after the request ({before}..={after})"
    );
    assert_eq!(
        turn["credential"],
        json!(coturn_password(TURN_SECRET, username)),
        "credential of {username:?}"
    );
}

#[tokio::test]
async fn turn_rest_credentials_need_an_access_token() {
    let server = TestServer::start_with(
        1,
        &[
            ("AUTH_SECRET", AUTH_SECRET),
            // Not needed by /api/ice-servers (it is no admin route), and not sent.
            ("ADMIN_KEY", "admin-key-for-the-rest-of-api"),
            (
                "STUN_URLS",
                "stun:127.0.0.1:3478,stun:stun.example.com:19302",
            ),
            ("TURN_URLS", "turn:127.0.0.1:3478?transport=udp"),
            ("TURN_URL", "turns:turn.example.com:5349"),
            ("TURN_SECRET", TURN_SECRET),
            ("TURN_TTL", &TURN_TTL.to_string()),
        ],
    )
    .await;

    for (what, path, headers) in [
        ("no token", "/api/ice-servers".to_owned(), vec![]),
        (
            "a token of another secret",
            format!(
                "/api/ice-servers?token={}",
                token("another-secret-also-32-bytes-long!", "alice")
            ),
            vec![],
        ),
        (
            "the admin key instead of a token",
            "/api/ice-servers".to_owned(),
            vec![("Authorization", "Bearer admin-key-for-the-rest-of-api")],
        ),
    ] {
        let answer = get(&server, &path, &headers).await;
        assert_eq!(answer.status, 401, "{what}: {}", answer.body);
    }

    let before = unix_now();
    let by_query = get(
        &server,
        &format!("/api/ice-servers?token={}", token(AUTH_SECRET, "alice")),
        &[],
    )
    .await;
    let bearer = format!("Bearer {}", token(AUTH_SECRET, "bob"));
    let by_header = get(&server, "/api/ice-servers", &[("Authorization", &bearer)]).await;
    // The Rust client's fetch, with the token in the signaling URL as it connects.
    let fetched = ferrosoup_client::fetch_ice_servers(&format!(
        "{}?token={}",
        server.ws_url(),
        token(AUTH_SECRET, "carol")
    ))
    .await
    .expect("the client fetches /api/ice-servers");
    let after = unix_now();

    assert_eq!(by_query.status, 200, "{}", by_query.body);
    assert_eq!(by_query.header("cache-control"), Some("no-store"));
    assert_eq!(by_query.header("access-control-allow-origin"), Some("*"));
    let body = by_query.json();
    let servers = body["iceServers"].as_array().expect("iceServers");
    assert_eq!(servers.len(), 2, "{body}");
    assert_eq!(
        servers[0],
        json!({"urls": ["stun:127.0.0.1:3478", "stun:stun.example.com:19302"]})
    );
    assert_eq!(
        servers[1]["urls"],
        json!([
            "turn:127.0.0.1:3478?transport=udp",
            "turns:turn.example.com:5349"
        ])
    );
    check_rest_credentials(&servers[1], "alice", before, after);

    assert_eq!(by_header.status, 200, "{}", by_header.body);
    check_rest_credentials(&by_header.json()["iceServers"][1], "bob", before, after);

    let fetched = serde_json::to_value(&fetched).unwrap();
    assert_eq!(fetched[0], servers[0]);
    assert_eq!(fetched[1]["urls"], servers[1]["urls"]);
    check_rest_credentials(&fetched[1], "carol", before, after);
    let refused = ferrosoup_client::fetch_ice_servers(&server.ws_url())
        .await
        .expect_err("no token, no servers");
    assert!(refused.to_string().contains("401"), "{refused}");
}

#[tokio::test]
async fn open_server_gives_static_credentials_or_nothing() {
    let server = TestServer::start_with(
        1,
        &[
            ("TURN_URLS", "turn:127.0.0.1:3478"),
            ("TURN_USERNAME", "ferrosoup"),
            ("TURN_PASSWORD", "static-password"),
            ("ALLOWED_ORIGINS", "https://app.example.com"),
        ],
    )
    .await;
    let answer = get(
        &server,
        "/api/ice-servers",
        &[("Origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json(),
        json!({"iceServers": [{
            "urls": ["turn:127.0.0.1:3478"],
            "username": "ferrosoup",
            "credential": "static-password"
        }]})
    );
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let elsewhere = get(
        &server,
        "/api/ice-servers",
        &[("Origin", "https://evil.example")],
    )
    .await;
    assert_eq!(elsewhere.header("access-control-allow-origin"), None);

    let bare = TestServer::start(1).await;
    let answer = get(&bare, "/api/ice-servers", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), json!({"iceServers": []}));
}

#[test]
fn refuses_to_start_with_unusable_turn_settings() {
    for (env, says) in [
        (
            vec![("TURN_URLS", "turn:127.0.0.1:3478")],
            "needs credentials",
        ),
        (
            vec![
                ("TURN_URLS", "turn:127.0.0.1:3478"),
                ("TURN_SECRET", "s"),
                ("TURN_USERNAME", "u"),
                ("TURN_PASSWORD", "p"),
            ],
            "not both",
        ),
        (
            vec![("TURN_URLS", "turn:127.0.0.1:3478"), ("TURN_USERNAME", "u")],
            "go together",
        ),
        (vec![("STUN_URLS", "127.0.0.1:3478")], "STUN_URLS"),
        (
            vec![("TURN_URLS", "http://turn"), ("TURN_SECRET", "s")],
            "TURN_URLS",
        ),
        (vec![("TURN_SECRET", "s")], "TURN_URLS is empty"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrosoup"))
            .env("PORT", "0")
            .env("LISTEN_IP", "127.0.0.1")
            .env("RUST_LOG", "error")
            .envs(env.iter().copied())
            .output()
            .expect("run ferrosoup");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{env:?} started");
        assert!(
            stderr.contains(says),
            "{env:?}: {stderr:?} should say {says:?}"
        );
    }
}
