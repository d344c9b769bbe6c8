//! The capture file reader (pcap-parser, etherparse) feeding the engine; and the in-place
//! reader (a mapped file) against the streaming one: on any bytes they must read the same
//! packets, count the same and stop the same way. And the bytes as one frame of each link
//! type: the layer-by-layer decoder must answer as etherparse's whole-packet slicer does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_core::{
    capture::{
        Packet,
        packet::{decode, decode_sliced, linktype},
        pcap::{CaptureError, CaptureReader, CaptureStats},
    },
    engine::{Engine, EngineLimits},
};

/// What a reader handed on (time, ends, payload) and counted, and how it stopped.
type Read = (Vec<(u64, String, Vec<u8>)>, CaptureStats, String);

fn read_all(
    reader: Result<CaptureReader<'_>, CaptureError>,
    mut engine: Option<&mut Engine>,
) -> Read {
    let mut reader = match reader {
        Ok(r) => r,
        Err(e) => return (Vec::new(), CaptureStats::default(), e.to_string()),
    };
    let mut seen = Vec::new();
    let mut sink = |p: &Packet<'_>| {
        let ends = match p {
            Packet::Tcp(s) => format!("tcp {} {} {}", s.src, s.dst, s.seq),
            Packet::Udp(d) => format!("udp {} {}", d.src, d.dst),
        };
        seen.push((p.ts_ns(), ends, p.payload().to_vec()));
        if let Some(engine) = engine.as_deref_mut() {
            engine.push_packet(p);
        }
    };
    let mut end = String::from("too long");
    for _ in 0..10_000 {
        match reader.read(64, &mut sink) {
            Ok(true) => continue,
            Ok(false) => end.clear(),
            Err(e) => end = e.to_string(),
        }
        break;
    }
    (seen, reader.stats(), end)
}

fuzz_target!(|data: &[u8]| {
    let mut engine = Engine::new(EngineLimits::default());
    let streamed = read_all(CaptureReader::new(data), Some(&mut engine));
    engine.finish();
    engine.drain().for_each(drop);
    let in_place = read_all(CaptureReader::in_place(data), None);
    assert_eq!(streamed, in_place);
    for link in [
        linktype::ETHERNET,
        linktype::RAW,
        linktype::LINUX_SLL,
        linktype::LINUX_SLL2,
        linktype::NULL,
        linktype::LOOP,
    ] {
        let orig_len = data.len() + usize::from(data.first().copied().unwrap_or(0) & 0x0f);
        assert_eq!(
            format!("{:?}", decode(link, data, orig_len, 1)),
            format!("{:?}", decode_sliced(link, data, orig_len, 1)),
        );
    }
});
