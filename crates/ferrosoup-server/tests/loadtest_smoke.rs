//! The load tester's smoke run (CI): the real `ferrosoup` binary on loopback, a tiny
//! scenario of `ferrosoup-loadtest`, media must flow. Asserts only that packets arrive
//! intact, never how fast.

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
