//! One captured frame to a [`Packet`] (a TCP segment or a UDP datagram), for the link types
//! capture files use. Pure.
//!
//! IP, TCP and UDP are parsed with etherparse's lax slices, which keep what they can of a packet
//! cut by the capture's snap length; the cut part is reported as `missing`. A frame whose IP
//! header follows the link header directly (every link type, Ethernet without VLAN tags) is
//! sliced layer by layer ([`decode`]); any other (VLAN, MACsec) goes through etherparse's whole
//! packet slicer ([`decode_sliced`]), which is slower only because its result is large and
//! copied. Both give the same answer on any frame: a fuzz target checks it.

use std::net::{IpAddr, SocketAddr};

use etherparse::{
    EtherType, LaxIpSlice, LaxNetSlice, LaxSlicedPacket, TcpSlice, TransportSlice, UdpSlice,
    ip_number,
};

use super::{Datagram, Packet, Received, Segment};
use sensor_common::tcp_flags;

/// Link types (LINKTYPE_* values of pcap and pcapng) this reader understands.
pub mod linktype {
    pub const NULL: i32 = 0;
    pub const ETHERNET: i32 = 1;
    /// DLT_RAW as some systems number it.
    pub const RAW_12: i32 = 12;
    pub const RAW_14: i32 = 14;
    pub const RAW: i32 = 101;
    pub const LOOP: i32 = 108;
    pub const LINUX_SLL: i32 = 113;
    pub const IPV4: i32 = 228;
    pub const IPV6: i32 = 229;
    pub const LINUX_SLL2: i32 = 276;
}

/// Why a frame gave no segment. Counted by the reader; none of them stops it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The link type is not one this reader understands.
    UnsupportedLinkType,
    /// Not IPv4 or IPv6 (ARP, LLDP...).
    NotIp,
    /// IP, but neither TCP nor UDP (or a later fragment).
    NotTcpOrUdp,
    /// Headers cut short or inconsistent.
    Malformed,
}

/// Decode a frame of link type `link` captured at `ts_ns` (epoch ns). `orig_len` is the
/// frame's length on the wire; bytes past `data` are reported as missing payload.
pub fn decode(link: i32, data: &[u8], orig_len: usize, ts_ns: u64) -> Result<Packet<'_>, Skip> {
    // The IP packet, the link header's length, and what a bad IP header counts as (etherparse
    // reports it as an error for a raw IP frame, as "no network layer" after a link header).
    let ether_ip = |et: u16| et == EtherType::IPV4.0 || et == EtherType::IPV6.0;
    let (ip, l2_len, bad_ip) = match link {
        linktype::ETHERNET => match data.get(12..14) {
            Some(et) if ether_ip(u16::from_be_bytes([et[0], et[1]])) => {
                (&data[14..], 14, Skip::NotIp)
            }
            _ => return decode_sliced(link, data, orig_len, ts_ns),
        },
        linktype::RAW | linktype::RAW_12 | linktype::RAW_14 | linktype::IPV4 | linktype::IPV6 => {
            (data, 0, Skip::Malformed)
        }
        linktype::LINUX_SLL => match data.get(14..16) {
            Some(et) if ether_ip(u16::from_be_bytes([et[0], et[1]])) => {
                (&data[16..], 16, Skip::NotIp)
            }
            _ => return decode_sliced(link, data, orig_len, ts_ns),
        },
        linktype::LINUX_SLL2 => match (data.get(0..2), data.get(20..)) {
            (Some(et), Some(rest)) if ether_ip(u16::from_be_bytes([et[0], et[1]])) => {
                (rest, 20, Skip::NotIp)
            }
            _ => return decode_sliced(link, data, orig_len, ts_ns),
        },
        linktype::NULL | linktype::LOOP => match data.get(4..) {
            Some(rest) if null_family_is_ip(link, data) => (rest, 4, Skip::Malformed),
            _ => return decode_sliced(link, data, orig_len, ts_ns),
        },
        _ => return Err(Skip::UnsupportedLinkType),
    };
    let (ip, stop) = LaxIpSlice::from_slice(ip).map_err(|_| bad_ip)?;
    let payload = ip.payload();
    if payload.fragmented || stop.is_some() {
        return Err(Skip::NotTcpOrUdp);
    }
    let transport = match payload.ip_number {
        ip_number::TCP => TcpSlice::from_slice(payload.payload)
            .ok()
            .map(TransportSlice::Tcp),
        ip_number::UDP => UdpSlice::from_slice_lax(payload.payload)
            .ok()
            .map(TransportSlice::Udp),
        _ => None,
    };
    to_packet(&ip, l2_len, transport.as_ref(), data.len(), orig_len, ts_ns)
}

/// Whether a NULL or LOOP frame's 4-byte address family is IPv4 or IPv6 (host order for NULL,
/// either endianness, depending on the capturing machine; network order for LOOP). 2 is IPv4;
/// the BSDs number IPv6 24, 28 or 30; Linux 10. False when the frame is too short.
fn null_family_is_ip(link: i32, data: &[u8]) -> bool {
    let Some(fam) = data.get(0..4) else {
        return false;
    };
    let le = u32::from_le_bytes([fam[0], fam[1], fam[2], fam[3]]);
    let be = u32::from_be_bytes([fam[0], fam[1], fam[2], fam[3]]);
    let family = if link == linktype::LOOP || le > 0xffff {
        be
    } else {
        le
    };
    matches!(family, 2 | 10 | 24 | 28 | 30)
}

/// The segment or datagram of a frame whose IP packet (after `l2_len` bytes of link header)
/// is `ip`: none when the packet is a fragment or carries neither TCP nor UDP.
fn to_packet<'a>(
    ip: &LaxIpSlice<'a>,
    l2_len: usize,
    transport: Option<&TransportSlice<'a>>,
    captured: usize,
    orig_len: usize,
    ts_ns: u64,
) -> Result<Packet<'a>, Skip> {
    if ip.payload().fragmented {
        return Err(Skip::NotTcpOrUdp);
    }
    let (src_ip, dst_ip, declared_ip_len): (IpAddr, IpAddr, usize) = match ip {
        LaxIpSlice::Ipv4(v4) => {
            let h = v4.header();
            (
                h.source_addr().into(),
                h.destination_addr().into(),
                usize::from(h.total_len()),
            )
        }
        LaxIpSlice::Ipv6(v6) => {
            let h = v6.header();
            (
                h.source_addr().into(),
                h.destination_addr().into(),
                40 + usize::from(h.payload_length()),
            )
        }
    };
    // Bytes of the IP packet that the capture did not keep: all of them payload, since the
    // transport header parsed.
    let ip_captured = captured.saturating_sub(l2_len);
    let ip_on_wire = declared_ip_len.min(orig_len.saturating_sub(l2_len));
    let missing = ip_on_wire.saturating_sub(ip_captured);
    let tcp = match transport {
        Some(TransportSlice::Tcp(tcp)) => tcp,
        Some(TransportSlice::Udp(udp)) => {
            return Ok(Packet::Udp(Datagram {
                ts_ns,
                src: SocketAddr::new(src_ip, udp.source_port()),
                dst: SocketAddr::new(dst_ip, udp.destination_port()),
                payload: udp.payload(),
                missing: u32::try_from(missing).unwrap_or(u32::MAX),
                attribution: None,
            }));
        }
        _ => return Err(Skip::NotTcpOrUdp),
    };
    let mut flags = 0u8;
    for (set, bit) in [
        (tcp.fin(), tcp_flags::FIN),
        (tcp.syn(), tcp_flags::SYN),
        (tcp.rst(), tcp_flags::RST),
        (tcp.psh(), tcp_flags::PSH),
        (tcp.ack(), tcp_flags::ACK),
    ] {
        if set {
            flags |= bit;
        }
    }
    Ok(Packet::Tcp(Segment {
        ts_ns,
        src: SocketAddr::new(src_ip, tcp.source_port()),
        dst: SocketAddr::new(dst_ip, tcp.destination_port()),
        seq: tcp.sequence_number(),
        tcp_flags: flags,
        payload: tcp.payload(),
        missing: u32::try_from(missing).unwrap_or(u32::MAX),
        received: Received {
            from_src: None,
            from_dst: tcp.ack().then(|| tcp.acknowledgment_number()),
        },
        attribution: None,
    }))
}

/// [`decode`] with etherparse's whole-packet slicer, for any frame: VLAN tags, MACsec. Public
/// so that a fuzz target can hold the two to the same answers.
#[doc(hidden)]
pub fn decode_sliced(
    link: i32,
    data: &[u8],
    orig_len: usize,
    ts_ns: u64,
) -> Result<Packet<'_>, Skip> {
    let (sliced, l2_len) = match link {
        linktype::ETHERNET => (
            LaxSlicedPacket::from_ethernet(data).map_err(|_| Skip::Malformed)?,
            14,
        ),
        linktype::RAW | linktype::RAW_12 | linktype::RAW_14 | linktype::IPV4 | linktype::IPV6 => (
            LaxSlicedPacket::from_ip(data).map_err(|_| Skip::Malformed)?,
            0,
        ),
        linktype::LINUX_SLL => {
            // 16-byte header; the protocol (an EtherType) is its last two bytes.
            let proto = data.get(14..16).ok_or(Skip::Malformed)?;
            let et = EtherType(u16::from_be_bytes([proto[0], proto[1]]));
            (LaxSlicedPacket::from_ether_type(et, &data[16..]), 16)
        }
        linktype::LINUX_SLL2 => {
            // 20-byte header; the protocol is its first two bytes.
            let proto = data.get(0..2).ok_or(Skip::Malformed)?;
            let rest = data.get(20..).ok_or(Skip::Malformed)?;
            let et = EtherType(u16::from_be_bytes([proto[0], proto[1]]));
            (LaxSlicedPacket::from_ether_type(et, rest), 20)
        }
        linktype::NULL | linktype::LOOP => {
            if data.len() < 4 {
                return Err(Skip::Malformed);
            }
            if !null_family_is_ip(link, data) {
                return Err(Skip::NotIp);
            }
            (
                LaxSlicedPacket::from_ip(&data[4..]).map_err(|_| Skip::Malformed)?,
                4,
            )
        }
        _ => return Err(Skip::UnsupportedLinkType),
    };
    let ip = match sliced.net.as_ref().ok_or(Skip::NotIp)? {
        LaxNetSlice::Ipv4(v4) => LaxIpSlice::Ipv4(v4.clone()),
        LaxNetSlice::Ipv6(v6) => LaxIpSlice::Ipv6(v6.clone()),
        LaxNetSlice::Arp(_) => return Err(Skip::NotIp),
    };
    to_packet(
        &ip,
        l2_len,
        sliced.transport.as_ref(),
        data.len(),
        orig_len,
        ts_ns,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_tcp(link: i32, data: &[u8], orig_len: usize, ts: u64) -> Result<Segment<'_>, Skip> {
        match decode(link, data, orig_len, ts)? {
            Packet::Tcp(seg) => Ok(seg),
            Packet::Udp(_) => Err(Skip::NotTcpOrUdp),
        }
    }

    #[test]
    fn a_udp_datagram_keeps_its_ports_and_payload() {
        let builder =
            etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(5000, 443);
        let mut ip = Vec::new();
        builder.write(&mut ip, b"quic").unwrap();
        let Ok(Packet::Udp(d)) = decode(linktype::RAW, &ip[..ip.len() - 1], ip.len(), 3) else {
            panic!("not a datagram");
        };
        assert_eq!(
            (d.src.port(), d.dst.port(), d.payload, d.missing),
            (5000, 443, &b"qui"[..], 1)
        );
    }

    /// An IPv4/TCP packet with the given payload, built with etherparse.
    fn ipv4_tcp(payload: &[u8]) -> Vec<u8> {
        let builder = etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 443, 1000, 65535)
            .ack(1)
            .psh();
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn every_link_type() {
        let ip = ipv4_tcp(b"hello");
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x08, 0x00]);
        eth.extend_from_slice(&ip);
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(&ip);
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(&ip);
        let mut null_le = 2u32.to_le_bytes().to_vec();
        null_le.extend_from_slice(&ip);
        let mut null_be = 2u32.to_be_bytes().to_vec();
        null_be.extend_from_slice(&ip);
        for (link, frame) in [
            (linktype::ETHERNET, &eth),
            (linktype::RAW, &ip),
            (linktype::LINUX_SLL, &sll),
            (linktype::LINUX_SLL2, &sll2),
            (linktype::NULL, &null_le),
            (linktype::NULL, &null_be),
            (linktype::LOOP, &null_be),
        ] {
            let seg =
                decode_tcp(link, frame, frame.len(), 7).unwrap_or_else(|e| panic!("{link}: {e:?}"));
            assert_eq!(seg.payload, b"hello", "link type {link}");
            assert_eq!(seg.src, "10.0.0.1:40000".parse().unwrap());
            assert_eq!(seg.dst, "10.0.0.2:443".parse().unwrap());
            assert_eq!(seg.seq, 1000);
            assert_eq!(seg.missing, 0);
            assert_eq!(seg.tcp_flags, tcp_flags::ACK | tcp_flags::PSH);
        }
    }

    /// The layer-by-layer path and etherparse's whole-packet slicer agree, frame by frame,
    /// also on frames cut anywhere and on the VLAN-tagged frames only the slicer reads.
    #[test]
    fn both_decoders_give_the_same_answer() {
        let ip = ipv4_tcp(b"hello");
        let mut v6 = Vec::new();
        etherparse::PacketBuilder::ipv6([1; 16], [2; 16], 64)
            .udp(443, 5000)
            .write(&mut v6, b"quic")
            .unwrap();
        let mut frames: Vec<(i32, Vec<u8>)> = Vec::new();
        for inner in [&ip, &v6] {
            let et = if inner[0] >> 4 == 4 {
                0x0800u16
            } else {
                0x86dd
            };
            let mut eth = vec![0u8; 12];
            eth.extend_from_slice(&et.to_be_bytes());
            eth.extend_from_slice(inner);
            let mut vlan = vec![0u8; 12];
            vlan.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
            vlan.extend_from_slice(&et.to_be_bytes());
            vlan.extend_from_slice(inner);
            let mut sll = vec![0u8; 14];
            sll.extend_from_slice(&et.to_be_bytes());
            sll.extend_from_slice(inner);
            let mut null = 2u32.to_le_bytes().to_vec();
            null.extend_from_slice(inner);
            frames.extend([
                (linktype::ETHERNET, eth),
                (linktype::ETHERNET, vlan),
                (linktype::LINUX_SLL, sll),
                (linktype::NULL, null),
                (linktype::RAW, inner.clone()),
            ]);
        }
        for (link, frame) in &frames {
            for cut in 0..=frame.len() {
                let data = &frame[..cut];
                assert_eq!(
                    format!("{:?}", decode(*link, data, frame.len(), 1)),
                    format!("{:?}", decode_sliced(*link, data, frame.len(), 1)),
                    "link type {link}, cut at {cut}"
                );
            }
        }
        let vlan = &frames[1].1;
        let seg = decode_tcp(linktype::ETHERNET, vlan, vlan.len(), 0).unwrap();
        assert_eq!(seg.payload, b"hello");
    }

    #[test]
    fn a_frame_cut_by_the_snap_length_reports_what_is_missing() {
        let ip = ipv4_tcp(&[7u8; 100]);
        let cut = &ip[..ip.len() - 30];
        let seg = decode_tcp(linktype::RAW, cut, ip.len(), 0).unwrap();
        assert_eq!(seg.payload.len(), 70);
        assert_eq!(seg.missing, 30);
    }

    #[test]
    fn garbage_is_skipped() {
        assert_eq!(
            decode_tcp(linktype::ETHERNET, &[1, 2, 3], 3, 0).err(),
            Some(Skip::Malformed)
        );
        assert_eq!(
            decode_tcp(9999, &[0; 40], 40, 0).err(),
            Some(Skip::UnsupportedLinkType)
        );
        assert!(decode_tcp(linktype::RAW, &[0x45; 60], 60, 0).is_err());
    }
}
