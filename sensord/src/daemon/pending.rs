//! Events waiting for their commit: in the order they came, bounded in bytes.
//!
//! While the journal's commits fail (a full disk, an I/O error), events stay here and are
//! committed, in order, when a retry succeeds: an event is either acknowledged (committed, then
//! published) or counted as dropped, never lost with only a log line. Past the bound, new events
//! are dropped and counted; the ones kept are the oldest (the start of whatever filled the
//! disk), as the capture's own queue does when it is full.

use std::collections::VecDeque;

use crate::journal::NewEvent;

/// Events waiting for a commit.
pub struct Pending {
    queue: VecDeque<NewEvent>,
    /// [`NewEvent::approx_bytes`] of the events in `queue`.
    bytes: usize,
    max_bytes: usize,
    dropped: u64,
}

impl Pending {
    /// At most `max_bytes` of events (see [`NewEvent::approx_bytes`]); one event is always
    /// taken into an empty queue whatever its size, so that a writer whose commits succeed
    /// never drops one.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            bytes: 0,
            max_bytes,
            dropped: 0,
        }
    }

    /// Add an event at the end; `false` when it was dropped (the bound).
    pub fn push(&mut self, event: NewEvent) -> bool {
        let size = event.approx_bytes();
        if !self.queue.is_empty() && self.bytes.saturating_add(size) > self.max_bytes {
            self.dropped += 1;
            return false;
        }
        self.bytes += size;
        self.queue.push_back(event);
        true
    }

    /// The first `n` events (fewer if there are fewer), in order.
    pub fn front(&mut self, n: usize) -> &[NewEvent] {
        let n = n.min(self.queue.len());
        &self.queue.make_contiguous()[..n]
    }

    /// Take the first `n` events off, in order.
    pub fn pop_front(&mut self, n: usize) -> impl Iterator<Item = NewEvent> + '_ {
        let n = n.min(self.queue.len());
        let taken: usize = self.queue.iter().take(n).map(NewEvent::approx_bytes).sum();
        self.bytes -= taken;
        self.queue.drain(..n)
    }

    pub fn set_max_bytes(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes;
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Events dropped at the bound, since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use sensor_core::event::Verdict;

    use super::*;
    use crate::journal::testing;

    #[test]
    fn keeps_the_oldest_within_the_bound_and_counts_the_rest() {
        let size = testing::event(0, Verdict::Clean).approx_bytes();
        let mut p = Pending::new(size * 10 + size / 2);
        for i in 0..25 {
            p.push(testing::event(i, Verdict::Clean));
        }
        assert_eq!((p.len(), p.dropped()), (10, 15));
        assert!(p.bytes() <= p.max_bytes());
        let names: Vec<String> = p
            .pop_front(4)
            .map(|e| e.meta.sni.unwrap_or_default())
            .collect();
        assert_eq!(names, ["h0.test", "h1.test", "h2.test", "h3.test"]);
        assert_eq!(p.front(100).len(), 6);
        assert_eq!(p.front(1)[0].meta.sni.as_deref(), Some("h4.test"));
        // Room again: taken at the end, after the ones waiting.
        assert!(p.push(testing::event(99, Verdict::Clean)));
        assert_eq!(p.pop_front(100).count(), 7);
        assert_eq!(p.bytes(), 0);
    }

    #[test]
    fn an_event_larger_than_the_bound_still_passes_alone() {
        let mut p = Pending::new(1);
        assert!(p.push(testing::event(1, Verdict::Clean)));
        assert!(!p.push(testing::event(2, Verdict::Clean)));
        assert_eq!(p.dropped(), 1);
    }
}
