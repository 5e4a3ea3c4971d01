//! In-place SRTP and SRTCP (RFC 3711, RFC 7714) for one transport.
//!
//! [`SrtpSession`] holds both directions of a transport: the local keys protect outgoing
//! packets, the remote keys unprotect incoming ones. Every transform works inside the
//! caller's buffer, and the per-SSRC state (rollover counter, replay window, SRTCP index)
//! lives in hash maps that only grow when a new SSRC appears, so a packet in steady state
//! costs no allocation. The remote side's SSRCs are bounded ([`MAX_REMOTE_SSRCS`], least
//! recently used evicted): a peer that holds the keys cannot grow the session by sending
//! from a new SSRC every packet.
//!
//! Supported profiles: `SRTP_AEAD_AES_128_GCM`, `SRTP_AEAD_AES_256_GCM` (RFC 7714) and
//! `SRTP_AES128_CM_HMAC_SHA1_80` (RFC 3711). Keys are derived once with the AES-CM PRF of
//! RFC 3711 §4.3 (AES-256 for 256-bit master keys, RFC 6188) and a key derivation rate of
//! zero. [`SrtpSession::unprotected`] is the same interface with no protection at all, for
//! plain RTP transports without SRTP.

use std::collections::HashMap;

use aes::cipher::{BlockEncrypt, KeyInit};
use aes::{Aes128, Aes256};
use ctr::CtrCore;
use ctr::cipher::{InnerIvInit, StreamCipher, StreamCipherCoreWrapper};
use hmac::{Hmac, Mac};
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use sha1::Sha1;

use crate::dtls::SrtpKeys;

/// Length of an AES-128 SRTP master key (and session key).
const MASTER_KEY_LEN: usize = 16;
/// Length of an AES-256 SRTP master key (and session key).
const MASTER_KEY_256_LEN: usize = 32;
/// Length of the master (and session) salt for AES-CM profiles.
const CM_SALT_LEN: usize = 14;
/// Length of the master (and session) salt for AEAD AES-GCM profiles.
const GCM_SALT_LEN: usize = 12;
/// Length of the HMAC-SHA1 session authentication key.
const AUTH_KEY_LEN: usize = 20;
/// Truncated HMAC-SHA1 tag length of `AES128_CM_HMAC_SHA1_80`.
const HMAC_TAG_LEN: usize = 10;
/// AES-GCM authentication tag length.
const GCM_TAG_LEN: usize = 16;
/// Length of the E flag + SRTCP index word that trails every SRTCP packet.
const SRTCP_INDEX_LEN: usize = 4;
/// RTCP fixed header plus sender SSRC: the part of an SRTCP packet that is never encrypted.
const RTCP_HEADER_LEN: usize = 8;
/// Fixed RTP header length (without CSRCs and extensions).
const RTP_HEADER_LEN: usize = 12;
/// The E (encrypted) flag in the SRTCP index word.
const SRTCP_E_FLAG: u32 = 1 << 31;
/// SRTCP indices are 31 bits; the key must be renewed before they run out.
const MAX_SRTCP_INDEX: u32 = SRTCP_E_FLAG - 1;
/// SRTP indices are 48 bits (32-bit ROC + 16-bit sequence number).
const MAX_SRTP_INDEX: u64 = (1 << 48) - 1;

/// Largest replay window, in packets, that [`SrtpSession`] tracks.
pub const MAX_REPLAY_WINDOW: usize = 1024;
/// Smallest replay window, in packets (RFC 3711 §3.3.2 requires at least 64).
pub const MIN_REPLAY_WINDOW: usize = 64;
/// Replay window used by [`SrtpSession::new`]: large, because late retransmissions are normal
/// for video (libwebrtc uses the same size).
pub const DEFAULT_REPLAY_WINDOW: usize = MAX_REPLAY_WINDOW;

/// How many remote SSRCs an [`SrtpSession`] keeps replay state for, for SRTP and for SRTCP
/// each. An authenticated packet from one more SSRC evicts the least recently used one,
/// taking SSRCs that carried a single packet before those that carried more (streams).
///
/// A legitimate transport uses far fewer: a few producers × up to 4 simulcast layers × RTX
/// on a sending transport (the signaling defaults allow 32 producers per peer; 32 × 4 × 2
/// is 256), one RTCP sender SSRC per receiving transceiver on a receiving one. Only a peer
/// that churns SSRCs loses state, its own: an evicted SSRC starts afresh, without its
/// replay window and, once its sequence numbers wrapped, without its rollover counter, so
/// that its later packets fail authentication (RFC 3711 §3.3.1). An entry takes about
/// 160 bytes; a full table stays under 160 KiB, hash table slack included.
pub const MAX_REMOTE_SSRCS: usize = 256;

/// Key derivation labels (RFC 3711 §4.3.2).
const LABEL_SRTP_ENCRYPTION: u8 = 0x00;
const LABEL_SRTP_AUTH: u8 = 0x01;
const LABEL_SRTP_SALT: u8 = 0x02;
const LABEL_SRTCP_ENCRYPTION: u8 = 0x03;
const LABEL_SRTCP_AUTH: u8 = 0x04;
const LABEL_SRTCP_SALT: u8 = 0x05;

/// AES-128 in counter mode, big-endian 128-bit counter, keyed once and cloned per packet.
type Aes128Ctr = StreamCipherCoreWrapper<CtrCore<Aes128, ctr::flavors::Ctr128BE>>;

/// Errors of SRTP/SRTCP processing. On the media path these mean "drop the packet".
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum SrtpError {
    /// A master key or salt from the DTLS export has the wrong length for the profile.
    #[error("bad SRTP key length: {what} is {got} bytes, expected {expected}")]
    BadKeyLength {
        /// Which key part is wrong.
        what: &'static str,
        /// Bytes given.
        got: usize,
        /// Bytes the profile needs.
        expected: usize,
    },
    /// The replay window size is outside `MIN_REPLAY_WINDOW..=MAX_REPLAY_WINDOW`.
    #[error("replay window {0} outside {MIN_REPLAY_WINDOW}..={MAX_REPLAY_WINDOW}")]
    BadReplayWindow(usize),
    /// The packet is shorter than its header plus the authentication tag.
    #[error("packet too short")]
    TooShort,
    /// The packet is not RTP/RTCP version 2 or its header lengths are inconsistent.
    #[error("invalid RTP/RTCP header")]
    InvalidHeader,
    /// The output buffer cannot hold the protected packet.
    #[error("buffer too small for the protected packet")]
    BufferTooSmall,
    /// The authentication tag did not verify.
    #[error("authentication failed")]
    AuthFailed,
    /// The packet index was already received or is older than the replay window.
    #[error("replayed or too old packet")]
    Replayed,
    /// The packet index cannot be represented (before the first rollover, or past 2^48/2^31).
    #[error("packet index out of range")]
    IndexOutOfRange,
    /// An SRTCP packet without the E flag: this implementation only accepts encrypted SRTCP.
    #[error("unencrypted SRTCP is not accepted")]
    UnencryptedSrtcp,
}

/// An SRTP protection profile negotiated through DTLS `use_srtp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrtpProfile {
    /// `SRTP_AEAD_AES_128_GCM` (RFC 7714): 16-byte key, 12-byte salt, 16-byte tag.
    AeadAes128Gcm,
    /// `SRTP_AES128_CM_HMAC_SHA1_80` (RFC 3711): 16-byte key, 14-byte salt, 10-byte tag.
    Aes128CmHmacSha1_80,
    /// `SRTP_AEAD_AES_256_GCM` (RFC 7714): 32-byte key, 12-byte salt, 16-byte tag.
    AeadAes256Gcm,
    /// No protection: packets pass unchanged (a plain RTP transport without SRTP).
    Unprotected,
}

impl SrtpProfile {
    /// Bytes that protecting an RTP packet appends (the authentication tag).
    pub fn rtp_overhead(self) -> usize {
        match self {
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => GCM_TAG_LEN,
            SrtpProfile::Aes128CmHmacSha1_80 => HMAC_TAG_LEN,
            SrtpProfile::Unprotected => 0,
        }
    }

    /// Bytes that protecting an RTCP packet appends (tag plus E flag and SRTCP index).
    pub fn rtcp_overhead(self) -> usize {
        match self {
            SrtpProfile::Unprotected => 0,
            _ => self.rtp_overhead() + SRTCP_INDEX_LEN,
        }
    }

    /// Master key length in bytes.
    pub fn master_key_len(self) -> usize {
        match self {
            SrtpProfile::AeadAes256Gcm => MASTER_KEY_256_LEN,
            SrtpProfile::Unprotected => 0,
            _ => MASTER_KEY_LEN,
        }
    }

    /// Master salt length in bytes.
    pub fn master_salt_len(self) -> usize {
        match self {
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => GCM_SALT_LEN,
            SrtpProfile::Aes128CmHmacSha1_80 => CM_SALT_LEN,
            SrtpProfile::Unprotected => 0,
        }
    }
}

/// Session keys of one direction and one of RTP/RTCP.
// Four of these live in a session for its whole life and are never moved on the media
// path; boxing the larger variant would only add an indirection per packet.
#[allow(clippy::large_enum_variant)]
enum Transform {
    /// AEAD AES-128-GCM with its 12-byte session salt.
    Gcm { key: LessSafeKey, salt: [u8; 12] },
    /// AES-128 counter mode with its 14-byte session salt, and HMAC-SHA1.
    CmHmac {
        cipher: Aes128,
        salt: [u8; 14],
        auth: Hmac<Sha1>,
    },
    /// No protection.
    Null,
}

impl Transform {
    /// Derives the session keys for RTP (`rtcp == false`) or RTCP from a master key and salt.
    fn derive(
        profile: SrtpProfile,
        master_key: &[u8],
        master_salt: &[u8],
        rtcp: bool,
    ) -> Result<Self, SrtpError> {
        let (enc_label, auth_label, salt_label) = if rtcp {
            (LABEL_SRTCP_ENCRYPTION, LABEL_SRTCP_AUTH, LABEL_SRTCP_SALT)
        } else {
            (LABEL_SRTP_ENCRYPTION, LABEL_SRTP_AUTH, LABEL_SRTP_SALT)
        };
        if profile == SrtpProfile::Unprotected {
            return Ok(Transform::Null);
        }
        if profile == SrtpProfile::AeadAes256Gcm {
            // RFC 6188 §3: the PRF of a 256-bit master key is AES-256 in counter mode.
            let prf = Aes256::new(master_key.into());
            let mut session_key = [0u8; MASTER_KEY_256_LEN];
            kdf(&prf, master_salt, enc_label, &mut session_key);
            let mut salt = [0u8; GCM_SALT_LEN];
            kdf(&prf, master_salt, salt_label, &mut salt);
            let unbound = UnboundKey::new(&AES_256_GCM, &session_key).map_err(|_| {
                SrtpError::BadKeyLength {
                    what: "AES-256-GCM session key",
                    got: session_key.len(),
                    expected: MASTER_KEY_256_LEN,
                }
            })?;
            return Ok(Transform::Gcm {
                key: LessSafeKey::new(unbound),
                salt,
            });
        }
        let prf = Aes128::new(master_key.into());
        let mut session_key = [0u8; MASTER_KEY_LEN];
        kdf(&prf, master_salt, enc_label, &mut session_key);
        match profile {
            SrtpProfile::AeadAes128Gcm => {
                let mut salt = [0u8; GCM_SALT_LEN];
                kdf(&prf, master_salt, salt_label, &mut salt);
                let unbound = UnboundKey::new(&AES_128_GCM, &session_key).map_err(|_| {
                    SrtpError::BadKeyLength {
                        what: "AES-128-GCM session key",
                        got: session_key.len(),
                        expected: MASTER_KEY_LEN,
                    }
                })?;
                Ok(Transform::Gcm {
                    key: LessSafeKey::new(unbound),
                    salt,
                })
            }
            SrtpProfile::Aes128CmHmacSha1_80 => {
                let mut salt = [0u8; CM_SALT_LEN];
                kdf(&prf, master_salt, salt_label, &mut salt);
                let mut auth_key = [0u8; AUTH_KEY_LEN];
                kdf(&prf, master_salt, auth_label, &mut auth_key);
                let auth = <Hmac<Sha1> as Mac>::new_from_slice(&auth_key).map_err(|_| {
                    SrtpError::BadKeyLength {
                        what: "HMAC-SHA1 session key",
                        got: auth_key.len(),
                        expected: AUTH_KEY_LEN,
                    }
                })?;
                Ok(Transform::CmHmac {
                    cipher: Aes128::new((&session_key).into()),
                    salt,
                    auth,
                })
            }
            SrtpProfile::AeadAes256Gcm | SrtpProfile::Unprotected => Ok(Transform::Null),
        }
    }
}

/// The AES-CM PRF of RFC 3711 §4.3.3 with a key derivation rate of zero: the keystream of
/// AES-CM keyed with the master key, IV = (master salt XOR label << 48) || counter.
fn kdf<C: BlockEncrypt + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>>(
    prf: &C,
    master_salt: &[u8],
    label: u8,
    out: &mut [u8],
) {
    let mut input = [0u8; 16];
    input[..master_salt.len()].copy_from_slice(master_salt);
    input[7] ^= label;
    for (counter, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = input;
        // At most two blocks are ever derived, so the counter fits the last two bytes.
        block[14..].copy_from_slice(&(counter as u16).to_be_bytes());
        let mut block = block.into();
        prf.encrypt_block(&mut block);
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

/// Applies the AES-CM keystream (RFC 3711 §4.1.1) for the given IV.
fn aes_cm_apply(cipher: &Aes128, iv: [u8; 16], data: &mut [u8]) {
    let core = CtrCore::<Aes128, ctr::flavors::Ctr128BE>::inner_iv_init(cipher.clone(), &iv.into());
    let mut ctr = Aes128Ctr::from_core(core);
    ctr.apply_keystream(data);
}

/// AES-CM IV: (salt << 16) XOR (ssrc << 64) XOR (index << 16), RFC 3711 §4.1.1.
fn aes_cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *b ^= s;
    }
    // The 48-bit index occupies bytes 8..14.
    for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *b ^= s;
    }
    iv
}

/// AES-GCM IV for SRTP (RFC 7714 §8.1) or SRTCP (§9.1): zeros, SSRC, then ROC || SEQ or the
/// 31-bit SRTCP index, XORed with the session salt.
fn gcm_nonce(salt: &[u8; 12], ssrc: u32, tail: [u8; 6]) -> Nonce {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..].copy_from_slice(&tail);
    for (b, s) in iv.iter_mut().zip(salt) {
        *b ^= s;
    }
    Nonce::assume_unique_for_key(iv)
}

/// The 6 bytes after the SSRC in an SRTP GCM IV: ROC then sequence number.
fn rtp_gcm_tail(index: u64) -> [u8; 6] {
    let b = index.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// The 6 bytes after the SSRC in an SRTCP GCM IV: two zero bytes, then the 31-bit index.
fn rtcp_gcm_tail(index: u32) -> [u8; 6] {
    let b = index.to_be_bytes();
    [0, 0, b[0], b[1], b[2], b[3]]
}

/// HMAC-SHA1 over `data || extra`, the full 20-byte tag. The keyed state is copied on the
/// stack, so nothing is allocated (RustCrypto's SHA-1 uses the CPU's SHA extensions, about
/// 3.5x faster than ring's HMAC-SHA1 on 1200-byte packets).
fn hmac_sha1(key: &Hmac<Sha1>, data: &[u8], extra: &[u8]) -> [u8; 20] {
    let mut mac = key.clone();
    mac.update(data);
    mac.update(extra);
    mac.finalize().into_bytes().into()
}

/// Compares two equally long byte strings in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Length of the RTP header including CSRCs and the header extension, validated against the
/// packet length `len`.
fn rtp_header_len(packet: &[u8]) -> Result<usize, SrtpError> {
    if packet.len() < RTP_HEADER_LEN {
        return Err(SrtpError::TooShort);
    }
    if packet[0] >> 6 != 2 {
        return Err(SrtpError::InvalidHeader);
    }
    let mut len = RTP_HEADER_LEN + 4 * usize::from(packet[0] & 0x0f);
    if packet[0] & 0x10 != 0 {
        if packet.len() < len + 4 {
            return Err(SrtpError::TooShort);
        }
        let words = u16::from_be_bytes([packet[len + 2], packet[len + 3]]);
        len += 4 + 4 * usize::from(words);
    }
    if packet.len() < len {
        return Err(SrtpError::TooShort);
    }
    Ok(len)
}

/// SSRC and sequence number of an RTP header already checked to be at least 12 bytes.
fn rtp_ssrc_seq(packet: &[u8]) -> (u32, u16) {
    let seq = u16::from_be_bytes([packet[2], packet[3]]);
    let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
    (ssrc, seq)
}

/// Validates an RTCP packet's first header and returns its sender SSRC.
fn rtcp_ssrc(packet: &[u8]) -> Result<u32, SrtpError> {
    if packet.len() < RTCP_HEADER_LEN {
        return Err(SrtpError::TooShort);
    }
    if packet[0] >> 6 != 2 {
        return Err(SrtpError::InvalidHeader);
    }
    Ok(u32::from_be_bytes([
        packet[4], packet[5], packet[6], packet[7],
    ]))
}

/// Estimates the 48-bit SRTP index of `seq` from the highest index seen so far
/// (RFC 3711 Appendix A). `None` when the estimate falls before index 0 or past 2^48.
fn estimate_index(highest: Option<u64>, seq: u16) -> Option<u64> {
    let Some(highest) = highest else {
        return Some(u64::from(seq));
    };
    let roc = (highest >> 16) as i64;
    let s_l = highest as u16;
    let v = if s_l < 0x8000 {
        if seq > s_l && seq - s_l > 0x8000 {
            roc - 1
        } else {
            roc
        }
    } else if seq < s_l - 0x8000 {
        roc + 1
    } else {
        roc
    };
    if v < 0 {
        return None;
    }
    let index = ((v as u64) << 16) | u64::from(seq);
    (index <= MAX_SRTP_INDEX).then_some(index)
}

/// Sliding replay window over packet indices, up to [`MAX_REPLAY_WINDOW`] wide.
#[derive(Clone, Copy, Debug)]
struct ReplayWindow {
    /// Highest index accepted.
    top: u64,
    /// Bit `k` set: index `top - k` was accepted.
    seen: [u64; MAX_REPLAY_WINDOW / 64],
}

impl ReplayWindow {
    /// A window whose only accepted index is `index`.
    fn new(index: u64) -> Self {
        let mut seen = [0u64; MAX_REPLAY_WINDOW / 64];
        seen[0] = 1;
        Self { top: index, seen }
    }

    /// Whether `index` may still be accepted with a window of `size` packets.
    fn check(&self, index: u64, size: usize) -> Result<(), SrtpError> {
        if index > self.top {
            return Ok(());
        }
        let delta = self.top - index;
        if delta >= size as u64 || self.bit(delta as usize) {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    /// Marks `index` as received; call only after [`Self::check`] and authentication passed.
    fn accept(&mut self, index: u64) {
        if index > self.top {
            self.shift(index - self.top);
            self.top = index;
            self.seen[0] |= 1;
        } else {
            let delta = (self.top - index) as usize;
            if delta < MAX_REPLAY_WINDOW {
                self.seen[delta / 64] |= 1 << (delta % 64);
            }
        }
    }

    fn bit(&self, k: usize) -> bool {
        k < MAX_REPLAY_WINDOW && self.seen[k / 64] & (1 << (k % 64)) != 0
    }

    /// Moves every bit `n` positions towards older indices.
    fn shift(&mut self, n: u64) {
        if n >= MAX_REPLAY_WINDOW as u64 {
            self.seen = [0; MAX_REPLAY_WINDOW / 64];
            return;
        }
        let words = (n / 64) as usize;
        let bits = (n % 64) as u32;
        for i in (0..self.seen.len()).rev() {
            let value = if i >= words {
                let high = self.seen[i - words] << bits;
                let low = if bits > 0 && i > words {
                    self.seen[i - words - 1] >> (64 - bits)
                } else {
                    0
                };
                high | low
            } else {
                0
            };
            self.seen[i] = value;
        }
    }
}

/// The replay state of one remote SSRC and when it last authenticated a packet.
#[derive(Clone, Copy, Debug)]
struct RemoteStream {
    window: ReplayWindow,
    /// [`RemoteStreams::uses`] at this SSRC's latest accepted packet.
    last_used: u64,
    /// More than one packet was accepted: evicted only after every single-packet SSRC.
    established: bool,
}

/// Replay state per remote SSRC, at most [`MAX_REMOTE_SSRCS`] entries. Looking up and
/// accepting cost a hash lookup and a counter; only adding an SSRC to a full table scans
/// it for the one to evict.
#[derive(Debug, Default)]
struct RemoteStreams {
    streams: HashMap<u32, RemoteStream>,
    /// Packets accepted so far, the clock of `last_used`.
    uses: u64,
}

impl RemoteStreams {
    /// The replay window of `ssrc`, if it has one.
    fn window(&self, ssrc: u32) -> Option<&ReplayWindow> {
        self.streams.get(&ssrc).map(|s| &s.window)
    }

    /// Records an authenticated packet of `ssrc` with `index`, making room for a new SSRC
    /// when the table is full.
    fn accept(&mut self, ssrc: u32, index: u64) {
        self.uses += 1;
        if let Some(stream) = self.streams.get_mut(&ssrc) {
            stream.window.accept(index);
            stream.last_used = self.uses;
            stream.established = true;
            return;
        }
        if self.streams.len() >= MAX_REMOTE_SSRCS {
            self.evict();
        }
        self.streams.insert(
            ssrc,
            RemoteStream {
                window: ReplayWindow::new(index),
                last_used: self.uses,
                established: false,
            },
        );
    }

    /// Forgets the least recently used single-packet SSRC, or else the least recently
    /// used one.
    fn evict(&mut self) {
        let victim = self
            .streams
            .iter()
            .min_by_key(|(_, s)| (s.established, s.last_used))
            .map(|(&ssrc, _)| ssrc);
        if let Some(ssrc) = victim {
            self.streams.remove(&ssrc);
        }
    }

    fn len(&self) -> usize {
        self.streams.len()
    }
}

/// The SRTP index state of one outgoing RTP stream (one SSRC), kept by the stream's owner:
/// [`SrtpSession::protect_rtp_stream`] then needs no lookup by SSRC, which matters when one
/// packet is protected for hundreds of consumers. Every packet of that SSRC must go through
/// the same `SendIndex`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendIndex {
    /// Highest SRTP index (ROC << 16 | SEQ) sent so far.
    highest: Option<u64>,
}

/// Both directions of SRTP/SRTCP for one transport.
pub struct SrtpSession {
    profile: SrtpProfile,
    replay_window: usize,
    local_rtp: Transform,
    local_rtcp: Transform,
    remote_rtp: Transform,
    remote_rtcp: Transform,
    /// Outgoing RTP: highest SRTP index sent, per SSRC, for [`SrtpSession::protect_rtp`].
    /// Outgoing SSRCs are the local side's own choice, and their state is never evicted:
    /// forgetting an index would reuse (SSRC, index) pairs, i.e. keystream and GCM nonces.
    tx_rtp: HashMap<u32, u64>,
    /// Outgoing RTCP: the last SRTCP index used, one counter for every sender SSRC. A
    /// receiver keeps its replay window per SSRC and takes any higher index (gaps are
    /// fine), and an index that never repeats in the session never repeats for an SSRC:
    /// no (SSRC, index) pair, i.e. keystream or GCM nonce, is used twice, with no state per
    /// SSRC (a table per SSRC grew with every consumer a transport ever had).
    tx_rtcp_index: u32,
    /// Incoming RTP: replay window (its top is the highest index, giving ROC and s_l).
    rx_rtp: RemoteStreams,
    /// Incoming RTCP: replay window over SRTCP indices.
    rx_rtcp: RemoteStreams,
}

impl std::fmt::Debug for SrtpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpSession")
            .field("profile", &self.profile)
            .field("replay_window", &self.replay_window)
            .field("tx_rtp_ssrcs", &self.tx_rtp.len())
            .field("tx_rtcp_index", &self.tx_rtcp_index)
            .field("rx_rtp_ssrcs", &self.rx_rtp.len())
            .field("rx_rtcp_ssrcs", &self.rx_rtcp.len())
            .finish_non_exhaustive()
    }
}

impl SrtpSession {
    /// Creates a session from the keys exported by DTLS, with [`DEFAULT_REPLAY_WINDOW`].
    pub fn new(keys: &SrtpKeys) -> Result<Self, SrtpError> {
        Self::with_replay_window(keys, DEFAULT_REPLAY_WINDOW)
    }

    /// A session that protects nothing: RTP and RTCP pass unchanged (replay state is kept,
    /// so a duplicated packet is still dropped). For plain RTP transports without SRTP.
    pub fn unprotected() -> Self {
        Self {
            profile: SrtpProfile::Unprotected,
            replay_window: DEFAULT_REPLAY_WINDOW,
            local_rtp: Transform::Null,
            local_rtcp: Transform::Null,
            remote_rtp: Transform::Null,
            remote_rtcp: Transform::Null,
            tx_rtp: HashMap::new(),
            tx_rtcp_index: 0,
            rx_rtp: RemoteStreams::default(),
            rx_rtcp: RemoteStreams::default(),
        }
    }

    /// Creates a session with a replay window of `replay_window` packets
    /// (`MIN_REPLAY_WINDOW..=MAX_REPLAY_WINDOW`), for both SRTP and SRTCP.
    pub fn with_replay_window(keys: &SrtpKeys, replay_window: usize) -> Result<Self, SrtpError> {
        if !(MIN_REPLAY_WINDOW..=MAX_REPLAY_WINDOW).contains(&replay_window) {
            return Err(SrtpError::BadReplayWindow(replay_window));
        }
        let profile = keys.profile;
        let check = |what: &'static str, got: usize, expected: usize| {
            if got == expected {
                Ok(())
            } else {
                Err(SrtpError::BadKeyLength {
                    what,
                    got,
                    expected,
                })
            }
        };
        check(
            "local master key",
            keys.local_master_key.len(),
            profile.master_key_len(),
        )?;
        check(
            "remote master key",
            keys.remote_master_key.len(),
            profile.master_key_len(),
        )?;
        check(
            "local master salt",
            keys.local_master_salt.len(),
            profile.master_salt_len(),
        )?;
        check(
            "remote master salt",
            keys.remote_master_salt.len(),
            profile.master_salt_len(),
        )?;
        let derive = |key: &[u8], salt: &[u8], rtcp| Transform::derive(profile, key, salt, rtcp);
        Ok(Self {
            profile,
            replay_window,
            local_rtp: derive(&keys.local_master_key, &keys.local_master_salt, false)?,
            local_rtcp: derive(&keys.local_master_key, &keys.local_master_salt, true)?,
            remote_rtp: derive(&keys.remote_master_key, &keys.remote_master_salt, false)?,
            remote_rtcp: derive(&keys.remote_master_key, &keys.remote_master_salt, true)?,
            tx_rtp: HashMap::new(),
            tx_rtcp_index: 0,
            rx_rtp: RemoteStreams::default(),
            rx_rtcp: RemoteStreams::default(),
        })
    }

    /// The negotiated protection profile.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// How many remote SSRCs have SRTP replay state now (at most [`MAX_REMOTE_SSRCS`]).
    pub fn remote_rtp_ssrcs(&self) -> usize {
        self.rx_rtp.len()
    }

    /// How many remote sender SSRCs have SRTCP replay state now (at most
    /// [`MAX_REMOTE_SSRCS`]).
    pub fn remote_rtcp_ssrcs(&self) -> usize {
        self.rx_rtcp.len()
    }

    /// Unprotects an SRTP packet in place; returns the plaintext packet length (header +
    /// payload). Replay-protected per SSRC, ROC tracked per SSRC, for at most
    /// [`MAX_REMOTE_SSRCS`] SSRCs.
    pub fn unprotect_rtp(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        let header_len = rtp_header_len(packet)?;
        let tag_len = self.profile.rtp_overhead();
        if packet.len() < header_len + tag_len {
            return Err(SrtpError::TooShort);
        }
        let (ssrc, seq) = rtp_ssrc_seq(packet);
        let window = self.rx_rtp.window(ssrc);
        let index = estimate_index(window.map(|w| w.top), seq).ok_or(SrtpError::IndexOutOfRange)?;
        if let Some(window) = window {
            window.check(index, self.replay_window)?;
        }
        let roc = (index >> 16) as u32;
        let plain_len = packet.len() - tag_len;
        match &self.remote_rtp {
            Transform::Gcm { key, salt } => {
                let nonce = gcm_nonce(salt, ssrc, rtp_gcm_tail(index));
                let (header, body) = packet.split_at_mut(header_len);
                key.open_in_place(nonce, Aad::from(&*header), body)
                    .map_err(|_| SrtpError::AuthFailed)?;
            }
            Transform::CmHmac { cipher, salt, auth } => {
                let (authenticated, tag) = packet.split_at_mut(plain_len);
                let expected = hmac_sha1(auth, authenticated, &roc.to_be_bytes());
                if !constant_time_eq(&expected.as_ref()[..HMAC_TAG_LEN], tag) {
                    return Err(SrtpError::AuthFailed);
                }
                aes_cm_apply(
                    cipher,
                    aes_cm_iv(salt, ssrc, index),
                    &mut authenticated[header_len..],
                );
            }
            Transform::Null => {}
        }
        self.rx_rtp.accept(ssrc, index);
        Ok(plain_len)
    }

    /// Protects the plaintext RTP packet `buf[..len]` in place; `buf.len()` must be at least
    /// `len + profile.rtp_overhead()`. Returns the protected length. The stream's index
    /// state is looked up by SSRC in the session.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        // The SSRC picks the index state; `protect_rtp_stream` validates the packet.
        let ssrc = match buf.get(..len).and_then(|p| p.get(8..12)) {
            Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
            _ => return Err(SrtpError::TooShort),
        };
        let mut stream = SendIndex {
            highest: self.tx_rtp.get(&ssrc).copied(),
        };
        let n = self.protect_rtp_stream(&mut stream, buf, len)?;
        if let Some(highest) = stream.highest {
            self.tx_rtp.insert(ssrc, highest);
        }
        Ok(n)
    }

    /// Like [`SrtpSession::protect_rtp`], with the index state of the packet's SSRC kept by
    /// the caller in `stream`.
    pub fn protect_rtp_stream(
        &self,
        stream: &mut SendIndex,
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize, SrtpError> {
        let tag_len = self.profile.rtp_overhead();
        if len > buf.len() {
            return Err(SrtpError::TooShort);
        }
        if buf.len() < len + tag_len {
            return Err(SrtpError::BufferTooSmall);
        }
        let header_len = rtp_header_len(&buf[..len])?;
        let (ssrc, seq) = rtp_ssrc_seq(buf);
        let index = estimate_index(stream.highest, seq).ok_or(SrtpError::IndexOutOfRange)?;
        let roc = (index >> 16) as u32;
        match &self.local_rtp {
            Transform::Gcm { key, salt } => {
                let nonce = gcm_nonce(salt, ssrc, rtp_gcm_tail(index));
                let (header, body) = buf.split_at_mut(header_len);
                let payload_len = len - header_len;
                let tag = key
                    .seal_in_place_separate_tag(
                        nonce,
                        Aad::from(&*header),
                        &mut body[..payload_len],
                    )
                    .map_err(|_| SrtpError::BufferTooSmall)?;
                body[payload_len..payload_len + GCM_TAG_LEN].copy_from_slice(tag.as_ref());
            }
            Transform::CmHmac { cipher, salt, auth } => {
                aes_cm_apply(
                    cipher,
                    aes_cm_iv(salt, ssrc, index),
                    &mut buf[header_len..len],
                );
                let tag = hmac_sha1(auth, &buf[..len], &roc.to_be_bytes());
                buf[len..len + HMAC_TAG_LEN].copy_from_slice(&tag.as_ref()[..HMAC_TAG_LEN]);
            }
            Transform::Null => {}
        }
        stream.highest = Some(stream.highest.map_or(index, |h| h.max(index)));
        Ok(len + tag_len)
    }

    /// Unprotects an SRTCP packet in place; returns the plaintext RTCP length. Only
    /// encrypted SRTCP (E flag set) is accepted. Replay-protected per sender SSRC, for at
    /// most [`MAX_REMOTE_SSRCS`] SSRCs.
    pub fn unprotect_rtcp(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        if self.profile == SrtpProfile::Unprotected {
            rtcp_ssrc(packet)?;
            return Ok(packet.len());
        }
        let overhead = self.profile.rtcp_overhead();
        if packet.len() < RTCP_HEADER_LEN + overhead {
            return Err(SrtpError::TooShort);
        }
        let ssrc = rtcp_ssrc(packet)?;
        let plain_len = packet.len() - overhead;
        let word_at = match self.profile {
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => {
                packet.len() - SRTCP_INDEX_LEN
            }
            SrtpProfile::Aes128CmHmacSha1_80 | SrtpProfile::Unprotected => plain_len,
        };
        let mut word = [0u8; SRTCP_INDEX_LEN];
        word.copy_from_slice(&packet[word_at..word_at + SRTCP_INDEX_LEN]);
        let word_value = u32::from_be_bytes(word);
        if word_value & SRTCP_E_FLAG == 0 {
            return Err(SrtpError::UnencryptedSrtcp);
        }
        let index = word_value & MAX_SRTCP_INDEX;
        if let Some(window) = self.rx_rtcp.window(ssrc) {
            window.check(u64::from(index), self.replay_window)?;
        }
        match &self.remote_rtcp {
            Transform::Gcm { key, salt } => {
                let nonce = gcm_nonce(salt, ssrc, rtcp_gcm_tail(index));
                let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN];
                aad[..RTCP_HEADER_LEN].copy_from_slice(&packet[..RTCP_HEADER_LEN]);
                aad[RTCP_HEADER_LEN..].copy_from_slice(&word);
                key.open_in_place(
                    nonce,
                    Aad::from(&aad),
                    &mut packet[RTCP_HEADER_LEN..word_at],
                )
                .map_err(|_| SrtpError::AuthFailed)?;
            }
            Transform::CmHmac { cipher, salt, auth } => {
                let tag_at = plain_len + SRTCP_INDEX_LEN;
                let (authenticated, tag) = packet.split_at_mut(tag_at);
                let expected = hmac_sha1(auth, authenticated, &[]);
                if !constant_time_eq(&expected.as_ref()[..HMAC_TAG_LEN], tag) {
                    return Err(SrtpError::AuthFailed);
                }
                aes_cm_apply(
                    cipher,
                    aes_cm_iv(salt, ssrc, u64::from(index)),
                    &mut authenticated[RTCP_HEADER_LEN..plain_len],
                );
            }
            Transform::Null => {}
        }
        self.rx_rtcp.accept(ssrc, u64::from(index));
        Ok(plain_len)
    }

    /// Protects the plaintext RTCP (compound) packet `buf[..len]` in place with the E flag
    /// set; `buf.len()` must be at least `len + profile.rtcp_overhead()`. Returns the
    /// protected length. The SRTCP index is one counter for the whole session (2^31 - 1
    /// packets, then [`SrtpError::IndexOutOfRange`]), whatever the sender SSRC.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let overhead = self.profile.rtcp_overhead();
        if len > buf.len() {
            return Err(SrtpError::TooShort);
        }
        if self.profile == SrtpProfile::Unprotected {
            rtcp_ssrc(&buf[..len])?;
            return Ok(len);
        }
        if buf.len() < len + overhead {
            return Err(SrtpError::BufferTooSmall);
        }
        let ssrc = rtcp_ssrc(&buf[..len])?;
        if self.tx_rtcp_index >= MAX_SRTCP_INDEX {
            return Err(SrtpError::IndexOutOfRange);
        }
        let index = self.tx_rtcp_index + 1;
        let word = (index | SRTCP_E_FLAG).to_be_bytes();
        match &self.local_rtcp {
            Transform::Gcm { key, salt } => {
                let nonce = gcm_nonce(salt, ssrc, rtcp_gcm_tail(index));
                let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN];
                aad[..RTCP_HEADER_LEN].copy_from_slice(&buf[..RTCP_HEADER_LEN]);
                aad[RTCP_HEADER_LEN..].copy_from_slice(&word);
                let tag = key
                    .seal_in_place_separate_tag(
                        nonce,
                        Aad::from(&aad),
                        &mut buf[RTCP_HEADER_LEN..len],
                    )
                    .map_err(|_| SrtpError::BufferTooSmall)?;
                buf[len..len + GCM_TAG_LEN].copy_from_slice(tag.as_ref());
                buf[len + GCM_TAG_LEN..len + overhead].copy_from_slice(&word);
            }
            Transform::CmHmac { cipher, salt, auth } => {
                aes_cm_apply(
                    cipher,
                    aes_cm_iv(salt, ssrc, u64::from(index)),
                    &mut buf[RTCP_HEADER_LEN..len],
                );
                buf[len..len + SRTCP_INDEX_LEN].copy_from_slice(&word);
                let tag = hmac_sha1(auth, &buf[..len + SRTCP_INDEX_LEN], &[]);
                buf[len + SRTCP_INDEX_LEN..len + overhead]
                    .copy_from_slice(&tag.as_ref()[..HMAC_TAG_LEN]);
            }
            Transform::Null => {}
        }
        self.tx_rtcp_index = index;
        Ok(len + overhead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_srtp::context::Context;
    use rtc_srtp::protection_profile::ProtectionProfile;

    const PROFILES: [SrtpProfile; 3] = [
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::Aes128CmHmacSha1_80,
        SrtpProfile::AeadAes256Gcm,
    ];

    fn keys(profile: SrtpProfile) -> SrtpKeys {
        let salt_len = profile.master_salt_len();
        SrtpKeys {
            profile,
            local_master_key: (1..=profile.master_key_len() as u8).collect(),
            local_master_salt: (100..100 + salt_len as u8).collect(),
            remote_master_key: (51..51 + profile.master_key_len() as u8).collect(),
            remote_master_salt: (200..200 + salt_len as u8).collect(),
        }
    }

    /// The same keys seen from the other end of the transport.
    fn mirrored(keys: &SrtpKeys) -> SrtpKeys {
        SrtpKeys {
            profile: keys.profile,
            local_master_key: keys.remote_master_key.clone(),
            local_master_salt: keys.remote_master_salt.clone(),
            remote_master_key: keys.local_master_key.clone(),
            remote_master_salt: keys.local_master_salt.clone(),
        }
    }

    fn their_profile(profile: SrtpProfile) -> ProtectionProfile {
        match profile {
            SrtpProfile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
            SrtpProfile::Aes128CmHmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            SrtpProfile::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
            SrtpProfile::Unprotected => unreachable!("no protection to compare"),
        }
    }

    #[test]
    fn unprotected_session_passes_packets_unchanged() {
        let mut session = SrtpSession::unprotected();
        let mut rtp = vec![0x80, 96, 0, 7, 0, 0, 0, 9, 0, 0, 0, 42, 1, 2, 3];
        let original = rtp.clone();
        let len = rtp.len();
        assert_eq!(session.protect_rtp(&mut rtp, len), Ok(len));
        assert_eq!(rtp, original);
        assert_eq!(session.unprotect_rtp(&mut rtp), Ok(len));
        assert_eq!(rtp, original);
        // The same packet again is a replay.
        assert_eq!(session.unprotect_rtp(&mut rtp), Err(SrtpError::Replayed));
        let mut rr = vec![0x80, 201, 0, 1, 0, 0, 0, 5];
        assert_eq!(session.protect_rtcp(&mut rr, 8), Ok(8));
        assert_eq!(session.unprotect_rtcp(&mut rr), Ok(8));
        assert_eq!(rr, vec![0x80, 201, 0, 1, 0, 0, 0, 5]);
    }

    fn their_context(profile: SrtpProfile, key: &[u8], salt: &[u8]) -> Context {
        let provider =
            rtc_dtls::crypto_provider::default_provider().expect("ring provider is built in");
        Context::new(
            key,
            salt,
            their_profile(profile),
            None,
            None,
            provider.crypto(),
        )
        .expect("valid test keys")
    }

    /// An RTP packet; `ext` adds a one-byte header extension, `csrcs` CSRC entries.
    fn rtp(seq: u16, ssrc: u32, ext: bool, csrcs: u8, payload_len: usize) -> Vec<u8> {
        let mut p = vec![0x80 | csrcs, 96];
        if ext {
            p[0] |= 0x10;
        }
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        for c in 0..csrcs {
            p.extend_from_slice(&(0x1000 + u32::from(c)).to_be_bytes());
        }
        if ext {
            p.extend_from_slice(&[
                0xBE, 0xDE, 0x00, 0x02, 0x10, 0xAA, 0x21, 0xBB, 0xCC, 0, 0, 0,
            ]);
        }
        p.extend((0..payload_len).map(|i| (i as u8).wrapping_mul(7) ^ seq as u8));
        p
    }

    /// A receiver report with one report block, from `ssrc`.
    fn rtcp_rr(ssrc: u32, fill: u8) -> Vec<u8> {
        let mut p = vec![0x81, 201, 0, 7];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend((0..24).map(|i| fill.wrapping_add(i)));
        p
    }

    fn protect_rtp(session: &mut SrtpSession, plain: &[u8]) -> Vec<u8> {
        let mut buf = plain.to_vec();
        buf.resize(plain.len() + session.profile().rtp_overhead(), 0);
        let len = session.protect_rtp(&mut buf, plain.len()).expect("protect");
        assert_eq!(len, buf.len());
        buf
    }

    fn protect_rtcp(session: &mut SrtpSession, plain: &[u8]) -> Vec<u8> {
        let mut buf = plain.to_vec();
        buf.resize(plain.len() + session.profile().rtcp_overhead(), 0);
        let len = session
            .protect_rtcp(&mut buf, plain.len())
            .expect("protect");
        assert_eq!(len, buf.len());
        buf
    }

    #[test]
    fn key_derivation_matches_rfc3711_test_vectors() {
        // RFC 3711 Appendix B.3.
        let master_key = hex::decode("E1F97A0D3E018BE0D64FA32C06DE4139").expect("hex");
        let master_salt = hex::decode("0EC675AD498AFEEBB6960B3AABE6").expect("hex");
        let prf = Aes128::new(master_key.as_slice().into());
        let mut key = [0u8; 16];
        kdf(&prf, &master_salt, LABEL_SRTP_ENCRYPTION, &mut key);
        assert_eq!(hex::encode_upper(key), "C61E7A93744F39EE10734AFE3FF7A087");
        let mut salt = [0u8; 14];
        kdf(&prf, &master_salt, LABEL_SRTP_SALT, &mut salt);
        assert_eq!(hex::encode_upper(salt), "30CBBC08863D8C85D49DB34A9AE1");
        let mut auth = [0u8; 20];
        kdf(&prf, &master_salt, LABEL_SRTP_AUTH, &mut auth);
        assert_eq!(
            hex::encode_upper(auth),
            "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"
        );
    }

    #[test]
    fn stream_index_kept_by_the_caller_protects_like_the_session_map() {
        for profile in PROFILES {
            let k = keys(profile);
            let mut by_map = SrtpSession::new(&k).expect("session");
            let by_stream = SrtpSession::new(&k).expect("session");
            let mut index = SendIndex::default();
            // Across a sequence number rollover, with a reordered packet.
            for seq in (65_530u16..=65_535).chain(0..4).chain([65_534, 4]) {
                let plain = rtp(seq, 0x1234, true, 0, 90);
                let expected = protect_rtp(&mut by_map, &plain);
                let mut buf = plain.clone();
                buf.resize(plain.len() + profile.rtp_overhead(), 0);
                let n = by_stream
                    .protect_rtp_stream(&mut index, &mut buf, plain.len())
                    .expect("protect");
                assert_eq!(&buf[..n], &expected[..], "{profile:?} seq {seq}");
            }
            assert_eq!(index.highest, Some((1 << 16) + 4));
        }
    }

    #[test]
    fn rtp_cross_checks_with_rtc_srtp_across_rollover() {
        for profile in PROFILES {
            for (ext, csrcs) in [(false, 0), (true, 0), (true, 2), (false, 3)] {
                let k = keys(profile);
                let mut ours = SrtpSession::new(&k).expect("session");
                let mut their_tx =
                    their_context(profile, &k.remote_master_key, &k.remote_master_salt);
                let mut their_rx =
                    their_context(profile, &k.local_master_key, &k.local_master_salt);
                let ssrc = 0x1234_5678;
                for i in 0..40u16 {
                    let seq = 65_520u16.wrapping_add(i);
                    let plain = rtp(seq, ssrc, ext, csrcs, 50 + usize::from(i));

                    // Theirs → ours.
                    let mut packet = their_tx
                        .encrypt_rtp(&plain)
                        .expect("their encrypt")
                        .to_vec();
                    assert_eq!(packet.len(), plain.len() + profile.rtp_overhead());
                    let len = ours.unprotect_rtp(&mut packet).expect("our unprotect");
                    assert_eq!(
                        &packet[..len],
                        &plain[..],
                        "{profile:?} ext={ext} seq={seq}"
                    );

                    // Ours → theirs.
                    let protected = protect_rtp(&mut ours, &plain);
                    let decrypted = their_rx.decrypt_rtp(&protected).expect("their decrypt");
                    assert_eq!(
                        &decrypted[..],
                        &plain[..],
                        "{profile:?} ext={ext} seq={seq}"
                    );
                }
                // 65520 + 40 wrapped once: the rollover counter is 1 in both directions.
                assert_eq!(ours.rx_rtp.streams[&ssrc].window.top >> 16, 1);
                assert_eq!(ours.tx_rtp[&ssrc] >> 16, 1);
            }
        }
    }

    #[test]
    fn rtcp_cross_checks_with_rtc_srtp() {
        for profile in PROFILES {
            let k = keys(profile);
            let mut ours = SrtpSession::new(&k).expect("session");
            let mut their_tx = their_context(profile, &k.remote_master_key, &k.remote_master_salt);
            let mut their_rx = their_context(profile, &k.local_master_key, &k.local_master_salt);
            for i in 0..10u8 {
                let mut plain = rtcp_rr(0xCAFE_0000 + u32::from(i % 3), i);
                // Make some of them compound: append a PLI.
                if i % 2 == 0 {
                    plain.extend_from_slice(&[0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]);
                }

                let mut packet = their_tx
                    .encrypt_rtcp(&plain)
                    .expect("their encrypt")
                    .to_vec();
                assert_eq!(packet.len(), plain.len() + profile.rtcp_overhead());
                let len = ours.unprotect_rtcp(&mut packet).expect("our unprotect");
                assert_eq!(&packet[..len], &plain[..], "{profile:?} #{i}");

                let protected = protect_rtcp(&mut ours, &plain);
                let decrypted = their_rx.decrypt_rtcp(&protected).expect("their decrypt");
                assert_eq!(&decrypted[..], &plain[..], "{profile:?} #{i}");
            }
        }
    }

    #[test]
    fn srtcp_index_never_repeats_whatever_the_ssrc() {
        for profile in PROFILES {
            let k = keys(profile);
            let mut tx = SrtpSession::new(&k).expect("session");
            let mut rx = SrtpSession::new(&mirrored(&k)).expect("session");
            // Many senders come and go (consumers on a subscriber transport), one of them
            // again after others: each packet gets the next index of the session.
            let ssrcs = (0..2_000u32).map(|i| 0x1000 + i).chain([0x1000, 0x1001]);
            for (n, ssrc) in ssrcs.enumerate() {
                let protected = protect_rtcp(&mut tx, &rtcp_rr(ssrc, 0));
                let word_at = match profile {
                    SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => {
                        protected.len() - SRTCP_INDEX_LEN
                    }
                    SrtpProfile::Aes128CmHmacSha1_80 => protected.len() - profile.rtcp_overhead(),
                    SrtpProfile::Unprotected => unreachable!("not among PROFILES"),
                };
                let word = u32::from_be_bytes(
                    protected[word_at..word_at + SRTCP_INDEX_LEN]
                        .try_into()
                        .expect("4 bytes"),
                );
                assert_eq!(word & MAX_SRTCP_INDEX, n as u32 + 1, "{profile:?} #{n}");
                // The receiver's per-SSRC replay window takes the gaps.
                rx.unprotect_rtcp(&mut protected.clone())
                    .expect("unprotect");
            }
            assert_eq!(tx.tx_rtcp_index, 2_002);
        }
    }

    #[test]
    fn in_place_round_trip_between_two_sessions() {
        for profile in PROFILES {
            let k = keys(profile);
            let mut a = SrtpSession::new(&k).expect("session");
            let mut b = SrtpSession::new(&mirrored(&k)).expect("session");
            assert_eq!(a.profile(), profile);

            let plain = rtp(7, 42, true, 1, 300);
            let mut buf = [0u8; 1500];
            buf[..plain.len()].copy_from_slice(&plain);
            let len = a.protect_rtp(&mut buf, plain.len()).expect("protect");
            assert_eq!(len, plain.len() + profile.rtp_overhead());
            // Header stays in clear, payload does not.
            let header_len = rtp_header_len(&plain).expect("valid header");
            assert_eq!(&buf[..header_len], &plain[..header_len]);
            assert_ne!(&buf[header_len..plain.len()], &plain[header_len..]);
            let len = b.unprotect_rtp(&mut buf[..len]).expect("unprotect");
            assert_eq!(&buf[..len], &plain[..]);

            let plain = rtcp_rr(42, 9);
            let mut buf = [0u8; 1500];
            buf[..plain.len()].copy_from_slice(&plain);
            let len = b.protect_rtcp(&mut buf, plain.len()).expect("protect");
            assert_eq!(len, plain.len() + profile.rtcp_overhead());
            assert_ne!(&buf[8..plain.len()], &plain[8..]);
            let len = a.unprotect_rtcp(&mut buf[..len]).expect("unprotect");
            assert_eq!(&buf[..len], &plain[..]);
        }
    }

    #[test]
    fn replayed_and_too_old_packets_are_rejected() {
        for profile in PROFILES {
            let k = keys(profile);
            let mut tx = SrtpSession::new(&k).expect("session");
            let mut rx = SrtpSession::with_replay_window(&mirrored(&k), 64).expect("session");

            let first = protect_rtp(&mut tx, &rtp(1000, 5, false, 0, 20));
            let old = protect_rtp(&mut tx, &rtp(900, 5, false, 0, 20));
            let in_window = protect_rtp(&mut tx, &rtp(990, 5, false, 0, 20));

            rx.unprotect_rtp(&mut first.clone()).expect("first");
            assert_eq!(
                rx.unprotect_rtp(&mut first.clone()),
                Err(SrtpError::Replayed)
            );
            assert_eq!(rx.unprotect_rtp(&mut old.clone()), Err(SrtpError::Replayed));
            rx.unprotect_rtp(&mut in_window.clone())
                .expect("late but in window");
            assert_eq!(
                rx.unprotect_rtp(&mut in_window.clone()),
                Err(SrtpError::Replayed)
            );

            let rtcp = protect_rtcp(&mut tx, &rtcp_rr(5, 0));
            rx.unprotect_rtcp(&mut rtcp.clone()).expect("first rtcp");
            assert_eq!(
                rx.unprotect_rtcp(&mut rtcp.clone()),
                Err(SrtpError::Replayed)
            );
        }
    }

    #[test]
    fn remote_ssrcs_are_bounded_and_single_packet_ssrcs_go_first() {
        for profile in PROFILES {
            let k = keys(profile);
            let mut tx = SrtpSession::new(&k).expect("session");
            let mut rx = SrtpSession::new(&mirrored(&k)).expect("session");
            // A stream (two packets each of RTP and RTCP), then a fresh SSRC per packet.
            let stream = 0x5757;
            let first_rtp = protect_rtp(&mut tx, &rtp(1, stream, false, 0, 20));
            let first_rtcp = protect_rtcp(&mut tx, &rtcp_rr(stream, 0));
            for packet in [
                first_rtp.clone(),
                protect_rtp(&mut tx, &rtp(2, stream, false, 0, 20)),
            ] {
                rx.unprotect_rtp(&mut packet.clone()).expect("stream rtp");
            }
            for packet in [
                first_rtcp.clone(),
                protect_rtcp(&mut tx, &rtcp_rr(stream, 1)),
            ] {
                rx.unprotect_rtcp(&mut packet.clone()).expect("stream rtcp");
            }
            let churn = 0x1000_0000..0x1000_0000 + 4 * MAX_REMOTE_SSRCS as u32;
            for ssrc in churn.clone() {
                let mut packet = protect_rtp(&mut tx, &rtp(7, ssrc, false, 0, 20));
                rx.unprotect_rtp(&mut packet).expect("churn rtp");
                let mut packet = protect_rtcp(&mut tx, &rtcp_rr(ssrc, 0));
                rx.unprotect_rtcp(&mut packet).expect("churn rtcp");
                assert!(rx.remote_rtp_ssrcs() <= MAX_REMOTE_SSRCS);
                assert!(rx.remote_rtcp_ssrcs() <= MAX_REMOTE_SSRCS);
            }
            assert_eq!(rx.remote_rtp_ssrcs(), MAX_REMOTE_SSRCS, "{profile:?}");
            assert_eq!(rx.remote_rtcp_ssrcs(), MAX_REMOTE_SSRCS, "{profile:?}");
            // The stream kept its state: its first packets are still replays.
            assert_eq!(
                rx.unprotect_rtp(&mut first_rtp.clone()),
                Err(SrtpError::Replayed)
            );
            assert_eq!(
                rx.unprotect_rtcp(&mut first_rtcp.clone()),
                Err(SrtpError::Replayed)
            );
            // The newest single-packet SSRCs are kept, the oldest went.
            let last = churn.end - 1;
            assert!(rx.rx_rtp.window(last).is_some());
            assert!(rx.rx_rtcp.window(last).is_some());
            assert!(rx.rx_rtp.window(churn.start).is_none());
            assert!(rx.rx_rtcp.window(churn.start).is_none());
        }
    }

    #[test]
    fn among_streams_the_least_recently_used_goes_first() {
        let k = keys(SrtpProfile::AeadAes128Gcm);
        let mut tx = SrtpSession::new(&k).expect("session");
        let mut rx = SrtpSession::new(&mirrored(&k)).expect("session");
        let mut send = |rx: &mut SrtpSession, ssrc: u32, seq: u16| {
            let mut packet = protect_rtp(&mut tx, &rtp(seq, ssrc, false, 0, 20));
            rx.unprotect_rtp(&mut packet).expect("unprotect");
        };
        // A full table of streams, two packets each; the first one sends again.
        let streams = 1..=MAX_REMOTE_SSRCS as u32;
        for ssrc in streams.clone() {
            send(&mut rx, ssrc, 1);
            send(&mut rx, ssrc, 2);
        }
        send(&mut rx, 1, 3);
        // A new stream takes the place of the least recently used one: 2.
        send(&mut rx, 0xABCD, 1);
        assert_eq!(rx.remote_rtp_ssrcs(), MAX_REMOTE_SSRCS);
        assert!(rx.rx_rtp.window(2).is_none());
        for kept in [1, 3, MAX_REMOTE_SSRCS as u32, 0xABCD] {
            assert!(rx.rx_rtp.window(kept).is_some(), "{kept}");
        }
        // Its second packet evicts nothing more; the next new one takes 3's place.
        send(&mut rx, 0xABCD, 2);
        send(&mut rx, 0xABCE, 1);
        assert!(rx.rx_rtp.window(3).is_none());
        assert!(rx.rx_rtp.window(0xABCD).is_some());
        assert_eq!(rx.remote_rtp_ssrcs(), MAX_REMOTE_SSRCS);
    }

    #[test]
    fn tampered_packets_are_rejected_without_touching_state() {
        for profile in PROFILES {
            let k = keys(profile);
            let mut tx = SrtpSession::new(&k).expect("session");
            let mut rx = SrtpSession::new(&mirrored(&k)).expect("session");
            let protected = protect_rtp(&mut tx, &rtp(10, 77, true, 0, 64));
            let header_len = rtp_header_len(&protected).expect("header");
            // Header (authenticated), payload, and tag.
            for at in [1, header_len - 1, header_len + 3, protected.len() - 1] {
                let mut bad = protected.clone();
                bad[at] ^= 0x01;
                assert_eq!(
                    rx.unprotect_rtp(&mut bad),
                    Err(SrtpError::AuthFailed),
                    "{at}"
                );
            }
            assert_eq!(
                rx.remote_rtp_ssrcs(),
                0,
                "no state for unauthenticated packets"
            );
            rx.unprotect_rtp(&mut protected.clone())
                .expect("the genuine packet still passes");

            let protected = protect_rtcp(&mut tx, &rtcp_rr(77, 1));
            for at in [2, 12, protected.len() - 1] {
                let mut bad = protected.clone();
                bad[at] ^= 0x80;
                assert_eq!(
                    rx.unprotect_rtcp(&mut bad),
                    Err(SrtpError::AuthFailed),
                    "{at}"
                );
            }
            rx.unprotect_rtcp(&mut protected.clone())
                .expect("the genuine packet still passes");
        }
    }

    #[test]
    fn short_and_malformed_input_is_rejected() {
        for profile in PROFILES {
            let k = keys(profile);
            let mut s = SrtpSession::new(&k).expect("session");
            assert_eq!(s.unprotect_rtp(&mut []), Err(SrtpError::TooShort));
            assert_eq!(s.unprotect_rtp(&mut [0x80; 11]), Err(SrtpError::TooShort));
            // A valid header but no room for the tag.
            let mut no_tag = rtp(1, 1, false, 0, profile.rtp_overhead() - 1);
            assert_eq!(s.unprotect_rtp(&mut no_tag), Err(SrtpError::TooShort));
            // Extension length pointing past the end.
            let mut long_ext = rtp(1, 1, true, 0, 0);
            long_ext[15] = 200;
            assert_eq!(s.unprotect_rtp(&mut long_ext), Err(SrtpError::TooShort));
            // CSRC count larger than the packet.
            let mut csrcs = rtp(1, 1, false, 0, 0);
            csrcs[0] |= 0x0f;
            assert_eq!(s.unprotect_rtp(&mut csrcs), Err(SrtpError::TooShort));
            let mut version = rtp(1, 1, false, 0, 40);
            version[0] = 0x40;
            assert_eq!(s.unprotect_rtp(&mut version), Err(SrtpError::InvalidHeader));

            assert_eq!(s.unprotect_rtcp(&mut [0x81; 7]), Err(SrtpError::TooShort));
            let mut short_rtcp = vec![0x81; 8 + profile.rtcp_overhead() - 1];
            assert_eq!(s.unprotect_rtcp(&mut short_rtcp), Err(SrtpError::TooShort));
            // E flag clear.
            let mut clear = rtcp_rr(1, 0);
            clear.resize(clear.len() + profile.rtcp_overhead(), 0);
            assert_eq!(
                s.unprotect_rtcp(&mut clear),
                Err(SrtpError::UnencryptedSrtcp)
            );

            // Protect needs room for the tag and a sane length.
            let plain = rtp(1, 1, false, 0, 10);
            let mut buf = plain.clone();
            assert_eq!(
                s.protect_rtp(&mut buf, plain.len()),
                Err(SrtpError::BufferTooSmall)
            );
            assert_eq!(
                s.protect_rtp(&mut buf, plain.len() + 1),
                Err(SrtpError::TooShort)
            );
            let plain = rtcp_rr(1, 0);
            let mut buf = plain.clone();
            assert_eq!(
                s.protect_rtcp(&mut buf, plain.len()),
                Err(SrtpError::BufferTooSmall)
            );
        }
    }

    #[test]
    fn bad_keys_and_window_are_refused() {
        let mut k = keys(SrtpProfile::AeadAes128Gcm);
        k.remote_master_salt.push(0);
        assert!(matches!(
            SrtpSession::new(&k),
            Err(SrtpError::BadKeyLength { .. })
        ));
        let k = keys(SrtpProfile::Aes128CmHmacSha1_80);
        assert_eq!(
            SrtpSession::with_replay_window(&k, 2048).map(|_| ()),
            Err(SrtpError::BadReplayWindow(2048))
        );
    }

    #[test]
    fn index_estimation_follows_rfc3711_appendix_a() {
        assert_eq!(estimate_index(None, 65_000), Some(65_000));
        // Forward across the wrap.
        assert_eq!(estimate_index(Some(65_530), 3), Some(65_536 + 3));
        // A late packet from before the wrap.
        assert_eq!(estimate_index(Some(65_536 + 3), 65_530), Some(65_530));
        // Before index 0 is not representable.
        assert_eq!(estimate_index(Some(3), 65_530), None);
        assert_eq!(estimate_index(Some(MAX_SRTP_INDEX), 2), None);
    }

    #[test]
    fn replay_window_tracks_out_of_order_indices() {
        let mut w = ReplayWindow::new(100);
        for index in [103, 101, 170, 300] {
            w.check(index, 1024).expect("new index");
            w.accept(index);
        }
        for seen in [100, 101, 103, 170, 300] {
            assert_eq!(w.check(seen, 1024), Err(SrtpError::Replayed), "{seen}");
        }
        for unseen in [102, 104, 169, 299] {
            assert_eq!(w.check(unseen, 1024), Ok(()), "{unseen}");
        }
        // 300 - 102 = 198 is outside a 128 window.
        assert_eq!(w.check(102, 128), Err(SrtpError::Replayed));
        w.accept(300 + 2000);
        assert_eq!(w.check(300, 1024), Err(SrtpError::Replayed));
        assert_eq!(w.check(2299, 1024), Ok(()));
    }
}
