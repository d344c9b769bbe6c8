//! Process details from /proc, for the client side of a handshake. An edge: reads files.

use crate::event::Process;

/// Fill in comm, exe, uid and cgroup for a process known by pid. Fields that cannot be read
/// (the process is gone, or /proc is hidden) stay empty.
pub fn enrich(p: &mut Process) {
    let Some(pid) = p.pid else {
        return;
    };
    let base = format!("/proc/{pid}");
    if p.comm.is_none() {
        p.comm = std::fs::read_to_string(format!("{base}/comm"))
            .ok()
            .map(|s| s.trim_end().to_owned());
    }
    if p.exe.is_none() {
        p.exe = std::fs::read_link(format!("{base}/exe"))
            .ok()
            .map(|e| e.display().to_string());
    }
    if p.uid.is_none() {
        p.uid = std::fs::read_to_string(format!("{base}/status"))
            .ok()
            .and_then(|s| parse_uid(&s));
    }
    if p.cgroup.is_none() {
        p.cgroup = std::fs::read_to_string(format!("{base}/cgroup"))
            .ok()
            .and_then(|s| parse_cgroup_v2(&s));
    }
}

/// The real uid from the `Uid:` line of /proc/PID/status.
fn parse_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
}

/// The cgroup v2 path (the `0::` line) of /proc/PID/cgroup.
fn parse_cgroup_v2(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_cgroup() {
        assert_eq!(
            parse_uid("Name:\tcurl\nUid:\t1000\t1000\t1000\t1000\n"),
            Some(1000)
        );
        assert_eq!(
            parse_cgroup_v2("12:cpu:/\n0::/system.slice/ssh.service\n"),
            Some("/system.slice/ssh.service".into())
        );
    }

    #[test]
    fn enriches_this_process() {
        let mut p = Process {
            pid: Some(std::process::id()),
            ..Process::default()
        };
        enrich(&mut p);
        assert!(p.comm.is_some());
        assert!(p.exe.is_some());
        assert!(p.uid.is_some());
    }
}
