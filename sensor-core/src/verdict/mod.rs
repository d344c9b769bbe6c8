//! The verdict engine: did something other than the real server end this TLS session, and why
//! does the sensor think so. Pure: the chain, the handshake's facts and a [`TrustContext`] in,
//! a [`Verdict`] out; the handshake's time is its own clock.
//!
//! Path building and signatures are rustls-webpki's, against each store. The sensor's own
//! checks add what webpki does not say: which store trusts the chain, weak keys and signatures,
//! a self-signed leaf, traits of a forged leaf, missing SCTs, pins, approved inspection CAs, the
//! catalogue of known interception products, and the baseline.
//!
//! Chain-level results are cached by (chain, name, pin, trust generation) while the handshake's
//! time lies inside the chain's validity, so a repeated handshake costs a lookup.

pub mod baseline;
pub mod grade;
pub mod inbound;
pub mod user_agents;

use std::{net::IpAddr, sync::Arc, time::Duration};

use hashlink::LruCache;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Serialize;
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{
    event::{
        Alert, CaptureLoss, ChainSource, ClientOutcome, Event, Grade, Interceptor, Judgement,
        Reason, Rejection, Role, Severity, TlsVersion, Verdict,
    },
    trust::{Store, TrustContext},
    x509::{self, CertSummary},
};

/// The facts of one handshake the verdict looks at.
#[derive(Clone, Debug, Default)]
pub struct Facts<'a> {
    pub chain: &'a [Arc<CertSummary>],
    pub server_name: Option<&'a str>,
    pub dst_addr: Option<IpAddr>,
    /// Nanoseconds since the Unix epoch: the handshake's time.
    pub time_ns: u64,
    pub client_outcome: ClientOutcome,
    pub client_alert: Option<Alert>,
    pub exe: Option<&'a str>,
    pub comm: Option<&'a str>,
    pub baseline: baseline::Signal,
    /// The negotiated (or highest offered) version.
    pub tls_version: Option<TlsVersion>,
    /// What the sensor could not see of the handshake.
    pub capture_incomplete: &'a [CaptureLoss],
    /// The chain is the client's (uprobe), and the wire carried another.
    pub chain_conflict: bool,
    /// Where `chain` came from. A probe's chain stands in for one the sensor did not see: a
    /// capture loss then still leaves what the client was shown unknown.
    pub chain_source: Option<ChainSource>,
    /// TLS 1.2, seen whole: the client finished its handshake, then sent an encrypted alert
    /// and never any application data. How NSS (Firefox) refuses a certificate in TLS 1.2;
    /// also what a client that only checks a handshake does, so it is a refusal only of a
    /// chain that is not clean.
    pub closed_before_request: bool,
}

/// Why a store did not validate a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PathFailure {
    UnknownIssuer,
    Expired,
    NotYetValid,
    NoServerAuthEku,
    Signature,
    Other(String),
}

/// What does not change from one handshake of the same chain to the next.
#[derive(Clone, Debug)]
struct Assessment {
    public: Result<(), PathFailure>,
    host: Result<(), PathFailure>,
    /// The anchor the host store validated with: (subject, SPKI pin).
    host_anchor: Option<(String, String)>,
    /// SHA-256 of the certificates sent that no validated path used (appended, or left over).
    extra: Vec<String>,
    name_ok: bool,
    expired: bool,
    not_yet_valid: bool,
    weak_key: bool,
    weak_signature: bool,
    self_signed: bool,
    key_reuse: bool,
    backdated: bool,
    missing_sct: bool,
    product: Option<(String, String)>,
    approved: bool,
    /// Pin: (matched, report only, where it is written).
    pin: Option<(bool, bool, String)>,
    /// Who issued the leaf, for people: CN, else the whole name.
    issuer: String,
    /// The chain's validity window, inside which this assessment holds.
    window: (u64, u64),
}

/// Counters of the engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerdictStats {
    pub verdicts: u64,
    pub cache_hits: u64,
}

/// Decides verdicts against one trust context, with a cache and the baseline.
pub struct VerdictEngine {
    trust: Arc<TrustContext>,
    cache: LruCache<String, Arc<Assessment>>,
    pub baseline: baseline::Baseline,
    /// Idle handshakes of inbound clients, for the pattern.
    pub idle: inbound::IdleCounter,
    /// The fingerprints inbound client networks used, per local port.
    pub populations: inbound::Populations,
    stats: VerdictStats,
}

const DAY_NS: u64 = 86_400 * 1_000_000_000;
const OID_SCT_LIST: &str = "1.3.6.1.4.1.11129.2.4.2";

impl VerdictEngine {
    pub fn new(trust: Arc<TrustContext>) -> Self {
        Self {
            trust,
            cache: LruCache::new(4096),
            baseline: baseline::Baseline::new(65_536),
            idle: inbound::IdleCounter::new(inbound::IdleRule::default(), 16_384),
            populations: inbound::Populations::new(16_384),
            stats: VerdictStats::default(),
        }
    }

    pub fn trust(&self) -> &Arc<TrustContext> {
        &self.trust
    }

    /// Use a new trust context (a reload); cached results of the old one are dropped. The
    /// context in force handed back again (a reload that changed no trust input: see
    /// [`TrustContext::same_inputs`]) keeps them: reloading must not make every chain cost a
    /// full validation again.
    pub fn set_trust(&mut self, trust: Arc<TrustContext>) {
        if Arc::ptr_eq(&self.trust, &trust) {
            return;
        }
        self.trust = trust;
        self.cache.clear();
    }

    pub fn stats(&self) -> VerdictStats {
        self.stats
    }

    /// Judge a handshake's facts.
    pub fn judge(&mut self, f: &Facts<'_>) -> Judgement {
        self.stats.verdicts += 1;
        if f.chain.is_empty() {
            return unverified(f);
        }
        let pin_index = self.trust.pins.find(f.server_name, f.exe, f.comm);
        let mut key = String::with_capacity(80 * f.chain.len() + 64);
        for c in f.chain {
            key.push_str(&c.sha256);
        }
        key.push('|');
        key.push_str(f.server_name.unwrap_or(""));
        if f.server_name.is_none()
            && let Some(a) = f.dst_addr
        {
            key.push_str(&a.to_string());
        }
        key.push_str(&format!("|{pin_index:?}|{}", self.trust.generation));
        let assessment = match self.cache.get(&key) {
            Some(a) if a.window.0 <= f.time_ns && f.time_ns <= a.window.1 => {
                self.stats.cache_hits += 1;
                a.clone()
            }
            _ => {
                let a = Arc::new(assess(&self.trust, f, pin_index));
                self.cache.insert(key, a.clone());
                a
            }
        };
        decide(&self.trust, &assessment, f)
    }

    /// Judge an event, updating the baseline with what it showed. An inbound one (the local
    /// process is the server) is judged on its client's behaviour ([`inbound`]).
    pub fn apply(&mut self, event: &mut Event) {
        if event
            .process
            .as_ref()
            .is_some_and(|p| p.role == Role::Server)
        {
            // The server's own chain, when it was seen: does it validate publicly?
            let hs = &event.handshake;
            let own_chain_invalid = (!hs.chain.is_empty()).then(|| {
                let facts = Facts {
                    chain: &hs.chain,
                    server_name: hs.server_name.as_deref(),
                    dst_addr: hs.dst_addr,
                    time_ns: hs.time.0,
                    tls_version: hs.tls_version,
                    ..Facts::default()
                };
                self.judge(&facts).verdict != Verdict::Clean
            });
            if own_chain_invalid.is_none() {
                self.stats.verdicts += 1;
            }
            event.judgement = Some(inbound::judge(
                &self.trust.catalogue,
                &mut self.idle,
                &mut self.populations,
                event,
                own_chain_invalid,
            ));
            return;
        }
        let hs = &event.handshake;
        // The baseline keeps digests: names a server sends can be kilobytes long, and it keeps
        // eight of each for 65,536 destinations.
        let issuer = hs.chain.get(1).map(|c| c.spki_sha256.clone()).or_else(|| {
            hs.chain
                .first()
                .map(|c| x509::sha256_hex(c.issuer.as_bytes()))
        });
        let identity = hs.chain.first().map(|c| c.identity());
        // The ServerHello's parameters: JA3S (version, cipher, extensions), and JA4S when built.
        #[cfg(feature = "ja4plus")]
        let ja4s = &hs.ja4s;
        #[cfg(not(feature = "ja4plus"))]
        let ja4s: &Option<String> = &None;
        let server_fingerprint = match (&hs.ja3s, ja4s) {
            (Some(a), Some(b)) => Some(format!("{a}|{b}")),
            (Some(a), None) => Some(a.clone()),
            (None, Some(b)) => Some(b.clone()),
            (None, None) => None,
        };
        // The kind of client: what the server's answer depends on.
        let client = hs.ja4.as_deref().or(hs.ja3.as_deref());
        // Per server name and port: a name's addresses change (DNS, CDNs), its server does not.
        let observed = hs
            .server_name
            .as_ref()
            .filter(|_| !hs.chain.is_empty() || server_fingerprint.is_some())
            .map(|sni| {
                (
                    baseline::Key {
                        sni: sni.clone(),
                        addr: None,
                        port: hs.dst_port,
                    },
                    baseline::Observation {
                        client,
                        issuer: if hs.chain.is_empty() {
                            None
                        } else {
                            issuer.as_deref()
                        },
                        server_fingerprint: server_fingerprint.as_deref(),
                        identity,
                        flight_size: hs.server_encrypted_flight_bytes,
                    },
                )
            });
        let signal = match &observed {
            Some((key, obs)) => self.baseline.compare(key, obs),
            None => baseline::Signal::default(),
        };
        let process = event.process.as_ref();
        let facts = Facts {
            chain: &hs.chain,
            server_name: hs.server_name.as_deref(),
            dst_addr: hs.dst_addr,
            time_ns: hs.time.0,
            client_outcome: hs.client_outcome,
            client_alert: hs.alert,
            exe: process.and_then(|p| p.exe.as_deref()),
            comm: process.and_then(|p| p.comm.as_deref()),
            baseline: signal,
            tls_version: hs.tls_version,
            capture_incomplete: &hs.capture_incomplete,
            chain_conflict: !hs.wire_chain_sha256.is_empty(),
            chain_source: hs.chain_source,
            closed_before_request: closed_before_request(hs),
        };
        let mut judgement = self.judge(&facts);
        if let Some((key, obs)) = observed
            && let Some(how) = learns(&judgement, &signal)
        {
            self.baseline.learn(key, &obs, how);
        }
        if judgement.verdict == Verdict::Intercepted || judgement.interceptor.is_some() {
            let g = grade::downstream(hs);
            if g.grade > Grade::A {
                let why: Vec<&str> = g.reasons.iter().map(|r| r.as_str()).collect();
                judgement.explanation.push_str(&format!(
                    " The interceptor also weakened what the client got: grade {} ({}).",
                    g.grade,
                    why.join(", ")
                ));
            }
            judgement.interceptor_grade = Some(g);
        }
        if hs.quic_unanswered {
            quic_blocked(&mut judgement);
        }
        event.judgement = Some(judgement);
    }
}

/// A TCP handshake after an unanswered QUIC attempt to the same name: low on its own (a
/// network may drop UDP for other reasons); one level more on a handshake already
/// intercepted, since blocking QUIC is how inspection boxes push browsers to TCP.
fn quic_blocked(j: &mut Judgement) {
    j.reasons.push(Reason::QuicBlocked);
    j.severity = if j.verdict == Verdict::Intercepted {
        Severity::ALL
            .iter()
            .copied()
            .find(|s| *s > j.severity)
            .unwrap_or(Severity::Critical)
    } else {
        j.severity.max(Severity::Low)
    };
    j.explanation.push_str(
        " Before this, the client tried QUIC to the same name and got no answer, then came \
         over TCP: a network that blocks QUIC (UDP) pushes browsers to TCP, where TLS can be \
         inspected.",
    );
}

/// Whether, and how, a judged handshake teaches the baseline: a clean one, or one whose
/// certificate was not visible with nothing else wrong (severity info), when the baseline did
/// not flag it; a clean one it flagged only counts towards learning (a server that changed
/// answers the same way again, with a publicly valid chain). Anything else, an interceptor's
/// handshake among them, teaches nothing.
fn learns(j: &Judgement, signal: &baseline::Signal) -> Option<baseline::Learn> {
    match j.verdict {
        Verdict::Clean if !signal.changed() => Some(baseline::Learn::Now),
        Verdict::Clean => Some(baseline::Learn::AfterRepeats),
        Verdict::Unverified if !signal.changed() && j.severity == Severity::Info => {
            Some(baseline::Learn::Now)
        }
        _ => None,
    }
}

/// A path webpki validated: the anchor (an index into its store) and which certificates of
/// the chain it used (indices into the chain as sent; the leaf, 0, always).
#[derive(Clone, Debug, PartialEq, Eq)]
struct ValidPath {
    anchor: usize,
    used: Vec<usize>,
}

/// Validate against one store: the path, or why there is none.
fn validate(
    store: &Store,
    ee: &EndEntityCert<'_>,
    intermediates: &[CertificateDer<'_>],
    time: UnixTime,
) -> Result<ValidPath, PathFailure> {
    let result = ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &store.anchors,
        intermediates,
        time,
        KeyUsage::server_auth(),
        None,
        None,
    );
    match result {
        Ok(path) => {
            let anchor = path.anchor();
            let anchor = store
                .anchors
                .iter()
                .position(|a| {
                    a.subject_public_key_info == anchor.subject_public_key_info
                        && a.subject == anchor.subject
                })
                .unwrap_or(0);
            let mut used = vec![0];
            for cert in path.intermediate_certificates() {
                let der = cert.der();
                if let Some(i) = intermediates
                    .iter()
                    .position(|c| c.as_ref() == der.as_ref())
                {
                    used.push(i + 1);
                }
            }
            Ok(ValidPath { anchor, used })
        }
        Err(e) => Err(failure(&e)),
    }
}

/// Validate against the public store, then the host store. A path webpki built to a public
/// anchor that the host store holds too is valid there as well: that validation is not done
/// twice.
fn validate_both(
    trust: &TrustContext,
    ee: &EndEntityCert<'_>,
    intermediates: &[CertificateDer<'_>],
    time: UnixTime,
) -> (
    Result<ValidPath, PathFailure>,
    Result<ValidPath, PathFailure>,
) {
    let public = validate(&trust.public, ee, intermediates, time);
    let shared = public.as_ref().ok().and_then(|p| {
        let a = trust.public.anchors.get(p.anchor)?;
        let anchor = trust.host.anchors.iter().position(|h| {
            h.subject == a.subject && h.subject_public_key_info == a.subject_public_key_info
        })?;
        Some(ValidPath {
            anchor,
            used: p.used.clone(),
        })
    });
    let host = match shared {
        Some(p) => Ok(p),
        None => validate(&trust.host, ee, intermediates, time),
    };
    (public, host)
}

fn failure(e: &webpki::Error) -> PathFailure {
    use webpki::Error as E;
    match e {
        E::UnknownIssuer => PathFailure::UnknownIssuer,
        E::CertExpired { .. } => PathFailure::Expired,
        E::CertNotValidYet { .. } => PathFailure::NotYetValid,
        E::RequiredEkuNotFoundContext(_) => PathFailure::NoServerAuthEku,
        E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
        | E::InvalidSignatureForPublicKey => PathFailure::Signature,
        #[allow(deprecated)]
        E::RequiredEkuNotFound => PathFailure::NoServerAuthEku,
        #[allow(deprecated)]
        E::UnsupportedSignatureAlgorithm | E::UnsupportedSignatureAlgorithmForPublicKey => {
            PathFailure::Signature
        }
        other => PathFailure::Other(format!("{other:?}").chars().take(60).collect()),
    }
}

/// The chain-level checks.
fn assess(trust: &TrustContext, f: &Facts<'_>, pin_index: Option<usize>) -> Assessment {
    let leaf = &f.chain[0];
    let time = UnixTime::since_unix_epoch(Duration::from_nanos(f.time_ns));
    let leaf_der = CertificateDer::from(leaf.der.as_slice());
    let intermediates: Vec<CertificateDer<'_>> = f.chain[1..]
        .iter()
        .map(|c| CertificateDer::from(c.der.as_slice()))
        .collect();
    let parsed_leaf = X509Certificate::from_der(&leaf.der).ok().map(|(_, c)| c);
    let (public, host, name_ok) = match EndEntityCert::try_from(&leaf_der) {
        Ok(ee) => {
            let (public, host) = validate_both(trust, &ee, &intermediates, time);
            let name_ok = match (f.server_name, f.dst_addr) {
                (Some(sni), _) => ServerName::try_from(sni)
                    .is_ok_and(|n| ee.verify_is_valid_for_subject_name(&n).is_ok()),
                (None, Some(ip)) => ee
                    .verify_is_valid_for_subject_name(&ServerName::IpAddress(ip.into()))
                    .is_ok(),
                (None, None) => false,
            };
            (public, host, name_ok)
        }
        Err(e) => (Err(failure(&e)), Err(failure(&e)), false),
    };
    let host_anchor = host
        .as_ref()
        .ok()
        .and_then(|p| trust.host.info.get(p.anchor))
        .map(|i| (i.subject.clone(), i.spki_sha256.clone()));
    // The certificates and anchors of every validated path: only these speak for pins and
    // approvals. A certificate merely appended to the chain proves nothing.
    let on_path =
        |p: &Result<ValidPath, PathFailure>| p.as_ref().map(|p| p.used.clone()).unwrap_or_default();
    let mut used: Vec<usize> = on_path(&public);
    used.extend(on_path(&host));
    let path_spkis: Vec<&str> = used
        .iter()
        .filter_map(|&i| f.chain.get(i))
        .map(|c| c.spki_sha256.as_str())
        .chain(
            public
                .as_ref()
                .ok()
                .and_then(|p| trust.public.info.get(p.anchor))
                .map(|i| i.spki_sha256.as_str()),
        )
        .chain(host_anchor.as_ref().map(|(_, spki)| spki.as_str()))
        .collect();
    // A server that sends its root as well sends the path's anchor: that one is on the path.
    let extra: Vec<String> = if public.is_ok() || host.is_ok() {
        (1..f.chain.len())
            .filter(|i| {
                !used.contains(i) && !path_spkis.contains(&f.chain[*i].spki_sha256.as_str())
            })
            .map(|i| f.chain[i].sha256.clone())
            .collect()
    } else {
        Vec::new()
    };

    // Checks over every certificate sent.
    let weak_key = f.chain.iter().any(|c| match c.key_type.as_str() {
        "rsa" | "dsa" => c.key_bits > 0 && c.key_bits < 2048,
        "ec" => c.key_bits > 0 && c.key_bits < 224,
        _ => false,
    });
    let weak_signature = f
        .chain
        .iter()
        .filter(|c| !c.self_issued || f.chain.len() == 1)
        .any(|c| {
            let s = c.signature_algorithm.to_ascii_lowercase();
            s.contains("md5") || s.contains("sha1") || s.contains("sha-1") || s.contains("md2")
        });
    let self_signed = leaf.self_issued;

    // The issuer's name and key: the next certificate sent, or an anchor with that name.
    let (issuer_raw, issuer_cn, issuer_o) = parsed_leaf
        .as_ref()
        .map(|c| {
            let cn = c
                .issuer()
                .iter_common_name()
                .next()
                .and_then(|a| a.as_str().ok())
                .map(str::to_owned);
            let o = c
                .issuer()
                .iter_organization()
                .next()
                .and_then(|a| a.as_str().ok())
                .map(str::to_owned);
            (c.issuer().as_raw().to_vec(), cn, o)
        })
        .unwrap_or_default();
    let issuer_spkis: Vec<&str> = f.chain[1..]
        .iter()
        .filter(|c| c.subject == leaf.issuer)
        .map(|c| c.spki_sha256.as_str())
        .chain(
            trust
                .host
                .by_subject(&issuer_raw)
                .map(|i| i.spki_sha256.as_str()),
        )
        .chain(
            trust
                .public
                .by_subject(&issuer_raw)
                .map(|i| i.spki_sha256.as_str()),
        )
        .collect();
    let key_reuse = !leaf.self_issued && issuer_spkis.contains(&leaf.spki_sha256.as_str());
    let age = f.time_ns.saturating_sub(leaf.not_before.0);
    let backdated = (DAY_NS..=3 * DAY_NS).contains(&age);
    let has_sct = parsed_leaf.as_ref().is_some_and(|c| {
        c.extensions()
            .iter()
            .any(|e| e.oid.to_id_string() == OID_SCT_LIST)
    });
    let missing_sct = public.is_ok() && trust.public.expects_sct && !has_sct;

    // Known products: the leaf's issuer, and every CA sent.
    let mut product = trust
        .catalogue
        .find(issuer_cn.as_deref(), issuer_o.as_deref());
    if product.is_none() {
        for c in &f.chain[1..] {
            if let Ok((_, p)) = X509Certificate::from_der(&c.der) {
                let cn = p
                    .subject()
                    .iter_common_name()
                    .next()
                    .and_then(|a| a.as_str().ok());
                let o = p
                    .subject()
                    .iter_organization()
                    .next()
                    .and_then(|a| a.as_str().ok());
                product = trust.catalogue.find(cn, o);
                if product.is_some() {
                    break;
                }
            }
        }
    }
    // The catalogue speaks only for chains the public Web PKI does not vouch for: a product
    // may imitate a public CA's name.
    let product = product
        .filter(|_| public.is_err())
        .map(|p| (p.id.clone(), p.name.clone()));

    // An approved inspection CA must be on the path the host store validated: an
    // intermediate it used (by its key: a name anyone the host trusts can give), or its
    // anchor.
    let approved = host.as_ref().is_ok_and(|p| {
        p.used
            .iter()
            .skip(1)
            .filter_map(|&i| f.chain.get(i))
            .any(|c| trust.approves_key(&c.spki_sha256))
    }) || host_anchor
        .as_ref()
        .is_some_and(|(subject, spki)| trust.is_approved(spki, subject));

    let pin = pin_index.and_then(|i| trust.pins.pins.get(i)).map(|p| {
        let matched = path_spkis.iter().any(|s| p.spki.iter().any(|pin| pin == s));
        let at = format!(
            "{}:{}",
            trust.pins.source.as_deref().unwrap_or("pins"),
            p.line
        );
        (matched, p.report_only, at)
    });

    let window = f.chain.iter().fold((0u64, u64::MAX), |(lo, hi), c| {
        (lo.max(c.not_before.0), hi.min(c.not_after.0))
    });
    let in_window = window.0 <= f.time_ns && f.time_ns <= window.1;
    Assessment {
        expired: leaf.not_after.0 < f.time_ns,
        not_yet_valid: leaf.not_before.0 > f.time_ns,
        public: public.map(|_| ()),
        host: host.map(|_| ()),
        host_anchor,
        extra,
        name_ok,
        weak_key,
        weak_signature,
        self_signed,
        key_reuse,
        backdated,
        missing_sct,
        product,
        approved,
        pin,
        issuer: issuer_cn.unwrap_or_else(|| leaf.issuer.clone()),
        // Outside the validity window, cache nothing beyond this very handshake's time.
        window: if in_window {
            window
        } else {
            (f.time_ns, f.time_ns)
        },
    }
}

/// See [`Facts::closed_before_request`].
fn closed_before_request(hs: &crate::event::Handshake) -> bool {
    hs.tls_version == Some(TlsVersion::Tls12)
        && hs.client_outcome == ClientOutcome::Completed
        && hs.capture_incomplete.is_empty()
        && hs.encrypted_alerts.client > 0
        && hs.first_application_data.client.is_none()
}

/// `client_rejected:<alert>`, or `client_rejected:encrypted` when the client refused with an
/// alert that TLS 1.3 encrypted.
fn rejection(f: &Facts<'_>) -> Option<Reason> {
    match (f.client_outcome, f.client_alert) {
        (_, Some(a)) if a.is_fatal() => Some(Reason::ClientRejected(Rejection::Alert(a.code))),
        (ClientOutcome::Rejected, _) => Some(Reason::ClientRejected(Rejection::Encrypted)),
        _ => None,
    }
}

fn client_phrase(f: &Facts<'_>) -> String {
    match (f.client_outcome, f.client_alert) {
        (_, Some(a)) if a.is_fatal() => format!("The client rejected it ({}).", a.description()),
        (ClientOutcome::Rejected, _) => {
            "The client rejected it (with an alert TLS 1.3 encrypts, so which one is not visible)."
                .into()
        }
        (ClientOutcome::Completed, _) => "The client completed the handshake.".into(),
        (ClientOutcome::Aborted, _) => "The client closed the connection without finishing.".into(),
        _ => String::new(),
    }
}

fn target(f: &Facts<'_>) -> String {
    match (f.server_name, f.dst_addr) {
        (Some(s), _) => s.to_owned(),
        (None, Some(a)) => a.to_string(),
        _ => "this server".into(),
    }
}

fn join_sentences(a: String, b: String) -> String {
    if b.is_empty() { a } else { format!("{a} {b}") }
}

/// The server answered differently from before: its ServerHello, or the size of its TLS 1.3
/// encrypted flight (which carries the certificate). Signals, not verdicts.
fn push_server_changes(reasons: &mut Vec<Reason>, b: &baseline::Signal) {
    if b.server_fingerprint_changed {
        reasons.push(Reason::ServerFingerprintChanged);
    }
    if b.flight_size_changed {
        reasons.push(Reason::ServerFlightSizeChanged);
    }
}

/// What the sensor could not see: `capture_incomplete:<cause>` (medium), and `stream_conflict`
/// (high) for bytes that came twice with different content. The severity they call for.
pub(crate) fn loss_reasons(losses: &[CaptureLoss], reasons: &mut Vec<Reason>) -> Severity {
    let mut severity = Severity::Info;
    for &cause in losses {
        if cause == CaptureLoss::Conflict {
            reasons.push(Reason::StreamConflict);
            severity = severity.max(Severity::High);
        } else {
            reasons.push(Reason::CaptureIncomplete(cause));
            severity = severity.max(Severity::Medium);
        }
    }
    severity
}

/// The capture losses in words, for explanations: `a gap in the stream and a full ring buffer`.
pub(crate) fn loss_words(losses: &[CaptureLoss]) -> String {
    let words: Vec<&str> = losses
        .iter()
        .map(|c| match c {
            CaptureLoss::Budget => "the sensor's per-connection byte budget ran out",
            CaptureLoss::Gap => "bytes of the stream never reached the sensor",
            CaptureLoss::RingDrop => "the kernel's buffer to sensord was full",
            CaptureLoss::PrefixTooLong => "the plaintext before TLS was longer than it reads",
            CaptureLoss::OutOfOrder => "more data came out of order than it holds",
            CaptureLoss::Evicted => "the sensor gave up on the connection to make room for others",
            CaptureLoss::Conflict => {
                "the same bytes came twice with different content, so what the client kept is \
                 not known"
            }
        })
        .collect();
    words.join("; ")
}

/// No chain: TLS 1.3 hid it, or the sensor could not see it, or the handshake never got that
/// far.
fn unverified(f: &Facts<'_>) -> Judgement {
    let mut reasons = Vec::new();
    let tls13 = f.tls_version == Some(TlsVersion::Tls13);
    if tls13 || f.capture_incomplete.is_empty() {
        reasons.push(Reason::CertificateNotVisible);
    }
    let mut severity = loss_reasons(f.capture_incomplete, &mut reasons);
    if let Some(r) = rejection(f) {
        reasons.push(r);
        severity = severity.max(Severity::Medium);
    }
    push_server_changes(&mut reasons, &f.baseline);
    let changes = [
        f.baseline.server_fingerprint_changed,
        f.baseline.flight_size_changed,
    ]
    .iter()
    .filter(|c| **c)
    .count();
    if changes > 0 {
        severity = severity.max(if changes == 2 {
            Severity::Medium
        } else {
            Severity::Low
        });
    }
    let why = if !f.capture_incomplete.is_empty() {
        format!(
            "the sensor did not see the certificate: {}",
            loss_words(f.capture_incomplete)
        )
    } else if tls13 {
        "the certificate is not visible to a passive observer (TLS 1.3 encrypts it)".to_owned()
    } else {
        "the server's certificate was not in the handshake the sensor saw (a resumed session \
         sends none)"
            .to_owned()
    };
    let mut explanation = join_sentences(format!("{}: {why}.", target(f)), client_phrase(f));
    if changes > 0 {
        let what = match (
            f.baseline.server_fingerprint_changed,
            f.baseline.flight_size_changed,
        ) {
            (true, true) => "its ServerHello and the size of its encrypted certificate flight",
            (true, false) => "its ServerHello",
            _ => "the size of its encrypted certificate flight",
        };
        explanation.push_str(&format!(
            " The server answered unlike before ({what} changed), as a different TLS stack, \
             such as an interceptor's, would."
        ));
    }
    Judgement {
        verdict: Verdict::Unverified,
        reasons,
        severity,
        explanation,
        interceptor: None,
        extra_certificates: Vec::new(),
        interceptor_grade: None,
    }
}

/// Combine the chain's assessment with this handshake's facts.
fn decide(trust: &TrustContext, a: &Assessment, f: &Facts<'_>) -> Judgement {
    let mut reasons: Vec<Reason> = Vec::new();
    let product_text = a
        .product
        .as_ref()
        .map(|(_, name)| format!(" ({name})"))
        .unwrap_or_default();
    let issuer = format!("\"{}\"{product_text}", a.issuer);
    let who = target(f);
    let public_ok = a.public.is_ok();
    let host_ok = a.host.is_ok();
    let forged = (a.key_reuse || a.backdated || f.baseline.same_identity_new_issuer) && !public_ok;
    let push_common = |reasons: &mut Vec<Reason>| {
        if !a.name_ok {
            reasons.push(Reason::HostnameMismatch);
        }
        if a.expired {
            reasons.push(Reason::Expired);
        }
        if a.not_yet_valid {
            reasons.push(Reason::NotYetValid);
        }
        if a.self_signed {
            reasons.push(Reason::SelfSigned);
        }
        if a.weak_key {
            reasons.push(Reason::WeakKey);
        }
        if a.weak_signature {
            reasons.push(Reason::WeakSignature);
        }
        if forged {
            reasons.push(Reason::ForgedLeafTraits);
        }
    };

    let (kind, mut severity, explanation);
    let pin_failed = a.pin.as_ref().is_some_and(|(ok, _, _)| !ok);
    if public_ok && a.name_ok {
        reasons.push(Reason::PublicRoot);
        if a.missing_sct {
            reasons.push(Reason::MissingSct);
        }
        if pin_failed {
            let (_, report_only, at) = a.pin.clone().unwrap_or_default();
            reasons.push(Reason::PinMismatch);
            if report_only {
                kind = Verdict::Clean;
                severity = Severity::Medium;
                explanation = format!(
                    "{who}: the chain from {issuer} is valid in the public Web PKI, but none of \
                     its keys matches the pin set at {at} (report only)."
                );
            } else {
                kind = Verdict::PinMismatch;
                severity = Severity::Critical;
                explanation = format!(
                    "{who}: the chain from {issuer} is valid in the public Web PKI, but none of \
                     its keys matches the pin set at {at}: someone holds a publicly trusted \
                     certificate for this name."
                );
            }
        } else {
            kind = Verdict::Clean;
            severity = if a.missing_sct {
                Severity::Low
            } else {
                Severity::Info
            };
            explanation = format!(
                "{who}: certificate issued by {issuer}, valid in the public Web PKI ({}).",
                trust.public.source
            );
        }
    } else if host_ok && a.name_ok {
        kind = Verdict::Intercepted;
        reasons.push(Reason::LocalRoot);
        if let Some((id, _)) = &a.product {
            reasons.push(Reason::KnownInterceptor(id.clone()));
        }
        push_common(&mut reasons);
        let anchor = a
            .host_anchor
            .as_ref()
            .map(|(s, _)| format!(" (anchor {s})"))
            .unwrap_or_default();
        if a.approved {
            reasons.push(Reason::ApprovedInspection);
            severity = Severity::Low;
            explanation = format!(
                "{who}: the certificate was issued by {issuer}, an inspection CA this \
                 organisation approved, trusted by this host only{anchor}: the connection is \
                 inspected as intended."
            );
        } else {
            severity = Severity::High;
            explanation = format!(
                "{who}: the certificate was issued by {issuer}, which only this host trusts{anchor}, \
                 not the public Web PKI: this connection is intercepted."
            );
        }
        if pin_failed {
            reasons.push(Reason::PinMismatch);
        }
    } else {
        kind = Verdict::Untrusted;
        if let Some((id, _)) = &a.product {
            reasons.push(Reason::KnownInterceptor(id.clone()));
        }
        let unknown = matches!(a.host, Err(PathFailure::UnknownIssuer))
            && matches!(a.public, Err(PathFailure::UnknownIssuer));
        if unknown {
            reasons.push(Reason::UnknownIssuer);
        }
        if matches!(a.host, Err(PathFailure::NoServerAuthEku))
            || matches!(a.public, Err(PathFailure::NoServerAuthEku))
        {
            reasons.push(Reason::NoServerAuthEku);
        }
        push_common(&mut reasons);
        let why = if public_ok || host_ok {
            "its names do not include this server"
        } else if a.expired {
            "it has expired"
        } else if a.not_yet_valid {
            "it is not valid yet"
        } else if unknown {
            "neither this host nor the public Web PKI trusts its issuer"
        } else {
            "it does not validate"
        };
        severity = if a.product.is_some() || forged {
            Severity::High
        } else {
            Severity::Medium
        };
        explanation = format!("{who}: the certificate was issued by {issuer}, and {why}.");
    }
    // A TLS 1.2 client that finished, then closed with an encrypted alert before asking
    // anything, refused a chain that is not clean (NSS does so).
    let refused_late = f.closed_before_request && kind != Verdict::Clean;
    let accepted_untrusted =
        kind == Verdict::Untrusted && f.client_outcome == ClientOutcome::Completed && !refused_late;
    if let Some(r) = rejection(f) {
        reasons.push(r);
    } else if refused_late {
        reasons.push(Reason::ClientRejected(Rejection::Encrypted));
    }
    if accepted_untrusted {
        reasons.push(Reason::ClientAcceptedUntrusted);
        severity = Severity::Critical;
    }
    if f.baseline.issuer_changed {
        reasons.push(Reason::BaselineChanged);
        if kind == Verdict::Clean {
            severity = severity.max(Severity::Low);
        }
    }
    push_server_changes(&mut reasons, &f.baseline);
    let phrase = if refused_late {
        "The client finished the handshake, then closed it with an encrypted alert before \
         sending anything: it refused the certificate (as NSS does in TLS 1.2; the alert is \
         encrypted, so which one is not visible)."
            .to_owned()
    } else {
        client_phrase(f)
    };
    let mut explanation = join_sentences(explanation, phrase);
    if accepted_untrusted {
        explanation.push_str(" That client does not check certificates.");
    }
    if forged {
        let mut traits = Vec::new();
        if a.key_reuse {
            traits.push("its key is its issuer's key");
        }
        if a.backdated {
            traits.push("it was made valid from a day or more before the handshake");
        }
        if f.baseline.same_identity_new_issuer {
            traits.push(
                "it names what an earlier certificate for this server named, under a new issuer",
            );
        }
        explanation.push_str(&format!(" The leaf looks forged: {}.", traits.join("; ")));
    }
    let mut kind = kind;
    if f.chain_conflict {
        reasons.push(Reason::ChainConflict);
        severity = severity.max(Severity::High);
        explanation.push_str(
            " The client's TLS library parsed this chain, but another one crossed the wire: \
             someone in the path changed what the sensor could see.",
        );
    }
    let loss = loss_reasons(f.capture_incomplete, &mut reasons);
    let stand_in = f.chain_source == Some(ChainSource::Probe);
    if loss >= Severity::High || (stand_in && loss > Severity::Info) {
        severity = severity.max(loss);
        explanation.push_str(&format!(" But {}.", loss_words(f.capture_incomplete)));
        // The chain seen may not be the one the client kept (bytes came twice), or the sensor
        // never saw the client's at all and the probe's stands in for it (an interceptor can
        // hide the one and let the other through): never call that clean.
        if kind == Verdict::Clean {
            kind = Verdict::Unverified;
        }
    } else {
        // A loss after the chain was seen whole does not change what the chain says.
        reasons.retain(|r| !matches!(r, Reason::CaptureIncomplete(_)));
    }
    Judgement {
        verdict: kind,
        reasons,
        severity,
        explanation,
        interceptor: a.product.clone().map(|(id, name)| Interceptor { id, name }),
        extra_certificates: a.extra.clone(),
        interceptor_grade: None,
    }
}

#[cfg(test)]
mod tests;
