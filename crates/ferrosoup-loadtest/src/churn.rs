//! `--churn`: peers that join and leave while the steady peers' media flows, and the
//! server's memory and object counts before, during and after them.
//!
//! The churn starts a peer every `1 / --churn` seconds until the window ends. Peer
//! `n` is, in turn, a publisher, a subscriber and a peer that does both (`n % 3`), in room
//! `(n / 3) % --rooms`, so each room sees a publisher come with subscribers that consume it.
//! It joins through the same code as the steady peers, stays `--churn-lifetime` seconds
//! with its media flowing, and leaves: abruptly (WebSocket and UDP dropped without a word,
//! so the server's resume grace period runs out) for a `--churn-drop` share of the peers,
//! spread evenly, and otherwise with `leaveRoom` and a close frame.
//!
//! The server's object counts ([`ObjectCounts`], from `GET /api/stats`) and RSS are taken
//! before the churn starts, followed to their peak, and taken again once every churn peer
//! has left and the counts are back at the baseline (or `--churn-settle` ran out): a
//! [`ChurnReport`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cpu::ProcSample;
use crate::scenario::{Ctx, Owned, PeerSpec, join};
use crate::signal::http_get_json;

/// Largest relative difference from the baseline that still counts as back to it.
pub const TOLERANCE: f64 = 0.05;
/// Interval of the points of [`ChurnReport::rss_timeline`].
pub const TIMELINE_EVERY: Duration = Duration::from_secs(10);

/// Object counts of each worker in `GET /api/stats` (the gauges of `/metrics`).
const WORKER_OBJECTS: [&str; 4] = ["routers", "transports", "producers", "consumers"];

/// Every object count the server exposes, by name, in a fixed order: rooms, peers and the
/// peers' transports, producers and consumers as the signaling layer lists them, then each
/// worker's routers, transports, producers and consumers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ObjectCounts(pub Vec<(String, u64)>);

impl ObjectCounts {
    /// Reads the counts out of a `GET /api/stats` document (`None` if it lacks them).
    pub fn from_stats(stats: &Value) -> Option<Self> {
        let rooms = stats["rooms"].as_array()?;
        let workers = stats["workers"].as_array()?;
        let peers: Vec<&Value> = rooms
            .iter()
            .flat_map(|r| r["peers"].as_array().into_iter().flatten())
            .collect();
        let mut counts = vec![
            ("rooms".to_owned(), rooms.len() as u64),
            ("peers".to_owned(), peers.len() as u64),
        ];
        for what in ["transports", "producers", "consumers"] {
            let n = peers
                .iter()
                .map(|p| p[what].as_array().map_or(0, Vec::len) as u64)
                .sum();
            counts.push((format!("peers' {what}"), n));
        }
        for (i, w) in workers.iter().enumerate() {
            let index = w["worker"].as_u64().unwrap_or(i as u64);
            for what in WORKER_OBJECTS {
                counts.push((format!("worker {index} {what}"), w[what].as_u64()?));
            }
        }
        Some(Self(counts))
    }

    /// The count named `name`.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.iter().find(|(n, _)| n == name).map(|&(_, v)| v)
    }
}

/// One reading of the server's `GET /api/stats`: its object counts and its heap in use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Every object count.
    pub counts: ObjectCounts,
    /// Bytes of heap in use, as the server's allocator counts them (`memory.allocated`;
    /// `None` from a server that does not report it).
    pub heap_bytes: Option<u64>,
}

impl ServerStats {
    /// Reads the figures out of a `GET /api/stats` document (`None` if it lacks the counts).
    pub fn from_stats(stats: &Value) -> Option<Self> {
        Some(Self {
            counts: ObjectCounts::from_stats(stats)?,
            heap_bytes: stats["memory"]["allocated"].as_u64(),
        })
    }

    /// Fetches the server's figures (`None` when `/api/stats` does not answer with them).
    pub async fn fetch(host: &str, port: u16, admin_key: Option<&str>) -> Option<Self> {
        let stats = http_get_json(host, port, "/api/stats", admin_key).await?;
        Self::from_stats(&stats)
    }
}

/// One figure at the baseline, at its peak and at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Levels {
    /// Before the churn started.
    pub baseline: u64,
    /// Largest sample from the baseline to the end.
    pub peak: u64,
    /// After every churn peer left and the server let go of it.
    pub end: u64,
}

impl Levels {
    /// Whether the end is within [`TOLERANCE`] of the baseline (exactly it when the baseline
    /// is zero).
    pub fn back_to_baseline(&self) -> bool {
        (self.end as f64 - self.baseline as f64).abs() <= TOLERANCE * self.baseline as f64
    }
}

/// [`Levels`] of one object count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CountLevels {
    /// Name of the count (see [`ObjectCounts`]).
    pub name: String,
    /// Its levels.
    #[serde(flatten)]
    pub levels: Levels,
}

/// What the churn peers did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Churn peers started.
    pub started: usize,
    /// Churn peers that joined and set up all their media.
    pub joined: usize,
    /// Churn peers whose join failed or timed out (they are dropped like an abrupt leave).
    pub join_failures: usize,
    /// Churn peers that left with `leaveRoom` and a close frame.
    pub left: usize,
    /// Churn peers that left by dropping their WebSocket and UDP.
    pub dropped: usize,
    /// Churn peers whose WebSocket the server closed before they left.
    pub lost: usize,
    /// `leaveRoom` requests that failed (the peer then dropped its connection).
    pub leave_failures: usize,
    /// Consumers the churn peers created.
    pub consumers: usize,
    /// Producers churn subscribers did not consume because they closed first.
    pub producers_gone: usize,
}

/// How one churn peer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    JoinFailed,
    Left,
    LeaveFailed,
    Dropped,
    Lost,
}

/// One churn peer's outcome.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    ending: Ending,
    consumers: usize,
    producers_gone: usize,
}

impl Tally {
    fn add(&mut self, o: Outcome) {
        if o.ending == Ending::JoinFailed {
            self.join_failures += 1;
        } else {
            self.joined += 1;
        }
        match o.ending {
            Ending::JoinFailed => {}
            Ending::Left => self.left += 1,
            Ending::LeaveFailed => self.leave_failures += 1,
            Ending::Dropped => self.dropped += 1,
            Ending::Lost => self.lost += 1,
        }
        self.consumers += o.consumers;
        self.producers_gone += o.producers_gone;
    }
}

/// Whether churn peer `n` leaves abruptly: `share` of the peers, spread evenly (with 0.5
/// every second one).
pub fn leaves_abruptly(n: u64, share: f64) -> bool {
    ((n + 1) as f64 * share).floor() > (n as f64 * share).floor()
}

/// What churn peer `n` does: publishes, subscribes, or both, in turn.
pub fn roles(n: u64) -> (bool, bool) {
    match n % 3 {
        0 => (true, false),
        1 => (false, true),
        _ => (true, true),
    }
}

/// Starts a churn peer every `1 / --churn` seconds from now until `until` (peer indices
/// from `first_index` on); at `until`, peers still there leave at once. Returns when every
/// churn peer has left.
pub(crate) async fn drive(ctx: Arc<Ctx>, first_index: u32, until: Instant) -> Tally {
    let period = Duration::from_secs_f64(1.0 / ctx.cfg.churn);
    let (leave_tx, leave_rx) = watch::channel(false);
    let mut peers = JoinSet::new();
    let mut tally = Tally::default();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    loop {
        let at = tick.tick().await;
        if at.into_std() >= until {
            break;
        }
        let (publishes, subscribes) = roles(n);
        let spec = PeerSpec {
            index: first_index.wrapping_add(n as u32),
            room: (n / 3) as usize % ctx.cfg.rooms,
            publishes,
            subscribes,
            churn: true,
            full_verify: false,
            capped: false,
            stalled: false,
        };
        let abrupt = leaves_abruptly(n, ctx.cfg.churn_drop);
        peers.spawn(churn_peer(ctx.clone(), spec, abrupt, leave_rx.clone()));
        tally.started += 1;
        n += 1;
        while let Some(done) = peers.try_join_next() {
            if let Ok(outcome) = done {
                tally.add(outcome);
            }
        }
    }
    let _ = leave_tx.send(true);
    while let Some(done) = peers.join_next().await {
        if let Ok(outcome) = done {
            tally.add(outcome);
        }
    }
    tally
}

/// One churn peer: joins, stays its lifetime (or until `leave`), leaves.
async fn churn_peer(
    ctx: Arc<Ctx>,
    spec: PeerSpec,
    abrupt: bool,
    mut leave: watch::Receiver<bool>,
) -> Outcome {
    let mut owned = Owned::default();
    let timeout = Duration::from_secs_f64(ctx.cfg.join_timeout);
    let joined = match tokio::time::timeout(timeout, join(&ctx, spec, &mut owned)).await {
        Ok(Ok(joined)) => joined,
        failed => {
            if let Ok(Err(e)) = failed {
                tracing::warn!("churn peer {} failed to join: {e:#}", spec.index);
            } else {
                tracing::warn!("churn peer {} timed out joining", spec.index);
            }
            owned.release(&ctx);
            return Outcome {
                ending: Ending::JoinFailed,
                consumers: 0,
                producers_gone: 0,
            };
        }
    };
    let (consumers, producers_gone) = (joined.consumers, joined.producers_gone);
    let mut signal = joined.signal;
    let lifetime = Duration::from_secs_f64(ctx.cfg.churn_lifetime);
    let stayed = signal
        .serve_until(async move {
            tokio::select! {
                () = tokio::time::sleep(lifetime) => {}
                _ = leave.wait_for(|l| *l) => {}
            }
        })
        .await;
    let ending = if !stayed {
        owned.release(&ctx);
        Ending::Lost
    } else if abrupt {
        // No leaveRoom, no close frame, no more UDP: the server finds out by itself.
        owned.release(&ctx);
        drop(signal);
        Ending::Dropped
    } else {
        // Its producers go from the registry first, so no newcomer tries to consume them.
        owned.forget_producers(&ctx);
        match signal.request("leaveRoom", json!({})).await {
            Ok(_) => {
                signal.close().await;
                owned.release(&ctx);
                Ending::Left
            }
            Err(e) => {
                tracing::warn!("churn peer {}: leaveRoom failed: {e}", spec.index);
                owned.release(&ctx);
                Ending::LeaveFailed
            }
        }
    };
    Outcome {
        ending,
        consumers,
        producers_gone,
    }
}

/// Follows the server's RSS and object counts from the baseline to their peaks.
#[derive(Debug, Clone)]
pub struct Watcher {
    /// When the baseline was taken.
    since: Instant,
    baseline: ObjectCounts,
    peak: ObjectCounts,
    /// `VmRSS` at the baseline and its peak.
    rss: Option<(u64, u64)>,
    /// `RssAnon` at the baseline and its peak.
    anon: Option<(u64, u64)>,
    /// Heap in use at the baseline and its peak.
    heap: Option<(u64, u64)>,
    timeline: Vec<RssPoint>,
}

/// Keeps the larger of a peak and a sample.
fn raise(peak: &mut Option<(u64, u64)>, sample: Option<u64>) {
    if let (Some((_, peak)), Some(v)) = (peak.as_mut(), sample) {
        *peak = (*peak).max(v);
    }
}

impl Watcher {
    /// Starts from the baseline figures and a sample of the server process, taken `now`.
    pub fn new(now: Instant, baseline: ServerStats, process: Option<ProcSample>) -> Self {
        Self {
            since: now,
            peak: baseline.counts.clone(),
            heap: baseline.heap_bytes.map(|h| (h, h)),
            baseline: baseline.counts,
            rss: process.map(|p| (p.rss_bytes, p.rss_bytes)),
            anon: process.and_then(|p| p.rss_anon_bytes.map(|a| (a, a))),
            timeline: process
                .map(|p| RssPoint::new(Duration::ZERO, &p))
                .into_iter()
                .collect(),
        }
    }

    /// The baseline counts.
    pub fn baseline(&self) -> &ObjectCounts {
        &self.baseline
    }

    /// Takes one sample of the figures into the peaks (a count not in the baseline, e.g. of
    /// a worker that restarted, is followed from a baseline of zero).
    pub fn observe(&mut self, stats: &ServerStats) {
        raise(&mut self.heap, stats.heap_bytes);
        for (name, v) in &stats.counts.0 {
            match self.peak.0.iter_mut().find(|(n, _)| n == name) {
                Some((_, peak)) => *peak = (*peak).max(*v),
                None => self.peak.0.push((name.clone(), *v)),
            }
        }
    }

    /// Takes one sample of the server process, taken `now`, into the peaks and (every
    /// [`TIMELINE_EVERY`]) the timeline.
    pub fn observe_process(&mut self, now: Instant, p: &ProcSample) {
        let at = now.saturating_duration_since(self.since);
        raise(&mut self.rss, Some(p.rss_bytes));
        raise(&mut self.anon, p.rss_anon_bytes);
        let due = self
            .timeline
            .last()
            .is_none_or(|last| at.as_secs_f64() >= last.at_s + TIMELINE_EVERY.as_secs_f64());
        if due {
            self.timeline.push(RssPoint::new(at, p));
        }
    }

    /// The report, from the end figures and a last sample of the server process, taken
    /// `now`, `settle` after the last churn peer left.
    pub fn report(
        mut self,
        cfg: &crate::Config,
        tally: Tally,
        end_stats: &ServerStats,
        (now, end_process): (Instant, Option<ProcSample>),
        settle: Duration,
    ) -> ChurnReport {
        self.observe(end_stats);
        let end = &end_stats.counts;
        if let Some(p) = &end_process {
            raise(&mut self.rss, Some(p.rss_bytes));
            raise(&mut self.anon, p.rss_anon_bytes);
            let at = now.saturating_duration_since(self.since);
            self.timeline.push(RssPoint::new(at, p));
        }
        let objects: Vec<CountLevels> = self
            .peak
            .0
            .iter()
            .map(|(name, peak)| CountLevels {
                name: name.clone(),
                levels: Levels {
                    baseline: self.baseline.get(name).unwrap_or(0),
                    peak: *peak,
                    end: end.get(name).unwrap_or(0),
                },
            })
            .collect();
        let levels = |follow: Option<(u64, u64)>, end: Option<u64>| {
            let ((baseline, peak), end) = (follow?, end?);
            Some(Levels {
                baseline,
                peak,
                end,
            })
        };
        let rss_bytes = levels(self.rss, end_process.map(|p| p.rss_bytes));
        let rss_anon_bytes = levels(self.anon, end_process.and_then(|p| p.rss_anon_bytes));
        let heap_bytes = levels(self.heap, end_stats.heap_bytes);
        let back_to_baseline = objects.iter().all(|c| c.levels.back_to_baseline())
            && rss_bytes.is_none_or(|r| r.back_to_baseline())
            && heap_bytes.is_none_or(|h| h.back_to_baseline());
        ChurnReport {
            joins_per_second: cfg.churn,
            lifetime_s: cfg.churn_lifetime,
            drop_share: cfg.churn_drop,
            warmup_peers: 0,
            tally,
            settle_s: settle.as_secs_f64(),
            rss_bytes,
            rss_anon_bytes,
            heap_bytes,
            rss_timeline: self.timeline,
            objects,
            back_to_baseline,
        }
    }
}

/// One point of the server's memory over the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RssPoint {
    /// Seconds after the baseline.
    pub at_s: f64,
    /// `VmRSS`.
    pub rss_bytes: u64,
    /// `RssAnon`, when the kernel reports it.
    pub rss_anon_bytes: Option<u64>,
}

impl RssPoint {
    fn new(at: Duration, p: &ProcSample) -> Self {
        Self {
            at_s: at.as_secs_f64(),
            rss_bytes: p.rss_bytes,
            rss_anon_bytes: p.rss_anon_bytes,
        }
    }
}

/// The churn part of a run's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChurnReport {
    /// Churn peers started per second (`--churn`).
    pub joins_per_second: f64,
    /// Seconds each stayed (`--churn-lifetime`).
    pub lifetime_s: f64,
    /// Share of them that left abruptly (`--churn-drop`).
    pub drop_share: f64,
    /// Churn peers that joined and left before the baseline (`--churn-warmup`).
    pub warmup_peers: usize,
    /// What the churn peers did.
    #[serde(flatten)]
    pub tally: Tally,
    /// Seconds from the last churn peer's leave until the object counts were back at the
    /// baseline (or `--churn-settle` ran out).
    pub settle_s: f64,
    /// The server's RSS, `VmRSS` (when it runs on this machine): what the verdict compares.
    pub rss_bytes: Option<Levels>,
    /// Its anonymous part, `RssAnon`: RSS without the pages of the binary and libraries,
    /// which grow as code runs for the first time (leaving, grace expiry) and stay.
    pub rss_anon_bytes: Option<Levels>,
    /// The server's heap in use, as its allocator counts it (`memory.allocated` of
    /// `/api/stats`, when the server reports it): what the program holds, without the pages
    /// the allocator keeps for reuse.
    pub heap_bytes: Option<Levels>,
    /// RSS every [`TIMELINE_EVERY`] from the baseline, and at the end: a leak climbs,
    /// memory the allocator keeps for reuse stays level.
    pub rss_timeline: Vec<RssPoint>,
    /// Every object count of the server.
    pub objects: Vec<CountLevels>,
    /// RSS, the heap in use and every object count ended within [`TOLERANCE`] of the
    /// baseline.
    pub back_to_baseline: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn stats(peers: usize, transports: u64) -> Value {
        stats_with_heap(peers, transports, 1000)
    }

    fn stats_with_heap(peers: usize, transports: u64, heap: u64) -> Value {
        let peer = json!({"peerId": "p", "transports": ["t1", "t2"], "producers": [{"id": "a"}],
            "consumers": []});
        json!({
            "workers": [
                {"worker": 0, "routers": 1, "transports": transports, "producers": 1,
                    "consumers": 0, "datagrams_in": 99},
                {"worker": 1, "routers": 0, "transports": 0, "producers": 0, "consumers": 0},
            ],
            "rooms": [{"roomId": "r", "peers": vec![peer; peers]}],
            "memory": {"allocated": heap, "resident": 2 * heap},
        })
    }

    #[test]
    fn counts_are_read_from_api_stats() {
        let counts = ObjectCounts::from_stats(&stats(2, 4)).expect("counts");
        assert_eq!(counts.get("rooms"), Some(1));
        assert_eq!(counts.get("peers"), Some(2));
        assert_eq!(counts.get("peers' transports"), Some(4));
        assert_eq!(counts.get("peers' producers"), Some(2));
        assert_eq!(counts.get("peers' consumers"), Some(0));
        assert_eq!(counts.get("worker 0 transports"), Some(4));
        assert_eq!(counts.get("worker 1 routers"), Some(0));
        // Cumulative counters are no object counts.
        assert_eq!(counts.get("worker 0 datagrams_in"), None);
        assert_eq!(counts.0.len(), 5 + 2 * WORKER_OBJECTS.len());
        assert!(ObjectCounts::from_stats(&json!({"workers": []})).is_none());
        let server = ServerStats::from_stats(&stats(2, 4)).expect("stats");
        assert_eq!((server.counts, server.heap_bytes), (counts, Some(1000)));
        // A server that does not report its heap: counts only.
        let mut old = stats(2, 4);
        old.as_object_mut().expect("object").remove("memory");
        assert_eq!(
            ServerStats::from_stats(&old).expect("stats").heap_bytes,
            None
        );
    }

    #[test]
    fn tolerance_is_five_percent_and_exact_at_zero() {
        let l = |baseline, end| Levels {
            baseline,
            peak: baseline.max(end),
            end,
        };
        assert!(l(100, 105).back_to_baseline());
        assert!(l(100, 95).back_to_baseline());
        assert!(!l(100, 106).back_to_baseline());
        assert!(!l(100, 94).back_to_baseline());
        assert!(l(0, 0).back_to_baseline());
        assert!(!l(0, 1).back_to_baseline());
    }

    #[test]
    fn abrupt_leaves_are_spread_by_share() {
        let abrupt = |share| {
            (0..12)
                .map(|n| leaves_abruptly(n, share))
                .collect::<Vec<_>>()
        };
        assert!(abrupt(0.0).iter().all(|a| !a));
        assert!(abrupt(1.0).iter().all(|a| *a));
        assert_eq!(abrupt(0.5), [false, true].repeat(6));
        assert_eq!(abrupt(0.25).iter().filter(|a| **a).count(), 3);
        assert_eq!(
            (0..6).map(roles).collect::<Vec<_>>(),
            [(true, false), (false, true), (true, true)].repeat(2)
        );
    }

    fn process(rss_mib: u64) -> ProcSample {
        ProcSample {
            cpu: Duration::ZERO,
            rss_bytes: rss_mib << 20,
            rss_anon_bytes: Some((rss_mib / 2) << 20),
            run_delay: Duration::ZERO,
        }
    }

    #[test]
    fn report_compares_the_end_with_the_baseline() {
        let cfg = crate::Config::parse_from(["x", "--churn", "2"]);
        let server = |peers, transports, heap| {
            ServerStats::from_stats(&stats_with_heap(peers, transports, heap)).expect("stats")
        };
        let base = server(2, 4, 1000);
        let t0 = Instant::now();
        let mut w = Watcher::new(t0, base.clone(), Some(process(100)));
        w.observe(&server(5, 10, 3000));
        for s in 1..=25 {
            w.observe_process(t0 + Duration::from_secs(s), &process(100 + s));
        }
        let end = |rss| (t0 + Duration::from_secs(30), Some(process(rss)));
        let r = w.clone().report(
            &cfg,
            Tally::default(),
            &base,
            end(104),
            Duration::from_secs(3),
        );
        assert!(r.back_to_baseline);
        assert_eq!(
            r.rss_anon_bytes,
            Some(Levels {
                baseline: 50 << 20,
                peak: 62 << 20,
                end: 52 << 20
            })
        );
        // The baseline, every 10 s, the end.
        let at: Vec<f64> = r.rss_timeline.iter().map(|p| p.at_s).collect();
        assert_eq!(at, [0.0, 10.0, 20.0, 30.0]);
        let peers = r.objects.iter().find(|c| c.name == "peers").expect("peers");
        assert_eq!(
            peers.levels,
            Levels {
                baseline: 2,
                peak: 5,
                end: 2
            }
        );
        assert_eq!(r.rss_bytes.map(|l| l.peak), Some(125 << 20));
        // One transport left over: not back.
        let r = w.clone().report(
            &cfg,
            Tally::default(),
            &server(2, 5, 1000),
            end(100),
            Duration::ZERO,
        );
        assert!(!r.back_to_baseline);
        // RSS 10 % up: not back either.
        let r = w
            .clone()
            .report(&cfg, Tally::default(), &base, end(110), Duration::ZERO);
        assert!(!r.back_to_baseline);
        // The heap in use 10 % up: not back.
        let r = w.clone().report(
            &cfg,
            Tally::default(),
            &server(2, 4, 1100),
            end(100),
            Duration::ZERO,
        );
        assert!(!r.back_to_baseline);
        assert_eq!(
            r.heap_bytes,
            Some(Levels {
                baseline: 1000,
                peak: 3000,
                end: 1100
            })
        );
        let r = w.report(&cfg, Tally::default(), &base, end(110), Duration::ZERO);
        let json = serde_json::to_value(&r).expect("serializes");
        assert_eq!(json["objects"][1]["name"], "peers");
        assert_eq!(json["objects"][1]["baseline"], 2);
        assert!(json.get("joined").is_some());
    }
}
