//! The gRPC API (sensor.v1): Watch, ListEvents, GetCertificate, GetStatus, Reload; over a Unix
//! socket and, with mTLS, TCP. An edge.

pub mod access;
pub mod authority;
pub mod convert;
pub mod server;
pub mod service;
