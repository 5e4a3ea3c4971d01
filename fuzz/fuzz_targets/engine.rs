//! The whole worker engine: arbitrary datagrams into an engine with a connected publisher
//! (VP8 with RTX, and Opus producers) and a connected subscriber (consuming both), on the
//! manual clock. Clients are the testkit's `SimClient`s, connected through real ICE, DTLS
//! and SRTP, so besides raw bytes the fuzzer can send packets that are validly
//! SRTP-protected by a client around a fuzzed plaintext, and reach the RTP / RTCP parsing,
//! the producer's receive work, the fan-out and the feedback answers behind SRTP.
//!
//! Input: a sequence of ops, each an op byte then its arguments; the op byte modulo 8 is
//!
//! | op | arguments | what |
//! |---|---|---|
//! | 0, 1, 2 | `u16` length, bytes | raw datagram from the publisher's / the subscriber's / an unknown address |
//! | 3 | `u16` length, bytes | plain RTP protected by the publisher's client (skipped if it does not protect) |
//! | 4 | `u16` length, bytes | plain RTCP protected by the publisher's client |
//! | 5 | `u16` length, bytes | plain RTCP protected by the subscriber's client (NACK, PLI, RR about its consumers) |
//! | 6 | flags, `u16` sequence step (wrapping), size | a well-formed publisher packet (VP8, its RTX, Opus or an unknown SSRC), protected |
//! | 7 | `u16` milliseconds | the clock moves on; the engine's timers run in deadline order |
//!
//! (big-endian integers; a truncated op ends the input). Everything the engine sends is
//! delivered to the clients: an SRTP packet from the engine that does not authenticate is
//! a bug. Asserted: no panic, no timer that re-arms at the same instant forever.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferrosoup_room::sim::{
    EXT_IDS, OPUS_PT, Peer, SERVER_ADDR, SimRoom, VP8_PT, VP8_RTX_PT, opus_consumer, opus_producer,
    vp8_consumer, vp8_producer,
};
use ferrosoup_testkit::packets::{RtpPacket, Vp8Header};
use ferrosoup_testkit::{Datagram, Endpoint, LinkConfig};
use libfuzzer_sys::fuzz_target;

const VIDEO_SSRC: u32 = 0x1111;
const VIDEO_RTX_SSRC: u32 = 0x1112;
const AUDIO_SSRC: u32 = 0x1113;
/// The subscriber's consumer SSRCs (what its RTCP feedback names).
const SUB_VIDEO_SSRC: u32 = 0x3333;
const SUB_VIDEO_RTX_SSRC: u32 = 0x3334;
const SUB_AUDIO_SSRC: u32 = 0x3335;
/// Largest datagram an op carries (more than any UDP datagram the worker reads).
const MAX_LEN: usize = 2048;
/// Timer firings allowed per clock op before the engine counts as spinning.
const MAX_FIRINGS: usize = 100_000;

/// Reads the input op by op.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::from(self.u16()?).min(MAX_LEN).min(self.0.len());
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(bytes)
    }
}

/// The engine, its two clients and the publisher's stream state.
struct Fixture {
    room: SimRoom,
    publisher: Peer,
    subscriber: Peer,
    unknown: SocketAddr,
    now: Instant,
    video_seq: u16,
    rtx_seq: u16,
    audio_seq: u16,
    timestamp: u32,
    twcc: u16,
}

impl Fixture {
    fn new() -> Self {
        let mut room = SimRoom::new(LinkConfig::default());
        let publisher = room.join();
        let subscriber = room.join();
        let video = room.produce(publisher, vp8_producer(VIDEO_SSRC, Some(VIDEO_RTX_SSRC)));
        let audio = room.produce(publisher, opus_producer(AUDIO_SSRC));
        room.consume(
            subscriber,
            video,
            vp8_consumer(SUB_VIDEO_SSRC, Some(SUB_VIDEO_RTX_SSRC)),
        );
        room.consume(subscriber, audio, opus_consumer(SUB_AUDIO_SSRC));
        room.run_for(Duration::from_millis(10));
        let now = room.now();
        Self {
            room,
            publisher,
            subscriber,
            unknown: SocketAddr::from(([10, 9, 9, 9], 9999)),
            now,
            video_seq: 100,
            rtx_seq: 0,
            audio_seq: 200,
            timestamp: 0,
            twcc: 0,
        }
    }

    fn addr(&self, peer: Peer) -> SocketAddr {
        self.room.clients[peer.index].local_addr()
    }

    /// The engine handles a datagram, then the clients get what it sent.
    fn deliver(&mut self, from: SocketAddr, datagram: &[u8]) {
        let datagram = Datagram::new(from, SERVER_ADDR, datagram.to_vec());
        self.room.server.receive(self.now, datagram);
        self.flush_to_clients();
    }

    /// Delivers what the engine sent to the clients and drops what they answer; checks that
    /// every SRTP packet from the engine authenticates.
    fn flush_to_clients(&mut self) {
        while let Some(sent) = self.room.server.transmit() {
            if let Some(client) = self
                .room
                .clients
                .iter_mut()
                .find(|c| c.local_addr() == sent.to)
            {
                client.handle_datagram(self.now, sent.from, &sent.data);
                while client.poll_transmit().is_some() {}
                while client.poll_rtp().is_some() {}
                while client.poll_rtcp().is_some() {}
                while client.poll_stun_answer().is_some() {}
                assert_eq!(
                    client.stats().srtp_failures,
                    0,
                    "the engine sent SRTP its client cannot unprotect"
                );
            }
        }
        let _ = self.room.server.events();
    }

    /// `plain` protected by `peer`'s client as RTP or RTCP, if it protects.
    fn protect(&mut self, peer: Peer, plain: &[u8], rtcp: bool) -> Option<Vec<u8>> {
        let client = &mut self.room.clients[peer.index];
        while client.poll_transmit().is_some() {}
        let sent = if rtcp {
            client.send_rtcp(self.now, plain)
        } else {
            client.send_rtp(self.now, plain)
        };
        sent.ok()?;
        client.poll_transmit().map(|d| d.data)
    }

    /// A well-formed publisher packet chosen by `flags`, `step` and `size`, protected
    /// (`None` when SRTP refuses its index, e.g. a step back before the first packet).
    fn media(&mut self, flags: u8, step: u16, size: u8) -> Option<Vec<u8>> {
        self.twcc = self.twcc.wrapping_add(1);
        let payload_len = usize::from(size) * 4;
        let keyframe = flags & 0x04 != 0;
        let (pt, ssrc, seq, payload) = match flags & 0x03 {
            0 | 3 => {
                self.video_seq = self.video_seq.wrapping_add(step);
                if flags & 0x08 != 0 {
                    self.timestamp = self.timestamp.wrapping_add(3000);
                }
                let vp8 = Vp8Header {
                    start_of_frame: keyframe || flags & 0x10 != 0,
                    keyframe,
                    picture_id: (flags & 0x20 != 0).then_some(u16::from(size) << 4),
                    width: 640,
                    height: 360,
                    ..Vp8Header::default()
                };
                let mut payload = vec![0u8; vp8.len() + payload_len];
                vp8.write(&mut payload);
                let ssrc = if flags & 0x03 == 0 {
                    VIDEO_SSRC
                } else {
                    0xdead
                };
                (VP8_PT, ssrc, self.video_seq, payload)
            }
            1 => {
                // RTX: the original sequence number, then the original payload.
                self.rtx_seq = self.rtx_seq.wrapping_add(1);
                let original = self.video_seq.wrapping_sub(step);
                let mut payload = original.to_be_bytes().to_vec();
                payload.resize(2 + payload_len, 0x5a);
                (VP8_RTX_PT, VIDEO_RTX_SSRC, self.rtx_seq, payload)
            }
            _ => {
                self.audio_seq = self.audio_seq.wrapping_add(step);
                (OPUS_PT, AUDIO_SSRC, self.audio_seq, vec![0xfc; payload_len])
            }
        };
        let packet = RtpPacket::new(pt, seq, self.timestamp, ssrc)
            .with_marker(flags & 0x40 != 0)
            .with_transport_cc(EXT_IDS.transport_wide_cc, self.twcc)
            .with_audio_level(EXT_IDS.audio_level, flags & 0x80 != 0, size & 0x7f)
            .with_payload(payload);
        let publisher = self.publisher;
        self.protect(publisher, &packet.build(), false)
    }

    /// Moves the clock on by `ms`, running the engine's timers in deadline order.
    fn advance(&mut self, ms: u16) {
        let until = self.now + Duration::from_millis(u64::from(ms));
        let mut firings = 0;
        while let Some(at) = self.room.server.engine.poll_timeout()
            && at <= until
        {
            firings += 1;
            assert!(firings < MAX_FIRINGS, "timers re-armed at {at:?} forever");
            self.now = self.now.max(at);
            self.room.server.timeout(self.now);
            self.flush_to_clients();
        }
        self.now = until;
    }
}

fuzz_target!(|data: &[u8]| {
    let mut fx = Fixture::new();
    let mut input = Input(data);
    let (publisher, subscriber) = (fx.addr(fx.publisher), fx.addr(fx.subscriber));
    for _ in 0..256 {
        let Some(op) = input.byte() else { break };
        match op % 8 {
            op @ 0..=2 => {
                let Some(bytes) = input.bytes() else { break };
                let from = [publisher, subscriber, fx.unknown][usize::from(op)];
                fx.deliver(from, bytes);
            }
            op @ 3..=5 => {
                let Some(plain) = input.bytes() else { break };
                let (peer, from) = if op == 5 {
                    (fx.subscriber, subscriber)
                } else {
                    (fx.publisher, publisher)
                };
                if let Some(datagram) = fx.protect(peer, plain, op != 3) {
                    fx.deliver(from, &datagram);
                }
            }
            6 => {
                let (Some(flags), Some(step), Some(size)) =
                    (input.byte(), input.u16(), input.byte())
                else {
                    break;
                };
                if let Some(datagram) = fx.media(flags, step, size) {
                    fx.deliver(publisher, &datagram);
                }
            }
            _ => {
                let Some(ms) = input.u16() else { break };
                fx.advance(ms);
            }
        }
    }
});
