//! `sensorctl cert SHA256`: a stored certificate, summarised or as PEM.

use std::process::ExitCode;

use anyhow::bail;
use sensor_proto::v1 as pb;

use sensor_host::render;

use crate::{Global, connect};

/// Lower-case hex without separators, or why not.
pub fn normalize(sha256: &str) -> anyhow::Result<String> {
    let hex: String = sha256
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("{sha256:?} is not a SHA-256 (64 hex digits, as events show it)");
    }
    Ok(hex)
}

pub fn run(global: &Global, sha256: &str, pem: bool) -> anyhow::Result<ExitCode> {
    let sha256 = normalize(sha256)?;
    let cert = crate::runtime()?.block_on(async {
        let mut api = connect::connect(global).await?;
        api.get_certificate(pb::GetCertificateRequest {
            sha256: sha256.clone(),
        })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::NotFound => {
                anyhow::anyhow!("no certificate {sha256} in sensord's journal")
            }
            _ => connect::rpc_error("getting the certificate", &s),
        })
        .map(tonic::Response::into_inner)
    })?;
    if pem {
        print!("{}", cert.pem);
        return Ok(ExitCode::SUCCESS);
    }
    // The DER is parsed here for the full summary (names, key, signature).
    match sensor_core::x509::summarize(&cert.der) {
        Ok(summary) => print!("{}", render::chain(&[std::sync::Arc::new(summary)])),
        Err(e) => bail!("the stored certificate does not parse: {e}"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashes_are_normalised() {
        let colons = ["AB"; 32].join(":");
        assert_eq!(super::normalize(&colons).unwrap(), "ab".repeat(32));
        assert!(super::normalize("abc").is_err());
    }
}
