//! sensorctl: the command line of the TLS interception sensor.

use std::{io::IsTerminal as _, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use sensor::analyze::{self, Output};

/// Ask the sensor what it saw, or look at traffic yourself.
#[derive(Debug, Parser)]
#[command(version, about, propagate_version = true)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Analyse a capture file (pcap or pcapng): one line or JSON object per TLS handshake.
    ///
    /// Link types: Ethernet, Linux cooked (SLL, SLL2), raw IP, loopback/null.
    /// Exit codes: 0 analysed, 2 the file is not a capture or cannot be read.
    Analyze {
        /// The capture file.
        file: PathBuf,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
        /// Print what the reader and engine counted, on stderr, at the end.
        #[arg(long)]
        stats: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Analyze {
            file,
            output,
            stats,
        } => run_analyze(&file, output, stats),
    }
}

fn run_analyze(file: &std::path::Path, output: Output, stats: bool) -> ExitCode {
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let bar = (std::io::stderr().is_terminal() && size > 8 << 20).then(|| {
        let bar = indicatif::ProgressBar::new(size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let result = analyze::analyze_file(file, output, &mut out, &mut |_| {}, &mut |bytes| {
        if let Some(bar) = &bar {
            bar.set_position(bytes);
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    drop(out);
    match result {
        Ok(summary) => {
            if stats {
                eprintln!(
                    "{}",
                    serde_json::to_string_pretty(&summary).unwrap_or_default()
                );
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("sensorctl: {err}");
            ExitCode::from(2)
        }
    }
}
