//! [`Nl`]: the rtnetlink calls both sides use, on a connection that belongs to
//! the namespace of the thread that opened it. Replies come back as the plain
//! views of [`super::view`].

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use kolach_proto::Mac;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::view::{Link, Neighbour, Route};
use super::WireError;

/// An rtnetlink connection in one namespace.
#[derive(Clone)]
pub struct Nl {
    handle: Handle,
}

fn nl(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> WireError {
    let op = op.into();
    move |source| WireError::Netlink { op, source }
}

/// Whether a netlink error is `-errno`.
fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

fn link_view(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: m.header.flags.contains(LinkFlags::Up),
        veth: false,
        peer: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::Address(b) => l.mac = <[u8; 6]>::try_from(b.as_slice()).ok().map(Mac),
            // A veth's IFLA_LINK is its peer's index, in the peer's namespace.
            LinkAttribute::Link(i) => l.peer = Some(*i),
            LinkAttribute::LinkInfo(infos) => {
                l.veth |= infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
            }
            _ => {}
        }
    }
    l
}

fn route_view(m: &RouteMessage) -> Option<Route> {
    let h = &m.header;
    if h.address_family != AddressFamily::Inet {
        return None;
    }
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut oif = None;
    let mut table = u32::from(h.table);
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    Some(Route {
        dst: Ipv4Net::new(dst, h.destination_prefix_length).ok()?,
        gateway,
        oif,
        link_scope: h.scope == RouteScope::Link,
        protocol: u8::from(h.protocol),
        table,
    })
}

impl Nl {
    /// Opens a connection in the calling thread's namespace and drives it on
    /// the current tokio runtime.
    pub fn connect() -> Result<Nl, WireError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(WireError::Connect)?;
        tokio::spawn(conn);
        Ok(Nl { handle })
    }

    pub async fn link(&self, name: &str) -> Result<Option<Link>, WireError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(m) => Ok(m.as_ref().map(link_view)),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(nl(format!("look up link {name}"))(e)),
        }
    }

    /// Creates a veth pair: `name` here, `peer` (with the same MTU) made
    /// directly in the namespace of `peer_netns`, so a pod's `eth0` never
    /// meets the host's own `eth0`.
    pub async fn add_veth(
        &self,
        name: &str,
        peer: &str,
        peer_netns: RawFd,
        mtu: Option<u32>,
    ) -> Result<(), WireError> {
        let mut peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer)
            .setns_by_fd(peer_netns);
        let mut b = LinkVeth::new(name, peer);
        if let Some(mtu) = mtu {
            peer_msg = peer_msg.mtu(mtu);
            b = b.mtu(mtu);
        }
        let msg = b
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(nl(format!("create veth {name} with peer {peer}")))
    }

    /// Sets the link up, with `mtu` when given.
    pub async fn set_up(&self, index: u32, mtu: Option<u32>) -> Result<(), WireError> {
        let mut b = LinkUnspec::new_with_index(index).up();
        if let Some(mtu) = mtu {
            b = b.mtu(mtu);
        }
        self.handle
            .link()
            .set(b.build())
            .execute()
            .await
            .map_err(nl(format!("set link #{index} up")))
    }

    /// Deletes a link; `false` when it was already gone.
    pub async fn delete_link(&self, name: &str) -> Result<bool, WireError> {
        let Some(l) = self.link(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(l.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(false),
            Err(e) => Err(nl(format!("delete link {name}"))(e)),
        }
    }

    /// The IPv4 addresses on link `index`.
    pub async fn addresses(&self, index: u32) -> Result<Vec<Ipv4Net>, WireError> {
        let mut msgs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(m) = msgs.try_next().await.map_err(nl("list addresses"))? {
            if m.header.index != index {
                continue;
            }
            let ip = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            if let Some(n) = ip.and_then(|ip| Ipv4Net::new(ip, m.header.prefix_len).ok()) {
                out.push(n);
            }
        }
        Ok(out)
    }

    pub async fn add_address(&self, index: u32, addr: Ipv4Net) -> Result<(), WireError> {
        self.handle
            .address()
            .add(index, IpAddr::V4(addr.addr()), addr.prefix_len())
            .replace()
            .execute()
            .await
            .map_err(nl(format!("add address {addr}")))
    }

    /// Every IPv4 route of every table.
    pub async fn routes(&self) -> Result<Vec<Route>, WireError> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut msgs = self.handle.route().get(query).execute();
        let mut out = Vec::new();
        while let Some(m) = msgs.try_next().await.map_err(nl("list routes"))? {
            out.extend(route_view(&m));
        }
        Ok(out)
    }

    /// Adds or replaces a main-table route out of `oif`: link scope when it
    /// has no gateway.
    pub async fn set_route(
        &self,
        dst: Ipv4Net,
        gateway: Option<Ipv4Addr>,
        oif: u32,
        protocol: u8,
    ) -> Result<(), WireError> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .output_interface(oif)
            .protocol(RouteProtocol::from(protocol));
        b = match gateway {
            Some(gw) => b.gateway(gw),
            None => b.scope(RouteScope::Link),
        };
        let what = match gateway {
            Some(gw) => format!("add route {dst} via {gw}"),
            None => format!("add route {dst} scope link"),
        };
        self.handle
            .route()
            .add(b.build())
            .replace()
            .execute()
            .await
            .map_err(nl(what))
    }

    /// Permanent IPv4 neighbour entries on `dev`.
    pub async fn neighbours(&self, dev: u32) -> Result<Vec<Neighbour>, WireError> {
        let mut msgs = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute();
        let mut out = Vec::new();
        while let Some(m) = msgs.try_next().await.map_err(nl("list neighbours"))? {
            if m.header.ifindex != dev {
                continue;
            }
            let ip = m.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
                _ => None,
            });
            let mac = m.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::LinkLayerAddress(b) => {
                    <[u8; 6]>::try_from(b.as_slice()).ok().map(Mac)
                }
                _ => None,
            });
            if let Some(ip) = ip {
                out.push(Neighbour {
                    ip,
                    mac,
                    permanent: m.header.state == NeighbourState::Permanent,
                });
            }
        }
        Ok(out)
    }

    pub async fn set_permanent_neighbour(
        &self,
        dev: u32,
        ip: Ipv4Addr,
        mac: Mac,
    ) -> Result<(), WireError> {
        self.handle
            .neighbours()
            .add(dev, IpAddr::V4(ip))
            .link_layer_address(&mac.0)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("set neighbour {ip} lladdr {mac}")))
    }
}
