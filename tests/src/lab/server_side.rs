//! The lab from the server's side: sensord watches only the origin (its cgroup), nginx, and
//! judges each inbound handshake on the client's behaviour (issue 19).
//!
//! ```text
//!  client ns                 middlebox ns                              origin ns
//!  curl, Python ──────────►  mitmproxy (explicit), squid ssl-bump  ──► nginx, in a cgroup of
//!  (direct, or through a     (server-first: stare, then bump),         its own that sensord
//!   proxy or the redirect)   sslsplit (transparent, nft redirect)      alone is attached to
//! ```
//!
//! Rows: direct clients are `clean` with nothing to say (no false positive); each interceptor
//! is named by its own ClientHello (`interceptor_fingerprint:<id>`); and the issue's seed, start
//! to end: a device that pins its own CA behind squid refuses squid's forged certificate, so
//! nginx sees completed handshakes and no request (its 408s): `idle_after_handshake`, and from
//! the third on `idle_after_handshake_repeated`; `sensorctl clients` then shows it.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use super::{PY_CLIENT, Row, topology::Topology};
use crate::{
    Daemon, Proc,
    cgroup::TestCgroup,
    interceptors::{self, MitmMode, Netfilter, Redirect, Site, SquidBump},
    pki::{self, Key},
};

/// The origin's HTTPS port, and the port the transparent interceptor's redirect takes.
const HTTPS: u16 = 443;
const REDIRECTED: u16 = 8443;

/// How a row's client reaches the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path_ {
    Direct,
    Mitmproxy,
    Squid,
    Sslsplit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Curl,
    Python,
    /// curl trusting only the origin's own root: a device with its CA embedded.
    Device,
}

struct Lab {
    daemon: Daemon,
    topo: Topology,
    _nginx: Proc,
    _cgroup: TestCgroup,
    mitm: interceptors::Interceptor,
    squid: interceptors::Interceptor,
    _sslsplit: interceptors::Interceptor,
    _redirect: Redirect,
    trust_all: std::path::PathBuf,
    trust_origin: std::path::PathBuf,
}

/// nginx with the origin's chain on 443 and 8443, short timeouts so that an idle connection
/// ends in seconds (its 408), in `cgroup`, in the origin's namespace.
fn nginx(
    dir: &Path,
    topo: &Topology,
    cgroup: &TestCgroup,
    leaf: &pki::Issued,
    chain: &Path,
) -> Proc {
    let full_chain = dir.join("nginx-chain.pem");
    let mut pem = std::fs::read_to_string(&leaf.cert).expect("the leaf");
    pem.push_str(&std::fs::read_to_string(chain).expect("the chain"));
    std::fs::write(&full_chain, pem).expect("nginx's chain");
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/nginx-error.log;\nevents {{ worker_connections 256; }}\n\
             http {{\n  access_log {d}/nginx-access.log;\n\
             client_body_temp_path {d}/nginx-body;\n  proxy_temp_path {d}/nginx-proxy;\n\
             fastcgi_temp_path {d}/nginx-fastcgi;\n  uwsgi_temp_path {d}/nginx-uwsgi;\n\
             scgi_temp_path {d}/nginx-scgi;\n\
             client_header_timeout 3s;\n  keepalive_timeout 2s;\n\
             server {{\n    listen {ip}:{HTTPS} ssl;\n    listen {ip}:{REDIRECTED} ssl;\n\
             server_name {name};\n    ssl_certificate {chain};\n    ssl_certificate_key {key};\n\
             ssl_protocols TLSv1.2 TLSv1.3;\n    location / {{ return 200 \"origin\\n\"; }}\n  }}\n}}\n",
            ip = topo.origin_ip,
            name = topo.origin_name,
            chain = full_chain.display(),
            key = leaf.key.display(),
        ),
    )
    .expect("nginx.conf");
    let script = format!(
        "echo $$ > {} && exec ip netns exec {} nginx -c {}",
        cgroup.procs_file().display(),
        topo.origin.name,
        conf.display()
    );
    let proc = Proc::spawn(
        "nginx (the origin)",
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let site = Site {
        ns: Some(&topo.origin),
        addr: &topo.origin_ip,
    };
    site.wait(HTTPS, Duration::from_secs(20));
    proc
}

impl Lab {
    fn start(dir: &Path) -> Self {
        let topo = Topology::new("origin.lab.test");
        let name = topo.origin_name.clone();
        let root = pki::root(dir, &format!("{name} Public Root"), Key::Rsa(2048));
        let inter = pki::issue(
            dir,
            &root,
            &format!("{name} Issuing CA"),
            Key::Rsa(2048),
            true,
            &[],
        );
        let leaf = pki::issue(dir, &inter, &name, Key::P256, false, &[&name]);
        let chain = pki::bundle(dir, "origin-intermediate.pem", &[&inter]);
        let cgroup = TestCgroup::new("lab-origin");
        let nginx = nginx(dir, &topo, &cgroup, &leaf, &chain);
        let mbox = Site {
            ns: Some(&topo.middlebox),
            addr: &topo.middlebox_ip,
        };
        let mitm = interceptors::mitmproxy(dir, MitmMode::Regular, mbox);
        let squid = interceptors::squid_at(dir, mbox, SquidBump::ServerFirst);
        let sslsplit = interceptors::sslsplit_at(dir, mbox, None);
        let redirect = Redirect::at(
            Some(&topo.middlebox),
            Netfilter::Nft,
            &topo.middlebox_client_if,
            REDIRECTED,
            sslsplit.port,
        );
        let trust_origin = pki::bundle(dir, "server-side-trust-origin.pem", &[&root]);
        let trust_all = dir.join("server-side-trust-all.pem");
        let mut pem = std::fs::read_to_string(&root.cert).expect("the root");
        for ca in [&mitm.ca, &squid.ca, &sslsplit.ca] {
            pem.push_str(&std::fs::read_to_string(ca).expect("an interceptor's CA"));
        }
        std::fs::write(&trust_all, pem).expect("the trust bundle");
        let cg = cgroup.path().display().to_string();
        let daemon = Daemon::start(&["--cgroup", &cg]);
        Self {
            daemon,
            topo,
            _nginx: nginx,
            _cgroup: cgroup,
            mitm,
            squid,
            _sslsplit: sslsplit,
            _redirect: redirect,
            trust_all,
            trust_origin,
        }
    }

    /// Run the row's client; whether it got the origin's answer.
    fn run_client(&self, who: Who, path: Path_, tls13: bool) -> bool {
        let port = if path == Path_::Sslsplit {
            REDIRECTED
        } else {
            HTTPS
        };
        let url = format!("https://{}:{port}/", self.topo.origin_name);
        let proxy = match path {
            Path_::Mitmproxy => Some(format!(
                "http://{}:{}",
                self.topo.middlebox_ip, self.mitm.port
            )),
            Path_::Squid => Some(format!(
                "http://{}:{}",
                self.topo.middlebox_ip, self.squid.port
            )),
            Path_::Direct | Path_::Sslsplit => None,
        };
        let ca = match who {
            Who::Device => &self.trust_origin,
            Who::Curl | Who::Python => &self.trust_all,
        };
        let mut cmd = match who {
            Who::Curl | Who::Device => {
                let mut c = self.topo.client.command("curl");
                c.args(["-sS", "-o", "/dev/null", "--max-time", "15", "--cacert"])
                    .arg(ca)
                    .arg(if tls13 { "--tlsv1.3" } else { "--tlsv1.2" })
                    .args(["--tls-max", if tls13 { "1.3" } else { "1.2" }]);
                if let Some(p) = &proxy {
                    c.args(["-x", p]);
                }
                c.arg(&url);
                c
            }
            Who::Python => {
                let mut c = self.topo.client.command("python3");
                c.args(["-c", PY_CLIENT, &url])
                    .arg(ca)
                    .arg(if tls13 { "1.3" } else { "1.2" });
                if let Some(p) = &proxy {
                    c.arg(p);
                }
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The next inbound event from `src`, within `timeout`.
    fn inbound_from(&mut self, src: &str, timeout: Duration) -> Option<Value> {
        self.daemon.event(timeout, |e| {
            e["process"]["role"] == "server" && e["src_addr"] == src
        })
    }

    /// Let events of connections that are still closing arrive and be passed over.
    fn settle(&mut self) {
        let _ = self
            .daemon
            .events
            .wait_for(Duration::from_secs(3), |_| false);
    }
}

fn reasons(e: &Value) -> Vec<String> {
    e["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn describe(e: Option<&Value>) -> String {
    match e {
        Some(e) => format!(
            "{} [{}] {}; {}",
            e["verdict"].as_str().unwrap_or("?"),
            reasons(e).join(", "),
            e["severity"].as_str().unwrap_or("?"),
            e["process"]["comm"].as_str().unwrap_or("?"),
        ),
        None => "no inbound event".into(),
    }
}

/// One row: the client, its path, what the origin's event must say.
fn row(
    lab: &mut Lab,
    who: Who,
    path: Path_,
    tls13: bool,
    verdict: &str,
    want: &[&str],
    exact: bool,
) -> Row {
    let completed = lab.run_client(who, path, tls13);
    let src = match path {
        Path_::Direct => lab.topo.client_ip.clone(),
        _ => lab.topo.middlebox_origin_ip.clone(),
    };
    let event = lab.inbound_from(&src, Duration::from_secs(20));
    let got_reasons = event.as_ref().map(reasons).unwrap_or_default();
    let pass = event.as_ref().is_some_and(|e| {
        e["verdict"] == verdict
            && e["process"]["comm"] == "nginx"
            && want.iter().all(|w| got_reasons.iter().any(|r| r == w))
            && (!exact || got_reasons.len() == want.len())
    }) && completed == (who != Who::Device);
    Row {
        scenario: format!(
            "server side: {} / {} / TLS {}",
            match path {
                Path_::Direct => "direct",
                Path_::Mitmproxy => "mitmproxy-explicit",
                Path_::Squid => "squid-bump server-first",
                Path_::Sslsplit => "sslsplit-transparent",
            },
            match who {
                Who::Curl => "curl",
                Who::Python => "python-urllib",
                Who::Device => "device pinning its own CA",
            },
            if tls13 { "1.3" } else { "1.2" }
        ),
        expected: format!(
            "origin's event (nginx): {verdict} [{}]; client {}",
            match (want.is_empty(), exact) {
                (true, _) => "no reason".to_owned(),
                (false, true) => format!("{}, nothing else", want.join(", ")),
                (false, false) => want.join(", "),
            },
            if who == Who::Device {
                "refuses"
            } else {
                "completes"
            }
        ),
        got: format!(
            "{}; client {}",
            describe(event.as_ref()),
            if completed { "completed" } else { "refused" }
        ),
        pass,
    }
}

/// Play the server-side rows.
pub fn run(dir: &Path) -> Vec<Row> {
    let mut lab = Lab::start(dir);
    let mut rows = Vec::new();
    for tls13 in [true, false] {
        for who in [Who::Curl, Who::Python] {
            rows.push(row(&mut lab, who, Path_::Direct, tls13, "clean", &[], true));
        }
    }
    lab.settle();
    for (path, id) in [
        (Path_::Mitmproxy, "mitmproxy"),
        (Path_::Squid, "squid"),
        (Path_::Sslsplit, "sslsplit"),
    ] {
        for tls13 in [true, false] {
            let want = format!("interceptor_fingerprint:{id}");
            rows.push(row(
                &mut lab,
                Who::Curl,
                path,
                tls13,
                "intercepted",
                &[&want],
                false,
            ));
            lab.settle();
        }
    }
    // The seed: a device behind squid, three times. Each leaves squid's completed handshake
    // with nginx and no request; the third makes the pattern.
    for (i, want) in [
        &["interceptor_fingerprint:squid", "idle_after_handshake"][..],
        &["interceptor_fingerprint:squid", "idle_after_handshake"][..],
        &[
            "interceptor_fingerprint:squid",
            "idle_after_handshake",
            "idle_after_handshake_repeated",
        ][..],
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = row(
            &mut lab,
            Who::Device,
            Path_::Squid,
            true,
            "intercepted",
            want,
            true,
        );
        r.scenario.push_str(&format!(" (#{})", i + 1));
        rows.push(r);
    }
    rows.push(clients_row(&lab));
    let _ = lab.daemon.interrupt();
    rows
}

/// `sensorctl clients` on the origin: its service, squid's fingerprint named, the idle count.
fn clients_row(lab: &Lab) -> Row {
    let out = Command::new(crate::bin("sensorctl"))
        .arg("--socket")
        .arg(lab.daemon.socket())
        .args(["clients", "--since", "1h"])
        .output();
    let text = match &out {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("sensorctl: {e}"),
    };
    let ok = out.as_ref().is_ok_and(|o| o.status.success());
    let squid_line = text
        .lines()
        .find(|l| l.contains("squid") && l.contains(&lab.topo.middlebox_origin_ip));
    let pass = ok && text.contains("nginx") && squid_line.is_some_and(|l| l.contains("idle 3"));
    Row {
        scenario: "server side: sensorctl clients after the device rows".into(),
        expected: "nginx's service; the middlebox's address through squid with idle 3".into(),
        got: squid_line
            .map(str::to_owned)
            .unwrap_or_else(|| text.lines().take(12).collect::<Vec<_>>().join(" | ")),
        pass,
    }
}
