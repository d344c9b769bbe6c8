//! Initial packet protection (RFC 9001 §5.2, RFC 9369 §3.3): keys derived from the client's
//! first Destination Connection ID, which anyone on the path can compute. rustls derives them
//! (`quic::Keys::initial`) and removes header protection and the AEAD; this module finds the
//! packet number and hands back the plaintext frames.

use rustls::{
    Side,
    quic::{DirectionalKeys, Keys, Version},
};

use super::{QuicVersion, packet::Packet};

/// Why an Initial packet could not be decrypted. A receiver drops such a packet too: it is
/// corrupt, injected, or protected with other keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    #[error("packet too short to sample for header protection")]
    TooShort,
    #[error("header protection could not be removed")]
    HeaderProtection,
    #[error("the packet does not authenticate with these keys")]
    Authentication,
    #[error("reserved header bits are set")]
    ReservedBits,
}

/// The Initial keys of one connection, both directions.
pub struct InitialKeys {
    version: QuicVersion,
    /// The Destination Connection ID they come from.
    dcid: Vec<u8>,
    client: DirectionalKeys,
    server: DirectionalKeys,
}

impl std::fmt::Debug for InitialKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitialKeys")
            .field("version", &self.version)
            .field("dcid", &self.dcid)
            .finish_non_exhaustive()
    }
}

impl InitialKeys {
    /// The keys of a connection whose client chose `dcid` as its first Destination Connection
    /// ID (or the one a Retry gave it).
    pub fn new(version: QuicVersion, dcid: &[u8]) -> Self {
        let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
            .tls13()
            .expect("a TLS 1.3 suite");
        let quic = suite.quic.expect("ring's AES-128-GCM has QUIC keys");
        let v = match version {
            QuicVersion::V1 => Version::V1,
            QuicVersion::V2 => Version::V2,
        };
        // From the client's side: local is what the client sends, remote what the server does.
        let Keys { local, remote } = Keys::initial(v, suite, quic, dcid, Side::Client);
        Self {
            version,
            dcid: dcid.to_vec(),
            client: local,
            server: remote,
        }
    }

    pub fn version(&self) -> QuicVersion {
        self.version
    }

    pub fn dcid(&self) -> &[u8] {
        &self.dcid
    }

    /// Decrypt an Initial packet sent by the client (`from_client`) or the server. `largest` is
    /// the largest packet number decrypted so far in that direction, to expand the truncated
    /// one. `scratch` is reused for the copy that is decrypted in place. Returns the packet
    /// number and the frames.
    pub fn decrypt<'s>(
        &self,
        from_client: bool,
        packet: &Packet<'_>,
        largest: Option<u64>,
        scratch: &'s mut Vec<u8>,
    ) -> Result<(u64, &'s [u8]), DecryptError> {
        let keys = if from_client {
            &self.client
        } else {
            &self.server
        };
        let pn_offset = packet.pn_offset;
        let sample_len = keys.header.sample_len();
        // The sample starts 4 bytes after the packet number's start (RFC 9001 §5.4.2).
        let sample_at = pn_offset + 4;
        if packet.bytes.len() < sample_at + sample_len {
            return Err(DecryptError::TooShort);
        }
        scratch.clear();
        scratch.extend_from_slice(packet.bytes);
        let (head, rest) = scratch.split_at_mut(pn_offset);
        let sample = &packet.bytes[sample_at..sample_at + sample_len];
        keys.header
            .decrypt_in_place(sample, &mut head[0], &mut rest[..4])
            .map_err(|_| DecryptError::HeaderProtection)?;
        let first = scratch[0];
        // Reserved bits (0x0c) must be zero once protection is off (RFC 9000 §17.2): only
        // checked after the AEAD, which is what tells an injected packet.
        let pn_len = usize::from(first & 3) + 1;
        let mut truncated = 0u64;
        for &b in &scratch[pn_offset..pn_offset + pn_len] {
            truncated = (truncated << 8) | u64::from(b);
        }
        let pn = expand_packet_number(largest, truncated, pn_len * 8);
        let (header, payload) = scratch.split_at_mut(pn_offset + pn_len);
        let plain = keys
            .packet
            .decrypt_in_place(pn, header, payload)
            .map_err(|_| DecryptError::Authentication)?;
        if first & 0x0c != 0 {
            return Err(DecryptError::ReservedBits);
        }
        Ok((pn, plain))
    }

    /// Protect an Initial packet: `header` ends with the packet number (of `pn_len` bytes,
    /// the low bits of its first byte), and `payload` is the frames. What a test or a fuzzer
    /// needs to make packets a receiver would take.
    pub fn encrypt(&self, from_client: bool, header: &[u8], pn: u64, payload: &[u8]) -> Vec<u8> {
        let keys = if from_client {
            &self.client
        } else {
            &self.server
        };
        let pn_len = usize::from(header[0] & 3) + 1;
        let pn_offset = header.len() - pn_len;
        let mut out = header.to_vec();
        let mut body = payload.to_vec();
        let tag = keys
            .packet
            .encrypt_in_place(pn, header, &mut body)
            .expect("an Initial packet fits the AEAD");
        out.extend_from_slice(&body);
        out.extend_from_slice(tag.as_ref());
        let sample_at = pn_offset + 4;
        let sample = out[sample_at..sample_at + keys.header.sample_len()].to_vec();
        let (head, rest) = out.split_at_mut(pn_offset);
        keys.header
            .encrypt_in_place(&sample, &mut head[0], &mut rest[..pn_len])
            .expect("header protection");
        out
    }
}

/// RFC 9000 Appendix A.3: the full packet number closest to the next expected one.
pub fn expand_packet_number(largest: Option<u64>, truncated: u64, bits: usize) -> u64 {
    let expected = largest.map_or(0, |l| l + 1);
    let win = 1u64 << bits;
    let hwin = win / 2;
    let mask = win - 1;
    let candidate = (expected & !mask) | truncated;
    if candidate.saturating_add(hwin) <= expected && candidate < (1u64 << 62) - win {
        candidate + win
    } else if candidate > expected.saturating_add(hwin) && candidate >= win {
        candidate - win
    } else {
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quic::packet;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn packet_numbers_of_rfc_9000_appendix_a3() {
        assert_eq!(
            expand_packet_number(Some(0xa82f30ea), 0x9b32, 16),
            0xa82f9b32
        );
        assert_eq!(expand_packet_number(None, 0, 8), 0);
        assert_eq!(expand_packet_number(Some(0xff), 0x01, 8), 0x101);
    }

    /// RFC 9001 Appendix A.3: the server's Initial packet, protected with the keys of the
    /// client's DCID 8394c8f03e515708 (version 1).
    #[test]
    fn decrypts_the_server_initial_of_rfc_9001_appendix_a3() {
        let wire = hex(
            "cf000000010008f067a5502a4262b5004075c0d95a482cd0991cd25b0aac406a
             5816b6394100f37a1c69797554780bb38cc5a99f5ede4cf73c3ec2493a1839b3
             dbcba3f6ea46c5b7684df3548e7ddeb9c3bf9c73cc3f3bded74b562bfb19fb84
             022f8ef4cdd93795d77d06edbb7aaf2f58891850abbdca3d20398c276456cbc4
             2158407dd074ee",
        );
        let keys = InitialKeys::new(QuicVersion::V1, &hex("8394c8f03e515708"));
        let p = packet::parse(&wire).unwrap();
        assert_eq!(p.kind, packet::Kind::Initial);
        assert_eq!(p.scid, hex("f067a5502a4262b5"));
        let mut scratch = Vec::new();
        let (pn, plain) = keys.decrypt(false, &p, None, &mut scratch).unwrap();
        assert_eq!(pn, 1);
        let want = hex(
            "02000000000600405a020000560303eefce7f7b37ba1d1632e96677825ddf739
             88cfc79825df566dc5430b9a045a1200130100002e00330024001d00209d3c94
             0d89690b84d08a60993c144eca684d1081287c834d5311bcf32bb9da1a002b00
             020304",
        );
        assert_eq!(plain, &want[..]);
        // The client's keys do not open it.
        assert_eq!(
            keys.decrypt(true, &p, None, &mut scratch),
            Err(DecryptError::Authentication)
        );
    }

    #[test]
    fn what_encrypt_protects_decrypt_opens_in_both_versions() {
        for v in QuicVersion::ALL {
            let keys = InitialKeys::new(*v, b"\x01\x02\x03\x04\x05\x06\x07\x08");
            let mut header = vec![0xc1 | (v.long_bits(packet::Kind::Initial) << 4)];
            header.extend(v.wire().to_be_bytes());
            header.extend([8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0]);
            let payload = [
                0x06, 0x00, 0x04, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ];
            let len = 2 + payload.len() + 16;
            header.extend([0x40 | (len >> 8) as u8, len as u8, 0x00, 0x07]);
            let wire = keys.encrypt(true, &header, 7, &payload);
            let p = packet::parse(&wire).unwrap();
            assert_eq!(p.kind, packet::Kind::Initial, "{v}");
            assert_eq!(p.quic_version(), Some(*v));
            let mut scratch = Vec::new();
            let (pn, plain) = keys.decrypt(true, &p, Some(3), &mut scratch).unwrap();
            assert_eq!((pn, plain), (7, &payload[..]), "{v}");
        }
    }
}
