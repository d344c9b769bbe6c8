//! TLS record framing for one direction of a flow.
//!
//! A [`RecordReader`] takes the reassembled byte stream in pieces of any size, finds where TLS
//! starts (at once, or after a plaintext prefix such as an HTTP `CONNECT` or a STARTTLS exchange),
//! splits it into records, and reassembles handshake messages across records. It holds at most
//! one record and one handshake message, both bounded, and stops parsing a direction (reporting
//! why) as soon as the bytes stop making sense.

/// Record content types.
pub mod content_type {
    pub const CHANGE_CIPHER_SPEC: u8 = 20;
    pub const ALERT: u8 = 21;
    pub const HANDSHAKE: u8 = 22;
    pub const APPLICATION_DATA: u8 = 23;
    pub const HEARTBEAT: u8 = 24;
}

/// Largest record payload the reader accepts: TLSCiphertext may be 2^14 + 2048 bytes.
pub const MAX_RECORD_LEN: usize = (1 << 14) + 2048;

named_enum! {
    /// What was wrong with a flow's bytes.
    pub enum Malformed {
        /// A record header with an unknown content type, a bad version or an impossible length.
        BadRecordHeader => "bad_record_header",
        /// An SSL 2.0 compatible ClientHello.
        Sslv2Hello => "sslv2_hello",
        /// A handshake message longer than the reader holds.
        HandshakeTooLarge => "handshake_too_large",
        /// A handshake message that tls-parser could not parse.
        BadHandshakeMessage => "bad_handshake_message",
        /// A plaintext prefix that did not turn into TLS within the prefix budget.
        PrefixTooLong => "prefix_too_long",
        /// Bytes missing from the stream (a hole the reassembler gave up on, or a cut segment).
        Gap => "gap",
        /// An empty handshake or alert record, which the protocol forbids.
        EmptyRecord => "empty_record",
        /// An alert record whose length is not 2.
        BadAlert => "bad_alert",
        /// A ClientHello whose extensions repeat or do not parse.
        BadExtensions => "bad_extensions",
        /// Bytes after a ClientHello's extensions.
        HelloTrailingData => "hello_trailing_data",
        /// A Certificate message with more certificates than the engine keeps.
        ChainTooLong => "chain_too_long",
        /// A certificate in the chain that does not parse.
        BadCertificate => "bad_certificate",
        /// A field longer than the sensor keeps: a ClientHello's server name over 255 bytes
        /// (dropped), more ALPN protocols than it keeps (cut), a certificate's names over
        /// their bounds (cut, the certificate marked `names_cut`).
        OversizedField => "oversized_field",
        /// A QUIC packet whose header does not parse (after the datagram's first packet).
        BadQuicHeader => "bad_quic_header",
        /// A decrypted QUIC Initial packet whose frames do not parse or are not allowed there.
        BadQuicFrame => "bad_quic_frame",
        /// A QUIC CRYPTO frame beyond the offsets a handshake uses.
        QuicCryptoOffset => "quic_crypto_offset",
    }
}

/// What a reader found, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum TlsEvent<'a> {
    /// A plaintext line before TLS started (without the line end), such as `CONNECT host:443
    /// HTTP/1.1` or `STARTTLS`.
    PrefixLine(&'a [u8]),
    /// A complete handshake message in clear, with its 4-byte header.
    Handshake(&'a [u8]),
    /// A handshake record after this direction's ChangeCipherSpec: encrypted, not parsed.
    EncryptedHandshake {
        len: usize,
    },
    ChangeCipherSpec,
    /// An alert record. Encrypted alerts (after ChangeCipherSpec) have no readable content.
    Alert {
        level: u8,
        description: u8,
    },
    EncryptedAlert {
        len: usize,
    },
    /// An application_data record (in TLS 1.3 also the encrypted handshake).
    ApplicationData {
        len: usize,
    },
    Heartbeat,
    /// Something was wrong; parsing of this direction may have stopped.
    Malformed(Malformed),
}

/// Limits of one reader.
#[derive(Clone, Copy, Debug)]
pub struct ReaderLimits {
    /// Largest handshake message held (a certificate chain is one message).
    pub max_handshake_len: usize,
    /// Plaintext bytes scanned for the start of TLS.
    pub max_prefix_len: usize,
}

impl Default for ReaderLimits {
    fn default() -> Self {
        Self {
            max_handshake_len: 256 * 1024,
            max_prefix_len: 64 * 1024,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Nothing seen yet.
    Start,
    /// Plaintext before TLS.
    Prefix,
    /// Inside TLS records.
    Records,
    /// Gave up; everything further is ignored.
    Stopped,
}

/// Record framing state of one direction.
#[derive(Debug)]
pub struct RecordReader {
    mode: Mode,
    /// Bytes of an incomplete record (or, in prefix mode, an incomplete line).
    buf: Vec<u8>,
    /// Bytes of an incomplete handshake message.
    handshake: Vec<u8>,
    prefix_seen: usize,
    /// ChangeCipherSpec was seen: later handshake and alert records are encrypted.
    encrypted: bool,
    /// TLS 1.3 was negotiated: ChangeCipherSpec is only a compatibility record and encrypts
    /// nothing (TLS 1.3 encrypts inside application_data records).
    tls13: bool,
    /// A TLS record header was seen: the direction started TLS.
    saw_records: bool,
    limits: ReaderLimits,
}

impl RecordReader {
    pub fn new(limits: ReaderLimits) -> Self {
        Self {
            mode: Mode::Start,
            buf: Vec::new(),
            handshake: Vec::new(),
            prefix_seen: 0,
            encrypted: false,
            tls13: false,
            saw_records: false,
            limits,
        }
    }

    /// Whether this direction has given up.
    pub fn is_stopped(&self) -> bool {
        self.mode == Mode::Stopped
    }

    /// Whether this direction started TLS: a record header was seen.
    pub fn saw_records(&self) -> bool {
        self.saw_records
    }

    /// Whether this direction has seen ChangeCipherSpec (TLS <= 1.2).
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }

    /// TLS 1.3 was negotiated (a ServerHello or HelloRetryRequest said so).
    pub fn set_tls13(&mut self) {
        self.tls13 = true;
        self.encrypted = false;
    }

    /// Bytes held.
    pub fn buffered(&self) -> usize {
        self.buf.capacity() + self.handshake.capacity()
    }

    /// Stop parsing and release the buffers.
    pub fn stop(&mut self) {
        self.mode = Mode::Stopped;
        self.buf = Vec::new();
        self.handshake = Vec::new();
    }

    /// Bytes were lost at this point of the stream. Record boundaries are gone, so stop.
    pub fn gap(&mut self, sink: &mut dyn FnMut(TlsEvent<'_>)) {
        if self.mode != Mode::Stopped {
            sink(TlsEvent::Malformed(Malformed::Gap));
            self.stop();
        }
    }

    /// Feed the next bytes of a stream of bare handshake messages: QUIC's CRYPTO stream
    /// carries them without TLS records.
    pub fn feed_handshake(&mut self, data: &[u8], sink: &mut dyn FnMut(TlsEvent<'_>)) {
        if self.mode == Mode::Stopped || data.is_empty() {
            return;
        }
        self.mode = Mode::Records;
        self.saw_records = true;
        self.handshake_bytes(data, sink);
    }

    /// Feed the next bytes of the stream.
    pub fn feed(&mut self, mut data: &[u8], sink: &mut dyn FnMut(TlsEvent<'_>)) {
        while !data.is_empty() {
            match self.mode {
                Mode::Stopped => return,
                Mode::Start => self.detect(data, sink),
                Mode::Prefix => data = self.feed_prefix(data, sink),
                Mode::Records => data = self.feed_records(data, sink),
            }
        }
    }

    /// Decide on the first bytes whether the stream opens with TLS, SSLv2 or plaintext.
    fn detect(&mut self, data: &[u8], sink: &mut dyn FnMut(TlsEvent<'_>)) {
        let first = data[0];
        if first & 0x80 != 0 && data.get(2) == Some(&1) {
            sink(TlsEvent::Malformed(Malformed::Sslv2Hello));
            self.stop();
        } else if (content_type::CHANGE_CIPHER_SPEC..=content_type::HEARTBEAT).contains(&first) {
            self.mode = Mode::Records;
            self.saw_records = true;
        } else {
            self.mode = Mode::Prefix;
        }
    }

    /// Consume plaintext lines until the bytes after a line end start a TLS record.
    fn feed_prefix<'d>(&mut self, data: &'d [u8], sink: &mut dyn FnMut(TlsEvent<'_>)) -> &'d [u8] {
        if self.buf.is_empty() && self.prefix_seen > 0 && starts_record(data) {
            self.mode = Mode::Records;
            self.saw_records = true;
            return data;
        }
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (line, after) = rest.split_at(nl + 1);
            self.prefix_seen += line.len();
            if self.buf.is_empty() {
                sink(TlsEvent::PrefixLine(trim_line_end(line)));
            } else {
                self.buf.extend_from_slice(line);
                let joined = std::mem::take(&mut self.buf);
                sink(TlsEvent::PrefixLine(trim_line_end(&joined)));
            }
            rest = after;
            if self.prefix_seen > self.limits.max_prefix_len {
                sink(TlsEvent::Malformed(Malformed::PrefixTooLong));
                self.stop();
                return &[];
            }
            if starts_record(rest) {
                self.mode = Mode::Records;
                self.saw_records = true;
                return rest;
            }
        }
        self.prefix_seen += rest.len();
        if self.prefix_seen > self.limits.max_prefix_len {
            sink(TlsEvent::Malformed(Malformed::PrefixTooLong));
            self.stop();
            return &[];
        }
        self.buf.extend_from_slice(rest);
        &[]
    }

    /// Split records out of `data`, holding an incomplete one back.
    fn feed_records<'d>(&mut self, data: &'d [u8], sink: &mut dyn FnMut(TlsEvent<'_>)) -> &'d [u8] {
        if !self.buf.is_empty() {
            // Complete the held record first.
            let need = if self.buf.len() < 5 {
                5 - self.buf.len()
            } else {
                record_len(&self.buf)
                    .saturating_add(5)
                    .saturating_sub(self.buf.len())
            };
            let take = need.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            if self.buf.len() >= 5 && !header_ok(&self.buf) {
                sink(TlsEvent::Malformed(Malformed::BadRecordHeader));
                self.stop();
                return &[];
            }
            if self.buf.len() >= 5 && self.buf.len() == 5 + record_len(&self.buf) {
                let record = std::mem::take(&mut self.buf);
                self.record(record[0], &record[5..], sink);
                self.buf = record;
                self.buf.clear();
                if self.buf.capacity() > 4096 {
                    self.buf = Vec::new();
                }
            }
            return &data[take..];
        }
        let mut rest = data;
        while rest.len() >= 5 {
            if !header_ok(rest) {
                sink(TlsEvent::Malformed(Malformed::BadRecordHeader));
                self.stop();
                return &[];
            }
            let total = 5 + record_len(rest);
            if rest.len() < total {
                break;
            }
            self.record(rest[0], &rest[5..total], sink);
            if self.mode == Mode::Stopped {
                return &[];
            }
            rest = &rest[total..];
        }
        self.buf.extend_from_slice(rest);
        &[]
    }

    /// Handle one complete record.
    fn record(&mut self, ty: u8, body: &[u8], sink: &mut dyn FnMut(TlsEvent<'_>)) {
        match ty {
            content_type::HANDSHAKE if self.encrypted => {
                sink(TlsEvent::EncryptedHandshake { len: body.len() })
            }
            content_type::HANDSHAKE => {
                if body.is_empty() {
                    sink(TlsEvent::Malformed(Malformed::EmptyRecord));
                    return;
                }
                self.handshake_bytes(body, sink);
            }
            content_type::CHANGE_CIPHER_SPEC => {
                self.encrypted = !self.tls13;
                sink(TlsEvent::ChangeCipherSpec);
            }
            content_type::ALERT if self.encrypted => {
                sink(TlsEvent::EncryptedAlert { len: body.len() })
            }
            content_type::ALERT => {
                if body.len() == 2 {
                    sink(TlsEvent::Alert {
                        level: body[0],
                        description: body[1],
                    });
                } else if body.is_empty() {
                    sink(TlsEvent::Malformed(Malformed::EmptyRecord));
                } else {
                    sink(TlsEvent::Malformed(Malformed::BadAlert));
                }
            }
            content_type::APPLICATION_DATA => sink(TlsEvent::ApplicationData { len: body.len() }),
            _ => sink(TlsEvent::Heartbeat),
        }
    }

    /// Reassemble handshake messages from handshake record bodies.
    fn handshake_bytes(&mut self, body: &[u8], sink: &mut dyn FnMut(TlsEvent<'_>)) {
        let mut rest = body;
        if self.handshake.is_empty() {
            // Fast path: whole messages straight from the record.
            while rest.len() >= 4 {
                let len = u24(&rest[1..4]);
                if len > self.limits.max_handshake_len {
                    return self.too_large(sink);
                }
                if rest.len() < 4 + len {
                    break;
                }
                sink(TlsEvent::Handshake(&rest[..4 + len]));
                rest = &rest[4 + len..];
            }
            self.handshake.extend_from_slice(rest);
            return;
        }
        self.handshake.extend_from_slice(rest);
        let mut start = 0;
        while self.handshake.len() - start >= 4 {
            let len = u24(&self.handshake[start + 1..start + 4]);
            if len > self.limits.max_handshake_len {
                return self.too_large(sink);
            }
            if self.handshake.len() - start < 4 + len {
                break;
            }
            sink(TlsEvent::Handshake(&self.handshake[start..start + 4 + len]));
            start += 4 + len;
        }
        self.handshake.drain(..start);
        if self.handshake.is_empty() && self.handshake.capacity() > 64 * 1024 {
            self.handshake = Vec::new();
        }
    }

    fn too_large(&mut self, sink: &mut dyn FnMut(TlsEvent<'_>)) {
        sink(TlsEvent::Malformed(Malformed::HandshakeTooLarge));
        self.stop();
    }
}

/// Whether plaintext gives way to a TLS handshake record here.
fn starts_record(data: &[u8]) -> bool {
    data.first() == Some(&content_type::HANDSHAKE) && data.get(1).is_none_or(|&b| b == 3)
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn u24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

fn record_len(header: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([header[3], header[4]]))
}

/// A sane record header: known content type, SSL 3.0 to TLS 1.3 version, bounded length.
fn header_ok(h: &[u8]) -> bool {
    (content_type::CHANGE_CIPHER_SPEC..=content_type::HEARTBEAT).contains(&h[0])
        && h[1] == 3
        && h[2] <= 4
        && record_len(h) <= MAX_RECORD_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<String> {
        let mut r = RecordReader::new(ReaderLimits::default());
        let mut out = Vec::new();
        for c in chunks {
            r.feed(c, &mut |e| out.push(format!("{e:?}")));
        }
        out
    }

    fn record(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![ty, 3, 3];
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn splits_records_and_messages_across_any_boundary() {
        let msg1 = [1u8, 0, 0, 3, 0xaa, 0xbb, 0xcc];
        let msg2 = [2u8, 0, 0, 1, 0xdd];
        let mut body = msg1.to_vec();
        body.extend_from_slice(&msg2);
        // Two handshake records, the first message split across them.
        let mut stream = record(22, &body[..5]);
        stream.extend(record(22, &body[5..]));
        stream.extend(record(20, &[1]));
        stream.extend(record(22, &[9, 9, 9]));
        stream.extend(record(21, &[2, 48]));
        for split in 0..stream.len() {
            let got = events(&[&stream[..split], &stream[split..]]);
            assert_eq!(
                got,
                vec![
                    format!("{:?}", TlsEvent::Handshake(&msg1)),
                    format!("{:?}", TlsEvent::Handshake(&msg2)),
                    "ChangeCipherSpec".to_string(),
                    "EncryptedHandshake { len: 3 }".to_string(),
                    "EncryptedAlert { len: 2 }".to_string(),
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn finds_tls_after_a_connect_exchange() {
        let mut stream =
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec();
        stream.extend(record(22, &[1, 0, 0, 1, 7]));
        for split in 0..stream.len() {
            let got = events(&[&stream[..split], &stream[split..]]);
            let connect = TlsEvent::PrefixLine(b"CONNECT example.com:443 HTTP/1.1");
            assert_eq!(got[0], format!("{connect:?}"), "split at {split}");
            assert_eq!(got.len(), 4, "split at {split}: {got:?}");
            assert_eq!(got[2], format!("{:?}", TlsEvent::PrefixLine(b"")));
            assert_eq!(
                got[3],
                format!("{:?}", TlsEvent::Handshake(&[1, 0, 0, 1, 7]))
            );
        }
    }

    #[test]
    fn bad_input_stops_cleanly() {
        assert_eq!(
            events(&[&[0x80, 0x2e, 0x01, 0x03, 0x01]]),
            vec!["Malformed(Sslv2Hello)"]
        );
        assert_eq!(
            events(&[&[22, 3, 3, 0xff, 0xff]]),
            vec!["Malformed(BadRecordHeader)"]
        );
        // A handshake message claiming 2^24 - 1 bytes.
        assert_eq!(
            events(&[&record(22, &[11, 0xff, 0xff, 0xff])]),
            vec!["Malformed(HandshakeTooLarge)"]
        );
        // Thousands of one-byte handshake records still make one message.
        let mut stream = Vec::new();
        for b in [11u8, 0, 0x10, 0] {
            stream.extend(record(22, &[b]));
        }
        for _ in 0..0x1000 {
            stream.extend(record(22, &[0x42]));
        }
        let got = events(&[&stream]);
        assert_eq!(got.len(), 1);
        assert!(got[0].starts_with("Handshake("));
        assert_eq!(events(&[&record(22, &[])]), vec!["Malformed(EmptyRecord)"]);
    }
}
