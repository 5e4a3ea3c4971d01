//! Hostile clients on simulated time: what a client can make the server send is bounded by
//! what it consumes, however it asks; what it can make the server keep (SSRC and address
//! state) is bounded, however many SSRCs and addresses it sends from.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{BOB_VIDEO, BOB_VIDEO_RTX, Call};
use ferrosoup_proto::ortc::ProducerType;
use ferrosoup_room::engine::{EncodingSpec, ProduceSpec};
use ferrosoup_room::layers::SvcMode;
use ferrosoup_room::sim::{
    EXT_IDS, SimRoom, VP8_PT, VP8_RTX_PT, opus_producer, vp8_producer, vp8_simulcast_producer,
};
use ferrosoup_room::stats::RtpDrop;
use ferrosoup_room::transport::MAX_INCOMING_SSRCS;
use ferrosoup_rtc::ice::MAX_TUPLES;
use ferrosoup_rtc::rtp::{ExtensionIds, parse_rtp};
use ferrosoup_rtc::srtp::MAX_REMOTE_SSRCS;
use ferrosoup_testkit::LinkConfig;
use ferrosoup_testkit::packets::{RtpPacket, nack, receiver_report, vp8_payload};

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

/// MID of a producer announced without SSRCs, by MID and RIDs, as browsers do simulcast.
const SIMULCAST_MID: &str = "v2";
/// Its layers.
const RIDS: [&str; 2] = ["l", "h"];
/// Header extension ids of its RID and repaired RID.
const RID_EXT: u8 = 5;
const REPAIRED_RID_EXT: u8 = 6;

/// A VP8 simulcast producer of two RID layers under [`SIMULCAST_MID`], without SSRCs.
fn rid_simulcast_producer() -> ProduceSpec {
    ProduceSpec {
        encodings: RIDS
            .iter()
            .map(|rid| EncodingSpec {
                rid: Some((*rid).to_owned()),
                ..EncodingSpec::default()
            })
            .collect(),
        mid: Some(SIMULCAST_MID.to_owned()),
        ext_ids: ExtensionIds {
            rid: RID_EXT,
            repaired_rid: REPAIRED_RID_EXT,
            ..EXT_IDS
        },
        producer_type: ProducerType::Simulcast,
        svc: SvcMode::None,
        ..vp8_producer(0, None)
    }
}

/// The `i`th packet of an SSRC churn, from a fresh SSRC: without MID, with the MID and a
/// RID, with the MID and a repaired RID (RTX), or with the MID alone.
fn churn_packet(i: u32) -> Vec<u8> {
    let ssrc = 0x7000_0000 + i;
    let rid = RIDS[(i / 4) as usize % RIDS.len()];
    let media = RtpPacket::new(VP8_PT, i as u16, i * 3000, ssrc).with_payload(vp8_payload(
        false,
        Some(i as u16 & 0x7fff),
        100,
    ));
    match i % 4 {
        0 => media,
        1 => media
            .with_mid(EXT_IDS.mid, SIMULCAST_MID)
            .with_rid(RID_EXT, rid),
        2 => RtpPacket::new(VP8_RTX_PT, i as u16, i * 3000, ssrc)
            .with_mid(EXT_IDS.mid, SIMULCAST_MID)
            .with_repaired_rid(REPAIRED_RID_EXT, rid)
            .with_payload(vp8_payload(false, None, 102)),
        _ => media.with_mid(EXT_IDS.mid, SIMULCAST_MID),
    }
    .build()
}

#[test]
fn ssrc_churn_keeps_ssrc_state_bounded_and_the_real_stream_flowing() {
    let mut call = Call::new(link(), link());
    let (router, alice) = (call.room.router, call.alice);
    call.room.produce(alice, rid_simulcast_producer());
    call.run_media(Duration::from_secs(1), Duration::ZERO);
    let tables = call
        .room
        .engine()
        .transport_tables(router, alice.transport)
        .expect("alice's transport");
    // Audio, video and its RTX, announced.
    assert_eq!(tables.ssrcs, 3);
    let before = call.video_in.distinct();
    assert!(before > 100, "video flows: {before}");

    // Alice keeps publishing and, in between, sends 10,000 RTP packets each from a fresh
    // SSRC (half of them naming the simulcast producer's MID and a layer) and as many
    // RTCP packets from fresh sender SSRCs, all properly protected.
    const CHURN: u32 = 10_000;
    for round in 0..20 {
        for i in round * CHURN / 20..(round + 1) * CHURN / 20 {
            call.room.send_rtp(alice, &churn_packet(i));
            call.room
                .send_rtcp(alice, &receiver_report(0x6000_0000 + i, &[]));
        }
        call.run_media(Duration::from_millis(50), Duration::ZERO);
    }
    let tables = call
        .room
        .engine()
        .transport_tables(router, alice.transport)
        .expect("alice's transport");
    // The router holds each stream's current SSRCs only: audio, video and RTX, and the
    // media and RTX SSRC of both simulcast layers (the last ones the churn named).
    assert_eq!(tables.ssrcs, 3 + 2 * RIDS.len());
    assert!(tables.ssrcs <= MAX_INCOMING_SSRCS);
    // SRTP and SRTCP keep replay state for the most recent SSRCs, no more.
    assert_eq!(tables.srtp_ssrcs, MAX_REMOTE_SSRCS);
    assert_eq!(tables.srtcp_ssrcs, MAX_REMOTE_SSRCS);
    let counters = *call.room.engine().counters();
    // Packets without the MID, or with the MID but no RID, route nowhere.
    assert!(counters.rtp_dropped.get(RtpDrop::UnknownSsrc) >= u64::from(CHURN / 2));
    assert_eq!(counters.srtp_failures, 0);

    // Bob kept getting Alice's video throughout and still does.
    let during = call.video_in.distinct();
    assert!(during > before + 100, "{before} → {during}");
    call.run_media(Duration::from_secs(1), Duration::from_millis(100));
    let after = call.video_in.distinct();
    assert!(after > during + 100, "{during} → {after}");
}

#[test]
fn address_churn_keeps_at_most_max_tuples_addresses_per_transport() {
    let mut call = Call::new(link(), link());
    let (router, alice) = (call.room.router, call.alice);
    let home = call.room.clients[alice.index].local_addr();
    call.run_media(Duration::from_millis(500), Duration::ZERO);
    let addresses = |call: &mut Call| {
        call.room
            .engine()
            .transport_tables(router, alice.transport)
            .expect("alice's transport")
            .addresses
    };
    assert_eq!(addresses(&mut call), 1);

    // Valid consent checks (without nomination) from 1,000 ports of Alice's, while her
    // media keeps coming from her first address.
    let churn: Vec<SocketAddr> = (0..1_000)
        .map(|i| SocketAddr::new(home.ip(), 20_000 + i))
        .collect();
    for batch in churn.chunks(50) {
        let now = call.now();
        let client = &mut call.room.clients[alice.index];
        for &from in batch {
            client.rebind(from);
            client.send_consent_check(now);
        }
        client.rebind(home);
        call.run_media(Duration::from_millis(20), Duration::ZERO);
        assert!(addresses(&mut call) <= MAX_TUPLES);
    }
    call.run_media(Duration::from_millis(100), Duration::ZERO);
    assert_eq!(addresses(&mut call), MAX_TUPLES);
    let answered = std::iter::from_fn(|| call.room.clients[alice.index].poll_stun_answer())
        .filter_map(|a| a.result.ok())
        .filter(|mapped| churn.contains(mapped))
        .count();
    assert_eq!(answered, churn.len(), "every check was answered");

    // Media from an early, evicted port is dropped as from an unknown tuple; from the
    // selected tuple, which checks without nomination do not displace, it still flows.
    call.room.clients[alice.index].rebind(churn[0]);
    let dropped = call.room.engine().counters().dropped_unknown_tuple;
    call.run_media(Duration::from_millis(200), Duration::ZERO);
    assert!(call.room.engine().counters().dropped_unknown_tuple > dropped + 10);
    call.room.clients[alice.index].rebind(home);
    let before = call.video_in.distinct();
    call.run_media(Duration::from_millis(500), Duration::from_millis(100));
    assert!(call.video_in.distinct() > before + 40);
}

#[test]
fn a_transport_routes_at_most_max_incoming_ssrcs() {
    let mut room = SimRoom::new(link());
    let peer = room.join();
    let router = room.router;
    // Producers of 8 simulcast layers with RTX, as many as fit.
    let producers = MAX_INCOMING_SSRCS / 16;
    for p in 0..producers as u32 {
        let layers: Vec<(u32, u32)> = (0..8)
            .map(|k| (0x1_0000 * (p + 1) + 2 * k, 0x1_0000 * (p + 1) + 2 * k + 1))
            .collect();
        room.produce(peer, vp8_simulcast_producer(&layers));
    }
    let tables = room
        .engine()
        .transport_tables(router, peer.transport)
        .expect("the transport exists");
    assert_eq!(tables.ssrcs, MAX_INCOMING_SSRCS);
    // One more encoding does not fit: refused, naming the field.
    let now = room.now();
    let refused = room
        .engine()
        .produce(router, peer.transport, opus_producer(0x42), now)
        .expect_err("beyond the bound");
    assert!(
        refused.to_string().starts_with("rtpParameters.encodings"),
        "{refused}"
    );
}
