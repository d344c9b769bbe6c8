//! Event filters: the same allow- and deny-lists for gRPC streams, ListEvents and file exports.
//! Pure.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use wildmatch::WildMatch;

use crate::event::Handshake;

/// What a filter looks at, for one event. Kept with each event in the journal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMeta {
    pub time_ns: u64,
    pub verdict: String,
    /// 0 (none) to 5 (critical), as the API numbers severities.
    pub severity: u8,
    pub sni: Option<String>,
    pub comm: Option<String>,
    pub exe: Option<String>,
    pub pid: Option<u32>,
    pub dst_addr: Option<IpAddr>,
    pub dst_port: u16,
    /// The leaf's issuer, for aggregation.
    pub issuer: Option<String>,
}

/// Severity names to the API's numbers.
pub fn severity_number(name: Option<&str>) -> u8 {
    match name {
        Some("info") => 1,
        Some("low") => 2,
        Some("medium") => 3,
        Some("high") => 4,
        Some("critical") => 5,
        _ => 0,
    }
}

impl EventMeta {
    pub fn of(h: &Handshake) -> Self {
        let p = h.process.as_ref();
        Self {
            time_ns: h.time.0,
            verdict: h.verdict.to_owned(),
            severity: severity_number(h.severity),
            sni: h.server_name.clone(),
            comm: p.and_then(|p| p.comm.clone()),
            exe: p.and_then(|p| p.exe.clone()),
            pid: p.and_then(|p| p.pid),
            dst_addr: h.dst_addr,
            dst_port: h.dst_port,
            issuer: h.chain.first().map(|c| c.issuer.clone()),
        }
    }
}

/// Allow-lists (empty: everything) and deny-lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Filter {
    pub verdicts: Vec<String>,
    /// 0 to 5; events below are dropped.
    pub min_severity: u8,
    /// Globs such as `*.example.com`.
    pub sni: Vec<String>,
    pub comm: Vec<String>,
    pub exe: Vec<String>,
    pub pid: Vec<u32>,
    /// `ip`, `ip:port`, `[ipv6]:port` or `:port`.
    pub destination: Vec<String>,
    pub exclude_verdicts: Vec<String>,
    pub exclude_sni: Vec<String>,
    pub exclude_comm: Vec<String>,
    pub exclude_exe: Vec<String>,
    pub exclude_destination: Vec<String>,
}

fn glob_any(patterns: &[String], value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        patterns
            .iter()
            .any(|p| WildMatch::new(&p.to_ascii_lowercase()).matches(&v.to_ascii_lowercase()))
    })
}

/// `ip`, `ip:port`, `[v6]:port`, `:port` against a destination.
fn destination_matches(pattern: &str, addr: Option<IpAddr>, port: u16) -> bool {
    if let Some(p) = pattern.strip_prefix(':') {
        return p.parse::<u16>().is_ok_and(|p| p == port);
    }
    if let Ok(ip) = pattern.parse::<IpAddr>() {
        return addr == Some(ip);
    }
    if let Ok(sa) = pattern.parse::<std::net::SocketAddr>() {
        return addr == Some(sa.ip()) && port == sa.port();
    }
    false
}

impl Filter {
    /// Whether an event passes.
    pub fn matches(&self, m: &EventMeta) -> bool {
        if !self.verdicts.is_empty() && !self.verdicts.contains(&m.verdict) {
            return false;
        }
        if m.severity < self.min_severity {
            return false;
        }
        if !self.sni.is_empty() && !glob_any(&self.sni, m.sni.as_deref()) {
            return false;
        }
        if !self.comm.is_empty() && !glob_any(&self.comm, m.comm.as_deref()) {
            return false;
        }
        if !self.exe.is_empty() && !glob_any(&self.exe, m.exe.as_deref()) {
            return false;
        }
        if !self.pid.is_empty() && !m.pid.is_some_and(|p| self.pid.contains(&p)) {
            return false;
        }
        if !self.destination.is_empty()
            && !self
                .destination
                .iter()
                .any(|d| destination_matches(d, m.dst_addr, m.dst_port))
        {
            return false;
        }
        if self.exclude_verdicts.contains(&m.verdict)
            || glob_any(&self.exclude_sni, m.sni.as_deref())
            || glob_any(&self.exclude_comm, m.comm.as_deref())
            || glob_any(&self.exclude_exe, m.exe.as_deref())
            || self
                .exclude_destination
                .iter()
                .any(|d| destination_matches(d, m.dst_addr, m.dst_port))
        {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> EventMeta {
        EventMeta {
            verdict: "intercepted".into(),
            severity: 4,
            sni: Some("api.example.com".into()),
            comm: Some("curl".into()),
            exe: Some("/usr/bin/curl".into()),
            pid: Some(42),
            dst_addr: Some("192.0.2.1".parse().unwrap()),
            dst_port: 443,
            ..EventMeta::default()
        }
    }

    #[test]
    fn allow_and_deny_lists() {
        let m = meta();
        assert!(Filter::default().matches(&m));
        let f = |f: Filter| f.matches(&m);
        assert!(f(Filter {
            sni: vec!["*.EXAMPLE.com".into()],
            ..Filter::default()
        }));
        assert!(!f(Filter {
            sni: vec!["*.example.org".into()],
            ..Filter::default()
        }));
        assert!(f(Filter {
            verdicts: vec!["intercepted".into(), "untrusted".into()],
            ..Filter::default()
        }));
        assert!(!f(Filter {
            min_severity: 5,
            ..Filter::default()
        }));
        assert!(f(Filter {
            destination: vec![":443".into()],
            ..Filter::default()
        }));
        assert!(f(Filter {
            destination: vec!["192.0.2.1:443".into()],
            ..Filter::default()
        }));
        assert!(!f(Filter {
            destination: vec!["192.0.2.1:8443".into()],
            ..Filter::default()
        }));
        assert!(!f(Filter {
            exclude_comm: vec!["cur*".into()],
            ..Filter::default()
        }));
        assert!(!f(Filter {
            pid: vec![7],
            ..Filter::default()
        }));
        assert!(f(Filter {
            exe: vec!["/usr/bin/*".into()],
            ..Filter::default()
        }));
    }
}
