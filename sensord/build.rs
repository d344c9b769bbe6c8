//! Builds the kernel programs (`sensor-ebpf`) with the pinned nightly and bpf-linker, and leaves
//! the object in OUT_DIR for `include_bytes_aligned!`.
//!
//! The kernel build is the same whatever the host profile (aya-build always builds it in
//! release), but aya-build keeps it under OUT_DIR, which differs for `cargo clippy`, `cargo build`
//! and `cargo build --release`: a fresh `cargo xtask test` built it three times, a minute each.
//! It is built once, in `target/sensor-ebpf`, under a lock, and copied into each OUT_DIR.
//!
//! When a tool is missing it stops with one line that says what to run, not a backtrace.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow};

fn main() {
    if let Err(err) = run() {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    println!("cargo::rerun-if-env-changed=AYA_BUILD_SKIP");
    if std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // Builds that never load the programs (fuzzing, docs) skip the kernel build. The loader
        // refuses an empty object with a clear error.
        std::fs::write(out_dir.join("sensor"), []).context("writing the placeholder object")?;
        return Ok(());
    }

    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let toolchain = metadata.workspace_metadata["sensor"]["ebpf-toolchain"]
        .as_str()
        .ok_or_else(|| {
            anyhow!("[workspace.metadata.sensor] ebpf-toolchain missing from Cargo.toml")
        })?
        .to_owned();
    check_tools(&toolchain)?;

    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "sensor-ebpf")
        .ok_or_else(|| anyhow!("sensor-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    let shared = metadata.target_directory.as_std_path().join("sensor-ebpf");
    fs::create_dir_all(&shared).with_context(|| format!("creating {}", shared.display()))?;
    // Two build scripts may run at once (clippy and a build in two shells): the lock keeps one
    // from copying the object while the other rewrites it.
    let lock_path = shared.join(".lock");
    let lock = fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    // SAFETY: the build script has one thread here; aya-build reads OUT_DIR from the environment
    // and has no other way to be told where to build.
    unsafe { std::env::set_var("OUT_DIR", &shared) };
    // The host binaries' release profile links with thin LTO; the kernel object is linked
    // whole by bpf-linker and stays as it was built before (the verifier's instruction count
    // rose by 1.5 % with it).
    // SAFETY: as above.
    unsafe { std::env::set_var("CARGO_PROFILE_RELEASE_LTO", "false") };
    let built = aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain))
        .context("building the kernel programs (sensor-ebpf)");
    // SAFETY: as above.
    unsafe { std::env::set_var("OUT_DIR", &out_dir) };
    built?;
    fs::copy(shared.join("sensor"), out_dir.join("sensor"))
        .with_context(|| format!("copying the kernel object into {}", out_dir.display()))?;
    Ok(())
}

/// Fail early, with the command to run, when the eBPF toolchain or bpf-linker is missing.
fn check_tools(toolchain: &str) -> anyhow::Result<()> {
    let hint = "run `cargo xtask setup` to install it";
    let sysroot = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .ok_or_else(|| anyhow!("the eBPF toolchain {toolchain} is not installed; {hint}"))?;
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Err(anyhow!(
            "the eBPF toolchain {toolchain} has no rust-src component; {hint}"
        ));
    }
    which::which("bpf-linker").map_err(|_| anyhow!("bpf-linker is not on PATH; {hint}"))?;
    Ok(())
}
