//! Making the kernel hold exactly what a backend wants of kolach's objects:
//! reads them through the [`Kernel`] seam, asks [`reconcile`] for the
//! difference and carries it out. Every backend ends its apply here, so a
//! backend switch removes the previous backend's objects (the TUN, a
//! `kolach.*` vxlan device, proto-107 routes) and a restart with the same
//! snapshot changes nothing.
//!
//! Device problems fail the apply; a single route, neighbour or FDB entry that
//! the kernel refuses is reported (log + status errors) and the rest goes on.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::kernel::kobjects::{Fdb, KRoute, LinkChange, LinkState, Mac, Neigh, VxlanLink};
use crate::kernel::reconcile::{self, DevicePlan, Objects, Op};
use crate::kernel::{Kernel, KernelError};

/// What a backend wants of kolach's kernel objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The udp backend's TUN device, and whether it stays.
    pub tun: String,
    pub keep_tun: bool,
    pub vxlan: Option<VxlanWish>,
    /// Routes not over the vxlan device (host-gw; udp's pool block routes
    /// into the TUN).
    pub routes: Vec<KRoute>,
}

impl Desired {
    /// Nothing of kolach's in the kernel except, if `keep_tun`, the TUN.
    pub fn only_tun(tun: &str, keep_tun: bool) -> Desired {
        Desired {
            tun: tun.to_string(),
            keep_tun,
            vxlan: None,
            routes: Vec::new(),
        }
    }
}

/// The vxlan device and its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanWish {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub local: Ipv4Addr,
    /// The underlay interface name (`dev`), if any.
    pub underlay: Option<String>,
    pub mtu: u32,
    pub mac: Mac,
    /// `<local subnet>.0/32`.
    pub address: Ipv4Net,
    pub peers: Vec<VxlanPeer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanPeer {
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
    pub mac: Mac,
    /// The peer's pool blocks.
    pub blocks: Vec<Ipv4Net>,
}

/// Per peer on device `dev`: route `<subnet> via <subnet>.0 onlink`, the same
/// for each of its blocks (`<block> via <subnet>.0 onlink`: the neighbour and
/// FDB entry below serve them too), neighbour `<subnet>.0 lladdr <mac>`, FDB
/// `<mac> dst <PublicIP>`.
pub fn peer_objects(dev: u32, peers: &[VxlanPeer]) -> Objects {
    let mut o = Objects::default();
    for p in peers {
        let gw = p.subnet.network();
        for dst in std::iter::once(p.subnet).chain(p.blocks.iter().copied()) {
            o.routes.push(KRoute {
                dst,
                via: gw,
                oif: dev,
                onlink: true,
            });
        }
        o.neighs.push(Neigh {
            dev,
            ip: gw,
            mac: p.mac,
        });
        o.fdb.push(Fdb {
            dev,
            mac: p.mac,
            dst: p.public_ip,
        });
    }
    o
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{what}: {source}")]
    Kernel { what: String, source: KernelError },
    #[error("underlay interface {0} does not exist")]
    NoIface(String),
    #[error("{name} exists and is a {kind} device, not a vxlan device; left alone")]
    Foreign { name: String, kind: String },
}

fn kerr(what: impl Into<String>) -> impl FnOnce(KernelError) -> SyncError {
    let what = what.into();
    move |source| SyncError::Kernel { what, source }
}

/// What one sync did: how many kernel changes, and what could not be done.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub changes: usize,
    pub errors: Vec<String>,
}

/// Makes the kernel match `d`; see the module doc for what fails the call.
pub async fn sync(k: &dyn Kernel, d: &Desired) -> Result<Report, SyncError> {
    let mut report = Report::default();
    let links = k.links().await.map_err(kerr("listing links"))?;
    let mut names: HashMap<u32, String> = links.iter().map(|l| (l.index, l.name.clone())).collect();
    let mut want = Objects {
        routes: d.routes.clone(),
        ..Default::default()
    };
    let mut have = Objects::default();
    if let Some(v) = &d.vxlan {
        let dev = ensure_vxlan(k, v, &links, &mut report).await?;
        names.insert(dev, v.name.clone());
        let peers = peer_objects(dev, &v.peers);
        want.routes.extend(peers.routes);
        want.neighs = peers.neighs;
        want.fdb = peers.fdb;
        have.neighs = k
            .neighbours(dev)
            .await
            .map_err(kerr("listing neighbours"))?;
        have.fdb = k.fdb(dev).await.map_err(kerr("listing fdb"))?;
    }
    // Read after the device step: a recreated device took its routes along.
    have.routes = k.routes().await.map_err(kerr("listing routes"))?;
    let ops = reconcile::plan(&want, &have);
    for op in ops {
        let text = describe(&op, &names);
        match run(k, op).await {
            Ok(()) => {
                report.changes += 1;
                tracing::info!(op = %text, "kernel updated");
            }
            Err(e) => {
                let msg = match op {
                    Op::AddRoute(r) if e.errno() == Some(libc::EEXIST) => format!(
                        "a route to {} exists that kolach did not make (not proto 107); left alone",
                        r.dst
                    ),
                    _ => format!("{text}: {e}"),
                };
                tracing::warn!(op = %text, error = %e, "kernel refused a change");
                report.errors.push(msg);
            }
        }
    }
    let keep = d.vxlan.as_ref().map(|v| v.name.as_str());
    for l in reconcile::stale_devices(&links, keep, &d.tun, d.keep_tun) {
        match k.delete_link(l.index).await {
            Ok(()) => {
                report.changes += 1;
                tracing::info!(device = %l.name, kind = %l.kind, "removed device of a previous backend");
            }
            Err(e) => {
                tracing::warn!(device = %l.name, error = %e, "cannot remove old device");
                report.errors.push(format!("removing {}: {e}", l.name));
            }
        }
    }
    Ok(report)
}

fn describe(op: &Op, names: &HashMap<u32, String>) -> String {
    let dev = match op {
        Op::AddRoute(r) | Op::ReplaceRoute(r) | Op::DelRoute(r) => r.oif,
        Op::SetNeigh(n) | Op::DelNeigh(n) => n.dev,
        Op::SetFdb(e) | Op::DelFdb(e) => e.dev,
    };
    let text = op.to_string();
    match names.get(&dev) {
        Some(name) => text.replace(&format!("dev #{dev}"), &format!("dev {name}")),
        None => text,
    }
}

async fn run(k: &dyn Kernel, op: Op) -> Result<(), KernelError> {
    match op {
        Op::AddRoute(r) => k.add_route(r, false).await,
        Op::ReplaceRoute(r) => k.add_route(r, true).await,
        Op::DelRoute(r) => k.del_route(r).await,
        Op::SetNeigh(n) => k.set_neighbour(n).await,
        Op::DelNeigh(n) => k.del_neighbour(n).await,
        Op::SetFdb(e) => k.set_fdb(e).await,
        Op::DelFdb(e) => k.del_fdb(e).await,
    }
}

/// Creates or fixes the vxlan device; returns its index.
async fn ensure_vxlan(
    k: &dyn Kernel,
    v: &VxlanWish,
    links: &[LinkState],
    report: &mut Report,
) -> Result<u32, SyncError> {
    let underlay = match &v.underlay {
        None => None,
        Some(n) => Some(
            links
                .iter()
                .find(|l| l.name == *n)
                .ok_or_else(|| SyncError::NoIface(n.clone()))?
                .index,
        ),
    };
    let link = VxlanLink {
        name: v.name.clone(),
        vni: v.vni,
        port: v.port,
        local: v.local,
        underlay,
        mtu: v.mtu,
        mac: v.mac,
    };
    match reconcile::plan_device(&link, links.iter().find(|l| l.name == v.name)) {
        DevicePlan::Foreign { kind } => Err(SyncError::Foreign {
            name: v.name.clone(),
            kind,
        }),
        DevicePlan::Keep { index, change } => {
            report.changes += set_address(k, index, v).await?;
            if let Some(c) = change {
                k.set_link(index, c)
                    .await
                    .map_err(kerr(format!("configuring {}", v.name)))?;
                report.changes += 1;
                tracing::info!(device = %v.name, change = ?c, "vxlan device adjusted");
            }
            Ok(index)
        }
        DevicePlan::Recreate { index, why } => {
            tracing::info!(device = %v.name, why = %why, "recreating vxlan device");
            k.delete_link(index)
                .await
                .map_err(kerr(format!("deleting {}", v.name)))?;
            report.changes += 1;
            create(k, &link, v, report).await
        }
        DevicePlan::Create => create(k, &link, v, report).await,
    }
}

async fn create(
    k: &dyn Kernel,
    link: &VxlanLink,
    v: &VxlanWish,
    report: &mut Report,
) -> Result<u32, SyncError> {
    let what = || format!("creating {}", v.name);
    k.create_vxlan(link).await.map_err(|source| {
        let hint = match source.errno() {
            Some(libc::EOPNOTSUPP) => " (no vxlan support in this kernel? modprobe vxlan)",
            Some(libc::EEXIST) => {
                " (another vxlan device already uses this VNI and port, e.g. flannel.1?)"
            }
            _ => "",
        };
        SyncError::Kernel {
            what: format!("{}{hint}", what()),
            source,
        }
    })?;
    let (index, _) = k
        .link(&v.name)
        .await
        .map_err(kerr(what()))?
        .ok_or_else(|| SyncError::Kernel {
            what: what(),
            source: KernelError::NoDevice(v.name.clone()),
        })?;
    report.changes += 1 + set_address(k, index, v).await?;
    let up = LinkChange {
        up: true,
        ..Default::default()
    };
    k.set_link(index, up).await.map_err(kerr(what()))?;
    tracing::info!(device = %v.name, vni = v.vni, port = v.port, local = %v.local,
        mac = %v.mac, mtu = v.mtu, "vxlan device created");
    Ok(index)
}

/// Gives the device exactly its one address; returns the number of changes.
async fn set_address(k: &dyn Kernel, index: u32, v: &VxlanWish) -> Result<usize, SyncError> {
    let what = || format!("address of {}", v.name);
    let current = k.ipv4_addresses(index).await.map_err(kerr(what()))?;
    let (stale, missing) = reconcile::plan_address(v.address, &current);
    let mut n = 0;
    for old in stale {
        k.del_address(index, old).await.map_err(kerr(what()))?;
        n += 1;
    }
    if missing {
        k.add_address(index, v.address)
            .await
            .map_err(kerr(what()))?;
        n += 1;
    }
    Ok(n)
}
