//! Property tests over the parsers fed from the network: they never panic on arbitrary
//! bytes, and build → parse, remap, widen and protect → unprotect keep what they must.

use std::net::SocketAddr;
use std::time::Instant;

use ferrosoup_rtc::demux::{PacketKind, classify};
use ferrosoup_rtc::dtls::SrtpKeys;
use ferrosoup_rtc::ice::{IceCredentials, IceLiteServer, StunOutcome, stun_local_ufrag};
use ferrosoup_rtc::rtcp::{RtcpItem, parse_compound};
use ferrosoup_rtc::rtp::{
    ONE_BYTE_PROFILE, TWO_BYTE_PROFILE, extensions, parse_rtp, rewrite_extensions,
};
use ferrosoup_rtc::seq::SeqExtender;
use ferrosoup_rtc::srtp::{SrtpProfile, SrtpSession};
use proptest::collection::vec;
use proptest::prelude::*;

/// Header fields of an RTP packet to build.
#[derive(Debug, Clone)]
struct RtpFields {
    marker: bool,
    payload_type: u8,
    sequence_number: u16,
    timestamp: u32,
    ssrc: u32,
    csrcs: Vec<u32>,
    /// Extension profile and raw element bytes (padded to 32 bits when built).
    extension: Option<(u16, Vec<u8>)>,
    payload: Vec<u8>,
    padding: u8,
}

impl RtpFields {
    fn build(&self) -> Vec<u8> {
        let mut p = vec![0x80 | self.csrcs.len() as u8, self.payload_type];
        if self.marker {
            p[1] |= 0x80;
        }
        p.extend_from_slice(&self.sequence_number.to_be_bytes());
        p.extend_from_slice(&self.timestamp.to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        for c in &self.csrcs {
            p.extend_from_slice(&c.to_be_bytes());
        }
        if let Some((profile, elements)) = &self.extension {
            p[0] |= 0x10;
            let words = elements.len().div_ceil(4);
            p.extend_from_slice(&profile.to_be_bytes());
            p.extend_from_slice(&(words as u16).to_be_bytes());
            p.extend_from_slice(elements);
            p.resize(p.len() + words * 4 - elements.len(), 0);
        }
        p.extend_from_slice(&self.payload);
        if self.padding > 0 {
            p[0] |= 0x20;
            p.resize(p.len() + usize::from(self.padding) - 1, 0);
            p.push(self.padding);
        }
        p
    }
}

fn rtp_fields() -> impl Strategy<Value = RtpFields> {
    (
        any::<bool>(),
        0u8..128,
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        vec(any::<u32>(), 0..=15),
        proptest::option::of((any::<u16>(), vec(any::<u8>(), 0..64))),
        vec(any::<u8>(), 0..200),
        any::<u8>(),
    )
        .prop_map(
            |(
                marker,
                payload_type,
                sequence_number,
                timestamp,
                ssrc,
                csrcs,
                extension,
                payload,
                padding,
            )| {
                RtpFields {
                    marker,
                    payload_type,
                    sequence_number,
                    timestamp,
                    ssrc,
                    csrcs,
                    extension,
                    payload,
                    padding,
                }
            },
        )
}

/// One-byte header extension elements: `(id 1..=14, data of 1..=16 bytes)`.
fn one_byte_elements() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    vec((1u8..=14, vec(any::<u8>(), 1..=16)), 0..8)
}

fn srtp_keys(profile: SrtpProfile) -> impl Strategy<Value = SrtpKeys> {
    let salt = profile.master_salt_len();
    (
        vec(any::<u8>(), 16),
        vec(any::<u8>(), salt),
        vec(any::<u8>(), 16),
        vec(any::<u8>(), salt),
    )
        .prop_map(move |(lk, ls, rk, rs)| SrtpKeys {
            profile,
            local_master_key: lk,
            local_master_salt: ls,
            remote_master_key: rk,
            remote_master_salt: rs,
        })
}

fn profile() -> impl Strategy<Value = SrtpProfile> {
    prop_oneof![
        Just(SrtpProfile::AeadAes128Gcm),
        Just(SrtpProfile::Aes128CmHmacSha1_80)
    ]
}

fn mirrored(k: &SrtpKeys) -> SrtpKeys {
    SrtpKeys {
        profile: k.profile,
        local_master_key: k.remote_master_key.clone(),
        local_master_salt: k.remote_master_salt.clone(),
        remote_master_key: k.local_master_key.clone(),
        remote_master_salt: k.local_master_salt.clone(),
    }
}

/// Walks every item and sub-iterator of a compound RTCP datagram.
fn walk_rtcp(data: &[u8]) -> usize {
    let mut n = 0;
    for item in parse_compound(data) {
        n += match item {
            Ok(
                RtcpItem::SenderReport { reports, .. } | RtcpItem::ReceiverReport { reports, .. },
            ) => reports.count(),
            Ok(RtcpItem::Bye { ssrcs } | RtcpItem::Remb { ssrcs, .. }) => ssrcs.count(),
            Ok(RtcpItem::Nack { pairs, .. }) => pairs.seqs().count(),
            Ok(RtcpItem::Fir { entries, .. }) => entries.count(),
            Ok(_) | Err(_) => 1,
        };
    }
    n
}

proptest! {
    #[test]
    fn sctp_association_never_panics(
        packets in vec(vec(any::<u8>(), 0..200), 0..16),
        common_header in any::<bool>(),
    ) {
        use ferrosoup_rtc::sctp::{Ppid, Reliability, SctpAssociation, SctpConfig};
        let mut now = Instant::now();
        let mut a = SctpAssociation::new(SctpConfig { max_message_size: 4096 });
        a.start(now, ferrosoup_rtc::dtls::DtlsRole::Client);
        for mut p in packets {
            // Half the time a plausible common header (ports 5000), so chunks get parsed.
            if common_header && p.len() >= 12 {
                p[..4].copy_from_slice(&[0x13, 0x88, 0x13, 0x88]);
            }
            a.handle_packet(now, bytes::Bytes::from(p));
            let _ = a.send(now, 1, Reliability::default(), Ppid::String, &bytes::Bytes::from_static(b"x"));
            while a.poll_transmit(now).is_some() {}
            while a.poll_event().is_some() {}
            now += std::time::Duration::from_millis(300);
            a.handle_timeout(now);
        }
    }

    #[test]
    fn classify_never_panics_and_checks_sizes(data in vec(any::<u8>(), 0..128)) {
        let min = match classify(&data) {
            PacketKind::Stun => 20,
            PacketKind::Dtls => 13,
            PacketKind::Rtp => 12,
            PacketKind::Rtcp => 8,
            PacketKind::Unknown => 0,
        };
        prop_assert!(data.len() >= min);
    }

    #[test]
    fn parse_rtp_never_panics(data in vec(any::<u8>(), 0..300)) {
        if let Ok(info) = parse_rtp(&data) {
            prop_assert_eq!(
                info.payload_offset + info.payload_len + usize::from(info.padding_len),
                data.len()
            );
            for (id, _) in extensions(&data, &info) {
                prop_assert!(id != 0);
            }
        }
    }

    #[test]
    fn parse_compound_never_panics(data in vec(any::<u8>(), 0..300)) {
        walk_rtcp(&data);
    }

    #[test]
    fn parse_compound_reads_headers_of_valid_version(mut data in vec(any::<u8>(), 8..300)) {
        // Force version 2 in the first header so the parser gets past the first check.
        data[0] = 0x80 | (data[0] & 0x3f);
        walk_rtcp(&data);
    }

    #[test]
    fn stun_never_panics(mut data in vec(any::<u8>(), 0..200), plausible in any::<bool>()) {
        if plausible && data.len() >= 20 {
            // A header that passes the demux checks, so the attribute walk is reached.
            let body = (data.len() - 20) / 4 * 4;
            data.truncate(20 + body);
            data[0] = 0;
            data[1] = 1;
            data[2..4].copy_from_slice(&(body as u16).to_be_bytes());
            data[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
        }
        let _ = stun_local_ufrag(&data);
        let creds = IceCredentials { ufrag: "ufrag".to_owned(), pwd: "password".to_owned() };
        let now = Instant::now();
        let mut server = IceLiteServer::new(creds, now);
        let mut out = Vec::new();
        let from: SocketAddr = "192.0.2.1:5000".parse().expect("literal address");
        match server.handle_stun(now, from, &data, &mut out) {
            StunOutcome::Respond => prop_assert_eq!(classify(&out), PacketKind::Stun),
            StunOutcome::Ignored(_) => prop_assert!(out.is_empty()),
        }
    }

    #[test]
    fn srtp_unprotect_never_panics(
        keys in profile().prop_flat_map(srtp_keys),
        packets in vec(vec(any::<u8>(), 0..200), 1..8),
    ) {
        let mut session = SrtpSession::new(&keys).expect("keys of the right lengths");
        for p in packets {
            let mut rtp = p.clone();
            let mut rtp_v2 = p.clone();
            if let Some(b) = rtp_v2.first_mut() {
                *b = 0x80 | (*b & 0x3f);
            }
            let mut rtcp = p;
            prop_assert!(session.unprotect_rtp(&mut rtp).is_err());
            prop_assert!(session.unprotect_rtp(&mut rtp_v2).is_err());
            prop_assert!(session.unprotect_rtcp(&mut rtcp).is_err());
        }
    }

    #[test]
    fn rtp_build_parse_round_trip(f in rtp_fields()) {
        let packet = f.build();
        let info = parse_rtp(&packet).expect("built packet parses");
        prop_assert_eq!(info.marker, f.marker);
        prop_assert_eq!(info.payload_type, f.payload_type);
        prop_assert_eq!(info.sequence_number, f.sequence_number);
        prop_assert_eq!(info.timestamp, f.timestamp);
        prop_assert_eq!(info.ssrc, f.ssrc);
        prop_assert_eq!(usize::from(info.csrc_count), f.csrcs.len());
        prop_assert_eq!(info.extension_profile, f.extension.as_ref().map_or(0, |e| e.0));
        prop_assert_eq!(info.padding_len, f.padding);
        prop_assert_eq!(info.payload(&packet), &f.payload[..]);
    }

    #[test]
    fn remap_extension_ids_preserves_payload_and_data(
        elements in one_byte_elements(),
        map_values in vec(0u8..=16, 16),
        payload in vec(any::<u8>(), 0..100),
        two_byte in any::<bool>(),
    ) {
        let mut raw = Vec::new();
        for (id, data) in &elements {
            if two_byte {
                raw.push(*id);
                raw.push(data.len() as u8);
            } else {
                raw.push((id << 4) | (data.len() as u8 - 1));
            }
            raw.extend_from_slice(data);
        }
        let profile = if two_byte { TWO_BYTE_PROFILE } else { ONE_BYTE_PROFILE };
        let fields = RtpFields {
            marker: false,
            payload_type: 96,
            sequence_number: 1,
            timestamp: 2,
            ssrc: 3,
            csrcs: Vec::new(),
            extension: Some((profile, raw)),
            payload: payload.clone(),
            padding: 0,
        };
        let mut packet = fields.build();
        let info = parse_rtp(&packet).expect("built packet parses");
        let before: Vec<(u8, Vec<u8>)> =
            extensions(&packet, &info).map(|(id, d)| (id, d.to_vec())).collect();
        prop_assert_eq!(&before, &elements);

        let mut map = [0u8; 256];
        map[..16].copy_from_slice(&map_values);
        let len = packet.len();
        rewrite_extensions(&mut packet, &info, &map, &Default::default());
        prop_assert_eq!(packet.len(), len);
        prop_assert_eq!(parse_rtp(&packet), Ok(info));
        prop_assert_eq!(info.payload(&packet), &payload[..]);
        let expected: Vec<(u8, Vec<u8>)> = elements
            .iter()
            .filter_map(|(id, d)| {
                let new = map[usize::from(*id)];
                let kept = if two_byte { new != 0 } else { (1..=14).contains(&new) };
                kept.then(|| (new, d.clone()))
            })
            .collect();
        let after: Vec<(u8, Vec<u8>)> =
            extensions(&packet, &info).map(|(id, d)| (id, d.to_vec())).collect();
        prop_assert_eq!(after, expected);
    }

    #[test]
    fn seq_extender_keeps_offsets_under_reordering(
        start in any::<u16>(),
        jitter in vec(0u64..200, 1..600),
    ) {
        // True extended numbers start + i, delivered in an order where each packet is
        // displaced by less than 200 positions (far inside the ±32768 window).
        let mut order: Vec<(u64, u64)> =
            jitter.iter().enumerate().map(|(i, j)| (i as u64 + j, i as u64)).collect();
        order.sort();
        let mut ext = SeqExtender::new();
        let mut offset = None;
        let mut highest = 0;
        for (_, i) in order {
            let truth = u64::from(start) + i;
            let e = ext.extend(truth as u16);
            highest = highest.max(e);
            let d = e.wrapping_sub(truth);
            prop_assert_eq!(*offset.get_or_insert(d), d, "extended value drifted");
        }
        prop_assert_eq!(ext.highest(), Some(highest));
    }

    #[test]
    fn srtp_rtp_round_trip(
        keys in profile().prop_flat_map(srtp_keys),
        packets in vec((rtp_fields(), 1u16..100), 1..16),
    ) {
        let mut ours = SrtpSession::new(&keys).expect("valid keys");
        let mut theirs = SrtpSession::new(&mirrored(&keys)).expect("valid keys");
        let mut seq = packets[0].0.sequence_number;
        for (mut fields, step) in packets {
            // One stream, sequence numbers moving forward (wrapping) in random steps.
            fields.ssrc = 0x1234;
            fields.sequence_number = seq;
            seq = seq.wrapping_add(step);
            let plain = fields.build();
            let mut buf = plain.clone();
            buf.resize(plain.len() + keys.profile.rtp_overhead(), 0);
            let n = theirs.protect_rtp(&mut buf, plain.len()).expect("protect");
            prop_assert_eq!(n, buf.len());
            if fields.payload.len() > 4 {
                prop_assert_ne!(&buf[..plain.len()], &plain[..], "payload not encrypted");
            }
            let m = ours.unprotect_rtp(&mut buf).expect("unprotect");
            prop_assert_eq!(&buf[..m], &plain[..]);
            // The same packet again is a replay.
            let mut again = plain.clone();
            again.resize(plain.len() + keys.profile.rtp_overhead(), 0);
            theirs.protect_rtp(&mut again, plain.len()).expect("protect");
            prop_assert!(ours.unprotect_rtp(&mut again).is_err());
        }
    }

    #[test]
    fn srtp_rtcp_round_trip(
        keys in profile().prop_flat_map(srtp_keys),
        packets in vec((any::<u32>(), vec(any::<u8>(), 0..200)), 1..8),
    ) {
        let mut ours = SrtpSession::new(&keys).expect("valid keys");
        let mut theirs = SrtpSession::new(&mirrored(&keys)).expect("valid keys");
        for (ssrc, body) in packets {
            let mut plain = vec![0x80, 201, 0, 1];
            plain.extend_from_slice(&ssrc.to_be_bytes());
            plain.extend_from_slice(&body);
            let mut buf = plain.clone();
            buf.resize(plain.len() + keys.profile.rtcp_overhead(), 0);
            let n = theirs.protect_rtcp(&mut buf, plain.len()).expect("protect");
            prop_assert_eq!(n, buf.len());
            let m = ours.unprotect_rtcp(&mut buf).expect("unprotect");
            prop_assert_eq!(&buf[..m], &plain[..]);
        }
    }
}
