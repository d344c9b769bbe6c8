//! Verdicts and reasons on certificates made with rcgen. (Certificates made by openssl and by
//! the interceptors themselves are checked in tests/tests/verdict.rs.)

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair,
};
use time::{Duration as TDuration, OffsetDateTime};

use super::*;
use crate::{
    event::{CaptureLoss, Handshake, Timestamp, TlsVersion},
    trust::{Approved, Catalogue, Pins, Store, TrustContext},
    x509::summarize,
};

const NOW: i64 = 1_790_000_000; // 2026-09-21

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(NOW).unwrap()
}

/// A CA: its certificate's DER and an issuer to sign with.
struct Ca {
    der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    key_pem: String,
}

fn ca_params(cn: &str, o: Option<&str>) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(o) = o {
        dn.push(DnType::OrganizationName, o);
    }
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.not_before = now() - TDuration::days(400);
    p.not_after = now() + TDuration::days(3000);
    p
}

fn make_root(cn: &str, o: Option<&str>) -> Ca {
    let key = KeyPair::generate().unwrap();
    let params = ca_params(cn, o);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        der: cert.der().to_vec(),
        key_pem: key.serialize_pem(),
        issuer: Issuer::new(params, key),
    }
}

fn intermediate(cn: &str, parent: &Ca) -> Ca {
    let key = KeyPair::generate().unwrap();
    let params = ca_params(cn, None);
    let cert = params.signed_by(&key, &parent.issuer).unwrap();
    Ca {
        der: cert.der().to_vec(),
        key_pem: key.serialize_pem(),
        issuer: Issuer::new(params, key),
    }
}

struct LeafSpec<'a> {
    names: &'a [&'a str],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    eku: Vec<ExtendedKeyUsagePurpose>,
    /// Sign with this key instead of a fresh one (the mitmproxy trait: the CA's own key).
    key_pem: Option<&'a str>,
}

impl Default for LeafSpec<'_> {
    fn default() -> Self {
        Self {
            names: &["www.example.test"],
            not_before: now() - TDuration::days(30),
            not_after: now() + TDuration::days(60),
            eku: vec![ExtendedKeyUsagePurpose::ServerAuth],
            key_pem: None,
        }
    }
}

fn leaf(spec: LeafSpec<'_>, issuer: Option<&Ca>) -> Vec<u8> {
    let names: Vec<String> = spec.names.iter().map(|s| (*s).to_owned()).collect();
    let mut p = CertificateParams::new(names).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, spec.names[0]);
    p.distinguished_name = dn;
    p.not_before = spec.not_before;
    p.not_after = spec.not_after;
    p.extended_key_usages = spec.eku;
    let key = match spec.key_pem {
        Some(pem) => KeyPair::from_pem(pem).unwrap(),
        None => KeyPair::generate().unwrap(),
    };
    match issuer {
        Some(ca) => p.signed_by(&key, &ca.issuer).unwrap().der().to_vec(),
        None => p.self_signed(&key).unwrap().der().to_vec(),
    }
}

fn store(name: &'static str, ders: &[&[u8]], sct: bool) -> Arc<Store> {
    let certs: Vec<rustls_pki_types::CertificateDer<'_>> = ders
        .iter()
        .map(|d| rustls_pki_types::CertificateDer::from(*d))
        .collect();
    let (s, bad) = Store::from_certificates(name, format!("test {name} store"), &certs, sct);
    assert!(bad.is_empty(), "{bad:?}");
    Arc::new(s)
}

fn context(host: &[&[u8]], public: &[&[u8]]) -> TrustContext {
    TrustContext {
        generation: 1,
        host: store("host", host, false),
        public: store("public", public, false),
        pins: Pins::default(),
        catalogue: Arc::new(Catalogue::builtin()),
        approved: Vec::new(),
    }
}

fn chain(ders: &[&[u8]]) -> Vec<Arc<CertSummary>> {
    ders.iter()
        .map(|d| Arc::new(summarize(d).unwrap()))
        .collect()
}

fn facts<'a>(chain: &'a [Arc<CertSummary>], sni: &'a str) -> Facts<'a> {
    Facts {
        chain,
        server_name: Some(sni),
        time_ns: NOW as u64 * 1_000_000_000,
        ..Facts::default()
    }
}

fn judge(ctx: TrustContext, f: &Facts<'_>) -> Judgement {
    VerdictEngine::new(Arc::new(ctx)).judge(f)
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn reasons(v: &Judgement) -> Vec<String> {
    v.reasons.iter().map(Reason::to_string).collect()
}

/// Judge a handshake as the daemon does, with the baseline.
fn apply(engine: &mut VerdictEngine, hs: Handshake) -> Judgement {
    let mut event = Event::observed(hs);
    engine.apply(&mut event);
    event.judgement.expect("judged")
}

/// A public-style hierarchy: root, intermediate, leaf for www.example.test.
struct Public {
    root: Ca,
    inter: Ca,
    leaf: Vec<u8>,
}

fn public() -> Public {
    let root = make_root("Test Public Root", Some("Test PKI"));
    let inter = intermediate("Test Public Issuing CA", &root);
    let leaf = leaf(LeafSpec::default(), Some(&inter));
    Public { root, inter, leaf }
}

#[test]
fn a_public_chain_is_clean() {
    let p = public();
    let c = chain(&[&p.leaf, &p.inter.der]);
    let v = judge(
        context(&[&p.root.der], &[&p.root.der]),
        &facts(&c, "www.example.test"),
    );
    assert_eq!(v.verdict, Verdict::Clean, "{v:?}");
    assert_eq!(reasons(&v), ["public_root"]);
    assert_eq!(v.severity, Severity::Info);
    assert!(
        v.explanation.contains("Test Public Issuing CA"),
        "{}",
        v.explanation
    );
}

#[test]
fn clean_chains_of_many_shapes_are_never_flagged() {
    // Two intermediates.
    let root = make_root("Deep Root", None);
    let i1 = intermediate("Deep Policy CA", &root);
    let i2 = intermediate("Deep Issuing CA", &i1);
    let l = leaf(LeafSpec::default(), Some(&i2));
    let c = chain(&[&l, &i2.der, &i1.der]);
    let v = judge(
        context(&[&root.der], &[&root.der]),
        &facts(&c, "www.example.test"),
    );
    assert_eq!(
        (v.verdict, reasons(&v)),
        (Verdict::Clean, strs(&["public_root"]))
    );

    // Cross-signed: the server sends the bridge; either root validates.
    // The new root (self-signed), and the same subject and key cross-signed by the old root.
    let old = make_root("Old Root", None);
    let new = make_root("New Root", None);
    let cross = ca_params("New Root", None)
        .signed_by(&KeyPair::from_pem(&new.key_pem).unwrap(), &old.issuer)
        .unwrap()
        .der()
        .to_vec();
    let issuing = intermediate("Cross Issuing CA", &new);
    let l = leaf(LeafSpec::default(), Some(&issuing));
    let c = chain(&[&l, &issuing.der, &cross]);
    for anchor in [&old.der, &new.der] {
        let v = judge(
            context(&[anchor], &[anchor]),
            &facts(&c, "www.example.test"),
        );
        assert_eq!(v.verdict, Verdict::Clean, "{v:?}");
    }

    // A wildcard name, and an IP address without SNI.
    let p = public();
    let wild = leaf(
        LeafSpec {
            names: &["*.example.test", "192.0.2.7"],
            ..LeafSpec::default()
        },
        Some(&p.inter),
    );
    let c = chain(&[&wild, &p.inter.der]);
    let ctx = || context(&[&p.root.der], &[&p.root.der]);
    assert_eq!(
        judge(ctx(), &facts(&c, "api.example.test")).verdict,
        Verdict::Clean
    );
    let no_sni = Facts {
        server_name: None,
        dst_addr: Some("192.0.2.7".parse().unwrap()),
        ..facts(&c, "")
    };
    assert_eq!(judge(ctx(), &no_sni).verdict, Verdict::Clean);
}

#[test]
fn a_chain_only_the_host_trusts_is_intercepted() {
    let p = public();
    let corp = make_root("Corp Inspection CA", Some("Example Corp"));
    let forged = leaf(LeafSpec::default(), Some(&corp));
    let c = chain(&[&forged]);
    let v = judge(
        context(&[&p.root.der, &corp.der], &[&p.root.der]),
        &facts(&c, "www.example.test"),
    );
    assert_eq!(v.verdict, Verdict::Intercepted, "{v:?}");
    assert_eq!(reasons(&v), ["local_root"]);
    assert_eq!(v.severity, Severity::High);
    assert!(
        v.explanation.contains("Corp Inspection CA"),
        "{}",
        v.explanation
    );
    assert!(
        v.explanation.contains("only this host trusts"),
        "{}",
        v.explanation
    );
}

#[test]
fn a_known_product_is_named_whether_trusted_or_not() {
    let p = public();
    let forti = make_root("FortiGate CA", Some("Fortinet"));
    let forged = leaf(LeafSpec::default(), Some(&forti));
    let c = chain(&[&forged, &forti.der]);
    let trusted = judge(
        context(&[&p.root.der, &forti.der], &[&p.root.der]),
        &facts(&c, "www.example.test"),
    );
    assert_eq!(trusted.verdict, Verdict::Intercepted);
    assert_eq!(
        reasons(&trusted),
        ["local_root", "known_interceptor:fortinet"]
    );
    assert!(
        trusted
            .explanation
            .contains("Fortinet FortiGate SSL inspection")
    );

    let mut f = facts(&c, "www.example.test");
    f.client_outcome = ClientOutcome::Rejected;
    f.client_alert = Some(Alert::from_wire(2, 48));
    let untrusted = judge(context(&[&p.root.der], &[&p.root.der]), &f);
    assert_eq!(untrusted.verdict, Verdict::Untrusted);
    assert_eq!(
        reasons(&untrusted),
        [
            "known_interceptor:fortinet",
            "unknown_issuer",
            "client_rejected:unknown_ca"
        ]
    );
    assert_eq!(untrusted.severity, Severity::High);
    assert!(
        untrusted.explanation.contains("rejected it (unknown_ca)"),
        "{}",
        untrusted.explanation
    );
}

#[test]
fn approved_inspection_is_intercepted_with_low_severity() {
    let p = public();
    let corp = make_root("Corp Inspection CA", Some("Example Corp"));
    let forged = leaf(LeafSpec::default(), Some(&corp));
    let c = chain(&[&forged]);
    let corp_pin = summarize(&corp.der).unwrap().spki_sha256;
    for approved in [
        Approved::Spki(corp_pin),
        Approved::Subject("CN=Corp Inspection CA, O=Example Corp".into()),
    ] {
        let mut ctx = context(&[&p.root.der, &corp.der], &[&p.root.der]);
        ctx.approved = vec![approved];
        let v = judge(ctx, &facts(&c, "www.example.test"));
        assert_eq!(v.verdict, Verdict::Intercepted);
        assert_eq!(reasons(&v), ["local_root", "approved_inspection"]);
        assert_eq!(v.severity, Severity::Low);
    }
}

#[test]
fn a_failed_pin_on_a_public_chain_is_a_pin_mismatch() {
    let p = public();
    let c = chain(&[&p.leaf, &p.inter.der]);
    let other = "YLh1dUR9y6Kja30RrAn7JKnbQG/uEtLMkBgFF2Fuihg=";
    for report_only in [false, true] {
        let text = format!(
            "[[pin]]\nhost = \"*.example.test\"\nspki = [\"{other}\"]\nreport_only = {report_only}\n"
        );
        let mut ctx = context(&[&p.root.der], &[&p.root.der]);
        ctx.pins = Pins::parse(&text, "pins.toml").unwrap();
        let v = judge(ctx, &facts(&c, "www.example.test"));
        if report_only {
            assert_eq!((v.verdict, v.severity), (Verdict::Clean, Severity::Medium));
        } else {
            assert_eq!(
                (v.verdict, v.severity),
                (Verdict::PinMismatch, Severity::Critical)
            );
        }
        assert_eq!(reasons(&v), ["public_root", "pin_mismatch"]);
        assert!(v.explanation.contains("pins.toml:1"), "{}", v.explanation);
    }
    // The intermediate's key is pinned: the pin passes.
    let inter_pin = summarize(&p.inter.der).unwrap().spki_sha256;
    let mut ctx = context(&[&p.root.der], &[&p.root.der]);
    ctx.pins = Pins::parse(
        &format!("[[pin]]\nhost = \"www.example.test\"\nspki = [\"{inter_pin}\"]\n"),
        "pins.toml",
    )
    .unwrap();
    assert_eq!(
        judge(ctx, &facts(&c, "www.example.test")).verdict,
        Verdict::Clean
    );
}

#[test]
fn names_dates_self_signing_and_eku() {
    let p = public();
    let ctx = || context(&[&p.root.der], &[&p.root.der]);
    let c = chain(&[&p.leaf, &p.inter.der]);
    let v = judge(ctx(), &facts(&c, "other.test"));
    assert_eq!(
        (v.verdict, reasons(&v)),
        (Verdict::Untrusted, strs(&["hostname_mismatch"]))
    );

    let expired = leaf(
        LeafSpec {
            not_before: now() - TDuration::days(100),
            not_after: now() - TDuration::days(1),
            ..LeafSpec::default()
        },
        Some(&p.inter),
    );
    let c = chain(&[&expired, &p.inter.der]);
    let v = judge(ctx(), &facts(&c, "www.example.test"));
    assert_eq!(
        (v.verdict, reasons(&v)),
        (Verdict::Untrusted, strs(&["expired"]))
    );

    let future = leaf(
        LeafSpec {
            not_before: now() + TDuration::days(1),
            not_after: now() + TDuration::days(100),
            ..LeafSpec::default()
        },
        Some(&p.inter),
    );
    let c = chain(&[&future, &p.inter.der]);
    let v = judge(ctx(), &facts(&c, "www.example.test"));
    assert_eq!(
        (v.verdict, reasons(&v)),
        (Verdict::Untrusted, strs(&["not_yet_valid"]))
    );

    let selfsigned = leaf(LeafSpec::default(), None);
    let c = chain(&[&selfsigned]);
    let accepted = Facts {
        client_outcome: ClientOutcome::Completed,
        ..facts(&c, "www.example.test")
    };
    let v = judge(ctx(), &accepted);
    assert_eq!(
        (v.verdict, reasons(&v)),
        (
            Verdict::Untrusted,
            strs(&["unknown_issuer", "self_signed", "client_accepted_untrusted"])
        )
    );
    assert_eq!(v.severity, Severity::Critical);
    assert!(v.explanation.contains("does not check certificates"));

    let client_only = leaf(
        LeafSpec {
            eku: vec![ExtendedKeyUsagePurpose::ClientAuth],
            ..LeafSpec::default()
        },
        Some(&p.inter),
    );
    let c = chain(&[&client_only, &p.inter.der]);
    let v = judge(ctx(), &facts(&c, "www.example.test"));
    assert_eq!(
        (v.verdict, reasons(&v)),
        (Verdict::Untrusted, strs(&["no_server_auth_eku"]))
    );
}

#[test]
fn forged_leaf_traits() {
    let p = public();
    // mitmproxy's way: the leaf reuses its CA's key, and is backdated two days.
    let mitm = make_root("mitmproxy", Some("mitmproxy"));
    let forged = leaf(
        LeafSpec {
            not_before: now() - TDuration::days(2),
            key_pem: Some(&mitm.key_pem),
            ..LeafSpec::default()
        },
        Some(&mitm),
    );
    let c = chain(&[&forged]);
    let v = judge(
        context(&[&p.root.der, &mitm.der], &[&p.root.der]),
        &facts(&c, "www.example.test"),
    );
    assert_eq!(v.verdict, Verdict::Intercepted);
    assert_eq!(
        reasons(&v),
        [
            "local_root",
            "known_interceptor:mitmproxy",
            "forged_leaf_traits"
        ]
    );
    assert!(
        v.explanation.contains("its key is its issuer's key"),
        "{}",
        v.explanation
    );
    assert!(
        v.explanation.contains("a day or more before"),
        "{}",
        v.explanation
    );
}

#[test]
fn missing_scts_on_a_web_pki_chain() {
    let p = public();
    let c = chain(&[&p.leaf, &p.inter.der]);
    let mut ctx = context(&[&p.root.der], &[&p.root.der]);
    ctx.public = store("public", &[&p.root.der], true);
    let v = judge(ctx, &facts(&c, "www.example.test"));
    assert_eq!((v.verdict, v.severity), (Verdict::Clean, Severity::Low));
    assert_eq!(reasons(&v), ["public_root", "missing_sct"]);
}

#[test]
fn without_a_chain_the_verdict_is_unverified_and_the_alert_is_kept() {
    let ctx = context(&[], &[]);
    let mut f = facts(&[], "hidden.test");
    let v = judge(ctx.clone(), &f);
    assert_eq!(
        (v.verdict, reasons(&v)),
        (Verdict::Unverified, strs(&["certificate_not_visible"]))
    );
    f.client_alert = Some(Alert::from_wire(2, 48));
    let v = judge(ctx, &f);
    assert_eq!(
        reasons(&v),
        ["certificate_not_visible", "client_rejected:unknown_ca"]
    );
    assert_eq!(v.severity, Severity::Medium);
}

#[test]
fn a_new_issuer_for_a_known_server_is_a_baseline_change() {
    let p = public();
    let mut engine = VerdictEngine::new(Arc::new(context(&[&p.root.der], &[&p.root.der])));
    let hs = |chain: Vec<Arc<CertSummary>>| Handshake {
        time: Timestamp(NOW as u64 * 1_000_000_000),
        server_name: Some("www.example.test".into()),
        dst_addr: Some("192.0.2.1".parse().unwrap()),
        dst_port: 443,
        chain,
        client_outcome: ClientOutcome::Completed,
        ..Handshake::default()
    };
    let first = apply(&mut engine, hs(chain(&[&p.leaf, &p.inter.der])));
    assert_eq!(
        (first.verdict, reasons(&first)),
        (Verdict::Clean, vec!["public_root".to_owned()])
    );
    // The server moves to another public issuing CA.
    let inter2 = intermediate("Test Public Issuing CA 2", &p.root);
    let moved = leaf(LeafSpec::default(), Some(&inter2));
    let second = apply(&mut engine, hs(chain(&[&moved, &inter2.der])));
    assert_eq!(second.verdict, Verdict::Clean);
    assert_eq!(reasons(&second), ["public_root", "baseline_changed"]);
    assert_eq!(second.severity, Severity::Low);
}

#[test]
fn tls13_server_changes_are_reasons_without_a_chain() {
    let mut engine = VerdictEngine::new(Arc::new(context(&[], &[])));
    let hs = |addr: &str, ja3s: &str, flight: u64| Handshake {
        time: Timestamp(NOW as u64 * 1_000_000_000),
        server_name: Some("tls13.example.test".into()),
        dst_addr: Some(addr.parse().unwrap()),
        dst_port: 443,
        tls_version: Some(TlsVersion::Tls13),
        ja4: Some("t13d1516h2_8daaf6152771_e5627efa2ab1".into()),
        ja3s: Some(ja3s.into()),
        server_encrypted_flight_bytes: Some(flight),
        client_outcome: ClientOutcome::Completed,
        ..Handshake::default()
    };
    let first = apply(&mut engine, hs("192.0.2.1", "aaaa", 4200));
    assert_eq!(reasons(&first), ["certificate_not_visible"]);
    // Another address of the same name, the same server: nothing new.
    let same = apply(&mut engine, hs("192.0.2.2", "aaaa", 4300));
    assert_eq!(reasons(&same), ["certificate_not_visible"]);
    assert_eq!(same.severity, Severity::Info);
    // A flight a third smaller.
    let smaller = apply(&mut engine, hs("192.0.2.1", "aaaa", 2900));
    assert_eq!(
        reasons(&smaller),
        ["certificate_not_visible", "server_flight_size_changed"]
    );
    assert_eq!(smaller.severity, Severity::Low);
    // A flagged handshake teaches nothing: the same again is flagged again.
    let again = apply(&mut engine, hs("192.0.2.1", "aaaa", 2900));
    assert_eq!(reasons(&again), reasons(&smaller));
    // Another kind of client gets another answer from the same server: not a change.
    let mut other = hs("192.0.2.1", "cccc", 2500);
    other.ja4 = Some("t12d280700_d943125447b4_e7e480e5a997".into());
    assert_eq!(
        reasons(&apply(&mut engine, other)),
        ["certificate_not_visible"]
    );
    // Another ServerHello and another size: both.
    let both = apply(&mut engine, hs("192.0.2.1", "bbbb", 9000));
    assert_eq!(
        reasons(&both),
        [
            "certificate_not_visible",
            "server_fingerprint_changed",
            "server_flight_size_changed"
        ]
    );
    assert_eq!(both.severity, Severity::Medium);
    assert!(both.explanation.contains("answered unlike before"));
}

#[test]
fn a_repeated_chain_is_a_cache_hit_with_the_same_verdict() {
    let p = public();
    let c = chain(&[&p.leaf, &p.inter.der]);
    let mut engine = VerdictEngine::new(Arc::new(context(&[&p.root.der], &[&p.root.der])));
    let f = facts(&c, "www.example.test");
    let first = engine.judge(&f);
    let again = engine.judge(&f);
    assert_eq!(first, again);
    assert_eq!(engine.stats().cache_hits, 1);
    // Another name is another entry.
    engine.judge(&facts(&c, "other.test"));
    assert_eq!(engine.stats().cache_hits, 1);
}

#[test]
fn a_reload_that_changes_no_trust_input_keeps_the_cache() {
    let p = public();
    let c = chain(&[&p.leaf, &p.inter.der]);
    let in_force = Arc::new(context(&[&p.root.der], &[&p.root.der]));
    let mut engine = VerdictEngine::new(in_force.clone());
    let f = facts(&c, "www.example.test");
    engine.judge(&f);
    // The same inputs loaded again, with the next generation: the loader hands back the
    // context in force, and the cache answers.
    let reloaded = TrustContext {
        generation: 2,
        ..context(&[&p.root.der], &[&p.root.der])
    };
    assert!(reloaded.same_inputs(&in_force));
    engine.set_trust(in_force.clone());
    engine.judge(&f);
    assert_eq!(engine.stats().cache_hits, 1);
    // Other inputs (a pin): a new context, and the cache starts again.
    let mut pinned = context(&[&p.root.der], &[&p.root.der]);
    pinned.pins = Pins::parse(
        "[[pin]]\nhost = \"www.example.test\"\nspki = [\"YLh1dUR9y6Kja30RrAn7JKnbQG/uEtLMkBgFF2Fuihg=\"]\n",
        "pins.toml",
    )
    .unwrap();
    assert!(!pinned.same_inputs(&in_force));
    let other_store = context(&[&p.root.der], &[]);
    assert!(!other_store.same_inputs(&in_force));
    engine.set_trust(Arc::new(pinned));
    engine.judge(&f);
    assert_eq!(engine.stats().cache_hits, 1);
}

#[test]
fn a_rejection_with_an_encrypted_alert_is_named_as_such() {
    let mut engine = VerdictEngine::new(Arc::new(context(&[], &[])));
    let hs = Handshake {
        time: Timestamp(NOW as u64 * 1_000_000_000),
        server_name: Some("hidden-alert.example.test".into()),
        dst_port: 443,
        tls_version: Some(TlsVersion::Tls13),
        client_outcome: ClientOutcome::Rejected,
        ..Handshake::default()
    };
    let v = apply(&mut engine, hs);
    assert_eq!(
        reasons(&v),
        ["certificate_not_visible", "client_rejected:encrypted"]
    );
    assert_eq!(v.severity, Severity::Medium);
    let text = v.explanation;
    assert!(text.contains("TLS 1.3 encrypts"), "{text}");
}

#[test]
fn an_appended_pinned_ca_does_not_satisfy_the_pin() {
    // The pin names the real issuing CA. A man in the middle with a misissued public
    // certificate from another public CA appends the pinned CA's certificate: the path that
    // validates does not go through it, so the pin fails, and the extra certificate is named.
    let p = public();
    let rogue = intermediate("Other Public Issuing CA", &p.root);
    let misissued = leaf(LeafSpec::default(), Some(&rogue));
    let pinned = summarize(&p.inter.der).unwrap().spki_sha256;
    let text = format!("[[pin]]\nhost = \"www.example.test\"\nspki = [\"{pinned}\"]\n");
    let mut ctx = context(&[&p.root.der], &[&p.root.der]);
    ctx.pins = Pins::parse(&text, "pins.toml").unwrap();
    let c = chain(&[&misissued, &rogue.der, &p.inter.der]);
    let v = judge(ctx.clone(), &facts(&c, "www.example.test"));
    assert_eq!(
        (v.verdict, v.severity),
        (Verdict::PinMismatch, Severity::Critical)
    );
    assert_eq!(v.extra_certificates, [c[2].sha256.clone()]);
    // The real chain passes the same pin, with nothing extra.
    let real = chain(&[&p.leaf, &p.inter.der]);
    let v = judge(ctx, &facts(&real, "www.example.test"));
    assert_eq!(v.verdict, Verdict::Clean);
    assert!(v.extra_certificates.is_empty());
}

#[test]
fn an_appended_approved_ca_does_not_make_a_rogue_ca_approved() {
    // A rogue CA the host trusts signs the leaf; the organisation's approved inspection CA is
    // appended to the chain but is not on the path: this is interception, not the approved one.
    let p = public();
    let corp = make_root("Corp Inspection CA", Some("Example Corp"));
    let rogue = make_root("Rogue CA", None);
    let forged = leaf(LeafSpec::default(), Some(&rogue));
    let corp_pin = summarize(&corp.der).unwrap().spki_sha256;
    for approved in [
        Approved::Spki(corp_pin.clone()),
        Approved::Subject("CN=Corp Inspection CA, O=Example Corp".into()),
    ] {
        let mut ctx = context(&[&p.root.der, &corp.der, &rogue.der], &[&p.root.der]);
        ctx.approved = vec![approved];
        let c = chain(&[&forged, &corp.der]);
        let v = judge(ctx, &facts(&c, "www.example.test"));
        assert_eq!(v.verdict, Verdict::Intercepted);
        assert_eq!(reasons(&v), ["local_root"]);
        assert_eq!(v.severity, Severity::High);
        assert_eq!(v.extra_certificates, [c[1].sha256.clone()]);
    }
}

#[test]
fn an_intermediate_named_after_the_approved_ca_is_not_approved() {
    // Another CA the host trusts issues an intermediate with the approved CA's name: approval
    // by name holds for the host store's own CA, approval by key wherever it is.
    let p = public();
    let corp = make_root("Corp Inspection CA", Some("Example Corp"));
    let rogue = make_root("Rogue CA", None);
    let fake = intermediate("Corp Inspection CA", &rogue);
    let forged = leaf(LeafSpec::default(), Some(&fake));
    let c = chain(&[&forged, &fake.der]);
    let mut ctx = context(&[&p.root.der, &corp.der, &rogue.der], &[&p.root.der]);
    ctx.approved = vec![Approved::Subject(c[1].subject.clone())];
    let v = judge(ctx, &facts(&c, "www.example.test"));
    assert_eq!(v.verdict, Verdict::Intercepted);
    assert!(!reasons(&v).contains(&"approved_inspection".to_owned()));
    assert_eq!(v.severity, Severity::High);
    // The same intermediate approved by its key is approved.
    let mut ctx = context(&[&p.root.der, &corp.der, &rogue.der], &[&p.root.der]);
    ctx.approved = vec![Approved::Spki(c[1].spki_sha256.clone())];
    let v = judge(ctx, &facts(&c, "www.example.test"));
    assert!(reasons(&v).contains(&"approved_inspection".to_owned()));
}

#[test]
fn what_the_sensor_could_not_see_is_said_and_never_quiet() {
    let mut engine = VerdictEngine::new(Arc::new(context(&[], &[])));
    // TLS 1.2 and no chain because the byte budget ran out: not "TLS 1.3 encrypts it".
    let budget = [CaptureLoss::Budget];
    let f = Facts {
        server_name: Some("padded.example.test"),
        time_ns: NOW as u64 * 1_000_000_000,
        tls_version: Some(TlsVersion::Tls12),
        capture_incomplete: &budget,
        ..Facts::default()
    };
    let v = engine.judge(&f);
    assert_eq!(v.verdict, Verdict::Unverified);
    assert_eq!(reasons(&v), ["capture_incomplete:budget"]);
    assert_eq!(v.severity, Severity::Medium);
    assert!(!v.explanation.contains("TLS 1.3"), "{}", v.explanation);
    assert!(v.explanation.contains("byte budget"), "{}", v.explanation);
    // A clean chain seen, but the stream carried two versions of the same bytes.
    let p = public();
    let c = chain(&[&p.leaf, &p.inter.der]);
    let conflict = [CaptureLoss::Conflict];
    let mut engine = VerdictEngine::new(Arc::new(context(&[&p.root.der], &[&p.root.der])));
    let mut f = facts(&c, "www.example.test");
    f.capture_incomplete = &conflict;
    let v = engine.judge(&f);
    assert_eq!(v.verdict, Verdict::Unverified, "never clean");
    assert_eq!(reasons(&v), ["public_root", "stream_conflict"]);
    assert_eq!(v.severity, Severity::High);
    // A loss after the chain was seen whole does not change the verdict.
    let mut f = facts(&c, "www.example.test");
    f.capture_incomplete = &budget;
    let v = engine.judge(&f);
    assert_eq!(
        (v.verdict, reasons(&v)),
        (Verdict::Clean, strs(&["public_root"]))
    );
    // The client's library parsed another chain than the wire's: judged on the client's.
    let mut f = facts(&c, "www.example.test");
    f.chain_conflict = true;
    let v = engine.judge(&f);
    assert_eq!(reasons(&v), ["public_root", "chain_conflict"]);
    assert_eq!(v.severity, Severity::High);
    // Bytes lost and the probe's chain standing in: a valid chain for the probe says nothing
    // sure about what the client was shown (an interceptor may hide one and pass the other).
    let gap = [CaptureLoss::Gap];
    let mut f = facts(&c, "www.example.test");
    f.capture_incomplete = &gap;
    f.chain_source = Some(ChainSource::Probe);
    let v = engine.judge(&f);
    assert_eq!(v.verdict, Verdict::Unverified, "never clean");
    assert_eq!(reasons(&v), ["public_root", "capture_incomplete:gap"]);
    assert_eq!(v.severity, Severity::Medium);
    // The same loss with the client's own chain (uprobe): what it parsed is what it got.
    f.chain_source = Some(ChainSource::Uprobe);
    let v = engine.judge(&f);
    assert_eq!(
        (v.verdict, reasons(&v)),
        (Verdict::Clean, strs(&["public_root"]))
    );
}

#[test]
fn an_interception_is_graded_and_a_clean_handshake_is_not() {
    let p = public();
    let corp = make_root("Corp Inspection CA", Some("Example Corp"));
    let forged = leaf(LeafSpec::default(), Some(&corp));
    let mut engine =
        VerdictEngine::new(Arc::new(context(&[&p.root.der, &corp.der], &[&p.root.der])));
    // The client offered TLS 1.3 and AEAD suites; the interceptor answered TLS 1.2 with a
    // CBC-SHA1 suite.
    let hs = |chain: Vec<Arc<CertSummary>>, cipher: &str| Handshake {
        time: Timestamp(NOW as u64 * 1_000_000_000),
        server_name: Some("www.example.test".into()),
        dst_port: 443,
        tls_version: Some(TlsVersion::Tls12),
        cipher: Some(cipher.into()),
        client_offer: Some(crate::event::ClientOffer {
            cipher_suites: vec![0x1301, 0xC02F, 0xC013],
            versions: vec![0x0304, 0x0303],
            ..Default::default()
        }),
        chain,
        client_outcome: ClientOutcome::Completed,
        ..Handshake::default()
    };
    let v = apply(
        &mut engine,
        hs(chain(&[&forged]), "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
    );
    assert_eq!(v.verdict, Verdict::Intercepted);
    let g = v.interceptor_grade.as_ref().expect("graded");
    assert_eq!(g.grade, Grade::C);
    assert_eq!(
        g.reasons.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        ["cbc_sha1", "no_aead", "version_downgrade"]
    );
    assert!(
        v.explanation.contains(
            "weakened what the client got: grade C (cbc_sha1, no_aead, version_downgrade)"
        ),
        "{}",
        v.explanation
    );
    // The real server, answering the same way, is not an interceptor to grade.
    let clean = apply(
        &mut engine,
        hs(
            chain(&[&p.leaf, &p.inter.der]),
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
        ),
    );
    assert_eq!(clean.verdict, Verdict::Clean);
    assert_eq!(clean.interceptor_grade, None);
    assert!(
        !clean.explanation.contains("grade"),
        "{}",
        clean.explanation
    );
}

#[test]
fn quic_blocked_is_low_alone_and_raises_an_interception() {
    let mut clean = Judgement {
        verdict: Verdict::Clean,
        reasons: vec![Reason::PublicRoot],
        severity: Severity::Info,
        explanation: String::new(),
        interceptor: None,
        extra_certificates: Vec::new(),
        interceptor_grade: None,
    };
    super::quic_blocked(&mut clean);
    assert_eq!(clean.severity, Severity::Low);
    assert!(clean.has(&Reason::QuicBlocked));
    assert!(clean.explanation.contains("QUIC"));
    let mut intercepted = Judgement {
        verdict: Verdict::Intercepted,
        severity: Severity::High,
        ..clean.clone()
    };
    super::quic_blocked(&mut intercepted);
    assert_eq!(intercepted.severity, Severity::Critical);
    let mut critical = Judgement {
        severity: Severity::Critical,
        ..intercepted
    };
    super::quic_blocked(&mut critical);
    assert_eq!(critical.severity, Severity::Critical);
}

/// NSS refuses a certificate in TLS 1.2 after its own Finished, with an alert TLS 1.2
/// encrypts: no `client_accepted_untrusted` then, but a refusal, and only for a chain that is
/// not clean (a client that only checks a handshake closes the same way).
#[test]
fn a_tls12_client_closing_with_an_encrypted_alert_before_asking_refused() {
    let p = public();
    let selfsigned = leaf(LeafSpec::default(), None);
    let handshake = |der: &[&[u8]], alerts: u32, sent_data: bool| Handshake {
        time: Timestamp(NOW as u64 * 1_000_000_000),
        server_name: Some("www.example.test".into()),
        dst_port: 443,
        tls_version: Some(TlsVersion::Tls12),
        client_outcome: ClientOutcome::Completed,
        chain: chain(der),
        encrypted_alerts: crate::event::ByDirection {
            client: alerts,
            server: 0,
        },
        first_application_data: crate::event::ByDirection {
            client: sent_data.then_some(Timestamp(NOW as u64 * 1_000_000_000 + 1)),
            server: None,
        },
        ..Handshake::default()
    };
    let ctx = || Arc::new(context(&[&p.root.der], &[&p.root.der]));

    let refused = apply(
        &mut VerdictEngine::new(ctx()),
        handshake(&[&selfsigned], 1, false),
    );
    assert_eq!(
        (refused.verdict, reasons(&refused)),
        (
            Verdict::Untrusted,
            strs(&["unknown_issuer", "self_signed", "client_rejected:encrypted"])
        )
    );
    assert!(refused.severity >= Severity::Medium);
    assert!(
        refused.explanation.contains("refused the certificate"),
        "{}",
        refused.explanation
    );

    // It sent a request first: it accepted the chain.
    let accepted = apply(
        &mut VerdictEngine::new(ctx()),
        handshake(&[&selfsigned], 1, true),
    );
    assert!(reasons(&accepted).contains(&"client_accepted_untrusted".to_owned()));
    assert_eq!(accepted.severity, Severity::Critical);

    // The same close on a clean chain is no refusal.
    let clean = apply(
        &mut VerdictEngine::new(ctx()),
        handshake(&[&p.leaf, &p.inter.der], 1, false),
    );
    assert_eq!(
        (clean.verdict, reasons(&clean)),
        (Verdict::Clean, strs(&["public_root"]))
    );
}
