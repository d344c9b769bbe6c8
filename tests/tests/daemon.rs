//! sensord end to end: the real daemon, real handshakes, a real tonic client.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use sensor_proto::v1::{self as pb, sensor_client::SensorClient};
use sensor_tests::{
    Daemon, LocalServer, client, free_port,
    mtls::{Mtls, mtls},
    openssl_client, pki, unique_name, workspace_root,
};
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

/// The next event from a Watch stream whose SNI satisfies `pred`, within `timeout`.
async fn next_event(
    stream: &mut tonic::Streaming<pb::Event>,
    timeout: Duration,
    mut pred: impl FnMut(&pb::Event) -> bool,
) -> Option<pb::Event> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Ok(ev))) if pred(&ev) => return Some(ev),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

fn watch(filter: Option<pb::Filter>, since_seq: u64) -> pb::WatchRequest {
    pb::WatchRequest {
        filter,
        since_seq,
        tail: false,
        aggregate: false,
    }
}

#[test]
fn watch_with_filters_list_certificates_and_status() {
    let daemon = Daemon::start(&[]);
    let server = LocalServer::start();
    let keep = unique_name("keep");
    let drop_name = unique_name("drop");
    let rt = client::runtime();
    rt.block_on(async {
        let mut api = client::unix(&daemon.socket()).await;
        let filter = pb::Filter {
            sni: vec!["keep-*".into()],
            ..pb::Filter::default()
        };
        let mut stream = api
            .watch(watch(Some(filter), 0))
            .await
            .unwrap()
            .into_inner();
        server.handshake(&drop_name);
        server.handshake(&keep);
        let ev = next_event(&mut stream, Duration::from_secs(20), |_| true)
            .await
            .expect("the kept event");
        assert_eq!(ev.server_name, keep, "the filter lets only keep-* through");
        assert_eq!(
            ev.verdict, "untrusted",
            "a self-signed localhost certificate: {ev:?}"
        );
        assert!(ev.seq > 0);
        assert!(!ev.explanation.is_empty());
        assert_eq!(ev.chain.len(), 1);
        let json: serde_json::Value = serde_json::from_str(&ev.json).unwrap();
        assert_eq!(json["server_name"], keep);
        // Every event names its host, in the message and in the JSON contract alike.
        let host = ev.host.as_ref().expect("the host");
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(host.kernel, kernel.trim(), "{host:?}");
        assert_eq!(host.sensor_version, env!("CARGO_PKG_VERSION"));
        assert!(
            !host.name.is_empty() && !host.boot_id.is_empty(),
            "{host:?}"
        );
        assert_eq!(json["host"]["kernel"], host.kernel.as_str(), "{json}");
        assert_eq!(json["host"]["boot_id"], host.boot_id.as_str(), "{json}");

        // The other one is in the journal.
        let listed = api
            .list_events(pb::ListEventsRequest {
                filter: Some(pb::Filter {
                    sni: vec![drop_name.clone()],
                    ..pb::Filter::default()
                }),
                limit: 10,
                ..pb::ListEventsRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.events.len(), 1, "{listed:?}");
        assert!(listed.events[0].seq < ev.seq);

        // Its certificate, stored once, by SHA-256.
        let cert = api
            .get_certificate(pb::GetCertificateRequest {
                sha256: ev.chain[0].sha256.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(cert.pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(cert.summary.unwrap().subject, "CN=localhost");
        let missing = api
            .get_certificate(pb::GetCertificateRequest {
                sha256: "00".repeat(32),
            })
            .await;
        assert_eq!(missing.unwrap_err().code(), tonic::Code::NotFound);

        let status = api
            .get_status(pb::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(
            status
                .hooks
                .iter()
                .any(|h| h.name == "tap_egress" && h.attached)
        );
        assert!(
            status
                .kernel_counters
                .iter()
                .any(|c| c.name == "ringbuf_drops")
        );
        assert_eq!(status.subscribers, 1);
        assert!(status.last_seq >= ev.seq);
        assert!(status.journal_events >= 2);
    });
}

#[test]
fn resuming_after_a_disconnect_has_no_gap_and_no_duplicate() {
    let daemon = Daemon::start(&[]);
    let server = LocalServer::start();
    let names: Vec<String> = (0..6).map(|i| unique_name(&format!("resume{i}"))).collect();
    let rt = client::runtime();
    rt.block_on(async {
        let mut api = client::unix(&daemon.socket()).await;
        let mut stream = api.watch(watch(None, 0)).await.unwrap().into_inner();
        let mut seqs = Vec::new();
        for n in &names[..3] {
            server.handshake(n);
        }
        let mut last = 0;
        for n in &names[..3] {
            let ev = next_event(&mut stream, Duration::from_secs(20), |e| {
                &e.server_name == n
            })
            .await
            .unwrap_or_else(|| panic!("no event for {n}"));
            last = ev.seq;
        }
        drop(stream);
        for n in &names[3..] {
            server.handshake(n);
        }
        // Resume after the last one seen: everything after it, once, in order.
        let mut stream = api.watch(watch(None, last)).await.unwrap().into_inner();
        let mut seen = Vec::new();
        while !names[3..].iter().all(|n| seen.contains(n)) {
            let ev = next_event(&mut stream, Duration::from_secs(20), |_| true)
                .await
                .expect("events after the resume point");
            seqs.push(ev.seq);
            seen.push(ev.server_name);
        }
        assert_eq!(seqs[0], last + 1, "no gap: {seqs:?}");
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "no gap, no duplicate: {seqs:?}"
        );
        for n in &names[..3] {
            assert!(!seen.contains(n), "{n} was seen before the resume point");
        }
    });
}

#[test]
fn a_stalled_subscriber_blocks_nobody_and_catches_up_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sensord.toml");
    std::fs::write(&config, "[api]\nbuffer_events = 16\n").unwrap();
    let state = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(state, &["--config", config.to_str().unwrap()]);
    let server = LocalServer::start();
    let names: Vec<String> = (0..40).map(|i| unique_name(&format!("stall{i}"))).collect();
    let rt = client::runtime();
    rt.block_on(async {
        let mut api = client::unix(&daemon.socket()).await;
        let mut stalled = api.watch(watch(None, 0)).await.unwrap().into_inner();
        let mut lively = api.watch(watch(None, 0)).await.unwrap().into_inner();
        for n in &names {
            server.handshake(n);
        }
        // The lively one gets every event while the other reads nothing.
        let mut got = Vec::new();
        while got.len() < names.len() {
            let ev = next_event(&mut lively, Duration::from_secs(30), |e| {
                e.server_name.starts_with("stall")
            })
            .await
            .unwrap_or_else(|| panic!("lively subscriber stopped after {}", got.len()));
            got.push(ev.server_name);
        }
        // Far more events than the 16 buffered: the stalled one reads them from the journal,
        // in order, without a gap.
        let mut seqs = Vec::new();
        let mut stalled_names = Vec::new();
        while stalled_names.len() < names.len() {
            let ev = next_event(&mut stalled, Duration::from_secs(30), |_| true)
                .await
                .expect("the stalled subscriber catches up");
            seqs.push(ev.seq);
            if ev.server_name.starts_with("stall") {
                stalled_names.push(ev.server_name);
            }
        }
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        assert_eq!(stalled_names, got);
    });
}

#[test]
fn kill_9_then_a_restart_keeps_the_journal() {
    let state = tempfile::tempdir().unwrap();
    let state_path = state.path().to_path_buf();
    let mut daemon = Daemon::start_in(state, &[]);
    let server = LocalServer::start();
    let before = unique_name("before-kill");
    server.handshake(&before);
    let rt = client::runtime();
    let seq_before = rt.block_on(async {
        let mut api = client::unix(&daemon.socket()).await;
        let mut stream = api.watch(watch(None, 0)).await.unwrap().into_inner();
        next_event(&mut stream, Duration::from_secs(20), |e| {
            e.server_name == before
        })
        .await
        .expect("committed before the kill")
        .seq
    });
    daemon.proc.signal(libc::SIGKILL);
    daemon.proc.wait_timeout(Duration::from_secs(10));
    // Keep the folder: take it out of the dead daemon.
    let state = std::mem::replace(&mut daemon.state_dir, tempfile::tempdir().unwrap());
    drop(daemon);
    assert!(state.path() == state_path);
    let daemon = Daemon::start_in(state, &[]);
    let after = unique_name("after-restart");
    server.handshake(&after);
    rt.block_on(async {
        let mut api = client::unix(&daemon.socket()).await;
        let listed = api
            .list_events(pb::ListEventsRequest {
                filter: Some(pb::Filter {
                    sni: vec![before.clone()],
                    ..pb::Filter::default()
                }),
                ..pb::ListEventsRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.events.len(), 1, "the event survived kill -9");
        assert_eq!(listed.events[0].seq, seq_before);
        let mut stream = api
            .watch(watch(None, seq_before))
            .await
            .unwrap()
            .into_inner();
        let ev = next_event(&mut stream, Duration::from_secs(20), |e| {
            e.server_name == after
        })
        .await
        .expect("new events after the restart");
        assert!(ev.seq > seq_before, "sequence numbers only grow");
    });
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sensord.toml");
    std::fs::write(&config, "[journal]\nretention_days = 7\n").unwrap();
    let mut daemon = Daemon::start_in(
        tempfile::tempdir().unwrap(),
        &["--config", config.to_str().unwrap()],
    );
    std::fs::write(&config, "[journal]\nretention_days = \"seven\"\n").unwrap();
    daemon.proc.signal(libc::SIGHUP);
    let refused = daemon
        .log
        .wait_for(Duration::from_secs(10), |l| l.contains("reload refused"));
    let refused = refused.expect("the reload is refused");
    assert!(
        refused.contains(&format!("{}:2", config.display())),
        "{refused}"
    );
    let server = LocalServer::start();
    let name = unique_name("after-hup");
    server.handshake(&name);
    let rt = client::runtime();
    rt.block_on(async {
        let mut api = client::unix(&daemon.socket()).await;
        let mut stream = api.watch(watch(None, 0)).await.unwrap().into_inner();
        assert!(
            next_event(&mut stream, Duration::from_secs(20), |e| e.server_name
                == name)
            .await
            .is_some(),
            "still running on the old configuration"
        );
        // The Reload call says why, then works once the file is fixed.
        let r = client::reload(&mut api).await.unwrap();
        assert!(!r.ok && r.error.contains("sensord.toml:2"), "{r:?}");
        std::fs::write(&config, "[journal]\nretention_days = 3\n").unwrap();
        // At once: one reload a second.
        let soon = api.reload(pb::ReloadRequest {}).await.unwrap_err();
        assert_eq!(soon.code(), tonic::Code::ResourceExhausted, "{soon:?}");
        let r = client::reload(&mut api).await.unwrap();
        assert!(r.ok, "{r:?}");
        // The trust inputs did not change: the context in force (and its cache) stays.
        assert_eq!(r.trust_generation, 1);
        assert_eq!(r.applied, ["journal.retention_days"]);
        assert!(r.restart_required.is_empty(), "{r:?}");
        // A setting that needs a restart is named as such, in the reply and the log.
        std::fs::write(
            &config,
            "[journal]\nretention_days = 3\n[api]\naggregation_window_secs = 5\n\
             [probe]\nmax_per_second = 3\n",
        )
        .unwrap();
        let r = client::reload(&mut api).await.unwrap();
        assert!(r.ok, "{r:?}");
        assert_eq!(r.trust_generation, 1);
        assert_eq!(r.applied, ["probe.max_per_second"]);
        assert_eq!(r.restart_required, ["api.aggregation_window_secs"]);
    });
    let warned = daemon.log.wait_for(Duration::from_secs(10), |l| {
        l.contains("need a restart") && l.contains("api.aggregation_window_secs")
    });
    assert!(warned.is_some(), "the log says what needs a restart");
}

#[test]
fn the_jsonl_exporter_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("events.jsonl");
    let config = dir.path().join("sensord.toml");
    let exporting = format!(
        "[export.jsonl]\npath = \"{}\"\n[export.jsonl.filter]\nsni = [\"resume-*\"]\n",
        jsonl.display()
    );
    std::fs::write(&config, &exporting).unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_in(state, &["--config", config.to_str().unwrap()]);
    let server = LocalServer::start();
    let names: Vec<String> = (0..4)
        .map(|i| unique_name(&format!("resume-{i}")))
        .collect();
    let exported = |name: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&jsonl).unwrap_or_default();
            if text.contains(name) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    server.handshake(&names[0]);
    assert!(exported(&names[0]).contains(&names[0]));
    let rt = client::runtime();
    // The export is switched off by a reload: what comes meanwhile is journaled only.
    std::fs::write(&config, "").unwrap();
    rt.block_on(async {
        let mut api = client::unix(&daemon.socket()).await;
        let r = client::reload(&mut api).await.unwrap();
        assert_eq!(r.applied, ["export.jsonl"], "{r:?}");
        let mut stream = api.watch(watch(None, 0)).await.unwrap().into_inner();
        server.handshake(&names[1]);
        next_event(&mut stream, Duration::from_secs(20), |e| {
            e.server_name == names[1]
        })
        .await
        .expect("journaled");
        // Back on: the exporter resumes from its cursor and delivers what it missed.
        std::fs::write(&config, &exporting).unwrap();
        let r = client::reload(&mut api).await.unwrap();
        assert_eq!(r.applied, ["export.jsonl"], "{r:?}");
    });
    assert!(exported(&names[1]).contains(&names[1]), "missed while off");
    // A restart of sensord: the cursor survives it.
    assert!(daemon.interrupt().is_some_and(|s| s.success()));
    let state = std::mem::replace(&mut daemon.state_dir, tempfile::tempdir().unwrap());
    drop(daemon);
    let _daemon = Daemon::start_in(state, &["--config", config.to_str().unwrap()]);
    server.handshake(&names[2]);
    server.handshake(&names[3]);
    let text = exported(&names[3]);
    for name in &names {
        assert_eq!(
            text.lines().filter(|l| l.contains(name.as_str())).count(),
            1,
            "{name} exported exactly once: {text}"
        );
    }
}

async fn tcp_client(
    addr: SocketAddr,
    m: &Mtls,
    identity: Option<&pki::Issued>,
) -> Result<SensorClient<Channel>, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(&m.server_ca.cert).unwrap(),
        ))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&id.cert).unwrap(),
            std::fs::read(&id.key).unwrap(),
        ));
    }
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(SensorClient::new(channel))
}

#[test]
fn tcp_needs_a_client_certificate_from_the_right_ca() {
    let m = mtls();
    let ops_dir = tempfile::tempdir().unwrap();
    let ops = pki::issue_client(ops_dir.path(), &m.client_ca, "ops-admin");
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sensord.toml");
    std::fs::write(
        &config,
        m.api_section(port, "admin_clients = [\"ops-admin\"]\n"),
    )
    .unwrap();
    let _daemon = Daemon::start_in(
        tempfile::tempdir().unwrap(),
        &["--config", config.to_str().unwrap()],
    );
    sensor_tests::wait_listening(&format!("127.0.0.1:{port}"), Duration::from_secs(10));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let rt = client::runtime();
    rt.block_on(async {
        let mut good = tcp_client(addr, &m, Some(&m.good_client)).await.unwrap();
        let status = good
            .get_status(pb::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(!status.version.is_empty());
        // Reading is for every client of the CA; changing only for those named in
        // api.admin_clients.
        let denied = good.reload(pb::ReloadRequest {}).await.unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
        assert!(
            denied
                .message()
                .contains("the mTLS clients ops-admin (api.admin_clients)")
                && denied.message().ends_with("this is the mTLS client siem"),
            "{denied:?}"
        );
        let mut admin = tcp_client(addr, &m, Some(&ops)).await.unwrap();
        let r = admin
            .reload(pb::ReloadRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(r.ok, "{r:?}");
        for (who, id) in [
            ("no certificate", None),
            ("the wrong CA", Some(&m.bad_client)),
        ] {
            let refused = match tcp_client(addr, &m, id).await {
                Err(_) => true,
                Ok(mut c) => c.get_status(pb::GetStatusRequest {}).await.is_err(),
            };
            assert!(refused, "a client with {who} was let in");
        }
    });

    // Without TLS material and without insecure_tcp, sensord refuses to start.
    std::fs::write(
        &config,
        format!("[api]\ntcp_listen = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(sensor_tests::bin("sensord"))
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(state.path())
        .arg("--socket")
        .arg(state.path().join("s.sock"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("mTLS"), "{err}");
}

#[test]
fn jsonl_export_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("events.jsonl");
    let metrics_port = free_port();
    let config = dir.path().join("sensord.toml");
    std::fs::write(
        &config,
        format!(
            "[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n[export.jsonl]\npath = \"{}\"\necs = true\n[export.jsonl.filter]\nsni = [\"export-*\"]\n[host]\nlabels = {{ site = \"lab-1\", environment = \"ci\" }}\n",
            jsonl.display()
        ),
    )
    .unwrap();
    let _daemon = Daemon::start_in(
        tempfile::tempdir().unwrap(),
        &["--config", config.to_str().unwrap()],
    );
    let server = LocalServer::start();
    let name = unique_name("export");
    let other = unique_name("noexport");
    server.handshake(&other);
    server.handshake(&name);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut text = String::new();
    while Instant::now() < deadline && !text.contains(&name) {
        std::thread::sleep(Duration::from_millis(200));
        text = std::fs::read_to_string(&jsonl).unwrap_or_default();
    }
    assert!(text.contains(&name), "{text}");
    assert!(
        !text.contains(&other),
        "the filter applies to the export: {text}"
    );
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        line["tls"]["client"]["server_name"], name,
        "ECS names: {line}"
    );
    // The host it came from, as this machine describes itself, and the configured labels.
    let first_line = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.lines().next().map(|l| l.trim().to_owned()))
    };
    let machine_id = first_line("/etc/machine-id")
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(line["host"]["id"].as_str(), machine_id.as_deref(), "{line}");
    assert_eq!(
        line["host"]["os"]["kernel"].as_str(),
        first_line("/proc/sys/kernel/osrelease").as_deref(),
        "{line}"
    );
    assert_eq!(
        line["host"]["boot"]["id"].as_str(),
        first_line("/proc/sys/kernel/random/boot_id").as_deref(),
        "{line}"
    );
    assert_eq!(line["labels"]["site"], "lab-1", "{line}");
    assert_eq!(line["labels"]["environment"], "ci", "{line}");
    assert_eq!(
        line["agent"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{line}"
    );
    assert_eq!(line["ecs"]["version"], "8.17.0", "{line}");
    assert!(
        line["event"]["id"]
            .as_str()
            .is_some_and(|id| id.parse::<u64>().is_ok()),
        "{line}"
    );
    assert!(line["event"]["severity"].is_u64(), "{line}");
    assert_eq!(line["network"]["direction"], "egress", "{line}");
    assert!(
        line["network"]["community_id"]
            .as_str()
            .is_some_and(|c| c.starts_with("1:")),
        "{line}"
    );

    // The chain as the server sent it, in PEM, from the journal: its first certificate is the
    // leaf whose hash the event names.
    let chain = line["tls"]["server"]["certificate_chain"]
        .as_array()
        .unwrap_or_else(|| panic!("a certificate chain: {line}"));
    assert_eq!(chain.len(), 1, "a self-signed server: {line}");
    let mut x509 = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        x509.stdin
            .take()
            .unwrap()
            .write_all(chain[0].as_str().unwrap().as_bytes())
            .unwrap();
    }
    let fingerprint = String::from_utf8(x509.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(
        fingerprint
            .trim()
            .rsplit('=')
            .next()
            .unwrap()
            .replace(':', ""),
        line["tls"]["server"]["hash"]["sha256"].as_str().unwrap(),
        "{fingerprint}"
    );

    let response = http_get(&format!("127.0.0.1:{metrics_port}"), "/metrics");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    for line in [
        "sensor_handshakes_total{verdict=\"untrusted\"}",
        "sensor_kernel_ringbuf_drops_total 0",
        "sensor_kernel_packets_seen_total ",
        "sensor_event_latency_seconds_count ",
        "sensor_verdict_duration_seconds_count ",
    ] {
        assert!(body.contains(line), "{line}: {body}");
    }
    // Prometheus' own linter: no problem and no warning (naming, units, types, help).
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (cargo xtask setup installs Debian's prometheus)");
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// sensord runs with no capability beyond the unit's CapabilityBoundingSet: it attaches, sees a
/// handshake and names the process.
#[test]
fn the_units_capabilities_are_enough() {
    let wrapper = sensor_tests::unit_capabilities();
    let mut daemon = Daemon::start_wrapped(tempfile::tempdir().unwrap(), &wrapper, &[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.proc.pid())).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(
        eff & (1 << 21),
        0,
        "CAP_SYS_ADMIN is out of sensord's bounding set"
    );
    let server = LocalServer::start();
    let sni = unique_name("caps");
    server.handshake(&sni);
    let ev = daemon
        .event(Duration::from_secs(20), |v| {
            v["server_name"] == sni.as_str()
        })
        .unwrap_or_else(|| panic!("no event; log:\n{}", daemon.log.seen.join("\n")));
    assert_eq!(ev["process"]["comm"], "openssl", "{ev}");
    assert_eq!(ev["process"]["exe"], "/usr/bin/openssl", "{ev}");
    // The uprobes attach with these capabilities too (uprobe_multi links: CAP_BPF and
    // CAP_PERFMON; the classic attach would need CAP_SYS_ADMIN).
    for hook in [
        "hook=\"ssl_handshake\"",
        "hook=\"d2i_x509\"",
        "hook=\"gnutls\"",
        "hook=\"nss\"",
        "hook=\"process_exec\"",
    ] {
        assert!(
            daemon
                .log
                .seen
                .iter()
                .any(|l| l.contains("attached:") && l.contains(hook)),
            "{hook} did not attach:\n{}",
            daemon.log.seen.join("\n")
        );
    }
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(workspace_root().join("dist/sensord.service")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // systemd-analyze wants the program to exist: point it at the one just built.
    let unit = unit.replace(
        "/usr/local/bin/sensord",
        sensor_tests::bin("sensord").to_str().unwrap(),
    );
    let path = dir.path().join("sensord.service");
    std::fs::write(&path, unit).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
}

/// openssl s_client saves its session, then resumes it (TLS 1.2: an abbreviated handshake;
/// TLS 1.3: a PSK): the second event says `resumed`, the first does not.
#[test]
fn resumed_sessions_are_said() {
    let mut daemon = Daemon::start(&[]);
    let server = LocalServer::start();
    let dir = tempfile::tempdir().unwrap();
    for (version, flag) in [("1.2", "-tls1_2"), ("1.3", "-tls1_3")] {
        let name = unique_name("resume");
        let session = dir.path().join(format!("session-{version}.pem"));
        let session = session.to_str().unwrap();
        // -ign_eof: read until the server closes, so that a TLS 1.3 ticket arrives.
        let full = openssl_client(
            &server.connect,
            &name,
            &[flag, "-ign_eof", "-sess_out", session],
        );
        let resumed = openssl_client(
            &server.connect,
            &name,
            &[flag, "-ign_eof", "-sess_in", session],
        );
        // TLS 1.3 events wait for a probe: they may come in either order.
        let mut seen = std::collections::HashMap::new();
        daemon.event(Duration::from_secs(30), |e| {
            for pid in [full, resumed] {
                if e["process"]["pid"] == pid {
                    seen.insert(pid, e.clone());
                }
            }
            seen.len() == 2
        });
        for (pid, want) in [(full, false), (resumed, true)] {
            let ev = seen
                .get(&pid)
                .unwrap_or_else(|| panic!("TLS {version}: no event for pid {pid}"));
            assert_eq!(ev["tls_version"], version, "{ev}");
            assert_eq!(ev["resumed"], want, "TLS {version}, resumed {want}: {ev}");
            // A resumed session shows no certificate, whatever the version: the probe shows
            // the server's, so that a resumed interception is judged too.
            if want {
                assert_eq!(ev["chain_source"], "probe", "{ev}");
                assert_eq!(ev["verdict"], "untrusted", "{ev}");
            }
        }
    }
}
