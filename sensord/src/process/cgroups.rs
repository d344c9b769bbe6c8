//! cgroup v2 id → path. The kernel gives a connecting process's cgroup id with its socket
//! (the inode number of the cgroup's directory); when the process is gone before /proc is
//! read (a short-lived client in a container), the id still names its cgroup, and so its
//! container, as long as the directory is there. The hierarchy is walked on a miss, at most
//! once per [`CgroupPaths::MIN_WALK_INTERVAL`], bounded in directories and depth.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// The paths of the cgroups under one root, by id, as of the last walk.
pub struct CgroupPaths {
    root: Option<PathBuf>,
    paths: HashMap<u64, String>,
    last_walk: Option<Instant>,
    /// Walks that stopped at [`Self::MAX_DIRS`].
    pub truncated_walks: u64,
}

impl CgroupPaths {
    pub const MIN_WALK_INTERVAL: Duration = Duration::from_millis(20);
    pub const MAX_DIRS: usize = 100_000;
    const MAX_DEPTH: usize = 32;

    /// The hierarchy mounted at `root` (`None`: no cgroup v2 here; nothing is found).
    pub fn new(root: Option<PathBuf>) -> Self {
        Self {
            root,
            paths: HashMap::new(),
            last_walk: None,
            truncated_walks: 0,
        }
    }

    /// The path of cgroup `id` as /proc/PID/cgroup writes it (`/system.slice/…`, `/` for the
    /// root), walking the hierarchy again when the id is new and the last walk is old enough.
    pub fn path_of(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.paths.get(&id) {
            return Some(p.clone());
        }
        let root = self.root.clone()?;
        if self
            .last_walk
            .is_some_and(|t| t.elapsed() < Self::MIN_WALK_INTERVAL)
        {
            return None;
        }
        self.last_walk = Some(Instant::now());
        let (paths, truncated) = walk(&root);
        self.truncated_walks += u64::from(truncated);
        self.paths = paths;
        self.paths.get(&id).cloned()
    }
}

/// Every directory under `root` by inode number, with its path relative to `root`; and
/// whether the walk stopped at [`CgroupPaths::MAX_DIRS`].
fn walk(root: &Path) -> (HashMap<u64, String>, bool) {
    let mut paths = HashMap::new();
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(root.to_path_buf(), String::new(), 0)];
    while let Some((dir, rel, depth)) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        if paths.len() >= CgroupPaths::MAX_DIRS {
            return (paths, true);
        }
        let shown = if rel.is_empty() {
            "/".to_owned()
        } else {
            rel.clone()
        };
        paths.insert(meta.ino(), shown);
        if depth >= CgroupPaths::MAX_DEPTH {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let name = entry.file_name().to_string_lossy().into_owned();
                stack.push((entry.path(), format!("{rel}/{name}"), depth + 1));
            }
        }
    }
    (paths, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_found_by_its_inode_and_a_new_one_after_a_walk() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("system.slice/a.scope");
        std::fs::create_dir_all(&a).unwrap();
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let mut paths = CgroupPaths::new(Some(dir.path().to_path_buf()));
        assert_eq!(
            paths.path_of(ino(&a)).as_deref(),
            Some("/system.slice/a.scope")
        );
        assert_eq!(paths.path_of(ino(dir.path())).as_deref(), Some("/"));
        let b = dir.path().join("machine.slice/libpod-x.scope/container");
        std::fs::create_dir_all(&b).unwrap();
        std::thread::sleep(CgroupPaths::MIN_WALK_INTERVAL);
        assert_eq!(
            paths.path_of(ino(&b)).as_deref(),
            Some("/machine.slice/libpod-x.scope/container")
        );
        // An unknown id right after a walk waits for the next one.
        assert_eq!(paths.path_of(u64::MAX), None);
        assert_eq!(paths.truncated_walks, 0);
        assert_eq!(CgroupPaths::new(None).path_of(1), None);
    }

    #[test]
    fn finds_this_process_s_own_cgroup() {
        let root = crate::kernel::cgroup::cgroup2_root().expect("the tests run on cgroup v2");
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a cgroup v2 line");
        let ino = std::fs::metadata(root.join(rel.trim_start_matches('/')))
            .unwrap()
            .ino();
        let mut paths = CgroupPaths::new(Some(root));
        assert_eq!(paths.path_of(ino).as_deref(), Some(rel));
    }
}
