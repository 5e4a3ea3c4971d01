//! Hostile clients against the real binary (issue 11, PROTOCOL.md "Limits and hostile
//! clients", "HTTP", "Security"): each attack gets its error and the bound holds — memory of
//! the server process, objects created, the close code a non-reading peer gets — while the
//! server keeps serving everyone else.

mod common;

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::*;

// ----- helpers ----------------------------------------------------------------------------

/// Sends `METHOD path` with an optional admin key; the status code and body.
async fn http(port: u16, method: &str, path: &str, key: Option<&str>) -> (u16, String) {
    let exchange = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let auth = key
            .map(|k| format!("Authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    };
    within(&format!("{method} {path}"), 10, exchange)
        .await
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP answer"))
}

/// The HTTP status of a WebSocket handshake to `/ws` carrying these extra header lines.
async fn ws_handshake(port: u16, headers: &str) -> u16 {
    let exchange = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{headers}\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = vec![0u8; 1024];
        let n = s.read(&mut buf).await.ok()?;
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        head.split(' ').nth(1)?.parse().ok()
    };
    within("WebSocket handshake", 10, exchange)
        .await
        .expect("an HTTP status line")
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status");
    kb * 1024
}

const MIB: u64 = 1024 * 1024;

/// `produce` data with `encodings` encodings (SSRCs from `ssrc`) and `app_data`.
fn produce_data(transport: &str, ssrc: u32, encodings: u32, app_data: Value) -> Value {
    let encodings: Vec<Value> = (0..encodings).map(|i| json!({"ssrc": ssrc + i})).collect();
    json!({
        "transportId": transport,
        "kind": "video",
        "rtpParameters": {
            "mid": ssrc.to_string(),
            "codecs": [{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000, "parameters": {}, "rtcpFeedback": []}],
            "headerExtensions": [],
            "encodings": encodings,
            "rtcp": {"cname": "hostile"}
        },
        "appData": app_data
    })
}

/// Connects, creates and joins `room` as `peer`; the `joinRoom` answer.
async fn joined(server: &TestServer, room: &str, peer: &str) -> (Ws, Value) {
    let mut ws = Ws::connect(&server.ws_url()).await;
    let caps = ws.ok("createRoom", json!({"roomId": room})).await["rtpCapabilities"].clone();
    let answer = ws
        .ok(
            "joinRoom",
            json!({"roomId": room, "peerId": peer, "rtpCapabilities": caps}),
        )
        .await;
    (ws, answer)
}

/// A send transport's id.
async fn send_transport(ws: &mut Ws) -> String {
    ws.ok("createTransport", json!({"direction": "send"})).await["id"]
        .as_str()
        .expect("transport id")
        .to_owned()
}

/// The entry of `peer` in room `room` of `/api/rooms`.
async fn peer_entry(server: &TestServer, room: &str, peer: &str) -> Option<Value> {
    let rooms = server.get("/api/rooms").await?;
    rooms["rooms"]
        .as_array()?
        .iter()
        .find(|r| r["roomId"] == room)?["peers"]
        .as_array()?
        .iter()
        .find(|p| p["peerId"] == peer)
        .cloned()
}

/// Room ids listed by `/api/rooms`.
async fn room_ids(server: &TestServer) -> Vec<String> {
    let rooms = server.get("/api/rooms").await.expect("/api/rooms answers");
    rooms["rooms"]
        .as_array()
        .expect("rooms array")
        .iter()
        .filter_map(|r| r["roomId"].as_str().map(str::to_owned))
        .collect()
}

// ----- bounded ORTC input -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_encodings_are_refused_and_memory_stays_flat() {
    let server = TestServer::start_with(
        1,
        &[("SESSION_GRACE", "0"), ("MAX_REQUESTS_PER_SECOND", "10000")],
    )
    .await;
    let (mut ws, _) = joined(&server, "enc", "flooder").await;
    let transport = send_transport(&mut ws).await;
    let before = rss(server.pid());
    // The issue's attack: 32 produce requests of 3,000 encodings each (~60 KB frames).
    for i in 0..32u32 {
        let data = produce_data(&transport, 1000 + i * 4000, 3000, json!({}));
        let (code, reason) = ws.fail("produce", data).await;
        assert_eq!(code, 400, "produce #{i}: {reason}");
        assert_eq!(
            reason, "rtpParameters.encodings: 3000 entries, at most 8 allowed",
            "produce #{i}"
        );
    }
    let after = rss(server.pid());
    eprintln!(
        "RSS before {} KiB, after 32 produce requests of 3,000 encodings {} KiB",
        before / 1024,
        after / 1024
    );
    // Before the bound the same requests grew the server by 3.2 GiB.
    assert!(
        after < before + 32 * MIB,
        "server memory grew from {before} to {after} bytes"
    );
    assert_eq!(server.counter("producers").await, 0, "nothing was created");
    // Codecs and header extensions are bounded as well, each named.
    let mut data = produce_data(&transport, 5, 1, json!({}));
    let codec = data["rtpParameters"]["codecs"][0].clone();
    data["rtpParameters"]["codecs"] = json!(vec![codec; 33]);
    let (code, reason) = ws.fail("produce", data).await;
    assert_eq!(
        (code, reason.as_str()),
        (400, "rtpParameters.codecs: 33 entries, at most 32 allowed")
    );
    let mut data = produce_data(&transport, 5, 1, json!({}));
    let ext = json!({"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 1});
    data["rtpParameters"]["headerExtensions"] = json!(vec![ext; 33]);
    let (code, reason) = ws.fail("produce", data).await;
    assert_eq!(
        (code, reason.as_str()),
        (
            400,
            "rtpParameters.headerExtensions: 33 entries, at most 32 allowed"
        )
    );
    // The connection is as usable as before: a normal producer is accepted.
    ws.ok("produce", produce_data(&transport, 7, 1, json!({})))
        .await;
    assert_eq!(server.counter("producers").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_app_data_long_names_and_ids_are_refused_naming_the_field() {
    const MAX: usize = 1024;
    let server =
        TestServer::start_with(1, &[("SESSION_GRACE", "0"), ("MAX_APP_DATA_BYTES", "1024")]).await;
    // {"x":"…"} is 8 bytes around the string.
    let at_limit = json!({"x": "a".repeat(MAX - 8)});
    let over = json!({"x": "a".repeat(MAX - 7)});
    let mut ws = Ws::connect(&server.ws_url()).await;
    ws.ok("createRoom", json!({"roomId": "big"})).await;
    for (what, data, field) in [
        (
            "appData",
            json!({"roomId": "big", "appData": over.clone()}),
            "appData",
        ),
        (
            "displayName",
            json!({"roomId": "big", "displayName": "n".repeat(257)}),
            "displayName",
        ),
        (
            "peerId",
            json!({"roomId": "big", "peerId": "p".repeat(129)}),
            "peerId",
        ),
        ("roomId", json!({"roomId": "r".repeat(129)}), "roomId"),
    ] {
        let (code, reason) = ws.fail("joinRoom", data).await;
        assert_eq!(code, 400, "{what}: {reason}");
        assert!(
            reason.starts_with(&format!("{field}: ")),
            "{what}: {reason}"
        );
    }
    let (code, reason) = ws
        .fail("createRoom", json!({"roomId": "r".repeat(129)}))
        .await;
    assert_eq!(
        (code, reason.as_str()),
        (400, "roomId: must be 1..128 characters")
    );
    // Nothing of the refused joins is left: the peer joins once, at the limits.
    let answer = ws
        .ok(
            "joinRoom",
            json!({"roomId": "big", "peerId": "p".repeat(128), "displayName": "n".repeat(256), "appData": at_limit}),
        )
        .await;
    assert_eq!(answer["peers"], json!([]));
    let (code, reason) = ws
        .fail(
            "createTransport",
            json!({"direction": "send", "appData": over.clone()}),
        )
        .await;
    assert_eq!(
        (code, reason.as_str()),
        (400, "appData: larger than 1024 bytes as JSON")
    );
    assert_eq!(server.counter("transports").await, 0);
    let transport = send_transport(&mut ws).await;
    let (code, reason) = ws
        .fail("produce", produce_data(&transport, 9, 1, over.clone()))
        .await;
    assert_eq!(
        (code, reason.as_str()),
        (400, "appData: larger than 1024 bytes as JSON")
    );
    assert_eq!(server.counter("producers").await, 0);
    let producer = ws
        .ok("produce", produce_data(&transport, 9, 1, json!({})))
        .await;
    let (code, reason) = ws
        .fail(
            "consume",
            json!({"transportId": transport, "producerId": producer["id"], "appData": over}),
        )
        .await;
    assert_eq!(
        (code, reason.as_str()),
        (400, "appData: larger than 1024 bytes as JSON")
    );
    assert_eq!(server.counter("consumers").await, 0);
}

// ----- a peer that does not read --------------------------------------------------------------

/// A room with a peer that never reads ("silent") and one that floods it with `newProducer`
/// notifications carrying `app_data_bytes` of appData ("loud").
struct Flood {
    silent: Ws,
    silent_token: String,
    loud: Ws,
    transport: String,
    app_data: Value,
    sent: u32,
}

impl Flood {
    async fn start(server: &TestServer, app_data_bytes: usize) -> Self {
        let (silent, answer) = joined(server, "flood", "silent").await;
        let silent_token = answer["sessionToken"].as_str().expect("token").to_owned();
        let (mut loud, _) = joined(server, "flood", "loud").await;
        let transport = send_transport(&mut loud).await;
        Self {
            silent,
            silent_token,
            loud,
            transport,
            app_data: json!({"pad": "x".repeat(app_data_bytes - 12)}),
            sent: 0,
        }
    }

    /// One producer opened and closed: a big `newProducer` and a `producerClosed` for the
    /// silent peer.
    async fn round(&mut self) {
        let ssrc = 10_000 + self.sent;
        let id = self
            .loud
            .ok(
                "produce",
                produce_data(&self.transport, ssrc, 1, self.app_data.clone()),
            )
            .await["id"]
            .clone();
        self.loud
            .ok("closeProducer", json!({"producerId": id}))
            .await;
        self.sent += 1;
    }

    /// Floods until `/api/rooms` shows the silent peer without connection (at most
    /// `max_rounds`); the rounds it took.
    async fn until_disconnected(&mut self, server: &TestServer, max_rounds: u32) -> u32 {
        for round in 0..max_rounds {
            self.round().await;
            if round % 16 == 15 {
                let entry = peer_entry(server, "flood", "silent").await;
                if entry.is_some_and(|p| p["connected"] == false) {
                    return round + 1;
                }
            }
        }
        panic!("the silent peer was still connected after {max_rounds} rounds");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_closed_with_4408_when_a_send_stalls() {
    // The queue bound is out of reach: only the send timeout can end the connection.
    let server = TestServer::start_with(
        1,
        &[
            ("SESSION_GRACE", "60"),
            ("SEND_TIMEOUT", "1"),
            ("MAX_SEND_QUEUE_BYTES", "1073741824"),
            ("MAX_REQUESTS_PER_SECOND", "100000"),
            ("MAX_APP_DATA_BYTES", "65536"),
        ],
    )
    .await;
    let mut flood = Flood::start(&server, 60_000).await;
    let rounds = flood.until_disconnected(&server, 4000).await;
    eprintln!("silent peer disconnected after {rounds} rounds of ~60 KB");
    // What the socket still holds, then the close frame: 4408.
    let (_, code) = flood.silent.until_closed().await;
    assert_eq!(code, Some(4408));
    // The peer is kept for the grace period like any dropped connection: the others saw no
    // peerLeft, and its session resumes.
    assert!(peer_entry(&server, "flood", "silent").await.is_some());
    assert!(
        flood
            .loud
            .notification_within(Duration::ZERO, "peerLeft", |_| true)
            .await
            .is_none()
    );
    let mut resumed = Ws::connect(&format!(
        "{}?resume={}",
        server.ws_url(),
        flood.silent_token
    ))
    .await;
    resumed.assert_usable("resume after 4408").await;
    assert!(
        eventually(5, async || {
            peer_entry(&server, "flood", "silent")
                .await
                .is_some_and(|p| p["connected"] == true)
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_closed_with_4408_when_its_queue_is_full_and_memory_stays_bounded()
 {
    // The send timeout is out of reach: only the queue bound can end the connection.
    let server = TestServer::start_with(
        1,
        &[
            ("SESSION_GRACE", "60"),
            ("SEND_TIMEOUT", "3600"),
            ("MAX_SEND_QUEUE_BYTES", "262144"),
            ("MAX_REQUESTS_PER_SECOND", "100000"),
            ("MAX_APP_DATA_BYTES", "65536"),
        ],
    )
    .await;
    let mut flood = Flood::start(&server, 60_000).await;
    // Warm up allocator and buffers, then measure over a flood of ~60 MB for the silent peer.
    for _ in 0..20 {
        flood.round().await;
    }
    let before = rss(server.pid());
    let rounds = flood.until_disconnected(&server, 4000).await;
    // What the socket still holds, then the close frame: 4408.
    let (_, code) = flood.silent.until_closed().await;
    assert_eq!(code, Some(4408));
    // The flood goes on into the queue kept for a resume, bounded as well.
    for _ in rounds..1000 {
        flood.round().await;
    }
    let after = rss(server.pid());
    let flooded = u64::from(flood.sent) * 60_000;
    eprintln!(
        "RSS before {} KiB, after {} KiB; {} MiB of notifications for the silent peer, \
         disconnected after {rounds} rounds",
        before / 1024,
        after / 1024,
        flooded / MIB
    );
    assert!(
        after < before + 24 * MIB,
        "server memory grew from {before} to {after} bytes for {flooded} bytes flooded"
    );
    // Resume gets the newest notifications kept meanwhile, bounded by the same byte budget.
    let mut resumed = Ws::connect(&format!(
        "{}?resume={}",
        server.ws_url(),
        flood.silent_token
    ))
    .await;
    resumed.assert_usable("resume after 4408").await;
    let kept: usize = resumed
        .notifications()
        .iter()
        .map(|n| n.to_string().len())
        .sum();
    assert!(kept <= 262_144, "{kept} bytes of notifications kept");
}

// ----- rooms ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_hog_gets_429_after_four_and_rooms_nobody_joins_expire() {
    let server =
        TestServer::start_with(1, &[("SESSION_GRACE", "0"), ("EMPTY_ROOM_TIMEOUT", "1")]).await;
    let mut hog = Ws::connect(&server.ws_url()).await;
    for i in 0..4 {
        hog.ok("createRoom", json!({"roomId": format!("hog-{i}")}))
            .await;
    }
    let (code, reason) = hog.fail("createRoom", json!({"roomId": "hog-4"})).await;
    assert_eq!(code, 429, "{reason}");
    assert!(!room_ids(&server).await.contains(&"hog-4".to_owned()));
    // Getting a room that exists creates nothing and is allowed.
    hog.ok("createRoom", json!({"roomId": "hog-0"})).await;
    // Others are not held up by the hog, and a joined room does not expire.
    let (mut keeper, _) = joined(&server, "kept", "keeper").await;
    // The hog's rooms expire; the joined one stays.
    let expired = eventually(15, async || {
        room_ids(&server)
            .await
            .iter()
            .all(|r| !r.starts_with("hog-"))
    })
    .await;
    assert!(expired, "rooms left: {:?}", room_ids(&server).await);
    assert_eq!(room_ids(&server).await, ["kept"]);
    keeper.assert_usable("the expiry of others' rooms").await;
    // Expired rooms no longer count against the hog.
    hog.ok("createRoom", json!({"roomId": "hog-4"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_room_closes_it_for_every_peer() {
    const KEY: &str = "delete-test-admin-key";
    let server = TestServer::start_with(1, &[("SESSION_GRACE", "30"), ("ADMIN_KEY", KEY)]).await;
    let (mut alice, _) = joined(&server, "doomed", "alice").await;
    let (mut bob, _) = joined(&server, "doomed", "bob").await;
    let (mut other, _) = joined(&server, "spared", "carol").await;
    let (status, _) = http(server.port, "DELETE", "/api/rooms/doomed", None).await;
    assert_eq!(status, 401, "DELETE needs the admin key");
    let (status, body) = http(server.port, "DELETE", "/api/rooms/doomed", Some(KEY)).await;
    assert_eq!(status, 204, "{body}");
    for peer in [&mut alice, &mut bob] {
        let (notifications, code) = peer.until_closed().await;
        assert_eq!(code, Some(1001));
        assert!(
            notifications.iter().any(|n| n["method"] == "roomClosed"
                && n["data"] == json!({"roomId": "doomed", "reason": "admin"})),
            "{notifications:?}"
        );
    }
    assert_eq!(room_ids(&server).await, ["spared"]);
    other.assert_usable("another room's deletion").await;
    let (status, _) = http(server.port, "DELETE", "/api/rooms/doomed", Some(KEY)).await;
    assert_eq!(status, 404);
    let (status, _) = http(server.port, "DELETE", "/api/rooms/never", Some(KEY)).await;
    assert_eq!(status, 404);
}

// ----- HTTP surface ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_key_guards_the_api_but_not_health_or_metrics() {
    const KEY: &str = "admin-key-for-the-test";
    let server = TestServer::start_with(1, &[("SESSION_GRACE", "0"), ("ADMIN_KEY", KEY)]).await;
    for path in ["/api/rooms", "/api/rooms/none", "/api/stats"] {
        assert_eq!(http(server.port, "GET", path, None).await.0, 401, "{path}");
        assert_eq!(
            http(server.port, "GET", path, Some("admin-key-for-the-tesT"))
                .await
                .0,
            401,
            "{path} with a wrong key"
        );
        assert_eq!(
            http(server.port, "GET", path, Some(&KEY[..KEY.len() - 1]))
                .await
                .0,
            401,
            "{path} with a prefix of the key"
        );
    }
    assert_eq!(
        http(server.port, "GET", "/api/rooms", Some(KEY)).await.0,
        200
    );
    assert_eq!(
        http(server.port, "GET", "/api/stats", Some(KEY)).await.0,
        200
    );
    assert_eq!(
        http(server.port, "GET", "/api/rooms/none", Some(KEY))
            .await
            .0,
        404
    );
    assert_eq!(
        http(server.port, "DELETE", "/api/rooms/none", None).await.0,
        401
    );
    // Without FAULT_INJECTION the debug routes do not exist, key or not.
    assert_eq!(
        http(server.port, "POST", "/api/debug/workers/0/panic", Some(KEY))
            .await
            .0,
        404
    );
    for path in [
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/stats",
    ] {
        assert_eq!(http(server.port, "GET", path, None).await.0, 200, "{path}");
    }
    // The WebSocket does not need it either.
    let mut ws = Ws::connect(&server.ws_url()).await;
    ws.assert_usable("connecting without the admin key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_origins_must_be_listed_when_a_list_is_set() {
    let server = TestServer::start_with(
        1,
        &[
            ("SESSION_GRACE", "0"),
            (
                "ALLOWED_ORIGINS",
                "https://app.example.com,http://localhost:3000",
            ),
        ],
    )
    .await;
    assert_eq!(
        ws_handshake(server.port, "Origin: https://evil.example\r\n").await,
        403
    );
    assert_eq!(
        ws_handshake(
            server.port,
            "Origin: https://app.example.com.evil.example\r\n"
        )
        .await,
        403
    );
    assert_eq!(
        ws_handshake(server.port, "Origin: https://app.example.com\r\n").await,
        101
    );
    assert_eq!(
        ws_handshake(server.port, "Origin: http://localhost:3000\r\n").await,
        101
    );
    assert_eq!(
        ws_handshake(server.port, "").await,
        101,
        "no Origin: a native client"
    );
    // Without the setting any origin passes.
    let open = TestServer::start(1).await;
    assert_eq!(
        ws_handshake(open.port, "Origin: https://evil.example\r\n").await,
        101
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_ip_are_capped_at_the_handshake() {
    let server = TestServer::start_with(
        1,
        &[("SESSION_GRACE", "0"), ("MAX_CONNECTIONS_PER_IP", "2")],
    )
    .await;
    let mut first = Ws::connect(&server.ws_url()).await;
    let mut second = Ws::connect(&server.ws_url()).await;
    assert_eq!(handshake_status(&server.ws_url()).await, 429);
    first.assert_usable("a refused third connection").await;
    second.assert_usable("a refused third connection").await;
    drop(first);
    // The slot is free once the server has seen the close.
    assert!(eventually(5, async || handshake_status(&server.ws_url()).await == 101).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_worker_leaves_health_and_existing_rooms_responsive() {
    const KEY: &str = "blocked-worker-admin-key";
    let server = TestServer::start_with(
        1,
        &[
            ("SESSION_GRACE", "0"),
            ("FAULT_INJECTION", "1"),
            ("ADMIN_KEY", KEY),
            ("LIVENESS_TIMEOUT", "1"),
        ],
    )
    .await;
    let mut early = Ws::connect(&server.ws_url()).await;
    early.ok("createRoom", json!({"roomId": "existing"})).await;
    assert_eq!(http(server.port, "GET", "/health/live", None).await.0, 200);

    let (status, body) = http(server.port, "POST", "/api/debug/workers/0/block", Some(KEY)).await;
    assert_eq!(status, 200, "{body}");
    // A room creation waits for the blocked worker...
    let mut creator = Ws::connect(&server.ws_url()).await;
    let pending = creator
        .send_request("createRoom", json!({"roomId": "new"}))
        .await;
    // ...which liveness reports once the stall outlasts LIVENESS_TIMEOUT...
    let stalled = eventually(15, async || {
        http(server.port, "GET", "/health/live", None).await.0 == 503
    })
    .await;
    assert!(stalled, "/health/live never reported the blocked worker");
    // ...while health, the API and requests that need no worker answer.
    let (status, body) = http(server.port, "GET", "/health", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(http(server.port, "GET", "/health/ready", None).await.0, 200);
    let (status, body) = http(server.port, "GET", "/api/rooms", Some(KEY)).await;
    assert_eq!(status, 200);
    assert!(body.contains("existing"), "{body}");
    let mut other = Ws::connect(&server.ws_url()).await;
    within(
        "createRoom of an existing room while the worker is blocked",
        5,
        other.ok("createRoom", json!({"roomId": "existing"})),
    )
    .await;

    let (status, _) = http(
        server.port,
        "POST",
        "/api/debug/workers/0/unblock",
        Some(KEY),
    )
    .await;
    assert_eq!(status, 200);
    let answer = creator.response(pending).await;
    assert_eq!(answer["ok"], true, "{answer}");
    assert!(
        eventually(10, async || http(server.port, "GET", "/health/live", None)
            .await
            .0
            == 200)
        .await
    );
}

// ----- access tokens and start-up checks ------------------------------------------------------

const SECRET: &str = "hostile-test-secret-0123456789abcdef";

/// A token for `alice` in room `r` with these extra claims.
fn token(extra: Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let mut claims = json!({"sub": "alice", "room": "r", "canPublish": true, "exp": now + 600});
    for (k, v) in extra.as_object().expect("an object").iter() {
        let v = match v.as_i64() {
            // Times relative to now.
            Some(offset) if k == "nbf" => json!(now.saturating_add_signed(offset)),
            _ => v.clone(),
        };
        claims[k] = v;
    }
    let claims: ferrosoup_signal::Claims = serde_json::from_value(claims).expect("claims");
    ferrosoup_signal::auth::mint(&claims, SECRET).expect("sign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_for_not_before_audience_and_issuer() {
    let server = TestServer::start_with(
        1,
        &[
            ("SESSION_GRACE", "0"),
            ("AUTH_SECRET", SECRET),
            ("AUTH_AUDIENCE", "sfu"),
            ("AUTH_ISSUER", "backend"),
        ],
    )
    .await;
    let url = |t: &str| format!("{}?token={t}", server.ws_url());
    let good = json!({"aud": "sfu", "iss": "backend"});
    for (what, extra, status) in [
        ("valid", good.clone(), 101),
        (
            "nbf in the past",
            json!({"aud": "sfu", "iss": "backend", "nbf": -60}),
            101,
        ),
        (
            "nbf in the future",
            json!({"aud": "sfu", "iss": "backend", "nbf": 600}),
            401,
        ),
        ("no audience", json!({"iss": "backend"}), 401),
        (
            "another audience",
            json!({"aud": "other", "iss": "backend"}),
            401,
        ),
        ("no issuer", json!({"aud": "sfu"}), 401),
        (
            "another issuer",
            json!({"aud": "sfu", "iss": "mallory"}),
            401,
        ),
    ] {
        assert_eq!(
            handshake_status(&url(&token(extra))).await,
            status,
            "{what}"
        );
    }
    // `ferrosoup token` mints for the configured audience and issuer.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrosoup"))
        .envs([
            ("AUTH_SECRET", SECRET),
            ("AUTH_AUDIENCE", "sfu"),
            ("AUTH_ISSUER", "backend"),
            ("RUST_LOG", "error"),
        ])
        .args(["token", "--room", "r", "--peer", "alice"])
        .output()
        .expect("run `ferrosoup token`");
    assert!(out.status.success());
    let cli = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(handshake_status(&url(&cli)).await, 101);
}

/// Runs the binary with `env` and expects it to refuse to start; its stderr.
fn refused_start(env: &[(&str, &str)]) -> String {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferrosoup"))
        .env("PORT", "0")
        .env("LISTEN_IP", "127.0.0.1")
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the binary");
    // A server that starts would run until killed: give it a generous while to refuse.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started with {env:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "{env:?}: exit {status}");
    stderr
}

#[test]
fn unsafe_settings_are_refused_at_start() {
    let stderr = refused_start(&[("AUTH_SECRET", "s3cret")]);
    assert!(stderr.contains("at least 32 bytes"), "{stderr}");
    let stderr = refused_start(&[("FAULT_INJECTION", "1")]);
    assert!(
        stderr.contains("FAULT_INJECTION needs ADMIN_KEY"),
        "{stderr}"
    );
}
