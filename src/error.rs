//! The one place where an error becomes a status and a JSON body.
//!
//! Every error carries where it came from ([`Source`]): the viewer's request, the node, or us.
//! The access log records the same code the viewer sees, so a support ticket quoting a request id
//! leads straight to the cause.

use http::{HeaderValue, Response, StatusCode};
use serde_json::json;

use crate::body::{json_response, Body, BoxError};
use crate::upstream::{ErrorKind, UpstreamError};

/// Which side an error comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The viewer's request is wrong or not allowed.
    Downstream,
    /// The node failed or did not answer in time.
    Upstream,
    /// Something in the gateway itself.
    Internal,
}

/// Everything that can stop a request from being served.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("no route matches this path")]
    NoRoute,
    #[error("bad path: {0}")]
    BadPath(&'static str),
    #[error("stream name must match [A-Za-z0-9_.-]{{1,128}} without \"..\"")]
    BadStreamName,
    #[error("a request header or query could not be used: {0}")]
    BadRequest(&'static str),
    #[error("missing or wrong token")]
    Unauthorized,
    /// Refused by the auth hook (or the hook could not be asked and `fail_open` is off).
    #[error("access refused: {0}")]
    Forbidden(&'static str),
    /// A JWT was presented but is forged, expired, or for another issuer or audience.
    #[error("invalid or expired token")]
    TokenInvalid,
    /// A valid JWT that does not list the stream (or path) asked for.
    #[error("the token does not allow this stream")]
    ForbiddenStream,
    #[error("missing, forged or misplaced URL signature")]
    SignatureInvalid,
    #[error("the signed URL has expired")]
    SignatureExpired,
    /// HLS session parameters that are incomplete, forged, or for another path or address.
    #[error("missing, forged or misplaced HLS session signature")]
    SessionInvalid,
    /// A genuine HLS session URL past its `hls_e`.
    #[error("the HLS session has expired; load the stream again")]
    SessionExpired,
    /// On an `hls_session` route, a node's playlist larger than the gateway rewrites.
    #[error("node {node} sent a playlist larger than {limit} bytes")]
    PlaylistTooLarge { node: String, limit: usize },
    /// On an `hls_session` route, a node's playlist the gateway cannot rewrite.
    #[error("node {node} sent a playlist that cannot be rewritten: {why}")]
    PlaylistUnreadable { node: String, why: &'static str },
    #[error("stream {0:?} is not on any node")]
    StreamNotFound(String),
    #[error("every node holding stream {0:?} is down")]
    NodeUnavailable(String),
    /// Every node that could serve the request is drained by an operator.
    #[error("every node that could serve {0:?} is draining")]
    Draining(String),
    /// Every member of a node group (`[[groups]]`) is down, cooling down or draining.
    #[error("every member of group {0:?} is down or draining")]
    GroupUnavailable(String),
    #[error("no viewer {id} watches stream {stream:?}")]
    ViewerNotFound { stream: String, id: u64 },
    #[error("node {node} is unreachable: {source}")]
    UpstreamConnect { node: String, source: BoxError },
    #[error("node {node} sent no response headers within {secs:.1}s")]
    UpstreamTimeout { node: String, secs: f64 },
    #[error("node {node} failed: {source}")]
    Upstream { node: String, source: BoxError },
    #[error("the request body stopped arriving for {secs:.1}s")]
    RequestBodyTimeout { secs: f64 },
    /// The path exists but does not serve this method; carries the methods it serves (the
    /// `Allow` header and the message name them).
    #[error("this path serves only {0}")]
    MethodNotAllowed(std::borrow::Cow<'static, str>),
    /// A WebSocket handshake for a version other than 13 (RFC 6455 section 4.2.2).
    #[error("WebSocket version 13 only")]
    WebSocketVersion,
    #[error("too many {what} from this address; retry in {retry_after}s")]
    TooManyRequests {
        /// Which per-client limit was hit (`requests`, `connections`, `live viewers`).
        what: &'static str,
        /// Whole seconds until a retry can succeed (the `Retry-After` header), at least 1.
        retry_after: u64,
    },
    #[error("origin not allowed by this route's CORS policy")]
    CorsForbidden,
    #[error("over capacity: {0}")]
    Overloaded(&'static str),
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
    // Registry writes (REST API and media-server hooks).
    #[error("{0}")]
    BadBody(String),
    #[error("request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("node {0:?} is not registered (PUT /api/v1/nodes/{0} first)")]
    UnknownNode(String),
    #[error("node {0:?} is not registered")]
    NodeNotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("publish refused: missing or wrong publish token")]
    PublishForbidden,
    #[error("{0} is turned off in the config")]
    Disabled(&'static str),
    #[error("the player library {0} is not installed: run `npm ci --prefix web`")]
    NotInstalled(&'static str),
    #[error("the shared registry store cannot be reached; try again")]
    RegistryUnavailable,
    #[error("the registry is full ({0} entries)")]
    RegistryFull(usize),
    /// A config reload found the file invalid: the message `check-config` prints. The running
    /// config stays.
    #[error("{0}")]
    ConfigInvalid(String),
    /// A config reload could not run or be applied (busy, shutting down, a registry write).
    #[error("{0}")]
    ReloadFailed(String),
}

impl GatewayError {
    /// The status and the stable machine-readable code viewers and logs see.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::NoRoute => (StatusCode::NOT_FOUND, "not_found"),
            Self::BadPath(_) => (StatusCode::BAD_REQUEST, "bad_path"),
            Self::BadStreamName => (StatusCode::BAD_REQUEST, "bad_stream_name"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::TokenInvalid => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::ForbiddenStream => (StatusCode::FORBIDDEN, "forbidden_stream"),
            // A signed URL is a capability, not a login: 403, as CDNs and nginx answer.
            Self::SignatureInvalid => (StatusCode::FORBIDDEN, "signature_invalid"),
            Self::SignatureExpired => (StatusCode::FORBIDDEN, "signature_expired"),
            Self::SessionInvalid => (StatusCode::FORBIDDEN, "session_invalid"),
            Self::SessionExpired => (StatusCode::FORBIDDEN, "session_expired"),
            Self::PlaylistTooLarge { .. } => (StatusCode::BAD_GATEWAY, "playlist_too_large"),
            Self::PlaylistUnreadable { .. } => (StatusCode::BAD_GATEWAY, "playlist_unreadable"),
            Self::StreamNotFound(_) => (StatusCode::NOT_FOUND, "stream_not_found"),
            Self::NodeUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "node_unavailable"),
            Self::Draining(_) => (StatusCode::SERVICE_UNAVAILABLE, "node_draining"),
            Self::GroupUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "node_unavailable"),
            Self::ViewerNotFound { .. } => (StatusCode::NOT_FOUND, "viewer_not_found"),
            Self::UpstreamConnect { .. } => (StatusCode::BAD_GATEWAY, "upstream_unreachable"),
            Self::UpstreamTimeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            Self::Upstream { .. } => (StatusCode::BAD_GATEWAY, "upstream_error"),
            Self::RequestBodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::WebSocketVersion => (StatusCode::UPGRADE_REQUIRED, "upgrade_required"),
            Self::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Self::CorsForbidden => (StatusCode::FORBIDDEN, "cors_forbidden"),
            Self::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Self::BadBody(_) => (StatusCode::BAD_REQUEST, "bad_body"),
            // The issue asks for 400 (not 413) so hooks and scripts see one "your request is bad".
            Self::BodyTooLarge(_) => (StatusCode::BAD_REQUEST, "body_too_large"),
            Self::UnknownNode(_) => (StatusCode::BAD_REQUEST, "unknown_node"),
            Self::NodeNotFound(_) => (StatusCode::NOT_FOUND, "node_not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::PublishForbidden => (StatusCode::FORBIDDEN, "publish_forbidden"),
            Self::Disabled(_) => (StatusCode::NOT_FOUND, "disabled"),
            Self::ConfigInvalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "config_invalid"),
            Self::ReloadFailed(_) => (StatusCode::SERVICE_UNAVAILABLE, "reload_failed"),
            Self::NotInstalled(_) => (StatusCode::NOT_FOUND, "not_installed"),
            Self::RegistryUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "registry_unavailable"),
            Self::RegistryFull(_) => (StatusCode::SERVICE_UNAVAILABLE, "registry_full"),
        }
    }

    /// A client request to `node` that failed, classified as [`UpstreamError`] would be.
    pub fn from_upstream(node: &str, e: hyper_util::client::legacy::Error) -> Self {
        UpstreamError::new(node, ErrorKind::classify(&e, false)).into()
    }

    /// The node an upstream error is about (for the access log's `node=`).
    pub fn node(&self) -> Option<&str> {
        match self {
            Self::UpstreamConnect { node, .. }
            | Self::UpstreamTimeout { node, .. }
            | Self::Upstream { node, .. }
            | Self::PlaylistTooLarge { node, .. }
            | Self::PlaylistUnreadable { node, .. } => Some(node),
            _ => None,
        }
    }

    /// Which side the error comes from, as the access log names it.
    pub fn side_name(&self) -> &'static str {
        match self.source_side() {
            Source::Downstream => "downstream",
            Source::Upstream => "upstream",
            Source::Internal => "internal",
        }
    }

    /// Which side the error comes from.
    pub fn source_side(&self) -> Source {
        match self {
            Self::UpstreamConnect { .. }
            | Self::UpstreamTimeout { .. }
            | Self::Upstream { .. }
            | Self::PlaylistTooLarge { .. }
            | Self::PlaylistUnreadable { .. } => Source::Upstream,
            Self::Internal(_)
            | Self::RegistryUnavailable
            | Self::RegistryFull(_)
            | Self::ReloadFailed(_) => Source::Internal,
            _ => Source::Downstream,
        }
    }

    /// The JSON response for this error, naming the request id.
    pub fn to_response(&self, request_id: &str) -> Response<Body> {
        let (status, body) = self.to_json(request_id);
        let mut resp = json_response(status, &body);
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static(if matches!(self, Self::TokenInvalid) {
                    "Bearer error=\"invalid_token\""
                } else {
                    "Bearer"
                }),
            );
        }
        if let Self::MethodNotAllowed(allow) = self {
            if let Ok(v) = HeaderValue::from_str(allow) {
                resp.headers_mut().insert(http::header::ALLOW, v);
            }
        }
        if let Self::WebSocketVersion = self {
            // The versions this server speaks, as the RFC requires with the refusal.
            resp.headers_mut().insert(
                http::header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        if let Self::TooManyRequests { retry_after, .. } = self {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        resp
    }

    /// The status and JSON body for this error; callers that must add a field for a peer's
    /// protocol (SRS hooks want a non-zero `code`) start from here.
    pub fn to_json(&self, request_id: &str) -> (StatusCode, serde_json::Value) {
        let (status, code) = self.status_and_code();
        let mut body = json!({ "error": code, "request_id": request_id });
        match self {
            Self::StreamNotFound(s) | Self::NodeUnavailable(s) => {
                body["stream"] = json!(s);
            }
            // Viewers learn what went wrong, not the node's address.
            Self::UpstreamConnect { .. } => {
                body["message"] = json!("the media node could not be reached")
            }
            Self::UpstreamTimeout { .. } => {
                body["message"] = json!("the media node did not answer in time")
            }
            Self::Upstream { .. } => body["message"] = json!("the media node failed"),
            Self::PlaylistTooLarge { limit, .. } => {
                body["message"] = json!(format!(
                    "the media node's playlist is larger than {limit} bytes"
                ))
            }
            Self::PlaylistUnreadable { why, .. } => {
                body["message"] = json!(format!("the media node's playlist {why}"))
            }
            Self::Internal(_) => body["message"] = json!("internal error"),
            other => body["message"] = json!(other.to_string()),
        }
        (status, body)
    }
}

/// The one mapping of a failed upstream attempt: connect → 502 `upstream_unreachable`, no
/// headers in time (or the node stopped reading the upload) → 504 `upstream_timeout`, other
/// node failures → 502 `upstream_error`; the viewer's own broken body → 400 `bad_body`, its
/// stalled body → 408 `request_timeout` (both logged `side=downstream`).
impl From<UpstreamError> for GatewayError {
    fn from(e: UpstreamError) -> Self {
        let node = e.node;
        match e.kind {
            ErrorKind::Connect(source) => Self::UpstreamConnect { node, source },
            ErrorKind::ConnectTimeout => Self::UpstreamConnect {
                node,
                source: "connect timed out".into(),
            },
            ErrorKind::HeaderTimeout(d) | ErrorKind::UploadStalled(d) => Self::UpstreamTimeout {
                node,
                secs: d.as_secs_f64(),
            },
            ErrorKind::Closed(source) | ErrorKind::Other(source) => Self::Upstream { node, source },
            ErrorKind::ClientBody(why) => {
                Self::BadBody(format!("the request body could not be read: {why}"))
            }
            ErrorKind::ClientBodyTimeout(d) => Self::RequestBodyTimeout {
                secs: d.as_secs_f64(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping() {
        let e = GatewayError::StreamNotFound("cam9".into());
        assert_eq!(
            e.status_and_code(),
            (StatusCode::NOT_FOUND, "stream_not_found")
        );
        let r = e.to_response("rid1");
        assert_eq!(r.status(), 404);
        let t = GatewayError::UpstreamTimeout {
            node: "a".into(),
            secs: 1.0,
        };
        assert_eq!(t.status_and_code().0, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(t.source_side(), Source::Upstream);
        assert_eq!(GatewayError::Unauthorized.source_side(), Source::Downstream);
        let r = GatewayError::TooManyRequests {
            what: "requests",
            retry_after: 3,
        }
        .to_response("r");
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "3");
        assert_eq!(
            GatewayError::SignatureInvalid.status_and_code(),
            (StatusCode::FORBIDDEN, "signature_invalid")
        );
        assert_eq!(
            GatewayError::SignatureExpired.status_and_code(),
            (StatusCode::FORBIDDEN, "signature_expired")
        );
        assert_eq!(
            GatewayError::SessionInvalid.status_and_code(),
            (StatusCode::FORBIDDEN, "session_invalid")
        );
        assert_eq!(
            GatewayError::SessionExpired.status_and_code(),
            (StatusCode::FORBIDDEN, "session_expired")
        );
        let big = GatewayError::PlaylistTooLarge {
            node: "n1".into(),
            limit: 1 << 20,
        };
        assert_eq!(
            big.status_and_code(),
            (StatusCode::BAD_GATEWAY, "playlist_too_large")
        );
        assert_eq!(big.source_side(), Source::Upstream);
        assert_eq!(big.node(), Some("n1"));
        assert!(!big.to_json("r").1.to_string().contains("n1"));
        assert_eq!(
            GatewayError::Forbidden("no").status_and_code(),
            (StatusCode::FORBIDDEN, "forbidden")
        );
        assert_eq!(
            GatewayError::ShuttingDown.status_and_code(),
            (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
        );
    }

    #[test]
    fn upstream_errors_map_once() {
        use std::time::Duration;
        let cases: Vec<(ErrorKind, u16, &str, Source)> = vec![
            (
                ErrorKind::Connect("refused".into()),
                502,
                "upstream_unreachable",
                Source::Upstream,
            ),
            (
                ErrorKind::ConnectTimeout,
                502,
                "upstream_unreachable",
                Source::Upstream,
            ),
            (
                ErrorKind::HeaderTimeout(Duration::from_secs(1)),
                504,
                "upstream_timeout",
                Source::Upstream,
            ),
            (
                ErrorKind::UploadStalled(Duration::from_secs(1)),
                504,
                "upstream_timeout",
                Source::Upstream,
            ),
            (
                ErrorKind::Closed("reset".into()),
                502,
                "upstream_error",
                Source::Upstream,
            ),
            (
                ErrorKind::Other("bad".into()),
                502,
                "upstream_error",
                Source::Upstream,
            ),
            (
                ErrorKind::ClientBody("bad chunk".into()),
                400,
                "bad_body",
                Source::Downstream,
            ),
            (
                ErrorKind::ClientBodyTimeout(Duration::from_secs(1)),
                408,
                "request_timeout",
                Source::Downstream,
            ),
        ];
        for (kind, status, code, side) in cases {
            let up = UpstreamError::new("n1", kind);
            assert_eq!(up.side(), side, "{up}");
            let g = GatewayError::from(up);
            assert_eq!(
                g.status_and_code(),
                (StatusCode::from_u16(status).expect("status"), code)
            );
            assert_eq!(g.source_side(), side, "{g}");
            // The viewer never learns the node's id or address.
            assert!(!g.to_json("r").1.to_string().contains("n1"), "{g}");
        }
    }
}
