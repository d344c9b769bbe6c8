//! Counting what the server sends in its TLS 1.3 encrypted flight, as the engine counts the
//! client's: the payload bytes of the server's application_data records before the client's
//! first one. A wrapper around the probe's TCP stream that reads record headers passing by.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use sensor_core::tls::record::content_type::APPLICATION_DATA;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Record headers in one direction of a byte stream.
#[derive(Debug, Default)]
struct Records {
    header: [u8; 5],
    have: usize,
    /// Payload bytes of the current record still to pass.
    remaining: usize,
}

impl Records {
    /// Feed bytes; call `on_header(content type, payload length)` for every header completed.
    fn feed(&mut self, mut data: &[u8], on_header: &mut dyn FnMut(u8, usize)) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                self.remaining -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                self.have = 0;
                let len = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                on_header(self.header[0], len);
                self.remaining = len;
            }
        }
    }
}

/// What the counter saw, shared with the probe.
#[derive(Debug, Default)]
pub struct Flight {
    server_bytes: AtomicU64,
    client_sent: AtomicBool,
}

impl Flight {
    /// Payload bytes of the server's application_data records before the client's first.
    pub fn server_bytes(&self) -> u64 {
        self.server_bytes.load(Ordering::Relaxed)
    }
}

/// A stream that counts the server's flight as it passes.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    reads: Records,
    writes: Records,
    flight: Arc<Flight>,
}

impl<S> Counted<S> {
    pub fn new(inner: S) -> (Self, Arc<Flight>) {
        let flight = Arc::new(Flight::default());
        (
            Self {
                inner,
                reads: Records::default(),
                writes: Records::default(),
                flight: flight.clone(),
            },
            flight,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let this = &mut *self;
            let flight = &this.flight;
            this.reads.feed(&buf.filled()[before..], &mut |ty, len| {
                if ty == APPLICATION_DATA && !flight.client_sent.load(Ordering::Relaxed) {
                    flight.server_bytes.fetch_add(len as u64, Ordering::Relaxed);
                }
            });
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = polled {
            let this = &mut *self;
            let flight = &this.flight;
            this.writes.feed(&data[..n], &mut |ty, _| {
                if ty == APPLICATION_DATA {
                    flight.client_sent.store(true, Ordering::Relaxed);
                }
            });
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_across_reads_and_records_across_headers() {
        let mut r = Records::default();
        let mut seen = Vec::new();
        let stream = [
            &[22u8, 3, 3, 0, 2, 1, 2][..],
            &[23, 3, 3, 0, 3, 9, 9, 9],
            &[23, 3, 3, 1, 0],
        ]
        .concat();
        for chunk in stream.chunks(3) {
            r.feed(chunk, &mut |ty, len| seen.push((ty, len)));
        }
        assert_eq!(seen, [(22, 2), (23, 3), (23, 256)]);
    }
}
