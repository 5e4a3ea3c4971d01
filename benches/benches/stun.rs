//! Criterion benchmarks of ICE-lite STUN handling:
//!
//! - `stun/handle_binding`: a browser-like nominating Binding request (built with the
//!   testkit's `stun_binding_request`) through
//!   [`Engine::handle_datagram`](ferrosoup_room::Engine::handle_datagram) of the real
//!   engine, from the transport's selected tuple: the consent-freshness path a server runs
//!   for every client every few seconds (demux, tuple lookup, USERNAME / MESSAGE-INTEGRITY /
//!   FINGERPRINT checks, the signed answer, the transport's ICE/DTLS bookkeeping);
//! - `stun/local_ufrag`: reading the USERNAME's server ufrag, which routes a request from
//!   an unknown tuple to its transport;
//! - `stun/classify`: the RFC 7983 demultiplexer on it.
//!
//! Run: `cargo bench -p ferrosoup-benches --bench stun -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferrosoup_room::sim::SimRoom;
use ferrosoup_room::transmit::Discard;
use ferrosoup_rtc::demux::{self, PacketKind};
use ferrosoup_rtc::ice::stun_local_ufrag;
use ferrosoup_testkit::LinkConfig;
use ferrosoup_testkit::packets::stun_binding_request;

/// The three benchmarks on one request, built once.
fn stun(c: &mut Criterion) {
    let mut room = SimRoom::new(LinkConfig::default());
    let now = room.now();
    let router = room.router;
    let info = room
        .engine()
        .create_transport(router, now)
        .expect("the room's router exists");
    let (_, request) = stun_binding_request(
        &info.ice.ufrag,
        "clientufrag",
        &info.ice.pwd,
        true,
        0x0102_0304_0506_0708,
    );
    let from: SocketAddr = ([192, 0, 2, 7], 54_321).into();
    let mut out = Discard::default();
    let mut buf = request.clone();
    // The first request finds the transport by ufrag and makes `from` its selected tuple.
    room.engine().handle_datagram(now, from, &mut buf, &mut out);
    assert_eq!(out.datagrams, 1, "the engine answers the request");

    let mut group = c.benchmark_group("stun");
    group.throughput(Throughput::Elements(1));
    group.bench_function("handle_binding", |b| {
        b.iter(|| {
            let before = out.datagrams;
            buf.copy_from_slice(black_box(&request));
            room.engine().handle_datagram(now, from, &mut buf, &mut out);
            assert_eq!(out.datagrams, before + 1, "the request is answered");
        })
    });
    group.bench_function("local_ufrag", |b| {
        b.iter(|| {
            let ufrag = stun_local_ufrag(black_box(&request));
            assert_eq!(
                ufrag,
                Some(info.ice.ufrag.as_str()),
                "the request names the server ufrag"
            );
            ufrag.map(str::len)
        })
    });
    group.bench_function("classify", |b| {
        b.iter(|| {
            let kind = demux::classify(black_box(&request));
            assert_eq!(kind, PacketKind::Stun, "the request is STUN");
            kind
        })
    });
    group.finish();
}

criterion_group!(benches, stun);
criterion_main!(benches);
