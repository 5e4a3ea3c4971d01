//! ICE-TCP and IPv6 against the real binary: the candidates `createTransport` hands out
//! (UDP first, `preferTcp`, `forceTcp`), media through passive ICE-TCP candidates (RFC 6544,
//! RFC 4571 framing) with the load tester's own ICE/DTLS/SRTP client, and media over IPv6
//! loopback on a dual-stack listener. Asserts what arrives and what the server counts,
//! never how fast.

mod common;

use clap::Parser;
use ferrosoup_loadtest::{Config, Report, run};
use serde_json::{Value, json};

use common::{TestServer, Ws};

/// Runs a small load-tester scenario (one publisher, two subscribers) against `server`.
async fn small_run(server: &TestServer, extra: &[&str]) -> Report {
    let url = server.ws_url();
    let mut args = vec![
        "ferrosoup-loadtest",
        "--url",
        &url,
        "--publishers",
        "1",
        "--subscribers",
        "2",
        "--video-kbps",
        "200",
        "--duration",
        "1",
        "--settle",
        "0.5",
        "--verify-every",
        "1",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let cfg = Config::try_parse_from(args).expect("arguments parse");
    common::run_scenario(cfg).await
}

/// Media went through intact to every consumer.
fn assert_media_flowed(report: &Report) {
    assert_eq!(report.peers_failed, 0);
    assert_eq!(report.peers_joined, 3);
    assert_eq!(report.consumers, 4);
    assert!(
        report.delivery_ratio > 0.5,
        "delivery ratio {}",
        report.delivery_ratio
    );
    assert_eq!(report.srtp_failures, 0);
    assert!(report.payloads_checked > 0);
    assert_eq!(report.payload_errors, 0);
}

/// `(protocol, tcpType, address, priority)` of a `createTransport` answer's candidates,
/// in the order given.
fn candidates(answer: &Value) -> Vec<(String, Option<String>, String, u64)> {
    answer["iceCandidates"]
        .as_array()
        .expect("iceCandidates")
        .iter()
        .map(|c| {
            (
                c["protocol"].as_str().expect("protocol").to_owned(),
                c["tcpType"].as_str().map(str::to_owned),
                c["ip"].as_str().expect("ip").to_owned(),
                c["priority"].as_u64().expect("priority"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_offer_udp_first_and_honour_prefer_and_force_tcp() {
    let server = TestServer::start(1).await;
    let mut ws = Ws::connect(&server.ws_url()).await;
    ws.ok("createRoom", json!({"roomId": "tcp-candidates"}))
        .await;
    ws.ok(
        "joinRoom",
        json!({"roomId": "tcp-candidates", "peerId": "p"}),
    )
    .await;

    let plain = candidates(&ws.ok("createTransport", json!({"direction": "send"})).await);
    assert_eq!(plain.len(), 2, "{plain:?}");
    assert_eq!(plain[0].0, "udp");
    assert_eq!(plain[1].0, "tcp");
    assert_eq!(plain[1].1.as_deref(), Some("passive"));
    assert!(plain[0].3 > plain[1].3, "UDP wins when it works: {plain:?}");

    let prefer = candidates(
        &ws.ok(
            "createTransport",
            json!({"direction": "recv", "preferTcp": true}),
        )
        .await,
    );
    assert_eq!(prefer.len(), 2, "{prefer:?}");
    assert_eq!(prefer[0].0, "tcp");
    assert!(prefer[0].3 > prefer[1].3, "{prefer:?}");

    let force = candidates(
        &ws.ok(
            "createTransport",
            json!({"direction": "recv", "forceTcp": true}),
        )
        .await,
    );
    assert_eq!(force.len(), 1, "{force:?}");
    assert_eq!(
        (force[0].0.as_str(), force[0].1.as_deref()),
        ("tcp", Some("passive"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_flows_over_ice_tcp() {
    let server = TestServer::start(1).await;
    let report = small_run(&server, &["--tcp"]).await;
    assert_media_flowed(&report);
    // It went by TCP: frames were queued on connections, and no UDP datagram carried it.
    assert!(server.counter("tcp_frames_out").await > 0);
    assert_eq!(server.counter("tcp_frames_dropped").await, 0);
    assert!(
        server.counter("datagrams_in").await > 0,
        "TCP frames count as packets in"
    );
    assert_eq!(server.counter("datagrams_out").await, 0);
    // The load tester closed its connections: the server forgets them.
    assert!(
        common::eventually(5, async || server.counter("tcp_connections").await == 0).await,
        "closed connections are removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_sends_and_receives_over_ice_tcp_only() {
    use ferrosoup_client::{MediaKind, Peer, RecvTransport, SendTransport, TransportOptions};
    const FRAMES: u32 = 100;
    let server = TestServer::start(1).await;
    let url = server.ws_url();
    // No UDP socket on the client side at all: only TCP can carry ICE, DTLS and media.
    let tcp_only = TransportOptions {
        force_tcp: true,
        ..Default::default()
    };
    let alice = Peer::join(&url, "tcp-client", "alice")
        .await
        .expect("alice joins");
    let send = SendTransport::create(alice.signaling(), alice.device(), tcp_only.clone())
        .await
        .expect("send transport");
    let video = common::produce(&send, MediaKind::Video, "video/VP8").await;
    let bob = Peer::join(&url, "tcp-client", "bob")
        .await
        .expect("bob joins");
    let recv = RecvTransport::create(bob.signaling(), bob.device(), tcp_only)
        .await
        .expect("recv transport");
    let video_in = recv.consume(video.id()).await.expect("consume vp8");
    common::within(
        "send transport connects over TCP",
        10,
        send.wait_connected(),
    )
    .await
    .expect("send transport connected");
    common::within(
        "recv transport connects over TCP",
        10,
        recv.wait_connected(),
    )
    .await
    .expect("recv transport connected");
    video_in.resume().await.expect("resume");

    let sender = tokio::spawn(async move {
        for i in 0..FRAMES {
            // Every frame a keyframe: no PLI round trip needed for the first to be forwarded.
            video
                .send(i as u16, i * 3000, true, common::vp8_frame(i, true))
                .await
                .expect("send vp8");
            tokio::time::sleep(common::FRAME_INTERVAL).await;
        }
        video
    });
    let mut got = Vec::new();
    while let Ok(Some(p)) =
        tokio::time::timeout(std::time::Duration::from_secs(3), video_in.read_rtp()).await
    {
        got.push(common::vp8_counter(&p.payload).expect("vp8 payload intact"));
        if got.last() == Some(&(FRAMES - 1)) {
            break;
        }
    }
    let _video = sender.await.expect("sender task");
    assert!(
        got.len() as u32 >= FRAMES * 9 / 10,
        "received {} of {FRAMES} frames over ICE-TCP",
        got.len()
    );
    assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
    // Both transports went by TCP (a connection each at least), no UDP datagram.
    assert!(server.counter("tcp_connections").await >= 2);
    assert!(server.counter("tcp_frames_out").await >= got.len() as u64);
    assert_eq!(server.counter("datagrams_out").await, 0);
    // getTransportStats names the path of each selected tuple.
    for (peer, transport) in [(&alice, send.id()), (&bob, recv.id())] {
        let stats = peer
            .signaling()
            .request("getTransportStats", json!({ "transportId": transport }))
            .await
            .expect("transport stats");
        assert_eq!(
            stats["stats"][0]["iceSelectedTuple"]["protocol"], "tcp",
            "{stats}"
        );
    }
    drop((send, recv, video_in));
    alice.leave().await.expect("alice leaves");
    bob.leave().await.expect("bob leaves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_passes_no_ice_check_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start(1).await;
    let mut ws = Ws::connect(&server.ws_url()).await;
    ws.ok("createRoom", json!({"roomId": "tcp-garbage"})).await;
    ws.ok("joinRoom", json!({"roomId": "tcp-garbage", "peerId": "p"}))
        .await;
    let answer = ws
        .ok(
            "createTransport",
            json!({"direction": "recv", "forceTcp": true}),
        )
        .await;
    let port = answer["iceCandidates"][0]["port"].as_u64().expect("port") as u16;
    // A framed packet that is no STUN binding request: the server hangs up.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the passive candidate");
    stream
        .write_all(&[0, 4, 0x80, 0x60, 0, 1])
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let n = common::within("the server closes", 5, stream.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing is answered, the connection is closed");
    assert!(server.counter("tcp_connections_rejected").await >= 1);
    // The transport is untouched and the server keeps serving.
    ws.assert_usable("a rejected TCP connection").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_flows_over_ipv6_loopback_on_a_dual_stack_listener() {
    // RTC sockets on `::` (IPv4 and IPv6), the HTTP server on 127.0.0.1, candidates on
    // ::1 only.
    let server =
        TestServer::start_with(1, &[("RTC_LISTEN_IP", "::"), ("ANNOUNCED_IP", "::1")]).await;
    let mut ws = Ws::connect(&server.ws_url()).await;
    ws.ok("createRoom", json!({"roomId": "v6"})).await;
    ws.ok("joinRoom", json!({"roomId": "v6", "peerId": "p"}))
        .await;
    let offered = candidates(&ws.ok("createTransport", json!({"direction": "send"})).await);
    assert!(
        offered.iter().all(|c| c.2 == "::1"),
        "IPv6 candidates: {offered:?}"
    );
    drop(ws);
    assert_media_flowed(&small_run(&server, &[]).await);
    assert_media_flowed(&small_run(&server, &["--tcp"]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_listener_serves_ipv4_clients() {
    // The same `::` sockets reached over IPv4: clients arrive IPv4-mapped and are
    // answered at their IPv4 address.
    let server =
        TestServer::start_with(1, &[("RTC_LISTEN_IP", "::"), ("ANNOUNCED_IP", "127.0.0.1")]).await;
    assert_media_flowed(&small_run(&server, &[]).await);
    assert_media_flowed(&small_run(&server, &["--tcp"]).await);
}

/// The server's heap in use (jemalloc's `allocated`), from `/api/stats`.
async fn heap_allocated(server: &TestServer) -> u64 {
    let stats = server.get("/api/stats").await.expect("/api/stats answers");
    stats["memory"]["allocated"]
        .as_u64()
        .expect("memory.allocated")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_loses_media_not_the_server_memory() {
    // 64 KiB queued per connection (and as its kernel send buffer): a subscriber that
    // stops reading fills that within a second of 4 Mbit/s video; after that, every frame
    // for it is dropped while the other subscriber gets everything.
    let server = TestServer::start_with(
        1,
        &[("SESSION_GRACE", "0"), ("TCP_SEND_BUFFER_BYTES", "65536")],
    )
    .await;
    let url = server.ws_url();
    let cfg = Config::try_parse_from([
        "ferrosoup-loadtest",
        "--url",
        &url,
        "--tcp",
        "--publishers",
        "1",
        "--subscribers",
        "2",
        "--tcp-stalled-subscribers",
        "1",
        "--video-kbps",
        "4000",
        "--duration",
        "8",
        "--settle",
        "2",
        "--quiet",
    ])
    .expect("arguments parse");
    let run = tokio::task::spawn_blocking(move || run(&cfg));
    // The heap once the buffers toward the stalled subscriber are full (4 s in), and 5 s
    // later, still in the measured window: the ~2.5 MB sent toward it meanwhile were
    // dropped, not kept.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let early = heap_allocated(&server).await;
    let dropped_early = server.counter("tcp_frames_dropped").await;
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let late = heap_allocated(&server).await;
    let dropped_late = server.counter("tcp_frames_dropped").await;
    let report = run
        .await
        .expect("load tester thread")
        .expect("the scenario runs");
    println!("{}", report.table());
    println!("heap {early} -> {late} bytes; frames dropped {dropped_early} -> {dropped_late}");
    assert_eq!(report.peers_failed, 0);
    // The subscriber that reads is not hurt.
    assert!(
        report.delivery_ratio > 0.9,
        "delivery to the reading subscriber {}",
        report.delivery_ratio
    );
    assert_eq!(report.payload_errors, 0);
    // Frames for the stalled one are dropped, and keep being dropped.
    assert!(
        dropped_late > dropped_early,
        "{dropped_early} -> {dropped_late}"
    );
    assert!(dropped_late - dropped_early > 500);
    // What the stalled connection was sent meanwhile (> 2 MB) is not in the heap.
    assert!(
        late < early + 1024 * 1024,
        "heap grew from {early} to {late} bytes"
    );
}
