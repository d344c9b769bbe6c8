//! The ECS export is valid ECS 8.17: every field it writes, for every event the fixtures give
//! (under both trust configurations, with this host's identity and a process added as the
//! daemon adds them), is an ECS field of the type ECS gives it, checked against ECS's own field
//! definitions (tests/fixtures/ecs, vendored with their source). Arrays only where ECS expects
//! them. The exceptions are named: `sensor.*` (the sensor's own namespace) and
//! `tls.client.ja4` (ECS has no JA4 field yet).

use std::{collections::BTreeMap, process::Command, sync::Arc};

use sensor_core::event::{Event, Process, Role};
use sensor_tests::{bin, workspace_root};
use serde_json::Value;

/// Fields outside ECS, with the type they are checked against.
const EXTENSIONS: &[(&str, &str)] = &[("tls.client.ja4", "keyword")];

/// Fields the users filter on: each must appear in at least one event.
const EXPECTED: &[&str] = &[
    "@timestamp",
    "ecs.version",
    "event.severity",
    "event.id",
    "event.created",
    "event.dataset",
    "event.module",
    "event.kind",
    "host.id",
    "host.name",
    "host.boot.id",
    "host.os.kernel",
    "agent.type",
    "agent.version",
    "labels",
    "tls.server.x509.issuer.common_name",
    "tls.server.x509.subject.common_name",
    "tls.server.x509.version_number",
    "tls.server.x509.public_key_curve",
    "tls.server.x509.public_key_exponent",
    "threat.framework",
    "container.id",
    "container.name",
    "container.runtime",
    "container.image.name",
    "orchestrator.resource.id",
    "orchestrator.resource.name",
    "orchestrator.resource.label",
    "orchestrator.namespace",
    "tls.server.x509.serial_number",
    "tls.server.hash.sha1",
    "tls.server.certificate_chain",
    "tls.server.hash.sha256",
    "tls.curve",
    "tls.resumed",
    "tls.client.supported_ciphers",
    "tls.client.ja4",
    "tls.client.x509.subject.common_name",
    "tls.client.x509.issuer.common_name",
    "tls.client.x509.serial_number",
    "tls.client.hash.sha256",
    "tls.client.not_after",
    "network.direction",
    "network.community_id",
    "related.ip",
    "related.hosts",
    "related.hash",
    "rule.name",
    "threat.technique.id",
    "threat.technique.subtechnique.id",
    "process.pid",
    "process.user.id",
];

struct Field {
    kind: String,
    array: bool,
}

fn definitions() -> BTreeMap<String, Field> {
    let path = workspace_root().join("tests/fixtures/ecs/fields-8.17.0.tsv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out: BTreeMap<String, Field> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let mut cols = l.split('\t');
            let name = cols.next().unwrap().to_owned();
            let kind = cols.next().unwrap().to_owned();
            let array = cols.next().unwrap_or("").contains("array");
            (name, Field { kind, array })
        })
        .collect();
    assert!(out.len() > 1500, "{} fields", out.len());
    for (name, kind) in EXTENSIONS {
        assert!(
            !out.contains_key(*name),
            "{name} is ECS now: drop the extension"
        );
        out.insert(
            (*name).to_owned(),
            Field {
                kind: (*kind).to_owned(),
                array: false,
            },
        );
    }
    out
}

/// Leaf fields of an ECS document: (dotted name, value). `labels` is one field (an object).
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) if prefix != "labels" => {
            for (k, v) in m {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&name, v, out);
            }
        }
        _ => out.push((prefix.to_owned(), v.clone())),
    }
}

/// Whether one value has ECS type `kind`.
fn typed(kind: &str, v: &Value) -> bool {
    match kind {
        "keyword" | "wildcard" | "constant_keyword" | "match_only_text" | "text" => v.is_string(),
        "long" => v.is_i64() || v.is_u64(),
        "float" | "scaled_float" => v.is_number(),
        "boolean" => v.is_boolean(),
        "ip" => v
            .as_str()
            .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok()),
        "date" => v.as_str().is_some_and(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
        }),
        "object" => v
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string)),
        _ => false,
    }
}

fn events() -> Vec<Event> {
    let fixtures = workspace_root().join("tests/fixtures");
    let mut captures: Vec<String> = std::fs::read_dir(&fixtures)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".pcap") || n.ends_with(".pcapng"))
        .collect();
    captures.sort();
    let labels = [
        ("site".to_owned(), "fra1".to_owned()),
        ("environment".to_owned(), "ci".to_owned()),
    ]
    .into();
    let host = Arc::new(sensor_host::identity::Sources::default().host(&labels));
    let mut out = Vec::new();
    for capture in captures {
        for roots in [
            [
                "--public-roots",
                "fixture-root.pem",
                "--host-roots",
                "bigchain-root.pem",
            ],
            [
                "--public-roots",
                "bigchain-root.pem",
                "--host-roots",
                "fixture-root.pem",
            ],
        ] {
            let run = Command::new(bin("sensorctl"))
                .current_dir(&fixtures)
                .args(["analyze", "-o", "json", &capture])
                .args(roots)
                .output()
                .unwrap();
            assert!(run.status.success(), "{capture}");
            for (i, line) in String::from_utf8_lossy(&run.stdout).lines().enumerate() {
                let mut e: Event = serde_json::from_str(line).unwrap();
                e.host = Some(host.clone());
                let role = if i % 2 == 0 {
                    Role::Client
                } else {
                    Role::Server
                };
                e.process = Some(Process {
                    pid: Some(4242),
                    comm: Some("curl".into()),
                    uid: Some(1000),
                    exe: Some("/usr/bin/curl".into()),
                    container_id: (i % 3 == 0).then(|| "4f2a9c1d8e7b".into()),
                    container: (i % 3 == 0).then(|| sensor_core::event::Container {
                        id: "4f2a9c1d8e7b".into(),
                        runtime: Some(sensor_core::event::ContainerRuntime::Containerd),
                        name: Some("web".into()),
                        image: Some("registry.example/web:1".into()),
                        pod_uid: Some("0a1b2c3d-4e5f-6789-abcd-ef0123456789".into()),
                        pod: Some(sensor_core::event::Pod {
                            name: "web-7d9f".into(),
                            namespace: "shop".into(),
                            labels: [("app".to_owned(), "web".to_owned())].into(),
                        }),
                    }),
                    ..Process::new(role)
                });
                out.push(e);
            }
        }
    }
    out
}

#[test]
fn every_exported_field_is_ecs_with_its_type() {
    let defs = definitions();
    let events = events();
    assert!(events.len() >= 40, "{} events", events.len());
    let mut seen = std::collections::BTreeSet::new();
    let mut problems = Vec::new();
    for (seq, e) in events.into_iter().enumerate() {
        let stored = sensord::journal::NewEvent::of(e).stored(seq as u64 + 1);
        // The exporters read the chain's PEM from the journal; its form is all that matters here.
        let chain: Vec<Arc<str>> = stored
            .event
            .handshake
            .chain
            .iter()
            .map(|c| Arc::from(sensord::export::ecs::chain::pem(c.sha256.as_bytes())))
            .collect();
        let doc = sensord::export::ecs::to_ecs(&stored, &chain);
        let mut fields = Vec::new();
        flatten("", &doc, &mut fields);
        for (name, value) in fields {
            if name.starts_with("sensor.") {
                continue;
            }
            seen.insert(name.clone());
            let Some(def) = defs.get(&name) else {
                problems.push(format!("{name}: not an ECS field ({value})"));
                continue;
            };
            let ok = match &value {
                Value::Array(items) => def.array && items.iter().all(|v| typed(&def.kind, v)),
                v => typed(&def.kind, v),
            };
            if !ok {
                problems.push(format!(
                    "{name}: {value} is not ECS {}{}",
                    def.kind,
                    if def.array { " (array)" } else { "" }
                ));
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "{problems:#?}");
    let missing: Vec<&&str> = EXPECTED.iter().filter(|f| !seen.contains(**f)).collect();
    assert!(missing.is_empty(), "never written: {missing:?}");
    assert!(seen.len() >= 60, "only {} fields: {seen:?}", seen.len());
}
