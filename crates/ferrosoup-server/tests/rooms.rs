//! (b) Rooms with several peers and several rooms at once.
//!
//! - Four peers in one room publish VP8 all-to-all (12 consumers): every peer receives at
//!   least 99% of every other peer's frames, intact, in order and from the right peer; the
//!   peers already in the room hear `peerJoined` / `newProducer`, and a late joiner's
//!   `joinRoom` answer lists the earlier peers with their producers.
//! - Two rooms on a two-worker server: their routers sit on different workers, media flows
//!   in both at once, each subscriber gets only its own room's media, both workers forward.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use ferrosoup_client::{
    ClientError, Consumer, MediaKind, Notification, Peer, ProduceOptions, Producer,
};
use serde_json::Value;
use tokio::task::JoinHandle;

/// Frames each publisher sends.
const FRAMES: u32 = 300;

/// The tests of this file push many streams through a 2-core machine: run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A synthetic one-packet VP8 frame: payload descriptor (S=1), a VP8 header byte whose low
/// bit is 0 for keyframes, the publisher's tag, the frame counter, then filler.
fn tagged_frame(tag: u8, counter: u32, keyframe: bool) -> bytes::Bytes {
    let mut p = vec![0x10, if keyframe { 0x00 } else { 0x01 }, tag];
    p.extend_from_slice(&counter.to_be_bytes());
    p.extend_from_slice(&[0xab; 200]);
    bytes::Bytes::from(p)
}

/// `(tag, counter)` of a frame built by [`tagged_frame`], if the payload is intact.
fn tagged_counter(payload: &[u8]) -> Option<(u8, u32)> {
    if payload.len() != 207 || payload[0] != 0x10 || payload[7..].iter().any(|b| *b != 0xab) {
        return None;
    }
    Some((
        payload[2],
        u32::from_be_bytes([payload[3], payload[4], payload[5], payload[6]]),
    ))
}

/// Sends [`FRAMES`] tagged frames on `producer`, a keyframe first and whenever the server
/// asks for one (PLI/FIR), like a real encoder.
fn spawn_publisher(producer: Producer, tag: u8) -> JoinHandle<()> {
    tokio::spawn(async move {
        let producer = Arc::new(producer);
        let (keyframe_wanted, watcher) = watch_keyframe_requests(producer.clone());
        for i in 0..FRAMES {
            let keyframe = keyframe_wanted.swap(false, Ordering::Relaxed);
            let frame = tagged_frame(tag, i, keyframe);
            producer
                .send(i as u16, i * 3000, true, frame)
                .await
                .expect("send a vp8 frame");
            tokio::time::sleep(FRAME_INTERVAL).await;
        }
        watcher.abort();
    })
}

/// Reads `consumer` until the last frame arrives or nothing came for 3 s; returns what it
/// read as `(tag, counter)`, panicking on a damaged payload.
fn spawn_reader(consumer: Consumer, name: String) -> JoinHandle<Vec<(u8, u32)>> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        while let Ok(Some(p)) =
            tokio::time::timeout(Duration::from_secs(3), consumer.read_rtp()).await
        {
            let frame = tagged_counter(&p.payload)
                .unwrap_or_else(|| panic!("{name}: damaged payload {:?}", p.payload));
            got.push(frame);
            if frame.1 == FRAMES - 1 {
                break;
            }
        }
        got
    })
}

/// Asserts that `got` is `tag`'s stream, in order, with at least 99% of the frames.
fn check_stream(name: &str, got: &[(u8, u32)], tag: u8) {
    assert!(
        got.iter().all(|(t, _)| *t == tag),
        "{name}: frames of another publisher arrived: {got:?}"
    );
    let counters: Vec<u32> = got.iter().map(|(_, c)| *c).collect();
    assert!(
        counters.windows(2).all(|w| w[0] < w[1]),
        "{name}: frames out of order: {counters:?}"
    );
    assert!(
        counters.len() as f64 >= 0.99 * f64::from(FRAMES),
        "{name}: received {} of {FRAMES} frames: {counters:?}",
        counters.len()
    );
}

/// Reads `peer`'s notifications named in `methods` (dropping others) until `done` says
/// enough arrived.
async fn collect(
    peer: &mut Peer,
    methods: &[&str],
    what: &str,
    done: impl Fn(&[Notification]) -> bool,
) -> Vec<Notification> {
    let mut seen = Vec::new();
    within(what, 10, async {
        while !done(&seen) {
            match peer.notifications().recv().await {
                Some(n) if methods.contains(&n.method.as_str()) => seen.push(n),
                Some(_) => {}
                None => panic!("{what}: signaling closed"),
            }
        }
    })
    .await;
    seen
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_peers_all_to_all() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(1).await;
    let url = server.ws_url();
    let mut peers: Vec<Peer> = Vec::new();
    let mut sends = Vec::new();
    let mut producers: Vec<Producer> = Vec::new();
    for i in 0..4 {
        let name = format!("peer{i}");
        let peer = within(
            &format!("{name} joins"),
            10,
            Peer::join(&url, "all-to-all", &name),
        )
        .await
        .expect("join");

        // The late joiner sees everybody already there, each with its one video producer.
        let listed = peer.peers();
        assert_eq!(listed.len(), i, "{name}: joinRoom peers: {listed:?}");
        for (j, earlier) in peers.iter().enumerate() {
            let entry = listed
                .iter()
                .find(|p| p["peerId"] == earlier.peer_id())
                .unwrap_or_else(|| {
                    panic!("{name}: peer{j} missing from joinRoom peers {listed:?}")
                });
            assert_eq!(entry["displayName"], format!("peer{j}"), "{name}: {entry}");
            let listed_producers = entry["producers"].as_array().expect("producers array");
            assert_eq!(
                listed_producers.len(),
                1,
                "{name}: peer{j}'s producers: {entry}"
            );
            assert_eq!(
                listed_producers[0]["producerId"],
                producers[j].id(),
                "{name}: {entry}"
            );
            assert_eq!(listed_producers[0]["kind"], "video", "{name}: {entry}");
            assert_eq!(listed_producers[0]["paused"], false, "{name}: {entry}");
        }

        let send = within("create send transport", 10, peer.create_send_transport())
            .await
            .expect("send transport");
        let producer = within(
            "produce vp8",
            10,
            send.produce(
                MediaKind::Video,
                ProduceOptions {
                    codec: Some("video/VP8".into()),
                    ..Default::default()
                },
            ),
        )
        .await
        .expect("produce vp8");
        peers.push(peer);
        sends.push(send);
        producers.push(producer);
    }

    // Everyone already in the room heard each later peer join, then publish.
    let ids: Vec<String> = peers.iter().map(|p| p.peer_id().to_owned()).collect();
    for (k, peer) in peers.iter_mut().enumerate() {
        let expected = 2 * (3 - k);
        let seen = collect(
            peer,
            &["peerJoined", "newProducer"],
            &format!("peer{k} hears the later peers"),
            |s| s.len() >= expected,
        )
        .await;
        assert_eq!(seen.len(), expected, "peer{k}: {seen:?}");
        for j in k + 1..4 {
            let joined = seen
                .iter()
                .position(|n| n.method == "peerJoined" && n.data["peerId"] == ids[j])
                .unwrap_or_else(|| panic!("peer{k}: no peerJoined for peer{j}: {seen:?}"));
            assert_eq!(
                seen[joined].data["displayName"],
                format!("peer{j}"),
                "peer{k}: {seen:?}"
            );
            let published = seen
                .iter()
                .position(|n| {
                    n.method == "newProducer" && n.data["producerId"] == producers[j].id()
                })
                .unwrap_or_else(|| panic!("peer{k}: no newProducer for peer{j}: {seen:?}"));
            assert!(
                joined < published,
                "peer{k}: newProducer of peer{j} before its peerJoined: {seen:?}"
            );
            let n = &seen[published].data;
            assert_eq!(str_field(n, "peerId"), ids[j], "peer{k}: {n}");
            assert_eq!(n["kind"], "video", "peer{k}: {n}");
            assert_eq!(n["paused"], false, "peer{k}: {n}");
        }
    }

    // Each peer consumes the three others on one receive transport.
    let mut recvs = Vec::new();
    let mut consumers: Vec<(usize, usize, Consumer)> = Vec::new();
    for (k, peer) in peers.iter().enumerate() {
        let recv = within("create recv transport", 10, peer.create_recv_transport())
            .await
            .expect("recv transport");
        for (j, producer) in producers.iter().enumerate().filter(|(j, _)| *j != k) {
            let consumer = within(
                &format!("peer{k} consumes peer{j}"),
                10,
                recv.consume(producer.id()),
            )
            .await
            .expect("consume");
            assert_eq!(consumer.producer_id(), producer.id());
            assert_eq!(consumer.kind(), MediaKind::Video);
            consumers.push((k, j, consumer));
        }
        recvs.push(recv);
    }
    assert_eq!(consumers.len(), 12);
    for (k, send) in sends.iter().enumerate() {
        within(
            &format!("peer{k} send transport connects"),
            10,
            send.wait_connected(),
        )
        .await
        .expect("send connected");
    }
    for (k, recv) in recvs.iter().enumerate() {
        within(
            &format!("peer{k} recv transport connects"),
            10,
            recv.wait_connected(),
        )
        .await
        .expect("recv connected");
    }
    for (k, j, consumer) in &consumers {
        within(&format!("peer{k} resumes peer{j}"), 10, consumer.resume())
            .await
            .expect("resume");
    }
    assert_eq!(
        server.counter("consumers").await,
        12,
        "the server counts 12 consumers"
    );

    let readers: Vec<(usize, usize, JoinHandle<_>)> = consumers
        .into_iter()
        .map(|(k, j, consumer)| (k, j, spawn_reader(consumer, format!("peer{k} <- peer{j}"))))
        .collect();
    let publishers: Vec<JoinHandle<()>> = producers
        .into_iter()
        .enumerate()
        .map(|(j, producer)| spawn_publisher(producer, tag(j)))
        .collect();
    for publisher in publishers {
        publisher.await.expect("publisher task");
    }
    for (k, j, reader) in readers {
        let got = reader.await.expect("reader task");
        check_stream(&format!("peer{k} <- peer{j}"), &got, tag(j));
    }

    for (k, peer) in peers.into_iter().enumerate() {
        within(&format!("peer{k} leaves"), 10, peer.leave())
            .await
            .expect("leave");
    }
    server.wait_all_objects_gone().await;
}

/// The payload tag of publisher `j`.
fn tag(j: usize) -> u8 {
    0x40 + j as u8
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rooms_on_two_workers() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(2).await;
    let url = server.ws_url();
    let room_ids = ["room-a", "room-b"];
    let mut pubs = Vec::new();
    let mut subs = Vec::new();
    let mut sends = Vec::new();
    let mut recvs = Vec::new();
    let mut producers: Vec<Producer> = Vec::new();
    for room in room_ids {
        let publisher = within(
            &format!("publisher joins {room}"),
            10,
            Peer::join(&url, room, "pub"),
        )
        .await
        .expect("join");
        let send = within(
            "create send transport",
            10,
            publisher.create_send_transport(),
        )
        .await
        .expect("send transport");
        let producer = within(
            "produce vp8",
            10,
            send.produce(
                MediaKind::Video,
                ProduceOptions {
                    codec: Some("video/VP8".into()),
                    ..Default::default()
                },
            ),
        )
        .await
        .expect("produce vp8");
        let subscriber = within(
            &format!("subscriber joins {room}"),
            10,
            Peer::join(&url, room, "sub"),
        )
        .await
        .expect("join");
        // Each room only knows its own peers.
        assert_eq!(
            subscriber.peers().len(),
            1,
            "{room}: {:?}",
            subscriber.peers()
        );
        let recv = within(
            "create recv transport",
            10,
            subscriber.create_recv_transport(),
        )
        .await
        .expect("recv transport");
        pubs.push(publisher);
        subs.push(subscriber);
        sends.push(send);
        recvs.push(recv);
        producers.push(producer);
    }

    // A producer of the other room cannot be consumed.
    for (r, recv) in recvs.iter().enumerate() {
        let other = producers[1 - r].id();
        match within("consume across rooms", 10, recv.consume(other)).await {
            Err(ClientError::Server { code: 404, .. }) => {}
            Err(e) => panic!(
                "{}: consuming the other room's producer: unexpected error {e}",
                room_ids[r]
            ),
            Ok(_) => panic!("{}: consumed the other room's producer", room_ids[r]),
        }
    }
    let mut consumers = Vec::new();
    for (r, recv) in recvs.iter().enumerate() {
        consumers.push(
            within("consume", 10, recv.consume(producers[r].id()))
                .await
                .expect("consume own room's producer"),
        );
    }

    // The two routers are on different workers.
    let rooms = server.get("/api/rooms").await.expect("/api/rooms answers");
    let rooms = rooms["rooms"].as_array().expect("rooms array").clone();
    assert_eq!(rooms.len(), 2, "{rooms:?}");
    let worker_of = |room: &str| -> usize {
        let entry = rooms
            .iter()
            .find(|r| r["roomId"] == room)
            .unwrap_or_else(|| panic!("{room} not in {rooms:?}"));
        assert_eq!(entry["peers"].as_array().map(Vec::len), Some(2), "{entry}");
        entry["worker"]
            .as_u64()
            .and_then(|w| usize::try_from(w).ok())
            .unwrap_or_else(|| panic!("no worker in {entry}"))
    };
    let workers = [worker_of(room_ids[0]), worker_of(room_ids[1])];
    assert_ne!(
        workers[0], workers[1],
        "both rooms' routers on worker {}",
        workers[0]
    );

    for (r, (send, recv)) in sends.iter().zip(&recvs).enumerate() {
        within(
            &format!("{} send transport connects", room_ids[r]),
            10,
            send.wait_connected(),
        )
        .await
        .expect("send connected");
        within(
            &format!("{} recv transport connects", room_ids[r]),
            10,
            recv.wait_connected(),
        )
        .await
        .expect("recv connected");
    }
    for consumer in &consumers {
        within("resume", 10, consumer.resume())
            .await
            .expect("resume");
    }

    // Both rooms at once.
    let readers: Vec<JoinHandle<_>> = consumers
        .into_iter()
        .enumerate()
        .map(|(r, c)| spawn_reader(c, format!("{} subscriber", room_ids[r])))
        .collect();
    let publishers: Vec<JoinHandle<()>> = producers
        .into_iter()
        .enumerate()
        .map(|(r, p)| spawn_publisher(p, tag(r)))
        .collect();
    for publisher in publishers {
        publisher.await.expect("publisher task");
    }
    for (r, reader) in readers.into_iter().enumerate() {
        let got = reader.await.expect("reader task");
        check_stream(&format!("{} subscriber", room_ids[r]), &got, tag(r));
    }

    // Both workers forwarded (their counters are published after each turn of their loop).
    let forwarded = eventually(5, async || {
        let stats = server.get("/api/stats").await.expect("/api/stats answers");
        let out: Vec<u64> = workers
            .iter()
            .map(|w| {
                stats["workers"]
                    .as_array()
                    .and_then(|ws| ws.iter().find(|s| s["worker"] == *w))
                    .and_then(|s| s["rtp_packets_out"].as_u64())
                    .unwrap_or(0)
            })
            .collect();
        out.iter().all(|n| *n >= u64::from(FRAMES) * 99 / 100)
    })
    .await;
    assert!(
        forwarded,
        "timed out after 5s: both workers report forwarded packets"
    );

    for peer in pubs.into_iter().chain(subs) {
        within("leave", 10, peer.leave()).await.expect("leave");
    }
    server.wait_all_objects_gone().await;
}
