//! The active probe's pure parts: when to probe and what a probe's result is
//! ([`schedule`]), and the targets and proxies it is given ([`target`]). The connection itself
//! is an edge (`sensor_host::probe`).

pub mod schedule;
pub mod target;

pub use target::{Proxy, Target, TargetError};
