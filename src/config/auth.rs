//! `[auth]`: viewer tokens, signing keys for signed URLs, the nginx `secure_link`
//! expression, and the auth hook (`[auth.hook]`).

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use super::{duration, invalid, ConfigError};
use crate::auth::jwt::{read_jwks_file, JwtKey, JwtSettings, MAX_KEYS};
use crate::auth::{SecureLink, SigningKey};
use crate::upstream_path::BaseUrl;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(default)]
    pub tokens: Vec<String>,
    /// `[{ id = "k2", secret = "…" }, …]`, newest first.
    #[serde(default)]
    pub signing_keys: Vec<RawSigningKey>,
    /// nginx's `secure_link_md5` expression, secret included.
    pub secure_link_secret_expression: Option<String>,
    /// Lifetime of the links that `sign_location` routes hand out.
    pub redirect_link_ttl: Option<String>,
    /// `[auth.hook]`: the external service asked by `auth = "hook"` routes.
    pub hook: Option<RawHook>,
    /// `[auth.jwt]`: keys and claim rules for `auth = "jwt"`.
    pub jwt: Option<RawJwt>,
    /// `[auth.hls_session]`: the gateway's own HLS session signatures (`hls_session = true`).
    pub hls_session: Option<RawHlsSession>,
}

/// `[auth.hls_session]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHlsSession {
    /// The HMAC key of session signatures; a random key per process when absent.
    pub secret: Option<String>,
    /// How long a segment (key, map, part) URL in a rewritten playlist works.
    pub ttl: Option<String>,
    /// How long a session lasts from the credential check that opened it.
    pub max_age: Option<String>,
    /// Bind each session to the viewer's address.
    pub bind_ip: Option<bool>,
}

/// Validated `[auth.hls_session]` (defaults when the table is absent).
#[derive(Clone)]
pub struct HlsSessionSettings {
    /// The configured key; `None`: the gateway draws a random one at start (sessions then end
    /// with the process, and several gateways cannot check each other's).
    pub secret: Option<Vec<u8>>,
    /// Lifetime of a segment URL from the playlist fetch that issued it (rounded up, see
    /// `auth::session`); a VOD playlist's segments get its duration on top.
    pub ttl: Duration,
    /// Lifetime of a session, and of its playlist URLs, which players reload as they are.
    pub max_age: Duration,
    /// Sessions work only from the address they were opened from.
    pub bind_ip: bool,
}

impl Default for HlsSessionSettings {
    fn default() -> Self {
        Self {
            secret: None,
            ttl: DEFAULT_HLS_SESSION_TTL,
            max_age: DEFAULT_HLS_SESSION_MAX_AGE,
            bind_ip: false,
        }
    }
}

impl std::fmt::Debug for HlsSessionSettings {
    // A config dump never shows the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HlsSessionSettings")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("ttl", &self.ttl)
            .field("max_age", &self.max_age)
            .field("bind_ip", &self.bind_ip)
            .finish()
    }
}

/// `auth.hls_session.ttl` unless set: a live player fetches a segment seconds after the
/// playlist that lists it; minutes leave room for a stall and a VOD pause.
pub const DEFAULT_HLS_SESSION_TTL: Duration = Duration::from_secs(300);

/// `auth.hls_session.max_age` unless set: longer than a match, a concert or a film.
pub const DEFAULT_HLS_SESSION_MAX_AGE: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    /// HS256 shared secret.
    pub hs256_secret: Option<String>,
    /// PEM files of RSA (RS256) or EC P-256 (ES256) public keys.
    #[serde(default)]
    pub public_keys: Vec<String>,
    /// A JWKS file, re-read when its modification time changes.
    pub jwks_file: Option<String>,
    /// A JWKS URL (`http://`), fetched at start and every `jwks_refresh`.
    pub jwks_url: Option<String>,
    /// How often the JWKS file is looked at, or the URL fetched (default 5m).
    pub jwks_refresh: Option<String>,
    /// Clock skew allowed on `exp` / `nbf` (default 30s).
    pub leeway: Option<String>,
    /// Accepted `iss` values: a string or a list.
    pub issuer: Option<StringOrList>,
    /// Accepted `aud` values: a string or a list.
    pub audience: Option<StringOrList>,
    /// The claim listing allowed streams (default `streams`).
    pub streams_claim: Option<String>,
    /// The claim listing allowed path prefixes (checked instead of `streams_claim`).
    pub paths_claim: Option<String>,
}

/// A value given as one string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// `[auth.hook]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHook {
    pub url: String,
    pub format: Option<String>,
    pub timeout: Option<String>,
    pub cache_ttl: Option<String>,
    pub deny_ttl: Option<String>,
    pub cache_size: Option<usize>,
    pub max_concurrent: Option<usize>,
    pub fail_open: Option<bool>,
}

/// What the hook is sent and how its answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookFormat {
    /// Our own JSON; any 2xx allows.
    Json,
    /// SRS `on_play`-shaped JSON; only 200 with body `0` or `{"code":0}` allows.
    Srs,
}

/// Validated `[auth.hook]`.
#[derive(Debug, Clone)]
pub struct HookSettings {
    /// Where the check is POSTed (`http://host:port/path`).
    pub url: BaseUrl,
    pub format: HookFormat,
    /// Bounds one check: waiting for a call slot, the call and reading the answer.
    pub timeout: Duration,
    /// How long an allow is remembered per (credential, stream or path).
    pub cache_ttl: Duration,
    /// How long a denial (or a failed call) is remembered; shorter, so a fix shows soon.
    pub deny_ttl: Duration,
    /// Most decisions remembered; the oldest goes first past it. 0: no cache.
    pub cache_size: usize,
    /// Most calls to the hook at once; more wait (within `timeout`) for a slot.
    pub max_concurrent: usize,
    /// Allow when the hook cannot answer (down, timeout, garbage) instead of refusing.
    pub fail_open: bool,
}

/// `auth.hook` defaults.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_HOOK_CACHE_TTL: Duration = Duration::from_secs(30);
pub const DEFAULT_HOOK_DENY_TTL: Duration = Duration::from_secs(5);
pub const DEFAULT_HOOK_CACHE_SIZE: usize = 10_000;
pub const DEFAULT_HOOK_MAX_CONCURRENT: usize = 64;
/// Largest `cache_size` accepted (about 100 bytes an entry).
pub const MAX_HOOK_CACHE_SIZE: usize = 1_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigningKey {
    pub id: String,
    pub secret: String,
}

/// Validated `[auth]`.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// Accepted viewer tokens (`?token=` or `Authorization: Bearer`).
    pub tokens: Vec<String>,
    /// Keys for `auth = "signed"`, newest first (the first one signs; all verify).
    pub signing_keys: Vec<SigningKey>,
    /// For `auth = "secure_link"` and `sign_location`.
    pub secure_link: Option<SecureLink>,
    /// How long a signed `Location` stays valid.
    pub redirect_link_ttl: Duration,
    /// For `auth = "hook"`.
    pub hook: Option<HookSettings>,
    /// `[auth.jwt]`, keys loaded.
    pub jwt: Option<JwtSettings>,
    /// `[auth.hls_session]`, for routes with `hls_session = true`.
    pub hls_session: HlsSessionSettings,
}

/// `auth.jwt.jwks_refresh` unless set.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);

/// `auth.jwt.leeway` unless set: clocks of phones and identity providers drift a little.
pub const DEFAULT_JWT_LEEWAY: Duration = Duration::from_secs(30);

/// `redirect_link_ttl` unless set: long enough to follow a redirect on a slow phone, short
/// enough that a copied link is soon useless.
pub const DEFAULT_REDIRECT_LINK_TTL: Duration = Duration::from_secs(300);

/// A signing secret shorter than this is refused: HMAC is only as strong as its key.
pub const MIN_SECRET_LEN: usize = 16;

pub(super) fn validate(raw: RawAuth) -> Result<AuthSettings, ConfigError> {
    for (i, t) in raw.tokens.iter().enumerate() {
        if t.is_empty() {
            return Err(invalid(
                format!("auth.tokens[{i}]"),
                "a token cannot be empty",
            ));
        }
    }
    let mut ids = HashSet::new();
    let mut signing_keys = Vec::new();
    for (i, k) in raw.signing_keys.into_iter().enumerate() {
        let key = format!("auth.signing_keys[{i}]");
        if k.id.is_empty()
            || k.id.len() > 64
            || !k
                .id
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        {
            return Err(invalid(
                format!("{key}.id"),
                format!("{:?}: use 1 to 64 letters, digits, '_', '.', '-'", k.id),
            ));
        }
        if !ids.insert(k.id.clone()) {
            return Err(invalid(
                format!("{key}.id"),
                format!("duplicate key id {:?}", k.id),
            ));
        }
        if k.secret.len() < MIN_SECRET_LEN {
            return Err(invalid(
                format!("{key}.secret"),
                format!("must be at least {MIN_SECRET_LEN} bytes (e.g. `openssl rand -hex 32`)"),
            ));
        }
        signing_keys.push(SigningKey {
            id: k.id,
            secret: k.secret.into_bytes(),
        });
    }
    let secure_link = match &raw.secure_link_secret_expression {
        None => None,
        Some(e) if e.trim().is_empty() => {
            return Err(invalid(
                "auth.secure_link_secret_expression",
                "cannot be empty",
            ))
        }
        Some(e) => Some(
            SecureLink::parse(e)
                .map_err(|why| invalid("auth.secure_link_secret_expression", why))?,
        ),
    };
    let redirect_link_ttl = duration(
        "auth.redirect_link_ttl",
        &raw.redirect_link_ttl,
        DEFAULT_REDIRECT_LINK_TTL,
    )?;
    if redirect_link_ttl < Duration::from_secs(1) {
        return Err(invalid("auth.redirect_link_ttl", "must be at least 1s"));
    }
    let hook = raw.hook.as_ref().map(validate_hook).transpose()?;
    let jwt = raw.jwt.map(validate_jwt).transpose()?;
    let hls_session = raw
        .hls_session
        .map(validate_hls_session)
        .transpose()?
        .unwrap_or_default();
    Ok(AuthSettings {
        tokens: raw.tokens,
        signing_keys,
        secure_link,
        redirect_link_ttl,
        hook,
        jwt,
        hls_session,
    })
}

fn validate_hls_session(raw: RawHlsSession) -> Result<HlsSessionSettings, ConfigError> {
    if let Some(s) = &raw.secret {
        if s.len() < MIN_SECRET_LEN {
            return Err(invalid(
                "auth.hls_session.secret",
                format!("must be at least {MIN_SECRET_LEN} bytes (e.g. `openssl rand -hex 32`)"),
            ));
        }
    }
    let ttl = duration("auth.hls_session.ttl", &raw.ttl, DEFAULT_HLS_SESSION_TTL)?;
    if ttl < Duration::from_secs(10) {
        return Err(invalid(
            "auth.hls_session.ttl",
            "must be at least 10s: a player fetches segments a few target durations after their playlist",
        ));
    }
    let max_age = duration(
        "auth.hls_session.max_age",
        &raw.max_age,
        DEFAULT_HLS_SESSION_MAX_AGE,
    )?;
    if max_age < ttl {
        return Err(invalid(
            "auth.hls_session.max_age",
            "must be at least auth.hls_session.ttl",
        ));
    }
    Ok(HlsSessionSettings {
        secret: raw.secret.map(String::into_bytes),
        ttl,
        max_age,
        bind_ip: raw.bind_ip.unwrap_or(false),
    })
}

fn validate_hook(raw: &RawHook) -> Result<HookSettings, ConfigError> {
    let url = BaseUrl::parse(&raw.url)
        .map_err(|why| invalid("auth.hook.url", format!("{:?}: {why}", raw.url)))?;
    if url.scheme != "http" {
        return Err(invalid(
            "auth.hook.url",
            "the hook is reached over plain http, like the nodes",
        ));
    }
    let format = match raw.format.as_deref() {
        None | Some("json") => HookFormat::Json,
        Some("srs") => HookFormat::Srs,
        Some(other) => {
            return Err(invalid(
                "auth.hook.format",
                format!("{other:?} is not one of json, srs"),
            ))
        }
    };
    let timeout = duration("auth.hook.timeout", &raw.timeout, DEFAULT_HOOK_TIMEOUT)?;
    if timeout < Duration::from_millis(10) {
        return Err(invalid("auth.hook.timeout", "must be at least 10ms"));
    }
    let cache_ttl = duration(
        "auth.hook.cache_ttl",
        &raw.cache_ttl,
        DEFAULT_HOOK_CACHE_TTL,
    )?;
    let deny_ttl = duration("auth.hook.deny_ttl", &raw.deny_ttl, DEFAULT_HOOK_DENY_TTL)?;
    let cache_size = raw.cache_size.unwrap_or(DEFAULT_HOOK_CACHE_SIZE);
    if cache_size > MAX_HOOK_CACHE_SIZE {
        return Err(invalid(
            "auth.hook.cache_size",
            format!("at most {MAX_HOOK_CACHE_SIZE}"),
        ));
    }
    let max_concurrent = raw.max_concurrent.unwrap_or(DEFAULT_HOOK_MAX_CONCURRENT);
    if !(1..=10_000).contains(&max_concurrent) {
        return Err(invalid("auth.hook.max_concurrent", "must be 1 to 10000"));
    }
    Ok(HookSettings {
        url,
        format,
        timeout,
        cache_ttl,
        deny_ttl,
        cache_size,
        max_concurrent,
        fail_open: raw.fail_open.unwrap_or(false),
    })
}

/// `[auth.jwt]`: reads the key files at start, so a bad key stops the gateway with its name.
fn validate_jwt(raw: RawJwt) -> Result<JwtSettings, ConfigError> {
    let mut static_keys = Vec::new();
    if let Some(secret) = &raw.hs256_secret {
        if secret.len() < MIN_SECRET_LEN {
            return Err(invalid(
                "auth.jwt.hs256_secret",
                format!("must be at least {MIN_SECRET_LEN} bytes (e.g. `openssl rand -hex 32`)"),
            ));
        }
        static_keys.push(
            JwtKey::hs256(secret.as_bytes()).map_err(|e| invalid("auth.jwt.hs256_secret", e))?,
        );
    }
    for (i, path) in raw.public_keys.iter().enumerate() {
        let key = format!("auth.jwt.public_keys[{i}]");
        let pem = std::fs::read(path).map_err(|e| invalid(&key, format!("{path:?}: {e}")))?;
        static_keys
            .push(JwtKey::from_pem(&pem).map_err(|e| invalid(&key, format!("{path:?}: {e}")))?);
    }
    if let Some(url) = &raw.jwks_url {
        if raw.jwks_file.is_some() {
            return Err(invalid(
                "auth.jwt.jwks_url",
                "give jwks_file or jwks_url, not both",
            ));
        }
        let base = crate::upstream_path::BaseUrl::parse(url.split('?').next().unwrap_or(url))
            .map_err(|e| invalid("auth.jwt.jwks_url", format!("{url:?}: {e}")))?;
        if base.scheme != "http" {
            return Err(invalid(
                "auth.jwt.jwks_url",
                "only http:// for now (no TLS client)",
            ));
        }
        url.parse::<http::Uri>()
            .map_err(|e| invalid("auth.jwt.jwks_url", format!("{url:?}: {e}")))?;
    }
    let jwks_keys = match &raw.jwks_file {
        Some(path) => {
            read_jwks_file(path.as_ref()).map_err(|e| invalid("auth.jwt.jwks_file", e))?
        }
        None => Vec::new(),
    };
    if static_keys.is_empty() && raw.jwks_file.is_none() && raw.jwks_url.is_none() {
        return Err(invalid(
            "auth.jwt",
            "needs a key: hs256_secret, public_keys, jwks_file or jwks_url",
        ));
    }
    if static_keys.len() + jwks_keys.len() > MAX_KEYS {
        return Err(invalid(
            "auth.jwt",
            format!("more than {MAX_KEYS} keys in all"),
        ));
    }
    let jwks_refresh = duration(
        "auth.jwt.jwks_refresh",
        &raw.jwks_refresh,
        DEFAULT_JWKS_REFRESH,
    )?;
    if jwks_refresh < Duration::from_millis(100) {
        return Err(invalid("auth.jwt.jwks_refresh", "must be at least 100ms"));
    }
    let leeway = duration("auth.jwt.leeway", &raw.leeway, DEFAULT_JWT_LEEWAY)?;
    if leeway > Duration::from_secs(600) {
        return Err(invalid("auth.jwt.leeway", "at most 10m"));
    }
    let claim = |key: &str, v: Option<String>| match v {
        Some(c) if c.is_empty() => Err(invalid(format!("auth.jwt.{key}"), "cannot be empty")),
        v => Ok(v),
    };
    Ok(JwtSettings {
        static_keys,
        jwks_file: raw.jwks_file.map(Into::into),
        jwks_url: raw.jwks_url,
        jwks_keys,
        jwks_refresh,
        leeway: leeway.as_secs(),
        issuers: raw.issuer.map(StringOrList::into_vec).unwrap_or_default(),
        audiences: raw.audience.map(StringOrList::into_vec).unwrap_or_default(),
        streams_claim: claim("streams_claim", raw.streams_claim)?
            .unwrap_or_else(|| "streams".into()),
        paths_claim: claim("paths_claim", raw.paths_claim)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, AuthMode};

    fn err(text: &str) -> String {
        parse(text).expect_err("must fail").to_string()
    }

    const KEYS: &str = "[auth]\nsigning_keys = [{ id = \"k2\", secret = \"0123456789abcdef-new\" }, { id = \"k1\", secret = \"0123456789abcdef-old\" }]\n";
    const ROUTE: &str =
        "[[routes]]\npath = \"/v/{*rest}\"\naction = \"redirect\"\nto = \"http://127.0.0.1:1\"\n";

    #[test]
    fn signing_keys_and_secure_link() {
        let s = parse(&format!("{KEYS}{ROUTE}auth = \"signed\"\n")).expect("valid");
        assert_eq!(s.auth.signing_keys.len(), 2);
        assert_eq!(s.auth.signing_keys[0].id, "k2");
        assert_eq!(s.routes[0].auth, AuthMode::Signed);
        assert!(!format!("{:?}", s.auth).contains("0123456789abcdef"));
        assert_eq!(s.auth.redirect_link_ttl, DEFAULT_REDIRECT_LINK_TTL);

        let sl = "[auth]\nsecure_link_secret_expression = \"$secure_link_expires$uri$remote_addr s\"\nredirect_link_ttl = \"1m\"\n";
        let s = parse(&format!(
            "{sl}{ROUTE}auth = \"secure_link\"\nsign_location = true\n"
        ))
        .expect("valid");
        assert_eq!(s.routes[0].auth, AuthMode::SecureLink);
        assert!(s.routes[0].sign_location);
        assert_eq!(s.auth.redirect_link_ttl, Duration::from_secs(60));
    }

    #[test]
    fn hook_settings() {
        let hook = "[auth.hook]\nurl = \"http://127.0.0.1:9/check\"\n";
        let s = parse(&format!("{hook}{ROUTE}auth = \"hook\"\n")).expect("valid");
        assert_eq!(s.routes[0].auth, AuthMode::Hook);
        let h = s.auth.hook.expect("hook");
        assert_eq!(h.url.join("", None), "http://127.0.0.1:9/check");
        assert_eq!(h.format, HookFormat::Json);
        assert_eq!(h.timeout, DEFAULT_HOOK_TIMEOUT);
        assert_eq!(h.cache_ttl, DEFAULT_HOOK_CACHE_TTL);
        assert_eq!(h.deny_ttl, DEFAULT_HOOK_DENY_TTL);
        assert_eq!(h.cache_size, DEFAULT_HOOK_CACHE_SIZE);
        assert_eq!(h.max_concurrent, DEFAULT_HOOK_MAX_CONCURRENT);
        assert!(!h.fail_open);
        let full = "[auth.hook]\nurl = \"http://127.0.0.1:9/on_play\"\nformat = \"srs\"\ntimeout = \"500ms\"\ncache_ttl = \"1m\"\ndeny_ttl = \"0s\"\ncache_size = 10\nmax_concurrent = 2\nfail_open = true\n";
        let h = parse(full).expect("valid").auth.hook.expect("hook");
        assert_eq!(h.format, HookFormat::Srs);
        assert_eq!(h.timeout, Duration::from_millis(500));
        assert_eq!(h.deny_ttl, Duration::ZERO);
        assert_eq!((h.cache_size, h.max_concurrent, h.fail_open), (10, 2, true));

        assert!(err(&format!("{ROUTE}auth = \"hook\"\n")).starts_with("routes[0].auth:"));
        for (bad, key) in [
            ("url = \"https://a/x\"", "auth.hook.url:"),
            ("url = \"nope\"", "auth.hook.url:"),
            (
                "url = \"http://a/x\"\nformat = \"xml\"",
                "auth.hook.format:",
            ),
            (
                "url = \"http://a/x\"\ntimeout = \"0s\"",
                "auth.hook.timeout:",
            ),
            (
                "url = \"http://a/x\"\nmax_concurrent = 0",
                "auth.hook.max_concurrent:",
            ),
            (
                "url = \"http://a/x\"\ncache_size = 99999999",
                "auth.hook.cache_size:",
            ),
        ] {
            let e = err(&format!("[auth.hook]\n{bad}\n"));
            assert!(e.starts_with(key), "{e}");
        }
        assert!(err("[auth.hook]\nurl = \"http://a/x\"\nsecret = 1\n").contains("secret"));
    }

    #[test]
    fn errors_name_the_key() {
        assert!(err(&format!("{ROUTE}auth = \"signed\"\n")).starts_with("routes[0].auth:"));
        assert!(err(&format!("{ROUTE}auth = \"secure_link\"\n")).starts_with("routes[0].auth:"));
        assert!(
            err(&format!("{ROUTE}sign_location = true\n")).starts_with("routes[0].sign_location:")
        );
        let proxy = "[auth]\nsecure_link_secret_expression = \"$uri s\"\n[[nodes]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n[[routes]]\npath = \"/v/{*rest}\"\naction = \"proxy\"\nto = \"a\"\nsign_location = true\n";
        assert!(err(proxy).starts_with("routes[0].sign_location:"));
        let e =
            err("[auth]\nsecure_link_secret_expression = \"$secure_link_expires$request_uri s\"\n");
        assert!(e.starts_with("auth.secure_link_secret_expression:"), "{e}");
        assert!(e.contains("$request_uri"), "{e}");
        assert!(
            err("[auth]\nsigning_keys = [{ id = \"k1\", secret = \"short\" }]\n")
                .starts_with("auth.signing_keys[0].secret:")
        );
        assert!(
            err("[auth]\nsigning_keys = [{ id = \"k 1\", secret = \"0123456789abcdef\" }]\n")
                .starts_with("auth.signing_keys[0].id:")
        );
        let dup = "[auth]\nsigning_keys = [{ id = \"k1\", secret = \"0123456789abcdef\" }, { id = \"k1\", secret = \"0123456789abcdeg\" }]\n";
        assert!(err(dup).starts_with("auth.signing_keys[1].id:"));
        assert!(err("[auth]\nredirect_link_ttl = \"0s\"\n").starts_with("auth.redirect_link_ttl:"));
        assert!(err(
            "[auth]\nsigning_keys = [{ id = \"k1\", secret = \"0123456789abcdef\", x = 1 }]\n"
        )
        .contains('x'));
    }

    #[test]
    fn hls_session_settings() {
        let proxy = "[[nodes]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n[[routes]]\npath = \"/hls/{stream}/{*rest}\"\naction = \"proxy\"\nto = \"a\"\n";
        let s = parse(&format!(
            "{KEYS}{proxy}auth = \"signed\"\nhls_session = true\n"
        ))
        .expect("valid");
        assert!(s.routes[0].hls_session);
        let h = &s.auth.hls_session;
        assert_eq!(h.secret, None);
        assert_eq!(h.ttl, DEFAULT_HLS_SESSION_TTL);
        assert_eq!(h.max_age, DEFAULT_HLS_SESSION_MAX_AGE);
        assert!(!h.bind_ip);
        let table = "[auth.hls_session]\nsecret = \"0123456789abcdef-hls\"\nttl = \"1m\"\nmax_age = \"2h\"\nbind_ip = true\n";
        let s = parse(&format!(
            "{KEYS}{table}{proxy}auth = \"signed\"\nhls_session = true\n"
        ))
        .expect("valid");
        let h = &s.auth.hls_session;
        assert_eq!(h.ttl, Duration::from_secs(60));
        assert_eq!(h.max_age, Duration::from_secs(7200));
        assert!(h.bind_ip);
        assert!(!format!("{:?}", s.auth).contains("0123456789abcdef-hls"));

        let e = err(&format!("{proxy}hls_session = true\n"));
        assert!(e.starts_with("routes[0].hls_session:"), "{e}");
        let e = err(&format!(
            "{KEYS}{ROUTE}auth = \"signed\"\nhls_session = true\n"
        ));
        assert!(e.starts_with("routes[0].hls_session:"), "{e}");
        for (bad, key) in [
            ("secret = \"short\"", "auth.hls_session.secret:"),
            ("ttl = \"5s\"", "auth.hls_session.ttl:"),
            (
                "ttl = \"10m\"\nmax_age = \"5m\"",
                "auth.hls_session.max_age:",
            ),
            ("ttl = \"soon\"", "auth.hls_session.ttl:"),
        ] {
            let e = err(&format!("[auth.hls_session]\n{bad}\n"));
            assert!(e.starts_with(key), "{e}");
        }
        assert!(err("[auth.hls_session]\nkey = \"x\"\n").contains("key"));
    }

    const JWT_ROUTE: &str =
        "[[routes]]\npath = \"/live/{stream}.flv\"\naction = \"redirect\"\nto = \"http://127.0.0.1:1\"\nauth = \"jwt\"\n";

    #[test]
    fn jwt_settings() {
        let s = parse(&format!(
            "[auth.jwt]\nhs256_secret = \"0123456789abcdef-jwt\"\naudience = \"sg\"\nissuer = [\"a\", \"b\"]\n{JWT_ROUTE}"
        ))
        .expect("valid");
        assert_eq!(s.routes[0].auth, AuthMode::Jwt);
        let j = s.auth.jwt.as_ref().expect("jwt");
        assert_eq!(j.leeway, 30);
        assert_eq!(j.jwks_refresh, DEFAULT_JWKS_REFRESH);
        assert_eq!(j.audiences, ["sg"]);
        assert_eq!(j.issuers, ["a", "b"]);
        assert_eq!(j.streams_claim, "streams");
        assert!(!format!("{:?}", s.auth).contains("0123456789abcdef"));
    }

    #[test]
    fn jwt_errors_name_the_key() {
        assert!(err(JWT_ROUTE).starts_with("routes[0].auth:"));
        let no_stream = "[auth.jwt]\nhs256_secret = \"0123456789abcdef-jwt\"\n[[routes]]\npath = \"/v/{*rest}\"\naction = \"redirect\"\nto = \"http://127.0.0.1:1\"\nauth = \"jwt\"\n";
        assert!(err(no_stream).starts_with("routes[0].auth:"));
        assert!(
            parse(&no_stream.replace("[[routes]]", "paths_claim = \"paths\"\n[[routes]]")).is_ok()
        );
        assert!(err("[auth.jwt]\n").starts_with("auth.jwt:"));
        assert!(err("[auth.jwt]\nhs256_secret = \"short\"\n").starts_with("auth.jwt.hs256_secret:"));
        let e = err("[auth.jwt]\npublic_keys = [\"/nonexistent/k.pem\"]\n");
        assert!(e.starts_with("auth.jwt.public_keys[0]:"), "{e}");
        let e = err("[auth.jwt]\njwks_file = \"/nonexistent/jwks.json\"\n");
        assert!(e.starts_with("auth.jwt.jwks_file:"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .expect("write");
        let e = err(&format!(
            "[auth.jwt]\npublic_keys = [{:?}]\n",
            bad.display().to_string()
        ));
        assert!(e.starts_with("auth.jwt.public_keys[0]:"), "{e}");
        let s = "[auth.jwt]\nhs256_secret = \"0123456789abcdef-jwt\"\n";
        assert!(err(&format!("{s}leeway = \"1h\"\n")).starts_with("auth.jwt.leeway:"));
        assert!(err(&format!("{s}jwks_refresh = \"1ms\"\n")).starts_with("auth.jwt.jwks_refresh:"));
        assert!(err(&format!("{s}streams_claim = \"\"\n")).starts_with("auth.jwt.streams_claim:"));
        let e = err(&format!("{s}jwks_url = \"https://idp/jwks\"\n"));
        assert!(e.starts_with("auth.jwt.jwks_url:"), "{e}");
        let both = "[auth.jwt]\njwks_file = \"/x\"\njwks_url = \"http://idp/jwks\"\n";
        assert!(err(both).starts_with("auth.jwt.jwks_url:"));
        let url = parse("[auth.jwt]\njwks_url = \"http://127.0.0.1:9/.well-known/jwks.json\"\n")
            .expect("valid");
        assert!(url.auth.jwt.expect("jwt").jwks_url.is_some());
    }
}
