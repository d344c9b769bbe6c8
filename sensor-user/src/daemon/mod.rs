//! The daemon's run loop: kernel tap -> engine -> outputs. An edge: this is where the I/O is.

use std::{io::Write as _, path::PathBuf, time::Duration};

use anyhow::Context as _;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    capture::kernel::{self, ClockOffset, KernelTap, Record, TapSettings},
    engine::{Engine, EngineLimits},
    event::{self, Handshake},
    process::Resolver,
    verdict::VerdictEngine,
};

/// How sensord prints handshakes on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PrintFormat {
    /// One human-readable line per handshake.
    Text,
    /// One JSON object per line (the JSON contract).
    Json,
}

/// What the daemon is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where the daemon keeps its state.
    pub state_dir: PathBuf,
    /// Print every handshake on stdout.
    pub print: Option<PrintFormat>,
    pub tap: TapSettings,
    /// Trust stores, pins, catalogue.
    pub trust: crate::trust::load::TrustConfig,
}

/// Run until SIGINT or SIGTERM. The kernel programs are detached before this returns.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.state_dir)
        .with_context(|| format!("creating the state directory {}", opts.state_dir.display()))?;
    // A bad trust input stops the daemon here, before anything is attached.
    let trust = crate::trust::load::load(&opts.trust, 1).context("loading the trust inputs")?;
    tracing::info!(
        host = trust.host.len(),
        public = trust.public.len(),
        pins = trust.pins.pins.len(),
        products = trust.catalogue.products.len(),
        "trust: host store {}, public store {}",
        trust.host.source,
        trust.public.source
    );
    let mut verdicts = VerdictEngine::new(std::sync::Arc::new(trust));
    let mut tap = KernelTap::start(&opts.tap).context("starting the kernel tap")?;
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
    let ring = tap.take_ring().context("opening the ring buffer")?;
    // SAFETY: the AsyncFd owns the RingBuf, which owns the fd, so the fd outlives the
    // registration.
    let mut ring = unsafe { AsyncFd::register(ring) }.context("polling the ring buffer")?;
    let clock = ClockOffset::now();
    let mut engine = Engine::new(EngineLimits::default());
    let mut resolver = Resolver::new();
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // The kernel wakes us only when a lot is waiting; drain the ring often anyway so that an
    // event is never late by more than this.
    let mut drain = tokio::time::interval(Duration::from_millis(DRAIN_INTERVAL_MS));
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tracing::info!("sensord running; waiting for TLS handshakes");

    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                drain_ring(guard.get_inner_mut(), clock, &mut engine, &mut resolver);
                guard.clear_ready();
                emit(&mut engine, &mut resolver, &mut verdicts, opts.print);
            }
            _ = drain.tick() => {
                drain_ring(ring.get_mut(), clock, &mut engine, &mut resolver);
                emit(&mut engine, &mut resolver, &mut verdicts, opts.print);
            }
            _ = tick.tick() => {
                engine.advance(now_epoch_ns());
                emit(&mut engine, &mut resolver, &mut verdicts, opts.print);
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    engine.finish();
    emit(&mut engine, &mut resolver, &mut verdicts, opts.print);
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
    tracing::info!("kernel programs detached; sensord stopped");
    Ok(())
}

/// How often the ring buffer is drained without a wakeup.
const DRAIN_INTERVAL_MS: u64 = 5;

/// Hand every record waiting in the ring buffer to the engine or the resolver.
fn drain_ring(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    clock: ClockOffset,
    engine: &mut Engine,
    resolver: &mut Resolver,
) {
    while let Some(item) = ring.next() {
        match kernel::decode(&item, clock) {
            Record::Segment(seg) => engine.push(&seg),
            Record::Socket(owner) => resolver.on_socket(owner),
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

fn emit(
    engine: &mut Engine,
    resolver: &mut Resolver,
    verdicts: &mut VerdictEngine,
    print: Option<PrintFormat>,
) {
    let now = now_epoch_ns();
    let mut stdout = std::io::stdout().lock();
    for mut hs in engine.drain() {
        attribute(resolver, &mut hs, now);
        verdicts.apply(&mut hs);
        let line = match print {
            Some(PrintFormat::Text) => event::one_line(&hs),
            Some(PrintFormat::Json) => serde_json::to_string(&hs).unwrap_or_default(),
            None => continue,
        };
        let _ = writeln!(stdout, "{line}");
    }
    let _ = stdout.flush();
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
