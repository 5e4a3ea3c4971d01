//! ICE-lite STUN handling with fixed credentials: arbitrary datagrams, and Binding
//! requests built with correct or spoiled USERNAME / MESSAGE-INTEGRITY / FINGERPRINT so
//! that the accept and reject paths are reached, interleaved with timeouts.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use ferrosoup_rtc::ice::{IceCredentials, IceLiteServer, StunOutcome, stun_local_ufrag};
use libfuzzer_sys::fuzz_target;
use rtc_stun::attributes::{
    ATTR_ICE_CONTROLLED, ATTR_ICE_CONTROLLING, ATTR_PRIORITY, ATTR_USE_CANDIDATE, ATTR_USERNAME,
    AttrType, RawAttribute,
};
use rtc_stun::crypto::providers::RingCrypto;
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{Message, MessageType, Setter, TransactionId};
use rtc_stun::textattrs::TextAttribute;

const UFRAG: &str = "serverufrag0001x";
const PWD: &str = "serverpassword00000000000000000x";
static CRYPTO: RingCrypto = RingCrypto;

#[derive(Arbitrary, Debug)]
enum Username {
    Valid,
    WrongLocal,
    NoColon,
    Custom(String),
    Absent,
}

#[derive(Arbitrary, Debug)]
struct Built {
    method_and_class: Option<u16>,
    transaction: [u8; 12],
    username: Username,
    priority: Option<u32>,
    role: Option<(bool, u64)>,
    use_candidate: bool,
    /// Extra attributes before MESSAGE-INTEGRITY: (type, value).
    extra: Vec<(u16, Vec<u8>)>,
    /// None: no MESSAGE-INTEGRITY; Some(true): the right key; Some(false): a wrong key.
    integrity: Option<bool>,
    fingerprint: bool,
    /// Bytes flipped after building: (offset, xor mask).
    corrupt: Vec<(u16, u8)>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Raw { from: u8, data: Vec<u8> },
    Built { from: u8, msg: Built },
    Advance(u16),
    Restart,
}

fn addr(i: u8) -> SocketAddr {
    if i & 1 == 0 {
        SocketAddr::new(Ipv4Addr::new(192, 0, 2, i).into(), 40_000 + u16::from(i))
    } else {
        SocketAddr::new(
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(i)).into(),
            50_000,
        )
    }
}

fn build(b: &Built) -> Option<Vec<u8>> {
    let mut m = Message::new();
    let mut typ = MessageType::default();
    typ.read_value(b.method_and_class.unwrap_or(0x0001));
    m.build(&[Box::new(TransactionId(b.transaction)), Box::new(typ)])
        .ok()?;
    let username = match &b.username {
        Username::Valid => Some(format!("{UFRAG}:client")),
        Username::WrongLocal => Some("nobody:client".to_owned()),
        Username::NoColon => Some(UFRAG.to_owned()),
        Username::Custom(s) => Some(s.clone()),
        Username::Absent => None,
    };
    if let Some(u) = username {
        TextAttribute::new(ATTR_USERNAME, u).add_to(&mut m).ok()?;
    }
    let raw = |typ, value: &[u8]| RawAttribute {
        typ,
        length: 0,
        value: value.to_vec(),
    };
    if let Some(p) = b.priority {
        raw(ATTR_PRIORITY, &p.to_be_bytes()).add_to(&mut m).ok()?;
    }
    if let Some((controlling, tie)) = b.role {
        let typ = if controlling {
            ATTR_ICE_CONTROLLING
        } else {
            ATTR_ICE_CONTROLLED
        };
        raw(typ, &tie.to_be_bytes()).add_to(&mut m).ok()?;
    }
    if b.use_candidate {
        raw(ATTR_USE_CANDIDATE, &[]).add_to(&mut m).ok()?;
    }
    for (typ, value) in b.extra.iter().take(8) {
        let value = &value[..value.len().min(512)];
        raw(AttrType(*typ), value).add_to(&mut m).ok()?;
    }
    if let Some(right) = b.integrity {
        let key = if right { PWD } else { "wrong-password" };
        MessageIntegrity::new_short_term_integrity_with_provider(key.to_owned(), &CRYPTO)
            .add_to(&mut m)
            .ok()?;
    }
    if b.fingerprint {
        FINGERPRINT.add_to(&mut m).ok()?;
    }
    let mut out = m.raw;
    for &(at, mask) in b.corrupt.iter().take(4) {
        if !out.is_empty() {
            let at = usize::from(at) % out.len();
            out[at] ^= mask;
        }
    }
    Some(out)
}

fuzz_target!(|ops: Vec<Op>| {
    let start = Instant::now();
    let mut now = start;
    let creds = IceCredentials {
        ufrag: UFRAG.to_owned(),
        pwd: PWD.to_owned(),
    };
    let mut server = IceLiteServer::new(creds.clone(), now);
    let mut out = Vec::new();
    for op in ops.into_iter().take(32) {
        let (from, datagram) = match op {
            Op::Raw { from, data } => (from, data),
            Op::Built { from, msg } => match build(&msg) {
                Some(d) => (from, d),
                None => continue,
            },
            Op::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms) * 16);
                server.handle_timeout(now);
                while server.poll_event().is_some() {}
                let _ = server.poll_timeout();
                continue;
            }
            Op::Restart => {
                server.restart(creds.clone());
                continue;
            }
        };
        let _ = stun_local_ufrag(&datagram);
        let from = addr(from);
        match server.handle_stun(now, from, &datagram, &mut out) {
            StunOutcome::Respond => {
                // Every answer is itself a well-formed STUN message.
                assert!(
                    ferrosoup_rtc::demux::classify(&out) == ferrosoup_rtc::demux::PacketKind::Stun
                );
            }
            StunOutcome::Ignored(_) => assert!(out.is_empty()),
        }
        while server.poll_event().is_some() {}
        let _ = server.is_valid_tuple(from);
        let _ = server.on_media_from(from);
    }
});
