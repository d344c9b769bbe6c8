//! The capture pipeline: everything between the ring buffer and the journal queue, one method
//! per input.
//!
//! ```text
//! ring record ─► decode ─┬─ segment ─────► engine ─┐
//!                        ├─ socket owner ─► resolver (process attribution)
//!                        └─ cert chunk ──► assembler ─► engine (uprobe chain by cookie)
//! emit: engine's handshakes ─► attribute ─► prober (now, or parked for a probe)
//!       ─► verdict ─► probe note ─► stdout (--print) and the journal queue
//! probe result ─► the handshakes that waited for it ─► verdict ─► ...
//! tick ─► engine.advance (idle flows end) ─► emit
//! reload ─► trust, probe limits (the rest is the daemon's: retention, exports, the tap)
//! ```
//!
//! It never waits: the journal queue is bounded and a full one is counted, probes report on
//! a channel the daemon's loop reads.

use std::{
    io::Write as _,
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use sensor_core::{
    capture::{
        certs::{CertAssembler, UprobeCert},
        ring::{self, ClockOffset, RingRecord},
    },
    engine::{Engine, EngineLimits},
    event::{Event, Host},
    probe::schedule::{Outcome, ProbeKey},
    trust::TrustContext,
    verdict::VerdictEngine,
};
use sensor_host::{config::ProbeConfig, render::Palette};

use super::{
    PrintFormat,
    journal_writer::JournalMsg,
    probing::{self, Note, Pending, Prober},
};
use crate::{
    journal::NewEvent,
    kernel::KernelTap,
    process::{Attributed, Resolver},
    status::Shared,
};

/// Where finished events go.
pub struct Outputs {
    pub print: Option<PrintFormat>,
    pub journal: std::sync::mpsc::SyncSender<JournalMsg>,
    pub shared: Arc<Shared>,
    /// The host every event is recorded on.
    pub host: Arc<Host>,
}

/// The capture pipeline's state.
pub struct Pipeline {
    engine: Engine,
    resolver: Resolver,
    certs: CertAssembler,
    verdicts: VerdictEngine,
    prober: Prober,
    clock: ClockOffset,
    out: Outputs,
    /// Ring records this version could not decode.
    unknown_records: u64,
    /// The kernel's ring buffer drops when last looked at.
    ring_drops: u64,
    /// sensord is stopping: the last events wait for room in the journal's queue.
    stopping: bool,
    /// Wall time minus sensor time, as last measured.
    wall_shift_ns: i64,
    /// Processes seen connecting for the first time, for the TLS library list (taken by the
    /// daemon after each batch).
    new_processes: Vec<u32>,
}

/// New processes kept between two batches at most; past this they are not looked at.
const MAX_NEW_PROCESSES: usize = 4096;

impl Pipeline {
    pub fn new(
        trust: Arc<TrustContext>,
        prober: Prober,
        clock: ClockOffset,
        flow_memory_mb: u32,
        out: Outputs,
    ) -> Self {
        Self {
            engine: Engine::new(EngineLimits {
                max_buffered_bytes: (flow_memory_mb as usize) << 20,
                ..EngineLimits::default()
            }),
            resolver: Resolver::new(),
            certs: CertAssembler::default(),
            verdicts: VerdictEngine::new(trust),
            prober,
            clock,
            out,
            unknown_records: 0,
            ring_drops: 0,
            stopping: false,
            wall_shift_ns: 0,
            new_processes: Vec::new(),
        }
    }

    /// Ask the container runtime's CRI socket about containers.
    pub fn set_cri(&mut self, cri: crate::process::cri::Cri) {
        self.resolver.set_cri(cri);
    }

    /// The processes seen connecting for the first time since the last call.
    pub fn take_new_processes(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.new_processes)
    }

    pub fn engine(&mut self) -> &mut Engine {
        &mut self.engine
    }

    pub fn verdicts(&mut self) -> &mut VerdictEngine {
        &mut self.verdicts
    }

    /// One record from the ring buffer. Call [`Pipeline::emit`] after a batch of them.
    pub fn on_ring_record(&mut self, record: &[u8]) {
        match ring::decode(record, self.clock) {
            RingRecord::Segment(seg) => self.engine.push(&seg),
            RingRecord::Datagram(d) => self.engine.push_datagram(&d),
            RingRecord::Socket(owner) => {
                if let Some(pid) = self.resolver.on_socket(owner)
                    && self.new_processes.len() < MAX_NEW_PROCESSES
                {
                    self.new_processes.push(pid);
                }
            }
            RingRecord::Cert(chunk) => {
                if let Some(cert) = self.certs.push(&chunk) {
                    self.on_uprobe_certificate(cert);
                }
            }
            RingRecord::RequestHead { cookie, bytes } => {
                self.engine.push_request_head(cookie, bytes);
            }
            RingRecord::Unknown => self.unknown_records += 1,
        }
    }

    /// A whole certificate a client's TLS library parsed (from the uprobe).
    pub fn on_uprobe_certificate(&mut self, cert: UprobeCert) {
        self.engine.push_cert(cert.cookie, cert.pid, cert.der);
    }

    /// The wall clock's reading minus sensor time, measured now (see `clock`): applied to
    /// every event from here on.
    pub fn set_wall_shift(&mut self, ns: i64) {
        self.wall_shift_ns = ns;
    }

    /// Time passed (every second): idle and half-closed flows end.
    pub fn on_tick(&mut self, now_ns: u64) {
        self.engine.advance(now_ns);
        self.emit(now_ns);
    }

    /// A probe ended: the events that waited for it go on.
    pub fn on_probe_result(&mut self, key: &ProbeKey, outcome: Outcome, now_ns: u64) {
        let done = self.prober.complete(key, outcome, now_ns);
        self.finish_all(done);
    }

    /// A reload's trust context and probe settings.
    pub fn on_reload(&mut self, trust: Arc<TrustContext>, probe: &ProbeConfig) {
        self.verdicts.set_trust(trust);
        self.prober.reconfigure(probe);
    }

    /// Take what the engine finished: attribute it, then judge it now, or after its probe.
    pub fn emit(&mut self, now_ns: u64) {
        let mut ready = Vec::new();
        let finished: Vec<_> = self.engine.drain().collect();
        for hs in finished {
            let mut pending = Pending {
                event: Event::observed(hs),
                netns: None,
            };
            pending.event.handshake.shift_times(self.wall_shift_ns);
            let h = &pending.event.handshake;
            let endpoints = h.src_addr.zip(h.dst_addr).map(|(src, dst)| {
                (
                    std::net::SocketAddr::new(dst, h.dst_port),
                    std::net::SocketAddr::new(src, h.src_port),
                )
            });
            let server = h
                .local_sockets
                .server
                .zip(endpoints)
                .map(|(sock, (local, remote))| (sock, local, remote));
            if let Some(Attributed { process, netns }) =
                self.resolver
                    .resolve(h.local_sockets.client, server, now_ns)
            {
                pending.event.process = Some(process);
                pending.netns = netns;
            }
            ready.extend(self.prober.submit(pending, now_ns));
        }
        self.finish_all(ready);
    }

    /// The input is over (sensord stops): waiting probes are given up, every flow ends
    /// (without starting a probe), and every event reaches the journal's queue.
    pub fn finish(&mut self, now_ns: u64) {
        self.stopping = true;
        let abandoned = self.prober.abandon();
        self.finish_all(abandoned);
        self.engine.finish();
        self.emit(now_ns);
    }

    /// Judge events and hand them to stdout and the journal.
    fn finish_all(&mut self, done: Vec<(Event, Note)>) {
        if done.is_empty() {
            return;
        }
        let mut stdout = self.out.print.map(|_| std::io::stdout().lock());
        for (mut event, note) in done {
            let judging = Instant::now();
            self.verdicts.apply(&mut event);
            self.out
                .shared
                .verdict_duration
                .observe(judging.elapsed().as_secs_f64());
            note.apply(&mut event);
            event.host = Some(self.out.host.clone());
            if let Some(v) = event.verdict() {
                self.out.shared.count_verdict(v);
            }
            let new = NewEvent::of(event);
            match (self.out.print, stdout.as_mut()) {
                // The JSON the journal stores, not made twice.
                (Some(PrintFormat::Json), Some(out)) => {
                    let _ = writeln!(out, "{}", new.json);
                }
                (Some(fmt), Some(out)) => {
                    let _ = fmt.write(&new.event, Palette::plain(), out);
                }
                _ => {}
            }
            let shared = &self.out.shared;
            shared.journal_lag.fetch_add(1, Ordering::Relaxed);
            let msg = JournalMsg::Event(Box::new(new));
            // Capture must never wait for the journal, except for the last events.
            let queued = if self.stopping {
                self.out.journal.send(msg).is_ok()
            } else {
                self.out.journal.try_send(msg).is_ok()
            };
            if !queued {
                shared.journal_lag.fetch_sub(1, Ordering::Relaxed);
                shared.journal_queue_drops.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(out) = stdout.as_mut() {
            let _ = out.flush();
        }
    }

    /// The baseline, to persist.
    pub fn baseline(
        &self,
    ) -> Vec<(
        sensor_core::verdict::baseline::Key,
        sensor_core::verdict::baseline::Entry,
    )> {
        self.verdicts.baseline.export()
    }

    /// Publish counters and state for GetStatus and /metrics (every second). `tap`: `None`
    /// when it is busy (a uprobe being attached); the kernel's figures wait a tick.
    pub fn snapshot(&mut self, tap: Option<&KernelTap>, rate: &mut (Instant, u64)) {
        if let Some(c) = tap.and_then(|t| t.counters().ok()) {
            // The kernel lost records and cannot say whose: every live flow may have.
            let drops = c
                .iter()
                .find(|(n, _)| *n == "ringbuf_drops")
                .map_or(0, |(_, v)| *v);
            if drops > self.ring_drops {
                self.engine.note_ring_drop();
            }
            self.ring_drops = drops;
            if let Ok(mut k) = self.out.shared.kernel_counters.lock() {
                *k = c.into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
            }
        }
        let shared = &self.out.shared;
        if let Some(tap) = tap
            && let Ok(mut p) = shared.program_stats.lock()
        {
            *p = tap.program_stats();
        }
        let es = self.engine.stats();
        let vs = self.verdicts.stats();
        {
            let v = serde_json::to_value(es).unwrap_or_default();
            let mut list: Vec<(String, u64)> = v
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default();
            let ps = self.prober.stats();
            let assembled = &self.certs.stats;
            list.extend(
                [
                    ("verdicts", vs.verdicts),
                    ("verdict_cache_hits", vs.cache_hits),
                    ("probes_started", ps.started),
                    ("probes_failed", ps.failed),
                    ("probe_cache_hits", ps.cached),
                    ("probes_rate_limited", ps.rate_limited),
                    ("probes_over_uid_quota", ps.over_uid_quota),
                    ("probes_over_cgroup_quota", ps.over_cgroup_quota),
                    ("uprobe_certs_assembled", assembled.certs),
                    ("uprobe_certs_unusable", assembled.truncated),
                    ("uprobe_certs_abandoned", assembled.abandoned),
                    ("ring_records_unknown", self.unknown_records),
                    (
                        "cgroup_walks_truncated",
                        self.resolver.cgroup_walks_truncated(),
                    ),
                ]
                .map(|(n, v)| (n.to_owned(), v)),
            );
            list.extend(self.resolver.cri_counters().map(|(n, v)| (n.to_owned(), v)));
            // Others' counters (the library thread's) are kept.
            shared.set_engine_counters(list);
        }
        shared
            .flows_tracked
            .store(self.engine.flows() as u64, Ordering::Relaxed);
        let seq = shared.last_seq.load(Ordering::Relaxed);
        let elapsed = rate.0.elapsed().as_secs_f64();
        if elapsed >= 5.0 {
            if let Ok(mut eps) = shared.events_per_second.lock() {
                *eps = (seq - rate.1) as f64 / elapsed;
            }
            *rate = (Instant::now(), seq);
        }
    }

    /// Counters for the log at the end.
    pub fn engine_stats(&self) -> sensor_core::engine::EngineStats {
        self.engine.stats()
    }
}

/// Where `probing` reports finished probes.
pub type ProbeResults = tokio::sync::mpsc::UnboundedReceiver<(ProbeKey, Outcome)>;

/// The prober and where its results arrive.
pub fn prober(cfg: &ProbeConfig) -> (Prober, ProbeResults) {
    probing::Prober::new(cfg)
}
