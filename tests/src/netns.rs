//! Network namespaces with a veth pair to the host, made and removed by the test.
//!
//! Addresses come from 10.77.0.0/16 and fd77::/16 and exist only inside the test's own
//! namespaces and veth pairs: traffic never leaves the machine.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A bare network namespace with its loopback up, deleted on drop (with its `/etc/netns`
/// folder, whose files `ip netns exec` mounts over `/etc`).
pub struct Namespace {
    pub name: String,
}

impl Namespace {
    pub fn new(name: String) -> Self {
        crate::require_root();
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Run a command inside the namespace; panic unless it succeeds.
    pub fn exec_ok(&self, args: &[&str]) {
        let out = self
            .command(args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .expect("ip netns exec");
        assert!(
            out.status.success(),
            "in {}: {}: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn etc(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.name)
    }

    /// `/etc/hosts` as the namespace's programs see it: localhost and these.
    pub fn hosts(&self, entries: &[(&str, &str)]) {
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (addr, name) in entries {
            text.push_str(&format!("{addr} {name}\n"));
        }
        std::fs::create_dir_all(self.etc()).expect("/etc/netns folder");
        std::fs::write(self.etc().join("hosts"), text).expect("/etc/netns hosts");
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(self.etc());
    }
}

/// A network namespace joined to the host namespace by a veth pair. Deleted on drop.
pub struct Netns {
    ns: Namespace,
    /// The host end of the veth pair.
    pub host_if: String,
    /// Address of the host end.
    pub host_ip: String,
    /// Address inside the namespace.
    pub ns_ip: String,
    /// IPv6 addresses, configured only when the MTU allows IPv6 (>= 1280).
    pub host_ip6: String,
    pub ns_ip6: String,
}

pub(crate) fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// Create a namespace with a veth pair of the given MTU.
    pub fn new(label: &str, mtu: u32) -> Self {
        crate::require_root();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        // Interface names are at most 15 bytes.
        let tag = format!("{:x}{:x}", pid % 0xfffff, n);
        let name = format!("st-{label}-{tag}");
        let host_if = format!("sth{tag}");
        let ns_if = format!("stn{tag}");
        let subnet = (pid.wrapping_mul(7).wrapping_add(n * 13)) % 250 + 1;
        let third = (pid / 250) % 250 + 1;
        let host_ip = format!("10.77.{subnet}.{}", (third % 60) * 4 + 1);
        let ns_ip = format!("10.77.{subnet}.{}", (third % 60) * 4 + 2);
        let host_ip6 = format!("fd77:{subnet:x}:{third:x}::1");
        let ns_ip6 = format!("fd77:{subnet:x}:{third:x}::2");
        let ns = Self {
            ns: Namespace::new(name),
            host_if,
            host_ip,
            ns_ip,
            host_ip6,
            ns_ip6,
        };
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &ns.name]);
        let mtu = mtu.to_string();
        ip(&["link", "set", &ns.host_if, "mtu", &mtu, "up"]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_ip),
            "dev",
            &ns.host_if,
        ]);
        ns.exec_ok(&["ip", "link", "set", &ns_if, "mtu", &mtu, "up"]);
        ns.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", ns.ns_ip),
            "dev",
            &ns_if,
        ]);
        // IPv6 needs an MTU of at least 1280.
        if mtu.parse::<u32>().unwrap_or(0) >= 1280 {
            let host6 = format!("{}/64", ns.host_ip6);
            ip(&["-6", "addr", "add", &host6, "dev", &ns.host_if, "nodad"]);
            let ns6 = format!("{}/64", ns.ns_ip6);
            ns.exec_ok(&["ip", "-6", "addr", "add", &ns6, "dev", &ns_if, "nodad"]);
        }
        ns
    }
}

impl std::ops::Deref for Netns {
    type Target = Namespace;

    fn deref(&self) -> &Namespace {
        &self.ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // The namespace goes with `self.ns`; the host end of the veth pair may outlive it.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
    }
}
