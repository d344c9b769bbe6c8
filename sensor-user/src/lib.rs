//! The userspace half of the TLS interception sensor.
//!
//! The analysis core — [`reassembly`], [`tls`], [`engine`], [`event`] — is pure: no I/O, no
//! async, no clock reads. The edges — [`capture`] (kernel tap), [`process`] (/proc lookups) and
//! [`daemon`] — do the I/O and feed the core. See ARCHITECTURE.md.

pub mod analyze;
pub mod api;
pub mod capture;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod event;
pub mod export;
pub mod journal;
pub mod probe;
pub mod process;
pub mod reassembly;
pub mod tls;
pub mod trust;
pub mod verdict;
pub mod x509;
