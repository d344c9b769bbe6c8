//! TCP stream reassembly for one direction of one flow.
//!
//! Pure and bounded: a [`Stream`] turns segments in any order, with retransmissions and overlaps,
//! into the in-order byte stream, holding at most [`StreamLimits::max_pending_bytes`] bytes and
//! [`StreamLimits::max_pending_segments`] segments out of order. When a bound is hit it gives up
//! on the hole, reports a [`Chunk::Gap`] and carries on after it.

use std::collections::BTreeMap;

/// Bounds of one direction's out-of-order buffer.
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    /// Bytes held out of order at most.
    pub max_pending_bytes: usize,
    /// Segments held out of order at most.
    pub max_pending_segments: usize,
    /// Segments further ahead than this many bytes are not held.
    pub max_window: u64,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_pending_bytes: 256 * 1024,
            max_pending_segments: 256,
            max_window: 1 << 20,
        }
    }
}

/// What a stream delivers, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// The next bytes of the stream.
    Data(&'a [u8]),
    /// This many bytes were never seen and will not be.
    Gap(u64),
}

/// Counters of what a stream saw and did. Summed up per engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Bytes that arrived again after they had been delivered.
    pub duplicate_bytes: u64,
    /// Segments held because they arrived ahead of a hole.
    pub out_of_order_segments: u64,
    /// Segments not held because a bound was hit or they were too far ahead.
    pub dropped_segments: u64,
    /// Holes given up on.
    pub gaps: u64,
}

/// One direction of a TCP connection.
#[derive(Debug, Default)]
pub struct Stream {
    /// Sequence number of stream offset 0, once known.
    base: Option<u32>,
    /// Offset of the next byte to deliver.
    next: u64,
    /// Out-of-order data by offset.
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    /// Offset just past the FIN, once seen.
    fin_at: Option<u64>,
    stats: StreamStats,
}

impl Stream {
    /// A stream that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters so far.
    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// Bytes held out of order.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Offset of the next byte to deliver: the number of bytes delivered or skipped.
    pub fn delivered(&self) -> u64 {
        self.next
    }

    /// Whether a FIN was seen and everything before it delivered.
    pub fn is_finished(&self) -> bool {
        self.fin_at.is_some_and(|f| self.next >= f)
    }

    /// A SYN with sequence number `seq`: the data starts at `seq + 1`.
    pub fn syn(&mut self, seq: u32) {
        if self.base.is_none() {
            self.base = Some(seq.wrapping_add(1));
        }
    }

    /// Offset of `seq`, relative to the next byte expected; wraps correctly within +-2 GiB.
    fn offset_of(&self, seq: u32) -> Option<u64> {
        let base = self.base?;
        let next_seq = base.wrapping_add(self.next as u32);
        let delta = seq.wrapping_sub(next_seq) as i32;
        let off = self.next as i64 + i64::from(delta);
        u64::try_from(off).ok()
    }

    /// Take a segment's payload and FIN; hand the in-order bytes that become available to `sink`.
    ///
    /// `missing` bytes followed `payload` in the segment but were not captured; they become a
    /// [`Chunk::Gap`] once the stream reaches them.
    pub fn push(
        &mut self,
        seq: u32,
        payload: &[u8],
        missing: u32,
        fin: bool,
        limits: &StreamLimits,
        sink: &mut dyn FnMut(Chunk<'_>),
    ) {
        if self.base.is_none() {
            self.base = Some(seq);
        }
        let Some(off) = self.offset_of(seq) else {
            // Before the start of the stream: an old retransmission.
            self.stats.duplicate_bytes += payload.len() as u64;
            return;
        };
        let end = off + payload.len() as u64;
        if fin && self.fin_at.is_none() {
            self.fin_at = Some(end + u64::from(missing));
        }
        if missing > 0 {
            self.push_data(off, end, payload, limits, sink);
            if self.next == end {
                self.stats.gaps += 1;
                sink(Chunk::Gap(u64::from(missing)));
                self.next += u64::from(missing);
                self.drain(sink);
            }
            return;
        }
        self.push_data(off, end, payload, limits, sink);
    }

    fn push_data(
        &mut self,
        off: u64,
        end: u64,
        payload: &[u8],
        limits: &StreamLimits,
        sink: &mut dyn FnMut(Chunk<'_>),
    ) {
        if payload.is_empty() {
            return;
        }
        if end <= self.next {
            self.stats.duplicate_bytes += payload.len() as u64;
            return;
        }
        if off <= self.next {
            let skip = (self.next - off) as usize;
            self.stats.duplicate_bytes += skip as u64;
            self.next = end;
            sink(Chunk::Data(&payload[skip..]));
            self.drain(sink);
            return;
        }
        self.hold(off, payload, limits, sink);
    }

    /// Keep an out-of-order segment, within the limits. When it does not fit, give up on holes
    /// (oldest first) until it does or until it is in order.
    fn hold(
        &mut self,
        off: u64,
        payload: &[u8],
        limits: &StreamLimits,
        sink: &mut dyn FnMut(Chunk<'_>),
    ) {
        if off - self.next > limits.max_window {
            self.stats.dropped_segments += 1;
            return;
        }
        if let Some(existing) = self.pending.get(&off)
            && existing.len() >= payload.len()
        {
            self.stats.duplicate_bytes += payload.len() as u64;
            return;
        }
        let len = payload.len();
        let end = off + len as u64;
        loop {
            // Skipping holes moves the in-order edge; look at the segment again each time.
            if end <= self.next {
                self.stats.duplicate_bytes += len as u64;
                return;
            }
            if off <= self.next {
                let skip = (self.next - off) as usize;
                self.stats.duplicate_bytes += skip as u64;
                self.next = end;
                sink(Chunk::Data(&payload[skip..]));
                self.drain(sink);
                return;
            }
            let replaced = self.pending.get(&off).map_or(0, Vec::len);
            let fits = self.pending_bytes - replaced + len <= limits.max_pending_bytes
                && self.pending.len() < limits.max_pending_segments;
            if fits {
                break;
            }
            if self.pending.is_empty() {
                // This segment alone is over the bound: give up on the hole before it.
                self.stats.gaps += 1;
                sink(Chunk::Gap(off - self.next));
                self.next = off;
            } else {
                self.skip_hole(sink);
            }
        }
        self.stats.out_of_order_segments += 1;
        if let Some(old) = self.pending.insert(off, payload.to_vec()) {
            self.pending_bytes -= old.len();
        }
        self.pending_bytes += len;
    }

    /// Deliver every held segment that now touches the in-order edge.
    fn drain(&mut self, sink: &mut dyn FnMut(Chunk<'_>)) {
        while let Some(entry) = self.pending.first_entry() {
            let off = *entry.key();
            if off > self.next {
                break;
            }
            let data = entry.remove();
            self.pending_bytes -= data.len();
            let end = off + data.len() as u64;
            if end <= self.next {
                self.stats.duplicate_bytes += data.len() as u64;
                continue;
            }
            let skip = (self.next - off) as usize;
            self.stats.duplicate_bytes += skip as u64;
            self.next = end;
            sink(Chunk::Data(&data[skip..]));
        }
    }

    /// Give up on the hole before the first held segment: report it as a gap and deliver on.
    pub fn skip_hole(&mut self, sink: &mut dyn FnMut(Chunk<'_>)) {
        let Some((&off, _)) = self.pending.first_key_value() else {
            return;
        };
        if off > self.next {
            self.stats.gaps += 1;
            sink(Chunk::Gap(off - self.next));
            self.next = off;
        }
        self.drain(sink);
    }

    /// Give up on every hole: deliver all that is held. Used when the flow ends.
    pub fn flush(&mut self, sink: &mut dyn FnMut(Chunk<'_>)) {
        while !self.pending.is_empty() {
            self.skip_hole(sink);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(stream: &mut Stream, segs: &[(u32, &[u8])]) -> (Vec<u8>, Vec<u64>) {
        let limits = StreamLimits::default();
        let mut data = Vec::new();
        let mut gaps = Vec::new();
        for (seq, payload) in segs {
            stream.push(*seq, payload, 0, false, &limits, &mut |c| match c {
                Chunk::Data(d) => data.extend_from_slice(d),
                Chunk::Gap(n) => gaps.push(n),
            });
        }
        (data, gaps)
    }

    #[test]
    fn in_order_and_retransmissions() {
        let mut s = Stream::new();
        s.syn(99);
        let (data, gaps) = collect(
            &mut s,
            &[
                (100, b"hello"),
                (100, b"hello"),
                (103, b"lo wor"),
                (109, b"ld"),
            ],
        );
        assert_eq!(data, b"hello world");
        assert!(gaps.is_empty());
        assert_eq!(s.stats().duplicate_bytes, 5 + 2);
    }

    #[test]
    fn out_of_order_is_reordered() {
        let mut s = Stream::new();
        s.syn(0);
        let (data, _) = collect(&mut s, &[(7, b"world"), (4, b"lo "), (1, b"hel")]);
        assert_eq!(data, b"hello world");
        assert_eq!(s.pending_bytes(), 0);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut s = Stream::new();
        s.syn(u32::MAX - 2);
        let (data, _) = collect(&mut s, &[(u32::MAX - 1, b"ab"), (0, b"cd")]);
        assert_eq!(data, b"abcd");
    }

    #[test]
    fn a_hole_that_never_fills_becomes_a_gap_at_flush() {
        let mut s = Stream::new();
        s.syn(0);
        let (data, _) = collect(&mut s, &[(1, b"ab"), (10, b"xy")]);
        assert_eq!(data, b"ab");
        let mut out = Vec::new();
        s.flush(&mut |c| out.push(format!("{c:?}")));
        assert_eq!(out, vec!["Gap(7)", "Data([120, 121])"]);
        assert_eq!(s.stats().gaps, 1);
    }

    #[test]
    fn ten_thousand_overlapping_segments_stay_bounded() {
        let mut s = Stream::new();
        s.syn(0);
        let limits = StreamLimits::default();
        let payload = vec![7u8; 1000];
        let mut delivered = 0u64;
        // Every segment starts ahead of a hole at 1 and overlaps its neighbours.
        for i in 0..10_000u32 {
            s.push(2 + (i % 5000) * 37, &payload, 0, false, &limits, &mut |c| {
                if let Chunk::Data(d) = c {
                    delivered += d.len() as u64;
                }
            });
            assert!(s.pending_bytes() <= limits.max_pending_bytes);
        }
        assert!(s.stats().gaps > 0);
        assert!(delivered > 0);
    }
}
