//! The cgroup_skb TLS tap.
//!
//! cgroup_skb programs see the packet from the network header on. For every TCP segment the tap
//! looks up the socket's state by cookie (one hash lookup). A socket is classified on its first
//! payload: a TLS record header makes it `TLS`, a plaintext opening that may turn into TLS (an
//! HTTP `CONNECT`, a STARTTLS greeting) makes it `PREFIX`, anything else `IGNORE`.
//!
//! For `TLS` sockets the tap follows record headers in both directions. Once the client has sent
//! application data and the server has answered with application data, the handshake is over:
//! the socket becomes `DONE` and only FIN and RST are forwarded from then on. Until then every
//! payload byte is forwarded, up to the per-flow byte budget.
//!
//! On loopback both ends are local sockets: each tracks both directions (egress and ingress),
//! but only egress is forwarded, since the peer's ingress would carry the same bytes again.
//!
//! UDP sockets are followed for QUIC: a socket that sends or takes a client's Initial packet
//! (long header, versions 1 and 2, in a datagram of at least 1200 bytes) becomes `QUIC`, and
//! each of its peers a flow in `QUIC_FLOWS` (a server's one socket carries every client).
//! A flow's datagrams are forwarded, within the same byte and ring budgets as TCP, until the
//! client sends its first short header (1-RTT) packet: then the handshake is over. A UDP
//! socket whose first datagram out is anything else costs one lookup from then on.
//!
//! The tap follows what TCP accepts, not whatever arrives: cgroup_skb ingress runs before TCP
//! checks a segment, so payload without ACK, on a socket that is not established, or wholly
//! before the socket's `rcv_nxt` (an old copy) is not taken (`segments_not_accepted`). Only
//! TCP sockets are tracked (a raw socket's injected packets are not a stream).

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext,
    bindings::{
        __sk_buff, BPF_F_NO_PREALLOC, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP,
        BPF_SK_STORAGE_GET_F_CREATE, bpf_map_type, bpf_sock,
    },
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_socket_cookie, bpf_ktime_get_boot_ns, bpf_sk_fullsock,
        bpf_sk_storage_get, bpf_skb_load_bytes, bpf_tcp_sock,
    },
    macros::{cgroup_skb, map},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::SkBuffContext,
};
use sensor_common::{
    CHUNK_CAP, DirTrack, FlowState, MAX_CHUNKS, NO_DIRECTION, RECORD_CLASSES, SegmentHeader,
    TapConfig, counter, direction, family, flow_state, kind, loss, segment_cost, segment_flags,
    sync, tcp_flags, transport,
};

/// Ring buffer to userspace, shared by every flow on the host. 16 MiB holds about 4,000 records of
/// 4 KiB or 100,000 of 1 byte (`RECORD_CLASSES`); no flow may reserve more than its
/// `ring_budget` of it.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// A BPF_MAP_TYPE_SK_STORAGE map definition in BTF form (socket storage maps need BTF).
/// The fields are placeholders the loader reads through BTF; they are never dereferenced.
#[repr(C)]
pub struct SockStorage {
    r#type: *const [i32; bpf_map_type::BPF_MAP_TYPE_SK_STORAGE as usize],
    key: *const i32,
    value: *const FlowState,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: placeholder pointers, never dereferenced.
unsafe impl Sync for SockStorage {}

/// Per-socket state in socket-local storage: one helper call finds it from the socket, and the
/// kernel frees it with the socket, so nothing is ever evicted or leaked.
#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "FLOWS")]
static FLOWS: SockStorage = SockStorage {
    r#type: core::ptr::null(),
    key: core::ptr::null(),
    value: core::ptr::null(),
    max_entries: core::ptr::null(),
    map_flags: core::ptr::null(),
};

/// The socket's state, created from `init` when given and absent.
#[inline(always)]
fn flow_state_of(sk: *mut c_void, init: Option<&mut FlowState>) -> Option<*mut FlowState> {
    let map = core::ptr::from_ref(&FLOWS).cast_mut().cast::<c_void>();
    // SAFETY: FLOWS is a socket storage map and sk a non-null socket from the skb.
    let p = unsafe {
        match init {
            Some(v) => bpf_sk_storage_get(
                map,
                sk,
                core::ptr::from_mut(v).cast(),
                u64::from(BPF_SK_STORAGE_GET_F_CREATE),
            ),
            None => bpf_sk_storage_get(map, sk, core::ptr::null_mut(), 0),
        }
    };
    (!p.is_null()).then_some(p.cast())
}

/// Wake the reader only once this much is waiting; it also drains the ring on a short timer.
/// One wakeup per record would cost more than the record itself under a handshake storm.
const WAKEUP_BYTES: u64 = 128 * 1024;

/// Flags for a ring buffer submit: wake userspace only when enough has piled up.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA.into()) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP.into()
    } else {
        BPF_RB_NO_WAKEUP.into()
    }
}

/// Per-CPU counters, indexed by `sensor_common::counter`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Tunables, written by userspace before attaching.
#[map]
pub static CONFIG: Array<TapConfig> = Array::with_max_entries(1, 0);

/// The socket each thread last opened a TLS (or CONNECT/STARTTLS) flow on, or sent a
/// ClientHello on after such plaintext, by pid_tgid: the certificate uprobes tie the
/// certificates a thread parses to that socket.
#[map]
pub static THREAD_SOCKET: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65_536, 0);

/// The socket each process last opened a TLS flow on, by tgid: for runtimes whose threads
/// hand a connection to each other mid-handshake (Go's goroutines move between threads), the
/// certificate uprobes fall back to it when the thread's own socket is not mid-handshake.
#[map]
pub static PROCESS_SOCKET: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16_384, 0);

/// Client sockets in the middle of a handshake, by cookie.
#[map]
pub static HANDSHAKING: LruHashMap<u64, u8> = LruHashMap::with_max_entries(65_536, 0);

/// Inbound TLS sockets whose first request head is still wanted, by cookie, when userspace
/// turned request heads on (`REQUEST_HEADS_ON[0]` non-zero): the `SSL_read` uprobe
/// (`request`) takes one head per socket and removes it.
#[map]
pub static WANT_HEAD: LruHashMap<u64, u8> = LruHashMap::with_max_entries(16_384, 0);

#[map]
pub static REQUEST_HEADS_ON: Array<u32> = Array::with_max_entries(1, 0);

/// One QUIC flow: a local UDP socket and one peer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct QuicKey {
    cookie: u64,
    peer: [u8; 16],
    peer_port: u16,
    _pad: [u8; 6],
}

/// What the tap keeps of one QUIC flow.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct QuicFlow {
    /// `flow_state::TLS` while the handshake goes on, then `DONE`.
    state: u8,
    /// The direction (of the local socket) the client's Initial went.
    client_dir: u8,
    pending_losses: u8,
    /// Length of `server_cid` (0: no server Initial seen yet).
    server_cid_len: u8,
    forwarded: u32,
    ring_used: u32,
    /// The Source Connection ID of the server's first Initial: the client's 1-RTT packets of
    /// this connection go to it (those of a previous connection on the socket do not).
    server_cid: [u8; 20],
}

/// QUIC flows of `QUIC` sockets, by socket cookie and peer.
#[map]
pub static QUIC_FLOWS: LruHashMap<QuicKey, QuicFlow> = LruHashMap::with_max_entries(65_536, 0);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const SOCK_DGRAM: u32 = 2;
/// A client's first Initial datagram is at least this long (RFC 9000 §14.1).
const QUIC_MIN_INITIAL: u32 = 1200;
const QUIC_V1: u32 = 0x0000_0001;
const QUIC_V2: u32 = 0x6b33_43cf;
/// IPv6 extension headers the tap walks past: hop-by-hop, routing, fragment, destination
/// options, authentication.
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DSTOPTS: u8 = 60;
/// Extension headers walked at most before the TCP header (each at most 2 KiB). A packet of a
/// tracked socket with more is counted (`segments_unreadable`) and its loss told to userspace.
const MAX_IPV6_EXT: u32 = 8;
/// TCP states (include/net/tcp_states.h) in which a socket takes data from its peer.
const TCP_ESTABLISHED: u32 = 1;
const TCP_FIN_WAIT1: u32 = 4;
const TCP_FIN_WAIT2: u32 = 5;
/// Payload this far ahead of `rcv_nxt` is outside any receive window.
const MAX_AHEAD: i32 = 1 << 30;
const LOOPBACK_IFINDEX: u32 = 1;
const CT_ALERT: u8 = 21;
const CT_HANDSHAKE: u8 = 22;
const CT_APPLICATION_DATA: u8 = 23;
/// Largest TLS record payload (TLSCiphertext).
const MAX_RECORD_LEN: u16 = 16384 + 2048;
/// Record headers followed per segment at most.
const MAX_WALK: u32 = 16;

/// One ring buffer record: a header and up to `N` payload bytes, `N` one of
/// `RECORD_CLASSES`. Only `payload_len` bytes of `payload` are meaningful; userspace reads no
/// further.
#[repr(C)]
struct SegmentRecord<const N: usize> {
    header: SegmentHeader,
    payload: [u8; N],
}

#[cgroup_skb(egress)]
pub fn tap_egress(ctx: SkBuffContext) -> i32 {
    tap(&ctx, direction::EGRESS);
    1
}

#[cgroup_skb(ingress)]
pub fn tap_ingress(ctx: SkBuffContext) -> i32 {
    tap(&ctx, direction::INGRESS);
    1
}

#[inline(always)]
pub fn bump(index: u32, by: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, and these programs do not preempt each other on one CPU.
        unsafe { *slot += by };
    }
}

/// What the tap learned from the IP and TCP (or UDP) headers.
struct Segment {
    /// A UDP datagram: `seq` and `tcp_flags` are 0.
    udp: bool,
    family: u8,
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: u16,
    dport: u16,
    seq: u32,
    tcp_flags: u8,
    payload_off: u32,
    payload_len: u32,
}

/// Where the packet is going and whether it may be forwarded.
struct Ctx<'a> {
    ctx: &'a SkBuffContext,
    skb: *mut __sk_buff,
    sk: *mut c_void,
    cookie: u64,
    dir: u8,
    /// False for ingress on loopback: the sender's egress forwards these bytes.
    emit: bool,
}

impl<'a> Ctx<'a> {
    #[inline(always)]
    fn new(ctx: &'a SkBuffContext, sk: *mut c_void, dir: u8, ifindex: u32) -> Self {
        let skb = ctx.as_ptr() as *mut __sk_buff;
        // SAFETY: the helper accepts the skb context of cgroup_skb programs.
        let cookie = unsafe { bpf_get_socket_cookie(skb as *mut _) };
        let skip_lo_ingress = CONFIG.get(0).is_none_or(|cfg| cfg.skip_lo_ingress != 0);
        Self {
            ctx,
            skb,
            sk,
            cookie,
            dir,
            emit: !(skip_lo_ingress && dir == direction::INGRESS && ifindex == LOOPBACK_IFINDEX),
        }
    }
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
    if protocol != ETH_P_IP && protocol != ETH_P_IPV6 {
        return;
    }
    // SAFETY: reading the context's socket pointer; the verifier checks it before use.
    let sk = unsafe { (*skb).__bindgen_anon_2.sk }.cast::<c_void>();
    if sk.is_null() {
        return;
    }
    // The common case first: a socket already known. Ignored sockets cost this one lookup.
    let state = flow_state_of(sk, None);
    if let Some(st) = state {
        // SAFETY: the socket's own storage; see below.
        let known = unsafe { (*st).state };
        if known == flow_state::IGNORE || known == flow_state::NEW {
            bump(counter::PACKETS_SEEN, 1);
            return;
        }
        if known == flow_state::DONE && !closes(ctx, protocol) {
            bump(counter::PACKETS_SEEN, 1);
            return;
        }
    }
    let Some(seg) = parse_headers(ctx, protocol, skb_len) else {
        // A packet of a socket mid-handshake whose TCP header the tap cannot find (more IPv6
        // extension headers than it walks): what it carried is lost to the sensor, and the
        // next record of the socket says so rather than leave a hole nobody sees.
        if let Some(st) = state
            // SAFETY: the socket's own storage, as below.
            && unsafe { (*st).state } != flow_state::DONE
            && is_tcp(sk)
        {
            // SAFETY: as above.
            unsafe { (*st).pending_losses |= loss::UNREADABLE };
            bump(counter::SEGMENTS_UNREADABLE, 1);
        }
        return;
    };
    bump(counter::PACKETS_SEEN, 1);
    if seg.udp {
        return tap_udp(&Ctx::new(ctx, sk, dir, ifindex), &seg, state);
    }
    if dir == direction::INGRESS && seg.payload_len > 0 && !accepted_by_tcp(sk.cast(), &seg) {
        bump(counter::SEGMENTS_NOT_ACCEPTED, 1);
        return;
    }
    let c = Ctx::new(ctx, sk, dir, ifindex);
    let Some(state) = state else {
        if seg.payload_len > 0 {
            start_flow(&c, &seg);
        }
        return;
    };
    // SAFETY: the socket's own storage. Another CPU may handle the other direction of the same
    // socket at the same time; that can only skew counts.
    let state = unsafe { &mut *state };
    match state.state {
        flow_state::IGNORE | flow_state::NEW => {}
        flow_state::DONE => closing(&c, &seg, state),
        _ => {
            if seg.payload_len == 0 {
                closing(&c, &seg, state);
            } else {
                track(&c, &seg, state, false);
                note_close(&c, &seg, state);
            }
        }
    }
}

/// Whether a datagram opens like a client's first QUIC flight: a long header Initial of
/// version 1 or 2 with an 8- to 20-byte Destination Connection ID, in at least 1200 bytes.
#[inline(always)]
fn opens_quic(ctx: &SkBuffContext, seg: &Segment) -> bool {
    if seg.payload_len < QUIC_MIN_INITIAL {
        return false;
    }
    let Ok(h) = ctx.load::<[u8; 6]>(seg.payload_off as usize) else {
        return false;
    };
    if h[0] & 0xc0 != 0xc0 {
        return false;
    }
    let version = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
    let ty = (h[0] >> 4) & 3;
    let initial = (version == QUIC_V1 && ty == 0) || (version == QUIC_V2 && ty == 1);
    initial && h[5] >= 8 && h[5] <= 20
}

/// A UDP datagram: follow the QUIC flow it belongs to, or the one it opens.
#[inline(always)]
fn tap_udp(c: &Ctx, seg: &Segment, state: Option<*mut FlowState>) {
    let st = match state {
        Some(st) => st,
        None => {
            if !opens_quic(c.ctx, seg) {
                // What a socket sends first tells what it is; what it receives may be anyone's.
                if c.dir == direction::EGRESS {
                    insert_ignored(c.sk);
                }
                return;
            }
            // Only UDP sockets: a raw socket's own UDP headers are not a flow of its.
            // SAFETY: the helper takes the skb's socket and returns null for a request socket.
            let sk = unsafe { bpf_sk_fullsock(c.sk.cast()) };
            if sk.is_null() {
                return;
            }
            // SAFETY: a full socket, non-null; the verifier allows reading these fields.
            let (ty, proto) = unsafe { ((*sk).type_, (*sk).protocol) };
            if ty != SOCK_DGRAM || proto != u32::from(IPPROTO_UDP) {
                return;
            }
            if c.dir == direction::EGRESS {
                let self_tgid = CONFIG.get(0).map_or(0, |cfg| cfg.self_tgid);
                if self_tgid != 0 && (bpf_get_current_pid_tgid() >> 32) as u32 == self_tgid {
                    return insert_ignored(c.sk);
                }
            }
            let mut init = FlowState {
                state: flow_state::QUIC,
                client_dir: NO_DIRECTION,
                ..FlowState::default()
            };
            let Some(st) = flow_state_of(c.sk, Some(&mut init)) else {
                return;
            };
            st
        }
    };
    // SAFETY: the socket's own storage.
    if unsafe { (*st).state } != flow_state::QUIC {
        return;
    }
    let (peer, peer_port) = if c.dir == direction::EGRESS {
        (seg.daddr, seg.dport)
    } else {
        (seg.saddr, seg.sport)
    };
    let key = QuicKey {
        cookie: c.cookie,
        peer,
        peer_port,
        _pad: [0; 6],
    };
    let mut first = false;
    let flow = match QUIC_FLOWS.get_ptr_mut(&key) {
        Some(f) => f,
        None => {
            if !opens_quic(c.ctx, seg) {
                bump(counter::DATAGRAMS_NOT_QUIC, 1);
                return;
            }
            let init = QuicFlow {
                state: flow_state::TLS,
                client_dir: c.dir,
                pending_losses: 0,
                server_cid_len: 0,
                forwarded: 0,
                ring_used: 0,
                server_cid: [0; 20],
            };
            if QUIC_FLOWS.insert(&key, &init, 0).is_err() {
                return;
            }
            bump(counter::QUIC_FLOWS_TRACKED, 1);
            first = true;
            match QUIC_FLOWS.get_ptr_mut(&key) {
                Some(f) => f,
                None => return,
            }
        }
    };
    // SAFETY: a value of the LRU map, valid for this program run.
    let flow = unsafe { &mut *flow };
    if flow.state != flow_state::TLS {
        // A client that keeps its socket opens its next connection to the same peer with
        // another Initial: follow it afresh (userspace tells it from the old one by its
        // connection ID).
        if c.dir != flow.client_dir || !opens_quic(c.ctx, seg) {
            return;
        }
        flow.state = flow_state::TLS;
        flow.forwarded = 0;
        flow.ring_used = 0;
        flow.server_cid_len = 0;
        bump(counter::QUIC_FLOWS_TRACKED, 1);
        first = true;
    }
    let mut flags = if first { segment_flags::FIRST } else { 0 };
    if c.dir != flow.client_dir {
        if flow.server_cid_len == 0 {
            note_server_cid(c, seg, flow);
        }
    } else if client_finished(c, seg, flow) {
        // The client's first short header (1-RTT) packet of this connection: it has the
        // server's Finished checked and its own sent. The handshake is over; this datagram is
        // the last one forwarded.
        flow.state = flow_state::DONE;
        flags |= segment_flags::HANDSHAKE_DONE;
        bump(counter::QUIC_HANDSHAKES_DONE, 1);
    }
    if !c.emit {
        return;
    }
    let cfg = CONFIG.get(0).copied().unwrap_or_default();
    let remaining = cfg.byte_budget.saturating_sub(flow.forwarded);
    if remaining == 0 {
        flow.state = flow_state::DONE;
        bump(counter::BUDGET_EXHAUSTED, 1);
        return;
    }
    let mut len = seg.payload_len;
    if len >= remaining {
        flags |= segment_flags::BUDGET_EXHAUSTED;
        flow.state = flow_state::DONE;
        bump(counter::BUDGET_EXHAUSTED, 1);
        len = remaining;
    }
    // A datagram is never chunked: one larger than a record (a GSO burst) is cut.
    if len > CHUNK_CAP as u32 {
        len = CHUNK_CAP as u32;
    }
    let cost = segment_cost(len);
    if flow.ring_used.saturating_add(cost) > cfg.ring_budget {
        flow.state = flow_state::DONE;
        bump(counter::RING_BUDGET_EXHAUSTED, 1);
        emit(
            c,
            seg,
            0,
            flags | segment_flags::BUDGET_EXHAUSTED | segment_flags::TRUNCATED,
            &mut flow.pending_losses,
        );
        return;
    }
    flow.ring_used += cost;
    flow.forwarded = flow.forwarded.saturating_add(len);
    emit(c, seg, len, flags, &mut flow.pending_losses);
}

/// Keep the Source Connection ID of the server's first Initial packet.
#[inline(always)]
fn note_server_cid(c: &Ctx, seg: &Segment, flow: &mut QuicFlow) {
    let off = seg.payload_off as usize;
    let Ok(h) = c.ctx.load::<[u8; 6]>(off) else {
        return;
    };
    // An Initial (not a Retry, whose ID the server's Initial may replace).
    let version = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
    let ty = (h[0] >> 4) & 3;
    let initial = (version == QUIC_V1 && ty == 0) || (version == QUIC_V2 && ty == 1);
    if h[0] & 0x80 == 0 || !initial || h[5] > 20 {
        return;
    }
    let scid_at = off + 6 + h[5] as usize;
    let Ok(len) = c.ctx.load::<u8>(scid_at) else {
        return;
    };
    if len == 0 || len > 20 {
        return;
    }
    if let Ok(cid) = c.ctx.load::<[u8; 20]>(scid_at + 1) {
        flow.server_cid = cid;
        flow.server_cid_len = len;
    }
}

/// A short header packet from the client to the connection ID its server chose.
#[inline(always)]
fn client_finished(c: &Ctx, seg: &Segment, flow: &QuicFlow) -> bool {
    let off = seg.payload_off as usize;
    if flow.server_cid_len == 0 || !c.ctx.load::<u8>(off).is_ok_and(|b| b & 0x80 == 0) {
        return false;
    }
    let Ok(dcid) = c.ctx.load::<[u8; 20]>(off + 1) else {
        return false;
    };
    let mut i = 0usize;
    while i < 20 {
        if i < flow.server_cid_len as usize && dcid[i] != flow.server_cid[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether the local socket's TCP takes this received payload into its stream: it carries ACK
/// (and no SYN), the socket is established (or half-closed by us), and it is not wholly
/// before what the socket has received already. What TCP drops is not the stream the
/// application reads, and an interceptor that knows the sensor is there may send it.
#[inline(always)]
fn accepted_by_tcp(sk: *mut bpf_sock, seg: &Segment) -> bool {
    if seg.tcp_flags & tcp_flags::ACK == 0 || seg.tcp_flags & tcp_flags::SYN != 0 {
        return false;
    }
    // SAFETY: sk is the skb's non-null socket; the verifier allows reading its state.
    let state = unsafe { (*sk).state };
    if state != TCP_ESTABLISHED && state != TCP_FIN_WAIT1 && state != TCP_FIN_WAIT2 {
        return false;
    }
    // SAFETY: the helper takes the skb's socket and returns null for anything but TCP.
    let tp = unsafe { bpf_tcp_sock(sk) };
    if tp.is_null() {
        return false;
    }
    // SAFETY: non-null, checked above.
    let rcv_nxt = unsafe { (*tp).rcv_nxt };
    let end = seg.seq.wrapping_add(seg.payload_len);
    (end.wrapping_sub(rcv_nxt) as i32) > 0 && (seg.seq.wrapping_sub(rcv_nxt) as i32) < MAX_AHEAD
}

/// Whether the socket is a TCP socket (not a raw socket sending TCP headers of its own).
#[inline(always)]
fn is_tcp(sk: *mut c_void) -> bool {
    // SAFETY: the helper takes the skb's socket and returns null for anything but TCP.
    !unsafe { bpf_tcp_sock(sk.cast()) }.is_null()
}

/// Whether a TCP segment carries FIN or RST, reading as little as possible.
#[inline(always)]
fn closes(ctx: &SkBuffContext, protocol: u16) -> bool {
    let l4_off = if protocol == ETH_P_IP {
        match ctx.load::<u8>(0) {
            Ok(vihl) => u32::from(vihl & 0x0f) * 4,
            Err(_) => return false,
        }
    } else {
        40
    };
    ctx.load::<u8>(l4_off as usize + 13)
        .is_ok_and(|f| f & (tcp_flags::FIN | tcp_flags::RST) != 0)
}

/// FIN and RST without payload on a tracked socket: forward them, and forget the socket when it
/// is closed.
#[inline(always)]
fn closing(c: &Ctx, seg: &Segment, state: &mut FlowState) {
    if seg.tcp_flags & (tcp_flags::FIN | tcp_flags::RST) == 0 {
        return;
    }
    if c.emit {
        emit(c, seg, 0, 0, &mut state.pending_losses);
    }
    note_close(c, seg, state);
}

/// Count sockets closed (FIN both ways, or RST). Their state goes with the socket.
#[inline(always)]
fn note_close(c: &Ctx, seg: &Segment, state: &mut FlowState) {
    let closed_before = state.fin == 3 || state.fin & 4 != 0;
    if seg.tcp_flags & tcp_flags::FIN != 0 {
        state.fin |= 1 << (c.dir & 1);
    }
    if seg.tcp_flags & tcp_flags::RST != 0 {
        state.fin |= 4;
    }
    if !closed_before && (state.fin == 3 || state.fin & 4 != 0) {
        bump(counter::FLOWS_CLOSED, 1);
        let _ = HANDSHAKING.remove(&c.cookie);
    }
}

/// The sending thread opens a client handshake on this socket: the certificates its TLS
/// library parses next are this socket's (the uprobes' pairing).
#[inline(always)]
fn note_client_handshake(c: &Ctx) {
    let id = bpf_get_current_pid_tgid();
    let _ = THREAD_SOCKET.insert(&id, &c.cookie, 0);
    let _ = PROCESS_SOCKET.insert(&((id >> 32) as u32), &c.cookie, 0);
    let _ = HANDSHAKING.insert(&c.cookie, &1, 0);
}

/// Classify a socket on its first payload and start tracking it.
#[inline(always)]
fn start_flow(c: &Ctx, seg: &Segment) {
    if !is_tcp(c.sk) {
        return;
    }
    let Some(head) = load_head(c.ctx, seg) else {
        return insert_ignored(c.sk);
    };
    if c.dir == direction::EGRESS {
        let self_tgid = CONFIG.get(0).map_or(0, |cfg| cfg.self_tgid);
        if self_tgid != 0 && (bpf_get_current_pid_tgid() >> 32) as u32 == self_tgid {
            // The daemon's own connections (its active probe) are not reported.
            return insert_ignored(c.sk);
        }
    }
    let mut st = FlowState {
        client_dir: NO_DIRECTION,
        ..FlowState::default()
    };
    if looks_like_tls_record(&head) {
        st.state = flow_state::TLS;
    } else if seg.payload_len >= 8 && looks_like_tls_prefix(&head) {
        st.state = flow_state::PREFIX;
    } else {
        return insert_ignored(c.sk);
    }
    let Some(state) = flow_state_of(c.sk, Some(&mut st)) else {
        return;
    };
    bump(counter::FLOWS_TRACKED, 1);
    if c.dir == direction::EGRESS {
        // A client socket (its first payload goes out), sent from the connecting thread.
        note_client_handshake(c);
    }
    if c.dir == direction::INGRESS
        && st.state == flow_state::TLS
        && REQUEST_HEADS_ON.get(0).is_some_and(|on| *on != 0)
    {
        // A server socket (its first payload comes in) whose request head is wanted.
        let _ = WANT_HEAD.insert(&c.cookie, &1, 0);
    }
    // SAFETY: the socket's own storage, just created.
    track(c, seg, unsafe { &mut *state }, true);
}

/// The first 8 payload bytes (5 for a shorter payload, padded with zeros).
#[inline(always)]
fn load_head(ctx: &SkBuffContext, seg: &Segment) -> Option<[u8; 8]> {
    let off = seg.payload_off as usize;
    if seg.payload_len >= 8 {
        ctx.load::<[u8; 8]>(off).ok()
    } else if seg.payload_len >= 5 {
        let h = ctx.load::<[u8; 5]>(off).ok()?;
        Some([h[0], h[1], h[2], h[3], h[4], 0, 0, 0])
    } else {
        None
    }
}

#[inline(always)]
fn insert_ignored(sk: *mut c_void) {
    let mut st = FlowState {
        state: flow_state::IGNORE,
        client_dir: NO_DIRECTION,
        ..FlowState::default()
    };
    let _ = flow_state_of(sk, Some(&mut st));
    bump(counter::FLOWS_NOT_TLS, 1);
}

/// A TLS record header that can open a direction: handshake or alert, version 3.0 to 3.4,
/// and a length no larger than a record can be.
#[inline(always)]
fn looks_like_tls_record(h: &[u8; 8]) -> bool {
    let len = u16::from_be_bytes([h[3], h[4]]);
    (h[0] == CT_HANDSHAKE || h[0] == CT_ALERT)
        && h[1] == 3
        && h[2] <= 4
        && len > 0
        && len <= MAX_RECORD_LEN
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

/// Follow the records of a payload segment, forward it within the budget, and decide whether
/// the handshake is over.
#[inline(always)]
fn track(c: &Ctx, seg: &Segment, state: &mut FlowState, first: bool) {
    let cfg = CONFIG.get(0).copied().unwrap_or_default();
    let d = (c.dir & 1) as usize;
    let peer_app = state.dirs[1 - d].app_records;

    // A direction starts following records at its first segment that opens with a record.
    if state.dirs[d].sync == sync::NONE {
        if let Some(head) = load_head(c.ctx, seg)
            && looks_like_tls_record(&head)
        {
            state.dirs[d].sync = sync::ON;
            state.dirs[d].next_hdr_seq = seg.seq;
            if state.client_dir == NO_DIRECTION && head[0] == CT_HANDSHAKE {
                state.client_dir = c.dir;
                if c.dir == direction::EGRESS && state.state == flow_state::PREFIX {
                    // A client's ClientHello after plaintext (a proxy's CONNECT, STARTTLS):
                    // the handshake starts now, on this thread, which may have opened other
                    // sockets since this one's first bytes (a browser's socket thread).
                    note_client_handshake(c);
                }
            }
            state.state = flow_state::TLS;
        } else if state.state == flow_state::PREFIX {
            state.prefix_scanned = state.prefix_scanned.saturating_add(seg.payload_len);
            if state.prefix_scanned > cfg.prefix_budget {
                // Give up loudly: userspace reports the flow as one it could not follow.
                state.state = flow_state::IGNORE;
                bump(counter::PREFIX_BUDGET_EXHAUSTED, 1);
                if c.emit {
                    emit(
                        c,
                        seg,
                        0,
                        segment_flags::PREFIX_EXHAUSTED,
                        &mut state.pending_losses,
                    );
                }
                return;
            }
        }
    }
    if let Some(dt) = state.dirs.get_mut(d) {
        let headers = walk(c.ctx, seg, dt, peer_app);
        state.overhead = state.overhead.saturating_add(5 * headers);
    }

    let mut flags = if first { segment_flags::FIRST } else { 0 };
    if state.client_dir != NO_DIRECTION {
        let client = (state.client_dir & 1) as usize;
        let (cl, sv) = (state.dirs[client], state.dirs[1 - client]);
        if cl.app_records >= 1 && sv.app_after_peer >= 1 {
            state.state = flow_state::DONE;
            flags |= segment_flags::HANDSHAKE_DONE;
            bump(counter::HANDSHAKES_DONE, 1);
            let _ = HANDSHAKING.remove(&c.cookie);
        }
    }

    if !c.emit {
        return;
    }
    if state.state == flow_state::PREFIX {
        // Plaintext before TLS: bounded by the prefix budget, not counted in the byte budget.
        if charge(c, seg, state, &cfg, seg.payload_len, flags) {
            emit(c, seg, seg.payload_len, flags, &mut state.pending_losses);
        }
        return;
    }
    // The budget is for handshake bytes: record headers do not use it up.
    let remaining = cfg
        .byte_budget
        .saturating_add(state.overhead)
        .saturating_sub(state.forwarded);
    if remaining == 0 {
        state.state = flow_state::DONE;
        bump(counter::BUDGET_EXHAUSTED, 1);
        return;
    }
    let len = if seg.payload_len >= remaining {
        flags |= segment_flags::BUDGET_EXHAUSTED;
        state.state = flow_state::DONE;
        bump(counter::BUDGET_EXHAUSTED, 1);
        remaining
    } else {
        seg.payload_len
    };
    if !charge(c, seg, state, &cfg, len, flags) {
        return;
    }
    state.forwarded = state.forwarded.saturating_add(len);
    emit(c, seg, len, flags, &mut state.pending_losses);
}

/// Charge the ring bytes `len` payload bytes will reserve to the socket's ring budget. A socket
/// over its budget is given up on, loudly: a header-only record, cut and flagged, tells
/// userspace that the rest of this segment and the flow are not forwarded.
#[inline(always)]
fn charge(
    c: &Ctx,
    seg: &Segment,
    state: &mut FlowState,
    cfg: &TapConfig,
    len: u32,
    flags: u8,
) -> bool {
    let cost = segment_cost(len);
    if state.ring_used.saturating_add(cost) <= cfg.ring_budget {
        state.ring_used += cost;
        return true;
    }
    state.state = flow_state::DONE;
    bump(counter::RING_BUDGET_EXHAUSTED, 1);
    emit(
        c,
        seg,
        0,
        flags | segment_flags::BUDGET_EXHAUSTED | segment_flags::TRUNCATED,
        &mut state.pending_losses,
    );
    false
}

/// Follow the record headers inside one segment of direction `d`; the number of headers
/// walked.
#[inline(always)]
fn walk(ctx: &SkBuffContext, seg: &Segment, d: &mut DirTrack, peer_app: u8) -> u32 {
    let mut walked = 0;
    if d.sync != sync::ON {
        return walked;
    }
    let len = seg.payload_len;
    let mut hdr = [0u8; 5];
    let mut have_hdr = false;
    if d.partial_len > 0 {
        // The rest of a header that began at the end of the previous segment.
        let held = u32::from(d.partial_len);
        if seg.seq != d.next_hdr_seq.wrapping_add(held) {
            if (seg
                .seq
                .wrapping_add(len)
                .wrapping_sub(d.next_hdr_seq.wrapping_add(held)) as i32)
                <= 0
            {
                return walked; // a retransmission of what we already have
            }
            lose_sync(d);
            return walked;
        }
        let need = 5 - held;
        if need > len {
            lose_sync(d);
            return walked;
        }
        let mut i = 0u32;
        while i < 4 {
            if i < held {
                hdr[i as usize] = d.partial[i as usize];
            } else if i - held < need {
                match ctx.load::<u8>((seg.payload_off + i - held) as usize) {
                    Ok(b) => hdr[i as usize] = b,
                    Err(_) => {
                        lose_sync(d);
                        return walked;
                    }
                }
            }
            i += 1;
        }
        match ctx.load::<u8>((seg.payload_off + 4 - held) as usize) {
            Ok(b) => hdr[4] = b,
            Err(_) => {
                lose_sync(d);
                return walked;
            }
        }
        d.partial_len = 0;
        have_hdr = true;
    }
    for _ in 0..MAX_WALK {
        if have_hdr {
            have_hdr = false;
        } else {
            let off = d.next_hdr_seq.wrapping_sub(seg.seq) as i32;
            if off < 0 {
                if (seg.seq.wrapping_add(len).wrapping_sub(d.next_hdr_seq) as i32) <= 0 {
                    return walked; // old data: a retransmission
                }
                lose_sync(d); // a header we never saw
                return walked;
            }
            let off = off as u32;
            if off >= len {
                return walked; // the next header is in a later segment
            }
            if off + 5 > len {
                hold_partial(ctx, seg, d, off);
                return walked;
            }
            match ctx.load::<[u8; 5]>((seg.payload_off + off) as usize) {
                Ok(h) => hdr = h,
                Err(_) => {
                    lose_sync(d);
                    return walked;
                }
            }
        }
        let rec_len = u16::from_be_bytes([hdr[3], hdr[4]]);
        if !(20..=24).contains(&hdr[0]) || hdr[1] != 3 || hdr[2] > 4 || rec_len > MAX_RECORD_LEN {
            lose_sync(d);
            return walked;
        }
        if hdr[0] == CT_APPLICATION_DATA {
            d.app_records = d.app_records.saturating_add(1);
            if peer_app > 0 {
                d.app_after_peer = d.app_after_peer.saturating_add(1);
            }
        }
        d.next_hdr_seq = d.next_hdr_seq.wrapping_add(5 + u32::from(rec_len));
        walked += 1;
    }
    walked
}

/// Keep the first bytes of a header that continues in the next segment.
#[inline(always)]
fn hold_partial(ctx: &SkBuffContext, seg: &Segment, d: &mut DirTrack, off: u32) {
    let avail = seg.payload_len - off; // 1..=4
    let mut i = 0u32;
    while i < 4 {
        if i < avail {
            match ctx.load::<u8>((seg.payload_off + off + i) as usize) {
                Ok(b) => d.partial[i as usize] = b,
                Err(_) => return lose_sync(d),
            }
        }
        i += 1;
    }
    d.partial_len = avail as u8;
}

#[inline(always)]
fn lose_sync(d: &mut DirTrack) {
    d.sync = sync::LOST;
    d.partial_len = 0;
    bump(counter::RECORD_SYNC_LOST, 1);
}

/// Write the segment to the ring buffer, split into chunks of at most `CHUNK_CAP` bytes, each in
/// the smallest record class that holds it. `pending` holds [`loss`] bits for the next record
/// of the socket: a record that could not be written leaves `RING_DROP` there, so that the next
/// one tells userspace.
#[inline(always)]
fn emit(c: &Ctx, seg: &Segment, len: u32, extra_flags: u8, pending: &mut u8) {
    let mut header = SegmentHeader {
        kind: kind::SEGMENT,
        flags: extra_flags,
        direction: c.dir,
        family: seg.family,
        tcp_flags: seg.tcp_flags,
        // SAFETY: helpers available to every program type.
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
        cookie: c.cookie,
        pid_tgid: 0,
        seq: seg.seq,
        payload_len: 0,
        segment_len: seg.payload_len,
        saddr: seg.saddr,
        daddr: seg.daddr,
        sport: seg.sport,
        dport: seg.dport,
        losses: *pending,
        transport: if seg.udp {
            transport::UDP
        } else {
            transport::TCP
        },
        _reserved: [0; 2],
        rcv_nxt: 0,
    };
    // SAFETY: the helper takes the skb's socket and returns null for anything but TCP.
    let tp = unsafe { bpf_tcp_sock(c.sk.cast()) };
    if !tp.is_null() {
        // SAFETY: non-null, checked above.
        header.rcv_nxt = unsafe { (*tp).rcv_nxt };
        header.flags |= segment_flags::HAS_RCV_NXT;
    }
    if c.dir == direction::EGRESS {
        header.pid_tgid = bpf_get_current_pid_tgid();
        header.flags |= segment_flags::HAS_PID;
    }
    if len == 0 {
        let Some(mut entry) = EVENTS.reserve::<SegmentHeader>(0) else {
            bump(counter::RINGBUF_DROPS, 1);
            *pending |= loss::RING_DROP;
            return;
        };
        entry.write(header);
        entry.submit(wakeup_flags());
        *pending = 0;
        return;
    }
    let cut = len as usize > CHUNK_CAP * MAX_CHUNKS || len < seg.payload_len;
    if cut {
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
        let mut n = len - off;
        if n > CHUNK_CAP as u32 {
            n = CHUNK_CAP as u32;
        }
        let mut h = header;
        h.seq = seg.seq.wrapping_add(off);
        h.payload_len = n;
        h.segment_len = seg.payload_len - off;
        // Only the last record of a cut segment says so: userspace reads a gap after it.
        if cut && (off + n >= len || i + 1 == MAX_CHUNKS as u32) {
            h.flags |= segment_flags::TRUNCATED;
        }
        let put = if n <= RECORD_CLASSES[0] {
            put::<{ RECORD_CLASSES[0] as usize }>(c, seg, &h, off, n)
        } else if n <= RECORD_CLASSES[1] {
            put::<{ RECORD_CLASSES[1] as usize }>(c, seg, &h, off, n)
        } else if n <= RECORD_CLASSES[2] {
            put::<{ RECORD_CLASSES[2] as usize }>(c, seg, &h, off, n)
        } else if n <= RECORD_CLASSES[3] {
            put::<{ RECORD_CLASSES[3] as usize }>(c, seg, &h, off, n)
        } else {
            put::<CHUNK_CAP>(c, seg, &h, off, n)
        };
        match put {
            Put::Written => {
                *pending = 0;
                bump(counter::SEGMENTS_FORWARDED, 1);
                bump(counter::BYTES_FORWARDED, n as u64);
            }
            Put::RingFull => {
                bump(counter::RINGBUF_DROPS, 1);
                *pending |= loss::RING_DROP;
                return;
            }
            Put::Failed => return,
        }
    }
}

/// What became of one record.
enum Put {
    Written,
    RingFull,
    /// The payload could not be read (the verifier's bound or the skb): nothing written.
    Failed,
}

/// Reserve a record of class `N`, copy `n` payload bytes from `off` into it and submit it.
#[inline(always)]
fn put<const N: usize>(c: &Ctx, seg: &Segment, h: &SegmentHeader, off: u32, n: u32) -> Put {
    let Some(mut entry) = EVENTS.reserve::<SegmentRecord<N>>(0) else {
        return Put::RingFull;
    };
    // The verifier must see n in [1, N] right at the helper call; a volatile read keeps LLVM
    // from folding the checks into a form the verifier cannot follow.
    // SAFETY: reading a local.
    let n = unsafe { core::ptr::read_volatile(&n) };
    if n == 0 || n > N as u32 {
        entry.discard(0);
        return Put::Failed;
    }
    let record = entry.as_mut_ptr();
    // SAFETY: the reservation is a SegmentRecord<N>-sized region owned by this program until
    // submit or discard; the payload array holds N >= n bytes.
    let ret = unsafe {
        core::ptr::addr_of_mut!((*record).header).write(*h);
        bpf_skb_load_bytes(
            c.skb as *const _,
            seg.payload_off + off,
            core::ptr::addr_of_mut!((*record).payload) as *mut _,
            n,
        )
    };
    if ret != 0 {
        entry.discard(0);
        return Put::Failed;
    }
    entry.submit(wakeup_flags());
    Put::Written
}

/// Parse the IPv4 or IPv6 header and the TCP or UDP header. `None` for anything that is not
/// a TCP segment with a sane header or a UDP datagram.
#[inline(always)]
fn parse_headers(ctx: &SkBuffContext, protocol: u16, skb_len: u32) -> Option<Segment> {
    let mut seg = Segment {
        udp: false,
        family: 0,
        saddr: [0; 16],
        daddr: [0; 16],
        sport: 0,
        dport: 0,
        seq: 0,
        tcp_flags: 0,
        payload_off: 0,
        payload_len: 0,
    };
    let l4_off: u32 = match protocol {
        ETH_P_IP => {
            let vihl: u8 = ctx.load(0).ok()?;
            let proto: u8 = ctx.load(9).ok()?;
            // (protocol first: other packets leave after two loads)
            if vihl >> 4 != 4 || (proto != IPPROTO_TCP && proto != IPPROTO_UDP) {
                return None;
            }
            seg.udp = proto == IPPROTO_UDP;
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
            let mut next: u8 = ctx.load(6).ok()?;
            let mut off: u32 = 40;
            // Extension headers (a destination options header must not hide the segment).
            for _ in 0..MAX_IPV6_EXT {
                match next {
                    IPPROTO_TCP | IPPROTO_UDP => break,
                    IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                        let h: [u8; 2] = ctx.load(off as usize).ok()?;
                        next = h[0];
                        off += (u32::from(h[1]) + 1) * 8;
                    }
                    IPV6_AH => {
                        let h: [u8; 2] = ctx.load(off as usize).ok()?;
                        next = h[0];
                        off += (u32::from(h[1]) + 2) * 4;
                    }
                    IPV6_FRAGMENT => {
                        let h: [u8; 4] = ctx.load(off as usize).ok()?;
                        if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                            return None; // a later fragment: no TCP header here
                        }
                        next = h[0];
                        off += 8;
                    }
                    _ => return None,
                }
            }
            if next != IPPROTO_TCP && next != IPPROTO_UDP {
                return None;
            }
            seg.udp = next == IPPROTO_UDP;
            seg.saddr = ctx.load(8).ok()?;
            seg.daddr = ctx.load(24).ok()?;
            seg.family = family::INET6;
            off
        }
        _ => return None,
    };
    let ports: [u8; 4] = ctx.load(l4_off as usize).ok()?;
    seg.sport = u16::from_be_bytes([ports[0], ports[1]]);
    seg.dport = u16::from_be_bytes([ports[2], ports[3]]);
    if seg.udp {
        seg.payload_off = l4_off + 8;
        seg.payload_len = skb_len.saturating_sub(seg.payload_off);
        return Some(seg);
    }
    seg.seq = u32::from_be(ctx.load(l4_off as usize + 4).ok()?);
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
