//! Kernel arrival times of received datagrams (`SO_TIMESTAMPNS` on Linux).
//!
//! The one-way latency through the SFU is measured from the send time in the payload to
//! the moment the datagram reached the subscriber's socket, as the kernel stamped it. A
//! user-space clock read when the media loop gets to the datagram would add the load
//! tester's own queueing: with thousands of subscriber streams on one thread, a burst of
//! key frame packets waits in the sockets for milliseconds before the loop reads it.
//! Elsewhere (or when the kernel gives no stamp) the caller falls back to its own clock.

use std::io;
use std::net::UdpSocket as StdUdpSocket;
use std::time::{Duration, SystemTime};

/// Asks the kernel to stamp every datagram arriving on `socket`. Returns whether it will.
pub fn enable(socket: &StdUdpSocket) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a valid fd and a pointer to a c_int of the given length.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        false
    }
}

/// The wall-clock time (`CLOCK_REALTIME`) the kernel's stamps are taken on, now.
pub fn realtime_now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Receives one datagram from a connected, non-blocking socket into `buf`: its length and,
/// when the kernel stamped it, its arrival time since the Unix epoch.
pub fn recv(socket: &mio::net::UdpSocket, buf: &mut [u8]) -> io::Result<(usize, Option<Duration>)> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // Room for one `SCM_TIMESTAMPNS` control message (a `timespec`), 8-byte aligned.
        let mut control = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: all-zero is a valid `msghdr`; the pointers set below outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: `msg` points at a live iovec over `buf` and a live control buffer.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut stamp = None;
        // SAFETY: the CMSG macros walk the control buffer the kernel filled in, bounded
        // by `msg_controllen`; the data of an SCM_TIMESTAMPNS message is a `timespec`.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
                {
                    let ts =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                    stamp = Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        Ok((n as usize, stamp))
    }
    #[cfg(not(target_os = "linux"))]
    {
        socket.recv(buf).map(|n| (n, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_datagrams_carry_a_kernel_stamp_between_send_and_receive() {
        let rx = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        rx.connect(tx.local_addr().unwrap()).unwrap();
        rx.set_nonblocking(true).unwrap();
        let enabled = enable(&rx);
        let rx = mio::net::UdpSocket::from_std(rx);
        let before = realtime_now();
        tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 64];
        let (n, stamp) = loop {
            match recv(&rx, &mut buf) {
                Ok(got) => break got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("recv: {e}"),
            }
        };
        let after = realtime_now();
        assert_eq!(&buf[..n], b"hello");
        if cfg!(target_os = "linux") {
            assert!(enabled);
            let stamp = stamp.expect("kernel stamp");
            // Allow for the coarse granularity of the two clocks' reads.
            assert!(
                stamp + Duration::from_millis(1) >= before,
                "{stamp:?} < {before:?}"
            );
            assert!(
                stamp <= after + Duration::from_millis(1),
                "{stamp:?} > {after:?}"
            );
        }
    }
}
