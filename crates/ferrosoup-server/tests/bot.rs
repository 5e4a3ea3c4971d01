//! The example bot (`examples/bot.rs`) against the real binary: it plays a VP8 IVF file
//! made by ffmpeg (Debian package) as a video producer that a Rust client receives, and
//! answers a chat data channel: `!ping` → `pong`, other text → `echo: …`.

mod common;

use std::process::Stdio;

use common::{TestServer, within};
use ferrosoup_client::{DataProduceOptions, Peer, RecvTransport, SendTransport, TransportOptions};
use ferrosoup_examples::bot::{BotOptions, run};
use tokio::process::Command;

fn with_data() -> TransportOptions {
    TransportOptions {
        data_channels: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_plays_a_file_and_answers_chat() {
    let server = TestServer::start(1).await;
    let url = server.ws_url();
    let room = "bot-room";
    let dir = std::env::temp_dir().join(format!("ferrosoup-bot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let video = dir.join("pattern.ivf");
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=30",
            "-t",
            "2",
        ])
        .args(["-c:v", "libvpx", "-b:v", "300k", "-g", "30"])
        .args(["-deadline", "realtime", "-cpu-used", "8"])
        .arg(&video)
        .stdin(Stdio::null())
        .status()
        .await
        .expect("run ffmpeg (apt-get install ffmpeg)");
    assert!(made.success(), "ffmpeg failed: {made}");

    let mut user = Peer::join(&url, room, "user").await.expect("user joins");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let bot = tokio::spawn(run(
        BotOptions {
            url: url.clone(),
            room: room.to_owned(),
            name: "bot".to_owned(),
            video: Some(video.clone()),
        },
        async {
            let _ = stopped.await;
        },
    ));

    // The bot's video: VP8 frames from the file, starting with the keyframe.
    let announced = within(
        "bot's newProducer",
        15,
        user.next_notification("newProducer"),
    )
    .await
    .expect("newProducer");
    assert_eq!(announced["kind"], "video");
    let producer_id = announced["producerId"].as_str().expect("id").to_owned();
    let recv = RecvTransport::create(user.signaling(), user.device(), with_data())
        .await
        .expect("recv transport");
    let consumer = recv.consume(&producer_id).await.expect("consume video");
    consumer.resume().await.expect("resume");
    let mut frame_starts = 0;
    within("bot's video arrives", 15, async {
        while frame_starts < 30 {
            let packet = consumer.read_rtp().await.expect("consumer open");
            if packet.payload.first().is_some_and(|b| b & 0x10 != 0) {
                frame_starts += 1;
            }
        }
    })
    .await;

    // Chat: the bot consumes our channel and answers on one labelled after it.
    let send = SendTransport::create(user.signaling(), user.device(), with_data())
        .await
        .expect("send transport");
    let chat = send
        .produce_data(DataProduceOptions {
            label: "chat".into(),
            ..Default::default()
        })
        .await
        .expect("produce chat");
    let reply = within("bot's reply channel", 15, async {
        loop {
            let n = user
                .next_notification("newDataProducer")
                .await
                .expect("newDataProducer");
            if n["label"] == format!("bot-reply:{}", chat.id()).as_str() {
                return n;
            }
        }
    })
    .await;
    let reply_id = reply["dataProducerId"].as_str().map(str::to_owned);
    let replies = recv
        .consume_data(reply_id.as_deref().expect("id"))
        .await
        .expect("consume reply");
    within("chat opens", 15, chat.wait_open())
        .await
        .expect("open");
    within("reply opens", 15, replies.wait_open())
        .await
        .expect("open");
    for (said, expected) in [("!ping", "pong"), ("hello bot", "echo: hello bot")] {
        chat.send_text(said).await.expect("send");
        let m = within("bot answers", 10, replies.recv())
            .await
            .expect("reply channel open");
        assert_eq!(m.text(), Some(expected));
    }
    chat.send_binary(&[1, 2, 3]).await.expect("send binary");
    let m = within("bot echoes binary", 10, replies.recv())
        .await
        .expect("reply channel open");
    assert!(!m.is_text);
    assert_eq!(&m.data[..], &[1, 2, 3]);

    // Stopping the bot makes it leave.
    let _ = stop.send(());
    within("bot stops", 10, bot)
        .await
        .expect("bot task")
        .expect("bot ran without error");
    let left = within("peerLeft", 10, user.next_notification("peerLeft"))
        .await
        .expect("peerLeft");
    assert!(
        left["peerId"].as_str().is_some_and(|p| !p.is_empty()),
        "{left}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
