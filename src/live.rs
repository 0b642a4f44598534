//! The live fan-out under its former name: everything is in [`crate::fanout`], the one fan-out
//! engine shared by the gateway's hubs and the origin's file looper.

pub use crate::fanout::*;
