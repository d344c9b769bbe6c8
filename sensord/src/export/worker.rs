//! What the push exporters (syslog, OTLP) share: a thread of their own with a current-thread
//! runtime, stopped through a watch channel, and where they start in the journal.

use std::{future::Future, thread::JoinHandle};

use anyhow::Context as _;
use tokio::sync::watch;

use super::cursor::{CursorFile, start_after};

/// An exporter's thread, and how to stop it.
pub struct Worker {
    thread: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Worker {
    /// Run what `make` builds from the stop signal, on a thread named `name`, on `runtime`.
    /// The future is made on that thread: it need not be `Send`.
    pub fn spawn<M, F>(
        name: &str,
        runtime: tokio::runtime::Runtime,
        make: M,
    ) -> anyhow::Result<Self>
    where
        M: FnOnce(watch::Receiver<bool>) -> F + Send + 'static,
        F: Future<Output = ()>,
    {
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || runtime.block_on(make(stopped)))
            .with_context(|| format!("spawning the {name} thread"))?;
        Ok(Self { thread, stop })
    }

    /// Tell it to stop, and wait until it has.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
    }
}

/// Whether an event is older than `max_age_secs` by the wall clock now (0: no limit): after
/// an outage, the push exporters count such events instead of sending them.
pub fn too_old(r: &crate::journal::StoredEvent, max_age_secs: u64) -> bool {
    if max_age_secs == 0 {
        return false;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (secs, _) = r.event.handshake.time.seconds_nanos();
    now.saturating_sub(u64::try_from(secs).unwrap_or(0)) > max_age_secs
}

/// A current-thread runtime for an exporter.
pub fn runtime(what: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .with_context(|| format!("the {what} exporter's runtime"))
}

/// Where an exporter starts in a journal whose last number is `last_seq`, from its saved
/// cursor ([`start_after`]), saved back when it differs so that every later session starts
/// there too. A cursor past the journal's end is said, never silently.
pub fn start(cursor: &CursorFile, last_seq: u64, what: &str) -> anyhow::Result<u64> {
    let saved = cursor
        .load()
        .with_context(|| format!("reading {}", cursor.path().display()))?;
    if saved.is_some_and(|seq| seq > last_seq) {
        tracing::warn!(
            "{}: the {what} export's cursor is past the journal's last event ({last_seq}); \
             sending the journal from its start",
            cursor.path().display()
        );
    }
    let start = start_after(saved, last_seq);
    if saved != Some(start) {
        cursor
            .save(start)
            .with_context(|| format!("writing {}", cursor.path().display()))?;
    }
    Ok(start)
}
