//! What Kubernetes calls a container: its pod's name, namespace, uid and labels, the container's
//! own name and image, asked of the container runtime's CRI socket (containerd, CRI-O,
//! cri-dockerd) when one is present.
//!
//! The lookups happen where a process is first read ([`super::procfs`]), on the daemon's loop,
//! which must not wait for another daemon: [`Cri::describe`] only reads answers already in and
//! queues a question for the ids it has none for; a task of its own asks the runtime
//! (`ListContainers` by id, then `ListPodSandbox` by the container's pod) and files the answer.
//! A process is read when it first connects, and its event is made once its handshake is over,
//! so the answer is normally in by then; when it is not, the next event of the container has it.
//!
//! Bounded: at most [`MAX_ANSWERS`] answers kept, [`QUEUE`] questions waiting (past that they
//! are dropped and counted), each id asked at most once a second, every call limited to
//! [`CALL_TIMEOUT`]. Text from the runtime is cleaned of control characters and bounded; at most
//! [`MAX_LABELS`] labels per pod.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hashlink::LruCache;
use sensor_core::event::{Container, ContainerRuntime, Pod, host::clean_text};
use sensor_proto::cri::{
    ContainerFilter, ListContainersRequest, ListPodSandboxRequest, PodSandboxFilter,
    VersionRequest, runtime_service_client::RuntimeServiceClient,
};
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// Where the runtimes put their CRI sockets, tried in this order when the configuration names
/// none.
pub const DEFAULT_SOCKETS: [&str; 4] = [
    "/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/run/k3s/containerd/containerd.sock",
    "/run/cri-dockerd.sock",
];

/// Answers kept at most.
pub const MAX_ANSWERS: usize = 4096;
/// Questions waiting at most.
pub const QUEUE: usize = 256;
/// Labels kept per pod at most.
pub const MAX_LABELS: usize = 32;
/// How long one call to the runtime may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long "the runtime does not know this container" (or could not be asked) holds: briefly,
/// for a runtime may list a container only after its cgroup is made.
const UNKNOWN_FOR: Duration = Duration::from_millis(200);
/// The same id is asked again after this at the soonest.
const ASK_AGAIN: Duration = Duration::from_secs(1);

/// What the runtime said about one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Described {
    pub runtime: Option<ContainerRuntime>,
    pub name: Option<String>,
    pub image: Option<String>,
    pub pod_uid: Option<String>,
    pub pod: Option<Pod>,
}

impl Described {
    /// Whether this answer may describe `c`: a runtime's pod whose uid is not the one the
    /// cgroup path names is another pod's (a cgroup named after its container's id).
    pub fn fits(&self, c: &Container) -> bool {
        match (&c.pod_uid, &self.pod_uid) {
            (Some(path), Some(runtime)) => path == runtime,
            _ => true,
        }
    }

    /// Fill in `c`: the runtime's own words replace the records' guesses (the pod's uid
    /// stands: [`Described::fits`] checked it).
    pub fn apply(&self, c: &mut Container) {
        c.runtime = c.runtime.or(self.runtime);
        if self.name.is_some() {
            c.name.clone_from(&self.name);
        }
        if self.image.is_some() {
            c.image.clone_from(&self.image);
        }
        if c.pod_uid.is_none() {
            c.pod_uid.clone_from(&self.pod_uid);
        }
        if self.pod.is_some() {
            c.pod.clone_from(&self.pod);
        }
    }
}

struct Answer {
    /// `None`: the runtime does not know the id, or could not be asked.
    described: Option<Arc<Described>>,
    at: Instant,
}

/// Counters, shared with the asking task.
#[derive(Debug, Default)]
pub struct CriStats {
    pub asked: AtomicU64,
    pub answered: AtomicU64,
    pub unknown: AtomicU64,
    pub failed: AtomicU64,
    /// Questions dropped because [`QUEUE`] were waiting.
    pub dropped: AtomicU64,
    /// Answers refused: the runtime's pod uid was not the one the cgroup path names.
    pub mismatched: AtomicU64,
}

impl CriStats {
    /// By their metric names.
    pub fn counters(&self) -> [(&'static str, u64); 6] {
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("cri_lookups", v(&self.asked)),
            ("cri_described", v(&self.answered)),
            ("cri_unknown", v(&self.unknown)),
            ("cri_failures", v(&self.failed)),
            ("cri_questions_dropped", v(&self.dropped)),
            ("cri_answers_refused", v(&self.mismatched)),
        ]
    }
}

/// The daemon's side: answers in, questions out.
pub struct Cri {
    answers: Arc<Mutex<LruCache<String, Answer>>>,
    asked: LruCache<String, Instant>,
    questions: mpsc::Sender<String>,
    stats: Arc<CriStats>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Cri {
    /// Start asking the runtime at `socket` (or, without one, at the first of
    /// [`DEFAULT_SOCKETS`] present when a question comes). Needs a Tokio runtime.
    pub fn start(socket: Option<PathBuf>) -> Self {
        let (questions, asks) = mpsc::channel(QUEUE);
        let answers = Arc::new(Mutex::new(LruCache::new(MAX_ANSWERS)));
        let stats = Arc::new(CriStats::default());
        tokio::spawn(ask(socket, asks, answers.clone(), stats.clone()));
        Self {
            answers,
            asked: LruCache::new(MAX_ANSWERS),
            questions,
            stats,
        }
    }

    /// A handle that queues questions from any thread (the cgroup watch's).
    pub fn asker(&self) -> Asker {
        Asker {
            questions: self.questions.clone(),
            stats: self.stats.clone(),
        }
    }

    pub fn stats(&self) -> &CriStats {
        &self.stats
    }

    /// Whether the runtime is worth asking about `c`: a Kubernetes pod's, containerd's or
    /// CRI-O's container, or one whose runtime the cgroup did not say. podman's and docker's
    /// own containers are not the CRI's.
    pub fn wants(c: &Container) -> bool {
        c.pod_uid.is_some()
            || matches!(
                c.runtime,
                None | Some(ContainerRuntime::Containerd | ContainerRuntime::CriO)
            )
    }

    /// Fill in `c` from the runtime's answer when there is one; otherwise ask (once a second
    /// at most per id). Never waits.
    pub fn describe(&mut self, c: &mut Container) {
        if !Self::wants(c) {
            return;
        }
        if let Some(answer) = lock(&self.answers).get(&c.id) {
            match &answer.described {
                Some(d) if d.fits(c) => return d.apply(c),
                Some(_) => {
                    self.stats.mismatched.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                None if answer.at.elapsed() < UNKNOWN_FOR => return,
                None => {}
            }
        }
        if self
            .asked
            .get(&c.id)
            .is_some_and(|t| t.elapsed() < ASK_AGAIN)
        {
            return;
        }
        self.asked.insert(c.id.clone(), Instant::now());
        if self.questions.try_send(c.id.clone()).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Queues questions about containers; never waits.
pub struct Asker {
    questions: mpsc::Sender<String>,
    stats: Arc<CriStats>,
}

impl Asker {
    /// Ask about `c` if the runtime is worth asking (a question already answered is not asked
    /// again by the task).
    pub fn ask(&self, c: &Container) {
        if Cri::wants(c) && self.questions.try_send(c.id.clone()).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A client of the runtime's CRI socket, and the runtime it names itself.
struct Runtime {
    client: RuntimeServiceClient<Channel>,
    kind: Option<ContainerRuntime>,
}

async fn connect(path: &Path) -> Option<Runtime> {
    let channel = sensor_proto::unix::channel(path, Some(CALL_TIMEOUT))
        .await
        .ok()?;
    let mut client = RuntimeServiceClient::new(channel);
    let version = client
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .ok()?
        .into_inner();
    Some(Runtime {
        client,
        kind: runtime_kind(&version.runtime_name),
    })
}

/// The runtime a CRI `Version` answer names.
pub fn runtime_kind(name: &str) -> Option<ContainerRuntime> {
    let name = name.to_ascii_lowercase();
    if name.contains("containerd") {
        Some(ContainerRuntime::Containerd)
    } else if name.contains("cri-o") || name == "crio" {
        Some(ContainerRuntime::CriO)
    } else if name.contains("docker") {
        Some(ContainerRuntime::Docker)
    } else {
        None
    }
}

/// The asking task: one question at a time, one connection kept while it works.
async fn ask(
    socket: Option<PathBuf>,
    mut asks: mpsc::Receiver<String>,
    answers: Arc<Mutex<LruCache<String, Answer>>>,
    stats: Arc<CriStats>,
) {
    let mut runtime: Option<Runtime> = None;
    while let Some(id) = asks.recv().await {
        // Asked twice (when its cgroup was made, and when its process was read): the first
        // answer stands.
        if lock(&answers)
            .get(&id)
            .is_some_and(|a| a.described.is_some() || a.at.elapsed() < UNKNOWN_FOR)
        {
            continue;
        }
        stats.asked.fetch_add(1, Ordering::Relaxed);
        if runtime.is_none() {
            let candidates: Vec<PathBuf> = match &socket {
                Some(s) => vec![s.clone()],
                None => DEFAULT_SOCKETS.iter().map(PathBuf::from).collect(),
            };
            for path in candidates.iter().filter(|p| p.exists()) {
                if let Some(r) = connect(path).await {
                    runtime = Some(r);
                    break;
                }
            }
        }
        let described = match &mut runtime {
            Some(r) => match lookup(r, &id).await {
                Ok(found) => found,
                Err(()) => {
                    // Reconnect for the next question: the runtime may have restarted.
                    runtime = None;
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    None
                }
            },
            None => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        match &described {
            Some(_) => stats.answered.fetch_add(1, Ordering::Relaxed),
            None => stats.unknown.fetch_add(1, Ordering::Relaxed),
        };
        lock(&answers).insert(
            id,
            Answer {
                described: described.map(Arc::new),
                at: Instant::now(),
            },
        );
    }
}

/// The container `id` and its pod, as the runtime describes them (`Ok(None)`: it does not
/// know the id).
async fn lookup(r: &mut Runtime, id: &str) -> Result<Option<Described>, ()> {
    let containers = r
        .client
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                id: id.to_owned(),
                ..ContainerFilter::default()
            }),
        })
        .await
        .map_err(|_| ())?
        .into_inner()
        .containers;
    // The filter may match a prefix: only the id itself counts.
    let Some(container) = containers.into_iter().find(|c| c.id == id) else {
        return Ok(None);
    };
    let mut described = Described {
        runtime: r.kind,
        name: container
            .metadata
            .as_ref()
            .and_then(|m| clean_text(&m.name)),
        image: container
            .image
            .as_ref()
            .and_then(|i| clean_text(&i.image))
            .or_else(|| clean_text(&container.image_ref)),
        ..Described::default()
    };
    if container.pod_sandbox_id.is_empty() {
        return Ok(Some(described));
    }
    let sandboxes = r
        .client
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                id: container.pod_sandbox_id.clone(),
                ..PodSandboxFilter::default()
            }),
        })
        .await
        .map_err(|_| ())?
        .into_inner()
        .items;
    if let Some(sandbox) = sandboxes
        .into_iter()
        .find(|s| s.id == container.pod_sandbox_id)
        && let Some(meta) = sandbox.metadata
        && let Some(name) = clean_text(&meta.name)
    {
        described.pod_uid = clean_text(&meta.uid);
        described.pod = Some(Pod {
            name,
            namespace: clean_text(&meta.namespace).unwrap_or_default(),
            labels: pod_labels(sandbox.labels),
        });
    }
    Ok(Some(described))
}

/// A pod's labels, cleaned and bounded: the first [`MAX_LABELS`] by key.
pub fn pod_labels(labels: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
    let all: BTreeMap<String, String> = labels
        .into_iter()
        .filter_map(|(k, v)| Some((clean_text(&k)?, clean_text(&v).unwrap_or_default())))
        .collect();
    all.into_iter().take(MAX_LABELS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_by_the_name_they_give() {
        assert_eq!(
            runtime_kind("containerd"),
            Some(ContainerRuntime::Containerd)
        );
        assert_eq!(runtime_kind("cri-o"), Some(ContainerRuntime::CriO));
        assert_eq!(runtime_kind("docker"), Some(ContainerRuntime::Docker));
        assert_eq!(runtime_kind("kata"), None);
    }

    #[test]
    fn labels_are_cleaned_and_bounded() {
        let labels = (0..100).map(|i| (format!("k{i:03}"), format!("v\u{1b}[31m{i}")));
        let kept = pod_labels(labels);
        assert_eq!(kept.len(), MAX_LABELS);
        assert_eq!(kept.get("k000").map(String::as_str), Some("v[31m0"));
        assert!(!kept.contains_key("k099"));
        assert!(pod_labels([("\u{7}".to_owned(), "x".to_owned())]).is_empty());
    }

    #[test]
    fn the_runtimes_words_replace_guesses() {
        let mut c = Container {
            id: "a".repeat(64),
            name: Some("k8s_client_pod".into()),
            pod_uid: Some("from-cgroup".into()),
            ..Container::default()
        };
        assert!(Cri::wants(&c));
        Described {
            runtime: Some(ContainerRuntime::Containerd),
            name: Some("client".into()),
            image: None,
            pod_uid: Some("from-cgroup".into()),
            pod: Some(Pod {
                name: "client-pod".into(),
                namespace: "lab".into(),
                labels: BTreeMap::new(),
            }),
        }
        .apply(&mut c);
        assert_eq!(c.runtime, Some(ContainerRuntime::Containerd));
        assert_eq!(c.name.as_deref(), Some("client"));
        // A cgroup under one pod named after another pod's container: not that pod.
        let victim = Described {
            pod_uid: Some("victim-pod".into()),
            ..Described::default()
        };
        assert!(!victim.fits(&c));
        assert!(victim.fits(&Container::default()));
        assert_eq!(c.pod.as_ref().map(|p| p.name.as_str()), Some("client-pod"));
        let podman = Container {
            runtime: Some(ContainerRuntime::Podman),
            ..Container::default()
        };
        assert!(!Cri::wants(&podman));
    }

    /// No runtime at the socket: the question is answered "unknown" and not asked again
    /// within a second.
    #[tokio::test]
    async fn no_runtime_no_answer_and_no_storm() {
        let dir = tempfile::tempdir().unwrap();
        let mut cri = Cri::start(Some(dir.path().join("absent.sock")));
        let mut c = Container {
            id: "b".repeat(64),
            runtime: Some(ContainerRuntime::Containerd),
            ..Container::default()
        };
        cri.describe(&mut c);
        cri.describe(&mut c);
        for _ in 0..100 {
            if cri.stats().failed.load(Ordering::Relaxed) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(cri.stats().asked.load(Ordering::Relaxed), 1);
        assert_eq!(cri.stats().failed.load(Ordering::Relaxed), 1);
        cri.describe(&mut c);
        assert_eq!(c.pod, None);
        assert_eq!(cri.stats().dropped.load(Ordering::Relaxed), 0);
    }
}
