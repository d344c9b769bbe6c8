//! The capture file reader (pcap-parser, etherparse) feeding the engine.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_core::{
    capture::pcap::CaptureReader,
    engine::{Engine, EngineLimits},
};

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = CaptureReader::new(data) else {
        return;
    };
    let mut engine = Engine::new(EngineLimits::default());
    for _ in 0..10_000 {
        match reader.read(64, &mut |p| engine.push_packet(p)) {
            Ok(true) => continue,
            _ => break,
        }
    }
    engine.finish();
    engine.drain().for_each(drop);
});
