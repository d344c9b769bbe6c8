//! The analysis core of the TLS interception sensor.
//!
//! Pure by construction: this crate depends on no kernel loader, async runtime, database or
//! RPC library, does no I/O of its own (readers and writers are handed in) and reads no clock.
//! Time enters through segment timestamps and [`engine::Engine::advance`]. Sources (the kernel
//! tap, capture files) feed it [`capture::Segment`]s; sinks read the typed [`event::Event`].
//! Fuzzers and benchmarks drive it directly. See ARCHITECTURE.md.

#[macro_use]
mod names;

pub mod capture;
pub mod engine;
pub mod event;
pub mod filter;
pub mod http;
pub mod probe;
pub mod quic;
pub mod reassembly;
pub mod timestamp;
pub mod tls;
pub mod trust;
pub mod verdict;
pub mod x509;

pub use names::UnknownName;
