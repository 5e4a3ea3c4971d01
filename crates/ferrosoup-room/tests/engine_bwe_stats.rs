//! What bandwidth estimation shows (issue 10, "Visible state"), on the simulated simulcast
//! call of `engine_bwe.rs`: the worker's bandwidth gauges and counters agree with the
//! transport's `bandwidthEstimation`, `getConsumerStats` and the router's bandwidth stats
//! tell the layer the allocation gives (limited on a narrow link, the top one on a wide
//! link, paused when not even the lowest fits), and a closed transport takes its share of
//! the gauges away.

mod common;

use std::time::Duration;

use common::simulcast::SimulcastCall;
use ferrosoup_room::WorkerCounters;
use ferrosoup_room::stats::BandwidthGauges;
use ferrosoup_room::transmit::Discard;
use ferrosoup_testkit::LinkConfig;
use serde_json::Value;

const LAYERS: [u64; 3] = [200_000, 700_000, 2_000_000];

fn link() -> LinkConfig {
    LinkConfig::default().with_delay(Duration::from_millis(20))
}

/// The worker's counters, bob's `bandwidthEstimation`, his video consumer's
/// `outbound-rtp` stats and the router's bandwidth stats.
fn observe(call: &mut SimulcastCall) -> (WorkerCounters, Value, Value, Value) {
    let router = call.room.router;
    let (transport, consumer) = (call.bob.transport, call.video_consumer);
    let engine = call.room.engine();
    let counters = *engine.counters();
    let transport = engine
        .transport_stats(
            router,
            transport,
            &ferrosoup_room::transmit::Collect::default(),
        )
        .expect("bob's transport");
    let consumer = engine
        .consumer_stats(router, consumer)
        .expect("bob's video consumer");
    let bandwidth = engine.bandwidth_stats(router).expect("the router");
    (
        counters,
        transport[0]["bandwidthEstimation"].clone(),
        consumer[0].clone(),
        bandwidth,
    )
}

/// Checks that the gauges are bob's transport's figures (the only one that estimates) and
/// that the router's bandwidth stats show the same; returns bob's entry there.
fn assert_consistent(
    counters: &WorkerCounters,
    bwe: &Value,
    bandwidth: &Value,
    bob: &str,
) -> Value {
    let g = counters.bwe;
    assert_eq!(g.transports, 1, "{g:?}");
    assert_eq!(
        Some(g.estimate_bps),
        bwe["estimate"].as_u64(),
        "{g:?} {bwe}"
    );
    assert_eq!(
        Some(g.allocated_bps),
        bwe["allocated"].as_u64(),
        "{g:?} {bwe}"
    );
    assert_eq!(Some(g.desired_bps), bwe["desired"].as_u64(), "{g:?} {bwe}");
    assert!(g.allocated_bps <= g.estimate_bps, "{g:?}");
    let entries = bandwidth.as_array().expect("an array");
    assert_eq!(
        entries.len(),
        1,
        "only bob's transport estimates: {bandwidth}"
    );
    let entry = entries[0].clone();
    assert_eq!(entry["transportId"], bob, "{entry}");
    assert_eq!(&entry["bandwidthEstimation"], bwe, "{entry}");
    assert_eq!(
        entry["availableOutgoingBitrate"], bwe["estimate"],
        "{entry}"
    );
    assert_eq!(
        entry["consumers"].as_array().map(Vec::len),
        Some(2),
        "audio and video: {entry}"
    );
    entry
}

/// Bob's video consumer in the router's bandwidth stats.
fn video_entry(entry: &Value) -> Value {
    entry["consumers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["kind"] == "video"))
        .cloned()
        .unwrap_or_else(|| panic!("no video consumer in {entry}"))
}

#[test]
fn gauges_and_stats_show_the_estimate_and_the_layer_each_consumer_gets() {
    let mut call = SimulcastCall::new(LAYERS, 600_000, link());
    let bob = call.bob.transport.to_string();

    // 600 kbit/s: layer 0 (of 0..2) fits, the consumer is held below its preferred layer
    // and the estimator probes for more.
    call.run_for(Duration::from_secs(20));
    let (counters, bwe, consumer, bandwidth) = observe(&mut call);
    let entry = assert_consistent(&counters, &bwe, &bandwidth, &bob);
    let estimate = counters.bwe.estimate_bps;
    assert!(
        (300_000..=900_000).contains(&estimate),
        "estimate near the 600 kbit/s link: {bwe}"
    );
    assert_eq!(consumer["allocation"], "layer", "{consumer}");
    assert_eq!(consumer["allocatedSpatialLayer"], 0, "{consumer}");
    let video = video_entry(&entry);
    assert_eq!(video["allocation"], "layer", "{video}");
    assert_eq!(video["allocatedSpatialLayer"], 0, "{video}");
    assert_eq!(video["consumerId"], call.video_consumer.to_string());
    let g = counters.bwe;
    assert_eq!((g.consumers_limited, g.consumers_paused), (1, 0), "{g:?}");
    assert!(
        counters.padding_packets > 0 && counters.padding_bytes >= counters.padding_packets,
        "probes while held below the preferred layer: {counters:?}"
    );

    // 5 Mbit/s: the top layer fits; nothing is held back.
    call.set_downlink(5_000_000, link());
    call.run_for(Duration::from_secs(30));
    let (counters, bwe, consumer, bandwidth) = observe(&mut call);
    assert_consistent(&counters, &bwe, &bandwidth, &bob);
    assert_eq!(consumer["allocatedSpatialLayer"], 2, "{consumer}");
    let g = counters.bwe;
    assert_eq!((g.consumers_limited, g.consumers_paused), (0, 0), "{g:?}");
    assert!(g.estimate_bps > estimate, "{g:?}");
    assert!(
        counters.bwe_layer_upgrades >= 2,
        "resumed, then raised: {counters:?}"
    );
    let downgrades = counters.bwe_layer_downgrades;

    // 100 kbit/s: audio only; the video consumer is paused for bandwidth.
    call.set_downlink(100_000, link());
    call.run_for(Duration::from_secs(10));
    let (counters, bwe, consumer, bandwidth) = observe(&mut call);
    let entry = assert_consistent(&counters, &bwe, &bandwidth, &bob);
    assert_eq!(consumer["allocation"], "paused", "{consumer}");
    assert_eq!(consumer["allocatedSpatialLayer"], Value::Null, "{consumer}");
    assert_eq!(video_entry(&entry)["allocation"], "paused", "{entry}");
    let g = counters.bwe;
    assert_eq!((g.consumers_limited, g.consumers_paused), (0, 1), "{g:?}");
    assert!(counters.bwe_layer_downgrades > downgrades, "{counters:?}");

    // Bob's transport closes: its share of the gauges goes with it.
    let router = call.room.router;
    let now = call.room.now();
    call.room
        .engine()
        .close_transport(router, call.bob.transport, now, &mut Discard::default())
        .expect("bob's transport closes");
    assert_eq!(
        call.room.engine().counters().bwe,
        BandwidthGauges::default()
    );
    assert_eq!(
        call.room
            .engine()
            .bandwidth_stats(router)
            .expect("the router"),
        Value::Array(Vec::new())
    );
}
