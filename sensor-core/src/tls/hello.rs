//! ClientHello and ServerHello summaries, parsed with tls-parser.

use tls_parser::{
    TlsExtension, TlsMessage, TlsMessageHandshake, parse_tls_client_hello_extensions,
    parse_tls_message_handshake, parse_tls_server_hello_extensions,
};

/// Extension type numbers used here.
pub mod ext {
    pub const SERVER_NAME: u16 = 0;
    pub const SUPPORTED_GROUPS: u16 = 10;
    pub const EC_POINT_FORMATS: u16 = 11;
    pub const SIGNATURE_ALGORITHMS: u16 = 13;
    pub const ALPN: u16 = 16;
    pub const SESSION_TICKET: u16 = 35;
    pub const PRE_SHARED_KEY: u16 = 41;
    pub const SUPPORTED_VERSIONS: u16 = 43;
    pub const KEY_SHARE: u16 = 51;
}

/// The random value that marks a ServerHello as a HelloRetryRequest (RFC 8446, 4.1.3).
const HRR_RANDOM: [u8; 32] = [
    0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
    0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
];

/// Longest server name kept: a DNS name has at most 253 characters (RFC 1035); the protocol's
/// 65,535 lets a client make every event and log line 64 KiB long.
pub const MAX_SERVER_NAME_LEN: usize = 255;

/// ALPN protocols kept from a ClientHello. Browsers offer two or three; the protocol allows
/// 32,767 one-byte ones, each of which would cost a heap allocation here and a string in the
/// event.
pub const MAX_ALPN: usize = 16;

/// GREASE values (RFC 8701) are 0x?a?a with both bytes equal.
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && (v >> 8) == (v & 0xff)
}

/// What a ClientHello offered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// legacy_version of the message.
    pub version: u16,
    pub cipher_suites: Vec<u16>,
    /// Extension types in the order sent, GREASE included.
    pub extensions: Vec<u16>,
    pub server_name: Option<String>,
    pub alpn: Vec<String>,
    /// ALPN values as sent (JA4 looks at raw bytes).
    pub alpn_raw: Vec<Vec<u8>>,
    pub supported_versions: Vec<u16>,
    pub groups: Vec<u16>,
    pub ec_point_formats: Vec<u8>,
    pub signature_algorithms: Vec<u16>,
    pub key_share_groups: Vec<u16>,
    /// A non-empty session ticket was offered (TLS 1.2 resumption).
    pub session_ticket: bool,
    /// A pre-shared key was offered (TLS 1.3 resumption).
    pub psk: bool,
    /// The extensions block did not parse; the lists above may be incomplete.
    pub bad_extensions: bool,
    /// Bytes after the extensions block, inside the message.
    pub trailing_data: bool,
    /// A field was longer than the sensor keeps ([`MAX_SERVER_NAME_LEN`], [`MAX_ALPN`]): the
    /// name was dropped, the list cut.
    pub oversized: bool,
}

impl ClientHello {
    /// Heap bytes this summary holds, for the engine's memory accounting.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.cipher_suites.capacity() * 2
            + self.extensions.capacity() * 2
            + self.server_name.as_ref().map_or(0, String::capacity)
            + self.alpn.capacity() * size_of::<String>()
            + self.alpn.iter().map(String::capacity).sum::<usize>()
            + self.alpn_raw.capacity() * size_of::<Vec<u8>>()
            + self.alpn_raw.iter().map(Vec::capacity).sum::<usize>()
            + self.supported_versions.capacity() * 2
            + self.groups.capacity() * 2
            + self.ec_point_formats.capacity()
            + self.signature_algorithms.capacity() * 2
            + self.key_share_groups.capacity() * 2
    }
}

/// What a ServerHello (or HelloRetryRequest) chose.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerHello {
    /// legacy_version of the message.
    pub version: u16,
    /// The version chosen: supported_versions when present, else legacy_version.
    pub selected_version: u16,
    pub cipher: u16,
    /// Extension types in the order sent.
    pub extensions: Vec<u16>,
    pub alpn: Option<String>,
    pub key_share_group: Option<u16>,
    pub hello_retry_request: bool,
    pub bad_extensions: bool,
}

/// Why a hello did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed {0}")]
pub struct HelloError(&'static str);

/// Walk an extensions block: (type, data) pairs, stopping at the first inconsistency.
fn walk_extensions(mut ext: &[u8]) -> (Vec<(u16, &[u8])>, bool) {
    let mut out = Vec::new();
    while !ext.is_empty() {
        if ext.len() < 4 {
            return (out, false);
        }
        let ty = u16::from_be_bytes([ext[0], ext[1]]);
        let len = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        let Some(data) = ext.get(4..4 + len) else {
            return (out, false);
        };
        out.push((ty, data));
        ext = &ext[4 + len..];
    }
    (out, true)
}

fn utf8(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Parse a complete ClientHello handshake message (with its 4-byte header).
pub fn parse_client_hello(msg: &[u8]) -> Result<ClientHello, HelloError> {
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)))) =
        parse_tls_message_handshake(msg)
    else {
        return Err(HelloError("ClientHello"));
    };
    let consumed = 4
        + 2
        + 32
        + 1
        + ch.session_id.map_or(0, <[u8]>::len)
        + 2
        + 2 * ch.ciphers.len()
        + 1
        + ch.comp.len()
        + ch.ext.map_or(0, |e| 2 + e.len());
    let mut out = ClientHello {
        version: ch.version.0,
        cipher_suites: ch.ciphers.iter().map(|c| c.0).collect(),
        trailing_data: consumed != msg.len(),
        ..ClientHello::default()
    };
    let raw_ext = ch.ext.unwrap_or_default();
    let (walked, complete) = walk_extensions(raw_ext);
    out.extensions = walked.iter().map(|(t, _)| *t).collect();
    out.bad_extensions = !complete;
    for (ty, data) in &walked {
        match *ty {
            ext::KEY_SHARE => out.key_share_groups = client_key_share_groups(data),
            ext::SESSION_TICKET => out.session_ticket = !data.is_empty(),
            ext::PRE_SHARED_KEY => out.psk = true,
            _ => {}
        }
    }
    match parse_tls_client_hello_extensions(raw_ext) {
        Ok((_, exts)) => {
            for e in exts {
                match e {
                    TlsExtension::SNI(names) => match names.first() {
                        Some((_, n)) if n.len() > MAX_SERVER_NAME_LEN => out.oversized = true,
                        first => out.server_name = first.map(|(_, n)| utf8(n)),
                    },
                    TlsExtension::ALPN(protos) => {
                        out.oversized |= protos.len() > MAX_ALPN;
                        out.alpn = protos.iter().take(MAX_ALPN).map(|p| utf8(p)).collect();
                        out.alpn_raw = protos.iter().take(MAX_ALPN).map(|p| p.to_vec()).collect();
                    }
                    TlsExtension::SupportedVersions(v) => {
                        out.supported_versions = v.iter().map(|v| v.0).collect()
                    }
                    TlsExtension::EllipticCurves(g) => out.groups = g.iter().map(|g| g.0).collect(),
                    TlsExtension::EcPointFormats(f) => out.ec_point_formats = f.to_vec(),
                    TlsExtension::SignatureAlgorithms(s) => out.signature_algorithms = s,
                    _ => {}
                }
            }
        }
        Err(_) => out.bad_extensions = true,
    }
    Ok(out)
}

/// Groups of a ClientHello key_share extension: a u16 length, then (group, u16 len, key) entries.
fn client_key_share_groups(data: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    let Some(mut rest) = data.get(2..) else {
        return out;
    };
    while rest.len() >= 4 {
        let group = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        out.push(group);
        rest = rest.get(4 + len..).unwrap_or_default();
    }
    out
}

/// Parse a complete ServerHello or HelloRetryRequest handshake message (with its header).
pub fn parse_server_hello(msg: &[u8]) -> Result<ServerHello, HelloError> {
    let parsed = parse_tls_message_handshake(msg);
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ServerHello(sh)))) = parsed else {
        return Err(HelloError("ServerHello"));
    };
    let mut out = ServerHello {
        version: sh.version.0,
        selected_version: sh.version.0,
        cipher: sh.cipher.0,
        hello_retry_request: sh.random == HRR_RANDOM,
        ..ServerHello::default()
    };
    let raw_ext = sh.ext.unwrap_or_default();
    let (walked, complete) = walk_extensions(raw_ext);
    out.extensions = walked.iter().map(|(t, _)| *t).collect();
    out.bad_extensions = !complete;
    for (ty, data) in &walked {
        match *ty {
            ext::SUPPORTED_VERSIONS if data.len() == 2 => {
                out.selected_version = u16::from_be_bytes([data[0], data[1]]);
            }
            ext::KEY_SHARE if data.len() >= 2 => {
                out.key_share_group = Some(u16::from_be_bytes([data[0], data[1]]));
            }
            _ => {}
        }
    }
    match parse_tls_server_hello_extensions(raw_ext) {
        Ok((_, exts)) => {
            for e in exts {
                if let TlsExtension::ALPN(protos) = e {
                    out.alpn = protos.first().map(|p| utf8(p));
                }
            }
        }
        Err(_) => out.bad_extensions = true,
    }
    Ok(out)
}

/// Name of a key exchange group (RFC 8446 and RFC 7919 names, and the hybrid post-quantum ones).
pub fn group_name(id: u16) -> String {
    match id {
        23 => "secp256r1".into(),
        24 => "secp384r1".into(),
        25 => "secp521r1".into(),
        29 => "x25519".into(),
        30 => "x448".into(),
        256 => "ffdhe2048".into(),
        257 => "ffdhe3072".into(),
        258 => "ffdhe4096".into(),
        259 => "ffdhe6144".into(),
        260 => "ffdhe8192".into(),
        0x11eb => "SecP256r1MLKEM768".into(),
        0x11ec => "X25519MLKEM768".into(),
        0x11ed => "SecP384r1MLKEM1024".into(),
        0x6399 => "X25519Kyber768Draft00".into(),
        _ => format!("0x{id:04x}"),
    }
}

/// The key exchange of a TLS <= 1.2 ServerKeyExchange: the named curve for ECDHE, the prime's
/// size for DHE. `None` when the cipher uses neither or the message does not parse.
pub fn server_key_exchange(cipher: u16, msg: &[u8]) -> Option<String> {
    use tls_parser::TlsCipherKx;
    let body = msg.get(4..)?;
    let suite = tls_parser::TlsCipherSuite::from_id(cipher)?;
    match suite.kx {
        TlsCipherKx::Ecdhe | TlsCipherKx::Aecdh => {
            // ECParameters: curve_type 3 (named_curve), then the group.
            (body.first() == Some(&3) && body.len() >= 3)
                .then(|| group_name(u16::from_be_bytes([body[1], body[2]])))
        }
        TlsCipherKx::Dhe | TlsCipherKx::Dh => {
            let len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
            let p = body.get(2..2 + len)?;
            let lead = p.iter().take_while(|&&b| b == 0).count();
            let bits = p
                .get(lead)
                .map_or(0, |b| (p.len() - lead) * 8 - b.leading_zeros() as usize);
            Some(format!("dhe{bits}"))
        }
        _ => None,
    }
}

/// IANA name of a cipher suite, or its number in hex.
pub fn cipher_name(id: u16) -> String {
    match tls_parser::TlsCipherSuite::from_id(id) {
        Some(suite) => suite.name.to_string(),
        None => format!("0x{id:04X}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as openssl s_client 3.0 sends it for `-servername example.com -alpn h2`,
    /// trimmed to the fields under test but byte-exact in structure.
    fn client_hello() -> Vec<u8> {
        client_hello_with(b"example.com", &[b"h2"])
    }

    /// The same ClientHello with another server name and ALPN list.
    fn client_hello_with(name: &[u8], alpn: &[&[u8]]) -> Vec<u8> {
        let mut sni = Vec::new();
        sni.extend_from_slice(&(name.len() as u16 + 3).to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni.extend_from_slice(name);
        let mut protos = Vec::new();
        for p in alpn {
            protos.push(p.len() as u8);
            protos.extend_from_slice(p);
        }
        let mut alpn_ext = (protos.len() as u16).to_be_bytes().to_vec();
        alpn_ext.extend_from_slice(&protos);
        let mut ext = Vec::new();
        let mut push = |ty: u16, data: &[u8]| {
            ext.extend_from_slice(&ty.to_be_bytes());
            ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext.extend_from_slice(data);
        };
        push(0x0a0a, &[]);
        push(0, &sni);
        push(16, &alpn_ext);
        push(43, &[4, 3, 4, 3, 3]);
        push(10, &[0, 4, 0, 29, 0, 23]);
        push(51, &[0, 6, 0, 29, 0, 2, 0xaa, 0xbb]);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0x11; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 4, 0x13, 0x01, 0xc0, 0x2f]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut msg = vec![1, 0, 0, 0];
        msg[1..4].copy_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        msg
    }

    #[test]
    fn client_hello_fields() {
        let ch = parse_client_hello(&client_hello()).unwrap();
        assert_eq!(ch.server_name.as_deref(), Some("example.com"));
        assert!(!ch.oversized);
        assert_eq!(ch.alpn, vec!["h2"]);
        assert_eq!(ch.supported_versions, vec![0x0304, 0x0303]);
        assert_eq!(ch.cipher_suites, vec![0x1301, 0xc02f]);
        assert_eq!(ch.extensions, vec![0x0a0a, 0, 16, 43, 10, 51]);
        assert_eq!(ch.groups, vec![29, 23]);
        assert_eq!(ch.key_share_groups, vec![29]);
        assert!(!ch.bad_extensions);
        assert!(is_grease(0x0a0a) && is_grease(0xfafa) && !is_grease(0x0a1a));
    }

    #[test]
    fn oversized_names_and_lists_are_cut_and_said() {
        // 255 bytes is the most a name may have; one more and it is not kept.
        let ch = parse_client_hello(&client_hello_with(&[b'a'; 255], &[b"h2"])).unwrap();
        assert_eq!(ch.server_name.as_ref().map(String::len), Some(255));
        assert!(!ch.oversized);
        let ch = parse_client_hello(&client_hello_with(&[b'a'; 256], &[b"h2"])).unwrap();
        assert_eq!(ch.server_name, None);
        assert!(ch.oversized);
        // A name as long as the protocol allows.
        let ch = parse_client_hello(&client_hello_with(&[b'a'; 65_000], &[])).unwrap();
        assert!(ch.oversized && ch.server_name.is_none());

        // 16 ALPN protocols are kept; 32,000 one-byte ones are cut to 16.
        let sixteen = [&b"x"[..]; MAX_ALPN];
        let ch = parse_client_hello(&client_hello_with(b"example.com", &sixteen)).unwrap();
        assert_eq!(ch.alpn.len(), MAX_ALPN);
        assert!(!ch.oversized);
        let many = vec![&b"x"[..]; 32_000];
        let ch = parse_client_hello(&client_hello_with(b"example.com", &many)).unwrap();
        assert_eq!((ch.alpn.len(), ch.alpn_raw.len()), (MAX_ALPN, MAX_ALPN));
        assert!(ch.oversized);
        assert!(ch.heap_bytes() < 4096, "{} heap bytes", ch.heap_bytes());
    }

    #[test]
    fn truncated_hellos_are_errors_not_panics() {
        let msg = client_hello();
        for cut in 0..msg.len() {
            let _ = parse_client_hello(&msg[..cut]);
            let _ = parse_server_hello(&msg[..cut]);
        }
        assert!(parse_client_hello(&msg[..10]).is_err());
    }

    #[test]
    fn key_exchange_from_server_key_exchange() {
        // ECDHE_RSA with x25519: curve_type 3, group 29, then the point.
        let ske = [12, 0, 0, 5, 3, 0, 29, 1, 9];
        assert_eq!(server_key_exchange(0xc02f, &ske).as_deref(), Some("x25519"));
        // DHE_RSA with a 2048-bit prime (leading 0x80).
        let mut dhe = vec![12, 0, 0, 0, 1, 0, 0x80];
        dhe.extend(std::iter::repeat_n(0x11, 255));
        assert_eq!(
            server_key_exchange(0x009e, &dhe).as_deref(),
            Some("dhe2048")
        );
        assert_eq!(server_key_exchange(0x009e, &[12, 0, 0, 1, 1]), None);
        assert_eq!(server_key_exchange(0x002f, &ske), None);
    }

    #[test]
    fn names() {
        assert_eq!(cipher_name(0x1301), "TLS_AES_128_GCM_SHA256");
        assert_eq!(cipher_name(0xfefe), "0xFEFE");
    }
}
