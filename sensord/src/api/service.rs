//! The sensor.v1 service.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError, atomic::Ordering},
    time::{Duration, Instant},
};

use base64::Engine as _;
use sensor_proto::v1::{self as pb, sensor_server::Sensor};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use sensor_core::filter::Filter;

use super::{
    access::{self, Admins, Peer},
    convert,
};
use crate::{
    journal::{Journal, JournalError, StoredEvent, follow::Follower},
    reload::{ReloadReply, ReloadRequest},
    status::{ChainSource, JournalState, Shared},
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
    /// Who may change sensord (Reload).
    pub admins: Arc<Admins>,
    /// Reloads at most once per interval, whoever asks: each one reads every trust store.
    pub reload_gate: Arc<RateGate>,
    /// Watch streams open at once, at most.
    pub max_subscribers: usize,
}

/// Reloads over the API, one a second at most.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

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

/// Lets one call through per interval; the others are told how long to wait.
#[derive(Debug)]
pub struct RateGate {
    interval: Duration,
    last: Mutex<Option<Instant>>,
}

impl RateGate {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::new(None),
        }
    }

    /// Let a call through at `now`, or say how long until one may be.
    pub fn admit(&self, now: Instant) -> Result<(), Duration> {
        // Nothing panics while holding the lock; should something ever, the time inside is
        // still a time.
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = *last {
            let since = now.saturating_duration_since(t);
            if since < self.interval {
                return Err(self.interval - since);
            }
        }
        *last = Some(now);
        Ok(())
    }
}

/// Who sent a request: the Unix socket peer's credentials (`SO_PEERCRED`, which tonic takes
/// for every connection on the socket), or the names in an mTLS client's certificate.
fn peer_of<T>(request: &Request<T>) -> Peer {
    if let Some(info) = request
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
    {
        return info.peer_cred.map_or(Peer::Unknown, |c| Peer::Local {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid(),
        });
    }
    match request.peer_certs() {
        Some(chain) => Peer::Remote {
            names: chain
                .first()
                .and_then(|leaf| sensor_core::x509::holder_names(leaf).ok())
                .unwrap_or_default(),
        },
        None => Peer::Unknown,
    }
}

/// Counts a subscriber while it lives.
struct Subscribed(Arc<Shared>);

impl Subscribed {
    /// A subscriber's place, if fewer than `max` are taken.
    fn try_new(shared: Arc<Shared>, max: usize) -> Option<Self> {
        let max = u64::try_from(max).unwrap_or(u64::MAX);
        shared
            .subscribers
            .try_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Self(shared))
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
    /// key -> (window end, latest record, events folded into it and not sent yet, the first
    /// of those).
    open: HashMap<String, (tokio::time::Instant, Arc<StoredEvent>, u64, u64)>,
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
            Some((end, latest, n, first)) if *end > now => {
                if *n == 0 {
                    *first = r.seq;
                }
                *latest = r;
                *n += 1;
                None
            }
            _ => {
                self.open.insert(key, (now + self.window, r.clone(), 0, 0));
                Some((r, 1))
            }
        }
    }

    /// Where a subscriber may resume after having been sent `seq`: before the first event
    /// folded into a window and not sent yet.
    fn resume_after(&self, seq: u64) -> u64 {
        self.open
            .values()
            .filter(|(_, _, n, _)| *n > 0)
            .map(|(_, _, _, first)| first.saturating_sub(1))
            .fold(seq, u64::min)
    }

    /// Windows that ended with folded events: their latest event and how many were folded.
    fn expired(&mut self) -> Vec<(Arc<StoredEvent>, u64)> {
        let now = tokio::time::Instant::now();
        let mut out = Vec::new();
        self.open.retain(|_, (end, latest, n, _)| {
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
    _counted: Subscribed,
) {
    let mut follower = Follower::new(service.journal.clone(), service.live.subscribe(), after);
    let mut agg = aggregate.then(|| Aggregator {
        window: service.aggregation_window,
        open: HashMap::new(),
    });
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let send = |r: Arc<StoredEvent>, count: u64, resume_after: u64| {
        let tx = tx.clone();
        let mut ev = convert::event(&r, count);
        ev.resume_after = resume_after;
        async move { tx.send(Ok(ev)).await.is_ok() }
    };
    let resume =
        |agg: &Option<Aggregator>, seq: u64| agg.as_ref().map_or(seq, |a| a.resume_after(seq));
    loop {
        tokio::select! {
            got = follower.next() => match got {
                Ok(Some(r)) => {
                    if filter.matches(&r.meta)
                        && let Some((r, n)) = fold(&mut agg, r)
                    {
                        let after = resume(&agg, r.seq);
                        if !send(r, n, after).await {
                            return;
                        }
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
                    let after = resume(&agg, r.seq);
                    if !send(r, n, after).await {
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

impl SensorService {
    /// Let `peer` do `what`, a change, or refuse it (PERMISSION_DENIED, saying who may).
    async fn authorize(&self, what: &'static str, peer: &Peer) -> Result<(), Status> {
        let groups = match peer {
            Peer::Local { uid, .. } if self.admins.needs_groups(peer) => {
                let uid = *uid;
                tokio::task::spawn_blocking(move || access::groups_of(uid))
                    .await
                    .ok()
                    .flatten()
            }
            _ => None,
        };
        self.admins
            .check(what, peer, groups.as_deref())
            .map_err(|denied| {
                self.shared.api_denied.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("refused: {denied}");
                Status::permission_denied(denied.to_string())
            })
    }
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
        // Each stream holds a journal reader and a task: their number is bounded.
        let Some(slot) = Subscribed::try_new(self.shared.clone(), self.max_subscribers) else {
            self.shared.watch_refused.fetch_add(1, Ordering::Relaxed);
            return Err(Status::resource_exhausted(format!(
                "{} Watch streams are open, as many as api.max_subscribers allows; try again \
                 later",
                self.max_subscribers
            )));
        };
        let after = if req.tail {
            self.shared.last_seq.load(Ordering::Relaxed)
        } else {
            req.since_seq
        };
        let (tx, rx) = mpsc::channel(256);
        let mut shutdown = self.shutdown.clone();
        let task = subscriber(self.clone(), filter, after, req.aggregate, tx, slot);
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
        let tls_libraries = s
            .tls_libraries
            .lock()
            .map(|l| {
                l.iter()
                    .map(|l| pb::TlsLibrary {
                        library: l.library.clone(),
                        path: l.path.clone(),
                        chains: match l.chains {
                            ChainSource::Uprobe => pb::ChainSource::Uprobe,
                            ChainSource::ProbeOnly => pb::ChainSource::ProbeOnly,
                        }
                        .into(),
                        processes_last_hour: l.processes_last_hour,
                        detail: l.detail.clone(),
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
            engine_counters: {
                let mut c: Vec<pb::Counter> = counters(&s.engine_counters);
                c.extend(s.api_counters().map(|(name, value)| pb::Counter {
                    name: name.to_owned(),
                    value,
                }));
                c
            },
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
            tls_libraries,
        }))
    }

    async fn reload(
        &self,
        request: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        let peer = peer_of(&request);
        self.authorize("Reload", &peer).await?;
        if let Err(wait) = self.reload_gate.admit(Instant::now()) {
            self.shared
                .reloads_rate_limited
                .fetch_add(1, Ordering::Relaxed);
            return Err(Status::resource_exhausted(format!(
                "Reload is limited to one a second; try again in {} ms",
                wait.as_millis().max(1)
            )));
        }
        tracing::info!("reload asked over the API by {peer}");
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
            admins: Arc::new(Admins::default()),
            reload_gate: Arc::new(RateGate::new(RELOAD_INTERVAL)),
            max_subscribers: 4,
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

    use std::{os::unix::fs::PermissionsExt as _, path::Path};

    use sensor_proto::v1::{sensor_client::SensorClient, sensor_server::SensorServer};
    use tokio::net::UnixListener;
    use tokio_stream::wrappers::UnixListenerStream;
    use tonic::transport::Channel;

    use crate::reload::{ReloadReport, ReloadRequest};

    /// A service on a journal of its own, whose reloads are answered at once.
    struct Fixture {
        service: SensorService,
        _stop: tokio::sync::watch::Sender<bool>,
        dir: tempfile::TempDir,
    }

    fn fixture(admins: Admins, max_subscribers: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal.sqlite");
        Journal::open(&journal).unwrap();
        let (live, _) = broadcast::channel(16);
        let (reload, mut requests) = mpsc::channel::<ReloadRequest>(4);
        tokio::spawn(async move {
            while let Some(reply) = requests.recv().await {
                let _ = reply.send(ReloadReply::Done(ReloadReport {
                    generation: 1,
                    ..ReloadReport::default()
                }));
            }
        });
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        Fixture {
            service: SensorService {
                shared: Arc::new(Shared::new()),
                journal,
                live,
                reload,
                aggregation_window: Duration::from_secs(60),
                shutdown,
                admins: Arc::new(admins),
                reload_gate: Arc::new(RateGate::new(RELOAD_INTERVAL)),
                max_subscribers,
            },
            _stop: stop,
            dir,
        }
    }

    async fn client(socket: &Path) -> SensorClient<Channel> {
        let channel = sensor_proto::unix::channel(socket, None).await.unwrap();
        SensorClient::new(channel)
    }

    /// Where the test below tells its child (run as nobody) to connect.
    const CHILD_SOCKET: &str = "SENSORD_TEST_RELOAD_AS_NOBODY";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reload_is_for_admins_and_once_a_second() {
        let fx = fixture(Admins::default(), 4);
        // A socket anyone may reach, so that only the credentials decide.
        std::fs::set_permissions(fx.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = fx.dir.path().join("api.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SensorServer::new(fx.service.clone()))
                .serve_with_incoming(UnixListenerStream::new(listener)),
        );
        let mut api = client(&socket).await;
        let shared = fx.service.shared.clone();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            // Not root (and no admin group): refused, saying who may.
            let denied = api.reload(pb::ReloadRequest {}).await.unwrap_err();
            assert_eq!(denied.code(), tonic::Code::PermissionDenied);
            assert!(
                denied.message().starts_with("Reload is for root"),
                "{denied:?}"
            );
            server.abort();
            return;
        }
        let done = api.reload(pb::ReloadRequest {}).await.unwrap().into_inner();
        assert!(done.ok, "{done:?}");
        let again = api.reload(pb::ReloadRequest {}).await.unwrap_err();
        assert_eq!(again.code(), tonic::Code::ResourceExhausted, "{again:?}");
        assert!(again.message().contains("one a second"), "{again:?}");
        assert_eq!(shared.get(&shared.reloads_rate_limited), 1);

        // Someone else on the socket: this test binary again, as nobody.
        let exe = std::env::current_exe().unwrap();
        let child = tokio::task::spawn_blocking(move || {
            use std::os::unix::process::CommandExt as _;
            std::process::Command::new(exe)
                .args([
                    "--exact",
                    "api::service::tests::reload_as_nobody",
                    "--test-threads=1",
                ])
                .env(CHILD_SOCKET, &socket)
                .uid(65534)
                .gid(65534)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let out = String::from_utf8_lossy(&child.stdout);
        assert!(child.status.success(), "{out}");
        assert!(out.contains("1 passed"), "{out}");
        assert_eq!(shared.get(&shared.api_denied), 1);
        // The refusal spent nothing of the rate: a second later, root reloads again.
        tokio::time::sleep(RELOAD_INTERVAL).await;
        assert!(
            api.reload(pb::ReloadRequest {})
                .await
                .unwrap()
                .into_inner()
                .ok
        );
        server.abort();
    }

    /// The other half of the test above: does nothing unless that test started it.
    #[test]
    fn reload_as_nobody() {
        let Some(socket) = std::env::var_os(CHILD_SOCKET) else {
            return;
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut api = client(Path::new(&socket)).await;
            // Reading is for everyone who can reach the socket...
            api.get_status(pb::GetStatusRequest {}).await.unwrap();
            // ...changing is not.
            let denied = api.reload(pb::ReloadRequest {}).await.unwrap_err();
            assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
            let text = denied.message();
            assert!(
                text.starts_with("Reload is for root, members of api.admin_group"),
                "{text}"
            );
            assert!(
                text.contains("this is uid 65534 (gid 65534, pid "),
                "{text}"
            );
        });
    }

    #[tokio::test]
    async fn watch_streams_are_capped() {
        let fx = fixture(Admins::default(), 2);
        let shared = fx.service.shared.clone();
        let watch = || fx.service.watch(Request::new(pb::WatchRequest::default()));
        let first = watch().await.unwrap();
        let _second = watch().await.unwrap();
        let refused = watch().await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("api.max_subscribers"),
            "{refused:?}"
        );
        assert_eq!(shared.get(&shared.watch_refused), 1);
        assert_eq!(shared.get(&shared.subscribers), 2);
        // A stream that ends gives its place back.
        drop(first);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while shared.get(&shared.subscribers) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(watch().await.is_ok());
    }

    #[tokio::test]
    async fn an_aggregated_stream_resumes_before_what_it_folded_and_has_not_sent() {
        let record = |seq: u64, sni: &str| {
            let mut r =
                crate::journal::testing::event(seq, sensor_core::event::Verdict::Clean).stored(seq);
            r.meta.sni = Some(sni.to_owned());
            Arc::new(r)
        };
        let mut agg = Aggregator {
            window: Duration::from_secs(60),
            open: HashMap::new(),
        };
        // a.test at 1 goes out; at 2 and 3 it is folded; b.test at 4 goes out.
        assert!(agg.add(record(1, "a.test")).is_some());
        assert_eq!(agg.resume_after(1), 1);
        assert!(agg.add(record(2, "a.test")).is_none());
        assert!(agg.add(record(3, "a.test")).is_none());
        let (sent, _) = agg.add(record(4, "b.test")).unwrap();
        // Resuming after 4 would lose 2 and 3, which no one has seen yet.
        assert_eq!(agg.resume_after(sent.seq), 1);
        // Once the window's count goes out, nothing is pending.
        agg.open
            .values_mut()
            .for_each(|w| w.0 = tokio::time::Instant::now());
        let folded = agg.expired();
        assert_eq!(folded.len(), 1);
        assert_eq!((folded[0].0.seq, folded[0].1), (3, 2));
        assert_eq!(agg.resume_after(4), 4);
    }

    #[test]
    fn the_reload_gate_lets_one_through_a_second() {
        let gate = RateGate::new(RELOAD_INTERVAL);
        let t0 = Instant::now();
        assert!(gate.admit(t0).is_ok());
        let wait = gate.admit(t0 + Duration::from_millis(300)).unwrap_err();
        assert_eq!(wait, Duration::from_millis(700));
        assert!(gate.admit(t0 + RELOAD_INTERVAL).is_ok());
        // Refusals do not push the next admission back.
        assert!(gate.admit(t0 + Duration::from_millis(1500)).is_err());
        assert!(gate.admit(t0 + 2 * RELOAD_INTERVAL).is_ok());
    }
}
