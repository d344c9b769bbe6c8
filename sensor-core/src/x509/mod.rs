//! Certificate summaries, parsed with x509-parser. Pure.
//!
//! A [`CertSummary`] keeps the DER (for path validation and the journal), its SHA-256 and the
//! SHA-256 of its SubjectPublicKeyInfo in the HPKP pin format, and the fields people and the
//! verdict engine look at.

use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_parser::{
    certificate::X509Certificate, extensions::GeneralName, prelude::FromDer, public_key::PublicKey,
};

use crate::timestamp::Timestamp;

/// One certificate of a chain. Its JSON form is part of the event's contract; read back (from
/// the journal) it has no DER.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertSummary {
    pub subject: String,
    pub issuer: String,
    /// Serial number, hex with colons.
    pub serial: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    /// Hex SHA-256 of the DER.
    pub sha256: String,
    /// Base64 SHA-256 of the SubjectPublicKeyInfo (the HPKP pin format).
    pub spki_sha256: String,
    /// `rsa`, `ec`, `ed25519`, `dsa` or the algorithm's OID.
    pub key_type: String,
    /// Key size in bits (0 when unknown).
    pub key_bits: u32,
    /// Signature algorithm OID name, such as `sha256WithRSAEncryption`.
    pub signature_algorithm: String,
    /// DNS names and IP addresses from subjectAltName.
    pub san: Vec<String>,
    pub is_ca: bool,
    /// Subject equals issuer.
    pub self_issued: bool,
    /// JA4X (FoxIO License 1.1; only with the `ja4plus` feature).
    #[cfg(feature = "ja4plus")]
    pub ja4x: Option<String>,
    /// Names were cut to what the sensor keeps ([`MAX_SAN_NAMES`] subjectAltNames of at most
    /// [`MAX_NAME_LEN`] bytes, distinguished names of at most [`MAX_DN_LEN`] bytes): written
    /// only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub names_cut: bool,
    /// The X.509 version (1 to 3).
    #[serde(default)]
    pub version: u32,
    /// Hex SHA-1 of the DER: SIEMs and older tools still look certificates up by it.
    #[serde(default)]
    pub sha1: String,
    /// The subject's parts (common names, organizations, ...), as SIEM schemas split them.
    #[serde(default)]
    pub subject_parts: NameParts,
    #[serde(default)]
    pub issuer_parts: NameParts,
    /// The named curve of an EC key (`secp256r1`, or the curve's OID when unnamed).
    #[serde(default)]
    pub public_key_curve: Option<String>,
    /// The public exponent of an RSA key (when it fits in 64 bits).
    #[serde(default)]
    pub public_key_exponent: Option<u64>,
    #[serde(skip)]
    pub der: Vec<u8>,
    /// Its JSON, once an event has written it (see [`JsonOnce`]).
    #[serde(skip)]
    pub json: JsonOnce,
    /// The digest of who it names ([`CertSummary::identity`]), once asked for.
    #[serde(skip)]
    pub identity_once: Memo<String>,
}

impl CertSummary {
    /// The SHA-256 (hex) of the subject and the sorted SANs: what the baseline remembers of a
    /// server's certificate, as the same identity across reissues with new keys and dates.
    /// Made once per summary (the summary cache shares one per certificate).
    pub fn identity(&self) -> &str {
        self.identity_once.0.get_or_init(|| {
            let mut names: Vec<&str> = self.san.iter().map(String::as_str).collect();
            names.sort_unstable();
            sha256_hex(format!("{}|{}", self.subject, names.join(",")).as_bytes())
        })
    }
}

/// A value worked out from a certificate summary once and kept with it. No part of the
/// summary: equal to any other, and empty when cloned or read back (a changed copy of a
/// summary is a clone, so it never keeps a value made from the original).
#[derive(Default)]
pub struct Memo<T>(std::sync::OnceLock<T>);

impl<T> Clone for Memo<T> {
    fn clone(&self) -> Self {
        Self(std::sync::OnceLock::new())
    }
}

impl<T> PartialEq for Memo<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for Memo<T> {}

impl<T> std::fmt::Debug for Memo<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memo")
    }
}

/// A certificate summary's JSON, kept once made. The summary cache hands the same
/// `Arc<CertSummary>` to every handshake that shows the certificate, so its strings are
/// escaped and formatted once rather than in every event (that was a tenth of
/// `sensorctl analyze -o json`). No part of the value: equal to any other, and empty when
/// cloned or read back. A summary is not changed once shared; a changed copy is a clone, so it
/// starts empty. Only JSON of at most [`MAX_KEPT_JSON`] bytes is kept, so that the summary
/// caches (1,024 summaries each) grow by at most 8 MiB whatever names an attacker's
/// certificates carry (escaping makes a control character six bytes); a larger one is written
/// afresh each time.
pub type JsonOnce = Memo<Option<Box<serde_json::value::RawValue>>>;

/// The largest certificate JSON a summary keeps (a usual one is about 1 KB).
pub const MAX_KEPT_JSON: usize = 8 << 10;

impl JsonOnce {
    /// The JSON of `cert` (whose cache this is), made on the first call; `None` when it is too
    /// large to keep (or cannot be made), and the caller writes `cert` itself.
    pub fn get_or_make(&self, cert: &CertSummary) -> Option<&serde_json::value::RawValue> {
        // Another thread may make it meanwhile: the same bytes either way.
        self.0
            .get_or_init(|| {
                serde_json::value::to_raw_value(cert)
                    .ok()
                    .filter(|json| json.get().len() <= MAX_KEPT_JSON)
            })
            .as_deref()
    }
}

/// The parts of a distinguished name, each as often as the name holds it (at most
/// [`MAX_NAME_PARTS`], each at most [`MAX_NAME_LEN`] bytes). Empty parts are not written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NameParts {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub common_name: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub organization: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub organizational_unit: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub country: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub locality: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub state_or_province: Vec<String>,
}

/// Values kept per part of a name.
pub const MAX_NAME_PARTS: usize = 8;

impl NameParts {
    fn of(name: &x509_parser::x509::X509Name<'_>) -> Self {
        fn keep<'a>(
            it: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
        ) -> Vec<String> {
            it.filter_map(|a| a.as_str().ok())
                .take(MAX_NAME_PARTS)
                .map(|v| bounded(v.to_owned(), MAX_NAME_LEN).0)
                .collect()
        }
        Self {
            common_name: keep(name.iter_common_name()),
            organization: keep(name.iter_organization()),
            organizational_unit: keep(name.iter_organizational_unit()),
            country: keep(name.iter_country()),
            locality: keep(name.iter_locality()),
            state_or_province: keep(name.iter_state_or_province()),
        }
    }
}

/// The name SIEMs use for a named curve's OID, or the OID.
fn curve_name(oid: &str) -> String {
    match oid {
        "1.2.840.10045.3.1.7" => "secp256r1".to_owned(),
        "1.3.132.0.34" => "secp384r1".to_owned(),
        "1.3.132.0.35" => "secp521r1".to_owned(),
        "1.3.132.0.10" => "secp256k1".to_owned(),
        "1.3.36.3.3.2.8.1.1.7" => "brainpoolP256r1".to_owned(),
        "1.3.36.3.3.2.8.1.1.11" => "brainpoolP384r1".to_owned(),
        "1.3.36.3.3.2.8.1.1.13" => "brainpoolP512r1".to_owned(),
        other => other.to_owned(),
    }
}

/// subjectAltNames kept per certificate: Let's Encrypt issues at most 100; a forged
/// certificate can carry thousands, each of which would go into every event and log line.
pub const MAX_SAN_NAMES: usize = 100;
/// Longest subjectAltName kept (a DNS name has at most 253 characters).
pub const MAX_NAME_LEN: usize = 255;
/// Longest subject or issuer text kept, cut on a character boundary and marked `…`.
pub const MAX_DN_LEN: usize = 1024;

/// `text` cut to at most `max` bytes on a character boundary, `…` marking the cut; whether it
/// was cut.
fn bounded(mut text: String, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    (text, true)
}

/// A certificate that did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("certificate does not parse: {0}")]
pub struct CertError(String);

/// Whether one of `san` (DNS names, `*.` wildcards for one label, IP addresses) names
/// `host`, ignoring case and a trailing dot. A loose match, for pairing a chain with a
/// handshake, not for validation (rustls-webpki does that).
pub fn names_host(san: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    san.iter().any(|name| {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => name == host,
        }
    })
}

/// Certificates kept from one chain at most, however many a server sends.
pub const MAX_CHAIN_LEN: usize = 16;

/// Hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Base64 SHA-256, as HPKP pins are written.
pub fn sha256_b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(data))
}

fn ts(t: &x509_parser::time::ASN1Time) -> Timestamp {
    let secs = t.timestamp();
    Timestamp(
        u64::try_from(secs)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000),
    )
}

/// The names of signature algorithm OIDs, built once.
fn oid_registry() -> &'static x509_parser::oid_registry::OidRegistry<'static> {
    static REGISTRY: std::sync::OnceLock<x509_parser::oid_registry::OidRegistry<'static>> =
        std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| x509_parser::oid_registry::OidRegistry::default().with_crypto())
}

/// Summaries of recently seen certificates, so that a chain seen again costs a hash lookup.
/// Keyed by a fast hash of the DER; a hit is confirmed by comparing the DER itself.
pub struct SummaryCache {
    cache: hashlink::LruCache<u64, Arc<CertSummary>>,
    pub hits: u64,
    pub misses: u64,
}

impl SummaryCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            cache: hashlink::LruCache::new(capacity.max(1)),
            hits: 0,
            misses: 0,
        }
    }

    /// The summary of `der`, from the cache or freshly made.
    pub fn summarize(&mut self, der: &[u8]) -> Result<Arc<CertSummary>, CertError> {
        use std::hash::BuildHasher as _;
        let key = foldhash::fast::FixedState::with_seed(0x5e50_7ce5).hash_one(der);
        if let Some(hit) = self.cache.get(&key)
            && hit.der == der
        {
            self.hits += 1;
            return Ok(hit.clone());
        }
        self.misses += 1;
        let summary = Arc::new(summarize(der)?);
        self.cache.insert(key, summary.clone());
        Ok(summary)
    }
}

/// Summarise one DER certificate.
pub fn summarize(der: &[u8]) -> Result<CertSummary, CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError(e.to_string()))?;
    let spki = cert.public_key();
    let mut public_key_curve = None;
    let mut public_key_exponent = None;
    let (key_type, key_bits) = match spki.parsed() {
        Ok(PublicKey::RSA(k)) => {
            let e = k.exponent;
            let e = &e[e.iter().take_while(|b| **b == 0).count()..];
            // Kept when it fits a signed 64-bit integer (ECS and OTLP type it so); a larger one
            // is left out rather than rejected downstream with the whole event.
            if e.len() <= 8 {
                let n = e.iter().fold(0u64, |n, b| n << 8 | u64::from(*b));
                public_key_exponent = i64::try_from(n).is_ok().then_some(n);
            }
            ("rsa".to_owned(), k.key_size())
        }
        Ok(PublicKey::EC(k)) => {
            public_key_curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| curve_name(&oid.to_id_string()));
            ("ec".to_owned(), k.key_size())
        }
        Ok(PublicKey::DSA(_)) => ("dsa".to_owned(), 0),
        _ => {
            let oid = spki.algorithm.algorithm.to_id_string();
            if oid == "1.3.101.112" {
                ("ed25519".to_owned(), 256)
            } else {
                (oid, 0)
            }
        }
    };
    let mut san: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some((*d).to_owned()),
                GeneralName::IPAddress(ip) => ip_to_string(ip),
                _ => None,
            })
            .take(MAX_SAN_NAMES + 1)
            .collect(),
        _ => Vec::new(),
    };
    let long_name = san.iter().any(|n| n.len() > MAX_NAME_LEN);
    san.retain(|n| n.len() <= MAX_NAME_LEN);
    let many_names = san.len() > MAX_SAN_NAMES;
    san.truncate(MAX_SAN_NAMES);
    let (subject, subject_cut) = bounded(cert.subject().to_string(), MAX_DN_LEN);
    let (issuer, issuer_cut) = bounded(cert.issuer().to_string(), MAX_DN_LEN);
    let sig_oid = &cert.signature_algorithm.algorithm;
    let signature_algorithm = oid_registry()
        .get(sig_oid)
        .map(|e| e.sn().to_owned())
        .unwrap_or_else(|| sig_oid.to_id_string());
    Ok(CertSummary {
        subject,
        issuer,
        serial: cert.raw_serial_as_string(),
        not_before: ts(&cert.validity().not_before),
        not_after: ts(&cert.validity().not_after),
        sha256: sha256_hex(der),
        spki_sha256: sha256_b64(spki.raw),
        key_type,
        key_bits: u32::try_from(key_bits).unwrap_or(0),
        signature_algorithm,
        san,
        is_ca: cert.is_ca(),
        self_issued: cert.subject().as_raw() == cert.issuer().as_raw(),
        #[cfg(feature = "ja4plus")]
        ja4x: crate::tls::fingerprint::ja4x(der),
        names_cut: long_name || many_names || subject_cut || issuer_cut,
        // The field is a bare INTEGER on the wire: a forged certificate may say anything.
        version: cert.version().0.checked_add(1).unwrap_or(0),
        sha1: hex::encode(sha1::Sha1::digest(der)),
        subject_parts: NameParts::of(cert.subject()),
        issuer_parts: NameParts::of(cert.issuer()),
        public_key_curve,
        public_key_exponent,
        der: der.to_vec(),
        json: JsonOnce::default(),
        identity_once: Memo::default(),
    })
}

/// The names a certificate gives its holder: the subject's common names, then its DNS
/// subjectAltNames. For recognising an mTLS client by name; the chain was validated by the TLS
/// layer.
pub fn holder_names(der: &[u8]) -> Result<Vec<String>, CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError(e.to_string()))?;
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        names.extend(ext.value.general_names.iter().filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        }));
    }
    Ok(names)
}

fn ip_to_string(ip: &[u8]) -> Option<String> {
    match ip.len() {
        4 => Some(std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string()),
        16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(ip);
            Some(std::net::Ipv6Addr::from(b).to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_certificate_with_too_many_or_too_long_names_is_cut_and_marked() {
        let mut names: Vec<String> = (0..5000).map(|i| format!("n{i}.example.test")).collect();
        names.push("x".repeat(300));
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        let cn = "C".repeat(5000);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn.as_str());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let s = super::summarize(cert.der()).unwrap();
        assert!(s.names_cut);
        assert_eq!(s.san.len(), super::MAX_SAN_NAMES);
        assert!(s.san.iter().all(|n| n.len() <= super::MAX_NAME_LEN));
        assert!(s.subject.len() <= super::MAX_DN_LEN && s.subject.ends_with('…'));
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.len() < 8 * 1024, "{} bytes", json.len());
        assert!(json.contains("\"names_cut\":true"));

        // An ordinary certificate keeps every name and says nothing of cutting.
        let ok = rcgen::generate_simple_self_signed(vec!["a.example.test".to_owned()]).unwrap();
        let s = super::summarize(ok.cert.der()).unwrap();
        assert!(!s.names_cut);
        assert!(!serde_json::to_string(&s).unwrap().contains("names_cut"));
    }

    #[test]
    fn names_are_split_into_parts_with_the_key_details() {
        let mut params = rcgen::CertificateParams::new(vec!["a.example.test".to_owned()]).unwrap();
        let dn = &mut params.distinguished_name;
        dn.push(rcgen::DnType::CommonName, "a.example.test");
        dn.push(rcgen::DnType::OrganizationName, "Example Org");
        dn.push(rcgen::DnType::OrganizationalUnitName, "Ops");
        dn.push(rcgen::DnType::CountryName, "DE");
        dn.push(rcgen::DnType::LocalityName, "Berlin");
        dn.push(rcgen::DnType::StateOrProvinceName, "Berlin State");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let s = super::summarize(cert.der()).unwrap();
        assert_eq!(s.version, 3);
        assert_eq!(s.subject_parts.common_name, ["a.example.test"]);
        assert_eq!(s.subject_parts.organization, ["Example Org"]);
        assert_eq!(s.subject_parts.organizational_unit, ["Ops"]);
        assert_eq!(s.subject_parts.country, ["DE"]);
        assert_eq!(s.subject_parts.locality, ["Berlin"]);
        assert_eq!(s.subject_parts.state_or_province, ["Berlin State"]);
        assert_eq!(s.issuer_parts, s.subject_parts);
        assert_eq!(s.public_key_curve.as_deref(), Some("secp384r1"));
        assert_eq!(s.public_key_exponent, None);
        use sha1::Digest as _;
        assert_eq!(s.sha1, hex::encode(sha1::Sha1::digest(cert.der())));
        assert_eq!(s.sha1.len(), 40);

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256);
        // rcgen generates RSA keys only with some backends; the exponent is checked where it can.
        if let Ok(key) = key {
            let cert = rcgen::CertificateParams::new(vec!["r.test".to_owned()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let s = super::summarize(cert.der()).unwrap();
            assert_eq!(s.public_key_exponent, Some(65537));
            assert_eq!(s.public_key_curve, None);
        }
        // Read back from the journal, older entries without these fields still parse.
        let mut json: serde_json::Value = serde_json::to_value(&s).unwrap();
        for k in [
            "version",
            "sha1",
            "subject_parts",
            "issuer_parts",
            "public_key_curve",
        ] {
            json.as_object_mut().unwrap().remove(k);
        }
        let back: super::CertSummary = serde_json::from_value(json).unwrap();
        assert_eq!(back.version, 0);
    }

    #[test]
    fn names_host_takes_exact_names_and_one_label_wildcards() {
        let san = [
            "api.example.test".to_owned(),
            "*.cdn.example.test".into(),
            "192.0.2.7".into(),
        ];
        assert!(super::names_host(&san, "API.example.test."));
        assert!(super::names_host(&san, "a.cdn.example.test"));
        assert!(!super::names_host(&san, "a.b.cdn.example.test"));
        assert!(!super::names_host(&san, "cdn.example.test"));
        assert!(super::names_host(&san, "192.0.2.7"));
        assert!(!super::names_host(&san, "other.example.test"));
    }

    use super::*;

    /// A summary's identity: subject and SANs in any order, made once; a clone makes it
    /// afresh from its own fields.
    #[test]
    fn the_identity_is_the_subject_and_the_sorted_names() {
        let a = CertSummary {
            subject: "CN=a.test".into(),
            san: vec!["b.test".into(), "a.test".into()],
            ..CertSummary::default()
        };
        assert_eq!(a.identity(), sha256_hex(b"CN=a.test|a.test,b.test"));
        let mut b = a.clone();
        b.san.reverse();
        assert_eq!(b.identity(), a.identity());
        let mut c = a.clone();
        c.subject = "CN=other".into();
        assert_eq!(c.identity(), sha256_hex(b"CN=other|a.test,b.test"));
        assert_eq!(a.identity(), sha256_hex(b"CN=a.test|a.test,b.test"));
    }

    #[test]
    fn holder_names_are_the_common_names_then_the_dns_names() {
        let mut params =
            rcgen::CertificateParams::new(vec!["ops.example.test".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "admin-client");
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([192, 0, 2, 1].into()));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            holder_names(cert.der()).unwrap(),
            ["admin-client", "ops.example.test"]
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(holder_names(b"not a certificate").is_err());
        assert!(summarize(b"not a certificate").is_err());
        assert!(summarize(&[0x30, 0x82, 0xff, 0xff]).is_err());
    }

    #[test]
    fn digests() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_b64(b"abc"),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }
}
