//! `auth = "jwt"`: viewer JSON Web Tokens (HS256, RS256, ES256) from `Authorization: Bearer` or
//! `?jwt=`, verified with the `jsonwebtoken` crate (pure-Rust RustCrypto backend).
//!
//! Keys come from the config (`hs256_secret`, `public_keys` PEM files) and from a JWKS file that
//! a background task re-reads when its modification time changes, or a JWKS URL fetched in the
//! background; a bad file or a failed fetch keeps the last good keys. A token's `kid` selects the key when it names one. `exp` and `nbf` are checked with
//! a small leeway, `iss` and `aud` when configured. A valid token must also list the stream (or
//! the path prefix) being asked for: otherwise 403 `forbidden_stream`.
//!
//! There is no per-token cache: one HMAC or one signature check per request is cheap next to
//! the proxying it guards, and a cache would be one more bounded structure to get right.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio_util::sync::CancellationToken;

use crate::error::GatewayError;

/// At most this many verification keys are held (config keys plus the JWKS): a JWKS with more
/// is refused as a whole, so a runaway file cannot make every request try thousands of keys.
pub const MAX_KEYS: usize = 100;

/// A JWKS file larger than this is refused (a real one is a few KiB).
pub const MAX_JWKS_BYTES: u64 = 1024 * 1024;

/// The query parameter a token may arrive in.
pub const QUERY_PARAM: &str = "jwt";

/// One verification key and the one algorithm it verifies.
#[derive(Clone)]
pub struct JwtKey {
    /// The JWKS `kid`, if any; config keys have none.
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

impl std::fmt::Debug for JwtKey {
    // Never print the key material (an HS256 key is a secret).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl JwtKey {
    /// An HS256 shared secret.
    pub fn hs256(secret: &[u8]) -> Result<Self, String> {
        Ok(Self {
            kid: None,
            alg: Algorithm::HS256,
            key: DecodingKey::from_secret(secret).map_err(|e| e.to_string())?,
        })
    }

    /// A PEM public key: RSA (→ RS256) or EC P-256 (→ ES256).
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self {
                kid: None,
                alg: Algorithm::RS256,
                key,
            });
        }
        match DecodingKey::from_ec_pem(pem) {
            Ok(key) => Ok(Self {
                kid: None,
                alg: Algorithm::ES256,
                key,
            }),
            Err(_) => Err("not an RSA or EC P-256 public key in PEM".into()),
        }
    }
}

/// Parses a JWKS document into keys: RSA (RS256) and EC P-256 (ES256) only; at most
/// [`MAX_KEYS`].
pub fn parse_jwks(json: &[u8]) -> Result<Vec<JwtKey>, String> {
    let set: JwkSet = serde_json::from_slice(json).map_err(|e| format!("not a JWKS: {e}"))?;
    if set.keys.len() > MAX_KEYS {
        return Err(format!(
            "{} keys, more than the {MAX_KEYS} allowed",
            set.keys.len()
        ));
    }
    let mut keys = Vec::with_capacity(set.keys.len());
    for (i, jwk) in set.keys.iter().enumerate() {
        let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                if ec.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            _ => {
                return Err(format!(
                    "keys[{i}]: only RS256 and ES256 (P-256) keys are used"
                ))
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("keys[{i}]: {e}"))?;
        keys.push(JwtKey {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
    }
    Ok(keys)
}

/// Reads and parses a JWKS file, bounded by [`MAX_JWKS_BYTES`].
pub fn read_jwks_file(path: &Path) -> Result<Vec<JwtKey>, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len > MAX_JWKS_BYTES {
        return Err(format!(
            "{}: larger than {MAX_JWKS_BYTES} bytes",
            path.display()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_jwks(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Validated `[auth.jwt]`.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// Keys from the config (`hs256_secret`, `public_keys`), fixed for the process lifetime.
    pub static_keys: Vec<JwtKey>,
    /// `jwks_file`, with the keys it held at start.
    pub jwks_file: Option<PathBuf>,
    /// `jwks_url` (`http://`), fetched in the background from start.
    pub jwks_url: Option<String>,
    pub jwks_keys: Vec<JwtKey>,
    /// How often the JWKS file's modification time is looked at.
    pub jwks_refresh: Duration,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway: u64,
    /// Accepted `iss` values (none: not checked).
    pub issuers: Vec<String>,
    /// Accepted `aud` values (none: not checked).
    pub audiences: Vec<String>,
    /// The claim listing allowed stream names and `prefix*` patterns.
    pub streams_claim: String,
    /// When set, the claim listing allowed path prefixes (used instead of `streams_claim`).
    pub paths_claim: Option<String>,
}

/// The JWT verifier a gateway holds; cheap to clone (the key set is shared).
#[derive(Debug, Clone)]
pub struct JwtAuth {
    settings: Arc<JwtSettings>,
    /// JWKS keys as last read successfully; swapped whole by the refresh task.
    jwks: Arc<RwLock<Arc<Vec<JwtKey>>>>,
}

impl JwtAuth {
    pub fn new(settings: JwtSettings) -> Self {
        let jwks = Arc::new(RwLock::new(Arc::new(settings.jwks_keys.clone())));
        Self {
            settings: Arc::new(settings),
            jwks,
        }
    }

    /// Starts fetching `jwks_url` at once and again every `jwks_refresh`; a failed fetch keeps
    /// the last good keys and is retried with the one jittered [`Backoff`](crate::backoff::Backoff).
    pub fn spawn_url_refresh(
        &self,
        transport: crate::upstream::Transport,
        shutdown: &CancellationToken,
    ) {
        let Some(url) = self.settings.jwks_url.clone() else {
            return;
        };
        let every = self.settings.jwks_refresh;
        let jwks = Arc::downgrade(&self.jwks);
        let room = MAX_KEYS.saturating_sub(self.settings.static_keys.len());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut backoff = crate::backoff::Backoff::new(
                Duration::from_millis(200),
                every.max(Duration::from_secs(1)),
            );
            loop {
                let fetched = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    f = transport.get_small(&url, MAX_JWKS_BYTES as usize, "streamgate-jwks") => f,
                };
                let Some(jwks) = jwks.upgrade() else { return };
                let parsed = fetched.and_then(|b| parse_jwks(&b)).and_then(|keys| {
                    if keys.len() <= room {
                        Ok(keys)
                    } else {
                        Err(format!(
                            "{} keys, more than allowed with the config's keys",
                            keys.len()
                        ))
                    }
                });
                let wait = match parsed {
                    Ok(keys) => {
                        tracing::debug!(%url, keys = keys.len(), "JWKS fetched");
                        if let Ok(mut w) = jwks.write() {
                            *w = Arc::new(keys);
                        }
                        backoff.reset();
                        every
                    }
                    Err(e) => {
                        let wait = backoff.next_delay();
                        tracing::warn!(%url, error = %e, retry_in = ?wait, "JWKS fetch failed; keeping the last good keys");
                        wait
                    }
                };
                drop(jwks);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        });
    }

    /// Starts the JWKS file refresh (when a file is configured); it ends with `shutdown`.
    pub fn spawn_refresh(&self, shutdown: &CancellationToken) {
        let Some(path) = self.settings.jwks_file.clone() else {
            return;
        };
        let every = self.settings.jwks_refresh;
        let jwks = Arc::downgrade(&self.jwks);
        let room = MAX_KEYS.saturating_sub(self.settings.static_keys.len());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut seen = file_stamp(&path);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(jwks) = jwks.upgrade() else { return };
                let stamp = file_stamp(&path);
                if stamp == seen {
                    continue;
                }
                seen = stamp;
                let p = path.clone();
                let read = tokio::task::spawn_blocking(move || read_jwks_file(&p)).await;
                match read {
                    Ok(Ok(keys)) if keys.len() <= room => {
                        tracing::info!(file = %path.display(), keys = keys.len(), "JWKS reloaded");
                        if let Ok(mut w) = jwks.write() {
                            *w = Arc::new(keys);
                        }
                    }
                    Ok(Ok(keys)) => tracing::warn!(
                        file = %path.display(),
                        keys = keys.len(),
                        "JWKS has more keys than allowed; keeping the last good keys"
                    ),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "bad JWKS file; keeping the last good keys")
                    }
                    Err(e) => tracing::warn!(error = %e, "JWKS reload failed"),
                }
            }
        });
    }

    /// Checks the request's token: Ok when valid and it allows `stream` (or `path`).
    pub fn check(
        &self,
        token: Option<&str>,
        stream: Option<&str>,
        path: &str,
    ) -> Result<(), GatewayError> {
        let token = token.ok_or(GatewayError::Unauthorized)?;
        let claims = self.verify(token).map_err(|why| {
            tracing::debug!(%why, "JWT refused");
            GatewayError::TokenInvalid
        })?;
        if self.allows(&claims, stream, path) {
            Ok(())
        } else {
            Err(GatewayError::ForbiddenStream)
        }
    }

    /// The token's claims when its signature, `exp`, `nbf`, `iss` and `aud` are good.
    pub fn verify(&self, token: &str) -> Result<serde_json::Value, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        if !matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::RS256 | Algorithm::ES256
        ) {
            return Err(format!("algorithm {:?} is not accepted", header.alg));
        }
        let s = &self.settings;
        let mut v = Validation::new(header.alg);
        v.leeway = s.leeway;
        v.validate_nbf = true;
        // A configured `iss` / `aud` must be present, not merely not wrong.
        let mut required = vec!["exp"];
        if !s.issuers.is_empty() {
            required.push("iss");
        }
        if !s.audiences.is_empty() {
            required.push("aud");
        }
        v.set_required_spec_claims(&required);
        if s.audiences.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&s.audiences);
        }
        if !s.issuers.is_empty() {
            v.set_issuer(&s.issuers);
        }
        let jwks = self.jwks.read().map(|k| k.clone()).unwrap_or_default();
        let keys = candidates(&s.static_keys, &jwks, header.alg, header.kid.as_deref());
        if keys.is_empty() {
            return Err("no key for this token's alg/kid".into());
        }
        let mut last = String::new();
        for k in keys {
            match jsonwebtoken::decode::<serde_json::Value>(token, &k.key, &v) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    /// Whether the claims allow this request: by path prefix (`paths_claim`) or by stream name
    /// (`streams_claim`).
    fn allows(&self, claims: &serde_json::Value, stream: Option<&str>, path: &str) -> bool {
        let s = &self.settings;
        match &s.paths_claim {
            Some(c) => list(claims, c).any(|p| path_allowed(p, path)),
            None => stream
                .is_some_and(|st| list(claims, &s.streams_claim).any(|p| stream_allowed(p, st))),
        }
    }
}

/// The keys to try: those for `alg`; when the token names a `kid` that a key carries, only
/// those; else the keys without a kid (config keys). A token without a kid tries every key for
/// its algorithm (at most [`MAX_KEYS`]).
fn candidates<'a>(
    fixed: &'a [JwtKey],
    jwks: &'a [JwtKey],
    alg: Algorithm,
    kid: Option<&str>,
) -> Vec<&'a JwtKey> {
    let all = || fixed.iter().chain(jwks).filter(move |k| k.alg == alg);
    match kid {
        None => all().collect(),
        Some(kid) => {
            let named: Vec<&JwtKey> = all().filter(|k| k.kid.as_deref() == Some(kid)).collect();
            if named.is_empty() {
                all().filter(|k| k.kid.is_none()).collect()
            } else {
                named
            }
        }
    }
}

/// The strings of a claim that is a list (or a single string).
fn list<'a>(claims: &'a serde_json::Value, name: &str) -> impl Iterator<Item = &'a str> {
    let v = claims.get(name);
    let one = v.and_then(|v| v.as_str());
    let many = v.and_then(|v| v.as_array()).into_iter().flatten();
    one.into_iter().chain(many.filter_map(|e| e.as_str()))
}

/// `name` exactly, or `prefix*` as a literal start (a bare `*` allows every stream).
fn stream_allowed(pattern: &str, stream: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => stream.starts_with(prefix),
        None => pattern == stream,
    }
}

/// A path prefix that ends at a segment boundary: `/live/a` allows `/live/a` and `/live/a/x`,
/// not `/live/ab`; `/live/` allows everything under `/live/`.
fn path_allowed(prefix: &str, path: &str) -> bool {
    if !prefix.starts_with('/') || !path.starts_with(prefix) {
        return false;
    }
    prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'
}

/// What tells a changed file: modification time and length.
fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn settings() -> JwtSettings {
        JwtSettings {
            static_keys: vec![JwtKey::hs256(SECRET).expect("key")],
            jwks_file: None,
            jwks_url: None,
            jwks_keys: Vec::new(),
            jwks_refresh: Duration::from_secs(300),
            leeway: 30,
            issuers: Vec::new(),
            audiences: Vec::new(),
            streams_claim: "streams".into(),
            paths_claim: None,
        }
    }

    fn now() -> i64 {
        crate::auth::now_unix() as i64
    }

    fn hs(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET).expect("key"),
        )
        .expect("sign")
    }

    #[test]
    fn streams_and_prefixes() {
        let a = JwtAuth::new(settings());
        let t = hs(json!({ "exp": now() + 60, "streams": ["cam1", "event-*"] }));
        assert!(a.check(Some(&t), Some("cam1"), "/live/cam1.flv").is_ok());
        assert!(a.check(Some(&t), Some("event-42"), "/x").is_ok());
        assert!(matches!(
            a.check(Some(&t), Some("cam2"), "/x"),
            Err(GatewayError::ForbiddenStream)
        ));
        assert!(matches!(
            a.check(Some(&t), None, "/x"),
            Err(GatewayError::ForbiddenStream)
        ));
        let no_claim = hs(json!({ "exp": now() + 60 }));
        assert!(matches!(
            a.check(Some(&no_claim), Some("cam1"), "/x"),
            Err(GatewayError::ForbiddenStream)
        ));
        assert!(matches!(
            a.check(None, Some("cam1"), "/x"),
            Err(GatewayError::Unauthorized)
        ));
        assert!(matches!(
            a.check(Some("not.a.jwt"), Some("cam1"), "/x"),
            Err(GatewayError::TokenInvalid)
        ));
        assert!(stream_allowed("*", "anything"));
    }

    #[test]
    fn path_prefixes_end_at_a_segment() {
        assert!(path_allowed("/live/a", "/live/a"));
        assert!(path_allowed("/live/a", "/live/a/x.flv"));
        assert!(!path_allowed("/live/a", "/live/ab"));
        assert!(path_allowed("/live/", "/live/ab"));
        assert!(!path_allowed("live", "live/x"));
        let mut s = settings();
        s.paths_claim = Some("paths".into());
        let a = JwtAuth::new(s);
        let t = hs(json!({ "exp": now() + 60, "paths": ["/vod/team1"] }));
        assert!(a.check(Some(&t), None, "/vod/team1/a.mp4").is_ok());
        assert!(matches!(
            a.check(Some(&t), None, "/vod/team10/a.mp4"),
            Err(GatewayError::ForbiddenStream)
        ));
    }

    #[test]
    fn exp_and_nbf_with_leeway() {
        let a = JwtAuth::new(settings());
        let ok = |c| a.verify(&hs(c)).is_ok();
        assert!(ok(json!({ "exp": now() - 10 })), "within the 30s leeway");
        assert!(!ok(json!({ "exp": now() - 120 })));
        assert!(!ok(json!({ "sub": "x" })), "exp is required");
        assert!(ok(json!({ "exp": now() + 60, "nbf": now() + 10 })));
        assert!(!ok(json!({ "exp": now() + 600, "nbf": now() + 300 })));
    }

    #[test]
    fn iss_and_aud_when_configured() {
        let mut s = settings();
        s.issuers = vec!["https://idp".into()];
        s.audiences = vec!["streamgate".into()];
        let a = JwtAuth::new(s);
        let ok = |c| a.verify(&hs(c)).is_ok();
        assert!(ok(
            json!({ "exp": now() + 60, "iss": "https://idp", "aud": "streamgate" })
        ));
        assert!(!ok(
            json!({ "exp": now() + 60, "iss": "https://other", "aud": "streamgate" })
        ));
        assert!(!ok(
            json!({ "exp": now() + 60, "iss": "https://idp", "aud": "other" })
        ));
        assert!(!ok(json!({ "exp": now() + 60 })));
    }

    #[test]
    fn wrong_secret_and_algorithm_confusion() {
        let a = JwtAuth::new(settings());
        let t = encode(
            &Header::new(Algorithm::HS256),
            &json!({ "exp": now() + 60 }),
            &EncodingKey::from_secret(b"another-secret-0123456789abcdef!").expect("key"),
        )
        .expect("sign");
        assert!(a.verify(&t).is_err());
        let mut h = Header::new(Algorithm::HS384);
        h.kid = None;
        let t = encode(
            &h,
            &json!({ "exp": now() + 60 }),
            &EncodingKey::from_secret(SECRET).expect("key"),
        )
        .expect("sign");
        assert!(a.verify(&t).unwrap_err().contains("not accepted"));
    }

    fn key(kid: Option<&str>, alg: Algorithm) -> JwtKey {
        JwtKey {
            kid: kid.map(str::to_string),
            alg,
            key: DecodingKey::from_secret(b"x").expect("key"),
        }
    }

    #[test]
    fn kid_selects_the_key() {
        let fixed = [key(None, Algorithm::RS256)];
        let jwks = [
            key(Some("a"), Algorithm::RS256),
            key(Some("b"), Algorithm::RS256),
            key(Some("c"), Algorithm::ES256),
        ];
        let kids = |alg, kid| {
            candidates(&fixed, &jwks, alg, kid)
                .iter()
                .map(|k| k.kid.clone().unwrap_or_default())
                .collect::<Vec<_>>()
        };
        assert_eq!(kids(Algorithm::RS256, Some("b")), ["b"]);
        assert_eq!(kids(Algorithm::RS256, Some("zz")), [""]);
        assert_eq!(kids(Algorithm::RS256, None), ["", "a", "b"]);
        assert_eq!(kids(Algorithm::ES256, Some("c")), ["c"]);
        assert!(kids(Algorithm::ES256, Some("a")).is_empty());
    }

    #[test]
    fn jwks_is_bounded_and_typed() {
        let rsa = r#"{"kty":"RSA","kid":"r1","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}"#;
        let keys = parse_jwks(format!(r#"{{"keys":[{rsa}]}}"#).as_bytes()).expect("jwks");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("r1"));
        assert_eq!(keys[0].alg, Algorithm::RS256);
        let many = vec![rsa; MAX_KEYS + 1].join(",");
        assert!(parse_jwks(format!(r#"{{"keys":[{many}]}}"#).as_bytes())
            .unwrap_err()
            .contains("more than"));
        assert!(parse_jwks(b"{}").is_err());
        let oct = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#;
        assert!(parse_jwks(oct.as_bytes()).is_err());
    }
}
