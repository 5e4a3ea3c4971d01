//! The `ferrosoup` binary: starts the worker pool and serves HTTP + WebSocket signaling.

mod access;
mod broadcasters;
mod cluster;
mod config;
mod config_file;
mod http;
mod ice_servers;
mod liveness;
mod memory;
mod metrics;
mod probe;
mod ws;

use std::net::SocketAddr;

use ferrosoup_room::WorkerPool;
use ferrosoup_signal::Hub;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let loaded = match config_file::load(std::env::args_os()) {
        Ok(loaded) => loaded,
        // `--help` and `--version` print and exit 0; a bad flag or environment value exits 1.
        Err(config_file::LoadError::Cli(e)) if !e.use_stderr() => e.exit(),
        Err(config_file::LoadError::Cli(e)) => {
            let _ = e.print();
            std::process::exit(1);
        }
        Err(config_file::LoadError::File(e)) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    if let Some(config::Command::Config { action }) = loaded.cli.command {
        return config_command(&loaded, action);
    }
    let cli = loaded.cli;
    let config = cli.config;
    init_logging(&config)?;
    if let Some(config::Command::Health { path }) = &cli.command {
        let addr = probe::local_addr(config.http_listen_ip(), config.port);
        let status = probe::check(addr, path).map_err(anyhow::Error::msg)?;
        println!("{status}");
        return Ok(());
    }
    if let Some(config::Command::Record {
        room,
        out,
        server,
        duration,
        rtp_ip,
    }) = &cli.command
    {
        let base = server.clone().unwrap_or_else(|| {
            format!(
                "http://{}",
                probe::local_addr(config.http_listen_ip(), config.port)
            )
        });
        let mut options = ferrosoup_record::RecordOptions::new(&base, room, out);
        options.admin_key = config.admin_key().map(str::to_owned);
        options.listen_ip = *rtp_ip;
        return record_command(options, *duration).await;
    }
    if let Some(config::Command::Token {
        room,
        peer,
        ttl,
        no_publish,
        no_subscribe,
        no_publish_data,
    }) = cli.command
    {
        let secret = config
            .auth_secret()
            .ok_or_else(|| anyhow::anyhow!("AUTH_SECRET is not set"))?;
        ferrosoup_signal::auth::check_secret(secret).map_err(anyhow::Error::msg)?;
        let scope = config.token_scope();
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            + ttl;
        let claims = ferrosoup_signal::Claims {
            sub: peer,
            room,
            can_publish: !no_publish,
            can_subscribe: !no_subscribe,
            can_publish_data: !no_publish_data,
            exp,
            nbf: None,
            aud: scope.audience,
            iss: scope.issuer,
        };
        println!(
            "{}",
            ferrosoup_signal::auth::mint(&claims, secret).map_err(|e| anyhow::anyhow!(e.reason))?
        );
        return Ok(());
    }
    config.validate().map_err(anyhow::Error::msg)?;
    let media_codecs = config.media_codecs().map_err(anyhow::Error::msg)?;
    let ice_servers = config.ice_servers().map_err(anyhow::Error::msg)?;
    let settings = config.worker_settings();
    let (pool, events) = WorkerPool::start(&settings)?;
    let signal_config = config.signal_config();
    let open = signal_config.auth_secret.is_none();
    let (hub, cluster) = match config.cluster_settings() {
        None => (Hub::new(pool, events, media_codecs, signal_config), None),
        Some(settings) => {
            let (cluster, cluster_events) = ferrosoup_cluster::RedisCluster::connect(settings)
                .await
                .map_err(|e| anyhow::anyhow!("joining the cluster (REDIS_URL): {e}"))?;
            let hub = Hub::with_cluster(
                pool,
                events,
                media_codecs,
                signal_config,
                cluster.clone(),
                cluster_events,
            );
            cluster.start_heartbeat(cluster::sampler(&hub, cluster.node_id().to_owned()));
            (hub, Some(cluster))
        }
    };
    let addr = SocketAddr::new(config.http_listen_ip(), config.port);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(
        "ferrosoup listening on http://{} (ws: /ws), {} workers on {} UDP + ICE-TCP {}..={}, candidates {:?}",
        listener.local_addr()?,
        settings.num_workers,
        settings.listen_ip,
        settings.rtc_min_port,
        settings.rtc_max_port,
        settings.candidate_ips()
    );
    tracing::info!(
        stun = ?ice_servers.stun_urls,
        turn = ?ice_servers.turn_urls,
        turn_auth = ?ice_servers.turn_auth,
        "ICE servers for clients (GET /api/ice-servers)"
    );
    if open {
        tracing::warn!("no AUTH_SECRET: running open (development mode), anyone may join any room");
    }
    let admin_key = config.admin_key();
    if admin_key.is_none() {
        tracing::warn!(
            "no ADMIN_KEY: /api/* (rooms, peers, closing rooms) is open to anyone who reaches this port"
        );
    }
    let liveness = liveness::Liveness::start(
        &hub,
        std::time::Duration::from_secs_f64(config.liveness_timeout),
    );
    let state = http::AppState {
        hub: hub.clone(),
        sessions: std::sync::Arc::new(ferrosoup_signal::ResumeRegistry::new()),
        origins: access::AllowedOrigins::new(&config.allowed_origins),
        per_ip: access::IpConnections::new(config.max_connections_per_ip),
        liveness,
        blocked: Default::default(),
        ice_servers: std::sync::Arc::new(ice_servers),
        metrics: std::sync::Arc::new(metrics::Metrics::new(hub.clone())?),
        cluster: cluster.clone(),
    };
    let debug = config.fault_injection.then(|| {
        tracing::warn!(
            "fault injection enabled: POST /api/debug/workers/{{index}}/panic, /block, /unblock"
        );
        http::fault_injection_routes(state.clone())
    });
    let broadcaster_routes = broadcasters::routes(
        broadcasters::BroadcasterState {
            hub: hub.clone(),
            broadcasters: Default::default(),
        },
        admin_key,
    );
    let app = http::public_routes(state.clone())
        .merge(http::api_routes(state, debug, admin_key))
        .merge(broadcaster_routes);
    let drain = std::time::Duration::from_secs(config.drain_seconds);
    // Signaling is request/answer of small messages: without TCP_NODELAY, a message written
    // in two segments waits for the peer's delayed ACK (40 ms on Linux).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown(hub, cluster, drain))
    .await?;
    tracing::info!("ferrosoup stopped");
    Ok(())
}

/// Logs to stderr, as text or one JSON object per line, through the configured filter.
fn init_logging(config: &config::Config) -> anyhow::Result<()> {
    let filter = config.log_filter().map_err(anyhow::Error::msg)?;
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match config.log_format {
        config::LogFormat::Text => logs.init(),
        config::LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    Ok(())
}

/// `ferrosoup config check` / `config print`: exit code 0, or 1 with the reason on stderr.
/// `ferrosoup record`: records until Ctrl-C or `duration` seconds, picking up the
/// producers that appear meanwhile every second, then prints each file.
async fn record_command(
    options: ferrosoup_record::RecordOptions,
    duration: Option<f64>,
) -> anyhow::Result<()> {
    let mut recording = ferrosoup_record::Recording::start(options).await?;
    let limit = async {
        match duration {
            Some(secs) => tokio::time::sleep(std::time::Duration::from_secs_f64(secs)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(limit);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut look = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut limit => break,
            _ = &mut ctrl_c => break,
            _ = look.tick() => {
                if let Err(e) = recording.record_new_producers().await {
                    tracing::warn!("looking for new producers: {e}");
                }
            }
        }
    }
    for file in recording.stop().await? {
        println!(
            "{}\t{}\t{} frames\t{:.2} s\tlost {} packets",
            file.path.display(),
            file.kind,
            file.frames,
            file.duration.as_secs_f64(),
            file.stats.lost_packets
        );
    }
    Ok(())
}

fn config_command(
    loaded: &config_file::Loaded,
    action: config::ConfigAction,
) -> anyhow::Result<()> {
    let config = &loaded.cli.config;
    let checked = config
        .validate()
        .and_then(|()| config.media_codecs().map(|_| ()));
    match action {
        config::ConfigAction::Check => match checked {
            Ok(()) => {
                let file = loaded
                    .file
                    .as_ref()
                    .map(|(path, keys)| {
                        format!(" ({} settings from {})", keys.len(), path.display())
                    })
                    .unwrap_or_default();
                println!("configuration OK{file}");
                Ok(())
            }
            Err(e) => {
                eprintln!("error: invalid configuration: {e}");
                std::process::exit(1);
            }
        },
        config::ConfigAction::Print => {
            print!(
                "{}",
                config_file::render(loaded).map_err(anyhow::Error::msg)?
            );
            if let Err(e) = checked {
                eprintln!("error: invalid configuration: {e}");
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// Waits for SIGTERM or Ctrl-C, then drains: no new peers (`/health` answers 503), and after
/// `drain` every room is closed with `roomClosed`; a node of a cluster then leaves it.
async fn shutdown(
    hub: std::sync::Arc<Hub>,
    cluster: Option<std::sync::Arc<ferrosoup_cluster::RedisCluster>>,
    drain: std::time::Duration,
) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!(?drain, "shutting down: draining");
    hub.start_draining();
    tokio::time::sleep(drain).await;
    hub.close_all_rooms("shutdown").await;
    if let Some(cluster) = cluster {
        cluster.deregister().await;
    }
    hub.close_connections(std::time::Duration::from_secs(5))
        .await;
    tracing::info!("rooms and connections closed");
}
