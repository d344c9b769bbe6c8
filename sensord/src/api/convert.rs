//! Typed events to protobuf messages, and protobuf filters to the core's. Pure.

use sensor_core::{
    event::{Event, Host, Timestamp, Verdict},
    filter::{Destination, Filter, Glob},
    x509::CertSummary,
};
use sensor_proto::v1 as pb;
use tonic::Status;

use crate::journal::StoredEvent;

/// A protobuf timestamp.
pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    let (seconds, nanos) = t.seconds_nanos();
    prost_types::Timestamp { seconds, nanos }
}

/// Epoch nanoseconds of a protobuf timestamp (0 for none).
pub fn nanos(t: Option<&prost_types::Timestamp>) -> u64 {
    t.map_or(0, |t| Timestamp::from_seconds_nanos(t.seconds, t.nanos).0)
}

fn text(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

pub fn certificate_summary(c: &CertSummary) -> pb::CertificateSummary {
    pb::CertificateSummary {
        subject: c.subject.clone(),
        issuer: c.issuer.clone(),
        serial: c.serial.clone(),
        not_before: Some(timestamp(c.not_before)),
        not_after: Some(timestamp(c.not_after)),
        sha256: c.sha256.clone(),
        spki_sha256: c.spki_sha256.clone(),
    }
}

/// The protobuf event of a stored event (`count` is 1 unless aggregated).
pub fn event(r: &StoredEvent, count: u64) -> pb::Event {
    let e: &Event = &r.event;
    let h = &e.handshake;
    let j = e.judgement.as_ref();
    pb::Event {
        seq: r.seq,
        resume_after: r.seq,
        time: Some(timestamp(h.time)),
        src_addr: h.src_addr.map(|a| a.to_string()).unwrap_or_default(),
        src_port: u32::from(h.src_port),
        dst_addr: h.dst_addr.map(|a| a.to_string()).unwrap_or_default(),
        dst_port: u32::from(h.dst_port),
        server_name: text(&h.server_name),
        tls_version: h.tls_version.map(|v| v.to_string()).unwrap_or_default(),
        alpn: text(&h.alpn),
        cipher: text(&h.cipher),
        ja3: text(&h.ja3),
        ja3s: text(&h.ja3s),
        ja4: text(&h.ja4),
        chain: h.chain.iter().map(|c| certificate_summary(c)).collect(),
        client_certificate: h
            .client_certificate_leaf
            .as_deref()
            .map(certificate_summary),
        client_outcome: h.client_outcome.to_string(),
        alert: h.alert.map(|a| pb::Alert {
            level: a.level.to_string(),
            description: a.description().to_owned(),
            code: u32::from(a.code),
        }),
        verdict: e.verdict().map(|v| v.to_string()).unwrap_or_default(),
        reasons: e.reasons().iter().map(ToString::to_string).collect(),
        severity: i32::from(r.meta.severity_number()),
        explanation: j.map(|j| j.explanation.clone()).unwrap_or_default(),
        process: e.process.as_ref().map(|p| {
            let pod = p.container.as_ref().and_then(|c| c.pod.as_ref());
            pb::Process {
                pid: p.pid.unwrap_or(0),
                comm: text(&p.comm),
                uid: p.uid.unwrap_or(0),
                exe: text(&p.exe),
                cgroup: text(&p.cgroup),
                container_id: text(&p.container_id),
                container_runtime: p
                    .container
                    .as_ref()
                    .and_then(|c| c.runtime)
                    .map(|r| r.to_string())
                    .unwrap_or_default(),
                container_name: text(&p.container.as_ref().and_then(|c| c.name.clone())),
                container_image: text(&p.container.as_ref().and_then(|c| c.image.clone())),
                pod_uid: text(&p.container.as_ref().and_then(|c| c.pod_uid.clone())),
                role: p.role.to_string(),
                pod_name: pod.map(|k| k.name.clone()).unwrap_or_default(),
                pod_namespace: pod.map(|k| k.namespace.clone()).unwrap_or_default(),
                pod_labels: pod
                    .map(|k| k.labels.clone().into_iter().collect())
                    .unwrap_or_default(),
            }
        }),
        chain_source: h.chain_source.map(|s| s.to_string()).unwrap_or_default(),
        count,
        json: r.json.to_string(),
        interceptor: j
            .and_then(|j| j.interceptor.as_ref())
            .map(|i| pb::Interceptor {
                id: i.id.clone(),
                name: i.name.clone(),
            }),
        host: e.host.as_deref().map(host),
        interceptor_grade: j.and_then(|j| j.interceptor_grade.as_ref()).map(|g| {
            pb::InterceptorGrade {
                grade: g.grade.to_string(),
                reasons: g.reasons.iter().map(ToString::to_string).collect(),
            }
        }),
        idle_after_handshake: h.idle_after_handshake,
        transport: h.transport.to_string(),
        quic_version: h
            .quic
            .as_ref()
            .map(|q| q.version.to_string())
            .unwrap_or_default(),
    }
}

fn host(h: &Host) -> pb::Host {
    pb::Host {
        id: text(&h.id),
        name: text(&h.name),
        boot_id: text(&h.boot_id),
        os_id: text(&h.os_id),
        os_name: text(&h.os_name),
        os_version: text(&h.os_version),
        kernel: text(&h.kernel),
        architecture: text(&h.architecture),
        sensor_version: text(&h.sensor_version),
        sensor_commit: text(&h.sensor_commit),
        labels: h
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// The core's filter of a protobuf filter; an unknown verdict name is the caller's error.
pub fn filter(f: Option<&pb::Filter>) -> Result<Filter, Status> {
    let Some(f) = f else {
        return Ok(Filter::default());
    };
    let verdicts = |names: &[String]| -> Result<Vec<Verdict>, Status> {
        names
            .iter()
            .map(|n| {
                n.parse()
                    .map_err(|e| Status::invalid_argument(format!("filter: {e}")))
            })
            .collect()
    };
    let globs = |patterns: &[String]| patterns.iter().map(|p| Glob::new(p)).collect();
    let destinations = |patterns: &[String]| -> Result<Vec<Destination>, Status> {
        patterns
            .iter()
            .map(|p| {
                p.parse()
                    .map_err(|e| Status::invalid_argument(format!("filter: {e}")))
            })
            .collect()
    };
    Ok(Filter {
        verdicts: verdicts(&f.verdicts)?,
        min_severity: u8::try_from(f.min_severity.max(0)).unwrap_or(0),
        sni: globs(&f.sni),
        comm: globs(&f.comm),
        exe: globs(&f.exe),
        pid: f.pid.clone(),
        destination: destinations(&f.destination)?,
        exclude_verdicts: verdicts(&f.exclude_verdicts)?,
        exclude_sni: globs(&f.exclude_sni),
        exclude_comm: globs(&f.exclude_comm),
        exclude_exe: globs(&f.exclude_exe),
        exclude_destination: destinations(&f.exclude_destination)?,
        container: globs(&f.container),
        pod: globs(&f.pod),
        container_runtime: f
            .container_runtime
            .iter()
            .map(|n| {
                n.parse()
                    .map_err(|e| Status::invalid_argument(format!("filter: {e}")))
            })
            .collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
mod tests {
    use sensor_core::event::{Severity, Verdict};

    use super::*;
    use crate::journal::testing;

    #[test]
    fn the_message_carries_the_typed_event() {
        let r = testing::event(5, Verdict::Untrusted).stored(5);
        let m = event(&r, 1);
        assert_eq!(m.seq, 5);
        assert_eq!(m.verdict, "untrusted");
        assert_eq!(m.severity, i32::from(Severity::Medium.number()));
        assert_eq!(m.reasons, ["public_root"]);
        assert_eq!(m.server_name, "h5.test");
        assert_eq!(m.json, &*r.json);
        assert_eq!(m.time.unwrap().nanos, 1_005);
    }

    #[test]
    fn filters_with_unknown_verdicts_are_refused() {
        let f = pb::Filter {
            verdicts: vec!["intercepted".into()],
            sni: vec!["*.example.com".into()],
            ..pb::Filter::default()
        };
        let got = filter(Some(&f)).unwrap();
        assert_eq!(got.verdicts, [Verdict::Intercepted]);
        let bad = pb::Filter {
            verdicts: vec!["intercepted ".into()],
            ..pb::Filter::default()
        };
        assert_eq!(
            filter(Some(&bad)).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let bad = pb::Filter {
            exclude_destination: vec!["db.example:5432".into()],
            ..pb::Filter::default()
        };
        let refused = filter(Some(&bad)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains("db.example:5432"), "{refused:?}");
    }
}
