//! A simulcast call on the simulated engine, as a browser pair would make it: `alice`
//! publishes Opus and three VP8 simulcast layers, each with three temporal layers (L1T3,
//! as Chrome sends them) when asked (keyframes on PLI, RTX answers to
//! NACKs), `bob` consumes both behind a downlink whose capacity a test changes over time,
//! and sends transport-cc feedback every 100 ms, receiver-side NACKs, like Chrome. The
//! call samples what bandwidth estimation does: the estimate, the bottleneck queue's
//! delay, the layer forwarded.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferrosoup_room::events::MediaEvent;
use ferrosoup_room::ids::{ConsumerId, ProducerId};
use ferrosoup_room::sim::{
    EXT_IDS, OPUS_PT, Peer, SERVER_ADDR, SimRoom, VP8_PT, VP8_RTX_PT, opus_consumer, opus_producer,
    vp8_simulcast_consumer, vp8_simulcast_producer,
};
use ferrosoup_rtc::rtp::parse_rtp;
use ferrosoup_rtc::twcc::TwccRecorder;
use ferrosoup_testkit::packets::{RtpPacket, Vp8Header, opus_payload};
use ferrosoup_testkit::{LinkConfig, StreamReceiver, StreamSender};

use super::{AUDIO_FRAME, VIDEO_FRAME};

const ALICE_AUDIO: u32 = 0x1111;
const ALICE_LAYERS: [(u32, u32); 3] = [(0x2000, 0x2001), (0x2100, 0x2101), (0x2200, 0x2201)];
const BOB_AUDIO: u32 = 0x3333;
const BOB_VIDEO: u32 = 0x4444;
const BOB_VIDEO_RTX: u32 = 0x4445;
/// Payload bytes per video packet at most.
const MAX_PAYLOAD: usize = 1_100;
/// A keyframe is this many times a frame.
const KEYFRAME_FACTOR: u64 = 3;
/// Samples are taken this often.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// Feedback interval of the receiver (Chrome: ~100 ms).
const FEEDBACK_EVERY: Duration = Duration::from_millis(100);
/// The bottleneck queue holds this much time at its rate.
pub const QUEUE: Duration = Duration::from_millis(300);

/// One sample of the call.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Since the call started.
    pub at: Duration,
    /// The server's estimate toward bob, bit/s.
    pub estimate: u64,
    /// Bob's downlink capacity, bit/s.
    pub capacity: u64,
    /// Queuing delay at the bottleneck.
    pub queue_delay: Duration,
    /// The layer the server forwards to bob (`None`: none).
    pub layer: Option<u8>,
    /// The temporal layer the server forwards to bob (`None`: none).
    pub temporal: Option<u8>,
    /// Probe clusters the server started toward bob.
    pub probes: u64,
    /// The estimator's state as getTransportStats shows it.
    pub bwe: serde_json::Value,
}

/// The call.
pub struct SimulcastCall {
    pub room: SimRoom,
    alice: Peer,
    pub bob: Peer,
    bob_addr: SocketAddr,
    pub video_producer: ProducerId,
    pub video_consumer: ConsumerId,
    audio_out: StreamSender,
    layers_out: Vec<StreamSender>,
    /// Bitrate of each layer, bit/s.
    bitrates: Vec<u64>,
    keyframe_wanted: Vec<bool>,
    twcc_seq: u16,
    audio_ts: u32,
    video_ts: u32,
    picture_ids: Vec<u16>,
    /// Each layer's TL0PICIDX.
    tl0_pic_idx: Vec<u8>,
    /// Send three temporal layers per stream (L1T3).
    temporal_layers: bool,
    /// Video frames sent.
    frames: usize,
    next_audio: Instant,
    next_video: Instant,
    bob_twcc: TwccRecorder,
    next_feedback: Instant,
    next_sample: Instant,
    pub video_in: StreamReceiver,
    pub audio_in: StreamReceiver,
    start: Instant,
    capacity: u64,
    layer: Option<u8>,
    temporal: Option<u8>,
    /// Every layer switch the server reported: when, and to which layer.
    pub switches: Vec<(Duration, Option<u8>)>,
    pub samples: Vec<Sample>,
    /// Audio packets alice sent.
    pub audio_sent: u64,
}

impl SimulcastCall {
    /// Alice (unlimited link) publishes layers of `bitrates`; bob's downlink starts at
    /// `capacity` bit/s with `downlink` (delay, loss) otherwise.
    pub fn new(bitrates: [u64; 3], capacity: u64, downlink: LinkConfig) -> Self {
        Self::build(bitrates, capacity, downlink, false)
    }

    /// As [`SimulcastCall::new`], each stream in three temporal layers (pictures of TID
    /// 0 2 1 2, of one size, the upper ones layer sync points).
    pub fn l1t3(bitrates: [u64; 3], capacity: u64, downlink: LinkConfig) -> Self {
        Self::build(bitrates, capacity, downlink, true)
    }

    fn build(bitrates: [u64; 3], capacity: u64, downlink: LinkConfig, temporal: bool) -> Self {
        let mut room = SimRoom::new(LinkConfig::default().with_delay(Duration::from_millis(10)));
        let alice = room.join();
        let bob_addr = room.next_client_addr();
        room.sim.net.set_path(
            bob_addr,
            SERVER_ADDR,
            LinkConfig::default().with_delay(downlink.delay),
        );
        let bob = room.join();
        // Consent checks every 5 s, as browsers send them.
        for peer in [alice, bob] {
            room.clients[peer.index].set_consent_interval(Some(Duration::from_secs(5)));
        }
        let audio_producer = room.produce(alice, opus_producer(ALICE_AUDIO));
        let video_producer = room.produce(alice, vp8_simulcast_producer(&ALICE_LAYERS));
        let now = room.now();
        let mut call = Self {
            room,
            alice,
            bob,
            bob_addr,
            video_producer,
            video_consumer: ConsumerId::new(),
            audio_out: StreamSender::new(ALICE_AUDIO, OPUS_PT, None, 1000),
            layers_out: ALICE_LAYERS
                .iter()
                .map(|&(ssrc, rtx)| StreamSender::new(ssrc, VP8_PT, Some((rtx, VP8_RTX_PT)), 100))
                .collect(),
            bitrates: bitrates.to_vec(),
            keyframe_wanted: vec![true; 3],
            twcc_seq: 0,
            audio_ts: 0,
            video_ts: 0,
            picture_ids: vec![0; 3],
            tl0_pic_idx: vec![0; 3],
            temporal_layers: temporal,
            frames: 0,
            next_audio: now,
            next_video: now,
            bob_twcc: TwccRecorder::new(now),
            next_feedback: now,
            next_sample: now,
            video_in: StreamReceiver::new(BOB_VIDEO, Some((BOB_VIDEO_RTX, VP8_RTX_PT, VP8_PT))),
            audio_in: StreamReceiver::new(BOB_AUDIO, None),
            start: now,
            capacity,
            layer: None,
            temporal: None,
            switches: Vec::new(),
            samples: Vec::new(),
            audio_sent: 0,
        };
        call.set_downlink(capacity, downlink);
        // Alice's layers flow for a second before bob subscribes, as in a room joined late.
        call.run_for(Duration::from_secs(1));
        call.room
            .consume(bob, audio_producer, opus_consumer(BOB_AUDIO));
        call.video_consumer = call.room.consume(
            bob,
            video_producer,
            vp8_simulcast_consumer(BOB_VIDEO, BOB_VIDEO_RTX),
        );
        call.start = call.room.now();
        call
    }

    /// Time since bob subscribed.
    pub fn elapsed(&self) -> Duration {
        self.room.now() - self.start
    }

    /// Sets bob's downlink: `capacity` bit/s, a queue of [`QUEUE`] at that rate, and the
    /// rest of `downlink`.
    pub fn set_downlink(&mut self, capacity: u64, downlink: LinkConfig) {
        self.capacity = capacity;
        let queue = (capacity as u128 * QUEUE.as_micros() / 8_000_000) as usize;
        // IPv4 + UDP headers count at the bottleneck, as on a real link.
        let config = downlink
            .with_rate(capacity)
            .with_queue_bytes(queue)
            .with_overhead_bytes(28);
        self.room
            .sim
            .net
            .link_mut(SERVER_ADDR, self.bob_addr)
            .set_config(config);
    }

    /// Runs the call for `duration` of simulated time.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.room.now() + duration;
        loop {
            self.react();
            let now = self.room.now();
            if now >= until {
                return;
            }
            if now >= self.next_audio {
                self.send_audio();
            }
            if now >= self.next_video {
                self.send_video();
            }
            if now >= self.next_feedback {
                self.send_feedback();
            }
            if now >= self.next_sample {
                self.sample();
            }
            let mut limit = until
                .min(self.next_audio)
                .min(self.next_video)
                .min(self.next_feedback)
                .min(self.next_sample);
            if let Some(at) = self.video_in.nack_timeout() {
                limit = limit.min(at.max(now));
            }
            if limit > now || !self.room.step(limit) {
                self.room.step(limit);
            }
        }
    }

    /// Samples of `from..to` (since bob subscribed).
    pub fn window(&self, from: Duration, to: Duration) -> impl Iterator<Item = &Sample> {
        self.samples
            .iter()
            .filter(move |s| s.at >= from && s.at < to)
    }

    /// Layer switches in `from..to`.
    pub fn switches_in(&self, from: Duration, to: Duration) -> usize {
        self.switches
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .count()
    }

    /// The first time at or after `from` when `pred` held for a sample.
    pub fn first(&self, from: Duration, pred: impl Fn(&Sample) -> bool) -> Option<Duration> {
        self.samples
            .iter()
            .find(|s| s.at >= from && pred(s))
            .map(|s| s.at)
    }

    /// Bob's downlink statistics: (sent, lost + queue-dropped).
    pub fn downlink_losses(&self) -> (u64, u64) {
        let link = self
            .room
            .sim
            .net
            .link(SERVER_ADDR, self.bob_addr)
            .expect("bob's downlink exists");
        let s = link.stats();
        (s.sent, s.lost + s.queue_dropped)
    }

    fn react(&mut self) {
        let now = self.room.now();
        while let Some(rtcp) = self.room.clients[self.alice.index].poll_rtcp() {
            for (layer, out) in self.layers_out.iter_mut().enumerate() {
                let before = out.keyframe_requests;
                let resend = out.on_rtcp(&rtcp);
                if out.keyframe_requests > before {
                    self.keyframe_wanted[layer] = true;
                }
                for packet in resend {
                    self.room.send_rtp(self.alice, &packet);
                }
            }
        }
        while let Some(rtp) = self.room.clients[self.bob.index].poll_rtp() {
            let Ok(info) = parse_rtp(&rtp) else { continue };
            if let Some(seq) = EXT_IDS.read(&rtp, &info).transport_wide_cc {
                self.bob_twcc.on_packet(now, seq);
            }
            if info.payload_len == 0 {
                continue; // padding
            }
            if !self.video_in.on_rtp(now, &rtp) {
                self.audio_in.on_rtp(now, &rtp);
            }
        }
        while self.room.clients[self.bob.index].poll_rtcp().is_some() {}
        if let Some(nack) = self
            .video_in
            .poll_nack(now, Duration::from_millis(120), 0xb0b)
        {
            self.room.send_rtcp(self.bob, &nack);
        }
        for event in self.room.server.events() {
            if let MediaEvent::ConsumerLayersChanged {
                consumer_id,
                spatial_layer,
                temporal_layer,
            } = event
                && consumer_id == self.video_consumer
            {
                if spatial_layer != self.layer {
                    self.switches.push((self.elapsed(), spatial_layer));
                }
                self.layer = spatial_layer;
                self.temporal = temporal_layer;
            }
        }
    }

    fn twcc(&mut self) -> u16 {
        self.twcc_seq = self.twcc_seq.wrapping_add(1);
        self.twcc_seq
    }

    fn send_audio(&mut self) {
        let seq = self.twcc();
        let packet = RtpPacket::new(0, 0, self.audio_ts, 0)
            .with_transport_cc(EXT_IDS.transport_wide_cc, seq)
            .with_audio_level(EXT_IDS.audio_level, true, 30)
            .with_payload(opus_payload(100));
        let bytes = self.audio_out.next(packet);
        self.room.send_rtp(self.alice, &bytes);
        self.audio_sent += 1;
        self.audio_ts = self.audio_ts.wrapping_add(960);
        self.next_audio += AUDIO_FRAME;
    }

    fn send_video(&mut self) {
        for layer in 0..self.layers_out.len() {
            let keyframe = std::mem::take(&mut self.keyframe_wanted[layer]);
            let frame_bytes = self.bitrates[layer] / 30 / 8;
            let mut left = if keyframe {
                frame_bytes * KEYFRAME_FACTOR
            } else {
                frame_bytes
            } as usize;
            self.picture_ids[layer] = (self.picture_ids[layer] + 1) & 0x7fff;
            let tid = [0, 2, 1, 2][self.frames % 4];
            if tid == 0 {
                self.tl0_pic_idx[layer] = self.tl0_pic_idx[layer].wrapping_add(1);
            }
            let temporal = self.temporal_layers.then_some((tid, tid > 0));
            let tl0_pic_idx = self.temporal_layers.then_some(self.tl0_pic_idx[layer]);
            let mut first = true;
            while left > 0 {
                let n = left.min(MAX_PAYLOAD);
                left -= n;
                let header = Vp8Header {
                    start_of_frame: first,
                    keyframe,
                    picture_id: Some(self.picture_ids[layer]),
                    tl0_pic_idx,
                    temporal,
                    width: 320 << layer,
                    height: 180 << layer,
                };
                first = false;
                let mut payload = vec![0u8; n.max(32)];
                header.write(&mut payload);
                let seq = self.twcc();
                let packet = RtpPacket::new(0, 0, self.video_ts, 0)
                    .with_marker(left == 0)
                    .with_transport_cc(EXT_IDS.transport_wide_cc, seq)
                    .with_payload(payload);
                let bytes = self.layers_out[layer].next(packet);
                self.room.send_rtp(self.alice, &bytes);
            }
        }
        self.video_ts = self.video_ts.wrapping_add(3000);
        self.frames += 1;
        self.next_video += VIDEO_FRAME;
    }

    fn send_feedback(&mut self) {
        let mut buf = [0u8; 1500];
        while self.bob_twcc.has_pending() {
            let Some(n) = self.bob_twcc.write_feedback(&mut buf, 0xb0b, BOB_VIDEO) else {
                break;
            };
            if ferrosoup_rtc::twcc::read_feedback(&buf[..n], |_, _| {}).is_err() {
                eprintln!("BAD FEEDBACK at {:?}: {:02x?}", self.elapsed(), &buf[..n]);
            }
            self.room.send_rtcp(self.bob, &buf[..n]);
        }
        self.next_feedback += FEEDBACK_EVERY;
    }

    fn sample(&mut self) {
        let now = self.room.now();
        let router = self.room.router;
        let stats = self
            .room
            .engine()
            .transport_stats(
                router,
                self.bob.transport,
                &ferrosoup_room::transmit::Collect::default(),
            )
            .expect("bob's transport exists");
        let estimate = stats[0]["availableOutgoingBitrate"].as_u64().unwrap_or(0);
        let queued = self
            .room
            .sim
            .net
            .link(SERVER_ADDR, self.bob_addr)
            .map_or(0, |l| l.queued_bytes(now));
        self.samples.push(Sample {
            at: self.elapsed(),
            estimate,
            capacity: self.capacity,
            queue_delay: Duration::from_micros(queued as u64 * 8_000_000 / self.capacity.max(1)),
            layer: self.layer,
            temporal: self.temporal,
            probes: stats[0]["bandwidthEstimation"]["probes"]
                .as_u64()
                .unwrap_or(0),
            bwe: stats[0]["bandwidthEstimation"].clone(),
        });
        self.next_sample += SAMPLE_EVERY;
    }
}
