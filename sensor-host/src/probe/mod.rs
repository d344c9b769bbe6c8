//! The active check: connect to a server as a client would, with the name the client used, and
//! record the certificate chain presented, TLS 1.3 included (a passive observer cannot see it
//! there). An edge: DNS, TCP, an optional HTTP CONNECT proxy, and a rustls handshake.
//!
//! The chain is recorded, never trusted: the verdict engine judges it afterwards. The server
//! must still prove it holds the leaf's key (the handshake signature is checked), so what is
//! recorded is what a real client would have been shown.

mod flight;
mod quic;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

pub use sensor_core::probe::{Proxy, Target, TargetError};
use sensor_core::{
    event::{ClientOffer, ProbeFailure, TlsVersion},
    x509::MAX_CHAIN_LEN,
};

/// A network namespace other than sensord's, held open: a process's namespace outlives the
/// process for as long as this handle lives, so a probe can still take the client's path
/// after a short-lived client exits. Equal by namespace inode.
#[derive(Clone, Debug)]
pub struct Netns {
    pub inode: u64,
    pub fd: Arc<std::os::fd::OwnedFd>,
}

impl PartialEq for Netns {
    fn eq(&self, other: &Self) -> bool {
        self.inode == other.inode
    }
}

impl Eq for Netns {}

/// How to reach the server.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// The name to send (SNI) and to judge the chain for; by default the target's host when
    /// it is a name. An IP target without one sends no SNI, as clients do.
    pub sni: Option<String>,
    /// Go through this HTTP proxy with CONNECT, as a client configured with it would.
    pub proxy: Option<Proxy>,
    /// For the whole check: resolving, connecting, the proxy and the handshake.
    pub timeout: Duration,
    /// ALPN protocols to offer.
    pub alpn: Vec<Vec<u8>>,
    /// Connect from this network namespace (that of the client whose handshake is checked),
    /// so that the probe takes the client's path. Entering it needs CAP_SYS_ADMIN; without it
    /// the probe fails with a clear cause.
    pub netns: Option<Netns>,
    /// Offer what this client offered (cipher suites, groups, versions, signature schemes),
    /// as far as rustls allows, so that the probe looks like the client.
    pub offer: Option<ClientOffer>,
    /// The User-Agent to send with the CONNECT request (the client's, when it was seen).
    pub user_agent: Option<String>,
    /// Reach the server over QUIC (version 1), as the client did. No proxy: QUIC does not
    /// go through an HTTP CONNECT proxy.
    pub quic: bool,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            sni: None,
            proxy: None,
            timeout: Duration::from_secs(10),
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            netns: None,
            offer: None,
            user_agent: None,
            quic: false,
        }
    }
}

/// What the server (or whatever answered for it) presented.
#[derive(Clone, Debug)]
pub struct Probed {
    /// The address connected to: the server's, or the proxy's.
    pub peer: SocketAddr,
    pub via_proxy: bool,
    /// The name sent in the SNI, if any.
    pub server_name: Option<String>,
    /// Leaf first, as presented.
    pub chain: Vec<CertificateDer<'static>>,
    /// `None` when the handshake failed after the certificate.
    pub tls_version: Option<TlsVersion>,
    pub cipher: Option<String>,
    pub alpn: Option<String>,
    /// Why the handshake did not complete after the chain was seen (e.g. the server wanted a
    /// client certificate). The server had proven it holds the leaf's key.
    pub handshake_error: Option<String>,
    /// Payload bytes of the server's encrypted flight (TLS 1.3: EncryptedExtensions to
    /// Finished; 0 for TLS 1.2), to compare with what the client received.
    pub flight_bytes: Option<u64>,
}

/// Why a check could not see a chain.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot resolve {host}: {error}")]
    Resolve { host: String, error: std::io::Error },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("cannot connect to {addr}: {error}")]
    Connect { addr: String, error: std::io::Error },
    #[error("proxy {proxy}: {reason}")]
    Proxy { proxy: String, reason: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0:?} is not a valid server name")]
    BadName(String),
    #[error("TLS handshake with {addr} failed before any certificate: {reason}")]
    Handshake { addr: SocketAddr, reason: String },
    #[error("TLS setup: {0}")]
    Setup(String),
    #[error("cannot enter the client's network namespace (net:[{inode}]): {error}")]
    Netns { inode: u64, error: std::io::Error },
}

impl ProbeError {
    /// The cause in a word, for a `probe_failed:<cause>` reason.
    pub fn cause(&self) -> ProbeFailure {
        match self {
            Self::Resolve { .. } | Self::NoAddress { .. } => ProbeFailure::Dns,
            Self::Connect { error, .. } => match error.kind() {
                std::io::ErrorKind::ConnectionRefused => ProbeFailure::Refused,
                std::io::ErrorKind::TimedOut => ProbeFailure::Timeout,
                _ => ProbeFailure::Unreachable,
            },
            Self::Proxy { .. } => ProbeFailure::Proxy,
            Self::Timeout(_) => ProbeFailure::Timeout,
            Self::BadName(_) => ProbeFailure::BadName,
            Self::Handshake { .. } => ProbeFailure::Handshake,
            Self::Setup(_) => ProbeFailure::Setup,
            Self::Netns { .. } => ProbeFailure::Netns,
        }
    }
}

/// Connect and record the chain.
pub async fn probe(target: &Target, opts: &ProbeOptions) -> Result<Probed, ProbeError> {
    tokio::time::timeout(opts.timeout, probe_inner(target, opts))
        .await
        .map_err(|_| ProbeError::Timeout(opts.timeout))?
}

async fn probe_inner(target: &Target, opts: &ProbeOptions) -> Result<Probed, ProbeError> {
    let sni = opts
        .sni
        .clone()
        .or_else(|| target.name().map(str::to_owned));
    let server_name = match &sni {
        Some(name) => {
            ServerName::try_from(name.clone()).map_err(|_| ProbeError::BadName(name.clone()))?
        }
        None => match target.ip() {
            Some(ip) => ServerName::IpAddress(ip.into()),
            None => return Err(ProbeError::BadName(target.to_string())),
        },
    };
    let netns = opts.netns.as_ref();
    if opts.quic {
        let addr = resolve(&target.host, target.port, netns).await?;
        let (mut config, mut recorder) = client_config(opts)?;
        if !quic::usable(&config) {
            // What the client offered leaves QUIC's Initial suite out: rustls's defaults.
            let plain = ProbeOptions {
                offer: None,
                ..opts.clone()
            };
            (config, recorder) = client_config(&plain)?;
        }
        let name = sni
            .clone()
            .unwrap_or_else(|| target.host.trim_matches(['[', ']']).to_owned());
        let sni_sent = sni.filter(|_| target.ip().is_none() || opts.sni.is_some());
        return quic::probe(addr, sni_sent, &name, opts, config, recorder).await;
    }
    let (tcp, peer) = match &opts.proxy {
        Some(proxy) => {
            let (mut tcp, peer) = connect(&proxy.host, proxy.port, netns, opts.timeout).await?;
            connect_through(&mut tcp, proxy, target, opts.user_agent.as_deref()).await?;
            (tcp, peer)
        }
        None => connect(&target.host, target.port, netns, opts.timeout).await?,
    };
    let _ = tcp.set_nodelay(true);

    let (config, recorder) = client_config(opts)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let (tcp, flight) = flight::Counted::new(tcp);
    let result = connector.connect(server_name, tcp).await;
    let chain = recorder.chain.lock().ok().and_then(|mut c| c.take());
    let sni_sent = sni.filter(|_| target.ip().is_none() || opts.sni.is_some());
    // A chain counts only from a server that proved it holds the leaf's key (its handshake
    // signature verified): anyone can send someone else's certificate.
    let proven = recorder.proven.load(Ordering::Relaxed);
    let chain = match (chain, &result) {
        (Some(_), Err(e)) if !proven => {
            return Err(ProbeError::Handshake {
                addr: peer,
                reason: format!("the server did not prove it holds the certificate's key: {e}"),
            });
        }
        (chain, _) => chain,
    };
    match (result, chain) {
        (Ok(mut tls), Some(chain)) => {
            let (_, conn) = tls.get_ref();
            let tls_version = conn.protocol_version().map(|v| match v {
                rustls::ProtocolVersion::TLSv1_3 => TlsVersion::Tls13,
                _ => TlsVersion::Tls12,
            });
            let cipher = conn
                .negotiated_cipher_suite()
                .and_then(|c| c.suite().as_str().map(str::to_owned));
            let alpn = conn
                .alpn_protocol()
                .map(|a| String::from_utf8_lossy(a).into_owned());
            let _ = tls.shutdown().await;
            Ok(Probed {
                peer,
                via_proxy: opts.proxy.is_some(),
                server_name: sni_sent,
                chain,
                flight_bytes: Some(flight.server_bytes()),
                tls_version,
                cipher,
                alpn,
                handshake_error: None,
            })
        }
        (Err(e), Some(chain)) => Ok(Probed {
            peer,
            via_proxy: opts.proxy.is_some(),
            server_name: sni_sent,
            chain,
            tls_version: None,
            cipher: None,
            alpn: None,
            handshake_error: Some(e.to_string()),
            // What came before the failure: compared with the client's all the same (a server
            // flight cut short must not spare the chain the comparison).
            flight_bytes: Some(flight.server_bytes()),
        }),
        (Err(e), None) => Err(ProbeError::Handshake {
            addr: peer,
            reason: e.to_string(),
        }),
        (Ok(_), None) => Err(ProbeError::Handshake {
            addr: peer,
            reason: "the server sent no certificate".into(),
        }),
    }
}

/// The probe's client: the recording verifier, and what the client offered (as far as rustls
/// allows: cipher suites, groups, versions and signature schemes in the client's order; not
/// its extension order or GREASE).
fn client_config(opts: &ProbeOptions) -> Result<(rustls::ClientConfig, Arc<Recorder>), ProbeError> {
    let base = rustls::crypto::ring::default_provider();
    let offer = opts.offer.as_ref();
    let mut provider = base.clone();
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> =
        vec![&rustls::version::TLS13, &rustls::version::TLS12];
    let mut schemes = Vec::new();
    if let Some(o) = offer {
        let suites: Vec<_> = o
            .cipher_suites
            .iter()
            .filter_map(|id| {
                base.cipher_suites
                    .iter()
                    .find(|s| u16::from(s.suite()) == *id)
                    .copied()
            })
            .collect();
        if !suites.is_empty() {
            provider.cipher_suites = suites;
        }
        let groups: Vec<_> = o
            .groups
            .iter()
            .filter_map(|id| {
                base.kx_groups
                    .iter()
                    .find(|g| u16::from(g.name()) == *id)
                    .copied()
            })
            .collect();
        if !groups.is_empty() {
            provider.kx_groups = groups;
        }
        let tls13 = o.versions.contains(&0x0304);
        let tls12 = o.versions.is_empty() || o.versions.contains(&0x0303);
        versions = match (tls13, tls12) {
            (true, false) => vec![&rustls::version::TLS13],
            (false, _) => vec![&rustls::version::TLS12],
            (true, true) => versions,
        };
        schemes = o
            .signature_algorithms
            .iter()
            .map(|&s| SignatureScheme::from(s))
            .collect();
    }
    let build = |provider: CryptoProvider,
                 versions: &[&'static rustls::SupportedProtocolVersion]| {
        let provider = Arc::new(provider);
        let recorder = Arc::new(Recorder {
            provider: provider.clone(),
            chain: Mutex::new(None),
            proven: AtomicBool::new(false),
            schemes: schemes.clone(),
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map(|b| {
                b.dangerous()
                    .with_custom_certificate_verifier(recorder.clone())
                    .with_no_client_auth()
            });
        config.map(|c| (c, recorder))
    };
    // What the client offered may leave rustls nothing to work with: then its defaults.
    let (mut config, recorder) = build(provider, &versions)
        .or_else(|_| build(base, &[&rustls::version::TLS13, &rustls::version::TLS12]))
        .map_err(|e| ProbeError::Setup(e.to_string()))?;
    config.alpn_protocols = opts.alpn.clone();
    config.resumption = rustls::client::Resumption::disabled();
    Ok((config, recorder))
}

/// The first address of `host` (an address already, from another namespace: no DNS there).
async fn resolve(host: &str, port: u16, netns: Option<&Netns>) -> Result<SocketAddr, ProbeError> {
    if netns.is_some() {
        let ip: std::net::IpAddr = host
            .trim_matches(['[', ']'])
            .parse()
            .map_err(|_| ProbeError::BadName(host.to_owned()))?;
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| ProbeError::Resolve {
            host: host.to_owned(),
            error,
        })?
        .next()
        .ok_or_else(|| ProbeError::NoAddress {
            host: host.to_owned(),
        })
}

/// Resolve and connect to the first address that answers, from `netns` if given.
async fn connect(
    host: &str,
    port: u16,
    netns: Option<&Netns>,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), ProbeError> {
    if let Some(ns) = netns {
        // The name must be an address here: no DNS from inside another namespace.
        let ip: std::net::IpAddr = host
            .parse()
            .map_err(|_| ProbeError::BadName(host.to_owned()))?;
        let addr = SocketAddr::new(ip, port);
        return connect_in_netns(ns.clone(), addr, timeout)
            .await
            .map(|s| (s, addr));
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| ProbeError::Resolve {
            host: host.to_owned(),
            error,
        })?
        .collect();
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok((s, *addr)),
            Err(e) => last = Some((addr, e)),
        }
    }
    match last {
        Some((addr, error)) => Err(ProbeError::Connect {
            addr: addr.to_string(),
            error,
        }),
        None => Err(ProbeError::NoAddress {
            host: host.to_owned(),
        }),
    }
}

/// Connect from another network namespace: a thread of its own enters it (setns affects only
/// the calling thread), creates and connects the socket, and ends; the socket stays in that
/// namespace for its life.
async fn connect_in_netns(
    ns: Netns,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, ProbeError> {
    use std::os::fd::AsRawFd as _;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("probe-netns".into())
        .spawn(move || {
            let result = (|| {
                // SAFETY: setns with a valid namespace descriptor, on this thread only.
                if unsafe { libc::setns(ns.fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(ProbeError::Netns {
                        inode: ns.inode,
                        error: std::io::Error::last_os_error(),
                    });
                }
                let s = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|error| {
                    ProbeError::Connect {
                        addr: addr.to_string(),
                        error,
                    }
                })?;
                s.set_nonblocking(true)
                    .map_err(|error| ProbeError::Connect {
                        addr: addr.to_string(),
                        error,
                    })?;
                Ok(s)
            })();
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return Err(ProbeError::Setup(format!(
            "a thread for the namespace: {e}"
        )));
    }
    let std_stream = rx
        .await
        .map_err(|_| ProbeError::Setup("the namespace thread ended".into()))??;
    TcpStream::from_std(std_stream).map_err(|error| ProbeError::Connect {
        addr: addr.to_string(),
        error,
    })
}

/// The most of a proxy's response headers read.
const PROXY_HEADER_MAX: usize = 64 * 1024;

/// Ask an HTTP proxy for a tunnel to the target.
async fn connect_through(
    tcp: &mut TcpStream,
    proxy: &Proxy,
    target: &Target,
    user_agent: Option<&str>,
) -> Result<(), ProbeError> {
    let fail = |reason: String| ProbeError::Proxy {
        proxy: proxy.to_string(),
        reason,
    };
    let authority = target.authority();
    // The client's User-Agent, as the proxy saw it from the client (no line breaks: it came
    // from the network).
    let agent = user_agent
        .map(|ua| ua.replace(['\r', '\n'], " "))
        .map(|ua| format!("User-Agent: {ua}\r\n"))
        .unwrap_or_default();
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{agent}\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| fail(e.to_string()))?;
    // Read byte by byte up to the blank line, so no TLS byte after it is consumed.
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= PROXY_HEADER_MAX {
            return Err(fail("response headers too long".into()));
        }
        match tcp.read(&mut byte).await {
            Ok(0) => return Err(fail("closed the connection".into())),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(fail(e.to_string())),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let status_line = text.lines().next().unwrap_or_default();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        // The proxy's words, quoted and escaped: they end up in explanations and on terminals.
        return Err(fail(format!("refused the tunnel: {status_line:?}")));
    }
    Ok(())
}

/// Records the chain and accepts it; the handshake signature is still checked, and whether
/// it verified is kept.
#[derive(Debug)]
struct Recorder {
    provider: Arc<CryptoProvider>,
    chain: Mutex<Option<Vec<CertificateDer<'static>>>>,
    /// The server's handshake signature verified with the leaf's key.
    proven: AtomicBool,
    /// The client's signature schemes, in its order (empty: rustls's own).
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // At most as many certificates as a chain seen on the wire keeps.
        let mut chain = Vec::with_capacity(1 + intermediates.len().min(MAX_CHAIN_LEN));
        chain.push(end_entity.clone().into_owned());
        chain.extend(
            intermediates
                .iter()
                .take(MAX_CHAIN_LEN - 1)
                .map(|c| c.clone().into_owned()),
        );
        if let Ok(mut slot) = self.chain.lock() {
            *slot = Some(chain);
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
        .inspect(|_| self.proven.store(true, Ordering::Relaxed))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
        .inspect(|_| self.proven.store(true, Ordering::Relaxed))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        let ours = self
            .provider
            .signature_verification_algorithms
            .supported_schemes();
        let theirs: Vec<SignatureScheme> = self
            .schemes
            .iter()
            .filter(|s| ours.contains(s))
            .copied()
            .collect();
        if theirs.is_empty() { ours } else { theirs }
    }
}
