//! Finding the cgroup v2 hierarchy's root, where the tap programs attach.

use std::path::PathBuf;

/// Errors finding the cgroup v2 root.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading /proc/self/mountinfo: {0}")]
    Read(#[from] std::io::Error),
    #[error(
        "no cgroup2 filesystem is mounted (see /proc/self/mountinfo); the sensor needs cgroup v2"
    )]
    NotMounted,
}

/// The mount point of the cgroup v2 hierarchy of this mount namespace.
pub fn cgroup2_root() -> Result<PathBuf, CgroupError> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    find_cgroup2_mount(&mountinfo).ok_or(CgroupError::NotMounted)
}

/// Find the first `cgroup2` mount in the text of `/proc/self/mountinfo`.
///
/// Each line is `id parent major:minor root mount-point options [optional fields...] - fstype
/// source super-options`. Mount points escape space, tab, newline and backslash as octal.
pub fn find_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_octal(mount_point)))
    })
}

fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        if let Some(v) = octal {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_layout_unified_mount() {
        let info = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            find_cgroup2_mount(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn finds_pure_v2_layout_with_optional_fields() {
        let info =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            find_cgroup2_mount(info),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn unescapes_spaces_and_reports_absence() {
        let info = "1 0 0:1 / /mnt/with\\040space rw - cgroup2 none rw\n";
        assert_eq!(
            find_cgroup2_mount(info),
            Some(PathBuf::from("/mnt/with space"))
        );
        assert_eq!(
            find_cgroup2_mount("1 0 0:1 / /sys rw - sysfs sysfs rw\n"),
            None
        );
    }
}
