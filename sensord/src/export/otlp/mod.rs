//! The OTLP logs exporter: events as OpenTelemetry log records ([`record`]), over OTLP/gRPC
//! (tonic, `LogsService/Export`) or OTLP/HTTP (hyper, `POST /v1/logs`, binary protobuf), to an
//! OpenTelemetry Collector or any OTLP receiver.
//!
//! Like the other exporters it follows the journal with its own cursor on a thread of its own,
//! so capture never waits for it: the journal is its queue, and it holds at most one batch
//! (`batch_size` records) in memory. A batch is sent until the receiver accepts it; the
//! cursor moves only then, so delivery is at least once and a receiver's or sensord's restart
//! loses nothing. Retryable refusals (gRPC UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED,
//! DEADLINE_EXCEEDED; HTTP 429, 502, 503, 504; a connection that fails) are retried with a
//! backoff from 1 to 30 s; others (a malformed request, a refused token) drop the batch,
//! counted, as the OTLP specification says. After an outage, events older than
//! `max_age_secs` are counted, not sent.

pub mod record;

use std::{
    path::PathBuf,
    str::FromStr as _,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::Context as _;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, logs_service_client::LogsServiceClient,
};
use prost::Message as _;
use sensor_host::{
    config::{OtlpConfig, OtlpProtocol},
    render::escape,
};
use tokio::sync::{broadcast, watch};

use super::{
    connect::{Dialer, TlsFiles},
    cursor::CursorFile,
    worker::{self, Worker},
};
use crate::{
    journal::{StoredEvent, follow::Follower},
    status::OtlpStats,
};

/// Why a send failed.
enum Failure {
    /// Try the same batch again later.
    Retry(String),
    /// The receiver will never take it.
    Drop(String),
}

/// How batches reach the receiver.
enum Transport {
    Grpc {
        endpoint: Box<tonic::transport::Endpoint>,
        client: Option<LogsServiceClient<tonic::transport::Channel>>,
    },
    Http {
        dialer: Dialer,
        authority: String,
        path: String,
    },
}

impl Transport {
    fn new(cfg: &OtlpConfig) -> anyhow::Result<Self> {
        let uri = http::Uri::from_str(&cfg.endpoint)
            .with_context(|| format!("export.otlp: endpoint {:?}", cfg.endpoint))?;
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().unwrap_or_default().to_owned();
        let default_port = match cfg.protocol {
            OtlpProtocol::Grpc => 4317,
            OtlpProtocol::Http => 4318,
        };
        let port = uri.port_u16().unwrap_or(default_port);
        let tls = https.then(|| TlsFiles {
            ca: cfg.ca.clone(),
            server_name: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            client_cert: cfg.client_cert.clone(),
            client_key: cfg.client_key.clone(),
        });
        Ok(match cfg.protocol {
            OtlpProtocol::Grpc => {
                let mut endpoint = tonic::transport::Endpoint::from_shared(cfg.endpoint.clone())
                    .context("export.otlp: the endpoint")?
                    .connect_timeout(Duration::from_secs(10))
                    .timeout(Duration::from_secs(30));
                if let Some(tls) = tls {
                    endpoint = endpoint
                        .tls_config(tls.tonic()?)
                        .context("export.otlp: TLS")?;
                }
                Self::Grpc {
                    endpoint: Box::new(endpoint),
                    client: None,
                }
            }
            OtlpProtocol::Http => {
                let path = match uri.path() {
                    "" | "/" => "/v1/logs".to_owned(),
                    p => p.to_owned(),
                };
                let authority = uri
                    .authority()
                    .map_or_else(|| format!("{host}:{port}"), ToString::to_string);
                Self::Http {
                    dialer: Dialer::new(format!("{host}:{port}"), tls.as_ref())?,
                    authority,
                    path,
                }
            }
        })
    }

    async fn send(
        &mut self,
        request: ExportLogsServiceRequest,
        headers: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), Failure> {
        match self {
            Self::Grpc { endpoint, client } => {
                if client.is_none() {
                    let channel = endpoint
                        .connect()
                        .await
                        .map_err(|e| Failure::Retry(format!("connecting: {e}")))?;
                    *client = Some(LogsServiceClient::new(channel));
                }
                let Some(c) = client.as_mut() else {
                    return Err(Failure::Retry("no connection".into()));
                };
                let mut req = tonic::Request::new(request);
                for (k, v) in headers {
                    if let (Ok(k), Ok(v)) = (
                        tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
                        v.parse(),
                    ) {
                        req.metadata_mut().insert(k, v);
                    }
                }
                match c.export(req).await {
                    Ok(reply) => {
                        let partial = reply.into_inner().partial_success;
                        if let Some(p) = partial.filter(|p| p.rejected_log_records > 0) {
                            tracing::warn!(
                                "otlp: the receiver rejected {} records: {}",
                                p.rejected_log_records,
                                escape(&p.error_message)
                            );
                        }
                        Ok(())
                    }
                    Err(status) => {
                        use tonic::Code::*;
                        // The receiver's words: escaped before they reach the log.
                        let why = format!("{:?}: {}", status.code(), escape(status.message()));
                        // The OTLP specification's retryable codes; RESOURCE_EXHAUSTED only
                        // when the server says a retry may succeed (RetryInfo).
                        let retry = match status.code() {
                            Cancelled | DeadlineExceeded | Aborted | OutOfRange | Unavailable
                            | DataLoss => true,
                            ResourceExhausted => has_retry_info(status.details()),
                            _ => false,
                        };
                        if retry {
                            *client = None;
                            Err(Failure::Retry(why))
                        } else {
                            Err(Failure::Drop(why))
                        }
                    }
                }
            }
            Self::Http {
                dialer,
                authority,
                path,
            } => {
                let stream = dialer
                    .connect()
                    .await
                    .map_err(|e| Failure::Retry(format!("connecting: {e:#}")))?;
                let io = hyper_util::rt::TokioIo::new(stream);
                let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| Failure::Retry(format!("HTTP: {e}")))?;
                let driver = tokio::spawn(conn);
                let mut builder = http::Request::post(path.as_str())
                    .header(http::header::HOST, authority.as_str())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf");
                for (k, v) in headers {
                    builder = builder.header(k.as_str(), v.as_str());
                }
                let body = http_body_util::Full::new(bytes::Bytes::from(request.encode_to_vec()));
                let req = builder
                    .body(body)
                    .map_err(|e| Failure::Drop(format!("the request: {e}")))?;
                let reply = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
                    .await
                    .map_err(|_| Failure::Retry("no answer in 30 s".into()))?
                    .map_err(|e| Failure::Retry(format!("HTTP: {e}")));
                driver.abort();
                let status = reply?.status();
                match status.as_u16() {
                    200..=299 => Ok(()),
                    429 | 502 | 503 | 504 => Err(Failure::Retry(format!("HTTP {status}"))),
                    _ => Err(Failure::Drop(format!("HTTP {status}"))),
                }
            }
        }
    }
}

/// `google.rpc.Status`, as gRPC carries it in `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// Whether a status's details hold a `google.rpc.RetryInfo`.
fn has_retry_info(details: &[u8]) -> bool {
    RpcStatus::decode(details).is_ok_and(|s| {
        s.details
            .iter()
            .any(|d| d.type_url.ends_with("/google.rpc.RetryInfo"))
    })
}

/// Check what a start would load for the OTLP export (its endpoint and TLS files).
pub fn check(cfg: &OtlpConfig) -> anyhow::Result<()> {
    Transport::new(cfg).map(drop)
}

/// A running OTLP exporter: its thread, and how to stop it.
pub struct Exporter {
    worker: Worker,
}

/// Where the exporter reads from and keeps its place.
pub struct Source {
    pub journal: PathBuf,
    pub live: broadcast::Receiver<Arc<StoredEvent>>,
    pub cursor: CursorFile,
    pub last_seq: u64,
}

impl Exporter {
    /// Start sending what the journal holds after the saved cursor (a new exporter: what is
    /// committed from now on). A bad endpoint or TLS file fails at once; an unreachable
    /// receiver is retried.
    pub fn spawn(cfg: OtlpConfig, src: Source, stats: Arc<OtlpStats>) -> anyhow::Result<Self> {
        let runtime = worker::runtime("OTLP")?;
        // tonic's endpoint wants a runtime to exist when it is made.
        let transport = {
            let _guard = runtime.enter();
            Transport::new(&cfg)?
        };
        let start = worker::start(&src.cursor, src.last_seq, "OTLP")?;
        let follower = Follower::new(src.journal.clone(), src.live, start);
        let cursor = src.cursor;
        let worker = Worker::spawn("export-otlp", runtime, move |stopped| {
            Run {
                cfg,
                transport,
                follower,
                cursor,
                stats,
                stopped,
            }
            .run()
        })?;
        Ok(Self { worker })
    }

    /// Stop: a batch being retried stays unsent (the cursor is behind it) and goes after the
    /// next start.
    pub fn stop(self) {
        self.worker.stop();
    }

    /// sensord stops: as [`Exporter::stop`].
    pub fn join(self) {
        self.stop();
    }
}

struct Run {
    cfg: OtlpConfig,
    transport: Transport,
    follower: Follower,
    cursor: CursorFile,
    stats: Arc<OtlpStats>,
    stopped: watch::Receiver<bool>,
}

/// A batch stops growing past about this many bytes (its events' JSON, which their protobuf
/// is not larger than): well under the 4 MiB a Collector's receiver takes by default.
const MAX_BATCH_BYTES: usize = 2 << 20;

/// How long a batch waits for more events after its first.
const LINGER: Duration = Duration::from_millis(200);

impl Run {
    async fn run(mut self) {
        loop {
            let Some(batch) = self.gather().await else {
                return;
            };
            if !batch.is_empty() && !self.deliver(batch).await {
                return;
            }
            if let Err(e) = self.cursor.save(self.follower.last()) {
                tracing::warn!("saving {}: {e}", self.cursor.path().display());
            }
        }
    }

    /// The next batch: events that pass the filter and are young enough, from the first that
    /// comes until `batch_size` of them or [`LINGER`] after it. `None` when stopping.
    async fn gather(&mut self) -> Option<Vec<Arc<StoredEvent>>> {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let mut deadline: Option<tokio::time::Instant> = None;
        while batch.len() < self.cfg.batch_size && bytes < MAX_BATCH_BYTES {
            let wait =
                deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            let got = tokio::select! {
                got = self.follower.next() => got,
                () = tokio::time::sleep_until(wait) => break,
                _ = self.stopped.wait_for(|s| *s) => return None,
            };
            match got {
                Ok(Some(r)) => {
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + LINGER);
                    if !self.cfg.filter.matches(&r.meta) {
                        continue;
                    }
                    if worker::too_old(&r, self.cfg.max_age_secs) {
                        self.stats.expired.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    bytes += r.json.len();
                    batch.push(r);
                }
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!("otlp: reading the journal: {e}");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = self.stopped.wait_for(|s| *s) => return None,
                    }
                }
            }
        }
        Some(batch)
    }

    /// Send a batch until it is taken or dropped; false when told to stop meanwhile.
    async fn deliver(&mut self, batch: Vec<Arc<StoredEvent>>) -> bool {
        let n = batch.len() as u64;
        let mut backoff = Duration::from_secs(1);
        let mut failures = 0u32;
        loop {
            let request = record::request(&batch);
            let sent = tokio::select! {
                sent = self.transport.send(request, &self.cfg.headers) => sent,
                // Not acknowledged: the cursor stays before the batch.
                _ = self.stopped.wait_for(|s| *s) => return false,
            };
            match sent {
                Ok(()) => {
                    self.stats.sent.fetch_add(n, Ordering::Relaxed);
                    self.stats.batches.fetch_add(1, Ordering::Relaxed);
                    if failures > 0 {
                        tracing::info!("otlp: {} takes events again", self.cfg.endpoint);
                    }
                    return true;
                }
                Err(Failure::Drop(why)) => {
                    self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!(
                        "otlp: {} refused {n} records for good ({why}); they are dropped",
                        self.cfg.endpoint
                    );
                    return true;
                }
                Err(Failure::Retry(why)) => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(
                            "otlp: {}: {why}; retrying with a backoff, nothing is lost",
                            self.cfg.endpoint
                        );
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = self.stopped.wait_for(|s| *s) => return false,
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_exhausted_is_retried_only_with_retry_info() {
        let status = |type_url: &str| {
            RpcStatus {
                code: 8,
                message: "busy".into(),
                details: vec![prost_types::Any {
                    type_url: type_url.into(),
                    value: Vec::new(),
                }],
            }
            .encode_to_vec()
        };
        assert!(has_retry_info(&status(
            "type.googleapis.com/google.rpc.RetryInfo"
        )));
        assert!(!has_retry_info(&status(
            "type.googleapis.com/google.rpc.QuotaFailure"
        )));
        assert!(!has_retry_info(b""));
        assert!(!has_retry_info(b"\xff\xff garbage"));
    }
}
