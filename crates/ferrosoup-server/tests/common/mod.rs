//! Shared helpers of the integration tests: the real `ferrosoup` binary on loopback, and
//! synthetic media with counters in the payload.

#![allow(dead_code)] // each test binary uses a different subset

pub mod broadcast;
pub mod raw_client;
pub mod ws;

#[allow(unused_imports)] // each test binary uses a different subset
pub use ws::{Frame, Ws, error_of, handshake_status};

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use serde_json::Value;

/// The server binary, started as it ships, with loopback-only candidates.
pub struct TestServer {
    child: Child,
    /// HTTP port.
    pub port: u16,
    /// The `ADMIN_KEY` it was started with, sent with every request of [`TestServer::get`].
    pub admin_key: Option<String>,
}

static NEXT_RANGE: AtomicU16 = AtomicU16::new(0);

impl TestServer {
    /// Starts `ferrosoup` with `workers` workers and waits until `/health` answers. Peers
    /// whose WebSocket drops are removed at once (`SESSION_GRACE=0`); tests of the resume
    /// grace period use [`TestServer::start_with`].
    pub async fn start(workers: usize) -> Self {
        Self::start_with(workers, &[("SESSION_GRACE", "0")]).await
    }

    /// Starts `ferrosoup` with extra environment variables.
    pub async fn start_with(workers: usize, env: &[(&str, &str)]) -> Self {
        let port = free_tcp_port();
        // Each server of this process gets its own UDP range; processes differ by pid.
        let slot = NEXT_RANGE.fetch_add(1, Ordering::Relaxed);
        let base = 42000 + (std::process::id() % 100) as u16 * 200 + slot * 20;
        let child = Command::new(env!("CARGO_BIN_EXE_ferrosoup"))
            .env("PORT", port.to_string())
            .env("LISTEN_IP", "127.0.0.1")
            .env("RTC_MIN_PORT", base.to_string())
            .env("RTC_MAX_PORT", (base + 19).to_string())
            .env("NUM_WORKERS", workers.to_string())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop_compat()
            .spawn()
            .expect("start the ferrosoup binary");
        let admin_key = env
            .iter()
            .find(|(k, _)| *k == "ADMIN_KEY")
            .map(|(_, v)| (*v).to_owned());
        let server = Self {
            child,
            port,
            admin_key,
        };
        if !eventually(5, async || server.get("/health").await.is_some()).await {
            panic!("ferrosoup did not answer /health on port {port}");
        }
        server
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// GET a path and parse JSON (`None` on connection failure).
    pub async fn get(&self, path: &str) -> Option<Value> {
        let text = self.get_text(path).await?;
        serde_json::from_str(&text).ok()
    }

    /// GET a path as text (`None` on connection failure).
    pub async fn get_text(&self, path: &str) -> Option<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        let auth = self
            .admin_key
            .as_ref()
            .map(|k| format!("Authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        let (_, body) = text.split_once("\r\n\r\n")?;
        Some(body.to_owned())
    }

    /// Sends `method path` with a JSON body (the admin key when set); the status and the
    /// JSON answer (`Null` when it is not JSON).
    pub async fn http(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to the HTTP port");
        let auth = self
            .admin_key
            .as_ref()
            .map(|k| format!("Authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.expect("send the request");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read the answer");
        let text = String::from_utf8_lossy(&buf);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let json = text
            .split_once("\r\n\r\n")
            .and_then(|(_, b)| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        (status, json)
    }

    /// Sum of a counter over all workers in `/api/stats`.
    pub async fn counter(&self, name: &str) -> u64 {
        let stats = self.get("/api/stats").await.expect("/api/stats answers");
        stats["workers"]
            .as_array()
            .expect("workers array")
            .iter()
            .map(|w| w[name].as_u64().unwrap_or(0))
            .sum()
    }

    /// Waits until the object counts the workers publish (after each turn of their loop) are
    /// all zero and no room is left.
    pub async fn wait_all_objects_gone(&self) {
        let gone = eventually(5, async || {
            let mut total = 0;
            for name in ["transports", "producers", "consumers", "routers"] {
                total += self.counter(name).await;
            }
            let rooms = self.get("/api/rooms").await.expect("/api/rooms answers");
            total == 0 && rooms["rooms"].as_array().is_some_and(|r| r.is_empty())
        })
        .await;
        if gone {
            return;
        }
        panic!(
            "objects left behind: {}",
            self.get_text("/api/stats").await.unwrap_or_default()
        );
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

trait KillOnDropCompat {
    fn kill_on_drop_compat(&mut self) -> &mut Self;
}

impl KillOnDropCompat for Command {
    // std::process has no kill-on-drop; `TestServer::drop` kills the child.
    fn kill_on_drop_compat(&mut self) -> &mut Self {
        self
    }
}

/// A TCP port nothing listens on now.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port")
}

/// A synthetic VP8 frame in one packet: payload descriptor (S=1, partition 0), a VP8
/// header byte whose low bit is 0 for keyframes, then the frame counter.
pub fn vp8_frame(counter: u32, keyframe: bool) -> bytes::Bytes {
    let mut p = vec![0x10, if keyframe { 0x00 } else { 0x01 }];
    p.extend_from_slice(&counter.to_be_bytes());
    p.extend_from_slice(&[0xab; 200]);
    bytes::Bytes::from(p)
}

/// The counter of a frame built by [`vp8_frame`], if the payload is intact.
pub fn vp8_counter(payload: &[u8]) -> Option<u32> {
    if payload.len() != 206 || payload[0] != 0x10 || payload[6..].iter().any(|b| *b != 0xab) {
        return None;
    }
    Some(u32::from_be_bytes([
        payload[2], payload[3], payload[4], payload[5],
    ]))
}

/// A synthetic Opus packet carrying a counter.
pub fn opus_packet(counter: u32) -> bytes::Bytes {
    let mut p = vec![0xfc];
    p.extend_from_slice(&counter.to_be_bytes());
    p.extend_from_slice(&[0x5a; 60]);
    bytes::Bytes::from(p)
}

/// The counter of a packet built by [`opus_packet`], if intact.
pub fn opus_counter(payload: &[u8]) -> Option<u32> {
    if payload.len() != 65 || payload[0] != 0xfc || payload[5..].iter().any(|b| *b != 0x5a) {
        return None;
    }
    Some(u32::from_be_bytes([
        payload[1], payload[2], payload[3], payload[4],
    ]))
}

/// The media clock of the test senders, 200 frames per second: what the tests check is
/// every frame's fate, not the rate, so the sooner the frames they wait for are out the
/// better.
pub const FRAME_INTERVAL: Duration = Duration::from_millis(5);

/// How often [`eventually`] looks.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `done` every [`POLL_INTERVAL`] for up to `secs` seconds; whether it came true. For
/// states the server shows only when asked (counters in `/api/stats`, `/api/rooms`,
/// `/health`); the caller panics with what it saw.
pub async fn eventually(secs: u64, mut done: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if done().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Timeout helper with a message.
pub async fn within<T>(what: &str, secs: u64, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs}s: {what}"),
    }
}

/// Makes a test publisher behave like a real encoder: the returned flag starts true (send a
/// keyframe first) and is set again whenever the SFU asks `producer` for a keyframe (PLI or
/// FIR); the sender takes it with `swap(false)` before each frame. The task ends with the
/// transport (or when aborted).
pub fn watch_keyframe_requests(
    producer: std::sync::Arc<ferrosoup_client::Producer>,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    tokio::task::JoinHandle<()>,
) {
    let wanted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = wanted.clone();
    let task = tokio::spawn(async move {
        while producer.next_keyframe_request().await.is_some() {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    (wanted, task)
}

/// Runs the load tester with `cfg` and prints its table. It runs its own event loops and
/// blocks: kept off the test's runtime.
pub async fn run_scenario(cfg: ferrosoup_loadtest::Config) -> ferrosoup_loadtest::Report {
    let report = tokio::task::spawn_blocking(move || ferrosoup_loadtest::run(&cfg))
        .await
        .expect("load tester thread")
        .expect("the scenario runs");
    println!("{}", report.table());
    report
}

/// A short load-tester run of one room: one publisher (Opus and VP8 at 300 kbit/s) and
/// `subscribers` subscribers over `urls` (`--spread peers` with more than one), 2 s
/// measured after 1 s; checks that every peer joined, each subscriber consumed both
/// producers and nothing failed SRTP or the payload check. Returns the report.
pub async fn run_small_room(urls: &[String], subscribers: usize) -> ferrosoup_loadtest::Report {
    use clap::Parser;
    let subscribers_arg = subscribers.to_string();
    let mut args = vec!["ferrosoup-loadtest"];
    for url in urls {
        args.extend(["--url", url.as_str()]);
    }
    if urls.len() > 1 {
        args.extend(["--spread", "peers"]);
    }
    args.extend([
        "--publishers",
        "1",
        "--subscribers",
        &subscribers_arg,
        "--video-kbps",
        "300",
        "--duration",
        "2",
        "--settle",
        "1",
        "--quiet",
    ]);
    let cfg = ferrosoup_loadtest::Config::try_parse_from(args).expect("arguments parse");
    let report = run_scenario(cfg).await;
    assert_eq!(
        (report.peers_joined, report.peers_failed),
        (subscribers + 1, 0)
    );
    assert_eq!(report.consumers, 2 * subscribers);
    assert_eq!((report.srtp_failures, report.payload_errors), (0, 0));
    report
}

/// Waits up to `secs` for `peer`'s next notification `method` (others before it are
/// skipped); its data.
pub async fn notified(peer: &mut ferrosoup_client::Peer, method: &str, secs: u64) -> Value {
    within(method, secs, peer.next_notification(method))
        .await
        .expect("the connection stays open")
}

/// Reads `consumer`'s RTP until `frames` counters in a row came in order (each later than
/// the one before), with `counter` reading a payload's counter.
pub async fn read_in_order(
    consumer: &ferrosoup_client::Consumer,
    frames: usize,
    counter: fn(&[u8]) -> Option<u32>,
) -> Vec<u32> {
    let mut got: Vec<u32> = Vec::new();
    while got.len() < frames {
        let packet = tokio::time::timeout(Duration::from_secs(5), consumer.read_rtp())
            .await
            .expect("media keeps coming")
            .expect("consumer open");
        let n = counter(&packet.payload).expect("payload intact");
        assert!(
            got.last().is_none_or(|&last| n > last),
            "out of order: {got:?} then {n}"
        );
        got.push(n);
    }
    got
}

/// A producer of `kind` with codec `codec` (its MIME type) on `send`.
pub async fn produce(
    send: &ferrosoup_client::SendTransport,
    kind: ferrosoup_client::MediaKind,
    codec: &str,
) -> ferrosoup_client::Producer {
    send.produce(
        kind,
        ferrosoup_client::ProduceOptions {
            codec: Some(codec.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("produce {codec}: {e}"))
}

/// A peer that publishes Opus and VP8 with counters in the payloads
/// ([`publish_until_stopped`]) and counts the keyframe requests it gets.
pub struct Publishing {
    /// The publishing peer.
    pub peer: ferrosoup_client::Peer,
    /// Its send transport (connected).
    pub send: ferrosoup_client::SendTransport,
    /// Its audio producer's id.
    pub audio_id: String,
    /// Its video producer's id.
    pub video_id: String,
    /// Its video producer.
    pub video: std::sync::Arc<ferrosoup_client::Producer>,
    /// Keyframe requests received.
    pub requests: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// Sending and counting.
    pub tasks: PublishTasks,
}

/// The tasks of a [`Publishing`] peer.
pub struct PublishTasks([tokio::task::JoinHandle<()>; 2]);

impl PublishTasks {
    /// Stops sending and counting.
    pub async fn stop(self) {
        for task in &self.0 {
            task.abort();
        }
        for task in self.0 {
            let _ = task.await;
        }
    }
}

impl Publishing {
    /// `name` joins `room` at `url`, produces Opus and VP8 and publishes once connected.
    pub async fn start(url: &str, room: &str, name: &str) -> Self {
        use ferrosoup_client::{MediaKind, Peer};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU32, Ordering};

        let peer = Peer::join(url, room, name)
            .await
            .expect("the publisher joins");
        let send = peer.create_send_transport().await.expect("send transport");
        let audio = produce(&send, MediaKind::Audio, "audio/opus").await;
        let video = Arc::new(produce(&send, MediaKind::Video, "video/VP8").await);
        let (audio_id, video_id) = (audio.id().to_owned(), video.id().to_owned());
        let requests = Arc::new(AtomicU32::new(0));
        let counting = {
            let (video, requests) = (video.clone(), requests.clone());
            tokio::spawn(async move {
                while video.next_keyframe_request().await.is_some() {
                    requests.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        within(
            "the publisher's send transport connects",
            10,
            send.wait_connected(),
        )
        .await
        .expect("connected");
        let publisher = publish_until_stopped(audio, video.clone(), requests.clone());
        Self {
            peer,
            send,
            audio_id,
            video_id,
            video,
            requests,
            tasks: PublishTasks([publisher, counting]),
        }
    }
}

/// Publishes audio and video until the task is aborted: a keyframe first and one for each
/// keyframe request counted in `requests`.
pub fn publish_until_stopped(
    audio: ferrosoup_client::Producer,
    video: std::sync::Arc<ferrosoup_client::Producer>,
    requests: std::sync::Arc<std::sync::atomic::AtomicU32>,
) -> tokio::task::JoinHandle<()> {
    use std::sync::atomic::Ordering;
    tokio::spawn(async move {
        let mut served = 0;
        for i in 0u32.. {
            let wanted = requests.load(Ordering::Relaxed);
            let keyframe = i == 0 || wanted > served;
            served = wanted;
            if video
                .send(i as u16, i * 3000, true, vp8_frame(i, keyframe))
                .await
                .is_err()
                || audio
                    .send(i as u16, i * 960, false, opus_packet(i))
                    .await
                    .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}
