//! Batched UDP I/O for a worker socket: `recvmmsg` / `sendmmsg` on Linux, one datagram per
//! syscall elsewhere. All buffers are allocated once, when the batch is created.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use crate::transmit::Transmit;

/// Largest datagram the worker accepts or sends.
pub const MAX_DATAGRAM: usize = 1500;

/// Socket buffer size asked for (the kernel caps it at `net.core.{r,w}mem_max`): bursts of
/// keyframes fanned out to thousands of consumers overflow the default ~208 KiB.
pub const SOCKET_BUFFER: usize = 8 * 1024 * 1024;

/// Sets a worker socket up for media (best effort; failures are logged at debug level):
/// - kernel buffers of [`SOCKET_BUFFER`] (the kernel may grant less);
/// - on IPv4, the Don't Fragment bit without path-MTU bookkeeping (`IP_PMTUDISC_PROBE`):
///   WebRTC packets stay under any path MTU, and an unconnected socket sending without DF
///   makes the kernel derive every datagram's IP ID from a shared hashed counter, which was
///   ~5 % of the worker's CPU under load. With DF the ID is 0 (RFC 6864).
pub fn configure_socket(socket: &UdpSocket) {
    #[cfg(unix)]
    {
        let size = SOCKET_BUFFER as libc::c_int;
        for option in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
            set_option(socket, libc::SOL_SOCKET, option, size);
        }
    }
    #[cfg(target_os = "linux")]
    if socket.local_addr().is_ok_and(|a| a.is_ipv4()) {
        set_option(
            socket,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        );
    }
}

#[cfg(unix)]
fn set_option(socket: &UdpSocket, level: libc::c_int, option: libc::c_int, value: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid fd and a pointer to a c_int of the given length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(
            "setsockopt({level}, {option}) failed: {}",
            io::Error::last_os_error()
        );
    }
}

/// The address as the engine keys it: an IPv4 client reaching a dual-stack (`::`) socket
/// appears as an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) and is turned back into its
/// IPv4 form, so that one client has one address whichever socket family it came in on
/// (and STUN answers name the address the client knows).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, a.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// Binds a worker's UDP socket. On the IPv6 unspecified address (`::`) the socket is
/// dual-stack: it serves IPv4 clients too (at IPv4-mapped addresses, see [`canonical`]).
pub fn bind(ip: std::net::IpAddr, port: u16) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddr::new(ip, port);
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if ip.is_ipv6() && ip.is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A batch of received datagrams, reused for every `recv` call.
pub struct RecvBatch {
    bufs: Vec<[u8; MAX_DATAGRAM]>,
    lens: Vec<usize>,
    addrs: Vec<Option<SocketAddr>>,
    count: usize,
    #[cfg(target_os = "linux")]
    sys: linux::SysBatch,
}

impl RecvBatch {
    /// Preallocates room for `capacity` datagrams.
    pub fn new(capacity: usize) -> Self {
        Self {
            bufs: vec![[0; MAX_DATAGRAM]; capacity],
            lens: vec![0; capacity],
            addrs: vec![None; capacity],
            count: 0,
            #[cfg(target_os = "linux")]
            sys: linux::SysBatch::new(capacity),
        }
    }

    /// Receives up to `capacity` datagrams without blocking; returns how many arrived
    /// (`WouldBlock` when none was waiting).
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.count = 0;
        #[cfg(target_os = "linux")]
        {
            let n = self
                .sys
                .recv(socket, &mut self.bufs, &mut self.lens, &mut self.addrs)?;
            self.count = n;
        }
        #[cfg(not(target_os = "linux"))]
        {
            let (len, from) = socket.recv_from(&mut self.bufs[0])?;
            self.lens[0] = len;
            self.addrs[0] = Some(from);
            self.count = 1;
        }
        Ok(self.count)
    }

    /// Datagram `i` of the last `recv`, as a mutable slice (SRTP is removed in place) and its
    /// source address.
    pub fn get_mut(&mut self, i: usize) -> Option<(&mut [u8], SocketAddr)> {
        if i >= self.count {
            return None;
        }
        let from = self.addrs[i]?;
        Some((&mut self.bufs[i][..self.lens[i]], from))
    }
}

/// Datagrams queued for sending, flushed with one syscall per batch.
pub struct SendBatch {
    bufs: Vec<[u8; MAX_DATAGRAM]>,
    lens: Vec<usize>,
    addrs: Vec<SocketAddr>,
    count: usize,
    #[cfg(target_os = "linux")]
    sys: linux::SysBatch,
}

/// Outcome counters of one flush.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushOutcome {
    /// Datagrams handed to the kernel.
    pub sent: usize,
    /// Bytes handed to the kernel.
    pub bytes: usize,
    /// Datagrams dropped because the socket buffer was full or the send failed.
    pub dropped: usize,
}

impl SendBatch {
    /// Preallocates room for `capacity` datagrams.
    pub fn new(capacity: usize) -> Self {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        Self {
            bufs: vec![[0; MAX_DATAGRAM]; capacity],
            lens: vec![0; capacity],
            addrs: vec![unspecified; capacity],
            count: 0,
            #[cfg(target_os = "linux")]
            sys: linux::SysBatch::new(capacity),
        }
    }

    /// True when no free slot is left: flush before pushing more.
    pub fn is_full(&self) -> bool {
        self.count == self.bufs.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Hands out the next free slot (the whole buffer); the caller writes a datagram into
    /// it and then calls [`SendBatch::commit`] with its length. Returns `None` when full.
    pub fn slot(&mut self) -> Option<&mut [u8; MAX_DATAGRAM]> {
        self.bufs.get_mut(self.count)
    }

    /// Queues the datagram written into the current slot.
    pub fn commit(&mut self, len: usize, to: SocketAddr) {
        if self.count < self.bufs.len() && len <= MAX_DATAGRAM {
            self.lens[self.count] = len;
            self.addrs[self.count] = to;
            self.count += 1;
        }
    }

    /// Copies `data` into a slot and queues it. Returns false (nothing queued) when the batch
    /// is full or the datagram too large.
    pub fn push(&mut self, data: &[u8], to: SocketAddr) -> bool {
        let Some(slot) = self.slot() else {
            return false;
        };
        if data.len() > MAX_DATAGRAM {
            return false;
        }
        slot[..data.len()].copy_from_slice(data);
        self.commit(data.len(), to);
        true
    }

    /// Sends everything queued and empties the batch.
    pub fn flush(&mut self, socket: &UdpSocket) -> FlushOutcome {
        let mut outcome = FlushOutcome::default();
        if self.count == 0 {
            return outcome;
        }
        #[cfg(target_os = "linux")]
        {
            outcome = self.sys.send(
                socket,
                &mut self.bufs[..self.count],
                &self.lens,
                &self.addrs,
            );
        }
        #[cfg(not(target_os = "linux"))]
        for i in 0..self.count {
            match socket.send_to(&self.bufs[i][..self.lens[i]], self.addrs[i]) {
                Ok(n) => {
                    outcome.sent += 1;
                    outcome.bytes += n;
                }
                Err(_) => outcome.dropped += 1,
            }
        }
        self.count = 0;
        outcome
    }
}

/// The worker's outgoing side: a [`SendBatch`] on the worker socket. As the engine's
/// [`Transmit`] it flushes itself when the batch is full; the worker loop flushes the rest at
/// the end of each turn. This is the only place datagrams leave a worker.
pub struct SocketSender {
    socket: UdpSocket,
    batch: SendBatch,
    totals: FlushOutcome,
}

impl SocketSender {
    /// A sender of batches of up to `capacity` datagrams on `socket`.
    pub fn new(socket: UdpSocket, capacity: usize) -> Self {
        #[allow(unused_mut)]
        let mut batch = SendBatch::new(capacity.max(1));
        #[cfg(target_os = "linux")]
        {
            // A dual-stack socket sends to IPv4 clients at their IPv4-mapped address.
            batch.sys.ipv6_socket = socket.local_addr().is_ok_and(|a| a.is_ipv6());
        }
        Self {
            socket,
            batch,
            totals: FlushOutcome::default(),
        }
    }

    /// The first `len` bytes of the buffer last handed out by [`Transmit::buffer`] (not
    /// committed).
    pub fn uncommitted(&self, len: usize) -> &[u8] {
        let i = self.batch.count.min(self.batch.bufs.len() - 1);
        &self.batch.bufs[i][..len.min(MAX_DATAGRAM)]
    }

    /// Sends everything queued.
    pub fn flush(&mut self) {
        let out = self.batch.flush(&self.socket);
        self.totals.sent += out.sent;
        self.totals.bytes += out.bytes;
        self.totals.dropped += out.dropped;
    }

    /// What the flushes since the last call sent and dropped.
    pub fn take_totals(&mut self) -> FlushOutcome {
        std::mem::take(&mut self.totals)
    }
}

impl Transmit for SocketSender {
    fn buffer(&mut self) -> &mut [u8; MAX_DATAGRAM] {
        if self.batch.is_full() {
            self.flush();
        }
        let i = self.batch.count;
        &mut self.batch.bufs[i]
    }

    fn commit(&mut self, len: usize, to: SocketAddr) {
        self.batch.commit(len, to);
    }
}

#[cfg(target_os = "linux")]
mod linux {
    //! `recvmmsg` / `sendmmsg` with headers, iovecs and address storage allocated once.

    use super::{FlushOutcome, MAX_DATAGRAM};
    use std::io;
    use std::mem;
    use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
    use std::os::fd::AsRawFd;

    pub(super) struct SysBatch {
        /// The socket is IPv6 (dual-stack): IPv4 destinations are written IPv4-mapped.
        pub(super) ipv6_socket: bool,
        headers: Vec<libc::mmsghdr>,
        iovecs: Vec<libc::iovec>,
        names: Vec<libc::sockaddr_storage>,
    }

    // SAFETY: the raw pointers inside the headers only ever point into this batch's own
    // vectors or the buffers passed to the call that set them; nothing is shared.
    unsafe impl Send for SysBatch {}

    impl SysBatch {
        pub(super) fn new(capacity: usize) -> Self {
            // SAFETY: all-zero is a valid value for these plain C structs.
            let zero_hdr: libc::mmsghdr = unsafe { mem::zeroed() };
            let zero_name: libc::sockaddr_storage = unsafe { mem::zeroed() };
            Self {
                ipv6_socket: false,
                headers: vec![zero_hdr; capacity],
                iovecs: vec![
                    libc::iovec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: 0
                    };
                    capacity
                ],
                names: vec![zero_name; capacity],
            }
        }

        pub(super) fn recv(
            &mut self,
            socket: &UdpSocket,
            bufs: &mut [[u8; MAX_DATAGRAM]],
            lens: &mut [usize],
            addrs: &mut [Option<SocketAddr>],
        ) -> io::Result<usize> {
            let n = bufs.len().min(self.headers.len());
            for (i, buf) in bufs.iter_mut().enumerate().take(n) {
                self.iovecs[i] = libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: MAX_DATAGRAM,
                };
                let hdr = &mut self.headers[i].msg_hdr;
                hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
                hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                hdr.msg_iov = &mut self.iovecs[i];
                hdr.msg_iovlen = 1;
                hdr.msg_control = std::ptr::null_mut();
                hdr.msg_controllen = 0;
                hdr.msg_flags = 0;
                self.headers[i].msg_len = 0;
            }
            // SAFETY: every header points at a live iovec/buffer/sockaddr of the right size
            // for the duration of the call; `n` does not exceed the prepared headers.
            let got = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    self.headers.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if got < 0 {
                return Err(io::Error::last_os_error());
            }
            let got = got as usize;
            for i in 0..got {
                lens[i] = self.headers[i].msg_len as usize;
                addrs[i] = sockaddr_to_std(&self.names[i]).map(super::canonical);
            }
            Ok(got)
        }

        pub(super) fn send(
            &mut self,
            socket: &UdpSocket,
            bufs: &mut [[u8; MAX_DATAGRAM]],
            lens: &[usize],
            addrs: &[SocketAddr],
        ) -> FlushOutcome {
            let mut outcome = FlushOutcome::default();
            let n = bufs.len().min(self.headers.len());
            for (i, buf) in bufs.iter_mut().enumerate().take(n) {
                self.iovecs[i] = libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: lens[i],
                };
                let to = match addrs[i] {
                    SocketAddr::V4(a) if self.ipv6_socket => {
                        SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
                    }
                    to => to,
                };
                let namelen = std_to_sockaddr(to, &mut self.names[i]);
                let hdr = &mut self.headers[i].msg_hdr;
                hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
                hdr.msg_namelen = namelen;
                hdr.msg_iov = &mut self.iovecs[i];
                hdr.msg_iovlen = 1;
                hdr.msg_control = std::ptr::null_mut();
                hdr.msg_controllen = 0;
                hdr.msg_flags = 0;
            }
            let mut start = 0;
            while start < n {
                // SAFETY: headers[start..n] point at live buffers and addresses prepared above.
                let sent = unsafe {
                    libc::sendmmsg(
                        socket.as_raw_fd(),
                        self.headers[start..].as_mut_ptr(),
                        (n - start) as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                };
                if sent <= 0 {
                    // The first datagram of the rest failed (full buffer, unreachable
                    // address, ...): drop it and go on with the others.
                    outcome.dropped += 1;
                    start += 1;
                    continue;
                }
                outcome.sent += sent as usize;
                outcome.bytes += lens[start..start + sent as usize].iter().sum::<usize>();
                start += sent as usize;
            }
            outcome
        }
    }

    fn sockaddr_to_std(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match storage.ss_family as libc::c_int {
            libc::AF_INET => {
                // SAFETY: the family says this storage holds a sockaddr_in.
                let a: &libc::sockaddr_in = unsafe { &*(storage as *const _ as *const _) };
                let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says this storage holds a sockaddr_in6.
                let a: &libc::sockaddr_in6 = unsafe { &*(storage as *const _ as *const _) };
                let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    fn std_to_sockaddr(addr: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
        match addr {
            SocketAddr::V4(a) => {
                // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
                let s: &mut libc::sockaddr_in = unsafe { &mut *(storage as *mut _ as *mut _) };
                s.sin_family = libc::AF_INET as libc::sa_family_t;
                s.sin_port = a.port().to_be();
                s.sin_addr = libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                };
                mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
                let s: &mut libc::sockaddr_in6 = unsafe { &mut *(storage as *mut _ as *mut _) };
                s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                s.sin6_port = a.port().to_be();
                s.sin6_flowinfo = a.flowinfo();
                s.sin6_addr = libc::in6_addr {
                    s6_addr: a.ip().octets(),
                };
                s.sin6_scope_id = a.scope_id();
                mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn configured_socket_sends_with_dont_fragment() {
        use std::os::fd::AsRawFd;
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        configure_socket(&socket);
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid fd and a c_int-sized out buffer.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(value, libc::IP_PMTUDISC_PROBE);
    }

    #[test]
    fn batch_round_trip_on_loopback() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        let to = b.local_addr().unwrap();
        let mut send = SendBatch::new(8);
        for i in 0..5u8 {
            assert!(send.push(&[i; 100], to));
        }
        let out = send.flush(&a);
        assert_eq!(
            out,
            FlushOutcome {
                sent: 5,
                bytes: 500,
                dropped: 0
            }
        );
        assert!(send.is_empty());
        let mut recv = RecvBatch::new(8);
        let mut seen = Vec::new();
        // Loopback delivery is immediate but give the kernel a few turns.
        for _ in 0..100 {
            match recv.recv(&b) {
                Ok(n) => {
                    for i in 0..n {
                        let (data, from) = recv.get_mut(i).unwrap();
                        assert_eq!(from, a.local_addr().unwrap());
                        seen.push((data[0], data.len()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if seen.len() == 5 {
                        break;
                    }
                    std::thread::yield_now();
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(seen, (0..5u8).map(|i| (i, 100)).collect::<Vec<_>>());
    }

    #[test]
    fn full_batch_refuses_more() {
        let mut send = SendBatch::new(2);
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert!(send.push(b"a", to));
        assert!(send.push(b"b", to));
        assert!(send.is_full());
        assert!(!send.push(b"c", to));
        assert!(!SendBatch::new(1).push(&[0; MAX_DATAGRAM + 1], to));
    }
}
