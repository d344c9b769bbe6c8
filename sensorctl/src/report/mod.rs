//! `sensorctl report`: one self-contained HTML page from the journal (verdicts over time,
//! interception by product, issuer, process and destination, the newest severe events with
//! their explanations). The events are read page by page and folded into a `summary` as they
//! come, so a long journal costs the groups, not the events; `html` draws the page.

mod html;
mod summary;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use sensor_core::event::Verdict;
use sensor_host::render;
use sensor_proto::v1 as pb;

use crate::{
    Global, events,
    filter::{self, FilterArgs},
    lines::line,
};

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// The window the report covers, up to now: 1h, 7d, 30d.
    #[arg(long, value_name = "DURATION", value_parser = filter::duration, default_value = "7d")]
    pub since: Duration,
    /// Where to write the page (`-`: standard output).
    #[arg(short, long, value_name = "FILE", default_value = "sensor-report.html")]
    pub output: PathBuf,
    /// Read at most this many events (the oldest of the window first).
    #[arg(long, default_value_t = 1_000_000)]
    pub limit: u64,
}

/// The report's row of an API event.
fn row(ev: &pb::Event) -> summary::Row {
    let l = line(ev);
    let program = render::Line {
        pid: None,
        ..l.clone()
    }
    .process();
    summary::Row {
        seq: ev.seq,
        time: l.time,
        verdict: l.verdict,
        severity: l.severity,
        process: l.process(),
        program,
        destination: l.destination(),
        issuer: l.issuer.map(|i| render::common_name(i).to_owned()),
        product: l.product.filter(|p| !p.is_empty()).map(str::to_owned),
        why: render::main_reason(&l),
        explanation: ev.explanation.clone(),
        host: ev
            .host
            .as_ref()
            .map(|h| h.name.clone())
            .filter(|n| !n.is_empty()),
        count: l.count,
    }
}

pub fn run(global: &Global, args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let now = filter::now_ns();
    let to = i64::try_from(now / 1_000_000_000).unwrap_or(i64::MAX);
    let from = to.saturating_sub(i64::try_from(args.since.as_secs()).unwrap_or(i64::MAX));
    let mut builder = summary::Builder::new(from, to);
    let truncated = crate::runtime()?.block_on(events::pages(
        global,
        args.filter.to_proto(),
        filter::ago(args.since),
        None,
        args.limit,
        |page| {
            for ev in &page {
                builder.add(row(ev));
            }
        },
    ))?;
    let summary = builder.finish(truncated);
    let page = html::page(&summary, to);
    write(&args.output, page.as_bytes())?;
    if args.output != Path::new("-") {
        eprintln!(
            "sensorctl: wrote {} ({} handshakes, {} intercepted{})",
            args.output.display(),
            summary.totals.total(),
            summary.totals.of(Verdict::Intercepted),
            if truncated {
                "; more matched, see --limit"
            } else {
                ""
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if path == Path::new("-") {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        return Ok(out.flush()?);
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
