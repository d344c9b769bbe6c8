//! The lab's QUIC rows, on the matrix's namespaces and daemon: an aioquic HTTP/3 origin
//! beside the origin's TCP listener, the aioquic client in the client's namespace.
//!
//! - Clean QUIC: `clean` for `public_root` and nothing else, transport `quic`, JA4 `q…`, the
//!   chain from the probe (over QUIC, from the client's namespace); with aioquic's client and
//!   with headless Chromium forced onto QUIC (whose ClientHello, with a post-quantum key
//!   share, spans Initial packets whose CRYPTO frames it shuffles).
//! - UDP to the port dropped on the middlebox, and TCP to it redirected to mitmproxy: the
//!   client (trusting mitmproxy's CA, as where IT pushed it) falls back to TCP after its
//!   QUIC attempt got no answer. The TCP event is `intercepted` with `quic_blocked`, its
//!   severity raised to critical.
//! - UDP dropped with nobody intercepting: the TCP event is `clean` with `quic_blocked`, low.
//! - mitmproxy intercepting QUIC itself (a reverse HTTP/3 proxy behind a UDP redirect on the
//!   middlebox, forging with the same CA as the matrix's mitmproxy): the QUIC event of a client
//!   that trusts that CA is `intercepted` with `known_interceptor:mitmproxy`, the chain from
//!   the probe, which takes the client's path.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{Lab, Row, reasons};
use crate::{Proc, netns::Namespace, venv_program};

/// How long the client waits for QUIC before it goes to TCP (browsers wait about as long).
const QUIC_WAIT_SECS: &str = "1.5";

/// UDP to `port` dropped on the middlebox's client side while it lives.
struct DropUdp {
    /// The namespace's name.
    ns: String,
    rule: Vec<String>,
}

impl DropUdp {
    fn new(ns: &Namespace, iface: &str, port: u16) -> Self {
        let rule: Vec<String> = format!("FORWARD -i {iface} -p udp --dport {port} -j DROP")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let mut args = vec!["iptables", "-I"];
        args.extend(rule.iter().map(String::as_str));
        ns.exec_ok(&args);
        Self {
            ns: ns.name.clone(),
            rule,
        }
    }
}

impl Drop for DropUdp {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.ns, "iptables", "-D"])
            .args(&self.rule)
            .stdin(Stdio::null())
            .output();
    }
}

/// Play the QUIC rows.
pub fn rows(lab: &mut Lab) -> Vec<Row> {
    let topo = &lab.topo;
    let origin_ns = &topo.origin;
    // aioquic wants the leaf and its chain in one file.
    let cert = lab.dir.join("quic-origin.pem");
    let mut pem = std::fs::read_to_string(&lab.origin.leaf.cert).expect("the origin's leaf");
    pem.push_str(&std::fs::read_to_string(&lab.origin.chain).expect("the origin's chain"));
    std::fs::write(&cert, pem).expect("the QUIC origin's certificate file");
    let port = lab.origin.port;
    let mut rows = Vec::new();
    {
        let _origin = crate::quic::origin_with(
            origin_ns.command(venv_program("python")),
            &format!("{}:{port}", topo.origin_ip),
            &cert,
            &lab.origin.leaf.key,
            false,
        );
        rows.push(clean_quic(lab, port));
        rows.push(chromium(lab, port));
    }
    {
        // A second QUIC origin port, with mitmproxy in front of it for the client.
        let site = crate::interceptors::Site {
            ns: Some(&lab.topo.origin),
            addr: &lab.topo.origin_ip,
        };
        let quic_port = site.port();
        let _origin = crate::quic::origin_with(
            lab.topo.origin.command(venv_program("python")),
            &format!("{}:{quic_port}", lab.topo.origin_ip),
            &cert,
            &lab.origin.leaf.key,
            false,
        );
        let _mitm = MitmQuic::start(lab, quic_port);
        // A client that refuses mitmproxy's certificate over QUIC is reported as `aborted`
        // 3 s after the server's flight, but the probe through the reverse proxy then timed
        // out in the lab (open; see the README), so that row is not played yet.
        rows.push(intercepted_quic(lab, quic_port, true));
    }
    {
        let mitm_port = lab.transparent_mitm_port;
        let _drop = DropUdp::new(
            &lab.topo.middlebox,
            &lab.topo.middlebox_client_if,
            mitm_port,
        );
        rows.push(blocked(lab, mitm_port, true));
    }
    {
        let _drop = DropUdp::new(&lab.topo.middlebox, &lab.topo.middlebox_client_if, port);
        rows.push(blocked(lab, port, false));
    }
    rows
}

/// mitmproxy as a reverse HTTP/3 proxy for the origin's `port` on the middlebox, with UDP
/// to that port redirected to it: to the client it is the origin.
struct MitmQuic {
    _proc: Proc,
    _redirect: Vec<String>,
    ns: String,
}

impl MitmQuic {
    fn start(lab: &Lab, port: u16) -> Self {
        let mbox = crate::interceptors::Site {
            ns: Some(&lab.topo.middlebox),
            addr: &lab.topo.middlebox_ip,
        };
        let listen = mbox.port();
        let confdir = lab.dir.join("mitmproxy");
        let proc = Proc::spawn(
            "mitmdump reverse:http3",
            mbox.command(crate::interceptors::mitmdump())
                .args(["--mode"])
                .arg(format!(
                    "reverse:http3://{}:{port}@{listen}",
                    lab.topo.origin_name
                ))
                .args(["--set", "ssl_insecure=true", "--set"])
                .arg(format!("confdir={}", confdir.display()))
                .args(["-q"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        mbox.wait_udp(listen, Duration::from_secs(60));
        let rule: Vec<String> = format!(
            "PREROUTING -i {} -p udp --dport {port} -j REDIRECT --to-ports {listen}",
            lab.topo.middlebox_client_if
        )
        .split_whitespace()
        .map(str::to_owned)
        .collect();
        let mut args = vec!["iptables", "-t", "nat", "-A"];
        args.extend(rule.iter().map(String::as_str));
        lab.topo.middlebox.exec_ok(&args);
        Self {
            _proc: proc,
            _redirect: rule,
            ns: lab.topo.middlebox.name.clone(),
        }
    }
}

impl Drop for MitmQuic {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.ns, "iptables", "-t", "nat", "-D"])
            .args(&self._redirect)
            .stdin(Stdio::null())
            .output();
    }
}

fn intercepted_quic(lab: &mut Lab, port: u16, trusts: bool) -> Row {
    let (pid, ok) = client_with(lab, port, trusts, false);
    let e = event(lab, pid, "quic");
    let has = |e: &Value, r: &str| reasons(e).iter().any(|x| x == r);
    let pass = ok == trusts
        && e.as_ref().is_some_and(|e| {
            e["chain_source"] == "probe"
                && if trusts {
                    e["verdict"] == "intercepted"
                        && has(e, "local_root")
                        && has(e, "known_interceptor:mitmproxy")
                        && e["client_outcome"] == "completed"
                } else {
                    matches!(e["verdict"].as_str(), Some("intercepted" | "untrusted"))
                        && e["client_outcome"] != "completed"
                }
        });
    Row {
        scenario: format!(
            "quic / mitmproxy reverse HTTP/3 behind a UDP redirect / {} / aioquic",
            if trusts {
                "client trusts CA"
            } else {
                "client does not"
            }
        ),
        expected: if trusts {
            "intercepted [local_root, known_interceptor:mitmproxy] via probe, quic; client completed"
        } else {
            "intercepted|untrusted via probe, quic, not completed; client refused"
        }
        .into(),
        got: describe(e.as_ref(), ok),
        pass,
    }
}

/// Run the aioquic client in the client's namespace; its pid and whether it got its answer.
fn client(lab: &Lab, port: u16, fallback: bool) -> (u32, bool) {
    client_with(lab, port, fallback, fallback)
}

/// The aioquic client trusting the interceptors' CAs (`trusts`) or the origin's alone, going
/// to TCP after an unanswered QUIC attempt (`fallback`).
fn client_with(lab: &Lab, port: u16, trusts: bool, fallback: bool) -> (u32, bool) {
    let ca = if trusts {
        &lab.ca_with_interceptors
    } else {
        &lab.ca_origin_only
    };
    let mut cmd: Command = lab.topo.client.command(venv_program("python"));
    crate::quic::client_args(
        &mut cmd,
        &format!("{}:{port}", lab.topo.origin_name),
        &lab.topo.origin_name,
        Some(ca),
        1,
    );
    if fallback {
        cmd.args(["--fallback-tcp", "--timeout", QUIC_WAIT_SECS]);
    }
    let mut p = Proc::spawn(
        "aioquic client",
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let pid = p.pid();
    let ok = p
        .wait_timeout(Duration::from_secs(30))
        .is_some_and(|s| s.success());
    (pid, ok)
}

fn event(lab: &mut Lab, pid: u32, transport: &str) -> Option<Value> {
    let name = lab.topo.origin_name.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    lab.daemon
        .event(deadline.saturating_duration_since(Instant::now()), |e| {
            e["process"]["pid"] == pid
                && e["server_name"] == name.as_str()
                && e["transport"] == transport
        })
}

fn describe(e: Option<&Value>, completed: bool) -> String {
    match e {
        Some(e) => format!(
            "{} [{}] {} via {}, {} {}; client {}",
            e["verdict"].as_str().unwrap_or("?"),
            reasons(e).join(", "),
            e["severity"].as_str().unwrap_or("?"),
            e["chain_source"].as_str().unwrap_or("none"),
            e["transport"].as_str().unwrap_or("?"),
            e["ja4"].as_str().unwrap_or("?"),
            if completed { "completed" } else { "failed" }
        ),
        None => format!(
            "no event; client {}",
            if completed { "completed" } else { "failed" }
        ),
    }
}

fn clean_quic(lab: &mut Lab, port: u16) -> Row {
    let (pid, ok) = client(lab, port, false);
    let e = event(lab, pid, "quic");
    let pass = ok
        && e.as_ref().is_some_and(|e| {
            e["verdict"] == "clean"
                && reasons(e) == ["public_root"]
                && e["severity"] == "info"
                && e["chain_source"] == "probe"
                && e["client_outcome"] == "completed"
                && e["ja4"].as_str().is_some_and(|j| j.starts_with("q13"))
                && e["quic"]["version"] == "1"
        });
    Row {
        scenario: "quic / clean / aioquic HTTP/3".into(),
        expected: "clean [public_root, nothing else] info via probe, quic q13…; client completed"
            .into(),
        got: describe(e.as_ref(), ok),
        pass,
    }
}

/// Headless Chromium, QUIC forced for the origin: its network service (a child process)
/// makes the connection, so its event is found by name, transport and the process's name
/// (the origin's events of sensord's own probe connection come by too).
fn chromium(lab: &mut Lab, port: u16) -> Row {
    let profile = lab.dir.join("chromium-quic-profile");
    let name = lab.topo.origin_name.clone();
    // Chromium's QUIC ignores --ignore-certificate-errors; it takes the leaf's key instead.
    let spki = crate::quic::spki_sha256(&lab.origin.leaf.cert);
    let ok = crate::quic::chromium_get(
        lab.topo.client.command("chromium"),
        &name,
        port,
        None,
        &spki,
        &profile,
    );
    let e = lab.daemon.event(Duration::from_secs(20), |e| {
        e["server_name"] == name.as_str()
            && e["transport"] == "quic"
            && e["dst_port"] == port
            && e["process"]["role"] == "client"
            && e["process"]["comm"]
                .as_str()
                .is_some_and(|c| c.contains("hrom"))
    });
    let pass = ok
        && e.as_ref().is_some_and(|e| {
            e["verdict"] == "clean"
                && reasons(e) == ["public_root"]
                && e["chain_source"] == "probe"
                && e["client_outcome"] == "completed"
                && e["ja4"].as_str().is_some_and(|j| j.starts_with("q13d"))
                && e["malformed"] == serde_json::json!([])
                && e["capture_incomplete"] == serde_json::json!([])
        });
    Row {
        scenario: "quic / clean / headless Chromium, QUIC forced".into(),
        expected: "clean [public_root, nothing else] via probe, quic q13d…, nothing malformed or \
                   lost; page loaded"
            .into(),
        got: describe(e.as_ref(), ok),
        pass,
    }
}

fn blocked(lab: &mut Lab, port: u16, intercepted: bool) -> Row {
    let (pid, ok) = client(lab, port, true);
    let e = event(lab, pid, "tcp");
    let has = |e: &Value, r: &str| reasons(e).iter().any(|x| x == r);
    let pass = ok
        && e.as_ref().is_some_and(|e| {
            has(e, "quic_blocked")
                && e["quic_unanswered"] == true
                && if intercepted {
                    e["verdict"] == "intercepted"
                        && has(e, "local_root")
                        && has(e, "known_interceptor:mitmproxy")
                        && e["severity"] == "critical"
                } else {
                    e["verdict"] == "clean"
                        && reasons(e) == ["public_root", "quic_blocked"]
                        && e["severity"] == "low"
                }
        });
    let (scenario, expected) = if intercepted {
        (
            "quic / UDP dropped, mitmproxy transparent on TCP / aioquic, then TCP",
            "intercepted [local_root, known_interceptor:mitmproxy, quic_blocked] critical, tcp; \
             client completed over TCP",
        )
    } else {
        (
            "quic / UDP dropped, nobody intercepting / aioquic, then TCP",
            "clean [public_root, quic_blocked, nothing else] low, tcp; client completed over TCP",
        )
    };
    Row {
        scenario: scenario.into(),
        expected: expected.into(),
        got: describe(e.as_ref(), ok),
        pass,
    }
}
