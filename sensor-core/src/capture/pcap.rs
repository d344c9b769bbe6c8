//! Capture files: pcap and pcapng, through pcap-parser, as a stream of [`Packet`]s (TCP segments
//! and UDP datagrams).
//!
//! The reader streams: it holds one buffer of bounded size whatever the file's size. It reads
//! from any `Read` (a file, or bytes in memory for tests and fuzzing).

use std::io::Read;

use pcap_parser::{
    Block, PcapBlockOwned, PcapError, create_reader, pcapng::build_ts_resolution,
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
    inner: Box<dyn PcapReaderIterator + Send + 'r>,
    state: State,
    done: bool,
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
            inner,
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
            match self.inner.next() {
                Ok((offset, block)) => {
                    handled += 1;
                    self.state.block(block, sink);
                    self.state.stats.bytes += offset as u64;
                    self.inner.consume(offset);
                }
                Err(PcapError::Eof) => self.done = true,
                Err(PcapError::Incomplete(_)) => {
                    if let Err(e) = self.inner.refill() {
                        return Err(corrupt(&self.state, &e));
                    }
                    if self.inner.reader_exhausted() && self.inner.data().is_empty() {
                        self.done = true;
                    } else if self.inner.reader_exhausted() {
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
