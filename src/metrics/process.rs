//! The standard `process_*` metrics, read from `/proc/self` at scrape time (Linux; elsewhere
//! they are left out): resident and virtual memory, open and maximum file descriptors, CPU
//! time, start time.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::{counter_f64, gauge};

/// Clock ticks per second of `/proc/self/stat`'s CPU times (`USER_HZ`): 100 on every Linux
/// architecture the kernel exports to user space as such (the value is fixed by the ABI).
const USER_HZ: f64 = 100.0;

/// The process figures, as read in one scrape.
#[derive(Debug, Default, PartialEq)]
pub struct Sample {
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub start_time_seconds: Option<f64>,
}

impl Sample {
    /// Reads `/proc/self`; what cannot be read stays `None`.
    pub fn read() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields = stat_fields(&stat);
        let cpu = match (field(&fields, 14), field(&fields, 15)) {
            (Some(u), Some(s)) => Some((u + s) as f64 / USER_HZ),
            _ => None,
        };
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
        let start = match (boot, field(&fields, 22)) {
            (Some(b), Some(ticks)) => Some(b as f64 + ticks as f64 / USER_HZ),
            _ => None,
        };
        Self {
            resident_bytes: status_kib(&status, "VmRSS:").map(|k| k * 1024),
            virtual_bytes: status_kib(&status, "VmSize:").map(|k| k * 1024),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            max_fds: std::fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|l| max_open_files(&l)),
            cpu_seconds: cpu,
            start_time_seconds: start,
        }
    }
}

/// `/proc/self/stat`'s fields, numbered as in proc(5) from 1 (`pid`); the command name (2)
/// may hold spaces and parentheses, so the fields after it are split from its last `)`.
fn stat_fields(stat: &str) -> Vec<&str> {
    match stat.rfind(')') {
        Some(i) => {
            let mut v = vec!["", ""];
            v.extend(stat[i + 1..].split_whitespace());
            v
        }
        None => Vec::new(),
    }
}

/// Field `n` (1-based, as in proc(5)) as a number.
fn field(fields: &[&str], n: usize) -> Option<u64> {
    fields.get(n - 1).and_then(|f| f.parse().ok())
}

/// A `Key:   1234 kB` line of `/proc/self/status`, in KiB.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Encodes the process metrics on every scrape.
#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = Sample::read();
        if let Some(v) = s.resident_bytes {
            gauge(
                &mut enc,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                v,
            )?;
        }
        if let Some(v) = s.virtual_bytes {
            gauge(
                &mut enc,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                v,
            )?;
        }
        if let Some(v) = s.open_fds {
            gauge(
                &mut enc,
                "process_open_fds",
                "Number of open file descriptors.",
                v,
            )?;
        }
        if let Some(v) = s.max_fds {
            gauge(
                &mut enc,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                v,
            )?;
        }
        if let Some(v) = s.cpu_seconds {
            counter_f64(
                &mut enc,
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                v,
            )?;
        }
        if let Some(v) = s.start_time_seconds {
            gauge(
                &mut enc,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                v,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 \
                    12345 1000 200 18446744073709551615";
        let f = stat_fields(stat);
        assert_eq!(field(&f, 3), None, "state is not a number");
        assert_eq!((field(&f, 14), field(&f, 15)), (Some(250), Some(50)));
        assert_eq!(field(&f, 22), Some(12345));
        assert_eq!(
            status_kib("Name:\tx\nVmRSS:\t  2048 kB\n", "VmRSS:"),
            Some(2048)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[test]
    fn reads_this_process() {
        let s = Sample::read();
        assert!(s.resident_bytes.is_some_and(|v| v > 0));
        assert!(s.open_fds.is_some_and(|v| v >= 3));
        assert!(s.max_fds.is_some_and(|v| v >= s.open_fds.unwrap_or(0)));
        assert!(s.cpu_seconds.is_some());
        assert!(s.start_time_seconds.is_some_and(|v| v > 1.0e9));
    }
}
