//! Helpers shared by the xtask commands.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// Facts about the workspace that the commands need.
pub struct Workspace {
    pub root: PathBuf,
    pub ebpf_toolchain: String,
    pub bpf_linker_version: String,
}

impl Workspace {
    /// Read `[workspace.metadata.sensor]` from the root Cargo.toml.
    pub fn load() -> anyhow::Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask has no parent directory")?
            .to_path_buf();
        let manifest_path = root.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?;
        let manifest: toml::Table = toml::from_str(&text)
            .with_context(|| format!("parsing {}", manifest_path.display()))?;
        let meta = manifest
            .get("workspace")
            .and_then(|w| w.get("metadata"))
            .and_then(|m| m.get("sensor"))
            .context("[workspace.metadata.sensor] missing from Cargo.toml")?;
        let get = |key: &str| -> anyhow::Result<String> {
            meta.get(key)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .with_context(|| format!("[workspace.metadata.sensor] {key} missing"))
        };
        Ok(Self {
            ebpf_toolchain: get("ebpf-toolchain")?,
            bpf_linker_version: get("bpf-linker-version")?,
            root,
        })
    }

    /// `cargo` run in the workspace root.
    pub fn cargo(&self) -> Command {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&self.root);
        cmd
    }
}

/// Print a progress line of xtask's own, with the minutes and seconds since xtask started, so
/// a CI log shows where the time goes.
pub fn say(msg: &str) {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let secs = START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs();
    eprintln!("xtask: [{:02}:{:02}] {msg}", secs / 60, secs % 60);
}

/// Run a command to completion; an error unless it succeeds.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", describe(cmd));
    }
    Ok(())
}

/// Whether a command runs and succeeds, quietly.
pub fn command_ok(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `$CARGO_HOME/bin`, where `cargo install` puts bpf-linker.
pub fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

/// Make sure the commands xtask starts find what `cargo install` put in `$CARGO_HOME/bin`.
pub fn put_cargo_bin_on_path() {
    let Some(bin) = cargo_home().map(|h| h.join("bin")) else {
        return;
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|p| p == bin) {
        return;
    }
    let joined = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)));
    if let Ok(joined) = joined {
        // SAFETY: xtask is single-threaded here, before it starts any command.
        unsafe { std::env::set_var("PATH", joined) };
    }
}
