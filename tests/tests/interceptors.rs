//! Verdicts on chains forged by real interceptors: mitmproxy (PyPI), sslsplit and squid's
//! ssl-bump (Debian). Each test records the client's leg with tcpdump and runs it through
//! `sensorctl analyze`, as a capture file from the field would be.

use std::{
    io::Write as _,
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
};

use sensor_tests::{
    analyze,
    capture::Capture,
    interceptors::{self, Origin},
};
use serde_json::Value;

/// `openssl s_client` (TLS 1.2, so that the chain is visible) with extra arguments; returns
/// whether it exited 0.
fn client(connect: &str, sni: &str, extra: &[&str]) -> bool {
    let mut c = Command::new("openssl")
        .args([
            "s_client",
            "-tls1_2",
            "-connect",
            connect,
            "-servername",
            sni,
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ = c
        .stdin
        .take()
        .map(|mut i| i.write_all(b"GET / HTTP/1.0\r\n\r\n"));
    c.wait().unwrap().success()
}

fn reasons(ev: &Value) -> Vec<&str> {
    ev["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

/// The client leg's event: the handshake towards `port` for the origin's name.
fn leg<'a>(events: &'a [Value], port: u16, sni: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["dst_port"] == port && e["server_name"] == sni)
        .unwrap_or_else(|| panic!("no handshake to port {port}: {events:#?}"))
}

/// Trust flags: the origin's root is public; the interceptor's CA is this host's or nobody's.
fn trust(origin: &Origin, host_ca: Option<&Path>) -> Vec<String> {
    let mut args = vec![
        "--public-roots".to_owned(),
        origin.root.cert.display().to_string(),
    ];
    if let Some(ca) = host_ca {
        args.push("--host-roots".into());
        args.push(ca.display().to_string());
    }
    args
}

#[test]
fn mitmproxy_as_an_explicit_proxy() {
    sensor_tests::require_root();
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(dir.path(), "mitm-origin.test", Ipv4Addr::LOCALHOST);
    let mitm = interceptors::mitmproxy_explicit(dir.path());
    let cap = dir.path().join("mitm.pcap");
    let capture = Capture::tcpdump("lo", &cap, &format!("tcp port {}", mitm.port), &[]);
    let proxy = format!("127.0.0.1:{}", mitm.port);
    let connect = format!("127.0.0.1:{}", origin.port);
    // Trusting mitmproxy's CA the client completes; without it, it refuses.
    let ca = mitm.ca.display().to_string();
    assert!(client(
        &connect,
        &origin.name,
        &["-proxy", &proxy, "-CAfile", &ca, "-verify_return_error"]
    ));
    assert!(!client(
        &connect,
        &origin.name,
        &["-proxy", &proxy, "-verify_return_error"]
    ));
    let _ = capture.stop();

    let events = analyze(&cap, &trust(&origin, Some(&mitm.ca)));
    let accepted = &events
        .iter()
        .filter(|e| e["dst_port"] == mitm.port)
        .collect::<Vec<_>>();
    assert_eq!(accepted.len(), 2, "{events:#?}");
    let ev = accepted[0];
    assert_eq!(ev["verdict"], "intercepted", "{ev}");
    assert_eq!(
        reasons(ev),
        [
            "local_root",
            "known_interceptor:mitmproxy",
            "forged_leaf_traits"
        ],
        "{ev}"
    );
    assert_eq!(ev["interceptor"]["id"], "mitmproxy");
    assert_eq!(ev["proxy_connect"], connect);
    let text = ev["explanation"].as_str().unwrap();
    assert!(
        text.contains("mitmproxy") && text.contains("only this host trusts"),
        "{text}"
    );
    assert!(
        text.contains("its key is its issuer's key"),
        "mitmproxy reuses its CA key: {text}"
    );

    // The host does not trust mitmproxy: untrusted, and the client said so.
    let events = analyze(&cap, &trust(&origin, None));
    let rejected = events
        .iter()
        .filter(|e| e["dst_port"] == mitm.port)
        .find(|e| e["client_outcome"] == "rejected")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(rejected["verdict"], "untrusted");
    let r = reasons(rejected);
    assert!(r.contains(&"known_interceptor:mitmproxy"), "{r:?}");
    assert!(r.contains(&"client_rejected:unknown_ca"), "{r:?}");
    assert_eq!(rejected["severity"], "high");
}

#[test]
fn sslsplit_forwarding() {
    sensor_tests::require_root();
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(dir.path(), "split-origin.test", Ipv4Addr::LOCALHOST);
    let split = interceptors::sslsplit(dir.path(), &origin);
    let cap = dir.path().join("sslsplit.pcap");
    let capture = Capture::tcpdump("lo", &cap, &format!("tcp port {}", split.port), &[]);
    let ca = split.ca.display().to_string();
    let connect = format!("127.0.0.1:{}", split.port);
    assert!(client(
        &connect,
        &origin.name,
        &["-CAfile", &ca, "-verify_return_error"]
    ));
    let _ = capture.stop();

    let events = analyze(&cap, &trust(&origin, Some(&split.ca)));
    let ev = leg(&events, split.port, &origin.name);
    assert_eq!(ev["verdict"], "intercepted", "{ev}");
    // sslsplit makes its leaves valid from a day before they are made.
    assert_eq!(reasons(ev), ["local_root", "forged_leaf_traits"], "{ev}");
    // sslsplit sends its CA after the forged leaf.
    assert_eq!(ev["chain"].as_array().map(Vec::len), Some(2), "{ev}");
    assert_eq!(
        ev["chain"][1]["subject"],
        "CN=sslsplit Test CA, O=Sensor Test"
    );

    // Nobody trusts it: untrusted, and the client here completed: a client that does not check.
    let events = analyze(&cap, &trust(&origin, None));
    let ev = leg(&events, split.port, &origin.name);
    assert_eq!(ev["verdict"], "untrusted");
    assert_eq!(
        reasons(ev),
        [
            "unknown_issuer",
            "forged_leaf_traits",
            "client_accepted_untrusted"
        ]
    );
    assert_eq!(ev["severity"], "critical");
}

#[test]
fn squid_ssl_bump() {
    sensor_tests::require_root();
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(dir.path(), "squid-origin.test", Ipv4Addr::LOCALHOST);
    let squid = interceptors::squid_bump(dir.path());
    let cap = dir.path().join("squid.pcap");
    let capture = Capture::tcpdump("lo", &cap, &format!("tcp port {}", squid.port), &[]);
    let ca = squid.ca.display().to_string();
    let proxy = format!("127.0.0.1:{}", squid.port);
    let connect = format!("127.0.0.1:{}", origin.port);
    assert!(client(
        &connect,
        &origin.name,
        &["-proxy", &proxy, "-CAfile", &ca, "-verify_return_error"]
    ));
    let _ = capture.stop();

    let events = analyze(&cap, &trust(&origin, Some(&squid.ca)));
    let ev = leg(&events, squid.port, &origin.name);
    assert_eq!(ev["verdict"], "intercepted", "{ev}");
    assert_eq!(reasons(ev)[0], "local_root", "{ev}");
    assert!(
        ev["explanation"]
            .as_str()
            .unwrap()
            .contains("Squid Bump Test CA"),
        "{ev}"
    );
}
