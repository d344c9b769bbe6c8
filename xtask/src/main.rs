//! Developer commands. `cargo xtask --help` lists them.

mod bench;
mod bench_summary;
mod bpf_floor;
mod fuzz;
mod install;
mod package;
mod setup;
mod util;

use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

use util::{Workspace, is_root, run, say};

#[derive(Debug, Parser)]
#[command(about = "Developer commands of the TLS interception sensor")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install what is missing: toolchains, bpf-linker, Debian packages. Idempotent.
    Setup,
    /// Set up, build, and run sensord in the foreground, printing every handshake.
    Run {
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
        /// More arguments for sensord.
        #[arg(last = true)]
        sensord_args: Vec<String>,
    },
    /// Set up, then run every check: fmt, clippy, unit, integration and end-to-end tests, the
    /// interception lab, and a short fuzz run.
    Test,
    /// The interception lab (as root): real interceptors and clients in network namespaces;
    /// prints the matrix and writes target/lab/results.json; fails if any row does.
    Lab,
    /// Run the fuzz targets (cargo fuzz, on the pinned nightly), each for a while.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
    },
    /// Record tests/fixtures/ anew with real clients, servers and tcpdump (as root).
    Fixtures {
        /// Only the scenarios whose name contains this.
        #[arg(long)]
        only: Option<String>,
    },
    /// Build release binaries and install them, the systemd unit, the default configuration
    /// (never over an existing one) and the documentation.
    Install {
        /// Stage everything under this directory (for packaging) instead of the live system.
        #[arg(long)]
        destdir: Option<std::path::PathBuf>,
        /// Binaries go to PREFIX/bin.
        #[arg(long, default_value = "/usr/local")]
        prefix: std::path::PathBuf,
        /// Install what target/release already holds, without building.
        #[arg(long)]
        no_build: bool,
    },
    /// Build the .deb and the .rpm (cargo-deb, cargo-generate-rpm) into target/package, from
    /// the release binaries.
    Package {
        /// Package what target/release already holds, without building.
        #[arg(long)]
        no_build: bool,
    },
    /// Write sensorctl's man pages (sensorctl.1 and one per command) into target/man.
    Man,
    /// Benchmarks; each prints one `name=value` line per figure.
    Bench {
        #[command(subcommand)]
        which: BenchCmd,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// Cost of the kernel tap: bulk throughput attached vs detached (and vs tcpdump), kernel
    /// ns per packet, and a storm of new TLS handshakes.
    Tap {
        /// Interleaved rounds of detached, attached and tcpdump runs (medians are reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Seconds per iperf3 run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Interleaved rounds of the TCP handshake storm, detached and attached.
        #[arg(long, default_value_t = 3)]
        storm_rounds: usize,
        /// Seconds of each handshake storm run.
        #[arg(long, default_value_t = 15)]
        storm_seconds: u64,
    },
    /// The verdict engine (criterion): a new chain, and a cached one.
    Verdict,
    /// sensord: capture-to-subscriber latency, journal rate, memory idle and with 10k flows.
    Daemon {
        /// Handshakes per second for the latency run.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Seconds of the latency run.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// sensord under abuse: benign handshakes captured while a local user floods 1-byte
    /// segments and a client sends oversized ClientHellos, peak memory, and a Reload storm.
    Abuse {
        /// Seconds of each phase.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// sensord killed and restarted (kill -9) under load, a corrupt journal, a full disk, a
    /// wall-clock step: what is lost, and how long recovery takes.
    Durability {
        /// kill -9 cycles.
        #[arg(long, default_value_t = 1000)]
        cycles: u32,
        /// Events per second during the cycles.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
    },
    /// What the OpenSSL uprobes cost a client: curl TLS 1.3 handshake latency with and
    /// without them, sensord running both times.
    Tls13 {
        /// Rounds per configuration (they alternate).
        #[arg(long, default_value_t = 4)]
        rounds: usize,
        /// curl runs per round.
        #[arg(long, default_value_t = 150)]
        runs: usize,
    },
    /// `sensorctl analyze` on a large capture, against tshark on the same file.
    Analyze {
        /// Handshakes in the generated capture.
        #[arg(long, default_value_t = 100_000)]
        handshakes: u32,
    },
    /// Every benchmark above with its defaults, one after another (durability the longest);
    /// their figures go to target/bench/summary.json.
    All,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match dispatch(args.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: Cmd) -> anyhow::Result<()> {
    let ws = Workspace::load()?;
    util::put_cargo_bin_on_path();
    match cmd {
        Cmd::Setup => setup::setup(&ws),
        Cmd::Run { json, sensord_args } => run_sensord(&ws, json, &sensord_args),
        Cmd::Test => test(&ws),
        Cmd::Lab => {
            setup::setup(&ws)?;
            run(ws.cargo().args(["build", "--bins"]))?;
            lab(&ws)
        }
        Cmd::Fuzz { seconds, target } => {
            setup::setup(&ws)?;
            fuzz::fuzz(&ws, seconds, target.as_deref())
        }
        Cmd::Fixtures { only } => {
            setup::setup(&ws)?;
            run(ws.cargo().args(["build", "--bins"]))?;
            let mut cmd = Command::new(ws.root.join("target/debug/make-fixtures"));
            cmd.current_dir(&ws.root).args(["--out", "tests/fixtures"]);
            if let Some(only) = only {
                cmd.args(["--only", &only]);
            }
            run(&mut cmd)
        }
        Cmd::Install {
            destdir,
            prefix,
            no_build,
        } => install::install(&ws, &install::Layout { destdir, prefix }, !no_build),
        Cmd::Package { no_build } => {
            let made = package::package(&ws, !no_build)?;
            say(&format!("{}\n{}", made.deb.display(), made.rpm.display()));
            Ok(())
        }
        Cmd::Man => {
            setup::build_tools(&ws)?;
            run(ws.cargo().args(["build", "--bin", "sensorctl"]))?;
            let out = ws.root.join("target/man");
            install::generate_docs(&ws.root.join("target/debug/sensorctl"), &out)?;
            say(&format!(
                "man pages in {}: man -l {}",
                out.display(),
                out.join("sensorctl.1").display()
            ));
            Ok(())
        }
        Cmd::Bench { which } => {
            setup::setup(&ws)?;
            match which {
                BenchCmd::Tap {
                    rounds,
                    seconds,
                    storm_rounds,
                    storm_seconds,
                } => bench::tap(
                    &ws,
                    &bench::TapBench {
                        rounds,
                        seconds,
                        storm_rounds,
                        storm_seconds,
                    },
                ),
                BenchCmd::Analyze { handshakes } => bench::analyze(&ws, handshakes),
                BenchCmd::Verdict => bench::verdict(&ws),
                BenchCmd::Daemon { rate, seconds } => bench::daemon(&ws, rate, seconds),
                BenchCmd::Abuse { seconds } => bench::abuse(&ws, seconds),
                BenchCmd::Durability { cycles, rate } => bench::durability(&ws, cycles, rate),
                BenchCmd::Tls13 { rounds, runs } => bench::tls13(&ws, rounds, runs),
                BenchCmd::All => bench_summary::all(&ws),
            }
        }
    }
}

/// `cargo xtask run`.
fn run_sensord(ws: &Workspace, json: bool, extra: &[String]) -> anyhow::Result<()> {
    setup::setup(ws)?;
    say("building sensord");
    run(ws.cargo().args(["build", "--bin", "sensord"]))?;
    let sensord = ws.root.join("target/debug/sensord");
    let state = ws.root.join(".sensor-state");
    let mut cmd = if is_root() {
        Command::new(&sensord)
    } else {
        say("sensord needs root (or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON); running it with sudo");
        let mut c = Command::new("sudo");
        c.arg("-E").arg(&sensord);
        c
    };
    cmd.arg("--state-dir")
        .arg(&state)
        .arg("--socket")
        .arg(state.join("sensord.sock"))
        .arg("--print")
        .arg(if json { "json" } else { "text" })
        .args(extra);
    // Ctrl-C reaches sensord too (same process group); keep xtask alive to report how it ended.
    ignore_sigint();
    say(&format!(
        "starting {} (Ctrl-C stops it)",
        util::describe(&cmd)
    ));
    let status = cmd.status().context("starting sensord")?;
    if !status.success() {
        bail!("sensord exited with {status}");
    }
    Ok(())
}

extern "C" fn on_sigint(_: libc::c_int) {}

/// A no-op SIGINT handler: unlike SIG_IGN, handlers are not inherited by children.
fn ignore_sigint() {
    // SAFETY: installing an async-signal-safe no-op handler.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
}

/// `cargo xtask lab`: the interception matrix, from the debug binaries.
fn lab(ws: &Workspace) -> anyhow::Result<()> {
    run(Command::new(ws.root.join("target/debug/lab"))
        .current_dir(&ws.root)
        .arg("--out")
        .arg(ws.root.join("target/lab/results.json")))
}

/// Lint the kernel programs for the target they run on, with the eBPF nightly (the host
/// clippy never builds them: sensor-ebpf is not a default member).
fn clippy_ebpf(ws: &Workspace) -> anyhow::Result<()> {
    run(Command::new("cargo")
        .current_dir(&ws.root)
        .arg(format!("+{}", ws.ebpf_toolchain))
        .args([
            "clippy",
            "-p",
            "sensor-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--lib",
            "--bins",
            "--",
            "-D",
            "warnings",
        ]))
}

/// `cargo xtask test`: what CI runs.
fn test(ws: &Workspace) -> anyhow::Result<()> {
    setup::setup(ws)?;
    say("cargo fmt --check");
    run(ws.cargo().args(["fmt", "--all", "--check"]))?;
    run(ws
        .cargo()
        .current_dir(ws.root.join("fuzz"))
        .args(["fmt", "--check"]))?;
    say("cargo clippy");
    run(ws
        .cargo()
        .args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    say("cargo clippy for the kernel programs (bpfel-unknown-none)");
    clippy_ebpf(ws)?;
    // The fuzz crate is its own workspace: lint it here, so a changed type breaks it now
    // and not after the tests and the lab.
    say("cargo clippy for the fuzz targets");
    run(ws.cargo().current_dir(ws.root.join("fuzz")).args([
        "clippy",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    say("building the binaries the tests start");
    run(ws.cargo().args(["build", "--bins"]))?;
    // The package tests (tests/tests/package.rs) install these. Packaging twice from the same
    // binaries must give the same bytes (SOURCE_DATE_EPOCH).
    say("the .deb and the .rpm, twice");
    let first = package::package(ws, true)?;
    let kept = first.deb.with_extension("deb.first");
    std::fs::rename(&first.deb, &kept)?;
    let kept_rpm = first.rpm.with_extension("rpm.first");
    std::fs::rename(&first.rpm, &kept_rpm)?;
    let second = package::package(ws, false)?;
    for (a, b) in [(&kept, &second.deb), (&kept_rpm, &second.rpm)] {
        if !package::same_bytes(a, b)? {
            bail!(
                "{} and {} differ: the packaging is not reproducible",
                a.display(),
                b.display()
            );
        }
        std::fs::remove_file(a)?;
    }
    say("packages reproducible: two packagings are byte-identical");
    say("cargo test");
    let tests = run(ws.cargo().args(["test", "--no-fail-fast"]));
    // The lab runs even when a test failed: its table says more about what broke.
    say("the interception lab");
    let lab = lab(ws);
    tests?;
    lab?;
    say("a short run of every fuzz target");
    fuzz::fuzz(ws, 30, None)?;
    say("all checks passed");
    Ok(())
}
