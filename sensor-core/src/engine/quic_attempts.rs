//! QUIC attempts by client and name, to tell a TCP handshake that followed an unanswered
//! QUIC attempt: inspection products cannot inspect QUIC, so their vendors have customers
//! block UDP 443, and the browser falls back to TCP, where the box re-signs the session.

use std::net::IpAddr;

use hashlink::LruCache;

use crate::event::Handshake;

/// Client and name pairs remembered at most.
const CAPACITY: usize = 4096;
/// A TCP handshake this long after the latest unanswered QUIC attempt still follows it.
const WINDOW_NS: u64 = 10_000_000_000;
/// A client that goes to TCP this soon after its Initial raced the two; a blocked QUIC makes
/// it wait for an answer first.
const MIN_WAIT_NS: u64 = 100_000_000;

#[derive(Clone, Copy, Debug)]
struct Attempt {
    /// The first ClientHello of the unanswered attempts (or of the latest one).
    first_ts: u64,
    /// The latest ClientHello.
    last_ts: u64,
    answered: bool,
}

/// Who tried and where: the client's address, its process when the tap saw it, the name.
type Key = (IpAddr, Option<u32>, String);

/// What a QUIC flow showed about its attempt.
pub(super) struct Seen<'a> {
    pub client: IpAddr,
    pub sni: &'a str,
    pub hello_ts: u64,
    pub answered: bool,
    pub pid: Option<u32>,
}

#[derive(Default)]
pub(super) struct QuicAttempts {
    attempts: Option<LruCache<Key, Attempt>>,
}

impl QuicAttempts {
    fn map(&mut self) -> &mut LruCache<Key, Attempt> {
        self.attempts.get_or_insert_with(|| LruCache::new(CAPACITY))
    }

    /// A QUIC flow with a ClientHello, after each of its datagrams.
    pub(super) fn note(&mut self, s: Seen<'_>) {
        let key = (s.client, s.pid, s.sni.to_owned());
        let map = self.map();
        match map.get_mut(&key) {
            // The same (or a later, still unanswered) attempt: keep its first Initial.
            Some(a) if !a.answered && s.hello_ts.saturating_sub(a.last_ts) <= WINDOW_NS => {
                a.answered |= s.answered;
                a.last_ts = a.last_ts.max(s.hello_ts);
            }
            Some(a) if s.hello_ts <= a.first_ts || (a.answered && s.answered) => {
                a.answered |= s.answered;
            }
            _ => {
                map.insert(
                    key,
                    Attempt {
                        first_ts: s.hello_ts,
                        last_ts: s.hello_ts,
                        answered: s.answered,
                    },
                );
            }
        }
    }

    /// Whether a TCP handshake came after a QUIC attempt of its client to its name that got
    /// no answer: within the window, after the client waited, from the same process when the
    /// tap saw it.
    pub(super) fn followed_unanswered(&mut self, hs: &Handshake, pid: Option<u32>) -> bool {
        let (Some(client), Some(sni)) = (hs.src_addr, hs.server_name.as_deref()) else {
            return false;
        };
        let Some(map) = self.attempts.as_mut() else {
            return false;
        };
        let t = hs.time.0;
        // The same process's attempts; those of an unknown process (a capture file) too.
        let mut keys = vec![(client, pid, sni.to_owned())];
        if pid.is_some() {
            keys.push((client, None, sni.to_owned()));
        }
        keys.iter().any(|k| {
            map.get(k).is_some_and(|a| {
                !a.answered
                    && t >= a.first_ts.saturating_add(MIN_WAIT_NS)
                    && t.saturating_sub(a.last_ts) <= WINDOW_NS
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Timestamp;

    fn tcp(pid_ts: u64) -> Handshake {
        Handshake {
            src_addr: Some("10.0.0.1".parse().unwrap()),
            server_name: Some("a.test".into()),
            time: Timestamp(pid_ts),
            ..Handshake::default()
        }
    }

    #[test]
    fn another_process_unanswered_attempt_is_not_this_one_s() {
        let mut a = QuicAttempts::default();
        let ms = 1_000_000;
        a.note(Seen {
            client: "10.0.0.1".parse().unwrap(),
            sni: "a.test",
            hello_ts: ms,
            answered: false,
            pid: Some(7),
        });
        assert!(a.followed_unanswered(&tcp(500 * ms), Some(7)));
        assert!(!a.followed_unanswered(&tcp(500 * ms), Some(8)));
        // A capture knows no process: its attempts count for anyone.
        a.note(Seen {
            client: "10.0.0.1".parse().unwrap(),
            sni: "a.test",
            hello_ts: ms,
            answered: false,
            pid: None,
        });
        assert!(a.followed_unanswered(&tcp(500 * ms), Some(8)));
        assert!(a.followed_unanswered(&tcp(500 * ms), None));
    }
}
