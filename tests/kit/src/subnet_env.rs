//! Reading subnet.env (DESIGN §5) the way Docker's wrapper scripts would.

use std::net::Ipv4Addr;

use anyhow::{anyhow, bail, Context, Result};
use ipnet::Ipv4Net;

/// The four variables controld writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetEnv {
    pub network: Ipv4Net,
    /// First address of the host's subnet with the subnet's prefix, e.g. 10.50.18.1/24.
    pub subnet: Ipv4Net,
    pub mtu: u32,
    pub ipmasq: bool,
}

impl SubnetEnv {
    /// Parses `KEY=VALUE` lines; blank lines and `#` comments are skipped,
    /// unknown keys ignored, all four keys required.
    pub fn parse(text: &str) -> Result<Self> {
        let (mut network, mut subnet, mut mtu, mut ipmasq) = (None, None, None, None);
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| anyhow!("not KEY=VALUE: {line:?}"))?;
            let v = v.trim().trim_matches('"');
            match k.trim() {
                "KOLACH_NETWORK" => network = Some(v.parse().context("KOLACH_NETWORK")?),
                "KOLACH_SUBNET" => subnet = Some(v.parse().context("KOLACH_SUBNET")?),
                "KOLACH_MTU" => mtu = Some(v.parse().context("KOLACH_MTU")?),
                "KOLACH_IPMASQ" => {
                    ipmasq = Some(match v {
                        "true" => true,
                        "false" => false,
                        _ => bail!("KOLACH_IPMASQ={v} is not true/false"),
                    })
                }
                _ => {}
            }
        }
        Ok(SubnetEnv {
            network: network.ok_or_else(|| anyhow!("KOLACH_NETWORK missing"))?,
            subnet: subnet.ok_or_else(|| anyhow!("KOLACH_SUBNET missing"))?,
            mtu: mtu.ok_or_else(|| anyhow!("KOLACH_MTU missing"))?,
            ipmasq: ipmasq.ok_or_else(|| anyhow!("KOLACH_IPMASQ missing"))?,
        })
    }

    /// The leased subnet itself (10.50.18.0/24).
    pub fn lease(&self) -> Ipv4Net {
        self.subnet.trunc()
    }

    /// The bridge address (`--bip`): 10.50.18.1.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.addr()
    }

    /// The address the harness gives the host's pod: 10.50.18.2.
    pub fn pod_ip(&self) -> Ipv4Addr {
        nth(self.lease(), 2)
    }

    /// The etcd key of this lease: `10.50.18.0-24`.
    pub fn lease_key(&self) -> String {
        lease_key(self.lease())
    }
}

/// The `n`-th address of a network.
pub fn nth(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + n)
}

/// flannel's key name for a subnet: `10.50.18.0-24`.
pub fn lease_key(net: Ipv4Net) -> String {
    format!("{}-{}", net.network(), net.prefix_len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_design_example() {
        let env = SubnetEnv::parse(
            "KOLACH_NETWORK=10.50.0.0/16\nKOLACH_SUBNET=10.50.18.1/24\n\
             KOLACH_MTU=1472\nKOLACH_IPMASQ=false\n",
        )
        .unwrap();
        assert_eq!(env.network.to_string(), "10.50.0.0/16");
        assert_eq!(env.lease().to_string(), "10.50.18.0/24");
        assert_eq!(env.gateway().to_string(), "10.50.18.1");
        assert_eq!(env.pod_ip().to_string(), "10.50.18.2");
        assert_eq!(env.mtu, 1472);
        assert!(!env.ipmasq);
        assert_eq!(env.lease_key(), "10.50.18.0-24");
    }

    #[test]
    fn rejects_incomplete_or_garbled() {
        assert!(SubnetEnv::parse("KOLACH_NETWORK=10.50.0.0/16\n").is_err());
        assert!(SubnetEnv::parse("garbage\n").is_err());
        let bad_mtu = "KOLACH_NETWORK=10.50.0.0/16\nKOLACH_SUBNET=10.50.1.1/24\n\
                       KOLACH_MTU=x\nKOLACH_IPMASQ=false\n";
        assert!(SubnetEnv::parse(bad_mtu).is_err());
    }

    #[test]
    fn tolerates_comments_and_quotes() {
        let env = SubnetEnv::parse(
            "# written by kolach\nKOLACH_NETWORK=\"10.50.0.0/16\"\nKOLACH_SUBNET=10.50.7.1/24\n\
             KOLACH_MTU=1450\nKOLACH_IPMASQ=true\nOTHER=1\n",
        )
        .unwrap();
        assert!(env.ipmasq);
        assert_eq!(env.lease_key(), "10.50.7.0-24");
    }
}
