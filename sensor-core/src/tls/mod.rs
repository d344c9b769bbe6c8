//! TLS parsing: record framing ([`record`]), hello messages ([`hello`]) and alert names
//! ([`alert`]). Pure: bytes in, summaries out.

pub mod alert;
pub mod fingerprint;
pub mod hello;
pub mod record;
