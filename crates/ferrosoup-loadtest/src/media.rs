//! The media loop: one thread owning every simulated transport's UDP socket, driving ICE
//! (client side), DTLS, SRTP, pacing and accounting for all of them.
//!
//! Signaling tasks hand transports, send streams and consumers over with [`Command`]s
//! (through a channel and a `mio` waker); nothing is sent back per packet. Timers (packet
//! pacing, STUN consent, DTLS retransmission, RTCP reports) live in one binary heap.
//!
//! Per packet the loop allocates nothing: packets are built in and received into buffers
//! owned by the loop, SRTP works in place, and the accounting state of every stream and
//! consumer is allocated when it is added.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use ferrosoup_rtc::demux::{PacketKind, classify};
use ferrosoup_rtc::dtls::{
    DtlsCertificate, DtlsEvent, DtlsRole, DtlsSession, DtlsState, Fingerprint,
};
use ferrosoup_rtc::rtcp::{
    RecvStats, RtcpItem, SenderInfo, ntp_from_unix, parse_compound, write_nack, write_rr, write_sr,
};
use ferrosoup_rtc::rtp::{RtpHeaderInfo, find_extension, parse_rtp, parse_transport_cc};
use ferrosoup_rtc::seq::SeqExtender;
use ferrosoup_rtc::srtp::SrtpSession;
use ferrosoup_rtc::twcc::{FEEDBACK_INTERVAL, TwccRecorder};
use ferrosoup_testkit::packets::stun::{BindingRequest, verify_binding_response};
use mio::{Events, Poll, Token, Waker};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::arrival;
use crate::cpu::{thread_cpu_time, thread_run_delay};
use crate::downlink::{Downlink, DownlinkCounters, LinkShape, Verdict};
use crate::link::Link;
use crate::payload::{
    AUDIO_PAYLOAD, Probe, RTP_HEADER_LEN, VideoRate, check_fill, fill, read_trailer,
    set_transport_cc, split_frame, vp8_filler_start, write_rtp_header_with, write_trailer,
    write_vp8_headers,
};
use crate::stats::{Histogram, SeqVerdict, SeqWindow};

/// Audio packet interval (Opus 20 ms frames: 50 packets/s).
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// Video frame interval (30 fps).
const VIDEO_INTERVAL: Duration = Duration::from_micros(33_333);
/// Video frames per second.
pub const VIDEO_FPS: u32 = 30;
/// Frames between key frames (2.5 s at 30 fps).
pub const GOP_FRAMES: u32 = 75;
/// Retry interval of STUN checks until the first success.
const STUN_RETRY: Duration = Duration::from_millis(250);
/// Consent refresh interval once connected.
const STUN_CONSENT: Duration = Duration::from_secs(2);
/// Interval of RTCP reports (SR from publishers, RR from subscribers).
const RTCP_INTERVAL: Duration = Duration::from_secs(1);
/// A pacing timer this late is rescheduled from now instead of catching up.
const MAX_CATCH_UP: Duration = Duration::from_millis(200);
/// Packets remembered per video stream for retransmission on NACK.
const HISTORY: usize = 256;
/// Bytes of one retransmission slot (largest plaintext video packet).
const HISTORY_SLOT: usize = 1152;
/// Largest number of sequence numbers asked for in one NACK.
const MAX_NACK: u64 = 64;
/// Report blocks per RR packet (RFC 3550 limit).
const MAX_REPORT_BLOCKS: usize = 31;
/// Token of the command waker.
const WAKER: Token = Token(usize::MAX);
/// Largest datagram received or built.
pub const BUF_LEN: usize = 2048;
/// A video consumer that received nothing sent in the last this long of the window ended
/// paused.
const END_SPAN: Duration = Duration::from_secs(1);

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Opus, 50 packets/s.
    Audio,
    /// VP8, 30 frames/s.
    Video,
}

/// One encoding a publisher sends.
#[derive(Debug, Clone)]
pub struct SendStreamSpec {
    /// Run-wide stream id, carried in every payload's trailer.
    pub stream_id: u32,
    /// SSRC of the encoding, as given in `produce`.
    pub ssrc: u32,
    /// Payload type from the router capabilities.
    pub pt: u8,
    /// Audio or video.
    pub kind: Kind,
    /// Target bitrate of a video encoding.
    pub kbps: u32,
    /// Width written into key frames.
    pub width: u16,
    /// Height written into key frames.
    pub height: u16,
    /// Video packets of a frame leave spaced at this multiple of `kbps` (0: back to back).
    pub pacing_factor: f64,
    /// Id of the transport-wide-cc header extension its packets carry (0: none).
    pub twcc_ext: u8,
}

/// One consumer of a subscriber, from the `consume` answer.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// The consumer's media SSRC.
    pub ssrc: u32,
    /// The consumer's RTX SSRC, if any.
    pub rtx_ssrc: Option<u32>,
    /// Audio or video.
    pub kind: Kind,
    /// Clock rate of the consumed codec.
    pub clock_rate: u32,
    /// Stream ids of the producer's encodings, lowest layer first.
    pub stream_ids: Vec<u32>,
    /// Id of the transport-wide-cc header extension in its packets (0: not negotiated).
    pub twcc_ext: u8,
}

/// A transport to bring up.
#[derive(Debug)]
pub struct TransportSpec {
    /// Run-wide transport id.
    pub id: u32,
    /// Run-wide peer index.
    pub peer: u32,
    /// Receives media (recv transport) rather than sending it.
    pub subscriber: bool,
    /// The server's ICE candidate.
    pub remote: SocketAddr,
    /// `remote` is a passive ICE-TCP candidate: connect to it over TCP (RFC 4571 framing).
    pub tcp: bool,
    /// Server ICE username fragment.
    pub server_ufrag: String,
    /// Server ICE password.
    pub server_pwd: String,
    /// Server DTLS fingerprints.
    pub fingerprints: Vec<Fingerprint>,
    /// When this peer started opening its WebSocket (join time origin).
    pub ws_opened: Instant,
    /// Check every received payload's filler pattern, not only its trailer.
    pub full_verify: bool,
    /// Counted in [`MediaReport`]'s consumers and transports (a peer of the scenario); a
    /// churn peer's transport is not.
    pub measured: bool,
    /// Stop reading the link once DTLS is connected (a stalled TCP reader).
    pub stall_reading: bool,
    /// A recv transport whose every incoming datagram goes through this capped link
    /// first (`--downlink-kbps`).
    pub downlink: Option<LinkShape>,
    /// A recv transport that records transport-wide sequence numbers and sends transport-cc
    /// feedback, as a browser does when it negotiated transport-cc.
    pub twcc_feedback: bool,
    /// Answered once DTLS is connected (or has failed).
    pub connected: oneshot::Sender<Result<(), String>>,
}

/// Requests to the media loop.
#[derive(Debug)]
pub enum Command {
    /// Open a socket and start ICE + DTLS.
    AddTransport(Box<TransportSpec>),
    /// Start sending these encodings on a transport once it is connected.
    AddSendStreams {
        /// Transport id.
        transport: u32,
        /// The encodings.
        streams: Vec<SendStreamSpec>,
    },
    /// Account packets of a new consumer.
    AddConsumer {
        /// Transport id.
        transport: u32,
        /// The consumer.
        consumer: ConsumerSpec,
    },
    /// Count packets sent in `[from, until)` for delivery and latency.
    Measure {
        /// Window start.
        from: Instant,
        /// Window end.
        until: Instant,
    },
    /// Close a transport's socket and forget it, its send streams and its consumers (a peer
    /// that left). Nothing is sent: whether the server hears a goodbye is up to signaling.
    RemoveTransport(u32),
    /// Counters for the progress line.
    Snapshot(oneshot::Sender<Progress>),
    /// Hand back everything measured so far; media keeps flowing.
    Results(oneshot::Sender<MediaReport>),
    /// Stop the loop: every socket closes.
    Stop,
}

/// Running totals for the progress line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Transports with DTLS connected.
    pub connected: usize,
    /// Transports added.
    pub transports: usize,
    /// RTP packets sent.
    pub packets_sent: u64,
    /// RTP packets received (after SRTP).
    pub packets_received: u64,
    /// SRTP/SRTCP unprotect failures.
    pub srtp_failures: u64,
    /// Median latency so far (ms), over the measurement window.
    pub latency_p50_ms: Option<f64>,
}

/// Counters of the whole run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// RTP packets sent (retransmissions excluded).
    pub packets_sent: u64,
    /// RTP bytes sent, protected.
    pub bytes_sent: u64,
    /// RTP packets received and accepted.
    pub packets_received: u64,
    /// RTP bytes received, protected.
    pub bytes_received: u64,
    /// SRTP/SRTCP unprotect failures.
    pub srtp_failures: u64,
    /// Packets whose SRTP unprotect succeeded.
    pub srtp_verified: u64,
    /// Payloads whose filler pattern was checked.
    pub payloads_checked: u64,
    /// Payloads without a valid trailer, from an unexpected stream, or with a bad filler.
    pub payload_errors: u64,
    /// Sequence numbers subscribers asked for in NACKs.
    pub nacks_sent: u64,
    /// Sequence numbers the server asked publishers for.
    pub nacks_received: u64,
    /// PLIs and FIRs received by publishers.
    pub plis_received: u64,
    /// Packets publishers resent on NACK.
    pub retransmissions_sent: u64,
    /// RTX packets subscribers received.
    pub retransmissions_received: u64,
    /// Key frames publishers sent.
    pub keyframes_sent: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// Packets for an SSRC no consumer has.
    pub unknown_ssrc: u64,
    /// Datagrams that arrived before SRTP was ready, or of an unexpected kind.
    pub dropped: u64,
    /// Datagrams the socket refused to send.
    pub send_errors: u64,
    /// Pacing timers that fired more than 200 ms late (the loop is overloaded).
    pub late_timers: u64,
    /// Transport-cc feedback packets subscribers sent.
    pub twcc_feedbacks_sent: u64,
    /// Padding-only packets (the server's probes) subscribers received.
    pub padding_received: u64,
}

/// What one consumer received in the measurement window.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerResult {
    /// Peer index of the subscriber.
    pub peer: u32,
    /// Audio or video.
    pub kind: Kind,
    /// Packets the producer sent in the window on the layer this consumer mostly received.
    pub expected: u64,
    /// Distinct packets of the window received.
    pub received: u64,
    /// Sequence-number span of the window's packets (what the SFU sent).
    pub seq_span: u64,
    /// Packets of the window received per source layer (simulcast encoding), lowest first.
    pub per_layer: [u64; 3],
    /// Bytes (SRTP datagrams) of the window's packets received.
    pub bytes: u64,
    /// Source layer of the last packet of the window received; `None` when no packet sent
    /// in the window's last second arrived (the consumer ended paused, or starved).
    pub end_layer: Option<u8>,
}

/// Join outcome of one transport.
#[derive(Debug, Clone, Copy)]
pub struct TransportResult {
    /// Peer index.
    pub peer: u32,
    /// Recv transport.
    pub subscriber: bool,
    /// WebSocket open → first media packet (sent by publishers, received by subscribers).
    pub join: Option<Duration>,
    /// Its capped link's counts, when it has one.
    pub downlink: Option<DownlinkCounters>,
}

/// Everything the media loop measured.
#[derive(Debug, Clone)]
pub struct MediaReport {
    /// Per consumer.
    pub consumers: Vec<ConsumerResult>,
    /// Per transport.
    pub transports: Vec<TransportResult>,
    /// One-way latency of the window's packets: send time to the kernel's arrival stamp at
    /// the subscriber's socket (the SFU's forwarding plus loopback).
    pub latency: Histogram,
    /// Send time to the moment the media loop read the packet: [`MediaReport::latency`]
    /// plus the load tester's own queueing.
    pub app_latency: Histogram,
    /// Time the loop spent per wake-up during the window (µs): packets arriving meanwhile
    /// wait in their sockets, so this bounds the load tester's own share of the latency.
    pub busy: Histogram,
    /// Totals.
    pub counters: Counters,
    /// CPU time of the media thread from the window start until [`Command::Results`].
    pub cpu: Duration,
    /// Time the media thread waited for a CPU (run queue) from the window start until
    /// [`Command::Results`].
    pub run_delay: Duration,
    /// Wall time from the window start until [`Command::Results`].
    pub wall: Duration,
}

/// Handle to the media thread.
#[derive(Debug)]
pub struct MediaHandle {
    tx: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

/// The media thread has ended.
#[derive(Debug, thiserror::Error)]
#[error("the media loop has stopped")]
pub struct MediaGone;

impl MediaHandle {
    /// Starts the media thread. `epoch` is the origin of the send times in payloads.
    pub fn spawn(epoch: Instant, cert: Arc<DtlsCertificate>) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("loadtest-media".into())
            .spawn(move || MediaLoop::new(poll, rx, epoch, cert).run())?;
        Ok(Self {
            tx,
            waker,
            thread: Some(thread),
        })
    }

    /// Sends a command and wakes the loop.
    pub fn send(&self, command: Command) -> Result<(), MediaGone> {
        self.tx.send(command).map_err(|_| MediaGone)?;
        self.waker.wake().map_err(|_| MediaGone)
    }

    /// Waits for the thread to end (after [`Command::Stop`]).
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Stream(u32),
    Rtcp(u32),
    Stun(u32),
    Dtls(u32),
    /// Transport-cc feedback of a subscriber.
    Feedback(u32),
    /// The next datagram leaves a subscriber's capped link.
    Downlink(u32),
}

/// Plaintext copies of the last packets of a video stream, by sequence number.
struct History {
    data: Box<[u8]>,
    lens: Box<[u16]>,
}

impl History {
    fn new() -> Self {
        Self {
            data: vec![0; HISTORY * HISTORY_SLOT].into_boxed_slice(),
            lens: vec![0; HISTORY].into_boxed_slice(),
        }
    }

    fn store(&mut self, seq: u16, packet: &[u8]) {
        let i = usize::from(seq) % HISTORY;
        if packet.len() <= HISTORY_SLOT {
            self.data[i * HISTORY_SLOT..i * HISTORY_SLOT + packet.len()].copy_from_slice(packet);
            self.lens[i] = packet.len() as u16;
        } else {
            self.lens[i] = 0;
        }
    }

    fn get(&self, seq: u16) -> Option<&[u8]> {
        let i = usize::from(seq) % HISTORY;
        let len = usize::from(self.lens[i]);
        let packet = &self.data[i * HISTORY_SLOT..i * HISTORY_SLOT + len];
        (len >= RTP_HEADER_LEN && packet[2..4] == seq.to_be_bytes()).then_some(packet)
    }
}

struct SendStream {
    transport: u32,
    spec: SendStreamSpec,
    seq: u16,
    ts: u32,
    counter: u32,
    rate: VideoRate,
    frames_since_key: u32,
    key_requested: bool,
    next_due: Option<Instant>,
    /// The video frame being paced out, if its last packet has not left yet.
    frame: Option<FrameInFlight>,
    sent_in_window: u64,
    packets: u32,
    octets: u32,
    history: Option<History>,
}

/// When a stream sends next.
enum NextSend {
    /// The next packet of the frame in flight, at this time.
    Packet(Instant),
    /// The next frame: one `period` after the current one was `due`.
    Frame { due: Instant, period: Duration },
}

/// A video frame whose packets leave spaced by the pacer.
#[derive(Debug, Clone, Copy)]
struct FrameInFlight {
    key: bool,
    packets: usize,
    /// Payload bytes per packet.
    each: usize,
    /// Packets already sent.
    sent: usize,
    /// When the frame (its first packet) was due.
    due: Instant,
    /// Time between two of its packets.
    spacing: Duration,
}

impl FrameInFlight {
    /// When packet `i` of the frame may leave.
    fn packet_due(&self, i: usize) -> Instant {
        self.due + self.spacing * i as u32
    }
}

/// Time between two packets of a video frame of `packets` packets of `each` payload bytes:
/// the time the packet takes at `factor` times the stream's bitrate, as libwebrtc's pacer
/// spaces them (its default factor is 2.5), but never so slow that the frame overruns the
/// frame interval. A factor of 0 sends the packets back to back.
fn pacing_interval(each: usize, kbps: u32, factor: f64, packets: usize) -> Duration {
    if factor <= 0.0 || kbps == 0 || packets < 2 {
        return Duration::ZERO;
    }
    let bits = (each + RTP_HEADER_LEN) as f64 * 8.0;
    let at_rate = Duration::from_secs_f64(bits / (factor * f64::from(kbps) * 1000.0));
    at_rate.min(VIDEO_INTERVAL / packets as u32)
}

struct Consumer {
    peer: u32,
    spec: ConsumerSpec,
    seq: SeqExtender,
    window: SeqWindow,
    stats: RecvStats,
    received_in_window: [u64; 3],
    bytes_in_window: u64,
    /// Layer and send time of the newest packet of the window received.
    last_in_window: Option<(u8, u64)>,
    seq_min: u64,
    seq_max: u64,
}

/// What [`Consumer::receive`] needs besides the packet.
struct RecvContext<'a> {
    now: Instant,
    /// `now` in microseconds since the epoch.
    now_us: u64,
    /// When the kernel received the packet, in microseconds since the epoch (`now_us` when
    /// it gave no stamp).
    arrival_us: u64,
    window_us: Option<(u64, u64)>,
    full_verify: bool,
    /// Length of the datagram (SRTP-protected).
    datagram_len: usize,
    counters: &'a mut Counters,
    latency: &'a mut Histogram,
    app_latency: &'a mut Histogram,
}

impl Consumer {
    fn new(peer: u32, spec: ConsumerSpec) -> Self {
        Self {
            peer,
            spec,
            seq: SeqExtender::new(),
            window: SeqWindow::new(),
            stats: RecvStats::new(),
            received_in_window: [0; 3],
            bytes_in_window: 0,
            last_in_window: None,
            seq_min: u64::MAX,
            seq_max: 0,
        }
    }

    /// Accounts one decrypted packet of this consumer (media or RTX). Returns the extended
    /// sequence numbers to NACK (those skipped just before it; video only, at most
    /// [`MAX_NACK`]), usually empty.
    fn receive(
        &mut self,
        rx: &mut RecvContext<'_>,
        packet: &[u8],
        info: &RtpHeaderInfo,
    ) -> Range<u64> {
        let none = 0..0;
        let mut payload = info.payload(packet);
        let mut seq = info.sequence_number;
        let rtx = self.spec.ssrc != info.ssrc;
        if rtx {
            // RFC 4588: the original sequence number leads the RTX payload.
            let Some((osn, original)) = payload.split_first_chunk::<2>() else {
                rx.counters.payload_errors += 1;
                return none;
            };
            seq = u16::from_be_bytes(*osn);
            payload = original;
            rx.counters.retransmissions_received += 1;
        }
        let ext = self.seq.extend(seq);
        let gap = match self.window.insert(ext) {
            SeqVerdict::Duplicate => {
                rx.counters.duplicates += 1;
                return none;
            }
            SeqVerdict::New { gap } => gap,
        };
        if !rtx {
            self.stats.on_packet(
                rx.now,
                ext,
                info.timestamp,
                self.spec.clock_rate,
                packet.len(),
            );
        }
        rx.counters.packets_received += 1;
        let missing = if gap > 0 && self.spec.kind == Kind::Video && !rtx {
            ext - gap.min(MAX_NACK)..ext
        } else {
            none.clone()
        };
        let Some(probe) = read_trailer(payload) else {
            rx.counters.payload_errors += 1;
            return missing;
        };
        let Some(layer) = self
            .spec
            .stream_ids
            .iter()
            .position(|&s| s == probe.stream_id)
        else {
            rx.counters.payload_errors += 1;
            return missing;
        };
        if rx.full_verify {
            let from = match self.spec.kind {
                Kind::Audio => 0,
                Kind::Video => vp8_filler_start(payload),
            };
            rx.counters.payloads_checked += 1;
            if !check_fill(payload, from, probe.counter) {
                rx.counters.payload_errors += 1;
                return missing;
            }
        }
        if let Some((from, until)) = rx.window_us
            && (from..until).contains(&probe.send_us)
        {
            rx.latency
                .record(rx.arrival_us.saturating_sub(probe.send_us));
            rx.app_latency
                .record(rx.now_us.saturating_sub(probe.send_us));
            if let Some(n) = self.received_in_window.get_mut(layer) {
                *n += 1;
            }
            self.bytes_in_window += rx.datagram_len as u64;
            if self
                .last_in_window
                .is_none_or(|(_, at)| probe.send_us >= at)
            {
                self.last_in_window = Some((layer as u8, probe.send_us));
            }
            self.seq_min = self.seq_min.min(ext);
            self.seq_max = self.seq_max.max(ext);
        }
        missing
    }
}

struct Transport {
    spec: TransportSpec,
    connected_tx: Option<oneshot::Sender<Result<(), String>>>,
    link: Link,
    local_ufrag: String,
    tie_breaker: u64,
    ice_ok: bool,
    dtls: Option<DtlsSession>,
    srtp: Option<SrtpSession>,
    streams: Vec<u32>,
    consumers: Vec<Consumer>,
    first_media: Option<Instant>,
    rtcp_ssrc: u32,
    /// Subscriber: arrivals of the server's transport-wide sequence numbers, for feedback.
    twcc: Option<TwccRecorder>,
    /// Subscriber: the transport-wide-cc id of its consumers' packets (0: none yet).
    twcc_ext: u8,
    /// Subscriber: SSRC of the last packet with a transport-wide sequence number (the
    /// media SSRC of the feedback, as libwebrtc fills it).
    twcc_media_ssrc: u32,
    /// Publisher: the next transport-wide sequence number.
    twcc_seq: u16,
    /// Subscriber: its capped link, and whether its release timer is armed.
    downlink: Option<(Downlink, bool)>,
}

struct MediaLoop {
    poll: Poll,
    commands: mpsc::Receiver<Command>,
    epoch: Instant,
    /// `epoch` on the kernel's receive-stamp clock (`CLOCK_REALTIME`).
    epoch_realtime: Duration,
    cert: Arc<DtlsCertificate>,
    transports: Vec<Option<Transport>>,
    streams: Vec<Option<SendStream>>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    window_us: Option<(u64, u64)>,
    /// Window start: wall time, thread CPU time and run-queue delay then.
    window_started: Option<(Instant, Duration, Duration)>,
    latency: Histogram,
    app_latency: Histogram,
    busy: Histogram,
    counters: Counters,
    out: Box<[u8; BUF_LEN]>,
}

/// Microseconds from `epoch` to `t`.
fn micros(epoch: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(epoch).as_micros() as u64
}

/// A STUN Binding request as a controlling browser sends it, nominating the pair (`None`
/// if the server's ufrag is too long to encode).
fn binding_request(
    server_ufrag: &str,
    server_pwd: &str,
    local_ufrag: &str,
    tie_breaker: u64,
) -> Option<Vec<u8>> {
    BindingRequest::new(server_ufrag, local_ufrag, server_pwd)
        .with_tie_breaker(tie_breaker)
        .nominate()
        .try_build()
        .ok()
}

/// Whether `datagram` is a Binding success response authenticated with `pwd`.
fn is_binding_success(datagram: &[u8], pwd: &str) -> bool {
    verify_binding_response(datagram, pwd).is_ok()
}

fn send_datagram(link: &Link, data: &[u8], counters: &mut Counters) -> bool {
    match link.send(data) {
        Ok(_) => true,
        Err(_) => {
            counters.send_errors += 1;
            false
        }
    }
}

/// The transport-wide-cc element a publisher's next packet carries (`None` when the stream
/// has no id for it), and counts the sequence number out.
fn next_twcc(seq: &mut u16, id: u8) -> Option<(u8, u16)> {
    (id != 0).then(|| {
        let this = *seq;
        *seq = seq.wrapping_add(1);
        (id, this)
    })
}

/// Marks the stream of `ssrc` among `on` for a key frame.
fn request_key(streams: &mut [Option<SendStream>], on: &[u32], ssrc: u32) {
    for &sid in on {
        if let Some(Some(s)) = streams.get_mut(sid as usize)
            && s.spec.ssrc == ssrc
        {
            s.key_requested = true;
        }
    }
}

impl MediaLoop {
    fn new(
        poll: Poll,
        commands: mpsc::Receiver<Command>,
        epoch: Instant,
        cert: Arc<DtlsCertificate>,
    ) -> Self {
        Self {
            poll,
            commands,
            epoch,
            epoch_realtime: arrival::realtime_now().saturating_sub(epoch.elapsed()),
            cert,
            transports: Vec::new(),
            streams: Vec::new(),
            timers: BinaryHeap::new(),
            window_us: None,
            window_started: None,
            latency: Histogram::new(),
            app_latency: Histogram::new(),
            busy: Histogram::new(),
            counters: Counters::default(),
            out: Box::new([0; BUF_LEN]),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut buf = [0u8; BUF_LEN];
        let mut woke: Option<Instant> = None;
        loop {
            loop {
                match self.commands.try_recv() {
                    Ok(command) => {
                        if self.on_command(command) {
                            return;
                        }
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    // Every handle is gone: nobody wants the results.
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
            let now = Instant::now();
            self.fire_timers(now);
            let timeout = self
                .timers
                .peek()
                .map(|Reverse((at, _))| at.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_millis(100));
            if let (Some(at), Some(_)) = (woke, self.window_us) {
                self.busy
                    .record(Instant::now().saturating_duration_since(at).as_micros() as u64);
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                warn!("media loop poll failed: {e}");
                return;
            }
            woke = Some(Instant::now());
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                let id = event.token().0;
                if event.is_writable()
                    && let Some(Some(t)) = self.transports.get(id)
                    && t.link.flush().is_err()
                {
                    self.counters.send_errors += 1;
                }
                while let Some(Some(t)) = self.transports.get(id) {
                    match t.link.recv(&mut buf) {
                        Ok((n, stamp)) => self.on_datagram(id, &mut buf[..n], stamp),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            // ICMP errors (server gone) surface here; stop draining.
                            self.counters.dropped += 1;
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Handles one command; `true` when the loop must stop.
    fn on_command(&mut self, command: Command) -> bool {
        let now = Instant::now();
        match command {
            Command::AddTransport(spec) => self.add_transport(*spec, now),
            Command::AddSendStreams { transport, streams } => {
                for spec in streams {
                    let id = spec.stream_id as usize;
                    if self.streams.len() <= id {
                        self.streams.resize_with(id + 1, || None);
                    }
                    let video = spec.kind == Kind::Video;
                    self.streams[id] = Some(SendStream {
                        transport,
                        rate: VideoRate::new(spec.kbps, VIDEO_FPS, GOP_FRAMES),
                        spec,
                        seq: rand::random(),
                        ts: rand::random(),
                        counter: 0,
                        frames_since_key: 0,
                        key_requested: true,
                        next_due: None,
                        frame: None,
                        sent_in_window: 0,
                        packets: 0,
                        octets: 0,
                        history: video.then(History::new),
                    });
                    if let Some(Some(t)) = self.transports.get_mut(transport as usize) {
                        t.streams.push(id as u32);
                    }
                }
                self.schedule_streams(transport, now);
            }
            Command::AddConsumer {
                transport,
                consumer,
            } => {
                if let Some(Some(t)) = self.transports.get_mut(transport as usize) {
                    if t.twcc_ext == 0 {
                        t.twcc_ext = consumer.twcc_ext;
                    }
                    t.consumers.push(Consumer::new(t.spec.peer, consumer));
                }
            }
            Command::Measure { from, until } => {
                self.window_us = Some((micros(self.epoch, from), micros(self.epoch, until)));
                self.window_started = Some((now, thread_cpu_time(), thread_run_delay()));
            }
            Command::Snapshot(reply) => {
                let live = self.transports.iter().flatten();
                let _ = reply.send(Progress {
                    connected: live.clone().filter(|t| t.srtp.is_some()).count(),
                    transports: live.count(),
                    packets_sent: self.counters.packets_sent,
                    packets_received: self.counters.packets_received,
                    srtp_failures: self.counters.srtp_failures,
                    latency_p50_ms: self.latency.quantile_us(0.5).map(|us| us as f64 / 1000.0),
                });
            }
            Command::RemoveTransport(id) => self.remove_transport(id),
            Command::Results(reply) => {
                let _ = reply.send(self.results());
            }
            Command::Stop => return true,
        }
        false
    }

    /// Forgets transport `id` with its streams and consumers; its timers find nothing when
    /// they fire and are not re-armed.
    fn remove_transport(&mut self, id: u32) {
        let Some(mut t) = self.transports.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        if let Err(e) = t.link.deregister(self.poll.registry()) {
            debug!(transport = id, "deregister socket: {e}");
        }
        for &sid in &t.streams {
            if let Some(slot) = self.streams.get_mut(sid as usize) {
                *slot = None;
            }
        }
    }

    fn add_transport(&mut self, mut spec: TransportSpec, now: Instant) {
        let id = spec.id as usize;
        let mut link = match Link::open(spec.remote, spec.tcp) {
            Ok(s) => s,
            Err(e) => {
                let kind = if spec.tcp {
                    "tcp connection"
                } else {
                    "udp socket"
                };
                let _ = spec.connected.send(Err(format!("{kind}: {e}")));
                return;
            }
        };
        if let Err(e) = link.register(self.poll.registry(), Token(id)) {
            let _ = spec.connected.send(Err(format!("register socket: {e}")));
            return;
        }
        let (tx, _) = oneshot::channel();
        let connected_tx = Some(std::mem::replace(&mut spec.connected, tx));
        if self.transports.len() <= id {
            self.transports.resize_with(id + 1, || None);
        }
        let subscriber = spec.subscriber;
        let twcc = (subscriber && spec.twcc_feedback).then(|| TwccRecorder::new(now));
        let downlink = spec
            .downlink
            .filter(|_| subscriber)
            .map(|shape| (Downlink::new(shape, now), false));
        self.transports[id] = Some(Transport {
            spec,
            connected_tx,
            link,
            local_ufrag: format!("lt{:08x}", rand::random::<u32>()),
            tie_breaker: rand::random(),
            ice_ok: false,
            dtls: None,
            srtp: None,
            streams: Vec::new(),
            consumers: Vec::new(),
            first_media: None,
            rtcp_ssrc: rand::random(),
            twcc,
            twcc_ext: 0,
            twcc_media_ssrc: 0,
            twcc_seq: rand::random(),
            downlink,
        });
        self.timers.push(Reverse((now, Timer::Stun(id as u32))));
    }

    fn schedule_streams(&mut self, transport: u32, now: Instant) {
        let Some(Some(t)) = self.transports.get(transport as usize) else {
            return;
        };
        if t.srtp.is_none() {
            return;
        }
        for &sid in &t.streams {
            if let Some(Some(s)) = self.streams.get_mut(sid as usize)
                && s.next_due.is_none()
            {
                let period = match s.spec.kind {
                    Kind::Audio => AUDIO_INTERVAL,
                    Kind::Video => VIDEO_INTERVAL,
                };
                // Spread the streams' phases so their packets do not all leave at once.
                let phase = period.mul_f64(rand::random::<f64>());
                let due = now + phase;
                s.next_due = Some(due);
                self.timers.push(Reverse((due, Timer::Stream(sid))));
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, timer))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Stream(sid) => self.on_stream_timer(sid, at, now),
                Timer::Stun(t) => self.on_stun_timer(t, now),
                Timer::Dtls(t) => {
                    if let Some(Some(tr)) = self.transports.get_mut(t as usize)
                        && let Some(dtls) = tr.dtls.as_mut()
                    {
                        dtls.handle_timeout(now);
                    }
                    self.after_dtls(t as usize, now);
                }
                Timer::Rtcp(t) => self.on_rtcp_timer(t, now),
                Timer::Feedback(t) => self.on_feedback_timer(t, now),
                Timer::Downlink(t) => self.on_downlink_timer(t, now),
            }
        }
    }

    fn on_stun_timer(&mut self, id: u32, now: Instant) {
        let Some(Some(t)) = self.transports.get(id as usize) else {
            return;
        };
        if let Some(request) = binding_request(
            &t.spec.server_ufrag,
            &t.spec.server_pwd,
            &t.local_ufrag,
            t.tie_breaker,
        ) {
            send_datagram(&t.link, &request, &mut self.counters);
        }
        let next = if t.ice_ok { STUN_CONSENT } else { STUN_RETRY };
        self.timers.push(Reverse((now + next, Timer::Stun(id))));
    }

    /// Sends what DTLS queued, handles its events and re-arms its timer.
    fn after_dtls(&mut self, id: usize, now: Instant) {
        let Some(Some(t)) = self.transports.get_mut(id) else {
            return;
        };
        let Some(dtls) = t.dtls.as_mut() else {
            return;
        };
        while let Some(datagram) = dtls.poll_transmit() {
            send_datagram(&t.link, &datagram, &mut self.counters);
        }
        let mut became_connected = false;
        let stall = t.spec.stall_reading;
        while let Some(event) = dtls.poll_event() {
            match event {
                DtlsEvent::Connected(keys) => match SrtpSession::new(&keys) {
                    Ok(srtp) => {
                        t.srtp = Some(srtp);
                        became_connected = true;
                        // From now on nothing is read: the server's buffers toward it fill.
                        if stall && let Err(e) = t.link.deregister(self.poll.registry()) {
                            debug!(transport = id, "deregister stalled link: {e}");
                        }
                        if let Some(tx) = t.connected_tx.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    Err(e) => {
                        if let Some(tx) = t.connected_tx.take() {
                            let _ = tx.send(Err(format!("srtp: {e}")));
                        }
                    }
                },
                DtlsEvent::Failed(reason) => {
                    debug!(transport = id, "dtls failed: {reason}");
                    if let Some(tx) = t.connected_tx.take() {
                        let _ = tx.send(Err(format!("dtls: {reason}")));
                    }
                }
                DtlsEvent::Closed | DtlsEvent::ApplicationData(_) => {}
            }
        }
        if dtls.state() == DtlsState::Connecting
            && let Some(at) = dtls.poll_timeout()
        {
            self.timers.push(Reverse((at, Timer::Dtls(id as u32))));
        }
        if became_connected {
            self.timers
                .push(Reverse((now + RTCP_INTERVAL, Timer::Rtcp(id as u32))));
            if t.twcc.is_some() {
                self.timers.push(Reverse((
                    now + FEEDBACK_INTERVAL,
                    Timer::Feedback(id as u32),
                )));
            }
            self.schedule_streams(id as u32, now);
        }
    }

    /// Handles a datagram read from transport `id`'s socket; `stamp` is its kernel arrival
    /// time since the Unix epoch, if known. A capped transport's datagram goes through its
    /// link first.
    fn on_datagram(&mut self, id: usize, data: &mut [u8], stamp: Option<Duration>) {
        let now = Instant::now();
        let arrival_us = stamp.map_or_else(
            || micros(self.epoch, now),
            |s| s.saturating_sub(self.epoch_realtime).as_micros() as u64,
        );
        if let Some(Some(t)) = self.transports.get_mut(id)
            && let Some((link, armed)) = t.downlink.as_mut()
        {
            let at = (self.epoch + Duration::from_micros(arrival_us)).min(now);
            match link.offer(at, data) {
                Verdict::Pass => {}
                Verdict::Dropped => return,
                Verdict::Queued => {
                    if !*armed && let Some(due) = link.next_release() {
                        *armed = true;
                        self.timers.push(Reverse((due, Timer::Downlink(id as u32))));
                    }
                    return;
                }
            }
        }
        self.on_arrival(id, data, now, arrival_us);
    }

    /// Datagrams whose time has come leave transport `id`'s capped link and arrive.
    fn on_downlink_timer(&mut self, id: u32, now: Instant) {
        let mut buf = [0u8; BUF_LEN];
        loop {
            let Some(Some(t)) = self.transports.get_mut(id as usize) else {
                return;
            };
            let Some((link, armed)) = t.downlink.as_mut() else {
                return;
            };
            let Some((n, left)) = link.release(now, &mut buf) else {
                *armed = false;
                if let Some(due) = link.next_release() {
                    *armed = true;
                    self.timers.push(Reverse((due, Timer::Downlink(id))));
                }
                return;
            };
            let arrival_us = micros(self.epoch, left);
            self.on_arrival(id as usize, &mut buf[..n], now, arrival_us);
        }
    }

    /// Handles a datagram that arrived at transport `id` at `arrival_us` (µs since the
    /// epoch).
    fn on_arrival(&mut self, id: usize, data: &mut [u8], now: Instant, arrival_us: u64) {
        match classify(data) {
            PacketKind::Stun => self.on_stun(id, data, now),
            PacketKind::Dtls => {
                if let Some(Some(t)) = self.transports.get_mut(id) {
                    match t.dtls.as_mut() {
                        Some(dtls) => dtls.handle_read(now, data),
                        None => self.counters.dropped += 1,
                    }
                }
                self.after_dtls(id, now);
            }
            PacketKind::Rtp => self.on_rtp(id, data, now, arrival_us),
            PacketKind::Rtcp => self.on_rtcp(id, data, now),
            PacketKind::Unknown => self.counters.dropped += 1,
        }
    }

    fn on_stun(&mut self, id: usize, data: &[u8], now: Instant) {
        let Some(Some(t)) = self.transports.get_mut(id) else {
            return;
        };
        if t.ice_ok || !is_binding_success(data, &t.spec.server_pwd) {
            return;
        }
        t.ice_ok = true;
        // The server has the tuple now; start the handshake as DTLS client.
        match DtlsSession::new(
            self.cert.clone(),
            DtlsRole::Client,
            t.spec.fingerprints.clone(),
            now,
        ) {
            Ok(dtls) => t.dtls = Some(dtls),
            Err(e) => {
                if let Some(tx) = t.connected_tx.take() {
                    let _ = tx.send(Err(format!("dtls: {e}")));
                }
                return;
            }
        }
        self.after_dtls(id, now);
    }

    fn on_stream_timer(&mut self, sid: u32, due: Instant, now: Instant) {
        let Some(Some(stream)) = self.streams.get_mut(sid as usize) else {
            return;
        };
        let Some(Some(t)) = self.transports.get_mut(stream.transport as usize) else {
            return;
        };
        let Some(srtp) = t.srtp.as_mut() else {
            return;
        };
        let send_us = micros(self.epoch, now);
        let in_window = self
            .window_us
            .is_some_and(|(from, until)| (from..until).contains(&send_us));
        let out = &mut self.out[..];
        let (sent, next) = match stream.spec.kind {
            Kind::Audio => {
                let at = write_rtp_header_with(
                    out,
                    false,
                    stream.spec.pt,
                    stream.seq,
                    stream.ts,
                    stream.spec.ssrc,
                    next_twcc(&mut t.twcc_seq, stream.spec.twcc_ext),
                );
                let len = at + AUDIO_PAYLOAD;
                let payload = &mut out[at..len];
                fill(payload, 0, stream.counter);
                write_trailer(
                    payload,
                    &Probe {
                        stream_id: sid,
                        counter: stream.counter,
                        send_us,
                    },
                );
                stream.seq = stream.seq.wrapping_add(1);
                stream.ts = stream.ts.wrapping_add(960);
                stream.counter = stream.counter.wrapping_add(1);
                stream.packets = stream.packets.wrapping_add(1);
                stream.octets = stream.octets.wrapping_add(AUDIO_PAYLOAD as u32);
                let sent = match srtp.protect_rtp(out, len) {
                    Ok(n) => {
                        if send_datagram(&t.link, &out[..n], &mut self.counters) {
                            self.counters.bytes_sent += n as u64;
                        }
                        1
                    }
                    Err(_) => {
                        self.counters.send_errors += 1;
                        0
                    }
                };
                let next = NextSend::Frame {
                    due,
                    period: AUDIO_INTERVAL,
                };
                (sent, next)
            }
            Kind::Video => {
                let frame = *stream.frame.get_or_insert_with(|| {
                    let key = stream.key_requested || stream.frames_since_key + 1 >= GOP_FRAMES;
                    let bytes = if key {
                        stream.rate.key_bytes
                    } else {
                        stream.rate.delta_bytes
                    };
                    let (packets, each) = split_frame(bytes);
                    FrameInFlight {
                        key,
                        packets,
                        each,
                        sent: 0,
                        due,
                        spacing: pacing_interval(
                            each,
                            stream.spec.kbps,
                            stream.spec.pacing_factor,
                            packets,
                        ),
                    }
                });
                let mut sent = 0;
                let mut next_packet = frame.sent;
                while next_packet < frame.packets {
                    // The first packet leaves at once; the others when the pacer allows.
                    if next_packet > frame.sent && frame.packet_due(next_packet) > now {
                        break;
                    }
                    let i = next_packet;
                    next_packet += 1;
                    let at = write_rtp_header_with(
                        out,
                        i + 1 == frame.packets,
                        stream.spec.pt,
                        stream.seq,
                        stream.ts,
                        stream.spec.ssrc,
                        next_twcc(&mut t.twcc_seq, stream.spec.twcc_ext),
                    );
                    let len = at + frame.each;
                    let payload = &mut out[at..len];
                    let headers = write_vp8_headers(
                        payload,
                        i == 0,
                        frame.key,
                        stream.spec.width,
                        stream.spec.height,
                    );
                    fill(payload, headers, stream.counter);
                    write_trailer(
                        payload,
                        &Probe {
                            stream_id: sid,
                            counter: stream.counter,
                            send_us,
                        },
                    );
                    if let Some(history) = stream.history.as_mut() {
                        history.store(stream.seq, &out[..len]);
                    }
                    stream.seq = stream.seq.wrapping_add(1);
                    stream.counter = stream.counter.wrapping_add(1);
                    stream.packets = stream.packets.wrapping_add(1);
                    stream.octets = stream.octets.wrapping_add(frame.each as u32);
                    match srtp.protect_rtp(out, len) {
                        Ok(n) => {
                            if send_datagram(&t.link, &out[..n], &mut self.counters) {
                                self.counters.bytes_sent += n as u64;
                            }
                            sent += 1;
                        }
                        Err(_) => self.counters.send_errors += 1,
                    }
                }
                if next_packet < frame.packets {
                    stream.frame = Some(FrameInFlight {
                        sent: next_packet,
                        ..frame
                    });
                    (sent, NextSend::Packet(frame.packet_due(next_packet)))
                } else {
                    stream.frame = None;
                    stream.ts = stream.ts.wrapping_add(90_000 / VIDEO_FPS);
                    if frame.key {
                        stream.frames_since_key = 0;
                        stream.key_requested = false;
                        self.counters.keyframes_sent += 1;
                    } else {
                        stream.frames_since_key += 1;
                    }
                    // The next frame is due one frame interval after this one was.
                    let next = NextSend::Frame {
                        due: frame.due,
                        period: VIDEO_INTERVAL,
                    };
                    (sent, next)
                }
            }
        };
        self.counters.packets_sent += sent;
        if in_window {
            stream.sent_in_window += sent;
        }
        if t.first_media.is_none() && sent > 0 {
            t.first_media = Some(now);
        }
        let next = match next {
            NextSend::Packet(at) => at,
            NextSend::Frame { due, period } => {
                let mut next = due + period;
                if now.saturating_duration_since(next) > MAX_CATCH_UP {
                    self.counters.late_timers += 1;
                    next = now + period;
                }
                stream.next_due = Some(next);
                next
            }
        };
        self.timers.push(Reverse((next, Timer::Stream(sid))));
    }

    /// Sends transport-cc feedback for what arrived since the last (every
    /// [`FEEDBACK_INTERVAL`], libwebrtc's default; a feedback packet covers up to 400
    /// packets, more go in further packets at once).
    fn on_feedback_timer(&mut self, id: u32, now: Instant) {
        let Some(Some(t)) = self.transports.get_mut(id as usize) else {
            return;
        };
        let (Some(srtp), Some(twcc)) = (t.srtp.as_mut(), t.twcc.as_mut()) else {
            return;
        };
        let out = &mut self.out[..];
        while twcc.has_pending() {
            let Some(len) = twcc.write_feedback(out, t.rtcp_ssrc, t.twcc_media_ssrc) else {
                break;
            };
            if let Ok(n) = srtp.protect_rtcp(out, len)
                && send_datagram(&t.link, &out[..n], &mut self.counters)
            {
                self.counters.twcc_feedbacks_sent += 1;
            }
        }
        self.timers
            .push(Reverse((now + FEEDBACK_INTERVAL, Timer::Feedback(id))));
    }

    fn on_rtcp_timer(&mut self, id: u32, now: Instant) {
        let Some(Some(t)) = self.transports.get_mut(id as usize) else {
            return;
        };
        let Some(srtp) = t.srtp.as_mut() else {
            return;
        };
        let out = &mut self.out[..];
        let mut len = 0;
        if t.spec.subscriber {
            let mut blocks = [ferrosoup_rtc::rtcp::ReportBlock::default(); MAX_REPORT_BLOCKS];
            let mut n = 0;
            for c in t.consumers.iter_mut().filter(|c| c.stats.packets() > 0) {
                if n == MAX_REPORT_BLOCKS {
                    break;
                }
                blocks[n] = c.stats.report_block(now, c.spec.ssrc);
                n += 1;
            }
            len = write_rr(out, t.rtcp_ssrc, &blocks[..n]).unwrap_or(0);
        } else {
            let ntp = ntp_from_unix(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default(),
            );
            for &sid in &t.streams {
                let Some(Some(s)) = self.streams.get(sid as usize) else {
                    continue;
                };
                let info = SenderInfo {
                    ntp,
                    rtp_ts: s.ts,
                    packets: s.packets,
                    octets: s.octets,
                };
                match write_sr(&mut out[len..BUF_LEN - 64], s.spec.ssrc, &info, &[]) {
                    Some(n) => len += n,
                    None => break,
                }
            }
        }
        if len > 0
            && let Ok(n) = srtp.protect_rtcp(out, len)
        {
            send_datagram(&t.link, &out[..n], &mut self.counters);
        }
        self.timers
            .push(Reverse((now + RTCP_INTERVAL, Timer::Rtcp(id))));
    }

    fn on_rtp(&mut self, id: usize, data: &mut [u8], now: Instant, arrival_us: u64) {
        let Some(Some(t)) = self.transports.get_mut(id) else {
            return;
        };
        let (Some(srtp), true) = (t.srtp.as_mut(), t.spec.subscriber) else {
            self.counters.dropped += 1;
            return;
        };
        let protected_len = data.len();
        let Ok(len) = srtp.unprotect_rtp(data) else {
            self.counters.srtp_failures += 1;
            return;
        };
        self.counters.srtp_verified += 1;
        let packet = &data[..len];
        let Ok(info) = parse_rtp(packet) else {
            self.counters.payload_errors += 1;
            return;
        };
        if let Some(twcc) = t.twcc.as_mut()
            && let Some(seq) =
                find_extension(packet, &info, t.twcc_ext).and_then(parse_transport_cc)
        {
            twcc.on_packet(self.epoch + Duration::from_micros(arrival_us), seq);
            t.twcc_media_ssrc = info.ssrc;
        }
        if info.payload_len == 0 && info.padding_len > 0 {
            // Padding only: a probe of the server's bandwidth estimation (on a consumer's
            // RTX stream or the probator). It counted for the feedback; nothing else in it.
            self.counters.padding_received += 1;
            return;
        }
        let Some(consumer) = t
            .consumers
            .iter_mut()
            .find(|c| c.spec.ssrc == info.ssrc || c.spec.rtx_ssrc == Some(info.ssrc))
        else {
            self.counters.unknown_ssrc += 1;
            return;
        };
        self.counters.bytes_received += protected_len as u64;
        let mut rx = RecvContext {
            now,
            now_us: micros(self.epoch, now),
            arrival_us,
            window_us: self.window_us,
            full_verify: t.spec.full_verify,
            datagram_len: protected_len,
            counters: &mut self.counters,
            latency: &mut self.latency,
            app_latency: &mut self.app_latency,
        };
        let missing = consumer.receive(&mut rx, packet, &info);
        t.first_media.get_or_insert(now);
        if missing.is_empty() {
            return;
        }
        let mut seqs = [0u16; MAX_NACK as usize];
        let mut n = 0;
        for (slot, s) in seqs.iter_mut().zip(missing) {
            *slot = s as u16;
            n += 1;
        }
        if let Some(len) = write_nack(
            &mut self.out[..],
            t.rtcp_ssrc,
            consumer.spec.ssrc,
            &seqs[..n],
        ) && let Ok(len) = srtp.protect_rtcp(&mut self.out[..], len)
        {
            send_datagram(&t.link, &self.out[..len], &mut self.counters);
        }
        self.counters.nacks_sent += n as u64;
    }

    fn on_rtcp(&mut self, id: usize, data: &mut [u8], now: Instant) {
        let Some(Some(t)) = self.transports.get_mut(id) else {
            return;
        };
        let Some(srtp) = t.srtp.as_mut() else {
            self.counters.dropped += 1;
            return;
        };
        let Ok(len) = srtp.unprotect_rtcp(data) else {
            self.counters.srtp_failures += 1;
            return;
        };
        self.counters.srtp_verified += 1;
        if t.spec.subscriber {
            // Sender reports of the consumers: remembered, so that the receiver reports
            // echo them (LSR / DLSR) and the server can measure the round trip.
            for item in parse_compound(&data[..len]).flatten() {
                if let RtcpItem::SenderReport { ssrc, info, .. } = item
                    && let Some(c) = t.consumers.iter_mut().find(|c| c.spec.ssrc == ssrc)
                {
                    c.stats.on_sender_report(now, info.ntp, info.rtp_ts);
                }
            }
            return;
        }
        for item in parse_compound(&data[..len]).flatten() {
            match item {
                RtcpItem::Nack {
                    media_ssrc, pairs, ..
                } => {
                    for seq in pairs.seqs() {
                        self.counters.nacks_received += 1;
                        let Some(stream) = t.streams.iter().find_map(|&sid| {
                            self.streams
                                .get(sid as usize)
                                .and_then(Option::as_ref)
                                .filter(|s| s.spec.ssrc == media_ssrc)
                        }) else {
                            continue;
                        };
                        let Some(packet) = stream.history.as_ref().and_then(|h| h.get(seq)) else {
                            continue;
                        };
                        let n = packet.len();
                        self.out[..n].copy_from_slice(packet);
                        // A resend is a new packet on the transport: a new transport-wide
                        // sequence number, as browsers number retransmissions.
                        if stream.spec.twcc_ext != 0 {
                            set_transport_cc(&mut self.out[..n], t.twcc_seq);
                            t.twcc_seq = t.twcc_seq.wrapping_add(1);
                        }
                        if let Ok(n) = srtp.protect_rtp(&mut self.out[..], n)
                            && send_datagram(&t.link, &self.out[..n], &mut self.counters)
                        {
                            self.counters.retransmissions_sent += 1;
                        }
                    }
                }
                RtcpItem::Pli { media_ssrc, .. } => {
                    self.counters.plis_received += 1;
                    request_key(&mut self.streams, &t.streams, media_ssrc);
                }
                RtcpItem::Fir { entries, .. } => {
                    for (ssrc, _) in entries {
                        self.counters.plis_received += 1;
                        request_key(&mut self.streams, &t.streams, ssrc);
                    }
                }
                _ => {}
            }
        }
    }

    fn results(&self) -> MediaReport {
        let now = Instant::now();
        let (wall, cpu, run_delay) = match self.window_started {
            Some((at, cpu, delay)) => (
                now.saturating_duration_since(at),
                thread_cpu_time().saturating_sub(cpu),
                thread_run_delay().saturating_sub(delay),
            ),
            None => (Duration::ZERO, Duration::ZERO, Duration::ZERO),
        };
        let mut consumers = Vec::new();
        let mut transports = Vec::new();
        for t in self.transports.iter().flatten().filter(|t| t.spec.measured) {
            transports.push(TransportResult {
                peer: t.spec.peer,
                subscriber: t.spec.subscriber,
                join: t
                    .first_media
                    .map(|at| at.saturating_duration_since(t.spec.ws_opened)),
                downlink: t.downlink.as_ref().map(|(link, _)| link.counters()),
            });
            for c in &t.consumers {
                let layers = c.spec.stream_ids.len().min(3);
                // The layer this consumer mostly received (the highest when it got nothing).
                let layer = (0..layers)
                    .rev()
                    .max_by_key(|&l| c.received_in_window[l])
                    .unwrap_or(0);
                let expected = c
                    .spec
                    .stream_ids
                    .get(layer)
                    .and_then(|&sid| self.streams.get(sid as usize))
                    .and_then(Option::as_ref)
                    .map_or(0, |s| s.sent_in_window);
                let received: u64 = c.received_in_window.iter().sum();
                // Ended on the layer of its newest packet, if that was sent in the window's
                // last second.
                let end_from = self.window_us.map_or(0, |(_, until)| {
                    until.saturating_sub(END_SPAN.as_micros() as u64)
                });
                let end_layer = c
                    .last_in_window
                    .filter(|&(_, sent)| sent >= end_from)
                    .map(|(layer, _)| layer);
                consumers.push(ConsumerResult {
                    peer: c.peer,
                    kind: c.spec.kind,
                    expected,
                    received,
                    per_layer: c.received_in_window,
                    bytes: c.bytes_in_window,
                    end_layer,
                    seq_span: if c.seq_max >= c.seq_min {
                        c.seq_max - c.seq_min + 1
                    } else {
                        0
                    },
                });
            }
        }
        MediaReport {
            consumers,
            transports,
            latency: self.latency.clone(),
            app_latency: self.app_latency.clone(),
            busy: self.busy.clone(),
            counters: self.counters,
            cpu,
            run_delay,
            wall,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::write_rtp_header;
    use rtc_stun::attributes::{ATTR_ICE_CONTROLLING, ATTR_USE_CANDIDATE, ATTR_USERNAME};
    use rtc_stun::crypto::providers::RingCrypto;
    use rtc_stun::fingerprint::FINGERPRINT;
    use rtc_stun::integrity::MessageIntegrity;
    use rtc_stun::message::{BINDING_REQUEST, Message};
    use rtc_stun::textattrs::TextAttribute;

    #[test]
    fn history_returns_only_the_packet_stored_for_that_sequence_number() {
        let mut h = History::new();
        let mut p = [0u8; 40];
        write_rtp_header(&mut p, false, 101, 7, 0, 1);
        h.store(7, &p);
        assert_eq!(h.get(7), Some(&p[..]));
        // Same slot, other sequence number: not returned.
        assert_eq!(h.get(7 + HISTORY as u16), None);
        write_rtp_header(&mut p, false, 101, 7 + HISTORY as u16, 0, 1);
        h.store(7 + HISTORY as u16, &p);
        assert_eq!(h.get(7), None);
        assert!(h.get(7 + HISTORY as u16).is_some());
        // Oversized packets are not kept.
        h.store(9, &[0u8; HISTORY_SLOT + 1]);
        assert_eq!(h.get(9), None);
    }

    /// A consumer of stream 7 (video, RTX SSRC 2) with a window of send times 1000..2000.
    fn video_consumer() -> Consumer {
        Consumer::new(
            3,
            ConsumerSpec {
                ssrc: 1,
                rtx_ssrc: Some(2),
                kind: Kind::Video,
                clock_rate: 90_000,
                stream_ids: vec![6, 7],
                twcc_ext: 0,
            },
        )
    }

    /// A plaintext packet as the SFU forwards it: VP8 payload with the probe trailer; RTX
    /// packets carry `osn` first.
    fn packet(
        ssrc: u32,
        seq: u16,
        osn: Option<u16>,
        stream_id: u32,
        counter: u32,
        send_us: u64,
    ) -> Vec<u8> {
        let mut p = vec![0u8; RTP_HEADER_LEN + 2 + 60];
        write_rtp_header(&mut p, false, 101, seq, 0, ssrc);
        let mut at = RTP_HEADER_LEN;
        if let Some(osn) = osn {
            p[at..at + 2].copy_from_slice(&osn.to_be_bytes());
            at += 2;
        } else {
            p.truncate(p.len() - 2);
        }
        let payload = &mut p[at..];
        let headers = write_vp8_headers(payload, false, false, 0, 0);
        fill(payload, headers, counter);
        write_trailer(
            payload,
            &Probe {
                stream_id,
                counter,
                send_us,
            },
        );
        p
    }

    struct Harness {
        counters: Counters,
        latency: Histogram,
        app_latency: Histogram,
        start: Instant,
    }

    impl Harness {
        fn new() -> Self {
            Self {
                counters: Counters::default(),
                latency: Histogram::new(),
                app_latency: Histogram::new(),
                start: Instant::now(),
            }
        }

        fn feed(&mut self, c: &mut Consumer, now_us: u64, packet: &[u8]) -> Range<u64> {
            let info = parse_rtp(packet).expect("test packet parses");
            let mut rx = RecvContext {
                now: self.start + Duration::from_micros(now_us),
                now_us,
                arrival_us: now_us,
                window_us: Some((1000, 2000)),
                full_verify: true,
                datagram_len: packet.len(),
                counters: &mut self.counters,
                latency: &mut self.latency,
                app_latency: &mut self.app_latency,
            };
            c.receive(&mut rx, packet, &info)
        }
    }

    #[test]
    fn pacing_spaces_a_frame_within_its_interval() {
        // 1000 kbit/s at factor 2.5: a packet of 1100 + 12 bytes takes 3.56 ms.
        let gap = pacing_interval(1100, 1000, 2.5, 4);
        assert!(
            (gap.as_secs_f64() - 1112.0 * 8.0 / 2.5e6).abs() < 1e-6,
            "{gap:?}"
        );
        // 16 such packets would overrun the frame interval: spread over it instead.
        assert_eq!(pacing_interval(1100, 1000, 2.5, 16), VIDEO_INTERVAL / 16);
        assert_eq!(pacing_interval(1100, 1000, 0.0, 16), Duration::ZERO);
        assert_eq!(pacing_interval(1100, 1000, 2.5, 1), Duration::ZERO);
    }

    #[test]
    fn gaps_are_nacked_and_repairs_counted_once() {
        let mut h = Harness::new();
        let mut c = video_consumer();
        assert!(
            h.feed(&mut c, 1100, &packet(1, 10, None, 7, 0, 1000))
                .is_empty()
        );
        // 11 and 12 are missing: NACK their extended numbers.
        let missing = h.feed(&mut c, 1300, &packet(1, 13, None, 7, 3, 1200));
        assert_eq!(missing.clone().count(), 2);
        assert_eq!(missing.map(|s| s as u16).collect::<Vec<_>>(), vec![11, 12]);
        // 11 comes back over RTX; a second copy of it is a duplicate.
        assert!(
            h.feed(&mut c, 1500, &packet(2, 500, Some(11), 7, 1, 1050))
                .is_empty()
        );
        assert!(
            h.feed(&mut c, 1600, &packet(2, 501, Some(11), 7, 1, 1050))
                .is_empty()
        );
        assert!(
            h.feed(&mut c, 1700, &packet(1, 13, None, 7, 3, 1200))
                .is_empty()
        );
        assert_eq!(h.counters.packets_received, 3);
        assert_eq!(h.counters.retransmissions_received, 2);
        assert_eq!(h.counters.duplicates, 2);
        assert_eq!(h.counters.payloads_checked, 3);
        assert_eq!(h.counters.payload_errors, 0);
        assert_eq!(c.received_in_window, [0, 3, 0]);
        assert_eq!((c.seq_min & 0xffff, c.seq_max & 0xffff), (10, 13));
        // Latencies: 100 µs, 100 µs and 450 µs.
        assert_eq!(h.latency.count(), 3);
        assert_eq!(h.latency.max_us(), 450);
    }

    #[test]
    fn packets_outside_the_window_or_damaged_are_not_delivered() {
        let mut h = Harness::new();
        let mut c = video_consumer();
        h.feed(&mut c, 900, &packet(1, 1, None, 6, 0, 800)); // before the window
        h.feed(&mut c, 2100, &packet(1, 2, None, 6, 1, 2000)); // sent at its end: outside
        h.feed(&mut c, 1500, &packet(1, 3, None, 99, 2, 1400)); // a stream it does not consume
        let mut damaged = packet(1, 4, None, 6, 3, 1400);
        damaged[RTP_HEADER_LEN + 5] ^= 0xff;
        h.feed(&mut c, 1500, &damaged);
        let mut foreign = packet(1, 5, None, 6, 4, 1400);
        let len = foreign.len();
        foreign[len - 20] ^= 0xff; // trailer magic
        h.feed(&mut c, 1500, &foreign);
        assert_eq!(c.received_in_window, [0, 0, 0]);
        assert_eq!(h.latency.count(), 0);
        assert_eq!(h.counters.packets_received, 5);
        assert_eq!(h.counters.payload_errors, 3);
        // Audio gaps are not NACKed.
        let mut audio = Consumer::new(
            0,
            ConsumerSpec {
                ssrc: 9,
                rtx_ssrc: None,
                kind: Kind::Audio,
                clock_rate: 48_000,
                stream_ids: vec![1],
                twcc_ext: 0,
            },
        );
        h.feed(&mut audio, 1100, &packet(9, 1, None, 1, 0, 1000));
        assert!(
            h.feed(&mut audio, 1200, &packet(9, 5, None, 1, 4, 1100))
                .is_empty()
        );
    }

    #[test]
    fn binding_request_carries_what_an_ice_lite_server_checks() {
        let raw =
            binding_request("srv", "serverpassword1234567890", "cli", 42).expect("request builds");
        let mut m = Message::new();
        m.unmarshal_binary(&raw).expect("decodes");
        assert_eq!(m.typ, BINDING_REQUEST);
        FINGERPRINT.check(&m).expect("fingerprint");
        MessageIntegrity::check(&mut m, b"serverpassword1234567890", &RingCrypto)
            .expect("integrity with the server password");
        let user = TextAttribute::get_from_as(&m, ATTR_USERNAME).expect("username");
        assert_eq!(user.text, "srv:cli");
        assert!(m.contains(ATTR_USE_CANDIDATE));
        assert!(m.contains(ATTR_ICE_CONTROLLING));
        assert_eq!(ferrosoup_rtc::ice::stun_local_ufrag(&raw), Some("srv"));
    }
}
