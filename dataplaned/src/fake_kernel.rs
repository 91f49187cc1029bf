//! A [`Kernel`] for tests: links in memory, every call recorded.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::BoxFuture;
use ipnet::Ipv4Net;

use crate::netlink::{Kernel, KernelError};

/// (index, addresses, mtu, up)
pub type FakeLink = (u32, Vec<Ipv4Net>, u32, bool);

#[derive(Default)]
pub struct FakeKernel {
    pub calls: Mutex<Vec<String>>,
    /// name → (index, addresses, mtu, up)
    pub links: Mutex<HashMap<String, FakeLink>>,
    /// Make set_accept_local fail, as on a read-only /proc/sys.
    pub sysctl_read_only: std::sync::atomic::AtomicBool,
}

impl FakeKernel {
    pub fn with_link(name: &str, index: u32) -> Self {
        let k = FakeKernel::default();
        k.links
            .lock()
            .unwrap()
            .insert(name.to_string(), (index, Vec::new(), 1500, false));
        k
    }

    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    fn record(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }

    fn with_index<R>(&self, index: u32, f: impl FnOnce(&mut FakeLink) -> R) -> R {
        let mut links = self.links.lock().unwrap();
        let l = links
            .values_mut()
            .find(|l| l.0 == index)
            .expect("known index");
        f(l)
    }
}

impl Kernel for FakeKernel {
    fn link<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<(u32, String)>, KernelError>> {
        let r = self
            .links
            .lock()
            .unwrap()
            .get(name)
            .map(|l| (l.0, "tun".to_string()));
        Box::pin(async move { Ok(r) })
    }
    fn ipv4_addresses(&self, index: u32) -> BoxFuture<'_, Result<Vec<Ipv4Net>, KernelError>> {
        let r = self.with_index(index, |l| l.1.clone());
        Box::pin(async move { Ok(r) })
    }
    fn add_address(&self, index: u32, addr: Ipv4Net) -> BoxFuture<'_, Result<(), KernelError>> {
        self.record(format!("add {index} {addr}"));
        self.with_index(index, |l| l.1.push(addr));
        Box::pin(async { Ok(()) })
    }
    fn del_address(&self, index: u32, addr: Ipv4Net) -> BoxFuture<'_, Result<(), KernelError>> {
        self.record(format!("del {index} {addr}"));
        self.with_index(index, |l| l.1.retain(|a| *a != addr));
        Box::pin(async { Ok(()) })
    }
    fn set_mtu_up(&self, index: u32, mtu: u32) -> BoxFuture<'_, Result<(), KernelError>> {
        self.record(format!("mtu-up {index} {mtu}"));
        self.with_index(index, |l| {
            l.2 = mtu;
            l.3 = true;
        });
        Box::pin(async { Ok(()) })
    }
    fn delete_link(&self, index: u32) -> BoxFuture<'_, Result<(), KernelError>> {
        self.record(format!("delete-link {index}"));
        self.links.lock().unwrap().retain(|_, l| l.0 != index);
        Box::pin(async { Ok(()) })
    }
    fn set_accept_local<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), KernelError>> {
        self.record(format!("accept-local {name}"));
        let ro = self
            .sysctl_read_only
            .load(std::sync::atomic::Ordering::Relaxed);
        Box::pin(async move {
            if ro {
                Err(KernelError::Sysctl {
                    path: format!("/proc/sys/net/ipv4/conf/{name}/accept_local"),
                    source: std::io::Error::from_raw_os_error(libc::EROFS),
                })
            } else {
                Ok(())
            }
        })
    }
}
