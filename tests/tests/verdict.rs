//! Verdicts on real certificates: the fixture captures (made by openssl, curl and friends),
//! chains made by the openssl command line, and chains forged by real interceptors.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use sensor_tests::{
    analyze, bin,
    pki::{self, Key},
    workspace_root,
};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures").join(name)
}

fn by_sni<'a>(events: &'a [Value], sni: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["server_name"] == sni)
        .unwrap_or_else(|| panic!("no event for {sni}: {events:?}"))
}

fn reasons(ev: &Value) -> Vec<String> {
    ev["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_capture_is_clean_against_its_public_root_and_intercepted_against_a_local_one() {
    let root = fixture("fixture-root.pem");
    let root = root.to_str().unwrap();
    let cap = fixture("tls12-openssl.pcap");
    let events = analyze(&cap, &["--public-roots", root]);
    let ev = by_sni(&events, "tls12.fixture.test");
    assert_eq!(ev["verdict"], "clean", "{ev}");
    assert_eq!(reasons(ev), ["public_root"]);
    assert_eq!(ev["severity"], "info");

    // The same root known to this host only: somebody else's certificate authority.
    let events = analyze(&cap, &["--host-roots", root]);
    let ev = by_sni(&events, "tls12.fixture.test");
    assert_eq!(ev["verdict"], "intercepted", "{ev}");
    assert_eq!(reasons(ev), ["local_root"]);
    assert_eq!(ev["severity"], "high");
    assert!(
        ev["explanation"]
            .as_str()
            .unwrap()
            .contains("Fixture Intermediate CA"),
        "{ev}"
    );

    // A 3 x 4096-bit chain that crossed small segments, against its own root.
    let big = fixture("bigchain-root.pem");
    let events = analyze(
        &fixture("chain-segments.pcap"),
        &["--public-roots", big.to_str().unwrap()],
    );
    assert_eq!(by_sni(&events, "bigchain.fixture.test")["verdict"], "clean");
}

#[test]
fn rejections_are_reported_with_the_alert_and_tls13_is_unverified() {
    let events = analyze::<&str>(&fixture("alerts.pcap"), &[]);
    let tls12 = by_sni(&events, "openssl2.reject.fixture.test");
    assert_eq!(tls12["verdict"], "untrusted");
    let r = reasons(tls12);
    assert!(r.contains(&"unknown_issuer".to_owned()), "{r:?}");
    assert!(
        r.contains(&"client_rejected:unknown_ca".to_owned()),
        "{r:?}"
    );
    let gnutls = by_sni(&events, "gnutls.reject.fixture.test");
    assert!(reasons(gnutls).contains(&"client_rejected:bad_certificate".to_owned()));
    let tls13 = by_sni(&events, "openssl3.reject.fixture.test");
    assert_eq!(tls13["verdict"], "unverified");
    assert_eq!(
        reasons(tls13),
        ["certificate_not_visible", "client_rejected:unknown_ca"]
    );
    let events = analyze::<&str>(&fixture("tls13-curl-sll2.pcap"), &[]);
    assert_eq!(events[0]["verdict"], "unverified");
    assert_eq!(reasons(&events[0]), ["certificate_not_visible"]);
}

/// `sensorctl check-chain`: (exit code, JSON).
fn check_chain(pem: &Path, name: &str, args: &[&str]) -> (i32, Value) {
    let out = Command::new(bin("sensorctl"))
        .args(["check-chain", "-o", "json", "--name", name])
        .arg(pem)
        .args(args)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no JSON: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), json)
}

#[test]
fn openssl_made_chains_weak_keys_weak_signatures_and_rsa() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = pki::root(d, "Openssl Test Root", Key::Rsa(2048));
    let inter = pki::issue(
        d,
        &root,
        "Openssl Test Intermediate",
        Key::Rsa(3072),
        true,
        &[],
    );
    let root_pem = root.cert.to_str().unwrap().to_owned();

    // A clean RSA chain.
    let leaf = pki::issue(d, &inter, "rsa.test", Key::Rsa(2048), false, &["rsa.test"]);
    let chain = pki::bundle(d, "rsa.pem", &[&leaf, &inter]);
    let (code, v) = check_chain(&chain, "rsa.test", &["--public-roots", &root_pem]);
    assert_eq!((code, v["verdict"].as_str()), (0, Some("clean")), "{v}");

    // A 1024-bit RSA leaf, as bettercap forges them.
    let weak = pki::issue(
        d,
        &inter,
        "weak.test",
        Key::Rsa(1024),
        false,
        &["weak.test"],
    );
    let chain = pki::bundle(d, "weak.pem", &[&weak, &inter]);
    let (code, v) = check_chain(&chain, "weak.test", &["--host-roots", &root_pem]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["verdict"], "intercepted");
    assert!(reasons(&v).contains(&"weak_key".to_owned()), "{v}");

    // A SHA-1 signature: webpki refuses it, and the reason says why.
    let sha1 = pki::issue_with(
        d,
        &inter,
        "sha1.test",
        Key::P256,
        &["sha1.test"],
        &["-sha1"],
    );
    let chain = pki::bundle(d, "sha1.pem", &[&sha1, &inter]);
    let (code, v) = check_chain(&chain, "sha1.test", &["--public-roots", &root_pem]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["verdict"], "untrusted");
    assert!(reasons(&v).contains(&"weak_signature".to_owned()), "{v}");
}

#[test]
fn bad_trust_inputs_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let pins = dir.path().join("pins.toml");
    std::fs::write(
        &pins,
        "[[pin]]\nhost = \"a.test\"\nspki = [\"not-a-pin\"]\n",
    )
    .unwrap();
    let root = fixture("fixture-root.pem");
    let out = Command::new(bin("sensorctl"))
        .args(["check-chain", "--name", "a.test"])
        .arg(&root)
        .arg("--pins")
        .arg(&pins)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3:", pins.display())), "{err}");

    let catalogue = dir.path().join("catalogue.toml");
    std::fs::write(
        &catalogue,
        "[[product]]\nid = \"x\"\nname = \"X\"\nissuer_cn = ['(']\nsource = \"s\"\n",
    )
    .unwrap();
    let out = Command::new(bin("sensorctl"))
        .args(["check-chain", "--name", "a.test"])
        .arg(&root)
        .arg("--catalogue")
        .arg(&catalogue)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:4: bad regex", catalogue.display())),
        "{err}"
    );

    let out = Command::new(bin("sensorctl"))
        .args([
            "check-chain",
            "--name",
            "a.test",
            "--host-roots",
            "/nonexistent.pem",
        ])
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.pem: cannot read"));
}
