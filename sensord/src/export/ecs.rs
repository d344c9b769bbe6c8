//! The Elastic Common Schema form of an event (`tls.*`, `x509.*`, `process.*`, `source.*`,
//! `destination.*`), for `[export.jsonl] ecs = true`, made from the typed event. Pure.

use sensor_core::{
    event::{ClientOutcome, Event, Verdict},
    x509::CertSummary,
};
use serde_json::{Value, json};

use crate::journal::StoredEvent;

fn x509(c: &CertSummary) -> Value {
    json!({
        "subject": {"distinguished_name": c.subject},
        "issuer": {"distinguished_name": c.issuer},
        "serial_number": c.serial,
        "not_before": c.not_before,
        "not_after": c.not_after,
        "public_key_algorithm": c.key_type,
        "public_key_size": c.key_bits,
        "signature_algorithm": c.signature_algorithm,
        "alternative_names": c.san,
    })
}

/// Map an event to ECS field names. Fields ECS has no place for stay under `sensor.*`.
pub fn to_ecs(r: &StoredEvent) -> Value {
    event(&r.event)
}

fn event(e: &Event) -> Value {
    let h = &e.handshake;
    let j = e.judgement.as_ref();
    let leaf = h.chain.first();
    let kind = match e.verdict() {
        Some(Verdict::Clean | Verdict::Unverified) | None => "event",
        Some(_) => "alert",
    };
    let p = e.process.as_ref();
    json!({
        "@timestamp": h.time,
        "message": j.map(|j| &j.explanation),
        "event": {
            "kind": kind,
            "category": ["network"],
            "type": ["connection", "protocol"],
            "action": "tls-handshake",
            "outcome": match h.client_outcome {
                ClientOutcome::Completed => "success",
                ClientOutcome::Rejected | ClientOutcome::Aborted => "failure",
                ClientOutcome::Unknown => "unknown",
            },
            "severity": e.severity(),
            "reason": e.reasons(),
        },
        "source": {"ip": h.src_addr, "port": h.src_port},
        "destination": {"ip": h.dst_addr, "port": h.dst_port, "domain": h.server_name},
        "network": {"transport": "tcp", "protocol": "tls"},
        "tls": {
            "version": h.tls_version.map_or("", |v| v.as_str()),
            "version_protocol": "tls",
            "cipher": h.cipher,
            "established": h.client_outcome == ClientOutcome::Completed,
            "next_protocol": h.alpn,
            "client": {
                "server_name": h.server_name,
                "ja3": h.ja3,
                "supported_ciphers": Value::Null,
            },
            "server": {
                "ja3s": h.ja3s,
                "hash": {"sha256": leaf.map(|c| &c.sha256)},
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
            "user": {"id": p.and_then(|p| p.uid)},
        },
        "sensor": {
            "verdict": e.verdict(),
            "ja4": h.ja4,
            "interceptor": j.and_then(|j| j.interceptor.as_ref()),
            "chain_source": h.chain_source,
            "alert": h.alert,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sensor_core::{
        event::{
            ClientOutcome, Handshake, Judgement, Process, Reason, Role, Severity, Timestamp,
            TlsVersion,
        },
        x509::CertSummary,
    };

    use super::*;

    #[test]
    fn maps_the_fields_siems_look_for() {
        let leaf = CertSummary {
            subject: "CN=a.test".into(),
            issuer: "CN=FortiGate CA".into(),
            serial: "01".into(),
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
            der: Vec::new(),
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
            }),
        };
        let ecs = event(&e);
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
        assert_eq!(ecs["event"]["reason"][0], "local_root");
        assert_eq!(ecs["@timestamp"], "2026-11-18T11:06:40Z");
    }
}
