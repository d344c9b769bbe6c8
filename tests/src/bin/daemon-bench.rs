//! daemon-bench: the figures of `cargo xtask bench daemon`, printed as name=value lines.
//!
//! - `event_latency_p99_ms`: new TLS handshakes at `--rate` per second on loopback for
//!   `--seconds`, and a Watch subscriber on sensord's socket; for each event, the time from the
//!   kernel seeing the ClientHello to the subscriber receiving the event. The same again at
//!   `--high-rate` from two generator processes (`event_latency_p99_ms_high`,
//!   `events_lost_high`). Each generator process runs its own server and clients.
//! - `journal_events_per_s`: the journal's own write rate, batches of 512 typical events.
//! - `daemon_rss_mb_idle` and `daemon_rss_mb_10k_flows`: sensord's resident memory, idle, and
//!   while 10,000 connections sit in the middle of a handshake (the engine tracks each).

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use sensor_proto::v1::WatchRequest;
use tokio::{io::AsyncWriteExt as _, net::TcpStream};
use tokio_stream::StreamExt as _;

#[derive(Parser)]
struct Args {
    /// The sensord binary.
    #[arg(long)]
    sensord: PathBuf,
    /// Handshakes per second for the latency run.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Handshakes per second of the second latency run, from two generator processes (0:
    /// none).
    #[arg(long, default_value_t = 5000)]
    high_rate: u32,
    /// Internal: be one generator process, making handshakes at `--rate` for `--seconds`
    /// under the given domain and printing the names of those that completed.
    #[arg(long, hide = true)]
    generate: Option<String>,
    /// Internal: the generator's number, in the names of its handshakes.
    #[arg(long, hide = true, default_value_t = 0)]
    generator_id: u32,
    /// Connections held in mid-handshake for the memory figure.
    #[arg(long, default_value_t = 10_000)]
    flows: usize,
    /// Internal: accept and hold connections, printing the port (the server side of the
    /// memory run lives in its own process, as one process may not open 20,000 descriptors).
    #[arg(long, hide = true)]
    hold_server: bool,
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resident memory of a process's own mappings, leaving out BPF maps it has mmapped (the ring
/// buffer is kernel memory that shows in the reader's RSS, its data area twice).
fn rss_mb_without_maps(pid: u32) -> f64 {
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return 0.0;
    };
    let mut kb = 0.0;
    let mut bpf = false;
    for line in smaps.lines() {
        if let Some(rss) = line.strip_prefix("Rss:") {
            if !bpf {
                kb += rss
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0);
            }
        } else if line
            .split_whitespace()
            .next()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            bpf = line.contains("anon_inode:bpf-map");
        }
    }
    kb / 1024.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    raise_fd_limit();
    if args.hold_server {
        return hold_server();
    }
    if let Some(domain) = &args.generate {
        return generate(domain, args.generator_id, args.rate, args.seconds);
    }
    sensor_tests::require_root();
    let journal_rate = journal_bench()?;
    let state = tempfile::tempdir()?;
    let socket = state.path().join("sensord.sock");
    let mut sensord = sensor_tests::load::sensord(&args.sensord, state.path(), None);
    let pid = sensord.pid();
    std::thread::sleep(Duration::from_secs(5));
    let idle = rss_mb(pid);
    let idle_own = rss_mb_without_maps(pid);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let low = rt.block_on(latency(
        &socket,
        "low.latency.test",
        args.rate,
        args.seconds,
        1,
    ))?;
    let high = (args.high_rate > 0)
        .then(|| {
            rt.block_on(latency(
                &socket,
                "high.latency.test",
                args.high_rate,
                args.seconds,
                2,
            ))
        })
        .transpose()?;
    let loaded = rt.block_on(hold_flows(args.flows, pid))?;
    sensord.stop();

    println!("journal_events_per_s={journal_rate:.0}");
    println!("event_rate_per_s={}", args.rate);
    println!("handshakes_made={}", low.made);
    println!("events_received={}", low.received);
    println!("events_lost={}", low.lost());
    println!("event_latency_p50_ms={:.2}", low.p50);
    println!("event_latency_p99_ms={:.2}", low.p99);
    if let Some(high) = high {
        println!("event_rate_per_s_high={}", args.high_rate);
        println!("handshakes_made_high={}", high.made);
        println!("events_received_high={}", high.received);
        println!("events_lost_high={}", high.lost());
        println!("event_latency_p50_ms_high={:.2}", high.p50);
        println!("event_latency_p99_ms_high={:.2}", high.p99);
    }
    println!("daemon_rss_mb_idle={idle:.1}");
    println!("daemon_rss_mb_idle_without_ring={idle_own:.1}");
    println!("daemon_rss_mb_{}_flows={loaded:.1}", args.flows);
    Ok(())
}

/// Raise the soft descriptor limit to the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The server side of the memory run: accept and hold every connection until stdin closes.
fn hold_server() -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            match s {
                Ok(s) => held.push(s),
                Err(e) => {
                    eprintln!("hold-server: accept: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    });
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    Ok(())
}

/// Events per second the journal commits, in batches of 512 events of about 1.5 KB with a
/// certificate each.
fn journal_bench() -> anyhow::Result<f64> {
    use sensor_core::event::{Event, Handshake, Judgement, Reason, Severity, Timestamp, Verdict};
    use sensord::journal::{self, Journal, NewEvent};
    let dir = tempfile::tempdir()?;
    let mut j = Journal::open(&journal::path_in(dir.path()))?;
    let batch: Vec<NewEvent> = (0..512)
        .map(|i| {
            let mut e = NewEvent::of(Event {
                handshake: Handshake {
                    time: Timestamp(i),
                    server_name: Some(format!("host{i}.example.com")),
                    dst_port: 443,
                    ..Handshake::default()
                },
                process: None,
                judgement: Some(Judgement {
                    verdict: Verdict::Clean,
                    reasons: vec![Reason::PublicRoot],
                    severity: Severity::Info,
                    explanation: "x".repeat(500),
                    interceptor: None,
                    extra_certificates: Vec::new(),
                    interceptor_grade: None,
                }),
                host: None,
            });
            e.certs = vec![(format!("{:064x}", i % 16), vec![7u8; 1200])];
            e
        })
        .collect();
    let bytes = batch[0].json.len();
    assert!((1_300..1_700).contains(&bytes), "an event of {bytes} bytes");
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(5) {
        j.append(&batch)?;
        n += batch.len() as u64;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// What a latency run measured.
struct Latency {
    p50: f64,
    p99: f64,
    /// Events the subscriber received for handshakes the generators completed.
    received: u64,
    /// Handshakes the generators completed.
    made: u64,
}

impl Latency {
    fn lost(&self) -> u64 {
        self.made - self.received
    }
}

/// Handshakes at `rate` per second from `generators` processes, each with its own server, for
/// names under `domain`; a subscriber measures capture-to-subscriber latency.
async fn latency(
    socket: &std::path::Path,
    domain: &str,
    rate: u32,
    seconds: u64,
    generators: u32,
) -> anyhow::Result<Latency> {
    let mut api = sensor_tests::client::unix(socket).await;
    let mut stream = api
        .watch(WatchRequest {
            tail: true,
            filter: Some(sensor_proto::v1::Filter {
                sni: vec![format!("*.{domain}")],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .context("Watch")?
        .into_inner();
    // Latency by server name: every handshake has its own.
    let collector = tokio::spawn(async move {
        let mut lat = std::collections::HashMap::new();
        while let Ok(Some(Ok(ev))) =
            tokio::time::timeout(Duration::from_secs(10), stream.next()).await
        {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i128);
            let t = ev
                .time
                .map_or(0, |t| t.seconds as i128 * 1_000_000_000 + t.nanos as i128);
            lat.insert(ev.server_name, (now - t) as f64 / 1e6);
        }
        lat
    });
    let me = std::env::current_exe()?;
    let each = rate.div_ceil(generators.max(1));
    let mut children = Vec::new();
    for _ in 0..generators {
        children.push(
            Command::new(&me)
                .arg("--sensord=-")
                .arg(format!("--generate={domain}"))
                .arg(format!("--generator-id={}", children.len()))
                .arg(format!("--rate={each}"))
                .arg(format!("--seconds={seconds}"))
                .stdout(Stdio::piped())
                .spawn()
                .context("starting a generator process")?,
        );
    }
    // The names of the handshakes that completed, one per line from each generator.
    let made = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        let mut made = Vec::new();
        for (g, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output()?;
            anyhow::ensure!(out.status.success(), "generator {g} failed");
            made.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::to_owned),
            );
        }
        Ok(made)
    })
    .await??;
    let got = collector.await?;
    let mut lat: Vec<f64> = made
        .iter()
        .filter_map(|name| got.get(name.as_str()).copied())
        .collect();
    lat.sort_by(f64::total_cmp);
    Ok(Latency {
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        received: lat.len() as u64,
        made: made.len() as u64,
    })
}

/// One generator process: a server for `*.domain` and handshakes to it at `rate` per second
/// for `seconds`, each for its own name (`h<n>-g<id>.domain`); prints the names of those that
/// completed, one per line.
fn generate(domain: &str, id: u32, rate: u32, seconds: u64) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let made = rt.block_on(async {
        let server = sensor_tests::load::Server::start(domain).await?;
        let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = tokio::task::JoinSet::new();
        let mut n = 0u64;
        while Instant::now() < deadline {
            ticker.tick().await;
            n += 1;
            let (connector, addr) = server.client();
            let name = format!("h{n}-g{id}.{domain}");
            tasks.spawn(async move {
                let ok = tokio::time::timeout(
                    Duration::from_secs(10),
                    sensor_tests::load::handshake(&connector, addr, &name),
                )
                .await
                .is_ok_and(|r| r.is_ok());
                ok.then_some(name)
            });
        }
        let mut made = Vec::new();
        while let Some(done) = tasks.join_next().await {
            made.extend(done.ok().flatten());
        }
        anyhow::Ok(made)
    })?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for name in made {
        std::io::Write::write_all(&mut out, format!("{name}\n").as_bytes())?;
    }
    std::io::Write::flush(&mut out)?;
    Ok(())
}

/// Hold `n` connections in mid-handshake (a ClientHello record header and part of its body),
/// then read sensord's memory.
async fn hold_flows(n: usize, pid: u32) -> anyhow::Result<f64> {
    let mut server = Command::new(std::env::current_exe()?)
        .arg("--sensord=-")
        .arg("--hold-server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the holding server")?;
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().context("stdout")?),
        &mut port,
    )?;
    let addr: SocketAddr = format!("127.0.0.1:{}", port.trim()).parse()?;
    let mut clients = Vec::with_capacity(n);
    // A handshake record that promises 512 bytes, of which 64 come.
    let mut partial = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    partial.resize(69, 0x2a);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connection {} of {n}", clients.len()))?;
        s.write_all(&partial).await?;
        clients.push(s);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = rss_mb(pid);
    drop(clients);
    drop(server.stdin.take());
    server.wait()?;
    Ok(rss)
}
