//! `sensorctl clients`: the server's view for its operator. Per local service (the serving
//! process and port) the inbound handshakes of the window, by client address and fingerprint
//! (JA4): how many, through which interceptor (by its own ClientHello), how many completed and
//! then sent no request (the 408 pattern), how many refused the server's certificate.

use std::{collections::HashMap, process::ExitCode, time::Duration};

use comfy_table::{ContentArrangement, Table, presets::NOTHING};
use sensor_host::render;
use sensor_proto::v1 as pb;

use crate::{
    Global, events,
    filter::{self, FilterArgs},
};

#[derive(Debug, clap::Args)]
pub struct ClientsArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// The window, up to now: 10m, 1h, 7d.
    #[arg(long, value_name = "DURATION", value_parser = filter::duration, default_value = "24h")]
    pub since: Duration,
    /// Read at most this many events (the oldest of the window first).
    #[arg(long, default_value_t = 1_000_000)]
    pub limit: u64,
    /// Output: a table per service, or one JSON object per client group.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: ClientsOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientsOutput {
    Table,
    Json,
}

/// Client groups kept per service; the rest are counted together.
const MAX_GROUPS: usize = 10_000;
/// Services kept; the rest are counted together.
const MAX_SERVICES: usize = 1_000;

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Service {
    program: String,
    port: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Group {
    client: String,
    ja4: String,
}

#[derive(Clone, Debug, Default)]
struct Counts {
    handshakes: u64,
    /// Interception products named by their own ClientHello, with counts.
    interceptors: Vec<(String, u64)>,
    idle: u64,
    refused: u64,
    intercepted: u64,
}

#[derive(Default)]
struct Summary {
    services: HashMap<Service, HashMap<Group, Counts>>,
    /// Handshakes in groups or services past the bounds.
    other: u64,
}

impl Summary {
    fn add(&mut self, ev: &pb::Event) {
        let Some(p) = ev.process.as_ref().filter(|p| p.role == "server") else {
            return;
        };
        let service = Service {
            program: p.comm.clone(),
            port: ev.dst_port,
        };
        if !self.services.contains_key(&service) && self.services.len() >= MAX_SERVICES {
            self.other += 1;
            return;
        }
        let groups = self.services.entry(service).or_default();
        let group = Group {
            client: ev.src_addr.clone(),
            ja4: ev.ja4.clone(),
        };
        if !groups.contains_key(&group) && groups.len() >= MAX_GROUPS {
            self.other += 1;
            return;
        }
        let c = groups.entry(group).or_default();
        c.handshakes += 1;
        if ev.idle_after_handshake {
            c.idle += 1;
        }
        if ev.verdict == "intercepted" {
            c.intercepted += 1;
        }
        for r in &ev.reasons {
            if let Some(id) = r.strip_prefix("interceptor_fingerprint:") {
                if let Some((_, n)) = c.interceptors.iter_mut().find(|(i, _)| i == id) {
                    *n += 1;
                } else if c.interceptors.len() < 8 {
                    c.interceptors.push((id.to_owned(), 1));
                }
            } else if r.starts_with("client_rejected") {
                c.refused += 1;
            }
        }
    }

    /// Services by name and port; in each, groups through an interceptor first, then by
    /// handshakes.
    fn sorted(&self) -> Vec<(&Service, Vec<(&Group, &Counts)>)> {
        let mut services: Vec<_> = self
            .services
            .iter()
            .map(|(s, groups)| {
                let mut g: Vec<_> = groups.iter().collect();
                g.sort_by(|a, b| {
                    (b.1.intercepted, b.1.idle, b.1.handshakes, a.0).cmp(&(
                        a.1.intercepted,
                        a.1.idle,
                        a.1.handshakes,
                        b.0,
                    ))
                });
                (s, g)
            })
            .collect();
        services.sort_by(|a, b| a.0.cmp(b.0));
        services
    }
}

fn interceptors(c: &Counts) -> String {
    if c.interceptors.is_empty() {
        return "-".into();
    }
    c.interceptors
        .iter()
        .map(|(id, n)| format!("{} ×{n}", render::escape(id)))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn run(global: &Global, args: &ClientsArgs) -> anyhow::Result<ExitCode> {
    let mut summary = Summary::default();
    let truncated = crate::runtime()?.block_on(events::pages(
        global,
        args.filter.to_proto(),
        filter::ago(args.since),
        None,
        args.limit,
        |page| {
            for ev in &page {
                summary.add(ev);
            }
        },
    ))?;
    let services = summary.sorted();
    match args.output {
        ClientsOutput::Json => {
            for (s, groups) in &services {
                for (g, c) in groups {
                    let line = serde_json::json!({
                        "service": {"process": s.program, "port": s.port},
                        "client": g.client,
                        "ja4": g.ja4,
                        "handshakes": c.handshakes,
                        "intercepted": c.intercepted,
                        "interceptors": c.interceptors.iter()
                            .map(|(id, n)| serde_json::json!({"id": id, "handshakes": n}))
                            .collect::<Vec<_>>(),
                        "idle_after_handshake": c.idle,
                        "refused_certificate": c.refused,
                    });
                    println!("{line}");
                }
            }
        }
        ClientsOutput::Table => {
            if services.is_empty() {
                println!(
                    "No inbound handshakes in the last {}: no local server was connected to \
                     over TLS (or sensord does not see this host's servers).",
                    humantime::format_duration(args.since)
                );
            }
            for (s, groups) in &services {
                let total: u64 = groups.iter().map(|(_, c)| c.handshakes).sum();
                let intercepted: u64 = groups.iter().map(|(_, c)| c.intercepted).sum();
                let idle: u64 = groups.iter().map(|(_, c)| c.idle).sum();
                println!(
                    "{} on port {}: {total} inbound handshakes, {intercepted} through an \
                     interceptor, {idle} idle after the handshake",
                    render::escape(&s.program),
                    s.port
                );
                let mut table = Table::new();
                table
                    .load_style(NOTHING)
                    .set_content_arrangement(ContentArrangement::Disabled)
                    .set_header([
                        "  CLIENT",
                        "JA4",
                        "HANDSHAKES",
                        "INTERCEPTOR",
                        "IDLE",
                        "REFUSED",
                    ]);
                for (g, c) in groups {
                    table.add_row([
                        format!("  {}", render::escape(&g.client)),
                        render::escape(&g.ja4).into_owned(),
                        c.handshakes.to_string(),
                        interceptors(c),
                        format!("idle {}", c.idle),
                        c.refused.to_string(),
                    ]);
                }
                println!("{table}\n");
            }
            if summary.other > 0 {
                println!(
                    "(other clients: {} handshakes past {MAX_SERVICES} services or \
                     {MAX_GROUPS} clients a service)",
                    summary.other
                );
            }
            if truncated {
                println!("(more events matched than --limit read)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbound(src: &str, ja4: &str, reasons: &[&str]) -> pb::Event {
        pb::Event {
            idle_after_handshake: reasons.contains(&"idle_after_handshake"),
            src_addr: src.into(),
            dst_port: 443,
            ja4: ja4.into(),
            verdict: if reasons
                .iter()
                .any(|r| r.starts_with("interceptor_fingerprint"))
            {
                "intercepted".into()
            } else {
                "clean".into()
            },
            reasons: reasons.iter().map(|r| (*r).to_owned()).collect(),
            process: Some(pb::Process {
                comm: "nginx".into(),
                role: "server".into(),
                ..pb::Process::default()
            }),
            ..pb::Event::default()
        }
    }

    #[test]
    fn groups_by_service_client_and_fingerprint_interceptors_first() {
        let mut s = Summary::default();
        s.add(&inbound("192.0.2.1", "t13d_a", &[]));
        s.add(&inbound("192.0.2.1", "t13d_a", &[]));
        for _ in 0..3 {
            s.add(&inbound(
                "192.0.2.9",
                "t13d_sq",
                &["interceptor_fingerprint:squid", "idle_after_handshake"],
            ));
        }
        // Outbound events are not a server's clients.
        let mut out = inbound("192.0.2.5", "t13d_c", &[]);
        out.process.as_mut().unwrap().role = "client".into();
        s.add(&out);
        let sorted = s.sorted();
        assert_eq!(sorted.len(), 1);
        let (service, groups) = &sorted[0];
        assert_eq!(service.program, "nginx");
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0.client, "192.0.2.9");
        assert_eq!(groups[0].1.idle, 3);
        assert_eq!(interceptors(groups[0].1), "squid ×3");
        assert_eq!(groups[1].1.handshakes, 2);
    }

    #[test]
    fn groups_are_bounded() {
        let mut s = Summary::default();
        for i in 0..(MAX_GROUPS + 5) {
            s.add(&inbound(&format!("10.{}.{}.1", i / 256, i % 256), "j", &[]));
        }
        assert_eq!(s.services.values().next().unwrap().len(), MAX_GROUPS);
        assert_eq!(s.other, 5);
    }
}
