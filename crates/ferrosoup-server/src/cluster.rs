//! This server as a node of a cluster: what its heartbeat reports (load and the peers it
//! serves), read from the hub and the worker pool.

use std::sync::{Arc, Weak};

use ferrosoup_cluster::NodeSample;
use ferrosoup_signal::{ClusterPeer, Hub};

/// The sampler the heartbeat calls: the node's counters and its peers (room id, peer),
/// which it registers again if the other nodes reaped it while it was cut off.
pub fn sampler(
    hub: &Arc<Hub>,
    node_id: String,
) -> impl Fn() -> (NodeSample, Vec<(String, ClusterPeer)>) + Send + Sync + 'static {
    let hub: Weak<Hub> = Arc::downgrade(hub);
    move || match hub.upgrade() {
        Some(hub) => sample(&hub, &node_id),
        None => Default::default(),
    }
}

fn sample(hub: &Hub, node_id: &str) -> (NodeSample, Vec<(String, ClusterPeer)>) {
    let pool = hub.pool();
    let counters = pool.counters();
    let cpu_seconds = pool
        .workers()
        .iter()
        .filter_map(|w| w.cpu_time())
        .map(|d| d.as_secs_f64())
        .sum();
    let mut rooms = Vec::new();
    let mut members = Vec::new();
    for room in hub.rooms() {
        rooms.push(room.id.clone());
        for peer in room.peers().values() {
            members.push((room.id.clone(), peer.cluster_record(node_id)));
        }
    }
    rooms.sort();
    let sample = NodeSample {
        cpu_seconds,
        bytes_sent: counters.iter().map(|c| c.bytes_out).sum(),
        workers: counters.len(),
        peers: members.len(),
        consumers: counters.iter().map(|c| c.consumers).sum(),
        rooms,
    };
    (sample, members)
}
