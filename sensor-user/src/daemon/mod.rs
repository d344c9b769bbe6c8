//! sensord: kernel tap -> engine -> verdicts -> journal -> subscribers and exports.
//! An edge: this is where the I/O and the tasks are.
//!
//! - The capture loop (this task) reads the ring buffer, runs the engine, finds the process,
//!   decides the verdict and hands each event to the journal writer.
//! - The journal writer (a thread) commits events in small batches and only then publishes
//!   them, with their sequence numbers, to live subscribers (a broadcast channel).
//! - The API (tonic) and the JSONL exporter read live events, and the journal when they fall
//!   behind.

mod journal_writer;
mod probing;

use std::{
    io::Write as _,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    sync::{broadcast, mpsc, watch},
};

use crate::{
    api::{server, service::SensorService, status::Shared},
    capture::{
        certs::CertAssembler,
        kernel::{self, ClockOffset, KernelTap, Record, TapSettings},
    },
    config::Config,
    engine::{Engine, EngineLimits},
    event::{self, Handshake},
    journal::{self, Journal, NewEvent},
    process::Resolver,
    trust::load::TrustArgs,
    verdict::VerdictEngine,
};

use journal_writer::JournalMsg;

/// How sensord prints handshakes on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PrintFormat {
    /// One human-readable line per handshake.
    Text,
    /// One JSON object per line (the JSON contract).
    Json,
}

/// Flags that override the configuration file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub trust: TrustArgs,
    pub byte_budget: Option<u32>,
    pub cgroup: Option<PathBuf>,
}

/// What the daemon is asked to do.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The configuration file, re-read on reload.
    pub config_path: Option<PathBuf>,
    pub overrides: Overrides,
    /// Print every handshake on stdout.
    pub print: Option<PrintFormat>,
}

impl Options {
    /// The configuration in force: the file's (or the defaults), with the flags over it.
    pub fn effective_config(&self) -> anyhow::Result<Config> {
        let mut cfg = match &self.config_path {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        let o = &self.overrides;
        if let Some(d) = &o.state_dir {
            cfg.state_dir = d.clone();
        }
        if let Some(s) = &o.socket {
            cfg.api.socket = s.clone();
        }
        if let Some(b) = o.byte_budget {
            cfg.tap.byte_budget = b;
        }
        if o.cgroup.is_some() {
            cfg.tap.cgroup = o.cgroup.clone();
        }
        Ok(cfg)
    }

    fn trust_config(&self, cfg: &Config) -> crate::trust::load::TrustConfig {
        self.overrides.trust.over(cfg.trust.to_trust_config())
    }
}

/// Tell systemd, when it is listening.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    let _ = sd_notify::notify(states);
}

/// Run until SIGINT or SIGTERM. The kernel programs are detached and the journal flushed
/// before this returns.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let cfg = opts.effective_config()?;
    server::check(&cfg.api)?;
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("creating the state directory {}", cfg.state_dir.display()))?;
    // A bad trust input stops the daemon here, before anything is attached.
    let mut generation = 1;
    let trust = crate::trust::load::load(&opts.trust_config(&cfg), generation)
        .context("loading the trust inputs")?;
    tracing::info!(
        host = trust.host.len(),
        public = trust.public.len(),
        pins = trust.pins.pins.len(),
        products = trust.catalogue.products.len(),
        "trust: host store {}, public store {}",
        trust.host.source,
        trust.public.source
    );
    let mut verdicts = VerdictEngine::new(Arc::new(trust));

    let journal_path = journal::path_in(&cfg.state_dir);
    let journal = Journal::open(&journal_path)?;
    verdicts.baseline.import(journal.load_baseline()?);
    let shared = Arc::new(Shared::new());
    set_files(&shared, &opts, verdicts.trust());
    shared
        .last_seq
        .store(journal.last_seq()?, Ordering::Relaxed);
    shared
        .journal_events
        .store(journal.count()?, Ordering::Relaxed);
    tracing::info!(
        journal = %journal_path.display(),
        events = journal.count()?,
        last_seq = journal.last_seq()?,
        baseline = verdicts.baseline.len(),
        "journal open"
    );

    let (live, _) = broadcast::channel(cfg.api.buffer_events.max(16));
    let (journal_tx, journal_rx) = std::sync::mpsc::sync_channel::<JournalMsg>(65_536);
    let writer = journal_writer::spawn(
        journal,
        journal_rx,
        live.clone(),
        shared.clone(),
        journal_writer::Retention::of(&cfg.journal),
    );
    let exporter = cfg
        .export
        .jsonl
        .clone()
        .map(|j| journal_writer::spawn_jsonl(j, live.subscribe(), journal_path.clone()))
        .transpose()?;

    let mut tap = KernelTap::start(&TapSettings {
        cgroup: cfg.tap.cgroup.clone(),
        ring_bytes: Some(cfg.tap.ring_buffer_mb << 20),
        uprobes: cfg.uprobe.enabled.then(|| cfg.uprobe.libraries.clone()),
        config: sensor_common::TapConfig {
            byte_budget: cfg.tap.byte_budget,
            self_tgid: std::process::id(),
            ..sensor_common::TapConfig::default()
        },
    })
    .context("starting the kernel tap")?;
    for hook in tap.hooks() {
        if hook.attached {
            let id = hook.program_id.unwrap_or_default();
            tracing::info!(
                hook = hook.name,
                program_id = id,
                "attached: {}",
                hook.detail
            );
        } else {
            tracing::warn!(hook = hook.name, "unavailable: {}", hook.detail);
        }
    }
    if let Ok(mut h) = shared.hooks.lock() {
        *h = tap.hooks().to_vec();
    }
    let ring = tap.take_ring().context("opening the ring buffer")?;
    // SAFETY: the AsyncFd owns the RingBuf, which owns the fd, so the fd outlives the
    // registration.
    let mut ring = unsafe { AsyncFd::register(ring) }.context("polling the ring buffer")?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (reload_tx, mut reload_rx) = mpsc::channel(4);
    let unix = server::bind_unix(&cfg.api.socket, cfg.api.socket_group.as_deref())?;
    let our_socket = socket_id(&cfg.api.socket);
    let service = SensorService {
        shared: shared.clone(),
        journal: journal_path.clone(),
        live: live.clone(),
        reload: reload_tx,
        aggregation_window: Duration::from_secs(cfg.api.aggregation_window_secs),
        shutdown: shutdown_rx.clone(),
    };
    let api_cfg = cfg.api.clone();
    let api_shutdown = shutdown_rx.clone();
    let mut api =
        tokio::spawn(async move { server::serve(&api_cfg, unix, service, api_shutdown).await });
    let metrics = cfg.metrics.listen.map(|addr| {
        tokio::spawn(crate::export::metrics::serve(
            addr,
            shared.clone(),
            shutdown_rx.clone(),
        ))
    });

    let (mut prober, mut probe_rx) = probing::Prober::new(&cfg.probe);
    if cfg.probe.enabled {
        tracing::info!("active probe on: TLS 1.3 handshakes whose chain is hidden are checked");
    }
    let clock = ClockOffset::now();
    let mut engine = Engine::new(EngineLimits::default());
    let mut resolver = Resolver::new();
    let mut certs = CertAssembler::default();
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut drain = tokio::time::interval(Duration::from_millis(DRAIN_INTERVAL_MS));
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut out = Outputs {
        print: opts.print,
        journal: journal_tx.clone(),
        shared: shared.clone(),
    };
    let mut last_baseline_save = Instant::now();
    let mut failure = None;
    let mut rate = (Instant::now(), shared.last_seq.load(Ordering::Relaxed));
    let status = format!("watching; API on {}", cfg.api.socket.display());
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
    tracing::info!("sensord running; waiting for TLS handshakes");

    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                drain_ring(guard.get_inner_mut(), clock, &mut engine, &mut resolver, &mut certs);
                guard.clear_ready();
                out.emit(&mut engine, &mut resolver, &mut verdicts, &mut prober);
            }
            _ = drain.tick() => {
                drain_ring(ring.get_mut(), clock, &mut engine, &mut resolver, &mut certs);
                out.emit(&mut engine, &mut resolver, &mut verdicts, &mut prober);
            }
            _ = tick.tick() => {
                engine.advance(now_epoch_ns());
                out.emit(&mut engine, &mut resolver, &mut verdicts, &mut prober);
                snapshot(&shared, &certs.stats, &tap, &engine, &verdicts, &prober, &mut rate);
                if last_baseline_save.elapsed() > Duration::from_secs(60) {
                    let _ = journal_tx.try_send(JournalMsg::SaveBaseline(verdicts.baseline.export()));
                    last_baseline_save = Instant::now();
                }
            }
            Some((key, outcome)) = probe_rx.recv() => {
                let done = prober.complete(&key, outcome, now_epoch_ns());
                out.finish_all(done, &mut verdicts);
            }
            _ = sighup.recv() => {
                let _ = reload(&opts, &mut generation, &mut verdicts, &mut prober, &shared, &journal_tx);
            }
            Some(reply) = reload_rx.recv() => {
                let _ = reply.send(reload(&opts, &mut generation, &mut verdicts, &mut prober, &shared, &journal_tx));
            }
            ended = &mut api => {
                let why = match ended {
                    Ok(Ok(())) => "the API stopped".to_owned(),
                    Ok(Err(e)) => format!("the API failed: {e:#}"),
                    Err(e) => format!("the API task failed: {e}"),
                };
                tracing::error!("{why}; stopping");
                failure = Some(why);
                break;
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopping");
    drain_ring(
        ring.get_mut(),
        clock,
        &mut engine,
        &mut resolver,
        &mut certs,
    );
    engine.finish();
    out.emit(&mut engine, &mut resolver, &mut verdicts, &mut prober);
    let abandoned = prober.abandon();
    out.finish_all(abandoned, &mut verdicts);
    match tap.counters() {
        Ok(counters) => {
            let text: Vec<String> = counters.iter().map(|(n, v)| format!("{n}={v}")).collect();
            tracing::info!("kernel counters: {}", text.join(" "));
        }
        Err(err) => tracing::warn!("reading kernel counters: {err}"),
    }
    tracing::info!("engine counters: {:?}", engine.stats());
    drop(ring);
    drop(tap);
    tracing::info!("kernel programs detached");
    let _ = journal_tx.send(JournalMsg::SaveBaseline(verdicts.baseline.export()));
    drop(out);
    drop(journal_tx);
    let _ = shutdown_tx.send(true);
    if writer.join().is_err() {
        tracing::error!("the journal writer panicked");
    }
    tracing::info!("journal flushed");
    if failure.is_none() {
        match tokio::time::timeout(Duration::from_secs(5), api).await {
            Ok(Ok(Err(e))) => tracing::warn!("API: {e:#}"),
            Err(_) => tracing::warn!("API did not stop in time"),
            _ => {}
        }
    }
    if let Some(m) = metrics {
        m.abort();
    }
    // The exporter ends when the last sender of live events is gone.
    drop(live);
    if let Some(exporter) = exporter {
        let _ = exporter.join();
    }
    // Only our own socket: a sensord started meanwhile may have bound a new one there.
    if socket_id(&cfg.api.socket) == our_socket {
        let _ = std::fs::remove_file(&cfg.api.socket);
    }
    tracing::info!("sensord stopped");
    match failure {
        Some(why) => Err(anyhow::anyhow!(why)),
        None => Ok(()),
    }
}

/// Reload the configuration and trust inputs. A bad one is refused and the old stays.
fn reload(
    opts: &Options,
    generation: &mut u64,
    verdicts: &mut VerdictEngine,
    prober: &mut probing::Prober,
    shared: &Shared,
    journal: &std::sync::mpsc::SyncSender<JournalMsg>,
) -> Result<u64, String> {
    let result = opts.effective_config().and_then(|cfg| {
        let trust = crate::trust::load::load(&opts.trust_config(&cfg), *generation + 1)
            .context("loading the trust inputs")?;
        Ok((cfg, trust))
    });
    match result {
        Ok((cfg, trust)) => {
            *generation += 1;
            verdicts.set_trust(Arc::new(trust));
            prober.reconfigure(&cfg.probe);
            set_files(shared, opts, verdicts.trust());
            shared
                .trust_generation
                .store(*generation, Ordering::Relaxed);
            let _ = journal.try_send(JournalMsg::Retention(journal_writer::Retention::of(
                &cfg.journal,
            )));
            tracing::info!(
                generation = *generation,
                "reloaded the configuration and trust inputs"
            );
            Ok(*generation)
        }
        Err(e) => {
            let msg = format!("{e:#}");
            tracing::error!("reload refused, the running configuration stays: {msg}");
            Err(msg)
        }
    }
}

/// The device and inode of a file, to know it again.
fn socket_id(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Publish which configuration and pin files are in force.
fn set_files(shared: &Shared, opts: &Options, trust: &crate::trust::TrustContext) {
    if let Ok(mut f) = shared.files.lock() {
        f.config = opts.config_path.as_ref().map(|p| p.display().to_string());
        f.pins = trust.pins.source.clone();
    }
}

/// Refresh the shared status (every second).
fn snapshot(
    shared: &Shared,
    assembled: &crate::capture::certs::AssemblyStats,
    tap: &KernelTap,
    engine: &Engine,
    verdicts: &VerdictEngine,
    prober: &probing::Prober,
    rate: &mut (Instant, u64),
) {
    if let Ok(c) = tap.counters()
        && let Ok(mut k) = shared.kernel_counters.lock()
    {
        *k = c.into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
    }
    if let Ok(mut p) = shared.program_stats.lock() {
        *p = tap.program_stats();
    }
    let es = engine.stats();
    let vs = verdicts.stats();
    if let Ok(mut e) = shared.engine_counters.lock() {
        let v = serde_json::to_value(es).unwrap_or_default();
        let mut list: Vec<(String, u64)> = v
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        list.push(("verdicts".into(), vs.verdicts));
        list.push(("verdict_cache_hits".into(), vs.cache_hits));
        let ps = prober.stats();
        list.push(("probes_started".into(), ps.started));
        list.push(("probes_failed".into(), ps.failed));
        list.push(("probe_cache_hits".into(), ps.cached));
        list.push(("probes_rate_limited".into(), ps.rate_limited));
        list.push(("uprobe_certs_assembled".into(), assembled.certs));
        list.push(("uprobe_certs_unusable".into(), assembled.truncated));
        list.push(("uprobe_certs_abandoned".into(), assembled.abandoned));
        *e = list;
    }
    shared
        .flows_tracked
        .store(engine.flows() as u64, Ordering::Relaxed);
    let seq = shared.last_seq.load(Ordering::Relaxed);
    let elapsed = rate.0.elapsed().as_secs_f64();
    if elapsed >= 5.0 {
        if let Ok(mut eps) = shared.events_per_second.lock() {
            *eps = (seq - rate.1) as f64 / elapsed;
        }
        *rate = (Instant::now(), seq);
    }
}

/// How often the ring buffer is drained without a wakeup.
const DRAIN_INTERVAL_MS: u64 = 5;

/// Hand every record waiting in the ring buffer to the engine or the resolver.
fn drain_ring(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    clock: ClockOffset,
    engine: &mut Engine,
    resolver: &mut Resolver,
    certs: &mut CertAssembler,
) {
    while let Some(item) = ring.next() {
        match kernel::decode(&item, clock) {
            Record::Segment(seg) => engine.push(&seg),
            Record::Socket(owner) => resolver.on_socket(owner),
            Record::Cert(chunk) => {
                if let Some(cert) = certs.push(&chunk) {
                    engine.push_cert(cert.cookie, cert.der);
                }
            }
            Record::Unknown => {}
        }
    }
}

/// Wall-clock time, for idle timeouts.
fn now_epoch_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Where finished handshakes go.
struct Outputs {
    print: Option<PrintFormat>,
    journal: std::sync::mpsc::SyncSender<JournalMsg>,
    shared: Arc<Shared>,
}

impl Outputs {
    /// Take what the engine finished: attribute it, then judge it now, or after its probe.
    fn emit(
        &mut self,
        engine: &mut Engine,
        resolver: &mut Resolver,
        verdicts: &mut VerdictEngine,
        prober: &mut probing::Prober,
    ) {
        let now = now_epoch_ns();
        let mut ready = Vec::new();
        for mut hs in engine.drain() {
            attribute(resolver, &mut hs, now);
            ready.extend(prober.submit(hs, now));
        }
        self.finish_all(ready, verdicts);
    }

    /// Judge handshakes and hand them to stdout and the journal.
    fn finish_all(&mut self, done: Vec<(Handshake, probing::Note)>, verdicts: &mut VerdictEngine) {
        if done.is_empty() {
            return;
        }
        let mut stdout = self.print.map(|_| std::io::stdout().lock());
        for (mut hs, note) in done {
            verdicts.apply(&mut hs);
            note.apply(&mut hs);
            self.shared.count_verdict(hs.verdict);
            if let (Some(fmt), Some(out)) = (self.print, stdout.as_mut()) {
                let line = match fmt {
                    PrintFormat::Text => event::one_line(&hs),
                    PrintFormat::Json => serde_json::to_string(&hs).unwrap_or_default(),
                };
                let _ = writeln!(out, "{line}");
            }
            self.shared.journal_lag.fetch_add(1, Ordering::Relaxed);
            if self
                .journal
                .try_send(JournalMsg::Event(Box::new(NewEvent::of(&hs))))
                .is_err()
            {
                self.shared.journal_lag.fetch_sub(1, Ordering::Relaxed);
                self.shared
                    .journal_queue_drops
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(out) = stdout.as_mut() {
            let _ = out.flush();
        }
    }
}

/// Find the local process behind the handshake.
fn attribute(resolver: &mut Resolver, hs: &mut Handshake, now: u64) {
    let endpoints = hs.src_addr.zip(hs.dst_addr).map(|(src, dst)| {
        (
            std::net::SocketAddr::new(dst, hs.dst_port),
            std::net::SocketAddr::new(src, hs.src_port),
        )
    });
    let server = hs
        .local_sockets
        .server
        .zip(endpoints)
        .map(|(sock, (local, remote))| (sock, local, remote));
    hs.process = resolver.resolve(hs.local_sockets.client, server, now);
}
