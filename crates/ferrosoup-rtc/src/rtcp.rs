//! RTCP compound parsing and building without allocation (RFC 3550, RFC 4585, RFC 5104,
//! draft-alvestrand-rmcat-remb), and the report state behind SR/RR:
//! [`RecvStats`] (per received stream, produces report blocks) and [`SendStats`] (per sent
//! stream, produces sender info and measures RTT from report blocks).
//!
//! [`parse_compound`] yields typed items that borrow the datagram; the `write_*` builders
//! fill a caller buffer and return the written length, so a compound packet is built by
//! writing its parts one after the other.

use std::time::{Duration, Instant};

/// Sender report packet type.
pub const PT_SR: u8 = 200;
/// Receiver report packet type.
pub const PT_RR: u8 = 201;
/// Source description packet type.
pub const PT_SDES: u8 = 202;
/// Goodbye packet type.
pub const PT_BYE: u8 = 203;
/// Transport-layer feedback packet type (RFC 4585).
pub const PT_RTPFB: u8 = 205;
/// Payload-specific feedback packet type (RFC 4585).
pub const PT_PSFB: u8 = 206;
/// Extended report (RFC 3611).
pub const PT_XR: u8 = 207;
/// XR block type: receiver reference time (RFC 3611 §4.4).
const XR_RRTR: u8 = 4;
/// XR block type: delay since last receiver report (RFC 3611 §4.5).
const XR_DLRR: u8 = 5;

const HEADER_LEN: usize = 4;
const REPORT_BLOCK_LEN: usize = 24;
/// Most report blocks / FCI-less items one packet's 5-bit count can hold.
const MAX_COUNT: usize = 31;

/// Why an RTCP buffer could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    /// Fewer bytes than the header or its length field say; the rest of the compound is
    /// unreadable.
    #[error("RTCP packet truncated")]
    Truncated,
    /// Version field is not 2; the rest of the compound is unreadable.
    #[error("RTCP version {0} is not 2")]
    BadVersion(u8),
    /// Padding bit set with a padding count of 0 or beyond the packet.
    #[error("invalid RTCP padding")]
    BadPadding,
    /// The packet's body is too short for what its type and count announce.
    #[error("malformed RTCP packet of type {0}")]
    Malformed(u8),
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportBlock {
    /// Source this block reports on.
    pub ssrc: u32,
    /// Fraction of packets lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed on the wire; clamped when written).
    pub total_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received (0 if none).
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    fn read(b: &[u8]) -> Self {
        let lost = u32::from_be_bytes([0, b[5], b[6], b[7]]);
        // Sign-extend the 24-bit value.
        let total_lost = ((lost << 8) as i32) >> 8;
        Self {
            ssrc: be32(b, 0),
            fraction_lost: b[4],
            total_lost,
            highest_seq: be32(b, 8),
            jitter: be32(b, 12),
            last_sr: be32(b, 16),
            delay_since_last_sr: be32(b, 20),
        }
    }

    fn write(&self, out: &mut [u8]) {
        let lost = self.total_lost.clamp(-0x80_0000, 0x7f_ffff) as u32;
        out[0..4].copy_from_slice(&self.ssrc.to_be_bytes());
        out[4] = self.fraction_lost;
        out[5..8].copy_from_slice(&lost.to_be_bytes()[1..]);
        out[8..12].copy_from_slice(&self.highest_seq.to_be_bytes());
        out[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        out[16..20].copy_from_slice(&self.last_sr.to_be_bytes());
        out[20..24].copy_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }
}

/// Sender information of an SR.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderInfo {
    /// NTP timestamp (64-bit fixed point).
    pub ntp: u64,
    /// RTP timestamp corresponding to `ntp`.
    pub rtp_ts: u32,
    /// Packets sent.
    pub packets: u32,
    /// Payload octets sent.
    pub octets: u32,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Report blocks of an SR or RR, read lazily.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportBlocks<'a>(&'a [u8]);

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        let (block, rest) = self.0.split_at_checked(REPORT_BLOCK_LEN)?;
        self.0 = rest;
        Some(ReportBlock::read(block))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.0.len() / REPORT_BLOCK_LEN;
        (n, Some(n))
    }
}

impl ExactSizeIterator for ReportBlocks<'_> {}

/// SSRC list (BYE sources, REMB SSRCs), read lazily.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ssrcs<'a>(&'a [u8]);

impl Iterator for Ssrcs<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let (s, rest) = self.0.split_at_checked(4)?;
        self.0 = rest;
        Some(be32(s, 0))
    }
}

/// FIR entries `(ssrc, command sequence number)`, read lazily.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirEntries<'a>(&'a [u8]);

impl Iterator for FirEntries<'_> {
    type Item = (u32, u8);

    fn next(&mut self) -> Option<(u32, u8)> {
        let (e, rest) = self.0.split_at_checked(8)?;
        self.0 = rest;
        Some((be32(e, 0), e[4]))
    }
}

/// Generic NACK FCI entries `(pid, blp)`, read lazily.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NackPairs<'a>(&'a [u8]);

impl<'a> NackPairs<'a> {
    /// The lost sequence numbers the pairs describe: each pid, then pid + i for every set
    /// bit i - 1 of its blp.
    pub fn seqs(self) -> NackSeqs<'a> {
        NackSeqs {
            pairs: self,
            current: None,
        }
    }
}

impl Iterator for NackPairs<'_> {
    type Item = (u16, u16);

    fn next(&mut self) -> Option<(u16, u16)> {
        let (p, rest) = self.0.split_at_checked(4)?;
        self.0 = rest;
        Some((
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ))
    }
}

/// Lost sequence numbers of a generic NACK (see [`NackPairs::seqs`]).
#[derive(Debug, Clone)]
pub struct NackSeqs<'a> {
    pairs: NackPairs<'a>,
    /// Pair being expanded and the remaining blp bits.
    current: Option<(u16, u16)>,
}

impl Iterator for NackSeqs<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        match self.current {
            Some((pid, blp)) if blp != 0 => {
                let bit = blp.trailing_zeros() as u16;
                self.current = Some((pid, blp & (blp - 1)));
                Some(pid.wrapping_add(bit + 1))
            }
            _ => {
                let (pid, blp) = self.pairs.next()?;
                self.current = Some((pid, blp));
                Some(pid)
            }
        }
    }
}

/// One packet of a compound RTCP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpItem<'a> {
    /// Sender report.
    SenderReport {
        /// Sender SSRC.
        ssrc: u32,
        /// NTP / RTP timestamps and counters.
        info: SenderInfo,
        /// Reception report blocks.
        reports: ReportBlocks<'a>,
    },
    /// Receiver report.
    ReceiverReport {
        /// Reporter SSRC.
        ssrc: u32,
        /// Reception report blocks.
        reports: ReportBlocks<'a>,
    },
    /// Source description; the chunks are not interpreted.
    Sdes {
        /// Number of chunks.
        count: u8,
        /// The chunks.
        body: &'a [u8],
    },
    /// Goodbye.
    Bye {
        /// Sources leaving.
        ssrcs: Ssrcs<'a>,
    },
    /// Generic NACK (RTPFB FMT 1).
    Nack {
        /// Feedback sender.
        sender_ssrc: u32,
        /// Stream the losses are in.
        media_ssrc: u32,
        /// `(pid, blp)` entries.
        pairs: NackPairs<'a>,
    },
    /// Picture loss indication (PSFB FMT 1).
    Pli {
        /// Feedback sender.
        sender_ssrc: u32,
        /// Stream that needs a keyframe.
        media_ssrc: u32,
    },
    /// Full intra request (PSFB FMT 4, RFC 5104).
    Fir {
        /// Feedback sender.
        sender_ssrc: u32,
        /// `(ssrc, command sequence number)` entries.
        entries: FirEntries<'a>,
    },
    /// Receiver estimated maximum bitrate (PSFB FMT 15 "REMB").
    Remb {
        /// Feedback sender.
        sender_ssrc: u32,
        /// Estimated bitrate in bits per second.
        bitrate: u64,
        /// Streams the estimate applies to.
        ssrcs: Ssrcs<'a>,
    },
    /// Transport-wide congestion control feedback (RTPFB FMT 15), not interpreted.
    TransportCc {
        /// Feedback sender.
        sender_ssrc: u32,
        /// Media source field.
        media_ssrc: u32,
        /// The whole RTCP packet, header included.
        raw: &'a [u8],
    },
    /// Extended report (RFC 3611); its DLRR sub-blocks answer our receiver reference times.
    ExtendedReport {
        /// Sender SSRC.
        ssrc: u32,
        /// The report blocks.
        blocks: XrBlocks<'a>,
    },
    /// Any other packet type or feedback format.
    Other {
        /// Packet type.
        pt: u8,
        /// Count / feedback format field.
        count: u8,
        /// The whole RTCP packet, header included.
        raw: &'a [u8],
    },
}

/// The report blocks of an extended report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XrBlocks<'a>(&'a [u8]);

/// One DLRR sub-block: a receiver's answer to a receiver reference time report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DlrrItem {
    /// SSRC of the receiver the answer is for (who sent the RRTR).
    pub ssrc: u32,
    /// Middle 32 bits of the NTP time in that RRTR.
    pub last_rr: u32,
    /// Delay since it arrived, in 1/65536 s.
    pub delay: u32,
}

impl<'a> XrBlocks<'a> {
    /// `(block type, contents)` of each block; stops at the first truncated one.
    fn blocks(self) -> impl Iterator<Item = (u8, &'a [u8])> + 'a {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            let [bt, _, l0, l1, ref tail @ ..] = *rest else {
                return None;
            };
            let len = usize::from(u16::from_be_bytes([l0, l1])) * 4;
            let body = tail.get(..len)?;
            rest = &tail[len..];
            Some((bt, body))
        })
    }

    /// The sub-blocks of every DLRR block.
    pub fn dlrr(self) -> impl Iterator<Item = DlrrItem> + 'a {
        self.blocks()
            .filter(|&(bt, _)| bt == XR_DLRR)
            .flat_map(|(_, body)| {
                body.chunks_exact(12).map(|c| DlrrItem {
                    ssrc: be32(c, 0),
                    last_rr: be32(c, 4),
                    delay: be32(c, 8),
                })
            })
    }
}

impl DlrrItem {
    /// The round trip this answer measures, received at wall clock `now_ntp` (`None` for
    /// an answer to no report, or inconsistent values).
    pub fn rtt(&self, now_ntp: u64) -> Option<Duration> {
        compact_rtt(now_ntp, self.last_rr, self.delay)
    }
}

/// Round trip from a compact NTP time we sent, echoed back with the delay the peer held it
/// (both in 1/65536 s), received at `now_ntp`.
fn compact_rtt(now_ntp: u64, sent: u32, delay: u32) -> Option<Duration> {
    if sent == 0 {
        return None;
    }
    let rtt = ((now_ntp >> 16) as u32)
        .wrapping_sub(sent)
        .wrapping_sub(delay);
    if (rtt as i32) < 0 {
        return None;
    }
    Some(Duration::from_nanos(u64::from(rtt) * 1_000_000_000 / 65536))
}

/// Iterator over the packets of a compound RTCP datagram (see [`parse_compound`]).
#[derive(Debug, Clone)]
pub struct Compound<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<RtcpItem<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let buf = std::mem::take(&mut self.rest);
        if buf.len() < HEADER_LEN {
            return Some(Err(RtcpError::Truncated));
        }
        let version = buf[0] >> 6;
        if version != 2 {
            return Some(Err(RtcpError::BadVersion(version)));
        }
        let len = (usize::from(u16::from_be_bytes([buf[2], buf[3]])) + 1) * 4;
        let Some((packet, rest)) = buf.split_at_checked(len) else {
            return Some(Err(RtcpError::Truncated));
        };
        self.rest = rest;
        let mut body_end = len;
        if buf[0] & 0x20 != 0 {
            let pad = usize::from(packet[len - 1]);
            if pad == 0 || pad > len - HEADER_LEN {
                return Some(Err(RtcpError::BadPadding));
            }
            body_end -= pad;
        }
        Some(parse_packet(packet, &packet[HEADER_LEN..body_end]))
    }
}

/// Iterates over the packets of a compound RTCP datagram. A malformed packet yields an
/// error and iteration continues with the next one; a broken header or length ends it.
pub fn parse_compound(buf: &[u8]) -> Compound<'_> {
    Compound { rest: buf }
}

fn parse_packet<'a>(packet: &'a [u8], body: &'a [u8]) -> Result<RtcpItem<'a>, RtcpError> {
    let count = packet[0] & 0x1f;
    let pt = packet[1];
    let malformed = RtcpError::Malformed(pt);
    let n = usize::from(count);
    let item = match pt {
        PT_SR => {
            let blocks = body.get(24..24 + n * REPORT_BLOCK_LEN).ok_or(malformed)?;
            RtcpItem::SenderReport {
                ssrc: be32(body, 0),
                info: SenderInfo {
                    ntp: u64::from(be32(body, 4)) << 32 | u64::from(be32(body, 8)),
                    rtp_ts: be32(body, 12),
                    packets: be32(body, 16),
                    octets: be32(body, 20),
                },
                reports: ReportBlocks(blocks),
            }
        }
        PT_RR => {
            let blocks = body.get(4..4 + n * REPORT_BLOCK_LEN).ok_or(malformed)?;
            RtcpItem::ReceiverReport {
                ssrc: be32(body, 0),
                reports: ReportBlocks(blocks),
            }
        }
        PT_SDES => RtcpItem::Sdes { count, body },
        PT_BYE => RtcpItem::Bye {
            ssrcs: Ssrcs(body.get(..4 * n).ok_or(malformed)?),
        },
        PT_RTPFB | PT_PSFB => {
            if body.len() < 8 {
                return Err(malformed);
            }
            let sender_ssrc = be32(body, 0);
            let media_ssrc = be32(body, 4);
            let fci = &body[8..];
            match (pt, count) {
                (PT_RTPFB, 1) => {
                    if !fci.len().is_multiple_of(4) {
                        return Err(malformed);
                    }
                    RtcpItem::Nack {
                        sender_ssrc,
                        media_ssrc,
                        pairs: NackPairs(fci),
                    }
                }
                (PT_RTPFB, 15) => RtcpItem::TransportCc {
                    sender_ssrc,
                    media_ssrc,
                    raw: packet,
                },
                (PT_PSFB, 1) => RtcpItem::Pli {
                    sender_ssrc,
                    media_ssrc,
                },
                (PT_PSFB, 4) => {
                    if !fci.len().is_multiple_of(8) {
                        return Err(malformed);
                    }
                    RtcpItem::Fir {
                        sender_ssrc,
                        entries: FirEntries(fci),
                    }
                }
                (PT_PSFB, 15) if fci.starts_with(b"REMB") => {
                    let [_, _, _, _, num, exp_hi, m1, m2, ref ssrcs @ ..] = *fci else {
                        return Err(malformed);
                    };
                    let exp = u32::from(exp_hi >> 2);
                    let mantissa = u128::from(u32::from_be_bytes([0, exp_hi & 0x03, m1, m2]));
                    let bitrate = u64::try_from(mantissa << exp).unwrap_or(u64::MAX);
                    RtcpItem::Remb {
                        sender_ssrc,
                        bitrate,
                        ssrcs: Ssrcs(ssrcs.get(..4 * usize::from(num)).ok_or(malformed)?),
                    }
                }
                _ => RtcpItem::Other {
                    pt,
                    count,
                    raw: packet,
                },
            }
        }
        PT_XR => RtcpItem::ExtendedReport {
            ssrc: be32(body.get(..4).ok_or(malformed)?, 0),
            blocks: XrBlocks(&body[4..]),
        },
        _ => RtcpItem::Other {
            pt,
            count,
            raw: packet,
        },
    };
    Ok(item)
}

/// Writes the common header for a packet of `len` bytes (a multiple of 4).
fn write_header(out: &mut [u8], count: u8, pt: u8, len: usize) {
    out[0] = 0x80 | count;
    out[1] = pt;
    // Callers bound `len` by the caller buffer and by the count limits below; a length
    // beyond the 16-bit field is refused before this is called.
    out[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
}

/// Largest packet the 16-bit length field can describe.
const MAX_PACKET_LEN: usize = (u16::MAX as usize + 1) * 4;

/// The first `len` bytes of `buf`, if it is that long and `len` fits the length field.
fn take(buf: &mut [u8], len: usize) -> Option<&mut [u8]> {
    if len > MAX_PACKET_LEN {
        return None;
    }
    buf.get_mut(..len)
}

/// Writes a sender report with up to 31 report blocks. Returns the length, or `None` if
/// `buf` is too small or there are too many blocks.
pub fn write_sr(
    buf: &mut [u8],
    ssrc: u32,
    info: &SenderInfo,
    blocks: &[ReportBlock],
) -> Option<usize> {
    if blocks.len() > MAX_COUNT {
        return None;
    }
    let len = 28 + REPORT_BLOCK_LEN * blocks.len();
    let out = take(buf, len)?;
    write_header(out, blocks.len() as u8, PT_SR, len);
    out[4..8].copy_from_slice(&ssrc.to_be_bytes());
    out[8..16].copy_from_slice(&info.ntp.to_be_bytes());
    out[16..20].copy_from_slice(&info.rtp_ts.to_be_bytes());
    out[20..24].copy_from_slice(&info.packets.to_be_bytes());
    out[24..28].copy_from_slice(&info.octets.to_be_bytes());
    for (block, chunk) in blocks
        .iter()
        .zip(out[28..].chunks_exact_mut(REPORT_BLOCK_LEN))
    {
        block.write(chunk);
    }
    Some(len)
}

/// Writes a receiver report with up to 31 report blocks (none is valid: an empty RR).
pub fn write_rr(buf: &mut [u8], ssrc: u32, blocks: &[ReportBlock]) -> Option<usize> {
    if blocks.len() > MAX_COUNT {
        return None;
    }
    let len = 8 + REPORT_BLOCK_LEN * blocks.len();
    let out = take(buf, len)?;
    write_header(out, blocks.len() as u8, PT_RR, len);
    out[4..8].copy_from_slice(&ssrc.to_be_bytes());
    for (block, chunk) in blocks
        .iter()
        .zip(out[8..].chunks_exact_mut(REPORT_BLOCK_LEN))
    {
        block.write(chunk);
    }
    Some(len)
}

/// Writes an extended report with a receiver reference time block (RFC 3611 §4.4) at NTP
/// time `ntp`: a sender answers it with a DLRR block, which measures the round trip to a
/// peer we only receive from. Returns the length (20), or `None` if `buf` is too small.
pub fn write_xr_rrtr(buf: &mut [u8], ssrc: u32, ntp: u64) -> Option<usize> {
    let out = take(buf, 20)?;
    write_header(out, 0, PT_XR, 20);
    out[4..8].copy_from_slice(&ssrc.to_be_bytes());
    out[8..12].copy_from_slice(&[XR_RRTR, 0, 0, 2]);
    out[12..20].copy_from_slice(&ntp.to_be_bytes());
    Some(20)
}

/// Writes an extended report with one DLRR block (RFC 3611 §4.5) answering `items`.
pub fn write_xr_dlrr(buf: &mut [u8], ssrc: u32, items: &[DlrrItem]) -> Option<usize> {
    let len = 12 + 12 * items.len();
    let block_words = u16::try_from(3 * items.len()).ok()?;
    let out = take(buf, len)?;
    write_header(out, 0, PT_XR, len);
    out[4..8].copy_from_slice(&ssrc.to_be_bytes());
    out[8..10].copy_from_slice(&[XR_DLRR, 0]);
    out[10..12].copy_from_slice(&block_words.to_be_bytes());
    for (item, chunk) in items.iter().zip(out[12..].chunks_exact_mut(12)) {
        chunk[0..4].copy_from_slice(&item.ssrc.to_be_bytes());
        chunk[4..8].copy_from_slice(&item.last_rr.to_be_bytes());
        chunk[8..12].copy_from_slice(&item.delay.to_be_bytes());
    }
    Some(len)
}

/// Writes an SDES packet with one chunk carrying the CNAME item (at most 255 bytes).
pub fn write_sdes_cname(buf: &mut [u8], ssrc: u32, cname: &str) -> Option<usize> {
    let text = cname.as_bytes();
    let text_len = u8::try_from(text.len()).ok()?;
    // Item: type, length, text; then 1..=4 NUL bytes end the list and pad to 32 bits.
    let item_len = 2 + text.len();
    let chunk_len = 4 + item_len + (4 - item_len % 4);
    let len = HEADER_LEN + chunk_len;
    let out = take(buf, len)?;
    write_header(out, 1, PT_SDES, len);
    out[4..8].copy_from_slice(&ssrc.to_be_bytes());
    out[8] = 1; // CNAME
    out[9] = text_len;
    out[10..10 + text.len()].copy_from_slice(text);
    out[10 + text.len()..].fill(0);
    Some(len)
}

/// Writes a generic NACK for `seqs`, packed into `(pid, blp)` pairs: a sequence number
/// within 16 after the current pid sets a bit, anything else starts a new pair (so
/// ascending input, also across wraparound, packs best). Returns `Some(0)` (nothing
/// written) for an empty list, `None` if `buf` is too small.
pub fn write_nack(
    buf: &mut [u8],
    sender_ssrc: u32,
    media_ssrc: u32,
    seqs: &[u16],
) -> Option<usize> {
    let Some((&first, rest)) = seqs.split_first() else {
        return Some(0);
    };
    let mut len = 12;
    let (mut pid, mut blp) = (first, 0u16);
    for &seq in rest {
        match seq.wrapping_sub(pid) {
            0 => {}
            d @ 1..=16 => blp |= 1 << (d - 1),
            _ => {
                put_nack_pair(buf, &mut len, pid, blp)?;
                (pid, blp) = (seq, 0);
            }
        }
    }
    put_nack_pair(buf, &mut len, pid, blp)?;
    let out = take(buf, len)?;
    write_header(out, 1, PT_RTPFB, len);
    out[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
    out[8..12].copy_from_slice(&media_ssrc.to_be_bytes());
    Some(len)
}

/// Appends one `(pid, blp)` NACK entry at `*len`.
fn put_nack_pair(buf: &mut [u8], len: &mut usize, pid: u16, blp: u16) -> Option<()> {
    let out = take(buf, *len + 4)?;
    out[*len..*len + 2].copy_from_slice(&pid.to_be_bytes());
    out[*len + 2..*len + 4].copy_from_slice(&blp.to_be_bytes());
    *len += 4;
    Some(())
}

/// Writes a picture loss indication.
pub fn write_pli(buf: &mut [u8], sender_ssrc: u32, media_ssrc: u32) -> Option<usize> {
    let out = take(buf, 12)?;
    write_header(out, 1, PT_PSFB, 12);
    out[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
    out[8..12].copy_from_slice(&media_ssrc.to_be_bytes());
    Some(12)
}

/// Writes a full intra request with `(ssrc, command sequence number)` entries.
pub fn write_fir(buf: &mut [u8], sender_ssrc: u32, entries: &[(u32, u8)]) -> Option<usize> {
    let len = 12 + 8 * entries.len();
    let out = take(buf, len)?;
    write_header(out, 4, PT_PSFB, len);
    out[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
    out[8..12].fill(0); // media source unused (RFC 5104 §4.3.1.2)
    for (&(ssrc, seq), e) in entries.iter().zip(out[12..].chunks_exact_mut(8)) {
        e[0..4].copy_from_slice(&ssrc.to_be_bytes());
        e[4] = seq;
        e[5..8].fill(0);
    }
    Some(len)
}

/// Writes a REMB for `bitrate` bits per second (encoded as an 18-bit mantissa and 6-bit
/// exponent, rounding down) applying to up to 255 `ssrcs`.
pub fn write_remb(buf: &mut [u8], sender_ssrc: u32, bitrate: u64, ssrcs: &[u32]) -> Option<usize> {
    let num = u8::try_from(ssrcs.len()).ok()?;
    let len = 20 + 4 * ssrcs.len();
    let out = take(buf, len)?;
    let exp = (64 - bitrate.leading_zeros()).saturating_sub(18);
    let mantissa = (bitrate >> exp) as u32;
    write_header(out, 15, PT_PSFB, len);
    out[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
    out[8..12].fill(0);
    out[12..16].copy_from_slice(b"REMB");
    out[16] = num;
    out[17] = (exp as u8) << 2 | (mantissa >> 16) as u8;
    out[18..20].copy_from_slice(&(mantissa as u16).to_be_bytes());
    for (&ssrc, s) in ssrcs.iter().zip(out[20..].chunks_exact_mut(4)) {
        s.copy_from_slice(&ssrc.to_be_bytes());
    }
    Some(len)
}

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// 64-bit NTP timestamp for a wall-clock time given as time since the Unix epoch.
pub fn ntp_from_unix(since_epoch: Duration) -> u64 {
    let secs = since_epoch.as_secs() + NTP_UNIX_OFFSET_SECS;
    let frac = (u64::from(since_epoch.subsec_nanos()) << 32) / 1_000_000_000;
    secs << 32 | frac
}

/// A duration in 1/65536 s units (the DLSR / compact NTP unit), saturating.
fn to_compact(d: Duration) -> u32 {
    u32::try_from(d.as_nanos() * 65536 / 1_000_000_000).unwrap_or(u32::MAX)
}

/// `d` in units of a `clock_rate` Hz clock, wrapping like an RTP timestamp.
fn to_clock_units(d: Duration, clock_rate: u32) -> u32 {
    (d.as_nanos() * u128::from(clock_rate) / 1_000_000_000) as u32
}

/// Receive statistics of one producer stream, producing the report blocks of our RRs.
#[derive(Debug, Clone, Default)]
pub struct RecvStats {
    packets: u64,
    bytes: u64,
    /// Lowest and highest extended sequence numbers received.
    base_seq: u64,
    max_seq: u64,
    /// Cycle bits of the first sequence number, removed from the reported highest.
    cycle_base: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Arrival time origin and last transit time for the jitter.
    origin: Option<Instant>,
    last_transit: u32,
    /// Jitter in timestamp units, times 16 (RFC 3550 A.8).
    jitter_q4: u32,
    /// Middle 32 bits of the last SR's NTP timestamp, its RTP timestamp and arrival.
    last_sr: Option<(u32, u32, Instant)>,
}

impl RecvStats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a received packet (also retransmitted ones, with their original sequence
    /// number: they repair losses). Jitter is updated only by packets newer than all
    /// before, so retransmissions and reordering do not disturb it.
    pub fn on_packet(
        &mut self,
        now: Instant,
        ext_seq: u64,
        rtp_ts: u32,
        clock_rate: u32,
        bytes: usize,
    ) {
        self.packets += 1;
        self.bytes += bytes as u64;
        let Some(origin) = self.origin else {
            self.origin = Some(now);
            self.base_seq = ext_seq;
            self.max_seq = ext_seq;
            self.cycle_base = ext_seq & !0xffff;
            self.last_transit = 0u32.wrapping_sub(rtp_ts);
            return;
        };
        self.base_seq = self.base_seq.min(ext_seq);
        if ext_seq <= self.max_seq {
            return;
        }
        self.max_seq = ext_seq;
        let arrival = to_clock_units(now.saturating_duration_since(origin), clock_rate);
        let transit = arrival.wrapping_sub(rtp_ts);
        let d = (transit.wrapping_sub(self.last_transit) as i32).unsigned_abs();
        self.last_transit = transit;
        // J += (|D| - J) / 16, in 1/16 units with rounding, as in RFC 3550 A.8.
        self.jitter_q4 = self
            .jitter_q4
            .wrapping_add(d)
            .wrapping_sub((self.jitter_q4 + 8) >> 4);
    }

    /// Records a sender report of this stream.
    pub fn on_sender_report(&mut self, now: Instant, ntp: u64, rtp_ts: u32) {
        self.last_sr = Some(((ntp >> 16) as u32, rtp_ts, now));
    }

    /// Packets received (duplicates included).
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Bytes received.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Highest extended sequence number received, if any.
    pub fn highest_ext_seq(&self) -> Option<u64> {
        self.origin.map(|_| self.max_seq)
    }

    fn expected(&self) -> u64 {
        if self.origin.is_some() {
            self.max_seq - self.base_seq + 1
        } else {
            0
        }
    }

    /// Cumulative packets lost (negative with duplicates).
    pub fn cumulative_lost(&self) -> i64 {
        self.expected() as i64 - self.packets as i64
    }

    /// Interarrival jitter in timestamp units.
    pub fn jitter(&self) -> u32 {
        self.jitter_q4 >> 4
    }

    /// RTP timestamp of the last sender report and when it arrived.
    pub fn last_sender_report(&self) -> Option<(u32, Instant)> {
        self.last_sr.map(|(_, ts, at)| (ts, at))
    }

    /// The report block for this stream (`ssrc`) now; starts a new interval for the
    /// fraction lost.
    pub fn report_block(&mut self, now: Instant, ssrc: u32) -> ReportBlock {
        let expected = self.expected();
        let expected_interval = expected - self.expected_prior.min(expected);
        let received_interval = self.packets - self.received_prior.min(self.packets);
        self.expected_prior = expected;
        self.received_prior = self.packets;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some((lsr, _, at)) => (lsr, to_compact(now.saturating_duration_since(at))),
            None => (0, 0),
        };
        ReportBlock {
            ssrc,
            fraction_lost,
            total_lost: self.cumulative_lost().clamp(-0x80_0000, 0x7f_ffff) as i32,
            highest_seq: (self.max_seq - self.cycle_base) as u32,
            jitter: self.jitter(),
            last_sr,
            delay_since_last_sr,
        }
    }
}

/// Send statistics of one consumer stream: counters and timestamps for our SRs, RTT from
/// the report blocks the receiver sends back.
#[derive(Debug, Clone, Default)]
pub struct SendStats {
    packets: u64,
    octets: u64,
    /// Newest RTP timestamp sent and when.
    last: Option<(u32, Instant)>,
    rtt: Option<Duration>,
    last_report: Option<ReportBlock>,
}

impl SendStats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a sent packet with its payload size (header and padding excluded, as SR
    /// octet counts are defined). The first packet with the newest timestamp anchors the
    /// RTP clock for [`SendStats::sender_report`].
    pub fn on_packet(&mut self, now: Instant, rtp_ts: u32, payload_bytes: usize) {
        self.packets += 1;
        self.octets += payload_bytes as u64;
        let newer = self
            .last
            .is_none_or(|(ts, _)| rtp_ts.wrapping_sub(ts) as i32 > 0);
        if newer {
            self.last = Some((rtp_ts, now));
        }
    }

    /// Packets sent.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Payload octets sent.
    pub fn octets(&self) -> u64 {
        self.octets
    }

    /// Sender info for an SR at `now` (wall clock `now_ntp`), with the RTP timestamp of
    /// the newest packet extrapolated to now. `None` before the first packet.
    pub fn sender_report(&self, now: Instant, now_ntp: u64, clock_rate: u32) -> Option<SenderInfo> {
        let (ts, at) = self.last?;
        let elapsed = to_clock_units(now.saturating_duration_since(at), clock_rate);
        Some(SenderInfo {
            ntp: now_ntp,
            rtp_ts: ts.wrapping_add(elapsed),
            packets: self.packets as u32,
            octets: self.octets as u32,
        })
    }

    /// Takes a report block about this stream received at wall clock `now_ntp` and
    /// returns the round-trip time it measures (`None` if the receiver has no SR from us
    /// yet, or if the values are inconsistent).
    pub fn on_report_block(&mut self, now_ntp: u64, block: &ReportBlock) -> Option<Duration> {
        self.last_report = Some(*block);
        let rtt = compact_rtt(now_ntp, block.last_sr, block.delay_since_last_sr)?;
        self.rtt = Some(rtt);
        Some(rtt)
    }

    /// Last measured round-trip time.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Last report block received about this stream.
    pub fn last_report(&self) -> Option<ReportBlock> {
        self.last_report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc_rtcp::packet::Packet;

    #[test]
    fn xr_rrtr_answered_by_dlrr_measures_the_round_trip() {
        // We send an RRTR at NTP time t; the peer holds it 0.5 s and answers with a DLRR
        // that arrives at t + 0.6 s: 100 ms round trip.
        let t = ntp_from_unix(Duration::from_secs(1_700_000_000));
        let mut buf = [0u8; 64];
        let len = write_xr_rrtr(&mut buf, 1, t).unwrap();
        let Some(Ok(RtcpItem::ExtendedReport { ssrc: 1, blocks })) =
            parse_compound(&buf[..len]).next()
        else {
            panic!("an XR packet");
        };
        assert_eq!(blocks.dlrr().count(), 0);
        let answer = DlrrItem {
            ssrc: 1,
            last_rr: (t >> 16) as u32,
            delay: 65536 / 2,
        };
        let len = write_xr_dlrr(&mut buf, 77, &[answer, answer]).unwrap();
        let Some(Ok(RtcpItem::ExtendedReport { ssrc: 77, blocks })) =
            parse_compound(&buf[..len]).next()
        else {
            panic!("an XR packet");
        };
        let items = blocks.dlrr().collect::<Vec<_>>();
        assert_eq!(items, vec![answer, answer]);
        let now = t + ((6u64 << 32) / 10);
        let rtt = items[0].rtt(now).unwrap();
        assert!(
            rtt.abs_diff(Duration::from_millis(100)) < Duration::from_millis(1),
            "{rtt:?}"
        );
        // An answer to no report measures nothing.
        assert_eq!(
            DlrrItem {
                last_rr: 0,
                ..answer
            }
            .rtt(now),
            None
        );
        // The rtc-rtcp crate reads the same packet.
        let mut raw = Bytes::copy_from_slice(&buf[..len]);
        let pkts = rtc_rtcp::packet::unmarshal(&mut raw).unwrap();
        assert_eq!(pkts.len(), 1);
        assert_eq!(
            pkts[0].header().packet_type,
            rtc_rtcp::header::PacketType::ExtendedReport
        );
    }

    fn block(ssrc: u32) -> ReportBlock {
        ReportBlock {
            ssrc,
            fraction_lost: 25,
            total_lost: -3,
            highest_seq: 0x0001_0005,
            jitter: 77,
            last_sr: 0x1234_5678,
            delay_since_last_sr: 65536,
        }
    }

    fn items(buf: &[u8]) -> Vec<RtcpItem<'_>> {
        parse_compound(buf).map(|r| r.unwrap()).collect()
    }

    #[test]
    fn sr_rr_round_trip() {
        let mut buf = [0u8; 1500];
        let info = SenderInfo {
            ntp: 0xe000_0001_8000_0000,
            rtp_ts: u32::MAX,
            packets: 10,
            octets: 1000,
        };
        let n = write_sr(&mut buf, 1, &info, &[block(2), block(3)]).unwrap();
        let m = write_rr(&mut buf[n..], 4, &[block(5)]).unwrap();
        let e = write_rr(&mut buf[n + m..], 6, &[]).unwrap();
        assert_eq!((n, m, e), (76, 32, 8));
        let got = items(&buf[..n + m + e]);
        assert_eq!(got.len(), 3);
        let RtcpItem::SenderReport {
            ssrc,
            info: i,
            reports,
        } = &got[0]
        else {
            panic!("{got:?}");
        };
        assert_eq!((*ssrc, *i), (1, info));
        assert_eq!(
            reports.clone().collect::<Vec<_>>(),
            vec![block(2), block(3)]
        );
        assert_eq!(reports.len(), 2);
        let RtcpItem::ReceiverReport { ssrc, reports } = &got[1] else {
            panic!("{got:?}");
        };
        assert_eq!(*ssrc, 4);
        assert_eq!(reports.clone().collect::<Vec<_>>(), vec![block(5)]);
        assert!(
            matches!(&got[2], RtcpItem::ReceiverReport { ssrc: 6, reports } if reports.len() == 0)
        );
        // Limits.
        assert_eq!(
            write_sr(&mut buf[..75], 1, &info, &[block(2), block(3)]),
            None
        );
        assert_eq!(write_rr(&mut buf, 1, &[block(1); 32]), None);
        assert_eq!(write_sr(&mut buf, 1, &info, &[block(1); 32]), None);
    }

    #[test]
    fn total_lost_is_24_bit_signed() {
        let mut buf = [0u8; 64];
        for (lost, wire) in [
            (0, 0),
            (-1, -1),
            (0x7f_ffff, 0x7f_ffff),
            (0x100_0000, 0x7f_ffff),
            (-0x80_0000, -0x80_0000),
            (i32::MIN, -0x80_0000),
        ] {
            let b = ReportBlock {
                total_lost: lost,
                ..block(1)
            };
            let n = write_rr(&mut buf, 9, &[b]).unwrap();
            let RtcpItem::ReceiverReport { mut reports, .. } = items(&buf[..n]).remove(0) else {
                panic!();
            };
            assert_eq!(reports.next().unwrap().total_lost, wire, "lost {lost}");
        }
    }

    #[test]
    fn feedback_round_trip() {
        let mut buf = [0u8; 1500];
        let mut n = 0;
        n += write_pli(&mut buf[n..], 1, 2).unwrap();
        n += write_fir(&mut buf[n..], 3, &[(4, 5), (6, 255)]).unwrap();
        n += write_remb(&mut buf[n..], 7, 1_500_000, &[8, 9]).unwrap();
        n += write_nack(&mut buf[n..], 10, 11, &[65535, 0, 1, 16, 40]).unwrap();
        n += write_sdes_cname(&mut buf[n..], 12, "abc").unwrap();
        let got = items(&buf[..n]);
        assert_eq!(
            got[0],
            RtcpItem::Pli {
                sender_ssrc: 1,
                media_ssrc: 2
            }
        );
        let RtcpItem::Fir {
            sender_ssrc: 3,
            entries,
        } = got[1].clone()
        else {
            panic!("{got:?}");
        };
        assert_eq!(entries.collect::<Vec<_>>(), vec![(4, 5), (6, 255)]);
        let RtcpItem::Remb {
            sender_ssrc: 7,
            bitrate,
            ssrcs,
        } = got[2].clone()
        else {
            panic!("{got:?}");
        };
        // 1_500_000 needs 21 bits: exponent 3, mantissa 187_500, exact.
        assert_eq!(bitrate, 1_500_000);
        assert_eq!(ssrcs.collect::<Vec<_>>(), vec![8, 9]);
        let RtcpItem::Nack {
            sender_ssrc: 10,
            media_ssrc: 11,
            pairs,
        } = got[3].clone()
        else {
            panic!("{got:?}");
        };
        // 65535 with 0 (bit 0), 1 (bit 1), 16 (distance 17: new pair), 40 (new pair).
        assert_eq!(
            pairs.clone().collect::<Vec<_>>(),
            vec![(65535, 0b11), (16, 0), (40, 0)]
        );
        assert_eq!(pairs.seqs().collect::<Vec<_>>(), vec![65535, 0, 1, 16, 40]);
        assert_eq!(
            got[4],
            RtcpItem::Sdes {
                count: 1,
                body: &[0, 0, 0, 12, 1, 3, b'a', b'b', b'c', 0, 0, 0]
            }
        );
        assert_eq!(got.len(), 5);
    }

    #[test]
    fn nack_packing_limits() {
        let mut buf = [0u8; 64];
        assert_eq!(write_nack(&mut buf, 1, 2, &[]), Some(0));
        // Full bitmap: pid and the 16 following in one pair; duplicates ignored.
        let seqs: Vec<u16> = (100..=116).chain([100, 116]).collect();
        let n = write_nack(&mut buf, 1, 2, &seqs).unwrap();
        assert_eq!(n, 16);
        let RtcpItem::Nack { pairs, .. } = items(&buf[..n]).remove(0) else {
            panic!();
        };
        assert_eq!(pairs.clone().collect::<Vec<_>>(), vec![(100, 0xffff)]);
        assert_eq!(
            pairs.seqs().collect::<Vec<_>>(),
            (100..=116).collect::<Vec<_>>()
        );
        // Descending input still yields a valid (less compact) NACK.
        let n = write_nack(&mut buf, 1, 2, &[5, 4, 3]).unwrap();
        let RtcpItem::Nack { pairs, .. } = items(&buf[..n]).remove(0) else {
            panic!();
        };
        assert_eq!(pairs.seqs().collect::<Vec<_>>(), vec![5, 4, 3]);
        // Buffer too small for the pairs.
        assert_eq!(write_nack(&mut buf[..19], 1, 2, &[1, 100]), None);
        assert_eq!(write_nack(&mut buf[..20], 1, 2, &[1, 100]), Some(20));
    }

    #[test]
    fn remb_encoding_rounds_down_and_saturates() {
        let mut buf = [0u8; 64];
        for (rate, expected) in [
            (0, 0),
            (262_143, 262_143),
            (262_145, 262_144),
            (u64::MAX, ((1u64 << 18) - 1) << 46),
        ] {
            let n = write_remb(&mut buf, 1, rate, &[]).unwrap();
            let RtcpItem::Remb { bitrate, .. } = items(&buf[..n]).remove(0) else {
                panic!();
            };
            assert_eq!(bitrate, expected, "rate {rate}");
        }
        assert_eq!(write_remb(&mut buf, 1, 1, &[0; 256]), None);
    }

    #[test]
    fn sdes_cname_lengths_pad_to_32_bits() {
        let mut buf = [0u8; 300];
        for len in 0..=9 {
            let cname = "x".repeat(len);
            let n = write_sdes_cname(&mut buf, 1, &cname).unwrap();
            assert_eq!(n % 4, 0);
            let mut raw = Bytes::copy_from_slice(&buf[..n]);
            let pkts = rtc_rtcp::packet::unmarshal(&mut raw).unwrap();
            let sdes = pkts[0]
                .as_any()
                .downcast_ref::<rtc_rtcp::source_description::SourceDescription>()
                .unwrap();
            assert_eq!(sdes.chunks[0].source, 1);
            assert_eq!(sdes.chunks[0].items[0].text, cname.as_bytes());
        }
        assert_eq!(write_sdes_cname(&mut buf, 1, &"y".repeat(256)), None);
    }

    #[test]
    fn malformed_input() {
        // Too short for a header, bad version, length beyond the buffer.
        assert_eq!(
            parse_compound(&[0x80, 201]).collect::<Vec<_>>(),
            vec![Err(RtcpError::Truncated)]
        );
        assert_eq!(
            parse_compound(&[0x40, 201, 0, 1, 0, 0, 0, 0]).collect::<Vec<_>>(),
            vec![Err(RtcpError::BadVersion(1))]
        );
        assert_eq!(
            parse_compound(&[0x80, 201, 0, 2, 0, 0, 0, 0]).collect::<Vec<_>>(),
            vec![Err(RtcpError::Truncated)]
        );
        // An RR announcing a block it does not have, then a valid PLI: the error is
        // reported and parsing continues.
        let mut buf = vec![0x81, 201, 0, 1, 0, 0, 0, 9];
        let mut pli = [0u8; 12];
        write_pli(&mut pli, 1, 2).unwrap();
        buf.extend_from_slice(&pli);
        assert_eq!(
            parse_compound(&buf).collect::<Vec<_>>(),
            vec![
                Err(RtcpError::Malformed(PT_RR)),
                Ok(RtcpItem::Pli {
                    sender_ssrc: 1,
                    media_ssrc: 2
                })
            ]
        );
        // Padding: valid, zero, too large.
        let padded = [0xa0, 201, 0, 2, 0, 0, 0, 7, 0, 0, 0, 4];
        assert_eq!(
            items(&padded),
            vec![RtcpItem::ReceiverReport {
                ssrc: 7,
                reports: ReportBlocks(&[])
            }]
        );
        let mut bad = padded;
        bad[11] = 0;
        assert_eq!(
            parse_compound(&bad).next(),
            Some(Err(RtcpError::BadPadding))
        );
        bad[11] = 9;
        assert_eq!(
            parse_compound(&bad).next(),
            Some(Err(RtcpError::BadPadding))
        );
        // Truncated bodies of each type.
        for (pt, fmt, body) in [
            (PT_SR, 0, &[0u8; 20][..]),
            (PT_BYE, 2, &[0; 4][..]),
            (PT_RTPFB, 1, &[0; 4][..]),
            (PT_PSFB, 4, &[0; 12][..]),
        ] {
            let mut p = vec![0x80 | fmt, pt, 0, 0];
            p.extend_from_slice(body);
            p.resize(p.len().next_multiple_of(4), 0);
            let words = (p.len() / 4 - 1) as u16;
            p[2..4].copy_from_slice(&words.to_be_bytes());
            assert_eq!(
                parse_compound(&p).next(),
                Some(Err(RtcpError::Malformed(pt))),
                "pt {pt} fmt {fmt} len {}",
                body.len()
            );
        }
        // A REMB announcing more SSRCs than it holds.
        let mut remb = [0u8; 24];
        let n = write_remb(&mut remb, 1, 1000, &[5]).unwrap();
        remb[16] = 2;
        assert_eq!(
            parse_compound(&remb[..n]).next(),
            Some(Err(RtcpError::Malformed(PT_PSFB)))
        );
    }

    #[test]
    fn other_and_bye_and_transport_cc() {
        // APP packet, BYE with two sources, TWCC with some FCI, unknown PSFB format.
        let mut buf = vec![0x80, 204, 0, 2, 0, 0, 0, 1, b'n', b'a', b'm', b'e'];
        buf.extend_from_slice(&[0x82, 203, 0, 2, 0, 0, 0, 5, 0, 0, 0, 6]);
        let twcc = [0x8f, 205, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 1, 0, 3];
        buf.extend_from_slice(&twcc);
        buf.extend_from_slice(&[0x82, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]);
        let got = items(&buf);
        assert_eq!(
            got[0],
            RtcpItem::Other {
                pt: 204,
                count: 0,
                raw: &buf[..12]
            }
        );
        let RtcpItem::Bye { ssrcs } = got[1].clone() else {
            panic!("{got:?}");
        };
        assert_eq!(ssrcs.collect::<Vec<_>>(), vec![5, 6]);
        assert_eq!(
            got[2],
            RtcpItem::TransportCc {
                sender_ssrc: 1,
                media_ssrc: 2,
                raw: &twcc[..]
            }
        );
        assert!(matches!(
            got[3],
            RtcpItem::Other {
                pt: 206,
                count: 2,
                ..
            }
        ));
    }

    #[test]
    fn our_output_parses_in_rtc_rtcp() {
        use rtc_rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
        use rtc_rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
        use rtc_rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
        use rtc_rtcp::receiver_report::ReceiverReport;
        use rtc_rtcp::sender_report::SenderReport;
        use rtc_rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

        let mut buf = [0u8; 1500];
        let info = SenderInfo {
            ntp: 0x0102_0304_0506_0708,
            rtp_ts: 9,
            packets: 10,
            octets: 11,
        };
        let mut n = write_sr(&mut buf, 1, &info, &[block(2)]).unwrap();
        n += write_rr(&mut buf[n..], 3, &[block(4)]).unwrap();
        n += write_nack(&mut buf[n..], 5, 6, &[65530, 65535, 3, 100]).unwrap();
        n += write_pli(&mut buf[n..], 7, 8).unwrap();
        n += write_fir(&mut buf[n..], 9, &[(10, 11)]).unwrap();
        n += write_remb(&mut buf[n..], 12, 2_000_000, &[13, 14]).unwrap();
        let mut raw = Bytes::copy_from_slice(&buf[..n]);
        let pkts = rtc_rtcp::packet::unmarshal(&mut raw).unwrap();
        assert_eq!(pkts.len(), 6);

        let theirs = |b: ReportBlock| rtc_rtcp::reception_report::ReceptionReport {
            ssrc: b.ssrc,
            fraction_lost: b.fraction_lost,
            total_lost: (b.total_lost as u32) & 0xff_ffff,
            last_sequence_number: b.highest_seq,
            jitter: b.jitter,
            last_sender_report: b.last_sr,
            delay: b.delay_since_last_sr,
        };
        let sr = pkts[0].as_any().downcast_ref::<SenderReport>().unwrap();
        assert_eq!(
            (
                sr.ssrc,
                sr.ntp_time,
                sr.rtp_time,
                sr.packet_count,
                sr.octet_count
            ),
            (1, info.ntp, 9, 10, 11)
        );
        assert_eq!(sr.reports, vec![theirs(block(2))]);
        let rr = pkts[1].as_any().downcast_ref::<ReceiverReport>().unwrap();
        assert_eq!((rr.ssrc, rr.reports.clone()), (3, vec![theirs(block(4))]));
        let nack = pkts[2]
            .as_any()
            .downcast_ref::<TransportLayerNack>()
            .unwrap();
        assert_eq!((nack.sender_ssrc, nack.media_ssrc), (5, 6));
        let lost: Vec<u16> = nack.nacks.iter().flat_map(|p| p.packet_list()).collect();
        assert_eq!(lost, vec![65530, 65535, 3, 100]);
        let pli = pkts[3]
            .as_any()
            .downcast_ref::<PictureLossIndication>()
            .unwrap();
        assert_eq!((pli.sender_ssrc, pli.media_ssrc), (7, 8));
        let fir = pkts[4].as_any().downcast_ref::<FullIntraRequest>().unwrap();
        assert_eq!(fir.sender_ssrc, 9);
        assert_eq!((fir.fir[0].ssrc, fir.fir[0].sequence_number), (10, 11));
        let remb = pkts[5]
            .as_any()
            .downcast_ref::<ReceiverEstimatedMaximumBitrate>()
            .unwrap();
        assert_eq!((remb.sender_ssrc, remb.ssrcs.clone()), (12, vec![13, 14]));
        assert_eq!(remb.bitrate, 2_000_000.0);
    }

    #[test]
    fn rtc_rtcp_output_parses_here() {
        use rtc_rtcp::goodbye::Goodbye;
        use rtc_rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
        use rtc_rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
        use rtc_rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
        use rtc_rtcp::reception_report::ReceptionReport;
        use rtc_rtcp::sender_report::SenderReport;
        use rtc_rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};

        let report = ReceptionReport {
            ssrc: 2,
            fraction_lost: 3,
            total_lost: 0xff_fffe,
            last_sequence_number: 70_000,
            jitter: 5,
            last_sender_report: 6,
            delay: 7,
        };
        let pkts: Vec<Box<dyn Packet>> = vec![
            Box::new(SenderReport {
                ssrc: 1,
                ntp_time: 0xaabb_ccdd_0011_2233,
                rtp_time: 44,
                packet_count: 55,
                octet_count: 66,
                reports: vec![report.clone()],
                profile_extensions: Bytes::new(),
            }),
            Box::new(TransportLayerNack {
                sender_ssrc: 8,
                media_ssrc: 9,
                nacks: vec![NackPair {
                    packet_id: 65535,
                    lost_packets: 0b101,
                }],
            }),
            Box::new(PictureLossIndication {
                sender_ssrc: 10,
                media_ssrc: 11,
            }),
            Box::new(FullIntraRequest {
                sender_ssrc: 12,
                media_ssrc: 0,
                fir: vec![FirEntry {
                    ssrc: 13,
                    sequence_number: 14,
                }],
            }),
            Box::new(ReceiverEstimatedMaximumBitrate {
                sender_ssrc: 15,
                bitrate: 8_000_000.0,
                ssrcs: vec![16],
            }),
            Box::new(Goodbye {
                sources: vec![17],
                reason: Bytes::new(),
            }),
        ];
        let raw = rtc_rtcp::packet::marshal(&pkts).unwrap();
        let got = items(&raw);
        assert_eq!(got.len(), 6);
        let RtcpItem::SenderReport {
            ssrc: 1,
            info,
            reports,
        } = got[0].clone()
        else {
            panic!("{got:?}");
        };
        assert_eq!(
            info,
            SenderInfo {
                ntp: 0xaabb_ccdd_0011_2233,
                rtp_ts: 44,
                packets: 55,
                octets: 66
            }
        );
        assert_eq!(
            reports.collect::<Vec<_>>(),
            vec![ReportBlock {
                ssrc: 2,
                fraction_lost: 3,
                total_lost: -2,
                highest_seq: 70_000,
                jitter: 5,
                last_sr: 6,
                delay_since_last_sr: 7,
            }]
        );
        let RtcpItem::Nack {
            sender_ssrc: 8,
            media_ssrc: 9,
            pairs,
        } = got[1].clone()
        else {
            panic!("{got:?}");
        };
        assert_eq!(pairs.seqs().collect::<Vec<_>>(), vec![65535, 0, 2]);
        assert_eq!(
            got[2],
            RtcpItem::Pli {
                sender_ssrc: 10,
                media_ssrc: 11
            }
        );
        let RtcpItem::Fir {
            sender_ssrc: 12,
            entries,
        } = got[3].clone()
        else {
            panic!("{got:?}");
        };
        assert_eq!(entries.collect::<Vec<_>>(), vec![(13, 14)]);
        let RtcpItem::Remb {
            sender_ssrc: 15,
            bitrate,
            ssrcs,
        } = got[4].clone()
        else {
            panic!("{got:?}");
        };
        assert_eq!((bitrate, ssrcs.collect::<Vec<_>>()), (8_000_000, vec![16]));
        let RtcpItem::Bye { ssrcs } = got[5].clone() else {
            panic!("{got:?}");
        };
        assert_eq!(ssrcs.collect::<Vec<_>>(), vec![17]);
    }

    #[test]
    fn ntp_conversion() {
        assert_eq!(ntp_from_unix(Duration::ZERO), NTP_UNIX_OFFSET_SECS << 32);
        assert_eq!(
            ntp_from_unix(Duration::from_millis(1500)),
            (NTP_UNIX_OFFSET_SECS + 1) << 32 | 0x8000_0000
        );
    }

    #[test]
    fn recv_stats_loss_and_fraction() {
        let t0 = Instant::now();
        let mut s = RecvStats::new();
        assert_eq!(s.highest_ext_seq(), None);
        assert_eq!(
            s.report_block(t0, 1),
            ReportBlock {
                ssrc: 1,
                ..Default::default()
            }
        );
        // 65536 + 65530 ..= 65536 + 65545 (crossing a wrap) with 4 lost.
        let base = 65536 + 65530;
        for i in (0..16u64).filter(|i| ![3, 4, 9].contains(i)) {
            s.on_packet(t0, base + i, 0, 90_000, 100);
        }
        assert_eq!(s.packets(), 13);
        assert_eq!(s.bytes(), 1300);
        assert_eq!(s.highest_ext_seq(), Some(base + 15));
        let b = s.report_block(t0, 42);
        assert_eq!(b.ssrc, 42);
        assert_eq!(b.total_lost, 3);
        assert_eq!(b.fraction_lost, (3 * 256 / 16) as u8);
        // Cycle count starts at 0: 65530 + 15 = one wrap, seq 9.
        assert_eq!(b.highest_seq, 0x0001_0009);
        // Next interval: the retransmission of one loss arrives, plus 4 new packets.
        s.on_packet(t0, base + 3, 0, 90_000, 100);
        for i in 16..20 {
            s.on_packet(t0, base + i, 0, 90_000, 100);
        }
        let b = s.report_block(t0, 42);
        assert_eq!(b.total_lost, 2);
        assert_eq!(b.fraction_lost, 0); // more received than expected in the interval
        // Duplicates make the total negative.
        for _ in 0..5 {
            s.on_packet(t0, base + 19, 0, 90_000, 100);
        }
        assert_eq!(s.cumulative_lost(), -3);
        assert_eq!(s.report_block(t0, 42).total_lost, -3);
        // A packet older than the first one widens the expected range.
        s.on_packet(t0, base - 1, 0, 90_000, 100);
        assert_eq!(s.cumulative_lost(), -3);
    }

    #[test]
    fn recv_stats_jitter_matches_hand_computation() {
        // 90 kHz, packets every 20 ms (1800 ticks). Packet 2 arrives 10 ms late.
        //   p1: ts 1000, arrival 0          → transit -1000
        //   p2: ts 2800, arrival 30 ms=2700 → transit  -100, D = 900, J16 = 900
        //   p3: ts 4600, arrival 40 ms=3600 → transit -1000, D = 900,
        //       J16 = 900 + 900 - ((900 + 8) >> 4) = 1744  → J = 1744 >> 4 = 109
        //   (float: J1 = 56.25, J2 = 56.25 + (900 - 56.25) / 16 = 108.98)
        let t0 = Instant::now();
        let mut s = RecvStats::new();
        s.on_packet(t0, 10, 1000, 90_000, 1);
        s.on_packet(t0 + Duration::from_millis(30), 11, 2800, 90_000, 1);
        assert_eq!(s.jitter(), 56);
        s.on_packet(t0 + Duration::from_millis(40), 12, 4600, 90_000, 1);
        assert_eq!(s.jitter(), 109);
        // A retransmission arriving late does not change the jitter.
        s.on_packet(t0 + Duration::from_millis(500), 11, 2800, 90_000, 1);
        assert_eq!(s.jitter(), 109);
        // Perfectly paced packets, also across the timestamp wrap, decay it (after the
        // jump of the first one, whose transit differs from the earlier packets').
        let mut ts = u32::MAX - 900;
        let mut now = t0 + Duration::from_millis(40);
        let mut last = s.jitter();
        for seq in 13..200 {
            now += Duration::from_millis(20);
            ts = ts.wrapping_add(1800);
            s.on_packet(now, seq, ts, 90_000, 1);
            if seq > 14 {
                assert!(s.jitter() <= last, "seq {seq}");
            }
            last = s.jitter();
        }
        assert_eq!(s.report_block(now, 1).jitter, 0);
    }

    #[test]
    fn recv_stats_lsr_dlsr() {
        let t0 = Instant::now();
        let mut s = RecvStats::new();
        s.on_packet(t0, 1, 0, 48_000, 1);
        s.on_sender_report(t0, 0x1122_3344_5566_7788, 999);
        assert_eq!(s.last_sender_report(), Some((999, t0)));
        let b = s.report_block(t0 + Duration::from_millis(250), 1);
        assert_eq!(b.last_sr, 0x3344_5566);
        assert_eq!(b.delay_since_last_sr, 65536 / 4);
    }

    #[test]
    fn send_stats_sender_report_and_rtt() {
        let t0 = Instant::now();
        let mut s = SendStats::new();
        assert_eq!(s.sender_report(t0, 1, 90_000), None);
        s.on_packet(t0, u32::MAX - 899, 1000);
        s.on_packet(t0 + Duration::from_millis(10), u32::MAX - 899, 500);
        // An older timestamp (retransmission) does not move the reference.
        s.on_packet(t0 + Duration::from_millis(20), u32::MAX - 5000, 100);
        assert_eq!((s.packets(), s.octets()), (3, 1600));
        let sr = s
            .sender_report(t0 + Duration::from_millis(100), 77, 90_000)
            .unwrap();
        // 100 ms at 90 kHz = 9000 ticks after the reference, wrapping.
        assert_eq!(
            sr,
            SenderInfo {
                ntp: 77,
                rtp_ts: 8100,
                packets: 3,
                octets: 1600
            }
        );

        // RTT: SR sent at NTP T, receiver held it 0.5 s, RR arrives at T + 0.6 s.
        let sent_ntp = ntp_from_unix(Duration::from_secs(1_000));
        let block = ReportBlock {
            last_sr: (sent_ntp >> 16) as u32,
            delay_since_last_sr: 65536 / 2,
            ..Default::default()
        };
        let now_ntp = ntp_from_unix(Duration::from_millis(1_000_600));
        let rtt = s.on_report_block(now_ntp, &block).unwrap();
        assert!(
            rtt.abs_diff(Duration::from_millis(100)) < Duration::from_micros(100),
            "{rtt:?}"
        );
        assert_eq!(s.rtt(), Some(rtt));
        assert_eq!(s.last_report(), Some(block));
        // No SR yet on the other side, and a DLSR larger than the elapsed time.
        assert_eq!(s.on_report_block(now_ntp, &ReportBlock::default()), None);
        let bogus = ReportBlock {
            delay_since_last_sr: 65536,
            ..block
        };
        assert_eq!(s.on_report_block(now_ntp, &bogus), None);
        assert_eq!(s.rtt(), Some(rtt));
    }
}
