//! One run: peers join over signaling (publishers first, then subscribers), the media
//! loop measures a window (while churn peers come and go, with `--churn`), the server is
//! sampled, and everything is folded into a [`Report`].

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use ferrosoup_rtc::dtls::{DtlsCertificate, Fingerprint};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot, watch};

use crate::churn::{self, ChurnReport, ServerStats, Tally, Watcher};
use crate::config::Config;
use crate::cpu::{find_pid_by_name, find_pid_by_port, process_cpu_time, sample};
use crate::downlink::LinkShape;
use crate::media::{
    BUF_LEN, Command, ConsumerSpec, Kind, MediaHandle, SendStreamSpec, TransportSpec,
};
use crate::report::{Report, RunFacts};
use crate::signal::{ProtooError, Signal, host_port, http_get_json, is_loopback};

/// Time after the window for the last packets to arrive.
const DRAIN: Duration = Duration::from_millis(500);
/// Interval of the object-count polls while waiting for the server to let go of the churn
/// peers.
const SETTLE_POLL: Duration = Duration::from_millis(250);
/// Share of the video bitrate per simulcast encoding, lowest first.
const SIMULCAST_SHARES: [f64; 3] = [0.10, 0.25, 0.65];
/// URI of the transport-wide-cc header extension.
const TRANSPORT_WIDE_CC: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// What every peer task shares.
pub(crate) struct Ctx {
    pub(crate) cfg: Config,
    pub(crate) media: MediaHandle,
    /// Our certificate's sha-256 fingerprint, signalled in `connectTransport`.
    fingerprint: Fingerprint,
    next_transport: AtomicU32,
    next_stream: AtomicU32,
    /// Producer id → (kind, stream ids lowest layer first), filled by publishers (and
    /// emptied again by churn publishers when they leave).
    producers: Mutex<HashMap<String, (Kind, Vec<u32>)>>,
    /// Prefix of room and peer ids, unique per run.
    run_id: String,
}

/// One simulated peer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerSpec {
    /// Run-wide peer index.
    pub(crate) index: u32,
    /// Room index.
    pub(crate) room: usize,
    /// Sends audio and video over a send transport.
    pub(crate) publishes: bool,
    /// Consumes every publisher of the room over a recv transport.
    pub(crate) subscribes: bool,
    /// Comes and goes during the window (`--churn`): left out of the report's figures.
    pub(crate) churn: bool,
    /// Checks every payload byte for byte.
    pub(crate) full_verify: bool,
    /// Its downlink is capped (`--downlink-kbps`).
    pub(crate) capped: bool,
    /// Stops reading its TCP connection once connected (`--tcp-stalled-subscribers`): left
    /// out of the report's figures.
    pub(crate) stalled: bool,
}

/// A joined peer: its WebSocket and what its consumes came to.
pub(crate) struct Joined {
    pub(crate) signal: Signal,
    /// Consumers created.
    pub(crate) consumers: usize,
    /// Producers it did not consume because they closed before it could (a churn
    /// publisher that left meanwhile).
    pub(crate) producers_gone: usize,
}

/// What a peer has set up so far, for a churn peer to take down when it leaves (also
/// after a join that failed half-way).
#[derive(Debug, Default)]
pub(crate) struct Owned {
    /// Media loop ids of its transports.
    transports: Vec<u32>,
    /// Its producers, registered in [`Ctx::producers`].
    producers: Vec<String>,
}

impl Owned {
    /// Takes the peer's producers out of the registry: no peer joining later tries to
    /// consume them.
    pub(crate) fn forget_producers(&mut self, ctx: &Ctx) {
        if let Ok(mut registry) = ctx.producers.lock() {
            for id in self.producers.drain(..) {
                registry.remove(&id);
            }
        }
    }

    /// Forgets the peer's producers and closes its transports' sockets in the media loop.
    pub(crate) fn release(mut self, ctx: &Ctx) {
        self.forget_producers(ctx);
        for id in self.transports {
            let _ = ctx.media.send(Command::RemoveTransport(id));
        }
    }
}

fn codec<'a>(caps: &'a Value, mime: &str) -> anyhow::Result<&'a Value> {
    caps["codecs"]
        .as_array()
        .and_then(|c| {
            c.iter().find(|c| {
                c["mimeType"]
                    .as_str()
                    .is_some_and(|m| m.eq_ignore_ascii_case(mime))
            })
        })
        .ok_or_else(|| anyhow!("router capabilities lack {mime}"))
}

/// `caps` without transport-cc: neither the transport-wide-cc header extension nor the
/// `transport-cc` RTCP feedback of any codec (what a client that does not estimate with
/// the server would offer).
fn without_transport_cc(mut caps: Value) -> Value {
    if let Some(exts) = caps["headerExtensions"].as_array_mut() {
        exts.retain(|e| e["uri"].as_str() != Some(TRANSPORT_WIDE_CC));
    }
    if let Some(codecs) = caps["codecs"].as_array_mut() {
        for codec in codecs {
            if let Some(fb) = codec["rtcpFeedback"].as_array_mut() {
                fb.retain(|f| f["type"].as_str() != Some("transport-cc"));
            }
        }
    }
    caps
}

/// Id of the transport-wide-cc header extension for `kind` ("audio"/"video") in a list of
/// header extensions: router capabilities (`preferredId`) or RTP parameters (`id`).
fn transport_cc_id(exts: &Value, kind: Option<&str>) -> Option<u8> {
    exts.as_array()?
        .iter()
        .filter(|e| e["uri"].as_str() == Some(TRANSPORT_WIDE_CC))
        .filter(|e| kind.is_none_or(|k| e["kind"].as_str().is_none_or(|ek| ek == k)))
        .find_map(|e| {
            e["preferredId"]
                .as_u64()
                .or_else(|| e["id"].as_u64())
                .and_then(|id| u8::try_from(id).ok())
                .filter(|id| (1..=14).contains(id))
        })
}

fn pt_of(codec: &Value) -> anyhow::Result<u8> {
    codec["preferredPayloadType"]
        .as_u64()
        .and_then(|p| u8::try_from(p).ok())
        .ok_or_else(|| anyhow!("codec without preferredPayloadType"))
}

/// The first UDP candidate (with `tcp`, the first passive TCP candidate) of a
/// `createTransport` answer, as an address (with `loopback_only`, the first that is a
/// loopback address).
fn candidate(
    answer: &Value,
    host: &str,
    loopback_only: bool,
    tcp: bool,
) -> anyhow::Result<SocketAddr> {
    let list = answer["iceCandidates"]
        .as_array()
        .ok_or_else(|| anyhow!("createTransport answer has no iceCandidates"))?;
    let protocol = if tcp { "tcp" } else { "udp" };
    let usable = list.iter().filter(|c| {
        let p = c["protocol"].as_str().unwrap_or("udp");
        p.eq_ignore_ascii_case(protocol)
            && (!tcp || c["tcpType"].as_str().is_none_or(|t| t == "passive"))
    });
    let mut found = false;
    for c in usable {
        found = true;
        let ip = c["ip"]
            .as_str()
            .or_else(|| c["address"].as_str())
            .ok_or_else(|| anyhow!("candidate without ip"))?;
        let port = c["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| anyhow!("candidate without port"))?;
        let ip: IpAddr = ip.parse().context("candidate ip")?;
        let addr = if ip.is_unspecified() {
            (host, port)
                .to_socket_addrs()
                .context("resolve server host")?
                .next()
                .ok_or_else(|| anyhow!("server host resolves to nothing"))?
        } else {
            SocketAddr::new(ip, port)
        };
        if !loopback_only || addr.ip().is_loopback() {
            return Ok(addr);
        }
    }
    let protocol = protocol.to_uppercase();
    if found {
        bail!("no loopback {protocol} candidate (a churn run sends only to loopback)");
    }
    bail!("no {protocol} candidate")
}

async fn create_transport(
    ctx: &Ctx,
    signal: &mut Signal,
    spec: &PeerSpec,
    subscriber: bool,
    ws_opened: Instant,
    owned: &mut Owned,
) -> anyhow::Result<(String, u32)> {
    let direction = if subscriber { "recv" } else { "send" };
    let answer = signal
        .request(
            "createTransport",
            json!({ "direction": direction, "forceTcp": ctx.cfg.tcp }),
        )
        .await?;
    let transport_id = answer["id"]
        .as_str()
        .ok_or_else(|| anyhow!("createTransport answer without id"))?
        .to_owned();
    let ice = &answer["iceParameters"];
    let (ufrag, pwd) = match (ice["usernameFragment"].as_str(), ice["password"].as_str()) {
        (Some(u), Some(p)) => (u.to_owned(), p.to_owned()),
        _ => bail!("createTransport answer without ICE credentials"),
    };
    let fingerprints: Vec<Fingerprint> = answer["dtlsParameters"]["fingerprints"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| {
                    Some(Fingerprint {
                        algorithm: f["algorithm"].as_str()?.to_owned(),
                        value: f["value"].as_str()?.to_owned(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    // The host of the peer's server stands for a candidate's unspecified address.
    let (host, _) = host_port(ctx.cfg.url_for(spec.room, spec.index))
        .ok_or_else(|| anyhow!("cannot read host and port of --url"))?;
    let remote = candidate(&answer, &host, ctx.cfg.churning(), ctx.cfg.tcp)?;
    // The server must know our fingerprint before our ClientHello arrives.
    signal
        .request(
            "connectTransport",
            json!({
                "transportId": transport_id,
                "dtlsParameters": {
                    "role": "client",
                    "fingerprints": [{
                        "algorithm": ctx.fingerprint.algorithm,
                        "value": ctx.fingerprint.value,
                    }],
                },
            }),
        )
        .await?;
    let id = ctx.next_transport.fetch_add(1, Ordering::Relaxed);
    owned.transports.push(id);
    let (tx, rx) = oneshot::channel();
    ctx.media
        .send(Command::AddTransport(Box::new(TransportSpec {
            id,
            peer: spec.index,
            subscriber,
            remote,
            tcp: ctx.cfg.tcp,
            server_ufrag: ufrag,
            server_pwd: pwd,
            fingerprints,
            ws_opened,
            full_verify: spec.full_verify,
            measured: !spec.churn && !spec.stalled,
            stall_reading: subscriber && spec.stalled,
            downlink: (subscriber && spec.capped).then(|| {
                LinkShape::new(
                    ctx.cfg.downlink_kbps.unwrap_or(0),
                    ctx.cfg.downlink_burst,
                    Duration::from_secs_f64(ctx.cfg.downlink_queue_ms / 1000.0),
                    BUF_LEN,
                )
            }),
            twcc_feedback: !ctx.cfg.no_twcc,
            connected: tx,
        })))?;
    rx.await
        .map_err(|_| anyhow!("media loop dropped the transport"))?
        .map_err(|e| anyhow!("transport {transport_id}: {e}"))?;
    Ok((transport_id, id))
}

async fn publish(
    ctx: &Ctx,
    signal: &mut Signal,
    spec: &PeerSpec,
    caps: &Value,
    ws_opened: Instant,
    owned: &mut Owned,
) -> anyhow::Result<()> {
    let (transport_id, transport) =
        create_transport(ctx, signal, spec, false, ws_opened, owned).await?;
    let cname = format!("{}-p{}", ctx.run_id, spec.index);
    let opus = codec(caps, "audio/opus")?;
    let mut specs = vec![(Kind::Audio, pt_of(opus)?, vec![(None::<&str>, 0u32, 1u16)])];
    if ctx.cfg.video_kbps > 0 {
        let vp8 = codec(caps, "video/VP8")?;
        let layers = if ctx.cfg.simulcast {
            SIMULCAST_SHARES
                .iter()
                .zip(["r0", "r1", "r2"])
                .zip([4u16, 2, 1])
                .map(|((share, rid), down)| {
                    (
                        Some(rid),
                        ((f64::from(ctx.cfg.video_kbps) * share).round() as u32).max(1),
                        down,
                    )
                })
                .collect()
        } else {
            vec![(None, ctx.cfg.video_kbps, 1)]
        };
        specs.push((Kind::Video, pt_of(vp8)?, layers));
    }
    for (mid, (kind, pt, layers)) in specs.into_iter().enumerate() {
        let kind_name = if kind == Kind::Audio {
            "audio"
        } else {
            "video"
        };
        // As a browser: a transport-wide sequence number on every packet, audio and video,
        // with the router's id for the extension.
        let twcc_ext = if ctx.cfg.no_twcc {
            0
        } else {
            transport_cc_id(&caps["headerExtensions"], Some(kind_name)).unwrap_or(0)
        };
        let header_extensions = if twcc_ext == 0 {
            json!([])
        } else {
            json!([{ "uri": TRANSPORT_WIDE_CC, "id": twcc_ext, "encrypt": false, "parameters": {} }])
        };
        let mut streams = Vec::new();
        let mut encodings = Vec::new();
        for (rid, kbps, down) in layers {
            let stream_id = ctx.next_stream.fetch_add(1, Ordering::Relaxed);
            let ssrc = rand::random::<u32>() | 1;
            let mut encoding = json!({ "ssrc": ssrc });
            if let Some(rid) = rid {
                encoding["rid"] = json!(rid);
                encoding["scaleResolutionDownBy"] = json!(down);
                encoding["maxBitrate"] = json!(kbps * 1000);
            }
            encodings.push(encoding);
            streams.push(SendStreamSpec {
                stream_id,
                ssrc,
                pt,
                kind,
                kbps,
                width: 1280 / down,
                height: 720 / down,
                pacing_factor: ctx.cfg.pacing_factor,
                twcc_ext,
            });
        }
        let codec = match kind {
            Kind::Audio => json!({
                "mimeType": "audio/opus", "payloadType": pt, "clockRate": 48000, "channels": 2,
                "parameters": {}, "rtcpFeedback": [],
            }),
            Kind::Video => json!({
                "mimeType": "video/VP8", "payloadType": pt, "clockRate": 90000, "parameters": {},
                "rtcpFeedback": [
                    {"type": "nack", "parameter": ""},
                    {"type": "nack", "parameter": "pli"},
                    {"type": "ccm", "parameter": "fir"},
                ],
            }),
        };
        let answer = signal
            .request(
                "produce",
                json!({
                    "transportId": transport_id,
                    "kind": kind_name,
                    "rtpParameters": {
                        "mid": mid.to_string(),
                        "codecs": [codec],
                        "headerExtensions": header_extensions,
                        "encodings": encodings,
                        "rtcp": { "cname": cname, "reducedSize": true },
                    },
                    "appData": {},
                }),
            )
            .await?;
        let producer_id = answer["id"]
            .as_str()
            .ok_or_else(|| anyhow!("produce answer without id"))?
            .to_owned();
        let ids = streams.iter().map(|s| s.stream_id).collect();
        ctx.producers
            .lock()
            .map_err(|_| anyhow!("producer registry poisoned"))?
            .insert(producer_id.clone(), (kind, ids));
        owned.producers.push(producer_id);
        ctx.media
            .send(Command::AddSendStreams { transport, streams })?;
    }
    Ok(())
}

/// Whether a refusal means the producer (or the consumer with it) closed meanwhile.
fn is_gone(e: &ProtooError) -> bool {
    matches!(e, ProtooError::Refused { code: 404, .. })
}

/// Consumes every scenario producer `joined` lists; returns the consumers made and the
/// producers that closed before they could be consumed.
async fn subscribe(
    ctx: &Ctx,
    signal: &mut Signal,
    spec: &PeerSpec,
    joined: &Value,
    ws_opened: Instant,
    owned: &mut Owned,
) -> anyhow::Result<(usize, usize)> {
    let (transport_id, transport) =
        create_transport(ctx, signal, spec, true, ws_opened, owned).await?;
    let producer_ids: Vec<String> = joined["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["producers"].as_array().into_iter().flatten())
        .filter_map(|p| p["producerId"].as_str().map(str::to_owned))
        .collect();
    let mut consumers = 0;
    let mut gone = 0;
    for producer_id in producer_ids {
        let known = ctx
            .producers
            .lock()
            .map_err(|_| anyhow!("producer registry poisoned"))?
            .get(&producer_id)
            .cloned();
        // Producers of other clients in the room are not part of the scenario.
        let Some((kind, stream_ids)) = known else {
            continue;
        };
        let answer = match signal
            .request(
                "consume",
                json!({ "transportId": transport_id, "producerId": producer_id }),
            )
            .await
        {
            Ok(answer) => answer,
            Err(e) if is_gone(&e) => {
                gone += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let consumer_id = answer["id"]
            .as_str()
            .ok_or_else(|| anyhow!("consume answer without id"))?
            .to_owned();
        let params = &answer["rtpParameters"];
        let encoding = &params["encodings"][0];
        let ssrc = encoding["ssrc"]
            .as_u64()
            .and_then(|s| u32::try_from(s).ok())
            .ok_or_else(|| anyhow!("consume answer without encodings[0].ssrc"))?;
        let rtx_ssrc = encoding["rtx"]["ssrc"]
            .as_u64()
            .and_then(|s| u32::try_from(s).ok());
        let twcc_ext = transport_cc_id(&params["headerExtensions"], None).unwrap_or(0);
        let clock_rate = params["codecs"][0]["clockRate"]
            .as_u64()
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(if kind == Kind::Audio { 48_000 } else { 90_000 });
        ctx.media.send(Command::AddConsumer {
            transport,
            consumer: ConsumerSpec {
                ssrc,
                rtx_ssrc,
                kind,
                clock_rate,
                stream_ids,
                twcc_ext,
            },
        })?;
        match signal
            .request("resumeConsumer", json!({ "consumerId": consumer_id }))
            .await
        {
            Ok(_) => consumers += 1,
            Err(e) if is_gone(&e) => gone += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok((consumers, gone))
}

/// Joins `spec`'s room and sets up its media; what it sets up is recorded in `owned` as it
/// goes.
pub(crate) async fn join(ctx: &Ctx, spec: PeerSpec, owned: &mut Owned) -> anyhow::Result<Joined> {
    let ws_opened = Instant::now();
    let mut signal = Signal::connect(
        ctx.cfg.url_for(spec.room, spec.index),
        Duration::from_secs_f64(ctx.cfg.join_timeout),
    )
    .await?;
    let room_id = format!("{}-room{}", ctx.run_id, spec.room);
    let created = signal
        .request("createRoom", json!({ "roomId": room_id }))
        .await?;
    let caps = created["rtpCapabilities"].clone();
    // The router's capabilities are what the peer offers (they include transport-cc).
    let offered = if ctx.cfg.no_twcc {
        without_transport_cc(caps.clone())
    } else {
        caps.clone()
    };
    let role = match (spec.churn, spec.publishes) {
        (true, _) => "churn",
        (false, true) => "pub",
        (false, false) => "sub",
    };
    let joined = signal
        .request(
            "joinRoom",
            json!({
                "roomId": room_id,
                "peerId": format!("{}-{role}{}", ctx.run_id, spec.index),
                "displayName": format!("loadtest {role} {}", spec.index),
                "rtpCapabilities": offered,
            }),
        )
        .await?;
    if spec.publishes {
        publish(ctx, &mut signal, &spec, &caps, ws_opened, owned).await?;
    }
    let (consumers, producers_gone) = if spec.subscribes {
        subscribe(ctx, &mut signal, &spec, &joined, ws_opened, owned).await?
    } else {
        (0, 0)
    };
    Ok(Joined {
        signal,
        consumers,
        producers_gone,
    })
}

/// Spawns one task per peer; each answers on its oneshot once joined, then keeps its
/// WebSocket open until `stop` turns true.
fn spawn_peers(
    ctx: &Arc<Ctx>,
    specs: &[PeerSpec],
    semaphore: &Arc<Semaphore>,
    stop: &watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Vec<oneshot::Receiver<anyhow::Result<usize>>> {
    let timeout = Duration::from_secs_f64(ctx.cfg.join_timeout);
    specs
        .iter()
        .map(|&spec| {
            let (tx, rx) = oneshot::channel();
            let ctx = ctx.clone();
            let semaphore = semaphore.clone();
            let mut stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let joined = {
                    let _permit = semaphore.acquire().await;
                    let mut owned = Owned::default();
                    tokio::time::timeout(timeout, join(&ctx, spec, &mut owned)).await
                };
                let joined = match joined {
                    Ok(Ok(j)) => j,
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                    Err(_) => {
                        let _ = tx.send(Err(anyhow!("peer {} timed out joining", spec.index)));
                        return;
                    }
                };
                let _ = tx.send(Ok(joined.consumers));
                joined
                    .signal
                    .idle_until(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
            }));
            rx
        })
        .collect()
}

/// Outcome of a phase of joins.
#[derive(Debug, Default)]
struct Joins {
    ok: usize,
    consumers: usize,
    /// Indices of the peers that failed.
    failed: Vec<u32>,
}

/// Waits for a phase of joins (`receivers` in the order of `specs`); reports each join to
/// `progress`.
async fn await_joins(
    what: &str,
    specs: &[PeerSpec],
    receivers: Vec<oneshot::Receiver<anyhow::Result<usize>>>,
    progress: &dyn Fn(String),
) -> Joins {
    let total = receivers.len();
    let mut joins = Joins::default();
    for (spec, rx) in specs.iter().zip(receivers) {
        match rx.await {
            Ok(Ok(n)) => {
                joins.ok += 1;
                joins.consumers += n;
            }
            Ok(Err(e)) => {
                joins.failed.push(spec.index);
                tracing::warn!("peer failed: {e:#}");
            }
            Err(_) => joins.failed.push(spec.index),
        }
        progress(format!(
            "{what}: {}/{total} joined, {} failed",
            joins.ok,
            joins.failed.len()
        ));
    }
    joins
}

/// Finds the local server process to sample.
fn server_pid(cfg: &Config, host: &str, port: u16) -> Option<u32> {
    if cfg.server_pid.is_some() {
        return cfg.server_pid;
    }
    let local = is_loopback(host) || host == "0.0.0.0";
    if !local {
        return None;
    }
    find_pid_by_port(port).or_else(|| find_pid_by_name("ferrosoup"))
}

/// Runs one scenario to the end and returns its report. Blocks the calling thread (it
/// runs its own single-threaded runtime plus the media thread).
pub fn run(cfg: &Config) -> anyhow::Result<Report> {
    cfg.validate().map_err(|e| anyhow!(e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(run_async(cfg.clone()))
}

async fn run_async(cfg: Config) -> anyhow::Result<Report> {
    let (host, port) =
        host_port(cfg.url()).ok_or_else(|| anyhow!("cannot read host and port of --url"))?;
    let admin_key = cfg.admin_key.as_deref();
    let epoch = Instant::now();
    let cert = Arc::new(DtlsCertificate::generate().context("DTLS certificate")?);
    let fingerprint = cert
        .fingerprints()
        .iter()
        .find(|f| f.algorithm == "sha-256")
        .cloned()
        .ok_or_else(|| anyhow!("certificate has no sha-256 fingerprint"))?;
    let media = MediaHandle::spawn(epoch, cert).context("media thread")?;
    let ctx = Arc::new(Ctx {
        cfg: cfg.clone(),
        media,
        fingerprint,
        next_transport: AtomicU32::new(0),
        next_stream: AtomicU32::new(0),
        producers: Mutex::new(HashMap::new()),
        run_id: format!("lt{:06x}", rand::random::<u32>() & 0xff_ffff),
    });
    let pid = server_pid(&cfg, &host, port);
    let semaphore = Arc::new(Semaphore::new(cfg.join_concurrency));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut index = 0u32;
    let mut specs = |publisher: bool, per_room: usize| {
        let mut v = Vec::new();
        for room in 0..cfg.rooms {
            for i in 0..per_room {
                v.push(PeerSpec {
                    index,
                    room,
                    publishes: publisher,
                    subscribes: !publisher,
                    churn: false,
                    full_verify: !publisher && i % cfg.verify_every == 0,
                    capped: !publisher && cfg.capped(i),
                    stalled: !publisher && cfg.stalled(i),
                });
                index += 1;
            }
        }
        v
    };
    let publishers = specs(true, cfg.publishers);
    let subscribers = specs(false, cfg.subscribers);
    let mut first_churn_index = index;

    let progress = |text: String| {
        if !cfg.quiet {
            eprint!("\r\x1b[2K{text}");
            let _ = std::io::stderr().flush();
        }
    };
    let rx = spawn_peers(&ctx, &publishers, &semaphore, &stop_rx, &mut tasks);
    let pubs = await_joins("publishers", &publishers, rx, &progress).await;
    if pubs.ok == 0 {
        let _ = stop_tx.send(true);
        bail!("no publisher could join");
    }
    let rx = spawn_peers(&ctx, &subscribers, &semaphore, &stop_rx, &mut tasks);
    let subs = await_joins("subscribers", &subscribers, rx, &progress).await;

    tokio::time::sleep(Duration::from_secs_f64(cfg.settle)).await;
    let mut warmup_peers = 0;
    if cfg.churning() && cfg.churn_warmup > 0.0 {
        progress("churn: warm-up".to_owned());
        let warm = warm_up(&ctx, first_churn_index, &host, port).await;
        let Some(warm) = warm else {
            let _ = stop_tx.send(true);
            bail!("the warm-up churn peers did not leave the server within --churn-settle");
        };
        first_churn_index += warm.started as u32;
        warmup_peers = warm.joined;
    }
    let mut watcher = if cfg.churning() {
        let Some(baseline) = ServerStats::fetch(&host, port, admin_key).await else {
            let _ = stop_tx.send(true);
            bail!(
                "--churn needs the object counts of GET /api/stats (pass --admin-key when the \
                 server has ADMIN_KEY)"
            );
        };
        Some(Watcher::new(Instant::now(), baseline, pid.and_then(sample)))
    } else {
        None
    };
    let from = Instant::now();
    let until = from + Duration::from_secs_f64(cfg.duration);
    ctx.media.send(Command::Measure { from, until })?;
    let churn = cfg
        .churning()
        .then(|| tokio::spawn(churn::drive(ctx.clone(), first_churn_index, until)));
    let server_start = pid.and_then(sample);
    let cpu_start = process_cpu_time();
    let mut rss_max = server_start.map(|s| s.rss_bytes);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = Instant::now();
        if now >= until {
            break;
        }
        if let Some(s) = pid.and_then(sample) {
            rss_max = rss_max.max(Some(s.rss_bytes));
            if let Some(w) = watcher.as_mut() {
                w.observe_process(Instant::now(), &s);
            }
        }
        let mut peers = String::new();
        if let Some(w) = watcher.as_mut()
            && let Some(stats) = ServerStats::fetch(&host, port, admin_key).await
        {
            w.observe(&stats);
            peers = format!("  server peers {}", stats.counts.get("peers").unwrap_or(0));
        }
        let (tx, rx) = oneshot::channel();
        ctx.media.send(Command::Snapshot(tx))?;
        if let Ok(p) = rx.await {
            progress(format!(
                "{:>5.1}/{:.0} s  transports {}/{}  sent {}  received {}  srtp failures {}  latency p50 {}{peers}",
                (now - from).as_secs_f64(),
                cfg.duration,
                p.connected,
                p.transports,
                p.packets_sent,
                p.packets_received,
                p.srtp_failures,
                p.latency_p50_ms
                    .map_or("-".to_owned(), |l| format!("{l:.2} ms")),
            ));
        }
    }
    tokio::time::sleep_until((until + DRAIN).into()).await;
    let server_end = pid.and_then(sample);
    let wall = from.elapsed();
    let loadtest_cpu = process_cpu_time().saturating_sub(cpu_start);
    let (tx, rx) = oneshot::channel();
    ctx.media.send(Command::Results(tx))?;
    let media_report = rx.await.map_err(|_| anyhow!("media loop ended early"))?;
    let workers = http_get_json(&host, port, "/api/stats", admin_key)
        .await
        .and_then(|s| s["workers"].as_array().map(Vec::len));
    let churn = match (churn, watcher) {
        (Some(task), Some(watcher)) => {
            progress("churn: waiting for the last peers to leave".to_owned());
            let tally = task.await.context("churn task")?;
            let mut report = settle(&cfg, &host, port, pid, watcher, tally, &progress).await;
            report.warmup_peers = warmup_peers;
            Some(report)
        }
        _ => None,
    };
    ctx.media.send(Command::Stop)?;
    progress(String::new());
    if !cfg.quiet {
        eprintln!();
    }

    let _ = stop_tx.send(true);
    // Peers close their WebSockets; a server that does not answer the close is not waited
    // for beyond this.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::future::join_all(tasks),
    )
    .await;
    let percent = |d: Duration| d.as_secs_f64() / wall.as_secs_f64() * 100.0;
    let (server_cpu, server_wait) = match (server_start, server_end) {
        (Some(a), Some(b)) => {
            rss_max = rss_max.max(Some(b.rss_bytes));
            (
                Some(percent(b.cpu.saturating_sub(a.cpu))),
                Some(percent(b.run_delay.saturating_sub(a.run_delay))),
            )
        }
        _ => (None, None),
    };
    let facts = RunFacts {
        urls: cfg.urls.clone(),
        spread: cfg.spread,
        rooms: cfg.rooms,
        publishers: cfg.publishers,
        subscribers: cfg.subscribers,
        video_kbps: cfg.video_kbps,
        simulcast: cfg.simulcast,
        duration: Duration::from_secs_f64(cfg.duration),
        peers_joined: pubs.ok + subs.ok,
        failed_peers: pubs.failed.into_iter().chain(subs.failed).collect(),
        consumers: subs.consumers,
        server_pid: pid,
        server_cpu_percent: server_cpu,
        server_rss_bytes: rss_max,
        server_cpu_wait_percent: server_wait,
        server_workers: workers,
        loadtest_cpu_percent: loadtest_cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
        twcc: !cfg.no_twcc,
        downlink_kbps: cfg.downlink_kbps,
        churn,
    };
    match Arc::try_unwrap(ctx) {
        Ok(ctx) => ctx.media.join(),
        Err(_) => tracing::debug!("peer tasks still hold the context; media thread detached"),
    }
    Ok(Report::build(facts, &media_report))
}

/// `--churn-warmup`: churn peers for that long, then waits until the server's object counts
/// are back where they were and rests `--churn-rest`. `None` if they are not back within
/// `--churn-settle`.
async fn warm_up(ctx: &Arc<Ctx>, first_index: u32, host: &str, port: u16) -> Option<Tally> {
    let cfg = &ctx.cfg;
    let admin_key = cfg.admin_key.as_deref();
    let before = ServerStats::fetch(host, port, admin_key).await?.counts;
    let until = Instant::now() + Duration::from_secs_f64(cfg.churn_warmup);
    let tally = churn::drive(ctx.clone(), first_index, until).await;
    let limit = Instant::now() + Duration::from_secs_f64(cfg.churn_settle);
    loop {
        let now = ServerStats::fetch(host, port, admin_key).await;
        if now.is_some_and(|s| s.counts == before) {
            break;
        }
        if Instant::now() >= limit {
            return None;
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(cfg.churn_rest)).await;
    Some(tally)
}

/// After the churn: waits until the server's object counts are back at the baseline (or
/// `--churn-settle` runs out), following their peaks, rests `--churn-rest`, then takes the
/// end figures.
async fn settle(
    cfg: &Config,
    host: &str,
    port: u16,
    pid: Option<u32>,
    mut watcher: Watcher,
    tally: Tally,
    progress: &dyn Fn(String),
) -> ChurnReport {
    let admin_key = cfg.admin_key.as_deref();
    let from = Instant::now();
    let limit = from + Duration::from_secs_f64(cfg.churn_settle);
    let mut end = ServerStats::default();
    loop {
        if let Some(s) = pid.and_then(sample) {
            watcher.observe_process(Instant::now(), &s);
        }
        if let Some(stats) = ServerStats::fetch(host, port, admin_key).await {
            watcher.observe(&stats);
            let counts = &stats.counts;
            let back = counts == watcher.baseline();
            progress(format!(
                "churn: {:.1} s after the last leave, server peers {} (baseline {})",
                from.elapsed().as_secs_f64(),
                counts.get("peers").unwrap_or(0),
                watcher.baseline().get("peers").unwrap_or(0),
            ));
            end = stats;
            if back {
                break;
            }
        }
        if Instant::now() >= limit {
            break;
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
    let settled = from.elapsed();
    // The counts are back; the pages the last peers freed go back to the system soon after.
    let rest_until = Instant::now() + Duration::from_secs_f64(cfg.churn_rest);
    while Instant::now() < rest_until {
        tokio::time::sleep(SETTLE_POLL.min(rest_until - Instant::now())).await;
        if let Some(s) = pid.and_then(sample) {
            watcher.observe_process(Instant::now(), &s);
        }
        if let Some(stats) = ServerStats::fetch(host, port, admin_key).await {
            watcher.observe(&stats);
            end = stats;
        }
    }
    let end_process = (Instant::now(), pid.and_then(sample));
    watcher.report(cfg, tally, &end, end_process, settled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_prefers_udp_and_replaces_unspecified_addresses() {
        let answer = json!({"iceCandidates": [
            {"ip": "10.0.0.1", "port": 1, "protocol": "tcp"},
            {"ip": "0.0.0.0", "port": 40000, "protocol": "udp"},
        ]});
        assert_eq!(
            candidate(&answer, "127.0.0.1", false, false).expect("candidate"),
            "127.0.0.1:40000".parse::<SocketAddr>().expect("addr")
        );
        let answer =
            json!({"iceCandidates": [{"address": "192.0.2.7", "port": 5, "protocol": "udp"}]});
        assert_eq!(
            candidate(&answer, "x", false, false).expect("candidate"),
            "192.0.2.7:5".parse::<SocketAddr>().expect("addr")
        );
        assert!(candidate(&json!({}), "x", false, false).is_err());
        // A churn run takes only a loopback candidate.
        let answer = json!({"iceCandidates": [
            {"ip": "192.0.2.7", "port": 5, "protocol": "udp"},
            {"ip": "127.0.0.1", "port": 6, "protocol": "udp"},
        ]});
        assert_eq!(
            candidate(&answer, "127.0.0.1", true, false).expect("candidate"),
            "127.0.0.1:6".parse::<SocketAddr>().expect("addr")
        );
        let answer = json!({"iceCandidates": [{"ip": "192.0.2.7", "port": 5, "protocol": "udp"}]});
        assert!(candidate(&answer, "127.0.0.1", true, false).is_err());
        // --tcp takes the passive TCP candidate.
        let answer = json!({"iceCandidates": [
            {"ip": "127.0.0.1", "port": 40000, "protocol": "udp"},
            {"ip": "127.0.0.1", "port": 40001, "protocol": "tcp", "tcpType": "passive"},
        ]});
        assert_eq!(
            candidate(&answer, "x", false, true).expect("candidate"),
            "127.0.0.1:40001".parse::<SocketAddr>().expect("addr")
        );
        assert!(candidate(&answer, "x", false, false).is_ok_and(|a| a.port() == 40000));
    }

    #[test]
    fn payload_types_from_router_capabilities() {
        let caps = json!({"codecs": [
            {"mimeType": "audio/opus", "preferredPayloadType": 100},
            {"mimeType": "video/VP8", "preferredPayloadType": 101},
        ]});
        assert_eq!(
            pt_of(codec(&caps, "audio/opus").expect("opus")).expect("pt"),
            100
        );
        assert_eq!(
            pt_of(codec(&caps, "video/vp8").expect("vp8")).expect("pt"),
            101
        );
        assert!(codec(&caps, "video/H264").is_err());
    }
}
