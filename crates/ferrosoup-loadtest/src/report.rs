//! The results of a run: built from what the media loop measured, printed as a table and
//! written as JSON.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::churn::ChurnReport;
use crate::media::{ConsumerResult, Kind, MediaReport, TransportResult};
use crate::stats::quantile;

/// Results of one run. Ratios are 0..1; `None` (JSON `null`) means "not measured".
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// WebSocket URL of the server whose CPU, memory and stats are shown (the first).
    pub url: String,
    /// Every server the peers joined through, spread as `spread` says.
    pub urls: Vec<String>,
    /// How the peers were spread over `urls` (`peers` or `rooms`).
    pub spread: String,
    /// Rooms simulated.
    pub rooms: usize,
    /// Publishers per room.
    pub publishers: usize,
    /// Subscribers per room.
    pub subscribers: usize,
    /// Video bitrate per publisher (0: audio only).
    pub video_kbps: u32,
    /// Simulcast video.
    pub simulcast: bool,
    /// Length of the measurement window in seconds.
    pub duration_s: f64,
    /// Peers that joined and set up all their media.
    pub peers_joined: usize,
    /// Peers that failed to join.
    pub peers_failed: usize,
    /// Consumers created on the server.
    pub consumers: usize,
    /// Join time (WebSocket open → first media packet received) of subscribers, median.
    pub join_ms_p50: Option<f64>,
    /// Join time, 95th percentile.
    pub join_ms_p95: Option<f64>,
    /// Join time, slowest.
    pub join_ms_max: Option<f64>,
    /// Packets the SFU should have delivered in the window (sum over consumers).
    pub packets_expected: u64,
    /// Distinct packets of the window delivered to consumers.
    pub packets_delivered: u64,
    /// `packets_delivered / packets_expected`.
    pub delivery_ratio: f64,
    /// Delivery ratio of audio consumers.
    pub delivery_ratio_audio: Option<f64>,
    /// Delivery ratio of video consumers.
    pub delivery_ratio_video: Option<f64>,
    /// Lowest delivery ratio of a single consumer.
    pub consumer_delivery_min: Option<f64>,
    /// 5th percentile of the consumers' delivery ratios.
    pub consumer_delivery_p5: Option<f64>,
    /// Video packets of the window received per simulcast layer (r0, r1, r2); only the
    /// first entry is used without simulcast.
    pub video_layer_packets: [u64; 3],
    /// Packet loss seen in the SFU's outgoing sequence numbers (missing ÷ span).
    pub loss_ratio: f64,
    /// One-way latency through the SFU, median (ms): from the send time in the payload to
    /// the kernel's arrival stamp on the subscriber's socket (where the platform gives one).
    pub latency_p50_ms: Option<f64>,
    /// 95th percentile (ms).
    pub latency_p95_ms: Option<f64>,
    /// 99th percentile (ms).
    pub latency_p99_ms: Option<f64>,
    /// Largest (ms).
    pub latency_max_ms: Option<f64>,
    /// Latency samples.
    pub latency_samples: u64,
    /// One-way latency up to the moment the load tester's media loop read the packet,
    /// 99th percentile (ms): `latency_p99_ms` plus the load tester's own queueing.
    pub latency_app_p99_ms: Option<f64>,
    /// Sequence numbers subscribers asked for in NACKs.
    pub nacks_sent: u64,
    /// Sequence numbers the server asked publishers for in NACKs.
    pub nacks_received: u64,
    /// PLIs/FIRs the server sent to publishers.
    pub plis_received: u64,
    /// Packets publishers retransmitted.
    pub retransmissions_sent: u64,
    /// RTX packets subscribers received.
    pub retransmissions_received: u64,
    /// Key frames sent.
    pub keyframes_sent: u64,
    /// RTP packets sent by publishers.
    pub packets_sent: u64,
    /// RTP packets received by subscribers.
    pub packets_received: u64,
    /// RTP bytes sent by publishers (SRTP-protected).
    pub bytes_sent: u64,
    /// Bytes received by subscribers.
    pub bytes_received: u64,
    /// SRTP/SRTCP packets that failed authentication or decryption.
    pub srtp_failures: u64,
    /// SRTP/SRTCP packets verified.
    pub srtp_verified: u64,
    /// Payloads checked byte for byte.
    pub payloads_checked: u64,
    /// Payloads with a missing trailer, wrong stream or wrong content.
    pub payload_errors: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// Pacing timers that fired over 200 ms late (load tester overloaded).
    pub late_timers: u64,
    /// Datagrams the load tester could not send.
    pub send_errors: u64,
    /// Server pid sampled, when local.
    pub server_pid: Option<u32>,
    /// Server CPU over the window, percent of one core.
    pub server_cpu_percent: Option<f64>,
    /// Server resident memory, largest sample.
    pub server_rss_bytes: Option<u64>,
    /// Time the server's threads were runnable but waited for a CPU, percent of the window
    /// (summed over threads): high values mean other processes compete for its core.
    pub server_cpu_wait_percent: Option<f64>,
    /// Server worker threads (from `/api/stats`).
    pub server_workers: Option<usize>,
    /// CPU of the load tester's media thread over the window, percent of one core.
    pub loadtest_media_cpu_percent: f64,
    /// CPU of the whole load tester process over the window, percent of one core.
    pub loadtest_cpu_percent: f64,
    /// Time the media thread was runnable but waited for a CPU, percent of the window.
    pub loadtest_media_cpu_wait_percent: f64,
    /// 99th percentile of the time the media loop spent per wake-up (ms); packets arriving
    /// meanwhile wait, so this is the load tester's own share of the latency.
    pub loadtest_busy_p99_ms: Option<f64>,
    /// Longest time the media loop spent per wake-up (ms).
    pub loadtest_busy_max_ms: Option<f64>,
    /// Subscribers negotiated transport-cc and sent feedback (not `--no-twcc`).
    pub twcc: bool,
    /// Transport-cc feedback packets subscribers sent.
    pub twcc_feedbacks_sent: u64,
    /// Padding-only packets (probes of the server's estimation) subscribers received.
    pub padding_received: u64,
    /// Subscribers behind the capped link of `--downlink-kbps`: layers and bitrates.
    pub capped_subscribers: Option<LinkGroup>,
    /// Subscribers without a cap: layers and bitrates.
    pub uncapped_subscribers: Option<LinkGroup>,
    /// Every subscriber: its link, received bitrate and the layers its video ended on.
    pub subscriber_results: Vec<SubscriberResult>,
    /// With `--churn`: the churn peers and the server's RSS and object counts at the
    /// baseline, their peak and the end. The figures above are the steady peers' only.
    pub churn: Option<ChurnReport>,
}

/// What the subscribers of one kind of link (capped or not) got in the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LinkGroup {
    /// Their downlink cap in kbit/s (`None`: uncapped).
    pub downlink_kbps: Option<u32>,
    /// Subscribers.
    pub subscribers: usize,
    /// Their video consumers by the layer they ended on (r0, r1, r2; one layer without
    /// simulcast): the layer of the newest packet received.
    pub video_end_layers: [u64; 3],
    /// Their video consumers that ended paused: no packet sent in the window's last second
    /// arrived.
    pub video_end_paused: u64,
    /// Bitrate a subscriber received (all its consumers, SRTP datagrams), kbit/s: lowest.
    pub received_kbps_min: Option<f64>,
    /// Median.
    pub received_kbps_p50: Option<f64>,
    /// Highest.
    pub received_kbps_max: Option<f64>,
    /// Datagrams their capped links queued.
    pub link_queued: u64,
    /// Datagrams their capped links dropped (queue full).
    pub link_dropped: u64,
}

/// One subscriber's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubscriberResult {
    /// Peer index.
    pub peer: u32,
    /// Behind the capped link.
    pub capped: bool,
    /// Bitrate received over the window (all consumers, SRTP datagrams), kbit/s.
    pub received_kbps: f64,
    /// Per video consumer, the layer it ended on (`null`: paused).
    pub video_end_layers: Vec<Option<u8>>,
}

/// Run parameters and measurements that do not come from the media loop.
#[derive(Debug, Clone)]
pub struct RunFacts {
    /// Server URLs, the first the one whose CPU, memory and stats are read.
    pub urls: Vec<String>,
    /// How peers were spread over them.
    pub spread: crate::config::Spread,
    /// Rooms.
    pub rooms: usize,
    /// Publishers per room.
    pub publishers: usize,
    /// Subscribers per room.
    pub subscribers: usize,
    /// Video bitrate.
    pub video_kbps: u32,
    /// Simulcast.
    pub simulcast: bool,
    /// Window length.
    pub duration: Duration,
    /// Peers joined.
    pub peers_joined: usize,
    /// Indices of the peers that failed to join; their transports and consumers are left
    /// out of the figures.
    pub failed_peers: Vec<u32>,
    /// Consumers created by the peers that joined.
    pub consumers: usize,
    /// Server pid.
    pub server_pid: Option<u32>,
    /// Server CPU percent.
    pub server_cpu_percent: Option<f64>,
    /// Server RSS.
    pub server_rss_bytes: Option<u64>,
    /// Server run-queue wait percent.
    pub server_cpu_wait_percent: Option<f64>,
    /// Server workers.
    pub server_workers: Option<usize>,
    /// Process CPU percent of the load tester.
    pub loadtest_cpu_percent: f64,
    /// Subscribers negotiated transport-cc.
    pub twcc: bool,
    /// The cap of capped subscribers, kbit/s.
    pub downlink_kbps: Option<u32>,
    /// Churn results.
    pub churn: Option<ChurnReport>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| (num as f64 / den as f64).min(1.0))
}

/// Per subscriber: its received bitrate and end layers, from its consumers.
fn subscriber_results(
    transports: &[&TransportResult],
    consumers: &[&ConsumerResult],
    window: Duration,
) -> Vec<SubscriberResult> {
    let secs = window.as_secs_f64().max(1e-9);
    transports
        .iter()
        .filter(|t| t.subscriber)
        .map(|t| {
            let mine = consumers.iter().filter(|c| c.peer == t.peer);
            let bytes: u64 = mine.clone().map(|c| c.bytes).sum();
            SubscriberResult {
                peer: t.peer,
                capped: t.downlink.is_some(),
                received_kbps: bytes as f64 * 8.0 / secs / 1000.0,
                video_end_layers: mine
                    .filter(|c| c.kind == Kind::Video)
                    .map(|c| c.end_layer)
                    .collect(),
            }
        })
        .collect()
}

/// Sums up the subscribers with (or without) a capped link.
fn link_group(
    results: &[SubscriberResult],
    transports: &[&TransportResult],
    capped: bool,
    downlink_kbps: Option<u32>,
) -> Option<LinkGroup> {
    let members: Vec<&SubscriberResult> = results.iter().filter(|r| r.capped == capped).collect();
    if members.is_empty() {
        return None;
    }
    let mut group = LinkGroup {
        downlink_kbps: downlink_kbps.filter(|_| capped),
        subscribers: members.len(),
        ..LinkGroup::default()
    };
    for layer in members.iter().flat_map(|r| &r.video_end_layers) {
        match layer {
            Some(l) => group.video_end_layers[usize::from(*l).min(2)] += 1,
            None => group.video_end_paused += 1,
        }
    }
    let kbps: Vec<f64> = members.iter().map(|r| r.received_kbps).collect();
    group.received_kbps_min = quantile(&kbps, 0.0);
    group.received_kbps_p50 = quantile(&kbps, 0.5);
    group.received_kbps_max = quantile(&kbps, 1.0);
    for link in transports
        .iter()
        .filter(|t| t.subscriber)
        .filter_map(|t| t.downlink)
    {
        if capped {
            group.link_queued += link.queued;
            group.link_dropped += link.dropped;
        }
    }
    Some(group)
}

impl Report {
    /// Combines the media loop's measurements with the run facts.
    pub fn build(facts: RunFacts, media: &MediaReport) -> Self {
        let joined = |peer: u32| !facts.failed_peers.contains(&peer);
        let consumers: Vec<_> = media.consumers.iter().filter(|c| joined(c.peer)).collect();
        let transports: Vec<_> = media.transports.iter().filter(|t| joined(t.peer)).collect();
        let joins: Vec<f64> = {
            let subs: Vec<f64> = transports
                .iter()
                .filter(|t| t.subscriber)
                .filter_map(|t| t.join.map(ms))
                .collect();
            if subs.is_empty() {
                media
                    .transports
                    .iter()
                    .filter_map(|t| t.join.map(ms))
                    .collect()
            } else {
                subs
            }
        };
        let sum = |kind: Option<Kind>| {
            consumers
                .iter()
                .filter(|c| kind.is_none_or(|k| c.kind == k))
                .fold((0, 0), |(r, e), c| {
                    (r + c.received.min(c.expected), e + c.expected)
                })
        };
        let (delivered, expected) = sum(None);
        let (audio_r, audio_e) = sum(Some(Kind::Audio));
        let (video_r, video_e) = sum(Some(Kind::Video));
        let per_consumer: Vec<f64> = consumers
            .iter()
            .filter_map(|c| ratio(c.received, c.expected))
            .collect();
        let (seen, span) = media.consumers.iter().fold((0, 0), |(r, s), c| {
            (r + c.received.min(c.seq_span), s + c.seq_span)
        });
        let subscribers = subscriber_results(&transports, &consumers, facts.duration);
        let q = |x: f64| media.latency.quantile_us(x).map(|us| us as f64 / 1000.0);
        let c = &media.counters;
        let share = |d: Duration| {
            if media.wall.is_zero() {
                0.0
            } else {
                d.as_secs_f64() / media.wall.as_secs_f64() * 100.0
            }
        };
        Self {
            url: facts.urls.first().cloned().unwrap_or_default(),
            spread: format!("{:?}", facts.spread).to_lowercase(),
            urls: facts.urls,
            rooms: facts.rooms,
            publishers: facts.publishers,
            subscribers: facts.subscribers,
            video_kbps: facts.video_kbps,
            simulcast: facts.simulcast,
            duration_s: facts.duration.as_secs_f64(),
            peers_joined: facts.peers_joined,
            peers_failed: facts.failed_peers.len(),
            consumers: facts.consumers,
            join_ms_p50: quantile(&joins, 0.5),
            join_ms_p95: quantile(&joins, 0.95),
            join_ms_max: quantile(&joins, 1.0),
            packets_expected: expected,
            packets_delivered: delivered,
            delivery_ratio: ratio(delivered, expected).unwrap_or(0.0),
            delivery_ratio_audio: ratio(audio_r, audio_e),
            delivery_ratio_video: ratio(video_r, video_e),
            consumer_delivery_min: quantile(&per_consumer, 0.0),
            consumer_delivery_p5: quantile(&per_consumer, 0.05),
            video_layer_packets: consumers.iter().filter(|c| c.kind == Kind::Video).fold(
                [0; 3],
                |mut acc, c| {
                    for (a, n) in acc.iter_mut().zip(c.per_layer) {
                        *a += n;
                    }
                    acc
                },
            ),
            loss_ratio: ratio(span - seen, span).unwrap_or(0.0),
            latency_p50_ms: q(0.5),
            latency_p95_ms: q(0.95),
            latency_p99_ms: q(0.99),
            latency_max_ms: (media.latency.count() > 0)
                .then(|| media.latency.max_us() as f64 / 1000.0),
            latency_samples: media.latency.count(),
            latency_app_p99_ms: media
                .app_latency
                .quantile_us(0.99)
                .map(|us| us as f64 / 1000.0),
            nacks_sent: c.nacks_sent,
            nacks_received: c.nacks_received,
            plis_received: c.plis_received,
            retransmissions_sent: c.retransmissions_sent,
            retransmissions_received: c.retransmissions_received,
            keyframes_sent: c.keyframes_sent,
            packets_sent: c.packets_sent,
            packets_received: c.packets_received,
            bytes_sent: c.bytes_sent,
            bytes_received: c.bytes_received,
            srtp_failures: c.srtp_failures,
            srtp_verified: c.srtp_verified,
            payloads_checked: c.payloads_checked,
            payload_errors: c.payload_errors,
            duplicates: c.duplicates,
            late_timers: c.late_timers,
            send_errors: c.send_errors,
            server_pid: facts.server_pid,
            server_cpu_percent: facts.server_cpu_percent,
            server_rss_bytes: facts.server_rss_bytes,
            server_workers: facts.server_workers,
            loadtest_media_cpu_percent: share(media.cpu),
            loadtest_media_cpu_wait_percent: share(media.run_delay),
            server_cpu_wait_percent: facts.server_cpu_wait_percent,
            loadtest_cpu_percent: facts.loadtest_cpu_percent,
            loadtest_busy_p99_ms: media.busy.quantile_us(0.99).map(|us| us as f64 / 1000.0),
            loadtest_busy_max_ms: (media.busy.count() > 0)
                .then(|| media.busy.max_us() as f64 / 1000.0),
            twcc: facts.twcc,
            twcc_feedbacks_sent: c.twcc_feedbacks_sent,
            padding_received: c.padding_received,
            capped_subscribers: link_group(&subscribers, &transports, true, facts.downlink_kbps),
            uncapped_subscribers: link_group(&subscribers, &transports, false, None),
            subscriber_results: subscribers,
            churn: facts.churn,
        }
    }

    /// The human-readable summary table.
    pub fn table(&self) -> String {
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.2}{unit}"));
        let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.3} %", v * 100.0));
        let mut s = String::new();
        let mut row = |k: &str, v: String| {
            let _ = writeln!(s, "  {k:<28} {v}");
        };
        row(
            "scenario",
            format!(
                "{} room(s) x {} publisher(s) x {} subscriber(s), video {} kbit/s{}, {:.1} s",
                self.rooms,
                self.publishers,
                self.subscribers,
                self.video_kbps,
                if self.simulcast { " simulcast" } else { "" },
                self.duration_s
            ),
        );
        if self.urls.len() > 1 {
            row(
                "servers",
                format!("{} ({} spread)", self.urls.join(", "), self.spread),
            );
        }
        row(
            "peers joined / failed",
            format!("{} / {}", self.peers_joined, self.peers_failed),
        );
        row("consumers", self.consumers.to_string());
        row(
            "join ms p50 / p95 / max",
            format!(
                "{} / {} / {}",
                opt(self.join_ms_p50, ""),
                opt(self.join_ms_p95, ""),
                opt(self.join_ms_max, "")
            ),
        );
        row(
            "delivery (all/audio/video)",
            format!(
                "{} / {} / {}",
                pct(Some(self.delivery_ratio)),
                pct(self.delivery_ratio_audio),
                pct(self.delivery_ratio_video)
            ),
        );
        row(
            "per-consumer delivery min/p5",
            format!(
                "{} / {}",
                pct(self.consumer_delivery_min),
                pct(self.consumer_delivery_p5)
            ),
        );
        if self.simulcast {
            let [r0, r1, r2] = self.video_layer_packets;
            row("video packets r0 / r1 / r2", format!("{r0} / {r1} / {r2}"));
        }
        row("loss (SFU → subscribers)", pct(Some(self.loss_ratio)));
        row(
            "latency ms p50/p95/p99/max",
            format!(
                "{} / {} / {} / {}",
                opt(self.latency_p50_ms, ""),
                opt(self.latency_p95_ms, ""),
                opt(self.latency_p99_ms, ""),
                opt(self.latency_max_ms, "")
            ),
        );
        row(
            "latency p99 read by the app",
            opt(self.latency_app_p99_ms, " ms"),
        );
        row(
            "NACKs sent / received",
            format!("{} / {}", self.nacks_sent, self.nacks_received),
        );
        row(
            "retransmissions sent / recv",
            format!(
                "{} / {}",
                self.retransmissions_sent, self.retransmissions_received
            ),
        );
        row(
            "PLIs received / key frames",
            format!("{} / {}", self.plis_received, self.keyframes_sent),
        );
        row(
            "packets sent / received",
            format!("{} / {}", self.packets_sent, self.packets_received),
        );
        row(
            "SRTP verified / failures",
            format!("{} / {}", self.srtp_verified, self.srtp_failures),
        );
        row(
            "payloads checked / errors",
            format!("{} / {}", self.payloads_checked, self.payload_errors),
        );
        row(
            "server CPU / RSS",
            format!(
                "{} / {}",
                opt(self.server_cpu_percent, " %"),
                self.server_rss_bytes.map_or("-".to_owned(), |b| format!(
                    "{:.1} MiB",
                    b as f64 / 1048576.0
                ))
            ),
        );
        row("server CPU wait", opt(self.server_cpu_wait_percent, " %"));
        row(
            "loadtest CPU media / process",
            format!(
                "{:.1} % / {:.1} %",
                self.loadtest_media_cpu_percent, self.loadtest_cpu_percent
            ),
        );
        row(
            "loadtest media CPU wait",
            format!("{:.1} %", self.loadtest_media_cpu_wait_percent),
        );
        row(
            "loadtest loop busy p99 / max",
            format!(
                "{} / {}",
                opt(self.loadtest_busy_p99_ms, " ms"),
                opt(self.loadtest_busy_max_ms, " ms")
            ),
        );
        row(
            "transport-cc",
            if self.twcc {
                format!(
                    "on: {} feedback packets sent, {} probe paddings received",
                    self.twcc_feedbacks_sent, self.padding_received
                )
            } else {
                "off (--no-twcc)".to_owned()
            },
        );
        for (name, group) in [
            ("capped subscribers", &self.capped_subscribers),
            ("uncapped subscribers", &self.uncapped_subscribers),
        ] {
            if let Some(g) = group {
                group_rows(&mut row, name, g, self.simulcast);
            }
        }
        if self.late_timers > 0 || self.send_errors > 0 {
            row(
                "WARNING loadtest overloaded",
                format!(
                    "{} late timers, {} send errors",
                    self.late_timers, self.send_errors
                ),
            );
        }
        if let Some(churn) = &self.churn {
            churn_table(&mut s, churn);
        }
        s
    }
}

/// The rows of one [`LinkGroup`] in [`Report::table`].
fn group_rows(row: &mut impl FnMut(&str, String), name: &str, g: &LinkGroup, simulcast: bool) {
    let link = g
        .downlink_kbps
        .map_or(String::new(), |k| format!(" at {k} kbit/s"));
    let layers = if simulcast {
        let [r0, r1, r2] = g.video_end_layers;
        format!(
            "video ended on r0 / r1 / r2 / paused: {r0} / {r1} / {r2} / {}",
            g.video_end_paused
        )
    } else {
        format!(
            "video ended receiving / paused: {} / {}",
            g.video_end_layers.iter().sum::<u64>(),
            g.video_end_paused
        )
    };
    row(name, format!("{}{link}; {layers}", g.subscribers));
    let kbps = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
    let mut received = format!(
        "{} / {} / {} kbit/s",
        kbps(g.received_kbps_min),
        kbps(g.received_kbps_p50),
        kbps(g.received_kbps_max)
    );
    if g.downlink_kbps.is_some() {
        received += &format!(
            "; link queued {}, dropped {} datagrams",
            g.link_queued, g.link_dropped
        );
    }
    row("  received min / p50 / max", received);
}

/// The churn rows of [`Report::table`].
fn churn_table(s: &mut String, c: &ChurnReport) {
    let t = &c.tally;
    let mut row = |k: &str, v: String| {
        let _ = writeln!(s, "  {k:<28} {v}");
    };
    row(
        "churn",
        format!(
            "{:.2} joins/s, {:.1} s each, {:.0} % leave abruptly",
            c.joins_per_second,
            c.lifetime_s,
            c.drop_share * 100.0
        ),
    );
    row(
        "churn peers joined / failed",
        format!(
            "{} / {} (and {} before the baseline)",
            t.joined, t.join_failures, c.warmup_peers
        ),
    );
    row(
        "churn left / dropped / lost",
        format!(
            "{} / {} / {} ({} leaveRoom failures)",
            t.left, t.dropped, t.lost, t.leave_failures
        ),
    );
    row(
        "churn consumers / gone",
        format!(
            "{} / {} producers gone first",
            t.consumers, t.producers_gone
        ),
    );
    row("settled after last leave", format!("{:.1} s", c.settle_s));
    let _ = writeln!(
        s,
        "  {:<28} {:>10} {:>10} {:>10}",
        "server", "baseline", "peak", "end"
    );
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
    match c.rss_bytes {
        Some(r) => {
            let _ = writeln!(
                s,
                "  {:<28} {:>10} {:>10} {:>10}{}",
                "RSS",
                mib(r.baseline),
                mib(r.peak),
                mib(r.end),
                if r.back_to_baseline() {
                    ""
                } else {
                    "  NOT BACK"
                }
            );
        }
        None => {
            let _ = writeln!(s, "  {:<28} not measured (no local server pid)", "RSS");
        }
    }
    if let Some(a) = c.rss_anon_bytes {
        let _ = writeln!(
            s,
            "  {:<28} {:>10} {:>10} {:>10}",
            "RSS anonymous (RssAnon)",
            mib(a.baseline),
            mib(a.peak),
            mib(a.end),
        );
    }
    if let Some(h) = c.heap_bytes {
        let _ = writeln!(
            s,
            "  {:<28} {:>10} {:>10} {:>10}{}",
            "heap in use (allocator)",
            mib(h.baseline),
            mib(h.peak),
            mib(h.end),
            if h.back_to_baseline() {
                ""
            } else {
                "  NOT BACK"
            }
        );
    }
    for o in &c.objects {
        let l = o.levels;
        let _ = writeln!(
            s,
            "  {:<28} {:>10} {:>10} {:>10}{}",
            o.name,
            l.baseline,
            l.peak,
            l.end,
            if l.back_to_baseline() {
                ""
            } else {
                "  NOT BACK"
            }
        );
    }
    let _ = writeln!(
        s,
        "  {:<28} {}",
        "back to baseline (±5 %)",
        if c.back_to_baseline { "yes" } else { "NO" }
    );
    // About ten points of the timeline, always with the last one.
    let points = &c.rss_timeline;
    let every = points.len().div_ceil(10).max(1);
    let shown: Vec<String> = points
        .iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0 || i + 1 == points.len())
        .map(|(_, p)| format!("{:.0} s {:.1}", p.at_s, p.rss_bytes as f64 / 1048576.0))
        .collect();
    if !shown.is_empty() {
        let _ = writeln!(s, "  {:<28} {}", "RSS over time (MiB)", shown.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::downlink::DownlinkCounters;
    use crate::media::Counters;
    use crate::stats::Histogram;

    fn facts() -> RunFacts {
        RunFacts {
            urls: vec!["ws://x/ws".into()],
            spread: crate::config::Spread::Peers,
            rooms: 1,
            publishers: 1,
            subscribers: 2,
            video_kbps: 64,
            simulcast: false,
            duration: Duration::from_secs(3),
            peers_joined: 3,
            failed_peers: vec![4],
            consumers: 2,
            server_pid: None,
            server_cpu_percent: None,
            server_rss_bytes: None,
            server_cpu_wait_percent: None,
            server_workers: None,
            loadtest_cpu_percent: 1.0,
            twcc: true,
            downlink_kbps: Some(300),
            churn: None,
        }
    }

    #[test]
    fn ratios_sum_over_consumers() {
        let mut latency = Histogram::new();
        for us in [1000, 2000, 3000, 4000] {
            latency.record(us);
        }
        let media = MediaReport {
            consumers: vec![
                ConsumerResult {
                    peer: 1,
                    kind: Kind::Audio,
                    expected: 100,
                    received: 100,
                    seq_span: 100,
                    per_layer: [100, 0, 0],
                    bytes: 15_000,
                    end_layer: Some(0),
                },
                ConsumerResult {
                    peer: 2,
                    kind: Kind::Video,
                    expected: 100,
                    received: 90,
                    seq_span: 95,
                    per_layer: [0, 90, 0],
                    bytes: 90_000,
                    end_layer: Some(1),
                },
                ConsumerResult {
                    peer: 1,
                    kind: Kind::Video,
                    expected: 0,
                    received: 0,
                    seq_span: 0,
                    per_layer: [0; 3],
                    bytes: 0,
                    end_layer: None,
                },
                // Peer 4 failed to join: its consumer is not counted.
                ConsumerResult {
                    peer: 4,
                    kind: Kind::Video,
                    expected: 100,
                    received: 0,
                    seq_span: 0,
                    per_layer: [0; 3],
                    bytes: 0,
                    end_layer: None,
                },
            ],
            transports: vec![
                TransportResult {
                    peer: 0,
                    subscriber: false,
                    join: Some(Duration::from_millis(5)),
                    downlink: None,
                },
                TransportResult {
                    peer: 1,
                    subscriber: true,
                    join: Some(Duration::from_millis(40)),
                    downlink: Some(DownlinkCounters {
                        passed: 10,
                        queued: 5,
                        dropped: 2,
                        bytes: 9_000,
                    }),
                },
                TransportResult {
                    peer: 2,
                    subscriber: true,
                    join: Some(Duration::from_millis(60)),
                    downlink: None,
                },
            ],
            app_latency: latency.clone(),
            latency,
            busy: Histogram::new(),
            counters: Counters::default(),
            cpu: Duration::from_millis(500),
            run_delay: Duration::from_millis(100),
            wall: Duration::from_secs(1),
        };
        let r = Report::build(facts(), &media);
        assert_eq!(r.packets_expected, 200);
        assert_eq!(r.peers_failed, 1);
        assert_eq!(r.packets_delivered, 190);
        assert!((r.delivery_ratio - 0.95).abs() < 1e-9);
        assert_eq!(r.delivery_ratio_audio, Some(1.0));
        assert_eq!(r.delivery_ratio_video, Some(0.9));
        assert_eq!(r.consumer_delivery_min, Some(0.9));
        assert_eq!(r.video_layer_packets, [0, 90, 0]);
        assert!((r.loss_ratio - 5.0 / 195.0).abs() < 1e-9);
        // Join times are the subscribers'.
        assert_eq!(r.join_ms_p50, Some(40.0));
        assert_eq!(r.join_ms_max, Some(60.0));
        // Upper edge of the 10 µs bucket holding 2 ms.
        assert_eq!(r.latency_p50_ms, Some(2.01));
        assert!((r.loadtest_media_cpu_percent - 50.0).abs() < 1e-9);
        assert!((r.loadtest_media_cpu_wait_percent - 10.0).abs() < 1e-9);
        let json = serde_json::to_value(&r).expect("serializes");
        for key in [
            "delivery_ratio",
            "loss_ratio",
            "latency_p50_ms",
            "latency_p95_ms",
            "latency_p99_ms",
            "join_ms_p50",
            "join_ms_p95",
            "consumers",
            "server_cpu_percent",
            "server_rss_bytes",
        ] {
            assert!(json.get(key).is_some(), "JSON lacks {key}");
        }
        assert!(r.table().contains("95.000 %"));
        // Peer 1 is capped: audio on r0 and a video consumer that ended paused; peer 2
        // uncapped, its video on r1. Bitrates over the 3 s window.
        assert_eq!(
            r.subscriber_results,
            vec![
                SubscriberResult {
                    peer: 1,
                    capped: true,
                    received_kbps: 40.0,
                    video_end_layers: vec![None],
                },
                SubscriberResult {
                    peer: 2,
                    capped: false,
                    received_kbps: 240.0,
                    video_end_layers: vec![Some(1)],
                },
            ]
        );
        let capped = r.capped_subscribers.as_ref().expect("capped group");
        assert_eq!(capped.downlink_kbps, Some(300));
        assert_eq!(capped.subscribers, 1);
        assert_eq!(
            (capped.video_end_layers, capped.video_end_paused),
            ([0; 3], 1)
        );
        assert_eq!((capped.link_queued, capped.link_dropped), (5, 2));
        assert_eq!(capped.received_kbps_p50, Some(40.0));
        let uncapped = r.uncapped_subscribers.as_ref().expect("uncapped group");
        assert_eq!(uncapped.downlink_kbps, None);
        assert_eq!(uncapped.video_end_layers, [0, 1, 0]);
        assert_eq!(uncapped.link_dropped, 0);
        let table = r.table();
        assert!(table.contains("capped subscribers"), "{table}");
        assert!(table.contains("1 at 300 kbit/s"), "{table}");
        assert!(json["capped_subscribers"]["video_end_paused"] == 1);
        assert!(
            json["subscriber_results"]
                .as_array()
                .is_some_and(|a| a.len() == 2)
        );
    }
}
