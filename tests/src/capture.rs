//! Packet captures with tcpdump or dumpcap, started and stopped by the test or generator.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use crate::{Lines, Proc};

/// A running capture. Stopped (SIGINT, so that the file is complete) with [`Capture::stop`].
pub struct Capture {
    proc: Proc,
    log: Lines,
}

impl Capture {
    /// `tcpdump -i IFACE -w PATH FILTER`, plus `extra` (such as `-y LINUX_SLL`). Waits until
    /// tcpdump is listening.
    pub fn tcpdump(iface: &str, path: &Path, filter: &str, extra: &[&str]) -> Self {
        let mut cmd = Command::new("tcpdump");
        cmd.args(["-i", iface, "-U", "--immediate-mode", "-s", "0"])
            .args(extra)
            .arg("-w")
            .arg(path)
            .arg(filter);
        Self::start("tcpdump", cmd, "listening on")
    }

    /// `dumpcap -i IFACE -w PATH -f FILTER`: a pcapng file.
    pub fn dumpcap(iface: &str, path: &Path, filter: &str) -> Self {
        let mut cmd = Command::new("dumpcap");
        cmd.args(["-i", iface, "-q", "-f", filter, "-w"]).arg(path);
        Self::start("dumpcap", cmd, "Capturing on")
    }

    fn start(name: &str, mut cmd: Command, ready: &str) -> Self {
        let mut proc = Proc::spawn(
            name,
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let mut log = Lines::new(proc.child.stderr.take().expect("stderr"));
        let up = log.wait_for(Duration::from_secs(20), |l| l.contains(ready));
        assert!(
            up.is_some(),
            "{name} did not start:\n{}",
            log.seen.join("\n")
        );
        // Both say they are capturing a moment before they are.
        std::thread::sleep(Duration::from_millis(1000));
        Self { proc, log }
    }

    /// Stop and wait until the file is written. Returns what the tool said on the way out.
    pub fn stop(mut self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(500));
        self.proc.signal(libc::SIGINT);
        let done = self.proc.wait_timeout(Duration::from_secs(20));
        assert!(done.is_some(), "the capture did not stop");
        let _ = self.log.wait_for(Duration::from_secs(2), |_| false);
        self.log.seen
    }
}
