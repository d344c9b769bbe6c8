//! How an event looks on a terminal or in a log: one compact line, coloured by severity, with
//! the main reason in words. `sensord --print text`, `sensorctl watch` and `sensorctl events`
//! all print this line; `check` and `check-chain` add the chain in blocks.
//!
//! Every text that came from the network or another process (names, issuers, comm, exe) goes
//! through [`escape`] first: a certificate named `\e[2J…` prints as text, not as a command to
//! the terminal.

use std::{borrow::Cow, fmt::Write as _, io::IsTerminal as _, net::IpAddr};

use anstyle::{AnsiColor, Style};
use sensor_core::{
    event::{ChainSource, Event, Judgement, Reason, Severity, Timestamp, TlsVersion, Verdict},
    x509::CertSummary,
};

/// Text from outside, safe for a terminal and a log line: control characters (C0, DEL, C1)
/// and the Unicode marks that reorder or hide text (bidi overrides and isolates, zero-width
/// characters) become `\u{…}`; a backslash becomes `\\` so that the escapes stay unambiguous.
pub fn escape(text: &str) -> Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c == '\\'
            || c.is_control()
            || matches!(c,
                '\u{061C}'                 // Arabic letter mark (a bidi control)
                | '\u{200B}'..='\u{200F}'   // zero-width spaces and joiners, LRM, RLM
                | '\u{2028}'..='\u{202E}' // line and paragraph separators, bidi embeddings
                | '\u{2060}'..='\u{2069}' // word joiner, invisible operators, bidi isolates
                | '\u{FEFF}'              // zero-width no-break space
            )
    }
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

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

    pub fn plain() -> Self {
        Self { enabled: false }
    }

    pub fn paint(self, style: Style, text: &str) -> String {
        if self.enabled {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_owned()
        }
    }

    /// The style of a severity.
    pub fn severity_style(severity: Option<Severity>) -> Style {
        let color = |c: AnsiColor| Style::new().fg_color(Some(c.into()));
        match severity {
            Some(Severity::Critical) => color(AnsiColor::Red).bold(),
            Some(Severity::High) => color(AnsiColor::Red),
            Some(Severity::Medium) => color(AnsiColor::Yellow),
            Some(Severity::Low) => color(AnsiColor::Cyan),
            Some(Severity::Info) => color(AnsiColor::Green),
            None => Style::new().dimmed(),
        }
    }

    pub fn dim(self, text: &str) -> String {
        self.paint(Style::new().dimmed(), text)
    }

    pub fn bold(self, text: &str) -> String {
        self.paint(Style::new().bold(), text)
    }
}

/// How a line names a container: `runtime:name`, the name alone, or the id's first 12 digits
/// (as `docker ps` shows it); then ` pod namespace/name` when its Kubernetes pod is known.
pub fn container_label(
    runtime: Option<&str>,
    name: Option<&str>,
    id: Option<&str>,
    pod: Option<(&str, &str)>,
) -> Option<String> {
    let what = name
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .or_else(|| {
            id.filter(|i| !i.is_empty())
                .map(|i| i.chars().take(12).collect())
        })?;
    let container = match runtime.filter(|r| !r.is_empty()) {
        Some(r) => format!("{r}:{what}"),
        None => what,
    };
    Some(match pod.filter(|(_, name)| !name.is_empty()) {
        Some((namespace, name)) => format!("{container} pod {namespace}/{name}"),
        None => container,
    })
}

/// The CN of a distinguished name, or the whole name when it has none.
pub fn common_name(dn: &str) -> &str {
    dn.split(',')
        .map(str::trim)
        .find_map(|rdn| rdn.strip_prefix("CN="))
        .unwrap_or(dn)
}

/// What one line shows of an event: filled from the typed event in sensord, from the API's
/// message in sensorctl.
#[derive(Clone, Debug, Default)]
pub struct Line<'a> {
    pub time: Timestamp,
    pub verdict: Option<Verdict>,
    pub severity: Option<Severity>,
    pub comm: Option<&'a str>,
    pub pid: Option<u32>,
    /// The process's container: `runtime:name` (or its id's first 12 digits).
    pub container: Option<String>,
    pub server_name: Option<&'a str>,
    pub dst_addr: Option<IpAddr>,
    pub dst_port: u16,
    pub tls_version: Option<TlsVersion>,
    pub chain_source: Option<ChainSource>,
    /// The leaf's issuer, when the chain was seen.
    pub issuer: Option<&'a str>,
    /// The interception product's name, when known.
    pub product: Option<&'a str>,
    pub reasons: Vec<Reason>,
    /// Events folded into this one (aggregated streams); 1 otherwise.
    pub count: u64,
}

impl<'a> Line<'a> {
    pub fn of(e: &'a Event) -> Self {
        let h = &e.handshake;
        let j = e.judgement.as_ref();
        let p = e.process.as_ref();
        Self {
            time: h.time,
            verdict: j.map(|j| j.verdict),
            severity: j.map(|j| j.severity),
            comm: p.and_then(|p| p.comm.as_deref()),
            pid: p.and_then(|p| p.pid),
            container: p.and_then(|p| {
                let c = p.container.as_ref();
                container_label(
                    c.and_then(|c| c.runtime).map(|r| r.as_str()),
                    c.and_then(|c| c.name.as_deref()),
                    p.container_id.as_deref(),
                    c.and_then(|c| c.pod.as_ref())
                        .map(|k| (k.namespace.as_str(), k.name.as_str())),
                )
            }),
            server_name: h.server_name.as_deref(),
            dst_addr: h.dst_addr,
            dst_port: h.dst_port,
            tls_version: h.tls_version,
            chain_source: h.chain_source,
            issuer: e.issuer(),
            product: j
                .and_then(|j| j.interceptor.as_ref())
                .map(|i| i.name.as_str()),
            reasons: j.map(|j| j.reasons.clone()).unwrap_or_default(),
            count: 1,
        }
    }

    fn has(&self, r: &Reason) -> bool {
        self.reasons.contains(r)
    }

    /// `comm[pid]`, with ` (runtime:container)` when it runs in one, or `-` when no local
    /// process was found.
    pub fn process(&self) -> String {
        let process = match (self.comm, self.pid) {
            (comm, Some(pid)) => format!("{}[{pid}]", escape(comm.unwrap_or("?"))),
            (Some(comm), None) => escape(comm).into_owned(),
            (None, None) => "-".into(),
        };
        match &self.container {
            Some(c) => format!("{process} ({})", escape(c)),
            None => process,
        }
    }

    /// The destination as people know it: `name:port`, else `address:port`.
    pub fn destination(&self) -> String {
        match (self.server_name, self.dst_addr) {
            (Some(name), _) => format!("{}:{}", escape(name), self.dst_port),
            (None, Some(IpAddr::V6(a))) => format!("[{a}]:{}", self.dst_port),
            (None, Some(a)) => format!("{a}:{}", self.dst_port),
            (None, None) => format!("?:{}", self.dst_port),
        }
    }

    /// The verdict in capitals, `-` before judgement.
    pub fn verdict_word(&self) -> String {
        self.verdict
            .map_or_else(|| "-".to_owned(), |v| v.as_str().to_uppercase())
    }
}

/// An event's time, to the second, in UTC.
pub fn time(t: Timestamp) -> String {
    let (secs, _) = t.seconds_nanos();
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| "-".into())
}

/// The main reason, in words: `issuer "FortiGate CA" (Fortinet SSL inspection), trusted only
/// by this host`.
pub fn main_reason(w: &Line<'_>) -> String {
    let mut s = String::new();
    if let Some(issuer) = w.issuer {
        let _ = write!(s, "issuer \"{}\"", escape(common_name(issuer)));
        if let Some(p) = w.product {
            let _ = write!(s, " ({})", escape(p));
        }
        s.push_str(", ");
    }
    let problem = [
        (Reason::Expired, "expired"),
        (Reason::NotYetValid, "not valid yet"),
        (Reason::HostnameMismatch, "made for another name"),
        (Reason::SelfSigned, "self-signed"),
        (Reason::UnknownIssuer, "issuer unknown to both stores"),
        (Reason::NoServerAuthEku, "not for TLS servers"),
        (Reason::WeakSignature, "weak signature"),
        (Reason::WeakKey, "weak key"),
    ]
    .iter()
    .find(|(r, _)| w.has(r))
    .map(|(_, words)| *words);
    match w.verdict {
        Some(Verdict::Clean) => s.push_str("publicly trusted"),
        Some(Verdict::Intercepted) if w.has(&Reason::ApprovedInspection) => {
            s.push_str("your organisation's approved inspection CA");
        }
        Some(Verdict::Intercepted) => s.push_str("trusted only by this host"),
        Some(Verdict::Untrusted) => {
            s.push_str("trusted by nobody here");
            if let Some(p) = problem {
                let _ = write!(s, ": {p}");
            }
        }
        Some(Verdict::PinMismatch) => s.push_str("publicly trusted, but not the pinned key"),
        Some(Verdict::Unverified) if w.has(&Reason::CertificateNotVisible) => {
            s.push_str("certificate not visible (TLS 1.3)");
        }
        Some(Verdict::Unverified) => s.push_str("certificate not verified"),
        None => s.push_str("not judged"),
    }
    let rejected = w.reasons.iter().find_map(|r| match r {
        Reason::ClientRejected(_) => Some(r.to_string()),
        _ => None,
    });
    if let Some(r) = rejected {
        let alert = r.split_once(':').map_or("", |(_, a)| a).to_owned();
        let _ = write!(s, "; the client refused it ({alert})");
    } else if w.has(&Reason::ClientAcceptedUntrusted) {
        s.push_str("; the client accepted it anyway");
    }
    if w.has(&Reason::BaselineChanged) {
        s.push_str("; the issuer changed since first seen");
    }
    if w.has(&Reason::ServerFingerprintChanged) || w.has(&Reason::ServerFlightSizeChanged) {
        s.push_str("; the server answers unlike before");
    }
    if let Some(cause) = w.reasons.iter().find_map(|r| match r {
        Reason::ProbeFailed(cause) => Some(cause),
        _ => None,
    }) {
        let _ = write!(s, "; sensord's own check failed ({cause})");
    }
    if w.has(&Reason::ProbeChainDiffers) {
        s.push_str("; sensord's own check was shown another certificate");
    }
    if w.has(&Reason::ChainConflict) {
        s.push_str("; the client parsed another chain than the one on the wire");
    }
    if w.has(&Reason::StreamConflict) {
        s.push_str("; the same bytes came twice with different content");
    }
    let lost: Vec<String> = w
        .reasons
        .iter()
        .filter_map(|r| match r {
            Reason::CaptureIncomplete(cause) => Some(cause.to_string()),
            _ => None,
        })
        .collect();
    if !lost.is_empty() {
        let _ = write!(
            s,
            "; the sensor did not see all of it ({})",
            lost.join(", ")
        );
    }
    s
}

/// One line per event:
/// `TIME INTERCEPTED curl[4121] → example.com:443 TLS1.2 issuer "FortiGate CA" (Fortinet SSL inspection), trusted only by this host`.
pub fn event_line(w: &Line<'_>, palette: Palette) -> String {
    let style = Palette::severity_style(w.severity);
    let mut s = String::with_capacity(160);
    s.push_str(&palette.dim(&time(w.time)));
    s.push(' ');
    s.push_str(&palette.paint(style.bold(), &w.verdict_word()));
    let _ = write!(s, " {} → {}", w.process(), w.destination());
    if let Some(v) = w.tls_version {
        let _ = write!(s, " TLS{v}");
    }
    // TLS 1.3 hides the chain: say who saw it.
    if let Some(source @ (ChainSource::Uprobe | ChainSource::Probe)) = w.chain_source {
        let _ = write!(s, " (chain via {source})");
    }
    s.push(' ');
    s.push_str(&palette.paint(style, &main_reason(w)));
    if w.count > 1 {
        let _ = write!(s, " (×{})", w.count);
    }
    s
}

/// A local verdict (`check`, `check-chain`): its JSON fields, to which a command adds its own.
pub fn judgement_json(
    j: &Judgement,
    chain: &[impl serde::Serialize],
) -> serde_json::Map<String, serde_json::Value> {
    let json = serde_json::json!({
        "verdict": j.verdict,
        "reasons": j.reasons,
        "severity": j.severity,
        "explanation": j.explanation,
        "interceptor": j.interceptor,
        "chain": chain,
    });
    match json {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// A local verdict's style (by severity) and its main reason in words.
pub fn judgement_words(j: &Judgement, chain: &[impl AsRef<CertSummary>]) -> (Style, String) {
    let words = main_reason(&Line {
        verdict: Some(j.verdict),
        severity: Some(j.severity),
        reasons: j.reasons.clone(),
        issuer: chain.first().map(|c| c.as_ref().issuer.as_str()),
        product: j.interceptor.as_ref().map(|i| i.name.as_str()),
        ..Line::default()
    });
    (Palette::severity_style(Some(j.severity)), words)
}

/// A chain, one certificate per block, as `check` and `check-chain` print it.
pub fn chain(chain: &[impl AsRef<CertSummary>]) -> String {
    let mut s = String::new();
    for (i, c) in chain.iter().enumerate() {
        let c = c.as_ref();
        let _ = writeln!(s, "  [{i}] {}", escape(&c.subject));
        let _ = writeln!(s, "      issuer  {}", escape(&c.issuer));
        let _ = writeln!(
            s,
            "      valid   {} .. {}",
            c.not_before.rfc3339(),
            c.not_after.rfc3339()
        );
        if !c.san.is_empty() {
            let names: Vec<_> = c.san.iter().map(|n| escape(n)).collect();
            let _ = writeln!(s, "      names   {}", names.join(", "));
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
    use sensor_core::event::{ProbeFailure, Rejection};

    use super::*;

    fn line() -> Line<'static> {
        Line {
            time: Timestamp(1_700_000_000_000_000_005),
            verdict: Some(Verdict::Intercepted),
            severity: Some(Severity::High),
            comm: Some("curl"),
            pid: Some(4121),
            server_name: Some("example.com"),
            dst_addr: Some("192.0.2.1".parse().unwrap()),
            dst_port: 443,
            tls_version: Some(TlsVersion::Tls12),
            issuer: Some("C=US, O=Fortinet, CN=FortiGate CA"),
            product: Some("Fortinet SSL inspection"),
            reasons: vec![
                Reason::LocalRoot,
                Reason::KnownInterceptor("fortinet".into()),
            ],
            count: 1,
            ..Line::default()
        }
    }

    #[test]
    fn the_line_people_read() {
        let plain = Palette::plain();
        assert_eq!(
            event_line(&line(), plain),
            "2023-11-14T22:13:20Z INTERCEPTED curl[4121] → example.com:443 TLS1.2 issuer \
             \"FortiGate CA\" (Fortinet SSL inspection), trusted only by this host"
        );
        let mut tls13 = line();
        tls13.tls_version = Some(TlsVersion::Tls13);
        tls13.chain_source = Some(ChainSource::Uprobe);
        assert_eq!(
            event_line(&tls13, plain),
            "2023-11-14T22:13:20Z INTERCEPTED curl[4121] → example.com:443 TLS1.3 (chain via \
             uprobe) issuer \"FortiGate CA\" (Fortinet SSL inspection), trusted only by this host"
        );
        let coloured = event_line(&line(), Palette { enabled: true });
        assert!(
            coloured.contains("\u{1b}[1m\u{1b}[31mINTERCEPTED"),
            "{coloured:?}"
        );
    }

    #[test]
    fn reasons_in_words() {
        let w = Line {
            verdict: Some(Verdict::Untrusted),
            issuer: Some("CN=localhost"),
            reasons: vec![
                Reason::SelfSigned,
                Reason::HostnameMismatch,
                Reason::ClientRejected(Rejection::Alert(48)),
            ],
            ..Line::default()
        };
        assert_eq!(
            main_reason(&w),
            "issuer \"localhost\", trusted by nobody here: made for another name; the client \
             refused it (unknown_ca)"
        );
        let w = Line {
            verdict: Some(Verdict::Unverified),
            reasons: vec![Reason::CertificateNotVisible],
            ..Line::default()
        };
        assert_eq!(main_reason(&w), "certificate not visible (TLS 1.3)");
        let w = Line {
            verdict: Some(Verdict::Unverified),
            reasons: vec![
                Reason::CertificateNotVisible,
                Reason::ServerFlightSizeChanged,
                Reason::ProbeFailed(ProbeFailure::Refused),
            ],
            ..Line::default()
        };
        assert_eq!(
            main_reason(&w),
            "certificate not visible (TLS 1.3); the server answers unlike before; sensord's own \
             check failed (refused)"
        );
        let w = Line {
            verdict: Some(Verdict::Unverified),
            reasons: vec![
                Reason::CaptureIncomplete(sensor_core::event::CaptureLoss::Budget),
                Reason::StreamConflict,
            ],
            ..Line::default()
        };
        assert_eq!(
            main_reason(&w),
            "certificate not verified; the same bytes came twice with different content; the \
             sensor did not see all of it (budget)"
        );
    }

    #[test]
    fn destinations_and_processes() {
        let mut w = line();
        w.server_name = None;
        w.dst_addr = Some("2001:db8::1".parse().unwrap());
        assert_eq!(w.destination(), "[2001:db8::1]:443");
        w.comm = None;
        w.pid = None;
        assert_eq!(w.process(), "-");
    }

    #[test]
    fn text_from_outside_cannot_steer_the_terminal() {
        assert_eq!(
            container_label(Some("podman"), Some("web"), Some("ab"), None),
            Some("podman:web".into())
        );
        assert_eq!(
            container_label(None, None, Some(&"3f4e".repeat(16)), None),
            Some("3f4e3f4e3f4e".into())
        );
        assert_eq!(container_label(Some("docker"), None, None, None), None);
        assert_eq!(
            container_label(
                Some("containerd"),
                Some("client"),
                Some("ab"),
                Some(("lab", "client-pod"))
            )
            .as_deref(),
            Some("containerd:client pod lab/client-pod")
        );
        let line = Line {
            comm: Some("curl"),
            pid: Some(7),
            container: Some("podman:evil\u{1b}[2J".into()),
            ..Line::default()
        };
        assert_eq!(line.process(), "curl[7] (podman:evil\\u{1b}[2J)");
        assert_eq!(escape("plain.example"), "plain.example");
        assert_eq!(escape("\u{1b}[2Jclean"), "\\u{1b}[2Jclean");
        assert_eq!(escape("a\u{61c}b"), "a\\u{61c}b");
        assert_eq!(escape("a\u{9b}b"), "a\\u{9b}b");
        assert_eq!(escape("evil\u{202e}moc.elgoog"), "evil\\u{202e}moc.elgoog");
        assert_eq!(escape("tab\there\nnew"), "tab\\u{9}here\\u{a}new");
        assert_eq!(escape("back\\slash"), "back\\\\slash");
        let w = Line {
            verdict: Some(Verdict::Untrusted),
            issuer: Some("CN=\u{1b}]0;owned\u{7}"),
            server_name: Some("x\u{1b}[31m.test"),
            comm: Some("c\u{1b}"),
            pid: Some(1),
            ..Line::default()
        };
        let text = event_line(&w, Palette::plain());
        assert!(!text.chars().any(|c| c.is_control()), "{text:?}");
    }
}
