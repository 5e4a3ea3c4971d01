//! Hostile subscribers on simulated time: what a client can make the server send is
//! bounded by what it consumes, however it asks.

mod common;

use std::time::Duration;

use common::{BOB_VIDEO, BOB_VIDEO_RTX, Call};
use ferrosoup_room::stats::RtpDrop;
use ferrosoup_rtc::rtp::parse_rtp;
use ferrosoup_testkit::LinkConfig;
use ferrosoup_testkit::packets::nack;

fn link() -> LinkConfig {
    LinkConfig::default().with_delay(Duration::from_millis(15))
}

/// Runs `duration` without media; returns the RTX packets and bytes Bob received.
fn rtx_to_bob(call: &mut Call, duration: Duration) -> (usize, usize) {
    let bob = call.bob.index;
    let (mut packets, mut bytes) = (0, 0);
    let end = call.now() + duration;
    while call.room.step(end) {
        while let Some(p) = call.room.clients[bob].poll_rtp() {
            let info = parse_rtp(&p).expect("the server sends valid RTP");
            if info.ssrc == BOB_VIDEO_RTX {
                packets += 1;
                bytes += p.len();
            }
        }
    }
    (packets, bytes)
}

#[test]
fn a_nack_flood_gets_no_more_than_the_stream_bitrate_back() {
    let mut call = Call::new(link(), link());
    call.run_media(Duration::from_secs(2), Duration::from_millis(100));
    // The video stream: 4 × 1,000-byte packets at 30 fps ≈ 120 kB/s.
    let per_second = 4.0 * 1_000.0 * 30.0;
    let newest = call.video_in.newest().expect("bob got video");
    // Every stored packet named ten times over, in reordered rounds that an "already
    // resent" table of any fixed size cannot all remember: ~4,000 requests in ~2 kB.
    let seqs: Vec<u16> = (0..400u16).map(|k| newest.wrapping_sub(k)).rev().collect();
    for round in 0..10 {
        let mut order = seqs.clone();
        order.rotate_left(round * 37);
        for chunk in order.chunks(100) {
            let mut sorted = chunk.to_vec();
            sorted.sort_by_key(|s| s.wrapping_sub(newest.wrapping_sub(400)));
            call.room
                .send_rtcp(call.bob, &nack(0xb0b, BOB_VIDEO, &sorted));
        }
    }
    let window = Duration::from_millis(300);
    let (packets, bytes) = rtx_to_bob(&mut call, window);
    // The budget: 16 kB to start with, refilled at the stream's own rate.
    let bound = 16_000.0 + per_second * 1.1 * window.as_secs_f64() + 2_000.0;
    assert!(packets > 0, "NACKs are still served");
    assert!(
        (bytes as f64) <= bound,
        "{packets} retransmissions, {bytes} bytes > {bound}"
    );
    let counters = *call.room.engine().counters();
    assert!(counters.rtp_dropped.get(RtpDrop::RetransmitBudget) > 1_000);
    // Later, an honest NACK is answered again: the budget refills.
    call.run_media(Duration::from_secs(1), Duration::from_millis(100));
    let seq = call.video_in.newest().expect("bob got video");
    call.room
        .send_rtcp(call.bob, &nack(0xb0b, BOB_VIDEO, &[seq]));
    assert_eq!(rtx_to_bob(&mut call, Duration::from_millis(50)).0, 1);
}
