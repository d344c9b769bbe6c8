//! TLS fingerprints: JA3 and JA3S (BSD-3-Clause, Salesforce), JA4 (BSD-3-Clause, FoxIO), and,
//! with the `ja4plus` feature, JA4S and JA4X (FoxIO License 1.1, which restricts commercial use).
//!
//! Specifications: JA3 at github.com/salesforce/ja3; JA4, JA4S and JA4X in FoxIO-LLC/ja4,
//! `technical_details/`. GREASE values are ignored everywhere.

use md5::{Digest as _, Md5};
use sha2::Sha256;

use super::hello::{ClientHello, ServerHello, ext, is_grease};

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// First 12 hex digits of SHA-256, as JA4 truncates its hashes.
fn sha256_12(s: &str) -> String {
    let mut h = hex::encode(Sha256::digest(s.as_bytes()));
    h.truncate(12);
    h
}

fn dash_joined(values: impl Iterator<Item = u16>) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(128);
    for v in values.filter(|v| !is_grease(*v)) {
        if !s.is_empty() {
            s.push('-');
        }
        let _ = write!(s, "{v}");
    }
    s
}

/// The JA3 string: `version,ciphers,extensions,groups,point_formats`, decimal, `-`-joined.
pub fn ja3_string(ch: &ClientHello) -> String {
    format!(
        "{},{},{},{},{}",
        ch.version,
        dash_joined(ch.cipher_suites.iter().copied()),
        dash_joined(ch.extensions.iter().copied()),
        dash_joined(ch.groups.iter().copied()),
        dash_joined(ch.ec_point_formats.iter().map(|&v| u16::from(v))),
    )
}

/// JA3: MD5 of [`ja3_string`].
pub fn ja3(ch: &ClientHello) -> String {
    md5_hex(&ja3_string(ch))
}

/// The JA3S string: `version,cipher,extensions`.
pub fn ja3s_string(sh: &ServerHello) -> String {
    format!(
        "{},{},{}",
        sh.version,
        sh.cipher,
        dash_joined(sh.extensions.iter().copied())
    )
}

/// JA3S: MD5 of [`ja3s_string`].
pub fn ja3s(sh: &ServerHello) -> String {
    md5_hex(&ja3s_string(sh))
}

/// JA4's two-character version.
fn ja4_version(v: u16) -> &'static str {
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

/// JA4's two characters for the first ALPN value: its first and last alphanumeric characters,
/// or the first and last hex digits when either end is not alphanumeric, or `00`.
fn ja4_alpn(first: Option<&[u8]>) -> String {
    let Some(v) = first.filter(|v| !v.is_empty()) else {
        return "00".into();
    };
    let (a, b) = (v[0], v[v.len() - 1]);
    if a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric() {
        format!("{}{}", a as char, b as char)
    } else {
        let h = hex::encode(v);
        let hb = h.as_bytes();
        format!("{}{}", hb[0] as char, hb[hb.len() - 1] as char)
    }
}

fn hex_list(values: &[u16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(values.len() * 5);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        for shift in [12, 8, 4, 0] {
            s.push(HEX[usize::from((v >> shift) & 0xf)] as char);
        }
    }
    s
}

/// JA4 of a ClientHello over TCP. `alpn_first` is the raw first ALPN value.
pub fn ja4(ch: &ClientHello) -> String {
    let version = ch
        .supported_versions
        .iter()
        .copied()
        .filter(|v| !is_grease(*v))
        .max()
        .unwrap_or(ch.version);
    let sni = if ch.extensions.contains(&ext::SERVER_NAME) {
        'd'
    } else {
        'i'
    };
    let mut ciphers: Vec<u16> = ch
        .cipher_suites
        .iter()
        .copied()
        .filter(|c| !is_grease(*c))
        .collect();
    let exts: Vec<u16> = ch
        .extensions
        .iter()
        .copied()
        .filter(|e| !is_grease(*e))
        .collect();
    let alpn = ja4_alpn(ch.alpn_raw.first().map(Vec::as_slice));
    let a = format!(
        "t{}{}{:02}{:02}{}",
        ja4_version(version),
        sni,
        ciphers.len().min(99),
        exts.len().min(99),
        alpn
    );
    ciphers.sort_unstable();
    let b = if ciphers.is_empty() {
        "000000000000".to_owned()
    } else {
        sha256_12(&hex_list(&ciphers))
    };
    let mut sorted: Vec<u16> = exts
        .iter()
        .copied()
        .filter(|e| *e != ext::SERVER_NAME && *e != ext::ALPN)
        .collect();
    sorted.sort_unstable();
    let c = if sorted.is_empty() {
        "000000000000".to_owned()
    } else {
        let sigs: Vec<u16> = ch
            .signature_algorithms
            .iter()
            .copied()
            .filter(|s| !is_grease(*s))
            .collect();
        let mut text = hex_list(&sorted);
        if !sigs.is_empty() {
            text.push('_');
            text.push_str(&hex_list(&sigs));
        }
        sha256_12(&text)
    };
    format!("{a}_{b}_{c}")
}

/// A ClientHello's JA3 and JA4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFingerprints {
    pub ja3: String,
    pub ja3_string: String,
    pub ja4: String,
}

/// A ServerHello's JA3S (and JA4S with `ja4plus`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerFingerprints {
    pub ja3s: String,
    #[cfg(feature = "ja4plus")]
    pub ja4s: String,
}

/// Fingerprints of hellos seen lately. A client stack sends the same hello shape again and
/// again; here that costs a hash lookup instead of building strings and hashing them. Keys are
/// the exact inputs of the fingerprints, so a hit is never wrong.
pub struct FingerprintCache {
    clients: hashlink::LruCache<Vec<u16>, ClientFingerprints>,
    servers: hashlink::LruCache<Vec<u16>, ServerFingerprints>,
}

impl FingerprintCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            clients: hashlink::LruCache::new(capacity.max(1)),
            servers: hashlink::LruCache::new(capacity.max(1)),
        }
    }

    pub fn client(&mut self, ch: &ClientHello) -> ClientFingerprints {
        let key = client_key(ch);
        if let Some(hit) = self.clients.get(&key) {
            return hit.clone();
        }
        let fp = ClientFingerprints {
            ja3: ja3(ch),
            ja3_string: ja3_string(ch),
            ja4: ja4(ch),
        };
        self.clients.insert(key, fp.clone());
        fp
    }

    pub fn server(&mut self, sh: &ServerHello) -> ServerFingerprints {
        let mut key = Vec::with_capacity(8 + sh.extensions.len());
        key.extend([sh.version, sh.selected_version, sh.cipher]);
        key.push(sh.extensions.len() as u16);
        key.extend_from_slice(&sh.extensions);
        if let Some(alpn) = &sh.alpn {
            key.extend(alpn.bytes().map(u16::from));
        }
        if let Some(hit) = self.servers.get(&key) {
            return hit.clone();
        }
        let fp = ServerFingerprints {
            ja3s: ja3s(sh),
            #[cfg(feature = "ja4plus")]
            ja4s: ja4s(sh),
        };
        self.servers.insert(key, fp.clone());
        fp
    }
}

/// Everything JA3 and JA4 read from a ClientHello, each list prefixed by its length.
fn client_key(ch: &ClientHello) -> Vec<u16> {
    let first_alpn = ch.alpn_raw.first().map_or(&[][..], Vec::as_slice);
    let mut key = Vec::with_capacity(
        16 + ch.cipher_suites.len()
            + ch.extensions.len()
            + ch.groups.len()
            + ch.signature_algorithms.len()
            + first_alpn.len(),
    );
    key.push(ch.version);
    for list in [
        &ch.cipher_suites,
        &ch.extensions,
        &ch.groups,
        &ch.signature_algorithms,
        &ch.supported_versions,
    ] {
        key.push(list.len() as u16);
        key.extend_from_slice(list);
    }
    key.push(ch.ec_point_formats.len() as u16);
    key.extend(ch.ec_point_formats.iter().map(|&v| u16::from(v)));
    key.push(first_alpn.len() as u16);
    key.extend(first_alpn.iter().map(|&v| u16::from(v)));
    key
}

/// JA4S of a ServerHello over TCP (FoxIO License 1.1).
#[cfg(feature = "ja4plus")]
pub fn ja4s(sh: &ServerHello) -> String {
    let alpn = ja4_alpn(sh.alpn.as_deref().map(str::as_bytes));
    let exts = &sh.extensions;
    let c = if exts.is_empty() {
        "000000000000".to_owned()
    } else {
        sha256_12(&hex_list(exts))
    };
    format!(
        "t{}{:02}{}_{:04x}_{c}",
        ja4_version(sh.selected_version),
        exts.len().min(99),
        alpn,
        sh.cipher
    )
}

/// JA4X of one DER certificate (FoxIO License 1.1): the truncated SHA-256 of the issuer's RDN
/// OIDs, of the subject's, and of the extension OIDs, each as hex of the OID's DER content.
#[cfg(feature = "ja4plus")]
pub fn ja4x(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let rdn_oids = |name: &x509_parser::x509::X509Name<'_>| -> String {
        name.iter_attributes()
            .map(|a| hex::encode(a.attr_type().as_bytes()))
            .collect::<Vec<_>>()
            .join(",")
    };
    let part = |s: String| {
        if s.is_empty() {
            "000000000000".to_owned()
        } else {
            sha256_12(&s)
        }
    };
    let exts = cert
        .extensions()
        .iter()
        .map(|e| hex::encode(e.oid.as_bytes()))
        .collect::<Vec<_>>()
        .join(",");
    Some(format!(
        "{}_{}_{}",
        part(rdn_oids(cert.issuer())),
        part(rdn_oids(cert.subject())),
        part(exts)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ClientHello of JA4's published example (technical_details/JA4.md).
    fn ja4_example() -> ClientHello {
        ClientHello {
            version: 0x0303,
            cipher_suites: vec![
                0x0a0a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8,
                0xc013, 0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
            ],
            extensions: vec![
                0x1a1a, 0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005,
                0x0023, 0x0012, 0x002b, 0xff01, 0x000b, 0x000a, 0x0015, 0x2a2a,
            ],
            supported_versions: vec![0x3a3a, 0x0304, 0x0303],
            signature_algorithms: vec![
                0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
            ],
            alpn: vec!["h2".into(), "http/1.1".into()],
            alpn_raw: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            server_name: Some("example.com".into()),
            ..ClientHello::default()
        }
    }

    #[test]
    fn ja4_matches_the_published_example() {
        assert_eq!(ja4(&ja4_example()), "t13d1516h2_8daaf6152771_e5627efa2ab1");
    }

    #[test]
    fn ja4_without_signature_algorithms_or_anything() {
        let mut ch = ja4_example();
        ch.signature_algorithms.clear();
        assert!(ja4(&ch).ends_with("_6d807ffa2a79"), "{}", ja4(&ch));
        let empty = ClientHello {
            version: 0x0301,
            ..ClientHello::default()
        };
        assert_eq!(ja4(&empty), "t10i000000_000000000000_000000000000");
    }

    #[test]
    fn ja4_alpn_rules() {
        assert_eq!(ja4_alpn(Some(b"http/1.1")), "h1");
        assert_eq!(ja4_alpn(Some(b"h")), "hh");
        assert_eq!(ja4_alpn(None), "00");
        assert_eq!(ja4_alpn(Some(b"")), "00");
        // The examples of JA4.md for bytes that are not alphanumeric.
        assert_eq!(ja4_alpn(Some(&[0xab])), "ab");
        assert_eq!(ja4_alpn(Some(&[0x20])), "20");
        assert_eq!(ja4_alpn(Some(&[0xab, 0xcd])), "ad");
        assert_eq!(ja4_alpn(Some(&[0x20, 0x61])), "21");
        assert_eq!(ja4_alpn(Some(&[0x30, 0xab])), "3b");
        assert_eq!(ja4_alpn(Some(&[0x61, 0x20])), "60");
        assert_eq!(ja4_alpn(Some(&[0x30, 0x31, 0xab, 0xcd])), "3d");
        assert_eq!(ja4_alpn(Some(&[0x30, 0xab, 0xcd, 0x31])), "01");
    }

    #[test]
    fn ja3_drops_grease_and_keeps_order() {
        let ch = ja4_example();
        assert_eq!(
            ja3_string(&ch),
            "771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53,\
             27-0-51-16-17513-23-45-13-5-35-18-43-65281-11-10-21,,"
        );
        assert_eq!(ja3(&ch).len(), 32);
    }

    #[test]
    fn the_cache_gives_what_computing_gives() {
        let mut cache = FingerprintCache::new(4);
        let ch = ja4_example();
        let first = cache.client(&ch);
        assert_eq!(first.ja4, ja4(&ch));
        assert_eq!(cache.client(&ch), first);
        let mut other = ch.clone();
        other.alpn_raw = vec![b"http/1.1".to_vec()];
        assert_ne!(cache.client(&other).ja4, first.ja4);
    }

    #[test]
    fn ja3_of_the_salesforce_readme_example() {
        // The JA3 README's example string and its MD5.
        let s = "769,47-53-5-10-49161-49162-49171-49172-50-56-19-4,0-10-11,23-24-25,0";
        assert_eq!(md5_hex(s), "ada70206e40642a3e4461f35503241d5");
    }
}
