//! Process details from /proc, through the procfs crate. An edge: reads files.
//!
//! A pid names a process only until it exits: the kernel hands it out again. Everything cached
//! here is therefore keyed by the process *instance*, its pid with its start time (field 22
//! of /proc/PID/stat, clock ticks after boot), or checked against /proc when used, so that a
//! new process with an old pid never inherits the old one's name, executable, uid, cgroup or
//! namespace.

use std::collections::HashMap;

use hashlink::LruCache;
use procfs::process::FDTarget;

use super::container::{Names, Stores};

use sensor_core::event::{Container, Process};
use sensor_host::probe::Netns;

/// One process: its pid and its start time. A pid is reused; the pair is not while the
/// system runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Instance {
    pub pid: u32,
    /// Clock ticks after boot (/proc/PID/stat field 22).
    pub start: u64,
}

/// The start time in a /proc/PID/stat line: field 22. The name (field 2) is in parentheses
/// and may hold spaces and parentheses itself, so fields are counted after the last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // After the name: field 3 (state) is the first, so field 22 is the 20th.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// The start time of the process that has `pid` now, if there is one.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// What /proc tells about a process, cached.
#[derive(Clone, Debug, Default)]
struct ProcInfo {
    comm: Option<String>,
    exe: Option<String>,
    uid: Option<u32>,
    cgroup: Option<String>,
    container_id: Option<String>,
    container: Option<Container>,
    netns: Option<Netns>,
}

/// Process instance -> details, bounded. An instance's details are read once.
pub struct ProcCache {
    cache: LruCache<Instance, ProcInfo>,
    namespaces: Namespaces,
    containers: Names,
}

/// Network namespaces other than ours, open, shared by the processes in them (bounded).
struct Namespaces {
    own: Option<u64>,
    open: LruCache<u64, Netns>,
}

impl Namespaces {
    const CAPACITY: usize = 256;

    fn new() -> Self {
        Self {
            own: inode("/proc/self/ns/net"),
            open: LruCache::new(Self::CAPACITY),
        }
    }

    /// The namespace of `pid` if it is not ours. Opened while the process lives.
    fn of(&mut self, pid: u32) -> Option<Netns> {
        let path = format!("/proc/{pid}/ns/net");
        let ino = inode(&path)?;
        if Some(ino) == self.own {
            return None;
        }
        if let Some(ns) = self.open.get(&ino) {
            return Some(ns.clone());
        }
        let file = std::fs::File::open(&path).ok()?;
        // The namespace may have changed between the stat and the open.
        let opened = file
            .metadata()
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        if opened != Some(ino) {
            return None;
        }
        let ns = Netns {
            inode: ino,
            fd: std::sync::Arc::new(file.into()),
        };
        self.open.insert(ino, ns.clone());
        Some(ns)
    }
}

fn inode(path: &str) -> Option<u64> {
    std::fs::metadata(path)
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
}

impl ProcCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            cache: LruCache::new(capacity.max(1)),
            namespaces: Namespaces::new(),
            containers: Names::new(Stores::default())
                .with_cgroup_root(crate::kernel::cgroup::cgroup2_root().ok()),
        }
    }

    /// Ask the container runtime's CRI socket too.
    pub fn set_cri(&mut self, cri: super::cri::Cri) {
        self.containers.set_cri(cri);
    }

    /// The CRI lookups' counters.
    pub fn cri_counters(&self) -> [(&'static str, u64); 6] {
        self.containers
            .cri()
            .map(|c| c.stats().counters())
            .unwrap_or([
                ("cri_lookups", 0),
                ("cri_described", 0),
                ("cri_unknown", 0),
                ("cri_failures", 0),
                ("cri_questions_dropped", 0),
                ("cri_answers_refused", 0),
            ])
    }

    /// Read and cache the details of the process that has `pid` now, if they are not cached
    /// yet, and say which instance it is (`None`: no such process any more) and whether its
    /// details were read now (the first time it was seen).
    pub fn warm(&mut self, pid: u32) -> Option<(Instance, bool)> {
        let instance = Instance {
            pid,
            start: start_time(pid)?,
        };
        let mut new = false;
        if self.cache.get(&instance).is_none()
            && let Some(info) = self.read(instance)
            && info.exe.is_some()
        {
            self.cache.insert(instance, info);
            new = true;
        }
        Some((instance, new))
    }

    /// Fill in what `p` lacks from /proc/PID, and say which network namespace it is in when
    /// that is not sensord's. `start` is the start time of the process meant, when known
    /// (read while it connected); otherwise the process that has the pid now is taken. Fields
    /// that cannot be read (the process is gone, the pid is another process's now, or /proc is
    /// hidden) stay empty.
    pub fn fill(&mut self, p: &mut Process, start: Option<u64>) -> Option<Netns> {
        let pid = p.pid?;
        let instance = Instance {
            pid,
            start: start.or_else(|| start_time(pid))?,
        };
        let info = match self.cache.get(&instance) {
            Some(info) => info.clone(),
            None => {
                let info = self.read(instance)?;
                if info.exe.is_some() {
                    self.cache.insert(instance, info.clone());
                }
                info
            }
        };
        p.comm = p.comm.take().or(info.comm);
        p.exe = p.exe.take().or(info.exe);
        p.uid = p.uid.or(info.uid);
        p.cgroup = p.cgroup.take().or(info.cgroup);
        p.container_id = p.container_id.take().or(info.container_id);
        p.container = p.container.take().or(info.container);
        // A name the records did not have when the process was first read may be there now.
        if let (Some(c), Some(cgroup)) = (p.container.as_mut(), p.cgroup.as_deref())
            && self.containers.incomplete(c)
        {
            self.containers.name(c, cgroup);
        }
        info.netns
    }

    /// Fill in `p`'s cgroup, and the container it names, from a cgroup path found another way
    /// (its cgroup id), when /proc gave none.
    pub fn fill_cgroup(&mut self, p: &mut Process, cgroup: String) {
        if p.cgroup.is_some() {
            return;
        }
        p.container_id = p.container_id.take().or_else(|| container_id(&cgroup));
        if p.container.is_none()
            && let Some(mut c) = super::container::from_cgroup(&cgroup)
        {
            self.containers.name(&mut c, &cgroup);
            p.container = Some(c);
        }
        p.cgroup = Some(cgroup);
    }

    /// The details of `instance`, if the process with its pid is still that one: checked
    /// before and after reading, so that nothing read belongs to a process that took the pid
    /// meanwhile.
    fn read(&mut self, instance: Instance) -> Option<ProcInfo> {
        if start_time(instance.pid) != Some(instance.start) {
            return None;
        }
        let mut info = read(instance.pid);
        if info.exe.is_some() {
            info.netns = self.namespaces.of(instance.pid);
        }
        if let (Some(c), Some(cgroup)) = (info.container.as_mut(), info.cgroup.as_deref()) {
            self.containers.name(c, cgroup);
        }
        (start_time(instance.pid) == Some(instance.start)).then_some(info)
    }

    /// Cache details for an instance, as if read (tests).
    #[cfg(test)]
    fn plant(&mut self, instance: Instance, comm: &str) {
        let info = ProcInfo {
            comm: Some(comm.into()),
            exe: Some(format!("/planted/{comm}")),
            uid: Some(4242),
            ..ProcInfo::default()
        };
        self.cache.insert(instance, info);
    }
}

fn read(pid: u32) -> ProcInfo {
    let Ok(proc) = procfs::process::Process::new(pid as i32) else {
        return ProcInfo::default();
    };
    let cgroup = proc.cgroups().ok().and_then(|groups| {
        groups
            .into_iter()
            .find(|g| g.hierarchy == 0)
            .map(|g| g.pathname)
    });
    ProcInfo {
        comm: proc.stat().ok().map(|s| s.comm),
        exe: proc.exe().ok().map(|e| e.display().to_string()),
        uid: proc.uid().ok(),
        container_id: cgroup.as_deref().and_then(container_id),
        container: cgroup.as_deref().and_then(super::container::from_cgroup),
        cgroup,
        netns: None,
    }
}

/// The container id in a cgroup path: docker, containerd/CRI, podman and systemd scopes put a
/// 64-hex-digit id in the last components.
pub fn container_id(cgroup: &str) -> Option<String> {
    cgroup.rsplit('/').find_map(|part| {
        let part = part.strip_suffix(".scope").unwrap_or(part);
        let id = part.rsplit(['-', ':']).next().unwrap_or(part);
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
    })
}

/// Socket inode -> (pid, fd), built by scanning /proc/*/fd, at most once a second. An entry is
/// checked when used (the fd still links to that socket): since the scan, the socket may have
/// closed, its inode gone to another socket, or its pid to another process.
#[derive(Default)]
pub struct InodeIndex {
    map: HashMap<u64, (u32, i32)>,
    last_scan_ns: Option<u64>,
}

impl InodeIndex {
    const MIN_SCAN_INTERVAL_NS: u64 = 1_000_000_000;
    const MAX_ENTRIES: usize = 1 << 20;

    /// The pid holding a socket inode, rescanning /proc if the inode is unknown (or its entry
    /// out of date) and the last scan is old enough.
    pub fn pid_of(&mut self, inode: u64, now_ns: u64) -> Option<u32> {
        if let Some(&(pid, fd)) = self.map.get(&inode) {
            if holds(pid, fd, inode) {
                return Some(pid);
            }
            self.map.remove(&inode);
        }
        let due = self
            .last_scan_ns
            .is_none_or(|t| now_ns.saturating_sub(t) >= Self::MIN_SCAN_INTERVAL_NS);
        if !due {
            return None;
        }
        self.last_scan_ns = Some(now_ns);
        self.scan();
        self.map.get(&inode).map(|&(pid, _)| pid)
    }

    fn scan(&mut self) {
        self.map.clear();
        let Ok(all) = procfs::process::all_processes() else {
            return;
        };
        for proc in all.flatten() {
            let Ok(fds) = proc.fd() else { continue };
            for fd in fds.flatten() {
                if let FDTarget::Socket(inode) = fd.target
                    && self.map.len() < Self::MAX_ENTRIES
                {
                    self.map.entry(inode).or_insert((proc.pid as u32, fd.fd));
                }
            }
        }
    }
}

/// Whether `pid`'s file descriptor `fd` is the socket `inode` now.
fn holds(pid: u32, fd: i32, inode: u64) -> bool {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .is_ok_and(|target| target.as_os_str() == format!("socket:[{inode}]").as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_from_cgroup_paths() {
        let id = "a".repeat(64);
        assert_eq!(
            container_id(&format!("/system.slice/docker-{id}.scope")),
            Some(id.clone())
        );
        assert_eq!(
            container_id(&format!("/kubepods/burstable/pod1/{id}")),
            Some(id.clone())
        );
        assert_eq!(container_id(&format!("/cri-containerd:{id}")), Some(id));
        assert_eq!(container_id("/user.slice/user-1000.slice"), None);
    }

    #[test]
    fn reads_this_process() {
        let mut cache = ProcCache::new(4);
        let mut p = Process {
            pid: Some(std::process::id()),
            ..Process::new(sensor_core::event::Role::Client)
        };
        // Our own namespace is not reported.
        assert!(cache.fill(&mut p, None).is_none());
        assert!(p.comm.is_some());
        assert!(p.exe.is_some());
        assert!(p.uid.is_some());
    }

    #[test]
    fn start_times_from_stat_lines() {
        let line = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 200 18446744073709551615";
        assert_eq!(parse_start_time(line), Some(987_654));
        assert_eq!(parse_start_time("4242 (short) S 1 2"), None);
        assert_eq!(parse_start_time("no parenthesis"), None);
        assert!(start_time(std::process::id()).is_some());
    }

    #[test]
    fn a_reused_pid_does_not_inherit_the_old_process_details() {
        let pid = std::process::id();
        let start = start_time(pid).unwrap();
        let mut cache = ProcCache::new(4);
        // Details cached for an earlier process that had our pid (it started earlier).
        cache.plant(
            Instance {
                pid,
                start: start.saturating_sub(1),
            },
            "old-process",
        );
        let mut p = Process {
            pid: Some(pid),
            ..Process::new(sensor_core::event::Role::Client)
        };
        cache.fill(&mut p, None);
        assert_ne!(p.comm.as_deref(), Some("old-process"));
        assert_ne!(p.uid, Some(4242));
        assert!(p.exe.is_some_and(|e| !e.starts_with("/planted/")));

        // An event of that earlier process, whose pid is ours now: nothing from /proc (it
        // would be ours), only what the event had.
        let mut old = Process {
            pid: Some(pid),
            ..Process::new(sensor_core::event::Role::Client)
        };
        let mut fresh = ProcCache::new(4);
        fresh.fill(&mut old, Some(start.saturating_sub(1)));
        assert!(old.comm.is_none() && old.exe.is_none() && old.uid.is_none());

        // The same instance again: the cache answers.
        let mut again = Process {
            pid: Some(pid),
            ..Process::new(sensor_core::event::Role::Client)
        };
        cache.plant(Instance { pid, start }, "cached");
        cache.fill(&mut again, Some(start));
        assert_eq!(again.comm.as_deref(), Some("cached"));
    }

    #[test]
    fn a_closed_socket_is_no_longer_found_by_its_inode() {
        use std::os::fd::AsRawFd as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", listener.as_raw_fd()))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap();
        let mut index = InodeIndex::default();
        assert_eq!(index.pid_of(inode, 0), Some(std::process::id()));
        drop(listener);
        // Within the second, no rescan: the stale entry must not answer.
        assert_eq!(index.pid_of(inode, 1), None);
    }

    #[test]
    fn finds_the_inode_of_our_own_socket() {
        use std::os::fd::AsRawFd as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", listener.as_raw_fd()))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap();
        let mut index = InodeIndex::default();
        assert_eq!(index.pid_of(inode, 0), Some(std::process::id()));
    }
}
