//! The `ferrosoup` binary: starts the worker pool and serves HTTP + WebSocket signaling.

mod config;
mod http;
mod ws;

use std::net::SocketAddr;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use ferrosoup_room::WorkerPool;
use ferrosoup_signal::Hub;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = config::Config::parse();
    config.validate().map_err(anyhow::Error::msg)?;
    let media_codecs = config.media_codecs().map_err(anyhow::Error::msg)?;
    let settings = config.worker_settings();
    let (pool, events) = WorkerPool::start(&settings)?;
    let hub = Hub::new(pool, events, media_codecs);
    let addr = SocketAddr::new(config.listen_ip, config.port);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(
        "ferrosoup listening on http://{} (ws: /ws), {} workers on UDP {}..={}, candidates {:?}",
        listener.local_addr()?,
        settings.num_workers,
        settings.rtc_min_port,
        settings.rtc_max_port,
        settings.candidate_ips()
    );
    tracing::warn!("no AUTH_SECRET: running open (development mode)");
    let app = http::routes(http::AppState { hub });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
