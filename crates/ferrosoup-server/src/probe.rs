//! `ferrosoup health`: asks a running server's health route and exits 0 only on HTTP 200,
//! for container HEALTHCHECKs and scripts on hosts without curl (the runtime image has none).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// How long connecting, sending and reading may each take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// The address a local probe reaches the server on: its listen address, or loopback when it
/// listens on all interfaces.
pub fn local_addr(listen_ip: IpAddr, port: u16) -> SocketAddr {
    let ip = match listen_ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, port)
}

/// GETs `path` from `addr`; `Ok` with the status line when it is 200, `Err` saying what
/// happened otherwise.
pub fn check(addr: SocketAddr, path: &str) -> Result<String, String> {
    let fail = |e: std::io::Error| format!("{addr}{path}: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(fail)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(fail)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(fail)?;
    // HTTP/1.0: the server closes after one answer, so reading to the end is bounded.
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").map_err(fail)?;
    let mut answer = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut answer)
        .map_err(fail)?;
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or_default().to_owned();
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(status_line),
        _ => Err(format!(
            "{addr}{path}: {:?}",
            text.lines().last().unwrap_or(&status_line)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_loopback_when_listening_everywhere() {
        assert_eq!(
            local_addr("0.0.0.0".parse::<IpAddr>().unwrap(), 3000),
            "127.0.0.1:3000".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            local_addr("::".parse::<IpAddr>().unwrap(), 3000),
            "[::1]:3000".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            local_addr("10.1.2.3".parse::<IpAddr>().unwrap(), 8080),
            "10.1.2.3:8080".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn nothing_listening_is_an_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let err = check(SocketAddr::from(([127, 0, 0, 1], port)), "/health/live").unwrap_err();
        assert!(err.contains("/health/live"), "{err}");
    }
}
