//! `sensorctl report` against a real daemon: clean handshakes, handshakes through a real
//! mitmproxy whose CA this host trusts (intercepted, and named), and an untrusted one whose
//! server name carries markup. The page is opened in headless Chromium (Debian's), and its
//! screenshot is checked for the verdicts' colours: what the browser drew, not only what the
//! file says.

use std::{
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sensor_tests::{
    Daemon, LocalServer, Proc, bin,
    interceptors::{Origin, mitmproxy_explicit},
    openssl_client, workspace_root,
};
use serde_json::Value;

const EVIL: &str = "<i>evil</i>.test";
/// The page's colours for intercepted, untrusted and clean (`report::html::COLOURS`).
const INTERCEPTED: [u8; 3] = [0xc6, 0x28, 0x28];
const UNTRUSTED: [u8; 3] = [0xef, 0x6c, 0x00];
const CLEAN: [u8; 3] = [0x2e, 0x7d, 0x32];

fn ctl(socket: &Path) -> Command {
    let mut c = Command::new(bin("sensorctl"));
    c.env("SENSOR_SOCKET", socket).stdin(Stdio::null());
    c
}

/// Run sensorctl; its output, once it succeeded.
fn ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The journal's events of the last hour, once `until` holds of them (30 s at most).
fn journal(socket: &Path, until: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out =
            ok(ctl(socket).args(["events", "--since", "1h", "--limit", "1000", "-o", "json"]));
        let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if until(&events) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "the journal never held them: {events:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn count(events: &[Value], verdict: &str) -> usize {
    events.iter().filter(|e| e["verdict"] == verdict).count()
}

/// Pixels of exactly `rgb` in an 8-bit RGB or RGBA PNG.
fn pixels(png_file: &Path, rgb: [u8; 3]) -> usize {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_file).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("a screenshot in {other:?}"),
    };
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf[..info.buffer_size()]
        .chunks_exact(step)
        .filter(|p| p[..3] == rgb)
        .count()
}

/// Headless Chromium's screenshot of `page` into `png`.
fn screenshot(page: &Path, png_file: &Path, profile: &Path) {
    let mut chromium = Proc::spawn(
        "chromium",
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                "--window-size=1280,1500",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--screenshot={}", png_file.display()))
            .arg(format!("file://{}", page.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let status = chromium.wait_timeout(Duration::from_secs(120));
    assert!(status.is_some_and(|s| s.success()), "chromium: {status:?}");
    assert!(png_file.exists(), "chromium wrote no screenshot");
}

#[test]
fn the_report_draws_what_the_journal_holds() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(dir.path(), "report-origin.test", Ipv4Addr::LOCALHOST);
    let mitm = mitmproxy_explicit(dir.path());
    let config = dir.path().join("sensord.toml");
    std::fs::write(
        &config,
        format!(
            "[trust]\nhost_roots = [{:?}, {:?}]\npublic_roots = [{:?}]\n",
            origin.root.cert, mitm.ca, origin.root.cert
        ),
    )
    .unwrap();
    let daemon = Daemon::start_in(
        tempfile::tempdir().unwrap(),
        &["--config", config.to_str().unwrap()],
    );
    let socket = daemon.socket();

    let direct = format!("127.0.0.1:{}", origin.port);
    let proxy = format!("127.0.0.1:{}", mitm.port);
    for _ in 0..3 {
        openssl_client(&direct, &origin.name, &["-tls1_2"]);
    }
    for _ in 0..2 {
        openssl_client(&direct, &origin.name, &["-tls1_2", "-proxy", &proxy]);
    }
    let local = LocalServer::start();
    local.handshake(EVIL);
    let events = journal(&socket, |e| {
        count(e, "intercepted") >= 2
            && count(e, "clean") >= 3
            && e.iter().any(|e| e["server_name"] == EVIL)
    });
    let intercepted = count(&events, "intercepted");
    let clean = count(&events, "clean");
    assert!(
        events
            .iter()
            .filter(|e| e["verdict"] == "intercepted")
            .all(|e| e["interceptor"]["id"] == "mitmproxy"),
        "{events:?}"
    );

    let page = dir.path().join("report.html");
    let out = ok(ctl(&socket)
        .args(["report", "--since", "1h", "-o"])
        .arg(&page));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{} handshakes, {intercepted} intercepted",
            events.len()
        )),
        "{stderr}"
    );
    let html = std::fs::read_to_string(&page).unwrap();
    // The numbers are the journal's.
    assert!(
        html.contains(&format!("<b>{}</b>handshakes", events.len())),
        "{html}"
    );
    assert!(html.contains(&format!("<b>{intercepted}</b>intercepted")));
    assert!(html.contains(&format!("<b>{clean}</b>clean")));
    // The product, its issuer, the process and the newest severe events with explanations.
    assert!(html.contains("<td class=\"mono\">mitmproxy</td>"), "{html}");
    assert!(html.contains("<td class=\"mono\">openssl</td>"), "{html}");
    assert!(html.contains("id=\"newest\""), "{html}");
    let explanation = events
        .iter()
        .find(|e| e["verdict"] == "intercepted")
        .and_then(|e| e["explanation"].as_str())
        .unwrap()
        .to_owned();
    assert!(
        html.contains(&explanation.replace('"', "&quot;").replace('\'', "&#39;")),
        "{explanation}"
    );
    // Markup from the network is text, and the page allows no script at all.
    assert!(html.contains("&lt;i&gt;evil&lt;/i&gt;.test"), "{html}");
    assert!(!html.contains(EVIL));
    assert!(!html.contains("<script"));
    assert!(html.contains("default-src 'none'"));

    // What Chromium drew: the bars and cards in the verdicts' colours.
    let shots = workspace_root().join("target/report");
    std::fs::create_dir_all(&shots).unwrap();
    let png_file = shots.join("report.png");
    let _ = std::fs::remove_file(&png_file);
    screenshot(&page, &png_file, &dir.path().join("chromium"));
    for (name, rgb) in [
        ("intercepted", INTERCEPTED),
        ("untrusted", UNTRUSTED),
        ("clean", CLEAN),
    ] {
        let n = pixels(&png_file, rgb);
        assert!(n >= 300, "{name}: {n} pixels in {}", png_file.display());
    }

    // An empty window is a page too, that says so.
    let empty = dir.path().join("empty.html");
    ok(ctl(&socket)
        .args([
            "report",
            "--since",
            "1h",
            "--sni",
            "nothing-matches.invalid",
            "-o",
        ])
        .arg(&empty));
    let html = std::fs::read_to_string(&empty).unwrap();
    assert!(html.contains("<b>0</b>handshakes"), "{html}");
    assert!(html.contains("None in this window."));
}
