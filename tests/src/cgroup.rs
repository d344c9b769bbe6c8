//! A cgroup v2 directory made for one test, removed on drop.

use std::path::{Path, PathBuf};

/// The cgroup v2 mount point, from /proc/self/mountinfo.
pub fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            left.split_whitespace().nth(4).map(PathBuf::from)
        })
        .expect("cgroup2 is mounted")
}

/// A child cgroup of the root. Processes still in it are moved back to the root on drop.
pub struct TestCgroup {
    pub path: PathBuf,
    root: PathBuf,
}

impl TestCgroup {
    pub fn new(label: &str) -> Self {
        crate::require_root();
        let root = cgroup2_root();
        let path = root.join(format!("sensor-test-{label}-{}", std::process::id()));
        let _ = std::fs::create_dir(&path);
        assert!(path.is_dir(), "could not create {}", path.display());
        Self { path, root }
    }

    pub fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A command that runs `program` in this cgroup (a shell moves itself in, then execs it):
    /// the program's children are in it too.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        let mut c = std::process::Command::new("sh");
        c.args(["-c", "echo $$ > \"$1\" && shift && exec \"$@\"", "sh"])
            .arg(self.procs_file())
            .arg(program);
        c
    }

    /// Kill every process in the cgroup (cgroup v2's `cgroup.kill`) and wait until it is
    /// empty, at most `timeout`.
    pub fn kill(&self, timeout: std::time::Duration) {
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            match std::fs::read_to_string(self.procs_file()) {
                Ok(procs) if !procs.trim().is_empty() => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                _ => return,
            }
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Ok(procs) = std::fs::read_to_string(self.procs_file()) {
            for pid in procs.lines() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
            }
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}
