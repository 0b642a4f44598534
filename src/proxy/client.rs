//! The one pooled upstream client every proxied request shares.

use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Body;
use crate::config::UpstreamSettings;

/// The pooled HTTP/1 client to nodes.
pub type UpstreamClient = Client<HttpConnector, Body>;

/// Builds the client from the transport settings. The pool timer is what makes
/// `idle_timeout` take effect (hyper-util ignores it without one); TCP_NODELAY keeps the first
/// bytes of a live stream from waiting on Nagle.
pub fn build(s: &UpstreamSettings) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(s.connect_timeout));
    http.set_keepalive(Some(s.tcp_keepalive));
    http.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(s.idle_timeout)
        .pool_max_idle_per_host(s.max_idle_per_node)
        .build(http)
}
