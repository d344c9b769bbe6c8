//! lab: the interception matrix of `cargo xtask lab` (see `sensor_tests::lab`). Prints a table
//! of scenario, expected and got, writes them to `--out` as JSON, and exits 1 if any row
//! fails.

use std::{io::Write as _, path::PathBuf, time::Instant};

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Where to write the results (a JSON array of {scenario, expected, got, pass}).
    #[arg(long, default_value = "target/lab/results.json")]
    out: PathBuf,
    /// Play only part of the lab.
    #[arg(long, value_enum, default_value = "all")]
    only: sensor_tests::lab::Part,
    /// Play only the matrix rows of these clients (all when none is given).
    #[arg(long = "client", value_enum)]
    clients: Vec<sensor_tests::lab::Client>,
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    let args = Args::parse();
    sensor_tests::require_root();
    let start = Instant::now();
    let dir = tempfile::tempdir()?;
    let rows = sensor_tests::lab::run(dir.path(), args.only, &args.clients);
    let width = rows.iter().map(|r| r.scenario.len()).max().unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for r in &rows {
        writeln!(
            out,
            "{} {:width$}  expected: {}\n{:>w2$}got:      {}",
            if r.pass { "PASS" } else { "FAIL" },
            r.scenario,
            r.expected,
            "",
            r.got,
            w2 = width + 7,
        )?;
    }
    let failed = rows.iter().filter(|r| !r.pass).count();
    writeln!(
        out,
        "\n{} scenarios, {} passed, {failed} failed, in {:.0} s",
        rows.len(),
        rows.len() - failed,
        start.elapsed().as_secs_f64()
    )?;
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let json: Vec<serde_json::Value> = rows.iter().map(|r| r.to_json()).collect();
    std::fs::write(&args.out, serde_json::to_string_pretty(&json)? + "\n")?;
    writeln!(out, "results: {}", args.out.display())?;
    Ok(if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
