//! Probing: short clusters sent at a target rate (media plus padding) whose arrival rate
//! shows headroom the estimate has not reached, so the rate can jump instead of creeping
//! up at 8 % a second. The controller decides when and how fast; the estimator reads the
//! result from feedback.

/// How long a cluster lasts at least.
const CLUSTER_US: i64 = 30_000;
/// Bytes a cluster carries at least (it lasts longer at low rates). A token-bucket
/// bottleneck lets its burst through at line rate, and refills while it drains: a probe
/// at twice the link's rate passes twice the burst before the bucket is empty. The
/// receive rate is read over the cluster's second half, so a burst up to a quarter of
/// this does not pass for headroom (6 KB clusters read a 400 kbit/s tbf with the usual
/// 3,000-byte burst as 640 kbit/s, and the consumer was switched to a layer it could not
/// carry).
const MIN_CLUSTER_BYTES: u64 = 12_000;
/// A cluster's result is ready when this share of its packets was reported.
const MIN_REPORTED: f64 = 0.8;
/// Packets a cluster needs at least.
pub const MIN_PACKETS: u32 = 6;
/// A cluster not resolved this long after it ended is given up.
const RESULT_TIMEOUT_US: i64 = 1_000_000;
/// The least time between two probes that found no headroom (doubles on each failure).
const RETRY_US: i64 = 2_000_000;
/// The longest back-off between failed probes: a capacity that grows is found within
/// this (plus a round trip).
const MAX_RETRY_US: i64 = 4_000_000;
/// A probe at most this multiple of the estimate.
const MAX_STEP: f64 = 2.0;
/// Losses in a cluster up to this share are taken for link loss, not congestion.
const LINK_LOSS: f64 = 0.1;
/// A result at least this share of the probe's target continues exponentially...
const CONTINUE_SHARE: f64 = 0.7;
/// ...when it is also this much above the estimate the probe started from.
const CONTINUE_GAIN: f64 = 1.1;

/// What a cluster measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    /// The rate it showed, bit/s.
    pub bitrate: u64,
    /// The bottleneck spaced its packets: it arrived slower than it was sent, so the rate
    /// is the link's, and the probe left a queue behind.
    pub at_capacity: bool,
    /// The rate it was sent at, bit/s.
    pub sent_bps: u64,
    /// The rate it arrived at (what decided `at_capacity`), bit/s.
    pub received_bps: u64,
}

/// A cluster to send: every packet sent during it counts; padding fills what media leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeCluster {
    /// Id (never 0).
    pub id: u32,
    /// Target rate, bit/s.
    pub bitrate: u64,
    /// When it started, µs on the sender's clock.
    pub start_us: i64,
    /// The estimate when it started, bit/s.
    pub from_bps: u64,
    /// How long it lasts, µs.
    pub duration_us: i64,
}

impl ProbeCluster {
    /// Bytes that should have gone out by `now_us` (none after the cluster ended).
    pub fn bytes_due(&self, now_us: i64) -> u64 {
        let elapsed = (now_us - self.start_us).clamp(0, self.duration_us);
        self.bitrate * elapsed as u64 / 8_000_000
    }

    /// When it ends, µs.
    pub fn end_us(&self) -> i64 {
        self.start_us + self.duration_us
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    id: u32,
    sent: u32,
    reported: u32,
    received: u32,
    bytes: u64,
    received_bytes: u64,
    first_send: Option<i64>,
    last_send: i64,
    last_send_size: u32,
    first_arrival: Option<i64>,
    first_arrival_size: u32,
    last_arrival: i64,
    /// Bytes of the packets reported so far, in send order.
    reported_bytes: u64,
    /// Arrival and send time of the packet that ends the cluster's first half (by bytes
    /// sent), with the bytes received after it and the last send time among them.
    mid_arrival: Option<i64>,
    mid_send: i64,
    tail_bytes: u64,
    tail_last_send: i64,
}

/// Decides probes and reads their results.
#[derive(Clone, Debug)]
pub struct Prober {
    next_id: u32,
    active: Option<ProbeCluster>,
    tally: Tally,
    /// A probe that found headroom asks for the next step at once.
    continue_from: Option<u64>,
    retry_us: i64,
    earliest_us: i64,
    probes: u64,
}

impl Default for Prober {
    fn default() -> Self {
        Self {
            next_id: 1,
            active: None,
            tally: Tally::default(),
            continue_from: None,
            retry_us: RETRY_US,

            earliest_us: 0,
            probes: 0,
        }
    }
}

impl Prober {
    /// Starts a cluster at `now_us` if one is due: the allocator wants `desired` bit/s,
    /// more than `estimate`, and a probe just found headroom (the next step goes at once)
    /// or the back-off since the last probe that found none has passed. An SFU probes
    /// whether or not it is application-limited: its layers are steps, so the rate it
    /// sends does not creep up to show the estimate headroom as an encoder's would.
    pub fn poll(&mut self, now_us: i64, estimate: u64, desired: u64) -> Option<ProbeCluster> {
        if let Some(active) = self.active {
            if now_us < active.end_us() + RESULT_TIMEOUT_US {
                return None;
            }
            self.fail(now_us);
        }
        if desired <= estimate {
            self.continue_from = None;
            return None;
        }
        let base = match self.continue_from.take() {
            Some(found) => found,
            None if now_us >= self.earliest_us => estimate,
            None => return None,
        };
        let target = (desired as f64 * 1.1).min(base as f64 * MAX_STEP) as u64;
        if target <= estimate {
            return None;
        }
        let cluster = ProbeCluster {
            id: self.next_id,
            bitrate: target,
            start_us: now_us,
            from_bps: estimate,
            duration_us: CLUSTER_US
                .max((MIN_CLUSTER_BYTES * 8_000_000).div_ceil(target.max(1)) as i64),
        };
        // Ids fit the send history's 16 bits.
        self.next_id = (self.next_id % u32::from(u16::MAX)) + 1;
        self.active = Some(cluster);
        self.tally = Tally {
            id: cluster.id,
            ..Tally::default()
        };
        self.probes += 1;
        Some(cluster)
    }

    /// The cluster packets sent now belong to (0: none).
    pub fn cluster_at(&self, now_us: i64) -> u32 {
        self.active
            .filter(|c| now_us < c.end_us())
            .map_or(0, |c| c.id)
    }

    /// The active cluster, while it sends.
    pub fn sending(&self, now_us: i64) -> Option<ProbeCluster> {
        self.active.filter(|c| now_us < c.end_us())
    }

    /// Notes a packet sent in cluster `id`.
    pub fn on_sent(&mut self, id: u32, sent_us: i64, size: u32) {
        if id == 0 || id != self.tally.id {
            return;
        }
        let t = &mut self.tally;
        t.sent += 1;
        t.bytes += u64::from(size);
        t.first_send.get_or_insert(sent_us);
        t.last_send = sent_us;
        t.last_send_size = size;
    }

    /// Notes a feedback result of cluster `id`, read at `now_us`; returns what the
    /// cluster measured once it has ended and enough of it was reported (a feedback that
    /// comes while it still sends covers only its first packets).
    pub fn on_result(
        &mut self,
        now_us: i64,
        id: u32,
        sent_us: i64,
        arrival_us: Option<i64>,
        size: u32,
    ) -> Option<ProbeResult> {
        let active = self.active?;
        if id != active.id {
            return None;
        }
        let t = &mut self.tally;
        t.reported += 1;
        t.reported_bytes += u64::from(size);
        if let Some(at) = arrival_us {
            t.received += 1;
            t.received_bytes += u64::from(size);
            if t.first_arrival.is_none_or(|f| at < f) {
                t.first_arrival = Some(at);
                t.first_arrival_size = size;
            }
            t.last_arrival = t.last_arrival.max(at);
            if t.mid_arrival.is_some() {
                t.tail_bytes += u64::from(size);
                t.tail_last_send = t.tail_last_send.max(sent_us);
            } else if t.reported_bytes * 2 >= active.bytes_due(active.end_us()) {
                t.mid_arrival = Some(at);
                t.mid_send = sent_us;
            }
        }
        // Complete once it ended, or once it sent (nearly: packets are whole) all it had
        // to: its last padding goes out a tick before the end, and a feedback may report every packet before the end
        // (no later report would then resolve it, and a probe that found headroom would
        // time out as one that found none).
        let complete =
            now_us >= active.end_us() || t.bytes * 100 >= active.bytes_due(active.end_us()) * 97;
        if !complete
            || t.sent < MIN_PACKETS
            || f64::from(t.reported) < f64::from(t.sent) * MIN_REPORTED
        {
            return None;
        }
        let result = measured(t);
        self.active = None;
        match result.map(|r| r.bitrate) {
            Some(r)
                if r as f64 >= active.bitrate as f64 * CONTINUE_SHARE
                    && r as f64 > active.from_bps as f64 * CONTINUE_GAIN =>
            {
                self.continue_from = Some(r);
                self.retry_us = RETRY_US;
            }
            _ => self.backoff(active.end_us()),
        }
        result
    }

    /// A probe that found nothing: wait longer before the next.
    fn fail(&mut self, now_us: i64) {
        self.active = None;
        self.backoff(now_us);
    }

    fn backoff(&mut self, now_us: i64) {
        self.earliest_us = now_us + self.retry_us;
        self.retry_us = (self.retry_us * 2).min(MAX_RETRY_US);
        self.continue_from = None;
    }

    /// Bytes sent so far in the cluster in progress.
    pub fn cluster_bytes(&self) -> u64 {
        self.tally.bytes
    }

    /// Probes started so far.
    pub fn probes(&self) -> u64 {
        self.probes
    }
}

/// The rate a cluster showed: the lower of its send and receive rates (the receive rate
/// over the whole cluster, or over its second half when that arrived slower than it was
/// sent), a little under the receive rate when the bottleneck spaced the packets. The
/// second half counts only when the link slowed it: a cluster that starts with a
/// keyframe's burst sends little padding after it, and its second half is slow at the
/// sender.
fn measured(t: &Tally) -> Option<ProbeResult> {
    let first_send = t.first_send?;
    let first_arrival = t.first_arrival?;
    if t.received < MIN_PACKETS / 2 {
        return None;
    }
    let send_us = (t.last_send - first_send).max(1_000);
    let recv_us = (t.last_arrival - first_arrival).max(1_000);
    let send = (t.bytes - u64::from(t.last_send_size)) as f64 * 8e6 / send_us as f64;
    let mut recv =
        (t.received_bytes - u64::from(t.first_arrival_size)) as f64 * 8e6 / recv_us as f64;
    if let Some(mid) = t.mid_arrival
        && t.tail_bytes > 0
    {
        let tail_recv = t.tail_bytes as f64 * 8e6 / (t.last_arrival - mid).max(1_000) as f64;
        let tail_send =
            t.tail_bytes as f64 * 8e6 / (t.tail_last_send - t.mid_send).max(1_000) as f64;
        if tail_recv < 0.9 * tail_send {
            recv = recv.min(tail_recv);
        }
    }
    // A few packets lost (random link loss) still crossed the bottleneck: count them. More
    // is congestion, and the received rate stands.
    let lost = t.reported.saturating_sub(t.received);
    if f64::from(lost) <= f64::from(t.reported) * LINK_LOSS {
        recv *= f64::from(t.reported) / f64::from(t.received.max(1));
    }
    let at_capacity = recv < 0.9 * send;
    let bitrate = if at_capacity {
        0.95 * recv
    } else {
        send.min(recv)
    } as u64;
    Some(ProbeResult {
        bitrate,
        at_capacity,
        sent_bps: send as u64,
        received_bps: recv as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends cluster `c` as packets of 1,000 bytes at its rate (as `bytes_due` says),
    /// through a bottleneck of `capacity` bit/s; feeds the results back.
    fn run(p: &mut Prober, c: ProbeCluster, capacity: u64) -> Option<ProbeResult> {
        run_bucket(p, c, capacity, 1000)
    }

    /// As `run`, through a token bucket of `capacity` bit/s (tbf): it holds up to `burst`
    /// bytes of tokens, full when the cluster starts, and refills at `capacity`; a packet
    /// leaves when there are tokens for it, in order.
    fn run_bucket(
        p: &mut Prober,
        c: ProbeCluster,
        capacity: u64,
        burst: u64,
    ) -> Option<ProbeResult> {
        let us_per_byte = 8_000_000.0 / capacity as f64;
        let mut arrivals = Vec::new();
        let mut sent_bytes = 0;
        let mut tokens = burst as f64;
        let mut last = c.start_us as f64;
        for t in (c.start_us..c.end_us()).step_by(1_000) {
            while c.bytes_due(t + 1_000) > sent_bytes {
                p.on_sent(c.id, t, 1000);
                sent_bytes += 1000;
                let mut leaves = (t as f64).max(last);
                tokens = (tokens + (leaves - last) / us_per_byte).min(burst.max(1000) as f64);
                if tokens < 1000.0 {
                    leaves += (1000.0 - tokens) * us_per_byte;
                    tokens = 1000.0;
                }
                tokens -= 1000.0;
                last = leaves;
                arrivals.push((t, leaves as i64 + 50_000));
            }
        }
        let mut result = None;
        for (sent, at) in arrivals {
            result = result.or(p.on_result(at.max(c.end_us()), c.id, sent, Some(at), 1000));
        }
        result
    }

    #[test]
    fn a_cluster_reported_in_full_before_its_end_resolves() {
        let mut p = Prober::default();
        let c = p.poll(0, 500_000, 5_000_000).unwrap();
        // Every packet sent by a millisecond before the end, each reported 0.5 ms later.
        let mut sent_bytes = 0;
        let mut result = None;
        for t in (c.start_us..c.end_us() - 1_000).step_by(1_000) {
            while c.bytes_due(t + 2_000) > sent_bytes {
                p.on_sent(c.id, t, 1000);
                sent_bytes += 1000;
                result = result.or(p.on_result(t + 500, c.id, t, Some(t + 600), 1000));
            }
        }
        let r = result.expect("resolved before its end: nothing else will be reported");
        assert!(!r.at_capacity, "{r:?}");
        assert!(r.bitrate >= 900_000, "{r:?}");
    }

    #[test]
    fn probes_find_capacity_exponentially_and_back_off_when_none() {
        let mut p = Prober::default();
        assert_eq!(p.poll(0, 1_000_000, 900_000), None, "nothing wanted");
        let c = p.poll(0, 1_000_000, 5_000_000).unwrap();
        assert_eq!(c.bitrate, 2_000_000, "twice the estimate at most");
        assert_eq!(p.cluster_at(10_000), c.id);
        assert_eq!(p.poll(10_000, 1_000_000, 5_000_000), None, "one at a time");
        let r = run(&mut p, c, 10_000_000).unwrap();
        assert!(!r.at_capacity, "{r:?}");
        let r = r.bitrate;
        assert!((1_900_000..=2_600_000).contains(&r), "{r}");
        // Found: the next step comes at once.
        let c = p.poll(200_000, r, 5_000_000).unwrap();
        assert!(c.bitrate >= 2 * r - 1, "{}", c.bitrate);
        // The bottleneck (2.5 Mbit/s) spaces the packets: the result is under it.
        let r = run(&mut p, c, 2_500_000).unwrap();
        assert!(r.at_capacity, "{r:?}");
        let r = r.bitrate;
        assert!((2_100_000..=2_500_000).contains(&r), "{r}");
        assert!(
            p.poll(300_000, r, 5_000_000).is_none(),
            "{r} < 0.7 × target: back off"
        );
        assert!(p.poll(300_000 + RETRY_US, r, 5_000_000).is_some());
    }

    #[test]
    fn a_token_bucket_burst_does_not_pass_for_headroom() {
        let mut p = Prober::default();
        let c = p.poll(0, 325_000, 2_000_000).unwrap();
        assert!(
            c.bytes_due(c.end_us()) >= MIN_CLUSTER_BYTES,
            "long enough at a low rate"
        );
        // 400 kbit/s with 3,000 bytes of burst (the shaped-link test's tbf), full: what
        // passes on it leaves at line rate, as the bucket refills.
        let r = run_bucket(&mut p, c, 400_000, 3_000).unwrap().bitrate;
        assert!(r <= 440_000, "{r}: the burst read as capacity");
        // Under the capacity is fine (the probe just finds no headroom); far under is not.
        assert!(r >= 250_000, "{r}");
    }
}
