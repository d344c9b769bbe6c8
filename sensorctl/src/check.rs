//! `sensorctl check HOST[:PORT]`: is my traffic to it being inspected? No daemon needed.

use std::{process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use sensor_core::{verdict::Facts, x509};
use sensor_host::{
    probe::{self, ProbeOptions, Proxy, Target},
    render::{self, Palette},
    trust::TrustArgs,
};

use crate::{
    filter,
    offline::{exit_code, trust_engine},
};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The server: a name or an address, with an optional port (443 by default).
    #[arg(value_name = "HOST[:PORT]")]
    pub target: Target,
    /// Send this server name (SNI) instead of HOST, e.g. when HOST is an address.
    #[arg(long)]
    pub sni: Option<String>,
    /// Go through this HTTP proxy (http://HOST:PORT, with CONNECT). By default HTTPS_PROXY
    /// (or https_proxy), unless NO_PROXY names the host.
    #[arg(long, value_name = "URL")]
    pub proxy: Option<Proxy>,
    /// Connect directly, whatever HTTPS_PROXY says.
    #[arg(long, conflicts_with = "proxy")]
    pub no_proxy: bool,
    /// Give up after this long.
    #[arg(long, value_parser = filter::duration, default_value = "10s")]
    pub timeout: Duration,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: sensor_host::analyze::Output,
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// The proxy from the environment, as curl reads it, unless NO_PROXY covers `host`.
fn env_proxy(host: &str) -> anyhow::Result<Option<Proxy>> {
    let var = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
    };
    let Some(url) = var(&["https_proxy", "HTTPS_PROXY"]) else {
        return Ok(None);
    };
    if let Some(no) = var(&["no_proxy", "NO_PROXY"])
        && no_proxy_covers(&no, host)
    {
        return Ok(None);
    }
    url.parse::<Proxy>()
        .map(Some)
        .with_context(|| "HTTPS_PROXY is not a proxy sensorctl can use (pass --no-proxy)")
}

/// NO_PROXY: comma-separated names (a name covers its subdomains), `.suffix`, or `*`.
fn no_proxy_covers(list: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    list.split(',').map(str::trim).any(|entry| {
        let entry = entry.to_ascii_lowercase();
        let entry = entry.split(':').next().unwrap_or_default();
        if entry == "*" {
            return true;
        }
        let suffix = entry.trim_start_matches('.');
        !suffix.is_empty() && (host == suffix || host.ends_with(&format!(".{suffix}")))
    })
}

pub fn run(args: &CheckArgs, palette: Palette) -> anyhow::Result<ExitCode> {
    let mut engine = match trust_engine(&args.trust) {
        Ok(e) => e,
        Err(code) => return Ok(code),
    };
    let proxy = match (&args.proxy, args.no_proxy) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => None,
        (None, false) => env_proxy(&args.target.host)?,
    };
    let opts = ProbeOptions {
        sni: args.sni.clone(),
        proxy,
        timeout: args.timeout,
        ..ProbeOptions::default()
    };
    let probed = crate::runtime()?
        .block_on(probe::probe(&args.target, &opts))
        .with_context(|| format!("checking {}", args.target))?;
    let mut chain = Vec::with_capacity(probed.chain.len());
    for (i, der) in probed.chain.iter().enumerate() {
        let summary = x509::summarize(der.as_ref())
            .with_context(|| format!("certificate {} of the chain does not parse", i + 1))?;
        chain.push(Arc::new(summary));
    }
    let server_ip = if probed.via_proxy {
        args.target.ip()
    } else {
        Some(probed.peer.ip())
    };
    let v = engine.judge(&Facts {
        chain: &chain,
        server_name: probed.server_name.as_deref(),
        dst_addr: server_ip,
        time_ns: filter::now_ns(),
        ..Facts::default()
    });
    match args.output {
        sensor_host::analyze::Output::Json => {
            let mut json = serde_json::json!({
                "target": args.target.to_string(),
                "server_name": probed.server_name,
                "connected_to": probed.peer.to_string(),
                "via_proxy": probed.via_proxy,
                "tls_version": probed.tls_version,
                "cipher": probed.cipher,
                "alpn": probed.alpn,
                "handshake_error": probed.handshake_error,
                "chain_source": "probe",
            });
            if let Some(map) = json.as_object_mut() {
                map.extend(render::judgement_json(&v, &chain));
            }
            println!("{json}");
        }
        sensor_host::analyze::Output::Text => {
            let (style, words) = render::judgement_words(&v, &chain);
            println!(
                "{} {} {}",
                palette.paint(style.bold(), &v.verdict.as_str().to_uppercase()),
                args.target,
                palette.paint(style, &words)
            );
            let via = if probed.via_proxy {
                format!(" through the proxy {}", probed.peer)
            } else {
                format!(" at {}", probed.peer)
            };
            match (probed.tls_version, &probed.cipher) {
                (Some(version), Some(cipher)) => println!(
                    "TLS {version} {cipher}{}{via}, sni {}",
                    probed
                        .alpn
                        .as_deref()
                        .map(|a| format!(" alpn {}", render::escape(a)))
                        .unwrap_or_default(),
                    probed.server_name.as_deref().unwrap_or("(none)"),
                ),
                _ => println!(
                    "handshake incomplete{via}: {}",
                    render::escape(probed.handshake_error.as_deref().unwrap_or("unknown"))
                ),
            }
            // It quotes the server's certificate names.
            println!("{}", render::escape(&v.explanation));
            let reasons: Vec<String> = v.reasons.iter().map(ToString::to_string).collect();
            println!("severity {}; reasons {}", v.severity, reasons.join(" "));
            print!("{}", render::chain(&chain));
        }
    }
    Ok(exit_code(v.verdict))
}

#[cfg(test)]
mod tests {
    use super::no_proxy_covers;

    #[test]
    fn no_proxy() {
        assert!(no_proxy_covers(
            "localhost, .corp.example",
            "intranet.corp.example"
        ));
        assert!(no_proxy_covers("example.com", "api.example.com"));
        assert!(no_proxy_covers("*", "anything"));
        assert!(!no_proxy_covers("example.com", "badexample.com"));
        assert!(!no_proxy_covers("", "example.com"));
    }
}
