//! SimClient against a mini server made of ferrosoup-rtc's pieces (ICE-lite, a DTLS
//! session, SRTP), through simulated links: ICE + DTLS + SRTP both ways, with loss.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrosoup_rtc::demux::{PacketKind, classify};
use ferrosoup_rtc::dtls::{DtlsCertificate, DtlsEvent, DtlsRole, DtlsSession, DtlsState};
use ferrosoup_rtc::ice::{IceCredentials, IceLiteServer, IceState, StunOutcome};
use ferrosoup_rtc::rtcp::{RtcpItem, parse_compound};
use ferrosoup_rtc::srtp::SrtpSession;
use ferrosoup_testkit::client::{SimClient, SimClientConfig};
use ferrosoup_testkit::packets::stun::StunResponseError;
use ferrosoup_testkit::packets::{RtpPacket, nack, opus_payload, pli, vp8_payload};
use ferrosoup_testkit::{Datagram, Endpoint, GilbertElliott, LinkConfig, Sim};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn server_addr() -> SocketAddr {
    "192.0.2.1:40000".parse().expect("address")
}

fn client_addr() -> SocketAddr {
    "198.51.100.7:50000".parse().expect("address")
}

fn certificate() -> Arc<DtlsCertificate> {
    Arc::new(DtlsCertificate::generate().expect("certificate"))
}

/// The server side of one transport, from ferrosoup-rtc's sans-IO pieces: what the engine
/// does for one WebRTC transport, without the forwarding.
struct MiniServer {
    addr: SocketAddr,
    ice: IceLiteServer,
    cert: Arc<DtlsCertificate>,
    /// Our DTLS role; as client the session starts when ICE completes.
    role: DtlsRole,
    client_fingerprint: Option<ferrosoup_rtc::dtls::Fingerprint>,
    dtls: Option<DtlsSession>,
    srtp: Option<SrtpSession>,
    out: VecDeque<Datagram>,
    rtp: Vec<Vec<u8>>,
    rtcp: Vec<Vec<u8>>,
    srtp_failures: u64,
}

impl MiniServer {
    fn new(now: Instant, role: DtlsRole) -> Self {
        let credentials = IceCredentials {
            ufrag: "miniserverufrag1".to_owned(),
            pwd: "miniserverpassword0123456789abcd".to_owned(),
        };
        Self {
            addr: server_addr(),
            ice: IceLiteServer::new(credentials, now),
            cert: certificate(),
            role,
            client_fingerprint: None,
            dtls: None,
            srtp: None,
            out: VecDeque::new(),
            rtp: Vec::new(),
            rtcp: Vec::new(),
            srtp_failures: 0,
        }
    }

    /// The client's config from this server's "signaling" answer.
    fn client_config(&self, certificate: Arc<DtlsCertificate>) -> SimClientConfig {
        let credentials = self.ice.credentials();
        SimClientConfig::new(
            client_addr(),
            self.addr,
            &credentials.ufrag,
            &credentials.pwd,
            self.cert.fingerprints().to_vec(),
            certificate,
        )
    }

    /// The "connectTransport" call: the client's fingerprint.
    fn connect(&mut self, now: Instant, fingerprint: ferrosoup_rtc::dtls::Fingerprint) {
        self.client_fingerprint = Some(fingerprint.clone());
        if self.role == DtlsRole::Server {
            self.dtls = Some(
                DtlsSession::new(self.cert.clone(), DtlsRole::Server, vec![fingerprint], now)
                    .expect("server session"),
            );
        }
    }

    fn pump(&mut self) {
        let Some(dtls) = self.dtls.as_mut() else {
            return;
        };
        let Some(to) = self.ice.selected_tuple() else {
            return;
        };
        while let Some(d) = dtls.poll_transmit() {
            self.out.push_back(Datagram::new(self.addr, to, d.to_vec()));
        }
        while let Some(event) = dtls.poll_event() {
            if let DtlsEvent::Connected(keys) = event {
                self.srtp = Some(SrtpSession::new(&keys).expect("srtp"));
            }
        }
    }

    fn send_protected(&mut self, plain: &[u8], rtcp: bool) {
        let srtp = self.srtp.as_mut().expect("server connected");
        let to = self.ice.selected_tuple().expect("a selected tuple");
        let mut buf = plain.to_vec();
        buf.resize(plain.len() + srtp.profile().rtcp_overhead(), 0);
        let len = if rtcp {
            srtp.protect_rtcp(&mut buf, plain.len())
        } else {
            srtp.protect_rtp(&mut buf, plain.len())
        }
        .expect("protect");
        buf.truncate(len);
        self.out.push_back(Datagram::new(self.addr, to, buf));
    }
}

impl Endpoint for MiniServer {
    fn owns(&self, addr: SocketAddr) -> bool {
        addr == self.addr
    }

    fn receive(&mut self, now: Instant, d: Datagram) {
        match classify(&d.data) {
            PacketKind::Stun => {
                let mut response = Vec::new();
                if self.ice.handle_stun(now, d.from, &d.data, &mut response) == StunOutcome::Respond
                {
                    self.out
                        .push_back(Datagram::new(self.addr, d.from, response));
                }
                if self.role == DtlsRole::Client
                    && self.dtls.is_none()
                    && self.ice.state() == IceState::Completed
                {
                    let fingerprint = self.client_fingerprint.clone().expect("connected");
                    self.dtls = Some(
                        DtlsSession::new(
                            self.cert.clone(),
                            DtlsRole::Client,
                            vec![fingerprint],
                            now,
                        )
                        .expect("client session"),
                    );
                }
                self.pump();
            }
            _ if !self.ice.is_valid_tuple(d.from) => {}
            PacketKind::Dtls => {
                if let Some(dtls) = self.dtls.as_mut() {
                    dtls.handle_read(now, &d.data);
                }
                self.pump();
            }
            kind @ (PacketKind::Rtp | PacketKind::Rtcp) => {
                let Some(srtp) = self.srtp.as_mut() else {
                    return;
                };
                let mut packet = d.data;
                let result = if kind == PacketKind::Rtcp {
                    srtp.unprotect_rtcp(&mut packet)
                } else {
                    srtp.unprotect_rtp(&mut packet)
                };
                match result {
                    Ok(len) => {
                        packet.truncate(len);
                        if kind == PacketKind::Rtcp {
                            self.rtcp.push(packet);
                        } else {
                            self.rtp.push(packet);
                        }
                    }
                    Err(_) => self.srtp_failures += 1,
                }
            }
            PacketKind::Unknown => {}
        }
    }

    fn timeout(&mut self, now: Instant) {
        self.ice.handle_timeout(now);
        if let Some(dtls) = self.dtls.as_mut() {
            dtls.handle_timeout(now);
        }
        self.pump();
    }

    fn transmit(&mut self) -> Option<Datagram> {
        self.out.pop_front()
    }

    fn next_timeout(&self) -> Option<Instant> {
        [
            self.ice.poll_timeout(),
            self.dtls.as_ref().and_then(DtlsSession::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// A client and a server set up as signaling would, on `link` both ways.
fn setup(link: LinkConfig, role: DtlsRole) -> (Sim, SimClient, MiniServer) {
    let mut sim = Sim::new(LinkConfig::default());
    sim.net.set_path(client_addr(), server_addr(), link);
    let now = sim.now();
    let mut server = MiniServer::new(now, role);
    let config = server
        .client_config(certificate())
        .with_dtls_role(match role {
            DtlsRole::Server => DtlsRole::Client,
            DtlsRole::Client => DtlsRole::Server,
        });
    // Consent checks every 2 s, as browsers send them.
    let client = SimClient::new(now, config.with_consent_interval(Some(2 * SEC))).expect("client");
    server.connect(now, client.fingerprint());
    (sim, client, server)
}

/// Steps until both sides have SRTP, or fails after `limit` of simulated time.
fn connect(sim: &mut Sim, client: &mut SimClient, server: &mut MiniServer, limit: Duration) {
    let deadline = sim.now() + limit;
    loop {
        let more = sim.step(&mut [client, server], deadline);
        if client.is_connected() && server.srtp.is_some() {
            return;
        }
        assert!(
            more,
            "not connected after {limit:?}: client {:?} {:?}, server ice {:?}",
            client.dtls_state(),
            client.stats(),
            server.ice.state()
        );
    }
}

/// What [`exchange`] sent and what arrived.
struct Exchanged {
    /// Plain RTP the client sent.
    sent_up: Vec<Vec<u8>>,
    /// Plain RTP the server received.
    got_up: Vec<Vec<u8>>,
    /// Plain RTP the client received.
    got_down: Vec<Vec<u8>>,
}

/// Sends `n` packets each way (Opus up, VP8 down), 20 ms apart, and waits a second.
fn exchange(sim: &mut Sim, client: &mut SimClient, server: &mut MiniServer, n: u16) -> Exchanged {
    let mut sent_up = Vec::new();
    server.rtp.clear();
    for seq in 0..n {
        let up = RtpPacket::new(111, seq, u32::from(seq) * 960, 0x1111)
            .with_audio_level(1, true, 30)
            .with_payload(opus_payload(80))
            .build();
        client.send_rtp(sim.now(), &up).expect("client sends");
        sent_up.push(up);
        let down = RtpPacket::new(96, seq, u32::from(seq) * 3000, 0x2222)
            .with_marker(true)
            .with_payload(vp8_payload(seq == 0, Some(seq), 300))
            .build();
        server.send_protected(&down, false);
        let until = sim.now() + 20 * MS;
        sim.run_until(&mut [client, server], until);
    }
    sim.run_for(&mut [client, server], SEC);
    Exchanged {
        sent_up,
        got_up: server.rtp.clone(),
        got_down: std::iter::from_fn(|| client.poll_rtp()).collect(),
    }
}

#[test]
fn ice_dtls_srtp_over_a_perfect_link() {
    let (mut sim, mut client, mut server) = setup(LinkConfig::default(), DtlsRole::Server);
    assert!(!client.is_connected());
    let start = sim.now();
    connect(&mut sim, &mut client, &mut server, SEC);
    // Zero-delay links: everything happens at the start instant.
    assert_eq!(sim.now(), start);
    assert!(client.is_ice_connected());
    assert_eq!(client.mapped_address(), Some(client_addr()));
    assert_eq!(client.dtls_state(), Some(DtlsState::Connected));
    assert_eq!(server.ice.state(), IceState::Completed);
    assert_eq!(server.ice.selected_tuple(), Some(client_addr()));
    let nomination = client.poll_stun_answer().expect("the nomination's answer");
    assert!(nomination.nominating);
    assert_eq!(nomination.result, Ok(client_addr()));

    let Exchanged {
        sent_up,
        got_up,
        got_down,
    } = exchange(&mut sim, &mut client, &mut server, 50);
    assert_eq!(got_up, sent_up);
    assert_eq!(got_down.len(), 50);
    let info = ferrosoup_rtc::rtp::parse_rtp(&got_down[0]).expect("parses");
    assert!(ferrosoup_rtc::rtp::is_keyframe(
        ferrosoup_rtc::rtp::VideoCodec::Vp8,
        info.payload(&got_down[0])
    ));

    // RTCP both ways.
    client
        .send_rtcp(sim.now(), &nack(0x1111, 0x2222, &[3, 4]))
        .expect("nack");
    server.send_protected(&pli(0x2222, 0x1111), true);
    sim.run_for(&mut [&mut client, &mut server], 10 * MS);
    assert_eq!(server.rtcp, [nack(0x1111, 0x2222, &[3, 4])]);
    let rtcp = client.poll_rtcp().expect("the PLI");
    assert!(matches!(
        parse_compound(&rtcp).next(),
        Some(Ok(RtcpItem::Pli {
            media_ssrc: 0x1111,
            ..
        }))
    ));
    let stats = client.stats();
    assert_eq!((stats.rtp_sent, stats.rtp_received), (50, 50));
    assert_eq!(
        (stats.srtp_failures, stats.dropped, server.srtp_failures),
        (0, 0, 0)
    );
}

#[test]
fn handshake_survives_loss_and_media_flows_both_ways() {
    let link = LinkConfig::default()
        .with_delay(25 * MS)
        .with_jitter(10 * MS)
        .with_loss(GilbertElliott::random(0.2))
        .with_seed(11);
    let (mut sim, mut client, mut server) = setup(link, DtlsRole::Server);
    let start = sim.now();
    connect(&mut sim, &mut client, &mut server, 60 * SEC);
    let took = sim.now() - start;
    // At least two round trips (check, then DTLS) of 50-70 ms.
    assert!(took >= 100 * MS, "{took:?}");
    // This seed loses the first nominating check and a DTLS flight: retransmissions
    // (STUN on the client's timer, DTLS on both sides' timers) carried the handshake.
    let lost = |from, to| sim.net.link(from, to).expect("used").stats().lost;
    assert!(lost(client_addr(), server_addr()) + lost(server_addr(), client_addr()) >= 2);
    assert!(client.stats().stun_requests >= 2);

    let Exchanged {
        sent_up,
        got_up,
        got_down,
    } = exchange(&mut sim, &mut client, &mut server, 500);
    for (count, what) in [(got_up.len(), "up"), (got_down.len(), "down")] {
        assert!((350..450).contains(&count), "{what}: {count} of 500");
    }
    // What arrives is intact and in order (jitter does not reorder).
    let mut at = 0;
    for packet in &got_up {
        let i = sent_up[at..]
            .iter()
            .position(|p| p == packet)
            .expect("a sent packet, after the previous one");
        at += i + 1;
    }
    assert_eq!(client.stats().srtp_failures, 0);
    assert_eq!(server.srtp_failures, 0);
}

#[test]
fn client_as_dtls_server() {
    let link = LinkConfig::random_loss(0.1)
        .with_delay(10 * MS)
        .with_seed(3);
    let (mut sim, mut client, mut server) = setup(link, DtlsRole::Client);
    assert_eq!(client.dtls_role(), DtlsRole::Server);
    connect(&mut sim, &mut client, &mut server, 60 * SEC);
    let e = exchange(&mut sim, &mut client, &mut server, 100);
    assert!(e.got_up.len() > 75 && e.got_down.len() > 75);
}

#[test]
fn consent_checks_keep_the_server_connected_until_they_stop() {
    let (mut sim, mut client, mut server) =
        setup(LinkConfig::default().with_delay(5 * MS), DtlsRole::Server);
    server.ice.set_consent_timeout(3 * SEC);
    connect(&mut sim, &mut client, &mut server, SEC);
    while client.poll_stun_answer().is_some() {}

    client.set_consent_interval(Some(SEC));
    // Checks at +1 s ... +10 s, the last one answered 10 ms later.
    sim.run_for(&mut [&mut client, &mut server], 10 * SEC + 10 * MS);
    assert_eq!(server.ice.state(), IceState::Completed);
    let answers: Vec<_> = std::iter::from_fn(|| client.poll_stun_answer()).collect();
    assert_eq!(answers.len(), 10);
    assert!(
        answers
            .iter()
            .all(|a| !a.nominating && a.result == Ok(client_addr()))
    );

    // One manual check, answered.
    let id = client.send_consent_check(sim.now());
    sim.run_for(&mut [&mut client, &mut server], 100 * MS);
    assert_eq!(
        client
            .poll_stun_answer()
            .map(|a| (a.transaction_id, a.result)),
        Some((id, Ok(client_addr())))
    );

    // The client goes quiet: consent expires 3 s after the last check.
    client.set_consent_interval(None);
    sim.run_for(&mut [&mut client, &mut server], 2 * SEC);
    assert_eq!(server.ice.state(), IceState::Completed);
    sim.run_for(&mut [&mut client, &mut server], 2 * SEC);
    assert_eq!(server.ice.state(), IceState::Disconnected);

    // Wrong credentials get a 401.
    client.set_server_credentials("miniserverufrag1", "not the password");
    client.send_consent_check(sim.now());
    sim.run_for(&mut [&mut client, &mut server], 100 * MS);
    assert_eq!(
        client.poll_stun_answer().map(|a| a.result),
        Some(Err(StunResponseError::ErrorResponse(401)))
    );
}

#[test]
fn bad_srtp_is_counted_not_delivered() {
    let (mut sim, mut client, mut server) = setup(LinkConfig::default(), DtlsRole::Server);
    connect(&mut sim, &mut client, &mut server, SEC);
    let plain = RtpPacket::new(96, 1, 2, 3)
        .with_payload(vec![0; 40])
        .build();
    // Unprotected RTP fails authentication; so does a protected one with a flipped bit.
    server
        .out
        .push_back(Datagram::new(server_addr(), client_addr(), plain.clone()));
    server.send_protected(&plain, false);
    let mut tampered = server.out.pop_back().expect("queued");
    let last = tampered.data.len() - 1;
    tampered.data[last] ^= 1;
    server.out.push_back(tampered);
    // A good one, then the same again: a replay.
    server.send_protected(&plain, false);
    let good = server.out.back().cloned().expect("queued");
    server.out.push_back(good);
    // From a stranger: dropped before SRTP.
    server.out.push_back(Datagram::new(
        "203.0.113.1:1".parse().expect("address"),
        client_addr(),
        plain.clone(),
    ));
    sim.run_for(&mut [&mut client, &mut server], 10 * MS);
    let stats = client.stats();
    assert_eq!(
        (
            stats.srtp_failures,
            stats.srtp_replays,
            stats.rtp_received,
            stats.dropped
        ),
        (2, 1, 1, 1)
    );
    assert_eq!(client.poll_rtp(), Some(plain));
    assert_eq!(client.poll_rtp(), None);
}

#[test]
fn wrong_server_fingerprint_fails_dtls() {
    let mut sim = Sim::new(LinkConfig::default());
    let now = sim.now();
    let mut server = MiniServer::new(now, DtlsRole::Server);
    let mut config = server.client_config(certificate());
    config.server_fingerprints = certificate().fingerprints().to_vec();
    let mut client = SimClient::new(now, config).expect("client");
    server.connect(now, client.fingerprint());
    sim.run_for(&mut [&mut client, &mut server], 5 * SEC);
    assert!(client.is_ice_connected());
    assert!(!client.is_connected());
    assert_eq!(client.dtls_state(), Some(DtlsState::Failed));
    assert_eq!(client.dtls_failure(), Some("fingerprint mismatch"));
    assert!(client.send_rtp(sim.now(), &[0x80; 20]).is_err());
}

#[test]
fn nomination_is_retransmitted_until_answered() {
    let mut sim = Sim::new(LinkConfig::default());
    let now = sim.now();
    let server = MiniServer::new(now, DtlsRole::Server);
    let mut client = SimClient::new(now, server.client_config(certificate())).expect("client");
    // No server at all: the check goes out at 0, then after 250, 500, 1000, 2000, 2000 ms.
    sim.run_for(&mut [&mut client], 5750 * MS);
    assert_eq!(client.stats().stun_requests, 6);
    assert_eq!(sim.net.unroutable(), 6);
    assert!(!client.is_ice_connected());
}
