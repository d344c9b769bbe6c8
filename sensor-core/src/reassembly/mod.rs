//! TCP stream reassembly for one direction of one flow.
//!
//! Pure and bounded: a [`Stream`] turns segments in any order, with retransmissions and overlaps,
//! into the in-order byte stream, holding at most [`StreamLimits::max_pending_bytes`] bytes and
//! [`StreamLimits::max_pending_segments`] segments out of order. When a bound is hit it gives up
//! on the hole, reports a [`Chunk::Gap`] and carries on after it.
//!
//! The same bytes sent twice with different content are a conflict: which copy a receiver keeps
//! depends on its TCP stack and on timing, so what the sensor delivers may not be what the
//! client read. Conflicts are counted ([`StreamStats::conflicts`]); to see them against bytes
//! already delivered, a stream keeps a copy of its first [`StreamLimits::max_history`] bytes
//! (the handshake).

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
    /// Delivered bytes kept to compare retransmissions with (from the stream's start).
    pub max_history: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        // Linux holds as much out of order as the receive buffer allows (megabytes); a
        // handshake's worth is what matters here, in as many small segments as a server cares
        // to send.
        Self {
            max_pending_bytes: 1 << 20,
            max_pending_segments: 4096,
            max_window: 4 << 20,
            max_history: 64 * 1024,
        }
    }
}

/// Why bytes of a stream were skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapCause {
    /// They never arrived (or the capture cut them).
    Missing,
    /// More was held out of order than the limits allow.
    OutOfOrder,
}

/// What a stream delivers, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// The next bytes of the stream.
    Data(&'a [u8]),
    /// This many bytes were never seen and will not be.
    Gap(u64, GapCause),
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
    /// Bytes seen twice with different content.
    pub conflicts: u64,
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
    /// The first delivered bytes (up to `max_history`), offset 0 first.
    history: Vec<u8>,
    /// Offset just past everything the stream was given: data, bytes cut from segments, and
    /// the FIN (which takes a sequence number).
    seen_end: u64,
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

    /// Bytes held: out of order, and the history.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes + self.history.len()
    }

    /// Offset of the next byte to deliver: the number of bytes delivered or skipped.
    pub fn delivered(&self) -> u64 {
        self.next
    }

    /// The sequence number just past everything the stream was given, once it has a start.
    pub fn seq_end(&self) -> Option<u32> {
        self.base.map(|b| b.wrapping_add(self.seen_end as u32))
    }

    /// Whether the stream was given nothing yet (no data, no FIN); where a receiver stood
    /// does not count.
    pub fn is_unsent(&self) -> bool {
        self.seen_end == 0 && self.pending.is_empty()
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

    /// A receiver of this stream expected `seq` next: it had taken every byte before. Where
    /// nothing has arrived yet, the stream starts there (its first bytes may still come, out of
    /// order). The number of bytes the receiver took that this stream was never given.
    pub fn received_to(&mut self, seq: u32) -> u64 {
        if self.base.is_none() {
            self.base = Some(seq);
            return 0;
        }
        self.offset_of(seq)
            .map_or(0, |off| off.saturating_sub(self.seen_end))
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
        self.seen_end = self.seen_end.max(end + u64::from(missing) + u64::from(fin));
        if fin && self.fin_at.is_none() {
            self.fin_at = Some(end + u64::from(missing));
        }
        if missing > 0 {
            self.push_data(off, end, payload, limits, sink);
            if self.next == end {
                self.stats.gaps += 1;
                sink(Chunk::Gap(u64::from(missing), GapCause::Missing));
                self.next += u64::from(missing);
                self.drain(limits, sink);
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
        debug_assert_eq!(end, off + payload.len() as u64);
        if self.take_at_edge(off, payload, limits, sink) {
            self.drain(limits, sink);
            return;
        }
        self.hold(off, payload, limits, sink);
    }

    /// Bytes at `off` that start at or before the in-order edge: those delivered already are
    /// compared with what was, the rest delivered. False, doing nothing, when they start
    /// beyond the edge.
    fn take_at_edge(
        &mut self,
        off: u64,
        data: &[u8],
        limits: &StreamLimits,
        sink: &mut dyn FnMut(Chunk<'_>),
    ) -> bool {
        if off > self.next {
            return false;
        }
        let end = off + data.len() as u64;
        let skip = (self.next.min(end) - off) as usize;
        self.stats.duplicate_bytes += skip as u64;
        self.compare_delivered(off, &data[..skip]);
        if skip < data.len() {
            self.deliver(&data[skip..], limits, sink);
        }
        true
    }

    /// Hand in-order bytes on, keeping the first of them as history.
    fn deliver(&mut self, data: &[u8], limits: &StreamLimits, sink: &mut dyn FnMut(Chunk<'_>)) {
        if self.history.len() as u64 == self.next {
            let room = limits.max_history.saturating_sub(self.history.len());
            self.history
                .extend_from_slice(&data[..data.len().min(room)]);
        }
        self.next += data.len() as u64;
        sink(Chunk::Data(data));
    }

    /// Bytes at `off` that were delivered already: a conflict when they differ from what was.
    fn compare_delivered(&mut self, off: u64, data: &[u8]) {
        let Ok(start) = usize::try_from(off) else {
            return;
        };
        let Some(kept) = self.history.get(start..) else {
            return;
        };
        let n = kept.len().min(data.len());
        if kept[..n] != data[..n] {
            self.stats.conflicts += 1;
        }
    }

    /// Held segments that overlap `[off, off + data.len())`: a conflict when they differ.
    fn compare_pending(&mut self, off: u64, data: &[u8]) {
        let end = off + data.len() as u64;
        let mut differ = false;
        // The one starting before `off` may reach into it; the others start inside.
        let before = self.pending.range(..off).next_back();
        for (&o, held) in before.into_iter().chain(self.pending.range(off..end)) {
            let (lo, hi) = (o.max(off), (o + held.len() as u64).min(end));
            if lo >= hi {
                continue;
            }
            let a = &held[(lo - o) as usize..(hi - o) as usize];
            let b = &data[(lo - off) as usize..(hi - off) as usize];
            differ |= a != b;
        }
        if differ {
            self.stats.conflicts += 1;
        }
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
        self.compare_pending(off, payload);
        if let Some(existing) = self.pending.get(&off)
            && existing.len() >= payload.len()
        {
            self.stats.duplicate_bytes += payload.len() as u64;
            return;
        }
        let len = payload.len();
        loop {
            // Skipping holes moves the in-order edge; look at the segment again each time.
            if self.take_at_edge(off, payload, limits, sink) {
                self.drain(limits, sink);
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
                sink(Chunk::Gap(off - self.next, GapCause::OutOfOrder));
                self.next = off;
            } else {
                self.skip_hole(GapCause::OutOfOrder, limits, sink);
            }
        }
        self.stats.out_of_order_segments += 1;
        if let Some(old) = self.pending.insert(off, payload.to_vec()) {
            self.pending_bytes -= old.len();
        }
        self.pending_bytes += len;
    }

    /// Deliver every held segment that now touches the in-order edge.
    fn drain(&mut self, limits: &StreamLimits, sink: &mut dyn FnMut(Chunk<'_>)) {
        while let Some(entry) = self.pending.first_entry() {
            let off = *entry.key();
            if off > self.next {
                break;
            }
            let data = entry.remove();
            self.pending_bytes -= data.len();
            self.take_at_edge(off, &data, limits, sink);
        }
    }

    /// Give up on the hole before the first held segment: report it as a gap and deliver on.
    pub fn skip_hole(
        &mut self,
        cause: GapCause,
        limits: &StreamLimits,
        sink: &mut dyn FnMut(Chunk<'_>),
    ) {
        let Some((&off, _)) = self.pending.first_key_value() else {
            return;
        };
        if off > self.next {
            self.stats.gaps += 1;
            sink(Chunk::Gap(off - self.next, cause));
            self.next = off;
        }
        self.drain(limits, sink);
    }

    /// Give up on every hole: deliver all that is held. Used when the flow ends.
    pub fn flush(&mut self, limits: &StreamLimits, sink: &mut dyn FnMut(Chunk<'_>)) {
        while !self.pending.is_empty() {
            self.skip_hole(GapCause::Missing, limits, sink);
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
                Chunk::Gap(n, _) => gaps.push(n),
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
        // Nothing held out of order; the history keeps what was delivered.
        assert_eq!(s.pending_bytes(), data.len());
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
        s.flush(&StreamLimits::default(), &mut |c| {
            out.push(format!("{c:?}"))
        });
        assert_eq!(out, vec!["Gap(7, Missing)", "Data([120, 121])"]);
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
            assert!(s.pending_bytes() <= limits.max_pending_bytes + limits.max_history);
        }
        assert!(s.stats().gaps > 0);
        assert!(delivered > 0);
    }

    #[test]
    fn a_server_flight_of_400_segments_first_one_last_has_no_gap() {
        let mut s = Stream::new();
        s.syn(0);
        let flight: Vec<u8> = (0..400 * 100).map(|i| (i % 251) as u8).collect();
        let mut segs: Vec<(u32, &[u8])> = flight
            .chunks(100)
            .enumerate()
            .map(|(i, c)| (1 + i as u32 * 100, c))
            .collect();
        segs.rotate_left(1); // the first segment comes last
        let (data, gaps) = collect(&mut s, &segs);
        assert!(gaps.is_empty(), "{gaps:?}");
        assert_eq!(data, flight);
    }

    #[test]
    fn a_receivers_mark_says_where_a_stream_starts_whose_first_bytes_come_last() {
        // No SYN (the kernel tap forwards none): without a mark, the first segment to arrive
        // would be taken for the start and the real start for an old copy.
        let mut s = Stream::new();
        assert_eq!(s.received_to(1), 0);
        let flight: Vec<u8> = (0..10 * 100).map(|i| (i % 251) as u8).collect();
        let mut segs: Vec<(u32, &[u8])> = flight
            .chunks(100)
            .enumerate()
            .map(|(i, c)| (1 + i as u32 * 100, c))
            .collect();
        segs.rotate_left(1);
        let (data, gaps) = collect(&mut s, &segs);
        assert!(gaps.is_empty(), "{gaps:?}");
        assert_eq!(data, flight);
        // The receiver has everything the stream was given; beyond that it took bytes unseen.
        assert_eq!(s.received_to(1 + 1000), 0);
        assert_eq!(s.received_to(1 + 1300), 300);
    }

    #[test]
    fn the_same_bytes_with_other_content_are_a_conflict() {
        // Against bytes delivered already.
        let mut s = Stream::new();
        s.syn(0);
        let (data, _) = collect(&mut s, &[(1, b"hello"), (1, b"hello"), (3, b"llo")]);
        assert_eq!(data, b"hello");
        assert_eq!(s.stats().conflicts, 0, "a faithful retransmission");
        collect(&mut s, &[(3, b"LLO")]);
        assert_eq!(s.stats().conflicts, 1);
        // Against bytes held out of order, overlapping at another offset.
        let mut s = Stream::new();
        s.syn(0);
        let (data, _) = collect(&mut s, &[(10, b"abcdef"), (12, b"cdXX")]);
        assert!(data.is_empty());
        assert_eq!(s.stats().conflicts, 1);
        // A partial overlap of the in-order edge.
        let mut s = Stream::new();
        s.syn(0);
        collect(&mut s, &[(1, b"abcd"), (3, b"zzEF")]);
        assert_eq!(s.stats().conflicts, 1);
    }
}
