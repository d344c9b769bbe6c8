//! The evasion lab: interceptors that know the sensor is there and try to hide, one row per
//! attack, each with a clean twin.
//!
//! Every attack row has a real TLS stack on the attacking side (openssl s_server, Python's ssl
//! module, mitmproxy) presenting a chain the public Web PKI does not vouch for, and a trick to
//! keep the sensor from seeing it: injected segments the client's TCP drops, appended
//! certificates, padding, 1-byte records, long plaintext before TLS, IPv6 extension headers,
//! reordering, a probe let through by its fingerprint. The tools that play the tricks are in
//! `tests/lab-tools/` (scapy, asyncio shims, Python TLS servers). An attack row passes when the
//! client's handshake ends in an event that is not `clean`, with a severity of at least
//! medium (and the reason that names the trick where there is one). Its twin is the same path
//! without the attack (or with the same unusual but honest behaviour), and must be `clean`.
//!
//! sensord runs with the lab's public root as the Web PKI, the interceptors' CAs as this
//! host's store, a pin on the origin's issuing CA for `*.ev.lab.test`, an approved inspection
//! CA, and its uprobes off, so that TLS 1.3 rows exercise the active probe.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{Row, topology::Topology};
use crate::{
    Daemon, Lines, Proc,
    interceptors::{self, Interceptor, MitmMode, Site},
    pki::{self, Issued, Key},
    spawn_s_server, workspace_root,
};

/// The names the rows use: every one resolves to the origin.
const DOMAIN: &str = "ev.lab.test";

fn name(row: u8) -> String {
    format!("e{row}.{DOMAIN}")
}

/// Certificates of the evasion lab.
struct Pki {
    /// The origin's "public" root, its issuing CA (pinned), and a second issuing CA under the
    /// same root (which misissues).
    public_root: Issued,
    issuing: Issued,
    origin_leaf: Issued,
    origin_chain: PathBuf,
    other_issuing: Issued,
    /// A CA this host trusts (an inspection box's), which forges leaves for the rows.
    lab_ca: Issued,
    /// A rogue CA this host trusts, and the organisation's approved inspection CA.
    rogue_ca: Issued,
    corp_ca: Issued,
    /// Junk CAs whose certificates pad chains.
    filler_ca: Issued,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let public_root = pki::root(dir, "Evasion Public Root", Key::Rsa(2048));
        let issuing = pki::issue(
            dir,
            &public_root,
            "Evasion Issuing CA",
            Key::Rsa(2048),
            true,
            &[],
        );
        let wildcard = format!("*.{DOMAIN}");
        let origin_leaf = pki::issue(dir, &issuing, "ev-origin", Key::P256, false, &[&wildcard]);
        let origin_chain = pki::bundle(dir, "ev-origin.chain.pem", &[&issuing]);
        let other_issuing = pki::issue(
            dir,
            &public_root,
            "Other Public Issuing CA",
            Key::Rsa(2048),
            true,
            &[],
        );
        Self {
            public_root,
            issuing,
            origin_leaf,
            origin_chain,
            other_issuing,
            lab_ca: pki::root(dir, "Lab Inspection Box CA", Key::P256),
            rogue_ca: pki::root(dir, "Rogue CA", Key::P256),
            corp_ca: pki::root(dir, "Corp Approved Inspection CA", Key::P256),
            filler_ca: pki::root(dir, "Filler CA", Key::P256),
        }
    }

    /// A leaf for a row's name, signed by `ca`.
    fn leaf(&self, dir: &Path, ca: &Issued, row: u8, label: &str) -> Issued {
        pki::issue(
            dir,
            ca,
            &format!("{label}-e{row}"),
            Key::P256,
            false,
            &[&name(row)],
        )
    }

    /// Certificates of at least `bytes` in all (DER), each a leaf with long names (chain
    /// padding): about 9.8 KB each.
    fn filler(&self, dir: &Path, label: &str, bytes: usize) -> Vec<Issued> {
        let names: Vec<String> = (0..150)
            .map(|i| format!("padding-{i:04}-{}.filler.{DOMAIN}", "x".repeat(30)))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut certs = Vec::new();
        let mut total = 0;
        while total < bytes {
            let cert = pki::issue(
                dir,
                &self.filler_ca,
                &format!("{label}-filler-{}", certs.len()),
                Key::P256,
                false,
                &names,
            );
            total += cert.der().len();
            certs.push(cert);
        }
        certs
    }
}

/// What a row must show.
#[derive(Clone, Debug)]
enum Want {
    /// Not clean, severity at least medium, with these reasons, without those.
    Caught {
        verdicts: &'static [&'static str],
        reasons: &'static [&'static str],
        not: &'static [&'static str],
    },
    Clean,
}

impl Want {
    /// Not clean, severity at least medium, with `reasons`.
    fn caught(verdicts: &'static [&'static str], reasons: &'static [&'static str]) -> Self {
        Self::Caught {
            verdicts,
            reasons,
            not: &[],
        }
    }

    /// `intercepted` with `reasons`, or clean for a twin.
    fn intercepted_unless(twin: bool, reasons: &'static [&'static str]) -> Self {
        Self::caught_unless(twin, INTERCEPTED, reasons)
    }

    /// [`Want::caught`], or clean for a twin.
    fn caught_unless(
        twin: bool,
        verdicts: &'static [&'static str],
        reasons: &'static [&'static str],
    ) -> Self {
        if twin {
            Self::Clean
        } else {
            Self::caught(verdicts, reasons)
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Caught {
                verdicts,
                reasons,
                not,
            } => {
                let mut s = format!(
                    "{} [{}], severity >= medium",
                    verdicts.join("|"),
                    reasons.join(", ")
                );
                if !not.is_empty() {
                    s.push_str(&format!(", never [{}]", not.join(", ")));
                }
                s
            }
            Self::Clean => "clean".into(),
        }
    }

    fn met(&self, e: &Value) -> bool {
        let verdict = e["verdict"].as_str().unwrap_or("");
        let reasons: Vec<&str> = e["reasons"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match self {
            Self::Clean => verdict == "clean",
            Self::Caught {
                verdicts,
                reasons: must,
                not,
            } => {
                let severe = matches!(e["severity"].as_str(), Some("medium" | "high" | "critical"));
                verdict != "clean"
                    && severe
                    && verdicts.contains(&verdict)
                    && must.iter().all(|r| reasons.contains(r))
                    && !not.iter().any(|r| reasons.contains(r))
            }
        }
    }
}

const INTERCEPTED: &[&str] = &["intercepted"];
const NOT_CLEAN: &[&str] = &["intercepted", "untrusted", "unverified", "pin_mismatch"];

/// A tool from tests/lab-tools, run with the venv's Python in a namespace; waits for its
/// `ready` line.
fn tool(site: Site<'_>, script: &str, args: &[String]) -> Proc {
    let python = workspace_root().join("target/venv/bin/python");
    let path = workspace_root().join("tests/lab-tools").join(script);
    let mut proc = Proc::spawn(
        &format!("{script} {}", args.join(" ")),
        site.command(python)
            .arg(path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(tool_log(script)),
    );
    let mut lines = Lines::new(proc.child.stdout.take().expect("tool stdout"));
    let ready = lines.wait_for(Duration::from_secs(20), |l| l.trim() == "ready");
    assert!(ready.is_some(), "{script} did not start: {:?}", lines.seen);
    proc
}

/// Where a tool's stderr goes: `target/lab/tools/SCRIPT.log`, appended to, for a failed row.
fn tool_log(script: &str) -> Stdio {
    let dir = workspace_root().join("target/lab/tools");
    let _ = std::fs::create_dir_all(&dir);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{script}.log")))
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

/// A shell command in a namespace that must succeed; its undo runs on drop.
struct Rule {
    ns: String,
    undo: Vec<Vec<String>>,
}

impl Rule {
    fn apply(ns: &crate::netns::Namespace, steps: &[&str], undo: &[&str]) -> Self {
        for step in steps {
            let words: Vec<&str> = step.split_whitespace().collect();
            ns.exec_ok(&words);
        }
        Self {
            ns: ns.name.clone(),
            undo: undo
                .iter()
                .map(|u| u.split_whitespace().map(str::to_owned).collect())
                .collect(),
        }
    }
}

impl Drop for Rule {
    fn drop(&mut self) {
        for step in &self.undo {
            let _ = Command::new("ip")
                .args(["netns", "exec", &self.ns])
                .args(step)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The client side of a row.
#[derive(Clone, Debug)]
enum Client {
    /// curl, TLS 1.2, to `https://name:port/` (over IPv6 when `v6`), through `proxy`.
    Curl12 {
        port: u16,
        proxy: Option<String>,
        v6: bool,
    },
    /// openssl s_client -starttls smtp, TLS 1.2.
    SmtpStarttls { port: u16 },
    /// gnutls-cli, TLS 1.3.
    Gnutls13 { port: u16 },
}

impl Client {
    /// curl, TLS 1.2, straight to `port` over IPv4.
    fn curl(port: u16) -> Self {
        Self::Curl12 {
            port,
            proxy: None,
            v6: false,
        }
    }

    /// curl, TLS 1.2, straight to `port` over IPv6.
    fn curl6(port: u16) -> Self {
        Self::Curl12 {
            port,
            proxy: None,
            v6: true,
        }
    }
}

/// Everything the rows run against. Dropped in order: processes first, namespaces last.
struct Ev {
    daemon: Daemon,
    _front: Rule,
    _origin: Proc,
    origin_port: u16,
    mitm: Interceptor,
    pki: Pki,
    ca_public: PathBuf,
    ca_all: PathBuf,
    dir: PathBuf,
    topo: Topology,
}

impl Ev {
    fn start(dir: &Path) -> Self {
        let topo = Topology::new(&format!("origin.{DOMAIN}"));
        let pki = Pki::new(dir);
        // The client reaches the origin at its front addresses, which the middlebox DNATs:
        // the origin's sockets, which the sensor sees too on this host, are then other
        // connections than the client's, and the sensor sees the client's as it would on the
        // client's host alone. The middlebox and the origin use the origin's own address.
        let names: Vec<String> = (1..=13).map(name).collect();
        for (ns, addr) in [
            (&topo.client, &topo.front_ip),
            (&topo.middlebox, &topo.origin_ip),
            (&topo.origin, &topo.origin_ip),
        ] {
            let mut hosts: Vec<(&str, &str)> =
                names.iter().map(|n| (addr.as_str(), n.as_str())).collect();
            hosts.push((addr.as_str(), &topo.origin_name));
            ns.hosts(&hosts);
        }
        let (mc_if, o4, o6) = (&topo.middlebox_client_if, &topo.origin_ip, &topo.origin_ip6);
        let (f4, f6) = (&topo.front_ip, &topo.front_ip6);
        let front = [
            format!(
                "iptables -t nat -A PREROUTING -i {mc_if} -d {f4} -j DNAT --to-destination {o4}"
            ),
            format!(
                "ip6tables -t nat -A PREROUTING -i {mc_if} -d {f6} -j DNAT --to-destination {o6}"
            ),
            // Packets the lab's tools spoof from the front address must leave as they are:
            // as new connections whose replies would clash with the client's, NAT would give
            // them another source port.
            format!("iptables -t raw -A OUTPUT -s {f4} -j CT --notrack"),
            format!("ip6tables -t raw -A OUTPUT -s {f6} -j CT --notrack"),
        ];
        let undo: Vec<String> = front
            .iter()
            .map(|r| r.replacen(" -A ", " -D ", 1))
            .collect();
        let front = Rule::apply(
            &topo.middlebox,
            &front.iter().map(String::as_str).collect::<Vec<_>>(),
            &undo.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        // Conntrack would call the client's answers to injected segments (SACKs of bytes the
        // server never sent) out of window: invalid packets are not NATed back, and the
        // connection would stall on the lab's NAT rather than play the attack.
        topo.middlebox.exec_ok(&[
            "sysctl",
            "-q",
            "-w",
            "net.netfilter.nf_conntrack_tcp_be_liberal=1",
        ]);
        let origin_site = Site {
            ns: Some(&topo.origin),
            addr: &topo.origin_ip,
        };
        let origin_port = origin_site.port();
        let origin = spawn_s_server(
            origin_site.command("openssl"),
            &format!("{}:{origin_port}", topo.origin_ip),
            &pki.origin_leaf.cert,
            &pki.origin_leaf.key,
            Some(&pki.origin_chain),
            &[],
        );
        origin_site.wait(origin_port, Duration::from_secs(10));
        let mbox = Site {
            ns: Some(&topo.middlebox),
            addr: &topo.middlebox_ip,
        };
        let mitm = interceptors::mitmproxy(dir, MitmMode::Regular, mbox);
        let ca_public = pki::bundle(dir, "ev-trust-public.pem", &[&pki.public_root]);
        let mut all = std::fs::read_to_string(&ca_public).unwrap();
        for ca in [
            &pki.lab_ca.cert,
            &pki.rogue_ca.cert,
            &pki.corp_ca.cert,
            &mitm.ca,
        ] {
            all.push_str(&std::fs::read_to_string(ca).unwrap());
        }
        let ca_all = dir.join("ev-trust-all.pem");
        std::fs::write(&ca_all, all).unwrap();

        let pins = dir.join("ev-pins.toml");
        let pin = spki_pin(&pki.issuing);
        std::fs::write(
            &pins,
            format!("[[pin]]\nhost = \"*.{DOMAIN}\"\nspki = [\"{pin}\"]\n"),
        )
        .unwrap();
        let config = dir.join("ev-sensord.toml");
        std::fs::write(&config, "[uprobe]\nenabled = false\n").unwrap();
        let public = pki.public_root.cert.display().to_string();
        let host: Vec<String> = [
            &pki.lab_ca.cert,
            &pki.rogue_ca.cert,
            &pki.corp_ca.cert,
            &mitm.ca,
        ]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
        let approved = spki_pin(&pki.corp_ca);
        let (pins, config) = (pins.display().to_string(), config.display().to_string());
        let mut args = vec![
            "--config",
            config.as_str(),
            "--public-roots",
            public.as_str(),
            "--pins",
            pins.as_str(),
            "--approved-spki",
            approved.as_str(),
        ];
        for h in &host {
            args.extend(["--host-roots", h.as_str()]);
        }
        let daemon = Daemon::start(&args);
        Self {
            daemon,
            _front: front,
            _origin: origin,
            origin_port,
            mitm,
            pki,
            ca_public,
            ca_all,
            dir: dir.to_path_buf(),
            topo,
        }
    }

    fn origin_site(&self) -> Site<'_> {
        Site {
            ns: Some(&self.topo.origin),
            addr: &self.topo.origin_ip,
        }
    }

    fn mbox_site(&self) -> Site<'_> {
        Site {
            ns: Some(&self.topo.middlebox),
            addr: &self.topo.middlebox_ip,
        }
    }

    /// The attack's server chain and key for `row` (a leaf the host-trusted lab CA forged), and
    /// the twin's (the origin's own), with whether it is the twin.
    fn forged_and_origin(&self, row: u8) -> [(bool, PathBuf, PathBuf); 2] {
        let forged = self.pki.leaf(&self.dir, &self.pki.lab_ca, row, "forged");
        let forged_chain = pki::bundle(&self.dir, &format!("e{row}-forged.pem"), &[&forged]);
        let origin_chain = pki::bundle(
            &self.dir,
            &format!("e{row}-origin.pem"),
            &[&self.pki.origin_leaf, &self.pki.issuing],
        );
        [
            (false, forged_chain, forged.key),
            (true, origin_chain, self.pki.origin_leaf.key.clone()),
        ]
    }

    /// tls_server.py https on the origin's IPv6 address, with `extra` arguments; its port.
    fn https6(&self, chain: &Path, key: &Path, extra: &[&str]) -> (Proc, u16) {
        let port = self.origin_site().port();
        let mut args: Vec<String> = vec![
            "https".into(),
            "--listen".into(),
            format!("[{}]:{port}", self.topo.origin_ip6),
            "--cert".into(),
            chain.display().to_string(),
            "--key".into(),
            key.display().to_string(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        (tool(self.origin_site(), "tls_server.py", &args), port)
    }

    /// openssl s_server in the origin namespace with `leaf` and more certificates after it.
    fn rogue(&self, leaf: &Issued, more: &[&Issued]) -> (Proc, u16) {
        let site = self.origin_site();
        let port = site.port();
        let chain =
            (!more.is_empty()).then(|| pki::bundle(&self.dir, &format!("chain-{port}.pem"), more));
        let proc = spawn_s_server(
            site.command("openssl"),
            &format!("{}:{port}", self.topo.origin_ip),
            &leaf.cert,
            &leaf.key,
            chain.as_deref(),
            &[],
        );
        site.wait(port, Duration::from_secs(10));
        (proc, port)
    }

    /// Run a client for row `row`; its pid.
    fn client(&self, row: u8, client: &Client, ca: &Path) -> u32 {
        let host = name(row);
        let ns = &self.topo.client;
        let mut cmd = match client {
            Client::Curl12 { port, proxy, v6 } => {
                let mut c = ns.command("curl");
                c.args(["-sS", "-o", "/dev/null", "--max-time", "15"])
                    .args(["--tlsv1.2", "--tls-max", "1.2", "--cacert"])
                    .arg(ca);
                if *v6 {
                    c.arg("--resolve")
                        .arg(format!("{host}:{port}:[{}]", self.topo.front_ip6));
                }
                if let Some(p) = proxy {
                    c.arg("-x").arg(format!("http://{p}"));
                }
                c.arg(format!("https://{host}:{port}/"));
                c
            }
            Client::SmtpStarttls { port } => {
                let mut c = ns.command("openssl");
                c.args(["s_client", "-starttls", "smtp", "-connect"])
                    .arg(format!("{host}:{port}"))
                    .args(["-servername", &host, "-tls1_2", "-CAfile"])
                    .arg(ca);
                c
            }
            Client::Gnutls13 { port } => {
                let mut c = ns.command("gnutls-cli");
                c.arg("--x509cafile")
                    .arg(ca)
                    .arg("--priority=NORMAL:-VERS-ALL:+VERS-TLS1.3")
                    .arg("-p")
                    .arg(port.to_string())
                    .arg(&host);
                c
            }
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the client");
        let pid = child.id();
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes());
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return pid;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        pid
    }

    /// Judge a row by the event of the client `pid` for the row's name.
    fn judge(&mut self, row: u8, label: &str, twin: bool, pid: u32, want: Want) -> Row {
        let side = if twin { "clean twin" } else { "attack" };
        self.judge_as(row, label, side, pid, want)
    }

    /// [`Ev::judge`], for a side of the row that is neither the attack nor a clean twin.
    fn judge_as(&mut self, row: u8, label: &str, side: &str, pid: u32, want: Want) -> Row {
        let host = name(row);
        let event = self.daemon.event(Duration::from_secs(20), |e| {
            e["process"]["pid"] == pid && e["server_name"] == host.as_str()
        });
        let got = match &event {
            Some(e) => format!(
                "{} [{}] {} (chain: {}, lost: [{}])",
                e["verdict"].as_str().unwrap_or("?"),
                strings(&e["reasons"]),
                e["severity"].as_str().unwrap_or("?"),
                e["chain_source"].as_str().unwrap_or("none"),
                strings(&e["capture_incomplete"]),
            ),
            None => "no event".into(),
        };
        Row {
            scenario: format!("evasion / {label} / {side}"),
            expected: want.describe(),
            got,
            pass: event.is_some_and(|e| want.met(&e)),
        }
    }
}

/// A JSON array of strings, comma-separated.
fn strings(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// The base64 SHA-256 of a certificate's SubjectPublicKeyInfo (the pin format).
fn spki_pin(cert: &Issued) -> String {
    let der = cert.der();
    sensor_core::x509::summarize(&der)
        .expect("a certificate the lab made")
        .spki_sha256
}

/// Rows 1 and 2: certificates appended to a chain must not satisfy a pin or an approval.
fn appended(ev: &mut Ev) -> Vec<Row> {
    let mut rows = Vec::new();
    // 1. A misissued public certificate (another public CA) with the pinned CA appended.
    let misissued = ev.pki.leaf(&ev.dir, &ev.pki.other_issuing, 1, "misissued");
    let (rogue, port) = ev.rogue(&misissued, &[&ev.pki.other_issuing, &ev.pki.issuing]);
    let pid = ev.client(1, &Client::curl(port), &ev.ca_public);
    rows.push(ev.judge(
        1,
        "appended pinned CA",
        false,
        pid,
        Want::caught(&["pin_mismatch"], &["pin_mismatch"]),
    ));
    drop(rogue);
    rows.push(twin(ev, 1, "appended pinned CA"));

    // 2. A rogue CA the host trusts, with the approved inspection CA appended.
    let forged = ev.pki.leaf(&ev.dir, &ev.pki.rogue_ca, 2, "rogue");
    let (rogue, port) = ev.rogue(&forged, &[&ev.pki.corp_ca]);
    let pid = ev.client(2, &Client::curl(port), &ev.ca_all);
    rows.push(ev.judge(
        2,
        "appended approved CA",
        false,
        pid,
        Want::Caught {
            verdicts: INTERCEPTED,
            reasons: &["local_root"],
            not: &["approved_inspection"],
        },
    ));
    drop(rogue);
    rows.push(twin(ev, 2, "appended approved CA"));
    rows
}

/// The clean twin of a row: the same client to the real origin.
fn twin(ev: &mut Ev, row: u8, label: &str) -> Row {
    let pid = ev.client(row, &Client::curl(ev.origin_port), &ev.ca_all);
    ev.judge(row, label, true, pid, Want::Clean)
}

/// An iptables rule in the middlebox's FORWARD chain that drops the first packet it matches
/// (of the `extra` match): the real packet arrives a retransmission later, after what the
/// middlebox injects. (This kernel has no netem.)
fn drop_first(ev: &Ev, matches: &str) -> Rule {
    let rule = format!("FORWARD {matches} -m statistic --mode nth --every 2 --packet 0 -j DROP");
    Rule::apply(
        &ev.topo.middlebox,
        &[&format!("iptables -A {rule}")],
        &[&format!("iptables -D {rule}")],
    )
}

/// A u32 match for a TCP payload that starts with a TLS handshake record of message `kind`
/// (1 ClientHello, 2 ServerHello, 16 ClientKeyExchange).
fn tls_message(kind: u8) -> String {
    format!(
        "-m u32 --u32 0>>22&0x3C@12>>26&0x3C@0>>24=0x16&&0>>22&0x3C@12>>26&0x3C@5>>24=0x{kind:02x}"
    )
}

/// An injector on the middlebox's client side, for connections to the origin on `port`.
fn injector(ev: &Ev, port: u16, args: &[&str]) -> Proc {
    let mut all: Vec<String> = vec![
        "--iface".into(),
        ev.topo.middlebox_client_if.clone(),
        "--client".into(),
        ev.topo.client_ip.clone(),
        "--server".into(),
        ev.topo.front_ip.clone(),
        "--port".into(),
        port.to_string(),
    ];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    tool(ev.mbox_site(), "inject.py", &all)
}

/// Rows 3 to 5: segments the client's TCP drops, or sends twice with different content.
fn injected(ev: &mut Ev) -> Vec<Row> {
    let mut rows = Vec::new();
    let forged = ev.pki.leaf(&ev.dir, &ev.pki.lab_ca, 3, "forged");
    let (_rogue, port) = ev.rogue(&forged, &[]);
    let client = Client::curl(port);
    // 3. Junk before the ClientHello, without ACK, or with sequence numbers out of the window.
    for mode in ["no-ack", "stale"] {
        // The first SYN is lost: the junk reaches the client while it is still in SYN_SENT.
        let _hold = drop_first(
            ev,
            &format!(
                "-p tcp -s {} -d {} --dport {port} --syn",
                ev.topo.client_ip, ev.topo.origin_ip
            ),
        );
        let _inject = injector(ev, port, &["junk", "--mode", mode]);
        let pid = ev.client(3, &client, &ev.ca_all);
        rows.push(ev.judge(
            3,
            &format!("junk before the ClientHello ({mode})"),
            false,
            pid,
            Want::caught(INTERCEPTED, &["local_root"]),
        ));
    }
    rows.push(twin(ev, 3, "junk before the ClientHello"));

    // 4. A ServerHello with the real origin's chain, injected before the interceptor's, which
    // the client's TCP drops (no ACK; a stale sequence number).
    let flight = ev.dir.join("clean-flight.bin");
    let origin_chain = pki::bundle(
        &ev.dir,
        "ev-origin-full.pem",
        &[&ev.pki.origin_leaf, &ev.pki.issuing],
    );
    let python = workspace_root().join("target/venv/bin/python");
    let out = Command::new(python)
        .arg(workspace_root().join("tests/lab-tools/tls12_flight.py"))
        .arg("--chain")
        .arg(&origin_chain)
        .args(["--sni", &name(4), "--out"])
        .arg(&flight)
        .output()
        .expect("tls12_flight.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let forged4 = ev.pki.leaf(&ev.dir, &ev.pki.lab_ca, 4, "forged");
    let (_rogue4, port4) = ev.rogue(&forged4, &[]);
    for mode in ["no-ack", "stale"] {
        // The first ClientHello is lost: the fake flight arrives before the real one.
        let _hold = drop_first(
            ev,
            &format!(
                "-p tcp -s {} -d {} --dport {port4} {}",
                ev.topo.client_ip,
                ev.topo.origin_ip,
                tls_message(1)
            ),
        );
        let payload = flight.display().to_string();
        let _inject = injector(
            ev,
            port4,
            &["flight", "--mode", mode, "--payload", &payload],
        );
        let pid = ev.client(4, &Client::curl(port4), &ev.ca_all);
        rows.push(ev.judge(
            4,
            &format!("injected ServerHello and clean chain ({mode})"),
            false,
            pid,
            Want::caught(INTERCEPTED, &["local_root"]),
        ));
    }
    rows.push(twin(ev, 4, "injected ServerHello and clean chain"));

    // 5. Overlapping segments with different content.
    let forged5 = ev.pki.leaf(&ev.dir, &ev.pki.lab_ca, 5, "forged");
    let (_rogue5, port5) = ev.rogue(&forged5, &[]);
    {
        // The client's ClientKeyExchange is lost once: the handshake waits a retransmission
        // (200 ms) for it, so the injected segments always land while it is still going on.
        let _hold = drop_first(
            ev,
            &format!(
                "-p tcp -s {} -d {} --dport {port5} {}",
                ev.topo.client_ip,
                ev.topo.origin_ip,
                tls_message(0x10)
            ),
        );
        let _inject = injector(ev, port5, &["overlap"]);
        let pid = ev.client(5, &Client::curl(port5), &ev.ca_all);
        rows.push(ev.judge(
            5,
            "overlapping segments with different content",
            false,
            pid,
            Want::caught(NOT_CLEAN, &["stream_conflict"]),
        ));
    }
    rows.push(twin(ev, 5, "overlapping segments with different content"));
    rows
}

/// Rows 6 and 7: a Certificate padded past 64 KiB, and one in 1-byte records.
fn framing(ev: &mut Ev) -> Vec<Row> {
    let mut rows = Vec::new();
    // 6. Padding: the forged leaf and filler certificates, past 64 KiB and within the 100 KiB
    // OpenSSL clients take (a longer one they refuse, and that is no interception).
    let forged = ev.pki.leaf(&ev.dir, &ev.pki.lab_ca, 6, "forged");
    let filler = ev.pki.filler(&ev.dir, "e6", 80 * 1024);
    let padded: usize = filler.iter().map(|c| c.der().len() + 3).sum();
    assert!(
        (64 * 1024..98 * 1024).contains(&padded),
        "the filler is {padded} bytes"
    );
    let refs: Vec<&Issued> = filler.iter().collect();
    let (rogue, port) = ev.rogue(&forged, &refs);
    let pid = ev.client(6, &Client::curl(port), &ev.ca_all);
    rows.push(ev.judge(
        6,
        "Certificate padded past 64 KiB",
        false,
        pid,
        Want::caught(INTERCEPTED, &["local_root"]),
    ));
    drop(rogue);
    rows.push(twin(ev, 6, "Certificate padded past 64 KiB"));

    // 7. 1-byte records: a shim in the middlebox re-frames the server's handshake records.
    let forged7 = ev.pki.leaf(&ev.dir, &ev.pki.lab_ca, 7, "forged");
    let (_rogue7, rogue_port) = ev.rogue(&forged7, &[]);
    let via = ev.mbox_site().port();
    let shim_port = ev.mbox_site().port();
    // Ahead of the front DNAT: the shim, not the origin, answers on `via`.
    let redirect = format!(
        "PREROUTING 1 -i {} -p tcp --dport {via} -j REDIRECT --to-ports {shim_port}",
        ev.topo.middlebox_client_if
    );
    let _redirect = Rule::apply(
        &ev.topo.middlebox,
        &[&format!("iptables -t nat -I {redirect}")],
        &[&format!(
            "iptables -t nat -D {}",
            redirect.replacen(" 1 ", " ", 1)
        )],
    );
    for (twin, upstream) in [(false, rogue_port), (true, ev.origin_port)] {
        let _shim = tool(
            ev.mbox_site(),
            "shim.py",
            &[
                "split-records".into(),
                "--listen".into(),
                format!("0.0.0.0:{shim_port}"),
                "--upstream".into(),
                format!("{}:{upstream}", ev.topo.origin_ip),
            ],
        );
        let pid = ev.client(7, &Client::curl(via), &ev.ca_all);
        rows.push(ev.judge(
            7,
            "Certificate in 1-byte records",
            twin,
            pid,
            Want::intercepted_unless(twin, &["local_root"]),
        ));
    }
    rows
}

/// Rows 8 and 9: 20 KiB of plaintext before TLS (a CONNECT reply, an EHLO reply).
fn long_prefixes(ev: &mut Ev) -> Vec<Row> {
    let mut rows = Vec::new();
    // 8. A CONNECT reply padded to 20 KiB: through mitmproxy (intercepted), or straight.
    let shim_port = ev.mbox_site().port();
    for twin in [false, true] {
        let mut args = vec![
            "pad-connect".to_owned(),
            "--listen".into(),
            format!("{}:{shim_port}", ev.topo.middlebox_ip),
            "--pad".into(),
            "20480".into(),
        ];
        if !twin {
            args.push("--upstream-proxy".into());
            args.push(format!("{}:{}", ev.topo.middlebox_ip, ev.mitm.port));
        }
        let _shim = tool(ev.mbox_site(), "shim.py", &args);
        let pid = ev.client(
            8,
            &Client::Curl12 {
                port: ev.origin_port,
                proxy: Some(format!("{}:{shim_port}", ev.topo.middlebox_ip)),
                v6: false,
            },
            &ev.ca_all,
        );
        rows.push(ev.judge(
            8,
            "a 20 KiB CONNECT reply",
            twin,
            pid,
            Want::intercepted_unless(twin, &["known_interceptor:mitmproxy"]),
        ));
    }
    // 9. An SMTP server whose EHLO reply is 20 KiB, then STARTTLS.
    let forged = ev.pki.leaf(&ev.dir, &ev.pki.lab_ca, 9, "forged");
    let forged_chain = pki::bundle(&ev.dir, "e9-forged.pem", &[&forged]);
    let origin_key = ev.pki.origin_leaf.key.clone();
    let origin_chain = pki::bundle(
        &ev.dir,
        "e9-origin.pem",
        &[&ev.pki.origin_leaf, &ev.pki.issuing],
    );
    for (twin, chain, key) in [
        (false, &forged_chain, &forged.key),
        (true, &origin_chain, &origin_key),
    ] {
        let port = ev.origin_site().port();
        let _smtp = tool(
            ev.origin_site(),
            "tls_server.py",
            &[
                "smtp".into(),
                "--listen".into(),
                format!("{}:{port}", ev.topo.origin_ip),
                "--cert".into(),
                chain.display().to_string(),
                "--key".into(),
                key.display().to_string(),
                "--ehlo-pad".into(),
                "20480".into(),
            ],
        );
        let pid = ev.client(9, &Client::SmtpStarttls { port }, &ev.ca_all);
        rows.push(ev.judge(
            9,
            "a 20 KiB EHLO reply before STARTTLS",
            twin,
            pid,
            Want::intercepted_unless(twin, &["local_root"]),
        ));
    }
    rows
}

/// Row 10: every packet of the server carries an IPv6 Destination Options header of 1 KiB
/// (longer than the kernel tap once read past).
fn ipv6_options(ev: &mut Ev) -> Vec<Row> {
    let mut rows = Vec::new();
    for (twin, chain, key) in ev.forged_and_origin(10) {
        let (_server, port) = ev.https6(&chain, &key, &["--dstopts", "1024"]);
        let pid = ev.client(10, &Client::curl6(port), &ev.ca_all);
        rows.push(ev.judge(
            10,
            "IPv6 destination options",
            twin,
            pid,
            Want::intercepted_unless(twin, &["local_root"]),
        ));
    }
    rows
}

/// Row 11: a server flight of about 400 small segments, its first one last.
fn reordered(ev: &mut Ev) -> Vec<Row> {
    let mut rows = Vec::new();
    let forged = ev.pki.leaf(&ev.dir, &ev.pki.lab_ca, 11, "forged");
    // 64-byte segments: about 25 KiB of chain makes 400 of them.
    let filler = ev.pki.filler(&ev.dir, "e11", 24 * 1024);
    let refs: Vec<&Issued> = filler.iter().collect();
    let (_rogue, rogue_port) = ev.rogue(&forged, &refs);
    let t = &ev.topo;
    let (c_if, mbox_c) = (t.client_if.clone(), t.middlebox_ip.clone());
    let (o_if, mbox_o) = (t.origin_if.clone(), t.middlebox_origin_ip.clone());
    for (twin, port) in [(false, rogue_port), (true, ev.origin_port)] {
        // The client asks for 64-byte segments and opens a window for 500 of them; the server
        // sends them all at once; the middlebox loses the first (the ServerHello's start),
        // which comes again last.
        let _client_route = Rule::apply(
            &ev.topo.client,
            &[&format!(
                "ip route replace default via {mbox_c} dev {c_if} advmss 64 initrwnd 500"
            )],
            &[&format!("ip route replace default via {mbox_c} dev {c_if}")],
        );
        let _origin_route = Rule::apply(
            &ev.topo.origin,
            &[&format!(
                "ip route replace default via {mbox_o} dev {o_if} initcwnd 500"
            )],
            &[&format!("ip route replace default via {mbox_o} dev {o_if}")],
        );
        let _hold = drop_first(
            ev,
            &format!(
                "-p tcp -s {} --sport {port} {}",
                ev.topo.origin_ip,
                tls_message(2)
            ),
        );
        let pid = ev.client(11, &Client::curl(port), &ev.ca_all);
        rows.push(ev.judge(
            11,
            "a server flight of 400 out-of-order segments",
            twin,
            pid,
            Want::intercepted_unless(twin, &["local_root"]),
        ));
    }
    rows
}

/// Row 12: an interceptor that lets sensord's probe through by its fingerprint and intercepts
/// the client (TLS 1.3, no uprobe: the probe is the only way to a chain).
fn selective(ev: &mut Ev) -> Vec<Row> {
    let mut rows = Vec::new();
    let forged = ev.pki.leaf(&ev.dir, &ev.pki.lab_ca, 12, "forged");
    let forged_chain = pki::bundle(&ev.dir, "e12-forged.pem", &[&forged]);
    let port = ev.origin_site().port();
    let _selective = tool(
        ev.origin_site(),
        "tls_server.py",
        &[
            "selective".into(),
            "--listen".into(),
            format!("{}:{port}", ev.topo.origin_ip),
            "--upstream".into(),
            format!("{}:{}", ev.topo.origin_ip, ev.origin_port),
            "--cert".into(),
            forged_chain.display().to_string(),
            "--key".into(),
            forged.key.display().to_string(),
        ],
    );
    for (twin, port) in [(false, port), (true, ev.origin_port)] {
        let pid = ev.client(12, &Client::Gnutls13 { port }, &ev.ca_all);
        rows.push(ev.judge(
            12,
            "a probe let through by its fingerprint",
            twin,
            pid,
            Want::caught_unless(twin, NOT_CLEAN, &["probe_chain_differs"]),
        ));
    }
    rows
}

/// Row 13: every packet of the server reaches the client with nine Destination Options
/// headers, one more than the kernel tap walks. The tap cannot read them and must say so; the
/// probe (which reads no headers) looks instead. With the real server on the same path the
/// sensor still did not see the chain the client got: `unverified`, and loud.
fn ipv6_unreadable(ev: &mut Ev) -> Vec<Row> {
    let mut rows = Vec::new();
    for (honest, chain, key) in ev.forged_and_origin(13) {
        let (_server, port) = ev.https6(&chain, &key, &[]);
        let t = &ev.topo;
        // The server's packets stop at the middlebox's FORWARD chain (where they still come
        // from the origin's address: NAT restores the front one after it) and the relay sends
        // them on, from the front address, with the headers. Segments stay small enough for
        // 72 more bytes of headers.
        let (o6, c6) = (&t.origin_ip6, &t.client_ip6);
        let drop = format!("FORWARD -p tcp -s {o6} --sport {port} -d {c6} -j DROP");
        let clamp = format!(
            "FORWARD -t mangle -p tcp --dport {port} --tcp-flags SYN,RST SYN -j TCPMSS \
             --set-mss 1200"
        );
        let rules = [drop, clamp];
        let add: Vec<String> = rules.iter().map(|r| format!("ip6tables -A {r}")).collect();
        let del: Vec<String> = rules.iter().map(|r| format!("ip6tables -D {r}")).collect();
        let _rules = Rule::apply(
            &t.middlebox,
            &add.iter().map(String::as_str).collect::<Vec<_>>(),
            &del.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let _relay = tool(
            ev.mbox_site(),
            "exthdr.py",
            &[
                "--iface".into(),
                t.middlebox_origin_if.clone(),
                "--client".into(),
                c6.clone(),
                "--server".into(),
                o6.clone(),
                "--port".into(),
                port.to_string(),
                "--front".into(),
                t.front_ip6.clone(),
                "--headers".into(),
                "9".into(),
            ],
        );
        let pid = ev.client(13, &Client::curl6(port), &ev.ca_all);
        let label = "nine IPv6 extension headers";
        rows.push(if honest {
            ev.judge_as(
                13,
                label,
                "the real server, unseen",
                pid,
                Want::caught(&["unverified"], &["capture_incomplete:gap"]),
            )
        } else {
            ev.judge(
                13,
                label,
                false,
                pid,
                Want::caught(INTERCEPTED, &["local_root", "capture_incomplete:gap"]),
            )
        });
    }
    rows
}

/// A group of rows: plays them against the running lab.
type Group = fn(&mut Ev) -> Vec<Row>;

/// Start the evasion lab, play every row, stop everything.
pub fn run(dir: &Path) -> Vec<Row> {
    let mut ev = Ev::start(dir);
    // LAB_EVASION_ONLY=name,... plays only those groups of rows (while working on one).
    let only = std::env::var("LAB_EVASION_ONLY").ok();
    let groups: [(&str, Group); 8] = [
        ("appended", appended),
        ("injected", injected),
        ("framing", framing),
        ("long_prefixes", long_prefixes),
        ("ipv6_options", ipv6_options),
        ("ipv6_unreadable", ipv6_unreadable),
        ("reordered", reordered),
        ("selective", selective),
    ];
    let mut rows = Vec::new();
    for (group, play) in groups {
        if only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|g| g == group))
        {
            rows.extend(play(&mut ev));
        }
    }
    // Every event sensord printed, for a row that failed.
    let _ = ev.daemon.events.wait_for(Duration::from_secs(1), |_| false);
    let events = workspace_root().join("target/lab/evasion-events.jsonl");
    let _ = std::fs::write(&events, ev.daemon.events.seen.join("\n") + "\n");
    let _ = ev.daemon.interrupt();
    rows
}
