//! Zero-copy RTP header view and in-place rewriting (RFC 3550, RFC 8285 header extensions).
//!
//! [`parse_rtp`] validates a packet once and returns a plain [`RtpHeaderInfo`] of offsets;
//! everything else reads or rewrites the packet buffer through those offsets. Nothing here
//! allocates, so all of it may run per packet.

/// Size of the fixed RTP header.
pub const RTP_HEADER_LEN: usize = 12;
/// Extension profile of the one-byte header form (RFC 8285 §4.2).
pub const ONE_BYTE_PROFILE: u16 = 0xBEDE;
/// Extension profile of the two-byte header form (RFC 8285 §4.3); the low 4 bits are
/// application bits and are ignored.
pub const TWO_BYTE_PROFILE: u16 = 0x1000;

/// Why a buffer is not a valid RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Shorter than the fixed header, the CSRC list or the extension header says.
    #[error("RTP packet truncated")]
    Truncated,
    /// The version field is not 2.
    #[error("RTP version {0} is not 2")]
    BadVersion(u8),
    /// The padding bit is set but the padding count is 0 or larger than the body.
    #[error("invalid RTP padding")]
    BadPadding,
}

/// Offsets and fields of a parsed RTP packet. Plain value: it borrows nothing, so the
/// packet can be rewritten in place while the info is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeaderInfo {
    /// Marker bit.
    pub marker: bool,
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Sequence number as on the wire.
    pub sequence_number: u16,
    /// RTP timestamp as on the wire.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Number of CSRC entries.
    pub csrc_count: u8,
    /// Extension profile (0xBEDE, 0x100X, other), or 0 when there is no extension block.
    pub extension_profile: u16,
    /// Offset of the extension elements (after the 4-byte extension header).
    pub extensions_offset: usize,
    /// Length of the extension elements in bytes (a multiple of 4).
    pub extensions_len: usize,
    /// Offset of the payload.
    pub payload_offset: usize,
    /// Length of the payload, padding excluded.
    pub payload_len: usize,
    /// Number of padding bytes at the end of the packet (0 when the P bit is clear).
    pub padding_len: u8,
}

impl RtpHeaderInfo {
    /// The payload bytes (padding excluded) of the packet this info was parsed from.
    /// Empty if `packet` is not that packet (shorter than the recorded offsets).
    pub fn payload<'a>(&self, packet: &'a [u8]) -> &'a [u8] {
        packet
            .get(self.payload_offset..self.payload_offset + self.payload_len)
            .unwrap_or(&[])
    }
}

/// Parses and validates the RTP header of `packet`: version 2, CSRC list, extension block
/// and padding all within the buffer.
pub fn parse_rtp(packet: &[u8]) -> Result<RtpHeaderInfo, RtpError> {
    if packet.len() < RTP_HEADER_LEN {
        return Err(RtpError::Truncated);
    }
    let b0 = packet[0];
    let version = b0 >> 6;
    if version != 2 {
        return Err(RtpError::BadVersion(version));
    }
    let has_padding = b0 & 0x20 != 0;
    let has_extension = b0 & 0x10 != 0;
    let csrc_count = b0 & 0x0f;
    let mut offset = RTP_HEADER_LEN + 4 * usize::from(csrc_count);
    let (mut extension_profile, mut extensions_offset, mut extensions_len) = (0, 0, 0);
    if has_extension {
        let ext_header = packet.get(offset..offset + 4).ok_or(RtpError::Truncated)?;
        extension_profile = u16::from_be_bytes([ext_header[0], ext_header[1]]);
        extensions_len = 4 * usize::from(u16::from_be_bytes([ext_header[2], ext_header[3]]));
        extensions_offset = offset + 4;
        offset = extensions_offset + extensions_len;
    }
    if offset > packet.len() {
        return Err(RtpError::Truncated);
    }
    let mut padding_len = 0;
    if has_padding {
        padding_len = packet[packet.len() - 1];
        if padding_len == 0 || usize::from(padding_len) > packet.len() - offset {
            return Err(RtpError::BadPadding);
        }
    }
    Ok(RtpHeaderInfo {
        marker: packet[1] & 0x80 != 0,
        payload_type: packet[1] & 0x7f,
        sequence_number: u16::from_be_bytes([packet[2], packet[3]]),
        timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
        ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
        csrc_count,
        extension_profile,
        extensions_offset,
        extensions_len,
        payload_offset: offset,
        payload_len: packet.len() - offset - usize::from(padding_len),
        padding_len,
    })
}

/// Sets the sequence number. `packet` is a parsed RTP packet; a buffer shorter than the
/// fixed header is left unchanged.
pub fn set_sequence_number(packet: &mut [u8], v: u16) {
    if let Some(b) = packet.get_mut(2..4) {
        b.copy_from_slice(&v.to_be_bytes());
    }
}

/// Sets the RTP timestamp (same precondition as [`set_sequence_number`]).
pub fn set_timestamp(packet: &mut [u8], v: u32) {
    if let Some(b) = packet.get_mut(4..8) {
        b.copy_from_slice(&v.to_be_bytes());
    }
}

/// The header of a padding-only packet (probes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaddingHeader {
    /// SSRC (an RTX stream's: receivers drop padding there after counting it).
    pub ssrc: u32,
    /// Payload type.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence_number: u16,
    /// Timestamp.
    pub timestamp: u32,
    /// One-byte extension id of transport-wide-cc (0: none).
    pub transport_cc_id: u8,
    /// Transport-wide sequence number.
    pub transport_cc: u16,
}

/// Writes a padding-only RTP packet (P bit, `padding` bytes of 1..=255 whose last byte is
/// the count) into `buf`; returns its length, or `None` when `buf` is too small or
/// `padding` is out of range.
pub fn write_padding_packet(buf: &mut [u8], h: &PaddingHeader, padding: usize) -> Option<usize> {
    if !(1..=255).contains(&padding) {
        return None;
    }
    let ext_len = if h.transport_cc_id != 0 { 8 } else { 0 };
    let len = RTP_HEADER_LEN + ext_len + padding;
    let out = buf.get_mut(..len)?;
    out[0] = 0x80 | 0x20 | if ext_len > 0 { 0x10 } else { 0 };
    out[1] = h.payload_type & 0x7f;
    out[2..4].copy_from_slice(&h.sequence_number.to_be_bytes());
    out[4..8].copy_from_slice(&h.timestamp.to_be_bytes());
    out[8..12].copy_from_slice(&h.ssrc.to_be_bytes());
    if ext_len > 0 {
        out[12..14].copy_from_slice(&ONE_BYTE_PROFILE.to_be_bytes());
        out[14..16].copy_from_slice(&1u16.to_be_bytes());
        out[16] = (h.transport_cc_id << 4) | 1;
        out[17..19].copy_from_slice(&h.transport_cc.to_be_bytes());
        out[19] = 0;
    }
    let body = &mut out[RTP_HEADER_LEN + ext_len..];
    body.fill(0);
    body[padding - 1] = padding as u8;
    Some(len)
}

/// Sets the SSRC (same precondition as [`set_sequence_number`]).
pub fn set_ssrc(packet: &mut [u8], v: u32) {
    if let Some(b) = packet.get_mut(8..12) {
        b.copy_from_slice(&v.to_be_bytes());
    }
}

/// Sets the payload type (low 7 bits of `v`), keeping the marker bit.
pub fn set_payload_type(packet: &mut [u8], v: u8) {
    if let Some(b) = packet.get_mut(1) {
        *b = (*b & 0x80) | (v & 0x7f);
    }
}

/// Sets or clears the marker bit, keeping the payload type.
pub fn set_marker(packet: &mut [u8], v: bool) {
    if let Some(b) = packet.get_mut(1) {
        *b = (*b & 0x7f) | if v { 0x80 } else { 0 };
    }
}

/// The two RFC 8285 element layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExtForm {
    OneByte,
    TwoByte,
}

/// Position of one extension element inside the packet.
#[derive(Debug, Clone, Copy)]
struct ExtElement {
    id: u8,
    /// Offset of the element's first header byte.
    start: usize,
    /// Offset of the element data.
    data: usize,
    /// Length of the element data.
    len: usize,
}

/// Walks the extension elements by offset, so both shared and mutable callers can use it.
struct ExtCursor {
    form: ExtForm,
    pos: usize,
    end: usize,
}

impl ExtCursor {
    fn new(packet_len: usize, info: &RtpHeaderInfo) -> Option<Self> {
        let form = if info.extension_profile == ONE_BYTE_PROFILE {
            ExtForm::OneByte
        } else if info.extension_profile & 0xfff0 == TWO_BYTE_PROFILE {
            ExtForm::TwoByte
        } else {
            return None;
        };
        let end = info.extensions_offset + info.extensions_len;
        (end <= packet_len).then_some(Self {
            form,
            pos: info.extensions_offset,
            end,
        })
    }

    /// Next element, skipping padding bytes; `None` at the end or on a malformed element.
    fn next(&mut self, packet: &[u8]) -> Option<ExtElement> {
        loop {
            if self.pos >= self.end {
                return None;
            }
            let start = self.pos;
            let b = packet[start];
            // Id 0 is a padding byte in both forms (its length bits, if any, are ignored).
            let id = match self.form {
                ExtForm::OneByte => b >> 4,
                ExtForm::TwoByte => b,
            };
            if id == 0 {
                self.pos += 1;
                continue;
            }
            let (id, data, len) = match self.form {
                ExtForm::OneByte => {
                    if id == 15 {
                        // RFC 8285 §4.2: id 15 means stop processing the block.
                        self.pos = self.end;
                        return None;
                    }
                    (id, start + 1, usize::from(b & 0x0f) + 1)
                }
                ExtForm::TwoByte => {
                    let len = *packet.get(start + 1).filter(|_| start + 1 < self.end)?;
                    (id, start + 2, usize::from(len))
                }
            };
            if data + len > self.end {
                self.pos = self.end;
                return None;
            }
            self.pos = data + len;
            return Some(ExtElement {
                id,
                start,
                data,
                len,
            });
        }
    }
}

/// Iterator over the `(id, data)` extension elements of a packet.
pub struct Extensions<'a> {
    packet: &'a [u8],
    cursor: Option<ExtCursor>,
}

impl<'a> Iterator for Extensions<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let e = self.cursor.as_mut()?.next(self.packet)?;
        Some((e.id, &self.packet[e.data..e.data + e.len]))
    }
}

/// Iterates over the header extension elements (one-byte or two-byte form; a block with
/// another profile yields nothing). Stops at the first malformed element.
pub fn extensions<'a>(packet: &'a [u8], info: &RtpHeaderInfo) -> Extensions<'a> {
    Extensions {
        packet,
        cursor: ExtCursor::new(packet.len(), info),
    }
}

/// Data of the first extension element with `id`, in either RFC 8285 form.
pub fn find_extension<'a>(packet: &'a [u8], info: &RtpHeaderInfo, id: u8) -> Option<&'a [u8]> {
    if id == 0 {
        return None;
    }
    extensions(packet, info).find_map(|(i, data)| (i == id).then_some(data))
}

/// abs-send-time of a send time given as time since any epoch: 6.18 fixed-point seconds,
/// modulo 64 s (the 24 bits on the wire).
pub fn abs_send_time(since_epoch: std::time::Duration) -> u32 {
    let units = since_epoch.as_nanos() * (1 << 18) / 1_000_000_000;
    (units & 0x00FF_FFFF) as u32
}

/// Values an SFU writes into the header extensions of each packet it sends, because they
/// describe its own hop: the transport-wide sequence number and the send time. Ids are the
/// receiver's (0: not negotiated, nothing written).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HopValues {
    /// Receiver's id of transport-wide-cc.
    pub transport_cc_id: u8,
    /// Transport-wide sequence number to write.
    pub transport_cc: u16,
    /// Receiver's id of abs-send-time.
    pub abs_send_time_id: u8,
    /// abs-send-time to write (24-bit 6.18 fixed point).
    pub abs_send_time: u32,
}

/// Rewrites extension ids in place through `map` (indexed by old id, value = new id) and
/// writes the `hop` values into the elements that carry them, in one pass. Returns true
/// when the transport-wide sequence number was written.
///
/// A new id of 0 drops the element: all its bytes (header and data) are zero-filled, which
/// both forms read as padding. In the one-byte form a new id above 14 cannot be written
/// and the element is dropped as well. Elements are never moved, so the packet length
/// does not change.
pub fn rewrite_extensions(
    packet: &mut [u8],
    info: &RtpHeaderInfo,
    map: &[u8; 256],
    hop: &HopValues,
) -> bool {
    let Some(mut cursor) = ExtCursor::new(packet.len(), info) else {
        return false;
    };
    let mut wrote_transport_cc = false;
    while let Some(e) = cursor.next(packet) {
        let new_id = map[usize::from(e.id)];
        let keep = match cursor.form {
            ExtForm::OneByte => (1..=14).contains(&new_id),
            ExtForm::TwoByte => new_id != 0,
        };
        if !keep {
            packet[e.start..e.data + e.len].fill(0);
            continue;
        }
        if cursor.form == ExtForm::OneByte {
            packet[e.start] = (new_id << 4) | (packet[e.start] & 0x0f);
        } else {
            packet[e.start] = new_id;
        }
        let data = &mut packet[e.data..e.data + e.len];
        if new_id == hop.transport_cc_id {
            wrote_transport_cc |= write_transport_cc(data, hop.transport_cc);
        } else if new_id == hop.abs_send_time_id {
            write_abs_send_time(data, hop.abs_send_time);
        }
    }
    wrote_transport_cc
}

/// Reads a mid / rid / repaired-rid element (RFC 8843, RFC 8852): UTF-8 text, trailing
/// NUL bytes ignored. `None` if empty or not UTF-8.
pub fn parse_sdes_str(data: &[u8]) -> Option<&str> {
    let end = data.iter().rposition(|&b| b != 0)? + 1;
    std::str::from_utf8(&data[..end]).ok()
}

/// Reads an abs-send-time element: 24-bit 6.18 fixed-point seconds.
pub fn parse_abs_send_time(data: &[u8]) -> Option<u32> {
    match *data {
        [a, b, c] => Some(u32::from_be_bytes([0, a, b, c])),
        _ => None,
    }
}

/// Writes an abs-send-time value (low 24 bits) into an element's data.
pub fn write_abs_send_time(data: &mut [u8], v: u32) -> bool {
    if data.len() != 3 {
        return false;
    }
    data.copy_from_slice(&v.to_be_bytes()[1..]);
    true
}

/// Reads a transport-wide-cc element (draft-holmer-rmcat-transport-wide-cc-extensions-01):
/// the 16-bit transport sequence number.
pub fn parse_transport_cc(data: &[u8]) -> Option<u16> {
    match *data {
        [a, b, ..] => Some(u16::from_be_bytes([a, b])),
        _ => None,
    }
}

/// Writes a transport-wide sequence number into an element's data.
pub fn write_transport_cc(data: &mut [u8], seq: u16) -> bool {
    match data.get_mut(..2) {
        Some(b) => {
            b.copy_from_slice(&seq.to_be_bytes());
            true
        }
        None => false,
    }
}

/// Client-to-mixer audio level (RFC 6464).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioLevel {
    /// Voice activity flag.
    pub voice: bool,
    /// Level in -dBov, 0 (loudest) ..= 127 (silence).
    pub level: u8,
}

/// Reads an ssrc-audio-level element.
pub fn parse_audio_level(data: &[u8]) -> Option<AudioLevel> {
    let b = *data.first()?;
    Some(AudioLevel {
        voice: b & 0x80 != 0,
        level: b & 0x7f,
    })
}

/// Negotiated ids of the header extensions the SFU reads (0 = not negotiated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtensionIds {
    /// urn:ietf:params:rtp-hdrext:sdes:mid
    pub mid: u8,
    /// urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
    pub rid: u8,
    /// urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
    pub repaired_rid: u8,
    /// http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
    pub abs_send_time: u8,
    /// http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
    pub transport_wide_cc: u8,
    /// urn:ietf:params:rtp-hdrext:ssrc-audio-level
    pub audio_level: u8,
}

/// Values of the SFU's extensions found in one packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParsedExtensions<'a> {
    /// Media id.
    pub mid: Option<&'a str>,
    /// RTP stream id (simulcast layer).
    pub rid: Option<&'a str>,
    /// Repaired RTP stream id (RTX of a simulcast layer).
    pub repaired_rid: Option<&'a str>,
    /// abs-send-time, 24-bit 6.18 fixed point.
    pub abs_send_time: Option<u32>,
    /// Transport-wide sequence number.
    pub transport_wide_cc: Option<u16>,
    /// Audio level.
    pub audio_level: Option<AudioLevel>,
}

impl ExtensionIds {
    /// Reads all configured extensions in one pass over the extension block.
    pub fn read<'a>(&self, packet: &'a [u8], info: &RtpHeaderInfo) -> ParsedExtensions<'a> {
        let mut out = ParsedExtensions::default();
        for (id, data) in extensions(packet, info) {
            if id == self.mid {
                out.mid = parse_sdes_str(data);
            } else if id == self.rid {
                out.rid = parse_sdes_str(data);
            } else if id == self.repaired_rid {
                out.repaired_rid = parse_sdes_str(data);
            } else if id == self.abs_send_time {
                out.abs_send_time = parse_abs_send_time(data);
            } else if id == self.transport_wide_cc {
                out.transport_wide_cc = parse_transport_cc(data);
            } else if id == self.audio_level {
                out.audio_level = parse_audio_level(data);
            }
        }
        out
    }
}

/// Video codecs whose payload the SFU inspects for keyframes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// VP8 (RFC 7741).
    Vp8,
    /// VP9 (RFC 9628).
    Vp9,
    /// H.264 (RFC 6184).
    H264,
    /// Anything else: never reported as keyframe.
    Other,
}

impl VideoCodec {
    /// Codec from a MIME type such as `video/VP8` (case-insensitive).
    pub fn from_mime_type(mime: &str) -> Self {
        if mime.eq_ignore_ascii_case("video/vp8") {
            Self::Vp8
        } else if mime.eq_ignore_ascii_case("video/vp9") {
            Self::Vp9
        } else if mime.eq_ignore_ascii_case("video/h264") {
            Self::H264
        } else {
            Self::Other
        }
    }
}

/// Whether an RTP payload starts a keyframe (see [`VideoCodec`] for the payload formats).
///
/// - VP8: start of partition 0 (S=1, PID=0) whose VP8 payload header has P=0.
/// - VP9: P=0 (not inter-picture predicted) and B=1 (start of frame), and spatial layer 0
///   when layer indices are present.
/// - H.264: an IDR slice (NAL 5) or SPS (NAL 7) as a single NAL unit, inside a STAP-A, or
///   as the start fragment of an FU-A.
pub fn is_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8_keyframe(payload),
        VideoCodec::Vp9 => vp9_keyframe(payload),
        VideoCodec::H264 => h264_keyframe(payload),
        VideoCodec::Other => false,
    }
}

fn vp8_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else {
        return false;
    };
    let (start, pid) = (b0 & 0x10 != 0, b0 & 0x07);
    if !start || pid != 0 {
        return false;
    }
    let mut off = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = p.get(1) else {
            return false;
        };
        off = 2;
        if x & 0x80 != 0 {
            // PictureID: 15 bits when its M bit is set, else 7 bits.
            let Some(&pic) = p.get(off) else {
                return false;
            };
            off += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            off += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            off += 1; // TID / Y / KEYIDX
        }
    }
    // The VP8 payload header is 3 bytes; bit 0 of the first is the inverse key frame flag.
    p.len() >= off + 3 && p[off] & 0x01 == 0
}

fn vp9_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else {
        return false;
    };
    let (has_pid, inter, has_layers, begin) = (
        b0 & 0x80 != 0,
        b0 & 0x40 != 0,
        b0 & 0x20 != 0,
        b0 & 0x08 != 0,
    );
    if inter || !begin {
        return false;
    }
    if !has_layers {
        return true;
    }
    let mut off = 1;
    if has_pid {
        let Some(&pic) = p.get(1) else {
            return false;
        };
        off += if pic & 0x80 != 0 { 2 } else { 1 };
    }
    // Layer indices: TID(3) U(1) SID(3) D(1).
    p.get(off).is_some_and(|&l| (l >> 1) & 0x07 == 0)
}

fn h264_is_key_nal(nal_type: u8) -> bool {
    nal_type == 5 || nal_type == 7
}

fn h264_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else {
        return false;
    };
    match b0 & 0x1f {
        t @ 1..=23 => h264_is_key_nal(t),
        24 => {
            // STAP-A: [size u16][NAL] repeated after the one-byte header.
            let mut off = 1;
            while let Some(sz) = p.get(off..off + 2) {
                let size = usize::from(u16::from_be_bytes([sz[0], sz[1]]));
                let Some(&nal) = p.get(off + 2).filter(|_| size > 0) else {
                    return false;
                };
                if h264_is_key_nal(nal & 0x1f) {
                    return true;
                }
                off += 2 + size;
            }
            false
        }
        28 => p
            .get(1)
            .is_some_and(|&fu| fu & 0x80 != 0 && h264_is_key_nal(fu & 0x1f)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn padding_packets_parse_as_padding_only_with_the_transport_cc_number() {
        let h = PaddingHeader {
            ssrc: 7,
            payload_type: 97,
            sequence_number: 500,
            timestamp: 90_000,
            transport_cc_id: 3,
            transport_cc: 4242,
        };
        let mut buf = [0u8; 300];
        let n = write_padding_packet(&mut buf, &h, 200).unwrap();
        assert_eq!(n, 12 + 8 + 200);
        let info = parse_rtp(&buf[..n]).unwrap();
        assert_eq!(
            (info.ssrc, info.payload_type, info.sequence_number),
            (7, 97, 500)
        );
        assert_eq!(info.payload_len, 0, "padding only");
        let ids = ExtensionIds {
            transport_wide_cc: 3,
            ..ExtensionIds::default()
        };
        assert_eq!(ids.read(&buf[..n], &info).transport_wide_cc, Some(4242));
        assert_eq!(write_padding_packet(&mut buf, &h, 0), None);
        assert_eq!(write_padding_packet(&mut buf, &h, 256), None);
        assert_eq!(write_padding_packet(&mut buf[..100], &h, 200), None);
    }
    use super::*;

    /// Builds an RTP packet: fixed header, `csrcs`, optional extension block, payload and
    /// padding.
    fn build(ext: Option<(u16, &[u8])>, csrcs: &[u32], payload: &[u8], padding: u8) -> Vec<u8> {
        let mut p = vec![0x80 | csrcs.len() as u8, 96 | 0x80, 0x12, 0x34];
        p.extend_from_slice(&0xdead_beef_u32.to_be_bytes());
        p.extend_from_slice(&0x0102_0304_u32.to_be_bytes());
        for c in csrcs {
            p.extend_from_slice(&c.to_be_bytes());
        }
        if let Some((profile, body)) = ext {
            assert_eq!(body.len() % 4, 0);
            p[0] |= 0x10;
            p.extend_from_slice(&profile.to_be_bytes());
            p.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
            p.extend_from_slice(body);
        }
        p.extend_from_slice(payload);
        if padding > 0 {
            p[0] |= 0x20;
            p.extend(std::iter::repeat_n(0, usize::from(padding) - 1));
            p.push(padding);
        }
        p
    }

    #[test]
    fn parses_fixed_header_fields() {
        let p = build(None, &[], b"hello", 0);
        let info = parse_rtp(&p).unwrap();
        assert_eq!(
            info,
            RtpHeaderInfo {
                marker: true,
                payload_type: 96,
                sequence_number: 0x1234,
                timestamp: 0xdead_beef,
                ssrc: 0x0102_0304,
                csrc_count: 0,
                extension_profile: 0,
                extensions_offset: 0,
                extensions_len: 0,
                payload_offset: 12,
                payload_len: 5,
                padding_len: 0,
            }
        );
        assert_eq!(info.payload(&p), b"hello");
    }

    #[test]
    fn parses_csrcs_extension_and_padding() {
        let ext = [0x10, 0xaa, 0x00, 0x00];
        let p = build(Some((ONE_BYTE_PROFILE, &ext)), &[1, 2], b"xyz", 5);
        let info = parse_rtp(&p).unwrap();
        assert_eq!(info.csrc_count, 2);
        assert_eq!(info.extension_profile, ONE_BYTE_PROFILE);
        assert_eq!(info.extensions_offset, 12 + 8 + 4);
        assert_eq!(info.extensions_len, 4);
        assert_eq!(info.payload_offset, 28);
        assert_eq!(info.payload_len, 3);
        assert_eq!(info.padding_len, 5);
        assert_eq!(info.payload(&p), b"xyz");
    }

    #[test]
    fn agrees_with_rtc_rtp_on_a_marshalled_packet() {
        use rtc_shared::marshal::Marshal;
        let mut header = rtc_rtp::header::Header {
            version: 2,
            marker: false,
            payload_type: 111,
            sequence_number: 65535,
            timestamp: 4_000_000_000,
            ssrc: 42,
            csrc: vec![7],
            ..Default::default()
        };
        header
            .set_extension(3, bytes::Bytes::from_static(b"m1"))
            .unwrap();
        header
            .set_extension(5, bytes::Bytes::from_static(&[0, 9]))
            .unwrap();
        let packet = rtc_rtp::packet::Packet {
            header,
            payload: bytes::Bytes::from_static(b"opus"),
        };
        let raw = packet.marshal().unwrap();
        let info = parse_rtp(&raw).unwrap();
        assert_eq!(info.sequence_number, 65535);
        assert_eq!(info.timestamp, 4_000_000_000);
        assert_eq!(info.ssrc, 42);
        assert_eq!(info.payload_type, 111);
        assert!(!info.marker);
        assert_eq!(info.payload(&raw), b"opus");
        assert_eq!(find_extension(&raw, &info, 3), Some(&b"m1"[..]));
        assert_eq!(find_extension(&raw, &info, 5), Some(&[0, 9][..]));
        assert_eq!(find_extension(&raw, &info, 4), None);
    }

    #[test]
    fn rejects_malformed_packets() {
        assert_eq!(parse_rtp(&[0x80; 11]), Err(RtpError::Truncated));
        let mut p = build(None, &[], b"", 0);
        p[0] = 0x40;
        assert_eq!(parse_rtp(&p), Err(RtpError::BadVersion(1)));
        // CSRC count beyond the buffer.
        let mut p = build(None, &[], b"abc", 0);
        p[0] |= 0x01;
        assert_eq!(parse_rtp(&p), Err(RtpError::Truncated));
        // Extension bit without an extension header.
        let mut p = build(None, &[], b"ab", 0);
        p[0] |= 0x10;
        assert_eq!(parse_rtp(&p), Err(RtpError::Truncated));
        // Extension length beyond the buffer.
        let mut p = build(Some((ONE_BYTE_PROFILE, &[0; 4])), &[], b"", 0);
        p[15] = 2;
        assert_eq!(parse_rtp(&p), Err(RtpError::Truncated));
        // Padding count 0 and padding longer than the body.
        let mut p = build(None, &[], b"abc", 0);
        p[0] |= 0x20;
        p.push(0);
        assert_eq!(parse_rtp(&p), Err(RtpError::BadPadding));
        let last = p.len() - 1;
        p[last] = 5;
        assert_eq!(parse_rtp(&p), Err(RtpError::BadPadding));
        p[last] = 4;
        let info = parse_rtp(&p).unwrap();
        assert_eq!((info.payload_len, info.padding_len), (0, 4));
    }

    #[test]
    fn setters_rewrite_in_place() {
        let mut p = build(None, &[], b"data", 0);
        set_sequence_number(&mut p, 65535);
        set_timestamp(&mut p, u32::MAX);
        set_ssrc(&mut p, 0xcafe_babe);
        set_payload_type(&mut p, 100);
        let info = parse_rtp(&p).unwrap();
        assert_eq!(
            (info.sequence_number, info.timestamp, info.ssrc),
            (65535, u32::MAX, 0xcafe_babe)
        );
        assert_eq!((info.payload_type, info.marker), (100, true));
        set_marker(&mut p, false);
        let info = parse_rtp(&p).unwrap();
        assert_eq!((info.payload_type, info.marker), (100, false));
        set_marker(&mut p, true);
        set_payload_type(&mut p, 0xff);
        let info = parse_rtp(&p).unwrap();
        assert_eq!((info.payload_type, info.marker), (127, true));
        assert_eq!(info.payload(&p), b"data");
        // Too short buffers are left alone rather than panicking.
        let mut short = [0u8; 3];
        set_ssrc(&mut short, 1);
        set_timestamp(&mut short, 1);
        set_sequence_number(&mut short, 1);
        assert_eq!(short, [0, 0, 0]);
    }

    /// One-byte block: id 1 "ab" (len 2), padding, id 2 [7,8,9], id 3 [1], padded to 12 bytes.
    const ONE_BYTE_EXT: [u8; 12] = [0x11, b'a', b'b', 0x00, 0x22, 7, 8, 9, 0x30, 1, 0, 0];
    /// Two-byte block: id 1 "ab", id 200 [] (empty), padding, id 20 [5; 3], padded to 12.
    const TWO_BYTE_EXT: [u8; 12] = [1, 2, b'a', b'b', 200, 0, 0, 20, 3, 5, 5, 5];

    #[test]
    fn finds_one_byte_extensions() {
        let p = build(Some((ONE_BYTE_PROFILE, &ONE_BYTE_EXT)), &[], b"pl", 0);
        let info = parse_rtp(&p).unwrap();
        let all: Vec<_> = extensions(&p, &info).collect();
        assert_eq!(
            all,
            vec![(1, &b"ab"[..]), (2, &[7, 8, 9][..]), (3, &[1][..])]
        );
        assert_eq!(find_extension(&p, &info, 2), Some(&[7, 8, 9][..]));
        assert_eq!(find_extension(&p, &info, 0), None);
        assert_eq!(find_extension(&p, &info, 9), None);
    }

    #[test]
    fn one_byte_id_0_is_a_single_padding_byte() {
        let ext = [0x03, 0x10, 9, 0];
        let p = build(Some((ONE_BYTE_PROFILE, &ext)), &[], b"", 0);
        let info = parse_rtp(&p).unwrap();
        assert_eq!(
            extensions(&p, &info).collect::<Vec<_>>(),
            vec![(1, &[9][..])]
        );
    }

    #[test]
    fn one_byte_id_15_stops_parsing_and_overruns_are_rejected() {
        let ext = [0x10, 1, 0xf0, 0, 0x20, 2, 0, 0];
        let p = build(Some((ONE_BYTE_PROFILE, &ext)), &[], b"", 0);
        let info = parse_rtp(&p).unwrap();
        assert_eq!(extensions(&p, &info).count(), 1);
        assert_eq!(find_extension(&p, &info, 2), None);
        // An element claiming 4 data bytes with 3 left in the block.
        let ext = [0x10, 1, 0x23, 0];
        let p = build(Some((ONE_BYTE_PROFILE, &ext)), &[], b"abcd", 0);
        let info = parse_rtp(&p).unwrap();
        assert_eq!(find_extension(&p, &info, 1), Some(&[1][..]));
        assert_eq!(find_extension(&p, &info, 2), None);
    }

    #[test]
    fn finds_two_byte_extensions() {
        for profile in [0x1000, 0x100f] {
            let p = build(Some((profile, &TWO_BYTE_EXT)), &[], b"pl", 0);
            let info = parse_rtp(&p).unwrap();
            let all: Vec<_> = extensions(&p, &info).collect();
            assert_eq!(
                all,
                vec![(1, &b"ab"[..]), (200, &[][..]), (20, &[5, 5, 5][..])]
            );
        }
        // Unknown profile: no elements.
        let p = build(Some((0x1234, &TWO_BYTE_EXT)), &[], b"", 0);
        let info = parse_rtp(&p).unwrap();
        assert_eq!(extensions(&p, &info).count(), 0);
        // Length byte missing at the end of the block.
        let ext = [1, 1, 9, 7];
        let p = build(Some((TWO_BYTE_PROFILE, &ext)), &[], b"xy", 0);
        let info = parse_rtp(&p).unwrap();
        assert_eq!(
            extensions(&p, &info).collect::<Vec<_>>(),
            vec![(1, &[9][..])]
        );
    }

    fn map(pairs: &[(u8, u8)]) -> [u8; 256] {
        let mut m = [0u8; 256];
        for &(a, b) in pairs {
            m[usize::from(a)] = b;
        }
        m
    }

    #[test]
    fn remaps_one_byte_ids() {
        let mut p = build(Some((ONE_BYTE_PROFILE, &ONE_BYTE_EXT)), &[], b"pl", 0);
        let info = parse_rtp(&p).unwrap();
        // 1 → 4, 2 dropped, 3 → 15 (unrepresentable: dropped).
        assert!(!rewrite_extensions(
            &mut p,
            &info,
            &map(&[(1, 4), (3, 15)]),
            &HopValues::default()
        ));
        assert_eq!(parse_rtp(&p).unwrap(), info);
        assert_eq!(
            extensions(&p, &info).collect::<Vec<_>>(),
            vec![(4, &b"ab"[..])]
        );
        assert_eq!(
            &p[info.extensions_offset..info.payload_offset],
            &[0x41, b'a', b'b', 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(info.payload(&p), b"pl");
    }

    #[test]
    fn remaps_two_byte_ids() {
        let mut p = build(Some((TWO_BYTE_PROFILE, &TWO_BYTE_EXT)), &[], b"pl", 0);
        let info = parse_rtp(&p).unwrap();
        rewrite_extensions(
            &mut p,
            &info,
            &map(&[(1, 0), (200, 17), (20, 250)]),
            &HopValues::default(),
        );
        assert_eq!(
            extensions(&p, &info).collect::<Vec<_>>(),
            vec![(17, &[][..]), (250, &[5, 5, 5][..])]
        );
        assert_eq!(&p[info.extensions_offset..][..4], &[0, 0, 0, 0]);
        assert_eq!(info.payload(&p), b"pl");
    }

    #[test]
    fn reads_and_writes_sfu_extensions() {
        // mid=1 "0", rid=2 "hi", abs-send-time=3, twcc=4, audio level=5; two-byte form.
        let ext = [
            1,
            1,
            b'0', //
            2,
            3,
            b'h',
            b'i',
            0, // rid padded with a NUL
            3,
            3,
            0x12,
            0x34,
            0x56, //
            4,
            2,
            0xff,
            0xfe, //
            5,
            1,
            0x80 | 42, //
            6,
            2,
            0xc3,
            0x28, // invalid UTF-8 as repaired-rid
            0,
            0,
            0,
            0,
        ];
        let mut p = build(Some((TWO_BYTE_PROFILE, &ext)), &[], b"x", 0);
        let info = parse_rtp(&p).unwrap();
        let ids = ExtensionIds {
            mid: 1,
            rid: 2,
            repaired_rid: 6,
            abs_send_time: 3,
            transport_wide_cc: 4,
            audio_level: 5,
        };
        assert_eq!(
            ids.read(&p, &info),
            ParsedExtensions {
                mid: Some("0"),
                rid: Some("hi"),
                repaired_rid: None,
                abs_send_time: Some(0x12_3456),
                transport_wide_cc: Some(0xfffe),
                audio_level: Some(AudioLevel {
                    voice: true,
                    level: 42
                }),
            }
        );
        // Forwarded with the same ids: this hop's values are written in the same pass.
        let same: [u8; 256] = std::array::from_fn(|i| i as u8);
        let hop = HopValues {
            transport_cc_id: 4,
            transport_cc: 7,
            abs_send_time_id: 3,
            abs_send_time: 0xff00_0001,
        };
        assert!(rewrite_extensions(&mut p, &info, &same, &hop));
        assert!(!write_abs_send_time(&mut [0; 2], 1));
        assert!(!write_transport_cc(&mut [0; 1], 1));
        let parsed = ids.read(&p, &info);
        assert_eq!(parsed.transport_wide_cc, Some(7));
        assert_eq!(parsed.abs_send_time, Some(1));
        assert_eq!(parsed.mid, Some("0"));
        // Ids left at 0 are not read.
        assert_eq!(
            ExtensionIds::default().read(&p, &info),
            ParsedExtensions::default()
        );
        assert_eq!(parse_sdes_str(&[0, 0]), None);
        assert_eq!(parse_abs_send_time(&[1, 2]), None);
        assert_eq!(parse_transport_cc(&[1]), None);
        assert_eq!(parse_audio_level(&[]), None);
    }

    #[test]
    fn codec_from_mime_type() {
        assert_eq!(VideoCodec::from_mime_type("video/VP8"), VideoCodec::Vp8);
        assert_eq!(VideoCodec::from_mime_type("VIDEO/vp9"), VideoCodec::Vp9);
        assert_eq!(VideoCodec::from_mime_type("video/H264"), VideoCodec::H264);
        assert_eq!(VideoCodec::from_mime_type("video/AV1"), VideoCodec::Other);
        assert!(!is_keyframe(VideoCodec::Other, &[0x10, 0, 0, 0]));
    }

    #[test]
    fn vp8_keyframes() {
        use VideoCodec::Vp8;
        // Minimal descriptor: S=1, PID=0, then payload header with P=0.
        assert!(is_keyframe(Vp8, &[0x10, 0x00, 0x00, 0x00]));
        // P=1: interframe.
        assert!(!is_keyframe(Vp8, &[0x10, 0x01, 0x00, 0x00]));
        // Not the start of a partition / not partition 0.
        assert!(!is_keyframe(Vp8, &[0x00, 0x00, 0x00, 0x00]));
        assert!(!is_keyframe(Vp8, &[0x11, 0x00, 0x00, 0x00]));
        // Extended: I with 15-bit picture id, L, T/K; then P=0.
        let ext = [0x90, 0xf0, 0x80 | 0x12, 0x34, 0x05, 0x20, 0x9c, 0x01, 0x2a];
        assert!(is_keyframe(Vp8, &ext));
        let mut inter = ext;
        inter[6] |= 0x01;
        assert!(!is_keyframe(Vp8, &inter));
        // Extended with 7-bit picture id only: the byte after it is the payload header.
        assert!(is_keyframe(Vp8, &[0x90, 0x80, 0x7f, 0x00, 0, 0]));
        assert!(!is_keyframe(Vp8, &[0x90, 0x80, 0x7f, 0x01, 0, 0]));
        // Only T set (K clear) still takes one byte.
        assert!(is_keyframe(Vp8, &[0x90, 0x20, 0xff, 0x00, 0, 0]));
        assert!(!is_keyframe(Vp8, &[0x90, 0x20, 0x00, 0x01, 0, 0]));
        // Truncated payloads.
        for len in 0..ext.len() - 2 {
            assert!(!is_keyframe(Vp8, &ext[..len]), "len {len}");
        }
    }

    #[test]
    // Layer bytes are grouped by field: TID(3) U(1) SID(3) D(1).
    #[allow(clippy::unusual_byte_groupings)]
    fn vp9_keyframes() {
        use VideoCodec::Vp9;
        // B=1, P=0, no layer indices.
        assert!(is_keyframe(Vp9, &[0x08]));
        // P=1 or B=0.
        assert!(!is_keyframe(Vp9, &[0x48]));
        assert!(!is_keyframe(Vp9, &[0x00]));
        // I (15-bit picture id), L, B; layer byte SID=0.
        let base = [0x80 | 0x20 | 0x08, 0x81, 0x23, 0b000_1_000_0, 0x00];
        assert!(is_keyframe(Vp9, &base));
        // Spatial layer 1 is not the keyframe start.
        let mut upper = base;
        upper[3] = 0b000_0_001_0;
        assert!(!is_keyframe(Vp9, &upper));
        // 7-bit picture id; layer byte SID=2 vs SID=0 with temporal id 3 set.
        assert!(!is_keyframe(Vp9, &[0xa8, 0x05, 0b000_0_010_1]));
        assert!(is_keyframe(Vp9, &[0xa8, 0x05, 0b011_0_000_1]));
        // L without I: layer byte directly after the first byte.
        assert!(is_keyframe(Vp9, &[0x28, 0x00]));
        // Truncated before the layer byte.
        assert!(!is_keyframe(Vp9, &base[..3]));
        assert!(!is_keyframe(Vp9, &base[..1]));
        assert!(!is_keyframe(Vp9, &[]));
    }

    #[test]
    fn h264_keyframes() {
        use VideoCodec::H264;
        // Single NAL units: IDR, SPS, PPS, non-IDR slice.
        assert!(is_keyframe(H264, &[0x65, 0x88]));
        assert!(is_keyframe(H264, &[0x67, 0x42]));
        assert!(!is_keyframe(H264, &[0x68, 0xce]));
        assert!(!is_keyframe(H264, &[0x41, 0x9a]));
        // STAP-A with PPS then SPS.
        assert!(is_keyframe(
            H264,
            &[0x78, 0, 2, 0x68, 0xce, 0, 3, 0x67, 0x42, 0x00]
        ));
        // STAP-A with only non-key NALs, and with a truncated size field.
        assert!(!is_keyframe(H264, &[0x78, 0, 2, 0x68, 0xce, 0, 1, 0x41]));
        assert!(!is_keyframe(H264, &[0x78, 0]));
        // STAP-A with a zero-size NAL stops.
        assert!(!is_keyframe(H264, &[0x78, 0, 0, 0x67]));
        // FU-A: start of IDR, middle of IDR, start of non-IDR.
        assert!(is_keyframe(H264, &[0x7c, 0x85, 0xb8]));
        assert!(!is_keyframe(H264, &[0x7c, 0x05, 0xb8]));
        assert!(!is_keyframe(H264, &[0x7c, 0x81, 0xb8]));
        assert!(!is_keyframe(H264, &[0x7c]));
        // STAP-B / FU-B and empty payloads are not inspected.
        assert!(!is_keyframe(H264, &[0x79, 0, 0, 0, 2, 0x67, 0]));
        assert!(!is_keyframe(H264, &[]));
    }
}
