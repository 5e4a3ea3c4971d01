//! Server configuration: flags, environment variables and a TOML file (`--config`), in
//! that order of precedence, over the defaults (the file's layer: config_file.rs).

use std::net::IpAddr;

use clap::Parser;

use ferrosoup_signal::{Limits, SignalConfig, TokenScope};

/// ferrosoup: a mediasoup-compatible SFU. Runs with no configuration: open
/// http://localhost:3000 and connect WebSocket clients to ws://localhost:3000/ws.
#[derive(Clone, Debug, Parser)]
#[command(name = "ferrosoup", version, about)]
pub struct Cli {
    /// What to do (default: run the server).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML file of settings (keys as the flags' names with `_`, e.g. `listen_ip`):
    /// below flags and environment variables, above the defaults.
    #[arg(
        long = "config",
        env = "FERROSOUP_CONFIG",
        global = true,
        value_name = "FILE"
    )]
    pub config_file: Option<std::path::PathBuf>,
    /// Server settings.
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Command {
    /// Mints an access token signed with AUTH_SECRET (for development and tests).
    Token {
        /// The room the token admits to.
        #[arg(long)]
        room: String,
        /// The peer id (JWT subject).
        #[arg(long)]
        peer: String,
        /// Validity in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// Do not allow producing media.
        #[arg(long)]
        no_publish: bool,
        /// Do not allow consuming media.
        #[arg(long)]
        no_subscribe: bool,
        /// Do not allow producing data.
        #[arg(long)]
        no_publish_data: bool,
    },
    /// Asks the server running with these settings (PORT, LISTEN_IP) for a health route;
    /// exit code 0 only on HTTP 200. For container HEALTHCHECKs (the image has no curl).
    Health {
        /// The route to ask: `/health/live` (liveness) or `/health/ready` (readiness).
        #[arg(long, default_value = "/health/live")]
        path: String,
    },
    /// Records a room of a running server to files (Opus → .ogg, VP8 → .ivf), one per
    /// producer, through its broadcaster HTTP API; stops on Ctrl-C or after `--duration`.
    Record {
        /// The room to record.
        #[arg(long)]
        room: String,
        /// Directory for the files (created if missing).
        #[arg(long, default_value = "recordings")]
        out: std::path::PathBuf,
        /// The server's HTTP base; default: this configuration's (PORT, LISTEN_IP).
        #[arg(long)]
        server: Option<String>,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// Local address the server sends RTP to (one the server can reach).
        #[arg(long, default_value = "127.0.0.1")]
        rtp_ip: std::net::IpAddr,
    },
    /// Checks or prints the configuration (flags, environment, `--config` file).
    Config {
        /// What to do with it.
        #[command(subcommand)]
        action: ConfigAction,
    },
}

/// `ferrosoup config` subcommands.
#[derive(Clone, Copy, Debug, clap::Subcommand)]
pub enum ConfigAction {
    /// Validates the configuration as the server would at start; exit code 0 when it is
    /// valid, 1 with the reason otherwise.
    Check,
    /// Prints the effective configuration as TOML, each setting with where it came from;
    /// secrets are masked.
    Print,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Server settings. Every field is a flag, an environment variable and a key of the
/// `--config` file (its name); `config print` serializes them.
#[derive(Clone, Debug, clap::Args, serde::Serialize)]
pub struct Config {
    /// HTTP and WebSocket port.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,
    /// Address the HTTP server and the RTC sockets bind to (the default of HTTP_LISTEN_IP
    /// and RTC_LISTEN_IP). `::` listens on IPv4 and IPv6.
    #[arg(long, env = "LISTEN_IP", default_value = "0.0.0.0")]
    pub listen_ip: IpAddr,
    /// Address the HTTP / WebSocket server binds to (default: LISTEN_IP).
    #[arg(long, env = "HTTP_LISTEN_IP")]
    pub http_listen_ip: Option<IpAddr>,
    /// Address the workers' UDP and ICE-TCP sockets bind to (default: LISTEN_IP); `::`
    /// binds dual-stack sockets serving IPv4 and IPv6 clients.
    #[arg(long, env = "RTC_LISTEN_IP")]
    pub rtc_listen_ip: Option<IpAddr>,
    /// Public address(es) put in ICE candidates (comma-separated). Default: the host's
    /// primary IPv4 address and 127.0.0.1 when listening on all interfaces.
    #[arg(long, env = "ANNOUNCED_IP", value_delimiter = ',')]
    pub announced_ip: Vec<IpAddr>,
    /// First port for worker sockets (each worker: one UDP port and one ICE-TCP port, the
    /// same number when it is free).
    #[arg(long, env = "RTC_MIN_PORT", default_value_t = 40000)]
    pub rtc_min_port: u16,
    /// Last port for worker sockets.
    #[arg(long, env = "RTC_MAX_PORT", default_value_t = 40099)]
    pub rtc_max_port: u16,
    /// ICE-TCP connections open at once per worker; more are closed at accept.
    #[arg(long, env = "MAX_TCP_CONNECTIONS", default_value_t = ferrosoup_room::tcp::TcpLimits::default().max_connections)]
    pub max_tcp_connections: usize,
    /// Bytes queued per ICE-TCP connection for a client that reads slower than its media
    /// arrives; frames that do not fit are dropped.
    #[arg(long, env = "TCP_SEND_BUFFER_BYTES", default_value_t = ferrosoup_room::tcp::TcpLimits::default().send_buffer)]
    pub tcp_send_buffer_bytes: usize,
    /// Number of worker threads (default: number of cores).
    #[arg(long, env = "NUM_WORKERS")]
    pub num_workers: Option<usize>,
    /// Consumers one worker takes of a room before the room's receiving transports go to
    /// routers on other workers (piped from its home worker); 0: a room stays on one
    /// worker.
    #[arg(long, env = "ROOM_CONSUMERS_PER_WORKER", default_value_t = ferrosoup_room::Spread::default().consumers_per_worker)]
    pub room_consumers_per_worker: usize,
    /// JSON file with the routers' media codecs (an array of mediasoup `RtpCodecCapability`).
    /// Default: opus, VP8, VP9 profile 0, H264 42e01f, each video codec with RTX.
    #[arg(long, env = "MEDIA_CODECS")]
    pub media_codecs: Option<std::path::PathBuf>,
    /// HS256 secret, at least 32 bytes: when set, every connection needs `?token=` (see
    /// `ferrosoup token`).
    #[arg(long, env = "AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,
    /// When set, access tokens must carry this `aud`.
    #[arg(long, env = "AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// When set, access tokens must carry this `iss`.
    #[arg(long, env = "AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// When set, `/api/*` needs `Authorization: Bearer <ADMIN_KEY>`.
    #[arg(long, env = "ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Origins allowed to open the WebSocket (comma-separated); a handshake with another
    /// `Origin` gets 403, one without `Origin` passes. Unset: any origin.
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Seconds a peer whose WebSocket dropped stays alive, waiting for `?resume=`.
    #[arg(long, env = "SESSION_GRACE", default_value_t = 30)]
    pub session_grace: u64,
    /// Seconds between SIGTERM (no new peers, /health 503) and closing the rooms.
    #[arg(long, env = "DRAIN_SECONDS", default_value_t = 10)]
    pub drain_seconds: u64,
    /// Most rooms open at once.
    #[arg(long, env = "MAX_ROOMS", default_value_t = Limits::default().max_rooms)]
    pub max_rooms: usize,
    /// Most peers in one room.
    #[arg(long, env = "MAX_PEERS_PER_ROOM", default_value_t = Limits::default().max_peers_per_room)]
    pub max_peers_per_room: usize,
    /// Most peers on this server (this node, in a cluster) over all rooms: `joinRoom`
    /// beyond answers 503, so a load balancer can try another node (0: unlimited).
    #[arg(long, env = "MAX_NODE_PEERS", default_value_t = Limits::default().max_node_peers)]
    pub max_node_peers: usize,
    /// Most transports per peer.
    #[arg(long, env = "MAX_TRANSPORTS_PER_PEER", default_value_t = Limits::default().max_transports_per_peer)]
    pub max_transports_per_peer: usize,
    /// Most producers per peer.
    #[arg(long, env = "MAX_PRODUCERS_PER_PEER", default_value_t = Limits::default().max_producers_per_peer)]
    pub max_producers_per_peer: usize,
    /// Most consumers per peer.
    #[arg(long, env = "MAX_CONSUMERS_PER_PEER", default_value_t = Limits::default().max_consumers_per_peer)]
    pub max_consumers_per_peer: usize,
    /// Seconds without an ICE consent check before a transport is `disconnected` (RFC 7675).
    #[arg(long, env = "ICE_CONSENT_TIMEOUT", default_value_t = 30.0)]
    pub ice_consent_timeout: f64,
    /// Seconds disconnected before `iceRestartRequired` is sent (and between repeats).
    #[arg(long, env = "ICE_DISCONNECT_TIMEOUT", default_value_t = 5.0)]
    pub ice_disconnect_timeout: f64,
    /// Enables `POST /api/debug/workers/{index}/panic`, which makes a worker panic (to test
    /// fault containment). Never enable in production.
    #[arg(long, env = "FAULT_INJECTION", value_parser = clap::builder::BoolishValueParser::new())]
    pub fault_injection: bool,
    /// Sustained signaling requests per second per connection.
    #[arg(long, env = "MAX_REQUESTS_PER_SECOND", default_value_t = Limits::default().requests_per_second)]
    pub max_requests_per_second: u32,
    /// Largest `appData` of one object, in bytes of JSON.
    #[arg(long, env = "MAX_APP_DATA_BYTES", default_value_t = Limits::default().input.max_app_data_bytes)]
    pub max_app_data_bytes: usize,
    /// Rooms one connection may have created that nobody has joined.
    #[arg(long, env = "MAX_ROOMS_PER_CONNECTION", default_value_t = Limits::default().max_rooms_per_connection)]
    pub max_rooms_per_connection: usize,
    /// Seconds after which a room nobody has joined is closed.
    #[arg(long, env = "EMPTY_ROOM_TIMEOUT", default_value_t = Limits::default().empty_room_timeout.as_secs_f64())]
    pub empty_room_timeout: f64,
    /// Bytes queued for a connection that does not read before it is closed (4408).
    #[arg(long, env = "MAX_SEND_QUEUE_BYTES", default_value_t = Limits::default().max_send_queue_bytes)]
    pub max_send_queue_bytes: usize,
    /// Seconds one send to a connection may stall before it is closed (4408).
    #[arg(long, env = "SEND_TIMEOUT", default_value_t = Limits::default().send_timeout.as_secs_f64())]
    pub send_timeout: f64,
    /// WebSocket connections from one IP address (0: unlimited).
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP", default_value_t = Limits::default().max_connections_per_ip)]
    pub max_connections_per_ip: usize,
    /// Largest data channel message in bytes (`sctpParameters.maxMessageSize`; 1..=16 MiB).
    #[arg(long, env = "MAX_DATA_MESSAGE_BYTES", default_value_t = Limits::default().max_data_message_bytes,
          value_parser = clap::value_parser!(u32).range(1..=16 * 1024 * 1024))]
    pub max_data_message_bytes: u32,
    /// Data channel messages per second one data producer may send (0: no limit).
    #[arg(long, env = "MAX_DATA_MESSAGES_PER_SECOND", default_value_t = Limits::default().max_data_messages_per_second)]
    pub max_data_messages_per_second: u32,
    /// Largest `payload` of one `p2pSignal`, in bytes of JSON.
    #[arg(long, env = "MAX_P2P_SIGNAL_BYTES", default_value_t = Limits::default().input.max_p2p_payload_bytes)]
    pub max_p2p_signal_bytes: usize,
    /// `p2pSignal` requests one peer may send per second (two seconds' worth at once).
    #[arg(long, env = "MAX_P2P_SIGNALS_PER_SECOND", default_value_t = Limits::default().max_p2p_signals_per_second)]
    pub max_p2p_signals_per_second: u32,
    /// Seconds a worker (or the signaling runtime) may go without progress before
    /// `/health/live` answers 503.
    #[arg(long, env = "LIVENESS_TIMEOUT", default_value_t = 10.0)]
    pub liveness_timeout: f64,
    /// STUN servers for clients, comma-separated `stun:` URLs (`GET /api/ice-servers`).
    #[arg(long, env = "STUN_URLS", value_delimiter = ',')]
    pub stun_urls: Vec<String>,
    /// TURN servers for clients, comma-separated `turn:` / `turns:` URLs; they need
    /// TURN_SECRET or TURN_USERNAME + TURN_PASSWORD.
    #[arg(long, env = "TURN_URLS", value_delimiter = ',')]
    pub turn_urls: Vec<String>,
    /// Same as TURN_URLS (added to them).
    #[arg(long, env = "TURN_URL", value_delimiter = ',', hide = true)]
    pub turn_url: Vec<String>,
    /// Static TURN username (with TURN_PASSWORD).
    #[arg(long, env = "TURN_USERNAME")]
    pub turn_username: Option<String>,
    /// Static TURN password (with TURN_USERNAME).
    #[arg(long, env = "TURN_PASSWORD", hide_env_values = true)]
    pub turn_password: Option<String>,
    /// Secret shared with the TURN server (coturn's `static-auth-secret`): clients get
    /// time-limited credentials (TURN REST scheme).
    #[arg(long, env = "TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// Seconds the time-limited TURN credentials are valid.
    #[arg(long, env = "TURN_TTL", default_value_t = 86_400)]
    pub turn_ttl: u64,
    /// `redis://[user:password@]host:port[/db]` of a Redis or Valkey shared by several
    /// servers: they form one cluster (docs/cluster.md). Unset: a single server.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// This node's id in the cluster (letters, digits, `-`, `_`, `.`; at most 64).
    /// Default: the host name and a random suffix.
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,
    /// Seconds without a heartbeat after which a node of the cluster is dead: the others
    /// tell its peers' rooms `peerLeft` and remove its keys.
    #[arg(long, env = "NODE_TIMEOUT", default_value_t = 10.0)]
    pub node_timeout: f64,
    /// The address other nodes of the cluster send pipe media to (a private network
    /// between the nodes). Default: the worker's first announced IP, as clients get it.
    #[arg(long, env = "PIPE_ANNOUNCED_IP")]
    pub pipe_announced_ip: Option<IpAddr>,
    /// Log filter (tracing's `EnvFilter` syntax, e.g. `info,ferrosoup_room=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info,rtc_dtls=error")]
    pub log_filter: String,
    /// Log line format on stderr: `text`, or `json` (one object per line).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Config {
    /// Checks relations between settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.rtc_min_port > self.rtc_max_port {
            return Err(format!(
                "RTC_MIN_PORT {} > RTC_MAX_PORT {}",
                self.rtc_min_port, self.rtc_max_port
            ));
        }
        for (name, v) in [
            ("ICE_CONSENT_TIMEOUT", self.ice_consent_timeout),
            ("ICE_DISCONNECT_TIMEOUT", self.ice_disconnect_timeout),
            ("EMPTY_ROOM_TIMEOUT", self.empty_room_timeout),
            ("SEND_TIMEOUT", self.send_timeout),
            ("LIVENESS_TIMEOUT", self.liveness_timeout),
            ("NODE_TIMEOUT", self.node_timeout),
        ] {
            if !(v.is_finite() && v > 0.0 && v < 86_400.0) {
                return Err(format!("{name} must be a positive number of seconds"));
            }
        }
        if let Some(secret) = self.auth_secret() {
            ferrosoup_signal::auth::check_secret(secret)?;
        }
        if self.fault_injection && self.admin_key().is_none() {
            return Err(
                "FAULT_INJECTION needs ADMIN_KEY: its debug routes are admin routes".into(),
            );
        }
        self.ice_servers()?;
        if self.tcp_send_buffer_bytes < 2048 {
            return Err("TCP_SEND_BUFFER_BYTES must be at least 2048 (one packet)".into());
        }
        self.log_filter()?;
        if let Some(id) = &self.node_id
            && !ferrosoup_cluster::valid_node_id(id)
        {
            return Err(format!(
                "NODE_ID {id:?}: 1..=64 ASCII letters, digits, '-', '_' or '.'"
            ));
        }
        if self.pipe_announced_ip.is_some() && self.cluster_settings().is_none() {
            return Err(
                "PIPE_ANNOUNCED_IP needs REDIS_URL (pipes join the nodes of a cluster)".into(),
            );
        }
        if self.node_id.is_some() && self.cluster_settings().is_none() {
            return Err("NODE_ID needs REDIS_URL (a node of a cluster)".into());
        }
        if self.node_timeout < 0.2 {
            return Err("NODE_TIMEOUT must be at least 0.2 seconds".into());
        }
        if self.num_workers == Some(0) {
            return Err("NUM_WORKERS must be at least 1".into());
        }
        let workers = self.num_workers.unwrap_or(1);
        let ports = usize::from(self.rtc_max_port - self.rtc_min_port) + 1;
        if workers > ports {
            return Err(format!(
                "{workers} workers need {workers} ports; the RTC port range has {ports}"
            ));
        }
        Ok(())
    }

    /// The routers' media codecs: from the file, or the defaults. Checked by computing the
    /// router capabilities once.
    pub fn media_codecs(
        &self,
    ) -> Result<Vec<ferrosoup_proto::rtp_parameters::RtpCodecCapability>, String> {
        let codecs = match &self.media_codecs {
            None => ferrosoup_proto::ortc::default_media_codecs(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("MEDIA_CODECS {}: {e}", path.display()))?;
                serde_json::from_str(&text)
                    .map_err(|e| format!("MEDIA_CODECS {}: {e}", path.display()))?
            }
        };
        ferrosoup_proto::ortc::generate_router_rtp_capabilities(&codecs)
            .map_err(|e| format!("media codecs: {e}"))?;
        Ok(codecs)
    }

    /// The log filter, parsed.
    pub fn log_filter(&self) -> Result<tracing_subscriber::EnvFilter, String> {
        tracing_subscriber::EnvFilter::try_new(&self.log_filter)
            .map_err(|e| format!("RUST_LOG {:?}: {e}", self.log_filter))
    }

    /// The access token secret; unset or empty: none (open server).
    pub fn auth_secret(&self) -> Option<&str> {
        self.auth_secret.as_deref().filter(|s| !s.is_empty())
    }

    /// The admin key; unset or empty: none (open API).
    pub fn admin_key(&self) -> Option<&str> {
        self.admin_key.as_deref().filter(|s| !s.is_empty())
    }

    /// The audience and issuer access tokens must name.
    pub fn token_scope(&self) -> TokenScope {
        TokenScope {
            audience: self.auth_audience.clone().filter(|s| !s.is_empty()),
            issuer: self.auth_issuer.clone().filter(|s| !s.is_empty()),
        }
    }

    /// The STUN and TURN servers of `GET /api/ice-servers`, checked (empty values count as
    /// unset).
    pub fn ice_servers(&self) -> Result<crate::ice_servers::IceServersConfig, String> {
        let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let turn_urls: Vec<String> = self
            .turn_urls
            .iter()
            .chain(&self.turn_url)
            .cloned()
            .collect();
        let static_credentials = match (set(&self.turn_username), set(&self.turn_password)) {
            (Some(user), Some(password)) => Some((user, password)),
            (None, None) => None,
            _ => return Err("TURN_USERNAME and TURN_PASSWORD go together".into()),
        };
        crate::ice_servers::IceServersConfig::new(
            &self.stun_urls,
            &turn_urls,
            static_credentials
                .as_ref()
                .map(|(u, p)| (u.as_str(), p.as_str())),
            set(&self.turn_secret).as_deref(),
            self.turn_ttl,
        )
    }

    /// The signaling settings.
    pub fn signal_config(&self) -> SignalConfig {
        let defaults = Limits::default();
        SignalConfig {
            session_grace: std::time::Duration::from_secs(self.session_grace),
            auth_secret: self.auth_secret().map(str::to_owned),
            token_scope: self.token_scope(),
            pipe_announced_ip: self.pipe_announced_ip,
            spread: ferrosoup_room::Spread {
                consumers_per_worker: self.room_consumers_per_worker,
                ..ferrosoup_room::Spread::default()
            },
            limits: Limits {
                max_rooms: self.max_rooms,
                max_peers_per_room: self.max_peers_per_room,
                max_node_peers: self.max_node_peers,
                max_transports_per_peer: self.max_transports_per_peer,
                max_producers_per_peer: self.max_producers_per_peer,
                max_consumers_per_peer: self.max_consumers_per_peer,
                requests_per_second: self.max_requests_per_second,
                request_burst: self.max_requests_per_second.saturating_mul(4).max(1),
                max_invalid_frames: defaults.max_invalid_frames,
                input: ferrosoup_proto::signaling::InputLimits {
                    max_app_data_bytes: self.max_app_data_bytes,
                    max_p2p_payload_bytes: self.max_p2p_signal_bytes,
                    ..defaults.input
                },
                max_rooms_per_connection: self.max_rooms_per_connection,
                empty_room_timeout: std::time::Duration::from_secs_f64(self.empty_room_timeout),
                max_send_queue_bytes: self.max_send_queue_bytes,
                send_timeout: std::time::Duration::from_secs_f64(self.send_timeout),
                max_connections_per_ip: self.max_connections_per_ip,
                max_data_message_bytes: self.max_data_message_bytes,
                max_data_messages_per_second: self.max_data_messages_per_second,
                max_p2p_signals_per_second: self.max_p2p_signals_per_second,
            },
        }
    }

    /// The cluster this server joins, when `REDIS_URL` is set.
    pub fn cluster_settings(&self) -> Option<ferrosoup_cluster::ClusterSettings> {
        let redis_url = self.redis_url.as_ref().filter(|u| !u.is_empty())?;
        Some(ferrosoup_cluster::ClusterSettings {
            redis_url: redis_url.clone(),
            node_id: self
                .node_id
                .clone()
                .unwrap_or_else(ferrosoup_cluster::default_node_id),
            node_timeout: std::time::Duration::from_secs_f64(self.node_timeout),
        })
    }

    /// Where the HTTP server binds.
    pub fn http_listen_ip(&self) -> IpAddr {
        self.http_listen_ip.unwrap_or(self.listen_ip)
    }

    /// Where the worker sockets bind.
    pub fn rtc_listen_ip(&self) -> IpAddr {
        self.rtc_listen_ip.unwrap_or(self.listen_ip)
    }

    /// The worker pool settings.
    pub fn worker_settings(&self) -> ferrosoup_room::WorkerSettings {
        let defaults = ferrosoup_room::WorkerSettings::default();
        ferrosoup_room::WorkerSettings {
            num_workers: self.num_workers.unwrap_or(defaults.num_workers),
            listen_ip: self.rtc_listen_ip(),
            announced_ips: self.announced_ip.clone(),
            rtc_min_port: self.rtc_min_port,
            rtc_max_port: self.rtc_max_port,
            tcp_limits: ferrosoup_room::tcp::TcpLimits {
                max_connections: self.max_tcp_connections,
                send_buffer: self.tcp_send_buffer_bytes,
            },
            ice_timeouts: ferrosoup_room::settings::IceTimeouts {
                consent: std::time::Duration::from_secs_f64(self.ice_consent_timeout),
                restart_required: std::time::Duration::from_secs_f64(self.ice_disconnect_timeout),
            },
        }
    }
}
