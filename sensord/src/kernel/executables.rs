//! Programs that carry their own TLS library, found as they start.
//!
//! The kernel's `process_exec` tells which process just started a program. Its file is looked
//! at once (a cache by device, inode, size and modification time, so a program upgraded on
//! disk is looked at again), through `/proc/PID/exe`, which also reaches a file inside a
//! container's mount namespace:
//! - OpenSSL linked into the executable with its symbols exported (Node): the OpenSSL uprobes
//!   attach to the file itself, and its TLS 1.3 chains are read like the system library's;
//! - Go's `crypto/tls`: no uprobe yet, its TLS 1.3 chains come from the active probe;
//! - anything else uses a shared library (attached where it lives) or none.
//!
//! The ELF is read with `object` through a read cache: only the headers, the dynamic symbols
//! and, for Go, the function-name table are read, never the whole file.

use std::{
    collections::VecDeque,
    fs::File,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use hashlink::LruCache;
use object::{Object, ObjectSection, ObjectSymbol, ObjectSymbolTable};

/// A TLS library inside an executable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnTls {
    /// OpenSSL (or a fork with its API), linked in, `d2i_X509` and `SSL_connect` exported.
    OpenSsl(OpenSslEntries),
    /// Go's `crypto/tls`; `verify` is the file offset of `(*Conn).verifyServerCertificate`
    /// when the symbol table was kept (not stripped) and the build is for x86-64, whose
    /// register ABI the uprobe reads.
    Go { verify: Option<u64>, symbols: bool },
    /// BoringSSL (or its fork AWS-LC) linked in without exported functions, as in Chromium
    /// and Electron applications: found by its source file names, which its error queue
    /// keeps in the program. No uprobe can find its functions.
    BoringSsl,
    /// rustls (Rust), found by its source paths in the program's panic locations. Its
    /// functions are generic and inlined, with no symbol a uprobe could rely on.
    Rustls,
}

impl OwnTls {
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenSsl(_) => "OpenSSL (linked into the executable)",
            Self::Go { .. } => "Go crypto/tls",
            Self::BoringSsl => "BoringSSL (linked into the executable)",
            Self::Rustls => "rustls",
        }
    }
}

/// The file offsets of the OpenSSL functions the uprobes attach to, resolved once from the
/// exported symbols (an executable's table is large: Node exports 75,000 symbols).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenSslEntries {
    pub d2i_x509: u64,
    pub ssl_connect: Option<u64>,
    pub ssl_do_handshake: Option<u64>,
    pub ssl_accept: Option<u64>,
    pub ssl_read: Option<u64>,
}

/// The Go function the Go uprobe attaches to.
const GO_VERIFY: &str = "crypto/tls.(*Conn).verifyServerCertificate";

/// Programs larger than this are not looked at (counted in `skipped_large`).
const MAX_FILE_BYTES: u64 = 1 << 30;

/// What the ELF file at `path` carries. `Ok(None)`: no TLS library of its own.
pub fn classify(path: &Path) -> Result<Option<OwnTls>, String> {
    let file = File::open(path).map_err(|e| format!("opening: {e}"))?;
    classify_file(&file)
}

/// What an open ELF file carries. The file is mapped, not read: only the pages of its headers
/// and dynamic symbols (and, for Go, its function names) are touched.
fn classify_file(file: &File) -> Result<Option<OwnTls>, String> {
    let map = Mapped::new(file)?;
    let obj =
        object::File::parse(map.bytes()).map_err(|e| format!("not an ELF file we read: {e}"))?;
    let [
        d2i_x509,
        ssl_connect,
        ssl_do_handshake,
        ssl_accept,
        ssl_read,
    ] = exported(
        &obj,
        [
            "d2i_X509",
            "SSL_connect",
            "SSL_do_handshake",
            "SSL_accept",
            "SSL_read",
        ],
    );
    let mut entries = OpenSslEntries {
        ssl_connect,
        ssl_do_handshake,
        ssl_accept,
        ssl_read,
        ..OpenSslEntries::default()
    };
    if let Some(d2i) = d2i_x509
        && (entries.ssl_connect.is_some() || entries.ssl_do_handshake.is_some())
    {
        entries.d2i_x509 = d2i;
        return Ok(Some(OwnTls::OpenSsl(entries)));
    }
    if obj.section_by_name(".go.buildinfo").is_some() || obj.section_by_name(".gopclntab").is_some()
    {
        // Function names stay in the pc-line table even when the symbol table is stripped.
        let names = obj
            .section_by_name(".gopclntab")
            .or_else(|| obj.section_by_name(".data.rel.ro"))
            .and_then(|s| s.data().ok())
            .unwrap_or_default();
        if memchr::memmem::find(names, b"crypto/tls.(*Conn).clientHandshake").is_some() {
            let symbols = obj.section_by_name(".symtab").is_some();
            let verify = if obj.architecture() == object::Architecture::X86_64 {
                obj.symbols()
                    .find(|s| s.name() == Ok(GO_VERIFY))
                    .and_then(|s| file_offset(&obj, &s))
                    .map(|at| at + stack_check_branch(map.bytes(), at))
            } else {
                None
            };
            return Ok(Some(OwnTls::Go { verify, symbols }));
        }
    }
    // Read-only data: where C's __FILE__ and Rust's panic locations are.
    let rodata = obj
        .section_by_name(".rodata")
        .and_then(|s| s.data().ok())
        .unwrap_or_default();
    if carries_boringssl(rodata) {
        return Ok(Some(OwnTls::BoringSsl));
    }
    if carries_rustls(rodata) {
        return Ok(Some(OwnTls::Rustls));
    }
    Ok(None)
}

/// Whether `rodata` holds BoringSSL's `ssl/handshake_client.cc` as a C string (its
/// `__FILE__`). The name is looked for in parts, so that this program's own needle (a Rust
/// literal, not NUL-terminated, not next to the directory) does not count.
fn carries_boringssl(rodata: &[u8]) -> bool {
    const FILE: &[u8] = b"handshake_client.cc";
    memchr::memmem::find_iter(rodata, FILE).any(|at| {
        at >= 4 && &rodata[at - 4..at] == b"ssl/" && rodata.get(at + FILE.len()) == Some(&0)
    })
}

/// Whether `rodata` names rustls's sources: `rustls-0.23.5/src/` (from crates.io) or
/// `rustls/src/` (vendored), followed by one of its client's files.
fn carries_rustls(rodata: &[u8]) -> bool {
    memchr::memmem::find_iter(rodata, b"rustls").any(|at| {
        let rest = &rodata[at + b"rustls".len()..];
        let rest = match rest.strip_prefix(b"-") {
            Some(versioned) => {
                let n = versioned
                    .iter()
                    .take_while(|b| b.is_ascii_digit() || **b == b'.')
                    .count();
                &versioned[n..]
            }
            None => rest,
        };
        // The byte before is a path separator: not `my-rustls-wrapper/src`.
        at > 0 && rodata[at - 1] == b'/' && rest.starts_with(b"/src/")
    })
}

/// The file offsets of the functions `names` the ELF file exports (defines in its dynamic
/// symbol table). Looked up in its GNU hash table, as the dynamic loader does, when it has one:
/// Node exports about 75,000 symbols, and walking them all took tens of milliseconds in which
/// a client that just started makes its first handshake before its uprobes are attached.
fn exported<const N: usize>(obj: &object::File<'_>, names: [&str; N]) -> [Option<u64>; N] {
    if let object::File::Elf64(elf) = obj
        && let Some(found) = exported_hashed(elf, obj, names)
    {
        return found;
    }
    exported_walked(obj, names)
}

/// [`exported`] by walking every dynamic symbol (the last definition of a name counts).
fn exported_walked<const N: usize>(obj: &object::File<'_>, names: [&str; N]) -> [Option<u64>; N] {
    let mut found = [None; N];
    for sym in obj.dynamic_symbols().filter(|s| s.is_definition()) {
        if let Ok(name) = sym.name()
            && let Some(i) = names.iter().position(|n| *n == name)
        {
            found[i] = file_offset(obj, &sym);
        }
    }
    found
}

/// [`exported`] through the GNU hash table (the default version of a versioned name), or
/// `None` when the file has no such table.
fn exported_hashed<const N: usize>(
    elf: &object::read::elf::ElfFile64<'_>,
    obj: &object::File<'_>,
    names: [&str; N],
) -> Option<[Option<u64>; N]> {
    let endian = elf.endian();
    let sections = elf.elf_section_table();
    let (hash, _) = sections.gnu_hash(endian, elf.data()).ok()??;
    let versions = sections
        .versions(endian, elf.data())
        .ok()?
        .unwrap_or_default();
    let raw = elf.elf_dynamic_symbol_table();
    let symbols = obj.dynamic_symbol_table()?;
    Some(names.map(|name| {
        let name = name.as_bytes();
        let (index, _) = hash.find(
            endian,
            name,
            object::elf::gnu_hash(name),
            None,
            raw,
            &versions,
        )?;
        let sym = symbols.symbol_by_index(index).ok()?;
        if sym.is_definition() {
            file_offset(obj, &sym)
        } else {
            None
        }
    }))
}

/// Where a symbol's code sits in the file, which is how uprobes are placed.
fn file_offset<'d>(obj: &object::File<'d>, sym: &object::Symbol<'d, '_>) -> Option<u64> {
    let section = obj.section_by_index(sym.section_index()?).ok()?;
    let (start, _) = section.file_range()?;
    sym.address()
        .checked_sub(section.address())?
        .checked_add(start)
}

/// Where to put a uprobe in a Go function starting at `at` in `file`: at the conditional
/// branch of its stack-size check, when the prologue is the usual one, else at its first byte.
///
/// Go functions open with `[lea r12, [rsp-N];] cmp rsp|r12, [r14+0x10]; jbe morestack`. A
/// uprobe on the first instruction makes the kernel single-step it out of line (two traps);
/// on a branch, it emulates the instruction (one trap), which halves the cost here (a VM).
/// Nothing before the branch touches the argument registers the probe reads.
fn stack_check_branch(file: &[u8], at: u64) -> u64 {
    let Some(code) = usize::try_from(at)
        .ok()
        .and_then(|at| file.get(at..at.checked_add(24)?))
    else {
        return 0;
    };
    // lea r12, [rsp - disp32] (4c 8d a4 24 + 4 bytes) or disp8 (4c 8d 64 24 + 1 byte).
    let mut i = match code {
        [0x4c, 0x8d, 0xa4, 0x24, ..] => 8,
        [0x4c, 0x8d, 0x64, 0x24, ..] => 5,
        _ => 0,
    };
    // cmp rsp, [r14+0x10] (49 3b 66 10) or cmp r12, [r14+0x10] (4d 3b 66 10).
    match code.get(i..i + 4) {
        Some([0x49 | 0x4d, 0x3b, 0x66, 0x10]) => i += 4,
        _ => return 0,
    }
    // jbe rel8 (76) or jbe rel32 (0f 86).
    match code.get(i..i + 2) {
        Some([0x76, _]) | Some([0x0f, 0x86]) => i as u64,
        _ => 0,
    }
}

/// A file mapped read-only, unmapped on drop.
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    fn new(file: &File) -> Result<Self, String> {
        let len = file.metadata().map_err(|e| format!("stat: {e}"))?.len();
        let len = usize::try_from(len).map_err(|_| "too large".to_owned())?;
        if len == 0 {
            return Err("empty".into());
        }
        // SAFETY: a private read-only mapping of an open file; the length is the file's.
        // Nothing writes through it, and a file shrunk meanwhile would fault: executables in
        // use cannot be written (ETXTBSY), and sensord maps only those.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(file),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(Self { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes and lives as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping what new() mapped, once.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

/// One file's identity: a new inode, or a changed size or time, is another program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
        }
    }
}

/// How a program's TLS 1.3 chains are seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coverage {
    /// A uprobe reads the certificates the library parses.
    Uprobe,
    /// Only the active probe (a uprobe could not attach, or there is none for this library).
    ProbeOnly,
}

impl Coverage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uprobe => "uprobe",
            Self::ProbeOnly => "probe only",
        }
    }
}

/// A program with its own TLS library.
#[derive(Clone, Debug)]
pub struct Program {
    /// Where it was found, as its process's /proc/PID/exe names it.
    pub path: String,
    pub tls: OwnTls,
    pub coverage: Coverage,
    /// Why not a uprobe, or where it attached.
    pub detail: String,
    /// When processes started it (seconds on the caller's clock), the last hour's.
    starts: VecDeque<u64>,
}

impl Program {
    /// Processes that started it within the hour before `now_s`.
    pub fn processes_last_hour(&self, now_s: u64) -> usize {
        self.starts.iter().filter(|&&t| t + 3600 > now_s).count()
    }

    fn started(&mut self, now_s: u64) {
        while self.starts.front().is_some_and(|&t| t + 3600 <= now_s) {
            self.starts.pop_front();
        }
        // Bounded: past this, the count says "at least".
        if self.starts.len() < MAX_STARTS_KEPT {
            self.starts.push_back(now_s);
        }
    }
}

/// Attaches the uprobes for a program's own TLS library to its file (a path valid during the
/// call), or says why it could not.
pub type Attach<'a> = dyn FnMut(&Path, &OwnTls) -> Result<(), String> + 'a;

/// Starts kept per program for the hourly count.
const MAX_STARTS_KEPT: usize = 100_000;

/// What was looked at, for status.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// Exec records read.
    pub execs: u64,
    /// Files looked at (once each).
    pub inspected: u64,
    /// Processes gone before their program could be looked at.
    pub gone: u64,
    /// Files that could not be read as ELF.
    pub unreadable: u64,
    /// Files over the size limit.
    pub skipped_large: u64,
}

/// Programs by file: those with a TLS library of their own, and those without (so that each
/// file is looked at once).
pub struct Executables {
    files: LruCache<FileId, Option<usize>>,
    programs: Vec<Program>,
    counts: Counts,
}

/// Files remembered. Programs with their own TLS stay for the whole run (they hold uprobes).
const FILES_KEPT: usize = 8192;
/// Programs with their own TLS library kept: past this, new ones are not attached.
const MAX_PROGRAMS: usize = 1024;

impl Default for Executables {
    fn default() -> Self {
        Self::new()
    }
}

impl Executables {
    pub fn new() -> Self {
        Self {
            files: LruCache::new(FILES_KEPT),
            programs: Vec::new(),
            counts: Counts::default(),
        }
    }

    /// A process started a program. When the file is new and carries OpenSSL, `attach` is
    /// called with a path to it (sensord's own descriptor of the file, valid during the call)
    /// and the functions' offsets, and says why not when it could not attach.
    pub fn on_exec(&mut self, pid: u32, now_s: u64, attach: &mut Attach<'_>) {
        self.counts.execs += 1;
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let Ok(meta) = std::fs::metadata(&exe) else {
            self.counts.gone += 1;
            return;
        };
        let id = FileId::of(&meta);
        tracing::trace!(pid, ?id, "exec");
        if let Some(known) = self.files.get(&id) {
            if let Some(i) = *known {
                self.programs[i].started(now_s);
            }
            return;
        }
        if meta.size() > MAX_FILE_BYTES {
            self.counts.skipped_large += 1;
            self.files.insert(id, None);
            return;
        }
        // Opened once: the file stays reachable through sensord's own descriptor after the
        // process ends (short-lived clients end within milliseconds).
        let Ok(file) = File::open(&exe) else {
            self.counts.gone += 1;
            return;
        };
        if file.metadata().map(|m| FileId::of(&m)).ok() != Some(id) {
            // The process started another program in between: its next exec says which.
            self.counts.gone += 1;
            return;
        }
        let path = std::fs::read_link(&exe)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| exe.display().to_string());
        let own = PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&file)
        ));
        let tls = match classify_file(&file) {
            Ok(tls) => tls,
            Err(why) => {
                tracing::debug!(pid, "not looked at: {why}");
                self.counts.unreadable += 1;
                self.files.insert(id, None);
                return;
            }
        };
        self.counts.inspected += 1;
        let Some(tls) = tls else {
            self.files.insert(id, None);
            return;
        };
        if self.programs.len() >= MAX_PROGRAMS {
            tracing::warn!(
                "{MAX_PROGRAMS} programs with their own TLS library are known; not attaching to more"
            );
            self.files.insert(id, None);
            return;
        }
        let (coverage, detail) = match tls {
            OwnTls::OpenSsl(_) => match attach(&own, &tls) {
                Ok(()) => (
                    Coverage::Uprobe,
                    "uprobes on its SSL_do_handshake, SSL_connect and d2i_X509".to_owned(),
                ),
                Err(why) => (
                    Coverage::ProbeOnly,
                    format!("uprobes did not attach: {why}"),
                ),
            },
            OwnTls::Go {
                verify: Some(_), ..
            } => match attach(&own, &tls) {
                Ok(()) => (Coverage::Uprobe, format!("uprobe on {GO_VERIFY}")),
                Err(why) => (
                    Coverage::ProbeOnly,
                    format!("the uprobe did not attach: {why}"),
                ),
            },
            OwnTls::Go {
                verify: None,
                symbols: true,
            } => (
                Coverage::ProbeOnly,
                format!(
                    "no {GO_VERIFY} in its symbol table (another Go version or architecture): \
                     TLS 1.3 chains come from the active probe"
                ),
            ),
            OwnTls::Go {
                verify: None,
                symbols: false,
            } => (
                Coverage::ProbeOnly,
                "stripped (no symbol table): no uprobe can find crypto/tls; TLS 1.3 chains \
                 come from the active probe"
                    .to_owned(),
            ),
            OwnTls::BoringSsl => (
                Coverage::ProbeOnly,
                "BoringSSL linked in with no exported functions (Chromium, Electron): no uprobe \
                 can find where it parses certificates; TLS 1.3 chains come from the active probe"
                    .to_owned(),
            ),
            OwnTls::Rustls => (
                Coverage::ProbeOnly,
                "rustls: its functions are generic and inlined, with no symbol a uprobe could \
                 rely on; TLS 1.3 chains come from the active probe"
                    .to_owned(),
            ),
        };
        drop(file);
        tracing::info!(
            pid,
            path = %sensor_host::render::escape(&path),
            coverage = coverage.as_str(),
            "{} found: {detail}",
            tls.name()
        );
        let mut program = Program {
            path,
            tls,
            coverage,
            detail,
            starts: VecDeque::new(),
        };
        program.started(now_s);
        self.programs.push(program);
        self.files.insert(id, Some(self.programs.len() - 1));
    }

    /// The programs with a TLS library of their own, in the order found.
    pub fn programs(&self) -> &[Program] {
        &self.programs
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Look at the programs already running, as if each had just started (at sensord's start).
    pub fn scan_running(&mut self, now_s: u64, own_pid: u32, attach: &mut Attach<'_>) {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            // Kernel threads have no program file.
            if pid != own_pid && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok() {
                self.on_exec(pid, now_s, attach);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's nodejs links OpenSSL in and exports it (`cargo xtask setup` installs it).
    const NODE: &str = "/usr/bin/node";

    #[test]
    fn node_carries_openssl_and_curl_does_not() {
        let node = std::fs::canonicalize(NODE).expect("nodejs is installed by cargo xtask setup");
        let Ok(Some(OwnTls::OpenSsl(entries))) = classify(&node) else {
            panic!("{:?}", classify(&node));
        };
        assert!(entries.ssl_connect.is_some() && entries.ssl_read.is_some());
        // The offset is where the function's code is in the file: not its header.
        assert!(entries.d2i_x509 > 4096, "{entries:?}");
        // curl imports SSL_connect from libssl: an undefined symbol is not OpenSSL inside.
        let curl = std::fs::canonicalize("/usr/bin/curl").expect("curl");
        assert_eq!(classify(&curl), Ok(None));
        assert_eq!(classify(Path::new("/bin/ls")), Ok(None));
        assert!(classify(Path::new("/etc/hostname")).is_err());
    }

    /// The hash table lookup finds what the walk over every exported symbol finds, in Node,
    /// the system's libssl and libcrypto, and a program that imports them (curl).
    #[test]
    fn the_hash_table_finds_what_the_walk_finds() {
        let names = [
            "d2i_X509",
            "SSL_connect",
            "SSL_do_handshake",
            "SSL_accept",
            "SSL_read",
            "no_such_function",
        ];
        let mut files: Vec<PathBuf> = [NODE, "/usr/bin/curl"]
            .iter()
            .map(|p| std::fs::canonicalize(p).expect("installed by cargo xtask setup"))
            .collect();
        // The system's OpenSSL 3 (Debian's multiarch folder, or another distribution's).
        for name in ["libssl.so.3", "libcrypto.so.3"] {
            files.extend(
                [
                    "/usr/lib/x86_64-linux-gnu",
                    "/usr/lib/aarch64-linux-gnu",
                    "/usr/lib64",
                ]
                .iter()
                .map(|dir| Path::new(dir).join(name))
                .find(|p| p.exists()),
            );
        }
        assert!(files.len() >= 4, "{files:?}");
        for path in files {
            let file = File::open(&path).unwrap();
            let map = Mapped::new(&file).unwrap();
            let obj = object::File::parse(map.bytes()).unwrap();
            let object::File::Elf64(elf) = &obj else {
                panic!("{}: not ELF64", path.display());
            };
            let hashed = exported_hashed(elf, &obj, names)
                .unwrap_or_else(|| panic!("{}: no GNU hash table", path.display()));
            assert_eq!(hashed, exported_walked(&obj, names), "{}", path.display());
            let defined = hashed.iter().filter(|o| o.is_some()).count();
            let expected = match path.file_name().and_then(|n| n.to_str()) {
                Some(n) if n.starts_with("libssl") => 4,
                Some(n) if n.starts_with("libcrypto") => 1,
                Some("curl") => 0,
                _ => 5,
            };
            assert_eq!(defined, expected, "{}: {hashed:?}", path.display());
        }
    }

    /// Chromium (BoringSSL, no exported functions; `cargo xtask setup` installs chromium for
    /// the QUIC lab) and this test's own program (Rust, with sensord's rustls): listed, probe
    /// only.
    #[test]
    fn chromium_carries_boringssl_and_sensord_rustls() {
        let chromium = Path::new("/usr/lib/chromium/chromium");
        assert_eq!(classify(chromium), Ok(Some(OwnTls::BoringSsl)));
        let me = std::env::current_exe().unwrap();
        assert_eq!(classify(&me), Ok(Some(OwnTls::Rustls)));
        assert!(carries_rustls(
            b"x\0/home/u/.cargo/registry/src/i/rustls-0.23.46/src/conn.rs"
        ));
        assert!(carries_rustls(b"/build/vendor/rustls/src/client/tls13.rs"));
        assert!(!carries_rustls(b"/src/my-rustls-glue/src/lib.rs\0rustls"));
    }

    /// A Go client built with Debian's Go (`cargo xtask setup` installs golang-go), with its
    /// symbol table and stripped.
    #[test]
    fn go_binaries_are_told_apart_stripped_or_not() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let source = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/lab-clients/go-client.go"
        );
        for (name, flags) in [("go-client", ""), ("go-client-stripped", "-s -w")] {
            let out = dir.join(name);
            let status = std::process::Command::new("go")
                .args(["build", "-ldflags", flags, "-o"])
                .arg(&out)
                .arg(source)
                .env("GO111MODULE", "off")
                .env("GOCACHE", dir.join("cache"))
                .status()
                .expect("go (golang-go) is installed by cargo xtask setup");
            assert!(status.success(), "go build: {status}");
            let symbols = flags.is_empty();
            match classify(&out) {
                Ok(Some(OwnTls::Go { verify, symbols: s })) => {
                    assert_eq!(s, symbols, "{name}");
                    assert_eq!(verify.is_some(), symbols, "{name}: {verify:?}");
                    if let Some(at) = verify {
                        // The probe sits on the prologue's jbe.
                        let bytes = std::fs::read(&out).unwrap();
                        let at = at as usize;
                        assert!(
                            bytes[at] == 0x76 || bytes[at..at + 2] == [0x0f, 0x86],
                            "{name}: {:02x?}",
                            &bytes[at - 12..at + 2]
                        );
                    }
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn each_file_is_looked_at_once_and_its_starts_counted() {
        let mut seen = Executables::new();
        let mut attached = Vec::new();
        let own = std::process::id();
        // This test binary is Rust with sensord's rustls inside: listed, probe only, never
        // attached.
        seen.on_exec(own, 100, &mut |p, _| {
            attached.push(p.to_owned());
            Ok(())
        });
        seen.on_exec(own, 101, &mut |_, _| unreachable!("looked at once"));
        assert_eq!(seen.counts().inspected, 1);
        assert_eq!(seen.counts().execs, 2);
        assert_eq!(seen.programs().len(), 1);
        assert_eq!(seen.programs()[0].tls, OwnTls::Rustls);
        assert_eq!(seen.programs()[0].coverage, Coverage::ProbeOnly);
        assert_eq!(seen.programs()[0].processes_last_hour(101), 2);
        assert!(attached.is_empty());
        // A pid with no process.
        seen.on_exec(u32::MAX - 1, 102, &mut |_, _| unreachable!());
        assert_eq!(seen.counts().gone, 1);
    }

    #[test]
    fn node_gets_its_uprobes_once_and_its_starts_are_counted() {
        let mut child = std::process::Command::new(NODE)
            .args(["-e", "setTimeout(() => {}, 5000)"])
            .spawn()
            .expect("node");
        let mut seen = Executables::new();
        let mut attached = 0;
        let mut attach = |p: &Path, _: &OwnTls| {
            assert!(p.starts_with("/proc/self/fd"), "{p:?}");
            attached += 1;
            Ok(())
        };
        seen.on_exec(child.id(), 10, &mut attach);
        seen.on_exec(child.id(), 20, &mut attach);
        let two = seen.programs().first().map(|p| p.processes_last_hour(30));
        seen.on_exec(child.id(), 4000, &mut attach);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(attached, 1);
        assert_eq!(two, Some(2));
        let [program] = seen.programs() else {
            panic!("{:?}", seen.programs())
        };
        assert!(matches!(program.tls, OwnTls::OpenSsl(_)));
        assert_eq!(program.coverage, Coverage::Uprobe);
        assert!(program.path.ends_with("node"), "{}", program.path);
        assert_eq!(
            program.processes_last_hour(4000),
            1,
            "the first two are over an hour old"
        );
    }
}
