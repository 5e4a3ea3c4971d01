//! (c) Feedback from the consumer side reaches the producer side:
//! - a PLI that B sends for its consumer, and B's `requestConsumerKeyFrame`, each make the
//!   server send a PLI/FIR to A for the producer's SSRC, and B then receives a keyframe;
//! - packets really lost on the wire to B (a lossy UDP relay between the server and B's
//!   receive transport) are NACKed by B and retransmitted by the server, so B still gets
//!   every frame intact.
//!
//! And `setMaxIncomingBitrate` reaches the publishing client as REMBs over UDP and SRTCP.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::raw_client::{MediaLink, RoomSteps, TransportInfo, sha256};
use common::*;
use ferrosoup_client::{
    Consumer, KeyframeRequest, MediaKind, Peer, Producer, RecvTransport, TransportOptions,
};
use ferrosoup_rtc::dtls::DtlsCertificate;
use serde_json::json;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Longer than the server's least interval between two keyframe requests to one stream
/// (`KEYFRAME_MIN_INTERVAL`, 300 ms): a keyframe request after this much silence is not
/// swallowed by the rate limit.
const QUIET: Duration = Duration::from_millis(500);

/// A VP8 sender that behaves like an encoder: a keyframe first and one after every PLI/FIR
/// it receives. Every request is also reported on `requests`.
struct Encoder {
    stop: Arc<AtomicBool>,
    sender: JoinHandle<()>,
    watcher: JoinHandle<()>,
    requests: mpsc::UnboundedReceiver<KeyframeRequest>,
}

impl Encoder {
    /// Sends `frames` frames (forever when `None`), one every [`FRAME_INTERVAL`].
    fn start(video: Producer, frames: Option<u32>) -> Self {
        let video = Arc::new(video);
        let stop = Arc::new(AtomicBool::new(false));
        let keyframe_wanted = Arc::new(AtomicBool::new(true));
        let (tx, requests) = mpsc::unbounded_channel();
        let watcher = {
            let (video, wanted) = (video.clone(), keyframe_wanted.clone());
            tokio::spawn(async move {
                while let Some(request) = video.next_keyframe_request().await {
                    wanted.store(true, Ordering::Relaxed);
                    let _ = tx.send(request);
                }
            })
        };
        let sender = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) && frames.is_none_or(|n| i < n) {
                    let keyframe = keyframe_wanted.swap(false, Ordering::Relaxed);
                    video
                        .send(i as u16, i.wrapping_mul(3000), true, vp8_frame(i, keyframe))
                        .await
                        .expect("send vp8");
                    i += 1;
                    tokio::time::sleep(FRAME_INTERVAL).await;
                }
            })
        };
        Self {
            stop,
            sender,
            watcher,
            requests,
        }
    }

    /// Waits until no keyframe request arrived for [`QUIET`], so the next one the test
    /// provokes passes the server's rate limit.
    async fn settle(&mut self) {
        while let Ok(Some(_)) = tokio::time::timeout(QUIET, self.requests.recv()).await {}
    }

    /// The next keyframe request A receives; on timeout, fails with the server's counters.
    async fn next_request(&mut self, server: &TestServer, what: &str) -> KeyframeRequest {
        match tokio::time::timeout(Duration::from_secs(5), self.requests.recv()).await {
            Ok(request) => request.expect("producer open"),
            Err(_) => panic!(
                "timed out after 5s: {what}; server stats {}",
                server.get_text("/api/stats").await.unwrap_or_default()
            ),
        }
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        within("encoder stops", 10, self.sender)
            .await
            .expect("sender task");
        self.watcher.abort();
    }
}

/// Reads a VP8 consumer and reports the counter of every keyframe it receives.
fn keyframe_reader(consumer: Arc<Consumer>) -> (JoinHandle<()>, mpsc::UnboundedReceiver<u32>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(p) = consumer.read_rtp().await {
            let counter = vp8_counter(&p.payload).expect("vp8 payload intact");
            if p.payload[1] & 1 == 0 && tx.send(counter).is_err() {
                return;
            }
        }
    });
    (task, rx)
}

/// The counter of the last keyframe B has received so far (at least `last`).
fn latest_keyframe(keyframes: &mut mpsc::UnboundedReceiver<u32>, mut last: u32) -> u32 {
    while let Ok(k) = keyframes.try_recv() {
        last = last.max(k);
    }
    last
}

/// Waits for a keyframe with a counter above `after`, returns its counter.
async fn keyframe_after(keyframes: &mut mpsc::UnboundedReceiver<u32>, after: Option<u32>) -> u32 {
    loop {
        let k = keyframes.recv().await.expect("consumer still open");
        if after.is_none_or(|a| k > a) {
            return k;
        }
    }
}

/// Waits until the server's counter `name` exceeds `value`.
async fn counter_above(server: &TestServer, name: &str, value: u64) {
    if eventually(5, async || server.counter(name).await > value).await {
        return;
    }
    panic!(
        "{name} stayed at {value}: {}",
        server.get_text("/api/stats").await.unwrap_or_default()
    );
}

fn assert_about(request: KeyframeRequest, ssrc: u32) {
    let media_ssrc = match request {
        KeyframeRequest::Pli { media_ssrc } | KeyframeRequest::Fir { media_ssrc } => media_ssrc,
    };
    assert_eq!(
        media_ssrc, ssrc,
        "keyframe request for the producer's SSRC: {request:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pli_and_keyframe_request_from_b_reach_a() {
    let server = TestServer::start(1).await;
    let url = server.ws_url();
    let a = Peer::join(&url, "pli", "alice").await.expect("alice joins");
    let send = a.create_send_transport().await.expect("send transport");
    let video = common::produce(&send, MediaKind::Video, "video/VP8").await;
    let producer_ssrc = video.ssrc();

    let b = Peer::join(&url, "pli", "bob").await.expect("bob joins");
    let recv = b.create_recv_transport().await.expect("recv transport");
    let video_in = Arc::new(recv.consume(video.id()).await.expect("consume vp8"));
    within("send transport connects", 10, send.wait_connected())
        .await
        .expect("send transport connected");
    within("recv transport connects", 10, recv.wait_connected())
        .await
        .expect("recv transport connected");
    video_in.resume().await.expect("resume vp8");

    let mut encoder = Encoder::start(video, None);
    let (reader, mut keyframes) = keyframe_reader(video_in.clone());
    let first = within(
        "B receives the first keyframe",
        10,
        keyframe_after(&mut keyframes, None),
    )
    .await;
    // The resume asked A for a keyframe; that request is answered and the rate limit
    // window has passed once nothing arrives for a while.
    within("keyframe requests settle", 20, encoder.settle()).await;
    let plis_received = server.counter("plis_received").await;
    let before = latest_keyframe(&mut keyframes, first);

    // 1. RTCP PLI from B.
    video_in.send_pli().await.expect("B sends a PLI");
    let request = encoder.next_request(&server, "B's PLI reaches A").await;
    assert_about(request, producer_ssrc);
    let after_pli = within(
        "B receives the requested keyframe",
        5,
        keyframe_after(&mut keyframes, Some(before)),
    )
    .await;
    counter_above(&server, "plis_received", plis_received).await;

    // 2. `requestConsumerKeyFrame` over signaling.
    within("keyframe requests settle", 20, encoder.settle()).await;
    let before = latest_keyframe(&mut keyframes, after_pli);
    video_in
        .request_keyframe()
        .await
        .expect("requestConsumerKeyFrame");
    let request = encoder
        .next_request(&server, "requestConsumerKeyFrame reaches A")
        .await;
    assert_about(request, producer_ssrc);
    within(
        "B receives the requested keyframe",
        5,
        keyframe_after(&mut keyframes, Some(before)),
    )
    .await;

    encoder.finish().await;
    reader.abort();
}

/// What the relay saw and did, shared with the test.
#[derive(Default)]
struct RelayState {
    /// Media SSRC whose packets are dropped (0 until set).
    media_ssrc: AtomicU32,
    /// RTX SSRC of the same consumer, if any (0 if none).
    rtx_ssrc: AtomicU32,
    /// Sequence numbers of the media SSRC seen so far, and the ones dropped.
    seen: Mutex<(HashSet<u16>, Vec<u16>)>,
    /// Packets of the media SSRC forwarded a second time (plain retransmissions).
    repeats: AtomicU64,
    /// Packets on the RTX SSRC forwarded.
    rtx_packets: AtomicU64,
}

/// A lossy UDP relay on loopback: one socket faces the client, one the server's worker
/// port. Everything is forwarded both ways, except that one in `DROP_EVERY` new RTP packets
/// of the chosen media SSRC from the server (the 10th, 30th, 50th, ...) is dropped, once:
/// its retransmission, as RTX or with the same sequence number, passes.
struct Relay {
    /// Where the client sends (its only server candidate).
    client_side: SocketAddr,
    state: Arc<RelayState>,
    task: JoinHandle<()>,
}

const DROP_EVERY: usize = 20;

impl Relay {
    async fn start(server: SocketAddr) -> Self {
        let to_client = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind relay client side");
        let to_server = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind relay server side");
        to_server
            .connect(server)
            .await
            .expect("relay targets the server");
        let client_side = to_client.local_addr().expect("relay address");
        let state = Arc::new(RelayState::default());
        let task = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut client: Option<SocketAddr> = None;
                let (mut up, mut down) = (vec![0u8; 2048], vec![0u8; 2048]);
                loop {
                    tokio::select! {
                        r = to_client.recv_from(&mut up) => {
                            let Ok((n, from)) = r else { return };
                            client = Some(from);
                            let _ = to_server.send(&up[..n]).await;
                        }
                        r = to_server.recv(&mut down) => {
                            let Ok(n) = r else { return };
                            let Some(client) = client else { continue };
                            if !state.pass(&down[..n]) {
                                continue;
                            }
                            let _ = to_client.send_to(&down[..n], client).await;
                        }
                    }
                }
            })
        };
        Self {
            client_side,
            state,
            task,
        }
    }

    /// Drops packets of `media_ssrc` from now on; counts RTX on `rtx_ssrc`.
    fn target(&self, media_ssrc: u32, rtx_ssrc: Option<u32>) {
        self.state
            .rtx_ssrc
            .store(rtx_ssrc.unwrap_or(0), Ordering::Relaxed);
        self.state.media_ssrc.store(media_ssrc, Ordering::Relaxed);
    }

    fn dropped(&self) -> Vec<u16> {
        self.state.seen.lock().expect("relay state").1.clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RelayState {
    /// Whether a datagram from the server goes on to the client.
    fn pass(&self, d: &[u8]) -> bool {
        // RTP (not RTCP, RFC 5761: second byte 192..=223) in the clear SRTP header.
        let is_rtp = d.len() >= 12 && (128..192).contains(&d[0]) && !(192..224).contains(&d[1]);
        if !is_rtp {
            return true;
        }
        let seq = u16::from_be_bytes([d[2], d[3]]);
        let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
        let media = self.media_ssrc.load(Ordering::Relaxed);
        if ssrc != 0 && ssrc == self.rtx_ssrc.load(Ordering::Relaxed) {
            self.rtx_packets.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        if media == 0 || ssrc != media {
            return true;
        }
        let mut seen = self.seen.lock().expect("relay state");
        let (seen, dropped) = &mut *seen;
        if !seen.insert(seq) {
            self.repeats.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        if seen.len() % DROP_EVERY == DROP_EVERY / 2 {
            dropped.push(seq);
            return false;
        }
        true
    }
}

/// The worker's UDP address, from the candidates of a probe transport (with one worker
/// every transport shares the worker's socket).
async fn worker_address(peer: &Peer) -> SocketAddr {
    let answer = peer
        .signaling()
        .request("createTransport", json!({ "direction": "recv" }))
        .await
        .expect("probe transport");
    let candidate = answer["iceCandidates"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["protocol"] == "udp"))
        .expect("a UDP candidate");
    let ip = candidate["address"]
        .as_str()
        .or(candidate["ip"].as_str())
        .expect("candidate address");
    let port = candidate["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .expect("candidate port");
    let id = answer["id"].clone();
    peer.signaling()
        .request("closeTransport", json!({ "transportId": id }))
        .await
        .expect("close probe");
    SocketAddr::new(ip.parse().expect("candidate IP"), port)
}

const FRAMES: u32 = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_lost_on_the_wire_are_retransmitted_on_nack() {
    let server = TestServer::start(1).await;
    let url = server.ws_url();
    let a = Peer::join(&url, "nack", "alice")
        .await
        .expect("alice joins");
    let send = a.create_send_transport().await.expect("send transport");
    let video = common::produce(&send, MediaKind::Video, "video/VP8").await;

    let b = Peer::join(&url, "nack", "bob").await.expect("bob joins");
    let relay = Relay::start(worker_address(&b).await).await;
    let options = TransportOptions {
        auto_nack: true,
        candidate_override: Some(relay.client_side),
        ..Default::default()
    };
    let recv = RecvTransport::create(b.signaling(), b.device(), options)
        .await
        .expect("recv transport via relay");
    let video_in = recv.consume(video.id()).await.expect("consume vp8");
    let rtx_ssrc = video_in
        .rtp_parameters()
        .encodings
        .first()
        .and_then(|e| e.rtx)
        .map(|r| r.ssrc);
    relay.target(video_in.ssrc(), rtx_ssrc);
    within("send transport connects", 10, send.wait_connected())
        .await
        .expect("send transport connected");
    within(
        "recv transport connects through the relay",
        10,
        recv.wait_connected(),
    )
    .await
    .expect("recv transport connected");
    video_in.resume().await.expect("resume vp8");

    let encoder = Encoder::start(video, Some(FRAMES));
    let reader = tokio::spawn(async move {
        let mut got: HashMap<u16, u32> = HashMap::new();
        let mut counters = BTreeSet::new();
        while let Ok(Some(p)) =
            tokio::time::timeout(Duration::from_secs(3), video_in.read_rtp()).await
        {
            let counter = vp8_counter(&p.payload).expect("vp8 payload intact");
            got.insert(p.header.sequence_number, counter);
            counters.insert(counter);
            if counters.len() == FRAMES as usize {
                break;
            }
        }
        (got, counters)
    });
    let (got, counters) = within("B reads the stream", 60, reader)
        .await
        .expect("reader task");
    encoder.finish().await;

    let dropped = relay.dropped();
    assert!(!dropped.is_empty(), "the relay dropped packets");
    // The consumer's sequence numbers advance with the frames: a packet whose number does
    // not match its frame was restored wrongly (e.g. a bad RTX original sequence number).
    let base = got
        .iter()
        .map(|(seq, counter)| seq.wrapping_sub(*counter as u16))
        .fold(HashMap::<u16, usize>::new(), |mut m, b| {
            *m.entry(b).or_default() += 1;
            m
        });
    let (&base, _) = base
        .iter()
        .max_by_key(|(_, n)| **n)
        .expect("B received packets");
    let mut misnumbered: Vec<(u16, u32)> = got
        .iter()
        .filter(|(seq, counter)| seq.wrapping_sub(**counter as u16) != base)
        .map(|(s, c)| (*s, *c))
        .collect();
    misnumbered.sort_unstable();
    assert!(
        misnumbered.is_empty(),
        "packets (sequence number, frame) off the consumer's numbering (frame n has {base} + n): \
         {misnumbered:?}; dropped {dropped:?}"
    );
    let lost: Vec<u16> = dropped
        .iter()
        .copied()
        .filter(|s| !got.contains_key(s))
        .collect();
    let stats = server.get_text("/api/stats").await.unwrap_or_default();
    assert!(
        lost.is_empty(),
        "dropped {} packets, {} never recovered ({lost:?}); rtx seen {}, plain repeats {}; stats {stats}",
        dropped.len(),
        lost.len(),
        relay.state.rtx_packets.load(Ordering::Relaxed),
        relay.state.repeats.load(Ordering::Relaxed),
    );
    // Every frame from the first received one on arrived (the consumer may start late).
    let first = *counters.first().expect("B received frames");
    let missing: Vec<u32> = (first..FRAMES).filter(|c| !counters.contains(c)).collect();
    assert!(missing.is_empty(), "frames missing at B: {missing:?}");
    assert!(
        counters.len() as f64 >= 0.99 * f64::from(FRAMES),
        "received {} of {FRAMES} frames",
        counters.len()
    );
    // The retransmissions came as RTX or as repeats of the media SSRC, and the server says so.
    let rtx = relay.state.rtx_packets.load(Ordering::Relaxed);
    let repeats = relay.state.repeats.load(Ordering::Relaxed);
    assert!(
        rtx + repeats >= dropped.len() as u64,
        "retransmissions on the wire: rtx {rtx}, repeats {repeats}"
    );
    counter_above(&server, "nacks_received", 0).await;
    counter_above(&server, "retransmissions", 0).await;
    eprintln!(
        "relay dropped {}, forwarded {rtx} RTX packets and {repeats} plain repeats; \
         server: {} NACKed sequence numbers, {} retransmissions",
        dropped.len(),
        server.counter("nacks_received").await,
        server.counter("retransmissions").await
    );
}

/// The next REMB a raw link receives, within `secs` seconds.
async fn next_remb(link: &mut MediaLink, what: &str, secs: u64) -> (u64, Vec<u32>) {
    within(what, secs, link.rembs.recv())
        .await
        .expect("the media link's driver task runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_incoming_bitrate_reaches_the_publisher_as_remb() {
    const SSRC: u32 = 0x5eed;
    let server = TestServer::start(1).await;
    let mut ws = Ws::connect(&server.ws_url()).await;
    let caps = ws.join("remb", "a").await;
    let vp8_pt = caps["codecs"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["mimeType"] == "video/VP8"))
        .and_then(|c| c["preferredPayloadType"].as_u64())
        .expect("VP8 in the router's capabilities");
    let info = TransportInfo::parse(&ws.transport("send").await);
    let certificate = Arc::new(DtlsCertificate::generate().expect("a certificate"));
    let fingerprint = sha256(&certificate);
    let dtls = json!({"role": "client", "fingerprints": [{"algorithm": fingerprint.algorithm, "value": fingerprint.value}]});
    ws.ok(
        "connectTransport",
        json!({"transportId": info.id, "dtlsParameters": dtls}),
    )
    .await;
    let mut link = MediaLink::start(&info, certificate.clone()).await;
    link.wait_dtls_connected().await;
    let id = info.id.clone();
    within(
        "the server reports the transport connected",
        10,
        ws.notification("transportStateChanged", |d| {
            d["transportId"] == id.as_str() && d["dtlsState"] == "connected"
        }),
    )
    .await;
    let codec = json!({"mimeType": "video/VP8", "payloadType": vp8_pt, "clockRate": 90000, "parameters": {},
        "rtcpFeedback": [{"type": "nack"}, {"type": "nack", "parameter": "pli"}]});
    let rtp_parameters = json!({"codecs": [codec], "headerExtensions": [], "encodings": [{"ssrc": SSRC}],
        "rtcp": {"cname": "a-cname", "reducedSize": true}});
    ws.ok(
        "produce",
        json!({"transportId": info.id, "kind": "video", "rtpParameters": rtp_parameters}),
    )
    .await;
    let limit = |bitrate: u32| json!({"transportId": info.id, "bitrate": bitrate});
    ws.ok("setMaxIncomingBitrate", limit(700_000)).await;
    let what = "a REMB after setMaxIncomingBitrate";
    assert_eq!(next_remb(&mut link, what, 5).await, (700_000, vec![SSRC]));
    // Repeated on the report rounds (every second).
    let what = "the REMB repeated on a report round";
    assert_eq!(next_remb(&mut link, what, 3).await, (700_000, vec![SSRC]));
    // 0 lifts the limit with a REMB of bitrate 0 (maybe after one more of the limit sent
    // before the request arrived).
    ws.ok("setMaxIncomingBitrate", limit(0)).await;
    let what = "a REMB of bitrate 0 after setMaxIncomingBitrate(0)";
    let mut remb = next_remb(&mut link, what, 5).await;
    if remb.0 == 700_000 {
        remb = next_remb(&mut link, what, 5).await;
    }
    assert_eq!(remb, (0, vec![SSRC]));
    assert!(link.is_running(), "every SRTCP packet unprotected");
}
