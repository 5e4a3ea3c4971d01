//! A client's own layer choice is not a failed upgrade: on a link that carries every
//! layer, a subscriber that picks the top layer, then the lowest, then the top again (the
//! web demo's High, Low, Auto within a few seconds) gets the top layer back at once. Only
//! an upgrade the link could not carry holds the next one back (allocator.rs
//! `UpgradeHold`).

mod common;

use std::time::Duration;

use common::simulcast::SimulcastCall;
use ferrosoup_testkit::LinkConfig;
use serde_json::Value;

const LAYERS: [u64; 3] = [200_000, 700_000, 2_000_000];

/// The layer the allocation gives bob's video consumer (`getConsumerStats`).
fn allocated(call: &mut SimulcastCall) -> Value {
    let (router, consumer) = (call.room.router, call.video_consumer);
    let stats = call
        .room
        .engine()
        .consumer_stats(router, consumer)
        .expect("bob's video consumer");
    stats[0]["allocatedSpatialLayer"].clone()
}

#[test]
fn lowering_and_raising_the_preferred_layer_holds_nothing_back() {
    let link = LinkConfig::default().with_delay(Duration::from_millis(20));
    let mut call = SimulcastCall::new(LAYERS, 10_000_000, link);
    call.run_for(Duration::from_secs(20));
    assert_eq!(allocated(&mut call), 2, "the top layer fits");
    let consumer = call.video_consumer;
    for _ in 0..3 {
        call.room.set_preferred_layers(consumer, 0, None);
        call.run_for(Duration::from_millis(500));
        assert_eq!(
            allocated(&mut call),
            0,
            "the preferred layer caps the allocation"
        );
        call.room.set_preferred_layers(consumer, 2, None);
        assert_eq!(allocated(&mut call), 2, "the top layer comes back at once");
        call.run_for(Duration::from_millis(500));
        assert_eq!(allocated(&mut call), 2, "and stays");
    }
}
