//! DTLS session in the server role fed arbitrary datagrams, with timeouts between them.
//!
//! Input framing (so a seed can hold real records): a sequence of `u16` big-endian
//! lengths each followed by that many bytes of datagram; a length of `0xffff` instead
//! advances the clock by the next byte × 50 ms and fires the retransmission timer.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ferrosoup_rtc::dtls::{DtlsCertificate, DtlsRole, DtlsSession, Fingerprint};
use libfuzzer_sys::fuzz_target;

fn cert() -> Arc<DtlsCertificate> {
    static CERT: OnceLock<Arc<DtlsCertificate>> = OnceLock::new();
    CERT.get_or_init(|| Arc::new(DtlsCertificate::generate().expect("certificate")))
        .clone()
}

fn drain(session: &mut DtlsSession) {
    while session.poll_transmit().is_some() {}
    while session.poll_event().is_some() {}
    let _ = session.poll_timeout();
    let _ = session.state();
}

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut now = start;
    let remote = Fingerprint::of_der("sha-256", b"not the peer's certificate").expect("sha-256");
    let Ok(mut session) = DtlsSession::new(cert(), DtlsRole::Server, vec![remote], now) else {
        return;
    };
    let mut rest = data;
    let mut steps = 0;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        steps += 1;
        if steps > 16 {
            break;
        }
        let len = u16::from_be_bytes(*len);
        if len == 0xffff {
            let Some((&ticks, tail)) = tail.split_first() else {
                break;
            };
            now += Duration::from_millis(u64::from(ticks) * 50);
            session.handle_timeout(now);
            drain(&mut session);
            rest = tail;
            continue;
        }
        let len = usize::from(len).min(tail.len());
        let (datagram, tail) = tail.split_at(len);
        session.handle_read(now, datagram);
        drain(&mut session);
        rest = tail;
    }
    let _ = session.send_application_data(b"x");
    session.close();
    drain(&mut session);
});
