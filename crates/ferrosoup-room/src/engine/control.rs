//! Requests from the control path, run on the worker thread: create, connect, pause,
//! close, stats. Each validates ids against the router it is asked for (another router's
//! object is "not found"), changes the tree, and sends what the change requires (a DTLS
//! flight, a keyframe request) into `out`.

use std::time::Instant;

use ferrosoup_proto::ortc::ProducerType;
use ferrosoup_proto::rtp_parameters::MediaKind;
use ferrosoup_rtc::dtls::{DtlsRole, Fingerprint};
use ferrosoup_rtc::ice::{IceCredentials, IceLiteServer};
use ferrosoup_rtc::rtcp::SendStats;
use ferrosoup_rtc::rtp::{ExtensionIds, VideoCodec};
use ferrosoup_rtc::srtp::SendIndex;
use ferrosoup_rtc::vp8::Vp8PictureRewriter;

use super::{Engine, feedback};
use crate::allocator::UpgradeHold;
use crate::arena::{ConsumerKey, ProducerKey, TransportKey};
use crate::consumer::{
    Allocation, Consumer, PipeStream, RESENT_HISTORY, Resent, RetransmitBudget, RtxOut,
};
use crate::error::RoomError;
use crate::forwarder::ConsumerForwarder;
use crate::ids::{ConsumerId, DataConsumerId, DataProducerId, ProducerId, RouterId, TransportId};
use crate::layers::{MAX_SVC_SPATIAL_LAYERS, SvcMode};
use crate::producer::{CodecInfo, Producer, RecvStream};
use crate::stats::BandwidthGauges;
use crate::timers::Timer;
use crate::transmit::Transmit;
use crate::transport::{MAX_INCOMING_SSRCS, RemoteDtls, StreamRef, Transport, TransportTables};

/// A media codec a producer sends, by payload type.
#[derive(Clone, Copy, Debug)]
pub struct CodecSpec {
    /// Payload type.
    pub payload_type: u8,
    /// What the worker needs to know of it.
    pub info: CodecInfo,
}

/// An RTX payload type and the media payload type it repairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtxMapping {
    /// RTX payload type.
    pub payload_type: u8,
    /// Associated (repaired) payload type.
    pub apt: u8,
}

/// One encoding of a producer, as the client announced it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodingSpec {
    /// Media SSRC, if given.
    pub ssrc: Option<u32>,
    /// RTX SSRC, if given.
    pub rtx_ssrc: Option<u32>,
    /// RID, for RID-based simulcast.
    pub rid: Option<String>,
}

/// What `produce` needs, derived from the client's RTP parameters by the control path.
#[derive(Clone, Debug)]
pub struct ProduceSpec {
    /// Audio or video.
    pub kind: MediaKind,
    /// Media codecs.
    pub codecs: Vec<CodecSpec>,
    /// RTX payload types.
    pub rtx: Vec<RtxMapping>,
    /// Encodings in spatial order.
    pub encodings: Vec<EncodingSpec>,
    /// The client's MID.
    pub mid: Option<String>,
    /// Ids of the header extensions the worker reads.
    pub ext_ids: ExtensionIds,
    /// Start paused.
    pub paused: bool,
    /// Type of its consumers.
    pub producer_type: ProducerType,
    /// How the spatial layers inside its single stream depend on each other (SVC).
    pub svc: SvcMode,
}

impl ProduceSpec {
    /// The spec of the pipe producer that, on another node, stands for the producer made
    /// with this spec: the same codecs, header extensions, layers and state, its stream `i`
    /// arriving under `ssrcs[i]` (the pipe consumer's), without RTX (the pipe carries
    /// repaired packets on the media SSRCs) or MID.
    pub fn for_pipe(&self, ssrcs: &[u32]) -> ProduceSpec {
        ProduceSpec {
            kind: self.kind,
            codecs: self.codecs.clone(),
            rtx: Vec::new(),
            encodings: self
                .encodings
                .iter()
                .zip(ssrcs)
                .map(|(e, &ssrc)| EncodingSpec {
                    ssrc: Some(ssrc),
                    rtx_ssrc: None,
                    rid: e.rid.clone(),
                })
                .collect(),
            mid: None,
            ext_ids: self.ext_ids,
            paused: self.paused,
            producer_type: self.producer_type,
            svc: self.svc,
        }
    }
}

/// What `consume` needs, derived by the control path from the consumer's RTP parameters.
#[derive(Clone, Debug)]
pub struct ConsumeSpec {
    /// Producer payload type → consumer payload type (`NO_PT`: none).
    pub pt_map: [u8; 128],
    /// Producer header extension id → consumer id (0: drop).
    pub ext_map: [u8; 256],
    /// Outgoing SSRC.
    pub ssrc: u32,
    /// Outgoing RTX stream.
    pub rtx: Option<RtxOut>,
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
    /// VP8: keep PictureID/TL0PICIDX continuous across layer switches and dropped
    /// temporal layers.
    pub vp8_rewrite: bool,
}

/// A consumer closed with its producer or transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClosedConsumer {
    /// The consumer.
    pub consumer_id: ConsumerId,
    /// The producer it consumed.
    pub producer_id: ProducerId,
}

/// A data consumer closed with its data producer or transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClosedDataConsumer {
    /// The data consumer.
    pub data_consumer_id: DataConsumerId,
    /// The data producer it consumed.
    pub data_producer_id: DataProducerId,
}

/// Objects closed as a side effect of a close request, for notifications.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Closed {
    /// Producers closed.
    pub producers: Vec<ProducerId>,
    /// Consumers closed.
    pub consumers: Vec<ClosedConsumer>,
    /// Data producers closed.
    pub data_producers: Vec<DataProducerId>,
    /// Data consumers closed.
    pub data_consumers: Vec<ClosedDataConsumer>,
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

/// The answer to `consume` from the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Consumed {
    /// The new consumer.
    pub id: ConsumerId,
    /// Whether its producer is paused.
    pub producer_paused: bool,
}

impl Engine {
    /// Ids of the routers on this worker.
    pub fn router_ids(&self) -> Vec<RouterId> {
        self.routers.keys().copied().collect()
    }

    /// Registers a router.
    pub fn create_router(&mut self, id: RouterId) {
        self.routers.entry(id).or_default();
        self.objects_changed();
    }

    /// Closes a router and everything in it.
    pub fn close_router(&mut self, id: RouterId, now: Instant, out: &mut dyn Transmit) {
        if let Some(router) = self.routers.remove(&id) {
            for t in router.transports {
                self.remove_transport(t, now, out);
            }
        }
        self.timers.disarm(Timer::ActiveSpeaker(id));
        self.objects_changed();
    }

    /// Creates a WebRTC transport in a router.
    pub fn create_transport(
        &mut self,
        router_id: RouterId,
        now: Instant,
    ) -> Result<TransportInfo, RoomError> {
        let router = self
            .routers
            .get_mut(&router_id)
            .ok_or(RoomError::NotFound("router"))?;
        let ice = IceCredentials::generate();
        let id = TransportId::new();
        let mut ice_server = IceLiteServer::new(ice.clone(), now);
        ice_server.set_consent_timeout(self.ice_timeouts.consent);
        let key = self
            .transports
            .insert(Transport::new(id, router_id, ice_server, now));
        router.transports.push(key);
        self.transport_ids.insert(id, key);
        self.by_ufrag.insert(ice.ufrag.clone(), key);
        self.arm_connection_timer(key);
        self.objects_changed();
        Ok(TransportInfo {
            id,
            ice,
            port: self.port,
            fingerprints: self.certificate.fingerprints().to_vec(),
        })
    }

    /// The key of an object of `router_id`, found through its id map and the transport it
    /// lives on; `NotFound(what)` when unknown or in another router.
    fn key_in_router<Id: std::hash::Hash + Eq, K: Copy>(
        &self,
        ids: &std::collections::HashMap<Id, K>,
        id: &Id,
        transport_of: impl Fn(K) -> TransportKey,
        router_id: RouterId,
        what: &'static str,
    ) -> Result<K, RoomError> {
        let key = *ids.get(id).ok_or(RoomError::NotFound(what))?;
        if self.transports[transport_of(key)].router_id != router_id {
            return Err(RoomError::NotFound(what));
        }
        Ok(key)
    }

    pub(super) fn transport_key(
        &self,
        router_id: RouterId,
        id: TransportId,
    ) -> Result<TransportKey, RoomError> {
        self.key_in_router(&self.transport_ids, &id, |k| k, router_id, "transport")
    }

    fn producer_key(&self, router_id: RouterId, id: ProducerId) -> Result<ProducerKey, RoomError> {
        self.key_in_router(
            &self.producer_ids,
            &id,
            |k| self.producers[k].transport,
            router_id,
            "producer",
        )
    }

    fn consumer_key(&self, router_id: RouterId, id: ConsumerId) -> Result<ConsumerKey, RoomError> {
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
        out: &mut dyn Transmit,
    ) -> Result<(), RoomError> {
        let key = self.transport_key(router_id, id)?;
        let t = &mut self.transports[key];
        if t.plain.is_some() {
            return Err(RoomError::InvalidState(
                "a plain transport takes ip and port, not dtlsParameters".into(),
            ));
        }
        if t.remote_dtls.is_some() {
            return Err(RoomError::InvalidState(
                "transport already connected".into(),
            ));
        }
        let local_role = match remote_role {
            DtlsRole::Client => DtlsRole::Server,
            DtlsRole::Server => DtlsRole::Client,
        };
        t.remote_dtls = Some(RemoteDtls {
            local_role,
            fingerprints,
        });
        // As DTLS client we can only start once ICE has a tuple to send to.
        if local_role == DtlsRole::Server || t.ice.selected_tuple().is_some() {
            t.start_dtls(&self.certificate, now)
                .map_err(|e| RoomError::Internal(format!("dtls: {e}")))?;
        }
        self.drain_transport(key, now, out);
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
        self.arm_connection_timer(key);
        Ok(creds)
    }

    /// The client's `setMaxIncomingBitrate` (bit/s): while the transport has producers, a
    /// REMB of that bitrate goes to the client now (once connected) and on every report
    /// round. 0 lifts a limit: four REMBs of bitrate 0 follow the same way, then none, as
    /// mediasoup does.
    pub fn set_max_incoming_bitrate(
        &mut self,
        router_id: RouterId,
        id: TransportId,
        bitrate: u32,
        out: &mut dyn Transmit,
    ) -> Result<(), RoomError> {
        let key = self.transport_key(router_id, id)?;
        let t = &mut self.transports[key];
        let previous = std::mem::replace(&mut t.max_incoming_bitrate, bitrate);
        if bitrate > 0 {
            t.unlimited_rembs = 0;
        } else if previous > 0 {
            t.unlimited_rembs = feedback::UNLIMITED_REMBS;
        } else {
            return Ok(());
        }
        // At once rather than at the next report round, which repeats it.
        self.send_limitation_remb(key, out);
        Ok(())
    }

    /// Closes a transport with its producers (and their consumers) and consumers.
    pub fn close_transport(
        &mut self,
        router_id: RouterId,
        id: TransportId,
        now: Instant,
        out: &mut dyn Transmit,
    ) -> Result<Closed, RoomError> {
        let key = self.transport_key(router_id, id)?;
        if let Some(r) = self.routers.get_mut(&router_id) {
            r.transports.retain(|&t| t != key);
        }
        let closed = self.remove_transport(key, now, out);
        self.objects_changed();
        Ok(closed)
    }

    pub(super) fn remove_transport(
        &mut self,
        key: TransportKey,
        now: Instant,
        out: &mut dyn Transmit,
    ) -> Closed {
        let mut closed = Closed::default();
        let data_producers = std::mem::take(&mut self.transports[key].data_producers);
        for p in data_producers {
            let Some((data_producer_id, consumers)) = self.remove_data_producer(p, now, out) else {
                continue;
            };
            closed.data_producers.push(data_producer_id);
            closed
                .data_consumers
                .extend(
                    consumers
                        .into_iter()
                        .map(|data_consumer_id| ClosedDataConsumer {
                            data_consumer_id,
                            data_producer_id,
                        }),
                );
        }
        let data_consumers = std::mem::take(&mut self.transports[key].data_consumers);
        closed.data_consumers.extend(
            data_consumers
                .into_iter()
                .filter_map(|c| self.remove_data_consumer(c, now, out)),
        );
        self.close_sctp(key, now, out);
        let producers = std::mem::take(&mut self.transports[key].producers);
        for p in producers {
            let Some((producer_id, consumers)) = self.remove_producer(p) else {
                continue;
            };
            closed.producers.push(producer_id);
            closed
                .consumers
                .extend(consumers.into_iter().map(|consumer_id| ClosedConsumer {
                    consumer_id,
                    producer_id,
                }));
        }
        let consumers = std::mem::take(&mut self.transports[key].consumers);
        closed.consumers.extend(
            consumers
                .into_iter()
                .filter_map(|c| self.remove_consumer(c)),
        );
        let Some(mut t) = self.transports.remove(key) else {
            return closed;
        };
        if let Some(bwe) = &t.bwe {
            self.counters
                .bwe
                .replace(&bwe.gauges, &BandwidthGauges::default());
        }
        if let (Some(dtls), Some(remote)) = (t.dtls.as_mut(), t.ice.selected_tuple()) {
            dtls.close();
            while let Some(d) = dtls.poll_transmit() {
                out.push(&d, remote);
            }
        }
        if let Some(plain) = t.plain.take() {
            self.close_plain_path(&plain, out);
        }
        t.ice.close();
        for tuple in &t.tuples {
            self.by_tuple.remove(tuple);
            out.tuple_removed(*tuple);
        }
        self.by_ufrag.remove(&t.ice.credentials().ufrag);
        self.transport_ids.remove(&t.id);
        for timer in [
            Timer::Connection(key),
            Timer::Reports(key),
            Timer::TwccFeedback(key),
            Timer::Probe(key),
            Timer::Pace(key),
        ] {
            self.timers.disarm(timer);
        }
        closed
    }

    /// Adds a producer to a transport.
    pub fn produce(
        &mut self,
        router_id: RouterId,
        transport_id: TransportId,
        spec: ProduceSpec,
        now: Instant,
    ) -> Result<ProducerId, RoomError> {
        self.produce_as(router_id, transport_id, ProducerId::new(), spec, now)
    }

    /// Adds a producer with a given id to a transport: a pipe producer takes the id of the
    /// producer it stands for, so consumers on both ends name the same producer.
    pub fn produce_as(
        &mut self,
        router_id: RouterId,
        transport_id: TransportId,
        id: ProducerId,
        spec: ProduceSpec,
        now: Instant,
    ) -> Result<ProducerId, RoomError> {
        if self.producer_ids.contains_key(&id) {
            return Err(RoomError::Invalid(format!("producer {id} already exists")));
        }
        let t = self.transport_key(router_id, transport_id)?;
        let transport = &self.transports[t];
        for e in &spec.encodings {
            for s in [e.ssrc, e.rtx_ssrc].into_iter().flatten() {
                if transport.ssrc_table.contains_key(&s) {
                    return Err(RoomError::Invalid(format!(
                        "rtpParameters.encodings: ssrc {s} already in use"
                    )));
                }
            }
        }
        if let Some(mid) = &spec.mid
            && transport.mid_table.contains_key(mid)
        {
            return Err(RoomError::Invalid(format!(
                "rtpParameters.mid: {mid} already in use"
            )));
        }
        if spec.encodings.len() > usize::from(u8::MAX) {
            return Err(RoomError::Invalid(
                "rtpParameters.encodings: too many".into(),
            ));
        }
        let encodings: usize = transport
            .producers
            .iter()
            .map(|&p| self.producers[p].streams.len())
            .sum::<usize>()
            + spec.encodings.len();
        if 2 * encodings > MAX_INCOMING_SSRCS {
            return Err(RoomError::Invalid(format!(
                "rtpParameters.encodings: a transport receives at most {} encodings \
                 ({MAX_INCOMING_SSRCS} SSRCs with RTX)",
                MAX_INCOMING_SSRCS / 2
            )));
        }
        let mut codecs = [None; 128];
        for c in &spec.codecs {
            if let Some(slot) = codecs.get_mut(usize::from(c.payload_type)) {
                *slot = Some(c.info);
            }
        }
        let mut rtx_apt = [None; 128];
        for r in &spec.rtx {
            if let Some(slot) = rtx_apt.get_mut(usize::from(r.payload_type)) {
                *slot = Some(r.apt);
            }
        }
        let spatial_layers = if spec.svc == SvcMode::None {
            1
        } else {
            MAX_SVC_SPATIAL_LAYERS
        };
        let streams = spec
            .encodings
            .iter()
            .map(|e| RecvStream::new(spec.kind, e.ssrc, e.rtx_ssrc, e.rid.clone(), spatial_layers))
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
            producer_type: spec.producer_type,
            svc: spec.svc,
            score: 10,
            audio_level_sum: 0,
            audio_level_count: 0,
        });
        self.producer_ids.insert(id, key);
        let transport = &mut self.transports[t];
        transport.producers.push(key);
        for (i, e) in spec.encodings.iter().enumerate() {
            for (ssrc, rtx) in [(e.ssrc, false), (e.rtx_ssrc, true)] {
                if let Some(s) = ssrc {
                    let r = StreamRef {
                        producer: key,
                        stream: i,
                        rtx,
                    };
                    transport.ssrc_table.insert(s, r);
                }
            }
        }
        if let Some(mid) = spec.mid {
            transport.mid_table.insert(mid, key);
        }
        if spec.kind == MediaKind::Audio && spec.ext_ids.audio_level != 0 {
            self.timers.arm(
                Timer::ActiveSpeaker(router_id),
                now + super::observers::SPEAKER_INTERVAL,
            );
        }
        self.objects_changed();
        Ok(id)
    }

    /// Pauses or resumes a producer; returns the consumers whose `producerPaused` changed.
    pub fn set_producer_paused(
        &mut self,
        router_id: RouterId,
        id: ProducerId,
        paused: bool,
        now: Instant,
        out: &mut dyn Transmit,
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
            self.on_consumer_activity_changed(c, now, out);
        }
        Ok(changed)
    }

    /// Closes a producer; returns the consumers closed with it.
    pub fn close_producer(
        &mut self,
        router_id: RouterId,
        id: ProducerId,
    ) -> Result<Vec<ConsumerId>, RoomError> {
        let key = self.producer_key(router_id, id)?;
        let t = self.producers[key].transport;
        self.transports[t].producers.retain(|&p| p != key);
        let consumers = self.remove_producer(key).map(|(_, c)| c);
        self.objects_changed();
        Ok(consumers.unwrap_or_default())
    }

    /// Removes a producer and its consumers (its transport's list is the caller's to fix).
    fn remove_producer(&mut self, key: ProducerKey) -> Option<(ProducerId, Vec<ConsumerId>)> {
        let p = self.producers.remove(key)?;
        self.note_if_pipe(p.transport);
        let closed = p
            .consumers
            .iter()
            .filter_map(|&c| self.remove_consumer(c))
            .map(|c| c.consumer_id)
            .collect();
        if let Some(t) = self.transports.get_mut(p.transport) {
            t.ssrc_table.retain(|_, r| r.producer != key);
            t.mid_table.retain(|_, v| *v != key);
        }
        self.producer_ids.remove(&p.id);
        for s in 0..p.streams.len() as u8 {
            self.timers.disarm(Timer::Nack(key, s));
            self.timers.disarm(Timer::KeyframeRequest(key, s));
        }
        self.timers.disarm(Timer::StreamActivity(key));
        Some((p.id, closed))
    }

    /// Adds a consumer of a producer on a transport.
    pub fn consume(
        &mut self,
        router_id: RouterId,
        transport_id: TransportId,
        producer_id: ProducerId,
        spec: ConsumeSpec,
        now: Instant,
        out: &mut dyn Transmit,
    ) -> Result<Consumed, RoomError> {
        let t = self.transport_key(router_id, transport_id)?;
        let p = self.producer_key(router_id, producer_id)?;
        let producer = &self.producers[p];
        let kind = producer.kind;
        let producer_paused = producer.paused;
        let id = ConsumerId::new();
        let forwarder = ConsumerForwarder::new(
            kind,
            spec.pt_map,
            spec.clock_rate,
            rand::random(),
            rand::random(),
            producer.svc,
        );
        let codec = producer
            .codecs
            .iter()
            .flatten()
            .map(|c| c.codec)
            .find(|&c| c != VideoCodec::Other)
            .unwrap_or(VideoCodec::Other);
        let key = self.consumers.insert(Consumer {
            id,
            producer_id,
            producer: p,
            transport: t,
            kind,
            consumer_type: producer.producer_type,
            paused: spec.paused,
            transport_connected: self.transports[t].can_send(),
            producer_paused,
            ssrc: spec.ssrc,
            rtx: spec.rtx,
            rtx_seq: rand::random(),
            srtp_index: SendIndex::default(),
            rtx_srtp_index: SendIndex::default(),
            ext_map: spec.ext_map,
            vp8: spec.vp8_rewrite.then(Vp8PictureRewriter::new),
            codec,
            twcc_ext: spec.twcc_ext,
            abs_send_time_ext: spec.abs_send_time_ext,
            clock_rate: spec.clock_rate,
            forwarder,
            preferred_spatial: spec.preferred_spatial,
            preferred_temporal: spec.preferred_temporal,
            priority: 1,
            allocation: Allocation::Unlimited,
            send_stats: SendStats::new(),
            rtt: None,
            fraction_lost: 0.0,
            retransmitted: 0,
            retransmit_budget: RetransmitBudget::default(),
            upgrade_hold: UpgradeHold::default(),
            nack_misses: 0,
            resent: if kind == MediaKind::Video {
                vec![Resent::default(); RESENT_HISTORY]
            } else {
                Vec::new()
            },
            keyframe_requests: 0,
            score: 10,
            reported_producer_score: 10,
            pipe: Vec::new(),
        });
        self.consumer_ids.insert(id, key);
        self.producers[p].consumers.push(key);
        let transport = &mut self.transports[t];
        transport.consumers.push(key);
        transport.consumer_ssrcs.insert(spec.ssrc, key);
        if let Some(rtx) = spec.rtx {
            transport.consumer_ssrcs.insert(rtx.ssrc, key);
        }
        if spec.twcc_ext != 0 {
            self.start_bandwidth_estimation(t, now);
        }
        // The new consumer starts on the layer the estimate allows.
        self.allocate(t, now, out);
        self.on_consumer_activity_changed(key, now, out);
        self.objects_changed();
        Ok(Consumed {
            id,
            producer_paused,
        })
    }

    /// Adds a pipe consumer of a producer on a plain transport that leads to another node:
    /// it forwards every stream of the producer (all simulcast layers) as the producer
    /// sends it, stream `i` under `ssrcs[i]` (the SSRCs the pipe producer on the other
    /// node declares), and answers NACKs and keyframe requests for those SSRCs.
    pub fn consume_pipe(
        &mut self,
        router_id: RouterId,
        transport_id: TransportId,
        producer_id: ProducerId,
        ssrcs: &[u32],
        now: Instant,
        out: &mut dyn Transmit,
    ) -> Result<Consumed, RoomError> {
        let t = self.transport_key(router_id, transport_id)?;
        let p = self.producer_key(router_id, producer_id)?;
        if self.transports[t].plain.is_none() {
            return Err(RoomError::InvalidState(
                "a pipe consumer needs a plain transport".into(),
            ));
        }
        let producer = &self.producers[p];
        if ssrcs.len() != producer.streams.len() {
            return Err(RoomError::Invalid(format!(
                "pipe ssrcs: {} given for {} producer streams",
                ssrcs.len(),
                producer.streams.len()
            )));
        }
        for (i, s) in ssrcs.iter().enumerate() {
            if ssrcs[..i].contains(s) || self.transports[t].consumer_ssrcs.contains_key(s) {
                return Err(RoomError::Invalid(format!(
                    "pipe ssrcs: {s} already in use"
                )));
            }
        }
        let clock_rate = producer
            .codecs
            .iter()
            .flatten()
            .map(|c| c.clock_rate)
            .next()
            .unwrap_or(90_000);
        let spec = ConsumeSpec {
            pt_map: std::array::from_fn(|pt| pt as u8),
            ext_map: [0; 256],
            ssrc: ssrcs[0],
            rtx: None,
            clock_rate,
            paused: false,
            preferred_spatial: None,
            preferred_temporal: None,
            twcc_ext: 0,
            abs_send_time_ext: 0,
            vp8_rewrite: false,
        };
        let consumed = self.consume(router_id, transport_id, producer_id, spec, now, out)?;
        if let Some(&key) = self.consumer_ids.get(&consumed.id) {
            self.consumers[key].pipe = ssrcs.iter().map(|&s| PipeStream::new(s)).collect();
            for &s in ssrcs {
                self.transports[t].consumer_ssrcs.insert(s, key);
            }
        }
        Ok(consumed)
    }

    /// Pauses or resumes a consumer at its client's request.
    pub fn set_consumer_paused(
        &mut self,
        router_id: RouterId,
        id: ConsumerId,
        paused: bool,
        now: Instant,
        out: &mut dyn Transmit,
    ) -> Result<(), RoomError> {
        let key = self.consumer_key(router_id, id)?;
        tracing::debug!(consumer = %id, paused, "consumer paused or resumed by its client");
        if self.consumers[key].paused != paused {
            self.consumers[key].paused = paused;
            let transport = self.consumers[key].transport;
            self.allocate(transport, now, out);
            self.on_consumer_activity_changed(key, now, out);
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
        out: &mut dyn Transmit,
    ) -> Result<(), RoomError> {
        let key = self.consumer_key(router_id, id)?;
        let c = &mut self.consumers[key];
        c.preferred_spatial = Some(spatial);
        c.preferred_temporal = temporal;
        let transport = c.transport;
        self.allocate(transport, now, out);
        self.update_consumer_target(key, now, out);
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
        out: &mut dyn Transmit,
    ) -> Result<(), RoomError> {
        let key = self.consumer_key(router_id, id)?;
        self.request_keyframe_for_consumer(key, now, out);
        Ok(())
    }

    /// Closes a consumer.
    pub fn close_consumer(&mut self, router_id: RouterId, id: ConsumerId) -> Result<(), RoomError> {
        let key = self.consumer_key(router_id, id)?;
        self.remove_consumer(key);
        self.objects_changed();
        Ok(())
    }

    fn remove_consumer(&mut self, key: ConsumerKey) -> Option<ClosedConsumer> {
        let c = self.consumers.remove(key)?;
        self.note_if_pipe(c.transport);
        if let Some(p) = self.producers.get_mut(c.producer) {
            p.consumers.retain(|&x| x != key);
        }
        if let Some(t) = self.transports.get_mut(c.transport) {
            t.consumers.retain(|&x| x != key);
            t.consumer_ssrcs.retain(|_, v| *v != key);
        }
        self.consumer_ids.remove(&c.id);
        Some(ClosedConsumer {
            consumer_id: c.id,
            producer_id: c.producer_id,
        })
    }

    // ----- stats ------------------------------------------------------------------------

    /// `getTransportStats` for a transport; `paths` tells whether its selected tuple is an
    /// ICE-TCP connection.
    pub fn transport_stats(
        &self,
        router_id: RouterId,
        id: TransportId,
        paths: &dyn Transmit,
    ) -> Result<serde_json::Value, RoomError> {
        let key = self.transport_key(router_id, id)?;
        let mut stats = crate::stats::transport_stats(&self.transports[key], paths);
        if self.transports[key].sctp.is_some()
            && let Some(first) = stats.as_array_mut().and_then(|a| a.first_mut())
            && let Some(obj) = first.as_object_mut()
            && let serde_json::Value::Object(data) = self.data_stats(key)
        {
            obj.extend(data);
        }
        Ok(stats)
    }

    /// Bandwidth toward the clients of a router's transports that estimate it (`/api/stats`):
    /// one entry per such transport, see [`crate::stats::transport_bandwidth`].
    pub fn bandwidth_stats(&self, router_id: RouterId) -> Result<serde_json::Value, RoomError> {
        let router = self
            .routers
            .get(&router_id)
            .ok_or(RoomError::NotFound("router"))?;
        Ok(serde_json::Value::Array(
            router
                .transports
                .iter()
                .filter_map(|&k| self.transports.get(k))
                .filter_map(|t| crate::stats::transport_bandwidth(t, &self.consumers))
                .collect(),
        ))
    }

    /// How much per-address and per-SSRC state a transport holds now (tests and debugging:
    /// each stays bounded whatever its client sends).
    pub fn transport_tables(
        &self,
        router_id: RouterId,
        id: TransportId,
    ) -> Result<TransportTables, RoomError> {
        let key = self.transport_key(router_id, id)?;
        let t = &self.transports[key];
        let srtp = t.srtp.as_ref();
        Ok(TransportTables {
            addresses: self.by_tuple.values().filter(|&&k| k == key).count(),
            ssrcs: t.ssrc_table.len(),
            srtp_ssrcs: srtp.map_or(0, |s| s.remote_rtp_ssrcs()),
            srtcp_ssrcs: srtp.map_or(0, |s| s.remote_rtcp_ssrcs()),
        })
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
        Ok(crate::stats::consumer_stats(
            c,
            self.producers.get(c.producer),
        ))
    }

    /// After objects came or went: refreshes the object counts in the counters, and lets
    /// the timer table give back the room of timers that are gone.
    pub(super) fn objects_changed(&mut self) {
        self.timers.release_unused();
        self.counters.routers = self.routers.len() as u64;
        self.counters.transports = self.transports.len() as u64;
        self.counters.producers = self.producers.len() as u64;
        self.counters.consumers = self.consumers.len() as u64;
        self.counters.data_producers = self.data_producers.len() as u64;
        self.counters.data_consumers = self.data_consumers.len() as u64;
    }
}
