//! (f) Security and limits: access tokens checked at the WebSocket handshake and against
//! every grant, per-peer / per-room / per-server quotas, the per-connection request rate and
//! the invalid-frame budget. Each limit answers its error code and changes nothing else.
//!
//! Signaling is spoken by hand over raw WebSockets (protoo envelope in JSON), so that every
//! answer can be checked exactly. Tokens are minted with the shipped `ferrosoup token`
//! command; only the expired one is signed in-process (the command cannot date a token in
//! the past).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};

use common::*;

const SECRET: &str = "integration-test-secret-of-32-bytes+";

// ----- room steps over a raw protoo connection -------------------------------------------

/// The steps of these tests' peers on a [`Ws`].
trait Steps {
    /// `createRoom` + `joinRoom` (with `peerId` when given) with the router's capabilities;
    /// returns the `joinRoom` answer.
    async fn join(&mut self, room: &str, peer_id: Option<&str>) -> Value;
    /// `createTransport` in a direction; returns its id.
    async fn transport(&mut self, direction: &str) -> String;
    /// `produce` of a VP8 stream with this SSRC on `transport`; returns the producer id.
    async fn produce(&mut self, transport: &str, ssrc: u32) -> String;
    /// `consume` of `producer` on `transport`; returns the consumer id.
    async fn consume(&mut self, transport: &str, producer: &str) -> String;
}

impl Steps for Ws {
    async fn join(&mut self, room: &str, peer_id: Option<&str>) -> Value {
        let caps = self.ok("createRoom", json!({"roomId": room})).await["rtpCapabilities"].clone();
        let mut data = json!({"roomId": room, "rtpCapabilities": caps});
        if let Some(p) = peer_id {
            data["peerId"] = json!(p);
        }
        self.ok("joinRoom", data).await
    }

    async fn transport(&mut self, direction: &str) -> String {
        id_of(
            &self
                .ok("createTransport", json!({"direction": direction}))
                .await,
        )
    }

    async fn produce(&mut self, transport: &str, ssrc: u32) -> String {
        id_of(&self.ok("produce", produce_data(transport, ssrc)).await)
    }

    async fn consume(&mut self, transport: &str, producer: &str) -> String {
        id_of(
            &self
                .ok(
                    "consume",
                    json!({"transportId": transport, "producerId": producer}),
                )
                .await,
        )
    }
}

/// The `id` of an answer.
fn id_of(data: &Value) -> String {
    data["id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| panic!("answer without id: {data}"))
        .to_owned()
}

/// `produce` data: one VP8 encoding with this SSRC (payload type 96), the SSRC as its mid.
fn produce_data(transport: &str, ssrc: u32) -> Value {
    json!({
        "transportId": transport,
        "kind": "video",
        "rtpParameters": {
            "mid": ssrc.to_string(),
            "codecs": [{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000, "parameters": {}, "rtcpFeedback": []}],
            "headerExtensions": [],
            "encodings": [{"ssrc": ssrc}],
            "rtcp": {"cname": "security"}
        }
    })
}

// ----- tokens and handshakes --------------------------------------------------------------

/// Runs `ferrosoup token --room ROOM --peer PEER FLAGS...` with `AUTH_SECRET=secret` and
/// returns the token it prints.
fn cli_token(secret: &str, room: &str, peer: &str, flags: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrosoup"))
        .env("AUTH_SECRET", secret)
        .env("RUST_LOG", "error")
        .args(["token", "--room", room, "--peer", peer])
        .args(flags)
        .output()
        .expect("run `ferrosoup token`");
    assert!(
        out.status.success(),
        "`ferrosoup token` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)
        .expect("the token is UTF-8")
        .trim()
        .to_owned();
    assert_eq!(
        token.split('.').count(),
        3,
        "`ferrosoup token` printed no JWT: {token:?}"
    );
    token
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// A server requiring tokens signed with [`SECRET`].
async fn secured_server() -> TestServer {
    TestServer::start_with(1, &[("SESSION_GRACE", "0"), ("AUTH_SECRET", SECRET)]).await
}

/// `ws://…/ws?token=TOKEN`.
fn with_token(server: &TestServer, token: &str) -> String {
    format!("{}?token={token}", server.ws_url())
}

/// The rooms' ids in `/api/rooms`.
async fn room_ids(server: &TestServer) -> BTreeSet<String> {
    let rooms = server.get("/api/rooms").await.expect("/api/rooms answers");
    rooms["rooms"]
        .as_array()
        .unwrap_or_else(|| panic!("/api/rooms without rooms: {rooms}"))
        .iter()
        .map(|r| r["roomId"].as_str().expect("roomId").to_owned())
        .collect()
}

/// Per peer of a room: (transports, producers, consumers) as `/api/rooms/{room}` lists them.
async fn peer_counts(server: &TestServer, room: &str) -> BTreeMap<String, [usize; 3]> {
    let r = server
        .get(&format!("/api/rooms/{room}"))
        .await
        .expect("/api/rooms/{room} answers");
    let len = |v: &Value| v.as_array().map_or(0, Vec::len);
    r["peers"]
        .as_array()
        .unwrap_or_else(|| panic!("room {room} has no peers array: {r}"))
        .iter()
        .map(|p| {
            (
                p["peerId"].as_str().expect("peerId").to_owned(),
                [
                    len(&p["transports"]),
                    len(&p["producers"]),
                    len(&p["consumers"]),
                ],
            )
        })
        .collect()
}

/// The workers' object counts (transports, producers, consumers, routers).
async fn object_counts(server: &TestServer) -> [u64; 4] {
    [
        server.counter("transports").await,
        server.counter("producers").await,
        server.counter("consumers").await,
        server.counter("routers").await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_at_the_handshake_and_bind_room_and_peer() {
    let server = secured_server().await;

    // Refused before the upgrade: no token, empty token, wrong secret, expired, garbage.
    let wrong_secret = cli_token("another-secret-also-32-bytes-long!", "main", "alice", &[]);
    let expired = ferrosoup_signal::auth::mint(
        &ferrosoup_signal::Claims {
            sub: "alice".into(),
            room: "main".into(),
            can_publish: true,
            can_subscribe: true,
            can_publish_data: true,
            exp: unix_now() - 3600,
            nbf: None,
            aud: None,
            iss: None,
        },
        SECRET,
    )
    .expect("sign an expired token");
    for (what, url) in [
        ("no token", server.ws_url()),
        ("an empty token", with_token(&server, "")),
        (
            "a token of another secret",
            with_token(&server, &wrong_secret),
        ),
        ("an expired token", with_token(&server, &expired)),
        ("garbage", with_token(&server, "not.a.jwt")),
        ("a truncated token", {
            let good = cli_token(SECRET, "main", "alice", &[]);
            with_token(&server, &good[..good.len() - 3])
        }),
    ] {
        assert_eq!(
            handshake_status(&url).await,
            401,
            "handshake with {what} must be refused with HTTP 401"
        );
    }
    assert!(
        room_ids(&server).await.is_empty(),
        "refused handshakes created rooms"
    );

    // The minted token admits to its room; the peer id defaults to the token's subject.
    let alice_token = cli_token(SECRET, "main", "alice", &["--ttl", "600"]);
    let mut alice = Ws::connect(&with_token(&server, &alice_token)).await;
    let joined = alice.join("main", None).await;
    assert_eq!(
        joined["peerId"], "alice",
        "joinRoom without peerId must use the token's sub: {joined}"
    );

    // Another room or another peer id → 403; the connection stays usable and may then join
    // as the token says.
    let bob_token = cli_token(SECRET, "main", "bob", &[]);
    let mut bob = Ws::connect(&with_token(&server, &bob_token)).await;
    let (code, reason) = bob
        .fail("joinRoom", json!({"roomId": "elsewhere", "peerId": "bob"}))
        .await;
    assert_eq!(code, 403, "joinRoom to another room: {reason}");
    let (code, reason) = bob.fail("joinRoom", json!({"roomId": "elsewhere"})).await;
    assert_eq!(
        code, 403,
        "joinRoom to another room without peerId: {reason}"
    );
    let (code, reason) = bob
        .fail("joinRoom", json!({"roomId": "main", "peerId": "mallory"}))
        .await;
    assert_eq!(
        code, 403,
        "joinRoom with a peerId that is not sub: {reason}"
    );
    let (code, reason) = bob
        .fail("joinRoom", json!({"roomId": "main", "peerId": "alice"}))
        .await;
    assert_eq!(
        code, 403,
        "joinRoom as another token's peer must be 403: {reason}"
    );
    bob.assert_usable("refused joinRoom requests").await;
    assert_eq!(
        room_ids(&server).await,
        BTreeSet::from(["main".to_owned()]),
        "a refused joinRoom left a room behind"
    );
    assert_eq!(
        peer_counts(&server, "main")
            .await
            .keys()
            .collect::<Vec<_>>(),
        ["alice"],
        "a refused joinRoom added a peer"
    );
    let joined = bob.join("main", Some("bob")).await;
    assert_eq!(joined["peerId"], "bob");
    assert_eq!(
        peer_counts(&server, "main")
            .await
            .keys()
            .collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    alice.assert_usable("another peer joined").await;

    // The command refuses to mint without a secret.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrosoup"))
        .env_remove("AUTH_SECRET")
        .env("RUST_LOG", "error")
        .args(["token", "--room", "main", "--peer", "x"])
        .output()
        .expect("run `ferrosoup token`");
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "`ferrosoup token` without AUTH_SECRET must fail and print nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_subscribe_grants_are_enforced() {
    let server = secured_server().await;
    let connect =
        |peer: &str, flags: &[&str]| with_token(&server, &cli_token(SECRET, "grants", peer, flags));

    // A full peer with a producer, a viewer that may not publish, a speaker that may not
    // subscribe.
    let mut full = Ws::connect(&connect("full", &[])).await;
    full.join("grants", None).await;
    let full_send = full.transport("send").await;
    let full_producer = full.produce(&full_send, 1111).await;

    let mut viewer = Ws::connect(&connect("viewer", &["--no-publish"])).await;
    viewer.join("grants", None).await;
    let viewer_send = viewer.transport("send").await;
    let viewer_recv = viewer.transport("recv").await;
    let (code, reason) = viewer
        .fail("produce", produce_data(&viewer_send, 2222))
        .await;
    assert_eq!(code, 403, "produce without canPublish: {reason}");
    viewer.consume(&viewer_recv, &full_producer).await;

    let mut speaker = Ws::connect(&connect("speaker", &["--no-subscribe"])).await;
    speaker.join("grants", None).await;
    let speaker_send = speaker.transport("send").await;
    let speaker_recv = speaker.transport("recv").await;
    let (code, reason) = speaker
        .fail(
            "consume",
            json!({"transportId": speaker_recv, "producerId": full_producer}),
        )
        .await;
    assert_eq!(code, 403, "consume without canSubscribe: {reason}");
    let speaker_producer = speaker.produce(&speaker_send, 3333).await;

    // Others may consume what the speaker publishes.
    let full_recv = full.transport("recv").await;
    full.consume(&full_recv, &speaker_producer).await;
    viewer.consume(&viewer_recv, &speaker_producer).await;

    assert_eq!(
        peer_counts(&server, "grants").await,
        BTreeMap::from([
            ("full".to_owned(), [2, 1, 1]),
            ("viewer".to_owned(), [2, 0, 2]),
            ("speaker".to_owned(), [2, 1, 0]),
        ]),
        "refused produce/consume must create nothing"
    );
    assert_eq!(
        object_counts(&server).await,
        [6, 2, 3, 1],
        "worker objects (transports, producers, consumers, routers)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_data_grant_is_enforced() {
    let server = secured_server().await;
    let connect =
        |peer: &str, flags: &[&str]| with_token(&server, &cli_token(SECRET, "data", peer, flags));
    let caps = json!({"numStreams": {"OS": 1024, "MIS": 1024}});
    let stream = json!({"streamId": 1});

    let mut muted = Ws::connect(&connect("muted", &["--no-publish-data"])).await;
    muted.join("data", None).await;
    let send = muted
        .ok(
            "createTransport",
            json!({"direction": "send", "sctpCapabilities": caps}),
        )
        .await;
    let (code, reason) = muted
        .fail(
            "produceData",
            json!({"transportId": send["id"], "sctpStreamParameters": stream}),
        )
        .await;
    assert_eq!(code, 403, "produceData without canPublishData: {reason}");
    assert_eq!(reason, "the token does not allow publishing data");

    // The same request with the grant creates a data producer the muted peer may consume.
    let mut chatty = Ws::connect(&connect("chatty", &[])).await;
    chatty.join("data", None).await;
    let send = chatty
        .ok(
            "createTransport",
            json!({"direction": "send", "sctpCapabilities": caps}),
        )
        .await;
    let produced = chatty
        .ok(
            "produceData",
            json!({"transportId": send["id"], "sctpStreamParameters": stream}),
        )
        .await;
    let recv = muted
        .ok(
            "createTransport",
            json!({"direction": "recv", "sctpCapabilities": caps}),
        )
        .await;
    muted
        .ok(
            "consumeData",
            json!({"transportId": recv["id"], "dataProducerId": produced["id"]}),
        )
        .await;
    assert!(
        eventually(5, async || {
            server.counter("data_producers").await == 1
                && server.counter("data_consumers").await == 1
        })
        .await,
        "one data producer and one data consumer in the worker counters"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_connections_need_no_token() {
    let server = TestServer::start(1).await;
    let mut alice = Ws::connect(&server.ws_url()).await;
    alice.join("open", Some("alice")).await;
    let send = alice.transport("send").await;
    alice.produce(&send, 4444).await;
    // A token is not needed, and one that would not verify is not looked at.
    let mut bob = Ws::connect(&with_token(&server, "not.a.jwt")).await;
    bob.join("open", Some("bob")).await;
    let recv = bob.transport("recv").await;
    let producers = bob.ok("getProducers", json!({})).await;
    let producer = producers["producers"][0]["producerId"]
        .as_str()
        .unwrap_or_else(|| panic!("bob sees no producer: {producers}"))
        .to_owned();
    bob.consume(&recv, &producer).await;
}

// ----- limits ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_peer_quotas_answer_429_and_change_nothing() {
    let server = TestServer::start_with(
        1,
        &[
            ("SESSION_GRACE", "0"),
            ("MAX_TRANSPORTS_PER_PEER", "2"),
            ("MAX_PRODUCERS_PER_PEER", "2"),
            ("MAX_CONSUMERS_PER_PEER", "2"),
        ],
    )
    .await;
    let url = server.ws_url();
    let room = "quota";
    // Bob has two producers, carol one.
    let mut bob = Ws::connect(&url).await;
    bob.join(room, Some("bob")).await;
    let bob_send = bob.transport("send").await;
    let bob_producers = [
        bob.produce(&bob_send, 1001).await,
        bob.produce(&bob_send, 1002).await,
    ];
    let mut carol = Ws::connect(&url).await;
    carol.join(room, Some("carol")).await;
    let carol_send = carol.transport("send").await;
    let carol_producer = carol.produce(&carol_send, 2001).await;

    let mut alice = Ws::connect(&url).await;
    alice.join(room, Some("alice")).await;
    let alice_send = alice.transport("send").await;
    let alice_recv = alice.transport("recv").await;

    // Each refused request leaves the room and the workers exactly as they were.
    async fn refused(server: &TestServer, ws: &mut Ws, method: &str, data: Value, what: &str) {
        let before = (
            peer_counts(server, "quota").await,
            object_counts(server).await,
        );
        let (code, reason) = ws.fail(method, data).await;
        assert_eq!(code, 429, "{what}: {reason}");
        assert!(
            reason.contains("limit reached"),
            "{what}: reason {reason:?} does not say `limit reached`"
        );
        let after = (
            peer_counts(server, "quota").await,
            object_counts(server).await,
        );
        assert_eq!(before, after, "{what} changed the room or the workers");
        ws.assert_usable(what).await;
    }

    refused(
        &server,
        &mut alice,
        "createTransport",
        json!({"direction": "recv"}),
        "a third transport",
    )
    .await;

    let alice_producers = [
        alice.produce(&alice_send, 3001).await,
        alice.produce(&alice_send, 3002).await,
    ];
    refused(
        &server,
        &mut alice,
        "produce",
        produce_data(&alice_send, 3003),
        "a third producer",
    )
    .await;

    let alice_consumer = alice.consume(&alice_recv, &bob_producers[0]).await;
    alice.consume(&alice_recv, &bob_producers[1]).await;
    refused(
        &server,
        &mut alice,
        "consume",
        json!({"transportId": alice_recv, "producerId": carol_producer}),
        "a third consumer",
    )
    .await;

    assert_eq!(
        peer_counts(&server, room).await,
        BTreeMap::from([
            ("alice".to_owned(), [2, 2, 2]),
            ("bob".to_owned(), [1, 2, 0]),
            ("carol".to_owned(), [1, 1, 0]),
        ])
    );

    // Quotas count live objects: closing one makes room for another.
    alice
        .ok("closeProducer", json!({"producerId": alice_producers[0]}))
        .await;
    alice.produce(&alice_send, 3004).await;
    alice
        .ok("closeConsumer", json!({"consumerId": alice_consumer}))
        .await;
    alice.consume(&alice_recv, &carol_producer).await;
    alice
        .ok("closeTransport", json!({"transportId": alice_recv}))
        .await;
    alice.transport("recv").await;

    // Other peers have their own quotas.
    let bob_recv = bob.transport("recv").await;
    bob.consume(&bob_recv, &alice_producers[1]).await;
    bob.consume(&bob_recv, &carol_producer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_per_room_and_rooms_per_server_are_limited() {
    let server = TestServer::start_with(
        1,
        &[
            ("SESSION_GRACE", "0"),
            ("MAX_PEERS_PER_ROOM", "2"),
            ("MAX_ROOMS", "2"),
        ],
    )
    .await;
    let url = server.ws_url();
    let mut a1 = Ws::connect(&url).await;
    a1.join("full-a", Some("a1")).await;
    let mut a2 = Ws::connect(&url).await;
    a2.join("full-a", Some("a2")).await;

    // A third peer in a room of two → 429, and it is not added.
    let mut a3 = Ws::connect(&url).await;
    let (code, reason) = a3
        .fail("joinRoom", json!({"roomId": "full-a", "peerId": "a3"}))
        .await;
    assert_eq!(code, 429, "third peer in a room of two: {reason}");
    assert_eq!(
        peer_counts(&server, "full-a")
            .await
            .keys()
            .collect::<Vec<_>>(),
        ["a1", "a2"],
        "a refused joinRoom added a peer"
    );
    a3.assert_usable("a refused joinRoom").await;

    // A second room is fine; a third → 503 "server full", by createRoom or joinRoom.
    a3.ok("createRoom", json!({"roomId": "full-b"})).await;
    let mut a4 = Ws::connect(&url).await;
    let (code, reason) = a4.fail("createRoom", json!({"roomId": "full-c"})).await;
    assert_eq!(code, 503, "third room: {reason}");
    assert!(
        reason.contains("server full"),
        "third room: reason {reason:?} does not say `server full`"
    );
    let (code, reason) = a4
        .fail("joinRoom", json!({"roomId": "full-c", "peerId": "a4"}))
        .await;
    assert_eq!(code, 503, "joinRoom creating a third room: {reason}");
    assert_eq!(
        room_ids(&server).await,
        BTreeSet::from(["full-a".to_owned(), "full-b".to_owned()]),
        "refused room creations left rooms behind"
    );
    assert_eq!(
        server.counter("routers").await,
        2,
        "a refused room creation left a router"
    );
    // Existing rooms are still served.
    a4.ok("createRoom", json!({"roomId": "full-a"})).await;

    // A seat freed by a leaving peer can be taken.
    a1.ok("leaveRoom", json!({})).await;
    let joined = a3
        .ok("joinRoom", json!({"roomId": "full-a", "peerId": "a3"}))
        .await;
    assert_eq!(joined["peerId"], "a3");
    assert_eq!(
        peer_counts(&server, "full-a")
            .await
            .keys()
            .collect::<Vec<_>>(),
        ["a2", "a3"]
    );

    // A room freed by its last user can be replaced: a3 leaves and disconnects, which closes
    // the room it created and never joined.
    a3.ok("leaveRoom", json!({})).await;
    drop(a3);
    assert!(
        eventually(10, async || !room_ids(&server).await.contains("full-b")).await,
        "timed out after 10s: the empty room full-b closes"
    );
    a4.ok("createRoom", json!({"roomId": "full-c"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_rate_is_limited_per_connection() {
    // 20 requests per second sustained, bursts of 80.
    let server = TestServer::start_with(
        1,
        &[("SESSION_GRACE", "0"), ("MAX_REQUESTS_PER_SECOND", "20")],
    )
    .await;
    let url = server.ws_url();
    let mut noisy = Ws::connect(&url).await;
    let mut calm = Ws::connect(&url).await;

    // The calm connection pings (one at a time) while the noisy one bursts 300 pings.
    let calm_task = tokio::spawn(async move {
        let mut answers = Vec::new();
        for _ in 0..20 {
            answers.push(calm.request("ping", json!({})).await);
        }
        (calm, answers)
    });
    let mut ids = Vec::new();
    for _ in 0..300 {
        ids.push(noisy.send_request("ping", json!({})).await);
    }
    let (mut ok, mut limited) = (0, 0);
    for id in ids {
        let response = noisy.response(id).await;
        if response["ok"] == true {
            ok += 1;
        } else {
            let (code, reason) = error_of(&response);
            assert_eq!(code, 429, "ping {id} of the burst: {reason}");
            limited += 1;
        }
    }
    assert!(
        limited > 0,
        "300 pings at once with a rate of 20/s were all answered 200"
    );
    assert!(
        ok >= 80,
        "the first burst (80) must be served: {ok} of 300 answered 200"
    );
    let (mut calm, answers) = within("the calm connection's pings", 30, calm_task)
        .await
        .expect("calm task");
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(
            a["ok"], true,
            "ping {i} of the calm connection during the burst: {a}"
        );
    }
    calm.assert_usable("another connection's burst").await;

    // After a pause the noisy connection is served again: it retries once per token the
    // limiter refills (20 per second).
    within("the rate-limited connection recovers", 10, async {
        while noisy.request("ping", json!({})).await["ok"] != true {
            tokio::time::sleep(Duration::from_secs(1) / 20).await;
        }
    })
    .await;

    // Refused requests are not executed: of 150 createRoom at once, exactly those answered
    // 200 created a room.
    let mut creator = Ws::connect(&url).await;
    let mut sent = Vec::new();
    for i in 0..150 {
        let room = format!("rate-{i}");
        sent.push((
            creator
                .send_request("createRoom", json!({"roomId": room}))
                .await,
            room,
        ));
    }
    let mut created = BTreeSet::new();
    for (id, room) in sent {
        let response = creator.response(id).await;
        if response["ok"] == true {
            created.insert(room);
        } else {
            let (code, reason) = error_of(&response);
            assert_eq!(code, 429, "createRoom {room}: {reason}");
        }
    }
    assert!(
        created.len() < 150,
        "150 createRoom at once were all served"
    );
    let rooms: BTreeSet<String> = room_ids(&server)
        .await
        .into_iter()
        .filter(|r| r.starts_with("rate-"))
        .collect();
    assert_eq!(
        rooms, created,
        "rooms open ≠ createRoom requests answered 200"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_100_invalid_frames_close_with_1008() {
    let server = TestServer::start(1).await;
    let url = server.ws_url();
    let mut other = Ws::connect(&url).await;
    other.join("garbage", Some("other")).await;
    let mut noisy = Ws::connect(&url).await;
    noisy.join("garbage", Some("noisy")).await;

    // 100 invalid frames are tolerated (half unreadable JSON, half envelopes with an id,
    // which get a 400).
    for i in 0..50u64 {
        noisy.send_text(format!("{{garbage {i}")).await;
        let id = 1000 + i;
        noisy
            .send_text(json!({"id": id, "method": "ping"}).to_string())
            .await;
        let (code, _) = error_of(&noisy.response(id).await);
        assert_eq!(code, 400, "invalid envelope {id}");
    }
    noisy.assert_usable("100 invalid frames").await;
    // The 101st closes the connection with 1008 (policy violation).
    noisy.send_text("{garbage 101".to_owned()).await;
    assert_eq!(
        noisy.closed().await,
        Some(1008),
        "close code after 101 invalid frames"
    );
    // Only that connection: the other peer and new connections are served.
    other.assert_usable("another connection's garbage").await;
    let mut fresh = Ws::connect(&url).await;
    fresh.assert_usable("a new connection").await;
}
