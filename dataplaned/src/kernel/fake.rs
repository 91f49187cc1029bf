//! A [`Kernel`] for tests: links, routes (of every protocol), neighbours and
//! FDB entries in memory, behaving like the kernel where it matters (EEXIST
//! for a second route to a destination, a deleted link takes its objects
//! along), and every change recorded as a line.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use futures::future::BoxFuture;
use ipnet::Ipv4Net;

use crate::kernel::kobjects::{
    Fdb, KRoute, LinkChange, LinkState, Mac, Neigh, VxlanAttrs, VxlanLink, KOLACH_PROTO,
};
use crate::kernel::{Kernel, KernelError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLink {
    pub index: u32,
    pub kind: String,
    pub addrs: Vec<Ipv4Net>,
    pub mtu: u32,
    pub up: bool,
    pub mac: Option<Mac>,
    pub vxlan: Option<VxlanAttrs>,
}

#[derive(Default)]
pub struct FakeKernel {
    pub calls: Mutex<Vec<String>>,
    /// name → link
    pub links: Mutex<BTreeMap<String, FakeLink>>,
    /// Every route in the main table with its protocol number.
    pub routes: Mutex<Vec<(KRoute, u8)>>,
    /// Routes in other tables: (table, route, protocol).
    pub other_tables: Mutex<Vec<(u32, KRoute, u8)>>,
    pub neighs: Mutex<Vec<Neigh>>,
    pub fdb: Mutex<Vec<Fdb>>,
    /// Make set_accept_local fail, as on a read-only /proc/sys.
    pub sysctl_read_only: AtomicBool,
    next_index: AtomicU32,
}

fn netlink_error(op: &str, errno: i32) -> KernelError {
    let mut m = rtnetlink::packet_core::ErrorMessage::default();
    m.code = std::num::NonZeroI32::new(-errno);
    KernelError::Netlink {
        op: op.to_string(),
        source: rtnetlink::Error::NetlinkError(m),
    }
}

fn ready<T: Send + 'static>(v: T) -> BoxFuture<'static, T> {
    Box::pin(async move { v })
}

impl FakeKernel {
    /// A kernel with one TUN device `name` at `index`.
    pub fn with_link(name: &str, index: u32) -> Self {
        let k = FakeKernel::default();
        k.add_link(name, index, "tun", &[]);
        k
    }

    pub fn add_link(&self, name: &str, index: u32, kind: &str, addrs: &[&str]) {
        self.links.lock().unwrap().insert(
            name.to_string(),
            FakeLink {
                index,
                kind: kind.to_string(),
                addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
                mtu: 1500,
                up: kind != "tun",
                mac: None,
                vxlan: None,
            },
        );
    }

    /// A route someone else made (protocol `proto`).
    pub fn add_foreign_route(&self, r: KRoute, proto: u8) {
        self.routes.lock().unwrap().push((r, proto));
    }

    /// The routes of `table` other than main, of every protocol, as text
    /// (`<route> proto <n>`), sorted.
    pub fn table(&self, table: u32) -> Vec<String> {
        let mut v: Vec<String> = self
            .other_tables
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| *t == table)
            .map(|(_, r, p)| format!("{} proto {p}", self.route_text(r)))
            .collect();
        v.sort();
        v
    }

    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    pub fn link_named(&self, name: &str) -> Option<FakeLink> {
        self.links.lock().unwrap().get(name).cloned()
    }

    /// kolach's routes, neighbours and FDB entries, sorted, as text.
    pub fn objects(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .routes
            .lock()
            .unwrap()
            .iter()
            .map(|(r, p)| format!("{} proto {p}", self.route_text(r)))
            .collect();
        v.extend(
            self.neighs
                .lock()
                .unwrap()
                .iter()
                .map(|n| self.neigh_text(n)),
        );
        v.extend(self.fdb.lock().unwrap().iter().map(|e| self.fdb_text(e)));
        v.sort();
        v
    }

    fn record(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }

    fn name_of(&self, index: u32) -> String {
        self.links
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| l.index == index)
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| format!("#{index}"))
    }

    fn route_text(&self, r: &KRoute) -> String {
        let text = r.to_string();
        text.replace(
            &format!("dev #{}", r.oif),
            &format!("dev {}", self.name_of(r.oif)),
        )
    }
    fn neigh_text(&self, n: &Neigh) -> String {
        format!(
            "neigh {} lladdr {} dev {}",
            n.ip,
            n.mac,
            self.name_of(n.dev)
        )
    }
    fn fdb_text(&self, e: &Fdb) -> String {
        format!("fdb {} dst {} dev {}", e.mac, e.dst, self.name_of(e.dev))
    }

    fn with_index<R>(&self, index: u32, f: impl FnOnce(&mut FakeLink) -> R) -> R {
        let mut links = self.links.lock().unwrap();
        let l = links
            .values_mut()
            .find(|l| l.index == index)
            .expect("known index");
        f(l)
    }
}

impl Kernel for FakeKernel {
    fn link<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<(u32, String)>, KernelError>> {
        ready(Ok(self.link_named(name).map(|l| (l.index, l.kind))))
    }
    fn links(&self) -> BoxFuture<'_, Result<Vec<LinkState>, KernelError>> {
        let v = self
            .links
            .lock()
            .unwrap()
            .iter()
            .map(|(name, l)| LinkState {
                index: l.index,
                name: name.clone(),
                kind: l.kind.clone(),
                mtu: l.mtu,
                mac: l.mac,
                up: l.up,
                vxlan: l.vxlan,
            })
            .collect();
        ready(Ok(v))
    }
    fn ipv4_addresses(&self, index: u32) -> BoxFuture<'_, Result<Vec<Ipv4Net>, KernelError>> {
        ready(Ok(self.with_index(index, |l| l.addrs.clone())))
    }
    fn add_address(&self, index: u32, addr: Ipv4Net) -> BoxFuture<'_, Result<(), KernelError>> {
        self.record(format!("add {index} {addr}"));
        self.with_index(index, |l| l.addrs.push(addr));
        ready(Ok(()))
    }
    fn del_address(&self, index: u32, addr: Ipv4Net) -> BoxFuture<'_, Result<(), KernelError>> {
        self.record(format!("del {index} {addr}"));
        self.with_index(index, |l| l.addrs.retain(|a| *a != addr));
        ready(Ok(()))
    }
    fn set_mtu_up(&self, index: u32, mtu: u32) -> BoxFuture<'_, Result<(), KernelError>> {
        self.record(format!("mtu-up {index} {mtu}"));
        self.with_index(index, |l| {
            l.mtu = mtu;
            l.up = true;
        });
        ready(Ok(()))
    }
    fn no_ipv6_link_local(&self, index: u32) -> BoxFuture<'_, Result<(), KernelError>> {
        self.record(format!("no-ll6 {index}"));
        ready(Ok(()))
    }
    fn delete_link(&self, index: u32) -> BoxFuture<'_, Result<(), KernelError>> {
        self.record(format!("delete-link {index}"));
        self.links.lock().unwrap().retain(|_, l| l.index != index);
        self.routes.lock().unwrap().retain(|(r, _)| r.oif != index);
        self.neighs.lock().unwrap().retain(|n| n.dev != index);
        self.fdb.lock().unwrap().retain(|e| e.dev != index);
        ready(Ok(()))
    }
    fn set_accept_local<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), KernelError>> {
        self.record(format!("accept-local {name}"));
        let r = if self.sysctl_read_only.load(Ordering::Relaxed) {
            Err(KernelError::Sysctl {
                path: format!("/proc/sys/net/ipv4/conf/{name}/accept_local"),
                source: std::io::Error::from_raw_os_error(libc::EROFS),
            })
        } else {
            Ok(())
        };
        ready(r)
    }
    fn create_vxlan<'a>(&'a self, v: &'a VxlanLink) -> BoxFuture<'a, Result<(), KernelError>> {
        let dev = v.underlay.map(|u| self.name_of(u)).unwrap_or_default();
        self.record(format!(
            "create-vxlan {} vni {} port {} local {} dev {dev} mtu {} mac {}",
            v.name, v.vni, v.port, v.local, v.mtu, v.mac
        ));
        if self.link_named(&v.name).is_some() {
            return ready(Err(netlink_error("create vxlan", libc::EEXIST)));
        }
        let index = 100 + self.next_index.fetch_add(1, Ordering::Relaxed);
        self.links.lock().unwrap().insert(
            v.name.clone(),
            FakeLink {
                index,
                kind: "vxlan".into(),
                addrs: Vec::new(),
                mtu: v.mtu,
                up: false,
                mac: Some(v.mac),
                vxlan: Some(v.attrs()),
            },
        );
        ready(Ok(()))
    }
    fn set_link(&self, index: u32, c: LinkChange) -> BoxFuture<'_, Result<(), KernelError>> {
        let mut s = format!("set-link {}", self.name_of(index));
        if let Some(m) = c.mtu {
            s += &format!(" mtu {m}");
        }
        if let Some(m) = c.mac {
            s += &format!(" mac {m}");
        }
        if c.up {
            s += " up";
        }
        self.record(s);
        self.with_index(index, |l| {
            l.mtu = c.mtu.unwrap_or(l.mtu);
            l.mac = c.mac.or(l.mac);
            l.up |= c.up;
        });
        ready(Ok(()))
    }
    fn routes(&self) -> BoxFuture<'_, Result<Vec<KRoute>, KernelError>> {
        let v = self
            .routes
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, p)| *p == KOLACH_PROTO)
            .map(|(r, _)| *r)
            .collect();
        ready(Ok(v))
    }
    fn add_route(&self, r: KRoute, replace: bool) -> BoxFuture<'_, Result<(), KernelError>> {
        let verb = if replace { "replace" } else { "add" };
        self.record(format!("route {verb} {}", self.route_text(&r)));
        let mut routes = self.routes.lock().unwrap();
        match routes.iter_mut().find(|(o, _)| o.dst == r.dst) {
            Some(slot) if replace => *slot = (r, KOLACH_PROTO),
            Some(_) => return ready(Err(netlink_error("add route", libc::EEXIST))),
            None => routes.push((r, KOLACH_PROTO)),
        }
        ready(Ok(()))
    }
    fn del_route(&self, r: KRoute) -> BoxFuture<'_, Result<(), KernelError>> {
        self.record(format!("route del {}", self.route_text(&r)));
        let mut routes = self.routes.lock().unwrap();
        if let Some(i) = routes.iter().position(|x| *x == (r, KOLACH_PROTO)) {
            routes.remove(i);
        }
        ready(Ok(()))
    }
    fn routes_all_tables(&self) -> BoxFuture<'_, Result<Vec<(u32, KRoute)>, KernelError>> {
        let mut v: Vec<(u32, KRoute)> = self
            .routes
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, p)| *p == KOLACH_PROTO)
            .map(|(r, _)| (254, *r))
            .collect();
        v.extend(
            self.other_tables
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, _, p)| *p == KOLACH_PROTO)
                .map(|(t, r, _)| (*t, *r)),
        );
        ready(Ok(v))
    }
    fn del_route_in(&self, table: u32, r: KRoute) -> BoxFuture<'_, Result<(), KernelError>> {
        if table == 254 {
            return self.del_route(r);
        }
        self.record(format!("route del {} table {table}", self.route_text(&r)));
        self.other_tables
            .lock()
            .unwrap()
            .retain(|x| *x != (table, r, KOLACH_PROTO));
        ready(Ok(()))
    }
    fn add_route_in(
        &self,
        table: u32,
        r: KRoute,
        replace: bool,
    ) -> BoxFuture<'_, Result<(), KernelError>> {
        if table == 254 {
            return self.add_route(r, replace);
        }
        let verb = if replace { "replace" } else { "add" };
        self.record(format!(
            "route {verb} {} table {table}",
            self.route_text(&r)
        ));
        let mut routes = self.other_tables.lock().unwrap();
        match routes
            .iter_mut()
            .find(|(t, o, _)| *t == table && o.dst == r.dst)
        {
            Some(slot) if replace => *slot = (table, r, KOLACH_PROTO),
            Some(_) => return ready(Err(netlink_error("add route", libc::EEXIST))),
            None => routes.push((table, r, KOLACH_PROTO)),
        }
        ready(Ok(()))
    }
    fn neighbours(&self, dev: u32) -> BoxFuture<'_, Result<Vec<Neigh>, KernelError>> {
        let v = self.neighs.lock().unwrap();
        ready(Ok(v.iter().filter(|n| n.dev == dev).copied().collect()))
    }
    fn set_neighbour(&self, n: Neigh) -> BoxFuture<'_, Result<(), KernelError>> {
        self.record(format!("{} set", self.neigh_text(&n)));
        let mut v = self.neighs.lock().unwrap();
        v.retain(|o| (o.dev, o.ip) != (n.dev, n.ip));
        v.push(n);
        ready(Ok(()))
    }
    fn del_neighbour(&self, n: Neigh) -> BoxFuture<'_, Result<(), KernelError>> {
        self.record(format!("{} del", self.neigh_text(&n)));
        let mut v = self.neighs.lock().unwrap();
        v.retain(|o| (o.dev, o.ip) != (n.dev, n.ip));
        ready(Ok(()))
    }
    fn fdb(&self, dev: u32) -> BoxFuture<'_, Result<Vec<Fdb>, KernelError>> {
        let v = self.fdb.lock().unwrap();
        ready(Ok(v.iter().filter(|e| e.dev == dev).copied().collect()))
    }
    fn set_fdb(&self, e: Fdb) -> BoxFuture<'_, Result<(), KernelError>> {
        self.record(format!("{} set", self.fdb_text(&e)));
        let mut v = self.fdb.lock().unwrap();
        match v.iter_mut().find(|o| (o.dev, o.mac) == (e.dev, e.mac)) {
            Some(first) => first.dst = e.dst,
            None => v.push(e),
        }
        ready(Ok(()))
    }
    fn del_fdb(&self, e: Fdb) -> BoxFuture<'_, Result<(), KernelError>> {
        self.record(format!("{} del", self.fdb_text(&e)));
        self.fdb.lock().unwrap().retain(|o| *o != e);
        ready(Ok(()))
    }
}
