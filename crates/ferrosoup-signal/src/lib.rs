//! ferrosoup signaling: the WebSocket contract of PROTOCOL.md on top of the room manager.
//!
//! - [`Hub`]: rooms (one router each), peers, and the routing of worker events to the
//!   peer that owns the object.
//! - [`session`]: a peer's signaling session and the connection loop serving it: resume
//!   after a dropped WebSocket, cached answers for re-sent requests, rate limits. Generic
//!   over the frame transport so the server adapts a WebSocket and tests use channels.
//! - [`link`]: the re-pointable link from a peer to its current connection, queueing
//!   notifications while it has none.
//! - [`auth`]: HS256 access tokens; [`config`]: grace period, limits, secret.

pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod hub;
pub mod limits;
pub mod link;
pub mod session;
pub mod stats;

pub use auth::Claims;
pub use config::{Limits, SignalConfig};
pub use error::SignalError;
pub use hub::Hub;
pub use link::Outgoing;
pub use session::ConnectParams;
