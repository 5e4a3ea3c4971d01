//! CPU and memory figures: the load tester's own CPU time, and the server's CPU and RSS
//! from `/proc` when it runs on this machine (found by pid, by listening port or by name).

use std::path::Path;
use std::time::Duration;

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// CPU time consumed by the calling thread.
pub fn thread_cpu_time() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time consumed by this process (all threads).
pub fn process_cpu_time() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// Clock ticks per second of `/proc/*/stat` times.
fn ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// User + system CPU time so far.
    pub cpu: Duration,
    /// Resident set size (`VmRSS`).
    pub rss_bytes: u64,
    /// Its anonymous part (`RssAnon`: heap, stacks; without the binary's and libraries'
    /// pages), when the kernel reports it.
    pub rss_anon_bytes: Option<u64>,
    /// Time its threads spent runnable but waiting for a CPU (scheduler run-queue delay),
    /// summed over its threads; zero when the kernel keeps no schedstats.
    pub run_delay: Duration,
}

/// Run-queue delay (second field of a `schedstat` file, in nanoseconds).
pub fn parse_schedstat_delay(schedstat: &str) -> Option<Duration> {
    let ns: u64 = schedstat.split_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Run-queue delay of the calling thread so far.
pub fn thread_run_delay() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| parse_schedstat_delay(&s))
        .unwrap_or_default()
}

/// Run-queue delay of all threads of `pid` so far.
fn process_run_delay(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| parse_schedstat_delay(&s))
        .sum()
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`; `None` when the process is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ticks = parse_stat_cpu_ticks(&stat)?;
    let per_sec = ticks_per_second();
    Some(ProcSample {
        cpu: Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / per_sec),
        rss_bytes: parse_status_rss(&status)?,
        rss_anon_bytes: parse_status_kib(&status, "RssAnon:"),
        run_delay: process_run_delay(pid),
    })
}

/// `utime + stime` (fields 14 and 15) of a `/proc/PID/stat` line. The command name may
/// contain spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` of a `/proc/PID/status` file, in bytes.
pub fn parse_status_rss(status: &str) -> Option<u64> {
    parse_status_kib(status, "VmRSS:")
}

/// A `kB` field (named with its colon, e.g. `RssAnon:`) of a `/proc/PID/status` file, in
/// bytes.
pub fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Socket inode of the TCP socket listening on `port` in a `/proc/net/tcp{,6}` table.
pub fn parse_listen_inode(table: &str, port: u16) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local = f.get(1)?;
        let state = f.get(3)?;
        let inode = f.get(9)?;
        let (_, port_hex) = local.rsplit_once(':')?;
        (*state == "0A" && u16::from_str_radix(port_hex, 16).ok()? == port)
            .then(|| inode.parse().ok())
            .flatten()
    })
}

/// The pid of the local process listening on TCP `port`, if it is visible to us.
pub fn find_pid_by_port(port: u16) -> Option<u32> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|t| parse_listen_inode(&t, port))?;
    let needle = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l == Path::new(&needle)) {
                return Some(pid);
            }
        }
    }
    None
}

/// The pid of the (first) process whose command name is `name`.
pub fn find_pid_by_name(name: &str) -> Option<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect();
    pids.sort_unstable();
    pids.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "4242 (ferro soup) (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 50 0 0 20 0 9 0 123 456789 1234 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(300));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn schedstat_delay() {
        assert_eq!(
            parse_schedstat_delay("123456 789000 42\n"),
            Some(Duration::from_micros(789))
        );
        assert_eq!(parse_schedstat_delay("1"), None);
    }

    #[test]
    fn rss_in_bytes() {
        let status =
            "Name:\tferrosoup\nVmPeak:\t  9000 kB\nVmRSS:\t   2048 kB\nRssAnon:\t   512 kB\n";
        assert_eq!(parse_status_rss(status), Some(2048 * 1024));
        assert_eq!(parse_status_kib(status, "RssAnon:"), Some(512 * 1024));
        assert_eq!(parse_status_rss("Name: x\n"), None);
    }

    #[test]
    fn listening_socket_inode() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0 100 0 0 10 0\n   \
            1: 0100007F:0BB8 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 31338 1 0 20 4 30 10 -1\n";
        assert_eq!(parse_listen_inode(table, 3000), Some(31337));
        assert_eq!(parse_listen_inode(table, 3001), None);
    }

    #[test]
    fn own_process_is_readable() {
        let me = sample(std::process::id()).expect("our own /proc entry");
        assert!(me.rss_bytes > 0);
        assert!(process_cpu_time() >= thread_cpu_time());
    }
}
