//! Container images from local files: programs and the libraries `ldd` names, in a root
//! file system tar that podman imports. Nothing is downloaded.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// `programs` and the libraries they link, copied under `dir/rootfs` at their own paths and
/// packed into `dir/rootfs.tar`, whose path is returned.
pub fn rootfs_tar(dir: &Path, programs: &[&str]) -> PathBuf {
    let root = dir.join("rootfs");
    let mut files: Vec<String> = Vec::new();
    for program in programs {
        let ldd = Command::new("ldd").arg(program).output().expect("ldd");
        files.push((*program).to_owned());
        files.extend(
            String::from_utf8_lossy(&ldd.stdout)
                .split_whitespace()
                .filter(|w| w.starts_with('/'))
                .map(str::to_owned),
        );
    }
    for f in &files {
        let to = root.join(f.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().expect("a file in a folder")).unwrap();
        std::fs::copy(f, &to).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    let tar = dir.join("rootfs.tar");
    let out = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .expect("tar");
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tar
}
