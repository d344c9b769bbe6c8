//! `cargo xtask bench ...`: benchmarks that print one `name=value` line per figure.
//!
//! Benchmarks, not tests: they report what they measure and never fail on a figure.
//! All traffic stays on loopback.

use std::{
    io::{BufRead as _, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    bpf_floor::{EmptyProgram, cgroup2_root},
    util::{Workspace, is_root, run, say},
};

/// A child process killed (SIGTERM, then SIGKILL) when dropped.
struct Guard(Child, &'static str);

impl Guard {
    fn signal(&self, sig: i32) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, sig) };
    }

    fn wait_timeout(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        self.signal(libc::SIGTERM);
        if !self.wait_timeout(Duration::from_secs(10)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
        let _ = self.1;
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// sensord started for a benchmark, with its log read on a thread.
struct Sensord {
    guard: Guard,
    log: mpsc::Receiver<String>,
    log_seen: Vec<String>,
    program_ids: Vec<u32>,
}

impl Sensord {
    fn start(
        bin: &Path,
        state: &Path,
        print_json: bool,
    ) -> anyhow::Result<(Self, Option<ChildStdout>)> {
        let mut cmd = Command::new(bin);
        cmd.arg("--state-dir")
            .arg(state)
            .env("SENSOR_LOG", "info")
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        if print_json {
            cmd.args(["--print", "json"]).stdout(Stdio::piped());
        } else {
            cmd.stdout(Stdio::null());
        }
        let mut child = cmd.spawn().context("starting sensord")?;
        let stderr = child.stderr.take().context("sensord stderr")?;
        let stdout = child.stdout.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut me = Self {
            guard: Guard(child, "sensord"),
            log: rx,
            log_seen: Vec::new(),
            program_ids: Vec::new(),
        };
        me.wait_log("sensord running", Duration::from_secs(60))?;
        me.program_ids = me
            .log_seen
            .iter()
            .filter(|l| l.contains("cgroup_skb"))
            .filter_map(|l| l.split("program_id=").nth(1))
            .filter_map(|r| r.split_whitespace().next()?.parse().ok())
            .collect();
        Ok((me, stdout))
    }

    fn wait_log(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    self.log_seen.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(_) => bail!(
                    "sensord did not log {needle:?}; its log:\n{}",
                    self.log_seen.join("\n")
                ),
            }
        }
    }

    /// SIGINT, and the kernel counters it logs on the way out.
    fn stop(mut self) -> anyhow::Result<Vec<(String, u64)>> {
        self.guard.signal(libc::SIGINT);
        let line = self.wait_log("kernel counters:", Duration::from_secs(30))?;
        self.guard.wait_timeout(Duration::from_secs(20));
        let counters = line
            .split("kernel counters:")
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect();
        Ok(counters)
    }
}

/// What bpftool shows of a program (`bpftool -j prog show id N`).
fn prog_info(id: u32) -> anyhow::Result<serde_json::Value> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show", "id", &id.to_string()])
        .output()
        .context("bpftool prog show")?;
    serde_json::from_slice(&out.stdout).context("bpftool JSON")
}

/// run_time_ns and run_cnt of a program.
fn prog_stats(id: u32) -> anyhow::Result<(u64, u64)> {
    let v = prog_info(id)?;
    Ok((
        v["run_time_ns"].as_u64().unwrap_or(0),
        v["run_cnt"].as_u64().unwrap_or(0),
    ))
}

/// A program's instructions after the verifier's rewrites (`bytes_xlated` / 8).
fn prog_insns(id: u32) -> anyhow::Result<u64> {
    Ok(prog_info(id)?["bytes_xlated"].as_u64().unwrap_or(0) / 8)
}

/// The verifier's processed-instruction counts of the tap's programs, summed, from sensord's
/// "attached: cgroup_skb on ..., verified_insns=N" log lines.
fn verified_insns(log: &[String]) -> u64 {
    log.iter()
        .filter(|l| l.contains("cgroup_skb"))
        .filter_map(|l| l.split("verified_insns=").nth(1))
        .filter_map(|r| {
            r.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn sum_stats(ids: &[u32]) -> anyhow::Result<(u64, u64)> {
    let mut total = (0, 0);
    for id in ids {
        let (t, c) = prog_stats(*id)?;
        total.0 += t;
        total.1 += c;
    }
    Ok(total)
}

/// One iperf3 run against the server on `port`: bits per second received.
fn iperf(port: u16, seconds: u64) -> anyhow::Result<f64> {
    let out = Command::new("iperf3")
        .args([
            "-c",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            &seconds.to_string(),
            "-J",
        ])
        .output()
        .context("running iperf3")?;
    if !out.status.success() {
        bail!("iperf3 failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("no bits_per_second in iperf3's output")
}

/// Nanoseconds per program run; 0 without runs.
fn per_run(ns: u64, runs: u64) -> f64 {
    if runs == 0 {
        0.0
    } else {
        ns as f64 / runs as f64
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Restores kernel.bpf_stats_enabled on drop.
struct BpfStats(String);

impl BpfStats {
    fn enable() -> anyhow::Result<Self> {
        let path = "/proc/sys/kernel/bpf_stats_enabled";
        let old = std::fs::read_to_string(path).context("reading bpf_stats_enabled")?;
        std::fs::write(path, "1").context("enabling bpf_stats_enabled")?;
        Ok(Self(old.trim().to_owned()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

/// A benchmark's preamble: it needs root (`why_root` says why), then the release build of the
/// binary `user_bin` (sensord or sensorctl, from the package of that name) and of the
/// benchmark's helper from `sensor-tests`.
fn release_binaries(
    ws: &Workspace,
    why_root: &str,
    user_bin: &str,
    helper: &str,
) -> anyhow::Result<()> {
    if !is_root() {
        bail!("{why_root}");
    }
    say("building release binaries");
    for (package, bin) in [(user_bin, user_bin), ("sensor-tests", helper)] {
        run(ws
            .cargo()
            .args(["build", "--release", "-p", package, "--bin", bin]))?;
    }
    Ok(())
}

/// Options of `cargo xtask bench tap`.
pub struct TapBench {
    pub rounds: usize,
    pub seconds: u64,
    /// Interleaved rounds of the TCP storm detached and attached.
    pub storm_rounds: usize,
    pub storm_seconds: u64,
}

/// `cargo xtask bench tap`.
pub fn tap(ws: &Workspace, opts: &TapBench) -> anyhow::Result<()> {
    release_binaries(
        ws,
        "the tap benchmark loads eBPF programs: run it as root",
        "sensord",
        "tls-storm",
    )?;
    let sensord = ws.root.join("target/release/sensord");
    let storm_bin = ws.root.join("target/release/tls-storm");
    let state = tempdir(ws)?;

    let port = free_port()?;
    let _iperf_server = Guard(
        Command::new("iperf3")
            .args(["-s", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the iperf3 server")?,
        "iperf3 -s",
    );
    std::thread::sleep(Duration::from_millis(500));

    // Throughput with BPF run-time statistics off: they cost time of their own.
    let (mut detached, mut attached, mut with_tcpdump) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..opts.rounds {
        for step in 0..3 {
            match (round + step) % 3 {
                0 => {
                    let bps = iperf(port, opts.seconds)?;
                    say(&format!("round {round}: detached {:.2} Gbit/s", bps / 1e9));
                    detached.push(bps);
                }
                1 => {
                    let (daemon, _) = Sensord::start(&sensord, &state, false)?;
                    let bps = iperf(port, opts.seconds)?;
                    daemon.stop()?;
                    say(&format!("round {round}: attached {:.2} Gbit/s", bps / 1e9));
                    attached.push(bps);
                }
                _ => {
                    let tcpdump = Guard(
                        Command::new("tcpdump")
                            .args(["-i", "lo", "-w", "/dev/null"])
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .spawn()
                            .context("starting tcpdump")?,
                        "tcpdump",
                    );
                    std::thread::sleep(Duration::from_secs(1));
                    let bps = iperf(port, opts.seconds)?;
                    drop(tcpdump);
                    say(&format!("round {round}: tcpdump {:.2} Gbit/s", bps / 1e9));
                    with_tcpdump.push(bps);
                }
            }
        }
    }

    // Kernel cost per packet: one more attached run, with run-time statistics on. The tap's
    // programs' sizes, so that a regression in either shows.
    let (run_ns, run_cnt, sizes) = {
        let stats = BpfStats::enable()?;
        let (daemon, _) = Sensord::start(&sensord, &state, false)?;
        let mut sizes = (0, 0);
        for id in &daemon.program_ids {
            sizes.0 += prog_insns(*id)?;
        }
        // The verifier's processed-instruction counts, which sensord logs as it attaches
        // (this bpftool does not show them).
        sizes.1 = verified_insns(&daemon.log_seen);
        let before = sum_stats(&daemon.program_ids)?;
        iperf(port, opts.seconds)?;
        let after = sum_stats(&daemon.program_ids)?;
        daemon.stop()?;
        drop(stats);
        (
            after.0.saturating_sub(before.0),
            after.1.saturating_sub(before.1),
            sizes,
        )
    };

    // The floor under that figure: an empty program on the same hooks, the same run, with
    // sensord detached. What the tap costs a packet beyond it is its own work.
    let (floor_ns, floor_cnt) = {
        let stats = BpfStats::enable()?;
        let floor = EmptyProgram::attach(&cgroup2_root()?)?;
        let before = prog_stats(floor.id)?;
        iperf(port, opts.seconds)?;
        let after = prog_stats(floor.id)?;
        drop(floor);
        drop(stats);
        (
            after.0.saturating_sub(before.0),
            after.1.saturating_sub(before.1),
        )
    };

    // The TCP storm: rounds of the same storm with sensord detached and attached, in turn (the
    // order alternating), so that the ratio compares like with like on a machine whose speed
    // drifts. The attached rounds' handshakes are what must all be captured.
    let (mut rate_detached, mut rate_attached) = (Vec::new(), Vec::new());
    let mut tcp = StormRun::default();
    for round in 0..opts.storm_rounds {
        for attached in [round % 2 == 0, round % 2 == 1] {
            if attached {
                let run = storm(&sensord, &storm_bin, &state, opts, false)?;
                say(&format!(
                    "storm round {round}: attached {:.0} handshakes/s",
                    run.rate()
                ));
                rate_attached.push(run.rate());
                tcp.add(&run);
            } else {
                let run = storm_detached(&storm_bin, opts)?;
                say(&format!(
                    "storm round {round}: detached {:.0} handshakes/s",
                    run.rate()
                ));
                rate_detached.push(run.rate());
            }
        }
    }
    let quic = storm(&sensord, &storm_bin, &state, opts, true)?;
    println!("detached_gbit_per_s={:.3}", median(&detached) / 1e9);
    println!("attached_gbit_per_s={:.3}", median(&attached) / 1e9);
    println!("tcpdump_gbit_per_s={:.3}", median(&with_tcpdump) / 1e9);
    println!(
        "throughput_ratio={:.4}",
        median(&attached) / median(&detached)
    );
    println!(
        "tcpdump_throughput_ratio={:.4}",
        median(&with_tcpdump) / median(&detached)
    );
    println!(
        "throughput_ratio_mean={:.4}",
        mean(&attached) / mean(&detached)
    );
    let (tap_per_packet, floor_per_packet) =
        (per_run(run_ns, run_cnt), per_run(floor_ns, floor_cnt));
    println!("ns_per_packet={tap_per_packet:.1}");
    println!("tap_program_runs={run_cnt}");
    println!("floor_ns_per_packet={floor_per_packet:.1}");
    println!("floor_program_runs={floor_cnt}");
    if run_cnt > 0 && floor_cnt > 0 {
        println!("tap_ns_over_floor={:.1}", tap_per_packet - floor_per_packet);
    }
    println!("tap_program_insns={}", sizes.0);
    println!("tap_verified_insns={}", sizes.1);
    println!("storm_handshakes={}", tcp.handshakes);
    println!("storm_handshakes_per_s={:.0}", median(&rate_attached));
    println!(
        "storm_detached_handshakes_per_s={:.0}",
        median(&rate_detached)
    );
    println!(
        "storm_rate_ratio={:.4}",
        median(&rate_attached) / median(&rate_detached).max(1.0)
    );
    println!("storm_captured_ratio={:.4}", tcp.captured_ratio());
    // The ratio's four decimals hide a few misses in 180,000: the count says.
    println!(
        "storm_missed={}",
        tcp.handshakes.saturating_sub(tcp.captured)
    );
    println!("ringbuf_drops={}", tcp.drops);
    println!(
        "sensord_cpu_us_per_handshake={:.1}",
        tcp.cpu_us_per_handshake()
    );
    println!("quic_handshakes={}", quic.handshakes);
    println!("quic_handshakes_per_s={:.0}", quic.rate());
    println!("quic_captured_ratio={:.4}", quic.captured_ratio());
    println!("quic_ringbuf_drops={}", quic.drops);
    println!(
        "quic_sensord_cpu_us_per_handshake={:.1}",
        quic.cpu_us_per_handshake()
    );
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

/// What storm runs measured (summed over runs).
#[derive(Default)]
struct StormRun {
    handshakes: u64,
    captured: u64,
    drops: u64,
    seconds: f64,
    /// sensord's CPU time (user and system, every thread) while the storm ran.
    sensord_cpu: Duration,
}

impl StormRun {
    fn rate(&self) -> f64 {
        self.handshakes as f64 / self.seconds.max(1e-9)
    }

    fn captured_ratio(&self) -> f64 {
        if self.handshakes == 0 {
            0.0
        } else {
            self.captured as f64 / self.handshakes as f64
        }
    }

    fn cpu_us_per_handshake(&self) -> f64 {
        self.sensord_cpu.as_secs_f64() * 1e6 / self.handshakes.max(1) as f64
    }

    fn add(&mut self, other: &StormRun) {
        self.handshakes += other.handshakes;
        self.captured += other.captured;
        self.drops += other.drops;
        self.seconds += other.seconds;
        self.sensord_cpu += other.sensord_cpu;
    }
}

/// A process's CPU time so far, user and system, all its threads (`/proc/PID/stat`).
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> u64 { fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0) };
    // utime and stime are fields 14 and 15; `fields[0]` is field 3.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(
        (ticks(11) + ticks(12)) * 1_000_000_000 / hz,
    ))
}

/// Run tls-storm once against a fresh port: (handshakes, seconds).
fn run_storm(
    storm_bin: &Path,
    port: u16,
    opts: &TapBench,
    quic: bool,
) -> anyhow::Result<(u64, f64)> {
    let output = Command::new(storm_bin)
        .args([
            "--port",
            &port.to_string(),
            "--seconds",
            &opts.storm_seconds.to_string(),
        ])
        .args(quic.then_some("--quic"))
        .output()
        .context("running tls-storm")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let field = |name: &str| -> Option<String> {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_owned))
    };
    let handshakes: u64 = field("handshakes")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("tls-storm printed no count: {text}"))?;
    let secs: f64 = field("seconds").and_then(|v| v.parse().ok()).unwrap_or(1.0);
    Ok((handshakes, secs))
}

/// The TCP storm with no sensor: the machine's own rate, the storm's baseline.
fn storm_detached(storm_bin: &Path, opts: &TapBench) -> anyhow::Result<StormRun> {
    let (handshakes, seconds) = run_storm(storm_bin, free_port()?, opts, false)?;
    Ok(StormRun {
        handshakes,
        seconds,
        ..StormRun::default()
    })
}

/// The handshake storm with sensord attached, over TCP or QUIC (quinn clients that keep
/// their UDP socket for every connection).
fn storm(
    sensord: &Path,
    storm_bin: &Path,
    state: &Path,
    opts: &TapBench,
    quic: bool,
) -> anyhow::Result<StormRun> {
    let port = free_port()?;
    let (daemon, stdout) = Sensord::start(sensord, state, true)?;
    let pid = daemon.guard.0.id();
    let stdout = stdout.context("sensord stdout")?;
    let captured = Arc::new(AtomicU64::new(0));
    let counter = captured.clone();
    let needle = format!("\"dst_port\":{port},");
    let transport = if quic {
        "\"transport\":\"quic\""
    } else {
        "\"transport\":\"tcp\""
    };
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(&needle)
                && line.contains("\"server_name\":\"storm.test\"")
                && line.contains(transport)
            {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    say(&format!(
        "storm: {} s of new TLS 1.3 handshakes over {}",
        opts.storm_seconds,
        if quic { "QUIC" } else { "TCP" }
    ));
    let cpu_before = cpu_time(pid)?;
    let (handshakes, seconds) = run_storm(storm_bin, port, opts, quic)?;
    // Let the last flows close and be reported (the half-close grace is 2 s): that work is
    // the storm's too, so the CPU time is read after it.
    std::thread::sleep(Duration::from_secs(4));
    let sensord_cpu = cpu_time(pid)?.saturating_sub(cpu_before);
    let counters = daemon.stop()?;
    let _ = reader.join();
    let drops = counters
        .iter()
        .find(|(k, _)| k == "ringbuf_drops")
        .map_or(0, |(_, v)| *v);
    Ok(StormRun {
        handshakes,
        captured: captured.load(Ordering::Relaxed),
        drops,
        seconds,
        sensord_cpu,
    })
}

fn tempdir(ws: &Workspace) -> anyhow::Result<PathBuf> {
    let dir = ws
        .root
        .join("target")
        .join(format!("bench-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Wall time and peak RSS (KiB) of a command run to completion, its stdout discarded or kept.
fn measured(cmd: &mut Command, keep_stdout: bool) -> anyhow::Result<(Duration, u64, Vec<u8>)> {
    use std::io::Read as _;
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(if keep_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .with_context(|| format!("starting {}", crate::util::describe(cmd)))?;
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_end(&mut out)?;
    }
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid pointers.
    let ret = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    if ret != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{} failed (status {status})", crate::util::describe(cmd));
    }
    Ok((wall, usage.ru_maxrss as u64, out))
}

/// Timed runs of `sensorctl analyze` per thread count (the medians are reported).
const ANALYZE_ROUNDS: usize = 5;

/// `cargo xtask bench analyze`.
pub fn analyze(ws: &Workspace, handshakes: u32) -> anyhow::Result<()> {
    release_binaries(
        ws,
        "the analyze benchmark records its templates with tcpdump: run it as root",
        "sensorctl",
        "bench-capture",
    )?;
    let dir = tempdir(ws)?;
    let capture = dir.join("bench.pcap");
    say(&format!("writing a capture of {handshakes} handshakes"));
    run(Command::new(ws.root.join("target/release/bench-capture"))
        .arg("--handshakes")
        .arg(handshakes.to_string())
        .arg("--out")
        .arg(&capture))?;
    let size_mb = std::fs::metadata(&capture)?.len() as f64 / (1 << 20) as f64;

    // The VM's speed drifts by a third within minutes: rounds of one and two threads in
    // turn, medians reported (and the best round, for the spread).
    let sensorctl = ws.root.join("target/release/sensorctl");
    let (mut one, mut two) = (Vec::new(), Vec::new());
    let (mut rss_kb, mut rss2_kb) = (0, 0);
    for round in 1..=ANALYZE_ROUNDS {
        say(&format!(
            "sensorctl analyze, then with --threads 2 (round {round} of {ANALYZE_ROUNDS})"
        ));
        let (wall, rss, _) = measured(
            Command::new(&sensorctl)
                .args(["analyze", "-o", "json"])
                .arg(&capture),
            false,
        )?;
        one.push(wall.as_secs_f64());
        rss_kb = rss_kb.max(rss);
        let (wall2, rss2, _) = measured(
            Command::new(&sensorctl)
                .args(["analyze", "-o", "json", "--threads", "2"])
                .arg(&capture),
            false,
        )?;
        two.push(wall2.as_secs_f64());
        rss2_kb = rss2_kb.max(rss2);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (wall, wall2) = (median(&mut one), median(&mut two));
    let (best, best2) = (one[0], two[0]);
    // The count, from a second run's statistics (not timed).
    let stats = Command::new(&sensorctl)
        .args(["analyze", "--stats", "-o", "json"])
        .arg(&capture)
        .stdout(Stdio::null())
        .output()?;
    let stats: serde_json::Value = serde_json::from_slice(&stats.stderr).context("--stats JSON")?;
    let ours = stats["engine"]["handshakes"].as_u64().unwrap_or(0);

    say("tshark (this takes a while)");
    let (tshark_wall, tshark_rss_kb, tshark_out) = measured(
        Command::new("tshark")
            .arg("-r")
            .arg(&capture)
            .args(["-Y", "tls.handshake.type==1", "-T", "fields"])
            .args(["-e", "tls.handshake.extensions_server_name"]),
        true,
    )?;
    let theirs = tshark_out
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64;

    println!("capture_handshakes={handshakes}");
    println!("capture_mb={size_mb:.1}");
    println!("analyze_handshakes={ours}");
    println!("analyze_rounds={ANALYZE_ROUNDS}");
    println!("analyze_seconds={wall:.3}");
    println!("analyze_handshakes_per_s={:.0}", ours as f64 / wall);
    println!("analyze_best_handshakes_per_s={:.0}", ours as f64 / best);
    println!("analyze_peak_rss_mb={:.1}", rss_kb as f64 / 1024.0);
    println!(
        "analyze_threads2_handshakes_per_s={:.0}",
        ours as f64 / wall2
    );
    println!(
        "analyze_threads2_best_handshakes_per_s={:.0}",
        ours as f64 / best2
    );
    println!("analyze_threads2_speedup={:.2}", wall / wall2);
    println!(
        "analyze_threads2_peak_rss_mb={:.1}",
        rss2_kb as f64 / 1024.0
    );
    println!("tshark_client_hellos={theirs}");
    println!("tshark_seconds={:.3}", tshark_wall.as_secs_f64());
    println!(
        "tshark_handshakes_per_s={:.0}",
        theirs as f64 / tshark_wall.as_secs_f64()
    );
    println!("tshark_peak_rss_mb={:.1}", tshark_rss_kb as f64 / 1024.0);
    println!(
        "speedup_vs_tshark={:.1}",
        (ours as f64 / wall) / (theirs as f64 / tshark_wall.as_secs_f64())
    );
    println!("same_client_hello_count={}", ours == theirs);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `cargo xtask bench verdict`: the criterion benchmark, its medians as name=value lines.
pub fn verdict(ws: &Workspace) -> anyhow::Result<()> {
    run(ws
        .cargo()
        .args(["bench", "-p", "sensor-core", "--bench", "verdict"]))?;
    for (name, target) in [
        ("verdict_new_chain", "verdict_new_chain_median_us"),
        ("verdict_cached", "verdict_cached_median_us"),
    ] {
        let path = ws
            .root
            .join("target/criterion")
            .join(name)
            .join("new/estimates.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let ns = v["median"]["point_estimate"]
            .as_f64()
            .context("no median in criterion's estimates")?;
        println!("{target}={:.3}", ns / 1000.0);
    }
    Ok(())
}

/// `cargo xtask bench daemon`: event latency, journal rate and daemon memory.
pub fn daemon(ws: &Workspace, rate: u32, seconds: u64) -> anyhow::Result<()> {
    release_binaries(
        ws,
        "the daemon benchmark loads eBPF programs: run it as root",
        "sensord",
        "daemon-bench",
    )?;
    run(Command::new(ws.root.join("target/release/daemon-bench"))
        .arg("--sensord")
        .arg(ws.root.join("target/release/sensord"))
        .args([
            "--rate",
            &rate.to_string(),
            "--seconds",
            &seconds.to_string(),
        ]))
}

/// `cargo xtask bench abuse`: benign capture under floods and a Reload storm; peak memory.
pub fn abuse(ws: &Workspace, seconds: u64) -> anyhow::Result<()> {
    release_binaries(
        ws,
        "the abuse benchmark loads eBPF programs: run it as root",
        "sensord",
        "abuse-bench",
    )?;
    run(Command::new(ws.root.join("target/release/abuse-bench"))
        .arg("--sensord")
        .arg(ws.root.join("target/release/sensord"))
        .args(["--seconds", &seconds.to_string()]))
}

/// `cargo xtask bench durability`: kill -9 cycles, a corrupt journal, a full disk, a clock step.
pub fn durability(ws: &Workspace, cycles: u32, rate: u32) -> anyhow::Result<()> {
    release_binaries(
        ws,
        "the durability benchmark loads eBPF programs and steps the clock: run it as root",
        "sensord",
        "durability-bench",
    )?;
    run(ws.cargo().args([
        "build",
        "--release",
        "-p",
        "sensorctl",
        "--bin",
        "sensorctl",
    ]))?;
    run(
        Command::new(ws.root.join("target/release/durability-bench"))
            .arg("--sensord")
            .arg(ws.root.join("target/release/sensord"))
            .arg("--sensorctl")
            .arg(ws.root.join("target/release/sensorctl"))
            .args(["--cycles", &cycles.to_string(), "--rate", &rate.to_string()]),
    )
}

/// `cargo xtask bench tls13`: curl's TLS 1.3 handshake latency with and without the uprobes.
pub fn tls13(ws: &Workspace, rounds: usize, runs: usize) -> anyhow::Result<()> {
    release_binaries(
        ws,
        "the TLS 1.3 benchmark loads eBPF programs: run it as root",
        "sensord",
        "tls13-bench",
    )?;
    run(Command::new(ws.root.join("target/release/tls13-bench"))
        .arg("--sensord")
        .arg(ws.root.join("target/release/sensord"))
        .args(["--rounds", &rounds.to_string(), "--runs", &runs.to_string()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_instruction_counts_come_from_the_attach_lines() {
        let log = [
            "INFO sensord::daemon: attached: cgroup_skb on /sys/fs/cgroup, verified_insns=347655 \
             hook=\"tap_egress\" program_id=1876",
            "INFO sensord::daemon: attached: cgroup_skb on /sys/fs/cgroup, verified_insns=375730 \
             hook=\"tap_ingress\" program_id=1877",
            "INFO sensord::daemon: attached: uprobe on libssl.so.3 hook=\"openssl\"",
        ]
        .map(str::to_owned);
        assert_eq!(verified_insns(&log), 347_655 + 375_730);
        assert_eq!(verified_insns(&log[2..]), 0);
    }

    #[test]
    fn cpu_time_counts_this_process_s_work() {
        let before = cpu_time(std::process::id()).unwrap();
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = cpu_time(std::process::id()).unwrap();
        assert!(
            after >= before + Duration::from_millis(100),
            "{before:?} then {after:?}"
        );
    }
}
