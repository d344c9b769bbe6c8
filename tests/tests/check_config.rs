//! `sensord --check-config`: a good configuration is described and exits 0; each kind of bad
//! input exits 1 with one line that names the file (and the line, where there is one). No root:
//! the check attaches nothing and opens no journal.

use std::path::Path;

use assert_cmd::Command;
use sensor_tests::{bin, mtls::mtls};

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn check(dir: &Path, config: &str, extra: &[&str]) -> Out {
    let path = dir.join("sensord.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(bin("sensord"))
        .arg("--check-config")
        .arg("--config")
        .arg(&path)
        .args(extra)
        .env("SENSOR_LOG", "error")
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Exit 1, nothing on stdout, one line on stderr that says `want`.
fn refused(out: &Out, want: &str) {
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.starts_with("sensord: "), "{}", out.stderr);
    assert!(out.stderr.contains(want), "{want}: {}", out.stderr);
}

#[test]
fn a_good_configuration_says_what_a_start_would_use() {
    let dir = tempfile::tempdir().unwrap();
    let m = mtls();
    let pins = dir.path().join("pins.toml");
    std::fs::write(
        &pins,
        "[[pin]]\nhost = \"api.example.test\"\nspki = [\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"]\n",
    )
    .unwrap();
    let config = format!(
        "state_dir = \"{}\"\n{}[metrics]\nlisten = \"127.0.0.1:9100\"\n[trust]\npins = \"{}\"\n\
         [tap]\nbyte_budget = 65536\n",
        dir.path().join("state").display(),
        m.api_section(9443, ""),
        pins.display(),
    );
    let out = check(dir.path(), &config, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for line in [
        "sensord: configuration OK",
        "sensord.toml",
        "will be created",
        "127.0.0.1:9443, mTLS: 1 certificate(s), clients from 1 CA(s)",
        "http://127.0.0.1:9100/metrics",
        "(1 pins)",
        "built-in (",
        "byte budget 65536 B",
    ] {
        assert!(out.stdout.contains(line), "{line}: {}", out.stdout);
    }
    assert!(
        !dir.path().join("state").exists(),
        "a check creates nothing"
    );
}

#[test]
fn each_kind_of_bad_input_names_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    // The configuration file: syntax, an unknown key, a value out of range, a missing file.
    refused(
        &check(d, "[tap]\nbyte_budget = 1\n[api\n", &[]),
        "sensord.toml:3:",
    );
    refused(
        &check(d, "[tap]\n\nbyte_budgett = 4096\n", &[]),
        "sensord.toml:3: unknown field `byte_budgett`",
    );
    refused(
        &check(d, "[tap]\nflow_memory_mb = 1\n", &[]),
        "sensord.toml:2:",
    );
    let missing = Command::new(bin("sensord"))
        .args(["--check-config", "--config"])
        .arg(d.join("nowhere.toml"))
        .output()
        .unwrap();
    refused(
        &Out {
            code: missing.status.code(),
            stdout: String::from_utf8_lossy(&missing.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&missing.stderr).into_owned(),
        },
        "nowhere.toml: cannot read",
    );
    // A TCP listener without mTLS, and with TLS files that are not what they should be.
    refused(
        &check(
            d,
            "[api]\nsocket_group = \"adm\"\ntcp_listen = \"127.0.0.1:9443\"\n",
            &[],
        ),
        "sensord.toml:3: api.tcp_listen needs tls_cert, tls_key and client_ca",
    );
    let junk = file("junk.pem", "not a certificate\n");
    refused(
        &check(
            d,
            &format!(
                "[api]\ntcp_listen = \"127.0.0.1:9443\"\ntls_cert = \"{junk}\"\n\
                 tls_key = \"{junk}\"\nclient_ca = \"{junk}\"\n"
            ),
            &[],
        ),
        "junk.pem: no certificate in it",
    );
    // The syslog export: an address without a port, a CA file that holds none, a certificate
    // without its key.
    refused(
        &check(d, "[export.syslog]\naddress = \"siem.example\"\n", &[]),
        "sensord.toml:2: address = \"siem.example\": it must be host:port",
    );
    refused(
        &check(
            d,
            &format!(
                "[export.syslog]\naddress = \"siem.example:6514\"\ntls = true\nca = \"{junk}\"\n"
            ),
            &[],
        ),
        "junk.pem: no usable CA certificate",
    );
    refused(
        &check(
            d,
            &format!(
                "[export.syslog]\naddress = \"siem.example:6514\"\nclient_cert = \"{junk}\"\n"
            ),
            &[],
        ),
        "sensord.toml:3: export.syslog needs both client_cert and client_key",
    );
    // The trust inputs: a store, the pins, the catalogue.
    refused(
        &check(d, "", &["--host-roots", &junk]),
        "junk.pem: no PEM certificate",
    );
    let pins = file("pins.toml", "[[pin]]\nhost = \"a.test\"\nspki = 3\n");
    refused(
        &check(d, &format!("[trust]\npins = \"{pins}\"\n"), &[]),
        "pins.toml:3:",
    );
    let catalogue = file("catalogue.toml", "[[product]]\n\nname = 1\n");
    refused(
        &check(d, &format!("[trust]\ncatalogue = \"{catalogue}\"\n"), &[]),
        "catalogue.toml:3:",
    );
    // A state directory that is a file.
    let state = file("state", "");
    refused(
        &check(d, &format!("state_dir = \"{state}\"\n"), &[]),
        "is not a directory",
    );
}
