//! `[auth]`: viewer tokens, signing keys for signed URLs, and the nginx `secure_link`
//! expression.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use super::{duration, invalid, ConfigError};
use crate::auth::{SecureLink, SigningKey};

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
}

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
}

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
    Ok(AuthSettings {
        tokens: raw.tokens,
        signing_keys,
        secure_link,
        redirect_link_ttl,
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
}
