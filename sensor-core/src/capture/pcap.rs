//! Capture files: pcap and pcapng, through pcap-parser, as a stream of [`Packet`]s (TCP segments
//! and UDP datagrams).
//!
//! The reader streams from any `Read` (a file, or bytes in memory for tests and fuzzing): it
//! holds one buffer of bounded size whatever the file's size. A capture already whole in memory
//! (a file the caller mapped) is read in place instead, each block parsed where it lies: the
//! same blocks, the same limits, without copying every byte into the buffer first.

use std::io::Read;

use pcap_parser::{
    Block, LegacyPcapBlock, PcapBlockOwned, PcapError, PcapHeader, create_reader,
    nom::{self, IResult, Needed},
    parse_pcap_frame, parse_pcap_frame_be, parse_pcap_frame_modified, parse_pcap_header,
    pcapng::{build_ts_resolution, parse_block_be, parse_block_le, parse_sectionheaderblock},
    traits::PcapReaderIterator,
};
use serde::Serialize;

use super::{
    Packet,
    packet::{self, Skip},
};

/// Interfaces one pcapng section may describe, at most.
const MAX_INTERFACES: usize = 256;

/// Buffer size of the streaming reader; a block larger than this is an error.
const BUFFER: usize = 1 << 20;

/// Why a capture could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("not a pcap or pcapng capture ({0})")]
    NotACapture(String),
    #[error("the capture is corrupt after {packets} packets: {detail}")]
    Corrupt { packets: u64, detail: String },
    #[error("reading the capture: {0}")]
    Io(#[from] std::io::Error),
}

/// Counters of what the reader saw and skipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CaptureStats {
    pub packets: u64,
    pub tcp_segments: u64,
    pub udp_datagrams: u64,
    pub not_ip: u64,
    pub not_tcp_or_udp: u64,
    pub malformed: u64,
    pub unsupported_link_type: u64,
    /// Bytes read from the file so far.
    pub bytes: u64,
}

/// Per-interface facts of a pcapng section, or the one "interface" of a pcap file.
#[derive(Clone, Copy, Debug)]
struct Interface {
    link: i32,
    /// Timestamp units per second.
    resolution: u64,
    offset: i64,
}

/// Streams a capture file's TCP segments and UDP datagrams.
pub struct CaptureReader<'r> {
    source: Source<'r>,
    state: State,
    done: bool,
}

/// Where the blocks come from.
enum Source<'r> {
    /// Any `Read`, through pcap-parser's streaming readers and a buffer of [`BUFFER`] bytes.
    Stream(Box<dyn PcapReaderIterator + Send + 'r>),
    /// A capture whole in memory.
    InPlace(InPlace<'r>),
}

/// A capture whole in memory, parsed where it lies with the parsers the streaming readers use.
struct InPlace<'r> {
    rest: &'r [u8],
    format: Format,
}

enum Format {
    /// A legacy pcap: its header until handed on, and the frame parser the header calls for.
    Legacy {
        header: Option<PcapHeader>,
        parse: ParseFrame,
    },
    /// pcapng: the byte order of the current section.
    Ng { big_endian: bool },
}

type ParseFrame =
    for<'a> fn(&'a [u8]) -> IResult<&'a [u8], LegacyPcapBlock<'a>, PcapError<&'a [u8]>>;

/// What an in-place read found next.
enum Next<'r> {
    Block(usize, PcapBlockOwned<'r>),
    End,
    /// Bytes at the end that never make a whole block: a truncated last packet.
    Truncated,
    Error(PcapError<&'r [u8]>),
}

impl<'r> InPlace<'r> {
    fn new(data: &'r [u8]) -> Result<Self, CaptureError> {
        if data.is_empty() {
            return Err(CaptureError::NotACapture(describe(&PcapError::Eof)));
        }
        if parse_sectionheaderblock(data).is_ok() {
            return Ok(Self {
                rest: data,
                format: Format::Ng { big_endian: false },
            });
        }
        let (rest, header) = parse_pcap_header(data).map_err(|e| {
            CaptureError::NotACapture(describe(&match e {
                nom::Err::Incomplete(Needed::Size(n)) => PcapError::Incomplete(n.get()),
                nom::Err::Incomplete(Needed::Unknown) => PcapError::Incomplete(0),
                _ => PcapError::HeaderNotRecognized,
            }))
        })?;
        let parse: ParseFrame = match (header.is_modified_format(), header.is_bigendian()) {
            (true, _) => parse_pcap_frame_modified,
            (false, true) => parse_pcap_frame_be,
            (false, false) => parse_pcap_frame,
        };
        Ok(Self {
            rest,
            format: Format::Legacy {
                header: Some(header),
                parse,
            },
        })
    }

    fn next(&mut self) -> Next<'r> {
        if let Format::Legacy { header, .. } = &mut self.format
            && let Some(header) = header.take()
        {
            return Next::Block(header.size(), PcapBlockOwned::LegacyHeader(header));
        }
        if self.rest.is_empty() {
            return Next::End;
        }
        let rest = self.rest;
        let parsed = match &mut self.format {
            Format::Legacy { parse, .. } => parse(rest).map(|(rem, b)| (rem, b.into())),
            Format::Ng { big_endian } => {
                let parse = if *big_endian {
                    parse_block_be
                } else {
                    parse_block_le
                };
                parse(rest).map(|(rem, b)| {
                    if let Block::SectionHeader(shb) = &b {
                        *big_endian = shb.big_endian();
                    }
                    (rem, b.into())
                })
            }
        };
        match parsed {
            Ok((rem, block)) => {
                self.rest = rem;
                Next::Block(rest.len() - rem.len(), block)
            }
            Err(nom::Err::Incomplete(needed)) => {
                let needed = match needed {
                    Needed::Size(n) => n.get(),
                    Needed::Unknown => 0,
                };
                self.rest = &[];
                // As the streaming reader: a block that would not fit its buffer is an error,
                // a smaller one cut by the end of the file a truncated last packet.
                if rest.len().saturating_add(needed) >= BUFFER {
                    Next::Error(PcapError::BufferTooSmall)
                } else {
                    Next::Truncated
                }
            }
            Err(nom::Err::Error(e) | nom::Err::Failure(e)) => {
                self.rest = &[];
                Next::Error(e)
            }
        }
    }
}

/// What the reader knows of the file so far.
#[derive(Default)]
struct State {
    /// pcap: index 0. pcapng: interfaces of the current section, by id.
    interfaces: Vec<Interface>,
    stats: CaptureStats,
}

impl<'r> CaptureReader<'r> {
    /// Start reading; fails at once if the input is neither pcap nor pcapng.
    pub fn new(input: impl Read + Send + 'r) -> Result<Self, CaptureError> {
        let inner = create_reader(BUFFER, input).map_err(|e| match e {
            PcapError::ReadError => CaptureError::Io(std::io::Error::other("read error")),
            other => CaptureError::NotACapture(describe(&other)),
        })?;
        Ok(Self {
            source: Source::Stream(inner),
            state: State::default(),
            done: false,
        })
    }

    /// Start reading a capture that is whole in memory (a mapped file), in place. It reads as
    /// [`CaptureReader::new`] reads the same bytes.
    pub fn in_place(data: &'r [u8]) -> Result<Self, CaptureError> {
        Ok(Self {
            source: Source::InPlace(InPlace::new(data)?),
            state: State::default(),
            done: false,
        })
    }

    pub fn stats(&self) -> CaptureStats {
        self.state.stats
    }

    /// Read up to `max_packets` packets, handing each TCP segment and UDP datagram to `sink`.
    /// Returns false once the capture is over.
    pub fn read(
        &mut self,
        max_packets: usize,
        sink: &mut dyn FnMut(&Packet<'_>),
    ) -> Result<bool, CaptureError> {
        let mut handled = 0;
        while !self.done && handled < max_packets {
            let inner = match &mut self.source {
                Source::Stream(inner) => inner,
                Source::InPlace(in_place) => {
                    match in_place.next() {
                        Next::Block(size, block) => {
                            handled += 1;
                            self.state.block(block, sink);
                            self.state.stats.bytes += size as u64;
                        }
                        Next::End => self.done = true,
                        Next::Truncated => {
                            self.state.stats.malformed += 1;
                            self.done = true;
                        }
                        Next::Error(e) => return Err(corrupt(&self.state, &e)),
                    }
                    continue;
                }
            };
            match inner.next() {
                Ok((offset, block)) => {
                    handled += 1;
                    self.state.block(block, sink);
                    self.state.stats.bytes += offset as u64;
                    inner.consume(offset);
                }
                Err(PcapError::Eof) => self.done = true,
                Err(PcapError::Incomplete(_)) => {
                    if let Err(e) = inner.refill() {
                        return Err(corrupt(&self.state, &e));
                    }
                    if inner.reader_exhausted() && inner.data().is_empty() {
                        self.done = true;
                    } else if inner.reader_exhausted() {
                        // Data left that never makes a whole block: a truncated last packet.
                        self.state.stats.malformed += 1;
                        self.done = true;
                    }
                }
                Err(e) => return Err(corrupt(&self.state, &e)),
            }
        }
        Ok(!self.done)
    }
}

fn corrupt(state: &State, e: &PcapError<&[u8]>) -> CaptureError {
    CaptureError::Corrupt {
        packets: state.stats.packets,
        detail: describe(e),
    }
}

impl State {
    fn block(&mut self, block: PcapBlockOwned<'_>, sink: &mut dyn FnMut(&Packet<'_>)) {
        match block {
            PcapBlockOwned::LegacyHeader(h) => {
                let resolution = if h.is_nanosecond_precision() {
                    1_000_000_000
                } else {
                    1_000_000
                };
                self.interfaces = vec![Interface {
                    link: h.network.0,
                    resolution,
                    offset: 0,
                }];
            }
            PcapBlockOwned::Legacy(b) => {
                let Some(iface) = self.interfaces.first().copied() else {
                    return;
                };
                let frac = u64::from(b.ts_usec) * (1_000_000_000 / iface.resolution.max(1));
                let ts = u64::from(b.ts_sec) * 1_000_000_000 + frac;
                self.packet(iface.link, b.data, b.origlen as usize, ts, sink);
            }
            PcapBlockOwned::NG(Block::SectionHeader(_)) => self.interfaces.clear(),
            PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                let iface = Interface {
                    link: idb.linktype.0,
                    resolution: idb.ts_resolution().unwrap_or(1_000_000),
                    offset: idb.ts_offset(),
                };
                if self.interfaces.len() < MAX_INTERFACES {
                    self.interfaces.push(iface);
                }
            }
            PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                let Some(iface) = self.interfaces.get(epb.if_id as usize).copied() else {
                    self.stats.packets += 1;
                    self.stats.malformed += 1;
                    return;
                };
                let ticks = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                let res = iface.resolution.max(1);
                let secs = (ticks / res).saturating_add_signed(iface.offset);
                let nanos = (ticks % res) as u128 * 1_000_000_000 / u128::from(res);
                let ts = secs
                    .saturating_mul(1_000_000_000)
                    .saturating_add(nanos as u64);
                let data = &epb.data[..(epb.caplen as usize).min(epb.data.len())];
                self.packet(iface.link, data, epb.origlen as usize, ts, sink);
            }
            PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                let Some(iface) = self.interfaces.first().copied() else {
                    return;
                };
                self.packet(iface.link, spb.data, spb.origlen as usize, 0, sink);
            }
            PcapBlockOwned::NG(_) => {}
        }
    }

    fn packet(
        &mut self,
        link: i32,
        data: &[u8],
        orig_len: usize,
        ts: u64,
        sink: &mut dyn FnMut(&Packet<'_>),
    ) {
        self.stats.packets += 1;
        match packet::decode(link, data, orig_len.max(data.len()), ts) {
            Ok(p) => {
                match p {
                    Packet::Tcp(_) => self.stats.tcp_segments += 1,
                    Packet::Udp(_) => self.stats.udp_datagrams += 1,
                }
                sink(&p);
            }
            Err(Skip::NotIp) => self.stats.not_ip += 1,
            Err(Skip::NotTcpOrUdp) => self.stats.not_tcp_or_udp += 1,
            Err(Skip::Malformed) => self.stats.malformed += 1,
            Err(Skip::UnsupportedLinkType) => self.stats.unsupported_link_type += 1,
        }
    }
}

fn describe(e: &PcapError<&[u8]>) -> String {
    match e {
        PcapError::HeaderNotRecognized => "unknown file header".into(),
        PcapError::Eof => "empty".into(),
        PcapError::BufferTooSmall => "a block larger than 1 MiB".into(),
        PcapError::UnexpectedEof => "unexpected end of file".into(),
        PcapError::Incomplete(_) => "too short for a capture's header".into(),
        other => format!("{other:?}").chars().take(120).collect(),
    }
}

/// `build_ts_resolution` re-exported for tests of resolutions.
pub fn ts_resolution(if_tsresol: u8) -> Option<u64> {
    build_ts_resolution(if_tsresol)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A legacy pcap file (microseconds, raw IP) with the given packets, written by hand
    /// from the format's definition.
    fn pcap_file(link: u32, packets: &[&[u8]]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
        f.extend_from_slice(&2u16.to_le_bytes());
        f.extend_from_slice(&4u16.to_le_bytes());
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&65535u32.to_le_bytes());
        f.extend_from_slice(&link.to_le_bytes());
        for (i, p) in packets.iter().enumerate() {
            f.extend_from_slice(&(1_700_000_000u32 + i as u32).to_le_bytes());
            f.extend_from_slice(&250_000u32.to_le_bytes());
            f.extend_from_slice(&(p.len() as u32).to_le_bytes());
            f.extend_from_slice(&(p.len() as u32).to_le_bytes());
            f.extend_from_slice(p);
        }
        f
    }

    fn tcp_packet(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
            .tcp(5555, 443, 1, 1000)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    #[test]
    fn reads_a_pcap_file() {
        let a = tcp_packet(b"one");
        let b = tcp_packet(b"two");
        let file = pcap_file(101, &[&a, &[0x60, 0, 0], &b]);
        let mut r = CaptureReader::new(&file[..]).unwrap();
        let mut seen = Vec::new();
        while r
            .read(1, &mut |s| seen.push((s.ts_ns(), s.payload().to_vec())))
            .unwrap()
        {}
        assert_eq!(
            seen,
            vec![
                (1_700_000_000_250_000_000, b"one".to_vec()),
                (1_700_000_002_250_000_000, b"two".to_vec())
            ]
        );
        assert_eq!(r.stats().packets, 3);
        assert_eq!(r.stats().malformed, 1);
    }

    /// A pcapng file written by hand from the format's definition: a section, one raw-IP
    /// interface with `if_tsresol` = `tsresol`, and one enhanced packet at `ticks`.
    fn pcapng_file(tsresol: u8, ticks: u64, packet: &[u8]) -> Vec<u8> {
        fn block(f: &mut Vec<u8>, ty: u32, body: &[u8]) {
            let len = 12 + body.len() as u32;
            f.extend_from_slice(&ty.to_le_bytes());
            f.extend_from_slice(&len.to_le_bytes());
            f.extend_from_slice(body);
            f.extend_from_slice(&len.to_le_bytes());
        }
        let mut f = Vec::new();
        let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
        shb.extend_from_slice(&[1, 0, 0, 0]);
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        block(&mut f, 0x0A0D_0D0A, &shb);
        let mut idb = 101u16.to_le_bytes().to_vec();
        idb.extend_from_slice(&[0, 0]);
        idb.extend_from_slice(&65535u32.to_le_bytes());
        idb.extend_from_slice(&[9, 0, 1, 0, tsresol, 0, 0, 0, 0, 0, 0, 0]);
        block(&mut f, 1, &idb);
        let mut epb = 0u32.to_le_bytes().to_vec();
        epb.extend_from_slice(&((ticks >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ticks as u32).to_le_bytes());
        epb.extend_from_slice(&(packet.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(packet.len() as u32).to_le_bytes());
        epb.extend_from_slice(packet);
        epb.resize(epb.len().next_multiple_of(4), 0);
        block(&mut f, 6, &epb);
        f
    }

    #[test]
    fn pcapng_times_convert_and_saturate_at_the_end_of_time() {
        let p = tcp_packet(b"x");
        let read = |file: Vec<u8>| {
            let mut r = CaptureReader::new(&file[..]).unwrap();
            let mut ts = Vec::new();
            while r.read(10, &mut |s| ts.push(s.ts_ns())).unwrap() {}
            ts
        };
        // Microseconds (tsresol 6).
        assert_eq!(
            read(pcapng_file(6, 1_700_000_000_250_000, &p)),
            [1_700_000_000_250_000_000]
        );
        // Tenths of a second at the largest tick count: seconds overflow nanoseconds, and the
        // fraction must not overflow the saturated sum (a panic with overflow checks).
        assert_eq!(read(pcapng_file(1, u64::MAX, &p)), [u64::MAX]);
    }

    #[test]
    fn refuses_what_is_not_a_capture() {
        let err = CaptureReader::new(&b"GET / HTTP/1.1\r\n\r\nhello world, this is text"[..]);
        assert!(
            matches!(err, Err(CaptureError::NotACapture(_))),
            "{:?}",
            err.err()
        );
        assert!(CaptureReader::new(&b""[..]).is_err());
    }

    /// Everything a reader hands on and counts, reading `file` streamed or in place.
    fn read_all(file: &[u8], in_place: bool) -> (Vec<(u64, Vec<u8>)>, CaptureStats, String) {
        let reader = if in_place {
            CaptureReader::in_place(file)
        } else {
            CaptureReader::new(file)
        };
        let mut r = match reader {
            Ok(r) => r,
            Err(e) => return (Vec::new(), CaptureStats::default(), e.to_string()),
        };
        let mut seen = Vec::new();
        let end = loop {
            match r.read(3, &mut |s| seen.push((s.ts_ns(), s.payload().to_vec()))) {
                Ok(true) => continue,
                Ok(false) => break String::new(),
                Err(e) => break e.to_string(),
            }
        };
        (seen, r.stats(), end)
    }

    #[test]
    fn in_place_reads_what_streaming_reads() {
        let a = tcp_packet(b"one");
        let b = tcp_packet(&[7; 3000]);
        let pcap = pcap_file(101, &[&a, &[0x60, 0, 0], &b, &a]);
        // The same file in big-endian order, written by hand.
        let mut be = Vec::new();
        be.extend_from_slice(&0xa1b2c3d4u32.to_be_bytes());
        be.extend_from_slice(&2u16.to_be_bytes());
        be.extend_from_slice(&4u16.to_be_bytes());
        be.extend_from_slice(&[0; 8]);
        be.extend_from_slice(&65535u32.to_be_bytes());
        be.extend_from_slice(&101u32.to_be_bytes());
        for (i, p) in [&a, &b].iter().enumerate() {
            for v in [1_700_000_000 + i as u32, 5, p.len() as u32, p.len() as u32] {
                be.extend_from_slice(&v.to_be_bytes());
            }
            be.extend_from_slice(p);
        }
        // A record that claims more than the streaming buffer holds, in the middle.
        let mut huge = pcap.clone();
        huge[24 + 8..24 + 12].copy_from_slice(&(2u32 << 20).to_le_bytes());
        let ng = pcapng_file(9, 1_700_000_000_000_000_123, &b);
        let cases: [(&str, &[u8]); 9] = [
            ("pcap", &pcap),
            ("cut in a record", &pcap[..pcap.len() - 5]),
            ("cut in a record header", &pcap[..pcap.len() - a.len() - 10]),
            ("big-endian", &be),
            ("a 2 MiB record", &huge),
            ("pcapng", &ng),
            ("pcapng cut", &ng[..ng.len() - 7]),
            ("text", b"GET / HTTP/1.1\r\n\r\nhello world, this is text"),
            ("empty", b""),
        ];
        for (name, file) in cases {
            let streamed = read_all(file, false);
            assert_eq!(read_all(file, true), streamed, "{name}");
            if name == "big-endian" {
                assert_eq!(streamed.0.len(), 2, "{name}: {streamed:?}");
                assert_eq!(streamed.0[0].0, 1_700_000_000_000_005_000);
            }
            if name == "a 2 MiB record" {
                assert!(streamed.2.contains("larger than 1 MiB"), "{}", streamed.2);
            }
        }
    }

    #[test]
    fn a_truncated_file_ends_cleanly() {
        let a = tcp_packet(b"payload");
        let file = pcap_file(101, &[&a, &a]);
        let cut = &file[..file.len() - 5];
        let mut r = CaptureReader::new(cut).unwrap();
        let mut n = 0;
        while r.read(100, &mut |_| n += 1).unwrap() {}
        assert_eq!(n, 1);
        assert_eq!(r.stats().malformed, 1);
        assert_eq!(ts_resolution(9), Some(1_000_000_000));
    }
}
