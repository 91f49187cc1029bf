//! rtnetlink calls for the objects kolach owns (the [`RtNetlink`] side of the
//! `Kernel` seam): proto-107 routes (in the main table, and the export
//! table's), permanent neighbour
//! entries, and vxlan FDB entries (AF_BRIDGE neighbour messages with
//! `NTF_SELF` and a `dst`).

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::RouteMessageBuilder;

use super::{gone_ok, nl, RtNetlink, MAIN};
use crate::kernel::kobjects::{Fdb, KRoute, Mac, Neigh, KOLACH_PROTO};
use crate::kernel::KernelError;

fn table(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

/// A dumped route as (table, [`KRoute`]) when it is an IPv4 proto-107
/// unicast route. A route without a gateway gets `via` 0.0.0.0 (a device
/// route, as the udp backend makes for pool blocks) and one without a device
/// `oif` 0, so reconcile sees one that is not wanted as wrong and replaces or
/// deletes it.
fn kolach_route(m: &RouteMessage) -> Option<(u32, KRoute)> {
    let h = &m.header;
    if h.address_family != AddressFamily::Inet
        || u8::from(h.protocol) != KOLACH_PROTO
        || h.kind != RouteType::Unicast
    {
        return None;
    }
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut via = Ipv4Addr::UNSPECIFIED;
    let mut oif = 0;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = *ip,
            RouteAttribute::Oif(i) => oif = *i,
            _ => {}
        }
    }
    let route = KRoute {
        dst: Ipv4Net::new(dst, h.destination_prefix_length).ok()?,
        via,
        oif,
        onlink: h.flags.contains(RouteFlags::Onlink),
    };
    Some((table(m), route))
}

fn route_message(table: u32, r: KRoute) -> RouteMessage {
    let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(r.dst.network(), r.dst.prefix_len())
        .protocol(RouteProtocol::from(KOLACH_PROTO))
        .table_id(table);
    if r.via.is_unspecified() {
        // `ip route add <dst> dev <oif>` does the same: no gateway, the
        // destination is on the link.
        b = b.scope(RouteScope::Link);
    } else {
        b = b.gateway(r.via);
    }
    if r.oif != 0 {
        b = b.output_interface(r.oif);
    }
    if r.onlink {
        b = b.onlink();
    }
    b.build()
}

fn lladdr(m: &NeighbourMessage) -> Option<Mac> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => <[u8; 6]>::try_from(b.as_slice()).ok().map(Mac),
        _ => None,
    })
}

fn destination(m: &NeighbourMessage) -> Option<Ipv4Addr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        // AF_BRIDGE messages carry the vxlan destination as raw bytes.
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
            <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
        }
        _ => None,
    })
}

impl RtNetlink {
    /// Proto-107 routes of every table, as (table, route).
    pub(crate) async fn list_routes(&self) -> Result<Vec<(u32, KRoute)>, KernelError> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut msgs = self.handle.route().get(query).execute();
        let mut out = Vec::new();
        while let Some(m) = msgs.try_next().await.map_err(nl("list routes"))? {
            out.extend(kolach_route(&m));
        }
        Ok(out)
    }

    pub(crate) async fn route_add(
        &self,
        table: u32,
        r: KRoute,
        replace: bool,
    ) -> Result<(), KernelError> {
        let req = self.handle.route().add(route_message(table, r));
        let req = if replace { req.replace() } else { req };
        let op = if table == MAIN {
            format!("add route {r}")
        } else {
            format!("add route {r} (table {table})")
        };
        req.execute().await.map_err(nl(op))
    }

    pub(crate) async fn route_del(&self, table: u32, r: KRoute) -> Result<(), KernelError> {
        let res = self
            .handle
            .route()
            .del(route_message(table, r))
            .execute()
            .await;
        gone_ok(
            res,
            &[libc::ESRCH],
            format!("delete route {r} (table {table})"),
        )
    }

    pub(crate) async fn list_neighbours(&self, dev: u32) -> Result<Vec<Neigh>, KernelError> {
        let mut msgs = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute();
        let mut out = Vec::new();
        while let Some(m) = msgs.try_next().await.map_err(nl("list neighbours"))? {
            if m.header.ifindex != dev || m.header.state != NeighbourState::Permanent {
                continue;
            }
            if let (Some(ip), Some(mac)) = (destination(&m), lladdr(&m)) {
                out.push(Neigh { dev, ip, mac });
            }
        }
        Ok(out)
    }

    pub(crate) async fn neighbour_set(&self, n: Neigh) -> Result<(), KernelError> {
        self.handle
            .neighbours()
            .add(n.dev, IpAddr::V4(n.ip))
            .link_layer_address(&n.mac.0)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("set neighbour {} lladdr {}", n.ip, n.mac)))
    }

    pub(crate) async fn neighbour_del(&self, n: Neigh) -> Result<(), KernelError> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = n.dev;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                n.ip,
            )));
        let res = self.handle.neighbours().del(m).execute().await;
        gone_ok(res, &[libc::ENOENT], format!("delete neighbour {}", n.ip))
    }

    pub(crate) async fn list_fdb(&self, dev: u32) -> Result<Vec<Fdb>, KernelError> {
        let mut msgs = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute();
        let mut out = Vec::new();
        while let Some(m) = msgs.try_next().await.map_err(nl("list fdb"))? {
            if m.header.ifindex != dev || m.header.state != NeighbourState::Permanent {
                continue;
            }
            if let (Some(mac), Some(dst)) = (lladdr(&m), destination(&m)) {
                out.push(Fdb { dev, mac, dst });
            }
        }
        Ok(out)
    }

    pub(crate) async fn fdb_set(&self, e: Fdb) -> Result<(), KernelError> {
        self.handle
            .neighbours()
            .add_bridge(e.dev, &e.mac.0)
            .flags(NeighbourFlags::Own)
            .destination(IpAddr::V4(e.dst))
            .replace()
            .execute()
            .await
            .map_err(nl(format!("set fdb {} dst {}", e.mac, e.dst)))
    }

    pub(crate) async fn fdb_del(&self, e: Fdb) -> Result<(), KernelError> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = e.dev;
        m.header.flags = NeighbourFlags::Own;
        m.header.state = NeighbourState::Permanent;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(e.mac.0.to_vec()));
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                e.dst,
            )));
        let res = self.handle.neighbours().del(m).execute().await;
        gone_ok(
            res,
            &[libc::ENOENT],
            format!("delete fdb {} dst {}", e.mac, e.dst),
        )
    }
}
