//! Packet builders for tests, benches, fuzzers and the load tester: what a browser puts on
//! the wire, built without a browser.
//!
//! - [`stun`]: ICE Binding requests as a controlling browser sends them to an ICE-lite
//!   server, and the check of the server's answer.
//! - [`rtp`]: RTP packets with RFC 8285 header extensions (mid, rid, transport-wide-cc,
//!   abs-send-time, audio level), built into a `Vec` or written into a caller's buffer
//!   without allocating.
//! - [`payload`]: VP8 payloads whose key frame bit the SFU's keyframe detection reads, and
//!   Opus-sized audio payloads.
//! - [`rtcp`]: receiver and sender reports, NACK, PLI, FIR and REMB as `Vec`s, over the
//!   writers of `ferrosoup_rtc::rtcp`.

pub mod payload;
pub mod rtcp;
pub mod rtp;
pub mod stun;

pub use payload::{Vp8Header, Vp9Header, Vp9LayerIndices, opus_payload, vp8_payload};
pub use rtcp::{fir, nack, pli, receiver_report, remb, report_block, sender_report};
pub use rtp::RtpPacket;
pub use stun::{
    BindingRequest, BindingSuccess, StunResponseError, check_binding_response,
    stun_binding_request, stun_transaction_id, verify_binding_response,
};
