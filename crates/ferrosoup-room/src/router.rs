//! The async control API: the worker pool and routers. Every call computes what it can on
//! the caller's task (ORTC validation and capability matching are pure functions) and then
//! runs one closure on the owning worker thread.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use ferrosoup_proto::ortc::{self, RtpMapping};
use ferrosoup_proto::rtp_parameters::{
    MediaKind, RtpCapabilities, RtpCodecCapability, RtpEncodingParameters, RtpParameters,
    RtxParameters, uri,
};
use ferrosoup_proto::transport::{
    DtlsFingerprint, DtlsParameters, DtlsRole as WireDtlsRole, FingerprintAlgorithm, IceCandidate,
    IceCandidateTcpType, IceCandidateType, IceParameters, SctpParameters, SctpStreamParameters,
    TransportProtocol,
};
use ferrosoup_rtc::dtls::{DtlsCertificate, DtlsRole, Fingerprint};
use ferrosoup_rtc::rtp::VideoCodec;
use ferrosoup_rtc::sctp::{Reliability, SCTP_PORT, SCTP_STREAMS, SctpConfig};

use ferrosoup_proto::ortc::ProducerType;
use ferrosoup_rtc::rtp::ExtensionIds;

use crate::consumer::RtxOut;
use crate::engine::{
    Closed, ClosedConsumer, CodecSpec, ConsumeSpec, Consumed, EncodingSpec, Engine, ProduceSpec,
    RtxMapping,
};
use crate::error::RoomError;
use crate::events::MediaEvent;
use crate::ids::{ConsumerId, DataConsumerId, DataProducerId, ProducerId, RouterId, TransportId};
use crate::layers::SvcMode;
use crate::producer::CodecInfo;
use crate::settings::WorkerSettings;
use crate::stats::WorkerCounters;
use crate::transmit::Transmit;
use crate::transport::PROBATOR_SSRC;
use crate::worker::{self, WorkerHandle};

/// The worker threads of a server; creates routers on them round-robin.
pub struct WorkerPool {
    workers: Vec<WorkerHandle>,
    next: AtomicUsize,
    candidate_ips: Vec<IpAddr>,
}

impl WorkerPool {
    /// Starts `settings.num_workers` workers, each on its own UDP port from the range and
    /// an ICE-TCP port (the same number when free, else the next free one of the range).
    /// Returns the pool and the stream of events all workers report.
    pub fn start(
        settings: &WorkerSettings,
    ) -> Result<(Self, mpsc::UnboundedReceiver<MediaEvent>), RoomError> {
        let certificate = Arc::new(
            DtlsCertificate::generate()
                .map_err(|e| RoomError::Internal(format!("certificate: {e}")))?,
        );
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut workers = Vec::new();
        let mut port = settings.rtc_min_port;
        for index in 0..settings.num_workers.max(1) {
            let socket = loop {
                if port > settings.rtc_max_port || port == 0 {
                    return Err(RoomError::Internal(format!(
                        "no free UDP port in {}..={} for worker {index}",
                        settings.rtc_min_port, settings.rtc_max_port
                    )));
                }
                let candidate = port;
                port = port.wrapping_add(1);
                if let Ok(s) = crate::udp::bind(settings.listen_ip, candidate) {
                    break s;
                }
            };
            let udp_port = socket
                .local_addr()
                .map_err(|e| RoomError::Internal(format!("worker {index}: {e}")))?
                .port();
            let tcp = std::iter::once(udp_port)
                .chain(settings.rtc_min_port..=settings.rtc_max_port)
                .find_map(|p| crate::tcp::bind(settings.listen_ip, p).ok())
                .ok_or_else(|| {
                    RoomError::Internal(format!(
                        "no free TCP port in {}..={} for worker {index}",
                        settings.rtc_min_port, settings.rtc_max_port
                    ))
                })?;
            let handle = worker::spawn(
                index,
                worker::WorkerSockets {
                    udp: socket,
                    tcp,
                    tcp_limits: settings.tcp_limits,
                    plain_ports: (settings.rtc_min_port, settings.rtc_max_port),
                },
                certificate.clone(),
                events_tx.clone(),
                settings.ice_timeouts,
            )
            .map_err(|e| RoomError::Internal(format!("worker {index}: {e}")))?;
            workers.push(handle);
        }
        tracing::info!(workers = workers.len(), "worker pool started");
        Ok((
            Self {
                workers,
                next: AtomicUsize::new(0),
                candidate_ips: settings.candidate_ips(),
            },
            events_rx,
        ))
    }

    /// The workers.
    pub fn workers(&self) -> &[WorkerHandle] {
        &self.workers
    }

    /// Counters of every worker.
    pub fn counters(&self) -> Vec<WorkerCounters> {
        self.workers.iter().map(|w| w.counters()).collect()
    }

    /// Makes a worker panic, to exercise fault containment (the server exposes this only
    /// when started with fault injection enabled).
    pub async fn inject_worker_panic(&self, index: usize) -> Result<(), RoomError> {
        let worker = self
            .workers
            .get(index)
            .ok_or(RoomError::NotFound("worker"))?;
        match worker
            .exec(|_, _, _| -> () { panic!("injected fault") })
            .await
        {
            Err(RoomError::WorkerGone) => Ok(()),
            other => other,
        }
    }

    /// Creates a router with these media codecs on the next worker (round-robin).
    pub async fn create_router(
        &self,
        media_codecs: &[RtpCodecCapability],
    ) -> Result<Router, RoomError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        self.create_router_on(index, media_codecs).await
    }

    /// The worker with the fewest consumers (as last published) but those in `excluding`;
    /// the lowest index among equals.
    pub fn least_loaded_worker(&self, excluding: &[usize]) -> Option<usize> {
        self.workers
            .iter()
            .filter(|w| !excluding.contains(&w.index()))
            .min_by_key(|w| (w.counters().consumers, w.index()))
            .map(|w| w.index())
    }

    /// Creates a router with these media codecs on worker `index`.
    pub async fn create_router_on(
        &self,
        index: usize,
        media_codecs: &[RtpCodecCapability],
    ) -> Result<Router, RoomError> {
        let caps = ortc::generate_router_rtp_capabilities(media_codecs)?;
        let worker = self
            .workers
            .get(index)
            .ok_or(RoomError::NotFound("worker"))?
            .clone();
        let id = RouterId::new();
        worker
            .exec(move |engine, _, _| engine.create_router(id))
            .await?;
        Ok(Router {
            inner: Arc::new(RouterInner {
                id,
                worker,
                caps,
                candidate_ips: self.candidate_ips.clone(),
                producers: Mutex::new(HashMap::new()),
                transports: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// What the control path remembers of a producer to build its consumers' parameters.
struct ProducerMeta {
    kind: MediaKind,
    rtp_parameters: RtpParameters,
    consumable: RtpParameters,
    mapping: RtpMapping,
    producer_type: ProducerType,
}

/// What the control path remembers of a transport.
struct TransportMeta {
    /// The CNAME all producers of this transport are given (one endpoint, one CNAME, as
    /// mediasoup does; browsers sending RID simulcast announce none).
    cname: Option<String>,
    /// Next MID handed to a consumer on this transport.
    next_mid: u32,
    /// SSRCs of the streams this transport sends (its consumers' media and RTX).
    ssrcs: SsrcSequence,
}

/// The SSRCs a transport gives its outgoing streams: all different for the transport's
/// life, so no two of its streams, however many consumers come and go, share SRTP
/// keystream or GCM nonces (the SRTP index starts again with each stream). `start + n ×
/// step` (mod 2^32) with an odd `step` runs through all 2^32 values before it repeats; both
/// are random, so the SSRCs do not tell how many consumers the transport had. Values the
/// server sends with for other purposes are skipped.
#[derive(Debug)]
struct SsrcSequence {
    next: u32,
    step: u32,
}

impl SsrcSequence {
    /// SSRCs never handed out: 0 ("unset" to some stacks), the server's RTCP reporter
    /// SSRC and the probator's.
    const RESERVED: [u32; 3] = [0, crate::engine::REPORTER_SSRC, PROBATOR_SSRC];

    fn random() -> Self {
        Self::new(rand::random(), rand::random())
    }

    fn new(start: u32, step: u32) -> Self {
        Self {
            next: start,
            step: step | 1,
        }
    }

    /// The next SSRC.
    fn next_ssrc(&mut self) -> u32 {
        loop {
            let ssrc = self.next;
            self.next = self.next.wrapping_add(self.step);
            if !Self::RESERVED.contains(&ssrc) {
                return ssrc;
            }
        }
    }
}

impl Default for TransportMeta {
    fn default() -> Self {
        Self {
            cname: None,
            next_mid: 0,
            ssrcs: SsrcSequence::random(),
        }
    }
}

struct RouterInner {
    id: RouterId,
    worker: WorkerHandle,
    caps: RtpCapabilities,
    candidate_ips: Vec<IpAddr>,
    producers: Mutex<HashMap<ProducerId, ProducerMeta>>,
    transports: Mutex<HashMap<TransportId, TransportMeta>>,
}

/// A router: the media domain of one room, pinned to one worker. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<RouterInner>,
}

/// What a request runs with on the router's worker.
struct RouterCall<'a> {
    router_id: RouterId,
    now: std::time::Instant,
    out: &'a mut dyn Transmit,
}

/// Which ICE candidates a transport offers (`createTransport`'s `forceTcp` / `preferTcp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CandidateOptions {
    /// Only TCP candidates.
    pub force_tcp: bool,
    /// TCP candidates with a higher priority than UDP ones.
    pub prefer_tcp: bool,
}

/// The host candidates of a transport on a worker's `udp_port` and `tcp_port` for each IP,
/// UDP before TCP unless `preferTcp`. Priorities follow RFC 8445 §5.1.2.1 (type preference
/// 126 for host candidates, component 1), with the local preference telling protocols and
/// addresses apart: the preferred protocol gets 65535 − i for the i-th address, the other
/// one 40959 − i, which for TCP is RFC 6544 §4.2's local preference of a passive host
/// candidate (direction preference 4 × 2^13 + 8191 − i). A client that can use UDP
/// therefore nominates it, and falls back to TCP only where UDP does not pass.
pub fn host_candidates(
    ips: &[IpAddr],
    udp_port: u16,
    tcp_port: u16,
    options: CandidateOptions,
) -> Vec<IceCandidate> {
    const PREFERRED: u32 = 65535;
    const OTHER: u32 = (4 << 13) + 8191;
    let priority = |local: u32, i: usize| (126 << 24) | ((local - i as u32) << 8) | 255;
    let (udp_pref, tcp_pref) = if options.prefer_tcp || options.force_tcp {
        (OTHER, PREFERRED)
    } else {
        (PREFERRED, OTHER)
    };
    let udp = ips.iter().enumerate().map(|(i, ip)| IceCandidate {
        foundation: format!("udpcandidate{i}"),
        priority: priority(udp_pref, i),
        address: ip.to_string(),
        protocol: TransportProtocol::Udp,
        port: udp_port,
        r#type: IceCandidateType::Host,
        tcp_type: None,
    });
    let tcp = ips.iter().enumerate().map(|(i, ip)| IceCandidate {
        foundation: format!("tcpcandidate{i}"),
        priority: priority(tcp_pref, i),
        address: ip.to_string(),
        protocol: TransportProtocol::Tcp,
        port: tcp_port,
        r#type: IceCandidateType::Host,
        tcp_type: Some(IceCandidateTcpType::Passive),
    });
    let mut all: Vec<IceCandidate> = if options.force_tcp {
        tcp.collect()
    } else {
        udp.chain(tcp).collect()
    };
    all.sort_by_key(|c| std::cmp::Reverse(c.priority));
    all
}

/// The answer to `createTransport`.
#[derive(Clone, Debug)]
pub struct WebRtcTransportParams {
    /// Transport id.
    pub id: TransportId,
    /// ICE-lite credentials.
    pub ice_parameters: IceParameters,
    /// Host candidates.
    pub ice_candidates: Vec<IceCandidate>,
    /// Server DTLS role (`auto`) and fingerprints.
    pub dtls_parameters: DtlsParameters,
}

/// The answer to creating a plain transport.
#[derive(Clone, Debug)]
pub struct PlainTransportParams {
    /// Transport id.
    pub id: TransportId,
    /// The IP to send to.
    pub ip: IpAddr,
    /// Its RTP port.
    pub port: u16,
    /// Its RTCP port, without `rtcpMux`.
    pub rtcp_port: Option<u16>,
    /// The server's SRTP key, when SRTP is enabled.
    pub srtp: Option<crate::plain::SrtpMasterKey>,
}

/// The answer to [`Router::consume_pipe`]: what the other node needs to produce the pipe
/// producer.
#[derive(Clone, Debug)]
pub struct PipeConsumerParams {
    /// The pipe consumer.
    pub id: ConsumerId,
    /// Media kind.
    pub kind: MediaKind,
    /// RTP parameters of the pipe producer on the other node.
    pub rtp_parameters: RtpParameters,
    /// Whether the producer is paused (the pipe producer starts so).
    pub producer_paused: bool,
}

/// A producer piped to a router on another worker ([`Router::pipe_producer_to`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerPipe {
    /// The pipe producer on the other router, which its consumers consume: it has the
    /// id of the producer it stands for.
    pub producer_id: ProducerId,
    /// The pipe consumer of the producer on this router.
    pub consumer_id: ConsumerId,
    /// The pipe transport on this router.
    pub transport_id: TransportId,
    /// The pipe transport on the other router.
    pub other_transport_id: TransportId,
}

/// The answer to `consume`.
#[derive(Clone, Debug)]
pub struct ConsumerParams {
    /// Consumer id.
    pub id: ConsumerId,
    /// Producer id.
    pub producer_id: ProducerId,
    /// Media kind.
    pub kind: MediaKind,
    /// What the client receives.
    pub rtp_parameters: RtpParameters,
    /// `simple`, `simulcast` or `svc`.
    pub consumer_type: ProducerType,
    /// Whether the producer is paused.
    pub producer_paused: bool,
}

impl Router {
    /// Runs `f` on the router's worker with the worker state, this router's id and the
    /// current time.
    async fn on_worker<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine, RouterCall<'_>) -> Result<R, RoomError> + Send + 'static,
    ) -> Result<R, RoomError> {
        let router_id = self.inner.id;
        self.inner
            .worker
            .exec(move |engine, now, out| {
                f(
                    engine,
                    RouterCall {
                        router_id,
                        now,
                        out,
                    },
                )
            })
            .await?
    }

    /// The router id.
    pub fn id(&self) -> RouterId {
        self.inner.id
    }

    /// Index of the worker the router lives on.
    pub fn worker_index(&self) -> usize {
        self.inner.worker.index()
    }

    /// The router's RTP capabilities (for `Device.load`).
    pub fn rtp_capabilities(&self) -> &RtpCapabilities {
        &self.inner.caps
    }

    /// Creates a WebRTC transport with the candidates `options` ask for.
    pub async fn create_webrtc_transport(
        &self,
        options: CandidateOptions,
    ) -> Result<WebRtcTransportParams, RoomError> {
        let info = self
            .on_worker(move |e, c| e.create_transport(c.router_id, c.now))
            .await?;
        if let Ok(mut transports) = self.inner.transports.lock() {
            transports.insert(info.id, TransportMeta::default());
        }
        let ice_candidates = host_candidates(
            &self.inner.candidate_ips,
            info.port,
            self.inner.worker.tcp_port(),
            options,
        );
        let fingerprints = info
            .fingerprints
            .iter()
            .filter_map(|f| {
                let algorithm = match f.algorithm.as_str() {
                    "sha-1" => FingerprintAlgorithm::Sha1,
                    "sha-224" => FingerprintAlgorithm::Sha224,
                    "sha-256" => FingerprintAlgorithm::Sha256,
                    "sha-384" => FingerprintAlgorithm::Sha384,
                    "sha-512" => FingerprintAlgorithm::Sha512,
                    _ => return None,
                };
                Some(DtlsFingerprint {
                    algorithm,
                    value: f.value.clone(),
                })
            })
            .collect();
        Ok(WebRtcTransportParams {
            id: info.id,
            ice_parameters: IceParameters {
                username_fragment: info.ice.ufrag,
                password: info.ice.pwd,
                ice_lite: true,
            },
            ice_candidates,
            dtls_parameters: DtlsParameters {
                role: Some(WireDtlsRole::Auto),
                fingerprints,
            },
        })
    }

    /// Creates a plain RTP transport (own UDP port, and one for RTCP without `rtcpMux`).
    /// The answer names the first announced IP, as ICE candidates do.
    pub async fn create_plain_transport(
        &self,
        options: crate::plain::PlainOptions,
    ) -> Result<PlainTransportParams, RoomError> {
        let info = self
            .on_worker(move |e, c| e.create_plain_transport(c.router_id, options, c.now, c.out))
            .await?;
        if let Ok(mut transports) = self.inner.transports.lock() {
            transports.insert(info.id, TransportMeta::default());
        }
        Ok(PlainTransportParams {
            id: info.id,
            ip: self
                .inner
                .candidate_ips
                .first()
                .copied()
                .unwrap_or(info.local.ip()),
            port: info.local.port(),
            rtcp_port: info.local_rtcp.map(|a| a.port()),
            srtp: info.srtp,
        })
    }

    /// Points a plain transport at its remote (addresses, SRTP key).
    pub async fn connect_plain_transport(
        &self,
        id: TransportId,
        remote: crate::engine::PlainRemote,
    ) -> Result<(), RoomError> {
        self.on_worker(move |e, c| e.connect_plain_transport(c.router_id, id, remote, c.now, c.out))
            .await
    }

    /// `connectTransport`: the client's DTLS parameters.
    pub async fn connect_transport(
        &self,
        id: TransportId,
        params: &DtlsParameters,
    ) -> Result<(), RoomError> {
        if params.fingerprints.is_empty() {
            return Err(RoomError::Invalid(
                "dtlsParameters.fingerprints: empty".into(),
            ));
        }
        // The client's role; `auto` makes the server the DTLS client, as mediasoup does.
        let remote_role = match params.role {
            Some(WireDtlsRole::Client) => DtlsRole::Client,
            Some(WireDtlsRole::Server) | Some(WireDtlsRole::Auto) | None => DtlsRole::Server,
        };
        let fingerprints = params
            .fingerprints
            .iter()
            .map(|f| Fingerprint {
                algorithm: serde_json::to_value(f.algorithm)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                value: f.value.clone(),
            })
            .collect();
        self.on_worker(move |e, c| {
            e.connect_transport(c.router_id, id, remote_role, fingerprints, c.now, c.out)
        })
        .await
    }

    /// `restartIce`: new ICE credentials.
    pub async fn restart_ice(&self, id: TransportId) -> Result<IceParameters, RoomError> {
        let creds = self
            .on_worker(move |e, c| e.restart_ice(c.router_id, id))
            .await?;
        Ok(IceParameters {
            username_fragment: creds.ufrag,
            password: creds.pwd,
            ice_lite: true,
        })
    }

    /// `setMaxIncomingBitrate`: caps what the transport's client sends, with REMBs
    /// (`bitrate` in bit/s; 0 lifts the cap).
    pub async fn set_max_incoming_bitrate(
        &self,
        id: TransportId,
        bitrate: u32,
    ) -> Result<(), RoomError> {
        self.on_worker(move |e, c| e.set_max_incoming_bitrate(c.router_id, id, bitrate, c.out))
            .await
    }

    /// Closes a transport and everything on it; returns what was closed with it. The
    /// control side forgets the transport also when the worker no longer has it (a pipe
    /// between workers its worker closed).
    pub async fn close_transport(&self, id: TransportId) -> Result<Closed, RoomError> {
        let closed = self
            .on_worker(move |e, c| e.close_transport(c.router_id, id, c.now, c.out))
            .await;
        if let Ok(mut transports) = self.inner.transports.lock() {
            transports.remove(&id);
        }
        let closed = closed?;
        self.forget_producers(&closed.producers);
        Ok(closed)
    }

    /// Runs `f` on the control-side record of transport `id` (404 without one).
    fn with_transport<R>(
        &self,
        id: TransportId,
        f: impl FnOnce(&mut TransportMeta) -> R,
    ) -> Result<R, RoomError> {
        let mut transports = self
            .inner
            .transports
            .lock()
            .map_err(|_| RoomError::Internal("router state poisoned".into()))?;
        let meta = transports
            .get_mut(&id)
            .ok_or(RoomError::NotFound("transport"))?;
        Ok(f(meta))
    }

    /// Runs `f` on the control-side record of producer `id` (404 without one).
    fn with_producer<R>(
        &self,
        id: ProducerId,
        f: impl FnOnce(&ProducerMeta) -> Result<R, RoomError>,
    ) -> Result<R, RoomError> {
        let producers = self
            .inner
            .producers
            .lock()
            .map_err(|_| RoomError::Internal("router state poisoned".into()))?;
        f(producers.get(&id).ok_or(RoomError::NotFound("producer"))?)
    }

    fn forget_producers(&self, ids: &[ProducerId]) {
        if let Ok(mut map) = self.inner.producers.lock() {
            for id in ids {
                map.remove(id);
            }
        }
    }

    /// `produce`: validates the client's RTP parameters against the router and starts
    /// receiving them.
    pub async fn produce(
        &self,
        transport_id: TransportId,
        kind: MediaKind,
        rtp_parameters: RtpParameters,
        paused: bool,
    ) -> Result<ProducerId, RoomError> {
        self.produce_as(
            transport_id,
            ProducerId::new(),
            kind,
            rtp_parameters,
            paused,
        )
        .await
    }

    /// The end of a pipe: produces, as [`Router::produce`] does, what another router's
    /// [`Router::consume_pipe`] answered, under the id of the producer it stands for
    /// (mediasoup's `pipeToRouter` keeps the id too), so consumers here name that producer.
    pub async fn produce_piped(
        &self,
        transport_id: TransportId,
        id: ProducerId,
        kind: MediaKind,
        rtp_parameters: RtpParameters,
        paused: bool,
    ) -> Result<ProducerId, RoomError> {
        self.produce_as(transport_id, id, kind, rtp_parameters, paused)
            .await
    }

    async fn produce_as(
        &self,
        transport_id: TransportId,
        id: ProducerId,
        kind: MediaKind,
        mut rtp_parameters: RtpParameters,
        paused: bool,
    ) -> Result<ProducerId, RoomError> {
        ortc::validate_rtp_parameters(&rtp_parameters)?;
        let given = rtp_parameters.rtcp.cname.clone().filter(|c| !c.is_empty());
        rtp_parameters.rtcp.cname = Some(self.with_transport(transport_id, |meta| {
            meta.cname
                .get_or_insert_with(|| {
                    given.unwrap_or_else(|| {
                        uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
                    })
                })
                .clone()
        })?);
        if rtp_parameters.encodings.is_empty() {
            return Err(RoomError::Invalid("rtpParameters.encodings: empty".into()));
        }
        for codec in rtp_parameters.codecs.iter().filter(|c| !c.is_rtx()) {
            if MediaKind::from_mime_type(&codec.mime_type) != Some(kind) {
                return Err(RoomError::Invalid(format!(
                    "rtpParameters.codecs: {} does not match kind {}",
                    codec.mime_type,
                    kind.as_str()
                )));
            }
        }
        let mapping = ortc::get_producer_rtp_parameters_mapping(
            &rtp_parameters,
            &self.inner.caps,
            random_ssrc(),
        )?;
        let consumable =
            ortc::get_consumable_rtp_parameters(kind, &rtp_parameters, &self.inner.caps, &mapping)?;
        let spec = produce_spec(kind, &rtp_parameters, paused);
        let producer_type = spec.producer_type;
        let id = self
            .on_worker(move |e, c| e.produce_as(c.router_id, transport_id, id, spec, c.now))
            .await?;
        if let Ok(mut map) = self.inner.producers.lock() {
            map.insert(
                id,
                ProducerMeta {
                    kind,
                    rtp_parameters,
                    consumable,
                    mapping,
                    producer_type,
                },
            );
        }
        Ok(id)
    }

    /// Pauses or resumes a producer; returns the consumers whose producer-paused state
    /// changed.
    pub async fn set_producer_paused(
        &self,
        id: ProducerId,
        paused: bool,
    ) -> Result<Vec<ConsumerId>, RoomError> {
        self.on_worker(move |e, c| e.set_producer_paused(c.router_id, id, paused, c.now, c.out))
            .await
    }

    /// Closes a producer; returns it and the consumers closed with it.
    pub async fn close_producer(&self, id: ProducerId) -> Result<Closed, RoomError> {
        let consumers = self
            .on_worker(move |e, c| e.close_producer(c.router_id, id))
            .await?;
        self.forget_producers(&[id]);
        Ok(Closed {
            producers: vec![id],
            consumers: consumers
                .into_iter()
                .map(|consumer_id| ClosedConsumer {
                    consumer_id,
                    producer_id: id,
                })
                .collect(),
            ..Closed::default()
        })
    }

    /// Whether a device with these capabilities can consume a producer.
    pub fn can_consume(&self, producer_id: ProducerId, caps: &RtpCapabilities) -> bool {
        let Ok(map) = self.inner.producers.lock() else {
            return false;
        };
        map.get(&producer_id)
            .is_some_and(|m| ortc::can_consume(&m.consumable, caps).unwrap_or(false))
    }

    /// `consume`: a consumer of a producer on a transport, for a device with `caps`.
    pub async fn consume(
        &self,
        transport_id: TransportId,
        producer_id: ProducerId,
        caps: &RtpCapabilities,
        paused: bool,
        preferred_layers: Option<(u8, Option<u8>)>,
    ) -> Result<ConsumerParams, RoomError> {
        ortc::validate_rtp_capabilities(caps)?;
        // Two SSRCs of the transport's sequence, media and RTX (the second is unused when
        // the codec has no RTX).
        let (ssrc, rtx_ssrc) = self.with_transport(transport_id, |meta| {
            (meta.ssrcs.next_ssrc(), meta.ssrcs.next_ssrc())
        })?;
        let (kind, mut params, spec, consumer_type) = self.with_producer(producer_id, |meta| {
            if !ortc::can_consume(&meta.consumable, caps)? {
                return Err(RoomError::Invalid(
                    "rtpCapabilities: cannot consume this producer".into(),
                ));
            }
            let mut params = ortc::get_consumer_rtp_parameters(&meta.consumable, caps, false)?;
            // Forwarded packets carry the sender's MID value, which means nothing to the
            // receiver: the MID extension is removed and receivers demultiplex by SSRC.
            params.header_extensions.retain(|e| e.uri != uri::MID);
            let rtx_codec = params
                .codecs
                .iter()
                .find(|c| c.is_rtx())
                .map(|c| c.payload_type);
            let rtx = rtx_codec.map(|payload_type| RtxOut {
                ssrc: rtx_ssrc,
                payload_type,
            });
            let encoding = params.encodings.first().cloned().unwrap_or_default();
            params.encodings = vec![RtpEncodingParameters {
                ssrc: Some(ssrc),
                rtx: rtx.map(|r| RtxParameters { ssrc: r.ssrc }),
                ..encoding
            }];
            params.rtcp.cname = meta
                .consumable
                .rtcp
                .cname
                .clone()
                .or_else(|| meta.rtp_parameters.rtcp.cname.clone());
            let spec = consume_spec(meta, &params, ssrc, rtx, paused, preferred_layers);
            Ok((meta.kind, params, spec, meta.producer_type))
        })?;
        if params.codecs.iter().all(|c| c.is_rtx()) {
            return Err(RoomError::Invalid(
                "rtpCapabilities: no codec in common".into(),
            ));
        }
        // Each consumer gets its own MID on its transport (mediasoup-client names the m-section
        // after it).
        params.mid = Some(self.with_transport(transport_id, |meta| {
            let mid = meta.next_mid;
            meta.next_mid += 1;
            mid.to_string()
        })?);
        let Consumed {
            id,
            producer_paused,
        } = self
            .on_worker(move |e, c| {
                e.consume(c.router_id, transport_id, producer_id, spec, c.now, c.out)
            })
            .await?;
        Ok(ConsumerParams {
            id,
            producer_id,
            kind,
            rtp_parameters: params,
            consumer_type,
            producer_paused,
        })
    }

    /// A pipe consumer of a producer on a plain transport that leads to another node's
    /// router (mediasoup's `pipeToRouter`, consuming side): every stream of the producer
    /// is forwarded as the producer sends it, under SSRCs drawn here. Returns the consumer
    /// and the RTP parameters the other node's router produces the pipe producer with
    /// ([`Router::produce`] on its end of the pipe): the producer's own codecs, header
    /// extensions, encodings (RID kept for the layer order) and CNAME, each encoding under
    /// its pipe SSRC, without RTX (repairs cross the pipe on the media SSRCs) or MID.
    pub async fn consume_pipe(
        &self,
        transport_id: TransportId,
        producer_id: ProducerId,
    ) -> Result<PipeConsumerParams, RoomError> {
        let (kind, mut rtp_parameters) = self.pipe_parameters(producer_id)?;
        // From the transport's SSRC sequence, as every consumer's: unique on the pipe.
        let ssrcs = self.with_transport(transport_id, |meta| {
            set_pipe_ssrcs(&mut rtp_parameters, &mut meta.ssrcs)
        })?;
        let Consumed {
            id,
            producer_paused,
        } = self
            .on_worker(move |e, c| {
                e.consume_pipe(c.router_id, transport_id, producer_id, &ssrcs, c.now, c.out)
            })
            .await?;
        Ok(PipeConsumerParams {
            id,
            kind,
            rtp_parameters,
            producer_paused,
        })
    }

    /// The kind of `producer_id` and the RTP parameters a pipe producer stands for it with
    /// (see [`Router::consume_pipe`]), but for the SSRCs ([`set_pipe_ssrcs`]).
    fn pipe_parameters(
        &self,
        producer_id: ProducerId,
    ) -> Result<(MediaKind, RtpParameters), RoomError> {
        let (kind, mut rtp_parameters) = self.with_producer(producer_id, |meta| {
            Ok((meta.kind, meta.rtp_parameters.clone()))
        })?;
        rtp_parameters.mid = None;
        rtp_parameters.codecs.retain(|c| !c.is_rtx());
        rtp_parameters
            .header_extensions
            .retain(|e| e.uri != uri::MID);
        Ok((kind, rtp_parameters))
    }

    /// Pipes a producer of this router to `other`, a router on another worker of the
    /// process (mediasoup's `pipeToRouter` within one process): a pipe transport on each
    /// router over a pair of rings ([`crate::worker_pipe`]), a pipe consumer of the
    /// producer here that forwards every stream (all simulcast layers) as the producer
    /// sends it, under pipe SSRCs, and on `other` a pipe producer with the RTP parameters
    /// of [`Router::consume_pipe`] and the producer's id, which `other`'s consumers
    /// consume as any producer.
    /// Keyframe requests and NACKs of the pipe producer cross back. Closing the producer
    /// here closes the pipe producer there, and closing the pipe producer there releases
    /// the pipe here ([`MediaEvent::WorkerPipeClosed`] tells the side that did not ask).
    pub async fn pipe_producer_to(
        &self,
        producer_id: ProducerId,
        other: &Router,
    ) -> Result<WorkerPipe, RoomError> {
        if other.worker_index() == self.worker_index() {
            return Err(RoomError::Invalid(
                "a producer is piped to a router on another worker".into(),
            ));
        }
        let (kind, mut rtp_parameters) = self.pipe_parameters(producer_id)?;
        let ssrcs = set_pipe_ssrcs(&mut rtp_parameters, &mut SsrcSequence::random());
        let (transport_id, other_transport_id) = self.open_worker_pipe(other).await?;
        // Closing either side on failure closes the other.
        let consumed = match self
            .on_worker(move |e, c| {
                e.consume_pipe(c.router_id, transport_id, producer_id, &ssrcs, c.now, c.out)
            })
            .await
        {
            Ok(consumed) => consumed,
            Err(e) => {
                let _ = self.close_transport(transport_id).await;
                return Err(e);
            }
        };
        let produced = other
            .produce_as(
                other_transport_id,
                producer_id,
                kind,
                rtp_parameters,
                consumed.producer_paused,
            )
            .await;
        match produced {
            Ok(pipe_producer) => Ok(WorkerPipe {
                producer_id: pipe_producer,
                consumer_id: consumed.id,
                transport_id,
                other_transport_id,
            }),
            Err(e) => {
                let _ = other.close_transport(other_transport_id).await;
                Err(e)
            }
        }
    }

    /// Opens an empty pipe between this router and `other`, a router on another worker:
    /// a pipe transport on each over a pair of rings ([`crate::worker_pipe`]); returns
    /// (this side, `other`'s side). It closes once it carries nothing after having carried
    /// something, or when either side is closed.
    pub async fn open_worker_pipe(
        &self,
        other: &Router,
    ) -> Result<(TransportId, TransportId), RoomError> {
        if other.worker_index() == self.worker_index() {
            return Err(RoomError::Invalid(
                "a pipe joins routers of two workers".into(),
            ));
        }
        let (here, there) =
            crate::worker_pipe::pipe(self.inner.worker.waker(), other.inner.worker.waker());
        let transport_id = self
            .on_worker(move |e, c| e.create_worker_pipe_transport(c.router_id, here, c.now, c.out))
            .await?;
        // On failure from here on, `there` is dropped, which closes this side.
        let other_transport_id = other
            .on_worker(move |e, c| e.create_worker_pipe_transport(c.router_id, there, c.now, c.out))
            .await?;
        for (router, id) in [(self, transport_id), (other, other_transport_id)] {
            if let Ok(mut transports) = router.inner.transports.lock() {
                transports.insert(id, TransportMeta::default());
            }
        }
        Ok((transport_id, other_transport_id))
    }

    /// Pipes a data producer of this router to `other` over an open pipe
    /// ([`Router::open_worker_pipe`]: `here` on this router, `there` on `other`): a pipe
    /// data consumer here, and there a data producer with the same id and reliability,
    /// which `other`'s data consumers consume. Its messages cross in chunks of a datagram
    /// (a chunk dropped at a full ring drops its message). Returns the pipe data consumer.
    pub async fn pipe_data_producer_to(
        &self,
        data_producer_id: DataProducerId,
        (here, there): (TransportId, TransportId),
        other: &Router,
    ) -> Result<DataConsumerId, RoomError> {
        let consumed = self
            .on_worker(move |e, c| e.consume_data(c.router_id, here, data_producer_id))
            .await?;
        let produced = other
            .on_worker(move |e, c| {
                // No rate limit: the data producer's own applies before the pipe.
                e.produce_data(
                    c.router_id,
                    there,
                    Some(data_producer_id),
                    consumed.stream_id,
                    consumed.reliability,
                    0,
                    c.now,
                )
            })
            .await;
        match produced {
            Ok(_) => Ok(consumed.id),
            Err(e) => {
                let _ = self.close_data_consumer(consumed.id).await;
                Err(e)
            }
        }
    }

    /// Pauses or resumes a consumer.
    pub async fn set_consumer_paused(&self, id: ConsumerId, paused: bool) -> Result<(), RoomError> {
        self.on_worker(move |e, c| e.set_consumer_paused(c.router_id, id, paused, c.now, c.out))
            .await
    }

    /// `setConsumerPreferredLayers`.
    pub async fn set_consumer_preferred_layers(
        &self,
        id: ConsumerId,
        spatial: u8,
        temporal: Option<u8>,
    ) -> Result<(), RoomError> {
        self.on_worker(move |e, c| {
            e.set_consumer_preferred_layers(c.router_id, id, spatial, temporal, c.now, c.out)
        })
        .await
    }

    /// `setConsumerPriority`.
    pub async fn set_consumer_priority(
        &self,
        id: ConsumerId,
        priority: u8,
    ) -> Result<(), RoomError> {
        self.on_worker(move |e, c| e.set_consumer_priority(c.router_id, id, priority))
            .await
    }

    /// `requestConsumerKeyFrame`.
    pub async fn request_consumer_key_frame(&self, id: ConsumerId) -> Result<(), RoomError> {
        self.on_worker(move |e, c| e.request_consumer_key_frame(c.router_id, id, c.now, c.out))
            .await
    }

    /// Closes a consumer.
    pub async fn close_consumer(&self, id: ConsumerId) -> Result<(), RoomError> {
        self.on_worker(move |e, c| e.close_consumer(c.router_id, id))
            .await
    }

    /// `getTransportStats`.
    pub async fn transport_stats(&self, id: TransportId) -> Result<serde_json::Value, RoomError> {
        self.on_worker(move |e, c| e.transport_stats(c.router_id, id, c.out))
            .await
    }

    /// `getProducerStats`.
    pub async fn producer_stats(&self, id: ProducerId) -> Result<serde_json::Value, RoomError> {
        self.on_worker(move |e, c| e.producer_stats(c.router_id, id, c.now))
            .await
    }

    /// `getConsumerStats`.
    pub async fn consumer_stats(&self, id: ConsumerId) -> Result<serde_json::Value, RoomError> {
        self.on_worker(move |e, c| e.consumer_stats(c.router_id, id))
            .await
    }

    /// `createTransport` with `sctpCapabilities`: the transport runs SCTP over its DTLS for
    /// data channels, messages of at most `max_message_size` bytes. Returns the
    /// `sctpParameters` for the client.
    pub async fn enable_sctp(
        &self,
        id: TransportId,
        max_message_size: u32,
    ) -> Result<SctpParameters, RoomError> {
        let config = SctpConfig { max_message_size };
        self.on_worker(move |e, c| e.enable_sctp(c.router_id, id, config, c.now, c.out))
            .await?;
        Ok(SctpParameters {
            port: SCTP_PORT,
            os: SCTP_STREAMS,
            mis: SCTP_STREAMS,
            max_message_size,
        })
    }

    /// `produceData`: the client sends data channel messages on the stream of
    /// `params`, at most `messages_per_second` (0: no limit; one second's worth at once).
    pub async fn produce_data(
        &self,
        transport_id: TransportId,
        params: &SctpStreamParameters,
        messages_per_second: u32,
    ) -> Result<DataProducerId, RoomError> {
        let reliability = reliability_of(params)?;
        let stream_id = params.stream_id;
        self.on_worker(move |e, c| {
            e.produce_data(
                c.router_id,
                transport_id,
                None,
                stream_id,
                reliability,
                messages_per_second,
                c.now,
            )
        })
        .await
    }

    /// `consumeData`: a data consumer of a data producer on a transport; returns its id
    /// and the stream parameters the client opens its channel with.
    pub async fn consume_data(
        &self,
        transport_id: TransportId,
        data_producer_id: DataProducerId,
    ) -> Result<(DataConsumerId, SctpStreamParameters), RoomError> {
        let consumed = self
            .on_worker(move |e, c| e.consume_data(c.router_id, transport_id, data_producer_id))
            .await?;
        let r = consumed.reliability;
        Ok((
            consumed.id,
            SctpStreamParameters {
                stream_id: consumed.stream_id,
                ordered: Some(!r.unordered),
                max_packet_life_time: r.max_packet_life_time,
                max_retransmits: r.max_retransmits,
            },
        ))
    }

    /// Closes a data producer; returns the data consumers closed with it.
    pub async fn close_data_producer(
        &self,
        id: DataProducerId,
    ) -> Result<Vec<DataConsumerId>, RoomError> {
        self.on_worker(move |e, c| e.close_data_producer(c.router_id, id, c.now, c.out))
            .await
    }

    /// Closes a data consumer.
    pub async fn close_data_consumer(&self, id: DataConsumerId) -> Result<(), RoomError> {
        self.on_worker(move |e, c| e.close_data_consumer(c.router_id, id, c.now, c.out))
            .await
    }

    /// Bandwidth toward the clients of the router's transports that estimate it, and what
    /// the allocation gives each of their consumers (`/api/stats`).
    pub async fn bandwidth_stats(&self) -> Result<serde_json::Value, RoomError> {
        self.on_worker(move |e, c| e.bandwidth_stats(c.router_id))
            .await
    }

    /// Closes the router and everything in it.
    pub async fn close(&self) {
        let router_id = self.inner.id;
        let _ = self
            .inner
            .worker
            .exec(move |engine, now, out| engine.close_router(router_id, now, out))
            .await;
        if let Ok(mut map) = self.inner.producers.lock() {
            map.clear();
        }
        if let Ok(mut map) = self.inner.transports.lock() {
            map.clear();
        }
    }
}

/// The delivery of a data producer's stream, as mediasoup reads `sctpStreamParameters`:
/// reliable and ordered by default; a lifetime or a retransmission limit (not both) makes
/// it partially reliable and, unless `ordered` is given, unordered.
fn reliability_of(p: &SctpStreamParameters) -> Result<Reliability, RoomError> {
    if p.max_packet_life_time.is_some() && p.max_retransmits.is_some() {
        return Err(RoomError::Invalid(
            "sctpStreamParameters: maxPacketLifeTime and maxRetransmits are exclusive".into(),
        ));
    }
    let partial = p.max_packet_life_time.is_some() || p.max_retransmits.is_some();
    Ok(Reliability {
        unordered: !p.ordered.unwrap_or(!partial),
        max_retransmits: p.max_retransmits,
        max_packet_life_time: p.max_packet_life_time,
    })
}

/// Puts each encoding of a pipe producer's parameters under the next SSRC of `ssrcs`,
/// without RTX (repairs cross the pipe on the media SSRCs); returns those SSRCs.
fn set_pipe_ssrcs(params: &mut RtpParameters, ssrcs: &mut SsrcSequence) -> Vec<u32> {
    params
        .encodings
        .iter_mut()
        .map(|e| {
            let ssrc = ssrcs.next_ssrc();
            e.ssrc = Some(ssrc);
            e.rtx = None;
            ssrc
        })
        .collect()
}

fn random_ssrc() -> u32 {
    // Avoid 0, which some stacks treat as "unset".
    rand::random::<u32>().max(1)
}

fn ext_id(params: &RtpParameters, wanted: &str) -> u8 {
    params
        .header_extensions
        .iter()
        .find(|e| e.uri == wanted)
        .map_or(0, |e| e.id)
}

/// The worker's view of a producer from its RTP parameters (already validated).
fn produce_spec(kind: MediaKind, params: &RtpParameters, paused: bool) -> ProduceSpec {
    let mut codecs = Vec::new();
    let mut rtx = Vec::new();
    for c in &params.codecs {
        if c.is_rtx() {
            if let Some(apt) = c
                .parameters
                .get("apt")
                .and_then(|v| v.as_i64())
                .and_then(|v| u8::try_from(v).ok())
            {
                rtx.push(RtxMapping {
                    payload_type: c.payload_type,
                    apt,
                });
            }
        } else {
            codecs.push(CodecSpec {
                payload_type: c.payload_type,
                info: CodecInfo {
                    clock_rate: c.clock_rate,
                    codec: VideoCodec::from_mime_type(&c.mime_type),
                },
            });
        }
    }
    let encodings = params
        .encodings
        .iter()
        .map(|e| EncodingSpec {
            ssrc: e.ssrc,
            rtx_ssrc: e.rtx.map(|r| r.ssrc),
            rid: e.rid.clone(),
        })
        .collect::<Vec<_>>();
    // A single stream with spatial layers (VP9 `L3T3_KEY`, `L3T3`) is `svc`: its consumers
    // drop the spatial and temporal layers above theirs. Only VP9 carries the layer
    // indices the worker reads; another codec's SVC stream is forwarded whole (`simple`).
    let vp9 = params
        .codecs
        .iter()
        .find(|c| !c.is_rtx())
        .is_some_and(|c| c.mime_type.eq_ignore_ascii_case("video/vp9"));
    let producer_type = match ortc::producer_type(params) {
        ProducerType::Svc if !vp9 => ProducerType::Simple,
        t => t,
    };
    let mode = ortc::parse_scalability_mode(
        params
            .encodings
            .first()
            .and_then(|e| e.scalability_mode.as_deref()),
    );
    let svc = match producer_type {
        ProducerType::Svc if mode.ksvc => SvcMode::KeyOnly,
        ProducerType::Svc => SvcMode::Full,
        _ => SvcMode::None,
    };
    ProduceSpec {
        kind,
        codecs,
        rtx,
        encodings,
        mid: params.mid.clone(),
        ext_ids: ExtensionIds {
            mid: ext_id(params, uri::MID),
            rid: ext_id(params, uri::RID),
            repaired_rid: ext_id(params, uri::REPAIRED_RID),
            audio_level: ext_id(params, uri::SSRC_AUDIO_LEVEL),
            transport_wide_cc: ext_id(params, uri::TRANSPORT_WIDE_CC_01),
            // Only read on the way out (written per hop), never from the producer.
            abs_send_time: 0,
        },
        paused,
        producer_type,
        svc,
    }
}

/// The worker's view of a consumer: payload type and extension id translation tables.
fn consume_spec(
    meta: &ProducerMeta,
    params: &RtpParameters,
    ssrc: u32,
    rtx: Option<RtxOut>,
    paused: bool,
    preferred_layers: Option<(u8, Option<u8>)>,
) -> ConsumeSpec {
    let mut pt_map = [crate::forwarder::NO_PT; 128];
    for m in &meta.mapping.codecs {
        let offered = params
            .codecs
            .iter()
            .any(|c| !c.is_rtx() && c.payload_type == m.mapped_payload_type);
        if offered && let Some(slot) = pt_map.get_mut(m.payload_type as usize) {
            *slot = m.mapped_payload_type;
        }
    }
    let mut ext_map = [0u8; 256];
    for e in &meta.rtp_parameters.header_extensions {
        if let Some(out) = params.header_extensions.iter().find(|c| c.uri == e.uri) {
            ext_map[e.id as usize] = out.id;
        }
    }
    let twcc_ext = ext_id(params, uri::TRANSPORT_WIDE_CC_01);
    let abs_send_time_ext = ext_id(params, uri::ABS_SEND_TIME);
    let clock_rate = params
        .codecs
        .iter()
        .find(|c| !c.is_rtx())
        .map_or(90000, |c| c.clock_rate);
    ConsumeSpec {
        pt_map,
        ext_map,
        ssrc,
        rtx,
        clock_rate,
        paused,
        preferred_spatial: preferred_layers.map(|l| l.0),
        preferred_temporal: preferred_layers.and_then(|l| l.1),
        twcc_ext,
        abs_send_time_ext,
        vp8_rewrite: params
            .codecs
            .iter()
            .find(|c| !c.is_rtx())
            .is_some_and(|c| c.mime_type.eq_ignore_ascii_case("video/vp8")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(c: &[IceCandidate]) -> Vec<(TransportProtocol, String, u16)> {
        c.iter()
            .map(|c| (c.protocol, c.address.clone(), c.port))
            .collect()
    }

    #[test]
    fn udp_wins_unless_tcp_is_preferred_or_forced() {
        let ips: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        let udp = TransportProtocol::Udp;
        let tcp = TransportProtocol::Tcp;
        let default = host_candidates(&ips, 40000, 40001, CandidateOptions::default());
        assert_eq!(
            summary(&default),
            [
                (udp, "192.0.2.1".into(), 40000),
                (udp, "2001:db8::1".into(), 40000),
                (tcp, "192.0.2.1".into(), 40001),
                (tcp, "2001:db8::1".into(), 40001),
            ]
        );
        // Priorities strictly decrease, and TCP ones carry tcptype passive.
        assert!(default.windows(2).all(|w| w[0].priority > w[1].priority));
        assert!(
            default
                .iter()
                .all(|c| (c.protocol == tcp) == (c.tcp_type == Some(IceCandidateTcpType::Passive)))
        );
        // Host type preference 126, component 1.
        assert!(
            default
                .iter()
                .all(|c| c.priority >> 24 == 126 && c.priority & 0xff == 255)
        );
        let prefer = host_candidates(
            &ips,
            40000,
            40001,
            CandidateOptions {
                prefer_tcp: true,
                ..Default::default()
            },
        );
        assert_eq!(summary(&prefer)[0], (tcp, "192.0.2.1".into(), 40001));
        assert_eq!(summary(&prefer)[2], (udp, "192.0.2.1".into(), 40000));
        let force = host_candidates(
            &ips,
            40000,
            40001,
            CandidateOptions {
                force_tcp: true,
                ..Default::default()
            },
        );
        assert_eq!(
            summary(&force),
            [
                (tcp, "192.0.2.1".into(), 40001),
                (tcp, "2001:db8::1".into(), 40001),
            ]
        );
    }

    #[test]
    fn transport_ssrcs_never_repeat_and_skip_reserved_values() {
        // A step of 1 from just below the reserved values walks over all of them.
        let mut walk = SsrcSequence::new(u32::MAX - 1, 0);
        let got: Vec<u32> = (0..4).map(|_| walk.next_ssrc()).collect();
        assert_eq!(got, [u32::MAX - 1, u32::MAX, 2, 3]);
        let mut walk = SsrcSequence::new(1230, 1);
        let got: Vec<u32> = (0..6).map(|_| walk.next_ssrc()).collect();
        assert_eq!(got, [1230, 1231, 1232, 1233, 1235, 1236]);
        // Random sequences: no SSRC twice over many consumers' worth.
        for _ in 0..4 {
            let mut seq = SsrcSequence::random();
            let mut seen = std::collections::HashSet::new();
            for _ in 0..200_000 {
                let ssrc = seq.next_ssrc();
                assert!(!SsrcSequence::RESERVED.contains(&ssrc));
                assert!(seen.insert(ssrc), "{ssrc} repeated");
            }
        }
    }

    fn params(
        ordered: Option<bool>,
        life: Option<u16>,
        rexmit: Option<u16>,
    ) -> SctpStreamParameters {
        SctpStreamParameters {
            stream_id: 1,
            ordered,
            max_packet_life_time: life,
            max_retransmits: rexmit,
        }
    }

    #[test]
    fn stream_reliability_follows_mediasoup_defaults() {
        let r = |p| reliability_of(&p).unwrap();
        assert_eq!(r(params(None, None, None)), Reliability::default());
        assert_eq!(
            r(params(None, None, Some(0))),
            Reliability {
                unordered: true,
                max_retransmits: Some(0),
                max_packet_life_time: None
            }
        );
        assert!(!r(params(Some(true), Some(500), None)).unordered);
        assert!(r(params(Some(false), None, None)).unordered);
        assert!(reliability_of(&params(None, Some(1), Some(1))).is_err());
    }
}
