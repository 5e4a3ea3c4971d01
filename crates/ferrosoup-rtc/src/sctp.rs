//! SCTP over DTLS for data channels: one association per WebRTC transport, on top of the
//! sans-IO `rtc-sctp` crate.
//!
//! The association carries the transport's data channels as SCTP streams with the stream
//! ids agreed over signaling (mediasoup's "negotiated" channels: no DCEP handshake). Bytes
//! from the peer come in through [`SctpAssociation::handle_packet`] (the payload of one
//! DTLS application-data record), complete messages and state changes come out of
//! [`SctpAssociation::poll_event`], SCTP packets to wrap in DTLS out of
//! [`SctpAssociation::poll_transmit`]. Time is an argument; nothing here reads a clock.
//!
//! ```text
//! DTLS app data ─► handle_packet(now, bytes) ─► poll_event(): Connected / Message / Closed
//! send(now, stream, ...) ─────────────────────► poll_transmit(now): packets for DTLS
//! clock ─► handle_timeout(now)   poll_timeout(): when to call it next
//! ```
//!
//! Whatever the peer sends, nothing panics: malformed packets are dropped by the SCTP
//! endpoint, messages larger than the configured maximum, DCEP control messages and
//! unknown payload protocol identifiers are dropped and counted ([`SctpDrops`]).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rtc_sctp::{
    Association, AssociationHandle, ClientConfig, DatagramEvent, Endpoint, EndpointConfig, Event,
    Payload, PayloadProtocolIdentifier, ReliabilityType, ServerConfig, StreamEvent,
    TransportConfig,
};
use rtc_shared::TransportProtocol;

use crate::dtls::DtlsRole;

/// The SCTP port both ends use in WebRTC (RFC 8841; mediasoup's `sctpParameters.port`).
pub const SCTP_PORT: u16 = 5000;

/// Number of outgoing streams (OS) and maximum incoming streams (MIS) the server offers.
pub const SCTP_STREAMS: u16 = 1024;

/// The SCTP association's address stand-in: SCTP runs over DTLS here, not over IP, so the
/// endpoint's addresses are only labels (the DTLS session knows the real peer).
const PEER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SCTP_PORT));

/// Payload protocol identifier of a data channel message (RFC 8831 §8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ppid {
    /// WebRTC String (51).
    String,
    /// WebRTC Binary (53).
    Binary,
    /// WebRTC String Empty (56): an empty string, sent as one byte.
    StringEmpty,
    /// WebRTC Binary Empty (57): an empty binary message, sent as one byte.
    BinaryEmpty,
}

impl Ppid {
    /// The wire value.
    pub fn value(self) -> u32 {
        match self {
            Self::String => 51,
            Self::Binary => 53,
            Self::StringEmpty => 56,
            Self::BinaryEmpty => 57,
        }
    }

    /// The PPID of a wire value, if it is one of the four.
    pub fn from_value(value: u32) -> Option<Self> {
        match value {
            51 => Some(Self::String),
            53 => Some(Self::Binary),
            56 => Some(Self::StringEmpty),
            57 => Some(Self::BinaryEmpty),
            _ => None,
        }
    }

    /// Whether the message carries text (String or String Empty).
    pub fn is_text(self) -> bool {
        matches!(self, Self::String | Self::StringEmpty)
    }

    fn from_sctp(ppi: PayloadProtocolIdentifier) -> Option<Self> {
        match ppi {
            PayloadProtocolIdentifier::String => Some(Self::String),
            PayloadProtocolIdentifier::Binary => Some(Self::Binary),
            PayloadProtocolIdentifier::StringEmpty => Some(Self::StringEmpty),
            PayloadProtocolIdentifier::BinaryEmpty => Some(Self::BinaryEmpty),
            _ => None,
        }
    }

    fn to_sctp(self) -> PayloadProtocolIdentifier {
        match self {
            Self::String => PayloadProtocolIdentifier::String,
            Self::Binary => PayloadProtocolIdentifier::Binary,
            Self::StringEmpty => PayloadProtocolIdentifier::StringEmpty,
            Self::BinaryEmpty => PayloadProtocolIdentifier::BinaryEmpty,
        }
    }
}

/// How a stream delivers: order and partial reliability (RFC 3758), from the data
/// channel's `ordered`, `maxPacketLifeTime` and `maxRetransmits`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reliability {
    /// Deliver in order.
    pub unordered: bool,
    /// At most this many retransmissions of a message (none: reliable).
    pub max_retransmits: Option<u16>,
    /// Give a message up after this many milliseconds (none: reliable).
    pub max_packet_life_time: Option<u16>,
}

impl Reliability {
    fn sctp_params(self) -> (bool, ReliabilityType, u32) {
        match (self.max_retransmits, self.max_packet_life_time) {
            (Some(n), _) => (self.unordered, ReliabilityType::Rexmit, u32::from(n)),
            (None, Some(ms)) => (self.unordered, ReliabilityType::Timed, u32::from(ms)),
            (None, None) => (self.unordered, ReliabilityType::Reliable, 0),
        }
    }
}

/// One complete message from the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SctpMessage {
    /// Stream it arrived on.
    pub stream_id: u16,
    /// Its payload protocol identifier.
    pub ppid: Ppid,
    /// The bytes (one byte for the empty PPIDs).
    pub payload: Bytes,
}

/// What the association reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SctpEvent {
    /// The association is established: messages can be sent.
    Connected,
    /// A message arrived.
    Message(SctpMessage),
    /// The association ended (shut down, aborted or failed).
    Closed,
}

/// Where the association stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SctpState {
    /// Waiting for DTLS or for the handshake.
    Connecting,
    /// Established.
    Connected,
    /// Ended.
    Closed,
}

/// Messages from the peer that were dropped, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SctpDrops {
    /// Larger than the maximum message size.
    pub too_big: u64,
    /// DCEP control messages (channels are negotiated over signaling) or an unknown PPID.
    pub unsupported_ppid: u64,
    /// Data on a stream id at or above [`SCTP_STREAMS`], which the association never
    /// agreed to: the association is aborted (the SCTP stack keeps state for every stream
    /// a peer sends on, so this bounds it to [`SCTP_STREAMS`] streams).
    pub bad_stream: u64,
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SctpError {
    /// The association is not established.
    #[error("sctp association not connected")]
    NotConnected,
    /// The message is larger than the maximum message size.
    #[error("message of {0} bytes is larger than the maximum message size")]
    TooBig(usize),
    /// The SCTP stack refused it (stream closing, association shutting down).
    #[error("sctp: {0}")]
    Sctp(String),
}

/// Settings of an association.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SctpConfig {
    /// Largest message accepted or sent, bytes.
    pub max_message_size: u32,
}

/// The SCTP association of one transport.
pub struct SctpAssociation {
    config: SctpConfig,
    endpoint: Endpoint,
    association: Option<(AssociationHandle, Association)>,
    state: SctpState,
    events: VecDeque<SctpEvent>,
    transmits: VecDeque<Bytes>,
    drops: SctpDrops,
}

impl SctpAssociation {
    /// An association that starts with [`Self::start`] once DTLS is connected.
    pub fn new(config: SctpConfig) -> Self {
        let transport = Self::transport_config(config);
        let endpoint = Endpoint::new(
            PEER,
            TransportProtocol::UDP,
            Arc::new(EndpointConfig::new()),
            Some(Arc::new(ServerConfig::new(transport))),
        );
        Self {
            config,
            endpoint,
            association: None,
            state: SctpState::Connecting,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            drops: SctpDrops::default(),
        }
    }

    fn transport_config(config: SctpConfig) -> TransportConfig {
        TransportConfig::default()
            .with_sctp_port(SCTP_PORT)
            .with_max_message_size(config.max_message_size)
            .with_max_num_inbound_streams(SCTP_STREAMS)
            .with_max_num_outbound_streams(SCTP_STREAMS)
            // The reassembly queue may hold a whole message of the largest size.
            .with_max_receive_buffer_size(config.max_message_size.max(1024 * 1024))
    }

    /// DTLS is connected with `role` as our side's role: the DTLS client opens the
    /// association (as webrtc-rs does), the server waits for the peer's INIT (browsers
    /// send one whatever their role).
    pub fn start(&mut self, now: Instant, role: DtlsRole) {
        if role != DtlsRole::Client || self.association.is_some() {
            return;
        }
        let config = ClientConfig::new(Self::transport_config(self.config));
        match self.endpoint.connect(now, config, PEER) {
            Ok(a) => self.association = Some(a),
            Err(e) => {
                tracing::debug!("sctp connect failed: {e}");
                self.close_state();
            }
        }
        self.process(now);
    }

    /// The state.
    pub fn state(&self) -> SctpState {
        self.state
    }

    /// Messages dropped so far.
    pub fn drops(&self) -> SctpDrops {
        self.drops
    }

    /// The largest message accepted or sent.
    pub fn max_message_size(&self) -> u32 {
        self.config.max_message_size
    }

    /// Feeds one SCTP packet (a DTLS application-data record's payload).
    pub fn handle_packet(&mut self, now: Instant, packet: Bytes) {
        if self.state == SctpState::Closed {
            return;
        }
        let Some((handle, event)) = self.endpoint.handle(now, PEER, None, packet) else {
            return;
        };
        match event {
            DatagramEvent::NewAssociation(a) if self.association.is_none() => {
                self.association = Some((handle, a));
            }
            DatagramEvent::AssociationEvent(e) => {
                if let Some((h, a)) = self.association.as_mut()
                    && *h == handle
                {
                    a.handle_event(e);
                }
            }
            _ => {}
        }
        self.process(now);
    }

    /// Runs the association's timers (retransmissions, delayed SACKs).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((_, a)) = self.association.as_mut()
            && a.poll_timeout().is_some_and(|at| at <= now)
        {
            a.handle_timeout(now);
        }
        self.process(now);
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.association
            .as_ref()
            .and_then(|(_, a)| a.poll_timeout())
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<SctpEvent> {
        self.events.pop_front()
    }

    /// Next SCTP packet to send inside DTLS.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        if self.transmits.is_empty() {
            self.gather(now);
        }
        self.transmits.pop_front()
    }

    /// Sends one message on `stream_id` with the stream's `reliability` (set on the
    /// stream's first message or when it changes).
    pub fn send(
        &mut self,
        now: Instant,
        stream_id: u16,
        reliability: Reliability,
        ppid: Ppid,
        payload: &Bytes,
    ) -> Result<(), SctpError> {
        if payload.len() > self.config.max_message_size as usize {
            return Err(SctpError::TooBig(payload.len()));
        }
        let Some((_, a)) = self.association.as_mut() else {
            return Err(SctpError::NotConnected);
        };
        if self.state != SctpState::Connected {
            return Err(SctpError::NotConnected);
        }
        let (unordered, kind, value) = reliability.sctp_params();
        let mut stream = match a.stream(stream_id) {
            Ok(s) => s,
            Err(_) => a
                .open_stream(stream_id, ppid.to_sctp())
                .map_err(|e| SctpError::Sctp(e.to_string()))?,
        };
        stream
            .set_reliability_params(unordered, kind, value)
            .map_err(|e| SctpError::Sctp(e.to_string()))?;
        stream
            .write_chunk_with_ppi(now, payload, ppid.to_sctp())
            .map_err(|e| SctpError::Sctp(e.to_string()))?;
        Ok(())
    }

    /// Resets the outgoing side of `stream_id` (RFC 6525): the peer's data channel on it
    /// closes. A stream that never carried a message is left alone.
    pub fn reset_stream(&mut self, now: Instant, stream_id: u16) {
        if self.state != SctpState::Connected {
            return;
        }
        if let Some((_, a)) = self.association.as_mut()
            && let Ok(mut s) = a.stream(stream_id)
            && let Err(e) = s.close(now)
        {
            tracing::debug!(stream_id, "sctp stream reset failed: {e}");
        }
    }

    /// Aborts the association (the transport closes).
    pub fn close(&mut self, now: Instant) {
        if let Some((_, a)) = self.association.as_mut() {
            let _ = a.abort();
        }
        self.gather(now);
        self.close_state();
    }

    fn close_state(&mut self) {
        if self.state != SctpState::Closed {
            self.state = SctpState::Closed;
            self.events.push_back(SctpEvent::Closed);
        }
    }

    /// Moves what the association produced into the event and transmit queues.
    fn process(&mut self, now: Instant) {
        let max = self.config.max_message_size as usize;
        let Some((handle, a)) = self.association.as_mut() else {
            return;
        };
        let mut lost = false;
        while let Some(event) = a.poll() {
            match event {
                Event::Connected if self.state == SctpState::Connecting => {
                    self.state = SctpState::Connected;
                    self.events.push_back(SctpEvent::Connected);
                }
                Event::HandshakeFailed { reason } => {
                    tracing::debug!("sctp handshake failed: {reason}");
                    lost = true;
                }
                // Despite its name, reported per stream as it is unregistered (reset by
                // either side, or all of them when the association ends).
                Event::AssociationLost { id, .. } => {
                    tracing::trace!(stream_id = id, "sctp stream closed");
                }
                // Streams beyond the agreed count are a protocol violation (RFC 9260
                // §6.5); rtc-sctp would keep state for each of them.
                Event::Stream(StreamEvent::Opened { id }) if id >= SCTP_STREAMS => {
                    tracing::debug!(stream_id = id, "sctp data on a stream never agreed to");
                    self.drops.bad_stream += 1;
                    if let Err(e) = a.abort() {
                        tracing::debug!("sctp abort failed: {e}");
                    }
                    lost = true;
                    break;
                }
                Event::Stream(StreamEvent::Readable { id }) => {
                    let Ok(mut stream) = a.stream(id) else {
                        continue;
                    };
                    while let Ok(Some(chunks)) = stream.read_sctp() {
                        if chunks.len() > max {
                            self.drops.too_big += 1;
                            continue;
                        }
                        let Some(ppid) = Ppid::from_sctp(chunks.ppi) else {
                            self.drops.unsupported_ppid += 1;
                            continue;
                        };
                        let Ok(payload) = chunks.to_payload(max) else {
                            self.drops.too_big += 1;
                            continue;
                        };
                        self.events.push_back(SctpEvent::Message(SctpMessage {
                            stream_id: id,
                            ppid,
                            payload: payload.freeze(),
                        }));
                    }
                }
                _ => {}
            }
        }
        while let Some(e) = a.poll_endpoint_event() {
            self.endpoint.handle_event(*handle, e);
        }
        // `Closed` is also the state before the handshake: only an established one is lost.
        let lost = lost || (a.is_closed() && !a.is_handshaking());
        self.gather(now);
        if lost {
            self.close_state();
        }
    }

    fn gather(&mut self, now: Instant) {
        let Some((_, a)) = self.association.as_mut() else {
            return;
        };
        while let Some(t) = a.poll_transmit(now) {
            if let Payload::RawEncode(packets) = t.message {
                self.transmits.extend(packets);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const CONFIG: SctpConfig = SctpConfig {
        max_message_size: 4096,
    };

    /// Moves packets between two associations until both are quiet, advancing time.
    fn pump(a: &mut SctpAssociation, b: &mut SctpAssociation, now: &mut Instant) {
        for _ in 0..200 {
            let mut moved = false;
            while let Some(p) = a.poll_transmit(*now) {
                b.handle_packet(*now, p);
                moved = true;
            }
            while let Some(p) = b.poll_transmit(*now) {
                a.handle_packet(*now, p);
                moved = true;
            }
            if !moved {
                *now += Duration::from_millis(50);
                a.handle_timeout(*now);
                b.handle_timeout(*now);
                if a.poll_timeout().is_none() && b.poll_timeout().is_none() {
                    return;
                }
            }
        }
    }

    fn connected_pair(now: &mut Instant) -> (SctpAssociation, SctpAssociation) {
        let mut client = SctpAssociation::new(CONFIG);
        let mut server = SctpAssociation::new(CONFIG);
        client.start(*now, DtlsRole::Client);
        server.start(*now, DtlsRole::Server);
        pump(&mut client, &mut server, now);
        assert_eq!(client.state(), SctpState::Connected);
        assert_eq!(server.state(), SctpState::Connected);
        assert_eq!(client.poll_event(), Some(SctpEvent::Connected));
        assert_eq!(server.poll_event(), Some(SctpEvent::Connected));
        (client, server)
    }

    fn messages(a: &mut SctpAssociation) -> Vec<SctpMessage> {
        std::iter::from_fn(|| a.poll_event())
            .filter_map(|e| match e {
                SctpEvent::Message(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn messages_keep_stream_ppid_and_order() {
        let mut now = Instant::now();
        let (mut client, mut server) = connected_pair(&mut now);
        let reliable = Reliability::default();
        for i in 0..20u8 {
            let ppid = if i % 2 == 0 {
                Ppid::String
            } else {
                Ppid::Binary
            };
            client
                .send(
                    now,
                    3,
                    reliable,
                    ppid,
                    &Bytes::from(vec![i; 100 + usize::from(i)]),
                )
                .unwrap();
        }
        client
            .send(
                now,
                3,
                reliable,
                Ppid::StringEmpty,
                &Bytes::from_static(b"\0"),
            )
            .unwrap();
        pump(&mut client, &mut server, &mut now);
        let got = messages(&mut server);
        assert_eq!(got.len(), 21);
        for (i, m) in got.iter().take(20).enumerate() {
            assert_eq!(m.stream_id, 3);
            assert_eq!(m.payload.len(), 100 + i);
            assert_eq!(m.payload[0], i as u8);
            assert_eq!(m.ppid.is_text(), i % 2 == 0);
        }
        assert_eq!(got[20].ppid, Ppid::StringEmpty);
        // And back, on another stream, fragmented across packets.
        server
            .send(now, 7, reliable, Ppid::Binary, &Bytes::from(vec![9; 4000]))
            .unwrap();
        pump(&mut client, &mut server, &mut now);
        let got = messages(&mut client);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].stream_id, got[0].payload.len()), (7, 4000));
    }

    #[test]
    fn oversize_messages_are_refused_and_dropped() {
        let mut now = Instant::now();
        let (mut client, _server) = connected_pair(&mut now);
        let big = Bytes::from(vec![1; 5000]);
        assert_eq!(
            client.send(now, 1, Reliability::default(), Ppid::Binary, &big),
            Err(SctpError::TooBig(5000))
        );
        // A peer that ignores the limit: the receiver drops the message and counts it.
        let mut lax = SctpAssociation::new(SctpConfig {
            max_message_size: 65536,
        });
        let mut strict = SctpAssociation::new(CONFIG);
        lax.start(now, DtlsRole::Client);
        pump(&mut lax, &mut strict, &mut now);
        let _ = (lax.poll_event(), strict.poll_event());
        lax.send(now, 1, Reliability::default(), Ppid::Binary, &big)
            .unwrap();
        lax.send(
            now,
            1,
            Reliability::default(),
            Ppid::Binary,
            &Bytes::from_static(b"ok"),
        )
        .unwrap();
        pump(&mut lax, &mut strict, &mut now);
        let got = messages(&mut strict);
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].payload[..], b"ok");
        assert_eq!(strict.drops().too_big, 1);
    }

    #[test]
    fn garbage_and_sends_before_connect_do_not_panic() {
        let now = Instant::now();
        let mut a = SctpAssociation::new(CONFIG);
        assert_eq!(
            a.send(
                now,
                1,
                Reliability::default(),
                Ppid::String,
                &Bytes::from_static(b"x")
            ),
            Err(SctpError::NotConnected)
        );
        for len in 0..64 {
            a.handle_packet(now, Bytes::from(vec![0xab; len]));
        }
        let mut packet = vec![0u8; 40];
        packet[0..2].copy_from_slice(&5000u16.to_be_bytes());
        packet[2..4].copy_from_slice(&5000u16.to_be_bytes());
        packet[12] = 1; // INIT with a bogus body
        a.handle_packet(now, Bytes::from(packet));
        a.handle_timeout(now + Duration::from_secs(10));
        assert_ne!(a.state(), SctpState::Connected);
    }

    #[test]
    fn unreliable_stream_gives_up_lost_messages() {
        let mut now = Instant::now();
        let (mut client, mut server) = connected_pair(&mut now);
        let unreliable = Reliability {
            unordered: true,
            max_retransmits: Some(0),
            max_packet_life_time: None,
        };
        for i in 0..10u8 {
            client
                .send(now, 2, unreliable, Ppid::Binary, &Bytes::from(vec![i; 10]))
                .unwrap();
        }
        // The first flight is lost.
        while client.poll_transmit(now).is_some() {}
        for i in 10..12u8 {
            client
                .send(now, 2, unreliable, Ppid::Binary, &Bytes::from(vec![i; 10]))
                .unwrap();
        }
        pump(&mut client, &mut server, &mut now);
        let got: Vec<u8> = messages(&mut server).iter().map(|m| m.payload[0]).collect();
        assert!(got.contains(&10) && got.contains(&11), "{got:?}");
        assert!(!got.contains(&0), "{got:?}");
    }

    #[test]
    fn data_beyond_the_agreed_streams_aborts_the_association() {
        let mut now = Instant::now();
        let (mut client, mut server) = connected_pair(&mut now);
        let last = SCTP_STREAMS - 1;
        client
            .send(
                now,
                last,
                Reliability::default(),
                Ppid::String,
                &Bytes::from_static(b"in range"),
            )
            .unwrap();
        pump(&mut client, &mut server, &mut now);
        assert_eq!(messages(&mut server).len(), 1);
        // A hostile client sends on a stream id it never agreed to (its own stack would
        // refuse): the server keeps no state for it and aborts.
        let (_, a) = client.association.as_mut().unwrap();
        a.open_stream(SCTP_STREAMS, PayloadProtocolIdentifier::String)
            .unwrap()
            .write_chunk_with_ppi(
                now,
                &Bytes::from_static(b"out of range"),
                PayloadProtocolIdentifier::String,
            )
            .unwrap();
        pump(&mut client, &mut server, &mut now);
        assert_eq!(server.drops().bad_stream, 1);
        assert_eq!(server.state(), SctpState::Closed);
        assert_eq!(server.poll_event(), Some(SctpEvent::Closed));
        // The ABORT reached the client.
        assert_eq!(client.state(), SctpState::Closed);
    }

    #[test]
    fn reset_stream_reaches_the_peer() {
        let mut now = Instant::now();
        let (mut client, mut server) = connected_pair(&mut now);
        server
            .send(
                now,
                4,
                Reliability::default(),
                Ppid::String,
                &Bytes::from_static(b"hi"),
            )
            .unwrap();
        pump(&mut client, &mut server, &mut now);
        assert_eq!(messages(&mut client).len(), 1);
        server.reset_stream(now, 4);
        pump(&mut client, &mut server, &mut now);
        // The stream can be used again after the reset.
        server
            .send(
                now,
                4,
                Reliability::default(),
                Ppid::String,
                &Bytes::from_static(b"again"),
            )
            .unwrap();
        pump(&mut client, &mut server, &mut now);
        assert_eq!(messages(&mut client).len(), 1);
    }
}
