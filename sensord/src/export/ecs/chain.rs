//! `tls.server.certificate_chain`: the PEM of every certificate an event's chain names. The
//! journal keeps certificates apart from events (by SHA-256, once each), so the exporters that
//! write ECS look them up here, through a cache bounded in bytes: chains repeat.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use base64::Engine as _;
use sensor_core::event::Event;

use crate::journal::Journal;

/// About this many bytes of PEM are cached; past it the cache starts again.
const CACHE_BYTES: usize = 4 << 20;

/// PEM chains for events, read from the journal at `journal`.
pub struct Chains {
    journal: PathBuf,
    /// SHA-256 (lowercase hex) → its PEM, or `None`: the journal does not hold it (retention
    /// deleted it).
    cache: HashMap<String, Option<Arc<str>>>,
    bytes: usize,
}

impl Chains {
    pub fn new(journal: PathBuf) -> Self {
        Self {
            journal,
            cache: HashMap::new(),
            bytes: 0,
        }
    }

    /// The PEM of each certificate of the event's chain, in its order. A certificate the
    /// journal does not hold, or cannot be read now, is left out.
    pub fn of(&mut self, event: &Event) -> Vec<Arc<str>> {
        let chain = &event.handshake.chain;
        if chain.iter().any(|c| !self.cache.contains_key(&c.sha256)) {
            match Journal::open_read(&self.journal) {
                Ok(j) => {
                    for c in chain {
                        if self.cache.contains_key(&c.sha256) {
                            continue;
                        }
                        match j.certificate(&c.sha256) {
                            Ok(der) => self.insert(&c.sha256, der.map(|d| Arc::from(pem(&d)))),
                            Err(e) => tracing::debug!("certificate {}: {e}", c.sha256),
                        }
                    }
                }
                Err(e) => tracing::debug!("certificates for ECS: {e}"),
            }
        }
        chain
            .iter()
            .filter_map(|c| self.cache.get(&c.sha256).cloned().flatten())
            .collect()
    }

    fn insert(&mut self, sha256: &str, pem: Option<Arc<str>>) {
        let size = sha256.len() + pem.as_ref().map_or(0, |p| p.len());
        if self.bytes + size > CACHE_BYTES {
            self.cache.clear();
            self.bytes = 0;
        }
        self.bytes += size;
        self.cache.insert(sha256.to_owned(), pem);
    }
}

/// A certificate's DER as PEM (RFC 7468: base64 in lines of 64).
pub fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 60);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_lines_are_64_characters() {
        let p = pem(&[0xAB; 100]);
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        // 100 bytes are 136 base64 characters: 64, 64, 8.
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 64);
        assert_eq!(lines[3].len(), 8);
        assert_eq!(lines[4], "-----END CERTIFICATE-----");
        let b64: String = lines[1..4].concat();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
            vec![0xAB; 100]
        );
    }
}
