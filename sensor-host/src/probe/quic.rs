//! The probe over QUIC (quinn), for a client that reached its server over QUIC: the same
//! recording verifier, the client's ALPN, from the client's network namespace when it is not
//! sensord's. An interceptor that blocks or does not speak QUIC answers no Initial: the probe
//! then fails (`timeout`), and the verdict says so.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use quinn::crypto::rustls::{HandshakeData, QuicClientConfig};
use sensor_core::event::TlsVersion;

use super::{Netns, ProbeError, ProbeOptions, Probed, Recorder};

/// Handshake over QUIC version 1 with `addr`, sending `sni`; record the chain.
pub(super) async fn probe(
    addr: SocketAddr,
    sni: Option<String>,
    server_name: &str,
    opts: &ProbeOptions,
    config: rustls::ClientConfig,
    recorder: Arc<Recorder>,
) -> Result<Probed, ProbeError> {
    let socket = bind(addr, opts.netns.as_ref()).await?;
    let mut config = config;
    // QUIC is TLS 1.3 only; early data is not sent.
    config.enable_early_data = false;
    let crypto = QuicClientConfig::try_from(Arc::new(config))
        .map_err(|e| ProbeError::Setup(format!("QUIC: {e}")))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(
        quinn::IdleTimeout::try_from(opts.timeout.min(Duration::from_secs(30))).ok(),
    );
    client.transport_config(Arc::new(transport));
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|error| ProbeError::Connect {
        addr: addr.to_string(),
        error,
    })?;
    let connecting = endpoint
        .connect_with(client, addr, server_name)
        .map_err(|e| ProbeError::Setup(format!("QUIC: {e}")))?;
    let result = connecting.await;
    let chain = recorder.chain.lock().ok().and_then(|mut c| c.take());
    let proven = recorder.proven.load(std::sync::atomic::Ordering::Relaxed);
    let out = match (result, chain) {
        (Ok(conn), Some(chain)) => {
            let alpn = conn
                .handshake_data()
                .and_then(|d| d.downcast::<HandshakeData>().ok())
                .and_then(|d| d.protocol)
                .map(|a| String::from_utf8_lossy(&a).into_owned());
            conn.close(quinn::VarInt::from_u32(0), b"");
            Ok(Probed {
                peer: addr,
                via_proxy: false,
                server_name: sni,
                chain,
                tls_version: Some(TlsVersion::Tls13),
                cipher: None,
                alpn,
                handshake_error: None,
                flight_bytes: None,
            })
        }
        (Err(e), Some(chain)) if proven => Ok(Probed {
            peer: addr,
            via_proxy: false,
            server_name: sni,
            chain,
            tls_version: None,
            cipher: None,
            alpn: None,
            handshake_error: Some(e.to_string()),
            flight_bytes: None,
        }),
        (Err(quinn::ConnectionError::TimedOut), None) => Err(ProbeError::Timeout(opts.timeout)),
        (Err(e), _) => Err(ProbeError::Handshake {
            addr,
            reason: format!("QUIC: {e}"),
        }),
        (Ok(_), None) => Err(ProbeError::Handshake {
            addr,
            reason: "QUIC: the server sent no certificate".into(),
        }),
    };
    endpoint.close(quinn::VarInt::from_u32(0), b"");
    out
}

/// Whether QUIC can run over this configuration (TLS 1.3 with the Initial suite).
pub(super) fn usable(config: &rustls::ClientConfig) -> bool {
    QuicClientConfig::try_from(Arc::new(config.clone())).is_ok()
}

/// A UDP socket for the probe, in the client's namespace when given (a thread enters it and
/// binds; the socket stays there).
async fn bind(addr: SocketAddr, netns: Option<&Netns>) -> Result<std::net::UdpSocket, ProbeError> {
    let any: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let fail = |error| ProbeError::Connect {
        addr: addr.to_string(),
        error,
    };
    let Some(ns) = netns.cloned() else {
        return std::net::UdpSocket::bind(any).map_err(fail);
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("probe-netns".into())
        .spawn(move || {
            use std::os::fd::AsRawFd as _;
            // SAFETY: setns with a valid namespace descriptor, on this thread only.
            let result = if unsafe { libc::setns(ns.fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                Err(ProbeError::Netns {
                    inode: ns.inode,
                    error: std::io::Error::last_os_error(),
                })
            } else {
                std::net::UdpSocket::bind(any).map_err(|error| ProbeError::Connect {
                    addr: addr.to_string(),
                    error,
                })
            };
            let _ = tx.send(result);
        })
        .map_err(|e| ProbeError::Setup(format!("a thread for the namespace: {e}")))?;
    rx.await
        .map_err(|_| ProbeError::Setup("the namespace thread ended".into()))?
}
