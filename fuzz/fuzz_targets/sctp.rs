//! The SCTP association of a transport fed arbitrary packets (what a client can put inside
//! DTLS application data): before and after its own INIT, with timers run in between.
#![no_main]

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrosoup_rtc::dtls::DtlsRole;
use ferrosoup_rtc::sctp::{Ppid, Reliability, SctpAssociation, SctpConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|packets: Vec<Vec<u8>>| {
    let mut now = Instant::now();
    let mut a = SctpAssociation::new(SctpConfig {
        max_message_size: 4096,
    });
    a.start(now, DtlsRole::Client);
    for p in packets.into_iter().take(64) {
        a.handle_packet(now, Bytes::from(p));
        let _ = a.send(now, 1, Reliability::default(), Ppid::Binary, &Bytes::from_static(b"x"));
        while a.poll_transmit(now).is_some() {}
        while a.poll_event().is_some() {}
        now += Duration::from_millis(200);
        a.handle_timeout(now);
    }
});
