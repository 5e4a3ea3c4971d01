//! ferrosoup signaling: the WebSocket contract of PROTOCOL.md on top of the room manager.
//!
//! - [`Hub`]: rooms (one router each), peers, and the routing of worker events to the
//!   peer that owns the object.
//! - [`session`]: one connection's request handling, generic over the frame transport so
//!   the server adapts a WebSocket and tests use channels.

pub mod error;
pub mod hub;
pub mod session;
pub mod stats;

pub use error::SignalError;
pub use hub::{Hub, Outgoing};
