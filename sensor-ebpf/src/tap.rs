//! The cgroup_skb TLS tap.
//!
//! cgroup_skb programs see the packet from the network header on. For every TCP segment the tap
//! looks up the socket's state by cookie. A socket is classified on its first payload byte seen:
//! a TLS record header makes it `TLS`, a plaintext opening that may turn into TLS (an HTTP
//! `CONNECT`, a STARTTLS greeting) makes it `PREFIX`, anything else `IGNORE`. Payload of `TLS` and
//! `PREFIX` sockets is forwarded until the per-flow byte budget runs out.

use aya_ebpf::{
    EbpfContext,
    bindings::__sk_buff,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_skb_cgroup_id,
        bpf_skb_load_bytes,
    },
    macros::{cgroup_skb, map},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::SkBuffContext,
};
use sensor_common::{
    CHUNK_CAP, FlowState, MAX_CHUNKS, SegmentHeader, TapConfig, counter, direction, family,
    flow_state, kind, segment_flags, tcp_flags,
};

/// Ring buffer to userspace. 16 MiB holds about 4,000 full chunks.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// Per-socket state, keyed by socket cookie. LRU so that sockets that close without a FIN or
/// RST being seen do not fill it.
#[map]
static FLOWS: LruHashMap<u64, FlowState> = LruHashMap::with_max_entries(65536, 0);

/// Per-CPU counters, indexed by `sensor_common::counter`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Tunables, written by userspace before attaching.
#[map]
static CONFIG: Array<TapConfig> = Array::with_max_entries(1, 0);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_TCP: u8 = 6;
const LOOPBACK_IFINDEX: u32 = 1;

/// One ring buffer record: a header and up to `CHUNK_CAP` payload bytes. Only `payload_len`
/// bytes of `payload` are meaningful; userspace reads no further.
#[repr(C)]
struct SegmentRecord {
    header: SegmentHeader,
    payload: [u8; CHUNK_CAP],
}

#[cgroup_skb]
pub fn tap_egress(ctx: SkBuffContext) -> i32 {
    tap(&ctx, direction::EGRESS);
    1
}

#[cgroup_skb]
pub fn tap_ingress(ctx: SkBuffContext) -> i32 {
    tap(&ctx, direction::INGRESS);
    1
}

#[inline(always)]
fn bump(index: u32, by: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, and cgroup_skb programs do not preempt each other on one CPU.
        unsafe { *slot += by };
    }
}

/// What the tap learned from the IP and TCP headers.
struct Segment {
    family: u8,
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    tcp_flags: u8,
    payload_off: u32,
    payload_len: u32,
}

#[inline(always)]
fn tap(ctx: &SkBuffContext, dir: u8) {
    let skb = ctx.as_ptr() as *mut __sk_buff;
    // SAFETY: the context pointer is the kernel's __sk_buff for this program type.
    let (protocol, ifindex, skb_len) = unsafe {
        (
            u16::from_be((*skb).protocol as u16),
            (*skb).ifindex,
            (*skb).len,
        )
    };

    // Loopback traffic has both ends on this host: the sender's egress already carries every
    // byte, so ingress on lo would only duplicate it.
    if dir == direction::INGRESS && ifindex == LOOPBACK_IFINDEX {
        return;
    }
    let Some(seg) = parse_headers(ctx, protocol, skb_len) else {
        return;
    };
    bump(counter::PACKETS_SEEN, 1);

    // SAFETY: the helper accepts the skb context of cgroup_skb programs.
    let cookie = unsafe { bpf_get_socket_cookie(skb as *mut _) };
    let Some(state) = FLOWS.get_ptr_mut(&cookie) else {
        if seg.payload_len > 0 {
            start_flow(ctx, skb, cookie, dir, ifindex, &seg);
        }
        return;
    };
    // SAFETY: pointer into the LRU map's value for this key; races with another CPU on the same
    // socket only skew counters.
    let state = unsafe { &mut *state };
    if state.state == flow_state::IGNORE {
        return;
    }
    if seg.payload_len == 0 {
        if seg.tcp_flags & (tcp_flags::FIN | tcp_flags::RST) != 0 {
            emit(skb, cookie, dir, ifindex, &seg, 0, 0);
        }
        return;
    }
    forward(ctx, skb, cookie, dir, ifindex, &seg, state);
}

/// Classify a socket on its first payload and start tracking it.
#[inline(always)]
fn start_flow(
    ctx: &SkBuffContext,
    skb: *mut __sk_buff,
    cookie: u64,
    dir: u8,
    ifindex: u32,
    seg: &Segment,
) {
    let off = seg.payload_off as usize;
    let head: [u8; 8] = if seg.payload_len >= 8 {
        match ctx.load::<[u8; 8]>(off) {
            Ok(h) => h,
            Err(_) => return insert_ignored(cookie),
        }
    } else if seg.payload_len >= 5 {
        match ctx.load::<[u8; 5]>(off) {
            Ok(h) => [h[0], h[1], h[2], h[3], h[4], 0, 0, 0],
            Err(_) => return insert_ignored(cookie),
        }
    } else {
        return insert_ignored(cookie);
    };
    let state = if looks_like_tls_record(&head) {
        flow_state::TLS
    } else if seg.payload_len >= 8 && looks_like_tls_prefix(&head) {
        flow_state::PREFIX
    } else {
        insert_ignored(cookie);
        return;
    };
    let mut st = FlowState {
        state,
        ..FlowState::default()
    };
    bump(counter::FLOWS_TRACKED, 1);
    forward(ctx, skb, cookie, dir, ifindex, seg, &mut st);
    let _ = FLOWS.insert(&cookie, &st, 0);
}

#[inline(always)]
fn insert_ignored(cookie: u64) {
    let st = FlowState {
        state: flow_state::IGNORE,
        ..FlowState::default()
    };
    let _ = FLOWS.insert(&cookie, &st, 0);
    bump(counter::FLOWS_NOT_TLS, 1);
}

/// A TLS record header: handshake, alert or change_cipher_spec, version 3.1 to 3.4 (3.0 for
/// the record layer of some clients), and a length no larger than a record can be.
#[inline(always)]
fn looks_like_tls_record(h: &[u8; 8]) -> bool {
    let content_type = h[0];
    let len = u16::from_be_bytes([h[3], h[4]]);
    (content_type == 0x16 || content_type == 0x15)
        && h[1] == 3
        && h[2] <= 4
        && len > 0
        && len <= 16384 + 2048
}

/// Plaintext openings after which TLS may start on the same connection.
#[inline(always)]
fn looks_like_tls_prefix(h: &[u8; 8]) -> bool {
    h == b"CONNECT " // HTTP proxy tunnel
        || (h[0] == b'2' && h[1] == b'2' && h[2] == b'0' && (h[3] == b' ' || h[3] == b'-')) // SMTP greeting
        || (h[0] == b'E' && h[1] == b'H' && h[2] == b'L' && h[3] == b'O') // SMTP client
        || (h[0] == b'*' && h[1] == b' ' && h[2] == b'O' && h[3] == b'K') // IMAP greeting
        || (h[0] == b'+' && h[1] == b'O' && h[2] == b'K') // POP3 greeting
}

/// Forward one segment's payload if the flow's budget allows, and update the flow state.
#[inline(always)]
fn forward(
    ctx: &SkBuffContext,
    skb: *mut __sk_buff,
    cookie: u64,
    dir: u8,
    ifindex: u32,
    seg: &Segment,
    state: &mut FlowState,
) {
    let cfg = CONFIG.get(0).copied().unwrap_or_default();
    if state.state == flow_state::PREFIX {
        let head = if seg.payload_len >= 8 {
            ctx.load::<[u8; 8]>(seg.payload_off as usize).ok()
        } else {
            None
        };
        if head.is_some_and(|h| looks_like_tls_record(&h)) {
            state.state = flow_state::TLS;
        } else {
            state.prefix_scanned = state.prefix_scanned.saturating_add(seg.payload_len);
            if state.prefix_scanned > cfg.prefix_budget {
                state.state = flow_state::IGNORE;
                bump(counter::FLOWS_NOT_TLS, 1);
                return;
            }
        }
    }
    let mut flags = 0u8;
    let remaining = cfg.byte_budget.saturating_sub(state.forwarded);
    if remaining == 0 {
        state.state = flow_state::IGNORE;
        bump(counter::BUDGET_EXHAUSTED, 1);
        return;
    }
    let len = if seg.payload_len > remaining {
        flags |= segment_flags::BUDGET_EXHAUSTED;
        state.state = flow_state::IGNORE;
        bump(counter::BUDGET_EXHAUSTED, 1);
        remaining
    } else {
        seg.payload_len
    };
    state.forwarded = state.forwarded.saturating_add(len);
    emit(skb, cookie, dir, ifindex, seg, len, flags);
}

/// Write the segment to the ring buffer, split into chunks of at most `CHUNK_CAP` bytes.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit(
    skb: *mut __sk_buff,
    cookie: u64,
    dir: u8,
    ifindex: u32,
    seg: &Segment,
    len: u32,
    extra_flags: u8,
) {
    let mut header = SegmentHeader {
        kind: kind::SEGMENT,
        flags: extra_flags,
        direction: dir,
        family: seg.family,
        tcp_flags: seg.tcp_flags,
        // SAFETY: helpers available to every program type.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        cookie,
        // SAFETY: the helper accepts the skb context of cgroup_skb programs.
        cgroup_id: unsafe { bpf_skb_cgroup_id(skb) },
        pid_tgid: 0,
        seq: seg.seq,
        ack: seg.ack,
        payload_len: 0,
        segment_len: seg.payload_len,
        saddr: seg.saddr,
        daddr: seg.daddr,
        sport: seg.sport,
        dport: seg.dport,
        ifindex,
    };
    if dir == direction::EGRESS {
        header.pid_tgid = bpf_get_current_pid_tgid();
        header.flags |= segment_flags::HAS_PID;
    }
    if len == 0 {
        let Some(mut entry) = EVENTS.reserve::<SegmentHeader>(0) else {
            bump(counter::RINGBUF_DROPS, 1);
            return;
        };
        entry.write(header);
        entry.submit(0);
        return;
    }
    if len as usize > CHUNK_CAP * MAX_CHUNKS || len < seg.payload_len {
        header.flags |= segment_flags::TRUNCATED;
        bump(counter::SEGMENTS_TRUNCATED, 1);
    }
    if len as usize > CHUNK_CAP {
        header.flags |= segment_flags::CHUNKED;
    }
    for i in 0..MAX_CHUNKS as u32 {
        let off = i * CHUNK_CAP as u32;
        if off >= len {
            break;
        }
        let Some(mut entry) = EVENTS.reserve::<SegmentRecord>(0) else {
            bump(counter::RINGBUF_DROPS, 1);
            return;
        };
        let mut n = len - off;
        if n > CHUNK_CAP as u32 {
            n = CHUNK_CAP as u32;
        }
        // The verifier must see n in [1, CHUNK_CAP] right at the helper call; a volatile read
        // keeps LLVM from folding the checks into a form the verifier cannot follow.
        // SAFETY: reading a local.
        let n = unsafe { core::ptr::read_volatile(&n) };
        if n == 0 || n > CHUNK_CAP as u32 {
            entry.discard(0);
            return;
        }
        let record = entry.as_mut_ptr();
        // SAFETY: the reservation is a SegmentRecord-sized region owned by this program until
        // submit or discard; the payload array holds CHUNK_CAP >= n bytes.
        let ret = unsafe {
            let mut h = header;
            h.seq = seg.seq.wrapping_add(off);
            h.payload_len = n;
            core::ptr::addr_of_mut!((*record).header).write(h);
            bpf_skb_load_bytes(
                skb as *const _,
                seg.payload_off + off,
                core::ptr::addr_of_mut!((*record).payload) as *mut _,
                n,
            )
        };
        if ret != 0 {
            entry.discard(0);
            return;
        }
        entry.submit(0);
        bump(counter::SEGMENTS_FORWARDED, 1);
        bump(counter::BYTES_FORWARDED, n as u64);
    }
}

/// Parse the IPv4 or IPv6 header and the TCP header. `None` for anything that is not a TCP
/// segment with a sane header.
#[inline(always)]
fn parse_headers(ctx: &SkBuffContext, protocol: u16, skb_len: u32) -> Option<Segment> {
    let mut seg = Segment {
        family: 0,
        saddr: [0; 16],
        daddr: [0; 16],
        sport: 0,
        dport: 0,
        seq: 0,
        ack: 0,
        tcp_flags: 0,
        payload_off: 0,
        payload_len: 0,
    };
    let l4_off: u32 = match protocol {
        ETH_P_IP => {
            let vihl: u8 = ctx.load(0).ok()?;
            let proto: u8 = ctx.load(9).ok()?;
            if vihl >> 4 != 4 || proto != IPPROTO_TCP {
                return None;
            }
            let frag: u16 = u16::from_be(ctx.load(6).ok()?);
            if frag & 0x1fff != 0 {
                return None; // a later fragment: no TCP header here
            }
            let ihl = ((vihl & 0x0f) as u32) * 4;
            if ihl < 20 {
                bump(counter::PARSE_ERRORS, 1);
                return None;
            }
            let s: [u8; 4] = ctx.load(12).ok()?;
            let d: [u8; 4] = ctx.load(16).ok()?;
            seg.saddr[..4].copy_from_slice(&s);
            seg.daddr[..4].copy_from_slice(&d);
            seg.family = family::INET;
            ihl
        }
        ETH_P_IPV6 => {
            let next: u8 = ctx.load(6).ok()?;
            if next != IPPROTO_TCP {
                return None;
            }
            seg.saddr = ctx.load(8).ok()?;
            seg.daddr = ctx.load(24).ok()?;
            seg.family = family::INET6;
            40
        }
        _ => return None,
    };
    let ports: [u8; 4] = ctx.load(l4_off as usize).ok()?;
    seg.sport = u16::from_be_bytes([ports[0], ports[1]]);
    seg.dport = u16::from_be_bytes([ports[2], ports[3]]);
    seg.seq = u32::from_be(ctx.load(l4_off as usize + 4).ok()?);
    seg.ack = u32::from_be(ctx.load(l4_off as usize + 8).ok()?);
    let off_flags: [u8; 2] = ctx.load(l4_off as usize + 12).ok()?;
    let doff = ((off_flags[0] >> 4) as u32) * 4;
    if doff < 20 {
        bump(counter::PARSE_ERRORS, 1);
        return None;
    }
    seg.tcp_flags = off_flags[1];
    seg.payload_off = l4_off + doff;
    seg.payload_len = skb_len.saturating_sub(seg.payload_off);
    Some(seg)
}
