//! Pipe transports between two nodes on simulated time: a pipe consumer on the publisher's
//! node forwards every simulcast layer as the producer sends it over SRTP
//! (AEAD_AES_256_GCM), a pipe producer on the other node stands for the producer there;
//! keyframe requests cross back and reach the publisher through its rate limit, NACKs
//! are answered from the publisher's node's packet store.

use std::time::{Duration, Instant};

use ferrosoup_room::ids::{ConsumerId, ProducerId};
use ferrosoup_room::sim::{
    Peer, SimNodes, VP8_PT, VP8_RTX_PT, vp8_simulcast_consumer, vp8_simulcast_producer,
};
use ferrosoup_room::stats::RtpDrop;
use ferrosoup_rtc::rtp::parse_rtp;
use ferrosoup_testkit::packets::{RtpPacket, Vp8Header};
use ferrosoup_testkit::{LinkConfig, StreamReceiver, StreamSender};

const LAYERS: [(u32, u32); 2] = [(0x2000, 0x2001), (0x2100, 0x2101)];
const BOB_VIDEO: u32 = 0x4444;
const BOB_VIDEO_RTX: u32 = 0x4445;
const FRAME: Duration = Duration::from_millis(33);
const PACKETS_PER_FRAME: usize = 3;
/// Where the pipe transports' sockets are (the first plain socket of each node).
const PIPE_A: &str = "10.0.0.1:50000";
const PIPE_B: &str = "10.0.0.2:50000";

/// Alice on node 0 publishes two VP8 simulcast layers; bob on node 1 consumes them
/// through a pipe.
struct PipeCall {
    nodes: SimNodes,
    alice: Peer,
    bob: Peer,
    producer: ProducerId,
    pipe_consumer: ConsumerId,
    layers: Vec<StreamSender>,
    keyframe_wanted: [bool; 2],
    picture_id: u16,
    ts: u32,
    next_frame: Instant,
    video_in: StreamReceiver,
}

impl PipeCall {
    fn new() -> Self {
        let mut nodes = SimNodes::new(LinkConfig::default().with_delay(Duration::from_millis(5)));
        let alice = nodes.join(0);
        let bob = nodes.join(1);
        let spec = vp8_simulcast_producer(&LAYERS);
        let producer = nodes.produce(alice, spec.clone());
        let pipe = nodes.pipe(0, producer, &spec);
        nodes.consume(
            bob,
            pipe.producer,
            vp8_simulcast_consumer(BOB_VIDEO, BOB_VIDEO_RTX),
        );
        let next_frame = nodes.now();
        Self {
            nodes,
            alice,
            bob,
            producer,
            pipe_consumer: pipe.consumer,
            layers: LAYERS
                .iter()
                .map(|&(ssrc, rtx)| StreamSender::new(ssrc, VP8_PT, Some((rtx, VP8_RTX_PT)), 100))
                .collect(),
            keyframe_wanted: [true; 2],
            picture_id: 0,
            ts: 0,
            next_frame,
            video_in: StreamReceiver::new(BOB_VIDEO, Some((BOB_VIDEO_RTX, VP8_RTX_PT, VP8_PT))),
        }
    }

    /// Runs `duration`: alice sends a frame on every layer each `FRAME` (a keyframe when
    /// asked) and answers NACKs, bob counts what he receives.
    fn run(&mut self, duration: Duration) {
        let until = self.nodes.now() + duration;
        loop {
            let limit = self.next_frame.min(until);
            while self.nodes.step(limit) {
                self.react();
            }
            if self.nodes.now() >= until {
                break;
            }
            self.send_frame();
        }
    }

    fn react(&mut self) {
        let now = self.nodes.now();
        while let Some(rtcp) = self.nodes.clients[self.alice.index].1.poll_rtcp() {
            for (i, layer) in self.layers.iter_mut().enumerate() {
                let asked = layer.keyframe_requests;
                let resend = layer.on_rtcp(&rtcp);
                if layer.keyframe_requests > asked {
                    self.keyframe_wanted[i] = true;
                }
                for packet in resend {
                    self.nodes.send_rtp(self.alice, &packet);
                }
            }
        }
        while let Some(rtp) = self.nodes.clients[self.bob.index].1.poll_rtp() {
            self.video_in.on_rtp(now, &rtp);
        }
        while self.nodes.clients[self.bob.index].1.poll_rtcp().is_some() {}
    }

    fn send_frame(&mut self) {
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        for l in 0..self.layers.len() {
            let keyframe = std::mem::take(&mut self.keyframe_wanted[l]);
            for i in 0..PACKETS_PER_FRAME {
                let header = Vp8Header {
                    start_of_frame: i == 0,
                    keyframe,
                    picture_id: Some(self.picture_id),
                    width: 320 << l,
                    height: 180 << l,
                    ..Vp8Header::default()
                };
                let mut payload = vec![0u8; 400];
                header.write(&mut payload);
                let packet = RtpPacket::new(0, 0, self.ts, 0)
                    .with_marker(i + 1 == PACKETS_PER_FRAME)
                    .with_payload(payload);
                let bytes = self.layers[l].next(packet);
                self.nodes.send_rtp(self.alice, &bytes);
            }
        }
        self.ts = self.ts.wrapping_add(2970);
        self.next_frame += FRAME;
    }

    fn sent(&self) -> u64 {
        self.layers.iter().map(|l| l.sent).sum()
    }

    fn keyframe_requests(&self) -> u64 {
        self.layers.iter().map(|l| l.keyframe_requests).sum()
    }
}

#[test]
fn a_pipe_carries_every_layer_and_the_consumer_behind_it_gets_video() {
    let mut call = PipeCall::new();
    call.run(Duration::from_secs(2));
    let sent = call.sent();
    let a = *call.nodes.engine(0).counters();
    let b = *call.nodes.engine(1).counters();
    // Every packet of both layers crossed the pipe once (the link loses nothing), and
    // node 1 took each one as its pipe producer's.
    assert_eq!(a.rtp_packets_in, sent);
    assert_eq!(b.rtp_dropped.get(RtpDrop::UnknownSsrc), 0);
    assert_eq!(b.rtp_dropped.get(RtpDrop::SrtpAuth), 0);
    assert_eq!(b.srtp_failures, 0);
    let pipe_in = b.rtp_packets_in;
    assert!(
        pipe_in + 2 * PACKETS_PER_FRAME as u64 >= sent && pipe_in <= sent,
        "node 1 received {pipe_in} of {sent}"
    );
    // Bob consumes the top layer, gapless, from the keyframe his consumer asked for on.
    assert!(call.keyframe_requests() >= 1);
    let frames = 2_000 / 33;
    assert!(
        call.video_in.distinct() >= (frames - 10) * PACKETS_PER_FRAME,
        "bob got {} packets",
        call.video_in.distinct()
    );
    assert_eq!(call.video_in.distinct() as u64, call.video_in.span());
}

#[test]
fn keyframe_requests_cross_the_pipe_aggregated_by_the_publishers_rate_limit() {
    let mut call = PipeCall::new();
    call.run(Duration::from_secs(1));
    let before = call.keyframe_requests();
    let plis_before = call.nodes.engine(0).counters().plis_received;
    // Bob asks three times in a row: node 1 sends one PLI over the pipe, node 0 one to
    // alice.
    let pli = ferrosoup_testkit::packets::pli(0xb0b, BOB_VIDEO);
    for _ in 0..3 {
        call.nodes.send_rtcp(call.bob, &pli);
    }
    call.run(Duration::from_millis(500));
    assert_eq!(call.nodes.engine(1).counters().plis_received, 3);
    let crossed = call.nodes.engine(0).counters().plis_received - plis_before;
    assert_eq!(crossed, 1, "one PLI crossed the pipe");
    assert_eq!(call.keyframe_requests(), before + 1);
}

#[test]
fn packets_lost_on_the_pipe_are_resent_from_the_publishers_node() {
    let mut call = PipeCall::new();
    call.run(Duration::from_millis(500));
    let (a, b) = (PIPE_A.parse().unwrap(), PIPE_B.parse().unwrap());
    call.nodes
        .sim
        .net
        .link_mut(a, b)
        .set_config(LinkConfig::random_loss(0.1).with_seed(3));
    call.run(Duration::from_secs(2));
    call.nodes
        .sim
        .net
        .link_mut(a, b)
        .set_config(LinkConfig::default().with_delay(Duration::from_millis(5)));
    call.run(Duration::from_secs(1));
    let node_a = *call.nodes.engine(0).counters();
    assert!(node_a.retransmissions > 10, "{node_a:?}");
    // What was lost on the pipe was repaired: node 1 asked (NACK), node 0 resent from its
    // store, and bob's stream has no hole.
    assert!(call.nodes.engine(1).counters().nacks_sent > 10);
    assert_eq!(call.video_in.distinct() as u64, call.video_in.span());
    assert!(call.video_in.distinct() > 200);
    // Alice was not asked for any of it: her link lost nothing.
    assert_eq!(call.layers.iter().map(|l| l.retransmitted).sum::<u64>(), 0);
}

#[test]
fn datagrams_from_anyone_but_the_pipe_peer_are_dropped() {
    let mut call = PipeCall::new();
    call.run(Duration::from_millis(300));
    let before = *call.nodes.engine(1).counters();
    let now = call.nodes.now();
    let packet = RtpPacket::new(VP8_PT, 1, 1, LAYERS[0].0).with_payload(vec![0u8; 100]);
    let mut bytes = packet.build();
    // From a stranger, and from the right address with no valid SRTP tag.
    let stranger = "10.9.9.9:1234".parse().unwrap();
    let sock = ferrosoup_room::plain::LocalSocket(0);
    let mut out = ferrosoup_room::transmit::Collect::default();
    call.nodes
        .engine(1)
        .handle_plain_datagram(now, sock, stranger, &mut bytes.clone(), &mut out);
    call.nodes.engine(1).handle_plain_datagram(
        now,
        sock,
        PIPE_A.parse().unwrap(),
        &mut bytes,
        &mut out,
    );
    let after = *call.nodes.engine(1).counters();
    assert_eq!(
        after.dropped_unknown_tuple,
        before.dropped_unknown_tuple + 1
    );
    assert_eq!(after.srtp_failures, before.srtp_failures + 1);
    assert!(parse_rtp(&bytes).is_ok());
    call.run(Duration::from_millis(300));
}

#[test]
fn the_publishers_sender_reports_cross_the_pipe_as_reports_of_the_pipe_streams() {
    let mut call = PipeCall::new();
    call.run(Duration::from_millis(1500));
    // Without a Sender Report of the producer, the pipe carries no RTCP toward node 1.
    let before = call.nodes.engine(1).counters().rtcp_in;
    for (ssrc, _) in LAYERS {
        let info = ferrosoup_rtc::rtcp::SenderInfo {
            ntp: 0x1234_5678_0000_0000,
            rtp_ts: call.ts,
            packets: 10,
            octets: 4000,
        };
        let sr = ferrosoup_testkit::packets::sender_report(ssrc, &info, &[]);
        call.nodes.send_rtcp(call.alice, &sr);
    }
    call.run(Duration::from_millis(1500));
    let after = call.nodes.engine(1).counters().rtcp_in;
    assert!(after > before, "node 1 got the pipe's Sender Reports");
    assert_eq!(call.nodes.engine(1).counters().srtp_failures, 0);
}

#[test]
fn closing_the_producer_closes_its_pipe_consumer() {
    let mut call = PipeCall::new();
    call.run(Duration::from_millis(300));
    let (producer, pipe) = (call.producer, call.pipe_consumer);
    let router = call.nodes.nodes[0].router;
    let closed = call
        .nodes
        .engine(0)
        .close_producer(router, producer)
        .expect("the producer exists");
    assert_eq!(closed, vec![pipe]);
    let sent = call.nodes.engine(0).counters().rtp_packets_out;
    call.run(Duration::from_millis(300));
    assert_eq!(call.nodes.engine(0).counters().rtp_packets_out, sent);
}
