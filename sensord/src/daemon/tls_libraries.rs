//! Which TLS libraries this host's programs carry, and how each one's TLS 1.3 chains are
//! seen: read by a uprobe, or left to the active probe. Programs that bring their own
//! library are found as they start (the kernel's `process_exec`, read here) and when
//! sensord starts; the shared libraries are found in the usual folders, and as processes
//! that connect load them (`kernel::libraries`: containers' copies, upgraded files).

use std::{
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use sensor_common::ExecEvent;

use crate::{
    kernel::{
        HookStatus, KernelTap,
        executables::{Coverage, Executables},
        libraries::{self, Libraries, LibraryFile, SharedTls},
        uprobes,
    },
    status::{ChainSource, Shared, TlsLibrary},
};

/// The programs and libraries, and the ring that names programs as they start.
pub struct TlsLibraries {
    executables: Executables,
    libraries: Libraries,
    ring: Option<RingBuf<MapData>>,
    /// Look at running programs, and at new ones: the uprobes are on.
    enabled: bool,
    /// When the host's library files were last checked for an upgrade (seconds).
    checked_s: u64,
    /// Mount namespaces whose library folders were looked at (sensord's own first).
    roots: hashlink::LruCache<u64, ()>,
}

/// Mount namespaces remembered (containers running at once, and recent ones).
const ROOTS_KEPT: usize = 1024;

/// The mount namespace of a process, by inode.
fn mount_ns(pid: &str) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
}

/// How often the host's library files are checked for an upgrade on disk.
const CHECK_EVERY_S: u64 = 30;

impl TlsLibraries {
    /// Find the libraries and, with uprobes on, the running programs that carry their own.
    /// `extra`: the libraries the configuration names (`[uprobe] libraries`).
    pub fn start(tap: &mut KernelTap, uprobes_on: bool, extra: &[PathBuf], now_s: u64) -> Self {
        let hook = |name: &str, hooks: &[HookStatus]| {
            hooks.iter().find(|h| h.name == name).map_or_else(
                || Err("the uprobes are off".to_owned()),
                |h| {
                    if h.attached {
                        Ok(())
                    } else {
                        Err(h.detail.clone())
                    }
                },
            )
        };
        let mut libraries = Libraries::default();
        let (ssl, crypto) = uprobes::find_libraries(extra);
        for path in &ssl {
            libraries.add_host(
                LibraryFile::Tls(SharedTls::OpenSsl),
                path,
                Some(hook("ssl_handshake", tap.hooks()).and(hook("d2i_x509", tap.hooks()))),
            );
        }
        for path in &crypto {
            libraries.add_host(
                LibraryFile::Crypto,
                path,
                Some(hook("d2i_x509", tap.hooks())),
            );
        }
        for path in libraries::find_nss_libraries("libnss3.so") {
            libraries.add_host(LibraryFile::NssCerts, &path, Some(hook("nss", tap.hooks())));
        }
        for path in libraries::find_nss_libraries("libnssutil3.so") {
            libraries.add_host(LibraryFile::NssItems, &path, Some(hook("nss", tap.hooks())));
        }
        for (kind, path) in libraries::find_tls_libraries() {
            let attached = match kind {
                SharedTls::OpenSsl => Some(Err(
                    "not among the libraries the uprobes attached to".to_owned()
                )),
                SharedTls::GnuTls => Some(hook("gnutls", tap.hooks())),
                SharedTls::Nss => Some(hook("nss", tap.hooks())),
            };
            libraries.add_host(LibraryFile::Tls(kind), &path, attached);
        }
        let ring = tap.take_exec_ring();
        let mut this = Self {
            executables: Executables::new(),
            libraries,
            ring,
            enabled: uprobes_on,
            checked_s: now_s,
            roots: hashlink::LruCache::new(ROOTS_KEPT),
        };
        if let Some(own) = mount_ns("self") {
            this.roots.insert(own, ());
        }
        if uprobes_on {
            let own = crate::kernel::own_kernel_tgid();
            this.executables
                .scan_running(now_s, own, &mut |p, at| tap.attach_to_program(p, at));
        }
        this
    }

    /// Look at the programs that started since the last call.
    fn drain(&mut self, tap: &Mutex<KernelTap>, now_s: u64) {
        let Some(ring) = &mut self.ring else {
            return;
        };
        // At most a ring's worth at a time; the rest at the next wakeup or tick.
        let mut pids = Vec::new();
        while pids.len() < 8192
            && let Some(item) = ring.next()
        {
            if item.len() >= std::mem::size_of::<ExecEvent>() {
                // SAFETY: the kernel wrote an ExecEvent (checked length, unaligned read).
                let ev: ExecEvent =
                    unsafe { std::ptr::read_unaligned(item.as_ptr() as *const ExecEvent) };
                pids.push((ev.pid_tgid >> 32) as u32);
            }
        }
        tracing::debug!(count = pids.len(), "programs started");
        if !self.enabled {
            return;
        }
        let started = std::time::Instant::now();
        for pid in pids {
            // A process in a mount namespace not seen yet (a container's first): the OpenSSL
            // files of its root.
            if let Some(ns) = mount_ns(&pid.to_string())
                && self.roots.get(&ns).is_none()
            {
                self.roots.insert(ns, ());
                self.libraries.on_new_root(
                    pid,
                    now_s,
                    Some(&mut |file, path: &Path| lock(tap).attach_library(file, path)),
                );
            }
            self.executables.on_exec(pid, now_s, &mut |p: &Path, at| {
                lock(tap).attach_to_program(p, at)
            });
        }
        let took = started.elapsed();
        if took > Duration::from_millis(100) {
            tracing::debug!("looking at new programs took {took:?}");
        }
    }

    /// Processes that connected for the first time: the TLS libraries they loaded (a copy
    /// not covered yet gets the uprobes). Every second: the host's files, for an upgrade.
    fn on_processes(&mut self, pids: &[u32], tap: &Mutex<KernelTap>, now_s: u64) {
        let enabled = self.enabled;
        let mut attach = |file, path: &Path| lock(tap).attach_library(file, path);
        for &pid in pids {
            self.libraries
                .on_process(pid, now_s, enabled.then_some(&mut attach as _));
        }
        if now_s >= self.checked_s + CHECK_EVERY_S {
            self.checked_s = now_s;
            self.libraries
                .check_host_files(enabled.then_some(&mut attach as _));
        }
    }

    /// Each library and program, for status.
    pub fn status(&self, now_s: u64) -> Vec<TlsLibrary> {
        let mut out = Vec::new();
        // NSS's TLS part (libssl3) is listed; its certificates are made in the libnss3 of the
        // same folder, where the uprobe is.
        let nss_beside = |path: &str| {
            let dir = Path::new(path).parent();
            self.libraries.iter().any(|n| {
                n.file == LibraryFile::NssCerts
                    && matches!(n.attached, Some(Ok(())))
                    && Path::new(&n.path).parent() == dir
            })
        };
        for l in self.libraries.iter() {
            let LibraryFile::Tls(kind) = l.file else {
                continue;
            };
            let used = l.processes_last_hour(now_s);
            if l.replaced && used == 0 {
                continue;
            }
            let (chains, mut detail) = match (&l.attached, kind) {
                (Some(Ok(())), SharedTls::Nss) => (
                    ChainSource::Uprobe,
                    "uprobe on libnss3's CERT_NewTempCertificate".to_owned(),
                ),
                (None, SharedTls::Nss) if nss_beside(&l.path) => (
                    ChainSource::Uprobe,
                    "uprobe on the libnss3 beside it (CERT_NewTempCertificate)".to_owned(),
                ),
                (Some(Ok(())), SharedTls::GnuTls) => (
                    ChainSource::Uprobe,
                    "uprobes on gnutls_handshake, gnutls_certificate_verify_peers* and \
                     gnutls_x509_crt_import"
                        .to_owned(),
                ),
                (Some(Ok(())), _) => (
                    ChainSource::Uprobe,
                    "uprobes on SSL_do_handshake, SSL_connect and libcrypto's d2i_X509".to_owned(),
                ),
                (Some(Err(why)), _) => (ChainSource::ProbeOnly, format!("no uprobes: {why}")),
                (None, _) => (
                    ChainSource::ProbeOnly,
                    "no uprobe for this library yet: TLS 1.3 chains come from the active probe"
                        .to_owned(),
                ),
            };
            if l.replaced {
                detail.push_str("; replaced on disk since (processes still use this file)");
            } else if !l.host {
                detail.push_str(
                    "; a copy loaded by a process (a container's image, or a file the host's \
                     folders do not have)",
                );
            }
            out.push(TlsLibrary {
                library: kind.name().to_owned(),
                path: l.path.clone(),
                chains,
                processes_last_hour: Some(used),
                detail,
            });
        }
        for p in self.executables.programs() {
            out.push(TlsLibrary {
                library: p.tls.name().to_owned(),
                path: p.path.clone(),
                chains: match p.coverage {
                    Coverage::Uprobe => ChainSource::Uprobe,
                    Coverage::ProbeOnly => ChainSource::ProbeOnly,
                },
                processes_last_hour: Some(p.processes_last_hour(now_s) as u64),
                detail: p.detail.clone(),
            });
        }
        out
    }

    /// Programs looked at, for the counters.
    fn counters(&self, skipped: u64) -> [(&'static str, u64); 7] {
        let c = self.executables.counts();
        [
            ("processes_skipped_busy", skipped),
            ("programs_inspected", c.inspected),
            ("programs_gone_before_inspection", c.gone),
            ("programs_unreadable", c.unreadable),
            ("programs_too_large", c.skipped_large),
            ("tls_libraries_over_limit", self.libraries.over_limit),
            ("processes_gone_before_maps", self.libraries.gone),
        ]
    }

    /// Put the list and the counters where status and the metrics read them (after the
    /// pipeline's snapshot, which rewrites the counters).
    fn publish(&self, shared: &Shared, now_s: u64, skipped: u64) {
        if let Ok(mut l) = shared.tls_libraries.lock() {
            *l = self.status(now_s);
        }
        shared.set_engine_counters(self.counters(skipped).map(|(n, v)| (n.to_owned(), v)));
    }

    /// Runs the looking and attaching on a thread of its own, so the daemon's main loop
    /// (the ring buffer, the owners of sockets, the verdicts) never waits for it: probing a
    /// new container's library folders and attaching uprobes takes tens of milliseconds or
    /// more, and a short-lived client is gone from /proc by then. `tap` is shared with the
    /// main loop, locked only while a uprobe is attached.
    pub fn spawn(
        self,
        tap: Arc<Mutex<KernelTap>>,
        shared: Arc<Shared>,
        clock: crate::clock::Clock,
    ) -> std::io::Result<LibraryThread> {
        let (pids, rx) = mpsc::sync_channel(PID_BATCHES);
        // SAFETY: plain syscall; the descriptor is owned right after.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: just opened, owned by nobody else.
        let wake = Arc::new(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        let stop = Arc::new(AtomicBool::new(false));
        let skipped = Arc::new(AtomicU64::new(0));
        let thread = {
            let (wake, stop, skipped) = (wake.clone(), stop.clone(), skipped.clone());
            std::thread::Builder::new()
                .name("tls-libraries".into())
                .spawn(move || self.run(&tap, &rx, &wake, &stop, &skipped, &shared, clock))?
        };
        Ok(LibraryThread {
            pids,
            wake,
            stop,
            skipped,
            thread: Some(thread),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        mut self,
        tap: &Mutex<KernelTap>,
        pids: &mpsc::Receiver<Vec<u32>>,
        wake: &OwnedFd,
        stop: &AtomicBool,
        skipped: &AtomicU64,
        shared: &Shared,
        clock: crate::clock::Clock,
    ) {
        let secs = || clock.now_ns() / 1_000_000_000;
        self.publish(shared, secs(), 0);
        let mut last_tick = Instant::now();
        while !stop.load(Ordering::Acquire) {
            let wait = Duration::from_secs(1).saturating_sub(last_tick.elapsed());
            let mut fds = [
                libc::pollfd {
                    fd: wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.ring.as_ref().map_or(-1, |r| r.as_fd().as_raw_fd()),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two pollfds, alive for the call (a negative fd is ignored).
            let _ = unsafe { libc::poll(fds.as_mut_ptr(), 2, wait.as_millis() as i32) };
            let mut count = 0u64;
            // SAFETY: reads the eventfd's 8-byte count into a u64 (resets it).
            let _ = unsafe { libc::read(wake.as_raw_fd(), (&raw mut count).cast(), 8) };
            // New processes first: they may be short-lived.
            let new: Vec<u32> = pids.try_iter().flatten().collect();
            if !new.is_empty() {
                self.on_processes(&new, tap, secs());
            }
            self.drain(tap, secs());
            if last_tick.elapsed() >= Duration::from_secs(1) {
                last_tick = Instant::now();
                self.on_processes(&[], tap, secs());
                self.publish(shared, secs(), skipped.load(Ordering::Relaxed));
            }
        }
    }
}

/// Batches of new processes waiting for the library thread at most.
const PID_BATCHES: usize = 256;

fn lock(tap: &Mutex<KernelTap>) -> std::sync::MutexGuard<'_, KernelTap> {
    tap.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The library thread, from the main loop's side.
pub struct LibraryThread {
    pids: mpsc::SyncSender<Vec<u32>>,
    wake: Arc<OwnedFd>,
    stop: Arc<AtomicBool>,
    skipped: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LibraryThread {
    /// Processes that connected for the first time: the thread reads which TLS libraries
    /// they loaded. When it is that far behind, the batch is counted
    /// (`processes_skipped_busy`), not queued.
    pub fn on_processes(&self, pids: Vec<u32>) {
        if pids.is_empty() {
            return;
        }
        let n = pids.len() as u64;
        if self.pids.try_send(pids).is_err() {
            self.skipped.fetch_add(n, Ordering::Relaxed);
        }
        self.wake();
    }

    fn wake(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a u64 to the eventfd.
        let _ = unsafe { libc::write(self.wake.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Stops the thread and waits for it (it lets go of the tap).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        self.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
