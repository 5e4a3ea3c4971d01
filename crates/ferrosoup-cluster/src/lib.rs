//! ferrosoup cluster: servers sharing one Redis (or Valkey) form one SFU.
//!
//! [`RedisCluster`] implements ferrosoup-signal's [`Cluster`](ferrosoup_signal::Cluster)
//! trait: a node registers itself with a heartbeat and its load, registers each peer that
//! joins a room through it, and hears what the other nodes' peers do through one pub/sub
//! channel. Every node also watches the registry: a node whose heartbeat key expired
//! (`NODE_TIMEOUT`) is reaped by one survivor, which tells the others `peerLeft` for each
//! of its peers and removes every key naming it. docs/cluster.md describes the keys,
//! channel and messages.
//!
//! - [`keys`]: the key and channel names.
//! - [`message`]: the messages on the channel.
//! - [`load`]: a node's load (CPU, peers, consumers, bitrate) from cumulative samples, and
//!   the record the registry keeps of a node.
//! - [`node`]: [`RedisCluster`], this node's connection to the cluster and its background
//!   tasks (subscriber, heartbeat, reaper).

pub mod keys;
pub mod load;
pub mod message;
pub mod node;

use std::time::Duration;

pub use load::{LoadMeter, NodeLoad, NodeRecord, NodeSample};
pub use node::RedisCluster;

/// Settings of a node of a cluster.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// `redis://[user:password@]host:port[/db]` of the shared Redis or Valkey.
    pub redis_url: String,
    /// This node's id (`NODE_ID`): unique in the cluster.
    pub node_id: String,
    /// A node that has not refreshed its heartbeat for this long is dead (`NODE_TIMEOUT`).
    pub node_timeout: Duration,
}

impl ClusterSettings {
    /// How often the node refreshes its heartbeat and looks for dead nodes: four times per
    /// timeout, so one or two lost beats do not kill a node.
    pub fn heartbeat_interval(&self) -> Duration {
        (self.node_timeout / 4).max(Duration::from_millis(50))
    }
}

/// A default node id: the host name and a random suffix (several nodes may share a host).
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", host, &suffix[..8])
}

/// Whether `id` can name a node: 1..=64 ASCII letters, digits, `-`, `_`, `.` (it is part of
/// Redis key names and of log lines).
pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Why the cluster could not be joined or reached.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis answered an error or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Another live node already uses this node id.
    #[error("node id {0:?} is already registered by a live node")]
    DuplicateNode(String),
    /// A value in Redis that does not parse.
    #[error("bad value in redis: {0}")]
    Decode(#[from] serde_json::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_node_ids_are_valid_and_differ() {
        let (a, b) = (default_node_id(), default_node_id());
        assert!(valid_node_id(&a), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn node_ids_that_could_break_key_names_are_refused() {
        assert!(valid_node_id("node-1.eu_west"));
        for bad in ["", "a:b", "a*", "a b", "ü", &"x".repeat(65)] {
            assert!(!valid_node_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn heartbeat_is_a_quarter_of_the_timeout() {
        let s = ClusterSettings {
            redis_url: String::new(),
            node_id: "n".into(),
            node_timeout: Duration::from_secs(10),
        };
        assert_eq!(s.heartbeat_interval(), Duration::from_millis(2500));
    }
}
