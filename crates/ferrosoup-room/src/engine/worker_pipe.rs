//! Pipes between workers in the engine (see [`crate::worker_pipe`]): each side is a plain
//! transport without SRTP whose socket is a [`PipeEnd`], connected from the start to the
//! other side's address; its pipe consumer (producer's side) or pipe producer (other
//! side) is made as for a pipe between nodes. A side closes when the other one does, or
//! once it has neither producer nor consumer left.

use std::time::Instant;

use ferrosoup_rtc::ice::{IceCredentials, IceLiteServer};
use ferrosoup_rtc::srtp::SrtpSession;

use super::Engine;
use crate::arena::TransportKey;
use crate::error::RoomError;
use crate::events::MediaEvent;
use crate::ids::{RouterId, TransportId};
use crate::plain::{LocalSocket, PlainPath};
use crate::transmit::Transmit;
use crate::transport::Transport;
use crate::worker_pipe::PipeEnd;

impl Engine {
    /// Creates one side of a pipe between workers in a router: a plain transport on `end`,
    /// connected to the other side. Returns its id.
    pub fn create_worker_pipe_transport(
        &mut self,
        router_id: RouterId,
        end: PipeEnd,
        now: Instant,
        out: &mut dyn Transmit,
    ) -> Result<TransportId, RoomError> {
        if !self.routers.contains_key(&router_id) {
            return Err(RoomError::NotFound("router"));
        }
        let (socket, remote) = out
            .attach_pipe(end)
            .map_err(|e| RoomError::Internal(format!("pipe between workers: {e}")))?;
        let id = TransportId::new();
        // Never asked: no ufrag of it is registered, no check reaches it.
        let ice = IceLiteServer::new(IceCredentials::generate(), now);
        let mut transport = Transport::new(id, router_id, ice, now);
        // The packets never leave the process.
        transport.srtp = Some(SrtpSession::unprotected());
        transport.plain = Some(PlainPath {
            rtp_socket: socket,
            rtcp_socket: None,
            comedia: false,
            remote: None,
            remote_rtcp: None,
            local_key: None,
            connected: false,
        });
        let key = self.transports.insert(transport);
        if let Some(router) = self.routers.get_mut(&router_id) {
            router.transports.push(key);
        }
        self.transport_ids.insert(id, key);
        self.by_socket.insert(socket, (key, false));
        self.set_plain_remote(key, false, remote, out);
        self.check_plain_connected(key, now, out);
        self.objects_changed();
        Ok(id)
    }

    /// The other side of the pipe `socket` names closed: closes this side's transport
    /// and what is on it, and reports it ([`MediaEvent::WorkerPipeClosed`]).
    pub fn close_worker_pipe(&mut self, socket: LocalSocket, now: Instant, out: &mut dyn Transmit) {
        let Some(&(key, _)) = self.by_socket.get(&socket) else {
            out.close_socket(socket);
            return;
        };
        let (router_id, transport_id) = {
            let t = &self.transports[key];
            (t.router_id, t.id)
        };
        let closed = self.remove_pipe_transport(router_id, key, now, out);
        tracing::debug!(transport = %transport_id, "pipe between workers closed by its other side");
        self.emit(MediaEvent::WorkerPipeClosed {
            router_id,
            transport_id,
            closed,
        });
    }

    /// Notes a pipe transport between workers that lost its producer or consumer.
    pub(super) fn note_if_pipe(&mut self, key: TransportKey) {
        if let Some(t) = self.transports.get(key)
            && t.is_worker_pipe()
        {
            self.idle_pipes.push(t.id);
        }
    }

    /// Closes the pipe transports between workers noted as idle that still carry nothing
    /// (their other side follows when it sees the pipe closed).
    pub(super) fn close_idle_pipes(&mut self, now: Instant, out: &mut dyn Transmit) {
        for id in std::mem::take(&mut self.idle_pipes) {
            let Some(&key) = self.transport_ids.get(&id) else {
                continue;
            };
            let t = &self.transports[key];
            if t.producers.is_empty() && t.consumers.is_empty() {
                let router_id = t.router_id;
                self.remove_pipe_transport(router_id, key, now, out);
            }
        }
    }

    fn remove_pipe_transport(
        &mut self,
        router_id: RouterId,
        key: TransportKey,
        now: Instant,
        out: &mut dyn Transmit,
    ) -> super::Closed {
        if let Some(r) = self.routers.get_mut(&router_id) {
            r.transports.retain(|&t| t != key);
        }
        let closed = self.remove_transport(key, now, out);
        self.objects_changed();
        closed
    }
}
