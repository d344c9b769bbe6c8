//! Trust on first use: what each destination showed before.
//!
//! For each server name and port the baseline remembers the issuers and the leaf's identity
//! (subject and names). What the server answers depends on what the client offered (version,
//! ciphers, extensions: the same server answers curl and openssl differently), so its
//! ServerHello fingerprints and the sizes of its TLS 1.3 encrypted flights are remembered per
//! kind of client (its JA4, else its JA3) and compared only with the same kind's. (Keys
//! written by older versions also carry an address.) A new value is a signal, not a verdict: a
//! server may change CA.
//!
//! Comparing ([`Baseline::compare`]) and learning ([`Baseline::learn`]) are apart: the caller
//! learns only from handshakes that were judged clean, or whose certificate was not visible and
//! nothing else was wrong, and that were not themselves flagged. A clean handshake (its chain
//! valid in the public PKI) that showed a new value is counted instead, and the value learned
//! after [`PROMOTE_AFTER`] of them: a server that really changed stops being reported, an
//! interceptor (whose chain is not clean) never teaches the baseline. Pure and bounded; the
//! daemon persists it through the journal.

use std::net::IpAddr;

use hashlink::LruCache;
use serde::{Deserialize, Serialize};

/// Values kept per destination and kind, at most.
const MAX_VALUES: usize = 8;
/// Kinds of client remembered per destination, at most (least recently seen go first).
const MAX_CLIENT_KINDS: usize = 8;
/// Fingerprints and sizes kept per kind of client, at most.
const MAX_ANSWERS: usize = 4;
/// New values counted per destination, at most.
const MAX_CANDIDATES: usize = 8;
/// Clean handshakes that must show a new value before it is learned.
pub const PROMOTE_AFTER: u8 = 3;

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
    pub identities: Vec<String>,
    /// What the server answered, per kind of client.
    #[serde(default)]
    pub answers: Vec<Answer>,
    /// New values seen in clean handshakes, counted until they are learned.
    #[serde(default)]
    pub candidates: Vec<Candidate>,
}

/// What a server answered one kind of client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The client's JA4 (else JA3).
    pub client: String,
    pub server_fingerprints: Vec<String>,
    /// TLS 1.3: sizes of the server's encrypted flight.
    pub flight_sizes: Vec<u64>,
}

/// A new value seen in clean handshakes, and how many.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub value: Value,
    pub seen: u8,
}

/// One remembered value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    Issuer {
        issuer: String,
        identity: Option<String>,
    },
    Fingerprint {
        client: String,
        fingerprint: String,
    },
    FlightSize {
        client: String,
        size: u64,
    },
}

/// What one observation showed against the baseline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Signal {
    /// Nothing was known about the destination before.
    pub first_seen: bool,
    /// An issuer not seen before for this destination.
    pub issuer_changed: bool,
    /// A ServerHello fingerprint not seen before by this kind of client.
    pub server_fingerprint_changed: bool,
    /// The leaf names what an earlier leaf named, but a new issuer signed it.
    pub same_identity_new_issuer: bool,
    /// TLS 1.3: an encrypted server flight of a size this kind of client never saw (outside
    /// ±25 % of any).
    pub flight_size_changed: bool,
}

impl Signal {
    /// Whether anything differed from what was known.
    pub fn changed(&self) -> bool {
        self.issuer_changed
            || self.server_fingerprint_changed
            || self.same_identity_new_issuer
            || self.flight_size_changed
    }
}

/// One observation of a destination.
#[derive(Clone, Debug, Default)]
pub struct Observation<'a> {
    /// The kind of client: its JA4, else its JA3. Without it, nothing the server answered is
    /// compared or learned.
    pub client: Option<&'a str>,
    pub issuer: Option<&'a str>,
    pub server_fingerprint: Option<&'a str>,
    pub identity: Option<&'a str>,
    pub flight_size: Option<u64>,
}

/// How an observation teaches the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learn {
    /// Judged clean (or not visible and nothing wrong) and not flagged: remember it.
    Now,
    /// Judged clean but flagged by the baseline: count its new values, learn them when counted
    /// [`PROMOTE_AFTER`] times.
    AfterRepeats,
}

/// The baseline of all destinations, bounded (least recently seen go first).
pub struct Baseline {
    map: LruCache<Key, Entry>,
}

fn near(size: u64, known: u64) -> bool {
    size.saturating_mul(4) >= known.saturating_mul(3)
        && size.saturating_mul(4) <= known.saturating_mul(5)
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

    /// Compare an observation with what was learned. Changes nothing but recency.
    pub fn compare(&mut self, key: &Key, obs: &Observation<'_>) -> Signal {
        let Some(entry) = self.map.get(key) else {
            return Signal {
                first_seen: true,
                ..Signal::default()
            };
        };
        let mut signal = Signal::default();
        if let Some(issuer) = obs.issuer
            && !entry.issuers.is_empty()
            && !entry.issuers.iter().any(|i| i == issuer)
        {
            signal.issuer_changed = true;
            signal.same_identity_new_issuer = obs
                .identity
                .is_some_and(|id| entry.identities.iter().any(|i| i == id));
        }
        let answer = obs
            .client
            .and_then(|c| entry.answers.iter().find(|a| a.client == c));
        if let Some(answer) = answer {
            if let Some(fp) = obs.server_fingerprint {
                signal.server_fingerprint_changed = !answer.server_fingerprints.is_empty()
                    && !answer.server_fingerprints.iter().any(|f| f == fp);
            }
            if let Some(size) = obs.flight_size {
                signal.flight_size_changed = !answer.flight_sizes.is_empty()
                    && !answer.flight_sizes.iter().any(|k| near(size, *k));
            }
        }
        signal
    }

    /// Teach the baseline what an observation showed; see the module for when to.
    pub fn learn(&mut self, key: Key, obs: &Observation<'_>, how: Learn) {
        if self.map.get(&key).is_none() {
            self.map.insert(key.clone(), Entry::default());
        }
        let Some(entry) = self.map.get_mut(&key) else {
            return;
        };
        let mut values = Vec::with_capacity(3);
        if let Some(issuer) = obs.issuer {
            values.push(Value::Issuer {
                issuer: issuer.to_owned(),
                identity: obs.identity.map(str::to_owned),
            });
        }
        if let Some(client) = obs.client {
            if let Some(fp) = obs.server_fingerprint {
                values.push(Value::Fingerprint {
                    client: client.to_owned(),
                    fingerprint: fp.to_owned(),
                });
            }
            if let Some(size) = obs.flight_size {
                values.push(Value::FlightSize {
                    client: client.to_owned(),
                    size,
                });
            }
        }
        for value in values {
            match how {
                Learn::Now => entry.remember(value),
                Learn::AfterRepeats if entry.knows(&value) => {}
                Learn::AfterRepeats => entry.count(value),
            }
        }
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

impl Value {
    /// The same value: a size within a quarter of the other.
    fn matches(&self, other: &Value) -> bool {
        match (self, other) {
            (
                Value::FlightSize { client: a, size: x },
                Value::FlightSize { client: b, size: y },
            ) => a == b && near(*x, *y),
            _ => self == other,
        }
    }
}

impl Entry {
    fn answer(&mut self, client: &str) -> &mut Answer {
        match self.answers.iter().position(|a| a.client == client) {
            Some(i) => {
                // The most recently used last; the least recently used goes first.
                let a = self.answers.remove(i);
                self.answers.push(a);
            }
            None => {
                if self.answers.len() == MAX_CLIENT_KINDS {
                    self.answers.remove(0);
                }
                self.answers.push(Answer {
                    client: client.to_owned(),
                    ..Answer::default()
                });
            }
        }
        let last = self.answers.len() - 1;
        &mut self.answers[last]
    }

    /// Whether the value is already known (a size: one within a quarter).
    fn knows(&self, value: &Value) -> bool {
        let answer = |client: &str| self.answers.iter().find(|a| a.client == client);
        match value {
            Value::Issuer { issuer, .. } => self.issuers.contains(issuer),
            Value::Fingerprint {
                client,
                fingerprint,
            } => answer(client).is_some_and(|a| a.server_fingerprints.contains(fingerprint)),
            Value::FlightSize { client, size } => {
                answer(client).is_some_and(|a| a.flight_sizes.iter().any(|k| near(*size, *k)))
            }
        }
    }

    fn remember(&mut self, value: Value) {
        match value {
            Value::Issuer { issuer, identity } => {
                remember(&mut self.issuers, issuer, MAX_VALUES);
                if let Some(identity) = identity {
                    remember(&mut self.identities, identity, MAX_VALUES);
                }
            }
            Value::Fingerprint {
                client,
                fingerprint,
            } => remember(
                &mut self.answer(&client).server_fingerprints,
                fingerprint,
                MAX_ANSWERS,
            ),
            Value::FlightSize { client, size } => {
                remember(&mut self.answer(&client).flight_sizes, size, MAX_ANSWERS)
            }
        }
    }

    /// One more clean sighting of a new value; learned at [`PROMOTE_AFTER`].
    fn count(&mut self, value: Value) {
        let seen = match self.candidates.iter_mut().find(|c| c.value.matches(&value)) {
            Some(c) => {
                c.seen = c.seen.saturating_add(1);
                c.seen
            }
            None => {
                if self.candidates.len() == MAX_CANDIDATES {
                    self.candidates.remove(0);
                }
                self.candidates.push(Candidate {
                    value: value.clone(),
                    seen: 1,
                });
                1
            }
        };
        if seen >= PROMOTE_AFTER {
            self.candidates.retain(|c| !c.value.matches(&value));
            self.remember(value);
        }
    }
}

fn remember<T: PartialEq>(list: &mut Vec<T>, v: T, max: usize) {
    if !list.contains(&v) {
        if list.len() >= max {
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
            addr: None,
            port: 443,
        }
    }

    const CURL: &str = "t13d3112h2_e8f1e7e78f70_6bebaf5329ac";
    const OPENSSL_TLS12: &str = "t12d280700_d943125447b4_e7e480e5a997";

    fn seen(b: &mut Baseline, obs: &Observation<'_>) -> Signal {
        let signal = b.compare(&key(), obs);
        if !signal.changed() {
            b.learn(key(), obs, Learn::Now);
        }
        signal
    }

    #[test]
    fn a_new_issuer_for_the_same_identity_is_a_signal() {
        let mut b = Baseline::new(16);
        let obs = |issuer| Observation {
            client: Some(CURL),
            issuer: Some(issuer),
            identity: Some("example.com"),
            server_fingerprint: Some(issuer),
            ..Observation::default()
        };
        let first = seen(&mut b, &obs("CN=R11"));
        assert!(first.first_seen && !first.changed());
        assert_eq!(seen(&mut b, &obs("CN=R11")), Signal::default());
        let forged = seen(&mut b, &obs("CN=mitmproxy"));
        assert!(forged.issuer_changed && forged.same_identity_new_issuer);
        assert!(forged.server_fingerprint_changed);
        // Flagged, so not learned: the same again is flagged again.
        assert_eq!(seen(&mut b, &obs("CN=mitmproxy")), forged);
    }

    #[test]
    fn answers_are_compared_per_kind_of_client() {
        let mut b = Baseline::new(16);
        let obs = |client, fp, size| Observation {
            client: Some(client),
            server_fingerprint: Some(fp),
            flight_size: size,
            ..Observation::default()
        };
        seen(&mut b, &obs(OPENSSL_TLS12, "tls12-answer", None));
        // The same server answers a TLS 1.3 client otherwise: nothing to compare with.
        let other_client = seen(&mut b, &obs(CURL, "tls13-answer", Some(4000)));
        assert!(!other_client.changed(), "{other_client:?}");
        // Each kind of client keeps getting what it got.
        assert!(!seen(&mut b, &obs(OPENSSL_TLS12, "tls12-answer", None)).changed());
        assert!(!seen(&mut b, &obs(CURL, "tls13-answer", Some(4400))).changed());
        // The same kind of client gets another answer: that is a signal.
        let changed = seen(&mut b, &obs(CURL, "another", Some(1200)));
        assert!(changed.server_fingerprint_changed && changed.flight_size_changed);
        // Without a client fingerprint nothing is compared.
        let unknown = Observation {
            server_fingerprint: Some("another"),
            ..Observation::default()
        };
        assert!(!b.compare(&key(), &unknown).changed());
    }

    #[test]
    fn a_new_value_in_clean_handshakes_is_learned_after_repeats() {
        let mut b = Baseline::new(4);
        let obs = |issuer| Observation {
            issuer: Some(issuer),
            ..Observation::default()
        };
        b.learn(key(), &obs("R10"), Learn::Now);
        for _ in 1..PROMOTE_AFTER {
            assert!(b.compare(&key(), &obs("R11")).issuer_changed);
            b.learn(key(), &obs("R11"), Learn::AfterRepeats);
        }
        assert!(b.compare(&key(), &obs("R11")).issuer_changed);
        b.learn(key(), &obs("R11"), Learn::AfterRepeats);
        assert!(!b.compare(&key(), &obs("R11")).changed());
        assert!(!b.compare(&key(), &obs("R10")).changed());
    }

    #[test]
    fn flight_sizes_within_a_quarter_are_the_same_and_survive_a_restart() {
        let mut b = Baseline::new(4);
        let obs = |n| Observation {
            client: Some(CURL),
            flight_size: Some(n),
            ..Observation::default()
        };
        seen(&mut b, &obs(4000));
        assert!(!seen(&mut b, &obs(4500)).flight_size_changed);
        assert!(seen(&mut b, &obs(1200)).flight_size_changed);
        let exported = b.export();
        let mut c = Baseline::new(4);
        c.import(exported);
        assert!(!c.compare(&key(), &obs(4100)).flight_size_changed);
        assert!(c.compare(&key(), &obs(1210)).flight_size_changed);
    }

    #[test]
    fn every_list_is_bounded() {
        let mut b = Baseline::new(2);
        let clients: Vec<String> = (0..100).map(|i| format!("client-{i}")).collect();
        for (i, client) in clients.iter().enumerate() {
            let fp = format!("fp-{i}");
            let issuer = format!("issuer-{i}");
            let obs = Observation {
                client: Some(client),
                issuer: Some(&issuer),
                identity: Some(&issuer),
                server_fingerprint: Some(&fp),
                flight_size: Some(i as u64 * 1000),
            };
            b.learn(key(), &obs, Learn::Now);
            b.learn(key(), &obs, Learn::AfterRepeats);
        }
        let (_, entry) = &b.export()[0];
        assert_eq!(entry.issuers.len(), MAX_VALUES);
        assert_eq!(entry.identities.len(), MAX_VALUES);
        assert_eq!(entry.answers.len(), MAX_CLIENT_KINDS);
        assert!(
            entry
                .answers
                .iter()
                .all(|a| a.server_fingerprints.len() <= MAX_ANSWERS)
        );
        assert!(entry.candidates.len() <= MAX_CANDIDATES);
    }

    #[test]
    fn an_entry_written_by_an_older_version_still_loads() {
        let old =
            r#"{"issuers":["a"],"server_fingerprints":["x"],"identities":[],"flight_sizes":[10]}"#;
        let entry: Entry = serde_json::from_str(old).unwrap();
        assert_eq!(entry.issuers, ["a"]);
        assert!(entry.answers.is_empty());
    }
}
