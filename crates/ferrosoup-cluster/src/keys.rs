//! Key and channel names in Redis. Every key starts with `ferrosoup:`; the keys of one node
//! contain its id (so `SCAN MATCH *{node}*` finds them), room keys contain the room id.

/// The set of registered node ids.
pub const NODES: &str = "ferrosoup:nodes";

/// The set of room ids with at least one peer somewhere in the cluster.
pub const ROOMS: &str = "ferrosoup:rooms";

/// The pub/sub channel every node publishes its peers' events on and listens to.
pub const EVENTS: &str = "ferrosoup:events";

/// The pub/sub channel of requests and answers addressed to one node (pipes). A channel is
/// not a key: nothing to remove when the node dies.
pub fn rpc(node: &str) -> String {
    format!("ferrosoup:node:{node}:rpc")
}

/// A node's heartbeat: its [`crate::NodeRecord`] as JSON, expiring after `NODE_TIMEOUT`.
pub fn node(node: &str) -> String {
    format!("ferrosoup:node:{node}")
}

/// The set of a node's peers, each as the JSON array `[roomId, peerId]` (what a reaper
/// removes when the node dies).
pub fn node_peers(node: &str) -> String {
    format!("ferrosoup:node:{node}:peers")
}

/// Taken (SET NX PX) by the one survivor that reaps a dead node.
pub fn reap_lock(node: &str) -> String {
    format!("ferrosoup:lock:reap:{node}")
}

/// A room's peers: hash peer id → [`ferrosoup_signal::ClusterPeer`] as JSON.
pub fn room_peers(room: &str) -> String {
    format!("ferrosoup:room:{room}:peers")
}

/// Taken (SET NX PX) while a peer joins the room: the check of the room's size and of the
/// peer id, and the room's creation in the cluster, happen under it.
pub fn room_lock(room: &str) -> String {
    format!("ferrosoup:lock:room:{room}")
}

/// A member of [`node_peers`].
pub fn member(room: &str, peer: &str) -> String {
    serde_json::Value::from(vec![room, peer]).to_string()
}

/// The room and peer ids of a member of [`node_peers`].
pub fn parse_member(member: &str) -> Option<(String, String)> {
    serde_json::from_str(member).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_any_ids() {
        for (room, peer) in [("r", "p"), ("a:b", "\"x\",y"), ("ü", "")] {
            let m = member(room, peer);
            assert_eq!(parse_member(&m), Some((room.to_owned(), peer.to_owned())));
        }
        assert_eq!(parse_member("nonsense"), None);
    }

    #[test]
    fn a_nodes_keys_name_it() {
        for key in [node("n-1"), node_peers("n-1"), reap_lock("n-1")] {
            assert!(
                key.contains("n-1") && key.starts_with("ferrosoup:"),
                "{key}"
            );
        }
    }
}
