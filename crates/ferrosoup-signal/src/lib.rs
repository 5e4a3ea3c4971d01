//! ferrosoup signaling: the WebSocket contract of PROTOCOL.md on top of the room manager.
//!
//! - [`connection`]: the loop serving one connection ([`connection::run`]): rate limit,
//!   frames to the session, resume after a dropped WebSocket, the grace period. Generic
//!   over the frame transport so the server adapts a WebSocket and tests use channels.
//! - [`session`]: a peer's signaling state and its request handling: each request is read
//!   once into ferrosoup-proto's `SignalRequest`, answered from proto structs, and
//!   re-sent requests get their cached answer ([`cache`]).
//! - [`resume`]: the registry of session tokens → sessions waiting to be resumed.
//! - [`broadcasters`]: the broadcasters of the HTTP API, each a session without a
//!   connection whose peer the room sees like any other.
//! - [`Hub`]: rooms (one router each), peers, and the routing of worker events to the
//!   peer that owns the object; in a cluster, its `pipes` module carries media between
//!   nodes (remote producers, pipe transports).
//! - [`srtp_keys`]: SRTP keys of plain transports as the HTTP API and the pipe handshake
//!   write them.
//! - [`link`]: the re-pointable link from a peer to its current connection, queueing
//!   notifications while it has none.
//! - [`error`]: [`SignalError`], an `ErrorCode` of the contract and a reason.
//! - [`cluster`]: the [`Cluster`] trait a server that is one node of a cluster joins rooms
//!   through, and the [`ClusterEvent`]s of other nodes' peers.
//! - [`auth`]: HS256 access tokens; [`config`]: grace period, limits, secret;
//!   [`limits`]: the request rate limiter; [`stats`]: request counters.
//!
//! # Module graph
//!
//! Dependencies point one way, from the connection down to the link; no module imports one
//! above it:
//!
//! ```text
//! connection ──► resume ──► session ──► hub ──► link
//! broadcasters ──► session
//!
//! connection ──► session, hub, link, limits, auth
//! session    ──► link, auth, cache, limits
//! hub        ──► config, stats, cluster, srtp_keys
//! auth       ──► config (the token scope)
//! error      ◄── used by connection, session, hub and auth
//! ```
//!
//! `resume` stores sessions; `session` knows the hub (rooms and peers) and its own link;
//! the hub knows peers and their links, never sessions. When the hub closes a room it tells
//! each peer's session through the peer's link ([`link::Notifier::room_closed`]): the
//! session forgets the room and revokes its resume token, and whoever drives the session
//! hands the revocation to the registry ([`ResumeRegistry::update`]). `cache`, `config`,
//! `error`, `limits`, `link`, `srtp_keys` and `stats` use no other module of the crate but
//! `error`;
//! `auth` also reads the token scope from `config`.

pub mod auth;
pub mod broadcasters;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod error;
pub mod hub;
pub mod limits;
pub mod link;
pub mod resume;
pub mod session;
pub mod srtp_keys;
pub mod stats;

pub use auth::Claims;
pub use broadcasters::Broadcasters;
pub use cluster::{Cluster, ClusterEvent, ClusterPeer};
pub use config::{Limits, SignalConfig, TokenScope};
pub use connection::ConnectParams;
pub use error::SignalError;
pub use hub::Hub;
pub use link::Outgoing;
pub use resume::ResumeRegistry;
