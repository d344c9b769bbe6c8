//! Attaching the uprobes: OpenSSL's `SSL_do_handshake` and `SSL_connect` (entry and return) in
//! libssl, `d2i_X509` in libcrypto; GnuTLS's `gnutls_handshake`,
//! `gnutls_certificate_verify_peers*` and `gnutls_x509_crt_import`; NSS's
//! `CERT_NewTempCertificate` in libnss3 and `SECITEM_ArenaDupItem_Util` in libnssutil3. Optional: where they cannot attach, the daemon says so once
//! and relies on the active probe for TLS 1.3 chains.

use std::path::{Path, PathBuf};

use aya::{
    Ebpf,
    programs::{UProbe, uprobe::UProbeScope},
};

use super::{
    HookStatus,
    executables::{OpenSslEntries, OwnTls},
    libraries::{LibraryFile, SharedTls, find_nss_libraries, find_tls_libraries, library_dirs},
};

const LIBSSL: &[&str] = &["libssl.so.3", "libssl.so.1.1"];
const LIBCRYPTO: &[&str] = &["libcrypto.so.3", "libcrypto.so.1.1"];

/// The libssl and libcrypto files to attach to: the system's, and `extra` (files, or folders
/// holding them). The same file reached by two paths counts once.
pub fn find_libraries(extra: &[PathBuf]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut ssl = Vec::new();
    let mut crypto = Vec::new();
    let mut add = |path: &Path| {
        let Ok(real) = std::fs::canonicalize(path) else {
            return;
        };
        let name = real
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let list = if name.starts_with("libssl") {
            &mut ssl
        } else if name.starts_with("libcrypto") {
            &mut crypto
        } else {
            return;
        };
        if !list.contains(&real) {
            list.push(real);
        }
    };
    let dirs = library_dirs()
        .iter()
        .map(PathBuf::from)
        .chain(extra.iter().filter(|p| p.is_dir()).cloned());
    for dir in dirs {
        for name in LIBSSL.iter().chain(LIBCRYPTO) {
            let p = dir.join(name);
            if p.is_file() {
                add(&p);
            }
        }
    }
    for file in extra.iter().filter(|p| p.is_file()) {
        add(file);
    }
    (ssl, crypto)
}

/// Whether the kernel attaches uprobes through uprobe_multi links (6.6 on). Those need
/// CAP_BPF and CAP_PERFMON, the shipped unit's capabilities; the classic attach
/// (perf_event_open on the uprobe PMU) needs CAP_SYS_ADMIN, which the unit does not give.
pub fn multi_links() -> bool {
    static MULTI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MULTI.get_or_init(|| {
        aya::sys::is_uprobe_multi_supported(aya::sys::UProbeMultiFeature::LinkCreation)
            .unwrap_or(false)
    })
}

/// How the uprobes attach, for the hooks' details.
fn attach_kind() -> &'static str {
    if multi_links() {
        "uprobe_multi links"
    } else {
        "perf events on the uprobe PMU, which need CAP_SYS_ADMIN"
    }
}

/// The uprobe program `base` in the variant the kernel attaches (see [`multi_links`]).
fn uprobe_mut<'a>(ebpf: &'a mut Ebpf, base: &str) -> Result<&'a mut UProbe, String> {
    let name = if multi_links() {
        format!("{base}_multi")
    } else {
        base.to_owned()
    };
    ebpf.program_mut(&name)
        .ok_or_else(|| format!("{name} is missing from the object"))?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))
}

/// Load and attach one uprobe program at `points` of every library in `libs`.
fn attach(
    ebpf: &mut Ebpf,
    program: &str,
    points: &[&str],
    libs: &[PathBuf],
) -> Result<(Vec<String>, Option<u32>), String> {
    if libs.is_empty() {
        return Err("no library found".into());
    }
    let p = uprobe_mut(ebpf, program)?;
    if p.fd().is_err() {
        p.load().map_err(|e| format!("loading: {e}"))?;
    }
    let mut attached = Vec::new();
    let mut errors = Vec::new();
    for lib in libs {
        match p.attach(points.iter().copied(), lib, UProbeScope::AllProcesses) {
            Ok(_) => attached.push(lib.display().to_string()),
            Err(e) => errors.push(format!("{}: {e}", lib.display())),
        }
    }
    if attached.is_empty() {
        return Err(errors.join("; "));
    }
    Ok((attached, p.info().ok().map(|i| i.id())))
}

/// Attach the OpenSSL programs to one more library file (a container's copy, or a file
/// upgraded on disk) at `target`, a path the kernel resolves: the handshake programs to a
/// libssl, `d2i_x509` to a libcrypto, the request-head programs too where they run.
pub fn attach_library(ebpf: &mut Ebpf, file: LibraryFile, target: &Path) -> Result<(), String> {
    let target = target.to_path_buf();
    let one = std::slice::from_ref(&target);
    match file {
        LibraryFile::Crypto => attach(ebpf, "d2i_x509", &["d2i_X509"], one).map(|_| ()),
        LibraryFile::Tls(SharedTls::OpenSsl) => {
            for program in ["ssl_handshake_enter", "ssl_handshake_exit"] {
                attach(ebpf, program, &["SSL_do_handshake", "SSL_connect"], one)?;
            }
            let heads_on = uprobe_mut(ebpf, "ssl_read_enter").is_ok_and(|p| p.fd().is_ok());
            if heads_on {
                for (program, points) in [
                    ("ssl_accept_enter", &["SSL_do_handshake", "SSL_accept"][..]),
                    ("ssl_accept_exit", &["SSL_do_handshake", "SSL_accept"][..]),
                    ("ssl_read_enter", &["SSL_read"][..]),
                    ("ssl_read_exit", &["SSL_read"][..]),
                ] {
                    if let Err(e) = attach(ebpf, program, points, one) {
                        tracing::debug!("{program} on {}: {e}", target.display());
                    }
                }
            }
            Ok(())
        }
        LibraryFile::Tls(SharedTls::GnuTls) => attach_gnutls(ebpf, one).map(|_| ()),
        LibraryFile::NssCerts => attach(ebpf, "nss_cert_import", NSS_CERT_IMPORT, one).map(|_| ()),
        LibraryFile::NssItems => attach(ebpf, "nss_cert_import", NSS_ITEM_DUP, one).map(|_| ()),
        LibraryFile::Tls(other) => Err(format!("no uprobe for {}", other.name())),
    }
}

/// Where GnuTLS handles the server's certificates: its handshake, and the verification a
/// client may run after it (wget does).
const GNUTLS_HANDSHAKE: &[&str] = &[
    "gnutls_handshake",
    "gnutls_certificate_verify_peers",
    "gnutls_certificate_verify_peers2",
    "gnutls_certificate_verify_peers3",
];
/// Where NSS makes each certificate of the server's message a `CERTCertificate` (libnss3).
const NSS_CERT_IMPORT: &[&str] = &["CERT_NewTempCertificate"];

/// Where NSS 3.101 and later copy the server's intermediates out of the message, as DER
/// (libnssutil3): only its leaf still goes through `CERT_NewTempCertificate` (Firefox makes
/// the intermediates certificates later, from copies). `SECITEM_ArenaDupItem(arena, item)`
/// takes its item where `CERT_NewTempCertificate` does (the second argument), so the same
/// program reads it, framing check included.
const NSS_ITEM_DUP: &[&str] = &["SECITEM_ArenaDupItem_Util"];

/// Where GnuTLS turns each certificate's DER into its own form.
const GNUTLS_CRT_IMPORT: &[&str] = &["gnutls_x509_crt_import"];

/// Attach the GnuTLS programs to the libgnutls files in `libs`: the handshake programs (the
/// ones OpenSSL's `SSL_do_handshake` has) and `gnutls_crt_import`.
fn attach_gnutls(ebpf: &mut Ebpf, libs: &[PathBuf]) -> Result<(Vec<String>, Option<u32>), String> {
    attach(ebpf, "ssl_handshake_enter", GNUTLS_HANDSHAKE, libs)?;
    attach(ebpf, "ssl_handshake_exit", GNUTLS_HANDSHAKE, libs)?;
    attach(ebpf, "gnutls_crt_import", GNUTLS_CRT_IMPORT, libs)
}

/// Attach the uprobes for a program's own TLS library to its file at `target` (a path the
/// kernel resolves, such as /proc/self/fd/N).
pub fn attach_to_program(ebpf: &mut Ebpf, target: &Path, tls: &OwnTls) -> Result<(), String> {
    match tls {
        OwnTls::OpenSsl(at) => attach_to_executable(ebpf, target, at),
        OwnTls::Go {
            verify: Some(offset),
            ..
        } => {
            let p = uprobe_mut(ebpf, "go_tls_verify")?;
            if p.fd().is_err() {
                p.load()
                    .map_err(|e| format!("loading go_tls_verify: {e}"))?;
            }
            p.attach([*offset], target, UProbeScope::AllProcesses)
                .map_err(|e| format!("go_tls_verify: {e}"))?;
            Ok(())
        }
        OwnTls::Go { verify: None, .. } | OwnTls::BoringSsl | OwnTls::Rustls => {
            Err("no function to attach to".into())
        }
    }
}

/// Attach the OpenSSL programs to an executable that carries OpenSSL and exports its symbols
/// (Node), at `target` (a path the kernel resolves, such as /proc/self/fd/N) and the offsets
/// resolved from its symbols. The client-side programs are loaded if no system library loaded
/// them; the request-head programs are attached only where they already run.
fn attach_to_executable(ebpf: &mut Ebpf, target: &Path, at: &OpenSslEntries) -> Result<(), String> {
    let handshake: Vec<u64> = [at.ssl_do_handshake, at.ssl_connect]
        .into_iter()
        .flatten()
        .collect();
    let client: [(&str, &[u64]); 3] = [
        ("ssl_handshake_enter", &handshake),
        ("ssl_handshake_exit", &handshake),
        ("d2i_x509", &[at.d2i_x509]),
    ];
    for (program, offsets) in client {
        let p = uprobe_mut(ebpf, program)?;
        if p.fd().is_err() {
            p.load().map_err(|e| format!("loading {program}: {e}"))?;
        }
        p.attach(offsets.iter().copied(), target, UProbeScope::AllProcesses)
            .map_err(|e| format!("{program}: {e}"))?;
    }
    let accept: Vec<u64> = [at.ssl_do_handshake, at.ssl_accept]
        .into_iter()
        .flatten()
        .collect();
    let read: Vec<u64> = at.ssl_read.into_iter().collect();
    let server: [(&str, &[u64]); 4] = [
        ("ssl_accept_enter", &accept),
        ("ssl_accept_exit", &accept),
        ("ssl_read_enter", &read),
        ("ssl_read_exit", &read),
    ];
    for (program, offsets) in server {
        let Ok(p) = uprobe_mut(ebpf, program) else {
            continue;
        };
        if p.fd().is_ok()
            && !offsets.is_empty()
            && let Err(e) = p.attach(offsets.iter().copied(), target, UProbeScope::AllProcesses)
        {
            tracing::debug!("{program} on {}: {e}", target.display());
        }
    }
    Ok(())
}

/// Attach the request-head programs: `SSL_read` (entry and return) in libssl, and
/// `tp_btf/sock_recv_length` that names the socket a read came from; then tell the tap to
/// mark inbound TLS sockets. One hook status.
pub fn attach_request_heads(ebpf: &mut Ebpf, extra: &[PathBuf]) -> HookStatus {
    const NAME: &str = "request_heads";
    let (ssl, _) = find_libraries(extra);
    let result = (|| -> Result<(Vec<String>, Option<u32>), String> {
        let btf = aya::Btf::from_sys_fs().map_err(|e| format!("no kernel BTF: {e}"))?;
        let tp: &mut aya::programs::BtfTracePoint = ebpf
            .program_mut("sock_recv")
            .ok_or("sock_recv missing from the object")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        tp.load("sock_recv_length", &btf)
            .map_err(|e| format!("loading sock_recv: {e}"))?;
        tp.attach()
            .map_err(|e| format!("attaching sock_recv: {e}"))?;
        attach(
            ebpf,
            "ssl_accept_enter",
            &["SSL_do_handshake", "SSL_accept"],
            &ssl,
        )?;
        attach(
            ebpf,
            "ssl_accept_exit",
            &["SSL_do_handshake", "SSL_accept"],
            &ssl,
        )?;
        let (libs, id) = attach(ebpf, "ssl_read_enter", &["SSL_read"], &ssl)?;
        attach(ebpf, "ssl_read_exit", &["SSL_read"], &ssl)?;
        let mut on: aya::maps::Array<_, u32> = ebpf
            .map_mut("REQUEST_HEADS_ON")
            .ok_or("REQUEST_HEADS_ON missing from the object")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        on.set(0, &1, 0)
            .map_err(|e| format!("REQUEST_HEADS_ON: {e}"))?;
        Ok((libs, id))
    })();
    match result {
        Ok((libs, program_id)) => HookStatus {
            name: NAME,
            attached: true,
            detail: format!(
                "uprobe/uretprobe SSL_read in {} with tp_btf/sock_recv_length: the request line \
                 and User-Agent of inbound TLS connections' first requests",
                libs.join(", ")
            ),
            program_id,
        },
        Err(why) => HookStatus {
            name: NAME,
            attached: false,
            detail: format!(
                "request heads unavailable ({why}); inbound events are judged without the \
                 User-Agent"
            ),
            program_id: None,
        },
    }
}

/// Attach every OpenSSL uprobe; one hook status for libssl and one for libcrypto.
pub fn attach_all(ebpf: &mut Ebpf, extra: &[PathBuf]) -> Vec<HookStatus> {
    let (ssl, crypto) = find_libraries(extra);
    let mut hooks = Vec::new();
    let enter = attach(
        ebpf,
        "ssl_handshake_enter",
        &["SSL_do_handshake", "SSL_connect"],
        &ssl,
    );
    let exit = enter.as_ref().ok().map(|_| {
        attach(
            ebpf,
            "ssl_handshake_exit",
            &["SSL_do_handshake", "SSL_connect"],
            &ssl,
        )
    });
    hooks.push(match (enter, exit) {
        (Ok((libs, id)), Some(Ok(_))) => HookStatus {
            name: "ssl_handshake",
            attached: true,
            detail: format!(
                "uprobe/uretprobe SSL_do_handshake, SSL_connect in {} ({})",
                libs.join(", "),
                attach_kind()
            ),
            program_id: id,
        },
        (Err(why), _) | (_, Some(Err(why))) => HookStatus {
            name: "ssl_handshake",
            attached: false,
            detail: format!("uprobes on libssl unavailable ({why}; {})", attach_kind()),
            program_id: None,
        },
        (Ok(_), None) => HookStatus {
            name: "ssl_handshake",
            attached: false,
            detail: "uretprobe not attempted".into(),
            program_id: None,
        },
    });
    let gnutls: Vec<PathBuf> = find_tls_libraries()
        .into_iter()
        .filter(|(kind, _)| *kind == SharedTls::GnuTls)
        .map(|(_, path)| path)
        .collect();
    hooks.push(match attach_gnutls(ebpf, &gnutls) {
        Ok((libs, id)) => HookStatus {
            name: "gnutls",
            attached: true,
            detail: format!(
                "uprobe/uretprobe gnutls_handshake and gnutls_certificate_verify_peers*, uprobe \
                 gnutls_x509_crt_import in {}: chains GnuTLS clients import, TLS 1.3 included",
                libs.join(", ")
            ),
            program_id: id,
        },
        Err(why) => HookStatus {
            name: "gnutls",
            attached: false,
            detail: format!(
                "uprobes on GnuTLS unavailable ({why}); its TLS 1.3 chains come from the \
                 active probe only"
            ),
            program_id: None,
        },
    });
    let nss = find_nss_libraries("libnss3.so");
    let nss_items = find_nss_libraries("libnssutil3.so");
    hooks.push(
        match attach(ebpf, "nss_cert_import", NSS_CERT_IMPORT, &nss) {
            Ok((libs, id)) => {
                // Where NSS 3.101+ copies the intermediates: without it, such an NSS's
                // uprobe chains are the leaf alone.
                let items = match attach(ebpf, "nss_cert_import", NSS_ITEM_DUP, &nss_items) {
                    Ok((items, _)) => format!(
                        "; uprobe SECITEM_ArenaDupItem_Util in {}: the intermediates NSS 3.101 \
                         and later copy from the message",
                        items.join(", ")
                    ),
                    Err(why) => format!(
                        "; not on SECITEM_ArenaDupItem_Util ({why}): an NSS 3.101 or later \
                         gives its leaf alone"
                    ),
                };
                HookStatus {
                    name: "nss",
                    attached: true,
                    detail: format!(
                        "uprobe CERT_NewTempCertificate in {}: chains NSS clients (Firefox) \
                         take from the server's message while the socket is mid-handshake, \
                         TLS 1.3 included{items}",
                        libs.join(", ")
                    ),
                    program_id: id,
                }
            }
            Err(why) => HookStatus {
                name: "nss",
                attached: false,
                detail: format!(
                    "uprobe on NSS unavailable ({why}); its TLS 1.3 chains come from the active \
                 probe only"
                ),
                program_id: None,
            },
        },
    );
    hooks.push(match attach(ebpf, "d2i_x509", &["d2i_X509"], &crypto) {
        Ok((libs, id)) => HookStatus {
            name: "d2i_x509",
            attached: true,
            detail: format!(
                "uprobe d2i_X509 in {}: chains OpenSSL clients parse, TLS 1.3 included",
                libs.join(", ")
            ),
            program_id: id,
        },
        Err(why) => HookStatus {
            name: "d2i_x509",
            attached: false,
            detail: format!(
                "uprobe on libcrypto's d2i_X509 unavailable ({why}); TLS 1.3 chains come from \
                 the active probe only"
            ),
            program_id: None,
        },
    });
    hooks
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_system_openssl_once() {
        let (ssl, crypto) = super::find_libraries(&[]);
        // Debian ships libssl3; the tests run there.
        assert!(
            ssl.iter()
                .any(|p| p.to_string_lossy().contains("libssl.so.3")),
            "{ssl:?}"
        );
        assert!(
            crypto
                .iter()
                .any(|p| p.to_string_lossy().contains("libcrypto.so.3"))
        );
        // /lib and /usr/lib are one folder on merged-usr systems: the file counts once.
        let v3 = ssl
            .iter()
            .filter(|p| p.to_string_lossy().ends_with("libssl.so.3"));
        assert_eq!(v3.count(), 1, "{ssl:?}");
    }
}
