//! Criterion benchmarks of the per-packet media path.
//!
//! - `forward/aead_aes_128_gcm/<N>` and `forward_audio/aead_aes_128_gcm/<N>`: one
//!   SRTP-protected VP8 (1200 bytes) or Opus packet from a publisher through
//!   [`Engine::handle_datagram`](ferrosoup_room::Engine::handle_datagram) of the real
//!   engine, fanned out to N = 1, 10, 100 subscribers (unprotect, parse, producer-side
//!   tracking, then for each consumer decide, rewrite, write this hop's extensions,
//!   protect). Every client is connected through real ICE/DTLS/SRTP, which negotiates
//!   AEAD_AES_128_GCM (the testkit client and the engine both prefer it), so the fan-out
//!   is measured with GCM only. Throughput is in packets sent (N per iteration).
//! - `forward_pipe/aead_aes_256_gcm/<N>`: the same VP8 packet to N pipe consumers (each to
//!   another node over its own pipe transport, SRTP AEAD_AES_256_GCM): copy, write the
//!   pipe SSRC, protect, per pipe.
//! - `forward_worker_pipe/aead_aes_128_gcm/<N>`: the same VP8 packet through a pipe
//!   between workers of one process ([`CrossWorker`]): the publisher's engine unprotects
//!   it and its pipe consumer copies it into the ring (no SRTP inside the process), one
//!   wake-up (`eventfd` write) per chunk of 32, the other engine takes it out of the ring
//!   and fans it out to N subscribers there. Compare with `forward/aead_aes_128_gcm/<N>`
//!   (same packet, same N, one engine): the difference is the pipe's cost.
//! - `srtp/protect/<profile>` and `srtp/unprotect/<profile>`: ferrosoup-rtc's SRTP on a
//!   1200-byte video packet: AES-128-GCM (clients), AES-256-GCM (pipes), AES-CM/HMAC.
//! - `rtp/parse_and_rewrite`: parse a producer packet, copy it and rewrite it for one
//!   consumer (SSRC, sequence number, timestamp, payload type, extension ids and this
//!   hop's transport-cc / abs-send-time), as a consumer does before protecting.
//! - `rtp/decide`: one [`ConsumerForwarder::decide`].
//!
//! Run: `cargo bench -p ferrosoup-benches --bench media_path -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferrosoup_benches::{AUDIO_INTERVAL, CrossWorker, Fanout, VIDEO_INTERVAL, VIDEO_PACKET_LEN};
use ferrosoup_proto::rtp_parameters::MediaKind;
use ferrosoup_room::forwarder::{ConsumerForwarder, NO_PT};
use ferrosoup_room::layers::{PacketLayer, SvcMode};
use ferrosoup_room::sim::{EXT_IDS, VP8_PT};
use ferrosoup_rtc::dtls::SrtpKeys;
use ferrosoup_rtc::rtp::{self, HopValues, VideoCodec};
use ferrosoup_rtc::srtp::{SrtpProfile, SrtpSession};
use ferrosoup_testkit::SimRng;
use ferrosoup_testkit::packets::{RtpPacket, Vp8Header};

/// Both SRTP profiles with the names the benchmarks report them under.
const PROFILES: [(&str, SrtpProfile); 3] = [
    ("aead_aes_128_gcm", SrtpProfile::AeadAes128Gcm),
    ("aead_aes_256_gcm", SrtpProfile::AeadAes256Gcm),
    ("aes_cm_128_hmac_sha1_80", SrtpProfile::Aes128CmHmacSha1_80),
];

/// Datagrams prepared (protected by the publisher) before each timed run through the
/// engine: few enough to stay in cache, like a receive batch the kernel just copied in.
const CHUNK: u64 = 32;

/// Packets prepared per timed batch in the SRTP benchmarks.
const BATCH: BatchSize = BatchSize::NumIterations(32);

/// Which publisher stream a forward benchmark sends.
#[derive(Clone, Copy)]
enum Media {
    Video,
    Audio,
}

/// `iters` packets through the engine, timing only `handle_datagram`: datagrams are
/// protected by the publisher's client in chunks outside the timing, and the engine's
/// timers run (and clients keep consent alive) between chunks.
fn run_forward(fanout: &mut Fanout, media: Media, iters: u64) -> Duration {
    let consumers = match media {
        Media::Video => fanout.subscribers.len() + fanout.pipes.len(),
        Media::Audio => fanout.subscribers.len(),
    } as u64;
    let interval = match media {
        Media::Video => VIDEO_INTERVAL,
        Media::Audio => AUDIO_INTERVAL,
    };
    let mut total = Duration::ZERO;
    let mut left = iters;
    let mut batch = Vec::with_capacity(CHUNK as usize);
    while left > 0 {
        let n = left.min(CHUNK);
        left -= n;
        fanout.keep_alive_if_due();
        batch.clear();
        batch.extend((0..n).map(|_| match media {
            Media::Video => fanout.video_datagram(false),
            Media::Audio => fanout.audio_datagram(),
        }));
        let sent = fanout.engine().counters().rtp_packets_out;
        let start = Instant::now();
        for datagram in &mut batch {
            fanout.handle(datagram);
        }
        total += start.elapsed();
        assert_eq!(
            fanout.engine().counters().rtp_packets_out - sent,
            n * consumers,
            "every consumer forwards every packet"
        );
        fanout.advance(interval * n as u32);
    }
    total
}

/// `forward/aead_aes_128_gcm/<N>` (video) and `forward_audio/aead_aes_128_gcm/<N>`.
fn forward(c: &mut Criterion) {
    let mut rooms: Vec<(usize, Fanout)> = [1usize, 10, 100]
        .into_iter()
        .map(|n| (n, Fanout::new(n)))
        .collect();
    for (group, media) in [("forward", Media::Video), ("forward_audio", Media::Audio)] {
        let mut group = c.benchmark_group(group);
        for (n, fanout) in &mut rooms {
            group.throughput(Throughput::Elements(*n as u64));
            group.bench_function(BenchmarkId::new("aead_aes_128_gcm", *n), |b| {
                b.iter_custom(|iters| run_forward(fanout, media, iters))
            });
        }
        group.finish();
    }
}

/// `forward_pipe/aead_aes_256_gcm/<N>`: video to N pipe consumers (no client consumer).
fn forward_pipe(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward_pipe");
    for n in [1usize, 10, 100] {
        let mut fanout = Fanout::new(0);
        for _ in 0..n {
            fanout.add_pipe();
        }
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("aead_aes_256_gcm", n), |b| {
            b.iter_custom(|iters| run_forward(&mut fanout, Media::Video, iters))
        });
    }
    group.finish();
}

/// `iters` video packets through the pipe between workers, timing both engines' work and
/// the wake-up; as [`run_forward`] otherwise.
fn run_cross(cross: &mut CrossWorker, iters: u64) -> Duration {
    let consumers = cross.consumers.len() as u64;
    let mut total = Duration::ZERO;
    let mut left = iters;
    let mut batch = Vec::with_capacity(CHUNK as usize);
    while left > 0 {
        let n = left.min(CHUNK);
        left -= n;
        cross.from.keep_alive_if_due();
        cross.to.keep_alive_if_due();
        batch.clear();
        batch.extend((0..n).map(|_| cross.from.video_datagram(false)));
        let sent = cross.forwarded();
        let start = Instant::now();
        cross.forward(&mut batch);
        total += start.elapsed();
        assert_eq!(
            cross.forwarded() - sent,
            n * consumers,
            "every consumer forwards every packet"
        );
        cross.advance(VIDEO_INTERVAL * n as u32);
    }
    total
}

/// `forward_worker_pipe/aead_aes_128_gcm/<N>`: video through a pipe between workers to N
/// subscribers on the other worker.
fn forward_worker_pipe(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward_worker_pipe");
    for n in [1usize, 10, 100] {
        let mut cross = CrossWorker::new(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("aead_aes_128_gcm", n), |b| {
            b.iter_custom(|iters| run_cross(&mut cross, iters))
        });
    }
    group.finish();
}

/// Two SRTP sessions of one transport with mirrored random keys: what the first protects,
/// the second unprotects.
fn session_pair(profile: SrtpProfile, rng: &mut SimRng) -> (SrtpSession, SrtpSession) {
    let mut bytes = |n: usize| {
        let mut v = vec![0u8; n];
        rng.fill(&mut v);
        v
    };
    let (key_a, salt_a) = (
        bytes(profile.master_key_len()),
        bytes(profile.master_salt_len()),
    );
    let (key_b, salt_b) = (
        bytes(profile.master_key_len()),
        bytes(profile.master_salt_len()),
    );
    let a = SrtpKeys {
        profile,
        local_master_key: key_a.clone(),
        local_master_salt: salt_a.clone(),
        remote_master_key: key_b.clone(),
        remote_master_salt: salt_b.clone(),
    };
    let b = SrtpKeys {
        profile,
        local_master_key: key_b,
        local_master_salt: salt_b,
        remote_master_key: key_a,
        remote_master_salt: salt_a,
    };
    let session = |keys: &SrtpKeys| SrtpSession::new(keys).expect("keys of the profile's sizes");
    (session(&a), session(&b))
}

/// A 1200-byte VP8 packet as the publisher of [`Fanout`] sends it, in a buffer with room
/// for the SRTP overhead.
struct VideoPackets {
    packet: RtpPacket,
}

impl VideoPackets {
    fn new() -> Self {
        let mut packet = RtpPacket::new(VP8_PT, 1000, 90_000, 0x1111_0001)
            .with_transport_cc(EXT_IDS.transport_wide_cc, 1)
            .with_abs_send_time(EXT_IDS.abs_send_time, 0x12_3456);
        let mut payload = vec![0u8; VIDEO_PACKET_LEN - packet.header_len()];
        let vp8 = Vp8Header {
            picture_id: Some(7),
            ..Vp8Header::default()
        };
        vp8.write(&mut payload);
        packet.payload = payload;
        Self { packet }
    }

    /// The next packet (fresh sequence number), plain, and its length.
    fn next(&mut self) -> ([u8; 1500], usize) {
        self.packet.seq = self.packet.seq.wrapping_add(1);
        let mut buf = [0u8; 1500];
        let len = self.packet.write_into(&mut buf);
        (buf, len)
    }
}

/// `srtp/protect/<profile>` and `srtp/unprotect/<profile>` of a 1200-byte video packet.
fn srtp(c: &mut Criterion) {
    let mut group = c.benchmark_group("srtp");
    group.throughput(Throughput::Elements(1));
    for (name, profile) in PROFILES {
        let mut rng = SimRng::new(1);
        // One sender for the protect benchmark, another one (whose packets the receiver
        // sees from its first on) for unprotect: SRTP's rollover counter must agree.
        let (mut protector, _) = session_pair(profile, &mut rng);
        let (mut sender, mut receiver) = session_pair(profile, &mut rng);
        let mut protected = VideoPackets::new();
        let mut packets = VideoPackets::new();
        group.bench_function(BenchmarkId::new("protect", name), |b| {
            b.iter_batched_ref(
                || protected.next(),
                |(buf, len)| black_box(protector.protect_rtp(buf, *len)),
                BATCH,
            )
        });
        group.bench_function(BenchmarkId::new("unprotect", name), |b| {
            b.iter_batched_ref(
                || {
                    let (mut buf, len) = packets.next();
                    let n = sender
                        .protect_rtp(&mut buf, len)
                        .expect("a valid packet protects");
                    (buf, n)
                },
                |(buf, n)| {
                    let len = receiver.unprotect_rtp(&mut buf[..*n]);
                    assert!(len.is_ok(), "fresh packets always unprotect");
                    black_box(len)
                },
                BATCH,
            )
        });
    }
    group.finish();
}

/// `rtp/parse_and_rewrite` and `rtp/decide`.
fn header(c: &mut Criterion) {
    let mut group = c.benchmark_group("rtp");
    group.throughput(Throughput::Elements(1));
    let (input, len) = VideoPackets::new().next();
    let input = &input[..len];
    let mut slot = [0u8; 1500];
    let mut ext_map = [0u8; 256];
    ext_map[usize::from(EXT_IDS.transport_wide_cc)] = 5;
    ext_map[usize::from(EXT_IDS.abs_send_time)] = 4;
    let mut seq = 0u16;
    group.bench_function("parse_and_rewrite", |b| {
        b.iter(|| {
            let packet = black_box(input);
            let Ok(info) = rtp::parse_rtp(packet) else {
                unreachable!("the template is a valid RTP packet")
            };
            seq = seq.wrapping_add(1);
            let out = &mut slot[..packet.len()];
            out.copy_from_slice(packet);
            rtp::set_ssrc(out, 0x3333_4444);
            rtp::set_sequence_number(out, seq);
            rtp::set_timestamp(out, info.timestamp.wrapping_add(7));
            rtp::set_payload_type(out, 101);
            let hop = HopValues {
                transport_cc_id: 5,
                transport_cc: seq,
                abs_send_time_id: 4,
                abs_send_time: 0x00ab_cdef,
            };
            black_box(rtp::rewrite_extensions(out, &info, &ext_map, &hop));
            black_box(&slot);
        })
    });

    let info = rtp::parse_rtp(input).expect("the template is valid RTP");
    let mut pt_map = [NO_PT; 128];
    pt_map[usize::from(VP8_PT)] = 101;
    let mut forwarder =
        ConsumerForwarder::new(MediaKind::Video, pt_map, 90_000, 500, 1234, SvcMode::None);
    forwarder.set_target(Some(0));
    let now = Instant::now();
    let mut ext_seq = 1 << 16;
    let layer = PacketLayer::parse(VideoCodec::Vp8, info.payload(input));
    forwarder.decide(
        now,
        0,
        ext_seq,
        info.timestamp,
        info.payload_type,
        true,
        &layer,
    );
    group.bench_function("decide", |b| {
        b.iter(|| {
            ext_seq += 1;
            black_box(forwarder.decide(
                now,
                0,
                black_box(ext_seq),
                info.timestamp,
                info.payload_type,
                false,
                &layer,
            ))
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    srtp,
    header,
    forward,
    forward_pipe,
    forward_worker_pipe
);
criterion_main!(benches);
