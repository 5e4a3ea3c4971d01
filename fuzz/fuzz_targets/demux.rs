//! RFC 7983 demultiplexer on arbitrary datagrams, then the parser each kind goes to.
#![no_main]

use ferrosoup_rtc::demux::{PacketKind, classify};
use ferrosoup_rtc::{ice, rtcp, rtp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match classify(data) {
        PacketKind::Stun => {
            assert!(data.len() >= 20 && data[0] <= 3);
            let _ = ice::stun_local_ufrag(data);
        }
        PacketKind::Dtls => assert!(data.len() >= 13),
        PacketKind::Rtp => {
            assert!(data.len() >= 12);
            let _ = rtp::parse_rtp(data);
        }
        PacketKind::Rtcp => {
            assert!(data.len() >= 8);
            for item in rtcp::parse_compound(data) {
                let _ = item;
            }
        }
        PacketKind::Unknown => {}
    }
});
