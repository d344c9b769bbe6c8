//! sensord's run loop: the kernel tap's ring buffer → the [`pipeline::Pipeline`] → the journal
//! writer → subscribers and exports. An edge: this is where the I/O and the tasks are.
//!
//! - The capture loop (this task) drains the ring buffer into the pipeline every millisecond
//!   within 200 ms of the last record, every 5 ms otherwise (or on a wakeup), ticks it every
//!   second, hands it finished probes and loaded reloads.
//! - The journal writer (a thread) commits events in small batches and only then publishes
//!   them, with their sequence numbers, to live subscribers (a broadcast channel).
//! - The API (tonic) and the exporters follow the journal ([`crate::journal::follow`]).
//! - Reloads are loaded by their own task ([`reload::loader`]) and applied here.

pub mod check;
mod exports;
mod journal_writer;
mod pending;
pub mod pipeline;
mod probing;
mod tls_libraries;

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use sensor_host::{
    config::Config,
    trust::{TrustArgs, TrustConfig},
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    sync::{broadcast, mpsc, watch},
};

use crate::{
    api::{
        access::Admins,
        server,
        service::{self, RateGate, SensorService},
    },
    clock::Clock,
    export::{cursor::CursorFile, jsonl, otlp, syslog},
    journal,
    kernel::{self, KernelTap, TapSettings},
    reload::{self, ReloadReply, ReloadReport},
    status::Shared,
};

use exports::{Exports, Running, Stop as _};
use journal_writer::JournalMsg;
use pipeline::{Outputs, Pipeline};

/// How sensord prints handshakes on stdout: as `sensorctl analyze` does.
pub use sensor_host::analyze::Output as PrintFormat;

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

    fn trust_config(&self, cfg: &Config) -> TrustConfig {
        self.overrides.trust.over(cfg.trust.to_trust_config())
    }

    /// What a reload would put in force, with trust generation `generation`.
    fn load(&self, generation: u64) -> anyhow::Result<reload::Loaded> {
        let config = self.effective_config()?;
        let trust = sensor_host::trust::load(&self.trust_config(&config), generation)
            .context("loading the trust inputs")?;
        Ok(reload::Loaded { config, trust })
    }
}

/// Tell systemd, when it is listening.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    let _ = sd_notify::notify(states);
}

/// Run until SIGINT or SIGTERM. The kernel programs are detached and the journal flushed
/// before this returns.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let mut cfg = opts.effective_config()?;
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("creating the state directory {}", cfg.state_dir.display()))?;
    // A bad trust input stops the daemon here, before anything is attached.
    let trust = sensor_host::trust::load(&opts.trust_config(&cfg), 1)
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
    let trust = Arc::new(trust);

    let journal_path = journal::path_in(&cfg.state_dir);
    // A damaged journal is moved aside and a new one started, above every sequence number
    // given before; only errors that are not the file's (permissions, a full disk) stop here.
    let opened = journal::recover::open(&journal_path, journal::recover::CHECK_BUDGET)?;
    let journal = &opened.journal;
    let shared = Arc::new(Shared::new());
    set_files(&shared, &opts, &trust);
    let last_seq = journal.last_seq()?;
    shared.last_seq.store(last_seq, Ordering::Relaxed);
    let events = journal.count()?;
    shared.journal_events.store(events, Ordering::Relaxed);
    let baseline = journal.load_baseline()?;
    tracing::info!(
        journal = %journal_path.display(),
        events,
        last_seq,
        baseline = baseline.len(),
        "journal open"
    );

    let (live, _) = broadcast::channel(cfg.api.buffer_events.max(16));
    let (journal_tx, journal_rx) = std::sync::mpsc::sync_channel::<JournalMsg>(65_536);
    let writer = journal_writer::spawn(
        opened,
        journal_path.clone(),
        journal_rx,
        live.clone(),
        shared.clone(),
        journal_writer::Limits::of(&cfg.journal),
    )
    .context("spawning the journal thread")?;
    let mut exports = Exports::new(spawn_exporter(&cfg, &journal_path, &live, &shared)?);

    let mut tap = KernelTap::start(&TapSettings {
        cgroup: cfg.tap.cgroup.clone(),
        ring_bytes: Some(cfg.tap.ring_buffer_mb << 20),
        uprobes: cfg.uprobe.enabled.then(|| cfg.uprobe.libraries.clone()),
        request_heads: cfg.uprobe.request_heads,
        config: sensor_common::TapConfig {
            byte_budget: cfg.tap.byte_budget,
            ring_budget: sensor_common::default_ring_budget(cfg.tap.byte_budget),
            self_tgid: kernel::own_kernel_tgid(),
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
    let (load_tx, load_rx) = mpsc::channel(4);
    let (loaded_tx, mut loaded_rx) = mpsc::channel(4);
    let reload_opts = opts.clone();
    let loader = tokio::spawn(reload::loader(
        move |generation| reload_opts.load(generation),
        trust.clone(),
        load_rx,
        loaded_tx,
    ));
    let admins = Admins::from_config(&cfg.api).with_context(|| match &opts.config_path {
        Some(p) => format!("in {}", p.display()),
        None => "in the configuration".to_owned(),
    })?;
    let unix = server::bind_unix(&cfg.api.socket, cfg.api.socket_group.as_deref())?;
    let our_socket = socket_id(&cfg.api.socket);
    let service = SensorService {
        shared: shared.clone(),
        journal: journal_path.clone(),
        live: live.clone(),
        reload: reload_tx,
        aggregation_window: Duration::from_secs(cfg.api.aggregation_window_secs),
        shutdown: shutdown_rx.clone(),
        admins: Arc::new(admins),
        reload_gate: Arc::new(RateGate::new(service::RELOAD_INTERVAL)),
        max_subscribers: cfg.api.max_subscribers,
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

    let (prober, mut probe_rx) = pipeline::prober(&cfg.probe);
    if cfg.probe.enabled {
        tracing::info!("active probe on: TLS 1.3 handshakes whose chain is hidden are checked");
    }
    let host = sensor_host::identity::Sources::default().host(&cfg.host.labels);
    let missing = sensor_host::identity::Sources::missing(&host);
    if !missing.is_empty() {
        tracing::warn!(
            "events will not name this host completely: nothing usable in {}",
            missing.join(", ")
        );
    }
    let clock = Clock::start();
    let secs = |clock: &Clock| clock.now_ns() / 1_000_000_000;
    let libraries = tls_libraries::TlsLibraries::start(
        &mut tap,
        cfg.uprobe.enabled,
        &cfg.uprobe.libraries,
        secs(&clock),
    );
    let mut pipeline = Pipeline::new(
        trust,
        prober,
        clock.kernel(),
        cfg.tap.flow_memory_mb,
        Outputs {
            print: opts.print,
            journal: journal_tx.clone(),
            shared: shared.clone(),
            host: Arc::new(host),
        },
    );
    pipeline.verdicts().baseline.import(baseline);
    if cfg.containers.cri {
        pipeline.set_cri(crate::process::cri::Cri::start(
            cfg.containers.cri_socket.clone(),
        ));
    }
    if tap
        .hooks()
        .iter()
        .any(|h| h.name == "request_heads" && h.attached)
    {
        // The server reads a request after its bytes pass the tap: a completed inbound
        // handshake waits this long for its head.
        pipeline.engine().set_request_head_wait(500_000_000);
    }
    if tap
        .hooks()
        .iter()
        .any(|h| matches!(h.name, "gnutls" | "d2i_x509") && h.attached)
    {
        // GnuTLS hands on a TLS 1.3 server's certificates other than the leaf when its
        // client verifies, which wget does after the handshake: a one-certificate chain waits
        // this long for the rest.
        pipeline.engine().set_uprobe_chain_wait(500_000_000);
    }
    let tap = Arc::new(std::sync::Mutex::new(tap));
    let libraries = libraries
        .spawn(tap.clone(), shared.clone(), clock)
        .context("starting the thread that looks at TLS libraries")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let drain = tokio::time::sleep(DRAIN_IDLE);
    tokio::pin!(drain);
    let mut last_record = Instant::now();
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
                if drain_ring(guard.get_inner_mut(), &mut pipeline) > 0 {
                    last_record = Instant::now();
                }
                guard.clear_ready();
                pipeline.emit(clock.now_ns());
                libraries.on_processes(pipeline.take_new_processes());
            }
            () = &mut drain => {
                if drain_ring(ring.get_mut(), &mut pipeline) > 0 {
                    last_record = Instant::now();
                }
                pipeline.emit(clock.now_ns());
                libraries.on_processes(pipeline.take_new_processes());
                let next = if last_record.elapsed() < BUSY_FOR { DRAIN_BUSY } else { DRAIN_IDLE };
                drain.as_mut().reset(tokio::time::Instant::now() + next);
            }
            _ = tick.tick() => {
                pipeline.set_wall_shift(clock.wall_shift_ns());
                pipeline.on_tick(clock.now_ns());
                // The library thread may be attaching a uprobe: the kernel's counters wait
                // for the next tick rather than the loop for it.
                pipeline.snapshot(tap.try_lock().ok().as_deref(), &mut rate);
                if last_baseline_save.elapsed() > Duration::from_secs(60) {
                    let _ = journal_tx.try_send(JournalMsg::SaveBaseline(pipeline.baseline()));
                    last_baseline_save = Instant::now();
                }
            }
            Some((key, outcome)) = probe_rx.recv() => {
                pipeline.on_probe_result(&key, outcome, clock.now_ns());
            }
            _ = sighup.recv() => {
                let _ = load_tx.try_send(None);
            }
            Some(reply) = reload_rx.recv() => {
                if let Err(mpsc::error::TrySendError::Full(Some(reply)) | mpsc::error::TrySendError::Closed(Some(reply))) = load_tx.try_send(Some(reply)) {
                    let _ = reply.send(ReloadReply::Refused("a reload is already under way".into()));
                }
            }
            Some((loaded, reply)) = loaded_rx.recv() => {
                let outcome = match loaded {
                    Ok(loaded) => {
                        let (report, export) = apply_reload(
                            loaded,
                            &mut cfg,
                            &mut pipeline,
                            &mut tap.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
                            &mut exports,
                            Reloaders { journal: &journal_tx, journal_path: &journal_path, live: &live, shared: &shared },
                        );
                        set_files(&shared, &opts, pipeline.verdicts().trust());
                        conclude(report, export, reply);
                        continue;
                    }
                    Err(msg) => {
                        tracing::error!("reload refused, the running configuration stays: {msg}");
                        ReloadReply::Refused(msg)
                    }
                };
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
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
    loader.abort();
    drain_ring(ring.get_mut(), &mut pipeline);
    pipeline.finish(clock.now_ns());
    libraries.stop();
    match tap
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .counters()
    {
        Ok(counters) => {
            let text: Vec<String> = counters.iter().map(|(n, v)| format!("{n}={v}")).collect();
            tracing::info!("kernel counters: {}", text.join(" "));
        }
        Err(err) => tracing::warn!("reading kernel counters: {err}"),
    }
    tracing::info!("engine counters: {:?}", pipeline.engine_stats());
    drop(ring);
    // The last reference: the library thread has stopped.
    drop(tap);
    tracing::info!("kernel programs detached");
    let _ = journal_tx.send(JournalMsg::SaveBaseline(pipeline.baseline()));
    drop(pipeline);
    drop(journal_tx);
    let _ = shutdown_tx.send(true);
    if writer.join().is_err() {
        tracing::error!("the journal writer panicked");
    }
    tracing::info!("journal flushed");
    let mut api_stopped = failure.is_none();
    if failure.is_none() {
        match tokio::time::timeout(Duration::from_secs(5), api).await {
            Ok(Ok(Err(e))) => tracing::warn!("API: {e:#}"),
            Err(_) => {
                tracing::warn!("API did not stop in time");
                api_stopped = false;
            }
            _ => {}
        }
    }
    if let Some(m) = metrics {
        m.abort();
    }
    // The exporter ends when the last sender of live events is gone, after what was committed.
    // An API still running holds one: then stop it where it is (its cursor resumes there).
    let exporter = exports.settle().await;
    drop(live);
    if let Some(exporter) = exporter {
        if api_stopped {
            exporter.join();
        } else {
            exporter.stop();
        }
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

/// Start the exporters the configuration has (JSON lines, syslog, OTLP).
fn spawn_exporter(
    cfg: &Config,
    journal_path: &std::path::Path,
    live: &broadcast::Sender<Arc<journal::StoredEvent>>,
    shared: &Shared,
) -> anyhow::Result<Option<Running>> {
    let last_seq = shared.last_seq.load(Ordering::Relaxed);
    let jsonl = cfg
        .export
        .jsonl
        .clone()
        .map(|j| {
            jsonl::Exporter::spawn(
                j,
                journal_path.to_path_buf(),
                live,
                CursorFile::new(&cfg.state_dir, "jsonl"),
                last_seq,
            )
        })
        .transpose()?;
    let syslog = cfg.export.syslog.clone().map(|s| {
        syslog::Exporter::spawn(
            s,
            syslog::Source {
                journal: journal_path.to_path_buf(),
                live: live.downgrade(),
                cursor: CursorFile::new(&cfg.state_dir, "syslog"),
                last_seq,
            },
            shared.syslog.clone(),
        )
    });
    let syslog = match syslog.transpose() {
        Ok(s) => s,
        Err(e) => {
            if let Some(j) = jsonl {
                j.stop();
            }
            return Err(e);
        }
    };
    let otlp = cfg.export.otlp.clone().map(|o| {
        otlp::Exporter::spawn(
            o,
            otlp::Source {
                journal: journal_path.to_path_buf(),
                live: live.subscribe(),
                cursor: CursorFile::new(&cfg.state_dir, "otlp"),
                last_seq,
            },
            shared.otlp.clone(),
        )
    });
    let running = Running {
        jsonl,
        syslog,
        otlp: None,
    };
    match otlp.transpose() {
        Ok(otlp) => Ok(
            (running.jsonl.is_some() || running.syslog.is_some() || otlp.is_some())
                .then_some(Running { otlp, ..running }),
        ),
        Err(e) => {
            running.stop();
            Err(e)
        }
    }
}

/// What a reload may restart besides the pipeline.
struct Reloaders<'a> {
    journal: &'a std::sync::mpsc::SyncSender<JournalMsg>,
    journal_path: &'a std::path::Path,
    live: &'a broadcast::Sender<Arc<journal::StoredEvent>>,
    shared: &'a Arc<Shared>,
}

/// Put a loaded reload in force: the trust context always (the one in force when its inputs
/// did not change), and every changed setting that applies while running. The others are
/// reported as needing a restart. A changed export is replaced off the capture loop: the
/// report is final once that is done ([`conclude`]).
fn apply_reload(
    loaded: reload::Ready,
    cfg: &mut Config,
    pipeline: &mut Pipeline,
    tap: &mut KernelTap,
    exports: &mut Exports<Running>,
    r: Reloaders<'_>,
) -> (ReloadReport, Option<exports::Replaced>) {
    let new = loaded.config;
    let generation = loaded.trust.generation;
    let (mut applied, restart_required) = reload::classify(cfg.changed_settings(&new));
    pipeline.on_reload(loaded.trust, &new.probe);
    let _ = r
        .journal
        .try_send(JournalMsg::Limits(journal_writer::Limits::of(&new.journal)));
    if new.tap.byte_budget != cfg.tap.byte_budget
        && let Err(e) = tap.set_byte_budget(new.tap.byte_budget)
    {
        tracing::warn!("reload: the byte budget stays {}: {e}", cfg.tap.byte_budget);
        applied.retain(|s| s != "tap.byte_budget");
    }
    let export = (new.export != cfg.export).then(|| {
        let mut next = cfg.clone();
        next.export = new.export.clone();
        let (journal_path, live, shared) = (
            r.journal_path.to_path_buf(),
            r.live.clone(),
            r.shared.clone(),
        );
        exports.replace(move || spawn_exporter(&next, &journal_path, &live, &shared))
    });
    // What needs a restart stays as it runs; the rest is now in force.
    let mut running = new;
    running.state_dir = cfg.state_dir.clone();
    running.api = cfg.api.clone();
    running.tap.cgroup = cfg.tap.cgroup.clone();
    running.tap.ring_buffer_mb = cfg.tap.ring_buffer_mb;
    running.uprobe = cfg.uprobe.clone();
    running.metrics = cfg.metrics.clone();
    running.containers = cfg.containers.clone();
    *cfg = running;
    r.shared
        .trust_generation
        .store(generation, Ordering::Relaxed);
    let report = ReloadReport {
        generation,
        applied,
        restart_required,
    };
    (report, export)
}

/// Log a reload and answer whoever asked for it, once the export (when it changed) is
/// replaced; without waiting for that here, on the capture loop.
fn conclude(
    mut report: ReloadReport,
    export: Option<exports::Replaced>,
    reply: Option<reload::ReloadRequest>,
) {
    let done = move |report: ReloadReport| {
        log_reload(&report);
        if let Some(reply) = reply {
            let _ = reply.send(ReloadReply::Done(report));
        }
    };
    let Some(export) = export else {
        return done(report);
    };
    tokio::spawn(async move {
        let failed = match export.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some("the export task ended".to_owned()),
        };
        if let Some(e) = failed {
            tracing::error!("reload: the JSON-lines export stopped: {e}");
            report.applied.retain(|s| !s.starts_with("export"));
        }
        done(report);
    });
}

fn log_reload(report: &ReloadReport) {
    let generation = report.generation;
    if report.restart_required.is_empty() {
        tracing::info!(
            generation,
            "reloaded the configuration and trust inputs; changed: {}",
            list(&report.applied)
        );
    } else {
        tracing::warn!(
            generation,
            "reloaded the configuration and trust inputs; changed: {}; these need a restart \
             to take effect: {}",
            list(&report.applied),
            report.restart_required.join(", ")
        );
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "no settings".into()
    } else {
        names.join(", ")
    }
}

/// The device and inode of a file, to know it again.
fn socket_id(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Publish which configuration and pin files are in force.
fn set_files(shared: &Shared, opts: &Options, trust: &sensor_core::trust::TrustContext) {
    if let Ok(mut f) = shared.files.lock() {
        f.config = opts.config_path.as_ref().map(|p| p.display().to_string());
        f.pins = trust.pins.source.clone();
    }
}

/// How often the ring buffer is drained without a wakeup. The kernel wakes sensord only once
/// 128 KiB wait (a wakeup per record would cost more than the record under a storm), so this
/// is how long a record may wait, and so an event: 1 ms within [`BUSY_FOR`] of the last
/// record, 5 ms otherwise (a quiet sensord wakes 200 times a second, not 1,000). A handshake's
/// first record waits up to 5 ms, the ones that end it (a millisecond or more later) 1 ms.
const DRAIN_BUSY: Duration = Duration::from_millis(1);
const DRAIN_IDLE: Duration = Duration::from_millis(5);
const BUSY_FOR: Duration = Duration::from_millis(200);

/// Hand every record waiting in the ring buffer to the pipeline; how many there were.
fn drain_ring(ring: &mut aya::maps::RingBuf<aya::maps::MapData>, pipeline: &mut Pipeline) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        pipeline.on_ring_record(&item);
        n += 1;
    }
    n
}
