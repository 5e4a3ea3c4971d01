//! ICE-TCP of a worker (RFC 6544 passive candidates): its listening socket, the connections
//! clients open to it, and RFC 4571 framing (every STUN, DTLS, RTP and RTCP packet on the
//! stream is preceded by its length as a 16-bit big-endian number).
//!
//! To the engine a TCP connection is one more remote address: its frames go to
//! `Engine::handle_datagram` with the connection's remote address, and what the engine
//! commits to that address is queued on the connection. A connection must earn its place:
//! its first frame must be an ICE check that the engine accepts (the USERNAME's ufrag names
//! a transport, the integrity matches), within [`HANDSHAKE_TIMEOUT`] of the accept;
//! otherwise it is closed. It lives while ICE holds its tuple; when the client closes it,
//! the engine forgets the tuple.
//!
//! Memory is bounded: at most `max_connections` per worker, each with a read buffer of
//! [`READ_BUFFER`] and a send buffer of `send_buffer` bytes allocated at accept, and a
//! kernel send buffer (`SO_SNDBUF`) of the same size. A client that reads slower than media
//! arrives loses the frames that do not fit (counted as `tcp_frames_dropped`); nothing
//! grows.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;

use ferrosoup_rtc::framing::{FrameReader, FrameTooLong, SendRing};

use crate::udp::{MAX_DATAGRAM, canonical};

/// How long a new connection has to pass its first ICE check.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes read from a connection at once (several frames).
pub const READ_BUFFER: usize = 8 * 1024;

/// Limits of a worker's ICE-TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpLimits {
    /// Connections open at once per worker; more are closed at accept.
    pub max_connections: usize,
    /// Bytes queued per connection for a client that reads slower than media arrives; a
    /// frame that does not fit is dropped.
    pub send_buffer: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            send_buffer: 256 * 1024,
        }
    }
}

/// Binds a worker's ICE-TCP listening socket (dual-stack on `::`, as the UDP socket).
pub fn bind(ip: std::net::IpAddr, port: u16) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddr::new(ip, port);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if ip.is_ipv6() && ip.is_unspecified() {
        socket.set_only_v6(false)?;
    }
    // A restarted server gets its port back while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// What a worker's ICE-TCP did, since the worker started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpCounters {
    /// Connections open now.
    pub open: u64,
    /// Connections closed at accept (over the limit), or for not passing an ICE check in
    /// time, or for a frame larger than any packet.
    pub rejected: u64,
    /// Frames dropped because the connection's send buffer was full (a slow reader).
    pub frames_dropped: u64,
    /// Frames queued for sending.
    pub frames_out: u64,
    /// UDP datagrams dropped for coming from the address of an open connection.
    pub udp_dropped: u64,
    /// Bytes of those frames (without the length prefix).
    pub bytes_out: u64,
}

/// One frame read from a connection, copied into the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrame {
    /// `len` bytes from `from`; `first` is the connection's first frame.
    Frame {
        /// Length of the frame.
        len: usize,
        /// The connection's remote address.
        from: SocketAddr,
        /// No frame came before on this connection.
        first: bool,
    },
    /// Nothing more for now (the connection is drained or gone).
    Idle,
}

struct Connection {
    stream: TcpStream,
    remote: SocketAddr,
    /// No frame read yet.
    fresh: bool,
    reader: FrameReader,
    ring: SendRing,
    /// Listed in `TcpConnections::dirty`.
    dirty: bool,
    /// Listed in `TcpConnections::backlog`.
    listed: bool,
    /// To be closed at the next flush (the engine forgot its tuple).
    closing: bool,
}

/// A worker's ICE-TCP listener and connections. Tokens from `first_token` on name
/// connections (by slab index).
pub struct TcpConnections {
    listener: TcpListener,
    port: u16,
    first_token: usize,
    limits: TcpLimits,
    conns: Slab<Connection>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Connections with frames queued since their last write.
    dirty: Vec<usize>,
    /// Connections that may have more to read, in turn order.
    backlog: VecDeque<usize>,
    /// Remote addresses of connections closed since the engine last heard.
    closed: Vec<SocketAddr>,
    /// Handshake deadlines of connections, in accept order (slot, remote address).
    deadlines: VecDeque<(Instant, usize, SocketAddr)>,
    counters: TcpCounters,
}

impl TcpConnections {
    /// Takes over `listener` (non-blocking, registered under `listener_token` by
    /// [`register`](Self::register)).
    pub fn new(
        listener: std::net::TcpListener,
        first_token: usize,
        limits: TcpLimits,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let max = limits.max_connections;
        Ok(Self {
            listener: TcpListener::from_std(listener),
            port,
            first_token,
            limits,
            conns: Slab::with_capacity(max),
            by_addr: HashMap::with_capacity(max),
            dirty: Vec::with_capacity(max),
            backlog: VecDeque::with_capacity(max),
            closed: Vec::with_capacity(max),
            deadlines: VecDeque::with_capacity(max),
            counters: TcpCounters::default(),
        })
    }

    /// Registers the listener for readiness.
    pub fn register(&mut self, registry: &Registry, listener_token: Token) -> io::Result<()> {
        registry.register(&mut self.listener, listener_token, Interest::READABLE)
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What ICE-TCP did so far.
    pub fn counters(&self) -> TcpCounters {
        TcpCounters {
            open: self.conns.len() as u64,
            ..self.counters
        }
    }

    /// Whether a UDP datagram from `from` must be dropped: `from` is an open connection's
    /// remote address, and one address has one path (what the engine sends to it goes by
    /// TCP). Counted.
    pub fn shadows_udp(&mut self, from: SocketAddr) -> bool {
        let shadowed = !self.by_addr.is_empty() && self.by_addr.contains_key(&from);
        self.counters.udp_dropped += u64::from(shadowed);
        shadowed
    }

    /// Whether `to` is an open connection's remote address.
    pub fn is_connection(&self, to: SocketAddr) -> bool {
        !self.by_addr.is_empty() && self.by_addr.contains_key(&to)
    }

    /// Closes every connection (the worker restarted with an empty engine, which knows
    /// none of their tuples).
    pub fn close_all(&mut self) {
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.close(slot);
        }
        self.closed.clear();
        self.dirty.clear();
    }

    /// Accepts every pending connection (closing those over the limit).
    pub fn accept(&mut self, registry: &Registry, now: Instant) {
        loop {
            let (mut stream, remote) = match self.listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of file descriptors, a connection reset before accept, ...
                    tracing::debug!("ice-tcp accept: {e}");
                    return;
                }
            };
            let remote = canonical(remote);
            if self.conns.len() >= self.limits.max_connections || self.by_addr.contains_key(&remote)
            {
                self.counters.rejected += 1;
                continue;
            }
            // Media is latency-sensitive: no Nagle delay.
            let _ = stream.set_nodelay(true);
            // The kernel's share is bounded too (the kernel doubles the value): what a
            // client does not read stays within about 3 × `send_buffer` per connection.
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(self.limits.send_buffer);
            let entry = self.conns.vacant_entry();
            let slot = entry.key();
            if let Err(e) = registry.register(
                &mut stream,
                Token(self.first_token + slot),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::debug!("ice-tcp register: {e}");
                continue;
            }
            entry.insert(Connection {
                stream,
                remote,
                fresh: true,
                reader: FrameReader::new(READ_BUFFER, MAX_DATAGRAM),
                ring: SendRing::new(self.limits.send_buffer.max(2 + MAX_DATAGRAM)),
                dirty: false,
                listed: true,
                closing: false,
            });
            self.by_addr.insert(remote, slot);
            self.deadlines
                .push_back((now + HANDSHAKE_TIMEOUT, slot, remote));
            // Data may have arrived with the handshake: read it this turn.
            self.backlog.push_back(slot);
            tracing::debug!(%remote, "ice-tcp connection accepted");
        }
    }

    /// The connection slot of a readiness token, if it names one.
    pub fn slot_of(&self, token: Token) -> Option<usize> {
        token
            .0
            .checked_sub(self.first_token)
            .filter(|&slot| self.conns.contains(slot))
    }

    /// A connection became readable or writable: queued frames are written, and it is
    /// listed for reading.
    pub fn on_ready(&mut self, slot: usize, readable: bool, writable: bool) {
        if writable {
            self.write_out(slot);
        }
        if readable {
            self.defer(slot);
        }
    }

    /// How many connections are listed for reading.
    pub fn readable_count(&self) -> usize {
        self.backlog.len()
    }

    /// The next connection listed for reading, if any.
    pub fn next_readable(&mut self) -> Option<usize> {
        let slot = self.backlog.pop_front()?;
        if let Some(c) = self.conns.get_mut(slot) {
            c.listed = false;
        }
        Some(slot)
    }

    /// Whether a connection is listed for reading (more may be waiting).
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Lists `slot` for reading (again, when its turn's budget ran out).
    pub fn defer(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot)
            && !c.listed
        {
            c.listed = true;
            self.backlog.push_back(slot);
        }
    }

    /// Copies the connection's next frame into `buf`, reading from the socket when no
    /// complete frame is buffered. A closed, failed or misbehaving connection is closed
    /// and reports `Idle`.
    pub fn read_frame(&mut self, slot: usize, buf: &mut [u8; MAX_DATAGRAM]) -> ReadFrame {
        loop {
            let Some(c) = self.conns.get_mut(slot) else {
                return ReadFrame::Idle;
            };
            match c.reader.next_frame() {
                Ok(Some((at, len))) => {
                    buf[..len].copy_from_slice(c.reader.frame(at, len));
                    let first = std::mem::replace(&mut c.fresh, false);
                    return ReadFrame::Frame {
                        len,
                        from: c.remote,
                        first,
                    };
                }
                Ok(None) => {}
                Err(FrameTooLong) => {
                    tracing::debug!(remote = %c.remote, "ice-tcp frame too long: closing");
                    self.counters.rejected += 1;
                    self.close(slot);
                    return ReadFrame::Idle;
                }
            }
            match c.reader.fill(&mut c.stream) {
                Ok(0) => {
                    tracing::debug!(remote = %c.remote, "ice-tcp connection closed by the client");
                    self.close(slot);
                    return ReadFrame::Idle;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadFrame::Idle,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(remote = %c.remote, "ice-tcp read: {e}");
                    self.close(slot);
                    return ReadFrame::Idle;
                }
            }
        }
    }

    /// Closes a connection whose first frame did not pass an ICE check.
    pub fn reject(&mut self, slot: usize) {
        if self.conns.contains(slot) {
            self.counters.rejected += 1;
            self.close(slot);
        }
    }

    /// Queues a frame for the connection of `to`; returns false when `to` is no
    /// connection (the frame goes by UDP). A full send buffer drops the frame, and so does
    /// a connection closed that the engine has not heard of yet (its address is no UDP
    /// one).
    pub fn queue(&mut self, to: SocketAddr, data: &[u8]) -> bool {
        if !self.closed.is_empty() && self.closed.contains(&to) {
            self.counters.frames_dropped += 1;
            return true;
        }
        if self.by_addr.is_empty() {
            return false;
        }
        let Some(&slot) = self.by_addr.get(&to) else {
            return false;
        };
        let c = &mut self.conns[slot];
        if c.ring.push_frame(data) {
            self.counters.frames_out += 1;
            self.counters.bytes_out += data.len() as u64;
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(slot);
            }
        } else {
            self.counters.frames_dropped += 1;
        }
        true
    }

    /// The engine forgot the tuple `to`: its connection is closed at the next flush.
    pub fn close_later(&mut self, to: SocketAddr) {
        if let Some(&slot) = self.by_addr.get(&to) {
            let c = &mut self.conns[slot];
            c.closing = true;
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    /// Writes what was queued (as far as each socket takes it) and closes the connections
    /// marked for closing.
    pub fn flush(&mut self) {
        while let Some(slot) = self.dirty.pop() {
            if let Some(c) = self.conns.get_mut(slot) {
                c.dirty = false;
            }
            self.write_out(slot);
            if self.conns.get(slot).is_some_and(|c| c.closing) {
                self.close(slot);
            }
        }
    }

    fn write_out(&mut self, slot: usize) {
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        if let Err(e) = c.ring.write_to(&mut c.stream) {
            tracing::debug!(remote = %c.remote, "ice-tcp write: {e}");
            self.close(slot);
        }
    }

    /// Closes connections that passed no ICE check within [`HANDSHAKE_TIMEOUT`];
    /// `routes` tells whether the engine routes an address.
    pub fn expire(&mut self, now: Instant, routes: impl Fn(SocketAddr) -> bool) {
        while let Some(&(deadline, slot, remote)) = self.deadlines.front() {
            if deadline > now {
                return;
            }
            self.deadlines.pop_front();
            let same = self.conns.get(slot).is_some_and(|c| c.remote == remote);
            if same && !routes(remote) {
                tracing::debug!(%remote, "ice-tcp connection passed no ICE check: closing");
                self.counters.rejected += 1;
                self.close(slot);
            }
        }
    }

    /// The next handshake deadline, if a connection is waiting for its first check.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.front().map(|d| d.0)
    }

    /// The remote address of a connection closed since the last call (the engine must
    /// forget its tuple).
    pub fn pop_closed(&mut self) -> Option<SocketAddr> {
        self.closed.pop()
    }

    fn close(&mut self, slot: usize) {
        if !self.conns.contains(slot) {
            return;
        }
        let c = self.conns.remove(slot);
        self.by_addr.remove(&c.remote);
        if c.listed {
            self.backlog.retain(|&s| s != slot);
        }
        if self.closed.len() < self.closed.capacity() {
            self.closed.push(c.remote);
        }
        // Dropping the stream deregisters and closes it.
        drop(c);
    }
}
