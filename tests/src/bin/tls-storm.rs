//! tls-storm: a storm of new TLS handshakes on loopback, for `cargo xtask bench tap`.
//!
//! One process runs a rustls server on 127.0.0.1 and `--concurrency` client tasks that each
//! connect, complete a handshake, exchange one byte of application data each way, and close,
//! over and over until `--seconds` have passed. It prints `handshakes=N seconds=S`.
//!
//! With `--quic` the same over QUIC (quinn): a server endpoint on UDP, and client tasks that
//! each keep one UDP socket (endpoint) for all their connections, as quic-go and quinn
//! clients do, so that every connection after a task's first reuses its 4-tuple.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

#[derive(Parser)]
struct Args {
    /// Port on 127.0.0.1 for the server.
    #[arg(long)]
    port: u16,
    /// How long the storm lasts.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Client tasks.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Force TLS 1.2 (default: TLS 1.3).
    #[arg(long)]
    tls12: bool,
    /// The SNI the clients send.
    #[arg(long, default_value = "storm.test")]
    sni: String,
    /// QUIC (quinn) instead of TCP.
    #[arg(long)]
    quic: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if args.quic {
        rt.block_on(quic_storm(args))
    } else {
        rt.block_on(storm(args))
    }
}

async fn quic_storm(args: Args) -> anyhow::Result<()> {
    use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
    let (server, client) = sensor_tests::rustls_configs(&args.sni, &rustls::version::TLS13)?;
    let server = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server)?));
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let endpoint =
        quinn::Endpoint::server(server, addr).with_context(|| format!("binding {addr}"))?;
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                if let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let mut b = [0u8; 1];
                    if recv.read_exact(&mut b).await.is_ok() {
                        let _ = send.write_all(&b).await;
                        let _ = send.finish();
                    }
                }
                conn.closed().await;
            });
        }
    });
    let client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client)?));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let mut ep = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        ep.set_default_client_config(client.clone());
        let (sni, done, failed) = (args.sni.clone(), done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match quic_one(&ep, addr, &sni).await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
            ep.wait_idle().await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "handshakes={} failed={} seconds={secs:.3}",
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    Ok(())
}

async fn quic_one(ep: &quinn::Endpoint, addr: SocketAddr, sni: &str) -> anyhow::Result<()> {
    let conn = ep.connect(addr, sni)?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(b"x").await?;
    send.finish()?;
    let mut b = [0u8; 1];
    recv.read_exact(&mut b).await?;
    conn.close(0u32.into(), b"");
    Ok(())
}

async fn storm(args: Args) -> anyhow::Result<()> {
    let version = if args.tls12 {
        &rustls::version::TLS12
    } else {
        &rustls::version::TLS13
    };
    let (server, client) = sensor_tests::rustls_configs(&args.sni, version)?;

    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let acceptor = TlsAcceptor::from(server);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
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

    let connector = TlsConnector::from(client);
    let name = ServerName::try_from(args.sni.clone())?;
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (connector, name, done, failed) = (
            connector.clone(),
            name.clone(),
            done.clone(),
            failed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match one(&connector, &name, addr).await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "handshakes={} failed={} seconds={secs:.3}",
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    Ok(())
}

async fn one(
    connector: &TlsConnector,
    name: &ServerName<'static>,
    addr: SocketAddr,
) -> anyhow::Result<()> {
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = connector.connect(name.clone(), tcp).await?;
    tls.write_all(b"x").await?;
    let mut b = [0u8; 1];
    tls.read_exact(&mut b).await?;
    tls.shutdown().await?;
    Ok(())
}
