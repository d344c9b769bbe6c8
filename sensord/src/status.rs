//! What sensord's tasks share about its state, for GetStatus, /metrics and the log: written
//! by the capture loop and the journal thread, read by the API and the exports.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use prometheus::{Histogram, HistogramOpts};
use sensor_core::event::Verdict;

use crate::{
    journal::{WriteFailure, recover::MovedAside},
    kernel::HookStatus,
};

/// The journal's state, as GetStatus, the metrics and `sensorctl status` name it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JournalState {
    /// Commits succeed.
    #[default]
    Ok,
    /// Commits succeed, into a new journal: a damaged one was moved aside during this run.
    Recovered,
    /// Commits fail: events wait in memory and a commit is retried every second.
    Degraded,
}

impl JournalState {
    pub const ALL: [Self; 3] = [Self::Ok, Self::Recovered, Self::Degraded];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Recovered => "recovered",
            Self::Degraded => "degraded",
        }
    }
}

/// What the journal writer says about the journal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalHealth {
    /// While commits fail: why, and the last error.
    pub failing: Option<(WriteFailure, String)>,
    /// A damaged journal moved aside during this run.
    pub moved_aside: Option<MovedAside>,
}

impl JournalHealth {
    pub fn state(&self) -> JournalState {
        if self.failing.is_some() {
            JournalState::Degraded
        } else if self.moved_aside.is_some() {
            JournalState::Recovered
        } else {
            JournalState::Ok
        }
    }

    /// In words, when there is something to say: why commits fail, or what was moved aside.
    pub fn detail(&self) -> String {
        match (&self.failing, &self.moved_aside) {
            (Some((cause, error)), _) => format!("{}: {error}", cause.describe()),
            (None, Some(m)) => format!("the damaged journal was moved aside ({})", m.why),
            (None, None) => String::new(),
        }
    }
}

/// The OTLP exporter's counters, for /metrics.
#[derive(Debug, Default)]
pub struct OtlpStats {
    /// Log records the receiver accepted.
    pub sent: AtomicU64,
    /// Requests the receiver accepted.
    pub batches: AtomicU64,
    /// Requests that failed and were tried again.
    pub retries: AtomicU64,
    /// Log records the receiver refused for good (not retryable), dropped.
    pub dropped: AtomicU64,
    /// Events past `max_age_secs` when their turn came, not sent.
    pub expired: AtomicU64,
}

/// The syslog exporter's counters, for /metrics.
#[derive(Debug, Default)]
pub struct SyslogStats {
    /// Messages written to the receiver.
    pub sent: AtomicU64,
    /// Events past `max_age_secs` when their turn came, not sent.
    pub expired: AtomicU64,
    /// Connections that could not be made or broke.
    pub connection_failures: AtomicU64,
    /// 1 while connected.
    pub connected: AtomicU64,
}

/// How a TLS library's TLS 1.3 chains are seen (TLS 1.2 chains are in clear for all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainSource {
    /// A uprobe reads the certificates the library parses.
    Uprobe,
    /// Only the active probe: no uprobe for this library, or it did not attach.
    ProbeOnly,
}

impl ChainSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uprobe => "uprobe",
            Self::ProbeOnly => "probe only",
        }
    }
}

/// A TLS library found on the host: a shared file, or one linked into a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsLibrary {
    /// OpenSSL, GnuTLS, NSS, OpenSSL (linked into the executable), Go crypto/tls.
    pub library: String,
    /// The shared library's file, or the program's.
    pub path: String,
    pub chains: ChainSource,
    /// Processes that started the program within the last hour (programs only).
    pub processes_last_hour: Option<u64>,
    /// Where the uprobes are, or why there are none.
    pub detail: String,
}

/// Live state of the daemon, updated by its tasks.
#[derive(Debug)]
pub struct Shared {
    pub started: Instant,
    pub version: &'static str,
    pub hooks: Mutex<Vec<HookStatus>>,
    /// The TLS libraries found, refreshed every second.
    pub tls_libraries: Mutex<Vec<TlsLibrary>>,
    /// Kernel counters, refreshed every second by the capture task.
    pub kernel_counters: Mutex<Vec<(String, u64)>>,
    /// Engine and verdict counters, likewise.
    pub engine_counters: Mutex<Vec<(String, u64)>>,
    /// Kernel programs' run time and run count, when kernel.bpf_stats_enabled is on.
    pub program_stats: Mutex<Vec<(String, u64, u64)>>,
    pub flows_tracked: AtomicU64,
    pub last_seq: AtomicU64,
    pub journal_bytes: AtomicU64,
    pub journal_events: AtomicU64,
    /// Events handed to the journal writer and not yet committed.
    pub journal_lag: AtomicU64,
    /// Events the capture could not hand to the journal writer (its queue was full).
    pub journal_queue_drops: AtomicU64,
    /// The journal's state (ok, recovered, degraded), published by the journal writer.
    pub journal: Mutex<JournalHealth>,
    /// Events waiting in the writer's memory for their commit, and about their size.
    pub journal_pending_events: AtomicU64,
    pub journal_pending_bytes: AtomicU64,
    /// Events dropped because the memory for events waiting for a commit was full.
    pub journal_pending_drops: AtomicU64,
    /// Commits (or raises of the sequence reservation) that failed.
    pub journal_write_failures: AtomicU64,
    pub subscribers: AtomicU64,
    /// API calls refused: a change by a caller who is not an admin, a Reload within a second
    /// of the last, a Watch beyond `api.max_subscribers`.
    pub api_denied: AtomicU64,
    pub reloads_rate_limited: AtomicU64,
    pub watch_refused: AtomicU64,
    /// Events by verdict since start.
    pub verdicts: Mutex<BTreeMap<Verdict, u64>>,
    /// The syslog exporter's counters (zero without one).
    pub syslog: Arc<SyslogStats>,
    /// The OTLP exporter's counters (zero without one).
    pub otlp: Arc<OtlpStats>,
    /// Events per second over the last few seconds.
    pub events_per_second: Mutex<f64>,
    /// The trust context's generation in force.
    pub trust_generation: AtomicU64,
    /// The configuration file and the pin file in force, for `sensorctl pins`.
    pub files: Mutex<Files>,
    /// From a handshake's last packet to its event's commit, in seconds.
    pub event_latency: Histogram,
    /// Time to judge one event, in seconds.
    pub verdict_duration: Histogram,
}

/// A histogram of 17 buckets from `start` seconds, each twice the last.
fn histogram(name: &str, help: &str, start: f64) -> Histogram {
    let buckets = (0..17).map(|i| start * f64::from(1u32 << i)).collect();
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("the histograms' names and buckets are this file's constants")
}

/// Files the daemon reads, as given.
#[derive(Clone, Debug, Default)]
pub struct Files {
    pub config: Option<String>,
    pub pins: Option<String>,
}

impl Shared {
    /// Sets each of `counters` in the engine counters by name, leaving the others: the
    /// pipeline and the library thread each publish their own.
    pub fn set_engine_counters(&self, counters: impl IntoIterator<Item = (String, u64)>) {
        if let Ok(mut e) = self.engine_counters.lock() {
            for (name, value) in counters {
                match e.iter_mut().find(|(n, _)| *n == name) {
                    Some(kept) => kept.1 = value,
                    None => e.push((name, value)),
                }
            }
        }
    }

    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            version: env!("CARGO_PKG_VERSION"),
            hooks: Mutex::new(Vec::new()),
            tls_libraries: Mutex::new(Vec::new()),
            kernel_counters: Mutex::new(Vec::new()),
            engine_counters: Mutex::new(Vec::new()),
            program_stats: Mutex::new(Vec::new()),
            // 1 ms to 65 s: an event waits for the client's outcome, and for a probe.
            event_latency: histogram(
                "sensor_event_latency_seconds",
                "From a handshake's last packet to its event in the journal",
                0.001,
            ),
            // 1 µs to 65 ms: a cache hit, a validation, a long chain.
            verdict_duration: histogram(
                "sensor_verdict_duration_seconds",
                "Time to judge one event (chain validation, pins, catalogue, baseline)",
                0.000_001,
            ),
            flows_tracked: AtomicU64::new(0),
            last_seq: AtomicU64::new(0),
            journal_bytes: AtomicU64::new(0),
            journal_events: AtomicU64::new(0),
            journal_lag: AtomicU64::new(0),
            journal_queue_drops: AtomicU64::new(0),
            journal: Mutex::new(JournalHealth::default()),
            journal_pending_events: AtomicU64::new(0),
            journal_pending_bytes: AtomicU64::new(0),
            journal_pending_drops: AtomicU64::new(0),
            journal_write_failures: AtomicU64::new(0),
            subscribers: AtomicU64::new(0),
            api_denied: AtomicU64::new(0),
            reloads_rate_limited: AtomicU64::new(0),
            watch_refused: AtomicU64::new(0),
            verdicts: Mutex::new(BTreeMap::new()),
            syslog: Arc::default(),
            otlp: Arc::default(),
            events_per_second: Mutex::new(0.0),
            trust_generation: AtomicU64::new(1),
            files: Mutex::new(Files::default()),
        }
    }

    pub fn count_verdict(&self, verdict: Verdict) {
        if let Ok(mut v) = self.verdicts.lock() {
            *v.entry(verdict).or_default() += 1;
        }
    }

    pub fn get(&self, a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }

    /// The journal's health now.
    pub fn journal_health(&self) -> JournalHealth {
        self.journal
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Change the journal's health.
    pub fn update_journal_health(&self, f: impl FnOnce(&mut JournalHealth)) {
        match self.journal.lock() {
            Ok(mut h) => f(&mut h),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// The API's refusals, by name, for GetStatus and /metrics.
    pub fn api_counters(&self) -> [(&'static str, u64); 3] {
        [
            ("api_denied", self.get(&self.api_denied)),
            (
                "api_reloads_rate_limited",
                self.get(&self.reloads_rate_limited),
            ),
            ("api_watch_refused", self.get(&self.watch_refused)),
        ]
    }
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}
