//! The host an event was seen on: who to blame in a fleet of hundreds. The daemon reads it once
//! at start (sensor-host's `identity`) and every event it records carries it; offline analysis
//! of a capture file has none. The text in it came from local files an administrator may have
//! set to anything: [`Host::cleaned`] bounds it and keeps control characters out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest value kept for any text field, in bytes (a hostname is at most 64, an os-release
/// value rarely more than a line).
pub const MAX_TEXT: usize = 256;

/// Labels a host may carry, at most.
pub const MAX_LABELS: usize = 32;

/// Where an event comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Host {
    /// `/etc/machine-id`: 32 lowercase hex digits, stable for the installation.
    pub id: Option<String>,
    /// The host name (the kernel's nodename).
    pub name: Option<String>,
    /// This boot's random id (`/proc/sys/kernel/random/boot_id`): tells reboots apart.
    pub boot_id: Option<String>,
    /// os-release `ID` (`debian`, `rhel`, ...).
    pub os_id: Option<String>,
    /// os-release `NAME`.
    pub os_name: Option<String>,
    /// os-release `VERSION_ID`.
    pub os_version: Option<String>,
    /// The running kernel's release (`uname -r`).
    pub kernel: Option<String>,
    /// The CPU architecture the sensor was built for (`x86_64`, `aarch64`).
    pub architecture: Option<String>,
    /// The sensor's version (`0.1.0`).
    pub sensor_version: Option<String>,
    /// The commit the sensor was built from.
    pub sensor_commit: Option<String>,
    /// The `[host] labels` of sensord's configuration (site, environment, ...).
    pub labels: BTreeMap<String, String>,
}

/// Whether `id` has the form of a machine id (32 hex digits, lowercase as systemd writes it).
pub fn is_machine_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `key` may name a label: 1 to 64 of `a-z 0-9 _ -`, starting with a letter. ECS wants
/// no dots in label keys; these survive every export's naming rules.
pub fn is_label_key(key: &str) -> bool {
    (1..=64).contains(&key.len())
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// `text` as an event may carry it: trimmed, control characters dropped, at most
/// [`MAX_TEXT`] bytes (cut on a character boundary); `None` when nothing is left.
pub fn clean_text(text: &str) -> Option<String> {
    let mut out = String::new();
    for c in text.trim().chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_TEXT {
            break;
        }
        out.push(c);
    }
    (!out.is_empty()).then_some(out)
}

/// The values of an os-release file (`KEY=value`, values optionally quoted, `#` comments),
/// as its specification (os-release(5)) describes them.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines().take(256) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            continue;
        }
        out.insert(key.to_owned(), unquote(value));
    }
    out
}

/// A shell-style value: `"..."` or `'...'` with `\` escapes inside double quotes, or bare.
fn unquote(value: &str) -> String {
    let value = value.trim();
    let quoted = |q: char| value.len() >= 2 && value.starts_with(q) && value.ends_with(q);
    if quoted('\'') {
        return value[1..value.len() - 1].to_owned();
    }
    if !quoted('"') {
        return value.to_owned();
    }
    let mut out = String::new();
    let mut chars = value[1..value.len() - 1].chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Host {
    /// The same host with every text field cleaned ([`clean_text`]), a malformed machine id or
    /// boot id dropped, and labels beyond [`MAX_LABELS`] or with bad keys left out.
    pub fn cleaned(self) -> Self {
        let c = |v: Option<String>| v.as_deref().and_then(clean_text);
        let id = c(self.id).filter(|id| is_machine_id(id));
        let boot_id = c(self.boot_id)
            .filter(|b| b.len() == 36 && b.bytes().all(|x| x.is_ascii_hexdigit() || x == b'-'));
        Self {
            id,
            name: c(self.name),
            boot_id,
            os_id: c(self.os_id),
            os_name: c(self.os_name),
            os_version: c(self.os_version),
            kernel: c(self.kernel),
            architecture: c(self.architecture),
            sensor_version: c(self.sensor_version),
            sensor_commit: c(self.sensor_commit),
            labels: self
                .labels
                .into_iter()
                .filter(|(k, _)| is_label_key(k))
                .map(|(k, v)| (k, clean_text(&v).unwrap_or_default()))
                .take(MAX_LABELS)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_values_quoted_bare_and_escaped() {
        let text = "# a comment\nNAME=\"Debian GNU/Linux\"\nVERSION_ID='12'\nID=debian\n\
                    PRETTY_NAME=\"A \\\"quoted\\\" name\"\nbad line\nlower=x\n";
        let v = parse_os_release(text);
        assert_eq!(v["NAME"], "Debian GNU/Linux");
        assert_eq!(v["VERSION_ID"], "12");
        assert_eq!(v["ID"], "debian");
        assert_eq!(v["PRETTY_NAME"], "A \"quoted\" name");
        assert_eq!(v.len(), 4);
    }

    #[test]
    fn ids_labels_and_text_are_checked() {
        assert!(is_machine_id("0123456789abcdef0123456789abcdef"));
        assert!(!is_machine_id("0123456789ABCDEF0123456789ABCDEF"));
        assert!(!is_machine_id("uninitialized"));
        assert!(is_label_key("site"));
        assert!(is_label_key("env_2-b"));
        assert!(!is_label_key("a.b"));
        assert!(!is_label_key("2site"));
        assert!(!is_label_key(""));
        assert_eq!(clean_text("  a\u{1b}[31mb\n "), Some("a[31mb".into()));
        assert_eq!(clean_text(" \t"), None);
        let long = "é".repeat(200);
        let cut = clean_text(&long).unwrap();
        assert!(cut.len() <= MAX_TEXT && cut.chars().all(|c| c == 'é'));

        let mut labels = BTreeMap::new();
        labels.insert("site".into(), "fra\u{7}1".into());
        labels.insert("Bad.Key".into(), "x".into());
        let host = Host {
            id: Some("not a machine id".into()),
            name: Some("web-1\r\n".into()),
            boot_id: Some("8c1b5a3e-5d0c-4b89-9e61-0a5d4f0e7c11".into()),
            labels,
            ..Host::default()
        }
        .cleaned();
        assert_eq!(host.id, None);
        assert_eq!(host.name.as_deref(), Some("web-1"));
        assert!(host.boot_id.is_some());
        assert_eq!(host.labels.len(), 1);
        assert_eq!(host.labels["site"], "fra1");
    }
}
