//! Real TLS interceptors, started for a test: mitmproxy (from PyPI, in target/venv), sslsplit
//! and squid's ssl-bump (from Debian), and an origin server behind them. Each runs on the host's
//! loopback or in a lab namespace ([`Site`]), lives in the test's own temporary folder and stops
//! (by PID) when dropped.
//!
//! How they behave is recorded in shared/notes/interceptors.md.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

use crate::{
    Proc, free_port,
    netns::Namespace,
    pki::{self, Issued, Key},
    wait_listening,
};

/// Where a server runs: the host namespace, or a lab namespace, listening on `addr`.
#[derive(Clone, Copy)]
pub struct Site<'a> {
    pub ns: Option<&'a Namespace>,
    pub addr: &'a str,
}

impl Site<'_> {
    /// The host's loopback.
    pub const LOOPBACK: Site<'static> = Site {
        ns: None,
        addr: "127.0.0.1",
    };

    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match self.ns {
            Some(ns) => ns.command(program),
            None => Command::new(program),
        }
    }

    /// A port nobody listens on there.
    pub fn port(&self) -> u16 {
        static NEXT: AtomicU16 = AtomicU16::new(20_000);
        match self.ns {
            // A lab namespace is the test's own: any port is free.
            Some(_) => NEXT.fetch_add(1, Ordering::SeqCst),
            None => free_port(),
        }
    }

    /// Wait until something listens on `port` there (without connecting inside a namespace:
    /// a connection would count as a client).
    pub fn wait(&self, port: u16, timeout: Duration) {
        let Some(ns) = self.ns else {
            return wait_listening(&format!("{}:{port}", self.addr), timeout);
        };
        Self::wait_ss(ns, "-Hltn", port, timeout, self.addr);
    }

    /// Wait until a UDP socket is bound to `port` there (a namespace's).
    pub fn wait_udp(&self, port: u16, timeout: Duration) {
        if let Some(ns) = self.ns {
            Self::wait_ss(ns, "-Hlun", port, timeout, self.addr);
        }
    }

    fn wait_ss(ns: &Namespace, flags: &str, port: u16, timeout: Duration, addr: &str) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let out = ns
                .command("ss")
                .args([flags, &format!("sport = :{port}")])
                .output()
                .expect("ss");
            if !out.stdout.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "nothing listens on {addr}:{port} in {} after {timeout:?}",
            ns.name
        );
    }
}

/// An HTTPS origin with a chain from its own "public" root.
pub struct Origin {
    pub proc: Proc,
    pub port: u16,
    pub addr: Ipv4Addr,
    pub root: Issued,
    pub leaf: Issued,
    pub name: String,
    pub chain: PathBuf,
}

impl Origin {
    /// `openssl s_server -www` on `addr` (a free port), for `name`, chain leaf + intermediate.
    pub fn start(dir: &Path, name: &str, addr: Ipv4Addr) -> Self {
        let addr_text = addr.to_string();
        Self::start_at(
            dir,
            name,
            Site {
                ns: None,
                addr: &addr_text,
            },
        )
    }

    /// The same, at `site`.
    pub fn start_at(dir: &Path, name: &str, site: Site<'_>) -> Self {
        let pki::OriginPki { root, leaf, chain } = pki::origin(dir, name);
        let port = site.port();
        let proc = serve(site, port, &leaf, &chain, &[]);
        Self {
            proc,
            port,
            addr: site.addr.parse().expect("an IPv4 address"),
            root,
            leaf,
            name: name.to_owned(),
            chain,
        }
    }

    /// One more listener with the same chain, at `site` on `port`.
    pub fn also_serve(&self, site: Site<'_>, port: u16) -> Proc {
        serve(site, port, &self.leaf, &self.chain, &[])
    }

    /// One more listener with the same chain that speaks TLS 1.2 only.
    pub fn also_serve_tls12(&self, site: Site<'_>, port: u16) -> Proc {
        serve(site, port, &self.leaf, &self.chain, &["-tls1_2"])
    }
}

fn serve(site: Site<'_>, port: u16, leaf: &Issued, chain: &Path, extra: &[&str]) -> Proc {
    let proc = crate::spawn_s_server(
        site.command("openssl"),
        &format!("{}:{port}", site.addr),
        &leaf.cert,
        &leaf.key,
        Some(chain),
        extra,
    );
    site.wait(port, Duration::from_secs(10));
    proc
}

/// A running interceptor and the CA it signs with.
pub struct Interceptor {
    pub proc: Proc,
    /// Where clients connect: the proxy port (explicit proxies) or the forwarding port.
    pub port: u16,
    /// The interceptor's CA certificate (PEM).
    pub ca: PathBuf,
    /// Its key (PEM; mitmproxy's file holds both).
    pub ca_key: PathBuf,
}

/// The TLS versions an interceptor offers its clients: every one it can, or TLS 1.2 at most
/// (a middlebox that cannot do 1.3, or one configured not to; also how a test makes a client
/// that cannot cap its own version speak TLS 1.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientTls {
    #[default]
    Any,
    UpTo12,
}

/// The venv's mitmdump (cargo xtask setup installs it).
pub fn mitmdump() -> PathBuf {
    crate::venv_program("mitmdump")
}

/// How mitmproxy takes its traffic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MitmMode {
    /// An explicit proxy: clients send CONNECT.
    Regular,
    /// Behind a NAT redirect, finding the original destination with `SO_ORIGINAL_DST`;
    /// listens on every address.
    Transparent,
}

/// mitmproxy as an explicit (CONNECT) proxy on 127.0.0.1.
pub fn mitmproxy_explicit(dir: &Path) -> Interceptor {
    mitmproxy(dir, MitmMode::Regular, Site::LOOPBACK)
}

/// mitmproxy in transparent mode in the host namespace. Traffic reaches it through a
/// [`Redirect`].
pub fn mitmproxy_transparent(dir: &Path) -> Interceptor {
    mitmproxy(dir, MitmMode::Transparent, Site::LOOPBACK)
}

/// mitmproxy at `site`. It does not check the origin's certificate (`ssl_insecure`): the
/// origin's root is a test root. Instances started with the same `dir` share one CA (start
/// them one after the other).
pub fn mitmproxy(dir: &Path, mode: MitmMode, site: Site<'_>) -> Interceptor {
    mitmproxy_offering(dir, mode, site, ClientTls::Any)
}

/// mitmproxy at `site`, offering its clients `tls`.
pub fn mitmproxy_offering(
    dir: &Path,
    mode: MitmMode,
    site: Site<'_>,
    tls: ClientTls,
) -> Interceptor {
    let confdir = dir.join("mitmproxy");
    std::fs::create_dir_all(&confdir).unwrap();
    let port = site.port();
    let mut cmd = site.command(mitmdump());
    match mode {
        MitmMode::Regular => cmd.args(["--mode", "regular", "--listen-host", site.addr]),
        MitmMode::Transparent => cmd.args(["--mode", "transparent"]),
    };
    if tls == ClientTls::UpTo12 {
        cmd.args(["--set", "tls_version_client_max=TLS1_2"]);
    }
    let proc = Proc::spawn(
        &format!("mitmdump {mode:?}"),
        cmd.arg("--listen-port")
            .arg(port.to_string())
            .args(["--set", "ssl_insecure=true", "--set"])
            .arg(format!("confdir={}", confdir.display()))
            .args(["-q"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    site.wait(port, Duration::from_secs(60));
    let ca = confdir.join("mitmproxy-ca-cert.pem");
    for _ in 0..100 {
        if ca.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ca.exists(), "mitmproxy made no CA in {}", confdir.display());
    Interceptor {
        proc,
        port,
        ca,
        ca_key: confdir.join("mitmproxy-ca.pem"),
    }
}

/// A CA of our own for the interceptors that take one (sslsplit, squid).
fn own_ca(dir: &Path, name: &str) -> Issued {
    pki::root(dir, name, Key::Rsa(2048))
}

/// sslsplit forwarding 127.0.0.1:port to the origin, forging with a CA of our own.
pub fn sslsplit(dir: &Path, origin: &Origin) -> Interceptor {
    let target = (origin.addr.to_string(), origin.port);
    sslsplit_at(dir, Site::LOOPBACK, Some(&target))
}

/// sslsplit at `site`: forwarding to `target`, or, without one, transparent behind a NAT
/// redirect (its netfilter engine finds the original destination).
pub fn sslsplit_at(dir: &Path, site: Site<'_>, target: Option<&(String, u16)>) -> Interceptor {
    let ca = own_ca(dir, "sslsplit Test CA");
    sslsplit_with(site, target, &ca, ClientTls::Any)
}

/// sslsplit at `site` forging with `ca`, offering `tls` (its `-r` holds both sides to the
/// version).
pub fn sslsplit_with(
    site: Site<'_>,
    target: Option<&(String, u16)>,
    ca: &Issued,
    tls: ClientTls,
) -> Interceptor {
    let port = site.port();
    let mut cmd = site.command("sslsplit");
    cmd.arg("-k").arg(&ca.key).arg("-c").arg(&ca.cert);
    if tls == ClientTls::UpTo12 {
        cmd.args(["-r", "tls12"]);
    }
    cmd.args(["-u", "root", "ssl"]);
    match target {
        Some((addr, tport)) => cmd
            .arg(site.addr)
            .arg(port.to_string())
            .arg(addr)
            .arg(tport.to_string()),
        None => cmd.arg("0.0.0.0").arg(port.to_string()),
    };
    let proc = Proc::spawn(
        "sslsplit",
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    site.wait(port, Duration::from_secs(20));
    Interceptor {
        proc,
        port,
        ca: ca.cert.clone(),
        ca_key: ca.key.clone(),
    }
}

/// squid (squid-openssl) as an explicit proxy that peeks at step 1 and bumps everything.
///
/// Squid will not run as root: it runs as Debian's `proxy` user, so its folder is handed to
/// that user. A service name of its own (`-n`) keeps its shared memory apart from other
/// squids.
pub fn squid_bump(dir: &Path) -> Interceptor {
    squid_bump_at(dir, Site::LOOPBACK)
}

/// squid's ssl-bump as an explicit proxy at `site`.
pub fn squid_bump_at(dir: &Path, site: Site<'_>) -> Interceptor {
    squid_at(dir, site, SquidBump::ClientFirst)
}

/// When squid's ssl-bump meets the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SquidBump {
    /// Peek at step 1, bump at step 2: the client's handshake first, the server only for its
    /// request.
    ClientFirst,
    /// Peek, stare at step 2, bump at step 3: the server's handshake first, its certificate
    /// mimicked for the client (a server sees a completed handshake even when the client
    /// then refuses the forged certificate).
    ServerFirst,
}

/// squid's ssl-bump as an explicit proxy at `site`, bumping as `bump` says.
pub fn squid_at(dir: &Path, site: Site<'_>, bump: SquidBump) -> Interceptor {
    let ca = own_ca(dir, "Squid Bump Test CA");
    squid_with(dir, site, bump, &ca, ClientTls::Any)
}

/// squid's ssl-bump at `site`, bumping as `bump` says, forging with `ca`, offering `tls`.
pub fn squid_with(
    dir: &Path,
    site: Site<'_>,
    bump: SquidBump,
    ca: &Issued,
    tls: ClientTls,
) -> Interceptor {
    use std::os::unix::fs::PermissionsExt as _;
    let work = dir.join(format!(
        "{}{}",
        match bump {
            SquidBump::ClientFirst => "squid",
            SquidBump::ServerFirst => "squid-server-first",
        },
        match tls {
            ClientTls::Any => "",
            ClientTls::UpTo12 => "-tls12",
        }
    ));
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
    let port = site.port();
    let conf = work.join("squid.conf");
    std::fs::write(
        &conf,
        format!(
            "http_port {addr}:{port} ssl-bump tls-cert={ca} generate-host-certificates=on dynamic_cert_mem_cache_size=4MB{options}\n\
             sslcrtd_program {certgen} -s {db} -M 4MB\n\
             sslcrtd_children 2 startup=1 idle=1\n\
             acl step1 at_step SslBump1\n\
             acl step2 at_step SslBump2\n\
             ssl_bump peek step1\n\
             {bump_steps}\
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
            addr = site.addr,
            options = match tls {
                ClientTls::Any => "",
                ClientTls::UpTo12 => " tls-options=NO_TLSv1_3",
            },
            bump_steps = match bump {
                SquidBump::ClientFirst => "",
                SquidBump::ServerFirst => "ssl_bump stare step2\n",
            },
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
        site.command("squid")
            .args(["-N", "-n", &service, "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    site.wait(port, Duration::from_secs(30));
    Interceptor {
        proc,
        port,
        ca: ca.cert.clone(),
        ca_key: ca.key.clone(),
    }
}

/// A NAT rule that sends TCP arriving on `iface` for `dport` to a local port, as a transparent
/// interception gateway's redirect would: iptables REDIRECT, or nft redirect. Removed on drop.
pub struct Redirect {
    ns: Option<String>,
    undo: Vec<String>,
}

/// Which netfilter front end writes the rule.
#[derive(Clone, Copy, Debug)]
pub enum Netfilter {
    Iptables,
    Nft,
}

fn run_at(ns: Option<&str>, args: &[String]) -> std::process::Output {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]);
            c.arg(&args[0]);
            c
        }
        None => Command::new(&args[0]),
    };
    cmd.args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .expect("netfilter command")
}

impl Redirect {
    /// An iptables rule in the host namespace.
    pub fn new(iface: &str, dport: u16, to_port: u16) -> Self {
        Self::at(None, Netfilter::Iptables, iface, dport, to_port)
    }

    /// A rule in `ns` (or the host namespace).
    pub fn at(
        ns: Option<&Namespace>,
        with: Netfilter,
        iface: &str,
        dport: u16,
        to_port: u16,
    ) -> Self {
        let ns = ns.map(|n| n.name.clone());
        let words = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        let (steps, undo) = match with {
            Netfilter::Iptables => {
                let rule = format!(
                    "PREROUTING -i {iface} -p tcp --dport {dport} -j REDIRECT --to-ports {to_port}"
                );
                (
                    vec![words(&format!("iptables -t nat -A {rule}"))],
                    words(&format!("iptables -t nat -D {rule}")),
                )
            }
            Netfilter::Nft => {
                // A table of its own, named for the ports: deleting it undoes everything.
                let table = format!("sensortest_{dport}_{to_port}");
                (
                    vec![
                        words(&format!("nft add table ip {table}")),
                        words(&format!(
                            "nft add chain ip {table} pre {{ type nat hook prerouting priority -100 ; }}"
                        )),
                        words(&format!(
                            "nft add rule ip {table} pre iifname {iface} tcp dport {dport} redirect to :{to_port}"
                        )),
                    ],
                    words(&format!("nft delete table ip {table}")),
                )
            }
        };
        let redirect = Self { ns, undo };
        for step in steps {
            let out = run_at(redirect.ns.as_deref(), &step);
            assert!(
                out.status.success(),
                "{}: {}",
                step.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        redirect
    }
}

impl Drop for Redirect {
    fn drop(&mut self) {
        let _ = run_at(self.ns.as_deref(), &self.undo);
    }
}
