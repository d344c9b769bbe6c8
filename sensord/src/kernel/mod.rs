//! The kernel programs: load the eBPF object, configure it, attach the tap (cgroup_skb), the
//! attribution tracepoint and the uprobes, and hand out the ring buffer. The records are
//! decoded by `sensor_core::capture::ring`.
//!
//! Programs detach when [`KernelTap`] is dropped: aya owns every link and closes it on drop.

pub mod cgroup;
pub mod executables;
mod hooks;
pub mod libraries;
pub mod uprobes;

use std::{os::fd::AsFd, path::PathBuf};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType},
};
use sensor_common::{TapConfig, counter};

pub use hooks::HookStatus;

/// The eBPF object built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor"));

/// Errors of loading and attaching the kernel programs.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(
        "this binary was built with AYA_BUILD_SKIP=1 and carries no kernel programs; rebuild without it"
    )]
    NoObject,
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("{what}: {error}")]
    Program {
        what: String,
        error: aya::programs::ProgramError,
    },
    #[error("{what}: {error}")]
    Map {
        what: &'static str,
        error: aya::maps::MapError,
    },
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("opening the cgroup root {path}: {error}")]
    OpenCgroup {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Settings of the tap.
#[derive(Clone, Debug, Default)]
pub struct TapSettings {
    /// Tunables for the kernel programs.
    pub config: TapConfig,
    /// Attach here instead of the cgroup v2 root found in /proc/self/mountinfo.
    pub cgroup: Option<PathBuf>,
    /// Ring buffer size in bytes (a power of two multiple of the page size); `None` keeps the
    /// object's 16 MiB.
    pub ring_bytes: Option<u32>,
    /// Attach the OpenSSL uprobes, to the system's libraries and these (files or folders).
    /// `None`: do not.
    pub uprobes: Option<Vec<PathBuf>>,
    /// Also read the head of the first request local OpenSSL servers read on inbound TLS
    /// connections (`SSL_read`, with `tp_btf/sock_recv_length` to name the socket).
    pub request_heads: bool,
}

/// The loaded and attached kernel programs.
pub struct KernelTap {
    ebpf: Ebpf,
    hooks: Vec<HookStatus>,
}

impl KernelTap {
    /// Load the object, configure it, and attach the tap programs to the cgroup v2 root.
    pub fn start(settings: &TapSettings) -> Result<Self, TapError> {
        if OBJECT.is_empty() {
            return Err(TapError::NoObject);
        }
        raise_memlock_limit();
        let mut loader = EbpfLoader::new();
        if let Some(bytes) = settings.ring_bytes {
            loader.map_max_entries("EVENTS", bytes);
        }
        let mut ebpf = loader.load(OBJECT)?;

        let hierarchy_root = cgroup::cgroup2_root()?;
        let root = settings
            .cgroup
            .clone()
            .unwrap_or_else(|| hierarchy_root.clone());
        let mut tap_config = settings.config;
        tap_config.skip_lo_ingress = u32::from(same_dir(&root, &hierarchy_root));
        update_config(&mut ebpf, |c| *c = tap_config)?;

        let cgroup = std::fs::File::open(&root).map_err(|error| TapError::OpenCgroup {
            path: root.clone(),
            error,
        })?;

        let mut hooks = Vec::new();
        for (name, attach_type) in [
            ("tap_egress", CgroupSkbAttachType::Egress),
            ("tap_ingress", CgroupSkbAttachType::Ingress),
        ] {
            let program: &mut CgroupSkb = ebpf
                .program_mut(name)
                .ok_or(TapError::MissingProgram(name))?
                .try_into()
                .map_err(|error| TapError::Program {
                    what: format!("{name} is not a cgroup_skb program"),
                    error,
                })?;
            program.load().map_err(|error| TapError::Program {
                what: format!("loading {name}"),
                error,
            })?;
            // Single is the right mode: over bpf_link it still coexists with other programs.
            program
                .attach(cgroup.as_fd(), attach_type, CgroupAttachMode::Single)
                .map_err(|error| TapError::Program {
                    what: format!("attaching {name} to {}", root.display()),
                    error,
                })?;
            let info = program.info().ok();
            // The verifier's processed-instruction count: how close the program is to the
            // verifier's limit, and what a change cost (`cargo xtask bench tap` reports it).
            let verified = info
                .as_ref()
                .and_then(|i| i.verified_instruction_count())
                .map_or(String::new(), |n| format!(", verified_insns={n}"));
            hooks.push(HookStatus {
                name,
                attached: true,
                detail: format!("cgroup_skb on {}{verified}", root.display()),
                program_id: info.map(|i| i.id()),
            });
        }
        hooks.push(attach_sock_state(&mut ebpf));
        if let Some(extra) = &settings.uprobes {
            hooks.extend(uprobes::attach_all(&mut ebpf, extra));
            if settings.request_heads {
                hooks.push(uprobes::attach_request_heads(&mut ebpf, extra));
            }
            hooks.push(attach_process_exec(&mut ebpf));
        }
        Ok(Self { ebpf, hooks })
    }

    /// Change the per-flow byte budget of the running programs, and the ring budget that
    /// follows from it (a reload). Flows already tracked keep counting against the new values.
    pub fn set_byte_budget(&mut self, byte_budget: u32) -> Result<(), TapError> {
        update_config(&mut self.ebpf, |c| {
            c.byte_budget = byte_budget;
            c.ring_budget = sensor_common::default_ring_budget(byte_budget);
        })
    }

    /// The hooks and whether each attached.
    pub fn hooks(&self) -> &[HookStatus] {
        &self.hooks
    }

    /// Take the ring buffer the programs write to. Call once.
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>, TapError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(TapError::MissingMap("EVENTS"))?;
        RingBuf::try_from(map).map_err(|error| TapError::Map {
            what: "EVENTS",
            error,
        })
    }

    /// Take the ring buffer of program starts (`process_exec`). Call once; `None` when that
    /// hook did not attach.
    pub fn take_exec_ring(&mut self) -> Option<RingBuf<MapData>> {
        if !self
            .hooks
            .iter()
            .any(|h| h.name == "process_exec" && h.attached)
        {
            return None;
        }
        let Some(map) = self.ebpf.take_map("EXECS") else {
            tracing::warn!("the EXECS ring buffer is missing from the object");
            return None;
        };
        RingBuf::try_from(map)
            .map_err(|e| tracing::warn!("the EXECS ring buffer: {e}"))
            .ok()
    }

    /// Attach the OpenSSL uprobes to one more library file (see [`libraries`]).
    pub fn attach_library(
        &mut self,
        file: libraries::LibraryFile,
        target: &std::path::Path,
    ) -> Result<(), String> {
        uprobes::attach_library(&mut self.ebpf, file, target)
    }

    /// Attach the uprobes for a program's own TLS library (see [`executables`]).
    pub fn attach_to_program(
        &mut self,
        target: &std::path::Path,
        tls: &executables::OwnTls,
    ) -> Result<(), String> {
        uprobes::attach_to_program(&mut self.ebpf, target, tls)
    }

    /// Each program's run time (ns) and run count, as the kernel counts them while
    /// `kernel.bpf_stats_enabled` is 1 (zeros otherwise).
    pub fn program_stats(&self) -> Vec<(String, u64, u64)> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| {
                let info = p.info().ok()?;
                Some((
                    name.to_owned(),
                    u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                    info.run_count(),
                ))
            })
            .collect()
    }

    /// The kernel counters, summed over CPUs, with their names. (Per-socket state lives in
    /// socket storage and goes with its socket: there is nothing to evict.)
    pub fn counters(&self) -> Result<Vec<(&'static str, u64)>, TapError> {
        let map = self
            .ebpf
            .map("COUNTERS")
            .ok_or(TapError::MissingMap("COUNTERS"))?;
        let counters: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|error| TapError::Map {
                what: "COUNTERS",
                error,
            })?;
        let mut out = Vec::with_capacity(counter::COUNT as usize);
        for (i, name) in counter::NAMES.iter().enumerate() {
            let values = counters
                .get(&(i as u32), 0)
                .map_err(|error| TapError::Map {
                    what: "COUNTERS",
                    error,
                })?;
            out.push((*name, values.iter().sum()));
        }
        Ok(out)
    }
}

/// Change the programs' tunables in the `CONFIG` map.
fn update_config(ebpf: &mut Ebpf, change: impl FnOnce(&mut TapConfig)) -> Result<(), TapError> {
    let map_error = |error| TapError::Map {
        what: "CONFIG",
        error,
    };
    let map = ebpf
        .map_mut("CONFIG")
        .ok_or(TapError::MissingMap("CONFIG"))?;
    let mut config: Array<_, TapConfig> = Array::try_from(map).map_err(map_error)?;
    let mut current = config.get(&0, 0).map_err(map_error)?;
    change(&mut current);
    config.set(0, &current, 0).map_err(map_error)
}

fn same_dir(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The optional process-attribution hook. Without it the tap still works; connecting processes
/// are then found from egress segments and /proc, which misses short-lived ones.
fn attach_sock_state(ebpf: &mut Ebpf) -> HookStatus {
    const NAME: &str = "sock_state";
    let result = (|| -> Result<Option<u32>, String> {
        let btf = Btf::from_sys_fs().map_err(|e| format!("no kernel BTF: {e}"))?;
        let program: &mut BtfTracePoint = ebpf
            .program_mut(NAME)
            .ok_or("missing from the object")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        program
            .load("inet_sock_set_state", &btf)
            .map_err(|e| format!("loading: {e}"))?;
        program.attach().map_err(|e| format!("attaching: {e}"))?;
        Ok(program.info().ok().map(|i| i.id()))
    })();
    match result {
        Ok(program_id) => HookStatus {
            name: NAME,
            attached: true,
            detail: "tp_btf/inet_sock_set_state (process attribution at connect)".into(),
            program_id,
        },
        Err(why) => HookStatus {
            name: NAME,
            attached: false,
            detail: format!(
                "tp_btf/inet_sock_set_state unavailable ({why}); processes are found from \
                 egress segments and /proc instead"
            ),
            program_id: None,
        },
    }
}

/// The hook that names programs as they start, for the executables that carry their own TLS
/// library. Without it only the system's libraries (and those named in the configuration)
/// get uprobes.
fn attach_process_exec(ebpf: &mut Ebpf) -> HookStatus {
    const NAME: &str = "process_exec";
    let result = (|| -> Result<Option<u32>, String> {
        let btf = Btf::from_sys_fs().map_err(|e| format!("no kernel BTF: {e}"))?;
        let program: &mut BtfTracePoint = ebpf
            .program_mut(NAME)
            .ok_or("missing from the object")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        program
            .load("sched_process_exec", &btf)
            .map_err(|e| format!("loading: {e}"))?;
        program.attach().map_err(|e| format!("attaching: {e}"))?;
        Ok(program.info().ok().map(|i| i.id()))
    })();
    match result {
        Ok(program_id) => HookStatus {
            name: NAME,
            attached: true,
            detail: "tp_btf/sched_process_exec: programs that carry their own TLS library \
                     (OpenSSL linked in, Go) are found as they start"
                .into(),
            program_id,
        },
        Err(why) => HookStatus {
            name: NAME,
            attached: false,
            detail: format!(
                "tp_btf/sched_process_exec unavailable ({why}); programs that carry their own \
                 OpenSSL are found only when sensord starts"
            ),
            program_id: None,
        },
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it so that loading works there.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid pointer to an initialised struct.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    if ret != 0 {
        tracing::debug!("could not lift RLIMIT_MEMLOCK; fine on kernels with memcg accounting");
    }
}

/// sensord's own process id as the kernel programs see it, for `TapConfig::self_tgid`.
///
/// `bpf_get_current_pid_tgid` names processes by their ids in the initial PID namespace;
/// `getpid` (`std::process::id`) by their ids in sensord's own. The two differ when sensord
/// runs in a child PID namespace (a container, `unshare --pid`, systemd's `PrivatePIDs=`),
/// and the kernel then never recognised sensord's own connections: its probes were reported
/// as handshakes of their own, and probed again. The first `NSpid` field of
/// /proc/self/status is the id in the PID namespace of the /proc mount: the host's, which
/// sensord needs anyway (it reads /proc/PID with the kernel's pids to attribute processes).
/// Without the field (kernels before 4.1, where nobody could tell), `getpid` stays.
pub fn own_kernel_tgid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").ok();
    let ids = status.as_deref().and_then(ns_pids).unwrap_or_default();
    if ids.len() > 1 {
        tracing::info!(
            host_pid = ids[0],
            own_pid = std::process::id(),
            "sensord runs in a child PID namespace; the kernel knows it as pid {}",
            ids[0]
        );
    }
    ids.first().copied().unwrap_or_else(std::process::id)
}

/// The `NSpid` ids of a /proc/PID/status text, outermost (the /proc mount's namespace) first.
fn ns_pids(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let ids: Option<Vec<u32>> = line
        .split_ascii_whitespace()
        .map(|f| f.parse().ok())
        .collect();
    ids.filter(|ids| !ids.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_knows_sensord_by_its_pid_in_the_outermost_namespace() {
        // sensord as pid 17 of a container whose init is host pid 4000: the kernel's tgid is
        // the first field, not what getpid says.
        let status = "Name:\tsensord\nTgid:\t17\nNgid:\t0\nPid:\t17\nPPid:\t1\n\
                      NSpid:\t4242\t17\nNSpgid:\t4242\t17\n";
        assert_eq!(ns_pids(status), Some(vec![4242, 17]));
        assert_eq!(
            ns_pids("Name:\tx\nPid:\t17\n"),
            None,
            "kernels without NSpid"
        );
        assert_eq!(ns_pids("NSpid:\t\n"), None);
        assert_eq!(ns_pids("NSpid:\t12 x\n"), None);
        // Here, in the host's namespace: the same as getpid.
        assert_eq!(own_kernel_tgid(), std::process::id());
    }
}
