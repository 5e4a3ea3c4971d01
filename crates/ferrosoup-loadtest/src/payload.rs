//! Synthetic media payloads: RTP headers, Opus-sized audio, VP8 frames with a correct
//! payload descriptor and key frame bit, and the probe trailer every packet carries.
//!
//! The **probe trailer** is the last [`TRAILER_LEN`] bytes of every payload: a magic word,
//! the sending stream's id, a per-stream packet counter and the send time in microseconds
//! since the run's epoch. The SFU forwards payloads untouched, so a receiver reads the
//! trailer to attribute the packet to its source stream (delivery), to deduplicate and to
//! measure one-way latency. The bytes between the codec headers and the trailer follow a
//! pattern derived from the counter, so a receiver can check a payload end to end.

use ferrosoup_testkit::packets::{RtpPacket, Vp8Header};

/// Length of the probe trailer at the end of every payload.
pub const TRAILER_LEN: usize = 20;
/// Fixed RTP header length (no CSRC).
pub const RTP_HEADER_LEN: usize = 12;
/// Length of the header extension block a publisher adds with transport-cc: the RFC 8285
/// one-byte header and one element of two bytes, padded to a word.
pub const TRANSPORT_CC_EXT_LEN: usize = 8;
/// Largest payload of a video packet, so a protected packet stays well under 1200 bytes.
pub const MAX_VIDEO_PAYLOAD: usize = 1100;
/// Payload size of an audio packet (Opus at ~32 kbit/s in 20 ms frames).
pub const AUDIO_PAYLOAD: usize = 100;
/// Length of the VP8 payload header on a frame's first packet: the 3-byte frame tag, plus
/// the 7-byte start code and dimensions on key frames.
const VP8_KEY_HEADER_LEN: usize = 10;
const VP8_DELTA_HEADER_LEN: usize = 3;
/// "FSLT": marks a payload written by this tool.
const MAGIC: u32 = 0x4653_4c54;

/// What the probe trailer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Id of the sending stream (one per encoding of every producer in the run).
    pub stream_id: u32,
    /// Packets sent on that stream before this one.
    pub counter: u32,
    /// Send time in microseconds since the run's epoch.
    pub send_us: u64,
}

/// Writes the RTP fixed header into `buf[..12]`.
pub fn write_rtp_header(buf: &mut [u8], marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32) {
    RtpPacket::new(pt, seq, ts, ssrc)
        .with_marker(marker)
        .write_header(buf);
}

/// Writes the RTP fixed header into `buf[..12]` and, with `transport_cc` = `Some((id,
/// seq))`, a one-byte-form extension block carrying the transport-wide sequence number
/// (draft-holmer-rmcat-transport-wide-cc-extensions-01) after it, as browsers put it on
/// every packet. Returns the header length (where the payload starts).
pub fn write_rtp_header_with(
    buf: &mut [u8],
    marker: bool,
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    transport_cc: Option<(u8, u16)>,
) -> usize {
    write_rtp_header(buf, marker, pt, seq, ts, ssrc);
    let Some((id, twcc)) = transport_cc else {
        return RTP_HEADER_LEN;
    };
    buf[0] |= 0x10;
    let ext = &mut buf[RTP_HEADER_LEN..RTP_HEADER_LEN + TRANSPORT_CC_EXT_LEN];
    ext[0..2].copy_from_slice(&0xBEDEu16.to_be_bytes());
    ext[2..4].copy_from_slice(&1u16.to_be_bytes());
    ext[4] = (id << 4) | 1;
    ext[5..7].copy_from_slice(&twcc.to_be_bytes());
    ext[7] = 0;
    RTP_HEADER_LEN + TRANSPORT_CC_EXT_LEN
}

/// Replaces the transport-wide sequence number in a packet written by
/// [`write_rtp_header_with`] (a retransmission takes a new one); does nothing to a packet
/// without the extension block.
pub fn set_transport_cc(packet: &mut [u8], twcc: u16) {
    if packet.first().is_some_and(|b| b & 0x10 != 0)
        && let Some(b) = packet.get_mut(RTP_HEADER_LEN + 5..RTP_HEADER_LEN + 7)
    {
        b.copy_from_slice(&twcc.to_be_bytes());
    }
}

/// Writes `probe` into the last [`TRAILER_LEN`] bytes of `payload` (which must be at least
/// that long).
pub fn write_trailer(payload: &mut [u8], probe: &Probe) {
    let at = payload.len() - TRAILER_LEN;
    let t = &mut payload[at..];
    t[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    t[4..8].copy_from_slice(&probe.stream_id.to_be_bytes());
    t[8..12].copy_from_slice(&probe.counter.to_be_bytes());
    t[12..20].copy_from_slice(&probe.send_us.to_be_bytes());
}

/// Reads the probe trailer of a payload, if it has one.
pub fn read_trailer(payload: &[u8]) -> Option<Probe> {
    let at = payload.len().checked_sub(TRAILER_LEN)?;
    let t = &payload[at..];
    let word = |i: usize| u32::from_be_bytes([t[i], t[i + 1], t[i + 2], t[i + 3]]);
    if word(0) != MAGIC {
        return None;
    }
    let mut send = [0u8; 8];
    send.copy_from_slice(&t[12..20]);
    Some(Probe {
        stream_id: word(4),
        counter: word(8),
        send_us: u64::from_be_bytes(send),
    })
}

/// The filler byte at payload offset `i` of packet `counter`.
fn filler(counter: u32, i: usize) -> u8 {
    (counter as u8).wrapping_add(i as u8)
}

/// Fills `payload[from..len - TRAILER_LEN]` with the pattern of packet `counter`.
pub fn fill(payload: &mut [u8], from: usize, counter: u32) {
    let end = payload.len().saturating_sub(TRAILER_LEN);
    for (i, b) in payload.iter_mut().enumerate().take(end).skip(from) {
        *b = filler(counter, i);
    }
}

/// Whether `payload[from..len - TRAILER_LEN]` holds the pattern of packet `counter`.
pub fn check_fill(payload: &[u8], from: usize, counter: u32) -> bool {
    let end = payload.len().saturating_sub(TRAILER_LEN);
    payload
        .iter()
        .enumerate()
        .take(end)
        .skip(from)
        .all(|(i, &b)| b == filler(counter, i))
}

/// Writes the VP8 payload descriptor (and, on a frame's first packet, the VP8 payload
/// header) at the start of `payload`; returns how many bytes it wrote.
///
/// The descriptor is one byte: `0x10` (S=1, PID 0) on a frame's first packet, `0x00` on the
/// others. The first packet then has the frame tag, whose lowest bit is 0 on key frames
/// (what SFUs test), and key frames add the start code and the dimensions.
pub fn write_vp8_headers(
    payload: &mut [u8],
    first: bool,
    key: bool,
    width: u16,
    height: u16,
) -> usize {
    Vp8Header {
        start_of_frame: first,
        keyframe: key,
        width,
        height,
        ..Vp8Header::default()
    }
    .write(payload)
}

/// Where the filler starts in a VP8 payload written by [`write_vp8_headers`] (0 if the
/// payload is empty).
pub fn vp8_filler_start(payload: &[u8]) -> usize {
    match (payload.first(), payload.get(1)) {
        (Some(b0), Some(tag)) if b0 & 0x10 != 0 => {
            if tag & 0x01 == 0 {
                1 + VP8_KEY_HEADER_LEN
            } else {
                1 + VP8_DELTA_HEADER_LEN
            }
        }
        (Some(_), _) => 1,
        (None, _) => 0,
    }
}

/// Smallest payload a video packet may have: headers of a key frame's first packet plus
/// the trailer.
pub const MIN_VIDEO_PAYLOAD: usize = 1 + VP8_KEY_HEADER_LEN + TRAILER_LEN;

/// Frame sizes of a synthetic video stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoRate {
    /// Bytes of a key frame (payload bytes over all its packets).
    pub key_bytes: usize,
    /// Bytes of a delta frame.
    pub delta_bytes: usize,
}

impl VideoRate {
    /// Frame sizes reaching `kbps` on average at `fps` frames per second with one key frame
    /// every `gop` frames, a key frame being four times the average frame.
    pub fn new(kbps: u32, fps: u32, gop: u32) -> Self {
        let avg = (u64::from(kbps) * 1000 / 8 / u64::from(fps.max(1))) as usize;
        let gop = gop.max(2) as usize;
        let key_bytes = (4 * avg).max(MIN_VIDEO_PAYLOAD);
        let delta_bytes =
            ((gop * avg).saturating_sub(key_bytes) / (gop - 1)).max(MIN_VIDEO_PAYLOAD);
        Self {
            key_bytes,
            delta_bytes,
        }
    }
}

/// How a frame of `bytes` payload bytes is split: `(packets, payload bytes per packet)`,
/// each packet at most [`MAX_VIDEO_PAYLOAD`] and at least [`MIN_VIDEO_PAYLOAD`].
pub fn split_frame(bytes: usize) -> (usize, usize) {
    let packets = bytes.div_ceil(MAX_VIDEO_PAYLOAD).max(1);
    let each = (bytes / packets).clamp(MIN_VIDEO_PAYLOAD, MAX_VIDEO_PAYLOAD);
    (packets, each)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrosoup_rtc::rtp::{VideoCodec, is_keyframe, parse_rtp};

    #[test]
    fn trailer_round_trip_and_rejects_foreign_payloads() {
        let mut p = vec![0u8; 60];
        let probe = Probe {
            stream_id: 7,
            counter: 0xdead_beef,
            send_us: 123_456_789_012,
        };
        write_trailer(&mut p, &probe);
        assert_eq!(read_trailer(&p), Some(probe));
        assert_eq!(read_trailer(&p[..TRAILER_LEN - 1]), None);
        let mut foreign = p.clone();
        let at = foreign.len() - TRAILER_LEN;
        foreign[at] ^= 1;
        assert_eq!(read_trailer(&foreign), None);
    }

    #[test]
    fn fill_pattern_detects_corruption() {
        let mut p = vec![0u8; 80];
        fill(&mut p, 4, 9);
        assert!(check_fill(&p, 4, 9));
        assert!(!check_fill(&p, 4, 10));
        p[30] ^= 0x40;
        assert!(!check_fill(&p, 4, 9));
    }

    #[test]
    fn vp8_headers_are_seen_as_key_frames_only_when_they_are() {
        let mut key = vec![0u8; 64];
        let n = write_vp8_headers(&mut key, true, true, 640, 360);
        assert_eq!((key[0], n), (0x10, 11));
        assert!(is_keyframe(VideoCodec::Vp8, &key));
        assert_eq!(vp8_filler_start(&key), 11);

        let mut delta = vec![0u8; 64];
        assert_eq!(write_vp8_headers(&mut delta, true, false, 640, 360), 4);
        assert!(!is_keyframe(VideoCodec::Vp8, &delta));
        assert_eq!(vp8_filler_start(&delta), 4);

        let mut cont = vec![0u8; 64];
        assert_eq!(write_vp8_headers(&mut cont, false, true, 640, 360), 1);
        assert_eq!(cont[0], 0x00);
        assert!(!is_keyframe(VideoCodec::Vp8, &cont));
        assert_eq!(vp8_filler_start(&cont), 1);
    }

    #[test]
    fn rtp_header_parses_back() {
        let mut b = [0u8; 40];
        write_rtp_header(&mut b, true, 101, 65535, 90_000, 0x1234_5678);
        let info = parse_rtp(&b).expect("valid header");
        assert!(info.marker);
        assert_eq!(info.payload_type, 101);
        assert_eq!(info.sequence_number, 65535);
        assert_eq!(info.timestamp, 90_000);
        assert_eq!(info.ssrc, 0x1234_5678);
        assert_eq!(info.payload_offset, RTP_HEADER_LEN);
    }

    #[test]
    fn transport_cc_extension_reads_back_and_can_be_renumbered() {
        use ferrosoup_rtc::rtp::{find_extension, parse_transport_cc};
        let mut b = [0u8; 60];
        let at = write_rtp_header_with(&mut b, false, 101, 7, 0, 9, Some((5, 0xfffe)));
        assert_eq!(at, RTP_HEADER_LEN + TRANSPORT_CC_EXT_LEN);
        let info = parse_rtp(&b).expect("valid header");
        assert_eq!(info.payload_offset, at);
        let twcc = |b: &[u8]| {
            let info = parse_rtp(b).expect("valid header");
            find_extension(b, &info, 5).and_then(parse_transport_cc)
        };
        assert_eq!(twcc(&b), Some(0xfffe));
        set_transport_cc(&mut b, 3);
        assert_eq!(twcc(&b), Some(3));
        // Without the extension: header only, and renumbering leaves the packet alone.
        let mut plain = [0u8; 60];
        assert_eq!(
            write_rtp_header_with(&mut plain, false, 101, 7, 0, 9, None),
            RTP_HEADER_LEN
        );
        let before = plain;
        set_transport_cc(&mut plain, 3);
        assert_eq!(plain, before);
    }

    #[test]
    fn video_rate_averages_to_the_target() {
        let rate = VideoRate::new(1000, 30, 75);
        let bytes_per_gop = rate.key_bytes + 74 * rate.delta_bytes;
        let kbps = bytes_per_gop as f64 * 8.0 / (75.0 / 30.0) / 1000.0;
        assert!((kbps - 1000.0).abs() < 5.0, "{kbps}");
        assert!(rate.key_bytes > rate.delta_bytes);
        // Tiny rates still give packets that hold the headers and the trailer.
        let tiny = VideoRate::new(1, 30, 75);
        assert_eq!(tiny.delta_bytes, MIN_VIDEO_PAYLOAD);
    }

    #[test]
    fn frames_split_into_bounded_packets() {
        assert_eq!(split_frame(100), (1, 100));
        assert_eq!(split_frame(1100), (1, 1100));
        assert_eq!(split_frame(1101), (2, 550));
        assert_eq!(split_frame(10_000), (10, 1000));
        assert_eq!(split_frame(1), (1, MIN_VIDEO_PAYLOAD));
    }
}
