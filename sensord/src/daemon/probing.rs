//! The active probe in the daemon: a TLS 1.3 handshake whose chain nobody saw waits here while
//! sensord connects to the same destination (same SNI, same ALPN, through the same proxy, from
//! the client's network namespace) and records the chain it is shown.
//!
//! The daemon's own connections are never reported: the kernel tap ignores sockets whose
//! first segment the daemon's tgid sends, and the connect-time attribution skips them too.

use std::{collections::HashMap, net::IpAddr, sync::Arc, time::Duration};

use sensor_core::{
    event::{
        ChainSource, Event, ProbeFailure, ProbeSkip, Reason, Role, Severity, TlsVersion, Transport,
        Verdict,
    },
    probe::schedule::{Decision, Limits, Outcome, ProbeKey, Requester, ScheduleStats, Scheduler},
    x509::SummaryCache,
};
use sensor_host::{
    config::ProbeConfig,
    probe::{self, Netns, ProbeOptions, Proxy, Target},
};
use tokio::sync::mpsc;

/// An event on its way: judged now, or after its probe.
#[derive(Clone, Debug)]
pub struct Pending {
    pub event: Event,
    /// The client's network namespace when it is not sensord's, for the probe.
    pub netns: Option<Netns>,
}

/// Handshakes waiting for probes, at most.
const MAX_WAITING: usize = 4096;

/// What happened to a handshake's probe, for its reasons once the verdict is made.
#[derive(Clone, Debug)]
pub enum Note {
    /// Not a handshake the probe is for.
    None,
    /// The chain came from a probe (fresh or cached). When the probe's encrypted server flight
    /// differs clearly in size from the one the client received: (client's, probe's).
    Chain {
        differs: Option<(u64, u64)>,
    },
    Failed {
        cause: ProbeFailure,
        detail: String,
    },
    Skipped(ProbeSkip),
}

impl Note {
    /// Add the note to a judged event.
    pub fn apply(&self, event: &mut Event) {
        let Some(j) = event.judgement.as_mut() else {
            return;
        };
        let unseen = j.verdict == Verdict::Unverified;
        match self {
            Self::None => {}
            Self::Chain { differs } => {
                j.explanation.push_str(
                    " The sensor could not see the client's certificate; this chain comes from \
                     sensord's own connection to the same server with the same name.",
                );
                if let Some((client, probe)) = differs {
                    // The probe was shown something else than the client: its chain says
                    // nothing about the client's, and clean it is not.
                    j.reasons.push(Reason::ProbeChainDiffers);
                    j.severity = j.severity.max(Severity::Medium);
                    if j.verdict == Verdict::Clean {
                        j.verdict = Verdict::Unverified;
                    }
                    j.explanation.push_str(&format!(
                        " But the server's encrypted flight was {client} bytes for the client \
                         and {probe} for sensord: the client was likely shown another \
                         certificate, as an interceptor that lets the sensor's own connection \
                         through would do."
                    ));
                }
            }
            Self::Failed { cause, detail } => {
                j.reasons.push(Reason::ProbeFailed(*cause));
                j.explanation.push_str(&format!(
                    " An active check from this host failed: {detail}."
                ));
                if unseen {
                    j.severity = j.severity.max(Severity::Medium);
                }
            }
            Self::Skipped(why) => {
                j.reasons.push(Reason::ProbeSkipped(*why));
                if unseen {
                    j.severity = j.severity.max(Severity::Medium);
                }
            }
        }
    }
}

/// One probe to run.
struct Request {
    target: Target,
    opts: ProbeOptions,
}

/// The daemon's probe state.
pub struct Prober {
    /// The settings in force.
    cfg: ProbeConfig,
    /// sensord is stopping: nothing new is probed.
    stopping: bool,
    enabled: bool,
    timeout: Duration,
    scheduler: Scheduler,
    waiting: HashMap<ProbeKey, Vec<Pending>>,
    waiting_count: usize,
    tx: mpsc::UnboundedSender<(ProbeKey, Outcome)>,
    summaries: SummaryCache,
}

fn limits(cfg: &ProbeConfig) -> Limits {
    Limits {
        ttl_ns: cfg.cache_ttl_secs.saturating_mul(1_000_000_000),
        max_per_second: cfg.max_per_second,
        max_per_destination_per_minute: cfg.max_per_destination_per_minute,
        max_per_uid_per_second: cfg.max_per_uid_per_second,
        max_per_cgroup_per_second: cfg.max_per_cgroup_per_second,
        exclude: cfg.exclude.clone(),
        cache_entries: 8192,
    }
}

impl Prober {
    /// The prober, and where finished probes report.
    pub fn new(cfg: &ProbeConfig) -> (Self, mpsc::UnboundedReceiver<(ProbeKey, Outcome)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                cfg: cfg.clone(),
                stopping: false,
                enabled: cfg.enabled,
                timeout: Duration::from_secs(cfg.timeout_secs.max(1)),
                scheduler: Scheduler::new(limits(cfg)),
                waiting: HashMap::new(),
                waiting_count: 0,
                tx,
                summaries: SummaryCache::new(1024),
            },
            rx,
        )
    }

    /// A new configuration (a reload). Probes under way finish; the cache starts afresh, but
    /// the probes started lately still count against the new limits and quotas, so that a
    /// reload never resets them. The same settings again change nothing (the cache stays).
    pub fn reconfigure(&mut self, cfg: &ProbeConfig) {
        if *cfg == self.cfg {
            return;
        }
        self.cfg = cfg.clone();
        self.enabled = cfg.enabled;
        self.timeout = Duration::from_secs(cfg.timeout_secs.max(1));
        self.scheduler.reconfigure(limits(cfg));
    }

    pub fn stats(&self) -> ScheduleStats {
        self.scheduler.stats
    }

    /// Whether an event wants a probe, and with what.
    fn request(&self, p: &Pending) -> Option<(ProbeKey, Request)> {
        let hs = &p.event.handshake;
        // TLS 1.3 hides the chain; a resumed session sends none (an interceptor's session
        // resumed after sensord started would otherwise never show its chain); a capture that
        // lost part of the handshake may have missed it, whatever the version.
        let hidden = hs.tls_version == Some(TlsVersion::Tls13)
            || hs.resumed
            || !hs.capture_incomplete.is_empty();
        if !self.enabled || !hidden || !hs.chain.is_empty() {
            return None;
        }
        // A local server answering a remote client: probing ourselves tells nothing.
        if p.event.process.as_ref().map(|p| p.role) == Some(Role::Server) {
            return None;
        }
        let addr: IpAddr = hs.dst_addr?;
        let via = hs.proxy_connect.clone();
        let (target, proxy) = match &via {
            Some(authority) => (
                authority.parse::<Target>().ok()?,
                Some(Proxy {
                    host: addr.to_string(),
                    port: hs.dst_port,
                }),
            ),
            None => (
                Target {
                    host: addr.to_string(),
                    port: hs.dst_port,
                },
                None,
            ),
        };
        // The client's own namespace when it is not ours (held open since its connect).
        let netns = p.netns.clone();
        let key = ProbeKey {
            sni: hs.server_name.clone(),
            addr,
            port: hs.dst_port,
            via,
            netns: netns.as_ref().map(|n| n.inode),
            client: hs.ja4.clone(),
        };
        let opts = ProbeOptions {
            sni: hs.server_name.clone(),
            proxy,
            timeout: self.timeout,
            alpn: hs
                .client_alpn
                .iter()
                .map(|a| a.as_bytes().to_vec())
                .collect(),
            netns,
            offer: hs.client_offer.clone(),
            user_agent: hs.proxy_user_agent.clone(),
            quic: hs.transport == Transport::Quic,
        };
        Some((key, Request { target, opts }))
    }

    /// Take an attributed event: it comes back at once (with a chain from the cache, or with
    /// nothing to probe), or later from [`Prober::complete`].
    pub fn submit(&mut self, mut p: Pending, now: u64) -> Option<(Event, Note)> {
        let Some((key, request)) = self.request(&p) else {
            return Some((p.event, Note::None));
        };
        if self.stopping {
            return Some((p.event, Note::Skipped(ProbeSkip::Shutdown)));
        }
        let who = p
            .event
            .process
            .as_ref()
            .map_or_else(Requester::default, |p| Requester {
                uid: p.uid,
                cgroup: p.cgroup.clone(),
            });
        match self.scheduler.decide(&key, &who, now) {
            Decision::Cached(outcome) => {
                let note = self.fill(&mut p.event, &outcome);
                Some((p.event, note))
            }
            Decision::Excluded => Some((p.event, Note::None)),
            Decision::RateLimited => Some((p.event, Note::Skipped(ProbeSkip::RateLimit))),
            // As loud as a rate limit: the handshake stays unverified, at least medium.
            Decision::OverQuota(_) => Some((p.event, Note::Skipped(ProbeSkip::Quota))),
            Decision::Wait | Decision::Start if self.waiting_count >= MAX_WAITING => {
                // A probe not started must not stay "running": its key's later handshakes
                // would wait for it, with no event, for ever.
                self.scheduler.cancel(&key);
                Some((p.event, Note::Skipped(ProbeSkip::Busy)))
            }
            Decision::Wait => {
                self.park(key, p);
                None
            }
            Decision::Start => {
                self.park(key.clone(), p);
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    // The probe in a task of its own: should it panic, its handshakes still
                    // get an outcome (and an event) instead of waiting for ever.
                    let run =
                        tokio::spawn(
                            async move { probe::probe(&request.target, &request.opts).await },
                        );
                    let outcome = match run.await {
                        Ok(Ok(p)) => Outcome::Chain {
                            chain: Arc::new(p.chain),
                            flight_bytes: p.flight_bytes,
                        },
                        Ok(Err(e)) => Outcome::Failed {
                            cause: e.cause(),
                            detail: e.to_string(),
                        },
                        Err(e) => Outcome::Failed {
                            cause: ProbeFailure::Setup,
                            detail: format!("the probe stopped: {e}"),
                        },
                    };
                    let _ = tx.send((key, outcome));
                });
                None
            }
        }
    }

    fn park(&mut self, key: ProbeKey, p: Pending) {
        self.waiting_count += 1;
        self.waiting.entry(key).or_default().push(p);
    }

    /// A probe ended: the handshakes that waited for it, with its chain.
    pub fn complete(&mut self, key: &ProbeKey, outcome: Outcome, now: u64) -> Vec<(Event, Note)> {
        self.scheduler.finish(key, outcome.clone(), now);
        let waiting = self.waiting.remove(key).unwrap_or_default();
        self.waiting_count = self.waiting_count.saturating_sub(waiting.len());
        waiting
            .into_iter()
            .map(|p| {
                let mut event = p.event;
                let note = self.fill(&mut event, &outcome);
                (event, note)
            })
            .collect()
    }

    /// sensord is stopping: what waits is given up, and nothing new is probed.
    pub fn abandon(&mut self) -> Vec<(Event, Note)> {
        self.stopping = true;
        self.waiting_count = 0;
        self.waiting
            .drain()
            .flat_map(|(_, v)| v)
            .map(|p| (p.event, Note::Skipped(ProbeSkip::Shutdown)))
            .collect()
    }

    fn fill(&mut self, event: &mut Event, outcome: &Outcome) -> Note {
        match outcome {
            Outcome::Chain {
                chain,
                flight_bytes,
                ..
            } => {
                let mut summaries = Vec::with_capacity(chain.len());
                for der in chain.iter() {
                    match self.summaries.summarize(der.as_ref()) {
                        Ok(s) => summaries.push(s),
                        Err(e) => {
                            return Note::Failed {
                                cause: ProbeFailure::BadCertificate,
                                detail: format!("the server's certificate does not parse: {e}"),
                            };
                        }
                    }
                }
                event.handshake.chain = summaries;
                event.handshake.chain_source = Some(ChainSource::Probe);
                let client = event.handshake.server_encrypted_flight_bytes;
                Note::Chain {
                    differs: client
                        .zip(*flight_bytes)
                        .filter(|&(c, p)| flights_differ(c, p)),
                }
            }
            Outcome::Failed { cause, detail } => Note::Failed {
                cause: *cause,
                detail: detail.clone(),
            },
        }
    }
}

/// Whether two encrypted server flights clearly differ: by more than a quarter and by more than
/// 512 bytes. The same server shows two clients of the same kind flights within a few bytes
/// of each other (signature sizes, extensions); another chain changes it by a certificate.
fn flights_differ(client: u64, probe: u64) -> bool {
    let diff = client.abs_diff(probe);
    diff > 512 && diff * 4 > client.max(probe)
}

#[cfg(test)]
mod tests {
    use sensor_core::{
        event::{Handshake, Process, Role},
        trust::{Catalogue, Pins, Store, TrustContext},
        verdict::VerdictEngine,
    };

    use super::*;

    /// A TLS 1.3 handshake of `uid` whose chain nobody saw: one the probe is for.
    fn hidden(uid: u32) -> Pending {
        let mut event = Event::observed(Handshake {
            tls_version: Some(TlsVersion::Tls13),
            server_name: Some("quota.test".into()),
            dst_addr: Some(IpAddr::from([192, 0, 2, 1])),
            dst_port: 443,
            ..Handshake::default()
        });
        event.process = Some(Process {
            uid: Some(uid),
            cgroup: Some(format!("/user.slice/user-{uid}.slice/session-1.scope")),
            ..Process::new(Role::Client)
        });
        Pending { event, netns: None }
    }

    fn judged(event: Event, note: &Note) -> Event {
        let mozilla = Arc::new(Store::mozilla());
        let mut verdicts = VerdictEngine::new(Arc::new(TrustContext {
            generation: 1,
            host: mozilla.clone(),
            public: mozilla,
            pins: Pins::default(),
            catalogue: Arc::new(Catalogue::default()),
            approved: Vec::new(),
        }));
        let mut event = event;
        verdicts.apply(&mut event);
        note.apply(&mut event);
        event
    }

    #[test]
    fn a_probe_refused_by_a_quota_ends_as_loudly_as_a_rate_limited_one() {
        let (mut quota, _rx) = Prober::new(&ProbeConfig {
            max_per_uid_per_second: 0,
            ..ProbeConfig::default()
        });
        let Some((event, note)) = quota.submit(hidden(1000), 0) else {
            panic!("a refused probe must give its event back at once");
        };
        assert!(matches!(note, Note::Skipped(ProbeSkip::Quota)), "{note:?}");
        assert_eq!(quota.stats().over_uid_quota, 1);
        let skipped = judged(event, &note);
        let j = skipped.judgement.as_ref().unwrap();
        assert_eq!(j.verdict, Verdict::Unverified);
        assert!(j.has(&Reason::ProbeSkipped(ProbeSkip::Quota)), "{j:?}");
        assert!(j.severity >= Severity::Medium, "{j:?}");

        let (mut limited, _rx) = Prober::new(&ProbeConfig {
            max_per_second: 0,
            ..ProbeConfig::default()
        });
        let (event, note) = limited.submit(hidden(1000), 0).unwrap();
        assert!(
            matches!(note, Note::Skipped(ProbeSkip::RateLimit)),
            "{note:?}"
        );
        let rate_limited = judged(event, &note);
        assert_eq!(
            rate_limited.judgement.as_ref().unwrap().severity,
            j.severity
        );
    }

    #[test]
    fn flight_sizes_that_differ() {
        assert!(!super::flights_differ(2900, 3000));
        assert!(
            !super::flights_differ(400, 800),
            "small flights: under 512 bytes apart"
        );
        assert!(
            super::flights_differ(1100, 2900),
            "a leaf instead of leaf + intermediate"
        );
        assert!(super::flights_differ(6000, 3000));
    }
}
