//! `ferrosoup-loadtest`: a load generator for the ferrosoup SFU.
//!
//! It joins rooms × publishers × subscribers over the WebSocket protocol and moves
//! synthetic media (Opus-sized audio, VP8 with real key frame structure, optional
//! simulcast) through real ICE, DTLS and SRTP, built from the sans-IO pieces of
//! `ferrosoup-rtc`. There is no PeerConnection per peer: signaling runs as tasks on one
//! single-threaded tokio runtime, and all media runs on one thread that owns every
//! transport's UDP socket ([`media`]). Every payload carries its stream id, a counter and
//! its send time, so delivery, loss and one-way latency are measured per consumer.
//! With `--churn`, more peers join and leave while the media flows, and the server's RSS
//! and object counts are compared before and after them ([`churn`]).
//!
//! ```no_run
//! use clap::Parser;
//! let cfg = ferrosoup_loadtest::Config::parse_from([
//!     "ferrosoup-loadtest", "--url", "ws://127.0.0.1:3000/ws", "--subscribers", "20",
//! ]);
//! let report = ferrosoup_loadtest::run(&cfg)?;
//! println!("{}", report.table());
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod arrival;
pub mod capacity;
pub mod churn;
pub mod config;
pub mod cpu;
pub mod downlink;
pub mod link;
pub mod media;
pub mod payload;
pub mod report;
pub mod scenario;
pub mod signal;
pub mod stats;

pub use capacity::{Capacity, find_capacity, plot_svg};
pub use churn::ChurnReport;
pub use config::Config;
pub use report::Report;
pub use scenario::run;
