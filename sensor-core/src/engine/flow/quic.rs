//! A QUIC flow: the Initial packets of both directions decrypted with the keys of the
//! client's first Destination Connection ID, their CRYPTO frames reassembled by offset (in
//! each direction's [`Stream`](crate::reassembly::Stream), as TCP's bytes are) and read as
//! bare handshake messages. What follows the Initials is encrypted with keys only the
//! endpoints have: the sensor counts those packets and reads only their headers.

use crate::{
    capture::Datagram,
    event::{Malformed, QuicSummary},
    quic::{
        QuicVersion,
        frames::{self, Frame},
        initial::InitialKeys,
        packet::{HeaderError, Kind, Packets},
    },
    reassembly::Chunk,
    tls::record::TlsEvent,
};

use super::{Flow, Progress};
use crate::engine::EngineLimits;

/// CRYPTO stream offsets beyond this are not a handshake's first flight (a ClientHello with
/// post-quantum key shares is 2 KB; the stream's Initial part carries only the hellos).
const MAX_CRYPTO_OFFSET: u64 = 64 * 1024;

/// Initial keys a flow derives at most: the client's first DCID, and one per Retry.
const MAX_KEY_DERIVATIONS: u8 = 4;

/// QUIC's part of a flow.
#[derive(Debug)]
pub(in crate::engine) struct QuicFlow {
    keys: InitialKeys,
    /// The version of the client's first Initial.
    first_version: QuicVersion,
    derivations: u8,
    /// Largest Initial packet number decrypted, per direction index.
    largest_pn: [Option<u64>; 2],
    /// Where decryption happens, reused.
    scratch: Vec<u8>,
    retry: bool,
    version_negotiation: bool,
    zero_rtt: bool,
    initial_dropped: u32,
    /// Handshake packets (encrypted with handshake keys) per direction index.
    handshake_packets: [u32; 2],
    /// 1-RTT (short header) packets per direction index.
    short_packets: [u32; 2],
    /// The server sent anything: an Initial, a Retry, a Version Negotiation.
    answered: bool,
    /// `answered` as the engine's QUIC attempts last heard it (`None`: not yet).
    noted: Option<bool>,
    /// Connection IDs of this connection: the client's first Destination Connection ID and
    /// the Source Connection IDs both ends chose (bounded).
    cids: Vec<Vec<u8>>,
    /// The Source Connection IDs the server chose: the client's 1-RTT packets go to one of
    /// them (bounded).
    server_cids: Vec<Vec<u8>>,
}

/// Connection IDs a flow remembers at most.
const MAX_CIDS: usize = 8;

impl QuicFlow {
    pub(super) fn new(version: QuicVersion, dcid: &[u8]) -> Self {
        Self {
            keys: InitialKeys::new(version, dcid),
            first_version: version,
            derivations: 1,
            largest_pn: [None; 2],
            scratch: Vec::new(),
            retry: false,
            version_negotiation: false,
            zero_rtt: false,
            initial_dropped: 0,
            handshake_packets: [0; 2],
            short_packets: [0; 2],
            answered: false,
            noted: None,
            cids: vec![dcid.to_vec()],
            server_cids: Vec::new(),
        }
    }

    pub(super) fn buffered(&self) -> usize {
        self.scratch.capacity()
    }

    pub(super) fn summary(&self) -> QuicSummary {
        QuicSummary {
            version: self.keys.version(),
            first_version: self.first_version,
            retry: self.retry,
            version_negotiation: self.version_negotiation,
            zero_rtt: self.zero_rtt,
            initial_packets_dropped: self.initial_dropped,
        }
    }

    /// The client sent 1-RTT packets: it has the server's Finished checked and its own sent
    /// (RFC 9001 §4.1.1: 1-RTT keys come after the handshake), so it accepted the server.
    pub(super) fn client_finished(&self, client: usize) -> bool {
        self.short_packets[client] > 0
    }

    /// The client went on to the Handshake packet space (after the server's Initial).
    pub(super) fn client_sent_handshake(&self, client: usize) -> bool {
        self.handshake_packets[client] > 0
    }
}

impl Flow {
    /// A QUIC flow's attempt, once its ClientHello named a server.
    pub(in crate::engine) fn quic_attempt(&self) -> Option<crate::engine::quic_attempts::Seen<'_>> {
        let q = self.quic.as_deref()?;
        let ch = self.seen.client_hello.as_ref()?;
        let c = self.seen.client?;
        Some(crate::engine::quic_attempts::Seen {
            client: self.ends[c].ip(),
            sni: ch.server_name.as_deref()?,
            hello_ts: self.seen.client_hello_ts,
            answered: q.answered,
            pid: self.sockets[c].and_then(|s| s.pid_hint),
        })
    }

    /// The attempt, when the engine's QUIC attempts have not heard it as it stands: once the
    /// ClientHello named a server, and once more when the server answers.
    pub(in crate::engine) fn quic_attempt_update(
        &mut self,
    ) -> Option<crate::engine::quic_attempts::Seen<'_>> {
        let q = self.quic.as_deref_mut()?;
        let named = self
            .seen
            .client_hello
            .as_ref()
            .is_some_and(|ch| ch.server_name.is_some());
        if !named || q.noted == Some(q.answered) {
            return None;
        }
        q.noted = Some(q.answered);
        self.quic_attempt()
    }

    /// A QUIC flow's connection IDs.
    pub(in crate::engine) fn quic_cids(&self) -> Option<&[Vec<u8>]> {
        self.quic.as_deref().map(|q| q.cids.as_slice())
    }

    /// The pid the tap saw on the client's socket, when it is local.
    pub(in crate::engine) fn client_pid(&self) -> Option<u32> {
        self.sockets[self.seen.client?].and_then(|s| s.pid_hint)
    }

    /// A QUIC flow, opened by a client Initial from endpoint `client`.
    pub(in crate::engine) fn new_quic(
        ends: [std::net::SocketAddr; 2],
        limits: &EngineLimits,
        client: usize,
        version: QuicVersion,
        dcid: &[u8],
    ) -> Self {
        let mut flow = Self::new(ends, limits);
        flow.seen.client = Some(client);
        flow.seen.tls13_negotiated = true;
        for d in &mut flow.dirs {
            // CRYPTO offsets start at 0: the stream's base is set as after a SYN at -1.
            d.stream.syn(u32::MAX);
        }
        flow.quic = Some(Box::new(QuicFlow::new(version, dcid)));
        flow
    }

    /// Take one datagram of this QUIC flow, and say where the flow stands.
    pub(in crate::engine) fn push_datagram(
        &mut self,
        d: &Datagram<'_>,
        limits: &EngineLimits,
    ) -> Progress {
        let idx = usize::from(d.src != self.ends[0]);
        self.note_packet(idx, d.ts_ns, d.attribution);
        let Self {
            dirs, seen, quic, ..
        } = self;
        let Some(q) = quic.as_deref_mut() else {
            return Progress::Open;
        };
        let client = seen.client.unwrap_or(0);
        let from_client = idx == client;
        q.answered |= !from_client;
        let ts = d.ts_ns;
        for packet in Packets::new(d.payload) {
            let p = match packet {
                Ok(p) => p,
                // The source cut the datagram (a snap length, a GSO burst larger than a
                // record): the packet it cut is lost, not malformed.
                Err(HeaderError::Truncated | HeaderError::BadLength) if d.missing > 0 => {
                    seen.note_loss(crate::event::CaptureLoss::Gap);
                    break;
                }
                Err(_) => {
                    seen.note_malformed(Malformed::BadQuicHeader);
                    break;
                }
            };
            match p.kind {
                // Both ends' IDs: a server's Initial goes to the client's.
                Kind::Initial | Kind::Handshake | Kind::Retry
                    if !p.scid.is_empty()
                        && q.cids.len() < MAX_CIDS
                        && !q.cids.iter().any(|c| c == p.scid) =>
                {
                    q.cids.push(p.scid.to_vec());
                    if !from_client {
                        q.server_cids.push(p.scid.to_vec());
                    }
                }
                _ => {}
            }
            match p.kind {
                Kind::Initial => {
                    // After a Retry the client's Initial goes to the Retry's connection ID,
                    // with keys of that ID (RFC 9001 §5.2).
                    if from_client
                        && q.retry
                        && p.dcid != q.keys.dcid()
                        && q.derivations < MAX_KEY_DERIVATIONS
                        && let Some(v) = p.quic_version()
                    {
                        q.keys = InitialKeys::new(v, p.dcid);
                        q.derivations += 1;
                        q.largest_pn = [None; 2];
                    }
                    // Compatible version negotiation (RFC 9368): the server may answer a
                    // version 2 Initial in version 1 (or the other way round), with keys of
                    // its version from the same connection ID.
                    if let Some(v) = p.quic_version()
                        && v != q.keys.version()
                        && q.derivations < MAX_KEY_DERIVATIONS
                    {
                        q.keys = InitialKeys::new(v, q.keys.dcid());
                        q.derivations += 1;
                    }
                    let QuicFlow {
                        keys,
                        largest_pn,
                        scratch,
                        initial_dropped,
                        ..
                    } = q;
                    let Ok((pn, plain)) = keys.decrypt(from_client, &p, largest_pn[idx], scratch)
                    else {
                        *initial_dropped = initial_dropped.saturating_add(1);
                        continue;
                    };
                    largest_pn[idx] = Some(largest_pn[idx].map_or(pn, |l| l.max(pn)));
                    let dir = &mut dirs[idx];
                    let mut bad_offset = false;
                    let read = frames::read(plain, &mut |frame| match frame {
                        Frame::Crypto { offset, data } => {
                            let Some(end) = offset.checked_add(data.len() as u64) else {
                                bad_offset = true;
                                return;
                            };
                            if end > MAX_CRYPTO_OFFSET {
                                bad_offset = true;
                                return;
                            }
                            let super::Direction { stream, reader, .. } = dir;
                            let conflicts = stream.stats().conflicts;
                            stream.push(
                                offset as u32,
                                data,
                                0,
                                false,
                                &limits.stream,
                                &mut |chunk| match chunk {
                                    Chunk::Data(b) => reader
                                        .feed_handshake(b, &mut |ev| seen.on_event(idx, ev, ts)),
                                    Chunk::Gap(_, cause) => {
                                        seen.on_gap(cause);
                                        reader.gap(&mut |ev| seen.on_event(idx, ev, ts));
                                    }
                                },
                            );
                            if stream.stats().conflicts > conflicts {
                                seen.note_loss(crate::event::CaptureLoss::Conflict);
                            }
                        }
                        Frame::ConnectionClose { error_code } => {
                            // A TLS alert is a CRYPTO_ERROR: 0x0100 plus its description.
                            if let Some(description) = error_code
                                .checked_sub(0x100)
                                .and_then(|a| u8::try_from(a).ok())
                            {
                                seen.on_event(
                                    idx,
                                    TlsEvent::Alert {
                                        level: 2,
                                        description,
                                    },
                                    ts,
                                );
                            }
                        }
                    });
                    if bad_offset {
                        seen.note_malformed(Malformed::QuicCryptoOffset);
                    }
                    if read.is_err() {
                        seen.note_malformed(Malformed::BadQuicFrame);
                    }
                }
                Kind::Handshake => {
                    q.handshake_packets[idx] = q.handshake_packets[idx].saturating_add(1);
                }
                Kind::ZeroRtt if from_client => q.zero_rtt = true,
                Kind::Retry if !from_client => q.retry = true,
                Kind::VersionNegotiation if !from_client => q.version_negotiation = true,
                // A client keeping its socket may still send packets of its previous
                // connection on this 4-tuple: only 1-RTT packets to an ID this connection's
                // server chose are this connection's. The server's own go to the client's ID.
                Kind::Short
                    if !from_client
                        || q.server_cids
                            .iter()
                            .any(|c| p.bytes.get(1..).is_some_and(|b| b.starts_with(c))) =>
                {
                    q.short_packets[idx] = q.short_packets[idx].saturating_add(1);
                    seen.first_app_ts[idx].get_or_insert(ts);
                }
                _ => {}
            }
        }
        match self.outcome(false) {
            crate::event::ClientOutcome::Completed | crate::event::ClientOutcome::Rejected => {
                Progress::Decided
            }
            _ => Progress::Open,
        }
    }
}
