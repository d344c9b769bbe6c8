//! One flow: two reassembled directions, their TLS record readers, and what the handshake
//! showed so far. A TCP flow's directions are its byte streams; a QUIC flow's ([`quic`]) are
//! the CRYPTO streams of its Initial packets.

mod quic;

use std::net::SocketAddr;

use crate::{
    capture::{Attribution, LocalSocket, Segment},
    event::{
        Alert, ByDirection, CaptureLoss, ChainSource, ClientOffer, ClientOutcome, Handshake,
        LocalSockets, Malformed, OcspStaple, Side, SideAlert, Timestamp, TlsVersion, Transport,
    },
    reassembly::{Chunk, GapCause, Stream, StreamStats},
    tls::{
        fingerprint,
        hello::{self, ClientHello, ServerHello},
        record::{RecordReader, TlsEvent},
    },
    x509,
};

use super::EngineLimits;

/// Handshake message types the engine looks at.
mod msg {
    pub const CLIENT_HELLO: u8 = 1;
    pub const SERVER_HELLO: u8 = 2;
    pub const CERTIFICATE: u8 = 11;
    pub const SERVER_KEY_EXCHANGE: u8 = 12;
    pub const CERTIFICATE_STATUS: u8 = 22;
}

/// One direction of a flow: traffic sent by one endpoint.
#[derive(Debug)]
struct Direction {
    stream: Stream,
    reader: RecordReader,
    closed: bool,
}

impl Direction {
    fn new(limits: &EngineLimits) -> Self {
        Self {
            stream: Stream::new(),
            reader: RecordReader::new(limits.reader),
            closed: false,
        }
    }
}

/// What the handshake showed, filled in as events arrive.
#[derive(Debug, Default)]
struct Observed {
    /// Index (0 or 1) of the client's endpoint, once known.
    client: Option<usize>,
    client_hello: Option<ClientHello>,
    client_hello_ts: u64,
    server_hello: Option<ServerHello>,
    hello_retry_request: bool,
    /// A ServerHello or HelloRetryRequest chose TLS 1.3.
    tls13_negotiated: bool,
    /// DER certificates of the server's Certificate message (TLS <= 1.2), leaf first.
    chain: Vec<Vec<u8>>,
    /// The client sent a certificate (mutual TLS).
    client_certified: bool,
    /// The DER of the client's certificate, when it sent one in clear (TLS <= 1.2).
    client_certificate: Option<Vec<u8>>,
    /// Named group or DH size from ServerKeyExchange (TLS <= 1.2).
    server_key_exchange: Option<String>,
    /// The server sent a Certificate or ServerKeyExchange message (TLS <= 1.2), before its
    /// ChangeCipherSpec if it sent one: a full handshake.
    server_full_handshake: bool,
    /// A stapled OCSP response: its length and SHA-256.
    ocsp: Option<OcspStaple>,
    alerts: Vec<SideAlert>,
    client_fatal: Option<Alert>,
    proxy_connect: Option<String>,
    /// The User-Agent header of the client's CONNECT request.
    proxy_user_agent: Option<String>,
    /// The first plaintext line of the flow, in either direction.
    saw_prefix: bool,
    /// A TLS record, in either direction.
    saw_tls: bool,
    /// What the sensor could not see, and why.
    losses: Vec<CaptureLoss>,
    /// When the flow's first segment came.
    first_ts: u64,
    not_tls: bool,
    malformed: Vec<Malformed>,
    /// application_data records per direction index.
    app_records: [u32; 2],
    /// Server application_data records sent after the client's first one (TLS 1.3).
    server_records_after_client_finished: u32,
    server_flight_bytes: u64,
    /// Bytes of the client's first application_data record (TLS 1.3: its Finished).
    client_flight_bytes: u64,
    /// ChangeCipherSpec seen, per direction index.
    ccs: [bool; 2],
    /// When each direction sent its first application_data record.
    first_app_ts: [Option<u64>; 2],
    /// Encrypted alert records per direction index.
    encrypted_alerts: [u32; 2],
}

impl Observed {
    fn side(&self, idx: usize) -> Side {
        match self.client {
            Some(c) if c != idx => Side::Server,
            _ => Side::Client,
        }
    }

    /// The server resumed a session: TLS 1.3 with its pre_shared_key extension (41), or a
    /// TLS 1.2 ChangeCipherSpec from the server with no full handshake before it, the whole
    /// flow seen (a loss could have hidden the Certificate).
    fn resumed(&self) -> bool {
        const PRE_SHARED_KEY: u16 = 41;
        let Some(sh) = &self.server_hello else {
            return false;
        };
        if self.is_tls13() {
            return sh.extensions.contains(&PRE_SHARED_KEY);
        }
        let server = self.client.map(|c| 1 - c);
        server.is_some_and(|s| self.ccs[s])
            && !self.server_full_handshake
            && self.losses.is_empty()
            && self.malformed.is_empty()
    }

    fn is_tls13(&self) -> bool {
        self.server_hello
            .as_ref()
            .is_some_and(|sh| sh.selected_version == 0x0304)
    }

    /// Heap bytes of what the flow keeps until its handshake is reported: the parsed hello
    /// and the chain's DER (which a peer sizes), counted with the buffers against the engine's
    /// memory limit.
    fn held_bytes(&self) -> usize {
        self.client_hello
            .as_ref()
            .map_or(0, ClientHello::heap_bytes)
            + self.chain.iter().map(Vec::len).sum::<usize>()
            + self.client_certificate.as_ref().map_or(0, Vec::len)
    }

    fn note_malformed(&mut self, m: Malformed) {
        if !self.malformed.contains(&m) && self.malformed.len() < 16 {
            self.malformed.push(m);
        }
        if m == Malformed::PrefixTooLong {
            self.note_loss(CaptureLoss::PrefixTooLong);
        }
    }

    fn note_loss(&mut self, l: CaptureLoss) {
        if !self.losses.contains(&l) {
            self.losses.push(l);
            self.losses.sort();
        }
    }

    /// A hole in direction `idx`'s stream.
    fn on_gap(&mut self, cause: GapCause) {
        self.note_loss(match cause {
            GapCause::Missing => CaptureLoss::Gap,
            GapCause::OutOfOrder => CaptureLoss::OutOfOrder,
        });
    }

    /// Interpret one event of direction `idx`.
    fn on_event(&mut self, idx: usize, ev: TlsEvent<'_>, ts: u64) {
        if !matches!(ev, TlsEvent::PrefixLine(_) | TlsEvent::Malformed(_)) {
            self.saw_tls = true;
        }
        match ev {
            TlsEvent::PrefixLine(line) => self.on_prefix_line(idx, line),
            TlsEvent::Handshake(m) => self.on_handshake(idx, m, ts),
            TlsEvent::Alert { level, description } => {
                let alert = Alert::from_wire(level, description);
                let from = self.side(idx);
                if self.alerts.len() < 16 {
                    self.alerts.push(SideAlert { from, alert });
                }
                if from == Side::Client && alert.is_fatal() && self.client_fatal.is_none() {
                    self.client_fatal = Some(alert);
                }
            }
            TlsEvent::ApplicationData { len } => {
                let other = 1 - idx;
                self.first_app_ts[idx].get_or_insert(ts);
                if self.side(idx) == Side::Client && self.app_records[idx] == 0 {
                    self.client_flight_bytes = len as u64;
                }
                self.app_records[idx] = self.app_records[idx].saturating_add(1);
                if self.side(idx) == Side::Server {
                    if self.app_records[other] == 0 {
                        self.server_flight_bytes += len as u64;
                    } else {
                        self.server_records_after_client_finished += 1;
                    }
                }
            }
            TlsEvent::Malformed(m) => self.note_malformed(m),
            TlsEvent::ChangeCipherSpec => self.ccs[idx] = true,
            TlsEvent::EncryptedAlert { .. } => {
                self.encrypted_alerts[idx] = self.encrypted_alerts[idx].saturating_add(1);
            }
            TlsEvent::EncryptedHandshake { .. } | TlsEvent::Heartbeat => {}
        }
    }

    fn on_prefix_line(&mut self, idx: usize, line: &[u8]) {
        if !self.saw_prefix {
            self.saw_prefix = true;
            if !opens_tls_capable_protocol(line) {
                self.not_tls = true;
                return;
            }
        }
        if let Some(target) = line.strip_prefix(b"CONNECT ") {
            if self.client.is_none() {
                self.client = Some(idx);
            }
            let target = target.split(|&b| b == b' ').next().unwrap_or_default();
            self.proxy_connect = Some(String::from_utf8_lossy(target).into_owned());
        } else if self.proxy_connect.is_some()
            && self.client == Some(idx)
            && self.proxy_user_agent.is_none()
            && line.len() > 11
            && line[..11].eq_ignore_ascii_case(b"user-agent:")
        {
            let ua = String::from_utf8_lossy(&line[11..]);
            self.proxy_user_agent = Some(ua.trim().chars().take(256).collect());
        }
    }

    fn on_handshake(&mut self, idx: usize, m: &[u8], ts: u64) {
        match m[0] {
            msg::CLIENT_HELLO => match hello::parse_client_hello(m) {
                Ok(ch) => {
                    if self.client_hello.is_none() {
                        self.client = Some(idx);
                        self.client_hello = Some(ch);
                        self.client_hello_ts = ts;
                    }
                    if ch_bad(self.client_hello.as_ref()) {
                        self.note_malformed(Malformed::BadExtensions);
                    }
                    if self.client_hello.as_ref().is_some_and(|c| c.trailing_data) {
                        self.note_malformed(Malformed::HelloTrailingData);
                    }
                    if self.client_hello.as_ref().is_some_and(|c| c.oversized) {
                        self.note_malformed(Malformed::OversizedField);
                    }
                }
                Err(_) => self.note_malformed(Malformed::BadHandshakeMessage),
            },
            msg::SERVER_HELLO => match hello::parse_server_hello(m) {
                Ok(sh) if sh.hello_retry_request => {
                    self.hello_retry_request = true;
                    self.tls13_negotiated |= sh.selected_version == 0x0304;
                }
                Ok(sh) => {
                    self.tls13_negotiated |= sh.selected_version == 0x0304;
                    if self.server_hello.is_none() {
                        self.server_hello = Some(sh);
                    }
                }
                Err(_) => self.note_malformed(Malformed::BadHandshakeMessage),
            },
            msg::CERTIFICATE => self.on_certificate(idx, m),
            msg::SERVER_KEY_EXCHANGE if self.side(idx) == Side::Server => {
                self.server_full_handshake = true;
                if let Some(sh) = &self.server_hello {
                    self.server_key_exchange = hello::server_key_exchange(sh.cipher, m);
                }
            }
            msg::CERTIFICATE_STATUS if self.side(idx) == Side::Server => self.on_ocsp(m),
            _ => {}
        }
    }

    fn on_ocsp(&mut self, m: &[u8]) {
        use tls_parser::{TlsMessage, TlsMessageHandshake, parse_tls_message_handshake};
        match parse_tls_message_handshake(m) {
            Ok((_, TlsMessage::Handshake(TlsMessageHandshake::CertificateStatus(st)))) => {
                // tls-parser has already taken off the OCSPResponse's u24 length.
                let response = st.blob;
                self.ocsp = Some(OcspStaple {
                    status_type: st.status_type,
                    len: response.len(),
                    sha256: x509::sha256_hex(response),
                });
            }
            _ => self.note_malformed(Malformed::BadHandshakeMessage),
        }
    }

    fn on_certificate(&mut self, idx: usize, m: &[u8]) {
        use tls_parser::{TlsMessage, TlsMessageHandshake, parse_tls_message_handshake};
        if self.side(idx) == Side::Client {
            self.client_certified = true;
            if self.client_certificate.is_none()
                && let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::Certificate(c)))) =
                    parse_tls_message_handshake(m)
                && let Some(leaf) = c.cert_chain.first()
            {
                self.client_certificate = Some(leaf.data.to_vec());
            }
            return;
        }
        self.server_full_handshake = true;
        if !self.chain.is_empty() {
            return;
        }
        match parse_tls_message_handshake(m) {
            Ok((_, TlsMessage::Handshake(TlsMessageHandshake::Certificate(c)))) => {
                if c.cert_chain.len() > x509::MAX_CHAIN_LEN {
                    self.note_malformed(Malformed::ChainTooLong);
                }
                self.chain = c
                    .cert_chain
                    .iter()
                    .take(x509::MAX_CHAIN_LEN)
                    .map(|cert| cert.data.to_vec())
                    .collect();
            }
            _ => self.note_malformed(Malformed::BadHandshakeMessage),
        }
    }
}

/// What a ClientHello offered, GREASE left out, each list bounded.
fn offer(ch: &ClientHello) -> ClientOffer {
    // Sized up front: collecting a filtered iterator grows the vector by reallocation, four
    // times for a browser's cipher list (4 % of `analyze`'s profile).
    let real = |v: &[u16]| -> Vec<u16> {
        let mut out = Vec::with_capacity(v.len().min(64));
        out.extend(v.iter().copied().filter(|v| !hello::is_grease(*v)).take(64));
        out
    };
    ClientOffer {
        cipher_suites: real(&ch.cipher_suites),
        groups: real(&ch.groups),
        versions: real(&ch.supported_versions),
        signature_algorithms: real(&ch.signature_algorithms),
        extensions: real(&ch.extensions),
        grease: [
            &ch.cipher_suites,
            &ch.extensions,
            &ch.groups,
            &ch.supported_versions,
        ]
        .iter()
        .any(|list| list.iter().any(|v| hello::is_grease(*v))),
    }
}

fn ch_bad(ch: Option<&ClientHello>) -> bool {
    ch.is_some_and(|c| c.bad_extensions)
}

/// First lines after which TLS may start on the same connection: an HTTP proxy tunnel, or a
/// STARTTLS-capable protocol's greeting or first command.
fn opens_tls_capable_protocol(line: &[u8]) -> bool {
    const OPENINGS: [&[u8]; 8] = [
        b"CONNECT ",
        b"220 ",
        b"220-",
        b"* OK",
        b"+OK",
        b"EHLO ",
        b"HELO ",
        b"HTTP/1.",
    ];
    OPENINGS.iter().any(|o| line.starts_with(o))
}

/// A flow the engine tracks.
#[derive(Debug)]
pub(super) struct Flow {
    /// The two endpoints; index 0 is the lower address.
    ends: [SocketAddr; 2],
    dirs: [Direction; 2],
    /// The local socket of each endpoint, when the capture saw one.
    sockets: [Option<LocalSocket>; 2],
    seen: Observed,
    /// A RST was seen: nothing more will come.
    reset: bool,
    /// The kernel stopped forwarding payload (handshake over, budget or prefix exhausted):
    /// what receivers take from here on is not expected to be seen.
    forwarding_ended: bool,
    /// Already waiting in the engine's half-closed queue.
    pub(super) half_close_queued: bool,
    pub(super) last_ts: u64,
    /// Bytes each endpoint sent after the kernel stopped forwarding, as far as the closing
    /// segments' sequence numbers and the local receiver's position tell.
    unseen_after_end: [u64; 2],
    /// A QUIC flow's state: keys, packet numbers, what its packets showed.
    quic: Option<Box<quic::QuicFlow>>,
}

/// Where a flow stands after a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Progress {
    /// The handshake may still go on.
    Open,
    /// One side closed; the other may still send a little (a NewSessionTicket, an alert).
    HalfClosed,
    /// The outcome is known or nothing more will come: report the flow now.
    Decided,
}

impl Flow {
    pub(super) fn new(ends: [SocketAddr; 2], limits: &EngineLimits) -> Self {
        Self {
            ends,
            dirs: [Direction::new(limits), Direction::new(limits)],
            sockets: [None, None],
            seen: Observed::default(),
            reset: false,
            forwarding_ended: false,
            half_close_queued: false,
            last_ts: 0,
            unseen_after_end: [0; 2],
            quic: None,
        }
    }

    /// Bytes this flow holds in buffers.
    pub(super) fn buffered(&self) -> usize {
        self.dirs
            .iter()
            .map(|d| d.stream.pending_bytes() + d.reader.buffered())
            .sum::<usize>()
            + self.seen.held_bytes()
            + self.quic.as_ref().map_or(0, |q| q.buffered())
    }

    pub(super) fn stream_stats(&self) -> [StreamStats; 2] {
        [self.dirs[0].stream.stats(), self.dirs[1].stream.stats()]
    }

    /// Whether the flow turned out not to carry TLS, or carries nothing parseable any more
    /// before a ClientHello was seen.
    pub(super) fn is_not_tls(&self) -> bool {
        self.seen.not_tls
            || (self.seen.client_hello.is_none() && self.dirs.iter().any(|d| d.reader.is_stopped()))
    }

    pub(super) fn has_server_hello(&self) -> bool {
        self.seen.server_hello.is_some()
    }

    pub(super) fn has_client_hello(&self) -> bool {
        self.seen.client_hello.is_some()
    }

    pub(super) fn malformed(&self) -> &[Malformed] {
        &self.seen.malformed
    }

    pub(super) fn note_loss(&mut self, l: CaptureLoss) {
        self.seen.note_loss(l);
    }

    /// Take one segment of this flow, and say where the flow stands.
    /// What every packet of direction `idx` tells: its time, what the kernel lost, and the
    /// local socket it passed.
    fn note_packet(&mut self, idx: usize, ts: u64, attribution: Option<Attribution>) {
        self.last_ts = self.last_ts.max(ts);
        if self.seen.first_ts == 0 {
            self.seen.first_ts = ts;
        }
        let Some(a) = attribution else {
            return;
        };
        if a.budget_exhausted {
            self.seen.note_loss(CaptureLoss::Budget);
        }
        if a.prefix_exhausted {
            self.seen.note_loss(CaptureLoss::PrefixTooLong);
        }
        if a.records_lost {
            self.seen.note_loss(CaptureLoss::RingDrop);
        }
        if a.packets_unreadable {
            self.seen.note_loss(CaptureLoss::Gap);
        }
        let owner = a.owner(idx);
        let sock = self.sockets[owner].get_or_insert(LocalSocket {
            cookie: a.cookie,
            pid_hint: None,
        });
        if a.local_is_src && sock.pid_hint.is_none() {
            sock.pid_hint = a.pid;
        }
    }

    pub(super) fn push(&mut self, seg: &Segment<'_>, limits: &EngineLimits) -> Progress {
        use sensor_common::tcp_flags::{ACK, FIN, RST, SYN};
        let idx = usize::from(seg.src != self.ends[0]);
        let ts = seg.ts_ns;
        self.note_packet(idx, ts, seg.attribution);
        // Data without ACK is never taken by a TCP receiver once the connection is set up (a
        // SYN's data is fast open, which this sensor does not follow): an injected segment.
        if !seg.payload.is_empty() && seg.tcp_flags & ACK == 0 {
            return Progress::Open;
        }
        let Self { dirs, seen, .. } = self;
        // How far the receivers had taken each stream: where a stream starts whose first bytes
        // come out of order, and bytes a receiver took that the capture never had (a packet
        // the source could not read, or did not get). Not once the kernel stopped forwarding.
        // A segment of its sender's that the kernel forwarded without its bytes (a FIN once
        // forwarding ended) says where the sender's stream stood.
        let sent_to = (self.forwarding_ended && seg.payload.is_empty()).then(|| {
            let unforwarded = seg.attribution.map_or(0, |a| a.unforwarded);
            seg.seq.wrapping_add(seg.missing).wrapping_add(unforwarded)
        });
        for (d, next) in [
            (idx, seg.received.from_src),
            (1 - idx, seg.received.from_dst),
            (idx, sent_to),
        ] {
            let Some(next) = next else { continue };
            let unseen = dirs[d].stream.received_to(next);
            if self.forwarding_ended {
                self.unseen_after_end[d] = self.unseen_after_end[d].max(unseen);
            } else if unseen > 0 && !seen.losses.contains(&CaptureLoss::RingDrop) {
                seen.note_loss(CaptureLoss::Gap);
            }
        }
        if let Some(a) = seg.attribution
            && (a.handshake_done || a.budget_exhausted || a.prefix_exhausted)
        {
            self.forwarding_ended = true;
        }
        let dir = &mut dirs[idx];
        if seg.tcp_flags & SYN != 0 {
            dir.stream.syn(seg.seq);
            if seg.tcp_flags & ACK == 0 && seen.client.is_none() {
                seen.client = Some(idx);
            }
        }
        let fin = seg.tcp_flags & FIN != 0;
        if !seg.payload.is_empty() || fin || seg.missing > 0 {
            let Direction { stream, reader, .. } = dir;
            if seen.tls13_negotiated {
                reader.set_tls13();
            }
            let conflicts = stream.stats().conflicts;
            stream.push(
                seg.seq,
                seg.payload,
                seg.missing,
                fin,
                &limits.stream,
                &mut |chunk| match chunk {
                    Chunk::Data(d) => reader.feed(d, &mut |ev| seen.on_event(idx, ev, ts)),
                    Chunk::Gap(_, cause) => {
                        seen.on_gap(cause);
                        reader.gap(&mut |ev| seen.on_event(idx, ev, ts));
                    }
                },
            );
            if stream.stats().conflicts > conflicts {
                seen.note_loss(CaptureLoss::Conflict);
            }
        }
        if seg.tcp_flags & RST != 0 {
            dir.closed = true;
            self.reset = true;
        } else if fin {
            dir.closed = true;
        }
        if self.reset || self.dirs.iter().all(|d| d.closed) {
            return Progress::Decided;
        }
        match self.outcome(false) {
            ClientOutcome::Completed if self.awaits_request() => Progress::Open,
            ClientOutcome::Completed | ClientOutcome::Rejected => Progress::Decided,
            _ if self.dirs.iter().any(|d| d.closed) => Progress::HalfClosed,
            _ => Progress::Open,
        }
    }

    /// The server socket's cookie of an inbound flow (only the server's socket is local)
    /// whose handshake completed: its request head may come from the server's `SSL_read`.
    pub(super) fn completed_inbound(&self) -> Option<u64> {
        if self.quic.is_some() {
            return None;
        }
        let c = self.seen.client?;
        let server = self.sockets[1 - c]?;
        (self.sockets[c].is_none() && self.outcome(false) == ClientOutcome::Completed)
            .then_some(server.cookie)
    }

    /// The local client socket of a TCP TLS 1.3 flow whose server's chain was not seen in
    /// clear (so it can only come from a uprobe).
    pub(super) fn tls13_client_socket(&self) -> Option<u64> {
        if self.quic.is_some() || !self.seen.is_tls13() {
            return None;
        }
        let c = self.seen.client?;
        self.sockets[c].map(|s| s.cookie)
    }

    /// Whether `seg`, sent by endpoint `idx`, belongs to a new connection on this flow's
    /// 4-tuple: it came through a local socket other than the one this flow has on that end;
    /// or it is a ClientHello, the first segment on a socket this flow has not seen, from an
    /// end that sent nothing yet while the other end already had. A client's hello comes
    /// before anything its server sends: this flow was a connection whose client the capture
    /// did not see (sensord's own probe, whose socket the tap leaves out, to a local server).
    pub(super) fn new_connection(&self, seg: &Segment<'_>, idx: usize) -> bool {
        let Some(a) = seg.attribution else {
            return false;
        };
        let owner = a.owner(idx);
        match self.sockets[owner] {
            Some(s) => s.cookie != a.cookie,
            None => {
                a.first_on_socket
                    && matches!(seg.payload, [0x16, 0x03, _, _, _, 0x01, ..])
                    && self.dirs[idx].stream.is_unsent()
                    && !self.dirs[1 - idx].stream.is_unsent()
            }
        }
    }

    /// A TCP flow whose sockets the kernel named: each end's socket cookie and the sequence
    /// number just past what each end's stream was given.
    pub(super) fn tcp_prior(&self) -> Option<super::TcpPrior> {
        if self.quic.is_some() || self.sockets.iter().all(Option::is_none) {
            return None;
        }
        Some(super::TcpPrior {
            cookies: self.sockets.map(|s| s.map(|s| s.cookie)),
            seq_ends: [self.dirs[0].stream.seq_end(), self.dirs[1].stream.seq_end()],
        })
    }

    /// A side closed or reset: nothing to wait for.
    pub(super) fn ended(&self) -> bool {
        self.reset || self.dirs.iter().any(|d| d.closed)
    }

    /// An inbound TLS 1.3 session (only the server's socket is local) whose client finished
    /// its handshake and has sent nothing else yet: it is reported when the connection ends
    /// (or goes idle), so that it can say whether the client ever made a request. TLS 1.2
    /// sessions are not decided before the client's first application data anyway.
    fn awaits_request(&self) -> bool {
        let Some(c) = self.seen.client else {
            return false;
        };
        self.quic.is_none()
            && self.sockets[c].is_none()
            && self.sockets[1 - c].is_some()
            && self.seen.is_tls13()
            && self.seen.app_records[c] <= 1
    }

    /// The handshake completed and the client sent no application data before the connection
    /// ended: no request. TLS 1.3's first client record is its Finished; one more record of
    /// a close_notify's size (24 bytes) that the kernel no longer forwarded is no request.
    /// Only when the whole flow was seen (losses could hide a request) and it ended.
    fn idle_after_handshake(&self, outcome: ClientOutcome) -> bool {
        /// A TLS 1.3 close_notify: header, alert, content type, AEAD tag.
        const CLOSE_NOTIFY_RECORD: u64 = 5 + 2 + 1 + 16;
        let Some(c) = self.seen.client else {
            return false;
        };
        let ended = self.reset || self.dirs.iter().any(|d| d.closed);
        let finished_records = u32::from(self.seen.is_tls13());
        outcome == ClientOutcome::Completed
            && ended
            && self.seen.losses.is_empty()
            && self.seen.app_records[c] <= finished_records
            && self.unseen_after_end[c] <= CLOSE_NOTIFY_RECORD
    }

    /// The client's outcome from what was seen. `final_` once nothing more will arrive.
    fn outcome(&self, final_: bool) -> ClientOutcome {
        let seen = &self.seen;
        if seen.client_fatal.is_some() {
            return ClientOutcome::Rejected;
        }
        let Some(c) = seen.client else {
            return ClientOutcome::Unknown;
        };
        if let Some(q) = &self.quic {
            return match () {
                _ if seen.server_hello.is_some() && q.client_finished(c) => {
                    ClientOutcome::Completed
                }
                // The server's flight came and the client never finished: it gave up (its
                // CONNECTION_CLOSE went in a Handshake packet the sensor cannot read).
                _ if final_ && seen.server_hello.is_some() && q.client_sent_handshake(c) => {
                    ClientOutcome::Aborted
                }
                _ => ClientOutcome::Unknown,
            };
        }
        let s = 1 - c;
        let (client, server) = (&self.dirs[c], &self.dirs[s]);
        let (client_app, server_app) = (seen.app_records[c], seen.app_records[s]);
        let completed = if seen.is_tls13() {
            // The client's first encrypted record is its Finished (a client that rejects the
            // server sends an alert instead, and nothing after it). A second encrypted record
            // from the client, or the server answering the first (NewSessionTicket,
            // application data), means the handshake completed.
            client_app >= 2 || (client_app >= 1 && seen.server_records_after_client_finished >= 1)
        } else {
            (client_app >= 1 && server_app >= 1)
                || (final_
                    && client.reader.is_encrypted()
                    && server.reader.is_encrypted()
                    && seen.server_hello.is_some())
        };
        if completed {
            return ClientOutcome::Completed;
        }
        // TLS 1.3 encrypts a client's alert too (OpenSSL sends it in clear, GnuTLS does not):
        // one encrypted record of an alert's size (2 bytes, the inner content type, a 16- or
        // 8-byte tag) instead of a Finished (at least 53), and then the client closed.
        if seen.is_tls13()
            && client_app == 1
            && matches!(seen.client_flight_bytes, 19 | 11)
            && (client.closed || final_)
        {
            return ClientOutcome::Rejected;
        }
        if final_ && seen.server_hello.is_some() && client.closed {
            return ClientOutcome::Aborted;
        }
        ClientOutcome::Unknown
    }

    fn transport(&self) -> Transport {
        if self.quic.is_some() {
            Transport::Quic
        } else {
            Transport::Tcp
        }
    }

    /// Give up on holes, decide, and build the event. Call once, when the flow is reported.
    pub(super) fn finish(
        &mut self,
        now: u64,
        limits: &EngineLimits,
        certs: &mut x509::SummaryCache,
        fingerprints: &mut fingerprint::FingerprintCache,
    ) -> Option<Handshake> {
        let Self {
            dirs, seen, quic, ..
        } = self;
        let bare = quic.is_some();
        for (idx, dir) in dirs.iter_mut().enumerate() {
            let Direction { stream, reader, .. } = dir;
            stream.flush(&limits.stream, &mut |chunk| match chunk {
                Chunk::Data(d) if bare => {
                    reader.feed_handshake(d, &mut |ev| seen.on_event(idx, ev, now))
                }
                Chunk::Data(d) => reader.feed(d, &mut |ev| seen.on_event(idx, ev, now)),
                Chunk::Gap(_, cause) => {
                    seen.on_gap(cause);
                    reader.gap(&mut |ev| seen.on_event(idx, ev, now));
                }
            });
        }
        if self.seen.client_hello.is_none() {
            return self.unseen_handshake(now);
        }
        let mut chain = Vec::with_capacity(self.seen.chain.len());
        let mut bad_certificate = false;
        for der in &self.seen.chain {
            match certs.summarize(der) {
                Ok(summary) => chain.push(summary),
                Err(_) => bad_certificate = true,
            }
        }
        if bad_certificate {
            self.seen.note_malformed(Malformed::BadCertificate);
        }
        if chain.iter().any(|c| c.names_cut) {
            self.seen.note_malformed(Malformed::OversizedField);
        }
        let client_leaf = self.seen.client_certificate.as_deref();
        let client_certificate_leaf = client_leaf.and_then(|der| certs.summarize(der).ok());
        let client_certificate_sha256 = match &client_certificate_leaf {
            Some(summary) => Some(summary.sha256.clone()),
            None => client_leaf.map(x509::sha256_hex),
        };
        let ch = self.seen.client_hello.as_ref()?;
        let c = self.seen.client.unwrap_or(0);
        let s = 1 - c;
        let (src, dst) = (self.ends[c], self.ends[s]);
        let sh = self.seen.server_hello.as_ref();
        let offered_max = ch
            .supported_versions
            .iter()
            .copied()
            .filter(|v| !hello::is_grease(*v))
            .max()
            .unwrap_or(ch.version);
        let version = sh.map_or(offered_max, |sh| sh.selected_version);
        let local_sockets = LocalSockets {
            client: self.sockets[c],
            server: self.sockets[s],
        };
        let mut client_fp = fingerprints.client(ch);
        if self.quic.is_some() {
            // JA4's first character is the transport: `q` for QUIC.
            client_fp.ja4.replace_range(..1, "q");
        }
        let outcome = self.outcome(true);
        let server_fp = sh.map(|sh| fingerprints.server(sh));
        Some(Handshake {
            time: Timestamp(self.seen.client_hello_ts),
            end_time: Timestamp(now.max(self.seen.client_hello_ts)),
            src_addr: Some(src.ip()),
            src_port: src.port(),
            dst_addr: Some(dst.ip()),
            dst_port: dst.port(),
            server_name: ch.server_name.clone(),
            tls_version: TlsVersion::from_wire(version),
            alpn: sh.and_then(|sh| sh.alpn.clone()),
            client_alpn: ch.alpn.clone(),
            cipher: sh.map(|sh| hello::cipher_name(sh.cipher)),
            key_exchange: self
                .seen
                .server_key_exchange
                .clone()
                .or_else(|| sh.and_then(|sh| sh.key_share_group).map(hello::group_name)),
            ja3: Some(client_fp.ja3),
            ja3_string: Some(client_fp.ja3_string),
            ja4: Some(client_fp.ja4),
            #[cfg(feature = "ja4plus")]
            ja4s: server_fp.as_ref().map(|s| s.ja4s.clone()),
            ja3s: server_fp.map(|s| s.ja3s),
            ocsp_staple: self.seen.ocsp.clone(),
            hello_retry_request: self.seen.hello_retry_request,
            chain_source: (!chain.is_empty()).then_some(ChainSource::Passive),
            chain,
            client_certificate: self.seen.client_certified,
            client_certificate_sha256,
            client_certificate_leaf,
            resumption_offered: ch.session_ticket || ch.psk,
            client_outcome: outcome,
            idle_after_handshake: self.idle_after_handshake(outcome),
            request: None,
            alert: self.seen.client_fatal,
            alerts: self.seen.alerts.clone(),
            proxy_connect: self.seen.proxy_connect.clone(),
            server_encrypted_flight_bytes: (self.seen.is_tls13()
                && self.seen.server_flight_bytes > 0)
                .then_some(self.seen.server_flight_bytes),
            client_encrypted_flight_bytes: (self.seen.is_tls13()
                && self.seen.client_flight_bytes > 0)
                .then_some(self.seen.client_flight_bytes),
            change_cipher_spec: ByDirection {
                client: self.seen.ccs[c],
                server: self.seen.ccs[s],
            },
            first_application_data: ByDirection {
                client: self.seen.first_app_ts[c].map(Timestamp),
                server: self.seen.first_app_ts[s].map(Timestamp),
            },
            encrypted_alerts: ByDirection {
                client: self.seen.encrypted_alerts[c],
                server: self.seen.encrypted_alerts[s],
            },
            socket_cookie: local_sockets.client.map(|l| l.cookie),
            server_socket_cookie: local_sockets.server.map(|l| l.cookie),
            local_sockets,
            malformed: self.seen.malformed.clone(),
            capture_incomplete: self.seen.losses.clone(),
            wire_chain_sha256: Vec::new(),
            proxy_user_agent: self.seen.proxy_user_agent.clone(),
            resumed: self.seen.resumed(),
            client_offer: Some(offer(ch)),
            transport: self.transport(),
            quic: self.quic.as_ref().map(|q| q.summary()),
            quic_unanswered: false,
        })
    }

    /// A flow without a ClientHello the sensor could read. It is reported when the sensor
    /// lost part of it (a TLS flow or a plaintext opening that may have turned into TLS): a
    /// handshake may have happened unseen. Otherwise it is not TLS, or it ended before its
    /// ClientHello was complete, and nothing is reported.
    fn unseen_handshake(&self, now: u64) -> Option<Handshake> {
        let seen = &self.seen;
        let started_tls = seen.saw_tls || self.dirs.iter().any(|d| d.reader.saw_records());
        if seen.losses.is_empty() || !(started_tls || seen.saw_prefix) || seen.not_tls {
            return None;
        }
        let c = seen.client.unwrap_or(0);
        let s = 1 - c;
        let (src, dst) = (self.ends[c], self.ends[s]);
        let local_sockets = LocalSockets {
            client: self.sockets[c],
            server: self.sockets[s],
        };
        Some(Handshake {
            time: Timestamp(seen.first_ts),
            end_time: Timestamp(now.max(seen.first_ts)),
            src_addr: Some(src.ip()),
            src_port: src.port(),
            dst_addr: Some(dst.ip()),
            dst_port: dst.port(),
            client_outcome: self.outcome(true),
            alert: seen.client_fatal,
            alerts: seen.alerts.clone(),
            proxy_connect: seen.proxy_connect.clone(),
            proxy_user_agent: seen.proxy_user_agent.clone(),
            socket_cookie: local_sockets.client.map(|l| l.cookie),
            server_socket_cookie: local_sockets.server.map(|l| l.cookie),
            local_sockets,
            malformed: seen.malformed.clone(),
            capture_incomplete: seen.losses.clone(),
            transport: self.transport(),
            quic: self.quic.as_ref().map(|q| q.summary()),
            ..Handshake::default()
        })
    }
}
