//! The server's view: an inbound handshake (the local process is the server) is judged on the
//! client's behaviour, for the server's operator. Its own certificate is the operator's and
//! says nothing about who connected; what does:
//!
//! - the ClientHello is one an interception product sends itself (the catalogue's
//!   `client_ja4`): `interceptor_fingerprint:<id>`, `intercepted`;
//! - the client completed the handshake and sent no request before the connection ended
//!   (`idle_after_handshake`), and does so repeatedly from one address with one fingerprint
//!   (`idle_after_handshake_repeated`): what an interceptor leaves behind on a server when its
//!   own client refused its forged certificate, and what the server logs as HTTP 408s;
//! - the client refused the server's certificate with an alert (`client_rejected:<alert>`).
//!
//! Without a fingerprint match the verdict is `clean`: the weaker signals raise the severity
//! and say what they suggest, but an idle client is not proof of a man in the middle.

use std::net::IpAddr;

use hashlink::LruCache;

use crate::{
    event::{ClientOutcome, Event, Interceptor, Judgement, Reason, Rejection, Severity, Verdict},
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

/// Recent idle handshakes per (client address, JA4): bounded in keys, and each key keeps at
/// most `threshold` times.
pub struct IdleCounter {
    rule: IdleRule,
    recent: LruCache<(IpAddr, String), Vec<u64>>,
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

    /// Count an idle handshake at `time_ns`; how many from this client with this fingerprint
    /// fall in the window now (this one included), up to the threshold.
    pub fn count(&mut self, client: IpAddr, ja4: &str, time_ns: u64) -> u32 {
        let from = time_ns.saturating_sub(self.rule.window_ns);
        let key = (client, ja4.to_owned());
        let times = match self.recent.get_mut(&key) {
            Some(t) => t,
            None => {
                self.recent.insert(key.clone(), Vec::new());
                match self.recent.get_mut(&key) {
                    Some(t) => t,
                    None => return 1,
                }
            }
        };
        times.retain(|&t| t >= from && t <= time_ns);
        times.push(time_ns);
        let keep = self.rule.threshold.max(1) as usize;
        if times.len() > keep {
            let cut = times.len() - keep;
            times.drain(..cut);
        }
        times.len() as u32
    }
}

/// Judge an inbound handshake.
pub fn judge(catalogue: &Catalogue, idle: &mut IdleCounter, event: &Event) -> Judgement {
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
    if hs.idle_after_handshake {
        reasons.push(Reason::IdleAfterHandshake);
        severity = severity.max(Severity::Low);
        let seen = match (hs.src_addr, hs.ja4.as_deref()) {
            (Some(addr), Some(ja4)) => idle.count(addr, ja4, hs.time.0),
            _ => 1,
        };
        let rule = idle.rule();
        if seen >= rule.threshold {
            reasons.push(Reason::IdleAfterHandshakeRepeated);
            severity = severity.max(Severity::Medium);
            sentences.push(format!(
                "{seen} connections from {client} with this client fingerprint completed TLS \
                 and sent no request within {} minutes; your server logs them as timeouts \
                 (HTTP 408). The usual cause is an interception device: it completes the \
                 handshake with your server for its client, the client refuses the device's \
                 certificate, and the device's connection to you stays silent.",
                rule.window_ns / 60_000_000_000
            ));
        } else {
            sentences.push(
                "The client completed the handshake and sent no request before the connection \
                 ended."
                    .into(),
            );
        }
    }
    let verdict = if product.is_some() {
        Verdict::Intercepted
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
        interceptor_grade: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Alert, Handshake, Process, Role, Timestamp};

    const SECOND: u64 = 1_000_000_000;

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
        let j = judge(&t, &mut idle, &inbound(MITMPROXY, false, SECOND));
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
        let j = judge(&t, &mut idle, &inbound(CURL, false, SECOND));
        assert_eq!(j.verdict, Verdict::Clean);
        assert!(j.reasons.is_empty());
        assert_eq!(j.severity, Severity::Info);
    }

    #[test]
    fn idle_handshakes_become_a_pattern_at_the_threshold_within_the_window() {
        let t = trust();
        let mut idle = IdleCounter::new(IdleRule::default(), 16);
        let first = judge(&t, &mut idle, &inbound(CURL, true, SECOND));
        assert_eq!(first.verdict, Verdict::Clean);
        assert_eq!(first.reasons, [Reason::IdleAfterHandshake]);
        assert_eq!(first.severity, Severity::Low);
        let _ = judge(&t, &mut idle, &inbound(CURL, true, 2 * SECOND));
        let third = judge(&t, &mut idle, &inbound(CURL, true, 3 * SECOND));
        assert_eq!(
            third.reasons,
            [
                Reason::IdleAfterHandshake,
                Reason::IdleAfterHandshakeRepeated
            ]
        );
        assert_eq!(third.severity, Severity::Medium);
        assert!(third.explanation.contains("408"), "{}", third.explanation);
        // Another fingerprint from the same address counts apart.
        let other = judge(&t, &mut idle, &inbound(MITMPROXY, true, 4 * SECOND));
        assert!(!other.has(&Reason::IdleAfterHandshakeRepeated));
        assert_eq!(other.verdict, Verdict::Intercepted);
        // Outside the window the count starts again.
        let later = judge(&t, &mut idle, &inbound(CURL, true, 1_000 * SECOND));
        assert_eq!(later.reasons, [Reason::IdleAfterHandshake]);
    }

    #[test]
    fn the_counter_is_bounded_in_clients_and_times() {
        let mut idle = IdleCounter::new(IdleRule::default(), 4);
        for i in 0..100u8 {
            let addr = IpAddr::from([10, 0, 0, i]);
            for t in 0..10 {
                idle.count(addr, CURL, t * SECOND);
            }
        }
        assert_eq!(idle.recent.len(), 4);
        assert!(idle.recent.iter().all(|(_, t)| t.len() <= 3));
    }

    #[test]
    fn a_client_that_refused_the_server_s_certificate_is_said() {
        let t = trust();
        let mut idle = IdleCounter::new(IdleRule::default(), 16);
        let mut ev = inbound(CURL, false, SECOND);
        ev.handshake.client_outcome = ClientOutcome::Rejected;
        ev.handshake.alert = Some(Alert::from_wire(2, 48));
        let j = judge(&t, &mut idle, &ev);
        assert_eq!(j.verdict, Verdict::Clean);
        assert_eq!(j.reasons, [Reason::ClientRejected(Rejection::Alert(48))]);
        assert_eq!(j.severity, Severity::Medium);
        assert!(j.explanation.contains("unknown_ca"), "{}", j.explanation);
    }
}
