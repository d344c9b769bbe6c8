//! Kernel programs of the TLS interception sensor.
//!
//! `tap_egress` and `tap_ingress` are `cgroup_skb` programs attached to the cgroup v2 root. They
//! see every TCP segment of every local socket, decide per socket (keyed by socket cookie) whether
//! the flow carries TLS, and forward only handshake payload to userspace through the `EVENTS` ring
//! buffer. Bulk traffic costs one map lookup. They never drop or change a packet.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

/// Defines a uprobe (or uretprobe) program twice around one body: `$classic` attaches the
/// classic way (perf_event_open on the uprobe PMU, which the kernel allows only with
/// CAP_SYS_ADMIN), `$multi` through a uprobe_multi link (kernels from 6.6, with CAP_BPF and
/// CAP_PERFMON: the shipped unit's capabilities). sensord loads the one the kernel supports.
#[cfg(target_arch = "bpf")]
macro_rules! uprobe_programs {
    ($kind:ident, $ctx:ty, $classic:ident, $multi:ident, $body:path) => {
        #[$kind]
        pub fn $classic(ctx: $ctx) -> u32 {
            $body(ctx)
        }

        #[$kind(multi)]
        pub fn $multi(ctx: $ctx) -> u32 {
            $body(ctx)
        }
    };
}

#[cfg(target_arch = "bpf")]
mod attribution;
#[cfg(target_arch = "bpf")]
mod exec;
#[cfg(target_arch = "bpf")]
mod request;
#[cfg(target_arch = "bpf")]
mod tap;
#[cfg(target_arch = "bpf")]
mod uprobe;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("sensor-ebpf only builds for the BPF target; sensord's build script builds it.");
}
