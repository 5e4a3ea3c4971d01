//! ferrosoup's wire contract, shared by the server crates and the Rust client.
//!
//! - [`rtp_parameters`]: RTP capabilities and parameters in mediasoup v3's JSON shapes.
//! - [`transport`]: ICE, DTLS and SCTP parameters of WebRTC transports.
//! - [`broadcaster`]: the broadcaster HTTP API (plain RTP in and out).
//! - [`ice_servers`]: the STUN/TURN servers of `GET /api/ice-servers`.
//! - [`ortc`]: the capability rules mediasoup's router applies (router capabilities,
//!   validation, producer → consumable → consumer parameters).
//! - [`signaling`]: the protoo envelope and the request, response and notification
//!   payloads of the signaling protocol.
//!
//! Plain data and pure functions: no I/O, no clock, no randomness.

pub mod broadcaster;
pub mod ice_servers;
pub mod ortc;
pub mod rtp_parameters;
pub mod signaling;
pub mod transport;
