//! When the daemon may probe: a result cache with a TTL, a global and a per-destination rate
//! limit, quotas per uid and per cgroup, exclusions, and one probe at a time per destination.
//! Pure: time comes in as nanoseconds, nothing here does I/O.
//!
//! The quotas are there because any local user decides which handshakes happen: without them
//! one user opening TLS 1.3 connections to fresh destinations would take the whole global
//! rate, and everyone else's handshakes would go unprobed. A user (uid) and a cgroup (a
//! service, a container, a login session) each get a share of their own; a handshake must fit
//! both. A user who creates cgroups of their own gains no more than their uid's share.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    net::IpAddr,
    sync::Arc,
};

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

/// Who a probe would be for: the process behind the handshake, as far as it is known.
/// Handshakes whose process is unknown share one quota.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requester {
    pub uid: Option<u32>,
    /// The cgroup v2 path.
    pub cgroup: Option<String>,
}

/// Which quota a handshake's process is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quota {
    Uid,
    Cgroup,
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
    /// Too many probes lately for this handshake's user or cgroup.
    OverQuota(Quota),
}

/// Limits, from the configuration.
#[derive(Clone, Debug)]
pub struct Limits {
    pub ttl_ns: u64,
    pub max_per_second: u32,
    pub max_per_destination_per_minute: u32,
    /// Probes per second at most for the handshakes of one uid.
    pub max_per_uid_per_second: u32,
    /// Probes per second at most for the handshakes of one cgroup.
    pub max_per_cgroup_per_second: u32,
    /// Host globs (matched against the SNI) and addresses.
    pub exclude: Vec<String>,
    /// Cache entries at most.
    pub cache_entries: usize,
}

const SECOND: u64 = 1_000_000_000;
const MINUTE: u64 = 60 * SECOND;

/// Start times of the last second, per requester (uid or cgroup), bounded: an evicted
/// requester starts afresh, which only ever lets a probe through, never blocks one.
struct Quotas<K: Hash + Eq> {
    recent: LruCache<K, VecDeque<u64>>,
}

impl<K: Hash + Eq> Quotas<K> {
    fn new(capacity: usize) -> Self {
        Self {
            recent: LruCache::new(capacity),
        }
    }

    /// Whether `who` has started `max` probes within the second before `now`.
    fn full(&mut self, who: &K, max: u32, now: u64) -> bool {
        let started = self.recent.get_mut(who).map_or(0, |times| {
            while times
                .front()
                .is_some_and(|t| now.saturating_sub(*t) >= SECOND)
            {
                times.pop_front();
            }
            times.len()
        });
        started >= max as usize
    }

    fn record(&mut self, who: K, now: u64) {
        match self.recent.get_mut(&who) {
            Some(times) => times.push_back(now),
            None => {
                self.recent.insert(who, VecDeque::from([now]));
            }
        }
    }
}

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
    per_uid: Quotas<Option<u32>>,
    per_cgroup: Quotas<Option<String>>,
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
    /// Refused because the handshake's uid had its share.
    pub over_uid_quota: u64,
    /// Refused because the handshake's cgroup had its share.
    pub over_cgroup_quota: u64,
    pub failed: u64,
}

/// Exclusions as addresses and compiled globs.
fn exclusions(exclude: &[String]) -> (Vec<IpAddr>, Vec<wildmatch::WildMatch>) {
    let mut addrs = Vec::new();
    let mut names = Vec::new();
    for e in exclude {
        match e.parse::<IpAddr>() {
            Ok(a) => addrs.push(a),
            Err(_) => names.push(wildmatch::WildMatch::new(&e.to_ascii_lowercase())),
        }
    }
    (addrs, names)
}

impl Scheduler {
    pub fn new(limits: Limits) -> Self {
        let (excluded_addrs, excluded_names) = exclusions(&limits.exclude);
        Self {
            cache: LruCache::new(limits.cache_entries.max(1)),
            per_destination: LruCache::new(4096),
            per_uid: Quotas::new(4096),
            per_cgroup: Quotas::new(1024),
            limits,
            excluded_addrs,
            excluded_names,
            running: HashMap::new(),
            recent: VecDeque::new(),
            stats: ScheduleStats::default(),
        }
    }

    /// New limits (a reload that changed them). The results cached so far are dropped (they
    /// were made under other exclusions and TTL), but what was started lately still counts
    /// against every limit and quota, and running probes stay running: reloading cannot be
    /// used to reset the limits.
    pub fn reconfigure(&mut self, limits: Limits) {
        let (addrs, names) = exclusions(&limits.exclude);
        self.excluded_addrs = addrs;
        self.excluded_names = names;
        self.cache = LruCache::new(limits.cache_entries.max(1));
        self.limits = limits;
    }

    fn excluded(&self, key: &ProbeKey) -> bool {
        self.excluded_addrs.contains(&key.addr)
            || key.sni.as_deref().is_some_and(|sni| {
                let sni = sni.to_ascii_lowercase();
                self.excluded_names.iter().any(|g| g.matches(&sni))
            })
    }

    /// Decide for one handshake of `who` at `now`. A cached outcome answers the same kind of
    /// client (its fingerprint is part of the key): a destination's result does not carry over
    /// to clients that offer something else. A cached result and a running probe are shared
    /// with everyone; only a new probe counts against the limits and quotas.
    pub fn decide(&mut self, key: &ProbeKey, who: &Requester, now: u64) -> Decision {
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
        // The requester's own quotas first: a user over their share is told so, and takes
        // nothing from the global rate.
        if self
            .per_uid
            .full(&who.uid, self.limits.max_per_uid_per_second, now)
        {
            self.stats.over_uid_quota += 1;
            return Decision::OverQuota(Quota::Uid);
        }
        if self
            .per_cgroup
            .full(&who.cgroup, self.limits.max_per_cgroup_per_second, now)
        {
            self.stats.over_cgroup_quota += 1;
            return Decision::OverQuota(Quota::Cgroup);
        }
        if self.recent.len() >= self.limits.max_per_second as usize || per_dest_full {
            self.stats.rate_limited += 1;
            return Decision::RateLimited;
        }
        self.recent.push_back(now);
        self.per_uid.record(who.uid, now);
        self.per_cgroup.record(who.cgroup.clone(), now);
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
            max_per_uid_per_second: 3,
            max_per_cgroup_per_second: 3,
            exclude: vec!["*.internal.test".into(), "192.0.2.9".into()],
            cache_entries: 100,
        }
    }

    fn user(uid: u32, cgroup: &str) -> Requester {
        Requester {
            uid: Some(uid),
            cgroup: Some(cgroup.into()),
        }
    }

    fn anyone() -> Requester {
        user(1000, "/user.slice/user-1000.slice/session-1.scope")
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
        assert!(matches!(s.decide(&k, &anyone(), 0), Decision::Start));
        assert!(matches!(s.decide(&k, &anyone(), 1), Decision::Wait));
        s.finish(&k, chain(), 2);
        assert!(matches!(
            s.decide(&k, &anyone(), 3),
            Decision::Cached(Outcome::Chain { .. })
        ));
        // After the TTL, a new probe (the rate limits allow it a minute later).
        assert!(matches!(
            s.decide(&k, &anyone(), 3601 * SECOND),
            Decision::Start
        ));
    }

    #[test]
    fn failures_are_cached_for_a_minute_at_most() {
        let mut s = Scheduler::new(limits());
        let k = key("down.test", 1);
        assert!(matches!(s.decide(&k, &anyone(), 0), Decision::Start));
        let failed = Outcome::Failed {
            cause: ProbeFailure::Refused,
            detail: "connection refused".into(),
        };
        s.finish(&k, failed, 0);
        assert!(matches!(
            s.decide(&k, &anyone(), SECOND),
            Decision::Cached(Outcome::Failed { .. })
        ));
        assert!(matches!(
            s.decide(&k, &anyone(), 61 * SECOND),
            Decision::Start
        ));
        assert_eq!(s.stats.failed, 1);
    }

    #[test]
    fn rate_limits_and_exclusions() {
        let mut s = Scheduler::new(limits());
        // Per destination: two a minute.
        assert!(matches!(
            s.decide(&key("x1.test", 1), &anyone(), 0),
            Decision::Start
        ));
        assert!(matches!(
            s.decide(&key("x2.test", 1), &anyone(), 0),
            Decision::Start
        ));
        assert!(matches!(
            s.decide(&key("x3.test", 1), &anyone(), 0),
            Decision::RateLimited
        ));
        // Overall: three a second (from other users, within their own quotas).
        let (other, third) = (user(2, "/b"), user(3, "/c"));
        assert!(matches!(
            s.decide(&key("y.test", 2), &other, 0),
            Decision::Start
        ));
        assert!(matches!(
            s.decide(&key("z.test", 3), &third, 0),
            Decision::RateLimited
        ));
        assert!(matches!(
            s.decide(&key("z.test", 3), &third, SECOND),
            Decision::Start
        ));
        assert!(matches!(
            s.decide(&key("db.internal.test", 4), &anyone(), 5 * SECOND),
            Decision::Excluded
        ));
        assert!(matches!(
            s.decide(&key("any.test", 9), &anyone(), 5 * SECOND),
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
        assert!(matches!(s.decide(&a, &anyone(), 0), Decision::Start));
        s.finish(&a, chain(), 2);
        assert!(matches!(s.decide(&a, &anyone(), 3), Decision::Cached(_)));
        // Another client fingerprint for the same destination: the cache does not answer,
        // and its own probes have their own per-destination allowance.
        assert!(matches!(s.decide(&b, &anyone(), 4), Decision::Start));
        s.finish(&b, chain(), 5);
        assert!(matches!(s.decide(&b, &anyone(), 6), Decision::Cached(_)));
    }

    fn many(s: &mut Scheduler, who: &Requester, from: u8, n: u8, now: u64) -> Vec<Decision> {
        (from..from + n)
            .map(|i| s.decide(&key(&format!("d{i}.test"), i), who, now))
            .collect()
    }

    fn started(d: &[Decision]) -> usize {
        d.iter().filter(|d| matches!(d, Decision::Start)).count()
    }

    #[test]
    fn one_user_cannot_take_everyone_s_probes() {
        let mut s = Scheduler::new(Limits {
            max_per_second: 10,
            ..limits()
        });
        let flooder = user(1000, "/user.slice/user-1000.slice/session-1.scope");
        let got = many(&mut s, &flooder, 10, 20, 0);
        assert_eq!(started(&got), 3, "the uid's share");
        assert!(
            got[3..]
                .iter()
                .all(|d| matches!(d, Decision::OverQuota(Quota::Uid)))
        );
        // Cgroups of their own do not give the same user more.
        let own = user(
            1000,
            "/user.slice/user-1000.slice/user@1000.service/app-x.scope",
        );
        assert!(matches!(
            s.decide(&key("more.test", 50), &own, 0),
            Decision::OverQuota(Quota::Uid)
        ));
        // Everyone else still gets probes, at the same moment.
        let victim = user(1001, "/user.slice/user-1001.slice/session-2.scope");
        assert_eq!(started(&many(&mut s, &victim, 100, 3, 0)), 3);
        // A second later the flooder has a share again.
        assert_eq!(started(&many(&mut s, &flooder, 150, 5, SECOND)), 3);
        assert_eq!(s.stats.over_uid_quota, 17 + 1 + 2);
        assert_eq!(s.stats.rate_limited, 0);
    }

    #[test]
    fn services_of_one_uid_are_limited_by_their_cgroup_too() {
        let mut s = Scheduler::new(Limits {
            max_per_second: 10,
            max_per_uid_per_second: 5,
            max_per_cgroup_per_second: 2,
            ..limits()
        });
        let a = user(0, "/system.slice/backup.service");
        let b = user(0, "/system.slice/updates.service");
        let got = many(&mut s, &a, 40, 4, 0);
        assert_eq!(started(&got), 2);
        assert!(matches!(got[2], Decision::OverQuota(Quota::Cgroup)));
        assert_eq!(started(&many(&mut s, &b, 10, 2, 0)), 2);
        // Root's 5 a second: 4 used, one left, for any of its services.
        let c = user(0, "/system.slice/cron.service");
        let got = many(&mut s, &c, 20, 2, 0);
        assert_eq!(started(&got), 1);
        assert!(matches!(got[1], Decision::OverQuota(Quota::Uid)));
        // Handshakes whose process is unknown share one quota.
        let unknown = Requester::default();
        assert_eq!(started(&many(&mut s, &unknown, 30, 4, 0)), 2);
        assert_eq!(s.stats.over_cgroup_quota, 2 + 2);
    }

    #[test]
    fn cached_and_running_probes_cost_no_quota() {
        let mut s = Scheduler::new(limits());
        let who = anyone();
        let k = key("popular.test", 1);
        assert!(matches!(s.decide(&k, &who, 0), Decision::Start));
        for t in 1..50 {
            assert!(matches!(s.decide(&k, &who, t), Decision::Wait));
        }
        s.finish(&k, chain(), 50);
        for t in 51..100 {
            assert!(matches!(s.decide(&k, &who, t), Decision::Cached(_)));
        }
        assert_eq!(started(&many(&mut s, &who, 2, 2, 100)), 2);
    }

    #[test]
    fn new_limits_do_not_reset_what_was_started() {
        let mut s = Scheduler::new(limits());
        let k = key("a.test", 1);
        assert!(matches!(s.decide(&k, &anyone(), 0), Decision::Start));
        s.finish(&k, chain(), 1);
        let (b, c) = (user(2, "/b"), user(3, "/c"));
        assert!(matches!(
            s.decide(&key("b.test", 2), &b, 1),
            Decision::Start
        ));
        assert!(matches!(
            s.decide(&key("c.test", 3), &c, 1),
            Decision::Start
        ));
        let running = key("d.test", 4);
        assert!(matches!(
            s.decide(&running, &user(4, "/d"), 2),
            Decision::RateLimited
        ));
        s.reconfigure(Limits {
            ttl_ns: 60 * SECOND,
            ..limits()
        });
        // The global rate is still spent; the per-destination history and the quotas too.
        assert!(matches!(
            s.decide(&running, &user(4, "/d"), 3),
            Decision::RateLimited
        ));
        assert!(matches!(
            s.decide(&key("e.test", 5), &user(5, "/e"), SECOND + 5),
            Decision::Start
        ));
        // The cache starts afresh, under the new TTL; the running probes stay running.
        assert!(matches!(
            s.decide(&k, &anyone(), SECOND + 6),
            Decision::Start
        ));
        assert!(matches!(
            s.decide(&key("b.test", 2), &b, SECOND + 7),
            Decision::Wait
        ));
    }
}
