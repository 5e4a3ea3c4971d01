//! Signaling settings: sessions, limits and access control.

use std::time::Duration;

use ferrosoup_proto::signaling::InputLimits;

/// Limits that keep one client from taking more than its share. Exceeding one answers an
/// error and changes nothing else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Rooms open on the server (503 beyond).
    pub max_rooms: usize,
    /// Peers in one room (429 beyond), over every node in a cluster.
    pub max_peers_per_room: usize,
    /// Peers on this server (this node, in a cluster) over all rooms; `joinRoom` beyond
    /// answers 503 so a load balancer can try another node (0: unlimited).
    pub max_node_peers: usize,
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
    /// Bounds on one request's data (encodings, codecs, appData, names, ids; 400 beyond).
    pub input: InputLimits,
    /// Rooms one connection created that nobody has joined (429 beyond).
    pub max_rooms_per_connection: usize,
    /// A room nobody has joined is closed after this long.
    pub empty_room_timeout: Duration,
    /// Bytes queued for a connection that does not read (closed with 4408 beyond), and
    /// bytes of notifications kept for a disconnected peer (oldest dropped beyond).
    pub max_send_queue_bytes: usize,
    /// A send to a connection stalled this long closes it with 4408.
    pub send_timeout: Duration,
    /// WebSocket connections from one IP address (0: unlimited; HTTP 429 beyond).
    pub max_connections_per_ip: usize,
    /// Largest data channel message, bytes (announced as `sctpParameters.maxMessageSize`;
    /// larger ones are dropped and counted).
    pub max_data_message_bytes: u32,
    /// Data channel messages one data producer may send per second (one second's worth at
    /// once; beyond, dropped and counted; 0: no limit).
    pub max_data_messages_per_second: u32,
    /// `p2pSignal` requests one peer may send per second (two seconds' worth at once; 429
    /// beyond).
    pub max_p2p_signals_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_rooms: 10_000,
            max_peers_per_room: 500,
            max_node_peers: 0,
            max_transports_per_peer: 8,
            max_producers_per_peer: 32,
            max_consumers_per_peer: 2_000,
            requests_per_second: 50,
            request_burst: 200,
            max_invalid_frames: 100,
            input: InputLimits::default(),
            max_rooms_per_connection: 4,
            empty_room_timeout: Duration::from_secs(60),
            max_send_queue_bytes: 4 * 1024 * 1024,
            send_timeout: Duration::from_secs(10),
            max_connections_per_ip: 0,
            max_data_message_bytes: 262_144,
            max_data_messages_per_second: 200,
            max_p2p_signals_per_second: 20,
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
    /// Audience and issuer an access token must name, when set.
    pub token_scope: TokenScope,
    /// The address other nodes send pipe media to (`None`: the worker's first
    /// announced IP).
    pub pipe_announced_ip: Option<std::net::IpAddr>,
    /// How a room spreads over the workers (`ROOM_CONSUMERS_PER_WORKER`).
    pub spread: ferrosoup_room::Spread,
    /// Limits.
    pub limits: Limits,
}

impl Default for SignalConfig {
    fn default() -> Self {
        Self {
            session_grace: Duration::from_secs(30),
            auth_secret: None,
            token_scope: TokenScope::default(),
            pipe_announced_ip: None,
            spread: ferrosoup_room::Spread::default(),
            limits: Limits::default(),
        }
    }
}

/// The `aud` and `iss` an access token must carry; `None`: not checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenScope {
    /// Required audience (`AUTH_AUDIENCE`).
    pub audience: Option<String>,
    /// Required issuer (`AUTH_ISSUER`).
    pub issuer: Option<String>,
}
