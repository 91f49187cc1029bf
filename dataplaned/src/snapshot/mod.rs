//! Snapshots at the edge: validating a received `Snapshot` into typed values
//! (the ordering rule is in `ordering.rs`).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use kolach_proto::dataplane::{self as pb, BackendType};
use kolach_proto::net::NetError;

use kolach_packet::forward::ForwardTable;
use kolach_packet::routes::RouteTable;
use kolach_proto::Mac;
pub use ordering::{decide, Decision, Version};

pub mod ordering;

pub const DEFAULT_UDP_PORT: u16 = 8285;
pub const DEFAULT_VXLAN_PORT: u16 = 8472;
pub const DEFAULT_VNI: u32 = 1;
/// VNIs are 24 bits.
const MAX_VNI: u32 = (1 << 24) - 1;
/// The smallest MTU an IPv4 link may have (RFC 791).
const MIN_MTU: u32 = 68;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0} is missing")]
    Missing(String),
    #[error("{field}: {source}")]
    Address { field: String, source: NetError },
    #[error("{field}: {why}")]
    Invalid { field: String, why: String },
}

fn invalid(field: impl Into<String>, why: impl Into<String>) -> SnapshotError {
    SnapshotError::Invalid {
        field: field.into(),
        why: why.into(),
    }
}

pub use kolach_proto::BackendKind;

/// One peer lease: its subnet, underlay address, (vxlan) VTEP MAC and the
/// pool blocks it holds (DESIGN §10), routed like its subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
    pub vtep_mac: Option<Mac>,
    /// Outside the Network, disjoint from every other block.
    pub blocks: Vec<Ipv4Net>,
}

/// A snapshot whose every field has been checked and converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSnapshot {
    pub version: Version,
    pub backend: BackendKind,
    pub port: u16,
    pub vni: u32,
    pub network: Ipv4Net,
    pub local_subnet: Ipv4Net,
    pub public_ip: Option<Ipv4Addr>,
    pub iface: String,
    pub mtu: u32,
    pub routes: Vec<Route>,
    /// vxlan: this host's VTEP MAC (the device's address).
    pub local_vtep_mac: Option<Mac>,
    /// This host's pool blocks: outside the Network, disjoint from every
    /// peer's.
    pub local_blocks: Vec<Ipv4Net>,
    /// The routing table this host's subnet and blocks are exported to
    /// (`dev lo proto 107`); 0: none. Never 253..=255.
    pub export_table: u32,
    /// controld `--ip-masq`: masquerade what leaves the Network
    /// ([`crate::firewall::masq`]); false from an older controld.
    pub ip_masq: bool,
    /// controld `--iptables-forward-rules`: accept forwarding to and from the
    /// Network in the FORWARD chain ([`crate::firewall::forward`]); false
    /// from an older controld, which never asked for them.
    pub forward_rules: bool,
}

impl ValidSnapshot {
    /// What to keep in the export table: this host's subnet and each of its
    /// blocks, whatever the backend.
    pub fn exported(&self) -> Vec<Ipv4Net> {
        std::iter::once(self.local_subnet)
            .chain(self.local_blocks.iter().copied())
            .collect()
    }

    /// The TUN (or VTEP) address: the local subnet's first address with the
    /// Network's prefix, so one kernel route covers the whole overlay.
    pub fn device_address(&self) -> Ipv4Net {
        Ipv4Net::new(self.local_subnet.network(), self.network.prefix_len())
            .expect("network prefix length is valid")
    }

    /// What the udp backend's packet loop consults per packet (kolach-packet's
    /// verdicts); swapped whole on every snapshot.
    pub fn forward_table(&self) -> ForwardTable {
        let blocks = self
            .routes
            .iter()
            .flat_map(|r| r.blocks.iter().map(|b| (*b, r.public_ip)));
        ForwardTable {
            network: self.network,
            local_subnet: self.local_subnet,
            local_blocks: self.local_blocks.clone(),
            tun_addr: self.local_subnet.network(),
            port: self.port,
            routes: RouteTable::new(self.routes.iter().map(|r| (r.subnet, r.public_ip)))
                .with_blocks(blocks),
        }
    }
}

/// The pool blocks of a snapshot, as (field, block), checked to lie outside
/// `network` and apart from each other: sorted by address, each block must
/// begin after the furthest end seen so far (prefixes either nest or are
/// disjoint, so one pass finds an overlap if there is one). Of the
/// overlapping pair found first, the error names the field listed later,
/// and the other.
fn check_blocks(network: Ipv4Net, blocks: &[(String, Ipv4Net)]) -> Result<(), SnapshotError> {
    for (field, b) in blocks {
        if b.contains(&network) || network.contains(b) {
            return Err(invalid(
                field.as_str(),
                format!("{b} overlaps network {network}"),
            ));
        }
    }
    let mut order: Vec<usize> = (0..blocks.len()).collect();
    order.sort_by_key(|&i| (blocks[i].1.network(), blocks[i].1.prefix_len()));
    // The block reaching furthest so far: (its last address, its index).
    let mut reach: Option<(Ipv4Addr, usize)> = None;
    for i in order {
        let b = blocks[i].1;
        if let Some((end, j)) = reach {
            if b.network() <= end {
                let (later, earlier) = if i > j { (i, j) } else { (j, i) };
                let (field, net) = &blocks[later];
                let (other_field, other) = &blocks[earlier];
                let why = if net == other {
                    format!("{net} is listed twice (also {other_field})")
                } else {
                    format!("{net} overlaps {other_field} {other}")
                };
                return Err(invalid(field.as_str(), why));
            }
        }
        if reach.is_none_or(|(end, _)| b.broadcast() > end) {
            reach = Some((b.broadcast(), i));
        }
    }
    Ok(())
}

fn net_field(
    field: &str,
    n: &Option<kolach_proto::netpb::IpNetwork>,
) -> Result<Ipv4Net, SnapshotError> {
    let n = n
        .as_ref()
        .ok_or_else(|| SnapshotError::Missing(field.to_string()))?;
    net_value(field, n)
}

/// A prefix: IPv4, no host bits set.
fn net_value(field: &str, n: &kolach_proto::netpb::IpNetwork) -> Result<Ipv4Net, SnapshotError> {
    let net = Ipv4Net::try_from(n).map_err(|source| SnapshotError::Address {
        field: field.to_string(),
        source,
    })?;
    if net.trunc() != net {
        return Err(invalid(
            field,
            format!("{net} has host bits set (expected {})", net.trunc()),
        ));
    }
    Ok(net)
}

fn ip_field(
    field: &str,
    a: &Option<kolach_proto::netpb::IpAddress>,
) -> Result<Option<Ipv4Addr>, SnapshotError> {
    a.as_ref()
        .map(|a| {
            Ipv4Addr::try_from(a).map_err(|source| SnapshotError::Address {
                field: field.to_string(),
                source,
            })
        })
        .transpose()
}

/// Checks a received snapshot. The error names the offending field.
pub fn validate(s: &pb::Snapshot) -> Result<ValidSnapshot, SnapshotError> {
    let version = Version::from(
        s.version
            .as_ref()
            .ok_or_else(|| SnapshotError::Missing("version".into()))?,
    );
    let b = s
        .backend
        .as_ref()
        .ok_or_else(|| SnapshotError::Missing("backend".into()))?;
    let backend = match BackendType::try_from(b.r#type) {
        Ok(BackendType::Udp) => BackendKind::Udp,
        Ok(BackendType::Vxlan) => BackendKind::Vxlan,
        Ok(BackendType::HostGw) => BackendKind::HostGw,
        Ok(BackendType::Alloc) => BackendKind::Alloc,
        Ok(BackendType::AwsVpc) => BackendKind::AwsVpc,
        Ok(BackendType::Unspecified) => return Err(invalid("backend.type", "is unspecified")),
        Err(_) => return Err(invalid("backend.type", format!("{} is unknown", b.r#type))),
    };
    let port = match (b.port, backend) {
        (0, BackendKind::Udp) => DEFAULT_UDP_PORT,
        (0, BackendKind::Vxlan) => DEFAULT_VXLAN_PORT,
        (p, _) => u16::try_from(p)
            .map_err(|_| invalid("backend.port", format!("{p} is not a UDP port")))?,
    };
    let vni = match (b.vni, backend) {
        (0, BackendKind::Vxlan) => DEFAULT_VNI,
        (v, BackendKind::Vxlan) if v > MAX_VNI => {
            return Err(invalid(
                "backend.vni",
                format!("{v} is not in 1..={MAX_VNI}"),
            ))
        }
        (v, _) => v,
    };
    let vxlan = backend == BackendKind::Vxlan;
    let mac_field = |field: String, bytes: &[u8]| {
        Mac::from_bytes(bytes).map_err(|e| invalid(field, e.to_string()))
    };
    let local_vtep_mac = if vxlan {
        Some(mac_field("local_vtep_mac".into(), &s.local_vtep_mac)?)
    } else {
        None
    };
    if backend == BackendKind::HostGw && s.iface.is_empty() {
        return Err(SnapshotError::Missing("iface".into()));
    }
    let network = net_field("network", &s.network)?;
    let local_subnet = net_field("local_subnet", &s.local_subnet)?;
    if !network.contains(&local_subnet) {
        return Err(invalid(
            "local_subnet",
            format!("{local_subnet} is not inside network {network}"),
        ));
    }
    let public_ip = ip_field("public_ip", &s.public_ip)?;
    let needs_link = matches!(backend, BackendKind::Udp | BackendKind::Vxlan);
    if needs_link && public_ip.is_none() {
        return Err(SnapshotError::Missing("public_ip".into()));
    }
    if needs_link && !(MIN_MTU..=65535).contains(&s.mtu) {
        return Err(invalid(
            "mtu",
            format!("{} is not in {MIN_MTU}..=65535", s.mtu),
        ));
    }
    let mut blocks: Vec<(String, Ipv4Net)> = Vec::new();
    for (j, b) in s.local_blocks.iter().enumerate() {
        let field = format!("local_blocks[{j}]");
        let net = net_value(&field, b)?;
        blocks.push((field, net));
    }
    let local_blocks: Vec<Ipv4Net> = blocks.iter().map(|(_, net)| *net).collect();
    let mut routes: Vec<Route> = Vec::with_capacity(s.routes.len());
    for (i, r) in s.routes.iter().enumerate() {
        let field = format!("routes[{i}].subnet");
        let subnet = net_field(&field, &r.subnet)?;
        if !network.contains(&subnet) {
            return Err(invalid(
                field,
                format!("{subnet} is not inside network {network}"),
            ));
        }
        if subnet == local_subnet {
            return Err(invalid(
                field,
                format!("{subnet} is this host's own subnet"),
            ));
        }
        if routes.iter().any(|o| o.subnet == subnet) {
            return Err(invalid(field, format!("{subnet} is listed twice")));
        }
        let ip_name = format!("routes[{i}].public_ip");
        let public_ip = ip_field(&ip_name, &r.public_ip)?.ok_or(SnapshotError::Missing(ip_name))?;
        let vtep_mac = if vxlan {
            Some(mac_field(format!("routes[{i}].vtep_mac"), &r.vtep_mac)?)
        } else {
            None
        };
        let mut own = Vec::with_capacity(r.blocks.len());
        for (j, b) in r.blocks.iter().enumerate() {
            let field = format!("routes[{i}].blocks[{j}]");
            let net = net_value(&field, b)?;
            blocks.push((field, net));
            own.push(net);
        }
        routes.push(Route {
            subnet,
            public_ip,
            vtep_mac,
            blocks: own,
        });
    }
    check_blocks(network, &blocks)?;
    // The kernel consults these for every lookup: `dev lo` routes to our own
    // prefixes there would swallow the host's traffic.
    let export_table = match s.export_table {
        t @ 253..=255 => {
            return Err(invalid(
                "export_table",
                format!(
                    "{t} is a table the kernel looks up itself (default 253, main 254, local 255)"
                ),
            ))
        }
        t => t,
    };
    Ok(ValidSnapshot {
        version,
        backend,
        port,
        vni,
        network,
        local_subnet,
        public_ip,
        iface: s.iface.clone(),
        mtu: s.mtu,
        routes,
        local_vtep_mac,
        local_blocks,
        export_table,
        ip_masq: s.ip_masq,
        forward_rules: s.iptables_forward_rules,
    })
}

#[cfg(test)]
pub(crate) mod tests;
