//! Command line and run configuration.

use std::path::PathBuf;

use clap::Parser;

use crate::signal::{host_port, is_loopback};

const EXAMPLES: &str = "\
SCENARIOS
  Every room gets --publishers publishers and --subscribers subscribers. A publisher sends
  one Opus stream (50 packets/s, 100-byte payloads) and, unless --video-kbps is 0, one VP8
  stream at that bitrate (30 fps, a key frame every 2.5 s and on PLI), or three simulcast
  encodings (r0/r1/r2 at 10/25/65 % of the bitrate) with --simulcast. A frame's packets
  are paced like a browser's (--pacing-factor, 0 = bursts). Every subscriber
  consumes every publisher of its room, audio and video, so the SFU serves
  rooms x publishers x subscribers x (1 or 2) consumers.

  All peers join first (publishers, then subscribers); after a settle time the measurement
  window of --duration seconds starts. Packets sent inside the window are counted as
  expected and looked for at every consumer: delivery ratio, loss, and one-way latency
  (send time is in each payload, arrival time is the kernel's receive stamp; sender and
  receiver share one clock). Join time runs
  from opening the WebSocket to a subscriber's first media packet.

  The server's CPU and RSS are sampled from /proc when it runs on this machine (see
  --server-pid). The load tester's own media-thread CPU and loop busy time are reported
  too: if they are high, the figures measure the load tester, not the server.

TRANSPORT-CC AND CAPPED DOWNLINKS
  As browsers do, publishers put a transport-wide sequence number on every packet
  (header extension transport-wide-cc) and subscribers negotiate transport-cc (the
  extension and the transport-cc RTCP feedback in the rtpCapabilities of joinRoom): they
  note each arriving packet's transport-wide sequence number and arrival time and send
  RTCP transport-cc feedback every 100 ms (libwebrtc's default interval), so the server
  estimates each subscriber's downlink and chooses its layers. --no-twcc negotiates none
  of it (no extension, no feedback; the server runs no estimation).

  --downlink-kbps N caps the downlink of the first --capped-subscribers subscribers of
  every room (all, by default) at N kbit/s, in user space on receive, as Linux's tbf
  qdisc would: a token bucket of --downlink-burst bytes filling at N kbit/s, and a queue
  of --downlink-queue-ms at that rate; a datagram costs its length plus 28 bytes of IPv4
  and UDP headers; one that finds no tokens waits in the queue, and one that does not fit
  in the queue is dropped. Every datagram of the subscriber's transport passes through
  it (RTP, RTCP, STUN), and its arrival time, for the transport-cc feedback and the
  latency, is the time it leaves the bucket. The report gives, for capped and uncapped
  subscribers apart, the layer each video consumer ended on (the layer of its newest
  packet, or paused when nothing sent in the window's last second arrived) and the
  bitrate each subscriber received; the JSON lists every subscriber.

CHURN
  With --churn RATE, extra peers join the rooms at RATE per second while the window runs
  and the steady peers' media flows: in turn a publisher (audio + video), a subscriber
  (consumes every publisher of the room, churn publishers included) and a peer that does
  both. Each stays --churn-lifetime seconds with its media flowing, then leaves: a share
  --churn-drop of them by dropping the WebSocket and UDP without a word (the server keeps
  them for its resume grace period, SESSION_GRACE), the others with leaveRoom and a close.
  Joins stop at the window's end; peers still there leave at once. Then the load tester
  waits (up to --churn-settle seconds) until the server's object counts are back at the
  baseline taken before the churn, rests --churn-rest seconds (the server's allocator
  gives freed pages back within about a second), and reports the server's RSS, its heap
  in use (memory.allocated of GET /api/stats) and every object count of GET /api/stats
  (rooms, peers and the peers' transports, producers and consumers as the signaling layer
  lists them; routers, transports, producers and consumers per worker) at the baseline,
  at their peak and at the end, and whether the end is within 5 % of the baseline.
  The baseline is taken --settle seconds after the last steady join, and after
  --churn-warmup seconds of churn whose peers all left when given: give the server's
  buffers of the steady streams time to fill first (it keeps the last 512
  packets of each video stream, 15-20 s at a few hundred kbit/s), or the baseline RSS is
  low. Churn peers are left out of the delivery, latency and join figures. A churn
  run sends only to loopback: the URL's host and the media candidates must be loopback
  addresses. With ADMIN_KEY set on the server, pass it with --admin-key.

EXAMPLES
  One room, one presenter, 50 viewers, 500 kbit/s video for 30 s:
    ferrosoup-loadtest --url ws://127.0.0.1:3000/ws --publishers 1 --subscribers 50 \\
        --video-kbps 500 --duration 30

  Audio only, 20 rooms of 6 speakers and 6 listeners (720 consumers):
    ferrosoup-loadtest --rooms 20 --publishers 6 --subscribers 6 --video-kbps 0

  Simulcast, two of ten subscribers behind a 400 kbit/s link:
    ferrosoup-loadtest --publishers 1 --subscribers 10 --video-kbps 1500 --simulcast \\
        --downlink-kbps 400 --capped-subscribers 2 --settle 10 --duration 10

  Simulcast, machine-readable output:
    ferrosoup-loadtest --publishers 2 --subscribers 20 --video-kbps 1200 --simulcast \\
        --json result.json

  Ten minutes of churn, 3 joins and 3 leaves per second in 4 rooms, half of the
  leaves abrupt (a server started with SESSION_GRACE=5):
    ferrosoup-loadtest --rooms 4 --publishers 2 --subscribers 10 --settle 30 \\
        --duration 600 --churn 3 --churn-lifetime 8 --churn-drop 0.5 --json soak.json

  Capacity search against a local server pinned to core 0 (load tester on core 1):
    NUM_WORKERS=1 taskset -c 0 ferrosoup &
    taskset -c 1 ferrosoup-loadtest --find-capacity --publishers 1 --video-kbps 500 \\
        --plot capacity.svg --json capacity.json
";

/// How peers are spread over the servers of several `--url`s.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// Peer `i` of the run joins through server `i mod n`.
    Peers,
    /// Every peer of room `r` joins through server `r mod n`.
    Rooms,
}

/// Load generator for the ferrosoup SFU.
///
/// Simulates rooms of publishers and subscribers speaking the ferrosoup WebSocket protocol,
/// with synthetic Opus and VP8 media over real ICE, DTLS and SRTP. All simulated transports
/// share one event loop (one UDP socket each), so one core drives thousands of streams.
/// Reports join times, delivery ratio, loss, one-way latency through the SFU, NACKs and
/// PLIs, and the server's CPU and memory when it runs on this machine.
#[derive(Parser, Debug, Clone)]
#[command(name = "ferrosoup-loadtest", version, after_help = EXAMPLES)]
pub struct Config {
    /// WebSocket URL of the server. Give it several times to spread the peers over
    /// several servers (see `--spread`); the server's CPU, memory and `/api/stats` are
    /// read from the first.
    #[arg(long = "url", default_value = "ws://127.0.0.1:3000/ws")]
    pub urls: Vec<String>,
    /// How peers are spread over several `--url`s: `peers` puts a room's peers on the
    /// servers in turn (the nodes of one cluster, where a room spans nodes); `rooms` puts
    /// each room, all its peers, on one server in turn (independent servers, or a cluster's
    /// placement by room).
    #[arg(long, value_enum, default_value_t = Spread::Peers)]
    pub spread: Spread,
    /// Number of rooms.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Publishers per room (each sends audio, and video unless --video-kbps is 0).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Subscribers per room (each consumes every publisher's audio and video).
    #[arg(long, default_value_t = 10)]
    pub subscribers: usize,
    /// Video bitrate per publisher in kbit/s; 0 sends audio only.
    #[arg(long, default_value_t = 500)]
    pub video_kbps: u32,
    /// Send video as three simulcast encodings (r0, r1, r2).
    #[arg(long)]
    pub simulcast: bool,
    /// Carry every transport over ICE-TCP: ask `createTransport` for `forceTcp` and
    /// connect to the server's passive TCP candidate (RFC 4571 framing) instead of UDP.
    #[arg(long)]
    pub tcp: bool,
    /// With --tcp: this many subscribers per room (the first ones) stop reading their
    /// connection once DTLS is up, as a client on a link slower than its media; they are
    /// left out of the report's figures (what the others get shows whether they suffer).
    #[arg(long, default_value_t = 0)]
    pub tcp_stalled_subscribers: usize,
    /// Space the packets of a video frame at this multiple of the stream's bitrate, as
    /// browsers' pacers do (libwebrtc's factor is 2.5); 0 sends each frame's packets back to
    /// back, so key frames reach the SFU as bursts.
    #[arg(long, default_value_t = 2.5)]
    pub pacing_factor: f64,
    /// Length of the measurement window in seconds (joining and settling come before).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Ramp the subscribers per room up step by step until delivery drops below
    /// --min-delivery or p99 latency exceeds --max-p99-ms; report the last passing step.
    #[arg(long)]
    pub find_capacity: bool,
    /// With --find-capacity: draw delivery, p99 latency and server CPU against the number
    /// of consumers into this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Pid of the server process for CPU/RSS sampling (default: the process listening on
    /// the URL's port, else a process named `ferrosoup`).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Check the whole payload of every packet on one in this many subscribers (the others
    /// check SRTP, the trailer and the stream id only).
    #[arg(long, default_value_t = 10)]
    pub verify_every: usize,
    /// Seconds between the last join and the start of the measurement window.
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
    /// Peers joining at the same time.
    #[arg(long, default_value_t = 32)]
    pub join_concurrency: usize,
    /// Seconds a peer may take to join before it counts as failed.
    #[arg(long, default_value_t = 20.0)]
    pub join_timeout: f64,
    /// With --find-capacity: measurement seconds per step.
    #[arg(long, default_value_t = 5.0)]
    pub step_duration: f64,
    /// With --find-capacity: subscribers per room of the first step (default: --subscribers).
    #[arg(long)]
    pub start_subscribers: Option<usize>,
    /// With --find-capacity: add this many subscribers per room each step instead of
    /// doubling.
    #[arg(long)]
    pub step_add: Option<usize>,
    /// With --find-capacity: stop after the step with this many subscribers per room.
    #[arg(long, default_value_t = 4096)]
    pub max_subscribers: usize,
    /// With --find-capacity: lowest passing delivery ratio.
    #[arg(long, default_value_t = 0.995)]
    pub min_delivery: f64,
    /// With --find-capacity: highest passing p99 latency in milliseconds.
    #[arg(long, default_value_t = 20.0)]
    pub max_p99_ms: f64,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Churn: extra peers joining per second while the window runs, each leaving after
    /// --churn-lifetime seconds (see CHURN below); 0 turns churn off.
    #[arg(long, default_value_t = 0.0, value_name = "PER_SECOND")]
    pub churn: f64,
    /// With --churn: seconds a churn peer stays, media flowing, before it leaves.
    #[arg(long, default_value_t = 5.0)]
    pub churn_lifetime: f64,
    /// With --churn: share of churn peers (0..1) that leave by dropping their WebSocket and
    /// UDP without a word; the others send leaveRoom and close the WebSocket.
    #[arg(long, default_value_t = 0.5)]
    pub churn_drop: f64,
    /// With --churn: most seconds to wait, once every churn peer has left, for the server's
    /// object counts to come back to the baseline (its SESSION_GRACE must fit in).
    #[arg(long, default_value_t = 60.0)]
    pub churn_settle: f64,
    /// Negotiate no transport-cc: publishers' packets carry no transport-wide sequence
    /// number and subscribers send no feedback, so the server estimates nothing.
    #[arg(long)]
    pub no_twcc: bool,
    /// Cap the downlink of subscribers at this many kbit/s (see TRANSPORT-CC AND CAPPED
    /// DOWNLINKS below).
    #[arg(long, value_name = "KBPS")]
    pub downlink_kbps: Option<u32>,
    /// With --downlink-kbps: the cap applies to this many subscribers per room (the first
    /// ones); default all.
    #[arg(long)]
    pub capped_subscribers: Option<usize>,
    /// With --downlink-kbps: token bucket size in bytes (what passes at line rate after the
    /// link was idle).
    #[arg(long, default_value_t = 3000)]
    pub downlink_burst: usize,
    /// With --downlink-kbps: queue of the capped link in milliseconds at its rate; what does
    /// not fit is dropped.
    #[arg(long, default_value_t = 300.0)]
    pub downlink_queue_ms: f64,
    /// With --churn: seconds of churn before the baseline (peers that join and leave the
    /// same way, until the counts are back), so that the baseline is that of a server
    /// that has already seen peers leave; 0 for none.
    #[arg(long, default_value_t = 0.0)]
    pub churn_warmup: f64,
    /// With --churn: seconds from the counts' return to the baseline to the end figures,
    /// for the server's allocator to give back the pages the last peers freed (it does
    /// within about a second).
    #[arg(long, default_value_t = 5.0)]
    pub churn_rest: f64,
    /// Bearer key for the server's /api/* routes, when it runs with ADMIN_KEY.
    #[arg(long, env = "ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
}

impl Config {
    /// The first `--url`: the server whose CPU, memory and stats the report shows.
    pub fn url(&self) -> &str {
        self.urls.first().map_or("", String::as_str)
    }

    /// The `--url` the peer of run-wide index `index` in room `room` joins through.
    pub fn url_for(&self, room: usize, index: u32) -> &str {
        let n = self.urls.len().max(1);
        let i = match self.spread {
            Spread::Peers => index as usize % n,
            Spread::Rooms => room % n,
        };
        self.urls.get(i).map_or("", String::as_str)
    }

    /// Whether peers join and leave during the window (`--churn` above 0).
    pub fn churning(&self) -> bool {
        self.churn > 0.0
    }

    /// Whether subscriber `i` of its room (0-based) stops reading its TCP connection.
    pub fn stalled(&self, i: usize) -> bool {
        self.tcp && i < self.tcp_stalled_subscribers
    }

    /// Whether subscriber `i` of its room (0-based) is behind the capped link.
    pub fn capped(&self, i: usize) -> bool {
        self.downlink_kbps.is_some() && self.capped_subscribers.is_none_or(|n| i < n)
    }

    /// Consumers the SFU serves in this scenario.
    pub fn consumers(&self) -> usize {
        let per_publisher = if self.video_kbps > 0 { 2 } else { 1 };
        self.rooms * self.publishers * self.subscribers * per_publisher
    }

    /// Checks the numbers make a scenario.
    pub fn validate(&self) -> Result<(), String> {
        if self.rooms == 0 || self.publishers == 0 {
            return Err("--rooms and --publishers must be at least 1".into());
        }
        if !(self.duration > 0.0 && self.duration.is_finite()) {
            return Err("--duration must be a positive number of seconds".into());
        }
        if !(self.pacing_factor >= 0.0 && self.pacing_factor.is_finite()) {
            return Err("--pacing-factor must be zero or more".into());
        }
        if !(self.settle >= 0.0 && self.settle.is_finite()) {
            return Err("--settle must be zero or more seconds".into());
        }
        if !(self.join_timeout > 0.0 && self.join_timeout.is_finite()) {
            return Err("--join-timeout must be positive".into());
        }
        if self.join_concurrency == 0 || self.verify_every == 0 {
            return Err("--join-concurrency and --verify-every must be at least 1".into());
        }
        if self.urls.is_empty() {
            return Err("--url is needed".into());
        }
        if let Some(url) = self
            .urls
            .iter()
            .find(|u| !u.starts_with("ws://") && !u.starts_with("wss://"))
        {
            return Err(format!("--url must be a ws:// or wss:// URL, not {url}"));
        }
        if self.downlink_kbps == Some(0) {
            return Err("--downlink-kbps must be at least 1".into());
        }
        if !(self.downlink_queue_ms > 0.0 && self.downlink_queue_ms.is_finite()) {
            return Err("--downlink-queue-ms must be positive".into());
        }
        if self.tcp_stalled_subscribers > 0 && !self.tcp {
            return Err("--tcp-stalled-subscribers needs --tcp".into());
        }
        if self.downlink_kbps.is_none() && self.capped_subscribers.is_some() {
            return Err("--capped-subscribers needs --downlink-kbps".into());
        }
        if !(self.churn >= 0.0 && self.churn.is_finite()) {
            return Err("--churn must be zero or more peers per second".into());
        }
        if self.churning() {
            if self.find_capacity {
                return Err("--churn and --find-capacity do not go together".into());
            }
            if !(self.churn_lifetime > 0.0 && self.churn_lifetime.is_finite()) {
                return Err("--churn-lifetime must be positive".into());
            }
            if !(0.0..=1.0).contains(&self.churn_drop) {
                return Err("--churn-drop must be between 0 and 1".into());
            }
            if !(self.churn_settle >= 0.0 && self.churn_settle.is_finite()) {
                return Err("--churn-settle must be zero or more seconds".into());
            }
            if !(self.churn_warmup >= 0.0 && self.churn_warmup.is_finite()) {
                return Err("--churn-warmup must be zero or more seconds".into());
            }
            if !(self.churn_rest >= 0.0 && self.churn_rest.is_finite()) {
                return Err("--churn-rest must be zero or more seconds".into());
            }
            if self.urls.len() > 1 {
                return Err(
                    "--churn checks one server's objects before and after: give one --url".into(),
                );
            }
            if !host_port(self.url()).is_some_and(|(host, _)| is_loopback(&host)) {
                return Err(
                    "--churn sends only to loopback: --url must name a loopback host".into(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_consumer_count() {
        let c = Config::try_parse_from(["ferrosoup-loadtest"]).expect("defaults parse");
        assert_eq!(c.consumers(), 20);
        assert!(c.validate().is_ok());
        let audio = Config::try_parse_from([
            "x",
            "--rooms",
            "3",
            "--publishers",
            "2",
            "--subscribers",
            "5",
            "--video-kbps",
            "0",
        ])
        .expect("parses");
        assert_eq!(audio.consumers(), 30);
    }

    #[test]
    fn several_urls_spread_peers_or_rooms() {
        let one = Config::try_parse_from(["x"]).expect("parses");
        assert_eq!(one.urls, ["ws://127.0.0.1:3000/ws"]);
        assert_eq!(one.url_for(3, 7), "ws://127.0.0.1:3000/ws");
        let args = ["x", "--url", "ws://a/ws", "--url", "ws://b/ws"];
        let peers = Config::try_parse_from(args).expect("parses");
        assert_eq!(peers.url(), "ws://a/ws");
        assert_eq!(
            (0..4).map(|i| peers.url_for(0, i)).collect::<Vec<_>>(),
            ["ws://a/ws", "ws://b/ws", "ws://a/ws", "ws://b/ws"]
        );
        let rooms =
            Config::try_parse_from([&args[..], &["--spread", "rooms"]].concat()).expect("parses");
        assert_eq!(rooms.url_for(0, 1), "ws://a/ws");
        assert_eq!(rooms.url_for(1, 0), "ws://b/ws");
        assert!(rooms.validate().is_ok());
        let loopback = [
            "x",
            "--url",
            "ws://127.0.0.1:1/ws",
            "--url",
            "ws://127.0.0.2:1/ws",
        ];
        let churn =
            Config::try_parse_from([&loopback[..], &["--churn", "2"]].concat()).expect("parses");
        assert!(churn.validate().is_err_and(|e| e.contains("one --url")));
    }

    #[test]
    fn bad_numbers_are_refused() {
        let c = Config::try_parse_from(["x", "--duration", "0"]).expect("parses");
        assert!(c.validate().is_err());
        let c = Config::try_parse_from(["x", "--url", "http://h/ws"]).expect("parses");
        assert!(c.validate().is_err());
        let c = Config::try_parse_from(["x", "--publishers", "0"]).expect("parses");
        assert!(c.validate().is_err());
    }

    #[test]
    fn downlink_caps_the_first_subscribers_of_a_room() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["x"];
            args.extend_from_slice(extra);
            Config::try_parse_from(args).expect("parses")
        };
        let none = parse(&[]);
        assert!(!none.capped(0));
        let all = parse(&["--downlink-kbps", "400"]);
        assert!(all.capped(0) && all.capped(9));
        assert!(all.validate().is_ok());
        let two = parse(&["--downlink-kbps", "400", "--capped-subscribers", "2"]);
        assert!(two.capped(1) && !two.capped(2));
        assert!(parse(&["--downlink-kbps", "0"]).validate().is_err());
        assert!(parse(&["--capped-subscribers", "2"]).validate().is_err());
        assert!(
            parse(&["--downlink-kbps", "400", "--downlink-queue-ms", "0"])
                .validate()
                .is_err()
        );
    }

    #[test]
    fn churn_runs_only_against_loopback() {
        let churn = |extra: &[&str]| {
            let mut args = vec!["x", "--churn", "2"];
            args.extend_from_slice(extra);
            Config::try_parse_from(args).expect("parses").validate()
        };
        assert!(churn(&[]).is_ok());
        assert!(churn(&["--url", "ws://localhost:3000/ws"]).is_ok());
        assert!(churn(&["--url", "ws://[::1]:3000/ws"]).is_ok());
        assert!(churn(&["--url", "ws://192.0.2.1:3000/ws"]).is_err());
        assert!(churn(&["--url", "wss://sfu.example.com/ws"]).is_err());
        assert!(churn(&["--find-capacity"]).is_err());
        assert!(churn(&["--churn-drop", "1.5"]).is_err());
        assert!(churn(&["--churn-lifetime", "0"]).is_err());
        // Without churn, any host goes.
        let c = Config::try_parse_from(["x", "--url", "ws://192.0.2.1:3000/ws"]).expect("parses");
        assert!(!c.churning() && c.validate().is_ok());
    }

    #[test]
    fn help_documents_the_scenarios() {
        let help = <Config as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        for flag in [
            "--find-capacity",
            "--simulcast",
            "--video-kbps",
            "--churn",
            "--churn-drop",
            "--no-twcc",
            "--downlink-kbps",
            "--capped-subscribers",
            "CHURN",
            "SCENARIOS",
            "EXAMPLES",
        ] {
            assert!(help.contains(flag), "help lacks {flag}");
        }
    }
}
