//! durability-bench: the figures of `cargo xtask bench durability`, printed as name=value lines.
//!
//! Every event is a benign TLS handshake with a server name of its own, so that the events can
//! be compared by name between the journal, a resuming `sensorctl watch` and the JSON-lines
//! export.
//!
//! - `kill9_cycles`, `lost_committed_events`, `watch_gaps`, `watch_duplicates`,
//!   `export_gaps`, `export_duplicates`: handshakes at `--rate` per second all along while
//!   sensord is killed with SIGKILL after a random 0.3-1.5 s of work, `--cycles` times, and
//!   started again. `sensorctl watch -o json` runs throughout and resumes by itself; an event
//!   it received had been committed (sensord publishes only after the commit), so each one
//!   missing from the journal at the end is a lost committed event.
//! - `corrupt_journal_recovery_s`: sensord stopped, the journal's first page overwritten,
//!   sensord started: the time until it answers with the journal `recovered` and a new event
//!   reaches a subscriber.
//! - `disk_full_recovery_s`: the state directory on a 24 MiB tmpfs that a filler file fills:
//!   commits fail, the journal is `degraded`; the time from freeing the space until it is `ok`
//!   again, with the events of the full period in the journal (`disk_full_lost_events`).
//! - `clock_step_early_expiries`: 50 connections held open in mid-handshake while the wall
//!   clock steps an hour forward and back: flows the engine expired meanwhile
//!   (`flows_expired`), which must be none (they are seconds old).

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use sensor_proto::v1::{Filter, GetStatusRequest, JournalState, ListEventsRequest, WatchRequest};
use tokio_stream::StreamExt as _;

#[derive(Parser)]
struct Args {
    /// The sensord binary.
    #[arg(long)]
    sensord: PathBuf,
    /// The sensorctl binary.
    #[arg(long)]
    sensorctl: PathBuf,
    /// kill -9 cycles.
    #[arg(long, default_value_t = 1000)]
    cycles: u32,
    /// Handshakes (events) per second.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
}

const DOMAIN: &str = "dur.test";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    sensor_tests::require_root();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let server = rt.block_on(sensor_tests::load::Server::start(DOMAIN))?;

    kill9(&rt, &server, &args)?;
    corrupt(&rt, &server, &args)?;
    disk_full(&rt, &server, &args)?;
    clock_step(&rt, &server, &args)?;
    Ok(())
}

/// A sensord with its state in `dir`: the JSON-lines export there too, no probe.
fn sensord(args: &Args, dir: &Path) -> sensor_tests::Proc {
    let config = format!(
        "[probe]\nenabled = false\n[export.jsonl]\npath = \"{}\"\nmax_size_mb = 0\n",
        dir.join("export.jsonl").display()
    );
    sensor_tests::load::sensord(&args.sensord, dir, Some(&config))
}

/// A new state directory and a sensord on it, answering.
fn started(
    rt: &tokio::runtime::Runtime,
    args: &Args,
) -> anyhow::Result<(tempfile::TempDir, PathBuf, sensor_tests::Proc)> {
    let state = tempfile::tempdir()?;
    let socket = state.path().join("sensord.sock");
    let daemon = sensord(args, state.path());
    wait_api(rt, &socket, Duration::from_secs(60)).context("sensord did not start")?;
    Ok((state, socket, daemon))
}

/// Wait for the API to answer; the time it took.
fn wait_api(rt: &tokio::runtime::Runtime, socket: &Path, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if socket.exists() && rt.block_on(status(socket)).is_ok() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

async fn status(socket: &Path) -> anyhow::Result<sensor_proto::v1::Status> {
    let connect = tokio::net::UnixStream::connect(socket);
    tokio::time::timeout(Duration::from_secs(1), connect).await??;
    let mut api = sensor_tests::client::unix(socket).await;
    Ok(api.get_status(GetStatusRequest {}).await?.into_inner())
}

/// Handshakes at `rate` per second, each named `<prefix><n>.dur.test`, until `stop`; the
/// names of those that completed go into `done`.
fn load(
    rt: &tokio::runtime::Runtime,
    server: &sensor_tests::load::Server,
    prefix: &str,
    rate: u32,
    stop: Arc<AtomicBool>,
    done: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()> {
    let (connector, addr) = server.client();
    let prefix = prefix.to_owned();
    rt.spawn(async move {
        let mut ticker =
            tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            ticker.tick().await;
            i += 1;
            let name = format!("{prefix}{i}.{DOMAIN}");
            let (connector, done) = (connector.clone(), done.clone());
            tokio::spawn(async move {
                let hs = sensor_tests::load::handshake(&connector, addr, &name);
                if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(10), hs).await {
                    done.lock().unwrap_or_else(|e| e.into_inner()).push(name);
                }
            });
        }
    })
}

/// Every event's server name in the journal, from ListEvents.
async fn journal_names(socket: &Path) -> anyhow::Result<Vec<String>> {
    let mut api = sensor_tests::client::unix(socket).await;
    let mut names = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = api
            .list_events(ListEventsRequest {
                filter: Some(Filter {
                    sni: vec![format!("*.{DOMAIN}")],
                    ..Filter::default()
                }),
                limit: 1000,
                page_token: page_token.clone(),
                ..ListEventsRequest::default()
            })
            .await
            .context("ListEvents")?
            .into_inner();
        names.extend(page.events.into_iter().map(|e| e.server_name));
        if page.next_page_token.is_empty() {
            return Ok(names);
        }
        page_token = page.next_page_token;
    }
}

/// (names missing from `got` among `want`, names that `got` holds twice or more).
fn compare(want: &HashSet<String>, got: &[String]) -> (usize, usize) {
    let mut count: HashMap<&str, u32> = HashMap::new();
    for n in got {
        *count.entry(n).or_default() += 1;
    }
    let missing = want
        .iter()
        .filter(|n| !count.contains_key(n.as_str()))
        .count();
    let dups = count.values().filter(|&&c| c > 1).count();
    (missing, dups)
}

fn kill9(
    rt: &tokio::runtime::Runtime,
    server: &sensor_tests::load::Server,
    args: &Args,
) -> anyhow::Result<()> {
    let (state, socket, mut daemon) = started(rt, args)?;
    let dir = state.path();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(Mutex::new(Vec::new()));
    let traffic = load(rt, server, "k", args.rate, stop.clone(), done.clone());
    // The subscriber: sensorctl as a user runs it, resuming by itself across restarts.
    let mut watch = sensor_tests::Proc::spawn(
        "sensorctl watch",
        Command::new(&args.sensorctl)
            .args([
                "watch",
                "-o",
                "json",
                "--since",
                "0",
                "--sni",
                &format!("*.{DOMAIN}"),
            ])
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let watched = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let out = watch.child.stdout.take().context("watch stdout")?;
        let watched = watched.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(name) = v["server_name"].as_str()
                {
                    watched
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(name.to_owned());
                }
            }
        })
    };
    let mut cycles = 0;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..args.cycles {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(300 + seed % 1200));
        daemon.signal(libc::SIGKILL);
        let _ = daemon.wait_timeout(Duration::from_secs(10));
        cycles += 1;
        daemon = sensord(args, dir);
        wait_api(rt, &socket, Duration::from_secs(60)).context("sensord did not come back")?;
    }
    // The last run ends cleanly, after the traffic: every event committed and exported.
    stop.store(true, Ordering::Relaxed);
    rt.block_on(traffic)?;
    std::thread::sleep(Duration::from_secs(5));
    let journal = rt.block_on(journal_names(&socket))?;
    daemon.stop();
    watch.stop();
    let _ = reader.join();
    let journal_set: HashSet<String> = journal.iter().cloned().collect();
    let watched = watched.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let watched_set: HashSet<String> = watched.iter().cloned().collect();
    let lost = watched_set.difference(&journal_set).count();
    let (watch_gaps, watch_dups) = compare(&journal_set, &watched);
    // Which ones, for whoever looks into a gap: numbers run in the order they were made.
    let mut missed: Vec<u64> = journal_set
        .difference(&watched_set)
        .filter_map(|n| n.strip_prefix('k')?.split('.').next()?.parse().ok())
        .collect();
    missed.sort_unstable();
    if !missed.is_empty() {
        eprintln!(
            "watch missed (first 40 by number): {:?}",
            &missed[..missed.len().min(40)]
        );
    }
    let export: Vec<String> = std::fs::read_to_string(dir.join("export.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["server_name"].as_str().map(str::to_owned))
        .collect();
    let (export_gaps, export_dups) = compare(&journal_set, &export);
    let completed = done.lock().unwrap_or_else(|e| e.into_inner()).len();
    println!("kill9_cycles={cycles}");
    println!("handshakes_completed={completed}");
    println!("journal_events={}", journal.len());
    println!("lost_committed_events={lost}");
    println!("watch_events={}", watched.len());
    println!("watch_gaps={watch_gaps}");
    println!("watch_duplicates={watch_dups}");
    println!("export_events={}", export.len());
    println!("export_gaps={export_gaps}");
    println!("export_duplicates={export_dups}");
    Ok(())
}

/// Time from starting sensord until the API answers with the journal in `state` and an event
/// made after that reaches a subscriber.
fn recovery(
    rt: &tokio::runtime::Runtime,
    server: &sensor_tests::load::Server,
    socket: &Path,
    since: Instant,
    state: JournalState,
) -> anyhow::Result<Duration> {
    loop {
        if let Ok(s) = rt.block_on(status(socket))
            && s.journal_state() == state
        {
            break;
        }
        anyhow::ensure!(
            since.elapsed() < Duration::from_secs(120),
            "no {state:?} journal"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    rt.block_on(async {
        let mut api = sensor_tests::client::unix(socket).await;
        let mut stream = api
            .watch(WatchRequest {
                tail: true,
                filter: Some(Filter {
                    sni: vec![format!("*.{DOMAIN}")],
                    ..Filter::default()
                }),
                ..WatchRequest::default()
            })
            .await?
            .into_inner();
        let mut n = 0u32;
        loop {
            n += 1;
            server
                .handshake(&format!("r{n}.{DOMAIN}"), Duration::from_secs(5))
                .await?;
            if let Ok(Some(ev)) =
                tokio::time::timeout(Duration::from_millis(200), stream.next()).await
            {
                ev?;
                return Ok(since.elapsed());
            }
            anyhow::ensure!(since.elapsed() < Duration::from_secs(120), "no event");
        }
    })
}

fn corrupt(
    rt: &tokio::runtime::Runtime,
    server: &sensor_tests::load::Server,
    args: &Args,
) -> anyhow::Result<()> {
    let (state, socket, mut daemon) = started(rt, args)?;
    let dir = state.path();
    for i in 0..200 {
        rt.block_on(server.handshake(&format!("c{i}.{DOMAIN}"), Duration::from_secs(5)))?;
    }
    std::thread::sleep(Duration::from_secs(2));
    daemon.stop();
    let journal = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "sqlite"))
        .context("no journal file")?;
    // The first page (SQLite's header among it) overwritten.
    let mut bytes = std::fs::read(&journal)?;
    for b in bytes.iter_mut().take(4096) {
        *b = 0x5a;
    }
    std::fs::write(&journal, bytes)?;
    let start = Instant::now();
    let mut daemon = sensord(args, dir);
    let took = recovery(rt, server, &socket, start, JournalState::Recovered)?;
    daemon.stop();
    println!("corrupt_journal_recovery_s={:.2}", took.as_secs_f64());
    Ok(())
}

fn disk_full(
    rt: &tokio::runtime::Runtime,
    server: &sensor_tests::load::Server,
    args: &Args,
) -> anyhow::Result<()> {
    let mount = tempfile::tempdir()?;
    let dir = mount.path();
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(dir))?;
    let result = (|| -> anyhow::Result<()> {
        let socket = dir.join("sensord.sock");
        let mut daemon = sensord(args, dir);
        wait_api(rt, &socket, Duration::from_secs(60)).context("sensord did not start")?;
        // Fill the file system; then events go on.
        let filler = dir.join("filler");
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=1M", "count=64"])
            .arg(format!("of={}", filler.display()))
            .stderr(Stdio::null())
            .status();
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(Mutex::new(Vec::new()));
        let traffic = load(rt, server, "f", 200, stop.clone(), done.clone());
        let start = Instant::now();
        loop {
            if let Ok(s) = rt.block_on(status(&socket))
                && s.journal_state() == JournalState::Degraded
            {
                break;
            }
            anyhow::ensure!(start.elapsed() < Duration::from_secs(60), "never degraded");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        rt.block_on(traffic)?;
        std::thread::sleep(Duration::from_secs(1));
        std::fs::remove_file(&filler)?;
        let freed = Instant::now();
        let took = recovery(rt, server, &socket, freed, JournalState::Ok)?;
        std::thread::sleep(Duration::from_secs(2));
        let journal: HashSet<String> = rt.block_on(journal_names(&socket))?.into_iter().collect();
        let made = done.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let lost = made.iter().filter(|n| !journal.contains(*n)).count();
        daemon.stop();
        println!("disk_full_recovery_s={:.2}", took.as_secs_f64());
        println!("disk_full_events={}", made.len());
        println!("disk_full_lost_events={lost}");
        Ok(())
    })();
    let _ = Command::new("umount").arg(dir).status();
    result
}

fn clock_step(
    rt: &tokio::runtime::Runtime,
    _server: &sensor_tests::load::Server,
    args: &Args,
) -> anyhow::Result<()> {
    let (_state, socket, mut daemon) = started(rt, args)?;
    // 50 connections in mid-handshake: a record header that promises 512 bytes, 64 of them.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut held = Vec::new();
    let mut accepted = Vec::new();
    let mut partial = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    partial.resize(69, 0x2a);
    for _ in 0..50 {
        let mut s = std::net::TcpStream::connect(addr)?;
        std::io::Write::write_all(&mut s, &partial)?;
        held.push(s);
        accepted.push(listener.accept()?.0);
    }
    std::thread::sleep(Duration::from_secs(2));
    let expired = |rt: &tokio::runtime::Runtime| -> anyhow::Result<u64> {
        let s = rt.block_on(status(&socket))?;
        Ok(s.engine_counters
            .iter()
            .find(|c| c.name == "flows_expired")
            .map_or(0, |c| c.value))
    };
    let before = expired(rt)?;
    for step in [3600i64, -3600] {
        step_clock(step)?;
        std::thread::sleep(Duration::from_secs(3));
    }
    let after = expired(rt)?;
    drop(held);
    daemon.stop();
    println!("clock_steps=2");
    println!("clock_step_early_expiries={}", after - before);
    Ok(())
}

/// Step CLOCK_REALTIME by `secs`.
fn step_clock(secs: i64) -> anyhow::Result<()> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime and clock_settime with a valid pointer; the bench runs as root and
    // steps the clock back by as much.
    unsafe {
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
        ts.tv_sec += secs;
        anyhow::ensure!(
            libc::clock_settime(libc::CLOCK_REALTIME, &ts) == 0,
            "clock_settime: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status()?;
    anyhow::ensure!(status.success(), "{cmd:?}: {status}");
    Ok(())
}
