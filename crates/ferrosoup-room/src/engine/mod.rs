//! The worker engine: everything one worker thread owns, driven sans-IO.
//!
//! ```text
//! datagram ──► handle_datagram(now, from, bytes, out) ──► out (datagrams to send)
//! clock    ──► handle_timeout(now, out)               ──► out
//!              poll_timeout() ─► when to call handle_timeout next
//! control  ──► the request methods (control.rs), each with `now` and `out`
//! ```
//!
//! The engine owns no socket and reads no clock: the worker loop (worker.rs) owns the
//! socket, the clock and the one flush; tests, benchmarks and fuzzers drive the same engine
//! with a manual clock. The files of this module are the steps of the script:
//! `receive.rs` (STUN, DTLS, RTP and RTCP in), `forward.rs` (fan-out and retransmissions
//! out), `feedback.rs` (RTCP the worker sends: reports, NACKs, keyframe requests,
//! transport-cc), `observers.rs` (scores, active speaker), `control.rs` (requests from the
//! control path).
//!
//! Ownership is a tree — router → transports → producers / consumers — kept in arenas; the
//! cross-links (producer → its consumers, SSRC / tuple / ufrag tables) are typed keys.

mod bandwidth;
mod control;
mod data;
mod feedback;
pub(crate) use feedback::REPORTER_SSRC;
mod forward;
mod observers;
mod plain;
mod receive;
mod worker_pipe;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc::UnboundedSender;

use ferrosoup_proto::transport::IceState;
use ferrosoup_rtc::dtls::{DtlsCertificate, DtlsEvent, DtlsSession};
use ferrosoup_rtc::ice::IceEvent;
use ferrosoup_rtc::srtp::SrtpSession;

use crate::arena::{
    Arena, ConsumerKey, DataConsumerKey, DataProducerKey, ProducerKey, TransportKey,
};
use crate::consumer::Consumer;
use crate::data::{DataConsumer, DataProducer};
use crate::events::MediaEvent;
use crate::ids::{ConsumerId, DataConsumerId, DataProducerId, ProducerId, RouterId, TransportId};
use crate::producer::Producer;
use crate::settings::IceTimeouts;
use crate::stats::WorkerCounters;
use crate::timers::{Timer, TimerTable};
use crate::transmit::Transmit;
use crate::transport::Transport;
use crate::udp::MAX_DATAGRAM;

pub use control::{
    Closed, ClosedConsumer, ClosedDataConsumer, CodecSpec, ConsumeSpec, Consumed, EncodingSpec,
    ProduceSpec, RtxMapping, TransportInfo,
};
pub use data::DataConsumed;
pub use plain::PlainRemote;

/// What a worker keeps per router.
#[derive(Default)]
struct RouterState {
    /// Transports of the router (owned).
    transports: Vec<TransportKey>,
    /// The producer last reported as active speaker.
    active_speaker: Option<ProducerId>,
}

/// Everything one worker owns, and the media path over it.
pub struct Engine {
    port: u16,
    certificate: Arc<DtlsCertificate>,
    events: UnboundedSender<MediaEvent>,
    ice_timeouts: IceTimeouts,
    /// Routers: the transports each owns and its active-speaker state.
    routers: HashMap<RouterId, RouterState>,
    transports: Arena<TransportKey, Transport>,
    producers: Arena<ProducerKey, Producer>,
    consumers: Arena<ConsumerKey, Consumer>,
    transport_ids: HashMap<TransportId, TransportKey>,
    producer_ids: HashMap<ProducerId, ProducerKey>,
    consumer_ids: HashMap<ConsumerId, ConsumerKey>,
    data_producers: Arena<DataProducerKey, DataProducer>,
    data_consumers: Arena<DataConsumerKey, DataConsumer>,
    data_producer_ids: HashMap<DataProducerId, DataProducerKey>,
    data_consumer_ids: HashMap<DataConsumerId, DataConsumerKey>,
    /// Remote 5-tuple → transport (indexed): the tuples each transport's ICE holds valid,
    /// at most `ice::MAX_TUPLES` per transport, added and removed as ICE reports them.
    by_tuple: HashMap<SocketAddr, TransportKey>,
    /// Local ICE ufrag → transport (indexed).
    by_ufrag: HashMap<String, TransportKey>,
    /// Plain transports' sockets → transport, and whether the socket is its RTCP one
    /// (indexed).
    by_socket: HashMap<crate::plain::LocalSocket, (TransportKey, bool)>,
    /// Remote addresses of plain transports → transport (indexed; one transport each).
    plain_remotes: HashMap<SocketAddr, TransportKey>,
    /// Pipe transports between workers that lost their pipe producer or consumer, to be
    /// closed at the next [`Engine::handle_timeout`] if still empty.
    idle_pipes: Vec<TransportId>,
    timers: TimerTable,
    counters: WorkerCounters,
    /// Scratch buffers reused across packets.
    scratch: Scratch,
    /// `Instant` and wall clock at the engine's start, to turn `Instant`s into NTP time
    /// (Sender Reports) and abs-send-time.
    epoch: (Instant, SystemTime),
}

/// Buffers the engine reuses so that no packet allocates.
struct Scratch {
    stun: Vec<u8>,
    nacks: Vec<u16>,
    /// Media SSRCs a REMB names.
    ssrcs: Vec<u32>,
    rtcp: Box<[u8; MAX_DATAGRAM]>,
    rtx: Box<[u8; MAX_DATAGRAM]>,
    allocation: bandwidth::AllocationScratch,
}

impl Engine {
    /// An engine with nothing in it. `port` is the worker socket's (candidates name it),
    /// `now` and `wall` the time at start.
    pub fn new(
        port: u16,
        certificate: Arc<DtlsCertificate>,
        events: UnboundedSender<MediaEvent>,
        ice_timeouts: IceTimeouts,
        now: Instant,
        wall: SystemTime,
    ) -> Self {
        Self {
            port,
            certificate,
            events,
            ice_timeouts,
            routers: HashMap::new(),
            transports: Arena::default(),
            producers: Arena::default(),
            consumers: Arena::default(),
            transport_ids: HashMap::new(),
            producer_ids: HashMap::new(),
            consumer_ids: HashMap::new(),
            data_producers: Arena::default(),
            data_consumers: Arena::default(),
            data_producer_ids: HashMap::new(),
            data_consumer_ids: HashMap::new(),
            by_tuple: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_socket: HashMap::new(),
            plain_remotes: HashMap::new(),
            idle_pipes: Vec::new(),
            timers: TimerTable::default(),
            counters: WorkerCounters::default(),
            scratch: Scratch {
                stun: Vec::with_capacity(256),
                nacks: Vec::with_capacity(ferrosoup_rtc::nack::MAX_MISSING),
                ssrcs: Vec::with_capacity(crate::transport::MAX_INCOMING_SSRCS),
                rtcp: Box::new([0; MAX_DATAGRAM]),
                rtx: Box::new([0; MAX_DATAGRAM]),
                allocation: bandwidth::AllocationScratch::default(),
            },
            epoch: (now, wall),
        }
    }

    /// The worker's counters (object counts are current; the rest only grow).
    pub fn counters(&self) -> &WorkerCounters {
        &self.counters
    }

    /// Counts the forwarding delay of the packets forwarded since `rtp_packets_out` was
    /// `forwarded_before`: read off the socket at `received`, handed back to it at `sent`
    /// (one measurement per receive batch, weighted by the packets it forwarded).
    pub fn record_forwarding_delay(
        &mut self,
        received: Instant,
        sent: Instant,
        forwarded_before: u64,
    ) {
        let forwarded = self
            .counters
            .rtp_packets_out
            .saturating_sub(forwarded_before);
        if forwarded > 0 {
            let delay = sent.saturating_duration_since(received).as_micros() as u64;
            self.counters.histograms.record_n(
                crate::stats::Distribution::ForwardingDelay,
                delay,
                forwarded,
            );
        }
    }

    /// Adds what the worker loop's flushes sent and dropped.
    pub fn record_flush(&mut self, out: crate::udp::FlushOutcome) {
        self.counters.on_flush(out);
    }

    /// Whether datagrams from `from` reach a transport: it passed an ICE check that has not
    /// been forgotten since.
    pub fn routes(&self, from: SocketAddr) -> bool {
        self.by_tuple.contains_key(&from)
    }

    /// The path to `from` is gone (its ICE-TCP connection closed): its transport's ICE
    /// forgets the tuple, selecting another valid one or going `disconnected`.
    pub fn remove_tuple(&mut self, now: Instant, from: SocketAddr, out: &mut dyn Transmit) {
        let Some(&key) = self.by_tuple.get(&from) else {
            return;
        };
        self.transports[key].ice.remove_tuple(from, now);
        self.drain_transport(key, now, out);
    }

    /// Takes the worker's ICE-TCP counters (totals since the worker started).
    pub fn record_tcp(&mut self, tcp: crate::tcp::TcpCounters) {
        self.counters.on_tcp(tcp);
    }

    /// When [`Engine::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.poll_timeout()
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut dyn Transmit) {
        if !self.idle_pipes.is_empty() {
            self.close_idle_pipes(now, out);
        }
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Connection(t) => self.on_connection_timer(t, now, out),
                Timer::Reports(t) => self.on_reports_timer(t, now, out),
                Timer::TwccFeedback(t) => self.send_twcc_feedback(t, out),
                Timer::Nack(p, s) => self.send_nacks(p, usize::from(s), now, out),
                Timer::KeyframeRequest(p, s) => self.on_keyframe_timer(p, usize::from(s), now, out),
                Timer::StreamActivity(p) => self.on_stream_activity_timer(p, now, out),
                Timer::ActiveSpeaker(r) => self.detect_active_speaker(r, now),
                Timer::Probe(t) => self.on_probe_timer(t, now, out),
                Timer::Pace(t) => self.on_pace_timer(t, now, out),
                Timer::Sctp(t) => self.on_sctp_timer(t, now, out),
            }
        }
    }

    /// ICE consent, DTLS retransmissions and `iceRestartRequired` of a transport.
    fn on_connection_timer(&mut self, key: TransportKey, now: Instant, out: &mut dyn Transmit) {
        let Some(t) = self.transports.get_mut(key) else {
            return;
        };
        if t.ice.poll_timeout().is_some_and(|at| at <= now) {
            t.ice.handle_timeout(now);
        }
        if let Some(dtls) = t.dtls.as_mut()
            && dtls.poll_timeout().is_some_and(|at| at <= now)
        {
            dtls.handle_timeout(now);
        }
        self.drain_transport(key, now, out);
        let t = &mut self.transports[key];
        if t.restart_notice_due(self.ice_timeouts.restart_required)
            .is_some_and(|at| at <= now)
        {
            t.ice_restart_notified_at = Some(now);
            let _ = self
                .events
                .send(MediaEvent::IceRestartRequired { transport_id: t.id });
        }
        self.arm_connection_timer(key);
    }

    /// Arms the transport's connection timer at its earliest deadline.
    fn arm_connection_timer(&mut self, key: TransportKey) {
        let Some(t) = self.transports.get(key) else {
            return;
        };
        let restart = t.restart_notice_due(self.ice_timeouts.restart_required);
        let dtls = t.dtls.as_ref().and_then(DtlsSession::poll_timeout);
        let next = [t.ice.poll_timeout(), dtls, restart]
            .into_iter()
            .flatten()
            .min();
        if let Some(at) = next {
            self.timers.arm(Timer::Connection(key), at);
        }
    }

    /// Processes what ICE and DTLS of a transport want to send or report.
    fn drain_transport(&mut self, key: TransportKey, now: Instant, out: &mut dyn Transmit) {
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
                // Evicted for a newer tuple or consent expired: datagrams from it are
                // dropped as from an unknown tuple until it passes a check again (then
                // the event is stale and changes nothing).
                IceEvent::TupleRemoved(tuple) if !t.ice.is_valid_tuple(tuple) => {
                    t.tuples.retain(|&a| a != tuple);
                    if self.by_tuple.get(&tuple) == Some(&key) {
                        self.by_tuple.remove(&tuple);
                        out.tuple_removed(tuple);
                    }
                }
                IceEvent::TupleRemoved(_) => {}
            }
        }
        if t.dtls.is_none()
            && t.remote_dtls.is_some()
            && t.ice.selected_tuple().is_some()
            && let Err(e) = t.start_dtls(&self.certificate, now)
        {
            tracing::warn!(transport = %t.id, "dtls start failed: {e}");
        }
        let remote = t.remote();
        let could_send = t.srtp.is_some();
        let mut connected = false;
        // SCTP packets from the client, fed to the association after the DTLS events.
        let mut sctp_in = Vec::new();
        if let Some(dtls) = t.dtls.as_mut() {
            while let Some(datagram) = dtls.poll_transmit() {
                if let Some(to) = remote {
                    out.push(&datagram, to);
                }
            }
            while let Some(event) = dtls.poll_event() {
                match event {
                    DtlsEvent::Connected(keys) => match SrtpSession::new(&keys) {
                        Ok(srtp) => {
                            t.srtp = Some(srtp);
                            connected = true;
                            if let Some(sctp) = t.sctp.as_mut() {
                                sctp.start(now, dtls.role());
                            }
                            tracing::debug!(transport = %t.id, "dtls connected");
                        }
                        Err(e) => tracing::warn!(transport = %t.id, "srtp setup failed: {e}"),
                    },
                    DtlsEvent::Failed(reason) => {
                        tracing::info!(transport = %t.id, "dtls failed: {reason}");
                        t.srtp = None;
                    }
                    DtlsEvent::Closed => t.srtp = None,
                    // SCTP of the data channels; dropped when the client asked for none.
                    DtlsEvent::ApplicationData(data) if t.sctp.is_some() => sctp_in.push(data),
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
                t.ice_restart_notified_at = None;
            }
            let _ = self.events.send(MediaEvent::TransportStateChanged {
                transport_id: t.id,
                ice_state: state.0,
                dtls_state: state.1,
            });
        }
        let can_send = t.srtp.is_some();
        if connected {
            self.timers
                .arm(Timer::Reports(key), now + feedback::RTCP_INTERVAL);
        }
        if can_send != could_send {
            self.on_transport_can_send(key, can_send, now, out);
        }
        if connected || !sctp_in.is_empty() {
            self.run_sctp(key, sctp_in, now, out);
        }
        self.arm_connection_timer(key);
    }

    /// The transport's DTLS connected (or was lost): its consumers start (or stop). Started
    /// video consumers get their layer and ask for a keyframe at once, as a consumer resumed
    /// on a connected transport does.
    fn on_transport_can_send(
        &mut self,
        key: TransportKey,
        can_send: bool,
        now: Instant,
        out: &mut dyn Transmit,
    ) {
        let Self {
            transports,
            consumers,
            ..
        } = self;
        for &c in &transports[key].consumers {
            consumers[c].transport_connected = can_send;
        }
        self.allocate(key, now, out);
        for i in 0..self.transports[key].consumers.len() {
            let c = self.transports[key].consumers[i];
            self.on_consumer_activity_changed(c, now, out);
        }
    }

    /// Sends a media event to the control path (never per packet).
    fn emit(&self, event: MediaEvent) {
        let _ = self.events.send(event);
    }

    /// NTP time (seconds since 1900 in 32.32 fixed point) of an `Instant`.
    fn ntp(&self, now: Instant) -> u64 {
        let wall = self.epoch.1 + now.saturating_duration_since(self.epoch.0);
        let since_unix = wall
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        ferrosoup_rtc::rtcp::ntp_from_unix(since_unix)
    }

    /// Time since the engine started.
    fn since_epoch(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.epoch.0)
    }
}
