//! Following the journal: "from sequence N, then live", for every subscriber (Watch streams
//! and the exporters).
//!
//! The journal writer commits a batch and only then publishes its events on a broadcast
//! channel. A follower reads the journal from where it is until it has caught up, then takes
//! live events; whenever the live channel skips ahead of it (it lagged, or events were
//! published while it was reading), it goes back to the journal. [`Cursor`] is that decision,
//! pure; [`Follower`] drives it with the journal file and the channel.
//!
//! What it promises: events come in sequence order, none twice, none skipped while it is in
//! the journal. Events retention deleted before the follower read them are counted
//! ([`Follower::lost`]), not silently passed over. A follower asked to start after a number the
//! journal never gave fails with [`JournalError::Ahead`] rather than wait, in silence, for the
//! journal to get there and then skip what came before (a journal started anew continues
//! above every number given before: [`super::recover`]).

use std::{collections::VecDeque, path::PathBuf, sync::Arc};

use tokio::sync::broadcast;

use super::{Journal, JournalError, StoredEvent};

/// Events read from the journal at once.
const PAGE: usize = 512;

/// Where a follower is: the next sequence number it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    next: u64,
    /// Sequence numbers skipped because the journal no longer had them (retention).
    lost: u64,
}

/// What to do with a live event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Live {
    /// Already delivered (read from the journal meanwhile): drop it.
    Old,
    /// The next one: deliver it.
    Next,
    /// Some before it were missed: read them from the journal first.
    Ahead,
}

impl Cursor {
    /// A cursor that delivers everything after sequence number `after`.
    pub fn after(after: u64) -> Self {
        Self {
            next: after.saturating_add(1),
            lost: 0,
        }
    }

    /// The last sequence number delivered (or the starting point).
    pub fn last(&self) -> u64 {
        self.next - 1
    }

    /// Sequence numbers that were gone from the journal when the follower got to them.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// A page the journal returned for [`Cursor::last`]: the events to deliver, in order.
    /// A page starting past the cursor means retention deleted the events in between.
    pub fn stored(&mut self, page: Vec<StoredEvent>) -> Vec<StoredEvent> {
        let mut out = Vec::with_capacity(page.len());
        for r in page {
            if r.seq < self.next {
                continue;
            }
            self.lost += r.seq - self.next;
            self.next = r.seq + 1;
            out.push(r);
        }
        out
    }

    /// Whether the cursor is past `last_given`, the highest number the journal ever gave:
    /// whatever it waits for would never come, and what comes would be skipped.
    pub fn ahead_of(&self, last_given: u64) -> bool {
        self.last() > last_given
    }

    /// A live event with sequence number `seq`.
    pub fn live(&mut self, seq: u64) -> Live {
        if seq < self.next {
            Live::Old
        } else if seq == self.next {
            self.next += 1;
            Live::Next
        } else {
            Live::Ahead
        }
    }
}

/// Reads the journal, then the live channel, with a [`Cursor`].
pub struct Follower {
    cursor: Cursor,
    journal: PathBuf,
    live: broadcast::Receiver<Arc<StoredEvent>>,
    /// Events of the last journal page, not delivered yet.
    backlog: VecDeque<StoredEvent>,
    /// The last journal read came back empty: take live events.
    caught_up: bool,
    /// The last sequence number handed out.
    delivered: u64,
}

impl Follower {
    /// Follow the journal at `journal` from after `after`. `live` must be subscribed before the
    /// first read, so that nothing published meanwhile is missed (`broadcast::Sender::subscribe`
    /// right before this call does it).
    pub fn new(journal: PathBuf, live: broadcast::Receiver<Arc<StoredEvent>>, after: u64) -> Self {
        Self {
            cursor: Cursor::after(after),
            journal,
            live,
            backlog: VecDeque::new(),
            caught_up: false,
            delivered: after,
        }
    }

    /// The last sequence number delivered (or the starting point): where a new follower
    /// resumes without a gap or a duplicate.
    pub fn last(&self) -> u64 {
        self.delivered
    }

    /// Events retention deleted before this follower read them.
    pub fn lost(&self) -> u64 {
        self.cursor.lost()
    }

    /// The next event; `None` when the live channel closed (sensord is stopping) and
    /// everything committed was delivered. Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Result<Option<Arc<StoredEvent>>, JournalError> {
        loop {
            if let Some(r) = self.backlog.pop_front() {
                self.delivered = r.seq;
                return Ok(Some(Arc::new(r)));
            }
            if !self.caught_up {
                let (page, last_given) =
                    read_after(self.journal.clone(), self.cursor.last()).await?;
                if page.is_empty() && self.cursor.ahead_of(last_given) {
                    return Err(JournalError::Ahead {
                        path: self.journal.display().to_string(),
                        after: self.cursor.last(),
                        last: last_given,
                    });
                }
                self.backlog.extend(self.cursor.stored(page));
                // Nothing new (an empty page, or only events already had): caught up.
                self.caught_up = self.backlog.is_empty();
                continue;
            }
            match self.live.recv().await {
                Ok(r) => match self.cursor.live(r.seq) {
                    Live::Old => {}
                    Live::Next => {
                        self.delivered = r.seq;
                        return Ok(Some(r));
                    }
                    Live::Ahead => self.caught_up = false,
                },
                Err(broadcast::error::RecvError::Lagged(_)) => self.caught_up = false,
                Err(broadcast::error::RecvError::Closed) => {
                    // A last look: what was committed before the close.
                    let (page, _) = read_after(self.journal.clone(), self.cursor.last()).await?;
                    if page.is_empty() {
                        return Ok(None);
                    }
                    self.backlog.extend(self.cursor.stored(page));
                }
            }
        }
    }
}

/// A page of the journal after `after`, and the highest number it ever gave, read on a
/// blocking thread.
async fn read_after(journal: PathBuf, after: u64) -> Result<(Vec<StoredEvent>, u64), JournalError> {
    let shown = journal.display().to_string();
    tokio::task::spawn_blocking(move || {
        let j = Journal::open_read(&journal)?;
        // The page first: a number given in between is then in `last`, never the other way.
        let page = j.read_after(after, PAGE)?;
        Ok((page, j.last_seq()?))
    })
    .await
    .map_err(|e| JournalError::Other {
        path: shown,
        message: format!("the reading task failed: {e}"),
    })?
}

#[cfg(test)]
mod tests {
    use sensor_core::event::Verdict;

    use super::*;
    use crate::journal::{NewEvent, path_in, testing};

    fn stored(seq: u64) -> StoredEvent {
        testing::event(seq, Verdict::Clean).stored(seq)
    }

    #[test]
    fn the_cursor_skips_what_it_has_and_catches_up_on_what_it_missed() {
        let mut c = Cursor::after(3);
        assert_eq!(c.live(2), Live::Old);
        assert_eq!(c.live(5), Live::Ahead);
        let page = c.stored(vec![stored(3), stored(4), stored(5)]);
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(c.live(5), Live::Old);
        assert_eq!(c.live(6), Live::Next);
        assert_eq!(c.last(), 6);
        // Retention deleted 7 and 8 before they were read.
        let page = c.stored(vec![stored(9)]);
        assert_eq!(page.len(), 1);
        assert_eq!((c.last(), c.lost()), (9, 2));
        assert!(!c.ahead_of(9));
        assert!(c.ahead_of(8));
    }

    /// The journal writer's order: commit, then publish.
    struct Writer {
        journal: Journal,
        live: broadcast::Sender<Arc<StoredEvent>>,
        made: u64,
    }

    impl Writer {
        fn open(path: &std::path::Path, buffer: usize) -> Self {
            let journal = Journal::open(path).unwrap();
            let made = journal.last_seq().unwrap();
            Self {
                journal,
                live: broadcast::channel(buffer).0,
                made,
            }
        }

        fn commit(&mut self, n: u64) {
            let batch: Vec<NewEvent> = (0..n)
                .map(|_| {
                    self.made += 1;
                    testing::event(self.made, Verdict::Clean)
                })
                .collect();
            let seqs = self.journal.append(&batch).unwrap();
            for (e, seq) in batch.into_iter().zip(seqs) {
                let _ = self.live.send(Arc::new(e.stored(seq)));
            }
        }
    }

    /// Take `n` events and check they are exactly the next `n` sequence numbers.
    async fn take(f: &mut Follower, n: u64) {
        for _ in 0..n {
            let want = f.last() + 1;
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), f.next())
                .await
                .expect("an event in time")
                .unwrap()
                .expect("not closed");
            assert_eq!(got.seq, want, "gap or duplicate");
            assert_eq!(
                got.event.handshake.server_name.as_deref(),
                Some(format!("h{want}.test").as_str())
            );
        }
    }

    #[tokio::test]
    async fn journal_then_live_with_lag_and_a_reconnect() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        let mut w = Writer::open(&path, 8);
        w.commit(20);
        let mut f = Follower::new(path.clone(), w.live.subscribe(), 5);
        take(&mut f, 15).await;
        // Live, then far more than the channel holds while the follower is not reading.
        w.commit(3);
        take(&mut f, 3).await;
        w.commit(100);
        take(&mut f, 100).await;
        assert_eq!(f.last(), 123);
        // A reconnect resumes after the last one delivered.
        let last = f.last();
        drop(f);
        w.commit(7);
        let mut again = Follower::new(path, w.live.subscribe(), last);
        take(&mut again, 7).await;
        assert_eq!((again.last(), again.lost()), (130, 0));
    }

    #[tokio::test]
    async fn retention_is_counted_not_skipped_silently() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        let mut w = Writer::open(&path, 8);
        w.commit(10);
        // Events 1..=6 (times 1001..=1006) are older than the retention allows.
        w.journal.prune(1_008, 1, 0).unwrap();
        let mut f = Follower::new(path, w.live.subscribe(), 2);
        let first = f.next().await.unwrap().unwrap();
        assert_eq!(first.seq, 7);
        assert_eq!(f.lost(), 4, "3, 4, 5 and 6 were deleted");
        take(&mut f, 3).await;
        w.commit(2);
        take(&mut f, 2).await;
    }

    #[tokio::test]
    async fn a_restart_of_sensord_loses_nothing_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        let mut w = Writer::open(&path, 64);
        w.commit(10);
        let mut f = Follower::new(path.clone(), w.live.subscribe(), 0);
        take(&mut f, 4).await;
        // sensord stops: the channel closes; the follower still gets what was committed.
        w.commit(3);
        drop(w);
        take(&mut f, 9).await;
        assert!(
            f.next().await.unwrap().is_none(),
            "closed after the last one"
        );
        // sensord starts again on the same journal: sequence numbers go on, a resuming
        // follower (an exporter with its persisted cursor) continues where it stopped.
        let mut w = Writer::open(&path, 64);
        let mut f = Follower::new(path, w.live.subscribe(), 13);
        w.commit(5);
        take(&mut f, 5).await;
        assert_eq!(f.last(), 18);
    }

    #[tokio::test]
    async fn a_follower_past_the_journal_fails_instead_of_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        let mut w = Writer::open(&path, 8);
        w.commit(3);
        let mut f = Follower::new(path, w.live.subscribe(), 50);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), f.next())
            .await
            .expect("an answer, not a wait");
        assert!(
            matches!(
                got,
                Err(JournalError::Ahead {
                    after: 50,
                    last: 3,
                    ..
                })
            ),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn a_recreated_journal_is_followed_from_the_old_number() {
        use crate::journal::{
            recover,
            seqstate::{self, SeqState},
        };
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        let mut w = Writer::open(&path, 64);
        w.commit(10);
        // What the journal writer keeps beside the journal.
        SeqState {
            reserved: 10,
            committed: 10,
            boot: seqstate::boot_id(),
            journal: w.journal.id().unwrap(),
        }
        .save(&seqstate::path_for(&path))
        .unwrap();
        drop(w);
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(crate::journal::with_suffix(&path, s));
        }
        let opened = recover::open(&path, recover::CHECK_BUDGET).unwrap();
        let mut w = Writer {
            journal: opened.journal,
            live: broadcast::channel(64).0,
            made: 10,
        };
        // A subscriber resuming after the last event it saw gets the new journal's events.
        let mut f = Follower::new(path, w.live.subscribe(), 10);
        w.commit(3);
        take(&mut f, 3).await;
        assert_eq!((f.last(), f.lost()), (13, 0));
    }
}
