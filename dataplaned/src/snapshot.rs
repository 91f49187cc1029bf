//! Snapshots at the edge: validating a received `Snapshot` into typed values
//! (the ordering rule is in `ordering.rs`).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use kolach_proto::dataplane::{self as pb, BackendType};
use kolach_proto::net::NetError;

use crate::kobjects::Mac;
pub use crate::ordering::{decide, Decision, Version};
use crate::routes::Route;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Udp,
    Vxlan,
    HostGw,
    Alloc,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Udp => "udp",
            BackendKind::Vxlan => "vxlan",
            BackendKind::HostGw => "host-gw",
            BackendKind::Alloc => "alloc",
        }
    }

    pub fn to_pb(self) -> BackendType {
        match self {
            BackendKind::Udp => BackendType::Udp,
            BackendKind::Vxlan => BackendType::Vxlan,
            BackendKind::HostGw => BackendType::HostGw,
            BackendKind::Alloc => BackendType::Alloc,
        }
    }
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
}

impl ValidSnapshot {
    /// The TUN (or VTEP) address: the local subnet's first address with the
    /// Network's prefix, so one kernel route covers the whole overlay.
    pub fn device_address(&self) -> Ipv4Net {
        Ipv4Net::new(self.local_subnet.network(), self.network.prefix_len())
            .expect("network prefix length is valid")
    }
}

fn net_field(
    field: &str,
    n: &Option<kolach_proto::netpb::IpNetwork>,
) -> Result<Ipv4Net, SnapshotError> {
    let n = n
        .as_ref()
        .ok_or_else(|| SnapshotError::Missing(field.to_string()))?;
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
        routes.push(Route {
            subnet,
            public_ip,
            vtep_mac,
        });
    }
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
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kolach_proto::netpb::{IpAddress, IpNetwork};

    fn net(s: &str) -> Option<IpNetwork> {
        Some(s.parse::<Ipv4Net>().unwrap().into())
    }
    fn ip(s: &str) -> Option<IpAddress> {
        Some(s.parse::<Ipv4Addr>().unwrap().into())
    }

    pub fn good() -> pb::Snapshot {
        pb::Snapshot {
            version: Some(pb::SnapshotVersion {
                epoch: 7,
                generation: 1,
                etcd_revision: 100,
            }),
            backend: Some(pb::Backend {
                r#type: BackendType::Udp as i32,
                port: 8285,
                vni: 0,
            }),
            network: net("10.50.0.0/16"),
            local_subnet: net("10.50.18.0/24"),
            public_ip: ip("198.18.0.1"),
            iface: "eth0".into(),
            mtu: 1472,
            local_vtep_mac: vec![],
            routes: vec![pb::Route {
                subnet: net("10.50.7.0/24"),
                public_ip: ip("198.18.0.2"),
                vtep_mac: vec![],
            }],
        }
    }

    #[test]
    fn accepts_a_good_snapshot() {
        let v = validate(&good()).unwrap();
        assert_eq!(v.backend, BackendKind::Udp);
        assert_eq!(v.port, 8285);
        assert_eq!(v.device_address().to_string(), "10.50.18.0/16");
        assert_eq!(v.routes.len(), 1);
        assert_eq!(v.public_ip, Some(Ipv4Addr::new(198, 18, 0, 1)));
    }

    #[test]
    fn default_port_when_zero() {
        let mut s = good();
        s.backend.as_mut().unwrap().port = 0;
        assert_eq!(validate(&s).unwrap().port, DEFAULT_UDP_PORT);
    }

    fn reason(f: impl FnOnce(&mut pb::Snapshot)) -> String {
        let mut s = good();
        f(&mut s);
        validate(&s).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(reason(|s| s.version = None), "version is missing");
        assert_eq!(reason(|s| s.backend = None), "backend is missing");
        assert_eq!(
            reason(|s| s.backend.as_mut().unwrap().r#type = 0),
            "backend.type: is unspecified"
        );
        assert_eq!(
            reason(|s| s.backend.as_mut().unwrap().r#type = 42),
            "backend.type: 42 is unknown"
        );
        assert_eq!(
            reason(|s| s.backend.as_mut().unwrap().port = 70000),
            "backend.port: 70000 is not a UDP port"
        );
        assert_eq!(reason(|s| s.network = None), "network is missing");
        assert_eq!(
            reason(|s| s.network = Some(IpNetwork {
                addr: Some(IpAddress { addr: vec![1, 2] }),
                prefix_len: 8
            })),
            "network: address has 2 bytes, expected 4 or 16"
        );
        assert_eq!(
            reason(|s| s.local_subnet = net("10.60.1.0/24")),
            "local_subnet: 10.60.1.0/24 is not inside network 10.50.0.0/16"
        );
        assert_eq!(
            reason(|s| s.local_subnet = net("10.50.18.1/24")),
            "local_subnet: 10.50.18.1/24 has host bits set (expected 10.50.18.0/24)"
        );
        assert_eq!(reason(|s| s.public_ip = None), "public_ip is missing");
        assert_eq!(
            reason(|s| s.public_ip = Some("fd00::1".parse::<std::net::IpAddr>().unwrap().into())),
            "public_ip: expected an IPv4 address"
        );
        assert_eq!(reason(|s| s.mtu = 0), "mtu: 0 is not in 68..=65535");
        assert_eq!(
            reason(|s| s.routes[0].subnet = net("10.50.18.0/24")),
            "routes[0].subnet: 10.50.18.0/24 is this host's own subnet"
        );
        assert_eq!(
            reason(|s| s.routes[0].public_ip = None),
            "routes[0].public_ip is missing"
        );
        assert_eq!(
            reason(|s| {
                let r = s.routes[0].clone();
                s.routes.push(r);
            }),
            "routes[1].subnet: 10.50.7.0/24 is listed twice"
        );
    }

    pub fn vxlan() -> pb::Snapshot {
        let mut s = good();
        let b = s.backend.as_mut().unwrap();
        b.r#type = BackendType::Vxlan as i32;
        b.port = 0;
        b.vni = 0;
        s.mtu = 1450;
        s.local_vtep_mac = vec![0x0e, 0x6b, 198, 18, 0, 1];
        s.routes[0].vtep_mac = vec![0x0e, 0x6b, 198, 18, 0, 2];
        s
    }

    #[test]
    fn vxlan_defaults_and_macs() {
        let v = validate(&vxlan()).unwrap();
        assert_eq!((v.port, v.vni), (DEFAULT_VXLAN_PORT, DEFAULT_VNI));
        assert_eq!(v.local_vtep_mac.unwrap().to_string(), "0e:6b:c6:12:00:01");
        assert_eq!(
            v.routes[0].vtep_mac.unwrap().to_string(),
            "0e:6b:c6:12:00:02"
        );
        // udp ignores MACs.
        assert_eq!(validate(&good()).unwrap().local_vtep_mac, None);
    }

    #[test]
    fn vxlan_errors_name_the_field() {
        let reason = |f: fn(&mut pb::Snapshot)| {
            let mut s = vxlan();
            f(&mut s);
            validate(&s).unwrap_err().to_string()
        };
        assert_eq!(
            reason(|s| s.local_vtep_mac.clear()),
            "local_vtep_mac: expected 6 bytes, got 0"
        );
        assert_eq!(
            reason(|s| s.local_vtep_mac = vec![1, 0, 0x5e, 0, 0, 1]),
            "local_vtep_mac: 01:00:5e:00:00:01 is not a unicast address"
        );
        assert_eq!(
            reason(|s| s.routes[0].vtep_mac = vec![1, 2, 3]),
            "routes[0].vtep_mac: expected 6 bytes, got 3"
        );
        assert_eq!(
            reason(|s| s.backend.as_mut().unwrap().vni = 1 << 24),
            "backend.vni: 16777216 is not in 1..=16777215"
        );
        assert_eq!(reason(|s| s.public_ip = None), "public_ip is missing");
    }

    #[test]
    fn host_gw_needs_an_iface_not_a_public_ip() {
        let mut s = good();
        s.backend.as_mut().unwrap().r#type = BackendType::HostGw as i32;
        s.public_ip = None;
        s.mtu = 0;
        assert_eq!(validate(&s).unwrap().backend, BackendKind::HostGw);
        s.iface.clear();
        assert_eq!(validate(&s).unwrap_err().to_string(), "iface is missing");
    }

    #[test]
    fn alloc_needs_no_public_ip_or_mtu() {
        let mut s = good();
        s.backend.as_mut().unwrap().r#type = BackendType::Alloc as i32;
        s.public_ip = None;
        s.mtu = 0;
        assert_eq!(validate(&s).unwrap().backend, BackendKind::Alloc);
    }
}
