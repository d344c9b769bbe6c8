//! Reloading the configuration and the trust inputs (SIGHUP, or the API's Reload). The new
//! configuration and trust context are loaded off the capture path, on a blocking thread, one
//! reload at a time; the capture loop then applies them at once. A bad input refuses the whole
//! reload and the running configuration stays. The reply says which changed settings are in
//! force and which need a restart.
//!
//! A reload whose trust inputs (stores, pins, catalogue, approvals) are the same as those in
//! force hands back the context in force, with its generation: the verdict cache is kept, and
//! the generation only moves when what the verdicts are made against changed.

use std::sync::Arc;

use sensor_core::trust::TrustContext;
use sensor_host::config::Config;
use tokio::sync::{mpsc, oneshot};

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

/// A load ready to apply: the configuration, and the trust context to put in force (the one
/// in force already when the inputs did not change).
pub struct Ready {
    pub config: Config,
    pub trust: Arc<TrustContext>,
}

/// A finished load and who asked for it (`None`: SIGHUP).
pub type LoadResult = (Result<Ready, String>, Option<ReloadRequest>);

/// Load each requested reload in turn with `load` (given the next trust generation), off the
/// capture path, and hand the result to the capture loop. `in_force` is the trust context the
/// capture loop starts with; every context this hands over is in force from then on (the
/// capture loop applies each). Ends when either channel closes.
pub async fn loader(
    load: impl Fn(u64) -> anyhow::Result<Loaded> + Clone + Send + 'static,
    mut in_force: Arc<TrustContext>,
    mut requests: mpsc::Receiver<Option<ReloadRequest>>,
    done: mpsc::Sender<LoadResult>,
) {
    while let Some(reply) = requests.recv().await {
        let load = load.clone();
        let current = in_force.clone();
        // Loading and comparing both happen on a blocking thread: reading the stores and
        // comparing their anchors takes milliseconds the capture loop must not wait.
        let result = tokio::task::spawn_blocking(move || {
            let loaded = load(current.generation + 1)?;
            let trust = if loaded.trust.same_inputs(&current) {
                current
            } else {
                Arc::new(loaded.trust)
            };
            Ok::<_, anyhow::Error>(Ready {
                config: loaded.config,
                trust,
            })
        })
        .await
        .map_err(|e| format!("the reload task failed: {e}"))
        .and_then(|r| r.map_err(|e| format!("{e:#}")));
        if let Ok(ready) = &result {
            in_force = ready.trust.clone();
        }
        if done.send((result, reply)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use sensor_core::trust::{Catalogue, Pins, Store};

    use super::*;

    fn context(generation: u64, pins: &str) -> TrustContext {
        let mozilla = Arc::new(Store::mozilla());
        TrustContext {
            generation,
            host: mozilla.clone(),
            public: mozilla,
            pins: Pins::parse(pins, "pins.toml").unwrap(),
            catalogue: Arc::new(Catalogue::builtin()),
            approved: Vec::new(),
        }
    }

    const PIN: &str =
        "[[pin]]\nhost = \"a.test\"\nspki = [\"YLh1dUR9y6Kja30RrAn7JKnbQG/uEtLMkBgFF2Fuihg=\"]\n";

    #[tokio::test]
    async fn unchanged_trust_inputs_keep_the_context_in_force() {
        let pins = Arc::new(std::sync::Mutex::new(String::new()));
        let file = pins.clone();
        let load = move |generation| {
            let text = file.lock().unwrap().clone();
            Ok(Loaded {
                config: Config::default(),
                trust: context(generation, &text),
            })
        };
        let in_force = Arc::new(context(1, ""));
        let (requests, requests_rx) = mpsc::channel(4);
        let (done, mut done_rx) = mpsc::channel(4);
        tokio::spawn(loader(load, in_force.clone(), requests_rx, done));

        let mut reload = async || {
            requests.send(None).await.unwrap();
            let (result, _) = done_rx.recv().await.unwrap();
            result.unwrap().trust
        };
        let same = reload().await;
        assert!(
            Arc::ptr_eq(&same, &in_force),
            "nothing changed: the same context"
        );
        assert_eq!(same.generation, 1);
        *pins.lock().unwrap() = PIN.into();
        let pinned = reload().await;
        assert_eq!(pinned.generation, 2, "a pin changed: a new generation");
        assert_eq!(pinned.pins.pins.len(), 1);
        let again = reload().await;
        assert!(Arc::ptr_eq(&again, &pinned));
    }

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
