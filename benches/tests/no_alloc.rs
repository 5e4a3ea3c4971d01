//! The media path of the real engine must not allocate per packet: a counting global
//! allocator around [`Engine::handle_datagram`](ferrosoup_room::Engine::handle_datagram)
//! (unprotect, parse, producer-side tracking, then decide, rewrite, extensions and protect
//! for each of 10 consumers and a pipe consumer to another node; also with temporal
//! layers, half the consumers dropping the upper ones) and
//! [`Engine::handle_timeout`](ferrosoup_room::Engine::handle_timeout) (reports, the
//! publisher's REMB of `setMaxIncomingBitrate`, transport-cc feedback, NACK rounds, active
//! speaker) for 1000 video packets with audio interleaved, after warm-up. Clients are
//! connected through real ICE/DTLS/SRTP, which negotiates AEAD_AES_128_GCM: the only
//! profile this test can reach.
//!
//! The path through a pipe between workers (`ferrosoup_room::worker_pipe`) is checked
//! too: the publisher's video through one engine into the ring, a wake-up, out of the ring
//! through the other engine to 10 consumers, and the RTCP of both engines' timers (reports,
//! NACKs of upstream losses) back through the other ring.
//!
//! The ICE-TCP path of a worker (`ferrosoup_room::tcp`) is checked too: frames queued on
//! a real loopback connection, flushed, and frames read from it (RFC 4571 framing).
//!
//! `NO_ALLOC_BACKTRACE=1 cargo test -p ferrosoup-benches --test no_alloc` prints where
//! the first counted allocations come from.

use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::Cell;

use ferrosoup_benches::{AUDIO_INTERVAL, CrossWorker, Fanout, VIDEO_INTERVAL};

/// Counts the allocations of the thread that enabled counting, then defers to `System`.
struct Counting;

thread_local! {
    /// Whether allocations on this thread are counted now.
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    /// Allocations counted on this thread.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// Backtraces still to print (set from `NO_ALLOC_BACKTRACE`).
    static BACKTRACES: Cell<u32> = const { Cell::new(0) };
}

/// Backtraces printed with `NO_ALLOC_BACKTRACE` set.
const MAX_BACKTRACES: u32 = 8;

fn count(layout: Layout) {
    // `try_with`: the allocator can run while the thread's locals are torn down.
    let counting = ENABLED.try_with(Cell::get).unwrap_or(false);
    if !counting {
        return;
    }
    ALLOCATIONS.with(|n| n.set(n.get() + 1));
    if BACKTRACES.with(Cell::get) > 0 {
        // Capturing and printing allocate: not counted, and no recursion.
        ENABLED.with(|e| e.set(false));
        BACKTRACES.with(|n| n.set(n.get() - 1));
        eprintln!(
            "allocation of {} bytes:\n{}",
            layout.size(),
            Backtrace::force_capture()
        );
        ENABLED.with(|e| e.set(true));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// counting touches only const-initialised thread locals, which never allocate (and the
// optional backtrace is taken with counting off, so it does not recurse).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout);
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(layout);
        // SAFETY: `ptr` was allocated by `System` through this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made by this thread while `f` runs.
fn allocations_in(f: impl FnOnce()) -> u64 {
    let backtraces = if std::env::var_os("NO_ALLOC_BACKTRACE").is_some() {
        MAX_BACKTRACES
    } else {
        0
    };
    BACKTRACES.with(|n| n.set(backtraces));
    ALLOCATIONS.with(|n| n.set(0));
    ENABLED.with(|e| e.set(true));
    f();
    ENABLED.with(|e| e.set(false));
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn counting_allocator_sees_allocations() {
    // Guards the test below against an allocator that counts nothing.
    let n = allocations_in(|| {
        std::hint::black_box(vec![1u8; 64]);
    });
    assert_eq!(n, 1);
}

/// One step of the prepared input.
enum Step {
    /// A datagram from the publisher.
    Packet(Vec<u8>),
    /// Simulated time passes; the engine's timers due by then run.
    Advance(std::time::Duration),
}

#[test]
fn forwarding_to_many_consumers_does_not_allocate() {
    const CONSUMERS: usize = 10;
    const VIDEO_PACKETS: u32 = 1000;
    let mut fanout = Fanout::new(CONSUMERS);
    // Video also crosses a pipe to another node (its Sender Reports go with the timers).
    fanout.add_pipe();
    // Its REMB goes out on every report round of the publisher's transport.
    let publisher = fanout.publisher;
    fanout.room.set_max_incoming_bitrate(publisher, 2_000_000);
    // Warm-up beyond `Fanout::new`'s: a few seconds of media, so that every timer (reports,
    // transport-cc feedback, active speaker) has fired and every reused buffer and table
    // has reached its steady size; one upstream loss arms a NACK round.
    let mut warm_up = Vec::new();
    prepare(&mut fanout, 500, &mut warm_up);
    for step in &mut warm_up {
        run(&mut fanout, step);
    }
    fanout.room.server.events();

    // Keyframes now and then and a packet lost upstream every 100 (NACK rounds and an
    // output gap), audio every 20 ms: prepared before counting. 1000 × 8 ms stays well
    // within the consent timeout, so no client needs to send a consent check.
    let mut steps = Vec::new();
    let (video, audio) = prepare(&mut fanout, VIDEO_PACKETS, &mut steps);
    let sent_before = fanout.engine().counters().rtp_packets_out;
    let rtcp_before = fanout.engine().counters().rtcp_out;
    let nacks_before = fanout.engine().counters().nacks_sent;
    let allocations = allocations_in(|| {
        for step in &mut steps {
            run(&mut fanout, step);
        }
    });
    let counters = *fanout.engine().counters();
    assert_eq!(
        counters.rtp_packets_out - sent_before,
        (video + audio) * CONSUMERS as u64 + video,
        "every packet forwarded to every consumer, video through the pipe too"
    );
    assert!(counters.rtcp_out > rtcp_before, "the timers ran");
    assert!(counters.nacks_sent > nacks_before, "the losses were NACKed");
    assert_eq!(
        allocations, 0,
        "allocations on the media path (NO_ALLOC_BACKTRACE=1 shows where)"
    );
}

#[test]
fn forwarding_through_a_pipe_between_workers_does_not_allocate() {
    const CONSUMERS: usize = 10;
    const VIDEO_PACKETS: u32 = 1000;
    let mut cross = CrossWorker::new(CONSUMERS);
    let mut warm_up = Vec::new();
    prepare_video(&mut cross, 500, &mut warm_up);
    for step in &mut warm_up {
        run_cross(&mut cross, step);
    }
    cross.from.room.server.events();
    cross.to.room.server.events();

    let mut steps = Vec::new();
    let video = prepare_video(&mut cross, VIDEO_PACKETS, &mut steps);
    let sent_before = cross.forwarded();
    let from_in_before = cross.from.engine().counters().datagrams_in;
    let allocations = allocations_in(|| {
        for step in &mut steps {
            run_cross(&mut cross, step);
        }
    });
    assert_eq!(
        cross.forwarded() - sent_before,
        video * CONSUMERS as u64,
        "every packet through the pipe to every consumer"
    );
    assert!(
        cross.from.engine().counters().datagrams_in - from_in_before > video,
        "RTCP came back through the pipe"
    );
    assert_eq!(cross.from_out.pipes.dropped + cross.to_out.pipes.dropped, 0);
    assert_eq!(
        allocations, 0,
        "allocations on the pipe between workers (NO_ALLOC_BACKTRACE=1 shows where)"
    );
}

/// Prepares `video` video packets of the publisher of `cross` (a keyframe every 250, a
/// loss every 100) and the time steps between them; returns how many.
fn prepare_video(cross: &mut CrossWorker, video: u32, steps: &mut Vec<Step>) -> u64 {
    for i in 1..=video {
        if i % 100 == 0 {
            cross.from.lose_video();
        }
        steps.push(Step::Packet(cross.from.video_datagram(i % 250 == 0)));
        steps.push(Step::Advance(VIDEO_INTERVAL));
    }
    u64::from(video)
}

fn run_cross(cross: &mut CrossWorker, step: &mut Step) {
    match step {
        Step::Packet(datagram) => cross.forward(std::slice::from_mut(datagram)),
        Step::Advance(by) => cross.advance(*by),
    }
}

#[test]
fn dropping_temporal_layers_does_not_allocate() {
    const CONSUMERS: usize = 10;
    const VIDEO_PACKETS: u32 = 1000;
    let mut fanout = Fanout::new(CONSUMERS);
    fanout.set_temporal_layers(true);
    // Every other consumer forwards temporal layer 0 only.
    for i in (0..CONSUMERS).step_by(2) {
        let consumer = fanout.video_consumers[i];
        fanout.room.set_preferred_layers(consumer, 0, Some(0));
    }
    let mut warm_up = Vec::new();
    prepare(&mut fanout, 500, &mut warm_up);
    for step in &mut warm_up {
        run(&mut fanout, step);
    }
    fanout.room.server.events();

    let mut steps = Vec::new();
    let tid0_before = fanout.tid0_packets;
    let (video, audio) = prepare(&mut fanout, VIDEO_PACKETS, &mut steps);
    let tid0 = fanout.tid0_packets - tid0_before;
    let sent_before = fanout.engine().counters().rtp_packets_out;
    let allocations = allocations_in(|| {
        for step in &mut steps {
            run(&mut fanout, step);
        }
    });
    let counters = *fanout.engine().counters();
    let half = CONSUMERS as u64 / 2;
    assert!(tid0 < video / 2, "the upper layers carry most packets");
    assert_eq!(
        counters.rtp_packets_out - sent_before,
        audio * CONSUMERS as u64 + video * half + tid0 * half,
        "all of it to half the consumers, temporal layer 0 to the others"
    );
    assert_eq!(
        allocations, 0,
        "allocations on the media path (NO_ALLOC_BACKTRACE=1 shows where)"
    );
}

/// Prepares `video` video packets (a keyframe every 250, a loss every 100) with audio
/// interleaved at its own rate and the time steps between them; returns the numbers of
/// video and audio packets.
fn prepare(fanout: &mut Fanout, video: u32, steps: &mut Vec<Step>) -> (u64, u64) {
    let mut audio = 0;
    let mut audio_due = std::time::Duration::ZERO;
    for i in 1..=video {
        if i % 100 == 0 {
            fanout.lose_video();
        }
        steps.push(Step::Packet(fanout.video_datagram(i % 250 == 0)));
        steps.push(Step::Advance(VIDEO_INTERVAL));
        audio_due += VIDEO_INTERVAL;
        if audio_due >= AUDIO_INTERVAL {
            audio_due -= AUDIO_INTERVAL;
            steps.push(Step::Packet(fanout.audio_datagram()));
            audio += 1;
        }
    }
    (u64::from(video), audio)
}

fn run(fanout: &mut Fanout, step: &mut Step) {
    match step {
        Step::Packet(datagram) => fanout.handle(datagram),
        Step::Advance(by) => fanout.advance(*by),
    }
}

#[test]
fn ice_tcp_framing_does_not_allocate() {
    use ferrosoup_room::tcp::{ReadFrame, TcpConnections, TcpLimits};
    use std::io::{Read, Write};
    use std::time::Instant;

    const FRAMES: usize = 2000;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let server_addr = listener.local_addr().expect("addr");
    let poll = mio::Poll::new().expect("poll");
    let mut tcp = TcpConnections::new(listener, 16, TcpLimits::default()).expect("tcp");
    let mut client = std::net::TcpStream::connect(server_addr).expect("connect");
    client.set_nonblocking(true).expect("nonblocking");
    let remote = client.local_addr().expect("client addr");
    // Accept (allocates the connection's buffers: once per connection, not counted).
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while !tcp.queue(remote, b"warm-up") {
        assert!(Instant::now() < deadline, "the connection was not accepted");
        tcp.accept(poll.registry(), Instant::now());
    }
    tcp.flush();
    let slot = tcp.next_readable().expect("listed for reading at accept");
    let packet = [0x90u8; 1200];
    let mut framed = [0u8; 1202];
    framed[..2].copy_from_slice(&1200u16.to_be_bytes());
    framed[2..].copy_from_slice(&packet);
    let mut sink = [0u8; 64 * 1024];
    let mut frame = [0u8; ferrosoup_room::udp::MAX_DATAGRAM];
    let (mut sent, mut read, mut received) = (0usize, 0usize, 0usize);
    let allocations = allocations_in(|| {
        for i in 0..FRAMES {
            // Out: queue on the connection, written at the flush.
            assert!(tcp.queue(remote, &packet));
            if i % 8 == 7 {
                tcp.flush();
                while let Ok(n) = client.read(&mut sink) {
                    if n == 0 {
                        break;
                    }
                    received += n;
                }
            }
            // In: the client sends one frame; the server reads it whole.
            client.write_all(&framed).expect("client write");
            sent += 1;
            let spin = Instant::now();
            loop {
                match tcp.read_frame(slot, &mut frame) {
                    ReadFrame::Frame { len, .. } => {
                        assert_eq!(len, 1200);
                        read += 1;
                        break;
                    }
                    ReadFrame::Idle => {
                        assert!(spin.elapsed().as_secs() < 5, "frame {i} never arrived");
                        std::hint::spin_loop();
                    }
                }
            }
        }
        tcp.flush();
    });
    assert_eq!(read, sent);
    assert!(received > 0, "the client got the queued frames");
    assert_eq!(tcp.counters().frames_dropped, 0);
    assert_eq!(
        allocations, 0,
        "allocations on the ICE-TCP path (NO_ALLOC_BACKTRACE=1 shows where)"
    );
}

#[test]
fn recording_does_not_allocate() {
    use ferrosoup_record::assembler::{FrameAssembler, StreamCodec};
    use ferrosoup_record::ivf::{IvfCodec, IvfWriter};
    use ferrosoup_record::ogg::OggOpusWriter;

    const FRAMES: u16 = 600;
    // Writers into buffers big enough for everything (a file would take the bytes).
    let mut video = FrameAssembler::new(StreamCodec::Vp8);
    let mut ivf = IvfWriter::new(
        std::io::Cursor::new(Vec::with_capacity(8 << 20)),
        IvfCodec::Vp8,
    )
    .expect("ivf header");
    let mut audio = FrameAssembler::new(StreamCodec::Opus);
    let mut ogg = OggOpusWriter::new(Vec::with_capacity(8 << 20), 2, 48_000).expect("ogg header");
    let mut first = [0x5au8; 1000];
    let middle = [0x00u8; 1000];
    let last = [0x00u8; 600];
    let opus = [0xfcu8; 120];
    let allocations = allocations_in(|| {
        for f in 0..FRAMES {
            // VP8: three packets a frame, the last two swapped in flight; a keyframe first.
            first[0] = 0x10;
            first[1] = if f == 0 { 0x00 } else { 0x01 };
            let seq = f.wrapping_mul(3);
            let ts = u32::from(f) * 3000;
            for (s, marker, payload) in [
                (seq, false, &first[..]),
                (seq.wrapping_add(2), true, &last[..]),
                (seq.wrapping_add(1), false, &middle[..]),
            ] {
                video
                    .push(s, ts, marker, payload, &mut |ts, frame| {
                        ivf.write_frame(ts, frame)
                    })
                    .expect("video");
            }
            audio
                .push(f, u32::from(f) * 960, false, &opus, &mut |ts, p| {
                    ogg.write_packet(ts, p)
                })
                .expect("audio");
        }
    });
    assert_eq!(ivf.frames(), u32::from(FRAMES));
    assert_eq!(ogg.packets(), u64::from(FRAMES));
    assert_eq!(
        allocations, 0,
        "allocations on the recording path (NO_ALLOC_BACKTRACE=1 shows where)"
    );
}
