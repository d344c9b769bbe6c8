//! The interception lab: real interceptors and real clients in network namespaces, the real
//! sensord in the host namespace watching them.
//!
//! ```text
//!  client ns                      middlebox ns                          origin ns
//!  curl, openssl s_client,  ───►  mitmproxy (explicit; transparent ───► openssl s_server
//!  Python urllib, gnutls-cli,     behind iptables REDIRECT), sslsplit    (a chain from a
//!  Node, wget, Go, Java,          (transparent behind nft redirect),     "public" test root)
//!  Chromium, Firefox              squid ssl-bump (explicit)
//! ```
//!
//! A client that cannot cap its own TLS version (Chromium) plays its TLS 1.2 rows against a
//! second set of the same interceptors, and an origin listener, that offer TLS 1.2 at most.
//!
//! The matrix is {clean, each interceptor} × {the client trusts the interceptors' CAs, it does
//! not} × {TLS 1.2, TLS 1.3} × {each client}. sensord treats the origin's root as public and
//! the interceptors' CAs as this host's own store (IT pushed them). [`run`] plays every row and
//! judges the event the client's handshake produced (found by the client's pid).

pub mod evasion;
pub mod quic;
pub mod server_side;
pub mod topology;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    Daemon, Proc,
    interceptors::{
        self, ClientTls, Interceptor, MitmMode, Netfilter, Origin, Redirect, Site, SquidBump,
    },
    pki,
};
use topology::Topology;

/// Who stands between the client and the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interception {
    Clean,
    MitmproxyExplicit,
    MitmproxyTransparent,
    SslsplitTransparent,
    SquidBump,
}

impl Interception {
    pub const ALL: [Interception; 5] = [
        Interception::Clean,
        Interception::MitmproxyExplicit,
        Interception::MitmproxyTransparent,
        Interception::SslsplitTransparent,
        Interception::SquidBump,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::MitmproxyExplicit => "mitmproxy-explicit",
            Self::MitmproxyTransparent => "mitmproxy-transparent",
            Self::SslsplitTransparent => "sslsplit-transparent",
            Self::SquidBump => "squid-bump",
        }
    }

    fn is_mitmproxy(self) -> bool {
        matches!(self, Self::MitmproxyExplicit | Self::MitmproxyTransparent)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Client {
    Curl,
    OpenSsl,
    Python,
    Gnutls,
    /// Node.js `https.get` (its own OpenSSL, linked in).
    Node,
    /// wget (GnuTLS).
    Wget,
    /// A Go net/http client (crypto/tls, statically linked), built by the lab.
    Go,
    /// A Java `java.net.http.HttpClient` (JSSE: Java code, no native TLS library), compiled by
    /// the lab, trusting a keytool trust store.
    Java,
    /// Headless Chromium over TCP (BoringSSL, linked in: nothing a uprobe can find), trusting
    /// an NSS database made with certutil. Chromium has no switch that caps its TLS version:
    /// its TLS 1.2 rows run against an origin listener and interceptors that offer TLS 1.2 at
    /// most.
    Chromium,
    /// Headless Firefox ESR (NSS, its own copy of libnss3 beside the executable), a fresh
    /// profile each row whose NSS database (certutil) trusts the row's CAs.
    Firefox,
}

impl Client {
    pub const ALL: [Client; 10] = [
        Client::Curl,
        Client::OpenSsl,
        Client::Python,
        Client::Gnutls,
        Client::Node,
        Client::Wget,
        Client::Go,
        Client::Java,
        Client::Chromium,
        Client::Firefox,
    ];

    /// The clients of the clean churn row (issue 23's false-positive budget). Node, wget and
    /// Go play the matrix only: on a loaded machine the churn with them drew
    /// `probe_skipped:rate_limit` on clean TLS 1.3 handshakes and, once, a probe chain that was
    /// not the origin's for a Go one; both are open (see the README's lab section).
    pub const CHURN: [Client; 4] = [
        Client::Curl,
        Client::OpenSsl,
        Client::Python,
        Client::Gnutls,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Curl => "curl",
            Self::OpenSsl => "openssl-s_client",
            Self::Python => "python-urllib",
            Self::Gnutls => "gnutls-cli",
            Self::Node => "node-https",
            Self::Wget => "wget",
            Self::Go => "go-net/http",
            Self::Java => "java-httpclient",
            Self::Chromium => "chromium-headless",
            Self::Firefox => "firefox-esr-headless",
        }
    }

    /// Whether the client can be told to speak one TLS version (Chromium cannot: the servers
    /// of its TLS 1.2 rows offer no more).
    fn caps_its_version(self) -> bool {
        self != Self::Chromium
    }

    /// A TLS library whose chains the uprobes read: the system's OpenSSL or GnuTLS (gnutls-cli,
    /// wget), OpenSSL linked into the executable (Node), Go's crypto/tls, or the NSS Firefox
    /// carries (sensord attaches to it when it reads the maps of a process that connects);
    /// sensord finds Node and Go when the program
    /// starts. (The TLS 1.2 rows play first, so each program has started once before its first
    /// TLS 1.3 row: a program's very first run can end before its uprobes attach.) Java's
    /// JSSE is Java code and Chromium's BoringSSL is linked in with no symbols: no uprobe can
    /// read their chains, and their TLS 1.3 chains come from the probe.
    fn chains_from_uprobe(self) -> bool {
        matches!(
            self,
            Self::Curl
                | Self::OpenSsl
                | Self::Python
                | Self::Gnutls
                | Self::Node
                | Self::Wget
                | Self::Go
                | Self::Firefox
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    V12,
    V13,
}

impl Tls {
    pub fn name(self) -> &'static str {
        match self {
            Self::V12 => "1.2",
            Self::V13 => "1.3",
        }
    }
}

/// One row of the matrix.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub path: Interception,
    /// The client trusts the interceptors' CAs (besides the origin's root).
    pub trusts: bool,
    pub tls: Tls,
    pub client: Client,
}

impl Scenario {
    pub fn all() -> Vec<Scenario> {
        let mut rows = Vec::new();
        for path in Interception::ALL {
            for trusts in [true, false] {
                for tls in [Tls::V12, Tls::V13] {
                    for client in Client::ALL {
                        rows.push(Scenario {
                            path,
                            trusts,
                            tls,
                            client,
                        });
                    }
                }
            }
        }
        rows
    }

    /// The row's servers offer TLS 1.2 at most: its client cannot be held to it.
    fn served_up_to_12(&self) -> bool {
        self.tls == Tls::V12 && !self.client.caps_its_version()
    }

    pub fn name(&self) -> String {
        format!(
            "{} / {} / TLS {} / {}",
            self.path.name(),
            if self.trusts {
                "client trusts CA"
            } else {
                "client does not"
            },
            self.tls.name(),
            self.client.name()
        )
    }

    /// What the event must show.
    pub fn expected(&self) -> Expected {
        let source = match (self.tls, self.client.chains_from_uprobe()) {
            (Tls::V12, _) => "passive",
            (Tls::V13, true) => "uprobe",
            (Tls::V13, false) => "probe",
        };
        if self.path == Interception::Clean {
            return Expected::clean(source);
        }
        if self.trusts {
            let mut reasons = vec!["local_root".to_owned()];
            if self.path.is_mitmproxy() {
                reasons.push("known_interceptor:mitmproxy".into());
            }
            Expected {
                verdicts: vec!["intercepted"],
                reasons,
                exact: false,
                source,
                completes: true,
                graded: Some(true),
            }
        } else {
            let alert = match (self.client, self.tls) {
                // GnuTLS encrypts its TLS 1.3 alert (OpenSSL sends it in clear): the sensor
                // sees a refusal, not which alert.
                (Client::Gnutls | Client::Go | Client::Firefox, Tls::V13) => {
                    Some("client_rejected:encrypted")
                }
                (Client::Gnutls | Client::Go, Tls::V12) => Some("client_rejected:bad_certificate"),
                // NSS finishes its TLS 1.2 handshake while it checks the chain, then refuses
                // with an alert sent encrypted, before any request.
                (Client::Firefox, Tls::V12) => Some("client_rejected:encrypted"),
                // Node and wget check the chain after the handshake and close without an
                // alert; Java's HttpClient closes its socket on the failed check without
                // sending the alert JSSE made: the verdict stands on the chain alone.
                (Client::Node | Client::Wget | Client::Java, _) => None,
                // BoringSSL's TLS 1.3 alert is encrypted; in TLS 1.2 Chromium checks the chain
                // before its second flight and says `certificate_unknown` in clear.
                (Client::Chromium, Tls::V13) => Some("client_rejected:encrypted"),
                (Client::Chromium, Tls::V12) => Some("client_rejected:certificate_unknown"),
                _ => Some("client_rejected:unknown_ca"),
            };
            Expected {
                verdicts: vec!["untrusted", "intercepted"],
                reasons: alert.into_iter().map(str::to_owned).collect(),
                exact: false,
                source,
                completes: false,
                graded: None,
            }
        }
    }
}

/// The verdict (one of), the reasons (all of; with `exact`, those and no other), where the
/// chain came from, whether the client completed its request, and whether the event grades
/// an interceptor (`None`: either).
#[derive(Clone, Debug)]
pub struct Expected {
    pub verdicts: Vec<&'static str>,
    pub reasons: Vec<String>,
    pub exact: bool,
    pub source: &'static str,
    pub completes: bool,
    pub graded: Option<bool>,
}

impl Expected {
    /// A clean handshake: `clean` for `public_root` and nothing else (no `*_changed`, no
    /// `probe_*`), and the client completed it.
    pub fn clean(source: &'static str) -> Self {
        Self {
            verdicts: vec!["clean"],
            reasons: vec!["public_root".into()],
            exact: true,
            source,
            completes: true,
            graded: Some(false),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} [{}{}] via {}; client {}{}",
            self.verdicts.join("|"),
            self.reasons.join(", "),
            if self.exact { ", nothing else" } else { "" },
            self.source,
            if self.completes {
                "completes"
            } else {
                "refuses"
            },
            match self.graded {
                Some(true) => "; interceptor graded",
                Some(false) => "; no grade",
                None => "",
            }
        )
    }
}

/// What a row produced.
#[derive(Clone, Debug)]
pub struct Got {
    pub verdict: String,
    pub reasons: Vec<String>,
    pub source: String,
    pub completed: bool,
    /// The interceptor's grade and its reasons: `C (3des, no_aead)`.
    pub grade: Option<String>,
    /// The events of the client's other connections in the same row (Chromium's).
    pub more: Vec<Got>,
}

impl Got {
    pub fn describe(&self) -> String {
        format!(
            "{} [{}] via {}; client {}{}",
            self.verdict,
            self.reasons.join(", "),
            self.source,
            if self.completed {
                "completed"
            } else {
                "refused"
            },
            self.grade
                .as_ref()
                .map(|g| format!("; grade {g}"))
                .unwrap_or_default()
        ) + &self
            .more
            .iter()
            .map(|m| format!(" + another connection: {}", m.describe()))
            .collect::<String>()
    }

    pub fn meets(&self, e: &Expected) -> bool {
        e.verdicts.contains(&self.verdict.as_str())
            && e.reasons.iter().all(|r| self.reasons.contains(r))
            && (!e.exact || self.reasons.len() == e.reasons.len())
            && self.source == e.source
            && self.completed == e.completes
            && e.graded.is_none_or(|g| g == self.grade.is_some())
            && self.more.iter().all(|m| m.meets(e))
    }
}

/// One row's result, as `results.json` holds it.
#[derive(Clone, Debug)]
pub struct Row {
    pub scenario: String,
    pub expected: String,
    pub got: String,
    pub pass: bool,
}

impl Row {
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "scenario": self.scenario,
            "expected": self.expected,
            "got": self.got,
            "pass": self.pass,
        })
    }
}

/// Build the Go client into `dir` with Debian's Go (`cargo xtask setup` installs golang-go),
/// its build cache under target/.
fn build_go_client(dir: &Path) -> PathBuf {
    let out = dir.join("go-client");
    let source = crate::workspace_root().join("tests/lab-clients/go-client.go");
    let cache = crate::workspace_root().join("target/go-cache");
    let status = std::process::Command::new("go")
        .args(["build", "-trimpath", "-o"])
        .arg(&out)
        .arg(&source)
        .env("GOCACHE", &cache)
        .env("GOPATH", cache.join("gopath"))
        .env("GO111MODULE", "off")
        .status()
        .expect("go (cargo xtask setup installs golang-go)");
    assert!(status.success(), "go build {}: {status}", source.display());
    out
}

/// Compile the Java client into `dir/java` with Debian's JDK (`cargo xtask setup` installs
/// default-jdk-headless); the class folder.
fn build_java_client(dir: &Path) -> PathBuf {
    let out = dir.join("java");
    let source = crate::workspace_root().join("tests/lab-clients/JavaClient.java");
    let status = std::process::Command::new("javac")
        .arg("-d")
        .arg(&out)
        .arg(&source)
        .status()
        .expect("javac (cargo xtask setup installs default-jdk-headless)");
    assert!(status.success(), "javac {}: {status}", source.display());
    out
}

/// A PKCS#12 trust store made with keytool, trusting each of `cas` (PEM files).
fn java_trust_store(dir: &Path, name: &str, cas: &[&Path]) -> PathBuf {
    let store = dir.join(name);
    let _ = std::fs::remove_file(&store);
    for (i, ca) in cas.iter().enumerate() {
        let out = std::process::Command::new("keytool")
            .args([
                "-importcert",
                "-noprompt",
                "-storetype",
                "PKCS12",
                "-storepass",
            ])
            .arg(JAVA_STORE_PASSWORD)
            .arg("-alias")
            .arg(format!("ca{i}"))
            .arg("-keystore")
            .arg(&store)
            .arg("-file")
            .arg(ca)
            .output()
            .expect("keytool (cargo xtask setup installs default-jdk-headless)");
        assert!(
            out.status.success(),
            "keytool -importcert {}: {}",
            ca.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    store
}

/// Firefox preferences that keep a headless run to the page it is asked for: no updates,
/// telemetry, remote settings, captive-portal or connectivity checks, prefetching or DoH.
const FIREFOX_QUIET: &str = r#"user_pref("app.update.enabled", false);
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("browser.startup.homepage_override.mstone", "ignore");
user_pref("browser.startup.page", 0);
user_pref("browser.newtabpage.enabled", false);
user_pref("browser.region.network.url", "");
user_pref("browser.region.update.enabled", false);
user_pref("browser.safebrowsing.malware.enabled", false);
user_pref("browser.safebrowsing.phishing.enabled", false);
user_pref("browser.safebrowsing.downloads.enabled", false);
user_pref("browser.search.update", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("toolkit.telemetry.enabled", false);
user_pref("extensions.update.enabled", false);
user_pref("extensions.getAddons.cache.enabled", false);
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
user_pref("network.dns.disablePrefetch", true);
user_pref("network.http.speculative-parallel-limit", 0);
user_pref("network.trr.mode", 5);
user_pref("security.OCSP.enabled", 0);
user_pref("security.remote_settings.crlite_filters.enabled", false);
user_pref("security.remote_settings.intermediates.enabled", false);
user_pref("services.settings.server", "http://127.0.0.1:9/");
"#;

/// The lab's trust stores' password (they hold only public certificates).
const JAVA_STORE_PASSWORD: &str = "lab-trust";

/// `node -e NODE_CLIENT URL CA VERSION [PROXY]`: https.get, through an HTTP CONNECT proxy when
/// one is given (Node has no proxy support of its own), exit 0 once the response starts.
const NODE_CLIENT: &str = r#"
const fs = require('fs'), http = require('http'), https = require('https'), tls = require('tls');
const [url, caFile, version, proxy] = process.argv.slice(1);
const u = new URL(url);
const v = 'TLSv' + version;
const opts = { ca: fs.readFileSync(caFile), minVersion: v, maxVersion: v, servername: u.hostname };
const fail = (e) => { console.error(String(e && e.message || e)); process.exit(1); };
setTimeout(() => fail('timeout'), 15000).unref();
function get(socket) {
  // createConnection is used only when no agent is given.
  const extra = socket
    ? { createConnection: () => tls.connect({ ...opts, socket }) }
    : { agent: false };
  https.get({ ...opts, host: u.hostname, port: u.port, path: '/', ...extra }, (res) => {
    res.destroy();
    process.exit(0);
  }).on('error', fail);
}
if (proxy) {
  const [host, port] = proxy.split(':');
  http.request({ host, port, method: 'CONNECT', path: u.hostname + ':' + u.port })
    .on('connect', (res, socket) => (res.statusCode === 200 ? get(socket) : fail(res.statusCode)))
    .on('error', fail)
    .end();
} else {
  get(null);
}
"#;

const PY_CLIENT: &str = r#"
import ssl, sys, urllib.request
url, ca, version = sys.argv[1], sys.argv[2], sys.argv[3]
proxy = sys.argv[4] if len(sys.argv) > 4 else None
ctx = ssl.create_default_context(cafile=ca)
v = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
ctx.minimum_version = v
ctx.maximum_version = v
opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({"https": proxy} if proxy else {}),
    urllib.request.HTTPSHandler(context=ctx),
)
opener.open(url, timeout=15).read()
"#;

/// The lab's interceptors offering their clients TLS 1.2 at most.
struct UpTo12 {
    mitm_explicit: Interceptor,
    mitm_transparent: Interceptor,
    sslsplit: Interceptor,
    squid: Interceptor,
}

/// Everything the rows run against.
/// Fields drop in order: the daemon and the processes first, the namespaces last.
pub struct Lab {
    pub daemon: Daemon,
    pub origin: Origin,
    /// The origin's extra listeners (the transparent interceptors' ports).
    _origin_more: Vec<Proc>,
    transparent_mitm_port: u16,
    sslsplit_port: u16,
    /// Where the clean rows connect: the origin's port, or the churn row's own.
    clean_port: u16,
    mitm_explicit: Interceptor,
    mitm_transparent: Interceptor,
    sslsplit: Interceptor,
    squid: Interceptor,
    /// The same interceptors (and CAs) offering TLS 1.2 at most, started for the first row
    /// that needs them.
    up_to_12: Option<UpTo12>,
    _redirects: Vec<Redirect>,
    /// Local CONNECT relays for gnutls-cli, which speaks no HTTP proxy: (proxy port, relay).
    relays: Vec<(u16, u16, Proc)>,
    /// The origin's root alone, and with every interceptor's CA.
    ca_origin_only: PathBuf,
    ca_with_interceptors: PathBuf,
    /// The Go client, built from tests/lab-clients/go-client.go.
    go_client: PathBuf,
    /// The Java client's classes (tests/lab-clients/JavaClient.java), and its trust stores:
    /// the origin's root alone, and with every interceptor's CA.
    java_classes: PathBuf,
    java_trust_origin: PathBuf,
    java_trust_all: PathBuf,
    /// Chromium's homes, each with an NSS database (`.pki/nssdb`): the origin's root alone,
    /// and with every interceptor's CA.
    chromium_home_origin: PathBuf,
    chromium_home_all: PathBuf,
    /// Firefox's profile templates: an NSS database trusting the origin's root alone, and
    /// with every interceptor's CA.
    firefox_template_origin: PathBuf,
    firefox_template_all: PathBuf,
    /// The browsers' rows so far, and the cgroup of the one playing: Chromium's network
    /// service (a child process) makes its connections, and both browsers leave processes
    /// behind, so a browser's events are found by their cgroup, which is killed at the end.
    browser_runs: usize,
    browser_cgroup: Option<crate::cgroup::TestCgroup>,
    dir: PathBuf,
    pub topo: Topology,
}

impl Lab {
    pub fn start(dir: &Path) -> Self {
        let topo = Topology::new("origin.lab.test");
        let origin_site = Site {
            ns: Some(&topo.origin),
            addr: &topo.origin_ip,
        };
        let origin = Origin::start_at(dir, &topo.origin_name, origin_site);
        let transparent_mitm_port = origin_site.port();
        let sslsplit_port = origin_site.port();
        let origin_more = vec![
            origin.also_serve(origin_site, transparent_mitm_port),
            origin.also_serve(origin_site, sslsplit_port),
        ];
        let mbox = Site {
            ns: Some(&topo.middlebox),
            addr: &topo.middlebox_ip,
        };
        let mitm_explicit = interceptors::mitmproxy(dir, MitmMode::Regular, mbox);
        let mitm_transparent = interceptors::mitmproxy(dir, MitmMode::Transparent, mbox);
        let sslsplit = interceptors::sslsplit_at(dir, mbox, None);
        let squid = interceptors::squid_bump_at(dir, mbox);
        let redirects = vec![
            Redirect::at(
                Some(&topo.middlebox),
                Netfilter::Iptables,
                &topo.middlebox_client_if,
                transparent_mitm_port,
                mitm_transparent.port,
            ),
            Redirect::at(
                Some(&topo.middlebox),
                Netfilter::Nft,
                &topo.middlebox_client_if,
                sslsplit_port,
                sslsplit.port,
            ),
        ];
        let client_site = Site {
            ns: Some(&topo.client),
            addr: "127.0.0.1",
        };
        let mut relays = Vec::new();
        for proxy in [mitm_explicit.port, squid.port] {
            let port = client_site.port();
            let relay = Proc::spawn(
                "socat CONNECT relay",
                client_site
                    .command("socat")
                    .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
                    .arg(format!(
                        "PROXY:{}:{}:{},proxyport={proxy}",
                        topo.middlebox_ip, topo.origin_name, origin.port
                    ))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
            client_site.wait(port, Duration::from_secs(10));
            relays.push((proxy, port, relay));
        }
        let ca_origin_only = pki::bundle(dir, "trust-origin.pem", &[&origin.root]);
        let ca_with_interceptors = dir.join("trust-all.pem");
        let mut pem = std::fs::read_to_string(&origin.root.cert).unwrap();
        for ca in [&mitm_explicit.ca, &sslsplit.ca, &squid.ca] {
            pem.push_str(&std::fs::read_to_string(ca).unwrap());
        }
        std::fs::write(&ca_with_interceptors, pem).unwrap();

        let root = origin.root.cert.display().to_string();
        let cas: Vec<String> = [&mitm_explicit.ca, &sslsplit.ca, &squid.ca]
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let mut args = vec!["--public-roots", root.as_str()];
        for ca in &cas {
            args.extend(["--host-roots", ca.as_str()]);
        }
        // One user (root) plays every row, a few a second, each to another destination or
        // through another interceptor: the per-user and per-cgroup probe quotas (4 a second
        // by default, for hosts where any user decides which handshakes happen) would refuse
        // the probes of rows that follow each other closely. The lab gives that user the
        // global rate; the quotas themselves are tested in sensor-core and `bench abuse`.
        // The interceptors run on this host too: the QUIC rows' mitmproxy makes its own
        // upstream connections to the origin, each a handshake sensord probes, which a host
        // behind a real middlebox never sees; 2 probes per destination a minute (the default)
        // would leave none for the row's client.
        let config = dir.join("lab-sensord.toml");
        std::fs::write(
            &config,
            "[probe]\nmax_per_uid_per_second = 10\nmax_per_cgroup_per_second = 10\n\
             max_per_destination_per_minute = 20\n",
        )
        .expect("the lab's sensord.toml");
        let config = config.display().to_string();
        args.extend(["--config", config.as_str()]);
        let daemon = Daemon::start(&args);
        let clean_port = origin.port;
        let go_client = build_go_client(dir);
        let java_classes = build_java_client(dir);
        let java_trust_origin =
            java_trust_store(dir, "trust-origin.p12", &[origin.root.cert.as_path()]);
        let java_trust_all = java_trust_store(
            dir,
            "trust-all.p12",
            &[
                origin.root.cert.as_path(),
                mitm_explicit.ca.as_path(),
                sslsplit.ca.as_path(),
                squid.ca.as_path(),
            ],
        );
        let all_cas = [
            origin.root.cert.as_path(),
            mitm_explicit.ca.as_path(),
            sslsplit.ca.as_path(),
            squid.ca.as_path(),
        ];
        let chromium_home_origin = dir.join("chromium-home-origin");
        pki::nss_db(&chromium_home_origin.join(".pki/nssdb"), &all_cas[..1]);
        let chromium_home_all = dir.join("chromium-home-all");
        pki::nss_db(&chromium_home_all.join(".pki/nssdb"), &all_cas);
        let firefox_template_origin = dir.join("firefox-origin");
        pki::nss_db(&firefox_template_origin, &all_cas[..1]);
        let firefox_template_all = dir.join("firefox-all");
        pki::nss_db(&firefox_template_all, &all_cas);
        Self {
            topo,
            origin,
            _origin_more: origin_more,
            transparent_mitm_port,
            sslsplit_port,
            clean_port,
            mitm_explicit,
            mitm_transparent,
            sslsplit,
            squid,
            up_to_12: None,
            _redirects: redirects,
            relays,
            ca_origin_only,
            go_client,
            java_classes,
            java_trust_origin,
            java_trust_all,
            chromium_home_origin,
            chromium_home_all,
            firefox_template_origin,
            firefox_template_all,
            browser_runs: 0,
            browser_cgroup: None,
            ca_with_interceptors,
            dir: dir.to_path_buf(),
            daemon,
        }
    }

    /// The origin port the client asks for, and the explicit proxy it goes through.
    fn route(&self, s: &Scenario) -> (u16, Option<u16>) {
        let (mitm_explicit, squid) = if s.served_up_to_12() {
            let up_to_12 = self
                .up_to_12
                .as_ref()
                .expect("the TLS 1.2 interceptors are started before their rows");
            (&up_to_12.mitm_explicit, &up_to_12.squid)
        } else {
            (&self.mitm_explicit, &self.squid)
        };
        match s.path {
            Interception::Clean => (self.clean_port, None),
            Interception::MitmproxyExplicit => (self.origin.port, Some(mitm_explicit.port)),
            Interception::SquidBump => (self.origin.port, Some(squid.port)),
            Interception::MitmproxyTransparent => (self.transparent_mitm_port, None),
            Interception::SslsplitTransparent => (self.sslsplit_port, None),
        }
    }

    /// The interceptors offering TLS 1.2 at most, with the CAs of the others (the clients'
    /// stores already trust them, or not, as the row says).
    fn start_up_to_12(&mut self) {
        if self.up_to_12.is_some() {
            return;
        }
        let mbox = Site {
            ns: Some(&self.topo.middlebox),
            addr: &self.topo.middlebox_ip,
        };
        let signer = |i: &Interceptor| pki::Issued {
            cert: i.ca.clone(),
            key: i.ca_key.clone(),
        };
        self.up_to_12 = Some(UpTo12 {
            mitm_explicit: interceptors::mitmproxy_offering(
                &self.dir,
                MitmMode::Regular,
                mbox,
                ClientTls::UpTo12,
            ),
            mitm_transparent: interceptors::mitmproxy_offering(
                &self.dir,
                MitmMode::Transparent,
                mbox,
                ClientTls::UpTo12,
            ),
            sslsplit: interceptors::sslsplit_with(
                mbox,
                None,
                &signer(&self.sslsplit),
                ClientTls::UpTo12,
            ),
            squid: interceptors::squid_with(
                &self.dir,
                mbox,
                SquidBump::ClientFirst,
                &signer(&self.squid),
                ClientTls::UpTo12,
            ),
        });
    }

    /// An origin listener of a row's own, and the transparent interceptor's redirect for it.
    /// Firefox refusing an interceptor's certificate in TLS 1.2 leaves mitmproxy's connection
    /// to the origin open, and `openssl s_server` serves one connection at a time, so a shared
    /// listener would stall every later row; a row whose servers offer TLS 1.2 at most gets a
    /// listener that does, behind the interceptors that do. Dropped (the listener stopped)
    /// after the row.
    fn own_origin(&self, s: &Scenario) -> (u16, Proc, Option<Redirect>) {
        let site = Site {
            ns: Some(&self.topo.origin),
            addr: &self.topo.origin_ip,
        };
        let port = site.port();
        let (listener, mitm_transparent, sslsplit) = match &self.up_to_12 {
            Some(up_to_12) if s.served_up_to_12() => (
                self.origin.also_serve_tls12(site, port),
                &up_to_12.mitm_transparent,
                &up_to_12.sslsplit,
            ),
            _ => (
                self.origin.also_serve(site, port),
                &self.mitm_transparent,
                &self.sslsplit,
            ),
        };
        let redirect = match s.path {
            Interception::MitmproxyTransparent => Some((Netfilter::Iptables, mitm_transparent)),
            Interception::SslsplitTransparent => Some((Netfilter::Nft, sslsplit)),
            _ => None,
        }
        .map(|(with, to)| {
            Redirect::at(
                Some(&self.topo.middlebox),
                with,
                &self.topo.middlebox_client_if,
                port,
                to.port,
            )
        });
        (port, listener, redirect)
    }

    /// Run the client of a row (towards `own_port` instead of the path's, when given); its
    /// pid, and whether it completed.
    fn run_client(&mut self, s: &Scenario, own_port: Option<u16>) -> (u32, bool) {
        let (port, proxy) = self.route(s);
        let port = own_port.unwrap_or(port);
        let name = &self.topo.origin_name;
        let ca = if s.trusts {
            &self.ca_with_interceptors
        } else {
            &self.ca_origin_only
        };
        let proxy_addr = proxy.map(|p| format!("{}:{p}", self.topo.middlebox_ip));
        let ns = &self.topo.client;
        let mut cmd = match s.client {
            Client::Curl => {
                let mut c = ns.command("curl");
                c.args(["-sS", "-o", "/dev/null", "--max-time", "15", "--cacert"])
                    .arg(ca);
                match s.tls {
                    Tls::V12 => c.args(["--tlsv1.2", "--tls-max", "1.2"]),
                    Tls::V13 => c.arg("--tlsv1.3"),
                };
                if let Some(p) = &proxy_addr {
                    c.arg("-x").arg(format!("http://{p}"));
                }
                c.arg(format!("https://{name}:{port}/"));
                c
            }
            Client::OpenSsl => {
                let mut c = ns.command("openssl");
                c.args(["s_client", "-verify_return_error", "-connect"])
                    .arg(format!("{name}:{port}"))
                    .args(["-servername", name, "-CAfile"])
                    .arg(ca)
                    .arg(match s.tls {
                        Tls::V12 => "-tls1_2",
                        Tls::V13 => "-tls1_3",
                    });
                if let Some(p) = &proxy_addr {
                    c.arg("-proxy").arg(p);
                }
                c
            }
            Client::Python => {
                let mut c = ns.command("python3");
                c.args(["-c", PY_CLIENT])
                    .arg(format!("https://{name}:{port}/"))
                    .arg(ca)
                    .arg(s.tls.name());
                if let Some(p) = &proxy_addr {
                    c.arg(format!("http://{p}"));
                }
                c
            }
            Client::Node => {
                let mut c = ns.command("node");
                c.args(["-e", NODE_CLIENT])
                    .arg(format!("https://{name}:{port}/"))
                    .arg(ca)
                    .arg(s.tls.name());
                if let Some(p) = &proxy_addr {
                    c.arg(p);
                }
                c
            }
            Client::Wget => {
                // The response's head on stdout (-S, the log on stdout): wget exits 4 when an
                // interceptor closes without close_notify, after a good response. Debian's wget
                // is built with GnuTLS, whose --secure-protocol=TLSv1_2 still allows 1.3: the
                // priority string pins the version.
                let mut c = ns.command("wget");
                c.args([
                    "-q",
                    "-S",
                    "-o",
                    "-",
                    "-O",
                    "/dev/null",
                    "--tries=1",
                    "--timeout=15",
                ])
                .arg(format!("--ca-certificate={}", ca.display()))
                .arg(format!(
                    "--ciphers=NORMAL:-VERS-ALL:+VERS-TLS{}",
                    s.tls.name()
                ));
                match &proxy_addr {
                    Some(p) => c
                        .args(["-e", "use_proxy=yes", "-e"])
                        .arg(format!("https_proxy=http://{p}")),
                    None => c.args(["--no-proxy"]),
                };
                c.arg(format!("https://{name}:{port}/"));
                c
            }
            Client::Go => {
                let mut c = ns.command(&self.go_client);
                c.arg(format!("https://{name}:{port}/"))
                    .arg(ca)
                    .arg(s.tls.name());
                if let Some(p) = &proxy_addr {
                    c.arg(p);
                }
                c
            }
            Client::Java => {
                let store = if s.trusts {
                    &self.java_trust_all
                } else {
                    &self.java_trust_origin
                };
                let mut c = ns.command("java");
                c.arg(format!("-Djavax.net.ssl.trustStore={}", store.display()))
                    .arg(format!(
                        "-Djavax.net.ssl.trustStorePassword={JAVA_STORE_PASSWORD}"
                    ))
                    .arg("-Djavax.net.ssl.trustStoreType=PKCS12")
                    // Start fast: one short-lived request, no JIT warm-up worth having.
                    .args(["-XX:TieredStopAtLevel=1", "-Xshare:auto", "-cp"])
                    .arg(&self.java_classes)
                    .arg("JavaClient")
                    .arg(format!("https://{name}:{port}/"))
                    .arg(s.tls.name());
                if let Some(p) = &proxy_addr {
                    c.arg(p);
                }
                c
            }
            Client::Chromium => {
                self.browser_runs += 1;
                let cgroup = crate::cgroup::TestCgroup::new(&format!("lab-b{}", self.browser_runs));
                let profile = self
                    .dir
                    .join(format!("chromium-profile-{}", self.browser_runs));
                let home = if s.trusts {
                    &self.chromium_home_all
                } else {
                    &self.chromium_home_origin
                };
                // Into the row's cgroup, then into the client's namespace.
                let mut c = cgroup.command("ip");
                c.args(["netns", "exec", &ns.name, "chromium"])
                    .args([
                        "--headless=new",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--no-first-run",
                        "--disable-background-networking",
                        "--disable-quic",
                        "--dump-dom",
                    ])
                    .arg(format!("--user-data-dir={}", profile.display()))
                    .env("HOME", home);
                if let Some(p) = &proxy_addr {
                    c.arg(format!("--proxy-server=http://{p}"));
                }
                c.arg(format!("https://{name}:{port}/"));
                self.browser_cgroup = Some(cgroup);
                c
            }
            Client::Firefox => return self.run_firefox(s, port, proxy_addr.as_deref()),
            Client::Gnutls => {
                let mut c = ns.command("gnutls-cli");
                c.arg("--x509cafile").arg(ca).arg(format!(
                    "--priority=NORMAL:-VERS-ALL:+VERS-TLS{}",
                    s.tls.name()
                ));
                // No HTTP proxy support: a local relay sends the CONNECT.
                match proxy.and_then(|p| self.relays.iter().find(|r| r.0 == p)) {
                    Some((_, relay, _)) => c
                        .args(["--sni-hostname", name, "--verify-hostname", name, "-p"])
                        .arg(relay.to_string())
                        .arg("127.0.0.1"),
                    None => c.arg("-p").arg(port.to_string()).arg(name),
                };
                c
            }
        };
        // gnutls-cli may exit non-zero after a good handshake when the peer closes abruptly:
        // its own report says whether the handshake completed.
        let report = self.dir.join("client.out");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&report).expect("client output file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the client");
        let pid = child.id();
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(format!("GET / HTTP/1.0\r\nHost: {name}\r\n\r\n").as_bytes());
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let ok = loop {
            match child.try_wait() {
                Ok(Some(_)) if s.client == Client::Gnutls => {
                    break std::fs::read_to_string(&report)
                        .is_ok_and(|o| o.contains("- Handshake was completed"));
                }
                // Chromium's page: the origin's (s_server -www) or an error page.
                Ok(Some(_)) if s.client == Client::Chromium => {
                    break std::fs::read_to_string(&report).is_ok_and(|o| o.contains("s_server"));
                }
                Ok(Some(_)) if s.client == Client::Wget => {
                    break std::fs::read_to_string(&report).is_ok_and(|o| o.contains("HTTP/1."));
                }
                Ok(Some(status)) => break status.success(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break false;
                }
            }
        };
        (pid, ok)
    }

    /// Play one row.
    pub fn play(&mut self, s: &Scenario) -> Row {
        let expected = s.expected();
        let got = self.handshake(s);
        Row {
            scenario: s.name(),
            expected: expected.describe(),
            got: got.describe(),
            pass: got.meets(&expected),
        }
    }

    /// The clean churn row: `n` clean handshakes from the churn's clients over TLS 1.2 and
    /// 1.3, in a random order, to the same origin. Every one must be `clean` for `public_root`
    /// and nothing else: the same unchanged server answering different clients differently is
    /// not a change. The origin answers on a port of its own here, so that the baseline starts
    /// empty for it (sensord's baseline is per server name and port) and the row does not
    /// depend on what the matrix taught it.
    pub fn churn(&mut self, n: usize) -> Row {
        let site = Site {
            ns: Some(&self.topo.origin),
            addr: &self.topo.origin_ip,
        };
        let port = site.port();
        let _server = self.origin.also_serve(site, port);
        self.clean_port = port;
        let mut kinds = Vec::with_capacity(n);
        for i in 0..n {
            let client = Client::CHURN[i % Client::CHURN.len()];
            let tls = if (i / Client::CHURN.len()).is_multiple_of(2) {
                Tls::V12
            } else {
                Tls::V13
            };
            kinds.push(Scenario {
                path: Interception::Clean,
                trusts: i.is_multiple_of(3),
                tls,
                client,
            });
        }
        // A Fisher-Yates shuffle from a seed that the row names, so that a failure replays.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        let mut state = seed;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in (1..kinds.len()).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            kinds.swap(i, j);
        }
        let mut spurious = Vec::new();
        for s in &kinds {
            let expected = Expected::clean(s.expected().source);
            let got = self.handshake(s);
            if !got.meets(&expected) {
                spurious.push(format!("{}: {}", s.name(), got.describe()));
            }
        }
        self.clean_port = self.origin.port;
        Row {
            scenario: format!(
                "clean churn: {n} handshakes, {} clients, TLS 1.2 and 1.3, seed {seed}",
                Client::CHURN.len()
            ),
            expected: format!("{n} × clean [public_root, nothing else]"),
            got: if spurious.is_empty() {
                format!("{n} × clean [public_root]")
            } else {
                format!("{} of {n} not: {}", spurious.len(), spurious.join("; "))
            },
            pass: spurious.is_empty(),
        }
    }

    /// Run a row's client and find its event. Chromium's are found by the row's cgroup, and
    /// every connection it made (it may leave a preconnection unused) must say the same.
    fn handshake(&mut self, s: &Scenario) -> Got {
        // Kept until the row's events are in (a probe may still ask the origin).
        if s.served_up_to_12() {
            self.start_up_to_12();
        }
        let own_origin = (s.served_up_to_12()
            || (s.client == Client::Firefox && !s.trusts && s.path != Interception::Clean))
            .then(|| self.own_origin(s));
        let (pid, completed) = self.run_client(s, own_origin.as_ref().map(|o| o.0));
        let name = self.topo.origin_name.clone();
        let cgroup = self.browser_cgroup.take();
        let cgroup_name = cgroup.as_ref().map(|c| {
            let root = crate::cgroup::cgroup2_root();
            format!(
                "/{}",
                c.path().strip_prefix(&root).unwrap_or(c.path()).display()
            )
        });
        let ours = |e: &Value| {
            e["server_name"] == name.as_str()
                && match &cgroup_name {
                    Some(cg) => e["process"]["cgroup"] == cg.as_str(),
                    None => e["process"]["pid"] == pid,
                }
        };
        let event = self.daemon.event(Duration::from_secs(20), ours);
        let mut got = Self::got(event, completed);
        if let Some(cgroup) = cgroup {
            if got.verdict != "no event" {
                while let Some(e) = self.daemon.event(Duration::from_secs(2), ours) {
                    got.more.push(Self::got(Some(e), completed));
                }
            }
            cgroup.kill(Duration::from_secs(10));
        }
        drop(own_origin);
        got
    }

    /// Headless Firefox ESR in the row's cgroup, a fresh profile from the row's template with
    /// the row's TLS version and proxy in its `user.js`. `--screenshot` loads the page and
    /// exits, but waits forever on a certificate error page: Firefox's own HTTP log says
    /// whether the origin's response head came (completed) or a request closed on a
    /// certificate error (refused; else the row gives up after 20 s), and then the row's
    /// cgroup is killed. (Its background requests, to hosts the lab
    /// does not resolve or through the row's proxy, fail on their own.)
    fn run_firefox(&mut self, s: &Scenario, port: u16, proxy: Option<&str>) -> (u32, bool) {
        self.browser_runs += 1;
        let cgroup = crate::cgroup::TestCgroup::new(&format!("lab-b{}", self.browser_runs));
        let profile = self
            .dir
            .join(format!("firefox-profile-{}", self.browser_runs));
        std::fs::create_dir_all(&profile).expect("a Firefox profile folder");
        let template = if s.trusts {
            &self.firefox_template_all
        } else {
            &self.firefox_template_origin
        };
        for file in ["cert9.db", "key4.db", "pkcs11.txt"] {
            std::fs::copy(template.join(file), profile.join(file)).expect("the NSS database");
        }
        let version = match s.tls {
            Tls::V12 => 3,
            Tls::V13 => 4,
        };
        let mut prefs = format!(
            "user_pref(\"security.tls.version.min\", {version});\n\
             user_pref(\"security.tls.version.max\", {version});\n{FIREFOX_QUIET}"
        );
        if let Some((host, port)) = proxy.and_then(|p| p.rsplit_once(':')) {
            prefs.push_str(&format!(
                "user_pref(\"network.proxy.type\", 1);\n\
                 user_pref(\"network.proxy.ssl\", \"{host}\");\n\
                 user_pref(\"network.proxy.ssl_port\", {port});\n"
            ));
        }
        std::fs::write(profile.join("user.js"), prefs).expect("the profile's user.js");
        let log = profile.join("http.log");
        let name = &self.topo.origin_name;
        let mut child = cgroup
            .command("ip")
            .args(["netns", "exec", &self.topo.client.name, "firefox-esr"])
            .args(["--headless", "--no-remote", "--profile"])
            .arg(&profile)
            .arg("--screenshot")
            .arg(profile.join("page.png"))
            .arg(format!("https://{name}:{port}/"))
            .env("MOZ_LOG", "nsHttp:4")
            .env("MOZ_LOG_FILE", &log)
            .env("HOME", &profile)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("firefox-esr (cargo xtask setup installs it)");
        let pid = child.id();
        // MOZ_LOG_FILE gets a suffix; the parent process (which does the networking) writes
        // `<file>.moz_log`.
        let log = profile.join("http.log.moz_log");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut outcome = None;
        while Instant::now() < deadline {
            // Whether it exited before the log is read: what it wrote before exiting counts.
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            let text = std::fs::read(&log).unwrap_or_default();
            // Whole lines only: Firefox is writing the log while it is read, and half a line
            // (`ParseLine [HTTP/1.1 200 Conn`) would pass for the origin's answer.
            let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let text = String::from_utf8_lossy(&text[..whole]);
            // The origin's answer (`200 ok` from `openssl s_server -www`; squid may rewrite
            // the reason), not a proxy's to the CONNECT (`200 Connection established`).
            if text.lines().any(|l| {
                l.contains("ParseLine [HTTP/1")
                    && l.contains(" 200")
                    && !l.to_ascii_lowercase().contains("connection established")
            }) {
                outcome = Some(true);
            } else if text.lines().any(|l| {
                // A transaction closed on an error of the security module (0x805a….): NSS
                // refused the certificate (the lab's background requests fail on names it
                // does not resolve, 0x804b001e). Not waited out: the error page stays.
                l.contains("nsHttpTransaction::Close") && l.contains("reason=805a")
            }) {
                outcome = Some(false);
            }
            // Once the outcome is known the page is not waited for (its screenshot is not
            // needed): the row's cgroup is killed.
            if exited || outcome.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        cgroup.kill(Duration::from_secs(10));
        let _ = child.wait();
        self.browser_cgroup = Some(cgroup);
        (pid, outcome == Some(true))
    }

    /// What one event of a row says.
    fn got(event: Option<Value>, completed: bool) -> Got {
        match event {
            Some(e) => Got {
                verdict: e["verdict"].as_str().unwrap_or("?").to_owned(),
                reasons: e["reasons"]
                    .as_array()
                    .map(|r| {
                        r.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                source: e["chain_source"].as_str().unwrap_or("none").to_owned(),
                completed,
                grade: e["interceptor_grade"]["grade"].as_str().map(|g| {
                    let why: Vec<&str> = e["interceptor_grade"]["reasons"]
                        .as_array()
                        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
                        .unwrap_or_default();
                    if why.is_empty() {
                        g.to_owned()
                    } else {
                        format!("{g} ({})", why.join(", "))
                    }
                }),
                more: Vec::new(),
            },
            None => Got {
                verdict: "no event".into(),
                reasons: Vec::new(),
                source: "none".into(),
                completed,
                grade: None,
                more: Vec::new(),
            },
        }
    }
}

/// An event's reasons.
pub(crate) fn reasons(e: &Value) -> Vec<String> {
    e["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Handshakes in the clean churn row.
pub const CHURN_HANDSHAKES: usize = 200;

/// Which parts of the lab to play.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    All,
    Matrix,
    /// The origin's side (issue 19): sensord watches only the server.
    Server,
    Evasion,
}

/// Start the lab, play every row of the matrix, stop everything; then the evasion lab
/// ([`evasion`]) in namespaces of its own.
pub fn run(dir: &Path, part: Part, clients: &[Client]) -> Vec<Row> {
    let mut rows = Vec::new();
    if matches!(part, Part::All | Part::Matrix) {
        let mut lab = Lab::start(dir);
        rows.extend(
            Scenario::all()
                .iter()
                .filter(|s| clients.is_empty() || clients.contains(&s.client))
                .map(|s| lab.play(s)),
        );
        rows.push(lab.churn(CHURN_HANDSHAKES));
        rows.extend(quic::rows(&mut lab));
        let _ = lab.daemon.interrupt();
        // Every event sensord printed, for whoever reads a failed row (and for the
        // fingerprints of the interceptors, which the server-side rows are measured from).
        let _ = lab
            .daemon
            .events
            .wait_for(Duration::from_secs(1), |_| false);
        let dump = crate::workspace_root().join("target/lab/events.jsonl");
        let _ = std::fs::create_dir_all(dump.parent().expect("a folder"));
        let _ = std::fs::write(&dump, lab.daemon.events.seen.join("\n") + "\n");
        // And its log: attachments, probes, what it refused.
        let _ = lab
            .daemon
            .log
            .wait_for(Duration::from_millis(200), |_| false);
        let log = crate::workspace_root().join("target/lab/sensord.log");
        let _ = std::fs::write(&log, lab.daemon.log.seen.join("\n") + "\n");
    }
    if matches!(part, Part::All | Part::Server) {
        let server = dir.join("server-side");
        std::fs::create_dir_all(&server).expect("the server-side lab's folder");
        rows.extend(server_side::run(&server));
    }
    if matches!(part, Part::All | Part::Evasion) {
        let evasion = dir.join("evasion");
        std::fs::create_dir_all(&evasion).expect("the evasion lab's folder");
        rows.extend(evasion::run(&evasion));
    }
    rows
}
