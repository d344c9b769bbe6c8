//! sensord's configuration file: arbitrary text parses or gives an error that names the file
//! (and, for TOML errors, the line).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_host::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::parse(text, "/etc/sensor/sensord.toml") {
        assert!(e.to_string().starts_with("/etc/sensor/sensord.toml"));
    }
});
