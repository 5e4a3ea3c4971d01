//! A node's load as the registry shows it: rates computed from cumulative samples taken at
//! each heartbeat (time is an argument, so tests give the instants).

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What the server reads of itself at a heartbeat: cumulative counters and current counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeSample {
    /// CPU time used by the media workers so far, seconds.
    pub cpu_seconds: f64,
    /// Bytes the workers have sent so far.
    pub bytes_sent: u64,
    /// Worker threads.
    pub workers: usize,
    /// Peers in this node's rooms.
    pub peers: usize,
    /// Consumers on this node's workers.
    pub consumers: u64,
    /// Rooms with a router on this node.
    pub rooms: Vec<String>,
}

/// A node's load over the last heartbeat interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeLoad {
    /// CPU used by the workers, in cores (1.0 = one core busy).
    pub cpu: f64,
    /// Worker threads (cores the node may use for media).
    pub workers: usize,
    /// Peers in this node's rooms.
    pub peers: usize,
    /// Consumers on this node's workers.
    pub consumers: u64,
    /// Bits per second the workers sent.
    pub bitrate_bps: u64,
}

/// Turns successive [`NodeSample`]s into [`NodeLoad`]s.
#[derive(Debug, Default)]
pub struct LoadMeter {
    last: Option<(Instant, f64, u64)>,
}

impl LoadMeter {
    /// The load since the previous sample (rates 0 at the first one, or when a counter went
    /// backwards, as after a worker restart).
    pub fn measure(&mut self, now: Instant, sample: &NodeSample) -> NodeLoad {
        let (cpu, bitrate_bps) = match self.last {
            Some((then, cpu, bytes)) if now > then => {
                let secs = (now - then).as_secs_f64();
                let cpu = ((sample.cpu_seconds - cpu) / secs).max(0.0);
                let bits = sample.bytes_sent.saturating_sub(bytes) as f64 * 8.0;
                (cpu, (bits / secs) as u64)
            }
            _ => (0.0, 0),
        };
        self.last = Some((now, sample.cpu_seconds, sample.bytes_sent));
        NodeLoad {
            // Two decimals are all a dashboard or a placement policy can use.
            cpu: (cpu * 100.0).round() / 100.0,
            workers: sample.workers,
            peers: sample.peers,
            consumers: sample.consumers,
            bitrate_bps,
        }
    }
}

/// What the registry keeps of a node (the value of its heartbeat key; `GET /api/nodes`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// Node id.
    pub node_id: String,
    /// When the node joined the cluster, Unix milliseconds.
    pub started_at: u64,
    /// When it last refreshed its heartbeat, Unix milliseconds.
    pub heartbeat_at: u64,
    /// Its load.
    #[serde(flatten)]
    pub load: NodeLoad,
    /// Rooms with a router on it.
    pub rooms: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates_over_the_interval_between_samples() {
        let t0 = Instant::now();
        let mut meter = LoadMeter::default();
        let mut s = NodeSample {
            cpu_seconds: 10.0,
            bytes_sent: 1_000,
            workers: 2,
            peers: 3,
            consumers: 4,
            rooms: vec!["r".into()],
        };
        let first = meter.measure(t0, &s);
        assert_eq!((first.cpu, first.bitrate_bps, first.peers), (0.0, 0, 3));
        s.cpu_seconds = 11.5;
        s.bytes_sent = 1_000 + 250_000;
        let load = meter.measure(t0 + Duration::from_secs(2), &s);
        assert_eq!(
            load,
            NodeLoad {
                cpu: 0.75,
                workers: 2,
                peers: 3,
                consumers: 4,
                bitrate_bps: 1_000_000,
            }
        );
        // Counters reset (a worker restarted): no negative or huge rate.
        s.cpu_seconds = 0.0;
        s.bytes_sent = 0;
        let load = meter.measure(t0 + Duration::from_secs(3), &s);
        assert_eq!((load.cpu, load.bitrate_bps), (0.0, 0));
        // The same instant twice: no division by zero.
        let load = meter.measure(t0 + Duration::from_secs(3), &s);
        assert_eq!((load.cpu, load.bitrate_bps), (0.0, 0));
    }

    #[test]
    fn the_record_is_flat_camel_case_json() {
        let r = NodeRecord {
            node_id: "a".into(),
            started_at: 1,
            heartbeat_at: 2,
            load: NodeLoad {
                cpu: 0.5,
                workers: 2,
                peers: 1,
                consumers: 0,
                bitrate_bps: 8,
            },
            rooms: vec!["r".into()],
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"nodeId": "a", "startedAt": 1, "heartbeatAt": 2, "cpu": 0.5,
                "workers": 2, "peers": 1, "consumers": 0, "bitrateBps": 8, "rooms": ["r"]})
        );
        assert_eq!(serde_json::from_value::<NodeRecord>(json).unwrap(), r);
    }
}
