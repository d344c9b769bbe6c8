//! Pins: for a host pattern, or for a process, the SPKI SHA-256 values (HPKP base64) of which
//! one must appear in the chain.
//!
//! The pin file is TOML:
//!
//! ```toml
//! [[pin]]
//! host = "api.example.com"       # or "*.example.com" (one label), or exe/comm instead
//! spki = ["YLh1dUR9y6Kja30RrAn7JKnbQG/uEtLMkBgFF2Fuihg="]
//! report_only = false            # true: report a mismatch, keep the verdict
//! ```

use base64::Engine as _;
use serde::Deserialize;

use super::{TrustError, line_of};

/// What a pin applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinTarget {
    /// An exact host name, lower case.
    Host(String),
    /// `*.example.com`: one label under `example.com`.
    Wildcard(String),
    /// A process by executable path.
    Exe(String),
    /// A process by command name.
    Comm(String),
}

/// One pin set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub target: PinTarget,
    /// Base64 SHA-256 of SubjectPublicKeyInfo values.
    pub spki: Vec<String>,
    pub report_only: bool,
    /// Where it was written.
    pub line: usize,
}

/// All pins, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pins {
    pub pins: Vec<Pin>,
    /// The file they came from, if any.
    pub source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    pin: Vec<toml::Spanned<RawPin>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPin {
    host: Option<String>,
    exe: Option<String>,
    comm: Option<String>,
    spki: Vec<toml::Spanned<String>>,
    #[serde(default)]
    report_only: bool,
}

impl Pins {
    /// Parse a pin file's text; errors name `file` and the line.
    pub fn parse(text: &str, file: &str) -> Result<Self, TrustError> {
        let parsed: File = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            TrustError::new(file, line, e.message().to_owned())
        })?;
        let mut pins = Vec::new();
        for spanned in parsed.pin {
            let line = line_of(text, spanned.span().start);
            let raw = spanned.into_inner();
            let targets = [
                raw.host.as_ref().map(|h| {
                    let h = h.trim_end_matches('.').to_ascii_lowercase();
                    match h.strip_prefix("*.") {
                        Some(rest) => PinTarget::Wildcard(rest.to_owned()),
                        None => PinTarget::Host(h),
                    }
                }),
                raw.exe.clone().map(PinTarget::Exe),
                raw.comm.clone().map(PinTarget::Comm),
            ];
            let mut targets = targets.into_iter().flatten();
            let Some(target) = targets.next() else {
                return Err(TrustError::new(
                    file,
                    Some(line),
                    "a pin needs host, exe or comm",
                ));
            };
            if targets.next().is_some() {
                return Err(TrustError::new(
                    file,
                    Some(line),
                    "a pin has one of host, exe or comm, not several",
                ));
            }
            if raw.spki.is_empty() {
                return Err(TrustError::new(
                    file,
                    Some(line),
                    "a pin needs at least one spki",
                ));
            }
            let mut spki = Vec::new();
            for value in raw.spki {
                let at = line_of(text, value.span().start);
                let v = value.into_inner();
                let ok = base64::engine::general_purpose::STANDARD
                    .decode(&v)
                    .is_ok_and(|d| d.len() == 32);
                if !ok {
                    return Err(TrustError::new(
                        file,
                        Some(at),
                        format!("spki {v:?} is not the base64 of a SHA-256 (44 characters)"),
                    ));
                }
                spki.push(v);
            }
            pins.push(Pin {
                target,
                spki,
                report_only: raw.report_only,
                line,
            });
        }
        Ok(Self {
            pins,
            source: Some(file.to_owned()),
        })
    }

    /// The pin that applies to a connection, if any: a process pin first, then the host.
    pub fn find(&self, sni: Option<&str>, exe: Option<&str>, comm: Option<&str>) -> Option<usize> {
        let by_process = self.pins.iter().position(|p| match &p.target {
            PinTarget::Exe(e) => exe == Some(e.as_str()),
            PinTarget::Comm(c) => comm == Some(c.as_str()),
            _ => false,
        });
        if by_process.is_some() {
            return by_process;
        }
        let sni = sni?.trim_end_matches('.').to_ascii_lowercase();
        self.pins.iter().position(|p| match &p.target {
            PinTarget::Host(h) => *h == sni,
            PinTarget::Wildcard(base) => sni
                .strip_suffix(base.as_str())
                .and_then(|label| label.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
            _ => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "YLh1dUR9y6Kja30RrAn7JKnbQG/uEtLMkBgFF2Fuihg=";

    #[test]
    fn parses_and_finds() {
        let text = format!(
            "[[pin]]\nhost = \"*.example.com\"\nspki = [\"{GOOD}\"]\n\n[[pin]]\nexe = \"/usr/bin/agent\"\nspki = [\"{GOOD}\"]\nreport_only = true\n"
        );
        let pins = Pins::parse(&text, "pins.toml").unwrap();
        assert_eq!(pins.pins.len(), 2);
        assert_eq!(pins.find(Some("api.example.com"), None, None), Some(0));
        assert_eq!(pins.find(Some("a.b.example.com"), None, None), None);
        assert_eq!(pins.find(Some("example.com"), None, None), None);
        assert_eq!(
            pins.find(Some("x.example.com"), Some("/usr/bin/agent"), None),
            Some(1)
        );
        assert!(pins.pins[1].report_only);
        assert_eq!(pins.pins[1].line, 5);
    }

    #[test]
    fn bad_pins_name_the_file_and_line() {
        let text = "[[pin]]\nhost = \"a.test\"\nspki = [\n  \"short\",\n]\n";
        let err = Pins::parse(text, "/etc/sensor/pins.toml").unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        assert!(
            err.to_string()
                .starts_with("/etc/sensor/pins.toml:4: spki \"short\""),
            "{err}"
        );
        let err = Pins::parse("[[pin]]\nspki = []\n", "p.toml").unwrap_err();
        assert_eq!(err.to_string(), "p.toml:1: a pin needs host, exe or comm");
        let err = Pins::parse("[[pin]]\nhots = 1\n", "p.toml").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
    }
}
