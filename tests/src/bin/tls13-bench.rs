//! tls13-bench: the figures of `cargo xtask bench tls13`, printed as name=value lines.
//!
//! What the OpenSSL uprobes cost a client: `curl` TLS 1.3 handshakes to a local
//! `openssl s_server`, with sensord running both times, once with its uprobes attached and once
//! without (the active probe is off in both, so only the uprobes differ). The handshake time is
//! curl's own `time_appconnect - time_connect`; rounds alternate between the two so that drift
//! hits both alike, and medians are compared.
//!
//! - `uprobe_latency_ratio`: median handshake with uprobes / without (target <= 1.05).
//! - `uprobe_curl_wall_ratio`: the same for curl's whole run (process start to exit), which
//!   also pays for the uprobes hit while curl loads its CA file.
//! - `uprobe_latency_ratio_node`, `uprobe_latency_ratio_go` and `uprobe_latency_ratio_gnutls`:
//!   the same handshake ratio for Node (`tls.connect`, the OpenSSL in its executable), a Go
//!   `crypto/tls` client built by the benchmark and the system's GnuTLS (through Python's
//!   ctypes), each timing its own handshake from the TCP connection to the end of the TLS
//!   handshake. NSS has no uprobe yet, so no figure. The first runs of each round are not counted: they are when sensord finds
//!   the program and attaches.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use sensor_tests::{
    Proc,
    pki::{self, Key},
};

#[derive(Parser)]
struct Args {
    /// The sensord binary.
    #[arg(long)]
    sensord: PathBuf,
    /// Rounds per configuration (they alternate).
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// curl runs per round.
    #[arg(long, default_value_t = 150)]
    runs: usize,
}

struct Sample {
    handshake_ms: f64,
    wall_ms: f64,
}

/// Node: the handshake from the TCP connection to `secureConnect`, in ms.
const NODE_CLIENT: &str = "const [port, ca] = process.argv.slice(1);\n\
    let tcp;\n\
    const s = require('tls').connect({host: '127.0.0.1', port: +port, servername: 'localhost', \
    ca: require('fs').readFileSync(ca), minVersion: 'TLSv1.3'}, () => {\n\
    console.log(Number(process.hrtime.bigint() - tcp) / 1e6); s.end(); });\n\
    s.on('connect', () => { tcp = process.hrtime.bigint(); });\n\
    s.on('error', (e) => { console.error(e.message); process.exit(1); });";

/// GnuTLS (the system's libgnutls through Python's ctypes, verifying in the handshake with
/// `gnutls_session_set_verify_cert`, as apt does): the same.
const GNUTLS_CLIENT: &str = r#"import ctypes, socket, sys, time
g = ctypes.CDLL("libgnutls.so.30")
port, ca = int(sys.argv[1]), sys.argv[2].encode()
def ok(r, what):
    if r < 0:
        sys.stderr.write("%s: %s\n" % (what, ctypes.c_char_p(g.gnutls_strerror(r)).value)); sys.exit(1)
g.gnutls_strerror.restype = ctypes.c_void_p
cred = ctypes.c_void_p(); ok(g.gnutls_certificate_allocate_credentials(ctypes.byref(cred)), "cred")
ok(g.gnutls_certificate_set_x509_trust_file(cred, ca, 1), "trust")
s = ctypes.c_void_p(); ok(g.gnutls_init(ctypes.byref(s), 1 << 1), "init")
ok(g.gnutls_priority_set_direct(s, b"NORMAL:-VERS-ALL:+VERS-TLS1.3", None), "priority")
ok(g.gnutls_credentials_set(s, 1, cred), "credentials")
ok(g.gnutls_server_name_set(s, 0, b"localhost", 9), "sni")
g.gnutls_session_set_verify_cert(s, b"localhost", 0)
sock = socket.create_connection(("127.0.0.1", port))
start = time.perf_counter()
g.gnutls_transport_set_int2(s, sock.fileno(), sock.fileno())
ok(g.gnutls_handshake(s), "handshake")
print((time.perf_counter() - start) * 1000)
g.gnutls_bye(s, 1)
"#;

/// NSS (libssl3 through ctypes, as Firefox uses it): the same, verifying against the NSS
/// database named by argv[2] (`sql:DIR`) with NSS's own certificate check.
const NSS_CLIENT: &str = r#"import ctypes, socket, sys, time
nspr = ctypes.CDLL("libnspr4.so"); nss = ctypes.CDLL("libnss3.so"); ssl = ctypes.CDLL("libssl3.so")
port, db = int(sys.argv[1]), sys.argv[2].encode()
def ok(r, what):
    if r != 0:
        sys.stderr.write("%s: NSS error %d\n" % (what, nspr.PR_GetError())); sys.exit(1)
ok(nss.NSS_Init(db), "NSS_Init")
ok(ssl.NSS_SetDomesticPolicy(), "policy")
class Range(ctypes.Structure):
    _fields_ = [("min", ctypes.c_uint16), ("max", ctypes.c_uint16)]
sock = socket.create_connection(("127.0.0.1", port))
nspr.PR_ImportTCPSocket.restype = ctypes.c_void_p
ssl.SSL_ImportFD.restype = ctypes.c_void_p
ssl.SSL_ImportFD.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
fd = nspr.PR_ImportTCPSocket(sock.detach())
s = ctypes.c_void_p(ssl.SSL_ImportFD(None, fd))
ok(ssl.SSL_OptionSet(s, 5, 1), "as client")
ok(ssl.SSL_VersionRangeSet(s, ctypes.byref(Range(0x0304, 0x0304))), "versions")
ok(ssl.SSL_SetURL(s, b"localhost"), "url")
ok(ssl.SSL_ResetHandshake(s, 0), "reset")
start = time.perf_counter()
ok(ssl.SSL_ForceHandshake(s), "handshake")
print((time.perf_counter() - start) * 1000)
nspr.PR_Close(s)
"#;

/// Go: the same with crypto/tls.
const GO_CLIENT: &str = r#"package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	pem, err := os.ReadFile(os.Args[2])
	if err != nil {
		panic(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	raw, err := net.Dial("tcp", "127.0.0.1:"+os.Args[1])
	if err != nil {
		panic(err)
	}
	start := time.Now()
	c := tls.Client(raw, &tls.Config{ServerName: "localhost", RootCAs: roots, MinVersion: tls.VersionTLS13})
	if err := c.Handshake(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(float64(time.Since(start).Microseconds()) / 1000)
	c.Close()
}
"#;

/// A client that prints its own handshake time in ms.
fn timed(cmd: &mut Command) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .context("running the client")?;
    let wall_ms = start.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!("client: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let handshake_ms = text
        .trim()
        .parse::<f64>()
        .with_context(|| format!("{text:?}"))?;
    Ok(Sample {
        handshake_ms,
        wall_ms,
    })
}

fn build_go(dir: &Path) -> anyhow::Result<PathBuf> {
    let src = dir.join("go-tls13.go");
    std::fs::write(&src, GO_CLIENT)?;
    let out = dir.join("go-tls13");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(&src)
        .env("GO111MODULE", "off")
        .status()
        .context("go build (golang-go)")?;
    if !status.success() {
        bail!("go build: {status}");
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq)]
enum Client {
    Curl,
    Node,
    Go,
    Gnutls,
    Nss,
}

fn curl(port: u16, ca: &Path) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--tlsv1.3", "-o", "/dev/null", "-w"])
        .arg("%{time_connect} %{time_appconnect}")
        .arg("--cacert")
        .arg(ca)
        .arg(format!("https://localhost:{port}/"))
        .stdin(Stdio::null())
        .output()
        .context("running curl")?;
    let wall_ms = start.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!("curl: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>());
    let (Some(Ok(connect)), Some(Ok(app))) = (it.next(), it.next()) else {
        bail!("curl printed {text:?}");
    };
    Ok(Sample {
        handshake_ms: (app - connect) * 1000.0,
        wall_ms,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// sensord with or without its uprobes, probe off; waits until it runs and checks whether the
/// uprobes attached as asked.
fn start_sensord(sensord: &Path, dir: &Path, uprobes: bool) -> anyhow::Result<Proc> {
    let state = dir.join(if uprobes { "with" } else { "without" });
    std::fs::create_dir_all(&state)?;
    let config = state.join("sensord.toml");
    std::fs::write(
        &config,
        format!("[probe]\nenabled = false\n[uprobe]\nenabled = {uprobes}\n"),
    )?;
    let log = state.join("sensord.log");
    let mut proc = Proc::spawn(
        "sensord",
        Command::new(sensord)
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .arg("--socket")
            .arg(state.join("sensord.sock"))
            .env("SENSOR_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("sensord running") {
            let attached = text.contains("uprobe d2i_X509");
            if attached != uprobes {
                bail!("sensord's uprobes: wanted {uprobes}, log says otherwise:\n{text}");
            }
            return Ok(proc);
        }
        if Instant::now() > deadline || proc.wait_timeout(Duration::from_millis(100)).is_some() {
            bail!("sensord did not start:\n{text}");
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    sensor_tests::require_root();
    let dir = tempfile::tempdir()?;
    let root = pki::root(dir.path(), "Bench Root", Key::P256);
    let leaf = pki::issue(
        dir.path(),
        &root,
        "localhost",
        Key::P256,
        false,
        &["localhost"],
    );
    let port = sensor_tests::free_port();
    let _server = sensor_tests::openssl_server(port, &leaf.cert, &leaf.key, &["-tls1_3"]);
    // Warm the page cache and the server.
    for _ in 0..20 {
        curl(port, &root.cert)?;
    }
    let go = build_go(dir.path())?;
    let nss_db = sensor_tests::pki::nss_db(&dir.path().join("nssdb"), &[&root.cert]);
    let run = |client: Client| -> anyhow::Result<Sample> {
        match client {
            Client::Curl => curl(port, &root.cert),
            Client::Node => timed(
                Command::new("node")
                    .args(["-e", NODE_CLIENT, &port.to_string()])
                    .arg(&root.cert),
            ),
            Client::Go => timed(Command::new(&go).arg(port.to_string()).arg(&root.cert)),
            Client::Gnutls => timed(
                Command::new("python3")
                    .args(["-c", GNUTLS_CLIENT, &port.to_string()])
                    .arg(&root.cert),
            ),
            Client::Nss => {
                timed(Command::new("python3").args(["-c", NSS_CLIENT, &port.to_string(), &nss_db]))
            }
        }
    };
    const CLIENTS: [Client; 5] = [
        Client::Curl,
        Client::Node,
        Client::Go,
        Client::Gnutls,
        Client::Nss,
    ];
    const WARMUP: usize = 3;
    // Per client: (handshakes, walls) with and without.
    let mut with: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); CLIENTS.len()];
    let mut without = with.clone();
    for round in 0..args.rounds * 2 {
        let uprobes = round % 2 == 0;
        let mut sensord = start_sensord(&args.sensord, dir.path(), uprobes)?;
        let into = if uprobes { &mut with } else { &mut without };
        for (i, client) in CLIENTS.into_iter().enumerate() {
            // curl uses the system library, attached at sensord's start: no warm-up needed,
            // and its figures stay comparable with earlier runs.
            let warmup = if client == Client::Curl { 0 } else { WARMUP };
            for n in 0..args.runs + warmup {
                let s = run(client)?;
                if n >= warmup {
                    into[i].0.push(s.handshake_ms);
                    into[i].1.push(s.wall_ms);
                }
            }
        }
        sensord.stop();
    }
    let (hs_with, hs_without) = (median(with[0].0.clone()), median(without[0].0.clone()));
    let (wall_with, wall_without) = (median(with[0].1.clone()), median(without[0].1.clone()));
    println!("curl_runs_per_configuration={}", args.rounds * args.runs);
    println!("handshake_ms_median_with_uprobes={hs_with:.3}");
    println!("handshake_ms_median_without_uprobes={hs_without:.3}");
    println!("uprobe_latency_ratio={:.3}", hs_with / hs_without);
    println!("curl_wall_ms_median_with_uprobes={wall_with:.2}");
    println!("curl_wall_ms_median_without_uprobes={wall_without:.2}");
    println!("uprobe_curl_wall_ratio={:.3}", wall_with / wall_without);
    for (i, name) in [(1, "node"), (2, "go"), (3, "gnutls"), (4, "nss")] {
        let (a, b) = (median(with[i].0.clone()), median(without[i].0.clone()));
        println!("{name}_handshake_ms_median_with_uprobes={a:.3}");
        println!("{name}_handshake_ms_median_without_uprobes={b:.3}");
        println!("uprobe_latency_ratio_{name}={:.3}", a / b);
    }
    Ok(())
}
