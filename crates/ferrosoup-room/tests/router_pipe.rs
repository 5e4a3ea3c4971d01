//! A pipe between the routers of two workers over real UDP on loopback, as two nodes use
//! it: a publisher sends VP8 to a plain transport of router A, router A pipes the producer
//! to router B (SRTP AEAD_AES_256_GCM, keys exchanged as the cluster handshake does), a
//! plain consumer on router B sends it to a subscriber socket. The subscriber's consumer
//! asks for a keyframe; the request crosses the pipe and reaches the publisher, whose
//! keyframe comes back through it.

mod workers;

use std::net::SocketAddr;
use std::time::Duration;

use ferrosoup_proto::rtp_parameters::MediaKind;
use ferrosoup_room::Router;
use ferrosoup_room::engine::PlainRemote;
use ferrosoup_room::plain::{PlainOptions, SrtpProfile};
use ferrosoup_room::router::PlainTransportParams;
use ferrosoup_rtc::rtcp::{RtcpItem, parse_compound};
use ferrosoup_rtc::rtp::parse_rtp;
use ferrosoup_testkit::packets::{RtpPacket, vp8_payload};
use tokio::net::UdpSocket;

const PUBLISHER_SSRC: u32 = 0x1234;

fn addr(t: &PlainTransportParams) -> SocketAddr {
    SocketAddr::new(t.ip, t.port)
}

async fn pipe_transport(router: &Router) -> PlainTransportParams {
    router
        .create_plain_transport(PlainOptions {
            comedia: false,
            rtcp_mux: true,
            srtp: Some(SrtpProfile::AeadAes256Gcm),
        })
        .await
        .expect("pipe transport")
}

#[tokio::test]
async fn media_and_keyframe_requests_cross_a_pipe_between_two_workers() {
    let (pool, _events) = workers::start_pool(2, 43_000);
    let codecs = ferrosoup_proto::ortc::default_media_codecs();
    let a = pool.create_router(&codecs).await.expect("router a");
    let b = pool.create_router(&codecs).await.expect("router b");
    assert_ne!(a.worker_index(), b.worker_index(), "one router per worker");

    // The publisher: plain RTP (no SRTP) to router A, its address learned (comedia).
    let publish = a
        .create_plain_transport(workers::plain(true))
        .await
        .expect("publish transport");
    let vp8 = workers::vp8_parameters(&[PUBLISHER_SSRC], "pipe");
    let producer = a
        .produce(publish.id, MediaKind::Video, vp8, false)
        .await
        .expect("produce");

    // The pipe: a transport on each side, each pointed at the other with its key.
    let (pa, pb) = (pipe_transport(&a).await, pipe_transport(&b).await);
    for (router, local, remote) in [(&a, &pa, &pb), (&b, &pb, &pa)] {
        router
            .connect_plain_transport(
                local.id,
                PlainRemote {
                    rtp: Some(addr(remote)),
                    rtcp: None,
                    srtp: remote.srtp.clone(),
                },
            )
            .await
            .expect("connect pipe");
    }
    let piped = a
        .consume_pipe(pa.id, producer)
        .await
        .expect("pipe consumer");
    assert_eq!(piped.rtp_parameters.encodings.len(), 1);
    let pipe_producer = b
        .produce(
            pb.id,
            piped.kind,
            piped.rtp_parameters,
            piped.producer_paused,
        )
        .await
        .expect("pipe producer");

    // The subscriber: a plain consumer of the pipe producer on router B.
    let subscriber = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let receive = b
        .create_plain_transport(workers::plain(false))
        .await
        .expect("receive transport");
    b.connect_plain_transport(
        receive.id,
        PlainRemote {
            rtp: Some(subscriber.local_addr().expect("addr")),
            rtcp: None,
            srtp: None,
        },
    )
    .await
    .expect("connect receive transport");
    let consumer = b
        .consume(receive.id, pipe_producer, b.rtp_capabilities(), false, None)
        .await
        .expect("consume");
    let consumer_ssrc = consumer.rtp_parameters.encodings[0].ssrc.expect("ssrc");

    // Delta frames until a keyframe is asked for, then one keyframe; bounded in time.
    let publisher = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let (mut seq, mut ts, mut picture) = (1000u16, 0u32, 0u16);
    let (mut plis, mut received, mut keyframe_wanted) = (0, 0, false);
    let mut buf = [0u8; 1500];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while received < 50 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{received} packets received, {plis} keyframe requests reached the publisher"
        );
        picture = (picture + 1) & 0x7fff;
        let packet = RtpPacket::new(96, seq, ts, PUBLISHER_SSRC)
            .with_marker(true)
            .with_payload(vp8_payload(
                std::mem::take(&mut keyframe_wanted),
                Some(picture),
                300,
            ));
        publisher
            .send_to(&packet.build(), addr(&publish))
            .await
            .expect("send");
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(3000);
        tokio::time::sleep(Duration::from_millis(10)).await;
        while let Ok((n, _)) = publisher.try_recv_from(&mut buf) {
            for item in parse_compound(&buf[..n]).flatten() {
                if matches!(item, RtcpItem::Pli { media_ssrc, .. } if media_ssrc == PUBLISHER_SSRC)
                {
                    plis += 1;
                    keyframe_wanted = true;
                }
            }
        }
        while let Ok((n, _)) = subscriber.try_recv_from(&mut buf) {
            if parse_rtp(&buf[..n]).is_ok_and(|info| info.ssrc == consumer_ssrc) {
                received += 1;
            }
        }
    }
    assert!(
        plis >= 1,
        "the consumer's keyframe request crossed the pipe"
    );
    let counters = pool.counters();
    assert!(
        counters.iter().all(|c| c.srtp_failures == 0),
        "{counters:?}"
    );
}
