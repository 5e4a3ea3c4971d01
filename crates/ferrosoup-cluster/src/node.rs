//! [`RedisCluster`]: this node's membership of the cluster, over Redis.
//!
//! Commands go through one multiplexed [`ConnectionManager`] (it reconnects by itself);
//! the events channel has its own connection, owned by the subscriber task. Background
//! tasks: the subscriber (messages of other nodes → [`ClusterEvent`]s for the hub) and the
//! heartbeat (refreshes this node's key with its load, re-registers its peers if the others
//! reaped it while it was cut off, and reaps dead nodes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use ferrosoup_proto::signaling::ErrorCode;
use ferrosoup_signal::cluster::{PipeOpen, PipeOpened, ProducerChange};
use ferrosoup_signal::{Cluster, ClusterEvent, ClusterPeer, SignalError};

use crate::load::{LoadMeter, NodeRecord, NodeSample};
use crate::message::{Message, RpcMessage};
use crate::{ClusterError, ClusterSettings, keys};

/// Longest wait for one Redis command before the request that needed it gives up (503).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for a room's join lock.
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// A room's join lock expires after this long if its holder dies while holding it.
const LOCK_TTL_MS: u64 = 5_000;
/// Pause before the subscriber reconnects after losing its connection.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(250);
/// Longest wait for another node's answer to a pipe request.
const PIPE_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Replaces a peer's record with a new one, only if the room still has it and it names
/// this node (a peer that left, or was reaped, is not brought back). KEYS: room peers;
/// ARGV: peer id, record, node.
const UPDATE_PEER_SCRIPT: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local ok, peer = pcall(cjson.decode, v)
if not ok or type(peer) ~= 'table' or peer.node ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// Pipe requests of this node waiting for their answer, by request id.
type PendingPipes = Arc<Mutex<HashMap<String, tokio::sync::oneshot::Sender<RpcMessage>>>>;

/// Removes a peer of `node` from a room (only if the room's record of it names that node),
/// from the node's member set, and the room from the room set once it is empty. 1 when it
/// removed the peer. KEYS: room peers, node peers, rooms; ARGV: peer id, member, room id, node.
const LEAVE_SCRIPT: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[2])
if not v then return 0 end
local ok, peer = pcall(cjson.decode, v)
if ok and type(peer) == 'table' and peer.node ~= ARGV[4] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[3]) end
return 1
";

/// Deletes a lock only if it still holds our token. KEYS: lock; ARGV: token.
const UNLOCK_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// This node's connection to the cluster.
pub struct RedisCluster {
    settings: ClusterSettings,
    conn: ConnectionManager,
    started_at: u64,
    leave_script: redis::Script,
    unlock_script: redis::Script,
    update_peer_script: redis::Script,
    pending_pipes: PendingPipes,
    /// Held during a heartbeat; `true` once the node has deregistered (no more beats).
    beat: tokio::sync::Mutex<bool>,
}

/// Unix time in milliseconds.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs a Redis command future, bounded by [`COMMAND_TIMEOUT`].
async fn bounded<T>(
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, f).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ClusterError::Redis(redis::RedisError::from((
            redis::ErrorKind::Io,
            "no answer in time",
        )))),
    }
}

fn unreachable_error(e: ClusterError) -> SignalError {
    tracing::warn!("cluster: {e}");
    SignalError::unavailable(format!("cluster unavailable: {e}"))
}

impl RedisCluster {
    /// Connects to Redis, subscribes to the events channel and registers this node (its
    /// heartbeat key and its id in the node set). Fails when Redis cannot be reached or a
    /// live node already has this id. The receiver yields what other nodes' peers do.
    pub async fn connect(
        settings: ClusterSettings,
    ) -> Result<(Arc<Self>, mpsc::UnboundedReceiver<ClusterEvent>), ClusterError> {
        let client = redis::Client::open(settings.redis_url.as_str())?;
        let conn = bounded(client.get_connection_manager()).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        // Subscribed before registering: no event after our registration is missed.
        let pubsub = subscribe(&client, &settings.node_id).await?;
        let cluster = Arc::new(Self {
            conn,
            started_at: unix_ms(),
            leave_script: redis::Script::new(LEAVE_SCRIPT),
            unlock_script: redis::Script::new(UNLOCK_SCRIPT),
            update_peer_script: redis::Script::new(UPDATE_PEER_SCRIPT),
            pending_pipes: PendingPipes::default(),
            beat: tokio::sync::Mutex::new(false),
            settings,
        });
        let record = cluster.record(Default::default(), Vec::new());
        let registered: Option<String> = bounded(
            redis::cmd("SET")
                .arg(keys::node(cluster.node_id()))
                .arg(serde_json::to_string(&record)?)
                .arg("NX")
                .arg("PX")
                .arg(cluster.timeout_ms())
                .query_async(&mut cluster.conn()),
        )
        .await?;
        if registered.is_none() {
            return Err(ClusterError::DuplicateNode(cluster.node_id().to_owned()));
        }
        bounded(
            redis::cmd("SADD")
                .arg(keys::NODES)
                .arg(cluster.node_id())
                .query_async::<()>(&mut cluster.conn()),
        )
        .await?;
        tokio::spawn(run_subscriber(
            client,
            pubsub,
            cluster.node_id().to_owned(),
            cluster.pending_pipes.clone(),
            tx,
        ));
        tracing::info!(node = cluster.node_id(), timeout = ?cluster.settings.node_timeout, "joined the cluster");
        Ok((cluster, rx))
    }

    /// Starts the heartbeat: every [`ClusterSettings::heartbeat_interval`] the node's key is
    /// refreshed with the load computed from `sample`, and dead nodes are reaped. Stops when
    /// the cluster is dropped or [`RedisCluster::deregister`] ran.
    pub fn start_heartbeat(
        self: &Arc<Self>,
        sample: impl Fn() -> (NodeSample, Vec<(String, ClusterPeer)>) + Send + Sync + 'static,
    ) {
        let cluster: Weak<Self> = Arc::downgrade(self);
        let interval = self.settings.heartbeat_interval();
        tokio::spawn(async move {
            let mut meter = LoadMeter::default();
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(cluster) = cluster.upgrade() else {
                    return;
                };
                let (sample, members) = sample();
                if !cluster.heartbeat(&mut meter, sample, members).await {
                    return;
                }
                cluster.reap_dead_nodes().await;
            }
        });
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    /// The live nodes (whose heartbeat key has not expired).
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, ClusterError> {
        let ids: Vec<String> = bounded(
            redis::cmd("SMEMBERS")
                .arg(keys::NODES)
                .query_async(&mut self.conn()),
        )
        .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let node_keys: Vec<String> = ids.iter().map(|id| keys::node(id)).collect();
        let values: Vec<Option<String>> = bounded(
            redis::cmd("MGET")
                .arg(&node_keys)
                .query_async(&mut self.conn()),
        )
        .await?;
        let mut nodes: Vec<NodeRecord> = values
            .into_iter()
            .flatten()
            .filter_map(|v| serde_json::from_str(&v).ok())
            .collect();
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(nodes)
    }

    /// The rooms with peers anywhere in the cluster, each with its peers.
    pub async fn rooms(&self) -> Result<Vec<(String, Vec<ClusterPeer>)>, ClusterError> {
        let mut ids: Vec<String> = bounded(
            redis::cmd("SMEMBERS")
                .arg(keys::ROOMS)
                .query_async(&mut self.conn()),
        )
        .await?;
        ids.sort();
        let mut rooms = Vec::with_capacity(ids.len());
        for id in ids {
            let peers = self.room_peers(&id).await?;
            rooms.push((id, peers));
        }
        Ok(rooms)
    }

    /// A room's peers anywhere in the cluster (empty for an unknown room).
    pub async fn room_peers(&self, room_id: &str) -> Result<Vec<ClusterPeer>, ClusterError> {
        let all: HashMap<String, String> = bounded(
            redis::cmd("HGETALL")
                .arg(keys::room_peers(room_id))
                .query_async(&mut self.conn()),
        )
        .await?;
        let mut peers: Vec<ClusterPeer> = all
            .values()
            .filter_map(|v| serde_json::from_str(v).ok())
            .collect();
        peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        Ok(peers)
    }

    /// Leaves the cluster (graceful shutdown): stops the heartbeat, removes the peers still
    /// registered for this node (the others get `peerLeft`) and every key naming it.
    pub async fn deregister(&self) {
        let mut stopped = self.beat.lock().await;
        *stopped = true;
        if let Err(e) = self.reap(self.node_id()).await {
            tracing::warn!("cluster: deregistering: {e}");
        }
        tracing::info!(node = self.node_id(), "left the cluster");
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    fn timeout_ms(&self) -> u64 {
        self.settings.node_timeout.as_millis() as u64
    }

    fn record(&self, load: crate::NodeLoad, rooms: Vec<String>) -> NodeRecord {
        NodeRecord {
            node_id: self.node_id().to_owned(),
            started_at: self.started_at,
            heartbeat_at: unix_ms(),
            load,
            rooms,
        }
    }

    async fn publish(&self, message: &Message) -> Result<(), ClusterError> {
        self.publish_to(keys::EVENTS, &serde_json::to_string(message)?)
            .await
    }

    async fn send_rpc(&self, node: &str, message: &RpcMessage) -> Result<(), ClusterError> {
        self.publish_to(&keys::rpc(node), &serde_json::to_string(message)?)
            .await
    }

    async fn publish_to(&self, channel: &str, text: &str) -> Result<(), ClusterError> {
        bounded(
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(text)
                .query_async::<()>(&mut self.conn()),
        )
        .await
    }

    /// One heartbeat; `false` once the node has deregistered.
    async fn heartbeat(
        &self,
        meter: &mut LoadMeter,
        mut sample: NodeSample,
        members: Vec<(String, ClusterPeer)>,
    ) -> bool {
        let stopped = self.beat.lock().await;
        if *stopped {
            return false;
        }
        let load = meter.measure(Instant::now(), &sample);
        let record = self.record(load, std::mem::take(&mut sample.rooms));
        if let Err(e) = self.refresh(&record, members).await {
            tracing::warn!("cluster heartbeat: {e}");
        }
        true
    }

    /// Refreshes the node's key; when it had expired (the others may have reaped this node
    /// while it could not reach Redis), registers the node and its peers again.
    async fn refresh(
        &self,
        record: &NodeRecord,
        members: Vec<(String, ClusterPeer)>,
    ) -> Result<(), ClusterError> {
        let previous: Option<String> = bounded(
            redis::cmd("SET")
                .arg(keys::node(self.node_id()))
                .arg(serde_json::to_string(record)?)
                .arg("PX")
                .arg(self.timeout_ms())
                .arg("GET")
                .query_async(&mut self.conn()),
        )
        .await?;
        if previous.is_some() {
            return Ok(());
        }
        tracing::error!(
            node = self.node_id(),
            peers = members.len(),
            "this node's heartbeat had expired (cut off from redis for NODE_TIMEOUT?): registering it and its peers again"
        );
        bounded(
            redis::cmd("SADD")
                .arg(keys::NODES)
                .arg(self.node_id())
                .query_async::<()>(&mut self.conn()),
        )
        .await?;
        for (room_id, peer) in members {
            let added: bool = bounded(
                redis::cmd("HSETNX")
                    .arg(keys::room_peers(&room_id))
                    .arg(&peer.peer_id)
                    .arg(serde_json::to_string(&peer)?)
                    .query_async(&mut self.conn()),
            )
            .await?;
            if !added {
                continue;
            }
            bounded(
                redis::pipe()
                    .cmd("SADD")
                    .arg(keys::ROOMS)
                    .arg(&room_id)
                    .ignore()
                    .cmd("SADD")
                    .arg(keys::node_peers(self.node_id()))
                    .arg(keys::member(&room_id, &peer.peer_id))
                    .ignore()
                    .query_async::<()>(&mut self.conn()),
            )
            .await?;
            self.publish(&Message::PeerJoined {
                node: self.node_id().to_owned(),
                room_id,
                peer,
            })
            .await?;
        }
        Ok(())
    }

    /// Reaps every registered node whose heartbeat key has expired.
    async fn reap_dead_nodes(&self) {
        let ids: Vec<String> = match bounded(
            redis::cmd("SMEMBERS")
                .arg(keys::NODES)
                .query_async(&mut self.conn()),
        )
        .await
        {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!("cluster: reading the node set: {e}");
                return;
            }
        };
        for id in ids.iter().filter(|id| *id != self.node_id()) {
            let alive: Result<bool, _> = bounded(
                redis::cmd("EXISTS")
                    .arg(keys::node(id))
                    .query_async(&mut self.conn()),
            )
            .await;
            if !matches!(alive, Ok(false)) {
                continue;
            }
            // One survivor reaps; the lock expires if it dies meanwhile.
            let locked: Result<Option<String>, _> = bounded(
                redis::cmd("SET")
                    .arg(keys::reap_lock(id))
                    .arg(self.node_id())
                    .arg("NX")
                    .arg("PX")
                    .arg(self.timeout_ms())
                    .query_async(&mut self.conn()),
            )
            .await;
            if !matches!(locked, Ok(Some(_))) {
                continue;
            }
            tracing::warn!(node = %id, by = self.node_id(), "node dead (no heartbeat for NODE_TIMEOUT): reaping it");
            if let Err(e) = self.reap(id).await {
                tracing::warn!(node = %id, "cluster: reaping: {e}");
            }
        }
    }

    /// Removes `node`'s peers (telling every node `peerLeft`) and every key naming it.
    async fn reap(&self, node: &str) -> Result<(), ClusterError> {
        let members: Vec<String> = bounded(
            redis::cmd("SMEMBERS")
                .arg(keys::node_peers(node))
                .query_async(&mut self.conn()),
        )
        .await?;
        for member in members {
            let Some((room_id, peer_id)) = keys::parse_member(&member) else {
                continue;
            };
            if self.remove_peer(node, &room_id, &peer_id, &member).await? {
                self.publish(&Message::PeerLeft {
                    node: node.to_owned(),
                    room_id,
                    peer_id,
                })
                .await?;
            }
        }
        bounded(
            redis::pipe()
                .atomic()
                .cmd("SREM")
                .arg(keys::NODES)
                .arg(node)
                .ignore()
                .cmd("DEL")
                .arg(keys::node_peers(node))
                .arg(keys::node(node))
                .arg(keys::reap_lock(node))
                .ignore()
                .query_async::<()>(&mut self.conn()),
        )
        .await?;
        self.publish(&Message::NodeDown {
            node: node.to_owned(),
        })
        .await
    }

    /// Runs [`LEAVE_SCRIPT`]; whether the peer was removed.
    async fn remove_peer(
        &self,
        node: &str,
        room_id: &str,
        peer_id: &str,
        member: &str,
    ) -> Result<bool, ClusterError> {
        let removed: i64 = bounded(
            self.leave_script
                .key(keys::room_peers(room_id))
                .key(keys::node_peers(node))
                .key(keys::ROOMS)
                .arg(peer_id)
                .arg(member)
                .arg(room_id)
                .arg(node)
                .invoke_async(&mut self.conn()),
        )
        .await?;
        Ok(removed == 1)
    }

    /// Takes a room's join lock; the token that releases it.
    async fn lock_room(&self, room_id: &str) -> Result<Option<String>, ClusterError> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            let got: Option<String> = bounded(
                redis::cmd("SET")
                    .arg(keys::room_lock(room_id))
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(LOCK_TTL_MS)
                    .query_async(&mut self.conn()),
            )
            .await?;
            if got.is_some() {
                return Ok(Some(token));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn unlock_room(&self, room_id: &str, token: &str) {
        let unlocked = bounded(
            self.unlock_script
                .key(keys::room_lock(room_id))
                .arg(token)
                .invoke_async::<i64>(&mut self.conn()),
        )
        .await;
        if let Err(e) = unlocked {
            tracing::warn!(
                room = room_id,
                "cluster: releasing the join lock (it expires by itself): {e}"
            );
        }
    }

    /// With the room's lock held: checks the peer id and the room's size, registers the
    /// peer; the room's peers on other nodes.
    async fn join_locked(
        &self,
        room_id: &str,
        peer: &ClusterPeer,
        max_peers: usize,
    ) -> Result<Vec<ClusterPeer>, SignalError> {
        let all: HashMap<String, String> = bounded(
            redis::cmd("HGETALL")
                .arg(keys::room_peers(room_id))
                .query_async(&mut self.conn()),
        )
        .await
        .map_err(unreachable_error)?;
        if all.contains_key(&peer.peer_id) {
            return Err(SignalError::conflict(format!(
                "peerId {} already in the room",
                peer.peer_id
            )));
        }
        if all.len() >= max_peers {
            return Err(SignalError::too_many(format!(
                "room full: {max_peers} peers"
            )));
        }
        let record =
            serde_json::to_string(peer).map_err(|e| SignalError::internal(e.to_string()))?;
        bounded(
            redis::pipe()
                .atomic()
                .cmd("HSET")
                .arg(keys::room_peers(room_id))
                .arg(&peer.peer_id)
                .arg(record)
                .ignore()
                .cmd("SADD")
                .arg(keys::ROOMS)
                .arg(room_id)
                .ignore()
                .cmd("SADD")
                .arg(keys::node_peers(self.node_id()))
                .arg(keys::member(room_id, &peer.peer_id))
                .ignore()
                .query_async::<()>(&mut self.conn()),
        )
        .await
        .map_err(unreachable_error)?;
        let mut others: Vec<ClusterPeer> = all
            .values()
            .filter_map(|v| serde_json::from_str::<ClusterPeer>(v).ok())
            .filter(|p| p.node != self.node_id())
            .collect();
        others.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        Ok(others)
    }
}

#[async_trait::async_trait]
impl Cluster for RedisCluster {
    fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    async fn join(
        &self,
        room_id: &str,
        peer: &ClusterPeer,
        max_peers: usize,
    ) -> Result<Vec<ClusterPeer>, SignalError> {
        let token = self
            .lock_room(room_id)
            .await
            .map_err(unreachable_error)?
            .ok_or_else(|| SignalError::unavailable("room busy: its join lock is held"))?;
        let joined = self.join_locked(room_id, peer, max_peers).await;
        self.unlock_room(room_id, &token).await;
        let others = joined?;
        let announced = self
            .publish(&Message::PeerJoined {
                node: self.node_id().to_owned(),
                room_id: room_id.to_owned(),
                peer: peer.clone(),
            })
            .await;
        if let Err(e) = announced {
            tracing::warn!(room = room_id, peer = %peer.peer_id, "cluster: announcing the join: {e}");
        }
        Ok(others)
    }

    async fn peers(&self, room_id: &str) -> Result<Vec<ClusterPeer>, SignalError> {
        let mut peers = self.room_peers(room_id).await.map_err(unreachable_error)?;
        peers.retain(|p| p.node != self.node_id());
        Ok(peers)
    }

    async fn leave(&self, room_id: &str, peer_id: &str) {
        let member = keys::member(room_id, peer_id);
        let left = async {
            if self
                .remove_peer(self.node_id(), room_id, peer_id, &member)
                .await?
            {
                self.publish(&Message::PeerLeft {
                    node: self.node_id().to_owned(),
                    room_id: room_id.to_owned(),
                    peer_id: peer_id.to_owned(),
                })
                .await?;
            }
            Ok::<_, ClusterError>(())
        };
        if let Err(e) = left.await {
            tracing::warn!(room = room_id, peer = peer_id, "cluster: leaving: {e}");
        }
    }

    async fn close_room(&self, room_id: &str, reason: &str) -> bool {
        let closed = async {
            let peers = self.room_peers(room_id).await?;
            let mut pipe = redis::pipe();
            pipe.atomic();
            for p in &peers {
                pipe.cmd("SREM")
                    .arg(keys::node_peers(&p.node))
                    .arg(keys::member(room_id, &p.peer_id))
                    .ignore();
            }
            pipe.cmd("DEL")
                .arg(keys::room_peers(room_id))
                .ignore()
                .cmd("SREM")
                .arg(keys::ROOMS)
                .arg(room_id)
                .ignore();
            bounded(pipe.query_async::<()>(&mut self.conn())).await?;
            self.publish(&Message::RoomClosed {
                node: self.node_id().to_owned(),
                room_id: room_id.to_owned(),
                reason: reason.to_owned(),
            })
            .await?;
            Ok::<_, ClusterError>(!peers.is_empty())
        };
        match closed.await {
            Ok(known) => known,
            Err(e) => {
                tracing::warn!(room = room_id, "cluster: closing the room: {e}");
                false
            }
        }
    }

    async fn producer_changed(
        &self,
        room_id: &str,
        peer_id: &str,
        record: Option<&ClusterPeer>,
        change: ProducerChange,
    ) {
        let changed = async {
            if let Some(peer) = record {
                bounded(
                    self.update_peer_script
                        .key(keys::room_peers(room_id))
                        .arg(&peer.peer_id)
                        .arg(serde_json::to_string(peer)?)
                        .arg(self.node_id())
                        .invoke_async::<i64>(&mut self.conn()),
                )
                .await?;
            }
            self.publish(&Message::producer(self.node_id(), room_id, peer_id, change))
                .await
        };
        if let Err(e) = changed.await {
            tracing::warn!(
                room = room_id,
                peer = peer_id,
                "cluster: announcing a producer change: {e}"
            );
        }
    }

    async fn open_pipe(&self, node: &str, request: PipeOpen) -> Result<PipeOpened, SignalError> {
        let request_id = uuid::Uuid::new_v4().simple().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel();
        pending(&self.pending_pipes).insert(request_id.clone(), tx);
        let asked = self
            .send_rpc(
                node,
                &RpcMessage::PipeOpen {
                    request_id: request_id.clone(),
                    from: self.node_id().to_owned(),
                    request,
                },
            )
            .await;
        let answer = match asked {
            Ok(()) => tokio::time::timeout(PIPE_ANSWER_TIMEOUT, rx).await,
            Err(e) => {
                pending(&self.pending_pipes).remove(&request_id);
                return Err(unreachable_error(e));
            }
        };
        pending(&self.pending_pipes).remove(&request_id);
        match answer {
            Ok(Ok(RpcMessage::PipeOpened { answer, .. })) => Ok(answer),
            Ok(Ok(RpcMessage::PipeFailed {
                error_code,
                error_reason,
                ..
            })) => Err(SignalError::new(
                ErrorCode::from_code(error_code).unwrap_or(ErrorCode::Unavailable),
                format!("node {node}: {error_reason}"),
            )),
            Ok(_) => Err(SignalError::unavailable(format!(
                "node {node}: no pipe answer"
            ))),
            Err(_) => Err(SignalError::unavailable(format!(
                "node {node} did not answer the pipe request in time"
            ))),
        }
    }

    async fn answer_pipe(
        &self,
        node: &str,
        request_id: &str,
        answer: Result<PipeOpened, SignalError>,
    ) {
        let (request_id, from) = (request_id.to_owned(), self.node_id().to_owned());
        let message = match answer {
            Ok(answer) => RpcMessage::PipeOpened {
                request_id,
                from,
                answer,
            },
            Err(e) => RpcMessage::PipeFailed {
                request_id,
                from,
                error_code: e.code.code(),
                error_reason: e.reason,
            },
        };
        if let Err(e) = self.send_rpc(node, &message).await {
            tracing::warn!(to = node, "cluster: answering a pipe request: {e}");
        }
    }

    async fn close_pipe(&self, node: &str, room_id: &str, producer_id: &str) {
        let message = RpcMessage::PipeClose {
            from: self.node_id().to_owned(),
            room_id: room_id.to_owned(),
            producer_id: producer_id.to_owned(),
        };
        if let Err(e) = self.send_rpc(node, &message).await {
            tracing::warn!(to = node, "cluster: closing a pipe: {e}");
        }
    }
}

/// Locks the table of pipe requests waiting for an answer (never held across an await).
fn pending(
    pipes: &PendingPipes,
) -> std::sync::MutexGuard<'_, HashMap<String, tokio::sync::oneshot::Sender<RpcMessage>>> {
    pipes.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pub/sub connection subscribed to the events channel and this node's own channel.
async fn subscribe(
    client: &redis::Client,
    node_id: &str,
) -> Result<redis::aio::PubSub, ClusterError> {
    let mut pubsub = bounded(client.get_async_pubsub()).await?;
    bounded(pubsub.subscribe(&[keys::EVENTS.to_owned(), keys::rpc(node_id)])).await?;
    Ok(pubsub)
}

/// Hands other nodes' messages to the hub until it is gone; resubscribes when the
/// connection drops (messages published meanwhile are lost: docs/cluster.md).
async fn run_subscriber(
    client: redis::Client,
    first: redis::aio::PubSub,
    node_id: String,
    pending_pipes: PendingPipes,
    events: mpsc::UnboundedSender<ClusterEvent>,
) {
    let mut pubsub = Some(first);
    loop {
        if let Some(mut connection) = pubsub.take() {
            let mut messages = connection.on_message();
            while let Some(msg) = messages.next().await {
                let Ok(text) = msg.get_payload::<String>() else {
                    tracing::warn!("cluster: a message that is not text");
                    continue;
                };
                if msg.get_channel_name() != keys::EVENTS {
                    if let Some(event) = handle_rpc(&text, &pending_pipes)
                        && events.send(event).is_err()
                    {
                        return;
                    }
                    continue;
                }
                let message = match serde_json::from_str::<Message>(&text) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!("cluster: unreadable message: {e}");
                        continue;
                    }
                };
                if message.node() == node_id {
                    continue;
                }
                if events.send(message.into_event()).is_err() {
                    return;
                }
            }
            tracing::warn!("cluster: events subscription lost; resubscribing");
        }
        if events.is_closed() {
            return;
        }
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
        match subscribe(&client, &node_id).await {
            Ok(p) => pubsub = Some(p),
            Err(e) => tracing::warn!("cluster: resubscribing: {e}"),
        }
    }
}

/// A message on this node's own channel: an answer goes to the request waiting for it, a
/// request or a pipe's closing becomes an event for the hub.
fn handle_rpc(text: &str, pending_pipes: &PendingPipes) -> Option<ClusterEvent> {
    let message = match serde_json::from_str::<RpcMessage>(text) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("cluster: unreadable request: {e}");
            return None;
        }
    };
    match message {
        RpcMessage::PipeOpen {
            request_id,
            from,
            request,
        } => Some(ClusterEvent::PipeRequested {
            from,
            request_id,
            request,
        }),
        RpcMessage::PipeClose {
            from,
            room_id,
            producer_id,
        } => Some(ClusterEvent::PipeClosed {
            from,
            room_id,
            producer_id,
        }),
        RpcMessage::PipeOpened { ref request_id, .. }
        | RpcMessage::PipeFailed { ref request_id, .. } => {
            let waiting = pending(pending_pipes).remove(request_id);
            match waiting {
                Some(tx) => {
                    let _ = tx.send(message);
                }
                None => tracing::debug!("cluster: a pipe answer nobody waits for (timed out)"),
            }
            None
        }
    }
}
