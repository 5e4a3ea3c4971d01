//! RTCP compound parsing: every item and every sub-iterator is walked to the end.
#![no_main]

use ferrosoup_rtc::rtcp::{RtcpItem, parse_compound};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut sum = 0u64;
    for item in parse_compound(data).take(1024) {
        let Ok(item) = item else { continue };
        match item {
            RtcpItem::SenderReport {
                ssrc,
                info,
                reports,
            } => {
                sum = sum.wrapping_add(u64::from(ssrc) + u64::from(info.rtp_ts));
                for b in reports {
                    sum = sum.wrapping_add(u64::from(b.ssrc) + u64::from(b.jitter));
                }
            }
            RtcpItem::ReceiverReport { ssrc, reports } => {
                sum = sum.wrapping_add(u64::from(ssrc));
                let n = reports.len();
                let mut seen = 0;
                for b in reports {
                    sum = sum.wrapping_add(u64::from(b.ssrc) + u64::from(b.fraction_lost));
                    seen += 1;
                }
                assert_eq!(n, seen, "ExactSizeIterator length must match");
            }
            RtcpItem::Sdes { count, body } => {
                sum = sum.wrapping_add(u64::from(count) + body.len() as u64)
            }
            RtcpItem::Bye { ssrcs } => sum = ssrcs.fold(sum, |a, s| a.wrapping_add(u64::from(s))),
            RtcpItem::Nack { pairs, .. } => {
                let mut n = 0usize;
                for _ in pairs.clone() {
                    n += 1;
                }
                let seqs: usize = pairs.seqs().count();
                assert!(seqs >= n && seqs <= 17 * n, "{seqs} seqs from {n} pairs");
            }
            RtcpItem::Pli { media_ssrc, .. } => sum = sum.wrapping_add(u64::from(media_ssrc)),
            RtcpItem::Fir { entries, .. } => {
                for (ssrc, seq) in entries {
                    sum = sum.wrapping_add(u64::from(ssrc) + u64::from(seq));
                }
            }
            RtcpItem::Remb { bitrate, ssrcs, .. } => {
                sum = sum.wrapping_add(bitrate).wrapping_add(ssrcs.count() as u64)
            }
            RtcpItem::TransportCc { raw, .. } => sum = sum.wrapping_add(raw.len() as u64),
            RtcpItem::ExtendedReport { ssrc, blocks } => {
                sum = sum.wrapping_add(u64::from(ssrc));
                for dlrr in blocks.dlrr().take(1024) {
                    sum = sum.wrapping_add(u64::from(dlrr.ssrc) + u64::from(dlrr.delay));
                    let _ = dlrr.rtt(sum);
                }
            }
            RtcpItem::Other { raw, .. } => sum = sum.wrapping_add(raw.len() as u64),
        }
    }
    std::hint::black_box(sum);
});
