//! Reconcile, never flush: given what kolach wants in the kernel and what the
//! kernel has (kolach's objects only), the operations that turn one into the
//! other — and nothing else. Pure: no syscalls, so every case is a unit test.
//!
//! Order matters for traffic: FDB and neighbour entries are in place before the
//! route that needs them appears, a changed route is replaced in one step
//! (never deleted and added again), and deletions come last.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use ipnet::Ipv4Net;

use crate::kernel::kobjects::{
    Fdb, KRoute, LinkChange, LinkState, Mac, Neigh, VxlanLink, VXLAN_PREFIX,
};

/// One change to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Create a route; fails (and is reported) if any route to that
    /// destination exists, so a route kolach did not make is never replaced.
    AddRoute(KRoute),
    /// Replace kolach's own route to the same destination in one step.
    ReplaceRoute(KRoute),
    DelRoute(KRoute),
    /// Create or replace the neighbour entry for (dev, ip).
    SetNeigh(Neigh),
    DelNeigh(Neigh),
    /// Create the FDB entry for (dev, mac), or replace its destination.
    SetFdb(Fdb),
    DelFdb(Fdb),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let route =
            |f: &mut fmt::Formatter<'_>, verb: &str, r: &KRoute| write!(f, "{verb} route {r}");
        match self {
            Op::AddRoute(r) => route(f, "add", r),
            Op::ReplaceRoute(r) => route(f, "replace", r),
            Op::DelRoute(r) => route(f, "delete", r),
            Op::SetNeigh(n) => write!(f, "set neighbour {} lladdr {} dev #{}", n.ip, n.mac, n.dev),
            Op::DelNeigh(n) => write!(
                f,
                "delete neighbour {} lladdr {} dev #{}",
                n.ip, n.mac, n.dev
            ),
            Op::SetFdb(e) => write!(f, "set fdb {} dst {} dev #{}", e.mac, e.dst, e.dev),
            Op::DelFdb(e) => write!(f, "delete fdb {} dst {} dev #{}", e.mac, e.dst, e.dev),
        }
    }
}

/// Routes, neighbours and FDB entries: wanted, or as the kernel has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Objects {
    pub routes: Vec<KRoute>,
    pub neighs: Vec<Neigh>,
    pub fdb: Vec<Fdb>,
}

/// The operations that make `actual` equal `desired`: sets first (FDB,
/// neighbours, then routes), deletions after (routes, neighbours, FDB).
pub fn plan(desired: &Objects, actual: &Objects) -> Vec<Op> {
    let mut sets = Vec::new();
    let mut dels = Vec::new();

    // FDB, keyed by (dev, mac); one entry may list several destinations.
    let mut have: BTreeMap<(u32, Mac), Vec<Fdb>> = BTreeMap::new();
    for e in &actual.fdb {
        have.entry((e.dev, e.mac)).or_default().push(*e);
    }
    let mut fdb_dels = Vec::new();
    for d in &desired.fdb {
        match have.remove(&(d.dev, d.mac)) {
            None => sets.push(Op::SetFdb(*d)),
            Some(cur) if cur.contains(d) => {
                fdb_dels.extend(cur.into_iter().filter(|e| e != d).map(Op::DelFdb));
            }
            // Replacing rewrites the first destination; extra ones go.
            Some(cur) => {
                sets.push(Op::SetFdb(*d));
                fdb_dels.extend(cur.into_iter().skip(1).map(Op::DelFdb));
            }
        }
    }
    fdb_dels.extend(have.into_values().flatten().map(Op::DelFdb));

    // Neighbours, keyed by (dev, ip).
    let mut have: BTreeMap<_, Neigh> = actual.neighs.iter().map(|n| ((n.dev, n.ip), *n)).collect();
    for d in &desired.neighs {
        if have.remove(&(d.dev, d.ip)) != Some(*d) {
            sets.push(Op::SetNeigh(*d));
        }
    }
    let neigh_dels: Vec<Op> = have.into_values().map(Op::DelNeigh).collect();

    // Routes, keyed by destination (main table, one route per prefix).
    let mut have: BTreeMap<Ipv4Net, Vec<KRoute>> = BTreeMap::new();
    for r in &actual.routes {
        have.entry(r.dst).or_default().push(*r);
    }
    for d in &desired.routes {
        match have.remove(&d.dst) {
            None => sets.push(Op::AddRoute(*d)),
            Some(cur) if cur.contains(d) => {
                dels.extend(cur.into_iter().filter(|r| r != d).map(Op::DelRoute));
            }
            Some(cur) => {
                sets.push(Op::ReplaceRoute(*d));
                dels.extend(cur.into_iter().skip(1).map(Op::DelRoute));
            }
        }
    }
    dels.extend(have.into_values().flatten().map(Op::DelRoute));

    dels.extend(neigh_dels);
    dels.extend(fdb_dels);
    sets.extend(dels);
    sets
}

/// What to do about the vxlan device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicePlan {
    Create,
    /// A parameter that only creation sets differs: delete, then create.
    Recreate {
        index: u32,
        why: String,
    },
    /// The right device; `change` fixes MTU, MAC or state where they differ.
    Keep {
        index: u32,
        change: Option<LinkChange>,
    },
    /// A device of another kind has the name: left alone, an error.
    Foreign {
        kind: String,
    },
}

/// Compares the wanted vxlan device with the link of that name, if any.
pub fn plan_device(want: &VxlanLink, actual: Option<&LinkState>) -> DevicePlan {
    let Some(l) = actual else {
        return DevicePlan::Create;
    };
    let Some(have) = l.vxlan.filter(|_| l.kind == "vxlan") else {
        return DevicePlan::Foreign {
            kind: if l.kind.is_empty() {
                "non-vxlan".into()
            } else {
                l.kind.clone()
            },
        };
    };
    let w = want.attrs();
    let mut why = Vec::new();
    if have.vni != w.vni {
        why.push(format!("vni {} != {}", have.vni, w.vni));
    }
    if have.port != w.port {
        why.push(format!("port {} != {}", have.port, w.port));
    }
    if have.local != w.local {
        why.push(format!("local {:?} != {}", have.local, want.local));
    }
    if have.underlay != w.underlay {
        why.push(format!(
            "underlay device #{:?} != #{:?}",
            have.underlay, w.underlay
        ));
    }
    if have.learning {
        why.push("learning is on".into());
    }
    if !why.is_empty() {
        return DevicePlan::Recreate {
            index: l.index,
            why: why.join(", "),
        };
    }
    let change = LinkChange {
        mtu: (l.mtu != want.mtu).then_some(want.mtu),
        mac: (l.mac != Some(want.mac)).then_some(want.mac),
        up: !l.up,
    };
    DevicePlan::Keep {
        index: l.index,
        change: (change != LinkChange::default()).then_some(change),
    }
}

/// The addresses of a device that is to have exactly `want`: (stale ones to
/// delete first, whether `want` must be added).
pub fn plan_address(want: Ipv4Net, current: &[Ipv4Net]) -> (Vec<Ipv4Net>, bool) {
    let stale = current.iter().copied().filter(|a| *a != want).collect();
    (stale, !current.contains(&want))
}

/// kolach's devices that the wanted state does not include: every `kolach.*`
/// vxlan device except `keep_vxlan`, and the TUN `tun` unless `keep_tun`.
pub fn stale_devices<'a>(
    links: &'a [LinkState],
    keep_vxlan: Option<&str>,
    tun: &str,
    keep_tun: bool,
) -> Vec<&'a LinkState> {
    let mut seen = HashSet::new();
    links
        .iter()
        .filter(|l| {
            let vxlan = l.kind == "vxlan"
                && l.name.starts_with(VXLAN_PREFIX)
                && Some(l.name.as_str()) != keep_vxlan;
            let old_tun = !keep_tun && l.kind == "tun" && l.name == tun;
            (vxlan || old_tun) && seen.insert(l.index)
        })
        .collect()
}

#[cfg(test)]
mod tests;
