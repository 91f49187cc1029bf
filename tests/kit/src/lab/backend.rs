//! The backends a lab can run (ISSUE3 contracts): their network config, what
//! each one costs in MTU, and the names and addresses kolach derives for them
//! (the vxlan device, the VTEP MAC from a host's PublicIP).

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The overlay every test uses.
pub const NETWORK: &str = "10.50.0.0/16";
/// MTU of every underlay link the harness makes (the veth default).
pub const UNDERLAY_MTU: u32 = 1500;
/// vxlan defaults (DESIGN §4).
pub const VXLAN_VNI: u32 = 1;
pub const VXLAN_PORT: u16 = 8472;
/// The protocol number on every route kolach makes.
pub const ROUTE_PROTO: u8 = 107;
/// The udp backend's TUN device (dataplaned's `--tun` default).
pub const TUN: &str = "kolach0";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Udp,
    Vxlan,
    HostGw,
    Alloc,
    /// The VPC routes (DESIGN §11); on the hosts, like alloc, nothing.
    AwsVpc,
}

impl Backend {
    /// The `Backend.Type` of the config, also a lease's `BackendType`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Udp => "udp",
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
            Backend::Alloc => "alloc",
            Backend::AwsVpc => "aws-vpc",
        }
    }

    /// `{"Network":"10.50.0.0/16","Backend":{"Type":"<name>"}}`.
    pub fn config(self) -> String {
        format!(
            r#"{{"Network":"{NETWORK}","Backend":{{"Type":"{}"}}}}"#,
            self.name()
        )
    }

    /// Bytes of encapsulation the backend adds.
    pub fn overhead(self) -> u32 {
        match self {
            Backend::Udp => 28,
            Backend::Vxlan => 50,
            Backend::HostGw | Backend::Alloc | Backend::AwsVpc => 0,
        }
    }

    /// KOLACH_MTU on the harness's underlay.
    pub fn mtu(self) -> u32 {
        UNDERLAY_MTU - self.overhead()
    }
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Backend::Udp,
            Backend::Vxlan,
            Backend::HostGw,
            Backend::Alloc,
            Backend::AwsVpc,
        ]
        .into_iter()
        .find(|b| b.name() == s)
        .ok_or_else(|| format!("unknown backend {s:?} (udp, vxlan, host-gw, alloc, aws-vpc)"))
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The vxlan device for `vni`: `kolach.<VNI>`.
pub fn vxlan_dev(vni: u32) -> String {
    format!("kolach.{vni}")
}

/// Whether a link name is one kolach makes (the TUN or a vxlan device).
pub fn is_kolach_link(name: &str) -> bool {
    name == TUN || name.starts_with("kolach.")
}

/// The VTEP MAC controld derives from a PublicIP: `0e:6b:<a>:<b>:<c>:<d>`.
pub fn vtep_mac(public_ip: Ipv4Addr) -> String {
    let [a, b, c, d] = public_ip.octets();
    format!("0e:6b:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// The vxlan gateway of a subnet: its `.0` address (`<subnet>.0`).
pub fn subnet_zero(subnet: Ipv4Net) -> Ipv4Addr {
    subnet.network()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_and_mtus() {
        assert_eq!(
            Backend::Vxlan.config(),
            r#"{"Network":"10.50.0.0/16","Backend":{"Type":"vxlan"}}"#
        );
        assert_eq!(
            Backend::HostGw.config(),
            r#"{"Network":"10.50.0.0/16","Backend":{"Type":"host-gw"}}"#
        );
        assert_eq!(Backend::Udp.config(), crate::lab::NETWORK_CONFIG);
        assert_eq!(
            [
                Backend::Udp,
                Backend::Vxlan,
                Backend::HostGw,
                Backend::Alloc
            ]
            .map(Backend::mtu),
            [1472, 1450, 1500, 1500]
        );
    }

    #[test]
    fn vtep_mac_follows_the_contract() {
        assert_eq!(vtep_mac(Ipv4Addr::new(198, 18, 0, 1)), "0e:6b:c6:12:00:01");
        assert_eq!(
            vtep_mac(Ipv4Addr::new(198, 19, 255, 10)),
            "0e:6b:c6:13:ff:0a"
        );
        assert_eq!(vxlan_dev(1), "kolach.1");
        assert!(is_kolach_link("kolach0") && is_kolach_link("kolach.42"));
        assert!(!is_kolach_link("kbr0") && !is_kolach_link("kolach1"));
        assert_eq!("host-gw".parse(), Ok(Backend::HostGw));
        assert!("hostgw".parse::<Backend>().is_err());
    }
}
