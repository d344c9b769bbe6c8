//! The host-side edges both programs share, without eBPF: the trust stores read from files
//! ([`trust`]), sensord's configuration file ([`config`]), the active probe ([`probe`]), the
//! analysis of capture files ([`analyze`]) and the one-line terminal form of an event
//! ([`render`]). They do I/O on behalf of the pure `sensor-core`.

/// The version and the commit the programs were built from, as `--version` prints them after
/// the program's name: `0.1.0 (commit 0123456789ab)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SENSOR_COMMIT"),
    ")"
);

/// The commit the programs were built from (`unknown` outside a git checkout).
pub const COMMIT: &str = env!("SENSOR_COMMIT");

pub mod analyze;
pub mod config;
pub mod identity;
pub mod probe;
pub mod render;
pub mod trust;
