//! SDP on the client side of an SDP-less server, as mediasoup-client's `RemoteSdp` does it.
//!
//! The server never sees SDP. For each transport the client builds the *remote* description
//! itself from the server's ICE/DTLS parameters and the RTP parameters of each m-section:
//! an answer (`recvonly` sections) for a send transport, whose local offer webrtc-rs creates,
//! and an offer (`sendonly` sections) for a receive transport, which webrtc-rs answers.
//! [`parse_local`] reads back what webrtc-rs put in its local description (fingerprint, DTLS
//! setup, per-mid codecs, extension ids and SSRCs) to fill the `produce` request.

use std::fmt::Write as _;

use ferrosoup_proto::rtp_parameters::{
    MediaKind, ParameterValue, Parameters, RtcpFeedback, RtpCodecParameters,
    RtpHeaderExtensionParameters,
};

use crate::error::{ClientError, Result};

/// One ICE candidate of the server (ICE-lite, host candidates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCandidate {
    /// Candidate foundation.
    pub foundation: String,
    /// Candidate priority.
    pub priority: u32,
    /// IP address.
    pub address: String,
    /// Port.
    pub port: u16,
    /// `udp` or `tcp`.
    pub protocol: String,
    /// Candidate type (`host`).
    pub typ: String,
    /// `passive` for TCP candidates of an ICE-lite server.
    pub tcp_type: Option<String>,
}

impl RemoteCandidate {
    /// The candidate attribute (`candidate:...`, RFC 8839 §5.1).
    pub fn attribute(&self) -> String {
        let mut a = format!(
            "candidate:{} 1 {} {} {} {} typ {}",
            self.foundation, self.protocol, self.priority, self.address, self.port, self.typ
        );
        if let Some(tcp_type) = &self.tcp_type {
            let _ = write!(a, " tcptype {tcp_type}");
        }
        a
    }

    /// Whether this is a passive TCP candidate (the client connects to it).
    pub fn is_passive_tcp(&self) -> bool {
        self.protocol.eq_ignore_ascii_case("tcp") && self.tcp_type.as_deref() == Some("passive")
    }
}

/// The server side of a transport as the SDP needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTransport {
    /// ICE username fragment.
    pub ice_ufrag: String,
    /// ICE password.
    pub ice_pwd: String,
    /// Whether the server is ICE-lite (it always is for ferrosoup and mediasoup).
    pub ice_lite: bool,
    /// Server candidates.
    pub candidates: Vec<RemoteCandidate>,
    /// DTLS fingerprint algorithm, e.g. `sha-256`.
    pub fingerprint_algorithm: String,
    /// DTLS fingerprint value (`AB:CD:...`).
    pub fingerprint_value: String,
}

impl RemoteTransport {
    /// Replaces the server's candidates with one UDP host candidate at `addr`, keeping the
    /// foundation and priority of the server's first UDP candidate.
    pub fn override_candidates(&mut self, addr: std::net::SocketAddr) {
        let (foundation, priority) = self
            .candidates
            .iter()
            .find(|c| c.protocol.eq_ignore_ascii_case("udp"))
            .map(|c| (c.foundation.clone(), c.priority))
            .unwrap_or_else(|| ("override".to_owned(), 1_076_302_079));
        self.candidates = vec![RemoteCandidate {
            foundation,
            priority,
            address: addr.ip().to_string(),
            port: addr.port(),
            protocol: "udp".to_owned(),
            typ: "host".to_owned(),
            tcp_type: None,
        }];
    }
}

/// Direction of a remote m-section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionDirection {
    /// The server receives (remote answer to our `sendonly` offer).
    RecvOnly,
    /// The server sends (remote offer for our `recvonly` answer).
    SendOnly,
    /// Closed producer/consumer: kept so m-line order is stable.
    Inactive,
}

impl SectionDirection {
    fn as_str(self) -> &'static str {
        match self {
            Self::RecvOnly => "recvonly",
            Self::SendOnly => "sendonly",
            Self::Inactive => "inactive",
        }
    }
}

/// The SSRC description of a stream the server sends (remote offer only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSource {
    /// Media SSRC.
    pub ssrc: u32,
    /// RTX SSRC, when the consumer has one.
    pub rtx_ssrc: Option<u32>,
    /// RTCP CNAME.
    pub cname: String,
    /// MediaStream id (`a=msid` first token).
    pub stream_id: String,
    /// Track id (`a=msid` second token); the SDK uses the consumer id, so the remote track
    /// webrtc-rs creates can be matched to its consumer.
    pub track_id: String,
}

/// One m-section of the remote description.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteSection {
    /// `a=mid`.
    pub mid: String,
    /// `m=audio` or `m=video`.
    pub kind: MediaKind,
    /// Direction from the server's point of view.
    pub direction: SectionDirection,
    /// Codecs with payload types, fmtp parameters and feedback.
    pub codecs: Vec<RtpCodecParameters>,
    /// Header extensions with their ids.
    pub header_extensions: Vec<RtpHeaderExtensionParameters>,
    /// What the server sends, for `sendonly` sections.
    pub source: Option<RemoteSource>,
    /// Simulcast rids the server receives (`a=rid:<rid> recv`, `a=simulcast:recv ...`), for
    /// `recvonly` sections answering a simulcast offer.
    pub simulcast_rids: Vec<String>,
}

/// DTLS setup value the server takes in its sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteSetup {
    /// `a=setup:actpass` (in an offer; the client picks).
    ActPass,
    /// `a=setup:passive` (the server is the DTLS server).
    Passive,
    /// `a=setup:active` (the server is the DTLS client).
    Active,
}

impl RemoteSetup {
    fn as_str(self) -> &'static str {
        match self {
            Self::ActPass => "actpass",
            Self::Passive => "passive",
            Self::Active => "active",
        }
    }
}

/// The server's SCTP association (`sctpParameters` of `createTransport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteSctp {
    /// SCTP port (`a=sctp-port`, 5000 in WebRTC).
    pub port: u16,
    /// Largest message the server accepts (`a=max-message-size`).
    pub max_message_size: u32,
}

/// The `m=application` section of a remote description, at its m-line position.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DataSection {
    mid: String,
    /// Number of media sections before it.
    index: usize,
    sctp: RemoteSctp,
}

/// The remote description of one transport.
#[derive(Debug, Clone)]
pub struct RemoteSdp {
    transport: RemoteTransport,
    setup: RemoteSetup,
    sections: Vec<RemoteSection>,
    data: Option<DataSection>,
    version: u64,
}

impl RemoteSdp {
    /// The server's passive TCP candidates.
    pub fn passive_tcp_candidates(&self) -> impl Iterator<Item = &RemoteCandidate> {
        self.transport
            .candidates
            .iter()
            .filter(|c| c.is_passive_tcp())
    }

    /// A remote description with no m-sections yet.
    pub fn new(transport: RemoteTransport, setup: RemoteSetup) -> Self {
        Self {
            transport,
            setup,
            sections: Vec::new(),
            data: None,
            version: 0,
        }
    }

    /// Adds the `m=application` (SCTP) section `mid` after the first `index` media
    /// sections; false when the description has one already (its mid and place stay).
    pub fn add_data_section(&mut self, mid: &str, index: usize, sctp: RemoteSctp) -> bool {
        if self.data.is_some() {
            return false;
        }
        self.data = Some(DataSection {
            mid: mid.to_owned(),
            index,
            sctp,
        });
        true
    }

    /// The mid of the `m=application` section, when there is one.
    pub fn data_mid(&self) -> Option<&str> {
        self.data.as_ref().map(|d| d.mid.as_str())
    }

    /// Adds a section, or replaces the one with the same mid (m-line order is kept).
    pub fn upsert(&mut self, section: RemoteSection) {
        match self.sections.iter_mut().find(|s| s.mid == section.mid) {
            Some(existing) => *existing = section,
            None => self.sections.push(section),
        }
    }

    /// Marks the section `mid` inactive (its producer or consumer was closed).
    pub fn deactivate(&mut self, mid: &str) {
        if let Some(section) = self.sections.iter_mut().find(|s| s.mid == mid) {
            section.direction = SectionDirection::Inactive;
            section.source = None;
        }
    }

    /// The sections in m-line order.
    pub fn sections(&self) -> &[RemoteSection] {
        &self.sections
    }

    /// Renders the SDP text; every call bumps the origin's session version.
    pub fn render(&mut self) -> String {
        self.version += 1;
        let mut sdp = String::with_capacity(1024 + 1024 * self.sections.len());
        // `write!` into a String cannot fail.
        let _ = write!(
            sdp,
            "v=0\r\no=ferrosoup 10000 {} IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
            self.version
        );
        if self.transport.ice_lite {
            sdp.push_str("a=ice-lite\r\n");
        }
        let mut mids: Vec<&str> = self.sections.iter().map(|s| s.mid.as_str()).collect();
        if let Some(data) = &self.data {
            mids.insert(data.index.min(mids.len()), data.mid.as_str());
        }
        if !mids.is_empty() {
            let _ = write!(sdp, "a=group:BUNDLE {}\r\n", mids.join(" "));
        }
        sdp.push_str("a=msid-semantic: WMS *\r\n");
        if self
            .sections
            .iter()
            .any(|s| s.direction == SectionDirection::SendOnly)
        {
            sdp.push_str("a=extmap-allow-mixed\r\n");
        }
        for (i, section) in self.sections.iter().enumerate() {
            if let Some(data) = self.data.as_ref().filter(|d| d.index == i) {
                self.render_data_section(&mut sdp, data);
            }
            self.render_section(&mut sdp, section);
        }
        if let Some(data) = self
            .data
            .as_ref()
            .filter(|d| d.index >= self.sections.len())
        {
            self.render_data_section(&mut sdp, data);
        }
        sdp
    }

    fn render_data_section(&self, sdp: &mut String, data: &DataSection) {
        sdp.push_str("m=application 7 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 127.0.0.1\r\n");
        let _ = write!(sdp, "a=mid:{}\r\n", data.mid);
        self.render_transport(sdp);
        let _ = write!(
            sdp,
            "a=sctp-port:{}\r\na=max-message-size:{}\r\n",
            data.sctp.port, data.sctp.max_message_size
        );
    }

    /// ICE credentials, fingerprint, setup and candidates (repeated in every section).
    fn render_transport(&self, sdp: &mut String) {
        let t = &self.transport;
        let _ = write!(
            sdp,
            "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n",
            t.ice_ufrag, t.ice_pwd
        );
        let _ = write!(
            sdp,
            "a=fingerprint:{} {}\r\na=setup:{}\r\n",
            t.fingerprint_algorithm,
            t.fingerprint_value,
            self.setup.as_str()
        );
        for c in &t.candidates {
            let _ = write!(sdp, "a={}\r\n", c.attribute());
        }
        sdp.push_str("a=end-of-candidates\r\n");
    }

    fn render_section(&self, sdp: &mut String, section: &RemoteSection) {
        let pts: Vec<String> = section
            .codecs
            .iter()
            .map(|c| c.payload_type.to_string())
            .collect();
        let _ = write!(
            sdp,
            "m={} 7 UDP/TLS/RTP/SAVPF {}\r\nc=IN IP4 127.0.0.1\r\n",
            section.kind.as_str(),
            pts.join(" ")
        );
        let _ = write!(sdp, "a=mid:{}\r\n", section.mid);
        let _ = write!(sdp, "a={}\r\n", section.direction.as_str());
        self.render_transport(sdp);
        sdp.push_str("a=rtcp-mux\r\na=rtcp-rsize\r\n");
        for ext in &section.header_extensions {
            let _ = write!(sdp, "a=extmap:{} {}\r\n", ext.id, ext.uri);
        }
        for codec in &section.codecs {
            let (_, name) = codec
                .mime_type
                .split_once('/')
                .unwrap_or(("", codec.mime_type.as_str()));
            let _ = write!(
                sdp,
                "a=rtpmap:{} {}/{}",
                codec.payload_type, name, codec.clock_rate
            );
            if let Some(channels) = codec.channels.filter(|c| *c > 1) {
                let _ = write!(sdp, "/{channels}");
            }
            sdp.push_str("\r\n");
            let fmtp = fmtp_line(&codec.parameters);
            if !fmtp.is_empty() {
                let _ = write!(sdp, "a=fmtp:{} {}\r\n", codec.payload_type, fmtp);
            }
            for fb in &codec.rtcp_feedback {
                if fb.parameter.is_empty() {
                    let _ = write!(sdp, "a=rtcp-fb:{} {}\r\n", codec.payload_type, fb.r#type);
                } else {
                    let _ = write!(
                        sdp,
                        "a=rtcp-fb:{} {} {}\r\n",
                        codec.payload_type, fb.r#type, fb.parameter
                    );
                }
            }
        }
        if section.direction != SectionDirection::Inactive && !section.simulcast_rids.is_empty() {
            for rid in &section.simulcast_rids {
                let _ = write!(sdp, "a=rid:{rid} recv\r\n");
            }
            let _ = write!(
                sdp,
                "a=simulcast:recv {}\r\n",
                section.simulcast_rids.join(";")
            );
        }
        if let Some(src) = &section.source {
            let _ = write!(sdp, "a=msid:{} {}\r\n", src.stream_id, src.track_id);
            if let Some(rtx) = src.rtx_ssrc {
                let _ = write!(sdp, "a=ssrc-group:FID {} {}\r\n", src.ssrc, rtx);
            }
            for ssrc in std::iter::once(src.ssrc).chain(src.rtx_ssrc) {
                let _ = write!(sdp, "a=ssrc:{} cname:{}\r\n", ssrc, src.cname);
                let _ = write!(
                    sdp,
                    "a=ssrc:{} msid:{} {}\r\n",
                    ssrc, src.stream_id, src.track_id
                );
            }
        }
    }
}

/// Renders codec parameters as an fmtp line (`a=1;b=x`), in key order.
pub fn fmtp_line(parameters: &Parameters) -> String {
    let mut line = String::new();
    for (key, value) in parameters {
        if !line.is_empty() {
            line.push(';');
        }
        let _ = match value {
            ParameterValue::Number(n) => write!(line, "{key}={n}"),
            ParameterValue::Float(f) => write!(line, "{key}={f}"),
            ParameterValue::String(s) => write!(line, "{key}={s}"),
        };
    }
    line
}

/// Parses an fmtp line into parameters; integral values become numbers (as mediasoup-client's
/// sdp-transform does), the rest strings.
pub fn parse_fmtp(line: &str) -> Parameters {
    let mut parameters = Parameters::new();
    for part in line.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        let value = match value.parse::<i64>() {
            // Keep leading zeros (profile-level-id=42e01f is not a number anyway, but
            // e.g. "0042" must stay a string to round-trip).
            Ok(n) if !(value.len() > 1 && value.starts_with('0')) => ParameterValue::Number(n),
            _ => ParameterValue::String(value.to_owned()),
        };
        parameters.insert(key.trim().to_owned(), value);
    }
    parameters
}

/// DTLS setup of the local description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalSetup {
    /// `a=setup:active`: the client is the DTLS client.
    Active,
    /// `a=setup:passive`: the client is the DTLS server.
    Passive,
    /// `a=setup:actpass` (an offer before the answer fixes it).
    ActPass,
}

/// What one m-section of the local description says.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalSection {
    /// `a=mid`.
    pub mid: String,
    /// Media kind, if audio or video.
    pub kind: Option<MediaKind>,
    /// Codecs in m-line order.
    pub codecs: Vec<RtpCodecParameters>,
    /// `a=extmap` entries.
    pub header_extensions: Vec<RtpHeaderExtensionParameters>,
    /// SSRCs from `a=ssrc` lines, in order of first appearance.
    pub ssrcs: Vec<u32>,
    /// `a=ssrc-group:FID media rtx` pairs.
    pub fid_groups: Vec<(u32, u32)>,
    /// CNAME from the first `a=ssrc:... cname:` line.
    pub cname: Option<String>,
}

/// What the SDK needs from the local description.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalDescription {
    /// Fingerprint algorithm and value.
    pub fingerprint: (String, String),
    /// DTLS setup of the first section.
    pub setup: LocalSetup,
    /// The m-sections.
    pub sections: Vec<LocalSection>,
}

impl LocalDescription {
    /// The section with `mid`.
    pub fn section(&self, mid: &str) -> Option<&LocalSection> {
        self.sections.iter().find(|s| s.mid == mid)
    }
}

/// Parses a local SDP produced by webrtc-rs.
pub fn parse_local(sdp: &str) -> Result<LocalDescription> {
    let parsed = rtc::sdp::description::session::SessionDescription::unmarshal(
        &mut std::io::Cursor::new(sdp.as_bytes()),
    )
    .map_err(|e| ClientError::Sdp(e.to_string()))?;

    let mut fingerprint = attr_value(&parsed.attributes, "fingerprint").map(str::to_owned);
    let mut setup = None;
    let mut sections = Vec::new();
    for media in &parsed.media_descriptions {
        let attrs = &media.attributes;
        if fingerprint.is_none() {
            fingerprint = attr_value(attrs, "fingerprint").map(str::to_owned);
        }
        if setup.is_none() {
            setup = match attr_value(attrs, "setup") {
                Some("active") => Some(LocalSetup::Active),
                Some("passive") => Some(LocalSetup::Passive),
                Some("actpass") => Some(LocalSetup::ActPass),
                _ => None,
            };
        }
        let Some(mid) = attr_value(attrs, "mid") else {
            continue;
        };
        let kind = match media.media_name.media.as_str() {
            "audio" => Some(MediaKind::Audio),
            "video" => Some(MediaKind::Video),
            _ => None,
        };
        let mut section = LocalSection {
            mid: mid.to_owned(),
            kind,
            codecs: Vec::new(),
            header_extensions: Vec::new(),
            ssrcs: Vec::new(),
            fid_groups: Vec::new(),
            cname: None,
        };
        let top = kind.map(MediaKind::as_str).unwrap_or("application");
        for format in &media.media_name.formats {
            let Ok(pt) = format.parse::<u8>() else {
                continue;
            };
            let Some(rtpmap) = pt_attr(attrs, "rtpmap", pt) else {
                continue;
            };
            let mut parts = rtpmap.split('/');
            let name = parts.next().unwrap_or_default();
            let clock_rate = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
            let channels = parts.next().and_then(|c| c.parse().ok());
            let parameters = pt_attr(attrs, "fmtp", pt)
                .map(parse_fmtp)
                .unwrap_or_default();
            let rtcp_feedback = attrs
                .iter()
                .filter(|a| a.key == "rtcp-fb")
                .filter_map(|a| a.value.as_deref())
                .filter_map(|v| v.split_once(' '))
                .filter(|(p, _)| p.parse::<u8>().ok() == Some(pt))
                .map(|(_, fb)| {
                    let (typ, param) = fb.split_once(' ').unwrap_or((fb, ""));
                    RtcpFeedback::new(typ, param)
                })
                .collect();
            section.codecs.push(RtpCodecParameters {
                mime_type: format!("{top}/{name}"),
                payload_type: pt,
                clock_rate,
                channels: if kind == Some(MediaKind::Audio) {
                    Some(channels.unwrap_or(1))
                } else {
                    None
                },
                parameters,
                rtcp_feedback,
            });
        }
        for a in attrs {
            let Some(value) = a.value.as_deref() else {
                continue;
            };
            match a.key.as_str() {
                "extmap" => {
                    let mut it = value.split_whitespace();
                    let id = it
                        .next()
                        .and_then(|i| i.split('/').next())
                        .and_then(|i| i.parse().ok());
                    if let (Some(id), Some(uri)) = (id, it.next()) {
                        section
                            .header_extensions
                            .push(RtpHeaderExtensionParameters {
                                uri: uri.to_owned(),
                                id,
                                encrypt: false,
                                parameters: Parameters::new(),
                            });
                    }
                }
                "ssrc" => {
                    let (ssrc, rest) = value.split_once(' ').unwrap_or((value, ""));
                    if let Ok(ssrc) = ssrc.parse::<u32>() {
                        if !section.ssrcs.contains(&ssrc) {
                            section.ssrcs.push(ssrc);
                        }
                        if section.cname.is_none()
                            && let Some(cname) = rest.strip_prefix("cname:")
                        {
                            section.cname = Some(cname.to_owned());
                        }
                    }
                }
                "ssrc-group" => {
                    let mut it = value.split_whitespace();
                    if it.next() == Some("FID") {
                        let media = it.next().and_then(|s| s.parse().ok());
                        let rtx = it.next().and_then(|s| s.parse().ok());
                        if let (Some(media), Some(rtx)) = (media, rtx) {
                            section.fid_groups.push((media, rtx));
                        }
                    }
                }
                _ => {}
            }
        }
        sections.push(section);
    }
    let fingerprint = fingerprint
        .and_then(|f| f.split_once(' ').map(|(a, v)| (a.to_owned(), v.to_owned())))
        .ok_or_else(|| ClientError::Sdp("local description has no fingerprint".into()))?;
    let setup = setup.ok_or_else(|| ClientError::Sdp("local description has no a=setup".into()))?;
    Ok(LocalDescription {
        fingerprint,
        setup,
        sections,
    })
}

fn attr_value<'a>(
    attrs: &'a [rtc::sdp::description::common::Attribute],
    key: &str,
) -> Option<&'a str> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_deref())
}

/// The value of `a=<key>:<pt> <value>` for payload type `pt`.
fn pt_attr<'a>(
    attrs: &'a [rtc::sdp::description::common::Attribute],
    key: &str,
    pt: u8,
) -> Option<&'a str> {
    attrs
        .iter()
        .filter(|a| a.key == key)
        .filter_map(|a| a.value.as_deref())
        .filter_map(|v| v.split_once(' '))
        .find(|(p, _)| p.parse::<u8>().ok() == Some(pt))
        .map(|(_, rest)| rest)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn server_transport() -> RemoteTransport {
        RemoteTransport {
            ice_ufrag: "srvufrag00000001".into(),
            ice_pwd: "srvpassword0000000000000000001".into(),
            ice_lite: true,
            candidates: vec![RemoteCandidate {
                foundation: "udpcandidate".into(),
                priority: 1_076_302_079,
                address: "127.0.0.1".into(),
                port: 40_000,
                protocol: "udp".into(),
                typ: "host".into(),
                tcp_type: None,
            }],
            fingerprint_algorithm: "sha-256".into(),
            fingerprint_value: (0..32)
                .map(|i| format!("{i:02X}"))
                .collect::<Vec<_>>()
                .join(":"),
        }
    }

    #[test]
    fn candidate_override_leaves_one_udp_candidate() {
        let mut t = server_transport();
        t.candidates.push(RemoteCandidate {
            foundation: "tcpcandidate".into(),
            priority: 1_076_302_078,
            address: "127.0.0.1".into(),
            port: 40_001,
            protocol: "tcp".into(),
            typ: "host".into(),
            tcp_type: Some("passive".into()),
        });
        t.override_candidates("127.0.0.2:5000".parse().expect("literal address"));
        assert_eq!(
            t.candidates,
            vec![RemoteCandidate {
                foundation: "udpcandidate".into(),
                priority: 1_076_302_079,
                address: "127.0.0.2".into(),
                port: 5000,
                protocol: "udp".into(),
                typ: "host".into(),
                tcp_type: None,
            }]
        );
    }

    pub(crate) fn vp8_with_rtx() -> Vec<RtpCodecParameters> {
        let mut rtx_params = Parameters::new();
        rtx_params.insert("apt".into(), ParameterValue::Number(101));
        vec![
            RtpCodecParameters {
                mime_type: "video/VP8".into(),
                payload_type: 101,
                clock_rate: 90_000,
                channels: None,
                parameters: Parameters::new(),
                rtcp_feedback: vec![
                    RtcpFeedback::new("nack", ""),
                    RtcpFeedback::new("nack", "pli"),
                ],
            },
            RtpCodecParameters {
                mime_type: "video/rtx".into(),
                payload_type: 102,
                clock_rate: 90_000,
                channels: None,
                parameters: rtx_params,
                rtcp_feedback: vec![],
            },
        ]
    }

    fn mid_ext() -> RtpHeaderExtensionParameters {
        RtpHeaderExtensionParameters {
            uri: "urn:ietf:params:rtp-hdrext:sdes:mid".into(),
            id: 1,
            encrypt: false,
            parameters: Parameters::new(),
        }
    }

    fn video_section(mid: &str) -> RemoteSection {
        RemoteSection {
            mid: mid.into(),
            kind: MediaKind::Video,
            direction: SectionDirection::RecvOnly,
            codecs: vp8_with_rtx(),
            header_extensions: vec![],
            source: None,
            simulcast_rids: vec![],
        }
    }

    #[test]
    fn data_section_keeps_its_m_line_place() {
        let mut remote = RemoteSdp::new(server_transport(), RemoteSetup::Passive);
        remote.upsert(video_section("0"));
        let sctp = RemoteSctp {
            port: 5000,
            max_message_size: 262_144,
        };
        assert!(remote.add_data_section("1", 1, sctp));
        assert!(
            !remote.add_data_section("9", 0, sctp),
            "one per description"
        );
        remote.upsert(video_section("2"));
        assert_eq!(remote.data_mid(), Some("1"));
        let sdp = remote.render();
        assert!(sdp.contains("a=group:BUNDLE 0 1 2\r\n"), "{sdp}");
        let parsed = rtc::sdp::description::session::SessionDescription::unmarshal(
            &mut std::io::Cursor::new(sdp.as_bytes()),
        )
        .expect("webrtc-rs parses the generated SDP");
        let kinds: Vec<&str> = parsed
            .media_descriptions
            .iter()
            .map(|m| m.media_name.media.as_str())
            .collect();
        assert_eq!(kinds, ["video", "application", "video"]);
        for line in [
            "m=application 7 UDP/DTLS/SCTP webrtc-datachannel",
            "a=sctp-port:5000",
            "a=max-message-size:262144",
        ] {
            assert!(sdp.contains(&format!("{line}\r\n")), "missing {line:?}");
        }
    }

    #[test]
    fn remote_offer_renders_and_parses() {
        let mut remote = RemoteSdp::new(server_transport(), RemoteSetup::ActPass);
        remote.upsert(RemoteSection {
            mid: "0".into(),
            kind: MediaKind::Video,
            direction: SectionDirection::SendOnly,
            codecs: vp8_with_rtx(),
            header_extensions: vec![mid_ext()],
            source: Some(RemoteSource {
                ssrc: 1111,
                rtx_ssrc: Some(2222),
                cname: "cn".into(),
                stream_id: "s".into(),
                track_id: "consumer-1".into(),
            }),
            simulcast_rids: vec![],
        });
        let sdp = remote.render();
        for line in [
            "a=ice-lite",
            "a=group:BUNDLE 0",
            "m=video 7 UDP/TLS/RTP/SAVPF 101 102",
            "a=mid:0",
            "a=sendonly",
            "a=ice-ufrag:srvufrag00000001",
            "a=setup:actpass",
            "a=candidate:udpcandidate 1 udp 1076302079 127.0.0.1 40000 typ host",
            "a=rtcp-mux",
            "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
            "a=rtpmap:101 VP8/90000",
            "a=rtcp-fb:101 nack pli",
            "a=rtpmap:102 rtx/90000",
            "a=fmtp:102 apt=101",
            "a=msid:s consumer-1",
            "a=ssrc-group:FID 1111 2222",
            "a=ssrc:1111 cname:cn",
            "a=ssrc:2222 cname:cn",
        ] {
            assert!(
                sdp.contains(&format!("{line}\r\n")),
                "missing {line:?} in\n{sdp}"
            );
        }
        let parsed = rtc::sdp::description::session::SessionDescription::unmarshal(
            &mut std::io::Cursor::new(sdp.as_bytes()),
        )
        .expect("webrtc-rs parses the generated SDP");
        assert_eq!(parsed.media_descriptions.len(), 1);
        // Rendering again bumps the session version.
        assert!(remote.render().contains("o=ferrosoup 10000 2 IN IP4"));
    }

    #[test]
    fn deactivated_answer_section_keeps_its_place() {
        let mut remote = RemoteSdp::new(server_transport(), RemoteSetup::Passive);
        for mid in ["0", "1"] {
            remote.upsert(RemoteSection {
                mid: mid.into(),
                kind: MediaKind::Video,
                direction: SectionDirection::RecvOnly,
                codecs: vp8_with_rtx(),
                header_extensions: vec![],
                source: None,
                simulcast_rids: vec!["r0".into(), "r1".into()],
            });
        }
        remote.deactivate("0");
        let sdp = remote.render();
        let first = sdp.find("a=mid:0").expect("mid 0");
        let second = sdp.find("a=mid:1").expect("mid 1");
        assert!(first < second);
        assert_eq!(sdp.matches("a=inactive").count(), 1);
        assert_eq!(sdp.matches("a=simulcast:recv r0;r1").count(), 1);
        assert!(sdp.contains("a=setup:passive\r\n"));
    }

    #[test]
    fn fmtp_round_trip() {
        let params = parse_fmtp("packetization-mode=1;profile-level-id=42e01f;x=0042");
        assert_eq!(params["packetization-mode"], ParameterValue::Number(1));
        assert_eq!(params["profile-level-id"].as_str(), Some("42e01f"));
        assert_eq!(params["x"].as_str(), Some("0042"));
        assert_eq!(
            fmtp_line(&params),
            "packetization-mode=1;profile-level-id=42e01f;x=0042"
        );
    }

    #[test]
    fn parse_local_reads_sections() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            a=fingerprint:sha-256 AA:BB\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 101 102\r\nc=IN IP4 0.0.0.0\r\n\
            a=setup:actpass\r\na=mid:0\r\na=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
            a=rtpmap:101 VP8/90000\r\na=rtcp-fb:101 nack\r\na=rtcp-fb:101 nack pli\r\n\
            a=rtpmap:102 rtx/90000\r\na=fmtp:102 apt=101\r\n\
            a=ssrc-group:FID 5 6\r\na=ssrc:5 cname:me\r\na=ssrc:6 cname:me\r\na=sendonly\r\n";
        let local = parse_local(sdp).expect("parses");
        assert_eq!(local.fingerprint, ("sha-256".into(), "AA:BB".into()));
        assert_eq!(local.setup, LocalSetup::ActPass);
        let section = local.section("0").expect("mid 0");
        assert_eq!(section.kind, Some(MediaKind::Video));
        assert_eq!(section.codecs, vp8_with_rtx());
        assert_eq!(section.header_extensions[0].id, 3);
        assert_eq!(section.ssrcs, vec![5, 6]);
        assert_eq!(section.fid_groups, vec![(5, 6)]);
        assert_eq!(section.cname.as_deref(), Some("me"));
    }
}
