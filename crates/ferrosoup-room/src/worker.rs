//! A worker thread: one event loop (mio) around one sans-IO [`Engine`]. The loop owns the
//! UDP socket, the clock and the flush; it sleeps until a datagram, a control job or the
//! engine's next deadline. The control path reaches it only through
//! [`WorkerHandle::exec`], which sends a closure and awaits its one-shot reply.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant, SystemTime};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

use ferrosoup_rtc::dtls::DtlsCertificate;

use crate::engine::Engine;
use crate::error::RoomError;
use crate::events::MediaEvent;
use crate::settings::IceTimeouts;
use crate::stats::{SharedCounters, WorkerCounters};
use crate::thread_cpu::ThreadCpu;
use crate::transmit::Transmit;
use crate::udp::{RecvBatch, SocketSender};

/// Datagrams sent per `sendmmsg` call.
const SEND_BATCH: usize = 64;
/// Datagrams read per `recvmmsg` call.
const RECV_BATCH: usize = 32;
/// Receive batches handled per loop turn before timers and commands get their turn.
const MAX_BATCHES_PER_TURN: usize = 16;

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);

type Job = Box<dyn FnOnce(&mut Engine, Instant, &mut dyn Transmit) + Send>;

/// A cheap, cloneable handle to a worker thread.
#[derive(Clone)]
pub struct WorkerHandle {
    index: usize,
    port: u16,
    jobs: Sender<Job>,
    waker: Arc<Waker>,
    shared: Arc<SharedCounters>,
    cpu: Arc<ThreadCpu>,
}

impl WorkerHandle {
    /// Runs `f` on the worker thread with its engine, the current time and the worker's
    /// outgoing datagrams, and returns its result.
    pub async fn exec<R, F>(&self, f: F) -> Result<R, RoomError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Engine, Instant, &mut dyn Transmit) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |engine, now, out| {
            let _ = tx.send(f(engine, now, out));
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

    /// CPU time the worker thread has used (`None` where `/proc` cannot tell).
    pub fn cpu_time(&self) -> Option<Duration> {
        self.cpu.read()
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
    let cpu = Arc::new(ThreadCpu::default());
    let thread_cpu = cpu.clone();
    let state = WorkerState {
        index,
        socket,
        certificate,
        events,
        shared: shared.clone(),
        ice_timeouts,
    };
    std::thread::Builder::new()
        .name(format!("ferrosoup-worker-{index}"))
        .spawn(move || {
            thread_cpu.mark_current();
            supervise(state, poll, jobs_rx)
        })?;
    Ok(WorkerHandle {
        index,
        port,
        jobs: jobs_tx,
        waker,
        shared,
        cpu,
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
    fn new_engine(&self) -> io::Result<Engine> {
        Ok(Engine::new(
            self.socket.local_addr()?.port(),
            self.certificate.clone(),
            self.events.clone(),
            self.ice_timeouts,
            Instant::now(),
            SystemTime::now(),
        ))
    }
}

/// Runs the event loop; if it panics (a bug), the worker's state is dropped, its routers are
/// reported as lost, and the loop restarts with empty state on the same socket, so the
/// server and the other workers keep serving.
fn supervise(state: WorkerState, mut poll: Poll, jobs: Receiver<Job>) {
    let mut sender = match state.socket.try_clone() {
        Ok(socket) => SocketSender::new(socket, SEND_BATCH),
        Err(e) => {
            tracing::error!(worker = state.index, "worker socket: {e}");
            return;
        }
    };
    loop {
        let mut engine = match state.new_engine() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(worker = state.index, "worker cannot start: {e}");
                return;
            }
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run(&state, &mut poll, &mut engine, &mut sender, &jobs)
        }));
        if outcome.is_ok() {
            return;
        }
        let routers = engine.router_ids();
        tracing::error!(
            worker = state.index,
            routers = routers.len(),
            "worker panicked: its routers are closed, restarting it"
        );
        let _ = state.events.send(MediaEvent::WorkerRestarted {
            worker: state.index,
            routers,
        });
    }
}

/// The worker event loop; returns when every handle is gone.
fn run(
    state: &WorkerState,
    poll: &mut Poll,
    engine: &mut Engine,
    sender: &mut SocketSender,
    jobs: &Receiver<Job>,
) {
    let mut events = Events::with_capacity(64);
    let mut batch = RecvBatch::new(RECV_BATCH);
    let mut socket_backlog = false;
    loop {
        let now = Instant::now();
        // Sleep until a datagram, a job or the engine's next deadline (none: until woken).
        let timeout = if socket_backlog {
            Some(Duration::ZERO)
        } else {
            engine
                .poll_timeout()
                .map(|at| at.saturating_duration_since(now))
        };
        if let Err(e) = poll.poll(&mut events, timeout)
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
            match batch.recv(&state.socket) {
                Ok(n) => {
                    let received = Instant::now();
                    let forwarded_before = engine.counters().rtp_packets_out;
                    for i in 0..n {
                        if let Some((data, from)) = batch.get_mut(i) {
                            engine.handle_datagram(now, from, data, sender);
                        }
                    }
                    sender.flush();
                    engine.record_forwarding_delay(received, Instant::now(), forwarded_before);
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
                Ok(job) => job(engine, Instant::now(), sender),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        engine.handle_timeout(Instant::now(), sender);
        sender.flush();
        engine.record_flush(sender.take_totals());
        state.shared.publish(engine.counters());
    }
}
