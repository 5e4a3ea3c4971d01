//! A pipe between the routers of two workers of one process (`Router::pipe_producer_to`):
//! real worker threads, real UDP on loopback for the publisher and the subscriber. A
//! publisher sends three VP8 simulcast layers to a plain transport of router A (worker 0);
//! A pipes the producer to router B (worker 1) through the rings; a plain consumer on B
//! sends to a subscriber socket. Every layer reaches B's pipe producer, the subscriber gets
//! gapless media, its PLI crosses back to the publisher, and closing works both ways and
//! when a worker restarts.

mod workers;

use std::net::SocketAddr;
use std::time::Duration;

use ferrosoup_proto::rtp_parameters::MediaKind;
use ferrosoup_room::engine::PlainRemote;
use ferrosoup_room::router::PlainTransportParams;
use ferrosoup_room::{MediaEvent, ProducerId, RoomError, Router};
use ferrosoup_rtc::rtcp::{RtcpItem, parse_compound, write_pli};
use ferrosoup_rtc::rtp::parse_rtp;
use ferrosoup_testkit::packets::{RtpPacket, vp8_payload};
use tokio::net::UdpSocket;
use tokio::sync::mpsc::UnboundedReceiver;

/// The publisher's SSRCs, lowest layer first.
const LAYERS: [u32; 3] = [0x1000, 0x2000, 0x3000];

fn addr(t: &PlainTransportParams) -> SocketAddr {
    SocketAddr::new(t.ip, t.port)
}

/// A publisher of three simulcast layers on a plain transport of `router`.
struct Publisher {
    socket: UdpSocket,
    to: SocketAddr,
    producer: ProducerId,
    seq: [u16; 3],
    picture: u16,
    ts: u32,
    /// Layers asked for a keyframe.
    keyframe_wanted: [bool; 3],
    /// Keyframe requests received (PLI per layer SSRC).
    plis: usize,
}

impl Publisher {
    async fn new(router: &Router) -> Self {
        let transport = router
            .create_plain_transport(workers::plain(true))
            .await
            .expect("publish transport");
        let params = workers::vp8_parameters(&LAYERS, "worker-pipe");
        let producer = router
            .produce(transport.id, MediaKind::Video, params, false)
            .await
            .expect("produce");
        Self {
            socket: UdpSocket::bind("127.0.0.1:0").await.expect("bind"),
            to: addr(&transport),
            producer,
            seq: [100, 20_000, 40_000],
            picture: 0,
            ts: 0,
            keyframe_wanted: [true; 3],
            plis: 0,
        }
    }

    /// One frame on every layer (a keyframe where one was asked for), then reads the
    /// RTCP that came back.
    async fn send_frame(&mut self) {
        self.picture = (self.picture + 1) & 0x7fff;
        self.ts = self.ts.wrapping_add(3000);
        for (layer, &ssrc) in LAYERS.iter().enumerate() {
            let keyframe = std::mem::take(&mut self.keyframe_wanted[layer]);
            let packet = RtpPacket::new(96, self.seq[layer], self.ts, ssrc)
                .with_marker(true)
                .with_payload(vp8_payload(keyframe, Some(self.picture), 200));
            self.socket
                .send_to(&packet.build(), self.to)
                .await
                .expect("send");
            self.seq[layer] = self.seq[layer].wrapping_add(1);
        }
        let mut buf = [0u8; 1500];
        while let Ok((n, _)) = self.socket.try_recv_from(&mut buf) {
            for item in parse_compound(&buf[..n]).flatten() {
                if let RtcpItem::Pli { media_ssrc, .. } = item
                    && let Some(layer) = LAYERS.iter().position(|&s| s == media_ssrc)
                {
                    self.plis += 1;
                    self.keyframe_wanted[layer] = true;
                }
            }
        }
    }
}

/// A plain consumer of `producer` on `router`, sending to a socket of its own.
struct Subscriber {
    socket: UdpSocket,
    /// Where its RTCP goes (the receive transport).
    to: SocketAddr,
    ssrc: u32,
    /// Sequence numbers received, in order.
    seqs: Vec<u16>,
}

impl Subscriber {
    async fn new(router: &Router, producer: ProducerId) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let transport = router
            .create_plain_transport(workers::plain(false))
            .await
            .expect("receive transport");
        router
            .connect_plain_transport(
                transport.id,
                PlainRemote {
                    rtp: Some(socket.local_addr().expect("addr")),
                    rtcp: None,
                    srtp: None,
                },
            )
            .await
            .expect("connect receive transport");
        let consumer = router
            .consume(
                transport.id,
                producer,
                router.rtp_capabilities(),
                false,
                None,
            )
            .await
            .expect("consume");
        Self {
            socket,
            to: addr(&transport),
            ssrc: consumer.rtp_parameters.encodings[0].ssrc.expect("ssrc"),
            seqs: Vec::new(),
        }
    }

    fn receive(&mut self) {
        let mut buf = [0u8; 1500];
        while let Ok((n, _)) = self.socket.try_recv_from(&mut buf) {
            if let Ok(info) = parse_rtp(&buf[..n])
                && info.ssrc == self.ssrc
            {
                self.seqs.push(info.sequence_number);
            }
        }
    }

    async fn send_pli(&self) {
        let mut buf = [0u8; 64];
        let len = write_pli(&mut buf, 0x5eed, self.ssrc).expect("pli");
        self.socket
            .send_to(&buf[..len], self.to)
            .await
            .expect("send pli");
    }
}

/// Waits (bounded) for the `WorkerPipeClosed` event of `router`'s side.
async fn pipe_closed(
    events: &mut UnboundedReceiver<MediaEvent>,
    router: &Router,
) -> ferrosoup_room::Closed {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("a WorkerPipeClosed event in time")
            .expect("events open");
        if let MediaEvent::WorkerPipeClosed {
            router_id, closed, ..
        } = event
            && router_id == router.id()
        {
            return closed;
        }
    }
}

#[tokio::test]
async fn every_layer_crosses_gapless_and_keyframe_requests_come_back() {
    let (pool, _events) = workers::start_pool(2, 45_000);
    let codecs = ferrosoup_proto::ortc::default_media_codecs();
    let a = pool.create_router(&codecs).await.expect("router a");
    let b = pool.create_router(&codecs).await.expect("router b");
    assert_ne!(a.worker_index(), b.worker_index(), "one router per worker");

    let mut publisher = Publisher::new(&a).await;
    let pipe = a
        .pipe_producer_to(publisher.producer, &b)
        .await
        .expect("pipe between workers");
    let mut subscriber = Subscriber::new(&b, pipe.producer_id).await;

    // Frames until the subscriber has 100 packets; bounded in time.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while subscriber.seqs.len() < 100 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} packets received, {} keyframe requests reached the publisher",
            subscriber.seqs.len(),
            publisher.plis
        );
        publisher.send_frame().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        subscriber.receive();
    }
    assert!(
        publisher.plis >= 1,
        "the consumer's keyframe request came back"
    );
    // Gapless: one packet per frame of the layer forwarded, in order.
    for w in subscriber.seqs.windows(2) {
        assert_eq!(
            w[1],
            w[0].wrapping_add(1),
            "seqs {:?}",
            &subscriber.seqs[..]
        );
    }
    // Every layer crossed: B's pipe producer received each stream, nothing lost.
    let stats = b.producer_stats(pipe.producer_id).await.expect("stats");
    let streams = stats.as_array().expect("streams");
    assert_eq!(streams.len(), LAYERS.len(), "{stats}");
    for s in streams {
        assert!(s["packetCount"].as_u64().unwrap_or(0) >= 90, "{stats}");
        assert_eq!(s["packetsLost"].as_i64(), Some(0), "{stats}");
    }

    // The subscriber's own PLI reaches the publisher.
    let before = publisher.plis;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while publisher.plis == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscriber's PLI did not reach the publisher"
        );
        subscriber.send_pli().await;
        for _ in 0..10 {
            publisher.send_frame().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let counters = pool.counters();
    assert!(counters.iter().all(|c| c.send_dropped == 0), "{counters:?}");
}

#[tokio::test]
async fn closing_either_side_closes_the_other_and_a_restart_closes_its_pipes() {
    let (pool, mut events) = workers::start_pool(2, 45_000);
    let codecs = ferrosoup_proto::ortc::default_media_codecs();
    let a = pool.create_router(&codecs).await.expect("router a");
    let b = pool.create_router(&codecs).await.expect("router b");
    let publisher = Publisher::new(&a).await;

    // The producer closes on A: B's pipe producer and its consumer close with it.
    let pipe = a
        .pipe_producer_to(publisher.producer, &b)
        .await
        .expect("pipe");
    let subscriber = Subscriber::new(&b, pipe.producer_id).await;
    drop(subscriber);
    a.close_producer(publisher.producer)
        .await
        .expect("close producer");
    let closed = pipe_closed(&mut events, &b).await;
    assert_eq!(closed.producers, [pipe.producer_id]);
    assert_eq!(closed.consumers.len(), 1, "{closed:?}");
    assert!(matches!(
        b.producer_stats(pipe.producer_id).await,
        Err(RoomError::NotFound(_))
    ));

    // The pipe producer closes on B: A's pipe consumer is released.
    let publisher = Publisher::new(&a).await;
    let pipe = a
        .pipe_producer_to(publisher.producer, &b)
        .await
        .expect("pipe");
    b.close_producer(pipe.producer_id)
        .await
        .expect("close pipe producer");
    let closed = pipe_closed(&mut events, &a).await;
    assert_eq!(closed.consumers.len(), 1, "{closed:?}");
    assert_eq!(closed.consumers[0].consumer_id, pipe.consumer_id);
    assert!(matches!(
        a.consumer_stats(pipe.consumer_id).await,
        Err(RoomError::NotFound(_))
    ));
    // The producer itself stays.
    a.producer_stats(publisher.producer)
        .await
        .expect("producer still there");

    // A's worker restarts: B's side of a pipe from it closes.
    let pipe = a
        .pipe_producer_to(publisher.producer, &b)
        .await
        .expect("pipe");
    pool.inject_worker_panic(a.worker_index())
        .await
        .expect("inject panic");
    let closed = pipe_closed(&mut events, &b).await;
    assert_eq!(closed.producers, [pipe.producer_id]);
}
