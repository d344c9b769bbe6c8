//! Which process is behind a handshake.
//!
//! The kernel reports a socket's owner when it connects ([`SocketOwner`]); [`Owners`] keeps the
//! recent ones by socket cookie (pure, bounded). [`Resolver`] turns a handshake's sockets into a
//! [`Process`]: from the connect-time owner when there is one, else from the pid the tap saw on
//! egress, else, for a local server's accepted socket, through sock_diag and /proc. The last two
//! read /proc ([`procfs`]) and netlink ([`sockdiag`]): they are the edge.
//!
//! A pid is reused once its process exits, so /proc details are tied to the process instance
//! (pid and start time): the connecting process's start time is read when its socket is
//! reported, and a process that has its pid later is not taken for it.

pub mod cgroup_watch;
pub mod cgroups;
pub mod container;
pub mod cri;
pub mod procfs;
pub mod sockdiag;

use std::{net::SocketAddr, num::NonZeroUsize};

use hashlink::LruCache;
use sensor_core::{
    capture::{LocalSocket, ring::SocketOwner},
    event::{Process, Role},
};
use sensor_host::probe::Netns;

/// The process behind a flow, and its network namespace when it is not sensord's (held open,
/// for the probe; never reported).
#[derive(Clone, Debug)]
pub struct Attributed {
    pub process: Process,
    pub netns: Option<Netns>,
}

/// A socket's owner as the kernel reported it, and the start time of that process when it
/// could be read at the time (`None`: it was already gone).
#[derive(Clone, Debug)]
pub struct Owner {
    pub owner: SocketOwner,
    pub start: Option<u64>,
    /// The owner's cgroup path from its cgroup id, when the process was gone before /proc
    /// could be read.
    pub cgroup: Option<String>,
}

/// Recent socket owners by cookie, bounded. Cookies are never reused while the system runs.
pub struct Owners {
    cache: LruCache<u64, Owner>,
}

impl Owners {
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            cache: LruCache::new(capacity.get()),
        }
    }

    pub fn insert(&mut self, owner: Owner) {
        self.cache.insert(owner.owner.cookie, owner);
    }

    pub fn get(&mut self, cookie: u64) -> Option<&Owner> {
        self.cache.get(&cookie)
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

/// Finds the process behind a handshake. Owns the caches; does I/O on cache misses.
pub struct Resolver {
    owners: Owners,
    procs: procfs::ProcCache,
    inodes: procfs::InodeIndex,
    cgroups: cgroups::CgroupPaths,
}

impl Default for Resolver {
    fn default() -> Self {
        Self::new()
    }
}

impl Resolver {
    /// Ask the container runtime's CRI socket about containers too.
    /// A container's cgroup is made before its first process runs: the runtime is asked
    /// then, so that its answer is in by the container's first event.
    pub fn set_cri(&mut self, cri: cri::Cri) {
        let asker = cri.asker();
        self.cgroups.on_new(Box::new(move |path: &str, owner: u32| {
            // A cgroup delegated to a user (owned by them) could be named after another's
            // container: only root's are asked about.
            if owner == 0
                && !path.split('/').any(|part| part.starts_with("user@"))
                && let Some(c) = container::from_cgroup(path)
            {
                asker.ask(&c);
            }
        }));
        self.procs.set_cri(cri);
    }

    pub fn new() -> Self {
        Self {
            owners: Owners::new(NonZeroUsize::new(65_536).unwrap_or(NonZeroUsize::MIN)),
            procs: procfs::ProcCache::new(4096),
            inodes: procfs::InodeIndex::default(),
            cgroups: cgroups::CgroupPaths::new(crate::kernel::cgroup::cgroup2_root().ok()),
        }
    }

    /// The kernel reported a socket's owner. Its /proc details are read now, while the
    /// process is most likely still alive (cached per process instance, so once per process),
    /// and its start time is kept with the owner. Returns the pid when the process was seen
    /// for the first time.
    pub fn on_socket(&mut self, owner: SocketOwner) -> Option<u32> {
        let warm = self.procs.warm(owner.pid);
        let start = warm.map(|(i, _)| i.start);
        let pid = owner.pid;
        // Gone already: its cgroup may still be there, and names its container.
        let cgroup = match (start, owner.cgroup_id) {
            (None, Some(id)) => self.cgroups.path_of(id),
            _ => None,
        };
        self.owners.insert(Owner {
            owner,
            start,
            cgroup,
        });
        warm.and_then(|(_, new)| new.then_some(pid))
    }

    /// The CRI lookups' counters (zeros without a CRI client).
    pub fn cri_counters(&self) -> [(&'static str, u64); 6] {
        self.procs.cri_counters()
    }

    /// Walks of the cgroup hierarchy that stopped at their bound, for the counters.
    pub fn cgroup_walks_truncated(&self) -> u64 {
        self.cgroups.truncated()
    }

    /// The process behind a flow: the client's if it is local, else the local server's.
    /// `client` and `server` are the flow's endpoints; `now_ns` rate-limits /proc scans.
    pub fn resolve(
        &mut self,
        client: Option<LocalSocket>,
        server: Option<(LocalSocket, SocketAddr, SocketAddr)>,
        now_ns: u64,
    ) -> Option<Attributed> {
        if let Some(sock) = client {
            if let Some(owner) = self.owners.get(sock.cookie).cloned() {
                return Some(self.owned_by(owner, Role::Client));
            }
            if let Some(pid) = sock.pid_hint {
                return Some(self.with_pid(pid, None, None, Role::Client));
            }
        }
        let (sock, local, remote) = server?;
        if let Some(owner) = self.owners.get(sock.cookie).cloned() {
            return Some(self.owned_by(owner, Role::Server));
        }
        let found = sockdiag::lookup(local, remote, sock.cookie).ok().flatten();
        let (uid, inode) = match found {
            Some(f) => (Some(f.uid), f.inode),
            None => (None, 0),
        };
        let pid = (inode != 0)
            .then(|| self.inodes.pid_of(inode, now_ns))
            .flatten()
            .or(sock.pid_hint);
        match pid {
            Some(pid) => Some(self.with_pid(pid, uid, None, Role::Server)),
            None => uid.map(|uid| Attributed {
                process: Process {
                    uid: Some(uid),
                    ..Process::new(Role::Server)
                },
                netns: None,
            }),
        }
    }

    /// The connect-time owner, with its details from /proc. The process name comes from
    /// /proc; the kernel's comm is the connecting thread's.
    fn owned_by(&mut self, owner: Owner, role: Role) -> Attributed {
        let Owner {
            owner,
            start,
            cgroup,
        } = owner;
        // Gone, and its cgroup not found when the socket was reported: look again.
        let cgroup = match (start, cgroup, owner.cgroup_id) {
            (None, None, Some(id)) => self.cgroups.path_of(id),
            (_, cgroup, _) => cgroup,
        };
        let mut a = match start {
            Some(start) => self.with_pid(owner.pid, Some(owner.uid), Some(start), role),
            // Gone before its socket was reported: whatever has its pid now is another
            // process, so only the kernel's word counts.
            None => Attributed {
                process: Process {
                    pid: Some(owner.pid),
                    uid: Some(owner.uid),
                    ..Process::new(role)
                },
                netns: None,
            },
        };
        a.process.comm = a.process.comm.or(Some(owner.comm));
        if let Some(cgroup) = cgroup {
            self.procs.fill_cgroup(&mut a.process, cgroup);
        }
        a
    }

    /// A process by pid, with its details from /proc when they are that process's: `start`
    /// when it is known, else whoever has the pid now.
    fn with_pid(
        &mut self,
        pid: u32,
        uid: Option<u32>,
        start: Option<u64>,
        role: Role,
    ) -> Attributed {
        let mut process = Process {
            pid: Some(pid),
            uid,
            ..Process::new(role)
        };
        let netns = self.procs.fill(&mut process, start);
        Attributed { process, netns }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(cookie: u64, pid: u32) -> SocketOwner {
        SocketOwner {
            cookie,
            pid,
            uid: 1000,
            comm: "kernel-comm".into(),
            cgroup_id: None,
        }
    }

    fn client(cookie: u64) -> Option<LocalSocket> {
        Some(LocalSocket {
            cookie,
            pid_hint: None,
        })
    }

    #[test]
    fn the_connecting_process_keeps_its_identity() {
        let mut r = Resolver::new();
        let pid = std::process::id();
        r.on_socket(owner(1, pid));
        let a = r.resolve(client(1), None, 0).unwrap();
        assert_eq!(a.process.pid, Some(pid));
        assert!(a.process.exe.is_some(), "alive: /proc details");
        assert_eq!(a.process.uid, Some(1000), "the kernel's uid first");
    }

    #[test]
    fn an_owner_gone_before_it_was_seen_gets_nothing_from_a_reused_pid() {
        let mut r = Resolver::new();
        // The kernel reported a socket of a process that had our pid and exited before its
        // start time could be read: /proc/OUR_PID is someone else now.
        r.owners.insert(Owner {
            owner: owner(2, std::process::id()),
            start: None,
            cgroup: None,
        });
        let a = r.resolve(client(2), None, 0).unwrap();
        assert_eq!(a.process.comm.as_deref(), Some("kernel-comm"));
        assert_eq!(a.process.uid, Some(1000));
        assert!(a.process.exe.is_none(), "{:?}", a.process);
        assert!(a.process.cgroup.is_none(), "{:?}", a.process);
    }

    #[test]
    fn an_owner_gone_before_it_was_read_is_placed_by_its_cgroup_id() {
        use std::os::unix::fs::MetadataExt;
        let root = crate::kernel::cgroup::cgroup2_root().unwrap();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let rel = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let id = std::fs::metadata(root.join(rel.trim_start_matches('/')))
            .unwrap()
            .ino();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let mut r = Resolver::new();
        r.on_socket(SocketOwner {
            cgroup_id: Some(id),
            ..owner(3, pid)
        });
        let a = r.resolve(client(3), None, 0).unwrap();
        assert_eq!(a.process.pid, Some(pid));
        assert!(a.process.exe.is_none(), "gone: {:?}", a.process);
        assert_eq!(a.process.cgroup.as_deref(), Some(rel), "{:?}", a.process);
    }
}
