//! `cargo xtask fuzz`: the cargo-fuzz targets, each for a while.

use std::process::Command;

use anyhow::Context as _;

use crate::util::{Workspace, run, say};

/// The targets in fuzz/fuzz_targets.
pub const TARGETS: &[&str] = &["engine", "capture", "x509"];

/// Run each target (or the one named) for `seconds`. The capture target's corpus starts from
/// the fixture captures.
pub fn fuzz(ws: &Workspace, seconds: u64, only: Option<&str>) -> anyhow::Result<()> {
    let fuzz_dir = ws.root.join("fuzz");
    let seeds = fuzz_dir.join("corpus/capture");
    std::fs::create_dir_all(&seeds).context("creating the capture corpus")?;
    for entry in std::fs::read_dir(ws.root.join("tests/fixtures"))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.ends_with(".pcap") || name.ends_with(".pcapng") {
            std::fs::copy(&path, seeds.join(&name))?;
        }
    }
    let toolchain = format!("+{}", ws.ebpf_toolchain);
    for target in TARGETS.iter().filter(|t| only.is_none_or(|o| o == **t)) {
        say(&format!("fuzzing {target} for {seconds} s"));
        run(Command::new("cargo")
            .current_dir(&fuzz_dir)
            .env("AYA_BUILD_SKIP", "1")
            .args([&toolchain, "fuzz", "run", "-O", target, "--"])
            .arg(format!("-max_total_time={seconds}"))
            .args(["-rss_limit_mb=4096", "-print_final_stats=1"]))
        .with_context(|| {
            format!("fuzz target {target} found a failure (see fuzz/artifacts/{target})")
        })?;
    }
    Ok(())
}
