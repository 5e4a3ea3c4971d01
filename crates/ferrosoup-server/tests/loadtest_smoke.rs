//! The load tester's smoke runs (CI): the real `ferrosoup` binary on loopback, tiny
//! scenarios of `ferrosoup-loadtest`, media must flow; with `--churn`, the server must be
//! left with the objects it had before the churn; with `--downlink-kbps`, subscribers
//! behind the capped link must end on a lower layer than the others. Asserts only that
//! packets arrive intact, what the server holds and what it chose, never how fast.

mod common;

use clap::Parser;
use common::run_scenario;
use ferrosoup_loadtest::Config;
use tokio::sync::Mutex;

/// One scenario at a time: each one loads the machine's cores with a server, its
/// publishers and its subscribers, and a starved core reads as a congested link to the
/// server's estimator (on one core, three at once queued packets for 300 ms).
static ONE_SCENARIO_AT_A_TIME: Mutex<()> = Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_media_flows_through_the_real_server() {
    let _alone = ONE_SCENARIO_AT_A_TIME.lock().await;
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
    let report = run_scenario(cfg).await;
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
    let _alone = ONE_SCENARIO_AT_A_TIME.lock().await;
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
    let report = run_scenario(cfg).await;
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
    // peer, or a table kept at its peak size, would show. RSS comes back to within 5 % plus
    // the allocator's bookkeeping for the peak (about 1 MiB: extent descriptors and its
    // radix tree, never unmapped), which at this small scale is more than 5 % of it; with
    // glibc's malloc, or jemalloc told to keep freed pages, it stayed near the peak.
    assert!(churn.warmup_peers > 0, "no warm-up peer");
    let heap = churn.heap_bytes.expect("server heap reported");
    let rss = churn.rss_bytes.expect("server RSS sampled");
    println!("heap {heap:?}\nRSS {rss:?}");
    assert!(heap.peak > heap.baseline + (1 << 20), "{heap:?}");
    assert!(heap.back_to_baseline(), "heap in use not back: {heap:?}");
    let kept = rss.end.saturating_sub(rss.baseline);
    assert!(
        kept <= rss.baseline / 20 + (1 << 20),
        "RSS kept {kept} bytes of its peak's growth: {rss:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_capped_subscribers_end_on_a_lower_layer() {
    let _alone = ONE_SCENARIO_AT_A_TIME.lock().await;
    let server = common::TestServer::start(1).await;
    let url = server.ws_url();
    let pid = server.pid().to_string();
    // Simulcast of 100 / 250 / 650 kbit/s plus Opus. Two subscribers behind a 250 kbit/s
    // link, where only the lowest layer and the audio fit; two uncapped, where the server's
    // estimate (starting at 300 kbit/s) must find room for the top layer. The settle time
    // lets the estimation and the layer switches happen before the window (about 3 s
    // alone on an idle machine).
    let cfg = Config::try_parse_from([
        "ferrosoup-loadtest",
        "--url",
        &url,
        "--publishers",
        "1",
        "--subscribers",
        "4",
        "--video-kbps",
        "1000",
        "--simulcast",
        "--downlink-kbps",
        "250",
        "--capped-subscribers",
        "2",
        "--settle",
        "12",
        "--duration",
        "3",
        "--server-pid",
        &pid,
        "--quiet",
    ])
    .expect("arguments parse");
    let report = run_scenario(cfg).await;
    println!(
        "{}",
        serde_json::to_string(&report.subscriber_results).expect("serializes")
    );
    assert_eq!(report.peers_failed, 0);
    assert_eq!(report.srtp_failures, 0);
    assert_eq!(report.payload_errors, 0);
    // The subscribers estimated with the server.
    assert!(report.twcc);
    assert!(report.twcc_feedbacks_sent > 0);
    let capped = report.capped_subscribers.expect("capped subscribers");
    let uncapped = report.uncapped_subscribers.expect("uncapped subscribers");
    assert_eq!((capped.subscribers, uncapped.subscribers), (2, 2));
    assert_eq!(capped.downlink_kbps, Some(250));
    // Uncapped: both on the top layer at the end.
    assert_eq!(uncapped.video_end_layers, [0, 0, 2], "{uncapped:?}");
    // Capped: neither on the top layer, and what came through the link fits it: the
    // window's packets leave the link over at most the window plus its 300 ms queue, plus
    // one 3000-byte burst (250 × 3.3 / 3 + 8 = 283 kbit/s at most).
    assert_eq!(capped.video_end_layers[2], 0, "{capped:?}");
    assert!(
        capped.video_end_layers[0] + capped.video_end_layers[1] + capped.video_end_paused == 2,
        "{capped:?}"
    );
    let most = capped.received_kbps_max.expect("capped bitrate");
    assert!(most <= 283.0, "capped subscriber received {most} kbit/s");
    // Audio kept flowing to the capped subscribers.
    for s in report.subscriber_results.iter().filter(|s| s.capped) {
        assert!(s.received_kbps > 30.0, "{s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_spreads_rooms_over_several_servers() {
    let _alone = ONE_SCENARIO_AT_A_TIME.lock().await;
    // Two independent servers; with `--spread rooms` each room, all its peers, lives on one.
    let (a, b) = (
        common::TestServer::start(1).await,
        common::TestServer::start(1).await,
    );
    let (url_a, url_b) = (a.ws_url(), b.ws_url());
    let cfg = Config::try_parse_from([
        "ferrosoup-loadtest",
        "--url",
        &url_a,
        "--url",
        &url_b,
        "--spread",
        "rooms",
        "--rooms",
        "2",
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
        "--quiet",
    ])
    .expect("arguments parse");
    let report = run_scenario(cfg).await;
    assert_eq!(report.peers_failed, 0);
    assert_eq!(report.peers_joined, 6);
    assert_eq!(report.consumers, 8);
    assert!(
        report.delivery_ratio > 0.5,
        "delivery ratio {}",
        report.delivery_ratio
    );
    assert_eq!(report.payload_errors, 0);
    assert_eq!(report.urls, [url_a, url_b]);
    // Each server forwarded its room's media: it received from its publisher and sent to
    // its subscribers.
    for server in [&a, &b] {
        assert!(server.counter("datagrams_in").await > 0);
        assert!(server.counter("datagrams_out").await > 0);
    }
}
