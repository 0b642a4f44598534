//! streamgate: the front door of a live and on-demand video cluster.
//!
//! A request walks one way: listener (`server`) → `router` → `auth` → action (`redirect`,
//! `proxy`, live through `fanout`); every request to a node goes through the one transport
//! (`upstream`). The [`registry`] answers which node holds a stream; it is asked by the request
//! path, never pushed into by it. [`origin`] is the media node used by the demo, the tests and
//! the benchmarks. `metrics` owns the one Prometheus registry behind `/metrics`.
//!
//! Only what the binary, the benchmark tool and the integration tests use is public; the
//! request path's modules are the crate's own.
#![forbid(unsafe_code)]

pub(crate) mod access_log;
pub(crate) mod admin;
pub mod auth;
pub(crate) mod backoff;
pub mod body;
pub(crate) mod cache;
pub(crate) mod client_addr;
pub mod config;
pub(crate) mod cors;
pub mod demo;
pub(crate) mod error;
pub(crate) mod fanout;
pub mod fd_limit;
pub(crate) mod fleet;
pub mod gateway;
pub(crate) mod http1;
pub(crate) mod limits;
pub(crate) mod metrics;
pub mod origin;
pub(crate) mod proxy;
pub(crate) mod proxy_protocol;
pub(crate) mod redirect;
pub mod registry;
pub mod reload;
pub(crate) mod request_id;
pub(crate) mod router;
pub mod server;
pub(crate) mod splice;
pub(crate) mod stall_timeout;
pub mod tls;
pub(crate) mod upstream;
pub mod upstream_path;
pub(crate) mod websocket;

/// The transport's HTTP/1.1 answer reader (head parser, body decoder), public for the load
/// generator's live viewers: one reader of node answers, not a second one in the bench.
pub mod answer {
    pub use crate::upstream::h1::body::{Decoded, Decoder};
    pub use crate::upstream::h1::parse::{parse, Framing, Head, Parsed};
}

/// The FLV codec lives in its own crate (`crates/flv`, with its fuzz target).
pub use streamgate_flv as flv;
