//! Types shared by the kernel programs (`sensor-ebpf`) and userspace (`sensor-core` decodes the
//! records, `sensord` loads the maps).
//!
//! Everything here is `#[repr(C)]`, plain old data, and laid out so that the kernel can write it
//! into the ring buffer and userspace can read it back with `read_unaligned`. Changing a layout
//! changes the wire format between the two halves; they are always built together.
#![no_std]

/// Kind tag at the start of every ring buffer record.
pub mod kind {
    /// A [`SegmentHeader`](super::SegmentHeader) followed by `payload_len` payload bytes.
    pub const SEGMENT: u32 = 1;
    /// A [`SocketEvent`](super::SocketEvent): process attribution for a socket cookie.
    pub const SOCKET: u32 = 2;
    /// A [`CertChunkHeader`](super::CertChunkHeader) followed by `len` bytes of a DER
    /// certificate that an OpenSSL client parsed during a handshake (uprobe on `d2i_X509`).
    pub const CERT: u32 = 3;
    /// A [`RequestHead`](super::RequestHead): the first plaintext a local TLS server read on an
    /// inbound connection (uprobe on `SSL_read`), for its request line and User-Agent.
    pub const REQUEST_HEAD: u32 = 4;
}

/// Direction of a segment relative to the local socket that the kernel saw it on.
pub mod direction {
    /// Sent by the local socket (cgroup_skb egress).
    pub const EGRESS: u8 = 0;
    /// Received by the local socket (cgroup_skb ingress).
    pub const INGRESS: u8 = 1;
}

/// Bits of [`SegmentHeader::flags`].
pub mod segment_flags {
    /// The payload was cut: the segment's bytes from this record's `seq` on are `segment_len`,
    /// only `payload_len` of them follow, and no further chunk of the segment follows. Set on
    /// the last record of a segment only.
    pub const TRUNCATED: u8 = 1 << 0;
    /// This record is one chunk of a segment larger than one record holds; more may follow.
    pub const CHUNKED: u8 = 1 << 1;
    /// The flow's byte budget or ring budget ran out with this segment; the kernel forwards no
    /// more payload.
    pub const BUDGET_EXHAUSTED: u8 = 1 << 2;
    /// The pid/tgid fields are meaningful (egress in process context).
    pub const HAS_PID: u8 = 1 << 3;
    /// The kernel saw the handshake end with this segment.
    pub const HANDSHAKE_DONE: u8 = 1 << 4;
    /// The first payload the kernel saw on this socket: a new connection.
    pub const FIRST: u8 = 1 << 5;
    /// The flow opened in plaintext (CONNECT, STARTTLS) and the kernel gave up on it at its
    /// prefix budget: this header-only record says so.
    pub const PREFIX_EXHAUSTED: u8 = 1 << 6;
    /// [`SegmentHeader::rcv_nxt`](super::SegmentHeader::rcv_nxt) is meaningful.
    pub const HAS_RCV_NXT: u8 = 1 << 7;
}

/// Values of [`SegmentHeader::transport`].
pub mod transport {
    /// A TCP segment: `seq`, `tcp_flags` and `rcv_nxt` are TCP's.
    pub const TCP: u8 = 0;
    /// A UDP datagram of a QUIC flow: `seq` and `tcp_flags` are 0; a datagram larger than
    /// [`CHUNK_CAP`](super::CHUNK_CAP) is cut (`TRUNCATED`), never chunked.
    pub const UDP: u8 = 1;
}

/// Bits of [`SegmentHeader::losses`]: what of this socket's traffic the kernel lost before
/// this record. Userspace turns each into `capture_incomplete`.
pub mod loss {
    /// Records were lost: the ring buffer was full.
    pub const RING_DROP: u8 = 1 << 0;
    /// A packet of the socket arrived whose TCP header the tap could not find (more IPv6
    /// extension headers than it walks, a header it cannot read): whatever it carried was not
    /// forwarded.
    pub const UNREADABLE: u8 = 1 << 1;
}

/// TCP header flag bits as they appear in byte 13 of the TCP header.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// Address family values used in [`SegmentHeader::family`].
pub mod family {
    pub const INET: u8 = 4;
    pub const INET6: u8 = 6;
}

/// Indices into the per-CPU counter array `COUNTERS`.
pub mod counter {
    /// TCP segments and UDP datagrams the tap programs looked at.
    pub const PACKETS_SEEN: u32 = 0;
    /// Payload bytes written to the ring buffer.
    pub const BYTES_FORWARDED: u32 = 1;
    /// Records that did not fit into the ring buffer.
    pub const RINGBUF_DROPS: u32 = 2;
    /// Flows the kernel started tracking.
    pub const FLOWS_TRACKED: u32 = 3;
    /// Flows whose byte budget ran out before the handshake was over.
    pub const BUDGET_EXHAUSTED: u32 = 4;
    /// Segment records emitted.
    pub const SEGMENTS_FORWARDED: u32 = 5;
    /// Segments cut because they were larger than all chunks of one record.
    pub const SEGMENTS_TRUNCATED: u32 = 6;
    /// Flows that were found not to be TLS and are ignored from then on.
    pub const FLOWS_NOT_TLS: u32 = 7;
    /// Packets the tap could not parse (bad IP or TCP header).
    pub const PARSE_ERRORS: u32 = 8;
    /// Flows whose handshake the kernel saw end (application data both ways).
    pub const HANDSHAKES_DONE: u32 = 9;
    /// Tracked sockets seen closing (FIN both ways, or RST).
    pub const FLOWS_CLOSED: u32 = 10;
    /// Directions whose record headers the kernel lost track of.
    pub const RECORD_SYNC_LOST: u32 = 11;
    /// Socket (process attribution) events emitted.
    pub const SOCKET_EVENTS: u32 = 12;
    /// Flows that opened in plaintext and did not turn into TLS within the prefix budget.
    pub const PREFIX_BUDGET_EXHAUSTED: u32 = 13;
    /// Certificates captured by the `d2i_X509` uprobe during a handshake.
    pub const UPROBE_CERTS: u32 = 14;
    /// Certificates longer than [`MAX_CERT_LEN`](super::MAX_CERT_LEN), cut.
    pub const UPROBE_CERTS_TRUNCATED: u32 = 15;
    /// Reads of user memory that failed in the uprobe.
    pub const UPROBE_READ_ERRORS: u32 = 16;
    /// Segments a local socket's TCP would not take (no ACK, old or far-off sequence numbers,
    /// a socket not established): injected or stale, not followed.
    pub const SEGMENTS_NOT_ACCEPTED: u32 = 17;
    /// Packets of a socket mid-handshake whose TCP header the tap could not find.
    pub const SEGMENTS_UNREADABLE: u32 = 18;
    /// Flows that used up their share of the ring buffer ([`TapConfig::ring_budget`]), most
    /// often by sending their handshake in many tiny segments.
    pub const RING_BUDGET_EXHAUSTED: u32 = 19;
    /// Request heads read by the `SSL_read` uprobe on inbound connections.
    pub const REQUEST_HEADS: u32 = 20;
    /// QUIC flows (one per UDP socket and peer) the kernel started following at a client's
    /// Initial packet.
    pub const QUIC_FLOWS_TRACKED: u32 = 21;
    /// Datagrams of a QUIC socket that belong to no followed flow and do not open one.
    pub const DATAGRAMS_NOT_QUIC: u32 = 22;
    /// QUIC flows whose handshake the kernel saw end (the client's first 1-RTT packet).
    pub const QUIC_HANDSHAKES_DONE: u32 = 23;
    /// Programs started (`exec`), told to userspace to look for a TLS library in them.
    pub const EXECS: u32 = 24;
    /// Exec records that did not fit into their ring buffer (`EXECS`).
    pub const EXEC_DROPS: u32 = 25;
    /// Number of counters.
    pub const COUNT: u32 = 26;

    /// Names, indexed by counter, as userspace reports them.
    pub const NAMES: [&str; COUNT as usize] = [
        "packets_seen",
        "bytes_forwarded",
        "ringbuf_drops",
        "flows_tracked",
        "budget_exhausted",
        "segments_forwarded",
        "segments_truncated",
        "flows_not_tls",
        "parse_errors",
        "handshakes_done",
        "flows_closed",
        "record_sync_lost",
        "socket_events",
        "prefix_budget_exhausted",
        "uprobe_certs",
        "uprobe_certs_truncated",
        "uprobe_read_errors",
        "segments_not_accepted",
        "segments_unreadable",
        "ring_budget_exhausted",
        "request_heads",
        "quic_flows_tracked",
        "datagrams_not_quic",
        "quic_handshakes_done",
        "execs",
        "exec_drops",
    ];

    /// What each counter counts, indexed by counter: the metrics' HELP text.
    pub const HELP: [&str; COUNT as usize] = [
        "TCP segments and UDP datagrams the tap programs looked at",
        "Payload bytes written to the ring buffer",
        "Records that did not fit into the ring buffer",
        "Flows the kernel started tracking",
        "Flows whose byte budget ran out before the handshake was over",
        "Segment records emitted",
        "Segments cut because they were larger than one record holds",
        "Flows found not to be TLS and ignored from then on",
        "Packets the tap could not parse (bad IP or TCP header)",
        "Flows whose handshake the kernel saw end",
        "Tracked sockets seen closing",
        "Directions whose record headers the kernel lost track of",
        "Socket (process attribution) events emitted",
        "Flows that opened in plaintext and did not turn into TLS within the prefix budget",
        "Certificates captured by the d2i_X509 uprobe during a handshake",
        "Uprobe certificates longer than the capture limit, cut",
        "Reads of user memory that failed in the uprobe",
        "Segments the local socket's TCP would not take (injected or stale), not followed",
        "Packets of a socket mid-handshake whose TCP header the tap could not find",
        "Flows that used up their share of the ring buffer",
        "Request heads an inbound TLS server read, taken by the SSL_read uprobe",
        "QUIC flows the kernel started following at a client's Initial packet",
        "Datagrams of a QUIC socket that belong to no followed flow and open none",
        "QUIC flows whose handshake the kernel saw end (the client's first 1-RTT packet)",
        "Programs started (exec), looked at for a TLS library to attach uprobes to",
        "Exec records that did not fit into their ring buffer: those programs were not looked at",
    ];
}

/// Largest payload one segment record carries. Larger segments are split into several records
/// (see [`MAX_CHUNKS`]).
pub const CHUNK_CAP: usize = 4096;

/// Payload sizes of segment records: a record reserves the smallest that holds its payload,
/// so a 1-byte segment costs 160 bytes of ring, not 4 KiB. The sizes follow what segments
/// carry: a byte or a record header, a ClientHello, a 1448-byte Ethernet segment, a loopback or
/// GRO segment.
pub const RECORD_CLASSES: [u32; 5] = [64, 256, 640, 1536, CHUNK_CAP as u32];

/// The ring buffer's own header per record (`BPF_RINGBUF_HDR_SZ`).
pub const RINGBUF_RECORD_OVERHEAD: u32 = 8;

/// Ring bytes one record with `payload` payload bytes reserves (`payload` at most
/// [`CHUNK_CAP`]): the ring's header, the segment header and the smallest class that fits.
/// Every class and the header are multiples of 8, as the ring rounds them.
pub const fn record_cost(payload: u32) -> u32 {
    let mut class = CHUNK_CAP as u32;
    let mut i = RECORD_CLASSES.len();
    while i > 0 {
        i -= 1;
        if payload <= RECORD_CLASSES[i] {
            class = RECORD_CLASSES[i];
        }
    }
    RINGBUF_RECORD_OVERHEAD + SEGMENT_HEADER_LEN as u32 + class
}

/// Ring bytes a segment's `len` forwarded payload bytes reserve: full chunks, then the rest in
/// its class (a header-only record for 0).
pub const fn segment_cost(len: u32) -> u32 {
    let full = len / CHUNK_CAP as u32;
    let rest = len % CHUNK_CAP as u32;
    let mut cost = full * record_cost(CHUNK_CAP as u32);
    if rest > 0 || full == 0 {
        cost += if rest == 0 {
            RINGBUF_RECORD_OVERHEAD + SEGMENT_HEADER_LEN as u32
        } else {
            record_cost(rest)
        };
    }
    cost
}

/// Default share of the ring buffer one flow may use, in ring bytes, before the kernel gives
/// up on it: four times the byte budget. A handshake in full-size segments costs about 1.1
/// times its bytes; one cut into 1-byte segments costs 160 times and runs out after about 3,000
/// of them, loudly (`capture_incomplete:budget`), instead of filling the ring that every
/// other flow on the host shares.
pub const fn default_ring_budget(byte_budget: u32) -> u32 {
    byte_budget.saturating_mul(4)
}

/// Most records one segment is split into. Anything beyond `CHUNK_CAP * MAX_CHUNKS` bytes of one
/// segment is cut and flagged [`segment_flags::TRUNCATED`].
pub const MAX_CHUNKS: usize = 16;

/// Default per-flow byte budget: handshake bytes (record payloads) forwarded per socket before
/// the kernel gives up. Clients accept certificate chains up to 100 KiB (OpenSSL's
/// max_cert_list): an interceptor that pads its chain must not run past it.
pub const DEFAULT_BYTE_BUDGET: u32 = 128 * 1024;

/// Header of a segment record. `payload_len` payload bytes follow it directly in the record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SegmentHeader {
    /// Always [`kind::SEGMENT`].
    pub kind: u32,
    /// [`segment_flags`].
    pub flags: u8,
    /// [`direction`].
    pub direction: u8,
    /// [`family`].
    pub family: u8,
    /// TCP flags of the segment ([`tcp_flags`]).
    pub tcp_flags: u8,
    /// `CLOCK_BOOTTIME` (bpf_ktime_get_boot_ns) when the kernel saw the segment.
    pub ts_ns: u64,
    /// Socket cookie of the local socket.
    pub cookie: u64,
    /// `bpf_get_current_pid_tgid()`, meaningful only with [`segment_flags::HAS_PID`].
    pub pid_tgid: u64,
    /// TCP sequence number of the first payload byte in this record.
    pub seq: u32,
    /// Payload bytes that follow this header.
    pub payload_len: u32,
    /// TCP payload bytes of the segment from this record's `seq` on (the whole segment for its
    /// first record).
    pub segment_len: u32,
    /// Source address (IPv4 in the first 4 bytes).
    pub saddr: [u8; 16],
    /// Destination address (IPv4 in the first 4 bytes).
    pub daddr: [u8; 16],
    /// Source port, host byte order.
    pub sport: u16,
    /// Destination port, host byte order.
    pub dport: u16,
    /// [`loss`]: what the kernel lost of this socket before this record.
    pub losses: u8,
    /// [`transport`]: a TCP segment or a UDP datagram (QUIC).
    pub transport: u8,
    pub _reserved: [u8; 2],
    /// The local socket's `rcv_nxt` as the segment passed (for ingress, before TCP took it):
    /// the next byte it expected from its peer. Userspace learns where the peer's stream
    /// starts from it, and whether the socket took bytes the tap never forwarded. Meaningful
    /// with [`segment_flags::HAS_RCV_NXT`].
    pub rcv_nxt: u32,
}

/// Size of [`SegmentHeader`] in bytes.
pub const SEGMENT_HEADER_LEN: usize = core::mem::size_of::<SegmentHeader>();

/// Largest part of a certificate one record carries.
pub const CERT_CHUNK_CAP: usize = 4096;

/// Most records one certificate is split into.
pub const MAX_CERT_CHUNKS: usize = 8;

/// Longest certificate captured whole; longer ones are cut (and counted).
pub const MAX_CERT_LEN: usize = CERT_CHUNK_CAP * MAX_CERT_CHUNKS;

/// Header of a certificate chunk record. `len` bytes of DER follow it directly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CertChunkHeader {
    /// Always [`kind::CERT`].
    pub kind: u32,
    /// Offset of this chunk in the certificate.
    pub offset: u32,
    /// `CLOCK_BOOTTIME` of the `d2i_X509` call: with `pid_tgid`, it names the certificate.
    pub ts_ns: u64,
    /// The calling thread.
    pub pid_tgid: u64,
    /// Cookie of the TLS socket the thread last opened a handshake on (0 if unknown).
    pub cookie: u64,
    /// Bytes of the certificate captured (at most [`MAX_CERT_LEN`]).
    pub total_len: u32,
    /// Bytes in this chunk.
    pub len: u32,
    /// The DER's full length, as `d2i_X509` was given it.
    pub der_len: u64,
}

/// Size of [`CertChunkHeader`] in bytes.
pub const CERT_CHUNK_HEADER_LEN: usize = core::mem::size_of::<CertChunkHeader>();

/// Plaintext bytes of a request's head the kernel reads at most: the request line and the
/// headers before a User-Agent fit in it for real clients; more is not kept.
pub const REQUEST_HEAD_CAP: usize = 512;

/// The first plaintext a local TLS server read from an inbound connection: `len` of `data`'s
/// bytes are valid. Userspace keeps only the request line and the User-Agent of it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RequestHead {
    /// Always [`kind::REQUEST_HEAD`].
    pub kind: u32,
    pub len: u32,
    /// `CLOCK_BOOTTIME` of the read.
    pub ts_ns: u64,
    /// The reading thread.
    pub pid_tgid: u64,
    /// Cookie of the socket the read came from.
    pub cookie: u64,
    pub data: [u8; REQUEST_HEAD_CAP],
}

/// Size of [`RequestHead`] in bytes.
pub const REQUEST_HEAD_LEN: usize = core::mem::size_of::<RequestHead>();

/// Task name length (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Process attribution for a socket, sent when the kernel learns it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketEvent {
    /// Always [`kind::SOCKET`].
    pub kind: u32,
    /// TCP state the socket moved to.
    pub new_state: u32,
    pub cookie: u64,
    pub pid_tgid: u64,
    pub uid_gid: u64,
    pub comm: [u8; COMM_LEN],
    /// The connecting process's cgroup v2 id (the inode number of its cgroup's directory):
    /// names its container when the process is gone before userspace reads /proc.
    pub cgroup_id: u64,
}

/// A process started a program (`tp_btf/sched_process_exec`), on the `EXECS` ring buffer:
/// userspace looks at the program's file for a TLS library (once per file).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecEvent {
    /// The process, as the initial PID namespace names it (tgid in the upper half).
    pub pid_tgid: u64,
}

/// Size of [`SocketEvent`] in bytes.
pub const SOCKET_EVENT_LEN: usize = core::mem::size_of::<SocketEvent>();

/// What the kernel tracks of one direction of a socket's TLS records.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DirTrack {
    /// Sequence number where the next record header starts (valid with [`sync::ON`]).
    pub next_hdr_seq: u32,
    /// [`sync`].
    pub sync: u8,
    /// Bytes of a record header that straddled a segment boundary, held in `partial`.
    pub partial_len: u8,
    /// application_data records seen (saturating).
    pub app_records: u8,
    /// application_data records seen after the peer's first one (saturating).
    pub app_after_peer: u8,
    pub partial: [u8; 4],
}

/// Values of [`DirTrack::sync`].
pub mod sync {
    /// No TLS record seen in this direction yet.
    pub const NONE: u8 = 0;
    /// Following record headers.
    pub const ON: u8 = 1;
    /// Lost track (a header was missed or made no sense); the byte budget still applies.
    pub const LOST: u8 = 2;
}

/// Per-socket state the kernel keeps in socket storage.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowState {
    /// [`flow_state`].
    pub state: u8,
    /// Direction ([`direction`]) that sent the first handshake record, or [`NO_DIRECTION`].
    pub client_dir: u8,
    /// Bit per direction: FIN seen; bit 2: RST seen.
    pub fin: u8,
    /// [`loss`] bits to set on the next record.
    pub pending_losses: u8,
    /// TLS payload bytes forwarded so far, both directions (plaintext openings do not count).
    pub forwarded: u32,
    /// Plaintext bytes looked at while waiting for a TLS record to start (CONNECT, STARTTLS).
    pub prefix_scanned: u32,
    /// Record header bytes among `forwarded`: the budget counts handshake bytes, not record
    /// framing (a peer that splits its flight into 1-byte records does not run it out).
    pub overhead: u32,
    /// Ring buffer bytes this socket's records reserved ([`segment_cost`]), against
    /// [`TapConfig::ring_budget`].
    pub ring_used: u32,
    /// Indexed by [`direction`].
    pub dirs: [DirTrack; 2],
}

/// [`FlowState::client_dir`] before the first handshake record.
pub const NO_DIRECTION: u8 = 0xff;

/// Values of [`FlowState::state`].
pub mod flow_state {
    /// Nothing decided yet.
    pub const NEW: u8 = 0;
    /// TLS records seen: forward payload.
    pub const TLS: u8 = 1;
    /// A plaintext prefix (CONNECT, STARTTLS) that may turn into TLS: forward payload, bounded.
    pub const PREFIX: u8 = 2;
    /// Not TLS: forward nothing.
    pub const IGNORE: u8 = 3;
    /// The handshake is over (application data flowed both ways) or the byte budget ran out:
    /// forward only FIN and RST.
    pub const DONE: u8 = 4;
    /// A UDP socket that sent or took a QUIC client Initial: its datagrams are looked up by
    /// peer in the QUIC flow map (a server's socket carries many connections).
    pub const QUIC: u8 = 5;
}

/// Tunables userspace writes into the `CONFIG` array before attaching.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TapConfig {
    /// Payload bytes forwarded per flow at most.
    pub byte_budget: u32,
    /// Plaintext bytes scanned for a TLS start after a CONNECT or STARTTLS prefix.
    pub prefix_budget: u32,
    /// tgid of the daemon, whose own connections are not reported (0: none). As
    /// `bpf_get_current_pid_tgid` gives it: in the initial PID namespace, which is not what
    /// `getpid` says when the daemon runs in a child one.
    pub self_tgid: u32,
    /// Non-zero when the programs see every local socket (attached at the cgroup v2 root):
    /// then ingress on loopback repeats what the sender's egress forwarded and is not
    /// forwarded again. Zero when attached to a subtree, where the sender may be unseen.
    pub skip_lo_ingress: u32,
    /// Ring buffer bytes one socket's records may reserve ([`default_ring_budget`]), so that
    /// one flow of tiny segments cannot fill the ring every flow shares.
    pub ring_budget: u32,
}

impl Default for TapConfig {
    fn default() -> Self {
        Self {
            byte_budget: DEFAULT_BYTE_BUDGET,
            // Proxies and mail servers send long replies before TLS (a 407 page with NTLM
            // is 3.5 KiB; a padded one can be anything): bounded, and a flow that runs over
            // is reported as such.
            prefix_budget: 64 * 1024,
            self_tgid: 0,
            skip_lo_ingress: 1,
            ring_budget: default_ring_budget(DEFAULT_BYTE_BUDGET),
        }
    }
}

/// Types that cross the ring buffer or a map as raw bytes.
///
/// # Safety
///
/// Implementors are `#[repr(C)]`, made only of integers and arrays of integers, with no
/// padding (the layout assertions below check every field's offset), so that every bit pattern
/// is a valid value and every byte of a value is initialised.
pub unsafe trait Wire: Copy {}

// SAFETY: integers.
unsafe impl Wire for u32 {}
// SAFETY: see the layout assertions.
unsafe impl Wire for SegmentHeader {}
// SAFETY: see the layout assertions.
unsafe impl Wire for SocketEvent {}
// SAFETY: see the layout assertions.
unsafe impl Wire for CertChunkHeader {}
// SAFETY: see the layout assertions.
unsafe impl Wire for RequestHead {}

/// Read a wire value from the start of `bytes`, at any alignment; `None` when it is too short.
/// The one place userspace turns record bytes into a header.
pub fn read_wire<T: Wire>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < core::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: `bytes` holds at least size_of::<T>() bytes; T: Wire accepts any bit pattern;
    // read_unaligned copes with any alignment.
    Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The bytes of a wire value, as the kernel writes them (for tests and fuzzers).
pub fn write_wire<T: Wire>(value: &T) -> &[u8] {
    // SAFETY: T: Wire has no padding, so all size_of::<T>() bytes are initialised.
    unsafe {
        core::slice::from_raw_parts((value as *const T).cast::<u8>(), core::mem::size_of::<T>())
    }
}

/// The wire layouts, checked at compile time on both halves: every field at its offset, no
/// padding anywhere (a hole would make [`write_wire`] read uninitialised bytes and would differ
/// between compilers).
mod layout {
    use core::mem::{offset_of, size_of};

    use super::*;

    macro_rules! assert_layout {
        ($t:ty, $size:expr, { $($field:ident: $ft:ty = $off:expr),+ $(,)? }) => {
            const _: () = {
                assert!(size_of::<$t>() == $size);
                $(assert!(offset_of!($t, $field) == $off);)+
                assert!(0 $(+ size_of::<$ft>())+ == $size, "padding in the layout");
            };
        };
    }

    assert_layout!(SegmentHeader, 88, {
        kind: u32 = 0, flags: u8 = 4, direction: u8 = 5, family: u8 = 6, tcp_flags: u8 = 7,
        ts_ns: u64 = 8, cookie: u64 = 16, pid_tgid: u64 = 24, seq: u32 = 32,
        payload_len: u32 = 36, segment_len: u32 = 40, saddr: [u8; 16] = 44,
        daddr: [u8; 16] = 60, sport: u16 = 76, dport: u16 = 78, losses: u8 = 80,
        transport: u8 = 81, _reserved: [u8; 2] = 82, rcv_nxt: u32 = 84,
    });
    assert_layout!(SocketEvent, 56, {
        kind: u32 = 0, new_state: u32 = 4, cookie: u64 = 8, pid_tgid: u64 = 16,
        uid_gid: u64 = 24, comm: [u8; COMM_LEN] = 32, cgroup_id: u64 = 48,
    });
    assert_layout!(CertChunkHeader, 48, {
        kind: u32 = 0, offset: u32 = 4, ts_ns: u64 = 8, pid_tgid: u64 = 16, cookie: u64 = 24,
        total_len: u32 = 32, len: u32 = 36, der_len: u64 = 40,
    });
    assert_layout!(RequestHead, 32 + REQUEST_HEAD_CAP, {
        kind: u32 = 0, len: u32 = 4, ts_ns: u64 = 8, pid_tgid: u64 = 16, cookie: u64 = 24,
        data: [u8; REQUEST_HEAD_CAP] = 32,
    });
    assert_layout!(FlowState, 44, {
        state: u8 = 0, client_dir: u8 = 1, fin: u8 = 2, pending_losses: u8 = 3,
        forwarded: u32 = 4, prefix_scanned: u32 = 8, overhead: u32 = 12, ring_used: u32 = 16,
        dirs: [DirTrack; 2] = 20,
    });
    assert_layout!(DirTrack, 12, {
        next_hdr_seq: u32 = 0, sync: u8 = 4, partial_len: u8 = 5, app_records: u8 = 6,
        app_after_peer: u8 = 7, partial: [u8; 4] = 8,
    });
    assert_layout!(TapConfig, 20, {
        byte_budget: u32 = 0, prefix_budget: u32 = 4, self_tgid: u32 = 8,
        skip_lo_ingress: u32 = 12, ring_budget: u32 = 16,
    });

    // Every record class keeps the ring's 8-byte alignment, so `record_cost` is exact.
    const _: () = {
        let mut i = 0;
        while i < RECORD_CLASSES.len() {
            assert!((SEGMENT_HEADER_LEN as u32 + RECORD_CLASSES[i]).is_multiple_of(8));
            i += 1;
        }
        assert!(record_cost(1) == 160);
        assert!(record_cost(4096) == 4192);
        assert!(segment_cost(0) == 96);
        assert!(segment_cost(5000) == 4192 + 1632);
    };
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], integers and byte arrays only, no padding (see `layout`): every bit
    // pattern is a valid value.
    unsafe impl aya::Pod for super::FlowState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TapConfig {}
}
