//! rtnetlink calls for links and addresses (the [`RtNetlink`] side of the
//! `Kernel` seam): listing links with their vxlan parameters, creating the
//! vxlan device, setting MTU/MAC/up and the IPv6 address generation mode,
//! addresses.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVxlan, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{AddressMessageBuilder, LinkUnspec, LinkVxlan};

use super::{gone_ok, is_errno, nl, RtNetlink};
use crate::kernel::kobjects::{LinkChange, LinkState, Mac, VxlanAttrs, VxlanLink};
use crate::kernel::KernelError;

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Tun => "tun".to_string(),
        InfoKind::Vxlan => "vxlan".to_string(),
        k => k.to_string(),
    }
}

fn vxlan_attrs(infos: &[InfoVxlan]) -> VxlanAttrs {
    let mut a = VxlanAttrs {
        vni: 0,
        port: 0,
        local: None,
        underlay: None,
        // The kernel default when the attribute is absent.
        learning: true,
    };
    for i in infos {
        match i {
            InfoVxlan::Id(v) => a.vni = *v,
            InfoVxlan::Port(p) => a.port = *p,
            InfoVxlan::Local(ip) => a.local = Some(*ip),
            InfoVxlan::Link(l) if *l != 0 => a.underlay = Some(*l),
            InfoVxlan::Learning(l) => a.learning = *l,
            _ => {}
        }
    }
    a
}

/// A link message as a [`LinkState`].
pub(crate) fn link_state(m: &LinkMessage) -> LinkState {
    let mut l = LinkState {
        index: m.header.index,
        name: String::new(),
        kind: String::new(),
        mtu: 0,
        mac: None,
        up: m.header.flags.contains(LinkFlags::Up),
        vxlan: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::Address(b) => l.mac = <[u8; 6]>::try_from(b.as_slice()).ok().map(Mac),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => l.kind = kind_name(k),
                        LinkInfo::Data(InfoData::Vxlan(v)) => l.vxlan = Some(vxlan_attrs(v)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    l
}

fn addr_message(index: u32, addr: Ipv4Net) -> rtnetlink::packet_route::address::AddressMessage {
    AddressMessageBuilder::<Ipv4Addr>::new()
        .index(index)
        .address(addr.addr(), addr.prefix_len())
        .build()
}

impl RtNetlink {
    pub(crate) async fn get_link(&self, name: &str) -> Result<Option<(u32, String)>, KernelError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(m)) => {
                let l = link_state(&m);
                Ok(Some((l.index, l.kind)))
            }
            Ok(None) => Ok(None),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(nl(format!("get link {name}"))(e)),
        }
    }

    pub(crate) async fn list_links(&self) -> Result<Vec<LinkState>, KernelError> {
        let mut out = Vec::new();
        let mut links = self.handle.link().get().execute();
        while let Some(m) = links.try_next().await.map_err(nl("list links"))? {
            out.push(link_state(&m));
        }
        Ok(out)
    }

    pub(crate) async fn list_addresses(&self, index: u32) -> Result<Vec<Ipv4Net>, KernelError> {
        let mut out = Vec::new();
        let mut msgs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(m) = msgs.try_next().await.map_err(nl("list addresses"))? {
            if m.header.index != index {
                continue;
            }
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let addr = local.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = addr {
                if let Ok(n) = Ipv4Net::new(ip, m.header.prefix_len) {
                    out.push(n);
                }
            }
        }
        Ok(out)
    }

    pub(crate) async fn address_add(&self, index: u32, addr: Ipv4Net) -> Result<(), KernelError> {
        self.handle
            .address()
            .add(index, IpAddr::V4(addr.addr()), addr.prefix_len())
            .replace()
            .execute()
            .await
            .map_err(nl(format!("add address {addr}")))
    }

    pub(crate) async fn address_del(&self, index: u32, addr: Ipv4Net) -> Result<(), KernelError> {
        self.handle
            .address()
            .del(addr_message(index, addr))
            .execute()
            .await
            .map_err(nl(format!("delete address {addr}")))
    }

    pub(crate) async fn link_set(&self, index: u32, c: LinkChange) -> Result<(), KernelError> {
        let mut b = LinkUnspec::new_with_index(index);
        if let Some(mtu) = c.mtu {
            b = b.mtu(mtu);
        }
        if let Some(mac) = c.mac {
            b = b.address(mac.0.to_vec());
        }
        if c.up {
            b = b.up();
        }
        self.setlink(b.build(), format!("set link #{index} {c:?}"))
            .await
    }

    pub(crate) async fn link_no_ipv6_link_local(&self, index: u32) -> Result<(), KernelError> {
        let inet6 = AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)]);
        let b = LinkUnspec::new_with_index(index)
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![inet6]));
        self.setlink(b.build(), format!("set link #{index} addrgenmode none"))
            .await
    }

    /// RTM_SETLINK with `msg`; `what` names it in the error.
    async fn setlink(&self, msg: LinkMessage, what: String) -> Result<(), KernelError> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl(what))
    }

    pub(crate) async fn link_del(&self, index: u32) -> Result<(), KernelError> {
        let r = self.handle.link().del(index).execute().await;
        gone_ok(r, &[libc::ENODEV], format!("delete link #{index}"))
    }

    pub(crate) async fn vxlan_add(&self, l: &VxlanLink) -> Result<(), KernelError> {
        let mut b = LinkVxlan::new(&l.name, l.vni)
            .port(l.port)
            .local(l.local)
            .learning(false);
        if let Some(u) = l.underlay {
            b = b.dev(u);
        }
        let msg = b.mtu(l.mtu).address(l.mac.0.to_vec()).build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(nl(format!("create vxlan device {}", l.name)))
    }
}
