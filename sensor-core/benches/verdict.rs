//! Verdict cost: a chain seen for the first time (path validation against both stores, every
//! check), and the same chain again (the cache).
//!
//! `cargo xtask bench verdict` runs this and prints the medians.

use std::{hint::black_box, sync::Arc};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use sensor_core::{
    event::ClientOutcome,
    trust::{Catalogue, Pins, Store, TrustContext},
    verdict::{Facts, VerdictEngine},
    x509::{CertSummary, summarize},
};

fn ca(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p
}

/// A root, an intermediate and a leaf for bench.test, and a context where the root is public.
fn setup() -> (TrustContext, Vec<Arc<CertSummary>>) {
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca("Bench Root");
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);
    let inter_key = KeyPair::generate().unwrap();
    let inter_params = ca("Bench Intermediate");
    let inter = inter_params.signed_by(&inter_key, &root_issuer).unwrap();
    let inter_issuer = Issuer::new(inter_params, inter_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["bench.test".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &inter_issuer)
        .unwrap();
    let anchors = [rustls_pki_types::CertificateDer::from(root.der().to_vec())];
    let (public, _) = Store::from_certificates("public", "bench", &anchors, false);
    let public = Arc::new(public);
    let ctx = TrustContext {
        generation: 1,
        host: public.clone(),
        public,
        pins: Pins::default(),
        catalogue: Arc::new(Catalogue::builtin()),
        approved: Vec::new(),
    };
    let chain = [leaf.der().to_vec(), inter.der().to_vec()]
        .iter()
        .map(|d| Arc::new(summarize(d).unwrap()))
        .collect();
    (ctx, chain)
}

fn bench(c: &mut Criterion) {
    let (ctx, chain) = setup();
    let ctx = Arc::new(ctx);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let facts = Facts {
        chain: &chain,
        server_name: Some("bench.test"),
        time_ns: now,
        client_outcome: ClientOutcome::Completed,
        ..Facts::default()
    };
    c.bench_function("verdict_new_chain", |b| {
        b.iter_batched(
            || VerdictEngine::new(ctx.clone()),
            |mut engine| {
                let v = engine.judge(black_box(&facts));
                assert_eq!(v.verdict.as_str(), "clean");
                v
            },
            BatchSize::SmallInput,
        )
    });
    let mut warm = VerdictEngine::new(ctx.clone());
    warm.judge(&facts);
    c.bench_function("verdict_cached", |b| {
        b.iter(|| warm.judge(black_box(&facts)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
