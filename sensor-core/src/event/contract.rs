//! The JSON contract: one flat object per event, its fields in this order. This is the form
//! `sensorctl analyze -o json`, `sensord --print json`, the JSON-lines export, the API's `json`
//! field and the journal all carry. Field names and their order are stable (the golden test over
//! the fixtures checks it byte for byte); new fields are added, never renamed.
//!
//! Reading it back ([`Deserialize`]) is for the journal, which stores events in this form.

use std::sync::Arc;

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    ser::{SerializeSeq, SerializeStruct},
};

use super::{
    Event, Handshake, Host, Interceptor, InterceptorGrade, Judgement, Process, Reason, Severity,
    Verdict,
};

/// The chain, each certificate as the JSON its summary keeps once made ([`JsonOnce`]): the
/// same bytes as serialising it, for serde_json's serializers (the only ones events go
/// through), which take a `RawValue` as it is.
///
/// [`JsonOnce`]: crate::x509::JsonOnce
struct Chain<'a>(&'a [Arc<crate::x509::CertSummary>]);

impl Serialize for Chain<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for cert in self.0 {
            match cert.json.get_or_make(cert) {
                Some(json) => seq.serialize_element(json)?,
                None => seq.serialize_element(&**cert)?,
            }
        }
        seq.end()
    }
}

/// Fields of the contract (the JA4+ ones only with that feature).
const FIELDS: usize = 54 + if cfg!(feature = "ja4plus") { 1 } else { 0 };

/// Where the contract's fields go, in order: a serde struct, or JSON written directly.
trait Fields {
    type Error;
    fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error>;
}

impl Event {
    /// Every field of the contract, in its order, to `f`.
    fn fields<F: Fields>(&self, f: &mut F) -> Result<(), F::Error> {
        let h = &self.handshake;
        let j = self.judgement.as_ref();
        f.field("time", &h.time)?;
        f.field("end_time", &h.end_time)?;
        f.field("src_addr", &h.src_addr)?;
        f.field("src_port", &h.src_port)?;
        f.field("dst_addr", &h.dst_addr)?;
        f.field("dst_port", &h.dst_port)?;
        f.field("server_name", &h.server_name)?;
        f.field("tls_version", &h.tls_version)?;
        f.field("alpn", &h.alpn)?;
        f.field("client_alpn", &h.client_alpn)?;
        f.field("cipher", &h.cipher)?;
        f.field("key_exchange", &h.key_exchange)?;
        f.field("ja3", &h.ja3)?;
        f.field("ja3_string", &h.ja3_string)?;
        f.field("ja3s", &h.ja3s)?;
        f.field("ja4", &h.ja4)?;
        #[cfg(feature = "ja4plus")]
        f.field("ja4s", &h.ja4s)?;
        f.field("ocsp_staple", &h.ocsp_staple)?;
        f.field("hello_retry_request", &h.hello_retry_request)?;
        f.field("chain", &Chain(&h.chain))?;
        f.field("chain_source", &h.chain_source)?;
        f.field("client_certificate", &h.client_certificate)?;
        f.field("resumption_offered", &h.resumption_offered)?;
        f.field("client_outcome", &h.client_outcome)?;
        f.field("alert", &h.alert)?;
        f.field("alerts", &h.alerts)?;
        f.field("proxy_connect", &h.proxy_connect)?;
        f.field(
            "server_encrypted_flight_bytes",
            &h.server_encrypted_flight_bytes,
        )?;
        f.field(
            "client_encrypted_flight_bytes",
            &h.client_encrypted_flight_bytes,
        )?;
        f.field("change_cipher_spec", &h.change_cipher_spec)?;
        f.field("first_application_data", &h.first_application_data)?;
        f.field("encrypted_alerts", &h.encrypted_alerts)?;
        f.field("verdict", &j.map(|j| j.verdict))?;
        f.field("reasons", j.map_or(&[][..], |j| &j.reasons))?;
        f.field("severity", &j.map(|j| j.severity))?;
        f.field("explanation", &j.map(|j| &j.explanation))?;
        f.field("interceptor", &j.and_then(|j| j.interceptor.as_ref()))?;
        f.field("process", &self.process)?;
        f.field("socket_cookie", &h.socket_cookie)?;
        f.field("server_socket_cookie", &h.server_socket_cookie)?;
        f.field("malformed", &h.malformed)?;
        // Fields added after the contract was recorded (tests/fixtures/golden) go here.
        f.field("capture_incomplete", &h.capture_incomplete)?;
        f.field("wire_chain_sha256", &h.wire_chain_sha256)?;
        f.field("proxy_user_agent", &h.proxy_user_agent)?;
        f.field(
            "extra_certificates",
            j.map_or(&[][..], |j| &j.extra_certificates),
        )?;
        f.field(
            "interceptor_grade",
            &j.and_then(|j| j.interceptor_grade.as_ref()),
        )?;
        f.field("resumed", &h.resumed)?;
        f.field("idle_after_handshake", &h.idle_after_handshake)?;
        f.field("request", &h.request)?;
        f.field("client_certificate_sha256", &h.client_certificate_sha256)?;
        f.field("transport", &h.transport)?;
        f.field("quic", &h.quic)?;
        f.field("quic_unanswered", &h.quic_unanswered)?;
        f.field("client_certificate_leaf", &h.client_certificate_leaf)?;
        // Only events a daemon recorded have a host; offline analysis leaves the field out.
        if let Some(host) = &self.host {
            f.field("host", host)?;
        }
        Ok(())
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Struct<M>(M);
        impl<M: SerializeStruct> Fields for Struct<M> {
            type Error = M::Error;
            fn field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), M::Error> {
                self.0.serialize_field(key, value)
            }
        }
        let mut m = Struct(s.serialize_struct("Event", FIELDS)?);
        self.fields(&mut m)?;
        m.0.end()
    }
}

/// The contract's fields, read back in any order.
#[derive(Deserialize)]
struct Stored {
    #[serde(flatten)]
    handshake: Handshake,
    verdict: Option<Verdict>,
    #[serde(default)]
    reasons: Vec<Reason>,
    severity: Option<Severity>,
    explanation: Option<String>,
    interceptor: Option<Interceptor>,
    process: Option<Process>,
    #[serde(default)]
    extra_certificates: Vec<String>,
    interceptor_grade: Option<InterceptorGrade>,
    host: Option<Host>,
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Stored::deserialize(d)?;
        let judgement = match (s.verdict, s.severity) {
            (Some(verdict), Some(severity)) => Some(Judgement {
                verdict,
                reasons: s.reasons,
                severity,
                explanation: s.explanation.unwrap_or_default(),
                interceptor: s.interceptor,
                extra_certificates: s.extra_certificates,
                interceptor_grade: s.interceptor_grade,
            }),
            _ => None,
        };
        Ok(Event {
            handshake: s.handshake,
            process: s.process,
            judgement,
            host: s.host.map(std::sync::Arc::new),
        })
    }
}

impl Event {
    /// The JSON contract of this event, on one line.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(2048);
        self.write_json(&mut out);
        // serde_json writes UTF-8, and so do the field names.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Append the JSON contract of this event to `out`, on one line: the same bytes as
    /// serialising it with serde_json, faster. The field names are written as they are (they
    /// need no escaping); each value goes through serde_json.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        struct Direct<'a> {
            out: &'a mut Vec<u8>,
            first: bool,
        }
        impl Fields for Direct<'_> {
            type Error = serde_json::Error;
            fn field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), serde_json::Error> {
                debug_assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
                if !std::mem::take(&mut self.first) {
                    self.out.push(b',');
                }
                self.out.push(b'"');
                self.out.extend_from_slice(key.as_bytes());
                self.out.extend_from_slice(b"\":");
                serde_json::to_writer(&mut *self.out, value)
            }
        }
        out.push(b'{');
        let mut direct = Direct { out, first: true };
        // Serialising these types into memory cannot fail: every map key is a string.
        let _ = self.fields(&mut direct);
        direct.out.push(b'}');
    }
}

#[cfg(all(test, not(feature = "ja4plus")))]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{
        Alert, ByDirection, CaptureLoss, ChainSource, ClientOutcome, Malformed, OcspStaple,
        ProbeFailure, Rejection, Role, Side, SideAlert, Timestamp, TlsVersion,
    };

    /// Every field filled in, as the version before the typed event serialised it (recorded
    /// from that version): the order and spelling of every field, nested ones included.
    const RECORDED: &str = r#"{"time":"2023-11-14T22:13:20.123456789Z","end_time":"2023-11-14T22:13:21Z","src_addr":"10.0.0.1","src_port":40000,"dst_addr":"2001:db8::1","dst_port":443,"server_name":"a.test","tls_version":"1.3","alpn":"h2","client_alpn":["h2","http/1.1"],"cipher":"TLS_AES_128_GCM_SHA256","key_exchange":"x25519","ja3":"j3","ja3_string":"771,1-2","ja3s":"j3s","ja4":"t13d","ocsp_staple":{"status_type":1,"len":5,"sha256":"ab"},"hello_retry_request":true,"chain":[],"chain_source":"probe","client_certificate":true,"resumption_offered":true,"client_outcome":"rejected","alert":{"level":"fatal","description":"unknown_ca","code":48},"alerts":[{"from":"client","level":"fatal","description":"unknown_ca","code":48},{"from":"server","level":"warning","description":"close_notify","code":0}],"proxy_connect":"a.test:443","server_encrypted_flight_bytes":4000,"client_encrypted_flight_bytes":74,"change_cipher_spec":{"client":true,"server":false},"first_application_data":{"client":null,"server":"2023-11-14T22:13:20.5Z"},"encrypted_alerts":{"client":1,"server":0},"verdict":"intercepted","reasons":["local_root","known_interceptor:mitmproxy","client_rejected:unknown_ca","probe_failed:timeout"],"severity":"high","explanation":"a \"quoted\" explanation","interceptor":{"id":"mitmproxy","name":"mitmproxy"},"process":{"pid":42,"comm":"curl","uid":1000,"exe":"/usr/bin/curl","cgroup":"/user.slice","container_id":"abc","role":"client"},"socket_cookie":7,"server_socket_cookie":8,"malformed":["record_too_long"]}"#;

    fn full() -> Event {
        let fatal = Alert::from_wire(2, 48);
        Event {
            handshake: Handshake {
                time: Timestamp(1_700_000_000_123_456_789),
                end_time: Timestamp(1_700_000_001_000_000_000),
                src_addr: Some("10.0.0.1".parse().unwrap()),
                src_port: 40000,
                dst_addr: Some("2001:db8::1".parse().unwrap()),
                dst_port: 443,
                server_name: Some("a.test".into()),
                tls_version: Some(TlsVersion::Tls13),
                alpn: Some("h2".into()),
                client_alpn: vec!["h2".into(), "http/1.1".into()],
                cipher: Some("TLS_AES_128_GCM_SHA256".into()),
                key_exchange: Some("x25519".into()),
                ja3: Some("j3".into()),
                ja3_string: Some("771,1-2".into()),
                ja3s: Some("j3s".into()),
                ja4: Some("t13d".into()),
                ocsp_staple: Some(OcspStaple {
                    status_type: 1,
                    len: 5,
                    sha256: "ab".into(),
                }),
                hello_retry_request: true,
                chain: Vec::<Arc<_>>::new(),
                chain_source: Some(ChainSource::Probe),
                client_certificate: true,
                resumption_offered: true,
                client_outcome: ClientOutcome::Rejected,
                alert: Some(fatal),
                alerts: vec![
                    SideAlert {
                        from: Side::Client,
                        alert: fatal,
                    },
                    SideAlert {
                        from: Side::Server,
                        alert: Alert::from_wire(1, 0),
                    },
                ],
                proxy_connect: Some("a.test:443".into()),
                server_encrypted_flight_bytes: Some(4000),
                client_encrypted_flight_bytes: Some(74),
                change_cipher_spec: ByDirection {
                    client: true,
                    server: false,
                },
                first_application_data: ByDirection {
                    client: None,
                    server: Some(Timestamp(1_700_000_000_500_000_000)),
                },
                encrypted_alerts: ByDirection {
                    client: 1,
                    server: 0,
                },
                socket_cookie: Some(7),
                server_socket_cookie: Some(8),
                malformed: vec![Malformed::HandshakeTooLarge],
                capture_incomplete: vec![CaptureLoss::Gap],
                wire_chain_sha256: vec!["cd".into()],
                proxy_user_agent: Some("curl/7.88.1".into()),
                ..Handshake::default()
            },
            process: Some(Process {
                pid: Some(42),
                comm: Some("curl".into()),
                uid: Some(1000),
                exe: Some("/usr/bin/curl".into()),
                cgroup: Some("/user.slice".into()),
                container_id: Some("abc".into()),
                role: Role::Client,
                container: None,
            }),
            judgement: Some(Judgement {
                verdict: Verdict::Intercepted,
                reasons: vec![
                    Reason::LocalRoot,
                    Reason::KnownInterceptor("mitmproxy".into()),
                    Reason::ClientRejected(Rejection::Alert(48)),
                    Reason::ProbeFailed(ProbeFailure::Timeout),
                ],
                severity: Severity::High,
                explanation: "a \"quoted\" explanation".into(),
                interceptor: Some(Interceptor {
                    id: "mitmproxy".into(),
                    name: "mitmproxy".into(),
                }),
                extra_certificates: vec!["ef".into()],
                interceptor_grade: Some(InterceptorGrade::of(vec![
                    crate::event::GradeReason::NoAead,
                    crate::event::GradeReason::TripleDes,
                ])),
            }),
            host: Some(Arc::new(Host {
                id: Some("0123456789abcdef0123456789abcdef".into()),
                name: Some("web-1".into()),
                labels: [("site".to_owned(), "fra1".to_owned())].into(),
                ..Host::default()
            })),
        }
    }

    /// The direct writer gives serde_json's bytes: a full event, one with nothing judged or
    /// hosted, and one whose strings need escaping.
    #[test]
    fn written_directly_the_same_bytes_as_through_serde() {
        let mut escaped = full();
        escaped.handshake.server_name = Some("a\"b\\c\u{1}\u{7f}é".into());
        let mut bare = full();
        bare.judgement = None;
        bare.host = None;
        for event in [full(), bare, escaped] {
            let mut direct = b"kept".to_vec();
            event.write_json(&mut direct);
            let serde = serde_json::to_vec(&event).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&direct[4..]),
                String::from_utf8_lossy(&serde)
            );
            assert_eq!(event.to_json().as_bytes(), &serde[..]);
        }
    }

    #[test]
    fn a_chain_writes_the_same_json_from_its_summaries_cache() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "a \"quoted\" name\u{1}");
        let cert = params.self_signed(&key).unwrap();
        let summary = Arc::new(crate::x509::summarize(cert.der()).unwrap());
        let mut event = full();
        event.handshake.chain = vec![summary.clone(), summary.clone()];
        let plain = serde_json::to_string(&*summary).unwrap();
        let first = serde_json::to_string(&event).unwrap();
        assert!(
            first.contains(&format!(r#""chain":[{plain},{plain}]"#)),
            "{first}"
        );
        // Written again from the kept JSON, the same bytes; also through serde_json's Value.
        assert_eq!(serde_json::to_string(&event).unwrap(), first);
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            serde_json::from_str::<serde_json::Value>(&first).unwrap()
        );
        // A summary whose JSON is too large to keep is written afresh, the same way.
        let mut big = (*summary).clone();
        big.san = (0..1000).map(|i| format!("n{i}.\u{1}.test")).collect();
        let big = Arc::new(big);
        let alone = serde_json::to_string(&*big).unwrap();
        assert!(alone.len() > crate::x509::MAX_KEPT_JSON);
        assert!(big.json.get_or_make(&big).is_none());
        event.handshake.chain = vec![big.clone(), summary.clone()];
        let both = serde_json::to_string(&event).unwrap();
        assert!(
            both.contains(&format!(r#""chain":[{alone},{plain}]"#)),
            "{both}"
        );
        // A changed copy does not keep the original's JSON.
        let mut changed = (*summary).clone();
        changed.subject = "CN=other".into();
        assert!(
            serde_json::to_string(&changed)
                .unwrap()
                .contains("CN=other")
        );
        event.handshake.chain = vec![Arc::new(changed)];
        assert!(serde_json::to_string(&event).unwrap().contains("CN=other"));
    }

    #[test]
    fn every_field_is_where_the_contract_puts_it() {
        // The recorded line used a malformed name the engine never produced; the contract's
        // names are the enum's now.
        let recorded = RECORDED.replace("record_too_long", "handshake_too_large");
        let json = full().to_json();
        let added = json
            .strip_prefix(recorded.strip_suffix('}').unwrap())
            .expect("the recorded fields first, unchanged");
        assert_eq!(
            added,
            r#","capture_incomplete":["gap"],"wire_chain_sha256":["cd"],"proxy_user_agent":"curl/7.88.1","extra_certificates":["ef"],"interceptor_grade":{"grade":"C","reasons":["3des","no_aead"]},"resumed":false,"idle_after_handshake":false,"request":null,"client_certificate_sha256":null,"transport":"tcp","quic":null,"quic_unanswered":false,"client_certificate_leaf":null,"host":{"id":"0123456789abcdef0123456789abcdef","name":"web-1","boot_id":null,"os_id":null,"os_name":null,"os_version":null,"kernel":null,"architecture":null,"sensor_version":null,"sensor_commit":null,"labels":{"site":"fra1"}}}"#
        );
    }

    #[test]
    fn the_journal_reads_back_what_it_wrote() {
        let e = full();
        let back: Event = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(back, e);
        let bare = Event::observed(Handshake {
            dst_port: 443,
            ..Handshake::default()
        });
        let json = bare.to_json();
        assert!(
            json.contains(r#""verdict":null,"reasons":[],"severity":null"#),
            "{json}"
        );
        assert!(
            !json.contains("\"host\""),
            "offline events have no host: {json}"
        );
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), bare);
    }
}
