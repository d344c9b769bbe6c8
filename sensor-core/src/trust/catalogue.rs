//! The catalogue of known interception products (data/interceptors.toml), matched against the
//! names of a chain's certificate authorities.

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
            if raw.issuer_cn.is_empty() && raw.issuer_o.is_empty() {
                return Err(TrustError::new(
                    file,
                    Some(line),
                    format!("product {} has no issuer_cn or issuer_o pattern", raw.id),
                ));
            }
            products.push(Product {
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
    fn a_bad_regex_names_file_and_line() {
        let text = "[[product]]\nid = \"x\"\nname = \"X\"\nissuer_cn = [\n  '(unclosed',\n]\nsource = \"s\"\n";
        let err = Catalogue::parse(text, "/etc/sensor/interceptors.toml").unwrap_err();
        assert_eq!(err.line, Some(5), "{err}");
        assert!(err.to_string().contains("bad regex"), "{err}");
    }
}
