//! The state a worker thread owns and everything it does with it: the control requests
//! (run as closures sent from the async API) and the media path (driven by the worker's
//! event loop with batched datagrams and the current time).
//!
//! Ownership is a tree — router → transports → producers / consumers — kept in slabs; the
//! cross-links (producer → its consumers, SSRC / tuple / ufrag tables) are slab keys.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;
use tokio::sync::mpsc::UnboundedSender;

use ferrosoup_proto::rtp_parameters::MediaKind;
use ferrosoup_proto::transport::{DtlsState, IceState};
use ferrosoup_rtc::demux::{PacketKind, classify};
use ferrosoup_rtc::dtls::{DtlsCertificate, DtlsEvent, DtlsRole, DtlsSession, Fingerprint};
use ferrosoup_rtc::ice::{IceCredentials, IceEvent, IceLiteServer, StunOutcome, stun_local_ufrag};
use ferrosoup_rtc::rtcp::{self, RtcpItem};
use ferrosoup_rtc::rtp::{self, RtpHeaderInfo, VideoCodec};
use ferrosoup_rtc::srtp::{SendIndex, SrtpError, SrtpSession};
use ferrosoup_rtc::twcc::{FEEDBACK_INTERVAL, TwccRecorder};
use ferrosoup_rtc::vp8::Vp8PictureRewriter;

use crate::consumer::{Consumer, Decision, LayerChange};
use crate::error::RoomError;
use crate::events::MediaEvent;
use crate::ids::{ConsumerId, ProducerId, RouterId, TransportId};
use crate::producer::{CodecInfo, ExtIds, KeyframeAction, Producer, RecvStream};
use crate::settings::IceTimeouts;
use crate::stats::{SharedCounters, WorkerCounters};
use crate::transport::{StreamRef, Transport, TransportCounters};
use crate::udp::{MAX_DATAGRAM, SendBatch};

/// Retransmissions remembered per video consumer, to answer each NACK once per round trip.
const RESENT_HISTORY: usize = 128;
/// Interval between RTCP report rounds (SR for consumers, RR for producers) per transport.
const RTCP_INTERVAL: Duration = Duration::from_millis(1000);
/// Seconds between 1900-01-01 (NTP epoch) and 1970-01-01 (Unix epoch).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// What `produce` needs, derived from the client's RTP parameters by the control path.
#[derive(Clone, Debug)]
pub struct ProduceSpec {
    /// Audio or video.
    pub kind: MediaKind,
    /// Media codecs by payload type.
    pub codecs: Vec<(u8, CodecInfo)>,
    /// RTX payload types and the media payload type each repairs.
    pub rtx: Vec<(u8, u8)>,
    /// Encodings in spatial order: SSRC, RTX SSRC, RID.
    pub encodings: Vec<(Option<u32>, Option<u32>, Option<String>)>,
    /// The client's MID.
    pub mid: Option<String>,
    /// Ids of the header extensions the worker reads.
    pub ext_ids: ExtIds,
    /// Start paused.
    pub paused: bool,
    /// Type of its consumers: `simple`, `simulcast` or `svc`.
    pub consumer_type: &'static str,
}

/// What `consume` needs, derived by the control path from the consumer's RTP parameters.
#[derive(Clone, Debug)]
pub struct ConsumeSpec {
    /// Producer payload type → consumer payload type (0xff: none).
    pub pt_map: [u8; 128],
    /// Producer header extension id → consumer id (0: drop).
    pub ext_map: [u8; 256],
    /// Outgoing SSRC.
    pub ssrc: u32,
    /// Outgoing RTX SSRC and payload type.
    pub rtx: Option<(u32, u8)>,
    /// Codec clock rate.
    pub clock_rate: u32,
    /// Start paused.
    pub paused: bool,
    /// Preferred spatial layer.
    pub preferred_spatial: Option<u8>,
    /// Preferred temporal layer.
    pub preferred_temporal: Option<u8>,
    /// Consumer id of the transport-wide-cc extension (0: not negotiated).
    pub twcc_ext: u8,
    /// Consumer id of the abs-send-time extension (0: not negotiated).
    pub abs_send_time_ext: u8,
    /// VP8 simulcast: keep PictureID/TL0PICIDX continuous across layer switches.
    pub vp8_rewrite: bool,
}

/// Objects closed as a side effect of a close request, for notifications.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Closed {
    /// Producers closed, with their transport.
    pub producers: Vec<ProducerId>,
    /// Consumers closed, with the producer each consumed.
    pub consumers: Vec<(ConsumerId, ProducerId)>,
}

/// What a new transport tells its client.
#[derive(Clone, Debug)]
pub struct TransportInfo {
    /// Its id.
    pub id: TransportId,
    /// ICE credentials.
    pub ice: IceCredentials,
    /// The worker socket's port (candidates use it with each announced IP).
    pub port: u16,
    /// The server certificate's fingerprints.
    pub fingerprints: Vec<Fingerprint>,
}

/// What a worker keeps per router.
#[derive(Default)]
struct RouterState {
    /// Transports of the router (owned).
    transports: Vec<usize>,
    /// The producer last reported as active speaker.
    active_speaker: Option<ProducerId>,
    /// When the next active-speaker decision is due.
    next_speaker_check: Option<Instant>,
}

/// How often the loudest audio producer of a router is looked for.
const SPEAKER_INTERVAL: Duration = Duration::from_millis(300);
/// Audio quieter than this (dBov, as a positive level 0..127) never counts as speech.
const SPEAKER_THRESHOLD: u8 = 70;
/// How often scores are recomputed and reported when changed.
const SCORE_INTERVAL: Duration = Duration::from_secs(2);

/// Everything one worker owns.
pub struct WorkerCore {
    socket: UdpSocket,
    port: u16,
    certificate: Arc<DtlsCertificate>,
    events: UnboundedSender<MediaEvent>,
    /// Routers: the transports each owns and its active-speaker state.
    routers: HashMap<RouterId, RouterState>,
    transports: Slab<Transport>,
    producers: Slab<Producer>,
    consumers: Slab<Consumer>,
    transport_ids: HashMap<TransportId, usize>,
    producer_ids: HashMap<ProducerId, usize>,
    consumer_ids: HashMap<ConsumerId, usize>,
    /// Remote 5-tuple → transport (indexed).
    by_tuple: HashMap<SocketAddr, usize>,
    /// Local ICE ufrag → transport (indexed).
    by_ufrag: HashMap<String, usize>,
    send: SendBatch,
    stun_out: Vec<u8>,
    nack_scratch: Vec<u16>,
    rtcp_scratch: Box<[u8; MAX_DATAGRAM]>,
    /// Reused list of keys for timer walks.
    key_scratch: Vec<usize>,
    next_score_at: Instant,
    counters: WorkerCounters,
    shared: Arc<SharedCounters>,
    ice_timeouts: IceTimeouts,
    /// Wall clock at `epoch`, to turn `Instant`s into NTP time for Sender Reports.
    epoch: (Instant, std::time::SystemTime),
}

impl WorkerCore {
    /// State for a worker bound to `socket`.
    pub fn new(
        socket: UdpSocket,
        certificate: Arc<DtlsCertificate>,
        events: UnboundedSender<MediaEvent>,
        shared: Arc<SharedCounters>,
        ice_timeouts: IceTimeouts,
    ) -> std::io::Result<Self> {
        let port = socket.local_addr()?.port();
        Ok(Self {
            socket,
            port,
            certificate,
            events,
            routers: HashMap::new(),
            transports: Slab::new(),
            producers: Slab::new(),
            consumers: Slab::new(),
            transport_ids: HashMap::new(),
            producer_ids: HashMap::new(),
            consumer_ids: HashMap::new(),
            by_tuple: HashMap::new(),
            by_ufrag: HashMap::new(),
            send: SendBatch::new(64),
            stun_out: Vec::with_capacity(256),
            nack_scratch: Vec::with_capacity(256),
            rtcp_scratch: Box::new([0; MAX_DATAGRAM]),
            key_scratch: Vec::new(),
            next_score_at: Instant::now() + SCORE_INTERVAL,
            counters: WorkerCounters::default(),
            shared,
            ice_timeouts,
            epoch: (Instant::now(), std::time::SystemTime::now()),
        })
    }

    /// The worker's UDP socket.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    // ----- control requests -------------------------------------------------------------

    /// Ids of the routers on this worker.
    pub fn router_ids(&self) -> Vec<RouterId> {
        self.routers.keys().copied().collect()
    }

    /// Registers a router.
    pub fn create_router(&mut self, id: RouterId) {
        self.routers.entry(id).or_default();
        self.publish_counts();
    }

    /// Closes a router and everything in it.
    pub fn close_router(&mut self, id: RouterId) {
        if let Some(router) = self.routers.remove(&id) {
            for t in router.transports {
                self.remove_transport(t);
            }
        }
        self.publish_counts();
    }

    /// Creates a WebRTC transport in a router.
    pub fn create_transport(
        &mut self,
        router_id: RouterId,
        now: Instant,
    ) -> Result<TransportInfo, RoomError> {
        if !self.routers.contains_key(&router_id) {
            return Err(RoomError::NotFound("router"));
        }
        let ice = IceCredentials::generate();
        let id = TransportId::new();
        let mut ice_server = IceLiteServer::new(ice.clone(), now);
        ice_server.set_consent_timeout(self.ice_timeouts.consent);
        let key = self.transports.insert(Transport {
            id,
            router_id,
            ice: ice_server,
            dtls: None,
            remote_dtls: None,
            srtp: None,
            reported: (IceState::New, DtlsState::New),
            tuples: Vec::new(),
            ssrc_table: HashMap::new(),
            mid_table: HashMap::new(),
            consumer_ssrcs: HashMap::new(),
            producers: Vec::new(),
            consumers: Vec::new(),
            max_incoming_bitrate: 0,
            ice_disconnected_at: None,
            ice_restart_notified_at: None,
            counters: TransportCounters::default(),
            next_rtcp_at: now + RTCP_INTERVAL,
            remb_bitrate: None,
            twcc_seq: 0,
            twcc: TwccRecorder::new(now),
            next_twcc_feedback_at: now,
        });
        self.transport_ids.insert(id, key);
        self.by_ufrag.insert(ice.ufrag.clone(), key);
        if let Some(r) = self.routers.get_mut(&router_id) {
            r.transports.push(key);
        }
        self.publish_counts();
        Ok(TransportInfo {
            id,
            ice,
            port: self.port,
            fingerprints: self.certificate.fingerprints().to_vec(),
        })
    }

    /// The slab key of an object of `router_id`, found through its id map and the transport
    /// it lives on; `NotFound(what)` when unknown or in another router.
    fn key_in_router<Id: std::hash::Hash + Eq>(
        &self,
        ids: &HashMap<Id, usize>,
        id: &Id,
        transport_of: impl Fn(usize) -> usize,
        router_id: RouterId,
        what: &'static str,
    ) -> Result<usize, RoomError> {
        let key = *ids.get(id).ok_or(RoomError::NotFound(what))?;
        if self.transports[transport_of(key)].router_id != router_id {
            return Err(RoomError::NotFound(what));
        }
        Ok(key)
    }

    fn transport_key(&self, router_id: RouterId, id: TransportId) -> Result<usize, RoomError> {
        self.key_in_router(&self.transport_ids, &id, |k| k, router_id, "transport")
    }

    fn producer_key(&self, router_id: RouterId, id: ProducerId) -> Result<usize, RoomError> {
        self.key_in_router(
            &self.producer_ids,
            &id,
            |k| self.producers[k].transport,
            router_id,
            "producer",
        )
    }

    fn consumer_key(&self, router_id: RouterId, id: ConsumerId) -> Result<usize, RoomError> {
        self.key_in_router(
            &self.consumer_ids,
            &id,
            |k| self.consumers[k].transport,
            router_id,
            "consumer",
        )
    }

    /// Starts DTLS with the client's parameters. `remote_role` is the client's role.
    pub fn connect_transport(
        &mut self,
        router_id: RouterId,
        id: TransportId,
        remote_role: DtlsRole,
        fingerprints: Vec<Fingerprint>,
        now: Instant,
    ) -> Result<(), RoomError> {
        let key = self.transport_key(router_id, id)?;
        let t = &mut self.transports[key];
        if t.remote_dtls.is_some() {
            return Err(RoomError::InvalidState(
                "transport already connected".into(),
            ));
        }
        let local_role = match remote_role {
            DtlsRole::Client => DtlsRole::Server,
            DtlsRole::Server => DtlsRole::Client,
        };
        t.remote_dtls = Some((local_role, fingerprints));
        // As DTLS client we can only start once ICE has a tuple to send to.
        if local_role == DtlsRole::Server || t.ice.selected_tuple().is_some() {
            self.start_dtls(key, now)?;
        }
        self.drain_transport(key, now);
        self.flush();
        Ok(())
    }

    fn start_dtls(&mut self, key: usize, now: Instant) -> Result<(), RoomError> {
        let t = &mut self.transports[key];
        let Some((role, fingerprints)) = t.remote_dtls.clone() else {
            return Ok(());
        };
        if t.dtls.is_some() {
            return Ok(());
        }
        let session = DtlsSession::new(self.certificate.clone(), role, fingerprints, now)
            .map_err(|e| RoomError::Internal(format!("dtls: {e}")))?;
        t.dtls = Some(session);
        Ok(())
    }

    /// New ICE credentials for a transport.
    pub fn restart_ice(
        &mut self,
        router_id: RouterId,
        id: TransportId,
    ) -> Result<IceCredentials, RoomError> {
        let key = self.transport_key(router_id, id)?;
        let creds = IceCredentials::generate();
        let t = &mut self.transports[key];
        self.by_ufrag.remove(&t.ice.credentials().ufrag);
        t.ice.restart(creds.clone());
        t.ice_disconnected_at = None;
        self.by_ufrag.insert(creds.ufrag.clone(), key);
        Ok(creds)
    }

    /// Records the client's `setMaxIncomingBitrate`.
    pub fn set_max_incoming_bitrate(
        &mut self,
        router_id: RouterId,
        id: TransportId,
        bitrate: u32,
    ) -> Result<(), RoomError> {
        let key = self.transport_key(router_id, id)?;
        self.transports[key].max_incoming_bitrate = bitrate;
        Ok(())
    }

    /// Closes a transport with its producers (and their consumers) and consumers.
    pub fn close_transport(
        &mut self,
        router_id: RouterId,
        id: TransportId,
    ) -> Result<Closed, RoomError> {
        let key = self.transport_key(router_id, id)?;
        if let Some(r) = self.routers.get_mut(&router_id) {
            r.transports.retain(|&t| t != key);
        }
        let closed = self.remove_transport(key);
        self.publish_counts();
        Ok(closed)
    }

    fn remove_transport(&mut self, key: usize) -> Closed {
        let mut closed = Closed::default();
        let producers = self.transports[key].producers.clone();
        for p in producers {
            let (pid, consumers) = self.remove_producer(p);
            closed.producers.push(pid);
            closed
                .consumers
                .extend(consumers.into_iter().map(|c| (c, pid)));
        }
        let consumers = self.transports[key].consumers.clone();
        for c in consumers {
            closed.consumers.push(self.remove_consumer(c));
        }
        let mut t = self.transports.remove(key);
        let remote = t.remote();
        if let Some(dtls) = t.dtls.as_mut() {
            dtls.close();
            if let Some(remote) = remote {
                while let Some(d) = dtls.poll_transmit() {
                    self.send_datagram(&d, remote);
                }
            }
        }
        t.ice.close();
        for tuple in &t.tuples {
            self.by_tuple.remove(tuple);
        }
        self.by_ufrag.remove(&t.ice.credentials().ufrag);
        self.transport_ids.remove(&t.id);
        self.flush();
        closed
    }

    /// Adds a producer to a transport.
    pub fn produce(
        &mut self,
        router_id: RouterId,
        transport_id: TransportId,
        spec: ProduceSpec,
    ) -> Result<ProducerId, RoomError> {
        let t = self.transport_key(router_id, transport_id)?;
        for (ssrc, rtx, _) in &spec.encodings {
            for s in [ssrc, rtx].into_iter().flatten() {
                if self.transports[t].ssrc_table.contains_key(s) {
                    return Err(RoomError::Invalid(format!(
                        "rtpParameters.encodings: ssrc {s} already in use"
                    )));
                }
            }
        }
        if let Some(mid) = &spec.mid
            && self.transports[t].mid_table.contains_key(mid)
        {
            return Err(RoomError::Invalid(format!(
                "rtpParameters.mid: {mid} already in use"
            )));
        }
        let id = ProducerId::new();
        let mut codecs = [None; 128];
        for (pt, info) in &spec.codecs {
            if let Some(slot) = codecs.get_mut(*pt as usize) {
                *slot = Some(*info);
            }
        }
        let mut rtx_apt = [None; 128];
        for (pt, apt) in &spec.rtx {
            if let Some(slot) = rtx_apt.get_mut(*pt as usize) {
                *slot = Some(*apt);
            }
        }
        let streams = spec
            .encodings
            .iter()
            .map(|(ssrc, rtx, rid)| RecvStream::new(spec.kind, *ssrc, *rtx, rid.clone()))
            .collect::<Vec<_>>();
        let key = self.producers.insert(Producer {
            id,
            transport: t,
            kind: spec.kind,
            paused: spec.paused,
            codecs,
            rtx_apt,
            streams,
            consumers: Vec::new(),
            mid: spec.mid.clone(),
            ext_ids: spec.ext_ids,
            consumer_type: spec.consumer_type,
            score: 10,
            audio_level_sum: 0,
            audio_level_count: 0,
        });
        self.producer_ids.insert(id, key);
        let transport = &mut self.transports[t];
        transport.producers.push(key);
        for (i, (ssrc, rtx, _)) in spec.encodings.iter().enumerate() {
            if let Some(s) = ssrc {
                transport.ssrc_table.insert(
                    *s,
                    StreamRef {
                        producer: key,
                        stream: i,
                        rtx: false,
                    },
                );
            }
            if let Some(s) = rtx {
                transport.ssrc_table.insert(
                    *s,
                    StreamRef {
                        producer: key,
                        stream: i,
                        rtx: true,
                    },
                );
            }
        }
        if let Some(mid) = spec.mid {
            transport.mid_table.insert(mid, key);
        }
        self.publish_counts();
        Ok(id)
    }

    /// Pauses or resumes a producer; returns the consumers whose `producerPaused` changed.
    pub fn set_producer_paused(
        &mut self,
        router_id: RouterId,
        id: ProducerId,
        paused: bool,
        now: Instant,
    ) -> Result<Vec<ConsumerId>, RoomError> {
        let key = self.producer_key(router_id, id)?;
        let p = &mut self.producers[key];
        if p.paused == paused {
            return Ok(Vec::new());
        }
        p.paused = paused;
        let consumers = p.consumers.clone();
        let mut changed = Vec::new();
        for c in consumers {
            let consumer = &mut self.consumers[c];
            consumer.producer_paused = paused;
            changed.push(consumer.id);
            self.on_consumer_activity_changed(c, now);
        }
        self.flush();
        Ok(changed)
    }

    /// Closes a producer; returns the consumers closed with it.
    pub fn close_producer(
        &mut self,
        router_id: RouterId,
        id: ProducerId,
    ) -> Result<Vec<ConsumerId>, RoomError> {
        let key = self.producer_key(router_id, id)?;
        let (_, consumers) = self.remove_producer(key);
        self.publish_counts();
        Ok(consumers)
    }

    fn remove_producer(&mut self, key: usize) -> (ProducerId, Vec<ConsumerId>) {
        let consumer_keys = self.producers[key].consumers.clone();
        let closed = consumer_keys
            .into_iter()
            .map(|c| self.remove_consumer(c).0)
            .collect();
        let p = self.producers.remove(key);
        let t = &mut self.transports[p.transport];
        t.producers.retain(|&x| x != key);
        t.ssrc_table.retain(|_, r| r.producer != key);
        t.mid_table.retain(|_, &mut v| v != key);
        self.producer_ids.remove(&p.id);
        (p.id, closed)
    }

    /// Adds a consumer of a producer on a transport; returns its id and whether the producer
    /// is paused.
    pub fn consume(
        &mut self,
        router_id: RouterId,
        transport_id: TransportId,
        producer_id: ProducerId,
        spec: ConsumeSpec,
        now: Instant,
    ) -> Result<(ConsumerId, bool), RoomError> {
        let t = self.transport_key(router_id, transport_id)?;
        let p = self.producer_key(router_id, producer_id)?;
        let producer = &self.producers[p];
        let kind = producer.kind;
        let producer_paused = producer.paused;
        let consumer_type = producer.consumer_type;
        let id = ConsumerId::new();
        let forwarder = crate::consumer::ConsumerForwarder::new(
            kind,
            spec.pt_map,
            spec.clock_rate,
            rand::random(),
            rand::random(),
        );
        let key = self.consumers.insert(Consumer {
            id,
            producer_id,
            producer: p,
            transport: t,
            kind,
            consumer_type,
            paused: spec.paused,
            producer_paused,
            ssrc: spec.ssrc,
            rtx: spec.rtx,
            rtx_seq: rand::random(),
            srtp_index: SendIndex::default(),
            rtx_srtp_index: SendIndex::default(),
            ext_map: spec.ext_map,
            vp8: spec.vp8_rewrite.then(Vp8PictureRewriter::new),
            twcc_ext: spec.twcc_ext,
            abs_send_time_ext: spec.abs_send_time_ext,
            clock_rate: spec.clock_rate,
            forwarder,
            preferred_spatial: spec.preferred_spatial,
            preferred_temporal: spec.preferred_temporal,
            priority: 1,
            send_stats: ferrosoup_rtc::rtcp::SendStats::new(),
            rtt_ms: 0.0,
            fraction_lost: 0.0,
            retransmitted: 0,
            nack_misses: 0,
            resent: if kind == MediaKind::Video {
                vec![(0, 0); RESENT_HISTORY]
            } else {
                Vec::new()
            },
            keyframe_requests: 0,
            score: 10,
            reported_producer_score: 10,
            created: now,
        });
        self.consumer_ids.insert(id, key);
        self.producers[p].consumers.push(key);
        let transport = &mut self.transports[t];
        transport.consumers.push(key);
        transport.consumer_ssrcs.insert(spec.ssrc, key);
        if let Some((rtx_ssrc, _)) = spec.rtx {
            transport.consumer_ssrcs.insert(rtx_ssrc, key);
        }
        self.on_consumer_activity_changed(key, now);
        self.flush();
        self.publish_counts();
        Ok((id, producer_paused))
    }

    /// Pauses or resumes a consumer at its client's request.
    pub fn set_consumer_paused(
        &mut self,
        router_id: RouterId,
        id: ConsumerId,
        paused: bool,
        now: Instant,
    ) -> Result<(), RoomError> {
        let key = self.consumer_key(router_id, id)?;
        if self.consumers[key].paused != paused {
            self.consumers[key].paused = paused;
            self.on_consumer_activity_changed(key, now);
            self.flush();
        }
        Ok(())
    }

    /// Sets the layers a consumer prefers.
    pub fn set_consumer_preferred_layers(
        &mut self,
        router_id: RouterId,
        id: ConsumerId,
        spatial: u8,
        temporal: Option<u8>,
        now: Instant,
    ) -> Result<(), RoomError> {
        let key = self.consumer_key(router_id, id)?;
        let c = &mut self.consumers[key];
        c.preferred_spatial = Some(spatial);
        c.preferred_temporal = temporal;
        self.update_consumer_target(key, now);
        self.flush();
        Ok(())
    }

    /// Sets a consumer's priority.
    pub fn set_consumer_priority(
        &mut self,
        router_id: RouterId,
        id: ConsumerId,
        priority: u8,
    ) -> Result<(), RoomError> {
        let key = self.consumer_key(router_id, id)?;
        self.consumers[key].priority = priority;
        Ok(())
    }

    /// Asks the producer of a consumer for a keyframe.
    pub fn request_consumer_key_frame(
        &mut self,
        router_id: RouterId,
        id: ConsumerId,
        now: Instant,
    ) -> Result<(), RoomError> {
        let key = self.consumer_key(router_id, id)?;
        self.request_keyframe_for_consumer(key, now);
        self.flush();
        Ok(())
    }

    /// Closes a consumer.
    pub fn close_consumer(&mut self, router_id: RouterId, id: ConsumerId) -> Result<(), RoomError> {
        let key = self.consumer_key(router_id, id)?;
        self.remove_consumer(key);
        self.publish_counts();
        Ok(())
    }

    fn remove_consumer(&mut self, key: usize) -> (ConsumerId, ProducerId) {
        let c = self.consumers.remove(key);
        if let Some(p) = self.producers.get_mut(c.producer) {
            p.consumers.retain(|&x| x != key);
        }
        if let Some(t) = self.transports.get_mut(c.transport) {
            t.consumers.retain(|&x| x != key);
            t.consumer_ssrcs.retain(|_, &mut v| v != key);
        }
        self.consumer_ids.remove(&c.id);
        (c.id, c.producer_id)
    }

    fn on_consumer_activity_changed(&mut self, key: usize, now: Instant) {
        let c = &mut self.consumers[key];
        if c.is_active() {
            self.update_consumer_target(key, now);
            self.request_keyframe_for_consumer(key, now);
        } else {
            let change = c.forwarder.restart();
            c.forwarder.set_target(None);
            if let Some(change) = change
                && c.consumer_type != "simple"
            {
                let id = c.id;
                self.emit_layers(id, change);
            }
        }
    }

    /// Recomputes which producer stream a consumer should forward.
    fn update_consumer_target(&mut self, key: usize, now: Instant) {
        let c = &self.consumers[key];
        if !c.is_active() {
            return;
        }
        let producer = &self.producers[c.producer];
        let target = producer
            .best_active_stream(now, c.preferred_spatial)
            .or(Some(0));
        let c = &mut self.consumers[key];
        if c.forwarder.target() != target {
            c.forwarder.set_target(target);
            if c.kind == MediaKind::Video {
                self.request_keyframe_for_consumer(key, now);
            }
        }
    }

    fn request_keyframe_for_consumer(&mut self, key: usize, now: Instant) {
        let c = &self.consumers[key];
        if c.kind != MediaKind::Video {
            return;
        }
        let stream = c.forwarder.target().or(c.forwarder.current()).unwrap_or(0);
        let p = c.producer;
        self.request_keyframe(p, stream, now);
    }

    /// Sends a PLI for a producer stream unless one went out very recently.
    fn request_keyframe(&mut self, p: usize, stream: usize, now: Instant) {
        let Some(producer) = self.producers.get_mut(p) else {
            return;
        };
        let Some(s) = producer.streams.get_mut(stream) else {
            return;
        };
        if s.ssrc.is_none() || s.on_keyframe_request(now) != KeyframeAction::Send {
            return;
        }
        self.send_keyframe_request(p, stream, now);
    }

    /// Sends a PLI for a producer stream to its client.
    fn send_keyframe_request(&mut self, p: usize, stream: usize, now: Instant) {
        let Some(producer) = self.producers.get_mut(p) else {
            return;
        };
        let Some(s) = producer.streams.get_mut(stream) else {
            return;
        };
        let Some(media_ssrc) = s.ssrc else { return };
        s.on_keyframe_request_sent(now);
        self.counters.plis_sent += 1;
        let t = producer.transport;
        let len = rtcp::write_pli(&mut self.rtcp_scratch[..], 1, media_ssrc).unwrap_or(0);
        self.send_rtcp(t, len);
    }

    // ----- stats ------------------------------------------------------------------------

    /// `getTransportStats` for a transport.
    pub fn transport_stats(
        &self,
        router_id: RouterId,
        id: TransportId,
    ) -> Result<serde_json::Value, RoomError> {
        let key = self.transport_key(router_id, id)?;
        Ok(crate::stats::transport_stats(&self.transports[key]))
    }

    /// `getProducerStats` for a producer.
    pub fn producer_stats(
        &self,
        router_id: RouterId,
        id: ProducerId,
        now: Instant,
    ) -> Result<serde_json::Value, RoomError> {
        let key = self.producer_key(router_id, id)?;
        Ok(crate::stats::producer_stats(&self.producers[key], now))
    }

    /// `getConsumerStats` for a consumer.
    pub fn consumer_stats(
        &self,
        router_id: RouterId,
        id: ConsumerId,
    ) -> Result<serde_json::Value, RoomError> {
        let key = self.consumer_key(router_id, id)?;
        let c = &self.consumers[key];
        let producer = self.producers.get(c.producer);
        Ok(crate::stats::consumer_stats(c, producer))
    }

    fn publish_counts(&mut self) {
        self.counters.routers = self.routers.len() as u64;
        self.counters.transports = self.transports.len() as u64;
        self.counters.producers = self.producers.len() as u64;
        self.counters.consumers = self.consumers.len() as u64;
        self.shared.publish(&self.counters);
    }

    // ----- media path -------------------------------------------------------------------

    /// Handles one received datagram. `data` is modified in place (SRTP is removed there).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) {
        self.counters.datagrams_in += 1;
        self.counters.bytes_in += data.len() as u64;
        match classify(data) {
            PacketKind::Stun => self.handle_stun(now, from, data),
            PacketKind::Dtls => {
                let Some(&key) = self.by_tuple.get(&from) else {
                    self.counters.dropped_unknown_tuple += 1;
                    return;
                };
                if let Some(dtls) = self.transports[key].dtls.as_mut() {
                    dtls.handle_read(now, data);
                }
                self.drain_transport(key, now);
            }
            PacketKind::Rtp => {
                let Some(&key) = self.by_tuple.get(&from) else {
                    self.counters.dropped_unknown_tuple += 1;
                    return;
                };
                self.handle_rtp(now, key, from, data);
            }
            PacketKind::Rtcp => {
                let Some(&key) = self.by_tuple.get(&from) else {
                    self.counters.dropped_unknown_tuple += 1;
                    return;
                };
                self.handle_rtcp(now, key, from, data);
            }
            PacketKind::Unknown => self.counters.dropped_malformed += 1,
        }
    }

    fn handle_stun(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let key = match self.by_tuple.get(&from) {
            Some(&k) => k,
            None => match stun_local_ufrag(data).and_then(|u| self.by_ufrag.get(u)) {
                Some(&k) => k,
                None => {
                    self.counters.stun_rejected += 1;
                    return;
                }
            },
        };
        let t = &mut self.transports[key];
        match t.ice.handle_stun(now, from, data, &mut self.stun_out) {
            StunOutcome::Respond => {
                let out = std::mem::take(&mut self.stun_out);
                self.send_datagram(&out, from);
                self.stun_out = out;
            }
            StunOutcome::Ignored(_) => self.counters.stun_rejected += 1,
        }
        if self.transports[key].ice.is_valid_tuple(from) && !self.by_tuple.contains_key(&from) {
            self.by_tuple.insert(from, key);
            self.transports[key].tuples.push(from);
        }
        self.drain_transport(key, now);
    }

    /// Processes what ICE and DTLS of a transport want to send or report.
    fn drain_transport(&mut self, key: usize, now: Instant) {
        let Some(t) = self.transports.get_mut(key) else {
            return;
        };
        while let Some(event) = t.ice.poll_event() {
            match event {
                IceEvent::StateChanged(_) => {}
                IceEvent::SelectedTupleChanged(tuple) => {
                    if !t.tuples.contains(&tuple) {
                        t.tuples.push(tuple);
                    }
                    self.by_tuple.insert(tuple, key);
                }
            }
        }
        let t = &mut self.transports[key];
        if t.dtls.is_none()
            && t.remote_dtls.is_some()
            && t.ice.selected_tuple().is_some()
            && let Err(e) = self.start_dtls(key, now)
        {
            tracing::warn!("transport dtls start failed: {e}");
        }
        let t = &mut self.transports[key];
        let remote = t.remote();
        if let Some(dtls) = t.dtls.as_mut() {
            while let Some(datagram) = dtls.poll_transmit() {
                if let Some(to) = remote {
                    if self.send.is_full() {
                        self.send.flush(&self.socket);
                    }
                    self.send.push(&datagram, to);
                }
            }
            while let Some(event) = dtls.poll_event() {
                match event {
                    DtlsEvent::Connected(keys) => match SrtpSession::new(&keys) {
                        Ok(srtp) => t.srtp = Some(srtp),
                        Err(e) => tracing::warn!(transport = %t.id, "srtp setup failed: {e}"),
                    },
                    DtlsEvent::Failed(reason) => {
                        tracing::info!(transport = %t.id, "dtls failed: {reason}");
                        t.srtp = None;
                    }
                    DtlsEvent::Closed => t.srtp = None,
                    // Data channels (SCTP over DTLS) are not served yet.
                    DtlsEvent::ApplicationData(_) => {}
                }
            }
        }
        let state = (t.ice_state(), t.dtls_state());
        if state != t.reported {
            t.reported = state;
            if state.0 == IceState::Disconnected {
                t.ice_disconnected_at.get_or_insert(now);
            } else {
                t.ice_disconnected_at = None;
            }
            let _ = self.events.send(MediaEvent::TransportStateChanged {
                transport_id: t.id,
                ice_state: state.0,
                dtls_state: state.1,
            });
        }
    }

    fn handle_rtp(&mut self, now: Instant, key: usize, from: SocketAddr, data: &mut [u8]) {
        let t = &mut self.transports[key];
        let Some(srtp) = t.srtp.as_mut() else {
            self.counters.dropped_not_connected += 1;
            return;
        };
        let len = match srtp.unprotect_rtp(data) {
            Ok(len) => len,
            // A duplicate (e.g. a retransmission sent on the media SSRC twice): not an attack.
            Err(SrtpError::Replayed) => {
                self.counters.srtp_replays += 1;
                return;
            }
            Err(_) => {
                t.counters.srtp_failures += 1;
                self.counters.srtp_failures += 1;
                return;
            }
        };
        t.ice.on_media_from(from);
        let packet = &mut data[..len];
        let Ok(mut info) = rtp::parse_rtp(packet) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        t.counters.rtp_packets_in += 1;
        t.counters.rtp_bytes_in += len as u64;
        self.counters.rtp_packets_in += 1;
        self.counters.rtp_bytes_in += len as u64;
        let Some(sref) = self.lookup_stream(key, packet, &info) else {
            self.transports[key].counters.unknown_ssrc += 1;
            self.counters.dropped_unknown_ssrc += 1;
            return;
        };
        let p = sref.producer;
        let twcc_ext = self.producers[p].ext_ids.twcc;
        if twcc_ext != 0
            && let Some(seq) =
                rtp::find_extension(&data[..len], &info, twcc_ext).and_then(rtp::parse_transport_cc)
        {
            self.transports[key].twcc.on_packet(now, seq);
        }
        let mut len = len;
        let recovered = sref.rtx;
        if sref.rtx {
            let producer = &self.producers[p];
            let Some(apt) = producer
                .rtx_apt
                .get(info.payload_type as usize)
                .copied()
                .flatten()
            else {
                self.counters.dropped_malformed += 1;
                return;
            };
            let Some(ssrc) = producer.streams[sref.stream].ssrc else {
                return;
            };
            if info.payload_len < 2 {
                // RTX padding-only probe.
                return;
            }
            match ferrosoup_rtc::rtx::unwrap_rtx(&mut data[..len], &info, ssrc, apt) {
                Some(n) => len = n,
                None => {
                    self.counters.dropped_malformed += 1;
                    return;
                }
            }
            match rtp::parse_rtp(&data[..len]) {
                Ok(i) => info = i,
                Err(_) => return,
            }
        }
        let packet = &data[..len];
        let producer = &mut self.producers[p];
        let Some(codec) = producer
            .codecs
            .get(info.payload_type as usize)
            .copied()
            .flatten()
        else {
            self.counters.dropped_unknown_payload_type += 1;
            return;
        };
        let kind = producer.kind;
        if kind == MediaKind::Audio
            && producer.ext_ids.audio_level != 0
            && let Some(level) = rtp::find_extension(packet, &info, producer.ext_ids.audio_level)
                .and_then(rtp::parse_audio_level)
        {
            producer.audio_level_sum += u32::from(level.level);
            producer.audio_level_count += 1;
        }
        let stream = &mut producer.streams[sref.stream];
        let ext_seq = stream.seq.extend(info.sequence_number);
        let payload = &packet[info.payload_offset..info.payload_offset + info.payload_len];
        let keyframe = kind == MediaKind::Video
            && codec.codec != VideoCodec::Other
            && rtp::is_keyframe(codec.codec, payload);
        stream.last_packet = Some(now);
        stream
            .stats
            .on_packet(now, ext_seq, info.timestamp, codec.clock_rate, len);
        if kind == MediaKind::Video {
            stream.nack.on_packet(now, ext_seq, keyframe, recovered);
        }
        if keyframe {
            stream.on_keyframe();
        }
        if let Some(store) = stream.store.as_mut() {
            store.insert(ext_seq, 0, packet);
        }
        if producer.paused {
            return;
        }
        let stream_index = sref.stream;
        let abs_send_time = abs_send_time(now.saturating_duration_since(self.epoch.0));
        // Fan out to consumers. The producer's consumer list is not changed here.
        let Self {
            producers,
            consumers,
            transports,
            send,
            socket,
            counters,
            events,
            ..
        } = self;
        let producer = &producers[p];
        let mut want_keyframe = false;
        for &c in &producer.consumers {
            let consumer = &mut consumers[c];
            if !consumer.is_active() {
                consumer.forwarder.skip(stream_index, ext_seq);
                continue;
            }
            let (decision, change) = consumer.forwarder.decide(
                now,
                stream_index,
                ext_seq,
                info.timestamp,
                info.payload_type,
                keyframe,
            );
            if let Some(change) = change
                && consumer.consumer_type != "simple"
            {
                let _ = events.send(layers_event(consumer.id, change));
            }
            let Decision::Forward {
                seq,
                timestamp,
                payload_type,
            } = decision
            else {
                if consumer.forwarder.needs_keyframe()
                    && consumer.forwarder.target() == Some(stream_index)
                {
                    want_keyframe = true;
                }
                continue;
            };
            let transport = &mut transports[consumer.transport];
            let (Some(srtp), Some(to)) = (transport.srtp.as_mut(), transport.ice.selected_tuple())
            else {
                continue;
            };
            if send.is_full() {
                let out = send.flush(socket);
                counters.on_flush(out);
            }
            let Some(slot) = send.slot() else { continue };
            let overhead = srtp.profile().rtp_overhead();
            if len + overhead > slot.len() {
                counters.dropped_too_big += 1;
                continue;
            }
            slot[..len].copy_from_slice(packet);
            let out = &mut slot[..len];
            let sync = consumer.forwarder.is_sync_point(seq);
            rewrite_for(consumer, out, &info, seq, timestamp, payload_type, sync);
            // Per-hop values: this transport's own transport-wide sequence and send time.
            if consumer.twcc_ext != 0
                && let Some(ext) = rtp::find_extension_mut(out, &info, consumer.twcc_ext)
                && rtp::write_transport_cc(ext, transport.twcc_seq)
            {
                transport.twcc_seq = transport.twcc_seq.wrapping_add(1);
            }
            if consumer.abs_send_time_ext != 0
                && let Some(ext) = rtp::find_extension_mut(out, &info, consumer.abs_send_time_ext)
            {
                rtp::write_abs_send_time(ext, abs_send_time);
            }
            match srtp.protect_rtp_stream(&mut consumer.srtp_index, &mut slot[..], len) {
                Ok(n) => {
                    send.commit(n, to);
                    consumer.send_stats.on_packet(now, timestamp, len);
                    transport.counters.rtp_packets_out += 1;
                    transport.counters.rtp_bytes_out += len as u64;
                    counters.rtp_packets_out += 1;
                    counters.rtp_bytes_out += len as u64;
                }
                Err(_) => counters.srtp_failures += 1,
            }
        }
        if want_keyframe {
            self.request_keyframe(p, stream_index, now);
        }
    }

    /// Finds the producer stream of an incoming packet: by SSRC, else by MID/RID (and then
    /// remembers the SSRC).
    fn lookup_stream(
        &mut self,
        key: usize,
        packet: &[u8],
        info: &RtpHeaderInfo,
    ) -> Option<StreamRef> {
        let t = &mut self.transports[key];
        if let Some(r) = t.ssrc_table.get(&info.ssrc) {
            return Some(*r);
        }
        // Unknown SSRC: identify by MID (+ RID / repaired RID) header extensions.
        let (&p, producer) = t
            .producers
            .iter()
            .find_map(|p| {
                let producer = &self.producers[*p];
                let mid = producer.mid.as_deref()?;
                let got = read_sdes(packet, info, producer.ext_ids.mid)?;
                (got == mid).then_some((p, producer))
            })
            .or({
                // Producers with a single encoding and no MID extension: nothing to match on.
                None
            })?;
        let (stream, rtx) = if let Some(rid) = read_sdes(packet, info, producer.ext_ids.rid) {
            (producer.stream_by_rid(rid)?, false)
        } else if let Some(rid) = read_sdes(packet, info, producer.ext_ids.rrid) {
            (producer.stream_by_rid(rid)?, true)
        } else if producer.streams.len() == 1 {
            (
                0,
                producer
                    .rtx_apt
                    .get(info.payload_type as usize)
                    .copied()
                    .flatten()
                    .is_some(),
            )
        } else {
            return None;
        };
        let producer = &mut self.producers[p];
        let s = &mut producer.streams[stream];
        if rtx {
            s.rtx_ssrc = Some(info.ssrc);
        } else {
            s.ssrc = Some(info.ssrc);
        }
        let r = StreamRef {
            producer: p,
            stream,
            rtx,
        };
        t.ssrc_table.insert(info.ssrc, r);
        Some(r)
    }

    fn handle_rtcp(&mut self, now: Instant, key: usize, from: SocketAddr, data: &mut [u8]) {
        let t = &mut self.transports[key];
        let Some(srtp) = t.srtp.as_mut() else {
            self.counters.dropped_not_connected += 1;
            return;
        };
        let len = match srtp.unprotect_rtcp(data) {
            Ok(len) => len,
            Err(_) => {
                t.counters.srtp_failures += 1;
                self.counters.srtp_failures += 1;
                return;
            }
        };
        t.ice.on_media_from(from);
        t.counters.rtcp_in += 1;
        self.counters.rtcp_in += 1;
        for item in rtcp::parse_compound(&data[..len]) {
            let Ok(item) = item else {
                self.counters.dropped_malformed += 1;
                break;
            };
            match item {
                RtcpItem::SenderReport {
                    ssrc,
                    info,
                    reports,
                } => {
                    if let Some(r) = self.transports[key].ssrc_table.get(&ssrc).copied()
                        && let Some(s) = self
                            .producers
                            .get_mut(r.producer)
                            .and_then(|p| p.streams.get_mut(r.stream))
                    {
                        s.stats.on_sender_report(now, info.ntp, info.rtp_ts);
                        s.last_sr_rtp = Some((info.rtp_ts, now));
                    }
                    for block in reports {
                        self.on_report_block(now, key, &block);
                    }
                }
                RtcpItem::ReceiverReport { reports, .. } => {
                    for block in reports {
                        self.on_report_block(now, key, &block);
                    }
                }
                RtcpItem::Nack {
                    media_ssrc, pairs, ..
                } => {
                    let Some(&c) = self.transports[key].consumer_ssrcs.get(&media_ssrc) else {
                        continue;
                    };
                    for seq in pairs.seqs() {
                        self.retransmit(now, c, seq);
                    }
                }
                RtcpItem::Pli { media_ssrc, .. } => {
                    self.counters.plis_received += 1;
                    if let Some(&c) = self.transports[key].consumer_ssrcs.get(&media_ssrc) {
                        self.consumers[c].keyframe_requests += 1;
                        self.request_keyframe_for_consumer(c, now);
                    }
                }
                RtcpItem::Fir { entries, .. } => {
                    self.counters.plis_received += 1;
                    for (ssrc, _) in entries {
                        if let Some(&c) = self.transports[key].consumer_ssrcs.get(&ssrc) {
                            self.consumers[c].keyframe_requests += 1;
                            self.request_keyframe_for_consumer(c, now);
                        }
                    }
                }
                RtcpItem::Remb { bitrate, .. } => self.transports[key].remb_bitrate = Some(bitrate),
                _ => {}
            }
        }
    }

    fn on_report_block(&mut self, now: Instant, key: usize, block: &rtcp::ReportBlock) {
        let Some(&c) = self.transports[key].consumer_ssrcs.get(&block.ssrc) else {
            return;
        };
        let ntp = self.ntp_now(now);
        let consumer = &mut self.consumers[c];
        if let Some(rtt) = consumer.send_stats.on_report_block(ntp, block) {
            consumer.rtt_ms = rtt.as_secs_f64() * 1000.0;
        }
        consumer.fraction_lost = block.fraction_lost as f64 / 256.0;
    }

    /// Serves one NACKed output sequence number of a consumer from its producer's store.
    fn retransmit(&mut self, now: Instant, c: usize, seq: u16) {
        let Self {
            producers,
            consumers,
            transports,
            send,
            socket,
            counters,
            epoch,
            ..
        } = self;
        let consumer = &mut consumers[c];
        counters.nacks_received += 1;
        // A packet resent less than a round trip ago is on its way: NACKs repeated before it
        // can arrive are not answered again.
        let now_ms = (now.saturating_duration_since(epoch.0).as_millis() as u32).max(1);
        let window_ms = if consumer.rtt_ms > 0.0 {
            consumer.rtt_ms.max(20.0) as u32
        } else {
            100
        };
        let resent_len = consumer.resent.len();
        let resent_slot = (resent_len > 0).then(|| usize::from(seq) % resent_len);
        if let Some(i) = resent_slot {
            let (last_seq, at) = consumer.resent[i];
            if last_seq == seq && at != 0 && now_ms.wrapping_sub(at) < window_ms {
                counters.nacks_throttled += 1;
                return;
            }
        }
        let Some((stream, ext)) = consumer.forwarder.input_for_output(seq) else {
            consumer.nack_misses += 1;
            return;
        };
        let Some(original) = producers
            .get(consumer.producer)
            .and_then(|p| p.streams.get(stream))
            .and_then(|s| s.store.as_ref())
            .and_then(|s| s.get(ext))
        else {
            consumer.nack_misses += 1;
            return;
        };
        let Ok(info) = rtp::parse_rtp(original) else {
            return;
        };
        let Some(pt) = consumer.forwarder.output_payload_type(info.payload_type) else {
            return;
        };
        let transport = &mut transports[consumer.transport];
        let (Some(srtp), Some(to)) = (transport.srtp.as_mut(), transport.ice.selected_tuple())
        else {
            return;
        };
        if send.is_full() {
            let out = send.flush(socket);
            counters.on_flush(out);
        }
        let Some(slot) = send.slot() else { return };
        let ts = consumer.forwarder.output_timestamp(info.timestamp);
        let overhead = srtp.profile().rtp_overhead();
        let len = if let Some((rtx_ssrc, rtx_pt)) = consumer.rtx {
            // Rewrite into the scratch first, then wrap as RTX into the slot.
            let mut tmp = [0u8; MAX_DATAGRAM];
            let n = original.len();
            tmp[..n].copy_from_slice(original);
            rewrite_for(consumer, &mut tmp[..n], &info, seq, ts, pt, false);
            let rtx_seq = consumer.rtx_seq;
            consumer.rtx_seq = consumer.rtx_seq.wrapping_add(1);
            let mut out_info = info;
            out_info.sequence_number = seq;
            match ferrosoup_rtc::rtx::write_rtx(
                &tmp[..n],
                &out_info,
                rtx_ssrc,
                rtx_pt,
                rtx_seq,
                &mut slot[..MAX_DATAGRAM - overhead],
            ) {
                Some(len) => len,
                None => return,
            }
        } else {
            let n = original.len();
            if n + overhead > MAX_DATAGRAM {
                return;
            }
            slot[..n].copy_from_slice(original);
            rewrite_for(consumer, &mut slot[..n], &info, seq, ts, pt, false);
            n
        };
        let index = if consumer.rtx.is_some() {
            &mut consumer.rtx_srtp_index
        } else {
            &mut consumer.srtp_index
        };
        if let Ok(n) = srtp.protect_rtp_stream(index, &mut slot[..], len) {
            send.commit(n, to);
            if let Some(i) = resent_slot {
                consumer.resent[i] = (seq, now_ms);
            }
            consumer.retransmitted += 1;
            counters.retransmissions += 1;
            transport.counters.rtp_packets_out += 1;
            transport.counters.rtp_bytes_out += len as u64;
        }
    }

    /// Timers: ICE consent and DTLS retransmissions, NACKs to producers, RTCP reports,
    /// keyframe request retries, layer targets. Called by the worker loop every tick.
    pub fn on_tick(&mut self, now: Instant) {
        let mut keys = std::mem::take(&mut self.key_scratch);
        keys.clear();
        keys.extend(self.transports.iter().map(|(k, _)| k));
        for &key in &keys {
            let t = &mut self.transports[key];
            t.ice.handle_timeout(now);
            if let Some(dtls) = t.dtls.as_mut()
                && dtls.poll_timeout().is_some_and(|at| at <= now)
            {
                dtls.handle_timeout(now);
            }
            self.drain_transport(key, now);
            let t = &mut self.transports[key];
            if let Some(since) = t.ice_disconnected_at {
                let timeout = self.ice_timeouts.restart_required;
                let cooled = t
                    .ice_restart_notified_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= timeout);
                if now.saturating_duration_since(since) >= timeout && cooled {
                    t.ice_restart_notified_at = Some(now);
                    let _ = self
                        .events
                        .send(MediaEvent::IceRestartRequired { transport_id: t.id });
                }
            }
            if t.srtp.is_some() {
                if now >= t.next_twcc_feedback_at && t.twcc.has_pending() {
                    t.next_twcc_feedback_at = now + FEEDBACK_INTERVAL;
                    self.send_twcc_feedback(key);
                }
                self.send_nacks(key, now);
                if now >= self.transports[key].next_rtcp_at {
                    self.transports[key].next_rtcp_at = now + RTCP_INTERVAL;
                    self.send_reports(key, now);
                }
            }
        }
        // Keyframe requests overdue (no keyframe came) or deferred by the rate limit.
        keys.clear();
        keys.extend(self.producers.iter().map(|(k, _)| k));
        for &p in &keys {
            for s in 0..self.producers[p].streams.len() {
                if self.producers[p].streams[s].keyframe_request_due(now) {
                    self.send_keyframe_request(p, s, now);
                }
            }
        }
        // Keyframe retries and layer targets (a layer may have started or stopped).
        keys.clear();
        keys.extend(self.consumers.iter().map(|(k, _)| k));
        for &c in &keys {
            self.update_consumer_target(c, now);
            let consumer = &self.consumers[c];
            if consumer.is_active() && consumer.forwarder.needs_keyframe() {
                self.request_keyframe_for_consumer(c, now);
            }
        }
        self.key_scratch = keys;
        self.detect_active_speakers(now);
        if now >= self.next_score_at {
            self.next_score_at = now + SCORE_INTERVAL;
            self.update_scores();
        }
        self.flush();
        self.shared.publish(&self.counters);
    }

    /// Per router, reports the loudest audio producer of the last interval when it changes
    /// (mediasoup's audio-level observer, fed by the ssrc-audio-level extension).
    fn detect_active_speakers(&mut self, now: Instant) {
        let Self {
            routers,
            transports,
            producers,
            events,
            ..
        } = self;
        for (router_id, router) in routers.iter_mut() {
            let due = router
                .next_speaker_check
                .get_or_insert(now + SPEAKER_INTERVAL);
            if now < *due {
                continue;
            }
            *due = now + SPEAKER_INTERVAL;
            let mut loudest: Option<(ProducerId, u32)> = None;
            for &t in &router.transports {
                for &p in &transports[t].producers {
                    let producer = &mut producers[p];
                    if producer.audio_level_count == 0 {
                        continue;
                    }
                    let avg = producer.audio_level_sum / producer.audio_level_count;
                    producer.audio_level_sum = 0;
                    producer.audio_level_count = 0;
                    if producer.paused || avg > u32::from(SPEAKER_THRESHOLD) {
                        continue;
                    }
                    if loudest.is_none_or(|(_, l)| avg < l) {
                        loudest = Some((producer.id, avg));
                    }
                }
            }
            if let Some((producer_id, level)) = loudest
                && router.active_speaker != Some(producer_id)
            {
                router.active_speaker = Some(producer_id);
                let _ = events.send(MediaEvent::ActiveSpeaker {
                    router_id: *router_id,
                    producer_id,
                    volume: -(level as i8),
                });
            }
        }
    }

    /// Scores 0..10 from packet loss, reported when they change: a producer's from what it
    /// loses on the way in, a consumer's from what its receiver reports lost.
    fn update_scores(&mut self) {
        for (_, producer) in self.producers.iter_mut() {
            let mut worst = 10;
            for stream in producer
                .streams
                .iter_mut()
                .filter(|s| s.last_packet.is_some())
            {
                stream.score = loss_score(stream.fraction_lost);
                worst = worst.min(stream.score);
            }
            if worst != producer.score {
                producer.score = worst;
                let _ = self.events.send(MediaEvent::ProducerScore {
                    producer_id: producer.id,
                    score: worst,
                });
            }
        }
        for (_, consumer) in self.consumers.iter_mut() {
            let producer_score = self
                .producers
                .get(consumer.producer)
                .and_then(|p| {
                    // The stream forwarded, or (paused, switching) the one wanted, or the first.
                    let s = consumer
                        .forwarder
                        .current()
                        .or(consumer.forwarder.target())
                        .unwrap_or(0);
                    p.streams.get(s)
                })
                .map_or(0, |s| s.score);
            let score = loss_score(consumer.fraction_lost).min(producer_score);
            if score != consumer.score || producer_score != consumer.reported_producer_score {
                consumer.score = score;
                consumer.reported_producer_score = producer_score;
                let _ = self.events.send(MediaEvent::ConsumerScore {
                    consumer_id: consumer.id,
                    score,
                    producer_score,
                });
            }
        }
    }

    /// Transport-cc feedback about everything the client sent since the last one.
    fn send_twcc_feedback(&mut self, key: usize) {
        let media_ssrc = self.transports[key]
            .producers
            .iter()
            .find_map(|&p| self.producers[p].streams.iter().find_map(|s| s.ssrc))
            .unwrap_or(0);
        // Bounded: each round reports at least one packet.
        for _ in 0..16 {
            let t = &mut self.transports[key];
            if !t.twcc.has_pending() {
                break;
            }
            let Some(len) = t
                .twcc
                .write_feedback(&mut self.rtcp_scratch[..], 1, media_ssrc)
            else {
                break;
            };
            self.send_rtcp(key, len);
        }
    }

    fn send_nacks(&mut self, key: usize, now: Instant) {
        let producers = self.transports[key].producers.clone();
        for p in producers {
            let n_streams = self.producers[p].streams.len();
            for s in 0..n_streams {
                let stream = &mut self.producers[p].streams[s];
                let Some(media_ssrc) = stream.ssrc else {
                    continue;
                };
                let rtt = Duration::from_millis(50);
                stream.nack.poll_nacks(now, rtt, &mut self.nack_scratch);
                if stream.nack.too_many_missing()
                    && stream.on_keyframe_request(now) == KeyframeAction::Send
                {
                    // Too much lost to repair: a keyframe is the faster way back.
                    self.send_keyframe_request(p, s, now);
                    continue;
                }
                let stream = &mut self.producers[p].streams[s];
                if self.nack_scratch.is_empty() {
                    continue;
                }
                stream.nacks_sent += self.nack_scratch.len() as u64;
                self.counters.nacks_sent += self.nack_scratch.len() as u64;
                let len = rtcp::write_nack(
                    &mut self.rtcp_scratch[..],
                    1,
                    media_ssrc,
                    &self.nack_scratch,
                )
                .unwrap_or(0);
                self.send_rtcp(key, len);
            }
        }
    }

    /// Sender Reports for the consumers and Receiver Reports for the producers of a
    /// transport, packed into compound packets that fit a datagram.
    fn send_reports(&mut self, key: usize, now: Instant) {
        let ntp = self.ntp_now(now);
        let mut len = 0;
        let limit = MAX_DATAGRAM - 100;
        let consumers = self.transports[key].consumers.clone();
        for c in consumers {
            let consumer = &self.consumers[c];
            let ssrc = consumer.ssrc;
            let Some(mut info) = consumer
                .send_stats
                .sender_report(now, ntp, consumer.clock_rate)
            else {
                continue;
            };
            // Lip-sync: derive the RTP time from the producer's own Sender Report when there
            // is one, so audio and video of one sender keep their relative timing.
            let producer_sr = self
                .producers
                .get(consumer.producer)
                .and_then(|p| consumer.forwarder.current().and_then(|s| p.streams.get(s)))
                .and_then(|s| s.last_sr_rtp);
            if let Some((sr_rtp, at)) = producer_sr {
                let elapsed =
                    now.saturating_duration_since(at).as_secs_f64() * consumer.clock_rate as f64;
                info.rtp_ts = consumer
                    .forwarder
                    .output_timestamp(sr_rtp.wrapping_add(elapsed as u32));
            }
            if len + 28 > limit {
                self.send_rtcp(key, len);
                len = 0;
            }
            len += rtcp::write_sr(&mut self.rtcp_scratch[len..], ssrc, &info, &[]).unwrap_or(0);
        }
        let producers = self.transports[key].producers.clone();
        for p in producers {
            for s in 0..self.producers[p].streams.len() {
                let stream = &mut self.producers[p].streams[s];
                let Some(ssrc) = stream.ssrc else { continue };
                if stream.last_packet.is_none() {
                    continue;
                }
                let block = stream.stats.report_block(now, ssrc);
                stream.fraction_lost = f64::from(block.fraction_lost) / 256.0;
                if len + 32 > limit {
                    self.send_rtcp(key, len);
                    len = 0;
                }
                len += rtcp::write_rr(&mut self.rtcp_scratch[len..], 1, &[block]).unwrap_or(0);
            }
        }
        if len > 0 {
            self.send_rtcp(key, len);
        }
    }

    /// Protects `rtcp_scratch[..len]` and queues it to a transport's client.
    fn send_rtcp(&mut self, key: usize, len: usize) {
        if len == 0 {
            return;
        }
        let Some(t) = self.transports.get_mut(key) else {
            return;
        };
        let (Some(srtp), Some(to)) = (t.srtp.as_mut(), t.ice.selected_tuple()) else {
            return;
        };
        if self.send.is_full() {
            let out = self.send.flush(&self.socket);
            self.counters.on_flush(out);
        }
        let Some(slot) = self.send.slot() else { return };
        if len + srtp.profile().rtcp_overhead() > slot.len() {
            return;
        }
        slot[..len].copy_from_slice(&self.rtcp_scratch[..len]);
        if let Ok(n) = srtp.protect_rtcp(&mut slot[..], len) {
            self.send.commit(n, to);
            t.counters.rtcp_out += 1;
            self.counters.rtcp_out += 1;
        }
    }

    fn send_datagram(&mut self, data: &[u8], to: SocketAddr) {
        if self.send.is_full() {
            let out = self.send.flush(&self.socket);
            self.counters.on_flush(out);
        }
        self.send.push(data, to);
    }

    /// Sends everything queued.
    pub fn flush(&mut self) {
        let out = self.send.flush(&self.socket);
        self.counters.on_flush(out);
    }

    fn emit_layers(&self, id: ConsumerId, change: LayerChange) {
        let _ = self.events.send(layers_event(id, change));
    }

    /// NTP time (seconds since 1900 in 32.32 fixed point) of an `Instant`.
    fn ntp_now(&self, now: Instant) -> u64 {
        let wall = self.epoch.1 + now.saturating_duration_since(self.epoch.0);
        let since_unix = wall
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = since_unix.as_secs() + NTP_UNIX_OFFSET;
        let frac = ((since_unix.subsec_nanos() as u64) << 32) / 1_000_000_000;
        (secs << 32) | frac
    }
}

/// Rewrites a copy of a producer packet for a consumer, in place: SSRC, sequence number,
/// timestamp, payload type, header extension ids, and the VP8 picture numbering (re-based
/// when `sync` marks the first packet after a switch).
fn rewrite_for(
    consumer: &mut Consumer,
    out: &mut [u8],
    info: &RtpHeaderInfo,
    seq: u16,
    timestamp: u32,
    payload_type: u8,
    sync: bool,
) {
    rtp::set_ssrc(out, consumer.ssrc);
    rtp::set_sequence_number(out, seq);
    rtp::set_timestamp(out, timestamp);
    rtp::set_payload_type(out, payload_type);
    rtp::remap_extension_ids(out, info, &consumer.ext_map);
    if let Some(vp8) = consumer.vp8.as_mut() {
        vp8.rewrite(
            &mut out[info.payload_offset..info.payload_offset + info.payload_len],
            sync,
        );
    }
}

/// Reads a MID / RID style (SDES item) header extension; `id` 0 means not negotiated.
fn read_sdes<'a>(packet: &'a [u8], info: &RtpHeaderInfo, id: u8) -> Option<&'a str> {
    if id == 0 {
        return None;
    }
    rtp::find_extension(packet, info, id).and_then(rtp::parse_sdes_str)
}

/// abs-send-time (6.18 fixed-point seconds, 24 bits) of a time since the worker's epoch.
fn abs_send_time(since_epoch: Duration) -> u32 {
    ((since_epoch.as_nanos() << 18) / 1_000_000_000) as u32 & 0x00ff_ffff
}

/// A 0..10 score for a loss fraction (0..1): 10 without loss, 0 from 50% loss up.
fn loss_score(fraction_lost: f64) -> u8 {
    (10.0 * (1.0 - (fraction_lost * 2.0).min(1.0))).round() as u8
}

fn layers_event(consumer_id: ConsumerId, change: LayerChange) -> MediaEvent {
    MediaEvent::ConsumerLayersChanged {
        consumer_id,
        spatial_layer: change.spatial,
        temporal_layer: change.spatial.map(|_| 0),
    }
}
