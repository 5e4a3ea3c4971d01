//! ICE connectivity checks as a browser sends them to an ICE-lite server (RFC 8445 §7.2.4),
//! and the check of the server's answer.
//!
//! ```
//! use ferrosoup_testkit::packets::stun::{BindingRequest, check_binding_response};
//!
//! let request = BindingRequest::new("srvufrag", "cliufrag", "serverpassword").nominate();
//! let datagram = request.build();
//! assert_eq!(ferrosoup_rtc::ice::stun_local_ufrag(&datagram), Some("srvufrag"));
//! // ... the server answers `answer`; then:
//! // let mapped = check_binding_response(&answer, request.transaction_id, "serverpassword")?;
//! ```

use std::net::{IpAddr, SocketAddr};

use rtc_stun::attributes::{
    ATTR_ICE_CONTROLLED, ATTR_ICE_CONTROLLING, ATTR_MESSAGE_INTEGRITY, ATTR_PRIORITY,
    ATTR_USE_CANDIDATE, ATTR_USERNAME, AttrType, RawAttribute,
};
use rtc_stun::crypto::providers::RingCrypto;
use rtc_stun::error_code::ErrorCodeAttribute;
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{
    BINDING_ERROR, BINDING_REQUEST, BINDING_SUCCESS, Getter, Message, Setter, TRANSACTION_ID_SIZE,
};
use rtc_stun::textattrs::TextAttribute;
use rtc_stun::xoraddr::XorMappedAddress;

/// rtc-stun's transaction id, re-exported so users need no direct rtc-stun dependency.
pub use rtc_stun::message::TransactionId;

/// The HMAC-SHA1 provider for MESSAGE-INTEGRITY.
static CRYPTO: RingCrypto = RingCrypto;

/// PRIORITY of a host candidate as Chrome computes it for UDP (type preference 126).
pub const HOST_PRIORITY: u32 = 2_130_706_431;

/// The ICE role a request claims, with its tie-breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceRole {
    /// ICE-CONTROLLING: what a browser facing an ICE-lite server always is.
    Controlling(u64),
    /// ICE-CONTROLLED: a role conflict for an ICE-lite server (answered with 487).
    Controlled(u64),
}

/// A STUN Binding request, field by field, so a test can also spoil any of them.
/// [`BindingRequest::new`] is what a browser sends; [`build`](Self::build) encodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingRequest {
    /// The transaction id (random from [`BindingRequest::new`]).
    pub transaction_id: TransactionId,
    /// USERNAME, `"<server ufrag>:<client ufrag>"`; `None` leaves it out.
    pub username: Option<String>,
    /// The password keying MESSAGE-INTEGRITY (the server's); `None` leaves it out.
    pub password: Option<String>,
    /// PRIORITY; `None` leaves it out.
    pub priority: Option<u32>,
    /// ICE-CONTROLLING / ICE-CONTROLLED; `None` leaves both out.
    pub role: Option<IceRole>,
    /// Whether USE-CANDIDATE (nomination) is present.
    pub use_candidate: bool,
    /// Whether FINGERPRINT is present.
    pub fingerprint: bool,
}

impl BindingRequest {
    /// A browser's check: USERNAME `server_ufrag:client_ufrag`, PRIORITY of a host
    /// candidate, ICE-CONTROLLING, MESSAGE-INTEGRITY keyed with `server_pwd`, FINGERPRINT;
    /// no USE-CANDIDATE (a consent check). Random transaction id and tie-breaker.
    pub fn new(server_ufrag: &str, client_ufrag: &str, server_pwd: &str) -> Self {
        let transaction_id = TransactionId::new();
        let mut tie_breaker = [0u8; 8];
        tie_breaker.copy_from_slice(&transaction_id.0[..8]);
        Self {
            transaction_id,
            username: Some(format!("{server_ufrag}:{client_ufrag}")),
            password: Some(server_pwd.to_owned()),
            priority: Some(HOST_PRIORITY),
            role: Some(IceRole::Controlling(u64::from_be_bytes(tie_breaker))),
            use_candidate: false,
            fingerprint: true,
        }
    }

    /// Adds USE-CANDIDATE: the check nominates its pair.
    pub fn nominate(mut self) -> Self {
        self.use_candidate = true;
        self
    }

    /// Sets the tie-breaker, keeping the role.
    pub fn with_tie_breaker(mut self, tie_breaker: u64) -> Self {
        self.role = match self.role {
            Some(IceRole::Controlled(_)) => Some(IceRole::Controlled(tie_breaker)),
            _ => Some(IceRole::Controlling(tie_breaker)),
        };
        self
    }

    /// Sets the transaction id (e.g. from a seeded generator, for byte-identical runs).
    pub fn with_transaction_id(mut self, id: [u8; TRANSACTION_ID_SIZE]) -> Self {
        self.transaction_id = TransactionId(id);
        self
    }

    /// Encodes the request; attributes in the order browsers use, MESSAGE-INTEGRITY and
    /// FINGERPRINT last. Fails only on a USERNAME longer than STUN allows (513 bytes).
    pub fn try_build(&self) -> Result<Vec<u8>, StunBuildError> {
        let mut m = Message::new();
        m.build(&[Box::new(self.transaction_id), Box::new(BINDING_REQUEST)])
            .map_err(encode("header"))?;
        if let Some(username) = &self.username {
            TextAttribute::new(ATTR_USERNAME, username.clone())
                .add_to(&mut m)
                .map_err(encode("USERNAME"))?;
        }
        let raw = |typ: AttrType, value: &[u8]| RawAttribute {
            typ,
            length: 0,
            value: value.to_vec(),
        };
        if let Some(priority) = self.priority {
            raw(ATTR_PRIORITY, &priority.to_be_bytes())
                .add_to(&mut m)
                .map_err(encode("PRIORITY"))?;
        }
        match self.role {
            Some(IceRole::Controlling(tie)) => raw(ATTR_ICE_CONTROLLING, &tie.to_be_bytes())
                .add_to(&mut m)
                .map_err(encode("ICE-CONTROLLING"))?,
            Some(IceRole::Controlled(tie)) => raw(ATTR_ICE_CONTROLLED, &tie.to_be_bytes())
                .add_to(&mut m)
                .map_err(encode("ICE-CONTROLLED"))?,
            None => {}
        }
        if self.use_candidate {
            raw(ATTR_USE_CANDIDATE, &[])
                .add_to(&mut m)
                .map_err(encode("USE-CANDIDATE"))?;
        }
        if let Some(password) = &self.password {
            MessageIntegrity::new_short_term_integrity_with_provider(password.clone(), &CRYPTO)
                .add_to(&mut m)
                .map_err(encode("MESSAGE-INTEGRITY"))?;
        }
        if self.fingerprint {
            FINGERPRINT.add_to(&mut m).map_err(encode("FINGERPRINT"))?;
        }
        Ok(m.raw)
    }

    /// [`try_build`](Self::try_build) for requests known to encode.
    ///
    /// # Panics
    ///
    /// On a USERNAME longer than 513 bytes.
    pub fn build(&self) -> Vec<u8> {
        self.try_build()
            .unwrap_or_else(|e| panic!("the Binding request does not encode: {e}"))
    }
}

/// Maps an rtc-stun error on attribute `what` to a [`StunBuildError`].
fn encode<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> StunBuildError {
    move |e| StunBuildError(what, e.to_string())
}

/// A Binding request that cannot be encoded: which attribute, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("STUN {0}: {1}")]
pub struct StunBuildError(&'static str, String);

/// What a browser sends to an ICE-lite server: USERNAME `server_ufrag:client_ufrag`,
/// PRIORITY, ICE-CONTROLLING with `tie_breaker`, USE-CANDIDATE when `use_candidate`,
/// MESSAGE-INTEGRITY with `server_pwd`, FINGERPRINT. Returns the (random) transaction id
/// and the datagram.
///
/// # Panics
///
/// On a ufrag pair longer than 513 bytes.
pub fn stun_binding_request(
    server_ufrag: &str,
    client_ufrag: &str,
    server_pwd: &str,
    use_candidate: bool,
    tie_breaker: u64,
) -> (TransactionId, Vec<u8>) {
    let mut request =
        BindingRequest::new(server_ufrag, client_ufrag, server_pwd).with_tie_breaker(tie_breaker);
    request.use_candidate = use_candidate;
    (request.transaction_id, request.build())
}

/// Why a datagram is not the expected Binding success response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunResponseError {
    /// Not a decodable STUN message.
    #[error("not a STUN message: {0}")]
    Malformed(String),
    /// The FINGERPRINT is missing or wrong.
    #[error("bad FINGERPRINT")]
    BadFingerprint,
    /// The transaction id is not the request's.
    #[error("answer to another transaction")]
    OtherTransaction,
    /// A Binding error response with this code (e.g. 401 for unknown credentials, 487 for
    /// a role conflict).
    #[error("error response {0}")]
    ErrorResponse(u16),
    /// Neither a Binding success nor a Binding error response.
    #[error("not a Binding response")]
    NotBindingResponse,
    /// MESSAGE-INTEGRITY missing, or not verifying with the password.
    #[error("MESSAGE-INTEGRITY does not verify")]
    BadIntegrity,
    /// No (valid) XOR-MAPPED-ADDRESS.
    #[error("no XOR-MAPPED-ADDRESS")]
    NoMappedAddress,
}

/// A verified Binding success response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingSuccess {
    /// The transaction it answers.
    pub transaction_id: TransactionId,
    /// The XOR-MAPPED-ADDRESS: our address as the server saw it.
    pub mapped: SocketAddr,
}

/// The transaction id of a datagram that has a STUN header, without decoding the rest.
pub fn stun_transaction_id(datagram: &[u8]) -> Option<TransactionId> {
    let header = datagram.first_chunk::<20>()?;
    if header[0] > 3 || header[4..8] != [0x21, 0x12, 0xA4, 0x42] {
        return None;
    }
    let mut id = TransactionId::default();
    id.0.copy_from_slice(&header[8..]);
    Some(id)
}

/// Checks a Binding response for any transaction: FINGERPRINT, then a success response
/// whose MESSAGE-INTEGRITY verifies with `server_pwd` and that carries
/// XOR-MAPPED-ADDRESS. An error response comes back as
/// [`StunResponseError::ErrorResponse`] (its integrity, when present, is not checked).
pub fn verify_binding_response(
    datagram: &[u8],
    server_pwd: &str,
) -> Result<BindingSuccess, StunResponseError> {
    let mut m = Message::new();
    m.unmarshal_binary(datagram)
        .map_err(|e| StunResponseError::Malformed(e.to_string()))?;
    FINGERPRINT
        .check(&m)
        .map_err(|_| StunResponseError::BadFingerprint)?;
    if m.typ == BINDING_ERROR {
        let mut code = ErrorCodeAttribute::default();
        code.get_from(&m)
            .map_err(|e| StunResponseError::Malformed(e.to_string()))?;
        return Err(StunResponseError::ErrorResponse(code.code.0));
    }
    if m.typ != BINDING_SUCCESS {
        return Err(StunResponseError::NotBindingResponse);
    }
    if !m.contains(ATTR_MESSAGE_INTEGRITY)
        || MessageIntegrity::check(&mut m, server_pwd.as_bytes(), &CRYPTO).is_err()
    {
        return Err(StunResponseError::BadIntegrity);
    }
    let mut mapped = XorMappedAddress::default();
    mapped
        .get_from(&m)
        .map_err(|_| StunResponseError::NoMappedAddress)?;
    let ip = match mapped.ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    Ok(BindingSuccess {
        transaction_id: m.transaction_id,
        mapped: SocketAddr::new(ip, mapped.port),
    })
}

/// Checks the server's answer to the request `transaction_id`: same checks as
/// [`verify_binding_response`], plus the transaction id. Returns the XOR-MAPPED-ADDRESS.
pub fn check_binding_response(
    datagram: &[u8],
    transaction_id: TransactionId,
    server_pwd: &str,
) -> Result<SocketAddr, StunResponseError> {
    if stun_transaction_id(datagram).is_some_and(|id| id != transaction_id) {
        return Err(StunResponseError::OtherTransaction);
    }
    verify_binding_response(datagram, server_pwd).map(|success| success.mapped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrosoup_rtc::ice::{IceCredentials, IceLiteServer, IceState, StunOutcome};
    use std::time::Instant;

    fn server() -> (IceLiteServer, IceCredentials) {
        let credentials = IceCredentials {
            ufrag: "serverufrag".to_owned(),
            pwd: "serverpassword0123456789".to_owned(),
        };
        (
            IceLiteServer::new(credentials.clone(), Instant::now()),
            credentials,
        )
    }

    #[test]
    fn carries_what_an_ice_lite_server_checks() {
        let (tid, raw) = stun_binding_request("srv", "cli", "serverpassword1234567890", true, 42);
        let mut m = Message::new();
        m.unmarshal_binary(&raw).expect("decodes");
        assert_eq!(m.typ, BINDING_REQUEST);
        assert_eq!(m.transaction_id, tid);
        FINGERPRINT.check(&m).expect("fingerprint");
        MessageIntegrity::check(&mut m, b"serverpassword1234567890", &CRYPTO)
            .expect("integrity with the server password");
        let user = TextAttribute::get_from_as(&m, ATTR_USERNAME).expect("username");
        assert_eq!(user.text, "srv:cli");
        assert!(m.contains(ATTR_USE_CANDIDATE));
        assert!(m.contains(ATTR_PRIORITY));
        let controlling = m.get(ATTR_ICE_CONTROLLING).expect("ICE-CONTROLLING");
        assert_eq!(controlling, 42u64.to_be_bytes());
        assert_eq!(ferrosoup_rtc::ice::stun_local_ufrag(&raw), Some("srv"));
        assert_eq!(stun_transaction_id(&raw), Some(tid));

        let (_, consent) = stun_binding_request("srv", "cli", "pw", false, 42);
        let mut m = Message::new();
        m.unmarshal_binary(&consent).expect("decodes");
        assert!(!m.contains(ATTR_USE_CANDIDATE));
    }

    #[test]
    fn the_ice_lite_server_accepts_it_and_the_answer_checks() {
        let (mut ice, credentials) = server();
        let from: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
        let request = BindingRequest::new(&credentials.ufrag, "client", &credentials.pwd)
            .nominate()
            .with_transaction_id([7; 12]);
        let mut out = Vec::new();
        let outcome = ice.handle_stun(Instant::now(), from, &request.build(), &mut out);
        assert_eq!(outcome, StunOutcome::Respond);
        assert_eq!(ice.state(), IceState::Completed);
        assert_eq!(
            check_binding_response(&out, request.transaction_id, &credentials.pwd),
            Ok(from)
        );
        assert_eq!(
            verify_binding_response(&out, &credentials.pwd),
            Ok(BindingSuccess {
                transaction_id: TransactionId([7; 12]),
                mapped: from
            })
        );
        assert_eq!(
            check_binding_response(&out, TransactionId([8; 12]), &credentials.pwd),
            Err(StunResponseError::OtherTransaction)
        );
        assert_eq!(
            check_binding_response(&out, request.transaction_id, "another password"),
            Err(StunResponseError::BadIntegrity)
        );
        let mut tampered = out.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            check_binding_response(&tampered, request.transaction_id, &credentials.pwd),
            Err(StunResponseError::BadFingerprint)
        );
        assert!(matches!(
            check_binding_response(&out[..10], request.transaction_id, &credentials.pwd),
            Err(StunResponseError::Malformed(_))
        ));
        // The request itself is not a response.
        assert_eq!(
            verify_binding_response(&request.build(), &credentials.pwd),
            Err(StunResponseError::NotBindingResponse)
        );
    }

    #[test]
    fn spoiled_requests_get_the_errors_the_server_gives() {
        let (mut ice, credentials) = server();
        let from: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
        let good = BindingRequest::new(&credentials.ufrag, "client", &credentials.pwd);
        type Spoiler = fn(&mut BindingRequest);
        let cases: [(Spoiler, u16); 4] = [
            (|r| r.password = Some("wrong".to_owned()), 401),
            (|r| r.username = Some("nobody:client".to_owned()), 401),
            (|r| r.priority = None, 400),
            (|r| r.role = Some(IceRole::Controlled(1)), 487),
        ];
        for (spoil, code) in cases {
            let mut request = good.clone();
            spoil(&mut request);
            let mut out = Vec::new();
            ice.handle_stun(Instant::now(), from, &request.build(), &mut out);
            assert_eq!(
                check_binding_response(&out, request.transaction_id, &credentials.pwd),
                Err(StunResponseError::ErrorResponse(code))
            );
        }
        let mut overlong = good.clone();
        overlong.username = Some("x".repeat(600));
        assert!(overlong.try_build().is_err());
    }
}
