//! The pipes spliced bodies move through, reused through a bounded pool.
//!
//! A pipe is a kernel buffer: its pages are the file descriptor limit's and the user's pipe
//! quota's (`fs.pipe-user-pages-soft`), so the pool caps how many are in use at once (past it,
//! a body takes the copying path and is counted). A pipe comes back to the pool only empty: one
//! left with bytes in it (the viewer went mid-body) would hand them to the next body, so it is
//! closed instead.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use rustix::pipe::{fcntl_getpipe_size, fcntl_setpipe_size, pipe_with, PipeFlags};

/// The capacity asked for each pipe: a few socket buffers' worth per `splice` call, so a bulk
/// body costs few wake-ups, while a thousand busy pipes stay within the default per-user quota
/// (`fs.pipe-user-pages-soft`, 64 MiB). A refused size keeps the kernel's default (64 KiB).
pub const PIPE_SIZE: usize = 256 * 1024;

/// One pipe: its read end (towards the viewer) and write end (from the node).
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Its capacity as the kernel granted it.
    capacity: usize,
}

impl Pipe {
    /// A non-blocking, close-on-exec pipe of `size` bytes (or the default size, if refused).
    pub fn new(size: usize) -> std::io::Result<Self> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        if let Err(e) = fcntl_setpipe_size(&write, size) {
            tracing::debug!(error = %e, size, "pipe size refused; the default size is used");
        }
        let capacity = fcntl_getpipe_size(&write)?;
        Ok(Self {
            read,
            write,
            capacity,
        })
    }

    pub fn read_end(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    pub fn write_end(&self) -> BorrowedFd<'_> {
        self.write.as_fd()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Why a proxied answer took the copying path. Bounded: these are the `reason` label values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// The viewer's connection is TLS (its bytes are encrypted in user space).
    Tls,
    /// The viewer's connection is HTTP/2 (frames, flow control).
    Http2,
    /// Not a GET (HEAD has no body; other methods are not bulk downloads).
    Method,
    /// A `cache = ...` route: the cache keeps the bytes.
    Cache,
    /// The answer is rewritten (playlist signing, any other transformation).
    Transform,
    /// The answer has no body.
    NoBody,
    /// The node's answer cannot be spliced (HTTP/2 or TLS to the node, or a transport that
    /// does not own its connection).
    Source,
    /// Every pipe the pool allows is in use, or a pipe could not be made.
    Pipes,
    /// The connection still drains an earlier body's pipe (a pipelined request).
    Busy,
}

impl Fallback {
    const ALL: [Fallback; 9] = [
        Fallback::Tls,
        Fallback::Http2,
        Fallback::Method,
        Fallback::Cache,
        Fallback::Transform,
        Fallback::NoBody,
        Fallback::Source,
        Fallback::Pipes,
        Fallback::Busy,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Fallback::Tls => "tls",
            Fallback::Http2 => "http2",
            Fallback::Method => "method",
            Fallback::Cache => "cache",
            Fallback::Transform => "transform",
            Fallback::NoBody => "no_body",
            Fallback::Source => "source",
            Fallback::Pipes => "pipes",
            Fallback::Busy => "busy",
        }
    }
}

/// What `/metrics` says about spliced bodies.
#[derive(Debug, Default)]
pub struct Stats {
    /// Bodies that started on the spliced path.
    pub bodies: AtomicU64,
    /// Bytes spliced from a pipe to a viewer's socket.
    pub bytes: AtomicU64,
    /// Proxied answers that took the copying path, by [`Fallback`] (in `Fallback::ALL` order).
    fallbacks: [AtomicU64; 9],
}

impl Stats {
    pub fn fallback(&self, why: Fallback) {
        let i = Fallback::ALL.iter().position(|f| *f == why).unwrap_or(0);
        self.fallbacks[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn fallbacks(&self, why: Fallback) -> u64 {
        let i = Fallback::ALL.iter().position(|f| *f == why).unwrap_or(0);
        self.fallbacks[i].load(Ordering::Relaxed)
    }
}

/// A bounded pool of pipes: at most `limit` in use, the idle ones kept for the next body.
#[derive(Debug)]
pub struct Pipes {
    limit: usize,
    size: usize,
    in_use: AtomicUsize,
    /// Empty pipes waiting for a body; never more than `limit` (in use and idle together).
    idle: Mutex<Vec<Pipe>>,
    pub stats: Stats,
}

impl Pipes {
    /// A pool of at most `limit` pipes in use at once, each of `size` bytes.
    pub fn new(limit: usize, size: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            size,
            in_use: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            stats: Stats::default(),
        })
    }

    /// An empty pipe for one body, or `None` when `limit` pipes are in use (or none can be
    /// made: out of descriptors).
    pub fn acquire(self: &Arc<Self>) -> Option<Lease> {
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()?;
        let reused = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let pipe = match reused {
            Some(p) => p,
            None => match Pipe::new(self.size) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot make a pipe; copying instead");
                    self.in_use.fetch_sub(1, Ordering::AcqRel);
                    return None;
                }
            },
        };
        Some(Lease {
            pipe: Some(pipe),
            pool: self.clone(),
            held: 0,
        })
    }

    /// Pipes in use now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Acquire)
    }

    /// Empty pipes kept for reuse.
    #[cfg(test)]
    pub fn idle(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Reads the counters at scrape time, under the `streamgate_` prefix.
    pub fn collector(self: &Arc<Self>) -> PipesCollector {
        PipesCollector(Arc::downgrade(self))
    }
}

/// A pipe lent to one body, with the count of body bytes in it. Dropped empty, the pipe goes
/// back to the pool; dropped with bytes in it, it is closed.
#[derive(Debug)]
pub struct Lease {
    pipe: Option<Pipe>,
    pool: Arc<Pipes>,
    /// Body bytes spliced into the pipe and not yet out to the viewer.
    pub held: usize,
}

impl Lease {
    pub fn pipe(&self) -> Option<&Pipe> {
        self.pipe.as_ref()
    }

    pub fn stats(&self) -> &Stats {
        &self.pool.stats
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(pipe) = self.pipe.take() {
            if self.held == 0 {
                let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
                if idle.len() < self.pool.limit {
                    idle.push(pipe);
                }
            }
            // Otherwise dropped here: bytes of a broken body never reach another viewer.
        }
        self.pool.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `/metrics`: spliced bodies and bytes, fallbacks by reason, pipes in use.
#[derive(Debug)]
pub struct PipesCollector(std::sync::Weak<Pipes>);

impl Collector for PipesCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = self.0.upgrade() else {
            return Ok(());
        };
        crate::metrics::counter(
            &mut enc,
            "splice_bodies",
            "Proxied answer bodies moved node socket -> pipe -> viewer socket with splice(2), \
             never through user space",
            p.stats.bodies.load(Ordering::Relaxed),
        )?;
        crate::metrics::counter(
            &mut enc,
            "splice_bytes",
            "Body bytes spliced from a pipe to a viewer's socket",
            p.stats.bytes.load(Ordering::Relaxed),
        )?;
        let mut m = enc.encode_descriptor(
            "splice_fallbacks",
            "Proxied answers that took the copying path, by reason: tls, http2 (viewer \
             connection), method (not a GET), cache, transform (rewritten answer), no_body, \
             source (the node's answer cannot be spliced), pipes (pool limit reached), busy \
             (the connection still drains an earlier body)",
            None,
            MetricType::Counter,
        )?;
        for f in Fallback::ALL {
            m.encode_family(&[("reason", f.label())])?
                .encode_counter::<NoLabelSet, _, u64>(&p.stats.fallbacks(f), None)?;
        }
        crate::metrics::gauge(
            &mut enc,
            "splice_pipes_in_use",
            "Pipes lent to spliced bodies now ([server] splice_pipes is the limit)",
            p.in_use() as u64,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_lends_at_most_its_limit_and_reuses_empty_pipes() {
        let pool = Pipes::new(2, PIPE_SIZE);
        let a = pool.acquire().expect("first");
        let b = pool.acquire().expect("second");
        assert!(pool.acquire().is_none(), "the limit holds");
        assert_eq!(pool.in_use(), 2);
        assert!(a.pipe().expect("pipe").capacity() >= 64 * 1024);
        drop(a);
        assert_eq!(
            (pool.in_use(), pool.idle()),
            (1, 1),
            "an empty pipe is kept"
        );
        let mut c = pool.acquire().expect("reused");
        c.held = 10;
        drop(c);
        drop(b);
        assert_eq!(
            (pool.in_use(), pool.idle()),
            (0, 1),
            "a pipe with bytes in it is closed, not reused"
        );
    }
}
