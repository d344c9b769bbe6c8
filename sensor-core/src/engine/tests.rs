//! The engine on hostile input: every case ends with counters or a `malformed` reason,
//! bounded memory, and no panic; the rest of the table keeps working.

mod quic;
mod reuse;

use std::net::SocketAddr;

use super::*;
use crate::{
    capture::{Received, Segment},
    event::{CaptureLoss, ChainSource, ClientOutcome, Malformed, TlsVersion},
};
use sensor_common::tcp_flags::{ACK, FIN, PSH, SYN};

const CLIENT: &str = "10.1.0.1:40000";
const SERVER: &str = "10.1.0.2:443";

pub(super) fn seg<'a>(
    from_client: bool,
    seq: u32,
    flags: u8,
    payload: &'a [u8],
    ts: u64,
) -> Segment<'a> {
    let (c, s): (SocketAddr, SocketAddr) = (CLIENT.parse().unwrap(), SERVER.parse().unwrap());
    let (src, dst) = if from_client { (c, s) } else { (s, c) };
    Segment {
        ts_ns: ts,
        src,
        dst,
        seq,
        tcp_flags: flags,
        payload,
        missing: 0,
        received: Received::default(),
        attribution: None,
    }
}

pub(super) fn record(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![ty, 3, 3];
    v.extend_from_slice(&(body.len() as u16).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A minimal, well-formed ClientHello with an SNI.
pub(super) fn client_hello(sni: &str) -> Vec<u8> {
    let mut sni_ext = Vec::new();
    let name = sni.as_bytes();
    sni_ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni_ext.push(0);
    sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni_ext.extend_from_slice(name);
    let mut ext = vec![0, 0];
    ext.extend_from_slice(&(sni_ext.len() as u16).to_be_bytes());
    ext.extend_from_slice(&sni_ext);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut msg = vec![1];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    msg
}

/// Run a client payload stream through a fresh engine, then finish; returns the events.
fn run_client(payloads: &[Vec<u8>]) -> (Vec<Handshake>, EngineStats, Engine) {
    let mut e = Engine::new(EngineLimits::default());
    e.push(&seg(true, 999, SYN, &[], 1));
    let mut seq = 1000u32;
    for (i, p) in payloads.iter().enumerate() {
        e.push(&seg(true, seq, ACK | PSH, p, 2 + i as u64));
        seq = seq.wrapping_add(p.len() as u32);
    }
    e.finish();
    let out = e.drain().collect();
    let stats = e.stats();
    (out, stats, e)
}

#[test]
fn a_clean_client_hello_is_reported() {
    let (events, stats, _) = run_client(&[record(22, &client_hello("ok.test"))]);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].server_name.as_deref(), Some("ok.test"));
    assert!(events[0].malformed.is_empty());
    assert_eq!(stats.handshakes, 1);
}

#[test]
fn truncated_records_and_huge_lengths() {
    // A handshake message that claims 2^24 - 1 bytes, inside a sane record.
    let huge = record(22, &[1, 0xff, 0xff, 0xff, 0, 0]);
    let (events, stats, _) = run_client(&[huge]);
    assert!(events.is_empty());
    assert_eq!(stats.flows_not_tls, 1);
    assert_eq!(stats.flows_malformed, 1);

    // A ClientHello cut in the middle of its record: the flow ends unfinished.
    let full = record(22, &client_hello("cut.test"));
    let (events, _, _) = run_client(&[full[..full.len() / 2].to_vec()]);
    assert!(events.is_empty());

    // A record length over 2^14 + 2048.
    let (events, stats, _) = run_client(&[vec![22, 3, 3, 0xff, 0xff, 1, 2, 3]]);
    assert!(events.is_empty());
    assert_eq!(stats.flows_malformed, 1);
}

#[test]
fn a_valid_hello_followed_by_garbage_is_reported_with_a_reason() {
    let mut stream = record(22, &client_hello("garbage.test"));
    stream.extend_from_slice(&[0x99; 64]);
    let (events, _, _) = run_client(&[stream]);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].server_name.as_deref(), Some("garbage.test"));
    assert_eq!(events[0].malformed, vec![Malformed::BadRecordHeader]);
}

#[test]
fn nested_garbage_inside_the_hello_is_a_malformed_reason() {
    // A ClientHello whose extensions block lies about its length.
    let mut ch = client_hello("nested.test");
    let len = ch.len();
    ch[len - 1] ^= 0xff;
    ch.extend_from_slice(&[0, 9, 0xff, 0xff]);
    let body_len = (ch.len() - 4) as u32;
    ch[1..4].copy_from_slice(&body_len.to_be_bytes()[1..]);
    let (events, _, _) = run_client(&[record(22, &ch)]);
    // Either the hello still parses (with bad_extensions) or the message is reported bad;
    // never a panic, never silence.
    let stats_ok = events.is_empty() || !events[0].malformed.is_empty();
    assert!(stats_ok, "{events:?}");
}

#[test]
fn sslv2_hellos_are_counted() {
    let sslv2 = vec![
        0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
    ];
    let (events, stats, _) = run_client(&[sslv2]);
    assert!(events.is_empty());
    assert_eq!(stats.flows_malformed, 1, "{stats:?}");
    assert_eq!(stats.flows_not_tls, 1, "{stats:?}");
}

#[test]
fn zero_length_records_and_thousands_of_tiny_records() {
    let ch = client_hello("tiny.test");
    let mut stream = record(22, &[]);
    for b in &ch {
        stream.extend(record(22, &[*b]));
    }
    let (events, _, _) = run_client(&[stream]);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].server_name.as_deref(), Some("tiny.test"));
    assert_eq!(events[0].malformed, vec![Malformed::EmptyRecord]);
}

#[test]
fn ten_thousand_overlapping_segments_stay_bounded() {
    let mut e = Engine::new(EngineLimits::default());
    e.push(&seg(true, 0, SYN, &[], 1));
    let first = record(22, &client_hello("overlap.test"));
    e.push(&seg(true, 1, ACK, &first, 2));
    let junk = vec![0x42u8; 1400];
    for i in 0..10_000u32 {
        // Every one ahead of a hole, overlapping its neighbours.
        let seq = 1 + first.len() as u32 + 10 + (i % 4000) * 97;
        e.push(&seg(true, seq, ACK, &junk, 3 + u64::from(i)));
        assert!(e.buffered_bytes() <= 2 * EngineLimits::default().stream.max_pending_bytes);
    }
    e.finish();
    let stats = e.stats();
    assert!(stats.gaps > 0, "{stats:?}");
    let events: Vec<_> = e.drain().collect();
    assert_eq!(events.len(), 1);
    assert!(
        events[0].malformed.contains(&Malformed::Gap),
        "{:?}",
        events[0].malformed
    );
}

#[test]
fn a_flow_that_never_finishes_is_reported_when_idle_and_forgotten() {
    let limits = EngineLimits::default();
    let mut e = Engine::new(limits);
    e.push(&seg(true, 0, SYN, &[], 1));
    e.push(&seg(
        true,
        1,
        ACK,
        &record(22, &client_hello("idle.test")),
        2,
    ));
    e.advance(limits.idle_timeout_ns - 1);
    assert_eq!(e.drain().count(), 0, "not idle yet");
    e.advance(limits.idle_timeout_ns + 10);
    let events: Vec<_> = e.drain().collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].client_outcome, ClientOutcome::Unknown);
    assert_eq!(e.stats().flows_expired, 1);
    e.advance(2 * limits.idle_timeout_ns + 20);
    assert_eq!(e.flows(), 0, "the tombstone is forgotten too");
}

#[test]
fn the_flow_table_and_its_memory_are_bounded() {
    let limits = EngineLimits {
        max_flows: 100,
        max_buffered_bytes: 64 * 1024,
        ..EngineLimits::default()
    };
    let mut e = Engine::new(limits);
    let half = record(22, &client_hello("many.test"));
    let half = &half[..half.len() - 3];
    for i in 0..1000u32 {
        let src: SocketAddr = format!("10.2.{}.{}:1000", i / 250, i % 250 + 1)
            .parse()
            .unwrap();
        let s = Segment {
            ts_ns: u64::from(i),
            src,
            dst: SERVER.parse().unwrap(),
            seq: 1,
            tcp_flags: ACK,
            payload: half,
            missing: 0,
            received: Received::default(),
            attribution: None,
        };
        e.push(&s);
        assert!(e.flows() <= 100);
        assert!(e.buffered_bytes() <= 64 * 1024 + 8192);
    }
    let stats = e.stats();
    assert!(
        stats.flows_evicted + stats.flows_evicted_memory >= 900,
        "{stats:?}"
    );
}

#[test]
fn a_close_reports_at_once() {
    let mut e = Engine::new(EngineLimits::default());
    e.push(&seg(true, 0, SYN, &[], 1));
    let ch = record(22, &client_hello("close.test"));
    e.push(&seg(true, 1, ACK, &ch, 2));
    e.push(&seg(true, 1 + ch.len() as u32, FIN | ACK, &[], 3));
    e.push(&seg(false, 0, FIN | ACK, &[], 4));
    let events: Vec<_> = e.drain().collect();
    assert_eq!(events.len(), 1);
}

/// A TLS 1.3 ServerHello (supported_versions 0x0304) choosing TLS_AES_128_GCM_SHA256.
pub(super) fn server_hello_tls13() -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[9; 32]);
    body.push(0);
    body.extend_from_slice(&[0x13, 0x01, 0]);
    let ext = [0x00, 0x2b, 0, 2, 3, 4];
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut msg = vec![2];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    msg
}

/// A TLS 1.3 exchange in which the client's only encrypted record is `client_record` long,
/// and then it closes.
fn tls13_client_answers_with(client_record: usize) -> Handshake {
    let mut e = Engine::new(EngineLimits::default());
    e.push(&seg(true, 0, SYN, &[], 1));
    e.push(&seg(false, 0, SYN | ACK, &[], 2));
    let ch = record(22, &client_hello("hidden-alert.test"));
    e.push(&seg(true, 1, ACK | PSH, &ch, 3));
    let mut server = record(22, &server_hello_tls13());
    server.extend_from_slice(&record(20, &[1]));
    server.extend_from_slice(&record(23, &[0x55; 900]));
    e.push(&seg(false, 1, ACK | PSH, &server, 4));
    let mut seq = 1 + ch.len() as u32;
    let ccs = record(20, &[1]);
    let answer = record(23, &vec![0xaa; client_record]);
    for p in [&ccs, &answer] {
        e.push(&seg(true, seq, ACK | PSH, p, 5));
        seq += p.len() as u32;
    }
    e.push(&seg(true, seq, FIN | ACK, &[], 6));
    e.finish();
    let mut events: Vec<_> = e.drain().collect();
    assert_eq!(events.len(), 1);
    events.remove(0)
}

#[test]
fn a_tls13_client_that_answers_with_an_encrypted_alert_rejected_the_server() {
    // GnuTLS encrypts its bad_certificate alert: 2 bytes, the content type and a 16-byte tag.
    let ev = tls13_client_answers_with(19);
    assert_eq!(ev.tls_version, Some(TlsVersion::Tls13));
    assert_eq!(ev.client_outcome, ClientOutcome::Rejected);
    assert!(ev.alert.is_none());
    // A Finished (here for SHA-256: 4 + 32 + 1 + 16 bytes) and a close is not a rejection.
    let ev = tls13_client_answers_with(53);
    assert_ne!(ev.client_outcome, ClientOutcome::Rejected);
}

/// A client's ClientHello for `sni` on local socket 77 of process 4242.
fn hello_on_socket_77(e: &mut Engine, sni: &str) {
    let ch = record(22, &client_hello(sni));
    let mut s = seg(true, 1, ACK | PSH, &ch, 2);
    s.attribution = Some(crate::capture::Attribution {
        cookie: 77,
        local_is_src: true,
        pid: Some(4242),
        first_on_socket: true,
        ..crate::capture::Attribution::default()
    });
    e.push(&seg(true, 0, SYN, &[], 1));
    e.push(&s);
}

/// A client's ClientHello for `sni` on local socket 77, with a certificate for `cert_names`
/// from the uprobe.
fn uprobe_chain_for(sni: &str, cert_names: &[&str]) -> (Handshake, EngineStats) {
    let cert = rcgen::generate_simple_self_signed(
        cert_names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
    )
    .unwrap();
    let mut e = Engine::new(EngineLimits::default());
    e.push_cert(77, 4242, cert.cert.der().to_vec());
    hello_on_socket_77(&mut e, sni);
    e.finish();
    let mut events: Vec<_> = e.drain().collect();
    assert_eq!(events.len(), 1);
    (events.remove(0), e.stats())
}

#[test]
fn an_uprobe_chain_becomes_the_chain_of_its_socket() {
    let (ev, stats) = uprobe_chain_for("api.example.test", &["*.example.test"]);
    assert_eq!(ev.chain_source, Some(ChainSource::Uprobe));
    assert_eq!(ev.chain.len(), 1);
    assert_eq!(stats.uprobe_chains, 1);
}

#[test]
fn an_uprobe_chain_for_another_name_is_not_taken() {
    // An event loop's thread parsed another socket's chain: the leaf names another host.
    let (ev, stats) = uprobe_chain_for("api.example.test", &["elsewhere.test"]);
    assert!(ev.chain.is_empty());
    assert_eq!(ev.chain_source, None);
    assert_eq!(stats.uprobe_chains_mismatched, 1);
}

/// A TLS 1.3 ClientHello for `sni` on local socket 77 of process 4242, with the chains the
/// uprobe left under other sockets (`(cookie, pid, names)`) after the ClientHello.
fn uprobe_chains_elsewhere(sni: &str, chains: &[(u64, u32, &[&str])]) -> (Handshake, EngineStats) {
    let mut e = Engine::new(EngineLimits::default());
    hello_on_socket_77(&mut e, sni);
    for (cookie, pid, names) in chains {
        let cert = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        e.push_cert(*cookie, *pid, cert.cert.der().to_vec());
    }
    e.finish();
    let mut events: Vec<_> = e
        .drain()
        .filter(|h| h.server_name.as_deref() == Some(sni))
        .collect();
    assert_eq!(events.len(), 1);
    (events.remove(0), e.stats())
}

#[test]
fn a_chain_parsed_while_the_thread_had_opened_another_socket_is_its_handshake_s() {
    // A browser's socket thread sent the ClientHello of socket 78 before it parsed socket
    // 77's certificate: the kernel tied that certificate to 78. Same process, the name asked.
    let (ev, stats) = uprobe_chains_elsewhere(
        "origin.example.test",
        &[(78, 4242, &["origin.example.test"])],
    );
    assert_eq!(ev.chain_source, Some(ChainSource::Uprobe));
    assert_eq!(ev.chain.len(), 1);
    assert_eq!(stats.uprobe_chains_rehomed, 1);
    // Another process's chain for that name is not this client's.
    let (ev, stats) = uprobe_chains_elsewhere(
        "origin.example.test",
        &[(78, 5151, &["origin.example.test"])],
    );
    assert!(ev.chain.is_empty());
    assert_eq!(stats.uprobe_chains_rehomed, 0);
    // Nor is a chain for another name.
    let (ev, _) = uprobe_chains_elsewhere(
        "origin.example.test",
        &[(78, 4242, &["other.example.test"])],
    );
    assert!(ev.chain.is_empty());
    // Two different leaves for the name from that process: which was this socket's is not
    // known (an interceptor may have answered one of them): neither is taken.
    let (ev, stats) = uprobe_chains_elsewhere(
        "origin.example.test",
        &[
            (78, 4242, &["origin.example.test"]),
            (79, 4242, &["origin.example.test"]),
        ],
    );
    assert!(ev.chain.is_empty());
    assert_eq!(stats.uprobe_chains_rehomed, 0);
}

#[test]
fn a_chain_for_another_name_stays_for_the_socket_it_belongs_to() {
    // Socket 77's own chain names another host: not taken, and kept, so that the handshake it
    // belongs to (here socket 78's, reported later) finds it.
    let cert = rcgen::generate_simple_self_signed(vec!["b.example.test".to_owned()]).unwrap();
    let mut e = Engine::new(EngineLimits::default());
    e.push_cert(77, 4242, cert.cert.der().to_vec());
    hello_on_socket_77(&mut e, "a.example.test");
    e.finish();
    let ev: Vec<_> = e.drain().collect();
    assert!(ev[0].chain.is_empty());
    assert_eq!(e.stats().uprobe_chains_mismatched, 1);
    assert!(e.uprobe_certs.contains_key(&77));
}

#[test]
fn injected_data_without_ack_is_not_the_stream() {
    // One junk segment without ACK before the ClientHello: TCP drops it; so does the engine.
    let mut e = Engine::new(EngineLimits::default());
    e.push(&seg(true, 999, SYN, &[], 1));
    e.push(&seg(false, 5000, SYN | ACK, &[], 2));
    e.push(&seg(false, 5001, PSH, b"JUNK JUNK JUNK\r\n", 3));
    let ch = record(22, &client_hello("after-junk.test"));
    e.push(&seg(true, 1000, ACK | PSH, &ch, 4));
    e.finish();
    let events: Vec<_> = e.drain().collect();
    assert_eq!(events.len(), 1, "the flow is still TLS");
    assert_eq!(events[0].server_name.as_deref(), Some("after-junk.test"));
}

#[test]
fn two_different_copies_of_the_same_bytes_are_a_conflict() {
    let ch = record(22, &client_hello("conflict.test"));
    let mut other = ch.clone();
    let last = other.len() - 1;
    other[last] ^= 0xff;
    let mut e = Engine::new(EngineLimits::default());
    e.push(&seg(true, 999, SYN, &[], 1));
    e.push(&seg(true, 1000, ACK | PSH, &ch, 2));
    e.push(&seg(true, 1000, ACK | PSH, &other, 3));
    e.finish();
    let events: Vec<_> = e.drain().collect();
    assert_eq!(events[0].capture_incomplete, [CaptureLoss::Conflict]);
}

#[test]
fn a_tls_flow_the_sensor_lost_is_reported_without_a_client_hello() {
    // The ClientHello's record header, then a hole: nothing to name the server, but the flow
    // started TLS and bytes are missing, so it is reported with what was lost.
    let ch = record(22, &client_hello("lost.test"));
    let mut e = Engine::new(EngineLimits::default());
    e.push(&seg(true, 999, SYN, &[], 1));
    e.push(&seg(true, 1000, ACK | PSH, &ch[..20], 2));
    e.push(&seg(true, 1000 + 40, ACK | PSH, &ch[40..], 3));
    e.finish();
    let events: Vec<_> = e.drain().collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].server_name, None);
    assert_eq!(events[0].capture_incomplete, [CaptureLoss::Gap]);
    // A flow that is simply not TLS stays silent.
    let (events, stats, _) = run_client(&[b"GET / HTTP/1.1\r\n\r\n".to_vec()]);
    assert!(events.is_empty());
    assert_eq!(stats.flows_not_tls, 1);
}

#[test]
fn what_the_kernel_says_it_lost_is_kept_with_the_flow() {
    let ch = record(22, &client_hello("flags.test"));
    let mut e = Engine::new(EngineLimits::default());
    let mut s = seg(true, 1000, ACK | PSH, &ch, 2);
    s.attribution = Some(crate::capture::Attribution {
        cookie: 5,
        local_is_src: true,
        budget_exhausted: true,
        records_lost: true,
        packets_unreadable: true,
        ..crate::capture::Attribution::default()
    });
    e.push(&seg(true, 999, SYN, &[], 1));
    e.push(&s);
    e.finish();
    let events: Vec<_> = e.drain().collect();
    assert_eq!(
        events[0].capture_incomplete,
        [CaptureLoss::Budget, CaptureLoss::Gap, CaptureLoss::RingDrop]
    );
}

#[test]
fn a_connect_request_keeps_its_user_agent() {
    let (events, _, _) = run_client(&[
        b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\nUser-Agent: curl/7.88.1\r\n\r\n"
            .to_vec(),
        record(22, &client_hello("a.test")),
    ]);
    assert_eq!(events[0].proxy_connect.as_deref(), Some("a.test:443"));
    assert_eq!(events[0].proxy_user_agent.as_deref(), Some("curl/7.88.1"));
}

#[test]
fn a_20_kib_connect_reply_is_read_through() {
    let mut e = Engine::new(EngineLimits::default());
    e.push(&seg(true, 999, SYN, &[], 1));
    e.push(&seg(false, 4999, SYN | ACK, &[], 1));
    let request = b"CONNECT padded.test:443 HTTP/1.1\r\nHost: padded.test:443\r\n\r\n".to_vec();
    e.push(&seg(true, 1000, ACK | PSH, &request, 2));
    let mut reply = b"HTTP/1.1 200 Connection established\r\n".to_vec();
    for i in 0..200 {
        reply.extend_from_slice(format!("X-Pad-{i:04}: {}\r\n", "x".repeat(90)).as_bytes());
    }
    reply.extend_from_slice(b"\r\n");
    assert!(reply.len() > 20 * 1024);
    let mut seq = 5000u32;
    for chunk in reply.chunks(1400) {
        e.push(&seg(false, seq, ACK | PSH, chunk, 3));
        seq += chunk.len() as u32;
    }
    let ch = record(22, &client_hello("padded.test"));
    e.push(&seg(true, 1000 + request.len() as u32, ACK | PSH, &ch, 4));
    e.finish();
    let events: Vec<_> = e.drain().collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].server_name.as_deref(), Some("padded.test"));
    assert_eq!(events[0].proxy_connect.as_deref(), Some("padded.test:443"));
    assert!(events[0].capture_incomplete.is_empty(), "{:?}", events[0]);
}

/// A TLS 1.2 ServerHello (no extensions) choosing TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256.
fn server_hello_tls12() -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0);
    body.extend_from_slice(&[0xc0, 0x2b, 0]);
    let mut msg = vec![2];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    msg
}

/// What the kernel tap sends of a client socket: no SYNs, its ClientHello carrying how far it
/// had received the server's stream (`rcv_nxt`), then the server's flight on ingress.
fn kernel_client(sni: &str, server_isn: u32) -> (Engine, Vec<u8>) {
    let mut e = Engine::new(EngineLimits::default());
    let ch = record(22, &client_hello(sni));
    let mut s = seg(true, 1000, ACK | PSH, &ch, 1);
    s.received.from_dst = Some(server_isn.wrapping_add(1));
    e.push(&s);
    (e, ch)
}

#[test]
fn a_server_flight_whose_first_segment_comes_last_is_read_whole() {
    // 400 segments of 64 bytes, the first (the ServerHello's start) last: the receiver's mark
    // on the ClientHello says where the server's stream begins, so the first segment to
    // arrive is held, not taken for the start.
    let mut flight = record(22, &server_hello_tls12());
    while flight.len() < 400 * 64 {
        flight.extend_from_slice(&record(22, &[0x0b; 200]));
    }
    let (mut e, _) = kernel_client("reordered.test", 7000);
    let mut segs: Vec<(u32, &[u8])> = flight
        .chunks(64)
        .enumerate()
        .map(|(i, c)| (7001 + i as u32 * 64, c))
        .collect();
    segs.rotate_left(1);
    for (i, (seq, payload)) in segs.into_iter().enumerate() {
        let mut s = seg(false, seq, ACK | PSH, payload, 2 + i as u64);
        s.received.from_src = Some(7001);
        e.push(&s);
    }
    e.finish();
    let events: Vec<_> = e.drain().collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].tls_version, Some(TlsVersion::Tls12));
    assert!(events[0].cipher.is_some(), "the ServerHello was read");
    assert!(events[0].capture_incomplete.is_empty());
}

#[test]
fn bytes_a_receiver_took_that_the_capture_never_had_are_a_gap() {
    // The server's flight never reached the sensor (a packet it could not read), but the
    // client's next segment acknowledges it: something was there.
    let (mut e, ch) = kernel_client("unseen.test", 7000);
    let cke = record(22, &[0x10; 70]);
    let mut s = seg(true, 1000 + ch.len() as u32, ACK | PSH, &cke, 3);
    s.received.from_dst = Some(7001 + 3000);
    e.push(&s);
    e.finish();
    let events: Vec<_> = e.drain().collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].capture_incomplete, [CaptureLoss::Gap]);
    // Once the kernel says it stopped forwarding (the handshake is over), what receivers take
    // from then on is expected to be unseen.
    let (mut e, ch) = kernel_client("done.test", 7000);
    let app = record(23, &[1; 40]);
    let mut s = seg(true, 1000 + ch.len() as u32, ACK | PSH, &app, 3);
    s.attribution = Some(crate::capture::Attribution {
        cookie: 9,
        local_is_src: true,
        handshake_done: true,
        ..crate::capture::Attribution::default()
    });
    e.push(&s);
    let mut fin = seg(true, 1000 + ch.len() as u32 + 45, FIN | ACK, &[], 4);
    fin.received.from_dst = Some(7001 + 50_000);
    e.push(&fin);
    e.finish();
    let events: Vec<_> = e.drain().collect();
    assert!(events[0].capture_incomplete.is_empty());
}

#[test]
fn the_uprobe_store_evicts_the_oldest_sockets_when_full_and_forgets_silent_ones() {
    let mut e = Engine::new(EngineLimits::default());
    // 1 MiB "certificates" on 12 sockets: the store holds 8 MiB, so the first ones go and the
    // newest stay (it never stops taking new certificates).
    for cookie in 1..=12u64 {
        e.push_cert(cookie, 4242, vec![cookie as u8; 1 << 20]);
    }
    assert!(e.uprobe_bytes() <= UPROBE_BYTES, "{}", e.uprobe_bytes());
    // Exactly eight fit: the four oldest went.
    assert_eq!(e.stats().uprobe_certs_dropped, 4);
    assert!(e.uprobe_certs.contains_key(&12) && e.uprobe_certs.contains_key(&5));
    assert!(!e.uprobe_certs.contains_key(&4));
    // A certificate larger than the whole store is refused, the rest kept.
    e.push_cert(13, 4242, vec![0; UPROBE_BYTES + 1]);
    assert_eq!(e.stats().uprobe_certs_dropped, 5);
    assert!(e.uprobe_certs.contains_key(&12));

    // Silence past the idle timeout: the waiting certificates are forgotten, counted.
    e.advance(EngineLimits::default().idle_timeout_ns + 1);
    assert_eq!(e.uprobe_bytes(), 0);
    assert_eq!(e.stats().uprobe_certs_expired, 8);
    e.push_cert(14, 4242, vec![1; 10]);
    assert_eq!(e.uprobe_bytes(), 10);
}

#[test]
fn a_hello_with_an_oversized_name_is_malformed_and_the_name_not_kept() {
    // 300 bytes: longer than any DNS name (the ALPN list's bound is tested in tls::hello).
    let rec = record(22, &client_hello(&"a".repeat(300)));
    let mut e = Engine::new(EngineLimits::default());
    e.push(&seg(true, 0, SYN, &[], 1));
    e.push(&seg(true, 1, ACK | PSH, &rec, 2));
    e.finish();
    let ev = e.drain().next().unwrap();
    assert_eq!(ev.server_name, None);
    assert!(
        ev.malformed.contains(&Malformed::OversizedField),
        "{:?}",
        ev.malformed
    );
}

#[test]
fn parsed_hellos_and_chains_count_against_the_memory_limit() {
    let mut e = Engine::new(EngineLimits::default());
    let rec = record(22, &client_hello("held.example.test"));
    e.push(&seg(true, 0, SYN, &[], 1));
    e.push(&seg(true, 1, ACK | PSH, &rec, 2));
    // The hello is parsed and its record consumed: what the flow still holds is the summary.
    assert!(e.buffered_bytes() > 0, "the parsed hello is counted");
}

#[test]
fn a_flow_given_up_on_for_memory_says_so_in_its_event() {
    let mut e = Engine::new(EngineLimits {
        max_buffered_bytes: 4096,
        ..EngineLimits::default()
    });
    // ClientHellos waiting for their servers: each holds its parsed hello.
    let ch = record(22, &client_hello("evicted.test"));
    for i in 0..200u32 {
        let src: SocketAddr = format!("10.3.{}.{}:1000", i / 250, i % 250 + 1)
            .parse()
            .unwrap();
        e.push(&Segment {
            ts_ns: u64::from(i) + 1,
            src,
            dst: SERVER.parse().unwrap(),
            seq: 1,
            tcp_flags: ACK,
            payload: &ch,
            missing: 0,
            received: Received::default(),
            attribution: None,
        });
    }
    let evicted = e.stats().flows_evicted_memory;
    assert!(evicted > 0, "{:?}", e.stats());
    let events: Vec<_> = e.drain().collect();
    assert_eq!(events.len() as u64, evicted);
    assert!(
        events
            .iter()
            .all(|h| h.capture_incomplete.contains(&CaptureLoss::Evicted)),
        "{:?}",
        events.first()
    );
}

/// An inbound TLS 1.3 session as the kernel tap on the server's socket sees it: the client's
/// segments on ingress, the server's on egress; the kernel stops forwarding once the server
/// answered the client's Finished (its NewSessionTicket). The client then sends
/// `unseen_request` bytes the kernel no longer forwards, and the server closes, its FIN
/// carrying how far it had received the client's stream. Returns the events reported before
/// the close and those after.
fn inbound_tls13(unseen_request: u32) -> (usize, Vec<Handshake>) {
    inbound_tls13_with(EngineLimits::default(), unseen_request, |_| {})
}

fn inbound_tls13_with(
    limits: EngineLimits,
    unseen_request: u32,
    after_handshake: impl FnOnce(&mut Engine),
) -> (usize, Vec<Handshake>) {
    let mut e = Engine::new(limits);
    let at_server = |mut s: Segment<'static>, from_client: bool, done: bool| {
        s.attribution = Some(crate::capture::Attribution {
            cookie: 31,
            local_is_src: !from_client,
            handshake_done: done,
            ..crate::capture::Attribution::default()
        });
        s
    };
    let ch: &'static [u8] = Vec::leak(record(22, &client_hello("idle.test")));
    let mut server = record(22, &server_hello_tls13());
    server.extend_from_slice(&record(20, &[1]));
    server.extend_from_slice(&record(23, &[0x55; 900]));
    let server: &'static [u8] = Vec::leak(server);
    let finished: &'static [u8] = Vec::leak(record(23, &[0xaa; 53]));
    let ticket: &'static [u8] = Vec::leak(record(23, &[0xbb; 200]));
    e.push(&at_server(seg(true, 1000, ACK | PSH, ch, 1), true, false));
    e.push(&at_server(
        seg(false, 7001, ACK | PSH, server, 2),
        false,
        false,
    ));
    let client_end = 1000 + ch.len() as u32 + finished.len() as u32;
    e.push(&at_server(
        seg(true, 1000 + ch.len() as u32, ACK | PSH, finished, 3),
        true,
        false,
    ));
    let server_end = 7001 + server.len() as u32;
    e.push(&at_server(
        seg(false, server_end, ACK | PSH, ticket, 4),
        false,
        true,
    ));
    after_handshake(&mut e);
    let before = e.drain().count();
    let mut fin = at_server(
        seg(false, server_end + ticket.len() as u32, FIN | ACK, &[], 60),
        false,
        false,
    );
    fin.received.from_dst = Some(client_end + unseen_request);
    e.push(&fin);
    e.push(&at_server(
        seg(true, client_end + unseen_request, FIN | ACK, &[], 61),
        true,
        false,
    ));
    e.finish();
    (before, e.drain().collect())
}

#[test]
fn an_inbound_client_that_finished_its_handshake_and_never_asked_is_idle() {
    // The 408 pattern: the handshake completed, then nothing until the server gave up.
    let (before, events) = inbound_tls13(0);
    assert_eq!(before, 0, "reported only when the connection ends");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].client_outcome, ClientOutcome::Completed);
    assert!(events[0].idle_after_handshake, "{:?}", events[0]);
    // A close_notify is no request.
    let (_, events) = inbound_tls13(24);
    assert!(events[0].idle_after_handshake);
    // A request the kernel no longer forwarded: the server's receiver took it.
    let (_, events) = inbound_tls13(120);
    assert_eq!(events[0].client_outcome, ClientOutcome::Completed);
    assert!(!events[0].idle_after_handshake, "{:?}", events[0]);
}

#[test]
fn a_tls12_client_that_never_sent_application_data_is_idle() {
    let mut e = Engine::new(EngineLimits::default());
    e.push(&seg(true, 0, SYN, &[], 1));
    e.push(&seg(false, 0, SYN | ACK, &[], 2));
    let ch = record(22, &client_hello("idle12.test"));
    e.push(&seg(true, 1, ACK | PSH, &ch, 3));
    let mut server = record(22, &server_hello_tls12());
    server.extend_from_slice(&record(20, &[1]));
    server.extend_from_slice(&record(22, &[0x77; 40]));
    e.push(&seg(false, 1, ACK | PSH, &server, 4));
    let mut client = record(20, &[1]);
    client.extend_from_slice(&record(22, &[0x66; 40]));
    let mut seq = 1 + ch.len() as u32;
    e.push(&seg(true, seq, ACK | PSH, &client, 5));
    seq += client.len() as u32;
    // A close_notify (an alert record), and the close.
    let close_notify = record(21, &[0x44; 26]);
    e.push(&seg(true, seq, ACK | PSH, &close_notify, 6));
    seq += close_notify.len() as u32;
    e.push(&seg(true, seq, FIN | ACK, &[], 7));
    e.push(&seg(false, 1 + server.len() as u32, FIN | ACK, &[], 8));
    let events: Vec<_> = e.drain().collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].client_outcome, ClientOutcome::Completed);
    assert!(events[0].idle_after_handshake, "{:?}", events[0]);
    // The same with a request is not idle.
    let (events, _, _) = run_client(std::slice::from_ref(&ch));
    assert!(!events[0].idle_after_handshake, "no handshake completed");
}

/// An inbound TLS 1.2 session whose client's request passes the tap: the handshake completes
/// with the server's answer. `head` says whether the server's `SSL_read` head comes, and when:
/// before the answer, or after it.
fn inbound_tls12_with_head(wait_ns: u64, head: Option<bool>) -> (usize, Engine) {
    let mut e = Engine::new(EngineLimits {
        request_head_wait_ns: wait_ns,
        ..EngineLimits::default()
    });
    let at_server = |mut s: Segment<'static>, from_client: bool| {
        s.attribution = Some(crate::capture::Attribution {
            cookie: 77,
            local_is_src: !from_client,
            ..crate::capture::Attribution::default()
        });
        s
    };
    let request =
        b"GET /x?secret=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: Mozilla/5.0 Chrome/120.0\r\n\r\n";
    let ch: &'static [u8] = Vec::leak(record(22, &client_hello("head.test")));
    let mut server = record(22, &server_hello_tls12());
    server.extend_from_slice(&record(20, &[1]));
    server.extend_from_slice(&record(22, &[0x77; 40]));
    let server: &'static [u8] = Vec::leak(server);
    let mut client = record(20, &[1]);
    client.extend_from_slice(&record(22, &[0x66; 40]));
    client.extend_from_slice(&record(23, &[0x55; 120]));
    let client: &'static [u8] = Vec::leak(client);
    let answer: &'static [u8] = Vec::leak(record(23, &[0x44; 300]));
    e.push(&at_server(seg(true, 1000, ACK | PSH, ch, 1_000), true));
    e.push(&at_server(
        seg(false, 7001, ACK | PSH, server, 2_000),
        false,
    ));
    e.push(&at_server(
        seg(true, 1000 + ch.len() as u32, ACK | PSH, client, 3_000),
        true,
    ));
    if head == Some(true) {
        e.push_request_head(77, request);
    }
    e.push(&at_server(
        seg(false, 7001 + server.len() as u32, ACK | PSH, answer, 4_000),
        false,
    ));
    let reported = e.drain().count();
    if head == Some(false) {
        e.push_request_head(77, request);
    }
    (reported, e)
}

#[test]
fn a_completed_inbound_handshake_waits_for_its_request_head_and_keeps_only_line_and_agent() {
    // Heads off: reported at once, without one.
    let (reported, _) = inbound_tls12_with_head(0, None);
    assert_eq!(reported, 1);
    // The head came before the answer: reported at once, with it.
    let (reported, mut e) = inbound_tls12_with_head(500_000_000, Some(true));
    assert_eq!(reported, 1);
    assert_eq!(e.stats().request_heads, 1);
    drop(e.drain());
    // The head comes after: the handshake waits for it, then carries it.
    let (reported, mut e) = inbound_tls12_with_head(500_000_000, Some(false));
    assert_eq!(reported, 0, "waiting for the head");
    let events: Vec<_> = e.drain().collect();
    assert_eq!(events.len(), 1);
    let head = events[0].request.as_ref().expect("the head");
    assert_eq!(head.line, "GET /x HTTP/1.1");
    assert_eq!(head.user_agent.as_deref(), Some("Mozilla/5.0 Chrome/120.0"));
    // No head: reported when the wait is over, and counted.
    let (reported, mut e) = inbound_tls12_with_head(500_000_000, None);
    assert_eq!(reported, 0);
    e.advance(4_000 + 400_000_000);
    assert_eq!(e.drain().count(), 0);
    e.advance(4_000 + 600_000_000);
    let events: Vec<_> = e.drain().collect();
    assert_eq!(events.len(), 1);
    assert!(events[0].request.is_none());
    assert_eq!(e.stats().request_heads_missed, 1);
}

#[test]
fn a_held_inbound_tls13_flow_is_reported_when_its_request_head_comes() {
    // The client sent only its Finished before the kernel stopped forwarding: the flow is held
    // to see whether it asks anything; the server's head says it did.
    let limits = EngineLimits {
        request_head_wait_ns: 500_000_000,
        ..EngineLimits::default()
    };
    let (before, events) = inbound_tls13_with(limits, 120, |e| {
        e.push_request_head(31, b"GET / HTTP/1.1\r\nUser-Agent: x/1\r\n\r\n");
    });
    assert_eq!(before, 1, "reported when the head came, not at the close");
    assert!(events.is_empty());
}

/// A CA-signed leaf for `name` and its CA's certificate.
fn signed_leaf(name: &str) -> (Vec<u8>, Vec<u8>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "Chain Test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_der = ca.self_signed(&ca_key).unwrap().der().to_vec();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec![name.to_owned()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, name);
    let leaf = leaf
        .signed_by(&KeyPair::generate().unwrap(), &issuer)
        .unwrap();
    (leaf.der().to_vec(), ca_der)
}

/// An outbound TLS 1.3 handshake on local client socket 88, completed at time 4 (the tap's
/// handshake-done mark on the server's ticket) and still open; `leaf` came from the uprobe
/// before it.
fn outbound_tls13_done(limits: EngineLimits, leaf: Vec<u8>) -> Engine {
    let mut e = Engine::new(limits);
    e.push_cert(88, 4242, leaf);
    let at_client = |mut s: Segment<'static>, from_client: bool, done: bool| {
        s.attribution = Some(crate::capture::Attribution {
            cookie: 88,
            local_is_src: from_client,
            handshake_done: done,
            ..crate::capture::Attribution::default()
        });
        s
    };
    let ch: &'static [u8] = Vec::leak(record(22, &client_hello("chain.test")));
    let mut server = record(22, &server_hello_tls13());
    server.extend_from_slice(&record(20, &[1]));
    server.extend_from_slice(&record(23, &[0x55; 900]));
    let server: &'static [u8] = Vec::leak(server);
    let finished: &'static [u8] = Vec::leak(record(23, &[0xaa; 53]));
    let ticket: &'static [u8] = Vec::leak(record(23, &[0xbb; 200]));
    e.push(&at_client(seg(true, 1, ACK | PSH, ch, 1), true, false));
    e.push(&at_client(
        seg(false, 1, ACK | PSH, server, 2),
        false,
        false,
    ));
    e.push(&at_client(
        seg(true, 1 + ch.len() as u32, ACK | PSH, finished, 3),
        true,
        false,
    ));
    e.push(&at_client(
        seg(false, 1 + server.len() as u32, ACK | PSH, ticket, 4),
        false,
        true,
    ));
    e
}

#[test]
fn a_tls13_leaf_alone_from_the_uprobe_waits_for_the_rest_of_its_chain() {
    let (leaf, ca) = signed_leaf("chain.test");
    let limits = EngineLimits {
        uprobe_chain_wait_ns: 500,
        ..EngineLimits::default()
    };
    // The client verifies after its handshake (wget with GnuTLS): the rest comes then.
    let mut e = outbound_tls13_done(limits, leaf.clone());
    assert_eq!(e.drain().count(), 0, "held for the rest of the chain");
    e.push_cert(88, 4242, leaf.clone());
    e.push_cert(88, 4242, ca.clone());
    e.advance(100);
    assert_eq!(e.drain().count(), 0, "the wait is not over");
    e.advance(505);
    let events: Vec<_> = e.drain().collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].chain.len(), 2, "the leaf once, then its CA");
    assert_eq!(events[0].chain_source, Some(ChainSource::Uprobe));
    assert_eq!(e.stats().uprobe_chains_awaited, 1);

    // Nothing more comes: reported with the leaf when the wait is over.
    let mut e = outbound_tls13_done(limits, leaf.clone());
    e.advance(505);
    let events: Vec<_> = e.drain().collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].chain.len(), 1);

    // A self-signed leaf is all there is: no wait. Nor with the wait off.
    let own = rcgen::generate_simple_self_signed(vec!["chain.test".to_owned()]).unwrap();
    let mut e = outbound_tls13_done(limits, own.cert.der().to_vec());
    assert_eq!(e.drain().count(), 1);
    let mut e = outbound_tls13_done(EngineLimits::default(), leaf);
    assert_eq!(e.drain().count(), 1);
    assert_eq!(e.stats().uprobe_chains_awaited, 0);
}
