//! The event: one TLS session, typed end to end.
//!
//! An [`Event`] is composed of the parts each stage owns: the [`Handshake`] the engine
//! observed, the local [`Process`] the daemon attributed, and the [`Judgement`] the verdict
//! engine made. A stage that has not run leaves its part `None`. Every value with a fixed set
//! of names is an enum ([`Verdict`], [`Severity`], [`Reason`], [`ChainSource`], [`TlsVersion`],
//! [`Role`], [`ClientOutcome`], [`Malformed`]); JSON, protobuf, ECS and text are produced from
//! these types at the edges, never parsed back into them.
//!
//! The JSON form is a contract (see README and [`contract`]): add fields, never rename them.

pub mod contract;
pub mod grade;
pub mod host;
mod reason;

use std::{net::IpAddr, sync::Arc};

use serde::{Deserialize, Serialize, Serializer};

pub use grade::{Grade, GradeReason, InterceptorGrade};
pub use host::Host;
pub use reason::{ProbeFailure, ProbeSkip, Reason, Rejection};

use crate::{capture::LocalSocket, tls::alert, x509::CertSummary};
pub use crate::{timestamp::Timestamp, tls::record::Malformed};

named_enum! {
    /// Did something other than the real server end this TLS session?
    #[derive(PartialOrd, Ord)]
    pub enum Verdict {
        /// The chain is valid in the public Web PKI for this name.
        Clean => "clean",
        /// A CA only this host trusts issued the chain: someone in the middle re-signs.
        Intercepted => "intercepted",
        /// Nobody here trusts the chain.
        Untrusted => "untrusted",
        /// A publicly valid chain that does not match a configured pin.
        PinMismatch => "pin_mismatch",
        /// No chain to judge.
        Unverified => "unverified",
    }
}

named_enum! {
    /// How much an event matters.
    #[derive(PartialOrd, Ord)]
    pub enum Severity {
        Info => "info",
        Low => "low",
        Medium => "medium",
        High => "high",
        Critical => "critical",
    }
}

impl Severity {
    /// The API's number: 1 (info) to 5 (critical); 0 means none.
    pub fn number(self) -> u8 {
        self as u8 + 1
    }

    /// The severity of an API number, if it names one.
    pub fn from_number(n: u8) -> Option<Self> {
        Self::ALL.get(usize::from(n).checked_sub(1)?).copied()
    }
}

named_enum! {
    /// Where an event's chain came from.
    pub enum ChainSource {
        /// Seen in clear on the wire (TLS 1.2 and older).
        Passive => "passive",
        /// Parsed by the client's own TLS library, read by a uprobe.
        Uprobe => "uprobe",
        /// Shown to sensord's own connection along the client's path.
        Probe => "probe",
    }
}

named_enum! {
    /// A protocol version, as the JSON contract spells it.
    #[derive(PartialOrd, Ord)]
    pub enum TlsVersion {
        Ssl3 => "ssl3",
        Tls10 => "1.0",
        Tls11 => "1.1",
        Tls12 => "1.2",
        Tls13 => "1.3",
    }
}

impl TlsVersion {
    /// The version of a wire value (0x0300 to 0x0304).
    pub fn from_wire(v: u16) -> Option<Self> {
        Some(match v {
            0x0300 => Self::Ssl3,
            0x0301 => Self::Tls10,
            0x0302 => Self::Tls11,
            0x0303 => Self::Tls12,
            0x0304 => Self::Tls13,
            _ => return None,
        })
    }
}

named_enum! {
    /// What carried a handshake.
    #[derive(Default)]
    pub enum Transport {
        #[default]
        Tcp => "tcp",
        /// QUIC over UDP: the handshake is in the Initial packets' CRYPTO frames.
        Quic => "quic",
    }
}

/// What a QUIC connection showed besides its TLS handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuicSummary {
    /// The version the connection went on in: the server's Initial packets' (the client's
    /// when the server's were not seen).
    pub version: crate::quic::QuicVersion,
    /// The version of the client's first Initial; a server may answer in another one
    /// (compatible version negotiation, RFC 9368).
    pub first_version: crate::quic::QuicVersion,
    /// The server answered with a Retry; the client's next Initial used the Retry's
    /// connection ID (and keys).
    pub retry: bool,
    /// The server answered with a Version Negotiation packet.
    pub version_negotiation: bool,
    /// The client sent 0-RTT packets (early data, encrypted with a resumed session's keys).
    pub zero_rtt: bool,
    /// Initial packets that did not decrypt: a receiver drops them too (corrupt, injected,
    /// or protected with keys the sensor does not know).
    pub initial_packets_dropped: u32,
}

named_enum! {
    /// Which end of a flow a local process is.
    pub enum Role {
        Client => "client",
        Server => "server",
    }
}

named_enum! {
    /// How the client ended its part of the handshake.
    #[derive(Default)]
    pub enum ClientOutcome {
        /// Application data flowed both ways, or both sides finished the handshake and closed
        /// cleanly.
        Completed => "completed",
        /// The client sent a fatal alert.
        Rejected => "rejected",
        /// The client closed or reset after the server's flight without finishing.
        Aborted => "aborted",
        #[default]
        Unknown => "unknown",
    }
}

named_enum! {
    /// Why the sensor did not see all of a handshake's bytes: each cause is a reason
    /// `capture_incomplete:<cause>` (`conflict` is the louder `stream_conflict`).
    #[derive(PartialOrd, Ord)]
    pub enum CaptureLoss {
        /// The kernel's per-flow byte budget ran out before the handshake was over.
        Budget => "budget",
        /// Bytes of the stream never arrived (a hole given up on, or a cut segment).
        Gap => "gap",
        /// The kernel could not hand a record over: the ring buffer was full.
        RingDrop => "ring_drop",
        /// A plaintext opening (CONNECT reply, STARTTLS exchange) longer than the sensor reads.
        PrefixTooLong => "prefix_too_long",
        /// More data arrived out of order than the sensor holds.
        OutOfOrder => "out_of_order",
        /// The same stream bytes arrived twice with different content.
        Conflict => "conflict",
        /// The connection was given up on before its handshake was over: the memory for
        /// handshakes in progress (`tap.flow_memory_mb`) or the flow table was full.
        Evicted => "evicted",
    }
}

named_enum! {
    /// Which side of the flow sent something.
    pub enum Side {
        Client => "client",
        Server => "server",
    }
}

named_enum! {
    /// An alert's level.
    pub enum AlertLevel {
        Warning => "warning",
        Fatal => "fatal",
        Unknown => "unknown",
    }
}

impl AlertLevel {
    pub fn from_wire(level: u8) -> Self {
        match level {
            1 => Self::Warning,
            2 => Self::Fatal,
            _ => Self::Unknown,
        }
    }
}

/// An alert seen in clear. Its JSON form names the level and the description and gives the
/// description's code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct Alert {
    pub level: AlertLevel,
    /// The description's wire value (48: unknown_ca).
    pub code: u8,
}

impl Alert {
    /// The alert of a record's two bytes.
    pub fn from_wire(level: u8, code: u8) -> Self {
        Self {
            level: AlertLevel::from_wire(level),
            code,
        }
    }

    pub fn is_fatal(&self) -> bool {
        self.level == AlertLevel::Fatal
    }

    /// The RFC name of the description, such as `unknown_ca`.
    pub fn description(&self) -> &'static str {
        alert::description_name(self.code)
    }
}

impl Serialize for Alert {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Alert", 3)?;
        st.serialize_field("level", &self.level)?;
        st.serialize_field("description", self.description())?;
        st.serialize_field("code", &self.code)?;
        st.end()
    }
}

/// An alert with the side that sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideAlert {
    pub from: Side,
    #[serde(flatten)]
    pub alert: Alert,
}

/// The local process behind a flow: the client's when the client is on this host, else the
/// local server's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub uid: Option<u32>,
    pub exe: Option<String>,
    /// cgroup v2 path.
    pub cgroup: Option<String>,
    pub container_id: Option<String>,
    /// Which end of the flow this process is.
    pub role: Role,
    /// The container it runs in, when its cgroup says so: runtime, name, image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
}

named_enum! {
    /// The container runtime a process runs under, as its cgroup path shows.
    pub enum ContainerRuntime {
        Docker => "docker",
        Podman => "podman",
        Containerd => "containerd",
        CriO => "cri-o",
    }
}

/// The container a process runs in. The id and runtime come from the cgroup path; the name
/// and image from the runtime's own records, when the sensor can read them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Container {
    /// 64 hex digits.
    pub id: String,
    pub runtime: Option<ContainerRuntime>,
    pub name: Option<String>,
    pub image: Option<String>,
    /// The Kubernetes pod's uid, when the cgroup path goes through kubepods (or the runtime's
    /// CRI socket said it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The Kubernetes pod, as the runtime's CRI socket described it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
}

/// A Kubernetes pod: its name, namespace and labels, as the container runtime (CRI) knows
/// them. Text from the runtime, bounded and cleaned of control characters by whoever reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Process {
    /// A process known only by its role so far.
    pub fn new(role: Role) -> Self {
        Self {
            pid: None,
            comm: None,
            uid: None,
            exe: None,
            cgroup: None,
            container_id: None,
            role,
            container: None,
        }
    }
}

/// A known interception product.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interceptor {
    pub id: String,
    pub name: String,
}

/// One value for each side of the flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByDirection<T> {
    pub client: T,
    pub server: T,
}

/// A stapled OCSP response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OcspStaple {
    /// 1: a single OCSP response.
    pub status_type: u8,
    pub len: usize,
    /// Hex SHA-256 of the OCSPResponse.
    pub sha256: String,
}

/// What the client's ClientHello offered, so that the probe can offer the same (kept with the
/// handshake, not reported).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientOffer {
    pub cipher_suites: Vec<u16>,
    /// Extension types in the order sent, GREASE left out.
    pub extensions: Vec<u16>,
    /// GREASE values (RFC 8701) among the suites, extensions, groups or versions: what
    /// Chromium-based browsers and Safari always send.
    pub grease: bool,
    pub groups: Vec<u16>,
    pub versions: Vec<u16>,
    pub signature_algorithms: Vec<u16>,
}

/// The local sockets of a flow (client's, server's), when the capture saw them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalSockets {
    pub client: Option<LocalSocket>,
    pub server: Option<LocalSocket>,
}

/// What the sensor keeps of the first request a local TLS server read on an inbound
/// connection: its request line (without the query) and User-Agent, never another header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHead {
    /// `GET /path HTTP/1.1`.
    pub line: String,
    pub user_agent: Option<String>,
    /// HTTP/2: its headers are HPACK-encoded and not read.
    pub http2: bool,
}

/// One TLS session's handshake, as the engine observed it (and, for the chain, as a uprobe or
/// the probe completed it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
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
    /// Negotiated version, or the highest offered when no ServerHello was seen.
    pub tls_version: Option<TlsVersion>,
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
    pub chain: Vec<Arc<CertSummary>>,
    /// Where the chain came from.
    pub chain_source: Option<ChainSource>,
    /// The client sent a certificate (mutual TLS).
    pub client_certificate: bool,
    /// SHA-256 of the client's certificate, when it was sent in clear (TLS 1.2 and older).
    pub client_certificate_sha256: Option<String>,
    /// The client's certificate (the first of its Certificate message), when it was sent in
    /// clear and parses: who the client said it was.
    pub client_certificate_leaf: Option<Arc<CertSummary>>,
    /// The client offered to resume a session (ticket or PSK).
    pub resumption_offered: bool,
    pub client_outcome: ClientOutcome,
    /// The handshake completed and the client sent no application data before the connection
    /// ended (seen whole): it made no request. A server logs these as timeouts (HTTP 408); an
    /// interceptor whose own client refused its certificate leaves this behind.
    pub idle_after_handshake: bool,
    /// The head of the client's first request, as the local server read it (inbound, when
    /// the configuration turns request heads on).
    pub request: Option<RequestHead>,
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
    /// Socket cookie of the client's socket, when the kernel tap saw it.
    pub socket_cookie: Option<u64>,
    /// Socket cookie of the server's socket, when it is local and the tap saw it.
    pub server_socket_cookie: Option<u64>,
    /// The flow's local sockets as the capture saw them, for process attribution.
    #[serde(skip)]
    pub local_sockets: LocalSockets,
    /// What was wrong with the bytes, if anything.
    pub malformed: Vec<Malformed>,
    /// What the sensor could not see of this handshake, and why.
    pub capture_incomplete: Vec<CaptureLoss>,
    /// When the client's TLS library parsed another chain than the one on the wire (uprobe),
    /// the SHA-256 of the wire's certificates; `chain` is then the client's.
    pub wire_chain_sha256: Vec<String>,
    /// The User-Agent of the HTTP CONNECT request, when the client went through a proxy.
    pub proxy_user_agent: Option<String>,
    /// The server resumed an earlier session, so it sent no certificate: a TLS 1.3
    /// ServerHello with a pre_shared_key, or a TLS 1.2 abbreviated handshake (its
    /// ChangeCipherSpec with no Certificate or ServerKeyExchange before it, all of it seen).
    pub resumed: bool,
    /// What the client offered, for the probe.
    #[serde(skip)]
    pub client_offer: Option<ClientOffer>,
    /// TCP, or QUIC over UDP.
    pub transport: Transport,
    /// What QUIC showed, for a QUIC handshake.
    pub quic: Option<QuicSummary>,
    /// A TCP handshake that followed a QUIC attempt of the same client to the same name which
    /// got no answer.
    pub quic_unanswered: bool,
}

/// What the verdict engine decided about an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: Verdict,
    /// Why, most important first; later stages (the probe) may add to them.
    pub reasons: Vec<Reason>,
    pub severity: Severity,
    /// One or two plain sentences.
    pub explanation: String,
    /// The interception product the catalogue names, if any.
    pub interceptor: Option<Interceptor>,
    /// SHA-256 of certificates the server sent that no validated path used.
    pub extra_certificates: Vec<String>,
    /// How much the interceptor weakened what the client got, when the chain was not the
    /// real server's.
    pub interceptor_grade: Option<InterceptorGrade>,
}

impl Judgement {
    pub fn has(&self, reason: &Reason) -> bool {
        self.reasons.contains(reason)
    }
}

/// One TLS session, as far as the stages that ran have filled it in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub handshake: Handshake,
    /// The local process, once the daemon attributed it (never offline).
    pub process: Option<Process>,
    /// The verdict, once judged.
    pub judgement: Option<Judgement>,
    /// The host it was seen on, once the daemon recorded it (never offline).
    pub host: Option<Arc<Host>>,
}

impl Handshake {
    /// Move every time of the handshake by `ns` nanoseconds: from the sensor's steady clock to
    /// the wall clock as it reads now (see sensord's `clock`).
    pub fn shift_times(&mut self, ns: i64) {
        self.time = self.time.shifted(ns);
        self.end_time = self.end_time.shifted(ns);
        for t in [
            &mut self.first_application_data.client,
            &mut self.first_application_data.server,
        ] {
            *t = t.map(|t| t.shifted(ns));
        }
    }
}

impl Event {
    /// An event the engine just reported.
    pub fn observed(handshake: Handshake) -> Self {
        Self {
            handshake,
            process: None,
            judgement: None,
            host: None,
        }
    }

    pub fn verdict(&self) -> Option<Verdict> {
        self.judgement.as_ref().map(|j| j.verdict)
    }

    pub fn severity(&self) -> Option<Severity> {
        self.judgement.as_ref().map(|j| j.severity)
    }

    /// The reasons, empty before judgement.
    pub fn reasons(&self) -> &[Reason] {
        self.judgement.as_ref().map_or(&[], |j| &j.reasons)
    }

    /// The leaf's issuer, when the chain is known.
    pub fn issuer(&self) -> Option<&str> {
        self.handshake.chain.first().map(|c| c.issuer.as_str())
    }
}

impl From<Handshake> for Event {
    fn from(handshake: Handshake) -> Self {
        Self::observed(handshake)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_and_numbers() {
        assert_eq!(TlsVersion::from_wire(0x0304), Some(TlsVersion::Tls13));
        assert_eq!(
            TlsVersion::from_wire(0x0301).map(|v| v.as_str()),
            Some("1.0")
        );
        assert_eq!(TlsVersion::from_wire(0x0305), None);
        assert_eq!(Severity::Info.number(), 1);
        assert_eq!(Severity::from_number(5), Some(Severity::Critical));
        assert_eq!(Severity::from_number(0), None);
        assert_eq!(Severity::from_number(6), None);
        assert_eq!(AlertLevel::from_wire(2), AlertLevel::Fatal);
        assert!(Alert::from_wire(2, 48).is_fatal());
        assert_eq!(Alert::from_wire(1, 0).description(), "close_notify");
    }
}
