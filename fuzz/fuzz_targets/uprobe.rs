//! Certificates from the d2i_X509 uprobe: the DER is whatever a server sent, the chunking is
//! the kernel's. The bytes describe chunks (offset, lengths, which certificate) and their
//! payloads; whole certificates go to the engine as a socket's uprobe chain, and a handshake
//! on that socket takes them (x509 parsing, the name check).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_core::{
    capture::{
        Attribution, Received, Segment,
        certs::{CertAssembler, CertChunk},
    },
    engine::{Engine, EngineLimits},
    event::Event,
};

/// A TLS 1.3 ClientHello record for `fuzz.test`.
fn hello() -> Vec<u8> {
    let name = b"fuzz.test";
    let mut sni = vec![0, 0];
    sni.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
    sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 1, 1, 0]);
    body.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    body.extend_from_slice(&sni);
    let mut msg = vec![1, 0];
    msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
    msg.extend_from_slice(&body);
    let mut record = vec![22, 3, 1];
    record.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    record.extend_from_slice(&msg);
    record
}

fuzz_target!(|data: &[u8]| {
    let mut assembler = CertAssembler::default();
    let mut engine = Engine::new(EngineLimits {
        max_flows: 4,
        ..EngineLimits::default()
    });
    let mut rest = data;
    // Each chunk: [cert id][offset hi][offset lo][total hi][total lo][der_len hi][der_len lo][len]
    while rest.len() >= 8 {
        let (h, tail) = rest.split_at(8);
        let len = usize::from(h[7]).min(tail.len());
        let (payload, after) = tail.split_at(len);
        rest = after;
        let chunk = CertChunk {
            ts_ns: u64::from(h[0]),
            pid_tgid: 42,
            cookie: u64::from(h[0] & 3),
            offset: u32::from(u16::from_be_bytes([h[1], h[2]])),
            total_len: u32::from(u16::from_be_bytes([h[3], h[4]])),
            der_len: u64::from(u16::from_be_bytes([h[5], h[6]])),
            data: payload,
        };
        if let Some(cert) = assembler.push(&chunk) {
            engine.push_cert(cert.cookie, cert.pid, cert.der);
        }
    }
    // A ClientHello on each socket that may hold certificates.
    let hello = hello();
    for cookie in 1..4u64 {
        let client = format!("10.0.0.1:{}", 40000 + cookie).parse().unwrap();
        engine.push(&Segment {
            ts_ns: 1,
            src: client,
            dst: "10.0.0.2:443".parse().unwrap(),
            seq: 1,
            tcp_flags: 0x18,
            payload: &hello,
            missing: 0,
            received: Received::default(),
            attribution: Some(Attribution {
                cookie,
                local_is_src: true,
                pid: Some(42),
                first_on_socket: true,
                ..Attribution::default()
            }),
        });
    }
    engine.finish();
    for hs in engine.drain() {
        // The JSON contract, and reading it back as the journal does.
        let json = Event::observed(hs).to_json();
        let _ = serde_json::from_str::<Event>(&json);
    }
});
