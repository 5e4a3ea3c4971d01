//! One room over two workers (`ROOM_CONSUMERS_PER_WORKER`): the real server with two
//! workers, Rust clients on loopback. Once the home worker holds its share of consumers, a
//! new subscriber's receiving transport goes to the other worker, which gets the
//! publisher's media through a pipe between the workers, and its data channels through
//! the data pipe; clients see nothing of it.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::{TestServer, eventually, within};
use ferrosoup_client::Peer;
use serde_json::Value;

/// Consumers on each router of room `room` (home first), from `/api/rooms/{room}`.
async fn consumers_per_router(server: &TestServer, room: &str) -> Vec<u64> {
    let room = server
        .get(&format!("/api/rooms/{room}"))
        .await
        .unwrap_or_default();
    room["routers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| r["consumers"].as_u64().unwrap_or(0))
        .collect()
}

/// Workers' counters from `/api/stats`.
async fn workers(server: &TestServer) -> Vec<Value> {
    let stats = server.get("/api/stats").await.expect("/api/stats answers");
    stats["workers"].as_array().cloned().expect("workers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_over_two_workers_is_transparent_to_clients() {
    let server = TestServer::start_with(
        2,
        &[("ROOM_CONSUMERS_PER_WORKER", "2"), ("SESSION_GRACE", "0")],
    )
    .await;
    let url = server.ws_url();

    // Alice publishes audio and video (on the home worker, as every sender).
    let common::Publishing {
        peer: alice,
        send,
        audio_id,
        video_id,
        video,
        requests,
        tasks,
    } = common::Publishing::start(&url, "spread", "alice").await;

    // Bob's two consumers fill the home worker's share.
    let bob = Peer::join(&url, "spread", "bob").await.expect("bob");
    let bob_recv = bob.create_recv_transport().await.expect("recv transport");
    let bob_audio = bob_recv.consume(&audio_id).await.expect("consume audio");
    let bob_video = bob_recv.consume(&video_id).await.expect("consume video");
    assert_eq!(consumers_per_router(&server, "spread").await, [2]);

    // Carol's go to a router on the other worker: same answers, same media.
    let mut carol = Peer::join(&url, "spread", "carol").await.expect("carol");
    let carol_recv = carol.create_recv_transport().await.expect("recv transport");
    let carol_audio = carol_recv.consume(&audio_id).await.expect("consume audio");
    let carol_video = carol_recv.consume(&video_id).await.expect("consume video");
    assert_eq!(carol_video.producer_id(), video_id, "the producer's own id");
    assert_eq!(carol_audio.producer_id(), audio_id);
    assert_eq!(consumers_per_router(&server, "spread").await, [2, 2]);
    for (recv, who) in [(&bob_recv, "bob"), (&carol_recv, "carol")] {
        within(
            &format!("{who}'s recv transport connects"),
            10,
            recv.wait_connected(),
        )
        .await
        .expect("connected");
    }
    for c in [&bob_audio, &bob_video, &carol_audio, &carol_video] {
        c.resume().await.expect("resume");
    }
    within("50 video and 50 audio frames on each worker", 20, async {
        for (v, a) in [(&bob_video, &bob_audio), (&carol_video, &carol_audio)] {
            common::read_in_order(v, 50, common::vp8_counter).await;
            common::read_in_order(a, 50, common::opus_counter).await;
        }
    })
    .await;
    let forwarding: Vec<u64> = workers(&server)
        .await
        .iter()
        .map(|w| w["rtp_packets_out"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        forwarding.iter().all(|&n| n > 0),
        "both workers forward: {forwarding:?}"
    );

    // Carol's keyframe request crosses back to alice.
    let before = requests.load(Ordering::Relaxed);
    carol_video
        .request_keyframe()
        .await
        .expect("requestConsumerKeyFrame");
    let crossed = eventually(5, async || requests.load(Ordering::Relaxed) > before).await;
    assert!(crossed, "carol's keyframe request did not reach alice");

    // Alice's pause and resume reach carol's consumer, on the other worker.
    video.pause().await.expect("pause");
    let paused = common::notified(&mut carol, "consumerPaused", 5).await;
    assert_eq!(paused["consumerId"], carol_video.id());
    video.resume().await.expect("resume");
    let resumed = common::notified(&mut carol, "consumerResumed", 5).await;
    assert_eq!(resumed["consumerId"], carol_video.id());
    within(
        "video flows again to carol",
        10,
        common::read_in_order(&carol_video, 10, common::vp8_counter),
    )
    .await;

    // Alice closes her video: carol's consumer of it closes too.
    tasks.stop().await;
    let video = Arc::try_unwrap(video).ok().expect("the only handle left");
    video.close().await.expect("close the video producer");
    let closed = common::notified(&mut carol, "consumerClosed", 5).await;
    assert_eq!(closed["consumerId"], carol_video.id());
    assert_eq!(closed["producerId"], video_id.as_str());
    assert_eq!(consumers_per_router(&server, "spread").await, [1, 1]);

    // Carol leaves: her router keeps no consumer.
    carol.leave().await.expect("leave");
    let freed = eventually(5, async || {
        consumers_per_router(&server, "spread").await == [1, 0]
    })
    .await;
    assert!(freed, "{:?}", consumers_per_router(&server, "spread").await);
    drop((bob, alice, send));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tester_fills_a_room_over_two_workers() {
    let server = TestServer::start_with(2, &[("ROOM_CONSUMERS_PER_WORKER", "4")]).await;
    let report = common::run_small_room(&[server.ws_url()], 6).await;
    // Every subscriber, on either worker, got (nearly) everything: a pipe between workers
    // loses nothing.
    let least = report.consumer_delivery_min.expect("per-consumer delivery");
    assert!(least >= 0.99, "a consumer got {:.1} %", least * 100.0);
    let forwarded: Vec<u64> = workers(&server)
        .await
        .iter()
        .map(|w| w["rtp_packets_out"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        forwarded.iter().all(|&n| n > 0),
        "both workers forward: {forwarded:?}"
    );
}

/// A reliable, ordered data producer labelled `label` on `send`.
async fn produce_data(
    send: &ferrosoup_client::SendTransport,
    label: &str,
) -> ferrosoup_client::DataProducer {
    send.produce_data(ferrosoup_client::DataProduceOptions {
        label: label.into(),
        ..Default::default()
    })
    .await
    .expect("produceData")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_channels_cross_to_the_other_worker() {
    use ferrosoup_client::{RecvTransport, SendTransport, TransportOptions};
    let server = TestServer::start_with(
        2,
        &[
            ("ROOM_CONSUMERS_PER_WORKER", "1"),
            ("SESSION_GRACE", "0"),
            ("MAX_DATA_MESSAGES_PER_SECOND", "100000"),
        ],
    )
    .await;
    let url = server.ws_url();
    let with_data = || TransportOptions {
        data_channels: true,
        ..Default::default()
    };
    let alice = Peer::join(&url, "spread-data", "alice")
        .await
        .expect("alice");
    let send = SendTransport::create(alice.signaling(), alice.device(), with_data())
        .await
        .expect("send transport");
    let chat = produce_data(&send, "chat").await;
    let bot = produce_data(&send, "bot").await;

    // Bob's data consumer fills the home worker; carol's go to the other one, as
    // mediasoup-demo's receiving transports (with data channels) do.
    let mut subscribers = Vec::new();
    for name in ["bob", "carol"] {
        let peer = Peer::join(&url, "spread-data", name).await.expect(name);
        let recv = RecvTransport::create(peer.signaling(), peer.device(), with_data())
            .await
            .expect("recv transport");
        let chat_in = recv.consume_data(chat.id()).await.expect("consume chat");
        subscribers.push((peer, recv, chat_in));
    }
    assert_eq!(consumers_per_router(&server, "spread-data").await, [0, 0]);
    let routers = server.get("/api/rooms/spread-data").await.expect("room")["routers"]
        .as_array()
        .map(Vec::len);
    assert_eq!(routers, Some(2), "carol's transport on a second worker");
    // A second data producer crosses the same data pipe.
    let carol_bot = subscribers[1]
        .1
        .consume_data(bot.id())
        .await
        .expect("consume bot");
    for c in [chat.wait_open(), bot.wait_open()] {
        within("alice's channels open", 15, c).await.expect("open");
    }
    for (_, _, chat_in) in &subscribers {
        within("chat_in opens", 15, chat_in.wait_open())
            .await
            .expect("open");
    }
    within("carol's bot opens", 15, carol_bot.wait_open())
        .await
        .expect("open");

    // Every message in order on both workers; a 60 kB one crosses in 41 chunks.
    let big: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    for i in 0..100 {
        chat.send_text(&format!("msg {i}")).await.expect("send");
    }
    chat.send_binary(&big).await.expect("send big");
    bot.send_text("beep").await.expect("send bot");
    for (peer, _, chat_in) in &subscribers {
        for i in 0..100 {
            let m = within("chat message", 10, chat_in.recv())
                .await
                .expect("open");
            assert_eq!(
                m.text(),
                Some(format!("msg {i}").as_str()),
                "{}",
                peer.peer_id()
            );
        }
        let m = within("the big message", 10, chat_in.recv())
            .await
            .expect("open");
        assert!(!m.is_text);
        assert_eq!(m.data.len(), big.len());
        assert!(
            m.data[..] == big[..],
            "{}: the big message intact",
            peer.peer_id()
        );
    }
    let m = within("bot message", 10, carol_bot.recv())
        .await
        .expect("open");
    assert_eq!(m.text(), Some("beep"));

    // Closing the data producer reaches carol's data consumer on the other worker.
    chat.close().await.expect("close chat");
    let (carol, carol_recv, carol_chat) = &mut subscribers[1];
    let closed = common::notified(carol, "dataConsumerClosed", 5).await;
    assert_eq!(closed["dataConsumerId"], carol_chat.id());

    // With the last piped data producer closed the data pipe closes; the next one opens
    // a new pipe.
    bot.close().await.expect("close bot");
    let closed = common::notified(carol, "dataConsumerClosed", 5).await;
    assert_eq!(closed["dataConsumerId"], carol_bot.id());
    let again = produce_data(&send, "again").await;
    let again_in = carol_recv
        .consume_data(again.id())
        .await
        .expect("consume again");
    within("again opens", 15, again.wait_open())
        .await
        .expect("open");
    within("again_in opens", 15, again_in.wait_open())
        .await
        .expect("open");
    again.send_text("through a new pipe").await.expect("send");
    let m = within("a message through the new pipe", 10, again_in.recv())
        .await
        .expect("open");
    assert_eq!(m.text(), Some("through a new pipe"));
    drop((send, alice));
}
