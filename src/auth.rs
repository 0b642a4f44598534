//! Viewer authentication. A token arrives as `?token=…` or `Authorization: Bearer …`; it is
//! compared in constant time so response timing does not leak how much of a guess was right.
//! Signed URLs: [`signed`] (native, HMAC-SHA256) and [`secure_link`] (nginx-compatible MD5);
//! every secret comparison goes through the one [`ct_eq`]. JWTs: [`jwt`]. An external service
//! decides for `auth = "hook"` routes: [`hook`]. The gateway's own HLS session signatures,
//! which stand in for a route's auth on the URIs of a playlist it served: [`session`].

pub mod hook;
pub mod jwt;
pub mod secure_link;
pub mod session;
pub mod signed;

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};

use crate::config::AuthMode;
use crate::error::GatewayError;
use crate::upstream_path::query_param;

pub use hook::{AuthHook, HookQuery};
pub use jwt::JwtAuth;
pub use secure_link::SecureLink;
pub use session::{HlsSessions, Session};
pub use signed::{SignedUrls, SigningKey};

/// Every way a route can check its viewers, built once from the config.
#[derive(Debug, Clone, Default)]
pub struct ViewerAuth {
    /// `auth = "token"`.
    pub tokens: TokenAuth,
    /// `auth = "signed"`: the signing keys, newest first.
    pub signed: SignedUrls,
    /// `auth = "secure_link"` and `sign_location`: the nginx `secure_link_md5` expression.
    pub secure_link: Option<SecureLink>,
    /// `auth = "hook"`: the external service, asked asynchronously ([`AuthHook::check`]).
    pub hook: Option<AuthHook>,
    /// `auth = "jwt"`: the `[auth.jwt]` keys and claim rules.
    pub jwt: Option<JwtAuth>,
    /// `hls_session = true` routes: the key that signs and checks session URLs.
    pub sessions: HlsSessions,
}

/// The parts of a request that authentication looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub headers: &'a HeaderMap,
    /// The path as in the URL (percent-encoded), without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The host the request named (request line, else `Host`), for nginx's `$host`.
    pub host: &'a str,
    /// The client's address (see `client_addr`: the TCP peer, the PROXY header's source, or
    /// what a trusted proxy's `X-Forwarded-For` says): what `ip=` and `$remote_addr` are about.
    pub client: IpAddr,
    /// The route's `{stream}` capture, when it has one (what a JWT's `streams` claim lists).
    pub stream: Option<&'a str>,
}

impl ViewerAuth {
    /// Ok when the request passes the route's `mode`, at unix time `now`.
    pub fn check(
        &self,
        mode: AuthMode,
        req: &RequestFacts<'_>,
        now: u64,
    ) -> Result<(), GatewayError> {
        match mode {
            AuthMode::None => Ok(()),
            AuthMode::Token => self.tokens.check(req.headers, req.query),
            AuthMode::Signed => self.signed.verify(req.path, req.query, req.client, now),
            AuthMode::SecureLink => {
                // Config validation makes a `secure_link` route need the expression.
                let sl = self
                    .secure_link
                    .as_ref()
                    .ok_or(GatewayError::SignatureInvalid)?;
                let remote_addr = req.client.to_canonical().to_string();
                sl.verify(
                    &secure_link::Vars {
                        expires: "",
                        path: req.path,
                        remote_addr: &remote_addr,
                        host: req.host,
                        query: req.query,
                    },
                    now,
                )
            }
            // The hook is asked with `.await` by the gateway; reaching this is a bug.
            AuthMode::Hook => Err(GatewayError::Internal(
                "auth hook checked synchronously".into(),
            )),
            AuthMode::Jwt => {
                // Config validation makes a `jwt` route need `[auth.jwt]`.
                let jwt = self.jwt.as_ref().ok_or(GatewayError::Unauthorized)?;
                let token =
                    query_param(req.query, jwt::QUERY_PARAM).or_else(|| bearer(req.headers));
                jwt.check(token.as_deref(), req.stream, req.path)
            }
        }
    }

    /// The credential a viewer presented: `?token=`, else `Authorization: Bearer`.
    pub fn presented_credential(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
        query_param(query, "token")
            .or_else(|| bearer(headers))
            .filter(|t| !t.is_empty())
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The accepted viewer tokens.
#[derive(Debug, Clone, Default)]
pub struct TokenAuth {
    tokens: Vec<String>,
}

impl TokenAuth {
    pub fn new(tokens: Vec<String>) -> Self {
        Self { tokens }
    }

    /// Ok when the request carries one of the tokens.
    pub fn check(&self, headers: &HeaderMap, query: Option<&str>) -> Result<(), GatewayError> {
        let presented = query_param(query, "token").or_else(|| bearer(headers));
        match presented {
            Some(t)
                if self
                    .tokens
                    .iter()
                    .any(|k| ct_eq(k.as_bytes(), t.as_bytes())) =>
            {
                Ok(())
            }
            _ => Err(GatewayError::Unauthorized),
        }
    }
}

impl TokenAuth {
    /// Whether any `Authorization` header carries one of the viewer tokens.
    pub fn carries_viewer_token(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .any(|v| self.is_viewer_credential(v))
    }

    /// Removes every `Authorization` header that carries a viewer token, on any route: such a
    /// header is the viewer's credential and never goes to a node. Other credentials (meant for
    /// the node) stay, in their order.
    pub fn remove_viewer_credentials(&self, headers: &mut HeaderMap) {
        if !self.carries_viewer_token(headers) {
            return;
        }
        let keep: Vec<HeaderValue> = headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .filter(|v| !self.is_viewer_credential(v))
            .cloned()
            .collect();
        headers.remove(http::header::AUTHORIZATION);
        for v in keep {
            headers.append(http::header::AUTHORIZATION, v);
        }
    }

    fn is_viewer_credential(&self, v: &HeaderValue) -> bool {
        bearer_value(v).is_some_and(|t| {
            self.tokens
                .iter()
                .any(|k| ct_eq(k.as_bytes(), t.as_bytes()))
        })
    }
}

/// The token of the first `Authorization: Bearer` header (what a token route checks).
fn bearer(headers: &HeaderMap) -> Option<String> {
    bearer_value(headers.get(http::header::AUTHORIZATION)?)
}

fn bearer_value(v: &HeaderValue) -> Option<String> {
    let (scheme, token) = v.to_str().ok()?.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// Constant-time equality for equal lengths (length itself is not secret). The one constant-time
/// compare of the codebase: tokens, signatures and secure_link hashes all go through it.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"h00k", b"h00k"));
        assert!(!ct_eq(b"h00k", b"h00x"));
        assert!(!ct_eq(b"h00k", b"h00"));
    }

    #[test]
    fn query_and_bearer() {
        let a = TokenAuth::new(vec!["s3cret".into()]);
        let mut h = HeaderMap::new();
        assert!(a.check(&h, Some("token=s3cret&x=1")).is_ok());
        assert!(a.check(&h, Some("token=s3cre")).is_err());
        assert!(a.check(&h, None).is_err());
        h.insert("authorization", "Bearer s3cret".parse().expect("hv"));
        assert!(a.check(&h, None).is_ok());
        h.insert("authorization", "Basic s3cret".parse().expect("hv"));
        assert!(a.check(&h, None).is_err());
    }

    #[test]
    fn every_viewer_credential_goes() {
        let a = TokenAuth::new(vec!["s3cret".into()]);
        let mut h = HeaderMap::new();
        h.append("authorization", "Bearer node-key".parse().expect("hv"));
        h.append("authorization", "Bearer s3cret".parse().expect("hv"));
        h.append("authorization", "bearer  s3cret ".parse().expect("hv"));
        h.append("authorization", "Basic abc".parse().expect("hv"));
        assert!(a.carries_viewer_token(&h));
        a.remove_viewer_credentials(&mut h);
        let left: Vec<&str> = h
            .get_all("authorization")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(left, ["Bearer node-key", "Basic abc"]);
        assert!(!a.carries_viewer_token(&h));
    }
}
