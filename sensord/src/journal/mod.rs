//! The journal: every event, durably, before any subscriber sees it. An edge: SQLite (rusqlite)
//! in WAL mode. [`follow`] reads it "from sequence N, then live" for every subscriber.
//!
//! - `events`: one row per event, with a sequence number that only grows (AUTOINCREMENT never
//!   reuses one, even after deletions), the filterable fields as columns, and the event in the
//!   JSON contract (which reads back into the typed event).
//! - `certs`: each certificate's DER once, under its SHA-256; `event_certs` links events to them.
//! - `baseline`: the trust-on-first-use state.
//!
//! WAL with `synchronous = NORMAL` survives a killed process without corruption and without
//! losing a committed transaction; a power cut may lose the last few commits.

pub mod follow;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
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
";

/// The journal file in a state directory.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join("journal.sqlite")
}

/// A connection to the journal.
pub struct Journal {
    conn: Connection,
    path: String,
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
        },
        event: Arc::new(event),
        json: json.into(),
    })
}

const COLUMNS: &str =
    "seq, time_ns, verdict, severity, sni, comm, exe, pid, dst_addr, dst_port, issuer, json";

impl Journal {
    /// Open (creating it if needed) the journal for writing.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let shown = path.display().to_string();
        let conn = sql(&shown, Connection::open(path))?;
        sql(
            &shown,
            conn.execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;",
            ),
        )?;
        sql(&shown, conn.execute_batch(SCHEMA))?;
        Ok(Self { conn, path: shown })
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
        Ok(Self { conn, path: shown })
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
            }),
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
