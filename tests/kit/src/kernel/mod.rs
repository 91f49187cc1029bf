//! What the kernel shows inside a namespace (`ip -j`), so tests assert on
//! kernel state rather than on what a daemon believes: links with their
//! addresses, and a vxlan device's details.
//!
//! Beside it: [`objects`], kolach's routes, neighbours, FDB entries and links
//! (`ip -j`, `bridge -j`); [`expected`], what each host's kernel should hold
//! under a backend, and waiting for it; [`monitor`], `ip monitor`/`bridge
//! monitor`: any change to kolach's objects.

pub mod expected;
pub mod monitor;
pub mod objects;

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use serde_json::Value;

use crate::netns;

/// A link as `ip -j addr show dev X` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub mtu: u32,
    pub up: bool,
    /// IPv4 addresses with their prefix (e.g. 10.50.18.0/16).
    pub v4: Vec<Ipv4Net>,
    /// IPv6 addresses with their prefix, as ip prints them (e.g. fe80::1/64).
    pub v6: Vec<String>,
}

/// Parses one entry of `ip -j addr` output.
pub fn parse_link(v: &Value) -> Result<Link> {
    let name = v["ifname"].as_str().context("ifname")?.to_string();
    let mtu = v["mtu"].as_u64().context("mtu")? as u32;
    let up = v["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == "UP"));
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for a in v["addr_info"].as_array().into_iter().flatten() {
        let local = a["local"].as_str().context("local")?;
        let len = a["prefixlen"].as_u64().context("prefixlen")?;
        if a["family"] == "inet" {
            v4.push(format!("{local}/{len}").parse()?);
        } else if a["family"] == "inet6" {
            v6.push(format!("{local}/{len}"));
        }
    }
    Ok(Link {
        name,
        mtu,
        up,
        v4,
        v6,
    })
}

/// The link `dev` in namespace `ns`, or None if it does not exist.
pub fn link(ns: &str, dev: &str) -> Result<Option<Link>> {
    let out = netns::exec(
        ns,
        "ip",
        &["-j", "addr", "show", "dev", dev],
        crate::cmd::DEFAULT_TIMEOUT,
    )?;
    if !out.success() {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(&out.stdout).context("ip -j addr")?;
    v.as_array()
        .and_then(|a| a.first())
        .map(parse_link)
        .transpose()
}

/// A vxlan device as `ip -d -j addr show dev X` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vxlan {
    pub name: String,
    pub kind: String,
    pub vni: u64,
    pub port: u64,
    pub local: Option<Ipv4Addr>,
    /// The underlay device it is bound to.
    pub link: Option<String>,
    pub learning: bool,
    pub mtu: u32,
    pub mac: String,
    pub up: bool,
    pub v4: Vec<Ipv4Net>,
}

pub fn parse_vxlan(text: &str) -> Result<Option<Vxlan>> {
    let Some(v) = crate::kernel::objects::json_array(text, "ip -d addr")?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    let link = parse_link(&v)?;
    let info = &v["linkinfo"];
    let data = &info["info_data"];
    Ok(Some(Vxlan {
        name: link.name,
        kind: info["info_kind"].as_str().unwrap_or_default().to_string(),
        vni: data["id"].as_u64().unwrap_or(0),
        port: data["port"].as_u64().unwrap_or(0),
        local: data["local"].as_str().map(str::parse).transpose()?,
        link: data["link"].as_str().map(str::to_string),
        // iproute2 prints `"learning": false`; older ones print nothing when off.
        learning: data["learning"].as_bool().unwrap_or(false),
        mtu: link.mtu,
        mac: v["address"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase(),
        up: link.up,
        v4: link.v4,
    }))
}

/// The vxlan device `dev`, or None when there is no such link.
pub fn vxlan(ns: &str, dev: &str) -> Result<Option<Vxlan>> {
    let out = netns::exec(
        ns,
        "ip",
        &["-d", "-j", "addr", "show", "dev", dev],
        crate::cmd::DEFAULT_TIMEOUT,
    )?;
    if !out.success() {
        return Ok(None);
    }
    parse_vxlan(&out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_json() {
        let v: Value = serde_json::from_str(
            r#"[{"ifindex":4,"ifname":"kolach0","flags":["POINTOPOINT","NOARP","UP","LOWER_UP"],
                "mtu":1472,"addr_info":[{"family":"inet","local":"10.50.18.0","prefixlen":16},
                {"family":"inet6","local":"fe80::1","prefixlen":64}]}]"#,
        )
        .unwrap();
        let l = parse_link(&v[0]).unwrap();
        assert_eq!(l.name, "kolach0");
        assert_eq!(l.mtu, 1472);
        assert!(l.up);
        assert_eq!(l.v4, vec!["10.50.18.0/16".parse::<Ipv4Net>().unwrap()]);
        assert_eq!(l.v6, ["fe80::1/64"]);
    }

    #[test]
    fn parses_a_vxlan_device() {
        let text = r#"[{"ifindex":4,"ifname":"kolach.1","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],
            "mtu":1450,"address":"0e:6b:c6:12:00:01","linkinfo":{"info_kind":"vxlan","info_data":
            {"id":1,"local":"198.18.0.1","link":"eth0","port":8472,"learning":false}},
            "addr_info":[{"family":"inet","local":"10.50.3.0","prefixlen":32}]}]"#;
        let v = parse_vxlan(text).unwrap().unwrap();
        assert_eq!((v.kind.as_str(), v.vni, v.port), ("vxlan", 1, 8472));
        assert_eq!(v.local, Some(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(v.link.as_deref(), Some("eth0"));
        assert!(!v.learning && v.up);
        assert_eq!((v.mtu, v.mac.as_str()), (1450, "0e:6b:c6:12:00:01"));
        assert_eq!(v.v4, vec!["10.50.3.0/32".parse::<Ipv4Net>().unwrap()]);
        assert!(parse_vxlan("[]").unwrap().is_none());
    }
}
