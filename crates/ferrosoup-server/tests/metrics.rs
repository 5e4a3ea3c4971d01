//! `/metrics` after media flowed through the real binary (a small load-tester room: one
//! publisher, two subscribers that send RTCP receiver reports): the join-time histogram
//! counted the joins, the receivers' RTT, jitter and loss and the forwarding delay have
//! observations, the worker threads have CPU time, and one registry serves every scrape.
//! Asserts counts and relations, never how fast anything was.

mod common;

use clap::Parser;
use ferrosoup_loadtest::Config;

/// Sum of a metric's samples over all its label sets (0 when absent).
fn total(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// A histogram's `le="+Inf"` buckets summed: must equal its `_count`.
fn inf_buckets(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket")) && l.contains("le=\"+Inf\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_and_worker_cpu_fill_when_media_flows() {
    let server = common::TestServer::start(2).await;
    let before = server.get_text("/metrics").await.expect("/metrics answers");
    assert_eq!(total(&before, "ferrosoup_join_duration_seconds_count"), 0.0);
    for name in [
        "ferrosoup_rtt_seconds_count",
        "ferrosoup_jitter_seconds_count",
        "ferrosoup_loss_ratio_count",
        "ferrosoup_forwarding_delay_seconds_count",
    ] {
        assert!(before.contains(name), "no {name} before media:\n{before}");
        assert_eq!(total(&before, name), 0.0, "{name}");
    }

    let url = server.ws_url();
    let cfg = Config::try_parse_from([
        "ferrosoup-loadtest",
        "--url",
        &url,
        "--rooms",
        "1",
        "--publishers",
        "1",
        "--subscribers",
        "2",
        "--video-kbps",
        "200",
        // Long enough for a few RTCP report rounds each way (one a second).
        "--duration",
        "3",
        "--settle",
        "0.5",
        "--quiet",
    ])
    .expect("arguments parse");
    let report = common::run_scenario(cfg).await;
    assert_eq!(report.peers_joined, 3);

    let m = server.get_text("/metrics").await.expect("/metrics answers");
    let joins = total(&m, "ferrosoup_join_duration_seconds_count");
    assert_eq!(joins, 3.0, "one observation per successful joinRoom");
    let ok_joins = m
        .lines()
        .find(|l| {
            l.starts_with("ferrosoup_signaling_requests_total{method=\"joinRoom\",code=\"200\"}")
        })
        .and_then(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok());
    assert_eq!(ok_joins, Some(joins));
    assert!(total(&m, "ferrosoup_join_duration_seconds_sum") > 0.0);

    // Join → connected: one observation per transport that connected (every one of them
    // carried media here), each longer than its peer's join answer alone.
    assert_eq!(
        total(&before, "ferrosoup_join_connected_duration_seconds_count"),
        0.0
    );
    let connected = total(&m, "ferrosoup_join_connected_duration_seconds_count");
    let transports = m
        .lines()
        .find(|l| {
            l.starts_with(
                "ferrosoup_signaling_requests_total{method=\"createTransport\",code=\"200\"}",
            )
        })
        .and_then(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok());
    assert!(connected >= 3.0, "{connected} transports connected\n{m}");
    assert_eq!(Some(connected), transports, "one per transport");
    assert_eq!(
        inf_buckets(&m, "ferrosoup_join_connected_duration_seconds"),
        connected
    );
    let mean = |name: &str| total(&m, &format!("{name}_sum")) / total(&m, &format!("{name}_count"));
    assert!(
        mean("ferrosoup_join_connected_duration_seconds") > mean("ferrosoup_join_duration_seconds")
    );

    // Two subscribers, each reporting on the streams it consumes about once a second.
    for name in [
        "ferrosoup_rtt_seconds",
        "ferrosoup_jitter_seconds",
        "ferrosoup_loss_ratio",
    ] {
        let count = total(&m, &format!("{name}_count"));
        assert!(count >= 2.0, "{name}: {count} observations\n{m}");
        assert_eq!(inf_buckets(&m, name), count, "{name}: +Inf bucket = count");
    }
    let rtt = total(&m, "ferrosoup_rtt_seconds_sum") / total(&m, "ferrosoup_rtt_seconds_count");
    assert!(rtt > 0.0 && rtt < 2.0, "mean RTT on loopback: {rtt} s");
    let loss = total(&m, "ferrosoup_loss_ratio_sum");
    assert!((0.0..=total(&m, "ferrosoup_loss_ratio_count")).contains(&loss));

    // Every forwarded packet has one forwarding-delay observation.
    let forwarded = total(&m, "ferrosoup_rtp_packets_out_total");
    let delays = total(&m, "ferrosoup_forwarding_delay_seconds_count");
    assert!(forwarded > 100.0, "{forwarded} packets forwarded");
    assert_eq!(delays, forwarded);

    let cpu = total(&m, "ferrosoup_worker_cpu_seconds_total");
    assert!(cpu > 0.0, "worker CPU seconds: {cpu}\n{m}");
    assert_eq!(
        m.lines()
            .filter(|l| l.starts_with("ferrosoup_worker_cpu_seconds_total{"))
            .count(),
        2,
        "one series per worker"
    );

    // The same registry answers again, counters only grown.
    let again = server.get_text("/metrics").await.expect("/metrics answers");
    assert!(total(&again, "ferrosoup_worker_cpu_seconds_total") >= cpu);
    assert_eq!(
        total(&again, "ferrosoup_join_duration_seconds_count"),
        joins
    );
}
