//! The server's view: an inbound handshake (the local process is the server) is judged on the
//! client's behaviour, for the server's operator. Its own certificate is the operator's and
//! says nothing about who connected; what does:
//!
//! - the ClientHello is one an interception product sends itself (the catalogue's
//!   `client_ja4`): `interceptor_fingerprint:<id>`, `intercepted`;
//! - clients that complete the handshake and send no request before the connection ends
//!   (the event's `idle_after_handshake`), repeatedly from one address with one fingerprint and
//!   more often than they ask anything (`idle_after_handshake`): what an interceptor leaves
//!   behind on a server when its own client refused its forged certificate, and what the
//!   server logs as HTTP 408s. One idle connection is no sign: browsers leave preconnections
//!   unused;
//! - the request's User-Agent names a browser whose TLS stack always sends what this
//!   ClientHello lacks (`ua_fingerprint_mismatch:<browser>`, `intercepted`; with request heads
//!   on, [`super::user_agents`]);
//! - the client refused the server's certificate with an alert (`client_rejected:<alert>`);
//! - the clients of a network, which used a mix of fingerprints, switch to one they never used
//!   (`client_fingerprint_changed`): an interceptor put in front of them, whatever its
//!   fingerprint.
//!
//! Without a fingerprint match the verdict is `clean`: the weaker signals raise the severity
//! and say what they suggest, but an idle client is not proof of a man in the middle. A
//! handshake the sensor did not see whole (its ClientHello unseen, or `capture_incomplete`)
//! cannot be judged by its fingerprint: `unverified`, with the losses as reasons, medium.

use std::net::IpAddr;

use hashlink::LruCache;

use crate::{
    event::{
        ClientOutcome, Event, Grade, Interceptor, Judgement, Reason, Rejection, Severity, Verdict,
    },
    trust::Catalogue,
};

/// How long idle handshakes from one client are counted together, and how many make the
/// pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleRule {
    pub window_ns: u64,
    pub threshold: u32,
}

impl Default for IdleRule {
    fn default() -> Self {
        Self {
            window_ns: 600 * 1_000_000_000,
            threshold: 3,
        }
    }
}

/// Recent handshakes per (client address, JA4): when it completed one and asked nothing
/// (idle), and when it completed one and made a request (active). Bounded in keys, and each
/// key keeps at most [`MAX_TIMES`] of each.
pub struct IdleCounter {
    rule: IdleRule,
    recent: LruCache<(IpAddr, String), Recent>,
}

/// Times kept per client and kind.
const MAX_TIMES: usize = 64;

#[derive(Default)]
struct Recent {
    idle: Vec<u64>,
    active: Vec<u64>,
}

/// Keep `t` in `times`, drop what is outside `from..=t`, and the oldest beyond the bound;
/// how many are left.
fn note(times: &mut Vec<u64>, from: u64, t: u64) -> u32 {
    times.retain(|&x| x >= from && x <= t);
    times.push(t);
    if times.len() > MAX_TIMES {
        let cut = times.len() - MAX_TIMES;
        times.drain(..cut);
    }
    times.len() as u32
}

impl IdleCounter {
    pub fn new(rule: IdleRule, max_clients: usize) -> Self {
        Self {
            rule,
            recent: LruCache::new(max_clients.max(1)),
        }
    }

    pub fn rule(&self) -> IdleRule {
        self.rule
    }

    fn entry(&mut self, client: IpAddr, ja4: &str) -> Option<&mut Recent> {
        let key = (client, ja4.to_owned());
        if self.recent.get(&key).is_none() {
            self.recent.insert(key.clone(), Recent::default());
        }
        self.recent.get_mut(&key)
    }

    /// This client completed a handshake at `time_ns` and made a request.
    pub fn active(&mut self, client: IpAddr, ja4: &str, time_ns: u64) {
        let from = time_ns.saturating_sub(self.rule.window_ns);
        if let Some(r) = self.entry(client, ja4) {
            note(&mut r.active, from, time_ns);
        }
    }

    /// Count an idle handshake at `time_ns`. The pattern: at least the threshold of idle ones
    /// within the window, and at least as many as this client's handshakes with a request in
    /// it (a browser leaves a preconnection unused now and then among many it uses; an
    /// interceptor whose clients refuse it asks nothing). How many idle ones, when it is.
    pub fn count(&mut self, client: IpAddr, ja4: &str, time_ns: u64) -> Option<u32> {
        let from = time_ns.saturating_sub(self.rule.window_ns);
        let threshold = self.rule.threshold.max(1);
        let r = self.entry(client, ja4)?;
        let idle = note(&mut r.idle, from, time_ns);
        r.active.retain(|&x| x >= from);
        let active = r.active.len() as u32;
        (idle >= threshold && idle >= active).then_some(idle)
    }
}

/// Handshakes a network's clients make before their fingerprints count as known.
const LEARN_HANDSHAKES: u32 = 10;
/// Fingerprints kept per network.
const KNOWN_PER_NETWORK: usize = 16;
/// Consecutive handshakes with one unknown fingerprint that make a change.
const CHANGE_RUN: u32 = 3;
/// After this many in a row the new fingerprint is the network's: it is learned.
const ADOPT_RUN: u32 = 50;

/// What one client network (an IPv4 /24, an IPv6 /48), or one client certificate, used
/// towards one local port.
#[derive(Default)]
struct Population {
    /// Fingerprints seen while learning, with counts.
    known: Vec<(String, u32)>,
    handshakes: u32,
    /// The current run of consecutive handshakes with one fingerprint not in `known`.
    run: Option<(String, u32)>,
}

/// The fingerprints each client network used per local port: bounded in networks and in
/// fingerprints a network.
pub struct Populations {
    networks: LruCache<(u16, IpAddr, Option<String>), Population>,
}

impl Populations {
    pub fn new(max_networks: usize) -> Self {
        Self {
            networks: LruCache::new(max_networks.max(1)),
        }
    }

    fn network(addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(a) => {
                let o = a.octets();
                IpAddr::from([o[0], o[1], o[2], 0])
            }
            IpAddr::V6(a) => {
                let s = a.segments();
                IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
            }
        }
    }

    /// Count a handshake; the run of the new fingerprint when it makes a change. Clients that
    /// present a certificate (seen in clear) are a population of their own per certificate,
    /// wherever they connect from.
    pub fn observe(
        &mut self,
        port: u16,
        client: IpAddr,
        certificate: Option<&str>,
        ja4: &str,
    ) -> Option<u32> {
        let key = match certificate {
            Some(c) => (port, IpAddr::from([0u8; 4]), Some(c.to_owned())),
            None => (port, Self::network(client), None),
        };
        if self.networks.get(&key).is_none() {
            self.networks.insert(key.clone(), Population::default());
        }
        let p = self.networks.get_mut(&key)?;
        p.handshakes = p.handshakes.saturating_add(1);
        if let Some(k) = p.known.iter_mut().find(|(f, _)| f == ja4) {
            k.1 = k.1.saturating_add(1);
            p.run = None;
            return None;
        }
        if p.handshakes <= LEARN_HANDSHAKES {
            learn(&mut p.known, ja4);
            return None;
        }
        let run = match &mut p.run {
            Some((f, n)) if f == ja4 => {
                *n = n.saturating_add(1);
                *n
            }
            _ => {
                p.run = Some((ja4.to_owned(), 1));
                1
            }
        };
        if run >= ADOPT_RUN {
            learn(&mut p.known, ja4);
            p.run = None;
        }
        (run >= CHANGE_RUN).then_some(run)
    }
}

/// Add a fingerprint to a bounded list, in place of the least used one when it is full.
fn learn(known: &mut Vec<(String, u32)>, ja4: &str) {
    if known.len() >= KNOWN_PER_NETWORK
        && let Some(least) = known
            .iter()
            .enumerate()
            .min_by_key(|(_, (_, n))| *n)
            .map(|(i, _)| i)
    {
        known.swap_remove(least);
    }
    known.push((ja4.to_owned(), 1));
}

/// Judge an inbound handshake. `own_chain_invalid`: the server's own chain, when it was seen
/// (TLS 1.2 and older), does not validate in the public Web PKI for the name asked.
pub fn judge(
    catalogue: &Catalogue,
    idle: &mut IdleCounter,
    populations: &mut Populations,
    event: &Event,
    own_chain_invalid: Option<bool>,
) -> Judgement {
    let hs = &event.handshake;
    let client = hs
        .src_addr
        .map_or_else(|| "a client".to_owned(), |a| a.to_string());
    let mut reasons = Vec::new();
    let mut sentences = Vec::new();
    let mut severity = Severity::Info;
    let mut interceptor = None;
    let product = hs.ja4.as_deref().and_then(|ja4| catalogue.find_client(ja4));
    if let Some(p) = product {
        reasons.push(Reason::InterceptorFingerprint(p.id.clone()));
        severity = Severity::High;
        sentences.push(format!(
            "The TLS handshake from {client} is the one {} sends itself, not a browser's or an \
             application's: an interception device most likely stands between this client and \
             your server, and the client is shown the device's certificate instead of yours.",
            p.name
        ));
        interceptor = Some(Interceptor {
            id: p.id.clone(),
            name: p.name.clone(),
        });
    }
    if let (Some(ua), Some(offer)) = (
        hs.request.as_ref().and_then(|r| r.user_agent.as_deref()),
        hs.client_offer.as_ref(),
    ) && let Some(rule) =
        super::user_agents::contradiction(super::user_agents::builtin(), ua, offer)
    {
        reasons.push(Reason::UaFingerprintMismatch(rule.id.clone()));
        severity = severity.max(Severity::High);
        sentences.push(format!(
            "The request says it comes from {}, but its TLS handshake is not that browser's: \
             {}, and this one does not. Something else made the handshake for it: most likely \
             an interception device between the client and your server (or a client that \
             claims to be a browser).",
            rule.name, rule.reason
        ));
    }
    match (hs.client_outcome, hs.alert) {
        (_, Some(a)) if a.is_fatal() => {
            reasons.push(Reason::ClientRejected(Rejection::Alert(a.code)));
            severity = severity.max(Severity::Medium);
            sentences.push(format!(
                "The client refused your server's certificate ({}). If the certificate is \
                 valid, the client does not trust its issuer or expects another one (a pin).",
                a.description()
            ));
        }
        (ClientOutcome::Rejected, _) => {
            reasons.push(Reason::ClientRejected(Rejection::Encrypted));
            severity = severity.max(Severity::Medium);
            sentences.push(
                "The client refused your server's certificate (with an alert TLS 1.3 \
                 encrypts, so which one is not visible)."
                    .into(),
            );
        }
        _ => {}
    }
    if let (Some(addr), Some(ja4)) = (hs.src_addr, hs.ja4.as_deref())
        && let Some(run) = populations.observe(
            hs.dst_port,
            addr,
            hs.client_certificate_sha256.as_deref(),
            ja4,
        )
    {
        reasons.push(Reason::ClientFingerprintChanged);
        severity = severity.max(Severity::Medium);
        sentences.push(format!(
            "The clients of {} used a mix of TLS fingerprints towards this port; the last \
             {run} connections from it all used one it had never used: a device put in front \
             of them (an interceptor) makes its own handshakes{}.",
            match &hs.client_certificate_sha256 {
                Some(_) => "this client certificate".to_owned(),
                None => format!("{client}'s network"),
            },
            if product.is_some() {
                ""
            } else {
                ", and this one is not in the catalogue of known products"
            }
        ));
    }
    if hs.client_outcome == ClientOutcome::Completed
        && !hs.idle_after_handshake
        && let (Some(addr), Some(ja4)) = (hs.src_addr, hs.ja4.as_deref())
    {
        idle.active(addr, ja4, hs.time.0);
    }
    if hs.idle_after_handshake
        && let (Some(addr), Some(ja4)) = (hs.src_addr, hs.ja4.as_deref())
        && let Some(seen) = idle.count(addr, ja4, hs.time.0)
    {
        reasons.push(Reason::IdleAfterHandshake);
        severity = severity.max(Severity::Medium);
        sentences.push(format!(
            "{seen} connections from {client} with this client fingerprint completed TLS and \
             sent no request within {} minutes, more than made one; your server logs them as \
             timeouts (HTTP 408). The usual cause is {}: it completes the handshake with your \
             server for its client, the client refuses the device's certificate, and the \
             device's connection to you stays silent.",
            idle.rule().window_ns / 60_000_000_000,
            match product {
                Some(p) => format!("an interception device, here {}", p.name),
                None => "an interception device".into(),
            }
        ));
    }
    // What the interceptor offers this server, graded as the NDSS study graded them.
    // An interceptor that completed the handshake and asked something of a server whose
    // certificate does not validate accepts invalid certificates.
    let went_on = hs.client_outcome == ClientOutcome::Completed && !hs.idle_after_handshake;
    let accepted_invalid = went_on && own_chain_invalid == Some(true);
    let interceptor_grade = product.and_then(|_| super::grade::upstream(hs, accepted_invalid));
    if let Some(g) = interceptor_grade.as_ref().filter(|g| g.grade > Grade::A) {
        let why: Vec<&str> = g.reasons.iter().map(|r| r.as_str()).collect();
        sentences.push(format!(
            "What it offers your server is weaker than a browser's: grade {} ({}).",
            g.grade,
            why.join(", ")
        ));
    }
    // What the sensor did not see of the client's handshake: the fingerprints above may not
    // be the client's, and an absent one proves nothing.
    let loss = super::loss_reasons(&hs.capture_incomplete, &mut reasons);
    severity = severity.max(loss);
    let unseen = !hs.capture_incomplete.is_empty() || hs.ja4.is_none();
    if unseen {
        severity = severity.max(Severity::Medium);
        sentences.push(if hs.capture_incomplete.is_empty() {
            format!(
                "The sensor did not see the handshake {client} began, so whether an \
                 interceptor made it cannot be told."
            )
        } else {
            format!(
                "The sensor did not see all of the handshake from {client} ({}), so whether \
                 an interceptor made it cannot be told.",
                super::loss_words(&hs.capture_incomplete)
            )
        });
    }
    let verdict = if product.is_some()
        || reasons
            .iter()
            .any(|r| matches!(r, Reason::UaFingerprintMismatch(_)))
    {
        Verdict::Intercepted
    } else if unseen {
        Verdict::Unverified
    } else {
        Verdict::Clean
    };
    if sentences.is_empty() {
        sentences.push(format!(
            "An inbound connection from {client}: nothing in its handshake points to an \
             interceptor."
        ));
    }
    Judgement {
        verdict,
        reasons,
        severity,
        explanation: sentences.join(" "),
        interceptor,
        extra_certificates: Vec::new(),
        interceptor_grade,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Alert, CaptureLoss, Handshake, Process, Role, Timestamp};

    const SECOND: u64 = 1_000_000_000;

    fn judge_(
        c: &Catalogue,
        idle: &mut IdleCounter,
        pops: &mut Populations,
        event: &Event,
    ) -> Judgement {
        judge(c, idle, pops, event, None)
    }

    fn inbound(ja4: &str, idle: bool, t: u64) -> Event {
        Event {
            handshake: Handshake {
                time: Timestamp(t),
                src_addr: Some("192.0.2.7".parse().unwrap()),
                src_port: 40000,
                dst_addr: Some("198.51.100.1".parse().unwrap()),
                dst_port: 443,
                ja4: Some(ja4.into()),
                client_outcome: ClientOutcome::Completed,
                idle_after_handshake: idle,
                ..Handshake::default()
            },
            process: Some(Process::new(Role::Server)),
            ..Event::default()
        }
    }

    fn trust() -> Catalogue {
        Catalogue::builtin()
    }

    const MITMPROXY: &str = "t13d281100_a01be8c064b6_ef4b9b248d72";
    const CURL: &str = "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6";

    #[test]
    fn a_product_s_own_client_hello_is_intercepted_and_named() {
        let t = trust();
        let mut idle = IdleCounter::new(IdleRule::default(), 16);
        let j = judge_(
            &t,
            &mut idle,
            &mut Populations::new(16),
            &inbound(MITMPROXY, false, SECOND),
        );
        assert_eq!(j.verdict, Verdict::Intercepted);
        assert_eq!(
            j.reasons,
            [Reason::InterceptorFingerprint("mitmproxy".into())]
        );
        assert_eq!(j.severity, Severity::High);
        assert_eq!(j.interceptor.unwrap().id, "mitmproxy");
        assert!(j.explanation.contains("mitmproxy"), "{}", j.explanation);
    }

    #[test]
    fn a_direct_client_is_clean_with_nothing_to_say() {
        let t = trust();
        let mut idle = IdleCounter::new(IdleRule::default(), 16);
        let j = judge_(
            &t,
            &mut idle,
            &mut Populations::new(16),
            &inbound(CURL, false, SECOND),
        );
        assert_eq!(j.verdict, Verdict::Clean);
        assert!(j.reasons.is_empty());
        assert_eq!(j.severity, Severity::Info);
    }

    #[test]
    fn a_handshake_the_sensor_did_not_see_whole_is_not_clean() {
        let t = trust();
        let mut idle = IdleCounter::new(IdleRule::default(), 16);
        let mut pops = Populations::new(16);
        // No ClientHello seen (its bytes never reached the sensor): nothing to judge it by.
        let mut ev = inbound(CURL, false, SECOND);
        ev.handshake.ja4 = None;
        ev.handshake.capture_incomplete = vec![CaptureLoss::Gap];
        let j = judge_(&t, &mut idle, &mut pops, &ev);
        assert_eq!(j.verdict, Verdict::Unverified);
        assert_eq!(j.reasons, [Reason::CaptureIncomplete(CaptureLoss::Gap)]);
        assert_eq!(j.severity, Severity::Medium);
        assert!(
            j.explanation.contains("never reached the sensor"),
            "{}",
            j.explanation
        );
        // A ClientHello whose stream had a gap: its fingerprint may not be what the client sent.
        let mut ev = inbound(CURL, false, 2 * SECOND);
        ev.handshake.capture_incomplete = vec![CaptureLoss::Gap];
        let j = judge_(&t, &mut idle, &mut pops, &ev);
        assert_eq!(j.verdict, Verdict::Unverified);
        assert_eq!(j.severity, Severity::Medium);
        // A conflict (bytes that came twice, different) is high, and a product's own hello
        // still names it.
        let mut ev = inbound(MITMPROXY, false, 3 * SECOND);
        ev.handshake.capture_incomplete = vec![CaptureLoss::Conflict];
        let j = judge_(&t, &mut idle, &mut pops, &ev);
        assert_eq!(j.verdict, Verdict::Intercepted);
        assert!(
            j.reasons.contains(&Reason::StreamConflict),
            "{:?}",
            j.reasons
        );
        assert_eq!(j.severity, Severity::High);
    }

    #[test]
    fn idle_handshakes_become_a_pattern_at_the_threshold_within_the_window() {
        let t = trust();
        let mut idle = IdleCounter::new(IdleRule::default(), 16);
        let mut pops = Populations::new(16);
        // One idle connection is no sign.
        let first = judge_(&t, &mut idle, &mut pops, &inbound(CURL, true, SECOND));
        assert_eq!(first.verdict, Verdict::Clean);
        assert!(first.reasons.is_empty());
        assert_eq!(first.severity, Severity::Info);
        let _ = judge_(&t, &mut idle, &mut pops, &inbound(CURL, true, 2 * SECOND));
        let third = judge_(&t, &mut idle, &mut pops, &inbound(CURL, true, 3 * SECOND));
        assert_eq!(third.reasons, [Reason::IdleAfterHandshake]);
        assert_eq!(third.severity, Severity::Medium);
        assert!(third.explanation.contains("408"), "{}", third.explanation);
        // Another fingerprint from the same address counts apart.
        let other = judge_(
            &t,
            &mut idle,
            &mut pops,
            &inbound(MITMPROXY, true, 4 * SECOND),
        );
        assert!(!other.has(&Reason::IdleAfterHandshake));
        assert_eq!(other.verdict, Verdict::Intercepted);
        // Outside the window the count starts again.
        let later = judge_(
            &t,
            &mut idle,
            &mut pops,
            &inbound(CURL, true, 1_000 * SECOND),
        );
        assert!(later.reasons.is_empty());
    }

    #[test]
    fn a_client_that_also_asks_things_leaves_no_pattern_with_its_unused_connections() {
        // A browser's preconnections it did not use, between connections it used.
        let t = trust();
        let mut idle = IdleCounter::new(IdleRule::default(), 16);
        let mut pops = Populations::new(16);
        for i in 0..5 {
            let _ = judge_(&t, &mut idle, &mut pops, &inbound(CURL, false, i * SECOND));
        }
        for i in 5..9 {
            let j = judge_(&t, &mut idle, &mut pops, &inbound(CURL, true, i * SECOND));
            assert!(j.reasons.is_empty(), "{i}: {:?}", j.reasons);
        }
        // Idle ones outnumber those with a request: the pattern.
        let j = judge_(&t, &mut idle, &mut pops, &inbound(CURL, true, 9 * SECOND));
        assert_eq!(j.reasons, [Reason::IdleAfterHandshake]);
    }

    #[test]
    fn a_network_that_switches_to_one_new_fingerprint_is_a_change() {
        let mut p = Populations::new(16);
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let neighbour: IpAddr = "192.0.2.99".parse().unwrap();
        for i in 0..LEARN_HANDSHAKES {
            let ja4 = if i % 2 == 0 { CURL } else { "t13d_python" };
            assert_eq!(p.observe(443, client, None, ja4), None);
        }
        // Known fingerprints, and a new one now and then, are no change.
        assert_eq!(p.observe(443, neighbour, None, CURL), None);
        assert_eq!(p.observe(443, client, None, "t13d_new_app"), None);
        assert_eq!(p.observe(443, client, None, CURL), None);
        // One unknown fingerprint, three times in a row, from the network.
        assert_eq!(p.observe(443, client, None, "t13d_box"), None);
        assert_eq!(p.observe(443, neighbour, None, "t13d_box"), None);
        assert_eq!(p.observe(443, client, None, "t13d_box"), Some(3));
        // Another port, another network: populations of their own.
        assert_eq!(p.observe(8443, client, None, "t13d_box"), None);
        let far: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(p.observe(443, far, None, "t13d_box"), None);
        // After a long run the new fingerprint is the network's.
        for _ in 3..ADOPT_RUN {
            p.observe(443, client, None, "t13d_box");
        }
        assert_eq!(p.observe(443, client, None, "t13d_box"), None);
    }

    #[test]
    fn a_client_certificate_is_a_population_of_its_own() {
        let mut p = Populations::new(16);
        for i in 0..LEARN_HANDSHAKES {
            let from = IpAddr::from([10, 0, i as u8, 1]);
            assert_eq!(p.observe(443, from, Some("cert-a"), CURL), None);
        }
        // Another network with the same certificate: the same population.
        let far = IpAddr::from([192, 0, 2, 1]);
        assert_eq!(p.observe(443, far, Some("cert-a"), "t13d_box"), None);
        assert_eq!(p.observe(443, far, Some("cert-a"), "t13d_box"), None);
        assert_eq!(p.observe(443, far, Some("cert-a"), "t13d_box"), Some(3));
        // The same network without a certificate is another one, still learning.
        assert_eq!(p.observe(443, far, None, "t13d_box"), None);
    }

    #[test]
    fn populations_are_bounded() {
        let mut p = Populations::new(8);
        for i in 0..=255u8 {
            for f in 0..40 {
                p.observe(443, IpAddr::from([10, i, 0, 1]), None, &format!("f{f}"));
            }
        }
        assert_eq!(p.networks.len(), 8);
        assert!(
            p.networks
                .iter()
                .all(|(_, n)| n.known.len() <= KNOWN_PER_NETWORK)
        );
    }

    #[test]
    fn the_counter_is_bounded_in_clients_and_times() {
        let mut idle = IdleCounter::new(IdleRule::default(), 4);
        for i in 0..100u8 {
            let addr = IpAddr::from([10, 0, 0, i]);
            for t in 0..100 {
                idle.count(addr, CURL, t * SECOND);
            }
        }
        assert_eq!(idle.recent.len(), 4);
        assert!(idle.recent.iter().all(|(_, r)| r.idle.len() <= MAX_TIMES));
    }

    #[test]
    fn a_browser_user_agent_over_another_handshake_is_intercepted() {
        let t = trust();
        let mut idle = IdleCounter::new(IdleRule::default(), 16);
        let mut pops = Populations::new(16);
        let mut ev = inbound(CURL, false, SECOND);
        ev.handshake.request = Some(crate::event::RequestHead {
            line: "GET / HTTP/1.1".into(),
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0.0.0".into()),
            http2: false,
        });
        ev.handshake.client_offer = Some(crate::event::ClientOffer {
            grease: false,
            ..crate::event::ClientOffer::default()
        });
        let j = judge_(&t, &mut idle, &mut pops, &ev);
        assert_eq!(j.verdict, Verdict::Intercepted);
        assert_eq!(
            j.reasons,
            [Reason::UaFingerprintMismatch("chromium".into())]
        );
        assert_eq!(j.severity, Severity::High);
        // The same with GREASE in the handshake is Chrome's own.
        ev.handshake.client_offer.as_mut().unwrap().grease = true;
        let j = judge_(&t, &mut idle, &mut pops, &ev);
        assert_eq!(j.verdict, Verdict::Clean);
        assert!(j.reasons.is_empty());
    }

    #[test]
    fn a_client_that_refused_the_server_s_certificate_is_said() {
        let t = trust();
        let mut idle = IdleCounter::new(IdleRule::default(), 16);
        let mut ev = inbound(CURL, false, SECOND);
        ev.handshake.client_outcome = ClientOutcome::Rejected;
        ev.handshake.alert = Some(Alert::from_wire(2, 48));
        let j = judge_(&t, &mut idle, &mut Populations::new(16), &ev);
        assert_eq!(j.verdict, Verdict::Clean);
        assert_eq!(j.reasons, [Reason::ClientRejected(Rejection::Alert(48))]);
        assert_eq!(j.severity, Severity::Medium);
        assert!(j.explanation.contains("unknown_ca"), "{}", j.explanation);
    }
}
