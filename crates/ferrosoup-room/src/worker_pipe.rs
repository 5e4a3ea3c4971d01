//! Pipes between the workers of one process: a producer on one worker's router consumed
//! by a router on another worker ([`crate::Router::pipe_producer_to`]). Each side of a
//! pipe is a plain transport of its engine (no SRTP: the packets never leave the process)
//! whose "socket" is a [`PipeEnd`]: a single-producer/single-consumer ring of fixed-size
//! slots toward the other worker, and one from it. What the engine sends to the pipe's
//! remote address is copied once into the next free slot (no lock, no channel, no
//! allocation); the other worker's loop hands each slot in place to its engine as a
//! datagram from that address. Media goes one way, RTCP (keyframe requests, NACKs,
//! reports) both.
//!
//! A worker sleeps in `poll` until woken; a pipe wakes the other worker with its mio
//! [`Waker`] only when a push found the ring drained (the other loop may be asleep) and
//! only once per flush, so a batch of packets costs at most one `eventfd` write. A full
//! ring drops the packet (counted), it never blocks the sender.
//!
//! The ring is written by hand rather than taken from a crate because the receiving
//! engine needs each slot mutably in place (it unprotects and parses datagrams in their
//! buffer) and the wake-up needs to know, race-free, whether the reader drained the ring
//! (the SeqCst fences in [`RingSender::push`] and [`RingReceiver::drain`]).
//!
//! Closing: either side closing its transport (or its worker dropping its state after a
//! panic, or stopping) marks the pipe closed and wakes the other worker, whose loop then
//! closes its side's transport (and the pipe producer or consumer on it).

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};

use mio::Waker;

use crate::plain::LocalSocket;
use crate::udp::MAX_DATAGRAM;

/// Slots of the ring that carries media (RTP of every layer, and the RTCP of its side):
/// what one producer sends while the other worker is busy for a turn (a 1 Mbit/s video
/// sends about 4 packets and a key frame 16 in the 40 ms a big fan-out can take), with
/// room for a screen share's key frame. 384 KiB a pipe, resident once the ring has cycled.
pub const MEDIA_RING_SLOTS: usize = 256;
/// Slots of the ring that carries the other way (RTCP: keyframe requests, NACKs, reports).
pub const FEEDBACK_RING_SLOTS: usize = 128;
/// Datagrams taken from one pipe per loop turn before the others get theirs.
pub const MAX_DATAGRAMS_PER_PIPE: usize = 256;

/// [`LocalSocket`]s from this one on name pipe ends (plain sockets count from 0).
const FIRST_PIPE_SOCKET: usize = 1 << 40;

/// Whether a [`LocalSocket`] names a pipe end rather than a UDP socket.
pub fn is_pipe_socket(socket: LocalSocket) -> bool {
    socket.0 >= FIRST_PIPE_SOCKET
}

/// The first 64 bits of pipe addresses: RFC 6666's discard-only prefix `100::/64`, which
/// no packet from the network carries.
const PIPE_PREFIX: [u16; 4] = [0x100, 0, 0, 0];

/// Whether `addr` is the address of a pipe end (never a real peer's).
pub fn is_pipe_address(addr: SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V6(ip) => ip.segments()[..4] == PIPE_PREFIX,
        IpAddr::V4(_) => false,
    }
}

/// Numbers pipes in the process (their addresses).
static NEXT_PIPE: AtomicU64 = AtomicU64::new(1);

/// One slot: a datagram's length and bytes.
struct Slot(UnsafeCell<(usize, [u8; MAX_DATAGRAM])>);

/// Keeps a hot index on its own cache line.
#[repr(align(64))]
struct Padded(AtomicUsize);

/// A single-producer/single-consumer ring of datagram slots. `tail` (written only by the
/// sender) counts datagrams pushed, `head` (written only by the receiver) datagrams taken
/// (slot of datagram `i`: `i % len`). The sender writes only slots in `[tail, head + len)`,
/// the receiver reads only slots in `[head, tail)`, and each publishes its index with a
/// Release store the other reads with an Acquire load.
struct Ring {
    slots: Box<[Slot]>,
    head: Padded,
    tail: Padded,
}

// SAFETY: a slot is accessed by one side at a time: the sender only between `tail` and
// `head + len`, the receiver only between `head` and `tail`, and the index stores
// (Release) / loads (Acquire) order each side's slot accesses before the other's.
unsafe impl Sync for Ring {}

impl Ring {
    fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self {
            slots: (0..slots.max(1))
                .map(|_| Slot(UnsafeCell::new((0, [0; MAX_DATAGRAM]))))
                .collect(),
            head: Padded(AtomicUsize::new(0)),
            tail: Padded(AtomicUsize::new(0)),
        })
    }
}

/// The sending half of a ring.
pub struct RingSender {
    ring: Arc<Ring>,
    /// Datagrams pushed (the ring's `tail`, owned here).
    tail: usize,
    /// `head` as last read (the receiver only moves it forward).
    head: usize,
}

/// What became of a push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued; the receiver had taken everything before it, so it may be asleep.
    IntoDrained,
    /// Queued behind datagrams the receiver has not taken yet (it will see this one).
    Behind,
    /// The ring is full (or the datagram too big): dropped.
    Dropped,
}

impl RingSender {
    /// Copies `data` into the next free slot and publishes it.
    pub fn push(&mut self, data: &[u8]) -> Pushed {
        let len = self.ring.slots.len();
        if data.len() > MAX_DATAGRAM {
            return Pushed::Dropped;
        }
        if self.tail - self.head >= len {
            self.head = self.ring.head.0.load(Ordering::Acquire);
            if self.tail - self.head >= len {
                return Pushed::Dropped;
            }
        }
        let slot = &self.ring.slots[self.tail % len];
        // SAFETY: `tail < head + len`: the receiver has released this slot and reads it
        // again only after the Release store of `tail` below.
        let (slot_len, bytes) = unsafe { &mut *slot.0.get() };
        *slot_len = data.len();
        bytes[..data.len()].copy_from_slice(data);
        let before = self.tail;
        self.tail += 1;
        self.ring.tail.0.store(self.tail, Ordering::Release);
        // Pairs with the receiver's fence between its `head` store and its last `tail`
        // load: either it sees this datagram, or this load sees it had drained the ring.
        fence(Ordering::SeqCst);
        self.head = self.ring.head.0.load(Ordering::Acquire);
        if self.head == before {
            Pushed::IntoDrained
        } else {
            Pushed::Behind
        }
    }
}

/// The receiving half of a ring.
pub struct RingReceiver {
    ring: Arc<Ring>,
    /// Datagrams taken (the ring's `head`, owned here).
    head: usize,
    /// `tail` as last read.
    tail: usize,
}

impl RingReceiver {
    /// Hands up to `max` queued datagrams, oldest first, to `f` in their slots; returns
    /// how many. Fewer than `max` means the ring was drained.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(&mut [u8])) -> usize {
        let len = self.ring.slots.len();
        let mut taken = 0;
        while taken < max {
            if self.head == self.tail {
                self.tail = self.ring.tail.0.load(Ordering::Acquire);
                if self.head == self.tail {
                    // Pairs with the sender's fence (see `push`).
                    fence(Ordering::SeqCst);
                    self.tail = self.ring.tail.0.load(Ordering::Acquire);
                    if self.head == self.tail {
                        break;
                    }
                }
            }
            let slot = &self.ring.slots[self.head % len];
            // SAFETY: `head < tail`: the sender published this slot (Release store of
            // `tail`, read with Acquire above) and writes it again only after the Release
            // store of `head` below.
            let (slot_len, bytes) = unsafe { &mut *slot.0.get() };
            f(&mut bytes[..(*slot_len).min(MAX_DATAGRAM)]);
            self.head += 1;
            self.ring.head.0.store(self.head, Ordering::Release);
            taken += 1;
        }
        taken
    }

    /// Whether datagrams are queued (as of the last look at the sender's index).
    pub fn is_empty(&self) -> bool {
        self.head == self.ring.tail.0.load(Ordering::Acquire)
    }
}

/// A ring of `slots` slots: its sending and receiving halves.
pub fn ring(slots: usize) -> (RingSender, RingReceiver) {
    let ring = Ring::new(slots);
    (
        RingSender {
            ring: ring.clone(),
            tail: 0,
            head: 0,
        },
        RingReceiver {
            ring,
            head: 0,
            tail: 0,
        },
    )
}

/// One side of a pipe between two workers: the ring toward the other worker, the ring
/// from it, the other worker's waker and the pipe's closed flag. Dropping it closes the
/// pipe.
pub struct PipeEnd {
    tx: RingSender,
    /// `None` only while the worker loop hands its datagrams to the engine.
    rx: Option<RingReceiver>,
    /// The address this side's engine sends to, and receives from (the other side's).
    remote: SocketAddr,
    peer: Arc<Waker>,
    closed: Arc<AtomicBool>,
}

impl PipeEnd {
    /// The address the engine knows the other side by.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        // The other worker may be asleep: it must see the close.
        let _ = self.peer.wake();
    }
}

/// A new pipe from the worker woken by `from_waker` (the producer's) to the one woken by
/// `to_waker`: the producer's side, whose ring toward the other side carries media
/// ([`MEDIA_RING_SLOTS`]), and the other side, whose ring back carries RTCP
/// ([`FEEDBACK_RING_SLOTS`]).
pub fn pipe(from_waker: Arc<Waker>, to_waker: Arc<Waker>) -> (PipeEnd, PipeEnd) {
    let n = NEXT_PIPE.fetch_add(1, Ordering::Relaxed);
    let [a, b, c, d] = [
        (n >> 48) as u16,
        (n >> 32) as u16,
        (n >> 16) as u16,
        n as u16,
    ];
    let [p0, p1, p2, p3] = PIPE_PREFIX;
    let ip = IpAddr::V6(Ipv6Addr::new(p0, p1, p2, p3, a, b, c, d));
    let (from_addr, to_addr) = (SocketAddr::new(ip, 1), SocketAddr::new(ip, 2));
    let (media_tx, media_rx) = ring(MEDIA_RING_SLOTS);
    let (feedback_tx, feedback_rx) = ring(FEEDBACK_RING_SLOTS);
    let closed = Arc::new(AtomicBool::new(false));
    (
        PipeEnd {
            tx: media_tx,
            rx: Some(feedback_rx),
            remote: to_addr,
            peer: to_waker,
            closed: closed.clone(),
        },
        PipeEnd {
            tx: feedback_tx,
            rx: Some(media_rx),
            remote: from_addr,
            peer: from_waker,
            closed,
        },
    )
}

/// A pipe end a worker holds, and whether the other worker needs a wake-up at the next
/// flush.
struct Attached {
    end: PipeEnd,
    wake: bool,
}

/// The pipe ends of one worker, named by [`LocalSocket`]s the engine uses like a plain
/// transport's sockets.
#[derive(Default)]
pub struct WorkerPipes {
    /// Slot → pipe end; `None` slots are free.
    slots: Vec<Option<Attached>>,
    /// The address of each pipe's other side → its slot.
    routes: HashMap<SocketAddr, usize>,
    /// Some slot wants its peer woken at the next flush.
    wake_pending: bool,
    /// Datagrams dropped because a ring was full.
    pub dropped: usize,
}

impl WorkerPipes {
    /// Takes `end` in; returns the socket that names it and the address of its other side.
    pub fn attach(&mut self, end: PipeEnd) -> (LocalSocket, SocketAddr) {
        let remote = end.remote;
        let attached = Attached { end, wake: false };
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(free) => {
                self.slots[free] = Some(attached);
                free
            }
            None => {
                self.slots.push(Some(attached));
                self.slots.len() - 1
            }
        };
        self.routes.insert(remote, slot);
        (LocalSocket(FIRST_PIPE_SOCKET + slot), remote)
    }

    /// Closes a pipe end (the other side's loop closes its transport).
    pub fn close(&mut self, socket: LocalSocket) {
        if let Some(s) = socket
            .0
            .checked_sub(FIRST_PIPE_SOCKET)
            .and_then(|slot| self.slots.get_mut(slot))
            && let Some(a) = s.take()
        {
            self.routes.remove(&a.end.remote);
        }
    }

    /// Closes every pipe end (the worker restarts with an empty engine, or stops).
    pub fn close_all(&mut self) {
        self.slots.clear();
        self.routes.clear();
        self.wake_pending = false;
    }

    /// Queues `data` on the pipe whose other side is `to`; `false` when `to` is no pipe
    /// address (one prefix comparison for every other datagram, one hash lookup for a
    /// pipe's).
    pub fn send(&mut self, to: SocketAddr, data: &[u8]) -> bool {
        if !is_pipe_address(to) {
            return false;
        }
        let Some(a) = self
            .routes
            .get(&to)
            .and_then(|&slot| self.slots.get_mut(slot))
            .and_then(Option::as_mut)
        else {
            // A pipe closed under a packet in flight.
            self.dropped += 1;
            return true;
        };
        match a.end.tx.push(data) {
            Pushed::IntoDrained => {
                a.wake = true;
                self.wake_pending = true;
            }
            Pushed::Behind => {}
            Pushed::Dropped => self.dropped += 1,
        }
        true
    }

    /// Wakes the workers whose pipes got datagrams into a drained ring since the last
    /// flush (once each).
    pub fn flush(&mut self) {
        if !std::mem::take(&mut self.wake_pending) {
            return;
        }
        for a in self.slots.iter_mut().flatten() {
            if std::mem::take(&mut a.wake) {
                let _ = a.end.peer.wake();
            }
        }
    }

    /// How many slots there are (some may be free).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no pipe end was ever attached.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether some pipe has datagrams waiting.
    pub fn has_backlog(&self) -> bool {
        self.slots
            .iter()
            .flatten()
            .any(|a| a.end.rx.as_ref().is_some_and(|rx| !rx.is_empty()))
    }

    /// The first pipe at or after `slot` whose other side closed: its socket.
    pub fn closed_at(&self, slot: usize) -> Option<LocalSocket> {
        self.slots
            .get(slot)?
            .as_ref()
            .filter(|a| a.end.closed.load(Ordering::Acquire))
            .map(|_| LocalSocket(FIRST_PIPE_SOCKET + slot))
    }

    /// Takes the receiving half of slot `slot` out, so that its datagrams can be handed to
    /// the engine while the engine sends through `self` (put it back with
    /// [`WorkerPipes::put_back`]).
    pub fn take_receiver(
        &mut self,
        slot: usize,
    ) -> Option<(LocalSocket, SocketAddr, RingReceiver)> {
        let a = self.slots.get_mut(slot)?.as_mut()?;
        let rx = a.end.rx.take()?;
        Some((LocalSocket(FIRST_PIPE_SOCKET + slot), a.end.remote, rx))
    }

    /// Puts back a receiving half taken with [`WorkerPipes::take_receiver`] (dropped if
    /// the pipe was closed meanwhile).
    pub fn put_back(&mut self, socket: LocalSocket, rx: RingReceiver) {
        if let Some(a) = socket
            .0
            .checked_sub(FIRST_PIPE_SOCKET)
            .and_then(|slot| self.slots.get_mut(slot))
            .and_then(Option::as_mut)
            && a.end.rx.is_none()
        {
            a.end.rx = Some(rx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_keeps_order_drops_when_full_and_says_when_it_was_drained() {
        let (mut tx, mut rx) = ring(4);
        assert_eq!(tx.push(&[1]), Pushed::IntoDrained);
        assert_eq!(tx.push(&[2, 2]), Pushed::Behind);
        assert_eq!(tx.push(&[3; 3]), Pushed::Behind);
        assert_eq!(tx.push(&[4; 4]), Pushed::Behind);
        assert_eq!(tx.push(&[5]), Pushed::Dropped, "full");
        assert_eq!(tx.push(&[0; MAX_DATAGRAM + 1]), Pushed::Dropped, "too big");
        let mut got = Vec::new();
        assert_eq!(rx.drain(3, |d| got.push(d.to_vec())), 3);
        assert_eq!(got, [vec![1], vec![2, 2], vec![3; 3]]);
        assert!(!rx.is_empty());
        // One left: the next push queues behind it.
        assert_eq!(tx.push(&[6]), Pushed::Behind);
        got.clear();
        assert_eq!(rx.drain(10, |d| got.push(d.to_vec())), 2);
        assert_eq!(got, [vec![4; 4], vec![6]]);
        assert!(rx.is_empty());
        // Drained: the next push may find the reader asleep.
        assert_eq!(tx.push(&[7]), Pushed::IntoDrained);
    }

    #[test]
    fn a_ring_between_threads_loses_and_reorders_nothing_and_never_leaves_a_datagram_unseen() {
        const N: u32 = 200_000;
        let (mut tx, mut rx) = ring(64);
        // The reader "sleeps" (spins on a flag) until a push into a drained ring wakes it,
        // as a worker sleeps in poll until its waker fires.
        let wake = Arc::new(AtomicBool::new(false));
        let reader_wake = wake.clone();
        let reader = std::thread::spawn(move || {
            let mut next = 0u32;
            while next < N {
                while !reader_wake.swap(false, Ordering::AcqRel) {
                    std::hint::spin_loop();
                }
                rx.drain(usize::MAX, |d| {
                    let got = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
                    assert_eq!(got, next);
                    assert_eq!(d.len(), 4 + (got % 100) as usize);
                    next += 1;
                });
            }
            next
        });
        let mut sent = 0u32;
        while sent < N {
            let mut data = [0u8; 104];
            data[..4].copy_from_slice(&sent.to_be_bytes());
            match tx.push(&data[..4 + (sent % 100) as usize]) {
                Pushed::IntoDrained => {
                    wake.store(true, Ordering::Release);
                    sent += 1;
                }
                Pushed::Behind => sent += 1,
                // Full: the reader is behind; try again (a worker drops instead).
                Pushed::Dropped => std::hint::spin_loop(),
            }
        }
        assert_eq!(reader.join().expect("reader"), N);
    }
}
