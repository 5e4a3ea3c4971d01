//! Criterion benchmarks of ICE-lite STUN handling: answering a browser-like Binding request
//! (`stun/handle_binding`), routing it to its transport by USERNAME (`stun/local_ufrag`) and
//! classifying the datagram (`stun/classify`).
//!
//! Run: `cargo bench -p ferrosoup-benches --bench stun -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferrosoup_rtc::demux::{self, PacketKind};
use ferrosoup_rtc::ice::{IceCredentials, IceLiteServer, StunOutcome, stun_local_ufrag};
use rtc_stun::attributes::{
    ATTR_ICE_CONTROLLING, ATTR_PRIORITY, ATTR_USE_CANDIDATE, ATTR_USERNAME, RawAttribute,
};
use rtc_stun::crypto::providers::RingCrypto;
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{BINDING_REQUEST, Message, Setter, TransactionId};
use rtc_stun::textattrs::TextAttribute;

/// Server ufrag as the signaling layer hands it out (16 characters).
const SERVER_UFRAG: &str = "srvufrag0123abcd";
/// Server password (32 characters); keys MESSAGE-INTEGRITY.
const SERVER_PWD: &str = "serverpassword0123456789abcdefgh";

/// A nominating Binding request as a controlling browser sends it: USERNAME, PRIORITY,
/// ICE-CONTROLLING, USE-CANDIDATE, MESSAGE-INTEGRITY (server password) and FINGERPRINT.
fn binding_request() -> Vec<u8> {
    let mut m = Message::new();
    m.build(&[Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)])
        .expect("a header alone always encodes");
    TextAttribute::new(ATTR_USERNAME, format!("{SERVER_UFRAG}:clientufrag"))
        .add_to(&mut m)
        .expect("a short USERNAME always encodes");
    let raw = |typ, value: &[u8]| RawAttribute {
        typ,
        length: 0,
        value: value.to_vec(),
    };
    raw(ATTR_PRIORITY, &1_853_817_087u32.to_be_bytes())
        .add_to(&mut m)
        .expect("a 4-byte attribute always encodes");
    raw(
        ATTR_ICE_CONTROLLING,
        &0x0102_0304_0506_0708u64.to_be_bytes(),
    )
    .add_to(&mut m)
    .expect("an 8-byte attribute always encodes");
    raw(ATTR_USE_CANDIDATE, &[])
        .add_to(&mut m)
        .expect("an empty attribute always encodes");
    MessageIntegrity::new_short_term_integrity_with_provider(SERVER_PWD.to_owned(), &RingCrypto)
        .add_to(&mut m)
        .expect("MESSAGE-INTEGRITY over a small message always encodes");
    FINGERPRINT
        .add_to(&mut m)
        .expect("FINGERPRINT always encodes");
    m.raw
}

/// The three benchmarks on one request, built once.
fn stun(c: &mut Criterion) {
    let request = binding_request();
    let from: SocketAddr = ([192, 0, 2, 7], 54_321).into();
    let credentials = IceCredentials {
        ufrag: SERVER_UFRAG.to_owned(),
        pwd: SERVER_PWD.to_owned(),
    };
    let mut ice = IceLiteServer::new(credentials, Instant::now());
    let mut out = Vec::with_capacity(256);

    let mut group = c.benchmark_group("stun");
    group.throughput(Throughput::Elements(1));
    group.bench_function("handle_binding", |b| {
        b.iter(|| {
            let outcome = ice.handle_stun(Instant::now(), from, black_box(&request), &mut out);
            assert_eq!(outcome, StunOutcome::Respond, "the request is valid");
            black_box(out.len())
        })
    });
    group.bench_function("local_ufrag", |b| {
        b.iter(|| {
            let ufrag = stun_local_ufrag(black_box(&request));
            assert_eq!(
                ufrag,
                Some(SERVER_UFRAG),
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
