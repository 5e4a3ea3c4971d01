//! A high-level participant: connect, create/join a room, make transports.

use serde_json::{Value, json};

use ferrosoup_proto::rtp_parameters::RtpCapabilities;

use crate::device::Device;
use crate::error::{ClientError, Result};
use crate::signaling::{NotificationStream, Signaling};
use crate::transport::{RecvTransport, SendTransport, TransportOptions};

/// A peer joined to a room: signaling, loaded device and what `joinRoom` answered.
pub struct Peer {
    signaling: Signaling,
    notifications: NotificationStream,
    device: Device,
    peer_id: String,
    session_token: Option<String>,
    peers: Vec<Value>,
}

impl Peer {
    /// Connects to `url` (`ws://host:port/ws`, with `?token=` if needed), sends
    /// `createRoom {roomId}`, loads the device from the router capabilities and joins with
    /// `joinRoom {roomId, displayName, rtpCapabilities}`.
    pub async fn join(url: &str, room_id: &str, display_name: &str) -> Result<Peer> {
        let (signaling, notifications) = Signaling::connect(url).await?;
        let room = signaling
            .request("createRoom", json!({ "roomId": room_id }))
            .await?;
        let caps: RtpCapabilities =
            serde_json::from_value(room.get("rtpCapabilities").cloned().ok_or_else(|| {
                ClientError::InvalidState("createRoom lacks rtpCapabilities".into())
            })?)?;
        let device = Device::load(&caps)?;
        let joined = signaling
            .request(
                "joinRoom",
                json!({
                    "roomId": room_id,
                    "displayName": display_name,
                    "rtpCapabilities": device.rtp_capabilities(),
                }),
            )
            .await?;
        let peer_id = joined
            .get("peerId")
            .and_then(Value::as_str)
            .ok_or_else(|| ClientError::InvalidState("joinRoom lacks peerId".into()))?
            .to_owned();
        let session_token = joined
            .get("sessionToken")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let peers = joined
            .get("peers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(Peer {
            signaling,
            notifications,
            device,
            peer_id,
            session_token,
            peers,
        })
    }

    /// This peer's id.
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// The session token for `?resume=`.
    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_deref()
    }

    /// The `peers` list of the `joinRoom` answer (other peers and their producers).
    pub fn peers(&self) -> &[Value] {
        &self.peers
    }

    /// The loaded device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The signaling connection, for raw requests.
    pub fn signaling(&self) -> &Signaling {
        &self.signaling
    }

    /// The notification stream (`newProducer`, `consumerClosed`, ...).
    pub fn notifications(&mut self) -> &mut NotificationStream {
        &mut self.notifications
    }

    /// Waits for the next notification named `method`, discarding others before it.
    /// `None` when the connection closed.
    pub async fn next_notification(&mut self, method: &str) -> Option<Value> {
        while let Some(n) = self.notifications.recv().await {
            if n.method == method {
                return Some(n.data);
            }
        }
        None
    }

    /// Creates a send transport with default options.
    pub async fn create_send_transport(&self) -> Result<SendTransport> {
        SendTransport::create(&self.signaling, &self.device, TransportOptions::default()).await
    }

    /// Creates a receive transport with default options.
    pub async fn create_recv_transport(&self) -> Result<RecvTransport> {
        RecvTransport::create(&self.signaling, &self.device, TransportOptions::default()).await
    }

    /// Sends `leaveRoom` and closes the WebSocket.
    pub async fn leave(self) -> Result<()> {
        let result = self.signaling.request("leaveRoom", json!({})).await;
        self.signaling.close();
        result.map(|_| ())
    }
}
