//! Process details from /proc, through the procfs crate. An edge: reads files.

use std::collections::HashMap;

use hashlink::LruCache;
use procfs::process::FDTarget;

use sensor_core::event::Process;
use sensor_host::probe::Netns;

/// What /proc tells about a pid, cached.
#[derive(Clone, Debug, Default)]
struct ProcInfo {
    comm: Option<String>,
    exe: Option<String>,
    uid: Option<u32>,
    cgroup: Option<String>,
    container_id: Option<String>,
    netns: Option<Netns>,
}

/// pid -> details, bounded. A pid's details are read once; a reused pid may show stale details
/// until it falls out of the cache, which is acceptable for attribution.
pub struct ProcCache {
    cache: LruCache<u32, ProcInfo>,
    namespaces: Namespaces,
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
        }
    }

    /// Read and cache a pid's details now, if they are not cached yet.
    pub fn warm(&mut self, pid: u32) {
        if self.cache.get(&pid).is_none() {
            let info = self.read(pid);
            if info.exe.is_some() {
                self.cache.insert(pid, info);
            }
        }
    }

    /// Fill in what `p` lacks from /proc/PID, and say which network namespace it is in when
    /// that is not sensord's. Fields that cannot be read (the process is gone, or /proc is
    /// hidden) stay empty.
    pub fn fill(&mut self, p: &mut Process) -> Option<Netns> {
        let pid = p.pid?;
        let info = match self.cache.get(&pid) {
            Some(info) => info.clone(),
            None => {
                let info = self.read(pid);
                if info.exe.is_some() {
                    self.cache.insert(pid, info.clone());
                }
                info
            }
        };
        p.comm = p.comm.take().or(info.comm);
        p.exe = p.exe.take().or(info.exe);
        p.uid = p.uid.or(info.uid);
        p.cgroup = p.cgroup.take().or(info.cgroup);
        p.container_id = p.container_id.take().or(info.container_id);
        info.netns
    }

    fn read(&mut self, pid: u32) -> ProcInfo {
        let mut info = read(pid);
        if info.exe.is_some() {
            info.netns = self.namespaces.of(pid);
        }
        info
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

/// Socket inode -> pid, built by scanning /proc/*/fd, at most once a second.
#[derive(Default)]
pub struct InodeIndex {
    map: HashMap<u64, u32>,
    last_scan_ns: Option<u64>,
}

impl InodeIndex {
    const MIN_SCAN_INTERVAL_NS: u64 = 1_000_000_000;
    const MAX_ENTRIES: usize = 1 << 20;

    /// The pid holding a socket inode, rescanning /proc if the inode is unknown and the last
    /// scan is old enough.
    pub fn pid_of(&mut self, inode: u64, now_ns: u64) -> Option<u32> {
        if let Some(pid) = self.map.get(&inode) {
            return Some(*pid);
        }
        let due = self
            .last_scan_ns
            .is_none_or(|t| now_ns.saturating_sub(t) >= Self::MIN_SCAN_INTERVAL_NS);
        if !due {
            return None;
        }
        self.last_scan_ns = Some(now_ns);
        self.scan();
        self.map.get(&inode).copied()
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
                    self.map.entry(inode).or_insert(proc.pid as u32);
                }
            }
        }
    }
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
        assert!(cache.fill(&mut p).is_none());
        assert!(p.comm.is_some());
        assert!(p.exe.is_some());
        assert!(p.uid.is_some());
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
