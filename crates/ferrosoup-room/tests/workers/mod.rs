//! Shared setup of the tests on real worker threads (loopback UDP): a worker pool on a
//! port range of its own, plain transport options, and a plain VP8 publisher's RTP
//! parameters.

#![allow(dead_code)] // each test binary uses a different subset

use ferrosoup_proto::rtp_parameters::RtpParameters;
use ferrosoup_room::plain::PlainOptions;
use ferrosoup_room::{MediaEvent, WorkerPool, WorkerSettings};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

/// `workers` workers on loopback, their ports from a range of 20 that starts at
/// `first_port` plus a per-process offset (test binaries running at once stay apart).
pub fn start_pool(workers: usize, first_port: u16) -> (WorkerPool, UnboundedReceiver<MediaEvent>) {
    let base = first_port + (std::process::id() % 100) as u16 * 20;
    let settings = WorkerSettings {
        num_workers: workers,
        listen_ip: [127, 0, 0, 1].into(),
        rtc_min_port: base,
        rtc_max_port: base + 19,
        ..WorkerSettings::default()
    };
    WorkerPool::start(&settings).expect("worker pool")
}

/// A plain transport without SRTP, RTP and RTCP on one port; `comedia`: its remote is
/// the first sender.
pub fn plain(comedia: bool) -> PlainOptions {
    PlainOptions {
        comedia,
        rtcp_mux: true,
        srtp: None,
    }
}

/// The RTP parameters of a plain VP8 publisher (payload type 96, NACK and PLI, no RTX)
/// with one encoding per SSRC, lowest layer first.
pub fn vp8_parameters(ssrcs: &[u32], cname: &str) -> RtpParameters {
    let encodings: Vec<_> = ssrcs.iter().map(|s| json!({"ssrc": s})).collect();
    serde_json::from_value(json!({
        "codecs": [{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000,
                    "parameters": {},
                    "rtcpFeedback": [{"type": "nack"}, {"type": "nack", "parameter": "pli"}]}],
        "headerExtensions": [],
        "encodings": encodings,
        "rtcp": {"cname": cname}
    }))
    .expect("rtp parameters")
}
