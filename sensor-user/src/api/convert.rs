//! Journal records to protobuf messages, and protobuf filters to the engine's.

use sensor_proto::v1 as pb;
use serde_json::Value;

use super::filter::Filter;
use crate::journal::Record;

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn ts(v: &Value) -> Option<prost_types::Timestamp> {
    let text = v.as_str()?;
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: t.nanosecond() as i32,
    })
}

/// A protobuf timestamp from epoch nanoseconds.
pub fn timestamp(ns: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ns / 1_000_000_000) as i64,
        nanos: (ns % 1_000_000_000) as i32,
    }
}

/// Epoch nanoseconds of a protobuf timestamp (0 for none).
pub fn nanos(t: Option<&prost_types::Timestamp>) -> u64 {
    t.map_or(0, |t| {
        (t.seconds.max(0) as u64) * 1_000_000_000 + t.nanos.max(0) as u64
    })
}

pub fn certificate_summary(c: &Value) -> pb::CertificateSummary {
    pb::CertificateSummary {
        subject: s(&c["subject"]),
        issuer: s(&c["issuer"]),
        serial: s(&c["serial"]),
        not_before: ts(&c["not_before"]),
        not_after: ts(&c["not_after"]),
        sha256: s(&c["sha256"]),
        spki_sha256: s(&c["spki_sha256"]),
    }
}

/// The protobuf event of a journal record (`count` is 1 unless aggregated).
pub fn event(r: &Record, count: u64) -> pb::Event {
    let v: Value = serde_json::from_str(&r.json).unwrap_or(Value::Null);
    let process = v
        .get("process")
        .filter(|p| !p.is_null())
        .map(|p| pb::Process {
            pid: p["pid"].as_u64().unwrap_or(0) as u32,
            comm: s(&p["comm"]),
            uid: p["uid"].as_u64().unwrap_or(0) as u32,
            exe: s(&p["exe"]),
            cgroup: s(&p["cgroup"]),
            container_id: s(&p["container_id"]),
        });
    let alert = v.get("alert").filter(|a| !a.is_null()).map(|a| pb::Alert {
        level: s(&a["level"]),
        description: s(&a["description"]),
        code: a["code"].as_u64().unwrap_or(0) as u32,
    });
    pb::Event {
        seq: r.seq,
        time: Some(timestamp(r.meta.time_ns)),
        src_addr: s(&v["src_addr"]),
        src_port: v["src_port"].as_u64().unwrap_or(0) as u32,
        dst_addr: s(&v["dst_addr"]),
        dst_port: v["dst_port"].as_u64().unwrap_or(0) as u32,
        server_name: s(&v["server_name"]),
        tls_version: s(&v["tls_version"]),
        alpn: s(&v["alpn"]),
        cipher: s(&v["cipher"]),
        ja3: s(&v["ja3"]),
        ja3s: s(&v["ja3s"]),
        ja4: s(&v["ja4"]),
        chain: v["chain"]
            .as_array()
            .map(|c| c.iter().map(certificate_summary).collect())
            .unwrap_or_default(),
        client_outcome: s(&v["client_outcome"]),
        alert,
        verdict: r.meta.verdict.clone(),
        reasons: v["reasons"]
            .as_array()
            .map(|a| a.iter().map(s).collect())
            .unwrap_or_default(),
        severity: i32::from(r.meta.severity),
        explanation: s(&v["explanation"]),
        process,
        chain_source: s(&v["chain_source"]),
        count,
        json: r.json.clone(),
        interceptor: v
            .get("interceptor")
            .filter(|i| !i.is_null())
            .map(|i| pb::Interceptor {
                id: s(&i["id"]),
                name: s(&i["name"]),
            }),
    }
}

/// The engine's filter of a protobuf filter.
pub fn filter(f: Option<&pb::Filter>) -> Filter {
    let Some(f) = f else {
        return Filter::default();
    };
    Filter {
        verdicts: f.verdicts.clone(),
        min_severity: u8::try_from(f.min_severity.max(0)).unwrap_or(0),
        sni: f.sni.clone(),
        comm: f.comm.clone(),
        exe: f.exe.clone(),
        pid: f.pid.clone(),
        destination: f.destination.clone(),
        exclude_verdicts: f.exclude_verdicts.clone(),
        exclude_sni: f.exclude_sni.clone(),
        exclude_comm: f.exclude_comm.clone(),
        exclude_exe: f.exclude_exe.clone(),
        exclude_destination: f.exclude_destination.clone(),
    }
}
