//! The journal: every event, durably, before any subscriber sees it. An edge: SQLite (rusqlite)
//! in WAL mode. [`follow`] reads it "from sequence N, then live" for every subscriber.
//!
//! - `events`: one row per event, with a sequence number that only grows (AUTOINCREMENT never
//!   reuses one, even after deletions), the filterable fields as columns, and the event in the
//!   JSON contract (which reads back into the typed event).
//! - `certs`: each certificate's DER once, under its SHA-256; `event_certs` links events to them.
//! - `baseline`: the trust-on-first-use state.
//! - `meta`: the journal's own id, which tells the sequence state file ([`seqstate`]) whether
//!   the journal it describes is still this one.
//!
//! WAL with `synchronous = NORMAL` survives a killed process without corruption and without
//! losing a committed transaction; a power cut may lose the last few commits. [`recover`] opens
//! it for the writer whatever state the file is in.
//!
//! The files are created with mode 0640 (the WAL and shared-memory files take the database
//! file's mode), whatever the umask.

pub mod follow;
pub mod recover;
pub mod seqstate;

use std::{
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};
use sensor_core::{
    event::{Event, Severity, Verdict},
    filter::{EventMeta, Filter},
    verdict::baseline,
};

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {error}")]
    Sqlite {
        path: String,
        error: rusqlite::Error,
    },
    #[error("journal {path}: {message}")]
    Other { path: String, message: String },
    /// SQLite reads the file but it is not sound (the integrity check's first finding).
    #[error("journal {path}: damaged: {detail}")]
    Damaged { path: String, detail: String },
    #[error("journal {path}: {what}: {error}")]
    Io {
        path: String,
        what: &'static str,
        error: std::io::Error,
    },
    #[error(transparent)]
    SeqState(#[from] seqstate::SeqStateError),
    /// A follower asked for events after a sequence number this journal never gave.
    #[error(
        "journal {path}: sequence number {after} is beyond the last one this journal gave \
         ({last}): it is not from this journal (one that was replaced?); resume from {last} for \
         new events, or from 0 for every event kept"
    )]
    Ahead { path: String, after: u64, last: u64 },
}

/// Why a journal write failed, as the health reports name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteFailure {
    /// No space left (SQLITE_FULL, ENOSPC, a quota).
    DiskFull,
    /// The disk or the file system failed.
    Io,
    /// The file is not a sound database.
    Damaged,
    /// Anything else.
    Other,
}

impl WriteFailure {
    /// In words, for the log and `sensorctl status`.
    pub fn describe(self) -> &'static str {
        match self {
            Self::DiskFull => "disk full",
            Self::Io => "I/O error",
            Self::Damaged => "damaged journal",
            Self::Other => "write error",
        }
    }
}

fn io_failure(e: &std::io::Error) -> WriteFailure {
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => WriteFailure::DiskFull,
        _ => WriteFailure::Io,
    }
}

impl JournalError {
    /// What kind of failure this is.
    pub fn failure(&self) -> WriteFailure {
        match self {
            Self::Sqlite { error, .. } => match error.sqlite_error_code() {
                Some(ErrorCode::DiskFull) => WriteFailure::DiskFull,
                Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => WriteFailure::Damaged,
                Some(ErrorCode::SystemIoFailure | ErrorCode::CannotOpen) => WriteFailure::Io,
                _ => WriteFailure::Other,
            },
            Self::Damaged { .. } => WriteFailure::Damaged,
            Self::Io { error, .. } => io_failure(error),
            Self::SeqState(e) => e.io().map_or(WriteFailure::Other, io_failure),
            Self::Other { .. } | Self::Ahead { .. } => WriteFailure::Other,
        }
    }

    /// Whether the error says the file itself is bad (not the disk, the permissions or the
    /// moment): only then is it moved aside.
    pub fn is_damage(&self) -> bool {
        self.failure() == WriteFailure::Damaged
    }
}

/// The journal's mode: root writes, its group may read (events name processes and sites).
pub const MODE: u32 = 0o640;

/// Whether the integrity check read the whole file within its budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checked {
    Complete,
    /// The budget ran out first: what was read was sound.
    Unfinished,
}

/// One event in the journal, with its sequence number: what every subscriber receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: u64,
    pub meta: EventMeta,
    pub event: Arc<Event>,
    /// The event in the JSON contract, as stored.
    pub json: Arc<str>,
}

/// An event ready to be written.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub meta: EventMeta,
    pub event: Arc<Event>,
    pub json: Arc<str>,
    /// (SHA-256 hex, DER) of its certificates.
    pub certs: Vec<(String, Vec<u8>)>,
}

impl NewEvent {
    pub fn of(event: Event) -> Self {
        let certs = event
            .handshake
            .chain
            .iter()
            .map(|c| (c.sha256.clone(), c.der.clone()))
            .collect();
        Self {
            meta: EventMeta::of(&event),
            json: event.to_json().into(),
            event: Arc::new(event),
            certs,
        }
    }

    /// The stored event, once its sequence number is known.
    pub fn stored(self, seq: u64) -> StoredEvent {
        StoredEvent {
            seq,
            meta: self.meta,
            event: self.event,
            json: self.json,
        }
    }

    /// About the memory this event holds, for the bound on events waiting for a commit: its
    /// JSON, the typed event (about as large), the certificates' DER (in the event's chain and
    /// here; the client's certificate's in the event) and a fixed part for the rest.
    pub fn approx_bytes(&self) -> usize {
        let certs: usize = self.certs.iter().map(|(s, d)| s.len() + d.len()).sum();
        let client = self
            .event
            .handshake
            .client_certificate_leaf
            .as_ref()
            .map_or(0, |c| c.der.len());
        self.json.len().saturating_mul(2) + certs.saturating_mul(2) + client + 256
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ns INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    severity INTEGER NOT NULL,
    sni TEXT,
    comm TEXT,
    exe TEXT,
    pid INTEGER,
    dst_addr TEXT,
    dst_port INTEGER NOT NULL,
    issuer TEXT,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_time ON events(time_ns);
CREATE TABLE IF NOT EXISTS certs (
    sha256 TEXT PRIMARY KEY,
    der BLOB NOT NULL,
    first_seen INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS event_certs (
    seq INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS event_certs_seq ON event_certs(seq);
CREATE INDEX IF NOT EXISTS event_certs_sha ON event_certs(sha256);
CREATE TABLE IF NOT EXISTS baseline (
    key TEXT PRIMARY KEY,
    entry TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// The WAL size, in pages, at which the writer's commit checkpoints it (SQLite's default is
/// 1,000). A checkpoint copies the WAL into the database and syncs both, inside the commit
/// that triggered it, and the events of that commit, and those queued behind it, wait: the
/// smaller the WAL, the shorter the wait. A commit writes about 7 pages (the events' page and
/// their index pages), so at 1,000 events/s this is a checkpoint every ~30 ms rather than
/// every ~300 ms. `cargo xtask bench daemon`, 1,000 events/s on this VM's ext4 disk
/// (2026-12-04): p99 event latency 8.9–13 ms at 1,000 pages, 7.1–7.4 at 250, 6.0–6.7 at 100,
/// 36–38 at 8,000; checkpoints from a thread of their own never completed under continuous
/// commits (the WAL grew to its limit) and did not help (11–13). 2026-12-05, two runs each:
/// 4.90–5.02 ms at 250, 4.68–4.70 at 100, with the journal's own write rate unchanged
/// (34,000–39,000 events/s in batches of 512).
const WAL_CHECKPOINT_PAGES: u32 = 100;

/// The journal file in a state directory.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join("journal.sqlite")
}

/// A path with a suffix appended (`journal.sqlite` → `journal.sqlite-wal`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The files SQLite keeps beside the database in WAL mode.
pub const SIDE_FILES: [&str; 2] = ["-wal", "-shm"];

/// A connection to the journal.
pub struct Journal {
    conn: Connection,
    path: String,
    /// Device and inode of the database file opened for writing: the writer notices when the
    /// file at the path is no longer this one (deleted or replaced).
    file: Option<(u64, u64)>,
}

/// Create the database file with its mode if it does not exist, and put the mode on the files
/// that do (an older sensord left them with the umask's). SQLite creates the WAL and
/// shared-memory files with the database file's mode, exactly.
fn prepare_files(path: &Path) -> Result<(), JournalError> {
    let shown = path.display().to_string();
    let io = |what: &'static str| {
        let shown = shown.clone();
        move |error| JournalError::Io {
            path: shown,
            what,
            error,
        }
    };
    let set_mode = |f: &std::fs::File| f.set_permissions(std::fs::Permissions::from_mode(MODE));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(MODE)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
    {
        // The umask only takes bits away; this makes the mode exact whatever it is.
        Ok(f) => set_mode(&f).map_err(io("setting the mode"))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io("creating")(e)),
    }
    for suffix in ["", SIDE_FILES[0], SIDE_FILES[1]] {
        let file = with_suffix(path, suffix);
        // Never through a symlink: whatever it points at is not ours to change.
        match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&file)
        {
            Ok(f) => {
                if !f.metadata().is_ok_and(|m| m.mode() & 0o777 == MODE) {
                    set_mode(&f).map_err(io("setting the mode"))?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {}
            Err(e) => return Err(io("opening")(e)),
        }
    }
    Ok(())
}

/// Device and inode of a file, without following a symlink.
fn file_id(path: &Path) -> std::io::Result<(u64, u64)> {
    std::fs::symlink_metadata(path).map(|m| (m.dev(), m.ino()))
}

fn sql<T>(path: &str, r: rusqlite::Result<T>) -> Result<T, JournalError> {
    r.map_err(|error| JournalError::Sqlite {
        path: path.to_owned(),
        error,
    })
}

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    let addr: Option<String> = row.get(8)?;
    let verdict: String = row.get(2)?;
    let json: String = row.get(11)?;
    // Rows are written from the typed event; one that does not read back (a newer version's,
    // or damage) still gives its columns and an event with what could be read.
    let event = serde_json::from_str::<Event>(&json).unwrap_or_default();
    Ok(StoredEvent {
        seq: row.get::<_, i64>(0)? as u64,
        meta: EventMeta {
            time_ns: row.get::<_, i64>(1)? as u64,
            verdict: verdict.parse::<Verdict>().ok(),
            severity: u8::try_from(row.get::<_, i64>(3)?)
                .ok()
                .and_then(Severity::from_number),
            sni: row.get(4)?,
            comm: row.get(5)?,
            exe: row.get(6)?,
            pid: row.get::<_, Option<i64>>(7)?.map(|p| p as u32),
            dst_addr: addr.and_then(|a| a.parse().ok()),
            dst_port: row.get::<_, i64>(9)? as u16,
            issuer: row.get(10)?,
            ..EventMeta::default()
        }
        .with_container_of(&event),
        event: Arc::new(event),
        json: json.into(),
    })
}

const COLUMNS: &str =
    "seq, time_ns, verdict, severity, sni, comm, exe, pid, dst_addr, dst_port, issuer, json";

impl Journal {
    /// Open (creating it if needed, mode 0640) the journal for writing. [`recover::open`] is
    /// the writer's way in: it checks the file and moves a damaged one aside.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let shown = path.display().to_string();
        prepare_files(path)?;
        let conn = sql(&shown, Connection::open(path))?;
        sql(
            &shown,
            conn.execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                 PRAGMA busy_timeout = 5000; PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES};"
            )),
        )?;
        sql(&shown, conn.execute_batch(SCHEMA))?;
        let file = file_id(path).ok();
        let journal = Self {
            conn,
            path: shown,
            file,
        };
        journal.ensure_id()?;
        Ok(journal)
    }

    /// Open an existing journal for reading.
    pub fn open_read(path: &Path) -> Result<Self, JournalError> {
        let shown = path.display().to_string();
        let conn = sql(
            &shown,
            Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            ),
        )?;
        sql(&shown, conn.execute_batch("PRAGMA busy_timeout = 5000;"))?;
        Ok(Self {
            conn,
            path: shown,
            file: None,
        })
    }

    /// The path it was opened at, as shown in errors.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Give the journal an id once (the sequence state file records it). Only written when
    /// missing, so that opening a journal on a full disk does not need space.
    fn ensure_id(&self) -> Result<(), JournalError> {
        if self.id()?.is_some() {
            return Ok(());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // Unique on this host: no process makes two journals in the same nanosecond.
        let id = format!("{now:x}-{:x}", std::process::id());
        match sql(
            &self.path,
            self.conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('id', ?1)",
                params![id],
            ),
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.is_damage() => Err(e),
            // A journal from before ids, on a full disk: it opens without one (its sequence
            // numbers then continue above the state file's reservation, the safe side).
            Err(e) => {
                tracing::warn!("giving the journal an id: {e}");
                Ok(())
            }
        }
    }

    /// The journal's id (set when it was created, or first opened by a sensord that has ids).
    pub fn id(&self) -> Result<Option<String>, JournalError> {
        sql(
            &self.path,
            self.conn
                .query_row("SELECT value FROM meta WHERE key = 'id'", [], |r| r.get(0))
                .optional(),
        )
    }

    /// Whether the file at the path is no longer the one this connection writes (deleted, or
    /// replaced). An error reading the path says nothing: `false`.
    pub fn replaced(&self) -> bool {
        let Some(opened) = self.file else {
            return false;
        };
        match file_id(Path::new(&self.path)) {
            Ok(now) => now != opened,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }

    /// Raise the sequence numbers so that the next event gets one above `floor` (never
    /// lowers them).
    pub fn continue_above(&mut self, floor: u64) -> Result<(), JournalError> {
        let path = self.path.clone();
        let floor = sql_int(floor);
        let tx = sql(&path, self.conn.transaction())?;
        let changed = sql(
            &path,
            tx.execute(
                "UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'events'",
                params![floor],
            ),
        )?;
        if changed == 0 {
            sql(
                &path,
                tx.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?1)",
                    params![floor],
                ),
            )?;
        }
        sql(&path, tx.commit())
    }

    /// Check that the file is sound: the cheap reads first (the header, the schema, the sequence,
    /// the newest event), then `PRAGMA quick_check` for at most `budget` (it reads every page:
    /// about a second per GiB from the page cache, more from a cold disk). Damage is
    /// [`JournalError::Damaged`] (or SQLite's own corruption error).
    pub fn check(&self, budget: Duration) -> Result<Checked, JournalError> {
        self.last_seq()?;
        sql(
            &self.path,
            self.conn
                .query_row(
                    &format!("SELECT {COLUMNS} FROM events ORDER BY seq DESC LIMIT 1"),
                    [],
                    row_to_record,
                )
                .optional(),
        )?;
        let interrupt = self.conn.get_interrupt_handle();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        // The timer interrupts the check when the budget runs out; the check's end (the
        // sender dropped) ends the timer at once. Without a thread, no check beyond the above.
        let Ok(timer) = std::thread::Builder::new()
            .name("journal-check".into())
            .spawn(move || {
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(budget) {
                    interrupt.interrupt();
                }
            })
        else {
            return Ok(Checked::Unfinished);
        };
        let result: rusqlite::Result<String> =
            self.conn
                .query_row("PRAGMA quick_check(1)", [], |r| r.get(0));
        drop(done);
        let _ = timer.join();
        match result {
            Ok(ok) if ok == "ok" => Ok(Checked::Complete),
            Ok(finding) => Err(JournalError::Damaged {
                path: self.path.clone(),
                detail: finding,
            }),
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::OperationInterrupted) => {
                Ok(Checked::Unfinished)
            }
            Err(error) => Err(JournalError::Sqlite {
                path: self.path.clone(),
                error,
            }),
        }
    }

    /// Limit the file to `pages` pages (SQLite raises a limit below what the file has to that;
    /// 0 leaves it as it is): writes past it fail with SQLITE_FULL, a full disk without root.
    /// Returns the limit in force.
    #[cfg(test)]
    pub(crate) fn limit_pages(&self, pages: u64) -> u64 {
        self.conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .map_or(0, |n| n as u64)
    }

    /// Write events in one transaction; returns their sequence numbers.
    pub fn append(&mut self, batch: &[NewEvent]) -> Result<Vec<u64>, JournalError> {
        let path = self.path.clone();
        let tx = sql(&path, self.conn.transaction())?;
        let mut seqs = Vec::with_capacity(batch.len());
        {
            let mut ins = sql(
                &path,
                tx.prepare_cached(
                    "INSERT INTO events (time_ns, verdict, severity, sni, comm, exe, pid, \
                     dst_addr, dst_port, issuer, json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
                     ?9, ?10, ?11)",
                ),
            )?;
            let mut cert = sql(
                &path,
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO certs (sha256, der, first_seen) VALUES (?1, ?2, ?3)",
                ),
            )?;
            let mut link = sql(
                &path,
                tx.prepare_cached("INSERT INTO event_certs (seq, sha256) VALUES (?1, ?2)"),
            )?;
            for e in batch {
                let m = &e.meta;
                sql(
                    &path,
                    ins.execute(params![
                        m.time_ns as i64,
                        // The column predates unjudged events, which are never journaled.
                        m.verdict.map_or("", Verdict::as_str),
                        i64::from(m.severity_number()),
                        m.sni,
                        m.comm,
                        m.exe,
                        m.pid.map(i64::from),
                        m.dst_addr.map(|a| a.to_string()),
                        i64::from(m.dst_port),
                        m.issuer,
                        &*e.json,
                    ]),
                )?;
                let seq = tx.last_insert_rowid() as u64;
                for (sha, der) in &e.certs {
                    sql(&path, cert.execute(params![sha, der, m.time_ns as i64]))?;
                    sql(&path, link.execute(params![seq as i64, sha]))?;
                }
                seqs.push(seq);
            }
        }
        sql(&path, tx.commit())?;
        Ok(seqs)
    }

    /// Events with a sequence number above `after`, in order, at most `limit`.
    ///
    /// (`after` comes from API clients: one beyond what SQLite's integers hold is past every
    /// event, not a negative number before them all.)
    pub fn read_after(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, JournalError> {
        let mut st = sql(
            &self.path,
            self.conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            )),
        )?;
        let rows = sql(
            &self.path,
            st.query_map(params![sql_int(after), limit as i64], row_to_record),
        )?;
        rows.map(|r| sql(&self.path, r)).collect()
    }

    /// Events in a time range (ns, inclusive), after a sequence number, that pass `filter`, at
    /// most `limit`.
    pub fn query(
        &self,
        filter: &Filter,
        from_ns: u64,
        to_ns: u64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, JournalError> {
        let mut out = Vec::new();
        let mut cursor = after;
        // Scan in pages so that a selective filter still ends.
        loop {
            let mut st = sql(
                &self.path,
                self.conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM events WHERE seq > ?1 AND time_ns >= ?2 AND \
                     time_ns <= ?3 ORDER BY seq LIMIT 1000"
                )),
            )?;
            let page: Vec<StoredEvent> = sql(
                &self.path,
                st.query_map(
                    params![sql_int(cursor), sql_int(from_ns), sql_int(to_ns)],
                    row_to_record,
                ),
            )?
            .collect::<Result<_, _>>()
            .map_err(|error| JournalError::Sqlite {
                path: self.path.clone(),
                error,
            })?;
            let Some(last) = page.last() else {
                return Ok(out);
            };
            cursor = last.seq;
            for r in page {
                if filter.matches(&r.meta) {
                    out.push(r);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
    }

    /// A certificate's DER by its SHA-256 (hex).
    pub fn certificate(&self, sha256: &str) -> Result<Option<Vec<u8>>, JournalError> {
        sql(
            &self.path,
            self.conn
                .query_row(
                    "SELECT der FROM certs WHERE sha256 = ?1",
                    params![sha256.to_ascii_lowercase()],
                    |r| r.get(0),
                )
                .optional(),
        )
    }

    /// The highest sequence number ever given (0 if none).
    pub fn last_seq(&self) -> Result<u64, JournalError> {
        let seq: Option<i64> = sql(
            &self.path,
            self.conn
                .query_row(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'events'",
                    [],
                    |r| r.get(0),
                )
                .optional(),
        )?;
        Ok(seq.unwrap_or(0) as u64)
    }

    /// Events stored.
    pub fn count(&self) -> Result<u64, JournalError> {
        let n: i64 = sql(
            &self.path,
            self.conn
                .query_row("SELECT count(*) FROM events", [], |r| r.get(0)),
        )?;
        Ok(n as u64)
    }

    /// Bytes the journal takes on disk (database and WAL).
    pub fn size_bytes(&self) -> u64 {
        let file = |suffix: &str| {
            std::fs::metadata(format!("{}{suffix}", self.path))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        file("") + file("-wal")
    }

    /// Delete events older than `retention_ns` before `now_ns`, then the oldest until the
    /// journal is under `max_bytes`, then certificates no event refers to. Returns events
    /// deleted.
    pub fn prune(
        &mut self,
        now_ns: u64,
        retention_ns: u64,
        max_bytes: u64,
    ) -> Result<u64, JournalError> {
        let path = self.path.clone();
        let mut deleted = 0u64;
        if retention_ns > 0 {
            let cutoff = now_ns.saturating_sub(retention_ns) as i64;
            deleted += sql(
                &path,
                self.conn
                    .execute("DELETE FROM events WHERE time_ns < ?1", params![cutoff]),
            )? as u64;
        }
        if max_bytes > 0 {
            // Page count * page size is what the database holds; delete a tenth at a time.
            for _ in 0..20 {
                let used: i64 = sql(
                    &path,
                    self.conn.query_row(
                        "SELECT (page_count - freelist_count) * page_size FROM \
                         pragma_page_count(), pragma_freelist_count(), pragma_page_size()",
                        [],
                        |r| r.get(0),
                    ),
                )?;
                if (used as u64) <= max_bytes {
                    break;
                }
                let n = (self.count()? / 10).max(1) as i64;
                deleted += sql(
                    &path,
                    self.conn.execute(
                        "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?1)",
                        params![n],
                    ),
                )? as u64;
            }
        }
        if deleted > 0 {
            sql(
                &path,
                self.conn.execute_batch(
                    "DELETE FROM event_certs WHERE seq NOT IN (SELECT seq FROM events);
                     DELETE FROM certs WHERE sha256 NOT IN (SELECT sha256 FROM event_certs);",
                ),
            )?;
        }
        Ok(deleted)
    }

    /// The persisted baseline.
    pub fn load_baseline(&self) -> Result<Vec<(baseline::Key, baseline::Entry)>, JournalError> {
        let mut st = sql(
            &self.path,
            self.conn.prepare("SELECT key, entry FROM baseline"),
        )?;
        let rows = sql(
            &self.path,
            st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))),
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (k, v) = sql(&self.path, row)?;
            if let (Ok(k), Ok(v)) = (serde_json::from_str(&k), serde_json::from_str(&v)) {
                out.push((k, v));
            }
        }
        Ok(out)
    }

    /// Replace the persisted baseline.
    pub fn save_baseline(
        &mut self,
        entries: &[(baseline::Key, baseline::Entry)],
    ) -> Result<(), JournalError> {
        let path = self.path.clone();
        let tx = sql(&path, self.conn.transaction())?;
        sql(&path, tx.execute("DELETE FROM baseline", []))?;
        {
            let mut ins = sql(
                &path,
                tx.prepare("INSERT INTO baseline (key, entry) VALUES (?1, ?2)"),
            )?;
            for (k, v) in entries {
                let (Ok(k), Ok(v)) = (serde_json::to_string(k), serde_json::to_string(v)) else {
                    continue;
                };
                sql(&path, ins.execute(params![k, v]))?;
            }
        }
        sql(&path, tx.commit())
    }
}

/// A sequence number or a time as SQLite's signed integer, saturating.
fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Events for tests of the journal and its followers.
#[cfg(test)]
pub(crate) mod testing {
    use sensor_core::event::{Handshake, Judgement, Reason, Timestamp};

    use super::*;

    /// Event `i`: time 1000 + i ns, SNI `h{i}.test`, judged `verdict`.
    pub fn event(i: u64, verdict: Verdict) -> NewEvent {
        NewEvent::of(Event {
            handshake: Handshake {
                time: Timestamp(1_000 + i),
                server_name: Some(format!("h{i}.test")),
                dst_port: 443,
                ..Handshake::default()
            },
            process: None,
            judgement: Some(Judgement {
                verdict,
                reasons: vec![Reason::PublicRoot],
                severity: Severity::Medium,
                explanation: format!("event {i}"),
                interceptor: None,
                extra_certificates: Vec::new(),
                interceptor_grade: None,
            }),
            host: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: u64, verdict: Verdict) -> NewEvent {
        let mut e = testing::event(i, verdict);
        e.certs = vec![(format!("{:064x}", i % 2), vec![i as u8; 10])];
        e
    }

    #[test]
    fn sequence_numbers_only_grow_and_certificates_are_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        let mut j = Journal::open(&path).unwrap();
        let batch: Vec<NewEvent> = (0..10).map(|i| event(i, Verdict::Clean)).collect();
        assert_eq!(j.append(&batch).unwrap(), (1..=10).collect::<Vec<_>>());
        assert_eq!(j.count().unwrap(), 10);
        assert_eq!(
            j.certificate(&format!("{:064x}", 1)).unwrap(),
            Some(vec![1u8; 10])
        );
        // Prune everything older than 1005: sequence numbers are not reused.
        assert_eq!(j.prune(1_005, 1, 0).unwrap(), 5 - 1);
        let seqs = j.append(&[event(99, Verdict::Untrusted)]).unwrap();
        assert_eq!(seqs, vec![11]);
        assert_eq!(j.last_seq().unwrap(), 11);
        let r = Journal::open_read(&path).unwrap();
        let after = r.read_after(9, 100).unwrap();
        assert_eq!(
            after.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![10, 11]
        );
        let only = r
            .query(
                &Filter {
                    verdicts: vec![Verdict::Untrusted],
                    ..Filter::default()
                },
                0,
                u64::MAX,
                0,
                10,
            )
            .unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].meta.sni.as_deref(), Some("h99.test"));
        // The stored JSON reads back into the typed event it was written from.
        assert_eq!(*only[0].event, *event(99, Verdict::Untrusted).event);
        assert_eq!(only[0].meta, event(99, Verdict::Untrusted).meta);
    }

    #[test]
    fn the_baseline_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&path_in(dir.path())).unwrap();
        let key = baseline::Key {
            sni: "a.test".into(),
            addr: None,
            port: 443,
        };
        let entry = baseline::Entry {
            issuers: vec!["x".into()],
            ..baseline::Entry::default()
        };
        j.save_baseline(&[(key.clone(), entry.clone())]).unwrap();
        assert_eq!(j.load_baseline().unwrap(), vec![(key, entry)]);
    }
}
