//! Where the engine writes what it sends. The engine never owns a socket: the worker loop
//! hands it a [`Transmit`] that batches datagrams for `sendmmsg` (and flushes when the batch
//! is full, in one place), tests collect them, benchmarks discard them. Plain transports
//! ask it for their own UDP sockets ([`Transmit::open_socket`]) and name which one reaches
//! a remote address ([`Transmit::route_via`]).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

use crate::plain::LocalSocket;
use crate::udp::MAX_DATAGRAM;

/// A sink for outgoing datagrams with caller-owned buffers (no allocation per datagram).
pub trait Transmit {
    /// A buffer for the next datagram; an implementation that batches makes room first.
    fn buffer(&mut self) -> &mut [u8; MAX_DATAGRAM];

    /// Sends the first `len` bytes of the buffer last handed out by [`Transmit::buffer`].
    fn commit(&mut self, len: usize, to: SocketAddr);

    /// The engine no longer routes anything to or from `to` (ICE forgot the tuple, or its
    /// transport closed): a connection-oriented path to it (ICE-TCP) can be closed once what
    /// was committed to it is written. Datagram sinks ignore it.
    fn tuple_removed(&mut self, _to: SocketAddr) {}

    /// Whether what is committed to `to` goes on a connection (ICE-TCP) rather than as a
    /// UDP datagram. Datagram sinks say no.
    fn is_connection(&self, _to: SocketAddr) -> bool {
        false
    }

    /// Opens a UDP socket of its own for a plain transport; datagrams it receives reach the
    /// engine through [`crate::Engine::handle_plain_datagram`]. Sinks without sockets refuse.
    fn open_socket(&mut self) -> io::Result<(LocalSocket, SocketAddr)> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this output opens no sockets",
        ))
    }

    /// Takes one side of a pipe between workers in, as a plain transport's socket: returns
    /// the socket that names it and the address of the pipe's other side (datagrams
    /// committed to that address go into the pipe once [`Transmit::route_via`] names the
    /// socket for it). Sinks without pipes refuse.
    fn attach_pipe(
        &mut self,
        _end: crate::worker_pipe::PipeEnd,
    ) -> io::Result<(LocalSocket, SocketAddr)> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this output carries no pipes between workers",
        ))
    }

    /// Closes a socket opened by [`Transmit::open_socket`] (or a pipe end taken in by
    /// [`Transmit::attach_pipe`]).
    fn close_socket(&mut self, _socket: LocalSocket) {}

    /// Datagrams committed to `to` leave from `socket` from now on (until
    /// [`Transmit::tuple_removed`] names `to`).
    fn route_via(&mut self, _to: SocketAddr, _socket: LocalSocket) {}

    /// Copies `data` into a buffer and sends it (datagrams over [`MAX_DATAGRAM`] are not sent).
    fn push(&mut self, data: &[u8], to: SocketAddr) {
        if data.len() > MAX_DATAGRAM {
            return;
        }
        self.buffer()[..data.len()].copy_from_slice(data);
        self.commit(data.len(), to);
    }
}

/// A datagram the engine sent, as [`Collect`] keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Destination.
    pub to: SocketAddr,
    /// Contents.
    pub data: Vec<u8>,
}

/// Keeps a copy of every datagram (tests, fuzzing, the simulated network).
pub struct Collect {
    buf: Box<[u8; MAX_DATAGRAM]>,
    /// Everything sent and not taken yet, in order.
    pub sent: VecDeque<Sent>,
    /// Sockets handed out by [`Transmit::open_socket`] and not closed: simulated ones, at
    /// `socket_ip` (127.0.0.1 unless set) from port 50000 on.
    pub sockets: Vec<(LocalSocket, SocketAddr)>,
    /// The IP address of the simulated sockets.
    pub socket_ip: std::net::IpAddr,
    /// Remote address → the socket [`Transmit::route_via`] named for it.
    pub routes: std::collections::HashMap<SocketAddr, LocalSocket>,
    next_socket: usize,
}

impl Default for Collect {
    fn default() -> Self {
        Self {
            buf: Box::new([0; MAX_DATAGRAM]),
            sent: VecDeque::new(),
            sockets: Vec::new(),
            socket_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            routes: std::collections::HashMap::new(),
            next_socket: 0,
        }
    }
}

impl Collect {
    /// A sink whose simulated sockets are at `ip`.
    pub fn with_socket_ip(ip: std::net::IpAddr) -> Self {
        Self {
            socket_ip: ip,
            ..Self::default()
        }
    }

    /// Takes the oldest datagram not taken yet.
    pub fn pop(&mut self) -> Option<Sent> {
        self.sent.pop_front()
    }
}

impl Transmit for Collect {
    fn buffer(&mut self) -> &mut [u8; MAX_DATAGRAM] {
        &mut self.buf
    }

    fn commit(&mut self, len: usize, to: SocketAddr) {
        self.sent.push_back(Sent {
            to,
            data: self.buf[..len.min(MAX_DATAGRAM)].to_vec(),
        });
    }

    fn tuple_removed(&mut self, to: SocketAddr) {
        self.routes.remove(&to);
    }

    fn open_socket(&mut self) -> io::Result<(LocalSocket, SocketAddr)> {
        let socket = LocalSocket(self.next_socket);
        let addr = SocketAddr::new(self.socket_ip, 50000 + self.next_socket as u16);
        self.next_socket += 1;
        self.sockets.push((socket, addr));
        Ok((socket, addr))
    }

    fn close_socket(&mut self, socket: LocalSocket) {
        self.sockets.retain(|&(s, _)| s != socket);
    }

    fn route_via(&mut self, to: SocketAddr, socket: LocalSocket) {
        self.routes.insert(to, socket);
    }
}

/// Counts datagrams and bytes and throws them away (benchmarks, allocation tests).
pub struct Discard {
    buf: Box<[u8; MAX_DATAGRAM]>,
    /// Datagrams sent.
    pub datagrams: u64,
    /// Bytes sent.
    pub bytes: u64,
}

impl Default for Discard {
    fn default() -> Self {
        Self {
            buf: Box::new([0; MAX_DATAGRAM]),
            datagrams: 0,
            bytes: 0,
        }
    }
}

impl Transmit for Discard {
    fn buffer(&mut self) -> &mut [u8; MAX_DATAGRAM] {
        &mut self.buf
    }

    fn commit(&mut self, len: usize, _to: SocketAddr) {
        self.datagrams += 1;
        self.bytes += len as u64;
    }
}
