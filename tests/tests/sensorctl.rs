//! sensorctl, driven as a user drives it (assert_cmd), against the real sensord and real
//! handshakes; `check` against real servers and a real mitmproxy.

use std::{
    io::Read as _,
    net::Ipv4Addr,
    os::fd::{FromRawFd as _, OwnedFd},
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use assert_cmd::Command;
use sensor_tests::{
    Daemon, LocalServer, bin, free_port,
    interceptors::{Origin, mitmproxy_explicit},
    mtls::mtls,
    openssl_client, openssl_server,
    pki::{self, Key},
    unique_name,
};
use serde_json::Value;

/// sensorctl with the daemon's socket and a clean environment (no proxy, no NO_COLOR).
fn ctl(socket: &Path) -> Command {
    let mut c = Command::new(bin("sensorctl"));
    c.env("SENSOR_SOCKET", socket)
        .env_remove("NO_COLOR")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .timeout(Duration::from_secs(60));
    c
}

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("running sensorctl");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A failure is one line on stderr, with no backtrace or panic.
fn assert_one_line_error(out: &Output, needle: &str) {
    assert_eq!(
        out.code,
        Some(2),
        "stdout {} stderr {}",
        out.stdout,
        out.stderr
    );
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.starts_with("sensorctl: "), "{}", out.stderr);
    assert!(out.stderr.contains(needle), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked") && !out.stderr.contains("backtrace"));
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn help_completions_and_man_pages() {
    let out = run(Command::new(bin("sensorctl")).arg("--help"));
    assert_eq!(out.code, Some(0));
    for cmd in [
        "watch", "status", "events", "cert", "check", "analyze", "pins",
    ] {
        assert!(
            out.stdout.contains(cmd),
            "--help lists {cmd}: {}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("Exit codes"), "{}", out.stdout);
    for (shell, needle) in [
        ("bash", "_sensorctl()"),
        ("zsh", "#compdef sensorctl"),
        ("fish", "complete -c sensorctl"),
    ] {
        let out = run(Command::new(bin("sensorctl")).args(["completions", shell]));
        assert_eq!(out.code, Some(0));
        assert!(
            out.stdout.contains(needle),
            "{shell}: {}",
            &out.stdout[..out.stdout.len().min(300)]
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out = run(Command::new(bin("sensorctl"))
        .args(["man", "--out"])
        .arg(dir.path()));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let page = std::fs::read_to_string(dir.path().join("sensorctl.1")).unwrap();
    assert!(page.contains(".TH sensorctl"), "{page}");
    assert!(dir.path().join("sensorctl-watch.1").exists());
}

#[test]
fn errors_are_one_line_that_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no.sock");
    assert_one_line_error(&run(ctl(&missing).arg("status")), "is sensord running?");
    assert_one_line_error(&run(ctl(&missing).arg("events")), "is sensord running?");
    assert_one_line_error(&run(ctl(&missing).args(["cert", "zz"])), "not a SHA-256");
    // Usage errors are clap's: the problem, then a pointer to --help.
    let out = run(ctl(&missing).args(["check", "https://example.com/"]));
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr
            .starts_with("error: invalid value 'https://example.com/'")
            && out.stderr.contains("give a host, not a URL"),
        "{}",
        out.stderr
    );
    assert_one_line_error(
        &run(ctl(&missing).args(["check", &format!("127.0.0.1:{}", free_port())])),
        "cannot connect to 127.0.0.1",
    );

    // A socket this user may not open (a daemon's socket is 0660 root:root).
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join("sensord.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o660)).unwrap();
    let out = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin("sensorctl"))
        .args(["status", "--socket"])
        .arg(&sock));
    assert_one_line_error(&out, "permission denied (add your user to group");
}

#[test]
fn events_watch_status_and_cert_against_a_real_daemon() {
    let daemon = Daemon::start(&[]);
    let socket = daemon.socket();
    let server = LocalServer::start();
    let tag = unique_name("ctl");
    let (a, b) = (format!("a-{tag}"), format!("b-{tag}"));
    let pid_a = server.handshake(&a);
    server.handshake(&b);
    let glob = format!("*-{tag}");

    // watch: from the journal, filtered, two events, then exit.
    let out = run(ctl(&socket)
        .args([
            "watch", "--since", "0", "--count", "2", "-o", "json", "--sni",
        ])
        .arg(&glob));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let events = json_lines(&out.stdout);
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["server_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [a.as_str(), b.as_str()], "{}", out.stdout);
    assert!(events[0]["seq"].as_u64().unwrap() < events[1]["seq"].as_u64().unwrap());
    assert_eq!(events[0]["verdict"], "untrusted");
    assert_eq!(events[0]["process"]["pid"], pid_a);

    // The same as text: one line each, in the documented shape.
    let out = run(ctl(&socket)
        .args(["watch", "--since", "0", "--count", "1", "--sni"])
        .arg(&a));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let line = out.stdout.trim_end();
    let expect = format!("UNTRUSTED openssl[{pid_a}] → {a}:");
    assert!(line.contains(&expect), "{line}");
    assert!(
        line.contains(" TLS1.2 issuer \"localhost\", trusted by nobody here"),
        "{line}"
    );
    assert!(
        !line.contains('\u{1b}'),
        "no colours off a terminal: {line:?}"
    );

    // events: a table, JSON, filters.
    let out = run(ctl(&socket)
        .args(["events", "--since", "1h", "--sni"])
        .arg(&b));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut lines = out.stdout.lines();
    let header = lines.next().unwrap();
    for col in [
        "SEQ",
        "TIME",
        "VERDICT",
        "PROCESS",
        "DESTINATION",
        "TLS",
        "WHY",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    assert!(
        rows[0].contains("UNTRUSTED") && rows[0].contains(&b),
        "{}",
        rows[0]
    );
    let out = run(ctl(&socket)
        .args(["events", "-o", "json", "--verdict", "clean", "--sni"])
        .arg(&b));
    assert_eq!(out.code, Some(0));
    assert!(
        out.stdout.trim().is_empty(),
        "a verdict filter: {}",
        out.stdout
    );
    let out = run(ctl(&socket).args(["events", "-o", "json", "--sni"]).arg(&a));
    let listed = json_lines(&out.stdout);
    assert_eq!(listed.len(), 1);
    let sha = listed[0]["chain"][0]["sha256"].as_str().unwrap().to_owned();

    // cert: a summary, and the PEM.
    let out = run(ctl(&socket).args(["cert", &sha.to_uppercase()]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("[0] CN=localhost"), "{}", out.stdout);
    assert!(out.stdout.contains(&sha), "{}", out.stdout);
    let out = run(ctl(&socket).args(["cert", &sha, "--pem"]));
    assert!(
        out.stdout.starts_with("-----BEGIN CERTIFICATE-----"),
        "{}",
        out.stdout
    );
    let missing = run(ctl(&socket).args(["cert", &"00".repeat(32)]));
    assert_one_line_error(&missing, "no certificate");

    // status: hooks, counters, drops.
    let out = run(ctl(&socket).arg("status"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for needle in [
        "sensord",
        "tap_egress",
        "attached",
        "drops: none",
        "ringbuf_drops",
        "last seq",
    ] {
        assert!(out.stdout.contains(needle), "{needle}: {}", out.stdout);
    }
    let out = run(ctl(&socket).args(["status", "-o", "json"]));
    let status: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(status["kernel_counters"]["ringbuf_drops"], 0);
    assert!(status["journal_events"].as_u64().unwrap() >= 2);
}

#[test]
fn watch_reconnects_after_a_restart_and_resumes_without_gaps() {
    let state = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_in(state, &[]);
    let socket = daemon.socket();
    let server = LocalServer::start();
    let before = unique_name("resume-before");
    let after = unique_name("resume-after");
    let mut watch = std::process::Command::new(bin("sensorctl"))
        .env("SENSOR_SOCKET", &socket)
        .args(["watch", "--count", "2", "-o", "json", "--sni", "resume-*"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    server.handshake(&before);
    std::thread::sleep(Duration::from_secs(1));
    // Restart sensord on the same journal and socket.
    assert!(daemon.interrupt().is_some_and(|s| s.success()));
    let state = std::mem::replace(&mut daemon.state_dir, tempfile::tempdir().unwrap());
    drop(daemon);
    let daemon = Daemon::start_in(state, &[]);
    server.handshake(&after);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = watch.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "watch did not resume");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stdout = String::new();
    watch
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    watch
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stderr}");
    let events = json_lines(&stdout);
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["server_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [before.as_str(), after.as_str()],
        "no gap, no duplicate"
    );
    assert_eq!(
        events[1]["seq"].as_u64().unwrap(),
        events[0]["seq"].as_u64().unwrap() + 1
    );
    assert!(stderr.contains("reconnecting"), "{stderr}");
    drop(daemon);
}

#[test]
fn check_sees_tls13_chains_and_an_intercepting_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(dir.path(), "check-origin.test", Ipv4Addr::LOCALHOST);
    let root = origin.root.cert.to_str().unwrap().to_owned();
    let direct = format!("127.0.0.1:{}", origin.port);
    let trust = ["--public-roots", &root, "--host-roots", &root];

    // Directly: the chain validates publicly (its root stands in for the Web PKI). TLS 1.3,
    // which a passive observer could not judge.
    let nowhere = dir.path().join("none.sock");
    let out = run(ctl(&nowhere)
        .args(["check", &direct, "--sni", &origin.name])
        .args(trust));
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("CLEAN 127.0.0.1:"), "{}", out.stdout);
    assert!(out.stdout.contains("TLS 1.3"), "{}", out.stdout);
    assert!(out.stdout.contains("publicly trusted"), "{}", out.stdout);

    // Through mitmproxy, whose CA this host trusts: intercepted, and named.
    let mitm = mitmproxy_explicit(dir.path());
    let ca = mitm.ca.to_str().unwrap().to_owned();
    let proxy = format!("http://127.0.0.1:{}", mitm.port);
    let out = run(ctl(&nowhere)
        .args([
            "check",
            &direct,
            "--sni",
            &origin.name,
            "--proxy",
            &proxy,
            "-o",
            "json",
        ])
        .args(["--public-roots", &root, "--host-roots", &ca]));
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "intercepted", "{v}");
    assert_eq!(v["interceptor"]["id"], "mitmproxy", "{v}");
    assert_eq!(v["via_proxy"], true);
    assert_eq!(v["tls_version"], "1.3", "{v}");
    assert_eq!(
        v["chain"][0]["issuer"]
            .as_str()
            .map(|s| s.contains("mitmproxy")),
        Some(true)
    );

    // HTTPS_PROXY is honoured, as by other programs on the host, and NO_PROXY too.
    let out = run(ctl(&nowhere)
        .env("HTTPS_PROXY", &proxy)
        .args(["check", &direct, "--sni", &origin.name])
        .args(["--public-roots", &root, "--host-roots", &ca]));
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("INTERCEPTED"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("(mitmproxy), trusted only by this host"),
        "{}",
        out.stdout
    );
    let out = run(ctl(&nowhere)
        .env("HTTPS_PROXY", &proxy)
        .env("NO_PROXY", "127.0.0.1")
        .args(["check", &direct, "--sni", &origin.name])
        .args(trust));
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
}

#[test]
fn pins_add_list_remove_and_the_daemon_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = pki::root(d, "Pins Test Root", Key::P256);
    let name = unique_name("pinned");
    let leaf = pki::issue(d, &root, &name, Key::P256, false, &[&name]);
    let other = pki::root(d, "Pins Other Root", Key::P256);
    let pin_file = d.join("pins.toml");
    std::fs::write(&pin_file, "# pins for the test\n").unwrap();
    let daemon = Daemon::start(&[
        "--public-roots",
        root.cert.to_str().unwrap(),
        "--host-roots",
        root.cert.to_str().unwrap(),
        "--pins",
        pin_file.to_str().unwrap(),
    ]);
    let socket = daemon.socket();
    let port = free_port();
    let _server = openssl_server(port, &leaf.cert, &leaf.key, &[]);
    let connect = format!("127.0.0.1:{port}");

    // Pin another CA's key for the host: the daemon is asked which file, then reloads.
    let out = run(ctl(&socket)
        .args(["pins", "add", "--host", &name, "--from-cert"])
        .arg(&other.cert));
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("sensord reloaded (trust generation 2)"),
        "{}",
        out.stdout
    );
    let text = std::fs::read_to_string(&pin_file).unwrap();
    assert!(
        text.starts_with("# pins for the test\n"),
        "comments stay: {text}"
    );
    let out = run(ctl(&socket).args(["pins", "list"]));
    assert!(
        out.stdout.contains(&format!("host {name}")),
        "{}",
        out.stdout
    );

    openssl_client(&connect, &name, &["-tls1_2"]);
    let out = run(ctl(&socket).args([
        "watch", "--since", "0", "--count", "1", "-o", "json", "--sni", &name,
    ]));
    let ev = &json_lines(&out.stdout)[0];
    assert_eq!(ev["verdict"], "pin_mismatch", "{ev}");

    // A bad pin is refused and the file is left as it was.
    let before = std::fs::read_to_string(&pin_file).unwrap();
    let out = run(ctl(&socket).args(["pins", "add", "--host", "x.test", "--spki", "not-a-pin"]));
    assert_one_line_error(&out, "nothing was changed");
    assert_eq!(std::fs::read_to_string(&pin_file).unwrap(), before);

    // Removed: the next handshake is clean again.
    let out = run(ctl(&socket).args(["pins", "remove", "--host", &name]));
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("trust generation 3"), "{}", out.stdout);
    let first_seq = ev["seq"].as_u64().unwrap();
    openssl_client(&connect, &name, &["-tls1_2"]);
    let out = run(ctl(&socket).args([
        "watch",
        "--since",
        &first_seq.to_string(),
        "--count",
        "1",
        "-o",
        "json",
        "--sni",
        &name,
    ]));
    let ev = &json_lines(&out.stdout)[0];
    assert_eq!(ev["verdict"], "clean", "{ev}");
    let out = run(ctl(&socket).args(["pins", "remove", "--host", &name]));
    assert_one_line_error(&out, "no pins for host");
}

#[test]
fn a_pin_edit_sensord_would_not_load_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pins = dir.path().join("pins.toml");
    let before =
        "[[pin]]\nhost = \"a.test\"\nspki = [\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"]\n";
    std::fs::write(&pins, before).unwrap();
    // sensord's configuration names a catalogue that does not load: sensord --check-config,
    // which sensorctl runs on the edited file, refuses the whole.
    let catalogue = dir.path().join("catalogue.toml");
    std::fs::write(&catalogue, "[[product]]\nname = 1\n").unwrap();
    let config = dir.path().join("sensord.toml");
    std::fs::write(
        &config,
        format!("[trust]\ncatalogue = \"{}\"\n", catalogue.display()),
    )
    .unwrap();
    let nowhere = dir.path().join("none.sock");
    let add = || {
        run(ctl(&nowhere)
            .args(["pins", "add", "--host", "b.test", "--spki"])
            .arg("BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=")
            .arg("--file")
            .arg(&pins)
            .arg("--config")
            .arg(&config))
    };
    let out = add();
    assert_one_line_error(&out, "sensord would not load it");
    assert!(out.stderr.contains("catalogue.toml:2"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&pins).unwrap(), before);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 3, "no temporary file is left behind");
    // With a configuration that loads, the same edit goes through.
    std::fs::write(&config, "").unwrap();
    let out = add();
    assert!(
        out.stdout.contains("pinned 1 key(s)"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    assert!(std::fs::read_to_string(&pins).unwrap().contains("b.test"));
}

#[test]
fn status_over_tcp_needs_the_client_certificate() {
    let m = mtls();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sensord.toml");
    std::fs::write(&config, m.api_section(port, "")).unwrap();
    let _daemon = Daemon::start(&["--config", config.to_str().unwrap()]);
    sensor_tests::wait_listening(&format!("127.0.0.1:{port}"), Duration::from_secs(10));
    let nowhere = dir.path().join("none.sock");
    let endpoint = format!("https://localhost:{port}");
    let out = run(ctl(&nowhere)
        .args(["status", "--endpoint", &endpoint, "--ca"])
        .arg(&m.server_ca.cert)
        .arg("--cert")
        .arg(&m.good_client.cert)
        .arg("--key")
        .arg(&m.good_client.key));
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("tap_egress"), "{}", out.stdout);
    let out = run(ctl(&nowhere)
        .args(["status", "--endpoint", &endpoint, "--ca"])
        .arg(&m.server_ca.cert)
        .arg("--cert")
        .arg(&m.bad_client.cert)
        .arg("--key")
        .arg(&m.bad_client.key));
    assert_eq!(out.code, Some(2), "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
}

/// Open a pseudo-terminal: (master, slave).
fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty with valid out-pointers and no name, termios or window size.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: both descriptors were just opened and are owned here.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Run sensorctl with its stdout on a terminal; what the terminal showed.
fn on_a_terminal(socket: &Path, args: &[&str], no_color: bool) -> String {
    let (master, slave) = openpty();
    let mut cmd = std::process::Command::new(bin("sensorctl"));
    cmd.env("SENSOR_SOCKET", socket)
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let mut child = cmd.spawn().unwrap();
    // The command holds our copies of the terminal's slave end: close them, or the master
    // never sees the end.
    drop(cmd);
    let status = child.wait().unwrap();
    assert!(status.success());
    let mut file = std::fs::File::from(master);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // The slave is closed: read until the terminal reports its end (EIO).
    while let Ok(n) = file.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn watch_on_a_terminal_is_coloured_by_severity() {
    let daemon = Daemon::start(&[]);
    let server = LocalServer::start();
    let name = unique_name("pty");
    let pid = server.handshake(&name);
    let args = ["watch", "--since", "0", "--count", "1", "--sni", &name];
    // watch waits for the event's commit (events, run now, could come before it).
    let json = run(ctl(&daemon.socket()).args([
        "watch", "--since", "0", "--count", "1", "-o", "json", "--sni", &name,
    ]));
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let ev = &json_lines(&json.stdout)[0];
    // openssl s_client goes on with an untrusted chain: critical.
    assert_eq!(ev["severity"], "critical", "{ev}");
    let shown = on_a_terminal(&daemon.socket(), &args, false);
    // Critical: the time dimmed, the verdict and the reason in bold red.
    let verdict = "\u{1b}[1m\u{1b}[31mUNTRUSTED\u{1b}[0m";
    assert!(shown.starts_with("\u{1b}[2m"), "{shown:?}");
    assert!(shown.contains(verdict), "{shown:?}");
    assert!(
        shown.contains(&format!(" openssl[{pid}] → {name}:")),
        "{shown:?}"
    );
    assert!(
        shown.contains("\u{1b}[1m\u{1b}[31missuer \"localhost\", trusted by nobody here"),
        "{shown:?}"
    );
    // NO_COLOR: the same line, plain.
    let plain = on_a_terminal(&daemon.socket(), &args, true);
    assert!(!plain.contains('\u{1b}'), "{plain:?}");
    assert!(plain.contains("UNTRUSTED openssl["), "{plain:?}");
}
