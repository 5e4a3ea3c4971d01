//! Plain RTP transports in the engine: created with sockets of their own (the worker opens
//! them through [`Transmit::open_socket`]), connected to a remote address or learning it
//! from the first packet (`comedia`), with SRTP keys exchanged in the create answer and
//! `connect`, or none. Their datagrams enter at [`Engine::handle_plain_datagram`] and then
//! take the same RTP/RTCP path as a WebRTC transport's (receive.rs).

use std::net::SocketAddr;
use std::time::Instant;

use ferrosoup_rtc::demux::{PacketKind, classify};
use ferrosoup_rtc::dtls::SrtpKeys;
use ferrosoup_rtc::ice::{IceCredentials, IceLiteServer};
use ferrosoup_rtc::srtp::SrtpSession;

use super::Engine;
use crate::arena::TransportKey;
use crate::error::RoomError;
use crate::ids::{RouterId, TransportId};
use crate::plain::{LocalSocket, PlainOptions, PlainPath, PlainTransportInfo, SrtpMasterKey};
use crate::timers::Timer;
use crate::transmit::Transmit;
use crate::transport::Transport;

/// Where `connect` points a plain transport.
#[derive(Clone, Debug, Default)]
pub struct PlainRemote {
    /// Remote RTP address (`None` with `comedia`: learned from the first packet).
    pub rtp: Option<SocketAddr>,
    /// Remote RTCP address without `rtcpMux` (`None`: learned from the first RTCP packet
    /// with `comedia`, else the RTP port + 1 as RTP/AVP says).
    pub rtcp: Option<SocketAddr>,
    /// The remote side's SRTP key, required when SRTP is enabled.
    pub srtp: Option<SrtpMasterKey>,
}

impl Engine {
    /// Creates a plain transport in a router, with its own RTP socket and, without
    /// `rtcp_mux`, an RTCP socket.
    pub fn create_plain_transport(
        &mut self,
        router_id: RouterId,
        options: PlainOptions,
        now: Instant,
        out: &mut dyn Transmit,
    ) -> Result<PlainTransportInfo, RoomError> {
        if !self.routers.contains_key(&router_id) {
            return Err(RoomError::NotFound("router"));
        }
        let open = |out: &mut dyn Transmit| {
            out.open_socket()
                .map_err(|e| RoomError::Internal(format!("plain transport socket: {e}")))
        };
        let (rtp_socket, local) = open(out)?;
        let rtcp = if options.rtcp_mux {
            None
        } else {
            match open(out) {
                Ok(s) => Some(s),
                Err(e) => {
                    out.close_socket(rtp_socket);
                    return Err(e);
                }
            }
        };
        let local_key = options.srtp.map(SrtpMasterKey::generate);
        let path = PlainPath {
            rtp_socket,
            rtcp_socket: rtcp.map(|(s, _)| s),
            comedia: options.comedia,
            remote: None,
            remote_rtcp: None,
            local_key: local_key.clone(),
            connected: false,
        };
        let (id, _) = self.insert_plain_transport(router_id, path, options.srtp.is_some(), now);
        Ok(PlainTransportInfo {
            id,
            local,
            local_rtcp: rtcp.map(|(_, a)| a),
            srtp: local_key,
        })
    }

    /// Points a plain transport at its remote (`connect`): addresses unless `comedia`, and
    /// the remote SRTP key when SRTP is enabled. Once only.
    pub fn connect_plain_transport(
        &mut self,
        router_id: RouterId,
        id: TransportId,
        remote: PlainRemote,
        now: Instant,
        out: &mut dyn Transmit,
    ) -> Result<(), RoomError> {
        let key = self.transport_key(router_id, id)?;
        let t = &self.transports[key];
        let plain = t
            .plain
            .as_ref()
            .ok_or_else(|| RoomError::InvalidState("not a plain transport".into()))?;
        if plain.remote.is_some() && !plain.comedia || plain.connected {
            return Err(RoomError::InvalidState(
                "transport already connected".into(),
            ));
        }
        let srtp = match (&plain.local_key, remote.srtp) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(RoomError::Invalid(
                    "srtpParameters: the transport was created without SRTP".into(),
                ));
            }
            (Some(_), None) => {
                return Err(RoomError::Invalid(
                    "srtpParameters: required (the transport uses SRTP)".into(),
                ));
            }
            (Some(local), Some(theirs)) => {
                if theirs.profile != local.profile {
                    return Err(RoomError::Invalid(
                        "srtpParameters.cryptoSuite: differs from the transport's".into(),
                    ));
                }
                let split = local.profile.master_key_len();
                let keys = SrtpKeys {
                    profile: local.profile,
                    local_master_key: local.key_and_salt[..split].to_vec(),
                    local_master_salt: local.key_and_salt[split..].to_vec(),
                    remote_master_key: theirs.key_and_salt[..split.min(theirs.key_and_salt.len())]
                        .to_vec(),
                    remote_master_salt: theirs.key_and_salt[split.min(theirs.key_and_salt.len())..]
                        .to_vec(),
                };
                Some(
                    SrtpSession::new(&keys).map_err(|e| {
                        RoomError::Invalid(format!("srtpParameters.keyBase64: {e}"))
                    })?,
                )
            }
        };
        let rtcp_socket = plain.rtcp_socket;
        let rtp_to = if plain.comedia { None } else { remote.rtp };
        if !plain.comedia && rtp_to.is_none() {
            return Err(RoomError::Invalid(
                "ip, port: required without comedia".into(),
            ));
        }
        let rtcp_to = match (rtcp_socket, rtp_to) {
            (Some(_), Some(rtp)) => Some(
                remote
                    .rtcp
                    .unwrap_or_else(|| SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1))),
            ),
            _ => None,
        };
        for addr in rtp_to.iter().chain(rtcp_to.iter()) {
            if self.plain_remotes.contains_key(addr) || self.by_tuple.contains_key(addr) {
                return Err(RoomError::InvalidState(format!(
                    "remote address {addr} already used by another transport"
                )));
            }
        }
        let t = &mut self.transports[key];
        if let Some(srtp) = srtp {
            t.srtp = Some(srtp);
        }
        if let Some(to) = rtp_to {
            self.set_plain_remote(key, false, to, out);
        }
        if let Some(to) = rtcp_to {
            self.set_plain_remote(key, true, to, out);
        }
        self.check_plain_connected(key, now, out);
        Ok(())
    }

    /// Records a plain transport's remote RTP (or RTCP) address and routes it via its
    /// socket.
    pub(super) fn set_plain_remote(
        &mut self,
        key: TransportKey,
        rtcp: bool,
        to: SocketAddr,
        out: &mut dyn Transmit,
    ) {
        let Some(plain) = self.transports[key].plain.as_mut() else {
            return;
        };
        let socket = match (rtcp, plain.rtcp_socket) {
            (true, Some(socket)) => {
                plain.remote_rtcp = Some(to);
                socket
            }
            _ => {
                plain.remote = Some(to);
                plain.rtp_socket
            }
        };
        self.plain_remotes.insert(to, key);
        out.route_via(to, socket);
    }

    /// Starts the transport's consumers and reports once SRTP is ready and the remote RTP
    /// address known.
    pub(super) fn check_plain_connected(
        &mut self,
        key: TransportKey,
        now: Instant,
        out: &mut dyn Transmit,
    ) {
        let t = &mut self.transports[key];
        let ready = t.srtp.is_some();
        let Some(plain) = t.plain.as_mut() else {
            return;
        };
        if plain.connected || !ready || plain.remote.is_none() {
            return;
        }
        plain.connected = true;
        tracing::debug!(transport = %t.id, remote = ?plain.remote, "plain transport connected");
        self.timers.arm(Timer::Reports(key), now);
        self.on_transport_can_send(key, true, now, out);
    }

    /// Handles one datagram that arrived on a plain transport's socket `socket` from `from`.
    pub fn handle_plain_datagram(
        &mut self,
        now: Instant,
        socket: LocalSocket,
        from: SocketAddr,
        data: &mut [u8],
        out: &mut dyn Transmit,
    ) {
        self.counters.datagrams_in += 1;
        self.counters.bytes_in += data.len() as u64;
        let Some(&(key, rtcp_socket)) = self.by_socket.get(&socket) else {
            self.counters.dropped_unknown_tuple += 1;
            return;
        };
        let pipe_data = data.first() == Some(&super::worker_pipe::DATA_CHUNK)
            && self.transports[key].is_worker_pipe();
        let kind = classify(data);
        if !pipe_data && !matches!(kind, PacketKind::Rtp | PacketKind::Rtcp) {
            self.counters.dropped_malformed += 1;
            return;
        }
        let Some(plain) = self.transports[key].plain.as_ref() else {
            return;
        };
        let expected = if rtcp_socket {
            plain.remote_rtcp
        } else {
            plain.remote
        };
        match expected {
            Some(addr) if addr == from => {}
            // comedia: the first packet names the remote (an address another transport
            // uses is not taken).
            None if plain.comedia
                && !self.plain_remotes.contains_key(&from)
                && !self.by_tuple.contains_key(&from) =>
            {
                self.set_plain_remote(key, rtcp_socket, from, out);
                self.check_plain_connected(key, now, out);
            }
            _ => {
                self.counters.dropped_unknown_tuple += 1;
                return;
            }
        }
        if pipe_data {
            self.on_pipe_data(key, data, now, out);
            return;
        }
        match kind {
            PacketKind::Rtp => {
                if let Err(reason) = self.handle_rtp(now, key, from, data, out) {
                    self.counters.rtp_dropped.add(reason);
                }
            }
            _ => self.handle_rtcp(now, key, from, data, out),
        }
    }

    /// Adds a transport of `router_id` on `path`'s sockets (a plain transport or a pipe
    /// end), without SRTP unless `protected`; returns its id and key. ICE never reaches
    /// it: its credentials are never given out.
    pub(super) fn insert_plain_transport(
        &mut self,
        router_id: RouterId,
        path: PlainPath,
        protected: bool,
        now: Instant,
    ) -> (TransportId, TransportKey) {
        let id = TransportId::new();
        let ice = IceLiteServer::new(IceCredentials::generate(), now);
        let mut transport = Transport::new(id, router_id, ice, now);
        if !protected {
            transport.srtp = Some(SrtpSession::unprotected());
        }
        let (rtp_socket, rtcp_socket) = (path.rtp_socket, path.rtcp_socket);
        transport.plain = Some(path);
        let key = self.transports.insert(transport);
        if let Some(router) = self.routers.get_mut(&router_id) {
            router.transports.push(key);
        }
        self.transport_ids.insert(id, key);
        self.by_socket.insert(rtp_socket, (key, false));
        if let Some(socket) = rtcp_socket {
            self.by_socket.insert(socket, (key, true));
        }
        self.objects_changed();
        (id, key)
    }

    /// Closes a plain transport's sockets and forgets its remote addresses (part of
    /// closing the transport).
    pub(super) fn close_plain_path(&mut self, plain: &PlainPath, out: &mut dyn Transmit) {
        for socket in std::iter::once(plain.rtp_socket).chain(plain.rtcp_socket) {
            self.by_socket.remove(&socket);
            out.close_socket(socket);
        }
        for addr in plain.remote.iter().chain(plain.remote_rtcp.iter()) {
            self.plain_remotes.remove(addr);
            out.tuple_removed(*addr);
        }
    }
}
