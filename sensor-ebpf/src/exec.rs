//! Programs as they start: `tp_btf/sched_process_exec` puts the process id on the small
//! `EXECS` ring buffer, and sensord looks at the program's file (once per file) for a TLS
//! library it can attach uprobes to, such as an OpenSSL linked into the executable (Node).
//!
//! The tracepoint runs in the new program's context, before its first instruction: a
//! uprobe attached while the process loads its libraries already sees its first handshake.
//! The records go to their own ring so that a burst of execs never takes room from handshakes.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, map},
    maps::RingBuf,
    programs::BtfTracePointContext,
};
use sensor_common::{ExecEvent, counter};

use crate::tap::{CONFIG, bump};

/// One record per exec; 64 KiB holds 8,192 of them.
#[map]
static EXECS: RingBuf = RingBuf::with_byte_size(64 << 10, 0);

#[btf_tracepoint(function = "sched_process_exec")]
pub fn process_exec(_ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let self_tgid = CONFIG.get(0).map_or(0, |cfg| cfg.self_tgid);
    if self_tgid != 0 && (pid_tgid >> 32) as u32 == self_tgid {
        return 0;
    }
    bump(counter::EXECS, 1);
    // The default wakeup: the reader is woken when it has caught up, so an idle sensord
    // learns of a new program at once and a busy one takes a burst in one read.
    if EXECS.output(&ExecEvent { pid_tgid }, 0).is_err() {
        bump(counter::EXEC_DROPS, 1);
    }
    0
}
