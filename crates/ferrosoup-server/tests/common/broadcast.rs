//! Broadcaster helpers shared by the tests that publish with ffmpeg over plain RTP.

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::process::Command;

use super::TestServer;

/// SSRCs and payload types ffmpeg sends with.
pub const AUDIO_SSRC: u32 = 1111;
pub const AUDIO_PT: u8 = 100;
pub const VIDEO_SSRC: u32 = 2222;
pub const VIDEO_PT: u8 = 101;

/// A plain transport as the API answers it.
pub struct Plain {
    /// Transport id.
    pub id: String,
    /// RTP port.
    pub port: u16,
    /// RTCP port (without rtcpMux).
    pub rtcp_port: Option<u16>,
}

/// Sends a request that must answer 200; its JSON.
pub async fn ok(server: &TestServer, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, answer) = server.http(method, path, body.as_ref()).await;
    assert_eq!(status, 200, "{method} {path}: {answer}");
    answer
}

/// Creates a plain transport of broadcaster `who`.
pub async fn plain_transport(server: &TestServer, room: &str, who: &str, body: Value) -> Plain {
    let t = ok(
        server,
        "POST",
        &format!("/rooms/{room}/broadcasters/{who}/transports"),
        Some(body),
    )
    .await;
    assert_eq!(t["ip"], "127.0.0.1", "{t}");
    Plain {
        id: t["id"].as_str().expect("id").to_owned(),
        port: t["port"].as_u64().expect("port") as u16,
        rtcp_port: t["rtcpPort"].as_u64().map(|p| p as u16),
    }
}

/// The video codec ffmpeg publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Video {
    /// VP8 (libvpx).
    Vp8,
    /// VP9 (libvpx-vp9; ffmpeg's VP9 packetizer counts as experimental).
    Vp9,
}

impl Video {
    /// The codec's mime type and ffmpeg's encoder.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Video::Vp8 => ("video/vp8", "libvpx"),
            Video::Vp9 => ("video/vp9", "libvpx-vp9"),
        }
    }
}

/// Creates broadcaster `who` with transports and producers as mediasoup-demo's ffmpeg.sh
/// does (comedia, rtcpMux off), then returns ffmpeg sending `seconds` of a test pattern
/// in `video` (keyframe every second) and a 440 Hz tone to them.
pub async fn publish(
    server: &TestServer,
    room: &str,
    who: &str,
    seconds: u32,
    video_codec: Video,
) -> (Command, [String; 2]) {
    let (mime, encoder) = video_codec.names();
    ok(
        server,
        "POST",
        &format!("/rooms/{room}/broadcasters"),
        Some(json!({"id": who, "displayName": "FFmpeg", "device": {"name": "FFmpeg"}})),
    )
    .await;
    let plain = json!({"type": "plain", "comedia": true, "rtcpMux": false});
    let audio = plain_transport(server, room, who, plain.clone()).await;
    let video = plain_transport(server, room, who, plain).await;
    let audio_producer = ok(
        server,
        "POST",
        &format!(
            "/rooms/{room}/broadcasters/{who}/transports/{}/producers",
            audio.id
        ),
        Some(json!({"kind": "audio", "rtpParameters": {
            "codecs": [{"mimeType": "audio/opus", "payloadType": AUDIO_PT, "clockRate": 48000,
                        "channels": 2, "parameters": {"sprop-stereo": 1}}],
            "encodings": [{"ssrc": AUDIO_SSRC}]}})),
    )
    .await["id"]
        .as_str()
        .expect("producer id")
        .to_owned();
    let video_producer = ok(
        server,
        "POST",
        &format!(
            "/rooms/{room}/broadcasters/{who}/transports/{}/producers",
            video.id
        ),
        Some(json!({"kind": "video", "rtpParameters": {
            "codecs": [{"mimeType": mime, "payloadType": VIDEO_PT, "clockRate": 90000}],
            "encodings": [{"ssrc": VIDEO_SSRC}]}})),
    )
    .await["id"]
        .as_str()
        .expect("producer id")
        .to_owned();
    let (audio_rtcp, video_rtcp) = (
        audio.rtcp_port.expect("rtcpPort without rtcpMux"),
        video.rtcp_port.expect("rtcpPort without rtcpMux"),
    );
    let tee = format!(
        "[select=a:f=rtp:ssrc={AUDIO_SSRC}:payload_type={AUDIO_PT}]rtp://127.0.0.1:{}?rtcpport={audio_rtcp}&pkt_size=1200|\
         [select=v:f=rtp:strict=experimental:ssrc={VIDEO_SSRC}:payload_type={VIDEO_PT}]rtp://127.0.0.1:{}?rtcpport={video_rtcp}&pkt_size=1200",
        audio.port, video.port
    );
    let mut ffmpeg = Command::new("ffmpeg");
    ffmpeg
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args([
            "-map", "1:a", "-c:a", "libopus", "-ac", "2", "-ar", "48000", "-b:a", "64k",
        ])
        .args(["-map", "0:v", "-c:v", encoder, "-b:v", "500k", "-g", "30"])
        .args([
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-f", "tee", &tee])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    (ffmpeg, [audio_producer, video_producer])
}
