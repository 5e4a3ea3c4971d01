//! The worker loop's side of plain transports: the UDP sockets it opens for them (each
//! bound on the worker's listen IP to a free port of the RTC port range, registered in the
//! worker's poll), which remote address each sends to, and which have datagrams waiting.
//! The engine names the sockets by [`LocalSocket`] and never touches them.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::plain::LocalSocket;
use crate::udp::RecvBatch;

/// Sockets of one worker's plain transports.
pub struct PlainSockets {
    registry: Registry,
    ip: IpAddr,
    ports: (u16, u16),
    /// Where the next search for a free port starts.
    next_port: u16,
    first_token: usize,
    /// Slot → socket (owned); `None` slots are free.
    slots: Vec<Option<UdpSocket>>,
    /// Remote address → the slot whose socket reaches it.
    routes: HashMap<SocketAddr, usize>,
    /// Slots with datagrams to read (readiness is edge-triggered).
    readable: VecDeque<usize>,
    /// Datagrams a plain socket could not send (kernel buffer full, unreachable).
    pub send_errors: usize,
}

impl PlainSockets {
    /// Sockets on `ip` in `ports` (inclusive), registered in `registry` with tokens from
    /// `first_token` on.
    pub fn new(registry: Registry, ip: IpAddr, ports: (u16, u16), first_token: usize) -> Self {
        Self {
            registry,
            ip,
            ports,
            next_port: ports.0,
            first_token,
            slots: Vec::new(),
            routes: HashMap::new(),
            readable: VecDeque::new(),
            send_errors: 0,
        }
    }

    /// Binds a new socket to the next free port of the range and registers it.
    pub fn open(&mut self) -> io::Result<(LocalSocket, SocketAddr)> {
        let (min, max) = self.ports;
        let count = u32::from(max - min) + 1;
        for _ in 0..count {
            let port = self.next_port;
            self.next_port = if port >= max { min } else { port + 1 };
            let Ok(socket) = crate::udp::bind(self.ip, port) else {
                continue;
            };
            socket.set_nonblocking(true)?;
            let addr = socket.local_addr()?;
            let slot = match self.slots.iter().position(Option::is_none) {
                Some(free) => free,
                None => {
                    self.slots.push(None);
                    self.slots.len() - 1
                }
            };
            self.registry.register(
                &mut SourceFd(&socket.as_raw_fd()),
                Token(self.first_token + slot),
                Interest::READABLE,
            )?;
            self.slots[slot] = Some(socket);
            return Ok((LocalSocket(slot), addr));
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("no free UDP port in {min}..={max}"),
        ))
    }

    /// Closes a socket and forgets the addresses routed through it.
    pub fn close(&mut self, socket: LocalSocket) {
        if let Some(s) = self.slots.get_mut(socket.0).and_then(Option::take) {
            let _ = self.registry.deregister(&mut SourceFd(&s.as_raw_fd()));
        }
        self.routes.retain(|_, slot| *slot != socket.0);
        self.readable.retain(|&slot| slot != socket.0);
    }

    /// Sends to `to` from `socket` from now on.
    pub fn route(&mut self, to: SocketAddr, socket: LocalSocket) {
        self.routes.insert(to, socket.0);
    }

    /// Forgets where `to` is sent from.
    pub fn forget(&mut self, to: SocketAddr) {
        self.routes.remove(&to);
    }

    /// Sends `data` to `to` if a plain socket reaches it; `false` when none does (the
    /// datagram is for the worker socket). One `sendto` without batching: a plain transport
    /// carries a stream or two.
    pub fn send(&mut self, to: SocketAddr, data: &[u8]) -> bool {
        if self.routes.is_empty() {
            return false;
        }
        let Some(&slot) = self.routes.get(&to) else {
            return false;
        };
        if let Some(socket) = self.slots.get(slot).and_then(Option::as_ref) {
            let to = match (to, self.ip) {
                // A dual-stack socket reaches IPv4 remotes at their IPv4-mapped address.
                (SocketAddr::V4(v4), IpAddr::V6(_)) => {
                    SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port()))
                }
                _ => to,
            };
            if socket.send_to(data, to).is_err() {
                self.send_errors += 1;
            }
        }
        true
    }

    /// The slot of a poll token, if it names a plain socket.
    pub fn slot_of(&self, token: Token) -> Option<usize> {
        let slot = token.0.checked_sub(self.first_token)?;
        (slot < self.slots.len()).then_some(slot)
    }

    /// Notes that a socket has datagrams to read.
    pub fn mark_readable(&mut self, slot: usize) {
        if !self.readable.contains(&slot) {
            self.readable.push_back(slot);
        }
    }

    /// Whether some socket has datagrams left to read.
    pub fn has_readable(&self) -> bool {
        !self.readable.is_empty()
    }

    /// Takes the next socket with datagrams to read.
    pub fn next_readable(&mut self) -> Option<LocalSocket> {
        while let Some(slot) = self.readable.pop_front() {
            if self.slots.get(slot).is_some_and(Option::is_some) {
                return Some(LocalSocket(slot));
            }
        }
        None
    }

    /// How many sockets are queued as readable.
    pub fn readable_count(&self) -> usize {
        self.readable.len()
    }

    /// Reads a batch from `socket` (`WouldBlock` when it is empty or closed).
    pub fn recv(&self, socket: LocalSocket, batch: &mut RecvBatch) -> io::Result<usize> {
        match self.slots.get(socket.0).and_then(Option::as_ref) {
            Some(s) => batch.recv(s),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Puts a socket whose turn's budget ran out back in the queue.
    pub fn defer(&mut self, socket: LocalSocket) {
        self.mark_readable(socket.0);
    }

    /// Closes every socket (the worker restarts with an empty engine).
    pub fn close_all(&mut self) {
        for slot in 0..self.slots.len() {
            self.close(LocalSocket(slot));
        }
    }
}
