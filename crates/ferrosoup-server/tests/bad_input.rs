//! (e) Bad input gets the error codes of PROTOCOL.md and the connection stays usable; a
//! DTLS fingerprint mismatch fails only the transport that lied about its certificate.
//!
//! Signaling is spoken by hand over a raw WebSocket (protoo envelope in JSON) so that every
//! malformed shape can be sent. The DTLS test drives an "evil" transport with the project's
//! own sans-IO ICE/DTLS pieces over a plain UDP socket, next to healthy SDK peers.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use serde_json::{Value, json};

use common::raw_client::*;
use common::*;
use ferrosoup_client::{MediaKind, Peer};
use ferrosoup_rtc::dtls::{DtlsCertificate, DtlsState};

/// Minimal single-encoding RTP parameters for `mime` (video, payload type 96).
fn video_rtp_parameters(mime: &str, ssrc: u32) -> Value {
    json!({
        "mid": "0",
        "codecs": [{"mimeType": mime, "payloadType": 96, "clockRate": 90000, "parameters": {}, "rtcpFeedback": []}],
        "headerExtensions": [],
        "encodings": [{"ssrc": ssrc}],
        "rtcp": {"cname": "bad-input"}
    })
}

/// Asserts a 400 whose reason names `field`.
fn assert_names(code: u64, reason: &str, expected_code: u64, field: &str, what: &str) {
    assert_eq!(
        code, expected_code,
        "{what}: wrong errorCode (reason {reason:?})"
    );
    assert!(
        reason.contains(field),
        "{what}: reason {reason:?} does not name {field:?}"
    );
}

// ----- signaling ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protoo_subprotocol_and_no_subprotocol_are_accepted() {
    let server = TestServer::start(1).await;
    let (mut with, chosen) = Ws::connect_with(&server.ws_url(), Some("protoo")).await;
    assert_eq!(
        chosen.as_deref(),
        Some("protoo"),
        "handshake must answer Sec-WebSocket-Protocol: protoo"
    );
    with.assert_usable("a handshake with protoo").await;
    let (mut without, chosen) = Ws::connect_with(&server.ws_url(), None).await;
    assert_eq!(chosen, None, "no subprotocol offered, none may be chosen");
    without
        .assert_usable("a handshake without subprotocol")
        .await;
    without.ok("createRoom", json!({"roomId": "plain"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_answered_or_ignored_and_the_connection_stays_usable() {
    let server = TestServer::start(1).await;
    let mut ws = Ws::connect(&server.ws_url()).await;

    // Invalid JSON has no readable id: no answer at all. The server handles frames in order,
    // so the first answer after it must be the ping's.
    for garbage in ["{not json", "", "[1, 2", "\u{1F980}"] {
        ws.send_text(garbage.to_owned()).await;
        ws.assert_usable(&format!("invalid JSON {garbage:?}")).await;
    }

    // JSON that is no protoo envelope but carries an id → 400 to that id.
    for (id, frame) in [
        (900, json!({"id": 900, "method": "ping", "data": {}})),
        (901, json!({"request": true, "id": 901})),
        (902, json!({"request": true, "id": 902, "method": 7})),
    ] {
        ws.send_text(frame.to_string()).await;
        let response = ws.response(id).await;
        let (code, _) = error_of(&response);
        assert_eq!(code, 400, "unknown envelope {frame}: {response}");
        ws.assert_usable(&format!("unknown envelope {frame}")).await;
    }

    // Unknown method → 400 naming it.
    let (code, reason) = ws.fail("makeCoffee", json!({})).await;
    assert_names(code, &reason, 400, "makeCoffee", "unknown method");
    ws.assert_usable("an unknown method").await;

    // Missing fields → 400 naming them.
    let (code, reason) = ws.fail("createRoom", json!({})).await;
    assert_names(code, &reason, 400, "roomId", "createRoom without roomId");
    ws.assert_usable("createRoom without roomId").await;
    let (code, reason) = ws.fail("getRouterRtpCapabilities", json!({})).await;
    assert_names(
        code,
        &reason,
        400,
        "roomId",
        "getRouterRtpCapabilities without roomId",
    );
    let (code, reason) = ws.fail("joinRoom", json!({"peerId": "p"})).await;
    assert_names(code, &reason, 400, "roomId", "joinRoom without roomId");
    ws.assert_usable("joinRoom without roomId").await;

    // Requests that need a room, before joinRoom → 409.
    for (method, data) in [
        ("createTransport", json!({"direction": "send"})),
        (
            "produce",
            json!({"transportId": "x", "kind": "video", "rtpParameters": video_rtp_parameters("video/VP8", 1)}),
        ),
        ("getProducers", json!({})),
        ("leaveRoom", json!({})),
    ] {
        let (code, reason) = ws.fail(method, data).await;
        assert_eq!(code, 409, "{method} before joinRoom: {reason}");
        ws.assert_usable(&format!("{method} before joinRoom")).await;
    }

    // Joined now; a second joinRoom on the same connection → 409, even to another room.
    ws.join("bad-input", "alice").await;
    for room in ["bad-input", "elsewhere"] {
        let (code, reason) = ws
            .fail("joinRoom", json!({"roomId": room, "peerId": "alice2"}))
            .await;
        assert_eq!(code, 409, "second joinRoom ({room}): {reason}");
        ws.assert_usable("a second joinRoom").await;
    }
    let rooms = server.get("/api/rooms").await.expect("/api/rooms answers");
    assert!(
        !rooms.to_string().contains("elsewhere"),
        "a refused joinRoom left a room behind: {rooms}"
    );

    // Missing field of an in-room request → 400 naming it.
    let send = ws.transport("send").await;
    let send_id = send["id"].as_str().expect("transport id").to_owned();
    let (code, reason) = ws
        .fail("connectTransport", json!({"transportId": send_id}))
        .await;
    assert_names(
        code,
        &reason,
        400,
        "dtlsParameters",
        "connectTransport without dtlsParameters",
    );
    let (code, reason) = ws
        .fail("produce", json!({"transportId": send_id, "kind": "video"}))
        .await;
    assert_names(
        code,
        &reason,
        400,
        "rtpParameters",
        "produce without rtpParameters",
    );
    let (code, reason) = ws.fail("createTransport", json!({})).await;
    assert_names(
        code,
        &reason,
        400,
        "direction",
        "createTransport without direction",
    );
    ws.assert_usable("missing fields").await;

    // Still fully working: a valid produce succeeds on the same connection.
    let produced = ws
        .ok("produce", json!({"transportId": send_id, "kind": "video", "rtpParameters": video_rtp_parameters("video/VP8", 1111)}))
        .await;
    assert!(
        produced["id"].as_str().is_some_and(|id| !id.is_empty()),
        "produce answered {produced}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistyped_fields_are_named_in_the_reason() {
    let server = TestServer::start(1).await;
    let mut ws = Ws::connect(&server.ws_url()).await;
    // (request, field the reason must name, errorCode, reason) of every case, checked at the
    // end so that one report shows them all.
    let mut answers = Vec::new();

    let (code, reason) = ws.fail("createRoom", json!({"roomId": 42})).await;
    answers.push(("createRoom {roomId: 42}", "roomId", code, reason));
    ws.assert_usable("a numeric roomId").await;

    ws.join("mistyped", "alice").await;
    let send = ws.transport("send").await;
    let send_id = send["id"].as_str().expect("transport id").to_owned();
    let rtp = video_rtp_parameters("video/VP8", 1);
    let cases = [
        (
            "produce {kind: \"smell\"}",
            "kind",
            "produce",
            json!({"transportId": send_id, "kind": "smell", "rtpParameters": rtp}),
        ),
        (
            "produce {kind: 3}",
            "kind",
            "produce",
            json!({"transportId": send_id, "kind": 3, "rtpParameters": rtp}),
        ),
        (
            "produce {transportId: 5}",
            "transportId",
            "produce",
            json!({"transportId": 5, "kind": "video", "rtpParameters": rtp}),
        ),
        (
            "produce {rtpParameters: \"x\"}",
            "rtpParameters",
            "produce",
            json!({"transportId": send_id, "kind": "video", "rtpParameters": "x"}),
        ),
        (
            "createTransport {direction: \"sideways\"}",
            "direction",
            "createTransport",
            json!({"direction": "sideways"}),
        ),
        (
            "setConsumerPriority {priority: \"high\"}",
            "priority",
            "setConsumerPriority",
            json!({"consumerId": "c", "priority": "high"}),
        ),
    ];
    for (what, field, method, data) in cases {
        let (code, reason) = ws.fail(method, data).await;
        answers.push((what, field, code, reason));
        ws.assert_usable(what).await;
    }
    let wrong: Vec<String> = answers
        .iter()
        .filter(|(_, field, code, reason)| *code != 400 || !reason.contains(field))
        .map(|(what, field, code, reason)| {
            format!("{what}: {code} {reason:?} (must be 400 naming {field})")
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "mistyped fields not named:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_peer_id_in_a_room_is_a_conflict() {
    let server = TestServer::start(1).await;
    let mut first = Ws::connect(&server.ws_url()).await;
    first.join("dup", "same").await;

    let mut second = Ws::connect(&server.ws_url()).await;
    second.ok("createRoom", json!({"roomId": "dup"})).await;
    let (code, reason) = second
        .fail("joinRoom", json!({"roomId": "dup", "peerId": "same"}))
        .await;
    assert_eq!(code, 409, "duplicate peerId: {reason}");
    second.assert_usable("a duplicate peerId").await;

    // The refused connection can still join under another id; the first peer is untouched.
    second.join("dup", "other").await;
    let joined = first
        .notification("peerJoined", |d| d["peerId"] == "other")
        .await;
    assert_eq!(joined["peerId"], "other");
    first
        .assert_usable("another connection's duplicate peerId")
        .await;
    let rooms = server.get("/api/rooms").await.expect("/api/rooms answers");
    let text = rooms.to_string();
    assert!(
        text.contains("\"same\"") && text.contains("\"other\""),
        "both peers must be in the room: {rooms}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_foreign_ids_are_not_found_and_the_owner_is_unaffected() {
    let server = TestServer::start(1).await;
    let url = server.ws_url();
    let mut x = Ws::connect(&url).await;
    x.join("ids", "x").await;
    let mut y = Ws::connect(&url).await;
    y.join("ids", "y").await;

    // Y: a send transport with a producer, a recv transport with a consumer of X's producer.
    let x_send = x.transport("send").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let x_producer = x
        .ok("produce", json!({"transportId": x_send, "kind": "video", "rtpParameters": video_rtp_parameters("video/VP8", 2222)}))
        .await["id"]
        .as_str()
        .expect("producer id")
        .to_owned();
    let y_send = y.transport("send").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let y_recv = y.transport("recv").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let y_producer = y
        .ok("produce", json!({"transportId": y_send, "kind": "video", "rtpParameters": video_rtp_parameters("video/VP8", 3333)}))
        .await["id"]
        .as_str()
        .expect("producer id")
        .to_owned();
    let y_consumer = y
        .ok(
            "consume",
            json!({"transportId": y_recv, "producerId": x_producer}),
        )
        .await["id"]
        .as_str()
        .expect("consumer id")
        .to_owned();
    let x_recv = x.transport("recv").await["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let fake_dtls =
        json!({"role": "client", "fingerprints": [{"algorithm": "sha-256", "value": "AB:CD"}]});
    let unknown = "00000000-0000-4000-8000-000000000000";
    // Unknown ids (well-formed and not), then ids that belong to Y.
    let cases = [
        (
            "connectTransport",
            json!({"transportId": unknown, "dtlsParameters": fake_dtls}),
        ),
        (
            "connectTransport",
            json!({"transportId": "not-a-uuid", "dtlsParameters": fake_dtls}),
        ),
        ("closeTransport", json!({"transportId": unknown})),
        (
            "produce",
            json!({"transportId": unknown, "kind": "video", "rtpParameters": video_rtp_parameters("video/VP8", 4444)}),
        ),
        ("closeProducer", json!({"producerId": unknown})),
        ("pauseProducer", json!({"producerId": "nope"})),
        (
            "consume",
            json!({"transportId": x_recv, "producerId": unknown}),
        ),
        (
            "consume",
            json!({"transportId": unknown, "producerId": y_producer}),
        ),
        ("resumeConsumer", json!({"consumerId": unknown})),
        ("closeConsumer", json!({"consumerId": "nope"})),
        ("getTransportStats", json!({"transportId": unknown})),
        // Y's objects, named by X.
        ("closeProducer", json!({"producerId": y_producer})),
        ("pauseProducer", json!({"producerId": y_producer})),
        (
            "connectTransport",
            json!({"transportId": y_send, "dtlsParameters": fake_dtls}),
        ),
        ("closeTransport", json!({"transportId": y_recv})),
        ("restartIce", json!({"transportId": y_send})),
        (
            "consume",
            json!({"transportId": y_recv, "producerId": y_producer}),
        ),
        (
            "produce",
            json!({"transportId": y_send, "kind": "video", "rtpParameters": video_rtp_parameters("video/VP8", 5555)}),
        ),
        ("closeConsumer", json!({"consumerId": y_consumer})),
        ("pauseConsumer", json!({"consumerId": y_consumer})),
        ("getConsumerStats", json!({"consumerId": y_consumer})),
    ];
    for (method, data) in cases {
        let (code, reason) = x.fail(method, data.clone()).await;
        assert_eq!(code, 404, "{method} {data}: {reason}");
        x.assert_usable(&format!("{method} with a foreign/unknown id"))
            .await;
    }

    // Y is unaffected: its producer is open and not paused, its transports and consumer work.
    let producers = x.ok("getProducers", json!({})).await;
    let listed = producers["producers"].as_array().expect("producers array");
    let y_entry = listed
        .iter()
        .find(|p| p["producerId"] == y_producer.as_str())
        .unwrap_or_else(|| panic!("Y's producer gone: {producers}"));
    assert_eq!(
        y_entry["paused"], false,
        "X paused Y's producer: {producers}"
    );
    y.ok("getProducerStats", json!({"producerId": y_producer}))
        .await;
    y.ok("getConsumerStats", json!({"consumerId": y_consumer}))
        .await;
    y.ok("resumeConsumer", json!({"consumerId": y_consumer}))
        .await;
    y.ok("getTransportStats", json!({"transportId": y_recv}))
        .await;
    // Y's send transport was never connected by X: Y can still connect it itself.
    y.ok(
        "connectTransport",
        json!({"transportId": y_send, "dtlsParameters": fake_dtls}),
    )
    .await;
    for n in y.notifications().iter() {
        assert!(
            n["method"] != "producerClosed"
                && n["method"] != "consumerClosed"
                && n["method"] != "consumerPaused",
            "Y got {n} because of X's requests"
        );
    }
    // And X may consume Y's producer on its own transport.
    x.ok(
        "consume",
        json!({"transportId": x_recv, "producerId": y_producer}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_media_requests_are_refused() {
    let server = TestServer::start(1).await;
    let url = server.ws_url();
    let mut x = Ws::connect(&url).await;
    x.join("media-bad", "x").await;
    let send = x.transport("send").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let recv = x.transport("recv").await["id"]
        .as_str()
        .expect("id")
        .to_owned();

    // A codec the router does not have → 400.
    let (code, reason) = x
        .fail("produce", json!({"transportId": send, "kind": "video", "rtpParameters": video_rtp_parameters("video/H265", 6666)}))
        .await;
    assert_names(
        code,
        &reason,
        400,
        "H265",
        "produce with an unsupported codec",
    );
    x.assert_usable("an unsupported codec").await;

    // Producing on a recv transport → 409.
    let (code, reason) = x
        .fail("produce", json!({"transportId": recv, "kind": "video", "rtpParameters": video_rtp_parameters("video/VP8", 7777)}))
        .await;
    assert_eq!(code, 409, "produce on a recv transport: {reason}");
    x.assert_usable("produce on a recv transport").await;

    // A good producer, then consumers that cannot decode it → 400.
    let producer = x
        .ok("produce", json!({"transportId": send, "kind": "video", "rtpParameters": video_rtp_parameters("video/VP8", 8888)}))
        .await["id"]
        .as_str()
        .expect("producer id")
        .to_owned();
    let mut y = Ws::connect(&url).await;
    y.join("media-bad", "y").await;
    let y_recv = y.transport("recv").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let opus_only = json!({
        "codecs": [{"kind": "audio", "mimeType": "audio/opus", "preferredPayloadType": 100, "clockRate": 48000, "channels": 2}],
        "headerExtensions": []
    });
    let (code, reason) = y
        .fail(
            "consume",
            json!({"transportId": y_recv, "producerId": producer, "rtpCapabilities": opus_only}),
        )
        .await;
    assert_names(
        code,
        &reason,
        400,
        "rtpCapabilities",
        "consume with no common codec",
    );
    y.assert_usable("consume with no common codec").await;
    // Consuming on a send transport → 409.
    let y_send = y.transport("send").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (code, reason) = y
        .fail(
            "consume",
            json!({"transportId": y_send, "producerId": producer}),
        )
        .await;
    assert_eq!(code, 409, "consume on a send transport: {reason}");
    // The same consumer with the capabilities given at joinRoom works.
    let consumer = y
        .ok(
            "consume",
            json!({"transportId": y_recv, "producerId": producer}),
        )
        .await;
    assert_eq!(consumer["kind"], "video", "consume answered {consumer}");
    let stats = server.get("/api/stats").await.expect("/api/stats answers");
    assert_eq!(
        server.counter("producers").await,
        1,
        "the refused produce requests left producers: {stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_256_kib_closes_with_1009() {
    let server = TestServer::start(1).await;
    let url = server.ws_url();
    let mut big = Ws::connect(&url).await;
    big.join("big", "big").await;
    let mut other = Ws::connect(&url).await;
    other.join("big", "other").await;

    // Exactly at the limit is still served.
    let prefix =
        json!({"request": true, "id": 77, "method": "ping", "data": {"pad": ""}}).to_string();
    let pad = 256 * 1024 - prefix.len();
    let at_limit = prefix.replace("\"pad\":\"\"", &format!("\"pad\":\"{}\"", "a".repeat(pad)));
    assert_eq!(at_limit.len(), 256 * 1024);
    big.send_text(at_limit).await;
    assert_eq!(
        big.response(77).await["ok"],
        true,
        "a frame of exactly 256 KiB must be served"
    );

    let huge = json!({"request": true, "id": 78, "method": "ping", "data": {"pad": "b".repeat(300 * 1024)}}).to_string();
    big.send_text(huge).await;
    loop {
        match big.read().await {
            Frame::Json(v) if v["notification"] == true => {}
            Frame::Json(v) => panic!("expected the connection to close with 1009, got {v}"),
            Frame::Closed(code) => {
                assert_eq!(code, Some(1009), "close code for a frame over 256 KiB");
                break;
            }
        }
    }
    // The peer leaves (at once, or after a resume grace period of 30 s by default).
    within(
        "the other peer gets peerLeft",
        45,
        other.notification("peerLeft", |d| d["peerId"] == "big"),
    )
    .await;
    other.assert_usable("another peer's oversized frame").await;
}

// ----- DTLS fingerprint mismatch --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_dtls_client_with_the_announced_certificate_connects() {
    // Control for the mismatch test: the same hand-made ICE + DTLS client connects when it
    // presents the certificate it announced.
    let server = TestServer::start(1).await;
    let mut c = RawTransport::open(&server.ws_url(), "dtls-ok", "carol").await;
    let certificate = Arc::new(DtlsCertificate::generate().expect("a certificate"));
    c.connect(sha256(&certificate)).await;
    let (notification, client_state) = c.handshake(certificate).await;
    assert_eq!(notification["dtlsState"], "connected", "{notification}");
    assert_eq!(notification["iceState"], "completed", "{notification}");
    assert_eq!(
        client_state,
        DtlsState::Connected,
        "the client side of the handshake"
    );
    let stats =
        c.ws.ok("getTransportStats", json!({"transportId": c.id}))
            .await;
    assert_eq!(stats["stats"][0]["dtlsState"], "connected", "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtls_fingerprint_mismatch_fails_only_that_transport() {
    let server = TestServer::start(1).await;
    let url = server.ws_url();

    // Healthy peers: A publishes VP8 continuously, B consumes it.
    let a = Peer::join(&url, "dtls", "alice")
        .await
        .expect("alice joins");
    let send = a.create_send_transport().await.expect("send transport");
    let video = common::produce(&send, MediaKind::Video, "video/VP8").await;
    let b = Peer::join(&url, "dtls", "bob").await.expect("bob joins");
    let recv = b.create_recv_transport().await.expect("recv transport");
    let video_in = recv.consume(video.id()).await.expect("consume vp8");
    within("send transport connects", 10, send.wait_connected())
        .await
        .expect("send transport connected");
    within("recv transport connects", 10, recv.wait_connected())
        .await
        .expect("recv transport connected");
    video_in.resume().await.expect("resume vp8");

    let video = Arc::new(video);
    let sent = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (keyframe_wanted, watcher) = watch_keyframe_requests(video.clone());
    let sender = {
        let (video, sent, stop) = (video.clone(), sent.clone(), stop.clone());
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
    let (frames_tx, mut frames) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(p) = video_in.read_rtp().await {
            let counter = vp8_counter(&p.payload).expect("vp8 payload intact");
            if frames_tx.send(counter).is_err() {
                break;
            }
        }
    });
    within("B receives the first frame", 10, frames.recv())
        .await
        .expect("B's reader is running");

    // Evil peer C announces the fingerprint of one certificate and handshakes with another.
    let mut c = RawTransport::open(&url, "dtls", "carol").await;
    let announced = DtlsCertificate::generate().expect("a certificate");
    let presented = Arc::new(DtlsCertificate::generate().expect("another certificate"));
    let announced_sha256 = sha256(&announced);
    assert!(
        !announced_sha256.matches(presented.der()),
        "two fresh certificates must differ"
    );
    c.connect(announced_sha256).await;
    let (failed, client_state) = c.handshake(presented).await;
    assert_eq!(
        failed["dtlsState"], "failed",
        "C announced another certificate's fingerprint: {failed}"
    );
    assert_ne!(
        client_state,
        DtlsState::Connected,
        "the evil handshake must not complete"
    );
    assert_eq!(
        failed["iceState"], "completed",
        "ICE itself succeeded: {failed}"
    );
    let transport_id = c.id.clone();
    let mut c = c.ws;

    // A → B keeps flowing after the failure.
    let sent_at_failure = sent.load(Ordering::Relaxed);
    within("B receives frames sent after C's DTLS failure", 10, async {
        while let Some(counter) = frames.recv().await {
            if counter > sent_at_failure + 10 {
                return;
            }
        }
        panic!("B's consumer ended after C's DTLS failure");
    })
    .await;
    for (who, peer, transport) in [("A", &a, send.id()), ("B", &b, recv.id())] {
        let stats = within(
            "getTransportStats",
            10,
            peer.signaling()
                .request("getTransportStats", json!({"transportId": transport})),
        )
        .await
        .expect("getTransportStats");
        assert_eq!(
            stats["stats"][0]["dtlsState"], "connected",
            "{who}'s transport after C's failure: {stats}"
        );
    }

    // The server is alive and C's signaling still works.
    let health = server
        .get("/health")
        .await
        .expect("/health answers after the DTLS failure");
    assert_eq!(health["status"], "ok", "/health: {health}");
    c.assert_usable("its transport's DTLS failure").await;
    let stats = c
        .ok("getTransportStats", json!({"transportId": transport_id}))
        .await;
    assert_eq!(
        stats["stats"][0]["dtlsState"], "failed",
        "C's transport stats: {stats}"
    );

    stop.store(true, Ordering::Relaxed);
    within("the sender stops", 5, sender)
        .await
        .expect("sender task");
    watcher.abort();
    reader.abort();
}
