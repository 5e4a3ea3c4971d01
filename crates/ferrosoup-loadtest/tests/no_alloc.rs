//! The load tester's per-packet receive work for a capped subscriber that sends
//! transport-cc feedback allocates nothing: its link ([`Downlink`]) queues and releases
//! datagrams, the arrival of each transport-wide sequence number is noted
//! ([`TwccRecorder`]) and feedback is written, all into buffers allocated up front. A
//! counting global allocator checks it over 10,000 datagrams after warm-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use ferrosoup_loadtest::downlink::{Downlink, LinkShape, Verdict};
use ferrosoup_loadtest::media::BUF_LEN;
use ferrosoup_rtc::twcc::TwccRecorder;

struct Counting;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    if ENABLED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every method forwards to `System` unchanged; the counting touches only
// const-initialised thread locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` was allocated by `System` through this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Offers `n` datagrams of varying size every 400 µs to a 4 Mbit/s link (more than it
/// carries, so it queues and drops), releases what is due, notes each arrival and writes
/// feedback every 100 ms. Returns the datagrams that arrived.
fn drive(link: &mut Downlink, twcc: &mut TwccRecorder, start: Instant, first: u16, n: u16) -> u64 {
    let mut buf = [0u8; BUF_LEN];
    let mut feedback = [0u8; 1500];
    let datagram = [0x80u8; 1200];
    let mut arrived = 0;
    let mut next_feedback = start + Duration::from_millis(100);
    for i in 0..n {
        let now = start + Duration::from_micros(400 * u64::from(i));
        let len = 200 + usize::from(i) * 131 % 1000;
        // Datagrams arrive in order: number them as they do.
        if link.offer(now, &datagram[..len]) == Verdict::Pass {
            twcc.on_packet(now, first.wrapping_add(arrived as u16));
            arrived += 1;
        }
        while let Some((_, left)) = link.release(now, &mut buf) {
            twcc.on_packet(left, first.wrapping_add(arrived as u16));
            arrived += 1;
        }
        if now >= next_feedback {
            while twcc.has_pending() && twcc.write_feedback(&mut feedback, 1, 2).is_some() {}
            next_feedback += Duration::from_millis(100);
        }
    }
    arrived
}

#[test]
fn a_capped_link_with_feedback_does_not_allocate_per_datagram() {
    let start = Instant::now();
    let shape = LinkShape::new(4000, 3000, Duration::from_millis(300), BUF_LEN);
    let mut link = Downlink::new(shape, start);
    let mut twcc = TwccRecorder::new(start);
    // Warm-up: every buffer reaches its working size.
    let warm = drive(&mut link, &mut twcc, start, 0, 2000);
    ENABLED.with(|e| e.set(true));
    let arrived = drive(
        &mut link,
        &mut twcc,
        start + Duration::from_secs(1),
        warm as u16,
        10_000,
    );
    ENABLED.with(|e| e.set(false));
    let allocations = ALLOCATIONS.with(Cell::get);
    assert!(arrived > 1000, "only {arrived} datagrams arrived");
    assert!(link.counters().dropped > 0 && link.counters().queued > 0);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations for 10,000 datagrams"
    );
}
