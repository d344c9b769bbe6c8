//! QUIC's cleartext part (RFC 9000, RFC 9001, RFC 9369): the packet headers, the Initial
//! packets a passive observer can decrypt (their keys come from the client's first
//! Destination Connection ID), and the frames they carry. The CRYPTO frames of the Initial
//! packets hold the ClientHello and the ServerHello; the [`engine`](crate::engine)
//! reassembles them by offset and reads them as it reads TLS over TCP. The rest of the
//! handshake (the server's certificate) is encrypted with keys only the endpoints have, as in
//! TLS 1.3 over TCP.

pub mod frames;
pub mod initial;
pub mod packet;

named_enum! {
    /// A QUIC version whose Initial packets the sensor decrypts.
    pub enum QuicVersion {
        /// RFC 9000.
        V1 => "1",
        /// RFC 9369.
        V2 => "2",
    }
}

impl QuicVersion {
    /// The version of a long header's version field.
    pub fn from_wire(v: u32) -> Option<Self> {
        match v {
            0x0000_0001 => Some(Self::V1),
            0x6b33_43cf => Some(Self::V2),
            _ => None,
        }
    }

    pub fn wire(self) -> u32 {
        match self {
            Self::V1 => 0x0000_0001,
            Self::V2 => 0x6b33_43cf,
        }
    }

    /// The packet kind of a long header's two type bits (RFC 9000 §17.2, RFC 9369 §3.2: version
    /// 2 numbers them differently).
    pub fn long_kind(self, bits: u8) -> packet::Kind {
        use packet::Kind::*;
        match (self, bits & 3) {
            (Self::V1, 0) | (Self::V2, 1) => Initial,
            (Self::V1, 1) | (Self::V2, 2) => ZeroRtt,
            (Self::V1, 2) | (Self::V2, 3) => Handshake,
            _ => Retry,
        }
    }

    /// The two type bits of a kind (for building packets in tests and fuzzers).
    pub fn long_bits(self, kind: packet::Kind) -> u8 {
        (0..4).find(|&b| self.long_kind(b) == kind).unwrap_or(0)
    }
}
