//! The real engine, set up for the benchmarks (`benches/`) and the allocation test
//! (`tests/no_alloc.rs`): a [`SimRoom`] on perfect links with one publisher and N
//! subscribers, all connected through real ICE, DTLS and SRTP (the testkit's
//! [`SimClient`](ferrosoup_testkit::SimClient)s against [`Engine`]). The publisher produces
//! VP8 (with RTX) and Opus; every subscriber consumes both.
//!
//! Once set up, the simulated network is left aside: [`Fanout`] takes datagrams the
//! publisher's client protected (with fresh sequence numbers, as SRTP replay protection
//! wants) and hands them to [`Engine::handle_datagram`] itself, so a benchmark can prepare
//! them first and time only the engine. What the engine sends goes to a [`Discard`].
//!
//! ```no_run
//! use ferrosoup_benches::Fanout;
//!
//! let mut fanout = Fanout::new(10);
//! let mut datagram = fanout.video_datagram(false);
//! fanout.handle(&mut datagram); // unprotect, parse, track, 10 × (decide, rewrite, protect)
//! fanout.advance(ferrosoup_benches::VIDEO_INTERVAL); // timers due by then
//! ```
//!
//! [`CrossWorker`] joins two such rooms with a pipe between workers (the real rings of
//! `ferrosoup_room::worker_pipe`): the publisher on one engine, the subscribers on the
//! other.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferrosoup_room::Engine;
use ferrosoup_room::engine::PlainRemote;
use ferrosoup_room::ids::{ConsumerId, ProducerId};
use ferrosoup_room::plain::LocalSocket;
use ferrosoup_room::plain::{PlainOptions, SrtpMasterKey, SrtpProfile};
use ferrosoup_room::sim::{
    EXT_IDS, OPUS_PT, Peer, SimRoom, VP8_PT, opus_consumer, opus_producer, vp8_consumer,
    vp8_producer,
};
use ferrosoup_room::transmit::{Collect, Discard, Transmit};
use ferrosoup_room::udp::MAX_DATAGRAM;
use ferrosoup_room::worker_pipe::{PipeEnd, WorkerPipes, is_pipe_socket};
use ferrosoup_rtc::demux::{PacketKind, classify};
use ferrosoup_testkit::LinkConfig;
use ferrosoup_testkit::packets::rtp::abs_send_time;
use ferrosoup_testkit::packets::{RtpPacket, Vp8Header, opus_payload};

/// The publisher's VP8 SSRC.
pub const VIDEO_SSRC: u32 = 0x1111_0001;
/// The publisher's VP8 RTX SSRC.
pub const VIDEO_RTX_SSRC: u32 = 0x1111_0002;
/// The publisher's Opus SSRC.
pub const AUDIO_SSRC: u32 = 0x1111_0003;
/// Length of a video RTP packet before SRTP (header, extensions, VP8 descriptor, payload).
pub const VIDEO_PACKET_LEN: usize = 1200;
/// Length of the Opus payload of an audio packet.
pub const AUDIO_PAYLOAD_LEN: usize = 100;
/// Video packets per frame (the RTP timestamp advances every this many packets).
pub const VIDEO_PACKETS_PER_FRAME: u16 = 4;
/// Simulated time between two video packets (about 120 packets/s, 1.2 Mbit/s).
pub const VIDEO_INTERVAL: Duration = Duration::from_millis(8);
/// Simulated time between two audio packets (one 20 ms Opus frame each).
pub const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// Clients send a consent check at least this often (the engine's consent timeout is 30 s).
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Numbering of one outgoing RTP stream of the publisher.
struct Stream {
    ssrc: u32,
    seq: u16,
    timestamp: u32,
}

/// The publisher, its subscribers and the engine between them (see the crate docs).
pub struct Fanout {
    /// The engine, the clients and the (no longer driven) simulated network.
    pub room: SimRoom,
    /// The publishing peer.
    pub publisher: Peer,
    /// The subscribing peers.
    pub subscribers: Vec<Peer>,
    /// The VP8 producer.
    pub video_producer: ProducerId,
    /// The Opus producer.
    pub audio_producer: ProducerId,
    /// One VP8 consumer per subscriber.
    pub video_consumers: Vec<ConsumerId>,
    /// One Opus consumer per subscriber.
    pub audio_consumers: Vec<ConsumerId>,
    /// Pipe consumers of the video producer ([`Fanout::add_pipe`]).
    pub pipes: Vec<ConsumerId>,
    /// Where everything the engine sends goes.
    pub out: Discard,
    /// Simulated now: the time every datagram is handled at.
    now: Instant,
    /// The time the room was set up (abs-send-time epoch of the publisher).
    start: Instant,
    last_keep_alive: Instant,
    from: SocketAddr,
    video: Stream,
    audio: Stream,
    packets_in_frame: u16,
    picture_id: u16,
    twcc_seq: u16,
    /// Video is sent in three temporal layers (L1T3: TID 0 2 1 2, TL0PICIDX, Y on the
    /// upper layers).
    temporal_layers: bool,
    /// Frames since the last keyframe (the L1T3 pattern's position).
    frames_since_key: usize,
    tl0_pic_idx: u8,
    /// Video packets of temporal layer 0 made so far.
    pub tid0_packets: u64,
}

impl Fanout {
    /// A room with a publisher and `subscribers` subscribers, connected, with producers and
    /// consumers, and warmed up: a keyframe and a few packets of each kind went through,
    /// so every consumer forwards from the next packet on.
    ///
    /// # Panics
    ///
    /// If a client does not connect or the warm-up packets are not forwarded (an engine
    /// bug).
    pub fn new(subscribers: usize) -> Self {
        let mut room = SimRoom::new(LinkConfig::default());
        let publisher = room.join();
        let subscribers: Vec<Peer> = (0..subscribers).map(|_| room.join()).collect();
        let video_producer =
            room.produce(publisher, vp8_producer(VIDEO_SSRC, Some(VIDEO_RTX_SSRC)));
        let audio_producer = room.produce(publisher, opus_producer(AUDIO_SSRC));
        let mut video_consumers = Vec::with_capacity(subscribers.len());
        let mut audio_consumers = Vec::with_capacity(subscribers.len());
        for (i, &peer) in subscribers.iter().enumerate() {
            let base = 0x2000_0000 + 16 * i as u32;
            video_consumers.push(room.consume(
                peer,
                video_producer,
                vp8_consumer(base, Some(base + 1)),
            ));
            audio_consumers.push(room.consume(peer, audio_producer, opus_consumer(base + 2)));
        }
        // What the control calls sent (keyframe requests) crosses the network.
        room.run_for(Duration::from_millis(50));
        let now = room.now();
        let from = room.clients[publisher.index].local_addr();
        let mut fanout = Self {
            room,
            publisher,
            subscribers,
            video_producer,
            audio_producer,
            video_consumers,
            audio_consumers,
            pipes: Vec::new(),
            out: Discard::default(),
            now,
            start: now,
            last_keep_alive: now,
            from,
            video: Stream {
                ssrc: VIDEO_SSRC,
                seq: 1000,
                timestamp: 90_000,
            },
            audio: Stream {
                ssrc: AUDIO_SSRC,
                seq: 2000,
                timestamp: 48_000,
            },
            packets_in_frame: 0,
            picture_id: 0,
            twcc_seq: 0,
            temporal_layers: false,
            frames_since_key: 0,
            tl0_pic_idx: 0,
            tid0_packets: 0,
        };
        fanout.warm_up();
        fanout
    }

    /// A keyframe, then video and audio until every consumer forwards.
    fn warm_up(&mut self) {
        let consumers = self.subscribers.len() as u64;
        for i in 0..64 {
            let mut video = self.video_datagram(i == 0);
            let before = self.engine().counters().rtp_packets_out;
            self.handle(&mut video);
            if i > 0 {
                assert_eq!(
                    self.engine().counters().rtp_packets_out - before,
                    consumers,
                    "every video consumer forwards after the keyframe"
                );
            }
            if i % 2 == 0 {
                let mut audio = self.audio_datagram();
                let before = self.engine().counters().rtp_packets_out;
                self.handle(&mut audio);
                assert_eq!(
                    self.engine().counters().rtp_packets_out - before,
                    consumers,
                    "every audio consumer forwards"
                );
            }
            self.advance(VIDEO_INTERVAL);
        }
        self.room.server.events();
    }

    /// Adds a pipe consumer of the video producer on a pipe transport (SRTP
    /// AEAD_AES_256_GCM) to another node at `10.9.0.1`, a port of its own per pipe: one
    /// more copy of every video packet, sent as the producer sent it.
    ///
    /// # Panics
    ///
    /// If the engine refuses the pipe (an engine bug).
    pub fn add_pipe(&mut self) -> ConsumerId {
        let (router, now, producer) = (self.room.router, self.now, self.video_producer);
        let n = self.pipes.len() as u16;
        let mut sockets = Collect::default();
        let engine = &mut self.room.server.engine;
        let options = PlainOptions {
            comedia: false,
            rtcp_mux: true,
            srtp: Some(SrtpProfile::AeadAes256Gcm),
        };
        let info = engine
            .create_plain_transport(router, options, now, &mut sockets)
            .expect("a pipe transport"); // ok: benchmark setup
        let remote = PlainRemote {
            rtp: Some(SocketAddr::from(([10, 9, 0, 1], 40000 + n))),
            rtcp: None,
            srtp: Some(SrtpMasterKey::generate(SrtpProfile::AeadAes256Gcm)),
        };
        engine
            .connect_plain_transport(router, info.id, remote, now, &mut sockets)
            .expect("the pipe transport connects"); // ok: benchmark setup
        let id = engine
            .consume_pipe(
                router,
                info.id,
                producer,
                &[0x5000_0000 + u32::from(n)],
                now,
                &mut sockets,
            )
            .expect("a pipe consumer") // ok: benchmark setup
            .id;
        self.pipes.push(id);
        id
    }

    /// The engine.
    pub fn engine(&mut self) -> &mut Engine {
        &mut self.room.server.engine
    }

    /// Simulated now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Sends the next video frames in three temporal layers (L1T3), or in one.
    pub fn set_temporal_layers(&mut self, on: bool) {
        self.temporal_layers = on;
    }

    /// The publisher's address (where its datagrams come from).
    pub fn publisher_addr(&self) -> SocketAddr {
        self.from
    }

    /// The next video packet of the publisher, SRTP-protected by its client: 1200 bytes of
    /// plain RTP with transport-wide-cc and abs-send-time, a VP8 descriptor with PictureID,
    /// [`VIDEO_PACKETS_PER_FRAME`] packets per frame. `keyframe` makes it the first packet
    /// of a key frame.
    pub fn video_datagram(&mut self, keyframe: bool) -> Vec<u8> {
        if keyframe || self.packets_in_frame >= VIDEO_PACKETS_PER_FRAME {
            self.next_frame(keyframe);
        }
        let start_of_frame = self.packets_in_frame == 0;
        self.packets_in_frame += 1;
        let tid = [0, 2, 1, 2][self.frames_since_key.saturating_sub(1) % 4];
        if !self.temporal_layers || tid == 0 {
            self.tid0_packets += 1;
        }
        let vp8 = Vp8Header {
            start_of_frame,
            keyframe: keyframe && start_of_frame,
            picture_id: Some(self.picture_id),
            tl0_pic_idx: self.temporal_layers.then_some(self.tl0_pic_idx),
            temporal: self.temporal_layers.then_some((tid, tid > 0)),
            width: 1280,
            height: 720,
        };
        let twcc = self.next_twcc();
        let mut packet = RtpPacket::new(
            VP8_PT,
            self.video.seq,
            self.video.timestamp,
            self.video.ssrc,
        )
        .with_marker(self.packets_in_frame == VIDEO_PACKETS_PER_FRAME)
        .with_transport_cc(EXT_IDS.transport_wide_cc, twcc)
        .with_abs_send_time(EXT_IDS.abs_send_time, self.abs_send_time());
        let mut payload = vec![0u8; VIDEO_PACKET_LEN - packet.header_len()];
        let n = vp8.write(&mut payload);
        for (i, b) in payload[n..].iter_mut().enumerate() {
            *b = i as u8;
        }
        packet.payload = payload;
        self.video.seq = self.video.seq.wrapping_add(1);
        self.protect(&packet)
    }

    /// Drops the next video sequence number, as if the packet was lost on the way in.
    pub fn lose_video(&mut self) {
        self.video.seq = self.video.seq.wrapping_add(1);
        self.packets_in_frame += 1;
        self.next_twcc();
    }

    /// The next audio packet of the publisher, SRTP-protected by its client: a
    /// [`AUDIO_PAYLOAD_LEN`]-byte Opus payload with transport-wide-cc and audio level.
    pub fn audio_datagram(&mut self) -> Vec<u8> {
        let twcc = self.next_twcc();
        let packet = RtpPacket::new(
            OPUS_PT,
            self.audio.seq,
            self.audio.timestamp,
            self.audio.ssrc,
        )
        .with_transport_cc(EXT_IDS.transport_wide_cc, twcc)
        .with_audio_level(EXT_IDS.audio_level, true, 40)
        .with_payload(opus_payload(AUDIO_PAYLOAD_LEN));
        self.audio.seq = self.audio.seq.wrapping_add(1);
        self.audio.timestamp = self.audio.timestamp.wrapping_add(960);
        self.protect(&packet)
    }

    /// [`Engine::handle_datagram`] of a datagram from the publisher, at simulated now.
    pub fn handle(&mut self, datagram: &mut [u8]) {
        let Self {
            room,
            from,
            now,
            out,
            ..
        } = self;
        room.server
            .engine
            .handle_datagram(*now, *from, datagram, out);
    }

    /// Moves simulated time on by `by` and runs the engine's timers due by then.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        let Self { room, now, out, .. } = self;
        room.server.engine.handle_timeout(*now, out);
    }

    /// [`Fanout::handle`] with what the engine sends going to `out`.
    pub fn handle_with(&mut self, datagram: &mut [u8], out: &mut dyn Transmit) {
        let (now, from) = (self.now, self.from);
        self.engine().handle_datagram(now, from, datagram, out);
    }

    /// [`Fanout::advance`] with what the engine sends going to `out`.
    pub fn advance_with(&mut self, by: Duration, out: &mut dyn Transmit) {
        self.now += by;
        let now = self.now;
        self.engine().handle_timeout(now, out);
    }

    /// When due, every client sends a consent check (so the engine's consent timer never
    /// expires however long a benchmark runs), and the engine's events are drained. This
    /// allocates: call it outside measurements.
    pub fn keep_alive_if_due(&mut self) {
        if self.now.duration_since(self.last_keep_alive) < KEEP_ALIVE {
            return;
        }
        self.last_keep_alive = self.now;
        for i in 0..self.room.clients.len() {
            let client = &mut self.room.clients[i];
            client.send_consent_check(self.now);
            let from = client.local_addr();
            while let Some(mut datagram) = client.poll_transmit() {
                self.room.server.engine.handle_datagram(
                    self.now,
                    from,
                    &mut datagram.data,
                    &mut self.out,
                );
            }
        }
        self.room.server.events();
    }

    /// Starts the next video frame (a keyframe restarts the temporal layer pattern).
    fn next_frame(&mut self, keyframe: bool) {
        if self.packets_in_frame > 0 {
            self.video.timestamp = self.video.timestamp.wrapping_add(3000);
        }
        self.packets_in_frame = 0;
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        self.frames_since_key = if keyframe {
            1
        } else {
            self.frames_since_key + 1
        };
        if self.frames_since_key.saturating_sub(1).is_multiple_of(4) {
            self.tl0_pic_idx = self.tl0_pic_idx.wrapping_add(1);
        }
    }

    fn next_twcc(&mut self) -> u16 {
        self.twcc_seq = self.twcc_seq.wrapping_add(1);
        self.twcc_seq
    }

    fn abs_send_time(&self) -> u32 {
        abs_send_time(self.now.duration_since(self.start))
    }

    /// Protects `packet` with the publisher's SRTP session.
    fn protect(&mut self, packet: &RtpPacket) -> Vec<u8> {
        let client = &mut self.room.clients[self.publisher.index];
        client
            .send_rtp(self.now, &packet.build())
            .expect("the publisher is connected");
        let datagram = client
            .poll_transmit()
            .expect("send_rtp queued the protected packet");
        debug_assert_eq!(classify(&datagram.data), PacketKind::Rtp);
        datagram.data
    }
}

/// What an engine sends in a [`CrossWorker`]: datagrams for a pipe's other side into its
/// ring (as a worker's output does), the rest counted and thrown away.
pub struct PipeOutput {
    buf: Box<[u8; MAX_DATAGRAM]>,
    /// The engine's pipe ends.
    pub pipes: WorkerPipes,
    /// Datagrams sent elsewhere than into a pipe.
    pub discarded: u64,
}

impl Default for PipeOutput {
    fn default() -> Self {
        Self {
            buf: Box::new([0; MAX_DATAGRAM]),
            pipes: WorkerPipes::default(),
            discarded: 0,
        }
    }
}

impl Transmit for PipeOutput {
    fn buffer(&mut self) -> &mut [u8; MAX_DATAGRAM] {
        &mut self.buf
    }

    fn commit(&mut self, len: usize, to: SocketAddr) {
        if !self.pipes.send(to, &self.buf[..len.min(MAX_DATAGRAM)]) {
            self.discarded += 1;
        }
    }

    fn attach_pipe(&mut self, end: PipeEnd) -> std::io::Result<(LocalSocket, SocketAddr)> {
        Ok(self.pipes.attach(end))
    }

    fn close_socket(&mut self, socket: LocalSocket) {
        if is_pipe_socket(socket) {
            self.pipes.close(socket);
        }
    }
}

/// A publisher on one engine (worker V, [`CrossWorker::from`], no subscribers there) whose
/// video producer is piped to another engine (worker W, [`CrossWorker::to`]) through a
/// pipe between workers, where each subscriber consumes the pipe producer. One thread
/// drives both engines in turn, as the two worker loops would: V handles the publisher's
/// datagrams (its pipe consumer copies each into the ring), wakes W once (the real mio
/// waker: an `eventfd` write), W takes them out of the ring and fans them out.
pub struct CrossWorker {
    /// Worker V's room: the publisher.
    pub from: Fanout,
    /// Worker W's room: the subscribers (their audio consumers of W's own publisher stay
    /// idle).
    pub to: Fanout,
    /// What V sends.
    pub from_out: PipeOutput,
    /// What W sends.
    pub to_out: PipeOutput,
    /// The pipe producer on W.
    pub pipe_producer: ProducerId,
    /// Consumers of the pipe producer on W, one per subscriber.
    pub consumers: Vec<ConsumerId>,
    /// The polls whose wakers the pipe uses (nothing polls them).
    _polls: [mio::Poll; 2],
}

impl CrossWorker {
    /// The two rooms, the pipe, `subscribers` consumers of the pipe producer on W, and a
    /// keyframe through it, so that every consumer forwards from the next packet on.
    ///
    /// # Panics
    ///
    /// If the engines refuse the pipe or a consumer, or do not forward (engine bugs).
    pub fn new(subscribers: usize) -> Self {
        let mut from = Fanout::new(0);
        let mut to = Fanout::new(subscribers);
        let polls = [
            mio::Poll::new().expect("poll"), // ok: benchmark setup
            mio::Poll::new().expect("poll"), // ok: benchmark setup
        ];
        let waker = |p: &mio::Poll| {
            std::sync::Arc::new(mio::Waker::new(p.registry(), mio::Token(0)).expect("waker")) // ok: benchmark setup
        };
        let (here, there) = ferrosoup_room::worker_pipe::pipe(waker(&polls[0]), waker(&polls[1]));
        let (mut from_out, mut to_out) = (PipeOutput::default(), PipeOutput::default());
        let ssrcs = [0x5000_0000];
        let (router, now, producer) = (from.room.router, from.now, from.video_producer);
        let engine = from.engine();
        let t = engine
            .create_worker_pipe_transport(router, here, now, &mut from_out)
            .expect("a pipe transport"); // ok: benchmark setup
        engine
            .consume_pipe(router, t, producer, &ssrcs, now, &mut from_out)
            .expect("a pipe consumer"); // ok: benchmark setup
        let (router, now) = (to.room.router, to.now);
        let engine = to.engine();
        let t = engine
            .create_worker_pipe_transport(router, there, now, &mut to_out)
            .expect("a pipe transport"); // ok: benchmark setup
        let spec = vp8_producer(VIDEO_SSRC, Some(VIDEO_RTX_SSRC)).for_pipe(&ssrcs);
        let pipe_producer = engine
            .produce(router, t, spec, now)
            .expect("a pipe producer"); // ok: benchmark setup
        // Each subscriber's video comes from the pipe producer instead of W's own
        // publisher (whose audio it keeps consuming): W's transports then hold what the
        // single-worker [`Fanout`]'s do.
        for id in std::mem::take(&mut to.video_consumers) {
            let router = to.room.router;
            to.engine()
                .close_consumer(router, id)
                .expect("the video consumer exists"); // ok: benchmark setup
        }
        let consumers = (0..subscribers)
            .map(|i| {
                let base = 0x3000_0000 + 16 * i as u32;
                let peer = to.subscribers[i];
                to.room
                    .consume(peer, pipe_producer, vp8_consumer(base, Some(base + 1)))
            })
            .collect();
        let mut cross = Self {
            from,
            to,
            from_out,
            to_out,
            pipe_producer,
            consumers,
            _polls: polls,
        };
        for i in 0..16 {
            let mut batch = [cross.from.video_datagram(i == 0)];
            let before = cross.forwarded();
            cross.forward(&mut batch);
            if i > 0 {
                assert_eq!(
                    cross.forwarded() - before,
                    subscribers as u64,
                    "every consumer of the pipe producer forwards after the keyframe"
                );
            }
            cross.advance(VIDEO_INTERVAL);
        }
        cross.to.room.server.events();
        cross.from.room.server.events();
        cross
    }

    /// RTP packets W sent (to its subscribers).
    pub fn forwarded(&mut self) -> u64 {
        self.to.engine().counters().rtp_packets_out
    }

    /// The publisher's `datagrams` through V into the pipe, one wake-up, and out of the
    /// pipe through W to its subscribers.
    pub fn forward(&mut self, datagrams: &mut [Vec<u8>]) {
        for d in datagrams {
            self.from.handle_with(d, &mut self.from_out);
        }
        self.from_out.pipes.flush();
        deliver(&mut self.to, &mut self.to_out);
    }

    /// Moves both engines' simulated time on by `by` (timers: reports, NACK rounds) and
    /// delivers what their timers sent through the pipe.
    pub fn advance(&mut self, by: Duration) {
        self.from.advance_with(by, &mut self.from_out);
        self.to.advance_with(by, &mut self.to_out);
        self.to_out.pipes.flush();
        self.from_out.pipes.flush();
        deliver(&mut self.from, &mut self.from_out);
        deliver(&mut self.to, &mut self.to_out);
    }
}

/// Hands everything waiting in the engine's pipe (its only one, slot 0) to the engine, as
/// a worker loop does, then wakes the other side if it sent into a drained ring.
fn deliver(side: &mut Fanout, out: &mut PipeOutput) {
    let now = side.now;
    if let Some((socket, from, mut rx)) = out.pipes.take_receiver(0) {
        let engine = side.engine();
        rx.drain(usize::MAX, |data| {
            engine.handle_plain_datagram(now, socket, from, data, out)
        });
        out.pipes.put_back(socket, rx);
    }
    out.pipes.flush();
}
