//! Building the route-table snapshot the dataplane applies, pure.
//!
//! A snapshot is always full: config, this host's lease and every peer
//! [`crate::model::peers::classify`] routes to, sorted by subnet; for vxlan also this
//! host's VTEP MAC and each peer's. [`Versioner`] stamps it with
//! (epoch, generation, etcd revision) and bumps the generation only when the
//! content changed, which is what lets the dataplane order snapshots.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use kolach_proto::dataplane::{Backend, Route, Snapshot, SnapshotVersion};

use crate::model::config::{BackendKind, NetConfig};
use crate::model::peers::Peer;
use crate::model::vtep::{self, Mac};

/// What this host contributes to its own snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
    pub iface: String,
    /// The underlay interface's MTU.
    pub underlay_mtu: u32,
    /// `--ip-masq`: the dataplane masquerades traffic leaving the Network.
    pub ip_masq: bool,
    /// `--iptables-forward-rules`: the dataplane accepts forwarding to and
    /// from the Network in the FORWARD chain.
    pub forward_rules: bool,
}

/// The overlay MTU (`KOLACH_MTU`): underlay minus the backend's overhead.
pub fn overlay_mtu(cfg: &NetConfig, underlay_mtu: u32) -> u32 {
    underlay_mtu.saturating_sub(cfg.backend.kind.overhead())
}

/// The snapshot content, without a version. `peers` are the routed ones,
/// already sorted by subnet; `blocks` are every host's routable pool blocks
/// with their holder's PublicIP, sorted: each goes with the peer (or this
/// host) of that address.
pub fn build(
    cfg: &NetConfig,
    local: &Local,
    peers: &[Peer<'_>],
    blocks: &[(Ipv4Net, Ipv4Addr)],
) -> Snapshot {
    let kind = cfg.backend.kind;
    let held_by = |ip: Ipv4Addr| -> Vec<kolach_proto::netpb::IpNetwork> {
        blocks
            .iter()
            .filter(|(_, holder)| *holder == ip)
            .map(|(b, _)| (*b).into())
            .collect()
    };
    let routes = peers
        .iter()
        .map(|p| Route {
            subnet: Some(p.lease.subnet.into()),
            public_ip: Some(p.lease.attrs.public_ip.into()),
            vtep_mac: p.vtep_mac.map(Mac::to_vec).unwrap_or_default(),
            blocks: held_by(p.lease.attrs.public_ip),
        })
        .collect();
    let local_vtep_mac = match kind {
        BackendKind::Vxlan => vtep::for_public_ip(local.public_ip).to_vec(),
        BackendKind::Udp | BackendKind::HostGw | BackendKind::Alloc | BackendKind::AwsVpc => {
            Vec::new()
        }
    };
    Snapshot {
        version: None,
        backend: Some(Backend {
            r#type: kind.to_pb() as i32,
            port: u32::from(cfg.backend.port),
            vni: cfg.backend.vni,
        }),
        network: Some(cfg.network.into()),
        local_subnet: Some(local.subnet.into()),
        public_ip: Some(local.public_ip.into()),
        iface: local.iface.clone(),
        mtu: overlay_mtu(cfg, local.underlay_mtu),
        routes,
        local_vtep_mac,
        local_blocks: held_by(local.public_ip),
        export_table: cfg.export_table,
        ip_masq: local.ip_masq,
        iptables_forward_rules: local.forward_rules,
    }
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
    use crate::model::config;
    use crate::model::lease::{Lease, LeaseAttrs};
    use crate::model::peers::classify;
    use kolach_proto::dataplane::BackendType;

    fn lease(subnet: &str, ip: &str, backend: BackendKind) -> Lease {
        let attrs = LeaseAttrs::ours(backend, ip.parse().unwrap());
        Lease {
            subnet: subnet.parse().unwrap(),
            value: attrs.to_json(),
            attrs,
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
            ip_masq: false,
            forward_rules: true,
        }
    }

    fn cfg(backend: &str) -> NetConfig {
        config::parse(
            format!(r#"{{"Network":"10.50.0.0/16","Backend":{{"Type":"{backend}"}}}}"#).as_bytes(),
        )
        .unwrap()
        .config
    }

    fn snap(c: &NetConfig, leases: &[Lease]) -> Snapshot {
        let l = local();
        let peers = classify(c.backend.kind, c.network, l.subnet, l.public_ip, leases);
        build(c, &l, &peers.routed, &[])
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
    fn blocks_go_with_their_holder() {
        let c = cfg("host-gw");
        let l = local();
        let leases = [
            lease("10.50.7.0/24", "198.18.0.2", BackendKind::HostGw),
            lease("10.50.8.0/24", "198.18.0.3", BackendKind::HostGw),
        ];
        let peers = classify(c.backend.kind, c.network, l.subnet, l.public_ip, &leases);
        let n = |s: &str| s.parse::<Ipv4Net>().unwrap();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let blocks = [
            (n("198.51.100.0/28"), ip("198.18.0.2")),
            (n("203.0.113.0/28"), ip("198.18.0.1")),
            (n("203.0.113.16/28"), ip("198.18.0.2")),
            // Held by a host with no lease routed here: not carried.
            (n("203.0.113.32/28"), ip("198.18.0.9")),
        ];
        let s = build(&c, &l, &peers.routed, &blocks);
        let nets = |v: &[kolach_proto::netpb::IpNetwork]| -> Vec<String> {
            v.iter()
                .map(|b| Ipv4Net::try_from(b).unwrap().to_string())
                .collect()
        };
        assert_eq!(
            nets(&s.routes[0].blocks),
            ["198.51.100.0/28", "203.0.113.16/28"]
        );
        assert!(s.routes[1].blocks.is_empty());
        assert_eq!(nets(&s.local_blocks), ["203.0.113.0/28"]);
    }

    #[test]
    fn udp_peers_sorted_self_excluded() {
        let c = config::parse(br#"{"Network":"10.50.0.0/16"}"#)
            .unwrap()
            .config;
        let leases = [
            lease("10.50.30.0/24", "198.18.0.3", BackendKind::Udp),
            lease("10.50.18.0/24", "198.18.0.1", BackendKind::Udp),
            lease("10.50.7.0/24", "198.18.0.2", BackendKind::Udp),
            lease("10.50.9.0/24", "198.18.0.4", BackendKind::Vxlan),
        ];
        let s = snap(&c, &leases);
        assert_eq!(subnets(&s), vec!["10.50.7.0/24", "10.50.30.0/24"]);
        assert_eq!(s.mtu, 1472);
        let b = s.backend.unwrap();
        assert_eq!(
            (b.r#type, b.port, b.vni),
            (BackendType::Udp as i32, 8285, 0)
        );
        assert_eq!(s.iface, "eth0");
        assert!(s.local_vtep_mac.is_empty());
        assert!(s.routes.iter().all(|r| r.vtep_mac.is_empty()));
        assert!(s.version.is_none());
    }

    #[test]
    fn vxlan_carries_the_local_and_peer_macs() {
        let c = cfg("vxlan");
        let leases = [
            lease("10.50.7.0/24", "198.18.0.2", BackendKind::Vxlan),
            lease("10.50.8.0/24", "198.18.0.3", BackendKind::Udp),
        ];
        let s = snap(&c, &leases);
        assert_eq!(s.mtu, 1450);
        let b = s.backend.unwrap();
        assert_eq!(
            (b.r#type, b.port, b.vni),
            (BackendType::Vxlan as i32, 8472, 1)
        );
        assert_eq!(s.local_vtep_mac, vec![0x0e, 0x6b, 198, 18, 0, 1]);
        assert_eq!(subnets(&s), vec!["10.50.7.0/24"]);
        assert_eq!(s.routes[0].vtep_mac, vec![0x0e, 0x6b, 198, 18, 0, 2]);
    }

    #[test]
    fn mtu_and_type_per_backend() {
        for (backend, wire, mtu) in [
            ("udp", BackendType::Udp, 1472),
            ("vxlan", BackendType::Vxlan, 1450),
            ("host-gw", BackendType::HostGw, 1500),
            ("alloc", BackendType::Alloc, 1500),
        ] {
            let c = cfg(backend);
            assert_eq!(overlay_mtu(&c, 1500), mtu, "{backend}");
            let s = snap(&c, &[]);
            assert_eq!(s.mtu, mtu, "{backend}");
            assert_eq!(s.backend.unwrap().r#type, wire as i32, "{backend}");
            assert_eq!(s.local_vtep_mac.is_empty(), backend != "vxlan");
        }
        // Every backend exports, to the config's table.
        for backend in ["udp", "vxlan", "host-gw", "alloc"] {
            assert_eq!(snap(&cfg(backend), &[]).export_table, 119, "{backend}");
        }
        // A tiny underlay never underflows.
        assert_eq!(overlay_mtu(&cfg("vxlan"), 40), 0);
    }

    #[test]
    fn firewall_settings_travel_in_the_snapshot() {
        let s = snap(&cfg("vxlan"), &[]);
        assert!(!s.ip_masq);
        assert!(s.iptables_forward_rules);
        let mut l = local();
        l.ip_masq = true;
        l.forward_rules = false;
        let s = build(&cfg("vxlan"), &l, &[], &[]);
        assert!(s.ip_masq);
        assert!(!s.iptables_forward_rules);
    }

    #[test]
    fn host_gw_and_alloc_route_their_own_type() {
        let leases = [
            lease("10.50.7.0/24", "198.18.0.2", BackendKind::HostGw),
            lease("10.50.8.0/24", "198.18.0.3", BackendKind::Alloc),
        ];
        let s = snap(&cfg("host-gw"), &leases);
        assert_eq!(subnets(&s), vec!["10.50.7.0/24"]);
        assert!(s.routes[0].vtep_mac.is_empty());
        assert_eq!(subnets(&snap(&cfg("alloc"), &leases)), vec!["10.50.8.0/24"]);
    }

    #[test]
    fn generation_moves_only_on_change() {
        let c = cfg("udp");
        let mut v = Versioner::new(42);
        let a = snap(&c, &[]);
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
        let peers = [lease("10.50.7.0/24", "198.18.0.2", BackendKind::Udp)];
        let s2 = v.stamp(snap(&c, &peers), 12).unwrap();
        assert_eq!(s2.version.unwrap().generation, 2);
        assert_eq!(v.generation(), 2);
        // A backend switch is a new snapshot even with no peers.
        let s3 = v.stamp(snap(&cfg("vxlan"), &[]), 12).unwrap();
        assert_eq!(s3.version.unwrap().generation, 3);
        // So is another ExportTable (applied live).
        let mut off = cfg("vxlan");
        off.export_table = 0;
        let s4 = v.stamp(snap(&off, &[]), 12).unwrap();
        assert_eq!(s4.version.unwrap().generation, 4);
        assert_eq!(s4.export_table, 0);
    }
}
