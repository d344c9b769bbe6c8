//! cgroup v2 id → path. The kernel gives a connecting process's cgroup id with its socket
//! (the inode number of the cgroup's directory); when the process is gone before /proc is
//! read (a short-lived client in a container), the id still names its cgroup, and so its
//! container.
//!
//! Three ways, first that answers: the paths [`super::cgroup_watch`] noted as each cgroup
//! was made (found even after the cgroup is removed); the cgroup opened by its id, which is
//! also its directory's file handle (`open_by_handle_at`, which needs CAP_DAC_READ_SEARCH, in
//! the shipped unit); and where both fail, a walk of the hierarchy, at most once per
//! [`CgroupPaths::MIN_WALK_INTERVAL`], bounded in directories and depth. Paths found stay known
//! (up to [`CgroupPaths::MAX_DIRS`]).

use std::{
    collections::HashMap,
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// The paths of the cgroups under one root, by id, as found so far.
pub struct CgroupPaths {
    root: Option<PathBuf>,
    /// The root directory, open, for `open_by_handle_at`; `None` once that was refused.
    root_dir: Option<File>,
    /// The thread noting new cgroups; `None` where inotify cannot be had.
    watch: Option<super::cgroup_watch::Watch>,
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
            root_dir: root.as_deref().and_then(cgroup2_dir),
            watch: root.as_deref().and_then(super::cgroup_watch::Watch::start),
            root,
            paths: HashMap::new(),
            last_walk: None,
            truncated_walks: 0,
        }
    }

    /// Tell `f` the path of every cgroup made from now on, where new cgroups are watched.
    pub fn on_new(&self, f: super::cgroup_watch::OnNew) {
        if let Some(w) = &self.watch {
            w.on_new(f);
        }
    }

    /// The path of cgroup `id` as /proc/PID/cgroup writes it (`/system.slice/…`, `/` for the
    /// root), walking the hierarchy again when the id is new and the last walk is old enough.
    pub fn path_of(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.paths.get(&id) {
            return Some(p.clone());
        }
        if let Some(p) = self.watch.as_ref().and_then(|w| w.get(id)) {
            return Some(p);
        }
        let root = self.root.clone()?;
        if let Some(dir) = &self.root_dir {
            match by_handle(dir, &root, id) {
                Ok(found) => {
                    if let Some(path) = &found {
                        self.keep(id, path.clone());
                    }
                    return found;
                }
                // Not allowed here (no CAP_DAC_READ_SEARCH) or not supported: walk instead.
                Err(_) => self.root_dir = None,
            }
        }
        if self
            .last_walk
            .is_some_and(|t| t.elapsed() < Self::MIN_WALK_INTERVAL)
        {
            return None;
        }
        self.last_walk = Some(Instant::now());
        let (paths, truncated) = walk(&root);
        self.truncated_walks += u64::from(truncated);
        if self.paths.len() + paths.len() > Self::MAX_DIRS {
            self.paths.clear();
        }
        self.paths.extend(paths);
        self.paths.get(&id).cloned()
    }

    /// Walks that stopped at their bound, and cgroups the watching thread could not watch
    /// or keep.
    pub fn truncated(&self) -> u64 {
        self.truncated_walks + self.watch.as_ref().map_or(0, |w| w.truncated())
    }

    fn keep(&mut self, id: u64, path: String) {
        if self.paths.len() >= Self::MAX_DIRS {
            self.paths.clear();
        }
        self.paths.insert(id, path);
    }
}

/// `root`, open, when it is a cgroup v2 mount (whose directories' handles are their ids).
fn cgroup2_dir(root: &Path) -> Option<File> {
    let dir = File::open(root).ok()?;
    // SAFETY: `statfs` is plain data the call fills; the descriptor is open for the call.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let ok = unsafe { libc::fstatfs(dir.as_raw_fd(), &raw mut fs) } == 0;
    (ok && fs.f_type == libc::CGROUP2_SUPER_MAGIC).then_some(dir)
}

/// `FILEID_KERNFS`: the handle type of a kernfs node (a cgroup's directory), whose 8 bytes
/// are the node's id.
const FILEID_KERNFS: i32 = 0xfe;

/// A file handle with room for a kernfs id (`struct file_handle` with its bytes inline).
#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: [u8; 8],
}

/// The path under `root` of cgroup `id`, opened by its handle: `Ok(None)` when no such
/// cgroup is there (gone, or never was), `Err` when the kernel refuses handles here.
fn by_handle(root_dir: &File, root: &Path, id: u64) -> std::io::Result<Option<String>> {
    let mut handle = KernfsHandle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id: id.to_ne_bytes(),
    };
    // SAFETY: `handle` is a `struct file_handle` followed by its `handle_bytes` bytes, alive
    // for the call; the kernel only reads it. The returned descriptor is owned below.
    let fd = unsafe {
        libc::open_by_handle_at(
            root_dir.as_raw_fd(),
            (&raw mut handle).cast::<libc::file_handle>(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ESTALE | libc::ENOENT | libc::EINVAL) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: a descriptor the call above just opened, owned by nobody else.
    let dir = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let path = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
    Ok(path.strip_prefix(root).ok().map(|rel| {
        let rel = rel.to_string_lossy();
        if rel.is_empty() {
            "/".to_owned()
        } else {
            format!("/{rel}")
        }
    }))
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
        for name in super::cgroup_watch::subdirectories(&dir) {
            stack.push((dir.join(&name), format!("{rel}/{name}"), depth + 1));
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
        // The walk alone (no watching thread, and a temporary folder has no handles by id).
        paths.watch = None;
        assert!(paths.root_dir.is_none());
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
        let mut paths = CgroupPaths::new(Some(root.clone()));
        assert_eq!(paths.path_of(ino).as_deref(), Some(rel));
        // Found by its handle, not by a walk, so lookups in a row are not rate-limited.
        assert!(
            paths.root_dir.is_some(),
            "open_by_handle_at works here (root)"
        );
        assert!(paths.last_walk.is_none());
        let root_ino = std::fs::metadata(&root).unwrap().ino();
        assert_eq!(paths.path_of(root_ino).as_deref(), Some("/"));
        assert_eq!(paths.path_of(u64::MAX - 1), None);
        assert!(paths.root_dir.is_some());
    }

    #[test]
    fn a_removed_cgroup_found_before_stays_known() {
        let root = crate::kernel::cgroup::cgroup2_root().expect("the tests run on cgroup v2");
        let name = format!("sensord-test-{}", std::process::id());
        let dir = root.join(&name);
        std::fs::create_dir(&dir).expect("root may make a cgroup");
        let ino = std::fs::metadata(&dir).unwrap().ino();
        let mut paths = CgroupPaths::new(Some(root.clone()));
        let want = format!("/{name}");
        assert_eq!(paths.path_of(ino), Some(want.clone()));
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(paths.path_of(ino), Some(want));
        // A fresh table cannot find it any more: the handle is stale.
        let mut fresh = CgroupPaths::new(Some(root.clone()));
        assert_eq!(fresh.path_of(ino), None);
        // One that was there when it was made has it, though nobody asked in time.
        let dir = root.join(format!("{name}-late"));
        std::fs::create_dir(&dir).unwrap();
        let ino = std::fs::metadata(&dir).unwrap().ino();
        let deadline = Instant::now() + Duration::from_secs(5);
        while fresh.watch.as_ref().unwrap().get(ino).is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(fresh.path_of(ino), Some(format!("/{name}-late")));
        assert_eq!(fresh.truncated(), 0);
    }
}
