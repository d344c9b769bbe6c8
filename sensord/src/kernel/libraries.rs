//! Shared TLS libraries as processes load them: the host's (found at start), copies in
//! containers' images, and files upgraded on disk since the uprobes attached.
//!
//! Uprobes attach to a file (its inode), so a process that loads another file than the host's
//! libssl, one in a container's image or a newer one installed since, is not covered by the
//! uprobes on the host's. Each process that connects is looked at once: the TLS libraries in
//! its /proc/PID/maps, by device and inode. A libssl or libcrypto not attached yet is opened
//! through /proc/PID/root (the process's own view of the files, a container's included),
//! checked to be the file the process mapped, and attached through sensord's descriptor of
//! it. That process's first handshake may be over by then (the active probe covers it); every
//! later process that loads the same file, in any container of the same image, is covered.
//!
//! Each library counts the processes that connected with it loaded in the last hour.

use std::{
    collections::VecDeque,
    fs::File,
    io::Read as _,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Where shared libraries usually are.
const LIBRARY_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/lib64",
    "/usr/lib",
    "/lib",
    "/usr/local/lib64",
    "/usr/local/lib",
];

/// The folders where libraries usually are, inside any root.
pub fn library_dirs() -> &'static [&'static str] {
    LIBRARY_DIRS
}

/// A TLS library that programs load from a shared file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedTls {
    OpenSsl,
    GnuTls,
    Nss,
}

impl SharedTls {
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenSsl => "OpenSSL",
            Self::GnuTls => "GnuTLS",
            Self::Nss => "NSS",
        }
    }

    /// The library a file name belongs to: the TLS part of each (libssl, libgnutls, NSS's
    /// libssl3).
    pub fn of_file_name(name: &str) -> Option<Self> {
        if name.starts_with("libssl3.so") {
            Some(Self::Nss)
        } else if name.starts_with("libssl.so") {
            Some(Self::OpenSsl)
        } else if name.starts_with("libgnutls.so") {
            Some(Self::GnuTls)
        } else {
            None
        }
    }
}

/// Where browsers keep a TLS library of their own, beside the system's folders.
const APPLICATION_LIBRARY_DIRS: &[&str] = &[
    "/usr/lib/firefox-esr",
    "/usr/lib/firefox",
    "/usr/lib/thunderbird",
];

/// The TLS libraries installed in the usual folders, each file once.
pub fn find_tls_libraries() -> Vec<(SharedTls, PathBuf)> {
    let mut found: Vec<(SharedTls, PathBuf)> = Vec::new();
    for dir in LIBRARY_DIRS.iter().chain(APPLICATION_LIBRARY_DIRS) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut names: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        names.sort();
        for path in names {
            let Some(kind) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(SharedTls::of_file_name)
            else {
                continue;
            };
            // The versioned file only (libssl.so.3, not the libssl.so development link).
            let versioned = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(".so.") || kind == SharedTls::Nss);
            let Ok(real) = std::fs::canonicalize(&path) else {
                continue;
            };
            if versioned && path.is_file() && !found.iter().any(|(_, p)| *p == real) {
                found.push((kind, real));
            }
        }
    }
    found
}

/// NSS's files named `file` (`libnss3.so`, where its certificates are made, or
/// `libnssutil3.so`, where its items are copied) in the usual folders, each once.
pub fn find_nss_libraries(file: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in LIBRARY_DIRS.iter().chain(APPLICATION_LIBRARY_DIRS) {
        let path = Path::new(dir).join(file);
        if let Ok(real) = std::fs::canonicalize(&path)
            && real.is_file()
            && !found.contains(&real)
        {
            found.push(real);
        }
    }
    found
}

/// A file by device and inode, as /proc/PID/maps and stat name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

impl FileKey {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// What a library file is, for the uprobes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LibraryFile {
    /// The TLS part of a library (libssl, libgnutls, NSS's libssl3): listed in status.
    Tls(SharedTls),
    /// OpenSSL's libcrypto, where `d2i_X509` is: attached, not listed.
    Crypto,
    /// NSS's libnss3, where `CERT_NewTempCertificate` is: attached, not listed.
    NssCerts,
    /// NSS's libnssutil3, where `SECITEM_ArenaDupItem_Util` is: NSS 3.101 and later copy
    /// the server's intermediates out of the message with it instead of making each a
    /// certificate. Attached, not listed.
    NssItems,
}

impl LibraryFile {
    pub fn of_file_name(name: &str) -> Option<Self> {
        if name.starts_with("libcrypto.so") {
            return Some(Self::Crypto);
        }
        if name.starts_with("libnss3.so") {
            return Some(Self::NssCerts);
        }
        if name.starts_with("libnssutil3.so") {
            return Some(Self::NssItems);
        }
        SharedTls::of_file_name(name).map(Self::Tls)
    }

    /// The library's name (libcrypto is OpenSSL's).
    pub fn name(self) -> &'static str {
        match self {
            Self::Tls(tls) => tls.name(),
            Self::Crypto => "OpenSSL",
            Self::NssCerts | Self::NssItems => "NSS",
        }
    }

    /// Whether uprobes go on it (OpenSSL's, GnuTLS's, NSS's libnss3 and libnssutil3).
    pub fn has_uprobes(self) -> bool {
        matches!(
            self,
            Self::Crypto
                | Self::NssCerts
                | Self::NssItems
                | Self::Tls(SharedTls::OpenSsl | SharedTls::GnuTls)
        )
    }

    /// Whether its files carry no version after `.so` (NSS's do not).
    fn unversioned(self) -> bool {
        matches!(
            self,
            Self::NssCerts | Self::NssItems | Self::Tls(SharedTls::Nss)
        )
    }
}

/// A file's content identity across mounts: one file of a container image's layer is seen
/// through each container's overlay mount with another device, the same inode number, size
/// and time (and uprobes attach to the layer's file underneath, for all of them at once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SameFile {
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl SameFile {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

/// One library file.
#[derive(Debug)]
pub struct Library {
    pub file: LibraryFile,
    /// Its path, as the host or the process that loaded it names it.
    pub path: String,
    pub key: FileKey,
    same: Option<SameFile>,
    /// Found in the host's folders (at start, or as a replacement since).
    pub host: bool,
    /// A newer file took its path on disk.
    pub replaced: bool,
    /// The uprobes on it: attached, or why not; `None` for a library no uprobe covers.
    pub attached: Option<Result<(), String>>,
    /// When processes that connected had it loaded (seconds), the last hour's, bounded.
    uses: VecDeque<u64>,
}

impl Library {
    pub fn processes_last_hour(&self, now_s: u64) -> u64 {
        self.uses.iter().filter(|&&t| t + 3600 > now_s).count() as u64
    }

    fn used(&mut self, now_s: u64) {
        while self.uses.front().is_some_and(|&t| t + 3600 <= now_s) {
            self.uses.pop_front();
        }
        if self.uses.len() < MAX_USES_KEPT {
            self.uses.push_back(now_s);
        }
    }
}

const MAX_USES_KEPT: usize = 100_000;
/// Library files tracked at most (copies in many images): past this, new ones are neither
/// attached nor listed, and counted.
const MAX_LIBRARIES: usize = 256;
/// /proc/PID/maps read at most.
const MAX_MAPS_BYTES: u64 = 4 << 20;

/// Attaches the uprobes for a library file at a path valid during the call.
pub type AttachLibrary<'a> = dyn FnMut(LibraryFile, &Path) -> Result<(), String> + 'a;

/// The libraries known, and what was not looked at.
#[derive(Default)]
pub struct Libraries {
    libraries: Vec<Library>,
    /// Libraries not tracked because `MAX_LIBRARIES` were.
    pub over_limit: u64,
    /// Processes gone before their maps could be read.
    pub gone: u64,
}

/// The TLS library files in a /proc/PID/maps text: kind, key and path, each file once.
pub fn tls_files_in_maps(maps: &str) -> Vec<(LibraryFile, FileKey, String)> {
    let mut found: Vec<(LibraryFile, FileKey, String)> = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(_range), Some(_perms), Some(_offset), Some(dev), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        // The path is the rest of the line (it may hold spaces, and " (deleted)").
        let Some(path) = line
            .split_once(inode)
            .map(|(_, rest)| rest.trim())
            .filter(|p| p.starts_with('/'))
        else {
            continue;
        };
        let Some(file) = path.rsplit('/').next().and_then(LibraryFile::of_file_name) else {
            continue;
        };
        let (Some((major, minor)), Ok(ino)) = (dev.split_once(':'), inode.parse::<u64>()) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (
            u32::from_str_radix(major, 16),
            u32::from_str_radix(minor, 16),
        ) else {
            continue;
        };
        let key = FileKey {
            dev: libc::makedev(major, minor),
            ino,
        };
        if !found.iter().any(|(_, k, _)| *k == key) {
            found.push((file, key, path.to_owned()));
        }
    }
    found
}

impl Libraries {
    /// A library found in the host's folders; `attached` as the start left it.
    pub fn add_host(
        &mut self,
        file: LibraryFile,
        path: &Path,
        attached: Option<Result<(), String>>,
    ) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let key = FileKey::of(&meta);
        if self.libraries.iter().any(|l| l.key == key) {
            return;
        }
        self.libraries.push(Library {
            file,
            path: path.display().to_string(),
            key,
            same: Some(SameFile::of(&meta)),
            host: true,
            replaced: false,
            attached,
            uses: VecDeque::new(),
        });
    }

    pub fn iter(&self) -> impl Iterator<Item = &Library> {
        self.libraries.iter()
    }

    /// A process connected for the first time: count the TLS libraries it loaded, and attach
    /// the OpenSSL uprobes to a copy not attached yet (when `attach` is given).
    pub fn on_process(&mut self, pid: u32, now_s: u64, attach: Option<&mut AttachLibrary<'_>>) {
        let mut text = String::new();
        let read = File::open(format!("/proc/{pid}/maps"))
            .and_then(|f| f.take(MAX_MAPS_BYTES).read_to_string(&mut text));
        if read.is_err() {
            self.gone += 1;
            return;
        }
        // Open every new file first, while the process lives (attaching takes longer).
        let mut new = Vec::new();
        for (file, key, path) in tls_files_in_maps(&text) {
            if let Some(known) = self.libraries.iter_mut().find(|l| l.key == key) {
                known.used(now_s);
                continue;
            }
            let opened = if path.ends_with(" (deleted)") {
                Err("the process loaded a file deleted since".to_owned())
            } else {
                open_as(Path::new(&format!("/proc/{pid}/root{path}")), key)
            };
            new.push((file, key, path, opened));
        }
        let mut attach = attach;
        for (file, key, path, opened) in new {
            self.add_copy(file, key, path, opened, now_s, &mut attach, true);
        }
    }

    /// A process in a mount namespace not seen yet (a container) started: the OpenSSL and GnuTLS files
    /// in its root's library folders get the uprobes now, before its first handshake when
    /// the attach is quicker than the program. Counted as used when a process connects.
    pub fn on_new_root(&mut self, pid: u32, now_s: u64, attach: Option<&mut AttachLibrary<'_>>) {
        let mut new = Vec::new();
        for dir in library_dirs() {
            let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/root{dir}")) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else {
                    continue;
                };
                let Some(file) = LibraryFile::of_file_name(name).filter(|f| f.has_uprobes()) else {
                    continue;
                };
                if !name.contains(".so.") && !file.unversioned() {
                    continue;
                }
                let path = format!("{dir}/{name}");
                let Ok(opened) = File::open(entry.path()) else {
                    continue;
                };
                let Ok(meta) = opened.metadata() else {
                    continue;
                };
                let key = FileKey::of(&meta);
                if meta.is_file() && !new.iter().any(|(_, k, _, _)| *k == key) {
                    new.push((file, key, path, Ok((opened, meta))));
                }
            }
        }
        let mut attach = attach;
        for (file, key, path, opened) in new {
            if self.libraries.iter().any(|l| l.key == key) {
                continue;
            }
            self.add_copy(file, key, path, opened, now_s, &mut attach, false);
        }
    }

    /// A library file not known by its key: the same content through another mount is
    /// counted there; otherwise it is tracked and, for OpenSSL and GnuTLS, attached.
    #[allow(clippy::too_many_arguments)]
    fn add_copy(
        &mut self,
        file: LibraryFile,
        key: FileKey,
        path: String,
        opened: Result<(File, std::fs::Metadata), String>,
        now_s: u64,
        attach: &mut Option<&mut AttachLibrary<'_>>,
        used: bool,
    ) {
        let same = opened.as_ref().ok().map(|(_, m)| SameFile::of(m));
        if let Some(same) = same
            && let Some(known) = self
                .libraries
                .iter_mut()
                .find(|l| l.file == file && l.same == Some(same))
        {
            if used {
                known.used(now_s);
            }
            return;
        }
        if self.libraries.len() >= MAX_LIBRARIES {
            self.over_limit += 1;
            return;
        }
        let attached = match (attach, file.has_uprobes(), opened) {
            (Some(attach), true, Ok((f, _))) => Some(attach(file, &fd_path(&f))),
            (None, true, _) => Some(Err("the uprobes are off".to_owned())),
            (_, true, Err(why)) => Some(Err(why)),
            (_, false, _) => None,
        };
        match &attached {
            Some(Ok(())) => tracing::info!(
                path = %sensor_host::render::escape(&path),
                library = file.name(),
                "a copy of a TLS library the uprobes did not cover (a container's, or a newer \
                 file): attached"
            ),
            Some(Err(why)) => tracing::warn!(
                path = %sensor_host::render::escape(&path),
                library = file.name(),
                "a copy of a TLS library the uprobes do not cover: {why}"
            ),
            None => {}
        }
        let mut library = Library {
            file,
            path,
            key,
            same,
            host: false,
            replaced: false,
            attached,
            uses: VecDeque::new(),
        };
        if used {
            library.used(now_s);
        }
        self.libraries.push(library);
    }

    /// Look at the host's library paths again: a file upgraded on disk (another inode at the
    /// same path) gets the uprobes now, before any process loads it; the old one stays
    /// attached for the processes that still have it, and is marked replaced.
    pub fn check_host_files(&mut self, attach: Option<&mut AttachLibrary<'_>>) {
        let mut attach = attach;
        let host: Vec<(LibraryFile, String, FileKey)> = self
            .libraries
            .iter()
            .filter(|l| l.host && !l.replaced)
            .map(|l| (l.file, l.path.clone(), l.key))
            .collect();
        for (file, path, key) in host {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let now = FileKey::of(&meta);
            if now == key {
                continue;
            }
            for l in self.libraries.iter_mut().filter(|l| l.key == key) {
                l.replaced = true;
            }
            if self.libraries.iter().any(|l| l.key == now) {
                // A process loaded it first: attached then.
                if let Some(l) = self.libraries.iter_mut().find(|l| l.key == now) {
                    l.host = true;
                }
                continue;
            }
            let opened = open_as(Path::new(&path), now);
            let same = opened.as_ref().ok().map(|(_, m)| SameFile::of(m));
            let attached = match (&mut attach, file.has_uprobes(), opened) {
                (Some(attach), true, Ok((f, _))) => Some(attach(file, &fd_path(&f))),
                (None, true, _) => Some(Err("the uprobes are off".to_owned())),
                (_, true, Err(why)) => Some(Err(why)),
                (_, false, _) => None,
            };
            tracing::info!(
                path = %sensor_host::render::escape(&path),
                "replaced on disk since sensord started: {}",
                match &attached {
                    Some(Ok(())) => "the new file has the uprobes".to_owned(),
                    Some(Err(why)) => format!("the new file has no uprobes: {why}"),
                    None => "no uprobe for this library".to_owned(),
                }
            );
            self.libraries.push(Library {
                file,
                path,
                key: now,
                same,
                host: true,
                replaced: false,
                attached,
                uses: VecDeque::new(),
            });
        }
    }
}

/// Open `path` and check that it is the file `key` names.
fn open_as(path: &Path, key: FileKey) -> Result<(File, std::fs::Metadata), String> {
    let opened = File::open(path).map_err(|e| format!("opening it: {e}"))?;
    let meta = opened.metadata().map_err(|e| format!("{e}"))?;
    if FileKey::of(&meta) != key {
        return Err("the file at its path is another one now".into());
    }
    Ok((opened, meta))
}

/// A path to an open file that the kernel resolves to it: sensord's own descriptor.
fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(file)
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_tls_libraries_of_the_host() {
        use super::SharedTls;
        let found = super::find_tls_libraries();
        // cargo xtask setup installs gnutls-bin and libnss3-tools beside OpenSSL.
        for kind in [SharedTls::OpenSsl, SharedTls::GnuTls, SharedTls::Nss] {
            assert!(found.iter().any(|(k, _)| *k == kind), "{kind:?}: {found:?}");
        }
        let openssl: Vec<_> = found
            .iter()
            .filter(|(k, _)| *k == SharedTls::OpenSsl)
            .collect();
        assert_eq!(
            openssl.len(),
            1,
            "libssl.so.3 once, no libssl.so link: {found:?}"
        );
        assert_eq!(SharedTls::of_file_name("libssl3.so"), Some(SharedTls::Nss));
        assert_eq!(SharedTls::of_file_name("libcrypto.so.3"), None);
    }

    use super::*;

    #[test]
    fn tls_libraries_are_found_in_maps() {
        let maps = "\
55d0c0a00000-55d0c0a10000 r--p 00000000 fd:01 1234 /usr/bin/curl
7f0000000000-7f0000010000 r--p 00000000 fd:01 247003 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f0000010000-7f0000020000 r-xp 00010000 fd:01 247003 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f0000020000-7f0000030000 r-xp 00000000 00:2f 99 /usr/lib/libcrypto.so.3 (deleted)
7f0000030000-7f0000040000 r-xp 00000000 fd:01 555 /opt/my app/libgnutls.so.30
7f0000038000-7f0000039000 r-xp 00000000 fd:01 556 /opt/firefox/libnss3.so
7f0000039000-7f000003a000 r-xp 00000000 fd:01 557 /usr/lib/x86_64-linux-gnu/libssl3.so
7f000003a000-7f000003b000 r-xp 00000000 fd:01 558 /opt/firefox/libnssutil3.so
7f0000040000-7f0000050000 rw-p 00000000 00:00 0
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
garbage
";
        let found = tls_files_in_maps(maps);
        assert_eq!(found.len(), 6, "{found:?}");
        assert_eq!(found[0].0, LibraryFile::Tls(SharedTls::OpenSsl));
        assert_eq!(
            found[0].1,
            FileKey {
                dev: libc::makedev(0xfd, 1),
                ino: 247003
            }
        );
        assert_eq!(found[1].0, LibraryFile::Crypto);
        assert_eq!(found[1].2, "/usr/lib/libcrypto.so.3 (deleted)");
        assert_eq!(found[2].2, "/opt/my app/libgnutls.so.30");
        // NSS: its certificates' library (the uprobe's) and its TLS part (listed).
        assert_eq!(found[3].0, LibraryFile::NssCerts);
        assert!(found[3].0.has_uprobes());
        assert_eq!(found[3].2, "/opt/firefox/libnss3.so");
        assert_eq!(found[4].0, LibraryFile::Tls(SharedTls::Nss));
        assert!(!found[4].0.has_uprobes());
        // And where NSS 3.101+ copies the server's intermediates (attached too).
        assert_eq!(found[5].0, LibraryFile::NssItems);
        assert!(found[5].0.has_uprobes());
        assert_eq!(found[5].2, "/opt/firefox/libnssutil3.so");
    }

    #[test]
    fn a_process_is_counted_and_a_copy_attached_once() {
        // A Python that loads the system's OpenSSL: the host's files are known, so nothing
        // is attached; the process counts. It says so once `import ssl` has returned: the
        // loader maps libssl before libcrypto, so libssl in the maps alone is too early.
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import ssl, time; print('loaded', flush=True); time.sleep(5)",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut libs = Libraries::default();
        let ssl = std::fs::canonicalize("/usr/lib/x86_64-linux-gnu/libssl.so.3").unwrap();
        libs.add_host(LibraryFile::Tls(SharedTls::OpenSsl), &ssl, Some(Ok(())));
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("python's line");
        assert_eq!(line.trim(), "loaded");
        let mut attached = Vec::new();
        libs.on_process(
            child.id(),
            100,
            Some(&mut |file, path: &Path| {
                attached.push((file, path.to_owned()));
                Ok(())
            }),
        );
        // libcrypto was not added as the host's here: it is a "copy", attached once.
        libs.on_process(child.id(), 101, Some(&mut |_, _: &Path| unreachable!()));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(attached.len(), 1, "{attached:?}");
        assert_eq!(attached[0].0, LibraryFile::Crypto);
        assert!(attached[0].1.starts_with("/proc/self/fd"));
        let host = libs.iter().find(|l| l.host).unwrap();
        assert_eq!(host.processes_last_hour(101), 2);
        assert_eq!(host.processes_last_hour(3700), 1);
        libs.on_process(u32::MAX - 1, 102, None);
        assert_eq!(libs.gone, 1);
    }

    #[test]
    fn a_library_upgraded_on_disk_gets_the_uprobes_and_the_old_one_is_marked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("libssl.so.3");
        std::fs::write(&path, b"version 1").unwrap();
        let mut libs = Libraries::default();
        let ssl = LibraryFile::Tls(SharedTls::OpenSsl);
        libs.add_host(ssl, &path, Some(Ok(())));
        libs.check_host_files(Some(&mut |_, _: &Path| unreachable!("unchanged")));
        // A package upgrade writes the new file beside and renames it over the old one.
        let new = dir.path().join("libssl.so.3.new");
        std::fs::write(&new, b"version 2, longer").unwrap();
        std::fs::rename(&new, &path).unwrap();
        let mut attached = Vec::new();
        libs.check_host_files(Some(&mut |file, p: &Path| {
            attached.push((file, std::fs::read(p).unwrap()));
            Ok(())
        }));
        assert_eq!(attached, vec![(ssl, b"version 2, longer".to_vec())]);
        let all: Vec<&Library> = libs.iter().collect();
        assert_eq!(all.len(), 2);
        assert!(all[0].replaced && !all[1].replaced, "{all:?}");
        assert!(matches!(all[1].attached, Some(Ok(()))));
        // Looked at again: nothing new.
        libs.check_host_files(Some(&mut |_, _: &Path| unreachable!("attached once")));
    }
}
