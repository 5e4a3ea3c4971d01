//! SRTP/SRTCP unprotect with fixed keys, for both profiles: arbitrary bytes, and packets
//! protected by the peer's session (optionally with one byte flipped afterwards), which
//! reach the decryption and replay paths that random bytes cannot.
#![no_main]

use arbitrary::Arbitrary;
use ferrosoup_rtc::dtls::SrtpKeys;
use ferrosoup_rtc::srtp::{SrtpError, SrtpProfile, SrtpSession};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    /// Bytes straight off the wire.
    UnprotectRtp(Vec<u8>),
    /// Bytes straight off the wire.
    UnprotectRtcp(Vec<u8>),
    /// A plaintext packet protected by the peer, then possibly corrupted.
    RoundTripRtp {
        packet: Vec<u8>,
        flip: Option<(u16, u8)>,
    },
    /// A plaintext compound packet protected by the peer, then possibly corrupted.
    RoundTripRtcp {
        packet: Vec<u8>,
        flip: Option<(u16, u8)>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    gcm: bool,
    small_window: bool,
    ops: Vec<Op>,
}

fn keys(profile: SrtpProfile) -> SrtpKeys {
    let salt_len = profile.master_salt_len() as u8;
    SrtpKeys {
        profile,
        local_master_key: (1..=16).collect(),
        local_master_salt: (100..100 + salt_len).collect(),
        remote_master_key: (51..=66).collect(),
        remote_master_salt: (200..200 + salt_len).collect(),
    }
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

fn flip(buf: &mut [u8], flip: Option<(u16, u8)>) -> bool {
    match flip {
        Some((at, mask)) if mask != 0 && !buf.is_empty() => {
            let at = usize::from(at) % buf.len();
            buf[at] ^= mask;
            true
        }
        _ => false,
    }
}

fuzz_target!(|input: Input| {
    let profile = if input.gcm {
        SrtpProfile::AeadAes128Gcm
    } else {
        SrtpProfile::Aes128CmHmacSha1_80
    };
    let window = if input.small_window { 64 } else { 1024 };
    let k = keys(profile);
    let mut ours = SrtpSession::with_replay_window(&k, window).expect("valid keys");
    let mut theirs = SrtpSession::with_replay_window(&mirrored(&k), window).expect("valid keys");
    let mut tainted = false;
    for op in input.ops.into_iter().take(64) {
        match op {
            Op::UnprotectRtp(mut p) => {
                if let Ok(n) = ours.unprotect_rtp(&mut p) {
                    assert!(n <= p.len());
                }
            }
            Op::UnprotectRtcp(mut p) => {
                if let Ok(n) = ours.unprotect_rtcp(&mut p) {
                    assert!(n <= p.len());
                }
            }
            Op::RoundTripRtp { packet, flip: f } => {
                let len = packet.len();
                let mut buf = packet.clone();
                buf.resize(len + profile.rtp_overhead(), 0);
                let Ok(n) = theirs.protect_rtp(&mut buf, len) else {
                    continue;
                };
                buf.truncate(n);
                let flipped = flip(&mut buf, f);
                tainted |= flipped;
                match ours.unprotect_rtp(&mut buf) {
                    Ok(m) => {
                        assert!(!flipped, "corrupted SRTP accepted");
                        assert_eq!(&buf[..m], &packet[..]);
                    }
                    Err(SrtpError::Replayed | SrtpError::IndexOutOfRange) => {}
                    // A corrupted packet the receiver dropped still advanced the sender's
                    // index, so later clean packets may be estimated with another ROC.
                    Err(e) => assert!(flipped || tainted, "clean SRTP rejected: {e}"),
                }
            }
            Op::RoundTripRtcp { packet, flip: f } => {
                let len = packet.len();
                let mut buf = packet.clone();
                buf.resize(len + profile.rtcp_overhead(), 0);
                let Ok(n) = theirs.protect_rtcp(&mut buf, len) else {
                    continue;
                };
                buf.truncate(n);
                let flipped = flip(&mut buf, f);
                match ours.unprotect_rtcp(&mut buf) {
                    Ok(m) => {
                        assert!(!flipped, "corrupted SRTCP accepted");
                        assert_eq!(&buf[..m], &packet[..]);
                    }
                    Err(SrtpError::Replayed) => assert!(flipped, "fresh SRTCP index replayed"),
                    Err(e) => assert!(flipped, "clean SRTCP rejected: {e}"),
                }
            }
        }
    }
});
