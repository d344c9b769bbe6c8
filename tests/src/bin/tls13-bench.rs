//! tls13-bench: the figures of `cargo xtask bench tls13`, printed as name=value lines.
//!
//! What the OpenSSL uprobes cost a client: `curl` TLS 1.3 handshakes to a local
//! `openssl s_server`, with sensord running both times, once with its uprobes attached and once
//! without (the active probe is off in both, so only the uprobes differ). The handshake time is
//! curl's own `time_appconnect - time_connect`; rounds alternate between the two so that drift
//! hits both alike, and medians are compared.
//!
//! - `uprobe_latency_ratio`: median handshake with uprobes / without (target <= 1.05).
//! - `uprobe_curl_wall_ratio`: the same for curl's whole run (process start to exit), which
//!   also pays for the uprobes hit while curl loads its CA file.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use sensor_tests::{
    Proc,
    pki::{self, Key},
};

#[derive(Parser)]
struct Args {
    /// The sensord binary.
    #[arg(long)]
    sensord: PathBuf,
    /// Rounds per configuration (they alternate).
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// curl runs per round.
    #[arg(long, default_value_t = 150)]
    runs: usize,
}

struct Sample {
    handshake_ms: f64,
    wall_ms: f64,
}

fn curl(port: u16, ca: &Path) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--tlsv1.3", "-o", "/dev/null", "-w"])
        .arg("%{time_connect} %{time_appconnect}")
        .arg("--cacert")
        .arg(ca)
        .arg(format!("https://localhost:{port}/"))
        .stdin(Stdio::null())
        .output()
        .context("running curl")?;
    let wall_ms = start.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!("curl: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>());
    let (Some(Ok(connect)), Some(Ok(app))) = (it.next(), it.next()) else {
        bail!("curl printed {text:?}");
    };
    Ok(Sample {
        handshake_ms: (app - connect) * 1000.0,
        wall_ms,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// sensord with or without its uprobes, probe off; waits until it runs and checks whether the
/// uprobes attached as asked.
fn start_sensord(sensord: &Path, dir: &Path, uprobes: bool) -> anyhow::Result<Proc> {
    let state = dir.join(if uprobes { "with" } else { "without" });
    std::fs::create_dir_all(&state)?;
    let config = state.join("sensord.toml");
    std::fs::write(
        &config,
        format!("[probe]\nenabled = false\n[uprobe]\nenabled = {uprobes}\n"),
    )?;
    let log = state.join("sensord.log");
    let mut proc = Proc::spawn(
        "sensord",
        Command::new(sensord)
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .arg("--socket")
            .arg(state.join("sensord.sock"))
            .env("SENSOR_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("sensord running") {
            let attached = text.contains("uprobe d2i_X509");
            if attached != uprobes {
                bail!("sensord's uprobes: wanted {uprobes}, log says otherwise:\n{text}");
            }
            return Ok(proc);
        }
        if Instant::now() > deadline || proc.wait_timeout(Duration::from_millis(100)).is_some() {
            bail!("sensord did not start:\n{text}");
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    sensor_tests::require_root();
    let dir = tempfile::tempdir()?;
    let root = pki::root(dir.path(), "Bench Root", Key::P256);
    let leaf = pki::issue(
        dir.path(),
        &root,
        "localhost",
        Key::P256,
        false,
        &["localhost"],
    );
    let port = sensor_tests::free_port();
    let _server = sensor_tests::openssl_server(port, &leaf.cert, &leaf.key, &["-tls1_3"]);
    // Warm the page cache and the server.
    for _ in 0..20 {
        curl(port, &root.cert)?;
    }
    let mut with = (Vec::new(), Vec::new());
    let mut without = (Vec::new(), Vec::new());
    for round in 0..args.rounds * 2 {
        let uprobes = round % 2 == 0;
        let mut sensord = start_sensord(&args.sensord, dir.path(), uprobes)?;
        let into = if uprobes { &mut with } else { &mut without };
        for _ in 0..args.runs {
            let s = curl(port, &root.cert)?;
            into.0.push(s.handshake_ms);
            into.1.push(s.wall_ms);
        }
        sensord.stop();
    }
    let (hs_with, hs_without) = (median(with.0), median(without.0));
    let (wall_with, wall_without) = (median(with.1), median(without.1));
    println!("curl_runs_per_configuration={}", args.rounds * args.runs);
    println!("handshake_ms_median_with_uprobes={hs_with:.3}");
    println!("handshake_ms_median_without_uprobes={hs_without:.3}");
    println!("uprobe_latency_ratio={:.3}", hs_with / hs_without);
    println!("curl_wall_ms_median_with_uprobes={wall_with:.2}");
    println!("curl_wall_ms_median_without_uprobes={wall_without:.2}");
    println!("uprobe_curl_wall_ratio={:.3}", wall_with / wall_without);
    Ok(())
}
