//! A 4-tuple used again: what the kernel tap forwards of a new connection on it (no SYN, the
//! first segment on a new socket) starts a new flow; what the old connection still sends
//! (also the first record of a socket of its that the flow had not seen) does not.

use super::{client_hello, record, seg, server_hello_tls12};
use crate::capture::{Attribution, Segment};
use crate::engine::*;
use crate::event::TlsVersion;
use sensor_common::tcp_flags::{ACK, PSH, RST};

/// `s` as the kernel forwarded it on local socket `cookie` (`sent`: that socket sent it).
fn on_socket(mut s: Segment<'_>, cookie: u64, sent: bool, first: bool) -> Segment<'_> {
    s.attribution = Some(Attribution {
        cookie,
        local_is_src: sent,
        pid: sent.then_some(4242),
        first_on_socket: first,
        ..Attribution::default()
    });
    s
}

/// A loopback connection seen from its client socket (`client_cookie`): the ClientHello for
/// `sni` (client stream from `client_isn`), the server's hello on ingress (server stream from
/// 5000), then a reset that reports it. Returns the server stream's next sequence number.
fn connection(e: &mut Engine, client_cookie: u64, client_isn: u32, sni: &str, ts: u64) -> u32 {
    let ch = record(22, &client_hello(sni));
    let sh = record(22, &server_hello_tls12());
    e.push(&on_socket(
        seg(true, client_isn, ACK | PSH, &ch, ts),
        client_cookie,
        true,
        true,
    ));
    e.push(&on_socket(
        seg(false, 5000, ACK | PSH, &sh, ts + 1),
        client_cookie,
        false,
        false,
    ));
    let after = client_isn.wrapping_add(ch.len() as u32);
    e.push(&on_socket(
        seg(true, after, RST | ACK, &[], ts + 2),
        client_cookie,
        true,
        false,
    ));
    5000 + sh.len() as u32
}

fn names(e: &mut Engine) -> Vec<Option<String>> {
    e.finish();
    e.drain().map(|h| h.server_name).collect()
}

#[test]
fn the_first_record_of_the_servers_socket_after_the_report_is_the_same_connection() {
    let mut e = Engine::new(EngineLimits::default());
    let next = connection(&mut e, 77, 1000, "one.test", 10);
    // The server socket's own first record comes after the flow was reported: its data goes
    // on from where the server's stream stood. Not a new connection with the roles reversed.
    let tail = record(23, &[0; 40]);
    e.push(&on_socket(
        seg(false, next, ACK | PSH, &tail, 20),
        88,
        true,
        true,
    ));
    assert_eq!(names(&mut e), [Some("one.test".to_owned())]);
    let stats = e.stats();
    assert_eq!((stats.flows_created, stats.tuples_reused), (1, 0));
}

#[test]
fn a_record_of_an_older_connection_after_a_newer_one_took_the_tuple_opens_nothing() {
    let mut e = Engine::new(EngineLimits::default());
    connection(&mut e, 77, 1000, "one.test", 10);
    connection(&mut e, 99, 0x4000_0000, "two.test", 20);
    // The first connection's server socket forwards its first record only now: encrypted
    // application data, nowhere near the second connection's streams (whose server, unlike
    // the first's, started at 5000 here).
    let late = record(23, &[0; 40]);
    e.push(&on_socket(
        seg(false, 0x7000_0000, ACK | PSH, &late, 30),
        88,
        true,
        true,
    ));
    // The third connection on the tuple is read whole, from its own ClientHello.
    connection(&mut e, 111, 0x9000_0000, "three.test", 40);
    e.finish();
    let events: Vec<_> = e.drain().collect();
    assert_eq!(events.len(), 3);
    for (ev, name) in events.iter().zip(["one.test", "two.test", "three.test"]) {
        assert_eq!(ev.server_name.as_deref(), Some(name));
        // Its server's hello was read: not cast aside as a copy of another stream's bytes.
        assert_eq!(ev.tls_version, Some(TlsVersion::Tls12), "{ev:?}");
        assert!(ev.capture_incomplete.is_empty(), "{ev:?}");
    }
    assert_eq!(e.stats().duplicate_bytes, 0);
}

#[test]
fn a_new_client_socket_on_a_reported_tuple_is_a_new_connection() {
    let mut e = Engine::new(EngineLimits::default());
    connection(&mut e, 77, 1000, "one.test", 10);
    connection(&mut e, 99, 1001, "two.test", 20);
    assert_eq!(
        names(&mut e),
        [Some("one.test".to_owned()), Some("two.test".to_owned())]
    );
    assert_eq!(e.stats().tuples_reused, 1);
}

#[test]
fn a_new_connection_first_seen_on_the_socket_the_old_flow_had_not_seen_is_new() {
    let mut e = Engine::new(EngineLimits::default());
    connection(&mut e, 77, 1000, "one.test", 10);
    // The next connection's first record is the server socket's ingress copy of its
    // ClientHello, its sequence number nowhere near the old client stream's.
    let ch = record(22, &client_hello("two.test"));
    e.push(&on_socket(
        seg(true, 0x8000_0000, ACK | PSH, &ch, 20),
        88,
        false,
        true,
    ));
    assert_eq!(
        names(&mut e),
        [Some("one.test".to_owned()), Some("two.test".to_owned())]
    );
}

#[test]
fn a_new_socket_on_a_tuple_whose_flow_is_still_open_reports_both() {
    // The old connection's end was never seen (no FIN, no RST, not decided): the new
    // connection on its 4-tuple, on another socket, reports it and starts its own flow.
    let mut e = Engine::new(EngineLimits::default());
    let ch = record(22, &client_hello("one.test"));
    e.push(&on_socket(
        seg(true, 1000, ACK | PSH, &ch, 1),
        77,
        true,
        true,
    ));
    let ch2 = record(22, &client_hello("two.test"));
    e.push(&on_socket(
        seg(true, 9000, ACK | PSH, &ch2, 2),
        99,
        true,
        true,
    ));
    assert_eq!(
        names(&mut e),
        [Some("one.test".to_owned()), Some("two.test".to_owned())]
    );
    assert_eq!(e.stats().tuples_reused, 1);
    // The same socket's own segments never split its flow.
    let mut e = Engine::new(EngineLimits::default());
    e.push(&on_socket(
        seg(true, 1000, ACK | PSH, &ch, 1),
        77,
        true,
        true,
    ));
    let more = record(22, &[0; 10]);
    let at = 1000 + ch.len() as u32;
    e.push(&on_socket(
        seg(true, at, ACK | PSH, &more, 2),
        77,
        true,
        false,
    ));
    assert_eq!(names(&mut e), [Some("one.test".to_owned())]);
}

#[test]
fn a_hello_after_a_connection_whose_client_was_not_seen_starts_its_own_flow() {
    // A local server answered a client the tap leaves out (sensord's own probe): its hello
    // and flight, and no ClientHello, on a port a new client then reuses.
    let mut e = Engine::new(EngineLimits::default());
    let sh = record(22, &server_hello_tls12());
    let mut hello = on_socket(seg(false, 0x6000_0000, ACK | PSH, &sh, 1), 55, true, false);
    // The server's socket says how far it had received its client's stream.
    hello.received.from_dst = Some(0x3000_0000);
    e.push(&hello);
    let flight = record(23, &[0; 180]);
    let at = 0x6000_0000 + sh.len() as u32;
    e.push(&on_socket(
        seg(false, at, ACK | PSH, &flight, 2),
        55,
        true,
        false,
    ));
    // The new connection, from both of its sockets, as loopback shows it.
    let ch = record(22, &client_hello("next.test"));
    e.push(&on_socket(
        seg(true, 1000, ACK | PSH, &ch, 10),
        99,
        true,
        true,
    ));
    e.push(&on_socket(
        seg(false, 5000, ACK | PSH, &sh, 11),
        100,
        true,
        false,
    ));
    let after = 1000 + ch.len() as u32;
    e.push(&on_socket(
        seg(true, after, RST | ACK, &[], 12),
        99,
        true,
        false,
    ));
    e.finish();
    let events: Vec<_> = e.drain().collect();
    assert_eq!(events.len(), 1, "{events:?}");
    let ev = &events[0];
    assert_eq!(ev.server_name.as_deref(), Some("next.test"));
    assert_eq!(ev.tls_version, Some(TlsVersion::Tls12), "{ev:?}");
    assert!(ev.capture_incomplete.is_empty(), "{ev:?}");
    assert_eq!(
        (ev.socket_cookie, ev.server_socket_cookie),
        (Some(99), Some(100))
    );
    let stats = e.stats();
    assert_eq!(stats.flows_without_client_hello, 1);
    assert_eq!(stats.tuples_reused, 1);
}
