//! The active probe in the daemon: a TLS 1.3 handshake whose chain nobody saw waits here while
//! sensord connects to the same destination (same SNI, same ALPN, through the same proxy, from
//! the client's network namespace) and records the chain it is shown.
//!
//! The daemon's own connections are never reported: the kernel tap ignores sockets whose
//! first segment the daemon's tgid sends, and the connect-time attribution skips them too.

use std::{collections::HashMap, net::IpAddr, sync::Arc, time::Duration};

use tokio::sync::mpsc;

use crate::{
    config::ProbeConfig,
    event::Handshake,
    probe::{
        self, ProbeOptions, Proxy, Target,
        schedule::{Decision, Limits, Outcome, ProbeKey, ScheduleStats, Scheduler},
    },
    x509::SummaryCache,
};

/// Handshakes waiting for probes, at most.
const MAX_WAITING: usize = 4096;

/// What happened to a handshake's probe, for its reasons once the verdict is made.
#[derive(Clone, Debug)]
pub enum Note {
    /// Not a handshake the probe is for.
    None,
    /// The chain came from a probe (fresh or cached).
    Chain,
    Failed {
        cause: &'static str,
        detail: String,
    },
    Skipped(&'static str),
}

impl Note {
    /// Add the note to a judged handshake.
    pub fn apply(&self, hs: &mut Handshake) {
        match self {
            Self::None => {}
            Self::Chain => {
                if let Some(e) = hs.explanation.as_mut() {
                    e.push_str(
                        " TLS 1.3 hid the client's certificate; this chain comes from sensord's own \
                         connection to the same server with the same name.",
                    );
                }
            }
            Self::Failed { cause, detail } => {
                hs.reasons.push(format!("probe_failed:{cause}"));
                if let Some(e) = hs.explanation.as_mut() {
                    e.push_str(&format!(
                        " An active check from this host failed: {detail}."
                    ));
                }
            }
            Self::Skipped(why) => hs.reasons.push(format!("probe_skipped:{why}")),
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
    enabled: bool,
    timeout: Duration,
    scheduler: Scheduler,
    waiting: HashMap<ProbeKey, Vec<Handshake>>,
    waiting_count: usize,
    tx: mpsc::UnboundedSender<(ProbeKey, Outcome)>,
    summaries: SummaryCache,
}

fn limits(cfg: &ProbeConfig) -> Limits {
    Limits {
        ttl_ns: cfg.cache_ttl_secs.saturating_mul(1_000_000_000),
        max_per_second: cfg.max_per_second,
        max_per_destination_per_minute: cfg.max_per_destination_per_minute,
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

    /// A new configuration (a reload). Probes under way finish; the cache starts afresh.
    pub fn reconfigure(&mut self, cfg: &ProbeConfig) {
        self.enabled = cfg.enabled;
        self.timeout = Duration::from_secs(cfg.timeout_secs.max(1));
        self.scheduler = Scheduler::new(limits(cfg));
    }

    pub fn stats(&self) -> ScheduleStats {
        self.scheduler.stats
    }

    /// Whether a handshake wants a probe, and with what.
    fn request(&self, hs: &Handshake) -> Option<(ProbeKey, Request)> {
        if !self.enabled || hs.tls_version != Some("1.3") || !hs.chain.is_empty() {
            return None;
        }
        // A local server answering a remote client: probing ourselves tells nothing.
        if hs.process.as_ref().and_then(|p| p.role) == Some("server") {
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
        let netns = hs.process.as_ref().and_then(|p| p.netns.clone());
        let key = ProbeKey {
            sni: hs.server_name.clone(),
            addr,
            port: hs.dst_port,
            via,
            netns: netns.as_ref().map(|n| n.inode),
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
        };
        Some((key, Request { target, opts }))
    }

    /// Take a handshake from the engine: it comes back at once (with a chain from the cache,
    /// or with nothing to probe), or later from [`Prober::complete`].
    pub fn submit(&mut self, mut hs: Handshake, now: u64) -> Option<(Handshake, Note)> {
        let Some((key, request)) = self.request(&hs) else {
            return Some((hs, Note::None));
        };
        match self.scheduler.decide(&key, now) {
            Decision::Cached(outcome) => {
                let note = self.fill(&mut hs, &outcome);
                Some((hs, note))
            }
            Decision::Excluded => Some((hs, Note::None)),
            Decision::RateLimited => Some((hs, Note::Skipped("rate_limit"))),
            Decision::Wait | Decision::Start if self.waiting_count >= MAX_WAITING => {
                Some((hs, Note::Skipped("busy")))
            }
            Decision::Wait => {
                self.park(key, hs);
                None
            }
            Decision::Start => {
                self.park(key.clone(), hs);
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let outcome = match probe::probe(&request.target, &request.opts).await {
                        Ok(p) => Outcome::Chain {
                            chain: Arc::new(p.chain),
                            tls_version: p.tls_version,
                        },
                        Err(e) => Outcome::Failed {
                            cause: e.cause(),
                            detail: e.to_string(),
                        },
                    };
                    let _ = tx.send((key, outcome));
                });
                None
            }
        }
    }

    fn park(&mut self, key: ProbeKey, hs: Handshake) {
        self.waiting_count += 1;
        self.waiting.entry(key).or_default().push(hs);
    }

    /// A probe ended: the handshakes that waited for it, with its chain.
    pub fn complete(
        &mut self,
        key: &ProbeKey,
        outcome: Outcome,
        now: u64,
    ) -> Vec<(Handshake, Note)> {
        self.scheduler.finish(key, outcome.clone(), now);
        let waiting = self.waiting.remove(key).unwrap_or_default();
        self.waiting_count = self.waiting_count.saturating_sub(waiting.len());
        waiting
            .into_iter()
            .map(|mut hs| {
                let note = self.fill(&mut hs, &outcome);
                (hs, note)
            })
            .collect()
    }

    /// Everything still waiting (sensord is stopping).
    pub fn abandon(&mut self) -> Vec<(Handshake, Note)> {
        self.waiting_count = 0;
        self.waiting
            .drain()
            .flat_map(|(_, v)| v)
            .map(|hs| (hs, Note::Skipped("shutdown")))
            .collect()
    }

    fn fill(&mut self, hs: &mut Handshake, outcome: &Outcome) -> Note {
        match outcome {
            Outcome::Chain { chain, .. } => {
                let mut summaries = Vec::with_capacity(chain.len());
                for der in chain.iter() {
                    match self.summaries.summarize(der.as_ref()) {
                        Ok(s) => summaries.push(s),
                        Err(e) => {
                            return Note::Failed {
                                cause: "bad_certificate",
                                detail: format!("the server's certificate does not parse: {e}"),
                            };
                        }
                    }
                }
                hs.chain = summaries;
                hs.chain_source = Some("probe");
                Note::Chain
            }
            Outcome::Failed { cause, detail } => Note::Failed {
                cause,
                detail: detail.clone(),
            },
        }
    }
}
