//! The host's identity files (os-release, machine id, host name): any text parses, and what an
//! event carries from it is bounded and free of control characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_core::event::{
    Host,
    host::{MAX_TEXT, clean_text, parse_os_release},
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let values = parse_os_release(&text);
    let line = text.lines().next().unwrap_or("");
    let host = Host {
        id: Some(line.to_owned()),
        name: Some(text.to_string()),
        boot_id: Some(line.to_owned()),
        os_name: values.get("NAME").cloned(),
        labels: values.clone(),
        ..Host::default()
    }
    .cleaned();
    for v in [&host.name, &host.os_name, &host.id, &host.boot_id]
        .into_iter()
        .flatten()
        .chain(host.labels.values())
    {
        assert!(v.len() <= MAX_TEXT);
        assert!(!v.chars().any(char::is_control));
    }
    if let Some(c) = clean_text(&text) {
        assert!(!c.is_empty() && c.len() <= MAX_TEXT);
    }
});
