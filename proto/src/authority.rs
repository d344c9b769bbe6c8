//! The `:authority` that gRPC clients send over a Unix socket, made acceptable to the server.
//!
//! Over a Unix socket, grpcio (Python, C++), grpc-java and others send the socket's path as the
//! HTTP/2 `:authority` (`/run/sensor/sensord.sock`, or `%2Frun%2F...`), some send it empty.
//! The server's HTTP/2 stack (h2, under tonic) resets every such stream with PROTOCOL_ERROR
//! because the value is not a URI authority; the client sees `INTERNAL: Stream removed`.
//!
//! [`Rewriter`] sits on the bytes a client sends, before h2 reads them. It passes every frame
//! through, except header blocks (HEADERS and CONTINUATION): those it decodes with the client's
//! HPACK state, replaces an `:authority` that is not a URI authority by `localhost` (what
//! grpc-go and Kubernetes use for a Unix socket), and writes the block again as literals that
//! never touch the server's dynamic table, so both HPACK tables stay consistent. Nothing else
//! changes. A stream that does not start with the HTTP/2 preface passes untouched.
//!
//! It is bounded: a header frame's payload at most [`MAX_FRAME`] bytes (the server's default
//! SETTINGS_MAX_FRAME_SIZE), one header block at most [`MAX_BLOCK`] bytes encoded and
//! [`MAX_DECODED`] decoded. Past a bound, or on a malformed block, it returns an error and the
//! connection ends: the server's own decoder would have refused the same bytes.
#![warn(clippy::all)]

use std::borrow::Cow;

/// The client connection preface (RFC 9113, section 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The largest header frame payload read: the server never raises SETTINGS_MAX_FRAME_SIZE.
pub const MAX_FRAME: usize = 16_384;
/// The most encoded bytes of one header block (a HEADERS frame and its CONTINUATIONs).
pub const MAX_BLOCK: usize = 64 * 1024;
/// The most decoded bytes (names and values) of one header block.
pub const MAX_DECODED: usize = 256 * 1024;
/// What replaces an `:authority` that is not a URI authority.
pub const REPLACEMENT: &[u8] = b"localhost";
/// The HPACK dynamic table size the server allows (its SETTINGS_HEADER_TABLE_SIZE, the
/// protocol's default: tonic does not change it).
const TABLE_SIZE: usize = 4096;

const FRAME_HEAD: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// Why a client's bytes could not be rewritten; the connection ends.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RewriteError {
    #[error("a header frame of {0} bytes, over the {MAX_FRAME} allowed")]
    FrameTooLarge(usize),
    #[error("a header block over {MAX_BLOCK} bytes encoded or {MAX_DECODED} decoded")]
    BlockTooLarge,
    #[error("a frame of type {0:#x} inside a header block")]
    InterruptedBlock(u8),
    #[error("a CONTINUATION frame without a header block before it")]
    StrayContinuation,
    #[error("a header frame whose padding or priority is longer than the frame")]
    Malformed,
    #[error("an HPACK block that does not decode: {0}")]
    Hpack(String),
}

/// Where in the client's byte stream the rewriter is.
#[derive(Debug)]
enum State {
    /// Matching the connection preface; the number of bytes matched.
    Preface(usize),
    /// Not HTTP/2 with prior knowledge: everything passes.
    Opaque,
    /// Reading a frame header; the bytes so far are in `head`.
    Head,
    /// Passing a frame's payload; the bytes left.
    Pass(usize),
    /// Reading a header frame's payload into `payload`.
    HeaderPayload {
        len: usize,
        ty: u8,
        flags: u8,
        stream: u32,
    },
}

/// A HEADERS frame whose block goes on in CONTINUATION frames.
#[derive(Debug)]
struct Open {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
}

/// Rewrites the `:authority` of the header blocks in the bytes a client sends; see the module.
pub struct Rewriter {
    state: State,
    head: [u8; FRAME_HEAD],
    head_len: usize,
    payload: Vec<u8>,
    block: Vec<u8>,
    open: Option<Open>,
    decoder: loona_hpack::Decoder<'static>,
    rewritten: u64,
}

impl Default for Rewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Rewriter {
    pub fn new() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        Self {
            state: State::Preface(0),
            head: [0; FRAME_HEAD],
            head_len: 0,
            payload: Vec::new(),
            block: Vec::new(),
            open: None,
            decoder,
            rewritten: 0,
        }
    }

    /// How many `:authority` values were replaced so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Consume `input` (any split of the stream), appending what the server should read to
    /// `out`. After an error, the connection must end.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        while !input.is_empty() {
            match self.state {
                State::Preface(seen) => {
                    let want = &PREFACE[seen..];
                    let n = want.len().min(input.len());
                    if input[..n] == want[..n] {
                        input = &input[n..];
                        self.state = if seen + n == PREFACE.len() {
                            out.extend_from_slice(PREFACE);
                            State::Head
                        } else {
                            State::Preface(seen + n)
                        };
                    } else {
                        out.extend_from_slice(&PREFACE[..seen]);
                        self.state = State::Opaque;
                    }
                }
                State::Opaque => {
                    out.extend_from_slice(input);
                    input = &[];
                }
                State::Head => {
                    let n = (FRAME_HEAD - self.head_len).min(input.len());
                    self.head[self.head_len..self.head_len + n].copy_from_slice(&input[..n]);
                    self.head_len += n;
                    input = &input[n..];
                    if self.head_len == FRAME_HEAD {
                        self.head_len = 0;
                        self.on_head(out)?;
                    }
                }
                State::Pass(left) => {
                    let n = left.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = if n == left {
                        State::Head
                    } else {
                        State::Pass(left - n)
                    };
                }
                State::HeaderPayload {
                    len,
                    ty,
                    flags,
                    stream,
                } => {
                    let n = (len - self.payload.len()).min(input.len());
                    self.payload.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if self.payload.len() == len {
                        self.state = State::Head;
                        self.on_header_frame(ty, flags, stream, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn on_head(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let h = self.head;
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let (ty, flags) = (h[3], h[4]);
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        if self.open.is_some() && ty != CONTINUATION {
            return Err(RewriteError::InterruptedBlock(ty));
        }
        if ty == HEADERS || ty == CONTINUATION {
            if len > MAX_FRAME {
                return Err(RewriteError::FrameTooLarge(len));
            }
            self.payload.clear();
            self.state = State::HeaderPayload {
                len,
                ty,
                flags,
                stream,
            };
            if len == 0 {
                self.state = State::Head;
                self.on_header_frame(ty, flags, stream, out)?;
            }
        } else {
            out.extend_from_slice(&h);
            self.state = if len == 0 {
                State::Head
            } else {
                State::Pass(len)
            };
        }
        Ok(())
    }

    fn on_header_frame(
        &mut self,
        ty: u8,
        flags: u8,
        stream: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let payload = std::mem::take(&mut self.payload);
        if ty == HEADERS {
            let mut at = 0;
            let mut pad = 0;
            if flags & PADDED != 0 {
                pad = usize::from(*payload.first().ok_or(RewriteError::Malformed)?);
                at = 1;
            }
            let mut priority = None;
            if flags & PRIORITY != 0 {
                let bytes = payload.get(at..at + 5).ok_or(RewriteError::Malformed)?;
                priority = Some(<[u8; 5]>::try_from(bytes).map_err(|_| RewriteError::Malformed)?);
                at += 5;
            }
            let end = payload
                .len()
                .checked_sub(pad)
                .filter(|end| *end >= at)
                .ok_or(RewriteError::Malformed)?;
            self.block.clear();
            self.block.extend_from_slice(&payload[at..end]);
            self.open = Some(Open {
                stream,
                end_stream: flags & END_STREAM != 0,
                priority,
            });
        } else {
            match &self.open {
                Some(open) if open.stream == stream => {}
                _ => return Err(RewriteError::StrayContinuation),
            }
            if self.block.len() + payload.len() > MAX_BLOCK {
                return Err(RewriteError::BlockTooLarge);
            }
            self.block.extend_from_slice(&payload);
        }
        self.payload = payload;
        self.payload.clear();
        if flags & END_HEADERS != 0 {
            let open = self.open.take().ok_or(RewriteError::StrayContinuation)?;
            self.emit(&open, out)?;
        }
        Ok(())
    }

    /// Decode the complete block, fix its authority, and write it as HEADERS (+ CONTINUATION).
    fn emit(&mut self, open: &Open, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut decoded = 0usize;
        let mut over = false;
        let block = std::mem::take(&mut self.block);
        let result = self.decoder.decode_with_cb(&block, |name, value| {
            decoded += name.len() + value.len();
            if decoded > MAX_DECODED {
                over = true;
                return;
            }
            fields.push((name.into_owned(), value.into_owned()));
        });
        self.block = block;
        self.block.clear();
        result.map_err(|e| RewriteError::Hpack(format!("{e:?}")))?;
        if over {
            return Err(RewriteError::BlockTooLarge);
        }
        let mut encoded = Vec::with_capacity(decoded + fields.len() * 6);
        for (name, value) in &fields {
            let value: Cow<[u8]> = if name == b":authority" && !is_authority(value) {
                self.rewritten += 1;
                Cow::Borrowed(REPLACEMENT)
            } else {
                Cow::Borrowed(value)
            };
            literal(name, &value, &mut encoded);
        }
        write_frames(open, &encoded, out);
        Ok(())
    }
}

/// Whether h2 takes `value` as an `:authority`.
fn is_authority(value: &[u8]) -> bool {
    !value.is_empty() && http::uri::Authority::try_from(value).is_ok()
}

/// A literal header field without indexing, new name (RFC 7541, section 6.2.2), no Huffman.
fn literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    for s in [name, value] {
        // Writing into a Vec cannot fail.
        let _ = loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, out);
        out.extend_from_slice(s);
    }
}

/// A header block as a HEADERS frame and as many CONTINUATION frames as [`MAX_FRAME`] needs.
fn write_frames(open: &Open, block: &[u8], out: &mut Vec<u8>) {
    let prio = open.priority.as_ref().map_or(&[][..], |p| &p[..]);
    let first = block.len().min(MAX_FRAME - prio.len());
    let (head, mut rest) = block.split_at(first);
    let mut flags = 0;
    if open.end_stream {
        flags |= END_STREAM;
    }
    if open.priority.is_some() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    frame_head(prio.len() + head.len(), HEADERS, flags, open.stream, out);
    out.extend_from_slice(prio);
    out.extend_from_slice(head);
    while !rest.is_empty() {
        let n = rest.len().min(MAX_FRAME);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let flags = if rest.is_empty() { END_HEADERS } else { 0 };
        frame_head(n, CONTINUATION, flags, open.stream, out);
        out.extend_from_slice(chunk);
    }
}

fn frame_head(len: usize, ty: u8, flags: u8, stream: u32, out: &mut Vec<u8>) {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(ty);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header block the way a client encoder writes it: literals with incremental indexing,
    /// so that later blocks can refer to them by index.
    fn indexed_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
        out.push(0x40);
        for s in [name, value] {
            let _ = loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, out);
            out.extend_from_slice(s);
        }
    }

    fn request_block(authority: &[u8]) -> Vec<u8> {
        let mut b = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
        indexed_literal(b":path", b"/sensor.v1.Sensor/GetStatus", &mut b);
        indexed_literal(b":authority", authority, &mut b);
        indexed_literal(b"te", b"trailers", &mut b);
        b
    }

    fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        frame_head(payload.len(), ty, flags, stream, &mut f);
        f.extend_from_slice(payload);
        f
    }

    /// The frames in `bytes` after the preface: (type, flags, stream, payload).
    fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert!(bytes.starts_with(PREFACE));
        let mut rest = &bytes[PREFACE.len()..];
        let mut all = Vec::new();
        while !rest.is_empty() {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
            all.push((rest[3], rest[4], stream, rest[9..9 + len].to_vec()));
            rest = &rest[9 + len..];
        }
        all
    }

    /// Decode the rewritten header blocks as the server would, with a fresh decoder.
    fn server_view(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut dec = loona_hpack::Decoder::new();
        let mut blocks = Vec::new();
        let mut block = Vec::new();
        for (ty, flags, _, payload) in frames(bytes) {
            match ty {
                HEADERS => {
                    let at = if flags & PRIORITY != 0 { 5 } else { 0 };
                    block = payload[at..].to_vec();
                }
                CONTINUATION => block.extend_from_slice(&payload),
                _ => continue,
            }
            if flags & END_HEADERS != 0 {
                blocks.push(dec.decode(&block).unwrap());
            }
        }
        blocks
    }

    fn authority(fields: &[(Vec<u8>, Vec<u8>)]) -> &[u8] {
        &fields.iter().find(|(n, _)| n == b":authority").unwrap().1
    }

    fn conversation(authority: &[u8]) -> Vec<u8> {
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        input.extend(frame(HEADERS, END_HEADERS, 1, &request_block(authority)));
        input.extend(frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0])); // DATA: an empty message
        // The second request refers to the first's fields through the dynamic table:
        // 62 = te, 63 = :authority, 64 = :path.
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            3,
            &[0x83, 0x86, 0xc0, 0xbf, 0xbe],
        ));
        input
    }

    #[test]
    fn a_socket_path_becomes_localhost_also_through_the_dynamic_table() {
        let input = conversation(b"/run/sensor/sensord.sock");
        let mut r = Rewriter::new();
        let mut out = Vec::new();
        r.feed(&input, &mut out).unwrap();
        let blocks = server_view(&out);
        assert_eq!(blocks.len(), 2);
        for fields in &blocks {
            assert_eq!(authority(fields), b"localhost");
            assert!(
                fields
                    .iter()
                    .any(|(n, v)| n == b":path" && v == b"/sensor.v1.Sensor/GetStatus")
            );
        }
        assert_eq!(r.rewritten(), 2);
        // The other frames pass unchanged.
        let kinds: Vec<(u8, u32)> = frames(&out).iter().map(|f| (f.0, f.2)).collect();
        assert_eq!(kinds, [(0x4, 0), (HEADERS, 1), (0x0, 1), (HEADERS, 3)]);
        assert_eq!(frames(&out)[2].3, [0, 0, 0, 0, 0]);
    }

    #[test]
    fn valid_authorities_are_kept_and_empty_or_encoded_paths_replaced() {
        for (given, kept) in [
            (&b"localhost"[..], &b"localhost"[..]),
            (b"localhost:50051", b"localhost:50051"),
            (b"127.0.0.1:9000", b"127.0.0.1:9000"),
            (b"", b"localhost"),
            (b"/tmp/a b.sock", b"localhost"),
            (b"unix:/tmp/x.sock", b"localhost"),
        ] {
            let mut out = Vec::new();
            Rewriter::new()
                .feed(&conversation(given), &mut out)
                .unwrap();
            for fields in server_view(&out) {
                assert_eq!(
                    authority(&fields),
                    kept,
                    "{:?}",
                    String::from_utf8_lossy(given)
                );
            }
        }
    }

    #[test]
    fn any_split_of_the_input_gives_the_same_output() {
        let input = conversation(b"/run/sensor/sensord.sock");
        let mut whole = Vec::new();
        Rewriter::new().feed(&input, &mut whole).unwrap();
        for step in [1, 2, 7, 9, 10, 33] {
            let mut r = Rewriter::new();
            let mut out = Vec::new();
            for chunk in input.chunks(step) {
                r.feed(chunk, &mut out).unwrap();
            }
            assert_eq!(out, whole, "chunks of {step}");
        }
    }

    #[test]
    fn padding_priority_and_continuation_are_understood() {
        let block = request_block(b"/x.sock");
        let (a, b) = block.split_at(10);
        let mut payload = vec![3]; // pad length
        payload.extend([0x80, 0, 0, 0, 15]); // exclusive dependency on stream 0, weight 16
        payload.extend_from_slice(a);
        payload.extend([0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &payload));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        let mut out = Vec::new();
        Rewriter::new().feed(&input, &mut out).unwrap();
        let f = frames(&out);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].1, END_STREAM | PRIORITY | END_HEADERS);
        assert_eq!(&f[0].3[..5], &[0x80, 0, 0, 0, 15]);
        assert_eq!(authority(&server_view(&out)[0]), b"localhost");
    }

    #[test]
    fn a_long_block_is_cut_into_continuations() {
        let mut block = request_block(b"/x.sock");
        let big = vec![b'v'; 40_000];
        indexed_literal(b"x-big", &big, &mut block);
        // Sent as three frames, as the client may.
        let mut input = PREFACE.to_vec();
        let parts: Vec<&[u8]> = block.chunks(16_000).collect();
        input.extend(frame(HEADERS, 0, 1, parts[0]));
        input.extend(frame(CONTINUATION, 0, 1, parts[1]));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, parts[2]));
        let mut out = Vec::new();
        Rewriter::new().feed(&input, &mut out).unwrap();
        let f = frames(&out);
        assert!(f.len() >= 3 && f.iter().all(|x| x.3.len() <= MAX_FRAME));
        assert_eq!(f.last().unwrap().1, END_HEADERS);
        let fields = &server_view(&out)[0];
        assert!(fields.iter().any(|(n, v)| n == b"x-big" && *v == big));
    }

    #[test]
    fn not_http2_passes_untouched() {
        let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut out = Vec::new();
        let mut r = Rewriter::new();
        for c in input.chunks(3) {
            r.feed(c, &mut out).unwrap();
        }
        assert_eq!(out, input);
        // A preface cut short, then something else.
        let mut out = Vec::new();
        Rewriter::new().feed(b"PRI * HTTP/1.1", &mut out).unwrap();
        assert_eq!(out, b"PRI * HTTP/1.1");
    }

    #[test]
    fn bounds_and_malformed_blocks_are_errors() {
        let with = |frames_: &[Vec<u8>]| {
            let mut input = PREFACE.to_vec();
            for f in frames_ {
                input.extend(f);
            }
            Rewriter::new().feed(&input, &mut Vec::new())
        };
        let mut oversize = Vec::new();
        frame_head(MAX_FRAME + 1, HEADERS, 0, 1, &mut oversize);
        assert_eq!(
            with(&[oversize]),
            Err(RewriteError::FrameTooLarge(MAX_FRAME + 1))
        );
        let piece = vec![0u8; MAX_FRAME];
        let mut many = vec![frame(HEADERS, 0, 1, &piece)];
        for _ in 0..4 {
            many.push(frame(CONTINUATION, 0, 1, &piece));
        }
        assert_eq!(with(&many), Err(RewriteError::BlockTooLarge));
        assert_eq!(
            with(&[frame(HEADERS, 0, 1, &[0x82]), frame(0x0, 0, 1, &[])]),
            Err(RewriteError::InterruptedBlock(0))
        );
        assert_eq!(
            with(&[frame(CONTINUATION, END_HEADERS, 1, &[0x82])]),
            Err(RewriteError::StrayContinuation)
        );
        assert_eq!(
            with(&[frame(HEADERS, PADDED | END_HEADERS, 1, &[9, 0x82])]),
            Err(RewriteError::Malformed)
        );
        assert!(matches!(
            with(&[frame(
                HEADERS,
                END_HEADERS,
                1,
                &[0xff, 0xff, 0xff, 0xff, 0x7f]
            )]),
            Err(RewriteError::Hpack(_))
        ));
        // A small block that expands past the decoded bound through the dynamic table.
        let mut block = Vec::new();
        indexed_literal(b"x", &vec![b'a'; 4000], &mut block);
        block.extend(std::iter::repeat_n(0xbe, 70));
        assert_eq!(
            with(&[frame(HEADERS, END_HEADERS, 1, &block)]),
            Err(RewriteError::BlockTooLarge)
        );
    }
}
