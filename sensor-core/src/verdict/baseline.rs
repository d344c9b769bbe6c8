//! Trust on first use: what each destination showed before.
//!
//! For each server name and port the baseline remembers the issuers and the ServerHello
//! fingerprints seen, the leaf's identity (subject and names), and the sizes of TLS 1.3
//! encrypted server flights. (Keys written by older versions also carry an address.) A new issuer or
//! fingerprint is a signal, not a verdict: a server may change CA. Pure and bounded; the daemon
//! persists it through the journal.

use std::net::IpAddr;

use hashlink::LruCache;
use serde::{Deserialize, Serialize};

/// Values kept per destination and kind, at most.
const MAX_VALUES: usize = 8;

/// A destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Key {
    pub sni: String,
    pub addr: Option<IpAddr>,
    pub port: u16,
}

/// What was seen for a destination.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub issuers: Vec<String>,
    pub server_fingerprints: Vec<String>,
    pub identities: Vec<String>,
    /// TLS 1.3: sizes of the server's encrypted flight.
    pub flight_sizes: Vec<u64>,
}

/// What one observation showed against the baseline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Signal {
    /// Nothing was known about the destination before.
    pub first_seen: bool,
    /// An issuer not seen before for this destination.
    pub issuer_changed: bool,
    /// A ServerHello fingerprint not seen before.
    pub server_fingerprint_changed: bool,
    /// The leaf names what an earlier leaf named, but a new issuer signed it.
    pub same_identity_new_issuer: bool,
    /// TLS 1.3: an encrypted server flight of a size never seen (outside ±25 % of any).
    pub flight_size_changed: bool,
}

/// One observation of a destination.
#[derive(Clone, Debug, Default)]
pub struct Observation<'a> {
    pub issuer: Option<&'a str>,
    pub server_fingerprint: Option<&'a str>,
    pub identity: Option<&'a str>,
    pub flight_size: Option<u64>,
}

/// The baseline of all destinations, bounded (least recently seen go first).
pub struct Baseline {
    map: LruCache<Key, Entry>,
}

impl Baseline {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: LruCache::new(capacity.max(1)),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Compare an observation with what was seen, then remember it.
    pub fn observe(&mut self, key: Key, obs: &Observation<'_>) -> Signal {
        let mut signal = Signal::default();
        let entry = match self.map.get_mut(&key) {
            Some(e) => e,
            None => {
                signal.first_seen = true;
                self.map.insert(key.clone(), Entry::default());
                match self.map.get_mut(&key) {
                    Some(e) => e,
                    None => return signal,
                }
            }
        };
        let known = !signal.first_seen;
        if let Some(issuer) = obs.issuer {
            let new_issuer = !entry.issuers.iter().any(|i| i == issuer);
            signal.issuer_changed = known && new_issuer && !entry.issuers.is_empty();
            if let Some(identity) = obs.identity {
                signal.same_identity_new_issuer =
                    signal.issuer_changed && entry.identities.iter().any(|i| i == identity);
                remember(&mut entry.identities, identity.to_owned());
            }
            remember(&mut entry.issuers, issuer.to_owned());
        }
        if let Some(fp) = obs.server_fingerprint {
            signal.server_fingerprint_changed = known
                && !entry.server_fingerprints.is_empty()
                && !entry.server_fingerprints.iter().any(|f| f == fp);
            remember(&mut entry.server_fingerprints, fp.to_owned());
        }
        if let Some(size) = obs.flight_size {
            let near = |s: &u64| size * 4 >= s * 3 && size * 4 <= s * 5;
            signal.flight_size_changed =
                known && !entry.flight_sizes.is_empty() && !entry.flight_sizes.iter().any(near);
            if !entry.flight_sizes.contains(&size) {
                remember(&mut entry.flight_sizes, size);
            }
        }
        signal
    }

    /// Every entry, for persisting.
    pub fn export(&self) -> Vec<(Key, Entry)> {
        self.map
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Restore persisted entries.
    pub fn import(&mut self, entries: impl IntoIterator<Item = (Key, Entry)>) {
        for (k, v) in entries {
            self.map.insert(k, v);
        }
    }
}

fn remember<T: PartialEq>(list: &mut Vec<T>, v: T) {
    if !list.contains(&v) {
        if list.len() == MAX_VALUES {
            list.remove(0);
        }
        list.push(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key {
            sni: "example.com".into(),
            addr: Some("192.0.2.1".parse().unwrap()),
            port: 443,
        }
    }

    #[test]
    fn a_new_issuer_for_the_same_identity_is_a_signal() {
        let mut b = Baseline::new(16);
        let first = b.observe(
            key(),
            &Observation {
                issuer: Some("CN=R11"),
                identity: Some("example.com"),
                server_fingerprint: Some("a"),
                ..Observation::default()
            },
        );
        assert!(first.first_seen && !first.issuer_changed);
        let same = b.observe(
            key(),
            &Observation {
                issuer: Some("CN=R11"),
                identity: Some("example.com"),
                server_fingerprint: Some("a"),
                ..Observation::default()
            },
        );
        assert_eq!(same, Signal::default());
        let forged = b.observe(
            key(),
            &Observation {
                issuer: Some("CN=mitmproxy"),
                identity: Some("example.com"),
                server_fingerprint: Some("b"),
                ..Observation::default()
            },
        );
        assert!(forged.issuer_changed && forged.same_identity_new_issuer);
        assert!(forged.server_fingerprint_changed);
    }

    #[test]
    fn flight_sizes_within_a_quarter_are_the_same() {
        let mut b = Baseline::new(4);
        let obs = |n| Observation {
            flight_size: Some(n),
            ..Observation::default()
        };
        b.observe(key(), &obs(4000));
        assert!(!b.observe(key(), &obs(4500)).flight_size_changed);
        assert!(b.observe(key(), &obs(1200)).flight_size_changed);
        let exported = b.export();
        let mut c = Baseline::new(4);
        c.import(exported);
        assert!(!c.observe(key(), &obs(1210)).flight_size_changed);
    }
}
