//! Which TLS libraries this host's programs carry, and how each one's TLS 1.3 chains are
//! seen: read by a uprobe, or left to the active probe. Programs that bring their own
//! library are found as they start (the kernel's `process_exec`, read here) and when
//! sensord starts; the shared libraries are found in the usual folders.

use std::{path::Path, time::Duration};

use aya::maps::{MapData, RingBuf};
use sensor_common::ExecEvent;
use tokio::io::unix::AsyncFd;

use crate::{
    kernel::{
        HookStatus, KernelTap,
        executables::{Coverage, Executables},
        uprobes::{self, SharedTls},
    },
    status::{ChainSource, Shared, TlsLibrary},
};

/// The programs and libraries, and the ring that names programs as they start.
pub struct TlsLibraries {
    executables: Executables,
    shared: Vec<(SharedTls, String)>,
    /// The OpenSSL uprobes are attached to the system's libraries.
    openssl_attached: bool,
    ring: Option<AsyncFd<RingBuf<MapData>>>,
    /// Look at running programs, and at new ones: the uprobes are on.
    enabled: bool,
}

impl TlsLibraries {
    /// Find the libraries and, with uprobes on, the running programs that carry their own.
    pub fn start(tap: &mut KernelTap, uprobes_on: bool, now_s: u64) -> Self {
        let attached =
            |name: &str, hooks: &[HookStatus]| hooks.iter().any(|h| h.name == name && h.attached);
        let openssl_attached = attached("d2i_x509", tap.hooks());
        let ring = tap.take_exec_ring().and_then(|ring| {
            // SAFETY: the AsyncFd owns the RingBuf, which owns the fd.
            match unsafe { AsyncFd::register(ring) } {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::warn!(
                        "polling the exec ring buffer: {e}; new programs are not looked at"
                    );
                    None
                }
            }
        });
        let mut this = Self {
            executables: Executables::new(),
            shared: uprobes::find_tls_libraries()
                .into_iter()
                .map(|(k, p)| (k, p.display().to_string()))
                .collect(),
            openssl_attached,
            ring,
            enabled: uprobes_on,
        };
        if uprobes_on {
            let own = crate::kernel::own_kernel_tgid();
            this.executables
                .scan_running(now_s, own, &mut |p, at| tap.attach_to_program(p, at));
        }
        this
    }

    /// Wait until the kernel named a program that started (forever when it cannot).
    pub async fn readable(&mut self) {
        match &mut self.ring {
            Some(ring) => match ring.readable_mut().await {
                Ok(mut guard) => guard.clear_ready(),
                Err(e) => {
                    tracing::warn!(
                        "the exec ring buffer failed: {e}; new programs are not looked at"
                    );
                    self.ring = None;
                }
            },
            None => std::future::pending::<()>().await,
        }
    }

    /// Look at the programs that started since the last call.
    pub fn drain(&mut self, tap: &mut KernelTap, now_s: u64) {
        let Some(ring) = &mut self.ring else {
            return;
        };
        // At most a ring's worth at a time; the rest at the next wakeup or tick.
        let mut pids = Vec::new();
        let ring = ring.get_mut();
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
            self.executables
                .on_exec(pid, now_s, &mut |p: &Path, at| tap.attach_to_program(p, at));
        }
        let took = started.elapsed();
        if took > Duration::from_millis(100) {
            tracing::debug!("looking at new programs took {took:?}");
        }
    }

    /// Each library and program, for status.
    pub fn status(&self, now_s: u64) -> Vec<TlsLibrary> {
        let mut out = Vec::new();
        for (kind, path) in &self.shared {
            let (chains, detail) = match kind {
                SharedTls::OpenSsl if self.openssl_attached => (
                    ChainSource::Uprobe,
                    "uprobes on SSL_do_handshake, SSL_connect and libcrypto's d2i_X509".to_owned(),
                ),
                SharedTls::OpenSsl => (
                    ChainSource::ProbeOnly,
                    "the uprobes did not attach (see the hooks)".to_owned(),
                ),
                SharedTls::GnuTls | SharedTls::Nss => (
                    ChainSource::ProbeOnly,
                    "no uprobe for this library yet: TLS 1.3 chains come from the active probe"
                        .to_owned(),
                ),
            };
            out.push(TlsLibrary {
                library: kind.name().to_owned(),
                path: path.clone(),
                chains,
                processes_last_hour: None,
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
    fn counters(&self) -> [(&'static str, u64); 4] {
        let c = self.executables.counts();
        [
            ("programs_inspected", c.inspected),
            ("programs_gone_before_inspection", c.gone),
            ("programs_unreadable", c.unreadable),
            ("programs_too_large", c.skipped_large),
        ]
    }

    /// Put the list and the counters where status and the metrics read them (after the
    /// pipeline's snapshot, which rewrites the counters).
    pub fn publish(&self, shared: &Shared, now_s: u64) {
        if let Ok(mut l) = shared.tls_libraries.lock() {
            *l = self.status(now_s);
        }
        if let Ok(mut e) = shared.engine_counters.lock() {
            e.extend(self.counters().map(|(n, v)| (n.to_owned(), v)));
        }
    }
}
