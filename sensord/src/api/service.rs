//! The sensor.v1 service.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use base64::Engine as _;
use sensor_proto::v1::{self as pb, sensor_server::Sensor};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use sensor_core::filter::Filter;

use super::convert;
use crate::{
    journal::{Journal, JournalError, StoredEvent, follow::Follower},
    reload::{ReloadReply, ReloadRequest},
    status::{JournalState, Shared},
};

/// The service, shared by every connection.
#[derive(Clone)]
pub struct SensorService {
    pub shared: Arc<Shared>,
    pub journal: PathBuf,
    pub live: broadcast::Sender<Arc<StoredEvent>>,
    pub reload: mpsc::Sender<ReloadRequest>,
    pub aggregation_window: Duration,
    /// Becomes true when sensord stops: every Watch stream then ends, so that the server's
    /// graceful shutdown does not wait on subscribers.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// A journal error as the API's status: a resume point the journal never reached is the
/// caller's to change, not an internal failure.
fn journal_status(e: JournalError) -> Status {
    match e {
        JournalError::Ahead { .. } => Status::out_of_range(e.to_string()),
        e => internal(e),
    }
}

/// Counts a subscriber while it lives.
struct Subscribed(Arc<Shared>);

impl Subscribed {
    fn new(shared: Arc<Shared>) -> Self {
        shared.subscribers.fetch_add(1, Ordering::Relaxed);
        Self(shared)
    }
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Folds identical events within a window into one with a count.
/// What to send for a record now: itself, or through the aggregator (which may hold it).
fn fold(agg: &mut Option<Aggregator>, r: Arc<StoredEvent>) -> Option<(Arc<StoredEvent>, u64)> {
    match agg {
        Some(a) => a.add(r),
        None => Some((r, 1)),
    }
}

struct Aggregator {
    window: Duration,
    /// key -> (window end, latest record, events folded into it and not sent yet).
    open: HashMap<String, (tokio::time::Instant, Arc<StoredEvent>, u64)>,
}

impl Aggregator {
    fn key(r: &StoredEvent) -> String {
        let m = &r.meta;
        format!(
            "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
            m.verdict.map_or("", |v| v.as_str()),
            m.sni.as_deref().unwrap_or(""),
            m.issuer.as_deref().unwrap_or(""),
            m.comm.as_deref().unwrap_or(""),
            m.exe.as_deref().unwrap_or("")
        )
    }

    /// The event to send now, if any: the first of a window goes out at once.
    fn add(&mut self, r: Arc<StoredEvent>) -> Option<(Arc<StoredEvent>, u64)> {
        let now = tokio::time::Instant::now();
        let key = Self::key(&r);
        match self.open.get_mut(&key) {
            Some((end, latest, n)) if *end > now => {
                *latest = r;
                *n += 1;
                None
            }
            _ => {
                self.open.insert(key, (now + self.window, r.clone(), 0));
                Some((r, 1))
            }
        }
    }

    /// Windows that ended with folded events: their latest event and how many were folded.
    fn expired(&mut self) -> Vec<(Arc<StoredEvent>, u64)> {
        let now = tokio::time::Instant::now();
        let mut out = Vec::new();
        self.open.retain(|_, (end, latest, n)| {
            if *end > now {
                return true;
            }
            if *n > 0 {
                out.push((latest.clone(), *n));
            }
            false
        });
        out.sort_by_key(|(r, _)| r.seq);
        out
    }
}

/// Deliver events to one subscriber, through a journal [`Follower`]: no gap, no duplicate.
/// `after` is the last sequence number it has.
async fn subscriber(
    service: SensorService,
    filter: Filter,
    after: u64,
    aggregate: bool,
    tx: mpsc::Sender<Result<pb::Event, Status>>,
) {
    let _counted = Subscribed::new(service.shared.clone());
    let mut follower = Follower::new(service.journal.clone(), service.live.subscribe(), after);
    let mut agg = aggregate.then(|| Aggregator {
        window: service.aggregation_window,
        open: HashMap::new(),
    });
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let send = |r: Arc<StoredEvent>, count: u64| {
        let tx = tx.clone();
        async move { tx.send(Ok(convert::event(&r, count))).await.is_ok() }
    };
    loop {
        tokio::select! {
            got = follower.next() => match got {
                Ok(Some(r)) => {
                    if filter.matches(&r.meta)
                        && let Some((r, n)) = fold(&mut agg, r)
                        && !send(r, n).await
                    {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(Err(journal_status(e))).await;
                    return;
                }
            },
            _ = tick.tick(), if agg.is_some() => {
                let due = agg.as_mut().map(Aggregator::expired).unwrap_or_default();
                for (r, n) in due {
                    if !send(r, n).await {
                        return;
                    }
                }
            }
            () = tx.closed() => return,
        }
    }
}

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[tonic::async_trait]
impl Sensor for SensorService {
    type WatchStream = ReceiverStream<Result<pb::Event, Status>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        let filter = convert::filter(req.filter.as_ref())?;
        let after = if req.tail {
            self.shared.last_seq.load(Ordering::Relaxed)
        } else {
            req.since_seq
        };
        let (tx, rx) = mpsc::channel(256);
        let mut shutdown = self.shutdown.clone();
        let task = subscriber(self.clone(), filter, after, req.aggregate, tx);
        tokio::spawn(async move {
            tokio::select! {
                () = task => {}
                _ = shutdown.wait_for(|stop| *stop) => {}
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let req = request.into_inner();
        let filter = convert::filter(req.filter.as_ref())?;
        let from = convert::nanos(req.from.as_ref());
        let to = match req.to.as_ref() {
            Some(t) => convert::nanos(Some(t)),
            None => u64::MAX,
        };
        let after: u64 = if req.page_token.is_empty() {
            0
        } else {
            req.page_token
                .parse()
                .map_err(|_| Status::invalid_argument("bad page_token"))?
        };
        let limit = match req.limit {
            0 => 100,
            n => n.min(1000) as usize,
        };
        let journal = self.journal.clone();
        let records = tokio::task::spawn_blocking(move || {
            Journal::open_read(&journal).and_then(|j| j.query(&filter, from, to, after, limit))
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        let next_page_token = if records.len() == limit {
            records
                .last()
                .map(|r| r.seq.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListEventsResponse {
            events: records.iter().map(|r| convert::event(r, 1)).collect(),
            next_page_token,
        }))
    }

    async fn get_certificate(
        &self,
        request: Request<pb::GetCertificateRequest>,
    ) -> Result<Response<pb::Certificate>, Status> {
        let sha = request.into_inner().sha256.to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Status::invalid_argument("sha256 is 64 hex digits"));
        }
        let journal = self.journal.clone();
        let lookup = sha.clone();
        let der = tokio::task::spawn_blocking(move || {
            Journal::open_read(&journal).and_then(|j| j.certificate(&lookup))
        })
        .await
        .map_err(internal)?
        .map_err(internal)?
        .ok_or_else(|| Status::not_found(format!("no certificate {sha} in the journal")))?;
        let summary = sensor_core::x509::summarize(&der)
            .ok()
            .map(|s| convert::certificate_summary(&s));
        Ok(Response::new(pb::Certificate {
            pem: pem(&der),
            der,
            summary,
        }))
    }

    async fn get_status(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::Status>, Status> {
        let s = &self.shared;
        let counters = |m: &std::sync::Mutex<Vec<(String, u64)>>| {
            m.lock()
                .map(|v| {
                    v.iter()
                        .map(|(name, value)| pb::Counter {
                            name: name.clone(),
                            value: *value,
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let hooks = s
            .hooks
            .lock()
            .map(|h| {
                h.iter()
                    .map(|h| pb::Hook {
                        name: h.name.to_owned(),
                        attached: h.attached,
                        detail: h.detail.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let files = s.files.lock().map(|f| f.clone()).unwrap_or_default();
        let journal = s.journal_health();
        Ok(Response::new(pb::Status {
            version: s.version.to_owned(),
            uptime_seconds: s.started.elapsed().as_secs(),
            hooks,
            kernel_counters: counters(&s.kernel_counters),
            engine_counters: counters(&s.engine_counters),
            flows_tracked: s.get(&s.flows_tracked),
            events_per_second: s.events_per_second.lock().map(|v| *v).unwrap_or(0.0),
            journal_bytes: s.get(&s.journal_bytes),
            journal_events: s.get(&s.journal_events),
            subscribers: s.get(&s.subscribers) as u32,
            last_seq: s.get(&s.last_seq),
            config_file: files.config.unwrap_or_default(),
            pins_file: files.pins.unwrap_or_default(),
            trust_generation: s.get(&s.trust_generation),
            journal_state: match journal.state() {
                JournalState::Ok => pb::JournalState::Ok,
                JournalState::Recovered => pb::JournalState::Recovered,
                JournalState::Degraded => pb::JournalState::Degraded,
            }
            .into(),
            journal_detail: journal.detail(),
            journal_moved_aside: journal
                .moved_aside
                .map(|m| m.to.display().to_string())
                .unwrap_or_default(),
            journal_pending_events: s.get(&s.journal_pending_events),
            journal_pending_bytes: s.get(&s.journal_pending_bytes),
            journal_pending_drops: s.get(&s.journal_pending_drops),
            journal_queue_drops: s.get(&s.journal_queue_drops),
            journal_write_failures: s.get(&s.journal_write_failures),
        }))
    }

    async fn reload(
        &self,
        _request: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        let (tx, rx) = oneshot::channel();
        self.reload
            .send(tx)
            .await
            .map_err(|_| Status::unavailable("sensord is stopping"))?;
        let result = rx
            .await
            .map_err(|_| Status::unavailable("sensord is stopping"))?;
        Ok(Response::new(match result {
            ReloadReply::Done(report) => pb::ReloadResponse {
                ok: true,
                error: String::new(),
                trust_generation: report.generation,
                applied: report.applied,
                restart_required: report.restart_required,
            },
            ReloadReply::Refused(error) => pb::ReloadResponse {
                ok: false,
                error,
                trust_generation: self.shared.trust_generation.load(Ordering::Relaxed),
                ..pb::ReloadResponse::default()
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use sensor_core::event::Verdict;
    use tokio_stream::StreamExt as _;

    use super::*;
    use crate::journal::{WriteFailure, path_in, testing};

    /// The service, and the sender that keeps its streams open.
    fn service(
        journal: PathBuf,
        shared: Arc<Shared>,
    ) -> (SensorService, tokio::sync::watch::Sender<bool>) {
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let svc = SensorService {
            shared,
            journal,
            live: broadcast::channel(16).0,
            reload: mpsc::channel(1).0,
            aggregation_window: Duration::from_secs(60),
            shutdown,
        };
        (svc, stop)
    }

    #[tokio::test]
    async fn status_tells_the_journal_state() {
        let shared = Arc::new(Shared::new());
        let (svc, _stop) = service(PathBuf::from("/nonexistent"), shared.clone());
        let status = |svc: SensorService| async move {
            svc.get_status(Request::new(pb::GetStatusRequest {}))
                .await
                .unwrap()
                .into_inner()
        };
        assert_eq!(
            status(svc.clone()).await.journal_state(),
            pb::JournalState::Ok
        );
        shared.update_journal_health(|h| {
            h.failing = Some((WriteFailure::DiskFull, "database or disk is full".into()));
        });
        shared.journal_pending_events.store(42, Ordering::Relaxed);
        let s = status(svc).await;
        assert_eq!(s.journal_state(), pb::JournalState::Degraded);
        assert_eq!(s.journal_detail, "disk full: database or disk is full");
        assert_eq!(s.journal_pending_events, 42);
    }

    #[tokio::test]
    async fn a_watch_past_the_journal_is_out_of_range_not_a_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        let mut j = Journal::open(&path).unwrap();
        j.append(&[testing::event(1, Verdict::Clean)]).unwrap();
        let (svc, _stop) = service(path, Arc::new(Shared::new()));
        let mut stream = svc
            .watch(Request::new(pb::WatchRequest {
                since_seq: 50,
                ..pb::WatchRequest::default()
            }))
            .await
            .unwrap()
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("an answer, not a wait")
            .expect("an item");
        let status = first.unwrap_err();
        assert_eq!(status.code(), tonic::Code::OutOfRange, "{status}");
    }
}
