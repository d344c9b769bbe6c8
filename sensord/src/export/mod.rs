//! Exports: JSON lines to a file (for log shippers), their ECS form, syslog (RFC 5424 over TCP
//! or TLS, JSON, ECS or CEF), OpenTelemetry logs (OTLP over gRPC or HTTP), and Prometheus
//! metrics.
//! Edges. Every push export follows the journal ([`crate::journal::follow`]) with a cursor it
//! persists, so that a restart resumes where it stopped.

pub mod connect;
pub mod cursor;
pub mod ecs;
pub mod jsonl;
pub mod metrics;
pub mod otlp;
pub mod syslog;
pub mod worker;
