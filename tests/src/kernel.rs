//! What the kernel shows inside a namespace (`ip -j`), so tests assert on
//! kernel state rather than on what a daemon believes.

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
}

/// Parses one entry of `ip -j addr` output.
pub fn parse_link(v: &Value) -> Result<Link> {
    let name = v["ifname"].as_str().context("ifname")?.to_string();
    let mtu = v["mtu"].as_u64().context("mtu")? as u32;
    let up = v["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == "UP"));
    let mut v4 = Vec::new();
    for a in v["addr_info"].as_array().into_iter().flatten() {
        if a["family"] == "inet" {
            let local = a["local"].as_str().context("local")?;
            let len = a["prefixlen"].as_u64().context("prefixlen")?;
            v4.push(format!("{local}/{len}").parse()?);
        }
    }
    Ok(Link { name, mtu, up, v4 })
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
    }
}
