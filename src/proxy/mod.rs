//! Reverse proxying: send the viewer's request to a node through the one transport
//! ([`crate::upstream`]) and stream the node's answer back as it arrives. Bodies are never
//! buffered: they stream through in both directions, and dropping the viewer's
//! response drops the upstream connection.

pub mod headers;
pub mod playlist;

use std::sync::Arc;
use std::time::Duration;

use crate::body::RequestBody;
use http::{request::Parts, HeaderValue, Request, Response, Uri};
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;

use crate::upstream::PooledBody;

use crate::body::{empty, Body, BoxError};
use crate::client_addr::Client;
use crate::error::GatewayError;
use crate::registry::Node;
use crate::upstream::Transport;
use crate::upstream_path::BaseUrl;

/// What one forward needs besides the request.
pub struct Forward<'a> {
    /// Candidate nodes, preferred first; later ones are tried only if a bodiless request finds
    /// the earlier ones unreachable or silent (see [`Transport::send_any`]).
    pub nodes: &'a [Arc<Node>],
    /// Rendered upstream path plus the query without credentials.
    pub path_and_query: &'a str,
    /// Drop every `Authorization` header (the route checks a viewer token).
    pub strip_authorization: bool,
    /// Who the request is from: what the forwarding headers say (`headers::to_upstream`).
    pub client: &'a Client,
    pub request_id: &'a HeaderValue,
    pub public_url: &'a BaseUrl,
    /// The route's path mapping, for `Location` rewriting.
    pub path_map: Option<headers::PathMap<'a>>,
    /// Counts the request body's bytes as they go to the node (the route's metric).
    pub request_bytes: &'a Counter,
    /// The answer may be spliced to the viewer ([`crate::splice::offer`]); the answer's side
    /// of the decision is [`crate::splice::answer`]'s.
    pub splice: Option<crate::splice::Offer>,
}

/// Sends the request upstream; returns the node's response (headers cleaned, body streaming)
/// and the node that answered.
pub async fn forward(
    transport: &Transport,
    parts: Parts,
    body: RequestBody,
    f: Forward<'_>,
) -> Result<(Response<Body>, Arc<Node>), GatewayError> {
    // HTTP/2 has no Transfer-Encoding: a streamed upload shows only as a body not yet ended.
    let declared = has_body(&parts) || !http_body::Body::is_end_stream(&body);
    send(transport, parts, Some(body), declared, f).await
}

/// [`forward`] for a request without a body: the cache's fills (`crate::cache`), which are
/// the gateway's own requests on behalf of many viewers.
pub async fn fetch(
    transport: &Transport,
    parts: Parts,
    f: Forward<'_>,
) -> Result<(Response<Body>, Arc<Node>), GatewayError> {
    send(transport, parts, None, false, f).await
}

async fn send(
    transport: &Transport,
    parts: Parts,
    body: Option<RequestBody>,
    declared: bool,
    f: Forward<'_>,
) -> Result<(Response<Body>, Arc<Node>), GatewayError> {
    let uri_path = f.path_and_query;
    let mut f = f;
    let splice = f.splice.take();
    let mut body = body;
    let (resp, node) = transport
        .send_any(f.nodes, |node| {
            let req_body: Body = match body.take() {
                // A body the viewer declared goes once; a retry (bodiless only) sends none.
                Some(b) if declared => {
                    let count = f.request_bytes.clone();
                    b.map_frame(move |frame| {
                        if let Some(d) = frame.data_ref() {
                            count.inc_by(d.len() as u64);
                        }
                        frame
                    })
                    .map_err(|e| Box::new(e) as BoxError)
                    .boxed()
                }
                _ => empty(),
            };
            build_request(&parts, req_body, node, uri_path, &f)
        })
        .await?;
    Ok((
        finish_response(
            resp,
            &node.url,
            f.public_url,
            f.path_map,
            transport.body_idle_timeout(),
            splice,
        ),
        node,
    ))
}

/// Headers a forwarded request may gain: `X-Forwarded-For`, `X-Real-IP`, `X-Forwarded-Proto`,
/// `X-Forwarded-Host`, `Via`, `Host`, `X-Request-Id`.
const ADDED_HEADERS: usize = 7;

fn build_request(
    parts: &Parts,
    body: Body,
    node: &Node,
    path_and_query: &str,
    f: &Forward<'_>,
) -> Result<Request<Body>, GatewayError> {
    // From the owned `String`, so the URI takes its bytes instead of copying them.
    let uri = Uri::try_from(node.url.join(path_and_query, None))
        .map_err(|_| GatewayError::BadRequest("path cannot be forwarded"))?;
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    // The viewer's headers in their order, in a map with room for the forwarding headers
    // `headers::to_upstream` and this function add (a clone is full: each addition would grow
    // and rehash it).
    let h = req.headers_mut();
    h.reserve(parts.headers.len() + ADDED_HEADERS);
    for (k, v) in &parts.headers {
        h.append(k.clone(), v.clone());
    }
    // HTTP/2 carries the host in `:authority` (the URI), not in a `Host` header.
    if !req.headers().contains_key(http::header::HOST) {
        if let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
    headers::to_upstream(
        req.headers_mut(),
        f.client,
        &node.url,
        f.strip_authorization,
    );
    req.headers_mut()
        .insert(crate::request_id::HEADER, f.request_id.clone());
    Ok(req)
}

fn finish_response(
    resp: Response<PooledBody>,
    node: &BaseUrl,
    public: &BaseUrl,
    map: Option<headers::PathMap<'_>>,
    body_idle_timeout: Duration,
    splice: Option<crate::splice::Offer>,
) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    headers::to_downstream(&mut parts.headers, node, public, map);
    let body = crate::splice::answer(splice, &parts, body, body_idle_timeout);
    Response::from_parts(parts, body)
}

/// Whether the viewer's request declares a body (chunked, or a non-zero length).
fn has_body(parts: &Parts) -> bool {
    parts.headers.contains_key(http::header::TRANSFER_ENCODING)
        || parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}
