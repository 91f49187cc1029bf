//! Inside the pod's namespace (on the thread [`super::netns::Netns::run`]
//! made): the pod end up with its /32, the route to 169.254.1.1 and the
//! default route through it, and a permanent neighbour entry for
//! 169.254.1.1 with the host end's MAC, so the pod never waits on proxy ARP.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use kolach_proto::Mac;

use super::nl::Nl;
use super::view::{Link, PodView};
use super::WireError;
use crate::result::GATEWAY;

/// Routes the plugin makes inside the pod carry the kernel's "boot" protocol,
/// as `ip route add` would: the pod's routing table is the pod's own.
const POD_SIDE_PROTO: u8 = 3;

pub async fn configure(
    nl: &Nl,
    ifname: &str,
    address: Ipv4Addr,
    host_mac: Mac,
    mtu: Option<u32>,
) -> Result<Link, WireError> {
    let link = nl.link(ifname).await?.ok_or_else(|| WireError::Vanished {
        what: format!("{ifname} in the pod"),
    })?;
    nl.set_up(link.index, mtu).await?;
    nl.add_address(link.index, Ipv4Net::new(address, 32).expect("/32"))
        .await?;
    nl.set_permanent_neighbour(link.index, GATEWAY, host_mac)
        .await?;
    let gw = Ipv4Net::new(GATEWAY, 32).expect("/32");
    nl.set_route(gw, None, link.index, POD_SIDE_PROTO).await?;
    nl.set_route(
        Ipv4Net::default(),
        Some(GATEWAY),
        link.index,
        POD_SIDE_PROTO,
    )
    .await?;
    // Read back: the MAC the result reports, the MTU as set.
    nl.link(ifname).await?.ok_or_else(|| WireError::Vanished {
        what: format!("{ifname} in the pod"),
    })
}

/// What CHECK compares.
pub async fn observe(nl: &Nl, ifname: &str) -> Result<PodView, WireError> {
    let Some(link) = nl.link(ifname).await? else {
        return Ok(PodView::default());
    };
    Ok(PodView {
        addresses: nl.addresses(link.index).await?,
        routes: nl.routes().await?,
        neighbours: nl.neighbours(link.index).await?,
        link: Some(link),
    })
}
