//! How events, verdicts and chains look on a terminal: one line per event, coloured by
//! severity, with the main reason in words.

use std::{fmt::Write as _, io::IsTerminal as _};

use anstyle::{AnsiColor, Style};
use sensor::x509::CertSummary;
use sensor_proto::v1 as pb;

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Whether to colour, decided once.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    pub enabled: bool,
}

impl Palette {
    /// Colours when asked, or on a terminal unless NO_COLOR is set (https://no-color.org).
    pub fn choose(choice: ColorChoice) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let enabled = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => !no_color && std::io::stdout().is_terminal(),
        };
        Self { enabled }
    }

    pub fn paint(self, style: Style, text: &str) -> String {
        if self.enabled {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_owned()
        }
    }

    /// The style of a severity (protobuf numbering: 1 info … 5 critical).
    pub fn severity_style(severity: i32) -> Style {
        let color = |c: AnsiColor| Style::new().fg_color(Some(c.into()));
        match severity {
            5 => color(AnsiColor::Red).bold(),
            4 => color(AnsiColor::Red),
            3 => color(AnsiColor::Yellow),
            2 => color(AnsiColor::Cyan),
            1 => color(AnsiColor::Green),
            _ => Style::new().dimmed(),
        }
    }

    pub fn dim(self, text: &str) -> String {
        self.paint(Style::new().dimmed(), text)
    }

    pub fn bold(self, text: &str) -> String {
        self.paint(Style::new().bold(), text)
    }
}

/// The CN of a distinguished name, or the whole name when it has none.
pub fn common_name(dn: &str) -> &str {
    dn.split(',')
        .map(str::trim)
        .find_map(|rdn| rdn.strip_prefix("CN="))
        .unwrap_or(dn)
}

/// What an event needs to be put in words: the same for live events and for a local check.
pub struct Words<'a> {
    pub verdict: &'a str,
    pub reasons: &'a [String],
    /// The leaf's issuer, when the chain was seen.
    pub issuer: Option<&'a str>,
    /// The interception product's name, when known.
    pub product: Option<&'a str>,
}

/// The main reason, in words: `issuer "FortiGate CA" (Fortinet SSL inspection), trusted only
/// by this host`.
pub fn main_reason(w: &Words<'_>) -> String {
    let has = |code: &str| w.reasons.iter().any(|r| r == code);
    let mut s = String::new();
    if let Some(issuer) = w.issuer {
        let _ = write!(s, "issuer \"{}\"", common_name(issuer));
        if let Some(p) = w.product {
            let _ = write!(s, " ({p})");
        }
        s.push_str(", ");
    }
    let problem = [
        ("expired", "expired"),
        ("not_yet_valid", "not valid yet"),
        ("hostname_mismatch", "made for another name"),
        ("self_signed", "self-signed"),
        ("unknown_issuer", "issuer unknown to both stores"),
        ("no_server_auth_eku", "not for TLS servers"),
        ("weak_signature", "weak signature"),
        ("weak_key", "weak key"),
    ]
    .iter()
    .find(|(code, _)| has(code))
    .map(|(_, words)| *words);
    match w.verdict {
        "clean" => s.push_str("publicly trusted"),
        "intercepted" if has("approved_inspection") => {
            s.push_str("your organisation's approved inspection CA");
        }
        "intercepted" => s.push_str("trusted only by this host"),
        "untrusted" => {
            s.push_str("trusted by nobody here");
            if let Some(p) = problem {
                let _ = write!(s, ": {p}");
            }
        }
        "pin_mismatch" => s.push_str("publicly trusted, but not the pinned key"),
        "unverified" => s.push_str("certificate not visible (TLS 1.3)"),
        other => s.push_str(other),
    }
    if let Some(alert) = w
        .reasons
        .iter()
        .find_map(|r| r.strip_prefix("client_rejected:"))
    {
        let _ = write!(s, "; the client refused it ({alert})");
    } else if has("client_accepted_untrusted") {
        s.push_str("; the client accepted it anyway");
    }
    if has("baseline_changed") {
        s.push_str("; the issuer changed since first seen");
    }
    if has("server_fingerprint_changed") || has("server_flight_size_changed") {
        s.push_str("; the server answers unlike before");
    }
    if let Some(cause) = w
        .reasons
        .iter()
        .find_map(|r| r.strip_prefix("probe_failed:"))
    {
        let _ = write!(s, "; sensord's own check failed ({cause})");
    }
    s
}

/// A local verdict (`check`, `check-chain`): its JSON fields, to which a command adds its own.
pub fn verdict_json(
    v: &sensor::verdict::Verdict,
    chain: &[impl serde::Serialize],
) -> serde_json::Map<String, serde_json::Value> {
    let json = serde_json::json!({
        "verdict": v.kind.as_str(),
        "reasons": v.reasons,
        "severity": v.severity.as_str(),
        "explanation": v.explanation,
        "interceptor": v.product.as_ref().map(|(id, name)| serde_json::json!({"id": id, "name": name})),
        "chain": chain,
    });
    match json {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// A local verdict's style (by severity) and its main reason in words.
pub fn verdict_words(
    v: &sensor::verdict::Verdict,
    chain: &[impl AsRef<CertSummary>],
) -> (Style, String) {
    let severity = i32::from(sensor::api::filter::severity_number(Some(
        v.severity.as_str(),
    )));
    let words = main_reason(&Words {
        verdict: v.kind.as_str(),
        reasons: &v.reasons,
        issuer: chain.first().map(|c| c.as_ref().issuer.as_str()),
        product: v.product.as_ref().map(|(_, n)| n.as_str()),
    });
    (Palette::severity_style(severity), words)
}

/// The destination as people know it: `name:port`, else `address:port`.
pub fn destination(ev: &pb::Event) -> String {
    if !ev.server_name.is_empty() {
        format!("{}:{}", ev.server_name, ev.dst_port)
    } else if ev.dst_addr.contains(':') {
        format!("[{}]:{}", ev.dst_addr, ev.dst_port)
    } else {
        format!("{}:{}", ev.dst_addr, ev.dst_port)
    }
}

/// `comm[pid]`, or `-` when no local process was found.
pub fn process(ev: &pb::Event) -> String {
    match &ev.process {
        Some(p) if p.pid != 0 => format!("{}[{}]", non_empty(&p.comm, "?"), p.pid),
        Some(p) if !p.comm.is_empty() => p.comm.clone(),
        _ => "-".into(),
    }
}

fn non_empty<'a>(s: &'a str, or: &'a str) -> &'a str {
    if s.is_empty() { or } else { s }
}

/// An event's time, to the second, in UTC.
pub fn time(ev: &pb::Event) -> String {
    let t = ev.time.as_ref().map_or(0, |t| t.seconds);
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| "-".into())
}

/// The words of an event.
pub fn event_words(ev: &pb::Event) -> String {
    main_reason(&Words {
        verdict: &ev.verdict,
        reasons: &ev.reasons,
        issuer: ev.chain.first().map(|c| c.issuer.as_str()),
        product: ev.interceptor.as_ref().map(|i| i.name.as_str()),
    })
}

/// One line per event:
/// `TIME INTERCEPTED curl[4121] → example.com:443 TLS1.2 issuer "FortiGate CA" (Fortinet SSL inspection), trusted only by this host`.
pub fn event_line(ev: &pb::Event, palette: Palette) -> String {
    let style = Palette::severity_style(ev.severity);
    let mut s = String::with_capacity(160);
    s.push_str(&palette.dim(&time(ev)));
    s.push(' ');
    s.push_str(&palette.paint(style.bold(), &ev.verdict.to_uppercase()));
    let _ = write!(s, " {} → {}", process(ev), destination(ev));
    if !ev.tls_version.is_empty() {
        let _ = write!(s, " TLS{}", ev.tls_version);
    }
    // TLS 1.3 hides the chain: say who saw it.
    if matches!(ev.chain_source.as_str(), "uprobe" | "probe") {
        let _ = write!(s, " (chain via {})", ev.chain_source);
    }
    s.push(' ');
    s.push_str(&palette.paint(style, &event_words(ev)));
    if ev.count > 1 {
        let _ = write!(s, " (×{})", ev.count);
    }
    s
}

/// A chain, one certificate per block, as `check` and `check-chain` print it.
pub fn chain(chain: &[impl AsRef<CertSummary>]) -> String {
    let mut s = String::new();
    for (i, c) in chain.iter().enumerate() {
        let c = c.as_ref();
        let _ = writeln!(s, "  [{i}] {}", c.subject);
        let _ = writeln!(s, "      issuer  {}", c.issuer);
        let _ = writeln!(
            s,
            "      valid   {} .. {}",
            c.not_before.rfc3339(),
            c.not_after.rfc3339()
        );
        if !c.san.is_empty() {
            let _ = writeln!(s, "      names   {}", c.san.join(", "));
        }
        let _ = writeln!(
            s,
            "      key     {} {} bits, {}",
            c.key_type, c.key_bits, c.signature_algorithm
        );
        let _ = writeln!(s, "      sha256  {}", c.sha256);
        let _ = writeln!(s, "      spki    {}", c.spki_sha256);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> pb::Event {
        pb::Event {
            time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            dst_addr: "192.0.2.1".into(),
            dst_port: 443,
            server_name: "example.com".into(),
            tls_version: "1.2".into(),
            verdict: "intercepted".into(),
            reasons: vec!["local_root".into(), "known_interceptor:fortinet".into()],
            severity: 4,
            process: Some(pb::Process {
                pid: 4121,
                comm: "curl".into(),
                ..pb::Process::default()
            }),
            chain: vec![pb::CertificateSummary {
                issuer: "C=US, O=Fortinet, CN=FortiGate CA".into(),
                ..pb::CertificateSummary::default()
            }],
            interceptor: Some(pb::Interceptor {
                id: "fortinet".into(),
                name: "Fortinet SSL inspection".into(),
            }),
            ..pb::Event::default()
        }
    }

    #[test]
    fn the_line_people_read() {
        let plain = Palette { enabled: false };
        assert_eq!(
            event_line(&event(), plain),
            "2023-11-14T22:13:20Z INTERCEPTED curl[4121] → example.com:443 TLS1.2 issuer \
             \"FortiGate CA\" (Fortinet SSL inspection), trusted only by this host"
        );
        let mut tls13 = event();
        tls13.tls_version = "1.3".into();
        tls13.chain_source = "uprobe".into();
        assert_eq!(
            event_line(&tls13, plain),
            "2023-11-14T22:13:20Z INTERCEPTED curl[4121] → example.com:443 TLS1.3 (chain via \
             uprobe) issuer \"FortiGate CA\" (Fortinet SSL inspection), trusted only by this host"
        );
        let coloured = event_line(&event(), Palette { enabled: true });
        assert!(
            coloured.contains("\u{1b}[1m\u{1b}[31mINTERCEPTED"),
            "{coloured:?}"
        );
    }

    #[test]
    fn reasons_in_words() {
        let reasons = |r: &[&str]| r.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let r = reasons(&[
            "self_signed",
            "hostname_mismatch",
            "client_rejected:unknown_ca",
        ]);
        let w = Words {
            verdict: "untrusted",
            reasons: &r,
            issuer: Some("CN=localhost"),
            product: None,
        };
        assert_eq!(
            main_reason(&w),
            "issuer \"localhost\", trusted by nobody here: made for another name; the client \
             refused it (unknown_ca)"
        );
        let r = reasons(&["certificate_not_visible"]);
        let w = Words {
            verdict: "unverified",
            reasons: &r,
            issuer: None,
            product: None,
        };
        assert_eq!(main_reason(&w), "certificate not visible (TLS 1.3)");
        let r = reasons(&[
            "certificate_not_visible",
            "server_flight_size_changed",
            "probe_failed:refused",
        ]);
        let w = Words {
            verdict: "unverified",
            reasons: &r,
            issuer: None,
            product: None,
        };
        assert_eq!(
            main_reason(&w),
            "certificate not visible (TLS 1.3); the server answers unlike before; sensord's own \
             check failed (refused)"
        );
    }

    #[test]
    fn destinations_and_processes() {
        let mut ev = event();
        ev.server_name.clear();
        ev.dst_addr = "2001:db8::1".into();
        assert_eq!(destination(&ev), "[2001:db8::1]:443");
        ev.process = None;
        assert_eq!(process(&ev), "-");
    }
}
