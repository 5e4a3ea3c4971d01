//! Sharing one transport's estimated bandwidth among its video consumers, as a plain
//! function: audio is reserved first (never starved), then every consumer gets its lowest
//! layer in priority order, then layers are raised one step at a time, higher priorities
//! taking more steps per round. The steps are (spatial, temporal) layers in that order:
//! S0T0, S0T1, S0T2, S1T0, ... A consumer whose lowest layer does not fit is paused.
//! Raising a consumer above the layer it forwards now needs a margin on top of the
//! layer's bitrate, so an estimate hovering near a layer's cost does not flap.

use std::time::{Duration, Instant};

use crate::layers::MAX_TEMPORAL_LAYERS;

/// Spatial layers (simulcast streams, or SVC spatial layers) a consumer can be given.
pub const MAX_SPATIAL_LAYERS: usize = 8;
/// Layer steps a consumer can be given: every (spatial, temporal) pair.
pub const MAX_LAYERS: usize = MAX_SPATIAL_LAYERS * MAX_TEMPORAL_LAYERS;

/// A spatial and a temporal layer; ordered as the allocator steps through them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Layer {
    /// Spatial layer: simulcast stream, or SVC spatial layer.
    pub spatial: u8,
    /// Temporal layer.
    pub temporal: u8,
}

impl Layer {
    /// Its index among the allocator's steps (`Demand::layers`).
    pub fn step(self) -> usize {
        usize::from(self.spatial) * MAX_TEMPORAL_LAYERS + usize::from(self.temporal)
    }

    /// The layer of a step index.
    pub fn from_step(step: usize) -> Self {
        Self {
            spatial: u8::try_from(step / MAX_TEMPORAL_LAYERS).unwrap_or(u8::MAX),
            temporal: (step % MAX_TEMPORAL_LAYERS) as u8,
        }
    }
}
/// A layer above the one a consumer forwards now must fit this many times its bitrate.
pub const UPGRADE_MARGIN: f64 = 1.08;
/// The layer a consumer forwards now (and those below) stays while this share of its
/// bitrate fits: an overuse lowers the estimate to 0.85 × what was delivered lately, so a
/// layer the link carried survives a keyframe's delay spike (the switch's own keyframe
/// included, measured on links with 5 % random loss), one the link did not carry goes at
/// the first overuse.
pub const KEEP_MARGIN: f64 = 0.75;
/// A consumer forwarding video keeps its lowest layer while this share of it fits: pausing
/// freezes the picture for seconds (the resume waits for an estimate that fits and a
/// keyframe), so a dip of the estimate on a link that carried the layer must not pause it;
/// a link that collapsed below half the lowest layer does.
pub const KEEP_LOWEST_MARGIN: f64 = 0.5;

/// A consumer is not switched up to a spatial layer whose keyframe would take longer than
/// this to cross the link at the estimate: the switch sends that keyframe at once, and
/// the picture stands still until it is through (a 1280x720 keyframe of ~60 KB holds a
/// 400 kbit/s link for over a second, and the losses of its queue bring more keyframes).
pub const MAX_KEYFRAME_SECONDS: f64 = 0.4;

/// A lower temporal layer of a spatial layer above the lowest is a step only at this
/// frame rate or more...
pub const MIN_FRAME_RATE: f64 = 12.0;
/// ...and stays one at this rate or more while it is forwarded.
pub const KEEP_FRAME_RATE: f64 = 10.0;

/// One video consumer's demand.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Demand {
    /// Bandwidth priority (1..255): steps taken per round.
    pub priority: u8,
    /// Bitrate of each layer step it may forward ([`Layer::step`]), bit/s, each step
    /// including what it builds on (0: not available, or above its preferred layers).
    pub layers: [u64; MAX_LAYERS],
    /// The step it forwards now (or switches to, waiting for a keyframe).
    pub current: Option<usize>,
}

impl Demand {
    fn cost(&self, layer: usize) -> f64 {
        let bitrate = self.layers[layer] as f64;
        if self.current.is_some() && Some(layer) == self.lowest() {
            bitrate * KEEP_LOWEST_MARGIN
        } else if self.current.is_some_and(|c| layer <= c) {
            bitrate * KEEP_MARGIN
        } else {
            bitrate * UPGRADE_MARGIN
        }
    }

    /// The best layer it asks for (`None`: none).
    pub fn top(&self) -> Option<usize> {
        self.layers.iter().rposition(|&b| b > 0)
    }

    /// Its lowest available layer.
    pub fn lowest(&self) -> Option<usize> {
        self.layers.iter().position(|&b| b > 0)
    }

    /// The step after `layer`. A higher spatial layer is not entered at its lowest
    /// temporal layer when it has more: a bigger picture at a quarter of the frame rate
    /// (7.5 fps) looks worse than the smaller one at the full rate, so the step up from a
    /// spatial layer goes to the next one's second temporal layer (half the rate).
    fn next_above(&self, layer: usize) -> Option<usize> {
        let next = (layer + 1..MAX_LAYERS).find(|&l| self.layers[l] > 0)?;
        if next / MAX_TEMPORAL_LAYERS == layer / MAX_TEMPORAL_LAYERS
            || next % MAX_TEMPORAL_LAYERS != 0
        {
            return Some(next);
        }
        let spatial_end = (next / MAX_TEMPORAL_LAYERS + 1) * MAX_TEMPORAL_LAYERS;
        Some(
            (next + 1..spatial_end)
                .find(|&l| self.layers[l] > 0)
                .unwrap_or(next),
        )
    }

    /// Takes away the spatial layers above the one it forwards now (or its lowest, when it
    /// forwards none) whose last keyframe, `keyframe_bits` per spatial layer (0: none
    /// seen), would take longer than [`MAX_KEYFRAME_SECONDS`] at `estimate_bps`.
    pub fn limit_to_keyframes_that_fit(
        &mut self,
        keyframe_bits: &[u64; MAX_SPATIAL_LAYERS],
        estimate_bps: u64,
    ) {
        let Some(from) = self.current.or_else(|| self.lowest()) else {
            return;
        };
        let from = from / MAX_TEMPORAL_LAYERS;
        let limit = estimate_bps as f64 * MAX_KEYFRAME_SECONDS;
        for (spatial, &bits) in keyframe_bits.iter().enumerate().skip(from + 1) {
            if bits as f64 > limit {
                let start = spatial * MAX_TEMPORAL_LAYERS;
                self.layers[start..start + MAX_TEMPORAL_LAYERS].fill(0);
            }
        }
    }

    /// Takes away the lower temporal layers of every spatial layer but its lowest where
    /// they would show fewer than [`MIN_FRAME_RATE`] pictures a second (the one it
    /// forwards now: [`KEEP_FRAME_RATE`]), `frame_rates` per step (0: not measured): a
    /// bigger picture at half the frame rate is a step up only while that half is
    /// smooth; with a camera that sends 20 pictures a second, the smaller picture at 20
    /// beats the bigger one at 10 (WebRTC's "balanced" degradation keeps 15 at 640x480).
    /// A spatial layer's highest temporal layer it may get stays, whatever its rate.
    pub fn limit_to_smooth_frame_rates(&mut self, frame_rates: &[f64; MAX_LAYERS]) {
        let Some(lowest) = self.lowest() else {
            return;
        };
        let first_spatial = lowest / MAX_TEMPORAL_LAYERS + 1;
        for spatial in first_spatial..MAX_SPATIAL_LAYERS {
            let start = spatial * MAX_TEMPORAL_LAYERS;
            let steps = start..start + MAX_TEMPORAL_LAYERS;
            let Some(top) = steps.clone().rev().find(|&l| self.layers[l] > 0) else {
                continue;
            };
            for (step, &rate) in frame_rates.iter().enumerate().take(top).skip(start) {
                let min = if self.current == Some(step) {
                    KEEP_FRAME_RATE
                } else {
                    MIN_FRAME_RATE
                };
                if rate > 0.0 && rate < min {
                    self.layers[step] = 0;
                }
            }
        }
    }

    /// What it would take with nothing held back (its best layer, upgrade margin
    /// included), bit/s.
    pub fn wanted(&self) -> u64 {
        self.top().map_or(0, |top| self.cost(top) as u64)
    }
}

/// Gives each demand a layer (`None`: paused) out of `budget` bit/s, written to `out`
/// (same order as `demands`). Returns the bandwidth left over. `order` is a buffer it
/// reuses (its contents do not matter).
pub fn allocate(
    budget: u64,
    demands: &[Demand],
    out: &mut [Option<usize>],
    order: &mut Vec<usize>,
) -> u64 {
    let n = demands.len().min(out.len());
    let mut left = budget as f64;
    out[..n].fill(None);
    // Higher priority first; equal priorities keep their order.
    order.clear();
    order.extend(0..n);
    order.sort_unstable_by_key(|&i| (std::cmp::Reverse(demands[i].priority), i));
    for &i in order.iter() {
        let d = &demands[i];
        if let Some(l) = d.lowest()
            && d.cost(l) <= left
        {
            out[i] = Some(l);
            left -= d.cost(l);
        }
    }
    loop {
        let mut raised = false;
        for &i in order.iter() {
            let d = &demands[i];
            for _ in 0..d.priority.max(1) {
                let Some(cur) = out[i] else { break };
                let Some(next) = d.next_above(cur) else { break };
                let extra = d.cost(next) - d.cost(cur);
                if extra > left {
                    break;
                }
                out[i] = Some(next);
                left -= extra;
                raised = true;
            }
        }
        if !raised {
            break;
        }
    }
    left.max(0.0) as u64
}

/// Which way a consumer moves from layer `from` to layer `to` (`None`: paused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// To a higher layer, or resumed.
    Up,
    /// To a lower layer, or paused.
    Down,
    /// Neither.
    Same,
}

impl Step {
    /// The step from `from` to `to`.
    pub fn between(from: Option<usize>, to: Option<usize>) -> Self {
        match (from, to) {
            (None, Some(_)) => Self::Up,
            (Some(_), None) => Self::Down,
            (Some(a), Some(b)) if b > a => Self::Up,
            (Some(a), Some(b)) if b < a => Self::Down,
            _ => Self::Same,
        }
    }
}

/// An upgrade taken back within this long did not last...
const UPGRADE_TRIAL: Duration = Duration::from_secs(4);
/// ...and holds the consumer's next upgrade back this long, doubling for each such
/// upgrade in a row...
const HOLD: Duration = Duration::from_secs(2);
/// ...up to this (short enough that a link that got better is used again within seconds).
const MAX_HOLD: Duration = Duration::from_secs(8);

/// Holds a consumer's upgrades back after upgrades that did not last: an estimate that a
/// probe raised past a layer which the link then could not carry (a token bucket's burst
/// looks like headroom to a short probe) would otherwise switch it up and down every few
/// seconds, each switch costing a keyframe. The engine reports only the changes the link
/// may have caused: a consumer given all it asks for (its preferred layer went down, a
/// stream stopped) failed no upgrade.
#[derive(Clone, Copy, Debug, Default)]
pub struct UpgradeHold {
    upgraded_at: Option<Instant>,
    failures: u32,
    until: Option<Instant>,
}

impl UpgradeHold {
    /// The allocation moved the consumer from layer `from` to `to` (`None`: paused).
    pub fn on_change(&mut self, now: Instant, from: Option<usize>, to: Option<usize>) {
        if Step::between(from, to) == Step::Up {
            self.upgraded_at = Some(now);
            return;
        }
        if let Some(at) = self.upgraded_at.take()
            && now.saturating_duration_since(at) < UPGRADE_TRIAL
        {
            self.failures += 1;
            let hold = HOLD.saturating_mul(1 << self.failures.min(8).saturating_sub(1));
            self.until = Some(now + hold.min(MAX_HOLD));
        }
    }

    /// Whether upgrades wait now.
    pub fn holds(&mut self, now: Instant) -> bool {
        if self
            .upgraded_at
            .is_some_and(|at| now.saturating_duration_since(at) >= UPGRADE_TRIAL)
        {
            // The last upgrade lasted.
            self.upgraded_at = None;
            self.failures = 0;
        }
        self.until.is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three simulcast streams without temporal layers.
    const SIMULCAST: [u64; 3] = [150_000, 500_000, 1_500_000];

    /// The step of spatial layer `spatial`, temporal layer 0.
    fn sp(spatial: u8) -> Option<usize> {
        Some(
            Layer {
                spatial,
                temporal: 0,
            }
            .step(),
        )
    }

    fn demand(current: Option<usize>) -> Demand {
        let mut layers = [0; MAX_LAYERS];
        for (s, bitrate) in SIMULCAST.into_iter().enumerate() {
            layers[Layer::from_step(s * MAX_TEMPORAL_LAYERS).step()] = bitrate;
        }
        Demand {
            priority: 1,
            layers,
            current,
        }
    }

    fn run(budget: u64, demands: &[Demand]) -> Vec<Option<usize>> {
        let mut out = vec![Some(9); demands.len()];
        allocate(budget, demands, &mut out, &mut Vec::new());
        out
    }

    #[test]
    fn one_consumer_gets_the_best_layer_that_fits() {
        assert_eq!(run(100_000, &[demand(None)]), vec![None], "paused");
        assert_eq!(run(400_000, &[demand(None)]), vec![sp(0)]);
        assert_eq!(run(700_000, &[demand(None)]), vec![sp(1)]);
        assert_eq!(run(5_000_000, &[demand(None)]), vec![sp(2)]);
    }

    #[test]
    fn upgrades_need_a_margin_that_keeping_a_layer_does_not() {
        // 520 kbit/s keeps layer 1 but does not reach it from layer 0.
        assert_eq!(run(520_000, &[demand(sp(1))]), vec![sp(1)]);
        assert_eq!(run(520_000, &[demand(sp(0))]), vec![sp(0)]);
        assert_eq!(run(580_000, &[demand(sp(0))]), vec![sp(1)]);
        // A little below the layer's own bitrate it stays; well below it goes down.
        assert_eq!(run(480_000, &[demand(sp(1))]), vec![sp(1)]);
        assert_eq!(run(350_000, &[demand(sp(1))]), vec![sp(0)]);
    }

    #[test]
    fn the_lowest_layer_is_kept_through_a_dip_and_paused_when_the_link_collapsed() {
        // 150 kbit/s: 120 kbit/s neither resumes a paused consumer nor pauses one that
        // forwards video; 70 kbit/s pauses it.
        assert_eq!(run(120_000, &[demand(None)]), vec![None]);
        assert_eq!(run(120_000, &[demand(Some(0))]), vec![Some(0)]);
        assert_eq!(run(120_000, &[demand(Some(2))]), vec![Some(0)]);
        assert_eq!(run(70_000, &[demand(Some(0))]), vec![None]);
    }

    #[test]
    fn shared_by_priority_then_in_order() {
        let low = demand(None);
        let high = Demand {
            priority: 3,
            ..demand(None)
        };
        // 2 Mbit/s: the high-priority consumer climbs to the top first.
        assert_eq!(run(2_000_000, &[low, high]), vec![sp(0), sp(2)]);
        // Equal priorities share evenly.
        assert_eq!(run(1_400_000, &[low, low]), vec![sp(1), sp(1)]);
        // Too little for both: the first in priority order keeps its lowest layer.
        assert_eq!(run(200_000, &[low, high]), vec![None, sp(0)]);
    }

    #[test]
    fn unavailable_layers_are_skipped() {
        let mut d = demand(None);
        d.layers[sp(1).unwrap_or_default()] = 0;
        assert_eq!(run(1_000_000, &[d]), vec![sp(0)]);
        assert_eq!(run(2_000_000, &[d]), vec![sp(2)]);
        assert!(d.wanted().abs_diff(1_620_000) <= 1, "{}", d.wanted());
    }

    /// Step bitrates of two streams of three temporal layers: stream 0 at `lowest`, stream
    /// 1 at 400 / 550 / 700 kbit/s (each step including the layers below it).
    fn two_streams_of_three_temporal_layers(lowest: [u64; 3]) -> [u64; MAX_LAYERS] {
        let mut layers = [0; MAX_LAYERS];
        for (spatial, rates) in [lowest, [400_000, 550_000, 700_000]]
            .into_iter()
            .enumerate()
        {
            for (temporal, rate) in rates.into_iter().enumerate() {
                let layer = Layer {
                    spatial: spatial as u8,
                    temporal: temporal as u8,
                };
                layers[layer.step()] = rate;
            }
        }
        layers
    }

    #[test]
    fn temporal_steps_come_between_spatial_layers_from_half_the_frame_rate() {
        // Two streams of three temporal layers; each step includes the layers below it.
        let layers = two_streams_of_three_temporal_layers([100_000, 150_000, 200_000]);
        let d = |current: Option<Layer>| Demand {
            priority: 1,
            layers,
            current: current.map(Layer::step),
        };
        let at = |spatial, temporal| Some(Layer { spatial, temporal }.step());
        assert_eq!(run(100_000, &[d(None)]), vec![None]);
        assert_eq!(run(120_000, &[d(None)]), vec![at(0, 0)]);
        assert_eq!(run(170_000, &[d(None)]), vec![at(0, 1)]);
        assert_eq!(run(300_000, &[d(None)]), vec![at(0, 2)]);
        // Stream 1 at a quarter of the frame rate fits, but it is entered at half the rate.
        assert_eq!(run(500_000, &[d(None)]), vec![at(0, 2)]);
        assert_eq!(run(620_000, &[d(None)]), vec![at(1, 1)]);
        assert_eq!(run(800_000, &[d(None)]), vec![at(1, 2)]);
        // Kept at three quarters of its cost, dropped one temporal step below that.
        let top = Layer {
            spatial: 1,
            temporal: 2,
        };
        assert_eq!(run(530_000, &[d(Some(top))]), vec![at(1, 2)]);
        assert_eq!(run(500_000, &[d(Some(top))]), vec![at(1, 1)]);
        assert_eq!(Layer::from_step(at(1, 2).unwrap_or_default()), top);
    }

    #[test]
    fn no_switch_up_to_a_layer_whose_keyframe_holds_the_link_too_long() {
        // Keyframes of 8, 24 and 64 KB; at 600 kbit/s 0.4 s carries 30 KB.
        let keyframes = {
            let mut k = [0; MAX_SPATIAL_LAYERS];
            k[..3].copy_from_slice(&[64_000, 192_000, 512_000]);
            k
        };
        let mut fresh = demand(None);
        fresh.limit_to_keyframes_that_fit(&keyframes, 600_000);
        assert_eq!(
            run(5_000_000, &[fresh]),
            vec![sp(1)],
            "starts below the top"
        );
        let mut low = demand(sp(0));
        low.limit_to_keyframes_that_fit(&keyframes, 400_000);
        assert_eq!(
            run(5_000_000, &[low]),
            vec![sp(0)],
            "24 KB needs 480 kbit/s"
        );
        // What it forwards now stays, and the estimate that carries a keyframe lets it up.
        let mut top = demand(sp(2));
        top.limit_to_keyframes_that_fit(&keyframes, 600_000);
        assert_eq!(run(5_000_000, &[top]), vec![sp(2)]);
        let mut fast = demand(sp(0));
        fast.limit_to_keyframes_that_fit(&keyframes, 1_300_000);
        assert_eq!(run(5_000_000, &[fast]), vec![sp(2)]);
        // No keyframe seen yet: nothing to hold it back.
        let mut unknown = demand(None);
        unknown.limit_to_keyframes_that_fit(&[0; MAX_SPATIAL_LAYERS], 100_000);
        assert_eq!(run(5_000_000, &[unknown]), vec![sp(2)]);
    }

    #[test]
    fn a_bigger_picture_at_a_lower_frame_rate_only_while_that_rate_is_smooth() {
        // Two streams of three temporal layers at 150 / 300 / 450 and 400 / 550 / 700
        // kbit/s; 600 kbit/s fits stream 1 at half the frame rate.
        let layers = two_streams_of_three_temporal_layers([150_000, 300_000, 450_000]);
        let at = |spatial, temporal| Some(Layer { spatial, temporal }.step());
        // Pictures per second of each step, from a camera sending `fps`.
        let rates = |fps: f64| {
            let mut r = [0.0; MAX_LAYERS];
            for spatial in 0..2u8 {
                for (temporal, share) in [0.25, 0.5, 1.0].into_iter().enumerate() {
                    let step = Layer {
                        spatial,
                        temporal: temporal as u8,
                    }
                    .step();
                    r[step] = fps * share;
                }
            }
            r
        };
        let limited = |current: Option<usize>, fps: f64| {
            let mut d = Demand {
                priority: 1,
                layers,
                current,
            };
            d.limit_to_smooth_frame_rates(&rates(fps));
            d
        };
        assert_eq!(
            run(600_000, &[limited(None, 30.0)]),
            vec![at(1, 1)],
            "15 fps"
        );
        assert_eq!(
            run(600_000, &[limited(None, 20.0)]),
            vec![at(0, 2)],
            "10 fps"
        );
        // Kept down to 10 pictures a second; the lowest stream's steps always count.
        assert_eq!(run(600_000, &[limited(at(1, 1), 22.0)]), vec![at(1, 1)]);
        assert_eq!(run(600_000, &[limited(None, 22.0)]), vec![at(0, 2)]);
        assert_eq!(
            run(200_000, &[limited(None, 20.0)]),
            vec![at(0, 0)],
            "5 fps"
        );
        // A stream's highest temporal layer counts whatever its rate.
        assert_eq!(run(800_000, &[limited(None, 8.0)]), vec![at(1, 2)]);
    }

    #[test]
    fn steps_between_layers() {
        assert_eq!(Step::between(None, Some(0)), Step::Up, "resumed");
        assert_eq!(Step::between(Some(0), Some(2)), Step::Up);
        assert_eq!(Step::between(Some(2), Some(1)), Step::Down);
        assert_eq!(Step::between(Some(1), None), Step::Down, "paused");
        assert_eq!(Step::between(Some(1), Some(1)), Step::Same);
        assert_eq!(Step::between(None, None), Step::Same);
    }

    #[test]
    fn upgrades_that_do_not_last_hold_the_next_back_longer_each_time() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut h = UpgradeHold::default();
        h.on_change(at(0), Some(0), Some(1));
        h.on_change(at(300), Some(1), Some(0));
        assert!(h.holds(at(2_000)));
        assert!(!h.holds(at(2_300)), "2 s after the first");
        h.on_change(at(2_300), Some(0), Some(1));
        h.on_change(at(2_600), Some(1), Some(0));
        assert!(h.holds(at(6_500)));
        assert!(!h.holds(at(6_600)), "4 s after the second");
        // One that lasts resets the count.
        h.on_change(at(7_000), Some(0), Some(1));
        assert!(!h.holds(at(11_000)));
        h.on_change(at(20_000), Some(1), Some(0));
        assert!(
            !h.holds(at(20_001)),
            "a downgrade long after the upgrade holds nothing"
        );
        h.on_change(at(21_000), None, Some(0));
        h.on_change(at(21_500), Some(0), None);
        assert!(h.holds(at(23_000)), "a resume taken back counts too");
    }
}
