//! abuse-bench: the figures of `cargo xtask bench abuse`, printed as name=value lines.
//!
//! Benign TLS handshakes (`--benign-rate` per second, each with its own server name) go to a
//! local server for `--seconds` while the host is abused, and a Watch subscriber collects the
//! events sensord reports for them:
//!
//! - Phase 1, floods: an unprivileged local user (uid 65534) writes 1-byte segments with
//!   `TCP_NODELAY` on loopback, flow after flow, each opened with a TLS record header so that
//!   the kernel follows it; and a "remote" client sends `--hellos-per-min` ClientHellos whose
//!   fields are as long as the protocol allows (32,000 ALPN protocols, or a 65,000-byte server
//!   name). `benign_captured_ratio` is the share of completed benign handshakes with an event,
//!   `benign_ringbuf_drops` the kernel's ring buffer drops meanwhile, `peak_rss_mb` sensord's
//!   peak resident memory (VmHWM, ring buffer mappings included).
//! - Phase 2, reload storm: a member of the API socket's group and of `api.admin_group`
//!   (uid 65534, gid `nogroup`) calls Reload `--reloads-per-s` times a second.
//!   `reload_storm_capture_ratio` as above, with how many calls were done, rate-limited,
//!   denied or failed.

use std::{
    collections::HashSet,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use sensor_proto::v1::{GetStatusRequest, ReloadRequest, WatchRequest};
use tokio_stream::StreamExt as _;

/// The unprivileged user and group of the abusers (Debian's nobody and nogroup).
const NOBODY: u32 = 65534;
const NOGROUP: &str = "nogroup";

#[derive(Parser)]
struct Args {
    /// The sensord binary.
    #[arg(long, default_value = "-")]
    sensord: PathBuf,
    /// Seconds of each phase.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Benign handshakes per second.
    #[arg(long, default_value_t = 200)]
    benign_rate: u32,
    /// Oversized ClientHellos per minute.
    #[arg(long, default_value_t = 2000)]
    hellos_per_min: u32,
    /// Connections the 1-byte flood keeps open at once.
    #[arg(long, default_value_t = 16)]
    flood_flows: usize,
    /// Reload calls per second in the storm.
    #[arg(long, default_value_t = 100)]
    reloads_per_s: u32,
    /// Internal: be the 1-byte flooder against this port (run as an unprivileged user).
    #[arg(long, hide = true)]
    flood_tiny: Option<u16>,
    /// Internal: be the reload caller against this socket (run as a group member).
    #[arg(long, hide = true)]
    reload_storm: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(port) = args.flood_tiny {
        return flood_tiny(port, args.flood_flows, Duration::from_secs(args.seconds));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Some(socket) = args.reload_storm {
        return rt.block_on(reload_storm(
            &socket,
            args.reloads_per_s,
            Duration::from_secs(args.seconds),
        ));
    }
    sensor_tests::require_root();
    let state = tempfile::tempdir()?;
    // The abusers run as nobody: they must reach the socket (the group decides the rest).
    std::fs::set_permissions(
        state.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let socket = state.path().join("sensord.sock");
    // The storm's caller is in the admin group: the strongest case, where only the rate limit
    // stands between it and the capture loop.
    let config = format!("[api]\nsocket_group = \"{NOGROUP}\"\nadmin_group = \"{NOGROUP}\"\n");
    let mut sensord = sensor_tests::load::sensord(&args.sensord, state.path(), Some(&config));
    let pid = sensord.pid();
    std::thread::sleep(Duration::from_secs(3));
    let seconds = Duration::from_secs(args.seconds);

    // Phase 1: floods.
    let sink = Sink::start()?;
    let drops_before = rt.block_on(kernel_counter(&socket, "ringbuf_drops"))?;
    let cut_before = rt.block_on(kernel_counter(&socket, "ring_budget_exhausted"))?;
    let mut tiny = sensor_tests::Proc::spawn(
        "abuse-bench flood",
        Command::new(std::env::current_exe()?)
            .arg(format!("--flood-tiny={}", sink.port))
            .arg(format!("--flood-flows={}", args.flood_flows))
            .arg(format!("--seconds={}", args.seconds + 2))
            .uid(NOBODY)
            .gid(NOBODY)
            .stdout(Stdio::piped()),
    );
    let stop_hellos = Arc::new(AtomicBool::new(false));
    let hellos = {
        let stop = stop_hellos.clone();
        let per_min = args.hellos_per_min;
        let port = sink.port;
        std::thread::spawn(move || big_hellos(port, per_min, &stop))
    };
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        let stop = stop_hellos.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(vm_hwm_kb(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let flood = rt.block_on(benign(&socket, "flood", args.benign_rate, seconds))?;
    stop_hellos.store(true, Ordering::Relaxed);
    let hellos_sent = hellos
        .join()
        .map_err(|_| anyhow::anyhow!("hello flood panicked"))?;
    let _ = sampler.join();
    let tiny_out = tiny_report(&mut tiny);
    let drops = rt.block_on(kernel_counter(&socket, "ringbuf_drops"))? - drops_before;
    let cut = rt.block_on(kernel_counter(&socket, "ring_budget_exhausted"))? - cut_before;
    peak.fetch_max(vm_hwm_kb(pid), Ordering::Relaxed);

    // Phase 2: a reload storm.
    let mut storm = sensor_tests::Proc::spawn(
        "abuse-bench reloads",
        Command::new(std::env::current_exe()?)
            .arg("--reload-storm")
            .arg(&socket)
            .arg(format!("--reloads-per-s={}", args.reloads_per_s))
            .arg(format!("--seconds={}", args.seconds))
            .uid(NOBODY)
            .gid(group_id(NOGROUP)?)
            .stdout(Stdio::piped()),
    );
    let reloads = rt.block_on(benign(&socket, "reload", args.benign_rate, seconds))?;
    let storm_out = tiny_report(&mut storm);
    sensord.stop();
    sink.stop();

    println!("benign_handshakes={}", flood.completed);
    println!("benign_events={}", flood.captured);
    println!("benign_captured_ratio={:.4}", flood.ratio());
    println!("benign_ringbuf_drops={drops}");
    println!("flood_flows_cut={cut}");
    for line in tiny_out.lines() {
        println!("tiny_flood_{line}");
    }
    println!("oversized_hellos_sent={hellos_sent}");
    println!(
        "peak_rss_mb={:.1}",
        peak.load(Ordering::Relaxed) as f64 / 1024.0
    );
    println!("reload_storm_handshakes={}", reloads.completed);
    println!("reload_storm_capture_ratio={:.4}", reloads.ratio());
    for line in storm_out.lines() {
        println!("reload_storm_{line}");
    }
    Ok(())
}

/// What a benign run did and saw.
struct Benign {
    completed: usize,
    captured: usize,
}

impl Benign {
    fn ratio(&self) -> f64 {
        if self.completed == 0 {
            return 0.0;
        }
        self.captured as f64 / self.completed as f64
    }
}

/// Benign handshakes at `rate` per second for `duration`, each to `b<i>.<label>.benign.test`;
/// how many completed and how many of those sensord reported.
async fn benign(
    socket: &Path,
    label: &str,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<Benign> {
    let domain = format!("{label}.benign.test");
    let server = sensor_tests::load::Server::start(&domain).await?;
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
    let collector = tokio::spawn(async move {
        let mut names: HashSet<String> = HashSet::new();
        while let Ok(Some(Ok(ev))) =
            tokio::time::timeout(Duration::from_secs(15), stream.next()).await
        {
            names.insert(ev.server_name);
        }
        names
    });
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    let mut i = 0u64;
    while Instant::now() < deadline {
        ticker.tick().await;
        i += 1;
        let name = format!("b{i}.{domain}");
        let (connector, addr) = server.client();
        tasks.push(tokio::spawn(async move {
            let done = sensor_tests::load::handshake(&connector, addr, &name);
            tokio::time::timeout(Duration::from_secs(20), done)
                .await
                .ok()
                .and_then(Result::ok)
                .map(|()| name)
        }));
    }
    let mut completed = HashSet::new();
    for t in tasks {
        if let Ok(Some(name)) = t.await {
            completed.insert(name);
        }
    }
    drop(server);
    let seen = collector.await?;
    Ok(Benign {
        completed: completed.len(),
        captured: completed.iter().filter(|n| seen.contains(*n)).count(),
    })
}

/// A local TCP server that reads and discards whatever the abusers send.
struct Sink {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Sink {
    fn start() -> anyhow::Result<Self> {
        let listener = StdListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                        std::thread::spawn(move || {
                            let mut buf = [0u8; 65536];
                            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Ok(Self { port, stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// The 1-byte flood, as an unprivileged user: `flows` connections at once, each opened with a
/// handshake record header promising 16 KiB, then fed one byte per segment; a flow that has
/// sent its 16 KiB closes and another opens. Prints how many segments and flows it made.
fn flood_tiny(port: u16, flows: usize, duration: Duration) -> anyhow::Result<()> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let open = || -> anyhow::Result<(StdStream, usize)> {
        let mut s = StdStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.write_all(&[0x16, 0x03, 0x01, 0x40, 0x00])?;
        Ok((s, 0))
    };
    let mut conns = (0..flows)
        .map(|_| open())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (mut segments, mut opened) = (0u64, flows as u64);
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        for c in &mut conns {
            if c.1 >= 16_384 {
                *c = open()?;
                opened += 1;
            }
            c.0.write_all(&[0x2a])?;
            c.1 += 1;
            segments += 1;
        }
    }
    println!("segments={segments}");
    println!("flows={opened}");
    Ok(())
}

/// ClientHellos as long as the protocol allows, `per_min` a minute, until `stop`: one with
/// 32,000 one-byte ALPN protocols, the next with a 65,000-byte server name. The count sent.
fn big_hellos(port: u16, per_min: u32, stop: &AtomicBool) -> u64 {
    let alpn = oversized_hello(true);
    let sni = oversized_hello(false);
    let interval = Duration::from_secs_f64(60.0 / f64::from(per_min.max(1)));
    let mut next = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let hello = if sent.is_multiple_of(2) { &alpn } else { &sni };
        if let Ok(mut s) = StdStream::connect(("127.0.0.1", port))
            && s.write_all(hello).is_ok()
        {
            sent += 1;
        }
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    sent
}

/// A ClientHello in TLS records (16 KiB each), with either 32,000 ALPN protocols or a
/// 65,000-byte server name.
fn oversized_hello(alpn: bool) -> Vec<u8> {
    let mut ext = Vec::new();
    let mut push = |ty: u16, data: &[u8]| {
        ext.extend_from_slice(&ty.to_be_bytes());
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(data);
    };
    if alpn {
        let mut protos = (64_000u16).to_be_bytes().to_vec();
        for _ in 0..32_000 {
            protos.extend_from_slice(&[1, b'x']);
        }
        push(
            0,
            &[
                0, 14, 0, 0, 11, b'a', b'l', b'p', b'n', b'.', b'a', b'b', b'u', b's', b'e', b'd',
            ],
        );
        push(16, &protos);
    } else {
        let name = vec![b'a'; 65_000];
        let mut sni = ((name.len() + 3) as u16).to_be_bytes().to_vec();
        sni.push(0);
        sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni.extend_from_slice(&name);
        push(0, &sni);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut msg = vec![1];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    let mut out = Vec::new();
    for chunk in msg.chunks(16_384) {
        out.extend_from_slice(&[0x16, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Reload `per_s` times a second for `duration` as whoever runs this; prints how many calls
/// were done, refused by sensord, or failed at the transport.
async fn reload_storm(socket: &Path, per_s: u32, duration: Duration) -> anyhow::Result<()> {
    let mut api = sensor_tests::client::unix(socket).await;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(per_s.max(1))));
    let deadline = Instant::now() + duration;
    let (mut done, mut refused, mut limited, mut denied, mut failed) = (0u64, 0, 0, 0, 0);
    while Instant::now() < deadline {
        ticker.tick().await;
        match api.reload(ReloadRequest {}).await {
            Ok(r) if r.get_ref().ok => done += 1,
            Ok(_) => refused += 1,
            Err(s) if s.code() == tonic::Code::ResourceExhausted => limited += 1,
            Err(s) if s.code() == tonic::Code::PermissionDenied => denied += 1,
            Err(_) => failed += 1,
        }
    }
    println!("calls_done={done}");
    println!("calls_refused={refused}");
    println!("calls_rate_limited={limited}");
    println!("calls_denied={denied}");
    println!("calls_failed={failed}");
    Ok(())
}

/// A helper process's name=value lines, once it has exited.
fn tiny_report(p: &mut sensor_tests::Proc) -> String {
    let mut out = String::new();
    if p.wait_timeout(Duration::from_secs(30)).is_none() {
        p.stop();
    }
    if let Some(mut stdout) = p.child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    out
}

/// The value of one kernel counter, from GetStatus.
async fn kernel_counter(socket: &Path, name: &str) -> anyhow::Result<u64> {
    let mut api = sensor_tests::client::unix(socket).await;
    let status = api.get_status(GetStatusRequest {}).await?.into_inner();
    Ok(status
        .kernel_counters
        .iter()
        .find(|c| c.name == name)
        .map_or(0, |c| c.value))
}

/// Peak resident memory (VmHWM) of a process, in KiB.
fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The id of a group, from /etc/group.
fn group_id(name: &str) -> anyhow::Result<u32> {
    let text = std::fs::read_to_string("/etc/group")?;
    text.lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(name)).then(|| f.nth(1)?.parse().ok())?
        })
        .with_context(|| format!("no group {name} in /etc/group"))
}
