//! Reassembly and TLS parsing from raw segments: the bytes describe a sequence of segments of
//! one connection (direction, flags, sequence offset, payload), fed to the engine as they come.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_core::{
    capture::{Received, Segment},
    engine::{Engine, EngineLimits},
    event::Event,
};

fuzz_target!(|data: &[u8]| {
    let limits = EngineLimits {
        max_flows: 8,
        max_buffered_bytes: 1 << 20,
        ..EngineLimits::default()
    };
    let mut engine = Engine::new(limits);
    let client = "10.0.0.1:40000".parse().unwrap();
    let server = "10.0.0.2:443".parse().unwrap();
    let mut seq = [1000u32, 5000u32];
    let mut rest = data;
    let mut ts = 0u64;
    // Each segment: [dir/flags][seq jitter][len] then `len` payload bytes.
    while rest.len() >= 3 {
        let (head, tail) = rest.split_at(3);
        let dir = usize::from(head[0] & 1);
        let flags = head[0] >> 1;
        let jitter = i32::from(head[1] as i8);
        let len = usize::from(head[2]).min(tail.len());
        let (payload, after) = tail.split_at(len);
        rest = after;
        ts += 1_000_000;
        let start = seq[dir].wrapping_add_signed(jitter);
        let (src, dst) = if dir == 0 {
            (client, server)
        } else {
            (server, client)
        };
        engine.push(&Segment {
            ts_ns: ts,
            src,
            dst,
            seq: start,
            tcp_flags: flags,
            payload,
            missing: u32::from(head[1] & 0x80 != 0) * 7,
            // How far the sender had received the other direction, now and then off by the
            // jitter.
            received: Received {
                from_src: None,
                from_dst: (head[0] & 0x80 != 0).then(|| seq[1 - dir].wrapping_add_signed(jitter)),
            },
            attribution: None,
        });
        if jitter >= 0 {
            seq[dir] = start.wrapping_add(len as u32);
        }
        engine.drain().for_each(drop);
    }
    engine.advance(ts + 120_000_000_000);
    engine.finish();
    for hs in engine.drain() {
        // The JSON contract, and reading it back as the journal does.
        let json = Event::observed(hs).to_json();
        let _ = serde_json::from_str::<Event>(&json);
    }
});
