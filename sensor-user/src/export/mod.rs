//! Exports: JSON lines to a file (for log shippers) and Prometheus metrics. Edges.

pub mod ecs;
pub mod jsonl;
pub mod metrics;
