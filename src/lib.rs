//! streamgate: the front door of a live and on-demand video cluster.
//!
//! A request walks one way: listener ([`server`]) → [`router`] → [`auth`] → action
//! ([`redirect`], [`proxy`], live: [`fanout`]). The [`registry`] answers which node holds a stream; it is
//! asked by the request path, never pushed into by it. [`origin`] is the media node used by the
//! demo, the tests and the benchmarks.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod backoff;
pub mod body;
pub mod config;
pub mod cors;
pub mod demo;
pub mod error;
pub mod fanout;
pub mod gateway;
pub mod limits;
pub mod origin;
pub mod proxy;
pub mod redirect;
pub mod registry;
pub mod request_id;
pub mod router;
pub mod server;
pub mod stall_timeout;
pub mod upstream;
pub mod upstream_path;

/// The FLV codec lives in its own crate (`crates/flv`, with its fuzz target).
pub use streamgate_flv as flv;
