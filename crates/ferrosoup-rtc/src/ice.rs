//! ICE-lite server side of one WebRTC transport (RFC 8445 §2.5, RFC 7675), sans-IO.
//!
//! The server hands its ICE credentials to the client in signaling and never sends checks of
//! its own: it is ICE-lite and always controlled. The client (controlling) sends STUN Binding
//! requests with `USERNAME = "<server ufrag>:<client ufrag>"`, `MESSAGE-INTEGRITY` keyed with
//! the server password, `FINGERPRINT`, `PRIORITY`, `ICE-CONTROLLING` and, on the pair it
//! nominates, `USE-CANDIDATE`. [`IceLiteServer::handle_stun`] answers each request and keeps
//! the set of 5-tuples (here: remote addresses on the worker's socket) that passed a check;
//! media is accepted from any of them and sent to the selected one.
//!
//! States follow mediasoup's `iceState`:
//!
//! - `New` → `Connected` on the first valid check without `USE-CANDIDATE` (its tuple is
//!   selected), or → `Completed` on one with `USE-CANDIDATE`.
//! - `Connected` → `Completed` on a valid check with `USE-CANDIDATE` (that tuple is selected).
//! - `Completed`: a valid check with `USE-CANDIDATE` from another tuple selects it (the client
//!   moved, e.g. Wi-Fi → cellular) and emits [`IceEvent::SelectedTupleChanged`].
//! - `Connected`/`Completed` → `Disconnected` when the selected tuple has not passed a check
//!   for the consent timeout (RFC 7675, 30 s by default); all tuples are forgotten. A later
//!   valid check leads back to `Connected`/`Completed`.
//! - any → `Closed` on [`IceLiteServer::close`].
//!
//! At most [`MAX_TUPLES`] tuples are kept: a new one evicts the least recently checked
//! tuple that is not selected, and a tuple whose consent expired is forgotten. Every tuple
//! forgotten is reported as [`IceEvent::TupleRemoved`], so an owner that routes datagrams
//! by address can forget it too.
//!
//! ```text
//! loop {
//!     // datagram classified as STUN by demux::classify:
//!     if let StunOutcome::Respond = ice.handle_stun(now, from, &datagram, &mut out) {
//!         socket.send_to(&out, from);
//!     }
//!     while let Some(event) = ice.poll_event() { /* notify, re-route */ }
//!     // when ice.poll_timeout() is reached: ice.handle_timeout(now)
//! }
//! ```
//!
//! STUN handling allocates (rtc-stun's `Message` owns its attributes); it is not on the
//! per-media-packet path. [`IceLiteServer::is_valid_tuple`], which is, does not allocate.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::RngExt;
use rtc_shared::error::Result as StunResult;
use rtc_stun::attributes::{
    ATTR_FINGERPRINT, ATTR_ICE_CONTROLLED, ATTR_MESSAGE_INTEGRITY, ATTR_PRIORITY,
    ATTR_USE_CANDIDATE, ATTR_USERNAME, AttrType,
};
use rtc_stun::crypto::providers::RingCrypto;
use rtc_stun::error_code::{
    CODE_BAD_REQUEST, CODE_ROLE_CONFLICT, CODE_UNAUTHORIZED, ErrorCode, ErrorCodeAttribute,
};
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{
    BINDING_SUCCESS, CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, METHOD_BINDING,
    Message, MessageType, Setter, TRANSACTION_ID_SIZE, TransactionId,
};
use rtc_stun::xoraddr::XorMappedAddress;

use crate::demux::is_plausible_stun;

/// Consent freshness timeout of RFC 7675 §5.1: without a valid check from the selected tuple
/// for this long, the transport is `Disconnected`.
pub const DEFAULT_CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How many validated tuples one transport remembers; the least recently checked
/// non-selected one makes room for a new one. A client has a few candidates (host, server
/// reflexive, relayed, over IPv4 and IPv6) and checks from one at a time.
pub const MAX_TUPLES: usize = 8;
/// Length of a generated username fragment (RFC 8839 requires at least 4 characters).
const UFRAG_LEN: usize = 16;
/// Length of a generated password (RFC 8839 requires at least 22 characters).
const PWD_LEN: usize = 32;
/// Characters of generated credentials: valid ICE chars, safe in SDP and JSON.
const CREDENTIAL_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

const STUN_HEADER_LEN: usize = 20;
const MESSAGE_INTEGRITY_LEN: usize = 20;
const FINGERPRINT_LEN: usize = 4;
const PRIORITY_LEN: usize = 4;
/// The STUN message type value of a Binding request.
const BINDING_REQUEST_TYPE: u16 = 0x0001;

/// The crypto backend for MESSAGE-INTEGRITY (HMAC-SHA1). rtc-stun's default features
/// enable ring, which the workspace uses.
static CRYPTO: RingCrypto = RingCrypto;

/// ICE username fragment and password of the server side of one transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceCredentials {
    /// `usernameFragment` in mediasoup's `iceParameters`.
    pub ufrag: String,
    /// `password` in mediasoup's `iceParameters`; keys MESSAGE-INTEGRITY both ways.
    pub pwd: String,
}

impl IceCredentials {
    /// Random credentials: a 16-character ufrag and a 32-character password of `[a-z0-9]`
    /// (about 82 and 165 bits), from the thread-local CSPRNG.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut random_string = |len: usize| -> String {
            (0..len)
                .map(|_| {
                    char::from(CREDENTIAL_ALPHABET[rng.random_range(0..CREDENTIAL_ALPHABET.len())])
                })
                .collect()
        };
        let ufrag = random_string(UFRAG_LEN);
        let pwd = random_string(PWD_LEN);
        Self { ufrag, pwd }
    }
}

/// ICE state of a transport, named as mediasoup's `iceState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IceState {
    /// No valid check received yet.
    New,
    /// A valid check was received; a tuple is selected but not nominated.
    Connected,
    /// The client nominated a tuple with `USE-CANDIDATE`.
    Completed,
    /// Consent expired on the selected tuple; no tuple is valid until a new check.
    Disconnected,
    /// The transport was closed; everything is ignored.
    Closed,
}

/// Something the owner of the server must react to, drained with
/// [`IceLiteServer::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IceEvent {
    /// The ICE state changed to this value.
    StateChanged(IceState),
    /// Media must now be sent to this remote address.
    SelectedTupleChanged(SocketAddr),
    /// This remote address is no longer valid (evicted for a newer one, its consent
    /// expired, or the server closed): media from it must be dropped.
    TupleRemoved(SocketAddr),
}

/// What [`IceLiteServer::handle_stun`] did with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StunOutcome {
    /// A response (success or error) was written into `out`; send it to `from`.
    Respond,
    /// Nothing to send; the reason is a static label for counters and traces.
    Ignored(&'static str),
}

/// A remote address that passed a connectivity check, and when it last did.
#[derive(Clone, Copy, Debug)]
struct Tuple {
    addr: SocketAddr,
    last_check: Instant,
}

/// The ICE-lite server of one WebRTC transport. Owns its credentials, its validated tuples
/// and its pending events; it never does I/O or reads a clock.
pub struct IceLiteServer {
    credentials: IceCredentials,
    /// The credentials before the last [`restart`](Self::restart), still accepted until the
    /// client sends a valid check with the new ones.
    old_credentials: Option<IceCredentials>,
    state: IceState,
    /// When `state` was entered.
    state_since: Instant,
    /// The latest time passed in, for calls that take none.
    now: Instant,
    /// Validated tuples, at most [`MAX_TUPLES`]; the selected one is among them.
    tuples: Vec<Tuple>,
    selected: Option<SocketAddr>,
    consent_timeout: Duration,
    events: VecDeque<IceEvent>,
    /// Decoding buffer reused across requests.
    request: Message,
    /// Encoding buffer reused across responses.
    response: Message,
}

/// Why a request is answered with an error, and whether that answer is authenticated.
struct Rejection {
    code: ErrorCode,
    reason: &'static str,
    /// The password to sign the error response with, when the request was authenticated.
    integrity_key: Option<String>,
}

impl Rejection {
    fn unauthenticated(code: ErrorCode, reason: &'static str) -> Self {
        Self {
            code,
            reason,
            integrity_key: None,
        }
    }
}

/// A request that passed every check.
struct ValidCheck {
    use_candidate: bool,
    /// The password that authenticated the request; it signs the response.
    key: String,
}

enum Verdict {
    Accept(ValidCheck),
    Reject(Rejection),
    Ignore(&'static str),
}

impl IceLiteServer {
    /// A server in state `New` with the given local credentials.
    pub fn new(credentials: IceCredentials, now: Instant) -> Self {
        Self {
            credentials,
            old_credentials: None,
            state: IceState::New,
            state_since: now,
            now,
            tuples: Vec::with_capacity(MAX_TUPLES),
            selected: None,
            consent_timeout: DEFAULT_CONSENT_TIMEOUT,
            events: VecDeque::new(),
            request: Message::new(),
            response: Message::new(),
        }
    }

    /// The current local credentials (the new ones after a restart).
    pub fn credentials(&self) -> &IceCredentials {
        &self.credentials
    }

    /// Sets how long the selected tuple may go without a valid check before the state
    /// becomes `Disconnected` (default [`DEFAULT_CONSENT_TIMEOUT`]).
    pub fn set_consent_timeout(&mut self, timeout: Duration) {
        self.consent_timeout = timeout;
    }

    /// Handles one datagram already classified as STUN, received from `from`.
    ///
    /// Valid Binding requests are answered with a success response carrying
    /// XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY (local password) and FINGERPRINT, and update the
    /// tuples and state. Requests that are malformed or lack USERNAME, MESSAGE-INTEGRITY,
    /// PRIORITY or FINGERPRINT get a 400, wrong credentials a 401, and a client claiming
    /// ICE-CONTROLLED a 487. Indications, responses, non-STUN data and requests with a wrong
    /// FINGERPRINT are ignored. `out` is cleared first. Never panics.
    pub fn handle_stun(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut Vec<u8>,
    ) -> StunOutcome {
        out.clear();
        self.advance(now);
        if self.state == IceState::Closed {
            return StunOutcome::Ignored("ice closed");
        }
        let header = match datagram.first_chunk::<STUN_HEADER_LEN>() {
            Some(header) if is_plausible_stun(datagram) => header,
            _ => return StunOutcome::Ignored("not stun"),
        };
        let mut header_type = MessageType::default();
        header_type.read_value(u16::from_be_bytes([header[0], header[1]]));
        let mut transaction_id = TransactionId::default();
        transaction_id
            .0
            .copy_from_slice(&header[STUN_HEADER_LEN - TRANSACTION_ID_SIZE..]);

        match self.verify_request(header_type, datagram) {
            Verdict::Ignore(reason) => StunOutcome::Ignored(reason),
            Verdict::Reject(rejection) => {
                tracing::debug!(
                    %from,
                    code = rejection.code.0,
                    reason = rejection.reason,
                    "rejecting STUN request"
                );
                self.write_error(header_type, transaction_id, &rejection, out)
            }
            Verdict::Accept(check) => {
                if let Err(error) = self.encode_success(transaction_id, from, &check.key) {
                    tracing::warn!(%error, "cannot encode STUN Binding success response");
                    return StunOutcome::Ignored("response encoding failed");
                }
                out.extend_from_slice(&self.response.raw);
                self.handle_valid_check(now, from, check.use_candidate);
                StunOutcome::Respond
            }
        }
    }

    /// The tuple media is sent to, if any.
    pub fn selected_tuple(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// Whether `from` passed a connectivity check and has not expired: media from it is
    /// accepted. Does not allocate (called per received packet).
    pub fn is_valid_tuple(&self, from: SocketAddr) -> bool {
        self.tuples.iter().any(|t| t.addr == from)
    }

    /// Media (DTLS, RTP, RTCP) arrived from `from`: if that tuple passed an ICE check but is
    /// not the selected one, select it. This follows a client whose address changed (a NAT
    /// rebinding) without waiting for a nomination, as mediasoup does. Returns whether the
    /// selection changed.
    pub fn on_media_from(&mut self, from: SocketAddr) -> bool {
        if self.selected == Some(from) || !self.is_valid_tuple(from) {
            return false;
        }
        self.select(from);
        true
    }

    /// The current ICE state.
    pub fn state(&self) -> IceState {
        self.state
    }

    /// When the current state was entered (for `Closed`: the latest time passed in before
    /// [`close`](Self::close)). Lets the owner tell how long ICE has been `Disconnected`.
    pub fn state_since(&self) -> Instant {
        self.state_since
    }

    /// ICE restart: switches to `credentials`. Tuples, selection and state are kept. Checks
    /// with the previous credentials are still answered until the first valid check with
    /// the new ones; from then on they get a 401.
    pub fn restart(&mut self, credentials: IceCredentials) {
        if self.state == IceState::Closed {
            return;
        }
        tracing::debug!(ufrag = %credentials.ufrag, "ICE restart");
        self.old_credentials = Some(std::mem::replace(&mut self.credentials, credentials));
    }

    /// Expires consent: the selected tuple without a valid check for the consent timeout
    /// makes the state `Disconnected` and forgets every tuple; other tuples that expired are
    /// forgotten individually. Each forgotten tuple is reported as
    /// [`IceEvent::TupleRemoved`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        if !matches!(self.state, IceState::Connected | IceState::Completed) {
            return;
        }
        let timeout = self.consent_timeout;
        let expired = |t: &Tuple| {
            t.last_check
                .checked_add(timeout)
                .is_some_and(|deadline| now >= deadline)
        };
        let selected_expired = self
            .tuples
            .iter()
            .any(|t| Some(t.addr) == self.selected && expired(t));
        if selected_expired {
            tracing::debug!(selected = ?self.selected, "ICE consent expired");
            self.forget_tuples(|_| true);
            self.selected = None;
            self.set_state(IceState::Disconnected, now);
        } else {
            self.forget_tuples(expired);
        }
    }

    /// The path to `addr` is gone (its TCP connection closed): the tuple is forgotten and
    /// reported as [`IceEvent::TupleRemoved`]. If it was the selected tuple, the most
    /// recently checked remaining tuple is selected, or, with none left, the state becomes
    /// `Disconnected`.
    pub fn remove_tuple(&mut self, addr: SocketAddr, now: Instant) {
        self.advance(now);
        if !self.is_valid_tuple(addr) {
            return;
        }
        self.forget_tuples(|t| t.addr == addr);
        if self.selected != Some(addr) {
            return;
        }
        self.selected = None;
        match self
            .tuples
            .iter()
            .max_by_key(|t| t.last_check)
            .map(|t| t.addr)
        {
            Some(next) => self.select(next),
            None => self.set_state(IceState::Disconnected, now),
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tuples
            .iter()
            .filter_map(|t| t.last_check.checked_add(self.consent_timeout))
            .min()
    }

    /// The next pending event, oldest first.
    pub fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }

    /// Closes the server: state `Closed`, no valid tuple (each reported as
    /// [`IceEvent::TupleRemoved`]), everything ignored from now on.
    pub fn close(&mut self) {
        if self.state == IceState::Closed {
            return;
        }
        self.forget_tuples(|_| true);
        self.selected = None;
        self.old_credentials = None;
        self.set_state(IceState::Closed, self.now);
    }

    /// Forgets the tuples `remove` picks, reporting each.
    fn forget_tuples(&mut self, remove: impl Fn(&Tuple) -> bool) {
        let events = &mut self.events;
        self.tuples.retain(|t| {
            if !remove(t) {
                return true;
            }
            tracing::debug!(addr = %t.addr, "ICE tuple forgotten");
            events.push_back(IceEvent::TupleRemoved(t.addr));
            false
        });
    }

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    fn set_state(&mut self, state: IceState, now: Instant) {
        if self.state == state {
            return;
        }
        tracing::debug!(from = ?self.state, to = ?state, "ICE state change");
        self.state = state;
        self.state_since = now;
        self.events.push_back(IceEvent::StateChanged(state));
    }

    fn select(&mut self, addr: SocketAddr) {
        if self.selected == Some(addr) {
            return;
        }
        tracing::debug!(%addr, "ICE selected tuple");
        self.selected = Some(addr);
        self.events.push_back(IceEvent::SelectedTupleChanged(addr));
    }

    /// Checks a plausible STUN datagram the way RFC 5389 §10.1.2 and RFC 8445 §7.3 want.
    fn verify_request(&mut self, header_type: MessageType, datagram: &[u8]) -> Verdict {
        let is_request = header_type.class == CLASS_REQUEST;
        if header_type.method != METHOD_BINDING {
            return if is_request {
                Verdict::Reject(Rejection::unauthenticated(
                    CODE_BAD_REQUEST,
                    "unknown STUN method",
                ))
            } else {
                Verdict::Ignore("unknown STUN method")
            };
        }
        if !is_request {
            return Verdict::Ignore(if header_type.class == CLASS_INDICATION {
                "stun indication"
            } else {
                "stun response"
            });
        }
        if self.request.unmarshal_binary(datagram).is_err() {
            return Verdict::Reject(Rejection::unauthenticated(
                CODE_BAD_REQUEST,
                "malformed attributes",
            ));
        }

        let attrs = &self.request.attributes.0;
        let position = |typ: AttrType| attrs.iter().position(|a| a.typ == typ);
        let Some(fingerprint_at) = position(ATTR_FINGERPRINT) else {
            return bad_request("missing FINGERPRINT");
        };
        if fingerprint_at + 1 != attrs.len() || attrs[fingerprint_at].value.len() != FINGERPRINT_LEN
        {
            return bad_request("misplaced FINGERPRINT");
        }
        if FINGERPRINT.check(&self.request).is_err() {
            return Verdict::Ignore("bad FINGERPRINT");
        }
        let Some(integrity_at) = position(ATTR_MESSAGE_INTEGRITY) else {
            return bad_request("missing MESSAGE-INTEGRITY");
        };
        if integrity_at + 2 != attrs.len()
            || attrs[integrity_at].value.len() != MESSAGE_INTEGRITY_LEN
        {
            return bad_request("misplaced MESSAGE-INTEGRITY");
        }
        let Some(username) = attrs.iter().find(|a| a.typ == ATTR_USERNAME) else {
            return bad_request("missing USERNAME");
        };
        let priority_ok = attrs
            .iter()
            .any(|a| a.typ == ATTR_PRIORITY && a.value.len() == PRIORITY_LEN && a.value != [0; 4]);
        if !priority_ok {
            return bad_request("missing PRIORITY");
        }
        let Some(local_ufrag) = std::str::from_utf8(&username.value)
            .ok()
            .and_then(|u| u.split_once(':'))
            .map(|(local, _remote)| local)
        else {
            return unauthorized("bad USERNAME");
        };
        let use_candidate = attrs.iter().any(|a| a.typ == ATTR_USE_CANDIDATE);
        let claims_controlled = attrs.iter().any(|a| a.typ == ATTR_ICE_CONTROLLED);

        let (key, is_current) = if local_ufrag == self.credentials.ufrag {
            (self.credentials.pwd.clone(), true)
        } else if let Some(old) = self
            .old_credentials
            .as_ref()
            .filter(|old| old.ufrag == local_ufrag)
        {
            (old.pwd.clone(), false)
        } else {
            return unauthorized("unknown ufrag");
        };
        if MessageIntegrity::check(&mut self.request, key.as_bytes(), &CRYPTO).is_err() {
            return unauthorized("bad MESSAGE-INTEGRITY");
        }
        if is_current && self.old_credentials.take().is_some() {
            tracing::debug!("ICE restart applied by the client");
        }
        if claims_controlled {
            return Verdict::Reject(Rejection {
                code: CODE_ROLE_CONFLICT,
                reason: "role conflict",
                integrity_key: Some(key),
            });
        }
        Verdict::Accept(ValidCheck { use_candidate, key })
    }

    fn encode_success(
        &mut self,
        transaction_id: TransactionId,
        from: SocketAddr,
        key: &str,
    ) -> StunResult<()> {
        let m = &mut self.response;
        m.reset();
        m.typ = BINDING_SUCCESS;
        m.transaction_id = transaction_id;
        m.write_header();
        // A dual-stack socket reports IPv4 peers as mapped IPv6; answer in the family the
        // client sent from.
        let ip = match from.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        XorMappedAddress {
            ip,
            port: from.port(),
        }
        .add_to(m)?;
        MessageIntegrity::new_short_term_integrity_with_provider(key.to_owned(), &CRYPTO)
            .add_to(m)?;
        FINGERPRINT.add_to(m)
    }

    fn write_error(
        &mut self,
        request_type: MessageType,
        transaction_id: TransactionId,
        rejection: &Rejection,
        out: &mut Vec<u8>,
    ) -> StunOutcome {
        let m = &mut self.response;
        m.reset();
        m.typ = MessageType::new(request_type.method, CLASS_ERROR_RESPONSE);
        m.transaction_id = transaction_id;
        m.write_header();
        let encoded = ErrorCodeAttribute {
            code: rejection.code,
            reason: rejection.reason.as_bytes().to_vec(),
        }
        .add_to(m)
        .and_then(|()| match &rejection.integrity_key {
            Some(key) => {
                MessageIntegrity::new_short_term_integrity_with_provider(key.clone(), &CRYPTO)
                    .add_to(m)
            }
            None => Ok(()),
        })
        .and_then(|()| FINGERPRINT.add_to(m));
        if let Err(error) = encoded {
            tracing::warn!(%error, "cannot encode STUN error response");
            return StunOutcome::Ignored("response encoding failed");
        }
        out.extend_from_slice(&m.raw);
        StunOutcome::Respond
    }

    /// Records a valid check from `addr` and applies the state rules.
    fn handle_valid_check(&mut self, now: Instant, addr: SocketAddr, use_candidate: bool) {
        if let Some(tuple) = self.tuples.iter_mut().find(|t| t.addr == addr) {
            tuple.last_check = now;
        } else {
            if self.tuples.len() >= MAX_TUPLES {
                let selected = self.selected;
                if let Some(oldest) = self
                    .tuples
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| Some(t.addr) != selected)
                    .min_by_key(|(_, t)| t.last_check)
                    .map(|(i, _)| i)
                {
                    let evicted = self.tuples.swap_remove(oldest);
                    tracing::debug!(addr = %evicted.addr, "ICE tuple evicted");
                    self.events.push_back(IceEvent::TupleRemoved(evicted.addr));
                }
            }
            self.tuples.push(Tuple {
                addr,
                last_check: now,
            });
        }

        match self.state {
            IceState::New | IceState::Disconnected => {
                self.select(addr);
                let state = if use_candidate {
                    IceState::Completed
                } else {
                    IceState::Connected
                };
                self.set_state(state, now);
            }
            IceState::Connected | IceState::Completed => {
                if use_candidate {
                    self.select(addr);
                    self.set_state(IceState::Completed, now);
                }
            }
            IceState::Closed => {}
        }
    }
}

fn bad_request(reason: &'static str) -> Verdict {
    Verdict::Reject(Rejection::unauthenticated(CODE_BAD_REQUEST, reason))
}

fn unauthorized(reason: &'static str) -> Verdict {
    Verdict::Reject(Rejection::unauthenticated(CODE_UNAUTHORIZED, reason))
}

/// The local (server) part of the USERNAME of a STUN Binding request, i.e. the text before
/// the first `:`, for routing a datagram from an unknown 5-tuple to its transport. Reads the
/// datagram in place without allocating; `None` if it is not a well-formed Binding request
/// or has no such USERNAME. Nothing is authenticated here.
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    if !is_plausible_stun(datagram)
        || u16::from_be_bytes([datagram[0], datagram[1]]) != BINDING_REQUEST_TYPE
    {
        return None;
    }
    let mut rest = datagram.get(STUN_HEADER_LEN..)?;
    while let Some((header, tail)) = rest.split_first_chunk::<4>() {
        let typ = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let value = tail.get(..len)?;
        if typ == ATTR_USERNAME.value() {
            let (local, _remote) = std::str::from_utf8(value).ok()?.split_once(':')?;
            return (!local.is_empty()).then_some(local);
        }
        rest = tail.get(len.next_multiple_of(4)..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_stun::attributes::{ATTR_ICE_CONTROLLING, RawAttribute};
    use rtc_stun::error_code::ErrorCodeAttribute;
    use rtc_stun::message::{BINDING_ERROR, BINDING_REQUEST, Getter};
    use rtc_stun::textattrs::TextAttribute;

    const SEC: Duration = Duration::from_secs(1);

    fn creds(ufrag: &str, pwd: &str) -> IceCredentials {
        IceCredentials {
            ufrag: ufrag.to_owned(),
            pwd: pwd.to_owned(),
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    /// A Binding request as a browser sends it; every field can be spoiled by a test.
    struct Request {
        username: Option<String>,
        pwd: Option<String>,
        priority: bool,
        use_candidate: bool,
        role: Option<AttrType>,
        fingerprint: bool,
    }

    impl Request {
        fn new(server: &IceCredentials) -> Self {
            Self {
                username: Some(format!("{}:clientufrag", server.ufrag)),
                pwd: Some(server.pwd.clone()),
                priority: true,
                use_candidate: false,
                role: Some(ATTR_ICE_CONTROLLING),
                fingerprint: true,
            }
        }

        fn nominate(mut self) -> Self {
            self.use_candidate = true;
            self
        }

        fn build(&self) -> (TransactionId, Vec<u8>) {
            let mut m = Message::new();
            let tid = TransactionId::new();
            m.build(&[Box::new(tid), Box::new(BINDING_REQUEST)])
                .expect("header");
            if let Some(username) = &self.username {
                TextAttribute::new(ATTR_USERNAME, username.clone())
                    .add_to(&mut m)
                    .expect("username");
            }
            let raw = |typ, value: &[u8]| RawAttribute {
                typ,
                length: 0,
                value: value.to_vec(),
            };
            if self.priority {
                raw(ATTR_PRIORITY, &1_853_817_087u32.to_be_bytes())
                    .add_to(&mut m)
                    .expect("priority");
            }
            if let Some(role) = self.role {
                raw(role, &0x0102_0304_0506_0708u64.to_be_bytes())
                    .add_to(&mut m)
                    .expect("role");
            }
            if self.use_candidate {
                raw(ATTR_USE_CANDIDATE, &[])
                    .add_to(&mut m)
                    .expect("use-candidate");
            }
            if let Some(pwd) = &self.pwd {
                MessageIntegrity::new_short_term_integrity_with_provider(pwd.clone(), &CRYPTO)
                    .add_to(&mut m)
                    .expect("integrity");
            }
            if self.fingerprint {
                FINGERPRINT.add_to(&mut m).expect("fingerprint");
            }
            (tid, m.raw)
        }
    }

    fn decode(out: &[u8]) -> Message {
        let mut m = Message::new();
        m.unmarshal_binary(out).expect("response decodes");
        FINGERPRINT.check(&m).expect("response FINGERPRINT");
        m
    }

    /// Asserts a success response for `tid` that verifies with `pwd` and maps to `from`.
    fn assert_success(out: &[u8], tid: TransactionId, pwd: &str, from: SocketAddr) {
        let mut m = decode(out);
        assert_eq!(m.typ, BINDING_SUCCESS);
        assert_eq!(m.transaction_id, tid);
        MessageIntegrity::check(&mut m, pwd.as_bytes(), &CRYPTO).expect("response integrity");
        let mut mapped = XorMappedAddress::default();
        mapped.get_from(&m).expect("XOR-MAPPED-ADDRESS");
        assert_eq!(SocketAddr::new(mapped.ip, mapped.port), from);
    }

    /// The error code of an error response for `tid`.
    fn error_code(out: &[u8], tid: TransactionId) -> u16 {
        let m = decode(out);
        assert_eq!(m.typ, BINDING_ERROR);
        assert_eq!(m.transaction_id, tid);
        let mut code = ErrorCodeAttribute::default();
        code.get_from(&m).expect("ERROR-CODE");
        code.code.0
    }

    fn events(ice: &mut IceLiteServer) -> Vec<IceEvent> {
        std::iter::from_fn(|| ice.poll_event()).collect()
    }

    fn check(
        ice: &mut IceLiteServer,
        now: Instant,
        from: SocketAddr,
        request: &Request,
    ) -> (TransactionId, StunOutcome, Vec<u8>) {
        let (tid, datagram) = request.build();
        let mut out = vec![0xEE; 7];
        let outcome = ice.handle_stun(now, from, &datagram, &mut out);
        (tid, outcome, out)
    }

    #[test]
    fn generated_credentials_have_the_required_shape() {
        let a = IceCredentials::generate();
        let b = IceCredentials::generate();
        assert_eq!(a.ufrag.len(), 16);
        assert_eq!(a.pwd.len(), 32);
        for c in a.ufrag.chars().chain(a.pwd.chars()) {
            assert!(c.is_ascii_lowercase() || c.is_ascii_digit(), "{c:?}");
        }
        assert_ne!(a, b);
    }

    #[test]
    fn valid_request_gets_verified_success_response() {
        let t0 = Instant::now();
        let server = creds("serverufrag00001", "serverpassword0123456789abcdefgh");
        let mut ice = IceLiteServer::new(server.clone(), t0);
        for from in [addr("192.0.2.7:50000"), addr("[2001:db8::1]:40000")] {
            let (tid, outcome, out) = check(&mut ice, t0, from, &Request::new(&server));
            assert_eq!(outcome, StunOutcome::Respond);
            assert_success(&out, tid, &server.pwd, from);
            assert!(ice.is_valid_tuple(from));
        }
        assert!(!ice.is_valid_tuple(addr("192.0.2.7:50001")));
    }

    #[test]
    fn ipv4_mapped_source_is_answered_as_ipv4() {
        let t0 = Instant::now();
        let server = creds("u", "p");
        let mut ice = IceLiteServer::new(server.clone(), t0);
        let mapped = addr("[::ffff:192.0.2.9]:5000");
        let (tid, outcome, out) = check(&mut ice, t0, mapped, &Request::new(&server));
        assert_eq!(outcome, StunOutcome::Respond);
        assert_success(&out, tid, "p", addr("192.0.2.9:5000"));
        assert!(ice.is_valid_tuple(mapped));
    }

    #[test]
    fn wrong_password_gets_401_and_no_tuple() {
        let t0 = Instant::now();
        let server = creds("serverufrag", "serverpassword");
        let mut ice = IceLiteServer::new(server.clone(), t0);
        let from = addr("192.0.2.7:50000");
        let mut request = Request::new(&server);
        request.pwd = Some("not-the-password".to_owned());
        let (tid, outcome, out) = check(&mut ice, t0, from, &request);
        assert_eq!(outcome, StunOutcome::Respond);
        assert_eq!(error_code(&out, tid), 401);
        // An unauthenticated error carries no MESSAGE-INTEGRITY.
        assert!(!decode(&out).contains(ATTR_MESSAGE_INTEGRITY));
        assert!(!ice.is_valid_tuple(from));
        assert_eq!(ice.state(), IceState::New);
        assert_eq!(ice.selected_tuple(), None);
        assert_eq!(ice.poll_event(), None);
    }

    #[test]
    fn wrong_or_malformed_username_gets_401() {
        let t0 = Instant::now();
        let server = creds("serverufrag", "serverpassword");
        let mut ice = IceLiteServer::new(server.clone(), t0);
        let from = addr("192.0.2.7:50000");
        for username in ["otherufrag:clientufrag", "serverufrag", ":serverufrag", ""] {
            let mut request = Request::new(&server);
            request.username = Some(username.to_owned());
            let (tid, outcome, out) = check(&mut ice, t0, from, &request);
            assert_eq!(outcome, StunOutcome::Respond, "{username:?}");
            assert_eq!(error_code(&out, tid), 401, "{username:?}");
        }
        assert!(!ice.is_valid_tuple(from));
        assert_eq!(ice.state(), IceState::New);
    }

    #[test]
    fn missing_required_attributes_get_400() {
        let t0 = Instant::now();
        let server = creds("serverufrag", "serverpassword");
        let mut ice = IceLiteServer::new(server.clone(), t0);
        let from = addr("192.0.2.7:50000");
        let spoilers: [fn(&mut Request); 4] = [
            |r| r.fingerprint = false,
            |r| r.pwd = None,
            |r| r.username = None,
            |r| r.priority = false,
        ];
        for spoil in spoilers {
            let mut request = Request::new(&server);
            spoil(&mut request);
            let (tid, outcome, out) = check(&mut ice, t0, from, &request);
            assert_eq!(outcome, StunOutcome::Respond);
            assert_eq!(error_code(&out, tid), 400);
        }
        assert!(!ice.is_valid_tuple(from));
        assert_eq!(ice.state(), IceState::New);
    }

    #[test]
    fn corrupted_fingerprint_is_ignored() {
        let t0 = Instant::now();
        let server = creds("serverufrag", "serverpassword");
        let mut ice = IceLiteServer::new(server.clone(), t0);
        let (_, mut datagram) = Request::new(&server).build();
        let last = datagram.len() - 1;
        datagram[last] ^= 1;
        let mut out = Vec::new();
        let outcome = ice.handle_stun(t0, addr("192.0.2.7:1"), &datagram, &mut out);
        assert_eq!(outcome, StunOutcome::Ignored("bad FINGERPRINT"));
        assert!(out.is_empty());
    }

    #[test]
    fn tampered_body_fails_integrity() {
        let t0 = Instant::now();
        let server = creds("serverufrag", "serverpassword");
        let mut ice = IceLiteServer::new(server.clone(), t0);
        let mut request = Request::new(&server);
        request.fingerprint = false;
        let (tid, mut datagram) = request.build();
        // Change the PRIORITY value after signing, then fix up FINGERPRINT.
        let at = 20 + 4 + nearest4("serverufrag:clientufrag".len()) + 4;
        datagram[at] ^= 0x40;
        let mut m = Message::new();
        m.unmarshal_binary(&datagram).expect("decodes");
        FINGERPRINT.add_to(&mut m).expect("fingerprint");
        let mut out = Vec::new();
        let outcome = ice.handle_stun(t0, addr("192.0.2.7:1"), &m.raw, &mut out);
        assert_eq!(outcome, StunOutcome::Respond);
        assert_eq!(error_code(&out, tid), 401);
    }

    fn nearest4(n: usize) -> usize {
        n.next_multiple_of(4)
    }

    #[test]
    fn ice_controlled_client_gets_authenticated_487() {
        let t0 = Instant::now();
        let server = creds("serverufrag", "serverpassword");
        let mut ice = IceLiteServer::new(server.clone(), t0);
        let mut request = Request::new(&server);
        request.role = Some(ATTR_ICE_CONTROLLED);
        let (tid, outcome, out) = check(&mut ice, t0, addr("192.0.2.7:1"), &request);
        assert_eq!(outcome, StunOutcome::Respond);
        assert_eq!(error_code(&out, tid), 487);
        MessageIntegrity::check(&mut decode(&out), b"serverpassword", &CRYPTO)
            .expect("487 is signed");
        assert_eq!(ice.state(), IceState::New);
    }

    #[test]
    fn indications_responses_and_other_methods() {
        let t0 = Instant::now();
        let server = creds("serverufrag", "serverpassword");
        let mut ice = IceLiteServer::new(server.clone(), t0);
        let from = addr("192.0.2.7:1");
        let (_, mut datagram) = Request::new(&server).build();
        let mut out = Vec::new();
        let mut with_type = |typ: MessageType, out: &mut Vec<u8>| {
            datagram[..2].copy_from_slice(&typ.value().to_be_bytes());
            ice.handle_stun(t0, from, &datagram, out)
        };
        let indication = MessageType::new(METHOD_BINDING, CLASS_INDICATION);
        assert_eq!(
            with_type(indication, &mut out),
            StunOutcome::Ignored("stun indication")
        );
        assert_eq!(
            with_type(BINDING_SUCCESS, &mut out),
            StunOutcome::Ignored("stun response")
        );
        let allocate = MessageType::new(rtc_stun::message::METHOD_ALLOCATE, CLASS_REQUEST);
        assert_eq!(with_type(allocate, &mut out), StunOutcome::Respond);
        let m = decode(&out);
        assert_eq!(m.typ.method, rtc_stun::message::METHOD_ALLOCATE);
        assert_eq!(m.typ.class, CLASS_ERROR_RESPONSE);
        assert!(!ice.is_valid_tuple(from));
    }

    #[test]
    fn new_connected_completed() {
        let t0 = Instant::now();
        let server = creds("serverufrag", "serverpassword");
        let mut ice = IceLiteServer::new(server.clone(), t0);
        assert_eq!(ice.state(), IceState::New);
        assert_eq!(ice.poll_timeout(), None);
        let a = addr("192.0.2.7:50000");
        let b = addr("198.51.100.3:60000");

        check(&mut ice, t0, a, &Request::new(&server));
        assert_eq!(ice.state(), IceState::Connected);
        assert_eq!(ice.selected_tuple(), Some(a));
        assert_eq!(
            events(&mut ice),
            [
                IceEvent::SelectedTupleChanged(a),
                IceEvent::StateChanged(IceState::Connected)
            ]
        );
        assert_eq!(ice.state_since(), t0);

        // Another tuple without nomination is valid but not selected.
        check(&mut ice, t0 + SEC, b, &Request::new(&server));
        assert_eq!(ice.state(), IceState::Connected);
        assert_eq!(ice.selected_tuple(), Some(a));
        assert!(ice.is_valid_tuple(b));
        assert_eq!(events(&mut ice), []);

        // The client nominates b.
        check(&mut ice, t0 + 2 * SEC, b, &Request::new(&server).nominate());
        assert_eq!(ice.state(), IceState::Completed);
        assert_eq!(ice.selected_tuple(), Some(b));
        assert_eq!(
            events(&mut ice),
            [
                IceEvent::SelectedTupleChanged(b),
                IceEvent::StateChanged(IceState::Completed)
            ]
        );
        assert_eq!(ice.state_since(), t0 + 2 * SEC);
        assert!(ice.is_valid_tuple(a));

        // A non-nominating check from a while Completed changes nothing.
        check(&mut ice, t0 + 3 * SEC, a, &Request::new(&server));
        assert_eq!(ice.selected_tuple(), Some(b));
        assert_eq!(ice.state(), IceState::Completed);
        assert_eq!(events(&mut ice), []);
    }

    #[test]
    fn nomination_from_new_goes_straight_to_completed() {
        let t0 = Instant::now();
        let server = creds("serverufrag", "serverpassword");
        let mut ice = IceLiteServer::new(server.clone(), t0);
        let a = addr("192.0.2.7:50000");
        check(&mut ice, t0, a, &Request::new(&server).nominate());
        assert_eq!(ice.state(), IceState::Completed);
        assert_eq!(
            events(&mut ice),
            [
                IceEvent::SelectedTupleChanged(a),
                IceEvent::StateChanged(IceState::Completed)
            ]
        );
    }

    #[test]
    fn address_change_switches_selected_tuple() {
        let t0 = Instant::now();
        let server = creds("serverufrag", "serverpassword");
        let mut ice = IceLiteServer::new(server.clone(), t0);
        let wifi = addr("192.0.2.7:50000");
        let cellular = addr("203.0.113.50:41000");
        check(&mut ice, t0, wifi, &Request::new(&server).nominate());
        events(&mut ice);

        let (tid, outcome, out) = check(
            &mut ice,
            t0 + SEC,
            cellular,
            &Request::new(&server).nominate(),
        );
        assert_eq!(outcome, StunOutcome::Respond);
        assert_success(&out, tid, &server.pwd, cellular);
        assert_eq!(ice.selected_tuple(), Some(cellular));
        assert_eq!(ice.state(), IceState::Completed);
        assert_eq!(events(&mut ice), [IceEvent::SelectedTupleChanged(cellular)]);
    }

    #[test]
    fn consent_expiry_disconnects_and_a_new_check_reconnects() {
        let t0 = Instant::now();
        let server = creds("serverufrag", "serverpassword");
        let mut ice = IceLiteServer::new(server.clone(), t0);
        let a = addr("192.0.2.7:50000");
        let b = addr("198.51.100.3:60000");
        check(&mut ice, t0, a, &Request::new(&server).nominate());
        events(&mut ice);
        assert_eq!(ice.poll_timeout(), Some(t0 + DEFAULT_CONSENT_TIMEOUT));

        // Checks every 5 s keep consent; b checks once and then goes quiet.
        check(&mut ice, t0 + SEC, b, &Request::new(&server));
        let mut now = t0;
        for _ in 0..10 {
            now += 5 * SEC;
            check(&mut ice, now, a, &Request::new(&server).nominate());
            ice.handle_timeout(now);
        }
        assert_eq!(ice.state(), IceState::Completed);
        assert!(ice.is_valid_tuple(a));
        // b's consent lapsed on its own without affecting the selected tuple.
        assert!(!ice.is_valid_tuple(b));
        assert_eq!(events(&mut ice), [IceEvent::TupleRemoved(b)]);

        // Silence: nothing happens just before the deadline, everything at it.
        let deadline = now + DEFAULT_CONSENT_TIMEOUT;
        assert_eq!(ice.poll_timeout(), Some(deadline));
        ice.handle_timeout(deadline - Duration::from_millis(1));
        assert_eq!(ice.state(), IceState::Completed);
        ice.handle_timeout(deadline);
        assert_eq!(ice.state(), IceState::Disconnected);
        assert_eq!(ice.state_since(), deadline);
        assert_eq!(ice.selected_tuple(), None);
        assert!(!ice.is_valid_tuple(a));
        assert_eq!(ice.poll_timeout(), None);
        assert_eq!(
            events(&mut ice),
            [
                IceEvent::TupleRemoved(a),
                IceEvent::StateChanged(IceState::Disconnected)
            ]
        );

        // The client comes back (from a new address).
        check(&mut ice, deadline + SEC, b, &Request::new(&server));
        assert_eq!(ice.state(), IceState::Connected);
        assert_eq!(ice.selected_tuple(), Some(b));
        assert_eq!(
            events(&mut ice),
            [
                IceEvent::SelectedTupleChanged(b),
                IceEvent::StateChanged(IceState::Connected)
            ]
        );
    }

    #[test]
    fn consent_timeout_is_configurable() {
        let t0 = Instant::now();
        let server = creds("serverufrag", "serverpassword");
        let mut ice = IceLiteServer::new(server.clone(), t0);
        ice.set_consent_timeout(5 * SEC);
        check(&mut ice, t0, addr("192.0.2.7:1"), &Request::new(&server));
        assert_eq!(ice.poll_timeout(), Some(t0 + 5 * SEC));
        ice.handle_timeout(t0 + 5 * SEC);
        assert_eq!(ice.state(), IceState::Disconnected);
    }

    #[test]
    fn restart_switches_credentials_and_keeps_tuples() {
        let t0 = Instant::now();
        let old = creds("oldufrag", "oldpassword");
        let new = creds("newufrag", "newpassword");
        let mut ice = IceLiteServer::new(old.clone(), t0);
        let a = addr("192.0.2.7:50000");
        check(&mut ice, t0, a, &Request::new(&old).nominate());
        events(&mut ice);

        ice.restart(new.clone());
        assert_eq!(ice.credentials(), &new);
        assert_eq!(ice.state(), IceState::Completed);
        assert_eq!(ice.selected_tuple(), Some(a));
        assert!(ice.is_valid_tuple(a));

        // Until the client re-checks with the new ufrag the old credentials still work,
        // answered with the old password.
        let (tid, outcome, out) = check(&mut ice, t0 + SEC, a, &Request::new(&old).nominate());
        assert_eq!(outcome, StunOutcome::Respond);
        assert_success(&out, tid, &old.pwd, a);

        // A request naming the new ufrag but signed with the old password is refused.
        let mut mixed = Request::new(&new);
        mixed.pwd = Some(old.pwd.clone());
        let (tid, _, out) = check(&mut ice, t0 + SEC, a, &mixed);
        assert_eq!(error_code(&out, tid), 401);

        // The client applies the restart.
        let (tid, outcome, out) = check(&mut ice, t0 + 2 * SEC, a, &Request::new(&new).nominate());
        assert_eq!(outcome, StunOutcome::Respond);
        assert_success(&out, tid, &new.pwd, a);
        assert_eq!(ice.selected_tuple(), Some(a));
        assert_eq!(ice.state(), IceState::Completed);
        assert_eq!(events(&mut ice), []);

        // From now on the old credentials are rejected.
        let (tid, outcome, out) = check(&mut ice, t0 + 3 * SEC, a, &Request::new(&old));
        assert_eq!(outcome, StunOutcome::Respond);
        assert_eq!(error_code(&out, tid), 401);
        assert!(ice.is_valid_tuple(a));
    }

    #[test]
    fn tuples_are_bounded_and_keep_the_selected_one() {
        let t0 = Instant::now();
        let server = creds("serverufrag", "serverpassword");
        let mut ice = IceLiteServer::new(server.clone(), t0);
        let selected = addr("192.0.2.1:1000");
        check(&mut ice, t0, selected, &Request::new(&server).nominate());
        events(&mut ice);
        let others: Vec<SocketAddr> = (0..MAX_TUPLES as u16 + 3)
            .map(|i| SocketAddr::new("198.51.100.1".parse().expect("ip"), 2000 + i))
            .collect();
        for (i, &other) in others.iter().enumerate() {
            let now = t0 + SEC * u32::try_from(i + 1).expect("small");
            check(&mut ice, now, other, &Request::new(&server));
        }
        assert_eq!(ice.tuples.len(), MAX_TUPLES);
        assert_eq!(ice.selected_tuple(), Some(selected));
        assert!(ice.is_valid_tuple(selected));
        // The most recent ones survive, the oldest were evicted, and each eviction is
        // reported.
        assert!(ice.is_valid_tuple(*others.last().expect("non-empty")));
        assert!(!ice.is_valid_tuple(others[0]));
        assert_eq!(
            events(&mut ice),
            others[..4]
                .iter()
                .map(|&a| IceEvent::TupleRemoved(a))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn close_ignores_everything() {
        let t0 = Instant::now();
        let server = creds("serverufrag", "serverpassword");
        let mut ice = IceLiteServer::new(server.clone(), t0);
        let a = addr("192.0.2.7:50000");
        check(&mut ice, t0, a, &Request::new(&server));
        events(&mut ice);
        ice.close();
        assert_eq!(ice.state(), IceState::Closed);
        assert!(!ice.is_valid_tuple(a));
        assert_eq!(ice.poll_timeout(), None);
        assert_eq!(
            events(&mut ice),
            [
                IceEvent::TupleRemoved(a),
                IceEvent::StateChanged(IceState::Closed)
            ]
        );
        let (_, outcome, out) = check(&mut ice, t0 + SEC, a, &Request::new(&server));
        assert_eq!(outcome, StunOutcome::Ignored("ice closed"));
        assert!(out.is_empty());
        assert_eq!(ice.state(), IceState::Closed);
    }

    #[test]
    fn local_ufrag_of_binding_requests() {
        let server = creds("serverufrag", "serverpassword");
        let (_, datagram) = Request::new(&server).build();
        assert_eq!(stun_local_ufrag(&datagram), Some("serverufrag"));

        // USERNAME after other attributes is found too.
        let mut m = Message::new();
        m.build(&[Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)])
            .expect("header");
        m.add(ATTR_PRIORITY, &[1, 2, 3, 4]);
        m.add(AttrType(0xC057), &[0, 1, 0, 9, 7]);
        m.add(ATTR_USERNAME, b"abc:def");
        assert_eq!(stun_local_ufrag(&m.raw), Some("abc"));

        let mut no_user = Request::new(&server);
        no_user.username = None;
        assert_eq!(stun_local_ufrag(&no_user.build().1), None);
        let mut no_colon = Request::new(&server);
        no_colon.username = Some("serverufrag".to_owned());
        assert_eq!(stun_local_ufrag(&no_colon.build().1), None);
        let mut empty_local = Request::new(&server);
        empty_local.username = Some(":client".to_owned());
        assert_eq!(stun_local_ufrag(&empty_local.build().1), None);

        // Not a Binding request.
        let mut response = datagram.clone();
        response[..2].copy_from_slice(&BINDING_SUCCESS.value().to_be_bytes());
        assert_eq!(stun_local_ufrag(&response), None);
        // Truncated, garbage, an attribute running past the end.
        assert_eq!(stun_local_ufrag(&datagram[..datagram.len() - 4]), None);
        assert_eq!(stun_local_ufrag(&[]), None);
        assert_eq!(stun_local_ufrag(&[0x80; 40]), None);
        let mut overlong = datagram.clone();
        overlong[22..24].copy_from_slice(&0xFFF0u16.to_be_bytes());
        assert_eq!(stun_local_ufrag(&overlong), None);
    }

    /// xorshift64*: a tiny deterministic generator for the fuzz loop.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).expect("below a usize")
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let t0 = Instant::now();
        let server = creds("serverufrag", "serverpassword");
        let mut ice = IceLiteServer::new(server.clone(), t0);
        let from = addr("192.0.2.7:50000");
        let (_, valid) = Request::new(&server).nominate().build();
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut out = Vec::new();
        let mut responses = 0;
        for round in 0..20_000 {
            let mut d: Vec<u8> = match round % 3 {
                // Pure noise.
                0 => (0..rng.below(120)).map(|_| rng.next() as u8).collect(),
                // A valid request with a few bytes flipped.
                1 => {
                    let mut d = valid.clone();
                    for _ in 0..1 + rng.below(4) {
                        let i = rng.below(d.len());
                        d[i] ^= 1 << rng.below(8);
                    }
                    d
                }
                // A plausible header with a random attribute soup.
                _ => {
                    let body_len = 4 * rng.below(30);
                    let mut d = valid[..20].to_vec();
                    d[2..4].copy_from_slice(&(body_len as u16).to_be_bytes());
                    d.extend((0..body_len).map(|_| rng.next() as u8));
                    d
                }
            };
            if round % 7 == 0 {
                d.truncate(rng.below(d.len() + 1));
            }
            let _ = crate::demux::classify(&d);
            let _ = stun_local_ufrag(&d);
            if ice.handle_stun(t0, from, &d, &mut out) == StunOutcome::Respond {
                responses += 1;
                assert_eq!(crate::demux::classify(&out), crate::demux::PacketKind::Stun);
            } else {
                assert!(out.is_empty());
            }
        }
        // The mutated requests exercise the error paths, not only the header check.
        assert!(responses > 100, "{responses}");
    }

    #[test]
    fn media_from_another_valid_tuple_moves_the_selection() {
        let t0 = Instant::now();
        let server = creds("serverufrag", "serverpassword");
        let mut ice = IceLiteServer::new(server.clone(), t0);
        let old = addr("192.0.2.7:50000");
        let rebound = addr("192.0.2.7:50999");
        check(&mut ice, t0, old, &Request::new(&server).nominate());
        // A consent check through the client's new NAT binding, without nomination.
        check(&mut ice, t0 + SEC, rebound, &Request::new(&server));
        events(&mut ice);
        assert_eq!(ice.selected_tuple(), Some(old));
        assert!(
            !ice.on_media_from(addr("198.51.100.1:1")),
            "a tuple that passed no check is never selected"
        );
        assert!(!ice.on_media_from(old), "already selected");
        assert!(ice.on_media_from(rebound));
        assert_eq!(ice.selected_tuple(), Some(rebound));
        assert_eq!(events(&mut ice), [IceEvent::SelectedTupleChanged(rebound)]);
    }

    #[test]
    fn removed_tuple_hands_the_selection_on_or_disconnects() {
        let t0 = Instant::now();
        let server = creds("serverufrag", "serverpassword");
        let mut ice = IceLiteServer::new(server.clone(), t0);
        let tcp = addr("192.0.2.7:50000");
        let udp = addr("192.0.2.7:50001");
        check(&mut ice, t0, udp, &Request::new(&server));
        check(&mut ice, t0 + SEC, tcp, &Request::new(&server).nominate());
        events(&mut ice);
        assert_eq!(ice.selected_tuple(), Some(tcp));
        ice.remove_tuple(addr("198.51.100.1:1"), t0 + SEC);
        assert!(
            events(&mut ice).is_empty(),
            "an unknown tuple changes nothing"
        );
        ice.remove_tuple(tcp, t0 + 2 * SEC);
        assert_eq!(ice.selected_tuple(), Some(udp));
        assert_eq!(
            events(&mut ice),
            [
                IceEvent::TupleRemoved(tcp),
                IceEvent::SelectedTupleChanged(udp)
            ]
        );
        ice.remove_tuple(udp, t0 + 3 * SEC);
        assert_eq!(ice.selected_tuple(), None);
        assert_eq!(ice.state(), IceState::Disconnected);
        assert_eq!(
            events(&mut ice),
            [
                IceEvent::TupleRemoved(udp),
                IceEvent::StateChanged(IceState::Disconnected)
            ]
        );
    }
}
