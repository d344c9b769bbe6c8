//! The User-Agent rules (`data/user-agents.toml`): what a browser's own TLS stack always puts
//! in its ClientHello. An inbound request whose User-Agent names the browser over a handshake
//! without it was not made by that browser (`ua_fingerprint_mismatch:<id>`).

use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;

use crate::event::ClientOffer;

/// The rules compiled into the binary.
pub const BUILTIN: &str = include_str!("../../data/user-agents.toml");

/// One rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub id: String,
    /// The browser, for people.
    pub name: String,
    pub user_agent: Regex,
    pub grease: bool,
    pub extensions: Vec<u16>,
    pub reason: String,
    pub source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    name: String,
    user_agent: String,
    #[serde(default)]
    grease: bool,
    #[serde(default)]
    extensions: Vec<u16>,
    reason: String,
    source: String,
}

/// Parse rules; the error says which rule is wrong and why.
pub fn parse(text: &str) -> Result<Vec<Rule>, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    file.rule
        .into_iter()
        .map(|r| {
            if !r.grease && r.extensions.is_empty() {
                return Err(format!(
                    "rule {}: requires nothing (grease or extensions)",
                    r.id
                ));
            }
            let user_agent = regex::RegexBuilder::new(&r.user_agent)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("rule {}: bad regex: {e}", r.id))?;
            Ok(Rule {
                id: r.id,
                name: r.name,
                user_agent,
                grease: r.grease,
                extensions: r.extensions,
                reason: r.reason,
                source: r.source,
            })
        })
        .collect()
}

/// The built-in rules (a test keeps them parsing).
pub fn builtin() -> &'static [Rule] {
    static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| parse(BUILTIN).unwrap_or_default());
    &RULES
}

/// The first rule whose browser the User-Agent names and whose requirement the ClientHello
/// does not meet.
pub fn contradiction<'a>(
    rules: &'a [Rule],
    user_agent: &str,
    offer: &ClientOffer,
) -> Option<&'a Rule> {
    rules.iter().find(|r| {
        r.user_agent.is_match(user_agent)
            && ((r.grease && !offer.grease)
                || !r.extensions.iter().all(|e| offer.extensions.contains(e)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                          Chrome/156.0.0.0 Safari/537.36";
    const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    const SAFARI: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 \
                          (KHTML, like Gecko) Version/17.5 Safari/605.1.15";

    fn offer(grease: bool, extensions: &[u16]) -> ClientOffer {
        ClientOffer {
            grease,
            extensions: extensions.to_vec(),
            ..ClientOffer::default()
        }
    }

    #[test]
    fn the_builtin_rules_parse_with_sources() {
        let rules = parse(BUILTIN).unwrap();
        assert_eq!(rules.len(), 3);
        assert!(
            rules
                .iter()
                .all(|r| !r.source.is_empty() && !r.reason.is_empty())
        );
        assert_eq!(builtin().len(), 3);
    }

    #[test]
    fn a_browser_user_agent_over_a_handshake_without_its_traits_is_a_contradiction() {
        let rules = builtin();
        let id = |ua: &str, o: &ClientOffer| contradiction(rules, ua, o).map(|r| r.id.as_str());
        // Chrome (and Safari) send GREASE; an OpenSSL client does not.
        assert_eq!(id(CHROME, &offer(false, &[0, 10, 11])), Some("chromium"));
        assert_eq!(id(CHROME, &offer(true, &[0, 10, 11])), None);
        assert_eq!(id(SAFARI, &offer(false, &[0])), Some("safari"));
        assert_eq!(id(SAFARI, &offer(true, &[0])), None);
        // Firefox sends record_size_limit (28).
        assert_eq!(id(FIREFOX, &offer(false, &[0, 28, 43])), None);
        assert_eq!(id(FIREFOX, &offer(false, &[0, 43])), Some("firefox"));
        // What names no browser is not judged.
        assert_eq!(id("curl/7.88.1", &offer(false, &[])), None);
        assert_eq!(id("python-urllib/3.11", &offer(false, &[])), None);
    }

    #[test]
    fn a_bad_rule_is_an_error_that_names_it() {
        let err = parse("[[rule]]\nid = \"x\"\nname = \"X\"\nuser_agent = '('\ngrease = true\nreason = \"r\"\nsource = \"s\"\n").unwrap_err();
        assert!(err.contains("rule x"), "{err}");
        let err = parse("[[rule]]\nid = \"y\"\nname = \"Y\"\nuser_agent = 'Y'\nreason = \"r\"\nsource = \"s\"\n").unwrap_err();
        assert!(err.contains("requires nothing"), "{err}");
    }
}
