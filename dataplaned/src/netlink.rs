//! Programming links and addresses: the [`Kernel`] seam, its rtnetlink
//! implementation, and the logic that decides what to program.
//!
//! The deciding part ([`configure_device`]) only talks to the trait, so it is
//! tested with a fake that records calls; the kernel tests run it for real in a
//! network namespace.

use std::net::{IpAddr, Ipv4Addr};

use futures::future::BoxFuture;
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo};
use rtnetlink::{AddressMessageBuilder, Handle, LinkUnspec};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("netlink: {op}: {source}")]
    Netlink {
        op: String,
        source: rtnetlink::Error,
    },
    #[error("cannot open a netlink socket: {0}")]
    Connect(std::io::Error),
    #[error("device {0} does not exist")]
    NoDevice(String),
    #[error("cannot set {path}: {source}")]
    Sysctl {
        path: String,
        source: std::io::Error,
    },
}

/// What the dataplane needs from the kernel's link and address tables.
pub trait Kernel: Send + Sync {
    /// The link's index and kind (e.g. "tun"), None when absent.
    fn link<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<(u32, String)>, KernelError>>;
    fn ipv4_addresses(&self, index: u32) -> BoxFuture<'_, Result<Vec<Ipv4Net>, KernelError>>;
    fn add_address(&self, index: u32, addr: Ipv4Net) -> BoxFuture<'_, Result<(), KernelError>>;
    fn del_address(&self, index: u32, addr: Ipv4Net) -> BoxFuture<'_, Result<(), KernelError>>;
    fn set_mtu_up(&self, index: u32, mtu: u32) -> BoxFuture<'_, Result<(), KernelError>>;
    fn delete_link(&self, index: u32) -> BoxFuture<'_, Result<(), KernelError>>;
    /// `net.ipv4.conf.<name>.accept_local = 1`: the ICMP errors we write into
    /// the TUN come from its own address, which the kernel otherwise drops as
    /// a martian source.
    fn set_accept_local<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), KernelError>>;
}

/// Gives `name` exactly the IPv4 address `addr` (removing stale ones first, so
/// a changed subnet replaces the old address), the MTU, and brings it up.
/// Returns warnings: a read-only /proc/sys (some containers) costs only the
/// ICMP answers, not forwarding, so it does not fail the apply.
pub async fn configure_device(
    k: &dyn Kernel,
    name: &str,
    addr: Ipv4Net,
    mtu: u32,
) -> Result<Vec<String>, KernelError> {
    let (index, _kind) = k
        .link(name)
        .await?
        .ok_or_else(|| KernelError::NoDevice(name.to_string()))?;
    let current = k.ipv4_addresses(index).await?;
    // Stale addresses go first: deleting a primary address after adding the new
    // one would take the new (secondary, same prefix) one with it.
    for old in current.iter().filter(|a| **a != addr) {
        tracing::info!(device = name, address = %old, "removing stale address");
        k.del_address(index, *old).await?;
    }
    if !current.contains(&addr) {
        tracing::info!(device = name, address = %addr, "adding address");
        k.add_address(index, addr).await?;
    }
    k.set_mtu_up(index, mtu).await?;
    Ok(match k.set_accept_local(name).await {
        Ok(()) => Vec::new(),
        Err(e) => {
            tracing::warn!(device = name, error = %e, "ICMP errors to local senders will be dropped by the kernel");
            vec![format!(
                "{e}: ICMP errors to local senders will be dropped by the kernel"
            )]
        }
    })
}

/// [`Kernel`] over an rtnetlink connection, in the network namespace of the
/// thread that made it.
#[derive(Clone)]
pub struct RtNetlink {
    handle: Handle,
}

impl RtNetlink {
    /// Opens the connection and spawns its driver on the current tokio runtime.
    pub fn connect() -> Result<Self, KernelError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(KernelError::Connect)?;
        tokio::spawn(conn);
        Ok(RtNetlink { handle })
    }
}

fn nl(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> KernelError {
    let op = op.into();
    move |source| KernelError::Netlink { op, source }
}

fn is_no_device(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::ENODEV)
}

fn addr_message(index: u32, addr: Ipv4Net) -> rtnetlink::packet_route::address::AddressMessage {
    AddressMessageBuilder::<Ipv4Addr>::new()
        .index(index)
        .address(addr.addr(), addr.prefix_len())
        .build()
}

impl Kernel for RtNetlink {
    fn link<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<(u32, String)>, KernelError>> {
        Box::pin(async move {
            let mut links = self
                .handle
                .link()
                .get()
                .match_name(name.to_string())
                .execute();
            let msg = match links.try_next().await {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(None),
                Err(e) if is_no_device(&e) => return Ok(None),
                Err(e) => return Err(nl(format!("get link {name}"))(e)),
            };
            let kind = msg
                .attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                        LinkInfo::Kind(InfoKind::Tun) => Some("tun".to_string()),
                        LinkInfo::Kind(k) => Some(k.to_string()),
                        _ => None,
                    }),
                    _ => None,
                })
                .unwrap_or_default();
            Ok(Some((msg.header.index, kind)))
        })
    }

    fn ipv4_addresses(&self, index: u32) -> BoxFuture<'_, Result<Vec<Ipv4Net>, KernelError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut msgs = self
                .handle
                .address()
                .get()
                .set_link_index_filter(index)
                .execute();
            while let Some(m) = msgs.try_next().await.map_err(nl("list addresses"))? {
                if m.header.index != index {
                    continue;
                }
                let local = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                });
                let addr = local.or_else(|| {
                    m.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                        _ => None,
                    })
                });
                if let Some(ip) = addr {
                    if let Ok(n) = Ipv4Net::new(ip, m.header.prefix_len) {
                        out.push(n);
                    }
                }
            }
            Ok(out)
        })
    }

    fn add_address(&self, index: u32, addr: Ipv4Net) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(async move {
            self.handle
                .address()
                .add(index, IpAddr::V4(addr.addr()), addr.prefix_len())
                .replace()
                .execute()
                .await
                .map_err(nl(format!("add address {addr}")))
        })
    }

    fn del_address(&self, index: u32, addr: Ipv4Net) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(async move {
            self.handle
                .address()
                .del(addr_message(index, addr))
                .execute()
                .await
                .map_err(nl(format!("delete address {addr}")))
        })
    }

    fn set_mtu_up(&self, index: u32, mtu: u32) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(async move {
            self.handle
                .link()
                .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
                .execute()
                .await
                .map_err(nl(format!("set mtu {mtu} and up")))
        })
    }

    fn delete_link(&self, index: u32) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(async move {
            self.handle
                .link()
                .del(index)
                .execute()
                .await
                .map_err(nl("delete link"))
        })
    }

    fn set_accept_local<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), KernelError>> {
        Box::pin(async move {
            let path = format!("/proc/sys/net/ipv4/conf/{name}/accept_local");
            match std::fs::read_to_string(&path) {
                Ok(v) if v.trim() == "1" => return Ok(()),
                _ => {}
            }
            std::fs::write(&path, b"1").map_err(|source| KernelError::Sysctl { path, source })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_kernel::FakeKernel;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn fresh_device_gets_address_mtu_up() {
        let k = FakeKernel::with_link("kolach0", 7);
        configure_device(&k, "kolach0", n("10.50.18.0/16"), 1472)
            .await
            .unwrap();
        assert_eq!(
            k.take_calls(),
            [
                "add 7 10.50.18.0/16",
                "mtu-up 7 1472",
                "accept-local kolach0"
            ]
        );
    }

    #[tokio::test]
    async fn reapplying_the_same_address_adds_nothing() {
        let k = FakeKernel::with_link("kolach0", 7);
        configure_device(&k, "kolach0", n("10.50.18.0/16"), 1472)
            .await
            .unwrap();
        k.take_calls();
        configure_device(&k, "kolach0", n("10.50.18.0/16"), 1472)
            .await
            .unwrap();
        assert_eq!(k.take_calls(), ["mtu-up 7 1472", "accept-local kolach0"]);
    }

    #[tokio::test]
    async fn changed_subnet_replaces_stale_address_first() {
        let k = FakeKernel::with_link("kolach0", 7);
        configure_device(&k, "kolach0", n("10.50.18.0/16"), 1472)
            .await
            .unwrap();
        k.take_calls();
        configure_device(&k, "kolach0", n("10.50.9.0/16"), 1400)
            .await
            .unwrap();
        assert_eq!(
            k.take_calls(),
            [
                "del 7 10.50.18.0/16",
                "add 7 10.50.9.0/16",
                "mtu-up 7 1400",
                "accept-local kolach0"
            ]
        );
        assert_eq!(
            k.links.lock().unwrap()["kolach0"].1,
            vec![n("10.50.9.0/16")]
        );
    }

    #[tokio::test]
    async fn read_only_sysctl_is_a_warning_not_a_failure() {
        let k = FakeKernel::with_link("kolach0", 7);
        k.sysctl_read_only
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let w = configure_device(&k, "kolach0", n("10.50.18.0/16"), 1472)
            .await
            .unwrap();
        assert_eq!(w.len(), 1);
        assert!(
            w[0].starts_with("cannot set /proc/sys/net/ipv4/conf/kolach0/accept_local"),
            "{w:?}"
        );
        assert_eq!(
            k.links.lock().unwrap()["kolach0"].1,
            vec![n("10.50.18.0/16")]
        );
    }

    #[tokio::test]
    async fn missing_device_is_an_error() {
        let k = FakeKernel::default();
        let e = configure_device(&k, "kolach0", n("10.50.18.0/16"), 1472)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "device kolach0 does not exist");
    }
}
