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
//! nginx sees completed handshakes and no request (its 408s): each event says so
//! (`idle_after_handshake: true`), and the third, outnumbering squid's handshakes with a
//! request from the same address and fingerprint, has the reason `idle_after_handshake`;
//! `sensorctl clients` then shows it.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use super::{PY_CLIENT, Row, reasons, topology::Topology};
use crate::{
    Daemon, Proc,
    cgroup::TestCgroup,
    interceptors::{self, MitmMode, Netfilter, Redirect, Site, SquidBump},
    pki::{self, Key},
};

/// The origin's HTTPS port, the port the transparent interceptor's redirect takes, and the
/// port whose client population the unknown interceptor changes.
const HTTPS: u16 = 443;
const REDIRECTED: u16 = 8443;
const POPULATION: u16 = 9443;
/// A port where the origin shows a self-signed certificate over TLS 1.2 (its sensor sees it):
/// an interceptor that goes on there accepts invalid certificates.
const INVALID: u16 = 10443;

/// Run a command quietly: whether it succeeded.
trait Succeeds {
    fn succeeds(&mut self) -> bool;
}

impl Succeeds for Command {
    fn succeeds(&mut self) -> bool {
        self.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

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
    /// curl trusting only the interceptors' CAs: it refuses the origin's certificate.
    Refusing,
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
    trust_interceptors: std::path::PathBuf,
    /// A TLS relay (socat) with a certificate from a CA of its own: an interceptor whose
    /// ClientHello no catalogue knows. Its port, and it.
    unknown_box: (u16, Proc),
    dir: std::path::PathBuf,
}

/// nginx with the origin's chain on 443, 8443 and 9443 and a self-signed certificate on 10443
/// (TLS 1.2), short timeouts so that an idle connection ends in seconds (its 408), in
/// `cgroup`, in the origin's namespace.
fn nginx(
    dir: &Path,
    topo: &Topology,
    cgroup: &TestCgroup,
    leaf: &pki::Issued,
    chain: &Path,
) -> Proc {
    let own = dir.join("self-signed");
    std::fs::create_dir_all(&own).expect("a folder for the self-signed certificate");
    let (bad_cert, bad_key) = crate::self_signed(&own, &topo.origin_name);
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
             listen {ip}:{POPULATION} ssl;\n\
             server_name {name};\n    ssl_certificate {chain};\n    ssl_certificate_key {key};\n\
             ssl_protocols TLSv1.2 TLSv1.3;\n    location / {{ return 200 \"origin\\n\"; }}\n  }}\n\
             server {{\n    listen {ip}:{INVALID} ssl;\n    server_name {name};\n\
             ssl_certificate {bad_cert};\n    ssl_certificate_key {bad_key};\n\
             ssl_protocols TLSv1.2;\n    location / {{ return 200 \"origin\\n\"; }}\n  }}\n}}\n",
            ip = topo.origin_ip,
            name = topo.origin_name,
            chain = full_chain.display(),
            key = leaf.key.display(),
            bad_cert = bad_cert.display(),
            bad_key = bad_key.display(),
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
        let pki::OriginPki { root, leaf, chain } = pki::origin(dir, &name);
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
        let trust_interceptors = dir.join("server-side-trust-interceptors.pem");
        let mut pem = String::new();
        for ca in [&mitm.ca, &squid.ca, &sslsplit.ca] {
            pem.push_str(&std::fs::read_to_string(ca).expect("an interceptor's CA"));
        }
        std::fs::write(&trust_interceptors, pem).expect("the trust bundle");
        let unknown_box = unknown_box(dir, &topo, &trust_all);
        let cg = cgroup.path().display().to_string();
        // Request heads on: the User-Agent of each inbound connection's first request.
        let config = dir.join("server-side-sensord.toml");
        std::fs::write(&config, "[uprobe]\nrequest_heads = true\n").expect("sensord.toml");
        let config = config.display().to_string();
        // The origin's root is public, as its real CA would be: its own chain validates.
        let public = root.cert.display().to_string();
        let daemon = Daemon::start(&[
            "--cgroup",
            &cg,
            "--config",
            &config,
            "--public-roots",
            &public,
        ]);
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
            trust_interceptors,
            unknown_box,
            dir: dir.to_owned(),
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
            Who::Refusing => &self.trust_interceptors,
            Who::Curl | Who::Python => &self.trust_all,
        };
        let mut cmd = match who {
            Who::Curl | Who::Device | Who::Refusing => {
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

    /// The next inbound event from the middlebox (an interceptor) to the origin's `port`.
    fn through_middlebox_to(&mut self, port: u16) -> Option<Value> {
        let src = self.topo.middlebox_origin_ip.clone();
        self.daemon.event(Duration::from_secs(20), |e| {
            e["process"]["role"] == "server"
                && e["src_addr"] == src.as_str()
                && e["dst_port"] == port
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

fn describe(e: Option<&Value>) -> String {
    match e {
        Some(e) => format!(
            "{} [{}] {}{}{}; {}",
            e["verdict"].as_str().unwrap_or("?"),
            reasons(e).join(", "),
            e["severity"].as_str().unwrap_or("?"),
            match e["interceptor_grade"]["grade"].as_str() {
                Some(g) => format!(", upstream grade {g} {}", e["interceptor_grade"]["reasons"]),
                None => String::new(),
            },
            if e["idle_after_handshake"] == true {
                ", idle after the handshake"
            } else {
                ""
            },
            e["process"]["comm"].as_str().unwrap_or("?"),
        ),
        None => "no inbound event".into(),
    }
}

fn refuses(who: Who) -> bool {
    matches!(who, Who::Device | Who::Refusing)
}

/// socat as a TLS relay in the middlebox on a port of its own, towards the origin's
/// population port, presenting a certificate for the origin's name from a CA of its own
/// (which `trust` gets, as IT would push it).
fn unknown_box(dir: &Path, topo: &Topology, trust: &Path) -> (u16, Proc) {
    let ca = pki::root(dir, "Unknown Box CA", Key::Rsa(2048));
    let leaf = pki::issue(
        dir,
        &ca,
        "origin via box",
        Key::P256,
        false,
        &[&topo.origin_name],
    );
    let pem = dir.join("unknown-box.pem");
    let mut text = std::fs::read_to_string(&leaf.cert).expect("the box's leaf");
    text.push_str(&std::fs::read_to_string(&leaf.key).expect("the box's key"));
    std::fs::write(&pem, text).expect("the box's PEM");
    let mut bundle = std::fs::read_to_string(trust).expect("the trust bundle");
    bundle.push_str(&std::fs::read_to_string(&ca.cert).expect("the box's CA"));
    std::fs::write(trust, bundle).expect("the trust bundle");
    let site = Site {
        ns: Some(&topo.middlebox),
        addr: &topo.middlebox_ip,
    };
    let port = site.port();
    let proc = Proc::spawn(
        "socat TLS relay (an unknown interceptor)",
        site.command("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind={},reuseaddr,fork,cert={},verify=0",
                topo.middlebox_ip,
                pem.display()
            ))
            .arg(format!(
                "OPENSSL:{}:{POPULATION},verify=0",
                topo.origin_name
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    site.wait(port, Duration::from_secs(10));
    (port, proc)
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
            && e["idle_after_handshake"] == (who == Who::Device)
            // Every interceptor named is graded on what it offers the origin.
            && e["interceptor_grade"]["grade"].is_string()
                == want.iter().any(|w| w.starts_with("interceptor_fingerprint:"))
            && e["process"]["comm"] == "nginx"
            && want.iter().all(|w| got_reasons.iter().any(|r| r == w))
            && (!exact || got_reasons.len() == want.len())
    }) && completed != refuses(who);
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
                Who::Refusing => "curl that does not trust the origin's CA",
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
                "refuses; every event idle after the handshake"
            } else if refuses(who) {
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
    rows.push(seed_row(&mut lab));
    lab.settle();
    rows.push(row(
        &mut lab,
        Who::Refusing,
        Path_::Direct,
        true,
        "clean",
        &["client_rejected:unknown_ca"],
        true,
    ));
    for path in [Path_::Mitmproxy, Path_::Squid] {
        rows.push(invalid_upstream_row(&mut lab, path));
    }
    rows.push(chromium_row(&mut lab));
    rows.push(population_row(&mut lab));
    // sensord's status (hooks, counters), for whoever reads a failed row.
    if let Ok(out) = Command::new(crate::bin("sensorctl"))
        .arg("--socket")
        .arg(lab.daemon.socket())
        .arg("status")
        .output()
    {
        let _ = std::fs::write(
            crate::workspace_root().join("target/lab/server-status.txt"),
            out.stdout,
        );
    }
    let _ = lab.daemon.interrupt();
    // Every event sensord printed, for whoever reads a failed row.
    let _ = lab
        .daemon
        .events
        .wait_for(Duration::from_secs(1), |_| false);
    let dump = crate::workspace_root().join("target/lab/server-events.jsonl");
    let _ = std::fs::create_dir_all(dump.parent().expect("a folder"));
    let _ = std::fs::write(&dump, lab.daemon.events.seen.join("\n") + "\n");
    let _ = lab.daemon.log.wait_for(Duration::from_secs(1), |_| false);
    let _ = std::fs::write(
        crate::workspace_root().join("target/lab/server-sensord.log"),
        lab.daemon.log.seen.join("\n") + "\n",
    );
    rows
}

/// curl (trusting the interceptors) through `path` to the origin's port with a self-signed
/// certificate: the interceptor went on with it, so the origin's event grades it F
/// (`accepts_invalid_certificate`).
fn invalid_upstream_row(lab: &mut Lab, path: Path_) -> Row {
    lab.settle();
    let proxy = match path {
        Path_::Mitmproxy => format!("http://{}:{}", lab.topo.middlebox_ip, lab.mitm.port),
        _ => format!("http://{}:{}", lab.topo.middlebox_ip, lab.squid.port),
    };
    let completed = lab
        .topo
        .client
        .command("curl")
        .args(["-sS", "-o", "/dev/null", "--max-time", "15", "--cacert"])
        .arg(&lab.trust_all)
        .args(["-x", &proxy])
        .arg(format!("https://{}:{INVALID}/", lab.topo.origin_name))
        .succeeds();
    let event = lab.through_middlebox_to(INVALID);
    let name = if path == Path_::Mitmproxy {
        "mitmproxy"
    } else {
        "squid"
    };
    let pass = completed
        && event.as_ref().is_some_and(|e| {
            e["verdict"] == "intercepted"
                && reasons(e).contains(&format!("interceptor_fingerprint:{name}"))
                && e["interceptor_grade"]["grade"] == "F"
                && e["interceptor_grade"]["reasons"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|v| v == "accepts_invalid_certificate"))
        });
    Row {
        scenario: format!("server side: {name} in front of a self-signed origin (TLS 1.2) / curl"),
        expected: format!(
            "intercepted [interceptor_fingerprint:{name}], upstream grade F \
             (accepts_invalid_certificate); client completes"
        ),
        got: format!(
            "{}; client {}",
            describe(event.as_ref()),
            if completed { "completed" } else { "failed" }
        ),
        pass,
    }
}

/// Headless Chromium straight to the origin: every event of its connections (it may open
/// more than one, and leave some unused) is `clean` with no reason.
fn chromium_row(lab: &mut Lab) -> Row {
    lab.settle();
    let profile = lab.dir.join("chromium-profile");
    let out = lab
        .topo
        .client
        .command("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--ignore-certificate-errors",
            "--no-first-run",
            "--disable-background-networking",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("https://{}/", lab.topo.origin_name))
        .stdin(Stdio::null())
        .output();
    let completed = out
        .as_ref()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("origin"));
    let mut events = Vec::new();
    let src = lab.topo.client_ip.clone();
    if let Some(e) = lab.inbound_from(&src, Duration::from_secs(20)) {
        events.push(e);
        while let Some(e) = lab.inbound_from(&src, Duration::from_secs(4)) {
            events.push(e);
        }
    }
    // Its request heads were read: the User-Agent names Chrome, over Chromium's handshake.
    let read_ua = events.iter().any(|e| {
        e["request"]["user_agent"]
            .as_str()
            .is_some_and(|ua| ua.contains("Chrome/"))
    });
    let pass = completed
        && read_ua
        && !events.is_empty()
        && events
            .iter()
            .all(|e| e["verdict"] == "clean" && reasons(e).is_empty());
    Row {
        scenario: "server side: direct / headless Chromium / TLS 1.3".into(),
        expected: "every origin event of its connections: clean [no reason]; a request head with \
                   Chrome's User-Agent; client completes"
            .into(),
        got: format!(
            "{} events: {}; client {}",
            events.len(),
            events
                .iter()
                .map(|e| describe(Some(e)))
                .collect::<Vec<_>>()
                .join(" | "),
            if completed { "completed" } else { "failed" }
        ),
        pass,
    }
}

/// The population port: ten handshakes of curl and Python straight from the client's network,
/// then three of the same curl through the unknown box (socat) from the same /24: the third
/// says `client_fingerprint_changed`, no product named (`clean`, medium).
fn population_row(lab: &mut Lab) -> Row {
    lab.settle();
    let url = format!("https://{}:{POPULATION}/", lab.topo.origin_name);
    let curl = |lab: &Lab, via_box: bool| {
        let mut c = lab.topo.client.command("curl");
        c.args(["-sS", "-o", "/dev/null", "--max-time", "15", "--cacert"])
            .arg(&lab.trust_all);
        if via_box {
            c.arg("--connect-to").arg(format!(
                "{}:{POPULATION}:{}:{}",
                lab.topo.origin_name, lab.topo.middlebox_ip, lab.unknown_box.0
            ));
        }
        c.arg(&url).succeeds()
    };
    let mut learned = 0;
    for i in 0..10 {
        let ok = if i % 2 == 0 {
            curl(lab, false)
        } else {
            lab.topo
                .client
                .command("python3")
                .args(["-c", PY_CLIENT, &url])
                .arg(&lab.trust_all)
                .arg("1.3")
                .succeeds()
        };
        let src = lab.topo.client_ip.clone();
        if ok && lab.inbound_from(&src, Duration::from_secs(20)).is_some() {
            learned += 1;
        }
    }
    let mut last = None;
    let mut through = 0;
    for _ in 0..3 {
        if curl(lab, true) {
            through += 1;
        }
        last = lab.through_middlebox_to(POPULATION);
    }
    let got = last.as_ref().map(reasons).unwrap_or_default();
    // One more through the box, with a browser's User-Agent: the request says Chrome, the
    // handshake is the box's OpenSSL.
    let chrome_ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                     Chrome/156.0.0.0 Safari/537.36";
    let ua_ok = lab
        .topo
        .client
        .command("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "--max-time",
            "15",
            "-A",
            chrome_ua,
            "--cacert",
        ])
        .arg(&lab.trust_all)
        .arg("--connect-to")
        .arg(format!(
            "{}:{POPULATION}:{}:{}",
            lab.topo.origin_name, lab.topo.middlebox_ip, lab.unknown_box.0
        ))
        .arg(&url)
        .succeeds();
    let ua_event = lab.through_middlebox_to(POPULATION);
    let ua_pass = ua_ok
        && ua_event.as_ref().is_some_and(|e| {
            e["verdict"] == "intercepted"
                && reasons(e)
                    .iter()
                    .any(|r| r == "ua_fingerprint_mismatch:chromium")
        });
    let pass = ua_pass
        && learned == 10
        && through == 3
        && last.as_ref().is_some_and(|e| {
            e["verdict"] == "clean"
                && e["severity"] == "medium"
                && got == ["client_fingerprint_changed"]
        });
    Row {
        scenario: "server side: a network's clients switch to an unknown interceptor (socat)"
            .into(),
        expected: "10 direct handshakes seen, 3 through the box; the third: clean \
                   [client_fingerprint_changed, nothing else] medium; a fourth with Chrome's \
                   User-Agent: intercepted [ua_fingerprint_mismatch:chromium]"
            .into(),
        got: format!(
            "{learned} direct seen, {through} through the box; the third: {}; the fourth: {}",
            describe(last.as_ref()),
            describe(ua_event.as_ref())
        ),
        pass,
    }
}

/// The issue's seed, start to end, as one row: a device that pins its own CA behind squid
/// ssl-bump, three times. Each time squid completes its handshake with nginx, the device
/// refuses squid's certificate and nothing is asked: every origin event names squid and is
/// idle after the handshake, the third has the pattern (`idle_after_handshake`), and
/// `sensorctl clients` shows the middlebox's address through squid with 3 idle.
fn seed_row(lab: &mut Lab) -> Row {
    let mut parts = Vec::new();
    for want in [
        &["interceptor_fingerprint:squid"][..],
        &["interceptor_fingerprint:squid"][..],
        &["interceptor_fingerprint:squid", "idle_after_handshake"][..],
    ] {
        parts.push(row(
            lab,
            Who::Device,
            Path_::Squid,
            true,
            "intercepted",
            want,
            true,
        ));
    }
    parts.push(clients_row(lab));
    Row {
        scenario: "server side: the seed, a device pinning its CA behind squid ssl-bump \
                   (server-first), nginx origin, three times, then sensorctl clients"
            .into(),
        expected: parts
            .iter()
            .map(|p| p.expected.clone())
            .collect::<Vec<_>>()
            .join(" | "),
        got: parts
            .iter()
            .map(|p| p.got.clone())
            .collect::<Vec<_>>()
            .join(" | "),
        pass: parts.iter().all(|p| p.pass),
    }
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
    let _ = std::fs::write(
        crate::workspace_root().join("target/lab/server-clients.txt"),
        &text,
    );
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
