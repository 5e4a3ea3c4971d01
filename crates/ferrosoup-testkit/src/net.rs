//! A simulated network of one-way links, and the loop that drives endpoints over it.
//!
//! [`SimNet`] keeps one [`SimLink`] per direction between two addresses, created on first
//! use from a default [`LinkConfig`] (or set per direction with [`SimNet::set_link`]).
//! Anything that speaks datagrams sans-IO implements [`Endpoint`]; [`Sim`] owns the clock
//! and the network and moves datagrams and timers between endpoints, always jumping
//! straight to the next event.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::Datagram;
use crate::clock::ManualClock;
use crate::link::{Fate, LinkConfig, SimLink};
use crate::rng::SimRng;

/// Something that sends and receives datagrams on the simulated network, sans-IO.
///
/// The methods mirror the `handle_*` / `poll_*` shape of the project's state machines
/// under neutral names, so a type can implement this trait next to its own inherent
/// methods of different signatures.
pub trait Endpoint {
    /// Whether datagrams addressed to `addr` are for this endpoint.
    fn owns(&self, addr: SocketAddr) -> bool;
    /// A datagram for this endpoint arrived at `now`.
    fn receive(&mut self, now: Instant, datagram: Datagram);
    /// Time passed: `now` is at or after [`next_timeout`](Self::next_timeout).
    fn timeout(&mut self, now: Instant);
    /// The next datagram this endpoint sends, if any.
    fn transmit(&mut self) -> Option<Datagram>;
    /// When [`timeout`](Self::timeout) must next be called.
    fn next_timeout(&self) -> Option<Instant>;
}

/// Every direction between two addresses is its own [`SimLink`].
#[derive(Debug)]
pub struct SimNet {
    default: LinkConfig,
    /// Keyed by (from, to); a `BTreeMap` so that ties between links break the same way on
    /// every run.
    links: BTreeMap<(SocketAddr, SocketAddr), SimLink>,
    unroutable: u64,
}

impl SimNet {
    /// A network whose links are created from `default` (each direction gets its own seed,
    /// derived from `default.seed` and the two addresses).
    pub fn new(default: LinkConfig) -> Self {
        Self {
            default,
            links: BTreeMap::new(),
            unroutable: 0,
        }
    }

    /// Sets (or replaces, dropping what is in flight) the link from `from` to `to`.
    pub fn set_link(&mut self, from: SocketAddr, to: SocketAddr, config: LinkConfig) {
        self.links.insert((from, to), SimLink::new(config));
    }

    /// Sets the links of both directions between `a` and `b` to `config` (the direction
    /// from `b` to `a` with the seed plus one, so the two do not lose the same datagrams).
    pub fn set_path(&mut self, a: SocketAddr, b: SocketAddr, config: LinkConfig) {
        let back = config.clone().with_seed(config.seed.wrapping_add(1));
        self.set_link(a, b, config);
        self.set_link(b, a, back);
    }

    /// The link from `from` to `to`, if one was set or used.
    pub fn link(&self, from: SocketAddr, to: SocketAddr) -> Option<&SimLink> {
        self.links.get(&(from, to))
    }

    /// The link from `from` to `to`, created from the default config if needed (e.g. to
    /// change its config in the middle of a test).
    pub fn link_mut(&mut self, from: SocketAddr, to: SocketAddr) -> &mut SimLink {
        let default = &self.default;
        self.links.entry((from, to)).or_insert_with(|| {
            let seed = pair_seed(default.seed, from, to);
            SimLink::new(default.clone().with_seed(seed))
        })
    }

    /// Sends `datagram` on the link of its direction.
    pub fn send(&mut self, now: Instant, datagram: Datagram) -> Fate {
        self.link_mut(datagram.from, datagram.to)
            .send(now, datagram)
    }

    /// The earliest delivery over all links.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.links.values().filter_map(SimLink::poll_timeout).min()
    }

    /// The datagram that arrives first by `now`, over all links.
    pub fn poll_deliver(&mut self, now: Instant) -> Option<Datagram> {
        let (_, link) = self
            .links
            .iter_mut()
            .filter_map(|(_, link)| Some((link.poll_timeout()?, link)))
            .filter(|(at, _)| *at <= now)
            .min_by_key(|(at, _)| *at)?;
        link.poll_deliver(now)
    }

    /// Datagrams delivered to an address no endpoint owns (dropped).
    pub fn unroutable(&self) -> u64 {
        self.unroutable
    }
}

/// A seed for the link `from → to`, mixed from the network seed and the addresses.
fn pair_seed(seed: u64, from: SocketAddr, to: SocketAddr) -> u64 {
    let mut mix = SimRng::new(seed);
    let mut h = mix.next_u64();
    for addr in [from, to] {
        let text = addr.to_string();
        for chunk in text.as_bytes().chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            h = SimRng::new(h ^ u64::from_le_bytes(word)).next_u64();
        }
    }
    h
}

/// How many rounds of deliveries and timers one instant may take before [`Sim::step`]
/// decides an endpoint keeps asking for the present and gives up.
const MAX_ROUNDS_PER_INSTANT: usize = 100_000;

/// The clock and the network, and the loop that drives endpoints over them.
#[derive(Debug)]
pub struct Sim {
    /// Simulated time.
    pub clock: ManualClock,
    /// The links.
    pub net: SimNet,
}

impl Sim {
    /// A simulation starting now (real time read once) on a network of `default` links.
    pub fn new(default: LinkConfig) -> Self {
        Self {
            clock: ManualClock::new(),
            net: SimNet::new(default),
        }
    }

    /// The current simulated time.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// One event: handles everything due at the current time (transmits, deliveries,
    /// timers, and what they cause at the same instant) if anything is; otherwise moves
    /// the clock to the next delivery or timer, if it is at or before `limit`, and handles
    /// everything due then. Returns `true` in both cases, with the clock at the instant
    /// handled; returns `false` when nothing is due up to `limit`, with the clock moved to
    /// `limit`.
    ///
    /// So `while !done() { assert!(sim.step(..., deadline)) }` stops with the clock at the
    /// event that made `done()` true.
    ///
    /// # Panics
    ///
    /// If an endpoint keeps asking for a timeout at or before the present after being
    /// given it (a livelock, a bug in that endpoint).
    pub fn step(&mut self, endpoints: &mut [&mut dyn Endpoint], limit: Instant) -> bool {
        if self.handle_present(endpoints) {
            return true;
        }
        let next = endpoints
            .iter()
            .filter_map(|e| e.next_timeout())
            .chain(self.net.poll_timeout())
            .min();
        match next {
            Some(at) if at <= limit => {
                self.clock.advance_to(at);
                self.handle_present(endpoints);
                true
            }
            _ => {
                self.clock.advance_to(limit);
                false
            }
        }
    }

    /// Handles everything due at the current time, until nothing is; returns whether
    /// anything was.
    fn handle_present(&mut self, endpoints: &mut [&mut dyn Endpoint]) -> bool {
        let now = self.clock.now();
        let mut any = false;
        for round in 0.. {
            assert!(
                round < MAX_ROUNDS_PER_INSTANT,
                "an endpoint keeps asking for the present: livelock at {:?}",
                self.clock.elapsed()
            );
            let mut busy = false;
            for endpoint in endpoints.iter_mut() {
                busy |= self.flush(now, &mut **endpoint);
            }
            while let Some(datagram) = self.net.poll_deliver(now) {
                busy = true;
                match endpoints.iter_mut().find(|e| e.owns(datagram.to)) {
                    Some(endpoint) => {
                        endpoint.receive(now, datagram);
                        self.flush(now, &mut **endpoint);
                    }
                    None => self.net.unroutable += 1,
                }
            }
            for endpoint in endpoints.iter_mut() {
                if endpoint.next_timeout().is_some_and(|at| at <= now) {
                    busy = true;
                    endpoint.timeout(now);
                    self.flush(now, &mut **endpoint);
                }
            }
            if !busy {
                break;
            }
            any = true;
        }
        any
    }

    /// Steps until nothing is left to do up to `limit`; the clock ends at `limit` (or
    /// stays where it is if `limit` is in the past).
    pub fn run_until(&mut self, endpoints: &mut [&mut dyn Endpoint], limit: Instant) {
        while self.step(endpoints, limit) {}
    }

    /// [`run_until`](Self::run_until) `duration` from now.
    pub fn run_for(&mut self, endpoints: &mut [&mut dyn Endpoint], duration: Duration) {
        let limit = self.clock.now() + duration;
        self.run_until(endpoints, limit);
    }

    /// Sends everything `endpoint` has to send; returns whether there was anything.
    fn flush(&mut self, now: Instant, endpoint: &mut dyn Endpoint) -> bool {
        let mut any = false;
        while let Some(datagram) = endpoint.transmit() {
            any = true;
            self.net.send(now, datagram);
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    const MS: Duration = Duration::from_millis(1);

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    /// Sends a numbered datagram to `peer` every `period`, records what it receives.
    struct Ticker {
        addr: SocketAddr,
        peer: SocketAddr,
        period: Duration,
        next: Instant,
        sent: u32,
        out: VecDeque<Datagram>,
        received: Vec<(Instant, u32)>,
    }

    impl Ticker {
        fn new(addr: SocketAddr, peer: SocketAddr, period: Duration, start: Instant) -> Self {
            Self {
                addr,
                peer,
                period,
                next: start,
                sent: 0,
                out: VecDeque::new(),
                received: Vec::new(),
            }
        }
    }

    impl Endpoint for Ticker {
        fn owns(&self, addr: SocketAddr) -> bool {
            addr == self.addr
        }
        fn receive(&mut self, now: Instant, d: Datagram) {
            let n = u32::from_be_bytes(d.data[..4].try_into().expect("4 bytes"));
            self.received.push((now, n));
        }
        fn timeout(&mut self, now: Instant) {
            while self.next <= now {
                self.out.push_back(Datagram::new(
                    self.addr,
                    self.peer,
                    self.sent.to_be_bytes().to_vec(),
                ));
                self.sent += 1;
                self.next += self.period;
            }
        }
        fn transmit(&mut self) -> Option<Datagram> {
            self.out.pop_front()
        }
        fn next_timeout(&self) -> Option<Instant> {
            Some(self.next)
        }
    }

    #[test]
    fn sim_jumps_between_events_and_is_deterministic() {
        let run = |seed: u64| {
            let mut sim = Sim::new(
                LinkConfig::random_loss(0.1)
                    .with_delay(25 * MS)
                    .with_jitter(10 * MS)
                    .with_seed(seed),
            );
            let t0 = sim.now();
            let (a, b) = (addr(1), addr(2));
            let mut x = Ticker::new(a, b, 20 * MS, t0);
            let mut y = Ticker::new(b, a, 30 * MS, t0);
            let mut steps = 0;
            while sim.step(&mut [&mut x, &mut y], t0 + Duration::from_secs(10)) {
                steps += 1;
            }
            assert_eq!(sim.now(), t0 + Duration::from_secs(10));
            // Two timers and their deliveries: a few thousand events, not 10 s of ticks.
            assert!(steps < 5_000, "{steps}");
            assert_eq!(x.sent, 501);
            assert_eq!(y.sent, 334);
            let rel = |r: &[(Instant, u32)]| -> Vec<(Duration, u32)> {
                r.iter().map(|&(at, n)| (at - t0, n)).collect()
            };
            let delivered = (rel(&x.received), rel(&y.received));
            // Both directions lose about 10 %, each on its own seed.
            let lost_ab = sim.net.link(a, b).expect("used").stats().lost;
            let lost_ba = sim.net.link(b, a).expect("used").stats().lost;
            assert!((25..80).contains(&lost_ab) && (15..55).contains(&lost_ba));
            // Latency bounds hold through the driver.
            assert!(y.received.iter().all(|&(at, n)| {
                let sent = t0 + 20 * MS * n;
                at - sent >= 25 * MS && at - sent <= 35 * MS + 20 * MS
            }));
            delivered
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn unowned_destinations_are_counted() {
        let mut sim = Sim::new(LinkConfig::default());
        let t0 = sim.now();
        let mut x = Ticker::new(addr(1), addr(99), 10 * MS, t0);
        sim.run_for(&mut [&mut x], 95 * MS);
        assert_eq!(sim.net.unroutable(), 10);
    }

    #[test]
    fn per_direction_links() {
        let mut net = SimNet::new(LinkConfig::default());
        net.set_path(addr(1), addr(2), LinkConfig::default().with_delay(5 * MS));
        let t0 = Instant::now();
        assert_eq!(
            net.send(t0, Datagram::new(addr(1), addr(2), vec![1])),
            Fate::Deliver(t0 + 5 * MS)
        );
        assert_eq!(
            net.send(t0, Datagram::new(addr(2), addr(1), vec![2])),
            Fate::Deliver(t0 + 5 * MS)
        );
        // Unconfigured directions use the default: a perfect link.
        assert_eq!(
            net.send(t0, Datagram::new(addr(1), addr(3), vec![3])),
            Fate::Deliver(t0)
        );
        assert_eq!(net.poll_timeout(), Some(t0));
        assert_eq!(net.poll_deliver(t0).map(|d| d.data), Some(vec![3]));
        assert_eq!(net.poll_deliver(t0), None);
        assert_eq!(net.poll_deliver(t0 + 5 * MS).map(|d| d.data), Some(vec![1]));
        assert_eq!(net.poll_deliver(t0 + 5 * MS).map(|d| d.data), Some(vec![2]));
    }
}
