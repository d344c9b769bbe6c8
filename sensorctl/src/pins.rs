//! `sensorctl pins add|list|remove`: edit the pin file sensord uses, then ask it to reload.
//!
//! The file is edited with toml_edit, so comments and layout stay; the result is checked
//! with the daemon's own parser before it replaces the file (atomically).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use comfy_table::{Table, presets::NOTHING};
use sensor_core::trust::pins::Pins;
use sensor_host::trust as load;
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table as TomlTable, value};

use crate::{Global, connect};

#[derive(Debug, clap::Subcommand)]
pub enum PinsCommand {
    /// List the pins.
    List {
        #[command(flatten)]
        file: FileArg,
    },
    /// Pin keys for a host, an executable or a process name. A chain must then contain one
    /// of the pinned keys (SPKI SHA-256), or the event says pin_mismatch.
    Add {
        #[command(flatten)]
        file: FileArg,
        #[command(flatten)]
        target: TargetArgs,
        /// Base64 SHA-256 of a SubjectPublicKeyInfo (as events and `sensorctl cert` show it).
        #[arg(long, value_name = "PIN")]
        spki: Vec<String>,
        /// Pin the keys of the certificates in this PEM file (e.g. your CA).
        #[arg(long, value_name = "PEM")]
        from_cert: Vec<PathBuf>,
        /// Report a mismatch without changing the verdict.
        #[arg(long)]
        report_only: bool,
    },
    /// Remove the pins for a target, or only some of its keys.
    Remove {
        #[command(flatten)]
        file: FileArg,
        #[command(flatten)]
        target: TargetArgs,
        /// Remove only these keys (the target's pin set goes when it has none left).
        #[arg(long, value_name = "PIN")]
        spki: Vec<String>,
    },
}

/// Which pin file.
#[derive(Debug, Clone, clap::Args)]
pub struct FileArg {
    /// The pin file. By default the one sensord uses (asked over the API), else the one
    /// sensord.toml names.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// sensord's configuration, read when sensord cannot be asked; an edit is checked with
    /// it (`sensord --check-config`) before it replaces the pin file.
    #[arg(long, value_name = "PATH", default_value = "/etc/sensor/sensord.toml")]
    pub config: PathBuf,
}

/// What a pin applies to: exactly one.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// A host name, or *.example.com for one label under it.
    #[arg(long)]
    pub host: Option<String>,
    /// An executable path.
    #[arg(long)]
    pub exe: Option<String>,
    /// A process name.
    #[arg(long)]
    pub comm: Option<String>,
}

impl TargetArgs {
    fn key_value(&self) -> (&'static str, String) {
        match (&self.host, &self.exe, &self.comm) {
            (Some(h), _, _) => ("host", h.trim_end_matches('.').to_ascii_lowercase()),
            (_, Some(e), _) => ("exe", e.clone()),
            (_, _, Some(c)) => ("comm", c.clone()),
            _ => ("host", String::new()),
        }
    }
}

pub fn run(global: &Global, cmd: PinsCommand) -> anyhow::Result<ExitCode> {
    let rt = crate::runtime()?;
    match cmd {
        PinsCommand::List { file } => {
            let (path, _) = rt.block_on(pin_file(global, &file))?;
            let pins = read(&path)?.1;
            print!("{}", list(&pins, &path));
            Ok(ExitCode::SUCCESS)
        }
        PinsCommand::Add {
            file,
            target,
            mut spki,
            from_cert,
            report_only,
        } => {
            for pem in &from_cert {
                let certs = load::pem_certificates(pem)?;
                if certs.is_empty() {
                    bail!("{}: no certificate in it", pem.display());
                }
                for c in certs {
                    spki.push(sensor_core::x509::summarize(c.as_ref())?.spki_sha256);
                }
            }
            if spki.is_empty() {
                bail!("nothing to pin: give --spki PIN or --from-cert PEM");
            }
            let (path, config) = rt.block_on(pin_file(global, &file))?;
            let (text, _) = read_or_empty(&path)?;
            let new = add(&text, &target, &spki, report_only)?;
            write(&path, &new, config.as_deref())?;
            println!(
                "pinned {} key(s) for {} in {}",
                spki.len(),
                describe(&target),
                path.display()
            );
            rt.block_on(reload(global, &path))
        }
        PinsCommand::Remove { file, target, spki } => {
            let (path, config) = rt.block_on(pin_file(global, &file))?;
            let (text, _) = read(&path)?;
            let new = remove(&text, &target, &spki)?;
            write(&path, &new, config.as_deref())?;
            println!(
                "removed pins for {} from {}",
                describe(&target),
                path.display()
            );
            rt.block_on(reload(global, &path))
        }
    }
}

fn describe(t: &TargetArgs) -> String {
    let (k, v) = t.key_value();
    format!("{k} {v}")
}

/// The pin file, and sensord's configuration file when known: --file (with --config, if it
/// exists), else sensord's (over the API), else sensord.toml's `trust.pins`.
async fn pin_file(global: &Global, file: &FileArg) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    if let Some(f) = &file.file {
        return Ok((
            f.clone(),
            file.config.is_file().then(|| file.config.clone()),
        ));
    }
    if let Ok(mut api) = connect::connect(global).await {
        let status = connect::status(&mut api).await?;
        if !status.pins_file.is_empty() {
            let config = (!status.config_file.is_empty()).then(|| status.config_file.into());
            return Ok((PathBuf::from(status.pins_file), config));
        }
        bail!(
            "sensord uses no pin file: set `pins = \"/etc/sensor/pins.toml\"` under [trust] in {}, \
             then `sensorctl reload`; or pass --file",
            if status.config_file.is_empty() {
                "its configuration".to_owned()
            } else {
                status.config_file
            }
        );
    }
    let cfg = sensor_host::config::Config::load(&file.config).with_context(
        || "sensord is not reachable and its configuration cannot be read; pass --file",
    )?;
    match cfg.trust.pins {
        Some(p) => Ok((p, Some(file.config.clone()))),
        None => bail!(
            "{} names no pin file: set `pins = \"/etc/sensor/pins.toml\"` under [trust], or pass --file",
            file.config.display()
        ),
    }
}

/// The file's text and its pins, checked by the daemon's parser.
fn read(path: &Path) -> anyhow::Result<(String, Pins)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let pins = Pins::parse(&text, &path.display().to_string())?;
    Ok((text, pins))
}

fn read_or_empty(path: &Path) -> anyhow::Result<(String, Pins)> {
    if path.exists() {
        read(path)
    } else {
        Ok((String::new(), Pins::default()))
    }
}

/// Replace the file with checked text: a temporary file, checked, then a rename.
fn write(path: &Path, text: &str, config: Option<&Path>) -> anyhow::Result<()> {
    Pins::parse(text, &path.display().to_string())
        .context("the edited pin file would not load; nothing was changed")?;
    replace(path, text.as_bytes(), |new| check_with_sensord(config, new))
}

/// sensord beside sensorctl, else on PATH.
fn sensord_program() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("sensord")))
        .filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("sensord"))
                .find(|p| p.is_file())
        })
    })
}

/// Check the new pin file as sensord will load it at its reload: `sensord --check-config`
/// with sensord's configuration (when known) and the new file. Where no sensord is installed
/// the parser's check in [`write`] is the check.
fn check_with_sensord(config: Option<&Path>, pins: &Path) -> anyhow::Result<()> {
    let Some(sensord) = sensord_program() else {
        return Ok(());
    };
    let mut cmd = std::process::Command::new(&sensord);
    cmd.arg("--check-config");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd
        .arg("--pins")
        .arg(pins)
        .env("SENSOR_LOG", "error")
        .output()
        .with_context(|| format!("running {} --check-config", sensord.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    let said = said.trim().trim_start_matches("sensord: ");
    bail!("sensord would not load it ({said}); nothing was changed")
}

/// The mode of a new pin file: sensord (root) reads it, and so may anyone who runs
/// `sensorctl pins list`; pins are not secrets.
const NEW_FILE_MODE: u32 = 0o644;

/// Replace `path` with `contents` so that a reader sees the old file or the new one, never a
/// part, and a crash leaves no half-written pin file:
/// - the temporary file is created next to `path` with `O_EXCL` (`create_new`), which never
///   follows a symlink nor reuses a file someone else placed there (the folder may be
///   writable by others than the caller, and sensorctl may run as root);
/// - its mode is the old file's (else 0644), set on the open file so the umask does not
///   decide it;
/// - `check` sees the temporary file before the rename: when it fails, the old file stays;
/// - the data is fsynced before the rename, and the folder after it, so that the rename is
///   durable and never points at empty data after a power cut.
fn replace(
    path: &Path,
    contents: &[u8],
    check: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use std::{io::Write as _, os::unix::fs::PermissionsExt as _};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?
        .to_string_lossy()
        .into_owned();
    let mode = std::fs::metadata(path).map_or(NEW_FILE_MODE, |m| m.permissions().mode() & 0o7777);
    let (tmp, mut file) = create_temporary(dir, &name)?;
    let written = (|| -> std::io::Result<()> {
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()
    })();
    drop(file);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
    }
    if let Err(e) = check(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot replace {}", path.display()));
    }
    // The new name is in the folder only once the folder itself is synced.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync the folder {}", dir.display()))
}

/// A new temporary file beside `name` in `dir`, created exclusively. The first names tried
/// are predictable (`.NAME.sensorctl-PID-N`); one that exists (a stale file, or a symlink
/// planted there) is skipped, never opened.
fn create_temporary(dir: &Path, name: &str) -> anyhow::Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    const ATTEMPTS: u32 = 16;
    let pid = std::process::id();
    for n in 0..ATTEMPTS {
        let tmp = dir.join(temporary_name(name, pid, n));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            // Owner only until the final mode is set on the open file.
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create {}", tmp.display()));
            }
        }
    }
    bail!(
        "cannot create a temporary file in {}: {ATTEMPTS} names are taken (.{name}.sensorctl-*); \
         remove them",
        dir.display()
    )
}

fn temporary_name(name: &str, pid: u32, n: u32) -> String {
    format!(".{name}.sensorctl-{pid}-{n}")
}

/// Tell sensord, when it runs.
async fn reload(global: &Global, path: &Path) -> anyhow::Result<ExitCode> {
    match connect::connect(global).await {
        Ok(mut api) => {
            let done = connect::reload(&mut api).await?;
            println!("{}", connect::reload_words(&done));
        }
        Err(_) => println!(
            "sensord is not reachable; it reads {} when it starts or reloads",
            path.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn list(pins: &Pins, path: &Path) -> String {
    if pins.pins.is_empty() {
        return format!("no pins in {}\n", path.display());
    }
    let mut t = Table::new();
    t.load_style(NOTHING)
        .set_header(["TARGET", "SPKI SHA-256", "MODE", "LINE"]);
    for p in &pins.pins {
        let target = match &p.target {
            sensor_core::trust::pins::PinTarget::Host(h) => format!("host {h}"),
            sensor_core::trust::pins::PinTarget::Wildcard(w) => format!("host *.{w}"),
            sensor_core::trust::pins::PinTarget::Exe(e) => format!("exe {e}"),
            sensor_core::trust::pins::PinTarget::Comm(c) => format!("comm {c}"),
        };
        let mode = if p.report_only {
            "report-only"
        } else {
            "enforce"
        };
        t.add_row([
            target,
            p.spki.join("\n"),
            mode.to_owned(),
            p.line.to_string(),
        ]);
    }
    format!("{}\n", t.trim_fmt())
}

fn pin_tables(doc: &mut DocumentMut) -> anyhow::Result<&mut ArrayOfTables> {
    let item = doc
        .entry("pin")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()));
    item.as_array_of_tables_mut()
        .context("`pin` in the pin file is not a list of [[pin]] tables")
}

fn matches(t: &TomlTable, key: &str, want: &str) -> bool {
    t.get(key).and_then(Item::as_str).is_some_and(|v| {
        if key == "host" {
            v.trim_end_matches('.').eq_ignore_ascii_case(want)
        } else {
            v == want
        }
    })
}

/// Add keys for a target: to its existing [[pin]] table, or a new one.
pub fn add(
    text: &str,
    target: &TargetArgs,
    spki: &[String],
    report_only: bool,
) -> anyhow::Result<String> {
    let mut doc: DocumentMut = text.parse().context("the pin file is not TOML")?;
    let (key, want) = target.key_value();
    // Text after the last table (comments) stays where it is: before a table added at the end.
    let trailing = doc.trailing().as_str().unwrap_or_default().to_owned();
    let tables = pin_tables(&mut doc)?;
    let existing = tables.iter().position(|t| matches(t, key, &want));
    match existing.and_then(|i| tables.get_mut(i)) {
        Some(t) => {
            let arr = t
                .entry("spki")
                .or_insert(value(Array::new()))
                .as_array_mut()
                .context("`spki` is not a list")?;
            for s in spki {
                if !arr.iter().any(|v| v.as_str() == Some(s)) {
                    arr.push(s.as_str());
                }
            }
            if report_only {
                t.insert("report_only", value(true));
            }
        }
        None => {
            let mut t = TomlTable::new();
            t.insert(key, value(want));
            let mut arr = Array::new();
            for s in spki {
                arr.push(s.as_str());
            }
            t.insert("spki", value(arr));
            if report_only {
                t.insert("report_only", value(true));
            }
            t.decor_mut().set_prefix(trailing);
            tables.push(t);
            doc.set_trailing("");
        }
    }
    Ok(doc.to_string())
}

/// Remove a target's pins, or only some keys of it.
pub fn remove(text: &str, target: &TargetArgs, spki: &[String]) -> anyhow::Result<String> {
    let mut doc: DocumentMut = text.parse().context("the pin file is not TOML")?;
    let (key, want) = target.key_value();
    let tables = pin_tables(&mut doc)?;
    let mut found = false;
    let mut empty = Vec::new();
    for (i, t) in tables.iter_mut().enumerate() {
        if !matches(t, key, &want) {
            continue;
        }
        found = true;
        if spki.is_empty() {
            empty.push(i);
            continue;
        }
        if let Some(arr) = t.get_mut("spki").and_then(Item::as_array_mut) {
            arr.retain(|v| !v.as_str().is_some_and(|s| spki.iter().any(|p| p == s)));
            if arr.is_empty() {
                empty.push(i);
            }
        }
    }
    if !found {
        bail!("no pins for {key} {want}");
    }
    for i in empty.into_iter().rev() {
        tables.remove(i);
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN_A: &str = "YLh1dUR9y6Kja30RrAn7JKnbQG/uEtLMkBgFF2Fuihg=";
    const PIN_B: &str = "sRHdihwgkaib1P1gxX8HFszlD+7/gTfNvuAybgLPNis=";

    fn host(h: &str) -> TargetArgs {
        TargetArgs {
            host: Some(h.into()),
            exe: None,
            comm: None,
        }
    }

    #[test]
    fn add_keeps_comments_merges_and_parses() {
        let text =
            "# our pins\n[[pin]]\nhost = \"a.example\"\nspki = [\"".to_owned() + PIN_A + "\"]\n";
        let only_comment = add("# header\n", &host("z.example"), &[PIN_A.into()], false).unwrap();
        assert!(
            only_comment.starts_with("# header\n[[pin]]"),
            "{only_comment}"
        );
        let out = add(&text, &host("A.example."), &[PIN_B.into()], false).unwrap();
        assert!(out.starts_with("# our pins\n"), "{out}");
        let pins = Pins::parse(&out, "t").unwrap();
        assert_eq!(pins.pins.len(), 1);
        assert_eq!(pins.pins[0].spki, [PIN_A, PIN_B]);
        let out = add(&out, &host("b.example"), &[PIN_A.into()], true).unwrap();
        let pins = Pins::parse(&out, "t").unwrap();
        assert_eq!(pins.pins.len(), 2);
        assert!(pins.pins[1].report_only);
        let empty = add("", &host("c.example"), &[PIN_A.into()], false).unwrap();
        assert_eq!(Pins::parse(&empty, "t").unwrap().pins.len(), 1);
    }

    #[test]
    fn the_replacement_never_follows_a_symlink_and_keeps_the_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.toml");
        std::fs::write(&path, "# old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        // Someone plants symlinks where a temporary file would go (the first name tried, and
        // the fixed name earlier versions used), pointing at a file the caller (root) may
        // write.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let planted = dir
            .path()
            .join(temporary_name("pins.toml", std::process::id(), 0));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let fixed = dir.path().join("pins.sensorctl-new");
        std::os::unix::fs::symlink(&victim, &fixed).unwrap();

        let text = add("# old\n", &host("a.example"), &[PIN_A.into()], false).unwrap();
        write(&path, &text, None).unwrap();

        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(planted.symlink_metadata().unwrap().is_symlink());
        assert!(fixed.symlink_metadata().unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640, "the old file's mode stays");
        // No temporary file is left behind besides the planted one.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("sensorctl"))
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn a_new_pin_file_gets_an_explicit_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new-pins.toml");
        let text = add("", &host("a.example"), &[PIN_A.into()], false).unwrap();
        write(&path, &text, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, NEW_FILE_MODE);
    }

    #[test]
    fn remove_one_key_or_the_target() {
        let text = add("", &host("a.example"), &[PIN_A.into(), PIN_B.into()], false).unwrap();
        let one = remove(&text, &host("a.example"), &[PIN_A.into()]).unwrap();
        assert_eq!(Pins::parse(&one, "t").unwrap().pins[0].spki, [PIN_B]);
        let none = remove(&one, &host("a.example"), &[]).unwrap();
        assert!(Pins::parse(&none, "t").unwrap().pins.is_empty());
        assert!(remove(&none, &host("a.example"), &[]).is_err());
    }
}
