//! `sensorctl analyze`: a capture file through the engine. An edge: reads a file, writes lines.

use std::{fs::File, io::Write, path::Path};

use crate::{
    capture::pcap::{CaptureError, CaptureReader, CaptureStats},
    engine::{Engine, EngineLimits, EngineStats},
    event::{self, Handshake},
};

/// How handshakes are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One human-readable line per handshake.
    Text,
    /// One JSON object per line (the JSON contract).
    Json,
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
    each: &mut dyn FnMut(&mut Handshake),
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
    let result = loop {
        let more = reader.read(4096, &mut |seg| {
            last_ts = last_ts.max(seg.ts_ns);
            engine.push(seg);
        });
        engine.advance(last_ts);
        write_all(&mut engine, format, out, each)?;
        progress(reader.stats().bytes);
        match more {
            Ok(true) => continue,
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    engine.finish();
    write_all(&mut engine, format, out, each)?;
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
    each: &mut dyn FnMut(&mut Handshake),
) -> std::io::Result<()> {
    for mut hs in engine.drain() {
        each(&mut hs);
        match format {
            Output::Text => writeln!(out, "{}", event::one_line(&hs))?,
            Output::Json => {
                serde_json::to_writer(&mut *out, &hs).map_err(std::io::Error::other)?;
                out.write_all(b"\n")?;
            }
        }
    }
    Ok(())
}
