//! Certificates an OpenSSL client parses during a handshake, TLS 1.3 included.
//!
//! `d2i_X509` (libcrypto, a public API stable across OpenSSL 1.1 and 3.x) turns DER into an
//! X509; a client calls it for each certificate the server sent. Outside handshakes it also
//! parses trust stores, so a call counts only while the thread is in one:
//! - inside `SSL_do_handshake` or `SSL_connect` (uprobe and uretprobe on libssl), or
//! - while the TLS socket the thread last sent a ClientHello on is still mid-handshake (the
//!   tap keeps that map); clients such as `openssl s_client` drive the handshake from
//!   `SSL_read`/`SSL_write` instead.
//!
//! Only DER that sits in a TLS Certificate message counts (its 24-bit length precedes it),
//! not certificates a trust store lookup loads while the handshake verifies.
//!
//! GnuTLS imports each certificate the server sent with `gnutls_x509_crt_import` (see
//! [`gnutls_crt_import`]) inside `gnutls_handshake` or `gnutls_certificate_verify_peers*`,
//! which get the handshake programs (entry and return, like `SSL_do_handshake`).
//!
//! NSS (Firefox, Thunderbird, NSS tools) makes each certificate of the server's Certificate
//! message a `CERTCertificate` with `CERT_NewTempCertificate` in libnss3 (see
//! [`nss_cert_import`]), straight from the message: framed, like OpenSSL's. NSS 3.101 and
//! later do that for the leaf only and copy the intermediates' DER out of the message with
//! `SECITEM_ArenaDupItem_Util` (libnssutil3), which takes its item in the same argument: the
//! same program is attached there too.
//!
//! Go's `crypto/tls` gets an uprobe of its own on `verifyServerCertificate` (see
//! [`go_tls_verify`]), which hands the same records on.
//!
//! The DER is read from user memory in chunks of at most `CERT_CHUNK_CAP` bytes straight into
//! ring buffer records, with the socket cookie that ties it to the flow.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns, bpf_probe_read_user, generated},
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use sensor_common::{
    CERT_CHUNK_CAP, CertChunkHeader, MAX_CERT_CHUNKS, MAX_CERT_LEN, counter, kind,
};

use crate::tap::{EVENTS, HANDSHAKING, PROCESS_SOCKET, THREAD_SOCKET, bump, wakeup_flags};

/// Threads inside `SSL_do_handshake`/`SSL_connect`, with the nesting depth.
#[map]
static IN_SSL_HANDSHAKE: LruHashMap<u64, u32> = LruHashMap::with_max_entries(16_384, 0);

#[repr(C)]
struct CertChunk {
    header: CertChunkHeader,
    data: [u8; CERT_CHUNK_CAP],
}

uprobe_programs!(
    uprobe,
    ProbeContext,
    ssl_handshake_enter,
    ssl_handshake_enter_multi,
    handshake_enter
);
uprobe_programs!(
    uretprobe,
    RetProbeContext,
    ssl_handshake_exit,
    ssl_handshake_exit_multi,
    handshake_exit
);
uprobe_programs!(
    uprobe,
    ProbeContext,
    d2i_x509,
    d2i_x509_multi,
    d2i_x509_body
);
uprobe_programs!(
    uprobe,
    ProbeContext,
    gnutls_crt_import,
    gnutls_crt_import_multi,
    gnutls_crt_import_body
);
uprobe_programs!(
    uprobe,
    ProbeContext,
    nss_cert_import,
    nss_cert_import_multi,
    nss_cert_import_body
);
uprobe_programs!(
    uprobe,
    ProbeContext,
    go_tls_verify,
    go_tls_verify_multi,
    go_tls_verify_body
);

#[inline(always)]
fn handshake_enter(_ctx: ProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: plain read of a map value.
    let depth = unsafe { IN_SSL_HANDSHAKE.get(&id) }.copied().unwrap_or(0);
    let _ = IN_SSL_HANDSHAKE.insert(&id, &depth.saturating_add(1), 0);
    0
}

#[inline(always)]
fn handshake_exit(_ctx: RetProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: plain read of a map value.
    match unsafe { IN_SSL_HANDSHAKE.get(&id) }.copied() {
        Some(d) if d > 1 => {
            let _ = IN_SSL_HANDSHAKE.insert(&id, &(d - 1), 0);
        }
        Some(_) => {
            let _ = IN_SSL_HANDSHAKE.remove(&id);
        }
        None => {}
    }
    0
}

/// `X509 *d2i_X509(X509 **a, const unsigned char **pp, long length)`.
#[inline(always)]
fn d2i_x509_body(ctx: ProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: plain reads of map values. Each lookup becomes a plain flag through a volatile
    // read: LLVM would otherwise OR the two map pointers together, which the verifier refuses.
    let in_ssl: u8 = unsafe { IN_SSL_HANDSHAKE.get(&id) }.map_or(0, |_| 1);
    let in_ssl = unsafe { core::ptr::read_volatile(&in_ssl) };
    let cookie = unsafe { THREAD_SOCKET.get(&id) }.copied().unwrap_or(0);
    let mut socket_in_handshake: u8 = 0;
    if cookie != 0 {
        socket_in_handshake = unsafe { HANDSHAKING.get(&cookie) }.map_or(0, |_| 1);
    }
    let socket_in_handshake = unsafe { core::ptr::read_volatile(&socket_in_handshake) };
    if in_ssl == 0 && socket_in_handshake == 0 {
        return 0;
    }
    let (Some(pp), Some(length)) = (ctx.arg::<*const *const u8>(1), ctx.arg::<i64>(2)) else {
        return 0;
    };
    if pp.is_null() || length <= 0 {
        return 0;
    }
    // SAFETY: a read of user memory through the helper, which fails cleanly on a bad address.
    let Ok(der) = (unsafe { bpf_probe_read_user(pp) }) else {
        bump(counter::UPROBE_READ_ERRORS, 1);
        return 0;
    };
    emit_certificate(der, length, id, cookie, true);
    0
}

/// GnuTLS's `gnutls_datum_t`.
#[repr(C)]
#[derive(Clone, Copy)]
struct GnutlsDatum {
    data: *const u8,
    size: u32,
}

/// `GNUTLS_X509_FMT_DER`.
const GNUTLS_X509_FMT_DER: u32 = 0;

/// `int gnutls_x509_crt_import(gnutls_x509_crt_t cert, const gnutls_datum_t *data,
/// gnutls_x509_crt_fmt_t format)`, for DER, while the thread is in `gnutls_handshake` (TLS
/// 1.2: each certificate of the server's Certificate message, in order; TLS 1.3: the leaf)
/// or in `gnutls_certificate_verify_peers*` (each certificate the server sent, in order, TLS
/// 1.3 included, whether the client verifies during the handshake, as gnutls-cli does, or
/// after it, as wget does). Trust stores are read outside those. GnuTLS copies certificates
/// out of the message first, so the DER is not framed; the engine drops a certificate a
/// socket already has (each is imported more than once).
#[inline(always)]
fn gnutls_crt_import_body(ctx: ProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: plain read of a map value, made a plain flag (see d2i_x509).
    let in_handshake: u8 = unsafe { IN_SSL_HANDSHAKE.get(&id) }.map_or(0, |_| 1);
    let in_handshake = unsafe { core::ptr::read_volatile(&in_handshake) };
    let cookie = handshaking_socket(id);
    if in_handshake == 0 && cookie == 0 {
        return 0;
    }
    let cookie = if cookie != 0 {
        cookie
    } else {
        // SAFETY: plain read of a map value.
        unsafe { THREAD_SOCKET.get(&id) }.copied().unwrap_or(0)
    };
    // No client socket (a server importing its client's certificate): nothing to tie it to.
    if cookie == 0 {
        return 0;
    }
    let (Some(datum), Some(format)) = (ctx.arg::<*const GnutlsDatum>(1), ctx.arg::<u32>(2)) else {
        return 0;
    };
    if datum.is_null() || format != GNUTLS_X509_FMT_DER {
        return 0;
    }
    // SAFETY: a read of user memory through the helper, which fails cleanly on a bad address.
    let Ok(d) = (unsafe { bpf_probe_read_user(datum) }) else {
        bump(counter::UPROBE_READ_ERRORS, 1);
        return 0;
    };
    emit_certificate(d.data, i64::from(d.size), id, cookie, false);
    0
}

/// NSS's `SECItem`: a type, the data and its length.
#[repr(C)]
#[derive(Clone, Copy)]
struct SecItem {
    kind: u32,
    data: *const u8,
    len: u32,
}

/// `CERTCertificate *CERT_NewTempCertificate(CERTCertDBHandle *handle, SECItem *derCert,
/// char *nickname, PRBool isperm, PRBool copyDER)`: NSS's TLS code calls it for each
/// certificate the server sent, TLS 1.2 and 1.3, with the DER where it sits in the message.
/// NSS drives its handshake from reads and writes on the socket (no handshake function to
/// hook), so a call counts while the thread's (or its process's) TLS socket is
/// mid-handshake, and only for framed DER: certificates read from NSS's database are not.
#[inline(always)]
fn nss_cert_import_body(ctx: ProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let cookie = handshaking_socket(id);
    if cookie == 0 {
        return 0;
    }
    let Some(item) = ctx.arg::<*const SecItem>(1) else {
        return 0;
    };
    if item.is_null() {
        return 0;
    }
    // SAFETY: a read of user memory through the helper, which fails cleanly on a bad address.
    let Ok(item) = (unsafe { bpf_probe_read_user(item) }) else {
        bump(counter::UPROBE_READ_ERRORS, 1);
        return 0;
    };
    emit_certificate(item.data, i64::from(item.len), id, cookie, true);
    0
}

/// A Go slice header (`[]byte`): pointer, length, capacity.
#[repr(C)]
#[derive(Clone, Copy)]
struct GoSlice {
    ptr: *const u8,
    len: i64,
    cap: i64,
}

/// Certificates per Go handshake read at most.
const MAX_GO_CERTS: u64 = 8;

/// `func (c *Conn) verifyServerCertificate(certificates [][]byte) error` in Go's
/// `crypto/tls`, called by a client with the certificates the server sent, TLS 1.2 and 1.3,
/// before it judges them. Go's register ABI on x86-64: the receiver in RAX, the slice's
/// pointer and length in RBX and RCX.
///
/// A goroutine moves between threads while it waits for the server's flight, so the thread
/// that parses the certificates may not be the one that sent the ClientHello: when the
/// thread's socket is not mid-handshake, the socket the process last opened is taken. The
/// engine checks that the leaf names the handshake's server, as for OpenSSL.
#[inline(always)]
fn go_tls_verify_body(ctx: ProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let cookie = handshaking_socket(id);
    // SAFETY: the context is the probed thread's saved registers.
    let (certs, count) = unsafe { ((*ctx.regs).rbx as *const GoSlice, (*ctx.regs).rcx) };
    if certs.is_null() {
        return 0;
    }
    for i in 0..MAX_GO_CERTS {
        if i >= count {
            break;
        }
        // SAFETY: a read of user memory through the helper, which fails cleanly.
        let Ok(cert) = (unsafe { bpf_probe_read_user(certs.wrapping_add(i as usize)) }) else {
            bump(counter::UPROBE_READ_ERRORS, 1);
            return 0;
        };
        if cert.ptr.is_null() || cert.len <= 0 || cert.len > cert.cap {
            return 0;
        }
        if !emit_certificate(cert.ptr, cert.len, id, cookie, true) {
            return 0;
        }
    }
    0
}

/// The client socket mid-handshake that a certificate parsed by this thread belongs to: the
/// thread's own, else its process's latest; 0 when neither is mid-handshake.
#[inline(always)]
fn handshaking_socket(id: u64) -> u64 {
    // SAFETY: plain reads of map values, made plain values through volatile reads (see
    // d2i_x509).
    let own = unsafe { THREAD_SOCKET.get(&id) }.copied().unwrap_or(0);
    let own = unsafe { core::ptr::read_volatile(&own) };
    if own != 0 && unsafe { HANDSHAKING.get(&own) }.is_some() {
        return own;
    }
    let tgid = (id >> 32) as u32;
    let latest = unsafe { PROCESS_SOCKET.get(&tgid) }.copied().unwrap_or(0);
    let latest = unsafe { core::ptr::read_volatile(&latest) };
    if latest != 0 && unsafe { HANDSHAKING.get(&latest) }.is_some() {
        return latest;
    }
    0
}

/// Read one certificate's DER at `der` (`length` bytes, user memory) into the ring, tied to
/// `cookie`. With `framed`, only DER that sits in a TLS Certificate message counts: it sits
/// right after its own 24-bit length, which TLS parsers hand on. Certificates a trust store
/// lookup loads (a hashed directory, a CA file) come from PEM-decoded buffers and do not: they
/// are not what the server sent. False when the ring was full or memory unreadable.
#[inline(never)]
fn emit_certificate(der: *const u8, length: i64, id: u64, cookie: u64, framed: bool) -> bool {
    if der.is_null() || length <= 0 || length >= 1 << 24 {
        return true;
    }
    if framed {
        // SAFETY: a read of user memory through the helper, which fails cleanly.
        let Ok(prefix) = (unsafe { bpf_probe_read_user(der.wrapping_sub(3) as *const [u8; 3]) })
        else {
            return true;
        };
        let prefixed = (prefix[0] as i64) << 16 | (prefix[1] as i64) << 8 | prefix[2] as i64;
        if prefixed != length {
            return true;
        }
    }
    let mut total = length as u64;
    if total > MAX_CERT_LEN as u64 {
        total = MAX_CERT_LEN as u64;
        bump(counter::UPROBE_CERTS_TRUNCATED, 1);
    }
    let header = CertChunkHeader {
        kind: kind::CERT,
        offset: 0,
        // SAFETY: a helper available to every program type.
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
        pid_tgid: id,
        cookie,
        total_len: total as u32,
        len: 0,
        der_len: length as u64,
    };
    for i in 0..MAX_CERT_CHUNKS as u32 {
        let off = i * CERT_CHUNK_CAP as u32;
        if off as u64 >= total {
            break;
        }
        if !chunk(&header, der, off, total as u32) {
            return false;
        }
    }
    bump(counter::UPROBE_CERTS, 1);
    true
}

/// One chunk of the certificate into the ring buffer. False when it could not be.
#[inline(always)]
fn chunk(header: &CertChunkHeader, der: *const u8, off: u32, total: u32) -> bool {
    let Some(mut entry) = EVENTS.reserve::<CertChunk>(0) else {
        bump(counter::RINGBUF_DROPS, 1);
        return false;
    };
    let mut n = total - off;
    if n > CERT_CHUNK_CAP as u32 {
        n = CERT_CHUNK_CAP as u32;
    }
    // The verifier must see n in [1, CERT_CHUNK_CAP] at the helper call (see tap::emit).
    // SAFETY: reading a local.
    let n = unsafe { core::ptr::read_volatile(&n) };
    if n == 0 || n > CERT_CHUNK_CAP as u32 {
        entry.discard(0);
        return false;
    }
    let record = entry.as_mut_ptr();
    // SAFETY: the reservation is a CertChunk-sized region owned by this program until submit
    // or discard; `data` holds CERT_CHUNK_CAP >= n bytes; the helper checks the user address.
    let ret = unsafe {
        let mut h = *header;
        h.offset = off;
        h.len = n;
        core::ptr::addr_of_mut!((*record).header).write(h);
        generated::bpf_probe_read_user(
            core::ptr::addr_of_mut!((*record).data) as *mut _,
            n,
            der.add(off as usize) as *const _,
        )
    };
    if ret != 0 {
        entry.discard(0);
        bump(counter::UPROBE_READ_ERRORS, 1);
        return false;
    }
    entry.submit(wakeup_flags());
    true
}
