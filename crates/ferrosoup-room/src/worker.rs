//! A worker thread: one event loop (mio) over one UDP socket, a command queue and a timer
//! tick. The control path reaches it only through [`WorkerHandle::exec`], which sends a
//! closure and awaits its one-shot reply.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

use ferrosoup_rtc::dtls::DtlsCertificate;

use crate::core::WorkerCore;
use crate::error::RoomError;
use crate::events::MediaEvent;
use crate::settings::IceTimeouts;
use crate::stats::{SharedCounters, WorkerCounters};
use crate::udp::RecvBatch;

/// How often timers (ICE consent, DTLS retransmission, NACK, RTCP, keyframe retries) run.
const TICK: Duration = Duration::from_millis(20);
/// Datagrams read per `recvmmsg` call.
const RECV_BATCH: usize = 32;
/// Receive batches handled per loop turn before timers and commands get their turn.
const MAX_BATCHES_PER_TURN: usize = 16;

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);

type Job = Box<dyn FnOnce(&mut WorkerCore, Instant) + Send>;

/// A cheap, cloneable handle to a worker thread.
#[derive(Clone)]
pub struct WorkerHandle {
    index: usize,
    port: u16,
    jobs: Sender<Job>,
    waker: Arc<Waker>,
    shared: Arc<SharedCounters>,
}

impl WorkerHandle {
    /// Runs `f` on the worker thread with its state and the current time, and returns its
    /// result.
    pub async fn exec<R, F>(&self, f: F) -> Result<R, RoomError>
    where
        R: Send + 'static,
        F: FnOnce(&mut WorkerCore, Instant) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |core, now| {
            let _ = tx.send(f(core, now));
        });
        self.jobs.send(job).map_err(|_| RoomError::WorkerGone)?;
        self.waker.wake().map_err(|_| RoomError::WorkerGone)?;
        rx.await.map_err(|_| RoomError::WorkerGone)
    }

    /// The worker's index in the pool.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The worker socket's UDP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The worker's counters as last published.
    pub fn counters(&self) -> WorkerCounters {
        self.shared.snapshot()
    }
}

/// Starts a worker thread on `socket`.
pub fn spawn(
    index: usize,
    socket: UdpSocket,
    certificate: Arc<DtlsCertificate>,
    events: UnboundedSender<MediaEvent>,
    ice_timeouts: IceTimeouts,
) -> io::Result<WorkerHandle> {
    socket.set_nonblocking(true)?;
    crate::udp::configure_socket(&socket);
    let port = socket.local_addr()?.port();
    let poll = Poll::new()?;
    poll.registry().register(
        &mut SourceFd(&socket.as_raw_fd()),
        SOCKET,
        Interest::READABLE,
    )?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let shared = Arc::new(SharedCounters::default());
    let (jobs_tx, jobs_rx) = mpsc::channel();
    let state = WorkerState {
        index,
        socket,
        certificate,
        events,
        shared: shared.clone(),
        ice_timeouts,
    };
    let core = state.new_core()?;
    std::thread::Builder::new()
        .name(format!("ferrosoup-worker-{index}"))
        .spawn(move || supervise(state, poll, core, jobs_rx))?;
    Ok(WorkerHandle {
        index,
        port,
        jobs: jobs_tx,
        waker,
        shared,
    })
}

/// What a worker needs to (re)build its state.
struct WorkerState {
    index: usize,
    socket: UdpSocket,
    certificate: Arc<DtlsCertificate>,
    events: UnboundedSender<MediaEvent>,
    shared: Arc<SharedCounters>,
    ice_timeouts: IceTimeouts,
}

impl WorkerState {
    fn new_core(&self) -> io::Result<WorkerCore> {
        WorkerCore::new(
            self.socket.try_clone()?,
            self.certificate.clone(),
            self.events.clone(),
            self.shared.clone(),
            self.ice_timeouts,
        )
    }
}

/// Runs the event loop; if it panics (a bug), the worker's state is dropped, its routers are
/// reported as lost, and the loop restarts with empty state on the same socket, so the
/// server and the other workers keep serving.
fn supervise(state: WorkerState, mut poll: Poll, mut core: WorkerCore, jobs: Receiver<Job>) {
    loop {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run(&mut poll, &mut core, &jobs)
        }));
        if outcome.is_ok() {
            return;
        }
        let routers = core.router_ids();
        tracing::error!(
            worker = state.index,
            routers = routers.len(),
            "worker panicked: its routers are closed, restarting it"
        );
        let _ = state.events.send(MediaEvent::WorkerRestarted {
            worker: state.index,
            routers,
        });
        core = match state.new_core() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(worker = state.index, "worker cannot restart: {e}");
                return;
            }
        };
    }
}

/// The worker event loop; returns when every handle is gone.
fn run(poll: &mut Poll, core: &mut WorkerCore, jobs: &Receiver<Job>) {
    let mut events = Events::with_capacity(64);
    let mut batch = RecvBatch::new(RECV_BATCH);
    let mut next_tick = Instant::now() + TICK;
    let mut socket_backlog = false;
    loop {
        let now = Instant::now();
        let timeout = if socket_backlog {
            Duration::ZERO
        } else {
            next_tick.saturating_duration_since(now)
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout))
            && e.kind() != io::ErrorKind::Interrupted
        {
            tracing::error!("worker poll failed: {e}");
            return;
        }
        // Readiness is edge-triggered: read until the socket is empty or the turn's
        // budget is spent (then come back at once).
        socket_backlog = false;
        let now = Instant::now();
        for _ in 0..MAX_BATCHES_PER_TURN {
            match batch.recv(core.socket()) {
                Ok(n) => {
                    for i in 0..n {
                        if let Some((data, from)) = batch.get_mut(i) {
                            core.handle_datagram(now, from, data);
                        }
                    }
                    core.flush();
                    socket_backlog = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    socket_backlog = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // ICMP errors (port unreachable of a departed client) surface here.
                    tracing::trace!("worker recv: {e}");
                }
            }
        }
        loop {
            match jobs.try_recv() {
                Ok(job) => job(core, Instant::now()),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            core.on_tick(now);
            next_tick = now + TICK;
        }
        core.flush();
    }
}
