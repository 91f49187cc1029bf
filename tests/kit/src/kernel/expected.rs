//! What each host's kernel should hold under a backend (ISSUE3 contracts), and
//! waiting for it: the expectation is built from the other hosts' subnet.env
//! and underlay addresses, the reality read with `ip -j` / `bridge -j`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ipnet::Ipv4Net;

use crate::kernel;
use crate::kernel::objects::{self, Fdb, KRoute, Neigh, Objects};
use crate::lab::backend::{self, vtep_mac, vxlan_dev, Backend, TUN, VXLAN_PORT, VXLAN_VNI};
use crate::lab::topology::ETH;
use crate::lab::{self, Lab};
use crate::subnet_env::lease_key;

/// What a host should hold under `backend` with these peers (subnet, PublicIP).
/// Link ifindexes are 0: compare with [`Objects::same_as`].
pub fn expected(backend: Backend, peers: &[(Ipv4Net, Ipv4Addr)]) -> Objects {
    let mut o = Objects::default();
    match backend {
        Backend::Udp => {
            o.links.insert(TUN.to_string(), 0);
        }
        Backend::Vxlan => {
            let dev = vxlan_dev(VXLAN_VNI);
            o.links.insert(dev.clone(), 0);
            for &(subnet, ip) in peers {
                let zero = backend::subnet_zero(subnet);
                o.routes.insert(KRoute {
                    dst: subnet,
                    gateway: Some(zero),
                    dev: dev.clone(),
                    onlink: true,
                    table: None,
                });
                o.neighbours.insert(Neigh {
                    dev: dev.clone(),
                    dst: zero,
                    lladdr: Some(vtep_mac(ip)),
                    state: "PERMANENT".into(),
                });
                o.fdb.insert(Fdb {
                    dev: dev.clone(),
                    mac: vtep_mac(ip),
                    dst: Some(ip),
                    state: "permanent".into(),
                    flags: "self".into(),
                });
            }
        }
        Backend::HostGw => {
            for &(subnet, ip) in peers {
                o.routes.insert(KRoute {
                    dst: subnet,
                    gateway: Some(ip),
                    dev: ETH.to_string(),
                    onlink: false,
                    table: None,
                });
            }
        }
        Backend::Alloc | Backend::AwsVpc => {}
    }
    o
}

/// What differs between `got` and `want`, one line per object.
pub fn diff(got: &Objects, want: &Objects) -> String {
    let mut lines = Vec::new();
    let (gl, wl) = (got.link_names(), want.link_names());
    lines.extend(wl.difference(&gl).map(|l| format!("  missing link {l}")));
    lines.extend(gl.difference(&wl).map(|l| format!("  unexpected link {l}")));
    macro_rules! sets {
        ($field:ident, $what:literal) => {
            lines.extend(
                want.$field
                    .difference(&got.$field)
                    .map(|x| format!("  missing {} {x:?}", $what)),
            );
            lines.extend(
                got.$field
                    .difference(&want.$field)
                    .map(|x| format!("  unexpected {} {x:?}", $what)),
            );
        };
    }
    sets!(routes, "route");
    sets!(neighbours, "neighbour");
    sets!(fdb, "fdb entry");
    if lines.is_empty() {
        "  (nothing)".to_string()
    } else {
        lines.join("\n")
    }
}

impl Lab {
    /// kolach's objects in host `n`'s kernel.
    pub fn kernel_objects(&self, n: u8) -> Result<Objects> {
        objects::read(&self.host(n).ns).with_context(|| format!("reading host{n}'s kernel"))
    }

    /// What host `n` should hold under `backend`: the other hosts as peers.
    pub fn expected_objects(&self, n: u8, backend: Backend) -> Objects {
        expected(backend, &self.expected_routes(n))
    }

    /// Polls host `n`'s kernel until `pred` holds; returns the objects and when.
    pub fn wait_kernel(
        &self,
        n: u8,
        within: Duration,
        what: &str,
        pred: impl Fn(&Objects) -> bool,
    ) -> Result<(Objects, Duration)> {
        let start = Instant::now();
        loop {
            let last = self.kernel_objects(n);
            if let Ok(o) = &last {
                if pred(o) {
                    return Ok((o.clone(), start.elapsed()));
                }
            }
            if start.elapsed() >= within {
                bail!("host{n}: kernel never {what} within {within:?}; last: {last:#?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls the kernels of `hosts` together until `pred(n, objects)` holds on
    /// each; returns when each got there (in `hosts` order), counted from the call.
    pub fn wait_kernels(
        &self,
        hosts: &[u8],
        within: Duration,
        what: &str,
        pred: impl Fn(u8, &Objects) -> bool,
    ) -> Result<Vec<Duration>> {
        crate::lab::mesh::poll_hosts(hosts, within, "kernel", what, "\n", |n| {
            match self.kernel_objects(n) {
                Ok(o) if pred(n, &o) => Ok(()),
                Ok(o) => Err(format!("{o:#?}")),
                Err(e) => Err(format!("{e:#}")),
            }
        })
    }

    /// Waits until every host's kernel holds exactly what `backend` calls for
    /// (no more, no less); returns how long each host took.
    pub fn wait_kernel_converged(
        &self,
        backend: Backend,
        within: Duration,
    ) -> Result<Vec<Duration>> {
        let start = Instant::now();
        let mut took = Vec::new();
        for n in self.host_ids() {
            let want = self.expected_objects(n, backend);
            let left = within.saturating_sub(start.elapsed());
            let res = self.wait_kernel(n, left, &format!("held the {backend} objects"), |o| {
                o.same_as(&want)
            });
            if res.is_err() {
                let got = self.kernel_objects(n)?;
                bail!(
                    "host{n}: kernel objects are not what {backend} calls for after {within:?}:\n{}",
                    diff(&got, &want)
                );
            }
            took.push(start.elapsed());
        }
        Ok(took)
    }

    /// Host `n`'s vxlan device as ISSUE3 fixes it: `kolach.1`, VNI 1, port
    /// 8472, local = its PublicIP on eth0, learning off, MTU underlay − 50,
    /// MAC from the PublicIP, `<subnet>.0/32`, up.
    pub fn check_vxlan_device(&self, n: u8) -> Result<()> {
        let h = self.host(n);
        let dev = vxlan_dev(VXLAN_VNI);
        let env = h.subnet_env().context("subnet.env")?;
        let v = kernel::vxlan(&h.ns, &dev)?.with_context(|| format!("host{n}: no {dev}"))?;
        let want_addr = Ipv4Net::from(env.lease().network());
        let problems: Vec<String> = [
            (v.kind == "vxlan", format!("type {:?}", v.kind)),
            (v.vni == u64::from(VXLAN_VNI), format!("VNI {}", v.vni)),
            (
                v.port == u64::from(VXLAN_PORT),
                format!("dstport {}", v.port),
            ),
            (v.local == Some(h.ip), format!("local {:?}", v.local)),
            (v.link.as_deref() == Some(ETH), format!("dev {:?}", v.link)),
            (!v.learning, "learning on".to_string()),
            (v.mtu == Backend::Vxlan.mtu(), format!("mtu {}", v.mtu)),
            (v.mac == vtep_mac(h.ip), format!("mac {}", v.mac)),
            (v.up, "down".to_string()),
            (v.v4 == vec![want_addr], format!("addresses {:?}", v.v4)),
        ]
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, what)| what)
        .collect();
        ensure!(
            problems.is_empty(),
            "host{n}: {dev} is off contract: {} (full: {v:?})",
            problems.join(", ")
        );
        Ok(())
    }

    /// `k` /24s of the overlay that no host holds (from 10.50.99.0/24 down),
    /// for phantom leases: hosts claim at random, so fixed ones would collide.
    pub fn free_subnets(&self, k: usize) -> Vec<Ipv4Net> {
        let taken: Vec<Ipv4Net> = self
            .host_ids()
            .into_iter()
            .filter_map(|n| self.host(n).subnet_env().map(|e| e.lease()))
            .collect();
        (2u8..=99)
            .rev()
            .chain(100..=254)
            .map(|c| Ipv4Net::new(Ipv4Addr::new(10, 50, c, 0), 24).expect("valid"))
            .filter(|s| !taken.contains(s))
            .take(k)
            .collect()
    }

    /// Host `n`'s lease value in etcd, parsed.
    pub fn lease_value(&self, n: u8) -> Result<serde_json::Value> {
        let env = self
            .host(n)
            .subnet_env()
            .with_context(|| format!("host{n}: no subnet.env"))?;
        let key = format!("{}{}", lab::subnets_prefix(), lease_key(env.lease()));
        let text = self
            .etcdctl()
            .get(&key)?
            .with_context(|| format!("host{n}: no lease {key} in etcd"))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Host `n`'s lease value as ISSUE3 fixes it for `backend`.
    pub fn check_lease_value(&self, n: u8, backend: Backend) -> Result<()> {
        let v = self.lease_value(n)?;
        let ip = self.host(n).ip.to_string();
        let data_ok = match backend {
            Backend::Vxlan => {
                v["BackendData"]["VtepMAC"].as_str() == Some(&vtep_mac(self.host(n).ip))
            }
            _ => v["BackendData"].is_null(),
        };
        ensure!(
            v["PublicIP"] == ip.as_str() && v["BackendType"] == backend.name() && data_ok,
            "host{n}: lease value {v} is not the {backend} lease of {ip}"
        );
        Ok(())
    }

    /// Waits until every host's subnet.env says KOLACH_MTU = `mtu`.
    pub fn wait_subnet_env_mtu(&self, mtu: u32, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        for n in self.host_ids() {
            loop {
                let env = self.host(n).subnet_env();
                if env.as_ref().is_some_and(|e| e.mtu == mtu) {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("host{n}: KOLACH_MTU never became {mtu} within {within:?}: {env:?}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vxlan_expectation_has_route_neighbour_and_fdb_per_peer() {
        let peers = [(
            "10.50.7.0/24".parse().unwrap(),
            Ipv4Addr::new(198, 18, 0, 2),
        )];
        let o = expected(Backend::Vxlan, &peers);
        assert_eq!(o.link_names().into_iter().collect::<Vec<_>>(), ["kolach.1"]);
        let r = o.routes.iter().next().unwrap();
        assert_eq!(r.gateway, Some(Ipv4Addr::new(10, 50, 7, 0)));
        assert!(r.onlink && r.dev == "kolach.1");
        let n = o.neighbours.iter().next().unwrap();
        assert_eq!(n.lladdr.as_deref(), Some("0e:6b:c6:12:00:02"));
        let f = o.fdb.iter().next().unwrap();
        assert_eq!(f.dst, Some(Ipv4Addr::new(198, 18, 0, 2)));
        assert!(diff(&o, &o).contains("nothing"));
        let none = expected(Backend::Alloc, &peers);
        assert!(diff(&none, &o).contains("missing link kolach.1"));
    }

    #[test]
    fn host_gw_and_udp_expectations() {
        let peers = [(
            "10.50.7.0/24".parse().unwrap(),
            Ipv4Addr::new(198, 18, 0, 2),
        )];
        let o = expected(Backend::HostGw, &peers);
        assert!(o.links.is_empty() && o.neighbours.is_empty() && o.fdb.is_empty());
        let r = o.routes.iter().next().unwrap();
        assert_eq!(
            (r.gateway, r.dev.as_str()),
            (Some(Ipv4Addr::new(198, 18, 0, 2)), "eth0")
        );
        let u = expected(Backend::Udp, &peers);
        assert!(u.routes.is_empty() && u.links.contains_key("kolach0"));
    }
}
