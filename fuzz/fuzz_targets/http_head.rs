//! The request head an inbound TLS server read (the `SSL_read` uprobe's bytes): any bytes parse
//! or fail cleanly, what is kept is bounded and free of control characters, and a User-Agent
//! rule check on it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_core::{
    event::ClientOffer,
    http::{MAX_LINE, MAX_USER_AGENT, parse},
    verdict::user_agents,
};

fuzz_target!(|data: &[u8]| {
    let Ok(head) = parse(data) else {
        return;
    };
    assert!(head.line.len() <= MAX_LINE);
    assert!(!head.line.chars().any(char::is_control));
    if let Some(ua) = &head.user_agent {
        assert!(ua.len() <= MAX_USER_AGENT);
        assert!(!ua.chars().any(char::is_control));
        let offer = ClientOffer {
            grease: data.first().is_some_and(|b| b & 1 == 1),
            extensions: data.iter().take(8).map(|&b| u16::from(b)).collect(),
            ..ClientOffer::default()
        };
        let _ = user_agents::contradiction(user_agents::builtin(), ua, &offer);
    }
});
