//! Process attribution at connect time.
//!
//! `tp_btf/inet_sock_set_state` fires when a TCP socket changes state. The move to SYN_SENT
//! happens inside connect(), in the context of the connecting process, so the pid, uid and
//! comm read there belong to the socket's owner. The socket cookie ties it to the tap's
//! segments. Accepted (server-side) sockets change state in softirq context; userspace finds
//! their owner through sock_diag and /proc instead.

use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_get_socket_cookie, bpf_ktime_get_boot_ns,
    },
    macros::{btf_tracepoint, map},
    maps::LruHashMap,
    programs::BtfTracePointContext,
};
use sensor_common::{SocketEvent, counter, kind};

use crate::tap::{CONFIG, EVENTS, bump, wakeup_flags};

/// Processes that connected lately, by tgid: the last time a wakeup was forced for them.
#[map]
static RECENT_TGIDS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);

/// How long a process counts as seen lately.
const RECENT_NS: u64 = 1_000_000_000;

const TCP_SYN_SENT: i32 = 2;

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn sock_state(ctx: BtfTracePointContext) -> i32 {
    let new_state: i32 = ctx.arg(2);
    if new_state != TCP_SYN_SENT {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let self_tgid = CONFIG.get(0).map_or(0, |cfg| cfg.self_tgid);
    if self_tgid != 0 && (pid_tgid >> 32) as u32 == self_tgid {
        return 0;
    }
    let sk: *mut core::ffi::c_void = ctx.arg(0);
    let Some(mut entry) = EVENTS.reserve::<SocketEvent>(0) else {
        bump(counter::RINGBUF_DROPS, 1);
        return 0;
    };
    let ev = SocketEvent {
        kind: kind::SOCKET,
        new_state: new_state as u32,
        // SAFETY: a helper available to tracing programs; sk is the tracepoint's socket.
        cookie: unsafe { bpf_get_socket_cookie(sk) },
        pid_tgid,
        uid_gid: bpf_get_current_uid_gid(),
        comm: bpf_get_current_comm().unwrap_or_default(),
        // SAFETY: a helper available to tracing programs.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
    };
    entry.write(ev);
    // A process not seen lately: wake the reader now, so that it reads the process's details
    // from /proc while the process is still alive. Otherwise the usual batching applies.
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: a helper available to every program type.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    // SAFETY: plain read of a map value.
    let fresh = unsafe { RECENT_TGIDS.get(&tgid) }.is_none_or(|&t| now.wrapping_sub(t) > RECENT_NS);
    if fresh {
        let _ = RECENT_TGIDS.insert(&tgid, &now, 0);
        entry.submit(BPF_RB_FORCE_WAKEUP.into());
    } else {
        entry.submit(wakeup_flags());
    }
    bump(counter::SOCKET_EVENTS, 1);
    0
}
