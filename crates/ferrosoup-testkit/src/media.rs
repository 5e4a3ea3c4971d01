//! Client-side media logic as a browser runs it, for tests over a [`SimClient`]: a
//! [`StreamSender`] numbers packets, keeps them and answers NACKs with RTX; a
//! [`StreamReceiver`] counts what arrives (RTX unwrapped) and NACKs gaps.
//!
//! [`SimClient`]: crate::SimClient

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use ferrosoup_rtc::nack::{MAX_MISSING, NackGenerator};
use ferrosoup_rtc::rtcp::{self, RtcpItem};
use ferrosoup_rtc::rtp::parse_rtp;
use ferrosoup_rtc::rtx::{unwrap_rtx, write_rtx};
use ferrosoup_rtc::seq::SeqExtender;

use crate::packets::RtpPacket;

/// Packets a [`StreamSender`] keeps for retransmission.
const HISTORY: usize = 1024;

/// One outgoing RTP stream: numbering, a history, RTX answers to NACKs, PLI counts.
#[derive(Debug)]
pub struct StreamSender {
    ssrc: u32,
    payload_type: u8,
    /// RTX SSRC and payload type, if negotiated.
    rtx: Option<(u32, u8)>,
    seq: u16,
    rtx_seq: u16,
    history: VecDeque<(u16, Vec<u8>)>,
    /// Packets sent (retransmissions excluded).
    pub sent: u64,
    /// Retransmissions sent.
    pub retransmitted: u64,
    /// PLI or FIR received for this stream.
    pub keyframe_requests: u64,
}

impl StreamSender {
    /// A stream under `ssrc` with `payload_type`, RTX as `(ssrc, payload type)` if given,
    /// starting at sequence number `first_seq`.
    pub fn new(ssrc: u32, payload_type: u8, rtx: Option<(u32, u8)>, first_seq: u16) -> Self {
        Self {
            ssrc,
            payload_type,
            rtx,
            seq: first_seq,
            rtx_seq: first_seq.wrapping_mul(7),
            history: VecDeque::with_capacity(HISTORY),
            sent: 0,
            retransmitted: 0,
            keyframe_requests: 0,
        }
    }

    /// The stream's SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The next packet: `packet` with this stream's SSRC, payload type and sequence number
    /// filled in, kept for retransmission.
    pub fn next(&mut self, packet: RtpPacket) -> Vec<u8> {
        let mut packet = packet;
        packet.ssrc = self.ssrc;
        packet.payload_type = self.payload_type;
        packet.seq = self.seq;
        let bytes = packet.build();
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back((self.seq, bytes.clone()));
        self.seq = self.seq.wrapping_add(1);
        self.sent += 1;
        bytes
    }

    /// Reads feedback the client received: returns the retransmissions to send for NACKs
    /// about this stream (as RTX when negotiated), counts keyframe requests.
    pub fn on_rtcp(&mut self, compound: &[u8]) -> Vec<Vec<u8>> {
        let mut resend = Vec::new();
        for item in rtcp::parse_compound(compound).flatten() {
            match item {
                RtcpItem::Nack {
                    media_ssrc, pairs, ..
                } if media_ssrc == self.ssrc => {
                    for seq in pairs.seqs() {
                        if let Some(p) = self.retransmission(seq) {
                            resend.push(p);
                        }
                    }
                }
                RtcpItem::Pli { media_ssrc, .. } if media_ssrc == self.ssrc => {
                    self.keyframe_requests += 1;
                }
                RtcpItem::Fir { entries, .. } => {
                    self.keyframe_requests += entries
                        .into_iter()
                        .filter(|(ssrc, _)| *ssrc == self.ssrc)
                        .count() as u64;
                }
                _ => {}
            }
        }
        resend
    }

    fn retransmission(&mut self, seq: u16) -> Option<Vec<u8>> {
        let (_, original) = self.history.iter().find(|(s, _)| *s == seq)?;
        self.retransmitted += 1;
        let Some((rtx_ssrc, rtx_pt)) = self.rtx else {
            return Some(original.clone());
        };
        let info = parse_rtp(original).ok()?;
        let mut out = vec![0u8; original.len() + 2];
        let len = write_rtx(original, &info, rtx_ssrc, rtx_pt, self.rtx_seq, &mut out)?;
        out.truncate(len);
        self.rtx_seq = self.rtx_seq.wrapping_add(1);
        Some(out)
    }
}

/// One incoming RTP stream as a receiver sees it: distinct packets (RTX unwrapped, by
/// widened sequence number), and NACKs for the gaps.
#[derive(Debug)]
pub struct StreamReceiver {
    ssrc: u32,
    /// RTX SSRC and payload type, and the media payload type it repairs.
    rtx: Option<(u32, u8, u8)>,
    seq: SeqExtender,
    nack: NackGenerator,
    received: BTreeSet<u64>,
    nacks: Vec<u16>,
    /// Packets that arrived twice (after unwrapping).
    pub duplicates: u64,
    /// Packets that came as RTX.
    pub recovered: u64,
    /// NACKed sequence numbers sent.
    pub nacked: u64,
}

impl StreamReceiver {
    /// A receiver of the stream under `ssrc`; `rtx` is `(rtx ssrc, rtx pt, media pt)`.
    pub fn new(ssrc: u32, rtx: Option<(u32, u8, u8)>) -> Self {
        Self {
            ssrc,
            rtx,
            seq: SeqExtender::new(),
            nack: NackGenerator::new(),
            received: BTreeSet::new(),
            nacks: Vec::with_capacity(MAX_MISSING),
            duplicates: 0,
            recovered: 0,
            nacked: 0,
        }
    }

    /// Takes a received (unprotected) RTP packet; returns whether it belongs to this
    /// stream.
    pub fn on_rtp(&mut self, now: Instant, packet: &[u8]) -> bool {
        let Ok(info) = parse_rtp(packet) else {
            return false;
        };
        let mut packet = packet.to_vec();
        let recovered = match self.rtx {
            Some((rtx_ssrc, _, media_pt)) if info.ssrc == rtx_ssrc => {
                let Some(len) = unwrap_rtx(&mut packet, &info, self.ssrc, media_pt) else {
                    return true;
                };
                packet.truncate(len);
                true
            }
            _ if info.ssrc == self.ssrc => false,
            _ => return false,
        };
        let Ok(info) = parse_rtp(&packet) else {
            return true;
        };
        let ext = self.seq.extend(info.sequence_number);
        self.nack.on_packet(now, ext, false, recovered);
        if recovered {
            self.recovered += 1;
        }
        if !self.received.insert(ext) {
            self.duplicates += 1;
        }
        true
    }

    /// A NACK for the packets missing and due at `now` (retried once per `rtt`), if any.
    pub fn poll_nack(&mut self, now: Instant, rtt: Duration, sender_ssrc: u32) -> Option<Vec<u8>> {
        self.nack.poll_nacks(now, rtt, &mut self.nacks);
        if self.nacks.is_empty() {
            return None;
        }
        self.nacked += self.nacks.len() as u64;
        let mut buf = vec![0u8; 1500];
        let len = rtcp::write_nack(&mut buf, sender_ssrc, self.ssrc, &self.nacks)?;
        buf.truncate(len);
        Some(buf)
    }

    /// When [`poll_nack`](Self::poll_nack) next has something to send.
    pub fn nack_timeout(&self) -> Option<Instant> {
        self.nack.poll_timeout()
    }

    /// Sequence number (on the wire) of the newest packet received.
    pub fn newest(&self) -> Option<u16> {
        self.received.last().map(|&ext| ext as u16)
    }

    /// Distinct packets received.
    pub fn distinct(&self) -> usize {
        self.received.len()
    }

    /// Packets between the first and the last received, both included (what should have
    /// arrived).
    pub fn span(&self) -> u64 {
        match (self.received.first(), self.received.last()) {
            (Some(a), Some(b)) => b - a + 1,
            _ => 0,
        }
    }
}
