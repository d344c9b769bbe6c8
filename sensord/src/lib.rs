//! sensord, the sensor daemon: the edges around the pure `sensor-core`.
//!
//! [`kernel`] loads and attaches the eBPF programs and hands out their ring buffer;
//! [`process`] finds the process behind a socket; [`daemon`] runs the pipeline (ring records →
//! engine → attribution → probe → verdict → journal queue); [`journal`] stores events durably
//! and [`journal::follow`] reads them back for every subscriber; [`api`] serves them over gRPC
//! and [`export`] writes them out; [`reload`] loads a new configuration off the capture path;
//! [`status`] is what the tasks share about their state. See
//! ARCHITECTURE.md.

pub mod api;
pub mod clock;
pub mod daemon;
pub mod export;
pub mod journal;
pub mod kernel;
pub mod process;
pub mod reload;
pub mod status;
