//! Two peers in one room, over real WebRTC: alice publishes a synthetic VP8 stream, bob
//! consumes it and reports what arrived.
//!
//! Start a server first (`ferrosoup`, or `cargo run -p ferrosoup-server`), then:
//!
//! ```text
//! cargo run -p ferrosoup-examples --example two_peers -- ws://127.0.0.1:3000/ws
//! ```
//!
//! The steps are those of any mediasoup-style app: join a room, create a send transport
//! and `produce`, create a receive transport and `consume`, `resume` the consumer, leave.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrosoup_client::{MediaKind, Peer, ProduceOptions, Producer};
use tokio::time::timeout;

/// How long alice sends: 5 s of 30 frames per second.
const FRAMES: u32 = 150;
const FRAME_INTERVAL: Duration = Duration::from_millis(33);
/// VP8 runs on a 90 kHz RTP clock: 3000 ticks per frame at 30 fps.
const TICKS_PER_FRAME: u32 = 3000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:3000/ws".to_owned());
    let room = "two-peers-example";

    // 1. Alice joins the room (`createRoom` + `joinRoom`) and publishes VP8 on a send
    //    transport. The SDK builds the SDP locally; the server only sees JSON.
    let alice = Peer::join(&url, room, "alice").await?;
    let send = alice.create_send_transport().await?;
    let vp8 = ProduceOptions {
        codec: Some("video/VP8".into()),
        ..Default::default()
    };
    let producer = send.produce(MediaKind::Video, vp8).await?;
    println!(
        "alice joined as {} and produces {}",
        alice.peer_id(),
        producer.id()
    );

    // 2. Bob joins. The `joinRoom` answer lists the peers already there with their
    //    producers: that is how a late joiner finds what to consume.
    let bob = Peer::join(&url, room, "bob").await?;
    let producer_id = bob
        .peers()
        .iter()
        .flat_map(|peer| peer["producers"].as_array().into_iter().flatten())
        .find_map(|p| p["producerId"].as_str())
        .ok_or("bob sees no producer in the room")?
        .to_owned();
    let recv = bob.create_recv_transport().await?;
    // Consumers start paused, so the app can get ready before media arrives.
    let consumer = recv.consume(&producer_id).await?;
    println!("bob joined as {} and consumes {producer_id}", bob.peer_id());

    // 3. ICE and DTLS run as soon as the transports have something to carry.
    timeout(Duration::from_secs(10), send.wait_connected()).await??;
    timeout(Duration::from_secs(10), recv.wait_connected()).await??;
    println!("both transports connected");

    // 4. Alice's "encoder": one small VP8 frame per RTP packet carrying a counter, and a
    //    keyframe first and whenever the server asks for one (RTCP PLI or FIR).
    let producer = Arc::new(producer);
    let sender = tokio::spawn(run_encoder(producer.clone()));

    // 5. Bob resumes his consumer. The server asks alice for a keyframe, so the stream
    //    starts on one; the first frame's latency includes that round trip.
    let resumed_at = Instant::now();
    consumer.resume().await?;
    let mut first_latency = None;
    let (mut received, mut first, mut last) = (0u32, None, 0u32);
    // Read until the last frame, or until nothing came for two seconds.
    while let Ok(Some(packet)) = timeout(Duration::from_secs(2), consumer.read_rtp()).await {
        let Some(counter) = frame_counter(&packet.payload) else {
            println!("bob: unexpected payload of {} bytes", packet.payload.len());
            continue;
        };
        first_latency.get_or_insert_with(|| resumed_at.elapsed());
        first.get_or_insert(counter);
        received += 1;
        last = counter;
        if counter == FRAMES - 1 {
            break;
        }
    }
    sender.await??;

    // 6. What arrived. Frames sent before the first keyframe after resume are not
    //    forwarded (they could not be decoded), so loss counts from the first frame on.
    match (first, first_latency) {
        (Some(first), Some(latency)) => {
            let expected = last - first + 1;
            let lost = expected.saturating_sub(received);
            println!("bob received {received} frames (#{first}..#{last} of {FRAMES} sent)");
            println!(
                "first frame {:.1} ms after resume",
                latency.as_secs_f64() * 1000.0
            );
            println!(
                "loss: {lost} of {expected} ({:.1}%)",
                100.0 * f64::from(lost) / f64::from(expected)
            );
        }
        _ => println!("bob received nothing"),
    }

    // 7. Leaving closes everything the peer owns on the server; the others are told.
    bob.leave().await?;
    alice.leave().await?;
    println!("both left");
    Ok(())
}

/// Sends [`FRAMES`] frames on `producer`, answering keyframe requests.
async fn run_encoder(producer: Arc<Producer>) -> Result<(), ferrosoup_client::ClientError> {
    let keyframe_wanted = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (producer, wanted) = (producer.clone(), keyframe_wanted.clone());
        tokio::spawn(async move {
            while let Some(request) = producer.next_keyframe_request().await {
                println!("alice: keyframe requested ({request:?})");
                wanted.store(true, Ordering::Relaxed);
            }
        })
    };
    for i in 0..FRAMES {
        let keyframe = keyframe_wanted.swap(false, Ordering::Relaxed);
        // Sequence numbers wrap at 16 bits, timestamps at 32: truncation is intended.
        let (seq, ts) = (i as u16, i.wrapping_mul(TICKS_PER_FRAME));
        producer.send(seq, ts, true, vp8_frame(i, keyframe)).await?;
        tokio::time::sleep(FRAME_INTERVAL).await;
    }
    watcher.abort();
    Ok(())
}

/// A synthetic one-packet VP8 frame: the payload descriptor (start of partition 0), the
/// first byte of the VP8 header whose low bit is 0 for keyframes, then the frame counter
/// and some filler. Enough for the SFU, which looks only at the keyframe bit.
fn vp8_frame(counter: u32, keyframe: bool) -> bytes::Bytes {
    let mut payload = vec![0x10, if keyframe { 0x00 } else { 0x01 }];
    payload.extend_from_slice(&counter.to_be_bytes());
    payload.resize(200, 0xab);
    bytes::Bytes::from(payload)
}

/// The counter of a frame built by [`vp8_frame`].
fn frame_counter(payload: &[u8]) -> Option<u32> {
    if payload.len() != 200 || payload[0] != 0x10 {
        return None;
    }
    payload.get(2..6)?.try_into().ok().map(u32::from_be_bytes)
}
