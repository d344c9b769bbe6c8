//! What the verdict engine trusts: the host's store, the public Web PKI, pins, approved
//! inspection CAs, and the catalogue of known interception products.
//!
//! A [`TrustContext`] is plain data once built. Building it reads files ([`load`], an edge);
//! everything that parses text takes the text and the file name, so errors can name both the
//! file and the line.

pub mod catalogue;
pub mod pins;

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, TrustAnchor};

pub use catalogue::Catalogue;
pub use pins::Pins;

/// An error in a trust input, with where it is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct TrustError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl TrustError {
    pub fn new(file: impl Into<String>, line: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line,
            message: message.into(),
        }
    }
}

/// The 1-based line of byte offset `at` in `text`.
pub fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Facts about one trust anchor, for the checks webpki does not do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnchorInfo {
    /// DER of the subject Name, with its SEQUENCE header (as certificates carry it).
    pub subject_der: Vec<u8>,
    /// The subject in RFC 4514-ish text.
    pub subject: String,
    /// DER of the SubjectPublicKeyInfo, with its SEQUENCE header.
    pub spki_der: Vec<u8>,
    /// Base64 SHA-256 of the SPKI (the pin format).
    pub spki_sha256: String,
}

/// A set of trust anchors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Store {
    /// `host` or `public`.
    pub name: &'static str,
    /// Where the anchors came from, for explanations and status.
    pub source: String,
    pub anchors: Vec<TrustAnchor<'static>>,
    pub info: Vec<AnchorInfo>,
    /// Whether certificates chaining here are expected to carry SCTs (the Web PKI does).
    pub expects_sct: bool,
}

/// DER of a SEQUENCE with the given contents.
fn wrap_sequence(contents: &[u8]) -> Vec<u8> {
    let len = contents.len();
    let mut out = Vec::with_capacity(len + 4);
    out.push(0x30);
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(contents);
    out
}

impl Store {
    /// A store of anchors as webpki holds them (subject and SPKI without their headers).
    pub fn from_anchors(
        name: &'static str,
        source: impl Into<String>,
        anchors: Vec<TrustAnchor<'static>>,
        expects_sct: bool,
    ) -> Self {
        let info = anchors
            .iter()
            .map(|a| {
                let subject_der = wrap_sequence(a.subject.as_ref());
                let spki_der = wrap_sequence(a.subject_public_key_info.as_ref());
                let subject = name_text(&subject_der).unwrap_or_else(|| "?".into());
                AnchorInfo {
                    spki_sha256: crate::x509::sha256_b64(&spki_der),
                    subject_der,
                    spki_der,
                    subject,
                }
            })
            .collect();
        Self {
            name,
            source: source.into(),
            anchors,
            info,
            expects_sct,
        }
    }

    /// Mozilla's roots, compiled in (webpki-roots).
    pub fn mozilla() -> Self {
        Self::from_anchors(
            "public",
            "Mozilla's root store (webpki-roots, compiled in)",
            webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            true,
        )
    }

    /// Anchors made from CA certificates (DER). Certificates that are not usable as anchors are
    /// returned as errors, by index.
    pub fn from_certificates(
        name: &'static str,
        source: impl Into<String>,
        certs: &[CertificateDer<'_>],
        expects_sct: bool,
    ) -> (Self, Vec<(usize, String)>) {
        let mut anchors = Vec::new();
        let mut bad = Vec::new();
        for (i, c) in certs.iter().enumerate() {
            match webpki::anchor_from_trusted_cert(c) {
                Ok(a) => anchors.push(a.to_owned()),
                Err(e) => bad.push((i, format!("{e:?}"))),
            }
        }
        (Self::from_anchors(name, source, anchors, expects_sct), bad)
    }

    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// Anchors whose subject is `subject_der` (a Name with its header).
    pub fn by_subject<'a>(&'a self, subject_der: &'a [u8]) -> impl Iterator<Item = &'a AnchorInfo> {
        self.info
            .iter()
            .filter(move |i| i.subject_der == subject_der)
    }
}

/// The text of a DER Name (with its header), as x509-parser prints it.
fn name_text(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer;
    x509_parser::x509::X509Name::from_der(der)
        .ok()
        .map(|(_, n)| n.to_string())
}

/// A CA the organisation runs for inspection on purpose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Approved {
    /// Base64 SHA-256 of the CA's SPKI.
    Spki(String),
    /// The CA's subject, as the verdict engine prints names (`CN=..., O=...`).
    Subject(String),
}

/// Everything the verdict engine checks a chain against. Immutable; a reload builds a new one
/// with a higher generation.
#[derive(Clone, Debug)]
pub struct TrustContext {
    /// Grows with each reload; part of the verdict cache key.
    pub generation: u64,
    pub host: Arc<Store>,
    pub public: Arc<Store>,
    pub pins: Pins,
    pub catalogue: Arc<Catalogue>,
    pub approved: Vec<Approved>,
}

impl TrustContext {
    /// Whether `other` was built from the same inputs: the same anchors in both stores, pins,
    /// catalogue and approvals, whatever its generation. A reload that changes none of them
    /// keeps the context in force, and with it the verdict cache.
    pub fn same_inputs(&self, other: &TrustContext) -> bool {
        *self.host == *other.host
            && *self.public == *other.public
            && self.pins == other.pins
            && *self.catalogue == *other.catalogue
            && self.approved == other.approved
    }

    /// Whether a CA of the host store (by SPKI pin or subject text) is approved for
    /// inspection.
    pub fn is_approved(&self, spki_sha256: &str, subject: &str) -> bool {
        self.approves_key(spki_sha256)
            || self
                .approved
                .iter()
                .any(|a| matches!(a, Approved::Subject(s) if s == subject))
    }

    /// Whether a key is approved for inspection. For a CA the chain brings along (an
    /// intermediate), only its key counts: any CA the host trusts can name one after the
    /// approved CA.
    pub fn approves_key(&self, spki_sha256: &str) -> bool {
        self.approved
            .iter()
            .any(|a| matches!(a, Approved::Spki(s) if s == spki_sha256))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mozilla_roots_have_subjects_and_pins() {
        let store = Store::mozilla();
        assert!(store.len() > 100);
        assert!(store.info.iter().all(|i| i.spki_sha256.len() == 44));
        assert!(
            store
                .info
                .iter()
                .any(|i| i.subject.contains("ISRG Root X1")),
            "ISRG Root X1 is in Mozilla's store"
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = TrustError::new("/etc/sensor/pins.toml", Some(12), "bad pin");
        assert_eq!(e.to_string(), "/etc/sensor/pins.toml:12: bad pin");
        assert_eq!(line_of("a\nb\nc", 4), 3);
    }
}
