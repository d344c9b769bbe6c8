//! Syslog messages, pure: the RFC 5424 header around a payload, octet-counted framing
//! (RFC 5425 section 4.3, RFC 6587 section 3.4.1), and the payloads: the JSON contract, its
//! ECS form, or ArcSight's Common Event Format.
//!
//! Everything that came from the network or a process (SNI, names, comm) is escaped for the
//! form it goes into: JSON escapes itself; CEF escapes `\`, `|` (header), `=` (extension) and
//! line breaks, and control characters are dropped; header fields are printable ASCII only.

use std::sync::Arc;

use sensor_core::event::{Event, Role, Severity};
use sensor_host::config::{SyslogFacility, SyslogFormat};

use crate::journal::StoredEvent;

/// The RFC 5424 severity of an event (the lower, the more urgent).
pub fn syslog_severity(s: Option<Severity>) -> u8 {
    match s {
        Some(Severity::Critical) => 2,
        Some(Severity::High) => 3,
        Some(Severity::Medium) => 4,
        Some(Severity::Low) => 5,
        Some(Severity::Info) | None => 6,
    }
}

/// A header field: printable US-ASCII only (RFC 5424 PRINTUSASCII), at most `max` of it;
/// `-` (the NILVALUE) when nothing is left.
fn header_field(text: Option<&str>, max: usize) -> String {
    let out: String = text
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if out.is_empty() { "-".to_owned() } else { out }
}

/// A structured-data parameter value: `"`, `\` and `]` escaped (RFC 5424 section 6.3.3).
fn param_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().filter(|c| !c.is_control()) {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What stays the same for every message of one sender.
pub struct Sender {
    pub facility: SyslogFacility,
    pub format: SyslogFormat,
    /// sensord's process id.
    pub procid: u32,
    pub version: &'static str,
}

impl Sender {
    /// The RFC 5424 message of a stored event, without framing; `chain` is the PEM of its
    /// certificates for the ECS payload.
    pub fn message(&self, r: &StoredEvent, chain: &[Arc<str>]) -> String {
        let e = &r.event;
        let pri = u16::from(self.facility.code()) * 8 + u16::from(syslog_severity(e.severity()));
        // RFC 5424 allows six digits of a second's fraction.
        let (secs, nanos) = e.handshake.time.seconds_nanos();
        let time = time::OffsetDateTime::from_unix_timestamp(secs)
            .ok()
            .and_then(|t| {
                t.format(time::macros::format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second]"
                ))
                .ok()
            })
            .map_or("-".to_owned(), |t| format!("{t}.{:06}Z", nanos / 1000));
        let host = header_field(e.host.as_deref().and_then(|h| h.name.as_deref()), 255);
        let msgid = header_field(e.verdict().map(|v| v.as_str()), 32);
        // RFC 5424's meta sequenceId runs from 1 to 2147483647, then wraps.
        let sequence = (r.seq.saturating_sub(1) % 2_147_483_647) + 1;
        let sd = format!(
            "[meta sequenceId=\"{sequence}\"][origin software=\"sensord\" swVersion=\"{}\"]",
            param_value(self.version)
        );
        let payload = match self.format {
            SyslogFormat::Json => r.json.to_string(),
            SyslogFormat::Ecs => {
                serde_json::to_string(&crate::export::ecs::to_ecs(r, chain)).unwrap_or_default()
            }
            SyslogFormat::Cef => cef(r, self.version),
        };
        // A UTF-8 message starts with the byte order mark (RFC 5424 section 6.4); CEF is read
        // by parsers that expect it first, so it goes without.
        let bom = if self.format == SyslogFormat::Cef {
            ""
        } else {
            "\u{feff}"
        };
        format!(
            "<{pri}>1 {time} {host} sensord {} {msgid} {sd} {bom}{payload}",
            self.procid
        )
    }
}

/// Octet-counting framing: the message's length in bytes, a space, the message.
pub fn frame(message: &str) -> Vec<u8> {
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(message.as_bytes());
    out
}

/// A CEF header field: `\` and `|` escaped, control characters dropped.
fn cef_header(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().filter(|c| !c.is_control()) {
        if matches!(c, '\\' | '|') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A CEF extension value: `\` and `=` escaped, line breaks as `\n` and `\r`, other control
/// characters dropped.
fn cef_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The CEF severity (0 to 10) of an event.
fn cef_severity(s: Option<Severity>) -> u8 {
    match s {
        Some(Severity::Critical) => 10,
        Some(Severity::High) => 8,
        Some(Severity::Medium) => 5,
        Some(Severity::Low) => 3,
        Some(Severity::Info) | None => 1,
    }
}

/// The event in ArcSight's Common Event Format (revision 25): the verdict as the signature,
/// the dictionary's keys for addresses, ports, process and device, and labelled custom
/// strings for what the dictionary has no key for.
pub fn cef(r: &StoredEvent, version: &str) -> String {
    let e: &Event = &r.event;
    let h = &e.handshake;
    let j = e.judgement.as_ref();
    let verdict = e.verdict().map_or("unjudged", |v| v.as_str());
    let name = match j {
        Some(j) => format!(
            "TLS session {verdict}: {}",
            j.reasons.first().map_or(String::new(), ToString::to_string)
        ),
        None => "TLS session".to_owned(),
    };
    let mut ext: Vec<(&str, String)> = Vec::new();
    let (secs, nanos) = h.time.seconds_nanos();
    ext.push((
        "rt",
        (secs * 1000 + i64::from(nanos / 1_000_000)).to_string(),
    ));
    if let Some(a) = h.src_addr {
        ext.push((if a.is_ipv4() { "src" } else { "c6a2" }, a.to_string()));
    }
    ext.push(("spt", h.src_port.to_string()));
    if let Some(a) = h.dst_addr {
        ext.push((if a.is_ipv4() { "dst" } else { "c6a3" }, a.to_string()));
    }
    ext.push(("dpt", h.dst_port.to_string()));
    if let Some(sni) = &h.server_name {
        ext.push(("dhost", sni.clone()));
    }
    ext.push(("proto", "TCP".to_owned()));
    ext.push(("app", "TLS".to_owned()));
    ext.push(("cat", verdict.to_owned()));
    ext.push(("outcome", h.client_outcome.to_string()));
    ext.push(("externalId", r.seq.to_string()));
    if let Some(host) = e.host.as_deref() {
        if let Some(n) = &host.name {
            ext.push(("dvchost", n.clone()));
        }
        if let Some(id) = &host.id {
            ext.push(("deviceExternalId", id.clone()));
        }
    }
    if let Some(p) = &e.process {
        let (name, pid, uid) = match p.role {
            Role::Client => ("sproc", "spid", "suid"),
            Role::Server => ("dproc", "dpid", "duid"),
        };
        if let Some(comm) = &p.comm {
            ext.push((name, comm.clone()));
        }
        if let Some(v) = p.pid {
            ext.push((pid, v.to_string()));
        }
        if let Some(v) = p.uid {
            ext.push((uid, v.to_string()));
        }
    }
    if let Some(j) = j {
        ext.push(("msg", j.explanation.clone()));
        let reasons: Vec<String> = j.reasons.iter().map(ToString::to_string).collect();
        ext.push(("cs1Label", "reasons".to_owned()));
        ext.push(("cs1", reasons.join(",")));
        if let Some(i) = &j.interceptor {
            ext.push(("cs4Label", "interceptor".to_owned()));
            ext.push(("cs4", i.name.clone()));
        }
    }
    if let Some(ja4) = &h.ja4 {
        ext.push(("cs2Label", "ja4".to_owned()));
        ext.push(("cs2", ja4.clone()));
    }
    if let Some(leaf) = h.chain.first() {
        ext.push(("cs3Label", "issuer".to_owned()));
        ext.push(("cs3", leaf.issuer.clone()));
        ext.push(("cs5Label", "leafSha256".to_owned()));
        ext.push(("cs5", leaf.sha256.clone()));
    }
    if let Some(src) = h.chain_source {
        ext.push(("cs6Label", "chainSource".to_owned()));
        ext.push(("cs6", src.to_string()));
    }
    let extension: Vec<String> = ext
        .into_iter()
        .map(|(k, v)| format!("{k}={}", cef_value(&v)))
        .collect();
    format!(
        "CEF:0|sensor|sensord|{}|{}|{}|{}|{}",
        cef_header(version),
        cef_header(verdict),
        cef_header(&name),
        cef_severity(e.severity()),
        extension.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sensor_core::event::{Handshake, Host, Judgement, Process, Reason, Timestamp, Verdict};

    use super::*;
    use crate::journal::NewEvent;

    fn stored(sni: &str) -> StoredEvent {
        let e = Event {
            handshake: Handshake {
                time: Timestamp(1_795_000_000_123_456_789),
                src_addr: Some("10.0.0.1".parse().unwrap()),
                src_port: 5000,
                dst_addr: Some("192.0.2.1".parse().unwrap()),
                dst_port: 443,
                server_name: Some(sni.into()),
                ..Handshake::default()
            },
            process: Some(Process {
                pid: Some(7),
                comm: Some("cu|rl\\n".into()),
                ..Process::new(Role::Client)
            }),
            judgement: Some(Judgement {
                verdict: Verdict::Intercepted,
                reasons: vec![Reason::LocalRoot],
                severity: Severity::High,
                explanation: "line one\nline=two".into(),
                interceptor: None,
                extra_certificates: Vec::new(),
                interceptor_grade: None,
            }),
            host: Some(Arc::new(Host {
                id: Some("0123456789abcdef0123456789abcdef".into()),
                name: Some("web 1".into()),
                ..Host::default()
            })),
        };
        NewEvent::of(e).stored(42)
    }

    fn sender(format: SyslogFormat) -> Sender {
        Sender {
            facility: SyslogFacility::Local0,
            format,
            procid: 99,
            version: "0.1.0",
        }
    }

    #[test]
    fn an_rfc5424_message_with_its_header_and_structured_data() {
        let m = sender(SyslogFormat::Json).message(&stored("a.test"), &[]);
        // local0 (16) * 8 + err (3) = 131; microseconds; the host name without its space.
        let head = concat!(
            r#"<131>1 2026-11-18T11:06:40.123456Z web1 sensord 99 intercepted "#,
            r#"[meta sequenceId="42"][origin software="sensord" swVersion="0.1.0"] "#,
            "\u{feff}{"
        );
        assert!(m.starts_with(head), "{m}");
        let json: serde_json::Value =
            serde_json::from_str(m.split_once('\u{feff}').unwrap().1).unwrap();
        assert_eq!(json["server_name"], "a.test");
        assert_eq!(json["host"]["id"], "0123456789abcdef0123456789abcdef");
        let framed = frame(&m);
        let (len, rest) = std::str::from_utf8(&framed)
            .unwrap()
            .split_once(' ')
            .unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), rest.len());
        assert_eq!(rest, m);
    }

    #[test]
    fn cef_escapes_what_the_network_and_processes_wrote() {
        let m = sender(SyslogFormat::Cef).message(&stored("evil|host=x\nCEF:0"), &[]);
        let cef = m
            .split_once(" CEF:")
            .map(|(_, c)| format!("CEF:{c}"))
            .unwrap();
        assert!(
            cef.starts_with(
                "CEF:0|sensor|sensord|0.1.0|intercepted|TLS session intercepted: local_root|8|"
            ),
            "{cef}"
        );
        assert!(cef.contains("dhost=evil|host\\=x\\nCEF:0 "), "{cef}");
        assert!(cef.contains("sproc=cu|rl\\\\n "), "{cef}");
        assert!(cef.contains("msg=line one\\nline\\=two "), "{cef}");
        assert!(cef.contains("rt=1795000000123 "), "{cef}");
        assert!(
            cef.contains("src=10.0.0.1 spt=5000 dst=192.0.2.1 dpt=443"),
            "{cef}"
        );
        assert!(
            cef.contains("deviceExternalId=0123456789abcdef0123456789abcdef"),
            "{cef}"
        );
        assert!(!cef.contains('\n') && !m.contains('\u{feff}'), "{cef}");
        // Every unescaped `=` in the extension starts a known key.
        let ext = cef.splitn(8, '|').nth(7).unwrap();
        let keys: Vec<&str> = ext
            .split(' ')
            .filter_map(|w| w.split_once('=').map(|(k, _)| k))
            .filter(|k| !k.ends_with('\\'))
            .collect();
        for k in keys {
            assert!(
                k.chars().all(|c| c.is_ascii_alphanumeric()),
                "key {k:?} in {cef}"
            );
        }
    }

    /// A CEF extension read back as a SIEM's parser reads it: a key is the word before an
    /// unescaped `=`, its value runs to the space before the next key; `\\`, `\=`, `\n`
    /// and `\r` are unescaped.
    fn parse_extension(ext: &str) -> Vec<(String, String)> {
        let chars: Vec<char> = ext.chars().collect();
        let mut equals = Vec::new();
        let mut escaped = false;
        for (i, c) in chars.iter().enumerate() {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '=') => equals.push(i),
                _ => escaped = false,
            }
        }
        let key_start = |eq: usize| {
            chars[..eq]
                .iter()
                .rposition(|c| *c == ' ')
                .map_or(0, |p| p + 1)
        };
        let mut out = Vec::new();
        for (n, &eq) in equals.iter().enumerate() {
            let key: String = chars[key_start(eq)..eq].iter().collect();
            let end = equals
                .get(n + 1)
                .map_or(chars.len(), |&next| key_start(next).saturating_sub(1));
            let mut value = String::new();
            let mut it = chars[eq + 1..end].iter();
            while let Some(c) = it.next() {
                if *c == '\\' {
                    match it.next() {
                        Some('n') => value.push('\n'),
                        Some('r') => value.push('\r'),
                        Some(c) => value.push(*c),
                        None => {}
                    }
                } else {
                    value.push(*c);
                }
            }
            out.push((key, value));
        }
        out
    }

    #[test]
    fn cef_reads_back_whatever_the_network_wrote() {
        // Text a hostile server or process may put in a name, from a small xorshift over the
        // characters CEF and syslog give a meaning to.
        const PALETTE: &[char] = &[
            'a', 'Z', '0', ' ', '|', '=', '\\', '\n', '\r', '\0', '\u{1b}', '"', ']', '\u{feff}',
            'é', '🙂', ':', '<', '>',
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut text = |len: usize| -> String {
            (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    PALETTE[(state % PALETTE.len() as u64) as usize]
                })
                .collect()
        };
        let visible = |s: &str| -> String {
            s.chars()
                .filter(|c| !c.is_control() || matches!(c, '\n' | '\r'))
                .collect()
        };
        for round in 0..500 {
            let sni = format!("x{}", text(round % 40));
            let comm = text(1 + round % 15);
            let explanation = text(round % 60);
            let mut r = stored(&sni);
            let e = Arc::make_mut(&mut r.event);
            e.process.as_mut().unwrap().comm = Some(comm.clone());
            e.judgement.as_mut().unwrap().explanation = explanation.clone();
            let m = sender(SyslogFormat::Cef).message(&r, &[]);
            assert!(
                !m.chars().any(|c| c.is_control()),
                "a control character reached the message: {m:?}"
            );
            let cef = &m[m.find("CEF:0|").unwrap()..];
            let ext = cef.splitn(8, '|').nth(7).unwrap();
            let fields: std::collections::BTreeMap<String, String> =
                parse_extension(ext).into_iter().collect();
            for key in fields.keys() {
                assert!(
                    key.chars().all(|c| c.is_ascii_alphanumeric()),
                    "{key:?} in {cef}"
                );
            }
            assert_eq!(fields["dhost"], visible(&sni), "{cef}");
            assert_eq!(fields["sproc"], visible(&comm), "{cef}");
            assert_eq!(
                fields.get("msg").map_or("", String::as_str),
                visible(&explanation),
                "{cef}"
            );
            assert_eq!(fields["cat"], "intercepted");
        }
    }

    #[test]
    fn severities_and_header_fields() {
        assert_eq!(syslog_severity(Some(Severity::Critical)), 2);
        assert_eq!(syslog_severity(None), 6);
        assert_eq!(header_field(Some("a b\u{1b}c"), 255), "abc");
        assert_eq!(header_field(Some(" "), 255), "-");
        assert_eq!(header_field(None, 32), "-");
        assert_eq!(param_value(r#"a"b]c\"#), r#"a\"b\]c\\"#);
    }
}
