//! Outgoing connections for the push exporters: TCP, or TLS with rustls (the receiver's
//! certificate verified against a given CA or the system's roots, an optional client
//! certificate), and the same TLS settings for tonic's gRPC channel.

use std::{
    os::fd::{AsRawFd as _, RawFd},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

/// What TLS to a receiver uses.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA (PEM) the receiver's certificate must chain to; `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// The name the receiver's certificate must carry.
    pub server_name: String,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

fn certificates(path: &std::path::Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("{}: not PEM certificates", path.display()))
}

impl TlsFiles {
    /// The CA certificates: the given file's, or the system's.
    fn roots(&self) -> anyhow::Result<Vec<CertificateDer<'static>>> {
        let certs = match &self.ca {
            Some(path) => certificates(path)?,
            None => rustls_native_certs::load_native_certs().certs,
        };
        let shown = self.ca.as_ref().map_or_else(
            || "the system store".to_owned(),
            |p| p.display().to_string(),
        );
        anyhow::ensure!(!certs.is_empty(), "{shown}: no usable CA certificate");
        Ok(certs)
    }

    fn client_identity(
        &self,
    ) -> anyhow::Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>> {
        let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) else {
            return Ok(None);
        };
        let chain = certificates(cert)?;
        anyhow::ensure!(
            !chain.is_empty(),
            "{}: no certificate in it",
            cert.display()
        );
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("{}: no private key in it", key.display()))?;
        Ok(Some((chain, key)))
    }

    /// A rustls connector.
    pub fn rustls(&self) -> anyhow::Result<tokio_rustls::TlsConnector> {
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(self.roots()?);
        anyhow::ensure!(added > 0, "no usable CA certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match self.client_identity()? {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
            None => builder.with_no_client_auth(),
        };
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }

    /// The same for tonic's channel.
    pub fn tonic(&self) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
        use base64::Engine as _;
        let pem = |der: &[u8]| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
            for line in b64.as_bytes().chunks(64) {
                out.push_str(std::str::from_utf8(line).unwrap_or_default());
                out.push('\n');
            }
            out.push_str("-----END CERTIFICATE-----\n");
            out
        };
        let mut config = tonic::transport::ClientTlsConfig::new().domain_name(&self.server_name);
        for root in self.roots()? {
            config = config.ca_certificate(tonic::transport::Certificate::from_pem(pem(&root)));
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            self.client_identity()?;
            let read =
                |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            config = config.identity(tonic::transport::Identity::from_pem(
                read(cert)?,
                read(key)?,
            ));
        }
        Ok(config)
    }
}

/// A connection a push exporter writes to.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// How to reach a receiver: `host:port`, in clear or over TLS.
pub struct Dialer {
    address: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl Dialer {
    /// Fails at once on a bad TLS file or name.
    pub fn new(address: String, tls: Option<&TlsFiles>) -> anyhow::Result<Self> {
        let tls = match tls {
            Some(t) => {
                let name = ServerName::try_from(t.server_name.clone())
                    .with_context(|| format!("{:?} is not a server name", t.server_name))?;
                Some((t.rustls()?, name))
            }
            None => None,
        };
        Ok(Self { address, tls })
    }

    /// A new connection (10 s at most for TCP, and as much for TLS).
    pub async fn connect(&self) -> anyhow::Result<Box<dyn Stream>> {
        Ok(self.connection().await?.stream)
    }

    /// The same, with its TCP socket's descriptor (to ask what the peer acknowledged). A
    /// peer that stops acknowledging for [`USER_TIMEOUT`] breaks the connection, and
    /// keepalives find a peer that vanished while the line was idle.
    pub async fn connection(&self) -> anyhow::Result<Connection> {
        let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&self.address))
            .await
            .context("timed out")??;
        tcp.set_nodelay(true)?;
        let fd = tcp.as_raw_fd();
        set_timeouts(fd);
        let stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(
                tokio::time::timeout(
                    Duration::from_secs(10),
                    connector.connect(name.clone(), tcp),
                )
                .await
                .context("the TLS handshake timed out")??,
            ),
        };
        Ok(Connection { stream, fd })
    }
}

/// An open connection and its TCP socket's descriptor, valid while `stream` lives.
pub struct Connection {
    pub stream: Box<dyn Stream>,
    pub fd: RawFd,
}

/// Unacknowledged data breaks a connection after this long (TCP_USER_TIMEOUT).
pub const USER_TIMEOUT: Duration = Duration::from_secs(30);

/// TCP_USER_TIMEOUT and keepalives (idle 30 s, then every 10 s, 3 probes) on `fd`. Best
/// effort: a kernel that refuses leaves the defaults.
fn set_timeouts(fd: RawFd) {
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        // SAFETY: `fd` is an open TCP socket; each option takes one c_int.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    };
    let ms = libc::c_int::try_from(USER_TIMEOUT.as_millis()).unwrap_or(libc::c_int::MAX);
    set(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms);
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 30);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
}
