//! Building the route-table snapshot the dataplane applies, pure.
//!
//! A snapshot is always full: config, this host's lease and every peer lease
//! of the configured backend, sorted by subnet. [`Versioner`] stamps it with
//! (epoch, generation, etcd revision) and bumps the generation only when the
//! content changed, which is what lets the dataplane order snapshots.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use kolach_proto::dataplane::{Backend, BackendType, Route, Snapshot, SnapshotVersion};

use crate::config::{BackendKind, NetConfig};
use crate::lease::Lease;

/// What this host contributes to its own snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
    pub iface: String,
    /// The underlay interface's MTU.
    pub underlay_mtu: u32,
}

/// The overlay MTU (`KOLACH_MTU`): underlay minus the backend's overhead.
pub fn overlay_mtu(cfg: &NetConfig, underlay_mtu: u32) -> u32 {
    underlay_mtu.saturating_sub(cfg.backend.kind.overhead())
}

fn wire_type(kind: BackendKind) -> BackendType {
    match kind {
        BackendKind::Udp => BackendType::Udp,
        BackendKind::Vxlan => BackendType::Vxlan,
        BackendKind::HostGw => BackendType::HostGw,
        BackendKind::Alloc => BackendType::Alloc,
    }
}

/// The snapshot content, without a version.
pub fn build<'a>(
    cfg: &NetConfig,
    local: &Local,
    leases: impl IntoIterator<Item = &'a Lease>,
) -> Snapshot {
    let kind = cfg.backend.kind;
    let mut peers: Vec<&Lease> = leases
        .into_iter()
        .filter(|l| l.subnet != local.subnet && l.attrs.public_ip != local.public_ip)
        .filter(|l| BackendKind::parse(&l.attrs.backend_type) == Some(kind))
        .filter(|l| cfg.network.contains(&l.subnet))
        .collect();
    peers.sort_by_key(|l| l.subnet);
    let routes = peers
        .into_iter()
        .map(|l| Route {
            subnet: Some(l.subnet.into()),
            public_ip: Some(l.attrs.public_ip.into()),
            vtep_mac: vtep_mac(l).map(|m| m.to_vec()).unwrap_or_default(),
        })
        .collect();
    Snapshot {
        version: None,
        backend: Some(Backend {
            r#type: wire_type(kind) as i32,
            port: u32::from(cfg.backend.port),
            vni: cfg.backend.vni,
        }),
        network: Some(cfg.network.into()),
        local_subnet: Some(local.subnet.into()),
        public_ip: Some(local.public_ip.into()),
        iface: local.iface.clone(),
        mtu: overlay_mtu(cfg, local.underlay_mtu),
        routes,
        local_vtep_mac: Vec::new(),
    }
}

/// A vxlan peer's `BackendData.VtepMAC` ("aa:bb:cc:dd:ee:ff"), if present and
/// well formed.
fn vtep_mac(l: &Lease) -> Option<[u8; 6]> {
    let s = l.attrs.backend_data.as_ref()?.get("VtepMAC")?.as_str()?;
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Stamps snapshots: generation 1 for the first, +1 for each that differs
/// from the one before.
#[derive(Debug, Clone)]
pub struct Versioner {
    epoch: u64,
    generation: u64,
    last: Option<Snapshot>,
}

impl Versioner {
    pub fn new(epoch: u64) -> Self {
        Versioner {
            epoch,
            generation: 0,
            last: None,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Returns the stamped snapshot when `content` differs from the last one,
    /// `None` when nothing changed.
    pub fn stamp(&mut self, content: Snapshot, etcd_revision: i64) -> Option<Snapshot> {
        if self.last.as_ref() == Some(&content) {
            return None;
        }
        self.generation += 1;
        self.last = Some(content.clone());
        Some(Snapshot {
            version: Some(SnapshotVersion {
                epoch: self.epoch,
                generation: self.generation,
                etcd_revision,
            }),
            ..content
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::lease::LeaseAttrs;
    use serde_json::json;

    fn lease(subnet: &str, ip: &str, backend: &str) -> Lease {
        Lease {
            subnet: subnet.parse().unwrap(),
            attrs: LeaseAttrs::new(ip.parse().unwrap(), backend),
            lease_id: 1,
            mod_revision: 1,
            create_revision: 1,
        }
    }

    fn local() -> Local {
        Local {
            subnet: "10.50.18.0/24".parse().unwrap(),
            public_ip: "198.18.0.1".parse().unwrap(),
            iface: "eth0".into(),
            underlay_mtu: 1500,
        }
    }

    fn subnets(s: &Snapshot) -> Vec<String> {
        s.routes
            .iter()
            .map(|r| {
                Ipv4Net::try_from(r.subnet.as_ref().unwrap())
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn peers_of_my_backend_sorted_self_excluded() {
        let c = config::parse(br#"{"Network":"10.50.0.0/16"}"#)
            .unwrap()
            .config;
        let leases = [
            lease("10.50.30.0/24", "198.18.0.3", "udp"),
            lease("10.50.18.0/24", "198.18.0.1", "udp"),
            lease("10.50.7.0/24", "198.18.0.2", "udp"),
            lease("10.50.9.0/24", "198.18.0.4", "vxlan"),
            lease("10.50.10.0/24", "198.18.0.1", "udp"),
            lease("10.60.1.0/24", "198.18.0.5", "udp"),
        ];
        let s = build(&c, &local(), &leases);
        assert_eq!(subnets(&s), vec!["10.50.7.0/24", "10.50.30.0/24"]);
        assert_eq!(s.mtu, 1472);
        let b = s.backend.unwrap();
        assert_eq!(
            (b.r#type, b.port, b.vni),
            (BackendType::Udp as i32, 8285, 0)
        );
        assert_eq!(s.iface, "eth0");
        assert!(s.version.is_none());
    }

    #[test]
    fn vxlan_routes_carry_the_vtep_mac() {
        let c = config::parse(br#"{"Network":"10.50.0.0/16","Backend":{"Type":"vxlan"}}"#)
            .unwrap()
            .config;
        let mut l = lease("10.50.7.0/24", "198.18.0.2", "vxlan");
        l.attrs.backend_data = Some(json!({"VtepMAC":"aa:bb:cc:dd:ee:0f"}));
        let s = build(&c, &local(), [&l]);
        assert_eq!(s.mtu, 1450);
        assert_eq!(
            s.routes[0].vtep_mac,
            vec![0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x0f]
        );
        l.attrs.backend_data = Some(json!({"VtepMAC":"nonsense"}));
        assert!(build(&c, &local(), [&l]).routes[0].vtep_mac.is_empty());
    }

    #[test]
    fn generation_moves_only_on_change() {
        let c = config::parse(br#"{"Network":"10.50.0.0/16"}"#)
            .unwrap()
            .config;
        let mut v = Versioner::new(42);
        let a = build(&c, &local(), &[]);
        let s1 = v.stamp(a.clone(), 10).unwrap();
        assert_eq!(
            s1.version.unwrap(),
            SnapshotVersion {
                epoch: 42,
                generation: 1,
                etcd_revision: 10
            }
        );
        assert!(v.stamp(a, 11).is_none());
        let peers = [lease("10.50.7.0/24", "198.18.0.2", "udp")];
        let s2 = v.stamp(build(&c, &local(), &peers), 12).unwrap();
        assert_eq!(s2.version.unwrap().generation, 2);
        assert_eq!(v.generation(), 2);
    }
}
