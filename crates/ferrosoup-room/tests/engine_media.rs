//! Media through the engine on simulated time: clean links deliver everything in order;
//! 5 % loss on both hops is repaired by NACK/RTX (video) to at least 99.9 %.

mod common;

use std::time::Duration;

use common::Call;
use ferrosoup_room::stats::RtpDrop;
use ferrosoup_testkit::LinkConfig;

fn link(loss: f64, seed: u64) -> LinkConfig {
    LinkConfig::random_loss(loss)
        .with_delay(Duration::from_millis(25))
        .with_jitter(Duration::from_millis(3))
        .with_seed(seed)
}

#[test]
fn clean_links_deliver_every_packet() {
    let mut call = Call::new(link(0.0, 1), link(0.0, 2));
    call.run_media(Duration::from_secs(3), Duration::from_millis(500));
    // Everything Alice sent after Bob's consumer started (the first keyframe) arrived
    // once, with no gap in Bob's sequence numbers.
    assert!(call.audio_in.distinct() as u64 >= call.audio_out.sent - 1);
    assert_eq!(call.audio_in.distinct() as u64, call.audio_in.span());
    assert_eq!(call.video_in.distinct() as u64, call.video_in.span());
    assert!(call.video_in.distinct() as u64 >= call.video_out.sent - 4);
    assert_eq!(call.video_in.duplicates, 0);
    assert_eq!(call.video_in.recovered, 0);
    let counters = *call.room.engine().counters();
    assert_eq!(counters.rtp_dropped.get(RtpDrop::UnknownSsrc), 0);
    assert_eq!(counters.retransmissions, 0);
    assert!(counters.rtcp_out > 0, "reports go out on their timers");
}

#[test]
fn five_percent_loss_on_both_hops_is_repaired_by_nack_and_rtx() {
    let mut call = Call::new(link(0.05, 11), link(0.05, 12));
    call.run_media(Duration::from_secs(10), Duration::from_secs(2));
    let video = &call.video_in;
    let delivered = video.distinct() as f64 / video.span() as f64;
    assert!(
        delivered >= 0.999,
        "video delivered {:.4} ({} of {}), recovered {}, nacked {}",
        delivered,
        video.distinct(),
        video.span(),
        video.recovered,
        video.nacked
    );
    // About 10 s of 30 fps × 4 packets flowed, and both hops' repairs were needed.
    assert!(video.span() > 1100, "span {}", video.span());
    assert!(
        call.video_out.retransmitted > 0,
        "alice resent what the server NACKed"
    );
    assert!(video.recovered > 0, "bob got RTX from the server");
    let counters = *call.room.engine().counters();
    assert!(counters.nacks_sent > 0 && counters.retransmissions > 0);
    // Audio is not repaired: about 1 - 0.95² of it is lost, the rest arrives.
    let audio = call.audio_in.distinct() as f64 / call.audio_in.span() as f64;
    assert!((0.85..0.97).contains(&audio), "audio delivered {audio:.3}");
}
