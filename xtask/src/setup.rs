//! `cargo xtask setup`: install what building and testing need, checking each thing first.
//!
//! The way that was verified on the project's machines (see ARCHITECTURE.md, "Toolchain"):
//! the stable toolchain from rust-toolchain.toml for userspace, a pinned nightly with rust-src
//! for the kernel programs, and bpf-linker built against that nightly's own libLLVM.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::util::{Workspace, command_ok, is_root, run, say};

/// Debian packages the tests and benchmarks use, with what for.
pub const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("openssl", "TLS servers and clients in tests"),
    ("curl", "TLS client in tests"),
    ("iproute2", "network namespaces and veth pairs"),
    ("iptables", "REDIRECT rules for transparent interceptors"),
    ("nftables", "nft redirect for sslsplit"),
    ("tcpdump", "fixture captures"),
    ("bpftool", "checking that no program is left behind"),
    ("iperf3", "bulk throughput benchmark"),
    ("gnutls-bin", "gnutls-cli client in tests"),
    ("wget", "a GnuTLS client in the lab"),
    (
        "libnss3-tools",
        "tstclnt and certutil: an NSS client in tests",
    ),
    ("golang-go", "a Go net/http client in the lab"),
    ("socat", "plumbing in tests"),
    ("procps", "pgrep and ps in tests"),
    ("tinyproxy", "a real HTTP CONNECT proxy in tests"),
    (
        "tshark",
        "independent JA3/JA3S and the analyze benchmark's peer",
    ),
    ("python3-venv", "the Python tools' virtual environment"),
    ("sslsplit", "a real transparent interceptor in tests"),
    ("squid-openssl", "squid's ssl-bump in tests"),
    (
        "nginx-light",
        "the origin of the lab's server-side rows (issue 19)",
    ),
    (
        "prometheus",
        "promtool and a real Prometheus scraping sensord's /metrics",
    ),
    ("rsyslog", "a real syslog receiver for the syslog export"),
    ("rsyslog-openssl", "rsyslog's TLS (RFC 5425) receiver"),
    (
        "podman",
        "a client in a container, for container attribution",
    ),
    (
        "runc",
        "podman's runtime on hybrid cgroups, which crun refuses",
    ),
    (
        "containerd",
        "a real CRI runtime: a pod's name, namespace and labels from its socket",
    ),
    (
        "dpkg-dev",
        "the .deb's library dependencies (dpkg-shlibdeps)",
    ),
    ("lintian", "checking the .deb"),
    ("rpm", "checking the .rpm (rpm -qlp, -qip)"),
    (
        "chromium",
        "headless Chromium: opens sensorctl report's page in a test",
    ),
    (
        "firefox-esr",
        "headless Firefox ESR: the lab's NSS browser client",
    ),
    (
        "default-jdk-headless",
        "javac, java and keytool: the lab's Java client",
    ),
];

/// What building alone needs: the toolchains and bpf-linker (for `cargo xtask install`).
pub fn build_tools(ws: &Workspace) -> anyhow::Result<()> {
    stable_components()?;
    ebpf_toolchain(&ws.ebpf_toolchain)?;
    bpf_linker(ws)
}

/// Install whatever is missing. Returns an error naming the step that could not be done.
pub fn setup(ws: &Workspace) -> anyhow::Result<()> {
    let mut needs_root = Vec::new();
    build_tools(ws)?;
    cargo_fuzz()?;
    package_tools()?;
    debian_packages(&mut needs_root)?;
    if needs_root.is_empty() {
        python_tools(ws)?;
        node_packages(ws)?;
    }
    if !needs_root.is_empty() {
        say("these steps need root; run them, or run `sudo -E cargo xtask setup`:");
        for step in &needs_root {
            say(&format!("  {step}"));
        }
        bail!(
            "setup is incomplete: {} step(s) need root",
            needs_root.len()
        );
    }
    say("setup: everything is in place");
    Ok(())
}

/// rustfmt and clippy for the pinned stable toolchain (rustup installs the toolchain itself
/// from rust-toolchain.toml before xtask even runs).
fn stable_components() -> anyhow::Result<()> {
    let have = |tool: &str| command_ok(Command::new("cargo").args([tool, "--version"]));
    if have("fmt") && have("clippy") {
        say("ok: stable toolchain with rustfmt and clippy");
        return Ok(());
    }
    say("installing rustfmt and clippy for the pinned stable toolchain");
    run(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))
        .context("rustup component add rustfmt clippy")
}

/// Where a toolchain keeps its libraries.
fn sysroot(toolchain: &str) -> Option<PathBuf> {
    let out = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The nightly that builds the kernel programs, with rust-src (to build `core` for the BPF
/// target) and clippy (to lint them).
fn ebpf_toolchain(toolchain: &str) -> anyhow::Result<()> {
    let clippy = || {
        Command::new("rustup")
            .args(["run", toolchain, "cargo-clippy", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if let Some(root) = sysroot(toolchain)
        && root.join("lib/rustlib/src/rust/library/core").is_dir()
        && clippy()
    {
        say(&format!(
            "ok: eBPF toolchain {toolchain} with rust-src and clippy"
        ));
        return Ok(());
    }
    say(&format!(
        "installing the eBPF toolchain {toolchain} with rust-src and clippy"
    ));
    run(Command::new("rustup").args([
        "toolchain",
        "install",
        toolchain,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
        "--component",
        "clippy",
    ]))
    .with_context(|| {
        format!(
            "could not install {toolchain}. If toolchain downloads are refused on this machine, \
             the fallback in ARCHITECTURE.md (Debian llvm-22 and the aya 0.14 line) is the way"
        )
    })
}

/// bpf-linker at the pinned version, linked against the eBPF nightly's libLLVM.
fn bpf_linker(ws: &Workspace) -> anyhow::Result<()> {
    let version = &ws.bpf_linker_version;
    let works = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(version.as_str()))
        .unwrap_or(false);
    if works {
        say(&format!("ok: bpf-linker {version}"));
        return Ok(());
    }
    let root = sysroot(&ws.ebpf_toolchain)
        .with_context(|| format!("the eBPF toolchain {} is missing", ws.ebpf_toolchain))?;
    let libllvm = find_libllvm(&root.join("lib"))?;
    let prefix = llvm_prefix_dir(&ws.ebpf_toolchain)?;
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let file_name = libllvm
        .file_name()
        .context("libLLVM path has no file name")?
        .to_owned();
    for link in [lib.join("libLLVM.so"), lib.join(&file_name)] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), libllvm.display()))?;
    }
    say(&format!(
        "installing bpf-linker {version} against {} (LLVM_PREFIX={})",
        libllvm.display(),
        prefix.display()
    ));
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            version,
            "--locked",
            "--force",
        ])
        .env("LLVM_PREFIX", &prefix))
    .context("cargo install bpf-linker")
}

/// The packagers, pinned: cargo-deb and cargo-generate-rpm.
pub const PACKAGERS: &[(&str, &str)] = &[("cargo-deb", "3.8.0"), ("cargo-generate-rpm", "0.21.1")];

/// cargo-deb and cargo-generate-rpm at their pinned versions, for `cargo xtask package`.
pub fn package_tools() -> anyhow::Result<()> {
    for (tool, version) in PACKAGERS {
        let sub = tool.trim_start_matches("cargo-");
        let have = Command::new("cargo")
            .args([sub, "--version"])
            .output()
            .is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains(version)
            });
        if have {
            say(&format!("ok: {tool} {version}"));
            continue;
        }
        say(&format!("installing {tool} {version}"));
        run(Command::new("cargo").args(["install", tool, "--version", version, "--locked"]))
            .with_context(|| format!("cargo install {tool}"))?;
    }
    Ok(())
}

/// cargo-fuzz, for the fuzz targets.
fn cargo_fuzz() -> anyhow::Result<()> {
    if command_ok(Command::new("cargo").args(["fuzz", "--version"])) {
        say("ok: cargo-fuzz");
        return Ok(());
    }
    say("installing cargo-fuzz");
    run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
        .context("cargo install cargo-fuzz")
}

/// The nightly's shared libLLVM, `libLLVM.so.<major>.<minor>-rust-<version>`.
fn find_libllvm(lib: &Path) -> anyhow::Result<PathBuf> {
    let entries = std::fs::read_dir(lib).with_context(|| format!("reading {}", lib.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("libLLVM.so.") {
            return Ok(entry.path());
        }
    }
    bail!("no libLLVM.so.* in {}", lib.display())
}

/// A folder that outlives builds: bpf-linker keeps an rpath to it.
fn llvm_prefix_dir(toolchain: &str) -> anyhow::Result<PathBuf> {
    let cargo_home = crate::util::cargo_home().context("neither CARGO_HOME nor HOME is set")?;
    Ok(cargo_home.join("sensor-llvm").join(toolchain))
}

/// Debian packages; apt-get needs root, so without it the steps are listed instead.
fn debian_packages(needs_root: &mut Vec<String>) -> anyhow::Result<()> {
    let mut missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !dpkg_installed(name))
        .collect();
    // Node.js for the gRPC tests: the machine's own if it has one (it may come from elsewhere
    // than Debian, npm with it), else Debian's.
    if !command_ok(Command::new("npm").arg("--version")) {
        missing.extend(["nodejs", "npm"]);
    }
    if missing.is_empty() {
        say("ok: Debian packages");
        return Ok(());
    }
    if !Path::new("/usr/bin/apt-get").exists() {
        bail!(
            "missing packages {} and no apt-get here: install them with your package manager",
            missing.join(" ")
        );
    }
    if !is_root() {
        needs_root.push(format!(
            "apt-get update && apt-get install -y {}",
            missing.join(" ")
        ));
        return Ok(());
    }
    say(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    run(Command::new("apt-get").args(["update", "-q"])).context("apt-get update")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("apt-get install")
}

/// PyPI packages the tests use, pinned, in `target/venv`.
pub const PYTHON_PACKAGES: &[&str] = &[
    "ja4plus==1.4.0",
    "mitmproxy==11.0.2",
    "scapy==2.8.0",
    "grpcio==1.85.1",
    "grpcio-tools==1.85.1",
    "grpcio-reflection==1.85.1",
    "grpcio-health-checking==1.85.1",
    "opentelemetry-proto==1.45.2",
];

/// npm packages the gRPC interoperability tests use, pinned, in `target/npm`.
pub const NODE_PACKAGES: &[&str] = &["@grpc/grpc-js@1.14.7", "@grpc/proto-loader@0.8.1"];

/// A virtual environment with the Python tools: `ja4plus` (an independent JA4 implementation),
/// mitmproxy (a real interceptor), scapy (the evasion lab's packet injection) and the official
/// gRPC packages (the API's interoperability tests).
fn python_tools(ws: &Workspace) -> anyhow::Result<()> {
    let venv = ws.root.join("target/venv");
    let pip = venv.join("bin/pip");
    let have = |spec: &str| {
        let (name, version) = spec.split_once("==").unwrap_or((spec, ""));
        Command::new(&pip)
            .args(["show", name])
            .output()
            .is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout).contains(&format!("Version: {version}"))
            })
    };
    if pip.exists() && PYTHON_PACKAGES.iter().all(|p| have(p)) {
        say("ok: Python tools in target/venv");
        return Ok(());
    }
    if !pip.exists() {
        say("creating target/venv");
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .context("python3 -m venv (is python3-venv installed?)")?;
    }
    say(&format!(
        "installing {} into target/venv",
        PYTHON_PACKAGES.join(" ")
    ));
    run(Command::new(&pip)
        .args(["install", "-q", "--disable-pip-version-check"])
        .args(PYTHON_PACKAGES))
    .context("pip install")
}

/// The npm packages of the gRPC tests in `target/npm` (Node.js itself is a Debian package, or
/// the machine's own).
fn node_packages(ws: &Workspace) -> anyhow::Result<()> {
    let prefix = ws.root.join("target/npm");
    let have = |spec: &str| {
        let (name, version) = spec.rsplit_once('@').unwrap_or((spec, ""));
        let manifest = prefix.join("node_modules").join(name).join("package.json");
        std::fs::read_to_string(manifest)
            .is_ok_and(|text| text.contains(&format!("\"version\": \"{version}\"")))
    };
    if NODE_PACKAGES.iter().all(|p| have(p)) {
        say("ok: npm packages in target/npm");
        return Ok(());
    }
    say(&format!(
        "installing {} into target/npm",
        NODE_PACKAGES.join(" ")
    ));
    std::fs::create_dir_all(&prefix).with_context(|| format!("creating {}", prefix.display()))?;
    run(Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(&prefix)
        .args(NODE_PACKAGES))
    .context("npm install (is Node.js with npm installed?)")
}

fn dpkg_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}
