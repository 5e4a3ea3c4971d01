//! CPU time of a worker thread, read from `/proc` when asked (Linux): the worker itself
//! only notes its thread id once at start, nothing on its loop.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// Where to read one thread's CPU time.
#[derive(Debug, Default)]
pub struct ThreadCpu {
    /// The kernel's id of the thread (0: not started yet).
    tid: AtomicI32,
}

impl ThreadCpu {
    /// Notes the calling thread as the one to measure.
    pub fn mark_current(&self) {
        // SAFETY: gettid has no preconditions and cannot fail.
        let tid = unsafe { libc::gettid() };
        self.tid.store(tid, Ordering::Relaxed);
    }

    /// User + system CPU time the thread has used (`None`: not started, gone, or no
    /// `/proc`). Resolution: one clock tick (10 ms on Linux).
    pub fn read(&self) -> Option<Duration> {
        let tid = self.tid.load(Ordering::Relaxed);
        if tid == 0 {
            return None;
        }
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
        let ticks = cpu_ticks(&stat)?;
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let per_second = u64::try_from(per_second).ok().filter(|&t| t > 0)?;
        Some(Duration::from_nanos(
            ticks.saturating_mul(1_000_000_000) / per_second,
        ))
    }
}

/// utime + stime (fields 14 and 15, in clock ticks) of a `/proc/.../stat` line. The name
/// (field 2) is in parentheses and may hold spaces or parentheses: fields are counted
/// after its last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_fields_14_and_15_whatever_the_name() {
        let stat = "4242 (ferrosoup-w (0)) S 1 4242 4242 0 -1 4194368 120 0 0 0 \
                    731 269 0 0 20 0 5 0 1234 0 0";
        assert_eq!(cpu_ticks(stat), Some(1000));
        assert_eq!(cpu_ticks("garbage"), None);
        assert_eq!(cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn a_busy_thread_has_cpu_time_an_unmarked_or_gone_one_none() {
        let cpu = std::sync::Arc::new(ThreadCpu::default());
        assert_eq!(cpu.read(), None);
        let marked = cpu.clone();
        let (busy, is_busy) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            marked.mark_current();
            // Work until the kernel has accounted some CPU time to this thread (bounded).
            let mut x = 0u64;
            for _ in 0..10_000 {
                if marked.read().unwrap_or_default() >= Duration::from_millis(30) {
                    break;
                }
                for i in 0..100_000u64 {
                    x = x.wrapping_mul(31).wrapping_add(i);
                }
                std::hint::black_box(x);
            }
            let _ = busy.send(());
            let _ = released.recv();
        });
        is_busy.recv().expect("the thread worked");
        let used = cpu.read().expect("the thread's CPU time");
        assert!(used >= Duration::from_millis(30), "{used:?}");
        release.send(()).expect("the thread waits");
        thread.join().expect("the thread ends");
        assert_eq!(cpu.read(), None, "a thread that ended has no /proc entry");
    }
}
