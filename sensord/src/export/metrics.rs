//! Prometheus metrics at /metrics (the Prometheus text format, by the `prometheus` crate),
//! built from the daemon's shared state at each scrape.
//!
//! The conventions Prometheus users expect, checked by `promtool check metrics` in the tests:
//! one metric per counter, `_total` on counters, gauges for levels, seconds and bytes as units,
//! histograms for latencies, HELP text on each.

use std::sync::{Arc, atomic::Ordering};

use prometheus::{
    CounterVec, Encoder as _, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder, core::Collector,
};
use sensor_common::counter;

use crate::status::{JournalState, Shared};

/// What each engine, verdict, probe and uprobe counter counts (the names GetStatus gives them).
pub const ENGINE_HELP: &[(&str, &str)] = &[
    (
        "programs_inspected",
        "Program files looked at for a TLS library of their own (once each)",
    ),
    (
        "programs_gone_before_inspection",
        "Programs whose process ended before their file could be looked at",
    ),
    (
        "programs_unreadable",
        "Program files that could not be read as ELF",
    ),
    (
        "programs_too_large",
        "Program files over 1 GiB, not looked at",
    ),
    (
        "tls_libraries_over_limit",
        "TLS library files not tracked (nor attached) because 256 were",
    ),
    (
        "processes_skipped_busy",
        "Connecting processes whose loaded libraries were not read: the library thread was 256 batches behind",
    ),
    (
        "processes_gone_before_maps",
        "Connecting processes gone before their loaded libraries could be read",
    ),
    (
        "cgroup_walks_truncated",
        "cgroups (naming a gone process's container) not tracked for a bound: walks stopped at 100,000 directories, directories past 65,536 watched or 100,000 paths kept",
    ),
    (
        "cri_lookups",
        "Containers the runtime's CRI socket was asked about",
    ),
    (
        "cri_described",
        "Containers the CRI socket described (name, image, pod)",
    ),
    (
        "cri_unknown",
        "Containers the CRI socket did not know, or could not be asked about",
    ),
    (
        "cri_failures",
        "CRI lookups that failed: no socket, no answer within 2 s, or an error",
    ),
    (
        "cri_questions_dropped",
        "Containers not asked about because 256 questions were waiting",
    ),
    (
        "cri_answers_refused",
        "CRI answers not used: the runtime's pod uid was not the one the cgroup path names",
    ),
    ("segments", "TCP segments the engine took"),
    ("payload_bytes", "Payload bytes the engine took"),
    ("flows_created", "Flows the engine started following"),
    (
        "flows_evicted",
        "Flows dropped because the flow table was full",
    ),
    (
        "flows_evicted_memory",
        "Flows dropped because the engine's memory was full",
    ),
    ("flows_expired", "Flows forgotten after their idle timeout"),
    ("flows_not_tls", "Flows that turned out not to be TLS"),
    (
        "flows_without_client_hello",
        "Flows that ended without a ClientHello seen",
    ),
    ("flows_malformed", "Flows with malformed TLS"),
    ("handshakes", "Handshakes the engine reported"),
    (
        "tuples_reused",
        "New connections on a 4-tuple the engine still remembered",
    ),
    ("duplicate_bytes", "Bytes that came twice"),
    ("out_of_order_segments", "Segments that came out of order"),
    (
        "dropped_segments",
        "Segments dropped (over the reordering bounds)",
    ),
    ("gaps", "Gaps in a stream the engine never saw filled"),
    (
        "cert_cache_hits",
        "Certificate summaries served from the cache",
    ),
    ("cert_cache_misses", "Certificate summaries made anew"),
    ("uprobe_certs", "Uprobe certificates the engine took"),
    ("uprobe_chains", "Handshakes given a chain by the uprobes"),
    (
        "uprobe_chains_mismatched",
        "Uprobe chains not taken: their leaf names other hosts",
    ),
    (
        "uprobe_chains_rehomed",
        "Handshakes given the chain their process parsed for their name under another socket",
    ),
    (
        "uprobe_certs_dropped",
        "Uprobe certificates dropped: no socket, or over the bounds",
    ),
    (
        "uprobe_chain_conflicts",
        "Handshakes whose client parsed another leaf than the wire's",
    ),
    (
        "flows_marked_ring_drop",
        "Live flows marked as having lost records to ring drops",
    ),
    (
        "uprobe_certs_expired",
        "Uprobe certificates forgotten: no handshake came for them",
    ),
    (
        "uprobe_chains_awaited",
        "TLS 1.3 client handshakes held up to 0.5 s for the rest of a one-certificate uprobe chain",
    ),
    (
        "request_heads",
        "Request heads an inbound TLS server read (SSL_read uprobe), taken by the engine",
    ),
    (
        "request_heads_not_http",
        "Request heads that were neither an HTTP/1 request line nor HTTP/2's preface",
    ),
    (
        "request_heads_dropped",
        "Request heads pushed out of a full store before their handshake was reported",
    ),
    (
        "request_heads_missed",
        "Completed inbound handshakes reported without a head after waiting for one",
    ),
    ("datagrams", "UDP datagrams the engine took"),
    (
        "datagrams_not_quic",
        "UDP datagrams of no QUIC flow that did not open one",
    ),
    (
        "quic_flows",
        "QUIC flows opened by a client's Initial packet",
    ),
    ("quic_answered", "QUIC flows whose server answered"),
    (
        "quic_blocked",
        "TCP handshakes that followed an unanswered QUIC attempt to the same name",
    ),
    ("verdicts", "Verdicts made"),
    (
        "verdict_cache_hits",
        "Verdicts on a chain judged before (cache hits)",
    ),
    ("probes_started", "Active probes started"),
    ("probes_failed", "Active probes that failed"),
    ("probe_cache_hits", "Probe results reused"),
    ("probes_rate_limited", "Probes not run: rate limit"),
    ("probes_over_uid_quota", "Probes not run: the user's quota"),
    (
        "probes_over_cgroup_quota",
        "Probes not run: the cgroup's quota",
    ),
    (
        "uprobe_certs_assembled",
        "Uprobe certificates assembled from their chunks",
    ),
    (
        "uprobe_certs_unusable",
        "Uprobe certificates cut or incomplete, not used",
    ),
    (
        "uprobe_certs_abandoned",
        "Uprobe certificates whose chunks stopped coming",
    ),
    (
        "ring_records_unknown",
        "Ring buffer records of an unknown kind",
    ),
];

/// The metrics of one scrape, registered as they are made.
struct Scrape(Registry);

impl Scrape {
    fn add(&self, metric: Option<impl Collector + 'static>) {
        // Names and help are this file's constants: a failure is a bug the tests catch.
        if let Some(m) = metric
            && let Err(e) = self.0.register(Box::new(m))
        {
            tracing::warn!("a metric could not be registered: {e}");
        }
    }

    fn counter(&self, name: &str, help: &str, value: u64) {
        self.add(
            IntCounter::new(name, help)
                .ok()
                .inspect(|c| c.inc_by(value)),
        );
    }

    fn gauge(&self, name: &str, help: &str, value: u64) {
        let value = i64::try_from(value).unwrap_or(i64::MAX);
        self.add(IntGauge::new(name, help).ok().inspect(|g| g.set(value)));
    }
}

/// The metrics text (Prometheus' text format 0.0.4), now.
pub fn render(s: &Shared) -> String {
    let m = Scrape(Registry::new());
    m.add(
        IntGaugeVec::new(
            Opts::new("sensor_build_info", "sensord's version and commit"),
            &["version", "commit"],
        )
        .ok()
        .inspect(|g| {
            g.with_label_values(&[env!("CARGO_PKG_VERSION"), sensor_host::COMMIT])
                .set(1)
        }),
    );
    m.add(
        IntCounterVec::new(
            Opts::new(
                "sensor_handshakes_total",
                "TLS handshakes judged, by verdict",
            ),
            &["verdict"],
        )
        .ok()
        .inspect(|c| {
            if let Ok(v) = s.verdicts.lock() {
                for (verdict, n) in v.iter() {
                    c.with_label_values(&[verdict.to_string()]).inc_by(*n);
                }
            }
        }),
    );

    // The kernel's counters: one metric each, all of them always (zero before the first read).
    let kernel = s
        .kernel_counters
        .lock()
        .map(|k| k.clone())
        .unwrap_or_default();
    for (i, name) in counter::NAMES.iter().enumerate() {
        let value = kernel
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v);
        m.counter(
            &format!("sensor_kernel_{name}_total"),
            counter::HELP[i],
            value,
        );
    }
    let stats = s
        .program_stats
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default();
    m.add(
        CounterVec::new(
            Opts::new(
                "sensor_kernel_program_run_seconds_total",
                "Time the kernel programs ran (needs kernel.bpf_stats_enabled=1)",
            ),
            &["program"],
        )
        .ok()
        .inspect(|c| {
            for (name, ns, _) in &stats {
                c.with_label_values(&[name]).inc_by(*ns as f64 / 1e9);
            }
        }),
    );
    m.add(
        IntCounterVec::new(
            Opts::new(
                "sensor_kernel_program_runs_total",
                "Kernel program runs (needs kernel.bpf_stats_enabled=1)",
            ),
            &["program"],
        )
        .ok()
        .inspect(|c| {
            for (name, _, runs) in &stats {
                c.with_label_values(&[name]).inc_by(*runs);
            }
        }),
    );

    let engine = s
        .engine_counters
        .lock()
        .map(|e| e.clone())
        .unwrap_or_default();
    for (name, help) in ENGINE_HELP {
        let value = engine
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v);
        m.counter(&format!("sensor_engine_{name}_total"), help, value);
    }

    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    m.gauge(
        "sensor_flows_tracked",
        "Flows the engine follows now",
        load(&s.flows_tracked),
    );
    m.gauge(
        "sensor_api_subscribers",
        "Watch streams open now",
        load(&s.subscribers),
    );
    m.gauge(
        "sensor_journal_lag_events",
        "Events handed to the journal writer and not yet committed",
        load(&s.journal_lag),
    );
    m.counter(
        "sensor_journal_queue_drops_total",
        "Events lost because the journal queue was full",
        load(&s.journal_queue_drops),
    );
    m.gauge(
        "sensor_journal_events",
        "Events in the journal",
        load(&s.journal_events),
    );
    m.gauge(
        "sensor_journal_size_bytes",
        "The journal's size on disk",
        load(&s.journal_bytes),
    );
    m.gauge(
        "sensor_journal_pending_events",
        "Events waiting in memory for a journal commit that fails",
        load(&s.journal_pending_events),
    );
    m.gauge(
        "sensor_journal_pending_bytes",
        "Memory (about) of the events waiting for a journal commit",
        load(&s.journal_pending_bytes),
    );
    m.counter(
        "sensor_journal_pending_drops_total",
        "Events lost because the memory for events waiting for the journal was full",
        load(&s.journal_pending_drops),
    );
    m.counter(
        "sensor_journal_write_failures_total",
        "Journal commits that failed",
        load(&s.journal_write_failures),
    );
    m.counter(
        "sensor_export_syslog_sent_total",
        "Syslog messages written to the receiver",
        load(&s.syslog.sent),
    );
    m.counter(
        "sensor_export_syslog_expired_total",
        "Events older than export.syslog.max_age_secs when their turn came, not sent",
        load(&s.syslog.expired),
    );
    m.counter(
        "sensor_export_syslog_connection_failures_total",
        "Syslog connections that could not be made or broke",
        load(&s.syslog.connection_failures),
    );
    for (name, help, value) in [
        (
            "sensor_export_otlp_sent_total",
            "Log records the OTLP receiver accepted",
            &s.otlp.sent,
        ),
        (
            "sensor_export_otlp_requests_total",
            "OTLP export requests the receiver accepted",
            &s.otlp.batches,
        ),
        (
            "sensor_export_otlp_retries_total",
            "OTLP export requests that failed and were tried again",
            &s.otlp.retries,
        ),
        (
            "sensor_export_otlp_dropped_total",
            "Log records the OTLP receiver refused for good, dropped",
            &s.otlp.dropped,
        ),
        (
            "sensor_export_otlp_expired_total",
            "Events older than export.otlp.max_age_secs when their turn came, not sent",
            &s.otlp.expired,
        ),
    ] {
        m.counter(name, help, load(value));
    }
    m.gauge(
        "sensor_export_syslog_connected",
        "1 while the syslog exporter is connected",
        load(&s.syslog.connected),
    );
    m.gauge(
        "sensor_journal_last_seq",
        "The last sequence number given",
        load(&s.last_seq),
    );
    // One series per state, 1 for the one in force: alerts match `state="degraded"`.
    let now = s.journal_health().state();
    m.add(
        IntGaugeVec::new(
            Opts::new(
                "sensor_journal_state",
                "The journal's state: ok, recovered (a damaged journal was moved aside) or \
                 degraded (commits fail, events wait in memory)",
            ),
            &["state"],
        )
        .ok()
        .inspect(|g| {
            for state in JournalState::ALL {
                g.with_label_values(&[state.as_str()])
                    .set(i64::from(state == now));
            }
        }),
    );
    let refused = [
        (
            "sensor_api_denied_total",
            "API changes refused: the caller is not an admin",
        ),
        (
            "sensor_api_reloads_rate_limited_total",
            "Reload calls refused: within a second of the last",
        ),
        (
            "sensor_api_watch_refused_total",
            "Watch streams refused: api.max_subscribers are open",
        ),
    ];
    for ((name, help), (_, value)) in refused.into_iter().zip(s.api_counters()) {
        m.counter(name, help, value);
    }
    m.add(Some(s.event_latency.clone()));
    m.add(Some(s.verdict_duration.clone()));
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&m.0.gather(), &mut out);
    String::from_utf8_lossy(&out).into_owned()
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
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
                    render(&shared),
                )
            }
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
    use std::sync::atomic::Ordering;

    use super::*;

    #[test]
    fn one_metric_per_counter_with_the_units_and_types_prometheus_expects() {
        let s = Shared::new();
        s.count_verdict(sensor_core::event::Verdict::Intercepted);
        s.count_verdict(sensor_core::event::Verdict::Intercepted);
        *s.kernel_counters.lock().unwrap() = vec![("ringbuf_drops".into(), 3)];
        *s.program_stats.lock().unwrap() = vec![("tap_egress".into(), 1_500_000_000, 10)];
        *s.engine_counters.lock().unwrap() = vec![("gaps".into(), 4)];
        s.journal_bytes.store(4096, Ordering::Relaxed);
        s.event_latency.observe(0.02);
        let text = render(&s);
        for line in [
            "sensor_handshakes_total{verdict=\"intercepted\"} 2",
            "# TYPE sensor_kernel_ringbuf_drops_total counter",
            "sensor_kernel_ringbuf_drops_total 3",
            "sensor_kernel_packets_seen_total 0",
            "sensor_kernel_program_run_seconds_total{program=\"tap_egress\"} 1.5",
            "sensor_kernel_program_runs_total{program=\"tap_egress\"} 10",
            "sensor_engine_gaps_total 4",
            "sensor_journal_size_bytes 4096",
            "sensor_api_subscribers 0",
            "sensor_journal_state{state=\"ok\"} 1",
            "# TYPE sensor_event_latency_seconds histogram",
            "sensor_event_latency_seconds_count 1",
            "sensor_build_info{commit=",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
        assert!(!text.contains("{counter="), "{text}");
        s.update_journal_health(|h| {
            h.failing = Some((crate::journal::WriteFailure::DiskFull, "full".into()));
        });
        s.journal_pending_events.store(7, Ordering::Relaxed);
        s.reloads_rate_limited.fetch_add(2, Ordering::Relaxed);
        let text = render(&s);
        for line in [
            "sensor_journal_state{state=\"degraded\"} 1",
            "sensor_journal_state{state=\"ok\"} 0",
            "sensor_journal_pending_events 7",
            "sensor_api_reloads_rate_limited_total 2",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
    }

    #[test]
    fn every_engine_counter_has_its_help() {
        let stats = serde_json::to_value(sensor_core::engine::EngineStats::default()).unwrap();
        for name in stats.as_object().unwrap().keys() {
            assert!(
                ENGINE_HELP.iter().any(|(n, _)| n == name),
                "{name} has no HELP in ENGINE_HELP"
            );
        }
    }
}
