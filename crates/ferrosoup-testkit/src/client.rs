//! [`SimClient`]: the client side of one WebRTC transport, as a browser runs it against an
//! ICE-lite server (mediasoup-client with `dtlsParameters.role = "client"`), sans-IO.
//!
//! 1. On creation it queues a nominating ICE check (USE-CANDIDATE) and retransmits it
//!    (doubling timeout) until the server answers with a verified success.
//! 2. Then, as DTLS client, it sends the ClientHello (as DTLS server it waits for the
//!    server's); handshake flights are retransmitted on [`SimClient::handle_timeout`].
//! 3. When DTLS connects, the exported keys make an SRTP session: [`SimClient::send_rtp`]
//!    and [`SimClient::send_rtcp`] queue protected datagrams, received SRTP/SRTCP comes out
//!    unprotected from [`SimClient::poll_rtp`] / [`SimClient::poll_rtcp`].
//!
//! Consent freshness is up to the test: [`SimClient::send_consent_check`] sends one check,
//! [`SimClient::set_consent_interval`] makes them periodic, and not calling either lets
//! consent expire on the server.
//!
//! Run loop (or let [`Sim`](crate::Sim) do it, through the [`Endpoint`] impl):
//!
//! ```text
//! client.handle_datagram(now, from, &bytes)   // for each datagram to client.local_addr()
//! client.handle_timeout(now)                  // when now >= client.poll_timeout()
//! while let Some(d) = client.poll_transmit() { network.send(now, d) }
//! while let Some(rtp) = client.poll_rtp() { /* plain RTP from the server */ }
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrosoup_rtc::demux::{PacketKind, classify};
use ferrosoup_rtc::dtls::{
    DtlsCertificate, DtlsError, DtlsEvent, DtlsRole, DtlsSession, DtlsState, Fingerprint,
};
use ferrosoup_rtc::srtp::{SrtpError, SrtpProfile, SrtpSession};
use rtc_stun::message::TransactionId;

use crate::Datagram;
use crate::net::Endpoint;
use crate::packets::stun::{
    BindingRequest, StunResponseError, check_binding_response, stun_transaction_id,
};
use crate::rng::SimRng;

/// Checks remembered while waiting for their answer; older ones are forgotten.
const MAX_PENDING_CHECKS: usize = 256;
/// Answers kept for [`SimClient::poll_stun_answer`]; older ones are dropped.
const MAX_STUN_ANSWERS: usize = 1024;

/// How a [`SimClient`] is set up: what signaling told it about the server, and its own
/// certificate and role.
#[derive(Debug, Clone)]
pub struct SimClientConfig {
    /// The client's address (its host candidate).
    pub local: SocketAddr,
    /// The server's ICE candidate.
    pub server: SocketAddr,
    /// The server's `iceParameters.usernameFragment`.
    pub server_ufrag: String,
    /// The server's `iceParameters.password`.
    pub server_pwd: String,
    /// The server's `dtlsParameters.fingerprints`.
    pub server_fingerprints: Vec<Fingerprint>,
    /// The client's own certificate (its fingerprint goes to the server's connect call).
    pub certificate: Arc<DtlsCertificate>,
    /// The client's DTLS role (default [`DtlsRole::Client`]: the server is DTLS server).
    pub dtls_role: DtlsRole,
    /// The client's ICE ufrag (the part after the colon of USERNAME).
    pub client_ufrag: String,
    /// Seed of the ICE tie-breaker and the STUN transaction ids.
    pub seed: u64,
    /// First retransmission timeout of the nominating check; doubles up to `max_stun_rto`.
    pub stun_rto: Duration,
    /// Largest retransmission timeout of the nominating check.
    pub max_stun_rto: Duration,
    /// Period of automatic consent checks once ICE is connected (`None`: none).
    pub consent_interval: Option<Duration>,
}

impl SimClientConfig {
    /// A DTLS-client config with the server's parameters from signaling and the client's
    /// own certificate; 250 ms first STUN retransmission (up to 2 s), no periodic consent.
    pub fn new(
        local: SocketAddr,
        server: SocketAddr,
        server_ufrag: &str,
        server_pwd: &str,
        server_fingerprints: Vec<Fingerprint>,
        certificate: Arc<DtlsCertificate>,
    ) -> Self {
        Self {
            local,
            server,
            server_ufrag: server_ufrag.to_owned(),
            server_pwd: server_pwd.to_owned(),
            server_fingerprints,
            certificate,
            dtls_role: DtlsRole::Client,
            client_ufrag: "simclient".to_owned(),
            seed: 0,
            stun_rto: Duration::from_millis(250),
            max_stun_rto: Duration::from_secs(2),
            consent_interval: None,
        }
    }

    /// Sets the client's DTLS role.
    pub fn with_dtls_role(mut self, role: DtlsRole) -> Self {
        self.dtls_role = role;
        self
    }

    /// Sets the seed of tie-breaker and transaction ids.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the period of automatic consent checks.
    pub fn with_consent_interval(mut self, interval: Option<Duration>) -> Self {
        self.consent_interval = interval;
        self
    }
}

/// Why a [`SimClient`] call could not be done.
#[derive(Debug, thiserror::Error)]
pub enum SimClientError {
    /// SRTP is not set up yet (DTLS not connected).
    #[error("not connected: no SRTP keys yet")]
    NotConnected,
    /// Protecting the packet failed (e.g. not a valid RTP/RTCP packet).
    #[error("srtp: {0}")]
    Srtp(#[from] SrtpError),
    /// The DTLS session could not be created.
    #[error("dtls: {0}")]
    Dtls(#[from] DtlsError),
}

/// The answer to one Binding request the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunAnswer {
    /// The request's transaction id.
    pub transaction_id: TransactionId,
    /// Whether the request nominated (USE-CANDIDATE).
    pub nominating: bool,
    /// The XOR-MAPPED-ADDRESS of a verified success, or what was wrong (an error
    /// response's code, a failed integrity check, ...).
    pub result: Result<SocketAddr, StunResponseError>,
}

/// Counters of a [`SimClient`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimClientStats {
    /// Binding requests sent, retransmissions included.
    pub stun_requests: u64,
    /// Verified success responses.
    pub stun_successes: u64,
    /// Error responses, and success responses that did not verify.
    pub stun_failures: u64,
    /// STUN messages that answer no pending request (e.g. the second answer to a
    /// retransmitted check).
    pub stun_unmatched: u64,
    /// DTLS datagrams sent.
    pub dtls_sent: u64,
    /// DTLS datagrams received.
    pub dtls_received: u64,
    /// SRTP packets sent.
    pub rtp_sent: u64,
    /// SRTCP packets sent.
    pub rtcp_sent: u64,
    /// SRTP packets received and unprotected.
    pub rtp_received: u64,
    /// SRTCP packets received and unprotected.
    pub rtcp_received: u64,
    /// SRTP/SRTCP packets that failed to unprotect (authentication, malformed), replays
    /// excluded.
    pub srtp_failures: u64,
    /// SRTP/SRTCP packets refused as replays.
    pub srtp_replays: u64,
    /// Datagrams dropped: from another address than the server, of unknown kind, or
    /// media/DTLS before there is a session for it.
    pub dropped: u64,
}

/// The nominating check, retransmitted until answered.
#[derive(Debug)]
struct Nomination {
    transaction_id: TransactionId,
    datagram: Vec<u8>,
    retransmit_at: Instant,
    rto: Duration,
}

/// A Binding request waiting for its answer.
#[derive(Debug)]
struct PendingCheck {
    transaction_id: TransactionId,
    /// The password it was signed with (the answer is signed with the same).
    pwd: String,
    nominating: bool,
}

/// The client side of one WebRTC transport (see the module docs).
#[derive(Debug)]
pub struct SimClient {
    local: SocketAddr,
    /// Every address the client has used, for [`Endpoint::owns`].
    locals: Vec<SocketAddr>,
    server: SocketAddr,
    server_ufrag: String,
    server_pwd: String,
    client_ufrag: String,
    server_fingerprints: Vec<Fingerprint>,
    certificate: Arc<DtlsCertificate>,
    dtls_role: DtlsRole,
    rng: SimRng,
    tie_breaker: u64,
    stun_rto: Duration,
    max_stun_rto: Duration,
    /// The latest time passed in, for calls that take none.
    now: Instant,
    nomination: Option<Nomination>,
    pending: VecDeque<PendingCheck>,
    answers: VecDeque<StunAnswer>,
    /// Set by the first verified answer to a nominating check.
    mapped: Option<SocketAddr>,
    dtls: Option<DtlsSession>,
    dtls_failure: Option<String>,
    srtp: Option<SrtpSession>,
    consent_interval: Option<Duration>,
    next_consent: Option<Instant>,
    transmits: VecDeque<Datagram>,
    rtp_in: VecDeque<Vec<u8>>,
    rtcp_in: VecDeque<Vec<u8>>,
    stats: SimClientStats,
}

impl SimClient {
    /// A client that has just queued its nominating check (see
    /// [`poll_transmit`](Self::poll_transmit)). Fails when no server fingerprint is given.
    pub fn new(now: Instant, config: SimClientConfig) -> Result<Self, SimClientError> {
        let mut rng = SimRng::new(config.seed);
        let tie_breaker = rng.next_u64();
        let dtls = match config.dtls_role {
            // The server, as DTLS client, starts the handshake once ICE lets it.
            DtlsRole::Server => Some(DtlsSession::new(
                config.certificate.clone(),
                DtlsRole::Server,
                config.server_fingerprints.clone(),
                now,
            )?),
            DtlsRole::Client if config.server_fingerprints.is_empty() => {
                return Err(DtlsError::NoRemoteFingerprint.into());
            }
            DtlsRole::Client => None,
        };
        let mut client = Self {
            local: config.local,
            locals: vec![config.local],
            server: config.server,
            server_ufrag: config.server_ufrag,
            server_pwd: config.server_pwd,
            client_ufrag: config.client_ufrag,
            server_fingerprints: config.server_fingerprints,
            certificate: config.certificate,
            dtls_role: config.dtls_role,
            rng,
            tie_breaker,
            stun_rto: config.stun_rto,
            max_stun_rto: config.max_stun_rto,
            now,
            nomination: None,
            pending: VecDeque::new(),
            answers: VecDeque::new(),
            mapped: None,
            dtls,
            dtls_failure: None,
            srtp: None,
            consent_interval: config.consent_interval,
            next_consent: None,
            transmits: VecDeque::new(),
            rtp_in: VecDeque::new(),
            rtcp_in: VecDeque::new(),
            stats: SimClientStats::default(),
        };
        let (transaction_id, datagram) = client.queue_check(true);
        client.nomination = Some(Nomination {
            transaction_id,
            datagram,
            retransmit_at: now + client.stun_rto,
            rto: client.stun_rto,
        });
        Ok(client)
    }

    /// The address the client sends from.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The server's address.
    pub fn server_addr(&self) -> SocketAddr {
        self.server
    }

    /// The client's certificate.
    pub fn certificate(&self) -> &Arc<DtlsCertificate> {
        &self.certificate
    }

    /// The sha-256 fingerprint of the client's certificate, for the server's connect call.
    pub fn fingerprint(&self) -> Fingerprint {
        self.certificate
            .fingerprints()
            .iter()
            .find(|f| f.algorithm == "sha-256")
            .cloned()
            .expect("a DtlsCertificate always has a sha-256 fingerprint") // ok: test support, never in the server
    }

    /// The client's DTLS role.
    pub fn dtls_role(&self) -> DtlsRole {
        self.dtls_role
    }

    /// Whether a nominating check got a verified success answer.
    pub fn is_ice_connected(&self) -> bool {
        self.mapped.is_some()
    }

    /// Our address as the server saw it (XOR-MAPPED-ADDRESS of the nomination's answer).
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        self.mapped
    }

    /// The DTLS state, once there is a session.
    pub fn dtls_state(&self) -> Option<DtlsState> {
        self.dtls.as_ref().map(DtlsSession::state)
    }

    /// Why DTLS failed, if it did.
    pub fn dtls_failure(&self) -> Option<&str> {
        self.dtls_failure.as_deref()
    }

    /// Whether DTLS is connected and SRTP is set up: media can flow.
    pub fn is_connected(&self) -> bool {
        self.srtp.is_some()
    }

    /// The negotiated SRTP profile, once connected.
    pub fn srtp_profile(&self) -> Option<SrtpProfile> {
        self.srtp.as_ref().map(SrtpSession::profile)
    }

    /// The client's counters.
    pub fn stats(&self) -> SimClientStats {
        self.stats
    }

    /// Handles a datagram from `from`: STUN answers, DTLS records, SRTP and SRTCP.
    /// Anything unexpected is counted in [`SimClientStats::dropped`]; never panics.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.now = self.now.max(now);
        if from != self.server {
            self.stats.dropped += 1;
            return;
        }
        match classify(datagram) {
            PacketKind::Stun => self.handle_stun(now, datagram),
            PacketKind::Dtls => match self.dtls.as_mut() {
                Some(dtls) => {
                    self.stats.dtls_received += 1;
                    dtls.handle_read(now, datagram);
                    self.pump_dtls();
                }
                None => self.stats.dropped += 1,
            },
            PacketKind::Rtp => self.handle_srtp(datagram, false),
            PacketKind::Rtcp => self.handle_srtp(datagram, true),
            PacketKind::Unknown => self.stats.dropped += 1,
        }
    }

    /// Retransmits the nomination and DTLS flights, and sends periodic consent checks, as
    /// far as they are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if let Some(nomination) = self.nomination.as_mut()
            && nomination.retransmit_at <= now
        {
            nomination.rto = (nomination.rto * 2).min(self.max_stun_rto);
            nomination.retransmit_at = now + nomination.rto;
            let datagram = nomination.datagram.clone();
            self.stats.stun_requests += 1;
            self.transmit(datagram);
        }
        if let Some(dtls) = self.dtls.as_mut()
            && dtls.poll_timeout().is_some_and(|at| at <= now)
        {
            dtls.handle_timeout(now);
            self.pump_dtls();
        }
        if let (Some(at), Some(interval)) = (self.next_consent, self.consent_interval)
            && at <= now
        {
            self.send_consent_check(now);
            self.next_consent = Some(now + interval);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.nomination.as_ref().map(|n| n.retransmit_at),
            self.dtls.as_ref().and_then(DtlsSession::poll_timeout),
            self.next_consent
                .filter(|_| self.consent_interval.is_some()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Datagram> {
        self.transmits.pop_front()
    }

    /// The next RTP packet received from the server, unprotected.
    pub fn poll_rtp(&mut self) -> Option<Vec<u8>> {
        self.rtp_in.pop_front()
    }

    /// The next RTCP compound packet received from the server, unprotected.
    pub fn poll_rtcp(&mut self) -> Option<Vec<u8>> {
        self.rtcp_in.pop_front()
    }

    /// The next answer to a Binding request (nomination, consent or extra check).
    pub fn poll_stun_answer(&mut self) -> Option<StunAnswer> {
        self.answers.pop_front()
    }

    /// Protects the plain RTP packet `rtp` and queues it for the server.
    pub fn send_rtp(&mut self, now: Instant, rtp: &[u8]) -> Result<(), SimClientError> {
        self.now = self.now.max(now);
        let srtp = self.srtp.as_mut().ok_or(SimClientError::NotConnected)?;
        let mut buf = vec![0u8; rtp.len() + srtp.profile().rtp_overhead()];
        buf[..rtp.len()].copy_from_slice(rtp);
        let len = srtp.protect_rtp(&mut buf, rtp.len())?;
        buf.truncate(len);
        self.stats.rtp_sent += 1;
        self.transmit(buf);
        Ok(())
    }

    /// Protects the plain RTCP compound packet `rtcp` and queues it for the server.
    pub fn send_rtcp(&mut self, now: Instant, rtcp: &[u8]) -> Result<(), SimClientError> {
        self.now = self.now.max(now);
        let srtp = self.srtp.as_mut().ok_or(SimClientError::NotConnected)?;
        let mut buf = vec![0u8; rtcp.len() + srtp.profile().rtcp_overhead()];
        buf[..rtcp.len()].copy_from_slice(rtcp);
        let len = srtp.protect_rtcp(&mut buf, rtcp.len())?;
        buf.truncate(len);
        self.stats.rtcp_sent += 1;
        self.transmit(buf);
        Ok(())
    }

    /// Queues `datagram` for the server as is (garbage, replays, forged packets).
    pub fn send_raw(&mut self, datagram: Vec<u8>) {
        self.transmit(datagram);
    }

    /// Sends a non-nominating Binding request with the current credentials, as browsers do
    /// every few seconds for consent freshness (RFC 7675). Its answer comes out of
    /// [`poll_stun_answer`](Self::poll_stun_answer).
    pub fn send_consent_check(&mut self, now: Instant) -> TransactionId {
        self.send_binding_request(now, false)
    }

    /// Sends a Binding request with the current credentials, nominating or not. A
    /// nominating one that succeeds while ICE is not connected yet connects it (as the
    /// initial nomination does).
    pub fn send_binding_request(&mut self, now: Instant, nominate: bool) -> TransactionId {
        self.now = self.now.max(now);
        self.queue_check(nominate).0
    }

    /// Starts or stops periodic consent checks; the first one goes `interval` after the
    /// latest time passed in (or after ICE connects).
    pub fn set_consent_interval(&mut self, interval: Option<Duration>) {
        self.consent_interval = interval;
        self.next_consent = match interval {
            Some(interval) if self.is_ice_connected() => Some(self.now + interval),
            _ => None,
        };
    }

    /// New server credentials (after an ICE restart): used by every check from now on.
    pub fn set_server_credentials(&mut self, ufrag: &str, pwd: &str) {
        self.server_ufrag = ufrag.to_owned();
        self.server_pwd = pwd.to_owned();
    }

    /// Sends from `local` from now on (a NAT rebinding or a network change); datagrams to
    /// the old address are still accepted.
    pub fn rebind(&mut self, local: SocketAddr) {
        self.local = local;
        if !self.locals.contains(&local) {
            self.locals.push(local);
        }
    }

    /// Closes DTLS (queues a close_notify when connected); media stops.
    pub fn close(&mut self) {
        if let Some(dtls) = self.dtls.as_mut() {
            dtls.close();
            self.pump_dtls();
        }
        self.srtp = None;
        self.nomination = None;
        self.consent_interval = None;
        self.next_consent = None;
    }

    fn transmit(&mut self, data: Vec<u8>) {
        self.transmits
            .push_back(Datagram::new(self.local, self.server, data));
    }

    /// Builds, remembers and queues a check; returns its transaction id and bytes.
    fn queue_check(&mut self, nominating: bool) -> (TransactionId, Vec<u8>) {
        let mut id = [0u8; 12];
        self.rng.fill(&mut id);
        let mut request =
            BindingRequest::new(&self.server_ufrag, &self.client_ufrag, &self.server_pwd)
                .with_tie_breaker(self.tie_breaker)
                .with_transaction_id(id);
        request.use_candidate = nominating;
        let datagram = request.build();
        if self.pending.len() == MAX_PENDING_CHECKS {
            self.pending.pop_front();
        }
        self.pending.push_back(PendingCheck {
            transaction_id: request.transaction_id,
            pwd: self.server_pwd.clone(),
            nominating,
        });
        self.stats.stun_requests += 1;
        self.transmit(datagram.clone());
        (request.transaction_id, datagram)
    }

    fn handle_stun(&mut self, now: Instant, datagram: &[u8]) {
        let Some(at) = stun_transaction_id(datagram)
            .and_then(|id| self.pending.iter().position(|p| p.transaction_id == id))
        else {
            self.stats.stun_unmatched += 1;
            return;
        };
        let Some(check) = self.pending.remove(at) else {
            return;
        };
        let result = check_binding_response(datagram, check.transaction_id, &check.pwd);
        match result {
            Ok(_) => self.stats.stun_successes += 1,
            Err(_) => self.stats.stun_failures += 1,
        }
        if self
            .nomination
            .as_ref()
            .is_some_and(|n| n.transaction_id == check.transaction_id)
        {
            // Answered, either way: no more retransmissions.
            self.nomination = None;
        }
        if check.nominating
            && let Ok(mapped) = result
            && self.mapped.is_none()
        {
            self.on_ice_connected(now, mapped);
        }
        if self.answers.len() == MAX_STUN_ANSWERS {
            self.answers.pop_front();
        }
        self.answers.push_back(StunAnswer {
            transaction_id: check.transaction_id,
            nominating: check.nominating,
            result,
        });
    }

    fn on_ice_connected(&mut self, now: Instant, mapped: SocketAddr) {
        self.mapped = Some(mapped);
        self.next_consent = self.consent_interval.map(|interval| now + interval);
        if self.dtls.is_some() {
            return;
        }
        match DtlsSession::new(
            self.certificate.clone(),
            DtlsRole::Client,
            self.server_fingerprints.clone(),
            now,
        ) {
            Ok(dtls) => {
                self.dtls = Some(dtls);
                self.pump_dtls();
            }
            Err(e) => self.dtls_failure = Some(e.to_string()),
        }
    }

    /// Sends what DTLS queued and handles its events.
    fn pump_dtls(&mut self) {
        let Some(dtls) = self.dtls.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        while let Some(datagram) = dtls.poll_transmit() {
            out.push(datagram.to_vec());
        }
        while let Some(event) = dtls.poll_event() {
            match event {
                DtlsEvent::Connected(keys) => match SrtpSession::new(&keys) {
                    Ok(srtp) => self.srtp = Some(srtp),
                    Err(e) => self.dtls_failure = Some(format!("srtp: {e}")),
                },
                DtlsEvent::Failed(reason) => self.dtls_failure = Some(reason),
                DtlsEvent::Closed => self.srtp = None,
                DtlsEvent::ApplicationData(_) => {}
            }
        }
        self.stats.dtls_sent += out.len() as u64;
        for datagram in out {
            self.transmit(datagram);
        }
    }

    fn handle_srtp(&mut self, datagram: &[u8], rtcp: bool) {
        let Some(srtp) = self.srtp.as_mut() else {
            self.stats.dropped += 1;
            return;
        };
        let mut packet = datagram.to_vec();
        let result = if rtcp {
            srtp.unprotect_rtcp(&mut packet)
        } else {
            srtp.unprotect_rtp(&mut packet)
        };
        match result {
            Ok(len) => {
                packet.truncate(len);
                if rtcp {
                    self.stats.rtcp_received += 1;
                    self.rtcp_in.push_back(packet);
                } else {
                    self.stats.rtp_received += 1;
                    self.rtp_in.push_back(packet);
                }
            }
            Err(SrtpError::Replayed) => self.stats.srtp_replays += 1,
            Err(_) => self.stats.srtp_failures += 1,
        }
    }
}

impl Endpoint for SimClient {
    fn owns(&self, addr: SocketAddr) -> bool {
        self.locals.contains(&addr)
    }

    fn receive(&mut self, now: Instant, datagram: Datagram) {
        self.handle_datagram(now, datagram.from, &datagram.data);
    }

    fn timeout(&mut self, now: Instant) {
        self.handle_timeout(now);
    }

    fn transmit(&mut self) -> Option<Datagram> {
        self.poll_transmit()
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.poll_timeout()
    }
}
