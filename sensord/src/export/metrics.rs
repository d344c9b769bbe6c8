//! Prometheus metrics at /metrics (prometheus-client's text format), built from the daemon's
//! shared state at each scrape.

use std::sync::{Arc, atomic::Ordering};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::status::{JournalState, Shared};

/// The metrics text, now.
pub fn render(s: &Shared) -> String {
    let mut reg = Registry::with_prefix("sensor");
    let handshakes = Family::<Vec<(String, String)>, Counter>::default();
    if let Ok(v) = s.verdicts.lock() {
        for (verdict, n) in v.iter() {
            handshakes
                .get_or_create(&vec![("verdict".into(), verdict.to_string())])
                .inc_by(*n);
        }
    }
    reg.register("handshakes", "TLS handshakes by verdict", handshakes);
    let kernel = Family::<Vec<(String, String)>, Gauge>::default();
    if let Ok(v) = s.kernel_counters.lock() {
        for (name, n) in v.iter() {
            kernel
                .get_or_create(&vec![("counter".into(), name.clone())])
                .set(*n as i64);
        }
    }
    reg.register(
        "kernel",
        "Kernel tap counters (ringbuf_drops, packets_seen, ...)",
        kernel,
    );
    let run_time = Family::<Vec<(String, String)>, Gauge>::default();
    let run_count = Family::<Vec<(String, String)>, Gauge>::default();
    if let Ok(v) = s.program_stats.lock() {
        for (name, ns, cnt) in v.iter() {
            let l = vec![("program".into(), name.clone())];
            run_time.get_or_create(&l).set(*ns as i64);
            run_count.get_or_create(&l).set(*cnt as i64);
        }
    }
    reg.register(
        "kernel_program_run_time_ns",
        "Kernel program run time (needs kernel.bpf_stats_enabled=1)",
        run_time,
    );
    reg.register("kernel_program_run_count", "Kernel program runs", run_count);
    let gauges = [
        ("flows_tracked", "Flows the engine tracks", &s.flows_tracked),
        (
            "journal_lag",
            "Events waiting to be journaled",
            &s.journal_lag,
        ),
        (
            "journal_queue_drops",
            "Events lost because the journal queue was full",
            &s.journal_queue_drops,
        ),
        ("journal_events", "Events in the journal", &s.journal_events),
        ("journal_bytes", "Journal size on disk", &s.journal_bytes),
        (
            "journal_pending_events",
            "Events waiting in memory for a journal commit that fails",
            &s.journal_pending_events,
        ),
        (
            "journal_pending_bytes",
            "Bytes (about) of the events waiting for a journal commit",
            &s.journal_pending_bytes,
        ),
        (
            "journal_pending_drops",
            "Events lost because the memory for events waiting for the journal was full",
            &s.journal_pending_drops,
        ),
        (
            "journal_write_failures",
            "Journal commits that failed",
            &s.journal_write_failures,
        ),
        ("subscribers", "gRPC Watch subscribers", &s.subscribers),
        ("last_seq", "Last journal sequence number", &s.last_seq),
    ];
    for (name, help, value) in gauges {
        let g = Gauge::<i64>::default();
        g.set(value.load(Ordering::Relaxed) as i64);
        reg.register(name, help, g);
    }
    // One series per state, 1 for the one in force: alerts match `state="degraded"`.
    let journal_state = Family::<Vec<(String, String)>, Gauge>::default();
    let now = s.journal_health().state();
    for state in JournalState::ALL {
        journal_state
            .get_or_create(&vec![("state".into(), state.as_str().into())])
            .set(i64::from(state == now));
    }
    reg.register(
        "journal_state",
        "The journal's state: ok, recovered (a damaged journal was moved aside) or degraded \
         (commits fail, events wait in memory)",
        journal_state,
    );
    let refused = [
        (
            "api_denied",
            "API changes refused: the caller is not an admin",
        ),
        (
            "api_reloads_rate_limited",
            "Reload calls refused: within a second of the last",
        ),
        (
            "api_watch_refused",
            "Watch streams refused: api.max_subscribers are open",
        ),
    ];
    for ((name, help), (_, value)) in refused.into_iter().zip(s.api_counters()) {
        let c = Counter::<u64>::default();
        c.inc_by(value);
        reg.register(name, help, c);
    }
    let mut out = String::new();
    let _ = encode(&mut out, &reg);
    out
}

/// Serve /metrics on `addr` until `shutdown`.
pub async fn serve(
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let shared = shared.clone();
            async move { render(&shared) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics listener {addr}"))?;
    tracing::info!(%addr, "Prometheus metrics at /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
        .context("serving metrics")
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_counters() {
        let s = super::Shared::new();
        s.count_verdict(sensor_core::event::Verdict::Intercepted);
        s.count_verdict(sensor_core::event::Verdict::Intercepted);
        let text = super::render(&s);
        assert!(
            text.contains("sensor_handshakes_total{verdict=\"intercepted\"} 2"),
            "{text}"
        );
        assert!(text.contains("sensor_subscribers 0"), "{text}");
        assert!(
            text.contains("sensor_journal_state{state=\"ok\"} 1"),
            "{text}"
        );
        s.update_journal_health(|h| {
            h.failing = Some((crate::journal::WriteFailure::DiskFull, "full".into()));
        });
        s.journal_pending_events
            .store(7, std::sync::atomic::Ordering::Relaxed);
        let text = super::render(&s);
        assert!(
            text.contains("sensor_journal_state{state=\"degraded\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sensor_journal_state{state=\"ok\"} 0"),
            "{text}"
        );
        assert!(text.contains("sensor_journal_pending_events 7"), "{text}");
        s.reloads_rate_limited
            .fetch_add(2, std::sync::atomic::Ordering::Relaxed);
        let text = super::render(&s);
        assert!(
            text.contains("sensor_api_reloads_rate_limited_total 2"),
            "{text}"
        );
    }
}
