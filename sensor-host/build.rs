//! Records the commit the programs are built from, for `--version`: `SENSOR_COMMIT` is the
//! short hash of HEAD, or what the environment's `SENSOR_COMMIT` says (a package built from a
//! source tarball), or `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    let commit = std::env::var("SENSOR_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]).filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo::rustc-env=SENSOR_COMMIT={commit}");
    // Built again when HEAD moves: HEAD itself, the branch it names, and the packed refs,
    // each when it exists (cargo runs a build script every time for a path that does not:
    // a repository whose refs were never packed rebuilt everything above this crate).
    let watch = |p: String| {
        if std::path::Path::new(&p).exists() {
            println!("cargo::rerun-if-changed={p}");
        }
    };
    for path in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            watch(p);
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(p) = git(&["rev-parse", "--git-path", &branch])
    {
        // Only packed so far: the next commit writes it loose, into this folder.
        match std::path::Path::new(&p).parent() {
            Some(dir) if !std::path::Path::new(&p).exists() => watch(dir.display().to_string()),
            _ => watch(p),
        }
    }
    println!("cargo::rerun-if-env-changed=SENSOR_COMMIT");
}
