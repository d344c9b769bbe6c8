//! The kernel tap: loads the eBPF object, attaches the programs, and turns ring buffer records
//! into [`Segment`]s.
//!
//! Programs detach when [`KernelTap`] is dropped: aya owns every link and closes it on drop.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsFd,
    path::PathBuf,
};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType},
};
use sensor_common::{
    CERT_CHUNK_HEADER_LEN, COMM_LEN, CertChunkHeader, SEGMENT_HEADER_LEN, SOCKET_EVENT_LEN,
    SegmentHeader, SocketEvent, TapConfig, counter, direction, family, kind, segment_flags,
};

use super::{Attribution, Segment};

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
    Cgroup(#[from] super::cgroup::CgroupError),
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
}

/// Whether a hook attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookStatus {
    pub name: &'static str,
    pub attached: bool,
    /// Where it attached, or why it did not.
    pub detail: String,
    /// The kernel's id of the loaded program, when it loaded.
    pub program_id: Option<u32>,
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

        let hierarchy_root = super::cgroup::cgroup2_root()?;
        let root = settings
            .cgroup
            .clone()
            .unwrap_or_else(|| hierarchy_root.clone());
        let mut tap_config = settings.config;
        tap_config.skip_lo_ingress = u32::from(same_dir(&root, &hierarchy_root));
        let map = ebpf
            .map_mut("CONFIG")
            .ok_or(TapError::MissingMap("CONFIG"))?;
        let mut config: Array<_, TapConfig> =
            Array::try_from(map).map_err(|error| TapError::Map {
                what: "CONFIG",
                error,
            })?;
        config
            .set(0, &tap_config, 0)
            .map_err(|error| TapError::Map {
                what: "CONFIG",
                error,
            })?;

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
            hooks.push(HookStatus {
                name,
                attached: true,
                detail: format!("cgroup_skb on {}", root.display()),
                program_id: program.info().ok().map(|i| i.id()),
            });
        }
        hooks.push(attach_sock_state(&mut ebpf));
        if let Some(extra) = &settings.uprobes {
            hooks.extend(super::uprobes::attach_all(&mut ebpf, extra));
        }
        Ok(Self { ebpf, hooks })
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

/// Converts the kernel's CLOCK_MONOTONIC timestamps to nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug)]
pub struct ClockOffset {
    realtime_minus_monotonic_ns: i128,
}

impl ClockOffset {
    /// Measure the offset now.
    pub fn now() -> Self {
        let read = |clock| {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime with a valid pointer.
            unsafe { libc::clock_gettime(clock, &mut ts) };
            i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
        };
        let mono = read(libc::CLOCK_MONOTONIC);
        let real = read(libc::CLOCK_REALTIME);
        Self {
            realtime_minus_monotonic_ns: real - mono,
        }
    }

    /// Epoch nanoseconds of a monotonic timestamp.
    pub fn to_epoch_ns(self, monotonic_ns: u64) -> u64 {
        let v = i128::from(monotonic_ns) + self.realtime_minus_monotonic_ns;
        u64::try_from(v.max(0)).unwrap_or(u64::MAX)
    }
}

/// The owner of a socket, as the kernel saw it at connect time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketOwner {
    pub cookie: u64,
    /// Epoch nanoseconds.
    pub ts_ns: u64,
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub cgroup_id: u64,
}

/// A decoded ring buffer record.
#[derive(Debug)]
pub enum Record<'a> {
    Segment(Segment<'a>),
    Socket(SocketOwner),
    /// A chunk of a certificate from the `d2i_X509` uprobe.
    Cert(super::certs::CertChunk<'a>),
    /// A record this version does not understand, or a malformed one.
    Unknown,
}

/// Decode one ring buffer record. `clock` converts the kernel's timestamps.
pub fn decode(record: &[u8], clock: ClockOffset) -> Record<'_> {
    let Some(kind_bytes) = record.get(..4) else {
        return Record::Unknown;
    };
    let record_kind =
        u32::from_ne_bytes([kind_bytes[0], kind_bytes[1], kind_bytes[2], kind_bytes[3]]);
    if record_kind == kind::SOCKET && record.len() >= SOCKET_EVENT_LEN {
        // SAFETY: the record holds a whole SocketEvent, plain old data, read unaligned.
        let ev: SocketEvent = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
        let comm_len = ev.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        return Record::Socket(SocketOwner {
            cookie: ev.cookie,
            ts_ns: clock.to_epoch_ns(ev.ts_ns),
            pid: (ev.pid_tgid >> 32) as u32,
            tid: ev.pid_tgid as u32,
            uid: ev.uid_gid as u32,
            gid: (ev.uid_gid >> 32) as u32,
            comm: String::from_utf8_lossy(&ev.comm[..comm_len]).into_owned(),
            cgroup_id: ev.cgroup_id,
        });
    }
    if record_kind == kind::CERT && record.len() >= CERT_CHUNK_HEADER_LEN {
        // SAFETY: the record holds a whole CertChunkHeader, plain old data, read unaligned.
        let h: CertChunkHeader = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
        let Some(data) = record.get(CERT_CHUNK_HEADER_LEN..CERT_CHUNK_HEADER_LEN + h.len as usize)
        else {
            return Record::Unknown;
        };
        return Record::Cert(super::certs::CertChunk {
            ts_ns: h.ts_ns,
            pid_tgid: h.pid_tgid,
            cookie: h.cookie,
            offset: h.offset,
            total_len: h.total_len,
            der_len: h.der_len,
            data,
        });
    }
    if record_kind != kind::SEGMENT || record.len() < SEGMENT_HEADER_LEN {
        return Record::Unknown;
    }
    // SAFETY: the record holds at least SEGMENT_HEADER_LEN bytes, SegmentHeader is plain old
    // data, and read_unaligned copes with any alignment.
    let h: SegmentHeader = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let Some(payload) = record.get(SEGMENT_HEADER_LEN..SEGMENT_HEADER_LEN + h.payload_len as usize)
    else {
        return Record::Unknown;
    };
    let addr = |raw: [u8; 16]| -> Option<IpAddr> {
        match h.family {
            family::INET => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
            family::INET6 => Some(IpAddr::V6(Ipv6Addr::from(raw))),
            _ => None,
        }
    };
    let (Some(saddr), Some(daddr)) = (addr(h.saddr), addr(h.daddr)) else {
        return Record::Unknown;
    };
    let pid = (h.flags & segment_flags::HAS_PID != 0 && h.direction == direction::EGRESS)
        .then_some((h.pid_tgid >> 32) as u32)
        .filter(|&p| p != 0);
    let missing = if h.flags & segment_flags::TRUNCATED != 0 {
        h.segment_len.saturating_sub(h.payload_len)
    } else {
        0
    };
    Record::Segment(Segment {
        ts_ns: clock.to_epoch_ns(h.ts_ns),
        src: SocketAddr::new(saddr, h.sport),
        dst: SocketAddr::new(daddr, h.dport),
        seq: h.seq,
        tcp_flags: h.tcp_flags,
        payload,
        missing,
        attribution: Some(Attribution {
            cookie: h.cookie,
            local_is_src: h.direction == direction::EGRESS,
            first_on_socket: h.flags & segment_flags::FIRST != 0,
            pid,
            cgroup_id: h.cgroup_id,
            netns_cookie: h.netns_cookie,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(h: SegmentHeader, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; SEGMENT_HEADER_LEN];
        // SAFETY: the buffer is SEGMENT_HEADER_LEN bytes long.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast(), h) };
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_an_ipv4_segment() {
        let mut h = SegmentHeader {
            kind: kind::SEGMENT,
            flags: segment_flags::HAS_PID,
            family: family::INET,
            seq: 1000,
            payload_len: 3,
            segment_len: 3,
            sport: 40000,
            dport: 443,
            pid_tgid: (4242u64 << 32) | 4243,
            cookie: 7,
            ts_ns: 5,
            ..Default::default()
        };
        h.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        h.daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        let bytes = record(h, b"abcXYZ");
        let clock = ClockOffset {
            realtime_minus_monotonic_ns: 10,
        };
        let Record::Segment(s) = decode(&bytes, clock) else {
            panic!("not decoded");
        };
        assert_eq!(s.src, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(s.dst, "127.0.0.2:443".parse().unwrap());
        assert_eq!(s.payload, b"abc");
        assert_eq!(s.ts_ns, 15);
        assert_eq!(s.attribution.unwrap().pid, Some(4242));
        assert_eq!(s.attribution.unwrap().cookie, 7);
    }

    #[test]
    fn decodes_a_socket_event() {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"curl");
        let ev = SocketEvent {
            kind: kind::SOCKET,
            new_state: 2,
            ts_ns: 1,
            cookie: 99,
            cgroup_id: 5,
            pid_tgid: (100u64 << 32) | 101,
            uid_gid: (1000u64 << 32) | 1001,
            comm,
        };
        let mut v = vec![0u8; SOCKET_EVENT_LEN];
        // SAFETY: the buffer is SOCKET_EVENT_LEN bytes long.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast(), ev) };
        let Record::Socket(owner) = decode(&v, ClockOffset::now()) else {
            panic!("not decoded");
        };
        assert_eq!(
            (owner.pid, owner.tid, owner.uid, owner.gid),
            (100, 101, 1001, 1000)
        );
        assert_eq!(owner.comm, "curl");
        assert_eq!(owner.cookie, 99);
        assert!(matches!(
            decode(&v[..20], ClockOffset::now()),
            Record::Unknown
        ));
    }

    #[test]
    fn rejects_short_and_lying_records() {
        let clock = ClockOffset::now();
        assert!(matches!(decode(&[1, 0], clock), Record::Unknown));
        let h = SegmentHeader {
            kind: kind::SEGMENT,
            family: family::INET,
            payload_len: 100,
            ..Default::default()
        };
        assert!(matches!(
            decode(&record(h, b"short"), clock),
            Record::Unknown
        ));
    }
}
