//! The one-line human form of a handshake event.

use std::fmt::Write as _;

use super::Handshake;

/// One line per handshake, for `sensord --print text` and logs:
/// `TIME VERDICT comm[pid] SRC -> DST sni=NAME TLSx.y CIPHER alpn=P OUTCOME [alert]`.
pub fn one_line(h: &Handshake) -> String {
    let mut s = String::with_capacity(160);
    let _ = write!(s, "{} {}", h.time.rfc3339(), h.verdict.to_uppercase());
    match &h.process {
        Some(p) => {
            let comm = p.comm.as_deref().unwrap_or("?");
            match p.pid {
                Some(pid) => {
                    let _ = write!(s, " {comm}[{pid}]");
                }
                None => {
                    let _ = write!(s, " {comm}");
                }
            }
        }
        None => s.push_str(" -"),
    }
    let addr = |a: Option<std::net::IpAddr>, port: u16| match a {
        Some(std::net::IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        Some(v4) => format!("{v4}:{port}"),
        None => format!("?:{port}"),
    };
    let _ = write!(
        s,
        " {} -> {}",
        addr(h.src_addr, h.src_port),
        addr(h.dst_addr, h.dst_port)
    );
    if let Some(target) = &h.proxy_connect {
        let _ = write!(s, " via CONNECT {target}");
    }
    let _ = write!(s, " sni={}", h.server_name.as_deref().unwrap_or("-"));
    if let Some(v) = h.tls_version {
        let _ = write!(s, " TLS{v}");
    }
    if let Some(c) = &h.cipher {
        let _ = write!(s, " {c}");
    }
    if let Some(a) = &h.alpn {
        let _ = write!(s, " alpn={a}");
    }
    let _ = write!(s, " {}", h.client_outcome.as_str());
    if let Some(a) = h.alert {
        let _ = write!(s, " alert={}({})", a.description(), a.code);
    }
    if let Some(issuer) = h.chain.first().map(|c| &c.issuer) {
        let _ = write!(s, " issuer=\"{issuer}\"");
        if let Some(source @ ("uprobe" | "probe")) = h.chain_source {
            let _ = write!(s, " chain={source}");
        }
    }
    if !h.reasons.is_empty() {
        let _ = write!(s, " reasons={}", h.reasons.join(","));
    }
    if !h.malformed.is_empty() {
        let _ = write!(s, " malformed={}", h.malformed.join(","));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Alert, ClientOutcome, Process, Timestamp};

    #[test]
    fn renders_the_fields_people_look_for() {
        let h = Handshake {
            time: Timestamp(1_700_000_000_000_000_000),
            src_addr: Some("127.0.0.1".parse().unwrap()),
            src_port: 40000,
            dst_addr: Some("::1".parse().unwrap()),
            dst_port: 443,
            server_name: Some("example.com".into()),
            tls_version: Some("1.2"),
            cipher: Some("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()),
            client_outcome: ClientOutcome::Rejected,
            alert: Some(Alert { level: 2, code: 48 }),
            verdict: "unknown",
            process: Some(Process {
                pid: Some(42),
                comm: Some("curl".into()),
                ..Process::default()
            }),
            ..Handshake::default()
        };
        assert_eq!(
            one_line(&h),
            "2023-11-14T22:13:20Z UNKNOWN curl[42] 127.0.0.1:40000 -> [::1]:443 sni=example.com \
             TLS1.2 TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 rejected alert=unknown_ca(48)"
        );
    }
}
