//! Joining on simulated time: a subscriber whose consumer is resumed before its DTLS
//! handshake is done still starts on a keyframe, asked for the moment it can receive one;
//! and a consumer whose lowest layer does not fit the start estimate is not paused for a
//! guess the link never confirmed.

mod common;

use std::time::{Duration, Instant};

use common::simulcast::SimulcastCall;
use ferrosoup_room::sim::{EXT_IDS, Peer, SimRoom, VP8_PT, VP8_RTX_PT, vp8_consumer, vp8_producer};
use ferrosoup_rtc::rtp::{VideoCodec, is_keyframe, parse_rtp};
use ferrosoup_testkit::packets::{RtpPacket, Vp8Header};
use ferrosoup_testkit::{LinkConfig, StreamSender};

const ALICE_VIDEO: u32 = 0x2222;
const ALICE_VIDEO_RTX: u32 = 0x2223;
const BOB_VIDEO: u32 = 0x4444;
const BOB_VIDEO_RTX: u32 = 0x4445;
const FRAME: Duration = Duration::from_micros(33_333);

/// Alice publishing VP8 like a browser: a frame every 33 ms, a keyframe first and
/// whenever she is asked for one.
struct Publisher {
    peer: Peer,
    out: StreamSender,
    next_frame: Instant,
    timestamp: u32,
    keyframe_wanted: bool,
    keyframe_requests: u64,
    twcc: u16,
}

impl Publisher {
    fn new(room: &mut SimRoom) -> Self {
        let peer = room.join();
        Self {
            peer,
            out: StreamSender::new(
                ALICE_VIDEO,
                VP8_PT,
                Some((ALICE_VIDEO_RTX, VP8_RTX_PT)),
                65_000,
            ),
            next_frame: room.now(),
            timestamp: 0,
            keyframe_wanted: true,
            keyframe_requests: 0,
            twcc: 0,
        }
    }

    /// Reads what reached Alice and sends the frame due at `room.now()`, if any.
    fn tick(&mut self, room: &mut SimRoom) {
        while let Some(rtcp) = room.clients[self.peer.index].poll_rtcp() {
            let before = self.out.keyframe_requests;
            for packet in self.out.on_rtcp(&rtcp) {
                room.send_rtp(self.peer, &packet);
            }
            if self.out.keyframe_requests > before {
                self.keyframe_requests += self.out.keyframe_requests - before;
                self.keyframe_wanted = true;
            }
        }
        if room.now() < self.next_frame {
            return;
        }
        let keyframe = std::mem::take(&mut self.keyframe_wanted);
        for i in 0..3 {
            let header = Vp8Header {
                start_of_frame: i == 0,
                keyframe,
                width: 640,
                height: 360,
                ..Vp8Header::default()
            };
            let mut payload = vec![0u8; 900];
            header.write(&mut payload);
            self.twcc = self.twcc.wrapping_add(1);
            let packet = RtpPacket::new(0, 0, self.timestamp, 0)
                .with_marker(i == 2)
                .with_transport_cc(EXT_IDS.transport_wide_cc, self.twcc)
                .with_payload(payload);
            let bytes = self.out.next(packet);
            room.send_rtp(self.peer, &bytes);
        }
        self.timestamp = self.timestamp.wrapping_add(3000);
        self.next_frame += FRAME;
    }
}

#[test]
fn a_consumer_resumed_before_its_dtls_is_done_starts_on_a_keyframe_asked_for_at_connect() {
    let mut room = SimRoom::new(LinkConfig::default().with_delay(Duration::from_millis(20)));
    let mut alice = Publisher::new(&mut room);
    let producer = room.produce(alice.peer, vp8_producer(ALICE_VIDEO, Some(ALICE_VIDEO_RTX)));
    // Bob's link is slow: his handshake takes several round trips of 100 ms, while Alice's
    // keyframes take 20 ms to reach the server.
    let bob_addr = room.next_client_addr();
    room.sim.net.set_path(
        bob_addr,
        ferrosoup_room::sim::SERVER_ADDR,
        LinkConfig::default().with_delay(Duration::from_millis(100)),
    );
    let bob = room.join_unconnected();
    room.consume(bob, producer, vp8_consumer(BOB_VIDEO, Some(BOB_VIDEO_RTX)));
    assert_eq!(
        room.engine().counters().plis_sent,
        0,
        "no keyframe request while bob cannot receive it"
    );

    let deadline = room.now() + Duration::from_secs(5);
    let mut connected_at = None;
    let mut plis_at_connect = 0;
    let mut first_packet = None;
    while room.now() < deadline && first_packet.is_none() {
        alice.tick(&mut room);
        if connected_at.is_none() && room.clients[bob.index].is_connected() {
            connected_at = Some(room.now());
            plis_at_connect = room.engine().counters().plis_sent;
        }
        if let Some(rtp) = room.clients[bob.index].poll_rtp() {
            let info = parse_rtp(&rtp).expect("the server sends valid RTP");
            assert_eq!(info.ssrc, BOB_VIDEO);
            first_packet = Some((room.now(), is_keyframe(VideoCodec::Vp8, info.payload(&rtp))));
        }
        let limit = alice.next_frame.min(deadline);
        room.step(limit);
    }
    let connected_at = connected_at.expect("bob connects");
    let (first_at, first_is_keyframe) = first_packet.expect("bob receives video");
    // Alice's first keyframe came while Bob could not receive it: it was not spent on him.
    // When his DTLS completed the consumer asked for a keyframe at once (Bob sees himself
    // connected when the server's last flight reaches him, 100 ms after it left).
    assert!(
        plis_at_connect >= 1,
        "a keyframe request went out when the server's side of DTLS completed"
    );
    assert!(
        first_is_keyframe,
        "bob's first video packet starts a keyframe"
    );
    // PLI to Alice (20 ms), her next frame (≤ 33 ms), back to the server (20 ms) and on to
    // Bob (100 ms), counted from when the server connected (100 ms before Bob did).
    let waited = first_at.duration_since(connected_at);
    assert!(
        waited <= Duration::from_millis(100),
        "first video packet {waited:?} after bob saw DTLS connected"
    );
    assert!(alice.keyframe_requests >= 1);
}

#[test]
fn a_start_estimate_the_link_never_confirmed_pauses_no_one() {
    // The lowest layer (700 kbit/s) is above the start estimate (300 kbit/s) on a link of
    // 10 Mbit/s: nothing measured says it does not fit, so bob sees it at once and keeps it
    // while the estimator's probes find the headroom.
    let link = LinkConfig::default().with_delay(Duration::from_millis(20));
    let mut call = SimulcastCall::new([700_000, 1_500_000, 3_000_000], 10_000_000, link);
    call.run_for(Duration::from_secs(3));
    let first = call.switches.first().copied();
    assert!(
        first.is_some_and(|(at, layer)| layer.is_some() && at <= Duration::from_millis(200)),
        "bob starts on a layer at once: {:?}",
        call.switches
    );
    assert!(
        call.switches.iter().all(|(_, layer)| layer.is_some()),
        "never paused: {:?}",
        call.switches
    );
    assert_eq!(
        call.switches.last().map(|&(_, layer)| layer),
        Some(Some(2)),
        "the probes found room for the top layer"
    );
}
