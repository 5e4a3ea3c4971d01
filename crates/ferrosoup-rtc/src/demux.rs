//! Classification of one UDP datagram received on a WebRTC socket.
//!
//! One socket carries STUN, DTLS, SRTP and SRTCP (BUNDLE + rtcp-mux). RFC 7983 §7 tells
//! them apart by the first byte; RFC 5761 §4 tells RTCP from RTP by the second byte (the
//! RTCP packet type, which falls where an RTP packet would have the marker bit set and a
//! payload type of 64..=95, a range RTP sessions must not use). [`classify`] also checks
//! the minimum size of each kind so that truncated datagrams come out as
//! [`PacketKind::Unknown`] and are dropped before any parser sees them. It reads at most
//! the first eight bytes and never allocates: it runs once per received datagram.

/// Size of the fixed STUN message header (RFC 5389 §6).
const STUN_HEADER_LEN: usize = 20;
/// The STUN magic cookie, bytes 4..8 of every RFC 5389 message.
const STUN_MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of a DTLS record header (content type, version, epoch, sequence number, length).
const DTLS_RECORD_HEADER_LEN: usize = 13;
/// Size of the fixed RTP header (RFC 3550 §5.1).
const RTP_HEADER_LEN: usize = 12;
/// Size of the smallest RTCP packet with a sender SSRC (an empty receiver report).
const RTCP_HEADER_LEN: usize = 8;

/// What a datagram carries, by RFC 7983 first-byte ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    /// A STUN message (ICE connectivity check or response).
    Stun,
    /// A DTLS record (handshake, alert or application data).
    Dtls,
    /// An (S)RTP packet.
    Rtp,
    /// An (S)RTCP compound packet.
    Rtcp,
    /// Anything else, including datagrams too short for the kind their first byte names.
    Unknown,
}

/// Classifies one datagram. Never allocates, never panics.
pub fn classify(datagram: &[u8]) -> PacketKind {
    let Some(&first) = datagram.first() else {
        return PacketKind::Unknown;
    };
    match first {
        0..=3 if is_plausible_stun(datagram) => PacketKind::Stun,
        20..=63 if datagram.len() >= DTLS_RECORD_HEADER_LEN => PacketKind::Dtls,
        // 128..=191 means the two version bits are 0b10, i.e. RTP/RTCP version 2.
        128..=191 => match datagram.get(1) {
            Some(192..=223) if datagram.len() >= RTCP_HEADER_LEN => PacketKind::Rtcp,
            Some(192..=223) => PacketKind::Unknown,
            Some(_) if datagram.len() >= RTP_HEADER_LEN => PacketKind::Rtp,
            _ => PacketKind::Unknown,
        },
        _ => PacketKind::Unknown,
    }
}

/// Whether `datagram` has a well-formed RFC 5389 header that accounts for exactly the whole
/// datagram: a first byte in RFC 7983's STUN range (0..=3), the magic cookie, and a body length that is a multiple of
/// four and equals the bytes after the header.
pub(crate) fn is_plausible_stun(datagram: &[u8]) -> bool {
    let Some(header) = datagram.first_chunk::<STUN_HEADER_LEN>() else {
        return false;
    };
    let body_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let cookie = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    header[0] <= 3
        && cookie == STUN_MAGIC_COOKIE
        && body_len % 4 == 0
        && body_len == datagram.len() - STUN_HEADER_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun_binding_request(body: &[u8]) -> Vec<u8> {
        let mut d = vec![0x00, 0x01];
        let len = u16::try_from(body.len()).expect("test bodies are small");
        d.extend_from_slice(&len.to_be_bytes());
        d.extend_from_slice(&STUN_MAGIC_COOKIE.to_be_bytes());
        d.extend_from_slice(&[7; 12]);
        d.extend_from_slice(body);
        d
    }

    #[test]
    fn stun_requires_cookie_and_matching_length() {
        let empty_body = stun_binding_request(&[]);
        assert_eq!(classify(&empty_body), PacketKind::Stun);
        let with_attr = stun_binding_request(&[0x00, 0x25, 0x00, 0x00]);
        assert_eq!(classify(&with_attr), PacketKind::Stun);

        let mut bad_cookie = empty_body.clone();
        bad_cookie[4] = 0x21 ^ 0xFF;
        assert_eq!(classify(&bad_cookie), PacketKind::Unknown);

        // Header says 4 more bytes than the datagram has.
        let mut short = with_attr.clone();
        short.truncate(short.len() - 4);
        assert_eq!(classify(&short), PacketKind::Unknown);

        // Trailing bytes beyond the declared length.
        let mut long = with_attr.clone();
        long.extend_from_slice(&[0; 4]);
        assert_eq!(classify(&long), PacketKind::Unknown);

        // Length not a multiple of four.
        let odd = stun_binding_request(&[0x00, 0x25, 0x00]);
        assert_eq!(classify(&odd), PacketKind::Unknown);

        // Truncated header.
        assert_eq!(classify(&empty_body[..19]), PacketKind::Unknown);
    }

    #[test]
    fn dtls_range_and_minimum_length() {
        // A DTLS 1.2 handshake record header: type 22, version FEFD, epoch, seq, length.
        let mut record = vec![22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xAA];
        assert_eq!(classify(&record), PacketKind::Dtls);
        record[0] = 20;
        assert_eq!(classify(&record), PacketKind::Dtls);
        record[0] = 63;
        assert_eq!(classify(&record), PacketKind::Dtls);
        assert_eq!(classify(&record[..12]), PacketKind::Unknown);
        record[0] = 19;
        assert_eq!(classify(&record), PacketKind::Unknown);
        record[0] = 64;
        assert_eq!(classify(&record), PacketKind::Unknown);
    }

    #[test]
    fn rtp_and_rtcp_split_on_second_byte() {
        // RTP, PT 111 (opus), marker clear.
        let mut rtp = vec![0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(classify(&rtp), PacketKind::Rtp);
        // Marker bit set with PT 96 (0xE0) is still RTP.
        rtp[1] = 0x80 | 96;
        assert_eq!(classify(&rtp), PacketKind::Rtp);
        // Marker set with PT 63 (191) is RTP too; PT 96+ with marker is 224+.
        rtp[1] = 191;
        assert_eq!(classify(&rtp), PacketKind::Rtp);
        rtp[1] = 224;
        assert_eq!(classify(&rtp), PacketKind::Rtp);
        assert_eq!(classify(&rtp[..11]), PacketKind::Unknown);

        // RTCP receiver report (PT 201), 8 bytes: header + sender SSRC.
        let mut rtcp = vec![0x80, 201, 0, 1, 0, 0, 0, 1];
        assert_eq!(classify(&rtcp), PacketKind::Rtcp);
        rtcp[1] = 192;
        assert_eq!(classify(&rtcp), PacketKind::Rtcp);
        rtcp[1] = 223;
        assert_eq!(classify(&rtcp), PacketKind::Rtcp);
        assert_eq!(classify(&rtcp[..7]), PacketKind::Unknown);

        // Sender report with padding bit and a report count still starts in 128..=191.
        rtcp[0] = 0xA1;
        rtcp[1] = 200;
        assert_eq!(classify(&rtcp), PacketKind::Rtcp);

        // Version 1 or 3 is not RTP.
        rtp[0] = 0x40;
        assert_eq!(classify(&rtp), PacketKind::Unknown);
        rtp[0] = 0xC0;
        assert_eq!(classify(&rtp), PacketKind::Unknown);
    }

    #[test]
    fn short_and_garbage_input() {
        assert_eq!(classify(&[]), PacketKind::Unknown);
        assert_eq!(classify(&[0]), PacketKind::Unknown);
        assert_eq!(classify(&[0x80]), PacketKind::Unknown);
        assert_eq!(classify(&[22]), PacketKind::Unknown);
        // TURN channel data (64..=79) and QUIC-ish bytes are not ours.
        assert_eq!(classify(&[0x40; 32]), PacketKind::Unknown);
        assert_eq!(classify(&[0xFF; 32]), PacketKind::Unknown);
        // First byte in the STUN range but no header.
        assert_eq!(classify(&[0x01; 32]), PacketKind::Unknown);

        // Every short prefix of every first byte: no panic, and sizes are respected.
        for first in 0..=u8::MAX {
            for len in 0..24 {
                let mut d = vec![0u8; len];
                if let Some(b) = d.first_mut() {
                    *b = first;
                }
                let kind = classify(&d);
                let min = match kind {
                    PacketKind::Stun => STUN_HEADER_LEN,
                    PacketKind::Dtls => DTLS_RECORD_HEADER_LEN,
                    PacketKind::Rtp => RTP_HEADER_LEN,
                    PacketKind::Rtcp => RTCP_HEADER_LEN,
                    PacketKind::Unknown => 0,
                };
                assert!(len >= min, "{kind:?} from {len} bytes");
            }
        }
    }
}
