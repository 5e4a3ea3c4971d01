//! One room over the routers of two workers (`RoomRouters`): real worker threads. A room
//! that fits one worker stays on it; past `consumers_per_worker` its receiving transports
//! go to a router on the other worker, whose consumers consume the home router's producer
//! through a pipe opened on the first consume, under the producer's own id. Pausing,
//! closing and an idle pipe's linger follow on every router.

mod workers;

use std::time::{Duration, Instant};

use ferrosoup_proto::rtp_parameters::{MediaKind, RtpCodecCapability};
use ferrosoup_room::router::CandidateOptions;
use ferrosoup_room::{
    ConsumerId, ProducerId, RoomError, RoomRouters, Spread, TransportId, TransportUse, WorkerPool,
};
use serde_json::json;

const LINGER: Duration = Duration::from_secs(10);

fn codecs() -> Vec<RtpCodecCapability> {
    serde_json::from_value(json!([
        {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000}
    ]))
    .expect("codecs")
}

/// A room whose routers take 2 consumers each, with a VP8 producer on a plain transport
/// of its home router.
async fn room(pool: &WorkerPool) -> (RoomRouters, TransportId, ProducerId) {
    let home = pool.create_router(&codecs()).await.expect("home router");
    let routers = RoomRouters::new(
        home,
        codecs(),
        pool.workers().len(),
        Spread {
            consumers_per_worker: 2,
            pipe_linger: LINGER,
        },
    );
    let transport = routers
        .home()
        .create_plain_transport(workers::plain(true))
        .await
        .expect("publish transport");
    let params = workers::vp8_parameters(&[1111], "room-routers");
    let producer = routers
        .produce(transport.id, MediaKind::Video, params, false)
        .await
        .expect("produce");
    (routers, transport.id, producer)
}

/// A subscriber's receiving transport, placed by the room, and its consumer of `producer`.
async fn subscribe(
    pool: &WorkerPool,
    routers: &RoomRouters,
    producer: ProducerId,
) -> (TransportId, ConsumerId) {
    let transport = routers
        .create_webrtc_transport(
            pool,
            TransportUse::ReceiveOnly {
                expected_consumers: 1,
            },
            CandidateOptions::default(),
        )
        .await
        .expect("receive transport");
    let consumer = routers
        .consume(
            transport.id,
            producer,
            routers.rtp_capabilities(),
            false,
            None,
        )
        .await
        .expect("consume");
    assert_eq!(
        consumer.producer_id, producer,
        "the consumer names the producer"
    );
    (transport.id, consumer.id)
}

/// Consumers on each router of the room, home first.
fn consumers(routers: &RoomRouters) -> Vec<usize> {
    routers.with_consumers().iter().map(|(_, n)| *n).collect()
}

/// Whether the room's second router has the pipe producer of `producer`.
async fn piped(routers: &RoomRouters, producer: ProducerId) -> bool {
    match routers.all()[1].producer_stats(producer).await {
        Ok(_) => true,
        Err(RoomError::NotFound(_)) => false,
        Err(e) => panic!("producer stats: {e}"),
    }
}

#[tokio::test]
async fn a_room_spreads_to_another_worker_past_its_consumers_per_worker() {
    let (pool, _events) = workers::start_pool(2, 47_000);
    let (routers, _, producer) = room(&pool).await;
    let mut subscribers = Vec::new();
    for _ in 0..2 {
        subscribers.push(subscribe(&pool, &routers, producer).await);
    }
    assert_eq!(
        consumers(&routers),
        [2],
        "a room that fits one worker stays home"
    );

    // The third subscriber does not fit: a router on the other worker, fed by a pipe.
    subscribers.push(subscribe(&pool, &routers, producer).await);
    assert_eq!(consumers(&routers), [2, 1]);
    let all = routers.all();
    assert_ne!(all[0].worker_index(), all[1].worker_index());
    assert_eq!(
        routers.router_of_transport(subscribers[2].0).id(),
        all[1].id()
    );
    assert!(piped(&routers, producer).await);
    subscribers.push(subscribe(&pool, &routers, producer).await);
    // Both full: the least loaded (home first among equals).
    subscribers.push(subscribe(&pool, &routers, producer).await);
    assert_eq!(
        consumers(&routers),
        [3, 2],
        "two routers, never more than the workers"
    );

    // Each consumer answers on its own router.
    for (_, c) in &subscribers {
        routers
            .router_of_consumer(*c)
            .consumer_stats(*c)
            .await
            .expect("consumer stats on its router");
    }

    // A pause reaches the consumers of every router, through the pipe producer.
    let mut changed = routers
        .set_producer_paused(producer, true)
        .await
        .expect("pause");
    changed.sort();
    let mut all_consumers: Vec<ConsumerId> = subscribers.iter().map(|(_, c)| *c).collect();
    all_consumers.sort();
    assert_eq!(changed, all_consumers);

    // Closing the producer closes its consumers on both routers and the pipe.
    let closed = routers.close_producer(producer).await.expect("close");
    assert_eq!(closed.producers, [producer]);
    let mut gone: Vec<ConsumerId> = closed.consumers.iter().map(|c| c.consumer_id).collect();
    gone.sort();
    assert_eq!(gone, all_consumers);
    assert!(!piped(&routers, producer).await);
    assert_eq!(consumers(&routers), [0, 0]);
    routers.close().await;
}

#[tokio::test]
async fn an_idle_pipe_closes_after_its_linger_and_opens_again() {
    let (pool, _events) = workers::start_pool(2, 47_000);
    let (routers, publish_transport, producer) = room(&pool).await;
    for _ in 0..2 {
        subscribe(&pool, &routers, producer).await;
    }
    let (transport, consumer) = subscribe(&pool, &routers, producer).await;
    assert!(piped(&routers, producer).await);

    // Its only consumer there closes: the pipe stays for its linger, then closes.
    routers
        .close_consumer(consumer)
        .await
        .expect("close consumer");
    let idle_from = Instant::now();
    routers.close_idle_pipes(Instant::now()).await;
    assert!(piped(&routers, producer).await, "open within its linger");
    routers.close_idle_pipes(idle_from + LINGER).await;
    assert!(!piped(&routers, producer).await, "closed after its linger");

    // The next consumer on that router opens it again.
    let again = routers
        .consume(transport, producer, routers.rtp_capabilities(), false, None)
        .await
        .expect("consume again");
    assert!(piped(&routers, producer).await);

    // Closing the publisher's transport closes its producer, the pipe and the consumers
    // of both routers.
    let closed = routers
        .close_transport(publish_transport)
        .await
        .expect("close transport");
    assert_eq!(closed.producers, [producer]);
    assert_eq!(closed.consumers.len(), 3);
    assert!(closed.consumers.iter().any(|c| c.consumer_id == again.id));
    assert!(!piped(&routers, producer).await);
    routers.close().await;
}
