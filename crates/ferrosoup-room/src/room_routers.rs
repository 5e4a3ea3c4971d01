//! One room's routers over the workers of the process: a home router, and more on other
//! workers when the room outgrows one ([`crate::placement`] decides where each transport
//! goes). A consumer on another router than its producer's consumes the producer through a
//! pipe between workers ([`Router::pipe_producer_to`]), opened on the first such consume,
//! one per producer and router, which keeps the producer's id; a data consumer there
//! gets its data producer through the router's data pipe, one for all data producers:
//! clients never see which router serves them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ferrosoup_proto::rtp_parameters::{
    MediaKind, RtpCapabilities, RtpCodecCapability, RtpParameters,
};
use ferrosoup_proto::transport::SctpStreamParameters;

use crate::engine::{Closed, ClosedConsumer, ClosedDataConsumer};
use crate::error::RoomError;
use crate::ids::{ConsumerId, DataConsumerId, DataProducerId, ProducerId, RouterId, TransportId};
use crate::placement::{Place, Placement, RouterIndex};
use crate::router::WorkerPool;
use crate::router::{CandidateOptions, ConsumerParams, Router, WebRtcTransportParams, WorkerPipe};

/// How a room spreads over workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spread {
    /// Consumers a router takes before the room's receiving transports go to another
    /// worker (`ROOM_CONSUMERS_PER_WORKER`; 0: a room stays on one worker).
    pub consumers_per_worker: usize,
    /// How long a pipe between workers stays open without a consumer.
    pub pipe_linger: Duration,
}

impl Default for Spread {
    fn default() -> Self {
        Self {
            consumers_per_worker: 250,
            pipe_linger: Duration::from_secs(10),
        }
    }
}

/// What a new transport is for, as placement needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportUse {
    /// It only receives (media and data channels, no producer): it may go to another
    /// worker; it is expected to consume this many producers.
    ReceiveOnly {
        /// Producers it is expected to consume (the room's producers).
        expected_consumers: usize,
    },
    /// Anything else: it stays on the home router.
    Home,
}

type PipeCell = Arc<tokio::sync::OnceCell<WorkerPipe>>;
/// A pipe between the home router and another (home's side, the other's side).
type DataPipeCell = Arc<tokio::sync::OnceCell<(TransportId, TransportId)>>;
/// A data producer piped over a data pipe: its pipe data consumer on the home router.
type DataPipedCell = Arc<tokio::sync::OnceCell<DataConsumerId>>;

/// The routers of one room and what the room knows of where its objects are.
struct State {
    /// Index 0: home.
    routers: Vec<Router>,
    placement: Placement,
    /// Pipes between workers, open or opening.
    pipes: HashMap<(ProducerId, RouterIndex), PipeCell>,
    /// The data pipe from home to each other router: one for all its data producers.
    data_pipes: HashMap<RouterIndex, DataPipeCell>,
    /// Data producers (of the home router) piped to other routers.
    data_piped: HashMap<(DataProducerId, RouterIndex), DataPipedCell>,
    /// Data consumers on routers other than home.
    data_consumers: HashMap<DataConsumerId, RouterIndex>,
}

/// Removes `key`'s entry from `cells` if it is still `cell`, whose opening failed: the
/// next caller tries again.
fn forget_failed<K: Eq + std::hash::Hash, V>(
    cells: &mut HashMap<K, Arc<tokio::sync::OnceCell<V>>>,
    key: &K,
    cell: &Arc<tokio::sync::OnceCell<V>>,
) {
    if cells.get(key).is_some_and(|c| Arc::ptr_eq(c, cell)) {
        cells.remove(key);
    }
}

impl State {
    /// Takes the pipe of `producer` to router `to` out of the table, to be closed.
    fn take_pipe(
        &mut self,
        producer: ProducerId,
        from: RouterIndex,
        to: RouterIndex,
    ) -> ClosingPipe {
        ClosingPipe {
            producer,
            pipe: self
                .pipes
                .remove(&(producer, to))
                .and_then(|c| c.get().copied()),
            from: self.routers[from].clone(),
            to: self.routers[to].clone(),
        }
    }
}

/// A pipe between workers taken out of the room's table.
struct ClosingPipe {
    producer: ProducerId,
    /// Its ends (`None`: it never opened).
    pipe: Option<WorkerPipe>,
    from: Router,
    to: Router,
}

impl ClosingPipe {
    /// Closes the pipe producer (with its consumers, returned) and both pipe transports.
    async fn close(self) -> Vec<ClosedConsumer> {
        let closed = self.to.close_producer(self.producer).await;
        if let Some(pipe) = self.pipe {
            // Their workers may have closed them already: this forgets them either way.
            let _ = self.to.close_transport(pipe.other_transport_id).await;
            let _ = self.from.close_transport(pipe.transport_id).await;
        }
        closed.map(|c| c.consumers).unwrap_or_default()
    }
}

/// One room's routers: a home router and, for a room that outgrows it, routers on other
/// workers. Cheap to share (`Arc`); never holds its lock across an `.await`.
pub struct RoomRouters {
    home: Router,
    media_codecs: Vec<RtpCodecCapability>,
    state: Mutex<State>,
    /// Held while a router is added, so concurrent joins add one, not several.
    growing: tokio::sync::Mutex<()>,
}

impl RoomRouters {
    /// A room on `home` (created with `media_codecs`) that may spread over up to
    /// `workers` workers as `spread` says.
    pub fn new(
        home: Router,
        media_codecs: Vec<RtpCodecCapability>,
        workers: usize,
        spread: Spread,
    ) -> Self {
        Self {
            state: Mutex::new(State {
                routers: vec![home.clone()],
                placement: Placement::new(spread.consumers_per_worker, workers, spread.pipe_linger),
                pipes: HashMap::new(),
                data_pipes: HashMap::new(),
                data_piped: HashMap::new(),
                data_consumers: HashMap::new(),
            }),
            home,
            media_codecs,
            growing: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock would be a bug; the state stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The home router: producers, data producers, plain transports and pipes from other
    /// nodes live there.
    pub fn home(&self) -> &Router {
        &self.home
    }

    /// Every router of the room, home first.
    pub fn all(&self) -> Vec<Router> {
        self.state().routers.clone()
    }

    /// Whether `id` is one of the room's routers.
    pub fn contains(&self, id: RouterId) -> bool {
        self.state().routers.iter().any(|r| r.id() == id)
    }

    /// Every router of the room with its consumers, home first.
    pub fn with_consumers(&self) -> Vec<(Router, usize)> {
        let state = self.state();
        state
            .routers
            .iter()
            .cloned()
            .zip(state.placement.consumers_per_router())
            .collect()
    }

    /// The router's RTP capabilities (every router of the room has the home router's).
    pub fn rtp_capabilities(&self) -> &RtpCapabilities {
        self.home.rtp_capabilities()
    }

    /// The router transport `id` is on (home for transports made there directly).
    pub fn router_of_transport(&self, id: TransportId) -> Router {
        let state = self.state();
        let i = state.placement.router_of_transport(id).unwrap_or(0);
        state.routers[i].clone()
    }

    /// The router consumer `id` is on.
    pub fn router_of_consumer(&self, id: ConsumerId) -> Router {
        let state = self.state();
        let i = state.placement.router_of_consumer(id).unwrap_or(0);
        state.routers[i].clone()
    }

    /// The router producer `id` is on.
    pub fn router_of_producer(&self, id: ProducerId) -> Router {
        let state = self.state();
        let i = state.placement.router_of_producer(id);
        state.routers[i].clone()
    }

    /// Creates a WebRTC transport where placement puts one for `usage`, adding a router
    /// on the least loaded other worker of `pool` when the room's routers are full.
    pub async fn create_webrtc_transport(
        &self,
        pool: &WorkerPool,
        usage: TransportUse,
        options: CandidateOptions,
    ) -> Result<WebRtcTransportParams, RoomError> {
        let (receives, expected) = match usage {
            TransportUse::ReceiveOnly { expected_consumers } => (true, expected_consumers),
            TransportUse::Home => (false, 0),
        };
        let placed = {
            let mut state = self.state();
            let place = state.placement.place(receives, expected);
            if let (true, Place::Router(i)) = (receives, place) {
                state.placement.reserve(i);
            }
            place
        };
        let index = match placed {
            Place::Router(i) => i,
            Place::NewRouter => self.add_router(pool, expected).await,
        };
        let router = self.state().routers[index].clone();
        let created = router.create_webrtc_transport(options).await;
        let mut state = self.state();
        match created {
            Ok(params) => {
                state.placement.transport_added(params.id, index, receives);
                Ok(params)
            }
            Err(e) => {
                if receives {
                    state.placement.release(index);
                }
                Err(e)
            }
        }
    }

    /// Adds a router on the least loaded worker the room does not use yet (unless a
    /// concurrent join just did and placement no longer asks for one); returns where the
    /// receiving transport goes, with its place held. Falls back to home when no router
    /// can be added.
    async fn add_router(&self, pool: &WorkerPool, expected: usize) -> RouterIndex {
        let _growing = self.growing.lock().await;
        let used: Vec<usize> = {
            let mut state = self.state();
            if let Place::Router(i) = state.placement.place(true, expected) {
                state.placement.reserve(i);
                return i;
            }
            state.routers.iter().map(Router::worker_index).collect()
        };
        let added = match pool.least_loaded_worker(&used) {
            Some(worker) => pool
                .create_router_on(worker, &self.media_codecs)
                .await
                .map(|router| (worker, router)),
            None => Err(RoomError::NotFound("worker")),
        };
        let mut state = self.state();
        let index = match added {
            Ok((worker, router)) => {
                tracing::info!(home = %self.home.id(), router = %router.id(), worker, "room spreads to another worker");
                state.routers.push(router);
                state.placement.router_added()
            }
            Err(e) => {
                tracing::warn!(home = %self.home.id(), "room cannot spread: {e}");
                0
            }
        };
        state.placement.reserve(index);
        index
    }

    /// `produce` on the transport's router.
    pub async fn produce(
        &self,
        transport_id: TransportId,
        kind: MediaKind,
        rtp_parameters: RtpParameters,
        paused: bool,
    ) -> Result<ProducerId, RoomError> {
        let id = self
            .router_of_transport(transport_id)
            .produce(transport_id, kind, rtp_parameters, paused)
            .await?;
        self.state().placement.producer_added(id, transport_id);
        Ok(id)
    }

    /// `consume` on the transport's router, through a pipe from the producer's router
    /// when they differ (opened here on first use).
    pub async fn consume(
        &self,
        transport_id: TransportId,
        producer_id: ProducerId,
        caps: &RtpCapabilities,
        paused: bool,
        preferred_layers: Option<(u8, Option<u8>)>,
    ) -> Result<ConsumerParams, RoomError> {
        let (router, index, source) = {
            let state = self.state();
            let index = state
                .placement
                .router_of_transport(transport_id)
                .unwrap_or(0);
            let source = state.placement.router_of_producer(producer_id);
            (state.routers[index].clone(), index, source)
        };
        if index != source {
            self.open_pipe(producer_id, source, index).await?;
        }
        let params = router
            .consume(transport_id, producer_id, caps, paused, preferred_layers)
            .await?;
        self.state()
            .placement
            .consumer_added(params.id, transport_id, producer_id);
        Ok(params)
    }

    /// The pipe of `producer` from router `source` to router `to`: open, or opened now
    /// (concurrent consumes wait on one opening).
    async fn open_pipe(
        &self,
        producer: ProducerId,
        source: RouterIndex,
        to: RouterIndex,
    ) -> Result<WorkerPipe, RoomError> {
        let (cell, from, other) = {
            let mut state = self.state();
            let cell = state.pipes.entry((producer, to)).or_default().clone();
            (
                cell,
                state.routers[source].clone(),
                state.routers[to].clone(),
            )
        };
        let opened = cell
            .get_or_try_init(|| async {
                let pipe = from.pipe_producer_to(producer, &other).await?;
                self.state()
                    .placement
                    .pipe_opened(producer, to, Instant::now());
                tracing::debug!(%producer, from = from.worker_index(), to = other.worker_index(), "producer piped to another worker");
                Ok::<_, RoomError>(pipe)
            })
            .await
            .copied();
        if opened.is_err() {
            forget_failed(&mut self.state().pipes, &(producer, to), &cell);
        }
        opened
    }

    /// Pauses or resumes a producer and its pipes; returns the consumers, on every
    /// router, whose producer-paused state changed (not the pipes' own).
    pub async fn set_producer_paused(
        &self,
        id: ProducerId,
        paused: bool,
    ) -> Result<Vec<ConsumerId>, RoomError> {
        let mut changed = self
            .router_of_producer(id)
            .set_producer_paused(id, paused)
            .await?;
        for router in self.pipe_routers(id) {
            // A pipe closing meanwhile has nothing left to pause.
            if let Ok(more) = router.set_producer_paused(id, paused).await {
                changed.extend(more);
            }
        }
        let state = self.state();
        changed.retain(|c| state.placement.knows_consumer(*c));
        Ok(changed)
    }

    /// Routers producer `id` is piped to (open pipes).
    fn pipe_routers(&self, id: ProducerId) -> Vec<Router> {
        let state = self.state();
        state
            .placement
            .pipes_of(id)
            .into_iter()
            .map(|i| state.routers[i].clone())
            .collect()
    }

    /// Closes the pipes of `producers` (their consumers on other routers first); returns
    /// those consumers.
    async fn close_pipes_of(&self, producers: &[ProducerId]) -> Vec<ClosedConsumer> {
        let mut consumers = Vec::new();
        for &p in producers {
            let pipes: Vec<ClosingPipe> = {
                let mut state = self.state();
                let from = state.placement.router_of_producer(p);
                let piped = state.placement.producer_closed(p);
                piped
                    .into_iter()
                    .map(|i| state.take_pipe(p, from, i))
                    .collect()
            };
            for pipe in pipes {
                consumers.extend(pipe.close().await);
            }
        }
        self.forget_consumers(&mut consumers);
        consumers
    }

    /// Forgets closed consumers, and drops from the list those of pipes (the ones the room
    /// did not record).
    fn forget_consumers(&self, consumers: &mut Vec<ClosedConsumer>) {
        let now = Instant::now();
        let mut state = self.state();
        consumers.retain(|c| state.placement.knows_consumer(c.consumer_id));
        for c in consumers.iter() {
            state.placement.consumer_closed(c.consumer_id, now);
        }
    }

    /// Closes a producer, its pipes and every consumer of it on any router.
    pub async fn close_producer(&self, id: ProducerId) -> Result<Closed, RoomError> {
        let router = self.router_of_producer(id);
        let piped = self.close_pipes_of(&[id]).await;
        let mut closed = router.close_producer(id).await?;
        self.forget_consumers(&mut closed.consumers);
        closed.consumers.extend(piped);
        Ok(closed)
    }

    /// Closes a transport and everything on it, with the pipes of its producers and
    /// their consumers on other routers; returns all of it.
    pub async fn close_transport(&self, id: TransportId) -> Result<Closed, RoomError> {
        let (router, producers) = {
            let state = self.state();
            let i = state.placement.router_of_transport(id).unwrap_or(0);
            (state.routers[i].clone(), state.placement.producers_on(id))
        };
        let piped = self.close_pipes_of(&producers).await;
        let mut closed = router.close_transport(id).await?;
        self.forget_consumers(&mut closed.consumers);
        {
            let mut state = self.state();
            for p in &closed.producers {
                state.placement.producer_closed(*p);
            }
            state.placement.transport_closed(id);
        }
        closed.consumers.extend(piped);
        self.forget_data_consumers(&mut closed.data_consumers);
        for &d in &closed.data_producers {
            let others = self.close_data_pipes_of(d).await;
            closed
                .data_consumers
                .extend(
                    others
                        .into_iter()
                        .map(|data_consumer_id| ClosedDataConsumer {
                            data_consumer_id,
                            data_producer_id: d,
                        }),
                );
        }
        Ok(closed)
    }

    /// The router data consumer `id` is on.
    pub fn router_of_data_consumer(&self, id: DataConsumerId) -> Router {
        let state = self.state();
        let i = state.data_consumers.get(&id).copied().unwrap_or(0);
        state.routers[i].clone()
    }

    /// `consumeData` on the transport's router; a data producer of the home router
    /// reaches another router through that router's data pipe (opened on first use, one
    /// per router for all data producers).
    pub async fn consume_data(
        &self,
        transport_id: TransportId,
        data_producer_id: DataProducerId,
    ) -> Result<(DataConsumerId, SctpStreamParameters), RoomError> {
        let (router, index) = {
            let state = self.state();
            let i = state
                .placement
                .router_of_transport(transport_id)
                .unwrap_or(0);
            (state.routers[i].clone(), i)
        };
        if index != 0 {
            self.pipe_data_producer(data_producer_id, index).await?;
        }
        let consumed = router.consume_data(transport_id, data_producer_id).await?;
        if index != 0 {
            self.state().data_consumers.insert(consumed.0, index);
        }
        Ok(consumed)
    }

    /// Pipes a data producer of the home router to router `to` (once; concurrent calls
    /// wait on one).
    async fn pipe_data_producer(
        &self,
        data_producer: DataProducerId,
        to: RouterIndex,
    ) -> Result<DataConsumerId, RoomError> {
        let cell = self
            .state()
            .data_piped
            .entry((data_producer, to))
            .or_default()
            .clone();
        let piped = cell
            .get_or_try_init(|| async {
                let other = self.state().routers[to].clone();
                let pipe = self.data_pipe(to).await?;
                match self
                    .home
                    .pipe_data_producer_to(data_producer, pipe, &other)
                    .await
                {
                    Err(RoomError::NotFound("transport")) => {
                        // The pipe closed (it had carried nothing for a while): a new one.
                        self.forget_data_pipe(to, pipe);
                        let pipe = self.data_pipe(to).await?;
                        self.home
                            .pipe_data_producer_to(data_producer, pipe, &other)
                            .await
                    }
                    other => other,
                }
            })
            .await
            .copied();
        if piped.is_err() {
            forget_failed(&mut self.state().data_piped, &(data_producer, to), &cell);
        }
        piped
    }

    /// The data pipe from home to router `to`, opened now if needed.
    async fn data_pipe(&self, to: RouterIndex) -> Result<(TransportId, TransportId), RoomError> {
        let (cell, other) = {
            let mut state = self.state();
            let cell = state.data_pipes.entry(to).or_default().clone();
            (cell, state.routers[to].clone())
        };
        let pipe = cell
            .get_or_try_init(|| async {
                let pipe = self.home.open_worker_pipe(&other).await?;
                tracing::debug!(
                    to = other.worker_index(),
                    "data pipe to another worker opened"
                );
                Ok::<_, RoomError>(pipe)
            })
            .await
            .copied();
        if pipe.is_err() {
            forget_failed(&mut self.state().data_pipes, &to, &cell);
        }
        pipe
    }

    /// Forgets the data pipe to router `to` if it is still `pipe` (closed meanwhile).
    fn forget_data_pipe(&self, to: RouterIndex, pipe: (TransportId, TransportId)) {
        let mut state = self.state();
        if state
            .data_pipes
            .get(&to)
            .and_then(|c| c.get())
            .is_some_and(|p| *p == pipe)
        {
            state.data_pipes.remove(&to);
        }
    }

    /// Closes the data producers standing for `data_producer` on other routers (with
    /// their data consumers, returned) and its pipe data consumers on home.
    async fn close_data_pipes_of(&self, data_producer: DataProducerId) -> Vec<DataConsumerId> {
        let piped: Vec<(Router, Option<DataConsumerId>)> = {
            let mut state = self.state();
            let keys: Vec<(DataProducerId, RouterIndex)> = state
                .data_piped
                .keys()
                .filter(|(d, _)| *d == data_producer)
                .copied()
                .collect();
            keys.into_iter()
                .filter_map(|k| {
                    let cell = state.data_piped.remove(&k)?;
                    Some((state.routers[k.1].clone(), cell.get().copied()))
                })
                .collect()
        };
        let mut closed = Vec::new();
        for (router, pipe_consumer) in piped {
            if let Ok(consumers) = router.close_data_producer(data_producer).await {
                closed.extend(consumers);
            }
            if let Some(c) = pipe_consumer {
                // Gone already when the data producer closed first.
                let _ = self.home.close_data_consumer(c).await;
            }
        }
        let mut state = self.state();
        for c in &closed {
            state.data_consumers.remove(c);
        }
        closed
    }

    /// Drops from `consumers` the pipe data consumers (not a client's) and forgets the
    /// others' routers.
    fn forget_data_consumers(&self, consumers: &mut Vec<ClosedDataConsumer>) {
        let mut state = self.state();
        let pipes: Vec<DataConsumerId> = state
            .data_piped
            .values()
            .filter_map(|c| c.get().copied())
            .collect();
        consumers.retain(|c| !pipes.contains(&c.data_consumer_id));
        for c in consumers.iter() {
            state.data_consumers.remove(&c.data_consumer_id);
        }
    }

    /// Closes a data producer with its data consumers on every router; returns them.
    pub async fn close_data_producer(
        &self,
        id: DataProducerId,
    ) -> Result<Vec<DataConsumerId>, RoomError> {
        let pipes: Vec<DataConsumerId> = {
            let state = self.state();
            state
                .data_piped
                .iter()
                .filter(|((d, _), _)| *d == id)
                .filter_map(|(_, c)| c.get().copied())
                .collect()
        };
        let mut closed = self.home.close_data_producer(id).await?;
        closed.retain(|c| !pipes.contains(c));
        closed.extend(self.close_data_pipes_of(id).await);
        Ok(closed)
    }

    /// Closes a data consumer.
    pub async fn close_data_consumer(&self, id: DataConsumerId) -> Result<(), RoomError> {
        self.router_of_data_consumer(id)
            .close_data_consumer(id)
            .await?;
        self.state().data_consumers.remove(&id);
        Ok(())
    }

    /// Closes a consumer.
    pub async fn close_consumer(&self, id: ConsumerId) -> Result<(), RoomError> {
        self.router_of_consumer(id).close_consumer(id).await?;
        let now = Instant::now();
        self.state().placement.consumer_closed(id, now);
        Ok(())
    }

    /// Closes the pipes nobody has consumed through for the linger at `now`.
    pub async fn close_idle_pipes(&self, now: Instant) {
        let expired: Vec<ClosingPipe> = {
            let mut state = self.state();
            let expired = state.placement.expired_pipes(now);
            expired
                .into_iter()
                .map(|(p, i)| {
                    let from = state.placement.router_of_producer(p);
                    state.placement.pipe_closed(p, i);
                    state.take_pipe(p, from, i)
                })
                .collect()
        };
        for pipe in expired {
            tracing::debug!(producer = %pipe.producer, worker = pipe.to.worker_index(), "idle pipe between workers closed");
            pipe.close().await;
        }
    }

    /// A pipe between workers of this room closed from its other side (its worker
    /// reported [`crate::MediaEvent::WorkerPipeClosed`]): forgets it and the consumers
    /// closed with it.
    pub fn pipe_closed(&self, router_id: RouterId, transport_id: TransportId, closed: &Closed) {
        let now = Instant::now();
        let mut state = self.state();
        let Some(index) = state.routers.iter().position(|r| r.id() == router_id) else {
            return;
        };
        for c in &closed.consumers {
            state.placement.consumer_closed(c.consumer_id, now);
        }
        for p in &closed.producers {
            state.placement.pipe_closed(*p, index);
            state.pipes.remove(&(*p, index));
        }
        for d in &closed.data_producers {
            state.data_piped.remove(&(*d, index));
        }
        for c in &closed.data_consumers {
            state.data_consumers.remove(&c.data_consumer_id);
        }
        if state
            .data_pipes
            .get(&index)
            .and_then(|c| c.get())
            .is_some_and(|(_, there)| *there == transport_id)
        {
            state.data_pipes.remove(&index);
        }
    }

    /// Closes every router of the room.
    pub async fn close(&self) {
        for router in self.all() {
            router.close().await;
        }
    }

    /// Bandwidth toward the clients of every router's transports (`/api/stats`): the
    /// routers' lists joined.
    pub async fn bandwidth_stats(&self) -> Result<serde_json::Value, RoomError> {
        let mut all = Vec::new();
        for router in self.all() {
            match router.bandwidth_stats().await? {
                serde_json::Value::Array(items) => all.extend(items),
                other => all.push(other),
            }
        }
        Ok(serde_json::Value::Array(all))
    }
}
