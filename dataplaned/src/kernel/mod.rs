//! The kernel seam: the [`Kernel`] trait (links, addresses, proto-107
//! routes, neighbours, vxlan FDB entries), its rtnetlink implementation
//! ([`RtNetlink`], in `kernel/rtnl/`: links and addresses in `link.rs`,
//! routes, neighbours and FDB entries in `objects.rs`), and
//! [`configure_device`], the udp backend's device logic.
//!
//! The deciding parts only talk to the trait, so they are tested with a fake
//! (`kernel/fake.rs`) that records calls; the kernel tests run them for real
//! in a network namespace.
//!
//! - [`kobjects`]: the kernel objects kolach owns (routes, neighbours, FDB
//!   entries, links) as values.
//! - [`reconcile`] (pure): wanted vs. actual kernel objects → the operations
//!   between them (reconcile, never flush).
//! - [`sync`]: reads kolach's kernel objects, applies the reconcile plan,
//!   removes a previous backend's devices.
//! - [`export`]: this host's subnet and blocks as `dev lo` routes in the
//!   export table (DESIGN §10), for every backend; the plan is pure.

use futures::future::BoxFuture;
use ipnet::Ipv4Net;

use crate::kernel::kobjects::{Fdb, KRoute, LinkChange, LinkState, Neigh, VxlanLink};

pub mod export;
#[cfg(test)]
pub(crate) mod fake;
pub mod kobjects;
pub mod reconcile;
mod rtnl;
pub mod sync;

pub use rtnl::RtNetlink;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("netlink: {op}: {source}")]
    Netlink {
        op: String,
        source: rtnetlink::Error,
    },
    #[error("cannot open a netlink socket: {0}")]
    Connect(std::io::Error),
    #[error("device {0} does not exist")]
    NoDevice(String),
    #[error("cannot set {path}: {source}")]
    Sysctl {
        path: String,
        source: std::io::Error,
    },
}

impl KernelError {
    /// The errno of a netlink error (positive, e.g. `libc::EEXIST`).
    pub fn errno(&self) -> Option<i32> {
        match self {
            KernelError::Netlink {
                source: rtnetlink::Error::NetlinkError(m),
                ..
            } => Some(-m.raw_code()),
            _ => None,
        }
    }
}

/// What the dataplane needs from the kernel. Reads return kolach's objects
/// only where noted; deletions of something already gone succeed.
pub trait Kernel: Send + Sync {
    /// The link's index and kind (e.g. "tun"), None when absent.
    fn link<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<(u32, String)>, KernelError>>;
    /// Every link in the namespace.
    fn links(&self) -> BoxFuture<'_, Result<Vec<LinkState>, KernelError>>;
    fn ipv4_addresses(&self, index: u32) -> BoxFuture<'_, Result<Vec<Ipv4Net>, KernelError>>;
    fn add_address(&self, index: u32, addr: Ipv4Net) -> BoxFuture<'_, Result<(), KernelError>>;
    fn del_address(&self, index: u32, addr: Ipv4Net) -> BoxFuture<'_, Result<(), KernelError>>;
    fn set_mtu_up(&self, index: u32, mtu: u32) -> BoxFuture<'_, Result<(), KernelError>>;
    /// IPv6 address generation mode `none`: brought up afterwards, the
    /// link gets no IPv6 link-local address, so the kernel sends no router
    /// solicitations or MLD reports into it.
    fn no_ipv6_link_local(&self, index: u32) -> BoxFuture<'_, Result<(), KernelError>>;
    fn delete_link(&self, index: u32) -> BoxFuture<'_, Result<(), KernelError>>;
    /// `net.ipv4.conf.<name>.accept_local = 1`: the ICMP errors we write into
    /// the TUN come from its own address, which the kernel otherwise drops as
    /// a martian source.
    fn set_accept_local<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), KernelError>>;
    /// Creates a vxlan device (down) with the given parameters, MTU and MAC.
    fn create_vxlan<'a>(&'a self, link: &'a VxlanLink) -> BoxFuture<'a, Result<(), KernelError>>;
    /// Sets what `change` names on a link.
    fn set_link(&self, index: u32, change: LinkChange) -> BoxFuture<'_, Result<(), KernelError>>;
    /// The IPv4 routes of protocol 107 in the main table.
    fn routes(&self) -> BoxFuture<'_, Result<Vec<KRoute>, KernelError>>;
    /// Adds a proto-107 route; `replace` replaces the route to the same
    /// destination, otherwise an existing one is an error (EEXIST).
    fn add_route(&self, route: KRoute, replace: bool) -> BoxFuture<'_, Result<(), KernelError>>;
    /// Deletes a proto-107 route from the main table (never one of another
    /// protocol).
    fn del_route(&self, route: KRoute) -> BoxFuture<'_, Result<(), KernelError>>;
    /// The IPv4 routes of protocol 107 in every table, as (table, route):
    /// what `--cleanup` removes.
    fn routes_all_tables(&self) -> BoxFuture<'_, Result<Vec<(u32, KRoute)>, KernelError>>;
    /// Deletes a proto-107 route from `table`.
    fn del_route_in(&self, table: u32, route: KRoute) -> BoxFuture<'_, Result<(), KernelError>>;
    /// [`add_route`](Kernel::add_route) into `table` (the export table).
    fn add_route_in(
        &self,
        table: u32,
        route: KRoute,
        replace: bool,
    ) -> BoxFuture<'_, Result<(), KernelError>>;
    /// The permanent IPv4 neighbour entries (with a link-layer address) on `dev`.
    fn neighbours(&self, dev: u32) -> BoxFuture<'_, Result<Vec<Neigh>, KernelError>>;
    /// Creates or replaces a permanent neighbour entry.
    fn set_neighbour(&self, n: Neigh) -> BoxFuture<'_, Result<(), KernelError>>;
    fn del_neighbour(&self, n: Neigh) -> BoxFuture<'_, Result<(), KernelError>>;
    /// The permanent FDB entries with a destination on the vxlan device `dev`.
    fn fdb(&self, dev: u32) -> BoxFuture<'_, Result<Vec<Fdb>, KernelError>>;
    /// Creates the FDB entry, or replaces its destination (`self permanent`).
    fn set_fdb(&self, e: Fdb) -> BoxFuture<'_, Result<(), KernelError>>;
    /// Deletes one destination of an FDB entry.
    fn del_fdb(&self, e: Fdb) -> BoxFuture<'_, Result<(), KernelError>>;
}

/// Gives `name` exactly the IPv4 address `addr` (removing stale ones first, so
/// a changed subnet replaces the old address), the MTU, and brings it up,
/// changing nothing that is already so.
/// Returns warnings: a read-only /proc/sys (some containers) costs only the
/// ICMP answers, not forwarding, so it does not fail the apply.
pub async fn configure_device(
    k: &dyn Kernel,
    name: &str,
    addr: Ipv4Net,
    mtu: u32,
) -> Result<Vec<String>, KernelError> {
    let link = k
        .links()
        .await?
        .into_iter()
        .find(|l| l.name == name)
        .ok_or_else(|| KernelError::NoDevice(name.to_string()))?;
    let index = link.index;
    let current = k.ipv4_addresses(index).await?;
    // Stale addresses go first: deleting a primary address after adding the new
    // one would take the new (secondary, same prefix) one with it.
    let (stale, missing) = crate::kernel::reconcile::plan_address(addr, &current);
    for old in stale {
        tracing::info!(device = name, address = %old, "removing stale address");
        k.del_address(index, old).await?;
    }
    if missing {
        tracing::info!(device = name, address = %addr, "adding address");
        k.add_address(index, addr).await?;
    }
    // Only what differs: a restart or hot upgrade finds the device right and
    // must leave it alone.
    if !link.up {
        // The udp backend carries IPv4 only: IPv6 housekeeping the kernel
        // would send into the TUN is dropped there (and counted as
        // not-ipv4), so a device coming up gets no link-local address. A
        // kernel without IPv6 refuses the setting; nothing is lost then.
        if let Err(e) = k.no_ipv6_link_local(index).await {
            tracing::debug!(device = name, error = %e, "IPv6 address generation left as it is");
        }
    }
    if link.mtu != mtu || !link.up {
        k.set_mtu_up(index, mtu).await?;
    }
    Ok(match k.set_accept_local(name).await {
        Ok(()) => Vec::new(),
        Err(e) => {
            tracing::warn!(device = name, error = %e, "ICMP errors to local senders will be dropped by the kernel");
            vec![format!(
                "{e}: ICMP errors to local senders will be dropped by the kernel"
            )]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::fake::FakeKernel;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn fresh_device_gets_address_mtu_up() {
        let k = FakeKernel::with_link("kolach0", 7);
        configure_device(&k, "kolach0", n("10.50.18.0/16"), 1472)
            .await
            .unwrap();
        assert_eq!(
            k.take_calls(),
            [
                "add 7 10.50.18.0/16",
                "no-ll6 7",
                "mtu-up 7 1472",
                "accept-local kolach0"
            ]
        );
    }

    #[tokio::test]
    async fn reapplying_the_same_address_adds_nothing() {
        let k = FakeKernel::with_link("kolach0", 7);
        configure_device(&k, "kolach0", n("10.50.18.0/16"), 1472)
            .await
            .unwrap();
        k.take_calls();
        configure_device(&k, "kolach0", n("10.50.18.0/16"), 1472)
            .await
            .unwrap();
        assert_eq!(k.take_calls(), ["accept-local kolach0"]);
    }

    #[tokio::test]
    async fn changed_subnet_replaces_stale_address_first() {
        let k = FakeKernel::with_link("kolach0", 7);
        configure_device(&k, "kolach0", n("10.50.18.0/16"), 1472)
            .await
            .unwrap();
        k.take_calls();
        configure_device(&k, "kolach0", n("10.50.9.0/16"), 1400)
            .await
            .unwrap();
        assert_eq!(
            k.take_calls(),
            [
                "del 7 10.50.18.0/16",
                "add 7 10.50.9.0/16",
                "mtu-up 7 1400",
                "accept-local kolach0"
            ]
        );
        assert_eq!(
            k.links.lock().unwrap()["kolach0"].addrs,
            vec![n("10.50.9.0/16")]
        );
    }

    #[tokio::test]
    async fn read_only_sysctl_is_a_warning_not_a_failure() {
        let k = FakeKernel::with_link("kolach0", 7);
        k.sysctl_read_only
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let w = configure_device(&k, "kolach0", n("10.50.18.0/16"), 1472)
            .await
            .unwrap();
        assert_eq!(w.len(), 1);
        assert!(
            w[0].starts_with("cannot set /proc/sys/net/ipv4/conf/kolach0/accept_local"),
            "{w:?}"
        );
        assert_eq!(
            k.links.lock().unwrap()["kolach0"].addrs,
            vec![n("10.50.18.0/16")]
        );
    }

    #[tokio::test]
    async fn missing_device_is_an_error() {
        let k = FakeKernel::default();
        let e = configure_device(&k, "kolach0", n("10.50.18.0/16"), 1472)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "device kolach0 does not exist");
    }
}
