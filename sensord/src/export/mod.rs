//! Exports: JSON lines to a file (for log shippers), their ECS form, and Prometheus metrics.
//! Edges. Every push export follows the journal ([`crate::journal::follow`]) with a cursor it
//! persists, so that a restart resumes where it stopped.

pub mod cursor;
pub mod ecs;
pub mod jsonl;
pub mod metrics;
