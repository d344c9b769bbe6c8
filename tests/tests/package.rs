//! The .deb and .rpm from `cargo xtask package` (which `cargo xtask test` runs first), as an
//! administrator meets them: `dpkg -i` on this machine, every file where it belongs with its
//! mode and owner, both programs run, a reinstall keeps a locally edited configuration, removal
//! and purge leave nothing; lintian finds no error; the .rpm lists the same files.
//!
//! It installs into the live system (/usr/bin, /etc/sensor, /lib/systemd/system), as root, and
//! purges the package again whatever happens.

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use sensor_tests::{require_root, workspace_root};

fn packages() -> (PathBuf, PathBuf) {
    let dir = workspace_root().join("target/package");
    let find = |ext: &str| {
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}: run cargo xtask package", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == ext))
            .unwrap_or_else(|| panic!("no .{ext} in {}: run cargo xtask package", dir.display()))
    };
    (find("deb"), find("rpm"))
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn dpkg(args: &[&str], deb: Option<&Path>) -> String {
    let mut cmd = Command::new("dpkg");
    cmd.args(args);
    if let Some(d) = deb {
        cmd.arg(d);
    }
    let (ok, said) = run(&mut cmd);
    assert!(ok, "dpkg {args:?}: {said}");
    said
}

/// Purges the package when the test ends, passed or not.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "sensor"]).output();
    }
}

/// (path, mode) of what the package must install, all owned by root.
const FILES: &[(&str, u32)] = &[
    ("/usr/bin/sensord", 0o755),
    ("/usr/bin/sensorctl", 0o755),
    ("/lib/systemd/system/sensord.service", 0o644),
    ("/etc/sensor/sensord.toml", 0o644),
    ("/usr/share/man/man1/sensorctl.1.gz", 0o644),
    ("/usr/share/bash-completion/completions/sensorctl", 0o644),
    ("/usr/share/zsh/vendor-completions/_sensorctl", 0o644),
    ("/usr/share/fish/vendor_completions.d/sensorctl.fish", 0o644),
    ("/usr/share/doc/sensor/README.md", 0o644),
    ("/usr/share/doc/sensor/copyright", 0o644),
    ("/usr/share/sensor/prometheus/sensor-alerts.yml", 0o644),
];

#[test]
fn the_deb_installs_upgrades_keeps_the_configuration_and_purges_clean() {
    require_root();
    let (deb, _) = packages();
    // Nothing of an earlier run, nor a hand install, may be there.
    let (installed, _) = run(Command::new("dpkg").args(["-s", "sensor"]));
    assert!(!installed, "the sensor package is already installed here");
    let _purge = Purge;

    dpkg(&["-i"], Some(&deb));
    for (path, mode) in FILES {
        let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o7777, *mode, "{path}");
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{path}");
    }
    let listed = dpkg(&["-L", "sensor"], None);
    for (path, _) in FILES {
        assert!(
            listed.lines().any(|l| l == *path),
            "{path} not in dpkg -L:\n{listed}"
        );
    }
    let conffiles = dpkg(&["-s", "sensor"], None);
    assert!(
        conffiles.contains("/etc/sensor/sensord.toml"),
        "{conffiles}"
    );
    assert!(
        run(Command::new("getent").args(["group", "sensor"])).0,
        "the postinst creates the group"
    );
    let unit = std::fs::read_to_string("/lib/systemd/system/sensord.service").unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/sensord --config /etc/sensor/sensord.toml"),
        "{unit}"
    );
    assert!(
        unit.contains("ExecStartPre=/usr/bin/sensord --check-config"),
        "{unit}"
    );
    for program in ["sensord", "sensorctl"] {
        let (ok, said) = run(Command::new(format!("/usr/bin/{program}")).arg("--version"));
        assert!(ok && said.starts_with(&format!("{program} 0.")), "{said}");
        assert!(said.contains("(commit "), "{said}");
    }
    let (ok, said) = run(Command::new("/usr/bin/sensord").args([
        "--check-config",
        "--config",
        "/etc/sensor/sensord.toml",
    ]));
    assert!(ok, "the shipped configuration checks: {said}");

    // A reinstall over an edited configuration keeps the edit (a conffile).
    let edited = format!(
        "{}\n# edited here\n",
        std::fs::read_to_string("/etc/sensor/sensord.toml").unwrap()
    );
    std::fs::write("/etc/sensor/sensord.toml", &edited).unwrap();
    let (ok, said) = run(Command::new("dpkg")
        .args(["-i", "--force-confold"])
        .arg(&deb)
        .env("DEBIAN_FRONTEND", "noninteractive"));
    assert!(ok, "{said}");
    assert_eq!(
        std::fs::read_to_string("/etc/sensor/sensord.toml").unwrap(),
        edited
    );

    // Remove keeps the configuration; purge takes it and the state.
    dpkg(&["--remove", "sensor"], None);
    assert!(!Path::new("/usr/bin/sensord").exists());
    assert!(Path::new("/etc/sensor/sensord.toml").exists());
    std::fs::create_dir_all("/var/lib/sensor").unwrap();
    std::fs::write("/var/lib/sensor/journal.db", b"").unwrap();
    dpkg(&["--purge", "sensor"], None);
    for (path, _) in FILES {
        assert!(!Path::new(path).exists(), "{path} left after purge");
    }
    assert!(
        !Path::new("/etc/sensor").exists(),
        "/etc/sensor left after purge"
    );
    assert!(
        !Path::new("/var/lib/sensor").exists(),
        "/var/lib/sensor left after purge"
    );
}

#[test]
fn lintian_finds_no_error_and_the_rpm_holds_the_same_files() {
    let (deb, rpm) = packages();
    let (_, said) = run(Command::new("lintian")
        .args(["--no-tag-display-limit"])
        .arg(&deb));
    let errors: Vec<&str> = said.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian:\n{said}");

    let (ok, list) = run(Command::new("rpm").args(["-qlp"]).arg(&rpm));
    assert!(ok, "{list}");
    for path in [
        "/usr/bin/sensord",
        "/usr/bin/sensorctl",
        "/usr/lib/systemd/system/sensord.service",
        "/etc/sensor/sensord.toml",
        "/usr/share/man/man1/sensorctl.1",
        "/usr/share/doc/sensor/README.md",
        "/usr/share/sensor/prometheus/sensor-alerts.yml",
    ] {
        assert!(
            list.lines().any(|l| l == path),
            "{path} not in rpm -qlp:\n{list}"
        );
    }
    let (ok, info) = run(Command::new("rpm").args(["-qip"]).arg(&rpm));
    assert!(ok, "{info}");
    for field in ["Name        : sensor", "License     : MIT OR Apache-2.0"] {
        assert!(info.contains(field), "{field}: {info}");
    }
    let (ok, config) = run(Command::new("rpm").args(["-qcp"]).arg(&rpm));
    assert!(
        ok && config.contains("/etc/sensor/sensord.toml"),
        "config files: {config}"
    );
}
