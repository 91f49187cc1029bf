//! The underlay and the pods: namespaces wired with veth pairs, the way a rack
//! of hosts with a Docker bridge each would be.
//!
//! ```text
//!   <stem>-u: br0 198.18.0.254/24 (+ etcd) ── h1 ══ eth0 198.18.0.1  <stem>-h1
//!                                          ── h2 ══ eth0 198.18.0.2  <stem>-h2
//!   <stem>-h1: kbr0 10.50.18.1/24 ── vp0 ══ eth0 10.50.18.2  <stem>-p1 (default via .1)
//! ```
//! Every veth is created inside the underlay (or host) namespace and its peer
//! moved straight into the other one, so names never meet in the root namespace.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use ipnet::Ipv4Net;

use crate::names::uplink_ifname;
use crate::netns::{self, ip};

/// The underlay network.
pub const UNDERLAY_PREFIX: u8 = 24;
pub const BRIDGE: &str = "br0";
/// Host-side interface name of every underlay link, and pod-side of every pod link.
pub const ETH: &str = "eth0";
/// The Docker-like bridge in each host.
pub const POD_BRIDGE: &str = "kbr0";
const POD_VETH: &str = "vp0";

/// Underlay address of host `n` (198.18.0.n).
pub fn host_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, n)
}

/// The underlay bridge's own MAC address. Set, so that it never changes: a
/// bridge without one takes the lowest MAC of its ports, so each host that
/// joins may change it, and a host that resolved 198.18.0.254 before then
/// sends to the old one, which the bridge drops (an unanswered SYN to etcd
/// until the neighbour entry goes stale, about 30 s).
pub const BRIDGE_MAC: &str = "02:00:c6:12:00:fe";

/// Creates the underlay namespace with its bridge, holding 198.18.0.254 (etcd's address).
pub fn create_underlay(ns: &str) -> Result<()> {
    netns::create(ns)?;
    ip(
        ns,
        &[
            "link", "add", BRIDGE, "address", BRIDGE_MAC, "type", "bridge",
        ],
    )?;
    let addr = format!("{}/{UNDERLAY_PREFIX}", crate::etcd::ETCD_IP);
    ip(ns, &["addr", "add", &addr, "dev", BRIDGE])?;
    ip(ns, &["link", "set", BRIDGE, "up"])?;
    Ok(())
}

/// Creates namespace `ns` as a machine on the underlay: eth0 with `addr`/24
/// plugged into the bridge through link `uplink` (inside the underlay), IPv4
/// forwarding on.
pub fn create_machine(underlay: &str, ns: &str, uplink: &str, addr: Ipv4Addr) -> Result<()> {
    netns::create(ns)?;
    ip(
        underlay,
        &[
            "link", "add", uplink, "type", "veth", "peer", "name", ETH, "netns", ns,
        ],
    )
    .with_context(|| format!("veth {uplink} for {ns}"))?;
    ip(underlay, &["link", "set", uplink, "master", BRIDGE])?;
    ip(underlay, &["link", "set", uplink, "up"])?;
    let cidr = format!("{addr}/{UNDERLAY_PREFIX}");
    ip(ns, &["addr", "add", &cidr, "dev", ETH])?;
    ip(ns, &["link", "set", ETH, "up"])?;
    netns::sysctl(ns, "net.ipv4.ip_forward", "1")?;
    Ok(())
}

/// Creates host `n` of the lab.
pub fn create_host(underlay: &str, ns: &str, n: u8) -> Result<()> {
    create_machine(underlay, ns, &uplink_ifname(n), host_ip(n))
}

/// A pod: a namespace behind the host's `kbr0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub ns: String,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub subnet: Ipv4Net,
}

/// Builds host `host_ns`'s bridge with `gateway/prefix` (Docker's `--bip`, i.e.
/// KOLACH_SUBNET) and a pod namespace `pod_ns` at `pod_ip` routed through it.
/// `mtu` is KOLACH_MTU (Docker's `--mtu`).
pub fn create_pod(
    host_ns: &str,
    pod_ns: &str,
    bip: Ipv4Net,
    pod_ip: Ipv4Addr,
    mtu: u32,
) -> Result<Pod> {
    let mtu = mtu.to_string();
    let bip_s = bip.to_string();
    // Leftovers from an earlier pod of the same host are replaced. Deleting our
    // end of the veth removes the peer at once (a namespace's devices go lazily).
    let _ = ip(host_ns, &["link", "del", POD_VETH]);
    let _ = ip(host_ns, &["link", "del", POD_BRIDGE]);
    ip(
        host_ns,
        &["link", "add", POD_BRIDGE, "mtu", &mtu, "type", "bridge"],
    )?;
    ip(host_ns, &["addr", "add", &bip_s, "dev", POD_BRIDGE])?;
    ip(host_ns, &["link", "set", POD_BRIDGE, "up"])?;
    netns::create(pod_ns)?;
    ip(
        host_ns,
        &[
            "link", "add", POD_VETH, "mtu", &mtu, "type", "veth", "peer", "name", ETH, "mtu", &mtu,
            "netns", pod_ns,
        ],
    )?;
    ip(host_ns, &["link", "set", POD_VETH, "master", POD_BRIDGE])?;
    ip(host_ns, &["link", "set", POD_VETH, "up"])?;
    let pod_cidr = format!("{pod_ip}/{}", bip.prefix_len());
    ip(pod_ns, &["addr", "add", &pod_cidr, "dev", ETH])?;
    ip(pod_ns, &["link", "set", ETH, "up"])?;
    let gw = bip.addr().to_string();
    ip(pod_ns, &["route", "add", "default", "via", &gw])?;
    Ok(Pod {
        ns: pod_ns.to_string(),
        ip: pod_ip,
        gateway: bip.addr(),
        subnet: bip.trunc(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_addresses() {
        assert_eq!(host_ip(1).to_string(), "198.18.0.1");
        assert_eq!(host_ip(200).to_string(), "198.18.0.200");
    }
}
