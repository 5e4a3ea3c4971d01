//! The answer of `GET /api/ice-servers`: STUN and TURN servers for clients to pass to their
//! PeerConnections (mediasoup-client's `iceServers` option), in the browser's
//! `RTCIceServer` shape.

use serde::{Deserialize, Serialize};

/// One STUN or TURN server entry (WebRTC's `RTCIceServer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs of the server.
    pub urls: Vec<String>,
    /// TURN username (`"<unix expiry>:<user>"` for time-limited credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `{iceServers: [...]}`, the body of `GET /api/ice-servers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceServers {
    /// The servers, STUN first; empty when the server has none configured.
    pub ice_servers: Vec<IceServer>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shape_is_the_browsers() {
        let servers = IceServers {
            ice_servers: vec![
                IceServer {
                    urls: vec!["stun:stun.example.com:3478".into()],
                    username: None,
                    credential: None,
                },
                IceServer {
                    urls: vec!["turn:turn.example.com:3478?transport=udp".into()],
                    username: Some("1700000000:alice".into()),
                    credential: Some("c2VjcmV0".into()),
                },
            ],
        };
        let value = serde_json::to_value(&servers).unwrap();
        assert_eq!(
            value,
            json!({"iceServers": [
                {"urls": ["stun:stun.example.com:3478"]},
                {"urls": ["turn:turn.example.com:3478?transport=udp"],
                 "username": "1700000000:alice", "credential": "c2VjcmV0"}
            ]})
        );
        assert_eq!(
            serde_json::from_value::<IceServers>(value).unwrap(),
            servers
        );
    }
}
