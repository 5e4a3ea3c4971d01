//! Where a room that uses the routers of several workers puts a new transport, and which
//! of its producers are piped to which of its routers: the bookkeeping behind
//! [`crate::RoomRouters`], with time as an input so it is tested on a manual clock.
//!
//! A room starts with one router, its *home*. Transports that only receive may go
//! elsewhere: to the first router whose consumers, counting the ones a new transport is
//! expected to take, stay within `consumers_per_router`; past that, to a new router on
//! another worker while the room may add one, and then to the router with the fewest.
//! Everything else (sending, plain and node pipes) stays home, so producers live on the
//! home router and are piped, once per producer and router, to the routers whose
//! transports consume them. A pipe nobody consumes through for the linger is closed.
//! Counts (consumers per router, a pipe's consumers) are derived from the consumers
//! recorded, never kept apart.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::ids::{ConsumerId, ProducerId, TransportId};

/// Index of a router in its room: 0 is the home router, the others in the order added.
pub type RouterIndex = usize;

/// Where a new transport goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// On this router of the room.
    Router(RouterIndex),
    /// On a router the room adds on another worker.
    NewRouter,
}

/// A transport the placement knows.
#[derive(Debug)]
struct PlacedTransport {
    router: RouterIndex,
    /// Whether it was placed as a receiving transport (counted as waiting for consumers
    /// until it has one).
    receives: bool,
}

/// A consumer the placement knows.
#[derive(Debug)]
struct PlacedConsumer {
    transport: TransportId,
    router: RouterIndex,
    producer: ProducerId,
}

/// The placement state of one room.
#[derive(Debug)]
pub struct Placement {
    consumers_per_router: usize,
    max_routers: usize,
    linger: Duration,
    /// Receiving transports placed on each router (index 0: home) and still being
    /// created; one entry per router of the room.
    reserved: Vec<usize>,
    transports: HashMap<TransportId, PlacedTransport>,
    consumer_of: HashMap<ConsumerId, PlacedConsumer>,
    /// Producer → the transport it was produced on.
    producer_transport: HashMap<ProducerId, TransportId>,
    /// (producer, router it is piped to) → since when nobody consumes through the pipe
    /// (`None` while someone does).
    pipes: HashMap<(ProducerId, RouterIndex), Option<Instant>>,
}

impl Placement {
    /// A room on its home router that may use up to `max_routers` routers (one per
    /// worker), filling each with up to `consumers_per_router` consumers (0: never
    /// spread); pipes close after `linger` without a consumer.
    pub fn new(consumers_per_router: usize, max_routers: usize, linger: Duration) -> Self {
        Self {
            consumers_per_router,
            max_routers: max_routers.max(1),
            linger,
            reserved: vec![0],
            transports: HashMap::new(),
            consumer_of: HashMap::new(),
            producer_transport: HashMap::new(),
            pipes: HashMap::new(),
        }
    }

    /// Routers the room uses.
    pub fn router_count(&self) -> usize {
        self.reserved.len()
    }

    /// Consumers on each router, home first.
    pub fn consumers_per_router(&self) -> Vec<usize> {
        let mut consumers = vec![0; self.router_count()];
        for c in self.consumer_of.values() {
            consumers[c.router] += 1;
        }
        consumers
    }

    /// The load of each router: its consumers, plus `expected` for each of its receiving
    /// transports that has none yet or is still being created (they are about to consume).
    fn loads(&self, expected: usize) -> Vec<usize> {
        let mut loads = self.consumers_per_router();
        let consuming: HashSet<TransportId> =
            self.consumer_of.values().map(|c| c.transport).collect();
        for (id, t) in &self.transports {
            if t.receives && !consuming.contains(id) {
                loads[t.router] += expected;
            }
        }
        for (load, reserved) in loads.iter_mut().zip(&self.reserved) {
            *load += reserved * expected;
        }
        loads
    }

    /// Where a new transport goes: home unless it only receives; a receiving transport,
    /// expected to take `expected` consumers (the room's producers), goes to the first
    /// router with room for them, else to a new router while the room may add one, else
    /// to the least loaded.
    pub fn place(&self, receives_only: bool, expected: usize) -> Place {
        if !receives_only || self.consumers_per_router == 0 {
            return Place::Router(0);
        }
        let expected = expected.max(1);
        let loads = self.loads(expected);
        if let Some(i) = loads
            .iter()
            .position(|&l| l + expected <= self.consumers_per_router)
        {
            return Place::Router(i);
        }
        if self.router_count() < self.max_routers {
            return Place::NewRouter;
        }
        let least = (0..loads.len()).min_by_key(|&i| (loads[i], i));
        Place::Router(least.unwrap_or(0))
    }

    /// Records a router the room added; returns its index.
    pub fn router_added(&mut self) -> RouterIndex {
        self.reserved.push(0);
        self.router_count() - 1
    }

    /// Holds a place on `router` for a receiving transport being created, so placements
    /// meanwhile count it ([`Placement::transport_added`] or [`Placement::release`] ends
    /// it).
    pub fn reserve(&mut self, router: RouterIndex) {
        self.reserved[router] += 1;
    }

    /// Gives up a place held for a transport that could not be created.
    pub fn release(&mut self, router: RouterIndex) {
        self.reserved[router] = self.reserved[router].saturating_sub(1);
    }

    /// Records a transport on router `router` (`receives`: placed as a receiving one, in a
    /// place held by [`Placement::reserve`]).
    pub fn transport_added(&mut self, id: TransportId, router: RouterIndex, receives: bool) {
        if receives {
            self.release(router);
        }
        self.transports
            .insert(id, PlacedTransport { router, receives });
    }

    /// The router of a transport this placement knows.
    pub fn router_of_transport(&self, id: TransportId) -> Option<RouterIndex> {
        self.transports.get(&id).map(|t| t.router)
    }

    /// The router of a consumer this placement knows.
    pub fn router_of_consumer(&self, id: ConsumerId) -> Option<RouterIndex> {
        self.consumer_of.get(&id).map(|c| c.router)
    }

    /// Forgets a closed transport (its consumers and producers are reported closed apart).
    pub fn transport_closed(&mut self, id: TransportId) {
        self.transports.remove(&id);
    }

    /// Records a producer produced on transport `transport`.
    pub fn producer_added(&mut self, id: ProducerId, transport: TransportId) {
        self.producer_transport.insert(id, transport);
    }

    /// The router of a producer: that of its transport, else home (producers the room
    /// made there directly, such as the ends of pipes from other nodes).
    pub fn router_of_producer(&self, id: ProducerId) -> RouterIndex {
        self.producer_transport
            .get(&id)
            .and_then(|t| self.router_of_transport(*t))
            .unwrap_or(0)
    }

    /// Producers produced on transport `transport`.
    pub fn producers_on(&self, transport: TransportId) -> Vec<ProducerId> {
        self.producer_transport
            .iter()
            .filter(|(_, t)| **t == transport)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Forgets a closed producer and its pipes; returns the routers it was piped to.
    pub fn producer_closed(&mut self, id: ProducerId) -> Vec<RouterIndex> {
        self.producer_transport.remove(&id);
        let routers: Vec<RouterIndex> = self
            .pipes
            .keys()
            .filter(|(p, _)| *p == id)
            .map(|(_, r)| *r)
            .collect();
        for r in &routers {
            self.pipes.remove(&(id, *r));
        }
        routers
    }

    /// Whether a consumer on router `router` of producer `producer` needs a pipe that is
    /// not open yet.
    pub fn needs_pipe(&self, producer: ProducerId, router: RouterIndex) -> bool {
        router != self.router_of_producer(producer) && !self.pipes.contains_key(&(producer, router))
    }

    /// Records an open pipe of `producer` to `router` (idle from `now` until consumed).
    pub fn pipe_opened(&mut self, producer: ProducerId, router: RouterIndex, now: Instant) {
        self.pipes.entry((producer, router)).or_insert(Some(now));
    }

    /// Forgets a pipe (closed by its worker, or by the room).
    pub fn pipe_closed(&mut self, producer: ProducerId, router: RouterIndex) {
        self.pipes.remove(&(producer, router));
    }

    /// Routers `producer` is piped to.
    pub fn pipes_of(&self, producer: ProducerId) -> Vec<RouterIndex> {
        self.pipes
            .keys()
            .filter(|(p, _)| *p == producer)
            .map(|(_, r)| *r)
            .collect()
    }

    /// Records a consumer of `producer` on transport `transport` (on the home router when
    /// the placement does not know the transport).
    pub fn consumer_added(&mut self, id: ConsumerId, transport: TransportId, producer: ProducerId) {
        let router = self.router_of_transport(transport).unwrap_or(0);
        self.consumer_of.insert(
            id,
            PlacedConsumer {
                transport,
                router,
                producer,
            },
        );
        if let Some(idle_since) = self.pipes.get_mut(&(producer, router)) {
            *idle_since = None;
        }
    }

    /// Whether the consumer is one the placement recorded (a client's, not a pipe's).
    pub fn knows_consumer(&self, id: ConsumerId) -> bool {
        self.consumer_of.contains_key(&id)
    }

    /// Forgets a closed consumer; a pipe it was the last consumer of is idle from `now`.
    pub fn consumer_closed(&mut self, id: ConsumerId, now: Instant) {
        let Some(closed) = self.consumer_of.remove(&id) else {
            return;
        };
        let still_consumed = self
            .consumer_of
            .values()
            .any(|c| c.router == closed.router && c.producer == closed.producer);
        if let Some(idle_since) = self.pipes.get_mut(&(closed.producer, closed.router))
            && !still_consumed
        {
            *idle_since = Some(now);
        }
    }

    /// Pipes nobody has consumed through for the linger at `now`.
    pub fn expired_pipes(&self, now: Instant) -> Vec<(ProducerId, RouterIndex)> {
        self.pipes
            .iter()
            .filter(|(_, idle_since)| {
                idle_since.is_some_and(|since| now.saturating_duration_since(since) >= self.linger)
            })
            .map(|(k, _)| *k)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrosoup_testkit::clock::ManualClock;

    const LINGER: Duration = Duration::from_secs(10);

    /// A subscriber: a receiving transport placed where the placement says (adding
    /// routers as told), with `consumers` consumers of `producers` (cycled).
    struct Joined {
        transport: TransportId,
        router: RouterIndex,
        consumers: Vec<ConsumerId>,
    }

    fn join(p: &mut Placement, producers: &[ProducerId], consumers: usize, now: Instant) -> Joined {
        let router = match p.place(true, producers.len()) {
            Place::Router(i) => i,
            Place::NewRouter => p.router_added(),
        };
        let t = TransportId::new();
        p.transport_added(t, router, true);
        let mut ids = Vec::new();
        for producer in producers.iter().cycle().take(consumers) {
            if p.needs_pipe(*producer, router) {
                p.pipe_opened(*producer, router, now);
            }
            let c = ConsumerId::new();
            p.consumer_added(c, t, *producer);
            ids.push(c);
        }
        Joined {
            transport: t,
            router,
            consumers: ids,
        }
    }

    #[test]
    fn a_room_stays_on_its_home_router_until_it_outgrows_it() {
        let clock = ManualClock::new();
        let mut p = Placement::new(10, 4, LINGER);
        let producers = [ProducerId::new(), ProducerId::new()];
        for _ in 0..5 {
            assert_eq!(join(&mut p, &producers, 2, clock.now()).router, 0);
        }
        assert_eq!(p.consumers_per_router(), [10]);
        assert!(
            p.pipes.is_empty(),
            "nothing piped while one router serves the room"
        );
        // The sixth subscriber's 2 consumers do not fit home: a second router.
        assert_eq!(join(&mut p, &producers, 2, clock.now()).router, 1);
        assert_eq!(p.pipes_of(producers[0]), [1]);
        assert_eq!(p.consumers_per_router(), [10, 2]);
    }

    #[test]
    fn sending_transports_stay_home_and_a_room_may_never_spread() {
        let mut p = Placement::new(1, 4, LINGER);
        let home = TransportId::new();
        p.transport_added(home, 0, false);
        for _ in 0..100 {
            p.consumer_added(ConsumerId::new(), home, ProducerId::new());
        }
        assert_eq!(p.place(false, 2), Place::Router(0));
        assert_eq!(
            Placement::new(0, 4, LINGER).place(true, 2),
            Place::Router(0)
        );
        assert_eq!(
            Placement::new(10, 1, LINGER).place(true, 2),
            Place::Router(0)
        );
    }

    #[test]
    fn transports_waiting_for_consumers_count_as_loaded() {
        // Joins that create their transports before any consumes (a burst of joins) must
        // not all land on the first router.
        let mut p = Placement::new(4, 2, LINGER);
        let mut routers = Vec::new();
        for _ in 0..4 {
            let r = match p.place(true, 2) {
                Place::Router(i) => i,
                Place::NewRouter => p.router_added(),
            };
            p.transport_added(TransportId::new(), r, true);
            routers.push(r);
        }
        assert_eq!(routers, [0, 0, 1, 1]);
    }

    #[test]
    fn transports_being_created_count_as_loaded() {
        // Concurrent joins place their transports before any is created.
        let mut p = Placement::new(4, 2, LINGER);
        let mut routers = Vec::new();
        for _ in 0..3 {
            let r = match p.place(true, 2) {
                Place::Router(i) => i,
                Place::NewRouter => p.router_added(),
            };
            p.reserve(r);
            routers.push(r);
        }
        assert_eq!(routers, [0, 0, 1]);
        // One creation fails: its place is free again.
        p.release(1);
        assert_eq!(p.place(true, 2), Place::Router(1));
        p.transport_added(TransportId::new(), 0, true);
        assert_eq!(
            p.reserved,
            [1, 0],
            "a created transport ends its reservation"
        );
    }

    #[test]
    fn a_full_room_goes_to_its_least_loaded_router() {
        let clock = ManualClock::new();
        let mut p = Placement::new(4, 2, LINGER);
        let producers = [ProducerId::new(), ProducerId::new()];
        let placed: Vec<RouterIndex> = (0..8)
            .map(|_| join(&mut p, &producers, 2, clock.now()).router)
            .collect();
        assert_eq!(placed, [0, 0, 1, 1, 0, 1, 0, 1]);
        assert_eq!(p.consumers_per_router(), [8, 8]);
        assert_eq!(p.router_count(), 2, "never more routers than workers");
    }

    #[test]
    fn a_pipe_closes_after_its_linger_without_consumers() {
        let mut clock = ManualClock::new();
        let mut p = Placement::new(2, 2, LINGER);
        let producer = ProducerId::new();
        join(&mut p, &[producer], 2, clock.now());
        let joined = join(&mut p, &[producer], 1, clock.now());
        assert_eq!(joined.router, 1);
        let (t, consumer) = (joined.transport, joined.consumers[0]);
        clock.advance(Duration::from_secs(30));
        assert!(p.expired_pipes(clock.now()).is_empty(), "consumed: stays");
        p.consumer_closed(consumer, clock.now());
        assert_eq!(p.consumers_per_router(), [2, 0]);
        clock.advance(LINGER - Duration::from_millis(1));
        assert!(p.expired_pipes(clock.now()).is_empty(), "within its linger");
        // A consumer in the linger keeps it open.
        let again = ConsumerId::new();
        p.consumer_added(again, t, producer);
        clock.advance(LINGER);
        assert!(p.expired_pipes(clock.now()).is_empty());
        p.consumer_closed(again, clock.now());
        clock.advance(LINGER);
        assert_eq!(p.expired_pipes(clock.now()), [(producer, 1)]);
        p.pipe_closed(producer, 1);
        assert!(
            p.needs_pipe(producer, 1),
            "the next consumer there opens it again"
        );
        assert!(!p.needs_pipe(producer, 0), "home needs no pipe");
    }

    #[test]
    fn a_pipe_opened_for_a_consume_that_failed_expires_too() {
        let mut clock = ManualClock::new();
        let mut p = Placement::new(2, 2, LINGER);
        let producer = ProducerId::new();
        p.pipe_opened(producer, 1, clock.now());
        clock.advance(LINGER);
        assert_eq!(p.expired_pipes(clock.now()), [(producer, 1)]);
    }

    #[test]
    fn a_closed_producer_takes_its_pipes_and_frees_its_routers_consumers() {
        let clock = ManualClock::new();
        let mut p = Placement::new(2, 3, LINGER);
        let home = TransportId::new();
        p.transport_added(home, 0, false);
        let producer = ProducerId::new();
        p.producer_added(producer, home);
        let subscribers: Vec<Joined> = (0..6)
            .map(|_| join(&mut p, &[producer], 2, clock.now()))
            .collect();
        assert_eq!(p.consumers_per_router(), [4, 4, 4]);
        assert_eq!(p.producers_on(home), [producer]);
        let mut piped = p.producer_closed(producer);
        piped.sort_unstable();
        assert_eq!(piped, [1, 2]);
        for s in &subscribers {
            for c in &s.consumers {
                p.consumer_closed(*c, clock.now());
            }
        }
        assert_eq!(p.consumers_per_router(), [0, 0, 0]);
        assert!(
            p.expired_pipes(clock.at(LINGER * 2)).is_empty(),
            "no pipe left"
        );
    }
}
