//! The media path must not allocate per packet: a counting global allocator around the
//! worker's per-packet work (unprotect, parse, producer-side tracking, then decide,
//! rewrite and protect for each consumer) for 1000 packets after warm-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

#[path = "../fixture/mod.rs"]
mod fixture;

/// Counts the allocations of the thread that enabled counting, then defers to `System`.
struct Counting;

thread_local! {
    /// Whether allocations on this thread are counted now.
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    /// Allocations counted on this thread.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the allocator can run while the thread's locals are torn down.
    let _ = ENABLED.try_with(|enabled| {
        if enabled.get() {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// counting touches only const-initialised thread locals, which never allocate.
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
static ALLOCATOR: Counting = Counting;

/// Allocations made by this thread while `f` runs.
fn allocations_in(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    ENABLED.with(|e| e.set(true));
    f();
    ENABLED.with(|e| e.set(false));
    ALLOCATIONS.with(|n| n.get())
}

#[test]
fn counting_allocator_sees_allocations() {
    // Guards the test below against an allocator that counts nothing.
    let n = allocations_in(|| {
        std::hint::black_box(vec![1u8; 64]);
    });
    assert_eq!(n, 1);
}

#[test]
fn forwarding_a_packet_to_many_consumers_does_not_allocate() {
    const CONSUMERS: usize = 10;
    for (name, profile) in fixture::PROFILES {
        let t0 = Instant::now();
        let (mut producer, mut worker) = fixture::media_path(profile, CONSUMERS, t0);
        for _ in 0..100 {
            assert_eq!(worker.handle(t0, &mut producer.next(false)), CONSUMERS);
        }
        // Keyframes now and then, and a packet lost upstream every 100 (NACK tracking and
        // an output gap), prepared before counting.
        let mut packets: Vec<fixture::Datagram> = (1..=1000)
            .map(|i| {
                if i % 100 == 0 {
                    producer.next(false);
                }
                producer.next(i % 250 == 0)
            })
            .collect();
        let mut forwarded = 0;
        let allocations = allocations_in(|| {
            for (i, d) in packets.iter_mut().enumerate() {
                let now = t0 + Duration::from_millis(i as u64);
                forwarded += worker.handle(now, d);
            }
        });
        assert_eq!(
            forwarded,
            1000 * CONSUMERS,
            "{name}: every packet forwarded"
        );
        assert_eq!(allocations, 0, "{name}: allocations on the media path");
    }
}
