//! The load tester's smoke runs (CI): the real `ferrosoup` binary on loopback, tiny
//! scenarios of `ferrosoup-loadtest`, media must flow; with `--churn`, the server must be
//! left with the objects it had before the churn. Asserts only that packets arrive intact
//! and what the server holds, never how fast.

mod common;

use clap::Parser;
use ferrosoup_loadtest::{Config, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_media_flows_through_the_real_server() {
    let server = common::TestServer::start(1).await;
    let url = server.ws_url();
    let pid = server.pid().to_string();
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
        "64",
        "--duration",
        "1",
        "--settle",
        "0.5",
        "--verify-every",
        "1",
        "--server-pid",
        &pid,
        "--quiet",
    ])
    .expect("arguments parse");
    // The load tester runs its own event loops and blocks: keep it off the test's runtime.
    let report = tokio::task::spawn_blocking(move || run(&cfg))
        .await
        .expect("load tester thread")
        .expect("the scenario runs");
    println!("{}", report.table());
    assert_eq!(report.peers_failed, 0);
    assert_eq!(report.peers_joined, 3);
    assert_eq!(report.consumers, 4);
    assert!(
        report.delivery_ratio > 0.5,
        "delivery ratio {}",
        report.delivery_ratio
    );
    assert_eq!(report.srtp_failures, 0);
    assert!(report.srtp_verified > 0);
    assert!(report.payloads_checked > 0);
    assert_eq!(report.payload_errors, 0);
    assert!(report.latency_p50_ms.is_some());
    assert!(report.join_ms_p50.is_some());
    assert!(report.keyframes_sent > 0);
    assert!(report.server_rss_bytes.is_some_and(|b| b > 0));
    assert_eq!(report.server_workers, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_churn_leaves_the_server_as_it_found_it() {
    // A short grace period, so peers that vanish without a word are gone soon; the admin
    // key makes the load tester authenticate to /api/stats.
    let server =
        common::TestServer::start_with(1, &[("SESSION_GRACE", "1"), ("ADMIN_KEY", "churn-key")])
            .await;
    let url = server.ws_url();
    let pid = server.pid().to_string();
    let cfg = Config::try_parse_from([
        "ferrosoup-loadtest",
        "--url",
        &url,
        "--rooms",
        "2",
        "--publishers",
        "1",
        "--subscribers",
        "2",
        "--video-kbps",
        "64",
        "--duration",
        "10",
        "--settle",
        "0.5",
        "--churn",
        "2",
        "--churn-lifetime",
        "1.5",
        "--churn-drop",
        "0.5",
        "--churn-settle",
        "30",
        "--churn-warmup",
        "1.5",
        "--churn-rest",
        "3",
        "--admin-key",
        "churn-key",
        "--server-pid",
        &pid,
        "--quiet",
    ])
    .expect("arguments parse");
    let report = tokio::task::spawn_blocking(move || run(&cfg))
        .await
        .expect("load tester thread")
        .expect("the scenario runs");
    println!("{}", report.table());
    // The steady peers' media went through, intact, while peers came and went.
    assert_eq!(report.peers_failed, 0);
    assert_eq!(report.consumers, 8);
    assert!(
        report.delivery_ratio > 0.5,
        "delivery ratio {}",
        report.delivery_ratio
    );
    assert_eq!(report.srtp_failures, 0);
    assert_eq!(report.payload_errors, 0);
    let churn = report.churn.expect("a churn report");
    let t = churn.tally;
    // Every churn peer joined and left, both ways; subscribers consumed.
    assert_eq!(t.join_failures, 0, "{t:?}");
    assert_eq!(t.joined, t.started, "{t:?}");
    assert!(t.left > 0 && t.dropped > 0, "{t:?}");
    assert_eq!(t.left + t.dropped, t.joined, "{t:?}");
    assert!(t.consumers > 0, "{t:?}");
    // The server saw them, and let go of every object they had: back to the baseline
    // exactly, in the signaling layer and in the worker.
    let count = |name: &str| {
        churn
            .objects
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no count {name}"))
            .levels
    };
    assert_eq!(count("rooms").baseline, 2);
    assert_eq!(count("peers").baseline, 6);
    assert!(count("peers").peak > 6, "no churn peer seen");
    assert!(count("worker 0 consumers").peak > count("worker 0 consumers").baseline);
    for c in &churn.objects {
        assert_eq!(c.levels.end, c.levels.baseline, "{} not back", c.name);
    }
    // Memory: the heap in use comes back to the baseline (within 5 %): an object kept per
    // peer, or a table kept at its peak size, would show. RSS gives back most of what the
    // peak took (with glibc's malloc it stayed near the peak); at this small scale the
    // allocator's fixed bookkeeping (about 1 MiB) is more than 5 % of it.
    assert!(churn.warmup_peers > 0, "no warm-up peer");
    let heap = churn.heap_bytes.expect("server heap reported");
    let rss = churn.rss_bytes.expect("server RSS sampled");
    println!("heap {heap:?}\nRSS {rss:?}");
    assert!(heap.peak > heap.baseline + (1 << 20), "{heap:?}");
    assert!(heap.back_to_baseline(), "heap in use not back: {heap:?}");
    let kept = rss.end.saturating_sub(rss.baseline);
    assert!(
        kept <= rss.peak.saturating_sub(rss.baseline) / 2,
        "RSS kept {kept} bytes of its peak's growth: {rss:?}"
    );
}
