//! A call on the simulated engine: `alice` publishes Opus and VP8 like a browser (paced
//! frames, RTX answers to NACKs, keyframes on PLI), `bob` consumes both and NACKs what he
//! misses; the REMBs each receives are kept. Everything runs on the testkit's manual clock.

#![allow(dead_code)]

pub mod simulcast;

use std::time::{Duration, Instant};

use ferrosoup_room::ids::{ConsumerId, ProducerId};
use ferrosoup_room::sim::{
    EXT_IDS, OPUS_PT, Peer, SimRoom, VP8_PT, VP8_RTX_PT, opus_consumer, opus_producer,
    vp8_consumer, vp8_producer,
};
use ferrosoup_rtc::rtcp::{RtcpItem, parse_compound};
use ferrosoup_testkit::packets::{RtpPacket, Vp8Header, opus_payload};
use ferrosoup_testkit::{LinkConfig, StreamReceiver, StreamSender};

pub const ALICE_AUDIO: u32 = 0x1111;
pub const ALICE_VIDEO: u32 = 0x2222;
pub const ALICE_VIDEO_RTX: u32 = 0x2223;
pub const BOB_AUDIO: u32 = 0x3333;
pub const BOB_VIDEO: u32 = 0x4444;
pub const BOB_VIDEO_RTX: u32 = 0x4445;
/// Audio frame interval.
pub const AUDIO_FRAME: Duration = Duration::from_millis(20);
/// Video frame interval (30 fps).
pub const VIDEO_FRAME: Duration = Duration::from_micros(33_333);
/// Packets per video frame.
pub const VIDEO_PACKETS: usize = 4;

/// A REMB a client received (unprotected), and when it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remb {
    pub at: Instant,
    pub bitrate: u64,
    pub ssrcs: Vec<u32>,
}

/// The REMBs of an RTCP compound packet read at `at`.
pub fn rembs(at: Instant, rtcp: &[u8]) -> Vec<Remb> {
    parse_compound(rtcp)
        .flatten()
        .filter_map(|item| match item {
            RtcpItem::Remb { bitrate, ssrcs, .. } => Some(Remb {
                at,
                bitrate,
                ssrcs: ssrcs.collect(),
            }),
            _ => None,
        })
        .collect()
}

/// Alice publishing, Bob consuming, on one simulated engine.
pub struct Call {
    pub room: SimRoom,
    pub alice: Peer,
    pub bob: Peer,
    pub audio_producer: ProducerId,
    pub video_producer: ProducerId,
    pub audio_consumer: ConsumerId,
    pub video_consumer: ConsumerId,
    pub audio_out: StreamSender,
    pub video_out: StreamSender,
    pub audio_in: StreamReceiver,
    pub video_in: StreamReceiver,
    /// Alice's transport-wide sequence number.
    twcc_seq: u16,
    next_audio: Instant,
    next_video: Instant,
    audio_ts: u32,
    video_ts: u32,
    picture_id: u16,
    /// A keyframe was asked for and not sent yet (the first frame is one).
    pub keyframe_wanted: bool,
    /// Keyframes Alice sent.
    pub keyframes_sent: u64,
    /// PLIs Alice received.
    pub plis_seen: u64,
    /// REMBs Alice received.
    pub alice_rembs: Vec<Remb>,
    /// REMBs Bob received.
    pub bob_rembs: Vec<Remb>,
}

impl Call {
    /// Alice and Bob joined over `alice_link` and `bob_link` (both directions each), with
    /// their producers and consumers; no media sent yet.
    pub fn new(alice_link: LinkConfig, bob_link: LinkConfig) -> Self {
        let mut room = SimRoom::new(LinkConfig::default());
        let server = ferrosoup_room::sim::SERVER_ADDR;
        room.sim
            .net
            .set_path(room.next_client_addr(), server, alice_link);
        let alice = room.join();
        room.sim
            .net
            .set_path(room.next_client_addr(), server, bob_link);
        let bob = room.join();
        let audio_producer = room.produce(alice, opus_producer(ALICE_AUDIO));
        let video_producer = room.produce(alice, vp8_producer(ALICE_VIDEO, Some(ALICE_VIDEO_RTX)));
        let audio_consumer = room.consume(bob, audio_producer, opus_consumer(BOB_AUDIO));
        let video_consumer = room.consume(
            bob,
            video_producer,
            vp8_consumer(BOB_VIDEO, Some(BOB_VIDEO_RTX)),
        );
        let now = room.now();
        Self {
            room,
            alice,
            bob,
            audio_producer,
            video_producer,
            audio_consumer,
            video_consumer,
            audio_out: StreamSender::new(ALICE_AUDIO, OPUS_PT, None, 1000),
            video_out: StreamSender::new(
                ALICE_VIDEO,
                VP8_PT,
                Some((ALICE_VIDEO_RTX, VP8_RTX_PT)),
                65_000,
            ),
            audio_in: StreamReceiver::new(BOB_AUDIO, None),
            video_in: StreamReceiver::new(BOB_VIDEO, Some((BOB_VIDEO_RTX, VP8_RTX_PT, VP8_PT))),
            twcc_seq: 0,
            next_audio: now,
            next_video: now,
            audio_ts: 0,
            video_ts: 0,
            picture_id: 0,
            keyframe_wanted: true,
            keyframes_sent: 0,
            plis_seen: 0,
            alice_rembs: Vec::new(),
            bob_rembs: Vec::new(),
        }
    }

    pub fn now(&self) -> Instant {
        self.room.now()
    }

    /// Runs the call until `until`, Alice sending media until `media_until`.
    pub fn run(&mut self, until: Instant, media_until: Instant) {
        loop {
            self.react();
            let now = self.now();
            if now >= until {
                return;
            }
            if now < media_until {
                if now >= self.next_audio {
                    self.send_audio();
                }
                if now >= self.next_video {
                    self.send_video();
                }
            }
            let mut limit = until;
            if now < media_until {
                limit = limit.min(self.next_audio).min(self.next_video);
            }
            if let Some(at) = self.video_in.nack_timeout() {
                limit = limit.min(at.max(now));
            }
            if limit > now || !self.room.step(limit) {
                self.room.step(limit);
            }
        }
    }

    /// Runs `duration` with media, then `tail` more without (for the last repairs).
    pub fn run_media(&mut self, duration: Duration, tail: Duration) {
        let start = self.now();
        self.run(start + duration + tail, start + duration);
    }

    /// What the clients do with what they received: Alice answers NACKs and PLIs, Bob
    /// counts and NACKs.
    fn react(&mut self) {
        let now = self.now();
        while let Some(rtcp) = self.room.clients[self.alice.index].poll_rtcp() {
            self.alice_rembs.extend(rembs(now, &rtcp));
            let before = self.video_out.keyframe_requests;
            let resend = self.video_out.on_rtcp(&rtcp);
            if self.video_out.keyframe_requests > before {
                self.plis_seen += self.video_out.keyframe_requests - before;
                self.keyframe_wanted = true;
            }
            for packet in resend {
                self.room.send_rtp(self.alice, &packet);
            }
        }
        while let Some(rtp) = self.room.clients[self.bob.index].poll_rtp() {
            if !self.video_in.on_rtp(now, &rtp) {
                self.audio_in.on_rtp(now, &rtp);
            }
        }
        while let Some(rtcp) = self.room.clients[self.bob.index].poll_rtcp() {
            self.bob_rembs.extend(rembs(now, &rtcp));
        }
        if let Some(nack) = self
            .video_in
            .poll_nack(now, Duration::from_millis(60), 0xb0b)
        {
            self.room.send_rtcp(self.bob, &nack);
        }
    }

    fn twcc(&mut self) -> u16 {
        self.twcc_seq = self.twcc_seq.wrapping_add(1);
        self.twcc_seq
    }

    fn send_audio(&mut self) {
        let seq = self.twcc();
        let packet = RtpPacket::new(0, 0, self.audio_ts, 0)
            .with_marker(false)
            .with_transport_cc(EXT_IDS.transport_wide_cc, seq)
            .with_audio_level(EXT_IDS.audio_level, true, 30)
            .with_payload(opus_payload(100));
        let bytes = self.audio_out.next(packet);
        self.room.send_rtp(self.alice, &bytes);
        self.audio_ts = self.audio_ts.wrapping_add(960);
        self.next_audio += AUDIO_FRAME;
    }

    fn send_video(&mut self) {
        let keyframe = std::mem::take(&mut self.keyframe_wanted);
        if keyframe {
            self.keyframes_sent += 1;
        }
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        for i in 0..VIDEO_PACKETS {
            let header = Vp8Header {
                start_of_frame: i == 0,
                keyframe,
                picture_id: Some(self.picture_id),
                width: 640,
                height: 360,
                ..Vp8Header::default()
            };
            let mut payload = vec![0u8; 1000];
            let n = header.write(&mut payload);
            for (j, b) in payload[n..].iter_mut().enumerate() {
                *b = j as u8;
            }
            let seq = self.twcc();
            let packet = RtpPacket::new(0, 0, self.video_ts, 0)
                .with_marker(i + 1 == VIDEO_PACKETS)
                .with_transport_cc(EXT_IDS.transport_wide_cc, seq)
                .with_payload(payload);
            let bytes = self.video_out.next(packet);
            self.room.send_rtp(self.alice, &bytes);
        }
        self.video_ts = self.video_ts.wrapping_add(3000);
        self.next_video += VIDEO_FRAME;
    }
}
