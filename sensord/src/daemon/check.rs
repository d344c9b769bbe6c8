//! `sensord --check-config`: load and validate what a start loads (the configuration file with
//! the command line over it, the API's listeners and TLS material, the trust stores, the pins
//! and the catalogue), attach nothing, open no journal, and say what a start would use. For
//! admins and configuration management (Ansible's `validate`, the unit's `ExecStartPre`), as
//! `nginx -t` and `sshd -t` are.

use std::path::Path;

use anyhow::Context as _;

use super::Options;
use crate::api::server;

/// What a start would use, as lines of text; or the first error, naming its file and line.
pub fn check(opts: &Options) -> anyhow::Result<String> {
    let cfg = opts.effective_config()?;
    let tls = server::tls_material(&cfg.api)?;
    if cfg.state_dir.exists() && !cfg.state_dir.is_dir() {
        anyhow::bail!(
            "the state directory {} is not a directory",
            cfg.state_dir.display()
        );
    }
    if let Some(syslog) = &cfg.export.syslog {
        crate::export::syslog::check(syslog)?;
    }
    if let Some(otlp) = &cfg.export.otlp {
        // tonic's endpoint wants a runtime to exist when it is made.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let _guard = rt.enter();
        crate::export::otlp::check(otlp)?;
    }
    let trust_config = opts.trust_config(&cfg);
    let trust = sensor_host::trust::load(&trust_config, 1).context("loading the trust inputs")?;

    let mut out = Vec::new();
    let mut line = |what: &str, value: String| out.push(format!("  {what:<18} {value}"));
    line(
        "configuration",
        opts.config_path.as_deref().map_or_else(
            || "none (built-in defaults)".to_owned(),
            |p| p.display().to_string(),
        ),
    );
    line(
        "state directory",
        format!(
            "{} ({})",
            cfg.state_dir.display(),
            if cfg.state_dir.is_dir() {
                "exists"
            } else {
                "will be created"
            }
        ),
    );
    line(
        "API socket",
        match &cfg.api.socket_group {
            Some(g) => format!("{} (group {g})", cfg.api.socket.display()),
            None => cfg.api.socket.display().to_string(),
        },
    );
    line(
        "API over TCP",
        match (cfg.api.tcp_listen, tls) {
            (None, _) => "off".to_owned(),
            (Some(addr), Some(t)) => format!(
                "{addr}, mTLS: {} certificate(s), clients from {} CA(s)",
                t.chain, t.client_cas
            ),
            (Some(addr), None) => format!("{addr} WITHOUT TLS (insecure_tcp: tests only)"),
        },
    );
    line(
        "metrics",
        cfg.metrics
            .listen
            .map_or_else(|| "off".to_owned(), |a| format!("http://{a}/metrics")),
    );
    line(
        "JSON-lines export",
        cfg.export.jsonl.as_ref().map_or_else(
            || "off".to_owned(),
            |j| format!("{}{}", j.path.display(), if j.ecs { " (ECS)" } else { "" }),
        ),
    );
    line(
        "syslog export",
        cfg.export.syslog.as_ref().map_or_else(
            || "off".to_owned(),
            |s| {
                format!(
                    "{} over {}, {:?}, facility {:?}",
                    s.address,
                    if s.tls { "TLS" } else { "TCP (no TLS)" },
                    s.format,
                    s.facility
                )
                .to_lowercase()
            },
        ),
    );
    line(
        "OTLP export",
        cfg.export.otlp.as_ref().map_or_else(
            || "off".to_owned(),
            |o| format!("{} over {:?}", o.endpoint, o.protocol).to_lowercase(),
        ),
    );
    line(
        "host trust store",
        format!("{} ({} roots)", trust.host.source, trust.host.len()),
    );
    line(
        "public trust store",
        format!("{} ({} roots)", trust.public.source, trust.public.len()),
    );
    line(
        "pins",
        match trust_config.pins.as_deref() {
            Some(p) => format!("{} ({} pins)", p.display(), trust.pins.pins.len()),
            None => "none".to_owned(),
        },
    );
    line(
        "catalogue",
        format!(
            "{} ({} products)",
            trust_config
                .catalogue
                .as_deref()
                .map_or_else(|| "built-in".to_owned(), |p: &Path| p.display().to_string()),
            trust.catalogue.products.len()
        ),
    );
    line("approved CAs", trust.approved.len().to_string());
    line(
        "tap",
        format!(
            "byte budget {} B per connection, ring buffer {} MiB, uprobes {}, probe {}",
            cfg.tap.byte_budget,
            cfg.tap.ring_buffer_mb,
            if cfg.uprobe.enabled { "on" } else { "off" },
            if cfg.probe.enabled { "on" } else { "off" },
        ),
    );
    Ok(format!("configuration OK\n{}\n", out.join("\n")))
}
