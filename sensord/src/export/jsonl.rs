//! JSON lines to a file, rotated by size, optionally gzipped, for Filebeat, Vector or Fluent
//! Bit. The lines are the JSON contract (or its ECS form), filtered like the API's streams.
//! The exporter follows the journal on a thread of its own and persists its cursor after
//! each flush: a restart of sensord resumes where it stopped (a crash between a flush and the
//! cursor's save repeats those lines: delivery is at least once).

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Context as _;
use sensor_host::config::JsonlConfig;
use tokio::sync::{broadcast, watch};

use super::{
    cursor::{CursorFile, start_after},
    ecs::chain::Chains,
};
use crate::journal::{StoredEvent, follow::Follower};

/// Writes events to the file and rotates it.
pub struct JsonlWriter {
    cfg: JsonlConfig,
    file: File,
    size: u64,
    /// Where the ECS form finds its certificates (`tls.server.certificate_chain`).
    chains: Option<Chains>,
}

fn rotated(path: &Path, n: usize, gz: bool) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    if gz {
        name.push(".gz");
    }
    PathBuf::from(name)
}

impl JsonlWriter {
    pub fn open(cfg: JsonlConfig) -> std::io::Result<Self> {
        if let Some(dir) = cfg.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cfg.path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            cfg,
            file,
            size,
            chains: None,
        })
    }

    /// Read the ECS form's certificate chains from the journal at `journal`.
    pub fn with_chains(mut self, journal: PathBuf) -> Self {
        self.chains = Some(Chains::new(journal));
        self
    }

    /// Write one event, if it passes the filter.
    pub fn write(&mut self, r: &StoredEvent) -> std::io::Result<()> {
        if !self.cfg.filter.matches(&r.meta) {
            return Ok(());
        }
        let ecs;
        let line: &str = if self.cfg.ecs {
            let chain = self
                .chains
                .as_mut()
                .map(|c| c.of(&r.event))
                .unwrap_or_default();
            ecs = serde_json::to_string(&super::ecs::to_ecs(r, &chain)).unwrap_or_default();
            &ecs
        } else {
            &r.json
        };
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.size += line.len() as u64 + 1;
        if self.cfg.max_size_mb > 0 && self.size >= self.cfg.max_size_mb << 20 {
            self.rotate()?;
        }
        Ok(())
    }

    /// Hand what was written to the kernel and to the disk.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        self.file.sync_data()
    }

    /// events.jsonl -> events.jsonl.1[.gz], shifting older ones; keep `keep` of them.
    pub fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let path = self.cfg.path.clone();
        let gz = self.cfg.compress;
        let keep = self.cfg.keep.max(1);
        let _ = std::fs::remove_file(rotated(&path, keep, gz));
        for n in (1..keep).rev() {
            let from = rotated(&path, n, gz);
            if from.exists() {
                std::fs::rename(&from, rotated(&path, n + 1, gz))?;
            }
        }
        if gz {
            let mut input = File::open(&path)?;
            let out = File::create(rotated(&path, 1, true))?;
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            std::io::copy(&mut input, &mut enc)?;
            enc.finish()?;
            std::fs::remove_file(&path)?;
        } else {
            std::fs::rename(&path, rotated(&path, 1, false))?;
        }
        self.file = OpenOptions::new().create(true).append(true).open(&path)?;
        self.size = 0;
        Ok(())
    }
}

/// A running JSONL exporter: its thread, and how to stop it.
pub struct Exporter {
    thread: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Exporter {
    /// Follow the journal at `journal` into the file `cfg` names, from after the cursor saved
    /// in `cursor` (a new exporter starts with the events committed from now on).
    pub fn spawn(
        cfg: JsonlConfig,
        journal: PathBuf,
        live: &broadcast::Sender<Arc<StoredEvent>>,
        cursor: CursorFile,
        last_seq: u64,
    ) -> anyhow::Result<Self> {
        let shown = cfg.path.display().to_string();
        let mut writer = JsonlWriter::open(cfg)
            .with_context(|| format!("opening {shown}"))?
            .with_chains(journal.clone());
        let saved = cursor
            .load()
            .with_context(|| format!("reading {}", cursor.path().display()))?;
        if let Some(seq) = saved.filter(|&seq| seq > last_seq) {
            // Never silently: a cursor past the journal's end means the journal is not the one
            // it followed (replaced, and the sequence state lost with it).
            tracing::warn!(
                "{}: the export's cursor ({seq}) is past the journal's last event ({last_seq}); \
                 exporting the journal from its start",
                cursor.path().display()
            );
        }
        let mut follower = Follower::new(journal, live.subscribe(), start_after(saved, last_seq));
        let (stop, mut stopped) = watch::channel(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("the exporter's runtime")?;
        let thread = std::thread::Builder::new()
            .name("export-jsonl".into())
            .spawn(move || {
                runtime.block_on(async {
                    // When written lines are next flushed and the cursor saved: 50 ms after
                    // the first unsaved one, however busy the stream.
                    let mut due: Option<tokio::time::Instant> = None;
                    loop {
                        tokio::select! {
                            got = follower.next() => match got {
                                Ok(Some(r)) => {
                                    if let Err(e) = writer.write(&r) {
                                        tracing::warn!("writing {shown}: {e}");
                                    }
                                    due.get_or_insert_with(|| {
                                        tokio::time::Instant::now() + Duration::from_millis(50)
                                    });
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    tracing::warn!("export to {shown}: {e}");
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                }
                            },
                            () = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)),
                                if due.is_some() =>
                            {
                                save(&mut writer, &cursor, follower.last(), &shown);
                                due = None;
                            }
                            _ = stopped.changed() => break,
                        }
                    }
                    save(&mut writer, &cursor, follower.last(), &shown);
                });
            })
            .context("spawning the exporter thread")?;
        Ok(Self { thread, stop })
    }

    /// Stop after a last flush.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
    }

    /// Wait until the exporter ends by itself (the live channel closed: sensord stops).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Flush the file, then record how far it got.
fn save(writer: &mut JsonlWriter, cursor: &CursorFile, last: u64, shown: &str) {
    if let Err(e) = writer.flush() {
        tracing::warn!("flushing {shown}: {e}");
        return;
    }
    if let Err(e) = cursor.save(last) {
        tracing::warn!("saving {}: {e}", cursor.path().display());
    }
}

#[cfg(test)]
mod tests {
    use sensor_core::{event::Verdict, filter::Filter};

    use super::*;
    use crate::journal::testing;

    fn record(seq: u64, verdict: Verdict) -> StoredEvent {
        testing::event(seq, verdict).stored(seq)
    }

    #[test]
    fn filters_rotates_and_compresses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut w = JsonlWriter::open(JsonlConfig {
            path: path.clone(),
            max_size_mb: 0,
            keep: 2,
            compress: true,
            ecs: false,
            filter: Filter {
                exclude_verdicts: vec![Verdict::Clean],
                ..Filter::default()
            },
        })
        .unwrap();
        w.write(&record(1, Verdict::Clean)).unwrap();
        w.write(&record(2, Verdict::Intercepted)).unwrap();
        w.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("h2.test"), "{text}");
        for _ in 0..3 {
            w.rotate().unwrap();
            w.write(&record(3, Verdict::Untrusted)).unwrap();
        }
        assert!(rotated(&path, 1, true).exists());
        assert!(rotated(&path, 2, true).exists());
        assert!(
            !rotated(&path, 3, true).exists(),
            "only `keep` rotated files"
        );
        let gz = File::open(rotated(&path, 2, true)).unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz), &mut s).unwrap();
        assert!(s.contains("h3.test"), "{s}");
    }
}
