//! A client in a podman container (its image imported from local files: openssl and the
//! libraries it links, nothing downloaded) makes a TLS handshake; sensord's event names the
//! container, its runtime and its image, in the JSON contract, the API and the ECS export.
//!
//! This machine's cgroups are hybrid (v1 controllers, the v2 hierarchy beside them), which crun
//! refuses, so the container runs under runc; it lacks CAP_SYS_RESOURCE, so the file and
//! process limits are set below the hard ones rather than raised.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use sensor_tests::{Daemon, LocalServer, unique_name};

/// podman with the flags this machine needs.
fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("podman (cargo xtask setup installs Debian's podman and runc)")
}

/// An image holding `program` and the libraries `ldd` names, imported into podman as `tag`.
/// Removed (with its containers) when dropped.
struct Image {
    tag: String,
}

impl Image {
    fn import(dir: &Path, tag: &str, program: &str) -> Self {
        let tar = sensor_tests::image::rootfs_tar(dir, &[program]);
        let out = podman(&["import", tar.to_str().unwrap(), tag]);
        assert!(
            out.status.success(),
            "podman import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            tag: tag.to_owned(),
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = podman(&["rmi", "--force", &self.tag]);
    }
}

#[test]
fn a_client_in_a_podman_container_is_named_with_its_runtime_and_image() {
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("localhost/sensor-test-client-{}:latest", std::process::id());
    let image = Image::import(dir.path(), &tag, "/usr/bin/openssl");
    let config = dir.path().join("sensord.toml");
    let jsonl = dir.path().join("ecs.jsonl");
    std::fs::write(
        &config,
        format!(
            "[export.jsonl]\npath = \"{}\"\necs = true\ncompress = false\n\
             [export.jsonl.filter]\nsni = [\"ctr-*\"]\n",
            jsonl.display()
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&["--config", config.to_str().unwrap()]);
    let server = LocalServer::start();
    let sni = unique_name("ctr");
    let name = format!("sensor-test-{}", std::process::id());
    let run = podman(&[
        "run",
        "--rm",
        "--runtime",
        "runc",
        "--network",
        "host",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--name",
        &name,
        &image.tag,
        "/usr/bin/openssl",
        "s_client",
        "-tls1_2",
        "-connect",
        &server.connect,
        "-servername",
        &sni,
    ]);
    assert!(
        run.status.success(),
        "the containerised client: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let ev = daemon
        .event(Duration::from_secs(20), |v| {
            v["server_name"] == sni.as_str()
        })
        .expect("the container's handshake");
    let c = &ev["process"]["container"];
    assert_eq!(ev["process"]["comm"], "openssl", "{ev}");
    assert_eq!(c["runtime"], "podman", "{ev}");
    assert_eq!(c["name"], name.as_str(), "{ev}");
    assert_eq!(c["image"], tag.as_str(), "{ev}");
    let id = c["id"].as_str().unwrap();
    assert_eq!(ev["process"]["container_id"], id, "{ev}");
    assert_eq!(id.len(), 64, "{ev}");

    // The ECS export says the same in ECS's names.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut ecs = String::new();
    while std::time::Instant::now() < deadline && !ecs.contains(&sni) {
        std::thread::sleep(Duration::from_millis(200));
        ecs = std::fs::read_to_string(&jsonl).unwrap_or_default();
    }
    let line: serde_json::Value = serde_json::from_str(
        ecs.lines()
            .find(|l| l.contains(&sni))
            .expect("the ECS line"),
    )
    .unwrap();
    assert_eq!(line["container"]["id"], id, "{line}");
    assert_eq!(line["container"]["name"], name.as_str(), "{line}");
    assert_eq!(line["container"]["runtime"], "podman", "{line}");
    assert_eq!(line["container"]["image"]["name"], tag.as_str(), "{line}");
    // ListEvents (sensorctl events) filters on the container's name and runtime.
    let socket = daemon.socket();
    let events = |filter: &[&str]| -> Vec<serde_json::Value> {
        let out = Command::new(sensor_tests::bin("sensorctl"))
            .arg("--socket")
            .arg(&socket)
            .args(["events", "--since", "1h", "-o", "json"])
            .args(filter)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let by_name = events(&["--container", &name]);
    assert_eq!(by_name.len(), 1, "{by_name:?}");
    assert_eq!(by_name[0]["server_name"], sni.as_str());
    assert_eq!(
        events(&["--container", &format!("{}*", &id[..12])]).len(),
        1
    );
    assert_eq!(
        events(&["--container-runtime", "podman", "--sni", &sni]).len(),
        1
    );
    assert!(events(&["--container-runtime", "docker"]).is_empty());
    assert!(events(&["--container", "no-such-container"]).is_empty());
    // The host's own handshakes are in no container.
    let outside = unique_name("ctr");
    server.handshake(&outside);
    daemon
        .event(Duration::from_secs(20), |v| {
            v["server_name"] == outside.as_str()
        })
        .expect("the host's handshake");
    assert!(
        events(&["--container", "*"])
            .iter()
            .all(|e| e["server_name"] != outside.as_str())
    );

    assert!(daemon.interrupt().is_some_and(|s| s.success()));
    drop(image);
    let left = podman(&["ps", "-a", "--filter", &format!("name={name}"), "-q"]);
    assert!(left.stdout.is_empty(), "the container is gone");
}

/// The container's OpenSSL is its image's copy, not the host's file: the uprobes on the
/// host's libraries do not see it. sensord attaches to the copy when the container's first
/// client connects (that handshake may be over first: the probe covers it), and the next
/// one's TLS 1.3 chain comes from the uprobe. Status lists the copy, attached.
#[test]
fn a_container_s_own_openssl_gets_the_uprobes() {
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("localhost/sensor-test-copy-{}:latest", std::process::id());
    let image = Image::import(dir.path(), &tag, "/usr/bin/openssl");
    let mut daemon = Daemon::start(&[]);
    let server = LocalServer::start();
    let mut sources = Vec::new();
    for run in 0..2 {
        // The server's certificate names localhost: the engine takes a uprobe chain only when
        // its leaf names the handshake's server. Each run is found by its container's name.
        let name = format!("sensor-test-copy-{}-{run}", std::process::id());
        // The client stays a second after its handshake (its stdin open), as a real one
        // would while it talks: sensord names a process from /proc while it lives.
        let mut client = Command::new("podman")
            .args([
                "run",
                "--rm",
                "-i",
                "--runtime",
                "runc",
                "--network",
                "host",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
                "--name",
                &name,
                &image.tag,
                "/usr/bin/openssl",
                "s_client",
                "-tls1_3",
                "-connect",
                &server.connect,
                "-servername",
                "localhost",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("podman");
        std::thread::sleep(Duration::from_secs(1));
        drop(client.stdin.take());
        let out = client.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "run {run}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ev = daemon
            .event(Duration::from_secs(20), |v| {
                v["process"]["container"]["name"] == name.as_str()
            })
            .expect("the container's handshake");
        assert_eq!(ev["tls_version"], "1.3", "{ev}");
        assert_eq!(ev["process"]["container"]["runtime"], "podman", "{ev}");
        sources.push(ev["chain_source"].as_str().unwrap_or_default().to_owned());
    }
    let out = Command::new(sensor_tests::bin("sensorctl"))
        .arg("--socket")
        .arg(daemon.socket())
        .args(["status", "-o", "json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        sources[1],
        "uprobe",
        "{sources:?}; status: {:#}\nlog:\n{}",
        status["tls_libraries"],
        daemon.log.seen.join("\n")
    );
    let copies: Vec<&serde_json::Value> = status["tls_libraries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["library"] == "OpenSSL" && l["detail"].as_str().unwrap().contains("a copy"))
        .collect();
    assert_eq!(copies.len(), 1, "{status:#}");
    assert_eq!(copies[0]["chains"], "uprobe", "{status:#}");
    assert!(
        copies[0]["processes_last_hour"].as_u64() >= Some(2),
        "{status:#}"
    );
    assert!(daemon.interrupt().is_some_and(|s| s.success()));
    drop(image);
}

/// The row the active probe cannot play: sensord under the shipped unit's capabilities (no
/// CAP_SYS_ADMIN, so it cannot enter a container's network namespace), a TLS 1.3 client in a
/// podman container with its image's own OpenSSL, in a network namespace whose HTTPS a
/// transparent mitmproxy intercepts; the client trusts mitmproxy's CA, as IT would have it.
/// The chain comes from the uprobe on the image's OpenSSL (attached when the first container
/// started), the event is `intercepted` and names the container.
#[test]
fn an_intercepted_container_is_seen_through_its_own_openssl_under_the_units_capabilities() {
    use sensor_tests::{
        interceptors::{self, Origin, Redirect},
        netns::Netns,
    };
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("localhost/sensor-test-icpt-{}:latest", std::process::id());
    let image = Image::import(dir.path(), &tag, "/usr/bin/openssl");
    let ns = Netns::new("ctr", 1500);
    let origin = Origin::start(dir.path(), "container13.test", ns.host_ip.parse().unwrap());
    let mitm = interceptors::mitmproxy_transparent(dir.path());
    let _redirect = Redirect::new(&ns.host_if, origin.port, mitm.port);
    // The path works before the sensor is asked about it.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let connect =
        "import socket, sys\nsocket.create_connection((sys.argv[1], int(sys.argv[2])), 2).close()";
    while !ns
        .command("python3")
        .args(["-c", connect, &ns.host_ip, &origin.port.to_string()])
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the redirect to mitmproxy never answered"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let root = origin.root.cert.display().to_string();
    let ca = mitm.ca.display().to_string();
    let mut daemon = Daemon::start_wrapped(
        tempfile::tempdir().unwrap(),
        &sensor_tests::unit_capabilities(),
        &["--public-roots", &root, "--host-roots", &ca],
    );
    let netns = format!("ns:/run/netns/{}", ns.name);
    let mount = format!("{ca}:/ca.pem:ro");
    let target = format!("{}:{}", ns.host_ip, origin.port);
    let mut events = Vec::new();
    for run in 0..2 {
        let name = format!("sensor-test-icpt-{}-{run}", std::process::id());
        let mut client = Command::new("podman")
            .args([
                "run",
                "--rm",
                "-i",
                "--runtime",
                "runc",
                "--network",
                &netns,
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
                "-v",
                &mount,
                "--name",
                &name,
                &image.tag,
                "/usr/bin/openssl",
                "s_client",
                "-tls1_3",
                "-verify_return_error",
                "-CAfile",
                "/ca.pem",
                "-connect",
                &target,
                "-servername",
                &origin.name,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("podman");
        std::thread::sleep(Duration::from_secs(1));
        drop(client.stdin.take());
        let out = client.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "run {run}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ev = daemon
            .event(Duration::from_secs(30), |v| {
                v["process"]["container"]["name"] == name.as_str()
            })
            .unwrap_or_else(|| panic!("run {run}: no event; log:\n{}", daemon.log.seen.join("\n")));
        events.push(ev);
    }
    let ev = &events[1];
    assert_eq!(ev["tls_version"], "1.3", "{ev}");
    assert_eq!(
        ev["chain_source"],
        "uprobe",
        "{ev}\nlog:\n{}",
        daemon.log.seen.join("\n")
    );
    assert_eq!(ev["verdict"], "intercepted", "{ev}");
    assert_eq!(ev["server_name"], origin.name.as_str(), "{ev}");
    assert_eq!(ev["process"]["container"]["runtime"], "podman", "{ev}");
    assert_eq!(ev["process"]["container"]["image"], tag.as_str(), "{ev}");
    assert_ne!(
        ev["chain"][0]["sha256"].as_str(),
        Some(origin.leaf.sha256().as_str()),
        "mitmproxy's leaf, not the origin's: {ev}"
    );
    assert!(daemon.interrupt().is_some_and(|s| s.success()));
    drop(image);
}
