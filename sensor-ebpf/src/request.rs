//! The head of the first request a local TLS server reads on an inbound connection, for the
//! server's view (`ua_fingerprint_mismatch`): off unless the configuration turns it on.
//!
//! - `ssl_accept_enter`/`ssl_accept_exit` (libssl's `SSL_do_handshake` and `SSL_accept`) note
//!   the `SSL*` a thread is handshaking;
//! - `sock_recv` (`tp_btf/sock_recv_length`, in the reading thread), for a socket the tap
//!   marked as an inbound TLS connection whose head is wanted (`WANT_HEAD`): inside a
//!   handshake it binds the `SSL*` to the socket (every new connection's handshake reads its
//!   ClientHello there, so a reused `SSL*` is bound again); inside `SSL_read` it names the
//!   socket the read came from;
//! - `ssl_read_enter` (uprobe on `SSL_read`) notes the thread's buffer and the socket its
//!   `SSL*` is bound to (the request may have been read during the handshake already);
//! - `ssl_read_exit` (uretprobe) copies the first `REQUEST_HEAD_CAP` bytes of what `SSL_read`
//!   returned into the ring, once per connection.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_socket_cookie, bpf_ktime_get_boot_ns,
        bpf_probe_read_user_buf,
    },
    macros::{btf_tracepoint, map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{BtfTracePointContext, ProbeContext, RetProbeContext},
};
use sensor_common::{REQUEST_HEAD_CAP, RequestHead, counter, kind};

use crate::tap::{EVENTS, WANT_HEAD, bump, wakeup_flags};

/// A thread inside `SSL_read`: its buffer, its `SSL*`, the socket once known.
#[repr(C)]
#[derive(Clone, Copy)]
struct ReadCall {
    buf: u64,
    ssl: u64,
    cookie: u64,
}

#[map]
static SSL_READS: LruHashMap<u64, ReadCall> = LruHashMap::with_max_entries(16_384, 0);

/// Threads inside `SSL_do_handshake`/`SSL_accept`: the `SSL*`.
#[map]
static HANDSHAKE_SSL: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16_384, 0);

/// The socket an `SSL*` (with the tgid, as one key) was last seen reading from.
#[map]
static SSL_SOCKET: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16_384, 0);

fn ssl_key(ssl: u64, pid_tgid: u64) -> u64 {
    ssl ^ (pid_tgid >> 32).rotate_left(48)
}

uprobe_programs!(
    uprobe,
    ProbeContext,
    ssl_accept_enter,
    ssl_accept_enter_multi,
    accept_enter
);
uprobe_programs!(
    uretprobe,
    RetProbeContext,
    ssl_accept_exit,
    ssl_accept_exit_multi,
    accept_exit
);
uprobe_programs!(
    uprobe,
    ProbeContext,
    ssl_read_enter,
    ssl_read_enter_multi,
    read_enter
);
uprobe_programs!(
    uretprobe,
    RetProbeContext,
    ssl_read_exit,
    ssl_read_exit_multi,
    read_exit
);

/// `int SSL_do_handshake(SSL *s)`, `int SSL_accept(SSL *s)`.
#[inline(always)]
fn accept_enter(ctx: ProbeContext) -> u32 {
    if let Some(ssl) = ctx.arg::<u64>(0) {
        let _ = HANDSHAKE_SSL.insert(&bpf_get_current_pid_tgid(), &ssl, 0);
    }
    0
}

#[inline(always)]
fn accept_exit(_ctx: RetProbeContext) -> u32 {
    let _ = HANDSHAKE_SSL.remove(&bpf_get_current_pid_tgid());
    0
}

/// `int SSL_read(SSL *ssl, void *buf, int num)`.
#[inline(always)]
fn read_enter(ctx: ProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let (Some(ssl), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    // SAFETY: plain read of a map value.
    let cookie = unsafe { SSL_SOCKET.get(&ssl_key(ssl, id)) }
        .copied()
        .unwrap_or(0);
    let _ = SSL_READS.insert(&id, &ReadCall { buf, ssl, cookie }, 0);
    0
}

/// `sock_recv_length(struct sock *sk, int ret, int flags)`, in the reading thread.
#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_recv(ctx: BtfTracePointContext) -> i32 {
    let id = bpf_get_current_pid_tgid();
    let sk: *mut core::ffi::c_void = ctx.arg(0);
    // SAFETY: a helper available to tracing programs; sk is the tracepoint's socket.
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    // SAFETY: plain read of a map value.
    if unsafe { WANT_HEAD.get(&cookie) }.is_none() {
        return 0;
    }
    // SAFETY: plain reads of map values.
    if let Some(call) = unsafe { SSL_READS.get(&id) }.copied() {
        let _ = SSL_READS.insert(&id, &ReadCall { cookie, ..call }, 0);
        let _ = SSL_SOCKET.insert(&ssl_key(call.ssl, id), &cookie, 0);
    } else if let Some(ssl) = unsafe { HANDSHAKE_SSL.get(&id) }.copied() {
        let _ = SSL_SOCKET.insert(&ssl_key(ssl, id), &cookie, 0);
    }
    0
}

#[inline(always)]
fn read_exit(ctx: RetProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: plain read of a map value.
    let Some(call) = (unsafe { SSL_READS.get(&id) }).copied() else {
        return 0;
    };
    let _ = SSL_READS.remove(&id);
    let ret = ctx.ret::<i32>();
    if ret <= 0 || call.cookie == 0 || call.buf == 0 {
        return 0;
    }
    // SAFETY: plain read of a map value.
    if unsafe { WANT_HEAD.get(&call.cookie) }.is_none() {
        return 0;
    }
    let _ = WANT_HEAD.remove(&call.cookie);
    let Some(mut entry) = EVENTS.reserve::<RequestHead>(0) else {
        bump(counter::RINGBUF_DROPS, 1);
        return 0;
    };
    let head = entry.as_mut_ptr();
    let n = (ret as u32).min(REQUEST_HEAD_CAP as u32) as usize;
    // SAFETY: the reserved record is ours until submitted; fields are written before submit.
    unsafe {
        (*head).kind = kind::REQUEST_HEAD;
        (*head).ts_ns = bpf_ktime_get_boot_ns();
        (*head).pid_tgid = id;
        (*head).cookie = call.cookie;
        let data = &mut (*head).data;
        let read = match data.get_mut(..n) {
            Some(dst) => bpf_probe_read_user_buf(call.buf as *const u8, dst).is_ok(),
            None => false,
        };
        (*head).len = if read { n as u32 } else { 0 };
    }
    entry.submit(wakeup_flags());
    bump(counter::REQUEST_HEADS, 1);
    0
}
