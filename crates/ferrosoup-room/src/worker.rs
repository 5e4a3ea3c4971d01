//! A worker thread: one event loop (mio) around one sans-IO [`Engine`]. The loop owns the
//! UDP socket, the ICE-TCP listener and its connections (`tcp.rs`), the sockets of plain
//! transports (`plain_sockets.rs`), the clock and the flush; it sleeps until a datagram, a TCP event, a control job or the next deadline. The control path reaches it only through
//! [`WorkerHandle::exec`], which sends a closure and awaits its one-shot reply.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
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
use crate::plain::LocalSocket;
use crate::plain_sockets::PlainSockets;
use crate::settings::IceTimeouts;
use crate::stats::{SharedCounters, WorkerCounters};
use crate::tcp::{ReadFrame, TcpConnections, TcpLimits};
use crate::thread_cpu::ThreadCpu;
use crate::transmit::Transmit;
use crate::udp::{MAX_DATAGRAM, RecvBatch, SocketSender};
use crate::worker_pipe::{MAX_DATAGRAMS_PER_PIPE, PipeEnd, WorkerPipes, is_pipe_socket};

/// Datagrams sent per `sendmmsg` call.
const SEND_BATCH: usize = 64;
/// Datagrams read per `recvmmsg` call.
const RECV_BATCH: usize = 32;
/// Receive batches handled per loop turn before timers and commands get their turn.
const MAX_BATCHES_PER_TURN: usize = 16;

/// Frames read from one ICE-TCP connection per loop turn before the others get theirs.
const MAX_FRAMES_PER_CONNECTION: usize = 32;
/// Receive batches read from one plain transport socket per loop turn.
const MAX_BATCHES_PER_PLAIN_SOCKET: usize = 4;

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);
const TCP_LISTENER: Token = Token(2);
/// Tokens from this one on name ICE-TCP connections.
const FIRST_CONNECTION: usize = 16;
/// Tokens from this one on name plain transport sockets (far above any connection's).
const FIRST_PLAIN_SOCKET: usize = 1 << 30;

type Job = Box<dyn FnOnce(&mut Engine, Instant, &mut dyn Transmit) + Send>;

/// A cheap, cloneable handle to a worker thread.
#[derive(Clone)]
pub struct WorkerHandle {
    index: usize,
    port: u16,
    tcp_port: u16,
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

    /// The worker's ICE-TCP listening port.
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// The waker of the worker's loop (pipes between workers wake it).
    pub(crate) fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
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

/// The sockets a worker serves.
pub struct WorkerSockets {
    /// Its UDP socket.
    pub udp: UdpSocket,
    /// Its ICE-TCP listening socket.
    pub tcp: TcpListener,
    /// Limits of its ICE-TCP connections.
    pub tcp_limits: TcpLimits,
    /// Ports (inclusive) for the sockets of plain transports, bound on the UDP socket's IP.
    pub plain_ports: (u16, u16),
}

/// Starts a worker thread on `sockets`.
pub fn spawn(
    index: usize,
    sockets: WorkerSockets,
    certificate: Arc<DtlsCertificate>,
    events: UnboundedSender<MediaEvent>,
    ice_timeouts: IceTimeouts,
) -> io::Result<WorkerHandle> {
    let socket = sockets.udp;
    socket.set_nonblocking(true)?;
    crate::udp::configure_socket(&socket);
    let port = socket.local_addr()?.port();
    let poll = Poll::new()?;
    poll.registry().register(
        &mut SourceFd(&socket.as_raw_fd()),
        SOCKET,
        Interest::READABLE,
    )?;
    let mut tcp = TcpConnections::new(sockets.tcp, FIRST_CONNECTION, sockets.tcp_limits)?;
    tcp.register(poll.registry(), TCP_LISTENER)?;
    let tcp_port = tcp.port();
    let plain = PlainSockets::new(
        poll.registry().try_clone()?,
        socket.local_addr()?.ip(),
        sockets.plain_ports,
        FIRST_PLAIN_SOCKET,
    );
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
            supervise(state, tcp, plain, poll, jobs_rx)
        })?;
    Ok(WorkerHandle {
        index,
        port,
        tcp_port,
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
fn supervise(
    state: WorkerState,
    tcp: TcpConnections,
    plain: PlainSockets,
    mut poll: Poll,
    jobs: Receiver<Job>,
) {
    let udp = match state.socket.try_clone() {
        Ok(socket) => SocketSender::new(socket, SEND_BATCH),
        Err(e) => {
            tracing::error!(worker = state.index, "worker socket: {e}");
            return;
        }
    };
    let mut sender = WorkerOutput {
        udp,
        tcp,
        plain,
        pipes: WorkerPipes::default(),
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
        // The new engine knows none of the connections' tuples, nor plain transports.
        sender.tcp.close_all();
        sender.plain.close_all();
        // The other workers close their sides of this one's pipes.
        sender.pipes.close_all();
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

/// Where the engine's output goes in a worker: datagrams to the UDP batch, frames for an
/// ICE-TCP connection's address onto that connection, datagrams for a plain transport's
/// remote out of that transport's socket, datagrams for the other side of a pipe between
/// workers into its ring.
struct WorkerOutput {
    udp: SocketSender,
    tcp: TcpConnections,
    plain: PlainSockets,
    pipes: WorkerPipes,
}

impl WorkerOutput {
    /// Sends everything queued on UDP and TCP, and wakes the workers whose pipes got
    /// datagrams.
    fn flush(&mut self) {
        self.udp.flush();
        self.tcp.flush();
        self.pipes.flush();
    }
}

impl Transmit for WorkerOutput {
    fn buffer(&mut self) -> &mut [u8; MAX_DATAGRAM] {
        self.udp.buffer()
    }

    fn commit(&mut self, len: usize, to: SocketAddr) {
        if !self.pipes.send(to, self.udp.uncommitted(len))
            && !self.plain.send(to, self.udp.uncommitted(len))
            && !self.tcp.queue(to, self.udp.uncommitted(len))
        {
            self.udp.commit(len, to);
        }
    }

    fn tuple_removed(&mut self, to: SocketAddr) {
        self.plain.forget(to);
        self.tcp.close_later(to);
    }

    fn is_connection(&self, to: SocketAddr) -> bool {
        self.tcp.is_connection(to)
    }

    fn open_socket(&mut self) -> io::Result<(LocalSocket, SocketAddr)> {
        self.plain.open()
    }

    fn attach_pipe(&mut self, end: PipeEnd) -> io::Result<(LocalSocket, SocketAddr)> {
        Ok(self.pipes.attach(end))
    }

    fn close_socket(&mut self, socket: LocalSocket) {
        if is_pipe_socket(socket) {
            self.pipes.close(socket);
        } else {
            self.plain.close(socket);
        }
    }

    fn route_via(&mut self, to: SocketAddr, socket: LocalSocket) {
        // A pipe end knows its other side's address.
        if !is_pipe_socket(socket) {
            self.plain.route(to, socket);
        }
    }
}

/// The worker event loop; returns when every handle is gone.
fn run(
    state: &WorkerState,
    poll: &mut Poll,
    engine: &mut Engine,
    out: &mut WorkerOutput,
    jobs: &Receiver<Job>,
) {
    let mut events = Events::with_capacity(64);
    let mut batch = RecvBatch::new(RECV_BATCH);
    let mut frame = Box::new([0u8; MAX_DATAGRAM]);
    let mut socket_backlog = false;
    let mut pipe_backlog = false;
    loop {
        let now = Instant::now();
        // Sleep until a datagram, a TCP event, a job, a pipe's wake-up or the next
        // deadline (none: until woken).
        let timeout = if socket_backlog
            || pipe_backlog
            || out.tcp.readable_count() > 0
            || out.plain.has_readable()
            || out.pipes.has_backlog()
        {
            Some(Duration::ZERO)
        } else {
            [engine.poll_timeout(), out.tcp.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .map(|at| at.saturating_duration_since(now))
        };
        if let Err(e) = poll.poll(&mut events, timeout)
            && e.kind() != io::ErrorKind::Interrupted
        {
            tracing::error!("worker poll failed: {e}");
            return;
        }
        let now = Instant::now();
        for event in events.iter() {
            match event.token() {
                SOCKET | WAKER => {}
                TCP_LISTENER => out.tcp.accept(poll.registry(), now),
                token => {
                    if let Some(slot) = out.plain.slot_of(token) {
                        out.plain.mark_readable(slot);
                    } else if let Some(slot) = out.tcp.slot_of(token) {
                        let readable =
                            event.is_readable() || event.is_read_closed() || event.is_error();
                        out.tcp.on_ready(slot, readable, event.is_writable());
                    }
                }
            }
        }
        // Readiness is edge-triggered: read until the socket is empty or the turn's
        // budget is spent (then come back at once).
        socket_backlog = false;
        for _ in 0..MAX_BATCHES_PER_TURN {
            match batch.recv(&state.socket) {
                Ok(n) => {
                    let received = Instant::now();
                    let forwarded_before = engine.counters().rtp_packets_out;
                    for i in 0..n {
                        if let Some((data, from)) = batch.get_mut(i)
                            && !out.tcp.shadows_udp(from)
                        {
                            engine.handle_datagram(now, from, data, out);
                        }
                    }
                    out.flush();
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
        read_connections(engine, now, out, &mut frame);
        read_plain_sockets(engine, now, out, &mut batch);
        pipe_backlog = read_pipes(engine, now, out);
        forget_closed(engine, now, out);
        loop {
            match jobs.try_recv() {
                Ok(job) => job(engine, Instant::now(), out),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        let now = Instant::now();
        out.tcp.expire(now, |addr| engine.routes(addr));
        forget_closed(engine, now, out);
        engine.handle_timeout(now, out);
        out.flush();
        forget_closed(engine, now, out);
        let mut flushed = out.udp.take_totals();
        flushed.dropped += std::mem::take(&mut out.plain.send_errors);
        flushed.dropped += std::mem::take(&mut out.pipes.dropped);
        engine.record_flush(flushed);
        engine.record_tcp(out.tcp.counters());
        state.shared.publish(engine.counters());
    }
}

/// Reads the plain transport sockets listed as readable, a bounded number of batches each
/// (one with more left is listed again for the next turn).
fn read_plain_sockets(
    engine: &mut Engine,
    now: Instant,
    out: &mut WorkerOutput,
    batch: &mut RecvBatch,
) {
    for _ in 0..out.plain.readable_count() {
        let Some(socket) = out.plain.next_readable() else {
            break;
        };
        let mut drained = false;
        for _ in 0..MAX_BATCHES_PER_PLAIN_SOCKET {
            match out.plain.recv(socket, batch) {
                Ok(n) => {
                    for i in 0..n {
                        if let Some((data, from)) = batch.get_mut(i) {
                            engine.handle_plain_datagram(now, socket, from, data, out);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                // ICMP errors (a recorder that stopped listening) surface here.
                Err(e) => tracing::trace!("plain socket recv: {e}"),
            }
        }
        if !drained {
            out.plain.defer(socket);
        }
    }
    out.flush();
}

/// Hands the datagrams waiting in the worker's pipes to the engine, a bounded number per
/// pipe (returns whether one has more left), and closes the sides of pipes whose other
/// side closed.
fn read_pipes(engine: &mut Engine, now: Instant, out: &mut WorkerOutput) -> bool {
    let mut backlog = false;
    for slot in 0..out.pipes.len() {
        if let Some(socket) = out.pipes.closed_at(slot) {
            engine.close_worker_pipe(socket, now, out);
            continue;
        }
        let Some((socket, from, mut rx)) = out.pipes.take_receiver(slot) else {
            continue;
        };
        if rx.is_empty() {
            out.pipes.put_back(socket, rx);
            continue;
        }
        let received = Instant::now();
        let forwarded_before = engine.counters().rtp_packets_out;
        let n = rx.drain(MAX_DATAGRAMS_PER_PIPE, |data| {
            engine.handle_plain_datagram(now, socket, from, data, out);
        });
        out.pipes.put_back(socket, rx);
        out.flush();
        engine.record_forwarding_delay(received, Instant::now(), forwarded_before);
        backlog |= n == MAX_DATAGRAMS_PER_PIPE;
    }
    backlog
}

/// Tells the engine the tuples of the ICE-TCP connections closed since it last heard.
fn forget_closed(engine: &mut Engine, now: Instant, out: &mut WorkerOutput) {
    while let Some(addr) = out.tcp.pop_closed() {
        engine.remove_tuple(now, addr, out);
    }
}

/// Reads the frames of the ICE-TCP connections listed as readable, a bounded number per
/// connection (one with more left is listed again for the next turn). A connection whose
/// first frame is not an ICE check the engine accepts is closed.
fn read_connections(
    engine: &mut Engine,
    now: Instant,
    out: &mut WorkerOutput,
    frame: &mut [u8; MAX_DATAGRAM],
) {
    for _ in 0..out.tcp.readable_count() {
        let Some(slot) = out.tcp.next_readable() else {
            break;
        };
        let mut budget_spent = true;
        for _ in 0..MAX_FRAMES_PER_CONNECTION {
            match out.tcp.read_frame(slot, frame) {
                ReadFrame::Frame { len, from, first } => {
                    engine.handle_datagram(now, from, &mut frame[..len], out);
                    if first && !engine.routes(from) {
                        out.tcp.reject(slot);
                        budget_spent = false;
                        break;
                    }
                }
                ReadFrame::Idle => {
                    budget_spent = false;
                    break;
                }
            }
        }
        if budget_spent {
            out.tcp.defer(slot);
        }
    }
    out.flush();
}
