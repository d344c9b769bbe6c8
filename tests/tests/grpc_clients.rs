//! The API through the official gRPC libraries of other languages, used as a SIEM team uses them
//! first: Python's grpcio with stubs generated from proto/ by grpcio-tools, Node's grpc-js with
//! proto-loader, and a client that knows only the address (grpcio-reflection, v1alpha). Each
//! runs with default channel options against the Unix socket and against the mTLS TCP
//! listener, and must get exactly the events `sensorctl watch` gets. The examples in
//! `examples/` run too.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use assert_cmd::Command;
use sensor_tests::{
    Daemon, LocalServer, bin, free_port, mtls::mtls, unique_name, wait_listening, workspace_root,
};
use serde_json::Value;

/// Where a client connects, and with which certificates.
struct Target {
    name: &'static str,
    address: String,
    tls: Option<[PathBuf; 3]>,
}

impl Target {
    fn args(&self) -> Vec<String> {
        let mut args = vec!["--target".to_owned(), self.address.clone()];
        if let Some([ca, cert, key]) = &self.tls {
            for (flag, path) in [("--ca", ca), ("--cert", cert), ("--key", key)] {
                args.push(flag.to_owned());
                args.push(path.display().to_string());
            }
        }
        args
    }
}

fn python() -> PathBuf {
    sensor_tests::venv_program("python")
}

/// Run a client; its stdout, which must be one or more JSON lines.
fn run_client(what: &str, cmd: &mut Command) -> Vec<Value> {
    let out = cmd
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("grpc_proxy")
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: {e}: {l}")))
        .collect()
}

fn python_client(stubs: &Path, script: &str, args: &[String]) -> Vec<Value> {
    let path = workspace_root().join(script);
    run_client(
        script,
        Command::new(python())
            .arg(path)
            .args(args)
            .env("PYTHONPATH", stubs),
    )
}

fn node_client(script: &str, args: &[String]) -> Vec<Value> {
    let modules = workspace_root().join("target/npm/node_modules");
    assert!(
        modules.join("@grpc/grpc-js").exists(),
        "{} is missing: run cargo xtask setup",
        modules.display()
    );
    run_client(
        script,
        Command::new("node")
            .arg(workspace_root().join(script))
            .args(args)
            .env("NODE_PATH", modules),
    )
}

/// Python stubs from proto/, generated as a user generates them.
fn generate_stubs(dir: &Path) {
    let proto = workspace_root().join("proto/proto");
    let out = std::process::Command::new(python())
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto)
        .arg(format!("--python_out={}", dir.display()))
        .arg(format!("--grpc_python_out={}", dir.display()))
        .arg("sensor/v1/sensor.proto")
        .output()
        .expect("grpc_tools.protoc");
    assert!(
        out.status.success(),
        "grpc_tools.protoc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client's status and Watch events: the same events as sensorctl's, and a status that has
/// seen them.
fn saw_the_same(out: &Value, reference: &[Value], who: &str) {
    let last = reference.last().and_then(|e| e["seq"].as_u64()).unwrap();
    assert!(
        out["status"]["last_seq"].as_u64().unwrap() >= last,
        "{who}: {out}"
    );
    assert_eq!(out["watch"].as_array().unwrap(), reference, "{who}'s Watch");
}

#[test]
fn python_node_and_reflection_clients_on_the_socket_and_over_mtls() {
    let m = mtls();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sensord.toml");
    std::fs::write(&config, m.api_section(port, "")).unwrap();
    let daemon = Daemon::start(&["--config", config.to_str().unwrap()]);
    wait_listening(&format!("127.0.0.1:{port}"), Duration::from_secs(10));
    let socket = daemon.socket();

    let server = LocalServer::start();
    let tag = unique_name("grpc");
    let (a, b) = (format!("a-{tag}"), format!("b-{tag}"));
    server.handshake(&a);
    server.handshake(&b);
    let glob = format!("*-{tag}");

    // What sensorctl sees: the reference.
    let reference = run_client(
        "sensorctl watch",
        Command::new(bin("sensorctl"))
            .args(["--socket"])
            .arg(&socket)
            .args([
                "watch", "--since", "0", "--count", "2", "-o", "json", "--sni",
            ])
            .arg(&glob),
    );
    let names: Vec<&str> = reference
        .iter()
        .map(|e| e["server_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [a.as_str(), b.as_str()]);
    let seqs: Vec<u64> = reference
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();

    let stubs = tempfile::tempdir().unwrap();
    generate_stubs(stubs.path());

    let targets = [
        Target {
            name: "unix socket",
            address: format!("unix:{}", socket.display()),
            tls: None,
        },
        Target {
            name: "mTLS TCP",
            address: format!("localhost:{port}"),
            tls: Some([
                m.server_ca.cert.clone(),
                m.good_client.cert.clone(),
                m.good_client.key.clone(),
            ]),
        },
    ];
    for target in &targets {
        let what = target.name;
        let filter = |since: u64, count: usize| {
            let mut args = target.args();
            args.extend([
                "--sni".to_owned(),
                glob.clone(),
                "--since".to_owned(),
                since.to_string(),
                "--count".to_owned(),
                count.to_string(),
            ]);
            args
        };

        // Python grpcio: health, status, Watch (filtered, from 0), ListEvents, GetCertificate.
        let out = &python_client(stubs.path(), "tests/grpc-clients/interop.py", &filter(0, 2))[0];
        assert_eq!(out["health"][""], "SERVING", "{what}: {out}");
        assert_eq!(out["health"]["sensor.v1.Sensor"], "SERVING", "{what}");
        saw_the_same(out, &reference, &format!("{what}: Python"));
        let listed: Vec<u64> = out["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap())
            .collect();
        assert_eq!(listed, seqs, "{what}: Python's ListEvents");
        let cert = &out["cert"];
        assert_eq!(cert["der_sha256"], cert["asked"], "{what}: {cert}");
        assert_eq!(cert["summary_sha256"], cert["asked"], "{what}: {cert}");
        assert_eq!(cert["pem"], true, "{what}");

        // Python again, resuming after the first event: only the second.
        let out = &python_client(
            stubs.path(),
            "tests/grpc-clients/interop.py",
            &filter(seqs[0], 1),
        )[0];
        assert_eq!(
            out["watch"].as_array().unwrap(),
            &reference[1..],
            "{what}: since"
        );

        // Node grpc-js with proto-loader: status and Watch.
        let mut args = filter(0, 2);
        args.extend([
            "--proto".to_owned(),
            workspace_root().join("proto/proto").display().to_string(),
        ]);
        let out = &node_client("tests/grpc-clients/interop.js", &args)[0];
        saw_the_same(out, &reference, &format!("{what}: Node"));

        // Knowing nothing but the address: reflection, then GetStatus.
        let out = &python_client(
            stubs.path(),
            "tests/grpc-clients/reflect.py",
            &target.args(),
        )[0];
        let services: Vec<&str> = out["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        for service in ["grpc.health.v1.Health", "sensor.v1.Sensor"] {
            assert!(services.contains(&service), "{what}: {services:?}");
        }
        assert_eq!(out["method"], "sensor.v1.Sensor.GetStatus", "{what}");
        let hooks = out["status"]["hooks"].as_array().unwrap();
        assert!(
            hooks
                .iter()
                .any(|h| h["name"] == "tap_egress" && h["attached"] == true),
            "{what}: {out}"
        );
    }

    // The examples, as their comments tell a user to run them.
    let example_args = |extra: &[&str]| {
        let mut args = vec![
            "--socket".to_owned(),
            socket.display().to_string(),
            "--sni".to_owned(),
            glob.clone(),
            "--count".to_owned(),
            "2".to_owned(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let lines = python_client(
        stubs.path(),
        "examples/python/subscriber.py",
        &example_args(&[]),
    );
    assert_eq!(lines, reference, "examples/python/subscriber.py");
    let lines = node_client("examples/node/subscriber.js", &example_args(&[]));
    assert_eq!(lines, reference, "examples/node/subscriber.js");
    // A severity filter: these handshakes are untrusted (high or above), none is below.
    let lines = node_client(
        "examples/node/subscriber.js",
        &example_args(&["--min-severity", "high"]),
    );
    assert_eq!(
        lines, reference,
        "examples/node/subscriber.js --min-severity"
    );
}
