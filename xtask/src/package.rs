//! `cargo xtask package`: a .deb (cargo-deb) and an .rpm (cargo-generate-rpm) from the release
//! binaries, into `target/package`. What goes in each is declared in sensord's Cargo.toml
//! (`[package.metadata.deb]`, `[package.metadata.generate-rpm]`); this stages what is made
//! here: the unit with the package's paths, the man pages and the shell completions.
//!
//! Reproducible: the packages' timestamps are `SOURCE_DATE_EPOCH`, the commit's time unless
//! the environment sets it, so two packagings of the same binaries are byte-identical.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::util::{Workspace, run, say};

/// The packages made, and where.
#[derive(Debug)]
pub struct Packages {
    pub deb: PathBuf,
    pub rpm: PathBuf,
}

/// The workspace's version, as the packages carry it.
fn version(ws: &Workspace) -> anyhow::Result<String> {
    let manifest = fs::read_to_string(ws.root.join("Cargo.toml")).context("reading Cargo.toml")?;
    let doc: toml::Table = manifest.parse().context("Cargo.toml is not TOML")?;
    doc.get("workspace")
        .and_then(|w| w.get("package"))
        .and_then(|p| p.get("version"))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .context("no [workspace.package] version in Cargo.toml")
}

/// The time packaged files carry: `SOURCE_DATE_EPOCH`, else the commit's.
fn source_date_epoch(ws: &Workspace) -> anyhow::Result<String> {
    if let Ok(t) = std::env::var("SOURCE_DATE_EPOCH")
        && !t.is_empty()
    {
        return Ok(t);
    }
    let out = Command::new("git")
        .args(["log", "-1", "--format=%ct", "HEAD"])
        .current_dir(&ws.root)
        .output()
        .context("git log (set SOURCE_DATE_EPOCH outside a git checkout)")?;
    let t = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || t.is_empty() {
        bail!("no commit time from git: set SOURCE_DATE_EPOCH");
    }
    Ok(t)
}

/// Stage what the packages take from `target/package/stage`.
fn stage(ws: &Workspace) -> anyhow::Result<()> {
    let stage = ws.root.join("target/package/stage");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
    }
    fs::create_dir_all(&stage)?;
    let unit = fs::read_to_string(ws.root.join("dist/sensord.service"))
        .context("reading dist/sensord.service")?
        .replace("/usr/local/bin/sensord", "/usr/bin/sensord");
    fs::write(stage.join("sensord.service"), unit)?;
    crate::install::generate_docs(&ws.root.join("target/release/sensorctl"), &stage)
}

/// `cargo xtask package`.
pub fn package(ws: &Workspace, build: bool) -> anyhow::Result<Packages> {
    crate::setup::package_tools()?;
    if build {
        crate::install::build_release(ws)?;
    }
    for bin in ["sensord", "sensorctl"] {
        let path = ws.root.join("target/release").join(bin);
        if !path.is_file() {
            bail!("{} is missing: build it first", path.display());
        }
    }
    stage(ws)?;
    let version = version(ws)?;
    let epoch = source_date_epoch(ws)?;
    let out = ws.root.join("target/package");
    let deb = out.join(format!("sensor_{version}-1_amd64.deb"));
    say(&format!("packaging {}", deb.display()));
    run(ws
        .cargo()
        .args(["deb", "-p", "sensord", "--no-build", "--output"])
        .arg(&deb)
        .env("SOURCE_DATE_EPOCH", &epoch))
    .context("cargo deb")?;
    let rpm = out.join(format!("sensor-{version}-1.x86_64.rpm"));
    say(&format!("packaging {}", rpm.display()));
    run(ws
        .cargo()
        .args([
            "generate-rpm",
            "-p",
            "sensord",
            "--source-date",
            &epoch,
            "-o",
        ])
        .arg(&rpm)
        .env("SOURCE_DATE_EPOCH", &epoch))
    .context("cargo generate-rpm")?;
    Ok(Packages { deb, rpm })
}

/// Whether two files have the same bytes.
pub fn same_bytes(a: &Path, b: &Path) -> anyhow::Result<bool> {
    Ok(
        fs::read(a).with_context(|| format!("reading {}", a.display()))?
            == fs::read(b).with_context(|| format!("reading {}", b.display()))?,
    )
}
