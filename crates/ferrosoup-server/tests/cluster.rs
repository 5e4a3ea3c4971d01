//! Two real `ferrosoup` processes sharing one real `redis-server` (the Debian package) on
//! loopback form one cluster: peers on either node see each other in `joinRoom` and through
//! `peerJoined` / `peerLeft`, room and node limits count the right things, `/api/nodes` and
//! `/api/rooms` span the cluster, and a node killed with SIGKILL is reaped: its peers leave
//! on the other node and Redis keeps no key naming it.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{TestServer, Ws, eventually, free_tcp_port, within};

/// NODE_TIMEOUT of the test nodes, seconds.
const NODE_TIMEOUT: u64 = 2;

/// A `redis-server` on a free loopback port, without persistence; killed when dropped.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    async fn start() -> Self {
        let port = free_tcp_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-server (Debian package redis-server; .ci/run installs it)");
        let server = Self { child, port };
        let up = eventually(5, async || {
            let Ok(mut conn) = server.connection().await else {
                return false;
            };
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok()
        })
        .await;
        assert!(up, "redis-server did not answer PING on port {port}");
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await
    }

    /// Every key whose name contains `part` (SCAN, as an operator would look).
    async fn keys_naming(&self, part: &str) -> Vec<String> {
        let mut conn = self.connection().await.expect("redis connection");
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("*{part}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .expect("SCAN");
            keys.extend(batch);
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    }

    async fn all_keys(&self) -> Vec<String> {
        let mut conn = self.connection().await.expect("redis connection");
        redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .expect("KEYS")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A unique node id for this test run.
fn node_id(name: &str) -> String {
    format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// A node of the cluster on `redis`.
async fn node(redis: &RedisServer, id: &str, extra: &[(&str, &str)]) -> TestServer {
    let timeout = NODE_TIMEOUT.to_string();
    let url = redis.url();
    let mut env = vec![
        ("SESSION_GRACE", "0"),
        ("REDIS_URL", url.as_str()),
        ("NODE_ID", id),
        ("NODE_TIMEOUT", timeout.as_str()),
    ];
    env.extend_from_slice(extra);
    TestServer::start_with(1, &env).await
}

async fn join(server: &TestServer, room: &str, peer: &str) -> (Ws, Value) {
    let mut ws = Ws::connect(&server.ws_url()).await;
    let answer = ws
        .ok(
            "joinRoom",
            json!({"roomId": room, "peerId": peer, "displayName": peer.to_uppercase()}),
        )
        .await;
    (ws, answer)
}

fn peer_ids(answer: &Value) -> Vec<String> {
    let mut ids: Vec<String> = answer["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| p["peerId"].as_str().expect("peerId").to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_on_two_nodes_share_a_room() {
    let redis = RedisServer::start().await;
    let (a_id, b_id) = (node_id("node-a"), node_id("node-b"));
    let a = node(&redis, &a_id, &[("MAX_PEERS_PER_ROOM", "3")]).await;
    let b = node(
        &redis,
        &b_id,
        &[("MAX_PEERS_PER_ROOM", "3"), ("MAX_NODE_PEERS", "1")],
    )
    .await;

    // Both nodes are registered, each with its load.
    let nodes = a.get("/api/nodes").await.expect("/api/nodes");
    let mut listed: Vec<&str> = nodes["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["nodeId"].as_str().expect("nodeId"))
        .collect();
    listed.sort();
    assert_eq!(listed, [a_id.as_str(), b_id.as_str()], "{nodes}");
    assert_eq!(nodes["node"], a_id.as_str());
    assert!(nodes["nodes"][0]["workers"].as_u64() == Some(1), "{nodes}");

    let (mut alice, answer) = join(&a, "r", "alice").await;
    assert_eq!(peer_ids(&answer), Vec::<String>::new());
    let (mut bob, answer) = join(&b, "r", "bob").await;
    assert_eq!(peer_ids(&answer), ["alice"], "{answer}");
    let listed_alice = &answer["peers"][0];
    assert_eq!(listed_alice["displayName"], "ALICE");
    // Producers on another node are not offered until pipe transports exist.
    assert_eq!(listed_alice["producers"], json!([]));
    let joined = alice
        .notification_within(Duration::from_secs(2), "peerJoined", |d| {
            d["peerId"] == "bob"
        })
        .await
        .expect("alice (node a) hears that bob joined on node b");
    assert_eq!(joined["displayName"], "BOB");

    // Node b serves MAX_NODE_PEERS=1 peer: not ready for more (a load balancer tries a).
    let health = b.get("/health/ready").await.expect("/health/ready");
    assert_eq!(health["status"], "full", "{health}");
    assert_eq!(a.get("/health/ready").await.expect("ready")["status"], "ok");
    let mut copy = Ws::connect(&b.ws_url()).await;
    let (code, reason) = copy
        .fail("joinRoom", json!({"roomId": "r", "peerId": "x"}))
        .await;
    assert_eq!(code, 503, "{reason}");
    assert!(reason.contains("capacity"), "{reason}");
    let mut copy = Ws::connect(&a.ws_url()).await;
    let (code, reason) = copy
        .fail("joinRoom", json!({"roomId": "r", "peerId": "bob"}))
        .await;
    assert_eq!(code, 409, "{reason}");
    // MAX_PEERS_PER_ROOM counts the peers of every node: alice, bob and carol fill it.
    let (mut carol, answer) = join(&a, "r", "carol").await;
    assert_eq!(peer_ids(&answer), ["alice", "bob"], "{answer}");
    bob.notification_within(Duration::from_secs(2), "peerJoined", |d| {
        d["peerId"] == "carol"
    })
    .await
    .expect("bob (node b) hears that carol joined on node a");
    let (code, reason) = copy
        .fail("joinRoom", json!({"roomId": "r", "peerId": "dave"}))
        .await;
    assert_eq!(code, 429, "{reason}");

    // /api/rooms on either node lists the room once with every peer and its node.
    for server in [&a, &b] {
        let rooms = server.get("/api/rooms").await.expect("/api/rooms");
        let rooms = rooms["rooms"].as_array().expect("rooms");
        assert_eq!(rooms.len(), 1, "{rooms:?}");
        let mut peers: Vec<(String, String)> = rooms[0]["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .map(|p| {
                (
                    p["peerId"].as_str().unwrap().into(),
                    p["node"].as_str().unwrap().into(),
                )
            })
            .collect();
        peers.sort();
        assert_eq!(
            peers,
            [
                ("alice".to_owned(), a_id.clone()),
                ("bob".to_owned(), b_id.clone()),
                ("carol".to_owned(), a_id.clone()),
            ]
        );
    }

    // A leave on node b reaches node a's peers (the latency is printed, not asserted).
    let left = Instant::now();
    bob.ok("leaveRoom", json!({})).await;
    for peer in [&mut alice, &mut carol] {
        peer.notification_within(Duration::from_secs(2), "peerLeft", |d| d["peerId"] == "bob")
            .await
            .expect("node a's peers hear that bob left on node b");
    }
    eprintln!("leave on node b → peerLeft on node a: {:?}", left.elapsed());
    // And the other way round.
    let left = Instant::now();
    drop(carol);
    alice
        .notification_within(Duration::from_secs(2), "peerLeft", |d| {
            d["peerId"] == "carol"
        })
        .await
        .expect("alice hears that carol's connection closed");
    eprintln!(
        "carol's WebSocket closed on node a → peerLeft on node a: {:?}",
        left.elapsed()
    );
    drop(alice);
    // Everyone gone: the room is gone from the cluster's keys.
    let empty = eventually(5, async || {
        let rooms = b.get("/api/rooms").await.expect("/api/rooms");
        rooms["rooms"].as_array().is_some_and(|r| r.is_empty())
    })
    .await;
    assert!(empty, "rooms left: {:?}", redis.all_keys().await);
    assert!(redis.keys_naming("room:r").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_reaped_by_the_survivor() {
    let redis = RedisServer::start().await;
    let (a_id, b_id) = (node_id("node-a"), node_id("node-b"));
    let a = node(&redis, &a_id, &[]).await;
    let b = node(&redis, &b_id, &[]).await;

    let (mut alice, _) = join(&a, "r", "alice").await;
    let (_bob, answer) = join(&b, "r", "bob").await;
    assert_eq!(peer_ids(&answer), ["alice"]);
    let (_bert, _) = join(&b, "other", "bert").await;
    alice
        .notification_within(Duration::from_secs(2), "peerJoined", |d| {
            d["peerId"] == "bob"
        })
        .await
        .expect("alice hears that bob joined");
    assert!(!redis.keys_naming(&b_id).await.is_empty());

    let killed = Command::new("kill")
        .args(["-9", &b.pid().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let since = Instant::now();
    alice
        .notification_within(Duration::from_secs(NODE_TIMEOUT + 2), "peerLeft", |d| {
            d["peerId"] == "bob"
        })
        .await
        .expect(
            "the survivor tells alice that bob (on the dead node) left, within NODE_TIMEOUT + 2 s",
        );
    eprintln!(
        "kill -9 of node b → peerLeft on node a: {:?}",
        since.elapsed()
    );
    alice.assert_usable("the other node died").await;

    // No key names the dead node, and its peers are gone from every room.
    let clean = eventually(2, async || redis.keys_naming(&b_id).await.is_empty()).await;
    assert!(
        clean,
        "keys of the dead node left: {:?}",
        redis.keys_naming(&b_id).await
    );
    assert!(
        redis.keys_naming("room:other").await.is_empty(),
        "{:?}",
        redis.all_keys().await
    );
    let nodes = a.get("/api/nodes").await.expect("/api/nodes");
    assert_eq!(nodes["nodes"].as_array().map(Vec::len), Some(1), "{nodes}");
    let room = a.get("/api/rooms/r").await.expect("/api/rooms/r");
    let peers: Vec<&str> = room["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| p["peerId"].as_str().unwrap())
        .collect();
    assert_eq!(peers, ["alice"], "{room}");
    // The room lives on: a new peer on node a sees alice only.
    let (_carol, answer) = join(&a, "r", "carol").await;
    assert_eq!(peer_ids(&answer), ["alice"]);
}

/// `DELETE path` with no body; the HTTP status.
async fn delete(server: &TestServer, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    let req = format!("DELETE {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("an HTTP status line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_close_on_one_node_closes_the_room_on_every_node() {
    let redis = RedisServer::start().await;
    let a = node(&redis, &node_id("node-a"), &[]).await;
    let b = node(&redis, &node_id("node-b"), &[]).await;
    let (_alice, _) = join(&a, "r", "alice").await;
    let (mut bob, answer) = join(&b, "r", "bob").await;
    assert_eq!(peer_ids(&answer), ["alice"]);

    assert_eq!(delete(&a, "/api/rooms/r").await, 204);
    let (notifications, code) = bob.until_closed().await;
    assert_eq!(code, Some(1001));
    assert!(
        notifications
            .iter()
            .any(|n| n["method"] == "roomClosed" && n["data"]["reason"] == "admin"),
        "{notifications:?}"
    );
    let gone = eventually(2, async || {
        redis.keys_naming("room:r").await.is_empty()
            && b.get("/api/rooms").await.expect("/api/rooms")["rooms"] == json!([])
    })
    .await;
    assert!(gone, "{:?}", redis.all_keys().await);
    assert_eq!(delete(&b, "/api/rooms/r").await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_sigterm_leaves_the_cluster_at_once() {
    let redis = RedisServer::start().await;
    // A timeout far beyond the test's waits: only the node's own leaving can explain what
    // the other node sees.
    let slow = [("NODE_TIMEOUT", "60"), ("DRAIN_SECONDS", "0")];
    let a = node(&redis, &node_id("node-a"), &slow).await;
    let b_id = node_id("node-b");
    let b = node(&redis, &b_id, &slow).await;
    let (mut alice, _) = join(&a, "r", "alice").await;
    let (_bob, _) = join(&b, "r", "bob").await;
    alice
        .notification_within(Duration::from_secs(2), "peerJoined", |d| {
            d["peerId"] == "bob"
        })
        .await
        .expect("bob joined");
    let stopped = Command::new("kill")
        .args(["-TERM", &b.pid().to_string()])
        .status()
        .expect("kill");
    assert!(stopped.success());
    alice
        .notification_within(Duration::from_secs(10), "peerLeft", |d| {
            d["peerId"] == "bob"
        })
        .await
        .expect("bob leaves when his node shuts down");
    let clean = eventually(10, async || redis.keys_naming(&b_id).await.is_empty()).await;
    assert!(clean, "{:?}", redis.keys_naming(&b_id).await);
}

/// Runs the binary until it exits (at most 15 s); its exit status and stderr.
fn run_to_exit(env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let port = free_tcp_port().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrosoup"))
        .env("PORT", &port)
        .env("LISTEN_IP", "127.0.0.1")
        .env("NUM_WORKERS", "1")
        .env("RTC_MIN_PORT", "41990")
        .env("RTC_MAX_PORT", "41999")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferrosoup");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            use std::io::Read;
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            return (status, err);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ferrosoup kept running with {env:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_join_the_cluster_does_not_start() {
    // No Redis on that port.
    let nowhere = format!("redis://127.0.0.1:{}/", free_tcp_port());
    let (status, err) = run_to_exit(&[("REDIS_URL", &nowhere)]);
    assert!(!status.success());
    assert!(err.contains("joining the cluster"), "{err}");
    // A node id that a live node has.
    let redis = RedisServer::start().await;
    let id = node_id("twin");
    let _first = node(&redis, &id, &[]).await;
    let url = redis.url();
    let (status, err) = run_to_exit(&[("REDIS_URL", &url), ("NODE_ID", &id)]);
    assert!(!status.success());
    assert!(err.contains("already registered"), "{err}");
    // NODE_ID without REDIS_URL, and an id that would break key names.
    let (status, err) = run_to_exit(&[("NODE_ID", "a")]);
    assert!(
        !status.success() && err.contains("NODE_ID needs REDIS_URL"),
        "{err}"
    );
    let (status, err) = run_to_exit(&[("REDIS_URL", &url), ("NODE_ID", "a:b")]);
    assert!(!status.success() && err.contains("NODE_ID"), "{err}");
    let (status, err) = run_to_exit(&[("PIPE_ANNOUNCED_IP", "10.0.0.2")]);
    assert!(
        !status.success() && err.contains("PIPE_ANNOUNCED_IP needs REDIS_URL"),
        "{err}"
    );
}

/// The median of `joinRoom` round trips (join, then leave) of one connection, `rounds` times.
async fn median_join(server: &TestServer, room: &str, rounds: usize) -> Duration {
    let mut ws = Ws::connect(&server.ws_url()).await;
    let mut took = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let started = Instant::now();
        ws.ok(
            "joinRoom",
            json!({"roomId": room, "peerId": format!("p{i}")}),
        )
        .await;
        took.push(started.elapsed());
        ws.ok("leaveRoom", json!({})).await;
    }
    took.sort();
    took[rounds / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_joins_and_leaves_leave_no_room_behind() {
    let redis = RedisServer::start().await;
    let single = TestServer::start(1).await;
    let a = node(&redis, &node_id("node-a"), &[]).await;
    let b = node(&redis, &node_id("node-b"), &[]).await;
    // Someone stays in each room, so joins do not create it anew.
    let (_s, _) = join(&single, "r", "stays").await;
    let (_on_a, _) = join(&a, "same", "stays").await;
    let (_on_b, _) = join(&b, "other", "stays").await;
    let rounds = 30;
    let alone = median_join(&single, "r", rounds).await;
    let same = median_join(&a, "same", rounds).await;
    let other = median_join(&a, "other", rounds).await;
    // Figures for docs/cluster.md, not assertions.
    eprintln!(
        "joinRoom median of {rounds}: single server {alone:?}, cluster node with the room's \
         other peer on the same node {same:?}, on the other node {other:?}"
    );
    for room in ["same", "other"] {
        let mut peers = redis.connection().await.expect("redis");
        let listed: Vec<String> = redis::cmd("HKEYS")
            .arg(format!("ferrosoup:room:{room}:peers"))
            .query_async(&mut peers)
            .await
            .expect("HKEYS");
        assert_eq!(listed, ["stays"], "room {room}");
    }
    assert!(redis.keys_naming("lock:").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_crosses_nodes_through_a_pipe() {
    use ferrosoup_client::Peer;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    let redis = RedisServer::start().await;
    let a = node(&redis, &node_id("node-a"), &[]).await;
    let b = node(&redis, &node_id("node-b"), &[]).await;

    // Alice publishes on node A.
    let common::Publishing {
        peer: alice,
        send,
        audio_id,
        video_id,
        video,
        requests,
        tasks,
    } = common::Publishing::start(&a.ws_url(), "piped", "alice").await;

    // Bob, on node B, is told of alice's producers in his joinRoom answer.
    let mut bob = Peer::join(&b.ws_url(), "piped", "bob")
        .await
        .expect("bob joins B");
    let listed: Vec<(String, String)> = bob.peers()[0]["producers"]
        .as_array()
        .expect("alice's producers listed on node B")
        .iter()
        .map(|p| {
            (
                p["producerId"].as_str().unwrap().to_owned(),
                p["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(listed.len(), 2, "{:?}", bob.peers());
    assert!(listed.contains(&(audio_id.clone(), "audio".to_owned())));
    assert!(listed.contains(&(video_id.clone(), "video".to_owned())));

    // He consumes both: the media crosses the pipe, every frame in order.
    let recv = bob.create_recv_transport().await.expect("recv transport");
    let bob_audio = recv
        .consume(&audio_id)
        .await
        .expect("consume alice's audio on B");
    let since = Instant::now();
    let bob_video = recv
        .consume(&video_id)
        .await
        .expect("consume alice's video on B");
    let opening = since.elapsed();
    assert_eq!(bob_video.producer_id(), video_id);
    within("bob's recv transport connects", 10, recv.wait_connected())
        .await
        .expect("connected");
    bob_audio.resume().await.expect("resume");
    bob_video.resume().await.expect("resume");
    let frames = within("50 video and 50 audio frames cross the pipe", 20, async {
        let video = common::read_in_order(&bob_video, 50, common::vp8_counter).await;
        let audio = common::read_in_order(&bob_audio, 50, common::opus_counter).await;
        (video, audio)
    })
    .await;
    eprintln!(
        "through the pipe: video {:?}.., audio {:?}..",
        &frames.0[..3],
        &frames.1[..3]
    );

    // A keyframe request on node B reaches the publisher on node A.
    let before = requests.load(Ordering::Relaxed);
    bob_video
        .request_keyframe()
        .await
        .expect("requestConsumerKeyFrame");
    let crossed = eventually(5, async || requests.load(Ordering::Relaxed) > before).await;
    assert!(crossed, "bob's keyframe request did not reach alice");

    // Carol joins node B late: she too gets alice's producers, through the same pipe.
    let carol = Peer::join(&b.ws_url(), "piped", "carol")
        .await
        .expect("carol joins B");
    let alice_listed = carol
        .peers()
        .iter()
        .find(|p| p["displayName"] == "alice")
        .expect("alice listed to carol");
    assert_eq!(alice_listed["producers"].as_array().map(Vec::len), Some(2));
    let carol_recv = carol.create_recv_transport().await.expect("recv transport");
    let since = Instant::now();
    let carol_video = carol_recv.consume(&video_id).await.expect("consume on B");
    eprintln!(
        "consume of a producer on the other node: {opening:?} opening its pipe, {:?} through the open pipe",
        since.elapsed()
    );
    within(
        "carol's transport connects",
        10,
        carol_recv.wait_connected(),
    )
    .await
    .expect("connected");
    carol_video.resume().await.expect("resume");
    within(
        "video reaches carol",
        10,
        common::read_in_order(&carol_video, 20, common::vp8_counter),
    )
    .await;

    // Pausing and closing on node A reach node B.
    video.pause().await.expect("pause");
    let paused = common::notified(&mut bob, "producerPaused", 5).await;
    assert_eq!(paused["producerId"], video_id.as_str());
    video.resume().await.expect("resume");
    let resumed = common::notified(&mut bob, "producerResumed", 5).await;
    assert_eq!(resumed["producerId"], video_id.as_str());
    tasks.stop().await;
    let video = Arc::try_unwrap(video).ok().expect("the only handle left");
    video.close().await.expect("close the video producer");
    let closed = common::notified(&mut bob, "consumerClosed", 5).await;
    assert_eq!(closed["producerId"], video_id.as_str());
    assert_eq!(closed["consumerId"], bob_video.id());

    // Node A dies: bob hears alice leave and loses her audio consumer.
    let killed = Command::new("kill")
        .args(["-9", &a.pid().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let closed = within(
        "the audio consumer of the dead node's producer closes",
        NODE_TIMEOUT + 3,
        bob.next_notification("consumerClosed"),
    )
    .await
    .expect("open");
    assert_eq!(closed["producerId"], audio_id.as_str());
    let left = within("peerLeft on B", 2, bob.next_notification("peerLeft")).await;
    assert_eq!(left.expect("open")["peerId"], alice.peer_id());
    drop(send);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tester_spreads_one_room_over_two_nodes() {
    let redis = RedisServer::start().await;
    let a = node(&redis, &node_id("node-a"), &[]).await;
    let b = node(
        &redis,
        &node_id("node-b"),
        &[("PIPE_ANNOUNCED_IP", "127.0.0.1")],
    )
    .await;
    // The publisher (peer 0) on node A, its subscribers alternately on B and A: those on B
    // get its media through the pipes only.
    let report = common::run_small_room(&[a.ws_url(), b.ws_url()], 4).await;
    // Every subscriber, on either node, got (nearly) everything: nothing is lost on
    // loopback, and a pipe adds no loss.
    let least = report.consumer_delivery_min.expect("per-consumer delivery");
    assert!(least >= 0.95, "a consumer got {least} of its packets");
    // Node B forwarded media it received only through its pipes.
    assert!(b.counter("datagrams_in").await > 0);
    assert!(b.counter("datagrams_out").await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipe_nobody_consumes_closes_after_its_linger() {
    use ferrosoup_client::{MediaKind, Peer};
    let redis = RedisServer::start().await;
    let a = node(&redis, &node_id("node-a"), &[]).await;
    let b = node(&redis, &node_id("node-b"), &[]).await;
    let alice = Peer::join(&a.ws_url(), "linger", "alice")
        .await
        .expect("alice joins A");
    let send = alice.create_send_transport().await.expect("send transport");
    let video = common::produce(&send, MediaKind::Video, "video/VP8").await;
    let bob = Peer::join(&b.ws_url(), "linger", "bob")
        .await
        .expect("bob joins B");
    let recv = bob.create_recv_transport().await.expect("recv transport");
    // Transports before the pipe: alice's on A, bob's on B.
    let (before_a, before_b) = (a.counter("transports").await, b.counter("transports").await);
    let consumer = recv.consume(video.id()).await.expect("consume on B");
    let piped = eventually(2, async || {
        a.counter("transports").await == before_a + 1
            && b.counter("transports").await == before_b + 1
    })
    .await;
    assert!(piped, "one pipe end on each node");
    consumer.close().await.expect("close the consumer");
    // No consumer of it on B any more: after the linger both ends close.
    let since = Instant::now();
    let closed = eventually(15, async || {
        a.counter("transports").await == before_a && b.counter("transports").await == before_b
    })
    .await;
    assert!(
        closed,
        "pipe ends left: A {} (had {before_a}), B {} (had {before_b})",
        a.counter("transports").await,
        b.counter("transports").await
    );
    eprintln!("pipe closed {:?} after its last consumer", since.elapsed());
    // And it opens again for the next consumer.
    let again = recv.consume(video.id()).await.expect("consume again");
    assert_eq!(again.producer_id(), video.id());
}
