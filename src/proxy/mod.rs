//! Reverse proxying: send the viewer's request to a node with the pooled client and stream the
//! node's answer back as it arrives. Bodies are never buffered: hyper's `Incoming` passes through
//! in both directions, and dropping the viewer's response drops the upstream connection.

pub mod client;
pub mod headers;
pub mod idle_body;

use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{request::Parts, HeaderValue, Method, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::{empty, Body, BoxError};
use crate::error::GatewayError;
use crate::registry::Node;
use crate::upstream_path::BaseUrl;

pub use client::UpstreamClient;

/// What one forward needs besides the request.
pub struct Forward<'a> {
    /// Candidate nodes, preferred first; later ones are tried only if a bodiless request cannot
    /// connect to the earlier ones.
    pub nodes: &'a [Arc<Node>],
    /// Rendered upstream path plus the query without credentials.
    pub path_and_query: &'a str,
    /// Drop the viewer's `Authorization` (it carried a viewer token).
    pub strip_authorization: bool,
    pub peer: SocketAddr,
    pub request_id: &'a HeaderValue,
    pub public_url: &'a BaseUrl,
    /// The route's path mapping, for `Location` rewriting.
    pub path_map: Option<headers::PathMap<'a>>,
    pub response_header_timeout: Duration,
    /// The node's body may stay silent this long before the response is aborted.
    pub body_idle_timeout: Duration,
}

/// Sends the request upstream; returns the node's response (headers cleaned, body streaming)
/// and the node that answered.
pub async fn forward(
    client: &UpstreamClient,
    parts: Parts,
    body: Incoming,
    f: Forward<'_>,
) -> Result<(Response<Body>, Arc<Node>), GatewayError> {
    let replayable = is_bodiless(&parts);
    let mut body = Some(body);
    let mut last_err = None;
    for node in f.nodes {
        // A reused pooled connection may have been closed by the node just as we sent on it;
        // hyper then reports an incomplete message. One retry is safe for a bodiless request.
        let attempts = if replayable { 2 } else { 1 };
        for attempt in 0..attempts {
            let req_body: Body = if replayable {
                empty()
            } else {
                match body.take() {
                    Some(b) => b.map_err(|e| Box::new(e) as BoxError).boxed(),
                    None => empty(),
                }
            };
            let req = build_request(&parts, req_body, node, &f)?;
            let sent = tokio::time::timeout(f.response_header_timeout, client.request(req)).await;
            match sent {
                Err(_) => {
                    return Err(GatewayError::UpstreamTimeout {
                        node: node.id.clone(),
                        secs: f.response_header_timeout.as_secs_f64(),
                    })
                }
                Ok(Ok(resp)) => {
                    return Ok((
                        finish_response(
                            resp,
                            &node.url,
                            f.public_url,
                            f.path_map,
                            f.body_idle_timeout,
                        ),
                        node.clone(),
                    ))
                }
                Ok(Err(e)) => {
                    let retry_same = attempt + 1 < attempts && is_stale_connection(&e);
                    let connect = e.is_connect();
                    tracing::debug!(node = %node.id, error = %e, request_id = f.request_id.to_str().unwrap_or_default(), "upstream request failed");
                    last_err = Some(GatewayError::from_upstream(&node.id, e));
                    if retry_same {
                        continue;
                    }
                    if connect && replayable {
                        break; // try the next node
                    }
                    return Err(
                        last_err.unwrap_or_else(|| GatewayError::Internal("no error".into()))
                    );
                }
            }
        }
    }
    Err(last_err.unwrap_or_else(|| GatewayError::Internal("no node to forward to".into())))
}

fn build_request(
    parts: &Parts,
    body: Body,
    node: &Node,
    f: &Forward<'_>,
) -> Result<Request<Body>, GatewayError> {
    // From the owned `String`, so the URI takes its bytes instead of copying them.
    let uri = Uri::try_from(node.url.join(f.path_and_query, None))
        .map_err(|_| GatewayError::BadRequest("path cannot be forwarded"))?;
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = parts.headers.clone();
    headers::to_upstream(req.headers_mut(), f.peer, &node.url, f.strip_authorization);
    req.headers_mut()
        .insert(crate::request_id::HEADER, f.request_id.clone());
    Ok(req)
}

fn finish_response(
    resp: Response<Incoming>,
    node: &BaseUrl,
    public: &BaseUrl,
    map: Option<headers::PathMap<'_>>,
    body_idle_timeout: Duration,
) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    headers::to_downstream(&mut parts.headers, node, public, map);
    Response::from_parts(
        parts,
        idle_body::IdleTimeoutBody::new(body, body_idle_timeout).boxed(),
    )
}

/// A request we can send again: no body framing and a method without side effects.
fn is_bodiless(parts: &Parts) -> bool {
    let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let has_body = parts.headers.contains_key(http::header::TRANSFER_ENCODING)
        || parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    safe && !has_body
}

/// Whether the error is hyper's "connection closed before message completed" on a pooled
/// connection (or a request the pool cancelled), which a fresh connection fixes.
fn is_stale_connection(e: &hyper_util::client::legacy::Error) -> bool {
    let mut src = e.source();
    while let Some(s) = src {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            return h.is_incomplete_message() || h.is_canceled();
        }
        src = s.source();
    }
    false
}
