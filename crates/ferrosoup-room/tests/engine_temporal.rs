//! Temporal layers and SVC on the simulated engine: a consumer given fewer layers than
//! its producer sends gets a valid stream of its own (contiguous sequence numbers and VP8
//! picture numbers, marker bits where its layers end), changes layers where the codec
//! allows, and gets the right packets again on NACK.

use std::time::Duration;

use ferrosoup_room::events::MediaEvent;
use ferrosoup_room::ids::{ConsumerId, ProducerId};
use ferrosoup_room::layers::SvcMode;
use ferrosoup_room::sim::{
    Peer, SimRoom, VP8_RTX_PT, VP9_RTX_PT, vp8_consumer, vp8_producer, vp9_consumer,
    vp9_svc_producer,
};
use ferrosoup_rtc::rtp::parse_rtp;
use ferrosoup_rtc::{vp8, vp9};
use ferrosoup_testkit::packets::{RtpPacket, Vp8Header, Vp9Header, Vp9LayerIndices, nack};
use ferrosoup_testkit::{LinkConfig, StreamSender};

const ALICE: u32 = 0x2222;
const ALICE_RTX: u32 = 0x2223;
const BOB: u32 = 0x4444;
const BOB_RTX: u32 = 0x4445;
/// The L1T3 pattern Chrome sends: TID of each picture in a cycle of four.
const L1T3: [u8; 4] = [0, 2, 1, 2];

/// What Bob received of one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Got {
    ssrc: u32,
    seq: u16,
    marker: bool,
    payload: Vec<u8>,
}

impl Got {
    fn vp8(&self) -> (u16, u8, u8) {
        let d = vp8::parse_descriptor(&self.payload).expect("VP8 descriptor");
        let (at, _) = d.picture_id.expect("picture id");
        let pid = u16::from_be_bytes([self.payload[at] & 0x7f, self.payload[at + 1]]);
        let tl0 = self.payload[d.tl0_pic_idx.expect("tl0picidx")];
        (pid, tl0, d.temporal.expect("TID").0)
    }

    fn vp9_layers(&self) -> (u8, u8) {
        let l = vp9::parse_descriptor(&self.payload)
            .and_then(|d| d.layers)
            .expect("VP9 layer indices");
        (l.spatial, l.temporal)
    }
}

/// Alice publishes one video stream, Bob consumes it.
struct Pair {
    room: SimRoom,
    alice: Peer,
    bob: Peer,
    consumer: ConsumerId,
    out: StreamSender,
    timestamp: u32,
    picture: u16,
    tl0: u8,
    /// Pictures sent (to walk the L1T3 pattern).
    pictures: usize,
}

impl Pair {
    fn new(svc: Option<SvcMode>) -> Self {
        let mut room = SimRoom::new(LinkConfig::default().with_delay(Duration::from_millis(5)));
        let alice = room.join();
        let bob = room.join();
        let (producer, consumer, rtx_pt): (ProducerId, ConsumerId, u8) = match svc {
            None => {
                let p = room.produce(alice, vp8_producer(ALICE, Some(ALICE_RTX)));
                let c = room.consume(bob, p, vp8_consumer(BOB, Some(BOB_RTX)));
                (p, c, VP8_RTX_PT)
            }
            Some(mode) => {
                let p = room.produce(alice, vp9_svc_producer(ALICE, ALICE_RTX, mode));
                let c = room.consume(bob, p, vp9_consumer(BOB, BOB_RTX));
                (p, c, VP9_RTX_PT)
            }
        };
        let _ = producer;
        let pt = if svc.is_some() {
            ferrosoup_room::sim::VP9_PT
        } else {
            ferrosoup_room::sim::VP8_PT
        };
        Self {
            room,
            alice,
            bob,
            consumer,
            out: StreamSender::new(ALICE, pt, Some((ALICE_RTX, rtx_pt)), 65_530),
            timestamp: 1_000,
            picture: 32_760,
            tl0: 250,
            pictures: 0,
        }
    }

    /// Sends one VP8 picture of `packets` packets, temporal layer `tid`, layer sync or
    /// not, and lets the network deliver it.
    fn vp8_picture(&mut self, tid: u8, sync: bool, keyframe: bool, packets: usize) {
        self.picture = (self.picture + 1) & 0x7fff;
        if tid == 0 {
            self.tl0 = self.tl0.wrapping_add(1);
        }
        for i in 0..packets {
            let header = Vp8Header {
                start_of_frame: i == 0,
                keyframe: keyframe && i == 0,
                picture_id: Some(self.picture),
                tl0_pic_idx: Some(self.tl0),
                temporal: Some((tid, sync)),
                width: 640,
                height: 360,
            };
            let mut payload = vec![0u8; 200];
            let n = header.write(&mut payload);
            payload[n] = i as u8;
            let packet = RtpPacket::new(0, 0, self.timestamp, 0)
                .with_marker(i + 1 == packets)
                .with_payload(payload);
            let bytes = self.out.next(packet);
            self.room.send_rtp(self.alice, &bytes);
        }
        self.finish_picture();
    }

    /// The next picture of the L1T3 pattern (layer sync on TID 1 and 2 when `sync`).
    fn l1t3(&mut self, sync: bool, keyframe: bool) {
        let tid = L1T3[self.pictures % 4];
        self.vp8_picture(tid, sync && tid > 0, keyframe, 2);
    }

    /// Sends one VP9 superframe of spatial layers `0..spatial_layers`, temporal layer
    /// `tid`, two packets per layer frame, key picture or not.
    fn vp9_picture(&mut self, tid: u8, keyframe: bool, spatial_layers: u8) {
        self.picture = (self.picture + 1) & 0x7fff;
        if tid == 0 {
            self.tl0 = self.tl0.wrapping_add(1);
        }
        for sid in 0..spatial_layers {
            for i in 0..2 {
                let header = Vp9Header {
                    picture_id: Some(self.picture),
                    inter_picture: !keyframe,
                    begin: i == 0,
                    end: i == 1,
                    layers: Some(Vp9LayerIndices {
                        temporal: tid,
                        switching_up: true,
                        spatial: sid,
                        inter_layer: keyframe && sid > 0,
                        tl0_pic_idx: self.tl0,
                    }),
                };
                let mut payload = vec![0u8; 100];
                let n = header.write(&mut payload);
                payload[n] = sid;
                let last = sid + 1 == spatial_layers && i == 1;
                let packet = RtpPacket::new(0, 0, self.timestamp, 0)
                    .with_marker(last)
                    .with_payload(payload);
                let bytes = self.out.next(packet);
                self.room.send_rtp(self.alice, &bytes);
            }
        }
        self.finish_picture();
    }

    fn finish_picture(&mut self) {
        self.timestamp = self.timestamp.wrapping_add(3_000);
        self.pictures += 1;
        self.room.run_for(Duration::from_millis(33));
        // Alice answers NACKs (the engine's own, for its gaps) and keyframe requests.
        while let Some(rtcp) = self.room.clients[self.alice.index].poll_rtcp() {
            for packet in self.out.on_rtcp(&rtcp) {
                self.room.send_rtp(self.alice, &packet);
            }
        }
    }

    /// What Bob received since the last call (padding left out).
    fn received(&mut self) -> Vec<Got> {
        let mut got = Vec::new();
        while let Some(rtp) = self.room.clients[self.bob.index].poll_rtp() {
            let info = parse_rtp(&rtp).expect("valid RTP");
            if info.payload_len == 0 {
                continue;
            }
            got.push(Got {
                ssrc: info.ssrc,
                seq: info.sequence_number,
                marker: info.marker,
                payload: info.payload(&rtp).to_vec(),
            });
        }
        got
    }

    /// The layers the server reported for Bob's consumer since the last call.
    fn layer_events(&mut self) -> Vec<(Option<u8>, Option<u8>)> {
        let consumer = self.consumer;
        self.room
            .server
            .events()
            .into_iter()
            .filter_map(|e| match e {
                MediaEvent::ConsumerLayersChanged {
                    consumer_id,
                    spatial_layer,
                    temporal_layer,
                } if consumer_id == consumer => Some((spatial_layer, temporal_layer)),
                _ => None,
            })
            .collect()
    }

    fn consumer_stats(&mut self) -> serde_json::Value {
        let router = self.room.router;
        let consumer = self.consumer;
        self.room
            .engine()
            .consumer_stats(router, consumer)
            .expect("Bob's consumer exists")
    }
}

/// Sequence numbers follow each other (wrapping).
fn contiguous(seqs: &[u16]) -> bool {
    seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1))
}

#[test]
fn a_consumer_at_t0_gets_only_tid0_with_contiguous_numbers() {
    let mut pair = Pair::new(None);
    pair.room.set_preferred_layers(pair.consumer, 0, Some(0));
    pair.l1t3(false, true);
    for _ in 0..23 {
        pair.l1t3(false, false);
    }
    let got = pair.received();
    // 24 pictures, 6 of them TID 0, two packets each.
    assert_eq!(got.len(), 12, "{got:?}");
    let seqs: Vec<u16> = got.iter().map(|g| g.seq).collect();
    assert!(contiguous(&seqs), "{seqs:?}");
    let numbers: Vec<(u16, u8, u8)> = got.iter().step_by(2).map(Got::vp8).collect();
    for w in numbers.windows(2) {
        let ((p0, l0, _), (p1, l1, _)) = (w[0], w[1]);
        assert_eq!(p1, (p0 + 1) & 0x7fff, "picture ids {numbers:?}");
        assert_eq!(l1, l0.wrapping_add(1), "TL0PICIDX {numbers:?}");
    }
    assert!(numbers.iter().all(|n| n.2 == 0));
    // The first picture passes with its own numbers; the PictureID wraps at 15 bits.
    assert_eq!(numbers[0].0, 32_761);
    assert_eq!(numbers[1].0, 32_762);
    assert_eq!(numbers[5].0, 32_766);
    // Both packets of a picture carry the same numbers.
    assert!(got.chunks(2).all(|c| c[0].vp8() == c[1].vp8()));
    let stats = pair.consumer_stats();
    assert_eq!(stats[0]["temporalLayer"], 0);
    assert_eq!(stats[0]["preferredTemporalLayer"], 0);
}

#[test]
fn a_temporal_upgrade_waits_for_a_layer_sync_point() {
    let mut pair = Pair::new(None);
    pair.room.set_preferred_layers(pair.consumer, 0, Some(0));
    pair.l1t3(false, true);
    for _ in 0..7 {
        pair.l1t3(false, false);
    }
    assert_eq!(pair.received().len(), 4);
    pair.room.set_preferred_layers(pair.consumer, 0, None);
    // No sync point: still TID 0 only.
    for _ in 0..8 {
        pair.l1t3(false, false);
    }
    let got = pair.received();
    assert!(got.iter().all(|g| g.vp8().2 == 0), "{got:?}");
    // TID 2 sync alone is not enough (TID 1 pictures would miss theirs); TID 1 sync
    // lifts to 1, the next TID 2 sync to 2.
    pair.vp8_picture(0, false, false, 2);
    pair.vp8_picture(2, true, false, 2);
    pair.vp8_picture(1, true, false, 2);
    pair.vp8_picture(2, false, false, 2);
    pair.vp8_picture(0, false, false, 2);
    pair.vp8_picture(2, true, false, 2);
    pair.vp8_picture(1, false, false, 2);
    let got = pair.received();
    let tids: Vec<u8> = got.iter().step_by(2).map(|g| g.vp8().2).collect();
    assert_eq!(tids, [0, 1, 0, 2, 1]);
    let stats = pair.consumer_stats();
    assert_eq!(stats[0]["temporalLayer"], 2);
    // All the while: one output sequence and one picture numbering.
    let all: Vec<u16> = got.iter().map(|g| g.seq).collect();
    assert!(contiguous(&all), "{all:?}");
    let pids: Vec<u16> = got.iter().step_by(2).map(|g| g.vp8().0).collect();
    assert!(
        pids.windows(2).all(|w| w[1] == (w[0] + 1) & 0x7fff),
        "{pids:?}"
    );
    // Down again: at once, at the next picture.
    pair.room.set_preferred_layers(pair.consumer, 0, Some(1));
    pair.vp8_picture(2, false, false, 2);
    pair.vp8_picture(0, false, false, 2);
    let tids: Vec<u8> = pair.received().iter().map(|g| g.vp8().2).collect();
    assert_eq!(tids, [0, 0]);
}

#[test]
fn a_nack_after_drops_resends_the_packet_sent_under_that_number() {
    let mut pair = Pair::new(None);
    pair.room.set_preferred_layers(pair.consumer, 0, Some(1));
    pair.l1t3(false, true);
    for _ in 0..11 {
        pair.l1t3(false, false);
    }
    let got = pair.received();
    // TID 0 and 1: 6 pictures of 12.
    assert_eq!(got.len(), 12);
    let seqs: Vec<u16> = got.iter().map(|g| g.seq).collect();
    assert!(contiguous(&seqs), "{seqs:?}");
    // Bob asks again for three packets sent after drops (the sequence wrapped on the way in).
    let wanted = [&got[3], &got[6], &got[11]];
    let seqs: Vec<u16> = wanted.iter().map(|g| g.seq).collect();
    let bob = pair.bob;
    pair.room.send_rtcp(bob, &nack(0xb0b, BOB, &seqs));
    pair.room.run_for(Duration::from_millis(20));
    let resent = pair.received();
    assert_eq!(resent.len(), 3, "{resent:?}");
    for (rtx, original) in resent.iter().zip(wanted) {
        assert_eq!(rtx.ssrc, BOB_RTX);
        // RTX payload: the original sequence number, then the payload as first sent
        // (picture numbers rewritten alike).
        assert_eq!(
            u16::from_be_bytes([rtx.payload[0], rtx.payload[1]]),
            original.seq
        );
        assert_eq!(&rtx.payload[2..], &original.payload[..]);
    }
}

#[test]
fn ksvc_forwards_the_chosen_spatial_layer_with_marker_bits_and_reports_it() {
    let mut pair = Pair::new(Some(SvcMode::KeyOnly));
    pair.room.set_preferred_layers(pair.consumer, 1, Some(1));
    // The first key picture shows the server the stream's spatial layers: it forwards the
    // one it knew of, then asks for a keyframe to go up.
    pair.vp9_picture(0, true, 3);
    assert_eq!(pair.received().len(), 2);
    assert_eq!(pair.layer_events(), [(Some(0), Some(0))]);
    assert!(pair.out.keyframe_requests > 0);
    pair.vp9_picture(0, true, 3);
    let got = pair.received();
    // Key picture: S0 (S1 is predicted from it) and S1; S2 dropped. Marker on S1's end.
    let layers: Vec<(u8, u8)> = got.iter().map(Got::vp9_layers).collect();
    assert_eq!(layers, [(0, 0), (0, 0), (1, 0), (1, 0)]);
    let markers: Vec<bool> = got.iter().map(|g| g.marker).collect();
    assert_eq!(markers, [false, false, false, true]);
    assert_eq!(pair.layer_events(), [(Some(1), Some(0))]);
    // Delta pictures: S1 only, TID up to 1.
    for tid in [2, 1, 2, 0, 2, 1] {
        pair.vp9_picture(tid, false, 3);
    }
    let got = pair.received();
    let layers: Vec<(u8, u8)> = got.iter().map(Got::vp9_layers).collect();
    assert_eq!(layers, [(1, 1), (1, 1), (1, 0), (1, 0), (1, 1), (1, 1)]);
    assert!(got.chunks(2).all(|c| !c[0].marker && c[1].marker));
    assert_eq!(pair.layer_events(), [(Some(1), Some(1))]);
    let mut all: Vec<u16> = Vec::new();
    all.extend(got.iter().map(|g| g.seq));
    assert!(contiguous(&all), "{all:?}");
    // Up to S2: waits for a key picture, which the server asks for.
    let before = pair.out.keyframe_requests;
    pair.room.set_preferred_layers(pair.consumer, 2, None);
    // (Requests are at least 300 ms apart.)
    for _ in 0..10 {
        pair.vp9_picture(2, false, 3);
    }
    assert!(
        pair.out.keyframe_requests > before,
        "a keyframe request went out"
    );
    assert!(pair.received().iter().all(|g| g.vp9_layers().0 == 1));
    pair.vp9_picture(0, true, 3);
    pair.vp9_picture(2, false, 3);
    let got = pair.received();
    let layers: Vec<(u8, u8)> = got.iter().map(Got::vp9_layers).collect();
    assert_eq!(
        layers,
        [
            (0, 0),
            (0, 0),
            (1, 0),
            (1, 0),
            (2, 0),
            (2, 0),
            (2, 2),
            (2, 2)
        ]
    );
    let markers: Vec<bool> = got.iter().map(|g| g.marker).collect();
    assert_eq!(
        markers,
        [false, false, false, false, false, true, false, true]
    );
    // TID 2 pictures with U lifted S1 to its top temporal layer meanwhile; the key
    // picture gives every layer of S2 at once.
    assert_eq!(
        pair.layer_events(),
        [(Some(1), Some(2)), (Some(2), Some(2))]
    );
}

#[test]
fn full_svc_goes_down_without_a_keyframe_and_marks_the_top_forwarded_layer() {
    let mut pair = Pair::new(Some(SvcMode::Full));
    pair.vp9_picture(0, true, 3);
    pair.received();
    pair.vp9_picture(0, true, 3);
    pair.vp9_picture(1, false, 3);
    assert_eq!(pair.received().len(), 12, "every layer");
    pair.room.set_preferred_layers(pair.consumer, 0, None);
    pair.vp9_picture(0, false, 3);
    let got = pair.received();
    let layers: Vec<(u8, u8)> = got.iter().map(Got::vp9_layers).collect();
    assert_eq!(layers, [(0, 0), (0, 0)]);
    assert_eq!(
        got.iter().map(|g| g.marker).collect::<Vec<_>>(),
        [false, true]
    );
}
