//! (a) Peer A publishes Opus and VP8 with counters in the payload; peer B consumes both and
//! receives at least 99% of the frames, intact and in order.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use ferrosoup_client::{MediaKind, Peer};

const FRAMES: u32 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_and_vp8_flow_from_a_to_b() {
    let server = TestServer::start(1).await;
    let url = server.ws_url();
    let a = Peer::join(&url, "media", "alice")
        .await
        .expect("alice joins");
    let send = a.create_send_transport().await.expect("send transport");
    let audio = common::produce(&send, MediaKind::Audio, "audio/opus").await;
    let video = common::produce(&send, MediaKind::Video, "video/VP8").await;

    let b = Peer::join(&url, "media", "bob").await.expect("bob joins");
    let recv = b.create_recv_transport().await.expect("recv transport");
    let audio_in = recv.consume(audio.id()).await.expect("consume opus");
    let video_in = recv.consume(video.id()).await.expect("consume vp8");
    within("send transport connects", 10, send.wait_connected())
        .await
        .expect("send transport connected");
    within("recv transport connects", 10, recv.wait_connected())
        .await
        .expect("recv transport connected");
    audio_in.resume().await.expect("resume opus");
    video_in.resume().await.expect("resume vp8");

    // Like a real encoder: a keyframe first, and one whenever the SFU asks (PLI/FIR).
    let video = Arc::new(video);
    let (keyframe_wanted, watcher) = watch_keyframe_requests(video.clone());
    let sender = tokio::spawn(async move {
        for i in 0..FRAMES {
            let keyframe = keyframe_wanted.swap(false, Ordering::Relaxed);
            video
                .send(i as u16, i * 3000, true, vp8_frame(i, keyframe))
                .await
                .expect("send vp8");
            audio
                .send(i as u16, i * 960, false, opus_packet(i))
                .await
                .expect("send opus");
            tokio::time::sleep(FRAME_INTERVAL).await;
        }
        (audio, video)
    });

    let video_reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Ok(Some(p)) =
            tokio::time::timeout(Duration::from_secs(3), video_in.read_rtp()).await
        {
            got.push(vp8_counter(&p.payload).expect("vp8 payload intact"));
            if got.last() == Some(&(FRAMES - 1)) {
                break;
            }
        }
        got
    });
    let audio_reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Ok(Some(p)) =
            tokio::time::timeout(Duration::from_secs(3), audio_in.read_rtp()).await
        {
            got.push(opus_counter(&p.payload).expect("opus payload intact"));
            if got.last() == Some(&(FRAMES - 1)) {
                break;
            }
        }
        got
    });
    let _producers = sender.await.expect("sender task");
    watcher.abort();
    let video_got = video_reader.await.expect("video reader");
    let audio_got = audio_reader.await.expect("audio reader");
    for (name, got) in [("vp8", &video_got), ("opus", &audio_got)] {
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "{name}: frames out of order: {got:?}"
        );
        let ratio = got.len() as f64 / FRAMES as f64;
        assert!(
            ratio >= 0.99,
            "{name}: received {} of {FRAMES} frames",
            got.len()
        );
    }
}
