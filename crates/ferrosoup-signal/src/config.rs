//! Signaling settings: sessions, limits and access control.

use std::time::Duration;

/// Limits that keep one client from taking more than its share. Exceeding one answers an
/// error and changes nothing else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Rooms open on the server (503 beyond).
    pub max_rooms: usize,
    /// Peers in one room (429 beyond).
    pub max_peers_per_room: usize,
    /// Transports of one peer (429 beyond).
    pub max_transports_per_peer: usize,
    /// Producers of one peer (429 beyond).
    pub max_producers_per_peer: usize,
    /// Consumers of one peer (429 beyond).
    pub max_consumers_per_peer: usize,
    /// Sustained requests per second per connection (429 beyond the burst).
    pub requests_per_second: u32,
    /// Requests a connection may send at once before the rate applies.
    pub request_burst: u32,
    /// Invalid frames (bad JSON or envelope) tolerated per connection before it is closed.
    pub max_invalid_frames: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_rooms: 10_000,
            max_peers_per_room: 500,
            max_transports_per_peer: 8,
            max_producers_per_peer: 32,
            max_consumers_per_peer: 2_000,
            requests_per_second: 50,
            request_burst: 200,
            max_invalid_frames: 100,
        }
    }
}

/// Settings of the signaling layer.
#[derive(Clone, Debug)]
pub struct SignalConfig {
    /// How long a peer whose WebSocket dropped stays alive, waiting for `?resume=`.
    pub session_grace: Duration,
    /// HS256 secret for access tokens; `None` runs open (development).
    pub auth_secret: Option<String>,
    /// Limits.
    pub limits: Limits,
}

impl Default for SignalConfig {
    fn default() -> Self {
        Self {
            session_grace: Duration::from_secs(30),
            auth_secret: None,
            limits: Limits::default(),
        }
    }
}
