//! The Elastic Common Schema form of an event (`tls.*`, `x509.*`, `process.*`, `source.*`,
//! `destination.*`), for `[export.jsonl] ecs = true`. Pure.

use serde_json::{Value, json};

/// Map the JSON contract's event to ECS field names. Fields ECS has no place for stay under
/// `sensor.*`.
pub fn to_ecs(e: &Value) -> Value {
    let leaf = &e["chain"][0];
    let x509 = |c: &Value| {
        json!({
            "subject": {"distinguished_name": c["subject"]},
            "issuer": {"distinguished_name": c["issuer"]},
            "serial_number": c["serial"],
            "not_before": c["not_before"],
            "not_after": c["not_after"],
            "public_key_algorithm": c["key_type"],
            "public_key_size": c["key_bits"],
            "signature_algorithm": c["signature_algorithm"],
            "alternative_names": c["san"],
        })
    };
    let version = e["tls_version"].as_str().unwrap_or_default();
    let kind = if matches!(e["verdict"].as_str(), Some("clean" | "unverified")) {
        "event"
    } else {
        "alert"
    };
    json!({
        "@timestamp": e["time"],
        "message": e["explanation"],
        "event": {
            "kind": kind,
            "category": ["network"],
            "type": ["connection", "protocol"],
            "action": "tls-handshake",
            "outcome": match e["client_outcome"].as_str() {
                Some("completed") => "success",
                Some("rejected" | "aborted") => "failure",
                _ => "unknown",
            },
            "severity": e["severity"],
            "reason": e["reasons"],
        },
        "source": {"ip": e["src_addr"], "port": e["src_port"]},
        "destination": {"ip": e["dst_addr"], "port": e["dst_port"], "domain": e["server_name"]},
        "network": {"transport": "tcp", "protocol": "tls"},
        "tls": {
            "version": version,
            "version_protocol": "tls",
            "cipher": e["cipher"],
            "established": e["client_outcome"] == "completed",
            "next_protocol": e["alpn"],
            "client": {
                "server_name": e["server_name"],
                "ja3": e["ja3"],
                "supported_ciphers": Value::Null,
            },
            "server": {
                "ja3s": e["ja3s"],
                "hash": {"sha256": leaf["sha256"]},
                "issuer": leaf["issuer"],
                "subject": leaf["subject"],
                "not_before": leaf["not_before"],
                "not_after": leaf["not_after"],
                "x509": if leaf.is_null() { Value::Null } else { x509(leaf) },
            },
        },
        "process": {
            "pid": e["process"]["pid"],
            "name": e["process"]["comm"],
            "executable": e["process"]["exe"],
            "user": {"id": e["process"]["uid"]},
        },
        "sensor": {
            "verdict": e["verdict"],
            "ja4": e["ja4"],
            "interceptor": e["interceptor"],
            "chain_source": e["chain_source"],
            "alert": e["alert"],
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn maps_the_fields_siems_look_for() {
        let e = serde_json::json!({
            "time": "2026-11-27T00:00:00Z", "src_addr": "10.0.0.1", "src_port": 5000,
            "dst_addr": "192.0.2.1", "dst_port": 443, "server_name": "a.test",
            "tls_version": "1.2", "verdict": "intercepted", "client_outcome": "completed",
            "chain": [{"subject": "CN=a.test", "issuer": "CN=FortiGate CA", "sha256": "ab"}],
            "process": {"pid": 7, "comm": "curl", "exe": "/usr/bin/curl", "uid": 0},
        });
        let ecs = super::to_ecs(&e);
        assert_eq!(ecs["tls"]["client"]["server_name"], "a.test");
        assert_eq!(
            ecs["tls"]["server"]["x509"]["issuer"]["distinguished_name"],
            "CN=FortiGate CA"
        );
        assert_eq!(ecs["process"]["executable"], "/usr/bin/curl");
        assert_eq!(ecs["destination"]["port"], 443);
        assert_eq!(ecs["event"]["kind"], "alert");
        assert_eq!(ecs["event"]["outcome"], "success");
    }
}
