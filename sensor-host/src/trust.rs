//! Building a [`TrustContext`] from files and the system store. An edge: reads files; the
//! parsing and the context itself are `sensor_core::trust`.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls_pki_types::{CertificateDer, pem::PemObject};

use sensor_core::trust::{Approved, Catalogue, Pins, Store, TrustContext, TrustError, line_of};

/// The trust flags every command shares (`--host-roots`, `--public-roots`, `--pins`, ...).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TrustArgs {
    /// Use these PEM files or folders as this host's trust store instead of the system's
    /// (repeatable).
    #[arg(long = "host-roots", value_name = "PEM")]
    pub host_roots: Vec<PathBuf>,
    /// Use these PEM files or folders as the public Web PKI instead of Mozilla's roots
    /// (repeatable).
    #[arg(long = "public-roots", value_name = "PEM")]
    pub public_roots: Vec<PathBuf>,
    /// A pin file (TOML, see the README).
    #[arg(long, value_name = "FILE")]
    pub pins: Option<PathBuf>,
    /// Replace the built-in catalogue of interception products.
    #[arg(long, value_name = "FILE")]
    pub catalogue: Option<PathBuf>,
    /// An inspection CA this organisation runs on purpose, by the base64 SHA-256 of its SPKI
    /// (repeatable).
    #[arg(long = "approved-spki", value_name = "PIN")]
    pub approved_spki: Vec<String>,
}

impl TrustArgs {
    /// The configuration these flags describe, over `base` (a config file's), which they
    /// override where given.
    pub fn over(&self, base: TrustConfig) -> TrustConfig {
        let mut cfg = base;
        if !self.host_roots.is_empty() {
            cfg.host_roots = Some(self.host_roots.clone());
        }
        if !self.public_roots.is_empty() {
            cfg.public_roots = Some(self.public_roots.clone());
        }
        if self.pins.is_some() {
            cfg.pins = self.pins.clone();
        }
        if self.catalogue.is_some() {
            cfg.catalogue = self.catalogue.clone();
        }
        cfg.approved
            .extend(self.approved_spki.iter().cloned().map(Approved::Spki));
        cfg
    }
}

/// Where the trust inputs come from.
#[derive(Clone, Debug, Default)]
pub struct TrustConfig {
    /// Replace the system store with these PEM files or folders.
    pub host_roots: Option<Vec<PathBuf>>,
    /// Add these PEM files or folders to the host store.
    pub extra_host_roots: Vec<PathBuf>,
    /// Replace Mozilla's roots with these PEM files or folders.
    pub public_roots: Option<Vec<PathBuf>>,
    pub pins: Option<PathBuf>,
    /// Replace the built-in interceptor catalogue.
    pub catalogue: Option<PathBuf>,
    pub approved: Vec<Approved>,
}

fn read(path: &Path) -> Result<String, TrustError> {
    std::fs::read_to_string(path).map_err(|e| {
        TrustError::new(
            path.display().to_string(),
            None,
            format!("cannot read: {e}"),
        )
    })
}

/// The certificates of a PEM file, or of every `.pem`/`.crt` file in a folder.
pub fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path)
        .map_err(|e| TrustError::new(&shown, None, format!("cannot read: {e}")))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| TrustError::new(&shown, None, format!("cannot list: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pem" || x == "crt"))
            .collect();
        entries.sort();
        let mut all = Vec::new();
        for p in entries {
            all.extend(pem_certificates(&p)?);
        }
        return Ok(all);
    }
    let text = read(path)?;
    parse_pem(&text, &shown)
}

/// The certificates in PEM text; an error names the line of the bad block.
pub fn parse_pem(text: &str, file: &str) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let starts: Vec<usize> = text
        .match_indices("-----BEGIN CERTIFICATE-----")
        .map(|(i, _)| i)
        .collect();
    let mut certs = Vec::new();
    for (i, item) in CertificateDer::pem_slice_iter(text.as_bytes()).enumerate() {
        match item {
            Ok(c) => certs.push(c.into_owned()),
            Err(e) => {
                let line = starts.get(i).map(|&at| line_of(text, at));
                return Err(TrustError::new(
                    file,
                    line,
                    format!("bad PEM certificate: {e}"),
                ));
            }
        }
    }
    if certs.is_empty() {
        return Err(TrustError::new(file, None, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn store_from_files(
    name: &'static str,
    paths: &[PathBuf],
    expects_sct: bool,
) -> Result<Store, TrustError> {
    let mut certs = Vec::new();
    for p in paths {
        certs.extend(pem_certificates(p)?);
    }
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let (store, bad) = Store::from_certificates(name, shown.join(", "), &certs, expects_sct);
    if let Some((i, why)) = bad.first() {
        return Err(TrustError::new(
            shown.join(", "),
            None,
            format!("certificate {} cannot be a trust anchor: {why}", i + 1),
        ));
    }
    Ok(store)
}

/// The system's store (rustls-native-certs: SSL_CERT_FILE/SSL_CERT_DIR or the distribution's
/// bundle), plus `extra` files.
fn system_store(extra: &[PathBuf]) -> Result<Store, TrustError> {
    let found = rustls_native_certs::load_native_certs();
    let mut certs = found.certs;
    for p in extra {
        certs.extend(pem_certificates(p)?);
    }
    let mut source = String::from("the system store");
    if !extra.is_empty() {
        let shown: Vec<String> = extra.iter().map(|p| p.display().to_string()).collect();
        source.push_str(&format!(" and {}", shown.join(", ")));
    }
    let (store, _bad) = Store::from_certificates("host", source, &certs, false);
    if store.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "no certificates found".into());
        return Err(TrustError::new(
            "system trust store",
            None,
            format!("it is empty ({why}); name a store with --host-roots"),
        ));
    }
    Ok(store)
}

/// Build the trust context. Refuses an empty host or public store rather than running with
/// one silently.
pub fn load(cfg: &TrustConfig, generation: u64) -> Result<TrustContext, TrustError> {
    let host = match &cfg.host_roots {
        Some(paths) => {
            let mut all = paths.clone();
            all.extend(cfg.extra_host_roots.iter().cloned());
            store_from_files("host", &all, false)?
        }
        None => system_store(&cfg.extra_host_roots)?,
    };
    let public = match &cfg.public_roots {
        // Private "public" roots (a lab, a test) are not expected to log to CT.
        Some(paths) => store_from_files("public", paths, false)?,
        None => Store::mozilla(),
    };
    let pins = match &cfg.pins {
        Some(p) => Pins::parse(&read(p)?, &p.display().to_string())?,
        None => Pins::default(),
    };
    let catalogue = match &cfg.catalogue {
        Some(p) => Catalogue::parse(&read(p)?, &p.display().to_string())?,
        None => Catalogue::builtin(),
    };
    Ok(TrustContext {
        generation,
        host: Arc::new(host),
        public: Arc::new(public),
        pins,
        catalogue: Arc::new(catalogue),
        approved: cfg.approved.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_names_the_line() {
        let text = "# roots\n-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let err = parse_pem(text, "roots.pem").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        let err = parse_pem("nothing here\n", "empty.pem").unwrap_err();
        assert_eq!(err.to_string(), "empty.pem: no PEM certificate in it");
    }

    #[test]
    fn a_missing_file_is_an_error_that_names_it() {
        let cfg = TrustConfig {
            host_roots: Some(vec!["/nonexistent/roots.pem".into()]),
            ..TrustConfig::default()
        };
        let err = load(&cfg, 1).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/roots.pem: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn the_system_store_loads_here() {
        let ctx = load(&TrustConfig::default(), 1).unwrap();
        assert!(ctx.host.len() > 50, "{}", ctx.host.len());
        assert!(ctx.public.len() > 100);
        assert!(ctx.public.expects_sct);
    }
}
