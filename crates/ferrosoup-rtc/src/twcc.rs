//! Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-
//! extensions-01): the receive side. A [`TwccRecorder`] notes the arrival time of every
//! packet carrying a transport-wide sequence number and periodically writes RTCP
//! transport-cc feedback, which the sender's congestion controller (Chrome's GCC) needs to
//! ramp its bitrate up. Storage is a fixed ring: nothing is allocated per packet.

use std::time::{Duration, Instant};

use crate::seq::SeqExtender;

/// Packets remembered between two feedbacks; older unreported ones are skipped.
const RING: usize = 4096;
/// At most this many packet statuses go in one feedback packet (keeps it under ~1100 bytes).
const MAX_STATUSES_PER_FEEDBACK: usize = 400;
/// Receive deltas are in multiples of 250 µs.
const DELTA_UNIT_US: i64 = 250;
/// The reference time is in multiples of 64 ms.
const REFERENCE_UNIT_US: i64 = 64_000;

/// Records arrivals and writes transport-cc feedback for one transport.
pub struct TwccRecorder {
    seq: SeqExtender,
    /// Arrival (µs since `epoch`, +1 so 0 means "not received") by extended seq % RING.
    arrivals: Box<[(u64, u64)]>,
    epoch: Instant,
    /// First sequence number not yet reported.
    next_to_report: Option<u64>,
    /// Highest sequence number received.
    highest: Option<u64>,
    feedback_count: u8,
}

impl TwccRecorder {
    /// A recorder whose times count from `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            seq: SeqExtender::new(),
            arrivals: vec![(0, 0); RING].into_boxed_slice(),
            epoch: now,
            next_to_report: None,
            highest: None,
            feedback_count: 0,
        }
    }

    /// Notes the arrival of the packet with transport-wide sequence number `seq`.
    pub fn on_packet(&mut self, now: Instant, seq: u16) {
        let ext = self.seq.extend(seq);
        let at = now.saturating_duration_since(self.epoch).as_micros() as u64 + 1;
        self.arrivals[(ext % RING as u64) as usize] = (ext, at);
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        // Packets arriving after their sequence number was reported (late) are not
        // reported again.
        if self.next_to_report.is_none() {
            self.next_to_report = Some(ext);
        }
    }

    /// Whether packets are waiting to be reported.
    pub fn has_pending(&self) -> bool {
        matches!((self.next_to_report, self.highest), (Some(n), Some(h)) if n <= h)
    }

    fn arrival(&self, ext: u64) -> Option<u64> {
        let (s, at) = self.arrivals[(ext % RING as u64) as usize];
        (s == ext && at != 0).then(|| at - 1)
    }

    /// Writes one feedback packet for the oldest unreported packets into `buf` (RTCP RTPFB
    /// FMT 15) and returns its length; `None` when nothing is pending or `buf` is too small.
    /// Call again while [`TwccRecorder::has_pending`] to report the rest.
    pub fn write_feedback(
        &mut self,
        buf: &mut [u8],
        sender_ssrc: u32,
        media_ssrc: u32,
    ) -> Option<usize> {
        let (mut base, highest) = (self.next_to_report?, self.highest?);
        if base > highest {
            return None;
        }
        // Skip what fell out of the ring.
        if highest - base >= RING as u64 {
            base = highest + 1 - RING as u64;
        }
        // The first reported packet must have been received (it sets the reference time).
        while base <= highest && self.arrival(base).is_none() {
            base += 1;
        }
        let reference = self.arrival(base)? as i64 / REFERENCE_UNIT_US;
        let limit = ((highest - base + 1) as usize).min(MAX_STATUSES_PER_FEEDBACK);

        // Statuses (0 lost, 1 small delta, 2 large delta) and deltas, on the stack. Stops
        // early where a delta does not fit 16 bits (the rest goes in the next feedback).
        let mut statuses = [0u8; MAX_STATUSES_PER_FEEDBACK];
        let mut deltas = [0i16; MAX_STATUSES_PER_FEEDBACK];
        let mut prev = reference * REFERENCE_UNIT_US;
        let mut count = 0;
        while count < limit {
            if let Some(at) = self.arrival(base + count as u64) {
                let delta = (at as i64 - prev) / DELTA_UNIT_US;
                let Ok(d) = i16::try_from(delta) else { break };
                prev += delta * DELTA_UNIT_US;
                statuses[count] = if (0..=255).contains(&delta) { 1 } else { 2 };
                deltas[count] = d;
            }
            count += 1;
        }
        let statuses = &statuses[..count];

        let header_len = 20;
        let mut pos = header_len;
        // Chunks: a run-length chunk for runs of 7+ equal statuses, else a vector of up to 7
        // two-bit statuses.
        let mut i = 0;
        while i < count {
            let run = statuses[i..]
                .iter()
                .take(0x1fff)
                .take_while(|s| **s == statuses[i])
                .count();
            let chunk: u16 = if run >= 7 {
                i += run;
                (u16::from(statuses[i - run]) << 13) | run as u16
            } else {
                let n = (count - i).min(7);
                let mut c: u16 = 0xc000; // T=1 (vector), S=1 (two-bit symbols)
                for (k, s) in statuses[i..i + n].iter().enumerate() {
                    c |= u16::from(*s) << (12 - 2 * k);
                }
                i += n;
                c
            };
            buf.get_mut(pos..pos + 2)?
                .copy_from_slice(&chunk.to_be_bytes());
            pos += 2;
        }
        for (s, d) in statuses.iter().zip(&deltas[..count]) {
            match s {
                1 => {
                    *buf.get_mut(pos)? = *d as u8;
                    pos += 1;
                }
                2 => {
                    buf.get_mut(pos..pos + 2)?.copy_from_slice(&d.to_be_bytes());
                    pos += 2;
                }
                _ => {}
            }
        }
        while pos % 4 != 0 {
            *buf.get_mut(pos)? = 0;
            pos += 1;
        }
        let header = buf.get_mut(..header_len)?;
        header[0] = 0x80 | 15;
        header[1] = 205;
        header[2..4].copy_from_slice(&((pos / 4 - 1) as u16).to_be_bytes());
        header[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
        header[8..12].copy_from_slice(&media_ssrc.to_be_bytes());
        header[12..14].copy_from_slice(&((base & 0xffff) as u16).to_be_bytes());
        header[14..16].copy_from_slice(&(count as u16).to_be_bytes());
        header[16..19].copy_from_slice(&((reference as u32) & 0x00ff_ffff).to_be_bytes()[1..]);
        header[19] = self.feedback_count;
        self.feedback_count = self.feedback_count.wrapping_add(1);
        self.next_to_report = Some(base + count as u64);
        Some(pos)
    }
}

/// How often feedback is sent while packets arrive.
pub const FEEDBACK_INTERVAL: Duration = Duration::from_millis(100);

/// Why a transport-cc feedback packet could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MalformedFeedback;

/// The header of one transport-cc feedback packet (the send side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedbackHeader {
    /// First transport-wide sequence number reported.
    pub base_seq: u16,
    /// Number of packet statuses.
    pub count: u16,
    /// Feedback packet counter (wraps).
    pub feedback_count: u8,
}

/// Reads a transport-cc feedback packet (`raw`: the whole RTCP packet, header included)
/// and calls `visit(seq, arrival_us)` for every reported packet in order: `arrival_us` is
/// its arrival time in µs on the receiver's clock (reference time + deltas), `None` when
/// it was not received. Nothing is allocated. The reference time wraps every ~12 days
/// (24 bits of 64 ms); callers use differences between packets of nearby feedbacks.
pub fn read_feedback(
    raw: &[u8],
    mut visit: impl FnMut(u16, Option<i64>),
) -> Result<FeedbackHeader, MalformedFeedback> {
    let header = raw.get(..20).ok_or(MalformedFeedback)?;
    if header[0] & 0x1f != 15 || header[1] != 205 {
        return Err(MalformedFeedback);
    }
    let base_seq = u16::from_be_bytes([header[12], header[13]]);
    let count = u16::from_be_bytes([header[14], header[15]]);
    let reference = i64::from(u32::from_be_bytes([0, header[16], header[17], header[18]]));
    let feedback_count = header[19];
    // Statuses are read chunk by chunk while deltas are consumed after all chunks: find
    // where the deltas start first.
    let mut pos = 20;
    let mut seen = 0usize;
    while seen < usize::from(count) {
        let chunk = raw.get(pos..pos + 2).ok_or(MalformedFeedback)?;
        seen += chunk_len(u16::from_be_bytes([chunk[0], chunk[1]]));
        pos += 2;
    }
    let mut deltas = pos;
    let mut at = reference * REFERENCE_UNIT_US;
    let mut seq = base_seq;
    let mut left = usize::from(count);
    let mut chunk_pos = 20;
    while left > 0 {
        let chunk = u16::from_be_bytes([raw[chunk_pos], raw[chunk_pos + 1]]);
        chunk_pos += 2;
        let n = chunk_len(chunk).min(left);
        for k in 0..n {
            let status = chunk_status(chunk, k);
            let arrival = match status {
                0 => None,
                1 => {
                    let d = *raw.get(deltas).ok_or(MalformedFeedback)?;
                    deltas += 1;
                    at += i64::from(d) * DELTA_UNIT_US;
                    Some(at)
                }
                2 => {
                    let d = raw.get(deltas..deltas + 2).ok_or(MalformedFeedback)?;
                    deltas += 2;
                    at += i64::from(i16::from_be_bytes([d[0], d[1]])) * DELTA_UNIT_US;
                    Some(at)
                }
                _ => return Err(MalformedFeedback),
            };
            visit(seq, arrival);
            seq = seq.wrapping_add(1);
        }
        left -= n;
    }
    Ok(FeedbackHeader {
        base_seq,
        count,
        feedback_count,
    })
}

/// Statuses a chunk holds: a run length, 14 one-bit or 7 two-bit symbols.
fn chunk_len(chunk: u16) -> usize {
    match (chunk >> 15, (chunk >> 14) & 1) {
        (0, _) => usize::from(chunk & 0x1fff),
        (_, 0) => 14,
        _ => 7,
    }
}

/// Status `k` of a chunk: 0 not received, 1 small delta, 2 large delta.
fn chunk_status(chunk: u16, k: usize) -> u16 {
    match (chunk >> 15, (chunk >> 14) & 1) {
        (0, _) => (chunk >> 13) & 3,
        (_, 0) => (chunk >> (13 - k)) & 1,
        _ => (chunk >> (12 - 2 * k)) & 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_rtcp::transport_feedbacks::transport_layer_cc::{SymbolTypeTcc, TransportLayerCc};
    use rtc_shared::marshal::Unmarshal;

    fn parse(buf: &[u8]) -> TransportLayerCc {
        let mut b = buf;
        TransportLayerCc::unmarshal(&mut b).expect("rtc-rtcp parses our feedback")
    }

    /// (status, delta µs) per packet as rtc-rtcp reads them.
    fn flatten(fb: &TransportLayerCc) -> Vec<(SymbolTypeTcc, i64)> {
        use rtc_rtcp::transport_feedbacks::transport_layer_cc::PacketStatusChunk;
        let mut symbols = Vec::new();
        for chunk in &fb.packet_chunks {
            match chunk {
                PacketStatusChunk::RunLengthChunk(r) => symbols.extend(std::iter::repeat_n(
                    r.packet_status_symbol,
                    r.run_length as usize,
                )),
                PacketStatusChunk::StatusVectorChunk(v) => {
                    symbols.extend(v.symbol_list.iter().copied())
                }
            }
        }
        symbols.truncate(fb.packet_status_count as usize);
        let mut deltas = fb.recv_deltas.iter();
        symbols
            .into_iter()
            .map(|s| match s {
                SymbolTypeTcc::PacketNotReceived => (s, 0),
                _ => (s, deltas.next().expect("a delta per received packet").delta),
            })
            .collect()
    }

    #[test]
    fn read_feedback_gives_back_what_the_recorder_wrote() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut r = TwccRecorder::new(t0);
        // A wrap, a loss, a late packet (large delta), a run, and a reordered one.
        let arrivals: Vec<(u16, u64)> = [(65534, 70), (65535, 71), (1, 171)]
            .into_iter()
            .chain((0..20u16).map(|k| (2 + k, 172 + u64::from(k))))
            .chain([(23, 200), (22, 201)])
            .collect();
        for (seq, at) in &arrivals {
            r.on_packet(ms(*at), *seq);
        }
        let mut buf = [0u8; 1500];
        let n = r.write_feedback(&mut buf, 1, 2).unwrap();
        let mut got = Vec::new();
        let header = read_feedback(&buf[..n], |seq, at| got.push((seq, at))).unwrap();
        assert_eq!((header.base_seq, header.count), (65534, 26));
        assert_eq!(got.len(), 26);
        assert_eq!(got[2], (0, None), "lost");
        for (seq, at) in arrivals {
            let (_, reported) = got.iter().find(|(s, _)| *s == seq).unwrap();
            assert_eq!(*reported, Some(at as i64 * 1000), "seq {seq}");
        }
        // Truncated or foreign packets are refused, never read past their end.
        for cut in [0, 19, 21, n - 4] {
            let r = read_feedback(&buf[..cut], |_, _| {});
            assert!(cut == n || r.is_err(), "cut {cut}");
        }
        let mut pli = buf;
        pli[1] = 206;
        assert_eq!(read_feedback(&pli[..n], |_, _| {}), Err(MalformedFeedback));
    }

    #[test]
    fn read_feedback_reads_one_bit_vectors() {
        // 14 one-bit statuses: received, lost, received, then lost ×11; deltas 4 and 8 (×250 µs).
        let mut raw = vec![
            0x8f, 205, 0, 5, 0, 0, 0, 1, 0, 0, 0, 2, 0, 10, 0, 3, 0, 0, 2, 0,
        ];
        raw.extend_from_slice(&[0b1010_1000, 0, 4, 8]);
        let mut got = Vec::new();
        read_feedback(&raw, |s, at| got.push((s, at))).unwrap();
        assert_eq!(
            got,
            vec![(10, Some(129_000)), (11, None), (12, Some(131_000))]
        );
    }

    #[test]
    fn feedback_reports_arrivals_losses_and_deltas() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut r = TwccRecorder::new(t0);
        assert!(!r.has_pending());
        // 65534, 65535, (0 lost), 1 late by 100 ms (large delta), then a run of 20.
        r.on_packet(ms(70), 65534);
        r.on_packet(ms(71), 65535);
        r.on_packet(ms(171), 1);
        for k in 0..20u16 {
            r.on_packet(ms(172 + u64::from(k)), 2 + k);
        }
        assert!(r.has_pending());
        let mut buf = [0u8; 1500];
        let n = r.write_feedback(&mut buf, 1, 2).unwrap();
        assert_eq!(n % 4, 0);
        let fb = parse(&buf[..n]);
        assert_eq!(
            (fb.sender_ssrc, fb.media_ssrc, fb.base_sequence_number),
            (1, 2, 65534)
        );
        assert_eq!(fb.packet_status_count, 24);
        assert_eq!(fb.reference_time, 1, "70 ms in 64 ms units");
        let got = flatten(&fb);
        use SymbolTypeTcc::*;
        assert_eq!(
            got[0],
            (PacketReceivedSmallDelta, 6_000),
            "70 ms - 64 ms reference"
        );
        assert_eq!(got[1], (PacketReceivedSmallDelta, 1_000));
        assert_eq!(got[2], (PacketNotReceived, 0));
        assert_eq!(got[3], (PacketReceivedLargeDelta, 100_000));
        assert!(
            got[4..]
                .iter()
                .all(|g| *g == (PacketReceivedSmallDelta, 1_000))
        );
        assert!(!r.has_pending(), "all reported");
        assert_eq!(r.write_feedback(&mut buf, 1, 2), None);
        // The next feedback continues after the last reported packet, with its own count.
        r.on_packet(ms(300), 22);
        let n = r.write_feedback(&mut buf, 1, 2).unwrap();
        let fb = parse(&buf[..n]);
        assert_eq!(
            (
                fb.base_sequence_number,
                fb.packet_status_count,
                fb.fb_pkt_count
            ),
            (22, 1, 1)
        );
    }

    #[test]
    fn long_gaps_are_split_over_several_feedbacks() {
        let t0 = Instant::now();
        let mut r = TwccRecorder::new(t0);
        for k in 0..1000u16 {
            // Every third packet lost, 2 ms apart.
            if k % 3 != 0 {
                r.on_packet(t0 + Duration::from_millis(2 * u64::from(k)), k);
            }
        }
        let mut buf = [0u8; 1500];
        let mut reported = 0;
        let mut next_base = 1;
        while r.has_pending() {
            let n = r.write_feedback(&mut buf, 1, 2).unwrap();
            assert!(n <= 1200, "fits a datagram: {n}");
            let fb = parse(&buf[..n]);
            assert_eq!(fb.base_sequence_number, next_base);
            let got = flatten(&fb);
            assert_eq!(got.len(), fb.packet_status_count as usize);
            reported += got
                .iter()
                .filter(|g| g.0 != SymbolTypeTcc::PacketNotReceived)
                .count();
            next_base = fb.base_sequence_number + fb.packet_status_count;
            // The next feedback starts at a received packet.
            if next_base % 3 == 0 {
                next_base += 1;
            }
        }
        assert_eq!(reported, 666);
    }
}
