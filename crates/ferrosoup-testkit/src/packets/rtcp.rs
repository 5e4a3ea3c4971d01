//! RTCP packets as `Vec`s, over the writers of `ferrosoup_rtc::rtcp`. A compound packet is
//! the concatenation of its parts (`[rr, nack].concat()`).

pub use ferrosoup_rtc::rtcp::{ReportBlock, SenderInfo};
use ferrosoup_rtc::rtcp::{write_fir, write_nack, write_pli, write_remb, write_rr, write_sr};

/// Runs an RTCP writer on a buffer of `capacity` bytes and keeps what it wrote.
fn written(capacity: usize, write: impl FnOnce(&mut [u8]) -> Option<usize>) -> Vec<u8> {
    let mut buf = vec![0u8; capacity];
    let len = write(&mut buf).expect("the RTCP buffer is sized for the packet"); // ok: test support, never in the server
    buf.truncate(len);
    buf
}

/// A receiver report from `sender_ssrc` with up to 31 report blocks.
///
/// # Panics
///
/// With more than 31 blocks.
pub fn receiver_report(sender_ssrc: u32, blocks: &[ReportBlock]) -> Vec<u8> {
    assert!(blocks.len() <= 31, "an RR holds at most 31 report blocks");
    written(8 + 24 * blocks.len(), |buf| {
        write_rr(buf, sender_ssrc, blocks)
    })
}

/// A report block about `media_ssrc` with the extended highest sequence number received
/// and nothing lost.
pub fn report_block(media_ssrc: u32, highest_seq: u32) -> ReportBlock {
    ReportBlock {
        ssrc: media_ssrc,
        highest_seq,
        ..ReportBlock::default()
    }
}

/// A sender report from `ssrc` with up to 31 report blocks.
///
/// # Panics
///
/// With more than 31 blocks.
pub fn sender_report(ssrc: u32, info: &SenderInfo, blocks: &[ReportBlock]) -> Vec<u8> {
    assert!(blocks.len() <= 31, "an SR holds at most 31 report blocks");
    written(28 + 24 * blocks.len(), |buf| {
        write_sr(buf, ssrc, info, blocks)
    })
}

/// A generic NACK (RFC 4585) for `seqs` of `media_ssrc` (empty for an empty list).
pub fn nack(sender_ssrc: u32, media_ssrc: u32, seqs: &[u16]) -> Vec<u8> {
    // Worst case one (pid, blp) pair per sequence number.
    written(12 + 4 * seqs.len(), |buf| {
        write_nack(buf, sender_ssrc, media_ssrc, seqs)
    })
}

/// A picture loss indication for `media_ssrc`.
pub fn pli(sender_ssrc: u32, media_ssrc: u32) -> Vec<u8> {
    written(12, |buf| write_pli(buf, sender_ssrc, media_ssrc))
}

/// A full intra request with `(media ssrc, command sequence number)` entries.
pub fn fir(sender_ssrc: u32, entries: &[(u32, u8)]) -> Vec<u8> {
    written(12 + 8 * entries.len(), |buf| {
        write_fir(buf, sender_ssrc, entries)
    })
}

/// A REMB of `bitrate` bits per second for up to 255 `ssrcs`.
///
/// # Panics
///
/// With more than 255 SSRCs.
pub fn remb(sender_ssrc: u32, bitrate: u64, ssrcs: &[u32]) -> Vec<u8> {
    assert!(ssrcs.len() <= 255, "a REMB names at most 255 SSRCs");
    written(20 + 4 * ssrcs.len(), |buf| {
        write_remb(buf, sender_ssrc, bitrate, ssrcs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrosoup_rtc::rtcp::{RtcpItem, parse_compound};

    #[test]
    fn packets_parse_back() {
        let compound = [
            receiver_report(1, &[report_block(2, 70_000)]),
            nack(1, 2, &[10, 11, 13, 40]),
            pli(1, 2),
            fir(1, &[(2, 9)]),
            remb(1, 500_000, &[2]),
            sender_report(
                3,
                &SenderInfo {
                    ntp: 1 << 32,
                    rtp_ts: 90_000,
                    packets: 10,
                    octets: 1000,
                },
                &[],
            ),
        ]
        .concat();
        let items: Vec<_> = parse_compound(&compound)
            .collect::<Result<_, _>>()
            .expect("every part parses");
        assert_eq!(items.len(), 6);
        assert!(matches!(items[0], RtcpItem::ReceiverReport { .. }));
        match &items[1] {
            RtcpItem::Nack {
                media_ssrc, pairs, ..
            } => {
                assert_eq!(*media_ssrc, 2);
                assert_eq!(pairs.clone().seqs().collect::<Vec<_>>(), [10, 11, 13, 40]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(items[2], RtcpItem::Pli { media_ssrc: 2, .. }));
        assert!(matches!(items[3], RtcpItem::Fir { .. }));
        assert!(matches!(items[5], RtcpItem::SenderReport { .. }));
        assert!(nack(1, 2, &[]).is_empty());
    }
}
