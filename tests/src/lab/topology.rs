//! The lab's network: three namespaces in a row, client ↔ middlebox ↔ origin, joined by veth
//! pairs, the middlebox routing between them. Names resolve through `/etc/netns/<ns>/hosts`,
//! which `ip netns exec` mounts over `/etc/hosts`. Everything is removed on drop.
//!
//! Addresses come from 10.78.0.0/16 and fd78::/16 and exist only inside these namespaces.

use crate::netns::{Namespace, ip};

/// client ↔ middlebox ↔ origin.
pub struct Topology {
    pub client: Namespace,
    pub middlebox: Namespace,
    pub origin: Namespace,
    pub client_ip: String,
    /// The middlebox's address on the client's side (where explicit proxies listen).
    pub middlebox_ip: String,
    pub origin_ip: String,
    /// The middlebox's interface towards the client (where redirects match).
    pub middlebox_client_if: String,
    /// The middlebox's interface towards the origin.
    pub middlebox_origin_if: String,
    /// The client's interface, and the origin's.
    pub client_if: String,
    pub origin_if: String,
    /// The middlebox's address on the origin's side.
    pub middlebox_origin_ip: String,
    pub client_ip6: String,
    pub origin_ip6: String,
    /// Addresses on no interface, routed to the middlebox by the client: a lab that DNATs
    /// them to the origin makes the origin's sockets other connections than the client's.
    pub front_ip: String,
    pub front_ip6: String,
    /// The origin's name, which every namespace resolves to `origin_ip`.
    pub origin_name: String,
}

impl Topology {
    pub fn new(origin_name: &str) -> Self {
        crate::require_root();
        let pid = std::process::id();
        let tag = format!("{:x}", pid % 0xfffff);
        let third = pid % 250 + 1;
        let client = Namespace::new(format!("lab-client-{tag}"));
        let middlebox = Namespace::new(format!("lab-mbox-{tag}"));
        let origin = Namespace::new(format!("lab-origin-{tag}"));
        let (client_ip, mbox_c_ip) = (format!("10.78.{third}.2"), format!("10.78.{third}.1"));
        let (origin_ip, mbox_o_ip) = (format!("10.78.{third}.6"), format!("10.78.{third}.5"));
        // Interface names are at most 15 bytes, and unique on the host while created.
        let (c_if, mc_if) = (format!("lc{tag}"), format!("lmc{tag}"));
        let (o_if, mo_if) = (format!("lo{tag}"), format!("lmo{tag}"));
        ip(&["link", "add", &c_if, "type", "veth", "peer", "name", &mc_if]);
        ip(&["link", "set", &c_if, "netns", &client.name]);
        ip(&["link", "set", &mc_if, "netns", &middlebox.name]);
        ip(&["link", "add", &o_if, "type", "veth", "peer", "name", &mo_if]);
        ip(&["link", "set", &o_if, "netns", &origin.name]);
        ip(&["link", "set", &mo_if, "netns", &middlebox.name]);
        for (ns, ifname, addr) in [
            (&client, &c_if, &client_ip),
            (&middlebox, &mc_if, &mbox_c_ip),
            (&middlebox, &mo_if, &mbox_o_ip),
            (&origin, &o_if, &origin_ip),
        ] {
            ns.exec_ok(&["ip", "addr", "add", &format!("{addr}/30"), "dev", ifname]);
            ns.exec_ok(&["ip", "link", "set", ifname, "up"]);
        }
        client.exec_ok(&["ip", "route", "add", "default", "via", &mbox_c_ip]);
        origin.exec_ok(&["ip", "route", "add", "default", "via", &mbox_o_ip]);
        middlebox.exec_ok(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        // IPv6 beside it, without duplicate address detection (addresses are usable at once).
        let (client_ip6, mbox_c_ip6) = (
            format!("fd78:{third:x}:1::2"),
            format!("fd78:{third:x}:1::1"),
        );
        let (origin_ip6, mbox_o_ip6) = (
            format!("fd78:{third:x}:2::2"),
            format!("fd78:{third:x}:2::1"),
        );
        for (ns, ifname, addr) in [
            (&client, &c_if, &client_ip6),
            (&middlebox, &mc_if, &mbox_c_ip6),
            (&middlebox, &mo_if, &mbox_o_ip6),
            (&origin, &o_if, &origin_ip6),
        ] {
            ns.exec_ok(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{addr}/64"),
                "dev",
                ifname,
                "nodad",
            ]);
        }
        client.exec_ok(&["ip", "-6", "route", "add", "default", "via", &mbox_c_ip6]);
        origin.exec_ok(&["ip", "-6", "route", "add", "default", "via", &mbox_o_ip6]);
        middlebox.exec_ok(&["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"]);
        let hosts = [(origin_ip.as_str(), origin_name)];
        client.hosts(&hosts);
        middlebox.hosts(&hosts);
        origin.hosts(&hosts);
        Self {
            client,
            middlebox,
            origin,
            client_ip,
            middlebox_ip: mbox_c_ip,
            origin_ip,
            middlebox_client_if: mc_if,
            middlebox_origin_if: mo_if,
            client_if: c_if,
            origin_if: o_if,
            middlebox_origin_ip: mbox_o_ip,
            client_ip6,
            origin_ip6,
            front_ip: format!("10.78.{third}.9"),
            front_ip6: format!("fd78:{third:x}:3::2"),
            origin_name: origin_name.to_owned(),
        }
    }
}
