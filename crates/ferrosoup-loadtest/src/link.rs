//! A simulated peer's path to the server's ICE candidate: a connected UDP socket, or
//! (`--tcp`) a TCP connection to the server's passive ICE-TCP candidate carrying RFC 4571
//! frames, as a browser's active TCP candidate does. Both send and receive whole
//! packets; buffers are allocated when the link opens, none per packet.

use std::cell::RefCell;
use std::io;
use std::net::{SocketAddr, TcpStream as StdTcpStream, UdpSocket as StdUdpSocket};
use std::time::Duration;

use ferrosoup_rtc::framing::{FrameReader, SendRing};
use mio::event::Source;
use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};

use crate::arrival;

/// Largest packet a link carries.
const MAX_PACKET: usize = 1500;
/// Bytes read from a TCP link at once.
const TCP_READ_BUFFER: usize = 16 * 1024;
/// Bytes queued on a TCP link while the kernel's send buffer is full; a frame that does
/// not fit is dropped (as a full UDP socket buffer drops a datagram).
const TCP_SEND_BUFFER: usize = 256 * 1024;
/// How long opening a TCP link may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A path to the server.
pub enum Link {
    /// A connected UDP socket.
    Udp(UdpSocket),
    /// An ICE-TCP connection.
    Tcp(TcpLink),
}

/// An ICE-TCP connection and its framing state. The media loop holds links by shared
/// reference while it works on a transport, so the framing state sits in cells.
pub struct TcpLink {
    stream: TcpStream,
    reader: RefCell<FrameReader>,
    pending: RefCell<SendRing>,
}

impl Link {
    /// Opens a path to `remote`: a UDP socket connected to it, or a TCP connection.
    pub fn open(remote: SocketAddr, tcp: bool) -> io::Result<Self> {
        if tcp {
            let stream = StdTcpStream::connect_timeout(&remote, CONNECT_TIMEOUT)?;
            stream.set_nodelay(true)?;
            stream.set_nonblocking(true)?;
            return Ok(Self::Tcp(TcpLink {
                stream: TcpStream::from_std(stream),
                reader: RefCell::new(FrameReader::new(TCP_READ_BUFFER, MAX_PACKET)),
                pending: RefCell::new(SendRing::new(TCP_SEND_BUFFER)),
            }));
        }
        let local: SocketAddr = if remote.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = StdUdpSocket::bind(local)?;
        socket.connect(remote)?;
        socket.set_nonblocking(true)?;
        arrival::enable(&socket);
        Ok(Self::Udp(UdpSocket::from_std(socket)))
    }

    /// Registers the link with the media loop's poll.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        match self {
            Self::Udp(s) => registry.register(s, token, Interest::READABLE),
            Self::Tcp(t) => registry.register(
                &mut t.stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ),
        }
    }

    /// Removes the link from the poll.
    pub fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Self::Udp(s) => s.deregister(registry),
            Self::Tcp(t) => t.stream.deregister(registry),
        }
    }

    /// Sends one packet. On TCP it is framed and queued behind what the kernel has not
    /// taken yet; `Err` when the packet was dropped (full buffer, failed socket).
    pub fn send(&self, data: &[u8]) -> io::Result<()> {
        match self {
            Self::Udp(s) => s.send(data).map(|_| ()),
            Self::Tcp(t) => {
                let mut pending = t.pending.borrow_mut();
                if !pending.push_frame(data) {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                pending.write_to(&mut &t.stream).map(|_| ())
            }
        }
    }

    /// Writes what a TCP link has queued (called when the socket becomes writable).
    pub fn flush(&self) -> io::Result<()> {
        match self {
            Self::Udp(_) => Ok(()),
            Self::Tcp(t) => t.pending.borrow_mut().write_to(&mut &t.stream).map(|_| ()),
        }
    }

    /// Receives one packet into `buf`: its length and, for UDP when the kernel stamped it,
    /// its arrival time since the Unix epoch. `WouldBlock` when nothing (whole) is waiting;
    /// a TCP link the server closed gives `UnexpectedEof`.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Option<Duration>)> {
        match self {
            Self::Udp(s) => arrival::recv(s, buf),
            Self::Tcp(t) => {
                let mut reader = t.reader.borrow_mut();
                loop {
                    match reader.next_frame() {
                        Ok(Some((at, len))) => {
                            let n = len.min(buf.len());
                            buf[..n].copy_from_slice(&reader.frame(at, len)[..n]);
                            return Ok((n, None));
                        }
                        Ok(None) => {}
                        Err(_) => return Err(io::Error::other("ice-tcp frame too long")),
                    }
                    match reader.fill(&mut &t.stream) {
                        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(_) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
}
