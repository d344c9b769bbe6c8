//! The exporters (JSON lines, syslog, OTLP), replaced together off the capture loop. Stopping an exporter waits for its
//! last flush and for any rotation it is in the middle of (gzip of up to `max_size_mb`): the
//! capture loop, which applies reloads, must not wait for that, or the kernel's ring buffer
//! fills meanwhile. A replacement runs on a blocking thread, after the one before it, so that
//! the last reload's exporter is the one left running.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::{sync::oneshot, task::JoinHandle};

use crate::export::{jsonl, otlp, syslog};

/// An exporter that can be stopped (after its last flush).
pub trait Stop: Send + 'static {
    fn stop(self);
}

/// The exporters the configuration asks for. Each follows the journal with its own cursor, so
/// replacing them all when one changes loses and repeats nothing.
pub struct Running {
    pub jsonl: Option<jsonl::Exporter>,
    pub syslog: Option<syslog::Exporter>,
    pub otlp: Option<otlp::Exporter>,
}

impl Running {
    /// sensord stops: each ends after what was committed (see each exporter's `join`).
    pub fn join(self) {
        if let Some(j) = self.jsonl {
            j.join();
        }
        if let Some(s) = self.syslog {
            s.join();
        }
        if let Some(o) = self.otlp {
            o.join();
        }
    }
}

impl Stop for Running {
    fn stop(self) {
        if let Some(j) = self.jsonl {
            j.stop();
        }
        if let Some(s) = self.syslog {
            s.stop();
        }
        if let Some(o) = self.otlp {
            o.stop();
        }
    }
}

/// The exporter in place, and the replacement under way.
pub struct Exports<T: Stop> {
    current: Arc<Mutex<Option<T>>>,
    /// The last replacement; the next one waits for it.
    pending: Option<JoinHandle<()>>,
}

/// How a replacement ended: the new exporter's start error, if any.
pub type Replaced = oneshot::Receiver<Result<(), String>>;

impl<T: Stop> Exports<T> {
    pub fn new(current: Option<T>) -> Self {
        Self {
            current: Arc::new(Mutex::new(current)),
            pending: None,
        }
    }

    /// Stop the exporter in place and start what `start` makes instead, on a blocking thread
    /// after any replacement still under way. Returns at once.
    pub fn replace(
        &mut self,
        start: impl FnOnce() -> anyhow::Result<Option<T>> + Send + 'static,
    ) -> Replaced {
        let current = self.current.clone();
        let previous = self.pending.take();
        let (tx, rx) = oneshot::channel();
        self.pending = Some(tokio::spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let result = tokio::task::spawn_blocking(move || {
                // Held across the swap: nobody sees the slot between the two exporters.
                let mut slot = current.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(old) = slot.take() {
                    old.stop();
                }
                start().map(|new| *slot = new).map_err(|e| format!("{e:#}"))
            })
            .await
            .unwrap_or_else(|e| Err(format!("the export task failed: {e}")));
            let _ = tx.send(result);
        }));
        rx
    }

    /// Wait for the replacements under way, then hand over the exporter in place (sensord
    /// stops).
    pub async fn settle(mut self) -> Option<T> {
        if let Some(pending) = self.pending.take() {
            let _ = pending.await;
        }
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// An exporter whose stop takes as long as a rotation's gzip.
    struct Slow(&'static str);

    impl Stop for Slow {
        fn stop(self) {
            std::thread::sleep(Duration::from_millis(400));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replacement_never_waits_on_the_caller_and_the_last_one_wins() {
        let mut exports = Exports::new(Some(Slow("first")));
        let asked = Instant::now();
        let a = exports.replace(|| Ok(Some(Slow("second"))));
        let b = exports.replace(|| anyhow::bail!("cannot open /nowhere/events.jsonl"));
        let c = exports.replace(|| Ok(Some(Slow("third"))));
        assert!(
            asked.elapsed() < Duration::from_millis(100),
            "the capture loop waited {:?}",
            asked.elapsed()
        );
        assert_eq!(a.await.unwrap(), Ok(()));
        assert!(
            b.await
                .unwrap()
                .unwrap_err()
                .contains("/nowhere/events.jsonl")
        );
        assert_eq!(c.await.unwrap(), Ok(()));
        assert_eq!(exports.settle().await.map(|s| s.0), Some("third"));
    }
}
