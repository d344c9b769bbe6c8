//! sensorctl: the command line of the TLS interception sensor.

use std::{io::IsTerminal as _, net::IpAddr, path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use sensor::{
    analyze::{self, Output},
    trust::load::{self, TrustArgs, TrustConfig},
    verdict::{Facts, Kind, VerdictEngine},
    x509,
};

/// Ask the sensor what it saw, or look at traffic and certificates yourself.
#[derive(Debug, Parser)]
#[command(version, about, propagate_version = true)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Analyse a capture file (pcap or pcapng): one line or JSON object per TLS handshake,
    /// with its verdict.
    ///
    /// Link types: Ethernet, Linux cooked (SLL, SLL2), raw IP, loopback/null.
    /// Exit codes: 0 analysed, 2 the file is not a capture or cannot be read, or a trust input
    /// is bad.
    Analyze {
        /// The capture file.
        file: PathBuf,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
        /// Print what the reader, engine and verdicts counted, on stderr, at the end.
        #[arg(long)]
        stats: bool,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Explain a single certificate chain (PEM, leaf first) for a server name.
    ///
    /// Exit codes: 0 clean, 1 intercepted, untrusted or pin_mismatch, 2 error.
    CheckChain {
        /// PEM file with the chain, leaf first.
        file: PathBuf,
        /// The server name the chain was presented for (the SNI).
        #[arg(long)]
        name: Option<String>,
        /// The server's address, checked against IP names when no --name is given.
        #[arg(long)]
        addr: Option<IpAddr>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        trust: TrustArgs,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Analyze {
            file,
            output,
            stats,
            trust,
        } => run_analyze(&file, output, stats, &trust),
        Command::CheckChain {
            file,
            name,
            addr,
            output,
            trust,
        } => run_check_chain(&file, name.as_deref(), addr, output, &trust),
    }
}

/// Load the trust context the flags describe, or say why not.
fn trust_engine(trust: &TrustArgs) -> Result<VerdictEngine, ExitCode> {
    match load::load(&trust.over(TrustConfig::default()), 1) {
        Ok(ctx) => Ok(VerdictEngine::new(Arc::new(ctx))),
        Err(e) => {
            eprintln!("sensorctl: {e}");
            Err(ExitCode::from(2))
        }
    }
}

fn run_analyze(file: &std::path::Path, output: Output, stats: bool, trust: &TrustArgs) -> ExitCode {
    let mut engine = match trust_engine(trust) {
        Ok(e) => e,
        Err(code) => return code,
    };
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
    let result = analyze::analyze_file(
        file,
        output,
        &mut out,
        &mut |hs| engine.apply(hs),
        &mut |bytes| {
            if let Some(bar) = &bar {
                bar.set_position(bytes);
            }
        },
    );
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    drop(out);
    match result {
        Ok(summary) => {
            if stats {
                let all = serde_json::json!({
                    "capture": summary.capture,
                    "engine": summary.engine,
                    "verdicts": engine.stats(),
                });
                eprintln!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("sensorctl: {err}");
            ExitCode::from(2)
        }
    }
}

fn run_check_chain(
    file: &std::path::Path,
    name: Option<&str>,
    addr: Option<IpAddr>,
    output: Output,
    trust: &TrustArgs,
) -> ExitCode {
    let mut engine = match trust_engine(trust) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let certs = match load::pem_certificates(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sensorctl: {e}");
            return ExitCode::from(2);
        }
    };
    let mut chain = Vec::new();
    for (i, c) in certs.iter().enumerate() {
        match x509::summarize(c.as_ref()) {
            Ok(s) => chain.push(Arc::new(s)),
            Err(e) => {
                eprintln!("sensorctl: {}: certificate {}: {e}", file.display(), i + 1);
                return ExitCode::from(2);
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let v = engine.judge(&Facts {
        chain: &chain,
        server_name: name,
        dst_addr: addr,
        time_ns: now,
        ..Facts::default()
    });
    match output {
        Output::Json => {
            let json = serde_json::json!({
                "verdict": v.kind.as_str(),
                "reasons": v.reasons,
                "severity": v.severity.as_str(),
                "explanation": v.explanation,
                "interceptor": v.product.as_ref().map(|(id, name)| serde_json::json!({"id": id, "name": name})),
                "chain": chain,
            });
            println!("{json}");
        }
        Output::Text => {
            println!(
                "{} ({}) {}",
                v.kind.as_str().to_uppercase(),
                v.severity.as_str(),
                v.reasons.join(" ")
            );
            println!("{}", v.explanation);
            for (i, c) in chain.iter().enumerate() {
                println!("  [{i}] {}", c.subject);
                println!("      issuer  {}", c.issuer);
                println!(
                    "      valid   {} .. {}",
                    c.not_before.rfc3339(),
                    c.not_after.rfc3339()
                );
                println!(
                    "      key     {} {} bits, {}",
                    c.key_type, c.key_bits, c.signature_algorithm
                );
                println!("      sha256  {}", c.sha256);
                println!("      spki    {}", c.spki_sha256);
            }
        }
    }
    match v.kind {
        Kind::Clean | Kind::Unverified => ExitCode::SUCCESS,
        Kind::Intercepted | Kind::Untrusted | Kind::PinMismatch => ExitCode::from(1),
    }
}
