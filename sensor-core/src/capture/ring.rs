//! The kernel tap's ring buffer records, decoded. Pure: bytes in, a [`RingRecord`] out; every
//! header is read through [`sensor_common::read_wire`], and a record that lies about its
//! lengths is [`RingRecord::Unknown`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sensor_common::{
    COMM_LEN, CertChunkHeader, REQUEST_HEAD_CAP, RequestHead, SEGMENT_HEADER_LEN, SegmentHeader,
    SocketEvent, direction, family, kind, loss, read_wire, segment_flags, transport,
};

use super::{Attribution, Datagram, Received, Segment, certs::CertChunk};

/// Converts the kernel's CLOCK_BOOTTIME timestamps to the sensor's time: nanoseconds since the
/// Unix epoch as the wall clock read when the sensor started, counted on since by a clock that
/// no NTP step or `date -s` moves and that keeps counting through a suspend. The caller
/// measures the offset once; the daemon maps event times to the wall clock as it reads at the
/// time (`Handshake::shift_times`).
#[derive(Clone, Copy, Debug)]
pub struct ClockOffset {
    realtime_minus_boottime_ns: i128,
}

impl ClockOffset {
    /// The offset between the two clocks, measured by the caller (the core reads no clock).
    pub fn new(realtime_minus_boottime_ns: i128) -> Self {
        Self {
            realtime_minus_boottime_ns,
        }
    }

    /// The sensor's time of a boot-time timestamp.
    pub fn to_epoch_ns(self, boottime_ns: u64) -> u64 {
        let v = i128::from(boottime_ns) + self.realtime_minus_boottime_ns;
        u64::try_from(v.max(0)).unwrap_or(u64::MAX)
    }

    /// The offset in nanoseconds.
    pub fn ns(self) -> i128 {
        self.realtime_minus_boottime_ns
    }
}

/// The owner of a socket, as the kernel saw it at connect time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketOwner {
    pub cookie: u64,
    /// Process id (the kernel's tgid).
    pub pid: u32,
    pub uid: u32,
    /// The connecting thread's name.
    pub comm: String,
    /// The connecting process's cgroup v2 id, when the kernel gave one.
    pub cgroup_id: Option<u64>,
}

/// A decoded ring buffer record.
#[derive(Debug)]
pub enum RingRecord<'a> {
    Segment(Segment<'a>),
    /// A UDP datagram of a QUIC flow.
    Datagram(Datagram<'a>),
    Socket(SocketOwner),
    /// A chunk of a certificate from the `d2i_X509` uprobe.
    Cert(CertChunk<'a>),
    /// The first plaintext a local TLS server read on an inbound socket (`SSL_read` uprobe).
    RequestHead {
        cookie: u64,
        bytes: &'a [u8],
    },
    /// A record this version does not understand, or a malformed one.
    Unknown,
}

/// Decode one ring buffer record. `clock` converts the kernel's timestamps.
pub fn decode(record: &[u8], clock: ClockOffset) -> RingRecord<'_> {
    let Some(record_kind) = read_wire::<u32>(record) else {
        return RingRecord::Unknown;
    };
    match record_kind {
        kind::SEGMENT => segment(record, clock),
        kind::SOCKET => socket(record),
        kind::CERT => cert(record),
        kind::REQUEST_HEAD => request_head(record),
        _ => RingRecord::Unknown,
    }
}

fn socket(record: &[u8]) -> RingRecord<'_> {
    let Some(ev) = read_wire::<SocketEvent>(record) else {
        return RingRecord::Unknown;
    };
    let comm_len = ev.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    RingRecord::Socket(SocketOwner {
        cookie: ev.cookie,
        pid: (ev.pid_tgid >> 32) as u32,
        uid: ev.uid_gid as u32,
        comm: String::from_utf8_lossy(&ev.comm[..comm_len]).into_owned(),
        cgroup_id: (ev.cgroup_id != 0).then_some(ev.cgroup_id),
    })
}

fn request_head(record: &[u8]) -> RingRecord<'_> {
    const DATA: usize = std::mem::offset_of!(RequestHead, data);
    let Some(h) = read_wire::<RequestHead>(record) else {
        return RingRecord::Unknown;
    };
    let len = (h.len as usize).min(REQUEST_HEAD_CAP);
    match record.get(DATA..DATA + len) {
        Some(bytes) if len > 0 => RingRecord::RequestHead {
            cookie: h.cookie,
            bytes,
        },
        _ => RingRecord::Unknown,
    }
}

fn cert(record: &[u8]) -> RingRecord<'_> {
    let Some(h) = read_wire::<CertChunkHeader>(record) else {
        return RingRecord::Unknown;
    };
    let start = size_of::<CertChunkHeader>();
    let Some(data) = record.get(start..start + h.len as usize) else {
        return RingRecord::Unknown;
    };
    RingRecord::Cert(CertChunk {
        ts_ns: h.ts_ns,
        pid_tgid: h.pid_tgid,
        cookie: h.cookie,
        offset: h.offset,
        total_len: h.total_len,
        der_len: h.der_len,
        data,
    })
}

fn segment(record: &[u8], clock: ClockOffset) -> RingRecord<'_> {
    let Some(h) = read_wire::<SegmentHeader>(record) else {
        return RingRecord::Unknown;
    };
    let Some(payload) = record.get(SEGMENT_HEADER_LEN..SEGMENT_HEADER_LEN + h.payload_len as usize)
    else {
        return RingRecord::Unknown;
    };
    let addr = |raw: [u8; 16]| -> Option<IpAddr> {
        match h.family {
            family::INET => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
            family::INET6 => Some(IpAddr::V6(Ipv6Addr::from(raw))),
            _ => None,
        }
    };
    let (Some(saddr), Some(daddr)) = (addr(h.saddr), addr(h.daddr)) else {
        return RingRecord::Unknown;
    };
    let pid = (h.flags & segment_flags::HAS_PID != 0 && h.direction == direction::EGRESS)
        .then_some((h.pid_tgid >> 32) as u32)
        .filter(|&p| p != 0);
    let missing = if h.flags & segment_flags::TRUNCATED != 0 {
        h.segment_len.saturating_sub(h.payload_len)
    } else {
        0
    };
    let attribution = Attribution {
        cookie: h.cookie,
        local_is_src: h.direction == direction::EGRESS,
        first_on_socket: h.flags & segment_flags::FIRST != 0,
        pid,
        budget_exhausted: h.flags & segment_flags::BUDGET_EXHAUSTED != 0,
        prefix_exhausted: h.flags & segment_flags::PREFIX_EXHAUSTED != 0,
        records_lost: h.losses & loss::RING_DROP != 0,
        packets_unreadable: h.losses & loss::UNREADABLE != 0,
        handshake_done: h.flags & segment_flags::HANDSHAKE_DONE != 0,
        unforwarded: if missing == 0 {
            h.segment_len.saturating_sub(h.payload_len)
        } else {
            0
        },
    };
    if h.transport == transport::UDP {
        return RingRecord::Datagram(Datagram {
            ts_ns: clock.to_epoch_ns(h.ts_ns),
            src: SocketAddr::new(saddr, h.sport),
            dst: SocketAddr::new(daddr, h.dport),
            payload,
            missing,
            attribution: Some(attribution),
        });
    }
    RingRecord::Segment(Segment {
        ts_ns: clock.to_epoch_ns(h.ts_ns),
        src: SocketAddr::new(saddr, h.sport),
        dst: SocketAddr::new(daddr, h.dport),
        seq: h.seq,
        tcp_flags: h.tcp_flags,
        payload,
        missing,
        received: if h.flags & segment_flags::HAS_RCV_NXT == 0 {
            Received::default()
        } else if h.direction == direction::EGRESS {
            // The sender's socket: how far it had received its peer's stream.
            Received {
                from_src: None,
                from_dst: Some(h.rcv_nxt),
            }
        } else {
            Received {
                from_src: Some(h.rcv_nxt),
                from_dst: None,
            }
        },
        attribution: Some(attribution),
    })
}

#[cfg(test)]
mod tests {
    use sensor_common::{SOCKET_EVENT_LEN, write_wire};

    use super::*;

    fn record(h: SegmentHeader, payload: &[u8]) -> Vec<u8> {
        let mut v = write_wire(&h).to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_an_ipv4_segment() {
        let mut h = SegmentHeader {
            kind: kind::SEGMENT,
            flags: segment_flags::HAS_PID,
            family: family::INET,
            seq: 1000,
            payload_len: 3,
            segment_len: 3,
            sport: 40000,
            dport: 443,
            pid_tgid: (4242u64 << 32) | 4243,
            cookie: 7,
            ts_ns: 5,
            ..Default::default()
        };
        h.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        h.daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        let bytes = record(h, b"abcXYZ");
        let RingRecord::Segment(s) = decode(&bytes, ClockOffset::new(10)) else {
            panic!("not decoded");
        };
        assert_eq!(s.src, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(s.dst, "127.0.0.2:443".parse().unwrap());
        assert_eq!(s.payload, b"abc");
        assert_eq!(s.ts_ns, 15);
        assert_eq!(s.attribution.unwrap().pid, Some(4242));
        assert_eq!(s.attribution.unwrap().cookie, 7);
    }

    #[test]
    fn decodes_a_socket_event() {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"curl");
        let ev = SocketEvent {
            kind: kind::SOCKET,
            cookie: 99,
            pid_tgid: (100u64 << 32) | 101,
            uid_gid: (1000u64 << 32) | 1001,
            comm,
            cgroup_id: 5309,
            ..Default::default()
        };
        let v = write_wire(&ev).to_vec();
        assert_eq!(v.len(), SOCKET_EVENT_LEN);
        let RingRecord::Socket(owner) = decode(&v, ClockOffset::new(0)) else {
            panic!("not decoded");
        };
        assert_eq!((owner.pid, owner.uid), (100, 1001));
        assert_eq!(owner.comm, "curl");
        assert_eq!(owner.cookie, 99);
        assert_eq!(owner.cgroup_id, Some(5309));
        assert!(matches!(
            decode(&v[..20], ClockOffset::new(0)),
            RingRecord::Unknown
        ));
    }

    #[test]
    fn rejects_short_and_lying_records() {
        let clock = ClockOffset::new(0);
        assert!(matches!(decode(&[1, 0], clock), RingRecord::Unknown));
        let h = SegmentHeader {
            kind: kind::SEGMENT,
            family: family::INET,
            payload_len: 100,
            ..Default::default()
        };
        assert!(matches!(
            decode(&record(h, b"short"), clock),
            RingRecord::Unknown
        ));
        let c = CertChunkHeader {
            kind: kind::CERT,
            len: 4000,
            ..Default::default()
        };
        let mut bytes = write_wire(&c).to_vec();
        bytes.extend_from_slice(&[0; 10]);
        assert!(matches!(decode(&bytes, clock), RingRecord::Unknown));
    }
}
