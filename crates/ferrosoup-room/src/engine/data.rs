//! Data channels: each transport's SCTP association (inside its DTLS), the messages of its
//! data producers forwarded to their data consumers' streams, and the data requests of
//! the control path.
//!
//! ```text
//! DTLS app data ─► SctpAssociation ─► message (stream, PPID, bytes)
//!   ─► data producer by stream id        drop: data_dropped_unknown_stream
//!   ─► its message rate                  drop: data_dropped_rate_limited
//!   ─► for each data consumer: send on its stream with the producer's reliability
//!      (a pipe data consumer: in chunks through the pipe to another worker, whose
//!      data producer of the same id forwards the message again, see `worker_pipe.rs`)
//!   ─► each touched transport: SCTP packets ─► DTLS records ─► out
//! ```
//!
//! This path allocates (SCTP reassembles into buffers of its own); the RTP media path does
//! not go through it.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ferrosoup_rtc::sctp::{
    Ppid, Reliability, SCTP_STREAMS, SctpAssociation, SctpConfig, SctpEvent,
};

use super::Engine;
use crate::arena::{DataConsumerKey, DataProducerKey, TransportKey};
use crate::data::{DataConsumer, DataProducer, MessageRate, PipeMessage, free_stream_id};
use crate::engine::control::ClosedDataConsumer;
use crate::error::RoomError;
use crate::ids::{DataConsumerId, DataProducerId, RouterId, TransportId};
use crate::timers::Timer;
use crate::transmit::Transmit;

/// The answer to `consumeData` from the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataConsumed {
    /// The new data consumer.
    pub id: DataConsumerId,
    /// The stream id the server sends on.
    pub stream_id: u16,
    /// The data producer's order and reliability, which the data consumer keeps.
    pub reliability: Reliability,
}

impl Engine {
    /// The SCTP association of a transport that has one.
    fn sctp_mut(&mut self, key: TransportKey) -> Option<&mut SctpAssociation> {
        self.transports
            .get_mut(key)
            .and_then(|t| t.sctp.as_deref_mut())
    }

    /// Feeds SCTP packets that came in a transport's DTLS to its association, handles what
    /// comes out, and sends what it has to send.
    pub(super) fn run_sctp(
        &mut self,
        key: TransportKey,
        packets: Vec<BytesMut>,
        now: Instant,
        out: &mut dyn Transmit,
    ) {
        let Some(sctp) = self.sctp_mut(key) else {
            return;
        };
        for p in packets {
            sctp.handle_packet(now, p.freeze());
        }
        self.after_sctp(key, now, out);
    }

    /// The association's retransmission or SACK timer.
    pub(super) fn on_sctp_timer(
        &mut self,
        key: TransportKey,
        now: Instant,
        out: &mut dyn Transmit,
    ) {
        let Some(sctp) = self.sctp_mut(key) else {
            return;
        };
        sctp.handle_timeout(now);
        self.after_sctp(key, now, out);
    }

    /// Handles the association's events (messages are forwarded), counts its drops and
    /// flushes every transport a message went to.
    fn after_sctp(&mut self, key: TransportKey, now: Instant, out: &mut dyn Transmit) {
        let mut touched = Vec::new();
        loop {
            let Some(event) = self.sctp_mut(key).and_then(SctpAssociation::poll_event) else {
                break;
            };
            match event {
                SctpEvent::Message(m) => {
                    if let Some(p) = self.data_producer_on(key, m.stream_id) {
                        self.forward_data(p, m.ppid, &m.payload, now, &mut touched, out);
                    }
                }
                SctpEvent::Connected => {
                    tracing::debug!(transport = %self.transports[key].id, "sctp connected");
                }
                SctpEvent::Closed => {
                    tracing::debug!(transport = %self.transports[key].id, "sctp closed");
                }
            }
        }
        let t = &mut self.transports[key];
        if let Some(sctp) = t.sctp.as_deref() {
            let drops = sctp.drops();
            self.counters.data_dropped_too_big += drops.too_big - t.sctp_drops_counted.too_big;
            self.counters.data_dropped_unsupported_ppid +=
                drops.unsupported_ppid - t.sctp_drops_counted.unsupported_ppid;
            self.counters.data_dropped_unknown_stream +=
                drops.bad_stream - t.sctp_drops_counted.bad_stream;
            t.sctp_drops_counted = drops;
        }
        self.flush_sctp(key, now, out);
        for t in touched {
            if t != key {
                self.flush_sctp(t, now, out);
            }
        }
    }

    /// The data producer of stream `stream_id` of a transport (a message on another
    /// stream is counted as dropped).
    pub(super) fn data_producer_on(
        &mut self,
        key: TransportKey,
        stream_id: u16,
    ) -> Option<DataProducerKey> {
        let found = self.transports[key]
            .data_producers
            .iter()
            .copied()
            .find(|&p| self.data_producers[p].stream_id == stream_id);
        if found.is_none() {
            self.counters.data_dropped_unknown_stream += 1;
        }
        found
    }

    /// One message of data producer `p` (from its client, or from a pipe between
    /// workers) to each of its data consumers: on their SCTP stream, or through the pipe
    /// to another worker. `touched` collects the SCTP transports sent on (to flush).
    pub(super) fn forward_data(
        &mut self,
        p: DataProducerKey,
        ppid: Ppid,
        payload: &Bytes,
        now: Instant,
        touched: &mut Vec<TransportKey>,
        out: &mut dyn Transmit,
    ) {
        let producer = &mut self.data_producers[p];
        if !producer.rate.allow(now) {
            producer.dropped += 1;
            self.counters.data_dropped_rate_limited += 1;
            return;
        }
        let len = payload.len() as u64;
        producer.messages_in += 1;
        producer.bytes_in += len;
        self.counters.data_messages_in += 1;
        self.counters.data_bytes_in += len;
        let reliability = producer.reliability;
        for i in 0..self.data_producers[p].consumers.len() {
            let c = self.data_producers[p].consumers[i];
            let consumer = &mut self.data_consumers[c];
            let Some(t) = self.transports.get_mut(consumer.transport) else {
                self.counters.data_dropped_send_failed += 1;
                continue;
            };
            if t.is_worker_pipe() {
                match t.remote() {
                    Some(to)
                        if super::worker_pipe::send_data(
                            out,
                            to,
                            consumer.stream_id,
                            ppid,
                            payload,
                        ) =>
                    {
                        consumer.messages_out += 1;
                        consumer.bytes_out += len;
                    }
                    _ => self.counters.data_dropped_send_failed += 1,
                }
                continue;
            }
            let sent = t
                .sctp
                .as_deref_mut()
                .map(|sctp| sctp.send(now, consumer.stream_id, reliability, ppid, payload));
            match sent {
                Some(Ok(())) => {
                    consumer.messages_out += 1;
                    consumer.bytes_out += len;
                    self.counters.data_messages_out += 1;
                    self.counters.data_bytes_out += len;
                    if !touched.contains(&consumer.transport) {
                        touched.push(consumer.transport);
                    }
                }
                Some(Err(e)) => {
                    tracing::trace!(data_consumer = %consumer.id, "data message not sent: {e}");
                    self.counters.data_dropped_send_failed += 1;
                }
                None => self.counters.data_dropped_send_failed += 1,
            }
        }
    }

    /// Sends what a transport's association has to send, inside DTLS, and arms its timer.
    pub(super) fn flush_sctp(&mut self, key: TransportKey, now: Instant, out: &mut dyn Transmit) {
        let Some(t) = self.transports.get_mut(key) else {
            return;
        };
        let remote = t.remote();
        let (Some(sctp), Some(dtls)) = (t.sctp.as_deref_mut(), t.dtls.as_mut()) else {
            return;
        };
        while let Some(packet) = sctp.poll_transmit(now) {
            if let Err(e) = dtls.send_application_data(&packet) {
                tracing::trace!(transport = %t.id, "sctp packet not sent: {e}");
            }
        }
        while let Some(datagram) = dtls.poll_transmit() {
            if let Some(to) = remote {
                out.push(&datagram, to);
            }
        }
        if let Some(at) = sctp.poll_timeout() {
            self.timers.arm(Timer::Sctp(key), at);
        }
    }

    // ----- control ----------------------------------------------------------------------

    /// Gives a transport an SCTP association (`createTransport` with `sctpCapabilities`);
    /// idempotent.
    pub fn enable_sctp(
        &mut self,
        router_id: RouterId,
        id: TransportId,
        config: SctpConfig,
        now: Instant,
        out: &mut dyn Transmit,
    ) -> Result<(), RoomError> {
        let key = self.transport_key(router_id, id)?;
        let t = &mut self.transports[key];
        if t.sctp.is_some() {
            return Ok(());
        }
        let mut sctp = Box::new(SctpAssociation::new(config));
        if t.srtp.is_some()
            && let Some(dtls) = t.dtls.as_ref()
        {
            sctp.start(now, dtls.role());
        }
        t.sctp = Some(sctp);
        self.flush_sctp(key, now, out);
        Ok(())
    }

    /// A transport that carries data channels: one with SCTP, or a pipe between workers.
    fn data_transport(
        &self,
        router_id: RouterId,
        id: TransportId,
    ) -> Result<TransportKey, RoomError> {
        let key = self.transport_key(router_id, id)?;
        let t = &self.transports[key];
        if t.sctp.is_none() && !t.is_worker_pipe() {
            return Err(RoomError::InvalidState(
                "transport has no SCTP (createTransport without sctpCapabilities)".into(),
            ));
        }
        Ok(key)
    }

    /// `produceData`: the client sends on `stream_id` of its transport (or, on a pipe
    /// between workers, the other worker's pipe data consumer does, under the id `id` of
    /// the data producer it stands for).
    #[allow(clippy::too_many_arguments)]
    pub fn produce_data(
        &mut self,
        router_id: RouterId,
        transport_id: TransportId,
        id: Option<DataProducerId>,
        stream_id: u16,
        reliability: Reliability,
        messages_per_second: u32,
        now: Instant,
    ) -> Result<DataProducerId, RoomError> {
        let t = self.data_transport(router_id, transport_id)?;
        // A new random id unless one is given.
        let id = id.unwrap_or_default();
        if self.data_producer_ids.contains_key(&id) {
            return Err(RoomError::Invalid(format!(
                "data producer {id} already exists"
            )));
        }
        if stream_id >= SCTP_STREAMS {
            return Err(RoomError::Invalid(format!(
                "sctpStreamParameters.streamId: must be below {SCTP_STREAMS}"
            )));
        }
        if self.transports[t]
            .data_producers
            .iter()
            .any(|&p| self.data_producers[p].stream_id == stream_id)
        {
            return Err(RoomError::Invalid(format!(
                "sctpStreamParameters.streamId: {stream_id} already in use"
            )));
        }
        let key = self.data_producers.insert(DataProducer {
            id,
            transport: t,
            stream_id,
            reliability,
            consumers: Vec::new(),
            rate: MessageRate::new(messages_per_second, now),
            messages_in: 0,
            bytes_in: 0,
            dropped: 0,
            pipe_message: PipeMessage::default(),
        });
        self.data_producer_ids.insert(id, key);
        self.transports[t].data_producers.push(key);
        self.objects_changed();
        Ok(id)
    }

    /// `consumeData`: a data consumer of a data producer on a transport, on the lowest
    /// stream id the transport's data consumers leave free.
    pub fn consume_data(
        &mut self,
        router_id: RouterId,
        transport_id: TransportId,
        data_producer_id: DataProducerId,
    ) -> Result<DataConsumed, RoomError> {
        let t = self.data_transport(router_id, transport_id)?;
        let p = *self
            .data_producer_ids
            .get(&data_producer_id)
            .ok_or(RoomError::NotFound("data producer"))?;
        if self.transports[self.data_producers[p].transport].router_id != router_id {
            return Err(RoomError::NotFound("data producer"));
        }
        let used = self.transports[t]
            .data_consumers
            .iter()
            .map(|&c| self.data_consumers[c].stream_id);
        let stream_id = free_stream_id(used, SCTP_STREAMS).ok_or_else(|| {
            RoomError::Invalid(format!(
                "transportId: all {SCTP_STREAMS} SCTP streams are in use"
            ))
        })?;
        let id = DataConsumerId::new();
        let key = self.data_consumers.insert(DataConsumer {
            id,
            data_producer: p,
            data_producer_id,
            transport: t,
            stream_id,
            messages_out: 0,
            bytes_out: 0,
        });
        self.data_consumer_ids.insert(id, key);
        self.data_producers[p].consumers.push(key);
        self.transports[t].data_consumers.push(key);
        self.objects_changed();
        Ok(DataConsumed {
            id,
            stream_id,
            reliability: self.data_producers[p].reliability,
        })
    }

    /// `closeDataProducer`: closes it and its data consumers (their streams are reset, so
    /// the consuming clients' channels close); returns the data consumers closed.
    pub fn close_data_producer(
        &mut self,
        router_id: RouterId,
        id: DataProducerId,
        now: Instant,
        out: &mut dyn Transmit,
    ) -> Result<Vec<DataConsumerId>, RoomError> {
        let key = self.data_producer_key(router_id, id)?;
        let t = self.data_producers[key].transport;
        self.transports[t].data_producers.retain(|&p| p != key);
        let closed = self.remove_data_producer(key, now, out);
        self.objects_changed();
        Ok(closed.map(|(_, c)| c).unwrap_or_default())
    }

    /// `closeDataConsumer`: its stream is reset.
    pub fn close_data_consumer(
        &mut self,
        router_id: RouterId,
        id: DataConsumerId,
        now: Instant,
        out: &mut dyn Transmit,
    ) -> Result<(), RoomError> {
        let key = *self
            .data_consumer_ids
            .get(&id)
            .ok_or(RoomError::NotFound("data consumer"))?;
        if self.transports[self.data_consumers[key].transport].router_id != router_id {
            return Err(RoomError::NotFound("data consumer"));
        }
        self.remove_data_consumer(key, now, out);
        self.objects_changed();
        Ok(())
    }

    fn data_producer_key(
        &self,
        router_id: RouterId,
        id: DataProducerId,
    ) -> Result<DataProducerKey, RoomError> {
        let key = *self
            .data_producer_ids
            .get(&id)
            .ok_or(RoomError::NotFound("data producer"))?;
        if self.transports[self.data_producers[key].transport].router_id != router_id {
            return Err(RoomError::NotFound("data producer"));
        }
        Ok(key)
    }

    /// Removes a data producer and its data consumers (its transport's list is the
    /// caller's to fix).
    pub(super) fn remove_data_producer(
        &mut self,
        key: DataProducerKey,
        now: Instant,
        out: &mut dyn Transmit,
    ) -> Option<(DataProducerId, Vec<DataConsumerId>)> {
        let p = self.data_producers.remove(key)?;
        self.data_producer_ids.remove(&p.id);
        self.note_if_pipe(p.transport);
        let closed = p
            .consumers
            .iter()
            .filter_map(|&c| self.remove_data_consumer(c, now, out))
            .map(|c| c.data_consumer_id)
            .collect();
        Some((p.id, closed))
    }

    /// Removes a data consumer and resets its stream.
    pub(super) fn remove_data_consumer(
        &mut self,
        key: DataConsumerKey,
        now: Instant,
        out: &mut dyn Transmit,
    ) -> Option<ClosedDataConsumer> {
        let c = self.data_consumers.remove(key)?;
        self.data_consumer_ids.remove(&c.id);
        self.note_if_pipe(c.transport);
        if let Some(p) = self.data_producers.get_mut(c.data_producer) {
            p.consumers.retain(|&x| x != key);
        }
        if let Some(t) = self.transports.get_mut(c.transport) {
            t.data_consumers.retain(|&x| x != key);
            if let Some(sctp) = t.sctp.as_deref_mut() {
                sctp.reset_stream(now, c.stream_id);
            }
            self.flush_sctp(c.transport, now, out);
        }
        Some(ClosedDataConsumer {
            data_consumer_id: c.id,
            data_producer_id: c.data_producer_id,
        })
    }

    /// Aborts a closing transport's association (the ABORT goes out before DTLS closes).
    pub(super) fn close_sctp(&mut self, key: TransportKey, now: Instant, out: &mut dyn Transmit) {
        if let Some(sctp) = self.sctp_mut(key) {
            sctp.close(now);
            self.flush_sctp(key, now, out);
        }
        self.timers.disarm(Timer::Sctp(key));
    }

    /// Per-transport data channel state for stats: `(data producers, data consumers)` as
    /// JSON lists with their message and byte counts.
    pub(super) fn data_stats(&self, key: TransportKey) -> serde_json::Value {
        let t = &self.transports[key];
        let producers: Vec<_> = t
            .data_producers
            .iter()
            .filter_map(|&p| self.data_producers.get(p))
            .map(|p| {
                serde_json::json!({
                    "type": "data-producer",
                    "id": p.id.to_string(),
                    "streamId": p.stream_id,
                    "messagesReceived": p.messages_in,
                    "bytesReceived": p.bytes_in,
                    "messagesDropped": p.dropped,
                })
            })
            .collect();
        let consumers: Vec<_> = t
            .data_consumers
            .iter()
            .filter_map(|&c| self.data_consumers.get(c))
            .map(|c| {
                serde_json::json!({
                    "type": "data-consumer",
                    "id": c.id.to_string(),
                    "dataProducerId": c.data_producer_id.to_string(),
                    "streamId": c.stream_id,
                    "messagesSent": c.messages_out,
                    "bytesSent": c.bytes_out,
                })
            })
            .collect();
        serde_json::json!({
            "sctpState": t.sctp.as_deref().map(|s| match s.state() {
                ferrosoup_rtc::sctp::SctpState::Connecting => "connecting",
                ferrosoup_rtc::sctp::SctpState::Connected => "connected",
                ferrosoup_rtc::sctp::SctpState::Closed => "closed",
            }),
            "dataProducers": producers,
            "dataConsumers": consumers,
        })
    }
}
