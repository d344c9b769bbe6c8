//! The OTLP form of events, pure: one `LogRecord` per event with OpenTelemetry's
//! semantic-convention attribute names (`tls.*`, `server.*`, `client.*`, `network.*`,
//! `process.*`, `container.id`), the host as the `Resource` (`host.*`, `os.*`, `service.*`), so
//! that an OpenTelemetry Collector takes the events with no mapping. What the conventions have
//! no name for is under `sensor.*` (verdict, reasons, severity's word, interceptor, sequence),
//! and JA4 is `tls.client.ja4`, beside the conventions' `tls.client.ja3`.

use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
    resource::v1::Resource,
};
use sensor_core::event::{ClientOutcome, Host, Role, Severity, TlsVersion};

use crate::journal::StoredEvent;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

/// Attributes, leaving out what has no value.
#[derive(Default)]
struct Attrs(Vec<KeyValue>);

impl Attrs {
    fn text(&mut self, key: &str, v: Option<impl Into<String>>) {
        if let Some(v) = v.map(Into::into).filter(|v: &String| !v.is_empty()) {
            self.0.push(kv(key, Value::StringValue(v)));
        }
    }
    fn int(&mut self, key: &str, v: Option<i64>) {
        if let Some(v) = v {
            self.0.push(kv(key, Value::IntValue(v)));
        }
    }
    fn bool(&mut self, key: &str, v: bool) {
        self.0.push(kv(key, Value::BoolValue(v)));
    }
    fn list(&mut self, key: &str, v: Vec<String>) {
        if v.is_empty() {
            return;
        }
        let values = v
            .into_iter()
            .map(|s| AnyValue {
                value: Some(Value::StringValue(s)),
            })
            .collect();
        self.0
            .push(kv(key, Value::ArrayValue(ArrayValue { values })));
    }
}

/// The OpenTelemetry severity of an event's (info → INFO ... critical → FATAL).
pub fn severity_number(s: Option<Severity>) -> SeverityNumber {
    match s {
        Some(Severity::Critical) => SeverityNumber::Fatal,
        Some(Severity::High) => SeverityNumber::Error,
        Some(Severity::Medium) => SeverityNumber::Warn,
        Some(Severity::Low) => SeverityNumber::Info2,
        Some(Severity::Info) | None => SeverityNumber::Info,
    }
}

/// The host as an OpenTelemetry resource.
pub fn resource(host: Option<&Host>) -> Resource {
    let mut a = Attrs::default();
    a.text("service.name", Some("sensord"));
    a.text("service.version", Some(env!("CARGO_PKG_VERSION")));
    if let Some(h) = host {
        a.text("host.id", h.id.clone());
        a.text("host.name", h.name.clone());
        a.text(
            "host.arch",
            h.architecture.as_deref().map(|arch| match arch {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                "powerpc64" => "ppc64",
                other => other,
            }),
        );
        a.text("os.type", Some("linux"));
        a.text("os.name", h.os_name.clone());
        a.text("os.version", h.os_version.clone());
        a.text("os.build_id", h.kernel.clone());
        a.text("sensor.host.boot_id", h.boot_id.clone());
        a.text("sensor.commit", h.sensor_commit.clone());
        for (k, v) in &h.labels {
            a.text(&format!("sensor.label.{k}"), Some(v.clone()));
        }
    }
    Resource {
        attributes: a.0,
        ..Resource::default()
    }
}

fn nanos(t: sensor_core::event::Timestamp) -> u64 {
    let (s, n) = t.seconds_nanos();
    u64::try_from(s)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(n).unwrap_or(0))
}

/// The semantic conventions' names for a certificate's facts, by side.
const SERVER_CERT: [&str; 6] = [
    "tls.server.hash.sha256",
    "tls.server.hash.sha1",
    "tls.server.issuer",
    "tls.server.subject",
    "tls.server.not_before",
    "tls.server.not_after",
];
const CLIENT_CERT: [&str; 6] = [
    "tls.client.hash.sha256",
    "tls.client.hash.sha1",
    "tls.client.issuer",
    "tls.client.subject",
    "tls.client.not_before",
    "tls.client.not_after",
];

/// One event as a log record.
pub fn log_record(r: &StoredEvent) -> LogRecord {
    let e = &r.event;
    let h = &e.handshake;
    let j = e.judgement.as_ref();
    let leaf = h.chain.first();
    let mut a = Attrs::default();
    a.text("client.address", h.src_addr.map(|x| x.to_string()));
    a.int("client.port", Some(i64::from(h.src_port)));
    a.text(
        "server.address",
        h.server_name
            .clone()
            .or_else(|| h.dst_addr.map(|x| x.to_string())),
    );
    a.int("server.port", Some(i64::from(h.dst_port)));
    a.text("network.peer.address", h.dst_addr.map(|x| x.to_string()));
    // OpenTelemetry names QUIC as a transport of its own.
    a.text("network.transport", Some(h.transport.as_str()));
    a.text(
        "sensor.quic_version",
        h.quic.as_ref().map(|q| q.version.as_str()),
    );
    a.text(
        "network.type",
        h.dst_addr
            .map(|x| if x.is_ipv4() { "ipv4" } else { "ipv6" }),
    );
    let (version, protocol) = match h.tls_version {
        Some(TlsVersion::Ssl3) => (Some("3.0"), "ssl"),
        Some(v) => (Some(v.as_str()), "tls"),
        None => (None, "tls"),
    };
    a.text("tls.protocol.name", Some(protocol));
    a.text("tls.protocol.version", version);
    a.text("tls.cipher", h.cipher.clone());
    a.text("tls.curve", h.key_exchange.clone());
    a.bool(
        "tls.established",
        h.client_outcome == ClientOutcome::Completed,
    );
    a.bool("tls.resumed", h.resumed);
    a.bool("sensor.idle_after_handshake", h.idle_after_handshake);
    a.text("tls.next_protocol", h.alpn.clone());
    a.text("tls.client.server_name", h.server_name.clone());
    a.text("tls.client.ja3", h.ja3.clone());
    a.text("tls.client.ja4", h.ja4.clone());
    a.text("tls.server.ja3s", h.ja3s.clone());
    // The server's leaf, and the client's when it sent one in clear (mutual TLS).
    for (keys, cert) in [
        (&SERVER_CERT, leaf.map(|c| &**c)),
        (&CLIENT_CERT, h.client_certificate_leaf.as_deref()),
    ] {
        let Some(c) = cert else {
            continue;
        };
        let [sha256, sha1, issuer, subject, not_before, not_after] = keys;
        a.text(sha256, Some(c.sha256.to_ascii_uppercase()));
        a.text(sha1, Some(c.sha1.to_ascii_uppercase()));
        a.text(issuer, Some(c.issuer.clone()));
        a.text(subject, Some(c.subject.clone()));
        a.text(not_before, Some(c.not_before.rfc3339()));
        a.text(not_after, Some(c.not_after.rfc3339()));
    }
    if let Some(p) = &e.process {
        a.int("process.pid", p.pid.map(i64::from));
        a.text("process.executable.name", p.comm.clone());
        a.text("process.executable.path", p.exe.clone());
        a.int("process.user.id", p.uid.map(i64::from));
        a.text("container.id", p.container_id.clone());
        if let Some(c) = &p.container {
            a.text("container.name", c.name.clone());
            a.text("container.runtime", c.runtime.map(|r| r.as_str()));
            a.text("container.image.name", c.image.clone());
            a.text("k8s.pod.uid", c.pod_uid.clone());
            if let Some(pod) = &c.pod {
                a.text("k8s.pod.name", Some(pod.name.clone()));
                a.text("k8s.namespace.name", Some(pod.namespace.clone()));
                for (key, value) in &pod.labels {
                    a.text(&format!("k8s.pod.label.{key}"), Some(value.clone()));
                }
            }
        }
        a.text(
            "sensor.process.role",
            Some(match p.role {
                Role::Client => "client",
                Role::Server => "server",
            }),
        );
    }
    a.int("sensor.seq", i64::try_from(r.seq).ok());
    a.text("sensor.verdict", e.verdict().map(|v| v.as_str()));
    a.text("sensor.severity", e.severity().map(|s| s.as_str()));
    a.list(
        "sensor.reasons",
        e.reasons().iter().map(ToString::to_string).collect(),
    );
    a.text(
        "sensor.interceptor",
        j.and_then(|j| j.interceptor.as_ref())
            .map(|i| i.name.clone()),
    );
    a.text("sensor.chain_source", h.chain_source.map(|s| s.to_string()));
    let grade = j.and_then(|j| j.interceptor_grade.as_ref());
    a.text(
        "sensor.interceptor_grade",
        grade.map(|g| g.grade.to_string()),
    );
    a.list(
        "sensor.interceptor_grade_reasons",
        grade.map_or_else(Vec::new, |g| {
            g.reasons.iter().map(ToString::to_string).collect()
        }),
    );
    let severity = severity_number(e.severity());
    LogRecord {
        time_unix_nano: nanos(h.time),
        observed_time_unix_nano: nanos(h.end_time),
        severity_number: severity as i32,
        severity_text: e.severity().map_or("info", |s| s.as_str()).to_owned(),
        body: Some(AnyValue {
            value: Some(Value::StringValue(j.map_or_else(
                || "TLS handshake".to_owned(),
                |j| j.explanation.clone(),
            ))),
        }),
        attributes: a.0,
        event_name: "sensor.tls.handshake".to_owned(),
        ..LogRecord::default()
    }
}

/// One export request for a batch of events: consecutive events from the same host share a
/// resource.
pub fn request(batch: &[std::sync::Arc<StoredEvent>]) -> ExportLogsServiceRequest {
    let mut resource_logs: Vec<ResourceLogs> = Vec::new();
    let mut last_host: Option<&Host> = None;
    for r in batch {
        let host = r.event.host.as_deref();
        let same = resource_logs.last().is_some() && last_host == host;
        if !same {
            resource_logs.push(ResourceLogs {
                resource: Some(resource(host)),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "sensord".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..InstrumentationScope::default()
                    }),
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            });
            last_host = host;
        }
        if let Some(scope) = resource_logs
            .last_mut()
            .and_then(|rl| rl.scope_logs.last_mut())
        {
            scope.log_records.push(log_record(r));
        }
    }
    ExportLogsServiceRequest { resource_logs }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sensor_core::event::{Event, Handshake, Timestamp};

    use super::*;
    use crate::journal::NewEvent;

    fn stored(seq: u64, host: Option<Arc<Host>>) -> Arc<StoredEvent> {
        let e = Event {
            handshake: Handshake {
                time: Timestamp(1_795_000_000_000_000_007),
                end_time: Timestamp(1_795_000_001_000_000_000),
                src_addr: Some("10.0.0.1".parse().unwrap()),
                src_port: 5000,
                dst_addr: Some("2001:db8::1".parse().unwrap()),
                dst_port: 443,
                ..Handshake::default()
            },
            host,
            ..Event::default()
        };
        Arc::new(NewEvent::of(e).stored(seq))
    }

    fn attr<'a>(r: &'a LogRecord, key: &str) -> Option<&'a Value> {
        r.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn consecutive_events_of_a_host_share_a_resource() {
        let a = Arc::new(Host {
            id: Some("a".repeat(32)),
            ..Host::default()
        });
        let b = Arc::new(Host {
            id: Some("b".repeat(32)),
            ..Host::default()
        });
        let batch = [
            stored(1, Some(a.clone())),
            stored(2, Some(a.clone())),
            stored(3, Some(b)),
            stored(4, Some(a)),
        ];
        let req = request(&batch);
        let sizes: Vec<usize> = req
            .resource_logs
            .iter()
            .map(|rl| rl.scope_logs[0].log_records.len())
            .collect();
        assert_eq!(sizes, [2, 1, 1]);
        let r = &req.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(r.time_unix_nano, 1_795_000_000_000_000_007);
        assert_eq!(r.observed_time_unix_nano, 1_795_000_001_000_000_000);
        assert_eq!(r.severity_number, SeverityNumber::Info as i32);
        assert_eq!(attr(r, "client.port"), Some(&Value::IntValue(5000)));
        assert_eq!(
            attr(r, "network.type"),
            Some(&Value::StringValue("ipv6".into()))
        );
        // No SNI: the server's address is its IP.
        assert_eq!(
            attr(r, "server.address"),
            Some(&Value::StringValue("2001:db8::1".into()))
        );
        assert_eq!(attr(r, "sensor.seq"), Some(&Value::IntValue(1)));
        assert_eq!(attr(r, "tls.cipher"), None, "no value, no attribute");
        assert_eq!(r.event_name, "sensor.tls.handshake");
    }

    #[test]
    fn a_client_certificate_has_the_client_s_attributes() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "device-17");
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let leaf = Arc::new(sensor_core::x509::summarize(&der).unwrap());
        let mut e = stored(1, None).event.as_ref().clone();
        e.handshake.client_certificate_leaf = Some(leaf.clone());
        let r = log_record(&NewEvent::of(e).stored(1));
        assert_eq!(
            attr(&r, "tls.client.subject"),
            Some(&Value::StringValue("CN=device-17".into()))
        );
        assert_eq!(
            attr(&r, "tls.client.hash.sha256"),
            Some(&Value::StringValue(leaf.sha256.to_ascii_uppercase()))
        );
        assert_eq!(attr(&r, "tls.server.subject"), None, "no server chain");
    }

    #[test]
    fn severities_follow_the_data_model() {
        assert_eq!(
            severity_number(Some(Severity::Critical)),
            SeverityNumber::Fatal
        );
        assert_eq!(severity_number(Some(Severity::High)), SeverityNumber::Error);
        assert_eq!(
            severity_number(Some(Severity::Medium)),
            SeverityNumber::Warn
        );
        assert_eq!(severity_number(None), SeverityNumber::Info);
    }
}
