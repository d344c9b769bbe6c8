//! Notes every cgroup v2 directory the moment it is made, with its id (the directory's inode
//! number) and path: inotify on each directory of the hierarchy, read by a thread of its own.
//!
//! A container's cgroup lives about as long as its process; podman removes it some 100 ms
//! after a short-lived client exits. The socket's owner is resolved by the daemon's main loop,
//! which may be busy (a new container's libraries being probed, a burst of handshakes) for
//! longer than that, and by then neither /proc nor the cgroup's directory is there. This
//! thread does nothing but this, so the path is known before it is needed. Removed cgroups
//! stay known for a while ([`MAX_REMOVED`]), for sockets resolved late.
//!
//! Bounded: at most [`MAX_WATCHES`] directories watched, and never more than a quarter of the
//! inotify watches root may hold (`fs.inotify.max_user_watches`), which systemd and other
//! services share; at most [`MAX_PATHS`] paths kept. What did not fit is counted (and looked
//! up another way, see `cgroups`).

use std::{
    collections::{HashMap, VecDeque},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use rustix::{
    fd::OwnedFd,
    fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags},
    io::Errno,
};

/// Directories watched at most (each costs the kernel about 1 KiB).
pub const MAX_WATCHES: usize = 65_536;

/// The watches this thread may take: [`MAX_WATCHES`], or a quarter of the per-user limit
/// when that is lower (`limit`: the contents of /proc/sys/fs/inotify/max_user_watches).
fn watch_limit(limit: Option<&str>) -> usize {
    limit
        .and_then(|l| l.trim().parse::<usize>().ok())
        .map_or(MAX_WATCHES, |l| (l / 4).min(MAX_WATCHES))
}
/// Paths kept at most, live and removed.
pub const MAX_PATHS: usize = 100_000;
/// Removed cgroups whose paths are kept, newest.
pub const MAX_REMOVED: usize = 4096;
const MAX_DEPTH: usize = 32;
/// How often the thread looks whether it is still wanted.
const POLL: Duration = Duration::from_millis(500);

/// Told the path and owner (uid) of each cgroup made while the watch runs (not of those
/// already there). Runs on the watching thread: it must not block.
pub type OnNew = Box<dyn Fn(&str, u32) + Send>;

/// What the thread found, shared with the resolver.
#[derive(Default)]
struct Seen {
    paths: HashMap<u64, String>,
    /// Ids of removed cgroups, oldest first.
    removed: VecDeque<u64>,
    /// Directories not watched or paths not kept because a bound was reached.
    truncated: u64,
    on_new: Option<OnNew>,
}

impl Seen {
    fn insert(&mut self, id: u64, path: String) {
        if self.paths.len() >= MAX_PATHS && !self.paths.contains_key(&id) {
            match self.removed.pop_front() {
                Some(old) => {
                    self.paths.remove(&old);
                }
                None => {
                    self.truncated += 1;
                    return;
                }
            }
        }
        self.paths.insert(id, path);
    }

    fn remove(&mut self, id: u64) {
        self.removed.push_back(id);
        if self.removed.len() > MAX_REMOVED
            && let Some(old) = self.removed.pop_front()
        {
            self.paths.remove(&old);
        }
    }
}

/// The watching thread's findings. The thread ends within [`POLL`] of this being dropped.
pub struct Watch {
    seen: Arc<Mutex<Seen>>,
    _thread: std::thread::JoinHandle<()>,
}

impl Watch {
    /// Watches the hierarchy at `root` (the paths already there are known when this returns).
    /// `None` when inotify or the thread cannot be had.
    pub fn start(root: &Path) -> Option<Self> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).ok()?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches").ok();
        let mut watcher = Watcher {
            fd,
            max_watches: watch_limit(limit.as_deref()),
            root: root.to_path_buf(),
            dirs: HashMap::new(),
            seen: Arc::downgrade(&seen),
        };
        watcher.add_tree("", false);
        let thread = std::thread::Builder::new()
            .name("cgroup-watch".into())
            .spawn(move || watcher.run())
            .ok()?;
        Some(Self {
            seen,
            _thread: thread,
        })
    }

    /// The path of cgroup `id` (`/…`, `/` for the root), if it was seen.
    pub fn get(&self, id: u64) -> Option<String> {
        lock(&self.seen).paths.get(&id).cloned()
    }

    /// Tell `f` the path of every cgroup made from now on (a container's, before its first
    /// process runs).
    pub fn on_new(&self, f: OnNew) {
        lock(&self.seen).on_new = Some(f);
    }

    /// Directories not watched or paths not kept for a bound.
    pub fn truncated(&self) -> u64 {
        lock(&self.seen).truncated
    }
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The thread's side.
struct Watcher {
    fd: OwnedFd,
    /// Watches taken at most (see [`watch_limit`]).
    max_watches: usize,
    root: PathBuf,
    /// Watch descriptor → the directory's path relative to the root (`""` for the root) and id.
    dirs: HashMap<i32, (String, u64)>,
    seen: Weak<Mutex<Seen>>,
}

impl Watcher {
    fn run(mut self) {
        let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 16 * 1024];
        loop {
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd, alive for the call.
            let _ = unsafe { libc::poll(&raw mut pfd, 1, POLL.as_millis() as i32) };
            if self.seen.strong_count() == 0 {
                return;
            }
            // Events are copied out of the buffer first: handling one adds watches.
            let mut events = Vec::new();
            let mut reader = inotify::Reader::new(&self.fd, &mut buf);
            loop {
                match reader.next() {
                    Ok(e) => events.push((
                        e.wd(),
                        e.events(),
                        e.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    )),
                    Err(Errno::INTR) => continue,
                    Err(_) => break,
                }
            }
            for (wd, flags, name) in events {
                self.on_event(wd, flags, &name);
            }
        }
    }

    fn on_event(&mut self, wd: i32, flags: ReadFlags, name: &str) {
        if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
            // Events were lost: look at the whole hierarchy again.
            self.add_tree("", false);
        } else if flags.contains(ReadFlags::IGNORED) {
            // The directory is gone (or its watch was dropped).
            if let Some((_, id)) = self.dirs.remove(&wd)
                && let Some(seen) = self.seen.upgrade()
            {
                lock(&seen).remove(id);
            }
        } else if flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO)
            && flags.contains(ReadFlags::ISDIR)
            && !name.is_empty()
            && let Some((parent, _)) = self.dirs.get(&wd)
        {
            let rel = format!("{parent}/{name}");
            self.add_tree(&rel, true);
        }
    }

    /// Watches `rel` and every directory under it, noting their paths (and telling
    /// [`Seen::on_new`] of them when `made`: they were just made). Each directory is watched
    /// before it is listed, so one made meanwhile is listed, reported, or both.
    fn add_tree(&mut self, rel: &str, made: bool) {
        let Some(seen) = self.seen.upgrade() else {
            return;
        };
        let mut stack = vec![(rel.to_owned(), rel.matches('/').count())];
        while let Some((rel, depth)) = stack.pop() {
            let dir = self.root.join(rel.trim_start_matches('/'));
            let watched = if self.dirs.len() < self.max_watches {
                inotify::add_watch(
                    &self.fd,
                    &dir,
                    WatchFlags::CREATE
                        | WatchFlags::MOVED_TO
                        | WatchFlags::ONLYDIR
                        | WatchFlags::DONT_FOLLOW,
                )
                .ok()
            } else {
                None
            };
            let Ok(meta) = std::fs::symlink_metadata(&dir) else {
                continue;
            };
            let shown = if rel.is_empty() {
                "/".to_owned()
            } else {
                rel.clone()
            };
            let mut s = lock(&seen);
            if watched.is_none() {
                s.truncated += 1;
            }
            if made && let Some(f) = &s.on_new {
                f(&shown, meta.uid());
            }
            s.insert(meta.ino(), shown);
            drop(s);
            if let Some(wd) = watched {
                self.dirs.insert(wd, (rel.clone(), meta.ino()));
            }
            if depth >= MAX_DEPTH {
                continue;
            }
            for name in subdirectories(&dir) {
                stack.push((format!("{rel}/{name}"), depth + 1));
            }
        }
    }
}

/// The names of the folders in `dir` (none when it cannot be read).
pub(super) fn subdirectories(dir: &Path) -> impl Iterator<Item = String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn until(what: impl Fn() -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if what() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn a_directory_made_and_removed_at_once_is_still_known() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let watch = Watch::start(dir.path()).unwrap();
        assert_eq!(watch.get(ino(dir.path())).as_deref(), Some("/"));
        assert_eq!(
            watch.get(ino(&dir.path().join("a/b"))).as_deref(),
            Some("/a/b")
        );
        // Made and removed before anyone asks: still found, by the id it had.
        let c = dir.path().join("a/b/c");
        std::fs::create_dir(&c).unwrap();
        let id = ino(&c);
        std::fs::create_dir(c.join("d")).unwrap();
        let d = ino(&c.join("d"));
        assert!(until(|| watch.get(d).is_some()), "a new directory is seen");
        std::fs::remove_dir(c.join("d")).unwrap();
        std::fs::remove_dir(&c).unwrap();
        assert_eq!(watch.get(id).as_deref(), Some("/a/b/c"));
        assert_eq!(watch.get(d).as_deref(), Some("/a/b/c/d"));
        assert!(
            until(|| lock(&watch.seen).removed.len() == 2),
            "removals are noted"
        );
        assert_eq!(watch.get(d).as_deref(), Some("/a/b/c/d"));
        assert_eq!(watch.truncated(), 0);
    }

    #[test]
    fn new_directories_are_announced_and_old_ones_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("old")).unwrap();
        let watch = Watch::start(dir.path()).unwrap();
        let told = Arc::new(Mutex::new(Vec::<(String, u32)>::new()));
        let sink = told.clone();
        watch.on_new(Box::new(move |p: &str, uid: u32| {
            sink.lock().unwrap().push((p.to_owned(), uid));
        }));
        std::fs::create_dir_all(dir.path().join("old/new/deeper")).unwrap();
        assert!(until(|| told.lock().unwrap().len() >= 2), "{told:?}");
        // A directory made while its parent is listed may be told twice.
        let told: std::collections::BTreeSet<(String, u32)> =
            told.lock().unwrap().iter().cloned().collect();
        let me = std::fs::metadata(dir.path()).unwrap().uid();
        assert_eq!(
            told.into_iter().collect::<Vec<_>>(),
            [
                ("/old/new".to_owned(), me),
                ("/old/new/deeper".to_owned(), me)
            ]
        );
    }

    #[test]
    fn a_quarter_of_the_users_watches_at_most() {
        assert_eq!(watch_limit(Some("8192\n")), 2048);
        assert_eq!(watch_limit(Some("1048576")), MAX_WATCHES);
        assert_eq!(watch_limit(Some("garbage")), MAX_WATCHES);
        assert_eq!(watch_limit(None), MAX_WATCHES);
        // Past the limit a directory is still noted, not watched, and counted.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut watcher = Watcher {
            fd: inotify::init(CreateFlags::CLOEXEC).unwrap(),
            max_watches: 1,
            root: dir.path().to_path_buf(),
            dirs: HashMap::new(),
            seen: Arc::downgrade(&seen),
        };
        watcher.add_tree("", false);
        assert_eq!(watcher.dirs.len(), 1);
        let s = lock(&seen);
        assert_eq!((s.paths.len(), s.truncated), (3, 2));
    }

    #[test]
    fn removed_paths_are_forgotten_oldest_first_beyond_the_bound() {
        let mut s = Seen::default();
        for id in 0..(MAX_REMOVED as u64 + 2) {
            s.insert(id, format!("/{id}"));
            s.remove(id);
        }
        assert!(!s.paths.contains_key(&0) && !s.paths.contains_key(&1));
        assert!(s.paths.contains_key(&2));
        assert_eq!(s.paths.len(), MAX_REMOVED);
        // Full of live paths: a new one is counted, not kept.
        let mut s = Seen::default();
        for id in 0..MAX_PATHS as u64 {
            s.insert(id, String::new());
        }
        s.insert(u64::MAX, String::new());
        assert_eq!((s.paths.len(), s.truncated), (MAX_PATHS, 1));
        s.remove(0);
        s.insert(u64::MAX, String::new());
        assert!(s.paths.contains_key(&u64::MAX) && !s.paths.contains_key(&0));
    }

    #[test]
    fn the_thread_ends_when_the_watch_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let Watch {
            seen,
            _thread: thread,
        } = Watch::start(dir.path()).unwrap();
        assert!(!thread.is_finished());
        drop(seen);
        assert!(until(|| thread.is_finished()), "the thread ended");
    }
}
