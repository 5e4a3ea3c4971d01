//! WebRTC transport parameters in mediasoup v3's JSON shapes: ICE, DTLS and SCTP.
//!
//! The server is ICE-lite with host candidates; `createTransport` answers with
//! [`IceParameters`], [`IceCandidate`]s and the server's [`DtlsParameters`], and
//! `connectTransport` brings the client's [`DtlsParameters`].

use serde::{Deserialize, Serialize};

/// Server-side ICE credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceParameters {
    /// ICE username fragment.
    pub username_fragment: String,
    /// ICE password.
    pub password: String,
    /// Whether the server is ICE-lite (always `true` for ferrosoup).
    #[serde(default)]
    pub ice_lite: bool,
}

/// Transport protocol of an ICE candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportProtocol {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

/// ICE candidate type (the server only gathers host candidates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IceCandidateType {
    /// A host candidate.
    Host,
}

/// TCP candidate type (the server only listens, so passive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IceCandidateTcpType {
    /// A passive TCP candidate.
    Passive,
}

/// A server ICE candidate.
///
/// On the wire the address appears twice, as `address` and as the deprecated `ip`,
/// as mediasoup sends it; on input either one is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "IceCandidateWire", into = "IceCandidateWire")]
pub struct IceCandidate {
    /// Candidate foundation.
    pub foundation: String,
    /// Candidate priority.
    pub priority: u32,
    /// IP address (or hostname) to send to.
    pub address: String,
    /// Transport protocol.
    pub protocol: TransportProtocol,
    /// Port.
    pub port: u16,
    /// Candidate type.
    pub r#type: IceCandidateType,
    /// TCP type, for TCP candidates.
    pub tcp_type: Option<IceCandidateTcpType>,
}

/// The JSON form of [`IceCandidate`], with both `address` and `ip`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IceCandidateWire {
    foundation: String,
    priority: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    protocol: TransportProtocol,
    port: u16,
    #[serde(rename = "type")]
    r#type: IceCandidateType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tcp_type: Option<IceCandidateTcpType>,
}

impl TryFrom<IceCandidateWire> for IceCandidate {
    type Error = &'static str;

    fn try_from(wire: IceCandidateWire) -> Result<Self, Self::Error> {
        let address = wire.address.or(wire.ip).ok_or("missing field `address`")?;
        Ok(Self {
            foundation: wire.foundation,
            priority: wire.priority,
            address,
            protocol: wire.protocol,
            port: wire.port,
            r#type: wire.r#type,
            tcp_type: wire.tcp_type,
        })
    }
}

impl From<IceCandidate> for IceCandidateWire {
    fn from(c: IceCandidate) -> Self {
        Self {
            foundation: c.foundation,
            priority: c.priority,
            ip: Some(c.address.clone()),
            address: Some(c.address),
            protocol: c.protocol,
            port: c.port,
            r#type: c.r#type,
            tcp_type: c.tcp_type,
        }
    }
}

/// DTLS role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DtlsRole {
    /// Decided by the other side (the server answers `auto`).
    Auto,
    /// DTLS client.
    Client,
    /// DTLS server.
    Server,
}

/// Hash function of a certificate fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FingerprintAlgorithm {
    /// `sha-1`.
    #[serde(rename = "sha-1", alias = "SHA-1")]
    Sha1,
    /// `sha-224`.
    #[serde(rename = "sha-224", alias = "SHA-224")]
    Sha224,
    /// `sha-256`.
    #[serde(rename = "sha-256", alias = "SHA-256")]
    Sha256,
    /// `sha-384`.
    #[serde(rename = "sha-384", alias = "SHA-384")]
    Sha384,
    /// `sha-512`.
    #[serde(rename = "sha-512", alias = "SHA-512")]
    Sha512,
}

/// A certificate fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DtlsFingerprint {
    /// Hash function.
    pub algorithm: FingerprintAlgorithm,
    /// Colon-separated uppercase hex bytes (`AB:CD:...`).
    pub value: String,
}

/// DTLS role and certificate fingerprints of one side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DtlsParameters {
    /// DTLS role; `None` means `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<DtlsRole>,
    /// Certificate fingerprints.
    pub fingerprints: Vec<DtlsFingerprint>,
}

/// ICE state of a transport, with mediasoup's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IceState {
    /// No binding request received yet.
    New,
    /// A valid binding request was received.
    Connected,
    /// A candidate pair was nominated (USE-CANDIDATE).
    Completed,
    /// Consent lost (no binding requests for a while).
    Disconnected,
    /// The transport is closed.
    Closed,
}

/// DTLS state of a transport, with mediasoup's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DtlsState {
    /// Not started.
    New,
    /// Handshake in progress.
    Connecting,
    /// Handshake done, SRTP keys available.
    Connected,
    /// Handshake or fingerprint verification failed.
    Failed,
    /// Closed (close_notify or transport closed).
    Closed,
}

/// SCTP association state, with mediasoup's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SctpState {
    /// Not started.
    New,
    /// Association being set up.
    Connecting,
    /// Association established.
    Connected,
    /// Association failed.
    Failed,
    /// Association closed.
    Closed,
}

/// Number of SCTP streams (outgoing `OS`, maximum incoming `MIS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumSctpStreams {
    /// Initially requested number of outgoing streams.
    #[serde(rename = "OS")]
    pub os: u16,
    /// Maximum number of incoming streams.
    #[serde(rename = "MIS")]
    pub mis: u16,
}

/// SCTP capabilities of an endpoint (`Device.sctpCapabilities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SctpCapabilities {
    /// Stream counts.
    pub num_streams: NumSctpStreams,
}

/// SCTP parameters of a server transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SctpParameters {
    /// SCTP port (always 5000 in WebRTC).
    pub port: u16,
    /// Initially requested number of outgoing streams.
    #[serde(rename = "OS")]
    pub os: u16,
    /// Maximum number of incoming streams.
    #[serde(rename = "MIS")]
    pub mis: u16,
    /// Maximum message size.
    pub max_message_size: u32,
}

/// Parameters of one SCTP stream (a data producer or data consumer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SctpStreamParameters {
    /// SCTP stream id.
    pub stream_id: u16,
    /// Ordered delivery (mediasoup's default: true unless a lifetime or retransmit
    /// limit is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordered: Option<bool>,
    /// Partial reliability: maximum lifetime of a message in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_packet_life_time: Option<u16>,
    /// Partial reliability: maximum number of retransmissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retransmits: Option<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ice_candidate_has_ip_and_address() {
        let c = IceCandidate {
            foundation: "udpcandidate".into(),
            priority: 1_076_302_079,
            address: "192.0.2.1".into(),
            protocol: TransportProtocol::Udp,
            port: 40000,
            r#type: IceCandidateType::Host,
            tcp_type: None,
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            json!({"foundation": "udpcandidate", "priority": 1076302079, "ip": "192.0.2.1",
                   "address": "192.0.2.1", "protocol": "udp", "port": 40000, "type": "host"})
        );
        assert_eq!(serde_json::from_value::<IceCandidate>(v).unwrap(), c);
    }

    #[test]
    fn ice_candidate_accepts_ip_only_and_tcp_type() {
        let c: IceCandidate = serde_json::from_value(json!({
            "foundation": "tcpcandidate", "priority": 1, "ip": "::1", "protocol": "tcp",
            "port": 443, "type": "host", "tcpType": "passive"
        }))
        .unwrap();
        assert_eq!(c.address, "::1");
        assert_eq!(c.tcp_type, Some(IceCandidateTcpType::Passive));
        let err = serde_json::from_value::<IceCandidate>(json!({
            "foundation": "x", "priority": 1, "protocol": "udp", "port": 1, "type": "host"
        }))
        .unwrap_err();
        assert!(err.to_string().contains("address"), "{err}");
    }

    #[test]
    fn dtls_parameters_round_trip() {
        let text = r#"{"role":"client","fingerprints":[{"algorithm":"sha-256","value":"AB:CD"}]}"#;
        let p: DtlsParameters = serde_json::from_str(text).unwrap();
        assert_eq!(p.role, Some(DtlsRole::Client));
        assert_eq!(p.fingerprints[0].algorithm, FingerprintAlgorithm::Sha256);
        assert_eq!(serde_json::to_string(&p).unwrap(), text);
        let upper: DtlsParameters =
            serde_json::from_str(r#"{"fingerprints":[{"algorithm":"SHA-512","value":"AA"}]}"#)
                .unwrap();
        assert_eq!(upper.role, None);
        assert_eq!(
            upper.fingerprints[0].algorithm,
            FingerprintAlgorithm::Sha512
        );
    }

    #[test]
    fn states_use_lowercase_names() {
        assert_eq!(
            serde_json::to_value(IceState::Completed).unwrap(),
            "completed"
        );
        assert_eq!(
            serde_json::to_value(DtlsState::Connecting).unwrap(),
            "connecting"
        );
        assert_eq!(serde_json::to_value(SctpState::Failed).unwrap(), "failed");
    }

    #[test]
    fn sctp_shapes() {
        let p = SctpParameters {
            port: 5000,
            os: 1024,
            mis: 1024,
            max_message_size: 262_144,
        };
        assert_eq!(
            serde_json::to_value(p).unwrap(),
            json!({"port": 5000, "OS": 1024, "MIS": 1024, "maxMessageSize": 262144})
        );
        let caps: SctpCapabilities =
            serde_json::from_value(json!({"numStreams": {"OS": 1024, "MIS": 1024}})).unwrap();
        assert_eq!(caps.num_streams.mis, 1024);
        let s: SctpStreamParameters =
            serde_json::from_value(json!({"streamId": 3, "maxRetransmits": 2})).unwrap();
        assert_eq!(
            serde_json::to_value(s).unwrap(),
            json!({"streamId": 3, "maxRetransmits": 2})
        );
    }
}
