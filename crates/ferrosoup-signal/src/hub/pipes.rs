//! Media across the nodes of a cluster (docs/cluster.md, "Pipe transports").
//!
//! A room here knows the producers of its peers on other nodes ([`RemoteMedia`]): from the
//! records `joinRoom` reads and from the cluster's producer events, which also reach this
//! node's peers as `newProducer`, `producerClosed`, `producerPaused` / `producerResumed`.
//! The first `consume` of such a producer opens a pipe to its node: a plain transport with
//! SRTP (`AEAD_AES_256_GCM`) at each end, a pipe consumer there and, here, a pipe producer
//! under the same producer id, which every consumer of the producer on this node consumes.
//! One pipe per producer per node pair; it closes when the producer closes, when its node
//! dies, or after [`PIPE_LINGER`] without a consumer here. This node's own producers'
//! changes are announced to the others in order, one task per room.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{OnceCell, mpsc};

use ferrosoup_proto::signaling::{
    PeerJoinedNotification, PeerLeftNotification, ProducerPeerNotification, ServerNotification,
};
use ferrosoup_room::engine::PlainRemote;
use ferrosoup_room::plain::{PlainOptions, SrtpProfile};
use ferrosoup_room::router::PlainTransportParams;
use ferrosoup_room::{ProducerId, TransportId};

use super::{Hub, ProducerInfo, Room};
use crate::cluster::{
    Cluster, ClusterEvent, ClusterPeer, PipeEnd, PipeOpen, PipeOpened, ProducerChange,
};
use crate::error::SignalError;
use crate::srtp_keys;

/// A pipe whose producer has had no consumer on this node for this long is closed.
pub const PIPE_LINGER: Duration = Duration::from_secs(10);
/// How often idle pipes are looked for.
const PIPE_SWEEP_INTERVAL: Duration = Duration::from_secs(2);

/// A producer of a peer on another node.
#[derive(Clone, Debug)]
pub struct RemoteProducer {
    /// Its peer.
    pub peer_id: String,
    /// The node of that peer.
    pub node: String,
    /// Kind, appData, paused.
    pub info: ProducerInfo,
}

/// A pipe bringing a remote producer here: its transport, once open.
type IncomingPipe = Arc<OnceCell<TransportId>>;

/// What one room of this node knows of media on other nodes.
#[derive(Default)]
pub struct RemoteMedia {
    /// Producers of the room's peers on other nodes.
    producers: Mutex<HashMap<ProducerId, RemoteProducer>>,
    /// Pipes bringing remote producers here (opening or open).
    incoming: Mutex<HashMap<ProducerId, IncomingPipe>>,
    /// Since when an open incoming pipe has had no consumer here.
    idle_since: Mutex<HashMap<ProducerId, Instant>>,
    /// Pipes taking this node's producers to other nodes: (node, producer) → transport.
    outgoing: Mutex<HashMap<(String, ProducerId), TransportId>>,
    /// This node's producer changes, to announce in order (in a cluster).
    changes: Option<mpsc::UnboundedSender<(String, ProducerChange)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RemoteMedia {
    /// The producers of peers on other nodes.
    pub fn producers(&self) -> Vec<(ProducerId, RemoteProducer)> {
        lock(&self.producers)
            .iter()
            .map(|(id, p)| (*id, p.clone()))
            .collect()
    }

    /// Whether `id` is a producer of a peer on another node.
    pub fn has_producer(&self, id: ProducerId) -> bool {
        lock(&self.producers).contains_key(&id)
    }

    /// Learns the producers of peers on other nodes from their records (`joinRoom`).
    pub fn learn(&self, peers: &[ClusterPeer]) {
        let mut known = lock(&self.producers);
        for peer in peers {
            for p in &peer.producers {
                if let Some(id) = ProducerId::parse(&p.producer_id) {
                    known.entry(id).or_insert_with(|| RemoteProducer {
                        peer_id: peer.peer_id.clone(),
                        node: peer.node.clone(),
                        info: ProducerInfo {
                            kind: p.kind,
                            app_data: p.app_data.clone(),
                            paused: p.paused,
                        },
                    });
                }
            }
        }
    }
}

impl Room {
    /// Queues the announcement of a change of `peer_id`'s producer to the other nodes
    /// (nothing without a cluster).
    pub fn announce(&self, peer_id: &str, change: ProducerChange) {
        if let Some(tx) = &self.remote.changes {
            let _ = tx.send((peer_id.to_owned(), change));
        }
    }

    /// What the room knows of media on other nodes.
    pub fn remote(&self) -> &RemoteMedia {
        &self.remote
    }
}

/// The room's remote-media state; with a cluster, the task announcing its producer
/// changes is started once the room exists ([`start_announcer`]).
pub fn remote_media(
    cluster: Option<&Arc<dyn Cluster>>,
) -> (
    RemoteMedia,
    Option<mpsc::UnboundedReceiver<(String, ProducerChange)>>,
) {
    match cluster {
        Some(_) => {
            let (tx, rx) = mpsc::unbounded_channel();
            let media = RemoteMedia {
                changes: Some(tx),
                ..RemoteMedia::default()
            };
            (media, Some(rx))
        }
        None => (RemoteMedia::default(), None),
    }
}

/// Announces a room's producer changes in the order they happened, each with the peer's
/// record as it is then (so a later joiner on another node reads its producers); ends with
/// the room.
pub fn start_announcer(
    cluster: Arc<dyn Cluster>,
    room: Weak<Room>,
    room_id: String,
    mut changes: mpsc::UnboundedReceiver<(String, ProducerChange)>,
) {
    tokio::spawn(async move {
        while let Some((peer_id, change)) = changes.recv().await {
            let record = match room.upgrade() {
                Some(room) => room
                    .peers()
                    .get(&peer_id)
                    .map(|p| p.cluster_record(cluster.node_id())),
                None => None,
            };
            // A peer gone already: the event still tells the others; its record goes with
            // its leave.
            cluster
                .producer_changed(&room_id, &peer_id, record.as_ref(), change)
                .await;
        }
    });
}

/// Closes pipes idle for [`PIPE_LINGER`], pipes out of producers gone, and pipes between
/// workers idle for theirs ([`ferrosoup_room::Spread::pipe_linger`]), until the hub is
/// gone.
pub fn start_sweeper(hub: Weak<Hub>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(PIPE_SWEEP_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(hub) = hub.upgrade() else { return };
            for room in hub.rooms() {
                hub.sweep_pipes(&room, Instant::now()).await;
                room.routers.close_idle_pipes(Instant::now()).await;
            }
        }
    });
}

/// The options of either end of a pipe.
fn pipe_options() -> PlainOptions {
    PlainOptions {
        comedia: false,
        rtcp_mux: true,
        srtp: Some(SrtpProfile::AeadAes256Gcm),
    }
}

/// This end of a pipe as the other node sees it: at `announced` (`PIPE_ANNOUNCED_IP`) or
/// the transport's own address.
fn pipe_end(
    params: &PlainTransportParams,
    announced: Option<IpAddr>,
) -> Result<PipeEnd, SignalError> {
    let srtp = params
        .srtp
        .as_ref()
        .and_then(srtp_keys::to_parameters)
        .ok_or_else(|| SignalError::internal("pipe transport without an SRTP key"))?;
    Ok(PipeEnd {
        ip: announced.unwrap_or(params.ip),
        port: params.port,
        srtp,
    })
}

/// Where to send to the other end of a pipe, with its key (`AEAD_AES_256_GCM` only).
fn remote_end(end: &PipeEnd) -> Result<PlainRemote, SignalError> {
    let key = srtp_keys::from_parameters(&end.srtp)?;
    if key.profile != SrtpProfile::AeadAes256Gcm {
        return Err(SignalError::bad_request(
            "transport.srtp.cryptoSuite: pipes use AEAD_AES_256_GCM",
        ));
    }
    if end.port == 0 {
        return Err(SignalError::bad_request("transport.port: must be 1..65535"));
    }
    Ok(PlainRemote {
        rtp: Some(SocketAddr::new(end.ip, end.port)),
        rtcp: None,
        srtp: Some(key),
    })
}

impl Hub {
    /// Makes a producer of a peer on another node consumable here: opens its pipe unless
    /// it is open. 404 when the room knows no such producer, the node's error or 503 when
    /// it does not answer.
    pub async fn pipe_in(
        &self,
        room: &Arc<Room>,
        producer_id: ProducerId,
    ) -> Result<(), SignalError> {
        let Some(cluster) = self.cluster.clone() else {
            return Err(SignalError::not_found("producer"));
        };
        let node_of = || {
            lock(&room.remote.producers)
                .get(&producer_id)
                .map(|p| p.node.clone())
        };
        // Not announced here yet (its message may still be on the way): the records tell.
        if node_of().is_none() {
            room.remote.learn(&cluster.peers(&room.id).await?);
        }
        let Some(node) = node_of() else {
            return Err(SignalError::not_found("producer"));
        };
        let pipe = lock(&room.remote.incoming)
            .entry(producer_id)
            .or_default()
            .clone();
        let opened = pipe
            .get_or_try_init(|| self.open_pipe_in(room, &cluster, &node, producer_id))
            .await
            .copied();
        match opened {
            Ok(_) => {
                lock(&room.remote.idle_since).remove(&producer_id);
                Ok(())
            }
            Err(e) => {
                let mut incoming = lock(&room.remote.incoming);
                if incoming
                    .get(&producer_id)
                    .is_some_and(|p| Arc::ptr_eq(p, &pipe) && p.get().is_none())
                {
                    incoming.remove(&producer_id);
                }
                Err(e)
            }
        }
    }

    /// Opens the pipe of `producer_id` from `node`: this end first, then the handshake,
    /// then the pipe producer; the transport of this end.
    async fn open_pipe_in(
        &self,
        room: &Arc<Room>,
        cluster: &Arc<dyn Cluster>,
        node: &str,
        producer_id: ProducerId,
    ) -> Result<TransportId, SignalError> {
        let params = room
            .routers
            .home()
            .create_plain_transport(pipe_options())
            .await?;
        let request = PipeOpen {
            room_id: room.id.clone(),
            producer_id: producer_id.to_string(),
            transport: pipe_end(&params, self.config.pipe_announced_ip)?,
        };
        let mut answered = false;
        let connected = async {
            let answer = cluster.open_pipe(node, request).await?;
            answered = true;
            room.routers
                .home()
                .connect_plain_transport(params.id, remote_end(&answer.transport)?)
                .await?;
            room.routers
                .home()
                .produce_piped(
                    params.id,
                    producer_id,
                    answer.kind,
                    answer.rtp_parameters,
                    answer.paused,
                )
                .await?;
            // Closed on its node while the pipe opened: the closing event found no pipe.
            if !room.remote.has_producer(producer_id) {
                return Err(SignalError::not_found("producer"));
            }
            Ok(())
        }
        .await;
        if let Err(e) = connected {
            let _ = room.routers.home().close_transport(params.id).await;
            if answered {
                cluster
                    .close_pipe(node, &room.id, &producer_id.to_string())
                    .await;
            }
            tracing::warn!(room = %room.id, producer = %producer_id, node, "pipe not opened: {}", e.reason);
            return Err(e);
        }
        tracing::info!(room = %room.id, producer = %producer_id, node, "pipe in opened");
        Ok(params.id)
    }

    /// Serves another node's [`PipeOpen`]: this node's end of the pipe and a pipe consumer
    /// of the producer on it.
    async fn serve_pipe(&self, from: &str, request: PipeOpen) -> Result<PipeOpened, SignalError> {
        let room = self
            .room(&request.room_id)
            .ok_or_else(|| SignalError::not_found("room"))?;
        let producer_id = ProducerId::parse(&request.producer_id)
            .filter(|id| room.peers().values().any(|p| p.producers.contains_key(id)))
            .ok_or_else(|| SignalError::not_found("producer"))?;
        let remote = remote_end(&request.transport)?;
        let params = room
            .routers
            .home()
            .create_plain_transport(pipe_options())
            .await?;
        let piped = async {
            room.routers
                .home()
                .connect_plain_transport(params.id, remote)
                .await?;
            let piped = room
                .routers
                .home()
                .consume_pipe(params.id, producer_id)
                .await?;
            Ok::<_, SignalError>((piped, pipe_end(&params, self.config.pipe_announced_ip)?))
        }
        .await;
        let (piped, end) = match piped {
            Ok(p) => p,
            Err(e) => {
                let _ = room.routers.home().close_transport(params.id).await;
                return Err(e);
            }
        };
        let replaced =
            lock(&room.remote.outgoing).insert((from.to_owned(), producer_id), params.id);
        if let Some(old) = replaced {
            let _ = room.routers.home().close_transport(old).await;
        }
        tracing::info!(room = %room.id, producer = %producer_id, to = from, "pipe out opened");
        Ok(PipeOpened {
            producer_id: producer_id.to_string(),
            kind: piped.kind,
            rtp_parameters: piped.rtp_parameters,
            paused: piped.producer_paused,
            transport: end,
        })
    }

    /// Closes the pipe bringing `producer_id` here, if any: its consumers here close
    /// (`consumerClosed`), and with `tell_node` the producer's node closes its end.
    async fn close_pipe_in(&self, room: &Room, producer_id: ProducerId, tell_node: Option<&str>) {
        let pipe = lock(&room.remote.incoming).remove(&producer_id);
        lock(&room.remote.idle_since).remove(&producer_id);
        let Some(transport) = pipe.and_then(|p| p.get().copied()) else {
            return;
        };
        if let Ok(closed) = room.routers.close_producer(producer_id).await {
            self.forget_consumers(room, &closed.consumers, |_, _| Some("producerClosed"));
        }
        let _ = room.routers.home().close_transport(transport).await;
        if let (Some(node), Some(cluster)) = (tell_node, &self.cluster) {
            cluster
                .close_pipe(node, &room.id, &producer_id.to_string())
                .await;
        }
        tracing::info!(room = %room.id, producer = %producer_id, "pipe in closed");
    }

    /// Closes pipes out of this node: those to `node` (all of them when `producer` is
    /// `None`).
    async fn close_pipes_out(&self, room: &Room, node: &str, producer: Option<ProducerId>) {
        let closing: Vec<TransportId> = {
            let mut outgoing = lock(&room.remote.outgoing);
            let keys: Vec<(String, ProducerId)> = outgoing
                .keys()
                .filter(|(n, p)| n == node && producer.is_none_or(|id| id == *p))
                .cloned()
                .collect();
            keys.iter().filter_map(|k| outgoing.remove(k)).collect()
        };
        for transport in closing {
            let _ = room.routers.home().close_transport(transport).await;
        }
    }

    /// Before a room closes here: the nodes piping producers to it close their ends.
    pub(super) async fn release_pipes(&self, room: &Room) {
        let Some(cluster) = &self.cluster else { return };
        let incoming: Vec<ProducerId> = lock(&room.remote.incoming)
            .drain()
            .map(|(id, _)| id)
            .collect();
        let nodes: HashMap<ProducerId, String> = lock(&room.remote.producers)
            .iter()
            .map(|(id, p)| (*id, p.node.clone()))
            .collect();
        for id in incoming {
            if let Some(node) = nodes.get(&id) {
                cluster.close_pipe(node, &room.id, &id.to_string()).await;
            }
        }
    }

    /// One sweep of a room's pipes: incoming ones without a consumer here for
    /// [`PIPE_LINGER`] close; outgoing ones whose producer is gone close.
    async fn sweep_pipes(&self, room: &Room, now: Instant) {
        let open: Vec<ProducerId> = lock(&room.remote.incoming)
            .iter()
            .filter(|(_, p)| p.get().is_some())
            .map(|(id, _)| *id)
            .collect();
        let consumed: Vec<ProducerId> = room
            .peers()
            .values()
            .flat_map(|p| p.consumers.values().copied())
            .collect();
        let mut expired = Vec::new();
        {
            let mut idle = lock(&room.remote.idle_since);
            for id in open {
                if consumed.contains(&id) {
                    idle.remove(&id);
                } else if now.duration_since(*idle.entry(id).or_insert(now)) >= PIPE_LINGER {
                    expired.push(id);
                }
            }
        }
        for id in expired {
            let node = lock(&room.remote.producers)
                .get(&id)
                .map(|p| p.node.clone());
            self.close_pipe_in(room, id, node.as_deref()).await;
        }
        let gone: Vec<(String, ProducerId)> = {
            let peers = room.peers();
            lock(&room.remote.outgoing)
                .keys()
                .filter(|(_, id)| !peers.values().any(|p| p.producers.contains_key(id)))
                .cloned()
                .collect()
        };
        for (node, id) in gone {
            self.close_pipes_out(room, &node, Some(id)).await;
        }
    }

    /// A producer of a peer on another node is gone: the room hears `producerClosed` and
    /// its pipe here closes.
    async fn remote_producer_closed(&self, room: &Room, producer_id: ProducerId) {
        let Some(producer) = lock(&room.remote.producers).remove(&producer_id) else {
            return;
        };
        room.broadcast(
            "",
            &ServerNotification::ProducerClosed(ProducerPeerNotification {
                producer_id: producer_id.to_string(),
                peer_id: producer.peer_id,
            }),
        );
        self.close_pipe_in(room, producer_id, None).await;
    }

    /// What a producer of a peer on another node did, for this node's peers of the room.
    async fn remote_producer_changed(
        &self,
        room: &Room,
        peer_id: String,
        node: String,
        change: ProducerChange,
    ) {
        match change {
            ProducerChange::Opened(p) => {
                let Some(id) = ProducerId::parse(&p.producer_id) else {
                    return;
                };
                let info = ProducerInfo {
                    kind: p.kind,
                    app_data: p.app_data,
                    paused: p.paused,
                };
                let notification = super::room_producer(id, &peer_id, &info);
                lock(&room.remote.producers).insert(
                    id,
                    RemoteProducer {
                        peer_id,
                        node,
                        info,
                    },
                );
                room.broadcast("", &ServerNotification::NewProducer(notification));
            }
            ProducerChange::Closed { producer_id } => {
                if let Some(id) = ProducerId::parse(&producer_id) {
                    self.remote_producer_closed(room, id).await;
                }
            }
            ProducerChange::Paused {
                producer_id,
                paused,
            } => {
                let Some(id) = ProducerId::parse(&producer_id) else {
                    return;
                };
                match lock(&room.remote.producers).get_mut(&id) {
                    Some(p) => p.info.paused = paused,
                    None => return,
                }
                room.broadcast_producer_paused("", producer_id, peer_id, paused);
                let piped = lock(&room.remote.incoming)
                    .get(&id)
                    .is_some_and(|p| p.get().is_some());
                if piped && let Ok(changed) = room.routers.set_producer_paused(id, paused).await {
                    room.notify_consumers_paused(&changed, paused);
                }
            }
        }
    }

    /// Hands what happened on another node to this node's peers and pipes.
    async fn on_cluster_event(self: &Arc<Self>, event: ClusterEvent) {
        match event {
            ClusterEvent::PeerJoined { room_id, peer } => {
                if let Some(room) = self.room(&room_id) {
                    room.remote.learn(std::slice::from_ref(&peer));
                    room.broadcast(
                        "",
                        &ServerNotification::PeerJoined(PeerJoinedNotification {
                            peer_id: peer.peer_id,
                            display_name: peer.display_name,
                            app_data: peer.app_data,
                        }),
                    );
                }
            }
            ClusterEvent::PeerLeft { room_id, peer_id } => {
                if let Some(room) = self.room(&room_id) {
                    let producers: Vec<ProducerId> = lock(&room.remote.producers)
                        .iter()
                        .filter(|(_, p)| p.peer_id == peer_id)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in producers {
                        self.remote_producer_closed(&room, id).await;
                    }
                    room.broadcast(
                        "",
                        &ServerNotification::PeerLeft(PeerLeftNotification { peer_id }),
                    );
                }
            }
            ClusterEvent::RoomClosed { room_id, reason } => {
                self.close_rooms(|r| r.id == room_id, &reason).await;
            }
            ClusterEvent::Producer {
                room_id,
                peer_id,
                node,
                change,
            } => {
                if let Some(room) = self.room(&room_id) {
                    self.remote_producer_changed(&room, peer_id, node, change)
                        .await;
                }
            }
            ClusterEvent::PipeRequested {
                from,
                request_id,
                request,
            } => {
                // Served aside: the events of other rooms go on meanwhile.
                let hub = self.clone();
                tokio::spawn(async move {
                    let answer = hub.serve_pipe(&from, request).await;
                    if let Some(cluster) = &hub.cluster {
                        cluster.answer_pipe(&from, &request_id, answer).await;
                    }
                });
            }
            ClusterEvent::PipeClosed {
                from,
                room_id,
                producer_id,
            } => {
                if let (Some(room), Some(id)) =
                    (self.room(&room_id), ProducerId::parse(&producer_id))
                {
                    self.close_pipes_out(&room, &from, Some(id)).await;
                }
            }
            ClusterEvent::NodeDown { node } => {
                for room in self.rooms() {
                    self.close_pipes_out(&room, &node, None).await;
                    let producers: Vec<ProducerId> = lock(&room.remote.producers)
                        .iter()
                        .filter(|(_, p)| p.node == node)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in producers {
                        self.remote_producer_closed(&room, id).await;
                    }
                }
            }
        }
    }
}

/// Hands what other nodes' peers do to this node's peers of the room, in order.
pub async fn route_cluster_events(
    hub: Weak<Hub>,
    mut events: mpsc::UnboundedReceiver<ClusterEvent>,
) {
    while let Some(event) = events.recv().await {
        let Some(hub) = hub.upgrade() else { return };
        hub.on_cluster_event(event).await;
    }
}
