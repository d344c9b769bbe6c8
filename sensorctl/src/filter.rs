//! The API's filters as flags, and `--since` values. They mean what they mean in the API and
//! in the JSON-lines export.

use std::time::Duration;

use sensor_proto::v1 as pb;

/// Filter flags. Each may repeat or take a comma-separated list; a value matches any of them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only these verdicts: clean, intercepted, untrusted, pin_mismatch, unverified.
    #[arg(long, value_delimiter = ',', value_name = "VERDICT")]
    pub verdict: Vec<String>,
    /// Only events at least this severe.
    #[arg(long, value_enum, value_name = "SEVERITY")]
    pub min_severity: Option<Severity>,
    /// Only these server names (globs: *.example.com).
    #[arg(long, value_delimiter = ',', value_name = "GLOB")]
    pub sni: Vec<String>,
    /// Only these process names.
    #[arg(long, value_delimiter = ',', value_name = "COMM")]
    pub comm: Vec<String>,
    /// Only these executables (globs: /usr/bin/*).
    #[arg(long, value_delimiter = ',', value_name = "PATH")]
    pub exe: Vec<String>,
    /// Only these process ids.
    #[arg(long, value_delimiter = ',', value_name = "PID")]
    pub pid: Vec<u32>,
    /// Only these destinations: IP, IP:PORT or :PORT.
    #[arg(long, value_delimiter = ',', value_name = "DEST", value_parser = destination)]
    pub dest: Vec<String>,
    /// Leave out these verdicts.
    #[arg(long, value_delimiter = ',', value_name = "VERDICT")]
    pub exclude_verdict: Vec<String>,
    /// Leave out these server names (globs).
    #[arg(long, value_delimiter = ',', value_name = "GLOB")]
    pub exclude_sni: Vec<String>,
    /// Leave out these process names.
    #[arg(long, value_delimiter = ',', value_name = "COMM")]
    pub exclude_comm: Vec<String>,
    /// Only processes in these containers, by name or id (globs: web-*).
    #[arg(long, value_delimiter = ',', value_name = "GLOB")]
    pub container: Vec<String>,
    /// Only processes under these container runtimes: docker, podman, containerd, cri-o.
    #[arg(long, value_delimiter = ',', value_name = "RUNTIME")]
    pub container_runtime: Vec<String>,
    /// Only processes in these Kubernetes pods, by name or namespace/name (globs: web-*,
    /// shop/*).
    #[arg(long, value_delimiter = ',', value_name = "GLOB")]
    pub pod: Vec<String>,
}

/// Severities, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl FilterArgs {
    pub fn to_proto(&self) -> pb::Filter {
        let min_severity = match self.min_severity {
            None => pb::Severity::Unspecified,
            Some(Severity::Info) => pb::Severity::Info,
            Some(Severity::Low) => pb::Severity::Low,
            Some(Severity::Medium) => pb::Severity::Medium,
            Some(Severity::High) => pb::Severity::High,
            Some(Severity::Critical) => pb::Severity::Critical,
        };
        pb::Filter {
            verdicts: self.verdict.clone(),
            min_severity: min_severity.into(),
            sni: self.sni.clone(),
            comm: self.comm.clone(),
            exe: self.exe.clone(),
            pid: self.pid.clone(),
            destination: self.dest.clone(),
            exclude_verdicts: self.exclude_verdict.clone(),
            exclude_sni: self.exclude_sni.clone(),
            exclude_comm: self.exclude_comm.clone(),
            exclude_exe: Vec::new(),
            exclude_destination: Vec::new(),
            container: self.container.clone(),
            container_runtime: self.container_runtime.clone(),
            pod: self.pod.clone(),
        }
    }
}

/// A destination as sensord takes it, checked here so that a typo is an error at once.
pub fn destination(s: &str) -> Result<String, String> {
    s.parse::<sensor_core::filter::Destination>()
        .map(|d| d.to_string())
        .map_err(|e| e.to_string())
}

/// `--since`: a sequence number, or a duration back from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// Events after this sequence number.
    Seq(u64),
    /// Events of the last while.
    Ago(Duration),
}

impl std::str::FromStr for Since {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(seq) = s.parse::<u64>() {
            return Ok(Self::Seq(seq));
        }
        humantime::parse_duration(s).map(Self::Ago).map_err(|_| {
            format!("{s:?} is neither a sequence number nor a duration like 10m, 1h or 2d")
        })
    }
}

/// Parse a duration flag (`1h`, `30m`, `2d`).
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|_| format!("{s:?} is not a duration like 10m, 1h or 2d"))
}

/// Now, in nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A protobuf timestamp `ago` before now.
pub fn ago(ago: Duration) -> prost_types::Timestamp {
    let ns = now_ns().saturating_sub(u64::try_from(ago.as_nanos()).unwrap_or(u64::MAX));
    let (seconds, nanos) = sensor_core::event::Timestamp(ns).seconds_nanos();
    prost_types::Timestamp { seconds, nanos }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_checked_before_sending() {
        assert_eq!(destination(":443"), Ok(":443".into()));
        assert_eq!(
            destination("[2001:db8::1]:443"),
            Ok("[2001:db8::1]:443".into())
        );
        assert!(destination("example.com:443").is_err());
    }

    #[test]
    fn since_takes_a_seq_or_a_duration() {
        assert_eq!("42".parse::<Since>(), Ok(Since::Seq(42)));
        assert_eq!(
            "1h".parse::<Since>(),
            Ok(Since::Ago(Duration::from_secs(3600)))
        );
        assert_eq!(
            "2d".parse::<Since>(),
            Ok(Since::Ago(Duration::from_secs(172_800)))
        );
        assert!("yesterday".parse::<Since>().is_err());
    }

    #[test]
    fn flags_become_the_api_filter() {
        let f = FilterArgs {
            verdict: vec!["intercepted".into()],
            min_severity: Some(Severity::High),
            sni: vec!["*.example.com".into()],
            pid: vec![7],
            ..FilterArgs::default()
        }
        .to_proto();
        assert_eq!(f.verdicts, ["intercepted"]);
        assert_eq!(f.min_severity, pb::Severity::High as i32);
        assert_eq!(f.pid, [7]);
    }
}
