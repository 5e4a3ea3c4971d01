//! A simulated one-way network link, like Linux `netem` behind a `tbf` bottleneck.
//!
//! A datagram given to [`SimLink::send`] goes through, in this order:
//!
//! 1. **the bottleneck** (when [`LinkConfig::rate_bps`] is set): a FIFO queue drained at the
//!    link rate. A datagram that does not fit in [`LinkConfig::queue_bytes`] of backlog is
//!    tail-dropped; the others leave the queue once serialized (size × 8 / rate after the
//!    previous one left);
//! 2. **loss**: a Gilbert-Elliott two-state channel ([`GilbertElliott`]); independent loss
//!    is its one-state special case;
//! 3. **propagation**: the one-way [`delay`](LinkConfig::delay) plus a uniform jitter in
//!    `0..=jitter`. Jitter never reorders: a datagram is never delivered before one sent
//!    earlier (the path is one FIFO), so
//! 4. **reordering** is its own knob: with probability [`reorder`](LinkConfig::reorder) a
//!    datagram is held back an extra [`reorder_delay`](LinkConfig::reorder_delay), so the
//!    ones sent after it overtake it.
//!
//! Every random choice comes from a [`SimRng`] seeded with [`LinkConfig::seed`] (one stream
//! per kind of choice, so that, say, adding jitter does not change which datagrams are
//! lost). The same config, seed and sends give the same deliveries at the same instants.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::Datagram;
use crate::rng::SimRng;

/// Gilbert-Elliott loss: a Markov chain with a good and a bad state, each with its own
/// loss probability. Before each datagram the chain moves (good → bad with
/// `p_good_to_bad`, bad → good with `p_bad_to_good`), then the datagram is lost with the
/// loss probability of the state it is in. The chain starts in the good state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Probability per datagram of moving from the good to the bad state.
    pub p_good_to_bad: f64,
    /// Probability per datagram of moving from the bad to the good state (1 / mean burst
    /// length in datagrams).
    pub p_bad_to_good: f64,
    /// Loss probability in the good state.
    pub loss_in_good: f64,
    /// Loss probability in the bad state.
    pub loss_in_bad: f64,
}

impl GilbertElliott {
    /// No loss at all.
    pub const NONE: Self = Self {
        p_good_to_bad: 0.0,
        p_bad_to_good: 1.0,
        loss_in_good: 0.0,
        loss_in_bad: 0.0,
    };

    /// Independent (Bernoulli) loss with probability `p`: the chain never leaves the good
    /// state.
    pub fn random(p: f64) -> Self {
        Self {
            loss_in_good: p,
            ..Self::NONE
        }
    }

    /// The classic Gilbert model: nothing lost in the good state, everything in the bad
    /// one. The mean loss is `p_good_to_bad / (p_good_to_bad + p_bad_to_good)` and the mean
    /// burst length `1 / p_bad_to_good`.
    pub fn bursts(p_good_to_bad: f64, p_bad_to_good: f64) -> Self {
        Self {
            p_good_to_bad,
            p_bad_to_good,
            loss_in_good: 0.0,
            loss_in_bad: 1.0,
        }
    }

    /// Long-run fraction of datagrams lost.
    pub fn mean_loss(&self) -> f64 {
        let moves = self.p_good_to_bad + self.p_bad_to_good;
        if moves <= 0.0 {
            return self.loss_in_good;
        }
        let bad = self.p_good_to_bad / moves;
        (1.0 - bad) * self.loss_in_good + bad * self.loss_in_bad
    }
}

impl Default for GilbertElliott {
    fn default() -> Self {
        Self::NONE
    }
}

/// Parameters of a [`SimLink`]. [`Default`] is a perfect link: unlimited rate, no delay, no
/// loss, no reordering. Fields are public; the `with_*` methods chain.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Bottleneck rate in bits per second (`None`: unlimited, no queue).
    pub rate_bps: Option<u64>,
    /// Bottleneck queue size in bytes (`None`: unbounded). Counted on datagram sizes plus
    /// [`overhead_bytes`](Self::overhead_bytes).
    pub queue_bytes: Option<usize>,
    /// Bytes added to every datagram's size at the bottleneck (28 for IPv4 + UDP headers).
    pub overhead_bytes: usize,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Upper bound of the uniform random delay added to `delay`.
    pub jitter: Duration,
    /// Loss model.
    pub loss: GilbertElliott,
    /// Probability that a datagram is held back by `reorder_delay` (and overtaken).
    pub reorder: f64,
    /// Extra delay of a reordered datagram.
    pub reorder_delay: Duration,
    /// Seed of every random choice of the link.
    pub seed: u64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            rate_bps: None,
            queue_bytes: None,
            overhead_bytes: 0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: GilbertElliott::NONE,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(10),
            seed: 0,
        }
    }
}

impl LinkConfig {
    /// A perfect link except for independent loss with probability `p`.
    pub fn random_loss(p: f64) -> Self {
        Self::default().with_loss(GilbertElliott::random(p))
    }

    /// Sets the bottleneck rate in bits per second.
    pub fn with_rate(mut self, bps: u64) -> Self {
        self.rate_bps = Some(bps);
        self
    }

    /// Sets the bottleneck queue size in bytes.
    pub fn with_queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = Some(bytes);
        self
    }

    /// Sets the per-datagram overhead counted at the bottleneck.
    pub fn with_overhead_bytes(mut self, bytes: usize) -> Self {
        self.overhead_bytes = bytes;
        self
    }

    /// Sets the one-way delay.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the jitter bound.
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the loss model.
    pub fn with_loss(mut self, loss: GilbertElliott) -> Self {
        self.loss = loss;
        self
    }

    /// Sets the reordering probability and the extra delay of a reordered datagram.
    pub fn with_reorder(mut self, probability: f64, extra_delay: Duration) -> Self {
        self.reorder = probability;
        self.reorder_delay = extra_delay;
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// What [`SimLink::send`] did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It will be delivered at this instant.
    Deliver(Instant),
    /// It was lost on the path.
    Lost,
    /// The bottleneck queue was full.
    QueueDropped,
}

/// Counters of a [`SimLink`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams given to [`SimLink::send`].
    pub sent: u64,
    /// Bytes given to [`SimLink::send`].
    pub sent_bytes: u64,
    /// Datagrams handed out by [`SimLink::poll_deliver`].
    pub delivered: u64,
    /// Bytes handed out by [`SimLink::poll_deliver`].
    pub delivered_bytes: u64,
    /// Datagrams lost by the loss model.
    pub lost: u64,
    /// Datagrams tail-dropped at the bottleneck queue.
    pub queue_dropped: u64,
    /// Datagrams held back to be reordered.
    pub reordered: u64,
}

/// A datagram on its way, ordered by delivery time then by send order.
#[derive(Debug)]
struct InFlight {
    at: Instant,
    order: u64,
    datagram: Datagram,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// Salts that split the seed into independent streams, one per kind of random choice.
const LOSS_STREAM: u64 = 0x4C4F_5353;
const JITTER_STREAM: u64 = 0x4A49_5454;
const REORDER_STREAM: u64 = 0x5245_4F52;

/// A one-way simulated link (see the module docs). Sans-IO: time is an argument.
#[derive(Debug)]
pub struct SimLink {
    config: LinkConfig,
    loss_rng: SimRng,
    jitter_rng: SimRng,
    reorder_rng: SimRng,
    /// Gilbert-Elliott state.
    in_bad_state: bool,
    /// When the bottleneck has serialized everything queued so far.
    busy_until: Option<Instant>,
    /// The latest delivery time of a datagram that was not reordered (the FIFO floor).
    last_in_order: Option<Instant>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    next_order: u64,
    stats: LinkStats,
}

impl SimLink {
    /// A link with `config`, empty.
    pub fn new(config: LinkConfig) -> Self {
        let seed = config.seed;
        Self {
            loss_rng: SimRng::new(seed ^ LOSS_STREAM),
            jitter_rng: SimRng::new(seed ^ JITTER_STREAM),
            reorder_rng: SimRng::new(seed ^ REORDER_STREAM),
            config,
            in_bad_state: false,
            busy_until: None,
            last_in_order: None,
            in_flight: BinaryHeap::new(),
            next_order: 0,
            stats: LinkStats::default(),
        }
    }

    /// The link's parameters.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// Changes the parameters for datagrams sent from now on (e.g. a rate drop in the middle
    /// of a test). Datagrams in flight keep their delivery time; the random streams go on
    /// (the new seed is ignored).
    pub fn set_config(&mut self, config: LinkConfig) {
        self.config = config;
    }

    /// Sends `datagram` at `now` and says what happens to it.
    pub fn send(&mut self, now: Instant, datagram: Datagram) -> Fate {
        self.stats.sent += 1;
        self.stats.sent_bytes += datagram.data.len() as u64;
        let Some(departure) = self.through_bottleneck(now, datagram.data.len()) else {
            self.stats.queue_dropped += 1;
            return Fate::QueueDropped;
        };
        if self.draw_loss() {
            self.stats.lost += 1;
            return Fate::Lost;
        }
        let jitter = self.draw_jitter();
        let mut at = departure + self.config.delay + jitter;
        if self.reorder_rng.chance(self.config.reorder) {
            self.stats.reordered += 1;
            at += self.config.reorder_delay;
        } else {
            // One FIFO path: jitter delays, it does not reorder.
            if let Some(floor) = self.last_in_order {
                at = at.max(floor);
            }
            self.last_in_order = Some(at);
        }
        let order = self.next_order;
        self.next_order += 1;
        self.in_flight.push(Reverse(InFlight {
            at,
            order,
            datagram,
        }));
        Fate::Deliver(at)
    }

    /// When the next datagram arrives, if any is in flight.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse(f)| f.at)
    }

    /// The next datagram that has arrived by `now`, in arrival order (ties in send order).
    pub fn poll_deliver(&mut self, now: Instant) -> Option<Datagram> {
        if self.poll_timeout()? > now {
            return None;
        }
        let Reverse(f) = self.in_flight.pop()?;
        self.stats.delivered += 1;
        self.stats.delivered_bytes += f.datagram.data.len() as u64;
        Some(f.datagram)
    }

    /// Datagrams sent and neither delivered nor dropped yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The link's counters.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Bytes waiting in (or being serialized by) the bottleneck at `now`.
    pub fn queued_bytes(&self, now: Instant) -> usize {
        match (self.config.rate_bps, self.busy_until) {
            (Some(rate), Some(busy)) if busy > now => {
                let nanos = (busy - now).as_nanos();
                // Round up: a partly serialized datagram still occupies the queue.
                usize::try_from((nanos * u128::from(rate)).div_ceil(8_000_000_000))
                    .unwrap_or(usize::MAX)
            }
            _ => 0,
        }
    }

    /// Queues `len` bytes at the bottleneck; returns when they have left it, or `None`
    /// when the queue is full.
    fn through_bottleneck(&mut self, now: Instant, len: usize) -> Option<Instant> {
        let Some(rate) = self.config.rate_bps.filter(|&r| r > 0) else {
            return Some(now);
        };
        let size = len + self.config.overhead_bytes;
        if let Some(limit) = self.config.queue_bytes
            && self.queued_bytes(now) + size > limit
        {
            return None;
        }
        let start = self.busy_until.map_or(now, |busy| busy.max(now));
        let nanos = (size as u128 * 8 * 1_000_000_000).div_ceil(u128::from(rate));
        let done = start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.busy_until = Some(done);
        Some(done)
    }

    fn draw_loss(&mut self) -> bool {
        let ge = self.config.loss;
        let flip = if self.in_bad_state {
            ge.p_bad_to_good
        } else {
            ge.p_good_to_bad
        };
        if self.loss_rng.chance(flip) {
            self.in_bad_state = !self.in_bad_state;
        }
        let p = if self.in_bad_state {
            ge.loss_in_bad
        } else {
            ge.loss_in_good
        };
        self.loss_rng.chance(p)
    }

    fn draw_jitter(&mut self) -> Duration {
        let bound = u64::try_from(self.config.jitter.as_nanos()).unwrap_or(u64::MAX);
        if bound == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.jitter_rng.below(bound.saturating_add(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    const MS: Duration = Duration::from_millis(1);

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    /// A datagram carrying its index.
    fn numbered(i: u32, size: usize) -> Datagram {
        let mut data = vec![0u8; size.max(4)];
        data[..4].copy_from_slice(&i.to_be_bytes());
        Datagram::new(addr(1), addr(2), data)
    }

    fn index(d: &Datagram) -> u32 {
        u32::from_be_bytes([d.data[0], d.data[1], d.data[2], d.data[3]])
    }

    /// Sends `count` datagrams of `size` bytes every `spacing` from `t0`, delivering as it
    /// goes; returns (index, send time, delivery time) of every delivered datagram in
    /// delivery order.
    fn run(
        link: &mut SimLink,
        t0: Instant,
        count: u32,
        size: usize,
        spacing: Duration,
    ) -> Vec<(u32, Instant, Instant)> {
        let mut sent_at = Vec::new();
        let mut out = Vec::new();
        let mut drain = |link: &mut SimLink, until: Instant, sent_at: &[Instant]| {
            while let Some(at) = link.poll_timeout().filter(|&at| at <= until) {
                let d = link.poll_deliver(at).expect("due");
                let i = index(&d);
                out.push((i, sent_at[i as usize], at));
            }
        };
        for i in 0..count {
            let now = t0 + spacing * i;
            drain(link, now, &sent_at);
            sent_at.push(now);
            link.send(now, numbered(i, size));
        }
        drain(link, t0 + Duration::from_secs(3600), &sent_at);
        out
    }

    fn lossy_jittery(seed: u64) -> LinkConfig {
        LinkConfig::default()
            .with_rate(2_000_000)
            .with_queue_bytes(30_000)
            .with_delay(20 * MS)
            .with_jitter(15 * MS)
            .with_loss(GilbertElliott {
                p_good_to_bad: 0.02,
                p_bad_to_good: 0.3,
                loss_in_good: 0.01,
                loss_in_bad: 0.5,
            })
            .with_reorder(0.05, 8 * MS)
            .with_seed(seed)
    }

    #[test]
    fn perfect_link_delivers_everything_at_once_in_order() {
        let t0 = Instant::now();
        let mut link = SimLink::new(LinkConfig::default());
        assert_eq!(link.send(t0, numbered(0, 10)), Fate::Deliver(t0));
        assert_eq!(link.poll_timeout(), Some(t0));
        assert_eq!(link.poll_deliver(t0).map(|d| index(&d)), Some(0));
        assert_eq!(link.poll_deliver(t0), None);
        let got = run(&mut link, t0, 1000, 100, Duration::ZERO);
        assert_eq!(got.len(), 1000);
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, g)| g.0 as usize == i && g.2 == t0)
        );
        let stats = link.stats();
        assert_eq!((stats.sent, stats.delivered, stats.lost), (1001, 1001, 0));
    }

    #[test]
    fn same_seed_same_deliveries() {
        let t0 = Instant::now();
        let a = run(&mut SimLink::new(lossy_jittery(7)), t0, 5_000, 500, MS);
        let b = run(&mut SimLink::new(lossy_jittery(7)), t0, 5_000, 500, MS);
        let c = run(&mut SimLink::new(lossy_jittery(8)), t0, 5_000, 500, MS);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Everything happened: losses, queue drops, reordering.
        let mut link = SimLink::new(lossy_jittery(7));
        run(&mut link, t0, 5_000, 500, MS);
        let stats = link.stats();
        assert!(
            stats.lost > 0 && stats.queue_dropped > 0 && stats.reordered > 0,
            "{stats:?}"
        );
        assert_eq!(
            stats.sent,
            stats.delivered + stats.lost + stats.queue_dropped
        );
    }

    #[test]
    fn random_loss_rate_is_as_configured() {
        let t0 = Instant::now();
        let mut link = SimLink::new(LinkConfig::random_loss(0.05).with_seed(42));
        let n = 100_000;
        for i in 0..n {
            link.send(t0, numbered(i, 4));
        }
        let rate = link.stats().lost as f64 / f64::from(n);
        // σ = sqrt(0.05 · 0.95 / 1e5) ≈ 0.0007: ±0.3 % is over 4σ.
        assert!((rate - 0.05).abs() < 0.003, "{rate}");
        assert_eq!(
            link.in_flight() as u64,
            link.stats().sent - link.stats().lost
        );
    }

    /// Mean length of the runs of consecutive losses.
    fn mean_loss_burst(link: &mut SimLink, n: u32) -> (f64, f64) {
        let t0 = Instant::now();
        let (mut lost, mut bursts, mut in_burst) = (0u32, 0u32, false);
        for i in 0..n {
            let is_lost = link.send(t0, numbered(i, 4)) == Fate::Lost;
            lost += u32::from(is_lost);
            if is_lost && !in_burst {
                bursts += 1;
            }
            in_burst = is_lost;
        }
        (
            f64::from(lost) / f64::from(n),
            f64::from(lost) / f64::from(bursts.max(1)),
        )
    }

    #[test]
    fn gilbert_elliott_loses_in_bursts() {
        let ge = GilbertElliott::bursts(0.01, 0.25);
        assert!((ge.mean_loss() - 0.01 / 0.26).abs() < 1e-12);
        let (rate, burst) = mean_loss_burst(
            &mut SimLink::new(LinkConfig::default().with_loss(ge)),
            200_000,
        );
        assert!((rate - ge.mean_loss()).abs() < 0.005, "{rate}");
        // Mean burst length 1 / 0.25 = 4.
        assert!((3.5..4.5).contains(&burst), "{burst}");

        // Independent loss of the same rate comes in runs of about 1 / (1 - p).
        let (rate, burst) = mean_loss_burst(
            &mut SimLink::new(LinkConfig::random_loss(ge.mean_loss()).with_seed(3)),
            200_000,
        );
        assert!((rate - ge.mean_loss()).abs() < 0.005, "{rate}");
        assert!(burst < 1.1, "{burst}");
    }

    #[test]
    fn rate_limit_paces_and_tail_drops() {
        let t0 = Instant::now();
        // 1 Mbit/s with a 20 kB queue, offered 2 Mbit/s (1000 B every 4 ms) for 3 s.
        let mut link = SimLink::new(
            LinkConfig::default()
                .with_rate(1_000_000)
                .with_queue_bytes(20_000),
        );
        let got = run(&mut link, t0, 750, 1000, 4 * MS);
        // Each datagram takes 8 ms to serialize: back-to-back deliveries 8 ms apart.
        for pair in got.windows(2) {
            assert!(pair[1].2 - pair[0].2 >= 8 * MS, "{pair:?}");
        }
        // One simulated second carries 125 kB (± one datagram).
        let second = |from: u64| -> usize {
            let (a, b) = (
                t0 + Duration::from_secs(from),
                t0 + Duration::from_secs(from + 1),
            );
            got.iter().filter(|g| g.2 >= a && g.2 < b).count() * 1000
        };
        for s in 0..3 {
            assert!((124_000..=126_000).contains(&second(s)), "{}", second(s));
        }
        let stats = link.stats();
        // Half the offered load is dropped at the queue, nothing else is lost.
        assert!((340..=390).contains(&stats.queue_dropped), "{stats:?}");
        assert_eq!(stats.sent, stats.delivered + stats.queue_dropped);
        // Queueing delay never exceeds the queue's drain time (20 kB at 1 Mbit/s = 160 ms),
        // plus the datagram's own serialization.
        for g in &got {
            assert!(g.2 - g.1 <= 168 * MS, "{g:?}");
        }
    }

    #[test]
    fn rate_limit_alone_never_drops_with_an_unbounded_queue() {
        let t0 = Instant::now();
        let mut link = SimLink::new(LinkConfig::default().with_rate(8_000_000));
        // 100 datagrams of 1000 B at once: 1 ms each.
        for i in 0..100 {
            link.send(t0, numbered(i, 1000));
        }
        assert_eq!(link.queued_bytes(t0), 100_000);
        assert_eq!(link.poll_timeout(), Some(t0 + MS));
        assert_eq!(link.queued_bytes(t0 + 50 * MS), 50_000);
        let mut last = t0;
        let mut n = 0;
        while let Some(at) = link.poll_timeout() {
            link.poll_deliver(at).expect("due");
            last = at;
            n += 1;
        }
        assert_eq!((n, last), (100, t0 + 100 * MS));
    }

    #[test]
    fn delay_and_jitter_stay_within_bounds() {
        let t0 = Instant::now();
        let config = LinkConfig::default()
            .with_delay(50 * MS)
            .with_jitter(20 * MS)
            .with_seed(5);
        // Spaced wider than the jitter: the FIFO floor never applies.
        let got = run(&mut SimLink::new(config.clone()), t0, 2_000, 100, 30 * MS);
        let latencies: Vec<Duration> = got.iter().map(|g| g.2 - g.1).collect();
        assert!(latencies.iter().all(|&l| (50 * MS..=70 * MS).contains(&l)));
        let (min, max) = (
            latencies.iter().min().copied().expect("some"),
            latencies.iter().max().copied().expect("some"),
        );
        assert!(min < 51 * MS && max > 69 * MS, "{min:?} {max:?}");
        let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
        assert!((58 * MS..62 * MS).contains(&mean), "{mean:?}");

        // Spaced closer than the jitter: still in order, still at least the delay.
        let got = run(&mut SimLink::new(config), t0, 2_000, 100, MS);
        assert!(got.windows(2).all(|p| p[0].0 < p[1].0 && p[0].2 <= p[1].2));
        assert!(got.iter().all(|g| g.2 - g.1 >= 50 * MS));
    }

    /// How many delivered datagrams arrived after one sent later than them.
    fn overtaken(got: &[(u32, Instant, Instant)]) -> usize {
        let mut highest = None;
        let mut late = 0;
        for g in got {
            if highest.is_some_and(|h| g.0 < h) {
                late += 1;
            }
            highest = highest.max(Some(g.0));
        }
        late
    }

    #[test]
    fn reordering_only_when_asked() {
        let t0 = Instant::now();
        let jittery = LinkConfig::default()
            .with_delay(30 * MS)
            .with_jitter(25 * MS)
            .with_seed(9);
        let got = run(&mut SimLink::new(jittery.clone()), t0, 10_000, 100, MS);
        assert_eq!(got.len(), 10_000);
        assert_eq!(overtaken(&got), 0);

        let mut link = SimLink::new(jittery.with_reorder(0.1, 20 * MS));
        let got = run(&mut link, t0, 10_000, 100, 5 * MS);
        assert_eq!(got.len(), 10_000);
        let late = overtaken(&got);
        let reordered = link.stats().reordered as usize;
        assert!((900..1100).contains(&reordered), "{reordered}");
        // Held back 20 ms while others follow every 5 ms: nearly all of them are overtaken.
        assert!(
            late > reordered * 9 / 10 && late <= reordered,
            "{late} {reordered}"
        );
    }
}
