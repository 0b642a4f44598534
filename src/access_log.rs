//! The access log: one line per request, as `key=value` text or JSON, to stderr or a file.
//!
//! Request tasks never touch the disk, and format nothing: a finished request hands a compact
//! [`Entry`] (owned or reference-counted values: the client's target copied once, the request
//! id's bytes shared, the node's record shared) to a bounded channel ([`QUEUE_LINES`]) without
//! waiting. A dedicated writer thread drains the channel, removes credentials from the query,
//! formats each line straight into one buffer, and writes the batch in one call. Once a line has
//! come, the writer lets more gather for [`GATHER`] (20 ms) without waiting on the channel, so a
//! busy gateway's requests wake nobody and a write carries hundreds of lines. When the writer
//! falls behind (a slow disk) and the channel is full, the entry is dropped and counted
//! ([`AccessSink::dropped`], `streamgate_access_log_dropped_lines_total` in `/metrics`); the writer
//! reports the running total as a warning.
//!
//! A file is opened in append mode at start (an unwritable path stops the start) and reopened
//! on SIGUSR1, so `logrotate` can rename it and signal: lines written before the signal land in
//! the renamed file, later ones in a new file at the configured path.
//!
//! The field names are stable and documented in docs/operations.md ("Access log"). Whether a
//! line is written at all also follows `RUST_LOG` for the `access` target, as before
//! (`RUST_LOG=warn` turns it off; `RUST_LOG=warn,access=info` keeps it).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method};
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{AccessTarget, LogFormat, LogSettings};

/// Entries the channel holds before new ones are dropped (about 6 MB at worst: an [`Entry`]
/// is some 330 bytes plus its target).
pub const QUEUE_LINES: usize = 16 * 1024;
/// Most bytes the writer gathers into one write.
const BATCH_BYTES: usize = 64 * 1024;
/// How long the writer lets lines gather once one has come: how late a line may reach the file.
/// At 150k requests a second that is 3,000 lines, well within [`QUEUE_LINES`].
const GATHER: Duration = Duration::from_millis(20);
/// How long shutdown waits for the writer to write what is queued.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// One request as the access log records it.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    /// When the line was written (the request's end), RFC 3339 UTC.
    pub ts: String,
    /// The client's address (the real one: see `client_addr`).
    pub client: IpAddr,
    /// The connection's peer: the TCP peer, or the PROXY header's source (address and port).
    pub peer: std::net::SocketAddr,
    pub method: &'a str,
    /// Path and query, credentials removed.
    pub path: &'a str,
    /// The status sent; 499 when the client left before the answer.
    pub status: u16,
    /// Body bytes handed to the connection.
    pub bytes: u64,
    /// Milliseconds from the request's arrival to the line.
    pub ms: u64,
    /// The node that served (or failed) it; `None` when no node was involved.
    pub node: Option<&'a str>,
    pub request_id: &'a str,
    /// `redirect`, `proxy` or `live` (what an `auto` route chose); `None` before a route acted.
    pub decision: Option<&'a str>,
    /// The whole answer was handed to the connection.
    pub complete: bool,
    /// Why the response ended when something other than its own end closed it (`client`,
    /// `send_timeout`, `slow_viewer`, `kicked`, `shutdown`, `upstream`), or `stream_end` for a
    /// live stream that ended; `None` for an answer that completed by itself.
    pub closed: Option<&'static str>,
    pub error: Option<&'a str>,
    /// Where the error came from (`downstream`, `upstream`, `internal`).
    pub side: Option<&'a str>,
    /// How the answer went out: `http`, or `ws` for a WebSocket-FLV session.
    pub proto: &'static str,
    /// A WebSocket session's close code, sent or echoed (`None` for HTTP, or no close frame).
    pub ws_close: Option<u16>,
    /// The HLS session the request came with or opened (`hls_session` routes).
    pub session: Option<&'a str>,
}

impl Record<'_> {
    /// The line in `format`, newline included.
    #[cfg(test)]
    pub fn line(&self, format: LogFormat) -> String {
        let mut out = Vec::with_capacity(256);
        self.write_to(format, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the line in `format`, newline included, to `out` (the writer's batch).
    pub fn write_to(&self, format: LogFormat, out: &mut Vec<u8>) {
        match format {
            LogFormat::Json => {
                let start = out.len();
                if serde_json::to_writer(&mut *out, self).is_err() {
                    out.truncate(start);
                    out.extend_from_slice(b"{}");
                }
                out.push(b'\n');
            }
            // The shape the process's other logs have (tracing's fmt), with the fields the
            // access line always had first: tools that read them keep working. Writing to a
            // `Vec` cannot fail.
            LogFormat::Text => drop(writeln!(
                out,
                "{}  INFO access: method={} path={} status={} bytes={} ms={} node={} request_id={} complete={} error={:?} side={:?} decision={} closed={:?} client={} peer={} proto={} ws_close={} session={}",
                self.ts,
                self.method,
                self.path,
                self.status,
                self.bytes,
                self.ms,
                self.node.unwrap_or(""),
                self.request_id,
                self.complete,
                self.error.unwrap_or(""),
                self.side.unwrap_or(""),
                self.decision.unwrap_or(""),
                self.closed.unwrap_or(""),
                self.client,
                self.peer,
                self.proto,
                self.ws_close.unwrap_or(0),
                self.session.unwrap_or(""),
            )),
        }
    }
}

/// Who served a request, as the access line names it: shared with the registry when it is a
/// node's record (no copy of its id per request).
#[derive(Debug, Clone, Default)]
pub enum NodeName {
    /// No node was involved.
    #[default]
    None,
    Node(Arc<crate::registry::Node>),
    Name(String),
}

impl NodeName {
    fn as_str(&self) -> Option<&str> {
        match self {
            Self::None => None,
            Self::Node(n) => Some(n.id.as_str()),
            Self::Name(s) => (!s.is_empty()).then_some(s.as_str()),
        }
    }
}

/// One finished request as the request path hands it to the writer: what the line needs, owned
/// or reference-counted, nothing formatted. The writer makes the [`Record`] and its line.
#[derive(Debug)]
pub struct Entry {
    /// When the request ended (the line's `ts`).
    pub at: SystemTime,
    pub client: IpAddr,
    pub peer: SocketAddr,
    pub method: Method,
    /// Path and query as the client sent them: the writer removes the credentials.
    pub target: String,
    pub status: u16,
    pub bytes: u64,
    pub ms: u64,
    pub node: NodeName,
    pub request_id: HeaderValue,
    /// Empty: none.
    pub decision: &'static str,
    pub complete: bool,
    pub closed: Option<&'static str>,
    pub error: Option<String>,
    /// Empty: none.
    pub side: &'static str,
    pub proto: &'static str,
    pub ws_close: Option<u16>,
    /// Empty: none.
    pub session: String,
}

impl Entry {
    /// Appends the entry's line in `format` to `out`.
    #[cfg(test)]
    pub fn write_to(&self, format: LogFormat, out: &mut Vec<u8>) {
        self.write_with(format, out, &mut Clock::default());
    }

    /// [`Entry::write_to`], with the writer's `clock` (the timestamp's date and time are
    /// formatted once per second, not once per line).
    fn write_with(&self, format: LogFormat, out: &mut Vec<u8>, clock: &mut Clock) {
        let (path, query) = match self.target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (self.target.as_str(), None),
        };
        let path = match crate::upstream_path::strip_secrets(query) {
            Some(q) => std::borrow::Cow::Owned(format!("{path}?{q}")),
            None => std::borrow::Cow::Borrowed(path),
        };
        match format {
            LogFormat::Text => self.write_text(&path, out, clock),
            LogFormat::Json => {
                let mut ts = Vec::with_capacity(TS_LEN);
                clock.write(self.at, &mut ts);
                self.record(String::from_utf8(ts).unwrap_or_default(), &path)
                    .write_to(format, out)
            }
        }
    }

    /// The [`Record`] of this entry, with `path` as its (credential-free) path.
    fn record<'a>(&'a self, ts: String, path: &'a str) -> Record<'a> {
        let some = |s: &'static str| (!s.is_empty()).then_some(s);
        Record {
            ts,
            client: self.client,
            peer: self.peer,
            method: self.method.as_str(),
            path,
            status: self.status,
            bytes: self.bytes,
            ms: self.ms,
            node: self.node.as_str(),
            request_id: self.request_id.to_str().unwrap_or_default(),
            decision: some(self.decision),
            complete: self.complete,
            closed: self.closed,
            error: self.error.as_deref(),
            side: some(self.side),
            proto: self.proto,
            ws_close: self.ws_close,
            session: (!self.session.is_empty()).then_some(self.session.as_str()),
        }
    }

    /// The text line, written field by field into `out`: the same bytes as
    /// [`Record::write_to`]'s `writeln!` (a unit test holds the two together), without the
    /// formatting machinery, which cost several times the rest of a redirect.
    fn write_text(&self, path: &str, out: &mut Vec<u8>, clock: &mut Clock) {
        clock.write(self.at, out);
        out.extend_from_slice(b"  INFO access: method=");
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.extend_from_slice(b" path=");
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" status=");
        push_u64(out, u64::from(self.status));
        out.extend_from_slice(b" bytes=");
        push_u64(out, self.bytes);
        out.extend_from_slice(b" ms=");
        push_u64(out, self.ms);
        out.extend_from_slice(b" node=");
        out.extend_from_slice(self.node.as_str().unwrap_or("").as_bytes());
        out.extend_from_slice(b" request_id=");
        out.extend_from_slice(self.request_id.to_str().unwrap_or_default().as_bytes());
        out.extend_from_slice(if self.complete {
            b" complete=true error="
        } else {
            b" complete=false error="
        });
        push_debug_str(out, self.error.as_deref().unwrap_or(""));
        out.extend_from_slice(b" side=");
        push_debug_str(out, self.side);
        out.extend_from_slice(b" decision=");
        out.extend_from_slice(self.decision.as_bytes());
        out.extend_from_slice(b" closed=");
        push_debug_str(out, self.closed.unwrap_or(""));
        out.extend_from_slice(b" client=");
        push_ip(out, self.client);
        out.extend_from_slice(b" peer=");
        match self.peer {
            SocketAddr::V4(a) => {
                push_ip(out, IpAddr::V4(*a.ip()));
                out.push(b':');
                push_u64(out, u64::from(a.port()));
            }
            SocketAddr::V6(a) => drop(write!(out, "{a}")),
        }
        out.extend_from_slice(b" proto=");
        out.extend_from_slice(self.proto.as_bytes());
        out.extend_from_slice(b" ws_close=");
        push_u64(out, u64::from(self.ws_close.unwrap_or(0)));
        out.extend_from_slice(b" session=");
        out.extend_from_slice(self.session.as_bytes());
        out.push(b'\n');
    }
}

/// `n` in decimal.
fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `n` in decimal, at least `width` digits (zero-padded).
fn push_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(n).as_bytes();
    out.extend(std::iter::repeat_n(
        b'0',
        width.saturating_sub(digits.len()),
    ));
    out.extend_from_slice(digits);
}

/// An address as `Display` writes it: IPv4 by hand, IPv6 (rare here) through `fmt`.
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(o));
            }
        }
        IpAddr::V6(v6) => drop(write!(out, "{v6}")),
    }
}

/// `s` as `{:?}` writes it: quoted as is when it is plain printable ASCII without quotes or
/// backslashes (nearly always), else through `fmt`'s escaping.
fn push_debug_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        drop(write!(out, "{s:?}"));
    }
}

/// Length of an [`rfc3339`] timestamp.
const TS_LEN: usize = 27;

/// The writer's timestamp cache: the date and time of the last second a line was written in,
/// formatted once (`2024-05-01T12:00:00.`); a line adds its microseconds.
#[derive(Default)]
struct Clock {
    /// The cached second, if any.
    secs: Option<u64>,
    prefix: Vec<u8>,
}

impl Clock {
    /// Appends `t` as [`rfc3339`] formats it.
    fn write(&mut self, t: SystemTime, out: &mut Vec<u8>) {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        if self.secs != Some(d.as_secs()) {
            let secs = d.as_secs() as i64;
            let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
            let (y, m, day) = civil_from_days(days);
            self.prefix.clear();
            let p = &mut self.prefix;
            if (0..=9999).contains(&y) {
                push_padded(p, y as u64, 4);
            } else {
                drop(write!(p, "{y:04}"));
            }
            for (sep, n) in [
                (b'-', u64::from(m)),
                (b'-', u64::from(day)),
                (b'T', (rem / 3600) as u64),
                (b':', (rem % 3600 / 60) as u64),
                (b':', (rem % 60) as u64),
            ] {
                p.push(sep);
                push_padded(p, n, 2);
            }
            p.push(b'.');
            self.secs = Some(d.as_secs());
        }
        out.extend_from_slice(&self.prefix);
        push_padded(out, u64::from(d.subsec_micros()), 6);
        out.push(b'Z');
    }
}

// Lines are nearly every message: boxing them would cost a request an allocation to save queue
// slots the rare `Reopen` and `Close` do not need.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Line(Entry),
    /// SIGUSR1: reopen the file (the flag is set too, in case the channel was full).
    Reopen,
    /// Shutdown: write what is queued, then say so.
    Close(oneshot::Sender<()>),
}

/// The access log's sending side, shared by every request.
pub struct AccessSink {
    tx: mpsc::Sender<Msg>,
    /// Entries dropped because the queue was full (shared with `/metrics`).
    dropped: Counter,
    /// The process's shutdown: a response cut after it is logged `closed=shutdown`.
    shutdown: CancellationToken,
}

impl AccessSink {
    /// Opens the destination and starts the writer; `None` when the log is off. Must run
    /// inside the runtime (the SIGUSR1 listener is a task; it stops with `shutdown`).
    pub fn start(
        settings: &LogSettings,
        shutdown: &CancellationToken,
    ) -> std::io::Result<Option<Arc<Self>>> {
        let out = match &settings.access {
            AccessTarget::Off => return Ok(None),
            AccessTarget::Stderr => Out::Stderr,
            AccessTarget::File(path) => Out::File {
                file: open(path).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("log.access: cannot open {}: {e}", path.display()),
                    )
                })?,
                path: path.clone(),
            },
        };
        let (tx, rx) = mpsc::channel(QUEUE_LINES);
        let dropped = Counter::default();
        let reopen = Arc::new(AtomicBool::new(false));
        // Listened for with stderr too (reopening is then a no-op): a logrotate script that
        // signals must not kill the gateway, as SIGUSR1's default action would.
        spawn_reopen_listener(tx.downgrade(), reopen.clone(), shutdown.clone());
        let writer = Writer {
            rx,
            out,
            format: settings.format,
            dropped: dropped.clone(),
            reopen,
            reported: 0,
        };
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run())?;
        Ok(Some(Arc::new(Self {
            tx,
            dropped,
            shutdown: shutdown.clone(),
        })))
    }

    /// Queues `entry` for the writer; never waits (a full queue drops and counts it).
    pub fn write(&self, entry: Entry) {
        if self.tx.try_send(Msg::Line(entry)).is_err() {
            self.dropped.inc();
        }
    }

    /// Lines dropped because the writer could not keep up (or had stopped).
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// The dropped-lines counter, for `/metrics`.
    pub fn dropped_counter(&self) -> Counter {
        self.dropped.clone()
    }

    /// Whether the process is shutting down (a response cut now is `closed=shutdown`).
    pub fn shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Writes what is queued and stops the writer (shutdown), waiting at most [`CLOSE_WAIT`].
    pub async fn close(&self) {
        let (ack, done) = oneshot::channel();
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            if self.tx.send(Msg::Close(ack)).await.is_ok() {
                let _ = done.await;
            }
        })
        .await;
    }
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
}

#[cfg(unix)]
fn spawn_reopen_listener(
    tx: mpsc::WeakSender<Msg>,
    reopen: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr1 = match signal(SignalKind::user_defined1()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGUSR1: the access log will not be reopened");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                s = usr1.recv() => if s.is_none() { return },
            }
            reopen.store(true, Ordering::Relaxed);
            match tx.upgrade() {
                Some(tx) => {
                    let _ = tx.try_send(Msg::Reopen);
                }
                None => return,
            }
        }
    });
}

#[cfg(not(unix))]
fn spawn_reopen_listener(_: mpsc::WeakSender<Msg>, _: Arc<AtomicBool>, _: CancellationToken) {}

/// Where the writer writes.
enum Out {
    Stderr,
    File {
        path: PathBuf,
        file: std::fs::File,
    },
    /// Each write's bytes, kept (tests).
    #[cfg(test)]
    Memory(Arc<std::sync::Mutex<Vec<Vec<u8>>>>),
}

impl Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            // Under stderr's lock, as the other logs write: lines never interleave.
            Self::Stderr => std::io::stderr().lock().write_all(buf),
            Self::File { file, .. } => file.write_all(buf),
            #[cfg(test)]
            Self::Memory(writes) => {
                writes
                    .lock()
                    .map_err(|_| std::io::Error::other("poisoned"))?
                    .push(buf.to_vec());
                Ok(())
            }
        }
    }

    fn reopen(&mut self) {
        if let Self::File { path, file } = self {
            match open(path) {
                Ok(f) => {
                    *file = f;
                    tracing::info!(path = %path.display(), "access log reopened");
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot reopen the access log; writing on to the old file")
                }
            }
        }
    }
}

/// The writer thread's state.
struct Writer {
    rx: mpsc::Receiver<Msg>,
    out: Out,
    format: LogFormat,
    dropped: Counter,
    reopen: Arc<AtomicBool>,
    /// `dropped` when it was last reported.
    reported: u64,
}

impl Writer {
    fn run(mut self) {
        let mut buf = Vec::with_capacity(BATCH_BYTES);
        let mut clock = Clock::default();
        // Ends when every sender is gone (the gateway was dropped) or on `Close`.
        while let Some(first) = self.rx.blocking_recv() {
            // Not waiting on the channel while lines gather: a request's `try_send` then wakes
            // nobody (no futex call), and the lines of the window go out in one write. Waking
            // per line cost a `futex` and a `write` per request (strace: 0.55 and 0.72 per
            // redirect at 73k/s), a third of a redirect's CPU.
            std::thread::sleep(GATHER);
            let close = self.drain(first, &mut buf, &mut clock);
            if self.reopen.swap(false, Ordering::Relaxed) {
                self.out.reopen();
            }
            let dropped = self.dropped.get();
            if dropped > self.reported {
                tracing::warn!(
                    dropped_total = dropped,
                    "access log lines dropped: the writer could not keep up"
                );
                self.reported = dropped;
            }
            if let Some(ack) = close {
                let _ = ack.send(());
                return;
            }
        }
    }

    /// Writes `first` and everything queued behind it, in writes of up to [`BATCH_BYTES`];
    /// returns the acknowledgement to send when a `Close` was among them.
    fn drain(
        &mut self,
        first: Msg,
        buf: &mut Vec<u8>,
        clock: &mut Clock,
    ) -> Option<oneshot::Sender<()>> {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(e) => {
                    e.write_with(self.format, buf, clock);
                    if buf.len() >= BATCH_BYTES {
                        self.flush(buf);
                    }
                }
                // Lines queued before the signal go to the old file, later ones to the new.
                Msg::Reopen => {
                    self.flush(buf);
                    if self.reopen.swap(false, Ordering::Relaxed) {
                        self.out.reopen();
                    }
                }
                Msg::Close(ack) => {
                    // What is queued by now goes out with it too.
                    while let Ok(m) = self.rx.try_recv() {
                        if let Msg::Line(e) = m {
                            e.write_with(self.format, buf, clock);
                            if buf.len() >= BATCH_BYTES {
                                self.flush(buf);
                            }
                        }
                    }
                    self.flush(buf);
                    return Some(ack);
                }
            }
            next = self.rx.try_recv().ok();
        }
        self.flush(buf);
        None
    }

    /// Writes and empties `buf`.
    fn flush(&mut self, buf: &mut Vec<u8>) {
        if buf.is_empty() {
            return;
        }
        if let Err(e) = self.out.write(buf) {
            tracing::warn!(error = %e, "cannot write the access log");
        }
        buf.clear();
    }
}

/// `t` as RFC 3339 UTC with microseconds (`2024-05-01T12:00:00.123456Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian; H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(951_782_400_000_000 + 1_500_123);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:01.500123Z", "a leap day");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(rfc3339(t), "2099-12-31T23:59:59.000000Z");
    }

    fn record() -> Record<'static> {
        Record {
            ts: "2024-05-01T12:00:00.000000Z".into(),
            client: "10.0.0.7".parse().expect("ip"),
            peer: "10.0.0.8:40000".parse().expect("peer"),
            method: "GET",
            path: "/flv/cam1.flv?a=1",
            status: 200,
            bytes: 1234,
            ms: 56,
            node: Some("a"),
            request_id: "r1",
            decision: Some("live"),
            complete: false,
            closed: Some("kicked"),
            error: None,
            side: None,
            proto: "http",
            ws_close: None,
            session: None,
        }
    }

    #[test]
    fn text_lines_keep_the_old_shape_and_json_lines_parse() {
        let r = record();
        assert_eq!(
            r.line(LogFormat::Text),
            "2024-05-01T12:00:00.000000Z  INFO access: method=GET path=/flv/cam1.flv?a=1 status=200 bytes=1234 ms=56 node=a request_id=r1 complete=false error=\"\" side=\"\" decision=live closed=\"kicked\" client=10.0.0.7 peer=10.0.0.8:40000 proto=http ws_close=0 session=\n"
        );
        let line = r.line(LogFormat::Json);
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["closed"], "kicked");
        assert_eq!(v["error"], serde_json::Value::Null);
        assert_eq!(v["status"], 200);
        assert_eq!(v["client"], "10.0.0.7");
        let error = Record {
            error: Some("a \"quoted\"\nmessage"),
            ..record()
        };
        assert!(
            error
                .line(LogFormat::Text)
                .contains(r#"error="a \"quoted\"\nmessage""#),
            "one line, whatever the error says"
        );
    }

    fn entry(target: &str) -> Entry {
        Entry {
            at: UNIX_EPOCH + Duration::from_secs(1_714_564_800),
            client: "10.0.0.7".parse().expect("ip"),
            peer: "10.0.0.8:40000".parse().expect("peer"),
            method: Method::GET,
            target: target.into(),
            status: 200,
            bytes: 1234,
            ms: 56,
            node: NodeName::Name("a".into()),
            request_id: HeaderValue::from_static("r1"),
            decision: "live",
            complete: false,
            closed: Some("kicked"),
            error: None,
            side: "",
            proto: "http",
            ws_close: None,
            session: String::new(),
        }
    }

    #[test]
    fn an_entry_is_formatted_by_the_writer_as_the_record_was() {
        let mut out = Vec::new();
        entry("/flv/cam1.flv?a=1&token=secret").write_to(LogFormat::Text, &mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            record().line(LogFormat::Text),
            "same line, credentials removed by the writer"
        );
        let mut out = Vec::new();
        entry("/flv/cam1.flv?token=secret").write_to(LogFormat::Json, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["path"], "/flv/cam1.flv");
        assert_eq!(v["node"], "a");
        assert_eq!(v["ts"], "2024-05-01T12:00:00.000000Z");
        let e = Entry {
            node: NodeName::None,
            ..entry("/x?")
        };
        let mut out = Vec::new();
        e.write_to(LogFormat::Json, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["path"], "/x", "an empty query is left out, as before");
        assert_eq!(v["node"], serde_json::Value::Null);
    }

    #[test]
    fn the_writers_clock_writes_what_rfc3339_does() {
        let mut clock = Clock::default();
        let mut t = UNIX_EPOCH + Duration::from_micros(951_782_399_999_998);
        // Across seconds, days, a leap day and years, in steps that revisit a cached second.
        for step in [
            0,
            1,
            1,
            999_999,
            3,
            86_399_000_001,
            7,
            31_536_000_000_000,
            500_000,
        ] {
            t += Duration::from_micros(step);
            let mut out = Vec::new();
            clock.write(t, &mut out);
            assert_eq!(String::from_utf8(out).expect("utf-8"), rfc3339(t));
        }
        for t in [UNIX_EPOCH, UNIX_EPOCH + Duration::from_secs(4_102_444_799)] {
            let mut out = Vec::new();
            Clock::default().write(t, &mut out);
            assert_eq!(String::from_utf8(out).expect("utf-8"), rfc3339(t));
        }
    }

    #[test]
    fn text_lines_written_by_hand_match_the_formatted_record() {
        let cases = [
            entry("/a"),
            Entry {
                client: "2001:db8::7".parse().expect("ip"),
                peer: "[2001:db8::8%3]:443".parse().expect("peer"),
                status: 499,
                bytes: u64::MAX,
                ms: 0,
                node: NodeName::None,
                decision: "",
                complete: true,
                closed: None,
                error: Some("a \"quoted\"\nmessage\\ é \u{1}".into()),
                side: "upstream",
                proto: "ws",
                ws_close: Some(1001),
                session: "s1".into(),
                method: Method::from_bytes(b"PURGE").expect("method"),
                ..entry("/b?x=1&sig=2")
            },
            Entry {
                client: "0.0.0.0".parse().expect("ip"),
                peer: "255.255.255.255:65535".parse().expect("peer"),
                error: Some(String::new()),
                node: NodeName::Name(String::new()),
                ..entry("/c?")
            },
        ];
        for e in cases {
            let mut by_hand = Vec::new();
            e.write_to(LogFormat::Text, &mut by_hand);
            let path = match e.target.split_once('?') {
                Some((p, q)) => match crate::upstream_path::strip_secrets(Some(q)) {
                    Some(q) => format!("{p}?{q}"),
                    None => p.to_string(),
                },
                None => e.target.clone(),
            };
            let formatted = e.record(rfc3339(e.at), &path).line(LogFormat::Text);
            assert_eq!(String::from_utf8(by_hand).expect("utf-8"), formatted);
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (tx, _rx) = mpsc::channel(1);
        let sink = AccessSink {
            tx,
            dropped: Counter::default(),
            shutdown: CancellationToken::new(),
        };
        let metric = sink.dropped_counter();
        for _ in 0..5 {
            sink.write(entry("/a"));
        }
        assert_eq!(sink.dropped(), 4, "one queued, four dropped, none waited");
        assert_eq!(metric.get(), 4, "the metric shares the count");
    }

    #[test]
    fn queued_lines_go_out_in_few_writes_split_at_a_reopen_and_all_written_at_close() {
        let (tx, rx) = mpsc::channel(QUEUE_LINES);
        let writes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = Writer {
            rx,
            out: Out::Memory(writes.clone()),
            format: LogFormat::Text,
            dropped: Counter::default(),
            reopen: Arc::new(AtomicBool::new(false)),
            reported: 0,
        };
        let line = |i: usize| Msg::Line(entry(&format!("/line/{i}")));
        let (ack, acked) = oneshot::channel();
        for i in 0..300 {
            tx.try_send(line(i)).expect("room");
        }
        tx.try_send(Msg::Reopen).expect("room");
        for i in 300..310 {
            tx.try_send(line(i)).expect("room");
        }
        tx.try_send(Msg::Close(ack)).expect("room");
        // Queued after the close, before the writer got to it: still written.
        tx.try_send(line(310)).expect("room");
        drop(tx);
        writer.run();
        assert!(acked.blocking_recv().is_ok(), "the close was acknowledged");
        let writes = writes.lock().expect("writes").clone();
        let lines: Vec<usize> = writes
            .iter()
            .map(|w| w.iter().filter(|&&b| b == b'\n').count())
            .collect();
        assert_eq!(lines.iter().sum::<usize>(), 311, "every line written once");
        assert!(writes.iter().all(|w| w.len() <= BATCH_BYTES + 1024));
        // 300 lines of ~320 bytes: two writes of up to 64 KiB, then the reopen ends a write.
        let mut total = 0;
        let at_reopen = lines.iter().position(|&l| {
            total += l;
            total == 300
        });
        assert!(
            at_reopen.is_some_and(|i| i < 3),
            "{lines:?}: batched, and a write ends at the reopen"
        );
        let text = String::from_utf8(writes.concat()).expect("utf-8");
        let order: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split(' ').find(|f| f.starts_with("path=")))
            .collect();
        assert_eq!(order[0], "path=/line/0");
        assert_eq!(order[310], "path=/line/310");
    }

    #[tokio::test]
    async fn close_writes_what_is_queued() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("access.log");
        let settings = LogSettings {
            format: LogFormat::Json,
            access: AccessTarget::File(path.clone()),
        };
        let sink = AccessSink::start(&settings, &CancellationToken::new())
            .expect("open")
            .expect("on");
        for _ in 0..100 {
            sink.write(entry("/a?b=1"));
        }
        sink.close().await;
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 100);
        let off = LogSettings {
            access: AccessTarget::Off,
            ..settings
        };
        assert!(AccessSink::start(&off, &CancellationToken::new())
            .expect("ok")
            .is_none());
        let bad = LogSettings {
            format: LogFormat::Text,
            access: AccessTarget::File(dir.path().join("no/such/dir/x.log")),
        };
        let err = AccessSink::start(&bad, &CancellationToken::new())
            .err()
            .expect("fails");
        assert!(err.to_string().contains("log.access"), "{err}");
    }
}
