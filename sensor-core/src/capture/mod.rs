//! What sources of TCP segments and UDP datagrams produce, and the pure parsers behind them: capture files
//! ([`pcap`], [`packet`]), the kernel tap's ring records ([`ring`]) and the uprobe's
//! certificate chunks ([`certs`]).
//!
//! Every source turns what it reads into [`Segment`]s and [`Datagram`]s for the analysis
//! [`engine`](crate::engine), which never learns where a segment came from.

pub mod certs;
pub mod packet;
pub mod pcap;
pub mod ring;

use std::net::SocketAddr;

/// The local socket a segment was seen on, as far as the source knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attribution {
    /// Socket cookie of the local socket the kernel saw the segment on.
    pub cookie: u64,
    /// True when that socket sent the segment (egress): it is the `src` endpoint's socket.
    /// False when it received it (ingress): it is the `dst` endpoint's.
    pub local_is_src: bool,
    /// Process id (tgid) of the sender, when the kernel saw it in process context (egress).
    pub pid: Option<u32>,
    /// The first segment the kernel forwarded for this socket: a new connection.
    pub first_on_socket: bool,
    /// The kernel's byte budget for the flow ran out with this segment.
    pub budget_exhausted: bool,
    /// The kernel gave up on a plaintext opening that never turned into TLS.
    pub prefix_exhausted: bool,
    /// Records of this flow were lost before this one (the ring buffer was full).
    pub records_lost: bool,
    /// Packets of this flow arrived that the kernel could not read (their TCP header out of
    /// its reach) before this one: what they carried is missing.
    pub packets_unreadable: bool,
    /// The kernel saw the handshake end with this segment and forwards only FIN and RST from
    /// here on.
    pub handshake_done: bool,
    /// Payload bytes the segment carried that the kernel did not forward and did not cut
    /// (a closing segment's data once forwarding ended): where the sender's stream stood.
    pub unforwarded: u32,
}

impl Attribution {
    /// Which endpoint's socket this is, for a segment sent by endpoint `sender` (0 or 1).
    pub fn owner(&self, sender: usize) -> usize {
        if self.local_is_src {
            sender
        } else {
            1 - sender
        }
    }
}

/// One TCP segment, or the part of it the source captured.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// Nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Sequence number of the first byte of `payload`.
    pub seq: u32,
    /// TCP flags (`sensor_common::tcp_flags`).
    pub tcp_flags: u8,
    pub payload: &'a [u8],
    /// Payload bytes that followed `payload` in the segment but were not captured.
    pub missing: u32,
    /// How far the receivers had taken each direction's stream.
    pub received: Received,
    /// Present for segments from the kernel tap.
    pub attribution: Option<Attribution>,
}

/// One UDP datagram, or the part of it the source captured.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    /// Nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: &'a [u8],
    /// Payload bytes that followed `payload` in the datagram but were not captured.
    pub missing: u32,
    /// Present for datagrams from the kernel tap.
    pub attribution: Option<Attribution>,
}

/// What a source hands the engine: a TCP segment or a UDP datagram.
#[derive(Clone, Copy, Debug)]
pub enum Packet<'a> {
    Tcp(Segment<'a>),
    Udp(Datagram<'a>),
}

impl Packet<'_> {
    pub fn ts_ns(&self) -> u64 {
        match self {
            Packet::Tcp(s) => s.ts_ns,
            Packet::Udp(d) => d.ts_ns,
        }
    }

    pub fn payload(&self) -> &[u8] {
        match self {
            Packet::Tcp(s) => s.payload,
            Packet::Udp(d) => d.payload,
        }
    }
}

/// How far a TCP receiver had taken a direction's stream when the segment passed: the next
/// sequence number it expected. A capture knows it from the segment's ACK number (the
/// sender's receiving side); the kernel tap from the local socket's `rcv_nxt`. It tells
/// where a stream starts when its first bytes arrive out of order, and that a receiver took
/// bytes the source never saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Of the stream `src` → `dst` (known from `dst`'s side).
    pub from_src: Option<u32>,
    /// Of the stream `dst` → `src` (known from `src`'s side: its ACK number).
    pub from_dst: Option<u32>,
}

/// One local socket of a flow, as the capture saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalSocket {
    pub cookie: u64,
    /// The pid the tap saw on this socket's first egress segment.
    pub pid_hint: Option<u32>,
}
