//! `cargo xtask bench all`: every benchmark in one go, each with its defaults and its output
//! passed on as it comes; their figures (`name=value` lines) gathered into
//! `target/bench/summary.json`, by benchmark, with how each one ended and how long it took.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use serde_json::{Map, Value, json};

use crate::util::{Workspace, say};

/// The benchmarks, in the order they run: the cheap and CPU-bound first.
pub const BENCHMARKS: [&str; 7] = [
    "verdict",
    "analyze",
    "tls13",
    "tap",
    "daemon",
    "abuse",
    "durability",
];

/// Run every benchmark and write the summary. A benchmark that fails is recorded as failed and
/// the rest still run; the command fails at the end if any did.
pub fn all(ws: &Workspace) -> anyhow::Result<()> {
    let me = std::env::current_exe().context("finding xtask's own program")?;
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut benches = Map::new();
    let mut failed = Vec::new();
    for name in BENCHMARKS {
        say(&format!("bench all: {name}"));
        let start = Instant::now();
        let mut child = Command::new(&me)
            .args(["bench", name])
            .current_dir(&ws.root)
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting bench {name}"))?;
        let mut figures = Map::new();
        if let Some(out) = child.stdout.take() {
            let mut stdout = std::io::stdout();
            for line in BufReader::new(out).lines() {
                let line = line.with_context(|| format!("reading bench {name}'s output"))?;
                let _ = writeln!(stdout, "{line}");
                if let Some((figure, value)) = figure(&line) {
                    figures.insert(figure.to_owned(), value);
                }
            }
        }
        let status = child.wait().with_context(|| format!("bench {name}"))?;
        if !status.success() {
            failed.push(name);
        }
        benches.insert(
            name.to_owned(),
            json!({
                "ok": status.success(),
                "seconds": (start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                "figures": figures,
            }),
        );
    }
    let summary = json!({
        "started_unix": started,
        "commit": commit(ws),
        "benchmarks": benches,
    });
    let dir = ws.root.join("target/bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    say(&format!("bench all: figures in {}", path.display()));
    if !failed.is_empty() {
        anyhow::bail!("benchmarks that failed: {}", failed.join(", "));
    }
    Ok(())
}

/// A figure line, `name=value`: a name of lowercase letters, digits and `_`, and a value with
/// no space (a number when it reads as one). Anything else a benchmark prints is not a figure.
fn figure(line: &str) -> Option<(&str, Value)> {
    let (name, value) = line.trim_end().split_once('=')?;
    let name_ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !name_ok || value.is_empty() || value.contains(char::is_whitespace) {
        return None;
    }
    let value = match value.parse::<f64>() {
        Ok(n) if n.is_finite() => {
            serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
        }
        _ => Value::String(value.to_owned()),
    };
    Some((name, value))
}

/// The checked-out commit, when git can say.
fn commit(ws: &Workspace) -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(&ws.root)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_told_from_other_output() {
        assert_eq!(
            figure("uprobe_latency_ratio=1.009"),
            Some(("uprobe_latency_ratio", json!(1.009)))
        );
        assert_eq!(
            figure("ns_per_packet=57"),
            Some(("ns_per_packet", json!(57.0)))
        );
        assert_eq!(
            figure("storm_client=openssl"),
            Some(("storm_client", json!("openssl")))
        );
        // Criterion's and cargo's lines, and a value that is not one word.
        for other in [
            "verdict_new_chain       time:   [1.2 µs 1.3 µs 1.4 µs]",
            "Found 3 outliers among 100 measurements (3.00%)",
            "   Compiling sensord v0.1.0",
            "Note=something",
            "x=",
            "=1",
            "a b=1",
            "lost=1 of 2",
        ] {
            let got = figure(other);
            assert!(got.is_none(), "{other:?} read as a figure: {got:?}");
        }
        // A value that is not a finite number is kept as text.
        assert_eq!(figure("ratio=NaN"), Some(("ratio", json!("NaN"))));
    }

    #[test]
    fn every_benchmark_is_a_command() {
        use clap::CommandFactory as _;
        let cli = crate::Args::command();
        let bench = cli.find_subcommand("bench").expect("bench");
        for name in BENCHMARKS {
            assert!(bench.find_subcommand(name).is_some(), "no bench {name}");
        }
        let listed: Vec<&str> = bench
            .get_subcommands()
            .map(|c| c.get_name())
            .filter(|n| *n != "all" && *n != "help")
            .collect();
        assert_eq!(listed.len(), BENCHMARKS.len(), "{listed:?}");
    }
}
