//! Why a verdict is what it is: one [`Reason`] per finding, written `code` or `code:argument`
//! (`known_interceptor:mitmproxy`, `client_rejected:unknown_ca`, `probe_failed:timeout`) on
//! every output.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::CaptureLoss;
use crate::tls::alert;

named_enum! {
    /// Why the active probe saw no chain.
    pub enum ProbeFailure {
        Dns => "dns",
        Refused => "refused",
        Timeout => "timeout",
        Unreachable => "unreachable",
        Proxy => "proxy",
        BadName => "bad_name",
        Handshake => "handshake",
        Setup => "setup",
        Netns => "netns",
        BadCertificate => "bad_certificate",
    }
}

named_enum! {
    /// Why no probe ran for a handshake that wanted one.
    pub enum ProbeSkip {
        /// Over the global or per-destination rate limit.
        RateLimit => "rate_limit",
        /// The handshake's user (uid) or cgroup had its share of probes this second.
        Quota => "quota",
        /// Too many handshakes wait for probes already.
        Busy => "busy",
        /// sensord stopped while the probe ran.
        Shutdown => "shutdown",
    }
}

/// How a client refused a server's handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// A fatal alert seen in clear, by its description code.
    Alert(u8),
    /// An alert TLS 1.3 encrypted: which one is not visible.
    Encrypted,
}

/// One finding behind a verdict.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The chain is valid in the public Web PKI.
    PublicRoot,
    /// The chain is valid only against this host's own store.
    LocalRoot,
    /// The catalogue knows the issuer as this interception product (its id).
    KnownInterceptor(String),
    /// The issuer is an inspection CA the organisation approved.
    ApprovedInspection,
    /// No key of the chain matches a configured pin.
    PinMismatch,
    HostnameMismatch,
    Expired,
    NotYetValid,
    SelfSigned,
    WeakKey,
    WeakSignature,
    /// The leaf has the traits of a forged certificate (its issuer's key, backdated, a known
    /// identity under a new issuer).
    ForgedLeafTraits,
    /// A publicly trusted leaf without Signed Certificate Timestamps.
    MissingSct,
    UnknownIssuer,
    NoServerAuthEku,
    /// The client refused the handshake.
    ClientRejected(Rejection),
    /// The client completed a handshake with a chain nobody here trusts.
    ClientAcceptedUntrusted,
    /// The destination's issuer is not one seen for it before.
    BaselineChanged,
    /// The server's ServerHello differs from before.
    ServerFingerprintChanged,
    /// The size of the server's encrypted certificate flight differs from before.
    ServerFlightSizeChanged,
    /// TLS 1.3 (or an unfinished handshake) hid the chain.
    CertificateNotVisible,
    ProbeFailed(ProbeFailure),
    ProbeSkipped(ProbeSkip),
    /// The probe's server flight differs in size from the one the client received: the
    /// client was shown something else than the probe.
    ProbeChainDiffers,
    /// The sensor did not see all of the handshake (and says why).
    CaptureIncomplete(CaptureLoss),
    /// The same stream bytes arrived twice with different content: what the client kept and
    /// what the sensor saw may differ.
    StreamConflict,
    /// The chain the client's TLS library parsed differs from the chain on the wire.
    ChainConflict,
    /// An inbound ClientHello is the one this interception product sends itself (its id).
    InterceptorFingerprint(String),
    /// Inbound clients from one address with one fingerprint repeatedly completed the
    /// handshake and sent no request, more often than they made one: the pattern an
    /// interceptor leaves whose own client refused its certificate.
    IdleAfterHandshake,
    /// The clients of a network switched to one fingerprint they had not used before.
    ClientFingerprintChanged,
    /// The client tried QUIC to this name first and got no answer, then came over TCP: what
    /// a network that blocks UDP 443 to inspect TCP does.
    QuicBlocked,
    /// The request's User-Agent names a browser whose TLS handshake this is not (the rule's
    /// id in `data/user-agents.toml`).
    UaFingerprintMismatch(String),
    /// A reason this version does not know (from a newer daemon or journal), kept verbatim.
    Other(String),
}

impl Reason {
    /// The code before the colon.
    pub fn code(&self) -> &str {
        match self {
            Self::PublicRoot => "public_root",
            Self::LocalRoot => "local_root",
            Self::KnownInterceptor(_) => "known_interceptor",
            Self::ApprovedInspection => "approved_inspection",
            Self::PinMismatch => "pin_mismatch",
            Self::HostnameMismatch => "hostname_mismatch",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::SelfSigned => "self_signed",
            Self::WeakKey => "weak_key",
            Self::WeakSignature => "weak_signature",
            Self::ForgedLeafTraits => "forged_leaf_traits",
            Self::MissingSct => "missing_sct",
            Self::UnknownIssuer => "unknown_issuer",
            Self::NoServerAuthEku => "no_server_auth_eku",
            Self::ClientRejected(_) => "client_rejected",
            Self::ClientAcceptedUntrusted => "client_accepted_untrusted",
            Self::BaselineChanged => "baseline_changed",
            Self::ServerFingerprintChanged => "server_fingerprint_changed",
            Self::ServerFlightSizeChanged => "server_flight_size_changed",
            Self::CertificateNotVisible => "certificate_not_visible",
            Self::ProbeFailed(_) => "probe_failed",
            Self::ProbeSkipped(_) => "probe_skipped",
            Self::ProbeChainDiffers => "probe_chain_differs",
            Self::CaptureIncomplete(_) => "capture_incomplete",
            Self::StreamConflict => "stream_conflict",
            Self::ChainConflict => "chain_conflict",
            Self::InterceptorFingerprint(_) => "interceptor_fingerprint",
            Self::IdleAfterHandshake => "idle_after_handshake",
            Self::ClientFingerprintChanged => "client_fingerprint_changed",
            Self::QuicBlocked => "quic_blocked",
            Self::UaFingerprintMismatch(_) => "ua_fingerprint_mismatch",
            Self::Other(text) => text.split(':').next().unwrap_or(text),
        }
    }

    /// Every reason without an argument, for documentation and tests.
    pub const PLAIN: &'static [Reason] = &[
        Self::PublicRoot,
        Self::LocalRoot,
        Self::ApprovedInspection,
        Self::PinMismatch,
        Self::HostnameMismatch,
        Self::Expired,
        Self::NotYetValid,
        Self::SelfSigned,
        Self::WeakKey,
        Self::WeakSignature,
        Self::ForgedLeafTraits,
        Self::MissingSct,
        Self::UnknownIssuer,
        Self::NoServerAuthEku,
        Self::ClientAcceptedUntrusted,
        Self::BaselineChanged,
        Self::ServerFingerprintChanged,
        Self::ServerFlightSizeChanged,
        Self::CertificateNotVisible,
        Self::ProbeChainDiffers,
        Self::StreamConflict,
        Self::ChainConflict,
        Self::IdleAfterHandshake,
        Self::ClientFingerprintChanged,
        Self::QuicBlocked,
    ];
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KnownInterceptor(id) => write!(f, "known_interceptor:{id}"),
            Self::InterceptorFingerprint(id) => write!(f, "interceptor_fingerprint:{id}"),
            Self::UaFingerprintMismatch(id) => write!(f, "ua_fingerprint_mismatch:{id}"),
            Self::ClientRejected(Rejection::Alert(code)) => {
                write!(f, "client_rejected:{}", alert::description_name(*code))
            }
            Self::ClientRejected(Rejection::Encrypted) => f.write_str("client_rejected:encrypted"),
            Self::ProbeFailed(cause) => write!(f, "probe_failed:{cause}"),
            Self::ProbeSkipped(why) => write!(f, "probe_skipped:{why}"),
            Self::CaptureIncomplete(cause) => write!(f, "capture_incomplete:{cause}"),
            Self::Other(text) => f.write_str(text),
            plain => f.write_str(plain.code()),
        }
    }
}

impl FromStr for Reason {
    type Err = std::convert::Infallible;

    /// Never fails: a reason this version does not know becomes [`Reason::Other`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let other = || Self::Other(s.to_owned());
        let parsed = match s.split_once(':') {
            Some(("known_interceptor", id)) if !id.is_empty() => {
                Self::KnownInterceptor(id.to_owned())
            }
            Some(("interceptor_fingerprint", id)) if !id.is_empty() => {
                Self::InterceptorFingerprint(id.to_owned())
            }
            Some(("ua_fingerprint_mismatch", id)) if !id.is_empty() => {
                Self::UaFingerprintMismatch(id.to_owned())
            }
            Some(("client_rejected", "encrypted")) => Self::ClientRejected(Rejection::Encrypted),
            Some(("client_rejected", name)) => match alert::description_code(name) {
                Some(code) => Self::ClientRejected(Rejection::Alert(code)),
                // A code without an RFC name, written as `unknown`: still a rejection.
                None if name == alert::description_name(alert::UNNAMED) => {
                    Self::ClientRejected(Rejection::Alert(alert::UNNAMED))
                }
                None => other(),
            },
            Some(("probe_failed", cause)) => {
                cause.parse().map_or_else(|_| other(), Self::ProbeFailed)
            }
            Some(("probe_skipped", why)) => {
                why.parse().map_or_else(|_| other(), Self::ProbeSkipped)
            }
            Some(("capture_incomplete", cause)) => cause
                .parse()
                .map_or_else(|_| other(), Self::CaptureIncomplete),
            Some(_) => other(),
            None => Self::PLAIN
                .iter()
                .find(|r| r.code() == s)
                .cloned()
                .unwrap_or_else(other),
        };
        Ok(parsed)
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let Ok(reason) = text.parse();
        Ok(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_through_its_text() {
        let mut all: Vec<Reason> = Reason::PLAIN.to_vec();
        all.push(Reason::KnownInterceptor("mitmproxy".into()));
        all.push(Reason::InterceptorFingerprint("squid".into()));
        all.push(Reason::UaFingerprintMismatch("chromium".into()));
        all.push(Reason::ClientRejected(Rejection::Alert(48)));
        all.push(Reason::ClientRejected(Rejection::Encrypted));
        all.extend(ProbeFailure::ALL.iter().map(|&f| Reason::ProbeFailed(f)));
        all.extend(ProbeSkip::ALL.iter().map(|&s| Reason::ProbeSkipped(s)));
        all.extend(
            CaptureLoss::ALL
                .iter()
                .map(|&c| Reason::CaptureIncomplete(c)),
        );
        for r in all {
            let text = r.to_string();
            assert_eq!(text.parse::<Reason>(), Ok(r.clone()), "{text}");
            assert!(!matches!(r, Reason::Other(_)));
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), r);
        }
    }

    #[test]
    fn the_texts_events_have_always_carried() {
        assert_eq!(
            Reason::ClientRejected(Rejection::Alert(48)).to_string(),
            "client_rejected:unknown_ca"
        );
        assert_eq!(
            Reason::ProbeFailed(ProbeFailure::BadName).to_string(),
            "probe_failed:bad_name"
        );
        assert_eq!(
            Reason::ProbeSkipped(ProbeSkip::RateLimit).to_string(),
            "probe_skipped:rate_limit"
        );
        assert_eq!(
            "some_future_reason:x".parse::<Reason>(),
            Ok(Reason::Other("some_future_reason:x".into()))
        );
        assert_eq!(Reason::Other("future:x".into()).code(), "future");
        // An alert code without a name stays a rejection when read back.
        let unnamed = Reason::ClientRejected(Rejection::Alert(7));
        assert_eq!(unnamed.to_string(), "client_rejected:unknown");
        let back: Reason = "client_rejected:unknown".parse().unwrap();
        assert!(matches!(back, Reason::ClientRejected(_)));
        assert_eq!(back.to_string(), "client_rejected:unknown");
    }

    /// A reason without an argument must be in [`Reason::PLAIN`], or reading it back makes it
    /// `Other`. `is_plain` stops compiling when a variant is added, until it is sorted in.
    #[test]
    fn every_plain_reason_is_listed() {
        fn is_plain(r: &Reason) -> bool {
            use Reason::*;
            match r {
                PublicRoot
                | LocalRoot
                | ApprovedInspection
                | PinMismatch
                | HostnameMismatch
                | Expired
                | NotYetValid
                | SelfSigned
                | WeakKey
                | WeakSignature
                | ForgedLeafTraits
                | MissingSct
                | UnknownIssuer
                | NoServerAuthEku
                | ClientAcceptedUntrusted
                | BaselineChanged
                | ServerFingerprintChanged
                | ServerFlightSizeChanged
                | CertificateNotVisible
                | ProbeChainDiffers
                | StreamConflict
                | ChainConflict
                | IdleAfterHandshake
                | ClientFingerprintChanged
                | QuicBlocked => true,
                KnownInterceptor(_)
                | InterceptorFingerprint(_)
                | UaFingerprintMismatch(_)
                | ClientRejected(_)
                | ProbeFailed(_)
                | ProbeSkipped(_)
                | CaptureIncomplete(_)
                | Other(_) => false,
            }
        }
        assert!(Reason::PLAIN.iter().all(is_plain));
        assert_eq!(
            Reason::PLAIN.len(),
            25,
            "is_plain names 25 plain reasons: each belongs in PLAIN"
        );
    }
}
