//! The messages nodes publish on [`crate::keys::EVENTS`], one JSON object each:
//!
//! ```json
//! {"type": "peerJoined", "node": "a", "roomId": "r", "peer": {"peerId": "p", "displayName": "", "appData": {}, "node": "a"}}
//! {"type": "peerLeft", "node": "a", "roomId": "r", "peerId": "p"}
//! {"type": "roomClosed", "node": "a", "roomId": "r", "reason": "admin"}
//! ```
//!
//! `node` is the node the peer was on (for `roomClosed`: the node that closed it); a node
//! skips messages naming itself, since it has told its own peers already. A reaper
//! publishes `peerLeft` naming the dead node, so every survivor delivers it.

use serde::{Deserialize, Serialize};

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
}

impl Message {
    /// The node the message is about.
    pub fn node(&self) -> &str {
        match self {
            Self::PeerJoined { node, .. }
            | Self::PeerLeft { node, .. }
            | Self::RoomClosed { node, .. } => node,
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
        }
    }
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
                },
            }
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
