//! The OTLP export against a receiver built on OpenTelemetry's own generated protobufs (PyPI
//! opentelemetry-proto; no OpenTelemetry Collector is packaged for this machine, see the
//! README): over gRPC and over HTTP, with the semantic conventions' attribute names, the host as
//! the resource, retries of refused requests, and a receiver restart with events made while
//! it was down. Two sensord runs with different machine ids send to one receiver; every event
//! arrives exactly once, from its host.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sensor_tests::{
    Daemon, LocalServer, Proc, free_port, unique_name, venv_program, wait_listening, workspace_root,
};
use serde_json::Value;

struct Receiver {
    proc: Option<Proc>,
    grpc: u16,
    http: u16,
    out: PathBuf,
}

impl Receiver {
    fn start(dir: &Path, refuse: u32) -> Self {
        let mut r = Self {
            proc: None,
            grpc: free_port(),
            http: free_port(),
            out: dir.join("received.jsonl"),
        };
        r.restart(refuse);
        r
    }

    fn restart(&mut self, refuse: u32) {
        self.proc = Some(Proc::spawn(
            "otlp receiver",
            Command::new(venv_program("python3"))
                .arg(workspace_root().join("tests/otlp/receiver.py"))
                .args(["--grpc-port", &self.grpc.to_string()])
                .args(["--http-port", &self.http.to_string()])
                .arg("--out")
                .arg(&self.out)
                .args(["--refuse", &refuse.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        ));
        wait_listening(&format!("127.0.0.1:{}", self.http), Duration::from_secs(30));
        wait_listening(&format!("127.0.0.1:{}", self.grpc), Duration::from_secs(30));
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
    }

    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn wait_for(&self, name: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(r) = self
                .records()
                .into_iter()
                .find(|r| r["attributes"]["tls.client.server_name"]["stringValue"] == name)
            {
                return r;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "{name} never reached the receiver; it has:\n{}",
            std::fs::read_to_string(&self.out).unwrap_or_default()
        );
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config(dir: &Path, name: &str, endpoint: &str, protocol: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[export.otlp]\nendpoint = \"{endpoint}\"\nprotocol = \"{protocol}\"\n\
             headers = {{ authorization = \"Bearer test\" }}\n\
             [export.otlp.filter]\nsni = [\"otlp-*\"]\n[host]\nlabels = {{ site = \"lab\" }}\n"
        ),
    )
    .unwrap();
    path
}

const HOST_A: &str = "cccccccccccccccccccccccccccccccc";
const HOST_B: &str = "dddddddddddddddddddddddddddddddd";

#[test]
fn otlp_over_grpc_and_http_arrives_once_with_the_conventions_names() {
    let dir = tempfile::tempdir().unwrap();
    // The first two requests are refused (UNAVAILABLE): the batch is retried, not lost.
    let mut receiver = Receiver::start(dir.path(), 2);
    let tls = LocalServer::start();
    let mut names: BTreeMap<String, (&str, &str)> = BTreeMap::new();
    let handshake = |host: &'static str,
                     transport: &'static str,
                     names: &mut BTreeMap<String, (&str, &str)>| {
        let name = unique_name("otlp");
        tls.handshake(&name);
        names.insert(name.clone(), (host, transport));
        name
    };

    let grpc = config(
        dir.path(),
        "grpc.toml",
        &format!("http://127.0.0.1:{}", receiver.grpc),
        "grpc",
    );
    let mut a = Daemon::start_as_host(HOST_A, dir.path(), &grpc);
    let first = handshake(HOST_A, "grpc", &mut names);
    let got = receiver.wait_for(&first);
    // The resource: the host and the service.
    let res = &got["resource"];
    assert_eq!(res["host.id"]["stringValue"], HOST_A, "{got}");
    assert_eq!(res["service.name"]["stringValue"], "sensord", "{got}");
    assert_eq!(
        res["service.version"]["stringValue"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(res["os.type"]["stringValue"], "linux", "{got}");
    assert_eq!(res["sensor.label.site"]["stringValue"], "lab", "{got}");
    assert_eq!(got["scope"]["name"], "sensord");
    // The record: the conventions' names and types.
    let at = &got["attributes"];
    assert_eq!(at["server.address"]["stringValue"], first.as_str(), "{got}");
    assert_eq!(
        at["server.port"]["intValue"],
        tls.connect.rsplit(':').next().unwrap(),
        "{got}"
    );
    assert_eq!(at["client.address"]["stringValue"], "127.0.0.1", "{got}");
    assert_eq!(at["network.transport"]["stringValue"], "tcp");
    assert_eq!(at["tls.protocol.name"]["stringValue"], "tls");
    assert_eq!(at["tls.protocol.version"]["stringValue"], "1.2");
    assert!(at["tls.cipher"]["stringValue"].is_string(), "{got}");
    assert!(at["tls.client.ja3"]["stringValue"].is_string(), "{got}");
    assert!(
        at["tls.server.hash.sha256"]["stringValue"]
            .as_str()
            .is_some_and(|h| h.len() == 64 && !h.chars().any(|c| c.is_ascii_lowercase())),
        "{got}"
    );
    assert_eq!(
        at["process.executable.name"]["stringValue"], "openssl",
        "{got}"
    );
    assert!(at["process.pid"]["intValue"].is_string(), "an int64: {got}");
    assert_eq!(at["sensor.verdict"]["stringValue"], "untrusted", "{got}");
    assert!(
        at["sensor.reasons"]["arrayValue"]["values"][0]["stringValue"].is_string(),
        "{got}"
    );
    let rec = &got["record"];
    assert_eq!(rec["eventName"], "sensor.tls.handshake", "{got}");
    assert!(
        rec["body"]["stringValue"]
            .as_str()
            .is_some_and(|b| !b.is_empty()),
        "{got}"
    );
    let severity = at["sensor.severity"]["stringValue"].as_str().unwrap();
    let want = match severity {
        "critical" => "SEVERITY_NUMBER_FATAL",
        "high" => "SEVERITY_NUMBER_ERROR",
        "medium" => "SEVERITY_NUMBER_WARN",
        "low" => "SEVERITY_NUMBER_INFO2",
        _ => "SEVERITY_NUMBER_INFO",
    };
    assert_eq!(rec["severityNumber"], want, "{got}");
    assert_eq!(rec["severityText"], severity);
    assert!(
        rec["timeUnixNano"].as_str().is_some_and(|t| t.len() >= 19),
        "{got}"
    );

    // The receiver goes away; events made meanwhile arrive once it is back.
    receiver.stop();
    let during = [
        handshake(HOST_A, "grpc", &mut names),
        handshake(HOST_A, "grpc", &mut names),
    ];
    std::thread::sleep(Duration::from_secs(2));
    receiver.restart(0);
    for name in &during {
        receiver.wait_for(name);
    }
    let retried = a.log.wait_for(Duration::from_secs(5), |l| {
        l.contains("retrying with a backoff")
    });
    assert!(
        retried.is_some(),
        "the refusals were retried: {:#?}",
        a.log.seen
    );
    assert!(a.interrupt().is_some_and(|s| s.success()));
    drop(a);

    // Another host, over HTTP, to the same receiver.
    let http = config(
        dir.path(),
        "http.toml",
        &format!("http://127.0.0.1:{}", receiver.http),
        "http",
    );
    let mut b = Daemon::start_as_host(HOST_B, dir.path(), &http);
    let from_b = handshake(HOST_B, "http", &mut names);
    receiver.wait_for(&from_b);
    assert!(b.interrupt().is_some_and(|s| s.success()));

    let records = receiver.records();
    for (name, (host, transport)) in &names {
        let got: Vec<&Value> = records
            .iter()
            .filter(|r| r["attributes"]["tls.client.server_name"]["stringValue"] == name.as_str())
            .collect();
        assert_eq!(got.len(), 1, "{name}: {got:#?}");
        assert_eq!(
            got[0]["resource"]["host.id"]["stringValue"], *host,
            "{name}"
        );
        assert_eq!(got[0]["transport"], *transport, "{name}");
    }
    assert_eq!(records.len(), names.len(), "only the filtered events");
}
