//! `sensorctl watch`: live events, one line each; reconnects and resumes with no gap.

use std::{io::Write as _, process::ExitCode, time::Duration};

use sensor_host::render::{self, Palette};
use sensor_proto::v1 as pb;
use tokio_stream::StreamExt as _;

use crate::{
    Global, connect,
    filter::{FilterArgs, Since},
    lines::line,
};

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Start after this sequence number, or this long ago (10m, 1h, 2d), from the journal.
    /// Without it, only new events.
    #[arg(long, value_name = "SEQ|DURATION")]
    pub since: Option<Since>,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Output: text lines, or the JSON contract (one object per line, with its `seq`).
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: LineOutput,
    /// Fold identical events (verdict, SNI, issuer, process) within sensord's aggregation
    /// window into one with a count.
    #[arg(long)]
    pub aggregate: bool,
}

/// Text lines or JSON lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LineOutput {
    Text,
    Json,
}

/// The JSON contract of an event, with its sequence number (and count, when aggregated).
pub fn json_line(ev: &pb::Event) -> String {
    match serde_json::from_str::<serde_json::Value>(&ev.json) {
        Ok(serde_json::Value::Object(fields)) => {
            let mut out = serde_json::Map::with_capacity(fields.len() + 2);
            out.insert("seq".into(), ev.seq.into());
            if ev.count > 1 {
                out.insert("count".into(), ev.count.into());
            }
            out.extend(fields);
            serde_json::Value::Object(out).to_string()
        }
        _ => ev.json.clone(),
    }
}

pub fn run(global: &Global, args: &WatchArgs, palette: Palette) -> anyhow::Result<ExitCode> {
    crate::runtime()?.block_on(watch(global, args, palette))
}

async fn watch(global: &Global, args: &WatchArgs, palette: Palette) -> anyhow::Result<ExitCode> {
    // The first connection must work: a clear error beats waiting silently.
    let mut api = connect::connect(global).await?;
    let mut last = match args.since {
        Some(Since::Seq(seq)) => seq,
        Some(Since::Ago(d)) => first_seq_since(&mut api, d).await?,
        None => connect::status(&mut api).await?.last_seq,
    };
    let filter = args.filter.to_proto();
    let mut printed = 0u64;
    let mut stdout = std::io::stdout().lock();
    let mut backoff = Duration::from_millis(200);
    loop {
        let request = pb::WatchRequest {
            filter: Some(filter.clone()),
            since_seq: last,
            tail: false,
            aggregate: args.aggregate,
        };
        let lost = match api.watch(request).await {
            Ok(stream) => {
                backoff = Duration::from_millis(200);
                let mut stream = stream.into_inner();
                loop {
                    match stream.next().await {
                        Some(Ok(ev)) => {
                            // An aggregated stream says where to resume: events it folded
                            // and has not sent yet lie before this one's seq.
                            last = if args.aggregate && ev.resume_after > 0 {
                                ev.resume_after
                            } else {
                                last.max(ev.seq)
                            };
                            let line = match args.output {
                                LineOutput::Text => render::event_line(&line(&ev), palette),
                                LineOutput::Json => json_line(&ev),
                            };
                            if writeln!(stdout, "{line}")
                                .and_then(|()| stdout.flush())
                                .is_err()
                            {
                                // The reader went away (e.g. `| head`): a normal end.
                                return Ok(ExitCode::SUCCESS);
                            }
                            printed += 1;
                            if args.count.is_some_and(|n| printed >= n) {
                                return Ok(ExitCode::SUCCESS);
                            }
                        }
                        Some(Err(status)) if !transient(&status) => {
                            return Err(connect::rpc_error("watch", &status));
                        }
                        Some(Err(status)) => break status.message().to_owned(),
                        None => break "sensord closed the stream".to_owned(),
                    }
                }
            }
            Err(status) if !transient(&status) => {
                return Err(connect::rpc_error("watch", &status));
            }
            Err(status) => status.message().to_owned(),
        };
        eprintln!("sensorctl: lost sensord ({lost}); reconnecting, resuming after event {last}");
        // Reconnect until sensord is back.
        loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            match connect::connect(global).await {
                Ok(a) => {
                    api = a;
                    break;
                }
                Err(_) => continue,
            }
        }
    }
}

/// Whether a failure is the connection's (reconnect) rather than the request's (give up).
fn transient(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::Aborted
    )
}

/// The sequence number to resume after so that events of the last `d` come next.
async fn first_seq_since(
    api: &mut sensor_proto::v1::sensor_client::SensorClient<tonic::transport::Channel>,
    d: Duration,
) -> anyhow::Result<u64> {
    // The status first: whatever arrives after it is streamed anyway.
    let last = connect::status(api).await?.last_seq;
    let first = api
        .list_events(pb::ListEventsRequest {
            from: Some(crate::filter::ago(d)),
            limit: 1,
            ..pb::ListEventsRequest::default()
        })
        .await
        .map_err(|s| connect::rpc_error("listing events", &s))?
        .into_inner()
        .events
        .first()
        .map(|e| e.seq);
    Ok(match first {
        Some(seq) => seq.saturating_sub(1).min(last),
        None => last,
    })
}
