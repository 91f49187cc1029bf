//! [`RtNetlink`]: the [`Kernel`] seam over an rtnetlink connection. The trait's
//! methods are here; the calls they make are in `link.rs` (links and
//! addresses) and `objects.rs` (proto-107 routes, neighbours, FDB entries),
//! with the helpers both use (error wrapping, "already gone" deletions, the
//! main table) here, so neither imports the other.

use futures::future::BoxFuture;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::route::RouteHeader;
use rtnetlink::Handle;

use crate::kernel::kobjects::{Fdb, KRoute, LinkChange, LinkState, Neigh, VxlanLink};
use crate::kernel::{Kernel, KernelError};

mod link;
mod objects;

/// The main routing table.
pub(crate) const MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// [`Kernel`] over an rtnetlink connection, in the network namespace of the
/// thread that made it.
#[derive(Clone)]
pub struct RtNetlink {
    pub(crate) handle: Handle,
}

impl RtNetlink {
    /// Opens the connection and spawns its driver on the current tokio runtime.
    pub fn connect() -> Result<Self, KernelError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(KernelError::Connect)?;
        tokio::spawn(conn);
        Ok(RtNetlink { handle })
    }
}

/// Wraps an rtnetlink error with what we were doing.
fn nl(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> KernelError {
    let op = op.into();
    move |source| KernelError::Netlink { op, source }
}

/// Whether a netlink error is `-errno`.
fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

/// Ok for a deletion whose object was already gone.
fn gone_ok(
    r: Result<(), rtnetlink::Error>,
    gone: &[i32],
    op: impl Into<String>,
) -> Result<(), KernelError> {
    match r {
        Err(e) if gone.iter().any(|g| is_errno(&e, *g)) => Ok(()),
        r => r.map_err(nl(op)),
    }
}

impl Kernel for RtNetlink {
    fn link<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<(u32, String)>, KernelError>> {
        Box::pin(self.get_link(name))
    }
    fn links(&self) -> BoxFuture<'_, Result<Vec<LinkState>, KernelError>> {
        Box::pin(self.list_links())
    }
    fn ipv4_addresses(&self, index: u32) -> BoxFuture<'_, Result<Vec<Ipv4Net>, KernelError>> {
        Box::pin(self.list_addresses(index))
    }
    fn add_address(&self, index: u32, addr: Ipv4Net) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(self.address_add(index, addr))
    }
    fn del_address(&self, index: u32, addr: Ipv4Net) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(self.address_del(index, addr))
    }
    fn set_mtu_up(&self, index: u32, mtu: u32) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(self.link_set(
            index,
            LinkChange {
                mtu: Some(mtu),
                mac: None,
                up: true,
            },
        ))
    }
    fn no_ipv6_link_local(&self, index: u32) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(self.link_no_ipv6_link_local(index))
    }
    fn delete_link(&self, index: u32) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(self.link_del(index))
    }
    fn set_accept_local<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), KernelError>> {
        Box::pin(async move {
            let path = format!("/proc/sys/net/ipv4/conf/{name}/accept_local");
            match std::fs::read_to_string(&path) {
                Ok(v) if v.trim() == "1" => return Ok(()),
                _ => {}
            }
            std::fs::write(&path, b"1").map_err(|source| KernelError::Sysctl { path, source })
        })
    }
    fn create_vxlan<'a>(&'a self, link: &'a VxlanLink) -> BoxFuture<'a, Result<(), KernelError>> {
        Box::pin(self.vxlan_add(link))
    }
    fn set_link(&self, index: u32, change: LinkChange) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(self.link_set(index, change))
    }
    fn routes(&self) -> BoxFuture<'_, Result<Vec<KRoute>, KernelError>> {
        Box::pin(async move {
            let all = self.list_routes().await?;
            Ok(all
                .into_iter()
                .filter(|(t, _)| *t == MAIN)
                .map(|(_, r)| r)
                .collect())
        })
    }
    fn routes_all_tables(&self) -> BoxFuture<'_, Result<Vec<(u32, KRoute)>, KernelError>> {
        Box::pin(self.list_routes())
    }
    fn del_route_in(&self, table: u32, route: KRoute) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(self.route_del(table, route))
    }
    fn add_route(&self, route: KRoute, replace: bool) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(self.route_add(MAIN, route, replace))
    }
    fn add_route_in(
        &self,
        table: u32,
        route: KRoute,
        replace: bool,
    ) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(self.route_add(table, route, replace))
    }
    fn del_route(&self, route: KRoute) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(self.route_del(MAIN, route))
    }
    fn neighbours(&self, dev: u32) -> BoxFuture<'_, Result<Vec<Neigh>, KernelError>> {
        Box::pin(self.list_neighbours(dev))
    }
    fn set_neighbour(&self, n: Neigh) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(self.neighbour_set(n))
    }
    fn del_neighbour(&self, n: Neigh) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(self.neighbour_del(n))
    }
    fn fdb(&self, dev: u32) -> BoxFuture<'_, Result<Vec<Fdb>, KernelError>> {
        Box::pin(self.list_fdb(dev))
    }
    fn set_fdb(&self, e: Fdb) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(self.fdb_set(e))
    }
    fn del_fdb(&self, e: Fdb) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(self.fdb_del(e))
    }
}
