//! The other half of `ipam check`: what the host holds that no allocation
//! explains. A host end (`kol` + 11 hex digits) no allocation computes to, and
//! a /32 route out of a host end to an address no allocation of that host end
//! holds, are left-overs of a DEL that freed the address but not the link, or
//! of wiring done by hand. Pure: the links and routes are read by the caller.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use kolach_proto::pod;
use serde::Serialize;

/// Whether `name` has the shape of a host end the plugin makes.
pub fn is_host_end(name: &str) -> bool {
    name.len() == 14
        && name.starts_with("kol")
        && name[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `/proc/net/route`'s IPv4 routes of the main table: (destination, prefix
/// length, device). Addresses are in the kernel's byte order.
pub fn parse_proc_route(text: &str) -> Vec<(Ipv4Addr, u8, String)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dev, dst, mask) = (f.first()?, f.get(1)?, f.get(7)?);
            let dst = u32::from_str_radix(dst, 16).ok()?;
            let mask = u32::from_str_radix(mask, 16).ok()?;
            // The kernel prints the address's bytes as a native-endian u32.
            let dst = Ipv4Addr::from(dst.to_ne_bytes());
            Some((dst, mask.count_ones() as u8, dev.to_string()))
        })
        .collect()
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct OrphanRoute {
    pub address: String,
    pub dev: String,
}

#[derive(Serialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct Orphans {
    /// Host ends no allocation names.
    pub links: Vec<String>,
    /// /32 routes out of a host end that no allocation of it explains.
    pub routes: Vec<OrphanRoute>,
}

impl Orphans {
    pub fn is_empty(&self) -> bool {
        self.links.is_empty() && self.routes.is_empty()
    }
}

/// `allocations` as (address, container ID, ifname); `links` the host's
/// interface names; `routes` its main-table routes.
pub fn find(
    allocations: &[(Ipv4Addr, String, String)],
    links: &[String],
    routes: &[(Ipv4Addr, u8, String)],
) -> Orphans {
    let ends: HashMap<String, Ipv4Addr> = allocations
        .iter()
        .map(|(ip, c, i)| (pod::host_end(c, i), *ip))
        .collect();
    let mut out = Orphans::default();
    for l in links.iter().filter(|l| is_host_end(l)) {
        if !ends.contains_key(l) {
            out.links.push(l.clone());
        }
    }
    for (dst, len, dev) in routes {
        if *len == 32 && is_host_end(dev) && ends.get(dev) != Some(dst) {
            out.routes.push(OrphanRoute {
                address: dst.to_string(),
                dev: dev.clone(),
            });
        }
    }
    out.links.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_end_shape() {
        assert!(is_host_end(&pod::host_end("c", "eth0")));
        assert!(!is_host_end("kolach0"));
        assert!(!is_host_end("kol0123456789"));
        assert!(!is_host_end("kol0123456789AB"));
    }

    #[test]
    fn proc_net_route_reads_back() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            kol0123456789a\t0212D50A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
            kolach0\t0000D50A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        assert_eq!(
            parse_proc_route(text),
            vec![
                (
                    "10.213.18.2".parse().unwrap(),
                    32,
                    "kol0123456789a".to_string()
                ),
                ("10.213.0.0".parse().unwrap(), 16, "kolach0".to_string()),
            ]
        );
    }

    #[test]
    fn finds_links_and_routes_no_allocation_explains() {
        let ours = pod::host_end("c1", "eth0");
        let allocs = vec![(
            "10.50.18.2".parse().unwrap(),
            "c1".to_string(),
            "eth0".to_string(),
        )];
        let links = vec![
            ours.clone(),
            "kol0123456789a".to_string(),
            "eth0".to_string(),
            "kolach0".to_string(),
        ];
        let routes = vec![
            ("10.50.18.2".parse().unwrap(), 32, ours.clone()),
            // Our host end, but an address it was never given.
            ("10.50.18.9".parse().unwrap(), 32, ours.clone()),
            (
                "10.50.18.3".parse().unwrap(),
                32,
                "kol0123456789a".to_string(),
            ),
            ("10.50.0.0".parse().unwrap(), 16, "kolach0".to_string()),
        ];
        let o = find(&allocs, &links, &routes);
        assert_eq!(o.links, vec!["kol0123456789a".to_string()]);
        assert_eq!(
            o.routes,
            vec![
                OrphanRoute {
                    address: "10.50.18.9".into(),
                    dev: ours
                },
                OrphanRoute {
                    address: "10.50.18.3".into(),
                    dev: "kol0123456789a".into()
                },
            ]
        );
        assert!(find(&allocs, &links[..1], &routes[..1]).is_empty());
    }
}
