//! Sans-IO WebRTC building blocks for the ferrosoup SFU.
//!
//! Nothing in this crate opens a socket, spawns a task or reads a clock: packets and the
//! current time go in through `handle_*` calls, packets to send and events come out of
//! `poll_*` calls. The worker event loop in `ferrosoup-room` owns the sockets and drives
//! these state machines; unit tests drive them with a manual clock.
//!
//! - [`demux`]: RFC 7983 first-byte classification of a datagram (STUN / DTLS / RTP / RTCP).
//! - [`ice`]: ICE-lite server side of one transport (binding requests, nomination,
//!   consent freshness, restart).
//! - [`dtls`]: DTLS session with certificate fingerprint verification and SRTP key export.
//! - [`srtp`]: in-place SRTP/SRTCP protect and unprotect (AEAD_AES_128_GCM, AES_CM_128_HMAC_SHA1_80).
//! - [`rtp`]: zero-copy RTP header view and in-place rewriting, header extensions.
//! - [`seq`]: sequence number / timestamp widening and rewriting.
//! - [`rtx`]: per-stream retransmission buffer.
//! - [`nack`]: receive-side loss tracking and NACK generation.
//! - [`rtcp`]: RTCP compound parsing and building (SR, RR, NACK, PLI, FIR, REMB).
//! - [`sctp`]: SCTP association over DTLS for data channels (negotiated streams, PPIDs,
//!   partial reliability, stream reset).
//! - [`twcc`]: transport-wide congestion control feedback from packet arrivals.
//! - [`vp8`]: VP8 payload descriptor: temporal layer indices, PictureID / TL0PICIDX
//!   continuity across simulcast switches and dropped temporal layers.
//! - [`vp9`]: VP9 payload descriptor: spatial and temporal layer indices of SVC streams.
//! - [`framing`]: RFC 4571 framing of packets on an ICE-TCP stream.

pub mod demux;
pub mod dtls;
pub mod framing;
pub mod ice;
pub mod nack;
pub mod rtcp;
pub mod rtp;
pub mod rtx;
pub mod sctp;
pub mod seq;
pub mod srtp;
pub mod twcc;
pub mod vp8;
pub mod vp9;
