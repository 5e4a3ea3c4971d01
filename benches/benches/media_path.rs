//! Criterion benchmarks of the per-packet media path, with real crypto and the project's
//! own functions: SRTP alone, the RTP header work alone, one consumer's forwarding
//! decision alone, and one producer packet forwarded to N consumers.
//!
//! Run: `cargo bench -p ferrosoup-benches -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::time::Instant;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferrosoup_rtc::rtp;
use ferrosoup_rtc::srtp::SrtpProfile;

#[path = "../fixture/mod.rs"]
mod fixture;

use fixture::{Consumer, PROFILES, Producer, Rng, media_path, rewrite, session_pair};

/// Packets prepared per timed batch: few enough to stay in cache, like a receive batch
/// that the kernel has just copied in.
const BATCH: BatchSize = BatchSize::NumIterations(32);

/// `srtp/protect/<profile>` and `srtp/unprotect/<profile>` of a 1200-byte video packet.
fn srtp(c: &mut Criterion) {
    let mut group = c.benchmark_group("srtp");
    group.throughput(Throughput::Elements(1));
    for (name, profile) in PROFILES {
        let mut rng = Rng::new(1);
        let (mut producer, mut worker_side) = Producer::new(profile, &mut rng);
        let (mut sender, _) = session_pair(profile, &mut rng);
        group.bench_function(BenchmarkId::new("protect", name), |b| {
            b.iter_batched_ref(
                || producer.plaintext(false),
                |d| black_box(sender.protect_rtp(&mut d.buf, d.len)),
                BATCH,
            )
        });
        group.bench_function(BenchmarkId::new("unprotect", name), |b| {
            b.iter_batched_ref(
                || producer.next(false),
                |d| {
                    let len = worker_side.unprotect_rtp(&mut d.buf[..d.len]);
                    assert!(len.is_ok(), "fresh packets always unprotect");
                    black_box(len)
                },
                BATCH,
            )
        });
    }
    group.finish();
}

/// `rtp/parse_and_rewrite`: parse the producer packet, copy it into a send slot and
/// rewrite it for one consumer (no crypto); `rtp/decide`: one forwarding decision.
fn header(c: &mut Criterion) {
    let mut group = c.benchmark_group("rtp");
    group.throughput(Throughput::Elements(1));
    let mut rng = Rng::new(2);
    let profile = SrtpProfile::AeadAes128Gcm;
    let (mut producer, _) = Producer::new(profile, &mut rng);
    let (mut consumer, _) = Consumer::new(profile, &mut rng);
    let input = producer.plaintext(true);
    let mut slot = input.clone();
    let mut seq = 0u16;
    group.bench_function("parse_and_rewrite", |b| {
        b.iter(|| {
            let packet = black_box(&input.buf[..input.len]);
            let Ok(info) = rtp::parse_rtp(packet) else {
                unreachable!("the template is a valid RTP packet")
            };
            seq = seq.wrapping_add(1);
            let out = &mut slot.buf[..packet.len()];
            out.copy_from_slice(packet);
            let ts = info.timestamp.wrapping_add(7);
            rewrite(out, &info, consumer.ssrc, seq, ts, 101, &consumer.ext_map);
            black_box(&slot.buf);
        })
    });
    let info = rtp::parse_rtp(&input.buf[..input.len]).expect("the template is valid RTP");
    let now = Instant::now();
    let mut ext_seq = 1 << 16;
    consumer
        .forwarder
        .decide(now, 0, ext_seq, info.timestamp, info.payload_type, true);
    group.bench_function("decide", |b| {
        b.iter(|| {
            ext_seq += 1;
            black_box(consumer.forwarder.decide(
                now,
                0,
                black_box(ext_seq),
                info.timestamp,
                info.payload_type,
                false,
            ))
        })
    });
    group.finish();
}

/// `forward/<profile>/<N>`: one protected producer packet unprotected, parsed and tracked,
/// then decided, copied, rewritten and protected for each of N consumers. Throughput is in
/// packets sent (N per iteration).
fn forward(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward");
    let now = Instant::now();
    for (name, profile) in PROFILES {
        for n in [1usize, 10, 100] {
            let (mut producer, mut worker) = media_path(profile, n, now);
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter_batched_ref(
                    || producer.next(false),
                    |d| assert_eq!(worker.handle(now, d), n, "every consumer forwards"),
                    BATCH,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, srtp, header, forward);
criterion_main!(benches);
