//! Event filters: the same allow- and deny-lists for gRPC streams, ListEvents and file exports,
//! over the few fields of an event the journal keeps as columns ([`EventMeta`]). Pure. Globs
//! are compiled and destinations parsed once, when the filter is made: a Watch stream tests
//! every event, on the daemon's runtime, and must not pay for its patterns each time.

use std::{fmt, net::IpAddr, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use wildmatch::WildMatch;

use crate::event::{ContainerRuntime, Event, Severity, Verdict};

/// What a filter looks at, for one event. Kept with each event in the journal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventMeta {
    pub time_ns: u64,
    /// `None` only for an event that was never judged.
    pub verdict: Option<Verdict>,
    pub severity: Option<Severity>,
    pub sni: Option<String>,
    pub comm: Option<String>,
    pub exe: Option<String>,
    pub pid: Option<u32>,
    pub dst_addr: Option<IpAddr>,
    pub dst_port: u16,
    /// The leaf's issuer, for aggregation.
    pub issuer: Option<String>,
    /// The container the local process runs in: its id, name and runtime.
    pub container_id: Option<String>,
    pub container_name: Option<String>,
    pub container_runtime: Option<ContainerRuntime>,
    /// Its Kubernetes pod: `namespace/name`.
    pub pod: Option<String>,
}

impl EventMeta {
    pub fn of(e: &Event) -> Self {
        let h = &e.handshake;
        let p = e.process.as_ref();
        Self {
            time_ns: h.time.0,
            verdict: e.verdict(),
            severity: e.severity(),
            sni: h.server_name.clone(),
            comm: p.and_then(|p| p.comm.clone()),
            exe: p.and_then(|p| p.exe.clone()),
            pid: p.and_then(|p| p.pid),
            dst_addr: h.dst_addr,
            dst_port: h.dst_port,
            issuer: e.issuer().map(str::to_owned),
            ..Self::default()
        }
        .with_container_of(e)
    }

    /// The same with the container fields of `e`'s process (for metadata read from
    /// columns, which do not hold them).
    pub fn with_container_of(mut self, e: &Event) -> Self {
        let p = e.process.as_ref();
        let c = p.and_then(|p| p.container.as_ref());
        self.container_id = p.and_then(|p| p.container_id.clone());
        self.container_name = c.and_then(|c| c.name.clone());
        self.container_runtime = c.and_then(|c| c.runtime);
        self.pod = c
            .and_then(|c| c.pod.as_ref())
            .map(|k| format!("{}/{}", k.namespace, k.name));
        self
    }

    /// The API's severity number: 0 (none) to 5 (critical).
    pub fn severity_number(&self) -> u8 {
        self.severity.map_or(0, Severity::number)
    }
}

/// A case-insensitive glob (`*.example.com`), compiled once.
#[derive(Clone)]
pub struct Glob {
    pattern: String,
    matcher: WildMatch,
}

impl Glob {
    pub fn new(pattern: &str) -> Self {
        Self {
            pattern: pattern.to_owned(),
            matcher: WildMatch::new(&pattern.to_ascii_lowercase()),
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        self.matcher.matches(&value.to_ascii_lowercase())
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.pattern)
    }
}

impl PartialEq for Glob {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for Glob {}

impl From<&str> for Glob {
    fn from(pattern: &str) -> Self {
        Self::new(pattern)
    }
}

impl Serialize for Glob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.pattern)
    }
}

impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::new(&String::deserialize(d)?))
    }
}

/// A destination pattern: `ip`, `ip:port`, `[ipv6]:port` or `:port`, parsed once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    Port(u16),
    Addr(IpAddr),
    AddrPort(IpAddr, u16),
}

/// A destination pattern that is none of the forms.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("destination {0:?}: give an address, address:port, [IPv6]:port or :port")]
pub struct BadDestination(pub String);

impl FromStr for Destination {
    type Err = BadDestination;

    fn from_str(pattern: &str) -> Result<Self, Self::Err> {
        let bad = || BadDestination(pattern.chars().take(64).collect());
        if let Some(p) = pattern.strip_prefix(':') {
            return p.parse().map(Self::Port).map_err(|_| bad());
        }
        if let Ok(ip) = pattern.parse::<IpAddr>() {
            return Ok(Self::Addr(ip));
        }
        pattern
            .parse::<std::net::SocketAddr>()
            .map(|sa| Self::AddrPort(sa.ip(), sa.port()))
            .map_err(|_| bad())
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Port(p) => write!(f, ":{p}"),
            Self::Addr(a) => write!(f, "{a}"),
            Self::AddrPort(a, p) => write!(f, "{}", std::net::SocketAddr::new(*a, *p)),
        }
    }
}

impl Destination {
    pub fn matches(&self, addr: Option<IpAddr>, port: u16) -> bool {
        match *self {
            Self::Port(p) => p == port,
            Self::Addr(a) => addr == Some(a),
            Self::AddrPort(a, p) => addr == Some(a) && p == port,
        }
    }
}

impl Serialize for Destination {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Destination {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Allow-lists (empty: everything) and deny-lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Filter {
    pub verdicts: Vec<Verdict>,
    /// 0 to 5; events below are dropped.
    pub min_severity: u8,
    /// Globs such as `*.example.com`.
    pub sni: Vec<Glob>,
    pub comm: Vec<Glob>,
    pub exe: Vec<Glob>,
    pub pid: Vec<u32>,
    /// `ip`, `ip:port`, `[ipv6]:port` or `:port`.
    pub destination: Vec<Destination>,
    pub exclude_verdicts: Vec<Verdict>,
    pub exclude_sni: Vec<Glob>,
    pub exclude_comm: Vec<Glob>,
    pub exclude_exe: Vec<Glob>,
    pub exclude_destination: Vec<Destination>,
    /// Containers by name or id (globs: `web-*`, `3f4e*`).
    pub container: Vec<Glob>,
    /// Container runtimes: docker, podman, containerd, cri-o.
    pub container_runtime: Vec<ContainerRuntime>,
    /// Kubernetes pods by name or `namespace/name` (globs: `web-*`, `shop/*`).
    pub pod: Vec<Glob>,
}

fn glob_any(patterns: &[Glob], value: Option<&str>) -> bool {
    value.is_some_and(|v| patterns.iter().any(|p| p.matches(v)))
}

impl Filter {
    /// Whether an event passes.
    pub fn matches(&self, m: &EventMeta) -> bool {
        if !self.verdicts.is_empty() && !m.verdict.is_some_and(|v| self.verdicts.contains(&v)) {
            return false;
        }
        if m.severity_number() < self.min_severity {
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
                .any(|d| d.matches(m.dst_addr, m.dst_port))
        {
            return false;
        }
        if !self.container.is_empty()
            && !glob_any(&self.container, m.container_name.as_deref())
            && !glob_any(&self.container, m.container_id.as_deref())
        {
            return false;
        }
        if !self.pod.is_empty()
            && !glob_any(&self.pod, m.pod.as_deref())
            && !glob_any(
                &self.pod,
                m.pod
                    .as_deref()
                    .and_then(|p| p.split_once('/'))
                    .map(|(_, name)| name),
            )
        {
            return false;
        }
        if !self.container_runtime.is_empty()
            && !m
                .container_runtime
                .is_some_and(|r| self.container_runtime.contains(&r))
        {
            return false;
        }
        if m.verdict
            .is_some_and(|v| self.exclude_verdicts.contains(&v))
            || glob_any(&self.exclude_sni, m.sni.as_deref())
            || glob_any(&self.exclude_comm, m.comm.as_deref())
            || glob_any(&self.exclude_exe, m.exe.as_deref())
            || self
                .exclude_destination
                .iter()
                .any(|d| d.matches(m.dst_addr, m.dst_port))
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
            verdict: Some(Verdict::Intercepted),
            severity: Some(Severity::High),
            sni: Some("api.example.com".into()),
            comm: Some("curl".into()),
            exe: Some("/usr/bin/curl".into()),
            pid: Some(42),
            dst_addr: Some("192.0.2.1".parse().unwrap()),
            dst_port: 443,
            ..EventMeta::default()
        }
    }

    fn dest(pattern: &str) -> Destination {
        pattern.parse().unwrap()
    }

    #[test]
    fn destinations_are_parsed_once_and_bad_ones_refused() {
        assert_eq!(dest(":443"), Destination::Port(443));
        assert_eq!(
            dest("[2001:db8::1]:443"),
            Destination::AddrPort("2001:db8::1".parse().unwrap(), 443)
        );
        assert_eq!(dest("2001:db8::1").to_string(), "2001:db8::1");
        assert_eq!(dest("[2001:db8::1]:443").to_string(), "[2001:db8::1]:443");
        // Before, these matched nothing, silently: a deny-list with a typo denied nothing.
        for bad in ["example.com", ":https", "192.0.2.1:", ":70000", ""] {
            assert!(bad.parse::<Destination>().is_err(), "{bad}");
        }
        let f: Filter = serde_json::from_str(r#"{"exclude_destination": [":22"]}"#).unwrap();
        assert_eq!(f.exclude_destination, [Destination::Port(22)]);
        let err = serde_json::from_str::<Filter>(r#"{"destination": ["host:443"]}"#).unwrap_err();
        assert!(
            err.to_string().contains("destination \"host:443\""),
            "{err}"
        );
    }

    #[test]
    fn containers_by_name_id_and_runtime() {
        let in_container = EventMeta {
            container_id: Some("3f4e".repeat(16)),
            container_name: Some("web-1".into()),
            container_runtime: Some(ContainerRuntime::Podman),
            ..meta()
        };
        let f = |json: &str| serde_json::from_str::<Filter>(json).unwrap();
        assert!(f(r#"{"container": ["web-*"]}"#).matches(&in_container));
        assert!(f(r#"{"container": ["3f4e3f4e*"]}"#).matches(&in_container));
        assert!(!f(r#"{"container": ["db-*"]}"#).matches(&in_container));
        assert!(
            !f(r#"{"container": ["*"]}"#).matches(&meta()),
            "not in a container"
        );
        assert!(f(r#"{"container_runtime": ["podman"]}"#).matches(&in_container));
        assert!(!f(r#"{"container_runtime": ["docker", "cri-o"]}"#).matches(&in_container));
        assert!(serde_json::from_str::<Filter>(r#"{"container_runtime": ["lxc"]}"#).is_err());
        let in_pod = EventMeta {
            pod: Some("shop/web-7d9f".into()),
            ..in_container.clone()
        };
        assert!(f(r#"{"pod": ["web-*"]}"#).matches(&in_pod));
        assert!(f(r#"{"pod": ["shop/*"]}"#).matches(&in_pod));
        assert!(!f(r#"{"pod": ["billing/*", "db-*"]}"#).matches(&in_pod));
        assert!(!f(r#"{"pod": ["*"]}"#).matches(&in_container), "no pod");
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
            verdicts: vec![Verdict::Intercepted, Verdict::Untrusted],
            ..Filter::default()
        }));
        assert!(!f(Filter {
            min_severity: 5,
            ..Filter::default()
        }));
        assert!(f(Filter {
            destination: vec![dest(":443")],
            ..Filter::default()
        }));
        assert!(f(Filter {
            destination: vec![dest("192.0.2.1:443")],
            ..Filter::default()
        }));
        assert!(!f(Filter {
            destination: vec![dest("192.0.2.1:8443")],
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
