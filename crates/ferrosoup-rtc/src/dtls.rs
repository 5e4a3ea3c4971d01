//! DTLS session of one WebRTC transport (sans-IO), with fingerprint verification and SRTP
//! key export.
//!
//! The handshake itself is `rtc-dtls`'s; this module adds what a WebRTC server needs around
//! it:
//!
//! - one self-signed ECDSA P-256 [`DtlsCertificate`] per server, whose fingerprints go into
//!   every transport's `dtlsParameters`;
//! - the peer certificate checked against the fingerprints the client signalled (any hash
//!   algorithm it listed), and a client certificate required when we are the DTLS server;
//! - `use_srtp` offering `SRTP_AEAD_AES_128_GCM` first, then `SRTP_AES128_CM_HMAC_SHA1_80`;
//! - the RFC 5764 §4.2 key export (`EXTRACTOR-dtls_srtp`), split into local and remote
//!   master key and salt by our role ([`SrtpKeys`], input of [`crate::srtp::SrtpSession`]).
//!
//! Run loop: feed datagrams classified as DTLS with [`DtlsSession::handle_read`], send what
//! [`DtlsSession::poll_transmit`] returns to the selected ICE tuple, call
//! [`DtlsSession::handle_timeout`] at [`DtlsSession::poll_timeout`], and drain
//! [`DtlsSession::poll_event`].

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::BytesMut;
use ring::digest;
use rtc_dtls::config::{ClientAuthType, ConfigBuilder, VerifyPeerCertificateFn};
use rtc_dtls::crypto::Certificate;
use rtc_dtls::crypto_provider::{RTCCryptoProvider, default_provider};
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc_shared::TransportProtocol;
use tracing::debug;

use crate::srtp::SrtpProfile;

/// The label of RFC 5764 §4.2 for exporting SRTP keying material.
const SRTP_EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";
/// Reason given when the peer certificate matches none of the signalled fingerprints.
const FINGERPRINT_MISMATCH: &str = "fingerprint mismatch";
/// The `rtc-dtls` endpoint keys its connection by address; a session has exactly one peer,
/// reached over whatever ICE tuple is selected, so a fixed placeholder address is used.
const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9);
/// Our own placeholder address for the endpoint (never on the wire).
const LOCAL: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 10);
/// DTLS record header length (content type, version, epoch, sequence number, length).
const RECORD_HEADER_LEN: usize = 13;

/// Errors creating certificates and sessions, or using a session in the wrong state.
#[derive(Debug, thiserror::Error)]
pub enum DtlsError {
    /// Generating or importing the certificate failed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The DTLS configuration could not be built.
    #[error("dtls config: {0}")]
    Config(String),
    /// The client signalled no fingerprint, so no peer certificate could ever be accepted.
    #[error("no remote fingerprint given")]
    NoRemoteFingerprint,
    /// The operation needs a connected session.
    #[error("dtls session not connected")]
    NotConnected,
    /// The DTLS library refused the operation.
    #[error("dtls: {0}")]
    Dtls(String),
}

/// A certificate fingerprint as in SDP and mediasoup's `dtlsParameters.fingerprints`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// Hash function name, lowercase as in SDP: `sha-1`, `sha-256`, `sha-384`, `sha-512`.
    pub algorithm: String,
    /// Hash value: uppercase hex bytes separated by colons (`AB:CD:...`).
    pub value: String,
}

impl Fingerprint {
    /// Fingerprint of a DER certificate with `algorithm` (case-insensitive), or `None` when
    /// the algorithm is not one of `sha-1`, `sha-256`, `sha-384`, `sha-512`.
    pub fn of_der(algorithm: &str, der: &[u8]) -> Option<Self> {
        let algorithm = algorithm.to_ascii_lowercase();
        let hash = match algorithm.as_str() {
            "sha-1" => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            "sha-256" => &digest::SHA256,
            "sha-384" => &digest::SHA384,
            "sha-512" => &digest::SHA512,
            _ => return None,
        };
        let value = digest::digest(hash, der)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        Some(Self { algorithm, value })
    }

    /// Whether `der` hashes to this fingerprint (algorithm and value compared
    /// case-insensitively, as SDP allows either case).
    pub fn matches(&self, der: &[u8]) -> bool {
        Self::of_der(&self.algorithm, der)
            .is_some_and(|computed| computed.value.eq_ignore_ascii_case(self.value.trim()))
    }
}

/// The server's DTLS certificate: self-signed ECDSA P-256, shared (in an `Arc`) by all
/// transports, with its fingerprints precomputed.
pub struct DtlsCertificate {
    certificate: Certificate,
    provider: Arc<dyn RTCCryptoProvider>,
    fingerprints: Vec<Fingerprint>,
}

impl std::fmt::Debug for DtlsCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsCertificate")
            .field("fingerprints", &self.fingerprints)
            .finish_non_exhaustive()
    }
}

impl DtlsCertificate {
    /// Generates a fresh self-signed ECDSA P-256 certificate.
    pub fn generate() -> Result<Self, DtlsError> {
        let provider = default_provider().map_err(|e| DtlsError::Certificate(e.to_string()))?;
        // rcgen's simple self-signed generation uses ECDSA P-256 with SHA-256.
        let certificate =
            Certificate::generate_self_signed(vec!["ferrosoup".to_owned()], provider.crypto())
                .map_err(|e| DtlsError::Certificate(e.to_string()))?;
        let der = certificate
            .certificate
            .first()
            .ok_or_else(|| DtlsError::Certificate("generated an empty chain".to_owned()))?;
        let fingerprints = ["sha-1", "sha-256", "sha-384", "sha-512"]
            .into_iter()
            .filter_map(|algorithm| Fingerprint::of_der(algorithm, der.as_ref()))
            .collect();
        Ok(Self {
            certificate,
            provider,
            fingerprints,
        })
    }

    /// The certificate's fingerprints: sha-1, sha-256, sha-384 and sha-512.
    pub fn fingerprints(&self) -> &[Fingerprint] {
        &self.fingerprints
    }

    /// The certificate in DER form.
    pub fn der(&self) -> &[u8] {
        self.certificate
            .certificate
            .first()
            .map(|der| der.as_ref())
            .unwrap_or_default()
    }
}

/// Our DTLS role, from the client's `dtlsParameters.role` (we take the other one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtlsRole {
    /// We send the ClientHello.
    Client,
    /// We wait for the ClientHello.
    Server,
}

/// State of a DTLS session, as mediasoup's `dtlsState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtlsState {
    /// Server role, no datagram received yet.
    New,
    /// Handshake in progress.
    Connecting,
    /// Handshake complete and the peer certificate verified.
    Connected,
    /// Handshake failed, fingerprint mismatch, fatal alert, or retransmissions exhausted.
    Failed,
    /// Closed by either side (close_notify).
    Closed,
}

/// SRTP master keys exported from a completed handshake, already mapped to our role.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    /// The negotiated protection profile.
    pub profile: SrtpProfile,
    /// Master key protecting what we send.
    pub local_master_key: Vec<u8>,
    /// Master salt protecting what we send.
    pub local_master_salt: Vec<u8>,
    /// Master key of what the peer sends.
    pub remote_master_key: Vec<u8>,
    /// Master salt of what the peer sends.
    pub remote_master_salt: Vec<u8>,
}

impl std::fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material stays out of logs.
        f.debug_struct("SrtpKeys")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// Something the owner of a [`DtlsSession`] must act on.
#[derive(Debug)]
pub enum DtlsEvent {
    /// Handshake complete and peer verified; build the SRTP session from these keys.
    Connected(SrtpKeys),
    /// The session failed; the reason is for logs and stats.
    Failed(String),
    /// The session closed (close_notify from the peer, or [`DtlsSession::close`]).
    Closed,
    /// Application data from the peer (SCTP for data channels).
    ApplicationData(BytesMut),
}

/// The DTLS session of one transport.
pub struct DtlsSession {
    role: DtlsRole,
    state: DtlsState,
    endpoint: Endpoint,
    /// Set by the peer-certificate hook when the certificate matched no fingerprint.
    fingerprint_mismatch: Arc<AtomicBool>,
    remote_fingerprints: Arc<[Fingerprint]>,
    transmits: VecDeque<BytesMut>,
    events: VecDeque<DtlsEvent>,
    /// Latest time given to any `handle_*` call, for operations that take none.
    last_now: Instant,
    /// Datagrams dropped without reaching the handshake (bad framing, after the end).
    dropped: u64,
}

impl std::fmt::Debug for DtlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsSession")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl DtlsSession {
    /// Creates a session. `remote_fingerprints` come from the client's `dtlsParameters`; the
    /// peer certificate must match one of them (any algorithm listed), else the session
    /// fails. In the client role the ClientHello is queued immediately.
    pub fn new(
        cert: Arc<DtlsCertificate>,
        role: DtlsRole,
        remote_fingerprints: Vec<Fingerprint>,
        now: Instant,
    ) -> Result<Self, DtlsError> {
        if remote_fingerprints.is_empty() {
            return Err(DtlsError::NoRemoteFingerprint);
        }
        let remote_fingerprints: Arc<[Fingerprint]> = remote_fingerprints.into();
        let fingerprint_mismatch = Arc::new(AtomicBool::new(false));
        let verify: VerifyPeerCertificateFn = {
            let fingerprints = remote_fingerprints.clone();
            let mismatch = fingerprint_mismatch.clone();
            Arc::new(move |certs: &[Vec<u8>], _chains| {
                if peer_matches(&fingerprints, certs) {
                    Ok(())
                } else {
                    mismatch.store(true, Ordering::Relaxed);
                    Err(rtc_shared::error::Error::Other(
                        FINGERPRINT_MISMATCH.to_owned(),
                    ))
                }
            })
        };
        let is_client = role == DtlsRole::Client;
        let config = ConfigBuilder::default()
            .with_crypto_provider(cert.provider.clone())
            .with_certificates(vec![cert.certificate.clone()])
            .with_srtp_protection_profiles(vec![
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ])
            // WebRTC certificates are self-signed: trust comes from the signalled
            // fingerprint, checked by `verify`, not from a CA chain.
            .with_insecure_skip_verify(true)
            .with_verify_peer_certificate(Some(verify))
            .with_client_auth(ClientAuthType::RequireAnyClientCert)
            .with_server_name("ferrosoup".to_owned())
            .build(is_client, None)
            .map_err(|e| DtlsError::Config(e.to_string()))?;
        let config = Arc::new(config);

        let mut session = Self {
            role,
            state: DtlsState::New,
            endpoint: Endpoint::new(
                LOCAL,
                TransportProtocol::UDP,
                (!is_client).then(|| config.clone()),
            ),
            fingerprint_mismatch,
            remote_fingerprints,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            last_now: now,
            dropped: 0,
        };
        if is_client {
            session
                .endpoint
                .connect(now, PEER, config, None)
                .map_err(|e| DtlsError::Dtls(e.to_string()))?;
            session.state = DtlsState::Connecting;
            session.collect_transmits();
        }
        Ok(session)
    }

    /// Our role.
    pub fn role(&self) -> DtlsRole {
        self.role
    }

    /// Current state.
    pub fn state(&self) -> DtlsState {
        self.state
    }

    /// Datagrams dropped without effect: malformed record framing, or received after the
    /// session ended.
    pub fn dropped_datagrams(&self) -> u64 {
        self.dropped
    }

    /// Feeds one datagram classified as DTLS. Never panics; a handshake error moves the
    /// session to [`DtlsState::Failed`] with a [`DtlsEvent::Failed`].
    pub fn handle_read(&mut self, now: Instant, datagram: &[u8]) {
        self.last_now = self.last_now.max(now);
        if matches!(self.state, DtlsState::Failed | DtlsState::Closed) || !framing_ok(datagram) {
            self.dropped += 1;
            return;
        }
        if self.state == DtlsState::New {
            self.state = DtlsState::Connecting;
        }
        let result = self
            .endpoint
            .read(now, PEER, None, BytesMut::from(datagram));
        self.collect_transmits();
        match result {
            Ok(events) => {
                for event in events {
                    match event {
                        EndpointEvent::HandshakeComplete => self.on_handshake_complete(),
                        EndpointEvent::ApplicationData(data)
                            if self.state == DtlsState::Connected =>
                        {
                            self.events.push_back(DtlsEvent::ApplicationData(data));
                        }
                        EndpointEvent::PeerClosed => self.set_closed(),
                        _ => {}
                    }
                }
            }
            Err(err) => self.fail(err.to_string()),
        }
    }

    /// Next datagram to send to the selected ICE tuple.
    pub fn poll_transmit(&mut self) -> Option<BytesMut> {
        self.transmits.pop_front()
    }

    /// Retransmits the current flight when its timer has expired; fails the session when
    /// the retransmission budget is spent.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        let Some(deadline) = self.poll_timeout() else {
            return;
        };
        if now < deadline {
            return;
        }
        let result = self.endpoint.handle_timeout(PEER, now);
        self.collect_transmits();
        if let Err(err) = result {
            self.fail(format!("handshake timed out: {err}"));
        }
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Only the handshake retransmits on timers: once connected, a lost final flight of
        // ours is re-sent when the peer repeats its own (on receipt, not on a timer). Not
        // asking the endpoint then also spares a lookup per transport on every worker tick.
        match self.state {
            DtlsState::Connecting => self.endpoint.poll_timeout(&PEER),
            DtlsState::New | DtlsState::Connected | DtlsState::Failed | DtlsState::Closed => None,
        }
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<DtlsEvent> {
        self.events.pop_front()
    }

    /// Sends application data (SCTP) to the peer.
    pub fn send_application_data(&mut self, data: &[u8]) -> Result<(), DtlsError> {
        if self.state != DtlsState::Connected {
            return Err(DtlsError::NotConnected);
        }
        let result = self.endpoint.write(self.last_now, PEER, data);
        self.collect_transmits();
        result.map_err(|e| DtlsError::Dtls(e.to_string()))
    }

    /// Closes the session: queues a close_notify if connected, then moves to
    /// [`DtlsState::Closed`] with a [`DtlsEvent::Closed`]. A failed session stays failed.
    pub fn close(&mut self) {
        match self.state {
            DtlsState::Connected => {
                // `stop` queues the close_notify and forgets the association.
                let _ = self.endpoint.stop(self.last_now, PEER);
                self.collect_transmits();
                self.set_closed();
            }
            DtlsState::New | DtlsState::Connecting => {
                let _ = self.endpoint.stop(self.last_now, PEER);
                // No close_notify before the handshake completes: drop anything queued.
                while self.endpoint.poll_transmit().is_some() {}
                self.set_closed();
            }
            DtlsState::Failed | DtlsState::Closed => {}
        }
    }

    fn collect_transmits(&mut self) {
        while let Some(transmit) = self.endpoint.poll_transmit() {
            self.transmits.push_back(transmit.message);
        }
    }

    fn fail(&mut self, reason: String) {
        if matches!(self.state, DtlsState::Failed | DtlsState::Closed) {
            return;
        }
        let reason = if self.fingerprint_mismatch.load(Ordering::Relaxed) {
            FINGERPRINT_MISMATCH.to_owned()
        } else {
            reason
        };
        debug!(role = ?self.role, %reason, "dtls failed");
        self.state = DtlsState::Failed;
        self.events.push_back(DtlsEvent::Failed(reason));
    }

    fn set_closed(&mut self) {
        if self.state != DtlsState::Closed {
            debug!(role = ?self.role, "dtls closed");
            self.state = DtlsState::Closed;
            self.events.push_back(DtlsEvent::Closed);
        }
    }

    fn on_handshake_complete(&mut self) {
        match self.export_keys() {
            Ok(keys) => {
                debug!(role = ?self.role, profile = ?keys.profile, "dtls connected");
                self.state = DtlsState::Connected;
                self.events.push_back(DtlsEvent::Connected(keys));
            }
            Err(reason) => {
                // The association is unusable for media: tell the peer and stop.
                let _ = self.endpoint.stop(self.last_now, PEER);
                self.collect_transmits();
                self.fail(reason);
            }
        }
    }

    /// Checks the peer certificate once more (independently of the handshake hook) and
    /// exports the SRTP keys.
    fn export_keys(&self) -> Result<SrtpKeys, String> {
        let state = self
            .endpoint
            .get_connection_state(PEER)
            .ok_or_else(|| "connection state missing".to_owned())?;
        if !peer_matches(&self.remote_fingerprints, &state.peer_certificates) {
            return Err(FINGERPRINT_MISMATCH.to_owned());
        }
        let profile = match state.srtp_protection_profile() {
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => SrtpProfile::AeadAes128Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => SrtpProfile::Aes128CmHmacSha1_80,
            other => return Err(format!("no supported SRTP profile negotiated ({other:?})")),
        };
        let key_len = profile.master_key_len();
        let salt_len = profile.master_salt_len();
        let material = state
            .export_keying_material(SRTP_EXPORTER_LABEL, &[], 2 * (key_len + salt_len))
            .map_err(|e| format!("key export failed: {e}"))?;
        let material = material.as_ref();
        // RFC 5764 §4.2: client key, server key, client salt, server salt.
        let client_key = &material[..key_len];
        let server_key = &material[key_len..2 * key_len];
        let client_salt = &material[2 * key_len..2 * key_len + salt_len];
        let server_salt = &material[2 * key_len + salt_len..];
        let (local_key, local_salt, remote_key, remote_salt) = match self.role {
            DtlsRole::Client => (client_key, client_salt, server_key, server_salt),
            DtlsRole::Server => (server_key, server_salt, client_key, client_salt),
        };
        Ok(SrtpKeys {
            profile,
            local_master_key: local_key.to_vec(),
            local_master_salt: local_salt.to_vec(),
            remote_master_key: remote_key.to_vec(),
            remote_master_salt: remote_salt.to_vec(),
        })
    }
}

/// Whether the peer's leaf certificate matches one of the signalled fingerprints.
fn peer_matches(fingerprints: &[Fingerprint], certificates: &[Vec<u8>]) -> bool {
    certificates
        .first()
        .is_some_and(|leaf| fingerprints.iter().any(|fp| fp.matches(leaf)))
}

/// Whether `datagram` is a whole number of DTLS records, each with a body.
fn framing_ok(datagram: &[u8]) -> bool {
    let mut rest = datagram;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        if rest.len() <= RECORD_HEADER_LEN {
            return false;
        }
        let body = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        let Some(next) = rest.get(RECORD_HEADER_LEN + body..) else {
            return false;
        };
        rest = next;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cert() -> Arc<DtlsCertificate> {
        Arc::new(DtlsCertificate::generate().expect("certificate"))
    }

    fn sha256(cert: &DtlsCertificate) -> Fingerprint {
        cert.fingerprints()
            .iter()
            .find(|fp| fp.algorithm == "sha-256")
            .cloned()
            .expect("sha-256 fingerprint")
    }

    /// A client session and a server session that trust each other's certificates.
    fn pair(now: Instant) -> (DtlsSession, DtlsSession) {
        let (client_cert, server_cert) = (cert(), cert());
        let client = DtlsSession::new(
            client_cert.clone(),
            DtlsRole::Client,
            vec![sha256(&server_cert)],
            now,
        )
        .expect("client");
        let server = DtlsSession::new(
            server_cert,
            DtlsRole::Server,
            vec![sha256(&client_cert)],
            now,
        )
        .expect("server");
        (client, server)
    }

    /// Moves every queued datagram from `from` to `to`; returns how many moved.
    fn shuttle(from: &mut DtlsSession, to: &mut DtlsSession, now: Instant) -> usize {
        let mut moved = 0;
        while let Some(datagram) = from.poll_transmit() {
            to.handle_read(now, &datagram);
            moved += 1;
        }
        moved
    }

    /// Shuttles both ways until neither side has anything to send.
    fn run(a: &mut DtlsSession, b: &mut DtlsSession, now: Instant) {
        for _ in 0..20 {
            if shuttle(a, b, now) + shuttle(b, a, now) == 0 {
                return;
            }
        }
        panic!("the exchange did not settle");
    }

    fn events(session: &mut DtlsSession) -> Vec<DtlsEvent> {
        std::iter::from_fn(|| session.poll_event()).collect()
    }

    fn connected_keys(session: &mut DtlsSession) -> SrtpKeys {
        let mut keys = None;
        for event in events(session) {
            match event {
                DtlsEvent::Connected(k) => keys = Some(k),
                other => panic!("unexpected event {other:?}"),
            }
        }
        keys.expect("a Connected event")
    }

    fn failure(session: &mut DtlsSession) -> String {
        events(session)
            .into_iter()
            .find_map(|event| match event {
                DtlsEvent::Failed(reason) => Some(reason),
                _ => None,
            })
            .expect("a Failed event")
    }

    #[test]
    fn certificate_fingerprints_have_sdp_format() {
        let cert = cert();
        let algorithms: Vec<_> = cert
            .fingerprints()
            .iter()
            .map(|f| f.algorithm.as_str())
            .collect();
        assert_eq!(algorithms, ["sha-1", "sha-256", "sha-384", "sha-512"]);
        let fp = sha256(&cert);
        assert_eq!(fp.value.len(), 32 * 3 - 1);
        assert!(fp.value.split(':').all(|byte| {
            byte.len() == 2
                && byte
                    .chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        }));
        assert!(fp.matches(cert.der()));
        let lowercase = Fingerprint {
            algorithm: "SHA-256".to_owned(),
            value: fp.value.to_lowercase(),
        };
        assert!(lowercase.matches(cert.der()));
        assert!(!sha256(&self::cert()).matches(cert.der()));
        assert_eq!(Fingerprint::of_der("md5", cert.der()), None);
    }

    #[test]
    fn handshake_connects_and_exports_crosswise_keys() {
        let now = Instant::now();
        let (mut client, mut server) = pair(now);
        assert_eq!(client.state(), DtlsState::Connecting);
        assert_eq!(server.state(), DtlsState::New);
        run(&mut client, &mut server, now);
        assert_eq!(client.state(), DtlsState::Connected);
        assert_eq!(server.state(), DtlsState::Connected);

        let client_keys = connected_keys(&mut client);
        let server_keys = connected_keys(&mut server);
        assert_eq!(client_keys.profile, SrtpProfile::AeadAes128Gcm);
        assert_eq!(server_keys.profile, SrtpProfile::AeadAes128Gcm);
        assert_eq!(client_keys.local_master_key.len(), 16);
        assert_eq!(client_keys.local_master_salt.len(), 12);
        assert_eq!(client_keys.local_master_key, server_keys.remote_master_key);
        assert_eq!(
            client_keys.local_master_salt,
            server_keys.remote_master_salt
        );
        assert_eq!(client_keys.remote_master_key, server_keys.local_master_key);
        assert_eq!(
            client_keys.remote_master_salt,
            server_keys.local_master_salt
        );
        assert_ne!(client_keys.local_master_key, client_keys.remote_master_key);

        // The exported keys drive SRTP end to end.
        let mut tx = crate::srtp::SrtpSession::new(&client_keys).expect("srtp");
        let mut rx = crate::srtp::SrtpSession::new(&server_keys).expect("srtp");
        let plain = [0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 1, 2, 3, 4];
        let mut buf = [0u8; 64];
        buf[..plain.len()].copy_from_slice(&plain);
        let len = tx.protect_rtp(&mut buf, plain.len()).expect("protect");
        let len = rx.unprotect_rtp(&mut buf[..len]).expect("unprotect");
        assert_eq!(&buf[..len], &plain);
    }

    #[test]
    fn server_fails_on_client_fingerprint_mismatch() {
        let now = Instant::now();
        let (client_cert, server_cert, stranger) = (cert(), cert(), cert());
        let mut client = DtlsSession::new(
            client_cert,
            DtlsRole::Client,
            vec![sha256(&server_cert)],
            now,
        )
        .expect("client");
        let mut server =
            DtlsSession::new(server_cert, DtlsRole::Server, vec![sha256(&stranger)], now)
                .expect("server");
        run(&mut client, &mut server, now);
        assert_eq!(server.state(), DtlsState::Failed);
        assert_eq!(failure(&mut server), "fingerprint mismatch");
        assert!(
            server.fingerprint_mismatch.load(Ordering::Relaxed),
            "rejected during the handshake, by the certificate hook"
        );
        assert_ne!(client.state(), DtlsState::Connected);
        // A failed session ignores further input and has no timer.
        server.handle_read(now, &[22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(server.poll_timeout(), None);
        assert!(server.poll_event().is_none());
    }

    #[test]
    fn client_fails_on_server_fingerprint_mismatch() {
        let now = Instant::now();
        let (client_cert, server_cert, stranger) = (cert(), cert(), cert());
        // Any listed algorithm may be used: here sha-512.
        let sha512 = |c: &DtlsCertificate| {
            c.fingerprints()
                .iter()
                .find(|f| f.algorithm == "sha-512")
                .cloned()
                .expect("sha-512")
        };
        let mut client = DtlsSession::new(
            client_cert.clone(),
            DtlsRole::Client,
            vec![sha512(&stranger)],
            now,
        )
        .expect("client");
        let mut server = DtlsSession::new(
            server_cert,
            DtlsRole::Server,
            vec![sha512(&client_cert)],
            now,
        )
        .expect("server");
        run(&mut client, &mut server, now);
        assert_eq!(client.state(), DtlsState::Failed);
        assert_eq!(failure(&mut client), "fingerprint mismatch");
        assert!(client.fingerprint_mismatch.load(Ordering::Relaxed));
        assert_ne!(server.state(), DtlsState::Connected);
    }

    #[test]
    fn types_can_cross_threads() {
        // Sessions are created on the control path and moved to a worker thread; the
        // certificate is shared by all workers.
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<DtlsSession>();
        send::<crate::srtp::SrtpSession>();
        send_sync::<DtlsCertificate>();
    }

    #[test]
    fn empty_remote_fingerprints_are_refused() {
        let result = DtlsSession::new(cert(), DtlsRole::Server, vec![], Instant::now());
        assert!(matches!(result, Err(DtlsError::NoRemoteFingerprint)));
    }

    #[test]
    fn lost_first_flight_is_retransmitted() {
        let start = Instant::now();
        let (mut client, mut server) = pair(start);
        // Drop the ClientHello.
        while client.poll_transmit().is_some() {}
        let deadline = client.poll_timeout().expect("retransmit timer armed");
        assert!(deadline > start);

        client.handle_timeout(deadline - Duration::from_millis(1));
        assert!(
            client.poll_transmit().is_none(),
            "nothing before the deadline"
        );

        client.handle_timeout(deadline);
        assert!(
            shuttle(&mut client, &mut server, deadline) > 0,
            "flight retransmitted"
        );
        run(&mut client, &mut server, deadline);
        assert_eq!(client.state(), DtlsState::Connected);
        assert_eq!(server.state(), DtlsState::Connected);
    }

    #[test]
    fn handshake_fails_when_retransmissions_run_out() {
        let mut now = Instant::now();
        let (mut client, _server) = pair(now);
        for _ in 0..50 {
            while client.poll_transmit().is_some() {}
            let Some(deadline) = client.poll_timeout() else {
                break;
            };
            now = deadline;
            client.handle_timeout(now);
        }
        assert_eq!(client.state(), DtlsState::Failed);
        assert!(failure(&mut client).starts_with("handshake timed out"));
    }

    #[test]
    fn garbage_input_does_not_panic() {
        let now = Instant::now();
        let (mut client, mut server) = pair(now);
        let mut garbage: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![22; 13],
            vec![22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1],
        ];
        // Well-framed records with nonsense bodies and every content type.
        for content_type in [20u8, 21, 22, 23, 99] {
            let mut record = vec![content_type, 254, 253, 0, 0, 0, 0, 0, 0, 0, 7, 0, 5];
            record.extend_from_slice(&[1, 0xff, 0, 3, 9]);
            garbage.push(record);
        }
        let mut seed = 0x1234_5678u32;
        for len in [5usize, 14, 60, 300, 1200] {
            garbage.push(
                (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                        (seed >> 16) as u8
                    })
                    .collect(),
            );
        }
        // Before the handshake: malformed framing is dropped and counted, never fatal.
        server.handle_read(now, &garbage[2]);
        assert_eq!(server.state(), DtlsState::New);
        assert_eq!(server.dropped_datagrams(), 1);
        for datagram in &garbage {
            server.handle_read(now, datagram);
            client.handle_read(now, datagram);
        }

        // After the handshake too.
        let (mut client, mut server) = pair(now);
        run(&mut client, &mut server, now);
        for datagram in &garbage {
            server.handle_read(now, datagram);
            client.handle_read(now, datagram);
        }
        assert_eq!(
            client.state(),
            DtlsState::Connected,
            "plaintext junk cannot end it"
        );
        assert_eq!(
            server.state(),
            DtlsState::Connected,
            "plaintext junk cannot end it"
        );
    }

    #[test]
    fn application_data_and_close() {
        let now = Instant::now();
        let (mut client, mut server) = pair(now);
        assert!(matches!(
            client.send_application_data(b"early"),
            Err(DtlsError::NotConnected)
        ));
        run(&mut client, &mut server, now);
        connected_keys(&mut client);
        connected_keys(&mut server);

        client.send_application_data(b"sctp bytes").expect("send");
        shuttle(&mut client, &mut server, now);
        match server.poll_event() {
            Some(DtlsEvent::ApplicationData(data)) => assert_eq!(&data[..], b"sctp bytes"),
            other => panic!("expected application data, got {other:?}"),
        }

        client.close();
        assert_eq!(client.state(), DtlsState::Closed);
        assert!(matches!(client.poll_event(), Some(DtlsEvent::Closed)));
        assert!(
            shuttle(&mut client, &mut server, now) > 0,
            "close_notify sent"
        );
        assert_eq!(server.state(), DtlsState::Closed);
        assert!(matches!(server.poll_event(), Some(DtlsEvent::Closed)));
        // Closing again, or reading after the end, does nothing.
        client.close();
        assert!(client.poll_event().is_none());
        server.handle_read(now, &[23, 254, 253, 0, 1, 0, 0, 0, 0, 0, 9, 0, 1, 0]);
        assert!(server.poll_event().is_none());
    }

    #[test]
    fn closing_before_connected_sends_nothing() {
        let now = Instant::now();
        let (mut client, _server) = pair(now);
        while client.poll_transmit().is_some() {}
        client.close();
        assert_eq!(client.state(), DtlsState::Closed);
        assert!(client.poll_transmit().is_none());
        assert_eq!(client.poll_timeout(), None);
    }
}
