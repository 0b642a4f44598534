//! Hot reload of the gateway's config file: SIGHUP or `POST /api/v1/reload` asks, one task
//! answers. Reloads run one at a time, in the order asked, so two signals never race to apply
//! two files; the asker gets the outcome back (the API answers with it, SIGHUP logs it).
//!
//! The file is read and validated exactly as `check-config` and start-up do (`config::load`),
//! so a refused reload carries the same message `check-config` prints, and the running config
//! stays. What a valid file changes, and what it cannot, is decided by the gateway
//! (`Gateway::apply`); see docs/operations.md, "Hot reload".

use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{self, ConfigError, Settings};

/// Reload requests waiting for the reload task. Past it a request is refused at once: a burst
/// of signals asks for the same file, and one reload after the burst reads its last state.
const QUEUE: usize = 4;

/// What a successful reload changed, as the API answers and the log says.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Applied {
    /// Routes in the new table.
    pub routes: usize,
    /// Static nodes in the new file.
    pub nodes: usize,
    /// Static nodes added to the registry.
    pub nodes_added: Vec<String>,
    /// Static nodes removed from the registry.
    pub nodes_removed: Vec<String>,
    /// Listeners bound and serving since this reload (`http://ADDR` or `https://ADDR`).
    pub listeners_added: Vec<String>,
    /// Listeners that stopped accepting (their connections drain as at shutdown).
    pub listeners_removed: Vec<String>,
    /// Settings that changed in the file but only take effect at a restart (listeners, `[live]`,
    /// `[registry]`...): named so the operator knows the file and the process differ.
    pub needs_restart: Vec<&'static str>,
}

/// Why a reload was refused; the running config stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is invalid: the message `check-config` prints.
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    /// Applying it failed (a registry write); what was applied before the failure stays.
    #[error("{0}")]
    Apply(String),
    /// Too many reloads asked at once, or the gateway is shutting down.
    #[error("{0}")]
    Busy(&'static str),
}

/// Something a reload is applied to (the gateway).
pub trait Target: Send + Sync + 'static {
    /// Applies validated `settings`; the outcome is counted and logged by the caller.
    fn apply(
        &self,
        settings: Settings,
    ) -> impl std::future::Future<Output = Result<Applied, ReloadError>> + Send;
    /// Counts one reload's outcome (`/metrics`).
    fn record(&self, ok: bool);
}

/// Where the gateway keeps its [`Trigger`] once it serves a config file (the admin API reads
/// it; empty when the gateway was started from settings alone, as tests and the demo do).
pub type Slot = std::sync::Arc<std::sync::OnceLock<Trigger>>;

type Reply = oneshot::Sender<Result<Applied, ReloadError>>;

/// A handle that asks for a reload (cheap to clone; SIGHUP and the admin API each hold one).
#[derive(Clone, Debug)]
pub struct Trigger {
    tx: mpsc::Sender<(&'static str, Reply)>,
}

impl Trigger {
    /// Asks for a reload and waits for its outcome. `source` names who asked, for the log.
    pub async fn reload(&self, source: &'static str) -> Result<Applied, ReloadError> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send((source, reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                ReloadError::Busy("too many reloads asked at once; try again")
            }
            mpsc::error::TrySendError::Closed(_) => {
                ReloadError::Busy("the gateway is shutting down")
            }
        })?;
        rx.await
            .unwrap_or(Err(ReloadError::Busy("the gateway is shutting down")))
    }
}

/// Starts the reload task for `path` over `target`; it ends at `shutdown`.
pub fn spawn<T: Target>(
    path: PathBuf,
    target: std::sync::Arc<T>,
    shutdown: CancellationToken,
) -> Trigger {
    let (tx, mut rx) = mpsc::channel::<(&'static str, Reply)>(QUEUE);
    tokio::spawn(async move {
        loop {
            let (source, reply) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = rx.recv() => match r { Some(r) => r, None => return },
            };
            let file = path.to_string_lossy().into_owned();
            // Reading a small file: not worth a blocking-pool hop.
            let outcome = match config::load(&file) {
                Ok(settings) => target.apply(settings).await,
                Err(e) => Err(ReloadError::Invalid(e)),
            };
            target.record(outcome.is_ok());
            match &outcome {
                Ok(a) => tracing::info!(
                    source,
                    file = %file,
                    routes = a.routes,
                    nodes = a.nodes,
                    nodes_added = ?a.nodes_added,
                    nodes_removed = ?a.nodes_removed,
                    "config reloaded"
                ),
                Err(e) => tracing::error!(
                    source,
                    file = %file,
                    error = %e,
                    "config reload refused; the running config stays"
                ),
            }
            for what in outcome
                .as_ref()
                .map(|a| a.needs_restart.clone())
                .unwrap_or_default()
            {
                tracing::warn!(
                    setting = what,
                    "config reload: this setting changed in the file but takes effect only at a restart"
                );
            }
            let _ = reply.send(outcome);
        }
    });
    Trigger { tx }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[derive(Default)]
    struct Count {
        applied: AtomicUsize,
        ok: AtomicUsize,
        err: AtomicUsize,
    }

    impl Target for Count {
        async fn apply(&self, s: Settings) -> Result<Applied, ReloadError> {
            self.applied.fetch_add(1, Ordering::SeqCst);
            Ok(Applied {
                routes: s.routes.len(),
                ..Applied::default()
            })
        }
        fn record(&self, ok: bool) {
            let c = if ok { &self.ok } else { &self.err };
            c.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn an_invalid_file_is_refused_with_the_check_config_message() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("g.toml");
        let good = "[[routes]]\npath = \"/v/{*rest}\"\naction = \"redirect\"\nto = \"http://127.0.0.1:1\"\n";
        std::fs::write(&path, good).expect("write");
        let target = Arc::new(Count::default());
        let shutdown = CancellationToken::new();
        let t = spawn(path.clone(), target.clone(), shutdown.clone());
        assert_eq!(t.reload("test").await.expect("ok").routes, 1);
        std::fs::write(&path, "[server]\nlsiten = 1\n").expect("write");
        let e = t.reload("test").await.expect_err("invalid");
        let want = config::load(&path.to_string_lossy())
            .expect_err("invalid")
            .to_string();
        assert_eq!(e.to_string(), want);
        assert_eq!(target.applied.load(Ordering::SeqCst), 1, "never applied");
        assert_eq!(target.ok.load(Ordering::SeqCst), 1);
        assert_eq!(target.err.load(Ordering::SeqCst), 1);
        shutdown.cancel();
    }
}
