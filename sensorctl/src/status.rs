//! `sensorctl status`: sensord's health as a readable table.

use std::process::ExitCode;

use comfy_table::{Table, presets::NOTHING};
use sensor_proto::v1 as pb;

use sensor_core::event::Severity;
use sensor_host::render::{Palette, escape};

use crate::{Global, connect};

/// Output of `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusOutput {
    Table,
    Json,
}

pub fn run(global: &Global, output: StatusOutput, palette: Palette) -> anyhow::Result<ExitCode> {
    let status = crate::runtime()?.block_on(async {
        let mut api = connect::connect(global).await?;
        connect::status(&mut api).await
    })?;
    match output {
        StatusOutput::Json => println!("{}", json(&status)),
        StatusOutput::Table => print!("{}", table(&status, palette)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Counters whose non-zero value means something was lost or cut short.
fn is_loss(name: &str) -> bool {
    [
        "drop",
        "lost",
        "exhausted",
        "evicted",
        "malformed",
        "gaps",
        "truncated",
        "errors",
    ]
    .iter()
    .any(|w| name.contains(w))
}

fn uptime(secs: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub fn table(s: &pb::Status, palette: Palette) -> String {
    let mut out = String::new();
    let or_none = |v: &str| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.to_owned()
        }
    };
    out.push_str(&format!(
        "{} {}, up {}\n",
        palette.bold("sensord"),
        s.version,
        uptime(s.uptime_seconds)
    ));
    out.push_str(&format!(
        "config {}, pins {}, trust generation {}\n",
        or_none(&s.config_file),
        or_none(&s.pins_file),
        s.trust_generation
    ));
    out.push_str(&format!(
        "events: last seq {}, {:.1}/s; journal {} events, {}; {} subscriber(s); {} flow(s) tracked\n",
        s.last_seq,
        s.events_per_second,
        s.journal_events,
        human_bytes(s.journal_bytes),
        s.subscribers,
        s.flows_tracked
    ));

    out.push_str(&journal_line(s, palette));

    let mut hooks = Table::new();
    hooks
        .load_style(NOTHING)
        .set_header(["HOOK", "STATE", "DETAIL"]);
    for h in &s.hooks {
        let state = if h.attached {
            palette.paint(Palette::severity_style(Some(Severity::Info)), "attached")
        } else {
            palette.paint(
                Palette::severity_style(Some(Severity::Medium)),
                "unavailable",
            )
        };
        hooks.add_row([h.name.clone(), state, h.detail.clone()]);
    }
    out.push('\n');
    out.push_str(&hooks.trim_fmt());
    out.push('\n');
    if !s.tls_libraries.is_empty() {
        out.push('\n');
        out.push_str(&libraries(s, palette));
        out.push('\n');
    }

    let journal_losses = [
        pb::Counter {
            name: "journal_queue_drops".into(),
            value: s.journal_queue_drops,
        },
        pb::Counter {
            name: "journal_pending_drops".into(),
            value: s.journal_pending_drops,
        },
    ];
    let losses: Vec<&pb::Counter> = s
        .kernel_counters
        .iter()
        .chain(&s.engine_counters)
        .chain(&journal_losses)
        .filter(|c| is_loss(&c.name) && c.value > 0)
        .collect();
    out.push('\n');
    if losses.is_empty() {
        out.push_str(&format!(
            "drops: {}\n",
            palette.paint(Palette::severity_style(Some(Severity::Info)), "none")
        ));
    } else {
        let text: Vec<String> = losses
            .iter()
            .map(|c| format!("{} {}", c.name, c.value))
            .collect();
        out.push_str(&format!(
            "drops: {}\n",
            palette.paint(
                Palette::severity_style(Some(Severity::High)),
                &text.join(", ")
            )
        ));
    }

    for (title, counters) in [
        ("KERNEL", &s.kernel_counters),
        ("ENGINE", &s.engine_counters),
    ] {
        let mut t = Table::new();
        t.load_style(NOTHING)
            .set_header([format!("{title} COUNTER"), "VALUE".to_owned()]);
        for c in counters {
            let value = if is_loss(&c.name) && c.value > 0 {
                palette.paint(
                    Palette::severity_style(Some(Severity::High)),
                    &c.value.to_string(),
                )
            } else {
                c.value.to_string()
            };
            t.add_row([c.name.clone(), value]);
        }
        out.push('\n');
        out.push_str(&t.trim_fmt());
        out.push('\n');
    }
    out
}

/// The journal's state name, as the metrics say it.
fn journal_state(s: &pb::Status) -> &'static str {
    match s.journal_state() {
        pb::JournalState::Ok => "ok",
        pb::JournalState::Recovered => "recovered",
        pb::JournalState::Degraded => "degraded",
        // A sensord from before the journal had a state.
        pb::JournalState::Unspecified => "unknown",
    }
}

/// `journal: ok`, or what is wrong and what waits.
fn journal_line(s: &pb::Status, palette: Palette) -> String {
    let style = |sev| Palette::severity_style(Some(sev));
    match s.journal_state() {
        pb::JournalState::Degraded => format!(
            "journal: {} ({}); {} event(s), {} waiting in memory, {} dropped; retried every second\n",
            palette.paint(style(Severity::High), "DEGRADED"),
            s.journal_detail,
            s.journal_pending_events,
            human_bytes(s.journal_pending_bytes),
            s.journal_pending_drops
        ),
        pb::JournalState::Recovered => format!(
            "journal: {}: the damaged journal was moved to {}; a new one is in use\n",
            palette.paint(style(Severity::Medium), "recovered"),
            s.journal_moved_aside
        ),
        pb::JournalState::Ok => {
            format!("journal: {}\n", palette.paint(style(Severity::Info), "ok"))
        }
        pb::JournalState::Unspecified => String::new(),
    }
}

/// The TLS libraries found, and how each one's TLS 1.3 chains are seen. Paths come from
/// other processes: escaped.
fn libraries(s: &pb::Status, palette: Palette) -> String {
    let mut t = Table::new();
    t.load_style(NOTHING).set_header([
        "TLS LIBRARY",
        "TLS 1.3 CHAINS",
        "PROCS/H",
        "PATH",
        "DETAIL",
    ]);
    for l in &s.tls_libraries {
        let chains = match l.chains() {
            pb::ChainSource::Uprobe => {
                palette.paint(Palette::severity_style(Some(Severity::Info)), "uprobe")
            }
            _ => palette.paint(Palette::severity_style(Some(Severity::Low)), "probe only"),
        };
        t.add_row([
            escape(&l.library).into_owned(),
            chains,
            l.processes_last_hour
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            escape(&l.path).into_owned(),
            escape(&l.detail).into_owned(),
        ]);
    }
    t.trim_fmt()
}

fn chain_source(c: pb::ChainSource) -> &'static str {
    match c {
        pb::ChainSource::Uprobe => "uprobe",
        pb::ChainSource::ProbeOnly => "probe_only",
        pb::ChainSource::Unspecified => "unknown",
    }
}

fn json(s: &pb::Status) -> serde_json::Value {
    let counters = |cs: &[pb::Counter]| -> serde_json::Map<String, serde_json::Value> {
        cs.iter()
            .map(|c| (c.name.clone(), c.value.into()))
            .collect()
    };
    serde_json::json!({
        "version": s.version,
        "uptime_seconds": s.uptime_seconds,
        "config_file": s.config_file,
        "pins_file": s.pins_file,
        "trust_generation": s.trust_generation,
        "hooks": s.hooks.iter().map(|h| serde_json::json!({
            "name": h.name, "attached": h.attached, "detail": h.detail,
        })).collect::<Vec<_>>(),
        "tls_libraries": s.tls_libraries.iter().map(|l| serde_json::json!({
            "library": l.library, "path": l.path, "chains": chain_source(l.chains()),
            "processes_last_hour": l.processes_last_hour, "detail": l.detail,
        })).collect::<Vec<_>>(),
        "kernel_counters": counters(&s.kernel_counters),
        "engine_counters": counters(&s.engine_counters),
        "flows_tracked": s.flows_tracked,
        "events_per_second": s.events_per_second,
        "journal_bytes": s.journal_bytes,
        "journal_events": s.journal_events,
        "subscribers": s.subscribers,
        "last_seq": s.last_seq,
        "journal_state": journal_state(s),
        "journal_detail": s.journal_detail,
        "journal_moved_aside": s.journal_moved_aside,
        "journal_pending_events": s.journal_pending_events,
        "journal_pending_bytes": s.journal_pending_bytes,
        "journal_pending_drops": s.journal_pending_drops,
        "journal_queue_drops": s.journal_queue_drops,
        "journal_write_failures": s.journal_write_failures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_stand_out() {
        let s = pb::Status {
            version: "0.1.0".into(),
            hooks: vec![pb::Hook {
                name: "tap_egress".into(),
                attached: true,
                detail: "cgroup_skb on /sys/fs/cgroup".into(),
            }],
            kernel_counters: vec![
                pb::Counter {
                    name: "ringbuf_drops".into(),
                    value: 3,
                },
                pb::Counter {
                    name: "packets_seen".into(),
                    value: 10,
                },
            ],
            ..pb::Status::default()
        };
        let text = table(&s, Palette { enabled: false });
        assert!(text.contains("drops: ringbuf_drops 3"), "{text}");
        assert!(text.contains("tap_egress"), "{text}");
        assert!(text.contains("attached"), "{text}");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn the_journal_state_is_shown() {
        let mut s = pb::Status {
            journal_state: pb::JournalState::Ok.into(),
            ..pb::Status::default()
        };
        let plain = Palette { enabled: false };
        assert!(table(&s, plain).contains("journal: ok\n"));
        s.journal_state = pb::JournalState::Degraded.into();
        s.journal_detail = "disk full: database or disk is full".into();
        s.journal_pending_events = 12;
        s.journal_pending_bytes = 2048;
        s.journal_pending_drops = 3;
        let text = table(&s, plain);
        assert!(
            text.contains(
                "journal: DEGRADED (disk full: database or disk is full); 12 event(s), 2.0 KiB \
                 waiting in memory, 3 dropped"
            ),
            "{text}"
        );
        assert!(text.contains("drops: journal_pending_drops 3"), "{text}");
        assert_eq!(json(&s)["journal_state"], "degraded");
        s.journal_state = pb::JournalState::Recovered.into();
        s.journal_moved_aside = "/var/lib/sensor/journal.sqlite.damaged-20250101T000000Z".into();
        let text = table(&s, plain);
        assert!(
            text.contains("journal: recovered: the damaged journal was moved to /var/lib/sensor/"),
            "{text}"
        );
    }
}
