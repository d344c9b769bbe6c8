//! sensord: the TLS interception sensor daemon.

use std::path::PathBuf;

use clap::Parser;
use sensor_host::trust::TrustArgs;
use sensord::daemon::{self, Options, Overrides, PrintFormat};

/// Watches the TLS handshakes of every process on this host and reports interception.
#[derive(Debug, Parser)]
#[command(name = "sensord", version = sensor_host::VERSION)]
struct Args {
    /// The configuration file (TOML; every key optional, see dist/sensord.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for the journal and other state (default /var/lib/sensor).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The API's Unix socket (default /run/sensor/sensord.sock).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print every handshake on stdout, as a line of text or of JSON.
    #[arg(long, value_name = "FORMAT")]
    print: Option<PrintFormat>,
    /// Attach to this cgroup v2 directory instead of the root of the hierarchy.
    #[arg(long, value_name = "DIR")]
    cgroup: Option<PathBuf>,
    /// Payload bytes the kernel forwards per connection at most.
    #[arg(long, value_name = "BYTES")]
    byte_budget: Option<u32>,
    #[command(flatten)]
    trust: TrustArgs,
    /// Load and check the configuration, trust stores, pins and catalogue as a start would,
    /// print what would be used, and exit: 0 if all is well, 1 with the file and line of the
    /// first error. Attaches nothing and opens no journal.
    #[arg(long)]
    check_config: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    init_logging();
    let opts = Options {
        config_path: args.config,
        overrides: Overrides {
            state_dir: args.state_dir,
            socket: args.socket,
            trust: args.trust,
            byte_budget: args.byte_budget,
            cgroup: args.cgroup,
        },
        print: args.print,
    };
    if args.check_config {
        return match daemon::check::check(&opts) {
            Ok(report) => {
                print!("sensord: {report}");
                std::process::ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("sensord: {err:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("sensord: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(opts)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("sensord: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr; colours only on a terminal, so that journald gets plain text.
fn init_logging() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SENSOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
