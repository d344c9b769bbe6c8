//! Who may change what sensord does over the API. Reading (Watch, ListEvents, GetCertificate,
//! GetStatus) is for whoever can reach it: the socket's group, or an mTLS client. Changing
//! (Reload, which `sensorctl pins` calls after editing the pin file) is for admins only:
//!
//! - on the Unix socket, root, and members of `api.admin_group`, told by the peer's
//!   credentials (`SO_PEERCRED`, taken by the kernel when the peer connected: nobody can claim
//!   another's). A member is a user whose primary or supplementary groups in the group
//!   database include it, or a process whose group at connect time is it (`sg`, `newgrp`);
//! - over TCP, mTLS clients whose certificate names one of `api.admin_clients` (its subject's
//!   common name or a DNS subjectAltName). A client certificate is what a remote SIEM holds to
//!   read events; changing the sensor is another right, granted by name.
//!
//! The socket's group alone no longer lets anyone reload: before, any member could, and every
//! reload cleared the verdict cache and reset the probe's limits.

use std::{ffi::CStr, fmt};

use sensor_host::{config::ApiConfig, render::escape};

/// The caller of one request, as its transport knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A process on the Unix socket, by its credentials when it connected.
    Local {
        uid: u32,
        gid: u32,
        pid: Option<i32>,
    },
    /// An mTLS client, by the names its certificate gives it.
    Remote { names: Vec<String> },
    /// Neither: TCP without TLS (`insecure_tcp`, for tests), or a socket whose credentials
    /// could not be read.
    Unknown,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local { uid, gid, pid } => {
                write!(f, "uid {uid} (gid {gid}")?;
                if let Some(pid) = pid {
                    write!(f, ", pid {pid}")?;
                }
                write!(f, ")")
            }
            Self::Remote { names } if names.is_empty() => {
                write!(f, "an mTLS client whose certificate names nobody")
            }
            // The names come from the client's certificate: escaped for the terminal and log
            // line they end up on.
            Self::Remote { names } => write!(
                f,
                "the mTLS client {}",
                names
                    .iter()
                    .map(|n| escape(n).into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::Unknown => write!(f, "a client sensord cannot identify"),
        }
    }
}

/// Who may change sensord: root, one group, and mTLS clients by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admins {
    /// `api.admin_group`: its name and gid.
    group: Option<(String, u32)>,
    /// `api.admin_clients`, lowercased.
    clients: Vec<String>,
}

/// A group named in the configuration that this host does not have.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("api.admin_group = {0:?}: this host has no such group")]
pub struct NoSuchGroup(pub String);

/// A request refused: who asked, and who may.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} is for {who_may}; this is {peer}")]
pub struct Denied {
    pub what: &'static str,
    pub who_may: String,
    pub peer: String,
}

impl Admins {
    /// The admins the configuration names; the group must exist.
    pub fn from_config(cfg: &ApiConfig) -> Result<Self, NoSuchGroup> {
        let group = match &cfg.admin_group {
            Some(name) => Some((
                name.clone(),
                group_id(name).ok_or_else(|| NoSuchGroup(name.clone()))?,
            )),
            None => None,
        };
        Ok(Self::new(group, &cfg.admin_clients))
    }

    pub fn new(group: Option<(String, u32)>, clients: &[String]) -> Self {
        Self {
            group,
            clients: clients.iter().map(|c| c.to_ascii_lowercase()).collect(),
        }
    }

    /// Who may, in words, for the refusal.
    pub fn who_may(&self) -> String {
        let mut who = vec!["root".to_owned()];
        match &self.group {
            Some((name, _)) => who.push(format!("members of group {name} (api.admin_group)")),
            None => who.push("members of api.admin_group (none is set)".to_owned()),
        }
        if self.clients.is_empty() {
            who.push("mTLS clients named in api.admin_clients (none is)".to_owned());
        } else {
            who.push(format!(
                "the mTLS clients {} (api.admin_clients)",
                self.clients.join(", ")
            ));
        }
        match who.as_slice() {
            [a, b, c] => format!("{a}, {b} and {c}"),
            _ => who.join(", "),
        }
    }

    /// Whether a Unix socket peer needs the group database to be told: everything else is
    /// known from the request alone. The database may be remote (LDAP, sssd): its lookup
    /// goes to a blocking thread.
    pub fn needs_groups(&self, peer: &Peer) -> bool {
        match (peer, &self.group) {
            (Peer::Local { uid, gid, .. }, Some((_, admin))) => *uid != 0 && gid != admin,
            _ => false,
        }
    }

    /// Allow `peer` to do `what`, or say why not. `groups` are the peer's groups in the group
    /// database when [`Admins::needs_groups`] said so.
    pub fn check(
        &self,
        what: &'static str,
        peer: &Peer,
        groups: Option<&[u32]>,
    ) -> Result<(), Denied> {
        let allowed = match peer {
            Peer::Local { uid: 0, .. } => true,
            Peer::Local { gid, .. } => self.group.as_ref().is_some_and(|(_, admin)| {
                gid == admin || groups.is_some_and(|g| g.contains(admin))
            }),
            Peer::Remote { names } => names
                .iter()
                .any(|n| self.clients.contains(&n.to_ascii_lowercase())),
            Peer::Unknown => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(Denied {
                what,
                who_may: self.who_may(),
                peer: peer.to_string(),
            })
        }
    }
}

/// Run a reentrant lookup of the user and group databases (`getgrnam_r`, `getpwuid_r`) with a
/// buffer that doubles while the lookup says `ERANGE`, up to 4 MiB. `lookup` gets the buffer
/// and answers with the call's return code and what it found.
fn with_buffer<T>(mut lookup: impl FnMut(&mut [u8]) -> (libc::c_int, Option<T>)) -> Option<T> {
    let mut buf = vec![0u8; 4096];
    loop {
        let (rc, found) = lookup(&mut buf);
        if rc == libc::ERANGE && buf.len() < 1 << 22 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        return if rc == 0 { found } else { None };
    }
}

/// A group's id by name.
pub(crate) fn group_id(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    with_buffer(|buf| {
        // SAFETY: an all-zero `group` is a valid out-parameter; getgrnam_r only writes into it,
        // the buffer and `result`, with the buffer's true length.
        let mut gr: libc::group = unsafe { std::mem::zeroed() };
        let mut result = std::ptr::null_mut();
        // SAFETY: as above; `c` is a valid C string.
        let rc = unsafe {
            libc::getgrnam_r(
                c.as_ptr(),
                &mut gr,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        (rc, (!result.is_null()).then_some(gr.gr_gid))
    })
}

/// The groups of user `uid` in the user and group databases: its primary group and every
/// group that lists it, as a login would get them. `None` when the uid has no user entry.
pub fn groups_of(uid: u32) -> Option<Vec<u32>> {
    let (name, primary) = with_buffer(|buf| {
        // SAFETY: an all-zero `passwd` is a valid out-parameter; getpwuid_r writes into it, the
        // buffer (its true length given) and `result`.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result = std::ptr::null_mut();
        // SAFETY: as above.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pw,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        let found = (!result.is_null() && !pw.pw_name.is_null()).then(|| {
            // SAFETY: pw_name points into `buf`, a NUL-terminated string getpwuid_r wrote.
            (unsafe { CStr::from_ptr(pw.pw_name) }.to_owned(), pw.pw_gid)
        });
        (rc, found)
    })?;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut count = libc::c_int::try_from(groups.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `groups` holds `count` entries; getgrouplist writes at most that many and
        // sets `count` to how many there are.
        let rc =
            unsafe { libc::getgrouplist(name.as_ptr(), primary, groups.as_mut_ptr(), &mut count) };
        let needed = usize::try_from(count).unwrap_or(0);
        if rc >= 0 {
            groups.truncate(needed);
            return Some(groups);
        }
        // Too small: `count` says how many are needed (grow anyway if it does not).
        let next = needed.max(groups.len() * 2);
        if next > 1 << 16 {
            return Some(vec![primary]);
        }
        groups.resize(next, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admins() -> Admins {
        Admins::new(
            Some(("sensor-admin".into(), 990)),
            &["Ops.Example.Test".into()],
        )
    }

    fn local(uid: u32, gid: u32) -> Peer {
        Peer::Local {
            uid,
            gid,
            pid: Some(4242),
        }
    }

    #[test]
    fn root_and_the_admin_group_may_reload() {
        let a = admins();
        assert!(a.check("Reload", &local(0, 0), None).is_ok());
        assert!(!a.needs_groups(&local(0, 0)));
        // Started with the group as its own (sg), or a member in the group database.
        assert!(a.check("Reload", &local(1000, 990), None).is_ok());
        assert!(a.needs_groups(&local(1000, 1000)));
        assert!(
            a.check("Reload", &local(1000, 1000), Some(&[1000, 990]))
                .is_ok()
        );
    }

    #[test]
    fn others_are_told_who_may() {
        let a = admins();
        let denied = a
            .check("Reload", &local(1000, 1000), Some(&[1000, 27]))
            .unwrap_err();
        let text = denied.to_string();
        assert!(
            text.starts_with("Reload is for root, members of group sensor-admin"),
            "{text}"
        );
        assert!(text.contains("api.admin_clients"), "{text}");
        assert!(
            text.ends_with("this is uid 1000 (gid 1000, pid 4242)"),
            "{text}"
        );
        // Without a group, only root.
        let none = Admins::default();
        assert!(none.check("Reload", &local(0, 0), None).is_ok());
        assert!(!none.needs_groups(&local(1000, 990)));
        let text = none
            .check("Reload", &local(1000, 990), None)
            .unwrap_err()
            .to_string();
        assert!(text.contains("none is set"), "{text}");
        assert!(none.check("Reload", &Peer::Unknown, None).is_err());
    }

    #[test]
    fn mtls_clients_by_name() {
        let a = admins();
        let ops = Peer::Remote {
            names: vec!["collector".into(), "ops.example.test".into()],
        };
        assert!(a.check("Reload", &ops, None).is_ok());
        let siem = Peer::Remote {
            names: vec!["siem\u{1b}[2J".into()],
        };
        let text = a.check("Reload", &siem, None).unwrap_err().to_string();
        assert!(
            text.ends_with("this is the mTLS client siem\\u{1b}[2J"),
            "{text}"
        );
        assert!(Admins::default().check("Reload", &ops, None).is_err());
    }

    #[test]
    fn the_databases_answer_for_root() {
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("no-such-group-for-sensord-tests"), None);
        assert!(groups_of(0).is_some_and(|g| g.contains(&0)));
        let missing = ApiConfig {
            admin_group: Some("no-such-group-for-sensord-tests".into()),
            ..ApiConfig::default()
        };
        assert_eq!(
            Admins::from_config(&missing),
            Err(NoSuchGroup("no-such-group-for-sensord-tests".into()))
        );
    }
}
