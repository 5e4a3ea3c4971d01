//! ICE liveness with a hand-made client (rtc-stun + the project's DTLS/SRTP over plain UDP):
//! consent expiry → `disconnected` → `iceRestartRequired` (rate-limited); `restartIce` swaps
//! the credentials (old ones refused afterwards) and keeps media and its SSRC; media from a
//! new local address that passed a consent check moves the selected tuple (NAT rebinding).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use common::raw_client::*;
use common::*;
use ferrosoup_client::{MediaKind, Peer, Producer, SendTransport};
use ferrosoup_rtc::dtls::DtlsCertificate;

/// Short ICE timeouts, no resume grace. Consent lapses after 1 s without a check (five
/// times the raw client's check interval, so a slow machine does not lapse it by accident);
/// `iceRestartRequired` comes 0.5 s after `disconnected`, then at most every 0.5 s.
const FAST_ICE: [(&str, &str); 3] = [
    ("ICE_CONSENT_TIMEOUT", "1"),
    ("ICE_DISCONNECT_TIMEOUT", "0.5"),
    ("SESSION_GRACE", "0"),
];

/// For tests with an SDK publisher: webrtc-rs sends its consent checks every 2 s, so its
/// transport needs a consent timeout above that; the raw client checks every 200 ms anyway.
const MEDIA_ICE: [(&str, &str); 3] = [
    ("ICE_CONSENT_TIMEOUT", "5"),
    ("ICE_DISCONNECT_TIMEOUT", "1"),
    ("SESSION_GRACE", "0"),
];

/// A raw peer with one transport connected (ICE + DTLS + SRTP).
struct RawPeer {
    ws: Ws,
    info: TransportInfo,
    link: MediaLink,
}

impl RawPeer {
    /// Joins `room` as `peer` and creates a `direction` transport (not connected yet, so
    /// the caller may `consume` first).
    async fn join(url: &str, room: &str, peer: &str, direction: &str) -> (Ws, TransportInfo) {
        let mut ws = Ws::connect(url).await;
        ws.join(room, peer).await;
        let info = TransportInfo::parse(&ws.transport(direction).await);
        (ws, info)
    }

    /// `connectTransport` as DTLS client, then ICE and DTLS until both sides are connected.
    async fn connect(mut ws: Ws, info: TransportInfo) -> Self {
        let certificate = Arc::new(DtlsCertificate::generate().expect("a certificate"));
        let fingerprint = sha256(&certificate);
        let data = json!({"transportId": info.id, "dtlsParameters": {"role": "client", "fingerprints": [{"algorithm": fingerprint.algorithm, "value": fingerprint.value}]}});
        ws.ok("connectTransport", data).await;
        let mut link = MediaLink::start(&info, certificate).await;
        link.wait_dtls_connected().await;
        let id = info.id.clone();
        let connected = within(
            "the server reports the raw transport connected",
            10,
            ws.notification("transportStateChanged", |d| {
                d["transportId"] == id.as_str() && d["dtlsState"] == "connected"
            }),
        )
        .await;
        assert_eq!(connected["iceState"], "completed", "{connected}");
        Self { ws, info, link }
    }

    /// `restartIce`: returns the new (ufrag, pwd), checked to differ from `old`.
    async fn restart_ice(&mut self, old: &(String, String)) -> (String, String) {
        let answer = self
            .ws
            .ok("restartIce", json!({"transportId": self.info.id}))
            .await;
        let ice = &answer["iceParameters"];
        let text = |v: &Value| {
            v.as_str()
                .unwrap_or_else(|| panic!("restartIce answered {answer}"))
                .to_owned()
        };
        let new = (text(&ice["usernameFragment"]), text(&ice["password"]));
        assert_ne!(new.0, old.0, "restartIce kept the ufrag: {answer}");
        assert_ne!(new.1, old.1, "restartIce kept the password: {answer}");
        new
    }
}

/// Applies new credentials on the client as a browser does: a nominating check that must
/// succeed, consent checks with them from now on; then the old ones must be refused.
async fn apply_restart(link: &MediaLink, old: &(String, String), new: &(String, String)) {
    link.set_credentials(&new.0, &new.1);
    assert_eq!(
        link.check(None, true).await,
        Some(StunAnswer::Success),
        "a check with the credentials restartIce gave"
    );
    let stale = link.check(Some((&old.0, &old.1)), false).await;
    assert!(
        matches!(stale, Some(StunAnswer::Error(401)) | None),
        "a check with the pre-restart credentials after the restart was applied: {stale:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_consent_asks_for_an_ice_restart_and_restart_ice_recovers() {
    let server = TestServer::start_with(1, &FAST_ICE).await;
    let (ws, info) = RawPeer::join(&server.ws_url(), "consent", "carol", "send").await;
    let mut peer = RawPeer::connect(ws, info).await;
    let id = peer.info.id.clone();

    // Consent checks stop: disconnected, then one iceRestartRequired per cooldown.
    peer.link.set_consent(false);
    let disconnected = within(
        "transportStateChanged to disconnected after the consent timeout",
        10,
        peer.ws.notification("transportStateChanged", |d| {
            d["transportId"] == id.as_str() && d["iceState"] == "disconnected"
        }),
    )
    .await;
    assert_eq!(disconnected["transportId"], id.as_str());
    let restart = within(
        "iceRestartRequired after ICE_DISCONNECT_TIMEOUT",
        10,
        peer.ws
            .notification("iceRestartRequired", |d| d["transportId"] == id.as_str()),
    )
    .await;
    assert_eq!(restart, json!({"transportId": id}));
    let repeated = peer
        .ws
        .notification_within(Duration::from_millis(400), "iceRestartRequired", |_| true)
        .await;
    assert_eq!(
        repeated, None,
        "a second iceRestartRequired within the 0.5 s cooldown"
    );

    // restartIce: new credentials; checks with them bring ICE back; old ones are refused.
    let old = (peer.info.ufrag.clone(), peer.info.pwd.clone());
    let new = peer.restart_ice(&old).await;
    apply_restart(&peer.link, &old, &new).await;
    peer.link.set_consent(true);
    let back = within(
        "transportStateChanged back to connected/completed after the restart",
        10,
        peer.ws.notification("transportStateChanged", |d| {
            d["transportId"] == id.as_str()
                && (d["iceState"] == "connected" || d["iceState"] == "completed")
        }),
    )
    .await;
    assert_eq!(back["dtlsState"], "connected", "{back}");
    // Consent with the new credentials holds the transport up (timeout 1 s, checked every
    // 200 ms): no lapse over one and a half timeouts.
    let lapsed = peer
        .ws
        .notification_within(Duration::from_millis(1500), "transportStateChanged", |d| {
            d["transportId"] == id.as_str() && d["iceState"] == "disconnected"
        })
        .await;
    assert_eq!(
        lapsed, None,
        "consent checks with the new credentials did not keep ICE up"
    );
    let stats = peer
        .ws
        .ok("getTransportStats", json!({"transportId": id}))
        .await;
    assert!(
        ["connected", "completed"].contains(&stats["stats"][0]["iceState"].as_str().unwrap_or("")),
        "transport stats after the restart: {stats}"
    );
}

/// A VP8 producer sending a frame every [`FRAME_INTERVAL`] (keyframes on request and every
/// 50 frames) until dropped.
struct VideoSender {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl VideoSender {
    fn start(video: Producer) -> Self {
        let video = Arc::new(video);
        let stop = Arc::new(AtomicBool::new(false));
        let counter = Arc::new(AtomicU32::new(0));
        let (keyframe_wanted, watcher) = watch_keyframe_requests(video.clone());
        let sender = {
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    let keyframe =
                        keyframe_wanted.swap(false, Ordering::Relaxed) || i.is_multiple_of(50);
                    video
                        .send(i as u16, i.wrapping_mul(3000), true, vp8_frame(i, keyframe))
                        .await
                        .expect("send vp8");
                    tokio::time::sleep(FRAME_INTERVAL).await;
                }
            })
        };
        Self {
            stop,
            tasks: vec![watcher, sender],
        }
    }
}

impl Drop for VideoSender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// An SDK peer publishing VP8, and a raw peer consuming it (resumed, connected). Returns
/// them with the consumer's SSRC from the `consume` answer.
async fn publisher_and_raw_consumer(
    server: &TestServer,
    room: &str,
) -> (Peer, SendTransport, VideoSender, RawPeer, u32) {
    let url = server.ws_url();
    let a = Peer::join(&url, room, "alice").await.expect("alice joins");
    let send = a.create_send_transport().await.expect("send transport");
    let video = common::produce(&send, MediaKind::Video, "video/VP8").await;
    within("send transport connects", 10, send.wait_connected())
        .await
        .expect("send transport connected");
    let producer_id = video.id().to_owned();
    let sender = VideoSender::start(video);

    let (mut ws, info) = RawPeer::join(&url, room, "carol", "recv").await;
    let consumed = ws
        .ok(
            "consume",
            json!({"transportId": info.id, "producerId": producer_id}),
        )
        .await;
    let ssrc = consumed["rtpParameters"]["encodings"][0]["ssrc"]
        .as_u64()
        .and_then(|s| u32::try_from(s).ok())
        .unwrap_or_else(|| panic!("consume answered no SSRC: {consumed}"));
    let consumer_id = consumed["id"].as_str().expect("consumer id").to_owned();
    let mut peer = RawPeer::connect(ws, info).await;
    peer.ws
        .ok("resumeConsumer", json!({"consumerId": consumer_id}))
        .await;
    (a, send, sender, peer, ssrc)
}

/// Receives `n` frames: each intact, with the consumer's `ssrc` and a sequence number above
/// the previous one (`last`). Returns the socket indices they arrived on.
async fn frames(link: &mut MediaLink, n: usize, ssrc: u32, last: &mut Option<u16>) -> Vec<usize> {
    let mut sockets = Vec::with_capacity(n);
    while sockets.len() < n {
        let p = link.rtp.recv().await.expect("the raw client's driver runs");
        check_frame(&p, ssrc, last);
        sockets.push(p.socket);
    }
    sockets
}

/// [`frames`] after the media moved to socket `to`, where `last` is the first packet seen
/// there: packets the server sent to an older socket before the move (numbered before it)
/// may still trail out of that socket's reader, and are skipped rather than waited out.
async fn frames_after_move(
    link: &mut MediaLink,
    n: usize,
    ssrc: u32,
    last: &mut Option<u16>,
    to: usize,
) -> Vec<usize> {
    let moved_at = last.expect("a packet arrived on the new socket");
    let mut sockets = Vec::with_capacity(n);
    while sockets.len() < n {
        let p = link.rtp.recv().await.expect("the raw client's driver runs");
        let before_the_move = (1..0x8000).contains(&moved_at.wrapping_sub(p.seq));
        if p.socket != to && before_the_move {
            continue;
        }
        check_frame(&p, ssrc, last);
        sockets.push(p.socket);
    }
    sockets
}

/// One received frame is intact, has the consumer's `ssrc` and a sequence number above the
/// previous one (`last`, updated).
fn check_frame(p: &RtpIn, ssrc: u32, last: &mut Option<u16>) {
    assert_eq!(p.ssrc, ssrc, "RTP with another SSRC than consume announced");
    assert!(
        vp8_counter(&p.payload).is_some(),
        "vp8 payload not intact: {:?}",
        p.payload
    );
    if let Some(prev) = *last {
        let step = p.seq.wrapping_sub(prev);
        assert!(
            (1..1000).contains(&step),
            "sequence number {} after {prev}: not increasing",
            p.seq
        );
    }
    *last = Some(p.seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_ice_repeatedly_keeps_media_and_its_ssrc() {
    let server = TestServer::start_with(1, &MEDIA_ICE).await;
    let (_a, _send, _sender, mut peer, ssrc) =
        publisher_and_raw_consumer(&server, "restart-media").await;
    let mut last = None;
    within(
        "the raw consumer receives frames",
        10,
        frames(&mut peer.link, 30, ssrc, &mut last),
    )
    .await;

    let mut credentials = (peer.info.ufrag.clone(), peer.info.pwd.clone());
    for round in 1..=3 {
        let new = peer.restart_ice(&credentials).await;
        apply_restart(&peer.link, &credentials, &new).await;
        credentials = new;
        within(
            &format!("frames keep arriving after ICE restart {round}"),
            10,
            frames(&mut peer.link, 30, ssrc, &mut last),
        )
        .await;
    }
    let stats = peer
        .ws
        .ok("getTransportStats", json!({"transportId": peer.info.id}))
        .await;
    assert_eq!(stats["stats"][0]["dtlsState"], "connected", "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_follows_the_client_to_a_new_address_after_a_consent_check() {
    let server = TestServer::start_with(1, &MEDIA_ICE).await;
    let (_a, _send, _sender, mut peer, ssrc) =
        publisher_and_raw_consumer(&server, "rebinding").await;
    let mut last = None;
    let before = within(
        "the raw consumer receives frames",
        10,
        frames(&mut peer.link, 20, ssrc, &mut last),
    )
    .await;
    assert!(before.iter().all(|s| *s == 0), "media on the first socket");

    // A NAT rebinding: same client, new local port. A consent check (no USE-CANDIDATE)
    // validates the new tuple, then RTCP from it.
    let new_addr = peer.link.rebind().await;
    assert_eq!(
        peer.link.check(None, false).await,
        Some(StunAnswer::Success),
        "consent check from the new address"
    );
    peer.link.send_receiver_report(0x5eed_0001, ssrc, 0);
    within("media arrives on the new socket", 10, async {
        while frames(&mut peer.link, 1, ssrc, &mut last).await != [1] {}
    })
    .await;

    // Packets already forwarded from the old socket's reader may trail; then only new.
    let after = within(
        "frames after the move",
        10,
        frames_after_move(&mut peer.link, 60, ssrc, &mut last, 1),
    )
    .await;
    assert!(
        after.iter().all(|s| *s == 1),
        "media still reaches the old socket after the move: {after:?}"
    );
    let stats = peer
        .ws
        .ok("getTransportStats", json!({"transportId": peer.info.id}))
        .await;
    assert_eq!(
        stats["stats"][0]["iceSelectedTuple"]["remotePort"],
        new_addr.port(),
        "selected tuple after the move: {stats}"
    );
}
