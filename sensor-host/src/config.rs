//! sensord's configuration file (TOML). Every key is optional; `dist/sensord.toml` documents
//! them all with their defaults. [`Config::parse`] is pure: text in, a [`Config`] or an error
//! that names the file and the line out; [`Config::load`] reads the file.

use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

use sensor_core::{
    filter::Filter,
    trust::{Approved, TrustError, line_of},
};

use crate::trust::TrustConfig;

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the journal and other state live.
    pub state_dir: PathBuf,
    pub api: ApiConfig,
    pub tap: TapConfig,
    pub trust: TrustSection,
    pub journal: JournalConfig,
    pub export: ExportConfig,
    pub metrics: MetricsConfig,
    pub probe: ProbeConfig,
    pub uprobe: UprobeConfig,
    pub host: HostConfig,
    pub containers: ContainersConfig,
}

/// How containers are named beyond their cgroup path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainersConfig {
    /// Ask the container runtime's CRI socket for a container's name and image and its
    /// Kubernetes pod's name, namespace and labels.
    pub cri: bool,
    /// The CRI socket; by default the first present of containerd's, CRI-O's, k3s's and
    /// cri-dockerd's.
    pub cri_socket: Option<PathBuf>,
}

impl Default for ContainersConfig {
    fn default() -> Self {
        Self {
            cri: true,
            cri_socket: None,
        }
    }
}

/// What every event says about the host besides what sensord reads from it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Labels (site, environment, ...) every event carries: keys of `a-z 0-9 _ -` starting
    /// with a letter, at most 32 of them, values of at most 256 bytes.
    #[serde(deserialize_with = "host_labels")]
    pub labels: std::collections::BTreeMap<String, String>,
}

fn host_labels<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    use sensor_core::event::host::{MAX_LABELS, MAX_TEXT, is_label_key};
    let labels = std::collections::BTreeMap::<String, String>::deserialize(d)?;
    if labels.len() > MAX_LABELS {
        return Err(serde::de::Error::custom(format!(
            "{} labels: at most {MAX_LABELS}",
            labels.len()
        )));
    }
    for (k, v) in &labels {
        if !is_label_key(k) {
            return Err(serde::de::Error::custom(format!(
                "label {k:?}: a key is 1 to 64 of a-z, 0-9, _ and -, starting with a letter"
            )));
        }
        if v.len() > MAX_TEXT || v.chars().any(char::is_control) {
            return Err(serde::de::Error::custom(format!(
                "label {k:?}: a value is at most {MAX_TEXT} bytes, without control characters"
            )));
        }
    }
    Ok(labels)
}

/// Uprobes on OpenSSL: the chains its clients parse, TLS 1.3 included.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UprobeConfig {
    pub enabled: bool,
    /// More libssl/libcrypto files, or folders holding them, besides the system's.
    pub libraries: Vec<PathBuf>,
    /// Read the head of the first request a local OpenSSL server reads on each inbound TLS
    /// connection (uprobe on `SSL_read`): only its request line, without the query, and its
    /// User-Agent are kept, for `ua_fingerprint_mismatch`. Off by default: it reads decrypted
    /// traffic.
    pub request_heads: bool,
}

impl Default for UprobeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            libraries: Vec::new(),
            request_heads: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/sensor"),
            api: ApiConfig::default(),
            tap: TapConfig::default(),
            trust: TrustSection::default(),
            journal: JournalConfig::default(),
            export: ExportConfig::default(),
            metrics: MetricsConfig::default(),
            probe: ProbeConfig::default(),
            uprobe: UprobeConfig::default(),
            host: HostConfig::default(),
            containers: ContainersConfig::default(),
        }
    }
}

/// The gRPC API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// The Unix socket.
    pub socket: PathBuf,
    /// Group that owns the socket (its mode is 0660), if any: its members may read events.
    pub socket_group: Option<String>,
    /// Group whose members may also change sensord (Reload, and so `sensorctl pins`); root
    /// always may. Checked with the socket peer's credentials. None: root only.
    #[serde(deserialize_with = "group_name")]
    pub admin_group: Option<String>,
    /// mTLS clients that may change sensord, by a name in their certificate (subject common
    /// name or DNS subjectAltName). Empty: none.
    pub admin_clients: Vec<String>,
    /// Watch streams open at once, at most; more are refused (RESOURCE_EXHAUSTED).
    #[serde(deserialize_with = "at_least_one_usize")]
    pub max_subscribers: usize,
    /// An optional TCP listener, for remote SIEMs. It requires mTLS.
    pub tcp_listen: Option<SocketAddr>,
    /// The server's certificate and key (PEM) for the TCP listener.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// CA that client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    /// Allow the TCP listener without TLS. For tests only.
    pub insecure_tcp: bool,
    /// Identical events within this many seconds become one, with a count, for subscribers
    /// that ask for aggregation.
    pub aggregation_window_secs: u64,
    /// Events kept in memory for live subscribers; one that falls further behind reads the
    /// journal.
    pub buffer_events: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/sensor/sensord.sock"),
            socket_group: None,
            admin_group: None,
            admin_clients: Vec::new(),
            max_subscribers: 64,
            tcp_listen: None,
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            insecure_tcp: false,
            aggregation_window_secs: 60,
            buffer_events: 4096,
        }
    }
}

/// The kernel tap.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TapConfig {
    /// Payload bytes forwarded per connection at most.
    pub byte_budget: u32,
    /// Attach to this cgroup v2 directory instead of the root.
    pub cgroup: Option<PathBuf>,
    /// Size of the kernel-to-daemon ring buffer in MiB: a power of two from 1 to 256.
    #[serde(deserialize_with = "ring_buffer_mb")]
    pub ring_buffer_mb: u32,
    /// MiB sensord holds for handshakes in progress, all connections together: reassembly
    /// buffers, parsed hellos, chains. Past it the least recently active connections are
    /// given up on (counted in `flows_evicted_memory`).
    #[serde(deserialize_with = "flow_memory_mb")]
    pub flow_memory_mb: u32,
}

impl Default for TapConfig {
    fn default() -> Self {
        Self {
            byte_budget: sensor_common::DEFAULT_BYTE_BUDGET,
            cgroup: None,
            ring_buffer_mb: 8,
            flow_memory_mb: 64,
        }
    }
}

fn ring_buffer_mb<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let mb = u32::deserialize(d)?;
    if !(1..=256).contains(&mb) || !mb.is_power_of_two() {
        return Err(serde::de::Error::custom(format!(
            "ring_buffer_mb = {mb}: it must be a power of two from 1 to 256"
        )));
    }
    Ok(mb)
}

fn flow_memory_mb<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let mb = u32::deserialize(d)?;
    if !(4..=4096).contains(&mb) {
        return Err(serde::de::Error::custom(format!(
            "flow_memory_mb = {mb}: it must be from 4 to 4096"
        )));
    }
    Ok(mb)
}

/// A limit that 0 would turn into "never": for quotas, where the way to lift one is a value as
/// large as the global limit.
fn at_least_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(serde::de::Error::custom(
            "0 would allow nothing: the value must be at least 1",
        )),
        v => Ok(v),
    }
}

fn at_least_one_usize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(serde::de::Error::custom(
            "0 would allow nothing: the value must be at least 1",
        )),
        v => Ok(v),
    }
}

/// A group name as groupadd takes it: letters, digits, `_`, `-`, `.`, a final `$`, not
/// starting with `-`. Whether the host has it is checked when sensord starts.
fn group_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let name = String::deserialize(d)?;
    let body = name.strip_suffix('$').unwrap_or(&name);
    let valid = !body.is_empty()
        && name.len() <= 256
        && !body.starts_with('-')
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !valid {
        return Err(serde::de::Error::custom(format!(
            "{:?} is not a group name",
            crate::render::escape(&name)
        )));
    }
    Ok(Some(name))
}

/// Trust inputs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustSection {
    /// Replace the system store with these PEM files or folders.
    pub host_roots: Option<Vec<PathBuf>>,
    /// Add these to the host store.
    pub extra_host_roots: Vec<PathBuf>,
    /// Replace Mozilla's roots with these.
    pub public_roots: Option<Vec<PathBuf>>,
    pub pins: Option<PathBuf>,
    pub catalogue: Option<PathBuf>,
    /// Inspection CAs the organisation runs on purpose: SPKI pins (base64 SHA-256)...
    pub approved_spki: Vec<String>,
    /// ...or subjects as the sensor prints them (`CN=..., O=...`).
    pub approved_subject: Vec<String>,
}

impl TrustSection {
    pub fn to_trust_config(&self) -> TrustConfig {
        let mut approved: Vec<Approved> = self
            .approved_spki
            .iter()
            .cloned()
            .map(Approved::Spki)
            .collect();
        approved.extend(self.approved_subject.iter().cloned().map(Approved::Subject));
        TrustConfig {
            host_roots: self.host_roots.clone(),
            extra_host_roots: self.extra_host_roots.clone(),
            public_roots: self.public_roots.clone(),
            pins: self.pins.clone(),
            catalogue: self.catalogue.clone(),
            approved,
        }
    }
}

/// The journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Events older than this are deleted (0: keep forever).
    pub retention_days: u64,
    /// The journal is kept under this size by deleting the oldest events (0: no limit).
    pub max_size_mb: u64,
    /// While commits fail (a full disk), events wait in memory up to about this many MiB; past
    /// it new events are dropped and counted. From 1 to 4096.
    #[serde(deserialize_with = "max_pending_mb")]
    pub max_pending_mb: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            retention_days: 30,
            max_size_mb: 1024,
            max_pending_mb: 64,
        }
    }
}

fn max_pending_mb<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let mb = u64::deserialize(d)?;
    if !(1..=4096).contains(&mb) {
        return Err(serde::de::Error::custom(format!(
            "max_pending_mb = {mb}: it must be from 1 to 4096"
        )));
    }
    Ok(mb)
}

/// File exports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    pub jsonl: Option<JsonlConfig>,
    pub syslog: Option<SyslogConfig>,
    pub otlp: Option<OtlpConfig>,
}

/// OpenTelemetry logs (OTLP) over gRPC or HTTP, for an OpenTelemetry Collector or any OTLP
/// receiver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// `http://host:4317` (gRPC) or `http://host:4318` (HTTP; `/v1/logs` is added unless the
    /// endpoint has a path); `https://` for TLS.
    #[serde(deserialize_with = "otlp_endpoint")]
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// The CA (PEM) the receiver's certificate must chain to; by default the system's roots.
    pub ca: Option<PathBuf>,
    /// A client certificate and key (PEM), for receivers that ask for one.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Headers sent with every request (an `authorization` token, a tenant).
    #[serde(deserialize_with = "otlp_headers")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Log records per request at most (1 to 10000).
    #[serde(deserialize_with = "batch_size")]
    pub batch_size: usize,
    /// After an outage, events older than this many seconds are not sent (they are counted in
    /// `sensor_export_otlp_expired_total`). 0: no limit.
    pub max_age_secs: u64,
    /// Which events are sent (the same filter as the API's).
    pub filter: Filter,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:4317".to_owned(),
            protocol: OtlpProtocol::Grpc,
            ca: None,
            client_cert: None,
            client_key: None,
            headers: std::collections::BTreeMap::new(),
            batch_size: 512,
            max_age_secs: 86_400,
            filter: Filter::default(),
        }
    }
}

/// How OTLP travels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP/gRPC (`LogsService/Export`).
    #[default]
    Grpc,
    /// OTLP/HTTP with binary protobuf (`POST /v1/logs`).
    Http,
}

fn otlp_endpoint<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    let ok = text
        .parse::<http::Uri>()
        .ok()
        .filter(|u| matches!(u.scheme_str(), Some("http" | "https")))
        .and_then(|u| u.host().map(|h| !h.is_empty()))
        .unwrap_or(false);
    if !ok {
        return Err(serde::de::Error::custom(format!(
            "endpoint = {text:?}: it must be http://host:port or https://host:port"
        )));
    }
    Ok(text)
}

fn otlp_headers<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    let headers = std::collections::BTreeMap::<String, String>::deserialize(d)?;
    for (k, v) in &headers {
        // gRPC takes `-bin` keys as binary metadata, which a text value cannot be.
        let key_ok = !k.is_empty()
            && !k.ends_with("-bin")
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !key_ok || v.bytes().any(|b| b.is_ascii_control()) {
            return Err(serde::de::Error::custom(format!(
                "header {k:?}: names are lowercase letters, digits, - and _, not ending in \
                 -bin; values without control characters"
            )));
        }
    }
    Ok(headers)
}

fn batch_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if !(1..=10_000).contains(&n) {
        return Err(serde::de::Error::custom(format!(
            "batch_size = {n}: it must be from 1 to 10000"
        )));
    }
    Ok(n)
}

/// RFC 5424 syslog over TCP, optionally over TLS (RFC 5425), for rsyslog, syslog-ng and the
/// SIEMs' collectors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogConfig {
    /// The receiver, `host:port`.
    #[serde(deserialize_with = "host_port")]
    pub address: String,
    /// TLS (RFC 5425); the receiver's certificate is verified.
    pub tls: bool,
    /// The CA (PEM) the receiver's certificate must chain to; by default the system's roots.
    pub ca: Option<PathBuf>,
    /// The name the receiver's certificate must carry; by default the address's host.
    pub server_name: Option<String>,
    /// A client certificate and key (PEM), for receivers that ask for one.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The message: `json` (the JSON contract), `ecs` (its ECS form) or `cef` (ArcSight's
    /// Common Event Format, which QRadar and Microsoft Sentinel also take).
    pub format: SyslogFormat,
    /// The syslog facility.
    pub facility: SyslogFacility,
    /// After an outage, events older than this many seconds are not sent (they are counted in
    /// `sensor_export_syslog_expired_total`). 0: no limit.
    pub max_age_secs: u64,
    /// Which events are sent (the same filter as the API's).
    pub filter: Filter,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        Self {
            address: String::new(),
            tls: false,
            ca: None,
            server_name: None,
            client_cert: None,
            client_key: None,
            format: SyslogFormat::Json,
            facility: SyslogFacility::Local0,
            max_age_secs: 86_400,
            filter: Filter::default(),
        }
    }
}

impl SyslogConfig {
    /// The host part of `address` (brackets of an IPv6 address removed).
    pub fn host(&self) -> &str {
        let host = self.address.rsplit_once(':').map_or("", |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// What a syslog message carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogFormat {
    #[default]
    Json,
    Ecs,
    Cef,
}

/// Syslog facilities (RFC 5424, 6.2.1) a sensor may log under.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogFacility {
    User,
    Daemon,
    Auth,
    Authpriv,
    #[default]
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl SyslogFacility {
    /// The facility's number.
    pub fn code(self) -> u8 {
        match self {
            Self::User => 1,
            Self::Daemon => 3,
            Self::Auth => 4,
            Self::Authpriv => 10,
            Self::Local0 => 16,
            Self::Local1 => 17,
            Self::Local2 => 18,
            Self::Local3 => 19,
            Self::Local4 => 20,
            Self::Local5 => 21,
            Self::Local6 => 22,
            Self::Local7 => 23,
        }
    }
}

fn host_port<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    let ok = text.rsplit_once(':').is_some_and(|(host, port)| {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        !host.is_empty()
            && !host.contains(char::is_whitespace)
            && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    if !ok {
        return Err(serde::de::Error::custom(format!(
            "address = {text:?}: it must be host:port"
        )));
    }
    Ok(text)
}

/// JSON lines to a file, for log shippers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonlConfig {
    pub path: PathBuf,
    /// Rotate when the file reaches this size.
    pub max_size_mb: u64,
    /// Rotated files kept.
    pub keep: usize,
    /// Gzip rotated files.
    pub compress: bool,
    /// Elastic Common Schema field names instead of the JSON contract's.
    pub ecs: bool,
    /// Which events go to the file (the same filter as the API's).
    pub filter: Filter,
}

impl Default for JsonlConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/log/sensor/events.jsonl"),
            max_size_mb: 100,
            keep: 5,
            compress: true,
            ecs: false,
            filter: Filter::default(),
        }
    }
}

/// Prometheus metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve /metrics here, if set.
    pub listen: Option<SocketAddr>,
}

/// The active TLS 1.3 probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    pub enabled: bool,
    /// Seconds a probe result is reused for the same (SNI, address, port, proxy, network
    /// namespace, client fingerprint).
    pub cache_ttl_secs: u64,
    /// Probes per second at most, overall.
    pub max_per_second: u32,
    /// Probes per minute at most, per destination (address and port) and kind of client
    /// (its JA4).
    pub max_per_destination_per_minute: u32,
    /// Probes per second at most for the handshakes of one user (uid), so that one local user
    /// cannot use up `max_per_second` for everyone. At least 1.
    #[serde(deserialize_with = "at_least_one")]
    pub max_per_uid_per_second: u32,
    /// Likewise per cgroup (a service, a container, a login session). At least 1.
    #[serde(deserialize_with = "at_least_one")]
    pub max_per_cgroup_per_second: u32,
    /// Destinations never probed: host globs or addresses.
    pub exclude: Vec<String>,
    /// Seconds a probe may take.
    pub timeout_secs: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cache_ttl_secs: 3600,
            max_per_second: 10,
            max_per_destination_per_minute: 2,
            max_per_uid_per_second: 4,
            max_per_cgroup_per_second: 4,
            exclude: Vec::new(),
            timeout_secs: 5,
        }
    }
}

/// The line (1-based) that starts with `text`, the first time.
fn line_with(text: &str, start: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.trim_start().starts_with(start))
        .map(|i| i + 1)
}

/// The line (1-based) where `key` is set, the first time.
fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

impl Config {
    /// Parse a configuration file's text.
    pub fn parse(text: &str, file: &str) -> Result<Self, TrustError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            TrustError::new(file, line, e.message().to_owned())
        })?;
        let api = &cfg.api;
        let mtls = api.tls_cert.is_some() && api.tls_key.is_some() && api.client_ca.is_some();
        if api.tcp_listen.is_some() && !mtls && !api.insecure_tcp {
            return Err(TrustError::new(
                file,
                key_line(text, "tcp_listen"),
                "api.tcp_listen needs tls_cert, tls_key and client_ca (mTLS); set insecure_tcp \
                 = true only for tests"
                    .to_owned(),
            ));
        }
        let halves = |c: &Option<PathBuf>, k: &Option<PathBuf>| c.is_some() != k.is_some();
        if let Some(otlp) = &cfg.export.otlp
            && halves(&otlp.client_cert, &otlp.client_key)
        {
            return Err(TrustError::new(
                file,
                key_line(text, "client_cert").or_else(|| key_line(text, "client_key")),
                "export.otlp needs both client_cert and client_key, or neither".to_owned(),
            ));
        }
        if cfg
            .export
            .syslog
            .as_ref()
            .is_some_and(|s| s.address.is_empty())
        {
            return Err(TrustError::new(
                file,
                line_with(text, "[export.syslog]"),
                "export.syslog needs an address (host:port)".to_owned(),
            ));
        }
        if let Some(syslog) = &cfg.export.syslog
            && halves(&syslog.client_cert, &syslog.client_key)
        {
            return Err(TrustError::new(
                file,
                key_line(text, "client_cert").or_else(|| key_line(text, "client_key")),
                "export.syslog needs both client_cert and client_key, or neither".to_owned(),
            ));
        }
        Ok(cfg)
    }

    /// The settings that differ between `self` and `new`, as `section.key` names (a whole
    /// section or list counts as one setting when it appears or disappears).
    pub fn changed_settings(&self, new: &Config) -> Vec<String> {
        fn diff(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
            use serde_json::Value::Object;
            match (a, b) {
                (Object(x), Object(y)) => {
                    let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                    keys.sort();
                    keys.dedup();
                    for k in keys {
                        let name = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        let null = serde_json::Value::Null;
                        diff(
                            &name,
                            x.get(k).unwrap_or(&null),
                            y.get(k).unwrap_or(&null),
                            out,
                        );
                    }
                }
                (a, b) if a != b => out.push(prefix.to_owned()),
                _ => {}
            }
        }
        let mut out = Vec::new();
        match (serde_json::to_value(self), serde_json::to_value(new)) {
            (Ok(a), Ok(b)) => diff("", &a, &b, &mut out),
            _ => out.push("(all)".to_owned()),
        }
        out
    }

    /// Read and parse a configuration file.
    pub fn load(path: &std::path::Path) -> Result<Self, TrustError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| TrustError::new(&shown, None, format!("cannot read: {e}")))?;
        Self::parse(&text, &shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_parses_and_every_key_is_optional() {
        let shipped = include_str!("../../dist/sensord.toml");
        let c = Config::parse(shipped, "dist/sensord.toml").unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/sensor"));
        let empty = Config::parse("", "empty.toml").unwrap();
        assert_eq!(empty.api.socket, PathBuf::from("/run/sensor/sensord.sock"));
        assert_eq!(empty.api.aggregation_window_secs, 60);
    }

    #[test]
    fn errors_name_the_line() {
        let err = Config::parse("state_dir = \"/x\"\n[api]\nsocket = 12\n", "s.toml").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        let err = Config::parse("[journal]\nretention = 3\n", "s.toml").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = Config::parse("\n[tap]\nring_buffer_mb = 12\n", "s.toml").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.to_string().contains("power of two"), "{err}");
        let err = Config::parse(
            "[host]\nlabels = { site = \"a\", \"Bad.Key\" = \"b\" }\n",
            "s.toml",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.to_string().contains("\"Bad.Key\""), "{err}");
        let ok = Config::parse(
            "[host]\nlabels = { site = \"fra1\", env = \"prod\" }\n",
            "s.toml",
        )
        .unwrap();
        assert_eq!(ok.host.labels["site"], "fra1");
        let err =
            Config::parse("[export.syslog]\naddress = \"siem.example\"\n", "s.toml").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.to_string().contains("host:port"), "{err}");
        let err = Config::parse(
            "[export.syslog]\naddress = \"a:1\"\nformat = \"xml\"\n",
            "s.toml",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        let ok = Config::parse(
            "[export.syslog]\naddress = \"[::1]:6514\"\ntls = true\nformat = \"cef\"\nfacility = \"authpriv\"\n",
            "s.toml",
        )
        .unwrap();
        let syslog = ok.export.syslog.unwrap();
        assert_eq!(syslog.host(), "::1");
        assert_eq!(syslog.format, SyslogFormat::Cef);
        assert_eq!(syslog.facility.code(), 10);
        let err =
            Config::parse("[export.otlp]\nendpoint = \"localhost:4317\"\n", "s.toml").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        let err = Config::parse(
            "[export.otlp]\nheaders = { Authorization = \"x\" }\n",
            "s.toml",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        let ok = Config::parse(
            "[export.otlp]\nendpoint = \"https://otel.example:4318\"\nprotocol = \"http\"\n",
            "s.toml",
        )
        .unwrap();
        assert_eq!(ok.export.otlp.unwrap().protocol, OtlpProtocol::Http);
        let ok = Config::parse("[tap]\nring_buffer_mb = 64\n", "s.toml").unwrap();
        assert_eq!(ok.tap.ring_buffer_mb, 64);
        let err = Config::parse("[tap]\n\nflow_memory_mb = 0\n", "s.toml").unwrap_err();
        assert!(err.to_string().starts_with("s.toml:3:"), "{err}");
        assert!(err.to_string().contains("from 4 to 4096"), "{err}");
        let ok = Config::parse("[tap]\nflow_memory_mb = 256\n", "s.toml").unwrap();
        assert_eq!(ok.tap.flow_memory_mb, 256);
        let err = Config::parse("[journal]\n\nmax_pending_mb = 0\n", "s.toml").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.to_string().contains("from 1 to 4096"), "{err}");
        assert!(err.to_string().contains("s.toml"), "{err}");
        let ok = Config::parse("[journal]\nmax_pending_mb = 8\n", "s.toml").unwrap();
        assert_eq!(ok.journal.max_pending_mb, 8);
        assert_eq!(Config::default().journal.max_pending_mb, 64);
    }

    #[test]
    fn api_admins_and_subscribers() {
        let c = Config::default();
        assert_eq!(c.api.admin_group, None);
        assert!(c.api.admin_clients.is_empty());
        assert_eq!(c.api.max_subscribers, 64);
        let ok = Config::parse(
            "[api]\nadmin_group = \"sensor-admin\"\nadmin_clients = [\"ops\"]\nmax_subscribers = 8\n",
            "s.toml",
        )
        .unwrap();
        assert_eq!(ok.api.admin_group.as_deref(), Some("sensor-admin"));
        assert_eq!(ok.api.admin_clients, ["ops"]);
        assert_eq!(ok.api.max_subscribers, 8);
        let err = Config::parse("[api]\n\nadmin_group = \"bad group\"\n", "s.toml").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.to_string().contains("not a group name"), "{err}");
        assert!(err.to_string().starts_with("s.toml:3: "), "{err}");
        let err = Config::parse("[api]\nmax_subscribers = 0\n", "s.toml").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        let err = Config::parse("[api]\nadmin_clients = \"ops\"\n", "s.toml").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
    }

    #[test]
    fn probe_quotas_have_defaults_and_refuse_zero() {
        let c = Config::default();
        assert!(c.probe.max_per_uid_per_second < c.probe.max_per_second);
        assert!(c.probe.max_per_cgroup_per_second < c.probe.max_per_second);
        let err = Config::parse("[probe]\n\nmax_per_uid_per_second = 0\n", "s.toml").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.to_string().contains("at least 1"), "{err}");
        let err = Config::parse("[probe]\nmax_per_cgroup_per_second = 0\n", "s.toml").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        let ok = Config::parse(
            "[probe]\nmax_per_uid_per_second = 10\nmax_per_cgroup_per_second = 2\n",
            "s.toml",
        )
        .unwrap();
        assert_eq!(ok.probe.max_per_uid_per_second, 10);
        assert_eq!(ok.probe.max_per_cgroup_per_second, 2);
    }
}
