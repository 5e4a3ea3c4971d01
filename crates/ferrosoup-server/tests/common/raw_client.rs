//! A hand-made WebRTC client for the integration tests: protoo signaling over a raw
//! WebSocket ([`Ws`], the test kit's client) with the first room steps ([`RoomSteps`]), and
//! ICE (rtc-stun), DTLS and SRTP (the project's own sans-IO pieces) over plain UDP sockets
//! ([`RawTransport`] for a bare handshake, [`MediaLink`] for a transport that keeps consent
//! alive, receives and sends media, and sends RTCP).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::within;
#[allow(unused_imports)] // each test binary uses a different subset
pub use super::ws::{Frame, Ws, error_of};
use ferrosoup_rtc::dtls::{
    DtlsCertificate, DtlsEvent, DtlsRole, DtlsSession, DtlsState, Fingerprint,
};
use ferrosoup_rtc::rtcp::{RtcpItem, parse_compound};
use ferrosoup_rtc::rtp::parse_rtp;
use ferrosoup_rtc::srtp::SrtpSession;
use ferrosoup_testkit::packets::RtpPacket;
use ferrosoup_testkit::packets::rtcp::{nack, receiver_report, report_block};
use ferrosoup_testkit::packets::stun::{
    StunResponseError, TransactionId, check_binding_response, stun_binding_request,
    stun_transaction_id,
};

/// The client ufrag of the hand-made client's checks (the server never checks it).
const CLIENT_UFRAG: &str = "evilufrag";
/// ICE-CONTROLLING tie-breaker of the hand-made client's checks.
const TIE_BREAKER: u64 = 0x0bad_c0de_0bad_c0de;

// ----- room steps over a raw protoo connection ------------------------------------------

/// The first steps of a hand-made peer on a [`Ws`].
pub trait RoomSteps {
    /// `createRoom` + `joinRoom` with the router's capabilities; returns them.
    async fn join(&mut self, room: &str, peer_id: &str) -> Value;

    /// `createTransport` in a direction; returns the whole answer.
    async fn transport(&mut self, direction: &str) -> Value;
}

impl RoomSteps for Ws {
    async fn join(&mut self, room: &str, peer_id: &str) -> Value {
        let caps = self.ok("createRoom", json!({"roomId": room})).await["rtpCapabilities"].clone();
        let joined = self
            .ok(
                "joinRoom",
                json!({"roomId": room, "peerId": peer_id, "rtpCapabilities": caps}),
            )
            .await;
        assert_eq!(joined["peerId"], peer_id);
        caps
    }

    async fn transport(&mut self, direction: &str) -> Value {
        self.ok("createTransport", json!({"direction": direction}))
            .await
    }
}

// ----- ICE and DTLS by hand -----------------------------------------------------------------

/// A browser-like ICE Binding request (see [`stun_binding_request`]): USE-CANDIDATE when
/// `nominate` (a consent check has none), MESSAGE-INTEGRITY with the server password.
pub fn binding_request(
    server_ufrag: &str,
    server_pwd: &str,
    nominate: bool,
) -> (TransactionId, Vec<u8>) {
    stun_binding_request(
        server_ufrag,
        CLIENT_UFRAG,
        server_pwd,
        nominate,
        TIE_BREAKER,
    )
}

/// Sends a nominating Binding request and checks the server's authenticated success answer.
pub async fn ice_check(socket: &UdpSocket, server: SocketAddr, ufrag: &str, pwd: &str) {
    let (tid, request) = binding_request(ufrag, pwd, true);
    socket
        .send_to(&request, server)
        .await
        .expect("send the Binding request");
    let mut buf = vec![0u8; 1500];
    let (n, from) = within("the STUN Binding response", 5, socket.recv_from(&mut buf))
        .await
        .expect("UDP recv");
    assert_eq!(from, server, "STUN answer from an unexpected address");
    // A success for this transaction whose MESSAGE-INTEGRITY verifies with `pwd`.
    if let Err(e) = check_binding_response(&buf[..n], tid, pwd) {
        panic!("Binding request not answered with a verified success: {e}");
    }
}

/// Runs the client side of DTLS over `socket` until the session connects, fails or closes.
pub async fn drive_dtls(
    socket: &UdpSocket,
    server: SocketAddr,
    dtls: &mut DtlsSession,
) -> DtlsState {
    let mut buf = vec![0u8; 2048];
    loop {
        while let Some(datagram) = dtls.poll_transmit() {
            socket.send_to(&datagram, server).await.expect("send DTLS");
        }
        if matches!(
            dtls.state(),
            DtlsState::Connected | DtlsState::Failed | DtlsState::Closed
        ) {
            return dtls.state();
        }
        let deadline = dtls
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_millis(100));
        match tokio::time::timeout_at(deadline.into(), socket.recv_from(&mut buf)).await {
            // RFC 7983: 20..=63 is DTLS.
            Ok(Ok((n, from))) if from == server && (20..=63).contains(&buf[0]) => {
                dtls.handle_read(Instant::now(), &buf[..n])
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("UDP recv: {e}"),
            Err(_) => dtls.handle_timeout(Instant::now()),
        }
    }
}

/// What a `createTransport` answer tells a hand-made client.
#[derive(Clone, Debug)]
pub struct TransportInfo {
    /// Transport id.
    pub id: String,
    /// Server ICE username fragment.
    pub ufrag: String,
    /// Server ICE password.
    pub pwd: String,
    /// The server's UDP candidate.
    pub server: SocketAddr,
    /// The server's DTLS fingerprints.
    pub server_fingerprints: Vec<Fingerprint>,
}

impl TransportInfo {
    /// Reads a `createTransport` answer (panics naming what is missing).
    pub fn parse(t: &Value) -> Self {
        let text = |v: &Value| {
            v.as_str()
                .unwrap_or_else(|| panic!("createTransport answer lacks a field: {t}"))
                .to_owned()
        };
        let candidate = t["iceCandidates"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["protocol"] == "udp"))
            .unwrap_or_else(|| panic!("no UDP candidate in {t}"));
        let ip = candidate["address"]
            .as_str()
            .or(candidate["ip"].as_str())
            .expect("candidate address");
        let port = candidate["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("candidate port");
        let server_fingerprints = t["dtlsParameters"]["fingerprints"]
            .as_array()
            .expect("server fingerprints")
            .iter()
            .map(|f| Fingerprint {
                algorithm: text(&f["algorithm"]),
                value: text(&f["value"]),
            })
            .collect();
        Self {
            id: text(&t["id"]),
            ufrag: text(&t["iceParameters"]["usernameFragment"]),
            pwd: text(&t["iceParameters"]["password"]),
            server: SocketAddr::new(ip.parse().expect("candidate IP"), port),
            server_fingerprints,
        }
    }
}

/// A transport of a peer whose signaling, ICE and DTLS are done by hand.
pub struct RawTransport {
    /// The peer's signaling connection.
    pub ws: Ws,
    /// Transport id.
    pub id: String,
    ufrag: String,
    pwd: String,
    server: SocketAddr,
    server_fingerprints: Vec<Fingerprint>,
}

impl RawTransport {
    /// Joins `room` as `peer` on a raw connection and creates a send transport.
    pub async fn open(url: &str, room: &str, peer: &str) -> Self {
        let mut ws = Ws::connect(url).await;
        ws.join(room, peer).await;
        let TransportInfo {
            id,
            ufrag,
            pwd,
            server,
            server_fingerprints,
        } = TransportInfo::parse(&ws.transport("send").await);
        Self {
            ws,
            id,
            ufrag,
            pwd,
            server,
            server_fingerprints,
        }
    }

    /// `connectTransport` as DTLS client announcing `fingerprint`.
    pub async fn connect(&mut self, fingerprint: &Fingerprint) {
        let fingerprint = json!({"algorithm": fingerprint.algorithm, "value": fingerprint.value});
        let data = json!({"transportId": self.id, "dtlsParameters": {"role": "client", "fingerprints": [fingerprint]}});
        self.ws.ok("connectTransport", data).await;
    }

    /// Passes ICE from a fresh UDP socket, then runs a DTLS client presenting `certificate`
    /// until the server notifies a final `dtlsState` (connected, failed or closed) for this
    /// transport (and, when connected, until the client's side completes too). Returns that
    /// notification and the client's DTLS state then.
    pub async fn handshake(&mut self, certificate: Arc<DtlsCertificate>) -> (Value, DtlsState) {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind a UDP socket");
        ice_check(&socket, self.server, &self.ufrag, &self.pwd).await;
        let mut dtls = DtlsSession::new(
            certificate,
            DtlsRole::Client,
            self.server_fingerprints.clone(),
            Instant::now(),
        )
        .expect("a DTLS client session");
        let id = self.id.clone();
        let is_final = move |d: &Value| {
            d["transportId"] == id.as_str()
                && ["connected", "failed", "closed"]
                    .contains(&d["dtlsState"].as_str().unwrap_or(""))
        };
        let notification = within("the server reports a final dtlsState for the raw transport", 20, async {
            let driver = drive_dtls(&socket, self.server, &mut dtls);
            tokio::pin!(driver);
            let mut driver_done = false;
            let mut notification: Option<Value> = None;
            loop {
                // After a "connected" notification, let the client finish its side too.
                if let Some(n) = &notification
                    && (driver_done || n["dtlsState"] != "connected")
                {
                    return n.clone();
                }
                tokio::select! {
                    n = self.ws.notification("transportStateChanged", &is_final), if notification.is_none() => notification = Some(n),
                    _ = &mut driver, if !driver_done => driver_done = true,
                }
            }
        })
        .await;
        (notification, dtls.state())
    }
}

/// The sha-256 fingerprint of a certificate.
pub fn sha256(certificate: &DtlsCertificate) -> &Fingerprint {
    certificate
        .fingerprints()
        .iter()
        .find(|f| f.algorithm == "sha-256")
        .expect("a certificate has a sha-256 fingerprint")
}

// ----- a transport that lives: consent, media, RTCP ---------------------------------------

/// How often a [`MediaLink`] sends consent checks while consent is on.
pub const CONSENT_INTERVAL: Duration = Duration::from_millis(200);

/// What a STUN Binding request got back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StunAnswer {
    /// A success response whose MESSAGE-INTEGRITY verified with the password used.
    Success,
    /// An error response with this code (401: unknown credentials).
    Error(u16),
    /// Anything else (e.g. a success that does not verify), described.
    Invalid(String),
}

/// One RTP packet the link received and unprotected.
#[derive(Clone, Debug)]
pub struct RtpIn {
    /// Index of the local socket it arrived on (0: the first, +1 per [`MediaLink::rebind`]).
    pub socket: usize,
    /// SSRC.
    pub ssrc: u32,
    /// Sequence number.
    pub seq: u16,
    /// Payload (padding excluded).
    pub payload: Vec<u8>,
}

enum Command {
    Check {
        credentials: Option<(String, String)>,
        nominate: bool,
        reply: oneshot::Sender<StunAnswer>,
    },
    SetCredentials(String, String),
    SetConsent(bool),
    Rebind(oneshot::Sender<SocketAddr>),
    Rtcp(Vec<u8>),
    Rtp(Vec<u8>),
}

/// The client side of one WebRTC transport, driven by a background task: a nominating ICE
/// check, then DTLS (client role) and SRTP; consent checks every [`CONSENT_INTERVAL`] while
/// enabled; received RTP unprotected into [`MediaLink::rtp`]; RTP and RTCP protected and
/// sent on request; keyframe requests (PLI, FIR) received reported in
/// [`MediaLink::keyframe_requests`], REMBs in [`MediaLink::rembs`]. The task ends when the
/// link is dropped.
pub struct MediaLink {
    commands: mpsc::UnboundedSender<Command>,
    /// RTP packets received, in arrival order.
    pub rtp: mpsc::UnboundedReceiver<RtpIn>,
    /// Media SSRCs of the PLIs and FIR entries received, in arrival order.
    pub keyframe_requests: mpsc::UnboundedReceiver<u32>,
    /// REMBs received: bitrate (bit/s) and the SSRCs named, in arrival order.
    pub rembs: mpsc::UnboundedReceiver<(u64, Vec<u32>)>,
    dtls: watch::Receiver<DtlsState>,
    task: JoinHandle<()>,
}

impl Drop for MediaLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MediaLink {
    /// Binds a UDP socket and starts the driver for `transport` (already given our
    /// fingerprint with `connectTransport`, DTLS role client), presenting `certificate`.
    pub async fn start(transport: &TransportInfo, certificate: Arc<DtlsCertificate>) -> Self {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (rtp_tx, rtp) = mpsc::unbounded_channel();
        let (keyframe_tx, keyframe_requests) = mpsc::unbounded_channel();
        let (remb_tx, rembs) = mpsc::unbounded_channel();
        let (dtls_tx, dtls) = watch::channel(DtlsState::New);
        let (datagram_tx, datagrams) = mpsc::unbounded_channel();
        let mut driver = Driver {
            server: transport.server,
            credentials: (transport.ufrag.clone(), transport.pwd.clone()),
            fingerprints: transport.server_fingerprints.clone(),
            certificate,
            consent: true,
            sockets: Vec::new(),
            readers: Vec::new(),
            datagram_tx,
            pending: HashMap::new(),
            nomination: None,
            dtls: None,
            dtls_tx,
            srtp: None,
            rtp_tx,
            keyframe_tx,
            remb_tx,
        };
        driver.bind().await;
        let tid = driver
            .check(&transport.ufrag, &transport.pwd, true, None)
            .await;
        driver.nomination = Some(tid);
        let task = tokio::spawn(driver.run(command_rx, datagrams));
        Self {
            commands,
            rtp,
            keyframe_requests,
            rembs,
            dtls,
            task,
        }
    }

    fn command(&self, command: Command) {
        assert!(
            self.commands.send(command).is_ok(),
            "the media link's driver task ended (it panicked: see above)"
        );
    }

    /// Waits until the client side of DTLS is connected (SRTP ready); fails on a final
    /// failure.
    pub async fn wait_dtls_connected(&mut self) {
        let state = within(
            "the raw client's DTLS handshake",
            10,
            self.dtls.wait_for(|s| {
                matches!(
                    s,
                    DtlsState::Connected | DtlsState::Failed | DtlsState::Closed
                )
            }),
        )
        .await
        .map(|s| *s)
        .expect("the media link's driver task runs");
        assert_eq!(state, DtlsState::Connected, "raw client DTLS");
    }

    /// Sends one Binding request from the current socket, with the current credentials or
    /// `credentials` (ufrag, pwd) if given, and returns the answer (`None`: none within 2 s).
    pub async fn check(
        &self,
        credentials: Option<(&str, &str)>,
        nominate: bool,
    ) -> Option<StunAnswer> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Check {
            credentials: credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
            nominate,
            reply,
        });
        tokio::time::timeout(Duration::from_secs(2), answer)
            .await
            .ok()
            .map(|a| a.expect("the media link's driver task runs"))
    }

    /// Credentials of the periodic consent checks and of [`check`](Self::check) from now on.
    pub fn set_credentials(&self, ufrag: &str, pwd: &str) {
        self.command(Command::SetCredentials(ufrag.to_owned(), pwd.to_owned()));
    }

    /// Turns the periodic consent checks on or off.
    pub fn set_consent(&self, on: bool) {
        self.command(Command::SetConsent(on));
    }

    /// Binds a new local UDP socket and sends from it from now on (checks, consent, RTCP);
    /// the old sockets keep being read. Returns the new local address.
    pub async fn rebind(&self) -> SocketAddr {
        let (reply, addr) = oneshot::channel();
        self.command(Command::Rebind(reply));
        within("the raw client binds a new socket", 5, addr)
            .await
            .expect("the media link's driver task runs")
    }

    /// Sends an SRTCP receiver report (sender SSRC `sender_ssrc`) about `media_ssrc`.
    pub fn send_receiver_report(&self, sender_ssrc: u32, media_ssrc: u32, highest_seq: u32) {
        let block = report_block(media_ssrc, highest_seq);
        self.command(Command::Rtcp(receiver_report(sender_ssrc, &[block])));
    }

    /// Whether the background task still runs (it ends only by panicking while the link
    /// lives: an undecryptable or unexpected datagram, a failed send).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Protects the plain RTP packet `packet` (see [`rtp_packet`]) with the link's SRTP keys
    /// and sends it. Only after [`wait_dtls_connected`](Self::wait_dtls_connected).
    pub fn send_rtp(&self, packet: Vec<u8>) {
        self.command(Command::Rtp(packet));
    }

    /// Sends an SRTCP generic NACK for `seqs` of `media_ssrc`.
    pub fn send_nack(&self, sender_ssrc: u32, media_ssrc: u32, seqs: &[u16]) {
        self.command(Command::Rtcp(nack(sender_ssrc, media_ssrc, seqs)));
    }
}

/// State of a [`MediaLink`]'s background task.
struct Driver {
    server: SocketAddr,
    credentials: (String, String),
    fingerprints: Vec<Fingerprint>,
    certificate: Arc<DtlsCertificate>,
    consent: bool,
    /// Local sockets, oldest first; the last one sends.
    sockets: Vec<Arc<UdpSocket>>,
    readers: Vec<JoinHandle<()>>,
    datagram_tx: mpsc::UnboundedSender<(usize, SocketAddr, Vec<u8>)>,
    /// Checks waiting for an answer: transaction → (password, who wants the answer).
    pending: HashMap<TransactionId, (String, Option<oneshot::Sender<StunAnswer>>)>,
    /// The first nominating check; DTLS starts when it succeeds.
    nomination: Option<TransactionId>,
    dtls: Option<DtlsSession>,
    dtls_tx: watch::Sender<DtlsState>,
    srtp: Option<SrtpSession>,
    rtp_tx: mpsc::UnboundedSender<RtpIn>,
    keyframe_tx: mpsc::UnboundedSender<u32>,
    remb_tx: mpsc::UnboundedSender<(u64, Vec<u32>)>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut datagrams: mpsc::UnboundedReceiver<(usize, SocketAddr, Vec<u8>)>,
    ) {
        let mut consent = tokio::time::interval(CONSENT_INTERVAL);
        consent.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.flush_dtls().await;
            let dtls_deadline = self.dtls.as_ref().and_then(|d| d.poll_timeout());
            let dtls_timer = async {
                match dtls_deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    None => return,
                },
                Some((socket, from, data)) = datagrams.recv() => self.datagram(socket, from, data),
                _ = consent.tick() => {
                    if self.consent && self.dtls.is_some() {
                        let (ufrag, pwd) = self.credentials.clone();
                        self.check(&ufrag, &pwd, false, None).await;
                    }
                }
                _ = dtls_timer => {
                    if let Some(dtls) = self.dtls.as_mut() {
                        dtls.handle_timeout(Instant::now());
                    }
                }
            }
        }
    }

    async fn bind(&mut self) -> SocketAddr {
        let socket = Arc::new(
            UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind a UDP socket"),
        );
        let index = self.sockets.len();
        let (reader_socket, tx) = (socket.clone(), self.datagram_tx.clone());
        self.readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = reader_socket.recv_from(&mut buf).await {
                if tx.send((index, from, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
        }));
        self.sockets.push(socket.clone());
        socket.local_addr().expect("a bound socket has an address")
    }

    // `&mut`: a shared borrow held across the await would need `Driver: Sync`, and
    // `DtlsSession` is only `Send`.
    async fn send(&mut self, datagram: &[u8]) {
        let socket = self.sockets.last().expect("bound at start");
        socket
            .send_to(datagram, self.server)
            .await
            .expect("UDP send");
    }

    async fn check(
        &mut self,
        ufrag: &str,
        pwd: &str,
        nominate: bool,
        reply: Option<oneshot::Sender<StunAnswer>>,
    ) -> TransactionId {
        let (tid, request) = binding_request(ufrag, pwd, nominate);
        self.pending.insert(tid, (pwd.to_owned(), reply));
        self.send(&request).await;
        tid
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Check {
                credentials,
                nominate,
                reply,
            } => {
                let (ufrag, pwd) = credentials.unwrap_or_else(|| self.credentials.clone());
                self.check(&ufrag, &pwd, nominate, Some(reply)).await;
            }
            Command::SetCredentials(ufrag, pwd) => self.credentials = (ufrag, pwd),
            Command::SetConsent(on) => self.consent = on,
            Command::Rebind(reply) => {
                let addr = self.bind().await;
                let _ = reply.send(addr);
            }
            Command::Rtcp(mut packet) => {
                let srtp = self
                    .srtp
                    .as_mut()
                    .expect("RTCP is sent only after DTLS connected");
                let len = packet.len();
                packet.resize(len + srtp.profile().rtcp_overhead(), 0);
                let len = srtp
                    .protect_rtcp(&mut packet, len)
                    .expect("protect our own RTCP");
                packet.truncate(len);
                self.send(&packet).await;
            }
            Command::Rtp(mut packet) => {
                let srtp = self
                    .srtp
                    .as_mut()
                    .expect("RTP is sent only after DTLS connected");
                let len = packet.len();
                packet.resize(len + srtp.profile().rtp_overhead(), 0);
                let len = srtp
                    .protect_rtp(&mut packet, len)
                    .expect("protect our own RTP");
                packet.truncate(len);
                self.send(&packet).await;
            }
        }
    }

    fn datagram(&mut self, socket: usize, from: SocketAddr, mut data: Vec<u8>) {
        assert_eq!(from, self.server, "datagram from an unexpected address");
        match data.first() {
            // RFC 7983: 0..=3 STUN, 20..=63 DTLS, 128..=191 RTP/RTCP.
            Some(0..=3) => self.stun(&data),
            Some(20..=63) => {
                if let Some(dtls) = self.dtls.as_mut() {
                    dtls.handle_read(Instant::now(), &data);
                }
            }
            Some(128..=191) => {
                let Some(srtp) = self.srtp.as_mut() else {
                    return;
                };
                // RFC 5761: payload types 192..=223 are RTCP.
                if (192..=223).contains(&data.get(1).copied().unwrap_or(0)) {
                    // Server reports are unprotected to exercise SRTCP; only keyframe
                    // requests and REMBs are kept.
                    let len = srtp
                        .unprotect_rtcp(&mut data)
                        .expect("the server's SRTCP unprotects with the DTLS keys");
                    for item in parse_compound(&data[..len]).flatten() {
                        match item {
                            RtcpItem::Pli { media_ssrc, .. } => {
                                let _ = self.keyframe_tx.send(media_ssrc);
                            }
                            RtcpItem::Fir { entries, .. } => {
                                for (ssrc, _) in entries {
                                    let _ = self.keyframe_tx.send(ssrc);
                                }
                            }
                            RtcpItem::Remb { bitrate, ssrcs, .. } => {
                                let _ = self.remb_tx.send((bitrate, ssrcs.collect()));
                            }
                            _ => {}
                        }
                    }
                    return;
                }
                let len = srtp
                    .unprotect_rtp(&mut data)
                    .expect("the server's SRTP unprotects with the DTLS keys");
                let packet = &data[..len];
                let info = parse_rtp(packet).expect("the server's RTP parses");
                let _ = self.rtp_tx.send(RtpIn {
                    socket,
                    ssrc: info.ssrc,
                    seq: info.sequence_number,
                    payload: info.payload(packet).to_vec(),
                });
            }
            _ => panic!("unexpected datagram from the server: {data:?}"),
        }
    }

    fn stun(&mut self, data: &[u8]) {
        let tid = stun_transaction_id(data).expect("the server's STUN answer has a STUN header");
        let Some((pwd, reply)) = self.pending.remove(&tid) else {
            panic!("STUN answer to no request of ours: {data:?}");
        };
        let answer = match check_binding_response(data, tid, &pwd) {
            Ok(_) => StunAnswer::Success,
            Err(StunResponseError::ErrorResponse(code)) => StunAnswer::Error(code),
            Err(e) => StunAnswer::Invalid(e.to_string()),
        };
        if self.nomination == Some(tid) {
            self.nomination = None;
            assert_eq!(answer, StunAnswer::Success, "the nominating ICE check");
            let dtls = DtlsSession::new(
                self.certificate.clone(),
                DtlsRole::Client,
                self.fingerprints.clone(),
                Instant::now(),
            )
            .expect("a DTLS client session");
            self.dtls = Some(dtls);
            self.dtls_tx.send_replace(DtlsState::Connecting);
        }
        if let Some(reply) = reply {
            let _ = reply.send(answer);
        }
    }

    async fn flush_dtls(&mut self) {
        let Some(dtls) = self.dtls.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        while let Some(datagram) = dtls.poll_transmit() {
            out.push(datagram);
        }
        while let Some(event) = dtls.poll_event() {
            match event {
                DtlsEvent::Connected(keys) => {
                    self.srtp = Some(SrtpSession::new(&keys).expect("SRTP from the DTLS keys"));
                }
                DtlsEvent::Failed(reason) => eprintln!("raw client DTLS failed: {reason}"),
                DtlsEvent::Closed | DtlsEvent::ApplicationData(_) => {}
            }
        }
        let state = dtls.state();
        self.dtls_tx.send_if_modified(|s| {
            let changed = *s != state;
            *s = state;
            changed
        });
        for datagram in out {
            self.send(&datagram).await;
        }
    }
}

/// A plain RTP packet (version 2, no CSRC, no extension) for [`MediaLink::send_rtp`].
pub fn rtp_packet(
    payload_type: u8,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    marker: bool,
    payload: &[u8],
) -> Vec<u8> {
    RtpPacket::new(payload_type, seq, timestamp, ssrc)
        .with_marker(marker)
        .with_payload(payload)
        .build()
}
