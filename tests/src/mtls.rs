//! TLS material for sensord's TCP listener.

use crate::pki::{self, Key};

/// TLS material for the TCP listener: a server certificate and a client CA, and a client
/// certificate from that CA and one from another.
pub struct Mtls {
    pub _dir: tempfile::TempDir,
    pub server_ca: pki::Issued,
    pub server: pki::Issued,
    pub client_ca: pki::Issued,
    pub good_client: pki::Issued,
    pub bad_client: pki::Issued,
}

pub fn mtls() -> Mtls {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server_ca = pki::root(d, "API Server CA", Key::P256);
    let server = pki::issue(
        d,
        &server_ca,
        "localhost",
        Key::P256,
        false,
        &["localhost", "127.0.0.1"],
    );
    let client_ca = pki::root(d, "API Clients CA", Key::P256);
    let good_client = pki::issue_client(d, &client_ca, "siem");
    let other_ca = pki::root(d, "Someone Else CA", Key::P256);
    let bad_client = pki::issue_client(d, &other_ca, "intruder");
    Mtls {
        _dir: dir,
        server_ca,
        server,
        client_ca,
        good_client,
        bad_client,
    }
}

impl Mtls {
    /// sensord's `[api]` section for a TCP listener on 127.0.0.1:`port` with this material,
    /// and `more` lines.
    pub fn api_section(&self, port: u16, more: &str) -> String {
        format!(
            "[api]\ntcp_listen = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
             client_ca = \"{}\"\n{more}",
            self.server.cert.display(),
            self.server.key.display(),
            self.client_ca.cert.display()
        )
    }
}
