//! The engine on simulated time and a simulated network (feature `sim`, for tests,
//! benchmarks and fuzzers; never in the server build).
//!
//! [`SimServer`] is an [`Engine`] as a testkit [`Endpoint`]; [`SimRoom`] puts one in a
//! [`Sim`] with one router and lets a test add clients (testkit [`SimClient`]s that do ICE,
//! DTLS and SRTP against it), producers and consumers, then run simulated seconds in
//! milliseconds of wall time:
//!
//! ```
//! use std::time::Duration;
//! use ferrosoup_room::sim::{SimRoom, vp8_consumer, vp8_producer};
//! use ferrosoup_testkit::LinkConfig;
//!
//! let mut room = SimRoom::new(LinkConfig::default().with_delay(Duration::from_millis(10)));
//! let alice = room.join();
//! let bob = room.join();
//! let producer = room.produce(alice, vp8_producer(1111, Some(2222)));
//! let consumer = room.consume(bob, producer, vp8_consumer(3333, Some(4444)));
//! room.run_for(Duration::from_secs(1));
//! assert!(room.engine().counters().rtcp_out > 0);
//! # let _ = consumer;
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use ferrosoup_proto::ortc::ProducerType;
use ferrosoup_proto::rtp_parameters::MediaKind;
use ferrosoup_rtc::dtls::{DtlsCertificate, DtlsRole};
use ferrosoup_rtc::rtp::{ExtensionIds, VideoCodec};
use ferrosoup_testkit::{Datagram, Endpoint, LinkConfig, Sim, SimClient, SimClientConfig};

use crate::consumer::RtxOut;
use crate::engine::PlainRemote;
use crate::engine::{CodecSpec, ConsumeSpec, EncodingSpec, Engine, ProduceSpec, RtxMapping};
use crate::events::MediaEvent;
use crate::forwarder::NO_PT;
use crate::ids::{ConsumerId, ProducerId, RouterId, TransportId};
use crate::layers::SvcMode;
use crate::plain::{PlainOptions, SrtpProfile};
use crate::producer::CodecInfo;
use crate::settings::IceTimeouts;
use crate::transmit::Collect;

/// Opus payload type (producers and consumers alike).
pub const OPUS_PT: u8 = 111;
/// VP8 payload type.
pub const VP8_PT: u8 = 96;
/// RTX payload type of VP8.
pub const VP8_RTX_PT: u8 = 97;
/// VP9 payload type.
pub const VP9_PT: u8 = 98;
/// RTX payload type of VP9.
pub const VP9_RTX_PT: u8 = 99;
/// Header extension ids every simulated client uses (producing and consuming).
pub const EXT_IDS: ExtensionIds = ExtensionIds {
    mid: 1,
    rid: 0,
    repaired_rid: 0,
    abs_send_time: 2,
    transport_wide_cc: 3,
    audio_level: 4,
};
/// Where the simulated server listens.
pub const SERVER_ADDR: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
    40000,
);

/// An [`Engine`] on the simulated network.
pub struct SimServer {
    /// The engine.
    pub engine: Engine,
    addr: SocketAddr,
    out: Collect,
    events: UnboundedReceiver<MediaEvent>,
}

impl SimServer {
    /// An empty engine listening on `addr`, started at `now`.
    pub fn new(addr: SocketAddr, now: Instant, ice_timeouts: IceTimeouts) -> Self {
        let certificate =
            Arc::new(DtlsCertificate::generate().expect("a certificate can always be made")); // ok: test support, never in the server
        let (tx, events) = unbounded_channel();
        Self {
            engine: Engine::new(
                addr.port(),
                certificate,
                tx,
                ice_timeouts,
                now,
                SystemTime::now(),
            ),
            addr,
            out: Collect::with_socket_ip(addr.ip()),
            events,
        }
    }

    /// The address of the server's socket (the worker socket or a plain transport's) that
    /// sends to `to`.
    fn source_for(&self, to: SocketAddr) -> SocketAddr {
        self.out
            .routes
            .get(&to)
            .and_then(|s| self.out.sockets.iter().find(|(x, _)| x == s))
            .map_or(self.addr, |&(_, a)| a)
    }

    /// The events the engine reported since the last call.
    pub fn events(&mut self) -> Vec<MediaEvent> {
        std::iter::from_fn(|| self.events.try_recv().ok()).collect()
    }
}

impl Endpoint for SimServer {
    fn owns(&self, addr: SocketAddr) -> bool {
        addr == self.addr || self.out.sockets.iter().any(|&(_, a)| a == addr)
    }

    fn receive(&mut self, now: Instant, mut datagram: Datagram) {
        let plain = self
            .out
            .sockets
            .iter()
            .find(|&&(_, a)| a == datagram.to)
            .map(|&(s, _)| s);
        match plain {
            Some(socket) => self.engine.handle_plain_datagram(
                now,
                socket,
                datagram.from,
                &mut datagram.data,
                &mut self.out,
            ),
            None => {
                self.engine
                    .handle_datagram(now, datagram.from, &mut datagram.data, &mut self.out)
            }
        }
    }

    fn timeout(&mut self, now: Instant) {
        self.engine.handle_timeout(now, &mut self.out);
    }

    fn transmit(&mut self) -> Option<Datagram> {
        let sent = self.out.pop()?;
        Some(Datagram::new(self.source_for(sent.to), sent.to, sent.data))
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.engine.poll_timeout()
    }
}

/// A client of a [`SimRoom`]: its index and its transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Index in [`SimRoom::clients`].
    pub index: usize,
    /// Its transport on the server.
    pub transport: TransportId,
}

/// One router of an engine on a simulated network, with its clients.
pub struct SimRoom {
    /// Clock and network.
    pub sim: Sim,
    /// The engine.
    pub server: SimServer,
    /// The clients, in the order they joined.
    pub clients: Vec<SimClient>,
    /// The router every client joins.
    pub router: RouterId,
}

impl SimRoom {
    /// A room whose links all start as `link` (change one with `sim.net.set_path`).
    pub fn new(link: LinkConfig) -> Self {
        Self::with_ice_timeouts(link, IceTimeouts::default())
    }

    /// A room whose engine uses these ICE timeouts.
    pub fn with_ice_timeouts(link: LinkConfig, ice_timeouts: IceTimeouts) -> Self {
        let sim = Sim::new(link);
        let mut server = SimServer::new(SERVER_ADDR, sim.now(), ice_timeouts);
        let router = RouterId::new();
        server.engine.create_router(router);
        Self {
            sim,
            server,
            clients: Vec::new(),
            router,
        }
    }

    /// Simulated now.
    pub fn now(&self) -> Instant {
        self.sim.now()
    }

    /// The engine.
    pub fn engine(&mut self) -> &mut Engine {
        &mut self.server.engine
    }

    /// The address the next client gets.
    pub fn next_client_addr(&self) -> SocketAddr {
        let n = self.clients.len() as u32 + 1;
        SocketAddr::from(([10, 1, (n >> 8) as u8, n as u8], 5000))
    }

    /// A new client with a transport, connected (ICE + DTLS + SRTP) on the simulated
    /// network before this returns.
    ///
    /// # Panics
    ///
    /// If it does not connect within 30 simulated seconds.
    pub fn join(&mut self) -> Peer {
        let peer = self.join_unconnected();
        let deadline = self.now() + Duration::from_secs(30);
        while !self.clients[peer.index].is_connected() {
            assert!(
                self.step(deadline),
                "client {} did not connect: {:?}",
                peer.index,
                self.clients[peer.index].dtls_failure()
            );
        }
        peer
    }

    /// A new client with a transport and `connectTransport` done, but no packet exchanged.
    pub fn join_unconnected(&mut self) -> Peer {
        let now = self.now();
        let addr = self.next_client_addr();
        let index = self.clients.len();
        let (client, transport) = add_client(&mut self.server, self.router, addr, index, now);
        self.clients.push(client);
        Peer { index, transport }
    }

    /// Adds a producer on a peer's transport.
    pub fn produce(&mut self, peer: Peer, spec: ProduceSpec) -> ProducerId {
        let now = self.now();
        self.server
            .engine
            .produce(self.router, peer.transport, spec, now)
            .expect("a valid producer") // ok: test support, never in the server
    }

    /// Adds a consumer of `producer` on a peer's transport.
    pub fn consume(&mut self, peer: Peer, producer: ProducerId, spec: ConsumeSpec) -> ConsumerId {
        let now = self.now();
        let SimServer { engine, out, .. } = &mut self.server;
        engine
            .consume(self.router, peer.transport, producer, spec, now, out)
            .expect("a valid consumer") // ok: test support, never in the server
            .id
    }

    /// `setMaxIncomingBitrate` on a peer's transport.
    pub fn set_max_incoming_bitrate(&mut self, peer: Peer, bitrate: u32) {
        let SimServer { engine, out, .. } = &mut self.server;
        engine
            .set_max_incoming_bitrate(self.router, peer.transport, bitrate, out)
            .expect("the peer's transport exists"); // ok: test support, never in the server
    }

    /// `setConsumerPreferredLayers` for a consumer: spatial layer `spatial`, temporal layer
    /// `temporal` (`None`: every one).
    pub fn set_preferred_layers(
        &mut self,
        consumer: ConsumerId,
        spatial: u8,
        temporal: Option<u8>,
    ) {
        let now = self.now();
        let SimServer { engine, out, .. } = &mut self.server;
        engine
            .set_consumer_preferred_layers(self.router, consumer, spatial, temporal, now, out)
            .expect("a consumer of this router") // ok: test support, never in the server
    }

    /// Protects and sends an RTP packet from a peer (through its link).
    pub fn send_rtp(&mut self, peer: Peer, packet: &[u8]) {
        let now = self.now();
        self.clients[peer.index]
            .send_rtp(now, packet)
            .expect("the peer is connected"); // ok: test support, never in the server
    }

    /// Protects and sends an RTCP packet from a peer.
    pub fn send_rtcp(&mut self, peer: Peer, packet: &[u8]) {
        let now = self.now();
        self.clients[peer.index]
            .send_rtcp(now, packet)
            .expect("the peer is connected"); // ok: test support, never in the server
    }

    /// One event of the simulation (see testkit's `Sim::step`), up to `limit`.
    pub fn step(&mut self, limit: Instant) -> bool {
        let mut endpoints: Vec<&mut dyn Endpoint> = Vec::with_capacity(self.clients.len() + 1);
        endpoints.push(&mut self.server);
        for c in &mut self.clients {
            endpoints.push(c);
        }
        self.sim.step(&mut endpoints, limit)
    }

    /// Runs the simulation until `limit`.
    pub fn run_until(&mut self, limit: Instant) {
        while self.step(limit) {}
    }

    /// Runs the simulation for `duration`.
    pub fn run_for(&mut self, duration: Duration) {
        let limit = self.now() + duration;
        self.run_until(limit);
    }
}

/// A client at `addr` (seeded with `index`) with a new transport on `router` of
/// `server`, `connectTransport` done but no packet exchanged.
fn add_client(
    server: &mut SimServer,
    router: RouterId,
    addr: SocketAddr,
    index: usize,
    now: Instant,
) -> (SimClient, TransportId) {
    let info = server
        .engine
        .create_transport(router, now)
        .expect("the router exists"); // ok: test support, never in the server
    let certificate =
        Arc::new(DtlsCertificate::generate().expect("a certificate can always be made")); // ok: test support, never in the server
    let config = SimClientConfig::new(
        addr,
        server.addr,
        &info.ice.ufrag,
        &info.ice.pwd,
        info.fingerprints.clone(),
        certificate,
    )
    .with_seed(index as u64 + 1);
    let client = SimClient::new(now, config).expect("a client can always be made"); // ok: test support, never in the server
    let fingerprint = client.fingerprint();
    let SimServer { engine, out, .. } = server;
    engine
        .connect_transport(
            router,
            info.id,
            DtlsRole::Client,
            vec![fingerprint],
            now,
            out,
        )
        .expect("a new transport accepts connectTransport"); // ok: test support, never in the server
    (client, info.id)
}

/// One node of a [`SimNodes`]: an engine with one router.
pub struct SimNode {
    /// The engine.
    pub server: SimServer,
    /// Its router of the room.
    pub router: RouterId,
}

/// Two engines (nodes) on one simulated network, each with a router of the same room, and
/// clients of either: for pipe transports between nodes.
pub struct SimNodes {
    /// Clock and network.
    pub sim: Sim,
    /// The nodes: 0 at [`SERVER_ADDR`], 1 at 10.0.0.2:40000.
    pub nodes: [SimNode; 2],
    /// The clients, in the order they joined, with the node each is on.
    pub clients: Vec<(usize, SimClient)>,
}

/// Both ends of a pipe between two nodes.
#[derive(Clone, Copy, Debug)]
pub struct SimPipe {
    /// The pipe transport on the producer's node.
    pub from_transport: TransportId,
    /// The pipe consumer there.
    pub consumer: ConsumerId,
    /// The pipe transport on the other node.
    pub to_transport: TransportId,
    /// The pipe producer there.
    pub producer: ProducerId,
}

impl SimNodes {
    /// Two nodes whose links all start as `link`.
    pub fn new(link: LinkConfig) -> Self {
        let sim = Sim::new(link);
        let now = sim.now();
        let node = |addr| {
            let mut server = SimServer::new(addr, now, IceTimeouts::default());
            let router = RouterId::new();
            server.engine.create_router(router);
            SimNode { server, router }
        };
        Self {
            nodes: [
                node(SERVER_ADDR),
                node(SocketAddr::from(([10, 0, 0, 2], 40000))),
            ],
            sim,
            clients: Vec::new(),
        }
    }

    /// Simulated now.
    pub fn now(&self) -> Instant {
        self.sim.now()
    }

    /// The engine of node `n`.
    pub fn engine(&mut self, n: usize) -> &mut Engine {
        &mut self.nodes[n].server.engine
    }

    /// A new client of node `node`, connected before this returns.
    ///
    /// # Panics
    ///
    /// If it does not connect within 30 simulated seconds.
    pub fn join(&mut self, node: usize) -> Peer {
        let now = self.now();
        let index = self.clients.len();
        let addr = SocketAddr::from(([10, 1, 0, index as u8 + 1], 5000));
        let n = &mut self.nodes[node];
        let (client, transport) = add_client(&mut n.server, n.router, addr, index, now);
        self.clients.push((node, client));
        let deadline = now + Duration::from_secs(30);
        while !self.clients[index].1.is_connected() {
            assert!(self.step(deadline), "client {index} did not connect");
        }
        Peer { index, transport }
    }

    /// Adds a producer on a peer's transport.
    pub fn produce(&mut self, peer: Peer, spec: ProduceSpec) -> ProducerId {
        let now = self.now();
        let n = &mut self.nodes[self.clients[peer.index].0];
        n.server
            .engine
            .produce(n.router, peer.transport, spec, now)
            .expect("a valid producer") // ok: test support, never in the server
    }

    /// Adds a consumer of `producer` (of the peer's node) on a peer's transport.
    pub fn consume(&mut self, peer: Peer, producer: ProducerId, spec: ConsumeSpec) -> ConsumerId {
        let now = self.now();
        let n = &mut self.nodes[self.clients[peer.index].0];
        let SimServer { engine, out, .. } = &mut n.server;
        engine
            .consume(n.router, peer.transport, producer, spec, now, out)
            .expect("a valid consumer") // ok: test support, never in the server
            .id
    }

    /// A pipe of `producer` (made with `spec`) from node `from` to the other node: a pipe
    /// transport on each (SRTP AEAD_AES_256_GCM, keys exchanged as the cluster handshake
    /// does), a pipe consumer on `from`, a pipe producer on the other.
    pub fn pipe(&mut self, from: usize, producer: ProducerId, spec: &ProduceSpec) -> SimPipe {
        let now = self.now();
        let to = 1 - from;
        let options = PlainOptions {
            comedia: false,
            rtcp_mux: true,
            srtp: Some(SrtpProfile::AeadAes256Gcm),
        };
        let mut open = |n: usize| {
            let node = &mut self.nodes[n];
            let SimServer { engine, out, .. } = &mut node.server;
            engine
                .create_plain_transport(node.router, options, now, out)
                .expect("a pipe transport") // ok: test support, never in the server
        };
        let (a, b) = (open(from), open(to));
        for (n, local, remote) in [(from, &a, &b), (to, &b, &a)] {
            let node = &mut self.nodes[n];
            let SimServer { engine, out, .. } = &mut node.server;
            let remote = PlainRemote {
                rtp: Some(remote.local),
                rtcp: None,
                srtp: remote.srtp.clone(),
            };
            engine
                .connect_plain_transport(node.router, local.id, remote, now, out)
                .expect("a pipe transport connects"); // ok: test support, never in the server
        }
        let ssrcs: Vec<u32> = (0..spec.encodings.len())
            .map(|i| 0x5000_0000 + i as u32)
            .collect();
        let node = &mut self.nodes[from];
        let SimServer { engine, out, .. } = &mut node.server;
        let consumer = engine
            .consume_pipe(node.router, a.id, producer, &ssrcs, now, out)
            .expect("a pipe consumer") // ok: test support, never in the server
            .id;
        let node = &mut self.nodes[to];
        let producer = node
            .server
            .engine
            .produce(node.router, b.id, spec.for_pipe(&ssrcs), now)
            .expect("a pipe producer"); // ok: test support, never in the server
        SimPipe {
            from_transport: a.id,
            consumer,
            to_transport: b.id,
            producer,
        }
    }

    /// Protects and sends an RTP packet from a peer.
    pub fn send_rtp(&mut self, peer: Peer, packet: &[u8]) {
        let now = self.now();
        self.clients[peer.index]
            .1
            .send_rtp(now, packet)
            .expect("the peer is connected"); // ok: test support, never in the server
    }

    /// Protects and sends an RTCP packet from a peer.
    pub fn send_rtcp(&mut self, peer: Peer, packet: &[u8]) {
        let now = self.now();
        self.clients[peer.index]
            .1
            .send_rtcp(now, packet)
            .expect("the peer is connected"); // ok: test support, never in the server
    }

    /// One event of the simulation, up to `limit`.
    pub fn step(&mut self, limit: Instant) -> bool {
        let mut endpoints: Vec<&mut dyn Endpoint> = Vec::with_capacity(self.clients.len() + 2);
        for n in &mut self.nodes {
            endpoints.push(&mut n.server);
        }
        for (_, c) in &mut self.clients {
            endpoints.push(c);
        }
        self.sim.step(&mut endpoints, limit)
    }

    /// Runs the simulation for `duration`.
    pub fn run_for(&mut self, duration: Duration) {
        let limit = self.now() + duration;
        while self.step(limit) {}
    }
}

/// An Opus producer with SSRC `ssrc`.
pub fn opus_producer(ssrc: u32) -> ProduceSpec {
    ProduceSpec {
        kind: MediaKind::Audio,
        codecs: vec![CodecSpec {
            payload_type: OPUS_PT,
            info: CodecInfo {
                clock_rate: 48_000,
                codec: VideoCodec::Other,
            },
        }],
        rtx: Vec::new(),
        encodings: vec![EncodingSpec {
            ssrc: Some(ssrc),
            ..EncodingSpec::default()
        }],
        mid: None,
        ext_ids: EXT_IDS,
        paused: false,
        producer_type: ProducerType::Simple,
        svc: SvcMode::None,
    }
}

/// A VP8 producer with SSRC `ssrc` and RTX on `rtx_ssrc`.
pub fn vp8_producer(ssrc: u32, rtx_ssrc: Option<u32>) -> ProduceSpec {
    ProduceSpec {
        kind: MediaKind::Video,
        codecs: vec![CodecSpec {
            payload_type: VP8_PT,
            info: CodecInfo {
                clock_rate: 90_000,
                codec: VideoCodec::Vp8,
            },
        }],
        rtx: vec![RtxMapping {
            payload_type: VP8_RTX_PT,
            apt: VP8_PT,
        }],
        encodings: vec![EncodingSpec {
            ssrc: Some(ssrc),
            rtx_ssrc,
            rid: None,
        }],
        mid: None,
        ext_ids: EXT_IDS,
        paused: false,
        producer_type: ProducerType::Simple,
        svc: SvcMode::None,
    }
}

/// A VP8 simulcast producer: one encoding per `(ssrc, rtx ssrc)`, lowest layer first.
pub fn vp8_simulcast_producer(layers: &[(u32, u32)]) -> ProduceSpec {
    ProduceSpec {
        encodings: layers
            .iter()
            .map(|&(ssrc, rtx)| EncodingSpec {
                ssrc: Some(ssrc),
                rtx_ssrc: Some(rtx),
                rid: None,
            })
            .collect(),
        producer_type: ProducerType::Simulcast,
        svc: SvcMode::None,
        ..vp8_producer(0, None)
    }
}

/// A VP9 SVC producer: one stream (SSRC `ssrc`, RTX `rtx_ssrc`) whose spatial layers
/// depend on each other as `svc` says.
pub fn vp9_svc_producer(ssrc: u32, rtx_ssrc: u32, svc: SvcMode) -> ProduceSpec {
    ProduceSpec {
        codecs: vec![CodecSpec {
            payload_type: VP9_PT,
            info: CodecInfo {
                clock_rate: 90_000,
                codec: VideoCodec::Vp9,
            },
        }],
        rtx: vec![RtxMapping {
            payload_type: VP9_RTX_PT,
            apt: VP9_PT,
        }],
        producer_type: ProducerType::Svc,
        svc,
        ..vp8_producer(ssrc, Some(rtx_ssrc))
    }
}

/// A VP9 consumer sending under `ssrc`, RTX under `rtx_ssrc`.
pub fn vp9_consumer(ssrc: u32, rtx_ssrc: u32) -> ConsumeSpec {
    consumer(
        VP9_PT,
        90_000,
        ssrc,
        Some(RtxOut {
            ssrc: rtx_ssrc,
            payload_type: VP9_RTX_PT,
        }),
    )
}

/// A consumer receiving payload type `pt` (same number as the producer's) at
/// `clock_rate` under SSRC `ssrc`, RTX on `rtx` when given, extensions as [`EXT_IDS`].
fn consumer(pt: u8, clock_rate: u32, ssrc: u32, rtx: Option<RtxOut>) -> ConsumeSpec {
    let mut pt_map = [NO_PT; 128];
    pt_map[usize::from(pt)] = pt;
    let mut ext_map = [0u8; 256];
    for id in [
        EXT_IDS.abs_send_time,
        EXT_IDS.transport_wide_cc,
        EXT_IDS.audio_level,
    ] {
        ext_map[usize::from(id)] = id;
    }
    ConsumeSpec {
        pt_map,
        ext_map,
        ssrc,
        rtx,
        clock_rate,
        paused: false,
        preferred_spatial: None,
        preferred_temporal: None,
        twcc_ext: EXT_IDS.transport_wide_cc,
        abs_send_time_ext: EXT_IDS.abs_send_time,
        vp8_rewrite: false,
    }
}

/// An Opus consumer sending under `ssrc`.
pub fn opus_consumer(ssrc: u32) -> ConsumeSpec {
    consumer(OPUS_PT, 48_000, ssrc, None)
}

/// A VP8 consumer sending under `ssrc`, with RTX under `rtx_ssrc` when given (picture
/// ids kept continuous across dropped temporal layers, as the router sets it up).
pub fn vp8_consumer(ssrc: u32, rtx_ssrc: Option<u32>) -> ConsumeSpec {
    let rtx = rtx_ssrc.map(|ssrc| RtxOut {
        ssrc,
        payload_type: VP8_RTX_PT,
    });
    ConsumeSpec {
        vp8_rewrite: true,
        ..consumer(VP8_PT, 90_000, ssrc, rtx)
    }
}

/// A VP8 consumer of a simulcast producer (picture ids kept continuous across layers).
pub fn vp8_simulcast_consumer(ssrc: u32, rtx_ssrc: u32) -> ConsumeSpec {
    vp8_consumer(ssrc, Some(rtx_ssrc))
}
