//! The seam between one node's signaling and the other nodes of a cluster.
//!
//! A server started without a cluster has none ([`crate::Hub::new`]) and never calls this
//! module. With one ([`crate::Hub::with_cluster`]), `joinRoom` registers the peer for the
//! whole cluster through [`Cluster::join`] (which also answers the peers on other nodes),
//! a leaving peer is removed with [`Cluster::leave`], and what other nodes' peers do
//! arrives as [`ClusterEvent`]s that the hub hands to this node's peers of the room. The
//! implementation over Redis is the `ferrosoup-cluster` crate.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::SignalError;

/// A peer as every node of the cluster knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPeer {
    /// Peer id (unique in its room across the cluster).
    pub peer_id: String,
    /// Display name.
    pub display_name: String,
    /// The client's appData.
    pub app_data: Value,
    /// The node whose WebSocket serves the peer (and whose workers hold its media).
    pub node: String,
}

/// Something a peer on another node did that this node's peers of the room must see.
#[derive(Clone, Debug, PartialEq)]
pub enum ClusterEvent {
    /// A peer joined the room on another node.
    PeerJoined {
        /// Room id.
        room_id: String,
        /// The peer.
        peer: ClusterPeer,
    },
    /// A peer on another node left the room (or its node died).
    PeerLeft {
        /// Room id.
        room_id: String,
        /// Peer id.
        peer_id: String,
    },
    /// The room was closed on another node (`DELETE /api/rooms/{roomId}`): it closes here
    /// too, with the same reason.
    RoomClosed {
        /// Room id.
        room_id: String,
        /// Why (`roomClosed`'s `reason`).
        reason: String,
    },
}

/// What the signaling layer asks of the cluster. Every method talks to the other nodes (or
/// their shared store) and may wait for the network; none is called with a lock held.
#[async_trait::async_trait]
pub trait Cluster: Send + Sync {
    /// This node's id.
    fn node_id(&self) -> &str;

    /// Registers `peer` (of this node) in `room_id` for the whole cluster and tells the
    /// other nodes (`peerJoined`). Answers the room's peers on other nodes. Fails with 409
    /// when the peer id is already in the room on any node, 429 when the room already has
    /// `max_peers` peers over the cluster, 503 when the cluster cannot be reached.
    async fn join(
        &self,
        room_id: &str,
        peer: &ClusterPeer,
        max_peers: usize,
    ) -> Result<Vec<ClusterPeer>, SignalError>;

    /// The peers of `room_id` on other nodes, as the cluster knows them now.
    async fn peers(&self, room_id: &str) -> Result<Vec<ClusterPeer>, SignalError>;

    /// Removes this node's peer from `room_id` for the whole cluster and tells the other
    /// nodes (`peerLeft`). Failures are logged: the peer is gone here either way, and a
    /// node that cannot reach the cluster is reaped by the others after its timeout.
    async fn leave(&self, room_id: &str, peer_id: &str);

    /// Closes `room_id` on every node (their peers get `roomClosed {reason}`) and forgets
    /// its members; whether the cluster knew the room.
    async fn close_room(&self, room_id: &str, reason: &str) -> bool;
}
