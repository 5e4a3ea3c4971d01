//! Criterion benchmarks of one signaling round trip, in process: a real worker pool (one
//! worker on a loopback UDP port) and hub, with `session::run` fed over in-memory channels
//! instead of a WebSocket. Each iteration sends one protoo request and waits for its
//! response: `signaling/ping` and `signaling/getRouterRtpCapabilities` (after a
//! `createRoom`).
//!
//! Run: `cargo bench -p ferrosoup-benches --bench signaling -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferrosoup_room::{WorkerPool, WorkerSettings};
use ferrosoup_signal::{ConnectParams, Hub, Limits, Outgoing, SignalConfig, session};
use futures_util::stream;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

/// Room every request of the benchmark names.
const ROOM: &str = "bench-room";

/// The client end of one in-process signaling connection.
struct Client {
    to_server: mpsc::UnboundedSender<String>,
    from_server: mpsc::UnboundedReceiver<Outgoing>,
    next_id: u64,
}

impl Client {
    /// Sends one request with a fresh id (so the session's answer cache never hits) and
    /// returns the text of the response; panics on anything but a successful response,
    /// which would make the figures meaningless.
    async fn request(&mut self, method: &str, data: &str) -> String {
        self.next_id += 1;
        let id = self.next_id;
        let frame = format!(r#"{{"request":true,"id":{id},"method":"{method}","data":{data}}}"#);
        assert!(
            self.to_server.send(frame).is_ok(),
            "session task is running"
        );
        match self.from_server.recv().await {
            Some(Outgoing::Text(text)) => {
                assert!(text.contains(r#""ok":true"#), "{method} failed: {text}");
                text
            }
            other => panic!("{method}: no response, got {other:?}"),
        }
    }
}

/// Starts a one-worker pool and a hub with limits out of the way, and opens one connection.
fn start(rt: &Runtime) -> Client {
    let settings = WorkerSettings {
        num_workers: 1,
        listen_ip: IpAddr::from([127, 0, 0, 1]),
        rtc_min_port: 48_900,
        rtc_max_port: 48_999,
        ..WorkerSettings::default()
    };
    let (pool, events) = WorkerPool::start(&settings).expect("a port in 48900..=48999 is free");
    let config = SignalConfig {
        limits: Limits {
            requests_per_second: u32::MAX,
            request_burst: u32::MAX,
            ..Limits::default()
        },
        ..SignalConfig::default()
    };
    let (to_server, mut incoming) = mpsc::unbounded_channel::<String>();
    let (out, from_server) = mpsc::unbounded_channel();
    rt.block_on(async {
        let hub = Hub::new(
            pool,
            events,
            ferrosoup_proto::ortc::default_media_codecs(),
            config,
        );
        let incoming = stream::poll_fn(move |cx| incoming.poll_recv(cx));
        tokio::spawn(session::run(hub, incoming, out, ConnectParams::default()));
    });
    Client {
        to_server,
        from_server,
        next_id: 0,
    }
}

/// Both round trips on one connection.
fn signaling(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime always builds");
    let mut client = start(&rt);
    let room_data = format!(r#"{{"roomId":"{ROOM}"}}"#);
    rt.block_on(client.request("createRoom", &room_data));

    let mut group = c.benchmark_group("signaling");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ping", |b| {
        b.iter(|| black_box(rt.block_on(client.request("ping", "{}"))))
    });
    group.bench_function("getRouterRtpCapabilities", |b| {
        b.iter(|| black_box(rt.block_on(client.request("getRouterRtpCapabilities", &room_data))))
    });
    group.finish();
}

criterion_group!(benches, signaling);
criterion_main!(benches);
