//! RTCP feedback and drops on simulated time: subscriber NACKs are served from the
//! producer's store once per round trip, every dropped RTP packet is counted by reason, and
//! `setMaxIncomingBitrate` reaches the publisher as REMBs.

mod common;

use std::time::{Duration, Instant};

use common::{ALICE_AUDIO, ALICE_VIDEO, BOB_VIDEO, BOB_VIDEO_RTX, Call, Remb};
use ferrosoup_room::sim::{SimServer, opus_producer};
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

/// The worker's report round (`RTCP_INTERVAL`), which repeats the REMB.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Link delay (15 ms) plus the call's reaction step (at most an audio frame, 20 ms), with
/// room to spare: how late a REMB sent at once may be read.
const PROMPT: Duration = Duration::from_millis(50);

/// Runs the call with media for `duration`; returns the REMBs Alice received meanwhile.
fn alice_rembs(call: &mut Call, duration: Duration) -> Vec<Remb> {
    let before = call.alice_rembs.len();
    call.run_media(duration, Duration::ZERO);
    call.alice_rembs[before..].to_vec()
}

/// `rembs`, received from `start` on, are one sent at once and one per report round after
/// it, all of `bitrate` for `ssrcs`.
fn assert_periodic(rembs: &[Remb], start: Instant, bitrate: u64, ssrcs: &[u32]) {
    assert!(!rembs.is_empty(), "no REMB");
    for remb in rembs {
        assert_eq!(
            (remb.bitrate, &remb.ssrcs[..]),
            (bitrate, ssrcs),
            "{remb:?}"
        );
    }
    assert!(rembs[0].at - start <= PROMPT, "not sent at once: {rembs:?}");
    for pair in rembs.windows(2) {
        assert!(
            pair[1].at - pair[0].at <= REPORT_INTERVAL + PROMPT,
            "a report round without REMB: {rembs:?}"
        );
    }
}

/// As [`assert_periodic`], and they kept coming over the whole `duration`, one per round.
fn assert_steady(rembs: &[Remb], start: Instant, duration: Duration, bitrate: u64, ssrcs: &[u32]) {
    assert_periodic(rembs, start, bitrate, ssrcs);
    let last = rembs[rembs.len() - 1].at;
    assert!(
        start + duration - last <= REPORT_INTERVAL + PROMPT,
        "REMBs stopped: {rembs:?}"
    );
    let rounds = (duration.as_millis() / REPORT_INTERVAL.as_millis()) as usize;
    assert!(
        rembs.len() <= rounds + 1,
        "more than one per round: {rembs:?}"
    );
}

#[test]
fn max_incoming_bitrate_reaches_the_publisher_as_remb_until_lifted() {
    let mut call = Call::new(link(), link());
    let alice = call.alice;
    // Without a limit the worker sends no REMB.
    assert_eq!(alice_rembs(&mut call, Duration::from_secs(2)), vec![]);
    // A limit: a REMB at once, naming Alice's producers' media SSRCs, then every round
    // (a client that missed one still obeys).
    let media = [ALICE_AUDIO, ALICE_VIDEO];
    let steady = Duration::from_secs(4);
    let start = call.now();
    call.room.set_max_incoming_bitrate(alice, 800_000);
    let rembs = alice_rembs(&mut call, steady);
    assert_steady(&rembs, start, steady, 800_000, &media);
    // A new value replaces it at once.
    let start = call.now();
    call.room.set_max_incoming_bitrate(alice, 300_000);
    let rembs = alice_rembs(&mut call, steady);
    assert_steady(&rembs, start, steady, 300_000, &media);
    // 0 lifts the limit: four REMBs of bitrate 0 (no limit), the first at once, then none.
    let start = call.now();
    call.room.set_max_incoming_bitrate(alice, 0);
    let rembs = alice_rembs(&mut call, Duration::from_secs(6));
    assert_eq!(rembs.len(), 4, "{rembs:?}");
    assert_periodic(&rembs, start, 0, &media);
    // 0 again when there is no limit: nothing.
    call.room.set_max_incoming_bitrate(alice, 0);
    assert_eq!(alice_rembs(&mut call, Duration::from_secs(3)), vec![]);
    // Bob only consumes: nothing for him throughout.
    assert_eq!(call.bob_rembs, vec![]);
    assert_eq!(call.room.clients[alice.index].stats().srtp_replays, 0);
}

#[test]
fn a_new_limit_ends_the_rembs_that_lift_the_old_one() {
    let mut call = Call::new(link(), link());
    let alice = call.alice;
    call.run_media(Duration::from_secs(1), Duration::ZERO);
    call.room.set_max_incoming_bitrate(alice, 800_000);
    call.room.set_max_incoming_bitrate(alice, 0);
    call.room.set_max_incoming_bitrate(alice, 500_000);
    let rembs = alice_rembs(&mut call, Duration::from_secs(3));
    let bitrates: Vec<u64> = rembs.iter().map(|r| r.bitrate).collect();
    assert_eq!(bitrates[..3], [800_000, 0, 500_000], "{rembs:?}");
    assert!(bitrates[3..].iter().all(|&b| b == 500_000), "{rembs:?}");
    assert!(bitrates.len() >= 5, "{rembs:?}");
}

#[test]
fn a_transport_without_producers_gets_no_remb_until_it_produces() {
    let mut call = Call::new(link(), link());
    let bob = call.bob;
    call.run_media(Duration::from_secs(1), Duration::ZERO);
    // Bob's transport only consumes: his limit is kept, but there is nothing to cap.
    call.room.set_max_incoming_bitrate(bob, 600_000);
    call.run_media(Duration::from_secs(3), Duration::ZERO);
    assert_eq!(call.bob_rembs, vec![]);
    // Once he publishes, the next report round tells him (as when a client sets the limit
    // right after creating its send transport, before producing).
    const BOB_MIC: u32 = 0x5555;
    call.room.produce(bob, opus_producer(BOB_MIC));
    let start = call.now();
    call.run_media(REPORT_INTERVAL + PROMPT, Duration::ZERO);
    let first = call.bob_rembs.first().cloned();
    assert!(
        first
            .as_ref()
            .is_some_and(|r| r.at - start <= REPORT_INTERVAL + PROMPT),
        "{first:?}"
    );
    assert_eq!(call.bob_rembs[0].bitrate, 600_000);
    assert_eq!(call.bob_rembs[0].ssrcs, vec![BOB_MIC]);
    assert_eq!(call.alice_rembs, vec![]);
}
