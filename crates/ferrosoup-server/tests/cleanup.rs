//! (d) Leaving, closing and disconnecting clean up every object and tell the others.
//!
//! - `closeProducer`: the consumers of that producer close (`consumerClosed`, reason
//!   `producerClosed`), the others hear `producerClosed`, the counts drop, other media flows on.
//! - `leaveRoom`: the others hear `peerLeft` and the closing of the peer's consumers and
//!   producers; when the last peer leaves, nothing is left on the server.
//! - A dropped WebSocket (closed without `leaveRoom`, or cut without a close frame) has the
//!   same effect as `leaveRoom`.
//! - `closeConsumer` and `closeTransport` of one's own objects reduce the counts.

mod common;

use std::time::Duration;

use common::*;
use ferrosoup_client::{
    ClientError, Consumer, MediaKind, Notification, Peer, ProduceOptions, Producer,
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The tests of this file push media through a 2-core machine: run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Frames sent per phase.
const FRAMES: u32 = 100;

/// Peer A publishing Opus and VP8, peer B consuming both, transports connected and
/// consumers resumed.
struct Call {
    a: Peer,
    b: Peer,
    audio: Producer,
    video: Producer,
    audio_in: Consumer,
    video_in: Consumer,
    send: ferrosoup_client::SendTransport,
    recv: ferrosoup_client::RecvTransport,
}

impl Call {
    async fn start(server: &TestServer, room: &str) -> Self {
        let url = server.ws_url();
        let a = within("alice joins", 10, Peer::join(&url, room, "alice"))
            .await
            .expect("alice joins");
        let send = within("send transport", 10, a.create_send_transport())
            .await
            .expect("send transport");
        let audio = within(
            "produce opus",
            10,
            send.produce(MediaKind::Audio, codec("audio/opus")),
        )
        .await
        .expect("produce opus");
        let video = within(
            "produce vp8",
            10,
            send.produce(MediaKind::Video, codec("video/VP8")),
        )
        .await
        .expect("produce vp8");
        let b = within("bob joins", 10, Peer::join(&url, room, "bob"))
            .await
            .expect("bob joins");
        let recv = within("recv transport", 10, b.create_recv_transport())
            .await
            .expect("recv transport");
        let audio_in = within("consume opus", 10, recv.consume(audio.id()))
            .await
            .expect("consume opus");
        let video_in = within("consume vp8", 10, recv.consume(video.id()))
            .await
            .expect("consume vp8");
        within("send transport connects", 10, send.wait_connected())
            .await
            .expect("send connected");
        within("recv transport connects", 10, recv.wait_connected())
            .await
            .expect("recv connected");
        within("resume opus", 10, audio_in.resume())
            .await
            .expect("resume opus");
        within("resume vp8", 10, video_in.resume())
            .await
            .expect("resume vp8");
        wait_counts(server, "after the call started", 2, 2, 2).await;
        Self {
            a,
            b,
            audio,
            video,
            audio_in,
            video_in,
            send,
            recv,
        }
    }
}

fn codec(mime: &str) -> ProduceOptions {
    ProduceOptions {
        codec: Some(mime.into()),
        ..Default::default()
    }
}

/// Reads `consumer` until counter `last` arrives or nothing came for 3 s.
fn spawn_reader(
    consumer: Consumer,
    last: u32,
    parse: fn(&[u8]) -> Option<u32>,
) -> JoinHandle<(Consumer, Vec<u32>)> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        while let Ok(Some(p)) =
            tokio::time::timeout(Duration::from_secs(3), consumer.read_rtp()).await
        {
            let counter =
                parse(&p.payload).unwrap_or_else(|| panic!("damaged payload {:?}", p.payload));
            got.push(counter);
            if counter == last {
                break;
            }
        }
        (consumer, got)
    })
}

/// Asserts that `got` is in order and holds at least 99% of `range`.
fn check_stream(name: &str, got: &[u32], range: std::ops::Range<u32>) {
    assert!(
        got.iter().all(|c| range.contains(c)),
        "{name}: counters outside {range:?}: {got:?}"
    );
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "{name}: out of order: {got:?}"
    );
    let expected = range.len();
    assert!(
        got.len() * 100 >= expected * 99,
        "{name}: received {} of {expected}: {got:?}",
        got.len()
    );
}

/// Sends frames `range` on `audio` (and on `video` if given; every video frame is a
/// keyframe, so no keyframe request needs answering), [`FRAME_INTERVAL`] apart.
async fn send_frames(audio: &Producer, video: Option<&Producer>, range: std::ops::Range<u32>) {
    for i in range {
        if let Some(video) = video {
            video
                .send(i as u16, i * 3000, true, vp8_frame(i, true))
                .await
                .expect("send vp8");
        }
        audio
            .send(i as u16, i * 960, false, opus_packet(i))
            .await
            .expect("send opus");
        tokio::time::sleep(FRAME_INTERVAL).await;
    }
}

/// Waits until the server counts these transports, producers and consumers.
async fn wait_counts(
    server: &TestServer,
    when: &str,
    transports: u64,
    producers: u64,
    consumers: u64,
) {
    let expected = [transports, producers, consumers];
    let mut last = [0; 3];
    let reached = eventually(5, async || {
        last = [
            server.counter("transports").await,
            server.counter("producers").await,
            server.counter("consumers").await,
        ];
        last == expected
    })
    .await;
    if reached {
        return;
    }
    panic!(
        "{when}: the server counts [transports, producers, consumers] = {last:?}, expected {expected:?}"
    );
}

/// The `/api/rooms` entry of peer `peer_id` (the server's bookkeeping of its objects).
async fn peer_entry(server: &TestServer, peer_id: &str) -> Value {
    let rooms = server.get("/api/rooms").await.expect("/api/rooms answers");
    rooms["rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|room| room["peers"].as_array().into_iter().flatten())
        .find(|p| p["peerId"] == peer_id)
        .cloned()
        .unwrap_or_else(|| panic!("peer {peer_id} not in {rooms}"))
}

/// The `id`s listed under `key` (`producers`, `consumers`) of an `/api/rooms` peer entry.
fn ids(entry: &Value, key: &str) -> Vec<String> {
    entry[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["id"].as_str().map(str::to_owned))
        .collect()
}

/// Reads `peer`'s notifications until every `(method, data)` pattern in `wanted` matched
/// one (a pattern matches when each of its fields equals the notification's), dropping
/// the rest. Returns the matches in the order of `wanted`.
async fn expect_notifications(
    peer: &mut Peer,
    what: &str,
    wanted: &[(&str, Value)],
) -> Vec<Notification> {
    let mut found: Vec<Option<Notification>> = vec![None; wanted.len()];
    let mut others = Vec::new();
    let result = tokio::time::timeout(Duration::from_secs(10), async {
        while found.iter().any(Option::is_none) {
            let Some(n) = peer.notifications().recv().await else {
                return false;
            };
            let slot = wanted
                .iter()
                .zip(&found)
                .position(|((method, pattern), f)| {
                    f.is_none()
                        && n.method == *method
                        && pattern
                            .as_object()
                            .is_some_and(|p| p.iter().all(|(k, v)| n.data.get(k) == Some(v)))
                });
            match slot {
                Some(i) => found[i] = Some(n),
                None => others.push(n),
            }
        }
        true
    })
    .await;
    if result != Ok(true) {
        let missing: Vec<_> = wanted
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|(w, _)| w)
            .collect();
        panic!("{what}: missing {missing:?}; other notifications: {others:?}");
    }
    found.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_producer_then_leave() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(1).await;
    let Call {
        a,
        mut b,
        audio,
        video,
        audio_in,
        video_in,
        ..
    } = Call::start(&server, "close-producer").await;
    let a_id = a.peer_id().to_owned();

    // Both streams flow.
    let audio_reader = spawn_reader(audio_in, FRAMES - 1, opus_counter);
    let video_reader = spawn_reader(video_in, FRAMES - 1, vp8_counter);
    send_frames(&audio, Some(&video), 0..FRAMES).await;
    let (audio_in, got) = audio_reader.await.expect("audio reader");
    check_stream("opus before closeProducer", &got, 0..FRAMES);
    let (video_in, got) = video_reader.await.expect("video reader");
    check_stream("vp8 before closeProducer", &got, 0..FRAMES);

    // A closes its video producer: B's video consumer goes with it.
    let (video_id, video_in_id) = (video.id().to_owned(), video_in.id().to_owned());
    within("closeProducer", 10, video.close())
        .await
        .expect("close the video producer");
    expect_notifications(
        &mut b,
        "B hears the video producer close",
        &[
            ("consumerClosed", json!({"consumerId": video_in_id, "producerId": video_id, "reason": "producerClosed"})),
            ("producerClosed", json!({"producerId": video_id, "peerId": a_id})),
        ],
    )
    .await;
    wait_counts(&server, "after closeProducer", 2, 1, 1).await;
    assert_eq!(
        ids(&peer_entry(&server, &a_id).await, "producers"),
        [audio.id()],
        "A's producers"
    );
    assert_eq!(
        ids(&peer_entry(&server, b.peer_id()).await, "consumers"),
        [audio_in.id()],
        "B's consumers"
    );
    // The closed consumer is gone for B too.
    match within("closeConsumer of a closed consumer", 10, video_in.close()).await {
        Err(ClientError::Server { code: 404, .. }) => {}
        other => panic!("closeConsumer of the closed consumer answered {other:?}"),
    }

    // Audio flows on.
    let audio_reader = spawn_reader(audio_in, 2 * FRAMES - 1, opus_counter);
    send_frames(&audio, None, FRAMES..2 * FRAMES).await;
    let (audio_in, got) = audio_reader.await.expect("audio reader");
    check_stream("opus after closeProducer", &got, FRAMES..2 * FRAMES);

    // A leaves: B hears it, and the closing of A's audio producer and its own consumer of it.
    let audio_id = audio.id().to_owned();
    within("A leaves", 10, a.leave()).await.expect("leaveRoom");
    expect_notifications(
        &mut b,
        "B hears A leave",
        &[
            ("peerLeft", json!({"peerId": a_id})),
            (
                "consumerClosed",
                json!({"consumerId": audio_in.id(), "producerId": audio_id, "reason": "producerClosed"}),
            ),
            ("producerClosed", json!({"producerId": audio_id, "peerId": a_id})),
        ],
    )
    .await;
    wait_counts(&server, "after A left", 1, 0, 0).await;
    let rooms = server.get("/api/rooms").await.expect("/api/rooms answers");
    let peers = rooms["rooms"][0]["peers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(peers.len(), 1, "only B is left: {rooms}");
    assert_eq!(peers[0]["peerId"], b.peer_id(), "only B is left: {rooms}");

    within("B leaves", 10, b.leave()).await.expect("leaveRoom");
    server.wait_all_objects_gone().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_websockets_clean_up() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(1).await;
    let room = "dropped";
    let Call {
        a,
        mut b,
        audio,
        video,
        audio_in,
        video_in,
        recv,
        ..
    } = Call::start(&server, room).await;
    let a_id = a.peer_id().to_owned();

    // C joins on a bare WebSocket (the test kit's client, whose drop cuts the TCP connection
    // without a close frame) and publishes a video producer (no media) that B consumes.
    let mut c = Ws::connect(&server.ws_url()).await;
    c.ok("createRoom", json!({"roomId": room})).await;
    let joined = c
        .ok("joinRoom", json!({"roomId": room, "displayName": "carol"}))
        .await;
    let c_id = joined["peerId"].as_str().expect("peerId").to_owned();
    let transport = c.ok("createTransport", json!({"direction": "send"})).await;
    let mut rtp_parameters =
        serde_json::to_value(video.rtp_parameters()).expect("RTP parameters serialize");
    rtp_parameters["encodings"] = json!([{"ssrc": 0x0c0c_0001_u32}]);
    let produced = c
        .ok("produce", json!({"transportId": transport["id"], "kind": "video", "rtpParameters": rtp_parameters}))
        .await;
    let c_producer = produced["id"].as_str().expect("producer id").to_owned();
    let c_in = within("B consumes C", 10, recv.consume(&c_producer))
        .await
        .expect("consume C's producer");
    wait_counts(&server, "after C joined", 3, 3, 3).await;

    // Media flows from A to B.
    let audio_reader = spawn_reader(audio_in, FRAMES - 1, opus_counter);
    let video_reader = spawn_reader(video_in, FRAMES - 1, vp8_counter);
    send_frames(&audio, Some(&video), 0..FRAMES).await;
    let (audio_in, got) = audio_reader.await.expect("audio reader");
    check_stream("opus", &got, 0..FRAMES);
    let (video_in, got) = video_reader.await.expect("video reader");
    check_stream("vp8", &got, 0..FRAMES);

    // A closes its WebSocket without leaveRoom.
    a.signaling().close();
    expect_notifications(
        &mut b,
        "B hears A's connection drop",
        &[
            ("peerLeft", json!({"peerId": a_id})),
            (
                "consumerClosed",
                json!({"consumerId": audio_in.id(), "producerId": audio.id(), "reason": "producerClosed"}),
            ),
            (
                "consumerClosed",
                json!({"consumerId": video_in.id(), "producerId": video.id(), "reason": "producerClosed"}),
            ),
            ("producerClosed", json!({"producerId": audio.id(), "peerId": a_id})),
            ("producerClosed", json!({"producerId": video.id(), "peerId": a_id})),
        ],
    )
    .await;
    wait_counts(&server, "after A's connection closed", 2, 1, 1).await;

    // C's TCP connection ends without a WebSocket close frame.
    drop(c);
    expect_notifications(
        &mut b,
        "B hears C's connection cut",
        &[
            ("peerLeft", json!({"peerId": c_id})),
            ("consumerClosed", json!({"consumerId": c_in.id(), "producerId": c_producer, "reason": "producerClosed"})),
            ("producerClosed", json!({"producerId": c_producer, "peerId": c_id})),
        ],
    )
    .await;
    wait_counts(&server, "after C's connection was cut", 1, 0, 0).await;

    // B, the last one, disconnects too: the room goes away with everything in it.
    b.signaling().close();
    server.wait_all_objects_gone().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_own_consumer_and_transport() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(1).await;
    let Call {
        a,
        mut b,
        audio,
        video,
        audio_in,
        video_in,
        send,
        recv,
    } = Call::start(&server, "close-own").await;
    let a_id = a.peer_id().to_owned();

    // B closes its video consumer.
    let video_in_id = video_in.id().to_owned();
    within("closeConsumer", 10, video_in.close())
        .await
        .expect("close the video consumer");
    wait_counts(&server, "after closeConsumer", 2, 2, 1).await;
    assert_eq!(
        ids(&peer_entry(&server, b.peer_id()).await, "consumers"),
        [audio_in.id()],
        "B's consumers"
    );
    match within(
        "closeConsumer again",
        10,
        b.signaling()
            .request("closeConsumer", json!({"consumerId": video_in_id})),
    )
    .await
    {
        Err(ClientError::Server { code: 404, .. }) => {}
        other => panic!("closing a closed consumer answered {other:?}"),
    }

    // Audio still reaches B.
    let audio_reader = spawn_reader(audio_in, FRAMES - 1, opus_counter);
    send_frames(&audio, Some(&video), 0..FRAMES).await;
    let (_audio_in, got) = audio_reader.await.expect("audio reader");
    check_stream("opus after closeConsumer", &got, 0..FRAMES);

    // B closes its receive transport: its last consumer goes with it.
    within("B closeTransport", 10, recv.close())
        .await
        .expect("close the recv transport");
    wait_counts(&server, "after B's closeTransport", 1, 2, 0).await;
    let bob = peer_entry(&server, b.peer_id()).await;
    assert_eq!(
        bob["transports"].as_array().map(Vec::len),
        Some(0),
        "B's transports: {bob}"
    );
    assert!(ids(&bob, "consumers").is_empty(), "B's consumers: {bob}");

    // A closes its send transport: its producers go with it and B hears of both.
    within("A closeTransport", 10, send.close())
        .await
        .expect("close the send transport");
    expect_notifications(
        &mut b,
        "B hears A's producers close with their transport",
        &[
            (
                "producerClosed",
                json!({"producerId": audio.id(), "peerId": a_id}),
            ),
            (
                "producerClosed",
                json!({"producerId": video.id(), "peerId": a_id}),
            ),
        ],
    )
    .await;
    wait_counts(&server, "after A's closeTransport", 0, 0, 0).await;
    assert!(
        ids(&peer_entry(&server, &a_id).await, "producers").is_empty(),
        "A's producers are gone"
    );

    within("A leaves", 10, a.leave()).await.expect("leaveRoom");
    within("B leaves", 10, b.leave()).await.expect("leaveRoom");
    server.wait_all_objects_gone().await;
}
