//! The `p2pSignal` relay (docs/protocol.md, "p2pSignal"): a payload reaches the target
//! peer of the same room once, numbered per (sender, target); duplicates are answered and
//! not relayed; the payload size and the rate are bounded with 400 / 429; an unknown or
//! departed target, the sender itself and a peer of another room are clear errors; a
//! payload sent while the target's WebSocket is down arrives when it resumes.

mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::*;

/// `createRoom` + `joinRoom` as `peer` in `room`; returns the `joinRoom` answer.
async fn join(ws: &mut Ws, room: &str, peer: &str) -> Value {
    ws.ok("createRoom", json!({"roomId": room})).await;
    ws.ok("joinRoom", json!({"roomId": room, "peerId": peer}))
        .await
}

/// Two peers `a` and `b` in `room`.
async fn pair(server: &TestServer, room: &str) -> (Ws, Ws) {
    let mut a = Ws::connect(&server.ws_url()).await;
    join(&mut a, room, "a").await;
    let mut b = Ws::connect(&server.ws_url()).await;
    join(&mut b, room, "b").await;
    (a, b)
}

/// No `p2pSignal` notification arrives at `ws` for a while.
async fn assert_no_signal(ws: &mut Ws, after: &str) {
    let extra = ws
        .notification_within(Duration::from_millis(300), "p2pSignal", |_| true)
        .await;
    assert_eq!(extra, None, "a p2pSignal arrived after {after}");
}

#[tokio::test]
async fn payloads_reach_the_target_once_in_order_with_their_numbers() {
    let server = TestServer::start(1).await;
    let (mut a, mut b) = pair(&server, "p2p-relay").await;

    let offer = json!({"description": {"type": "offer", "sdp": "v=0\r\n"}});
    let answer = a
        .ok("p2pSignal", json!({"toPeerId": "b", "payload": offer}))
        .await;
    assert_eq!(answer, json!({"seq": 1, "duplicate": false}));
    let got = b.notification("p2pSignal", |_| true).await;
    assert_eq!(got, json!({"fromPeerId": "a", "seq": 1, "payload": offer}));

    // The sender's own numbers: a gap is fine, a repeat is a duplicate, not relayed.
    let candidate = json!({"candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}});
    let first = a
        .ok(
            "p2pSignal",
            json!({"toPeerId": "b", "seq": 5, "payload": candidate}),
        )
        .await;
    assert_eq!(first, json!({"seq": 5, "duplicate": false}));
    let again = a
        .ok(
            "p2pSignal",
            json!({"toPeerId": "b", "seq": 5, "payload": candidate}),
        )
        .await;
    assert_eq!(again, json!({"seq": 5, "duplicate": true}));
    let older = a
        .ok(
            "p2pSignal",
            json!({"toPeerId": "b", "seq": 2, "payload": 1}),
        )
        .await;
    assert_eq!(older, json!({"seq": 2, "duplicate": true}));
    let got = b.notification("p2pSignal", |_| true).await;
    assert_eq!(
        got,
        json!({"fromPeerId": "a", "seq": 5, "payload": candidate})
    );
    assert_no_signal(&mut b, "the duplicates").await;

    // Without seq the server continues after the last number; b → a has its own numbers.
    let next = a
        .ok("p2pSignal", json!({"toPeerId": "b", "payload": "bye"}))
        .await;
    assert_eq!(next, json!({"seq": 6, "duplicate": false}));
    assert_eq!(
        b.notification("p2pSignal", |_| true).await,
        json!({"fromPeerId": "a", "seq": 6, "payload": "bye"})
    );
    let back = b
        .ok(
            "p2pSignal",
            json!({"toPeerId": "a", "payload": {"x": [1, 2]}}),
        )
        .await;
    assert_eq!(back, json!({"seq": 1, "duplicate": false}));
    assert_eq!(
        a.notification("p2pSignal", |_| true).await,
        json!({"fromPeerId": "b", "seq": 1, "payload": {"x": [1, 2]}})
    );
}

#[tokio::test]
async fn bad_targets_and_payloads_get_clear_errors() {
    let server =
        TestServer::start_with(1, &[("SESSION_GRACE", "0"), ("MAX_P2P_SIGNAL_BYTES", "64")]).await;
    let (mut a, mut b) = pair(&server, "p2p-errors").await;
    let mut elsewhere = Ws::connect(&server.ws_url()).await;
    join(&mut elsewhere, "p2p-other-room", "c").await;

    // Before joinRoom: 409 like every room request.
    let mut outside = Ws::connect(&server.ws_url()).await;
    let (code, reason) = outside
        .fail("p2pSignal", json!({"toPeerId": "a", "payload": 1}))
        .await;
    assert_eq!((code, reason.as_str()), (409, "joinRoom first"));

    let (code, reason) = a
        .fail("p2pSignal", json!({"toPeerId": "nobody", "payload": 1}))
        .await;
    assert_eq!(code, 404);
    assert_eq!(reason, "toPeerId: peer \"nobody\" is not in the room");
    // A peer of another room is not reachable.
    let (code, _) = a
        .fail("p2pSignal", json!({"toPeerId": "c", "payload": 1}))
        .await;
    assert_eq!(code, 404);
    let (code, reason) = a
        .fail("p2pSignal", json!({"toPeerId": "a", "payload": 1}))
        .await;
    assert_eq!(
        (code, reason.as_str()),
        (400, "toPeerId: that is the sender")
    );
    let (code, reason) = a
        .fail(
            "p2pSignal",
            json!({"toPeerId": "b", "payload": "x".repeat(63)}),
        )
        .await;
    assert_eq!(
        (code, reason.as_str()),
        (400, "payload: larger than 64 bytes as JSON")
    );
    let (code, reason) = a.fail("p2pSignal", json!({"payload": 1})).await;
    assert_eq!(code, 400);
    assert!(reason.contains("toPeerId"), "{reason}");
    let (code, reason) = a
        .fail(
            "p2pSignal",
            json!({"toPeerId": "b", "seq": 0, "payload": 1}),
        )
        .await;
    assert_eq!((code, reason.as_str()), (400, "seq: must be at least 1"));
    // Nothing was relayed, nothing numbered: the first good one is 1.
    assert_no_signal(&mut b, "refused requests").await;
    assert_no_signal(&mut elsewhere, "a request to another room's peer").await;
    let ok = a
        .ok(
            "p2pSignal",
            json!({"toPeerId": "b", "payload": "x".repeat(62)}),
        )
        .await;
    assert_eq!(ok["seq"], 1);

    // A target that left.
    b.ok("leaveRoom", json!({})).await;
    a.notification("peerLeft", |d| d["peerId"] == "b").await;
    let (code, reason) = a
        .fail("p2pSignal", json!({"toPeerId": "b", "payload": 1}))
        .await;
    assert_eq!(code, 404);
    assert_eq!(reason, "toPeerId: peer \"b\" is not in the room");
    a.assert_usable("the refusals").await;
}

#[tokio::test]
async fn the_rate_is_bounded_and_the_connection_stays_usable() {
    let server = TestServer::start_with(
        1,
        &[("SESSION_GRACE", "0"), ("MAX_P2P_SIGNALS_PER_SECOND", "5")],
    )
    .await;
    let (mut a, mut b) = pair(&server, "p2p-rate").await;
    // Two seconds' worth at once (10), then 429; the requests are sent without waiting, so
    // only a few more tokens come back meanwhile, even on a slow machine (one per 200 ms).
    let mut ids = Vec::new();
    for seq in 1..=30u64 {
        ids.push(
            a.send_request(
                "p2pSignal",
                json!({"toPeerId": "b", "seq": seq, "payload": seq}),
            )
            .await,
        );
    }
    let mut relayed = Vec::new();
    let mut refused = 0;
    for (seq, id) in (1..=30u64).zip(ids) {
        let response = a.response(id).await;
        if response["ok"] == true {
            relayed.push(seq);
        } else {
            let (code, reason) = error_of(&response);
            assert_eq!((code, reason.as_str()), (429, "p2pSignal: rate limit"));
            refused += 1;
        }
    }
    assert!(
        (10..=15).contains(&relayed.len()) && refused >= 15,
        "relayed {relayed:?}, refused {refused}"
    );
    assert_eq!(relayed[..10], (1..=10).collect::<Vec<_>>());
    for seq in &relayed {
        let got = b.notification("p2pSignal", |_| true).await;
        assert_eq!(got["seq"], *seq);
    }
    assert_no_signal(&mut b, "the refused ones").await;
    // Once the rate allows, the next number is relayed.
    let retry = within("the rate refills", 10, async {
        loop {
            let r = a
                .request(
                    "p2pSignal",
                    json!({"toPeerId": "b", "seq": 31, "payload": 31}),
                )
                .await;
            if r["ok"] == true {
                return r["data"].clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(retry, json!({"seq": 31, "duplicate": false}));
    a.assert_usable("the rate limit").await;
}

#[tokio::test]
async fn a_payload_for_a_dropped_peer_arrives_when_it_resumes() {
    let server = TestServer::start_with(1, &[("SESSION_GRACE", "10")]).await;
    let mut a = Ws::connect(&server.ws_url()).await;
    join(&mut a, "p2p-resume", "a").await;
    let mut b = Ws::connect(&server.ws_url()).await;
    let token = join(&mut b, "p2p-resume", "b").await["sessionToken"]
        .as_str()
        .expect("a sessionToken")
        .to_owned();
    b.client.close().await.expect("close b's WebSocket");
    drop(b);
    // Once the server has let go of b's connection, what is sent to b is queued for the
    // resume (before, it would go to the closing connection).
    let detached = eventually(5, async || {
        let Some(rooms) = server.get("/api/rooms").await else {
            return false;
        };
        rooms["rooms"].as_array().into_iter().flatten().any(|r| {
            r["roomId"] == "p2p-resume"
                && r["peers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["peerId"] == "b" && p["connected"] == false)
        })
    })
    .await;
    assert!(detached, "the server still shows b connected");
    let sent = a
        .ok(
            "p2pSignal",
            json!({"toPeerId": "b", "payload": "while away"}),
        )
        .await;
    assert_eq!(sent["seq"], 1);
    let mut b = Ws::connect(&format!("{}?resume={token}", server.ws_url())).await;
    let got = b.notification("p2pSignal", |_| true).await;
    assert_eq!(
        got,
        json!({"fromPeerId": "a", "seq": 1, "payload": "while away"})
    );
}
