//! An exporter's persisted cursor: the last journal sequence number it delivered, in a small
//! file under the state directory, replaced atomically (a new file, fsync, rename) so that a
//! crash leaves the old value or the new one, never a torn one.

use std::{
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

/// Where one exporter keeps its cursor.
#[derive(Clone, Debug)]
pub struct CursorFile {
    path: PathBuf,
}

impl CursorFile {
    /// The cursor of the exporter `name` in `state_dir`.
    pub fn new(state_dir: &Path, name: &str) -> Self {
        Self {
            path: state_dir.join("cursors").join(format!("{name}.cursor")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved sequence number; `None` when the exporter never ran here.
    pub fn load(&self) -> std::io::Result<Option<u64>> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => text.trim().parse().map(Some).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: not a sequence number: {text:?}", self.path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Save `seq` durably.
    pub fn save(&self, seq: u64) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("cursor.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        writeln!(f, "{seq}")?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        std::fs::File::open(dir)?.sync_all()
    }
}

/// Where a follower starts: after the saved cursor; a new exporter starts at the journal's end
/// (`last_seq`), and a cursor beyond the end (the journal was recreated) starts from the
/// beginning.
pub fn start_after(saved: Option<u64>, last_seq: u64) -> u64 {
    match saved {
        Some(seq) if seq <= last_seq => seq,
        Some(_) => 0,
        None => last_seq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let c = CursorFile::new(dir.path(), "jsonl");
        assert_eq!(c.load().unwrap(), None);
        c.save(42).unwrap();
        assert_eq!(c.load().unwrap(), Some(42));
        c.save(43).unwrap();
        assert_eq!(c.load().unwrap(), Some(43));
        let mode = std::fs::metadata(c.path()).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        std::fs::write(c.path(), "nonsense").unwrap();
        assert!(c.load().is_err());
    }

    #[test]
    fn where_a_follower_starts() {
        assert_eq!(start_after(None, 100), 100);
        assert_eq!(start_after(Some(40), 100), 40);
        assert_eq!(start_after(Some(140), 100), 0);
    }
}
