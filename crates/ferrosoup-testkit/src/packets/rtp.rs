//! RTP packets (RFC 3550) with header extensions (RFC 8285), as a sender puts them on the
//! wire before SRTP.
//!
//! ```
//! use ferrosoup_testkit::packets::{RtpPacket, vp8_payload};
//!
//! let packet = RtpPacket::new(96, 1000, 90_000, 0x1234_5678)
//!     .with_marker(true)
//!     .with_mid(1, "0")
//!     .with_transport_cc(3, 17)
//!     .with_payload(vp8_payload(true, Some(5), 600));
//! let bytes = packet.build();
//! let info = ferrosoup_rtc::rtp::parse_rtp(&bytes).expect("parses");
//! assert_eq!(info.sequence_number, 1000);
//! assert_eq!(ferrosoup_rtc::rtp::find_extension(&bytes, &info, 1), Some(&b"0"[..]));
//!
//! // In a bench: the same packet written into a reused buffer, no allocation.
//! let mut buf = [0u8; 1500];
//! let len = packet.write_into(&mut buf);
//! assert_eq!(&buf[..len], &bytes[..]);
//! ```

use ferrosoup_rtc::rtp::{ONE_BYTE_PROFILE, RTP_HEADER_LEN as HEADER_LEN, TWO_BYTE_PROFILE};

/// A plain RTP packet, field by field. Building it allocates (payload, extensions);
/// [`write_into`](Self::write_into) then writes it without allocating, as often as needed
/// (change `seq` between writes).
///
/// Extensions are written in the one-byte form when every id is in 1..=14 and every value
/// 1..=16 bytes long, otherwise in the two-byte form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtpPacket {
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Marker bit (last packet of a video frame, first of a talk spurt).
    pub marker: bool,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Contributing sources.
    pub csrcs: Vec<u32>,
    /// Header extension elements `(id, value)`, in this order.
    pub extensions: Vec<(u8, Vec<u8>)>,
    /// Payload.
    pub payload: Vec<u8>,
    /// Padding bytes to append (0: no P bit; the last byte holds the count).
    pub padding: u8,
}

impl RtpPacket {
    /// A version-2 packet without marker, extensions or payload.
    pub fn new(payload_type: u8, seq: u16, timestamp: u32, ssrc: u32) -> Self {
        Self {
            payload_type: payload_type & 0x7f,
            seq,
            timestamp,
            ssrc,
            ..Self::default()
        }
    }

    /// Sets the marker bit.
    pub fn with_marker(mut self, marker: bool) -> Self {
        self.marker = marker;
        self
    }

    /// Sets the payload.
    pub fn with_payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = payload.into();
        self
    }

    /// Sets the number of padding bytes.
    pub fn with_padding(mut self, padding: u8) -> Self {
        self.padding = padding;
        self
    }

    /// Adds a contributing source.
    pub fn with_csrc(mut self, csrc: u32) -> Self {
        self.csrcs.push(csrc);
        self
    }

    /// Adds a header extension element.
    pub fn with_extension(mut self, id: u8, value: impl Into<Vec<u8>>) -> Self {
        self.extensions.push((id, value.into()));
        self
    }

    /// Adds an SDES text element (mid, rid, repaired-rid: RFC 8843, RFC 8852).
    pub fn with_sdes(self, id: u8, text: &str) -> Self {
        self.with_extension(id, text.as_bytes())
    }

    /// Adds `urn:ietf:params:rtp-hdrext:sdes:mid`.
    pub fn with_mid(self, id: u8, mid: &str) -> Self {
        self.with_sdes(id, mid)
    }

    /// Adds `urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id` (simulcast layer).
    pub fn with_rid(self, id: u8, rid: &str) -> Self {
        self.with_sdes(id, rid)
    }

    /// Adds `urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id` (RTX of a layer).
    pub fn with_repaired_rid(self, id: u8, rid: &str) -> Self {
        self.with_sdes(id, rid)
    }

    /// Adds the transport-wide-cc sequence number.
    pub fn with_transport_cc(self, id: u8, seq: u16) -> Self {
        self.with_extension(id, seq.to_be_bytes())
    }

    /// Adds abs-send-time: `value` in 6.18 fixed-point seconds (24 bits; see
    /// [`abs_send_time`]).
    pub fn with_abs_send_time(self, id: u8, value: u32) -> Self {
        self.with_extension(id, &value.to_be_bytes()[1..])
    }

    /// Adds ssrc-audio-level (RFC 6464): voice activity flag and level in -dBov (0..=127).
    pub fn with_audio_level(self, id: u8, voice: bool, level: u8) -> Self {
        self.with_extension(id, [u8::from(voice) << 7 | (level & 0x7f)])
    }

    /// Whether the extensions fit the one-byte form.
    fn one_byte_form(&self) -> bool {
        self.extensions
            .iter()
            .all(|(id, value)| (1..=14).contains(id) && (1..=16).contains(&value.len()))
    }

    /// Length of the extension block including its 4-byte header (0 without extensions).
    fn extension_block_len(&self) -> usize {
        if self.extensions.is_empty() {
            return 0;
        }
        let per_element = if self.one_byte_form() { 1 } else { 2 };
        let elements: usize = self
            .extensions
            .iter()
            .map(|(_, value)| per_element + value.len())
            .sum();
        4 + elements.next_multiple_of(4)
    }

    /// Length of the header: fixed part, CSRCs and extension block.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + 4 * self.csrcs.len() + self.extension_block_len()
    }

    /// Length of the whole packet.
    pub fn len(&self) -> usize {
        self.header_len() + self.payload.len() + usize::from(self.padding)
    }

    /// Whether the packet is empty (never: the header is always there).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the header (fixed part, CSRCs, extensions) into `buf`; returns its length.
    /// Lets a caller write the payload in place after it.
    ///
    /// # Panics
    ///
    /// If `buf` is shorter than [`header_len`](Self::header_len), there are more than 15
    /// CSRCs, or an extension does not fit the two-byte form (id 0, value over 255 bytes).
    pub fn write_header(&self, buf: &mut [u8]) -> usize {
        let header_len = self.header_len();
        assert!(
            buf.len() >= header_len,
            "buffer of {} bytes for an RTP header of {header_len}",
            buf.len()
        );
        let csrc_count = u8::try_from(self.csrcs.len())
            .ok()
            .filter(|&n| n <= 15)
            .expect("at most 15 CSRCs"); // ok: test support, never in the server
        buf[0] = 0x80
            | if self.padding > 0 { 0x20 } else { 0 }
            | if self.extensions.is_empty() { 0 } else { 0x10 }
            | csrc_count;
        buf[1] = u8::from(self.marker) << 7 | (self.payload_type & 0x7f);
        buf[2..4].copy_from_slice(&self.seq.to_be_bytes());
        buf[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        buf[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let mut at = HEADER_LEN;
        for csrc in &self.csrcs {
            buf[at..at + 4].copy_from_slice(&csrc.to_be_bytes());
            at += 4;
        }
        if self.extensions.is_empty() {
            return at;
        }
        let one_byte = self.one_byte_form();
        let block_end = at + self.extension_block_len();
        let profile = if one_byte {
            ONE_BYTE_PROFILE
        } else {
            TWO_BYTE_PROFILE
        };
        let words = u16::try_from((block_end - at - 4) / 4).expect("extension block fits"); // ok: test support, never in the server
        buf[at..at + 2].copy_from_slice(&profile.to_be_bytes());
        buf[at + 2..at + 4].copy_from_slice(&words.to_be_bytes());
        at += 4;
        for (id, value) in &self.extensions {
            assert!(*id != 0, "extension id 0 is padding, not an element");
            if one_byte {
                // `one_byte_form` checked 1..=16 bytes: the length field is len - 1.
                buf[at] = id << 4 | (value.len() - 1) as u8;
                at += 1;
            } else {
                buf[at] = *id;
                buf[at + 1] =
                    u8::try_from(value.len()).expect("extension value of at most 255 bytes"); // ok: test support, never in the server
                at += 2;
            }
            buf[at..at + value.len()].copy_from_slice(value);
            at += value.len();
        }
        buf[at..block_end].fill(0);
        block_end
    }

    /// Writes the whole packet into `buf`; returns its length. Does not allocate.
    ///
    /// # Panics
    ///
    /// If `buf` is shorter than [`len`](Self::len) (and as [`write_header`](Self::write_header)).
    pub fn write_into(&self, buf: &mut [u8]) -> usize {
        let len = self.len();
        assert!(
            buf.len() >= len,
            "buffer of {} bytes for an RTP packet of {len}",
            buf.len()
        );
        let mut at = self.write_header(buf);
        buf[at..at + self.payload.len()].copy_from_slice(&self.payload);
        at += self.payload.len();
        if self.padding > 0 {
            let end = at + usize::from(self.padding);
            buf[at..end - 1].fill(0);
            buf[end - 1] = self.padding;
            at = end;
        }
        at
    }

    /// The packet as bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut buf = vec![0u8; self.len()];
        let len = self.write_into(&mut buf);
        buf.truncate(len);
        buf
    }
}

pub use ferrosoup_rtc::rtp::abs_send_time;

#[cfg(test)]
mod tests {
    use super::*;
    use ferrosoup_rtc::rtp::{
        ExtensionIds, extensions, find_extension, parse_audio_level, parse_rtp,
    };

    #[test]
    fn plain_packet_matches_the_wire_format() {
        let p = RtpPacket::new(111, 0xABCD, 0x0102_0304, 0xDEAD_BEEF)
            .with_marker(true)
            .with_payload(vec![9, 8, 7]);
        assert_eq!(
            p.build(),
            [
                0x80,
                0x80 | 111,
                0xAB,
                0xCD,
                1,
                2,
                3,
                4,
                0xDE,
                0xAD,
                0xBE,
                0xEF,
                9,
                8,
                7
            ]
        );
        assert_eq!((p.header_len(), p.len()), (12, 15));
    }

    #[test]
    fn extensions_round_trip_through_the_sfu_parser() {
        let p = RtpPacket::new(96, 1, 2, 3)
            .with_mid(1, "video0")
            .with_rid(2, "h")
            .with_repaired_rid(3, "h")
            .with_abs_send_time(4, abs_send_time(std::time::Duration::from_millis(1500)))
            .with_transport_cc(5, 0xFFFE)
            .with_audio_level(6, true, 42)
            .with_csrc(77)
            .with_payload(vec![1; 100])
            .with_padding(4);
        let bytes = p.build();
        assert_eq!(bytes.len() % 4, 0, "padded to words here by construction");
        let info = parse_rtp(&bytes).expect("parses");
        assert_eq!(info.extension_profile, ONE_BYTE_PROFILE);
        assert_eq!(
            (info.payload_len, info.padding_len, info.csrc_count),
            (100, 4, 1)
        );
        let ids = ExtensionIds {
            mid: 1,
            rid: 2,
            repaired_rid: 3,
            abs_send_time: 4,
            transport_wide_cc: 5,
            audio_level: 6,
        };
        let parsed = ids.read(&bytes, &info);
        assert_eq!(parsed.mid, Some("video0"));
        assert_eq!(parsed.rid, Some("h"));
        assert_eq!(parsed.repaired_rid, Some("h"));
        // 1.5 s in 6.18 fixed point.
        assert_eq!(parsed.abs_send_time, Some(3 << 17));
        assert_eq!(parsed.transport_wide_cc, Some(0xFFFE));
        let level = parse_audio_level(find_extension(&bytes, &info, 6).expect("level"));
        assert_eq!(level.map(|l| (l.voice, l.level)), Some((true, 42)));
        assert_eq!(info.payload(&bytes), &[1; 100][..]);
    }

    #[test]
    fn large_ids_or_values_use_the_two_byte_form() {
        let long = vec![5u8; 20];
        let p = RtpPacket::new(96, 1, 2, 3)
            .with_extension(1, "a")
            .with_extension(200, long.clone())
            .with_payload(vec![0xAA]);
        let bytes = p.build();
        let info = parse_rtp(&bytes).expect("parses");
        assert_eq!(info.extension_profile, TWO_BYTE_PROFILE);
        let all: Vec<(u8, Vec<u8>)> = extensions(&bytes, &info)
            .map(|(id, v)| (id, v.to_vec()))
            .collect();
        assert_eq!(all, [(1, b"a".to_vec()), (200, long)]);
        assert_eq!(info.payload(&bytes), [0xAA]);
    }

    #[test]
    fn write_into_reuses_a_buffer() {
        let mut p = RtpPacket::new(96, 65535, 0, 1).with_payload(vec![3; 50]);
        let mut buf = [0xFFu8; 200];
        let n = p.write_into(&mut buf);
        assert_eq!(&buf[..n], &p.build()[..]);
        p.seq = p.seq.wrapping_add(1);
        let n = p.write_into(&mut buf);
        assert_eq!(parse_rtp(&buf[..n]).expect("parses").sequence_number, 0);
        // The header alone, for a payload written in place.
        assert_eq!(p.write_header(&mut buf), 12);
    }

    #[test]
    #[should_panic(expected = "buffer of 10 bytes")]
    fn short_buffer_is_a_caller_bug() {
        RtpPacket::new(96, 1, 2, 3).write_into(&mut [0u8; 10]);
    }
}
