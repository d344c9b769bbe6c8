//! The analysis engine: segments in, handshake events out.
//!
//! Pure and deterministic: no I/O, no clock reads, no async. Time comes from the segments'
//! timestamps and from [`Engine::advance`]. Memory is bounded by [`EngineLimits`], and every
//! bound that is hit shows in [`EngineStats`].
//!
//! Flows are keyed by their two endpoints, so the two copies of a loopback segment (the
//! sender's egress and the receiver's ingress) and retransmissions fold into one stream.

mod flow;
mod quic_attempts;
#[cfg(test)]
mod tests;

use std::{collections::VecDeque, net::SocketAddr};

use hashlink::LinkedHashMap;
use serde::Serialize;

use crate::{
    capture::{Datagram, Packet, Segment},
    event::{ChainSource, Handshake},
    reassembly::StreamLimits,
    tls::record::ReaderLimits,
    x509,
};

use flow::{Flow, Progress};
use sensor_common::tcp_flags::{ACK, FIN, RST, SYN};

/// Bounds of the engine.
#[derive(Clone, Copy, Debug)]
pub struct EngineLimits {
    /// Flows tracked at once; the least recently active is evicted beyond it.
    pub max_flows: usize,
    /// Bytes buffered across all flows; least recently active flows are evicted beyond it.
    pub max_buffered_bytes: usize,
    /// A flow silent for this long is reported (if it had a ClientHello) and forgotten.
    pub idle_timeout_ns: u64,
    /// A flow with one side closed is reported this long after the close, unless the other
    /// side closes first.
    pub half_close_timeout_ns: u64,
    /// Request heads come from the server's `SSL_read` uprobe: a completed inbound handshake
    /// waits this long for its head before it is reported without one (0: heads are off).
    pub request_head_wait_ns: u64,
    /// A completed TLS 1.3 client handshake whose uprobe chain is one certificate that its
    /// issuer did not sign itself waits this long for the rest: GnuTLS imports the server's
    /// other certificates when the client verifies, which a client may do after its handshake
    /// (wget). 0: reported at once.
    pub uprobe_chain_wait_ns: u64,
    pub stream: StreamLimits,
    pub reader: ReaderLimits,
}

impl Default for EngineLimits {
    fn default() -> Self {
        Self {
            max_flows: 65_536,
            max_buffered_bytes: 64 << 20,
            idle_timeout_ns: 60_000_000_000,
            half_close_timeout_ns: 2_000_000_000,
            request_head_wait_ns: 0,
            uprobe_chain_wait_ns: 0,
            stream: StreamLimits::default(),
            reader: ReaderLimits::default(),
        }
    }
}

/// Counters of the engine. Every limit hit has one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    pub segments: u64,
    pub payload_bytes: u64,
    pub flows_created: u64,
    /// Flows evicted because `max_flows` was reached.
    pub flows_evicted: u64,
    /// Flows evicted because `max_buffered_bytes` was reached.
    pub flows_evicted_memory: u64,
    /// Flows forgotten after `idle_timeout_ns` of silence.
    pub flows_expired: u64,
    /// Flows that turned out not to be TLS.
    pub flows_not_tls: u64,
    /// Flows that ended without a ClientHello seen.
    pub flows_without_client_hello: u64,
    /// Flows with malformed TLS, with or without a reported handshake.
    pub flows_malformed: u64,
    pub handshakes: u64,
    /// New connections on a 4-tuple whose previous connection the engine still remembered.
    pub tuples_reused: u64,
    pub duplicate_bytes: u64,
    pub out_of_order_segments: u64,
    pub dropped_segments: u64,
    pub gaps: u64,
    /// Certificate summaries served from the cache, and made anew.
    pub cert_cache_hits: u64,
    pub cert_cache_misses: u64,
    /// Certificates from the OpenSSL uprobe: taken, and handshakes they gave a chain to.
    pub uprobe_certs: u64,
    pub uprobe_chains: u64,
    /// Uprobe chains not taken: their leaf names other hosts than the handshake's SNI.
    pub uprobe_chains_mismatched: u64,
    /// Handshakes given the chain their process parsed for their name under another socket
    /// (a thread that drove several handshakes at once).
    pub uprobe_chains_rehomed: u64,
    /// Uprobe certificates dropped: no socket to tie them to, or over the bounds.
    pub uprobe_certs_dropped: u64,
    /// Handshakes whose client parsed another leaf than the one on the wire.
    pub uprobe_chain_conflicts: u64,
    /// Live flows marked as having lost records when the kernel reported ring buffer drops.
    pub flows_marked_ring_drop: u64,
    /// Uprobe certificates forgotten: their socket's handshake never came within the idle
    /// timeout.
    pub uprobe_certs_expired: u64,
    /// TLS 1.3 client handshakes held for the rest of a one-certificate uprobe chain.
    pub uprobe_chains_awaited: u64,
    /// Request heads the server's `SSL_read` uprobe read.
    pub request_heads: u64,
    /// Request heads that were not HTTP/1 request lines (and not HTTP/2's preface).
    pub request_heads_not_http: u64,
    /// Request heads pushed out of a full store before their handshake was reported.
    pub request_heads_dropped: u64,
    /// Completed inbound handshakes reported without a head after waiting for one.
    pub request_heads_missed: u64,
    /// UDP datagrams taken.
    pub datagrams: u64,
    /// UDP datagrams of no QUIC flow that did not open one (not a client's first Initial).
    pub datagrams_not_quic: u64,
    /// QUIC flows opened by a client's Initial packet.
    pub quic_flows: u64,
    /// QUIC flows whose server answered (counted when the flow is reported).
    pub quic_answered: u64,
    /// TCP handshakes that followed an unanswered QUIC attempt of the client to the same name.
    pub quic_blocked: u64,
}

/// Both endpoints of a flow, lower first, so that both directions map to one key, and
/// whether it is UDP (QUIC) or TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    ends: [SocketAddr; 2],
    udp: bool,
}

impl FlowKey {
    fn of(a: SocketAddr, b: SocketAddr, udp: bool) -> Self {
        let ends = if a <= b { [a, b] } else { [b, a] };
        Self { ends, udp }
    }
}

/// A flow in the table: live, or reported and kept only to ignore what still arrives.
enum Slot {
    Live(Box<Flow>),
    /// A reported flow, kept to take what its connection still sends; `prior` tells those
    /// segments from a new connection on the same 4-tuple.
    Done {
        last_ts: u64,
        prior: Option<Box<Prior>>,
    },
}

/// What a reported flow remembers of its connection.
#[derive(Debug)]
enum Prior {
    /// A QUIC flow's connection IDs (the client's first, the server's).
    Quic(Box<[Vec<u8>]>),
    /// A TCP flow's local sockets and where each end's stream had got to, by endpoint index.
    Tcp(TcpPrior),
}

/// See [`Prior::Tcp`].
#[derive(Debug)]
struct TcpPrior {
    cookies: [Option<u64>; 2],
    seq_ends: [Option<u32>; 2],
}

impl TcpPrior {
    /// Whether `seg` (sent by endpoint `idx`), the first segment the kernel forwarded on its
    /// socket, opens a new connection. A socket other than the one the old connection had on
    /// that end is a new connection. A socket the old flow never saw (loopback, where both
    /// ends are local and one end's first record may come after the flow was decided) is
    /// judged by what it carries: a new connection's first bytes (a ClientHello, or a
    /// plaintext opening), not a TLS record that only follows a handshake, and not where the
    /// sender's stream stood (that goes on with the old connection; a new one's starts
    /// anywhere). Such a record of an older connection, come after a newer one took the
    /// 4-tuple, would otherwise open a flow in the middle of a stream that the newer one's
    /// next connection would then be read into.
    fn opens_anew(&self, seg: &Segment<'_>, idx: usize) -> bool {
        let Some(a) = seg.attribution else {
            return false;
        };
        match self.cookies[a.owner(idx)] {
            Some(old) => old != a.cookie,
            None => {
                let follows_handshake = matches!(seg.payload, [0x14 | 0x15 | 0x17, 0x03, ..] | []);
                let goes_on = self.seq_ends[idx].is_some_and(|end| {
                    let d = seg.seq.wrapping_sub(end) as i32;
                    (-SEQ_BEHIND..=SEQ_AHEAD).contains(&d)
                });
                !follows_handshake && !goes_on
            }
        }
    }
}

/// How far behind (retransmissions) and ahead (bytes the kernel no longer forwarded) of where
/// a reported flow's stream stood a segment of the same connection may be.
const SEQ_BEHIND: i32 = 1 << 20;
const SEQ_AHEAD: i32 = 1 << 24;

impl Slot {
    fn last_ts(&self) -> u64 {
        match self {
            Slot::Live(f) => f.last_ts,
            Slot::Done { last_ts, .. } => *last_ts,
        }
    }
}

/// Reassembles, parses and reports TLS handshakes.
pub struct Engine {
    limits: EngineLimits,
    flows: LinkedHashMap<FlowKey, Slot>,
    buffered: usize,
    stats: EngineStats,
    out: VecDeque<Handshake>,
    /// Half-closed flows by the time they are due to be reported.
    half_closed: VecDeque<(u64, FlowKey)>,
    /// Certificate summaries seen lately.
    certs: crate::x509::SummaryCache,
    /// Fingerprints of hello shapes seen lately.
    fingerprints: crate::tls::fingerprint::FingerprintCache,
    /// Certificates OpenSSL clients parsed (uprobe), by the client socket's cookie, until the
    /// socket's handshake is reported.
    uprobe_certs: hashlink::LruCache<u64, UprobeChain>,
    uprobe_bytes: usize,
    /// Request heads (the server's `SSL_read` uprobe), by the server socket's cookie, until
    /// that socket's handshake is reported.
    request_heads: hashlink::LruCache<u64, crate::event::RequestHead>,
    /// Completed inbound flows waiting for their request head, by the server socket's cookie.
    awaiting_heads: hashlink::LinkedHashMap<u64, (u64, FlowKey)>,
    /// Completed TLS 1.3 client handshakes waiting for the rest of their uprobe chain, by
    /// client socket cookie, oldest first: (due, flow).
    awaiting_chains: hashlink::LinkedHashMap<u64, (u64, FlowKey)>,
    /// Completed inbound TLS 1.3 flows held until they end (to tell whether the client ever
    /// asked anything), by the server socket's cookie: a request head ends the wait.
    held_inbound: std::collections::HashMap<u64, FlowKey>,
    /// QUIC attempts by client and name (`quic_blocked`).
    quic_attempts: quic_attempts::QuicAttempts,
    now: u64,
}

/// Certificates a client parsed on one socket, waiting for its handshake.
#[derive(Default)]
struct UprobeChain {
    ders: Vec<Vec<u8>>,
    /// The process whose library parsed them.
    pid: u32,
    /// When the last certificate came: a socket whose handshake never shows up (closed before
    /// the sensor saw it, or not a flow the tap followed) is forgotten after the idle timeout.
    last_ns: u64,
}

impl UprobeChain {
    fn bytes(&self) -> usize {
        self.ders.iter().map(Vec::len).sum()
    }
}

/// How long a QUIC client has to finish its handshake after the server's Initial.
const QUIC_FINISH_WAIT_NS: u64 = 3_000_000_000;

/// Sockets with uprobe chains looked through for a handshake whose own socket has none.
const REHOME_SCAN: usize = 64;
/// Sockets with uprobe certificates waiting, at most.
const UPROBE_SOCKETS: usize = 4096;
/// Certificates waiting per socket, at most (a chain, and the odd trust anchor OpenSSL read).
const UPROBE_CERTS_PER_SOCKET: usize = 10;
/// Bytes of uprobe certificates waiting, at most.
const UPROBE_BYTES: usize = 8 << 20;

impl Engine {
    pub fn new(limits: EngineLimits) -> Self {
        Self {
            limits,
            flows: LinkedHashMap::new(),
            buffered: 0,
            stats: EngineStats::default(),
            out: VecDeque::new(),
            half_closed: VecDeque::new(),
            certs: crate::x509::SummaryCache::new(1024),
            fingerprints: crate::tls::fingerprint::FingerprintCache::new(1024),
            uprobe_certs: hashlink::LruCache::new(UPROBE_SOCKETS),
            uprobe_bytes: 0,
            request_heads: hashlink::LruCache::new(UPROBE_SOCKETS),
            awaiting_heads: hashlink::LinkedHashMap::new(),
            awaiting_chains: hashlink::LinkedHashMap::new(),
            held_inbound: std::collections::HashMap::new(),
            quic_attempts: Default::default(),
            now: 0,
        }
    }

    /// How long a TLS 1.3 client handshake with a one-certificate uprobe chain waits for the
    /// rest (see [`EngineLimits::uprobe_chain_wait_ns`]); 0: not at all.
    pub fn set_uprobe_chain_wait(&mut self, ns: u64) {
        self.limits.uprobe_chain_wait_ns = ns;
    }

    /// Turn request heads on (a completed inbound handshake waits `ns` for its head) or off
    /// (0).
    pub fn set_request_head_wait(&mut self, ns: u64) {
        self.limits.request_head_wait_ns = ns;
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            cert_cache_hits: self.certs.hits,
            cert_cache_misses: self.certs.misses,
            ..self.stats
        }
    }

    /// Flows tracked now, live or recently reported.
    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// Bytes buffered across flows.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// The kernel lost records (its ring buffer was full) and cannot say of which flow: every
    /// live flow may have lost bytes, and says so when it is reported.
    pub fn note_ring_drop(&mut self) {
        for slot in self.flows.values_mut() {
            if let Slot::Live(flow) = slot {
                flow.note_loss(crate::event::CaptureLoss::RingDrop);
                self.stats.flows_marked_ring_drop += 1;
            }
        }
    }

    /// Take the handshakes reported so far.
    pub fn drain(&mut self) -> impl Iterator<Item = Handshake> + '_ {
        self.out.drain(..)
    }

    /// Take a certificate a client's TLS library parsed in process `pid` during the handshake
    /// on socket `cookie` (from the uprobe). It becomes the chain of that socket's handshake
    /// when the chain was not seen in clear.
    ///
    /// Bounded by sockets, certificates per socket and bytes: when full, the least recently
    /// fed socket's certificates go (counted in `uprobe_certs_dropped`), so the newest
    /// handshakes keep their chains.
    pub fn push_cert(&mut self, cookie: u64, pid: u32, der: Vec<u8>) {
        self.stats.uprobe_certs += 1;
        if cookie == 0 || der.len() > UPROBE_BYTES {
            self.stats.uprobe_certs_dropped += 1;
            return;
        }
        if let Some(chain) = self.uprobe_certs.peek(&cookie)
            && (chain.ders.len() >= UPROBE_CERTS_PER_SOCKET || chain.ders.contains(&der))
        {
            self.stats.uprobe_certs_dropped +=
                u64::from(chain.ders.len() >= UPROBE_CERTS_PER_SOCKET);
            return;
        }
        let mut chain = self.uprobe_certs.remove(&cookie).unwrap_or_default();
        self.uprobe_bytes -= chain.bytes();
        while self.uprobe_bytes + chain.bytes() + der.len() > UPROBE_BYTES
            || self.uprobe_certs.len() >= UPROBE_SOCKETS
        {
            let Some((_, old)) = self.uprobe_certs.remove_lru() else {
                break;
            };
            self.uprobe_bytes -= old.bytes();
            self.stats.uprobe_certs_dropped += old.ders.len() as u64;
        }
        chain.ders.push(der);
        chain.pid = pid;
        chain.last_ns = self.now;
        self.uprobe_bytes += chain.bytes();
        self.uprobe_certs.insert(cookie, chain);
    }

    /// Give a handshake the chain its client's library parsed. The kernel ties a certificate
    /// to the socket its thread last opened a handshake on; a thread that drives several
    /// handshakes at once (a browser's socket thread) may have opened another since. So when
    /// the socket's own chain is missing or names another host, and the chain was not seen
    /// in clear, the chain the same process parsed for this name during this handshake is
    /// taken, if there is exactly one such leaf (two would be ambiguous: the probe decides).
    /// A chain that names another host stays for the socket it belongs to, until it expires.
    fn take_uprobe_chain(&mut self, hs: &mut Handshake, client_pid: Option<u32>) {
        let Some(cookie) = hs.socket_cookie else {
            return;
        };
        let own = self.uprobe_certs.remove(&cookie);
        if let Some(chain) = &own {
            self.uprobe_bytes -= chain.bytes();
            if leaf_fits(&mut self.certs, &chain.ders, hs.server_name.as_deref()) {
                take_uprobe_chain(&mut self.certs, &mut self.stats, hs, &chain.ders);
                return;
            }
            self.stats.uprobe_chains_mismatched += 1;
        }
        if hs.chain.is_empty()
            && let (Some(pid), Some(sni)) = (client_pid, hs.server_name.as_deref())
            && let Some(other) = self.chain_parsed_for(pid, sni, hs.time.0, cookie)
            && let Some(chain) = self.uprobe_certs.remove(&other)
        {
            self.uprobe_bytes -= chain.bytes();
            self.stats.uprobe_chains_rehomed += 1;
            take_uprobe_chain(&mut self.certs, &mut self.stats, hs, &chain.ders);
        }
        if let Some(chain) = own
            && self.uprobe_certs.len() < UPROBE_SOCKETS
            && self.uprobe_bytes + chain.bytes() <= UPROBE_BYTES
        {
            self.uprobe_bytes += chain.bytes();
            self.uprobe_certs.insert(cookie, chain);
        }
    }

    /// The socket under which process `pid` left the only leaf for `sni` that it parsed since
    /// `since_ns` (among the newest [`REHOME_SCAN`] sockets with chains), other than `cookie`.
    fn chain_parsed_for(&mut self, pid: u32, sni: &str, since_ns: u64, cookie: u64) -> Option<u64> {
        let mut found: Option<(u64, &[u8])> = None;
        for (&other, chain) in self.uprobe_certs.iter().rev().take(REHOME_SCAN) {
            if other == cookie || chain.pid != pid || chain.last_ns < since_ns {
                continue;
            }
            let Some(leaf) = chain.ders.first() else {
                continue;
            };
            let names = self.certs.summarize(leaf).ok();
            if !names.is_some_and(|summary| x509::names_host(&summary.san, sni)) {
                continue;
            }
            let leaf = leaf.as_slice();
            match found {
                None => found = Some((other, leaf)),
                Some((_, seen)) if seen == leaf => {}
                Some(_) => return None,
            }
        }
        found.map(|(other, _)| other)
    }

    /// Take the head of the first request a local server read on socket `cookie` (the
    /// `SSL_read` uprobe; at most 512 bytes, of which only the request line and User-Agent
    /// are kept). A flow waiting for it is reported now. Bounded by sockets; counted.
    pub fn push_request_head(&mut self, cookie: u64, bytes: &[u8]) {
        self.stats.request_heads += 1;
        let head = match crate::http::parse(bytes) {
            Ok(head) => head,
            Err(_) => {
                self.stats.request_heads_not_http += 1;
                return;
            }
        };
        if self.request_heads.len() >= UPROBE_SOCKETS {
            self.stats.request_heads_dropped += 1;
        }
        self.request_heads.insert(cookie, head);
        // The client asked something: a flow waiting for its head, or held to see whether
        // the client would ask anything, is reported now.
        let waiting = self.awaiting_heads.remove(&cookie).map(|(_, key)| key);
        if let Some(key) = waiting.or_else(|| self.held_inbound.remove(&cookie)) {
            self.close(&key);
        }
    }

    /// Report flows whose wait for a request head is over.
    fn expire_awaiting_chains(&mut self) {
        while let Some((&cookie, &(due, key))) = self.awaiting_chains.front() {
            if due > self.now {
                break;
            }
            self.awaiting_chains.remove(&cookie);
            self.close(&key);
        }
    }

    fn expire_awaiting_heads(&mut self) {
        while let Some((&cookie, &(due, key))) = self.awaiting_heads.front() {
            if due > self.now {
                break;
            }
            self.awaiting_heads.remove(&cookie);
            self.stats.request_heads_missed += 1;
            self.close(&key);
        }
    }

    /// Bytes of uprobe certificates waiting for their handshakes.
    pub fn uprobe_bytes(&self) -> usize {
        self.uprobe_bytes
    }

    /// Forget uprobe certificates whose socket has been silent past the idle timeout.
    fn expire_uprobe_certs(&mut self, deadline: u64) {
        while let Some((_, chain)) = self.uprobe_certs.iter().next()
            && chain.last_ns < deadline
        {
            if let Some((_, old)) = self.uprobe_certs.remove_lru() {
                self.uprobe_bytes -= old.bytes();
                self.stats.uprobe_certs_expired += old.ders.len() as u64;
            }
        }
    }

    /// Take one segment.
    pub fn push(&mut self, seg: &Segment<'_>) {
        self.stats.segments += 1;
        self.stats.payload_bytes += seg.payload.len() as u64;
        self.now = self.now.max(seg.ts_ns);
        let key = FlowKey::of(seg.src, seg.dst, false);
        // A new connection on a 4-tuple that was used before (ports are reused quickly on
        // loopback): a SYN, or the first segment the kernel saw on a socket, after the old
        // connection's flow was reported.
        let syn_only = seg.tcp_flags & (SYN | ACK) == SYN;
        let first_on_socket = seg.attribution.is_some_and(|a| a.first_on_socket);
        let idx = usize::from(seg.src != key.ends[0]);
        let reuse = match self.flows.to_back(&key) {
            Some(Slot::Done { last_ts, prior }) => {
                let anew = syn_only
                    || (first_on_socket
                        && match prior.as_deref() {
                            Some(Prior::Tcp(p)) => p.opens_anew(seg, idx),
                            _ => true,
                        });
                if !anew {
                    *last_ts = (*last_ts).max(seg.ts_ns);
                    return;
                }
                true
            }
            // The old connection's end was not seen (see `Flow::new_connection`).
            Some(Slot::Live(flow)) => syn_only || flow.new_connection(seg, idx),
            None => false,
        };
        if reuse {
            self.close(&key);
            self.flows.remove(&key);
            self.stats.tuples_reused += 1;
        }
        let flow = match self.flows.get_mut(&key) {
            Some(Slot::Live(flow)) => flow,
            Some(Slot::Done { .. }) => return,
            None => {
                let opens = seg.tcp_flags & SYN != 0
                    || (!seg.payload.is_empty() && seg.tcp_flags & (FIN | RST) == 0);
                if !opens {
                    return;
                }
                self.make_room();
                self.stats.flows_created += 1;
                self.flows
                    .insert(key, Slot::Live(Box::new(Flow::new(key.ends, &self.limits))));
                match self.flows.get_mut(&key) {
                    Some(Slot::Live(flow)) => flow,
                    _ => return,
                }
            }
        };
        let before = flow.buffered();
        let progress = flow.push(seg, &self.limits);
        let after = flow.buffered();
        let not_tls = flow.is_not_tls();
        self.buffered = (self.buffered + after).saturating_sub(before);
        // A completed inbound handshake waits a little for its request head (the server reads
        // the request after the bytes pass here), unless the connection is ending.
        let mut progress = progress;
        if self.limits.request_head_wait_ns > 0
            && progress == Progress::Decided
            && !flow.ended()
            && let Some(cookie) = flow.completed_inbound()
            && !self.request_heads.contains_key(&cookie)
            && self.awaiting_heads.len() < self.limits.max_flows
        {
            if !self.awaiting_heads.contains_key(&cookie) {
                let due = seg.ts_ns.saturating_add(self.limits.request_head_wait_ns);
                self.awaiting_heads.insert(cookie, (due, key));
            }
            progress = Progress::Open;
        } else if self.limits.request_head_wait_ns > 0
            && progress == Progress::Open
            && self.held_inbound.len() < self.limits.max_flows
            && let Some(cookie) = flow.completed_inbound()
        {
            self.held_inbound.entry(cookie).or_insert(key);
        }
        // A TLS 1.3 client whose library has so far handed on only a leaf that another
        // certificate signed may hand on the rest when it verifies, after its handshake.
        if self.limits.uprobe_chain_wait_ns > 0
            && progress == Progress::Decided
            && !flow.ended()
            && let Some(cookie) = flow.tls13_client_socket()
            && self.awaiting_chains.len() < self.limits.max_flows
        {
            if self.awaiting_chains.contains_key(&cookie) {
                progress = Progress::Open;
            } else if uprobe_chain_may_grow(&mut self.certs, &self.uprobe_certs, cookie) {
                let due = seg.ts_ns.saturating_add(self.limits.uprobe_chain_wait_ns);
                self.awaiting_chains.insert(cookie, (due, key));
                self.stats.uprobe_chains_awaited += 1;
                progress = Progress::Open;
            }
        }
        if progress == Progress::Decided || not_tls {
            self.close(&key);
        } else if progress == Progress::HalfClosed && !flow.half_close_queued {
            flow.half_close_queued = true;
            let due = seg.ts_ns.saturating_add(self.limits.half_close_timeout_ns);
            self.half_closed.push_back((due, key));
        }
        self.expire_half_closed();
        self.expire_awaiting_chains();
        self.evict_for_memory();
    }

    /// Take one packet: a TCP segment or a UDP datagram.
    pub fn push_packet(&mut self, packet: &Packet<'_>) {
        match packet {
            Packet::Tcp(seg) => self.push(seg),
            Packet::Udp(d) => self.push_datagram(d),
        }
    }

    /// Take one UDP datagram. A datagram that opens like a client's first QUIC Initial
    /// (versions 1 and 2) starts a flow; the flow's later datagrams, both ways, are read as
    /// QUIC. Other UDP is counted and dropped.
    pub fn push_datagram(&mut self, d: &Datagram<'_>) {
        self.stats.datagrams += 1;
        self.stats.payload_bytes += d.payload.len() as u64;
        self.now = self.now.max(d.ts_ns);
        let key = FlowKey::of(d.src, d.dst, true);
        let len = d.payload.len() + d.missing as usize;
        // A client's first Initial: its version and Destination Connection ID (the first byte
        // and the length rule out everything else before the header is read).
        let opening = crate::quic::packet::opens_quic(d.payload, len).and_then(|v| {
            crate::quic::packet::parse(d.payload)
                .ok()
                .map(|p| (v, p.dcid))
        });
        // A client that keeps its UDP socket opens its next connection on the same 4-tuple:
        // an Initial to a connection ID the reported flow never used is a new connection.
        let new_connection =
            |cids: &[Vec<u8>]| opening.is_some_and(|(_, dcid)| !cids.iter().any(|c| c == dcid));
        let reused = match self.flows.to_back(&key) {
            Some(Slot::Done { last_ts, prior }) => {
                *last_ts = (*last_ts).max(d.ts_ns);
                let cids = match prior.as_deref() {
                    Some(Prior::Quic(cids)) => Some(&cids[..]),
                    _ => None,
                };
                if !cids.is_some_and(new_connection) {
                    return;
                }
                true
            }
            // Still open (its client never sent 1-RTT where the sensor saw it): reported now.
            Some(Slot::Live(flow)) => flow.quic_cids().is_some_and(new_connection),
            None => false,
        };
        if reused {
            self.close(&key);
            self.flows.remove(&key);
            self.stats.tuples_reused += 1;
        }
        match self.flows.to_back(&key) {
            Some(Slot::Done { .. }) => return,
            Some(Slot::Live(_)) => {}
            None => {
                let Some((version, dcid)) = opening else {
                    self.stats.datagrams_not_quic += 1;
                    return;
                };
                self.make_room();
                self.stats.flows_created += 1;
                self.stats.quic_flows += 1;
                let client = usize::from(d.src != key.ends[0]);
                let flow = Flow::new_quic(key.ends, &self.limits, client, version, dcid);
                self.flows.insert(key, Slot::Live(Box::new(flow)));
            }
        }
        let Some(Slot::Live(flow)) = self.flows.get_mut(&key) else {
            return;
        };
        let before = flow.buffered();
        let progress = flow.push_datagram(d, &self.limits);
        if let Some(seen) = flow.quic_attempt_update() {
            self.quic_attempts.note(seen);
        }
        let after = flow.buffered();
        self.buffered = (self.buffered + after).saturating_sub(before);
        if progress == Progress::Decided {
            self.close(&key);
        } else if flow.has_server_hello() && !flow.half_close_queued {
            // QUIC has no close the sensor can read: a client that got the server's flight
            // and has not finished within the wait gave up (its CONNECTION_CLOSE went in a
            // Handshake packet), and is reported then rather than when the flow goes idle.
            flow.half_close_queued = true;
            let due = d.ts_ns.saturating_add(QUIC_FINISH_WAIT_NS);
            self.half_closed.push_back((due, key));
        }
        self.expire_half_closed();
        self.evict_for_memory();
    }

    /// Time has moved on to `now_ns`: report and forget flows idle for longer than the timeout.
    pub fn advance(&mut self, now_ns: u64) {
        self.now = self.now.max(now_ns);
        self.expire_half_closed();
        self.expire_awaiting_heads();
        self.expire_awaiting_chains();
        let deadline = self.now.saturating_sub(self.limits.idle_timeout_ns);
        self.expire_uprobe_certs(deadline);
        while let Some((key, slot)) = self.flows.front() {
            if slot.last_ts() > deadline {
                break;
            }
            let key = *key;
            if matches!(slot, Slot::Live(_)) {
                self.stats.flows_expired += 1;
            }
            self.close(&key);
            self.flows.remove(&key);
        }
    }

    /// Report half-closed flows whose grace period is over.
    fn expire_half_closed(&mut self) {
        while let Some(&(due, key)) = self.half_closed.front() {
            if due > self.now {
                break;
            }
            self.half_closed.pop_front();
            self.close(&key);
        }
    }

    /// The input is over: report every flow that had a ClientHello.
    pub fn finish(&mut self) {
        let keys: Vec<FlowKey> = self.flows.keys().copied().collect();
        for key in keys {
            self.close(&key);
        }
        self.flows.clear();
        self.half_closed.clear();
        self.awaiting_heads.clear();
        self.awaiting_chains.clear();
        self.held_inbound.clear();
        self.buffered = 0;
    }

    /// Keep the table under `max_flows`.
    fn make_room(&mut self) {
        while self.flows.len() >= self.limits.max_flows {
            if !self.evict_oldest() {
                break;
            }
            self.stats.flows_evicted += 1;
        }
    }

    /// Give up on the least recently active flows until the buffers fit the memory limit.
    fn evict_for_memory(&mut self) {
        while self.buffered > self.limits.max_buffered_bytes {
            if !self.evict_oldest() {
                break;
            }
            self.stats.flows_evicted_memory += 1;
        }
    }

    /// Report and drop the least recently active flow. False when there is none.
    fn evict_oldest(&mut self) -> bool {
        let Some((key, _)) = self.flows.front() else {
            return false;
        };
        let key = *key;
        // Its handshake is reported as far as it got, and says why it ends there.
        if let Some(Slot::Live(flow)) = self.flows.get_mut(&key) {
            flow.note_loss(crate::event::CaptureLoss::Evicted);
        }
        self.close(&key);
        self.flows.remove(&key);
        true
    }

    /// Report a live flow (if it had a ClientHello) and leave a tombstone in its place.
    fn close(&mut self, key: &FlowKey) {
        let Some(slot) = self.flows.get_mut(key) else {
            return;
        };
        let Slot::Live(flow) = slot else {
            return;
        };
        let last_ts = flow.last_ts;
        self.buffered = self.buffered.saturating_sub(flow.buffered());
        for s in flow.stream_stats() {
            self.stats.duplicate_bytes += s.duplicate_bytes;
            self.stats.out_of_order_segments += s.out_of_order_segments;
            self.stats.dropped_segments += s.dropped_segments;
            self.stats.gaps += s.gaps;
        }
        let had_hello = flow.has_client_hello();
        let not_tls = flow.is_not_tls() && !had_hello;
        let quic_answered = flow.quic_attempt().map(|a| a.answered);
        let prior = match flow.quic_cids() {
            Some(c) => Some(Box::new(Prior::Quic(c.to_vec().into_boxed_slice()))),
            // Only a flow whose sockets the kernel named can meet a first segment on a socket.
            None => flow.tcp_prior().map(|p| Box::new(Prior::Tcp(p))),
        };
        let client_pid = flow.client_pid();
        let reported = flow.finish(
            self.now,
            &self.limits,
            &mut self.certs,
            &mut self.fingerprints,
        );
        if !flow.malformed().is_empty() {
            self.stats.flows_malformed += 1;
        }
        *slot = Slot::Done { last_ts, prior };
        match reported {
            Some(mut hs) => {
                self.stats.handshakes += 1;
                match quic_answered {
                    Some(answered) => self.stats.quic_answered += u64::from(answered),
                    None if self.quic_attempts.followed_unanswered(&hs, client_pid) => {
                        hs.quic_unanswered = true;
                        self.stats.quic_blocked += 1;
                    }
                    None => {}
                }
                if let Some(cookie) = hs.server_socket_cookie {
                    self.awaiting_heads.remove(&cookie);
                    self.held_inbound.remove(&cookie);
                    if hs.socket_cookie.is_none() {
                        hs.request = self.request_heads.remove(&cookie);
                    }
                }
                if let Some(cookie) = hs.socket_cookie {
                    self.awaiting_chains.remove(&cookie);
                }
                self.take_uprobe_chain(&mut hs, client_pid);
                self.out.push_back(hs);
            }
            None if not_tls => self.stats.flows_not_tls += 1,
            None => self.stats.flows_without_client_hello += 1,
        }
    }
}

/// Whether the uprobe chain of client socket `cookie` is one certificate that another signed:
/// the rest may still come.
fn uprobe_chain_may_grow(
    certs: &mut x509::SummaryCache,
    chains: &hashlink::LruCache<u64, UprobeChain>,
    cookie: u64,
) -> bool {
    match chains.peek(&cookie).map(|c| c.ders.as_slice()) {
        Some([leaf]) => certs.summarize(leaf).is_ok_and(|s| !s.self_issued),
        _ => false,
    }
}

/// Whether the leaf of an uprobe chain may be the server's of a handshake for `sni`: it names
/// that host, or no host at all (then the verdict judges it). A thread that interleaves
/// handshakes (a browser's socket thread, an event loop) may have parsed another socket's
/// chain; a leaf that names other hosts is not this handshake's.
fn leaf_fits(certs: &mut x509::SummaryCache, ders: &[Vec<u8>], sni: Option<&str>) -> bool {
    let Some(leaf) = ders.first().and_then(|d| certs.summarize(d).ok()) else {
        return false;
    };
    sni.is_none_or(|sni| leaf.san.is_empty() || x509::names_host(&leaf.san, sni))
}

/// The chain the socket's client parsed (uprobe): the chain of a handshake whose chain
/// was not seen in clear (TLS 1.3), and the one that counts when the wire showed another.
/// The caller checked that its leaf fits the handshake ([`leaf_fits`]).
fn take_uprobe_chain(
    certs: &mut x509::SummaryCache,
    stats: &mut EngineStats,
    hs: &mut Handshake,
    ders: &[Vec<u8>],
) {
    let chain: Vec<_> = ders
        .iter()
        .filter_map(|d| certs.summarize(d).ok())
        .collect();
    let Some(leaf) = chain.first() else {
        return;
    };
    if let Some(wire) = hs.chain.first() {
        if wire.sha256 == leaf.sha256 {
            return;
        }
        // The client's library parsed another leaf than the wire carried: the client was
        // shown something else than the sensor saw. The client's chain is what it judged.
        stats.uprobe_chain_conflicts += 1;
        hs.wire_chain_sha256 = hs.chain.iter().map(|c| c.sha256.clone()).collect();
    }
    hs.chain = chain;
    hs.chain_source = Some(ChainSource::Uprobe);
    stats.uprobe_chains += 1;
}
