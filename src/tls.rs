//! TLS for viewers: PEM certificates per listener, chosen by SNI, swapped on reload.
//!
//! Each TLS listener has one [`Certificates`] store. Its rustls `ServerConfig` is built once and
//! asks the store for a certificate at every handshake, so a reload (SIGHUP, a changed file, or
//! a call to [`Certificates::reload`]) swaps the set for new connections only: a connection
//! already open keeps the session it negotiated. A reload that fails (a missing file, a key that
//! does not match, a half-written PEM) is logged and the old set stays.
//!
//! Selection: the client's SNI name is looked up among the DNS names of every certificate (the
//! subject alternative names), exact names first, then `*.` wildcards one label deep; when the
//! client sends no name, or one no certificate covers, the listener's first certificate is
//! served (the browser then shows its own error, which says more than a reset would).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{CertificateFiles, TlsSettings};

/// ALPN, in our order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A certificate that cannot be loaded, naming the config key it came from.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {why}")]
pub struct TlsError {
    key: String,
    why: String,
}

impl TlsError {
    /// The config key (`server.listen[1].tls.certificates[0].cert`).
    pub fn key(&self) -> &str {
        &self.key
    }
    /// What is wrong with it.
    pub fn why(&self) -> &str {
        &self.why
    }
}

/// The crypto provider every listener uses: rustls on ring.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One loaded set of certificates, immutable: a reload builds a new one.
#[derive(Debug)]
pub struct CertSet {
    /// In config order; the first is the default.
    certs: Vec<Arc<CertifiedKey>>,
    /// Exact DNS name (lower case) → index in `certs`; the first certificate naming it wins.
    exact: HashMap<String, usize>,
    /// `*.example.com` stored as `example.com` → index.
    wildcard: HashMap<String, usize>,
    /// The leaf's subject names per certificate, for logs.
    names: Vec<Vec<String>>,
}

impl CertSet {
    /// Reads and checks every certificate of `tls`.
    pub fn load(tls: &TlsSettings) -> Result<Self, TlsError> {
        let provider = provider();
        let mut set = CertSet {
            certs: Vec::with_capacity(tls.certificates.len()),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            names: Vec::new(),
        };
        for (i, files) in tls.certificates.iter().enumerate() {
            let key = format!("{}.certificates[{i}]", tls.key);
            let (ck, names) = load_pair(&key, files, &provider)?;
            for n in &names {
                match n.strip_prefix("*.") {
                    Some(rest) => set.wildcard.entry(rest.to_string()).or_insert(i),
                    None => set.exact.entry(n.clone()).or_insert(i),
                };
            }
            set.names.push(names);
            set.certs.push(Arc::new(ck));
        }
        Ok(set)
    }

    /// The certificate for `sni`, or the default.
    fn choose(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let i = sni
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
            .and_then(|n| {
                self.exact.get(&n).copied().or_else(|| {
                    let (_, parent) = n.split_once('.')?;
                    self.wildcard.get(parent).copied()
                })
            })
            .unwrap_or(0);
        self.certs.get(i).cloned()
    }
}

/// Reads one chain and key; returns it with the DNS names the leaf is valid for.
fn load_pair(
    key: &str,
    files: &CertificateFiles,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<(CertifiedKey, Vec<String>), TlsError> {
    let cert_key = format!("{key}.cert");
    let key_key = format!("{key}.key");
    let pem = read(&cert_key, &files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&cert_key, &files.cert, format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(bad(
            &cert_key,
            &files.cert,
            "no CERTIFICATE block".to_string(),
        ));
    }
    let names = {
        let leaf = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| {
            bad(
                &cert_key,
                &files.cert,
                format!("the first certificate does not parse: {e}"),
            )
        })?;
        leaf.valid_dns_names()
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>()
    };
    let pem = read(&key_key, &files.key)?;
    let private = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        bad(
            &key_key,
            &files.key,
            format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
        )
    })?;
    let ck = CertifiedKey::from_der(chain, private, provider).map_err(|e| {
        bad(
            &key_key,
            &files.key,
            format!("does not go with {}: {e}", files.cert.display()),
        )
    })?;
    Ok((ck, names))
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError {
        key: key.to_string(),
        why: format!("cannot read {}: {e}", path.display()),
    })
}

fn bad(key: &str, path: &Path, why: String) -> TlsError {
    TlsError {
        key: key.to_string(),
        why: format!("{}: {why}", path.display()),
    }
}

/// What a file looked like when last read: a change in either means "read it again".
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// A TLS listener's certificates, swappable while it serves.
#[derive(Debug)]
pub struct Certificates {
    settings: TlsSettings,
    /// The set new handshakes use. A read lock is held only to clone the `Arc`.
    current: RwLock<Arc<CertSet>>,
    /// The files' stamps when last tried (loaded or refused), so a bad file is reported once
    /// per change, not at every poll.
    seen: Mutex<Vec<Stamp>>,
}

impl Certificates {
    /// Loads `settings`' certificates.
    pub fn load(settings: &TlsSettings) -> Result<Arc<Self>, TlsError> {
        let seen = Self::stamps(settings);
        let set = CertSet::load(settings)?;
        Ok(Arc::new(Self {
            settings: settings.clone(),
            current: RwLock::new(Arc::new(set)),
            seen: Mutex::new(seen),
        }))
    }

    fn stamps(settings: &TlsSettings) -> Vec<Stamp> {
        settings
            .certificates
            .iter()
            .flat_map(|c| [stamp(&c.cert), stamp(&c.key)])
            .collect()
    }

    /// Reads every file again and swaps the set in if all of it loads; on error the old set
    /// stays and the error is returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps = Self::stamps(&self.settings);
        if let Ok(mut seen) = self.seen.lock() {
            *seen = stamps;
        }
        let set = CertSet::load(&self.settings)?;
        tracing::info!(
            listener = %self.settings.key,
            names = ?set.names,
            "TLS certificates loaded"
        );
        if let Ok(mut cur) = self.current.write() {
            *cur = Arc::new(set);
        }
        Ok(())
    }

    /// Reloads if any file changed since it was last read; `None` when nothing changed.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let stamps = Self::stamps(&self.settings);
        let changed = self.seen.lock().map(|s| *s != stamps).unwrap_or(false);
        changed.then(|| self.reload())
    }

    /// A rustls server config that asks this store at each handshake and offers h2 and
    /// http/1.1 by ALPN.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, rustls::Error> {
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(cfg))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.current.read().ok()?.clone();
        set.choose(hello.server_name())
    }
}

/// Every TLS listener's store: what SIGHUP, the file watcher and (later) a config reload act on.
#[derive(Clone, Debug, Default)]
pub struct Reloader {
    stores: Arc<Mutex<Vec<Arc<Certificates>>>>,
}

impl Reloader {
    /// Adds a listener's store.
    pub fn add(&self, c: Arc<Certificates>) {
        if let Ok(mut s) = self.stores.lock() {
            s.push(c);
        }
    }

    fn all(&self) -> Vec<Arc<Certificates>> {
        self.stores.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Reloads every store; failures are logged (the old certificates stay) and counted.
    pub fn reload(&self) -> usize {
        let mut failed = 0;
        for c in self.all() {
            if let Err(e) = c.reload() {
                failed += 1;
                tracing::error!(error = %e, "TLS reload failed; keeping the old certificates");
            }
        }
        failed
    }

    /// Reloads the stores whose files changed.
    pub fn reload_changed(&self) {
        for c in self.all() {
            if let Some(Err(e)) = c.reload_if_changed() {
                tracing::error!(error = %e, "TLS reload failed; keeping the old certificates");
            }
        }
    }

    /// Polls the files every `every` until `shutdown`.
    pub fn watch(&self, every: Duration, shutdown: tokio_util::sync::CancellationToken) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {
                        // `stat` and file reads block: keep them off the runtime's workers.
                        let me = me.clone();
                        let _ = tokio::task::spawn_blocking(move || me.reload_changed()).await;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str]) -> (String, String) {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .expect("rcgen");
        (ck.cert.pem(), ck.signing_key.serialize_pem())
    }

    fn write(dir: &Path, name: &str, pem: &(String, String)) -> CertificateFiles {
        let c = dir.join(format!("{name}.crt"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, &pem.0).expect("write");
        std::fs::write(&k, &pem.1).expect("write");
        CertificateFiles { cert: c, key: k }
    }

    fn settings(certs: Vec<CertificateFiles>) -> TlsSettings {
        TlsSettings {
            certificates: certs,
            key: "server.listen[0].tls".into(),
        }
    }

    #[test]
    fn sni_picks_by_name_and_falls_back_to_the_first() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = write(dir.path(), "a", &cert(&["a.test"]));
        let b = write(dir.path(), "b", &cert(&["b.test", "*.wild.test"]));
        let set = CertSet::load(&settings(vec![a, b])).expect("load");
        let first = set.certs[0].clone();
        let second = set.certs[1].clone();
        let is = |x: Option<Arc<CertifiedKey>>, y: &Arc<CertifiedKey>| {
            Arc::ptr_eq(&x.expect("a cert"), y)
        };
        assert!(is(set.choose(Some("a.test")), &first));
        assert!(is(set.choose(Some("B.Test.")), &second));
        assert!(is(set.choose(Some("x.wild.test")), &second));
        assert!(
            is(set.choose(Some("y.x.wild.test")), &first),
            "one label deep"
        );
        assert!(is(set.choose(Some("other.test")), &first));
        assert!(is(set.choose(None), &first));
    }

    #[test]
    fn errors_name_the_key_and_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = write(dir.path(), "a", &cert(&["a.test"]));
        let b = write(dir.path(), "b", &cert(&["b.test"]));
        let missing = CertificateFiles {
            cert: dir.path().join("nope.crt"),
            key: a.key.clone(),
        };
        let e = CertSet::load(&settings(vec![a.clone(), missing])).expect_err("missing");
        assert_eq!(e.key(), "server.listen[0].tls.certificates[1].cert");
        assert!(e.why().contains("cannot read"), "{e}");
        let mismatched = CertificateFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let e = CertSet::load(&settings(vec![mismatched])).expect_err("mismatch");
        assert_eq!(e.key(), "server.listen[0].tls.certificates[0].key");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").expect("write");
        let e = CertSet::load(&settings(vec![CertificateFiles {
            cert: junk,
            key: a.key,
        }]))
        .expect_err("junk");
        assert_eq!(e.key(), "server.listen[0].tls.certificates[0].cert");
        assert!(e.why().contains("no CERTIFICATE"), "{e}");
    }

    #[test]
    fn a_bad_reload_keeps_the_old_set_and_a_change_is_seen() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = write(dir.path(), "a", &cert(&["a.test"]));
        let store = Certificates::load(&settings(vec![a.clone()])).expect("load");
        assert!(store.reload_if_changed().is_none(), "nothing changed");
        let before = store.current.read().expect("lock").clone();
        std::fs::write(&a.cert, "-----BEGIN CERTIFICATE-----\nhalf").expect("write");
        assert!(matches!(store.reload_if_changed(), Some(Err(_))));
        assert!(
            Arc::ptr_eq(&before, &store.current.read().expect("lock")),
            "the old set stays"
        );
        assert!(
            store.reload_if_changed().is_none(),
            "reported once per change"
        );
        write(dir.path(), "a", &cert(&["a.test", "new.test"]));
        assert!(matches!(store.reload_if_changed(), Some(Ok(()))));
        assert!(store
            .current
            .read()
            .expect("lock")
            .exact
            .contains_key("new.test"));
    }
}
