//! The shared state of the signaling layer: rooms (each with its router on a worker),
//! the peers in them, and the routing of worker events to the peer that owns the object.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use ferrosoup_proto::rtp_parameters::{MediaKind, RtpCapabilities, RtpCodecCapability};
use ferrosoup_room::{ConsumerId, MediaEvent, ProducerId, Router, TransportId, WorkerPool};

use crate::error::SignalError;
use crate::stats::RequestStats;

/// A frame the session sends to its client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// A JSON text frame.
    Text(String),
    /// Close the WebSocket with this code and reason.
    Close(u16, String),
}

/// Sends notifications to one connected client.
#[derive(Clone, Debug)]
pub struct Notifier(mpsc::UnboundedSender<Outgoing>);

impl Notifier {
    /// Wraps the session's outgoing channel.
    pub fn new(tx: mpsc::UnboundedSender<Outgoing>) -> Self {
        Self(tx)
    }

    /// Sends a protoo notification (dropped silently if the client is gone).
    pub fn notify(&self, method: &str, data: Value) {
        let msg = json!({"notification": true, "method": method, "data": data});
        let _ = self.0.send(Outgoing::Text(msg.to_string()));
    }

    /// Sends a frame.
    pub fn send(&self, frame: Outgoing) {
        let _ = self.0.send(frame);
    }
}

/// Direction of a transport, fixed at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The client sends media on it.
    Send,
    /// The client receives media on it.
    Recv,
}

/// What a room remembers of a producer for `joinRoom` / `getProducers`.
#[derive(Clone, Debug)]
pub struct ProducerInfo {
    /// Audio or video.
    pub kind: MediaKind,
    /// The client's appData.
    pub app_data: Value,
    /// Paused by its client.
    pub paused: bool,
}

/// A peer in a room.
pub struct Peer {
    /// Peer id.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// The client's appData.
    pub app_data: Value,
    /// RTP capabilities given at join (default for `consume`).
    pub rtp_capabilities: Option<RtpCapabilities>,
    /// Notifications to this peer's connection.
    pub notifier: Notifier,
    /// Its transports.
    pub transports: HashMap<TransportId, Direction>,
    /// Its producers.
    pub producers: HashMap<ProducerId, ProducerInfo>,
    /// Its consumers and the producer each consumes.
    pub consumers: HashMap<ConsumerId, ProducerId>,
}

/// A room: a router and the peers in it.
pub struct Room {
    /// Room id (chosen by clients).
    pub id: String,
    /// Its router.
    pub router: Router,
    peers: Mutex<HashMap<String, Peer>>,
}

impl Room {
    /// Locks the peer table. Never held across an `.await`.
    pub fn peers(&self) -> MutexGuard<'_, HashMap<String, Peer>> {
        // A panic while holding this lock would be a bug; the table stays usable.
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a notification to every peer but `except`.
    pub fn broadcast(&self, except: &str, method: &str, data: Value) {
        for (id, peer) in self.peers().iter() {
            if id != except {
                peer.notifier.notify(method, data.clone());
            }
        }
    }
}

/// Rooms, peers and event routing for one server.
pub struct Hub {
    pool: WorkerPool,
    media_codecs: Vec<RtpCodecCapability>,
    rooms: tokio::sync::Mutex<HashMap<String, Arc<Room>>>,
    /// Object id (transport or consumer) → the notifier of the peer owning it.
    routes: Mutex<HashMap<uuid::Uuid, Notifier>>,
    stats: RequestStats,
}

impl Hub {
    /// A hub over a started worker pool; `events` is the pool's event stream, consumed by a
    /// task spawned here.
    pub fn new(
        pool: WorkerPool,
        events: mpsc::UnboundedReceiver<MediaEvent>,
        media_codecs: Vec<RtpCodecCapability>,
    ) -> Arc<Self> {
        let hub = Arc::new(Self {
            pool,
            media_codecs,
            rooms: tokio::sync::Mutex::new(HashMap::new()),
            routes: Mutex::new(HashMap::new()),
            stats: RequestStats::default(),
        });
        tokio::spawn(route_events(Arc::downgrade(&hub), events));
        hub
    }

    /// The worker pool.
    pub fn pool(&self) -> &WorkerPool {
        &self.pool
    }

    /// Request counters by method and outcome.
    pub fn request_stats(&self) -> &RequestStats {
        &self.stats
    }

    /// Gets a room, creating it (and its router) if needed.
    pub async fn get_or_create_room(&self, room_id: &str) -> Result<Arc<Room>, SignalError> {
        let mut rooms = self.rooms.lock().await;
        if let Some(room) = rooms.get(room_id) {
            return Ok(room.clone());
        }
        let router = self.pool.create_router(&self.media_codecs).await?;
        tracing::info!(room = room_id, router = %router.id(), worker = router.worker_index(), "room created");
        let room = Arc::new(Room {
            id: room_id.to_owned(),
            router,
            peers: Mutex::new(HashMap::new()),
        });
        rooms.insert(room_id.to_owned(), room.clone());
        Ok(room)
    }

    /// Gets a room if it exists.
    pub async fn room(&self, room_id: &str) -> Option<Arc<Room>> {
        self.rooms.lock().await.get(room_id).cloned()
    }

    /// Snapshot of all rooms.
    pub async fn rooms(&self) -> Vec<Arc<Room>> {
        self.rooms.lock().await.values().cloned().collect()
    }

    /// Closes a room if nobody is left in it.
    pub async fn close_room_if_empty(&self, room: &Arc<Room>) {
        let mut rooms = self.rooms.lock().await;
        if room.peers().is_empty() && rooms.get(&room.id).is_some_and(|r| Arc::ptr_eq(r, room)) {
            rooms.remove(&room.id);
            drop(rooms);
            room.router.close().await;
            tracing::info!(room = %room.id, "room closed");
        }
    }

    /// Routes worker events about `id` to `notifier`.
    pub fn add_route(&self, id: uuid::Uuid, notifier: Notifier) {
        self.routes().insert(id, notifier);
    }

    /// Stops routing events about `id`.
    pub fn remove_route(&self, id: uuid::Uuid) {
        self.routes().remove(&id);
    }

    /// Number of routed objects (for leak checks).
    pub fn route_count(&self) -> usize {
        self.routes().len()
    }

    fn routes(&self) -> MutexGuard<'_, HashMap<uuid::Uuid, Notifier>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn route(&self, id: uuid::Uuid) -> Option<Notifier> {
        self.routes().get(&id).cloned()
    }
}

/// Delivers worker events as notifications to the peers owning the objects.
async fn route_events(hub: std::sync::Weak<Hub>, mut events: mpsc::UnboundedReceiver<MediaEvent>) {
    while let Some(event) = events.recv().await {
        let Some(hub) = hub.upgrade() else { return };
        match event {
            MediaEvent::TransportStateChanged {
                transport_id,
                ice_state,
                dtls_state,
            } => {
                if let Some(n) = hub.route(transport_id.0) {
                    n.notify(
                        "transportStateChanged",
                        json!({"transportId": transport_id.to_string(), "iceState": ice_state, "dtlsState": dtls_state}),
                    );
                }
            }
            MediaEvent::IceRestartRequired { transport_id } => {
                if let Some(n) = hub.route(transport_id.0) {
                    n.notify(
                        "iceRestartRequired",
                        json!({"transportId": transport_id.to_string()}),
                    );
                }
            }
            MediaEvent::ConsumerLayersChanged {
                consumer_id,
                spatial_layer,
                temporal_layer,
            } => {
                if let Some(n) = hub.route(consumer_id.0) {
                    n.notify(
                        "consumerLayersChanged",
                        json!({"consumerId": consumer_id.to_string(), "spatialLayer": spatial_layer, "temporalLayer": temporal_layer}),
                    );
                }
            }
            MediaEvent::ConsumerScore {
                consumer_id,
                score,
                producer_score,
            } => {
                if let Some(n) = hub.route(consumer_id.0) {
                    n.notify(
                        "consumerScore",
                        json!({"consumerId": consumer_id.to_string(), "score": score, "producerScore": producer_score}),
                    );
                }
            }
            MediaEvent::ActiveSpeaker {
                router_id,
                producer_id,
                volume,
            } => {
                let rooms = hub.rooms().await;
                let Some(room) = rooms.iter().find(|r| r.router.id() == router_id) else {
                    continue;
                };
                let owner = room
                    .peers()
                    .values()
                    .find(|p| p.producers.contains_key(&producer_id))
                    .map(|p| p.id.clone());
                if let Some(peer_id) = owner {
                    room.broadcast(
                        "",
                        "activeSpeaker",
                        json!({"peerId": peer_id, "producerId": producer_id.to_string(), "volume": volume}),
                    );
                }
            }
            MediaEvent::ProducerScore { producer_id, score } => {
                if let Some(n) = hub.route(producer_id.0) {
                    n.notify(
                        "producerScore",
                        json!({"producerId": producer_id.to_string(), "score": score}),
                    );
                }
            }
        }
    }
}
