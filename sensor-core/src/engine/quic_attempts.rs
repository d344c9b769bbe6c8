//! QUIC attempts by client and name, to tell a TCP handshake that followed an unanswered
//! QUIC attempt: inspection products cannot inspect QUIC, so their vendors have customers
//! block UDP 443, and the browser falls back to TCP, where the box re-signs the session.

use std::net::IpAddr;

use hashlink::LruCache;

use crate::event::Handshake;

/// Client and name pairs remembered at most.
const CAPACITY: usize = 4096;
/// A TCP handshake this long after the QUIC attempt's first Initial still follows it.
const WINDOW_NS: u64 = 10_000_000_000;
/// A client that goes to TCP this soon after its Initial raced the two; a blocked QUIC makes
/// it wait for an answer first.
const MIN_WAIT_NS: u64 = 100_000_000;

#[derive(Clone, Copy, Debug)]
struct Attempt {
    /// The first Initial of the unanswered attempts (or of the latest one).
    first_ts: u64,
    answered: bool,
    pid: Option<u32>,
}

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
    attempts: Option<LruCache<(IpAddr, String), Attempt>>,
}

impl QuicAttempts {
    fn map(&mut self) -> &mut LruCache<(IpAddr, String), Attempt> {
        self.attempts.get_or_insert_with(|| LruCache::new(CAPACITY))
    }

    /// A QUIC flow with a ClientHello, after each of its datagrams.
    pub(super) fn note(&mut self, s: Seen<'_>) {
        let key = (s.client, s.sni.to_owned());
        let map = self.map();
        match map.get_mut(&key) {
            // The same (or a later, still unanswered) attempt: keep its first Initial.
            Some(a) if !a.answered && s.hello_ts.saturating_sub(a.first_ts) <= WINDOW_NS => {
                a.answered |= s.answered;
                a.pid = a.pid.or(s.pid);
            }
            Some(a) if s.hello_ts <= a.first_ts || (a.answered && s.answered) => {
                a.answered |= s.answered;
            }
            _ => {
                map.insert(
                    key,
                    Attempt {
                        first_ts: s.hello_ts,
                        answered: s.answered,
                        pid: s.pid,
                    },
                );
            }
        }
    }

    /// Whether a TCP handshake came after a QUIC attempt of its client to its name that got
    /// no answer: within the window, after the client waited, and from the same process when
    /// both are known.
    pub(super) fn followed_unanswered(&mut self, hs: &Handshake, pid: Option<u32>) -> bool {
        let (Some(client), Some(sni)) = (hs.src_addr, hs.server_name.as_deref()) else {
            return false;
        };
        let Some(map) = self.attempts.as_mut() else {
            return false;
        };
        let Some(a) = map.get(&(client, sni.to_owned())) else {
            return false;
        };
        let t = hs.time.0;
        !a.answered
            && t >= a.first_ts.saturating_add(MIN_WAIT_NS)
            && t - a.first_ts <= WINDOW_NS
            && !matches!((a.pid, pid), (Some(x), Some(y)) if x != y)
    }
}
