//! The kernel's ring buffer records as userspace decodes them (`capture::ring`): any bytes,
//! whatever the header claims, then into the engine and the certificate assembler as the
//! daemon's pipeline does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_core::{
    capture::{
        certs::CertAssembler,
        ring::{self, ClockOffset, RingRecord},
    },
    engine::{Engine, EngineLimits},
};

fuzz_target!(|data: &[u8]| {
    let mut engine = Engine::new(EngineLimits {
        max_flows: 8,
        max_buffered_bytes: 1 << 20,
        ..EngineLimits::default()
    });
    let mut certs = CertAssembler::default();
    // The input is a sequence of records, each preceded by its length (one byte, times 4).
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = (usize::from(len) * 4).min(tail.len());
        let (record, after) = tail.split_at(len);
        rest = after;
        match ring::decode(record, ClockOffset::new(i128::from(len as u32) << 20)) {
            RingRecord::Segment(seg) => engine.push(&seg),
            RingRecord::Datagram(d) => engine.push_datagram(&d),
            RingRecord::Cert(chunk) => {
                if let Some(cert) = certs.push(&chunk) {
                    engine.push_cert(cert.cookie, cert.pid, cert.der);
                }
            }
            RingRecord::RequestHead { cookie, bytes } => engine.push_request_head(cookie, bytes),
            RingRecord::Socket(_) | RingRecord::Unknown => {}
        }
    }
    engine.finish();
    engine.drain().for_each(drop);
});
