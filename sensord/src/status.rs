//! What sensord's tasks share about its state, for GetStatus, /metrics and the log: written
//! by the capture loop and the journal thread, read by the API and the exports.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use sensor_core::event::Verdict;

use crate::kernel::HookStatus;

/// Live state of the daemon, updated by its tasks.
#[derive(Debug)]
pub struct Shared {
    pub started: Instant,
    pub version: &'static str,
    pub hooks: Mutex<Vec<HookStatus>>,
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
    pub subscribers: AtomicU64,
    /// API calls refused: a change by a caller who is not an admin, a Reload within a second
    /// of the last, a Watch beyond `api.max_subscribers`.
    pub api_denied: AtomicU64,
    pub reloads_rate_limited: AtomicU64,
    pub watch_refused: AtomicU64,
    /// Events by verdict since start.
    pub verdicts: Mutex<BTreeMap<Verdict, u64>>,
    /// Events per second over the last few seconds.
    pub events_per_second: Mutex<f64>,
    /// The trust context's generation in force.
    pub trust_generation: AtomicU64,
    /// The configuration file and the pin file in force, for `sensorctl pins`.
    pub files: Mutex<Files>,
}

/// Files the daemon reads, as given.
#[derive(Clone, Debug, Default)]
pub struct Files {
    pub config: Option<String>,
    pub pins: Option<String>,
}

impl Shared {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            version: env!("CARGO_PKG_VERSION"),
            hooks: Mutex::new(Vec::new()),
            kernel_counters: Mutex::new(Vec::new()),
            engine_counters: Mutex::new(Vec::new()),
            program_stats: Mutex::new(Vec::new()),
            flows_tracked: AtomicU64::new(0),
            last_seq: AtomicU64::new(0),
            journal_bytes: AtomicU64::new(0),
            journal_events: AtomicU64::new(0),
            journal_lag: AtomicU64::new(0),
            journal_queue_drops: AtomicU64::new(0),
            subscribers: AtomicU64::new(0),
            api_denied: AtomicU64::new(0),
            reloads_rate_limited: AtomicU64::new(0),
            watch_refused: AtomicU64::new(0),
            verdicts: Mutex::new(BTreeMap::new()),
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
