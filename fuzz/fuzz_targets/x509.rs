//! Certificate summaries and JA4X of arbitrary DER.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(summary) = sensor_core::x509::summarize(data) {
        let _ = serde_json::to_string(&summary);
    }
    let _ = sensor_core::tls::fingerprint::ja4x(data);
});
