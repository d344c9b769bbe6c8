//! QUIC packet headers (RFC 9000 §17, RFC 9369 §3.2): the invariant long header, the
//! version-specific packet types, and the coalesced packets of one datagram. Header
//! protection is not removed here ([`super::initial`] does that for Initial packets).

use super::QuicVersion;

/// Longest connection ID QUIC versions 1 and 2 allow (RFC 9000 §17.2).
pub const MAX_CID_LEN: usize = 20;

/// A client's first Initial datagram is at least this long (RFC 9000 §14.1); a server drops
/// shorter ones.
pub const MIN_CLIENT_INITIAL_DATAGRAM: usize = 1200;

/// The kind of a QUIC packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Initial,
    ZeroRtt,
    Handshake,
    Retry,
    /// A Version Negotiation packet (version 0).
    VersionNegotiation,
    /// A long header of a version this parser does not know: only its invariant fields.
    UnknownVersion,
    /// A short header (1-RTT) packet: it takes the rest of the datagram.
    Short,
}

/// Why a packet's header could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("packet cut short")]
    Truncated,
    #[error("connection ID longer than 20 bytes")]
    CidTooLong,
    #[error("length field beyond the datagram")]
    BadLength,
}

/// One packet of a datagram, its header read as far as it is not protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    pub kind: Kind,
    /// The version of a long header (0 for Version Negotiation, unknown for short headers).
    pub version: Option<u32>,
    pub dcid: &'a [u8],
    /// Empty for short headers.
    pub scid: &'a [u8],
    /// The Initial packet's token (the Retry's, for a Retry packet).
    pub token: &'a [u8],
    /// Offset of the (protected) packet number in `bytes` (Initial, 0-RTT, Handshake).
    pub pn_offset: usize,
    /// The whole packet: header, packet number and protected payload.
    pub bytes: &'a [u8],
}

impl Packet<'_> {
    /// The version of a long header packet this parser knows (1 or 2).
    pub fn quic_version(&self) -> Option<QuicVersion> {
        self.version.and_then(QuicVersion::from_wire)
    }
}

/// A variable-length integer (RFC 9000 §16) at the start of `b`, and its length.
pub fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let len = 1usize << (first >> 6);
    let bytes = b.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for &x in &bytes[1..] {
        v = (v << 8) | u64::from(x);
    }
    Some((v, len))
}

/// The packets of one UDP datagram, in order (RFC 9000 §12.2: long header packets may be
/// coalesced; a short header packet takes the rest). Stops at the first header that cannot
/// be read, after yielding its error.
pub struct Packets<'a> {
    rest: &'a [u8],
    /// The datagram's first packet: trailing bytes after a coalesced packet may be padding
    /// (zeros), which ends the datagram without an error.
    first: bool,
}

impl<'a> Packets<'a> {
    pub fn new(datagram: &'a [u8]) -> Self {
        Self {
            rest: datagram,
            first: true,
        }
    }
}

impl<'a> Iterator for Packets<'a> {
    type Item = Result<Packet<'a>, HeaderError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        // Zeros after a coalesced packet are padding some stacks add.
        if !self.first && self.rest[0] == 0 {
            self.rest = &[];
            return None;
        }
        self.first = false;
        let data = self.rest;
        match parse(data) {
            Ok(p) => {
                self.rest = &data[p.bytes.len()..];
                Some(Ok(p))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// Read the packet at the start of `data`.
pub fn parse(data: &[u8]) -> Result<Packet<'_>, HeaderError> {
    let first = *data.first().ok_or(HeaderError::Truncated)?;
    if first & 0x80 == 0 {
        return Ok(Packet {
            kind: Kind::Short,
            version: None,
            dcid: &[],
            scid: &[],
            token: &[],
            pn_offset: 1,
            bytes: data,
        });
    }
    let version = u32::from_be_bytes(
        data.get(1..5)
            .ok_or(HeaderError::Truncated)?
            .try_into()
            .map_err(|_| HeaderError::Truncated)?,
    );
    let mut at = 5;
    let cid = |at: &mut usize, max: usize| -> Result<&[u8], HeaderError> {
        let len = usize::from(*data.get(*at).ok_or(HeaderError::Truncated)?);
        if len > max {
            return Err(HeaderError::CidTooLong);
        }
        let c = data
            .get(*at + 1..*at + 1 + len)
            .ok_or(HeaderError::Truncated)?;
        *at += 1 + len;
        Ok(c)
    };
    // The invariants (RFC 8999) allow 255-byte connection IDs; versions 1 and 2 allow 20.
    let known = QuicVersion::from_wire(version);
    let max_cid = if known.is_some() { MAX_CID_LEN } else { 255 };
    let dcid = cid(&mut at, max_cid)?;
    let scid = cid(&mut at, max_cid)?;
    let mut packet = Packet {
        kind: Kind::UnknownVersion,
        version: Some(version),
        dcid,
        scid,
        token: &[],
        pn_offset: 0,
        bytes: data,
    };
    if version == 0 {
        packet.kind = Kind::VersionNegotiation;
        return Ok(packet);
    }
    let Some(v) = known else {
        return Ok(packet);
    };
    // The fixed bit may be cleared once both ends allow it (RFC 9287, greasing): it is not
    // checked here; `opens_quic` checks it on a client's first Initial, which cannot grease.
    packet.kind = v.long_kind((first >> 4) & 3);
    match packet.kind {
        Kind::Retry => {
            packet.token = &data[at..data.len().saturating_sub(16).max(at)];
            return Ok(packet);
        }
        Kind::Initial => {
            let (len, n) = varint(&data[at..]).ok_or(HeaderError::Truncated)?;
            at += n;
            let len = usize::try_from(len).map_err(|_| HeaderError::BadLength)?;
            packet.token = data
                .get(at..at.checked_add(len).ok_or(HeaderError::BadLength)?)
                .ok_or(HeaderError::Truncated)?;
            at += len;
        }
        _ => {}
    }
    let (len, n) =
        varint(data.get(at..).ok_or(HeaderError::Truncated)?).ok_or(HeaderError::Truncated)?;
    at += n;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| at.checked_add(l))
        .filter(|&end| end <= data.len())
        .ok_or(HeaderError::BadLength)?;
    packet.pn_offset = at;
    packet.bytes = &data[..end];
    Ok(packet)
}

/// Whether a datagram opens like a client's first flight: a long header Initial packet of
/// version 1 or 2, with a Destination Connection ID of 8 to 20 bytes (RFC 9000 §7.2), in a
/// datagram of at least 1200 bytes. `len` is the datagram's length on the wire. What the
/// kernel checks before it follows a UDP flow.
pub fn opens_quic(datagram: &[u8], len: usize) -> Option<QuicVersion> {
    let first = *datagram.first()?;
    if first & 0xc0 != 0xc0 || len < MIN_CLIENT_INITIAL_DATAGRAM {
        return None;
    }
    let version = QuicVersion::from_wire(u32::from_be_bytes(datagram.get(1..5)?.try_into().ok()?))?;
    let dcid_len = usize::from(*datagram.get(5)?);
    (version.long_kind((first >> 4) & 3) == Kind::Initial && (8..=MAX_CID_LEN).contains(&dcid_len))
        .then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_of_rfc_9000_appendix_a1() {
        assert_eq!(
            varint(&[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c]),
            Some((151_288_809_941_952_652, 8))
        );
        assert_eq!(varint(&[0x9d, 0x7f, 0x3e, 0x7d]), Some((494_878_333, 4)));
        assert_eq!(varint(&[0x7b, 0xbd]), Some((15_293, 2)));
        assert_eq!(varint(&[0x25]), Some((37, 1)));
        assert_eq!(varint(&[0x40, 0x25]), Some((37, 2)));
        assert_eq!(varint(&[0x7b]), None);
    }

    #[test]
    fn headers_that_lie_are_errors() {
        // A length beyond the datagram.
        let mut p = vec![0xc0, 0, 0, 0, 1, 8];
        p.extend([1; 8]);
        p.extend([0, 0, 0x44, 0x00]);
        assert_eq!(parse(&p), Err(HeaderError::BadLength));
        // A 21-byte connection ID in version 1.
        let mut p = vec![0xc0, 0, 0, 0, 1, 21];
        p.extend([1; 21]);
        assert_eq!(parse(&p), Err(HeaderError::CidTooLong));
        assert_eq!(parse(&[0xc0, 0, 0]), Err(HeaderError::Truncated));
        // A version this parser does not know: only its invariant fields.
        let p = [0xc0, 0xfa, 0xce, 0xb0, 0x0c, 0, 0, 1, 2, 3];
        assert_eq!(parse(&p).unwrap().kind, Kind::UnknownVersion);
    }
}
