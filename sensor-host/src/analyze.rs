//! `sensorctl analyze`: a capture file through the engine. An edge: reads a file, writes lines.

use std::{fs::File, io::Write, path::Path};

use sensor_core::{
    capture::pcap::{CaptureError, CaptureReader, CaptureStats},
    engine::{Engine, EngineLimits, EngineStats},
    event::Event,
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
                serde_json::to_writer(&mut *scratch, event).map_err(std::io::Error::other)?;
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

/// Analyse the capture at `path`, writing each handshake to `out`. `each` sees every handshake
/// first (the verdict engine fills in verdicts there). `progress` is called with bytes read.
pub fn analyze_file(
    path: &Path,
    format: Output,
    out: &mut dyn Write,
    each: &mut dyn FnMut(&mut Event),
    progress: &mut dyn FnMut(u64),
) -> Result<Summary, AnalyzeError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|error| AnalyzeError::Open {
        path: shown.clone(),
        error,
    })?;
    let mut reader = CaptureReader::new(file).map_err(|error| AnalyzeError::Capture {
        path: shown.clone(),
        error,
    })?;
    let mut engine = Engine::new(EngineLimits::default());
    let mut last_ts = 0u64;
    let mut scratch = Vec::with_capacity(8 << 10);
    let result = loop {
        let more = reader.read(4096, &mut |seg| {
            last_ts = last_ts.max(seg.ts_ns());
            engine.push_packet(seg);
        });
        engine.advance(last_ts);
        write_all(&mut engine, format, out, each, &mut scratch)?;
        progress(reader.stats().bytes);
        match more {
            Ok(true) => continue,
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    engine.finish();
    write_all(&mut engine, format, out, each, &mut scratch)?;
    out.flush()?;
    result.map_err(|error| AnalyzeError::Capture { path: shown, error })?;
    Ok(Summary {
        capture: reader.stats(),
        engine: engine.stats(),
    })
}

fn write_all(
    engine: &mut Engine,
    format: Output,
    out: &mut dyn Write,
    each: &mut dyn FnMut(&mut Event),
    scratch: &mut Vec<u8>,
) -> std::io::Result<()> {
    for hs in engine.drain() {
        let mut event = Event::observed(hs);
        each(&mut event);
        format.write_buffered(&event, Palette::plain(), out, scratch)?;
    }
    Ok(())
}
