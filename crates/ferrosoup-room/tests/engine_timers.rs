//! The engine's one timer table on simulated time: an engine with nothing to do has no
//! deadline, an idle call wakes it only for its own timers (no fixed tick), and deadlines
//! follow what is pending (a keyframe request's retry).

use std::time::Duration;

use ferrosoup_room::sim::{SimRoom, vp8_consumer, vp8_producer};
use ferrosoup_testkit::LinkConfig;

fn link() -> LinkConfig {
    LinkConfig::default().with_delay(Duration::from_millis(10))
}

#[test]
fn an_empty_engine_has_no_deadline() {
    let mut room = SimRoom::new(link());
    assert_eq!(room.engine().poll_timeout(), None);
    room.run_for(Duration::from_secs(60));
    assert_eq!(room.engine().poll_timeout(), None);
}

#[test]
fn idle_connected_transports_wake_the_engine_only_for_their_timers() {
    let mut room = SimRoom::new(link());
    let a = room.join();
    let b = room.join();
    for peer in [a, b] {
        room.clients[peer.index].set_consent_interval(Some(Duration::from_secs(5)));
    }
    room.run_for(Duration::from_secs(2));
    // Count the instants the engine's own deadline is reached in 10 simulated seconds.
    let end = room.now() + Duration::from_secs(10);
    let mut wakeups = 0;
    loop {
        let deadline = room.engine().poll_timeout();
        if !room.step(end) {
            break;
        }
        if deadline.is_some_and(|at| at <= room.now()) {
            wakeups += 1;
        }
    }
    // Two transports, one report round a second each (and their consent deadlines moving
    // lazily): about 20. A 20 ms tick would have been 500.
    assert!((10..=30).contains(&wakeups), "{wakeups} wake-ups in 10 s");
}

#[test]
fn a_keyframe_request_arms_its_retry_deadline() {
    let mut room = SimRoom::new(link());
    let alice = room.join();
    let bob = room.join();
    room.run_for(Duration::from_secs(2));
    let producer = room.produce(alice, vp8_producer(1111, None));
    // A new video consumer asks for a keyframe at once; the retry is armed a second later
    // (no keyframe comes: the producer sends nothing).
    room.consume(bob, producer, vp8_consumer(2222, None));
    let sent_at = room.now();
    room.run_for(Duration::from_millis(1));
    assert_eq!(room.engine().counters().plis_sent, 1);
    let next = room.engine().poll_timeout().expect("a retry is armed");
    assert!(
        next <= sent_at + Duration::from_secs(1),
        "{:?}",
        next - sent_at
    );
    room.run_until(sent_at + Duration::from_millis(999));
    assert_eq!(room.engine().counters().plis_sent, 1);
    room.run_until(sent_at + Duration::from_millis(1001));
    assert_eq!(
        room.engine().counters().plis_sent,
        2,
        "retried at the deadline"
    );
}
