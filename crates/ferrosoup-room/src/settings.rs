//! Settings of the worker pool.

use std::net::IpAddr;
use std::time::Duration;

/// ICE liveness timers of every transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IceTimeouts {
    /// No valid check from the selected tuple for this long: ICE `disconnected` (RFC 7675).
    pub consent: Duration,
    /// Disconnected for this long: the client is told `iceRestartRequired` (at most once per
    /// this period).
    pub restart_required: Duration,
}

impl Default for IceTimeouts {
    fn default() -> Self {
        Self {
            consent: Duration::from_secs(30),
            restart_required: Duration::from_secs(5),
        }
    }
}

/// How the worker pool binds its sockets and what it announces to clients.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// Number of worker threads (one UDP socket each).
    pub num_workers: usize,
    /// Address the worker sockets (UDP and ICE-TCP) bind to; `::` binds dual-stack
    /// sockets that serve IPv4 and IPv6 clients.
    pub listen_ip: IpAddr,
    /// Addresses put in ICE candidates, IPv4 and IPv6. Empty: derived from `listen_ip` (for
    /// an unspecified listen address: the host's primary IPv4 address and 127.0.0.1, and on
    /// `::` also its primary global IPv6 address).
    pub announced_ips: Vec<IpAddr>,
    /// First port a worker may bind (UDP, and ICE-TCP).
    pub rtc_min_port: u16,
    /// Last port a worker may bind (UDP, and ICE-TCP).
    pub rtc_max_port: u16,
    /// Limits of each worker's ICE-TCP connections.
    pub tcp_limits: crate::tcp::TcpLimits,
    /// ICE liveness timers.
    pub ice_timeouts: IceTimeouts,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            num_workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            listen_ip: IpAddr::from([0, 0, 0, 0]),
            announced_ips: Vec::new(),
            rtc_min_port: 40000,
            rtc_max_port: 40099,
            tcp_limits: crate::tcp::TcpLimits::default(),
            ice_timeouts: IceTimeouts::default(),
        }
    }
}

impl WorkerSettings {
    /// The IPs to announce in ICE candidates for these settings.
    pub fn candidate_ips(&self) -> Vec<IpAddr> {
        if !self.announced_ips.is_empty() {
            return self.announced_ips.clone();
        }
        if !self.listen_ip.is_unspecified() {
            return vec![self.listen_ip];
        }
        let mut ips = Vec::new();
        if let Some(ip) = primary_ipv4() {
            ips.push(ip);
        }
        ips.push(IpAddr::from([127, 0, 0, 1]));
        if self.listen_ip.is_ipv6()
            && let Some(ip) = primary_ipv6()
        {
            ips.push(ip);
        }
        ips
    }
}

/// The global IPv6 address the host would use to reach the internet, if it has one.
fn primary_ipv6() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("[::]:0").ok()?;
    socket.connect("[2001:db8::1]:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// The address the host would use to reach the internet (no packet is sent), if it has a
/// non-loopback route at all.
fn primary_ipv4() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}
