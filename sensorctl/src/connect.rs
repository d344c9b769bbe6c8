//! Reaching sensord's API: its Unix socket, or a TCP endpoint with mTLS. Errors say what to do.

use std::{io::ErrorKind, path::Path, path::PathBuf};

use anyhow::{Context as _, anyhow};
use sensor_host::render::escape;
use sensor_proto::v1::{self as pb, sensor_client::SensorClient};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

use crate::Global;

/// A TCP endpoint instead of the socket.
#[derive(Debug, Clone, clap::Args)]
pub struct TcpArgs {
    /// sensord's TCP listener, e.g. https://sensor.example.net:50443 (mTLS), instead of the
    /// socket.
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint: Option<String>,
    /// CA that signed sensord's server certificate (PEM), for --endpoint.
    #[arg(long, global = true, value_name = "PEM", requires = "endpoint")]
    pub ca: Option<PathBuf>,
    /// This client's certificate (PEM), for --endpoint.
    #[arg(long, global = true, value_name = "PEM", requires = "key")]
    pub cert: Option<PathBuf>,
    /// This client's private key (PEM), for --endpoint.
    #[arg(long, global = true, value_name = "PEM", requires = "cert")]
    pub key: Option<PathBuf>,
}

/// Connect to sensord as the flags say.
pub async fn connect(global: &Global) -> anyhow::Result<SensorClient<Channel>> {
    match &global.endpoint.endpoint {
        Some(url) => tcp(url, &global.endpoint).await,
        None => unix(&global.socket).await,
    }
}

/// What to say about a socket that cannot be reached.
pub fn socket_error(path: &Path, e: &std::io::Error) -> anyhow::Error {
    let shown = path.display();
    match e.kind() {
        ErrorKind::NotFound => anyhow!(
            "cannot connect to {shown}: no such socket (is sensord running? \
             `systemctl status sensord`; or pass --socket)"
        ),
        ErrorKind::PermissionDenied => {
            let group = socket_group(path);
            match group {
                Some(g) => anyhow!(
                    "cannot connect to {shown}: permission denied (add your user to group {g}, \
                     or use sudo)"
                ),
                None => anyhow!("cannot connect to {shown}: permission denied (use sudo)"),
            }
        }
        ErrorKind::ConnectionRefused => {
            anyhow!("cannot connect to {shown}: connection refused (is sensord running?)")
        }
        _ => anyhow!("cannot connect to {shown}: {e}"),
    }
}

/// The group that owns the socket, by name, when it is not root's.
fn socket_group(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let gid = std::fs::metadata(path).ok()?.gid();
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    let name = groups.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        (f.next()?.parse::<u32>().ok()? == gid).then(|| name.to_owned())
    });
    match name.as_deref() {
        Some("root") | None => Some("sensor (set api.socket_group in sensord.toml)".into()),
        Some(_) => name,
    }
}

async fn unix(path: &Path) -> anyhow::Result<SensorClient<Channel>> {
    // Connect once by hand for a clear error; the channel then makes its own connections.
    tokio::net::UnixStream::connect(path)
        .await
        .map_err(|e| socket_error(path, &e))?;
    let channel = sensor_proto::unix::channel(path, None)
        .await
        .context("connecting to sensord")?;
    Ok(SensorClient::new(channel))
}

async fn tcp(url: &str, args: &TcpArgs) -> anyhow::Result<SensorClient<Channel>> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("--endpoint {url:?} is not a URL"))?;
    let mut endpoint = Endpoint::from(uri.clone());
    if uri.scheme_str() == Some("https") {
        let mut tls = ClientTlsConfig::new();
        if let Some(host) = uri.host() {
            tls = tls.domain_name(host.trim_start_matches('[').trim_end_matches(']'));
        }
        if let Some(ca) = &args.ca {
            let pem =
                std::fs::read(ca).with_context(|| format!("reading --ca {}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
            let c = std::fs::read(cert)
                .with_context(|| format!("reading --cert {}", cert.display()))?;
            let k =
                std::fs::read(key).with_context(|| format!("reading --key {}", key.display()))?;
            tls = tls.identity(Identity::from_pem(c, k));
        }
        endpoint = endpoint
            .tls_config(tls)
            .context("the TLS settings for --endpoint")?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why = s.to_string();
            source = s.source();
        }
        anyhow!("cannot connect to {url}: {why}")
    })?;
    Ok(SensorClient::new(channel))
}

/// One line for an RPC failure. The server's message is escaped: it may quote files and
/// certificate names.
pub fn rpc_error(what: &str, status: &tonic::Status) -> anyhow::Error {
    let message = escape(status.message());
    match status.code() {
        tonic::Code::Unavailable => anyhow!("{what}: lost the connection to sensord"),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            anyhow!("{what}: sensord refused this client: {message}")
        }
        _ => anyhow!("{what}: {message}"),
    }
}

/// How often sensorctl asks again when sensord says reloads come too fast (it allows one a
/// second), before giving up.
const RELOAD_ATTEMPTS: u32 = 5;

/// Ask sensord to reload; what it did, or why not. A reload refused for coming too soon
/// after another is asked again a little later: `sensorctl pins` has changed the file by
/// then, and must not leave it unread.
pub async fn reload(api: &mut SensorClient<Channel>) -> anyhow::Result<pb::ReloadResponse> {
    let mut attempt = 1;
    let r = loop {
        match api.reload(pb::ReloadRequest {}).await {
            Ok(r) => break r.into_inner(),
            Err(s) if s.code() == tonic::Code::ResourceExhausted && attempt < RELOAD_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(s) => return Err(rpc_error("reload", &s)),
        }
    };
    if r.ok {
        Ok(r)
    } else {
        Err(anyhow!(
            "sensord refused the reload and keeps its running configuration: {}",
            escape(&r.error)
        ))
    }
}

/// What a reload did, in words: one line, and one more when settings need a restart.
pub fn reload_words(r: &pb::ReloadResponse) -> String {
    let mut s = format!("sensord reloaded (trust generation {})", r.trust_generation);
    if !r.applied.is_empty() {
        s.push_str(&format!("; now in force: {}", r.applied.join(", ")));
    }
    if !r.restart_required.is_empty() {
        s.push_str(&format!(
            "\nthese changed settings take effect only when sensord restarts: {}",
            r.restart_required.join(", ")
        ));
    }
    s
}

/// sensord's status.
pub async fn status(api: &mut SensorClient<Channel>) -> anyhow::Result<pb::Status> {
    Ok(api
        .get_status(pb::GetStatusRequest {})
        .await
        .map_err(|s| rpc_error("status", &s))?
        .into_inner())
}
