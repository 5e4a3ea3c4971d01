//! Criterion benchmarks of one signaling round trip, in process: a real worker pool (one
//! worker on a loopback UDP port) and hub, with `connection::run` fed over in-memory
//! channels instead of a WebSocket, spoken by the test kit's protoo client. Each iteration
//! sends one protoo request and waits for its response:
//! `signaling/ping` and `signaling/getRouterRtpCapabilities` (after a `createRoom`).
//!
//! Run: `cargo bench -p ferrosoup-benches --bench signaling -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferrosoup_room::{WorkerPool, WorkerSettings};
use ferrosoup_signal::{
    ConnectParams, Hub, Limits, Outgoing, ResumeRegistry, SignalConfig, connection,
};
use ferrosoup_testkit::protoo::{Channels, ProtooClient, RawFrame, Value, json};
use futures_util::stream;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

/// Room every request of the benchmark names.
const ROOM: &str = "bench-room";

/// The client end of one in-process signaling connection: the test kit's protoo client
/// over channels.
type Client = ProtooClient<Channels<Outgoing>>;

/// The session's frames as the client reads them.
fn frame(out: Outgoing) -> RawFrame {
    match out {
        Outgoing::Text(text) => RawFrame::Text(text),
        Outgoing::Close(code, _) => RawFrame::Close(Some(code)),
    }
}

/// One request with a fresh id (so the session's answer cache never hits); the response
/// as received (the client reads only its head, so the figures are the server's). Panics on
/// anything but a successful response, which would make the figures meaningless.
async fn request(client: &mut Client, method: &str, data: &Value) -> String {
    let response = client
        .request_text(method, data.clone())
        .await
        .unwrap_or_else(|e| panic!("{method}: {e}"));
    assert!(response.ok, "{method} failed: {}", response.text);
    response.text
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
            // The benchmarked room is never joined: keep it for the whole run.
            empty_room_timeout: std::time::Duration::from_secs(24 * 3600),
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
        tokio::spawn(connection::run(
            hub,
            std::sync::Arc::new(ResumeRegistry::new()),
            incoming,
            out,
            ConnectParams::default(),
        ));
    });
    let mut client = ProtooClient::new(Channels::new(to_server, from_server, frame));
    // No deadline: arming a timer per request would be timed too.
    client.set_timeout(None);
    client
}

/// Both round trips on one connection.
fn signaling(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime always builds");
    let mut client = start(&rt);
    let (ping, room) = (json!({}), json!({ "roomId": ROOM }));
    rt.block_on(request(&mut client, "createRoom", &room));

    let mut group = c.benchmark_group("signaling");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ping", |b| {
        b.iter(|| black_box(rt.block_on(request(&mut client, "ping", &ping))))
    });
    group.bench_function("getRouterRtpCapabilities", |b| {
        b.iter(|| black_box(rt.block_on(request(&mut client, "getRouterRtpCapabilities", &room))))
    });
    group.finish();
}

criterion_group!(benches, signaling);
criterion_main!(benches);
