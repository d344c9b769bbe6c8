//! The verdict on adversarial chains: up to 16 certificates of arbitrary DER (each a u16 length
//! and its bytes), the first one also trusted as a host anchor when it can be one, judged for a
//! name and a time taken from the input, with and without a pin that covers the name.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use rustls_pki_types::CertificateDer;
use sensor_core::{
    trust::{Catalogue, Pins, Store, TrustContext},
    verdict::{Facts, VerdictEngine},
    x509::summarize,
};

/// Parsed once: the catalogue is the project's own file, not the input.
static CATALOGUE: LazyLock<Arc<Catalogue>> = LazyLock::new(|| Arc::new(Catalogue::builtin()));

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let mut ders = Vec::new();
    while rest.len() >= 2 && ders.len() < 16 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        ders.push(&rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
    let chain: Vec<_> = ders
        .iter()
        .filter_map(|d| summarize(d).ok())
        .map(Arc::new)
        .collect();
    let anchors: Vec<CertificateDer<'_>> = ders
        .first()
        .map(|d| CertificateDer::from(*d))
        .into_iter()
        .collect();
    let (host, _) = Store::from_certificates("host", "fuzz", &anchors, false);
    let pins = if selector & 1 == 0 {
        Pins::default()
    } else {
        Pins::parse(
            "[[pin]]\nhost = \"*.example.test\"\nspki = [\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"]\n",
            "pins.toml",
        )
        .unwrap_or_default()
    };
    let trust = TrustContext {
        generation: 1,
        host: Arc::new(host),
        public: Arc::new(Store::from_anchors("public", "fuzz", Vec::new(), true)),
        pins,
        catalogue: CATALOGUE.clone(),
        approved: Vec::new(),
    };
    let mut verdicts = VerdictEngine::new(Arc::new(trust));
    let name = match selector >> 1 & 3 {
        0 => None,
        1 => Some("www.example.test"),
        2 => Some("192.0.2.1"),
        _ => Some("not a name\u{202e}"),
    };
    for time_ns in [
        1_790_000_000_000_000_000,
        u64::from(selector) << 56,
        u64::MAX,
    ] {
        let facts = Facts {
            chain: &chain,
            server_name: name,
            time_ns,
            ..Facts::default()
        };
        let judgement = verdicts.judge(&facts);
        // The explanation is made for people: it must exist for every verdict.
        assert!(!judgement.explanation.is_empty());
    }
});
