//! The seam between one node's signaling and the other nodes of a cluster.
//!
//! A server started without a cluster has none ([`crate::Hub::new`]) and never calls this
//! module. With one ([`crate::Hub::with_cluster`]), `joinRoom` registers the peer for the
//! whole cluster through [`Cluster::join`] (which also answers the peers on other nodes),
//! a leaving peer is removed with [`Cluster::leave`], and what other nodes' peers do
//! arrives as [`ClusterEvent`]s that the hub hands to this node's peers of the room.
//! Producers cross too: what a peer's producers do is announced
//! ([`Cluster::producer_changed`]), and media of a producer on another node reaches this
//! node over a pipe opened with [`Cluster::open_pipe`] (the hub's `pipes` module). The
//! implementation over Redis is the `ferrosoup-cluster` crate.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use ferrosoup_proto::broadcaster::SrtpParameters;
use ferrosoup_proto::rtp_parameters::{MediaKind, RtpParameters};
use ferrosoup_proto::signaling::ProducerInfo;

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
    /// Its producers, as `joinRoom` lists them to peers on other nodes.
    #[serde(default)]
    pub producers: Vec<ProducerInfo>,
}

/// What a peer's producer did, for the other nodes.
#[derive(Clone, Debug, PartialEq)]
pub enum ProducerChange {
    /// A new producer (`newProducer`).
    Opened(ProducerInfo),
    /// The producer closed (`producerClosed`).
    Closed {
        /// Producer id.
        producer_id: String,
    },
    /// The producer was paused or resumed (`producerPaused` / `producerResumed`).
    Paused {
        /// Producer id.
        producer_id: String,
        /// Paused (true) or resumed.
        paused: bool,
    },
}

/// One end of a pipe between two nodes: where the other end sends, and the SRTP key it
/// encrypts with (`AEAD_AES_256_GCM`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipeEnd {
    /// Address the other node reaches this end at.
    pub ip: IpAddr,
    /// Its UDP port (RTP and RTCP).
    pub port: u16,
    /// The key this end sends with.
    pub srtp: SrtpParameters,
}

/// A node asks the producer's node for a pipe of one producer (`pipeOpen`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipeOpen {
    /// Room id.
    pub room_id: String,
    /// The producer wanted.
    pub producer_id: String,
    /// The asking node's end of the pipe.
    pub transport: PipeEnd,
}

/// The producer's node answers a [`PipeOpen`] (`pipeOpened`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipeOpened {
    /// The producer piped.
    pub producer_id: String,
    /// Its kind.
    pub kind: MediaKind,
    /// What the asking node produces the pipe producer with.
    pub rtp_parameters: RtpParameters,
    /// Whether the producer is paused now.
    pub paused: bool,
    /// The producer node's end of the pipe.
    pub transport: PipeEnd,
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
    /// A producer of a peer on another node opened, closed, paused or resumed.
    Producer {
        /// Room id.
        room_id: String,
        /// The producer's peer.
        peer_id: String,
        /// The node of that peer.
        node: String,
        /// What happened.
        change: ProducerChange,
    },
    /// Another node asks this one for a pipe; answer with [`Cluster::answer_pipe`].
    PipeRequested {
        /// The asking node.
        from: String,
        /// Goes back in the answer.
        request_id: String,
        /// What it asks for.
        request: PipeOpen,
    },
    /// Another node closed its end of a pipe of a producer of this node (`pipeClose`).
    PipeClosed {
        /// That node.
        from: String,
        /// Room id.
        room_id: String,
        /// The producer piped.
        producer_id: String,
    },
    /// A node died or left the cluster: its pipes are gone.
    NodeDown {
        /// The node.
        node: String,
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

    /// Stores `record`, the peer's record as it is now (its producers, for later joiners on
    /// other nodes), if the peer is still this node's member of `room_id` (`None`: the peer
    /// has left here, its record goes with the leave), then tells the other nodes that
    /// `peer_id`'s producer did `change`. Failures are logged.
    async fn producer_changed(
        &self,
        room_id: &str,
        peer_id: &str,
        record: Option<&ClusterPeer>,
        change: ProducerChange,
    );

    /// Asks `node` for a pipe of one of its producers; its answer, or 503 when it does not
    /// answer in time (404 when it has no such producer).
    async fn open_pipe(&self, node: &str, request: PipeOpen) -> Result<PipeOpened, SignalError>;

    /// Answers a [`ClusterEvent::PipeRequested`] of `node`.
    async fn answer_pipe(
        &self,
        node: &str,
        request_id: &str,
        answer: Result<PipeOpened, SignalError>,
    );

    /// Tells `node` that this node closed its end of the pipe of `producer_id`.
    async fn close_pipe(&self, node: &str, room_id: &str, producer_id: &str);
}
