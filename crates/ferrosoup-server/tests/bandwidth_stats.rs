//! Bandwidth toward each client, as operators and clients see it (issue 10, "Visible
//! state"): a subscriber's receive transport estimates bandwidth (its video consumer
//! negotiated transport-cc), so `/api/stats` shows its `bandwidth` entry (the estimate and
//! what the allocation gives each consumer), `getConsumerStats` the consumer's allocation,
//! and `/stats` the bandwidth gauges and counters. This client (webrtc-rs) sends no
//! transport-cc feedback, so once the grace for the first feedback is over its consumers
//! are not limited ("unlimited") and no transport counts as estimating; the values with
//! feedback are checked on the simulated engine (ferrosoup-room `engine_bwe_stats.rs`) and
//! with a real browser (web-demo `tests/e2e.mjs`).

mod common;

use common::*;
use ferrosoup_client::{MediaKind, Peer, ProduceOptions};
use serde_json::{Value, json};

/// The peer `peer_id` in the `/api/stats` room `room`.
fn peer_of<'a>(stats: &'a Value, room: &str, peer_id: &str) -> Option<&'a Value> {
    stats["rooms"]
        .as_array()?
        .iter()
        .find(|r| r["roomId"] == room)?["peers"]
        .as_array()?
        .iter()
        .find(|p| p["peerId"] == peer_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_stats_and_metrics_show_bandwidth_toward_a_subscriber() {
    let server = TestServer::start(1).await;
    let url = server.ws_url();
    let a = Peer::join(&url, "bwe", "alice").await.expect("alice joins");
    let send = a.create_send_transport().await.expect("send transport");
    let video = send
        .produce(
            MediaKind::Video,
            ProduceOptions {
                codec: Some("video/VP8".into()),
                simulcast: 3,
                ..Default::default()
            },
        )
        .await
        .expect("produce vp8 simulcast");
    let b = Peer::join(&url, "bwe", "bob").await.expect("bob joins");
    let recv = b.create_recv_transport().await.expect("recv transport");
    let video_in = recv.consume(video.id()).await.expect("consume vp8");
    within("recv transport connects", 10, recv.wait_connected())
        .await
        .expect("recv transport connected");
    video_in.resume().await.expect("resume vp8");

    // No feedback comes: after the grace (2 s) the allocation stops steering.
    let (alice_id, bob_id) = (a.peer_id().to_owned(), b.peer_id().to_owned());
    let unlimited = eventually(10, async || {
        let stats = server.get("/api/stats").await.unwrap_or_default();
        peer_of(&stats, "bwe", &bob_id)
            .is_some_and(|p| p["bandwidth"][0]["consumers"][0]["allocation"] == "unlimited")
    })
    .await;
    let stats = server.get("/api/stats").await.expect("/api/stats answers");
    assert!(unlimited, "bob's video consumer never unlimited: {stats}");

    let bob = peer_of(&stats, "bwe", &bob_id).expect("bob in /api/stats");
    let entries = bob["bandwidth"]
        .as_array()
        .expect("bob's bandwidth entries");
    assert_eq!(entries.len(), 1, "one transport estimates: {bob}");
    let entry = &entries[0];
    assert_eq!(entry["transportId"], recv.id(), "{entry}");
    let bwe = &entry["bandwidthEstimation"];
    assert!(bwe["estimate"].as_u64().is_some_and(|e| e > 0), "{entry}");
    assert_eq!(
        entry["availableOutgoingBitrate"], bwe["estimate"],
        "{entry}"
    );
    assert_eq!(bwe["feedbacks"], 0, "{entry}");
    for field in ["allocated", "desired", "probes"] {
        assert!(bwe[field].is_u64(), "{field}: {entry}");
    }
    let consumer = &entry["consumers"][0];
    assert_eq!(consumer["consumerId"], video_in.id(), "{entry}");
    assert_eq!(consumer["producerId"], video.id(), "{entry}");
    assert_eq!(consumer["kind"], "video", "{entry}");
    assert_eq!(consumer["type"], "simulcast", "{entry}");
    assert_eq!(consumer["allocatedSpatialLayer"], Value::Null, "{entry}");
    let alice = peer_of(&stats, "bwe", &alice_id).expect("alice in /api/stats");
    assert_eq!(
        alice["bandwidth"],
        json!([]),
        "a send transport does not estimate"
    );
    // /api/rooms keeps its shape.
    let rooms = server.get("/api/rooms").await.expect("/api/rooms answers");
    assert!(
        rooms["rooms"][0]["peers"][0].get("bandwidth").is_none(),
        "{rooms}"
    );

    // getConsumerStats: the allocation next to the preferred layers.
    let consumer_stats = b
        .signaling()
        .request("getConsumerStats", json!({"consumerId": video_in.id()}))
        .await
        .expect("getConsumerStats");
    let outbound = &consumer_stats["stats"][0];
    assert_eq!(outbound["type"], "outbound-rtp", "{consumer_stats}");
    assert_eq!(outbound["allocation"], "unlimited", "{consumer_stats}");
    assert_eq!(
        outbound["allocatedSpatialLayer"],
        Value::Null,
        "{consumer_stats}"
    );

    // The worker's gauges and counters, in /api/stats and /stats.
    let worker = &stats["workers"][0];
    for name in [
        "bwe_transports",
        "bwe_estimate_bps",
        "bwe_allocated_bps",
        "bwe_desired_bps",
        "bwe_consumers_paused",
        "bwe_consumers_limited",
    ] {
        assert_eq!(
            worker[name], 0,
            "{name}: without feedback, nothing is steered: {worker}"
        );
    }
    for name in [
        "bwe_layer_upgrades",
        "bwe_layer_downgrades",
        "padding_bytes",
    ] {
        assert!(worker[name].is_u64(), "{name}: {worker}");
    }
    let metrics = server.get_text("/stats").await.expect("/stats answers");
    for line in [
        "ferrosoup_bwe_transports{worker=\"0\"} 0",
        "ferrosoup_bwe_estimate_bps{worker=\"0\"} 0",
        "ferrosoup_bwe_allocated_bps{worker=\"0\"} 0",
        "ferrosoup_bwe_desired_bps{worker=\"0\"} 0",
        "ferrosoup_bwe_consumers_paused{worker=\"0\"} 0",
        "ferrosoup_bwe_consumers_limited{worker=\"0\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }
    for series in [
        "ferrosoup_bwe_layer_upgrades_total{worker=\"0\"}",
        "ferrosoup_bwe_layer_downgrades_total{worker=\"0\"}",
        "ferrosoup_padding_bytes_total{worker=\"0\"}",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(series)),
            "no {series} in:\n{metrics}"
        );
    }

    for peer in [a, b] {
        within("leave", 10, peer.leave()).await.expect("leave");
    }
    server.wait_all_objects_gone().await;
}
