//! Benign TLS load for the benchmarks: a local rustls server that answers one byte, and
//! handshakes to it, each with its own server name under one domain, so that every handshake
//! can be found among sensord's events.

use std::{net::SocketAddr, time::Duration};

use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A TLS 1.2 server for `*.domain` on loopback, and a client configuration that trusts it.
pub struct Server {
    pub addr: SocketAddr,
    pub connector: TlsConnector,
    task: JoinHandle<()>,
}

impl Server {
    /// Start it on the current tokio runtime.
    pub async fn start(domain: &str) -> anyhow::Result<Self> {
        let (server_cfg, client_cfg) =
            crate::rustls_configs(&format!("*.{domain}"), &rustls::version::TLS12)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(server_cfg);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let mut b = [0u8; 1];
                        if tls.read_exact(&mut b).await.is_ok() {
                            let _ = tls.write_all(&b).await;
                            let _ = tls.shutdown().await;
                        }
                    }
                });
            }
        });
        Ok(Self {
            addr,
            connector: TlsConnector::from(client_cfg),
            task,
        })
    }

    /// One handshake for `name`, a byte each way, a close; within `timeout`.
    pub async fn handshake(&self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        tokio::time::timeout(timeout, handshake(&self.connector, self.addr, name)).await?
    }

    /// A handle for handshakes from spawned tasks.
    pub fn client(&self) -> (TlsConnector, SocketAddr) {
        (self.connector.clone(), self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One handshake to `addr` for `name` (`TCP_NODELAY`, as curl and browsers set it), a byte
/// each way, a close.
pub async fn handshake(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> anyhow::Result<()> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector
        .connect(ServerName::try_from(name.to_owned())?, tcp)
        .await?;
    tls.write_all(b"x").await?;
    let mut b = [0u8; 1];
    tls.read_exact(&mut b).await?;
    tls.shutdown().await?;
    Ok(())
}

/// The release sensord a benchmark measures, with its state (and socket) in `state_dir`, and
/// the configuration file there when `config` is given; quiet. Waits up to a minute for its
/// socket.
pub fn sensord(
    bin: &std::path::Path,
    state_dir: &std::path::Path,
    config: Option<&str>,
) -> crate::Proc {
    use std::process::{Command, Stdio};
    let socket = state_dir.join("sensord.sock");
    let _ = std::fs::remove_file(&socket);
    let mut cmd = Command::new(bin);
    if let Some(text) = config {
        let path = state_dir.join("sensord.toml");
        std::fs::write(&path, text).expect("writing sensord.toml");
        cmd.arg("--config").arg(path);
    }
    let proc = crate::Proc::spawn(
        "sensord",
        cmd.arg("--state-dir")
            .arg(state_dir)
            .arg("--socket")
            .arg(&socket)
            .env("SENSOR_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !socket.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    proc
}
