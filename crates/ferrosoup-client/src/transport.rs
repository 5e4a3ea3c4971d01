//! Send and receive transports: one webrtc-rs PeerConnection each, negotiated against a
//! remote description built locally from the server's parameters (see [`crate::sdp`]).
//!
//! webrtc-rs 0.21 does not free a PeerConnection after `close()` (webrtc-rs issue 906), so
//! the SDK keeps exactly one PeerConnection per transport and reuses it for every producer
//! or consumer of that transport. Long-running programs should create few transports.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use ferrosoup_proto::rtp_parameters::{
    MediaKind, ParameterValue, RtcpParameters, RtpCodecParameters, RtpEncodingParameters,
    RtpParameters, RtxParameters,
};
use rtc::interceptor::{
    Attribute, Interceptor, NackGeneratorBuilder, NackResponderBuilder, Packet,
    ReceiverReportBuilder, Registry, SenderReportBuilder, Slot, StreamInfo, TaggedPacket,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceServer, RTCPeerConnectionState, RTCSessionDescription,
    SettingEngineBuilder,
};

use crate::consumer::Consumer;
use crate::device::Device;
use crate::error::{ClientError, Result};
use crate::ice_servers::IceServer;
use crate::producer::Producer;
use crate::sdp::{
    LocalDescription, LocalSetup, RemoteCandidate, RemoteSctp, RemoteSdp, RemoteSection,
    RemoteSetup, RemoteSource, RemoteTransport, SectionDirection, parse_local,
};
use crate::signaling::Signaling;

/// Options for creating a transport.
#[derive(Debug, Clone, Default)]
pub struct TransportOptions {
    /// Local IP to bind the PeerConnection's UDP socket to. Default: `127.0.0.1` when every
    /// server candidate is a loopback address, otherwise every non-loopback interface.
    pub bind_ip: Option<IpAddr>,
    /// Receive transports only: let webrtc-rs send NACKs for lost packets by itself
    /// (a browser does). Off by default so tests control NACKs with [`Consumer::send_nack`].
    pub auto_nack: bool,
    /// `appData` sent with `createTransport`.
    pub app_data: Option<Value>,
    /// Send to this address instead of the server's candidates (the PeerConnection gets it
    /// as the only remote candidate). For tests through a relay, or a server behind a NAT
    /// that announces an address the client cannot reach.
    pub candidate_override: Option<SocketAddr>,
    /// STUN and TURN servers for the PeerConnection, e.g. what
    /// [`fetch_ice_servers`](crate::fetch_ice_servers) got from the server. Default: none.
    pub ice_servers: Vec<IceServer>,
    /// ICE over TCP only (RFC 6544), for networks that let no UDP out: `createTransport`
    /// asks for the server's TCP candidates only (`forceTcp`), the PeerConnection binds no
    /// UDP socket, and it connects to the server's passive TCP candidate. Default: off.
    pub force_tcp: bool,
    /// Open an SCTP association over the transport's DTLS for data channels: sends
    /// `sctpCapabilities` with `createTransport`, enabling
    /// [`SendTransport::produce_data`] and [`RecvTransport::consume_data`]. Default: off.
    pub data_channels: bool,
}

/// Which way media flows on a transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The client sends (producers).
    Send,
    /// The client receives (consumers).
    Recv,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Recv => "recv",
        }
    }
}

/// Parses the `createTransport` answer (`{id, iceParameters, iceCandidates, dtlsParameters}`).
pub(crate) fn parse_transport_answer(answer: &Value) -> Result<(String, RemoteTransport)> {
    let field = |v: &Value, k: &str| -> Result<Value> {
        v.get(k)
            .cloned()
            .ok_or_else(|| ClientError::InvalidState(format!("createTransport answer lacks {k}")))
    };
    let text = |v: &Value, k: &str| -> Result<String> {
        field(v, k)?
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ClientError::InvalidState(format!("{k} is not a string")))
    };
    let id = text(answer, "id")?;
    let ice = field(answer, "iceParameters")?;
    let mut candidates = Vec::new();
    for c in field(answer, "iceCandidates")?
        .as_array()
        .into_iter()
        .flatten()
    {
        let address = text(c, "address").or_else(|_| text(c, "ip"))?;
        let port = c
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| ClientError::InvalidState("candidate port".into()))?;
        let priority = c
            .get("priority")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| ClientError::InvalidState("candidate priority".into()))?;
        candidates.push(RemoteCandidate {
            foundation: text(c, "foundation")?,
            priority,
            address,
            port,
            protocol: text(c, "protocol")?,
            typ: text(c, "type").unwrap_or_else(|_| "host".into()),
            tcp_type: text(c, "tcpType").ok(),
        });
    }
    let dtls = field(answer, "dtlsParameters")?;
    let fingerprints = field(&dtls, "fingerprints")?;
    let fingerprints = fingerprints.as_array().cloned().unwrap_or_default();
    // webrtc-rs accepts a single fingerprint: prefer sha-256, else take the last (as
    // mediasoup-client does).
    let fp = fingerprints
        .iter()
        .find(|f| f.get("algorithm").and_then(Value::as_str) == Some("sha-256"))
        .or_else(|| fingerprints.last())
        .ok_or_else(|| ClientError::InvalidState("dtlsParameters has no fingerprint".into()))?;
    Ok((
        id,
        RemoteTransport {
            ice_ufrag: text(&ice, "usernameFragment")?,
            ice_pwd: text(&ice, "password")?,
            ice_lite: ice.get("iceLite").and_then(Value::as_bool).unwrap_or(true),
            candidates,
            fingerprint_algorithm: text(fp, "algorithm")?,
            fingerprint_value: text(fp, "value")?,
        },
    ))
}

/// SCTP streams the client asks for in each direction (`numStreams.OS` and `.MIS`).
pub(crate) const SCTP_STREAMS: u16 = 1024;
/// The send stream id kept for the channel that makes webrtc-rs negotiate SCTP when media
/// comes first; data producers use the ids below it.
pub(crate) const SCTP_BOOTSTRAP_STREAM: u16 = SCTP_STREAMS - 1;
/// The mid the SDK gives the `m=application` section of a receive transport (the server
/// offers it; mediasoup-client names it the same).
const RECV_DATA_MID: &str = "datachannel";

/// Parses `sctpParameters` of a `createTransport` answer.
fn parse_sctp_parameters(answer: &Value) -> Result<RemoteSctp> {
    let sctp = answer.get("sctpParameters").ok_or_else(|| {
        ClientError::InvalidState("createTransport answer lacks sctpParameters".into())
    })?;
    let number = |k: &str| sctp.get(k).and_then(Value::as_u64);
    Ok(RemoteSctp {
        port: number("port")
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| ClientError::InvalidState("sctpParameters.port".into()))?,
        max_message_size: number("maxMessageSize")
            .and_then(|m| u32::try_from(m).ok())
            .ok_or_else(|| ClientError::InvalidState("sctpParameters.maxMessageSize".into()))?,
    })
}

/// Marks every inbound RTCP packet for delivery to the application, after the stock
/// interceptors have seen it, so producers can read PLI/FIR/NACK/RR and consumers SR.
#[derive(Default)]
struct RtcpToApplication {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpToApplication {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> std::result::Result<(), Self::Error> {
        if matches!(&msg.message.packet, Packet::Rtcp(p) if !p.is_empty()) {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> std::result::Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for RtcpToApplication {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Slot of [`RtcpToApplication`]: application-most, after every stock interceptor.
const RTCP_TO_APP_SLOT: usize = 14_000;

/// Events of one PeerConnection, shared with its handler.
pub(crate) struct PcEvents {
    /// Remote tracks by track id (the SDK sets it to the consumer id in the remote offer).
    tracks: Mutex<HashMap<String, Arc<dyn TrackRemote>>>,
    track_added: Notify,
    state: watch::Sender<RTCPeerConnectionState>,
}

impl PcEvents {
    /// Waits until webrtc-rs opened the remote track `track_id` (on its first RTP packet).
    pub(crate) async fn track(&self, track_id: &str) -> Result<Arc<dyn TrackRemote>> {
        let mut state = self.state.subscribe();
        loop {
            let added = self.track_added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            if let Some(track) = self
                .tracks
                .lock()
                .map_err(|_| ClientError::InvalidState("track table poisoned".into()))?
                .get(track_id)
            {
                return Ok(Arc::clone(track));
            }
            if matches!(
                *state.borrow_and_update(),
                RTCPeerConnectionState::Closed | RTCPeerConnectionState::Failed
            ) {
                return Err(ClientError::InvalidState("transport is closed".into()));
            }
            tokio::select! {
                _ = &mut added => {}
                changed = state.changed() => {
                    if changed.is_err() {
                        return Err(ClientError::InvalidState("transport is closed".into()));
                    }
                }
            }
        }
    }
}

struct Handler {
    events: Arc<PcEvents>,
}

#[async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(%state, "peer connection state");
        self.events.state.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let id = track.track_id().await.to_string();
        if let Ok(mut tracks) = self.events.tracks.lock() {
            tracks.insert(id, track);
        }
        self.events.track_added.notify_waiters();
    }
}

/// Builds the PeerConnection of a transport: the device's codecs and extensions, the
/// interceptors for `direction`, one UDP socket on `bind_ip` (or, `tcp_only`, one TCP
/// listener and no UDP socket), the STUN/TURN servers.
pub(crate) async fn build_peer_connection(
    device: &Device,
    direction: Direction,
    bind_ip: IpAddr,
    auto_nack: bool,
    ice_servers: &[IceServer],
    tcp_only: bool,
) -> Result<(Arc<dyn PeerConnection>, Arc<PcEvents>)> {
    let engine = device.media_engine(None)?;
    let mut registry = Registry::new();
    match direction {
        Direction::Send => {
            registry = registry
                .with(Slot::NackResponder, NackResponderBuilder::new().build())
                .with(Slot::SenderReport, SenderReportBuilder::new().build());
        }
        Direction::Recv => {
            registry = registry.with(Slot::ReceiverReport, ReceiverReportBuilder::new().build());
            if auto_nack {
                registry = registry.with(Slot::NackGenerator, NackGeneratorBuilder::new().build());
            }
        }
    }
    registry = registry.with(Slot::from(RTCP_TO_APP_SLOT), RtcpToApplication::default());

    let setting_engine = SettingEngineBuilder::new()
        // Against an ICE-lite offerer webrtc-rs would answer `a=setup:passive`; mediasoup
        // clients are always the DTLS client, so take `active` on receive transports too.
        .with_answering_dtls_role(RTCDtlsRole::Client)
        // Keep `a=ssrc` lines with simulcast so the SDK can read its SSRCs back.
        .with_write_ssrc_attributes_for_simulcast(true)
        .build();

    let (state, _) = watch::channel(RTCPeerConnectionState::New);
    let events = Arc::new(PcEvents {
        tracks: Mutex::new(HashMap::new()),
        track_added: Notify::new(),
        state,
    });
    let pc: Arc<dyn PeerConnection> = Arc::new(
        PeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::default()
                    .with_ice_servers(
                        ice_servers
                            .iter()
                            .map(|s| RTCIceServer {
                                urls: s.urls.clone(),
                                username: s.username.clone().unwrap_or_default(),
                                credential: s.credential.clone().unwrap_or_default(),
                            })
                            .collect(),
                    )
                    .build(),
            )
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(setting_engine)
            .with_handler(Arc::new(Handler {
                events: Arc::clone(&events),
            }))
            .with_udp_addrs(if tcp_only {
                Vec::new()
            } else {
                vec![SocketAddr::new(bind_ip, 0)]
            })
            // webrtc-rs gathers an active TCP candidate beside the listener's passive one,
            // and dials a remote passive candidate once it is added.
            .with_tcp_addrs(if tcp_only {
                vec![SocketAddr::new(bind_ip, 0)]
            } else {
                Vec::new()
            })
            .build()
            .await?,
    );
    Ok((pc, events))
}

/// Negotiation state of a transport, changed under one async lock so offers and answers
/// never interleave.
pub(crate) struct Negotiation {
    pub(crate) remote: RemoteSdp,
    connected: bool,
    /// The server's passive TCP candidates were handed to the PeerConnection (which dials
    /// them only when they are added as candidates, not from the SDP).
    tcp_dialed: bool,
    next_mid: u32,
    /// Next SCTP stream id for a data producer (send transports).
    pub(crate) next_stream_id: u16,
    /// Send transports with data channels whose first negotiation was for media: a
    /// channel on [`SCTP_BOOTSTRAP_STREAM`] that only makes webrtc-rs offer m=application
    /// (it is never announced to the server and carries nothing).
    bootstrap_channel: Option<Arc<dyn webrtc::data_channel::DataChannel>>,
}

/// What producers, consumers and the transport handle share.
pub(crate) struct TransportShared {
    pub(crate) id: String,
    pub(crate) direction: Direction,
    pub(crate) signaling: Signaling,
    pub(crate) device: Device,
    pub(crate) pc: Arc<dyn PeerConnection>,
    pub(crate) events: Arc<PcEvents>,
    pub(crate) negotiation: tokio::sync::Mutex<Negotiation>,
    /// CNAME (= MediaStream id) of everything this transport sends.
    pub(crate) cname: String,
    /// The server's SCTP parameters, when the transport was made with data channels.
    pub(crate) sctp: Option<RemoteSctp>,
}

impl TransportShared {
    async fn create(
        signaling: &Signaling,
        device: &Device,
        direction: Direction,
        options: &TransportOptions,
    ) -> Result<Arc<Self>> {
        let mut request = json!({ "direction": direction.as_str() });
        if let Some(app_data) = &options.app_data {
            request["appData"] = app_data.clone();
        }
        if options.force_tcp {
            request["forceTcp"] = json!(true);
        }
        if options.data_channels {
            request["sctpCapabilities"] = json!({
                "numStreams": { "OS": SCTP_STREAMS, "MIS": SCTP_STREAMS },
            });
        }
        let answer = signaling.request("createTransport", request).await?;
        let (id, mut remote) = parse_transport_answer(&answer)?;
        let sctp = if options.data_channels {
            Some(parse_sctp_parameters(&answer)?)
        } else {
            None
        };
        if let Some(addr) = options.candidate_override {
            remote.override_candidates(addr);
        }

        let bind_ip = options.bind_ip.unwrap_or_else(|| {
            let all_loopback = !remote.candidates.is_empty()
                && remote
                    .candidates
                    .iter()
                    .all(|c| c.address.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()));
            if all_loopback {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            }
        });

        let (pc, events) = build_peer_connection(
            device,
            direction,
            bind_ip,
            options.auto_nack,
            &options.ice_servers,
            options.force_tcp,
        )
        .await?;
        let setup = match direction {
            // The server answers our offers as the DTLS server.
            Direction::Send => RemoteSetup::Passive,
            // The server offers `actpass`; the client answers `active`.
            Direction::Recv => RemoteSetup::ActPass,
        };
        Ok(Arc::new(Self {
            id,
            direction,
            signaling: signaling.clone(),
            device: device.clone(),
            pc,
            events,
            negotiation: tokio::sync::Mutex::new(Negotiation {
                remote: RemoteSdp::new(remote, setup),
                connected: false,
                tcp_dialed: false,
                next_mid: 0,
                next_stream_id: 0,
                bootstrap_channel: None,
            }),
            cname: format!("ferrosoup-{:08x}", rand::random::<u32>()),
            sctp,
        }))
    }

    /// Sends `connectTransport` with the local fingerprint and DTLS role, once.
    async fn connect_once(&self, neg: &mut Negotiation, local: &LocalDescription) -> Result<()> {
        if neg.connected {
            return Ok(());
        }
        let role = match local.setup {
            LocalSetup::Active => "client",
            LocalSetup::Passive => "server",
            // Our own offer: the remote answer we build says `passive`, so we are the client.
            LocalSetup::ActPass => "client",
        };
        let (algorithm, value) = &local.fingerprint;
        self.signaling
            .request(
                "connectTransport",
                json!({
                    "transportId": self.id,
                    "dtlsParameters": {
                        "role": role,
                        "fingerprints": [{"algorithm": algorithm.to_lowercase(), "value": value}],
                    },
                }),
            )
            .await?;
        neg.connected = true;
        Ok(())
    }

    /// Send side: offer, connect if needed, apply the locally built answer.
    pub(crate) async fn negotiate_as_offerer(
        &self,
        neg: &mut Negotiation,
        answer_new: impl FnOnce(&LocalDescription, &mut RemoteSdp) -> Result<()>,
    ) -> Result<LocalDescription> {
        // webrtc-rs starts SCTP only when the DTLS handshake completes (as the DTLS client it
        // dials then), so a transport with data channels has its m=application section in
        // its first negotiation, whatever comes first.
        if self.sctp.is_some()
            && neg.remote.data_mid().is_none()
            && neg.next_stream_id == 0
            && neg.bootstrap_channel.is_none()
        {
            let init = webrtc::data_channel::RTCDataChannelInit {
                negotiated: Some(SCTP_BOOTSTRAP_STREAM),
                ..Default::default()
            };
            neg.bootstrap_channel = Some(self.pc.create_data_channel("", Some(init)).await?);
        }
        let offer = self.pc.create_offer(None).await?;
        let local = parse_local(&offer.sdp)?;
        self.pc.set_local_description(offer).await?;
        answer_new(&local, &mut neg.remote)?;
        if let Some(sctp) = self.sctp
            && neg.remote.data_mid().is_none()
            && let Some(at) = local.sections.iter().position(|s| s.kind.is_none())
        {
            neg.remote
                .add_data_section(&local.sections[at].mid, at, sctp);
        }
        self.connect_once(neg, &local).await?;
        let answer = RTCSessionDescription::answer(neg.remote.render())?;
        self.pc.set_remote_description(answer).await?;
        self.dial_tcp_once(neg).await?;
        Ok(local)
    }

    /// Adds the server's passive TCP candidates once the first remote description is set:
    /// webrtc-rs connects to them then (RFC 6544 active side).
    async fn dial_tcp_once(&self, neg: &mut Negotiation) -> Result<()> {
        if neg.tcp_dialed {
            return Ok(());
        }
        for c in neg.remote.passive_tcp_candidates() {
            self.pc
                .add_ice_candidate(RTCIceCandidateInit {
                    candidate: c.attribute(),
                    sdp_mline_index: Some(0),
                    ..Default::default()
                })
                .await?;
        }
        neg.tcp_dialed = true;
        Ok(())
    }

    /// Receive side: apply the locally built offer, answer, connect if needed.
    pub(crate) async fn negotiate_as_answerer(
        &self,
        neg: &mut Negotiation,
    ) -> Result<LocalDescription> {
        // As for offers: m=application from the first negotiation on (see above).
        if let Some(sctp) = self.sctp {
            let at = neg.remote.sections().len();
            neg.remote.add_data_section(RECV_DATA_MID, at, sctp);
        }
        let offer = RTCSessionDescription::offer(neg.remote.render())?;
        self.pc.set_remote_description(offer).await?;
        self.dial_tcp_once(neg).await?;
        let answer = self.pc.create_answer(None).await?;
        let local = parse_local(&answer.sdp)?;
        self.connect_once(neg, &local).await?;
        self.pc.set_local_description(answer).await?;
        Ok(local)
    }

    /// Removes a producer's or consumer's m-section from use and renegotiates.
    pub(crate) async fn close_section(
        &self,
        mid: &str,
        sender: Option<&Arc<dyn TrackLocal>>,
    ) -> Result<()> {
        let mut neg = self.negotiation.lock().await;
        neg.remote.deactivate(mid);
        match self.direction {
            Direction::Send => {
                if let Some(track) = sender {
                    for s in self.pc.get_senders().await {
                        if Arc::ptr_eq(s.track(), track) {
                            self.pc.remove_track(&s).await?;
                        }
                    }
                }
                self.negotiate_as_offerer(&mut neg, |_, _| Ok(())).await?;
            }
            Direction::Recv => {
                self.negotiate_as_answerer(&mut neg).await?;
            }
        }
        Ok(())
    }

    /// Closes the PeerConnection and asks the server to close the transport.
    async fn close(&self) -> Result<()> {
        let pc_result = self.pc.close().await;
        self.events
            .state
            .send_replace(RTCPeerConnectionState::Closed);
        self.signaling
            .request("closeTransport", json!({ "transportId": self.id }))
            .await?;
        pc_result?;
        Ok(())
    }
}

/// Options of [`SendTransport::produce`].
#[derive(Debug, Clone, Default)]
pub struct ProduceOptions {
    /// MIME type of the codec to send (`video/VP8`); default: the first device codec of the
    /// kind.
    pub codec: Option<String>,
    /// Number of simulcast encodings (rids `r0`, `r1`, ...); 0 or 1 means no simulcast.
    pub simulcast: usize,
    /// Start paused (`produce {paused: true}`).
    pub paused: bool,
    /// `appData` of the producer.
    pub app_data: Option<Value>,
}

/// A transport the client sends media on (`createTransport {direction: "send"}`).
#[derive(Clone)]
pub struct SendTransport {
    pub(crate) shared: Arc<TransportShared>,
}

impl SendTransport {
    /// Creates the server transport and the local PeerConnection.
    pub async fn create(
        signaling: &Signaling,
        device: &Device,
        options: TransportOptions,
    ) -> Result<Self> {
        let shared = TransportShared::create(signaling, device, Direction::Send, &options).await?;
        Ok(Self { shared })
    }

    /// The server's transport id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Current PeerConnection state.
    pub fn connection_state(&self) -> RTCPeerConnectionState {
        *self.shared.events.state.borrow()
    }

    /// Waits until the PeerConnection is connected (ICE + DTLS done), or fails.
    pub async fn wait_connected(&self) -> Result<()> {
        wait_connected(&self.shared.events).await
    }

    /// Adds an RTP sender of `kind`, negotiates it with the server and sends `produce`.
    ///
    /// The returned [`Producer`] accepts raw RTP packets ([`Producer::write_rtp`]): the caller
    /// chooses payloads, sequence numbers and timestamps; the SDK sets SSRC and payload type.
    pub async fn produce(&self, kind: MediaKind, options: ProduceOptions) -> Result<Producer> {
        let shared = &self.shared;
        let device = &shared.device;
        let codec = device.send_codec(kind, options.codec.as_deref())?.clone();
        let pt = codec
            .preferred_payload_type
            .ok_or_else(|| ClientError::Unsupported("codec has no payload type".into()))?;
        let has_rtx = device.rtx_codec_for(pt).is_some();
        let layers = options.simulcast.max(1);
        let rtc_codec = RTCRtpCodec {
            mime_type: codec.mime_type.clone(),
            clock_rate: codec.clock_rate,
            channels: codec.channels.map(u16::from).unwrap_or(0),
            sdp_fmtp_line: crate::sdp::fmtp_line(&codec.parameters),
            rtcp_feedback: vec![],
        };
        let codings: Vec<RTCRtpEncodingParameters> = (0..layers)
            .map(|i| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: if layers > 1 {
                        format!("r{i}").as_str().into()
                    } else {
                        Default::default()
                    },
                    ssrc: Some(rand::random::<u32>()),
                    rtx: has_rtx.then(|| RTCRtpRtxParameters {
                        ssrc: rand::random::<u32>(),
                    }),
                    fec: None,
                },
                active: true,
                codec: rtc_codec.clone(),
                ..Default::default()
            })
            .collect();
        let first_ssrc = codings.first().and_then(|c| c.rtp_coding_parameters.ssrc);
        let track_id = format!("track-{:08x}", rand::random::<u32>());
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            shared.cname.clone(),
            track_id.clone(),
            track_id.clone(),
            crate::device::rtc_kind(kind),
            codings,
        )));
        let track_dyn: Arc<dyn TrackLocal> = track.clone();

        let mut neg = shared.negotiation.lock().await;
        shared
            .pc
            .add_transceiver_from_track(
                Arc::clone(&track_dyn),
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    // Derived from the track's codings by webrtc-rs, which also decides
                    // whether the RTX SSRCs are used (only when an RTX codec is registered).
                    ..Default::default()
                }),
            )
            .await?;

        let device_exts = &device.rtp_capabilities().header_extensions;
        let mut chosen: Option<RemoteSection> = None;
        let mut section_mid = None;
        let local = shared
            .negotiate_as_offerer(&mut neg, |local, remote_sdp| {
                // The new section is the one announcing our track's first SSRC.
                let section = local
                    .sections
                    .iter()
                    .rev()
                    .find(|s| first_ssrc.is_some_and(|ssrc| s.ssrcs.contains(&ssrc)))
                    .ok_or_else(|| ClientError::Sdp("new sender not in local offer".into()))?;
                let codecs: Vec<RtpCodecParameters> = section
                    .codecs
                    .iter()
                    .filter(|c| {
                        c.payload_type == pt
                            || (c.is_rtx()
                                && c.parameters.get("apt").and_then(ParameterValue::as_i64)
                                    == Some(i64::from(pt)))
                    })
                    .cloned()
                    .map(|mut c| {
                        // Answer with the router's view of feedback for this codec.
                        if let Some(dc) = device
                            .rtp_capabilities()
                            .codecs
                            .iter()
                            .find(|dc| dc.preferred_payload_type == Some(c.payload_type))
                        {
                            c.rtcp_feedback.retain(|fb| dc.rtcp_feedback.contains(fb));
                        }
                        c
                    })
                    .collect();
                if !codecs.iter().any(|c| c.payload_type == pt) {
                    return Err(ClientError::Unsupported(format!(
                        "webrtc-rs did not offer payload type {pt}"
                    )));
                }
                let header_extensions = section
                    .header_extensions
                    .iter()
                    .filter(|e| device_exts.iter().any(|d| d.kind == kind && d.uri == e.uri))
                    .cloned()
                    .collect();
                let remote = RemoteSection {
                    mid: section.mid.clone(),
                    kind,
                    direction: SectionDirection::RecvOnly,
                    codecs,
                    header_extensions,
                    source: None,
                    simulcast_rids: if layers > 1 {
                        (0..layers).map(|i| format!("r{i}")).collect()
                    } else {
                        vec![]
                    },
                };
                section_mid = Some(section.mid.clone());
                chosen = Some(remote.clone());
                remote_sdp.upsert(remote);
                Ok(())
            })
            .await?;
        drop(neg);
        let (Some(mid), Some(remote_section)) = (section_mid, chosen) else {
            return Err(ClientError::Sdp("no m-section negotiated".into()));
        };
        let local_section = local
            .section(&mid)
            .ok_or_else(|| ClientError::Sdp("negotiated mid vanished".into()))?;

        // Encodings: what we configured, checked against what webrtc-rs announced.
        let track_ssrcs = track_dyn.ssrcs().await;
        let mut encodings = Vec::with_capacity(track_ssrcs.len());
        for (i, ssrc) in track_ssrcs.iter().enumerate() {
            let rtx = local_section
                .fid_groups
                .iter()
                .find(|(media, _)| media == ssrc)
                .map(|(_, rtx)| RtxParameters { ssrc: *rtx });
            encodings.push(RtpEncodingParameters {
                ssrc: Some(*ssrc),
                rid: (layers > 1).then(|| format!("r{i}")),
                rtx,
                ..Default::default()
            });
        }
        let rtp_parameters = RtpParameters {
            mid: Some(mid.clone()),
            codecs: remote_section.codecs.clone(),
            header_extensions: remote_section.header_extensions.clone(),
            encodings,
            rtcp: RtcpParameters {
                cname: Some(local_section.cname.clone().unwrap_or(shared.cname.clone())),
                reduced_size: Some(true),
                mux: None,
            },
            msid: Some(format!("{} {}", shared.cname, track_id)),
        };
        let mut request = json!({
            "transportId": shared.id,
            "kind": kind,
            "rtpParameters": rtp_parameters,
            "paused": options.paused,
        });
        if let Some(app_data) = options.app_data {
            request["appData"] = app_data;
        }
        let answer = shared.signaling.request("produce", request).await?;
        let id = answer
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| ClientError::InvalidState("produce answer lacks id".into()))?
            .to_owned();
        Ok(Producer::new(
            id,
            kind,
            mid,
            rtp_parameters,
            track,
            track_dyn,
            Arc::clone(shared),
        ))
    }

    /// Closes the PeerConnection and the server transport.
    pub async fn close(&self) -> Result<()> {
        self.shared.close().await
    }
}

async fn wait_connected(events: &PcEvents) -> Result<()> {
    let mut state = events.state.subscribe();
    loop {
        match *state.borrow_and_update() {
            RTCPeerConnectionState::Connected => return Ok(()),
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                return Err(ClientError::InvalidState(
                    "transport failed or closed".into(),
                ));
            }
            _ => {}
        }
        state
            .changed()
            .await
            .map_err(|_| ClientError::InvalidState("transport dropped".into()))?;
    }
}

/// A transport the client receives media on (`createTransport {direction: "recv"}`).
#[derive(Clone)]
pub struct RecvTransport {
    pub(crate) shared: Arc<TransportShared>,
}

impl RecvTransport {
    /// Creates the server transport and the local PeerConnection.
    pub async fn create(
        signaling: &Signaling,
        device: &Device,
        options: TransportOptions,
    ) -> Result<Self> {
        let shared = TransportShared::create(signaling, device, Direction::Recv, &options).await?;
        Ok(Self { shared })
    }

    /// The server's transport id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Current PeerConnection state.
    pub fn connection_state(&self) -> RTCPeerConnectionState {
        *self.shared.events.state.borrow()
    }

    /// Waits until the PeerConnection is connected (ICE + DTLS done), or fails.
    pub async fn wait_connected(&self) -> Result<()> {
        wait_connected(&self.shared.events).await
    }

    /// Requests `consume {producerId, paused: true}` and adds a receiving m-section for it.
    /// The consumer starts paused on the server: call [`Consumer::resume`].
    pub async fn consume(&self, producer_id: &str) -> Result<Consumer> {
        let shared = &self.shared;
        let answer = shared
            .signaling
            .request(
                "consume",
                json!({
                    "transportId": shared.id,
                    "producerId": producer_id,
                    "rtpCapabilities": shared.device.rtp_capabilities(),
                    "paused": true,
                }),
            )
            .await?;
        let id = answer
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| ClientError::InvalidState("consume answer lacks id".into()))?
            .to_owned();
        let kind: MediaKind =
            serde_json::from_value(answer.get("kind").cloned().unwrap_or_default())?;
        let rtp_parameters: RtpParameters =
            serde_json::from_value(answer.get("rtpParameters").cloned().unwrap_or_default())?;
        let encoding = rtp_parameters
            .encodings
            .first()
            .ok_or_else(|| ClientError::InvalidState("consumer has no encoding".into()))?;
        let ssrc = encoding
            .ssrc
            .ok_or_else(|| ClientError::InvalidState("consumer encoding has no ssrc".into()))?;
        let device_exts = &shared.device.rtp_capabilities().header_extensions;

        let mut neg = shared.negotiation.lock().await;
        let mid = rtp_parameters
            .mid
            .clone()
            .unwrap_or_else(|| neg.next_mid.to_string());
        neg.next_mid += 1;
        let section = RemoteSection {
            mid: mid.clone(),
            kind,
            direction: SectionDirection::SendOnly,
            codecs: rtp_parameters.codecs.clone(),
            header_extensions: rtp_parameters
                .header_extensions
                .iter()
                .filter(|e| device_exts.iter().any(|d| d.kind == kind && d.uri == e.uri))
                .cloned()
                .collect(),
            source: Some(RemoteSource {
                ssrc,
                rtx_ssrc: encoding.rtx.map(|r| r.ssrc),
                cname: rtp_parameters
                    .rtcp
                    .cname
                    .clone()
                    .unwrap_or_else(|| format!("ferrosoup-{producer_id}")),
                stream_id: format!("ferrosoup-{producer_id}"),
                track_id: id.clone(),
            }),
            simulcast_rids: vec![],
        };
        neg.remote.upsert(section);
        shared.negotiate_as_answerer(&mut neg).await?;
        drop(neg);
        Ok(Consumer::new(
            id,
            producer_id.to_owned(),
            kind,
            mid,
            ssrc,
            rtp_parameters,
            Arc::clone(shared),
        ))
    }

    /// Closes the PeerConnection and the server transport.
    pub async fn close(&self) -> Result<()> {
        self.shared.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::tests::router_caps;
    use crate::sdp::tests::{server_transport, vp8_with_rtx};
    use rtc::rtp;
    use std::time::Duration;
    use webrtc::peer_connection::RTCIceGatheringState;

    fn device() -> Device {
        Device::load(&router_caps()).expect("test capabilities load")
    }

    fn vp8_track(ssrc: u32, rtx: u32) -> Arc<TrackLocalStaticRTP> {
        Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "cname-test".to_owned(),
            "track-test".to_owned(),
            "track-test".to_owned(),
            rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    rtx: Some(RTCRtpRtxParameters { ssrc: rtx }),
                    ..Default::default()
                },
                active: true,
                ..Default::default()
            }],
        )))
    }

    fn answer_section(local: &LocalDescription, mid: &str) -> RemoteSection {
        let section = local.section(mid).expect("offered section");
        RemoteSection {
            mid: mid.to_owned(),
            kind: MediaKind::Video,
            direction: SectionDirection::RecvOnly,
            codecs: section
                .codecs
                .iter()
                .filter(|c| c.payload_type == 101 || c.payload_type == 102)
                .cloned()
                .collect(),
            header_extensions: section.header_extensions.clone(),
            source: None,
            simulcast_rids: vec![],
        }
    }

    #[tokio::test]
    async fn send_side_offer_carries_router_payload_types_and_accepts_built_answer() {
        let device = device();
        let (pc, _events) = build_peer_connection(
            &device,
            Direction::Send,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            false,
            &[],
            false,
        )
        .await
        .expect("pc");
        let track: Arc<dyn TrackLocal> = vp8_track(1111, 2222);
        pc.add_transceiver_from_track(
            track,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                ..Default::default()
            }),
        )
        .await
        .expect("transceiver");
        let offer = pc.create_offer(None).await.expect("offer");
        let local = parse_local(&offer.sdp).expect("local offer parses");
        pc.set_local_description(offer).await.expect("set local");
        assert_eq!(local.setup, LocalSetup::ActPass);
        let section = &local.sections[0];
        assert!(
            section
                .codecs
                .iter()
                .any(|c| c.payload_type == 101 && c.mime_type == "video/VP8")
        );
        assert!(
            section
                .codecs
                .iter()
                .any(|c| c.payload_type == 102 && c.is_rtx())
        );
        assert_eq!(section.fid_groups, vec![(1111, 2222)]);
        assert!(section.cname.is_some());
        assert!(
            section
                .header_extensions
                .iter()
                .any(|e| e.uri == "urn:ietf:params:rtp-hdrext:sdes:mid")
        );

        let mut remote = RemoteSdp::new(server_transport(), RemoteSetup::Passive);
        remote.upsert(answer_section(&local, &section.mid));
        let answer = RTCSessionDescription::answer(remote.render()).expect("answer");
        pc.set_remote_description(answer)
            .await
            .expect("webrtc-rs accepts the built answer");
        pc.close().await.expect("close");
    }

    #[tokio::test]
    async fn recv_side_accepts_built_offer_and_answers_active() {
        let device = device();
        let (pc, _events) = build_peer_connection(
            &device,
            Direction::Recv,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            false,
            &[],
            false,
        )
        .await
        .expect("pc");
        let mut remote = RemoteSdp::new(server_transport(), RemoteSetup::ActPass);
        remote.upsert(RemoteSection {
            mid: "0".into(),
            kind: MediaKind::Video,
            direction: SectionDirection::SendOnly,
            codecs: vp8_with_rtx(),
            header_extensions: vec![],
            source: Some(RemoteSource {
                ssrc: 3333,
                rtx_ssrc: Some(4444),
                cname: "server".into(),
                stream_id: "stream".into(),
                track_id: "consumer-1".into(),
            }),
            simulcast_rids: vec![],
        });
        let offer = RTCSessionDescription::offer(remote.render()).expect("offer");
        pc.set_remote_description(offer)
            .await
            .expect("webrtc-rs accepts the built offer");
        let answer = pc.create_answer(None).await.expect("answer");
        let local = parse_local(&answer.sdp).expect("local answer parses");
        assert_eq!(local.setup, LocalSetup::Active, "client is the DTLS client");
        let section = local.section("0").expect("mid 0");
        assert!(section.codecs.iter().any(|c| c.payload_type == 101));
        assert!(answer.sdp.contains("a=recvonly"));
        pc.set_local_description(answer).await.expect("set local");
        pc.close().await.expect("close");
    }

    /// Handler of the ICE-lite stand-in for the server.
    struct StandIn {
        tracks: tokio::sync::mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
        gathered: tokio::sync::mpsc::UnboundedSender<()>,
    }

    #[async_trait]
    impl PeerConnectionEventHandler for StandIn {
        async fn on_track(&self, track: Arc<dyn TrackRemote>) {
            let _ = self.tracks.send(track);
        }
        async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
            if state == RTCIceGatheringState::Complete {
                let _ = self.gathered.send(());
            }
        }
    }

    /// The server's parameters, read from the stand-in's answer as `createTransport` would
    /// hand them out.
    fn transport_from_sdp(sdp: &str) -> RemoteTransport {
        let local = parse_local(sdp).expect("stand-in answer parses");
        let attr = |key: &str| {
            sdp.lines()
                .find_map(|l| l.strip_prefix(&format!("a={key}:")))
                .expect("attribute present")
                .trim()
                .to_owned()
        };
        let candidates = sdp
            .lines()
            .filter_map(|l| l.strip_prefix("a=candidate:"))
            .map(|c| {
                let f: Vec<&str> = c.split_whitespace().collect();
                RemoteCandidate {
                    foundation: f[0].to_owned(),
                    priority: f[3].parse().expect("priority"),
                    address: f[4].to_owned(),
                    port: f[5].parse().expect("port"),
                    protocol: f[2].to_lowercase(),
                    typ: f[7].to_owned(),
                    tcp_type: None,
                }
            })
            .collect();
        RemoteTransport {
            ice_ufrag: attr("ice-ufrag"),
            ice_pwd: attr("ice-pwd"),
            ice_lite: true,
            candidates,
            fingerprint_algorithm: local.fingerprint.0,
            fingerprint_value: local.fingerprint.1,
        }
    }

    /// Media flows from a send-side PeerConnection whose remote answer the SDK built from
    /// an ICE-lite peer's parameters only (ufrag, pwd, candidates, fingerprint).
    #[tokio::test]
    async fn rtp_flows_against_ice_lite_peer_through_built_answer() {
        let device = device();
        let (client, events) = build_peer_connection(
            &device,
            Direction::Send,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            false,
            &[],
            false,
        )
        .await
        .expect("client pc");
        let track = vp8_track(5555, 6666);
        let track_dyn: Arc<dyn TrackLocal> = track.clone();
        client
            .add_transceiver_from_track(
                track_dyn,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    ..Default::default()
                }),
            )
            .await
            .expect("transceiver");
        let offer = client.create_offer(None).await.expect("offer");
        let local = parse_local(&offer.sdp).expect("offer parses");
        client
            .set_local_description(offer.clone())
            .await
            .expect("set local");

        let (tracks_tx, mut tracks_rx) = tokio::sync::mpsc::unbounded_channel();
        let (gathered_tx, mut gathered_rx) = tokio::sync::mpsc::unbounded_channel();
        let server = PeerConnectionBuilder::new()
            .with_media_engine(device.media_engine(None).expect("engine"))
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_lite(true)
                    .with_answering_dtls_role(RTCDtlsRole::Server)
                    .build(),
            )
            .with_handler(Arc::new(StandIn {
                tracks: tracks_tx,
                gathered: gathered_tx,
            }))
            .with_udp_addrs(vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)])
            .build()
            .await
            .expect("stand-in pc");
        server
            .set_remote_description(offer)
            .await
            .expect("stand-in takes offer");
        let server_answer = server.create_answer(None).await.expect("stand-in answer");
        server
            .set_local_description(server_answer)
            .await
            .expect("stand-in set local");
        tokio::time::timeout(Duration::from_secs(10), gathered_rx.recv())
            .await
            .expect("stand-in gathers candidates");
        let gathered = server
            .local_description()
            .await
            .expect("stand-in local description");
        let params = transport_from_sdp(&gathered.sdp);
        assert!(!params.candidates.is_empty(), "{}", gathered.sdp);

        let mut remote = RemoteSdp::new(params, RemoteSetup::Passive);
        remote.upsert(answer_section(&local, &local.sections[0].mid));
        client
            .set_remote_description(RTCSessionDescription::answer(remote.render()).expect("sdp"))
            .await
            .expect("client takes built answer");

        tokio::time::timeout(Duration::from_secs(10), wait_connected(&events))
            .await
            .expect("connects in time")
            .expect("connects");

        let received = tokio::time::timeout(Duration::from_secs(10), async {
            let mut seq = 100u16;
            loop {
                let packet = rtp::Packet {
                    header: rtp::header::Header {
                        version: 2,
                        payload_type: 101,
                        sequence_number: seq,
                        timestamp: u32::from(seq) * 3000,
                        ssrc: 5555,
                        marker: true,
                        ..Default::default()
                    },
                    payload: bytes::Bytes::from_static(&[0x10, 0x00, 0x9d, 0x01, 0x2a]),
                };
                seq = seq.wrapping_add(1);
                track.write_rtp(packet).await.expect("write");
                if let Ok(Some(remote_track)) =
                    tokio::time::timeout(Duration::from_millis(50), tracks_rx.recv()).await
                {
                    while let Some(evt) = remote_track.poll().await {
                        if let webrtc::media_stream::track_remote::TrackRemoteEvent::OnRtpPacket(
                            p,
                        ) = evt
                        {
                            return p;
                        }
                    }
                }
            }
        })
        .await
        .expect("media arrives");
        assert_eq!(received.header.ssrc, 5555);
        assert_eq!(received.header.payload_type, 101);
        assert_eq!(&received.payload[..], &[0x10, 0x00, 0x9d, 0x01, 0x2a]);
        client.close().await.expect("close client");
        server.close().await.expect("close stand-in");
    }
}
