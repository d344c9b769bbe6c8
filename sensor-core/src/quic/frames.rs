//! The frames an Initial packet may carry (RFC 9000 §12.4, §19): PADDING, PING, ACK, CRYPTO
//! and CONNECTION_CLOSE of the transport. Anything else in an Initial packet is a protocol
//! violation.

use super::packet::varint;

/// A frame the sensor uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Bytes of the TLS handshake at `offset` of the packet number space's CRYPTO stream.
    Crypto { offset: u64, data: &'a [u8] },
    /// The sender closes the connection. A TLS alert is error code 0x0100 + its description
    /// (RFC 9001 §4.8).
    ConnectionClose { error_code: u64 },
}

/// Why the frames of a packet could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame cut short")]
    Truncated,
    #[error("frame type {0:#x} is not allowed in an Initial packet")]
    NotAllowed(u64),
}

/// Read the frames of an Initial packet's plaintext, handing the ones that matter to `sink`.
/// Stops at the first error; what came before it was handed on.
pub fn read(mut b: &[u8], sink: &mut dyn FnMut(Frame<'_>)) -> Result<(), FrameError> {
    let next = |b: &mut &[u8]| -> Result<u64, FrameError> {
        let (v, n) = varint(b).ok_or(FrameError::Truncated)?;
        *b = &b[n..];
        Ok(v)
    };
    let take = |b: &mut &[u8], len: u64| -> Result<(), FrameError> {
        let len = usize::try_from(len).map_err(|_| FrameError::Truncated)?;
        *b = b.get(len..).ok_or(FrameError::Truncated)?;
        Ok(())
    };
    while !b.is_empty() {
        let ty = next(&mut b)?;
        match ty {
            0x00 | 0x01 => {}
            0x02 | 0x03 => {
                next(&mut b)?; // largest acknowledged
                next(&mut b)?; // delay
                let ranges = next(&mut b)?;
                next(&mut b)?; // first range
                // Each range takes at least two bytes: a count larger than what is left fails
                // at once rather than looping.
                for _ in 0..ranges {
                    next(&mut b)?; // gap
                    next(&mut b)?; // range length
                }
                if ty == 0x03 {
                    for _ in 0..3 {
                        next(&mut b)?; // ECN counts
                    }
                }
            }
            0x06 => {
                let offset = next(&mut b)?;
                let len = next(&mut b)?;
                let n = usize::try_from(len).map_err(|_| FrameError::Truncated)?;
                let data = b.get(..n).ok_or(FrameError::Truncated)?;
                b = &b[n..];
                sink(Frame::Crypto { offset, data });
            }
            0x1c => {
                let error_code = next(&mut b)?;
                next(&mut b)?; // frame type
                let reason = next(&mut b)?;
                take(&mut b, reason)?;
                sink(Frame::ConnectionClose { error_code });
            }
            other => return Err(FrameError::NotAllowed(other)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(b: &[u8]) -> (Vec<String>, Result<(), FrameError>) {
        let mut out = Vec::new();
        let r = read(b, &mut |f| out.push(format!("{f:?}")));
        (out, r)
    }

    #[test]
    fn reads_ack_crypto_close_and_padding() {
        let (out, r) = frames(&[
            0x02, 0x05, 0x00, 0x01, 0x00, 0x01, 0x00, // ACK with one more range
            0x06, 0x00, 0x03, 1, 2, 3, // CRYPTO at 0
            0x06, 0x40, 0x64, 0x01, 9, // CRYPTO at 100
            0x1c, 0x41, 0x2a, 0x06, 0x02, b'n', b'o', // CONNECTION_CLOSE bad_certificate
            0, 0, 0,
        ]);
        assert_eq!(r, Ok(()));
        assert_eq!(
            out,
            [
                "Crypto { offset: 0, data: [1, 2, 3] }",
                "Crypto { offset: 100, data: [9] }",
                "ConnectionClose { error_code: 298 }",
            ]
        );
    }

    #[test]
    fn an_ack_with_ranges_may_end_the_packet() {
        // Chromium's: an ACK with one more range as the packet's last frame.
        let (out, r) = frames(&[0x02, 0x04, 0x00, 0x01, 0x00, 0x01, 0x01]);
        assert_eq!((out.len(), r), (0, Ok(())));
        // A range count far beyond the bytes left fails, without looping.
        let (_, r) = frames(&[
            0x02, 0x04, 0x00, 0xbf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00,
        ]);
        assert_eq!(r, Err(FrameError::Truncated));
    }

    #[test]
    fn a_stream_frame_in_an_initial_is_refused() {
        let (out, r) = frames(&[0x06, 0x00, 0x01, 7, 0x08, 0x00]);
        assert_eq!(out.len(), 1);
        assert_eq!(r, Err(FrameError::NotAllowed(8)));
        assert_eq!(frames(&[0x06, 0x00, 0x05, 1]).1, Err(FrameError::Truncated));
    }
}
