//! `sensorctl analyze`: a capture file through the engine. An edge: reads a file, writes lines.

use std::{
    fs::File,
    io::Write,
    path::Path,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use sensor_core::{
    capture::pcap::{CaptureError, CaptureReader, CaptureStats},
    engine::{Engine, EngineLimits, EngineStats},
    event::{Event, Handshake},
};

use crate::render::{self, Line, Palette};

/// How handshakes are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One human-readable line per handshake.
    Text,
    /// One JSON object per line (the JSON contract).
    Json,
}

impl Output {
    /// Write one event in this form, with a line end.
    pub fn write(
        self,
        event: &Event,
        palette: Palette,
        out: &mut dyn Write,
    ) -> std::io::Result<()> {
        self.write_buffered(event, palette, out, &mut Vec::new())
    }

    /// [`Output::write`], formatting into `scratch` (cleared, its allocation reused) and
    /// handing `out` the whole line in one call: serde's many small writes then go to a `Vec`
    /// instead of through `dyn Write`.
    pub fn write_buffered(
        self,
        event: &Event,
        palette: Palette,
        out: &mut dyn Write,
        scratch: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        scratch.clear();
        match self {
            Output::Text => writeln!(scratch, "{}", render::event_line(&Line::of(event), palette))?,
            Output::Json => {
                event.write_json(scratch);
                scratch.push(b'\n');
            }
        }
        out.write_all(scratch)
    }
}

/// What an analysis saw.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Summary {
    pub capture: CaptureStats,
    pub engine: EngineStats,
}

/// Why an analysis stopped.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("{path}: {error}")]
    Open { path: String, error: std::io::Error },
    #[error("{path}: {error}")]
    Capture { path: String, error: CaptureError },
    #[error("writing the output: {0}")]
    Write(#[from] std::io::Error),
}

/// How many threads an analysis uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Threads {
    /// Everything on the calling thread.
    #[value(name = "1")]
    One,
    /// Reading, decoding and reassembly on a thread of its own; verdicts and output on the
    /// calling thread. The output is the same, in the same order: the verdict engine keeps
    /// state across handshakes (the baseline, inbound patterns), so it stays one sequence.
    #[value(name = "2")]
    Two,
}

/// Handshakes handed from the reading thread to the writing one per batch, at most: the
/// handshakes a batch of [`PACKETS_PER_READ`] packets ended (about 100 in a dense capture).
const BATCHES_IN_FLIGHT: usize = 8;

/// Packets read between two hand-overs of finished handshakes.
const PACKETS_PER_READ: usize = 4096;

/// Analyse the capture at `path`, writing each handshake to `out`. `each` sees every handshake
/// first (the verdict engine fills in verdicts there). `progress` is called with bytes read.
pub fn analyze_file(
    path: &Path,
    format: Output,
    threads: Threads,
    out: &mut dyn Write,
    each: &mut dyn FnMut(&mut Event),
    progress: &mut dyn FnMut(u64),
) -> Result<Summary, AnalyzeError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|error| AnalyzeError::Open {
        path: shown.clone(),
        error,
    })?;
    // A regular file is mapped and read in place: its bytes are not copied through a read
    // buffer first (that copy was a fifth of the reading thread's time on a 1 GB capture).
    // Anything else (a pipe, a device) streams.
    let map = match file.metadata() {
        Ok(meta) if meta.is_file() && meta.len() > 0 => {
            // SAFETY: the map is only read, and only while `map` lives. A capture still being
            // written grows, which the map (the length at this moment) does not see; a file
            // truncated by another process while it is read ends this process with SIGBUS, as
            // it would any reader of a mapped file.
            unsafe { memmap2::Mmap::map(&file) }.ok()
        }
        _ => None,
    };
    if let Some(map) = &map {
        // Read-ahead in large steps; advice only, so a refusal changes nothing.
        let _ = map.advise(memmap2::Advice::Sequential);
    }
    let reader = match &map {
        Some(map) => CaptureReader::in_place(map),
        None => CaptureReader::new(file),
    };
    let mut reader = reader.map_err(|error| AnalyzeError::Capture {
        path: shown.clone(),
        error,
    })?;
    let mut engine = Engine::new(EngineLimits::default());
    let mut scratch = Vec::with_capacity(8 << 10);
    let mut released = 0;
    // With two threads: how far the reader is, and whether it has stopped.
    let (read_to, reading_done) = (AtomicU64::new(0), AtomicBool::new(false));
    let result = match threads {
        Threads::One => read_all(
            &mut reader,
            &mut engine,
            &mut |read| {
                if let Some(map) = &map {
                    release_read(map, read, &mut released);
                }
            },
            &mut |engine, bytes| {
                write_all(engine.drain(), format, out, each, &mut scratch)?;
                progress(bytes);
                Ok(())
            },
        )?,
        Threads::Two => std::thread::scope(|scope| {
            let (batches, received) = std::sync::mpsc::sync_channel(BATCHES_IN_FLIGHT);
            let (empties, recycled) = std::sync::mpsc::channel::<Vec<Handshake>>();
            let (reader, engine) = (&mut reader, &mut engine);
            // A mapped file's pages are mapped ahead of the reader and dropped behind it by a
            // thread of their own, which the writing thread's core has time for: the page
            // faults and the dropping were about a sixth of the reading thread's time.
            let (read_to, reading_done) = (&read_to, &reading_done);
            let pager = map.as_ref().map(|map| {
                scope.spawn(move || {
                    let (mut populated, mut released) = (0, 0);
                    loop {
                        let at = read_to.load(Ordering::Acquire);
                        release_read(map, at, &mut released);
                        if reading_done.load(Ordering::Acquire) {
                            break;
                        }
                        populate_ahead(map, at, &mut populated);
                        std::thread::park_timeout(Duration::from_millis(5));
                    }
                })
            });
            let pager_thread = pager.as_ref().map(|p| p.thread().clone());
            let reading = scope.spawn(move || {
                let mut pages = |read| {
                    read_to.store(read, Ordering::Release);
                    if let Some(pager) = &pager_thread {
                        pager.unpark();
                    }
                };
                read_all(reader, engine, &mut pages, &mut |engine, bytes| {
                    let mut batch = recycled.try_recv().unwrap_or_default();
                    batch.extend(engine.drain());
                    // The writer has stopped on an output error, which it reports: stop too.
                    batches
                        .send((batch, bytes))
                        .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
                })
            });
            let mut write = || {
                for (mut batch, bytes) in received.iter() {
                    write_all(batch.drain(..), format, out, each, &mut scratch)?;
                    progress(bytes);
                    // Fails only once the reader is done, and then the batch is not needed.
                    let _ = empties.send(batch);
                }
                Ok::<_, std::io::Error>(())
            };
            let written = write();
            // After an output error the reader's next send fails, as `received` is gone.
            drop(received);
            let read = reading.join();
            reading_done.store(true, Ordering::Release);
            if let Some(pager) = pager {
                pager.thread().unpark();
                pager
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            }
            let read = read.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            written?;
            read
        })?,
    };
    out.flush()?;
    result.map_err(|error| AnalyzeError::Capture { path: shown, error })?;
    Ok(Summary {
        capture: reader.stats(),
        engine: engine.stats(),
    })
}

/// Feed the whole capture to the engine, handing `deliver` the engine (to drain what it
/// reported) and the bytes read so far after each batch of packets and at the end. A capture
/// error ends the reading, not the analysis: what was read is still delivered. `pages` is told
/// how far the reader is after each batch (a mapped file's pages behind it can go).
fn read_all(
    reader: &mut CaptureReader<'_>,
    engine: &mut Engine,
    pages: &mut dyn FnMut(u64),
    deliver: &mut dyn FnMut(&mut Engine, u64) -> std::io::Result<()>,
) -> std::io::Result<Result<(), CaptureError>> {
    let mut last_ts = 0u64;
    let result = loop {
        let more = reader.read(PACKETS_PER_READ, &mut |seg| {
            last_ts = last_ts.max(seg.ts_ns());
            engine.push_packet(seg);
        });
        engine.advance(last_ts);
        pages(reader.stats().bytes);
        deliver(engine, reader.stats().bytes)?;
        match more {
            Ok(true) => continue,
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    engine.finish();
    deliver(engine, reader.stats().bytes)?;
    Ok(result)
}

/// Map the pages of `map` the reader will read next, up to 8 MiB past `at`, in steps of 4 MiB.
/// Advice only: a kernel without it (before 5.14) leaves them to be faulted in as read.
fn populate_ahead(map: &memmap2::Mmap, at: u64, populated: &mut usize) {
    const STEP: usize = 4 << 20;
    let at = usize::try_from(at).unwrap_or(usize::MAX).min(map.len());
    while *populated < map.len() && *populated < at + 2 * STEP {
        let start = (*populated).max(at / STEP * STEP);
        let end = (start + STEP).min(map.len());
        let _ = map.advise_range(memmap2::Advice::PopulateRead, start, end - start);
        *populated = end;
    }
}

/// Drop the pages of `map` below `upto` (the bytes the reader has passed) from this process's
/// resident set, in steps of 4 MiB; the page cache keeps them. Without it a 1 GB capture read
/// in place counts 1 GB resident by its end, though none of it is the sensor's memory.
fn release_read(map: &memmap2::Mmap, upto: u64, released: &mut usize) {
    const STEP: usize = 4 << 20;
    let upto = usize::try_from(upto).unwrap_or(usize::MAX).min(map.len()) / STEP * STEP;
    if upto > *released {
        // SAFETY: the map is a read-only mapping of a file. Dropping its pages loses nothing:
        // a later read of them (no slice of the reader points there any more) faults the same
        // bytes in again from the file.
        let _ = unsafe {
            map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                *released,
                upto - *released,
            )
        };
        *released = upto;
    }
}

fn write_all(
    handshakes: impl Iterator<Item = Handshake>,
    format: Output,
    out: &mut dyn Write,
    each: &mut dyn FnMut(&mut Event),
    scratch: &mut Vec<u8>,
) -> std::io::Result<()> {
    for hs in handshakes {
        let mut event = Event::observed(hs);
        each(&mut event);
        format.write_buffered(&event, Palette::plain(), out, scratch)?;
    }
    Ok(())
}
