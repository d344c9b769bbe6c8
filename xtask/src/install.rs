//! `cargo xtask install`: the release binaries, the systemd unit, the default configuration
//! (never over an existing one) and the documentation, under an optional staging directory.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::util::{Workspace, run, say};

/// Where things go.
#[derive(Debug)]
pub struct Layout {
    /// Prepended to every installed path (packaging); empty for the live system.
    pub destdir: Option<PathBuf>,
    /// Binaries go to PREFIX/bin, documentation to PREFIX/share/doc/sensor.
    pub prefix: PathBuf,
}

impl Layout {
    fn path(&self, absolute: &Path) -> PathBuf {
        match &self.destdir {
            Some(d) => d.join(absolute.strip_prefix("/").unwrap_or(absolute)),
            None => absolute.to_path_buf(),
        }
    }
}

/// What one step did, for the summary.
#[derive(Debug, PartialEq, Eq)]
pub enum Installed {
    Written(PathBuf),
    /// An existing configuration was left alone; the shipped one is next to it.
    Kept {
        existing: PathBuf,
        shipped: PathBuf,
    },
}

/// `cargo xtask install`.
pub fn install(ws: &Workspace, layout: &Layout, build: bool) -> anyhow::Result<()> {
    if build {
        build_release(ws)?;
    }
    let generated = ws.root.join("target/release/generated");
    generate_docs(&ws.root.join("target/release/sensorctl"), &generated)?;
    let mut done = install_files(&ws.root, &ws.root.join("target/release"), layout)?;
    done.extend(install_generated(&generated, layout)?);
    for step in &done {
        match step {
            Installed::Written(p) => say(&format!("installed {}", p.display())),
            Installed::Kept { existing, shipped } => say(&format!(
                "kept {} as it is; the shipped default is {}",
                existing.display(),
                shipped.display()
            )),
        }
    }
    if layout.destdir.is_none() && Path::new("/run/systemd/system").is_dir() {
        run(Command::new("systemctl").arg("daemon-reload"))?;
        say("next: systemctl enable --now sensord");
    }
    Ok(())
}

/// The release binaries, sensord and sensorctl, in target/release.
pub fn build_release(ws: &Workspace) -> anyhow::Result<()> {
    crate::setup::build_tools(ws)?;
    say("building release binaries");
    run(ws
        .cargo()
        .args(["build", "--release", "-p", "sensord", "-p", "sensorctl"]))
}

/// Man pages (into `out`) and completion scripts (into `out/completions`), made by sensorctl.
pub fn generate_docs(sensorctl: &Path, out: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(out.join("completions"))?;
    run(Command::new(sensorctl).arg("man").arg("--out").arg(out))?;
    for shell in ["bash", "zsh", "fish"] {
        let output = Command::new(sensorctl)
            .args(["completions", shell])
            .output()
            .with_context(|| format!("running {}", sensorctl.display()))?;
        if !output.status.success() {
            bail!("sensorctl completions {shell} failed");
        }
        fs::write(out.join("completions").join(shell), output.stdout)?;
    }
    Ok(())
}

/// Man pages and completions where man and the shells look for them.
fn install_generated(generated: &Path, layout: &Layout) -> anyhow::Result<Vec<Installed>> {
    let share = layout.prefix.join("share");
    let mut done = Vec::new();
    for entry in fs::read_dir(generated)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "1") {
            let name = path.file_name().context("a file name")?;
            done.push(copy(
                &path,
                &layout.path(&share.join("man/man1").join(name)),
                0o644,
            )?);
        }
    }
    let completions = generated.join("completions");
    for (shell, dest) in [
        ("bash", "bash-completion/completions/sensorctl"),
        ("zsh", "zsh/site-functions/_sensorctl"),
        ("fish", "fish/vendor_completions.d/sensorctl.fish"),
    ] {
        done.push(copy(
            &completions.join(shell),
            &layout.path(&share.join(dest)),
            0o644,
        )?);
    }
    Ok(done)
}

/// Copy the files into place. `bins` holds the built sensord and sensorctl.
pub fn install_files(root: &Path, bins: &Path, layout: &Layout) -> anyhow::Result<Vec<Installed>> {
    let mut done = Vec::new();
    let bin_dir = layout.prefix.join("bin");
    for name in ["sensord", "sensorctl"] {
        let from = bins.join(name);
        if !from.is_file() {
            bail!("{} is missing: build it first", from.display());
        }
        done.push(copy(&from, &layout.path(&bin_dir.join(name)), 0o755)?);
    }

    let doc_dir = layout.prefix.join("share/doc/sensor");
    let unit = fs::read_to_string(root.join("dist/sensord.service"))
        .context("reading dist/sensord.service")?
        .replace(
            "/usr/local/bin/sensord",
            &bin_dir.join("sensord").display().to_string(),
        )
        .replace(
            "file:///usr/share/doc/sensor/",
            &format!("file://{}/", doc_dir.display()),
        );
    done.push(write(
        &layout.path(Path::new("/etc/systemd/system/sensord.service")),
        unit.as_bytes(),
        0o644,
    )?);

    let config = layout.path(Path::new("/etc/sensor/sensord.toml"));
    let shipped = root.join("dist/sensord.toml");
    if config.exists() {
        let beside = config.with_extension("toml.dist");
        copy(&shipped, &beside, 0o644)?;
        done.push(Installed::Kept {
            existing: config,
            shipped: beside,
        });
    } else {
        done.push(copy(&shipped, &config, 0o644)?);
    }

    for doc in ["README.md", "ARCHITECTURE.md"] {
        done.push(copy(
            &root.join(doc),
            &layout.path(&doc_dir.join(doc)),
            0o644,
        )?);
    }
    Ok(done)
}

fn copy(from: &Path, to: &Path, mode: u32) -> anyhow::Result<Installed> {
    let bytes = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write(to, &bytes, mode)
}

/// Write through a temporary file and a rename, so a running binary is replaced, not modified.
fn write(to: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<Installed> {
    let dir = to.parent().context("a path with a parent")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = to.with_extension("xtask-new");
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, to).with_context(|| format!("renaming onto {}", to.display()))?;
    Ok(Installed::Written(to.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn installs_into_a_staging_directory_and_keeps_an_existing_config() {
        let bins = tempfile::tempdir().unwrap();
        for name in ["sensord", "sensorctl"] {
            fs::write(bins.path().join(name), format!("#!/bin/sh\necho {name}\n")).unwrap();
        }
        let dest = tempfile::tempdir().unwrap();
        let layout = Layout {
            destdir: Some(dest.path().to_path_buf()),
            prefix: PathBuf::from("/opt/sensor"),
        };
        let done = install_files(&root(), bins.path(), &layout).unwrap();
        assert_eq!(done.len(), 6, "{done:?}");
        let sensord = dest.path().join("opt/sensor/bin/sensord");
        let mode = fs::metadata(&sensord).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            fs::read_to_string(&sensord).unwrap(),
            "#!/bin/sh\necho sensord\n"
        );
        let unit =
            fs::read_to_string(dest.path().join("etc/systemd/system/sensord.service")).unwrap();
        assert!(
            unit.contains("ExecStart=/opt/sensor/bin/sensord --config /etc/sensor/sensord.toml"),
            "{unit}"
        );
        assert!(
            unit.contains("Documentation=file:///opt/sensor/share/doc/sensor/README.md"),
            "{unit}"
        );
        let config = dest.path().join("etc/sensor/sensord.toml");
        assert_eq!(
            fs::read(&config).unwrap(),
            fs::read(root().join("dist/sensord.toml")).unwrap()
        );
        assert!(
            dest.path()
                .join("opt/sensor/share/doc/sensor/README.md")
                .is_file()
        );

        // A second install keeps the operator's configuration.
        fs::write(&config, "state_dir = \"/srv/sensor\"\n").unwrap();
        let again = install_files(&root(), bins.path(), &layout).unwrap();
        assert!(again.contains(&Installed::Kept {
            existing: config.clone(),
            shipped: config.with_extension("toml.dist"),
        }));
        assert_eq!(
            fs::read_to_string(&config).unwrap(),
            "state_dir = \"/srv/sensor\"\n"
        );
        assert!(config.with_extension("toml.dist").is_file());
    }

    #[test]
    fn missing_binaries_are_an_error() {
        let bins = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let layout = Layout {
            destdir: Some(dest.path().to_path_buf()),
            prefix: PathBuf::from("/usr/local"),
        };
        let err = install_files(&root(), bins.path(), &layout).unwrap_err();
        assert!(err.to_string().contains("sensord is missing"), "{err}");
    }
}
