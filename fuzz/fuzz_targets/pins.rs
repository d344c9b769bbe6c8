//! The pin file and the interception products' catalogue: arbitrary text parses or gives an
//! error that names the file; a parsed pin file answers lookups.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_core::trust::{Catalogue, Pins};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Pins::parse(text, "pins.toml") {
        Ok(pins) => {
            let _ = pins.find(
                Some("www.example.test"),
                Some("/usr/bin/curl"),
                Some("curl"),
            );
            let _ = pins.find(None, None, None);
        }
        Err(e) => assert!(e.to_string().starts_with("pins.toml")),
    }
    if let Err(e) = Catalogue::parse(text, "interceptors.toml") {
        assert!(e.to_string().starts_with("interceptors.toml"));
    }
});
