//! The shipped Prometheus alerting rules (dist/prometheus) pass Prometheus' own checks and unit
//! tests, and a real Prometheus (Debian's) scrapes a real sensord with them loaded: the
//! scrape is up, the handshake counter arrives, and an untrusted chain fires its alert.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sensor_tests::{Daemon, LocalServer, Proc, free_port, unique_name, workspace_root};
use serde_json::Value;

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (cargo xtask setup installs Debian's prometheus)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {said}");
    said
}

#[test]
fn the_alerting_rules_pass_promtools_checks_and_unit_tests() {
    let dir = workspace_root().join("dist/prometheus");
    let said = promtool(&["check", "rules", "sensor-alerts.yml"], &dir);
    assert!(said.contains("SUCCESS: 6 rules found"), "{said}");
    let said = promtool(&["test", "rules", "sensor-alerts.test.yml"], &dir);
    assert!(said.contains("SUCCESS"), "{said}");
}

/// GET `url` with curl; its body.
fn get(url: &str) -> Option<Value> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "5", url])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Poll Prometheus' API at `api` for `query` until `until` holds of its data.
fn wait_for(api: &str, path: &str, timeout: Duration, until: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Some(v) = get(&format!("{api}{path}")) {
            if until(&v["data"]) {
                return v["data"].clone();
            }
            last = v;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{path}: not there after {timeout:?}; last answer: {last}");
}

#[test]
fn a_real_prometheus_scrapes_sensord_and_fires_the_alert() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let config = dir.path().join("sensord.toml");
    std::fs::write(
        &config,
        format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"),
    )
    .unwrap();
    let _daemon = Daemon::start_in(
        tempfile::tempdir().unwrap(),
        &["--config", config.to_str().unwrap()],
    );

    let rules = workspace_root().join("dist/prometheus/sensor-alerts.yml");
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: sensor\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n",
            rules.display()
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let _prometheus = Proc::spawn(
        "prometheus",
        Command::new("prometheus")
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let api = format!("http://127.0.0.1:{prom_port}");

    // The scrape works and the rules loaded.
    wait_for(
        &api,
        "/api/v1/query?query=up%7Bjob%3D%22sensor%22%7D",
        Duration::from_secs(60),
        |d| d["result"][0]["value"][1] == "1",
    );
    let groups = wait_for(&api, "/api/v1/rules", Duration::from_secs(10), |d| {
        d["groups"].as_array().is_some_and(|g| !g.is_empty())
    });
    let names: Vec<&str> = groups["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(names.contains(&"TLSInterception"), "{names:?}");
    // Nothing fires on a quiet host.
    let quiet = get(&format!("{api}/api/v1/alerts")).unwrap();
    assert_eq!(quiet["data"]["alerts"], serde_json::json!([]), "{quiet}");

    // A self-signed server's chain: untrusted, once scraped twice.
    let server = LocalServer::start();
    server.handshake(&unique_name("prom"));
    let seen = wait_for(
        &api,
        "/api/v1/query?query=sensor_handshakes_total%7Bverdict%3D%22untrusted%22%7D",
        Duration::from_secs(30),
        |d| {
            d["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v >= 1.0)
        },
    );
    assert_eq!(seen["result"][0]["metric"]["job"], "sensor", "{seen}");
    server.handshake(&unique_name("prom"));
    let alerts = wait_for(&api, "/api/v1/alerts", Duration::from_secs(30), |d| {
        d["alerts"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["labels"]["alertname"] == "TLSUntrustedChain" && x["state"] == "firing")
        })
    });
    let fired: Vec<&str> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["labels"]["alertname"].as_str())
        .collect();
    assert!(
        !fired.contains(&"TLSInterception") && !fired.contains(&"SensorEventsLost"),
        "only the untrusted chain's alert: {fired:?}"
    );
}
