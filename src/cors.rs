//! CORS per route (`cors`): preflights answered by the gateway, and the route's headers on every
//! answer (redirects and errors too), replacing whatever CORS headers a node sent.

use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
    VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::body::{empty, Body};
use crate::config::{Action, CorsPolicy};
use crate::error::GatewayError;

/// Headers a player may read from our answers (sizes and ranges for seeking, the id for support).
const EXPOSE: &str = "Content-Length, Content-Range, Accept-Ranges, X-Request-Id";
/// Request headers a player may send: the viewer token and ranges.
const ALLOW_HEADERS: &str = "Authorization, Range, X-Request-Id";
/// How long a browser may cache a preflight answer, in seconds.
const MAX_AGE: &str = "600";

/// Whether `req` is a CORS preflight (not any `OPTIONS`: one without these headers is the
/// node's business on a proxy route).
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(ORIGIN)
        && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
pub fn allow_origin(policy: &CorsPolicy, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
    match policy {
        CorsPolicy::Any => Some(HeaderValue::from_static("*")),
        CorsPolicy::List(list) => {
            let o = origin?;
            let s = o.to_str().ok()?;
            list.iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(s))
                .then(|| o.clone())
        }
    }
}

/// Answers a preflight: 204 with the allowances, or 403 when the origin is not listed.
pub fn preflight(
    policy: &CorsPolicy,
    origin: Option<&HeaderValue>,
    action: Action,
) -> Result<Response<Body>, GatewayError> {
    if allow_origin(policy, origin).is_none() {
        return Err(GatewayError::CorsForbidden);
    }
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    let methods = match action {
        // A proxy route forwards any method to the node.
        Action::Proxy | Action::Auto => "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
        Action::Redirect | Action::Live => "GET, HEAD, OPTIONS",
    };
    h.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    h.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
    Ok(resp)
}

/// Puts the route's CORS headers on an answer. Any `Access-Control-*` header already there is
/// removed first (a node's own policy never leaks through), except on the gateway's own
/// preflight answer (`preflight`), whose allowances [`preflight`] has just set.
pub fn apply(
    policy: &CorsPolicy,
    origin: Option<&HeaderValue>,
    headers: &mut HeaderMap,
    preflight: bool,
) {
    if !preflight {
        let node_cors: Vec<_> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for k in node_cors {
            headers.remove(k);
        }
    }
    if matches!(policy, CorsPolicy::List(_)) {
        // The answer depends on the Origin: caches must keep one copy per origin.
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }
    // An origin not on the list gets no CORS headers at all.
    if let Some(v) = allow_origin(policy, origin) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, v);
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> CorsPolicy {
        CorsPolicy::List(vec!["https://a.example".into()])
    }

    #[test]
    fn node_headers_are_replaced_and_unlisted_origins_get_none() {
        let mut h = HeaderMap::new();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        h.insert(
            "access-control-allow-credentials",
            HeaderValue::from_static("true"),
        );
        let good = HeaderValue::from_static("https://A.example");
        apply(&list(), Some(&good), &mut h, false);
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://A.example");
        assert!(!h.contains_key("access-control-allow-credentials"));
        assert_eq!(h[VARY], "Origin");

        let mut h = HeaderMap::new();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        let bad = HeaderValue::from_static("https://evil.example");
        apply(&list(), Some(&bad), &mut h, false);
        assert!(!h.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        assert!(!h.contains_key(ACCESS_CONTROL_EXPOSE_HEADERS));

        let mut h = HeaderMap::new();
        apply(&CorsPolicy::Any, None, &mut h, false);
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!h.contains_key(VARY));
    }

    #[test]
    fn preflights() {
        let good = HeaderValue::from_static("https://a.example");
        let r = preflight(&list(), Some(&good), Action::Live).expect("allowed");
        assert_eq!(r.status(), 204);
        assert_eq!(
            r.headers()[ACCESS_CONTROL_ALLOW_METHODS],
            "GET, HEAD, OPTIONS"
        );
        let bad = HeaderValue::from_static("https://b.example");
        assert!(preflight(&list(), Some(&bad), Action::Live).is_err());
        assert!(preflight(&list(), None, Action::Live).is_err());
    }
}
