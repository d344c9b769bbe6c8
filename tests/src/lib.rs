//! Helpers for the integration and end-to-end tests: start the real sensord, real TLS servers
//! and clients, and clean every one of them up by PID when the test ends.
//!
//! Tests that need root and eBPF fail, never skip, without them.

pub mod capture;
pub mod cgroup;
pub mod client;
pub mod image;
pub mod interceptors;
pub mod lab;
pub mod load;
pub mod mtls;
pub mod netns;
pub mod pki;
pub mod quic;

use std::{
    io::{BufRead as _, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A wrapper for [`Daemon::start_wrapped`] that runs sensord with no capability beyond the
/// shipped unit's `CapabilityBoundingSet` (capsh drops the rest, CAP_SYS_ADMIN among them).
pub fn unit_capabilities() -> Vec<String> {
    let unit = std::fs::read_to_string(workspace_root().join("dist/sensord.service"))
        .expect("dist/sensord.service");
    let keep: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet")
        .split_whitespace()
        .map(str::to_lowercase)
        .collect();
    assert!(!keep.contains(&"cap_sys_admin".to_owned()), "{keep:?}");
    let print = Command::new("capsh")
        .arg("--print")
        .output()
        .expect("capsh");
    let print = String::from_utf8_lossy(&print.stdout);
    let bounding = print
        .lines()
        .find_map(|l| l.strip_prefix("Bounding set ="))
        .expect("capsh prints the bounding set");
    let drop: Vec<&str> = bounding
        .split(',')
        .map(str::trim)
        .filter(|c| !keep.iter().any(|k| k == c))
        .collect();
    assert!(drop.contains(&"cap_sys_admin"), "{drop:?}");
    vec![
        "capsh".to_owned(),
        format!("--drop={}", drop.join(",")),
        "--".to_owned(),
        "-c".to_owned(),
        "exec \"$0\" \"$@\"".to_owned(),
    ]
}

/// Path of a binary built by `cargo build --bins` (which `cargo xtask test` runs first).
pub fn bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` (cargo xtask test does)",
        path.display()
    );
    path
}

/// A program of the tests' Python virtual environment, `target/venv/bin/NAME`, which
/// `cargo xtask setup` installs.
pub fn venv_program(name: &str) -> PathBuf {
    let path = workspace_root().join("target/venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run cargo xtask setup",
        path.display()
    );
    path
}

/// Fail the test unless it runs as root: loading eBPF needs it.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test loads eBPF programs and must run as root (CI does)"
    );
}

/// A child process that is stopped (SIGTERM, then SIGKILL) and reaped when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self {
            name: name.to_owned(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill with our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Wait up to `timeout` for the process to exit; its status if it did.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, a grace period, then SIGKILL.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        self.signal(libc::SIGTERM);
        if let Some(s) = self.wait_timeout(Duration::from_secs(10)) {
            return Some(s);
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Lines of a child's output, read on a thread, with a timeout on each wait.
pub struct Lines {
    rx: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Lines {
    pub fn new(reader: impl std::io::Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// The first line (from now on) that satisfies `pred`, waiting at most `timeout`.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }
}

/// The real sensord, started with `--print json`.
pub struct Daemon {
    pub proc: Proc,
    pub events: Lines,
    pub log: Lines,
    pub state_dir: tempfile::TempDir,
}

impl Daemon {
    /// Start sensord and wait until it says it is running.
    pub fn start(extra_args: &[&str]) -> Self {
        Self::start_in(tempfile::tempdir().expect("temp state dir"), extra_args)
    }

    /// Start sensord with its state in `state_dir` (a restart keeps the journal).
    pub fn start_in(state_dir: tempfile::TempDir, extra_args: &[&str]) -> Self {
        Self::start_wrapped(state_dir, &[], extra_args)
    }

    /// Start sensord with `config` as a host whose machine id is `id`: in a private mount
    /// namespace where a file holding `id` (written in `dir`) is bound over /etc/machine-id,
    /// as a container or a cloned VM image would show it.
    pub fn start_as_host(id: &str, dir: &Path, config: &Path) -> Self {
        Self::start_as_host_in(
            id,
            dir,
            config,
            tempfile::tempdir().expect("temp state dir"),
        )
    }

    /// The same with a state directory of the caller's (to start again where a run stopped).
    pub fn start_as_host_in(
        id: &str,
        dir: &Path,
        config: &Path,
        state_dir: tempfile::TempDir,
    ) -> Self {
        if !Path::new("/etc/machine-id").exists() {
            // The bind mount needs a file to cover; an empty one is what systemd leaves in
            // images too.
            std::fs::write("/etc/machine-id", "").expect("creating /etc/machine-id");
        }
        let fake = dir.join(format!("machine-id-{id}"));
        std::fs::write(&fake, format!("{id}\n")).expect("writing the machine id");
        let wrapper: Vec<String> = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &format!(
                "mount --bind {} /etc/machine-id && exec \"$0\" \"$@\"",
                fake.display()
            ),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let config = config.to_str().expect("a UTF-8 path");
        Self::start_wrapped(state_dir, &wrapper, &["--config", config])
    }

    /// Start sensord through `wrapper` (a program and its arguments, which must end by
    /// exec'ing the sensord path and arguments that follow them), e.g. `capsh`.
    pub fn start_wrapped(
        state_dir: tempfile::TempDir,
        wrapper: &[String],
        extra_args: &[&str],
    ) -> Self {
        require_root();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin("sensord"));
                c
            }
            None => Command::new(bin("sensord")),
        };
        let mut proc = Proc::spawn(
            "sensord",
            cmd.arg("--state-dir")
                .arg(state_dir.path())
                .arg("--socket")
                .arg(state_dir.path().join("sensord.sock"))
                .args(["--print", "json"])
                .args(extra_args)
                .env("SENSOR_LOG", "info")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let events = Lines::new(proc.child.stdout.take().expect("stdout"));
        let mut log = Lines::new(proc.child.stderr.take().expect("stderr"));
        let ready = log.wait_for(Duration::from_secs(60), |l| l.contains("sensord running"));
        assert!(
            ready.is_some(),
            "sensord did not start; its log:\n{}",
            log.seen.join("\n")
        );
        Self {
            proc,
            events,
            log,
            state_dir,
        }
    }

    /// The first handshake event (JSON) satisfying `pred`, within `timeout`.
    pub fn event(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let line = self.events.wait_for(timeout, |l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| pred(&v))
        })?;
        serde_json::from_str(&line).ok()
    }

    /// The API's Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.state_dir.path().join("sensord.sock")
    }

    /// Stop with SIGINT, as Ctrl-C would, and return the exit status.
    pub fn interrupt(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.signal(libc::SIGINT);
        self.proc.wait_timeout(Duration::from_secs(20))
    }
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Wait until something accepts connections on `addr`.
pub fn wait_listening(addr: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {addr} after {timeout:?}");
}

/// A self-signed certificate and key made by `openssl req`, in `dir`.
pub fn self_signed(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{cn}.crt"));
    let key = dir.join(format!("{cn}.key"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN={cn}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{cn}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("running openssl req");
    assert!(status.success(), "openssl req failed");
    (cert, key)
}

/// `openssl s_server -www` (a small page) run by `openssl` (a command for the openssl binary,
/// perhaps inside a namespace), listening on `listen` (`addr:port`), with a certificate, its
/// key, the rest of its chain and more arguments; output closed. The caller waits for it.
pub fn spawn_s_server(
    mut openssl: Command,
    listen: &str,
    cert: &Path,
    key: &Path,
    chain: Option<&Path>,
    extra: &[&str],
) -> Proc {
    openssl
        .args(["s_server", "-quiet", "-www", "-accept", listen, "-cert"])
        .arg(cert)
        .arg("-key")
        .arg(key);
    if let Some(chain) = chain {
        openssl.arg("-cert_chain").arg(chain);
    }
    Proc::spawn(
        &format!("openssl s_server on {listen}"),
        openssl
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

/// `openssl s_server` on 127.0.0.1:`port`, answering with a small page (`-www`).
pub fn openssl_server(port: u16, cert: &Path, key: &Path, extra: &[&str]) -> Proc {
    let listen = format!("127.0.0.1:{port}");
    let p = spawn_s_server(Command::new("openssl"), &listen, cert, key, None, extra);
    wait_listening(&listen, Duration::from_secs(10));
    p
}

/// A self-signed `localhost` server on loopback, and TLS 1.2 handshakes to it (whose chains
/// are visible) with a chosen SNI.
pub struct LocalServer {
    _proc: Proc,
    _dir: tempfile::TempDir,
    pub connect: String,
}

impl LocalServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = self_signed(dir.path(), "localhost");
        let port = free_port();
        let proc = openssl_server(port, &cert, &key, &[]);
        Self {
            _proc: proc,
            _dir: dir,
            connect: format!("127.0.0.1:{port}"),
        }
    }

    /// One `openssl s_client -tls1_2` handshake; its pid.
    pub fn handshake(&self, sni: &str) -> u32 {
        openssl_client(&self.connect, sni, &["-tls1_2"])
    }
}

/// tinyproxy, an HTTP CONNECT proxy, on 127.0.0.1 (a free port), its files in `dir`.
pub fn tinyproxy(dir: &Path) -> (Proc, u16) {
    let port = free_port();
    let conf = dir.join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 16\nAllow 127.0.0.1\n\
             LogLevel Error\nPidFile \"{}\"\n",
            dir.join("tinyproxy.pid").display()
        ),
    )
    .expect("tinyproxy.conf");
    let proc = Proc::spawn(
        "tinyproxy",
        Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_listening(&format!("127.0.0.1:{port}"), Duration::from_secs(10));
    (proc, port)
}

/// `sensorctl analyze -o json CAPTURE ARGS...` (the debug build): its events. Panics unless it
/// succeeds.
pub fn analyze<S: AsRef<std::ffi::OsStr>>(capture: &Path, args: &[S]) -> Vec<serde_json::Value> {
    let out = Command::new(bin("sensorctl"))
        .args(["analyze", "-o", "json"])
        .arg(capture)
        .args(args)
        .output()
        .expect("running sensorctl");
    assert!(
        out.status.success(),
        "sensorctl analyze {}: {}",
        capture.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A rustls server with a fresh self-signed certificate for `name`, and a client that trusts
/// it, both limited to `version` (the load generators' handshakes).
pub fn rustls_configs(
    name: &str,
    version: &'static rustls::SupportedProtocolVersion,
) -> anyhow::Result<(
    std::sync::Arc<rustls::ServerConfig>,
    std::sync::Arc<rustls::ClientConfig>,
)> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()])?;
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[version])?
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der)?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((std::sync::Arc::new(server), std::sync::Arc::new(client)))
}

/// A name unique to this test process, for SNI values that no other test uses.
pub fn unique_name(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{label}-{}-{nanos}.test", std::process::id())
}

/// `openssl s_client` to `connect` with `sni`, sending one HTTP request; returns its pid.
/// Panics unless it exits 0.
pub fn openssl_client(connect: &str, sni: &str, extra: &[&str]) -> u32 {
    use std::io::Write as _;
    let mut client = Command::new("openssl")
        .args(["s_client", "-connect", connect, "-servername", sni])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let pid = client.id();
    if let Some(mut stdin) = client.stdin.take() {
        let _ = stdin.write_all(b"GET / HTTP/1.0\r\n\r\n");
    }
    let status = client.wait().expect("waiting for s_client");
    assert!(status.success(), "openssl s_client {connect}: {status}");
    pid
}
