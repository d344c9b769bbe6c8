//! The Elastic Common Schema (ECS 8.17) form of an event, for `[export.jsonl] ecs = true`,
//! made from the typed event and the PEM of its chain (`chain` reads those from the journal).
//! Pure.
//!
//! Every field is an ECS field of the right type (tests/tests/ecs.rs checks them against ECS's
//! own definitions, vendored in tests/fixtures/ecs), except:
//! - `sensor.*`, this sensor's own namespace (verdict, reasons, severity word, ...), as ECS
//!   asks custom fields to be kept;
//! - `tls.client.ja4`: ECS 8.17 has no JA4 field; this is the name its `ja3` sibling implies.
//!
//! Fields without a value are left out.

pub mod chain;

use std::{net::IpAddr, sync::Arc};

use base64::Engine as _;
use sensor_core::{
    event::{ClientOutcome, Event, Reason, Role, Severity, TlsVersion, Transport, Verdict},
    tls::hello::cipher_name,
    x509::{CertSummary, NameParts},
};
use serde_json::{Map, Value, json};
use sha1::Digest as _;

use crate::journal::StoredEvent;

/// The ECS version the mapping follows.
pub const ECS_VERSION: &str = "8.17.0";

/// MITRE ATT&CK techniques an interception is evidence of.
const AITM: (&str, &str, &str) = (
    "T1557",
    "Adversary-in-the-Middle",
    "https://attack.mitre.org/techniques/T1557/",
);
const INSTALL_ROOT: (&str, &str, &str) = (
    "T1553",
    "Subvert Trust Controls",
    "https://attack.mitre.org/techniques/T1553/",
);
const INSTALL_ROOT_SUB: (&str, &str, &str) = (
    "T1553.004",
    "Install Root Certificate",
    "https://attack.mitre.org/techniques/T1553/004/",
);

fn names(p: &NameParts, dn: &str) -> Value {
    json!({
        "distinguished_name": dn,
        "common_name": p.common_name,
        "organization": p.organization,
        "organizational_unit": p.organizational_unit,
        "country": p.country,
        "locality": p.locality,
        "state_or_province": p.state_or_province,
    })
}

/// A serial number as ECS writes it: hex, uppercase, without colons.
fn serial(s: &str) -> String {
    s.chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn x509(c: &CertSummary) -> Value {
    json!({
        "subject": names(&c.subject_parts, &c.subject),
        "issuer": names(&c.issuer_parts, &c.issuer),
        "serial_number": serial(&c.serial),
        "not_before": c.not_before,
        "not_after": c.not_after,
        "public_key_algorithm": c.key_type,
        "public_key_size": (c.key_bits > 0).then_some(c.key_bits),
        "public_key_curve": c.public_key_curve,
        "public_key_exponent": c.public_key_exponent,
        "signature_algorithm": c.signature_algorithm,
        "alternative_names": c.san,
        "version_number": (c.version > 0).then(|| c.version.to_string()),
    })
}

/// The Community ID (version 1, seed 0) of a TCP (`proto` 6) or UDP (17) flow: the same for
/// both directions, so a SIEM joins this event with Zeek's, Suricata's and a firewall's
/// records of the connection. See <https://github.com/corelight/community-id-spec>.
pub fn community_id(proto: u8, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Option<String> {
    fn bytes(ip: IpAddr) -> Vec<u8> {
        match ip {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    }
    let (a, b) = (bytes(src), bytes(dst));
    if a.len() != b.len() {
        return None;
    }
    let ((a, ap), (b, bp)) = if (&a, sport) <= (&b, dport) {
        ((a, sport), (b, dport))
    } else {
        ((b, dport), (a, sport))
    };
    let mut h = sha1::Sha1::new();
    h.update(0u16.to_be_bytes());
    h.update(&a);
    h.update(&b);
    h.update([proto, 0]);
    h.update(ap.to_be_bytes());
    h.update(bp.to_be_bytes());
    Some(format!(
        "1:{}",
        base64::engine::general_purpose::STANDARD.encode(h.finalize())
    ))
}

/// Map a stored event to ECS field names; `chain` is the PEM of its certificates, leaf first
/// (`tls.server.certificate_chain`, left out when empty).
pub fn to_ecs(r: &StoredEvent, chain: &[Arc<str>]) -> Value {
    let mut v = event(&r.event);
    if !chain.is_empty() {
        v["tls"]["server"]["certificate_chain"] =
            Value::Array(chain.iter().map(|p| Value::String(p.to_string())).collect());
    }
    v["event"]["id"] = Value::String(r.seq.to_string());
    prune(&mut v);
    v
}

/// Whether an event is an alert for a SIEM: a verdict of interception, or a loud reason.
fn is_alert(e: &Event) -> bool {
    matches!(
        e.verdict(),
        Some(Verdict::Intercepted | Verdict::Untrusted | Verdict::PinMismatch)
    ) || e.severity().is_some_and(|s| s >= Severity::Medium)
}

fn threat(e: &Event) -> Value {
    if !matches!(
        e.verdict(),
        Some(Verdict::Intercepted | Verdict::Untrusted | Verdict::PinMismatch)
    ) {
        return Value::Null;
    }
    let mut techniques = vec![AITM];
    let mut subs = Vec::new();
    if e.reasons().contains(&Reason::LocalRoot) {
        techniques.push(INSTALL_ROOT);
        subs.push(INSTALL_ROOT_SUB);
    }
    type Technique = (&'static str, &'static str, &'static str);
    let col = |t: &[Technique], f: fn(&Technique) -> &'static str| -> Vec<&'static str> {
        t.iter().map(f).collect()
    };
    json!({
        "framework": "MITRE ATT&CK",
        "technique": {
            "id": col(&techniques, |t| t.0),
            "name": col(&techniques, |t| t.1),
            "reference": col(&techniques, |t| t.2),
            "subtechnique": {
                "id": col(&subs, |t| t.0),
                "name": col(&subs, |t| t.1),
                "reference": col(&subs, |t| t.2),
            },
        },
    })
}

fn event(e: &Event) -> Value {
    let h = &e.handshake;
    let j = e.judgement.as_ref();
    let leaf = h.chain.first();
    let p = e.process.as_ref();
    let container = p.and_then(|p| p.container.as_ref());
    let host = e.host.as_deref();
    let alert = is_alert(e);
    let reasons: Vec<String> = e.reasons().iter().map(ToString::to_string).collect();
    let (version, protocol) = match h.tls_version {
        Some(TlsVersion::Ssl3) => (Some("3.0"), "ssl"),
        Some(v) => (Some(v.as_str()), "tls"),
        None => (None, "tls"),
    };
    // The client's offered suites, from its JA3 string (GREASE already left out).
    let offered: Vec<String> = h
        .ja3_string
        .as_deref()
        .and_then(|s| s.split(',').nth(1))
        .map(|c| {
            c.split('-')
                .filter_map(|n| n.parse::<u16>().ok())
                .map(cipher_name)
                .collect()
        })
        .unwrap_or_default();
    let (transport, iana, protocol) = match h.transport {
        Transport::Tcp => ("tcp", 6, protocol),
        Transport::Quic => ("udp", 17, "quic"),
    };
    let community = match (h.src_addr, h.dst_addr) {
        (Some(s), Some(d)) => community_id(iana, s, h.src_port, d, h.dst_port),
        _ => None,
    };
    let related_ip: Vec<String> = [h.src_addr, h.dst_addr]
        .into_iter()
        .flatten()
        .map(|a| a.to_string())
        .collect();
    let related_hosts: Vec<&str> = [
        h.server_name.as_deref(),
        host.and_then(|h| h.name.as_deref()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let client_leaf = h.client_certificate_leaf.as_deref();
    let refused = e
        .reasons()
        .iter()
        .any(|r| matches!(r, Reason::ClientRejected(_)));
    let related_hash: Vec<&str> = [
        leaf.map(|c| c.sha256.as_str()),
        leaf.map(|c| c.sha1.as_str()),
        client_leaf.map(|c| c.sha256.as_str()),
        h.ja3.as_deref(),
        h.ja3s.as_deref(),
        h.ja4.as_deref(),
    ]
    .into_iter()
    .flatten()
    .filter(|s| !s.is_empty())
    .collect();
    let sensor_version = host.and_then(|h| h.sensor_version.as_deref());
    let upper = |s: &str| (!s.is_empty()).then(|| s.to_ascii_uppercase());
    json!({
        "@timestamp": h.time,
        "message": j.map(|j| &j.explanation),
        "ecs": {"version": ECS_VERSION},
        "labels": host.map(|h| &h.labels),
        "event": {
            "kind": if alert { "alert" } else { "event" },
            "category": if alert { vec!["network", "intrusion_detection"] } else { vec!["network"] },
            "type": ["connection", "protocol"],
            "action": "tls-handshake",
            // A client that refused the certificate failed, also when its TLS 1.2 handshake
            // had completed first (NSS verifies while it finishes, then sends an alert).
            "outcome": match h.client_outcome {
                _ if refused => "failure",
                ClientOutcome::Completed => "success",
                ClientOutcome::Rejected | ClientOutcome::Aborted => "failure",
                ClientOutcome::Unknown => "unknown",
            },
            "severity": e.severity().map(Severity::number),
            "reason": (!reasons.is_empty()).then(|| reasons.join(", ")),
            "created": h.end_time,
            "dataset": "sensor.tls",
            "module": "sensor",
        },
        "rule": {
            "name": if alert { reasons.first().cloned() } else { None },
            "ruleset": alert.then_some("sensor"),
        },
        "threat": threat(e),
        "host": host.map(|h| json!({
            "id": h.id,
            "name": h.name,
            "hostname": h.name,
            "architecture": h.architecture,
            "boot": {"id": h.boot_id},
            "os": {
                "type": "linux",
                "platform": h.os_id,
                "name": h.os_name,
                "version": h.os_version,
                "kernel": h.kernel,
            },
        })),
        "agent": host.map(|h| json!({
            "type": "sensord",
            "id": h.id,
            "name": h.name,
            "version": sensor_version,
            "build": {"original": sensor_version.map(|v| format!(
                "sensord {v} (commit {})",
                h.sensor_commit.as_deref().unwrap_or("unknown")
            ))},
        })),
        "source": {"ip": h.src_addr, "port": h.src_port},
        "destination": {"ip": h.dst_addr, "port": h.dst_port, "domain": h.server_name},
        "network": {
            "transport": transport,
            "iana_number": iana.to_string(),
            "protocol": protocol,
            "type": h.dst_addr.map(|a| if a.is_ipv4() { "ipv4" } else { "ipv6" }),
            "direction": p.map(|p| match p.role {
                Role::Client => "egress",
                Role::Server => "ingress",
            }),
            "community_id": community,
        },
        "related": {"ip": related_ip, "hosts": related_hosts, "hash": related_hash},
        "tls": {
            "version": version,
            "version_protocol": protocol,
            "cipher": h.cipher,
            "curve": h.key_exchange,
            "established": h.client_outcome == ClientOutcome::Completed,
            "resumed": h.resumed,
            "next_protocol": h.alpn,
            "client": {
                "server_name": h.server_name,
                "ja3": h.ja3,
                "ja4": h.ja4,
                "supported_ciphers": offered,
                "hash": client_leaf.map(|c| json!({
                    "sha256": upper(&c.sha256),
                    "sha1": upper(&c.sha1),
                })),
                "issuer": client_leaf.map(|c| &c.issuer),
                "subject": client_leaf.map(|c| &c.subject),
                "not_before": client_leaf.map(|c| c.not_before),
                "not_after": client_leaf.map(|c| c.not_after),
                "x509": client_leaf.map(x509),
            },
            "server": {
                "ja3s": h.ja3s,
                "hash": {
                    "sha256": leaf.and_then(|c| upper(&c.sha256)),
                    "sha1": leaf.and_then(|c| upper(&c.sha1)),
                },
                "issuer": leaf.map(|c| &c.issuer),
                "subject": leaf.map(|c| &c.subject),
                "not_before": leaf.map(|c| c.not_before),
                "not_after": leaf.map(|c| c.not_after),
                "x509": leaf.map(|c| x509(c)),
            },
        },
        "process": {
            "pid": p.and_then(|p| p.pid),
            "name": p.and_then(|p| p.comm.as_ref()),
            "executable": p.and_then(|p| p.exe.as_ref()),
            "user": {"id": p.and_then(|p| p.uid).map(|u| u.to_string())},
        },
        "container": {
            "id": p.and_then(|p| p.container_id.as_ref()),
            "name": container.and_then(|c| c.name.as_ref()),
            "runtime": container.and_then(|c| c.runtime),
            "image": {"name": container.and_then(|c| c.image.as_ref())},
        },
        "orchestrator": container
            .filter(|c| c.pod_uid.is_some() || c.pod.is_some())
            .map(|c| {
                let pod = c.pod.as_ref();
                json!({
                    "type": "kubernetes",
                    "namespace": pod.map(|k| k.namespace.as_str()),
                    "resource": {
                        "type": "pod",
                        "id": c.pod_uid,
                        "name": pod.map(|k| k.name.as_str()),
                        "label": pod.filter(|k| !k.labels.is_empty()).map(|k| {
                            k.labels
                                .iter()
                                .map(|(key, value)| format!("{key}:{value}"))
                                .collect::<Vec<_>>()
                        }),
                    },
                })
            }),
        "sensor": {
            "verdict": e.verdict(),
            "severity": e.severity(),
            "reasons": reasons,
            "interceptor": j.and_then(|j| j.interceptor.as_ref()),
            "interceptor_grade": j.and_then(|j| j.interceptor_grade.as_ref()),
            "chain_source": h.chain_source,
            "alert": h.alert,
            "idle_after_handshake": h.idle_after_handshake.then_some(true),
            "quic_version": h.quic.as_ref().map(|q| q.version.as_str()),
        },
    })
}

/// Leave out nulls, empty strings, arrays and objects, at every depth.
fn prune(v: &mut Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => {
            a.retain_mut(prune);
            !a.is_empty()
        }
        Value::Object(m) => {
            let keep: Map<String, Value> = std::mem::take(m)
                .into_iter()
                .filter_map(|(k, mut v)| prune(&mut v).then_some((k, v)))
                .collect();
            *m = keep;
            !m.is_empty()
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sensor_core::{
        event::{
            ClientOutcome, Handshake, Judgement, Process, Reason, Role, Severity, Timestamp,
            TlsVersion,
        },
        x509::{CertSummary, NameParts},
    };

    use super::*;

    #[test]
    fn community_ids_match_the_specifications_baseline() {
        // corelight/community-id-spec, baseline/baseline_deflt.json: TCP over IPv4 and IPv6,
        // each in both directions.
        let v4 = (
            "128.232.110.120".parse().unwrap(),
            34855,
            "66.35.250.204".parse().unwrap(),
            80,
        );
        let want = Some("1:LQU9qZlK+B5F3KDmev6m5PMibrg=".to_owned());
        assert_eq!(community_id(6, v4.0, v4.1, v4.2, v4.3), want);
        assert_eq!(community_id(6, v4.2, v4.3, v4.0, v4.1), want);
        let a: IpAddr = "2001:470:e5bf:dead:4957:2174:e82c:4887".parse().unwrap();
        let b: IpAddr = "2607:f8b0:400c:c03::1a".parse().unwrap();
        let want = Some("1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=".to_owned());
        assert_eq!(community_id(6, a, 63943, b, 25), want);
        assert_eq!(community_id(6, b, 25, a, 63943), want);
        assert_eq!(community_id(6, a, 1, "10.0.0.1".parse().unwrap(), 2), None);
        // UDP, as QUIC's flows are.
        let (c, d): (IpAddr, IpAddr) =
            ("192.168.1.52".parse().unwrap(), "8.8.8.8".parse().unwrap());
        let want = Some("1:d/FP5EW3wiY1vCndhwleRRKHowQ=".to_owned());
        assert_eq!(community_id(17, c, 54585, d, 53), want);
        assert_eq!(community_id(17, d, 53, c, 54585), want);
    }

    #[test]
    fn maps_the_fields_siems_look_for() {
        let leaf = CertSummary {
            subject: "CN=a.test".into(),
            issuer: "CN=FortiGate CA".into(),
            serial: "0a:1b".into(),
            not_before: Timestamp(0),
            not_after: Timestamp(0),
            sha256: "ab".into(),
            spki_sha256: String::new(),
            key_type: "ec".into(),
            key_bits: 256,
            signature_algorithm: "ecdsa-with-SHA256".into(),
            san: vec!["a.test".into()],
            is_ca: false,
            self_issued: false,
            #[cfg(feature = "ja4plus")]
            ja4x: None,
            names_cut: false,
            version: 3,
            sha1: "cd".into(),
            subject_parts: NameParts {
                common_name: vec!["a.test".into()],
                ..NameParts::default()
            },
            issuer_parts: NameParts {
                common_name: vec!["FortiGate CA".into()],
                organization: vec!["Fortinet".into()],
                ..NameParts::default()
            },
            public_key_curve: Some("secp256r1".into()),
            public_key_exponent: None,
            ..CertSummary::default()
        };
        let e = Event {
            handshake: Handshake {
                time: Timestamp(1_795_000_000_000_000_000),
                src_addr: Some("10.0.0.1".parse().unwrap()),
                src_port: 5000,
                dst_addr: Some("192.0.2.1".parse().unwrap()),
                dst_port: 443,
                server_name: Some("a.test".into()),
                tls_version: Some(TlsVersion::Tls12),
                client_outcome: ClientOutcome::Completed,
                chain: vec![Arc::new(leaf)],
                ..Handshake::default()
            },
            process: Some(Process {
                pid: Some(7),
                comm: Some("curl".into()),
                exe: Some("/usr/bin/curl".into()),
                uid: Some(0),
                ..Process::new(Role::Client)
            }),
            judgement: Some(Judgement {
                verdict: Verdict::Intercepted,
                reasons: vec![Reason::LocalRoot],
                severity: Severity::High,
                explanation: "x".into(),
                interceptor: None,
                extra_certificates: Vec::new(),
                interceptor_grade: None,
            }),
            host: None,
        };
        let mut refused = e.clone();
        if let Some(j) = refused.judgement.as_mut() {
            j.reasons.push(Reason::ClientRejected(
                sensor_core::event::Rejection::Encrypted,
            ));
        }
        let ecs = to_ecs(&crate::journal::NewEvent::of(refused).stored(41), &[]);
        assert_eq!(
            ecs["event"]["outcome"], "failure",
            "refused after completing"
        );
        assert_eq!(ecs["tls"]["established"], true);
        let ecs = to_ecs(&crate::journal::NewEvent::of(e).stored(42), &[]);
        assert_eq!(ecs["tls"]["client"]["server_name"], "a.test");
        assert_eq!(
            ecs["tls"]["server"]["x509"]["issuer"]["distinguished_name"],
            "CN=FortiGate CA"
        );
        assert_eq!(ecs["tls"]["version"], "1.2");
        assert_eq!(ecs["process"]["executable"], "/usr/bin/curl");
        assert_eq!(ecs["destination"]["port"], 443);
        assert_eq!(ecs["event"]["kind"], "alert");
        assert_eq!(ecs["event"]["outcome"], "success");
        assert_eq!(ecs["event"]["reason"], "local_root");
        assert_eq!(ecs["event"]["severity"], 4);
        assert_eq!(ecs["event"]["id"], "42");
        assert_eq!(ecs["sensor"]["severity"], "high");
        assert_eq!(ecs["rule"]["name"], "local_root");
        assert_eq!(ecs["threat"]["technique"]["id"], json!(["T1557", "T1553"]));
        assert_eq!(
            ecs["threat"]["technique"]["subtechnique"]["id"],
            json!(["T1553.004"])
        );
        assert_eq!(ecs["tls"]["server"]["hash"]["sha256"], "AB");
        assert_eq!(ecs["tls"]["server"]["x509"]["serial_number"], "0A1B");
        assert_eq!(
            ecs["tls"]["server"]["x509"]["issuer"]["organization"][0],
            "Fortinet"
        );
        assert_eq!(ecs["tls"]["server"]["x509"]["version_number"], "3");
        assert_eq!(ecs["network"]["direction"], "egress");
        assert_eq!(ecs["ecs"]["version"], ECS_VERSION);
        assert!(ecs.get("host").is_none(), "no host, no host fields: {ecs}");
        assert!(ecs["process"].get("pid").is_some());
        assert!(
            ecs["tls"]["client"].get("ja3").is_none(),
            "nulls are left out"
        );
        assert_eq!(ecs["@timestamp"], "2026-11-18T11:06:40Z");
    }
}
