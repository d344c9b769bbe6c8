//! Commands that need no daemon: `analyze` (a capture file) and `check-chain` (a PEM chain).

use std::{io::IsTerminal as _, net::IpAddr, process::ExitCode, sync::Arc};

use sensor_core::{
    event::Verdict,
    verdict::{Facts, VerdictEngine},
    x509,
};
use sensor_host::{
    analyze::{self, Output},
    render::{self, Palette},
    trust::{self as load, TrustArgs, TrustConfig},
};

/// 0 for a clean (or unjudgeable) chain, 1 for one that is not.
pub fn exit_code(v: Verdict) -> ExitCode {
    match v {
        Verdict::Clean | Verdict::Unverified => ExitCode::SUCCESS,
        Verdict::Intercepted | Verdict::Untrusted | Verdict::PinMismatch => ExitCode::from(1),
    }
}

/// Load the trust context the flags describe, or say why not.
pub fn trust_engine(trust: &TrustArgs) -> Result<VerdictEngine, ExitCode> {
    match load::load(&trust.over(TrustConfig::default()), 1) {
        Ok(ctx) => Ok(VerdictEngine::new(Arc::new(ctx))),
        Err(e) => {
            eprintln!("sensorctl: {e}");
            Err(ExitCode::from(2))
        }
    }
}

pub fn run_analyze(
    file: &std::path::Path,
    output: Output,
    stats: bool,
    threads: analyze::Threads,
    trust: &TrustArgs,
) -> ExitCode {
    let mut engine = match trust_engine(trust) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let bar = (std::io::stderr().is_terminal() && size > 8 << 20).then(|| {
        let bar = indicatif::ProgressBar::new(size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let result = analyze::analyze_file(
        file,
        output,
        threads,
        &mut out,
        &mut |hs| engine.apply(hs),
        &mut |bytes| {
            if let Some(bar) = &bar {
                bar.set_position(bytes);
            }
        },
    );
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    drop(out);
    match result {
        Ok(summary) => {
            if stats {
                let all = serde_json::json!({
                    "capture": summary.capture,
                    "engine": summary.engine,
                    "verdicts": engine.stats(),
                });
                eprintln!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("sensorctl: {err}");
            ExitCode::from(2)
        }
    }
}

pub fn run_check_chain(
    file: &std::path::Path,
    name: Option<&str>,
    addr: Option<IpAddr>,
    output: Output,
    trust: &TrustArgs,
    palette: Palette,
) -> ExitCode {
    let mut engine = match trust_engine(trust) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let certs = match load::pem_certificates(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sensorctl: {e}");
            return ExitCode::from(2);
        }
    };
    let mut chain = Vec::new();
    for (i, c) in certs.iter().enumerate() {
        match x509::summarize(c.as_ref()) {
            Ok(s) => chain.push(Arc::new(s)),
            Err(e) => {
                eprintln!("sensorctl: {}: certificate {}: {e}", file.display(), i + 1);
                return ExitCode::from(2);
            }
        }
    }
    let v = engine.judge(&Facts {
        chain: &chain,
        server_name: name,
        dst_addr: addr,
        time_ns: crate::filter::now_ns(),
        ..Facts::default()
    });
    match output {
        Output::Json => {
            println!(
                "{}",
                serde_json::Value::Object(render::judgement_json(&v, &chain))
            );
        }
        Output::Text => {
            let (style, words) = render::judgement_words(&v, &chain);
            let reasons: Vec<String> = v.reasons.iter().map(ToString::to_string).collect();
            println!(
                "{} ({}) {}",
                palette.paint(style.bold(), &v.verdict.as_str().to_uppercase()),
                v.severity,
                reasons.join(" ")
            );
            println!("{}", palette.paint(style, &words));
            // It quotes the chain's certificate names.
            println!("{}", render::escape(&v.explanation));
            print!("{}", render::chain(&chain));
        }
    }
    exit_code(v.verdict)
}
