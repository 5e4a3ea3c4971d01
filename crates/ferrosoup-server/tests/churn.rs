//! Churn: peers join, publish, consume, drop, resume and leave at random in several rooms of
//! a two-worker server, driven by a seeded PRNG (`CHURN_SEED` replays a run; the seed is
//! printed). Peers are hand-made clients (raw WebSocket + ICE/DTLS/SRTP over UDP) sending
//! synthetic VP8 whose payload names the room, the publisher and the producer. Throughout:
//! every packet a peer decrypts is from its own room and from the producer its consumer
//! consumes; no request gets a 5xx; notifications only name objects of the peer's room and
//! `consumerClosed` only consumers the peer has. At the end every object count is zero and
//! no SRTP packet failed to unprotect.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::raw_client::*;
use common::*;
use ferrosoup_rtc::dtls::DtlsCertificate;

/// Rooms the peers are spread over.
const ROOMS: usize = 3;
/// Most peers alive at once (connected, dropped or waiting for their grace to expire).
const MAX_PEERS: usize = 12;
/// Most producers per peer.
const MAX_PRODUCERS: usize = 2;
/// The server's resume grace period, in seconds (the shortest it takes).
const GRACE_SECS: u64 = 1;
/// A peer whose grace is over must have left its room's listing within this long.
const EXPIRY_WITHIN: Duration = Duration::from_secs(5);
/// Random actions of a run (`CHURN_ACTIONS` overrides).
const ACTIONS: usize = 80;
/// The random actions stop after this long even if fewer ran (a slow machine).
const ACTION_BUDGET: Duration = Duration::from_secs(75);
/// A consumer open this long on an open producer must have received media.
const MEDIA_WITHIN: Duration = Duration::from_secs(1);
/// Media clock tick: every producer sends one frame per tick.
const TICK: Duration = Duration::from_millis(10);
/// A producer sends a keyframe at least this often (in frames), besides on PLI/FIR.
const KEYFRAME_EVERY: u32 = 50;
/// Marks a churn payload after the VP8 descriptor and header.
const MAGIC: &[u8; 4] = b"CHRN";
/// End of the tag in a churn frame: descriptor + VP8 header (4), magic (4), room (1),
/// publisher (2), producer SSRC (4), counter (4).
const TAG_END: usize = 19;
/// Filler after the tag.
const PADDING: usize = 120;

/// splitmix64: small, deterministic, good enough to pick actions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// One element of a non-empty slice.
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A synthetic VP8 frame: descriptor (S=1, partition 0), a 3-byte VP8 header whose low bit
/// is 0 for keyframes, then the churn tag: magic, room, publisher, producer SSRC, counter.
fn churn_frame(room: usize, publisher: u16, ssrc: u32, counter: u32, keyframe: bool) -> Vec<u8> {
    let mut p = vec![0x10, if keyframe { 0x00 } else { 0x01 }, 0x00, 0x00];
    p.extend_from_slice(MAGIC);
    p.push(room as u8);
    p.extend_from_slice(&publisher.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&counter.to_be_bytes());
    p.extend_from_slice(&[0xcd; PADDING]);
    p
}

/// The tag of a frame built by [`churn_frame`]: (room, publisher, producer SSRC, counter).
fn churn_tag(payload: &[u8]) -> Option<(usize, u16, u32, u32)> {
    if payload.len() != TAG_END + PADDING || payload[0] != 0x10 || &payload[4..8] != MAGIC {
        return None;
    }
    if payload[TAG_END..].iter().any(|b| *b != 0xcd) {
        return None;
    }
    let be32 = |at: usize| {
        u32::from_be_bytes([
            payload[at],
            payload[at + 1],
            payload[at + 2],
            payload[at + 3],
        ])
    };
    Some((
        usize::from(payload[8]),
        u16::from_be_bytes([payload[9], payload[10]]),
        be32(11),
        be32(15),
    ))
}

/// One of our producers: its stream state.
struct Stream {
    id: String,
    ssrc: u32,
    seq: u16,
    counter: u32,
    since_keyframe: u32,
    keyframe_wanted: bool,
}

/// One of our consumers.
#[derive(Clone)]
struct Consumer {
    producer_id: String,
    /// The consumer's SSRC (chosen by the server).
    ssrc: u32,
    /// Media packets received.
    packets: u64,
    /// When it was resumed.
    since: Instant,
}

/// A connected transport of a peer.
struct Link {
    info: TransportInfo,
    media: MediaLink,
}

/// Whether a peer is connected or dropped, waiting to resume.
enum Presence {
    Connected(Box<Ws>),
    /// The WebSocket dropped at this time; it resumes at `resume_at`. The request id to
    /// continue with is kept.
    Dropped {
        at: Instant,
        resume_at: Instant,
        next_id: u64,
    },
}

/// A simulated peer.
struct ChurnPeer {
    num: u16,
    id: String,
    room: usize,
    presence: Presence,
    token: String,
    send: Link,
    recv: Link,
    streams: Vec<Stream>,
    /// Open consumers by id.
    consumers: HashMap<String, Consumer>,
    /// Every consumer this peer ever had (for late notifications and packets):
    /// id → consumer SSRC.
    all_consumers: HashMap<String, u32>,
    /// Consumer SSRC → (publisher, producer SSRC) of every consumer it ever had.
    ssrcs: HashMap<u32, (u16, u32)>,
    /// Last counter seen per consumer SSRC, across closes (a late packet of a closed
    /// consumer must still be newer).
    last_by_ssrc: HashMap<u32, u32>,
    /// The last request and its answer, re-sent after a resume to check the cached answer.
    last_request: Option<(u64, String, Value, Value)>,
}

impl ChurnPeer {
    fn ws(&mut self) -> &mut Ws {
        match &mut self.presence {
            Presence::Connected(ws) => ws,
            Presence::Dropped { .. } => panic!("peer {} used while dropped", self.id),
        }
    }

    fn connected(&self) -> bool {
        matches!(self.presence, Presence::Connected(_))
    }
}

/// What the run knows of a producer.
#[derive(Clone)]
struct ProducerInfo {
    room: usize,
    publisher: u16,
    ssrc: u32,
}

/// A peer dropped for good: its objects close when the grace expires.
struct Expiring {
    id: String,
    room: usize,
    deadline: Instant,
}

/// Counters reported at the end.
#[derive(Default, Debug)]
struct Tally {
    joins: u32,
    publishes: u32,
    consumes: u32,
    consumer_closes: u32,
    producer_closes: u32,
    resumes: u32,
    late_resumes: u32,
    expiries: u32,
    leaves: u32,
    consumer_closed_notified: u32,
    /// Consumers found closed on the server after a resume with no `consumerClosed`
    /// received (a notification lost around the drop).
    lost_consumer_closed: u32,
    /// Consumers checked to have received media (open long enough on an open producer).
    consumers_checked: u32,
    packets: u64,
}

struct Churn {
    server: TestServer,
    /// The media clock: a frame per producer per tick.
    clock: tokio::time::Interval,
    seed: u64,
    rng: Rng,
    started: Instant,
    action: usize,
    doing: String,
    peers: Vec<ChurnPeer>,
    expiring: Vec<Expiring>,
    /// Producers alive (and not doomed by an expiring owner), by id.
    producers: HashMap<String, ProducerInfo>,
    /// Every producer ever created, by id.
    all_producers: HashMap<String, ProducerInfo>,
    /// Every peer ever created: id → room.
    peer_rooms: HashMap<String, usize>,
    next_num: u16,
    next_ssrc: u32,
    vp8_pt: u8,
    tally: Tally,
}

/// Prints the seed when the test fails.
struct SeedOnPanic(u64);

impl Drop for SeedOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("churn failed: replay with CHURN_SEED={}", self.0);
        }
    }
}

fn room_id(room: usize) -> String {
    format!("churn-{room}")
}

impl Churn {
    /// Context for failure messages.
    fn ctx(&self) -> String {
        format!(
            "seed {} action #{} ({}) at {:.1}s",
            self.seed,
            self.action,
            self.doing,
            self.started.elapsed().as_secs_f64()
        )
    }

    fn peer_index(&self, num: u16) -> usize {
        self.peers
            .iter()
            .position(|p| p.num == num)
            .unwrap_or_else(|| panic!("{}: no peer {num}", self.ctx()))
    }

    // ----- requests and notifications ------------------------------------------------------

    /// Sends a request on peer `i`'s connection; checks it is not a 5xx; processes the
    /// notifications read before the answer; returns the data or (code, reason).
    async fn call(&mut self, i: usize, method: &str, data: Value) -> Result<Value, (u64, String)> {
        let ctx = self.ctx();
        let ws = self.peers[i].ws();
        let id = ws.next_id();
        let response = within(
            &format!("{ctx}: answer to {method}"),
            15,
            ws.request(method, data.clone()),
        )
        .await;
        self.process_notifications(i);
        self.peers[i].last_request = Some((id, method.to_owned(), data, response.clone()));
        if response["ok"] == true {
            return Ok(response["data"].clone());
        }
        let (code, reason) = error_of(&response);
        assert!(
            code < 500,
            "{}: {method} answered {code} {reason}",
            self.ctx()
        );
        Err((code, reason))
    }

    /// A request that must succeed.
    async fn ok(&mut self, i: usize, method: &str, data: Value) -> Value {
        match self.call(i, method, data).await {
            Ok(v) => v,
            Err((code, reason)) => panic!("{}: {method} failed {code} {reason}", self.ctx()),
        }
    }

    /// Reads whatever frames the connected peers have ready, without waiting.
    fn poll_connections(&mut self) {
        for i in 0..self.peers.len() {
            let ctx = self.ctx();
            let id = self.peers[i].id.clone();
            let Presence::Connected(ws) = &mut self.peers[i].presence else {
                continue;
            };
            if let Err(e) = ws.client.read_ready() {
                panic!("{ctx}: peer {id}'s connection: {e}");
            }
            self.process_notifications(i);
        }
    }

    /// Checks and applies the notifications peer `i` has read, in order.
    fn process_notifications(&mut self, i: usize) {
        let ctx = self.ctx();
        let room = self.peers[i].room;
        let pending: Vec<Value> = match &mut self.peers[i].presence {
            Presence::Connected(ws) => ws.notifications().drain(..).collect(),
            Presence::Dropped { .. } => return,
        };
        for n in pending {
            let d = &n["data"];
            let text = |key: &str| d[key].as_str().unwrap_or_default().to_owned();
            let peer = &self.peers[i];
            let what = format!("{ctx}: peer {} (room {room}) got {n}", peer.id);
            let in_room_peer = |id: &str| self.peer_rooms.get(id) == Some(&room);
            let in_room_producer =
                |id: &str| self.all_producers.get(id).is_some_and(|p| p.room == room);
            match n["method"].as_str().unwrap_or_default() {
                "peerJoined" | "peerLeft" => {
                    assert!(
                        in_room_peer(&text("peerId")),
                        "{what}: not a peer of its room"
                    );
                    assert_ne!(text("peerId"), peer.id, "{what}: about itself");
                }
                "newProducer" | "producerClosed" | "producerPaused" | "producerResumed" => {
                    let pid = text("producerId");
                    assert!(in_room_producer(&pid), "{what}: not a producer of its room");
                    let owner = self.all_producers[&pid].publisher;
                    assert_eq!(text("peerId"), format!("p{owner}"), "{what}: wrong owner");
                }
                "activeSpeaker" => {
                    assert!(
                        in_room_producer(&text("producerId")),
                        "{what}: not of its room"
                    );
                }
                "consumerClosed" => {
                    let cid = text("consumerId");
                    let peer = &mut self.peers[i];
                    let Some(c) = peer.consumers.remove(&cid) else {
                        panic!("{what}: not an open consumer of this peer");
                    };
                    assert_eq!(text("producerId"), c.producer_id, "{what}: wrong producer");
                    assert!(
                        !self.producers.contains_key(&c.producer_id),
                        "{what}: its producer is still open"
                    );
                    self.tally.consumer_closed_notified += 1;
                }
                "consumerScore"
                | "consumerLayersChanged"
                | "consumerPaused"
                | "consumerResumed" => {
                    assert!(
                        peer.all_consumers.contains_key(&text("consumerId")),
                        "{what}: not a consumer of this peer"
                    );
                }
                "producerScore" => {
                    let pid = text("producerId");
                    assert!(
                        self.all_producers
                            .get(&pid)
                            .is_some_and(|p| p.publisher == peer.num),
                        "{what}: not a producer of this peer"
                    );
                }
                "transportStateChanged" | "iceRestartRequired" => {
                    let tid = text("transportId");
                    assert!(
                        tid == peer.send.info.id || tid == peer.recv.info.id,
                        "{what}: not a transport of this peer"
                    );
                    let state = text("dtlsState");
                    assert!(
                        !["failed", "closed"].contains(&state.as_str()),
                        "{what}: transport failed"
                    );
                }
                _ => panic!("{what}: unexpected notification"),
            }
        }
    }

    // ----- media ---------------------------------------------------------------------------

    /// One media tick: every connected or resuming peer sends a frame per producer (keyframe
    /// when asked or due), and everything received is checked.
    fn pump_media(&mut self) {
        let ctx = self.ctx();
        let ts = (self.started.elapsed().as_micros() * 9 / 100) as u32;
        for peer in &mut self.peers {
            for link in [&peer.send, &peer.recv] {
                assert!(
                    link.media.is_running(),
                    "{ctx}: peer {}'s media link of transport {} stopped (see its panic above)",
                    peer.id,
                    link.info.id
                );
            }
            while let Ok(ssrc) = peer.send.media.keyframe_requests.try_recv() {
                if let Some(s) = peer.streams.iter_mut().find(|s| s.ssrc == ssrc) {
                    s.keyframe_wanted = true;
                }
            }
            for s in &mut peer.streams {
                let keyframe = s.keyframe_wanted || s.since_keyframe >= KEYFRAME_EVERY;
                let payload = churn_frame(peer.room, peer.num, s.ssrc, s.counter, keyframe);
                peer.send.media.send_rtp(rtp_packet(
                    self.vp8_pt,
                    s.seq,
                    ts,
                    s.ssrc,
                    true,
                    &payload,
                ));
                s.seq = s.seq.wrapping_add(1);
                s.counter += 1;
                s.since_keyframe = if keyframe { 0 } else { s.since_keyframe + 1 };
                s.keyframe_wanted = false;
            }
            while let Ok(packet) = peer.recv.media.rtp.try_recv() {
                if packet.payload.is_empty() {
                    // Padding only: the server's bandwidth probes on a consumer's RTX stream.
                    continue;
                }
                let what = format!(
                    "{ctx}: peer {} (room {}) received ssrc {} seq {}",
                    peer.id, peer.room, packet.ssrc, packet.seq
                );
                let Some((room, publisher, producer_ssrc, counter)) = churn_tag(&packet.payload)
                else {
                    panic!("{what}: not a churn frame: {:?}", packet.payload);
                };
                assert_eq!(
                    room, peer.room,
                    "{what}: media of another room (publisher p{publisher})"
                );
                let Some(&(want_publisher, want_ssrc)) = peer.ssrcs.get(&packet.ssrc) else {
                    panic!("{what}: SSRC of no consumer of this peer (from p{publisher})");
                };
                assert_eq!(
                    (publisher, producer_ssrc),
                    (want_publisher, want_ssrc),
                    "{what}: media of another producer than the consumer's"
                );
                if let Some(last) = peer.last_by_ssrc.insert(packet.ssrc, counter) {
                    assert!(counter > last, "{what}: counter {counter} after {last}");
                }
                if let Some(c) = peer.consumers.values_mut().find(|c| c.ssrc == packet.ssrc) {
                    c.packets += 1;
                }
                self.tally.packets += 1;
            }
        }
    }

    // ----- actions -------------------------------------------------------------------------

    /// Creates a transport of `direction` for peer `ws`, connects it (ICE + DTLS) and waits
    /// for both sides to be connected.
    async fn open_link(
        ctx: &str,
        ws: &mut Ws,
        direction: &str,
        certificate: &Arc<DtlsCertificate>,
    ) -> Link {
        let info = TransportInfo::parse(
            &within(
                &format!("{ctx}: createTransport {direction}"),
                15,
                ws.transport(direction),
            )
            .await,
        );
        let fingerprint = sha256(certificate);
        let data = json!({"transportId": info.id, "dtlsParameters": {"role": "client", "fingerprints": [{"algorithm": fingerprint.algorithm, "value": fingerprint.value}]}});
        within(
            &format!("{ctx}: connectTransport"),
            15,
            ws.ok("connectTransport", data),
        )
        .await;
        let mut media = MediaLink::start(&info, certificate.clone()).await;
        media.wait_dtls_connected().await;
        let id = info.id.clone();
        within(
            &format!("{ctx}: the server reports the {direction} transport connected"),
            15,
            ws.notification("transportStateChanged", |d| {
                d["transportId"] == id.as_str() && d["dtlsState"] == "connected"
            }),
        )
        .await;
        Link { info, media }
    }

    async fn join(&mut self) {
        let num = self.next_num;
        self.next_num += 1;
        let room = self.rng.below(ROOMS);
        let id = format!("p{num}");
        self.doing = format!("p{num} joins room {room}");
        let ctx = self.ctx();
        // Known before joinRoom so the others' peerJoined can be checked.
        self.peer_rooms.insert(id.clone(), room);
        let mut ws = Ws::connect(&self.server.ws_url()).await;
        let caps = within(
            &format!("{ctx}: createRoom"),
            15,
            ws.ok("createRoom", json!({"roomId": room_id(room)})),
        )
        .await["rtpCapabilities"]
            .clone();
        let pt = caps["codecs"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["mimeType"] == "video/VP8"))
            .and_then(|c| c["preferredPayloadType"].as_u64())
            .unwrap_or_else(|| panic!("{ctx}: no VP8 in the router capabilities {caps}"));
        self.vp8_pt = u8::try_from(pt).expect("payload types are 7-bit");
        let joined = within(
            &format!("{ctx}: joinRoom"),
            15,
            ws.ok(
                "joinRoom",
                json!({"roomId": room_id(room), "peerId": id, "rtpCapabilities": caps}),
            ),
        )
        .await;
        for other in joined["peers"].as_array().into_iter().flatten() {
            let other_id = other["peerId"].as_str().unwrap_or_default();
            assert_eq!(
                self.peer_rooms.get(other_id),
                Some(&room),
                "{ctx}: joinRoom lists {other_id}, not a peer of room {room}: {joined}"
            );
            for p in other["producers"].as_array().into_iter().flatten() {
                let pid = p["producerId"].as_str().unwrap_or_default();
                assert!(
                    self.all_producers.get(pid).is_some_and(|p| p.room == room),
                    "{ctx}: joinRoom lists producer {pid} not of room {room}"
                );
            }
        }
        let token = joined["sessionToken"]
            .as_str()
            .unwrap_or_else(|| panic!("{ctx}: no sessionToken in {joined}"))
            .to_owned();
        let certificate = Arc::new(DtlsCertificate::generate().expect("a DTLS certificate"));
        let send = Self::open_link(&ctx, &mut ws, "send", &certificate).await;
        let recv = Self::open_link(&ctx, &mut ws, "recv", &certificate).await;
        self.peers.push(ChurnPeer {
            num,
            id,
            room,
            presence: Presence::Connected(Box::new(ws)),
            token,
            send,
            recv,
            streams: Vec::new(),
            consumers: HashMap::new(),
            all_consumers: HashMap::new(),
            ssrcs: HashMap::new(),
            last_by_ssrc: HashMap::new(),
            last_request: None,
        });
        let i = self.peers.len() - 1;
        self.process_notifications(i);
        self.tally.joins += 1;
    }

    async fn publish(&mut self, i: usize) {
        self.next_ssrc += 1;
        let ssrc = self.next_ssrc;
        let peer = &self.peers[i];
        self.doing = format!("{} publishes ssrc {ssrc}", peer.id);
        let data = json!({
            "transportId": peer.send.info.id,
            "kind": "video",
            "rtpParameters": {
                "codecs": [{
                    "mimeType": "video/VP8", "payloadType": self.vp8_pt, "clockRate": 90000,
                    "parameters": {},
                    "rtcpFeedback": [{"type": "nack"}, {"type": "nack", "parameter": "pli"}, {"type": "ccm", "parameter": "fir"}]
                }],
                "headerExtensions": [],
                "encodings": [{"ssrc": ssrc}],
                "rtcp": {"cname": format!("{}-cname", peer.id), "reducedSize": true}
            }
        });
        let answer = self.ok(i, "produce", data).await;
        let pid = answer["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: produce answered {answer}", self.ctx()))
            .to_owned();
        let peer = &mut self.peers[i];
        let info = ProducerInfo {
            room: peer.room,
            publisher: peer.num,
            ssrc,
        };
        peer.streams.push(Stream {
            id: pid.clone(),
            ssrc,
            seq: (ssrc as u16).wrapping_mul(7919),
            counter: 0,
            since_keyframe: 0,
            keyframe_wanted: true,
        });
        self.producers.insert(pid.clone(), info.clone());
        self.all_producers.insert(pid, info);
        self.tally.publishes += 1;
    }

    async fn consume(&mut self, i: usize, producer_id: String) {
        let info = self.producers[&producer_id].clone();
        let peer = &self.peers[i];
        self.doing = format!(
            "{} consumes p{}'s ssrc {}",
            peer.id, info.publisher, info.ssrc
        );
        let data = json!({"transportId": peer.recv.info.id, "producerId": producer_id});
        let answer = self.ok(i, "consume", data).await;
        let ctx = self.ctx();
        let cid = answer["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{ctx}: consume answered {answer}"))
            .to_owned();
        assert_eq!(
            answer["producerId"],
            producer_id.as_str(),
            "{ctx}: {answer}"
        );
        assert_eq!(answer["kind"], "video", "{ctx}: {answer}");
        let ssrc = answer["rtpParameters"]["encodings"][0]["ssrc"]
            .as_u64()
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or_else(|| panic!("{ctx}: consumer without SSRC: {answer}"));
        let peer = &mut self.peers[i];
        assert!(
            !peer.ssrcs.contains_key(&ssrc),
            "{ctx}: consumer SSRC {ssrc} reused on one transport"
        );
        peer.ssrcs.insert(ssrc, (info.publisher, info.ssrc));
        peer.all_consumers.insert(cid.clone(), ssrc);
        peer.consumers.insert(
            cid.clone(),
            Consumer {
                producer_id,
                ssrc,
                packets: 0,
                since: Instant::now(),
            },
        );
        self.ok(i, "resumeConsumer", json!({"consumerId": cid}))
            .await;
        self.tally.consumes += 1;
    }

    async fn close_consumer(&mut self, i: usize, cid: String) {
        self.doing = format!("{} closes consumer {cid}", self.peers[i].id);
        self.ok(i, "closeConsumer", json!({"consumerId": cid}))
            .await;
        let ctx = self.ctx();
        let Some(consumer) = self.peers[i].consumers.remove(&cid) else {
            panic!("{ctx}: consumerClosed for a consumer it closed");
        };
        self.check_media(&ctx, &consumer);
        self.tally.consumer_closes += 1;
    }

    /// A consumer open for [`MEDIA_WITHIN`] on a producer still open received media.
    fn check_media(&mut self, ctx: &str, c: &Consumer) {
        if self.producers.contains_key(&c.producer_id) && c.since.elapsed() >= MEDIA_WITHIN {
            assert!(
                c.packets > 0,
                "{ctx}: consumer ssrc {} of producer {} got no media in {:?}",
                c.ssrc,
                c.producer_id,
                c.since.elapsed()
            );
            self.tally.consumers_checked += 1;
        }
    }

    async fn close_producer(&mut self, i: usize, at: usize) {
        let pid = self.peers[i].streams[at].id.clone();
        self.doing = format!("{} closes producer {pid}", self.peers[i].id);
        self.ok(i, "closeProducer", json!({"producerId": pid}))
            .await;
        self.peers[i].streams.remove(at);
        self.producers.remove(&pid);
        self.tally.producer_closes += 1;
    }

    /// Drops peer `i`'s WebSocket; it resumes in 100..400 ms (well within the grace).
    fn drop_for_resume(&mut self, i: usize) {
        self.doing = format!("{} drops its WebSocket (resumes)", self.peers[i].id);
        let now = Instant::now();
        let resume_at = now + Duration::from_millis(100 + self.rng.below(300) as u64);
        let peer = &mut self.peers[i];
        let next_id = peer.ws().next_id();
        peer.presence = Presence::Dropped {
            at: now,
            resume_at,
            next_id,
        };
    }

    /// Resumes a dropped peer: `?resume=`, the last request re-sent with its id must get the
    /// cached answer, queued notifications are checked; consumers the server closed while
    /// no notification could reach us are reconciled (and counted).
    async fn resume(&mut self, i: usize) {
        let Presence::Dropped { at, next_id, .. } = self.peers[i].presence else {
            return;
        };
        self.doing = format!("{} resumes", self.peers[i].id);
        let ctx = self.ctx();
        let url = format!("{}?resume={}", self.server.ws_url(), self.peers[i].token);
        let mut ws = Ws::connect(&url).await;
        ws.client.set_next_id(next_id);
        let away = at.elapsed();
        if let Some((id, method, data, answer)) = self.peers[i].last_request.clone() {
            let text =
                json!({"request": true, "id": id, "method": method, "data": data}).to_string();
            ws.send_text(text).await;
            let mut replay = None;
            within(&format!("{ctx}: cached answer after resume"), 15, async {
                loop {
                    match ws.read().await {
                        Frame::Json(v) if v["notification"] == true => {
                            ws.notifications().push_back(v)
                        }
                        Frame::Json(v) => {
                            replay = Some(v);
                            return;
                        }
                        Frame::Closed(code) => {
                            assert!(
                                away > Duration::from_secs(GRACE_SECS) && code == Some(4404),
                                "{ctx}: resume refused ({code:?}) after {away:?} away"
                            );
                            return;
                        }
                    }
                }
            })
            .await;
            let Some(replay) = replay else {
                // The run was too slow to resume within the grace: the peer expired.
                eprintln!("{ctx}: resumed too late ({away:?}), the peer expired");
                self.tally.late_resumes += 1;
                self.expire_now(i, at);
                return;
            };
            assert_eq!(replay, answer, "{ctx}: re-sent {method} got another answer");
        }
        self.peers[i].presence = Presence::Connected(Box::new(ws));
        self.process_notifications(i);
        self.ok(i, "ping", json!({})).await;
        // Reconcile: the server's view of this peer's consumers.
        let room = self
            .server
            .get(&format!("/api/rooms/{}", room_id(self.peers[i].room)))
            .await
            .unwrap_or_else(|| panic!("{ctx}: /api/rooms/<room> answers"));
        let id = self.peers[i].id.clone();
        let entry = room["peers"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["peerId"] == id.as_str()))
            .unwrap_or_else(|| panic!("{ctx}: resumed peer missing from {room}"));
        let on_server: HashSet<&str> = entry["consumers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_str())
            .collect();
        let peer = &mut self.peers[i];
        let stale: Vec<String> = peer
            .consumers
            .keys()
            .filter(|c| !on_server.contains(c.as_str()))
            .cloned()
            .collect();
        for c in stale {
            let consumer = peer.consumers.remove(&c).expect("listed just above");
            assert!(
                !self.producers.contains_key(&consumer.producer_id),
                "{ctx}: consumer {c} gone on the server while its producer is open"
            );
            eprintln!("{ctx}: consumerClosed for {c} lost around the drop");
            self.tally.lost_consumer_closed += 1;
        }
        for c in on_server {
            assert!(
                peer.consumers.contains_key(c),
                "{ctx}: the server has consumer {c} the client closed or never had"
            );
        }
        self.tally.resumes += 1;
    }

    /// Drops peer `i` for good (WebSocket and media): the grace expires.
    fn drop_for_good(&mut self, i: usize) {
        self.doing = format!("{} drops for good", self.peers[i].id);
        self.expire_now(i, Instant::now());
    }

    fn expire_now(&mut self, i: usize, dropped_at: Instant) {
        let peer = self.peers.remove(i);
        for s in &peer.streams {
            self.producers.remove(&s.id);
        }
        self.expiring.push(Expiring {
            id: peer.id,
            room: peer.room,
            deadline: dropped_at + Duration::from_secs(GRACE_SECS),
        });
        self.tally.expiries += 1;
    }

    async fn leave(&mut self, i: usize) {
        self.doing = format!("{} leaves", self.peers[i].id);
        self.pump_media();
        let ctx = self.ctx();
        let consumers: Vec<Consumer> = self.peers[i].consumers.values().cloned().collect();
        for c in &consumers {
            self.check_media(&ctx, c);
        }
        self.ok(i, "leaveRoom", json!({})).await;
        let peer = self.peers.remove(i);
        for s in &peer.streams {
            self.producers.remove(&s.id);
        }
        self.tally.leaves += 1;
    }

    /// Picks and runs one random action among those possible now.
    async fn random_action(&mut self) {
        let live = self.peers.len() + self.expiring.len();
        let connected: Vec<usize> = (0..self.peers.len())
            .filter(|&i| self.peers[i].connected())
            .collect();
        let mut choices: Vec<(u32, u8)> = Vec::new();
        if live < MAX_PEERS {
            choices.push((if live < 4 { 8 } else { 3 }, 0));
        }
        let can_publish: Vec<usize> = connected
            .iter()
            .copied()
            .filter(|&i| self.peers[i].streams.len() < MAX_PRODUCERS)
            .collect();
        if !can_publish.is_empty() {
            choices.push((4, 1));
        }
        let (peers, producers) = (&self.peers, &self.producers);
        let consumable: Vec<(usize, String)> = connected
            .iter()
            .flat_map(|&i| {
                let peer = &peers[i];
                producers
                    .iter()
                    .filter(move |(pid, p)| {
                        p.room == peer.room
                            && p.publisher != peer.num
                            && !peer.consumers.values().any(|c| &c.producer_id == *pid)
                    })
                    .map(move |(pid, _)| (i, pid.clone()))
            })
            .collect();
        if !consumable.is_empty() {
            // More likely with more to consume, so every run carries plenty of media.
            choices.push((4 + consumable.len().min(8) as u32, 2));
        }
        let closable: Vec<(usize, String)> = connected
            .iter()
            .flat_map(|&i| {
                peers[i]
                    .consumers
                    .iter()
                    .filter(move |(_, c)| producers.contains_key(&c.producer_id))
                    .map(move |(cid, _)| (i, cid.clone()))
            })
            .collect();
        if !closable.is_empty() {
            choices.push((2, 3));
        }
        let producing: Vec<usize> = connected
            .iter()
            .copied()
            .filter(|&i| !self.peers[i].streams.is_empty())
            .collect();
        if !producing.is_empty() {
            choices.push((1, 4));
        }
        if !connected.is_empty() {
            choices.push((2, 5)); // drop and resume
            choices.push((1, 6)); // drop for good
            choices.push((1, 7)); // leave
        }
        let total: u32 = choices.iter().map(|c| c.0).sum();
        let mut roll = self.rng.below(total as usize) as u32;
        let kind = choices
            .iter()
            .find(|(w, _)| {
                if roll < *w {
                    true
                } else {
                    roll -= w;
                    false
                }
            })
            .map(|c| c.1)
            .expect("the roll is below the total weight");
        match kind {
            0 => self.join().await,
            1 => {
                let i = *self.rng.pick(&can_publish);
                self.publish(i).await;
            }
            2 => {
                let (i, pid) = self.rng.pick(&consumable).clone();
                self.consume(i, pid).await;
            }
            3 => {
                let (i, cid) = self.rng.pick(&closable).clone();
                self.close_consumer(i, cid).await;
            }
            4 => {
                let i = *self.rng.pick(&producing);
                let at = self.rng.below(self.peers[i].streams.len());
                self.close_producer(i, at).await;
            }
            5 => {
                let i = *self.rng.pick(&connected);
                self.drop_for_resume(i);
            }
            6 => {
                let i = *self.rng.pick(&connected);
                self.drop_for_good(i);
            }
            _ => {
                let i = *self.rng.pick(&connected);
                self.leave(i).await;
            }
        }
    }

    /// One turn of the loop between actions: media, notifications, due resumes, expired
    /// graces.
    async fn turn(&mut self) {
        self.pump_media();
        self.poll_connections();
        let now = Instant::now();
        let due: Vec<u16> = self
            .peers
            .iter()
            .filter(
                |p| matches!(p.presence, Presence::Dropped { resume_at, .. } if resume_at <= now),
            )
            .map(|p| p.num)
            .collect();
        for num in due {
            let i = self.peer_index(num);
            self.resume(i).await;
        }
        // After the grace the server closes the peer for good: it leaves its room's listing.
        let over: Vec<(String, usize, Instant)> = self
            .expiring
            .iter()
            .filter(|e| e.deadline <= now)
            .map(|e| (e.id.clone(), e.room, e.deadline))
            .collect();
        for (id, room, deadline) in over {
            if self.listed(room, &id).await {
                assert!(
                    now < deadline + EXPIRY_WITHIN,
                    "{}: {id} still in room {room} {EXPIRY_WITHIN:?} after its grace",
                    self.ctx()
                );
            } else {
                self.expiring.retain(|e| e.id != id);
            }
        }
    }

    /// Whether `/api/rooms/<room>` lists peer `id` (or does not answer).
    async fn listed(&self, room: usize, id: &str) -> bool {
        let Some(room) = self
            .server
            .get(&format!("/api/rooms/{}", room_id(room)))
            .await
        else {
            return true;
        };
        room["peers"]
            .as_array()
            .is_some_and(|peers| peers.iter().any(|p| p["peerId"] == id))
    }

    /// Waits for the next tick of the media clock.
    async fn tick(&mut self) {
        self.clock.tick().await;
    }

    /// Waits until every open consumer whose producer closed got its `consumerClosed`, then
    /// checks the media of the open ones.
    async fn settle_consumer_closes(&mut self) {
        self.doing = "final consumerClosed".into();
        let deadline = Instant::now() + Duration::from_secs(GRACE_SECS + 8);
        loop {
            self.turn().await;
            let waiting: Vec<String> = self
                .peers
                .iter()
                .flat_map(|p| {
                    p.consumers
                        .iter()
                        .filter(|(_, c)| !self.producers.contains_key(&c.producer_id))
                        .map(move |(cid, _)| format!("{}:{cid}", p.id))
                })
                .collect();
            if waiting.is_empty() && self.expiring.is_empty() {
                let ctx = self.ctx();
                let open: Vec<Consumer> = self
                    .peers
                    .iter()
                    .flat_map(|p| p.consumers.values().cloned())
                    .collect();
                for c in &open {
                    self.check_media(&ctx, c);
                }
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no consumerClosed for {waiting:?}",
                self.ctx()
            );
            self.tick().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_in_several_rooms_leaves_nothing_behind_and_never_mixes_rooms() {
    run_churn(&[]).await;
}

/// The same churn with rooms spread over both workers from their second consumer on, so
/// peers come and go on both workers and producers are piped between them all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_in_rooms_spread_over_two_workers_leaves_nothing_behind() {
    run_churn(&[("ROOM_CONSUMERS_PER_WORKER", "1")]).await;
}

/// A churn run on a two-worker server started with `env` (besides the resume grace). One
/// run at a time: each keeps both cores busy, and its deadlines assume it has them.
async fn run_churn(env: &[(&str, &str)]) {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let seed = std::env::var("CHURN_SEED")
        .ok()
        .map(|s| s.parse().expect("CHURN_SEED is a u64"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let actions: usize = std::env::var("CHURN_ACTIONS")
        .ok()
        .map(|s| s.parse().expect("CHURN_ACTIONS is a number"))
        .unwrap_or(ACTIONS);
    eprintln!("churn: seed {seed} (replay with CHURN_SEED={seed}), {actions} actions");
    let _seed_guard = SeedOnPanic(seed);
    let grace = GRACE_SECS.to_string();
    let mut env = env.to_vec();
    env.push(("SESSION_GRACE", grace.as_str()));
    let server = TestServer::start_with(2, &env).await;
    let mut clock = tokio::time::interval(TICK);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut churn = Churn {
        server,
        clock,
        seed,
        rng: Rng(seed),
        started: Instant::now(),
        action: 0,
        doing: "start".into(),
        peers: Vec::new(),
        expiring: Vec::new(),
        producers: HashMap::new(),
        all_producers: HashMap::new(),
        peer_rooms: HashMap::new(),
        next_num: 1,
        next_ssrc: (seed as u32) & 0x00ff_ffff | 0x1000_0000,
        vp8_pt: 0,
        tally: Tally::default(),
    };

    let mut next_action = Instant::now();
    while churn.action < actions && churn.started.elapsed() < ACTION_BUDGET {
        churn.turn().await;
        if Instant::now() >= next_action {
            churn.action += 1;
            churn.random_action().await;
            next_action = Instant::now() + Duration::from_millis(50 + churn.rng.below(250) as u64);
        }
        churn.tick().await;
    }

    // Everyone still dropped resumes; every closed producer's consumers are notified.
    churn.doing = "final resumes".into();
    while churn.peers.iter().any(|p| !p.connected()) {
        churn.turn().await;
        churn.tick().await;
    }
    churn.settle_consumer_closes().await;

    // The end: the rest leave, or drop and expire, at random.
    while !churn.peers.is_empty() {
        churn.turn().await;
        let i = churn.rng.below(churn.peers.len());
        if churn.rng.below(3) == 0 {
            churn.drop_for_good(i);
        } else {
            churn.leave(i).await;
        }
    }
    churn.doing = "end: waiting for the graces to expire".into();
    while !churn.expiring.is_empty() {
        churn.turn().await;
        churn.tick().await;
    }
    within(
        &format!("{}: every object gone", churn.ctx()),
        30,
        churn.server.wait_all_objects_gone(),
    )
    .await;
    let srtp_failures = churn.server.counter("srtp_failures").await;
    let metrics = churn.server.get_text("/stats").await.unwrap_or_default();
    let server_errors: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("ferrosoup_signaling_requests_total") && l.contains("code=\"5"))
        .collect();
    eprintln!(
        "churn: seed {seed}: {:?} in {:.1}s",
        churn.tally,
        churn.started.elapsed().as_secs_f64()
    );
    assert_eq!(srtp_failures, 0, "seed {seed}: SRTP failures on the server");
    assert!(
        server_errors.is_empty(),
        "seed {seed}: 5xx answers: {server_errors:?}"
    );
    assert!(
        churn.tally.packets > 500,
        "seed {seed}: only {} media packets received in the whole run: {:?}",
        churn.tally.packets,
        churn.tally
    );
}
