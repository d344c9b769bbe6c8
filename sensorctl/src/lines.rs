//! The API's event, put in the shared one-line form (`sensor_host::render`). The message
//! carries names as strings; they are read back into the core's enums here, at the client's
//! edge, so that the words are the same as sensord's. A reason this version does not know (from
//! a newer sensord) shows as it came; an unknown verdict, TLS version or chain source is left
//! out of the line.

use sensor_core::event::{Severity, Timestamp};
use sensor_host::render::Line;
use sensor_proto::v1 as pb;

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// The line of an API event.
pub fn line(ev: &pb::Event) -> Line<'_> {
    let time = ev.time.as_ref().map_or(Timestamp(0), |t| {
        Timestamp::from_seconds_nanos(t.seconds, t.nanos)
    });
    let process = ev.process.as_ref();
    Line {
        time,
        verdict: ev.verdict.parse().ok(),
        severity: u8::try_from(ev.severity)
            .ok()
            .and_then(Severity::from_number),
        comm: process.and_then(|p| non_empty(&p.comm)),
        pid: process.map(|p| p.pid).filter(|&p| p != 0),
        container: process.and_then(|p| {
            sensor_host::render::container_label(
                non_empty(&p.container_runtime),
                non_empty(&p.container_name),
                non_empty(&p.container_id),
                non_empty(&p.pod_name).map(|name| (p.pod_namespace.as_str(), name)),
            )
        }),
        server_name: non_empty(&ev.server_name),
        dst_addr: ev.dst_addr.parse().ok(),
        dst_port: u16::try_from(ev.dst_port).unwrap_or(0),
        tls_version: ev.tls_version.parse().ok(),
        chain_source: ev.chain_source.parse().ok(),
        issuer: ev.chain.first().map(|c| c.issuer.as_str()),
        product: ev.interceptor.as_ref().map(|i| i.name.as_str()),
        reasons: ev
            .reasons
            .iter()
            .map(|r| r.parse().unwrap_or_else(|e| match e {}))
            .collect(),
        count: ev.count.max(1),
    }
}

#[cfg(test)]
mod tests {
    use sensor_core::event::{Reason, TlsVersion, Verdict};
    use sensor_host::render::{Palette, event_line};

    use super::*;

    fn event() -> pb::Event {
        pb::Event {
            time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            dst_addr: "192.0.2.1".into(),
            dst_port: 443,
            server_name: "example.com".into(),
            tls_version: "1.2".into(),
            verdict: "intercepted".into(),
            reasons: vec!["local_root".into(), "known_interceptor:fortinet".into()],
            severity: 4,
            process: Some(pb::Process {
                pid: 4121,
                comm: "curl".into(),
                ..pb::Process::default()
            }),
            chain: vec![pb::CertificateSummary {
                issuer: "C=US, O=Fortinet, CN=FortiGate CA".into(),
                ..pb::CertificateSummary::default()
            }],
            interceptor: Some(pb::Interceptor {
                id: "fortinet".into(),
                name: "Fortinet SSL inspection".into(),
            }),
            ..pb::Event::default()
        }
    }

    #[test]
    fn the_api_event_reads_back_into_the_core_names() {
        let ev = event();
        let l = line(&ev);
        assert_eq!(l.verdict, Some(Verdict::Intercepted));
        assert_eq!(l.severity, Some(Severity::High));
        assert_eq!(l.tls_version, Some(TlsVersion::Tls12));
        assert_eq!(l.reasons[1], Reason::KnownInterceptor("fortinet".into()));
        assert_eq!(
            event_line(&l, Palette::plain()),
            "2023-11-14T22:13:20Z INTERCEPTED curl[4121] → example.com:443 TLS1.2 issuer \
             \"FortiGate CA\" (Fortinet SSL inspection), trusted only by this host"
        );
    }

    #[test]
    fn a_process_without_pid_and_an_unknown_verdict() {
        let mut ev = event();
        ev.verdict = "from_the_future".into();
        ev.process = Some(pb::Process {
            comm: "x".into(),
            ..pb::Process::default()
        });
        let l = line(&ev);
        assert_eq!(l.verdict, None);
        assert_eq!(l.process(), "x");
    }
}
