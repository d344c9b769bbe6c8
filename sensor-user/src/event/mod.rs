//! The handshake event: what the engine reports for each TLS session, and its JSON form.
//!
//! Field names of the JSON form are a contract (see README): add fields, never rename them.

use std::net::IpAddr;

use serde::{Serialize, Serializer};

use crate::tls::alert;

mod display;

pub use display::one_line;

/// Nanoseconds since the Unix epoch; serialised as RFC 3339.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// RFC 3339 with nanoseconds, in UTC.
    pub fn rfc3339(self) -> String {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

/// How the client ended its part of the handshake.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientOutcome {
    /// Application data flowed both ways, or both sides finished the handshake and closed cleanly.
    Completed,
    /// The client sent a fatal alert.
    Rejected,
    /// The client closed or reset after the server's flight without finishing.
    Aborted,
    #[default]
    Unknown,
}

impl ClientOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Rejected => "rejected",
            Self::Aborted => "aborted",
            Self::Unknown => "unknown",
        }
    }
}

/// Which side of the flow sent something.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Client,
    Server,
}

/// An alert seen in clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alert {
    pub level: u8,
    pub code: u8,
}

impl Serialize for Alert {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Alert", 3)?;
        st.serialize_field("level", alert::level_name(self.level))?;
        st.serialize_field("description", alert::description_name(self.code))?;
        st.serialize_field("code", &self.code)?;
        st.end()
    }
}

impl Alert {
    pub fn is_fatal(&self) -> bool {
        self.level == 2
    }

    pub fn description(&self) -> &'static str {
        alert::description_name(self.code)
    }
}

/// An alert with the side that sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SideAlert {
    pub from: Side,
    #[serde(flatten)]
    pub alert: Alert,
}

/// The local process behind a flow: the client's when the client is on this host, else the
/// local server's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Process {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub uid: Option<u32>,
    pub exe: Option<String>,
    /// cgroup v2 path.
    pub cgroup: Option<String>,
    pub container_id: Option<String>,
    /// `client` or `server`: which end of the flow this process is.
    pub role: Option<&'static str>,
    /// The process's network namespace, when it is not sensord's (for the probe; not
    /// reported).
    #[serde(skip)]
    pub netns: Option<crate::process::Netns>,
}

/// A known interception product.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Interceptor {
    pub id: String,
    pub name: String,
}

/// One value for each side of the flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ByDirection<T> {
    pub client: T,
    pub server: T,
}

/// A stapled OCSP response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OcspStaple {
    /// 1: a single OCSP response.
    pub status_type: u8,
    pub len: usize,
    /// Hex SHA-256 of the OCSPResponse.
    pub sha256: String,
}

/// The local sockets of a flow (client's, server's), when the capture saw them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalSockets {
    pub client: Option<crate::process::LocalSocket>,
    pub server: Option<crate::process::LocalSocket>,
}

/// One TLS session's handshake, as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Handshake {
    /// When the ClientHello was seen.
    pub time: Timestamp,
    /// When the engine reported the handshake.
    pub end_time: Timestamp,
    /// The client side.
    pub src_addr: Option<IpAddr>,
    pub src_port: u16,
    /// The server side.
    pub dst_addr: Option<IpAddr>,
    pub dst_port: u16,
    pub server_name: Option<String>,
    /// Negotiated version ("1.0" to "1.3"), or the highest offered when no ServerHello was seen.
    pub tls_version: Option<&'static str>,
    /// Negotiated application protocol.
    pub alpn: Option<String>,
    /// Application protocols the client offered.
    pub client_alpn: Vec<String>,
    /// Negotiated cipher suite (IANA name).
    pub cipher: Option<String>,
    /// Key exchange: the named group (ServerKeyExchange or TLS 1.3 key_share), or `dheNNNN`.
    pub key_exchange: Option<String>,
    pub ja3: Option<String>,
    /// The string JA3 hashes.
    pub ja3_string: Option<String>,
    pub ja3s: Option<String>,
    pub ja4: Option<String>,
    /// JA4S (FoxIO License 1.1; only with the `ja4plus` feature).
    #[cfg(feature = "ja4plus")]
    pub ja4s: Option<String>,
    /// A stapled OCSP response (CertificateStatus), when the server sent one in clear.
    pub ocsp_staple: Option<OcspStaple>,
    /// The server answered with a HelloRetryRequest first.
    pub hello_retry_request: bool,
    /// The server's certificates, leaf first, when seen.
    pub chain: Vec<std::sync::Arc<crate::x509::CertSummary>>,
    /// Where the chain came from: `passive` (seen on the wire), `probe` or `uprobe`.
    pub chain_source: Option<&'static str>,
    /// The client sent a certificate (mutual TLS).
    pub client_certificate: bool,
    /// The client offered to resume a session (ticket or PSK).
    pub resumption_offered: bool,
    pub client_outcome: ClientOutcome,
    /// The client's fatal alert, if it sent one in clear.
    pub alert: Option<Alert>,
    /// Every alert seen in clear, from either side.
    pub alerts: Vec<SideAlert>,
    /// The target of an HTTP CONNECT that preceded the handshake.
    pub proxy_connect: Option<String>,
    /// Bytes of the server's encrypted TLS 1.3 handshake flight (its application_data
    /// records before the client's first).
    pub server_encrypted_flight_bytes: Option<u64>,
    /// Bytes of the client's first encrypted TLS 1.3 record (its Finished, with its
    /// certificate flight when it authenticates).
    pub client_encrypted_flight_bytes: Option<u64>,
    /// ChangeCipherSpec seen from each side.
    pub change_cipher_spec: ByDirection<bool>,
    /// When each side sent its first application_data record.
    pub first_application_data: ByDirection<Option<Timestamp>>,
    /// Alerts each side sent encrypted (their content cannot be seen).
    pub encrypted_alerts: ByDirection<u32>,
    pub verdict: &'static str,
    pub reasons: Vec<String>,
    /// `info`, `low`, `medium`, `high` or `critical`; absent until a verdict is made.
    pub severity: Option<&'static str>,
    /// One or two plain sentences.
    pub explanation: Option<String>,
    /// The interception product the catalogue names, if any.
    pub interceptor: Option<Interceptor>,
    pub process: Option<Process>,
    /// Socket cookie of the client's socket, when the kernel tap saw it.
    pub socket_cookie: Option<u64>,
    /// Socket cookie of the server's socket, when it is local and the tap saw it.
    pub server_socket_cookie: Option<u64>,
    /// The flow's local sockets as the capture saw them, for process attribution.
    #[serde(skip)]
    pub local_sockets: LocalSockets,
    /// What was wrong with the bytes, if anything.
    pub malformed: Vec<&'static str>,
}
