//! A bot on the client SDK: joins a room, plays a VP8 IVF file as a video producer (in a
//! loop), and answers chat over data channels.
//!
//! Chat: for every data producer another peer opens, the bot consumes it and opens a
//! data producer of its own labelled `bot-reply:<their dataProducerId>` (the peer sees it
//! in `newDataProducer` and consumes it). On a message `!ping` the bot answers `pong`, on
//! any other text `echo: <text>`; binary messages come back as they are.
//!
//! Run it with `cargo run -p ferrosoup-examples --example bot -- ws://127.0.0.1:3000/ws
//! ROOM [video.ivf]` (make a file with `ffmpeg -f lavfi -i testsrc=size=320x240:rate=30
//! -t 10 -c:v libvpx video.ivf`).

use std::error::Error;
use std::path::PathBuf;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use ferrosoup_client::{
    DataConsumer, DataProduceOptions, DataProducer, MediaKind, Peer, ProduceOptions, Producer,
    RecvTransport, SendTransport, TransportOptions,
};
use serde_json::Value;
use tokio::task::JoinSet;

/// Errors of the bot.
pub type BotError = Box<dyn Error + Send + Sync>;

/// What the bot does.
#[derive(Debug, Clone)]
pub struct BotOptions {
    /// Signaling URL, `ws://host:port/ws`.
    pub url: String,
    /// Room to join.
    pub room: String,
    /// Display name.
    pub name: String,
    /// A VP8 IVF file to play as video; none: chat only.
    pub video: Option<PathBuf>,
}

/// The bot's answer to a chat text; `None` for nothing to say.
pub fn answer(text: &str) -> Option<String> {
    match text.trim() {
        "" => None,
        "!ping" => Some("pong".to_owned()),
        other => Some(format!("echo: {other}")),
    }
}

/// Runs the bot until `stop` completes or the connection closes, then leaves the room.
pub async fn run(
    options: BotOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), BotError> {
    let frames = match &options.video {
        Some(path) => Some(IvfFile::read(&std::fs::read(path)?)?),
        None => None,
    };
    let mut peer = Peer::join(&options.url, &options.room, &options.name).await?;
    let data = TransportOptions {
        data_channels: true,
        ..Default::default()
    };
    let send = SendTransport::create(peer.signaling(), peer.device(), data.clone()).await?;
    let recv = RecvTransport::create(peer.signaling(), peer.device(), data).await?;
    let mut tasks = JoinSet::new();
    if let Some(file) = frames {
        let producer = send
            .produce(
                MediaKind::Video,
                ProduceOptions {
                    codec: Some("video/VP8".into()),
                    ..Default::default()
                },
            )
            .await?;
        tasks.spawn(async move {
            if let Err(e) = play(&producer, &file).await {
                eprintln!("bot: playback stopped: {e}");
            }
        });
    }
    tokio::pin!(stop);
    loop {
        let notification = tokio::select! {
            () = &mut stop => break,
            n = peer.notifications().recv() => n,
        };
        let Some(n) = notification else {
            break;
        };
        if n.method != "newDataProducer" {
            continue;
        }
        let Some(id) = n.data.get("dataProducerId").and_then(Value::as_str) else {
            continue;
        };
        match chat_with(&send, &recv, id).await {
            Ok((consumer, reply)) => {
                tasks.spawn(answer_chat(consumer, reply));
            }
            Err(e) => eprintln!("bot: cannot chat on {id}: {e}"),
        }
    }
    tasks.shutdown().await;
    peer.leave().await?;
    Ok(())
}

/// Consumes data producer `id` and opens the reply channel for it.
async fn chat_with(
    send: &SendTransport,
    recv: &RecvTransport,
    id: &str,
) -> Result<(DataConsumer, DataProducer), BotError> {
    let consumer = recv.consume_data(id).await?;
    // Open before the reply is announced: whoever sees the reply can be heard.
    consumer.wait_open().await?;
    let reply = send
        .produce_data(DataProduceOptions {
            label: format!("bot-reply:{id}"),
            protocol: consumer.protocol().to_owned(),
            ..Default::default()
        })
        .await?;
    Ok((consumer, reply))
}

/// Answers every message of `consumer` on `reply` until the channel closes.
async fn answer_chat(consumer: DataConsumer, reply: DataProducer) {
    while let Some(message) = consumer.recv().await {
        let sent = match message.text() {
            Some(text) => match answer(text) {
                Some(a) => reply.send_text(&a).await,
                None => Ok(()),
            },
            None if !message.is_text => reply.send_binary(&message.data).await,
            None => Ok(()),
        };
        if let Err(e) = sent {
            eprintln!("bot: reply failed: {e}");
            break;
        }
    }
    let _ = reply.close().await;
}

/// Largest VP8 payload per RTP packet (leaves room for headers within a 1200-byte MTU).
const MAX_PAYLOAD: usize = 1100;

/// Sends the file's frames at their pace, in a loop, as RTP (RFC 7741 packetization).
async fn play(producer: &Producer, file: &IvfFile) -> Result<(), BotError> {
    let start = tokio::time::Instant::now();
    let mut seq: u16 = rand::random();
    let base: u32 = rand::random();
    // Each loop starts one frame after the last frame of the previous one.
    let loop_ticks = file.duration_ticks();
    for round in 0u64.. {
        for (ticks, frame) in &file.frames {
            let at = round * loop_ticks + ticks;
            tokio::time::sleep_until(start + Duration::from_micros(at * 1_000_000 / 90_000)).await;
            let ts = base.wrapping_add(at as u32);
            let chunks = frame.chunks(MAX_PAYLOAD);
            let last = chunks.len().saturating_sub(1);
            for (i, chunk) in chunks.enumerate() {
                let mut payload = BytesMut::with_capacity(chunk.len() + 1);
                // S bit on the first packet of a frame, partition 0, no extensions.
                payload.put_u8(if i == 0 { 0x10 } else { 0x00 });
                payload.put_slice(chunk);
                producer.send(seq, ts, i == last, payload.freeze()).await?;
                seq = seq.wrapping_add(1);
            }
        }
    }
    Ok(())
}

/// The frames of a VP8 IVF file, with their times in 90 kHz ticks from the first.
pub struct IvfFile {
    /// (time in 90 kHz ticks, frame).
    pub frames: Vec<(u64, Bytes)>,
}

impl IvfFile {
    /// Parses an IVF file of VP8 frames.
    pub fn read(bytes: &[u8]) -> Result<Self, BotError> {
        let header = bytes.get(..32).ok_or("IVF: file shorter than its header")?;
        if &header[..4] != b"DKIF" {
            return Err("IVF: no DKIF signature".into());
        }
        if &header[8..12] != b"VP80" {
            return Err("IVF: only VP8 (VP80) files are played".into());
        }
        let le32 = |b: &[u8]| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let header_len = usize::from(u16::from_le_bytes([header[6], header[7]])).max(32);
        let (rate, scale) = (le32(&header[16..20]), le32(&header[20..24]).max(1));
        if rate == 0 {
            return Err("IVF: time base rate is 0".into());
        }
        let mut frames = Vec::new();
        let mut at = header_len;
        let mut first = None;
        while let Some(h) = bytes.get(at..at + 12) {
            let len = le32(&h[..4]) as usize;
            let pts = u64::from_le_bytes([h[4], h[5], h[6], h[7], h[8], h[9], h[10], h[11]]);
            let frame = bytes
                .get(at + 12..at + 12 + len)
                .ok_or("IVF: truncated frame")?;
            let first = *first.get_or_insert(pts);
            let ticks = pts.saturating_sub(first) * 90_000 * scale / rate;
            frames.push((ticks, Bytes::copy_from_slice(frame)));
            at += 12 + len;
        }
        if frames.is_empty() {
            return Err("IVF: no frames".into());
        }
        Ok(Self { frames })
    }

    /// Time of the last frame plus one frame interval (the average), in 90 kHz ticks.
    pub fn duration_ticks(&self) -> u64 {
        let last = self.frames.last().map_or(0, |f| f.0);
        let n = self.frames.len() as u64;
        if n > 1 { last + last / (n - 1) } else { 3000 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_ping_and_echoes_the_rest() {
        assert_eq!(answer("!ping").as_deref(), Some("pong"));
        assert_eq!(answer(" hello ").as_deref(), Some("echo: hello"));
        assert_eq!(answer("  "), None);
    }

    #[test]
    fn ivf_frames_get_90_khz_times() {
        let mut file = Vec::new();
        file.extend_from_slice(b"DKIF\0\0\x20\0VP80");
        file.extend_from_slice(&[0x40, 0x01, 0xf0, 0x00]); // 320x240
        file.extend_from_slice(&30u32.to_le_bytes()); // rate
        file.extend_from_slice(&1u32.to_le_bytes()); // scale
        file.extend_from_slice(&[0; 8]);
        for pts in [0u64, 1, 2] {
            file.extend_from_slice(&2u32.to_le_bytes());
            file.extend_from_slice(&pts.to_le_bytes());
            file.extend_from_slice(&[0xab, pts as u8]);
        }
        let ivf = IvfFile::read(&file).expect("parses");
        let times: Vec<u64> = ivf.frames.iter().map(|f| f.0).collect();
        assert_eq!(times, vec![0, 3000, 6000]);
        assert_eq!(ivf.duration_ticks(), 9000);
        assert!(IvfFile::read(&file[..20]).is_err());
        file[8..12].copy_from_slice(b"VP90");
        assert!(IvfFile::read(&file).is_err());
    }
}
