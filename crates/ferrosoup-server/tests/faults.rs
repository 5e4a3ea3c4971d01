//! (g) Graceful shutdown and fault containment.
//!
//! - SIGTERM drains the server: `/health` answers 503, new WebSocket connections and joins
//!   are refused with 503 while joined peers keep being served; after `DRAIN_SECONDS` every
//!   peer gets `roomClosed {reason: "shutdown"}` and close code 1001, and the process exits 0.
//! - A worker that panics loses only its rooms (`roomClosed {reason: "worker failure"}`);
//!   media in the rooms of the other worker keeps flowing, and the worker restarts and
//!   carries media for new rooms.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use common::*;
use ferrosoup_client::{Consumer, MediaKind, Peer, RecvTransport, SendTransport};

// ----- HTTP helpers -------------------------------------------------------------------------

/// The admin key of the servers with fault injection (its debug routes are admin routes).
const ADMIN_KEY: &str = "faults-test-admin-key";

/// Sends `METHOD path` (with the admin key) and returns the status code and body (`None` on
/// connection failure).
async fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_KEY}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// `http`, which must reach the server.
async fn http_ok(port: u16, method: &str, path: &str) -> (u16, String) {
    within(&format!("{method} {path}"), 10, http(port, method, path))
        .await
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP answer"))
}

// ----- a server process of our own, for SIGTERM ----------------------------------------------

/// The `ferrosoup` binary started by this file, so that it can be sent SIGTERM and its exit
/// status read (`TestServer` keeps its process private).
struct OwnServer {
    child: Child,
    port: u16,
}

impl OwnServer {
    /// Starts one worker on a free UDP port and waits until `/health` answers.
    async fn start(env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free TCP port")
            .port();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free UDP port")
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_ferrosoup"))
            .env("PORT", port.to_string())
            .env("LISTEN_IP", "127.0.0.1")
            .env("RTC_MIN_PORT", udp.to_string())
            .env("RTC_MAX_PORT", udp.to_string())
            .env("NUM_WORKERS", "1")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the ferrosoup binary");
        let server = Self { child, port };
        if !eventually(5, async || http(port, "GET", "/health").await.is_some()).await {
            panic!("ferrosoup did not answer /health on port {port}");
        }
        server
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits for the process to exit; its status.
    async fn exit_status(&mut self, secs: u64) -> std::process::ExitStatus {
        let mut status = None;
        let exited = eventually(secs, async || {
            status = self.child.try_wait().expect("wait for the server");
            status.is_some()
        })
        .await;
        match status {
            Some(status) if exited => status,
            _ => panic!("timed out after {secs}s: the server process exits"),
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_closes_every_room_and_exits_zero() {
    let mut server = OwnServer::start(&[("DRAIN_SECONDS", "2"), ("SESSION_GRACE", "30")]).await;
    let url = server.ws_url();
    // Two peers in a room, each with a transport, and one in another room; a connection
    // that has not joined yet.
    let mut peers = Vec::new();
    for (room, peer) in [("drain-1", "a"), ("drain-1", "b"), ("drain-2", "c")] {
        let mut ws = Ws::connect(&url).await;
        let caps = ws.ok("createRoom", json!({"roomId": room})).await["rtpCapabilities"].clone();
        ws.ok(
            "joinRoom",
            json!({"roomId": room, "peerId": peer, "rtpCapabilities": caps}),
        )
        .await;
        ws.ok("createTransport", json!({"direction": "send"})).await;
        peers.push((room, ws));
    }
    let mut late = Ws::connect(&url).await;
    let (status, body) = http_ok(server.port, "GET", "/health").await;
    assert_eq!(status, 200, "/health before SIGTERM: {body}");
    // Without FAULT_INJECTION there is no route to make a worker panic.
    let (status, body) = http_ok(server.port, "POST", "/api/debug/workers/0/panic").await;
    assert_eq!(
        status, 404,
        "fault injection must be off by default: {body}"
    );
    peers[0].1.ok("ping", json!({})).await;

    server.terminate();
    assert!(
        eventually(10, async || http_ok(server.port, "GET", "/health").await.0
            == 503)
        .await,
        "timed out after 10s: /health turns 503 after SIGTERM"
    );
    let (status, body) = http_ok(server.port, "GET", "/health").await;
    let health: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("/health while draining is not JSON ({e}): {body}"));
    assert_eq!(
        (status, health["status"].as_str()),
        (503, Some("draining")),
        "/health while draining: {body}"
    );
    assert_eq!(
        handshake_status(&url).await,
        503,
        "a new WebSocket while draining must get HTTP 503"
    );
    // Resuming is still allowed through the handshake (the token is then checked).
    let mut resume = Ws::connect(&format!("{url}?resume=0123456789abcdef")).await;
    let (_, code) = resume.until_closed().await;
    assert_eq!(code, Some(4404), "an unknown resume token while draining");
    // A connection opened before the drain may not join or create rooms.
    let refused = late
        .request("joinRoom", json!({"roomId": "drain-1", "peerId": "late"}))
        .await;
    assert_eq!(
        (refused["ok"].as_bool(), refused["errorCode"].as_u64()),
        (Some(false), Some(503)),
        "joinRoom while draining: {refused}"
    );
    let refused = late
        .request("createRoom", json!({"roomId": "drain-3"}))
        .await;
    assert_eq!(
        (refused["ok"].as_bool(), refused["errorCode"].as_u64()),
        (Some(false), Some(503)),
        "createRoom of a new room while draining: {refused}"
    );
    // Joined peers are still served.
    for (_, ws) in &mut peers {
        ws.ok("ping", json!({})).await;
    }

    // After the drain every joined peer gets roomClosed "shutdown" and close code 1001.
    for (room, ws) in &mut peers {
        let (seen, code) = within("roomClosed after the drain", 20, ws.until_closed()).await;
        let closed: Vec<&Value> = seen
            .iter()
            .filter(|n| n["method"] == "roomClosed")
            .collect();
        assert_eq!(
            closed.len(),
            1,
            "exactly one roomClosed for a peer of {room}: {seen:?}"
        );
        assert_eq!(
            closed[0]["data"],
            json!({"roomId": room, "reason": "shutdown"}),
            "roomClosed data"
        );
        assert_eq!(code, Some(1001), "close code of a peer of {room}");
    }
    let status = server.exit_status(20).await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

// ----- worker failure ---------------------------------------------------------------------

/// A room with a VP8 publisher and a subscriber, media flowing until [`Stream::stop`].
struct Stream {
    room: String,
    publisher: Peer,
    subscriber: Peer,
    _send: SendTransport,
    _recv: RecvTransport,
    /// Frames the subscriber received intact.
    received: watch::Receiver<u32>,
    /// Frames that arrived damaged or out of order.
    bad: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Stream {
    /// Joins `publisher` and `subscriber` to `room` and starts the media.
    async fn start(url: &str, room: &str, publisher: &str, subscriber: &str) -> Self {
        let p = within("publisher joins", 10, Peer::join(url, room, publisher))
            .await
            .unwrap_or_else(|e| panic!("{publisher} joins {room}: {e}"));
        let s = within("subscriber joins", 10, Peer::join(url, room, subscriber))
            .await
            .unwrap_or_else(|e| panic!("{subscriber} joins {room}: {e}"));
        Self::start_with(room, p, s).await
    }

    /// Starts media from `p` to `s`, both joined to `room`.
    async fn start_with(room: &str, p: Peer, s: Peer) -> Self {
        let send = p.create_send_transport().await.expect("send transport");
        let video = common::produce(&send, MediaKind::Video, "video/VP8").await;
        let recv = s.create_recv_transport().await.expect("recv transport");
        let consumer = recv.consume(video.id()).await.expect("consume vp8");
        within("send transport connects", 10, send.wait_connected())
            .await
            .expect("send transport connected");
        within("recv transport connects", 10, recv.wait_connected())
            .await
            .expect("recv transport connected");
        consumer.resume().await.expect("resume consumer");

        let stop = Arc::new(AtomicBool::new(false));
        let (received_tx, received) = watch::channel(0);
        let bad = Arc::new(AtomicU32::new(0));
        let video = Arc::new(video);
        let (keyframe_wanted, watcher) = watch_keyframe_requests(video.clone());
        let sender = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let keyframe = keyframe_wanted.swap(false, Ordering::Relaxed);
                    if video
                        .send(i as u16, i * 3000, true, vp8_frame(i, keyframe))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    i += 1;
                    tokio::time::sleep(FRAME_INTERVAL).await;
                }
            })
        };
        let reader = tokio::spawn(read_frames(
            consumer,
            stop.clone(),
            received_tx,
            bad.clone(),
        ));
        Self {
            room: room.to_owned(),
            publisher: p,
            subscriber: s,
            _send: send,
            _recv: recv,
            received,
            bad,
            stop,
            tasks: vec![watcher, sender, reader],
        }
    }

    /// Waits until `n` more frames arrived than now.
    async fn wait_frames(&mut self, n: u32, what: &str) {
        let target = *self.received.borrow() + n;
        within(what, 15, self.received.wait_for(|r| *r >= target))
            .await
            .expect("the frame reader runs");
        assert_eq!(
            self.bad.load(Ordering::Relaxed),
            0,
            "{}: damaged or reordered frames",
            self.room
        );
    }

    /// Stops the media tasks.
    async fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Counts intact, increasing VP8 frames until `stop` or the end of the track.
async fn read_frames(
    consumer: Consumer,
    stop: Arc<AtomicBool>,
    received: watch::Sender<u32>,
    bad: Arc<AtomicU32>,
) {
    let mut last: Option<u32> = None;
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(200), consumer.read_rtp()).await {
            Ok(Some(p)) => match vp8_counter(&p.payload) {
                Some(c) if last.is_none_or(|l| c > l) => {
                    last = Some(c);
                    received.send_modify(|r| *r += 1);
                }
                _ => {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            },
            Ok(None) => return,
            Err(_) => {}
        }
    }
}

/// The worker index `/api/rooms/{room}` reports.
async fn worker_of(server: &TestServer, room: &str) -> u64 {
    let r = server
        .get(&format!("/api/rooms/{room}"))
        .await
        .expect("/api/rooms/{room} answers");
    r["worker"]
        .as_u64()
        .unwrap_or_else(|| panic!("room {room} without worker: {r}"))
}

/// The `roomClosed` data a peer gets, then waits for its connection to end.
async fn room_closed(peer: &mut Peer, who: &str) -> Value {
    let data = within(
        &format!("{who} gets roomClosed"),
        10,
        peer.next_notification("roomClosed"),
    )
    .await
    .unwrap_or_else(|| panic!("{who}: connection ended without roomClosed"));
    within(
        &format!("{who}'s connection is closed by the server"),
        10,
        async { while peer.notifications().recv().await.is_some() {} },
    )
    .await;
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_panic_closes_only_its_rooms_and_the_worker_restarts() {
    let server = TestServer::start_with(
        2,
        &[
            ("SESSION_GRACE", "0"),
            ("FAULT_INJECTION", "1"),
            ("ADMIN_KEY", ADMIN_KEY),
        ],
    )
    .await;
    let url = server.ws_url();
    let mut one = Stream::start(&url, "one", "alice", "bob").await;
    let mut two = Stream::start(&url, "two", "carol", "dave").await;
    let failing = worker_of(&server, "one").await;
    let healthy = worker_of(&server, "two").await;
    assert_ne!(
        failing, healthy,
        "rooms one and two must be on different workers"
    );
    one.wait_frames(30, "media flows in room one").await;
    two.wait_frames(30, "media flows in room two").await;

    let (status, body) = http_ok(
        server.port,
        "POST",
        &format!("/api/debug/workers/{failing}/panic"),
    )
    .await;
    assert_eq!(status, 200, "panic injection: {body}");

    // Room one's peers are told and disconnected.
    for (peer, who) in [(&mut one.publisher, "alice"), (&mut one.subscriber, "bob")] {
        let data = room_closed(peer, who).await;
        assert_eq!(
            data,
            json!({"roomId": "one", "reason": "worker failure"}),
            "{who}'s roomClosed"
        );
    }
    one.stop().await;

    // Room two is untouched: its media keeps flowing, its peers are still served.
    two.wait_frames(
        50,
        "media keeps flowing in room two after the other worker's panic",
    )
    .await;
    for peer in [&mut two.publisher, &mut two.subscriber] {
        peer.signaling()
            .request("ping", json!({}))
            .await
            .expect("room two's peers are still served");
        while let Ok(n) = peer.notifications().try_recv() {
            assert_ne!(n.method, "roomClosed", "room two was closed: {n:?}");
        }
    }
    let (status, body) = http_ok(server.port, "GET", "/health").await;
    assert_eq!(status, 200, "/health after a worker panic: {body}");
    let rooms = server.get("/api/rooms").await.expect("/api/rooms answers");
    let ids: Vec<&str> = rooms["rooms"]
        .as_array()
        .expect("rooms array")
        .iter()
        .filter_map(|r| r["roomId"].as_str())
        .collect();
    assert_eq!(ids, ["two"], "rooms after the panic: {rooms}");

    // The worker restarted: a new room lands on it (round-robin) and carries media.
    let mut three = None;
    for attempt in 0..4 {
        let room = format!("three-{attempt}");
        let erin = within("erin joins", 10, Peer::join(&url, &room, "erin"))
            .await
            .unwrap_or_else(|e| panic!("erin joins {room}: {e}"));
        if worker_of(&server, &room).await == failing {
            three = Some((room, erin));
            break;
        }
        erin.leave().await.expect("erin leaves");
    }
    let (room, erin) = three.expect("no new room landed on the restarted worker in 4 tries");
    let frank = within("frank joins", 10, Peer::join(&url, &room, "frank"))
        .await
        .expect("frank joins");
    let mut three = Stream::start_with(&room, erin, frank).await;
    three
        .wait_frames(50, "media flows on the restarted worker")
        .await;
    two.wait_frames(20, "media still flows in room two").await;

    // Nothing leaks once everyone left.
    for mut stream in [three, two] {
        stream.stop().await;
        stream.publisher.leave().await.expect("publisher leaves");
        stream.subscriber.leave().await.expect("subscriber leaves");
    }
    drop(one);
    server.wait_all_objects_gone().await;
}
