//! `/metrics`: one Prometheus registry for the life of the server. Its collector reads,
//! at each scrape, what the workers last published (counters, gauges, fixed-bucket
//! histograms, kept in plain integers on their threads), the worker threads' CPU time,
//! the rooms and the signaling statistics: nothing is counted twice and the media path
//! never touches a Prometheus type.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram as HistogramProto, LabelPair, Metric, MetricFamily,
    MetricType,
};
use prometheus::{Encoder, Registry, TextEncoder};

use ferrosoup_room::WorkerCounters;
use ferrosoup_room::stats::{BandwidthGauges, Distribution, Histogram, RtpDrop};
use ferrosoup_signal::Hub;
use ferrosoup_signal::stats::JOIN_TIME_BOUNDS_US;

use crate::memory::MemoryStats;

/// Worker counters that are gauges (objects alive), not counters.
const OBJECT_GAUGES: [&str; 6] = [
    "routers",
    "transports",
    "producers",
    "consumers",
    "data_producers",
    "data_consumers",
];

/// The server's metrics registry.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// A registry with the server's collector registered once.
    pub fn new(hub: Arc<Hub>) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        registry.register(Box::new(ServerCollector::new(hub)?))?;
        Ok(Self { registry })
    }

    /// The Prometheus text exposition of everything registered.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// What one scrape reads.
#[derive(Default)]
struct Snapshot {
    workers: Vec<WorkerCounters>,
    /// CPU seconds of each worker thread (`None`: unknown).
    worker_cpu: Vec<Option<f64>>,
    rooms: usize,
    peers: usize,
    memory: Option<MemoryStats>,
    requests: Vec<(String, u16, u64)>,
    join_time: Histogram,
    join_connected_time: Histogram,
}

/// Reads the hub and its workers at each collection.
struct ServerCollector {
    hub: Arc<Hub>,
    descs: Vec<Desc>,
}

impl ServerCollector {
    fn new(hub: Arc<Hub>) -> Result<Self, prometheus::Error> {
        // The families of an empty snapshot name every metric the collector exports
        // (memory aside when jemalloc does not answer).
        let empty = Snapshot {
            memory: MemoryStats::read(),
            ..Snapshot::default()
        };
        let descs = families(&empty)
            .iter()
            .map(Family::desc)
            .collect::<Result<_, _>>()?;
        Ok(Self { hub, descs })
    }

    fn snapshot(&self) -> Snapshot {
        let workers = self.hub.pool().workers();
        let rooms = self.hub.rooms();
        let stats = self.hub.request_stats();
        Snapshot {
            workers: workers.iter().map(|w| w.counters()).collect(),
            worker_cpu: workers
                .iter()
                .map(|w| w.cpu_time().map(|d| d.as_secs_f64()))
                .collect(),
            rooms: rooms.len(),
            peers: rooms.iter().map(|r| r.peers().len()).sum(),
            memory: MemoryStats::read(),
            requests: stats.snapshot(),
            join_time: stats.join_time(),
            join_connected_time: stats.join_connected_time(),
        }
    }
}

impl Collector for ServerCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        families(&self.snapshot())
            .into_iter()
            .map(Family::into_proto)
            .collect()
    }
}

/// Every family of one scrape, in one place: names, help, label names and values.
fn families(s: &Snapshot) -> Vec<Family> {
    let mut out = Vec::new();
    let per_worker = || {
        s.workers
            .iter()
            .enumerate()
            .map(|(i, w)| (i.to_string(), w))
    };
    let mut gauge = |name: &str, help: &str, v: usize| {
        let mut f = Family::new(name, help, MetricType::GAUGE, &[]);
        f.value(&[], v as f64);
        out.push(f);
    };
    gauge("ferrosoup_workers", "Worker threads", s.workers.len());
    gauge("ferrosoup_rooms", "Rooms open", s.rooms);
    gauge("ferrosoup_peers", "Peers joined, over all rooms", s.peers);
    if let Some(memory) = &s.memory {
        for (name, help, v) in memory.fields() {
            let mut f = Family::new(
                format!("ferrosoup_memory_{name}_bytes"),
                help,
                MetricType::GAUGE,
                &[],
            );
            f.value(&[], v as f64);
            out.push(f);
        }
    }
    let fields: Vec<_> = s.workers.iter().map(WorkerCounters::fields).collect();
    for (index, (name, help)) in WorkerCounters::help().into_iter().enumerate() {
        let (full, kind) = if OBJECT_GAUGES.contains(&name) {
            (format!("ferrosoup_{name}"), MetricType::GAUGE)
        } else {
            (format!("ferrosoup_{name}_total"), MetricType::COUNTER)
        };
        let mut f = Family::new(full, format!("{help} Per worker."), kind, &["worker"]);
        for (i, w) in fields.iter().enumerate() {
            f.value(&[&i.to_string()], w[index].1 as f64);
        }
        out.push(f);
    }
    for (index, (name, help, _)) in BandwidthGauges::default().fields().into_iter().enumerate() {
        let mut f = Family::new(
            format!("ferrosoup_bwe_{name}"),
            format!("{help}. Per worker."),
            MetricType::GAUGE,
            &["worker"],
        );
        for (label, w) in per_worker() {
            f.value(&[&label], w.bwe.fields()[index].2 as f64);
        }
        out.push(f);
    }
    let mut dropped = Family::new(
        "ferrosoup_rtp_dropped_total",
        "RTP packets dropped by the workers, by reason",
        MetricType::COUNTER,
        &["worker", "reason"],
    );
    for (label, w) in per_worker() {
        for reason in RtpDrop::ALL {
            let n = w.rtp_dropped.get(reason);
            dropped.value(&[&label, reason.label()], n as f64);
        }
    }
    out.push(dropped);
    let mut cpu = Family::new(
        "ferrosoup_worker_cpu_seconds_total",
        "CPU time (user + system) each worker thread has used, seconds; rate() of it is the \
         share of a core the worker keeps busy",
        MetricType::COUNTER,
        &["worker"],
    );
    for (i, seconds) in s.worker_cpu.iter().enumerate() {
        if let Some(seconds) = seconds {
            cpu.value(&[&i.to_string()], *seconds);
        }
    }
    out.push(cpu);
    for d in Distribution::ALL {
        let (name, help) = d.describe();
        let mut f = Family::new(
            format!("ferrosoup_{name}"),
            format!("{help}. Per worker."),
            MetricType::HISTOGRAM,
            &["worker"],
        );
        for (label, w) in per_worker() {
            f.histogram(
                &[&label],
                w.histograms.get(d),
                d.bounds(),
                d.per_base_unit(),
            );
        }
        out.push(f);
    }
    let mut join = Family::new(
        "ferrosoup_join_duration_seconds",
        "Time from a joinRoom request to its successful answer, seconds (the server's part \
         of a join: router, rooms and peers; not ICE and DTLS)",
        MetricType::HISTOGRAM,
        &[],
    );
    join.histogram(&[], &s.join_time, JOIN_TIME_BOUNDS_US, 1e6);
    out.push(join);
    let mut connected = Family::new(
        "ferrosoup_join_connected_duration_seconds",
        "Time from a peer's joinRoom request to each of its transports' first ICE and DTLS \
         connected state, seconds (the whole join as a user waits for it: the client's own \
         requests, ICE and DTLS included)",
        MetricType::HISTOGRAM,
        &[],
    );
    connected.histogram(&[], &s.join_connected_time, JOIN_TIME_BOUNDS_US, 1e6);
    out.push(connected);
    let mut requests = Family::new(
        "ferrosoup_signaling_requests_total",
        "Signaling requests by method and outcome code",
        MetricType::COUNTER,
        &["method", "code"],
    );
    for (method, code, n) in &s.requests {
        requests.value(&[method, &code.to_string()], *n as f64);
    }
    out.push(requests);
    out
}

/// One metric family being filled.
struct Family {
    name: String,
    help: String,
    kind: MetricType,
    labels: &'static [&'static str],
    metrics: Vec<Metric>,
}

impl Family {
    fn new(
        name: impl Into<String>,
        help: impl Into<String>,
        kind: MetricType,
        labels: &'static [&'static str],
    ) -> Self {
        Self {
            name: name.into(),
            help: help.into(),
            kind,
            labels,
            metrics: Vec::new(),
        }
    }

    fn metric(&self, values: &[&str]) -> Metric {
        let pairs = self
            .labels
            .iter()
            .zip(values)
            .map(|(name, value)| LabelPair {
                name: Some((*name).to_owned()),
                value: Some((*value).to_owned()),
                ..LabelPair::default()
            })
            .collect();
        Metric::from_label(pairs)
    }

    /// A gauge's or a counter's sample.
    fn value(&mut self, labels: &[&str], v: f64) {
        let mut m = self.metric(labels);
        if self.kind == MetricType::COUNTER {
            m.set_counter(Counter {
                value: Some(v),
                ..Counter::default()
            });
        } else {
            m.set_gauge(Gauge {
                value: Some(v),
                ..Gauge::default()
            });
        }
        self.metrics.push(m);
    }

    /// A histogram's sample: `h` counted against `bounds`, `per_base` units in one of the
    /// exported unit.
    fn histogram(&mut self, labels: &[&str], h: &Histogram, bounds: &[u64], per_base: f64) {
        let mut cumulative = 0;
        let bucket = bounds
            .iter()
            .zip(h.counts)
            .map(|(&bound, n)| {
                cumulative += n;
                Bucket {
                    cumulative_count: Some(cumulative),
                    upper_bound: Some(bound as f64 / per_base),
                    ..Bucket::default()
                }
            })
            .collect();
        let mut m = self.metric(labels);
        m.set_histogram(HistogramProto {
            sample_count: Some(h.count()),
            sample_sum: Some(h.sum as f64 / per_base),
            bucket,
            ..HistogramProto::default()
        });
        self.metrics.push(m);
    }

    fn desc(&self) -> Result<Desc, prometheus::Error> {
        Desc::new(
            self.name.clone(),
            self.help.clone(),
            self.labels.iter().map(|l| (*l).to_owned()).collect(),
            Default::default(),
        )
    }

    fn into_proto(self) -> MetricFamily {
        let mut f = MetricFamily::default();
        f.set_name(self.name);
        f.set_help(self.help);
        f.set_field_type(self.kind);
        f.set_metric(self.metrics);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(s: &Snapshot) -> String {
        let mut out = Vec::new();
        // As the registry does: empty families are left out.
        let families: Vec<MetricFamily> = families(s)
            .into_iter()
            .filter(|f| !f.metrics.is_empty())
            .map(Family::into_proto)
            .collect();
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("encodes");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn worker_histograms_export_cumulative_buckets_in_seconds() {
        let mut w = WorkerCounters::default();
        w.histograms.record(Distribution::Rtt, 42_000);
        w.histograms.record(Distribution::Rtt, 3_000_000);
        w.histograms.record_n(Distribution::ForwardingDelay, 80, 10);
        let s = Snapshot {
            workers: vec![w],
            worker_cpu: vec![Some(1.5)],
            ..Snapshot::default()
        };
        let text = render(&s);
        for line in [
            "ferrosoup_rtt_seconds_bucket{worker=\"0\",le=\"0.03\"} 0",
            "ferrosoup_rtt_seconds_bucket{worker=\"0\",le=\"0.05\"} 1",
            "ferrosoup_rtt_seconds_bucket{worker=\"0\",le=\"2\"} 1",
            "ferrosoup_rtt_seconds_bucket{worker=\"0\",le=\"+Inf\"} 2",
            "ferrosoup_rtt_seconds_sum{worker=\"0\"} 3.042",
            "ferrosoup_rtt_seconds_count{worker=\"0\"} 2",
            "ferrosoup_forwarding_delay_seconds_bucket{worker=\"0\",le=\"0.0001\"} 10",
            "ferrosoup_worker_cpu_seconds_total{worker=\"0\"} 1.5",
            "ferrosoup_join_duration_seconds_count 0",
            "# TYPE ferrosoup_datagrams_in_total counter",
            "# HELP ferrosoup_datagrams_in_total Datagrams received. Per worker.",
            "# TYPE ferrosoup_consumers gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
    }

    #[test]
    fn every_family_has_a_distinct_name_and_a_help() {
        let s = Snapshot {
            workers: vec![WorkerCounters::default()],
            ..Snapshot::default()
        };
        let all = families(&s);
        let mut names: Vec<&str> = all.iter().map(|f| f.name.as_str()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "duplicate family names");
        assert!(
            all.iter().all(|f| f.help.len() > 5),
            "a family without help"
        );
    }
}
