//! QUIC stacks for the fixtures and the lab: an HTTP/3 origin and client on aioquic (from
//! PyPI, in the tests' virtual environment), `tests/lab-clients/quic.py`.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use crate::{Lines, Proc, venv_program, workspace_root};

fn script() -> std::path::PathBuf {
    workspace_root().join("tests/lab-clients/quic.py")
}

/// An HTTP/3 origin listening on UDP `listen` (`addr:port`), answering every request with
/// 200. With `retry`, it sends a Retry before it takes a connection (address validation).
/// Started by `cmd` (a `Command` of the Python interpreter, or one wrapped in `ip netns
/// exec`); ready when it returns.
pub fn origin_with(mut cmd: Command, listen: &str, cert: &Path, key: &Path, retry: bool) -> Proc {
    cmd.arg(script())
        .args(["server", "--listen", listen, "--cert"])
        .arg(cert)
        .arg("--key")
        .arg(key)
        .args(retry.then_some("--retry"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut p = Proc::spawn("aioquic origin", &mut cmd);
    let out = p.child.stdout.take().expect("stdout");
    let mut lines = Lines::new(out);
    assert!(
        lines
            .wait_for(Duration::from_secs(20), |l| l == "listening")
            .is_some(),
        "the aioquic origin on {listen} did not start: {:?}",
        lines.seen
    );
    p
}

/// [`origin_with`] on this host.
pub fn origin(listen: &str, cert: &Path, key: &Path, retry: bool) -> Proc {
    origin_with(
        Command::new(venv_program("python")),
        listen,
        cert,
        key,
        retry,
    )
}

/// The aioquic client's command: one HTTP/3 GET of `https://sni/` at `connect`, trusting
/// `ca` (the system's store without it), in QUIC `version` (1 or 2). It exits 0 when the
/// answer came.
pub fn client_args(cmd: &mut Command, connect: &str, sni: &str, ca: Option<&Path>, version: u8) {
    cmd.arg(script())
        .args(["client", "--connect", connect, "--sni", sni, "--version"])
        .arg(version.to_string());
    if let Some(ca) = ca {
        cmd.arg("--ca").arg(ca);
    }
}

/// Run the aioquic client on this host; whether it got its answer.
pub fn get(connect: &str, sni: &str, ca: Option<&Path>, version: u8) -> bool {
    let mut cmd = Command::new(venv_program("python"));
    client_args(&mut cmd, connect, sni, ca, version);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The base64 SHA-256 of a certificate's public key (what Chromium's
/// `--ignore-certificate-errors-spki-list` takes), by openssl.
pub fn spki_sha256(cert: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            "openssl x509 -in \"$1\" -pubkey -noout | openssl pkey -pubin -outform der \
             | openssl dgst -sha256 -binary | base64",
        )
        .arg("sh")
        .arg(cert)
        .output()
        .expect("openssl");
    let spki = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        spki.len() == 44,
        "the SPKI hash of {}: {spki:?}",
        cert.display()
    );
    spki
}

/// Headless Chromium loading `https://name:port/` over QUIC only (`connect` is where `name`
/// goes), accepting the leaf whose public key hash is `spki`; whether the page loaded.
pub fn chromium_get(
    mut cmd: Command,
    name: &str,
    port: u16,
    map_to: Option<&str>,
    spki: &str,
    profile: &Path,
) -> bool {
    cmd.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--enable-quic",
        "--dump-dom",
    ])
    .arg(format!("--origin-to-force-quic-on={name}:{port}"))
    .arg(format!("--ignore-certificate-errors-spki-list={spki}"))
    .arg(format!("--user-data-dir={}", profile.display()));
    if let Some(ip) = map_to {
        cmd.arg(format!("--host-resolver-rules=MAP {name} {ip}"));
    }
    let out = cmd
        .arg(format!("https://{name}:{port}/"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    out.is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("hello over quic")
    })
}
