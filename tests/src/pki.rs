//! Certificates made with the openssl command line: roots, intermediates and leaves.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// A key and certificate on disk.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Issued {
    /// The certificate's DER, from its PEM file.
    pub fn der(&self) -> Vec<u8> {
        let out = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&self.cert)
            .output()
            .expect("openssl x509");
        assert!(out.status.success());
        out.stdout
    }

    /// Hex SHA-256 of the certificate's DER.
    pub fn sha256(&self) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(&self.cert)
            .output()
            .expect("openssl x509 -fingerprint");
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .rsplit('=')
            .next()
            .unwrap_or_default()
            .replace(':', "")
            .to_lowercase()
    }
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Key algorithms for `openssl genpkey`.
#[derive(Clone, Copy, Debug)]
pub enum Key {
    Rsa(u32),
    P256,
}

fn genkey(dir: &Path, name: &str, key: Key) -> PathBuf {
    let path = dir.join(format!("{name}.key"));
    let p = path.to_string_lossy().into_owned();
    match key {
        Key::Rsa(bits) => openssl(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                &format!("rsa_keygen_bits:{bits}"),
                "-out",
                &p,
            ],
            dir,
        ),
        Key::P256 => openssl(
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &p,
            ],
            dir,
        ),
    }
    path
}

/// A self-signed CA.
pub fn root(dir: &Path, name: &str, key: Key) -> Issued {
    let k = genkey(dir, name, key);
    let cert = dir.join(format!("{name}.crt"));
    openssl(
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &k.to_string_lossy(),
            "-days",
            "30",
            "-subj",
            &format!("/CN={name}/O=Sensor Test"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            &cert.to_string_lossy(),
        ],
        dir,
    );
    Issued { cert, key: k }
}

/// A server leaf signed with extra `openssl x509` options (such as `-sha1`).
pub fn issue_with(
    dir: &Path,
    issuer: &Issued,
    name: &str,
    key: Key,
    dns: &[&str],
    x509_args: &[&str],
) -> Issued {
    issue_inner(dir, issuer, name, key, false, dns, x509_args)
}

/// A certificate issued by `issuer`: a CA when `ca`, else a server leaf for `dns`.
pub fn issue(dir: &Path, issuer: &Issued, name: &str, key: Key, ca: bool, dns: &[&str]) -> Issued {
    issue_inner(dir, issuer, name, key, ca, dns, &[])
}

fn issue_inner(
    dir: &Path,
    issuer: &Issued,
    name: &str,
    key: Key,
    ca: bool,
    dns: &[&str],
    x509_args: &[&str],
) -> Issued {
    let mut text = if ca {
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n".to_string()
    } else {
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n".to_string()
    };
    if !dns.is_empty() {
        let names: Vec<String> = dns
            .iter()
            .map(|d| {
                if d.parse::<std::net::IpAddr>().is_ok() {
                    format!("IP:{d}")
                } else {
                    format!("DNS:{d}")
                }
            })
            .collect();
        text.push_str(&format!("subjectAltName={}\n", names.join(",")));
    }
    sign(dir, issuer, name, key, &text, x509_args)
}

/// A client certificate (clientAuth) issued by `issuer`.
pub fn issue_client(dir: &Path, issuer: &Issued, name: &str) -> Issued {
    let ext = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n";
    sign(dir, issuer, name, Key::P256, ext, &[])
}

/// A new key for `name`, and a certificate for it with the extensions `ext` (openssl's
/// extension file syntax), signed by `issuer`.
fn sign(
    dir: &Path,
    issuer: &Issued,
    name: &str,
    key: Key,
    ext_text: &str,
    x509_args: &[&str],
) -> Issued {
    let k = genkey(dir, name, key);
    let csr = dir.join(format!("{name}.csr"));
    let cert = dir.join(format!("{name}.crt"));
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(&ext, ext_text).expect("writing the extension file");
    let (k_s, csr_s, ca_s, cakey_s, ext_s, cert_s) = (
        k.to_string_lossy(),
        csr.to_string_lossy(),
        issuer.cert.to_string_lossy(),
        issuer.key.to_string_lossy(),
        ext.to_string_lossy(),
        cert.to_string_lossy(),
    );
    let subj = format!("/CN={name}");
    openssl(
        &["req", "-new", "-key", &k_s, "-subj", &subj, "-out", &csr_s],
        dir,
    );
    let mut args = vec![
        "x509",
        "-req",
        "-in",
        &csr_s,
        "-CA",
        &ca_s,
        "-CAkey",
        &cakey_s,
        "-CAcreateserial",
        "-days",
        "20",
        "-extfile",
        &ext_s,
        "-out",
        &cert_s,
    ];
    args.extend_from_slice(x509_args);
    openssl(&args, dir);
    Issued { cert, key: k }
}

/// Concatenate PEM files (a chain file for a server).
pub fn bundle(dir: &Path, name: &str, parts: &[&Issued]) -> PathBuf {
    let path = dir.join(name);
    let mut text = String::new();
    for p in parts {
        text.push_str(&std::fs::read_to_string(&p.cert).expect("reading a PEM"));
    }
    std::fs::write(&path, text).expect("writing the bundle");
    path
}

/// An origin's certificates as a public CA would issue them: a root, an issuing CA and a leaf
/// for `name` (P-256), and the intermediate as a chain file.
pub struct OriginPki {
    pub root: Issued,
    pub leaf: Issued,
    /// The intermediate, PEM: what the server sends after its leaf.
    pub chain: PathBuf,
}

pub fn origin(dir: &Path, name: &str) -> OriginPki {
    let root = root(dir, &format!("{name} Public Root"), Key::Rsa(2048));
    let inter = issue(
        dir,
        &root,
        &format!("{name} Issuing CA"),
        Key::Rsa(2048),
        true,
        &[],
    );
    let leaf = issue(dir, &inter, name, Key::P256, false, &[name]);
    let chain = bundle(dir, &format!("{name}.chain.pem"), &[&inter]);
    OriginPki { root, leaf, chain }
}

/// An NSS database in `db` (made with certutil from libnss3-tools, no password) that trusts
/// each of `cas` (PEM files) for servers, as a user's own store would: a Firefox profile,
/// Chromium's `~/.pki/nssdb`, an NSS client's `-d`. Returns its `sql:` name.
pub fn nss_db(db: &Path, cas: &[&Path]) -> String {
    std::fs::create_dir_all(db).expect("an NSS database folder");
    let sql = format!("sql:{}", db.display());
    let certutil = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new("certutil")
            .args(["-d", &sql])
            .args(args)
            .output()
            .expect("certutil (cargo xtask setup installs libnss3-tools)");
        assert!(
            out.status.success(),
            "certutil {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    certutil(&["-N".as_ref(), "--empty-password".as_ref()]);
    for (i, ca) in cas.iter().enumerate() {
        let nick = format!("ca{i}");
        certutil(&[
            "-A".as_ref(),
            "-n".as_ref(),
            nick.as_ref(),
            "-t".as_ref(),
            "C,,".as_ref(),
            "-i".as_ref(),
            ca.as_os_str(),
        ]);
    }
    sql
}
