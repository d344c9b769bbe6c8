//! The host-side edges both programs share, without eBPF: the trust stores read from files
//! ([`trust`]), sensord's configuration file ([`config`]), the active probe ([`probe`]), the
//! analysis of capture files ([`analyze`]) and the one-line terminal form of an event
//! ([`render`]). They do I/O on behalf of the pure `sensor-core`.

pub mod analyze;
pub mod config;
pub mod probe;
pub mod render;
pub mod trust;
