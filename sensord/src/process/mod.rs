//! Which process is behind a handshake.
//!
//! The kernel reports a socket's owner when it connects ([`SocketOwner`]); [`Owners`] keeps the
//! recent ones by socket cookie (pure, bounded). [`Resolver`] turns a handshake's sockets into a
//! [`Process`]: from the connect-time owner when there is one, else from the pid the tap saw on
//! egress, else, for a local server's accepted socket, through sock_diag and /proc. The last two
//! read /proc ([`procfs`]) and netlink ([`sockdiag`]): they are the edge.

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

/// Recent socket owners by cookie, bounded.
pub struct Owners {
    cache: LruCache<u64, SocketOwner>,
}

impl Owners {
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            cache: LruCache::new(capacity.get()),
        }
    }

    pub fn insert(&mut self, owner: SocketOwner) {
        self.cache.insert(owner.cookie, owner);
    }

    pub fn get(&mut self, cookie: u64) -> Option<&SocketOwner> {
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
}

impl Default for Resolver {
    fn default() -> Self {
        Self::new()
    }
}

impl Resolver {
    pub fn new() -> Self {
        Self {
            owners: Owners::new(NonZeroUsize::new(65_536).unwrap_or(NonZeroUsize::MIN)),
            procs: procfs::ProcCache::new(4096),
            inodes: procfs::InodeIndex::default(),
        }
    }

    /// The kernel reported a socket's owner. Its /proc details are read now, while the
    /// process is most likely still alive (cached per pid, so once per process).
    pub fn on_socket(&mut self, owner: SocketOwner) {
        self.procs.warm(owner.pid);
        self.owners.insert(owner);
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
                return Some(self.with_pid(pid, None, Role::Client));
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
            Some(pid) => Some(self.with_pid(pid, uid, Role::Server)),
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
    fn owned_by(&mut self, owner: SocketOwner, role: Role) -> Attributed {
        let mut a = self.with_pid(owner.pid, Some(owner.uid), role);
        a.process.comm = a.process.comm.or(Some(owner.comm));
        a
    }

    fn with_pid(&mut self, pid: u32, uid: Option<u32>, role: Role) -> Attributed {
        let mut process = Process {
            pid: Some(pid),
            uid,
            ..Process::new(role)
        };
        let netns = self.procs.fill(&mut process);
        Attributed { process, netns }
    }
}
