//! Real TLS interceptors, started for a test: mitmproxy (from PyPI, in target/venv), sslsplit
//! and squid's ssl-bump (from Debian), and an origin server behind them. Each lives in the
//! test's own temporary folder and stops (by PID) when dropped.
//!
//! How they behave is recorded in shared/notes/interceptors.md.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    Proc, free_port,
    pki::{self, Issued, Key},
    wait_listening, workspace_root,
};

/// An HTTPS origin with a chain from its own "public" root.
pub struct Origin {
    pub proc: Proc,
    pub port: u16,
    pub addr: Ipv4Addr,
    pub root: Issued,
    pub leaf: Issued,
    pub name: String,
}

impl Origin {
    /// `openssl s_server -www` on `addr` (a free port), for `name`, chain leaf + intermediate.
    pub fn start(dir: &Path, name: &str, addr: Ipv4Addr) -> Self {
        let root = pki::root(dir, &format!("{name} Public Root"), Key::Rsa(2048));
        let inter = pki::issue(
            dir,
            &root,
            &format!("{name} Issuing CA"),
            Key::Rsa(2048),
            true,
            &[],
        );
        let leaf = pki::issue(dir, &inter, name, Key::P256, false, &[name]);
        let chain = pki::bundle(dir, &format!("{name}.chain.pem"), &[&inter]);
        let port = free_port();
        let proc = Proc::spawn(
            "origin s_server",
            Command::new("openssl")
                .args(["s_server", "-quiet", "-www", "-accept"])
                .arg(format!("{addr}:{port}"))
                .arg("-cert")
                .arg(&leaf.cert)
                .arg("-key")
                .arg(&leaf.key)
                .arg("-cert_chain")
                .arg(&chain)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_listening(&format!("{addr}:{port}"), Duration::from_secs(10));
        Self {
            proc,
            port,
            addr,
            root,
            leaf,
            name: name.to_owned(),
        }
    }
}

/// A running interceptor and the CA it signs with.
pub struct Interceptor {
    pub proc: Proc,
    /// Where clients connect: the proxy port (explicit proxies) or the forwarding port.
    pub port: u16,
    /// The interceptor's CA certificate (PEM).
    pub ca: PathBuf,
}

/// The venv's mitmdump (cargo xtask setup installs it).
pub fn mitmdump() -> PathBuf {
    let path = workspace_root().join("target/venv/bin/mitmdump");
    assert!(
        path.exists(),
        "{} missing: cargo xtask setup installs mitmproxy",
        path.display()
    );
    path
}

/// mitmproxy as an explicit (CONNECT) proxy on 127.0.0.1. It does not check the origin's
/// certificate (`ssl_insecure`): the origin's root is a test root.
pub fn mitmproxy_explicit(dir: &Path) -> Interceptor {
    let confdir = dir.join("mitmproxy");
    std::fs::create_dir_all(&confdir).unwrap();
    let port = free_port();
    let proc = Proc::spawn(
        "mitmdump",
        Command::new(mitmdump())
            .args([
                "--mode",
                "regular",
                "--listen-host",
                "127.0.0.1",
                "--listen-port",
            ])
            .arg(port.to_string())
            .args(["--set", "ssl_insecure=true", "--set"])
            .arg(format!("confdir={}", confdir.display()))
            .args(["-q"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_listening(&format!("127.0.0.1:{port}"), Duration::from_secs(60));
    let ca = confdir.join("mitmproxy-ca-cert.pem");
    for _ in 0..100 {
        if ca.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ca.exists(), "mitmproxy made no CA in {}", confdir.display());
    Interceptor { proc, port, ca }
}

/// A CA of our own for the interceptors that take one (sslsplit, squid).
fn own_ca(dir: &Path, name: &str) -> Issued {
    pki::root(dir, name, Key::Rsa(2048))
}

/// sslsplit forwarding 127.0.0.1:port to the origin, forging with a CA of our own.
pub fn sslsplit(dir: &Path, origin: &Origin) -> Interceptor {
    let ca = own_ca(dir, "sslsplit Test CA");
    let port = free_port();
    let proc = Proc::spawn(
        "sslsplit",
        Command::new("sslsplit")
            .arg("-k")
            .arg(&ca.key)
            .arg("-c")
            .arg(&ca.cert)
            .args(["-u", "root", "ssl", "127.0.0.1"])
            .arg(port.to_string())
            .arg(origin.addr.to_string())
            .arg(origin.port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_listening(&format!("127.0.0.1:{port}"), Duration::from_secs(20));
    Interceptor {
        proc,
        port,
        ca: ca.cert,
    }
}

/// squid (squid-openssl) as an explicit proxy that peeks at step 1 and bumps everything.
///
/// Squid will not run as root: it runs as Debian's `proxy` user, so its folder is handed to
/// that user. A service name of its own (`-n`) keeps its shared memory apart from other
/// squids.
pub fn squid_bump(dir: &Path) -> Interceptor {
    use std::os::unix::fs::PermissionsExt as _;
    let ca = own_ca(dir, "Squid Bump Test CA");
    let work = dir.join("squid");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ca_both = work.join("ca.pem");
    let mut pem = std::fs::read_to_string(&ca.cert).unwrap();
    pem.push_str(&std::fs::read_to_string(&ca.key).unwrap());
    std::fs::write(&ca_both, pem).unwrap();
    let ssl_db = work.join("ssl_db");
    let certgen = "/usr/lib/squid/security_file_certgen";
    let out = Command::new(certgen)
        .arg("-c")
        .arg("-s")
        .arg(&ssl_db)
        .args(["-M", "4MB"])
        .output()
        .expect("security_file_certgen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let conf = work.join("squid.conf");
    std::fs::write(
        &conf,
        format!(
            "http_port 127.0.0.1:{port} ssl-bump tls-cert={ca} generate-host-certificates=on dynamic_cert_mem_cache_size=4MB\n\
             sslcrtd_program {certgen} -s {db} -M 4MB\n\
             sslcrtd_children 2 startup=1 idle=1\n\
             acl step1 at_step SslBump1\n\
             ssl_bump peek step1\n\
             ssl_bump bump all\n\
             tls_outgoing_options flags=DONT_VERIFY_PEER\n\
             http_access allow all\n\
             cache deny all\n\
             access_log none\n\
             cache_log {log}\n\
             pid_filename {pid}\n\
             coredump_dir {work}\n\
             cache_effective_user proxy\n\
             memory_cache_shared off\n\
             collapsed_forwarding_shared_entries_limit 0\n\
             shutdown_lifetime 1 seconds\n",
            ca = ca_both.display(),
            db = ssl_db.display(),
            log = work.join("cache.log").display(),
            pid = work.join("squid.pid").display(),
            work = work.display(),
        ),
    )
    .unwrap();
    let chown = Command::new("chown")
        .args(["-R", "proxy:proxy"])
        .arg(&work)
        .status()
        .expect("chown");
    assert!(chown.success(), "chown the squid folder to proxy");
    static SERVICE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let service = format!(
        "sensortest{}x{}",
        std::process::id(),
        SERVICE.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let proc = Proc::spawn(
        "squid",
        Command::new("squid")
            .args(["-N", "-n", &service, "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_listening(&format!("127.0.0.1:{port}"), Duration::from_secs(30));
    Interceptor {
        proc,
        port,
        ca: ca.cert,
    }
}

/// mitmproxy in transparent mode, listening on every address of the host namespace. Traffic
/// reaches it through a [`Redirect`]; it finds the original destination with
/// `SO_ORIGINAL_DST` and does not check the origin's certificate (a test root).
pub fn mitmproxy_transparent(dir: &Path) -> Interceptor {
    let confdir = dir.join("mitmproxy-transparent");
    std::fs::create_dir_all(&confdir).unwrap();
    let port = free_port();
    let proc = Proc::spawn(
        "mitmdump transparent",
        Command::new(mitmdump())
            .args(["--mode", "transparent", "--listen-port"])
            .arg(port.to_string())
            .args(["--set", "ssl_insecure=true", "--set"])
            .arg(format!("confdir={}", confdir.display()))
            .args(["-q"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_listening(&format!("127.0.0.1:{port}"), Duration::from_secs(60));
    let ca = confdir.join("mitmproxy-ca-cert.pem");
    for _ in 0..100 {
        if ca.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ca.exists(), "mitmproxy made no CA in {}", confdir.display());
    Interceptor { proc, port, ca }
}

/// An iptables NAT rule that sends TCP arriving on `iface` for `dport` to a local port, as a
/// transparent interception appliance's redirect would. Removed on drop.
pub struct Redirect {
    rule: Vec<String>,
}

impl Redirect {
    pub fn new(iface: &str, dport: u16, to_port: u16) -> Self {
        let rule: Vec<String> = [
            "PREROUTING",
            "-i",
            iface,
            "-p",
            "tcp",
            "--dport",
            &dport.to_string(),
            "-j",
            "REDIRECT",
            "--to-ports",
            &to_port.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = Command::new("iptables")
            .args(["-t", "nat", "-A"])
            .args(&rule)
            .output()
            .expect("iptables");
        assert!(
            out.status.success(),
            "iptables -t nat -A {}: {}",
            rule.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Self { rule }
    }
}

impl Drop for Redirect {
    fn drop(&mut self) {
        let _ = Command::new("iptables")
            .args(["-t", "nat", "-D"])
            .args(&self.rule)
            .stderr(Stdio::null())
            .status();
    }
}
