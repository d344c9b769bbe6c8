//! Certificates from the `d2i_X509` uprobe: chunks in, whole DER certificates out. Pure and
//! bounded.

use std::collections::HashMap;

/// One chunk, as the kernel sent it.
#[derive(Clone, Copy, Debug)]
pub struct CertChunk<'a> {
    /// Names the certificate, with `pid_tgid`.
    pub ts_ns: u64,
    pub pid_tgid: u64,
    /// The client socket the thread last sent a ClientHello on (0 if unknown).
    pub cookie: u64,
    pub offset: u32,
    /// Bytes captured in all (after a cut at the kernel's maximum).
    pub total_len: u32,
    /// The DER's full length.
    pub der_len: u64,
    pub data: &'a [u8],
}

/// A whole certificate an OpenSSL client parsed during a handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UprobeCert {
    pub cookie: u64,
    pub pid: u32,
    pub der: Vec<u8>,
}

/// Counters of the assembler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AssemblyStats {
    pub certs: u64,
    /// Certificates the kernel cut (longer than its maximum): not usable.
    pub truncated: u64,
    /// Partial certificates given up (a chunk lost, or too many at once).
    pub abandoned: u64,
}

/// Partial certificates held at once, at most.
const MAX_PARTIAL: usize = 64;

struct Partial {
    buf: Vec<u8>,
    total: u32,
}

/// Puts chunks back together.
#[derive(Default)]
pub struct CertAssembler {
    partial: HashMap<(u64, u64), Partial>,
    pub stats: AssemblyStats,
}

impl CertAssembler {
    /// Take a chunk; a certificate when it completes one.
    pub fn push(&mut self, c: &CertChunk<'_>) -> Option<UprobeCert> {
        let key = (c.pid_tgid, c.ts_ns);
        if c.offset == 0 {
            // The kernel never sends more than MAX_CERT_LEN; a record that says so is not
            // believed (64 partial certificates of at most 32 KiB bound the memory).
            if u64::from(c.total_len) < c.der_len
                || c.total_len as usize > sensor_common::MAX_CERT_LEN
            {
                // Cut by the kernel: the chunks come, but the certificate is not whole.
                self.stats.truncated += 1;
                return None;
            }
            if self.partial.len() >= MAX_PARTIAL {
                self.stats.abandoned += self.partial.len() as u64;
                self.partial.clear();
            }
            self.partial.insert(
                key,
                Partial {
                    buf: Vec::with_capacity(c.total_len as usize),
                    total: c.total_len,
                },
            );
        }
        let p = self.partial.get_mut(&key)?;
        if p.buf.len() != c.offset as usize || p.total != c.total_len {
            self.partial.remove(&key);
            self.stats.abandoned += 1;
            return None;
        }
        p.buf.extend_from_slice(c.data);
        if p.buf.len() < p.total as usize {
            return None;
        }
        let p = self.partial.remove(&key)?;
        if p.buf.len() != p.total as usize {
            self.stats.abandoned += 1;
            return None;
        }
        self.stats.certs += 1;
        Some(UprobeCert {
            cookie: c.cookie,
            pid: (c.pid_tgid >> 32) as u32,
            der: p.buf,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(ts: u64, offset: u32, total: u32, data: &[u8]) -> CertChunk<'_> {
        CertChunk {
            ts_ns: ts,
            pid_tgid: 7 << 32 | 8,
            cookie: 99,
            offset,
            total_len: total,
            der_len: u64::from(total),
            data,
        }
    }

    #[test]
    fn chunks_make_a_certificate() {
        let mut a = CertAssembler::default();
        assert_eq!(a.push(&chunk(1, 0, 6, b"abc")), None);
        let cert = a.push(&chunk(1, 3, 6, b"def")).unwrap();
        assert_eq!(cert.der, b"abcdef");
        assert_eq!((cert.cookie, cert.pid), (99, 7));
        assert_eq!(a.push(&chunk(2, 0, 2, b"xy")).unwrap().der, b"xy");
        assert_eq!(a.stats.certs, 2);
    }

    #[test]
    fn a_lost_chunk_or_a_cut_certificate_gives_nothing() {
        let mut a = CertAssembler::default();
        assert_eq!(a.push(&chunk(1, 0, 9, b"abc")), None);
        assert_eq!(a.push(&chunk(1, 6, 9, b"ghi")), None);
        assert_eq!(a.stats.abandoned, 1);
        let mut cut = chunk(3, 0, 3, b"abc");
        cut.der_len = 100_000;
        assert_eq!(a.push(&cut), None);
        assert_eq!(a.stats.truncated, 1);
        // A stray middle chunk.
        assert_eq!(a.push(&chunk(4, 3, 6, b"def")), None);
    }
}
