//! Reloading the configuration and the trust inputs (SIGHUP, or the API's Reload). The new
//! configuration and trust context are loaded off the capture path, on a blocking thread, one
//! reload at a time; the capture loop then applies them at once. A bad input refuses the whole
//! reload and the running configuration stays. The reply says which changed settings are in
//! force and which need a restart.

use std::sync::{Arc, atomic::Ordering};

use sensor_core::trust::TrustContext;
use sensor_host::config::Config;
use tokio::sync::{mpsc, oneshot};

use crate::status::Shared;

/// A reload asked for over the API, answered when it is done.
pub type ReloadRequest = oneshot::Sender<ReloadReply>;

/// How a reload ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadReply {
    Done(ReloadReport),
    /// The new inputs did not load (the message names the file and line); nothing changed.
    Refused(String),
}

/// What a reload changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// The trust context's generation now in force (the stores, pins and catalogue are always
    /// read anew).
    pub generation: u64,
    /// Changed settings (`section.key`) now in force.
    pub applied: Vec<String>,
    /// Changed settings that take effect only after a restart.
    pub restart_required: Vec<String>,
}

/// Settings (and whole sections) that a reload applies while running.
const LIVE: &[&str] = &["trust", "probe", "journal", "export", "tap.byte_budget"];

/// Split changed settings into those applied live and those that need a restart.
pub fn classify(changed: Vec<String>) -> (Vec<String>, Vec<String>) {
    changed.into_iter().partition(|name| {
        LIVE.iter()
            .any(|p| name == p || name.strip_prefix(p).is_some_and(|r| r.starts_with('.')))
    })
}

/// A configuration and trust context, loaded aside.
pub struct Loaded {
    pub config: Config,
    pub trust: TrustContext,
}

/// A finished load and who asked for it (`None`: SIGHUP).
pub type LoadResult = (Result<Loaded, String>, Option<ReloadRequest>);

/// Load each requested reload in turn with `load` (given the next trust generation), off the
/// capture path, and hand the result to the capture loop. Ends when either channel closes.
pub async fn loader(
    load: impl Fn(u64) -> anyhow::Result<Loaded> + Clone + Send + 'static,
    shared: Arc<Shared>,
    mut requests: mpsc::Receiver<Option<ReloadRequest>>,
    done: mpsc::Sender<LoadResult>,
) {
    while let Some(reply) = requests.recv().await {
        let generation = shared.trust_generation.load(Ordering::Relaxed) + 1;
        let load = load.clone();
        let result = tokio::task::spawn_blocking(move || load(generation))
            .await
            .map_err(|e| format!("the reload task failed: {e}"))
            .and_then(|r| r.map_err(|e| format!("{e:#}")));
        if done.send((result, reply)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_settings_and_those_that_need_a_restart() {
        let old = Config::default();
        let mut new = Config::default();
        new.probe.max_per_second = 3;
        new.tap.byte_budget = 1000;
        new.tap.ring_buffer_mb = 16;
        new.api.aggregation_window_secs = 5;
        new.journal.retention_days = 1;
        new.uprobe.enabled = false;
        new.export.jsonl = Some(Default::default());
        let (live, restart) = classify(old.changed_settings(&new));
        assert_eq!(
            live,
            [
                "export.jsonl",
                "journal.retention_days",
                "probe.max_per_second",
                "tap.byte_budget"
            ]
        );
        assert_eq!(
            restart,
            [
                "api.aggregation_window_secs",
                "tap.ring_buffer_mb",
                "uprobe.enabled"
            ]
        );
        assert!(old.changed_settings(&old.clone()).is_empty());
        // A prefix of a live section's name is not that section.
        assert_eq!(classify(vec!["probes.x".into()]).1, ["probes.x"]);
    }
}
