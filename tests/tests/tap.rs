//! The kernel tap on real traffic: TLS 1.2 and 1.3, IPv4 and IPv6, a chain spread over many
//! small segments from another network namespace, a CONNECT proxy, process attribution, and a
//! clean detach.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use sensor_tests::{
    Daemon, Proc,
    cgroup::TestCgroup,
    free_port,
    netns::Netns,
    openssl_client, openssl_server,
    pki::{self, Key},
    self_signed, unique_name, wait_listening,
};

const WAIT: Duration = Duration::from_secs(20);

fn event_for(daemon: &mut Daemon, sni: &str) -> serde_json::Value {
    daemon
        .event(WAIT, |v| v["server_name"].as_str() == Some(sni))
        .unwrap_or_else(|| {
            panic!(
                "no event with SNI {sni}; events:\n{}\nlog:\n{}",
                daemon.events.seen.join("\n"),
                daemon.log.seen.join("\n")
            )
        })
}

#[test]
fn tls12_and_tls13_with_openssl_over_ipv4_and_the_client_process() {
    let mut daemon = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "localhost");
    let port = free_port();
    let _server = openssl_server(port, &cert, &key, &[]);
    let connect = format!("127.0.0.1:{port}");

    for (flag, version) in [("-tls1_2", "1.2"), ("-tls1_3", "1.3")] {
        let sni = unique_name(&format!("v{version}"));
        let pid = openssl_client(&connect, &sni, &[flag]);
        let ev = event_for(&mut daemon, &sni);
        assert_eq!(ev["tls_version"], version, "{ev}");
        assert_eq!(ev["client_outcome"], "completed", "{ev}");
        assert_eq!(ev["dst_port"], port, "{ev}");
        assert!(
            ev["cipher"].as_str().is_some_and(|c| c.starts_with("TLS_")),
            "{ev}"
        );
        assert_eq!(ev["process"]["pid"], pid, "{ev}");
        assert_eq!(ev["process"]["comm"], "openssl", "{ev}");
        assert_eq!(ev["process"]["role"], "client", "{ev}");
        assert_eq!(ev["process"]["exe"], "/usr/bin/openssl", "{ev}");
        if version == "1.2" {
            assert_eq!(ev["chain"].as_array().map(Vec::len), Some(1), "{ev}");
            assert_eq!(ev["chain_source"], "passive", "{ev}");
        } else {
            // Encrypted on the wire. The uprobe saw the client parse it, but the leaf names
            // localhost, not this SNI, so sensord does not pair it with this handshake (it
            // could be another socket's) and its probe fetches the chain instead.
            assert_eq!(ev["chain"].as_array().map(Vec::len), Some(1), "{ev}");
            assert_eq!(ev["chain_source"], "probe", "{ev}");
            assert!(
                ev["server_encrypted_flight_bytes"].as_u64().unwrap_or(0) > 100,
                "{ev}"
            );
        }
    }
}

#[test]
fn curl_over_ipv6_tls12_and_tls13() {
    let mut daemon = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "localhost");
    let port = free_port();
    let _server = sensor_tests::spawn_s_server(
        Command::new("openssl"),
        &format!("[::1]:{port}"),
        &cert,
        &key,
        None,
        &[],
    );
    wait_listening(&format!("[::1]:{port}"), Duration::from_secs(10));

    for (max, version) in [("1.2", "1.2"), ("1.3", "1.3")] {
        let sni = unique_name(&format!("curl6-{version}"));
        let mut curl = Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "--tls-max", max, "--resolve"])
            .arg(format!("{sni}:{port}:[::1]"))
            .arg(format!("https://{sni}:{port}/"))
            .spawn()
            .expect("curl");
        let pid = curl.id();
        assert!(curl.wait().unwrap().success(), "curl failed");
        let ev = event_for(&mut daemon, &sni);
        assert_eq!(ev["src_addr"], "::1", "{ev}");
        assert_eq!(ev["dst_addr"], "::1", "{ev}");
        assert_eq!(ev["tls_version"], version, "{ev}");
        assert_eq!(ev["client_outcome"], "completed", "{ev}");
        assert_eq!(ev["process"]["comm"], "curl", "{ev}");
        assert_eq!(ev["process"]["pid"], pid, "{ev}");
    }
}

#[test]
fn a_4096_bit_chain_over_small_segments_from_another_namespace() {
    let mut daemon = Daemon::start(&[]);
    let ns = Netns::new("chain", 600);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = pki::root(d, "Chain Test Root", Key::Rsa(4096));
    let inter = pki::issue(
        d,
        &root,
        "Chain Test Intermediate",
        Key::Rsa(4096),
        true,
        &[],
    );
    let sni = unique_name("chain");
    let leaf = pki::issue(d, &inter, &sni, Key::Rsa(4096), false, &[&sni]);
    let extra = pki::bundle(d, "extra.pem", &[&inter, &root]);
    let port = free_port();
    let addr = format!("{}:{port}", ns.ns_ip);
    let _server = sensor_tests::spawn_s_server(
        ns.command("openssl"),
        &addr,
        &leaf.cert,
        &leaf.key,
        Some(&extra),
        &[],
    );
    wait_listening(&addr, Duration::from_secs(10));

    openssl_client(&addr, &sni, &["-tls1_2"]);
    let ev = event_for(&mut daemon, &sni);
    let chain = ev["chain"].as_array().cloned().unwrap_or_default();
    let got: Vec<&str> = chain.iter().filter_map(|c| c["sha256"].as_str()).collect();
    let want = [leaf.sha256(), inter.sha256(), root.sha256()];
    assert_eq!(
        got,
        want.iter().map(String::as_str).collect::<Vec<_>>(),
        "{ev}"
    );
    assert_eq!(chain[0]["key_bits"], 4096, "{ev}");
    assert_eq!(ev["dst_addr"], ns.ns_ip, "{ev}");
    assert_eq!(ev["client_outcome"], "completed", "{ev}");

    // TLS 1.3 to the same server: no chain on the wire, the encrypted flight is measured.
    let sni13 = unique_name("chain13");
    openssl_client(&addr, &sni13, &["-tls1_3"]);
    let ev = event_for(&mut daemon, &sni13);
    assert_eq!(ev["tls_version"], "1.3", "{ev}");
    let flight = ev["server_encrypted_flight_bytes"].as_u64().unwrap_or(0);
    assert!(
        flight > 3 * 1000,
        "a 3 x 4096-bit chain is more than 3 KB: {ev}"
    );
}

#[test]
fn a_handshake_through_a_connect_proxy() {
    let mut daemon = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "localhost");
    let port = free_port();
    let _server = openssl_server(port, &cert, &key, &[]);
    let (_proxy, proxy_port) = sensor_tests::tinyproxy(dir.path());

    let sni = unique_name("proxied");
    let proxy = format!("127.0.0.1:{proxy_port}");
    let pid = openssl_client(
        &format!("127.0.0.1:{port}"),
        &sni,
        &["-tls1_2", "-proxy", &proxy],
    );

    // The client's leg: CONNECT to the proxy, then TLS inside the tunnel.
    let client_leg = daemon
        .event(WAIT, |v| {
            v["server_name"].as_str() == Some(sni.as_str()) && v["dst_port"] == proxy_port
        })
        .unwrap_or_else(|| panic!("no client leg; events:\n{}", daemon.events.seen.join("\n")));
    assert_eq!(
        client_leg["proxy_connect"],
        format!("127.0.0.1:{port}"),
        "{client_leg}"
    );
    assert_eq!(client_leg["process"]["pid"], pid, "{client_leg}");
    assert_eq!(client_leg["process"]["comm"], "openssl", "{client_leg}");
    assert_eq!(client_leg["tls_version"], "1.2", "{client_leg}");
    assert_eq!(
        client_leg["chain"].as_array().map(Vec::len),
        Some(1),
        "{client_leg}"
    );
}

#[test]
fn an_accepted_socket_is_attributed_to_the_local_server() {
    // Attach only to a cgroup that holds the server: the client is then as unseen as a remote
    // one, and the server's socket is an accepted socket the kernel cannot attribute.
    let cg = TestCgroup::new("server");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "localhost");
    let port = free_port();
    let script = format!(
        "echo $$ > {} && exec openssl s_server -quiet -www -accept 127.0.0.1:{port} -cert {} -key {}",
        cg.procs_file().display(),
        cert.display(),
        key.display()
    );
    let server = Proc::spawn(
        "openssl s_server in a test cgroup",
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_listening(&format!("127.0.0.1:{port}"), Duration::from_secs(10));
    let cg_path = cg.path().to_string_lossy().into_owned();
    let mut daemon = Daemon::start(&["--cgroup", &cg_path]);

    let sni = unique_name("accepted");
    openssl_client(&format!("127.0.0.1:{port}"), &sni, &["-tls1_2"]);
    let ev = event_for(&mut daemon, &sni);
    assert_eq!(ev["process"]["role"], "server", "{ev}");
    assert_eq!(ev["process"]["pid"], server.pid(), "{ev}");
    assert_eq!(ev["process"]["comm"], "openssl", "{ev}");
    assert!(
        ev["socket_cookie"].is_null(),
        "the client was not tapped: {ev}"
    );
    drop(daemon);
    drop(server);
}

#[test]
fn a_bad_pin_file_stops_the_daemon_before_anything_is_attached() {
    sensor_tests::require_root();
    let dir = tempfile::tempdir().unwrap();
    let pins = dir.path().join("pins.toml");
    std::fs::write(&pins, "[[pin]]\nhost = \"a.test\"\nspki = [\"nope\"]\n").unwrap();
    let out = Command::new(sensor_tests::bin("sensord"))
        .arg("--state-dir")
        .arg(dir.path())
        .arg("--pins")
        .arg(&pins)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3:", pins.display())), "{err}");
    assert!(!err.contains("attached"), "nothing may be attached: {err}");
}

#[test]
fn stopping_the_daemon_leaves_no_program_or_link_behind() {
    let mut daemon = Daemon::start(&[]);
    let ids: Vec<u32> = daemon
        .log
        .seen
        .iter()
        .filter_map(|l| l.split("program_id=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|id| id.parse().ok())
        .collect();
    assert!(
        ids.len() >= 2,
        "program ids not logged:\n{}",
        daemon.log.seen.join("\n")
    );
    for id in &ids {
        assert!(
            bpftool_prog_exists(*id),
            "program {id} not loaded while running"
        );
    }
    let status = daemon.interrupt().expect("sensord stops on SIGINT");
    assert!(status.success(), "sensord exit: {status}");
    // The kernel frees programs shortly after their last reference goes (RCU).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ids.iter().any(|id| bpftool_prog_exists(*id)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for id in &ids {
        assert!(
            !bpftool_prog_exists(*id),
            "program {id} still loaded after exit"
        );
    }
    let links = Command::new("bpftool")
        .args(["-j", "link", "show"])
        .output()
        .expect("bpftool link show");
    let links: serde_json::Value = serde_json::from_slice(&links.stdout).unwrap_or_default();
    for link in links.as_array().into_iter().flatten() {
        let prog = link["prog_id"].as_u64().unwrap_or(0) as u32;
        assert!(!ids.contains(&prog), "link left behind: {link}");
    }
}

fn bpftool_prog_exists(id: u32) -> bool {
    Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A server whose bytes come one per TCP segment: the flow uses up its share of the ring
/// buffer long before its byte budget and the kernel gives up on it, loudly, instead of
/// filling the ring that every other flow shares. With a byte budget of 64 KiB (so a ring
/// budget of 256 KiB), a 4096-bit chain passes whole in ordinary segments and is cut when it
/// comes a byte at a time (some 4,000 records of 160 ring bytes).
#[test]
fn a_flow_of_one_byte_segments_runs_out_of_its_ring_budget_and_says_so() {
    let mut daemon = Daemon::start(&["--byte-budget", "65536"]);
    let ns = Netns::new("tiny", 1500);
    // Without this the kernel merges the relay's sends while earlier ones wait to go out.
    ns.exec_ok(&["sysctl", "-qw", "net.ipv4.tcp_autocorking=0"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = pki::root(d, "Tiny Test Root", Key::Rsa(4096));
    let sni = unique_name("whole");
    let leaf = pki::issue(d, &root, &sni, Key::Rsa(4096), false, &[&sni]);
    let extra = pki::bundle(d, "extra.pem", &[&root]);
    let (port, relay_port) = (free_port(), free_port());
    let addr = format!("{}:{port}", ns.ns_ip);
    let relay_addr = format!("{}:{relay_port}", ns.ns_ip);
    let _server = sensor_tests::spawn_s_server(
        ns.command("openssl"),
        &addr,
        &leaf.cert,
        &leaf.key,
        Some(&extra),
        &[],
    );
    wait_listening(&addr, Duration::from_secs(10));
    let shim = sensor_tests::workspace_root().join("tests/lab-tools/shim.py");
    let mut relay = Proc::spawn(
        "shim.py tiny-segments",
        ns.command("python3")
            .arg(&shim)
            .args([
                "tiny-segments",
                "--listen",
                &relay_addr,
                "--upstream",
                &addr,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut ready = sensor_tests::Lines::new(relay.child.stdout.take().unwrap());
    assert!(
        ready
            .wait_for(Duration::from_secs(20), |l| l.trim() == "ready")
            .is_some()
    );

    // Ordinary segments: the whole chain, nothing lost.
    openssl_client(&addr, &sni, &["-tls1_2"]);
    let ev = event_for(&mut daemon, &sni);
    assert_eq!(ev["chain"].as_array().map(Vec::len), Some(2), "{ev}");
    assert_eq!(
        ev["capture_incomplete"],
        serde_json::json!([]),
        "{ev}\n{}",
        daemon.log.seen.join("\n")
    );

    // The same server a byte per segment: the flow is cut, and the event says so. (The relay's
    // own connection upstream carries the same name in ordinary segments: the client's event is
    // openssl's.)
    let sni = unique_name("tiny");
    openssl_client(&relay_addr, &sni, &["-tls1_2"]);
    let ev = daemon
        .event(WAIT, |v| {
            v["server_name"].as_str() == Some(&sni) && v["process"]["comm"] == "openssl"
        })
        .unwrap_or_else(|| {
            panic!(
                "no event from openssl; events:\n{}",
                daemon.events.seen.join("\n")
            )
        });
    let lost: Vec<&str> = ev["capture_incomplete"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert!(lost.contains(&"budget"), "{ev}");
    assert_ne!(ev["verdict"], "clean", "{ev}");
    relay.stop();
}

/// QUIC over loopback with aioquic on both ends: the client's Initial opens a flow on its UDP
/// socket and on the server's (one socket for every client), the handshake is read from the
/// Initial packets of both, and the event names the client's process. A version 2 client is
/// followed too. Other UDP (here a socket sending DNS-sized datagrams) opens nothing.
#[test]
fn quic_handshakes_over_loopback_with_the_client_process() {
    let mut daemon = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let root = pki::root(dir.path(), "QUIC Tap Root", Key::P256);
    let names = [unique_name("quic-v1"), unique_name("quic-v2")];
    let sans: Vec<&str> = names.iter().map(String::as_str).collect();
    let leaf = pki::issue(dir.path(), &root, &names[0], Key::P256, false, &sans);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _origin = sensor_tests::quic::origin(&listen, &leaf.cert, &leaf.key, false);

    // Not QUIC: the socket's first datagram out is something else.
    let other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        other
            .send_to(&[0x12; 1300], sink.local_addr().unwrap())
            .unwrap();
    }

    for (sni, version) in names.iter().zip([1u8, 2]) {
        let mut cmd = Command::new(sensor_tests::venv_program("python"));
        sensor_tests::quic::client_args(&mut cmd, &listen, sni, Some(&root.cert), version);
        let mut client = Proc::spawn(
            "aioquic client",
            cmd.stdin(Stdio::null()).stdout(Stdio::null()),
        );
        let pid = client.pid();
        let status = client
            .wait_timeout(WAIT)
            .expect("the aioquic client finished");
        assert!(status.success(), "aioquic client, version {version}");
        let ev = event_for(&mut daemon, sni);
        assert_eq!(ev["transport"], "quic", "{ev}");
        assert_eq!(ev["quic"]["first_version"], version.to_string(), "{ev}");
        assert_eq!(ev["tls_version"], "1.3", "{ev}");
        assert_eq!(ev["client_outcome"], "completed", "{ev}");
        assert_eq!(ev["dst_port"], port, "{ev}");
        assert_eq!(ev["client_alpn"], serde_json::json!(["h3"]), "{ev}");
        assert!(ev["ja4"].as_str().unwrap().starts_with("q13d"), "{ev}");
        assert_eq!(ev["process"]["pid"], pid, "{ev}");
        assert_eq!(ev["process"]["role"], "client", "{ev}");
        assert_eq!(ev["capture_incomplete"], serde_json::json!([]), "{ev}");
        assert_eq!(ev["malformed"], serde_json::json!([]), "{ev}");
    }
    let sink_port = sink.local_addr().unwrap().port();
    assert!(
        !daemon.events.seen.iter().any(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            v["dst_port"] == sink_port
        }),
        "an event for plain UDP"
    );
}
