//! The broadcaster HTTP API with real ffmpeg (Debian package): ffmpeg publishes a test
//! pattern (VP8 + Opus over plain RTP, `comedia`, RTCP on its own port) into a room whose
//! WebSocket peer sees it join, publish and leave; a plain-transport consumer receives the
//! media with its own SSRCs and payload types; a recording ffmpeg, fed by a plain consumer
//! through an SDP file, writes a WebM file that ffprobe reads. Loopback only, bounded.

mod common;

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio::process::Command;

use common::broadcast::{VIDEO_SSRC, Video, ok, plain_transport, publish};
use common::{TestServer, Ws, eventually, within};

/// A second broadcaster that consumes: it gives the room's RTP capabilities.
async fn recorder(server: &TestServer, room: &str, who: &str) {
    let caps = ok(server, "GET", &format!("/rooms/{room}"), None).await;
    let answer = ok(
        server,
        "POST",
        &format!("/rooms/{room}/broadcasters"),
        Some(
            json!({"id": who, "displayName": "Recorder", "device": {"name": "recorder"},
                    "rtpCapabilities": caps}),
        ),
    )
    .await;
    assert!(answer["peers"].is_array(), "{answer}");
}

/// Consumes `producer` on a new plain transport of `who` connected to `port`; the
/// consumer's SSRC and payload type.
async fn consume_to(
    server: &TestServer,
    room: &str,
    who: &str,
    producer: &str,
    transport: Value,
    remote: Value,
) -> (u32, u8) {
    let t = plain_transport(server, room, who, transport).await;
    ok(
        server,
        "POST",
        &format!(
            "/rooms/{room}/broadcasters/{who}/transports/{}/connect",
            t.id
        ),
        Some(remote),
    )
    .await;
    let c = ok(
        server,
        "POST",
        &format!(
            "/rooms/{room}/broadcasters/{who}/transports/{}/consume?producerId={producer}",
            t.id
        ),
        None,
    )
    .await;
    assert_eq!(c["producerId"], producer, "{c}");
    let ssrc = c["rtpParameters"]["encodings"][0]["ssrc"]
        .as_u64()
        .expect("consumer ssrc") as u32;
    let pt = c["rtpParameters"]["codecs"][0]["payloadType"]
        .as_u64()
        .expect("consumer payload type") as u8;
    (ssrc, pt)
}

/// Whether a VP8 RTP payload starts a keyframe (RFC 7741: S bit, partition 0, P bit 0).
fn vp8_keyframe_start(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    if first & 0x10 == 0 || first & 0x07 != 0 {
        return false;
    }
    let mut pos = 1;
    if first & 0x80 != 0 {
        let Some(&ext) = payload.get(1) else {
            return false;
        };
        pos = 2;
        if ext & 0x80 != 0 {
            pos += if payload.get(pos).is_some_and(|b| b & 0x80 != 0) {
                2
            } else {
                1
            };
        }
        if ext & 0x40 != 0 {
            pos += 1;
        }
        if ext & 0x30 != 0 {
            pos += 1;
        }
    }
    payload.get(pos).is_some_and(|b| b & 0x01 == 0)
}

/// RTP packets received on `socket` with `ssrc` and `pt` until none came for `quiet` (after
/// the first), and whether the first one started a VP8 keyframe.
async fn count_rtp(socket: &UdpSocket, ssrc: u32, pt: u8, quiet: Duration) -> (usize, bool) {
    let mut buf = [0u8; 1500];
    let (mut count, mut first_keyframe) = (0, false);
    let mut last_rtp = tokio::time::Instant::now();
    loop {
        // Before the first packet: ffmpeg is still starting (the caller bounds the wait).
        let wait = if count == 0 {
            Duration::from_secs(60)
        } else {
            quiet.saturating_sub(last_rtp.elapsed())
        };
        let Ok(Ok(n)) = tokio::time::timeout(wait, socket.recv(&mut buf)).await else {
            break;
        };
        let packet = &buf[..n];
        // RTCP (packet types 200..=204, read with the marker bit) shares the socket
        // (rtcpMux): the SFU's Sender Reports.
        if n < 12 || (200..=204).contains(&packet[1]) {
            continue;
        }
        last_rtp = tokio::time::Instant::now();
        let info = ferrosoup_rtc::rtp::parse_rtp(packet).expect("valid RTP");
        if info.ssrc == ssrc && info.payload_type == pt {
            if count == 0 {
                first_keyframe = vp8_keyframe_start(info.payload(packet));
            }
            count += 1;
        }
    }
    (count, first_keyframe)
}

#[tokio::test]
async fn ffmpeg_publishes_into_a_room_that_sees_it_and_a_plain_consumer_receives_it() {
    let server = TestServer::start(1).await;
    let room = "broadcast";
    let mut watcher = Ws::connect(&server.ws_url()).await;
    watcher
        .ok("joinRoom", json!({"roomId": room, "peerId": "watcher"}))
        .await;

    let (mut ffmpeg, [audio_producer, video_producer]) =
        publish(&server, room, "ffmpeg", 5, Video::Vp8).await;
    let joined = watcher.notification("peerJoined", |_| true).await;
    assert_eq!(joined["peerId"], "ffmpeg");
    assert_eq!(joined["appData"]["device"]["flag"], "broadcaster");
    for _ in 0..2 {
        let p = watcher.notification("newProducer", |_| true).await;
        assert_eq!(p["peerId"], "ffmpeg", "{p}");
    }

    recorder(&server, room, "rec").await;
    let audio_in = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let video_in = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let muxed = json!({"type": "plain", "comedia": false, "rtcpMux": true});
    let at =
        |s: &UdpSocket| json!({"ip": "127.0.0.1", "port": s.local_addr().expect("addr").port()});
    let (audio_ssrc, audio_pt) = consume_to(
        &server,
        room,
        "rec",
        &audio_producer,
        muxed.clone(),
        at(&audio_in),
    )
    .await;
    let (video_ssrc, video_pt) =
        consume_to(&server, room, "rec", &video_producer, muxed, at(&video_in)).await;
    assert_ne!(video_ssrc, VIDEO_SSRC, "the consumer has its own SSRC");

    let mut child = ffmpeg.spawn().expect("run ffmpeg (apt-get install ffmpeg)");
    let quiet = Duration::from_secs(3);
    let ((audio, _), (video, keyframe_first)) =
        within("ffmpeg's media through the SFU", 25, async {
            tokio::join!(
                count_rtp(&audio_in, audio_ssrc, audio_pt, quiet),
                count_rtp(&video_in, video_ssrc, video_pt, quiet),
            )
        })
        .await;
    let status = within("ffmpeg exits", 10, child.wait())
        .await
        .expect("ffmpeg");
    assert!(status.success(), "ffmpeg failed: {status}");
    // 5 s: 250 Opus packets of 20 ms, 150 VP8 frames of one or more packets.
    assert!(audio >= 200, "audio packets received: {audio}");
    assert!(video >= 150, "video packets received: {video}");
    assert!(
        keyframe_first,
        "the consumer's first packet starts a keyframe"
    );

    ok(
        &server,
        "DELETE",
        &format!("/rooms/{room}/broadcasters/ffmpeg"),
        None,
    )
    .await;
    let left = watcher.notification("peerLeft", |_| true).await;
    assert_eq!(left["peerId"], "ffmpeg");
    ok(
        &server,
        "DELETE",
        &format!("/rooms/{room}/broadcasters/rec"),
        None,
    )
    .await;
    assert!(
        eventually(5, async || server.counter("transports").await == 0).await,
        "every plain transport closed"
    );
}

/// Two free UDP ports in a row (RTP, RTCP) on loopback, for ffmpeg to listen on.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = a.local_addr().expect("addr").port();
        if port.is_multiple_of(2) && std::net::UdpSocket::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free even UDP port pair");
}

#[tokio::test]
async fn a_plain_consumer_records_a_producer_to_a_webm_file_that_ffprobe_reads() {
    let server = TestServer::start(1).await;
    let room = "recording";
    let (mut ffmpeg, [_, video_producer]) = publish(&server, room, "ffmpeg", 6, Video::Vp8).await;
    recorder(&server, room, "rec").await;

    let port = free_port_pair();
    let (ssrc, pt) = consume_to(
        &server,
        room,
        "rec",
        &video_producer,
        json!({"type": "plain", "comedia": false, "rtcpMux": false}),
        json!({"ip": "127.0.0.1", "port": port, "rtcpPort": port + 1}),
    )
    .await;
    let dir = std::env::temp_dir().join(format!("ferrosoup-rec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sdp = dir.join("video.sdp");
    let webm = dir.join("video.webm");
    std::fs::write(
        &sdp,
        format!(
            "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=ferrosoup\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=video {port} RTP/AVP {pt}\r\na=rtcp:{}\r\na=rtpmap:{pt} VP8/90000\r\na=ssrc:{ssrc} cname:rec\r\n",
            port + 1
        ),
    )
    .expect("write the SDP file");
    // 3 s of recording out of the 6 s published.
    let mut record = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-protocol_whitelist", "file,udp,rtp"])
        .arg("-i")
        .arg(&sdp)
        .args(["-c", "copy", "-t", "3"])
        .arg(&webm)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run ffmpeg (apt-get install ffmpeg)");
    let mut publisher = ffmpeg.spawn().expect("run ffmpeg");
    let recorded = within("the recording ends", 25, record.wait())
        .await
        .expect("ffmpeg recorder");
    assert!(recorded.success(), "recording ffmpeg failed: {recorded}");
    let _ = within("the publisher ends", 15, publisher.wait()).await;

    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=codec_name,nb_read_frames:format=duration",
        ])
        .args(["-of", "json"])
        .arg(&webm)
        .output()
        .await
        .expect("run ffprobe");
    assert!(
        probe.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let info: Value = serde_json::from_slice(&probe.stdout).expect("ffprobe JSON");
    let stream = &info["streams"][0];
    assert_eq!(stream["codec_name"], "vp8", "{info}");
    let frames: u64 = stream["nb_read_frames"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .expect("frame count");
    let duration: f64 = info["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("duration");
    // 3 s at 30 fps, ±10 %.
    assert!(
        (81..=99).contains(&frames),
        "decoded frames: {frames} ({info})"
    );
    assert!(
        (2.7..=3.3).contains(&duration),
        "duration: {duration} s ({info})"
    );
    let first = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-read_intervals",
            "%+#1",
        ])
        .args(["-show_entries", "frame=key_frame", "-of", "csv=p=0"])
        .arg(&webm)
        .output()
        .await
        .expect("run ffprobe");
    assert_eq!(
        String::from_utf8_lossy(&first.stdout).trim(),
        "1",
        "the recording starts on a keyframe"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_broadcaster_api_answers_bad_input_with_json_errors() {
    let mut server =
        TestServer::start_with(1, &[("SESSION_GRACE", "0"), ("ADMIN_KEY", "k3y")]).await;
    let room = "bad";
    let base = format!("/rooms/{room}/broadcasters");
    let cases: Vec<(&str, String, Option<Value>, u16)> = vec![
        ("POST", base.clone(), Some(json!("not an object")), 400),
        (
            "POST",
            base.clone(),
            Some(json!({"id": "b", "displayName": "B"})),
            400,
        ),
        (
            "POST",
            base.clone(),
            Some(json!({"id": "x".repeat(200), "displayName": "B", "device": {"name": "n"}})),
            400,
        ),
        (
            "POST",
            format!("{base}/nobody/transports"),
            Some(json!({"type": "plain"})),
            404,
        ),
        ("DELETE", format!("{base}/nobody"), None, 404),
    ];
    for (method, path, body, status) in cases {
        let (got, answer) = server.http(method, &path, body.as_ref()).await;
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert!(answer["error"].is_string(), "{method} {path}: {answer}");
    }
    ok(
        &server,
        "POST",
        &base,
        Some(json!({"id": "b", "displayName": "B", "device": {"name": "n"}})),
    )
    .await;
    let (status, _) = server
        .http(
            "POST",
            &base,
            Some(&json!({"id": "b", "displayName": "B", "device": {"name": "n"}})),
        )
        .await;
    assert_eq!(status, 409, "a second broadcaster with the same id");
    let transports = format!("{base}/b/transports");
    for (body, status) in [
        (json!({"type": "bogus"}), 400),
        (
            json!({"type": "plain", "enableSrtp": true, "srtpCryptoSuite": "NONE"}),
            400,
        ),
    ] {
        let (got, answer) = server.http("POST", &transports, Some(&body)).await;
        assert_eq!(got, status, "{body}: {answer}");
    }
    let t = plain_transport(
        &server,
        room,
        "b",
        json!({"type": "plain", "comedia": false}),
    )
    .await;
    let connect = format!("{transports}/{}/connect", t.id);
    for (body, status) in [
        (json!({"ip": "not-an-ip", "port": 5000}), 400),
        (json!({"ip": "127.0.0.1"}), 400),
        (
            json!({"ip": "127.0.0.1", "port": 5000, "srtpParameters": {
            "cryptoSuite": "AES_CM_128_HMAC_SHA1_80", "keyBase64": "AAAA"}}),
            400,
        ),
    ] {
        let (got, answer) = server.http("POST", &connect, Some(&body)).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer["error"].is_string(), "{body}: {answer}");
    }
    let (status, answer) = server
        .http(
            "POST",
            &format!("{transports}/{}/consume?producerId=x", t.id),
            None,
        )
        .await;
    assert_eq!(status, 400, "no rtpCapabilities given: {answer}");
    // Without the admin key: 401.
    server.admin_key = None;
    let (status, _) = server.http("GET", &format!("/rooms/{room}"), None).await;
    assert_eq!(status, 401);
}
