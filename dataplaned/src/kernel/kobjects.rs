//! The kernel objects the kernel backends own, as plain values: what the
//! [`Kernel`](crate::kernel::Kernel) seam reads and writes, and what the
//! reconcile logic compares.
//!
//! kolach recognises its own objects by route protocol ([`KOLACH_PROTO`]: the
//! backends' routes in the main table, the export's `dev lo` routes in the
//! export table) and by device name (`kolach.<VNI>` vxlan devices, the udp
//! TUN).

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
pub use kolach_proto::mac::{Mac, MacError};

/// The route protocol number on every route kolach makes (`proto 107`).
pub const KOLACH_PROTO: u8 = 107;
/// Prefix of the vxlan device names: `kolach.<VNI>`.
pub const VXLAN_PREFIX: &str = "kolach.";

/// The vxlan device name for `vni`.
pub fn vxlan_name(vni: u32) -> String {
    format!("{VXLAN_PREFIX}{vni}")
}

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    /// "tun", "vxlan", "veth", ... (empty when the kernel gives none).
    pub kind: String,
    pub mtu: u32,
    pub mac: Option<Mac>,
    pub up: bool,
    pub vxlan: Option<VxlanAttrs>,
}

/// The vxlan parameters that can only be set when the device is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanAttrs {
    pub vni: u32,
    pub port: u16,
    pub local: Option<Ipv4Addr>,
    /// Index of the underlay device (`dev`), if bound to one.
    pub underlay: Option<u32>,
    pub learning: bool,
}

/// A vxlan device to create: `ip link add <name> type vxlan id <vni> dstport
/// <port> local <local> dev <underlay> nolearning` with the MTU and MAC set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanLink {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub local: Ipv4Addr,
    pub underlay: Option<u32>,
    pub mtu: u32,
    pub mac: Mac,
}

impl VxlanLink {
    /// The attributes a device made from this must show.
    pub fn attrs(&self) -> VxlanAttrs {
        VxlanAttrs {
            vni: self.vni,
            port: self.port,
            local: Some(self.local),
            underlay: self.underlay,
            learning: false,
        }
    }
}

/// Changes to an existing link; None leaves a value alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkChange {
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
    pub up: bool,
}

/// A proto-107 IPv4 unicast route (its table is kept beside it where it
/// matters): `<dst> via <via> dev <oif> [onlink] proto 107`, or with `via`
/// 0.0.0.0 a device route `<dst> dev <oif> scope link proto 107` (the udp
/// backend's routes for pool blocks into the TUN, the export's on `lo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KRoute {
    pub dst: Ipv4Net,
    pub via: Ipv4Addr,
    pub oif: u32,
    pub onlink: bool,
}

impl KRoute {
    /// `<dst> dev <oif> scope link`: no gateway.
    pub fn device(dst: Ipv4Net, oif: u32) -> KRoute {
        KRoute {
            dst,
            via: Ipv4Addr::UNSPECIFIED,
            oif,
            onlink: false,
        }
    }
}

/// `10.50.7.0/24 via 10.50.7.0 dev #5 onlink`, `203.0.113.16/28 dev #3`.
impl fmt::Display for KRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dst)?;
        if !self.via.is_unspecified() {
            write!(f, " via {}", self.via)?;
        }
        write!(f, " dev #{}", self.oif)?;
        if self.onlink {
            f.write_str(" onlink")?;
        }
        Ok(())
    }
}

/// A permanent neighbour entry: `<ip> lladdr <mac> dev <dev> nud permanent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Neigh {
    pub dev: u32,
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

/// A permanent vxlan FDB entry: `<mac> dev <dev> dst <dst> self permanent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fdb {
    pub dev: u32,
    pub mac: Mac,
    pub dst: Ipv4Addr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_checks_and_prints() {
        let m = Mac::from_bytes(&[0x0e, 0x6b, 198, 18, 0, 1]).unwrap();
        assert_eq!(m.to_string(), "0e:6b:c6:12:00:01");
        assert_eq!(
            Mac::from_bytes(&[]).unwrap_err().to_string(),
            "expected 6 bytes, got 0"
        );
        assert_eq!(
            Mac::from_bytes(&[1, 0, 0x5e, 0, 0, 1])
                .unwrap_err()
                .to_string(),
            "01:00:5e:00:00:01 is not a unicast address"
        );
        assert!(Mac::from_bytes(&[0; 6]).is_err());
        assert_eq!(vxlan_name(16_777_215).len(), 15);
    }
}
