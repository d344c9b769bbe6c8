//! `cargo xtask fuzz`: the cargo-fuzz targets, each for a while.

use std::process::Command;

use anyhow::Context as _;

use crate::util::{Workspace, say};

/// The targets in fuzz/fuzz_targets.
pub const TARGETS: &[&str] = &[
    "engine",
    "capture",
    "x509",
    "uprobe",
    "ring",
    "verdict",
    "pins",
    "config",
    "grpc_authority",
    "host",
    "http_head",
    "quic",
];

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
    let logs = ws.root.join("target/fuzz-logs");
    std::fs::create_dir_all(&logs)?;
    for target in TARGETS.iter().filter(|t| only.is_none_or(|o| o == **t)) {
        say(&format!("fuzzing {target} for {seconds} s"));
        // libFuzzer reports every new input; keep that in a log and show its end.
        let log_path = logs.join(format!("{target}.log"));
        let log = std::fs::File::create(&log_path)?;
        let status = Command::new("cargo")
            .current_dir(&fuzz_dir)
            // Release speed with debug assertions, overflow checks among them: an overflow
            // the fuzzer reaches is a crash here, not a silent wrap in production.
            .args([&toolchain, "fuzz", "run", "-O", "-a", target, "--"])
            .arg(format!("-max_total_time={seconds}"))
            .args(["-rss_limit_mb=4096", "-print_final_stats=1"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .context("starting cargo fuzz")?;
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let keep = if status.success() { 3 } else { 60 };
        let tail: Vec<&str> = text.lines().rev().take(keep).collect();
        for line in tail.iter().rev() {
            eprintln!("    {line}");
        }
        if !status.success() {
            anyhow::bail!(
                "fuzz target {target} failed (log: {}, inputs: fuzz/artifacts/{target})",
                log_path.display()
            );
        }
    }
    Ok(())
}
