//! Temporal layers give the allocation steps between simulcast layers: a subscriber whose
//! link carries more than the lowest stream but not the whole middle one gets the middle
//! stream at a lower frame rate, instead of the lowest stream; the preferred temporal
//! layer caps what it gets.
//!
//! Run with `--nocapture` to see the trajectory.

mod common;

use std::time::Duration;

use common::simulcast::SimulcastCall;
use ferrosoup_testkit::LinkConfig;

/// Payload bitrates of the three streams; each is TID 0, 1, 2 in pictures of one size
/// (25 %, 25 %, 50 %), so the steps cost 50/100/200, 175/350/700, 500/1000/2000 kbit/s.
const LAYERS: [u64; 3] = [200_000, 700_000, 2_000_000];

fn link() -> LinkConfig {
    LinkConfig::default().with_delay(Duration::from_millis(20))
}

/// A (spatial, temporal) layer as sampled (`None`: nothing forwarded).
type Sampled = (Option<u8>, Option<u8>);

/// (spatial, temporal) forwarded in the samples of `from..to` s, with their counts.
fn layers_in(call: &SimulcastCall, from: u64, to: u64) -> Vec<(Sampled, usize)> {
    let mut seen: Vec<(Sampled, usize)> = Vec::new();
    for s in call.window(Duration::from_secs(from), Duration::from_secs(to)) {
        let layer = (s.layer, s.temporal);
        match seen.iter_mut().find(|(l, _)| *l == layer) {
            Some((_, n)) => *n += 1,
            None => seen.push((layer, 1)),
        }
    }
    seen
}

#[test]
fn a_link_between_two_streams_gets_the_upper_one_at_a_lower_frame_rate() {
    let mut call = SimulcastCall::l1t3(LAYERS, 550_000, link());
    call.run_for(Duration::from_secs(30));
    for s in call.samples.iter().step_by(20) {
        println!(
            "{:5.1}s estimate {:>8} queue {:>4} ms layer {:?}/{:?}",
            s.at.as_secs_f64(),
            s.estimate,
            s.queue_delay.as_millis(),
            s.layer,
            s.temporal,
        );
    }
    let steady = layers_in(&call, 15, 30);
    println!("steady: {steady:?}");
    let total: usize = steady.iter().map(|(_, n)| n).sum();
    let middle_reduced = steady
        .iter()
        .filter(|((s, t), _)| *s == Some(1) && t.is_some_and(|t| t < 2))
        .map(|(_, n)| n)
        .sum::<usize>();
    // Without temporal steps the best that fits is the lowest stream.
    assert!(
        middle_reduced * 10 >= total * 8,
        "stream 1 below its top temporal layer most of the time: {steady:?}"
    );
    assert!(
        steady.iter().all(|((s, _), _)| *s != Some(2)),
        "never the top stream: {steady:?}"
    );
    let (sent, lost) = call.downlink_losses();
    assert!(lost * 50 < sent, "{lost} of {sent} lost at the bottleneck");
}

#[test]
fn the_preferred_temporal_layer_caps_the_allocation() {
    let mut call = SimulcastCall::l1t3(LAYERS, 5_000_000, link());
    call.run_for(Duration::from_secs(6));
    assert_eq!(
        call.samples.last().map(|s| (s.layer, s.temporal)),
        Some((Some(2), Some(2)))
    );
    let consumer = call.video_consumer;
    call.room.set_preferred_layers(consumer, 2, Some(0));
    call.run_for(Duration::from_secs(2));
    assert_eq!(
        call.samples.last().map(|s| (s.layer, s.temporal)),
        Some((Some(2), Some(0)))
    );
    let (router, consumer) = (call.room.router, call.video_consumer);
    let stats = call
        .room
        .engine()
        .consumer_stats(router, consumer)
        .expect("bob's video consumer");
    assert_eq!(stats[0]["allocatedSpatialLayer"], 2);
    assert_eq!(stats[0]["allocatedTemporalLayer"], 0);
    assert_eq!(stats[0]["temporalLayer"], 0);
    // The cap follows the preferred spatial layer.
    call.room.set_preferred_layers(consumer, 1, Some(0));
    call.run_for(Duration::from_secs(2));
    assert_eq!(
        call.samples.last().map(|s| (s.layer, s.temporal)),
        Some((Some(1), Some(0)))
    );
}
