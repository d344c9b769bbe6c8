//! The floor under the tap benchmark's `ns_per_packet`: an empty cgroup_skb program (it lets
//! every packet through and does nothing else), attached to the cgroup v2 root in both
//! directions as the tap is. Its run time per packet, measured the same way, is what the hook and
//! the kernel's run-time statistics cost on this machine before a program does anything at all.
//!
//! Two instructions, loaded and attached with the `bpf` system call itself: the benchmark needs
//! no object file and no compiler for it.

use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;
const BPF_CGROUP_INET_INGRESS: u32 = 0;
const BPF_CGROUP_INET_EGRESS: u32 = 1;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// `r0 = 1; exit`: let the packet through.
const INSNS: [u64; 2] = [
    // BPF_ALU64 | BPF_MOV | BPF_K, dst r0, imm 1
    0xb7 | (1 << 32),
    // BPF_JMP | BPF_EXIT
    0x95,
];

/// The head of `union bpf_attr` for `BPF_PROG_LOAD`.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The head of `union bpf_attr` for `BPF_PROG_ATTACH` and `BPF_PROG_DETACH`.
#[repr(C)]
#[derive(Default)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// The head of `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
#[derive(Default)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: `attr` is the head of `union bpf_attr` for `cmd`, passed with its size; the
    // kernel reads no further than that size and treats the rest as zero.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on
/// a hybrid layout): its root is where sensord attaches the tap.
pub fn cgroup2_root() -> anyhow::Result<PathBuf> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    cgroup2_mount(&mounts).context("no cgroup2 file system is mounted")
}

/// The first cgroup2 mount point in a `/proc/self/mounts` text.
fn cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir.replace("\\040", " ")))
    })
}

/// The empty program, attached to a cgroup's ingress and egress until dropped.
pub struct EmptyProgram {
    prog: OwnedFd,
    cgroup: OwnedFd,
    attached: Vec<u32>,
    /// The program's id, for `bpftool prog show id`.
    pub id: u32,
}

impl EmptyProgram {
    /// Load the program and attach it to the cgroup at `cgroup` (a cgroup v2 folder) in both
    /// directions, beside any other program there (`BPF_F_ALLOW_MULTI`).
    pub fn attach(cgroup: &Path) -> anyhow::Result<Self> {
        let license = CString::new("GPL").expect("no NUL");
        let mut name = [0u8; 16];
        name[..11].copy_from_slice(b"bench_floor");
        let mut load = ProgLoad {
            prog_type: BPF_PROG_TYPE_CGROUP_SKB,
            insn_cnt: INSNS.len() as u32,
            insns: INSNS.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name,
            ..ProgLoad::default()
        };
        let fd = bpf(BPF_PROG_LOAD, &mut load).context("loading the empty cgroup_skb program")?;
        // SAFETY: a new file descriptor the kernel just returned, owned here alone.
        let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let dir = std::fs::File::open(cgroup)
            .with_context(|| format!("opening the cgroup {}", cgroup.display()))?;
        let mut floor = Self {
            prog,
            cgroup: dir.into(),
            attached: Vec::new(),
            id: 0,
        };
        let mut id = [0u32; 2];
        let mut info = InfoByFd {
            bpf_fd: floor.prog.as_raw_fd() as u32,
            info_len: std::mem::size_of_val(&id) as u32,
            info: id.as_mut_ptr() as u64,
        };
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut info).context("reading the empty program's id")?;
        // struct bpf_prog_info begins with its type and its id.
        floor.id = id[1];
        if floor.id == 0 {
            bail!("the kernel gave the empty program no id");
        }
        for attach_type in [BPF_CGROUP_INET_INGRESS, BPF_CGROUP_INET_EGRESS] {
            let mut attach = ProgAttach {
                target_fd: floor.cgroup.as_raw_fd() as u32,
                attach_bpf_fd: floor.prog.as_raw_fd() as u32,
                attach_type,
                attach_flags: BPF_F_ALLOW_MULTI,
                ..ProgAttach::default()
            };
            bpf(BPF_PROG_ATTACH, &mut attach).with_context(|| {
                format!(
                    "attaching the empty program to {} (type {attach_type})",
                    cgroup.display()
                )
            })?;
            floor.attached.push(attach_type);
        }
        Ok(floor)
    }
}

impl Drop for EmptyProgram {
    /// Detach it: a cgroup keeps a program attached after its last file descriptor closes.
    fn drop(&mut self) {
        for &attach_type in &self.attached {
            let mut detach = ProgAttach {
                target_fd: self.cgroup.as_raw_fd() as u32,
                attach_bpf_fd: self.prog.as_raw_fd() as u32,
                attach_type,
                ..ProgAttach::default()
            };
            if let Err(e) = bpf(BPF_PROG_DETACH, &mut detach) {
                eprintln!("xtask: could not detach the empty program (type {attach_type}): {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_in_a_hybrid_and_a_pure_layout() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec 0 0\n";
        assert_eq!(cgroup2_mount(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        let spaced = "none /mnt/with\\040space cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup2_mount(spaced),
            Some(PathBuf::from("/mnt/with space"))
        );
        assert_eq!(cgroup2_mount("proc /proc proc rw 0 0\n"), None);
    }
}
