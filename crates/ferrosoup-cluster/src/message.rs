//! The messages nodes publish on [`crate::keys::EVENTS`], one JSON object each:
//!
//! ```json
//! {"type": "peerJoined", "node": "a", "roomId": "r", "peer": {"peerId": "p", "displayName": "", "appData": {}, "node": "a"}}
//! {"type": "peerLeft", "node": "a", "roomId": "r", "peerId": "p"}
//! {"type": "roomClosed", "node": "a", "roomId": "r", "reason": "admin"}
//! {"type": "producerOpened", "node": "a", "roomId": "r", "peerId": "p", "producer": {"producerId": "…", "kind": "video", "appData": {}, "paused": false}}
//! {"type": "producerClosed", "node": "a", "roomId": "r", "peerId": "p", "producerId": "…"}
//! {"type": "producerPaused", "node": "a", "roomId": "r", "peerId": "p", "producerId": "…"}
//! {"type": "producerResumed", "node": "a", "roomId": "r", "peerId": "p", "producerId": "…"}
//! {"type": "nodeDown", "node": "a"}
//! ```
//!
//! `node` is the node the peer was on (for `roomClosed`: the node that closed it; for
//! `nodeDown`: the node gone); a node skips messages naming itself, since it has told its
//! own peers already. A reaper publishes `peerLeft` naming the dead node, so every survivor
//! delivers it, then `nodeDown`.
//!
//! [`RpcMessage`]s go to one node's own channel ([`crate::keys::rpc`]): the pipe
//! handshake.

use serde::{Deserialize, Serialize};

use ferrosoup_proto::signaling::ProducerInfo;
use ferrosoup_signal::cluster::{PipeOpen, PipeOpened, ProducerChange};
use ferrosoup_signal::{ClusterEvent, ClusterPeer};

/// One message on the events channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Message {
    /// A peer joined a room through `node`.
    PeerJoined {
        /// The peer's node.
        node: String,
        /// Room id.
        room_id: String,
        /// The peer.
        peer: ClusterPeer,
    },
    /// A peer of `node` left a room (or `node` died).
    PeerLeft {
        /// The peer's node.
        node: String,
        /// Room id.
        room_id: String,
        /// Peer id.
        peer_id: String,
    },
    /// `node` closed a room for the whole cluster.
    RoomClosed {
        /// The node that closed it.
        node: String,
        /// Room id.
        room_id: String,
        /// `roomClosed`'s reason.
        reason: String,
    },
    /// A peer of `node` produced.
    ProducerOpened {
        /// The peer's node.
        node: String,
        /// Room id.
        room_id: String,
        /// Peer id.
        peer_id: String,
        /// The producer.
        producer: ProducerInfo,
    },
    /// A producer of a peer of `node` closed.
    ProducerClosed(ProducerRef),
    /// A producer of a peer of `node` was paused.
    ProducerPaused(ProducerRef),
    /// A producer of a peer of `node` was resumed.
    ProducerResumed(ProducerRef),
    /// `node` is gone (reaped, or left on shutdown): its pipes are closed.
    NodeDown {
        /// The node.
        node: String,
    },
}

impl Message {
    /// The message announcing `change` of a producer of `peer_id`, a peer of `node`.
    pub fn producer(node: &str, room_id: &str, peer_id: &str, change: ProducerChange) -> Self {
        let about = |producer_id| ProducerRef {
            node: node.to_owned(),
            room_id: room_id.to_owned(),
            peer_id: peer_id.to_owned(),
            producer_id,
        };
        match change {
            ProducerChange::Opened(producer) => Self::ProducerOpened {
                node: node.to_owned(),
                room_id: room_id.to_owned(),
                peer_id: peer_id.to_owned(),
                producer,
            },
            ProducerChange::Closed { producer_id } => Self::ProducerClosed(about(producer_id)),
            ProducerChange::Paused {
                producer_id,
                paused: true,
            } => Self::ProducerPaused(about(producer_id)),
            ProducerChange::Paused {
                producer_id,
                paused: false,
            } => Self::ProducerResumed(about(producer_id)),
        }
    }

    /// The node the message is about.
    pub fn node(&self) -> &str {
        match self {
            Self::PeerJoined { node, .. }
            | Self::PeerLeft { node, .. }
            | Self::RoomClosed { node, .. }
            | Self::ProducerOpened { node, .. }
            | Self::NodeDown { node } => node,
            Self::ProducerClosed(about)
            | Self::ProducerPaused(about)
            | Self::ProducerResumed(about) => &about.node,
        }
    }

    /// What this node's peers must see of it.
    pub fn into_event(self) -> ClusterEvent {
        match self {
            Self::PeerJoined { room_id, peer, .. } => ClusterEvent::PeerJoined { room_id, peer },
            Self::PeerLeft {
                room_id, peer_id, ..
            } => ClusterEvent::PeerLeft { room_id, peer_id },
            Self::RoomClosed {
                room_id, reason, ..
            } => ClusterEvent::RoomClosed { room_id, reason },
            Self::NodeDown { node } => ClusterEvent::NodeDown { node },
            Self::ProducerOpened {
                node,
                room_id,
                peer_id,
                producer,
            } => ClusterEvent::Producer {
                room_id,
                peer_id,
                node,
                change: ProducerChange::Opened(producer),
            },
            Self::ProducerClosed(p) => {
                p.into_event(|producer_id| ProducerChange::Closed { producer_id })
            }
            Self::ProducerPaused(p) => p.into_event(|producer_id| ProducerChange::Paused {
                producer_id,
                paused: true,
            }),
            Self::ProducerResumed(p) => p.into_event(|producer_id| ProducerChange::Paused {
                producer_id,
                paused: false,
            }),
        }
    }
}

/// Which producer a `producerClosed` / `producerPaused` / `producerResumed` names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerRef {
    /// The producer's peer's node.
    pub node: String,
    /// Room id.
    pub room_id: String,
    /// Peer id.
    pub peer_id: String,
    /// Producer id.
    pub producer_id: String,
}

impl ProducerRef {
    /// The event of `change`, made from the producer id.
    fn into_event(self, change: impl FnOnce(String) -> ProducerChange) -> ClusterEvent {
        ClusterEvent::Producer {
            room_id: self.room_id,
            peer_id: self.peer_id,
            node: self.node,
            change: change(self.producer_id),
        }
    }
}

/// A request or answer on one node's own channel: the pipe handshake (docs/cluster.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum RpcMessage {
    /// `from` asks for a pipe of a producer of the receiving node.
    PipeOpen {
        /// Names the answer.
        request_id: String,
        /// The asking node.
        from: String,
        /// What it asks for.
        #[serde(flatten)]
        request: PipeOpen,
    },
    /// The pipe is open at `from`, the producer's node.
    PipeOpened {
        /// The request answered.
        request_id: String,
        /// The answering node.
        from: String,
        /// The answer.
        #[serde(flatten)]
        answer: PipeOpened,
    },
    /// `from` could not open the pipe.
    PipeFailed {
        /// The request answered.
        request_id: String,
        /// The answering node.
        from: String,
        /// As a request's `errorCode` (404: no such producer).
        error_code: u16,
        /// Why.
        error_reason: String,
    },
    /// `from` closed its end of the pipe of a producer of the receiving node.
    PipeClose {
        /// The node that closed its end.
        from: String,
        /// Room id.
        room_id: String,
        /// The producer piped.
        producer_id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_documented_shape() {
        let m = Message::PeerLeft {
            node: "a".into(),
            room_id: "r".into(),
            peer_id: "p".into(),
        };
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "peerLeft", "node": "a", "roomId": "r", "peerId": "p"})
        );
        let joined: Message = serde_json::from_str(
            r#"{"type":"peerJoined","node":"a","roomId":"r","peer":{"peerId":"p","displayName":"P","appData":{"x":1},"node":"a"}}"#,
        )
        .unwrap();
        assert_eq!(joined.node(), "a");
        assert_eq!(
            joined.into_event(),
            ClusterEvent::PeerJoined {
                room_id: "r".into(),
                peer: ClusterPeer {
                    peer_id: "p".into(),
                    display_name: "P".into(),
                    app_data: serde_json::json!({"x": 1}),
                    node: "a".into(),
                    producers: Vec::new(),
                },
            }
        );
    }

    #[test]
    fn producer_and_pipe_messages_have_the_documented_shape() {
        let opened = Message::producer(
            "a",
            "r",
            "p",
            ProducerChange::Opened(ProducerInfo {
                producer_id: "P".into(),
                kind: ferrosoup_proto::rtp_parameters::MediaKind::Video,
                app_data: serde_json::json!({}),
                paused: false,
            }),
        );
        assert_eq!(
            serde_json::to_value(&opened).unwrap(),
            serde_json::json!({"type": "producerOpened", "node": "a", "roomId": "r", "peerId": "p",
                "producer": {"producerId": "P", "kind": "video", "appData": {}, "paused": false}})
        );
        let resumed = Message::producer(
            "a",
            "r",
            "p",
            ProducerChange::Paused {
                producer_id: "P".into(),
                paused: false,
            },
        );
        assert_eq!(
            serde_json::to_value(&resumed).unwrap(),
            serde_json::json!({"type": "producerResumed", "node": "a", "roomId": "r", "peerId": "p", "producerId": "P"})
        );
        assert_eq!(
            resumed.into_event(),
            ClusterEvent::Producer {
                room_id: "r".into(),
                peer_id: "p".into(),
                node: "a".into(),
                change: ProducerChange::Paused {
                    producer_id: "P".into(),
                    paused: false
                },
            }
        );
        let down: Message = serde_json::from_str(r#"{"type":"nodeDown","node":"b"}"#).unwrap();
        assert_eq!(down.node(), "b");
        let open: RpcMessage = serde_json::from_str(
            r#"{"type":"pipeOpen","requestId":"q","from":"b","roomId":"r","producerId":"P",
                "transport":{"ip":"10.0.0.2","port":40012,"srtp":{"cryptoSuite":"AEAD_AES_256_GCM","keyBase64":"AAAA"}}}"#,
        )
        .unwrap();
        let RpcMessage::PipeOpen { request, from, .. } = open else {
            panic!("not a pipeOpen: {open:?}");
        };
        assert_eq!((from.as_str(), request.transport.port), ("b", 40012));
        let failed = RpcMessage::PipeFailed {
            request_id: "q".into(),
            from: "a".into(),
            error_code: 404,
            error_reason: "producer not found".into(),
        };
        assert_eq!(
            serde_json::to_value(&failed).unwrap(),
            serde_json::json!({"type": "pipeFailed", "requestId": "q", "from": "a", "errorCode": 404, "errorReason": "producer not found"})
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            "",
            "{}",
            r#"{"type":"nope"}"#,
            r#"{"type":"peerLeft"}"#,
            "[1]",
        ] {
            assert!(serde_json::from_str::<Message>(bad).is_err(), "{bad}");
        }
    }
}
