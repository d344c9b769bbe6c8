//! The journal writer thread: commit events in small batches, then publish them with their
//! sequence numbers; keep them while commits fail and retry; apply retention; persist the
//! baseline.
//!
//! - Sequence numbers: before a commit would give a number above what the sequence state file
//!   reserves, the reservation is raised, durably, by [`RESERVE_AHEAD`] (two fsyncs per few
//!   thousand events, not per commit). A journal started anew continues above it
//!   ([`crate::journal::recover`]). A clean stop writes the exact last number, so that the next
//!   start does not jump.
//! - Failures: a commit that fails (a full disk, an I/O error) keeps its events, in order, in
//!   [`Pending`] (bounded in bytes, `journal.max_pending_mb`); the journal's state becomes
//!   degraded and a commit is retried every second. When one succeeds, everything that waited
//!   is committed in order and published, and the state is ok again. Nothing is published
//!   before its commit, so subscribers see nothing new meanwhile.
//! - A journal found damaged while running (after it had worked) is moved aside and a new one
//!   started; one deleted or replaced under the writer is noticed within a second and opened
//!   anew. Either way the waiting events go to the new one, above every number given before.

use std::{
    path::PathBuf,
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

use super::pending::Pending;
use crate::{
    journal::{
        Journal, JournalError, NewEvent, StoredEvent, WriteFailure,
        recover::{self, Opened},
        seqstate::{self, SeqState},
    },
    status::Shared,
};

/// Messages to the writer.
pub enum JournalMsg {
    Event(Box<NewEvent>),
    SaveBaseline(Vec<(baseline::Key, baseline::Entry)>),
    Limits(Limits),
}

/// How long and how much the journal keeps, and how much waits in memory when it cannot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_age_ns: u64,
    pub max_bytes: u64,
    /// Events waiting for a commit that fails, at most (bytes, about).
    pub max_pending_bytes: usize,
}

impl Limits {
    pub fn of(cfg: &JournalConfig) -> Self {
        Self {
            max_age_ns: cfg.retention_days.saturating_mul(86_400 * 1_000_000_000),
            max_bytes: cfg.max_size_mb.saturating_mul(1 << 20),
            max_pending_bytes: usize::try_from(cfg.max_pending_mb.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX),
        }
    }
}

/// Events per transaction at most.
const BATCH: usize = 512;

/// How far ahead of the last committed number the state file reserves: the most a new
/// journal may jump after a power cut, and the number of events per state file write.
pub const RESERVE_AHEAD: u64 = 4096;

/// How often a failing commit is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// How often the writer looks whether the file at the journal's path is still its own.
const FILE_CHECK: Duration = Duration::from_secs(1);

/// How often retention runs.
const PRUNE: Duration = Duration::from_secs(60);

/// How often a failure that goes on is logged again.
const LOG_AGAIN: Duration = Duration::from_secs(60);

/// Commit events in small batches, then publish them. Ends (after a last commit) when every
/// sender is gone.
pub fn spawn(
    opened: Opened,
    path: PathBuf,
    rx: Receiver<JournalMsg>,
    live: broadcast::Sender<Arc<StoredEvent>>,
    shared: Arc<Shared>,
    limits: Limits,
) -> std::io::Result<JoinHandle<()>> {
    let mut writer = Writer::new(opened, path, live, shared, limits);
    std::thread::Builder::new()
        .name("journal".into())
        .spawn(move || writer.run(&rx))
}

/// Commits failing since `since`.
struct Failing {
    since: Instant,
    retry_at: Instant,
    logged: Instant,
    /// Dropped events were logged in this episode.
    drops_logged: bool,
}

/// The writer's state; driven by [`Writer::run`] on its thread (and by tests directly).
struct Writer {
    /// `None` after a reopen failed: tried again with the next commit.
    journal: Option<Journal>,
    path: PathBuf,
    /// The sequence state; `reserved` is what the file on disk holds.
    state: SeqState,
    /// The last sequence number committed (or continued above).
    last: u64,
    /// Whether this journal ever committed: only then is a damage error its file's fault
    /// (and moved aside), not the disk's.
    committed_once: bool,
    pending: Pending,
    live: broadcast::Sender<Arc<StoredEvent>>,
    shared: Arc<Shared>,
    limits: Limits,
    failing: Option<Failing>,
    last_prune: Option<Instant>,
    last_file_check: Instant,
}

impl Writer {
    fn new(
        opened: Opened,
        path: PathBuf,
        live: broadcast::Sender<Arc<StoredEvent>>,
        shared: Arc<Shared>,
        limits: Limits,
    ) -> Self {
        let mut w = Self {
            journal: None,
            path,
            state: SeqState::default(),
            last: 0,
            committed_once: false,
            pending: Pending::new(limits.max_pending_bytes),
            live,
            shared,
            limits,
            failing: None,
            last_prune: None,
            last_file_check: Instant::now(),
        };
        w.install(opened);
        w
    }

    /// Take a newly opened journal.
    fn install(&mut self, opened: Opened) {
        self.last = opened.state.committed;
        self.state = opened.state;
        self.committed_once = false;
        self.shared.last_seq.store(self.last, Ordering::Relaxed);
        if let Ok(n) = opened.journal.count() {
            self.shared.journal_events.store(n, Ordering::Relaxed);
        }
        self.journal = Some(opened.journal);
        if let Some(moved) = opened.moved_aside {
            self.shared
                .update_journal_health(|h| h.moved_aside = Some(moved));
        }
    }

    fn run(&mut self, rx: &Receiver<JournalMsg>) {
        let mut open = true;
        while open {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(msg) => self.handle(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
            // While commits fail, take everything waiting (the bound decides what stays), so
            // that the capture's queue does not fill behind the writer; else a batch at a time.
            let mut taken = 0;
            while taken < 65_536 && (self.failing.is_some() || self.wants_more()) {
                match rx.try_recv() {
                    Ok(msg) => self.handle(msg),
                    Err(_) => break,
                }
                taken += 1;
            }
            let now = Instant::now();
            self.flush(now, false);
            self.maintain(now, !open);
        }
        self.stop();
    }

    /// Whether to take more before committing: not a full batch yet.
    fn wants_more(&self) -> bool {
        self.pending.len() < BATCH && self.pending.bytes() < self.pending.max_bytes() / 2
    }

    fn handle(&mut self, msg: JournalMsg) {
        match msg {
            JournalMsg::Event(e) => self.push(*e),
            JournalMsg::SaveBaseline(entries) => {
                if let Some(j) = self.journal.as_mut()
                    && let Err(e) = j.save_baseline(&entries)
                {
                    tracing::warn!("saving the baseline: {e}");
                }
            }
            JournalMsg::Limits(l) => {
                self.limits = l;
                self.pending.set_max_bytes(l.max_pending_bytes);
            }
        }
    }

    fn push(&mut self, event: NewEvent) {
        if !self.pending.push(event) {
            self.shared
                .journal_pending_drops
                .fetch_add(1, Ordering::Relaxed);
            self.shared.journal_lag.fetch_sub(1, Ordering::Relaxed);
            if let Some(f) = self.failing.as_mut()
                && !f.drops_logged
            {
                f.drops_logged = true;
                tracing::error!(
                    "the memory for events waiting for the journal is full ({} bytes, \
                     journal.max_pending_mb): new events are dropped until commits succeed \
                     again (counted in journal_pending_drops)",
                    self.pending.max_bytes()
                );
            }
        }
        self.publish_pending();
    }

    fn publish_pending(&self) {
        let s = &self.shared;
        s.journal_pending_events
            .store(self.pending.len() as u64, Ordering::Relaxed);
        s.journal_pending_bytes
            .store(self.pending.bytes() as u64, Ordering::Relaxed);
    }

    /// Commit what waits, in batches, unless commits fail and the next try is not due
    /// (`force`: try anyway).
    fn flush(&mut self, now: Instant, force: bool) {
        if self.pending.is_empty() {
            return;
        }
        if let Some(f) = &self.failing
            && now < f.retry_at
            && !force
        {
            return;
        }
        while !self.pending.is_empty() {
            let n = self.pending.len().min(BATCH);
            if let Err(e) = self.commit_front(n) {
                self.failed(now, &e);
                self.publish_pending();
                return;
            }
        }
        self.publish_pending();
        if let Some(f) = self.failing.take() {
            tracing::warn!(
                "journal commits succeed again after {:.1} s: the events that waited are \
                 committed, in order",
                now.saturating_duration_since(f.since).as_secs_f64()
            );
            self.shared.update_journal_health(|h| h.failing = None);
        }
    }

    /// Commit the first `n` waiting events, then publish them.
    fn commit_front(&mut self, n: usize) -> Result<(), JournalError> {
        if self.journal.is_none() {
            self.reopen(None)?;
        }
        let Some(journal) = self.journal.as_mut() else {
            return Err(JournalError::Other {
                path: self.path.display().to_string(),
                message: "not open".into(),
            });
        };
        if self.failing.is_some() {
            // A commit that reported a failure may still have happened: start from the truth.
            self.last = self.last.max(journal.last_seq()?);
        }
        // Never give a number the state file does not cover: a journal started anew after a
        // crash continues above it.
        let top = self.last.saturating_add(n as u64);
        if top > self.state.reserved {
            let next = SeqState {
                reserved: top.saturating_add(RESERVE_AHEAD),
                committed: self.last,
                ..self.state.clone()
            };
            next.save(&seqstate::path_for(&self.path))?;
            self.state = next;
        }
        let seqs = journal.append(self.pending.front(n))?;
        self.committed_once = true;
        let high = seqs.iter().copied().max().unwrap_or(self.last);
        self.last = self.last.max(high);
        if high > self.state.reserved {
            // Someone else wrote to the journal: cover what it gave at once.
            tracing::warn!(
                "the journal gave sequence number {high}, above the {} reserved: another \
                 writer?",
                self.state.reserved
            );
            let next = SeqState {
                reserved: high.saturating_add(RESERVE_AHEAD),
                committed: high,
                ..self.state.clone()
            };
            match next.save(&seqstate::path_for(&self.path)) {
                Ok(()) => self.state = next,
                Err(e) => tracing::warn!("{e}"),
            }
        }
        let s = &self.shared;
        let mut published = 0u64;
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        for (e, seq) in self.pending.pop_front(n).zip(seqs) {
            // From the handshake's last packet (wall clock, as the event says it) to now.
            let end = e.event.handshake.end_time.0.max(e.event.handshake.time.0);
            s.event_latency
                .observe(now_ns.saturating_sub(end) as f64 / 1e9);
            s.last_seq.store(seq, Ordering::Relaxed);
            published += 1;
            // No subscriber is not an error.
            let _ = self.live.send(Arc::new(e.stored(seq)));
        }
        s.journal_events.fetch_add(published, Ordering::Relaxed);
        s.journal_lag.fetch_sub(published, Ordering::Relaxed);
        Ok(())
    }

    /// A commit failed: keep the events, say so, try again later; a journal that went bad
    /// under the writer is replaced.
    fn failed(&mut self, now: Instant, e: &JournalError) {
        self.shared
            .journal_write_failures
            .fetch_add(1, Ordering::Relaxed);
        let mut cause = e.failure();
        if cause == WriteFailure::Damaged && self.journal.is_some() {
            if self.committed_once {
                match self.reopen(Some(e.to_string())) {
                    Ok(()) => {}
                    Err(again) => tracing::error!("starting a new journal: {again}"),
                }
            } else {
                // A journal that never committed, damaged at once: the disk, not the file.
                cause = WriteFailure::Io;
            }
        }
        let waiting = self.pending.len();
        match self.failing.as_mut() {
            None => {
                tracing::error!(
                    "journal commits fail ({}): {e}; {waiting} events wait in memory (up to {} \
                     MiB, journal.max_pending_mb) and a commit is tried again every {} s",
                    cause.describe(),
                    self.pending.max_bytes() >> 20,
                    RETRY.as_secs()
                );
                self.failing = Some(Failing {
                    since: now,
                    retry_at: now + RETRY,
                    logged: now,
                    drops_logged: false,
                });
            }
            Some(f) => {
                f.retry_at = now + RETRY;
                if now.saturating_duration_since(f.logged) >= LOG_AGAIN {
                    f.logged = now;
                    tracing::error!(
                        "journal commits still fail ({}) after {:.0} s: {e}; {waiting} events \
                         wait in memory, {} dropped",
                        cause.describe(),
                        now.saturating_duration_since(f.since).as_secs_f64(),
                        self.pending.dropped()
                    );
                }
            }
        }
        let error = e.to_string();
        self.shared
            .update_journal_health(|h| h.failing = Some((cause, error)));
    }

    /// Open the journal anew (checked, moved aside when `damaged` says so), continuing above
    /// every number given.
    fn reopen(&mut self, damaged: Option<String>) -> Result<(), JournalError> {
        // Closed first: its WAL goes into its own file, not beside a new one.
        self.journal = None;
        let known = SeqState {
            committed: self.last,
            ..self.state.clone()
        };
        let opened = recover::open_with(&self.path, recover::CHECK_BUDGET, Some(known), damaged)?;
        self.install(opened);
        Ok(())
    }

    /// Now and then: whether the journal file is still the writer's, and retention.
    fn maintain(&mut self, now: Instant, closing: bool) {
        if now.saturating_duration_since(self.last_file_check) >= FILE_CHECK {
            self.last_file_check = now;
            if self.journal.as_ref().is_some_and(Journal::replaced) {
                tracing::warn!(
                    journal = %self.path.display(),
                    "the journal was deleted or replaced while sensord wrote it: a new one is \
                     opened, continuing above sequence number {}",
                    self.last
                );
                if let Err(e) = self.reopen(None) {
                    self.failed(now, &e);
                }
            }
        }
        let due = self
            .last_prune
            .is_none_or(|t| now.saturating_duration_since(t) >= PRUNE);
        if !(due || closing) {
            return;
        }
        self.last_prune = Some(now);
        let Some(journal) = self.journal.as_mut() else {
            return;
        };
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        match journal.prune(wall, self.limits.max_age_ns, self.limits.max_bytes) {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "journal retention"),
            Ok(_) => {}
            Err(e) => tracing::warn!("journal retention: {e}"),
        }
        self.shared
            .journal_bytes
            .store(journal.size_bytes(), Ordering::Relaxed);
        if let Ok(n) = journal.count() {
            self.shared.journal_events.store(n, Ordering::Relaxed);
        }
    }

    /// The last commit; then the exact last number in the state file, so that the next start
    /// does not jump.
    fn stop(&mut self) {
        self.flush(Instant::now(), true);
        if !self.pending.is_empty() {
            tracing::error!(
                "stopping with {} events ({} bytes) never journaled: commits still fail",
                self.pending.len(),
                self.pending.bytes()
            );
            return;
        }
        let Some(journal) = self.journal.as_ref() else {
            return;
        };
        // What the journal says, should a commit reported failed have happened after all.
        let Ok(last) = journal.last_seq() else {
            return;
        };
        let last = last.max(self.last);
        let exact = SeqState {
            reserved: last,
            committed: last,
            ..self.state.clone()
        };
        if let Err(e) = exact.save(&seqstate::path_for(&self.path)) {
            tracing::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use sensor_core::event::Verdict;

    use super::*;
    use crate::{
        journal::{path_in, testing},
        status::JournalState,
    };

    struct Rig {
        _dir: tempfile::TempDir,
        path: PathBuf,
        writer: Writer,
        live: broadcast::Receiver<Arc<StoredEvent>>,
        shared: Arc<Shared>,
    }

    fn rig(max_pending_bytes: usize) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        let opened = recover::open(&path, recover::CHECK_BUDGET).unwrap();
        let (tx, live) = broadcast::channel(100_000);
        let shared = Arc::new(Shared::new());
        let writer = Writer::new(
            opened,
            path.clone(),
            tx,
            shared.clone(),
            Limits {
                max_age_ns: 0,
                max_bytes: 0,
                max_pending_bytes,
            },
        );
        Rig {
            _dir: dir,
            path,
            writer,
            live,
            shared,
        }
    }

    impl Rig {
        /// Hand events `from..from + n` to the writer, as the capture does.
        fn send(&mut self, from: u64, n: u64) {
            for i in from..from + n {
                self.shared.journal_lag.fetch_add(1, Ordering::Relaxed);
                self.writer
                    .handle(JournalMsg::Event(Box::new(testing::event(
                        i,
                        Verdict::Clean,
                    ))));
            }
        }

        /// (seq, SNI number) of what was published so far.
        fn published(&mut self) -> Vec<(u64, u64)> {
            let mut out = Vec::new();
            while let Ok(r) = self.live.try_recv() {
                let sni = r.meta.sni.clone().unwrap_or_default();
                let n = sni
                    .trim_start_matches('h')
                    .trim_end_matches(".test")
                    .parse()
                    .unwrap();
                out.push((r.seq, n));
            }
            out
        }

        fn state(&self) -> JournalState {
            self.shared.journal_health().state()
        }

        fn get(&self, a: &std::sync::atomic::AtomicU64) -> u64 {
            a.load(Ordering::Relaxed)
        }

        fn journal(&self) -> &Journal {
            self.writer.journal.as_ref().unwrap()
        }
    }

    #[test]
    fn a_full_disk_keeps_events_in_memory_and_writes_them_in_order_when_space_returns() {
        let mut r = rig(64 << 20);
        let t0 = Instant::now();
        r.send(1, 5);
        r.writer.flush(t0, false);
        assert_eq!(r.published(), (1..=5).map(|i| (i, i)).collect::<Vec<_>>());
        // The disk is full: no page more than it has (a limit below that is raised to it).
        let pages = r.journal().limit_pages(1);
        assert!(pages > 1 && pages < 1_000, "{pages}");
        r.send(6, 300);
        r.writer.flush(t0, false);
        assert_eq!(r.state(), JournalState::Degraded);
        let health = r.shared.journal_health();
        assert_eq!(health.failing.as_ref().unwrap().0, WriteFailure::DiskFull);
        assert!(
            health.detail().starts_with("disk full"),
            "{}",
            health.detail()
        );
        assert!(r.published().is_empty(), "nothing before its commit");
        assert_eq!(r.get(&r.shared.journal_pending_events), 300);
        assert!(r.get(&r.shared.journal_pending_bytes) > 0);
        assert_eq!(r.get(&r.shared.journal_lag), 300);
        // More arrive; a retry before it is due does nothing, one due fails again.
        r.send(306, 10);
        r.writer.flush(t0, false);
        r.writer.flush(t0 + RETRY, false);
        assert_eq!(r.state(), JournalState::Degraded);
        assert!(r.get(&r.shared.journal_write_failures) >= 2);
        // Space returns: everything that waited, in order, with no gap.
        r.journal().limit_pages(1 << 30);
        r.writer.flush(t0 + RETRY * 3, false);
        assert_eq!(r.state(), JournalState::Ok);
        let got = r.published();
        assert_eq!(got, (6..=315).map(|i| (i, i)).collect::<Vec<_>>());
        assert_eq!(r.journal().count().unwrap(), 315);
        assert_eq!(r.get(&r.shared.journal_pending_events), 0);
        assert_eq!(r.get(&r.shared.journal_pending_drops), 0);
        assert_eq!(r.get(&r.shared.journal_lag), 0);
        assert_eq!(r.get(&r.shared.last_seq), 315);
    }

    #[test]
    fn the_memory_bound_holds_and_drops_are_counted() {
        // The largest of the events sent (their JSON grows with the number's digits).
        let size = testing::event(1_000, Verdict::Clean).approx_bytes();
        let bound = size * 100;
        let mut r = rig(bound);
        let t0 = Instant::now();
        r.send(1, 1);
        r.writer.flush(t0, false);
        r.journal().limit_pages(1);
        // More than the free room left in the file's pages.
        r.send(2, 20);
        r.writer.flush(t0, false);
        assert_eq!(r.state(), JournalState::Degraded);
        r.send(22, 980);
        let waiting = r.get(&r.shared.journal_pending_events);
        let dropped = r.get(&r.shared.journal_pending_drops);
        assert!(r.get(&r.shared.journal_pending_bytes) <= bound as u64);
        assert!(waiting >= 100, "{waiting}");
        assert_eq!(waiting + dropped, 1_000);
        assert_eq!(
            r.get(&r.shared.journal_lag),
            waiting,
            "dropped ones do not wait"
        );
        r.journal().limit_pages(1 << 30);
        r.writer.flush(t0 + RETRY, false);
        // The oldest were kept, committed in order, with no gap in the numbers.
        let got = r.published();
        assert_eq!(got, (1..=waiting + 1).map(|i| (i, i)).collect::<Vec<_>>());
        assert_eq!(r.state(), JournalState::Ok);
        assert_eq!(r.get(&r.shared.journal_lag), 0);
    }

    #[test]
    fn reservations_cover_every_number_and_a_clean_stop_is_exact() {
        let mut r = rig(64 << 20);
        let state_path = seqstate::path_for(&r.path);
        r.send(1, 10);
        r.writer.flush(Instant::now(), false);
        let s = SeqState::load(&state_path).unwrap().unwrap();
        assert_eq!(s.reserved, 10 + RESERVE_AHEAD);
        // A reservation that cannot be written is a failed commit: nothing is committed beyond
        // what the file covers.
        r.writer.state.reserved = 10;
        std::fs::create_dir(PathBuf::from(format!("{}.tmp", state_path.display()))).unwrap();
        r.send(11, 1);
        r.writer.flush(Instant::now(), false);
        assert_eq!(r.state(), JournalState::Degraded);
        assert_eq!(r.journal().last_seq().unwrap(), 10);
        std::fs::remove_dir(PathBuf::from(format!("{}.tmp", state_path.display()))).unwrap();
        r.writer.flush(Instant::now() + RETRY, false);
        assert_eq!(r.state(), JournalState::Ok);
        assert_eq!(r.published().last(), Some(&(11, 11)));
        r.writer.stop();
        let s = SeqState::load(&state_path).unwrap().unwrap();
        assert_eq!((s.reserved, s.committed), (11, 11));
    }

    #[test]
    fn a_journal_deleted_under_the_writer_is_replaced_and_numbers_go_on() {
        let mut r = rig(64 << 20);
        let t0 = Instant::now();
        r.send(1, 20);
        r.writer.flush(t0, false);
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(crate::journal::with_suffix(&r.path, s));
        }
        r.writer.maintain(t0 + FILE_CHECK, false);
        assert!(r.path.exists(), "a new journal");
        r.send(21, 3);
        r.writer.flush(t0 + FILE_CHECK, false);
        let got: Vec<u64> = r.published().into_iter().map(|(seq, _)| seq).collect();
        let new: Vec<u64> = got[20..].to_vec();
        assert_eq!(new.len(), 3);
        assert!(new[0] > 20, "above every number given: {new:?}");
        assert_eq!(
            Journal::open_read(&r.path)
                .unwrap()
                .read_after(0, 10)
                .unwrap()
                .len(),
            3
        );
        assert_eq!(r.state(), JournalState::Ok);
    }

    #[test]
    fn a_journal_recovered_at_start_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        std::fs::write(&path, b"garbage, not a database at all".repeat(100)).unwrap();
        let opened = recover::open(&path, recover::CHECK_BUDGET).unwrap();
        let shared = Arc::new(Shared::new());
        let _w = Writer::new(
            opened,
            path,
            broadcast::channel(4).0,
            shared.clone(),
            Limits::of(&JournalConfig::default()),
        );
        let h = shared.journal_health();
        assert_eq!(h.state(), JournalState::Recovered);
        assert!(
            h.moved_aside
                .unwrap()
                .to
                .to_string_lossy()
                .contains(".damaged-")
        );
    }
}
