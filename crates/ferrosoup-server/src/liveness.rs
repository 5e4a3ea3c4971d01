//! Liveness for `/health/live`: whether every worker loop and the signaling runtime still
//! make progress, read from stamps so that the answer never waits on a worker.
//!
//! A task on the signaling runtime stamps a heartbeat every probe interval and sends each
//! worker a no-op job (at most one outstanding per worker); the worker's loop answers it on
//! its next turn. A worker whose probe is unanswered for longer than the timeout, or a
//! heartbeat older than that, is reported as stalled.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Stamp value of a worker with no probe outstanding.
const IDLE: u64 = u64::MAX;

/// Progress stamps, in milliseconds since `start`.
pub struct Liveness {
    start: Instant,
    timeout: Duration,
    /// Last heartbeat of the signaling runtime.
    heartbeat: AtomicU64,
    /// Per worker: when its outstanding probe was sent, or [`IDLE`].
    probes: Vec<AtomicU64>,
}

impl Liveness {
    /// Starts probing the pool's workers; a stall longer than `timeout` makes the process
    /// not live.
    pub fn start(hub: &Arc<ferrosoup_signal::Hub>, timeout: Duration) -> Arc<Self> {
        let workers = hub.pool().workers().len();
        let liveness = Arc::new(Self {
            start: Instant::now(),
            timeout,
            heartbeat: AtomicU64::new(0),
            probes: (0..workers).map(|_| AtomicU64::new(IDLE)).collect(),
        });
        let interval = (timeout / 4).min(Duration::from_secs(1));
        tokio::spawn(probe(
            Arc::downgrade(hub),
            Arc::downgrade(&liveness),
            interval,
        ));
        liveness
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// `Err` naming what stopped making progress.
    pub fn check(&self) -> Result<(), String> {
        let now = self.now_ms();
        let timeout = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        let age = now.saturating_sub(self.heartbeat.load(Ordering::Relaxed));
        if age > timeout {
            return Err(format!("signaling runtime: no heartbeat for {age} ms"));
        }
        for (i, sent) in self.probes.iter().enumerate() {
            let sent = sent.load(Ordering::Relaxed);
            if sent != IDLE && now.saturating_sub(sent) > timeout {
                return Err(format!(
                    "worker {i}: no loop turn for {} ms",
                    now.saturating_sub(sent)
                ));
            }
        }
        Ok(())
    }
}

/// Stamps the heartbeat and probes the workers every `interval` while the server runs.
async fn probe(
    hub: std::sync::Weak<ferrosoup_signal::Hub>,
    liveness: std::sync::Weak<Liveness>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let (Some(hub), Some(live)) = (hub.upgrade(), liveness.upgrade()) else {
            return;
        };
        let now = live.now_ms();
        live.heartbeat.store(now, Ordering::Relaxed);
        for (i, worker) in hub.pool().workers().iter().enumerate() {
            let Some(stamp) = live.probes.get(i) else {
                continue;
            };
            if stamp
                .compare_exchange(IDLE, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let worker = worker.clone();
            let live = Arc::downgrade(&live);
            tokio::spawn(async move {
                // A worker that is gone (restarting) answers with an error: that is progress
                // of its supervisor, not a stall.
                let _ = worker.exec(|_, _, _| ()).await;
                if let Some(live) = live.upgrade()
                    && let Some(stamp) = live.probes.get(i)
                {
                    stamp.store(IDLE, Ordering::Relaxed);
                }
            });
        }
    }
}
