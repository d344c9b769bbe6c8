//! JSON lines to a file, rotated by size, optionally gzipped, for Filebeat, Vector or Fluent
//! Bit. The lines are the JSON contract (or its ECS form), filtered like the API's streams.

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    path::{Path, PathBuf},
};

use crate::{config::JsonlConfig, journal::Record};

/// Writes events to the file and rotates it.
pub struct JsonlWriter {
    cfg: JsonlConfig,
    file: File,
    size: u64,
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
        Ok(Self { cfg, file, size })
    }

    /// Write one event, if it passes the filter.
    pub fn write(&mut self, r: &Record) -> std::io::Result<()> {
        if !self.cfg.filter.matches(&r.meta) {
            return Ok(());
        }
        let line = if self.cfg.ecs {
            let v: serde_json::Value = serde_json::from_str(&r.json).unwrap_or_default();
            serde_json::to_string(&super::ecs::to_ecs(&v)).unwrap_or_default()
        } else {
            r.json.clone()
        };
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.size += line.len() as u64 + 1;
        if self.cfg.max_size_mb > 0 && self.size >= self.cfg.max_size_mb << 20 {
            self.rotate()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::filter::{EventMeta, Filter};

    fn record(seq: u64, verdict: &str) -> Record {
        Record {
            seq,
            meta: EventMeta {
                verdict: verdict.into(),
                ..EventMeta::default()
            },
            json: format!(
                "{{\"seq\":{seq},\"verdict\":\"{verdict}\",\"pad\":\"{}\"}}",
                "x".repeat(200)
            ),
        }
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
                exclude_verdicts: vec!["clean".into()],
                ..Filter::default()
            },
        })
        .unwrap();
        w.write(&record(1, "clean")).unwrap();
        w.write(&record(2, "intercepted")).unwrap();
        w.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("\"seq\":2"));
        for _ in 0..3 {
            w.rotate().unwrap();
            w.write(&record(3, "untrusted")).unwrap();
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
        assert!(s.contains("\"seq\":3"), "{s}");
    }
}
