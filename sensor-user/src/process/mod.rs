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

use crate::{capture::kernel::SocketOwner, event::Process};

/// A network namespace other than sensord's, held open: a process's namespace outlives the
/// process for as long as this handle lives, so a probe can still take the client's path
/// after a short-lived client exits. Equal by namespace inode.
#[derive(Clone, Debug)]
pub struct Netns {
    pub inode: u64,
    pub fd: std::sync::Arc<std::os::fd::OwnedFd>,
}

impl PartialEq for Netns {
    fn eq(&self, other: &Self) -> bool {
        self.inode == other.inode
    }
}

impl Eq for Netns {}

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

/// One local socket of a flow, as the capture saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalSocket {
    pub cookie: u64,
    /// The pid the tap saw on this socket's first egress segment.
    pub pid_hint: Option<u32>,
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
    ) -> Option<Process> {
        if let Some(sock) = client {
            if let Some(owner) = self.owners.get(sock.cookie).cloned() {
                let mut p = Process {
                    pid: Some(owner.pid),
                    uid: Some(owner.uid),
                    role: Some("client"),
                    ..Process::default()
                };
                // The process name from /proc; the kernel's comm is the connecting thread's.
                self.procs.fill(&mut p);
                p.comm = p.comm.or(Some(owner.comm));
                return Some(p);
            }
            if let Some(pid) = sock.pid_hint {
                let mut p = Process {
                    pid: Some(pid),
                    role: Some("client"),
                    ..Process::default()
                };
                self.procs.fill(&mut p);
                return Some(p);
            }
        }
        let (sock, local, remote) = server?;
        if let Some(owner) = self.owners.get(sock.cookie).cloned() {
            let mut p = Process {
                pid: Some(owner.pid),
                uid: Some(owner.uid),
                role: Some("server"),
                ..Process::default()
            };
            self.procs.fill(&mut p);
            p.comm = p.comm.or(Some(owner.comm));
            return Some(p);
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
        let mut p = Process {
            pid,
            uid,
            role: Some("server"),
            ..Process::default()
        };
        if pid.is_none() && uid.is_none() {
            return None;
        }
        self.procs.fill(&mut p);
        Some(p)
    }
}
