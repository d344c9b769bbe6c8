//! The journal writer thread: commit events in small batches, then publish them with their
//! sequence numbers; apply retention; persist the baseline.

use std::{
    sync::{
        Arc,
        atomic::Ordering,
        mpsc::{Receiver, RecvTimeoutError},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use sensor_core::verdict::baseline;
use sensor_host::config::JournalConfig;
use tokio::sync::broadcast;

use crate::{
    journal::{Journal, NewEvent, StoredEvent},
    status::Shared,
};

/// Messages to the writer.
pub enum JournalMsg {
    Event(Box<NewEvent>),
    SaveBaseline(Vec<(baseline::Key, baseline::Entry)>),
    Retention(Retention),
}

/// How long and how much the journal keeps.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub max_age_ns: u64,
    pub max_bytes: u64,
}

impl Retention {
    pub fn of(cfg: &JournalConfig) -> Self {
        Self {
            max_age_ns: cfg.retention_days.saturating_mul(86_400 * 1_000_000_000),
            max_bytes: cfg.max_size_mb.saturating_mul(1 << 20),
        }
    }
}

/// Events per transaction at most.
const BATCH: usize = 512;

/// Commit events in small batches, then publish them. Ends (after a last commit) when every
/// sender is gone.
pub fn spawn(
    mut journal: Journal,
    rx: Receiver<JournalMsg>,
    live: broadcast::Sender<Arc<StoredEvent>>,
    shared: Arc<Shared>,
    mut retention: Retention,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("journal".into())
        .spawn(move || {
            let mut batch: Vec<NewEvent> = Vec::with_capacity(BATCH);
            let mut last_prune = Instant::now() - Duration::from_secs(3600);
            let mut open = true;
            while open {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(msg) => handle(msg, &mut batch, &mut journal, &mut retention),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => open = false,
                }
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(msg) => handle(msg, &mut batch, &mut journal, &mut retention),
                        Err(_) => break,
                    }
                }
                if !batch.is_empty() {
                    commit(&mut journal, &mut batch, &live, &shared);
                }
                if last_prune.elapsed() > Duration::from_secs(60) || !open {
                    last_prune = Instant::now();
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64);
                    match journal.prune(now, retention.max_age_ns, retention.max_bytes) {
                        Ok(n) if n > 0 => tracing::info!(deleted = n, "journal retention"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!("journal retention: {e}"),
                    }
                    shared
                        .journal_bytes
                        .store(journal.size_bytes(), Ordering::Relaxed);
                    if let Ok(n) = journal.count() {
                        shared.journal_events.store(n, Ordering::Relaxed);
                    }
                }
            }
        })
        .expect("spawning the journal thread")
}

fn handle(
    msg: JournalMsg,
    batch: &mut Vec<NewEvent>,
    journal: &mut Journal,
    retention: &mut Retention,
) {
    match msg {
        JournalMsg::Event(e) => batch.push(*e),
        JournalMsg::SaveBaseline(entries) => {
            if let Err(e) = journal.save_baseline(&entries) {
                tracing::warn!("saving the baseline: {e}");
            }
        }
        JournalMsg::Retention(r) => *retention = r,
    }
}

fn commit(
    journal: &mut Journal,
    batch: &mut Vec<NewEvent>,
    live: &broadcast::Sender<Arc<StoredEvent>>,
    shared: &Shared,
) {
    let n = batch.len() as u64;
    match journal.append(batch) {
        Ok(seqs) => {
            for (e, seq) in batch.drain(..).zip(seqs) {
                shared.last_seq.store(seq, Ordering::Relaxed);
                // No subscriber is not an error.
                let _ = live.send(Arc::new(e.stored(seq)));
            }
            shared.journal_events.fetch_add(n, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::error!("journal write failed, {n} events lost: {e}");
            batch.clear();
        }
    }
    shared.journal_lag.fetch_sub(n, Ordering::Relaxed);
}
