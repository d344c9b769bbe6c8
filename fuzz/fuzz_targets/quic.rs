//! QUIC: header parsing, Initial decryption, frames and CRYPTO reassembly. The input is a
//! sequence of datagrams of one connection. Each is either raw bytes (header parsing and
//! packets that do not authenticate) or frames the target protects as a real stack would
//! with the connection's Initial keys (which anyone can derive), so that the fuzzer reaches
//! the frame parser and the CRYPTO streams behind the AEAD.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_core::{
    capture::Datagram,
    engine::{Engine, EngineLimits},
    event::Event,
    quic::{QuicVersion, frames, initial::InitialKeys, packet},
};

const DCID: &[u8] = &[1, 2, 3, 4, 5, 6, 7, 8];
const SCID: &[u8] = &[9; 8];

/// A protected Initial packet carrying `frames`, padded to 1200 bytes when the client sends.
fn protect(keys: &InitialKeys, from_client: bool, pn: u64, frames: &[u8]) -> Vec<u8> {
    let v = keys.version();
    let mut payload = frames.to_vec();
    // The header protection sample needs 4 bytes past the packet number.
    payload.resize(payload.len().max(4), 0);
    let mut header = vec![0xc1 | (v.long_bits(packet::Kind::Initial) << 4)];
    header.extend(v.wire().to_be_bytes());
    let (dcid, scid) = if from_client {
        (DCID, SCID)
    } else {
        (SCID, DCID)
    };
    header.push(dcid.len() as u8);
    header.extend_from_slice(dcid);
    header.push(scid.len() as u8);
    header.extend_from_slice(scid);
    header.push(0);
    if from_client && header.len() + 4 + payload.len() + 16 < 1200 {
        payload.resize(1200 - header.len() - 4 - 16, 0);
    }
    let len = (2 + payload.len() + 16).min(0x3fff);
    payload.truncate(len - 2 - 16);
    header.extend((0x4000 | len as u16).to_be_bytes());
    header.extend((pn as u16).to_be_bytes());
    keys.encrypt(from_client, &header, pn, &payload)
}

fuzz_target!(|data: &[u8]| {
    // The parsers on their own, on the raw input.
    for p in packet::Packets::new(data).take(64) {
        let _ = p;
    }
    let _ = frames::read(data, &mut |_| {});

    let limits = EngineLimits {
        max_flows: 8,
        max_buffered_bytes: 1 << 20,
        ..EngineLimits::default()
    };
    let mut engine = Engine::new(limits);
    let client = "10.0.0.1:40000".parse().unwrap();
    let server = "10.0.0.2:443".parse().unwrap();
    let version = if data.first().is_some_and(|b| b & 1 == 1) {
        QuicVersion::V2
    } else {
        QuicVersion::V1
    };
    let keys = InitialKeys::new(version, DCID);
    let mut pn = [0u64; 2];
    let mut rest = data.get(1..).unwrap_or_default();
    let mut ts = 0u64;
    // Each datagram: [control][len hi][len lo] then `len` bytes. Control bit 0: from the
    // server; bit 1: raw bytes, else frames to protect; bit 2: repeat the packet number.
    while rest.len() >= 3 {
        let (head, tail) = rest.split_at(3);
        let len = usize::from(u16::from_be_bytes([head[1], head[2]])).min(tail.len());
        let (body, after) = tail.split_at(len);
        rest = after;
        let dir = usize::from(head[0] & 1);
        let from_client = dir == 0;
        let bytes = if head[0] & 2 != 0 {
            body.to_vec()
        } else {
            if head[0] & 4 == 0 {
                pn[dir] += 1;
            }
            protect(&keys, from_client, pn[dir], body)
        };
        ts += 1_000_000;
        let (src, dst) = if from_client {
            (client, server)
        } else {
            (server, client)
        };
        engine.push_datagram(&Datagram {
            ts_ns: ts,
            src,
            dst,
            payload: &bytes,
            missing: u32::from(head[0] & 8 != 0) * 3,
            attribution: None,
        });
        for h in engine.drain() {
            let json = Event::observed(h).to_json();
            let _ = serde_json::from_str::<Event>(&json);
        }
    }
    engine.finish();
    for h in engine.drain() {
        let json = Event::observed(h).to_json();
        let _ = serde_json::from_str::<Event>(&json);
    }
});
