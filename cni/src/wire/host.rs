//! In the host's namespace: the host end up (with the MTU), answering ARP for
//! 169.254.1.1, the pod's `/32 dev <host end> scope link proto 108` route,
//! and IPv4 forwarding.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::nl::Nl;
use super::view::{HostView, Link};
use super::{sysctl, WireError, POD_ROUTE_PROTO};

/// Brings the host end up and makes it answer for the gateway. Before the
/// pod side, so the pod's first packet finds an end that is up.
pub async fn prepare(nl: &Nl, host_end: &Link, mtu: Option<u32>) -> Result<(), WireError> {
    nl.set_up(host_end.index, mtu).await?;
    sysctl::host_end(&host_end.name)
}

/// The route to the pod, and forwarding on.
pub async fn route(nl: &Nl, host_end: &Link, address: Ipv4Addr) -> Result<(), WireError> {
    let dst = Ipv4Net::new(address, 32).expect("/32");
    nl.set_route(dst, None, host_end.index, POD_ROUTE_PROTO)
        .await?;
    sysctl::ip_forward()
}

/// What CHECK compares.
pub async fn observe(nl: &Nl, host_end: &str) -> Result<HostView, WireError> {
    let Some(link) = nl.link(host_end).await? else {
        return Ok(HostView::default());
    };
    Ok(HostView {
        routes: nl.routes().await?,
        link: Some(link),
    })
}
