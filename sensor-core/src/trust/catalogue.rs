//! The catalogue of known interception products (data/interceptors.toml), matched against the
//! names of a chain's certificate authorities and, from a server's side, against the
//! ClientHello a product sends upstream itself.

use regex::Regex;
use serde::Deserialize;

use super::{TrustError, line_of};

/// The catalogue compiled into the binary.
pub const BUILTIN: &str = include_str!("../../data/interceptors.toml");

/// One product.
#[derive(Clone, Debug)]
pub struct Product {
    /// Short id, used in reasons: `known_interceptor:<id>`.
    pub id: String,
    /// Name for people.
    pub name: String,
    pub issuer_cn: Vec<Regex>,
    pub issuer_o: Vec<Regex>,
    pub source: String,
    /// The product's own outgoing ClientHello: JA4 without its first part (the cipher and
    /// extension hashes, `a01be8c064b6_ef4b9b248d72`), which stays when the product copies
    /// the client's ALPN and SNI; `*_ef4b9b248d72` for a product that mirrors its client's
    /// cipher suites and keeps extensions of its own.
    pub client_ja4: Vec<String>,
    /// Where `client_ja4` was measured.
    pub client_source: Option<String>,
}

impl Product {
    /// Whether a ClientHello's JA4 is one this product sends itself.
    pub fn sends(&self, ja4: &str) -> bool {
        let Some((_, rest)) = ja4.split_once('_') else {
            return false;
        };
        let extensions = rest.split_once('_').map_or("", |(_, e)| e);
        self.client_ja4.iter().any(|f| match f.strip_prefix("*_") {
            Some(e) => e == extensions,
            None => f == rest,
        })
    }
}

/// Products are the same when they say the same: their patterns compare by their text.
impl PartialEq for Product {
    fn eq(&self, other: &Self) -> bool {
        fn same(a: &[Regex], b: &[Regex]) -> bool {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.as_str() == y.as_str())
        }
        self.id == other.id
            && self.name == other.name
            && self.source == other.source
            && self.client_ja4 == other.client_ja4
            && self.client_source == other.client_source
            && same(&self.issuer_cn, &other.issuer_cn)
            && same(&self.issuer_o, &other.issuer_o)
    }
}

impl Eq for Product {}

/// All products.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalogue {
    pub products: Vec<Product>,
    pub source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    product: Vec<toml::Spanned<RawProduct>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProduct {
    id: String,
    name: String,
    #[serde(default)]
    issuer_cn: Vec<toml::Spanned<String>>,
    #[serde(default)]
    issuer_o: Vec<toml::Spanned<String>>,
    source: String,
    #[serde(default)]
    client_ja4: Vec<toml::Spanned<String>>,
    client_source: Option<String>,
}

impl Catalogue {
    /// The built-in catalogue.
    pub fn builtin() -> Self {
        // The built-in file is checked by a test; should it ever not parse, run without it
        // rather than not at all.
        Self::parse(BUILTIN, "data/interceptors.toml (built in)").unwrap_or_default()
    }

    /// Parse a catalogue file; errors name `file` and the line.
    pub fn parse(text: &str, file: &str) -> Result<Self, TrustError> {
        let parsed: File = toml::from_str(text).map_err(|e| {
            TrustError::new(file, e.span().map(|s| line_of(text, s.start)), e.message())
        })?;
        let compile = |list: Vec<toml::Spanned<String>>| -> Result<Vec<Regex>, TrustError> {
            list.into_iter()
                .map(|p| {
                    let line = line_of(text, p.span().start);
                    let pattern = p.into_inner();
                    regex::RegexBuilder::new(&pattern)
                        .case_insensitive(true)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| {
                            let first = e.to_string().lines().last().unwrap_or_default().to_owned();
                            TrustError::new(
                                file,
                                Some(line),
                                format!("bad regex {pattern:?}: {first}"),
                            )
                        })
                })
                .collect()
        };
        let mut products = Vec::new();
        for spanned in parsed.product {
            let line = line_of(text, spanned.span().start);
            let raw = spanned.into_inner();
            if raw.issuer_cn.is_empty() && raw.issuer_o.is_empty() && raw.client_ja4.is_empty() {
                return Err(TrustError::new(
                    file,
                    Some(line),
                    format!(
                        "product {} has no issuer_cn, issuer_o or client_ja4 pattern",
                        raw.id
                    ),
                ));
            }
            if !raw.client_ja4.is_empty() && raw.client_source.is_none() {
                return Err(TrustError::new(
                    file,
                    Some(line),
                    format!("product {} has client_ja4 but no client_source", raw.id),
                ));
            }
            let mut client_ja4 = Vec::with_capacity(raw.client_ja4.len());
            for f in raw.client_ja4 {
                let at = line_of(text, f.span().start);
                let f = f.into_inner();
                let hex = |t: &str| {
                    t.len() == 12
                        && t.bytes()
                            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                };
                let well_formed = f
                    .split_once('_')
                    .is_some_and(|(c, e)| (c == "*" || hex(c)) && hex(e));
                if !well_formed {
                    return Err(TrustError::new(
                        file,
                        Some(at),
                        format!(
                            "client_ja4 {f:?} is not a JA4's cipher and extension hashes \
                             (12 lowercase hex digits or '*', '_', 12 more)"
                        ),
                    ));
                }
                client_ja4.push(f);
            }
            products.push(Product {
                client_ja4,
                client_source: raw.client_source,
                issuer_cn: compile(raw.issuer_cn)?,
                issuer_o: compile(raw.issuer_o)?,
                id: raw.id,
                name: raw.name,
                source: raw.source,
            });
        }
        Ok(Self {
            products,
            source: file.to_owned(),
        })
    }

    /// The first product that sends a ClientHello with this JA4 itself.
    pub fn find_client(&self, ja4: &str) -> Option<&Product> {
        self.products.iter().find(|p| p.sends(ja4))
    }

    /// The first product whose patterns match a CA's common name or organisation.
    pub fn find(&self, cn: Option<&str>, o: Option<&str>) -> Option<&Product> {
        self.products.iter().find(|p| {
            cn.is_some_and(|cn| p.issuer_cn.iter().any(|r| r.is_match(cn)))
                || o.is_some_and(|o| p.issuer_o.iter().any(|r| r.is_match(o)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalogue_parses_and_has_thirty_products_with_sources() {
        let c = Catalogue::parse(BUILTIN, "interceptors.toml").unwrap();
        assert!(c.products.len() >= 30, "{}", c.products.len());
        assert!(c.products.iter().all(|p| !p.source.is_empty()));
        let mut ids: Vec<&str> = c.products.iter().map(|p| p.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), c.products.len(), "ids are unique");
    }

    #[test]
    fn matches_known_names_and_not_public_ones() {
        let c = Catalogue::builtin();
        assert_eq!(
            c.find(Some("FortiGate CA"), None).map(|p| p.id.as_str()),
            Some("fortinet")
        );
        assert_eq!(
            c.find(Some("mitmproxy"), Some("mitmproxy"))
                .map(|p| p.id.as_str()),
            Some("mitmproxy")
        );
        assert_eq!(
            c.find(None, Some("Zscaler Inc.")).map(|p| p.id.as_str()),
            Some("zscaler")
        );
        assert!(c.find(Some("R11"), Some("Let's Encrypt")).is_none());
        assert!(
            c.find(
                Some("DigiCert Global G2 TLS RSA SHA256 2020 CA1"),
                Some("DigiCert Inc")
            )
            .is_none()
        );
    }

    #[test]
    fn the_lab_interceptors_own_client_hellos_are_known_and_the_lab_clients_are_not() {
        let c = Catalogue::builtin();
        let id = |ja4: &str| c.find_client(ja4).map(|p| p.id.as_str());
        assert_eq!(
            id("t13d2812h2_a01be8c064b6_ef4b9b248d72"),
            Some("mitmproxy")
        );
        assert_eq!(
            id("t13d281100_a01be8c064b6_ef4b9b248d72"),
            Some("mitmproxy")
        );
        assert_eq!(id("t13d311200_e8f1e7e78f70_830561eb1039"), Some("squid"));
        // Staring, squid mirrors its client's suites (here curl's) and keeps its extensions.
        assert_eq!(id("t13d0413h1_16476d049b0b_830561eb1039"), Some("squid"));
        assert_eq!(id("t12d2810h1_d943125447b4_c32809c6df3d"), Some("squid"));
        assert_eq!(id("t13d751000_479067518aa3_7379471da272"), Some("sslsplit"));
        // What the lab's direct clients sent (tests/src/lab), with and without pinned versions:
        // openssl s_client, curl, Python, Node, GnuTLS, wget, Go.
        for direct in [
            "t13d311000_e8f1e7e78f70_1f22a2ca17c4",
            "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6",
            "t13d181100_85036bcba153_d41ae481755e",
            "t13d591000_a33745022dd6_1f22a2ca17c4",
            "t13d291300_723694b0fccc_2cc26d266019",
            "t13i291200_723694b0fccc_899037bd0b8c",
            "t13d041000_16476d049b0b_78f1d400d464",
            "t13d0412h2_16476d049b0b_85302d7e289e",
            "t12d2807h2_d943125447b4_a44c6288192a",
            "t12d150700_d68b136fe8d9_e7e480e5a997",
            "t13d190900_9dc949149365_97f8aa674fd9",
            "t12d160800_8cdfa2d4673b_ac0d2f4ec206",
        ] {
            assert_eq!(id(direct), None, "{direct}");
        }
        assert_eq!(id("garbage"), None);
    }

    #[test]
    fn a_malformed_client_fingerprint_names_file_and_line() {
        let text = "[[product]]\nid = \"x\"\nname = \"X\"\nclient_ja4 = [\n  'T13D',\n]\nsource = \"s\"\nclient_source = \"lab\"\n";
        let err = Catalogue::parse(text, "/etc/sensor/interceptors.toml").unwrap_err();
        assert_eq!(err.line, Some(5), "{err}");
        assert!(err.to_string().contains("client_ja4"), "{err}");
    }

    #[test]
    fn a_bad_regex_names_file_and_line() {
        let text = "[[product]]\nid = \"x\"\nname = \"X\"\nissuer_cn = [\n  '(unclosed',\n]\nsource = \"s\"\n";
        let err = Catalogue::parse(text, "/etc/sensor/interceptors.toml").unwrap_err();
        assert_eq!(err.line, Some(5), "{err}");
        assert!(err.to_string().contains("bad regex"), "{err}");
    }
}
