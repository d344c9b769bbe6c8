//! When the daemon may probe: a result cache with a TTL, a global and a per-destination rate
//! limit, exclusions, and one probe at a time per destination. Pure: time comes in as
//! nanoseconds, nothing here does I/O.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use hashlink::LruCache;
use rustls_pki_types::CertificateDer;

use crate::event::ProbeFailure;

/// What a probe is keyed by: the same server name at the same place gives the same answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProbeKey {
    pub sni: Option<String>,
    /// Where the client connected: the server, or its HTTP proxy.
    pub addr: IpAddr,
    pub port: u16,
    /// The CONNECT target, when the client went through a proxy.
    pub via: Option<String>,
    /// The client's network namespace (inode) when it is not sensord's: the same address
    /// may lead elsewhere from there.
    pub netns: Option<u64>,
    /// The client's fingerprint (JA4): the probe offers what the client offered, and an
    /// interceptor may treat kinds of clients differently, so a result holds for that kind of
    /// client only.
    pub client: Option<String>,
}

/// A probe's result, shared by every handshake that waited for it or finds it cached.
#[derive(Clone, Debug)]
pub enum Outcome {
    Chain {
        chain: Arc<Vec<CertificateDer<'static>>>,
        /// Bytes of the server's encrypted flight the probe received (record payloads, as the
        /// engine counts the client's; 0 for TLS 1.2).
        flight_bytes: Option<u64>,
    },
    /// Why the probe saw no chain, in a word and in full.
    Failed { cause: ProbeFailure, detail: String },
}

/// What to do with a handshake that wants a probe.
#[derive(Clone, Debug)]
pub enum Decision {
    /// Use this recent result.
    Cached(Outcome),
    /// A probe for this key is running: wait for it.
    Wait,
    /// Start one (the caller reports its outcome with [`Scheduler::finish`]).
    Start,
    /// The configuration excludes the destination.
    Excluded,
    /// Too many probes lately (overall or to this destination).
    RateLimited,
}

/// Limits, from the configuration.
#[derive(Clone, Debug)]
pub struct Limits {
    pub ttl_ns: u64,
    pub max_per_second: u32,
    pub max_per_destination_per_minute: u32,
    /// Host globs (matched against the SNI) and addresses.
    pub exclude: Vec<String>,
    /// Cache entries at most.
    pub cache_entries: usize,
}

const SECOND: u64 = 1_000_000_000;
const MINUTE: u64 = 60 * SECOND;

/// The scheduler's state.
pub struct Scheduler {
    limits: Limits,
    excluded_addrs: Vec<IpAddr>,
    excluded_names: Vec<wildmatch::WildMatch>,
    cache: LruCache<ProbeKey, (u64, Outcome)>,
    running: HashMap<ProbeKey, u64>,
    /// Start times of the probes of the last second, overall.
    recent: std::collections::VecDeque<u64>,
    /// Start times of the last minute, per destination (address and port) and kind of client.
    per_destination: LruCache<(IpAddr, u16, Option<String>), Vec<u64>>,
    pub stats: ScheduleStats,
}

/// Counters, for status and metrics.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ScheduleStats {
    pub started: u64,
    pub cached: u64,
    pub waited: u64,
    pub excluded: u64,
    pub rate_limited: u64,
    pub failed: u64,
}

impl Scheduler {
    pub fn new(limits: Limits) -> Self {
        let mut excluded_addrs = Vec::new();
        let mut excluded_names = Vec::new();
        for e in &limits.exclude {
            match e.parse::<IpAddr>() {
                Ok(a) => excluded_addrs.push(a),
                Err(_) => excluded_names.push(wildmatch::WildMatch::new(&e.to_ascii_lowercase())),
            }
        }
        Self {
            cache: LruCache::new(limits.cache_entries.max(1)),
            per_destination: LruCache::new(4096),
            limits,
            excluded_addrs,
            excluded_names,
            running: HashMap::new(),
            recent: std::collections::VecDeque::new(),
            stats: ScheduleStats::default(),
        }
    }

    fn excluded(&self, key: &ProbeKey) -> bool {
        self.excluded_addrs.contains(&key.addr)
            || key.sni.as_deref().is_some_and(|sni| {
                let sni = sni.to_ascii_lowercase();
                self.excluded_names.iter().any(|g| g.matches(&sni))
            })
    }

    /// Decide for one handshake at `now`. A cached outcome answers the same kind of client
    /// (its fingerprint is part of the key): a destination's result does not carry over to
    /// clients that offer something else.
    pub fn decide(&mut self, key: &ProbeKey, now: u64) -> Decision {
        if self.excluded(key) {
            self.stats.excluded += 1;
            return Decision::Excluded;
        }
        if let Some((expires, outcome)) = self.cache.get(key)
            && *expires > now
        {
            self.stats.cached += 1;
            return Decision::Cached(outcome.clone());
        }
        if self.running.contains_key(key) {
            self.stats.waited += 1;
            return Decision::Wait;
        }
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= SECOND)
        {
            self.recent.pop_front();
        }
        let dest = (key.addr, key.port, key.client.clone());
        let per_dest_full = self.per_destination.get_mut(&dest).is_some_and(|v| {
            v.retain(|t| now.saturating_sub(*t) < MINUTE);
            v.len() >= self.limits.max_per_destination_per_minute as usize
        });
        if self.recent.len() >= self.limits.max_per_second as usize || per_dest_full {
            self.stats.rate_limited += 1;
            return Decision::RateLimited;
        }
        self.recent.push_back(now);
        match self.per_destination.get_mut(&dest) {
            Some(v) => v.push(now),
            None => {
                self.per_destination.insert(dest, vec![now]);
            }
        }
        self.running.insert(key.clone(), now);
        self.stats.started += 1;
        Decision::Start
    }

    /// A probe that [`Scheduler::decide`] started will not run after all (nowhere to park
    /// its handshakes): handshakes of its key must not wait for it.
    pub fn cancel(&mut self, key: &ProbeKey) {
        self.running.remove(key);
    }

    /// A probe ended: cache its outcome. Failures are cached too, so that an unreachable
    /// destination is not hammered.
    pub fn finish(&mut self, key: &ProbeKey, outcome: Outcome, now: u64) {
        self.running.remove(key);
        if matches!(outcome, Outcome::Failed { .. }) {
            self.stats.failed += 1;
        }
        let ttl = match outcome {
            Outcome::Chain { .. } => self.limits.ttl_ns,
            // A failure is retried sooner: a minute, or the TTL if shorter.
            Outcome::Failed { .. } => self.limits.ttl_ns.min(MINUTE),
        };
        self.cache
            .insert(key.clone(), (now.saturating_add(ttl), outcome));
    }

    /// Probes running now.
    pub fn running(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            ttl_ns: 3600 * SECOND,
            max_per_second: 3,
            max_per_destination_per_minute: 2,
            exclude: vec!["*.internal.test".into(), "192.0.2.9".into()],
            cache_entries: 100,
        }
    }

    fn key(sni: &str, last: u8) -> ProbeKey {
        ProbeKey {
            sni: Some(sni.into()),
            addr: IpAddr::from([192, 0, 2, last]),
            port: 443,
            via: None,
            netns: None,
            client: None,
        }
    }

    fn chain() -> Outcome {
        Outcome::Chain {
            chain: Arc::new(vec![CertificateDer::from(vec![1u8, 2, 3])]),
            flight_bytes: None,
        }
    }

    #[test]
    fn one_probe_per_key_then_the_cache() {
        let mut s = Scheduler::new(limits());
        let k = key("a.test", 1);
        assert!(matches!(s.decide(&k, 0), Decision::Start));
        assert!(matches!(s.decide(&k, 1), Decision::Wait));
        s.finish(&k, chain(), 2);
        assert!(matches!(
            s.decide(&k, 3),
            Decision::Cached(Outcome::Chain { .. })
        ));
        // After the TTL, a new probe (the rate limits allow it a minute later).
        assert!(matches!(s.decide(&k, 3601 * SECOND), Decision::Start));
    }

    #[test]
    fn failures_are_cached_for_a_minute_at_most() {
        let mut s = Scheduler::new(limits());
        let k = key("down.test", 1);
        assert!(matches!(s.decide(&k, 0), Decision::Start));
        let failed = Outcome::Failed {
            cause: ProbeFailure::Refused,
            detail: "connection refused".into(),
        };
        s.finish(&k, failed, 0);
        assert!(matches!(
            s.decide(&k, SECOND),
            Decision::Cached(Outcome::Failed { .. })
        ));
        assert!(matches!(s.decide(&k, 61 * SECOND), Decision::Start));
        assert_eq!(s.stats.failed, 1);
    }

    #[test]
    fn rate_limits_and_exclusions() {
        let mut s = Scheduler::new(limits());
        // Per destination: two a minute.
        assert!(matches!(s.decide(&key("x1.test", 1), 0), Decision::Start));
        assert!(matches!(s.decide(&key("x2.test", 1), 0), Decision::Start));
        assert!(matches!(
            s.decide(&key("x3.test", 1), 0),
            Decision::RateLimited
        ));
        // Overall: three a second.
        assert!(matches!(s.decide(&key("y.test", 2), 0), Decision::Start));
        assert!(matches!(
            s.decide(&key("z.test", 3), 0),
            Decision::RateLimited
        ));
        assert!(matches!(
            s.decide(&key("z.test", 3), SECOND),
            Decision::Start
        ));
        assert!(matches!(
            s.decide(&key("db.internal.test", 4), 5 * SECOND),
            Decision::Excluded
        ));
        assert!(matches!(
            s.decide(&key("any.test", 9), 5 * SECOND),
            Decision::Excluded
        ));
        assert_eq!(s.stats.rate_limited, 2);
        assert_eq!(s.stats.excluded, 2);
    }

    #[test]
    fn a_new_kind_of_client_is_probed_anew() {
        let mut s = Scheduler::new(limits());
        let a = ProbeKey {
            client: Some("t13d_a".into()),
            ..key("fp.test", 7)
        };
        let b = ProbeKey {
            client: Some("t12i_b".into()),
            ..key("fp.test", 7)
        };
        assert!(matches!(s.decide(&a, 0), Decision::Start));
        s.finish(&a, chain(), 2);
        assert!(matches!(s.decide(&a, 3), Decision::Cached(_)));
        // Another client fingerprint for the same destination: the cache does not answer,
        // and its own probes have their own per-destination allowance.
        assert!(matches!(s.decide(&b, 4), Decision::Start));
        s.finish(&b, chain(), 5);
        assert!(matches!(s.decide(&b, 6), Decision::Cached(_)));
    }
}
