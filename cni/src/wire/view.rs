//! What the kernel shows, as plain values, and the decisions taken on them
//! without a syscall: whether an existing veth can be reused ([`plan`]) and
//! whether a pod's wiring is what ADD made ([`check`]).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use kolach_proto::Mac;

use super::{POD_ROUTE_PROTO, RT_TABLE_MAIN};
use crate::result::GATEWAY;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<Mac>,
    pub mtu: u32,
    pub up: bool,
    pub veth: bool,
    /// For a veth: the peer's index, in the peer's namespace.
    pub peer: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub link_scope: bool,
    pub protocol: u8,
    pub table: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: Ipv4Addr,
    pub mac: Option<Mac>,
    pub permanent: bool,
}

/// Whether two links are the two ends of one veth pair.
pub fn paired(host: &Link, pod: &Link) -> bool {
    host.veth && pod.veth && host.peer == Some(pod.index) && pod.peer == Some(host.index)
}

/// What ADD does about the links it finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing there: make the pair.
    Create,
    /// The pair from an earlier ADD: keep it, re-apply addresses and routes.
    Reuse,
    /// A host end whose peer is not our pod end (a leftover): delete, then make.
    Replace,
    /// The pod already has CNI_IFNAME, and it is not ours: refuse.
    Conflict,
}

pub fn plan(host: Option<&Link>, pod: Option<&Link>) -> Plan {
    match (host, pod) {
        (Some(h), Some(p)) if paired(h, p) => Plan::Reuse,
        (_, Some(_)) => Plan::Conflict,
        (Some(_), None) => Plan::Replace,
        (None, None) => Plan::Create,
    }
}

/// The host side as CHECK reads it.
#[derive(Debug, Clone, Default)]
pub struct HostView {
    pub link: Option<Link>,
    pub routes: Vec<Route>,
}

/// The pod side as CHECK reads it.
#[derive(Debug, Clone, Default)]
pub struct PodView {
    pub link: Option<Link>,
    pub addresses: Vec<Ipv4Net>,
    pub routes: Vec<Route>,
    pub neighbours: Vec<Neighbour>,
}

/// What the pod of one attachment should have.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub host_end: &'a str,
    pub ifname: &'a str,
    pub netns: &'a str,
    pub address: Ipv4Addr,
}

fn main_route<'r>(
    routes: &'r [Route],
    dst: Ipv4Net,
    oif: u32,
) -> impl Iterator<Item = &'r Route> + 'r {
    routes
        .iter()
        .filter(move |r| r.table == RT_TABLE_MAIN && r.dst == dst && r.oif == Some(oif))
}

/// The first way the wiring differs from what ADD makes, as a sentence.
pub fn check(e: &Expected<'_>, host: &HostView, pod: &PodView) -> Result<(), String> {
    let addr = Ipv4Net::new(e.address, 32).expect("/32");
    let (h, ifn, ns) = (e.host_end, e.ifname, e.netns);
    let Some(hl) = &host.link else {
        return Err(format!("host end {h} is missing"));
    };
    if !hl.up {
        return Err(format!("host end {h} is down"));
    }
    let host_route = main_route(&host.routes, addr, hl.index)
        .any(|r| r.link_scope && r.gateway.is_none() && r.protocol == POD_ROUTE_PROTO);
    if !host_route {
        return Err(format!(
            "the host has no route {addr} dev {h} scope link proto {POD_ROUTE_PROTO}"
        ));
    }
    let Some(pl) = &pod.link else {
        return Err(format!("{ifn} is missing in {ns}"));
    };
    if !paired(hl, pl) {
        return Err(format!("{ifn} in {ns} is not the peer of host end {h}"));
    }
    if !pl.up {
        return Err(format!("{ifn} in {ns} is down"));
    }
    if !pod.addresses.contains(&addr) {
        return Err(format!("{ifn} in {ns} does not hold {addr}"));
    }
    let gw = Ipv4Net::new(GATEWAY, 32).expect("/32");
    if !main_route(&pod.routes, gw, pl.index).any(|r| r.link_scope && r.gateway.is_none()) {
        return Err(format!("{ns} has no route {GATEWAY} dev {ifn} scope link"));
    }
    let default = Ipv4Net::default();
    if !main_route(&pod.routes, default, pl.index).any(|r| r.gateway == Some(GATEWAY)) {
        return Err(format!("{ns} has no route default via {GATEWAY} dev {ifn}"));
    }
    let want_mac = hl.mac;
    let neigh_ok = pod
        .neighbours
        .iter()
        .any(|n| n.ip == GATEWAY && n.permanent && n.mac.is_some() && n.mac == want_mac);
    if !neigh_ok {
        let mac = want_mac.map(|m| m.to_string()).unwrap_or_default();
        return Err(format!(
            "{ns} has no permanent neighbour {GATEWAY} lladdr {mac} on {ifn}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
