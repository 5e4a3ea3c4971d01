//! Producer-side packet store for retransmissions, and RTX (RFC 4588) wrapping.
//!
//! Each producer stream keeps its recent packets once in a [`PacketStore`]; a consumer
//! answering a NACK maps its output sequence number back to the input one
//! ([`crate::seq::SeqRewriter::input_for_output`]), copies the stored packet into its send
//! buffer, rewrites the header and, if RTX was negotiated, wraps it with [`write_rtx`].

use crate::rtp::{RtpHeaderInfo, set_payload_type, set_sequence_number, set_ssrc};

/// Metadata of one slot; the packet bytes live in the store's shared buffer.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    ext_seq: u64,
    arrival_ms: u64,
    len: usize,
    used: bool,
}

/// A stored packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredPacket<'a> {
    /// Arrival time given to [`PacketStore::insert`], in milliseconds.
    pub arrival_ms: u64,
    /// The packet bytes.
    pub data: &'a [u8],
}

/// Fixed set of preallocated packet slots, indexed by extended sequence number modulo the
/// slot count. A newer packet overwrites the slot of the one `slots` numbers before it.
#[derive(Debug, Clone)]
pub struct PacketStore {
    slot_size: usize,
    slots: Box<[Slot]>,
    buf: Box<[u8]>,
}

impl PacketStore {
    /// A store of `slots` packets of up to `slot_size` bytes each, all allocated now.
    /// `slots` is raised to at least 1.
    pub fn new(slots: usize, slot_size: usize) -> Self {
        let slots = slots.max(1);
        Self {
            slot_size,
            slots: vec![Slot::default(); slots].into_boxed_slice(),
            buf: vec![0; slots * slot_size].into_boxed_slice(),
        }
    }

    fn index(&self, ext_seq: u64) -> usize {
        // The remainder is below `slots.len()`, so it fits in usize.
        (ext_seq % self.slots.len() as u64) as usize
    }

    /// Stores a copy of `packet`. Returns false (and stores nothing) if it is larger than
    /// a slot or older than the packet already holding its slot.
    pub fn insert(&mut self, ext_seq: u64, arrival_ms: u64, packet: &[u8]) -> bool {
        if packet.len() > self.slot_size {
            return false;
        }
        let i = self.index(ext_seq);
        let slot = &mut self.slots[i];
        if slot.used && slot.ext_seq > ext_seq {
            return false;
        }
        *slot = Slot {
            ext_seq,
            arrival_ms,
            len: packet.len(),
            used: true,
        };
        let start = i * self.slot_size;
        self.buf[start..start + packet.len()].copy_from_slice(packet);
        true
    }

    /// The stored packet with this extended sequence number and its arrival time.
    pub fn get_entry(&self, ext_seq: u64) -> Option<StoredPacket<'_>> {
        let i = self.index(ext_seq);
        let slot = &self.slots[i];
        (slot.used && slot.ext_seq == ext_seq).then(|| {
            let start = i * self.slot_size;
            StoredPacket {
                arrival_ms: slot.arrival_ms,
                data: &self.buf[start..start + slot.len],
            }
        })
    }

    /// The stored packet with this extended sequence number.
    pub fn get(&self, ext_seq: u64) -> Option<&[u8]> {
        self.get_entry(ext_seq).map(|p| p.data)
    }

    /// Forgets all packets (the memory is kept).
    pub fn clear(&mut self) {
        self.slots.fill(Slot::default());
    }
}

/// Writes `original` as an RTX packet into `out`: the same header (CSRCs and extensions
/// kept, padding dropped) with `rtx_ssrc`, `rtx_pt` and `rtx_seq`, then the original
/// sequence number (OSN) and the original payload. Returns the length written, or `None`
/// if `out` is too small or `info` does not describe `original`.
pub fn write_rtx(
    original: &[u8],
    info: &RtpHeaderInfo,
    rtx_ssrc: u32,
    rtx_pt: u8,
    rtx_seq: u16,
    out: &mut [u8],
) -> Option<usize> {
    let header = original.get(..info.payload_offset)?;
    let payload = info.payload(original);
    if payload.len() != info.payload_len || header.len() < crate::rtp::RTP_HEADER_LEN {
        return None;
    }
    let len = header.len() + 2 + payload.len();
    let out = out.get_mut(..len)?;
    out[..header.len()].copy_from_slice(header);
    out[header.len()..header.len() + 2].copy_from_slice(&info.sequence_number.to_be_bytes());
    out[header.len() + 2..].copy_from_slice(payload);
    out[0] &= !0x20; // padding not carried over
    set_ssrc(out, rtx_ssrc);
    set_payload_type(out, rtx_pt);
    set_sequence_number(out, rtx_seq);
    Some(len)
}

/// Turns a received RTX packet back into the original packet, in place: the OSN is
/// removed, the sequence number restored from it and the SSRC and payload type set to the
/// original ones; padding is dropped. Returns the new packet length, or `None` if the
/// payload has no room for an OSN or `info` does not describe `packet`.
pub fn unwrap_rtx(
    packet: &mut [u8],
    info: &RtpHeaderInfo,
    original_ssrc: u32,
    original_pt: u8,
) -> Option<usize> {
    let start = info.payload_offset;
    let end = start + info.payload_len;
    if info.payload_len < 2 || end > packet.len() || start < crate::rtp::RTP_HEADER_LEN {
        return None;
    }
    let osn = u16::from_be_bytes([packet[start], packet[start + 1]]);
    packet.copy_within(start + 2..end, start);
    packet[0] &= !0x20;
    set_sequence_number(packet, osn);
    set_ssrc(packet, original_ssrc);
    set_payload_type(packet, original_pt);
    Some(end - 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::{ONE_BYTE_PROFILE, extensions, parse_rtp};

    fn packet(seq: u16, payload: &[u8], padding: u8) -> Vec<u8> {
        let mut p = vec![0x90, 0x80 | 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&90_000u32.to_be_bytes());
        p.extend_from_slice(&1111u32.to_be_bytes());
        p.extend_from_slice(&ONE_BYTE_PROFILE.to_be_bytes());
        p.extend_from_slice(&[0, 1, 0x10, 0x2a, 0, 0]);
        p.extend_from_slice(payload);
        if padding > 0 {
            p[0] |= 0x20;
            p.extend(std::iter::repeat_n(0, usize::from(padding) - 1));
            p.push(padding);
        }
        p
    }

    #[test]
    fn store_insert_get_and_overwrite() {
        let mut s = PacketStore::new(4, 8);
        assert!(s.insert(100, 5, b"abc"));
        assert!(s.insert(101, 6, b"defgh"));
        assert_eq!(s.get(100), Some(&b"abc"[..]));
        assert_eq!(
            s.get_entry(101),
            Some(StoredPacket {
                arrival_ms: 6,
                data: b"defgh"
            })
        );
        assert_eq!(s.get(102), None);
        // Same slot as 100, newer: overwrites; 100 is gone.
        assert!(s.insert(104, 7, b"x"));
        assert_eq!(s.get(100), None);
        assert_eq!(s.get(104), Some(&b"x"[..]));
        // Older than the slot's occupant: refused.
        assert!(!s.insert(100, 8, b"old"));
        assert_eq!(s.get(104), Some(&b"x"[..]));
        // Too big.
        assert!(!s.insert(105, 9, &[0; 9]));
        assert_eq!(s.get(105), None);
        // Exactly slot size; re-insert of the same seq replaces.
        assert!(s.insert(105, 9, &[1; 8]));
        assert!(s.insert(105, 10, &[2; 2]));
        assert_eq!(s.get(105), Some(&[2, 2][..]));
        s.clear();
        assert_eq!(s.get(101), None);
        assert_eq!(s.get(105), None);
        assert!(s.insert(101, 11, b"again"));
        assert_eq!(s.get(101), Some(&b"again"[..]));
    }

    #[test]
    fn store_keeps_a_window_of_slots_packets() {
        let mut s = PacketStore::new(16, 4);
        for seq in 65536..65536 + 100u64 {
            assert!(s.insert(seq, seq, &(seq as u32).to_be_bytes()));
        }
        for seq in 65536..65536 + 100u64 {
            let expected = (seq >= 65536 + 84).then_some((seq as u32).to_be_bytes());
            assert_eq!(s.get(seq), expected.as_ref().map(|e| &e[..]), "seq {seq}");
        }
        let zero = PacketStore::new(0, 4);
        assert_eq!(zero.get(0), None);
    }

    #[test]
    fn rtx_round_trip() {
        let original = packet(65535, b"media payload", 4);
        let info = parse_rtp(&original).unwrap();
        let mut out = [0u8; 64];
        let n = write_rtx(&original, &info, 2222, 97, 7, &mut out).unwrap();
        let rtx = &mut out[..n];
        let rinfo = parse_rtp(rtx).unwrap();
        assert_eq!(
            (rinfo.ssrc, rinfo.payload_type, rinfo.sequence_number),
            (2222, 97, 7)
        );
        assert_eq!((rinfo.marker, rinfo.timestamp), (true, 90_000));
        assert_eq!(rinfo.padding_len, 0);
        assert_eq!(rinfo.payload(rtx), b"\xff\xffmedia payload");
        assert_eq!(
            extensions(rtx, &rinfo).collect::<Vec<_>>(),
            vec![(1, &[0x2a][..])]
        );

        let len = unwrap_rtx(rtx, &rinfo, 1111, 96).unwrap();
        let restored = &rtx[..len];
        let mut expected = original.clone();
        expected[0] &= !0x20;
        expected.truncate(original.len() - 4);
        assert_eq!(restored, &expected[..]);
        assert_eq!(parse_rtp(restored).unwrap().sequence_number, 65535);
    }

    #[test]
    fn rtx_rejects_bad_input() {
        let original = packet(1, b"abc", 0);
        let info = parse_rtp(&original).unwrap();
        let needed = original.len() + 2;
        assert_eq!(
            write_rtx(&original, &info, 1, 2, 3, &mut vec![0; needed - 1]),
            None
        );
        assert_eq!(
            write_rtx(&original, &info, 1, 2, 3, &mut vec![0; needed]),
            Some(needed)
        );
        // Info from a longer packet.
        assert_eq!(
            write_rtx(
                &original[..original.len() - 1],
                &info,
                1,
                2,
                3,
                &mut [0; 64]
            ),
            None
        );
        // Payload too short for an OSN.
        let mut short = packet(1, b"a", 0);
        let sinfo = parse_rtp(&short).unwrap();
        assert_eq!(unwrap_rtx(&mut short, &sinfo, 1, 2), None);
        // A padding-only RTX probe (just the OSN) unwraps to an empty payload.
        let mut probe = packet(9, &[0x12, 0x34], 0);
        let pinfo = parse_rtp(&probe).unwrap();
        let len = unwrap_rtx(&mut probe, &pinfo, 5, 6).unwrap();
        let restored = parse_rtp(&probe[..len]).unwrap();
        assert_eq!(
            (restored.sequence_number, restored.payload_len),
            (0x1234, 0)
        );
    }
}
