//! Records a room's producers to files people can play: Opus → Ogg (`.ogg`), VP8 and VP9 → IVF
//! (`.ivf`). The recorder joins the room as a broadcaster over the HTTP API of
//! shared/PROTOCOL.md "Broadcasters", consumes each producer on its own plain RTP
//! transport (RTP and RTCP muxed on one UDP socket of the recorder), depacketizes
//! ([`assembler`]) and writes the container ([`ogg`], [`ivf`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferrosoup_record::RecordError> {
//! use ferrosoup_record::{RecordOptions, Recording};
//! let recording = Recording::start(RecordOptions::new("http://127.0.0.1:3000", "room", "rec")).await?;
//! tokio::time::sleep(std::time::Duration::from_secs(10)).await;
//! for file in recording.stop().await? {
//!     println!("{} {} frames", file.path.display(), file.frames);
//! }
//! # Ok(()) }
//! ```
//!
//! Each stream is received on a thread of its own with a blocking socket; the receive
//! path reuses one packet buffer and the assembler's preallocated slots, and writes
//! through a buffered file: nothing is allocated per packet.

pub mod assembler;
pub mod http;
pub mod ivf;
pub mod ogg;

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrosoup_proto::broadcaster::{CreateBroadcasterResponse, PlainTransportResponse};
use ferrosoup_proto::rtp_parameters::{MediaKind, RtpParameters};
use hyper::Method;
use serde_json::{Value, json};

use crate::assembler::{AssemblerStats, FrameAssembler, StreamCodec};
use crate::http::Api;
use crate::ivf::{IvfCodec, IvfWriter};
use crate::ogg::OggOpusWriter;

/// What can go wrong while recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The HTTP API refused or failed a request.
    #[error("http: {0}")]
    Http(String),
    /// An answer of the server did not have the expected shape.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A socket or a file failed.
    #[error("io: {0}")]
    Io(#[from] io::Error),
    /// A receive thread ended abnormally.
    #[error("recording thread: {0}")]
    Thread(String),
}

/// How to record.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// The server's HTTP base, `http://host:port`.
    pub server: String,
    /// The room to record.
    pub room: String,
    /// Directory for the files (created if missing).
    pub out_dir: PathBuf,
    /// `ADMIN_KEY` of the server, when it has one.
    pub admin_key: Option<String>,
    /// The recorder's broadcaster id (default: `recorder-` and a random suffix).
    pub recorder_id: Option<String>,
    /// Local address the server sends RTP to (default 127.0.0.1; use an address the
    /// server can reach when it runs elsewhere).
    pub listen_ip: IpAddr,
}

impl RecordOptions {
    /// Options with defaults for `server`, `room` and `out_dir`.
    pub fn new(server: &str, room: &str, out_dir: impl Into<PathBuf>) -> Self {
        Self {
            server: server.to_owned(),
            room: room.to_owned(),
            out_dir: out_dir.into(),
            admin_key: None,
            recorder_id: None,
            listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

/// One written file.
#[derive(Debug, Clone)]
pub struct RecordedFile {
    /// The recorded producer.
    pub producer_id: String,
    /// Its peer.
    pub peer_id: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// Where the file is.
    pub path: PathBuf,
    /// Frames (Opus packets, video frames) written.
    pub frames: u64,
    /// Media time from the first frame written to the end of the last.
    pub duration: Duration,
    /// What the depacketizer dropped.
    pub stats: AssemblerStats,
}

/// A running recording: one receive thread per producer.
pub struct Recording {
    api: Api,
    options: RecordOptions,
    room: String,
    recorder_id: String,
    /// Producers looked at (recorded, or skipped for their codec).
    seen: HashSet<String>,
    stop: Arc<AtomicBool>,
    streams: Vec<std::thread::JoinHandle<Result<RecordedFile, RecordError>>>,
    paths: Vec<PathBuf>,
}

/// How long a receive thread blocks before it looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);
/// Keyframe requests (PLI) while waiting for a keyframe: at most one per this interval.
const PLI_INTERVAL: Duration = Duration::from_secs(1);

impl Recording {
    /// Joins `options.room` as a broadcaster and starts recording every producer it has
    /// now; [`Recording::record_new_producers`] adds those that appear later.
    pub async fn start(options: RecordOptions) -> Result<Self, RecordError> {
        let api = Api::new(&options.server, options.admin_key.clone())?;
        let room = options.room.clone();
        let caps = api
            .request(Method::GET, &format!("/rooms/{room}"), None)
            .await?;
        let recorder_id = options
            .recorder_id
            .clone()
            .unwrap_or_else(|| format!("recorder-{:08x}", rand::random::<u32>()));
        let joined: CreateBroadcasterResponse = serde_json::from_value(
            api.request(
                Method::POST,
                &format!("/rooms/{room}/broadcasters"),
                Some(&json!({
                    "id": recorder_id,
                    "displayName": "Recorder",
                    "device": {"name": "ferrosoup-record"},
                    "rtpCapabilities": caps,
                })),
            )
            .await?,
        )?;
        std::fs::create_dir_all(&options.out_dir)?;
        let mut recording = Self {
            api,
            options: options.clone(),
            room,
            recorder_id,
            seen: HashSet::new(),
            stop: Arc::new(AtomicBool::new(false)),
            streams: Vec::new(),
            paths: Vec::new(),
        };
        for peer in &joined.peers {
            for producer in &peer.producers {
                if let Err(e) = recording.record_producer(&peer.id, &producer.id).await {
                    recording.stop.store(true, Ordering::Relaxed);
                    let _ = recording.leave().await;
                    return Err(e);
                }
            }
        }
        Ok(recording)
    }

    /// The files being written.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Starts recording the producers of the room that appeared since the last look (from
    /// `GET /api/rooms/{room}`); returns how many it found.
    pub async fn record_new_producers(&mut self) -> Result<usize, RecordError> {
        let room = self
            .api
            .request(Method::GET, &format!("/api/rooms/{}", self.room), None)
            .await?;
        let mut found = Vec::new();
        for peer in room["peers"].as_array().into_iter().flatten() {
            let Some(peer_id) = peer["peerId"].as_str() else {
                continue;
            };
            if peer_id == self.recorder_id {
                continue;
            }
            for producer in peer["producers"].as_array().into_iter().flatten() {
                if let Some(id) = producer["id"].as_str()
                    && !self.seen.contains(id)
                {
                    found.push((peer_id.to_owned(), id.to_owned()));
                }
            }
        }
        for (peer_id, producer_id) in &found {
            self.record_producer(peer_id, producer_id).await?;
        }
        Ok(found.len())
    }

    async fn record_producer(
        &mut self,
        peer_id: &str,
        producer_id: &str,
    ) -> Result<(), RecordError> {
        self.seen.insert(producer_id.to_owned());
        let options = &self.options;
        let base = format!("/rooms/{}/broadcasters/{}", self.room, self.recorder_id);
        let socket = UdpSocket::bind(SocketAddr::new(options.listen_ip, 0))?;
        let local = socket.local_addr()?;
        let transport: PlainTransportResponse = serde_json::from_value(
            self.api
                .request(
                    Method::POST,
                    &format!("{base}/transports"),
                    Some(&json!({"type": "plain", "comedia": false, "rtcpMux": true})),
                )
                .await?,
        )?;
        self.api
            .request(
                Method::POST,
                &format!("{base}/transports/{}/connect", transport.id),
                Some(&json!({"ip": local.ip().to_string(), "port": local.port()})),
            )
            .await?;
        let consumer = self
            .api
            .request(
                Method::POST,
                &format!(
                    "{base}/transports/{}/consume?producerId={producer_id}",
                    transport.id
                ),
                None,
            )
            .await?;
        let kind: MediaKind =
            serde_json::from_value(consumer.get("kind").cloned().unwrap_or(Value::Null))?;
        let rtp: RtpParameters = serde_json::from_value(
            consumer
                .get("rtpParameters")
                .cloned()
                .unwrap_or(Value::Null),
        )?;
        let (Some(codec), Some(ssrc)) = (
            rtp.codecs.first(),
            rtp.encodings.first().and_then(|e| e.ssrc),
        ) else {
            return Err(RecordError::Http(format!(
                "consumer of {producer_id} has no codec or SSRC"
            )));
        };
        let mime = codec.mime_type.to_ascii_lowercase();
        let (ext, stream_codec) = match mime.as_str() {
            "audio/opus" => ("ogg", StreamCodec::Opus),
            "video/vp8" => ("ivf", StreamCodec::Vp8),
            "video/vp9" => ("ivf", StreamCodec::Vp9),
            _ => {
                tracing::warn!(producer_id, mime, "not recorded: codec not supported");
                return Ok(());
            }
        };
        let server: SocketAddr = format!("{}:{}", transport.ip, transport.port)
            .parse()
            .map_err(|e| RecordError::Http(format!("plain transport address: {e}")))?;
        let path = options
            .out_dir
            .join(format!("{peer_id}-{}-{producer_id}.{ext}", kind_name(kind)));
        let file = BufWriter::new(File::create(&path)?);
        let sink = match stream_codec {
            StreamCodec::Opus => Sink::Ogg(OggOpusWriter::new(
                file,
                codec.channels.unwrap_or(2),
                codec.clock_rate,
            )?),
            StreamCodec::Vp8 => Sink::Ivf(IvfWriter::new(file, IvfCodec::Vp8)?),
            StreamCodec::Vp9 => Sink::Ivf(IvfWriter::new(file, IvfCodec::Vp9)?),
        };
        socket.set_read_timeout(Some(POLL))?;
        let stream = Stream {
            socket,
            server,
            ssrc,
            payload_type: codec.payload_type,
            sink,
            assembler: FrameAssembler::new(stream_codec),
            stop: Arc::clone(&self.stop),
            file: RecordedFile {
                producer_id: producer_id.to_owned(),
                peer_id: peer_id.to_owned(),
                kind,
                path: path.clone(),
                frames: 0,
                duration: Duration::ZERO,
                stats: AssemblerStats::default(),
            },
        };
        tracing::info!(path = %path.display(), producer_id, "recording");
        self.streams.push(
            std::thread::Builder::new()
                .name(format!("record-{producer_id}"))
                .spawn(move || stream.run())?,
        );
        self.paths.push(path);
        Ok(())
    }

    /// Stops every stream, finishes the files and leaves the room.
    pub async fn stop(mut self) -> Result<Vec<RecordedFile>, RecordError> {
        self.stop.store(true, Ordering::Relaxed);
        let streams = std::mem::take(&mut self.streams);
        let joined = tokio::task::spawn_blocking(move || {
            streams
                .into_iter()
                .map(|s| {
                    s.join()
                        .map_err(|_| RecordError::Thread("panicked".into()))
                        .and_then(|r| r)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| RecordError::Thread(e.to_string()))?;
        let left = self.leave().await;
        let files = joined.into_iter().collect::<Result<Vec<_>, _>>()?;
        left?;
        Ok(files)
    }

    async fn leave(&self) -> Result<(), RecordError> {
        self.api
            .request(
                Method::DELETE,
                &format!("/rooms/{}/broadcasters/{}", self.room, self.recorder_id),
                None,
            )
            .await
            .map(|_| ())
    }
}

fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

/// The container a stream is written to.
enum Sink {
    Ogg(OggOpusWriter<BufWriter<File>>),
    Ivf(IvfWriter<BufWriter<File>>),
}

/// One producer's receive side, run on its own thread.
struct Stream {
    socket: UdpSocket,
    server: SocketAddr,
    ssrc: u32,
    payload_type: u8,
    sink: Sink,
    assembler: FrameAssembler,
    stop: Arc<AtomicBool>,
    file: RecordedFile,
}

impl Stream {
    fn run(mut self) -> Result<RecordedFile, RecordError> {
        let mut buf = [0u8; 1500];
        let mut last_pli: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let want_pli = self.assembler.take_keyframe_request()
                || (self.assembler.waiting_for_keyframe()
                    && last_pli.is_none_or(|t| t.elapsed() >= PLI_INTERVAL));
            if want_pli && last_pli.is_none_or(|t| t.elapsed() >= PLI_INTERVAL / 4) {
                self.send_pli()?;
                last_pli = Some(Instant::now());
            }
            let n = match self.socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let packet = &buf[..n];
            // RTCP shares the socket (rtcp-mux): packet types 192..=223 (RFC 5761 §4).
            if n < 2 || (192..=223).contains(&packet[1]) {
                continue;
            }
            let Ok(info) = ferrosoup_rtc::rtp::parse_rtp(packet) else {
                continue;
            };
            if info.ssrc != self.ssrc || info.payload_type != self.payload_type {
                continue;
            }
            let sink = &mut self.sink;
            self.assembler.push(
                info.sequence_number,
                info.timestamp,
                info.marker,
                info.payload(packet),
                &mut |ts, frame| write_frame(sink, ts, frame),
            )?;
        }
        let sink = &mut self.sink;
        self.assembler
            .finish(&mut |ts, frame| write_frame(sink, ts, frame))?;
        self.file.stats = self.assembler.stats();
        match self.sink {
            Sink::Ogg(w) => {
                self.file.frames = w.packets();
                self.file.duration = w.duration();
                w.finish()?;
            }
            Sink::Ivf(w) => {
                self.file.frames = u64::from(w.frames());
                self.file.duration = Duration::from_micros(w.span_ticks() * 1_000_000 / 90_000);
                w.finish()?;
            }
        }
        Ok(self.file)
    }

    /// Sends an RTCP PLI (RFC 4585 §6.3.1) for the consumer's SSRC.
    fn send_pli(&self) -> io::Result<()> {
        let mut pli = [0u8; 12];
        pli[0] = 0x80 | 1; // V=2, FMT=1
        pli[1] = 206; // PSFB
        pli[2..4].copy_from_slice(&2u16.to_be_bytes());
        pli[4..8].copy_from_slice(&1u32.to_be_bytes()); // sender SSRC: the recorder sends none
        pli[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        self.socket.send_to(&pli, self.server).map(|_| ())
    }
}

fn write_frame(sink: &mut Sink, ts: u64, frame: &[u8]) -> io::Result<()> {
    match sink {
        Sink::Ogg(w) => w.write_packet(ts, frame),
        Sink::Ivf(w) => w.write_frame(ts, frame),
    }
}
