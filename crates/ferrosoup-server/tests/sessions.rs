//! Sessions (PROTOCOL.md, Sessions): a peer whose WebSocket drops keeps its media for the
//! grace period, a `?resume=` connection takes it over with the notifications queued
//! meanwhile delivered first and in order, an expired or unknown token is refused with close
//! code 4404, a second connection takes over a live session (the first gets 4000), and a
//! re-sent request gets its cached answer instead of running twice.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use common::raw_client::*;
use common::*;
use ferrosoup_client::{MediaKind, Peer, Producer, SendTransport};

/// Minimal single-encoding VP8 RTP parameters (payload type 96) with `ssrc`.
fn vp8_rtp_parameters(ssrc: u32) -> Value {
    json!({
        "mid": "0",
        "codecs": [{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000, "parameters": {}, "rtcpFeedback": []}],
        "headerExtensions": [],
        "encodings": [{"ssrc": ssrc}],
        "rtcp": {"cname": "sessions"}
    })
}

/// `createRoom` + `joinRoom` as `peer_id` on a raw connection; returns the session token.
async fn join_with_token(ws: &mut Ws, room: &str, peer_id: &str) -> String {
    let caps = ws.ok("createRoom", json!({"roomId": room})).await["rtpCapabilities"].clone();
    let joined = ws
        .ok(
            "joinRoom",
            json!({"roomId": room, "peerId": peer_id, "rtpCapabilities": caps}),
        )
        .await;
    assert_eq!(joined["peerId"], peer_id, "joinRoom answered {joined}");
    let token = joined["sessionToken"]
        .as_str()
        .unwrap_or_else(|| panic!("joinRoom answered no sessionToken: {joined}"));
    assert!(!token.is_empty(), "empty sessionToken");
    token.to_owned()
}

/// The `?resume=` URL of a session.
fn resume_url(server: &TestServer, token: &str) -> String {
    format!("{}?resume={token}", server.ws_url())
}

/// The entry of `peer_id` in `/api/rooms` for `room`, if the peer is there.
async fn peer_entry(server: &TestServer, room: &str, peer_id: &str) -> Option<Value> {
    let rooms = server.get("/api/rooms").await.expect("/api/rooms answers");
    rooms["rooms"]
        .as_array()?
        .iter()
        .find(|r| r["roomId"] == room)?["peers"]
        .as_array()?
        .iter()
        .find(|p| p["peerId"] == peer_id)
        .cloned()
}

/// How many transports `peer_id` has in `room` (0 when it is not there).
async fn transport_count(server: &TestServer, room: &str, peer_id: &str) -> usize {
    peer_entry(server, room, peer_id)
        .await
        .and_then(|p| p["transports"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// A VP8 producer sending a frame every [`FRAME_INTERVAL`] (keyframes on request and every
/// 50 frames) until dropped; `sent` is the counter of the last frame sent.
struct VideoSender {
    sent: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl VideoSender {
    fn start(video: Producer) -> Self {
        let video = Arc::new(video);
        let sent = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (keyframe_wanted, watcher) = watch_keyframe_requests(video.clone());
        let sender = {
            let (sent, stop) = (sent.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i: u32 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let keyframe =
                        keyframe_wanted.swap(false, Ordering::Relaxed) || i.is_multiple_of(50);
                    video
                        .send(i as u16, i.wrapping_mul(3000), true, vp8_frame(i, keyframe))
                        .await
                        .expect("send vp8");
                    sent.store(i, Ordering::Relaxed);
                    i += 1;
                    tokio::time::sleep(FRAME_INTERVAL).await;
                }
            })
        };
        Self {
            sent,
            stop,
            tasks: vec![watcher, sender],
        }
    }

    fn sent(&self) -> u32 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for VideoSender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Receives frame counters into `got` until one above `counter` arrives.
async fn frames_until(frames: &mut mpsc::UnboundedReceiver<u32>, got: &mut Vec<u32>, counter: u32) {
    while let Some(c) = frames.recv().await {
        got.push(c);
        if c > counter {
            return;
        }
    }
    panic!("B's consumer ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_keeps_media_and_delivers_queued_notifications_first_in_order() {
    let server = TestServer::start_with(1, &[("SESSION_GRACE", "3")]).await;
    let url = server.ws_url();

    // A publishes VP8; B consumes it with the SDK.
    let mut a = Peer::join(&url, "resume", "alice")
        .await
        .expect("alice joins");
    let send: SendTransport = a.create_send_transport().await.expect("send transport");
    let video = common::produce(&send, MediaKind::Video, "video/VP8").await;
    let video_id = video.id().to_owned();
    let mut b = Peer::join(&url, "resume", "bob").await.expect("bob joins");
    let token = b
        .session_token()
        .expect("joinRoom answers a sessionToken")
        .to_owned();
    let b_id = b.peer_id().to_owned();
    let recv = b.create_recv_transport().await.expect("recv transport");
    let video_in = recv.consume(&video_id).await.expect("consume vp8");
    within("send transport connects", 10, send.wait_connected())
        .await
        .expect("send transport connected");
    within("recv transport connects", 10, recv.wait_connected())
        .await
        .expect("recv transport connected");
    video_in.resume().await.expect("resume vp8");
    let sender = VideoSender::start(video);
    let (frames_tx, mut frames) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(p) = video_in.read_rtp().await {
            let counter = vp8_counter(&p.payload).expect("vp8 payload intact");
            if frames_tx.send(counter).is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    within(
        "B receives the first frames",
        10,
        frames_until(&mut frames, &mut got, 0),
    )
    .await;

    // B's WebSocket goes away; its PeerConnection (media) stays.
    b.signaling().close();
    // The server answers the close handshake only once it has let go of the connection
    // (from then on B's notifications are queued for the resume); B's notification stream
    // ends when that answer arrives. Nothing tells the other peers (no peerLeft during the
    // grace).
    within("B's WebSocket closes", 5, async {
        while b.notifications().recv().await.is_some() {}
    })
    .await;
    assert!(!b.signaling().is_open(), "B's signaling still open");
    let sent_at_drop = sender.sent();

    // While B is away: A publishes audio and pauses it → queued newProducer, producerPaused.
    let audio = common::produce(&send, MediaKind::Audio, "audio/opus").await;
    audio.pause().await.expect("pause opus while B is away");
    within(
        "B keeps receiving frames while its signaling is down",
        10,
        frames_until(&mut frames, &mut got, sent_at_drop + 50),
    )
    .await;
    let sent_at_resume = sender.sent();

    // Resume on a new raw WebSocket: the queued notifications come before any answer.
    let mut ws = Ws::connect(&resume_url(&server, &token)).await;
    let ping = ws.request("ping", json!({})).await;
    assert_eq!(ping["ok"], true, "ping on the resumed connection: {ping}");
    let queued: Vec<Value> = ws.notifications().drain(..).collect();
    let membership: Vec<(String, Value)> = queued
        .iter()
        .filter(|n| {
            ![
                "consumerScore",
                "producerScore",
                "consumerLayersChanged",
                "transportStateChanged",
            ]
            .contains(&n["method"].as_str().unwrap_or(""))
        })
        .map(|n| {
            (
                n["method"].as_str().unwrap_or("").to_owned(),
                n["data"]["producerId"].clone(),
            )
        })
        .collect();
    assert_eq!(
        membership,
        vec![
            ("newProducer".to_owned(), json!(audio.id())),
            ("producerPaused".to_owned(), json!(audio.id())),
        ],
        "notifications queued while B was away, delivered first and in order: {queued:?}"
    );
    let new_producer = &queued
        .iter()
        .find(|n| n["method"] == "newProducer")
        .expect("newProducer checked above")["data"];
    assert_eq!(new_producer["peerId"], a.peer_id(), "{new_producer}");
    assert_eq!(new_producer["kind"], "audio", "{new_producer}");

    // The resumed connection serves B's requests on B's objects.
    let producers = ws.ok("getProducers", json!({})).await;
    let listed = producers["producers"].as_array().expect("producers array");
    let paused_of = |id: &str| {
        listed
            .iter()
            .find(|p| p["producerId"] == id)
            .map(|p| p["paused"].clone())
    };
    assert_eq!(paused_of(&video_id), Some(json!(false)), "{producers}");
    assert_eq!(paused_of(audio.id()), Some(json!(true)), "{producers}");
    let consumed = ws
        .ok(
            "consume",
            json!({"transportId": recv.id(), "producerId": audio.id()}),
        )
        .await;
    assert_eq!(consumed["kind"], "audio", "consume answered {consumed}");
    assert_eq!(consumed["producerPaused"], true, "{consumed}");

    // A notification produced after the resume reaches the new connection.
    audio.resume().await.expect("resume opus");
    let resumed = within(
        "B's new connection gets producerResumed",
        10,
        ws.notification("producerResumed", |d| d["producerId"] == audio.id()),
    )
    .await;
    assert_eq!(resumed["peerId"], a.peer_id());

    // Media never stopped: the frames sent while B's signaling was down arrived.
    within(
        "B receives frames after the resume",
        10,
        frames_until(&mut frames, &mut got, sent_at_resume + 50),
    )
    .await;
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "frames out of order: {got:?}"
    );
    let during = got
        .iter()
        .filter(|c| (sent_at_drop + 1..=sent_at_resume).contains(*c))
        .count();
    let expected = (sent_at_resume - sent_at_drop) as usize;
    assert!(
        during * 10 >= expected * 9,
        "B received {during} of the {expected} frames sent while its signaling was down"
    );

    // B never left: A saw no peerLeft, the room still lists B.
    while let Ok(n) = a.notifications().try_recv() {
        assert!(
            !(n.method == "peerLeft" && n.data["peerId"] == b_id.as_str()),
            "A got {n:?} although B came back within the grace period"
        );
    }
    assert!(
        peer_entry(&server, "resume", &b_id).await.is_some(),
        "B is gone from /api/rooms"
    );
    drop(sender);
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_grace_period_the_peer_leaves_and_its_token_is_refused() {
    let server = TestServer::start_with(1, &[("SESSION_GRACE", "2")]).await;
    let url = server.ws_url();
    let mut a = Ws::connect(&url).await;
    join_with_token(&mut a, "grace", "alice").await;
    let mut b = Ws::connect(&url).await;
    let token = join_with_token(&mut b, "grace", "bob").await;
    let b_send = b.transport("send").await["id"]
        .as_str()
        .expect("transport id")
        .to_owned();
    b.transport("recv").await;
    let producer = b
        .ok(
            "produce",
            json!({"transportId": b_send, "kind": "video", "rtpParameters": vp8_rtp_parameters(4242)}),
        )
        .await["id"]
        .as_str()
        .expect("producer id")
        .to_owned();
    a.notification("newProducer", |d| d["producerId"] == producer.as_str())
        .await;

    // B's connection drops (TCP gone, no close frame).
    drop(b);
    let early = a
        .notification_within(Duration::from_secs(1), "peerLeft", |d| d["peerId"] == "bob")
        .await;
    assert_eq!(
        early, None,
        "peerLeft within 1 s of the drop, although SESSION_GRACE=2"
    );
    assert_eq!(
        transport_count(&server, "grace", "bob").await,
        2,
        "B's transports must live through the grace period"
    );
    assert_eq!(
        server.counter("producers").await,
        1,
        "B's producer must live through the grace period"
    );

    within(
        "A gets peerLeft after the grace period",
        8,
        a.notification("peerLeft", |d| d["peerId"] == "bob"),
    )
    .await;
    assert!(
        peer_entry(&server, "grace", "bob").await.is_none(),
        "B still in /api/rooms after peerLeft"
    );
    let closed = eventually(10, async || {
        let mut left = 0;
        for name in ["transports", "producers", "consumers"] {
            left += server.counter(name).await;
        }
        left == 0
    })
    .await;
    assert!(closed, "timed out after 10s: B's objects are closed");

    // The token died with the peer.
    let mut late = Ws::connect(&resume_url(&server, &token)).await;
    assert_eq!(
        late.closed().await,
        Some(4404),
        "resume with an expired token"
    );
    let mut unknown = Ws::connect(&resume_url(&server, "no-such-session")).await;
    assert_eq!(
        unknown.closed().await,
        Some(4404),
        "resume with an unknown token"
    );
    a.assert_usable("B's expiry").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_a_connected_session_takes_it_over_and_closes_the_old_connection_with_4000() {
    // SESSION_GRACE=0: if the old connection's end were taken for the peer's, it would leave.
    let server = TestServer::start(1).await;
    let url = server.ws_url();
    let mut a = Ws::connect(&url).await;
    join_with_token(&mut a, "takeover", "alice").await;
    let mut b = Ws::connect(&url).await;
    let token = join_with_token(&mut b, "takeover", "bob").await;
    let b_recv = b.transport("recv").await["id"]
        .as_str()
        .expect("transport id")
        .to_owned();

    let mut b2 = Ws::connect(&resume_url(&server, &token)).await;
    assert_eq!(
        within("the old connection is closed", 10, b.closed()).await,
        Some(4000),
        "close code of the connection taken over"
    );

    // The new connection owns B's objects and gets B's notifications.
    b2.assert_usable("the takeover").await;
    let stats = b2
        .ok("getTransportStats", json!({"transportId": b_recv}))
        .await;
    assert!(
        stats["stats"].as_array().is_some_and(|s| !s.is_empty()),
        "getTransportStats of B's transport: {stats}"
    );
    let a_send = a.transport("send").await["id"]
        .as_str()
        .expect("transport id")
        .to_owned();
    let producer = a
        .ok(
            "produce",
            json!({"transportId": a_send, "kind": "video", "rtpParameters": vp8_rtp_parameters(5151)}),
        )
        .await["id"]
        .as_str()
        .expect("producer id")
        .to_owned();
    within(
        "the new connection gets newProducer",
        10,
        b2.notification("newProducer", |d| d["producerId"] == producer.as_str()),
    )
    .await;
    let consumed = b2
        .ok(
            "consume",
            json!({"transportId": b_recv, "producerId": producer}),
        )
        .await;
    assert_eq!(consumed["producerId"], producer.as_str(), "{consumed}");

    let left = a
        .notification_within(Duration::from_millis(500), "peerLeft", |d| {
            d["peerId"] == "bob"
        })
        .await;
    assert_eq!(left, None, "B left the room when its old connection closed");
    assert!(
        peer_entry(&server, "takeover", "bob").await.is_some(),
        "B is gone from /api/rooms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_sent_request_gets_the_cached_answer_and_a_reused_id_runs_as_new() {
    let server = TestServer::start_with(1, &[("SESSION_GRACE", "3")]).await;
    let url = server.ws_url();
    let mut b = Ws::connect(&url).await;
    let token = join_with_token(&mut b, "idempotent", "bob").await;

    // The same id, method and data twice: one transport, the same answer.
    let send = json!({"direction": "send"});
    let first = b
        .request_with_id(5000, "createTransport", send.clone())
        .await;
    assert_eq!(first["ok"], true, "createTransport: {first}");
    let again = b
        .request_with_id(5000, "createTransport", send.clone())
        .await;
    assert_eq!(again, first, "a re-sent request must get the same answer");
    assert_eq!(
        transport_count(&server, "idempotent", "bob").await,
        1,
        "a re-sent createTransport ran twice"
    );

    // The same id with other data, then another method: executed as new requests.
    let recv = b
        .request_with_id(5000, "createTransport", json!({"direction": "recv"}))
        .await;
    assert_eq!(recv["ok"], true, "createTransport recv: {recv}");
    assert_ne!(
        recv["data"]["id"], first["data"]["id"],
        "id 5000 reused with other data got the old answer"
    );
    assert_eq!(transport_count(&server, "idempotent", "bob").await, 2);
    let ping = b.request_with_id(5000, "ping", json!({})).await;
    assert_eq!(
        ping,
        json!({"response": true, "id": 5000, "ok": true, "data": {}}),
        "id 5000 reused by ping"
    );
    // After ping took id 5000 over, the first createTransport is new again.
    let third = b
        .request_with_id(5000, "createTransport", send.clone())
        .await;
    assert_eq!(third["ok"], true, "createTransport: {third}");
    assert_ne!(third["data"]["id"], first["data"]["id"]);
    assert_eq!(transport_count(&server, "idempotent", "bob").await, 3);

    // The last request, re-sent with its id after a drop and resume: cached answer.
    let last = b
        .request_with_id(5001, "createTransport", json!({"direction": "recv"}))
        .await;
    assert_eq!(last["ok"], true, "createTransport: {last}");
    assert_eq!(transport_count(&server, "idempotent", "bob").await, 4);
    // B's connection ends; the server answers the close once it has let go of it, so the
    // resume below finds the session detached (not still attached and taken over).
    within("B's connection closes", 10, b.client.close())
        .await
        .expect("close B's connection");
    b.closed().await;
    let mut resumed = Ws::connect(&resume_url(&server, &token)).await;
    let replay = resumed
        .request_with_id(5001, "createTransport", json!({"direction": "recv"}))
        .await;
    assert_eq!(
        replay, last,
        "the request re-sent after the resume must get its cached answer"
    );
    assert_eq!(
        transport_count(&server, "idempotent", "bob").await,
        4,
        "the re-sent createTransport ran again after the resume"
    );
    // A new request on the resumed connection runs.
    let fresh = resumed
        .request_with_id(5002, "createTransport", json!({"direction": "recv"}))
        .await;
    assert_eq!(fresh["ok"], true, "createTransport after resume: {fresh}");
    assert_eq!(transport_count(&server, "idempotent", "bob").await, 5);
}
