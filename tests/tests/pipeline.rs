//! The thin slice: the kernel tap sees a real handshake and the ClientHello's SNI reaches
//! userspace.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use sensor_tests::{Daemon, free_port, openssl_server, self_signed, unique_name};

#[test]
fn openssl_client_hello_sni_reaches_userspace() {
    let mut daemon = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "localhost");
    let port = free_port();
    let _server = openssl_server(port, &cert, &key, &[]);
    let sni = unique_name("pipeline");

    let mut client = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-servername")
        .arg(&sni)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    client
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .unwrap();
    let status = client.wait().unwrap();
    assert!(status.success(), "openssl s_client failed: {status}");

    let ev = daemon.event(Duration::from_secs(15), |v| {
        v["server_name"].as_str() == Some(sni.as_str())
    });
    let ev = ev.unwrap_or_else(|| {
        panic!(
            "no event with SNI {sni}; events seen:\n{}\nlog:\n{}",
            daemon.events.seen.join("\n"),
            daemon.log.seen.join("\n")
        )
    });
    assert_eq!(ev["dst_port"], port);
    assert_eq!(ev["dst_addr"], "127.0.0.1");
    assert_eq!(ev["src_addr"], "127.0.0.1");
    assert_eq!(ev["client_outcome"], "completed", "{ev}");
    assert!(ev["tls_version"].is_string(), "{ev}");

    let status = daemon.interrupt().expect("sensord stops on SIGINT");
    assert!(status.success(), "sensord exit: {status}");
}
