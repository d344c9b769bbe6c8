//! What the daemon reads about its host at start, for every event it records
//! ([`sensor_core::event::Host`]): the machine id, host name, boot id, OS, kernel and the
//! sensor's build. Files that are missing or malformed leave their field empty; the caller
//! logs which.

use std::{collections::BTreeMap, path::PathBuf};

use sensor_core::event::{
    Host,
    host::{clean_text, parse_os_release},
};

/// Where the facts are read from: `/` on a real host, a prepared folder in tests.
#[derive(Clone, Debug)]
pub struct Sources {
    root: PathBuf,
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
        }
    }
}

/// Files read at most this far: each holds one line or a few dozen.
const READ_LIMIT: u64 = 16 * 1024;

impl Sources {
    /// The same files under `root`.
    pub fn under(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn read(&self, path: &str) -> Option<String> {
        use std::io::Read as _;
        let file = std::fs::File::open(self.root.join(path.trim_start_matches('/'))).ok()?;
        let mut text = String::new();
        file.take(READ_LIMIT).read_to_string(&mut text).ok()?;
        Some(text)
    }

    /// The host as these sources describe it, with `labels`, cleaned.
    pub fn host(&self, labels: &BTreeMap<String, String>) -> Host {
        let os = self
            .read("/etc/os-release")
            .or_else(|| self.read("/usr/lib/os-release"))
            .map(|t| parse_os_release(&t))
            .unwrap_or_default();
        let line = |path: &str| self.read(path).and_then(|t| clean_text(t.lines().next()?));
        Host {
            id: line("/etc/machine-id"),
            name: line("/proc/sys/kernel/hostname"),
            boot_id: line("/proc/sys/kernel/random/boot_id"),
            os_id: os.get("ID").cloned(),
            os_name: os.get("NAME").cloned(),
            os_version: os.get("VERSION_ID").cloned(),
            kernel: line("/proc/sys/kernel/osrelease"),
            architecture: Some(std::env::consts::ARCH.to_owned()),
            sensor_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            sensor_commit: Some(crate::COMMIT.to_owned()),
            labels: labels.clone(),
        }
        .cleaned()
    }

    /// The files a field could not be read from (for the daemon's log at start).
    pub fn missing(host: &Host) -> Vec<&'static str> {
        let mut out = Vec::new();
        if host.id.is_none() {
            out.push("/etc/machine-id");
        }
        if host.boot_id.is_none() {
            out.push("/proc/sys/kernel/random/boot_id");
        }
        if host.os_name.is_none() {
            out.push("/etc/os-release");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn put(root: &Path, path: &str, text: &str) {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn reads_each_fact_and_leaves_out_what_is_missing_or_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(root, "etc/machine-id", "0123456789abcdef0123456789abcdef\n");
        put(root, "proc/sys/kernel/hostname", "web-1\n");
        put(root, "proc/sys/kernel/random/boot_id", "not a boot id\n");
        put(
            root,
            "usr/lib/os-release",
            "NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"12\"\n",
        );
        put(root, "proc/sys/kernel/osrelease", "6.1.0-28-amd64\n");
        let labels = [("site".to_owned(), "fra1".to_owned())].into();
        let host = Sources::under(root).host(&labels);
        assert_eq!(host.id.as_deref(), Some("0123456789abcdef0123456789abcdef"));
        assert_eq!(host.name.as_deref(), Some("web-1"));
        assert_eq!(host.boot_id, None);
        assert_eq!(host.os_id.as_deref(), Some("debian"));
        assert_eq!(host.os_name.as_deref(), Some("Debian GNU/Linux"));
        assert_eq!(host.os_version.as_deref(), Some("12"));
        assert_eq!(host.kernel.as_deref(), Some("6.1.0-28-amd64"));
        assert_eq!(
            host.sensor_version.as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(host.labels["site"], "fra1");
        assert_eq!(Sources::missing(&host), ["/proc/sys/kernel/random/boot_id"]);

        let empty = Sources::under(root.join("nothing")).host(&BTreeMap::new());
        assert_eq!(empty.id, None);
        assert_eq!(Sources::missing(&empty).len(), 3);
    }

    #[test]
    fn this_host_has_a_machine_id_and_a_kernel() {
        let host = Sources::default().host(&BTreeMap::new());
        assert!(host.kernel.is_some(), "{host:?}");
        assert!(host.name.is_some(), "{host:?}");
    }
}
