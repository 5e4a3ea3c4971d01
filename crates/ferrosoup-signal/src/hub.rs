//! The shared state of the signaling layer: rooms (each with its routers on workers),
//! the peers in them, and the routing of worker events to the peer that owns the object.
//!
//! The hub knows peers (and their [`Notifier`] links), not sessions: it sits below
//! [`crate::session`]. When it closes a room it tells each peer's session through the link
//! ([`Notifier::room_closed`]). In a cluster, [`pipes`] carries media between nodes.

pub mod pipes;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::mpsc;

use ferrosoup_proto::rtp_parameters::{MediaKind, RtpCapabilities, RtpCodecCapability};
use ferrosoup_proto::signaling::{
    self, ActiveSpeakerNotification, ConsumerClosedNotification, ConsumerLayersChangedNotification,
    ConsumerNotification, ConsumerScoreNotification, DataConsumerIdRequest,
    IceRestartRequiredNotification, ProducerPeerNotification, ProducerScoreNotification,
    RoomClosedNotification, RoomProducerInfo, ServerNotification,
    TransportStateChangedNotification,
};
use ferrosoup_proto::transport::{DtlsState, IceState};
use ferrosoup_room::{
    ClosedConsumer, ClosedDataConsumer, ConsumerId, DataConsumerId, DataProducerId, MediaEvent,
    ProducerId, RoomRouters, TransportId, WorkerPool,
};

use crate::cluster::{Cluster, ClusterEvent, ClusterPeer};
use crate::config::SignalConfig;
use crate::error::SignalError;
use crate::link::{Notifier, Outgoing, close_code};
use crate::stats::RequestStats;

/// Direction of a transport, fixed at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The client sends media on it.
    Send,
    /// The client receives media on it.
    Recv,
    /// Both (a broadcaster's transports, as mediasoup-demo has them).
    Both,
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

/// What a room remembers of a data producer for `joinRoom` and `consumeData`.
#[derive(Clone, Debug)]
pub struct DataProducerInfo {
    /// Data channel label.
    pub label: String,
    /// Data channel sub-protocol.
    pub protocol: String,
    /// The client's appData.
    pub app_data: Value,
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
    /// Its data producers.
    pub data_producers: HashMap<DataProducerId, DataProducerInfo>,
    /// Its data consumers and the data producer each consumes.
    pub data_consumers: HashMap<DataConsumerId, DataProducerId>,
    /// When its `joinRoom` request began (for the join → connected time).
    pub joined_at: std::time::Instant,
}

impl Peer {
    /// The peer as the cluster keeps it: a peer of `node`, with its producers.
    pub fn cluster_record(&self, node: &str) -> ClusterPeer {
        ClusterPeer {
            peer_id: self.id.clone(),
            display_name: self.display_name.clone(),
            app_data: self.app_data.clone(),
            node: node.to_owned(),
            producers: self.producer_infos(),
        }
    }

    /// Its producers as `joinRoom` lists them.
    pub fn producer_infos(&self) -> Vec<signaling::ProducerInfo> {
        self.producers
            .iter()
            .map(|(id, info)| signaling::ProducerInfo {
                producer_id: id.to_string(),
                kind: info.kind,
                app_data: info.app_data.clone(),
                paused: info.paused,
            })
            .collect()
    }
}

/// A producer as `newProducer` and `getProducers` show it.
pub fn room_producer(id: ProducerId, peer_id: &str, info: &ProducerInfo) -> RoomProducerInfo {
    RoomProducerInfo {
        producer_id: id.to_string(),
        peer_id: peer_id.to_owned(),
        kind: info.kind,
        app_data: info.app_data.clone(),
        paused: info.paused,
    }
}

/// A room: its routers and the peers in it.
pub struct Room {
    /// Room id (chosen by clients).
    pub id: String,
    /// Its routers: a home router, and routers on other workers once it outgrows one.
    pub routers: RoomRouters,
    peers: Mutex<HashMap<String, Peer>>,
    /// Set, with the peer table locked, when the hub takes the room out of its table: a
    /// peer must not be added any more.
    closed: AtomicBool,
    /// Producers of its peers on other nodes and the pipes carrying them.
    remote: pipes::RemoteMedia,
}

impl Room {
    /// Whether the hub has closed the room (check with [`Room::peers`] locked).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Locks the peer table. Never held across an `.await`.
    pub fn peers(&self) -> MutexGuard<'_, HashMap<String, Peer>> {
        // A panic while holding this lock would be a bug; the table stays usable.
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells every peer but `except` that `peer_id`'s producer was paused or resumed
    /// (`producerPaused` / `producerResumed`).
    pub fn broadcast_producer_paused(
        &self,
        except: &str,
        producer_id: String,
        peer_id: String,
        paused: bool,
    ) {
        let producer = ProducerPeerNotification {
            producer_id,
            peer_id,
        };
        self.broadcast(
            except,
            &if paused {
                ServerNotification::ProducerPaused(producer)
            } else {
                ServerNotification::ProducerResumed(producer)
            },
        );
    }

    /// Tells the owners of `consumers` that their producer was paused or resumed
    /// (`consumerPaused` / `consumerResumed`).
    pub fn notify_consumers_paused(&self, consumers: &[ConsumerId], paused: bool) {
        let peers = self.peers();
        for c in consumers {
            if let Some(peer) = peers.values().find(|p| p.consumers.contains_key(c)) {
                let consumer = ConsumerNotification {
                    consumer_id: c.to_string(),
                };
                peer.notifier.notify(&if paused {
                    ServerNotification::ConsumerPaused(consumer)
                } else {
                    ServerNotification::ConsumerResumed(consumer)
                });
            }
        }
    }

    /// Sends a notification to every peer but `except` (`""`: to every peer).
    pub fn broadcast(&self, except: &str, notification: &ServerNotification) {
        let frame = match notification.to_frame() {
            Ok(frame) => frame,
            Err(e) => {
                tracing::error!(method = notification.method(), "notification not sent: {e}");
                return;
            }
        };
        for (id, peer) in self.peers().iter() {
            if id != except {
                peer.notifier.notify_frame(frame.clone());
            }
        }
    }
}

/// A room id's entry in the hub: empty while its router is being created. Callers wait on
/// the entry, never on the table, so a worker that is slow to create a router holds up only
/// the requests for that room.
type RoomEntry = Arc<tokio::sync::OnceCell<Arc<Room>>>;

/// Rooms, peers and event routing for one server.
pub struct Hub {
    pool: WorkerPool,
    media_codecs: Vec<RtpCodecCapability>,
    config: SignalConfig,
    /// Room id → room. Locked only for lookups and inserts, never across an `.await`.
    rooms: Mutex<HashMap<String, RoomEntry>>,
    /// Object id (transport, producer or consumer) → the notifier of the peer owning it.
    routes: Mutex<HashMap<uuid::Uuid, Notifier>>,
    /// Set on shutdown: no new peers.
    draining: std::sync::atomic::AtomicBool,
    /// Open connections, and a signal when the count changes.
    connections: std::sync::atomic::AtomicUsize,
    connections_changed: tokio::sync::Notify,
    /// Set to true when every connection must close (end of shutdown).
    shutdown: tokio::sync::watch::Sender<bool>,
    stats: RequestStats,
    /// The other nodes, when this server is one node of a cluster.
    cluster: Option<Arc<dyn Cluster>>,
}

impl Hub {
    /// A hub over a started worker pool; `events` is the pool's event stream, consumed by a
    /// task spawned here.
    pub fn new(
        pool: WorkerPool,
        events: mpsc::UnboundedReceiver<MediaEvent>,
        media_codecs: Vec<RtpCodecCapability>,
        config: SignalConfig,
    ) -> Arc<Self> {
        Self::build(pool, events, media_codecs, config, None)
    }

    /// A hub that is one node of a cluster: peers join rooms through `cluster`, and
    /// `cluster_events` (what other nodes' peers do) reach this node's peers, from a task
    /// spawned here.
    pub fn with_cluster(
        pool: WorkerPool,
        events: mpsc::UnboundedReceiver<MediaEvent>,
        media_codecs: Vec<RtpCodecCapability>,
        config: SignalConfig,
        cluster: Arc<dyn Cluster>,
        cluster_events: mpsc::UnboundedReceiver<ClusterEvent>,
    ) -> Arc<Self> {
        let hub = Self::build(pool, events, media_codecs, config, Some(cluster));
        tokio::spawn(pipes::route_cluster_events(
            Arc::downgrade(&hub),
            cluster_events,
        ));
        hub
    }

    fn build(
        pool: WorkerPool,
        events: mpsc::UnboundedReceiver<MediaEvent>,
        media_codecs: Vec<RtpCodecCapability>,
        config: SignalConfig,
        cluster: Option<Arc<dyn Cluster>>,
    ) -> Arc<Self> {
        let hub = Arc::new(Self {
            pool,
            media_codecs,
            config,
            rooms: Mutex::new(HashMap::new()),
            routes: Mutex::new(HashMap::new()),
            draining: std::sync::atomic::AtomicBool::new(false),
            connections: std::sync::atomic::AtomicUsize::new(0),
            connections_changed: tokio::sync::Notify::new(),
            shutdown: tokio::sync::watch::Sender::new(false),
            stats: RequestStats::default(),
            cluster,
        });
        tokio::spawn(route_events(Arc::downgrade(&hub), events));
        pipes::start_sweeper(Arc::downgrade(&hub));
        hub
    }

    /// The worker pool.
    pub fn pool(&self) -> &WorkerPool {
        &self.pool
    }

    /// The cluster this server is a node of, if any.
    pub fn cluster(&self) -> Option<&Arc<dyn Cluster>> {
        self.cluster.as_ref()
    }

    /// Peers in the rooms of this server (this node's, in a cluster).
    pub fn peer_count(&self) -> usize {
        self.rooms().iter().map(|r| r.peers().len()).sum()
    }

    /// The signaling settings.
    pub fn config(&self) -> &SignalConfig {
        &self.config
    }

    /// Whether the server is shutting down (no new peers).
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts an open connection until the guard is dropped.
    pub fn connection_guard(self: &Arc<Self>) -> ConnectionGuard {
        self.connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }

    /// Resolves to true once every connection must close.
    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells every connection to close, then waits (at most `timeout`) until they have, so
    /// their last frames (`roomClosed`, close 1001) are written before the process exits.
    pub async fn close_connections(&self, timeout: std::time::Duration) {
        self.shutdown.send_replace(true);
        let wait = async {
            loop {
                let changed = self.connections_changed.notified();
                if self.connections.load(std::sync::atomic::Ordering::Relaxed) == 0 {
                    return;
                }
                changed.await;
            }
        };
        if tokio::time::timeout(timeout, wait).await.is_err() {
            tracing::warn!("connections still open after {timeout:?}");
        }
    }

    /// Stops accepting new peers.
    pub fn start_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Closes every room: its peers get `roomClosed {roomId, reason}`, their sessions forget
    /// the room and their connections are closed (1001); all media objects are released.
    pub async fn close_all_rooms(&self, reason: &str) {
        self.close_rooms(|_| true, reason).await;
    }

    /// Closes the rooms `select` picks, as [`Hub::close_all_rooms`] does; returns how many.
    pub async fn close_rooms(&self, select: impl Fn(&Room) -> bool, reason: &str) -> usize {
        let rooms: Vec<Arc<Room>> = {
            let mut map = self.rooms_table();
            let ids: Vec<String> = map
                .iter()
                .filter(|(_, e)| e.get().is_some_and(|r| select(r)))
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter()
                .filter_map(|id| map.remove(id))
                .filter_map(|e| e.get().cloned())
                .collect()
        };
        let closed = rooms.len();
        for room in rooms {
            room.broadcast(
                "",
                &ServerNotification::RoomClosed(RoomClosedNotification {
                    room_id: room.id.clone(),
                    reason: reason.to_owned(),
                }),
            );
            let peers: Vec<Peer> = {
                let mut peers = room.peers();
                room.closed.store(true, Ordering::Relaxed);
                peers.drain().map(|(_, p)| p).collect()
            };
            for peer in &peers {
                for id in peer.transports.keys() {
                    self.remove_route(id.0);
                }
                for id in peer.producers.keys() {
                    self.remove_route(id.0);
                }
                for id in peer.consumers.keys() {
                    self.remove_route(id.0);
                }
                peer.notifier.room_closed(Outgoing::Close(
                    close_code::GOING_AWAY,
                    format!("room closed: {reason}"),
                ));
                if let Some(cluster) = &self.cluster {
                    cluster.leave(&room.id, &peer.id).await;
                }
            }
            self.release_pipes(&room).await;
            room.routers.close().await;
            tracing::info!(room = %room.id, reason, "room closed");
        }
        closed
    }

    /// Request counters by method and outcome.
    pub fn request_stats(&self) -> &RequestStats {
        &self.stats
    }

    fn rooms_table(&self) -> MutexGuard<'_, HashMap<String, RoomEntry>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gets a room, creating it (and its router) if needed; `true` when this call created
    /// it. A room nobody joins is closed after `empty_room_timeout`. No lock is held while
    /// the worker creates the router: concurrent requests for the same new room wait for
    /// that one creation, others go on.
    pub async fn get_or_create_room(
        self: &Arc<Self>,
        room_id: &str,
    ) -> Result<(Arc<Room>, bool), SignalError> {
        loop {
            let entry = {
                let mut rooms = self.rooms_table();
                match rooms.get(room_id) {
                    Some(entry) => entry.clone(),
                    None => {
                        if self.is_draining() {
                            return Err(SignalError::unavailable("server shutting down"));
                        }
                        if rooms.len() >= self.config.limits.max_rooms {
                            return Err(SignalError::unavailable(format!(
                                "server full: {} rooms open",
                                rooms.len()
                            )));
                        }
                        let entry = RoomEntry::default();
                        rooms.insert(room_id.to_owned(), entry.clone());
                        entry
                    }
                }
            };
            let mut created = false;
            let result = entry
                .get_or_try_init(|| async {
                    let room = self.create_room(room_id).await?;
                    created = true;
                    Ok::<_, SignalError>(room)
                })
                .await
                .cloned();
            let room = match result {
                Ok(room) => room,
                Err(e) => {
                    self.remove_entry(room_id, &entry);
                    return Err(e);
                }
            };
            // The entry may have been dropped meanwhile (another creation of it failed):
            // a room created into it is in no table, so it is closed and we start over.
            let listed = self
                .rooms_table()
                .get(room_id)
                .is_some_and(|e| Arc::ptr_eq(e, &entry));
            if listed {
                if created {
                    self.expire_if_unjoined(&room);
                }
                return Ok((room, created));
            }
            if created {
                room.routers.close().await;
            }
        }
    }

    /// A room with a new router (not in the table yet).
    async fn create_room(&self, room_id: &str) -> Result<Arc<Room>, SignalError> {
        let router = self.pool.create_router(&self.media_codecs).await?;
        tracing::info!(room = room_id, router = %router.id(), worker = router.worker_index(), "room created");
        let (remote, changes) = pipes::remote_media(self.cluster.as_ref());
        let room = Arc::new(Room {
            id: room_id.to_owned(),
            routers: RoomRouters::new(
                router,
                self.media_codecs.clone(),
                self.pool.workers().len(),
                self.config.spread,
            ),
            peers: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            remote,
        });
        if let (Some(cluster), Some(changes)) = (&self.cluster, changes) {
            pipes::start_announcer(
                cluster.clone(),
                Arc::downgrade(&room),
                room.id.clone(),
                changes,
            );
        }
        Ok(room)
    }

    /// Removes `entry` from the table if it is still the one of `room_id`.
    fn remove_entry(&self, room_id: &str, entry: &RoomEntry) {
        let mut rooms = self.rooms_table();
        if rooms.get(room_id).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            rooms.remove(room_id);
        }
    }

    /// Closes `room` after `empty_room_timeout` if nobody is in it then.
    fn expire_if_unjoined(self: &Arc<Self>, room: &Arc<Room>) {
        let timeout = self.config.limits.empty_room_timeout;
        let (hub, room) = (Arc::downgrade(self), Arc::downgrade(room));
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let (Some(hub), Some(room)) = (hub.upgrade(), room.upgrade())
                && hub.close_room_if_empty(&room).await
            {
                tracing::info!(room = %room.id, ?timeout, "room nobody joined expired");
            }
        });
    }

    /// Gets a room if it exists (and its router is created).
    pub fn room(&self, room_id: &str) -> Option<Arc<Room>> {
        self.rooms_table().get(room_id)?.get().cloned()
    }

    /// Snapshot of all rooms (those whose router is created).
    pub fn rooms(&self) -> Vec<Arc<Room>> {
        self.rooms_table()
            .values()
            .filter_map(|e| e.get().cloned())
            .collect()
    }

    /// Rooms open or being created.
    pub fn room_count(&self) -> usize {
        self.rooms_table().len()
    }

    /// Whether `room` is still open and nobody is in it.
    pub fn is_open_and_empty(&self, room: &Arc<Room>) -> bool {
        let peers = room.peers();
        peers.is_empty() && !room.is_closed()
    }

    /// Closes a room if nobody is left in it; whether it did.
    pub async fn close_room_if_empty(&self, room: &Arc<Room>) -> bool {
        {
            let mut rooms = self.rooms_table();
            let peers = room.peers();
            let listed = rooms
                .get(&room.id)
                .and_then(|e| e.get())
                .is_some_and(|r| Arc::ptr_eq(r, room));
            if !peers.is_empty() || !listed {
                return false;
            }
            room.closed.store(true, Ordering::Relaxed);
            rooms.remove(&room.id);
        }
        self.release_pipes(room).await;
        room.routers.close().await;
        tracing::info!(room = %room.id, "room closed");
        true
    }

    /// Forgets consumers the router closed: their routes and their owners' records; each
    /// owner gets `consumerClosed` with the reason `reason` gives (`None`: not told).
    pub fn forget_consumers(
        &self,
        room: &Room,
        closed: &[ClosedConsumer],
        reason: impl Fn(&Peer, &ClosedConsumer) -> Option<&'static str>,
    ) {
        let mut peers = room.peers();
        for c in closed {
            self.remove_route(c.consumer_id.0);
            let Some(peer) = peers
                .values_mut()
                .find(|p| p.consumers.contains_key(&c.consumer_id))
            else {
                continue;
            };
            peer.consumers.remove(&c.consumer_id);
            if let Some(reason) = reason(peer, c) {
                peer.notifier.notify(&ServerNotification::ConsumerClosed(
                    ConsumerClosedNotification {
                        consumer_id: c.consumer_id.to_string(),
                        producer_id: c.producer_id.to_string(),
                        reason: reason.to_owned(),
                    },
                ));
            }
        }
    }

    /// Forgets data consumers the router closed: their routes and their owners' records;
    /// each owner `tell` picks gets `dataConsumerClosed`.
    pub fn forget_data_consumers(
        &self,
        room: &Room,
        closed: &[ClosedDataConsumer],
        tell: impl Fn(&Peer, &ClosedDataConsumer) -> bool,
    ) {
        let mut peers = room.peers();
        for c in closed {
            self.remove_route(c.data_consumer_id.0);
            let Some(peer) = peers
                .values_mut()
                .find(|p| p.data_consumers.contains_key(&c.data_consumer_id))
            else {
                continue;
            };
            peer.data_consumers.remove(&c.data_consumer_id);
            if tell(peer, c) {
                peer.notifier
                    .notify(&ServerNotification::DataConsumerClosed(
                        DataConsumerIdRequest {
                            data_consumer_id: c.data_consumer_id.to_string(),
                        },
                    ));
            }
        }
    }

    /// Routes worker events about `id` to `notifier`.
    pub fn add_route(&self, id: uuid::Uuid, notifier: Notifier) {
        self.routes().insert(id, notifier);
    }

    /// Stops routing events about `id`.
    pub fn remove_route(&self, id: uuid::Uuid) {
        self.routes().remove(&id);
        self.stats.forget(id);
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

/// Keeps a connection counted in its hub while alive.
pub struct ConnectionGuard(Arc<Hub>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.0.connections_changed.notify_waiters();
    }
}

/// Delivers worker events as notifications to the peers owning the objects.
async fn route_events(hub: std::sync::Weak<Hub>, mut events: mpsc::UnboundedReceiver<MediaEvent>) {
    while let Some(event) = events.recv().await {
        let Some(hub) = hub.upgrade() else { return };
        // (object whose owner is told, notification)
        let (owner, notification) = match event {
            MediaEvent::TransportStateChanged {
                transport_id,
                ice_state,
                dtls_state,
            } => {
                if dtls_state == DtlsState::Connected
                    && matches!(ice_state, IceState::Connected | IceState::Completed)
                {
                    hub.stats
                        .transport_connected(transport_id.0, std::time::Instant::now());
                }
                (
                    transport_id.0,
                    ServerNotification::TransportStateChanged(TransportStateChangedNotification {
                        transport_id: transport_id.to_string(),
                        ice_state,
                        dtls_state,
                    }),
                )
            }
            MediaEvent::IceRestartRequired { transport_id } => (
                transport_id.0,
                ServerNotification::IceRestartRequired(IceRestartRequiredNotification {
                    transport_id: transport_id.to_string(),
                }),
            ),
            MediaEvent::ConsumerLayersChanged {
                consumer_id,
                spatial_layer,
                temporal_layer,
            } => (
                consumer_id.0,
                ServerNotification::ConsumerLayersChanged(ConsumerLayersChangedNotification {
                    consumer_id: consumer_id.to_string(),
                    spatial_layer,
                    temporal_layer,
                }),
            ),
            MediaEvent::ConsumerScore {
                consumer_id,
                score,
                producer_score,
            } => (
                consumer_id.0,
                ServerNotification::ConsumerScore(ConsumerScoreNotification {
                    consumer_id: consumer_id.to_string(),
                    score,
                    producer_score,
                }),
            ),
            MediaEvent::ProducerScore { producer_id, score } => (
                producer_id.0,
                ServerNotification::ProducerScore(ProducerScoreNotification {
                    producer_id: producer_id.to_string(),
                    score,
                }),
            ),
            MediaEvent::ActiveSpeaker {
                router_id,
                producer_id,
                volume,
            } => {
                let rooms = hub.rooms();
                let Some(room) = rooms.iter().find(|r| r.routers.contains(router_id)) else {
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
                        &ServerNotification::ActiveSpeaker(ActiveSpeakerNotification {
                            peer_id,
                            producer_id: producer_id.to_string(),
                            volume,
                        }),
                    );
                }
                continue;
            }
            MediaEvent::WorkerPipeClosed {
                router_id,
                transport_id,
                closed,
            } => {
                // The other side closed first (its producer or worker is gone): the
                // consumers of the pipe producer here closed with it.
                let rooms = hub.rooms();
                if let Some(room) = rooms.iter().find(|r| r.routers.contains(router_id)) {
                    room.routers.pipe_closed(router_id, transport_id, &closed);
                    hub.forget_consumers(room, &closed.consumers, |_, _| Some("producerClosed"));
                    hub.forget_data_consumers(room, &closed.data_consumers, |_, _| true);
                }
                continue;
            }
            MediaEvent::WorkerRestarted { worker, routers } => {
                tracing::error!(
                    worker,
                    "worker failure: closing its {} rooms",
                    routers.len()
                );
                hub.close_rooms(
                    |r| routers.iter().any(|id| r.routers.contains(*id)),
                    "worker failure",
                )
                .await;
                continue;
            }
        };
        if let Some(n) = hub.route(owner) {
            n.notify(&notification);
        }
    }
}
