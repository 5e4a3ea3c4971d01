//! Keyframe requests on simulated time: a consumer that starts on a stream waits for a
//! keyframe, asks the producer for one, and asks again when the request was lost.

mod common;

use std::time::Duration;

use common::Call;
use ferrosoup_room::sim::SERVER_ADDR;
use ferrosoup_room::stats::RtpDrop;
use ferrosoup_testkit::LinkConfig;

fn link() -> LinkConfig {
    LinkConfig::default().with_delay(Duration::from_millis(20))
}

#[test]
fn a_lost_keyframe_request_is_sent_again_and_stops_once_the_keyframe_came() {
    let mut call = Call::new(link(), link());
    // Alice sends only delta frames until she is asked for a keyframe.
    call.keyframe_wanted = false;
    // The PLI the new consumer triggered is still queued in the engine: lose it (and
    // anything else to Alice) for the next half second.
    let alice = call.room.clients[call.alice.index].local_addr();
    let down = call.room.sim.net.link_mut(SERVER_ADDR, alice);
    down.set_config(LinkConfig::random_loss(1.0));
    call.run_media(Duration::from_millis(500), Duration::ZERO);
    assert_eq!(call.plis_seen, 0, "the first request was lost");
    assert_eq!(call.video_in.distinct(), 0, "bob waits for a keyframe");
    let counters = *call.room.engine().counters();
    assert_eq!(counters.plis_sent, 1);
    assert!(counters.rtp_dropped.get(RtpDrop::WaitingKeyframe) > 0);
    call.room
        .sim
        .net
        .link_mut(SERVER_ADDR, alice)
        .set_config(link().with_seed(7));
    // The request is retried a second after the first (not earlier: deltas keep coming and
    // each one would ask again, but one request is already on its way).
    call.run_media(Duration::from_millis(400), Duration::ZERO);
    assert_eq!(call.plis_seen, 0, "no retry before the retry time");
    call.run_media(Duration::from_millis(300), Duration::ZERO);
    assert_eq!(call.plis_seen, 1, "retried after about a second");
    assert_eq!(call.room.engine().counters().plis_sent, 2);
    // Alice answered with a keyframe: video flows and nobody asks again.
    call.run_media(Duration::from_secs(3), Duration::from_millis(200));
    assert_eq!(call.keyframes_sent, 1);
    assert!(
        call.video_in.distinct() > 300,
        "{}",
        call.video_in.distinct()
    );
    assert_eq!(call.video_in.distinct() as u64, call.video_in.span());
    assert_eq!(call.plis_seen, 1);
    assert_eq!(call.room.engine().counters().plis_sent, 2);
}

#[test]
fn a_subscriber_pli_reaches_the_publisher_at_most_once_per_interval() {
    let mut call = Call::new(link(), link());
    call.run_media(Duration::from_secs(1), Duration::ZERO);
    // The first frame, and the answer to the consumer's own request.
    assert_eq!(call.keyframes_sent, 2);
    let (plis, keyframes) = (call.plis_seen, call.keyframes_sent);
    // Bob asks three times in a row: the requests are aggregated into one PLI to Alice,
    // and the keyframe that answers it reaches Bob.
    let pli = ferrosoup_testkit::packets::pli(0xb0b, common::BOB_VIDEO);
    for _ in 0..3 {
        call.room.send_rtcp(call.bob, &pli);
    }
    call.run_media(Duration::from_millis(500), Duration::ZERO);
    assert_eq!(call.room.engine().counters().plis_received, 3);
    assert_eq!(call.plis_seen, plis + 1);
    assert_eq!(call.keyframes_sent, keyframes + 1);
}
