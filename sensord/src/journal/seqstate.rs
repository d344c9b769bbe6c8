//! The sequence state file: how far the journal's sequence numbers have gone, kept next to the
//! journal (`journal.seq`) so that a journal started anew (the old one was damaged and moved
//! aside, or deleted) continues above every number a subscriber may hold. Without it a new
//! journal starts at 1, and a `watch` or an exporter resuming after event 5000 would skip the
//! new journal's first 5000 events without a word.
//!
//! - `reserved`: no sequence number above it was ever given. The writer raises it, durably,
//!   before a commit would go past it, by a margin: two fsyncs per few thousand events rather
//!   than per commit (commits are not fsynced themselves, `synchronous = NORMAL`).
//! - `committed`: the highest number committed when the file was written (a lower bound).
//! - `boot`, `journal`: the kernel's boot id and the journal's own id then. On the same boot and
//!   the same journal, not behind `committed`, the journal holds every commit it made (its WAL
//!   survives a killed process) and goes on from its own last number, without a jump. Otherwise
//!   (another journal, or a power cut that may have taken the WAL's last commits after
//!   subscribers saw them) it continues above `reserved`.
//!
//! The file is replaced atomically: a new file (`O_EXCL`, mode 0600), fsync, rename, fsync of
//! the folder; a crash leaves the old content or the new one.

use std::{
    fmt::Write as _,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

/// The state file's mode: only root reads it (it holds nothing secret, but nobody else needs it).
pub const MODE: u32 = 0o600;

/// Errors of the state file.
#[derive(Debug, thiserror::Error)]
pub enum SeqStateError {
    #[error("sequence state {path}: {what}: {error}")]
    Io {
        path: String,
        what: &'static str,
        error: std::io::Error,
    },
    #[error("sequence state {path}:{line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
}

impl SeqStateError {
    /// The I/O error underneath, if any (to tell a full disk).
    pub fn io(&self) -> Option<&std::io::Error> {
        match self {
            Self::Io { error, .. } => Some(error),
            Self::Invalid { .. } => None,
        }
    }
}

/// What the state file says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeqState {
    /// No sequence number above this was ever given.
    pub reserved: u64,
    /// The highest committed when the file was written.
    pub committed: u64,
    /// The kernel's boot id then.
    pub boot: Option<String>,
    /// The id of the journal it was written for.
    pub journal: Option<String>,
}

/// The state file of the journal at `journal`: `journal.seq` beside `journal.sqlite`.
pub fn path_for(journal: &Path) -> PathBuf {
    journal.with_extension("seq")
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`); `None` when it cannot be read, which
/// counts as another boot (the safe side: the journal continues above `reserved`).
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

impl SeqState {
    /// Read the file; `None` when there is none (a first start, or a version before it).
    pub fn load(path: &Path) -> Result<Option<Self>, SeqStateError> {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &shown).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(SeqStateError::Io {
                path: shown,
                what: "reading",
                error,
            }),
        }
    }

    /// Parse the file's text: `key=value` lines, `#` comments; `reserved` is required, unknown
    /// keys are left for newer versions.
    pub fn parse(text: &str, path: &str) -> Result<Self, SeqStateError> {
        let invalid = |line: usize, message: String| SeqStateError::Invalid {
            path: path.to_owned(),
            line,
            message,
        };
        let mut state = Self::default();
        let mut reserved = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(invalid(i + 1, format!("not key=value: {line:?}")));
            };
            let (key, value) = (key.trim(), value.trim());
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| invalid(i + 1, format!("{key} is not a number: {value:?}")))
            };
            match key {
                "reserved" => reserved = Some(number()?),
                "committed" => state.committed = number()?,
                "boot" => state.boot = Some(value.to_owned()).filter(|v| !v.is_empty()),
                "journal" => state.journal = Some(value.to_owned()).filter(|v| !v.is_empty()),
                _ => {}
            }
        }
        state.reserved = reserved.ok_or_else(|| invalid(1, "no reserved= line".to_owned()))?;
        Ok(state)
    }

    fn text(&self) -> String {
        let mut out = String::from(
            "# sensord: how far the journal's sequence numbers went (see the README). Do not edit.\n",
        );
        let _ = writeln!(out, "reserved={}", self.reserved);
        let _ = writeln!(out, "committed={}", self.committed);
        if let Some(b) = &self.boot {
            let _ = writeln!(out, "boot={b}");
        }
        if let Some(j) = &self.journal {
            let _ = writeln!(out, "journal={j}");
        }
        out
    }

    /// Replace the file durably and atomically.
    pub fn save(&self, path: &Path) -> Result<(), SeqStateError> {
        let shown = path.display().to_string();
        let io = |what: &'static str| {
            let shown = shown.clone();
            move |error| SeqStateError::Io {
                path: shown,
                what,
                error,
            }
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        // A leftover of a crash (or anything else put there, a symlink included: removing it
        // removes the link, and O_EXCL then refuses to follow one).
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("removing the old temporary file")(e)),
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(io("creating the temporary file"))?;
        let written = (|| {
            // The umask only takes bits away; this makes the mode exact whatever it is.
            f.set_permissions(std::fs::Permissions::from_mode(MODE))?;
            f.write_all(self.text().as_bytes())?;
            f.sync_all()
        })();
        drop(f);
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("writing the temporary file")(e));
        }
        if let Err(e) = std::fs::rename(&tmp, path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("renaming the temporary file")(e));
        }
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing the folder"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_replaces_atomically_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("journal.sqlite"));
        assert_eq!(path, dir.path().join("journal.seq"));
        assert_eq!(SeqState::load(&path).unwrap(), None);
        let s = SeqState {
            reserved: 4_196,
            committed: 100,
            boot: Some("b-1".into()),
            journal: Some("j-1".into()),
        };
        s.save(&path).unwrap();
        assert_eq!(SeqState::load(&path).unwrap(), Some(s.clone()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, MODE);
        // A leftover temporary file that is a symlink: replaced, its target untouched.
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("journal.seq.tmp")).unwrap();
        let t = SeqState {
            reserved: 9_000,
            ..s
        };
        t.save(&path).unwrap();
        assert_eq!(SeqState::load(&path).unwrap(), Some(t));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert!(!dir.path().join("journal.seq.tmp").exists());

        std::fs::write(&path, "reserved=12\ncommitted=x\n").unwrap();
        let err = SeqState::load(&path).unwrap_err();
        assert!(
            matches!(err, SeqStateError::Invalid { line: 2, .. }),
            "{err}"
        );
        std::fs::write(&path, "committed=3\n").unwrap();
        assert!(SeqState::load(&path).is_err(), "reserved is required");
        let newer = SeqState::parse("# c\nreserved=5\nfuture=1\n", "x").unwrap();
        assert_eq!(newer.reserved, 5);
    }
}
