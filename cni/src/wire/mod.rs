//! Wiring a pod to the host (DESIGN §10), over rtnetlink:
//!
//! - [`nl`]: the netlink calls, one connection per namespace.
//! - [`netns`]: the pod's namespace, and a thread inside it.
//! - [`host`] / [`pod`]: the steps on each side.
//! - [`sysctl`]: proxy ARP and forwarding.
//! - [`view`]: what the kernel shows as plain values, and the decisions on
//!   them (reuse an existing veth? does CHECK pass?), free of syscalls.
//!
//! This file strings the steps together for ADD, DEL, GC and CHECK.

use std::net::Ipv4Addr;

use tracing::{debug, warn};

use crate::error::{self, CniError};

pub mod host;
pub mod netns;
pub mod nl;
pub mod pod;
pub mod sysctl;
pub mod view;

pub use netns::Netns;
use nl::Nl;
use view::{HostView, Link, Plan, PodView};

/// Route protocol of the plugin's host routes (`kolach-pod` in
/// packaging/iproute2); the dataplane's proto 107 reconcile never touches them.
pub const POD_ROUTE_PROTO: u8 = 108;

/// The main routing table.
pub const RT_TABLE_MAIN: u32 = 254;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("cannot open a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("{op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("cannot set {path}: {source}")]
    Sysctl {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI_NETNS {path} does not exist")]
    NoNetns { path: String },
    #[error("cannot open CNI_NETNS {path}: {source}")]
    Netns {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enter the network namespace {path}: {source}")]
    Setns {
        path: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot start a runtime for the pod side: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the thread working inside the pod's namespace panicked")]
    Panicked,
    #[error("{ifname} already exists in {netns} and is not a veth of kolach's; remove it or pick another CNI_IFNAME")]
    Conflict { ifname: String, netns: String },
    #[error("{what} vanished while being wired")]
    Vanished { what: String },
}

impl From<&WireError> for CniError {
    fn from(e: &WireError) -> Self {
        let code = match e {
            WireError::NoNetns { .. } => error::INVALID_ENV,
            _ => error::KERNEL,
        };
        CniError::new(code, e.to_string())
    }
}

/// One pod's wiring.
#[derive(Debug, Clone)]
pub struct Wiring<'a> {
    pub host_end: &'a str,
    pub ifname: &'a str,
    pub address: Ipv4Addr,
    pub mtu: Option<u32>,
}

/// The two ends as made.
#[derive(Debug, Clone)]
pub struct Wired {
    pub host: Link,
    pub pod: Link,
}

/// Wires the pod, reusing the pair of an earlier ADD of the same attachment.
/// A pair this call made is deleted again when a later step fails.
pub async fn add(w: &Wiring<'_>, ns: &Netns) -> Result<Wired, WireError> {
    let nl = Nl::connect()?;
    let host = nl.link(w.host_end).await?;
    let ifname = w.ifname.to_string();
    let pod = ns.run(|pnl| async move { pnl.link(&ifname).await })?;
    let plan = view::plan(host.as_ref(), pod.as_ref());
    debug!(host_end = w.host_end, ?plan, "veth");
    let created = match plan {
        Plan::Reuse => false,
        Plan::Conflict => {
            return Err(WireError::Conflict {
                ifname: w.ifname.to_string(),
                netns: ns.path.clone(),
            })
        }
        Plan::Replace | Plan::Create => {
            if plan == Plan::Replace {
                nl.delete_link(w.host_end).await?;
            }
            nl.add_veth(w.host_end, w.ifname, ns.fd(), w.mtu).await?;
            true
        }
    };
    let r = finish(&nl, w, ns).await;
    if r.is_err() && created {
        if let Err(e) = nl.delete_link(w.host_end).await {
            warn!(host_end = w.host_end, error = %e, "cannot remove the veth after a failed ADD");
        }
    }
    r
}

async fn finish(nl: &Nl, w: &Wiring<'_>, ns: &Netns) -> Result<Wired, WireError> {
    let vanished = || WireError::Vanished {
        what: format!("host end {}", w.host_end),
    };
    let host = nl.link(w.host_end).await?.ok_or_else(vanished)?;
    let host_mac = host.mac.ok_or_else(vanished)?;
    host::prepare(nl, &host, w.mtu).await?;
    let (ifname, address, mtu) = (w.ifname.to_string(), w.address, w.mtu);
    let pod =
        ns.run(|pnl| async move { pod::configure(&pnl, &ifname, address, host_mac, mtu).await })?;
    host::route(nl, &host, w.address).await?;
    let host = nl.link(w.host_end).await?.ok_or_else(vanished)?;
    Ok(Wired { host, pod })
}

/// Deletes the host end by name (its peer goes with it); `false` when it
/// was not there.
pub async fn delete_host_end(host_end: &str) -> Result<bool, WireError> {
    Nl::connect()?.delete_link(host_end).await
}

/// DEL's teardown: the host end, then `ifname` inside the pod when the
/// namespace is still there. Goes on past failures and returns them all.
pub async fn del(host_end: &str, ifname: &str, ns: Option<&Netns>) -> Vec<WireError> {
    let mut errors = Vec::new();
    match delete_host_end(host_end).await {
        Ok(gone) => debug!(host_end, deleted = gone, "host end"),
        Err(e) => errors.push(e),
    }
    if let Some(ns) = ns {
        let ifname = ifname.to_string();
        if let Err(e) = ns.run(|pnl| async move { pnl.delete_link(&ifname).await }) {
            errors.push(e);
        }
    }
    errors
}

/// Both sides as CHECK compares them.
pub async fn observe(
    host_end: &str,
    ifname: &str,
    ns: &Netns,
) -> Result<(HostView, PodView), WireError> {
    let host = host::observe(&Nl::connect()?, host_end).await?;
    let ifname = ifname.to_string();
    let pod = ns.run(|pnl| async move { pod::observe(&pnl, &ifname).await })?;
    Ok((host, pod))
}
