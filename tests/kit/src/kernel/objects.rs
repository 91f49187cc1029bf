//! kolach's objects in a host's kernel as `ip -j` and `bridge -j` show them:
//! routes with protocol 107, neighbours and FDB entries on `kolach.*` devices,
//! and the kolach links themselves. Parsing is pure (unit-tested on captured
//! output); the readers run the tools under a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;
use serde_json::Value;

use crate::cmd::{self, run};
use crate::lab::backend::{is_kolach_link, ROUTE_PROTO};

/// A route as `ip -j route show` prints it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KRoute {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub dev: String,
    pub onlink: bool,
    /// None for the main table.
    pub table: Option<String>,
}

/// An IPv4 neighbour entry on a device.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neigh {
    pub dev: String,
    pub dst: Ipv4Addr,
    pub lladdr: Option<String>,
    /// `ip` prints states as a list: "PERMANENT", "REACHABLE,NOARP", ...
    pub state: String,
}

/// A unicast FDB entry of a device (`bridge -j fdb show dev X`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fdb {
    pub dev: String,
    pub mac: String,
    pub dst: Option<Ipv4Addr>,
    pub state: String,
    /// Flags, sorted and comma-joined ("self").
    pub flags: String,
}

/// One line per object, as a test states what it expects:
/// `10.50.7.0/24 via 10.50.7.0 dev kolach.1 onlink` (`-` for no gateway).
impl fmt::Display for KRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} via ", self.dst)?;
        match self.gateway {
            Some(gw) => write!(f, "{gw}")?,
            None => write!(f, "-")?,
        }
        write!(
            f,
            " dev {}",
            if self.dev.is_empty() { "-" } else { &self.dev }
        )?;
        if self.onlink {
            write!(f, " onlink")?;
        }
        Ok(())
    }
}

/// `10.50.7.0 lladdr 0e:6b:c6:12:00:02 PERMANENT`.
impl fmt::Display for Neigh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lladdr = self.lladdr.as_deref().unwrap_or("-");
        write!(f, "{} lladdr {lladdr} {}", self.dst, self.state)
    }
}

/// `0e:6b:c6:12:00:02 dst 198.18.0.2 self permanent`.
impl fmt::Display for Fdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dst ", self.mac)?;
        match self.dst {
            Some(d) => write!(f, "{d}")?,
            None => write!(f, "-")?,
        }
        let state = if self.state.is_empty() {
            "-"
        } else {
            &self.state
        };
        write!(f, " {} {state}", self.flags)
    }
}

/// Objects as their sorted [`fmt::Display`] lines.
pub fn lines<T: fmt::Display>(objects: impl IntoIterator<Item = T>) -> Vec<String> {
    let mut v: Vec<String> = objects.into_iter().map(|o| o.to_string()).collect();
    v.sort();
    v
}

/// Everything kolach may have made in one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Objects {
    /// kolach links (`kolach0`, `kolach.*`) by name, with their ifindex.
    pub links: BTreeMap<String, u32>,
    /// Routes with protocol 107 in the main table.
    pub routes: BTreeSet<KRoute>,
    /// IPv4 neighbours on kolach links.
    pub neighbours: BTreeSet<Neigh>,
    /// Unicast FDB entries on kolach links.
    pub fdb: BTreeSet<Fdb>,
}

impl Objects {
    pub fn link_names(&self) -> BTreeSet<String> {
        self.links.keys().cloned().collect()
    }

    /// The same objects, ifindexes aside (for comparing with an expectation).
    pub fn same_as(&self, other: &Objects) -> bool {
        self.link_names() == other.link_names()
            && self.routes == other.routes
            && self.neighbours == other.neighbours
            && self.fdb == other.fdb
    }

    /// Whether any object refers to `ip` or `mac` (a peer's PublicIP, its
    /// subnet's `.0` or its VTEP MAC), or routes `subnet`.
    pub fn mentions(&self, subnet: Ipv4Net, ip: Ipv4Addr, mac: &str) -> Vec<String> {
        let zero = subnet.network();
        let mut found = Vec::new();
        for r in &self.routes {
            if r.dst == subnet || r.gateway == Some(ip) {
                found.push(format!("route {r:?}"));
            }
        }
        for n in &self.neighbours {
            if n.dst == zero || n.lladdr.as_deref() == Some(mac) {
                found.push(format!("neighbour {n:?}"));
            }
        }
        for f in &self.fdb {
            if f.mac == mac || f.dst == Some(ip) {
                found.push(format!("fdb {f:?}"));
            }
        }
        found
    }
}

fn ipv4net(s: &str) -> Result<Ipv4Net> {
    if s == "default" {
        return Ok(Ipv4Net::default());
    }
    if s.contains('/') {
        Ok(s.parse()?)
    } else {
        Ok(Ipv4Net::from(s.parse::<Ipv4Addr>()?))
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

pub(crate) fn json_array(text: &str, what: &str) -> Result<Vec<Value>> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(text).with_context(|| format!("{what} json: {text}"))?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// Parses `ip -j route show ...` (IPv4).
pub fn parse_routes(text: &str) -> Result<Vec<KRoute>> {
    json_array(text, "ip route")?
        .iter()
        .map(|r| {
            let dst = ipv4net(r["dst"].as_str().context("route dst")?)?;
            let gateway = r["gateway"].as_str().map(str::parse).transpose()?;
            Ok(KRoute {
                dst,
                gateway,
                dev: r["dev"].as_str().unwrap_or_default().to_string(),
                onlink: strings(&r["flags"]).iter().any(|f| f == "onlink"),
                table: r["table"].as_str().map(str::to_string),
            })
        })
        .collect()
}

/// Parses `ip -j neigh show dev <dev>`, keeping IPv4 entries.
pub fn parse_neighbours(dev: &str, text: &str) -> Result<Vec<Neigh>> {
    let mut out = Vec::new();
    for n in json_array(text, "ip neigh")? {
        let Some(Ok(dst)) = n["dst"].as_str().map(str::parse::<Ipv4Addr>) else {
            continue;
        };
        out.push(Neigh {
            dev: dev.to_string(),
            dst,
            lladdr: n["lladdr"].as_str().map(str::to_ascii_lowercase),
            state: strings(&n["state"]).join(","),
        });
    }
    Ok(out)
}

/// Whether a MAC is a group (multicast/broadcast) address.
fn is_group_mac(mac: &str) -> bool {
    u8::from_str_radix(mac.get(..2).unwrap_or("00"), 16).is_ok_and(|b| b & 1 == 1)
}

/// Parses `bridge -j fdb show dev <dev>`, skipping the kernel's group entries.
pub fn parse_fdb(dev: &str, text: &str) -> Result<Vec<Fdb>> {
    let mut out = Vec::new();
    for f in json_array(text, "bridge fdb")? {
        let mac = f["mac"].as_str().context("fdb mac")?.to_ascii_lowercase();
        if is_group_mac(&mac) {
            continue;
        }
        let mut flags = strings(&f["flags"]);
        flags.sort();
        out.push(Fdb {
            dev: dev.to_string(),
            mac,
            dst: f["dst"].as_str().map(str::parse).transpose()?,
            state: strings(&f["state"]).join(","),
            flags: flags.join(","),
        });
    }
    Ok(out)
}

/// Parses `ip -j link show`: every link name with its ifindex.
pub fn parse_links(text: &str) -> Result<BTreeMap<String, u32>> {
    json_array(text, "ip link")?
        .iter()
        .map(|l| {
            let name = l["ifname"].as_str().context("ifname")?.to_string();
            let idx = l["ifindex"].as_u64().context("ifindex")? as u32;
            Ok((name, idx))
        })
        .collect()
}

/// Runs `tool -n ns args` (ip or bridge), which must succeed.
fn tool(tool: &str, ns: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["-n", ns];
    full.extend_from_slice(args);
    let out = run(tool, &full, cmd::DEFAULT_TIMEOUT)?;
    if !out.success() {
        bail!(
            "`{}` failed ({}): {}",
            cmd::describe(tool, &full),
            out.status,
            out.stderr.trim()
        );
    }
    Ok(out.stdout)
}

/// Routes with protocol 107 in the main table (`ip -j route show proto 107`).
pub fn kolach_routes(ns: &str) -> Result<Vec<KRoute>> {
    parse_routes(&tool("ip", ns, &["-j", "route", "show", "proto", "107"])?)
}

/// Routes with protocol 107 in any table.
pub fn kolach_routes_all_tables(ns: &str) -> Result<Vec<KRoute>> {
    let proto = ROUTE_PROTO.to_string();
    parse_routes(&tool(
        "ip",
        ns,
        &["-j", "route", "show", "table", "all", "proto", &proto],
    )?)
}

/// Every link of the namespace by name, with its ifindex.
pub fn links(ns: &str) -> Result<BTreeMap<String, u32>> {
    parse_links(&tool("ip", ns, &["-j", "link", "show"])?)
}

pub fn neighbours(ns: &str, dev: &str) -> Result<Vec<Neigh>> {
    parse_neighbours(dev, &tool("ip", ns, &["-j", "neigh", "show", "dev", dev])?)
}

pub fn fdb(ns: &str, dev: &str) -> Result<Vec<Fdb>> {
    parse_fdb(
        dev,
        &tool("bridge", ns, &["-j", "fdb", "show", "dev", dev])?,
    )
}

/// Everything kolach made in `ns`, read from the kernel.
pub fn read(ns: &str) -> Result<Objects> {
    let mut o = Objects {
        links: links(ns)?
            .into_iter()
            .filter(|(name, _)| is_kolach_link(name))
            .collect(),
        routes: kolach_routes(ns)?.into_iter().collect(),
        ..Default::default()
    };
    let vxlans: Vec<String> = o
        .links
        .keys()
        .filter(|n| n.starts_with("kolach."))
        .cloned()
        .collect();
    for dev in vxlans {
        o.neighbours.extend(neighbours(ns, &dev)?);
        o.fdb.extend(fdb(ns, &dev)?);
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_routes_of_every_table() {
        let text = r#"[{"dst":"10.50.6.0","gateway":"198.18.0.4","dev":"eth0","table":"100","flags":[]},
            {"dst":"10.50.4.0/24","gateway":"198.18.0.4","dev":"eth0","flags":[]},
            {"dst":"10.50.5.0/24","gateway":"10.50.5.0","dev":"kolach.1","flags":["onlink"]}]"#;
        let r = parse_routes(text).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].dst.to_string(), "10.50.6.0/32");
        assert_eq!(r[0].table.as_deref(), Some("100"));
        assert!(!r[1].onlink && r[1].table.is_none());
        assert_eq!(
            r[2],
            KRoute {
                dst: "10.50.5.0/24".parse().unwrap(),
                gateway: Some(Ipv4Addr::new(10, 50, 5, 0)),
                dev: "kolach.1".into(),
                onlink: true,
                table: None,
            }
        );
        assert!(parse_routes("").unwrap().is_empty());
        assert!(parse_routes("[]").unwrap().is_empty());
    }

    #[test]
    fn parses_neighbours_and_fdb() {
        let n = parse_neighbours(
            "kolach.1",
            r#"[{"dst":"10.50.3.0","lladdr":"0E:6B:C6:12:00:03","state":["PERMANENT"]},
                {"dst":"fe80::1","lladdr":"0e:6b:c6:12:00:03","state":["STALE"]}]"#,
        )
        .unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].lladdr.as_deref(), Some("0e:6b:c6:12:00:03"));
        assert_eq!(n[0].state, "PERMANENT");
        let f = parse_fdb(
            "kolach.1",
            r#"[{"mac":"0e:6b:c6:12:00:03","dst":"198.18.0.3","flags":["self"],"state":"permanent"},
                {"mac":"33:33:00:00:00:01","flags":["self"],"state":"permanent"}]"#,
        )
        .unwrap();
        assert_eq!(
            f,
            vec![Fdb {
                dev: "kolach.1".into(),
                mac: "0e:6b:c6:12:00:03".into(),
                dst: Some(Ipv4Addr::new(198, 18, 0, 3)),
                state: "permanent".into(),
                flags: "self".into(),
            }]
        );
    }

    #[test]
    fn objects_as_lines() {
        let r = parse_routes(
            r#"[{"dst":"10.50.9.0/24","gateway":"10.50.9.0","dev":"kolach.1","flags":["onlink"]},
                {"dst":"10.50.7.0/24","gateway":"198.18.0.2","dev":"u0","flags":[]}]"#,
        )
        .unwrap();
        assert_eq!(
            lines(r),
            [
                "10.50.7.0/24 via 198.18.0.2 dev u0",
                "10.50.9.0/24 via 10.50.9.0 dev kolach.1 onlink",
            ]
        );
        let n = parse_neighbours(
            "kolach.1",
            r#"[{"dst":"10.50.7.0","lladdr":"0e:6b:c6:12:00:02","state":["PERMANENT"]}]"#,
        )
        .unwrap();
        assert_eq!(lines(n), ["10.50.7.0 lladdr 0e:6b:c6:12:00:02 PERMANENT"]);
        let f = parse_fdb(
            "kolach.1",
            r#"[{"mac":"0e:6b:c6:12:00:02","dst":"198.18.0.2","flags":["self"],"state":"permanent"}]"#,
        )
        .unwrap();
        assert_eq!(
            lines(f),
            ["0e:6b:c6:12:00:02 dst 198.18.0.2 self permanent"]
        );
    }

    #[test]
    fn finds_what_mentions_a_peer() {
        let mut o = Objects::default();
        let subnet: Ipv4Net = "10.50.3.0/24".parse().unwrap();
        let ip = Ipv4Addr::new(198, 18, 0, 3);
        let mac = "0e:6b:c6:12:00:03";
        assert!(o.mentions(subnet, ip, mac).is_empty());
        o.fdb.insert(Fdb {
            dev: "kolach.1".into(),
            mac: mac.into(),
            dst: Some(ip),
            state: "permanent".into(),
            flags: "self".into(),
        });
        assert_eq!(o.mentions(subnet, ip, mac).len(), 1);
        let links =
            parse_links(r#"[{"ifindex":1,"ifname":"lo"},{"ifindex":7,"ifname":"kolach.1"}]"#)
                .unwrap();
        assert_eq!(links.get("kolach.1"), Some(&7));
    }
}
