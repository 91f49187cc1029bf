//! A [`Kernel`] that forwards to the real one and records every call that
//! changes something: "a restart changes nothing" is then an empty list.

use std::sync::Mutex;

use futures::future::BoxFuture;
use ipnet::Ipv4Net;
use kolach_dataplaned::kernel::kobjects::{Fdb, KRoute, LinkChange, LinkState, Neigh, VxlanLink};
use kolach_dataplaned::kernel::{Kernel, KernelError, RtNetlink};

pub struct Recording {
    inner: RtNetlink,
    pub changes: Mutex<Vec<String>>,
}

impl Recording {
    pub fn new(inner: RtNetlink) -> Recording {
        Recording {
            inner,
            changes: Mutex::new(Vec::new()),
        }
    }

    pub fn changes(&self) -> Vec<String> {
        self.changes.lock().unwrap().clone()
    }

    fn note(&self, s: String) {
        self.changes.lock().unwrap().push(s);
    }
}

type R<'a, T> = BoxFuture<'a, Result<T, KernelError>>;

impl Kernel for Recording {
    fn link<'a>(&'a self, name: &'a str) -> R<'a, Option<(u32, String)>> {
        self.inner.link(name)
    }
    fn links(&self) -> R<'_, Vec<LinkState>> {
        self.inner.links()
    }
    fn ipv4_addresses(&self, index: u32) -> R<'_, Vec<Ipv4Net>> {
        self.inner.ipv4_addresses(index)
    }
    fn add_address(&self, index: u32, addr: Ipv4Net) -> R<'_, ()> {
        self.note(format!("add address {addr} #{index}"));
        self.inner.add_address(index, addr)
    }
    fn del_address(&self, index: u32, addr: Ipv4Net) -> R<'_, ()> {
        self.note(format!("del address {addr} #{index}"));
        self.inner.del_address(index, addr)
    }
    fn set_mtu_up(&self, index: u32, mtu: u32) -> R<'_, ()> {
        self.note(format!("mtu-up #{index} {mtu}"));
        self.inner.set_mtu_up(index, mtu)
    }
    fn no_ipv6_link_local(&self, index: u32) -> R<'_, ()> {
        self.note(format!("addrgenmode none #{index}"));
        self.inner.no_ipv6_link_local(index)
    }
    fn delete_link(&self, index: u32) -> R<'_, ()> {
        self.note(format!("delete link #{index}"));
        self.inner.delete_link(index)
    }
    fn set_accept_local<'a>(&'a self, name: &'a str) -> R<'a, ()> {
        self.inner.set_accept_local(name)
    }
    fn create_vxlan<'a>(&'a self, link: &'a VxlanLink) -> R<'a, ()> {
        self.note(format!("create {link:?}"));
        self.inner.create_vxlan(link)
    }
    fn set_link(&self, index: u32, change: LinkChange) -> R<'_, ()> {
        self.note(format!("set link #{index} {change:?}"));
        self.inner.set_link(index, change)
    }
    fn routes(&self) -> R<'_, Vec<KRoute>> {
        self.inner.routes()
    }
    fn add_route(&self, route: KRoute, replace: bool) -> R<'_, ()> {
        self.note(format!("add route {route:?} replace={replace}"));
        self.inner.add_route(route, replace)
    }
    fn del_route(&self, route: KRoute) -> R<'_, ()> {
        self.note(format!("del route {route:?}"));
        self.inner.del_route(route)
    }
    fn routes_all_tables(&self) -> R<'_, Vec<(u32, KRoute)>> {
        self.inner.routes_all_tables()
    }
    fn del_route_in(&self, table: u32, route: KRoute) -> R<'_, ()> {
        self.note(format!("del route {route:?} table {table}"));
        self.inner.del_route_in(table, route)
    }
    fn add_route_in(&self, table: u32, route: KRoute, replace: bool) -> R<'_, ()> {
        self.note(format!(
            "add route {route:?} table {table} replace={replace}"
        ));
        self.inner.add_route_in(table, route, replace)
    }
    fn neighbours(&self, dev: u32) -> R<'_, Vec<Neigh>> {
        self.inner.neighbours(dev)
    }
    fn set_neighbour(&self, n: Neigh) -> R<'_, ()> {
        self.note(format!("set neighbour {n:?}"));
        self.inner.set_neighbour(n)
    }
    fn del_neighbour(&self, n: Neigh) -> R<'_, ()> {
        self.note(format!("del neighbour {n:?}"));
        self.inner.del_neighbour(n)
    }
    fn fdb(&self, dev: u32) -> R<'_, Vec<Fdb>> {
        self.inner.fdb(dev)
    }
    fn set_fdb(&self, e: Fdb) -> R<'_, ()> {
        self.note(format!("set fdb {e:?}"));
        self.inner.set_fdb(e)
    }
    fn del_fdb(&self, e: Fdb) -> R<'_, ()> {
        self.note(format!("del fdb {e:?}"));
        self.inner.del_fdb(e)
    }
}
