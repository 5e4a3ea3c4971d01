//! `ferrosoup record` against the real binary: ffmpeg (Debian package) publishes a test
//! pattern (VP8 + Opus over plain RTP) into a room for a bounded time, the recorder
//! consumes both producers over plain transports and writes an Ogg and an IVF file, and
//! ffprobe reads each with the expected codec, duration (±10 %) and frame count.

mod common;

use std::path::Path;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use common::broadcast::{Video, publish};
use common::{TestServer, within};

/// Seconds ffmpeg publishes.
const SECONDS: u32 = 4;
/// ffmpeg's test pattern rate and Opus frame (20 ms).
const FPS: u32 = 30;
const OPUS_PACKETS_PER_SECOND: u32 = 50;

/// ffprobe's codec name, frames read and duration of a file's first stream.
async fn probe(path: &Path) -> (String, u64, f64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries"])
        .args([
            "stream=codec_name,nb_read_frames:format=duration",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .await
        .expect("run ffprobe (apt-get install ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe {}: {:?}",
        path.display(),
        out
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let stream = &v["streams"][0];
    let frames = stream["nb_read_frames"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .expect("nb_read_frames");
    let duration = v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("duration");
    (
        stream["codec_name"].as_str().unwrap_or_default().to_owned(),
        frames,
        duration,
    )
}

fn within_ten_percent(value: f64, expected: f64) -> bool {
    (value - expected).abs() <= expected * 0.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferrosoup_record_writes_files_that_ffprobe_reads() {
    records_files_that_ffprobe_reads(Video::Vp8, "vp8", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferrosoup_record_started_first_records_vp9_that_appears_later() {
    records_files_that_ffprobe_reads(Video::Vp9, "vp9", true).await;
}

/// ffmpeg publishes `video` and Opus, `ferrosoup record` records both; ffprobe must read
/// the video as `expected_codec`. With `recorder_first`, the recorder starts in the empty
/// room and must pick up the producers when they appear.
async fn records_files_that_ffprobe_reads(
    video: Video,
    expected_codec: &str,
    recorder_first: bool,
) {
    let server = TestServer::start(1).await;
    let room = "recorded";
    let published = if recorder_first {
        None
    } else {
        Some(publish(&server, room, "ffmpeg", SECONDS, video).await)
    };
    let dir = std::env::temp_dir().join(format!(
        "ferrosoup-record-{}-{expected_codec}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);

    // The recorder consumes both producers before ffmpeg sends its first packet, so the
    // whole publication is recorded; it stops on SIGINT (Ctrl-C) after ffmpeg is done.
    let mut recorder = Command::new(env!("CARGO_BIN_EXE_ferrosoup"))
        .args(["record", "--room", room, "--out"])
        .arg(&dir)
        .args(["--server", &format!("http://127.0.0.1:{}", server.port)])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run ferrosoup record");
    let (mut ffmpeg, [audio_producer, video_producer]) = match published {
        Some(published) => published,
        None => {
            let joined = within("the recorder joins the empty room", 10, async {
                loop {
                    let (_, rooms) = server
                        .http("GET", &format!("/api/rooms/{room}"), None)
                        .await;
                    if rooms.to_string().contains("recorder-") {
                        return true;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            })
            .await;
            assert!(joined);
            publish(&server, room, "ffmpeg", SECONDS, video).await
        }
    };
    let started = within("the recorder joins the room", 10, async {
        loop {
            let (_, rooms) = server
                .http("GET", &format!("/api/rooms/{room}"), None)
                .await;
            let consumers = rooms["peers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["consumers"].as_array())
                .map(Vec::len)
                .sum::<usize>();
            if consumers == 2 {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(started);
    let mut publisher = ffmpeg.spawn().expect("run ffmpeg (apt-get install ffmpeg)");
    let published = within("ffmpeg publishes", 30, publisher.wait())
        .await
        .expect("ffmpeg");
    assert!(published.success(), "ffmpeg failed: {published}");
    // Let the last packets through the SFU, then Ctrl-C.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let pid = recorder.id().expect("recorder pid").to_string();
    let killed = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    let status = within("the recorder stops", 10, recorder.wait())
        .await
        .expect("recorder");
    let mut report = String::new();
    recorder
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut report)
        .await
        .expect("read report");
    assert!(status.success(), "recorder failed: {status}\n{report}");

    // One line per file: path, kind, "N frames", "S s", lost packets.
    let files: Vec<(String, String, u64)> = report
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let frames = f[2].trim_end_matches(" frames").parse().expect("frames");
            (f[0].to_owned(), f[1].to_owned(), frames)
        })
        .collect();
    assert_eq!(files.len(), 2, "{report}");
    for (path, kind, written) in &files {
        let (codec, frames, duration) = probe(Path::new(path)).await;
        eprintln!("{kind}: ffprobe reads {codec}, {frames} frames, {duration} s");
        assert_eq!(
            frames, *written,
            "{path}: ffprobe reads every frame written"
        );
        assert!(
            within_ten_percent(duration, f64::from(SECONDS)),
            "{path}: {duration} s for {SECONDS} s published"
        );
        match kind.as_str() {
            "audio" => {
                assert!(
                    path.contains(&audio_producer) && path.ends_with(".ogg"),
                    "{path}"
                );
                assert_eq!(codec, "opus");
                let expected = f64::from(SECONDS * OPUS_PACKETS_PER_SECOND);
                assert!(
                    within_ten_percent(frames as f64, expected),
                    "{frames} packets"
                );
            }
            "video" => {
                assert!(
                    path.contains(&video_producer) && path.ends_with(".ivf"),
                    "{path}"
                );
                assert_eq!(codec, expected_codec);
                let expected = f64::from(SECONDS * FPS);
                assert!(
                    within_ten_percent(frames as f64, expected),
                    "{frames} frames"
                );
            }
            other => panic!("unexpected kind {other}"),
        }
    }
    // The recorder left the room.
    let (_, rooms) = server
        .http("GET", &format!("/api/rooms/{room}"), None)
        .await;
    assert!(
        !rooms.to_string().contains("recorder-"),
        "the recorder's broadcaster is gone: {rooms}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
