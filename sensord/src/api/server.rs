//! Serving the API: the Unix socket (mode 0660, an optional group), an optional TCP listener
//! that requires mTLS, the standard health service and server reflection (v1 and v1alpha) on
//! both.
//!
//! Health: the server ("") and `sensor.v1.Sensor` are SERVING while sensord runs;
//! [`JOURNAL_HEALTH`] is NOT_SERVING while journal commits fail. The sensor's own service stays
//! SERVING then: it still captures and judges, and the events waiting are in its memory, which
//! the restart a failing health check usually brings would lose.

use std::{os::unix::fs::PermissionsExt as _, path::Path, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use sensor_proto::v1::sensor_server::SensorServer;
use tokio::net::UnixListener;
use tokio_stream::{StreamExt as _, wrappers::UnixListenerStream};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::{
    ServingStatus,
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
};

use super::{authority::AuthorityFixed, service::SensorService};
use crate::status::{JournalState, Shared};
use sensor_host::config::ApiConfig;

/// The health service's name for the journal: NOT_SERVING while its commits fail.
pub const JOURNAL_HEALTH: &str = "sensor.v1.Journal";

/// The journal's health as the health service says it.
fn journal_serving(shared: &Shared) -> ServingStatus {
    match shared.journal_health().state() {
        JournalState::Degraded => ServingStatus::NotServing,
        JournalState::Ok | JournalState::Recovered => ServingStatus::Serving,
    }
}

/// The health service for one listener, kept current (every second) until sensord stops.
fn health(service: &SensorService) -> HealthServer<HealthService> {
    let reporter = HealthReporter::new();
    let server = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
    let shared: Arc<Shared> = service.shared.clone();
    let mut shutdown = service.shutdown.clone();
    tokio::spawn(async move {
        reporter.set_serving::<SensorServer<SensorService>>().await;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut said = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
            let now = journal_serving(&shared);
            if said != Some(now) {
                said = Some(now);
                reporter.set_service_status(JOURNAL_HEALTH, now).await;
            }
        }
    });
    server
}

/// Bind the Unix socket: remove a stale one, create the folder, set mode and group.
pub fn bind_unix(path: &Path, group: Option<&str>) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "{} is in use: another sensord is running (stop it, or give this one --socket)",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the old {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    if let Some(group) = group {
        let gid = super::access::group_id(group).with_context(|| format!("no group {group:?}"))?;
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("giving {} to group {group}", path.display()))?;
    }
    Ok(listener)
}

/// The services every listener serves: health, reflection (v1 and v1alpha: grpcurl speaks the
/// first, grpcio-reflection and most other tools the second) and the sensor's own.
fn router(
    mut builder: Server,
    service: SensorService,
) -> anyhow::Result<tonic::transport::server::Router> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sensor_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = reflection()
        .build_v1()
        .context("building server reflection (v1)")?;
    let v1alpha = reflection()
        .build_v1alpha()
        .context("building server reflection (v1alpha)")?;
    Ok(builder
        .add_service(health(&service))
        .add_service(v1)
        .add_service(v1alpha)
        .add_service(SensorServer::new(service)))
}

/// The TCP listener's TLS files, read and checked: PEM that holds what it must.
pub struct TlsMaterial {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub ca_pem: Vec<u8>,
    /// Certificates in the server's chain, and client CAs.
    pub chain: usize,
    pub client_cas: usize,
}

/// Read the TCP listener's certificate, key and client CA, if all are set, and check that each
/// file is PEM with at least one certificate (a key): an error names the file.
pub fn tls_material(cfg: &ApiConfig) -> anyhow::Result<Option<TlsMaterial>> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let (Some(cert), Some(key), Some(ca)) = (&cfg.tls_cert, &cfg.tls_key, &cfg.client_ca) else {
        return Ok(None);
    };
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let certificates = |p: &Path, pem: &[u8]| -> anyhow::Result<usize> {
        let n = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{}: not PEM certificates", p.display()))?
            .len();
        if n == 0 {
            bail!("{}: no certificate in it", p.display());
        }
        Ok(n)
    };
    let (cert_pem, key_pem, ca_pem) = (read(cert)?, read(key)?, read(ca)?);
    let chain = certificates(cert, &cert_pem)?;
    let client_cas = certificates(ca, &ca_pem)?;
    PrivateKeyDer::from_pem_slice(&key_pem)
        .with_context(|| format!("{}: no private key in it", key.display()))?;
    Ok(Some(TlsMaterial {
        cert_pem,
        key_pem,
        ca_pem,
        chain,
        client_cas,
    }))
}

/// Serve the API until `shutdown` resolves. The TCP listener, if configured, needs TLS with a
/// client CA unless `insecure_tcp` is set.
pub async fn serve(
    cfg: &ApiConfig,
    unix: UnixListener,
    service: SensorService,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // Every client's header blocks pass the authority rewriter: see `super::authority`.
    let incoming = UnixListenerStream::new(unix).map(|conn| conn.map(AuthorityFixed::new));
    let unix_server = router(Server::builder(), service.clone())?
        .serve_with_incoming_shutdown(incoming, wait(shutdown.clone()));
    let Some(addr) = cfg.tcp_listen else {
        return unix_server.await.context("serving the Unix socket");
    };
    let mut builder = Server::builder();
    match tls_material(cfg)? {
        Some(m) => {
            let tls = ServerTlsConfig::new()
                .identity(Identity::from_pem(m.cert_pem, m.key_pem))
                .client_ca_root(Certificate::from_pem(m.ca_pem));
            builder = builder.tls_config(tls).context("the TCP listener's TLS")?;
        }
        None if cfg.insecure_tcp => {
            tracing::warn!(%addr, "TCP listener WITHOUT TLS (insecure_tcp = true): for tests only");
        }
        _ => bail!(
            "api.tcp_listen needs tls_cert, tls_key and client_ca (mTLS); set insecure_tcp = true \
             only for tests"
        ),
    }
    let tcp_server = router(builder, service)?.serve_with_shutdown(addr, wait(shutdown));
    tracing::info!(%addr, "gRPC API on TCP");
    let (a, b) = tokio::join!(unix_server, tcp_server);
    a.context("serving the Unix socket")?;
    b.context("serving TCP")?;
    Ok(())
}
