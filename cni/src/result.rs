//! The ADD result, written in the version the runtime asked for.
//!
//! Every version gets the same shape: `interfaces` = [host end (no sandbox),
//! pod end (with `sandbox`)], one `ips` entry on interface 1 holding the pod's
//! /32, the default route via 169.254.1.1 and an empty `dns`. Versions before
//! 1.0.0 add `"version":"4"` to the ip; 1.1.0 adds the interfaces' `mtu`.

use std::net::Ipv4Addr;

use kolach_proto::Mac;
use serde::Serialize;

use crate::version::Version;

/// The next hop every pod routes through; the host end answers for it.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Mac,
    pub mtu: u32,
    /// CNI_NETNS for the pod end; `None` for the host end.
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddResult {
    pub host: Interface,
    pub pod: Interface,
    pub address: Ipv4Addr,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    cni_version: &'static str,
    interfaces: [WireInterface<'a>; 2],
    ips: [WireIp; 1],
    routes: [WireRoute; 1],
    dns: WireDns,
}

#[derive(Serialize)]
struct WireInterface<'a> {
    name: &'a str,
    mac: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<&'a str>,
}

#[derive(Serialize)]
struct WireIp {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    address: String,
    interface: usize,
}

#[derive(Serialize)]
struct WireRoute {
    dst: &'static str,
    gw: Ipv4Addr,
}

#[derive(Serialize)]
struct WireDns {}

fn wire_interface(i: &Interface, v: Version) -> WireInterface<'_> {
    WireInterface {
        name: &i.name,
        mac: i.mac.to_string(),
        // Interfaces carry their MTU from 1.1.0 on; 0 means "left as made".
        mtu: (v >= Version::V1_1_0 && i.mtu != 0).then_some(i.mtu),
        sandbox: i.sandbox.as_deref(),
    }
}

/// Index of the pod end in `interfaces`.
const POD_INTERFACE: usize = 1;

impl AddResult {
    pub fn to_json(&self, v: Version) -> String {
        let wire = Wire {
            cni_version: v.as_str(),
            interfaces: [wire_interface(&self.host, v), wire_interface(&self.pod, v)],
            ips: [WireIp {
                version: v.ips_carry_version().then_some("4"),
                address: format!("{}/32", self.address),
                interface: POD_INTERFACE,
            }],
            routes: [WireRoute {
                dst: "0.0.0.0/0",
                gw: GATEWAY,
            }],
            dns: WireDns {},
        };
        serde_json::to_string(&wire).expect("plain values serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::SUPPORTED;

    fn sample() -> AddResult {
        AddResult {
            host: Interface {
                name: "kold887cd28687".into(),
                mac: Mac([0xee, 0xee, 0xee, 0, 0, 1]),
                mtu: 1450,
                sandbox: None,
            },
            pod: Interface {
                name: "eth0".into(),
                mac: Mac([0x02, 0x42, 0xac, 0x11, 0, 2]),
                mtu: 1450,
                sandbox: Some("/run/netns/pod1".into()),
            },
            address: Ipv4Addr::new(10, 50, 18, 2),
        }
    }

    const IFACES: &str = r#""interfaces":[{"name":"kold887cd28687","mac":"ee:ee:ee:00:00:01"},{"name":"eth0","mac":"02:42:ac:11:00:02","sandbox":"/run/netns/pod1"}]"#;
    const IFACES_MTU: &str = r#""interfaces":[{"name":"kold887cd28687","mac":"ee:ee:ee:00:00:01","mtu":1450},{"name":"eth0","mac":"02:42:ac:11:00:02","mtu":1450,"sandbox":"/run/netns/pod1"}]"#;
    const TAIL: &str = r#""routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"}],"dns":{}"#;

    #[test]
    fn golden_per_version() {
        let old_ips = r#""ips":[{"version":"4","address":"10.50.18.2/32","interface":1}]"#;
        let new_ips = r#""ips":[{"address":"10.50.18.2/32","interface":1}]"#;
        let want = |v: &str, ifaces: &str, ips: &str| {
            format!(r#"{{"cniVersion":"{v}",{ifaces},{ips},{TAIL}}}"#)
        };
        let r = sample();
        assert_eq!(r.to_json(Version::V0_3_0), want("0.3.0", IFACES, old_ips));
        assert_eq!(r.to_json(Version::V0_3_1), want("0.3.1", IFACES, old_ips));
        assert_eq!(r.to_json(Version::V0_4_0), want("0.4.0", IFACES, old_ips));
        assert_eq!(r.to_json(Version::V1_0_0), want("1.0.0", IFACES, new_ips));
        assert_eq!(
            r.to_json(Version::V1_1_0),
            want("1.1.0", IFACES_MTU, new_ips)
        );
    }

    #[test]
    fn every_version_is_valid_json_pointing_at_the_pod_end() {
        for v in SUPPORTED {
            let j: serde_json::Value = serde_json::from_str(&sample().to_json(v)).unwrap();
            let idx = j["ips"][0]["interface"].as_u64().unwrap() as usize;
            assert_eq!(j["interfaces"][idx]["name"], "eth0");
            assert!(j["interfaces"][0].get("sandbox").is_none());
        }
    }
}
