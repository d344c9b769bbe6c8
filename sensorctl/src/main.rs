//! sensorctl: the command line of the TLS interception sensor.
//!
//! Exit codes, for every command: 0 success (for `check` and `check-chain`: the chain is
//! clean), 1 `check` or `check-chain` found an intercepted, untrusted or pin-mismatched chain,
//! 2 an error (bad arguments, sensord unreachable, a bad file), printed as one line on stderr.

mod cert;
mod check;
mod clients;
mod connect;
mod events;
mod filter;
mod lines;
mod offline;
mod pins;
mod report;
mod status;
mod watch;

use std::{path::PathBuf, process::ExitCode};

/// mimalloc: `analyze` allocates and frees small buffers per packet and per event; glibc's
/// malloc spent about 15 % of a capture's analysis in allocation (`cargo xtask bench analyze`).
/// Built without transparent huge pages (`no_thp`): with them the kernel zeroed 2 MiB at a time
/// as mimalloc grew, for twice the resident memory and no speed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{CommandFactory as _, Parser, Subcommand};
use sensor_host::{
    analyze::{Output, Threads},
    render,
    trust::TrustArgs,
};

const AFTER_HELP: &str = "\
Exit codes: 0 success (check, check-chain: clean), 1 check or check-chain found an intercepted, \
untrusted or pin-mismatched chain, 2 error.
Environment: SENSOR_SOCKET (the API socket), NO_COLOR (no colours), HTTPS_PROXY and NO_PROXY \
(check).";

/// Ask the sensor what it saw, or check a server yourself: is my TLS traffic being inspected?
#[derive(Debug, Parser)]
#[command(
    name = "sensorctl",
    version = sensor_host::VERSION,
    propagate_version = true, after_help = AFTER_HELP)]
struct Args {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Debug, clap::Args)]
struct Global {
    /// sensord's API socket.
    #[arg(
        long,
        global = true,
        env = "SENSOR_SOCKET",
        default_value = "/run/sensor/sensord.sock"
    )]
    socket: PathBuf,
    /// Colours: auto (on a terminal, unless NO_COLOR is set), always or never.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    color: render::ColorChoice,
    #[command(flatten)]
    endpoint: connect::TcpArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stream events live from sensord, one line each (coloured by severity on a terminal).
    ///
    /// Reconnects by itself when sensord restarts, and resumes with no gap and no duplicate.
    Watch(watch::WatchArgs),
    /// sensord's health: hooks, counters, drops, journal, subscribers.
    Status {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: status::StatusOutput,
    },
    /// Query the history in sensord's journal.
    Events(events::EventsArgs),
    /// Write one self-contained HTML page from the journal: verdicts over time, interception
    /// by product, issuer, process and destination, the newest severe events.
    ///
    /// The page has no script and loads nothing: it opens anywhere, offline.
    Report(report::ReportArgs),
    /// The server's view: per local service, its inbound clients by address and fingerprint,
    /// which came through an interceptor, which completed the handshake and never asked
    /// anything (the HTTP 408 pattern), which refused the server's certificate.
    Clients(clients::ClientsArgs),
    /// Show a certificate sensord stored, by the SHA-256 of its DER (as events show it).
    Cert {
        /// Hex SHA-256 (colons and case do not matter).
        sha256: String,
        /// Print the PEM instead of the summary.
        #[arg(long)]
        pem: bool,
    },
    /// Check a server from this host, now: is my traffic to it being inspected?
    ///
    /// Connects with the real server name (TLS 1.3 included), records the chain it is shown,
    /// and judges it against this host's and the public trust stores, the pins and the
    /// catalogue of interception products. No daemon needed. Goes through HTTPS_PROXY when
    /// set, as other programs on this host would. Exit codes: 0 clean, 1 intercepted,
    /// untrusted or pin_mismatch, 2 error.
    Check(check::CheckArgs),
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
        /// Threads: 1, or 2 to read and reassemble on one while the other judges and writes
        /// (a capture file's pages are then also mapped ahead of the reader by a helper thread).
        /// The output is the same either way.
        #[arg(long, value_enum, default_value = "1")]
        threads: Threads,
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
        addr: Option<std::net::IpAddr>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Edit the pin file sensord uses, then ask it to reload.
    Pins {
        #[command(subcommand)]
        action: pins::PinsCommand,
    },
    /// Ask sensord to reload its configuration, trust stores, pins and catalogue.
    Reload,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// bash: sensorctl completions bash > /etc/bash_completion.d/sensorctl
    Completions { shell: clap_complete::Shell },
    /// Write man pages (sensorctl.1 and one per command) into a directory.
    #[command(hide = true)]
    Man {
        /// The directory to write them to.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let palette = render::Palette::choose(args.global.color);
    let result = match args.command {
        Command::Analyze {
            file,
            output,
            stats,
            threads,
            trust,
        } => Ok(offline::run_analyze(&file, output, stats, threads, &trust)),
        Command::CheckChain {
            file,
            name,
            addr,
            output,
            trust,
        } => Ok(offline::run_check_chain(
            &file,
            name.as_deref(),
            addr,
            output,
            &trust,
            palette,
        )),
        Command::Check(a) => check::run(&a, palette),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Args::command(),
                "sensorctl",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out } => man(&out),
        Command::Pins { action } => pins::run(&args.global, action),
        Command::Watch(a) => watch::run(&args.global, &a, palette),
        Command::Status { output } => status::run(&args.global, output, palette),
        Command::Events(a) => events::run(&args.global, &a, palette),
        Command::Report(a) => report::run(&args.global, &a),
        Command::Clients(a) => clients::run(&args.global, &a),
        Command::Cert { sha256, pem } => cert::run(&args.global, &sha256, pem),
        Command::Reload => reload(&args.global),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sensorctl: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// A current-thread runtime for one command.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn reload(global: &Global) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let mut api = connect::connect(global).await?;
        let done = connect::reload(&mut api).await?;
        println!("{}", connect::reload_words(&done));
        Ok(ExitCode::SUCCESS)
    })
}

fn man(out: &std::path::Path) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let cmd = Args::command();
    clap_mangen::generate_to(cmd, out).with_context(|| format!("writing to {}", out.display()))?;
    Ok(ExitCode::SUCCESS)
}
