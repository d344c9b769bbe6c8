//! Opening the journal for the writer, so that sensord starts whatever state the file is in.
//!
//! A file SQLite cannot read as a database, or that fails the integrity check, is moved aside
//! (`journal.sqlite.damaged-<UTC time>`, its `-wal` and `-shm` beside it with those suffixes, so
//! that SQLite still opens it for forensics) and a new journal starts. Before, a damaged journal
//! stopped sensord at every start, and systemd's restart limit left the host unwatched. Errors
//! that say nothing about the file (permissions, a full disk, I/O) are returned as they are:
//! moving a sound journal aside would put its events out of the API's reach for nothing.
//!
//! Sequence numbers never go back: a new journal (after a move, or because the file was
//! deleted, or replaced by an older copy) continues above the number in the sequence state file
//! ([`super::seqstate`]), so that a subscriber resuming after the last number it saw gets every
//! new event.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    Checked, Journal, JournalError, SIDE_FILES,
    seqstate::{self, SeqState},
    with_suffix,
};

/// The integrity check's time budget at open. `PRAGMA quick_check` reads every page (about
/// half a second for 400 MB from the page cache, much more from a cold disk); past the budget
/// the start goes on with what was read found sound, and damage further in shows when it is
/// read (the writer then moves the file aside). A start stays within seconds.
pub const CHECK_BUDGET: Duration = Duration::from_secs(2);

/// A damaged journal moved aside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MovedAside {
    /// Where the database file went (its `-wal` and `-shm` beside it).
    pub to: PathBuf,
    /// What was wrong.
    pub why: String,
}

/// The journal, open for writing.
pub struct Opened {
    pub journal: Journal,
    pub moved_aside: Option<MovedAside>,
    /// The sequence state for this journal; `reserved` is what the file on disk holds (the
    /// writer raises it, durably, before a commit would go past it).
    pub state: SeqState,
}

/// Open the journal at `path` for writing: check it, move it aside if it is damaged, and make
/// its sequence numbers continue above those given before.
pub fn open(path: &Path, budget: Duration) -> Result<Opened, JournalError> {
    let known = match SeqState::load(&seqstate::path_for(path)) {
        Ok(known) => known,
        Err(e) => {
            tracing::error!(
                "{e}: ignored, and written anew; sequence numbers continue from the journal's own"
            );
            None
        }
    };
    open_with(path, budget, known, None)
}

/// [`open`] with the sequence state known (the writer's own, when it reopens), and `damaged`
/// when the writer found the open journal damaged: it is moved aside without another check.
pub fn open_with(
    path: &Path,
    budget: Duration,
    known: Option<SeqState>,
    damaged: Option<String>,
) -> Result<Opened, JournalError> {
    set_aside_orphans(path)?;
    let (mut journal, moved_aside) = match damaged {
        Some(why) => {
            let moved = move_aside(path, why)?;
            (Journal::open(path)?, Some(moved))
        }
        None => match open_checked(path, budget) {
            Ok(j) => (j, None),
            Err(e) if e.is_damage() => {
                let moved = move_aside(path, e.to_string())?;
                (Journal::open(path)?, Some(moved))
            }
            Err(e) => return Err(e),
        },
    };
    let id = journal.id()?;
    let boot = seqstate::boot_id();
    let last = journal.last_seq()?;
    // What the damaged file itself still says, when it can: a state file that was lost too
    // (or a journal from before it existed) does not send numbers back.
    let salvaged = moved_aside
        .as_ref()
        .and_then(|m| Journal::open_read(&m.to).and_then(|j| j.last_seq()).ok())
        .unwrap_or(0);
    let floor = floor(known.as_ref(), boot.as_deref(), id.as_deref(), last).max(salvaged);
    if floor > last {
        journal.continue_above(floor)?;
        tracing::warn!(
            journal = %path.display(),
            "the journal's sequence numbers continue above {floor}, the highest given before \
             (it had {last}): a subscriber resuming from an earlier number gets every new event"
        );
    }
    let last = journal.last_seq()?;
    let mut state = SeqState {
        reserved: last,
        committed: last,
        boot,
        journal: id,
    };
    let state_path = seqstate::path_for(path);
    if let Err(e) = state.save(&state_path) {
        // Not fatal here: the writer saves it before its first commit, and commits nothing
        // until it could.
        tracing::warn!("{e}");
        state.reserved = known.map_or(0, |k| k.reserved);
    }
    Ok(Opened {
        journal,
        moved_aside,
        state,
    })
}

/// Where the journal's sequence numbers must continue from, given the state file.
fn floor(known: Option<&SeqState>, boot: Option<&str>, id: Option<&str>, last: u64) -> u64 {
    let Some(k) = known else {
        return last;
    };
    // The same journal on the same boot, not behind what it had committed: its WAL held every
    // commit through a killed process, so numbers between its last and `reserved` were never
    // given. Anything else may have given them (to a subscriber, before a power cut took the
    // commit, or in a journal since deleted or damaged).
    let same = k.boot.is_some()
        && k.boot.as_deref() == boot
        && k.journal.is_some()
        && k.journal.as_deref() == id
        && last >= k.committed;
    if same { last } else { last.max(k.reserved) }
}

fn open_checked(path: &Path, budget: Duration) -> Result<Journal, JournalError> {
    let journal = Journal::open(path)?;
    if journal.check(budget)? == Checked::Unfinished {
        tracing::info!(
            journal = %path.display(),
            "the journal's integrity check did not finish within {budget:?}; what it read is \
             sound, and damage further in shows when it is read"
        );
    }
    Ok(journal)
}

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> JournalError {
    let path = path.display().to_string();
    move |error| JournalError::Io { path, what, error }
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// `20250131T235959Z`: when a file was moved aside, in its name.
fn utc_stamp() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A name beside `path` with `tag` and the time, that no file (nor its side files) has yet.
fn free_name(path: &Path, tag: &str) -> Result<PathBuf, JournalError> {
    let base = with_suffix(path, &format!(".{tag}-{}", utc_stamp()));
    for n in 0..1000 {
        let candidate = if n == 0 {
            base.clone()
        } else {
            with_suffix(&base, &format!(".{n}"))
        };
        let taken = exists(&candidate)
            || SIDE_FILES
                .iter()
                .any(|s| exists(&with_suffix(&candidate, s)));
        if !taken {
            return Ok(candidate);
        }
    }
    Err(JournalError::Other {
        path: path.display().to_string(),
        message: format!("no free name to move it aside ({} taken)", base.display()),
    })
}

/// Move a side file along with its database, or at least out of the way: a WAL left beside a
/// new database would be replayed into it.
fn move_side(from: &Path, to: &Path) -> Result<(), JournalError> {
    if !exists(from) {
        return Ok(());
    }
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(_) => std::fs::remove_file(from).map_err(io(from, "moving aside")),
    }
}

fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // The move happened; losing it to a power cut only means doing it again.
    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
}

/// Move the damaged journal at `path` (and its side files) aside, keeping it.
fn move_aside(path: &Path, why: String) -> Result<MovedAside, JournalError> {
    let to = free_name(path, "damaged")?;
    if exists(path) {
        std::fs::rename(path, &to).map_err(io(path, "moving aside"))?;
    }
    for side in SIDE_FILES {
        move_side(&with_suffix(path, side), &with_suffix(&to, side))?;
    }
    sync_dir(path);
    tracing::error!(
        journal = %path.display(),
        moved_to = %to.display(),
        "THE JOURNAL WAS DAMAGED ({why}): it was moved to {} as it is, for forensics, and a new \
         journal starts; the events in it are not served by the API any more",
        to.display()
    );
    Ok(MovedAside { to, why })
}

/// A WAL or shared-memory file without its database (the database was deleted while a
/// sensord had it open, or after a crash): moved aside before a new database is made there,
/// which would otherwise take the old WAL's pages as its own.
fn set_aside_orphans(path: &Path) -> Result<(), JournalError> {
    if exists(path) || !SIDE_FILES.iter().any(|s| exists(&with_suffix(path, s))) {
        return Ok(());
    }
    let to = free_name(path, "orphan")?;
    for side in SIDE_FILES {
        move_side(&with_suffix(path, side), &with_suffix(&to, side))?;
    }
    sync_dir(path);
    tracing::warn!(
        journal = %path.display(),
        "the journal's WAL was there without the journal: moved aside to {}-wal",
        to.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use sensor_core::event::Verdict;

    use super::*;
    use crate::journal::{NewEvent, path_in, testing};

    fn events(from: u64, n: u64) -> Vec<NewEvent> {
        (from..from + n)
            .map(|i| testing::event(i, Verdict::Clean))
            .collect()
    }

    /// A journal with `n` events, closed, and its state file.
    fn journal_with(dir: &Path, n: u64) -> PathBuf {
        let path = path_in(dir);
        let mut o = open(&path, CHECK_BUDGET).unwrap();
        o.journal.append(&events(1, n)).unwrap();
        o.state.committed = n;
        o.state.reserved = n;
        o.state.save(&seqstate::path_for(&path)).unwrap();
        path
    }

    fn next_seq(o: &mut Opened) -> u64 {
        o.journal.append(&events(1_000, 1)).unwrap()[0]
    }

    fn damaged_files(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".damaged-") && !n.ends_with("-wal") && !n.ends_with("-shm"))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_file_that_is_not_a_database_is_moved_aside_and_numbers_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_with(dir.path(), 10);
        let garbage = b"this is not SQLite, it is a tape of noise".repeat(200);
        std::fs::write(&path, &garbage).unwrap();
        let mut o = open(&path, CHECK_BUDGET).unwrap();
        let moved = o.moved_aside.clone().expect("moved aside");
        assert_eq!(std::fs::read(&moved.to).unwrap(), garbage, "kept as it was");
        assert!(moved.why.contains("not a database"), "{}", moved.why);
        assert_eq!(next_seq(&mut o), 11, "above the 10 given before");
        assert_eq!(o.journal.count().unwrap(), 1);
    }

    #[test]
    fn a_damaged_page_is_found_by_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        {
            let mut o = open(&path, CHECK_BUDGET).unwrap();
            for i in 0..20 {
                o.journal.append(&events(i * 100 + 1, 100)).unwrap();
            }
            o.journal
                .conn
                .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
                .unwrap();
        }
        // Scribble over the middle of the file, past the header and the schema.
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 4096] {
            *b = 0xA5;
        }
        std::fs::write(&path, &bytes).unwrap();
        let mut o = open(&path, CHECK_BUDGET).unwrap();
        assert!(o.moved_aside.is_some(), "the check found the damage");
        assert_eq!(damaged_files(dir.path()).len(), 1);
        assert_eq!(next_seq(&mut o), 2_001);
    }

    #[test]
    fn a_deleted_journal_continues_above_the_last_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_with(dir.path(), 7);
        let mut o = open(&path, CHECK_BUDGET).unwrap();
        // Killed: the connection is never closed, its WAL stays beside the file.
        assert_eq!(next_seq(&mut o), 8);
        std::mem::forget(o);
        assert!(with_suffix(&path, "-wal").exists());
        let mut s = SeqState::load(&seqstate::path_for(&path)).unwrap().unwrap();
        s.reserved = 8;
        s.save(&seqstate::path_for(&path)).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut o = open(&path, CHECK_BUDGET).unwrap();
        assert!(o.moved_aside.is_none());
        assert_eq!(
            o.journal.count().unwrap(),
            0,
            "the old WAL was not replayed"
        );
        assert_eq!(next_seq(&mut o), 9);
        // A clean stop: the writer saves the exact number.
        o.state.reserved = 9;
        o.state.committed = 9;
        o.state.save(&seqstate::path_for(&path)).unwrap();
        drop(o);

        // Deleted with its side files after a clean stop.
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(with_suffix(&path, s));
        }
        let mut o = open(&path, CHECK_BUDGET).unwrap();
        assert_eq!(next_seq(&mut o), 10);
    }

    #[test]
    fn the_same_journal_after_a_kill_goes_on_without_a_jump() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_with(dir.path(), 5);
        let state_path = seqstate::path_for(&path);
        let mut s = SeqState::load(&state_path).unwrap().unwrap();
        // The writer had reserved ahead, then was killed.
        s.reserved = 5 + 4096;
        s.save(&state_path).unwrap();
        let mut o = open(&path, CHECK_BUDGET).unwrap();
        assert_eq!(next_seq(&mut o), 6);
        drop(o);

        // Another boot (a power cut may have lost commits subscribers saw): above reserved.
        let mut s = SeqState::load(&state_path).unwrap().unwrap();
        s.reserved = 6 + 4096;
        s.boot = Some("another boot".into());
        s.save(&state_path).unwrap();
        let mut o = open(&path, CHECK_BUDGET).unwrap();
        assert_eq!(next_seq(&mut o), 6 + 4096 + 1);
        drop(o);

        // An older copy of the journal put back: behind what was committed, above reserved.
        let mut s = SeqState::load(&state_path).unwrap().unwrap();
        s.committed = 9_000;
        s.reserved = 9_500;
        s.save(&state_path).unwrap();
        let mut o = open(&path, CHECK_BUDGET).unwrap();
        assert_eq!(next_seq(&mut o), 9_501);
    }

    #[test]
    fn a_broken_state_file_does_not_stop_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_with(dir.path(), 3);
        std::fs::write(seqstate::path_for(&path), "reserved=lots\n").unwrap();
        let mut o = open(&path, CHECK_BUDGET).unwrap();
        assert_eq!(next_seq(&mut o), 4);
        let s = SeqState::load(&seqstate::path_for(&path)).unwrap().unwrap();
        assert_eq!(s.reserved, 3, "written anew");
    }

    #[test]
    fn errors_that_are_not_damage_leave_the_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        std::fs::create_dir(&path).unwrap();
        assert!(open(&path, CHECK_BUDGET).is_err());
        assert!(path.is_dir());
        assert!(damaged_files(dir.path()).is_empty());
    }

    #[test]
    fn a_check_out_of_time_is_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_with(dir.path(), 50);
        let j = Journal::open(&path).unwrap();
        assert!(j.check(Duration::ZERO).is_ok());
        assert_eq!(j.check(CHECK_BUDGET).unwrap(), Checked::Complete);
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_get_their_modes_whatever_the_umask() {
        for umask in [0o077, 0o000] {
            let dir = tempfile::tempdir().unwrap();
            let path = path_in(dir.path());
            // SAFETY: umask has no memory effects; it is process-wide, which is why it is
            // restored right after the files are made (no other test looks at modes it did
            // not set itself).
            let old = unsafe { libc::umask(umask) };
            let made = (|| {
                let mut o = open(&path, CHECK_BUDGET)?;
                o.journal.append(&events(1, 3))?;
                Ok::<_, JournalError>(o)
            })();
            // SAFETY: as above.
            unsafe { libc::umask(old) };
            let o = made.unwrap();
            for s in ["", "-wal", "-shm"] {
                let f = with_suffix(&path, s);
                assert_eq!(mode(&f), 0o640, "{} with umask {umask:o}", f.display());
            }
            assert_eq!(mode(&seqstate::path_for(&path)), 0o600);
            drop(o);
        }
        // A journal an older sensord left readable by everyone is brought to its mode.
        let dir = tempfile::tempdir().unwrap();
        let path = journal_with(dir.path(), 1);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let _o = open(&path, CHECK_BUDGET).unwrap();
        assert_eq!(mode(&path), 0o640);
    }
}
