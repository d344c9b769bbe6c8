//! Which container a process runs in, and what its runtime calls it.
//!
//! The cgroup v2 path says the runtime and the container's id ([`from_cgroup`], pure): podman
//! (`libpod-<id>`), docker (`docker-<id>`, `/docker/<id>`), containerd's CRI
//! (`cri-containerd-<id>`), CRI-O (`crio-<id>`), with the Kubernetes pod's uid when the path
//! goes through `kubepods`. The name and image come from the runtime's own records, read as
//! root without talking to any daemon: containers/storage's `containers.json` (podman, CRI-O)
//! and docker's `config.v2.json` ([`Names`], cached per container, re-read at most once a
//! second for an unknown one). Text from those files is bounded and cleaned of control
//! characters.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use hashlink::LruCache;
use sensor_core::event::{Container, ContainerRuntime, host::clean_text};

use super::cri::Cri;

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container a cgroup path belongs to: its runtime when the path names one, its id, and the
/// Kubernetes pod's uid on the way.
pub fn from_cgroup(cgroup: &str) -> Option<Container> {
    let mut pod_uid = None;
    let mut found: Option<(Option<ContainerRuntime>, String)> = None;
    let parts: Vec<&str> = cgroup.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        let name = part.strip_suffix(".scope").unwrap_or(part);
        // kubepods-burstable-pod1234_5678.slice (systemd) or pod1234-5678 (cgroupfs).
        let slice = name.strip_suffix(".slice").unwrap_or(name);
        let pod = slice
            .strip_prefix("pod")
            .or_else(|| slice.rsplit_once("-pod").map(|(_, uid)| uid));
        if let Some(uid) = pod.filter(|u| !u.is_empty())
            && parts[..i].iter().any(|p| p.starts_with("kubepods"))
        {
            pod_uid = Some(uid.replace('_', "-"));
            continue;
        }
        let runtime_id = [
            ("libpod-conmon-", None),
            ("crio-conmon-", None),
            ("libpod-", Some(ContainerRuntime::Podman)),
            ("docker-", Some(ContainerRuntime::Docker)),
            ("cri-containerd-", Some(ContainerRuntime::Containerd)),
            ("crio-", Some(ContainerRuntime::CriO)),
        ]
        .into_iter()
        .find_map(|(prefix, rt)| name.strip_prefix(prefix).map(|id| (rt, id)));
        match runtime_id {
            // conmon, the monitor beside a container, is not in it.
            Some((None, _)) => return None,
            Some((Some(rt), id)) if is_id(id) => found = Some((Some(rt), id.to_owned())),
            _ => {
                if let Some(id) = name.strip_prefix("cri-containerd:").filter(|id| is_id(id)) {
                    found = Some((Some(ContainerRuntime::Containerd), id.to_owned()));
                } else if is_id(name) {
                    // cgroupfs drivers: /docker/<id>, /kubepods/.../pod<uid>/<id>.
                    let parent = i.checked_sub(1).map(|j| parts[j]);
                    let rt = match parent {
                        Some("docker") => Some(ContainerRuntime::Docker),
                        Some("libpod_parent") => Some(ContainerRuntime::Podman),
                        _ => None,
                    };
                    found = Some((rt, name.to_owned()));
                }
            }
        }
    }
    let (runtime, id) = found?;
    Some(Container {
        id,
        runtime,
        pod_uid,
        ..Container::default()
    })
}

/// A container's name and image, as its runtime recorded them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Named {
    pub name: Option<String>,
    pub image: Option<String>,
}

/// Where the runtimes keep their records (the defaults for root).
#[derive(Clone, Debug)]
pub struct Stores {
    /// containers/storage's overlay-containers folders (podman, CRI-O).
    pub storage: Vec<PathBuf>,
    /// docker's containers folder.
    pub docker: PathBuf,
}

impl Default for Stores {
    fn default() -> Self {
        Self {
            storage: vec![
                PathBuf::from("/var/lib/containers/storage/overlay-containers"),
                PathBuf::from("/var/lib/containers/storage/vfs-containers"),
                PathBuf::from("/run/containers/storage/overlay-containers"),
            ],
            docker: PathBuf::from("/var/lib/docker/containers"),
        }
    }
}

/// Files larger than this are not read (a containers.json of thousands of containers is a few
/// MiB).
const MAX_FILE: u64 = 16 << 20;

fn read_bounded(path: &Path) -> Option<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    file.take(MAX_FILE).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Containers kept from one `containers.json` at most.
const MAX_RECORDS: usize = 65_536;

/// Every container's name and image in containers/storage's `containers.json` text.
pub fn index_containers_json(text: &str) -> HashMap<String, Named> {
    let Ok(all) = serde_json::from_str::<Vec<serde_json::Value>>(text) else {
        return HashMap::new();
    };
    all.iter()
        .take(MAX_RECORDS)
        .filter_map(|c| {
            let id = c["id"].as_str().filter(|id| is_id(id))?;
            // libpod keeps its own facts as JSON in a string.
            let meta: serde_json::Value = c["metadata"]
                .as_str()
                .and_then(|m| serde_json::from_str(m).ok())
                .unwrap_or_default();
            let name = meta["name"]
                .as_str()
                .or_else(|| c["names"][0].as_str())
                .and_then(clean_text);
            let image = meta["image-name"].as_str().and_then(clean_text);
            Some((id.to_owned(), Named { name, image }))
        })
        .collect()
}

/// The name and image of container `id` in containers/storage's `containers.json` text.
pub fn from_containers_json(text: &str, id: &str) -> Option<Named> {
    index_containers_json(text).remove(id)
}

/// One `containers.json`, parsed once per change of the file.
struct StoreIndex {
    path: PathBuf,
    /// The file's modification time and size when it was parsed.
    stamp: Option<(std::time::SystemTime, u64)>,
    by_id: HashMap<String, Named>,
}

impl StoreIndex {
    fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("containers.json"),
            stamp: None,
            by_id: HashMap::new(),
        }
    }

    fn lookup(&mut self, id: &str) -> Option<Named> {
        let meta = std::fs::metadata(&self.path).ok()?;
        let stamp = (meta.modified().ok()?, meta.len());
        if self.stamp != Some(stamp) {
            self.by_id = read_bounded(&self.path)
                .map(|t| index_containers_json(&t))
                .unwrap_or_default();
            self.stamp = Some(stamp);
        }
        self.by_id.get(id).cloned()
    }
}

/// The name and image in docker's `config.v2.json` text.
pub fn from_docker_config(text: &str) -> Option<Named> {
    let c: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(Named {
        name: c["Name"]
            .as_str()
            .map(|n| n.trim_start_matches('/'))
            .and_then(clean_text),
        image: c["Config"]["Image"].as_str().and_then(clean_text),
    })
}

/// Container id → name and image, cached (bounded). An id the records do not hold yet is
/// looked up again after a second at the soonest, and the records are looked at most
/// [`Names::READS_PER_SECOND`] times a second, however many containers churn; a
/// `containers.json` is parsed again only when it changed.
///
/// Only containers under the system's own cgroups are named from these (root's) records: a
/// user's delegated subtree (`user@UID.service`) could name a scope after another container's
/// id and borrow its name. containerd keeps no such records: its containers, and every
/// Kubernetes pod's, are described by the runtime's CRI socket when sensord has one
/// ([`super::cri`]), whose words win over the records'.
pub struct Names {
    cri: Option<Cri>,
    /// The cgroup v2 hierarchy's mount, to see who owns a container's cgroup.
    cgroup_root: Option<PathBuf>,
    stores: Stores,
    storage: Vec<StoreIndex>,
    cache: LruCache<String, Named>,
    /// Ids not found, and when.
    misses: LruCache<String, Instant>,
    /// Lookups in the current second.
    reads: (Instant, u32),
}

impl Names {
    const CAPACITY: usize = 1024;
    pub const READS_PER_SECOND: u32 = 20;

    pub fn new(stores: Stores) -> Self {
        Self {
            cri: None,
            cgroup_root: None,
            storage: stores.storage.iter().map(|d| StoreIndex::new(d)).collect(),
            stores,
            cache: LruCache::new(Self::CAPACITY),
            misses: LruCache::new(Self::CAPACITY),
            reads: (Instant::now(), 0),
        }
    }

    /// Look where cgroup v2 is mounted for who owns a container's cgroup.
    pub fn with_cgroup_root(mut self, root: Option<PathBuf>) -> Self {
        self.cgroup_root = root;
        self
    }

    /// Whether `cgroup` is a directory a user owns: one delegated to them, which they may have
    /// named after another's container. `false` for root's, and for one that is gone (then
    /// only the path's `user@` rule applies).
    fn delegated(&self, cgroup: &str) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        self.cgroup_root
            .as_ref()
            .and_then(|r| std::fs::metadata(r.join(cgroup.trim_start_matches('/'))).ok())
            .is_some_and(|m| m.uid() != 0)
    }

    /// Ask the runtime's CRI socket too.
    pub fn set_cri(&mut self, cri: Cri) {
        self.cri = Some(cri);
    }

    pub fn cri(&self) -> Option<&Cri> {
        self.cri.as_ref()
    }

    /// Whether `c` may still learn something: its name, or its pod from the CRI.
    pub fn incomplete(&self, c: &Container) -> bool {
        c.name.is_none() || (self.cri.is_some() && c.pod.is_none() && Cri::wants(c))
    }

    /// Fill in the name and image of `c`, found in the cgroup `cgroup`, if its runtime
    /// recorded them, and its pod when the CRI socket described it.
    pub fn name(&mut self, c: &mut Container, cgroup: &str) {
        if cgroup.split('/').any(|part| part.starts_with("user@")) || self.delegated(cgroup) {
            return;
        }
        if c.runtime != Some(ContainerRuntime::Containerd) {
            self.name_from_records(c);
        }
        if let Some(cri) = &mut self.cri {
            cri.describe(c);
        }
    }

    fn name_from_records(&mut self, c: &mut Container) {
        if let Some(n) = self.cache.get(&c.id) {
            c.name = n.name.clone();
            c.image = n.image.clone();
            return;
        }
        if self
            .misses
            .get(&c.id)
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        if self.reads.0.elapsed() >= Duration::from_secs(1) {
            self.reads = (Instant::now(), 0);
        }
        if self.reads.1 >= Self::READS_PER_SECOND {
            return;
        }
        self.reads.1 += 1;
        match self.read(c) {
            Some(n) => {
                c.name = n.name.clone();
                c.image = n.image.clone();
                self.misses.remove(&c.id);
                self.cache.insert(c.id.clone(), n);
            }
            None => {
                self.misses.insert(c.id.clone(), Instant::now());
            }
        }
    }

    fn read(&mut self, c: &Container) -> Option<Named> {
        let docker = |stores: &Stores| {
            from_docker_config(&read_bounded(
                &stores.docker.join(&c.id).join("config.v2.json"),
            )?)
        };
        match c.runtime {
            Some(ContainerRuntime::Docker) => docker(&self.stores),
            Some(ContainerRuntime::Podman | ContainerRuntime::CriO) => {
                self.storage.iter_mut().find_map(|s| s.lookup(&c.id))
            }
            _ => self
                .storage
                .iter_mut()
                .find_map(|s| s.lookup(&c.id))
                .or_else(|| docker(&self.stores)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e1c2d5b6a79880716253443526170818293a4b5c6d7e8f90a1b2c3d4e5f60";

    #[test]
    fn runtimes_and_ids_from_cgroup_paths() {
        let c = |path: &str| from_cgroup(path).map(|c| (c.runtime, c.id, c.pod_uid));
        use ContainerRuntime::*;
        assert_eq!(
            c(&format!("/machine.slice/libpod-{ID}.scope/container")),
            Some((Some(Podman), ID.into(), None))
        );
        assert_eq!(
            c(&format!("/libpod_parent/libpod-{ID}")),
            Some((Some(Podman), ID.into(), None))
        );
        assert_eq!(c(&format!("/libpod_parent/libpod-conmon-{ID}")), None);
        assert_eq!(
            c(&format!("/system.slice/docker-{ID}.scope")),
            Some((Some(Docker), ID.into(), None))
        );
        assert_eq!(
            c(&format!("/docker/{ID}")),
            Some((Some(Docker), ID.into(), None))
        );
        assert_eq!(
            c(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice/cri-containerd-{ID}.scope"
            )),
            Some((
                Some(Containerd),
                ID.into(),
                Some("0a1b2c3d-4e5f-6789-abcd-ef0123456789".into())
            ))
        );
        assert_eq!(
            c(&format!(
                "/kubepods/besteffort/pod0a1b2c3d-4e5f-6789-abcd-ef0123456789/{ID}"
            )),
            Some((
                None,
                ID.into(),
                Some("0a1b2c3d-4e5f-6789-abcd-ef0123456789".into())
            ))
        );
        assert_eq!(
            c(&format!(
                "/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope"
            )),
            Some((Some(CriO), ID.into(), Some("1".into())))
        );
        assert_eq!(
            c(&format!(
                "/kubepods.slice/kubepods-pod1.slice/crio-conmon-{ID}.scope"
            )),
            None
        );
        assert_eq!(c("/user.slice/user-1000.slice/session-2.scope"), None);
        assert_eq!(c("/system.slice/docker-abc.scope"), None);
    }

    #[test]
    fn names_from_the_runtimes_records() {
        let json = format!(
            r#"[{{"id":"short","names":["x"]}},{{"id":"{ID}","names":["web"],"image":"abc","metadata":"{{\"image-name\":\"localhost/client:latest\",\"name\":\"web\\u001b[31m\"}}"}}]"#
        );
        assert_eq!(
            from_containers_json(&json, ID),
            Some(Named {
                name: Some("web[31m".into()),
                image: Some("localhost/client:latest".into())
            })
        );
        assert_eq!(from_containers_json(&json, "other"), None);
        assert_eq!(from_containers_json("not json", ID), None);
        let docker = r#"{"Name":"/db","Config":{"Image":"postgres:15"}}"#;
        assert_eq!(
            from_docker_config(docker),
            Some(Named {
                name: Some("db".into()),
                image: Some("postgres:15".into())
            })
        );
    }

    #[test]
    fn names_are_read_from_the_stores_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("overlay-containers");
        std::fs::create_dir_all(&storage).unwrap();
        std::fs::write(
            storage.join("containers.json"),
            format!(r#"[{{"id":"{ID}","names":["web"],"metadata":"{{}}"}}]"#),
        )
        .unwrap();
        let mut names = Names::new(Stores {
            storage: vec![storage.clone()],
            docker: dir.path().join("docker"),
        });
        let path = format!("/libpod_parent/libpod-{ID}");
        let mut c = from_cgroup(&path).unwrap();
        names.name(&mut c, &path);
        assert_eq!(c.name.as_deref(), Some("web"));
        // Cached: the file going away changes nothing for a known container.
        std::fs::remove_file(storage.join("containers.json")).unwrap();
        let mut again = from_cgroup(&path).unwrap();
        names.name(&mut again, &path);
        assert_eq!(again.name.as_deref(), Some("web"));
        // A user's own scope named after that container borrows nothing.
        let spoof =
            format!("/user.slice/user-1000.slice/user@1000.service/app.slice/libpod-{ID}.scope");
        let mut borrowed = from_cgroup(&spoof).unwrap();
        names.name(&mut borrowed, &spoof);
        assert_eq!(borrowed.runtime, Some(ContainerRuntime::Podman));
        assert_eq!(borrowed.name, None);
        // Nor does a cgroup delegated elsewhere (owned by a user), whatever its path says.
        let root = dir.path().join("cgroup2");
        let delegated = format!("/system.slice/app.service/libpod-{ID}");
        let on_disk = root.join(delegated.trim_start_matches('/'));
        std::fs::create_dir_all(&on_disk).unwrap();
        let mut names = Names::new(Stores {
            storage: vec![storage.clone()],
            docker: dir.path().join("docker"),
        })
        .with_cgroup_root(Some(root));
        std::fs::write(
            storage.join("containers.json"),
            format!(r#"[{{"id":"{ID}","names":["web"],"metadata":"{{}}"}}]"#),
        )
        .unwrap();
        let mut c = from_cgroup(&delegated).unwrap();
        names.name(&mut c, &delegated);
        if rustix::process::geteuid().is_root() {
            assert_eq!(c.name.as_deref(), Some("web"), "root's own cgroup is named");
            std::os::unix::fs::chown(&on_disk, Some(65534), Some(65534)).unwrap();
            let mut c = from_cgroup(&delegated).unwrap();
            names.name(&mut c, &delegated);
            assert_eq!(c.name, None, "a user's cgroup borrows no name");
        }
    }
}
