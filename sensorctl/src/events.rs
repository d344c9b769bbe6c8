//! `sensorctl events`: the history in the journal.

use std::{process::ExitCode, time::Duration};

use comfy_table::{ContentArrangement, Table, presets::NOTHING};
use sensor_host::render::{self, Palette};
use sensor_proto::v1 as pb;

use crate::{
    Global, connect,
    filter::{self, FilterArgs},
    lines::line,
    watch::json_line,
};

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Events of the last while: 10m, 1h, 2d.
    #[arg(long, value_name = "DURATION", value_parser = filter::duration, default_value = "24h")]
    pub since: Duration,
    /// Events up to this long ago.
    #[arg(long, value_name = "DURATION", value_parser = filter::duration)]
    pub until: Option<Duration>,
    /// At most this many events, oldest first.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Output: a table, text lines as `watch` prints them, or the JSON contract per line.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: EventsOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventsOutput {
    Table,
    Text,
    Json,
}

/// The journal's events in `from..to` that pass `filter`, oldest first, a page at a time
/// (1,000 at most each) handed to `each`, `limit` at most in all; whether more matched.
pub async fn pages(
    global: &Global,
    filter: pb::Filter,
    from: prost_types::Timestamp,
    to: Option<prost_types::Timestamp>,
    limit: u64,
    mut each: impl FnMut(Vec<pb::Event>),
) -> anyhow::Result<bool> {
    let mut api = connect::connect(global).await?;
    let mut token = String::new();
    let mut read = 0u64;
    loop {
        let want = limit.saturating_sub(read).min(1000) as u32;
        let page = api
            .list_events(pb::ListEventsRequest {
                filter: Some(filter.clone()),
                from: Some(from),
                to,
                limit: want,
                page_token: token.clone(),
            })
            .await
            .map_err(|s| connect::rpc_error("listing events", &s))?
            .into_inner();
        read += page.events.len() as u64;
        each(page.events);
        token = page.next_page_token;
        if token.is_empty() || read >= limit {
            return Ok(!token.is_empty());
        }
    }
}

pub fn run(global: &Global, args: &EventsArgs, palette: Palette) -> anyhow::Result<ExitCode> {
    let mut events: Vec<pb::Event> = Vec::new();
    let more = crate::runtime()?.block_on(pages(
        global,
        args.filter.to_proto(),
        filter::ago(args.since),
        args.until.map(filter::ago),
        u64::from(args.limit),
        |page| events.extend(page),
    ))?;
    match args.output {
        EventsOutput::Json => {
            for ev in &events {
                println!("{}", json_line(ev));
            }
        }
        EventsOutput::Text => {
            for ev in &events {
                println!("{}", render::event_line(&line(ev), palette));
            }
        }
        EventsOutput::Table => {
            let mut t = Table::new();
            t.load_style(NOTHING)
                .set_content_arrangement(ContentArrangement::Disabled)
                .set_header([
                    "SEQ",
                    "TIME",
                    "VERDICT",
                    "PROCESS",
                    "DESTINATION",
                    "TLS",
                    "WHY",
                ]);
            for ev in &events {
                let l = line(ev);
                t.add_row([
                    ev.seq.to_string(),
                    render::time(l.time),
                    palette.paint(Palette::severity_style(l.severity), &l.verdict_word()),
                    l.process(),
                    l.destination(),
                    l.tls_version.map(|v| v.to_string()).unwrap_or_default(),
                    render::main_reason(&l),
                ]);
            }
            if events.is_empty() {
                eprintln!("no events match");
            } else {
                println!("{}", t.trim_fmt());
            }
        }
    }
    if more {
        eprintln!(
            "sensorctl: more events match; raise --limit or narrow --since (the last shown is {})",
            events.last().map_or(0, |e| e.seq)
        );
    }
    Ok(ExitCode::SUCCESS)
}
