//! CPU time and resident memory of a process and its descendants, from `/proc`.
//!
//! CPU is `utime + stime` from `/proc/PID/stat`, in clock ticks of `USER_HZ`, which the Linux
//! ABI fixes at 100 on every architecture we run on. A process "tree" is the PID plus its
//! children (one level is enough for nginx's master and workers).

use std::fs;

/// `USER_HZ`: clock ticks per second in `/proc/PID/stat`.
const TICKS_PER_SEC: f64 = 100.0;
/// Most `/proc` entries scanned when looking for children (bounds the scan).
const MAX_PROC_ENTRIES: usize = 100_000;

/// Fields of `/proc/PID/stat` after the command name: (ppid, utime+stime ticks).
fn stat(pid: u32) -> Option<(u32, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] = state (field 3), so field N is f[N - 3].
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// `pid` and its direct children.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.take(MAX_PROC_ENTRIES).flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if child != pid && stat(child).is_some_and(|(ppid, _)| ppid == pid) {
                out.push(child);
            }
        }
    }
    out
}

/// CPU seconds (user + system) used so far by `pids`.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|p| stat(*p))
        .map(|(_, t)| t as f64)
        .sum::<f64>()
        / TICKS_PER_SEC
}

/// Resident set size of `pids`, summed, in KiB.
pub fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| {
            let s = fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(stat(me).is_some());
        assert!(rss_kib(&[me]) > 0);
        assert!(cpu_seconds(&[me]) >= 0.0);
        assert!(tree(me).contains(&me));
    }
}
