//! RTCP feedback and drops on simulated time: subscriber NACKs are served from the
//! producer's store once per round trip, and every dropped RTP packet is counted by reason.

mod common;

use std::time::Duration;

use common::{BOB_VIDEO, BOB_VIDEO_RTX, Call};
use ferrosoup_room::sim::SimServer;
use ferrosoup_room::stats::RtpDrop;
use ferrosoup_rtc::rtp::parse_rtp;
use ferrosoup_testkit::LinkConfig;
use ferrosoup_testkit::packets::{RtpPacket, nack};

fn link() -> LinkConfig {
    LinkConfig::default().with_delay(Duration::from_millis(15))
}

/// Runs `duration` without media; returns the original sequence numbers of the RTX
/// packets Bob received meanwhile.
fn rtx_to_bob(call: &mut Call, duration: Duration) -> Vec<u16> {
    let bob = call.bob.index;
    let mut osns = Vec::new();
    let end = call.now() + duration;
    while call.room.step(end) {
        while let Some(p) = call.room.clients[bob].poll_rtp() {
            let info = parse_rtp(&p).expect("the server sends valid RTP");
            if info.ssrc == BOB_VIDEO_RTX {
                let payload = info.payload(&p);
                osns.push(u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    }
    osns
}

#[test]
fn nacks_are_answered_with_rtx_once_per_round_trip() {
    let mut call = Call::new(link(), link());
    call.run_media(Duration::from_secs(1), Duration::from_millis(100));
    let seq = call.video_in.newest().expect("bob got video");
    let request = nack(0xb0b, BOB_VIDEO, &[seq]);
    call.room.send_rtcp(call.bob, &request);
    assert_eq!(rtx_to_bob(&mut call, Duration::from_millis(50)), vec![seq]);
    // Asked again within the round trip: the resend is on its way, not sent twice.
    call.room.send_rtcp(call.bob, &request);
    call.room.send_rtcp(call.bob, &request);
    assert_eq!(
        rtx_to_bob(&mut call, Duration::from_millis(50)),
        Vec::<u16>::new()
    );
    let counters = *call.room.engine().counters();
    assert_eq!(counters.rtp_dropped.get(RtpDrop::ResentRecently), 2);
    // Later it is served again.
    call.room.send_rtcp(call.bob, &request);
    assert_eq!(rtx_to_bob(&mut call, Duration::from_millis(50)), vec![seq]);
    // A sequence number far from anything sent cannot be served.
    call.room.send_rtcp(
        call.bob,
        &nack(0xb0b, BOB_VIDEO, &[seq.wrapping_add(30_000)]),
    );
    assert_eq!(
        rtx_to_bob(&mut call, Duration::from_millis(50)),
        Vec::<u16>::new()
    );
    let counters = *call.room.engine().counters();
    assert_eq!(counters.rtp_dropped.get(RtpDrop::NotStored), 1);
    assert_eq!(counters.retransmissions, 2);
    assert_eq!(counters.nacks_received, 5);
}

#[test]
fn every_dropped_rtp_packet_is_counted_by_reason() {
    let mut call = Call::new(link(), link());
    call.run_media(Duration::from_millis(500), Duration::from_millis(100));
    let before = *call.room.engine().counters();
    // An SSRC nobody announced.
    let stray = RtpPacket::new(96, 1, 0, 0xdead)
        .with_payload(vec![1; 50])
        .build();
    call.room.send_rtp(call.alice, &stray);
    // A payload type the producer did not declare, on its SSRC.
    let odd = RtpPacket::new(100, 1, 0, common::ALICE_VIDEO)
        .with_payload(vec![1; 50])
        .build();
    call.room.send_rtp(call.alice, &odd);
    // Bytes that look like SRTP but do not authenticate.
    let mut forged = RtpPacket::new(96, 2, 0, common::ALICE_VIDEO)
        .with_payload(vec![7; 60])
        .build();
    forged.extend_from_slice(&[0; 16]);
    call.room.clients[call.alice.index].send_raw(forged);
    call.room.run_for(Duration::from_millis(100));
    let after = *call.room.engine().counters();
    let delta = |r| after.rtp_dropped.get(r) - before.rtp_dropped.get(r);
    assert_eq!(delta(RtpDrop::UnknownSsrc), 1);
    assert_eq!(delta(RtpDrop::UnknownPayloadType), 1);
    assert_eq!(delta(RtpDrop::SrtpAuth), 1);
    assert_eq!(after.srtp_failures - before.srtp_failures, 1);
    // Bob pauses his video consumer: what it would have forwarded is counted as paused,
    // and the output has no gap for it when he resumes.
    let (router, consumer, now) = (call.room.router, call.video_consumer, call.now());
    let SimServer { engine, .. } = &mut call.room.server;
    let mut out = ferrosoup_room::transmit::Collect::default();
    engine
        .set_consumer_paused(router, consumer, true, now, &mut out)
        .expect("bob's consumer");
    call.run_media(Duration::from_millis(500), Duration::ZERO);
    let paused = call
        .room
        .engine()
        .counters()
        .rtp_dropped
        .get(RtpDrop::ConsumerPaused);
    assert!(paused >= 50, "{paused} packets dropped while paused");
    let now = call.now();
    let SimServer { engine, .. } = &mut call.room.server;
    engine
        .set_consumer_paused(router, consumer, false, now, &mut out)
        .expect("bob's consumer");
    call.run_media(Duration::from_secs(1), Duration::from_millis(100));
    assert_eq!(call.video_in.distinct() as u64, call.video_in.span());
}

#[test]
fn a_spurious_retransmission_is_not_forwarded_twice() {
    let mut call = Call::new(link(), link());
    call.run_media(Duration::from_secs(1), Duration::from_millis(100));
    let (received, before) = (call.video_in.distinct(), *call.room.engine().counters());
    // Alice answers a NACK nobody sent: RTX of packets the server already has.
    let fake = nack(0xa11ce, common::ALICE_VIDEO, &[65_010, 65_011, 65_012]);
    for packet in call.video_out.on_rtcp(&fake) {
        call.room.send_rtp(call.alice, &packet);
    }
    call.room.run_for(Duration::from_millis(100));
    while let Some(p) = call.room.clients[call.bob.index].poll_rtp() {
        call.video_in.on_rtp(call.now(), &p);
    }
    let after = *call.room.engine().counters();
    assert_eq!(
        after.rtp_dropped.get(RtpDrop::Duplicate) - before.rtp_dropped.get(RtpDrop::Duplicate),
        3
    );
    assert_eq!(call.video_in.distinct(), received);
    assert_eq!(call.video_in.duplicates, 0);
    // Nothing was protected twice under one SRTP index: Bob saw no replay.
    assert_eq!(call.room.clients[call.bob.index].stats().srtp_replays, 0);
}
