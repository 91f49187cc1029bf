//! Plain records built from the proto replies: what the tables print and what
//! `--json` emits. Addresses become strings only here, at the edge.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use kolach_proto::control::{ControlStatus, Lease};
use kolach_proto::dataplane::{Binary as BinaryPb, DataplaneStatus, Route, SnapshotVersion};
use kolach_proto::netpb::{IpAddress, IpNetwork};
use kolach_proto::BackendKind;
use serde::Serialize;

use crate::aws_view::Aws;

pub fn addr(a: &Option<IpAddress>) -> Option<String> {
    a.as_ref()
        .and_then(|a| IpAddr::try_from(a).ok())
        .map(|ip| ip.to_string())
}

pub fn net(n: &Option<IpNetwork>) -> Option<String> {
    n.as_ref()
        .and_then(|n| IpNet::try_from(n).ok())
        .map(|n| n.to_string())
}

fn mac(bytes: &[u8]) -> Option<String> {
    (bytes.len() == 6).then(|| {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    })
}

#[derive(Serialize, Debug, Clone, Copy)]
pub struct Version {
    pub epoch: u64,
    pub generation: u64,
    pub etcd_revision: i64,
}

impl From<&SnapshotVersion> for Version {
    fn from(v: &SnapshotVersion) -> Self {
        Version {
            epoch: v.epoch,
            generation: v.generation,
            etcd_revision: v.etcd_revision,
        }
    }
}

#[derive(Serialize, Debug)]
pub struct Controld {
    pub pid: u32,
    pub version: String,
    pub start_time_unix: i64,
    pub phase: String,
    pub subnet: Option<String>,
    pub public_ip: Option<String>,
    pub iface: String,
    pub backend: String,
    pub network: Option<String>,
    pub mtu: u32,
    pub reservation: bool,
    pub lease_ttl_seconds: i64,
    pub etcd_endpoints: Vec<String>,
    pub etcd_reachable: bool,
    pub watched_revision: i64,
    pub dataplane_connected: bool,
    pub epoch: u64,
    pub generation: u64,
    pub applied_generation: u64,
    pub peer_count: u32,
    pub config_error: Option<String>,
    pub subnet_file: String,
    pub warnings: Vec<String>,
    /// Present while the backend is aws-vpc.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws: Option<Aws>,
}

impl From<ControlStatus> for Controld {
    fn from(s: ControlStatus) -> Self {
        Controld {
            pid: s.pid,
            start_time_unix: s.start_time_unix,
            subnet: net(&s.subnet),
            public_ip: addr(&s.public_ip),
            network: net(&s.network),
            config_error: (!s.config_error.is_empty()).then_some(s.config_error),
            version: s.version,
            phase: s.phase,
            iface: s.iface,
            backend: s.backend,
            mtu: s.mtu,
            reservation: s.reservation,
            lease_ttl_seconds: s.lease_ttl_seconds,
            etcd_endpoints: s.etcd_endpoints,
            etcd_reachable: s.etcd_reachable,
            watched_revision: s.watched_revision,
            dataplane_connected: s.dataplane_connected,
            epoch: s.epoch,
            generation: s.generation,
            applied_generation: s.applied_generation,
            peer_count: s.peer_count,
            subnet_file: s.subnet_file,
            warnings: s.warnings,
            aws: s.aws.map(Aws::from),
        }
    }
}

#[derive(Serialize, Debug, Default)]
pub struct Counters {
    pub tun_rx_packets: u64,
    pub tun_rx_bytes: u64,
    pub udp_tx_packets: u64,
    pub udp_tx_bytes: u64,
    pub udp_rx_packets: u64,
    pub udp_rx_bytes: u64,
    pub tun_tx_packets: u64,
    pub tun_tx_bytes: u64,
    pub icmp_unreachable_sent: u64,
    pub dropped: BTreeMap<String, u64>,
}

#[derive(Serialize, Debug)]
pub struct Dataplane {
    pub pid: u32,
    pub version: String,
    pub start_time_unix: i64,
    pub upgrades: u32,
    pub has_snapshot: bool,
    pub applied_version: Option<Version>,
    pub applied_at_unix: i64,
    /// How long the applied snapshot took to apply (absent from an older
    /// dataplane).
    pub last_apply_us: Option<u64>,
    pub backend: Option<String>,
    pub port: Option<u32>,
    pub vni: Option<u32>,
    pub route_count: u32,
    pub device: String,
    pub mtu: u32,
    pub local_subnet: Option<String>,
    pub public_ip: Option<String>,
    pub mode: String,
    pub counters: Counters,
    pub errors: Vec<String>,
    pub binary: Option<Binary>,
    /// When the running binary took over in a hot upgrade.
    pub upgraded_at_unix: Option<i64>,
    /// How long the packet loop paused in that handover.
    pub handover_pause_us: Option<u64>,
    /// Why the last hot upgrade attempt failed (the old binary kept running).
    pub upgrade_error: Option<String>,
    /// The routing table this host's subnet and blocks are exported to
    /// (ExportTable); 0: none.
    pub export_table: u32,
    /// What kolach keeps in the host firewall (controld --ip-masq,
    /// --iptables-forward-rules); None before a snapshot, or from a
    /// dataplane older than the field.
    pub firewall: Option<Firewall>,
}

/// The host firewall as the applied snapshot asks for it.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Firewall {
    pub ip_masq: bool,
    /// nftables family and table: "ip kolach".
    pub masq_table: String,
    pub forward_rules: bool,
    /// iptables chain (filter table): "FORWARD".
    pub forward_chain: String,
}

impl Firewall {
    /// `masquerade on (table ip kolach), forward rules on (FORWARD chain)`.
    pub fn line(&self) -> String {
        let on = |b: bool| if b { "on" } else { "off" };
        format!(
            "masquerade {} (table {}), forward rules {} ({} chain)",
            on(self.ip_masq),
            self.masq_table,
            on(self.forward_rules),
            self.forward_chain
        )
    }
}

/// The executable a daemon runs.
#[derive(Serialize, Debug, Clone)]
pub struct Binary {
    pub path: String,
    pub device: u64,
    pub inode: u64,
    pub size: u64,
    pub mtime_unix: i64,
    /// The file at `path` is not the one running any more.
    pub changed_on_disk: bool,
}

impl From<BinaryPb> for Binary {
    fn from(b: BinaryPb) -> Self {
        Binary {
            path: b.path,
            device: b.device,
            inode: b.inode,
            size: b.size,
            mtime_unix: b.mtime_unix,
            changed_on_disk: b.changed_on_disk,
        }
    }
}

/// "125.8 MB", "512 B".
pub fn size(bytes: u64) -> String {
    if bytes < 1000 {
        format!("{bytes} B")
    } else if bytes < 1_000_000 {
        format!("{:.1} kB", bytes as f64 / 1e3)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

fn backend_name(t: i32) -> String {
    BackendKind::from_pb(t)
        .map(|b| b.as_str().to_string())
        .unwrap_or_else(|| format!("unknown({t})"))
}

impl From<DataplaneStatus> for Dataplane {
    fn from(s: DataplaneStatus) -> Self {
        let c = s.counters.unwrap_or_default();
        let backend = s.backend.as_ref();
        Dataplane {
            pid: s.pid,
            start_time_unix: s.start_time_unix,
            upgrades: s.upgrades,
            has_snapshot: s.has_snapshot,
            applied_version: s.applied_version.as_ref().map(Version::from),
            applied_at_unix: s.applied_at_unix,
            last_apply_us: (s.last_apply_us != 0).then_some(s.last_apply_us),
            backend: backend.map(|b| backend_name(b.r#type)),
            port: backend.map(|b| b.port).filter(|p| *p != 0),
            vni: backend.map(|b| b.vni).filter(|v| *v != 0),
            route_count: s.route_count,
            local_subnet: net(&s.local_subnet),
            public_ip: addr(&s.public_ip),
            version: s.version,
            device: s.device,
            mtu: s.mtu,
            mode: s.mode,
            errors: s.errors,
            binary: s.binary.map(Binary::from),
            upgraded_at_unix: (s.upgraded_at_unix != 0).then_some(s.upgraded_at_unix),
            handover_pause_us: (s.upgraded_at_unix != 0).then_some(s.handover_pause_us),
            upgrade_error: (!s.upgrade_error.is_empty()).then_some(s.upgrade_error),
            export_table: s.export_table,
            firewall: s.firewall.map(|f| Firewall {
                ip_masq: f.ip_masq,
                masq_table: f.masq_table,
                forward_rules: f.forward_rules,
                forward_chain: f.forward_chain,
            }),
            counters: Counters {
                tun_rx_packets: c.tun_rx_packets,
                tun_rx_bytes: c.tun_rx_bytes,
                udp_tx_packets: c.udp_tx_packets,
                udp_tx_bytes: c.udp_tx_bytes,
                udp_rx_packets: c.udp_rx_packets,
                udp_rx_bytes: c.udp_rx_bytes,
                tun_tx_packets: c.tun_tx_packets,
                tun_tx_bytes: c.tun_tx_bytes,
                icmp_unreachable_sent: c.icmp_unreachable_sent,
                dropped: c.dropped.into_iter().collect(),
            },
        }
    }
}

#[derive(Serialize, Debug)]
pub struct LeaseRow {
    pub subnet: Option<String>,
    pub public_ip: Option<String>,
    pub backend: String,
    /// Seconds until the etcd lease expires; absent for a reservation.
    pub expires_in_seconds: Option<i64>,
    pub reservation: bool,
    #[serde(rename = "self")]
    pub is_self: bool,
    pub backend_data: Option<serde_json::Value>,
}

impl From<Lease> for LeaseRow {
    fn from(l: Lease) -> Self {
        LeaseRow {
            subnet: net(&l.subnet),
            public_ip: addr(&l.public_ip),
            backend: l.backend_type,
            expires_in_seconds: (!l.reservation).then_some(l.expires_in_seconds),
            reservation: l.reservation,
            is_self: l.is_self,
            backend_data: serde_json::from_str(&l.backend_data)
                .ok()
                .filter(|v: &serde_json::Value| !v.is_null()),
        }
    }
}

#[derive(Serialize, Debug)]
pub struct RouteRow {
    pub subnet: Option<String>,
    pub public_ip: Option<String>,
    pub vtep_mac: Option<String>,
    /// The peer's pool blocks, routed like its subnet.
    pub blocks: Vec<String>,
}

impl From<Route> for RouteRow {
    fn from(r: Route) -> Self {
        RouteRow {
            subnet: net(&r.subnet),
            public_ip: addr(&r.public_ip),
            vtep_mac: mac(&r.vtep_mac),
            blocks: r.blocks.into_iter().filter_map(|b| net(&Some(b))).collect(),
        }
    }
}

/// "1h02m", "3d4h", "45s": how long, for people.
pub fn duration(secs: i64) -> String {
    if secs < 0 {
        return "-".into();
    }
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(125), "2m05s");
        assert_eq!(duration(3720), "1h02m");
        assert_eq!(duration(86400 * 3 + 3600 * 4), "3d4h");
        assert_eq!(duration(-1), "-");
    }

    #[test]
    fn lease_rows_hide_reservation_expiry_and_null_data() {
        let row = LeaseRow::from(Lease {
            subnet: Some("10.50.7.0/24".parse::<IpNet>().unwrap().into()),
            public_ip: Some("198.18.0.2".parse::<IpAddr>().unwrap().into()),
            backend_type: "udp".into(),
            expires_in_seconds: -1,
            reservation: true,
            is_self: false,
            backend_data: "null".into(),
        });
        assert_eq!(row.subnet.as_deref(), Some("10.50.7.0/24"));
        assert_eq!(row.expires_in_seconds, None);
        assert!(row.backend_data.is_none());
    }

    #[test]
    fn route_rows_carry_the_peer_blocks() {
        let n = |s: &str| s.parse::<IpNet>().unwrap().into();
        let row = RouteRow::from(Route {
            subnet: Some(n("10.50.7.0/24")),
            public_ip: Some("198.18.0.2".parse::<IpAddr>().unwrap().into()),
            vtep_mac: vec![],
            blocks: vec![n("203.0.113.0/28"), n("203.0.113.32/28")],
        });
        assert_eq!(row.subnet.as_deref(), Some("10.50.7.0/24"));
        assert_eq!(row.vtep_mac, None);
        assert_eq!(row.blocks, ["203.0.113.0/28", "203.0.113.32/28"]);
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(
            json["blocks"],
            serde_json::json!(["203.0.113.0/28", "203.0.113.32/28"])
        );
        assert_eq!(
            RouteRow::from(Route::default()).blocks,
            Vec::<String>::new()
        );
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(2_500), "2.5 kB");
        assert_eq!(size(125_837_192), "125.8 MB");
    }

    #[test]
    fn macs_need_six_bytes() {
        assert_eq!(
            mac(&[0xaa, 0xbb, 0, 1, 2, 0xff]).unwrap(),
            "aa:bb:00:01:02:ff"
        );
        assert_eq!(mac(&[]), None);
    }
}
