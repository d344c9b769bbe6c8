//! make-fixtures: records the capture files under tests/fixtures/ with real clients and servers
//! (openssl, curl, gnutls-cli, Python's ssl, tinyproxy) on loopback and in a network namespace
//! of its own, and writes next to each capture what the generator knows happened in it
//! (`NAME.expected.json`). The tests check `sensorctl analyze` against those facts.
//!
//! Run it as root through `cargo xtask fixtures`. Everything it starts, it stops.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::Parser;
use sensor_tests::{
    Proc,
    capture::Capture,
    free_port,
    netns::Netns,
    pki::{self, Issued, Key},
    require_root, wait_listening,
};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Where the captures go.
    #[arg(long, default_value = "tests/fixtures")]
    out: PathBuf,
    /// Only the scenarios whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Tries per scenario.
    #[arg(long, default_value_t = 3)]
    attempts: u32,
}

/// Certificates shared by the scenarios.
struct Pki {
    dir: PathBuf,
    root: Issued,
    inter: Issued,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let root = pki::root(dir, "Fixture Root CA", Key::Rsa(2048));
        let inter = pki::issue(
            dir,
            &root,
            "Fixture Intermediate CA",
            Key::Rsa(2048),
            true,
            &[],
        );
        Self {
            dir: dir.to_path_buf(),
            root,
            inter,
        }
    }

    /// A leaf for `name` issued by the intermediate, and the chain file (the intermediate).
    fn leaf(&self, name: &str) -> (Issued, PathBuf) {
        let leaf = pki::issue(&self.dir, &self.inter, name, Key::P256, false, &[name]);
        let chain = pki::bundle(&self.dir, &format!("{name}.chain.pem"), &[&self.inter]);
        (leaf, chain)
    }
}

fn s_server(port: u16, leaf: &Issued, chain: &Path, extra: &[&str]) -> Proc {
    let listen = format!("127.0.0.1:{port}");
    let p = sensor_tests::spawn_s_server(
        Command::new("openssl"),
        &listen,
        &leaf.cert,
        &leaf.key,
        Some(chain),
        extra,
    );
    wait_listening(&listen, Duration::from_secs(10));
    p
}

/// `openssl s_client`, sending one request; returns whether it exited 0.
fn s_client(connect: &str, sni: &str, extra: &[&str]) -> bool {
    s_client_linger(connect, sni, extra, Duration::ZERO)
}

/// As [`s_client`], keeping stdin open for `linger` after the request (so that TLS 1.3 session
/// tickets arrive before the client exits and saves its session).
fn s_client_linger(connect: &str, sni: &str, extra: &[&str], linger: Duration) -> bool {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", connect, "-servername", sni])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let stdin = child.stdin.take().map(|mut i| {
        let _ = i.write_all(b"GET / HTTP/1.0\r\n\r\n");
        i
    });
    std::thread::sleep(linger);
    drop(stdin);
    let ok = child.wait().is_ok_and(|s| s.success());
    std::thread::sleep(Duration::from_millis(200));
    ok
}

fn run(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn sha(i: &Issued) -> String {
    i.sha256()
}

/// Facts about one handshake in a capture.
fn expect(sni: &str, version: &str, outcome: &str) -> Value {
    json!({"server_name": sni, "tls_version": version, "client_outcome": outcome})
}

struct Ctx {
    out: PathBuf,
    pki: Pki,
}

impl Ctx {
    fn write_expected(&self, name: &str, facts: &[Value]) -> anyhow::Result<()> {
        let path = self.out.join(format!("{name}.expected.json"));
        let text = serde_json::to_string_pretty(&json!({ "handshakes": facts }))?;
        std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }

    fn cap(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }
}

fn tls12_openssl(c: &Ctx) -> anyhow::Result<()> {
    let sni = "tls12.fixture.test";
    let (leaf, chain) = c.pki.leaf(sni);
    let port = free_port();
    let _srv = s_server(port, &leaf, &chain, &["-alpn", "http/1.1"]);
    let cap = Capture::tcpdump(
        "lo",
        &c.cap("tls12-openssl.pcap"),
        &format!("tcp port {port}"),
        &[],
    );
    let ca = c.pki.root.cert.to_string_lossy().into_owned();
    let ok = s_client(
        &format!("127.0.0.1:{port}"),
        sni,
        &["-tls1_2", "-CAfile", &ca, "-alpn", "h2,http/1.1"],
    );
    let _ = cap.stop();
    if !ok {
        bail!("s_client failed");
    }
    let mut f = expect(sni, "1.2", "completed");
    f["chain_sha256"] = json!([sha(&leaf), sha(&c.pki.inter)]);
    f["alpn"] = json!("http/1.1");
    c.write_expected("tls12-openssl.pcap", &[f])
}

fn tls13_curl(c: &Ctx) -> anyhow::Result<()> {
    let sni = "tls13.fixture.test";
    let (leaf, chain) = c.pki.leaf(sni);
    let port = free_port();
    let _srv = s_server(port, &leaf, &chain, &["-alpn", "http/1.1"]);
    // -i any: Linux cooked capture v2.
    let cap = Capture::tcpdump(
        "any",
        &c.cap("tls13-curl-sll2.pcap"),
        &format!("tcp port {port}"),
        &[],
    );
    let ok = run(Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--cacert"])
        .arg(&c.pki.root.cert)
        .arg("--resolve")
        .arg(format!("{sni}:{port}:127.0.0.1"))
        .arg(format!("https://{sni}:{port}/")));
    let _ = cap.stop();
    if !ok {
        bail!("curl failed");
    }
    let mut f = expect(sni, "1.3", "completed");
    // The server chose http/1.1, but TLS 1.3 says so in EncryptedExtensions: not visible.
    f["alpn"] = Value::Null;
    f["client_alpn"] = json!(["h2", "http/1.1"]);
    f["chain_sha256"] = json!([]);
    c.write_expected("tls13-curl-sll2.pcap", &[f])
}

/// QUIC with aioquic on both ends: versions 1 and 2 (the server answers a version 2 Initial
/// in version 1: compatible version negotiation), a client that refuses the certificate, and a
/// server that sends a Retry first.
fn quic(c: &Ctx) -> anyhow::Result<()> {
    let names = [
        "quic-v1.fixture.test",
        "quic-v2.fixture.test",
        "quic-refused.fixture.test",
        "quic-retry.fixture.test",
    ];
    let leaf = pki::issue(&c.pki.dir, &c.pki.inter, names[0], Key::P256, false, &names);
    let cert = pki::bundle(&c.pki.dir, "quic.chain.pem", &[&leaf, &c.pki.inter]);
    let (plain, retry) = (free_port(), free_port());
    let _a = sensor_tests::quic::origin(&format!("127.0.0.1:{plain}"), &cert, &leaf.key, false);
    let _b = sensor_tests::quic::origin(&format!("127.0.0.1:{retry}"), &cert, &leaf.key, true);
    let cap = Capture::tcpdump(
        "lo",
        &c.cap("quic-aioquic.pcap"),
        &format!("udp port {plain} or udp port {retry}"),
        &[],
    );
    let ca = Some(c.pki.root.cert.as_path());
    let to = |port: u16| format!("127.0.0.1:{port}");
    let ok = [
        sensor_tests::quic::get(&to(plain), names[0], ca, 1),
        sensor_tests::quic::get(&to(plain), names[1], ca, 2),
        !sensor_tests::quic::get(&to(plain), names[2], None, 1),
        sensor_tests::quic::get(&to(retry), names[3], ca, 1),
    ];
    let _ = cap.stop();
    if ok.contains(&false) {
        bail!("aioquic clients: {ok:?}");
    }
    let facts: Vec<Value> = [
        (names[0], plain, "completed", "1", "1", false),
        (names[1], plain, "completed", "1", "2", false),
        // Rejected when aioquic closes in an Initial packet (the alert is in clear), aborted
        // when it closes in a Handshake packet only: which depends on timing.
        (names[2], plain, "", "1", "1", false),
        (names[3], retry, "completed", "1", "1", true),
    ]
    .into_iter()
    .map(|(sni, port, outcome, version, first, retried)| {
        let mut f = expect(sni, "1.3", outcome);
        if outcome.is_empty() {
            f.as_object_mut().map(|f| f.remove("client_outcome"));
        }
        f["dst_port"] = json!(port);
        f["transport"] = json!("quic");
        f["quic_version"] = json!(version);
        f["quic_first_version"] = json!(first);
        f["quic_retry"] = json!(retried);
        // ALPN's answer is in EncryptedExtensions, as in TLS 1.3 over TCP.
        f["alpn"] = Value::Null;
        f["client_alpn"] = json!(["h3"]);
        f["chain_sha256"] = json!([]);
        f
    })
    .collect();
    c.write_expected("quic-aioquic.pcap", &facts)
}

/// Headless Chromium over QUIC to an aioquic origin: its ClientHello (with a post-quantum key
/// share) spans two Initial packets whose CRYPTO frames it shuffles, with PING and PADDING
/// between them.
fn quic_chromium(c: &Ctx) -> anyhow::Result<()> {
    let name = "quic-chromium.fixture.test";
    let leaf = pki::issue(&c.pki.dir, &c.pki.inter, name, Key::P256, false, &[name]);
    let cert = pki::bundle(
        &c.pki.dir,
        "quic-chromium.chain.pem",
        &[&leaf, &c.pki.inter],
    );
    let port = free_port();
    let _origin = sensor_tests::quic::origin(&format!("127.0.0.1:{port}"), &cert, &leaf.key, false);
    let cap = Capture::tcpdump(
        "lo",
        &c.cap("quic-chromium.pcap"),
        &format!("udp port {port}"),
        &[],
    );
    let profile = tempfile::tempdir()?;
    let ok = sensor_tests::quic::chromium_get(
        Command::new("chromium"),
        name,
        port,
        Some("127.0.0.1"),
        &sensor_tests::quic::spki_sha256(&leaf.cert),
        profile.path(),
    );
    let _ = cap.stop();
    if !ok {
        bail!("chromium did not load the page over QUIC");
    }
    let mut f = expect(name, "1.3", "completed");
    f["dst_port"] = json!(port);
    f["transport"] = json!("quic");
    f["quic_version"] = json!("1");
    f["quic_first_version"] = json!("1");
    f["quic_retry"] = json!(false);
    f["alpn"] = Value::Null;
    f["client_alpn"] = json!(["h3"]);
    f["chain_sha256"] = json!([]);
    f["malformed"] = json!([]);
    f["capture_incomplete"] = json!([]);
    c.write_expected("quic-chromium.pcap", &[f])
}

fn old_versions(c: &Ctx) -> anyhow::Result<()> {
    let mut facts = Vec::new();
    let port = free_port();
    let sni = "legacy.fixture.test";
    let (leaf, chain) = c.pki.leaf(sni);
    // TLS 1.0 and 1.1 need security level 0 in OpenSSL 3.
    let _srv = s_server(port, &leaf, &chain, &["-cipher", "DEFAULT@SECLEVEL=0"]);
    let cap = Capture::tcpdump(
        "any",
        &c.cap("tls10-tls11-sll.pcap"),
        &format!("tcp port {port}"),
        &["-y", "LINUX_SLL"],
    );
    for (flag, version, name) in [("-tls1", "1.0", "tls10"), ("-tls1_1", "1.1", "tls11")] {
        let sni = format!("{name}.fixture.test");
        if !s_client(
            &format!("127.0.0.1:{port}"),
            &sni,
            &[flag, "-cipher", "DEFAULT@SECLEVEL=0"],
        ) {
            bail!("s_client {flag} failed");
        }
        facts.push(expect(&sni, version, "completed"));
    }
    let _ = cap.stop();
    c.write_expected("tls10-tls11-sll.pcap", &facts)
}

fn hello_retry(c: &Ctx) -> anyhow::Result<()> {
    let sni = "hrr.fixture.test";
    let (leaf, chain) = c.pki.leaf(sni);
    let port = free_port();
    let _srv = s_server(port, &leaf, &chain, &["-groups", "P-256"]);
    let cap = Capture::dumpcap("lo", &c.cap("hrr.pcapng"), &format!("tcp port {port}"));
    let ok = s_client(
        &format!("127.0.0.1:{port}"),
        sni,
        &["-tls1_3", "-groups", "X25519:P-256"],
    );
    let _ = cap.stop();
    if !ok {
        bail!("s_client failed");
    }
    let mut f = expect(sni, "1.3", "completed");
    f["hello_retry_request"] = json!(true);
    f["key_exchange"] = json!("secp256r1");
    c.write_expected("hrr.pcapng", &[f])
}

fn resumption(c: &Ctx) -> anyhow::Result<()> {
    let sni = "resume.fixture.test";
    let (leaf, chain) = c.pki.leaf(sni);
    let port = free_port();
    let _srv = s_server(port, &leaf, &chain, &[]);
    let cap = Capture::tcpdump(
        "lo",
        &c.cap("resumption.pcap"),
        &format!("tcp port {port}"),
        &[],
    );
    let mut facts = Vec::new();
    for (flag, version) in [("-tls1_2", "1.2"), ("-tls1_3", "1.3")] {
        let sess = c.pki.dir.join(format!("sess{version}"));
        let sess = sess.to_string_lossy().into_owned();
        let connect = format!("127.0.0.1:{port}");
        let first = format!("first{}.{sni}", &version[2..]);
        let again = format!("again{}.{sni}", &version[2..]);
        let linger = Duration::from_millis(500);
        if !s_client_linger(&connect, &first, &[flag, "-sess_out", &sess], linger) {
            bail!("first s_client {flag} failed");
        }
        if !s_client(&connect, &again, &[flag, "-sess_in", &sess]) {
            bail!("resuming s_client {flag} failed");
        }
        let mut a = expect(&first, version, "completed");
        a["resumption_offered"] = json!(false);
        let mut b = expect(&again, version, "completed");
        b["resumption_offered"] = json!(true);
        facts.push(a);
        facts.push(b);
    }
    let _ = cap.stop();
    c.write_expected("resumption.pcap", &facts)
}

fn client_certificate(c: &Ctx) -> anyhow::Result<()> {
    let sni = "mtls.fixture.test";
    let (leaf, chain) = c.pki.leaf(sni);
    let client = pki::issue(
        &c.pki.dir,
        &c.pki.inter,
        "fixture client",
        Key::P256,
        false,
        &[],
    );
    let ca_both = pki::bundle(&c.pki.dir, "clientca.pem", &[&c.pki.root, &c.pki.inter]);
    let port = free_port();
    let ca = ca_both.to_string_lossy().into_owned();
    let _srv = s_server(port, &leaf, &chain, &["-Verify", "2", "-CAfile", &ca]);
    let cap = Capture::tcpdump(
        "lo",
        &c.cap("client-cert.pcap"),
        &format!("tcp port {port}"),
        &[],
    );
    let (cert, key) = (
        client.cert.to_string_lossy().into_owned(),
        client.key.to_string_lossy().into_owned(),
    );
    let ok = s_client(
        &format!("127.0.0.1:{port}"),
        sni,
        &["-tls1_2", "-cert", &cert, "-key", &key],
    );
    let _ = cap.stop();
    if !ok {
        bail!("s_client with a client certificate failed");
    }
    let mut f = expect(sni, "1.2", "completed");
    f["client_certificate"] = json!(true);
    c.write_expected("client-cert.pcap", &[f])
}

fn connect_proxy(c: &Ctx) -> anyhow::Result<()> {
    let sni = "proxied.fixture.test";
    let (leaf, chain) = c.pki.leaf(sni);
    let port = free_port();
    let _srv = s_server(port, &leaf, &chain, &[]);
    let (_proxy, proxy_port) = sensor_tests::tinyproxy(&c.pki.dir);
    let cap = Capture::tcpdump(
        "lo",
        &c.cap("connect-proxy.pcap"),
        &format!("tcp port {port} or tcp port {proxy_port}"),
        &[],
    );
    let proxy = format!("127.0.0.1:{proxy_port}");
    let ok = s_client(
        &format!("127.0.0.1:{port}"),
        sni,
        &["-tls1_2", "-proxy", &proxy],
    );
    let _ = cap.stop();
    if !ok {
        bail!("s_client through tinyproxy failed");
    }
    let mut client_leg = expect(sni, "1.2", "completed");
    client_leg["dst_port"] = json!(proxy_port);
    client_leg["proxy_connect"] = json!(format!("127.0.0.1:{port}"));
    let mut proxy_leg = expect(sni, "1.2", "completed");
    proxy_leg["dst_port"] = json!(port);
    c.write_expected("connect-proxy.pcap", &[client_leg, proxy_leg])
}

/// A Python server that speaks the plaintext part of `proto` (smtp, imap, pop3), then TLS.
fn starttls_server(proto: &str, port: u16, leaf: &Issued, chain: &Path) -> anyhow::Result<Proc> {
    let full_chain = chain.with_extension("full.pem");
    let mut pem = std::fs::read_to_string(&leaf.cert)?;
    pem.push_str(&std::fs::read_to_string(chain)?);
    std::fs::write(&full_chain, pem)?;
    let script = r#"
import socket, ssl, sys
proto, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port)); srv.listen(1)
conn, _ = srv.accept(); f = conn.makefile("rb")
def say(s): conn.sendall(s.encode())
def line(): return f.readline().decode().strip()
if proto == "smtp":
    say("220 fixture ESMTP\r\n")
    line(); say("250-fixture\r\n250 STARTTLS\r\n")
    line(); say("220 Go ahead\r\n")
elif proto == "imap":
    say("* OK [CAPABILITY IMAP4rev1 STARTTLS] fixture ready\r\n")
    while True:
        l = line(); tag = l.split(" ")[0]
        if "STARTTLS" in l.upper():
            say(tag + " OK Begin TLS negotiation now\r\n"); break
        say("* CAPABILITY IMAP4rev1 STARTTLS\r\n" + tag + " OK done\r\n")
elif proto == "pop3":
    say("+OK fixture ready\r\n")
    while True:
        l = line()
        if l.upper().startswith("STLS"):
            say("+OK Begin TLS\r\n"); break
        say("+OK\r\nSTLS\r\n.\r\n")
tls = ctx.wrap_socket(conn, server_side=True)
try:
    tls.recv(100); tls.sendall(b"bye\r\n")
    tls.unwrap()
except Exception:
    pass
conn.close()
"#;
    let p = Proc::spawn(
        "python STARTTLS server",
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(proto)
            .arg(port.to_string())
            .arg(&full_chain)
            .arg(&leaf.key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_port_bound(port)?;
    Ok(p)
}

/// Wait until something listens on 127.0.0.1:`port`, without connecting (the STARTTLS
/// servers accept one connection only).
fn wait_for_port_bound(port: u16) -> anyhow::Result<()> {
    for _ in 0..100 {
        let out = Command::new("ss").args(["-Htln"]).output()?;
        if String::from_utf8_lossy(&out.stdout).contains(&format!("127.0.0.1:{port} ")) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on {port}")
}

fn starttls(c: &Ctx) -> anyhow::Result<()> {
    for proto in ["smtp", "imap", "pop3"] {
        let sni = format!("{proto}.fixture.test");
        let (leaf, chain) = c.pki.leaf(&sni);
        let port = free_port();
        let _srv = starttls_server(proto, port, &leaf, &chain)?;
        let name = format!("starttls-{proto}.pcap");
        let cap = Capture::tcpdump("lo", &c.cap(&name), &format!("tcp port {port}"), &[]);
        let ok = s_client(
            &format!("127.0.0.1:{port}"),
            &sni,
            &["-starttls", proto, "-tls1_2"],
        );
        let _ = cap.stop();
        if !ok {
            bail!("s_client -starttls {proto} failed");
        }
        let mut f = expect(&sni, "1.2", "completed");
        f["chain_sha256"] = json!([sha(&leaf), sha(&c.pki.inter)]);
        c.write_expected(&name, &[f])?;
    }
    Ok(())
}

fn chain_over_segments(c: &Ctx) -> anyhow::Result<()> {
    let ns = Netns::new("fixture", 600);
    let d = &c.pki.dir;
    let root = pki::root(d, "Big Chain Root", Key::Rsa(4096));
    let inter = pki::issue(
        d,
        &root,
        "Big Chain Intermediate",
        Key::Rsa(4096),
        true,
        &[],
    );
    let sni = "bigchain.fixture.test";
    let leaf = pki::issue(d, &inter, sni, Key::Rsa(4096), false, &[sni]);
    let extra = pki::bundle(d, "bigchain.extra.pem", &[&inter, &root]);
    std::fs::copy(&root.cert, c.out.join("bigchain-root.pem"))?;
    let port = free_port();
    let _srv = sensor_tests::spawn_s_server(
        ns.command("openssl"),
        &format!("{}:{port}", ns.ns_ip),
        &leaf.cert,
        &leaf.key,
        Some(&extra),
        &[],
    );
    let addr = format!("{}:{port}", ns.ns_ip);
    wait_listening(&addr, Duration::from_secs(10));
    let cap = Capture::tcpdump(
        &ns.host_if,
        &c.cap("chain-segments.pcap"),
        &format!("tcp port {port}"),
        &[],
    );
    let ok = s_client(&addr, sni, &["-tls1_2"]);
    let _ = cap.stop();
    if !ok {
        bail!("s_client across the namespace failed");
    }
    let mut f = expect(sni, "1.2", "completed");
    f["chain_sha256"] = json!([sha(&leaf), sha(&inter), sha(&root)]);
    c.write_expected("chain-segments.pcap", &[f])
}

fn alerts(c: &Ctx) -> anyhow::Result<()> {
    let sni = "reject.fixture.test";
    let (leaf, chain) = c.pki.leaf(sni);
    let port = free_port();
    let _srv = s_server(port, &leaf, &chain, &[]);
    let cap = Capture::tcpdump(
        "lo",
        &c.cap("alerts.pcap"),
        &format!("tcp port {port}"),
        &[],
    );
    let connect = format!("127.0.0.1:{port}");
    let mut facts = Vec::new();
    for (flag, version) in [("-tls1_2", "1.2"), ("-tls1_3", "1.3")] {
        let name = format!("openssl{}.{sni}", &version[2..]);
        // No CA given: the client does not trust the chain and says unknown_ca.
        let ok = s_client(&connect, &name, &[flag, "-verify_return_error"]);
        if ok {
            bail!("s_client {flag} accepted an untrusted chain");
        }
        let mut f = expect(&name, version, "rejected");
        f["alert"] = json!({"level": "fatal", "description": "unknown_ca", "code": 48});
        facts.push(f);
    }
    let name = format!("gnutls.{sni}");
    let rejected = !run(Command::new("gnutls-cli")
        .args(["--priority", "NORMAL:-VERS-TLS1.3", "-p", &port.to_string()])
        .arg(format!("--sni-hostname={name}"))
        .arg("127.0.0.1"));
    if !rejected {
        bail!("gnutls-cli accepted an untrusted chain");
    }
    let mut f = expect(&name, "1.2", "rejected");
    f["alert"] = json!({"level": "fatal", "description": "bad_certificate", "code": 42});
    facts.push(f);
    std::thread::sleep(Duration::from_millis(300));
    let _ = cap.stop();
    c.write_expected("alerts.pcap", &facts)
}

fn python_and_gnutls(c: &Ctx) -> anyhow::Result<()> {
    let sni = "clients.fixture.test";
    let (leaf, chain) = c.pki.leaf(sni);
    let port = free_port();
    let _srv = s_server(port, &leaf, &chain, &[]);
    let cap = Capture::tcpdump(
        "lo",
        &c.cap("python-gnutls.pcap"),
        &format!("tcp port {port}"),
        &[],
    );
    let py_sni = format!("python.{sni}");
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
ctx.check_hostname = False
ctx.maximum_version = ssl.TLSVersion.TLSv1_2
with socket.create_connection(("127.0.0.1", int(sys.argv[2]))) as s:
    with ctx.wrap_socket(s, server_hostname=sys.argv[3]) as t:
        t.sendall(b"GET / HTTP/1.0\r\n\r\n"); t.recv(100)
"#;
    let ok = run(Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&c.pki.root.cert)
        .arg(port.to_string())
        .arg(&py_sni));
    if !ok {
        bail!("the Python client failed");
    }
    let gnutls_sni = format!("gnutls.{sni}");
    let mut g = Command::new("gnutls-cli")
        .args(["--x509cafile"])
        .arg(&c.pki.root.cert)
        .args(["--no-ca-verification", "-p", &port.to_string()])
        .arg(format!("--sni-hostname={gnutls_sni}"))
        .arg("127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let _ = g
        .stdin
        .take()
        .map(|mut i| i.write_all(b"GET / HTTP/1.0\r\n\r\n"));
    std::thread::sleep(Duration::from_millis(800));
    let _ = g.kill();
    let _ = g.wait();
    let _ = cap.stop();
    c.write_expected(
        "python-gnutls.pcap",
        &[
            expect(&py_sni, "1.2", "completed"),
            expect(&gnutls_sni, "1.3", "completed"),
        ],
    )
}

fn ocsp(c: &Ctx) -> anyhow::Result<()> {
    let sni = "ocsp.fixture.test";
    let (leaf, chain) = c.pki.leaf(sni);
    let d = &c.pki.dir;
    // An OCSP response for the leaf, signed by its issuer, made by `openssl ocsp` offline.
    std::fs::write(d.join("index.txt"), "")?;
    let resp = d.join("ocsp.der");
    let ok = run(Command::new("openssl")
        .args(["ocsp", "-index"])
        .arg(d.join("index.txt"))
        .arg("-rsigner")
        .arg(&c.pki.inter.cert)
        .arg("-rkey")
        .arg(&c.pki.inter.key)
        .arg("-CA")
        .arg(&c.pki.inter.cert)
        .arg("-issuer")
        .arg(&c.pki.inter.cert)
        .arg("-cert")
        .arg(&leaf.cert)
        .arg("-respout")
        .arg(&resp)
        .args(["-ndays", "30"]));
    if !ok {
        bail!("openssl ocsp failed");
    }
    let port = free_port();
    let resp_s = resp.to_string_lossy().into_owned();
    let _srv = s_server(port, &leaf, &chain, &["-status_file", &resp_s]);
    let cap = Capture::tcpdump("lo", &c.cap("ocsp.pcap"), &format!("tcp port {port}"), &[]);
    let ok = s_client(&format!("127.0.0.1:{port}"), sni, &["-tls1_2", "-status"]);
    let _ = cap.stop();
    if !ok {
        bail!("s_client -status failed");
    }
    let der = std::fs::read(&resp)?;
    let mut f = expect(sni, "1.2", "completed");
    f["ocsp_sha256"] = json!(hex_sha256(&der));
    c.write_expected("ocsp.pcap", &[f])
}

fn hex_sha256(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().expect("stdin").write_all(data)?;
            child.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Rewrite an Ethernet pcap into another link type: the same packets, other framing.
fn reframe(
    src: &Path,
    dst: &Path,
    link: u32,
    header: &dyn Fn(&[u8]) -> Vec<u8>,
) -> anyhow::Result<()> {
    use pcap_parser::{PcapBlockOwned, PcapError, create_reader};
    let file = std::fs::File::open(src)?;
    let mut reader = create_reader(1 << 20, file).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&262144u32.to_le_bytes());
    out.extend_from_slice(&link.to_le_bytes());
    loop {
        match reader.next() {
            Ok((off, block)) => {
                if let PcapBlockOwned::Legacy(b) = block {
                    let eth = b.data;
                    if eth.len() > 14 {
                        let mut frame = header(&eth[12..14]);
                        frame.extend_from_slice(&eth[14..]);
                        let cut = b.origlen as usize - b.caplen as usize;
                        out.extend_from_slice(&b.ts_sec.to_le_bytes());
                        out.extend_from_slice(&b.ts_usec.to_le_bytes());
                        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
                        out.extend_from_slice(&((frame.len() + cut) as u32).to_le_bytes());
                        out.extend_from_slice(&frame);
                    }
                }
                reader.consume(off);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                reader.refill().map_err(|e| anyhow::anyhow!("{e:?}"))?
            }
            Err(e) => bail!("{e:?}"),
        }
    }
    std::fs::write(dst, out)?;
    Ok(())
}

fn reframed(c: &Ctx) -> anyhow::Result<()> {
    let src = c.cap("tls12-openssl.pcap");
    let expected = std::fs::read_to_string(c.out.join("tls12-openssl.pcap.expected.json"))?;
    // Raw IP: no link header at all.
    reframe(&src, &c.cap("tls12-rawip.pcap"), 101, &|_| Vec::new())?;
    // BSD loopback: a 4-byte address family in host order (2 = IPv4).
    reframe(&src, &c.cap("tls12-null.pcap"), 0, &|_| {
        2u32.to_le_bytes().to_vec()
    })?;
    std::fs::write(c.out.join("tls12-rawip.pcap.expected.json"), &expected)?;
    std::fs::write(c.out.join("tls12-null.pcap.expected.json"), &expected)?;
    Ok(())
}

/// Check the captures a scenario wrote: each expected handshake is in `sensorctl analyze`'s
/// output with the expected version and outcome.
fn check_written(out: &Path, scenario: &str) -> anyhow::Result<()> {
    let sensorctl = sensor_tests::bin("sensorctl");
    for entry in std::fs::read_dir(out)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(capture) = name.strip_suffix(".expected.json") else {
            continue;
        };
        let stem = capture.split('.').next().unwrap_or_default();
        let related = stem.starts_with(scenario)
            || (scenario == "old-versions" && stem.starts_with("tls10"))
            || (scenario == "tls13-curl" && stem.starts_with("tls13"))
            || (scenario == "tls12-openssl" && stem == "tls12-openssl");
        if !related {
            continue;
        }
        let facts: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let got = Command::new(&sensorctl)
            .args(["analyze", "-o", "json"])
            .arg(out.join(capture))
            .output()?;
        let events: Vec<Value> = String::from_utf8_lossy(&got.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        for want in facts["handshakes"].as_array().into_iter().flatten() {
            let found = events.iter().any(|e| {
                e["server_name"] == want["server_name"]
                    && e["tls_version"] == want["tls_version"]
                    && (want["client_outcome"].is_null()
                        || e["client_outcome"] == want["client_outcome"])
                    && (want["dst_port"].is_null() || e["dst_port"] == want["dst_port"])
            });
            if !found {
                bail!("{capture}: no handshake like {want}");
            }
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    require_root();
    std::fs::create_dir_all(&args.out)?;
    let dir = tempfile::tempdir()?;
    let ctx = Ctx {
        out: args.out.clone(),
        pki: Pki::new(dir.path()),
    };
    if args.only.is_none() {
        // The root of the fixtures' chains, for verdict tests that treat it as public.
        std::fs::copy(&ctx.pki.root.cert, args.out.join("fixture-root.pem"))?;
    }
    type Scenario = fn(&Ctx) -> anyhow::Result<()>;
    let scenarios: &[(&str, Scenario)] = &[
        ("tls12-openssl", tls12_openssl),
        ("tls13-curl", tls13_curl),
        ("old-versions", old_versions),
        ("hrr", hello_retry),
        ("resumption", resumption),
        ("client-cert", client_certificate),
        ("connect-proxy", connect_proxy),
        ("starttls", starttls),
        ("chain-segments", chain_over_segments),
        ("alerts", alerts),
        ("python-gnutls", python_and_gnutls),
        ("ocsp", ocsp),
        ("reframed", reframed),
        ("quic", quic),
        ("quic-chromium", quic_chromium),
    ];
    for (name, scenario) in scenarios {
        if args.only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        // Real tools and real captures: a capture now and then misses a packet, or a client
        // loses a race with its server's start. Try a scenario up to three times, and keep it
        // only when its captures show the handshakes the scenario made.
        let mut last = None;
        for attempt in 1..=args.attempts {
            eprintln!("make-fixtures: {name} (attempt {attempt})");
            match scenario(&ctx).and_then(|()| check_written(&ctx.out, name)) {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => {
                    eprintln!("make-fixtures: {name}: {e:#}");
                    last = Some(e);
                }
            }
        }
        if let Some(e) = last {
            return Err(e.context(format!("scenario {name}")));
        }
    }
    Ok(())
}
