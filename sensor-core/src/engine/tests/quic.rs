//! The engine on QUIC: Initial packets built and protected as a real stack does (rustls'
//! Initial keys), split, shuffled, retried, injected and lied about.

use std::net::SocketAddr;

use super::{client_hello, server_hello_tls13};
use crate::engine::*;
use crate::{
    capture::Datagram,
    event::{CaptureLoss, ClientOutcome, Malformed, TlsVersion, Transport},
    quic::{QuicVersion, initial::InitialKeys, packet::Kind},
};

const CLIENT: &str = "10.1.0.1:50000";
const SERVER: &str = "10.1.0.2:443";
const DCID: &[u8] = &[0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];
const CLIENT_SCID: &[u8] = &[0xc1; 8];
const SERVER_SCID: &[u8] = &[0x5e; 8];

fn dgram(from_client: bool, payload: &[u8], ts: u64) -> Datagram<'_> {
    let (c, s): (SocketAddr, SocketAddr) = (CLIENT.parse().unwrap(), SERVER.parse().unwrap());
    let (src, dst) = if from_client { (c, s) } else { (s, c) };
    Datagram {
        ts_ns: ts,
        src,
        dst,
        payload,
        missing: 0,
        attribution: None,
    }
}

fn varint(v: u64) -> Vec<u8> {
    match v {
        0..=63 => vec![v as u8],
        64..=16383 => (0x4000 | v as u16).to_be_bytes().to_vec(),
        _ => (0x8000_0000 | v as u32).to_be_bytes().to_vec(),
    }
}

fn crypto(offset: u64, data: &[u8]) -> Vec<u8> {
    let mut f = vec![0x06];
    f.extend(varint(offset));
    f.extend(varint(data.len() as u64));
    f.extend_from_slice(data);
    f
}

/// A protected Initial packet of `version` (2-byte packet number), its frames padded so that
/// a client's datagram is 1200 bytes.
fn initial(
    keys: &InitialKeys,
    from_client: bool,
    dcid: &[u8],
    scid: &[u8],
    pn: u64,
    frames: &[u8],
) -> Vec<u8> {
    let v = keys.version();
    let mut payload = frames.to_vec();
    let mut header = vec![0xc1 | (v.long_bits(Kind::Initial) << 4)];
    header.extend(v.wire().to_be_bytes());
    header.push(dcid.len() as u8);
    header.extend_from_slice(dcid);
    header.push(scid.len() as u8);
    header.extend_from_slice(scid);
    header.push(0); // no token
    let overhead = header.len() + 2 + 2 + 16;
    if from_client && overhead + payload.len() < 1200 {
        payload.resize(1200 - overhead, 0);
    }
    let len = 2 + payload.len() + 16;
    header.extend((0x4000 | len as u16).to_be_bytes());
    header.extend((pn as u16).to_be_bytes());
    keys.encrypt(from_client, &header, pn, &payload)
}

/// A short header (1-RTT) packet: its payload is opaque to the sensor.
fn short(dcid: &[u8]) -> Vec<u8> {
    let mut p = vec![0x41];
    p.extend_from_slice(dcid);
    p.extend([0x77; 40]);
    p
}

fn events(e: &mut Engine) -> Vec<Handshake> {
    e.drain().collect()
}

/// A ClientHello in two CRYPTO frames, in two datagrams that arrive in reverse order; the
/// server's Initial with its ServerHello; the client's first 1-RTT packet.
fn handshake(version: QuicVersion) -> (Engine, Vec<Handshake>) {
    let keys = InitialKeys::new(version, DCID);
    let ch = client_hello("quic.test");
    let (a, b) = ch.split_at(20);
    let first = initial(&keys, true, DCID, CLIENT_SCID, 0, &crypto(0, a));
    let second = initial(&keys, true, DCID, CLIENT_SCID, 1, &crypto(20, b));
    let mut e = Engine::new(EngineLimits::default());
    e.push_datagram(&dgram(true, &second, 1));
    e.push_datagram(&dgram(true, &first, 2));
    let sh = initial(
        &keys,
        false,
        CLIENT_SCID,
        SERVER_SCID,
        0,
        &crypto(0, &server_hello_tls13()),
    );
    e.push_datagram(&dgram(false, &sh, 3));
    assert!(
        events(&mut e).is_empty(),
        "reported before the client finished"
    );
    e.push_datagram(&dgram(true, &short(SERVER_SCID), 4));
    let out = events(&mut e);
    (e, out)
}

#[test]
fn a_split_and_shuffled_client_hello_is_read_and_the_handshake_reported_when_the_client_finishes() {
    for v in QuicVersion::ALL {
        let (e, out) = handshake(*v);
        assert_eq!(out.len(), 1, "{v}");
        let h = &out[0];
        assert_eq!(h.transport, Transport::Quic);
        assert_eq!(h.quic.as_ref().map(|q| q.version), Some(*v));
        assert_eq!(h.server_name.as_deref(), Some("quic.test"));
        assert_eq!(h.tls_version, Some(TlsVersion::Tls13));
        assert_eq!(h.client_outcome, ClientOutcome::Completed);
        // The test's ClientHello offers TLS 1.2 at most (no supported_versions).
        assert!(h.ja4.as_deref().unwrap().starts_with("q12d"), "{:?}", h.ja4);
        assert_eq!(h.src_port, 50000, "the client is the Initial's sender");
        assert!(
            h.malformed.is_empty() && h.capture_incomplete.is_empty(),
            "{h:?}"
        );
        assert_eq!(e.stats().quic_flows, 1);
    }
}

#[test]
fn other_udp_opens_no_flow() {
    let mut e = Engine::new(EngineLimits::default());
    // DNS, a short Initial (under 1200 bytes), and an unknown version.
    e.push_datagram(&dgram(true, &[0x12, 0x34, 1, 0, 0, 1, 0, 0], 1));
    let keys = InitialKeys::new(QuicVersion::V1, DCID);
    let mut small = initial(&keys, false, DCID, CLIENT_SCID, 0, &crypto(0, b"x"));
    e.push_datagram(&dgram(true, &small, 2));
    small[1..5].copy_from_slice(&[0xff, 0, 0, 29]);
    small.resize(1200, 0);
    e.push_datagram(&dgram(true, &small, 3));
    e.finish();
    assert!(events(&mut e).is_empty());
    assert_eq!((e.stats().datagrams, e.stats().datagrams_not_quic), (3, 3));
    assert_eq!(e.flows(), 0);
}

#[test]
fn a_packet_that_does_not_authenticate_is_dropped_as_a_receiver_drops_it() {
    let keys = InitialKeys::new(QuicVersion::V1, DCID);
    let other = InitialKeys::new(QuicVersion::V1, &[9; 8]);
    let mut e = Engine::new(EngineLimits::default());
    let real = initial(
        &keys,
        true,
        DCID,
        CLIENT_SCID,
        0,
        &crypto(0, &client_hello("real.test")),
    );
    // An injected Initial protected with other keys, and one whose bytes were flipped.
    let forged = initial(
        &other,
        true,
        DCID,
        CLIENT_SCID,
        1,
        &crypto(0, &client_hello("fake.test")),
    );
    let mut flipped = real.clone();
    flipped[60] ^= 1;
    for (i, p) in [&forged, &flipped, &real].into_iter().enumerate() {
        e.push_datagram(&dgram(true, p, i as u64));
    }
    e.finish();
    let out = events(&mut e);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].server_name.as_deref(), Some("real.test"));
    assert_eq!(out[0].quic.as_ref().unwrap().initial_packets_dropped, 2);
}

#[test]
fn an_injected_crypto_frame_that_disagrees_is_a_conflict() {
    // Initial keys are public: anyone on the path can protect an Initial packet. Two copies
    // of the ClientHello's bytes that differ mean the sensor cannot know which one the server
    // took.
    let keys = InitialKeys::new(QuicVersion::V1, DCID);
    let ch = client_hello("real.test");
    let mut fake = ch.clone();
    let at = fake.len() - 3;
    fake[at] = b'x';
    let mut e = Engine::new(EngineLimits::default());
    for (pn, body) in [(0, &ch), (1, &fake)] {
        let p = initial(&keys, true, DCID, CLIENT_SCID, pn, &crypto(0, body));
        e.push_datagram(&dgram(true, &p, pn));
    }
    e.finish();
    let out = events(&mut e);
    assert_eq!(out.len(), 1);
    assert!(
        out[0].capture_incomplete.contains(&CaptureLoss::Conflict),
        "{:?}",
        out[0].capture_incomplete
    );
}

#[test]
fn after_a_retry_the_client_initial_is_read_with_the_retry_connection_id() {
    let keys = InitialKeys::new(QuicVersion::V1, DCID);
    let mut e = Engine::new(EngineLimits::default());
    let first = initial(
        &keys,
        true,
        DCID,
        CLIENT_SCID,
        0,
        &crypto(0, &client_hello("retry.test")),
    );
    e.push_datagram(&dgram(true, &first, 1));
    // Retry: long header type 3 (version 1), the new SCID, a token and a 16-byte tag.
    let mut retry = vec![0xf0, 0, 0, 0, 1, CLIENT_SCID.len() as u8];
    retry.extend_from_slice(CLIENT_SCID);
    retry.push(SERVER_SCID.len() as u8);
    retry.extend_from_slice(SERVER_SCID);
    retry.extend([0x70; 24]);
    e.push_datagram(&dgram(false, &retry, 2));
    let new_keys = InitialKeys::new(QuicVersion::V1, SERVER_SCID);
    let again = initial(
        &new_keys,
        true,
        SERVER_SCID,
        CLIENT_SCID,
        1,
        &crypto(0, &client_hello("retry.test")),
    );
    e.push_datagram(&dgram(true, &again, 3));
    let sh = initial(
        &new_keys,
        false,
        CLIENT_SCID,
        SERVER_SCID,
        0,
        &crypto(0, &server_hello_tls13()),
    );
    e.push_datagram(&dgram(false, &sh, 4));
    e.push_datagram(&dgram(true, &short(SERVER_SCID), 5));
    let out = events(&mut e);
    assert_eq!(out.len(), 1);
    let q = out[0].quic.as_ref().unwrap();
    assert!(q.retry);
    assert_eq!(q.initial_packets_dropped, 0);
    assert_eq!(out[0].client_outcome, ClientOutcome::Completed);
}

#[test]
fn a_client_that_closes_with_a_tls_alert_rejected_the_server() {
    let keys = InitialKeys::new(QuicVersion::V1, DCID);
    let mut e = Engine::new(EngineLimits::default());
    let ch = initial(
        &keys,
        true,
        DCID,
        CLIENT_SCID,
        0,
        &crypto(0, &client_hello("no.test")),
    );
    e.push_datagram(&dgram(true, &ch, 1));
    let sh = initial(
        &keys,
        false,
        CLIENT_SCID,
        SERVER_SCID,
        0,
        &crypto(0, &server_hello_tls13()),
    );
    e.push_datagram(&dgram(false, &sh, 2));
    // CONNECTION_CLOSE with CRYPTO_ERROR 0x0100 + 42 (bad_certificate).
    let close = initial(
        &keys,
        true,
        SERVER_SCID,
        CLIENT_SCID,
        1,
        &[0x1c, 0x41, 0x2a, 0x06, 0x00],
    );
    e.push_datagram(&dgram(true, &close, 3));
    let out = events(&mut e);
    assert_eq!(out.len(), 1, "a rejection is reported at once");
    assert_eq!(out[0].client_outcome, ClientOutcome::Rejected);
    assert_eq!(out[0].alert.map(|a| a.code), Some(42));
}

#[test]
fn lies_in_headers_frames_and_offsets_are_malformed_reasons() {
    let keys = InitialKeys::new(QuicVersion::V1, DCID);
    let mut e = Engine::new(EngineLimits::default());
    let mut frames = crypto(0, &client_hello("lies.test"));
    // A CRYPTO frame at an offset no handshake reaches, and a STREAM frame.
    frames.extend(crypto(1 << 20, b"far"));
    frames.extend([0x08, 0x00]);
    let mut d = initial(&keys, true, DCID, CLIENT_SCID, 0, &frames);
    // A coalesced packet whose header does not parse.
    d.extend([0xc0, 0, 0, 0, 1, 30]);
    e.push_datagram(&dgram(true, &d, 1));
    e.finish();
    let out = events(&mut e);
    assert_eq!(out.len(), 1);
    for m in [
        Malformed::QuicCryptoOffset,
        Malformed::BadQuicFrame,
        Malformed::BadQuicHeader,
    ] {
        assert!(out[0].malformed.contains(&m), "{m}: {:?}", out[0].malformed);
    }
    assert_eq!(out[0].server_name.as_deref(), Some("lies.test"));
}

#[test]
fn a_quic_flow_and_a_tcp_flow_on_the_same_ports_are_two_flows() {
    let (mut e, out) = handshake(QuicVersion::V1);
    assert_eq!(out.len(), 1);
    let ch = tests_record(&client_hello("tcp.test"));
    let c: SocketAddr = CLIENT.parse().unwrap();
    let s: SocketAddr = SERVER.parse().unwrap();
    e.push(&Segment {
        ts_ns: 10,
        src: c,
        dst: s,
        seq: 1,
        tcp_flags: sensor_common::tcp_flags::ACK,
        payload: &ch,
        missing: 0,
        received: Default::default(),
        attribution: None,
    });
    e.finish();
    let tcp = events(&mut e);
    assert_eq!(tcp.len(), 1);
    assert_eq!(tcp[0].transport, Transport::Tcp);
    assert!(tcp[0].ja4.as_deref().unwrap().starts_with('t'));
}

fn tests_record(body: &[u8]) -> Vec<u8> {
    let mut v = vec![22, 3, 1];
    v.extend_from_slice(&(body.len() as u16).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A QUIC attempt to `quic.test` at time 1 ms (answered or not), then a TCP handshake to the
/// same name from the same client `tcp_after_ms` later.
fn quic_then_tcp(answered: bool, tcp_after_ms: u64) -> Handshake {
    use sensor_common::tcp_flags::{ACK, PSH, SYN};
    let keys = InitialKeys::new(QuicVersion::V1, DCID);
    let mut e = Engine::new(EngineLimits::default());
    let ms = 1_000_000;
    let ch = initial(
        &keys,
        true,
        DCID,
        CLIENT_SCID,
        0,
        &crypto(0, &client_hello("quic.test")),
    );
    e.push_datagram(&dgram(true, &ch, ms));
    if answered {
        let sh = initial(
            &keys,
            false,
            CLIENT_SCID,
            SERVER_SCID,
            0,
            &crypto(0, &server_hello_tls13()),
        );
        e.push_datagram(&dgram(false, &sh, 2 * ms));
    }
    let t = ms + tcp_after_ms * ms;
    let hello = super::record(22, &client_hello("quic.test"));
    e.push(&super::seg(true, 0, SYN, &[], t));
    e.push(&super::seg(true, 1, ACK | PSH, &hello, t + 1));
    e.finish();
    let out = events(&mut e);
    out.into_iter()
        .find(|h| h.transport == Transport::Tcp)
        .expect("the TCP handshake")
}

#[test]
fn a_tcp_handshake_after_an_unanswered_quic_attempt_to_the_same_name_says_so() {
    assert!(quic_then_tcp(false, 400).quic_unanswered);
    // Answered: QUIC worked; too soon: the client raced both; too late: another visit.
    assert!(!quic_then_tcp(true, 400).quic_unanswered);
    assert!(!quic_then_tcp(false, 20).quic_unanswered);
    assert!(!quic_then_tcp(false, 30_000).quic_unanswered);
}

#[test]
fn a_second_connection_on_the_same_udp_socket_is_a_second_handshake() {
    // The first connection, completed and reported.
    let (mut e, out) = handshake(QuicVersion::V1);
    assert_eq!(out.len(), 1);
    // What the old connection still sends (a late Initial to the server's ID) is ignored.
    let keys = InitialKeys::new(QuicVersion::V1, DCID);
    let late = initial(&keys, true, SERVER_SCID, CLIENT_SCID, 9, &[0x01]);
    e.push_datagram(&dgram(true, &late, 5));
    // A new connection from the same socket: another connection ID, another name.
    let other_dcid = [0x42; 8];
    let keys = InitialKeys::new(QuicVersion::V1, &other_dcid);
    let ch = initial(
        &keys,
        true,
        &other_dcid,
        CLIENT_SCID,
        0,
        &crypto(0, &client_hello("second.test")),
    );
    e.push_datagram(&dgram(true, &ch, 6));
    e.finish();
    let out = events(&mut e);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].server_name.as_deref(), Some("second.test"));
}

#[test]
fn a_client_that_does_not_finish_after_the_server_flight_is_reported_as_aborted_soon() {
    let keys = InitialKeys::new(QuicVersion::V1, DCID);
    let mut e = Engine::new(EngineLimits::default());
    let s = 1_000_000_000;
    let ch = initial(
        &keys,
        true,
        DCID,
        CLIENT_SCID,
        0,
        &crypto(0, &client_hello("refused.test")),
    );
    e.push_datagram(&dgram(true, &ch, s));
    let sh = initial(
        &keys,
        false,
        CLIENT_SCID,
        SERVER_SCID,
        0,
        &crypto(0, &server_hello_tls13()),
    );
    e.push_datagram(&dgram(false, &sh, s + 1));
    // The client's Handshake packet (its CONNECTION_CLOSE, which the sensor cannot read).
    let mut hs = vec![0xe0, 0, 0, 0, 1, 8];
    hs.extend_from_slice(SERVER_SCID);
    hs.push(8);
    hs.extend_from_slice(CLIENT_SCID);
    hs.extend([0x40, 0x20]);
    hs.extend([0x33; 32]);
    e.push_datagram(&dgram(true, &hs, s + 2));
    e.advance(2 * s);
    assert!(events(&mut e).is_empty(), "too soon");
    e.advance(5 * s);
    let out = events(&mut e);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].client_outcome, ClientOutcome::Aborted);
}
