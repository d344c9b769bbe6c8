//! TLS 1.3 hides the certificate from the wire. sensord sees it anyway, two ways: an active
//! probe from this host along the client's path (its namespace, its proxy), and uprobes on
//! OpenSSL that catch the DER the client parses. Each test runs the real daemon with one way
//! switched off, real clients (curl, openssl s_client, Python) and real interceptors
//! (mitmproxy explicit and transparent, sslsplit).
//!
//! The tests run one at a time: each daemon sees every socket on the host, and its probes are
//! connections the other daemons would see.

use std::{
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use sensor_tests::{
    Daemon, Proc,
    interceptors::{self, Interceptor, Origin, Redirect},
    netns::Netns,
    pki::{self, Key},
    wait_listening,
};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// How the daemon gets the chain a TLS 1.3 client was given.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Way {
    Probe,
    Uprobe,
}

impl Way {
    fn source(self) -> &'static str {
        match self {
            Way::Probe => "probe",
            Way::Uprobe => "uprobe",
        }
    }

    /// A config file that leaves only this way on.
    fn config(self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("sensord-{}.toml", self.source()));
        let text = match self {
            Way::Probe => "[uprobe]\nenabled = false\n",
            Way::Uprobe => "[probe]\nenabled = false\n",
        };
        std::fs::write(&path, text).unwrap();
        path
    }
}

#[derive(Clone, Copy, Debug)]
enum Client {
    Curl,
    OpenSsl,
    Python,
}

impl Client {
    const ALL: [Client; 3] = [Client::Curl, Client::OpenSsl, Client::Python];

    fn comm(self) -> &'static str {
        match self {
            Client::Curl => "curl",
            Client::OpenSsl => "openssl",
            Client::Python => "python3",
        }
    }
}

/// One TLS 1.3 connection: to `addr:port` for `sni`, trusting `ca`, through an explicit proxy
/// if given, from a namespace if given. Returns whether the client completed and was happy.
struct Conn<'a> {
    addr: String,
    port: u16,
    sni: &'a str,
    ca: &'a Path,
    proxy: Option<u16>,
    netns: Option<&'a Netns>,
}

const PY_CLIENT: &str = r#"
import socket, ssl, sys
addr, port, sni, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
proxy = sys.argv[5] if len(sys.argv) > 5 else None
ctx = ssl.create_default_context(cafile=ca)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
if proxy:
    host, pport = proxy.rsplit(":", 1)
    s = socket.create_connection((host, int(pport)), timeout=10)
    s.sendall(f"CONNECT {addr}:{port} HTTP/1.1\r\nHost: {addr}:{port}\r\n\r\n".encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = s.recv(1024)
        if not chunk:
            sys.exit("the proxy closed the connection")
        reply += chunk
    if b" 200 " not in reply.split(b"\r\n")[0] + b" ":
        sys.exit(f"the proxy refused: {reply!r}")
else:
    s = socket.create_connection((addr, port), timeout=10)
t = ctx.wrap_socket(s, server_hostname=sni)
assert t.version() == "TLSv1.3", t.version()
t.sendall(b"GET / HTTP/1.0\r\nHost: " + sni.encode() + b"\r\n\r\n")
t.recv(100)
t.close()
"#;

impl<'a> Conn<'a> {
    /// Straight to `127.0.0.1:port`, no proxy, from the host.
    fn local(port: u16, sni: &'a str, ca: &'a Path) -> Self {
        Self {
            addr: "127.0.0.1".into(),
            port,
            sni,
            ca,
            proxy: None,
            netns: None,
        }
    }

    /// Run `client` to completion: Ok, or what it wrote to stderr and how it ended.
    fn run(&self, client: Client) -> Result<(), String> {
        let program = match client {
            Client::Curl => "curl",
            Client::OpenSsl => "openssl",
            Client::Python => "python3",
        };
        let mut cmd = match self.netns {
            Some(ns) => ns.command(program),
            None => Command::new(program),
        };
        let target = format!("{}:{}", self.addr, self.port);
        let proxy = self.proxy.map(|p| format!("127.0.0.1:{p}"));
        match client {
            Client::Curl => {
                cmd.args(["-sS", "--tlsv1.3", "-o", "/dev/null", "--max-time", "20"])
                    .arg("--cacert")
                    .arg(self.ca)
                    .arg("--connect-to")
                    .arg(format!("{}:{}:{target}", self.sni, self.port));
                if let Some(p) = &proxy {
                    cmd.arg("-x").arg(format!("http://{p}"));
                }
                cmd.arg(format!("https://{}:{}/", self.sni, self.port));
            }
            Client::OpenSsl => {
                cmd.args(["s_client", "-tls1_3", "-verify_return_error", "-connect"])
                    .arg(&target)
                    .args(["-servername", self.sni, "-CAfile"])
                    .arg(self.ca);
                if let Some(p) = &proxy {
                    cmd.arg("-proxy").arg(p);
                }
            }
            Client::Python => {
                cmd.args([
                    "-c",
                    PY_CLIENT,
                    &self.addr,
                    &self.port.to_string(),
                    self.sni,
                ])
                .arg(self.ca);
                if let Some(p) = &proxy {
                    cmd.arg(p);
                }
            }
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"GET / HTTP/1.0\r\n\r\n");
        }
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

fn reasons(ev: &Value) -> Vec<String> {
    ev["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The event of `client`'s handshake for `sni` to `port`.
fn client_event(daemon: &mut Daemon, client: Client, sni: &str, port: u16) -> Value {
    daemon
        .event(Duration::from_secs(30), |e| {
            e["server_name"] == sni
                && e["dst_port"] == port
                && e["process"]["comm"] == client.comm()
        })
        .unwrap_or_else(|| {
            panic!(
                "no event for {} to {sni}:{port}; seen:\n{}\nlog:\n{}",
                client.comm(),
                daemon.events.seen.join("\n"),
                daemon.log.seen.join("\n")
            )
        })
}

/// The daemon, trusting the origin's root as public and `host_ca` (an interceptor's CA, which
/// IT "pushed") as this host's, with only `way` on.
fn daemon(dir: &Path, origin: &Origin, host_ca: Option<&Path>, way: Way) -> Daemon {
    let config = way.config(dir);
    let mut args = vec![
        "--config".to_owned(),
        config.display().to_string(),
        "--public-roots".to_owned(),
        origin.root.cert.display().to_string(),
    ];
    if let Some(ca) = host_ca {
        args.push("--host-roots".into());
        args.push(ca.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(&args)
}

/// Every client through `conn`, with the daemon on `way`: each is intercepted, its chain came
/// `way`, and the chain is the interceptor's.
fn expect_intercepted(
    dir: &Path,
    origin: &Origin,
    icpt: &Interceptor,
    conn: &Conn<'_>,
    event_port: u16,
    way: Way,
) {
    let mut daemon = daemon(dir, origin, Some(&icpt.ca), way);
    for client in Client::ALL {
        if let Err(e) = conn.run(client) {
            panic!("{client:?} through the interceptor failed: {e}");
        }
        let ev = client_event(&mut daemon, client, &origin.name, event_port);
        assert_eq!(ev["tls_version"], "1.3", "{client:?} {way:?}: {ev}");
        assert_eq!(ev["chain_source"], way.source(), "{client:?} {way:?}: {ev}");
        assert_eq!(ev["verdict"], "intercepted", "{client:?} {way:?}: {ev}");
        assert!(
            reasons(&ev).contains(&"local_root".to_owned()),
            "{client:?} {way:?}: {ev}"
        );
        assert_ne!(
            ev["chain"][0]["sha256"].as_str(),
            Some(origin.leaf.sha256().as_str()),
            "{client:?} {way:?}: the origin's own leaf: {ev}"
        );
    }
    assert!(daemon.interrupt().is_some_and(|s| s.success()));
}

#[test]
fn clean_tls13_is_clean_through_the_probe_and_the_uprobes() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(dir.path(), "clean13.test", Ipv4Addr::LOCALHOST);
    let conn = Conn::local(origin.port, &origin.name, &origin.root.cert);
    for way in [Way::Probe, Way::Uprobe] {
        let mut daemon = daemon(dir.path(), &origin, None, way);
        for client in Client::ALL {
            if let Err(e) = conn.run(client) {
                panic!("{client:?} to the origin failed: {e}");
            }
            let ev = client_event(&mut daemon, client, &origin.name, origin.port);
            assert_eq!(ev["tls_version"], "1.3", "{ev}");
            assert_eq!(ev["chain_source"], way.source(), "{client:?}: {ev}");
            assert_eq!(ev["verdict"], "clean", "{client:?} {way:?}: {ev}");
            assert_eq!(
                ev["chain"][0]["sha256"].as_str(),
                Some(origin.leaf.sha256().as_str()),
                "{ev}"
            );
        }
        // No echo: the daemon's probes are not handshakes of their own, so each client's
        // handshake is the only one for the name.
        let _ = daemon.event(Duration::from_secs(2), |_| false);
        let for_name: Vec<&String> = daemon
            .events
            .seen
            .iter()
            .filter(|l| l.contains(&format!("\"server_name\":\"{}\"", origin.name)))
            .collect();
        assert_eq!(for_name.len(), Client::ALL.len(), "{way:?}: {for_name:#?}");
        assert!(
            !for_name.iter().any(|l| l.contains("\"comm\":\"sensord\"")),
            "{for_name:#?}"
        );
        assert!(daemon.interrupt().is_some_and(|s| s.success()));
    }
}

#[test]
fn mitmproxy_explicit_tls13_is_intercepted() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(dir.path(), "mitm13.test", Ipv4Addr::LOCALHOST);
    let mitm = interceptors::mitmproxy_explicit(dir.path());
    let conn = Conn {
        proxy: Some(mitm.port),
        ..Conn::local(origin.port, &origin.name, &mitm.ca)
    };
    for way in [Way::Probe, Way::Uprobe] {
        expect_intercepted(dir.path(), &origin, &mitm, &conn, mitm.port, way);
    }
}

/// Wait until a TCP connection from `ns` to `addr:port` is accepted (by the interceptor the
/// redirect leads to), before any daemon runs: the path must work before the test can say
/// anything about what the sensor saw on it. If it never does, say what the host had.
fn wait_redirected(ns: &Netns, addr: &str, port: u16, icpt: &Interceptor) {
    const CONNECT: &str = "import socket, sys\n\
                           socket.create_connection((sys.argv[1], int(sys.argv[2])), 2).close()";
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        let out = ns
            .command("python3")
            .args(["-c", CONNECT, addr, &port.to_string()])
            .output()
            .expect("python3");
        if out.status.success() {
            return;
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        std::thread::sleep(Duration::from_millis(200));
    }
    let show = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| e.to_string())
    };
    panic!(
        "{addr}:{port} from {} never answered through the redirect to port {}: {last}\n\
         interceptor pid {} alive: {}\nnat rules:\n{}\nlisteners:\n{}",
        ns.name,
        icpt.port,
        icpt.proc.pid(),
        Path::new(&format!("/proc/{}", icpt.proc.pid())).exists(),
        show("iptables", &["-t", "nat", "-S"]),
        show("ss", &["-Hltnp"]),
    );
}

#[test]
fn mitmproxy_transparent_tls13_is_intercepted() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // The client lives in a namespace behind a veth pair; the host redirects its HTTPS to
    // mitmproxy, as an inspection gateway would. Only the client's path is intercepted, so
    // the probe must leave from the client's namespace to see it.
    let ns = Netns::new("t13", 1500);
    let origin = Origin::start(
        dir.path(),
        "transparent13.test",
        ns.host_ip.parse().unwrap(),
    );
    let mitm = interceptors::mitmproxy_transparent(dir.path());
    let _redirect = Redirect::new(&ns.host_if, origin.port, mitm.port);
    wait_redirected(&ns, &ns.host_ip, origin.port, &mitm);
    let conn = Conn {
        addr: ns.host_ip.clone(),
        port: origin.port,
        sni: &origin.name,
        ca: &mitm.ca,
        proxy: None,
        netns: Some(&ns),
    };
    for way in [Way::Probe, Way::Uprobe] {
        expect_intercepted(dir.path(), &origin, &mitm, &conn, origin.port, way);
    }
    // From the host itself the path is clean: the probe's answer depended on the namespace.
    let direct = Conn {
        netns: None,
        ca: &origin.root.cert,
        ..conn
    };
    direct
        .run(Client::Curl)
        .expect("curl from the host to the origin");
}

#[test]
fn sslsplit_tls13_is_intercepted() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(dir.path(), "split13.test", Ipv4Addr::LOCALHOST);
    let split = interceptors::sslsplit(dir.path(), &origin);
    let conn = Conn::local(split.port, &origin.name, &split.ca);
    for way in [Way::Probe, Way::Uprobe] {
        expect_intercepted(dir.path(), &origin, &split, &conn, split.port, way);
    }
}

/// An NSS database in `dir/name` (certutil, no password) that trusts `ca` for servers.
fn nss_db(dir: &Path, name: &str, ca: &Path) -> String {
    let db = dir.join(name);
    std::fs::create_dir_all(&db).unwrap();
    let sql = format!("sql:{}", db.display());
    for args in [
        vec!["-N", "--empty-password"],
        vec!["-A", "-n", "ca", "-t", "C,,", "-i", ca.to_str().unwrap()],
    ] {
        let status = Command::new("certutil")
            .args(["-d", &sql])
            .args(&args)
            .status()
            .expect("certutil (cargo xtask setup installs libnss3-tools)");
        assert!(status.success(), "certutil {args:?}: {status}");
    }
    sql
}

/// NSS's tstclnt, TLS 1.3 only, to 127.0.0.1:`port` for `sni`, trusting the database `db`:
/// whether the handshake completed. -Q ends it after the handshake; stdin is empty (with a
/// request waiting there it can stall mid-handshake).
fn tstclnt(port: u16, sni: &str, db: &str) -> Result<(), String> {
    let mut child = Command::new("tstclnt")
        .args([
            "-Q",
            "-V",
            "tls1.3:tls1.3",
            "-d",
            db,
            "-a",
            sni,
            "-h",
            "127.0.0.1",
            "-p",
        ])
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tstclnt (cargo xtask setup installs libnss3-tools)");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return if status.success() {
                Ok(())
            } else {
                Err(format!("{status}: {}", err.trim()))
            };
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("tstclnt did not finish in 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// NSS (Firefox's library) hides nothing from the uprobe on libnss3: a TLS 1.3 client's chain
/// is the one the server sent, leaf and intermediate, clean to the origin and the
/// interceptor's through sslsplit, with the active probe off.
#[test]
fn an_nss_client_gives_its_tls13_chain_to_the_uprobe() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(dir.path(), "nss13.test", Ipv4Addr::LOCALHOST);
    let split = interceptors::sslsplit(dir.path(), &origin);
    let trusts_origin = nss_db(dir.path(), "nss-origin", &origin.root.cert);
    let trusts_split = nss_db(dir.path(), "nss-split", &split.ca);
    let mut daemon = daemon(dir.path(), &origin, Some(&split.ca), Way::Uprobe);
    let event = |daemon: &mut Daemon, port: u16| {
        daemon
            .event(Duration::from_secs(30), |e| {
                e["server_name"] == origin.name.as_str()
                    && e["dst_port"] == port
                    && e["process"]["comm"] == "tstclnt"
            })
            .unwrap_or_else(|| {
                panic!(
                    "no tstclnt event to {port}; log:\n{}",
                    daemon.log.seen.join("\n")
                )
            })
    };

    tstclnt(origin.port, &origin.name, &trusts_origin).expect("tstclnt to the origin");
    let ev = event(&mut daemon, origin.port);
    assert_eq!(ev["tls_version"], "1.3", "{ev}");
    assert_eq!(ev["chain_source"], "uprobe", "{ev}");
    assert_eq!(ev["verdict"], "clean", "{ev}");
    let chain = ev["chain"].as_array().unwrap();
    assert_eq!(chain.len(), 2, "leaf and intermediate: {ev}");
    assert_eq!(
        chain[0]["sha256"].as_str(),
        Some(origin.leaf.sha256().as_str()),
        "{ev}"
    );

    tstclnt(split.port, &origin.name, &trusts_split).expect("tstclnt through sslsplit");
    let ev = event(&mut daemon, split.port);
    assert_eq!(ev["tls_version"], "1.3", "{ev}");
    assert_eq!(ev["chain_source"], "uprobe", "{ev}");
    assert_eq!(ev["verdict"], "intercepted", "{ev}");
    assert!(reasons(&ev).contains(&"local_root".to_owned()), "{ev}");
    assert_ne!(
        ev["chain"][0]["sha256"].as_str(),
        Some(origin.leaf.sha256().as_str()),
        "the origin's own leaf: {ev}"
    );
    assert!(daemon.interrupt().is_some_and(|s| s.success()));
}

const ONE_SHOT_SERVER: &str = r#"
import socket, ssl, sys
cert, key, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", port))
listener.listen(1)
print("ready", flush=True)
conn, _ = listener.accept()
listener.close()
tls = ctx.wrap_socket(conn, server_side=True)
tls.recv(1024)
tls.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
tls.close()
"#;

#[test]
fn an_unreachable_destination_fails_the_probe_with_its_cause() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let root = pki::root(dir.path(), "Gone Root", Key::P256);
    let name = "gone13.test";
    let leaf = pki::issue(dir.path(), &root, name, Key::P256, false, &[name]);
    let port = sensor_tests::free_port();
    let config = Way::Probe.config(dir.path());
    let mut daemon = Daemon::start(&[
        "--config",
        config.to_str().unwrap(),
        "--public-roots",
        root.cert.to_str().unwrap(),
    ]);
    // A server that stops listening as soon as it accepts its one connection: the client's
    // handshake completes, and the probe that follows finds nobody.
    let mut server = Proc::spawn(
        "one-shot TLS server",
        Command::new("python3")
            .args(["-c", ONE_SHOT_SERVER])
            .arg(&leaf.cert)
            .arg(&leaf.key)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut ready = sensor_tests::Lines::new(server.child.stdout.take().unwrap());
    assert!(
        ready
            .wait_for(Duration::from_secs(10), |l| l == "ready")
            .is_some()
    );
    let conn = Conn::local(port, name, &root.cert);
    conn.run(Client::Curl).expect("curl");
    assert!(server.wait_timeout(Duration::from_secs(10)).is_some());
    let ev = client_event(&mut daemon, Client::Curl, name, port);
    assert_eq!(ev["tls_version"], "1.3", "{ev}");
    assert!(ev["chain"].as_array().is_none_or(Vec::is_empty), "{ev}");
    assert!(
        reasons(&ev).contains(&"probe_failed:refused".to_owned()),
        "{ev}"
    );
    let text = ev["explanation"].as_str().unwrap_or_default();
    assert!(text.contains("refused"), "{text}");
    assert!(daemon.interrupt().is_some_and(|s| s.success()));
}

#[test]
fn a_changed_tls13_server_is_a_signal_without_any_chain() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let root = pki::root(dir.path(), "Passive Root", Key::Rsa(2048));
    let name = "passive13.test";
    let inter = pki::issue(
        dir.path(),
        &root,
        "Passive Issuing CA",
        Key::Rsa(2048),
        true,
        &[],
    );
    let leaf = pki::issue(dir.path(), &inter, name, Key::Rsa(2048), false, &[name]);
    let chain = pki::bundle(dir.path(), "passive.chain.pem", &[&inter]);
    let small = pki::issue(dir.path(), &root, name, Key::P256, false, &[name]);
    let port = sensor_tests::free_port();
    // Neither the probe nor the uprobes: only what the wire shows.
    let config = dir.path().join("passive.toml");
    std::fs::write(
        &config,
        "[probe]\nenabled = false\n[uprobe]\nenabled = false\n",
    )
    .unwrap();
    let mut daemon = Daemon::start(&[
        "--config",
        config.to_str().unwrap(),
        "--public-roots",
        root.cert.to_str().unwrap(),
    ]);
    let conn = Conn::local(port, name, &root.cert);
    let serve = |cert: &Path, key: &Path, extra: &[&str]| {
        let mut args = vec!["-ciphersuites", "TLS_AES_128_GCM_SHA256"];
        args.extend_from_slice(extra);
        let p = sensor_tests::openssl_server(port, cert, key, &args);
        wait_listening(&format!("127.0.0.1:{port}"), Duration::from_secs(5));
        p
    };
    let chain_arg = chain.display().to_string();
    // The usual server, twice: a baseline and no change.
    let mut usual = serve(&leaf.cert, &leaf.key, &["-cert_chain", &chain_arg]);
    for _ in 0..2 {
        conn.run(Client::Curl).expect("curl");
        let ev = client_event(&mut daemon, Client::Curl, name, port);
        assert!(ev["chain"].as_array().is_none_or(Vec::is_empty), "{ev}");
        let r = reasons(&ev);
        assert!(
            !r.iter().any(|r| r.starts_with("server_")),
            "the same server: {ev}"
        );
    }
    usual.stop();
    // Something else answers with a smaller certificate flight: a size change only.
    let mut other = serve(&small.cert, &small.key, &[]);
    conn.run(Client::Curl).expect("curl");
    let ev = client_event(&mut daemon, Client::Curl, name, port);
    let r = reasons(&ev);
    assert!(r.contains(&"server_flight_size_changed".to_owned()), "{ev}");
    assert!(
        !r.contains(&"server_fingerprint_changed".to_owned()),
        "{ev}"
    );
    assert_ne!(ev["verdict"], "clean", "{ev}");
    other.stop();
    // And one that picks another cipher suite: its ServerHello changed too.
    let _third = sensor_tests::openssl_server(
        port,
        &small.cert,
        &small.key,
        &["-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"],
    );
    conn.run(Client::Curl).expect("curl");
    let ev = client_event(&mut daemon, Client::Curl, name, port);
    let r = reasons(&ev);
    assert!(r.contains(&"server_fingerprint_changed".to_owned()), "{ev}");
    assert!(
        ev["explanation"]
            .as_str()
            .is_some_and(|t| t.contains("answered unlike before")),
        "{ev}"
    );
    assert!(daemon.interrupt().is_some_and(|s| s.success()));
}

/// Node carries its own OpenSSL in its executable, a Go program its own crypto/tls: sensord
/// finds each when it starts and reads its TLS 1.3 chain with a uprobe (the OpenSSL ones for
/// Node, one on `verifyServerCertificate` for Go). Status lists them with the system's
/// libraries, and a stripped Go program as probe only.
#[test]
fn programs_with_openssl_inside_get_the_uprobes_as_they_start() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(dir.path(), "inside13.test", Ipv4Addr::LOCALHOST);
    let mut daemon = daemon(dir.path(), &origin, None, Way::Uprobe);
    let script = "const [port, sni, ca] = process.argv.slice(1);\n\
        require('https').get({host: '127.0.0.1', port, servername: sni, path: '/', \
        ca: require('fs').readFileSync(ca), minVersion: 'TLSv1.3', \
        headers: {host: sni}}, (r) => { r.resume(); r.on('end', () => process.exit(0)); })\n\
        .on('error', (e) => { console.error(e.message); process.exit(1); });";
    for run in 0..2 {
        let out = Command::new("node")
            .args(["-e", script, &origin.port.to_string(), &origin.name])
            .arg(&origin.root.cert)
            .output()
            .expect("node (nodejs) is installed by cargo xtask setup");
        assert!(
            out.status.success(),
            "node: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ev = daemon
            .event(Duration::from_secs(30), |e| {
                e["server_name"] == origin.name.as_str() && e["process"]["comm"] == "node"
            })
            .unwrap_or_else(|| panic!("run {run}: no event; log:\n{}", daemon.log.seen.join("\n")));
        assert_eq!(ev["tls_version"], "1.3", "{ev}");
        assert_eq!(ev["chain_source"], "uprobe", "run {run}: {ev}");
        assert_eq!(ev["verdict"], "clean", "{ev}");
        assert_eq!(
            ev["chain"][0]["sha256"].as_str(),
            Some(origin.leaf.sha256().as_str()),
            "{ev}"
        );
    }
    // A Go program (crypto/tls, statically linked): found as it starts, its uprobe attached
    // then. Its first run can end before that, so its second run is the one that must show it.
    let go_path = build_go(dir.path(), GO_DIAL, "");
    let go = &go_path;
    for run in 0..2 {
        let out = Command::new(go)
            .args([&format!("127.0.0.1:{}", origin.port), origin.name.as_str()])
            .arg(&origin.root.cert)
            .output()
            .expect("the Go client starts");
        assert!(
            out.status.success(),
            "go: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ev = daemon
            .event(Duration::from_secs(30), |e| {
                e["server_name"] == origin.name.as_str() && e["process"]["comm"] == "go-dial"
            })
            .unwrap_or_else(|| panic!("run {run}: no event; log:\n{}", daemon.log.seen.join("\n")));
        assert_eq!(ev["tls_version"], "1.3", "{ev}");
        if run == 0 {
            // The uprobe is attached off the daemon's main loop, which reports run 0's
            // handshake meanwhile: wait until status says the program is covered.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !tls_libraries(&daemon)
                .iter()
                .any(|l| l["path"] == go.to_str().unwrap() && l["chains"] == "uprobe")
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{} not listed as covered by a uprobe: {:#?}",
                    go.display(),
                    tls_libraries(&daemon)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if run == 1 {
            assert_eq!(
                ev["chain_source"],
                "uprobe",
                "{ev}\nlog:\n{}",
                daemon.log.seen.join("\n")
            );
            assert_eq!(ev["verdict"], "clean", "{ev}");
            assert_eq!(
                ev["chain"][0]["sha256"].as_str(),
                Some(origin.leaf.sha256().as_str()),
                "{ev}"
            );
        }
    }
    // Stripped of its symbols, no uprobe can find crypto/tls: listed as probe only.
    let stripped = build_go(dir.path(), GO_DIAL, "-s -w");
    let _ = Command::new(&stripped)
        .output()
        .expect("the stripped client starts");
    // Chromium carries BoringSSL with nothing exported: listed, probe only.
    let chromium = Path::new("/usr/lib/chromium/chromium");
    let _ = Command::new(chromium)
        .arg("--version")
        .output()
        .expect("chromium (cargo xtask setup installs it)");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = status(&daemon);
        let libs = status["tls_libraries"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // The Go toolchain itself (`go build`, while the daemon runs) may be listed too.
        let listed = |path: &Path| {
            libs.iter()
                .any(|l| l["library"] == "Go crypto/tls" && l["path"] == path.to_str().unwrap())
        };
        let boringssl = libs.iter().any(|l| l["path"] == chromium.to_str().unwrap());
        if (listed(&go_path) && listed(&stripped) && boringssl)
            || std::time::Instant::now() > deadline
        {
            break status;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let libs = status["tls_libraries"].as_array().unwrap();
    let find = |library: &str| {
        libs.iter()
            .find(|l| l["library"] == library)
            .unwrap_or_else(|| panic!("{library} not listed: {status:#}"))
    };
    let node = find("OpenSSL (linked into the executable)");
    assert!(node["path"].as_str().unwrap().ends_with("/node"), "{node}");
    assert_eq!(node["chains"], "uprobe", "{node}");
    assert!(node["processes_last_hour"].as_u64() >= Some(2), "{node}");
    let go = |path: &Path| {
        libs.iter()
            .find(|l| l["library"] == "Go crypto/tls" && l["path"] == path.to_str().unwrap())
            .unwrap_or_else(|| panic!("{} not listed: {status:#}", path.display()))
    };
    assert_eq!(go(&go_path)["chains"], "uprobe", "{status:#}");
    assert_eq!(go(&go_path)["processes_last_hour"], 2, "{status:#}");
    assert_eq!(go(&stripped)["chains"], "probe_only", "{status:#}");
    assert_eq!(go(&stripped)["processes_last_hour"], 1, "{status:#}");
    assert_eq!(find("OpenSSL")["chains"], "uprobe");
    assert_eq!(find("GnuTLS")["chains"], "uprobe", "{status:#}");
    assert_eq!(find("NSS")["chains"], "uprobe", "{status:#}");
    let boringssl = find("BoringSSL (linked into the executable)");
    assert_eq!(boringssl["path"], chromium.to_str().unwrap(), "{boringssl}");
    assert_eq!(boringssl["chains"], "probe_only", "{boringssl}");
    assert!(
        status["engine_counters"]["programs_inspected"].as_u64() >= Some(3),
        "{status:#}"
    );
    assert!(
        status["kernel_counters"]["execs"].as_u64() >= Some(3),
        "{status:#}"
    );
    assert_eq!(status["kernel_counters"]["exec_drops"], 0, "{status:#}");
    assert!(daemon.interrupt().is_some_and(|s| s.success()));
}

/// `sensorctl status -o json`.
fn status(daemon: &Daemon) -> Value {
    let out = Command::new(sensor_tests::bin("sensorctl"))
        .arg("--socket")
        .arg(daemon.socket())
        .args(["status", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The daemon's list of TLS libraries and programs (`sensorctl status`).
fn tls_libraries(daemon: &Daemon) -> Vec<Value> {
    status(daemon)["tls_libraries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A Go TLS 1.3 client: dials ADDR, names SNI, trusts CA (PEM), sends a request, reads.
const GO_DIAL: &str = r#"package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 4 {
		os.Exit(2)
	}
	pem, err := os.ReadFile(os.Args[3])
	if err != nil {
		panic(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	c, err := tls.Dial("tcp", os.Args[1], &tls.Config{ServerName: os.Args[2], RootCAs: roots, MinVersion: tls.VersionTLS13})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", os.Args[2])
	buf := make([]byte, 100)
	c.Read(buf)
	c.Close()
}
"#;

/// Build a Go program from `source` into `dir` as `go-dial` (`-ldflags` as given: "-s -w"
/// strips it, named `go-dial-stripped`) with Debian's Go (`cargo xtask setup` installs it).
fn build_go(dir: &Path, source: &str, ldflags: &str) -> PathBuf {
    let src = dir.join("go-dial.go");
    std::fs::write(&src, source).unwrap();
    let out = dir.join(if ldflags.is_empty() {
        "go-dial"
    } else {
        "go-dial-stripped"
    });
    let built = Command::new("go")
        .args(["build", "-ldflags", ldflags, "-o"])
        .arg(&out)
        .arg(&src)
        .env("GO111MODULE", "off")
        .status()
        .expect("go (golang-go) is installed by cargo xtask setup");
    assert!(built.success(), "go build: {built}");
    out
}
