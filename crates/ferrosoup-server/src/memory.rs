//! The server's memory allocator, jemalloc, and what it reports.
//!
//! Peers come and go, and with them producers' retransmission stores (hundreds of KiB
//! each), consumers and their buffers, allocated on the worker threads. glibc's malloc
//! keeps what they free in per-thread arenas for reuse: after a burst of peers the
//! server's RSS stayed at its peak long after they left (docs/performance.md, "Churn
//! soak"). jemalloc gives freed pages back to the system after a decay time, from
//! background threads, so it happens whether or not the arena is busy.
//!
//! [`MemoryStats`] is jemalloc's own account (bytes the program holds, pages it touched,
//! pages resident), in `GET /api/stats` and `/metrics`.
//!
//! Built without the default feature `jemalloc` (`--no-default-features`), the server uses
//! the system's allocator and reports no [`MemoryStats`]: for comparisons, and for tools
//! that replace the system allocator (valgrind, heaptrack).

use serde::Serialize;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once when it starts (`_RJEM_MALLOC_CONF` in the environment
/// still overrides them):
/// - `background_thread:true`: threads of jemalloc's own return freed pages on time, also
///   from an arena nobody allocates from any more;
/// - `dirty_decay_ms:0`, `muzzy_decay_ms:0`: a freed page goes back to the system at once.
///   The control path frees in bursts (a join, a leave, a `GET /api/stats` document of
///   every room), and with a decay time of a second (jemalloc's default is 10 s) the
///   pages of the last second's bursts stayed resident: 1.0–1.5 MiB of dirty pages at any
///   moment under churn (jemalloc's `malloc_stats_print` at the baseline and the end of a
///   churn run: 262 and 363 dirty pages), enough to put RSS 6 % above where it started
///   after every peer had left. The media path allocates nothing, so giving pages back
///   at once costs no packet anything;
/// - `narenas:1`, `tcache:false`: one arena and no per-thread caches, so objects freed on
///   one thread are not kept for that thread alone, and fewer half-used pages stay behind
///   a burst (1 MiB less RSS after a churn run than with jemalloc's 4 arenas per core and
///   thread caches). The media path allocates nothing, so only the control path (a few
///   allocations per signaling message) takes the arena's lock.
#[cfg(feature = "jemalloc")]
#[used]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 80] =
    b"background_thread:true,dirty_decay_ms:0,muzzy_decay_ms:0,narenas:1,tcache:false\0";

/// jemalloc's account of the process's memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryStats {
    /// Bytes the program holds (allocated and not yet freed): the heap in use.
    pub allocated: u64,
    /// Bytes in the pages that hold them (a page with one live object counts whole).
    pub active: u64,
    /// Bytes of jemalloc's pages resident in memory: active, metadata, and freed pages not
    /// yet given back.
    pub resident: u64,
    /// Bytes of jemalloc's own bookkeeping.
    pub metadata: u64,
}

impl MemoryStats {
    /// Reads the current figures (`None` if jemalloc does not answer, which a build
    /// without its statistics would do).
    #[cfg(feature = "jemalloc")]
    pub fn read() -> Option<Self> {
        use tikv_jemalloc_ctl::{epoch, stats};
        // The figures are cached; advancing the epoch refreshes them.
        epoch::advance().ok()?;
        let read = |r: tikv_jemalloc_ctl::Result<usize>| r.ok().map(|v| v as u64);
        Some(Self {
            allocated: read(stats::allocated::read())?,
            active: read(stats::active::read())?,
            resident: read(stats::resident::read())?,
            metadata: read(stats::metadata::read())?,
        })
    }

    /// With the system's allocator: no figures.
    #[cfg(not(feature = "jemalloc"))]
    pub fn read() -> Option<Self> {
        None
    }

    /// `(name, help, value)` of each figure, for `/api/stats` and `/metrics`.
    pub fn fields(&self) -> [(&'static str, &'static str, u64); 4] {
        [
            (
                "allocated",
                "Bytes of heap in use (jemalloc stats.allocated)",
                self.allocated,
            ),
            (
                "active",
                "Bytes in the allocator's pages holding live objects (jemalloc stats.active)",
                self.active,
            ),
            (
                "resident",
                "Bytes of the allocator's pages resident in memory (jemalloc stats.resident)",
                self.resident,
            ),
            (
                "metadata",
                "Bytes of the allocator's own bookkeeping (jemalloc stats.metadata)",
                self.metadata,
            ),
        ]
    }
}

#[cfg(all(test, feature = "jemalloc"))]
mod tests {
    use super::*;

    #[test]
    fn jemalloc_runs_with_our_options() {
        // The options above took (a misspelt symbol would leave jemalloc's defaults).
        let background: bool = unsafe { tikv_jemalloc_ctl::raw::read(b"opt.background_thread\0") }
            .expect("opt.background_thread");
        let dirty: isize = unsafe { tikv_jemalloc_ctl::raw::read(b"opt.dirty_decay_ms\0") }
            .expect("opt.dirty_decay_ms");
        let muzzy: isize = unsafe { tikv_jemalloc_ctl::raw::read(b"opt.muzzy_decay_ms\0") }
            .expect("opt.muzzy_decay_ms");
        let narenas: u32 =
            unsafe { tikv_jemalloc_ctl::raw::read(b"opt.narenas\0") }.expect("opt.narenas");
        let tcache: bool =
            unsafe { tikv_jemalloc_ctl::raw::read(b"opt.tcache\0") }.expect("opt.tcache");
        if std::env::var_os("_RJEM_MALLOC_CONF").is_none() {
            assert!(background && !tcache);
            assert_eq!((dirty, muzzy, narenas), (0, 0, 1));
        }
    }

    #[test]
    fn stats_follow_allocations() {
        let before = MemoryStats::read().expect("jemalloc stats");
        let big = vec![1u8; 8 << 20];
        let during = MemoryStats::read().expect("jemalloc stats");
        assert!(during.allocated >= before.allocated + (8 << 20) - (1 << 20));
        assert!(during.resident >= during.active && during.active >= during.allocated);
        drop(big);
        let after = MemoryStats::read().expect("jemalloc stats");
        assert!(after.allocated + (8 << 20) - (1 << 20) <= during.allocated);
    }
}
