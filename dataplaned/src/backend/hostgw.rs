//! The host-gw backend: per peer a route `<subnet> via <PublicIP> dev <iface>`
//! (proto 107), and one like it for each pool block the peer holds. It only works when every host shares one layer-2 segment: a
//! peer whose PublicIP is not on a connected subnet of the iface is not
//! routed, and says so once in the log and on every status.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::backend::Outcome;
use crate::kernel::kobjects::KRoute;
use crate::kernel::sync::{sync, Desired, SyncError};
use crate::kernel::Kernel;
use crate::snapshot::Route;
use crate::snapshot::ValidSnapshot;

/// The subnets `addrs` make directly reachable (a /32 reaches nobody).
pub fn connected(addrs: &[Ipv4Net]) -> Vec<Ipv4Net> {
    addrs
        .iter()
        .filter(|a| a.prefix_len() < 32)
        .map(Ipv4Net::trunc)
        .collect()
}

/// Splits peers into (reachable on the segment, not).
pub fn split_peers<'a>(
    routes: &'a [Route],
    connected: &[Ipv4Net],
) -> (Vec<&'a Route>, Vec<&'a Route>) {
    routes
        .iter()
        .partition(|r| connected.iter().any(|n| n.contains(&r.public_ip)))
}

/// The error for a peer host-gw cannot reach.
pub fn unreachable_peer(r: &Route, iface: &str, connected: &[Ipv4Net]) -> String {
    let nets = if connected.is_empty() {
        "no IPv4 subnet".to_string()
    } else {
        connected
            .iter()
            .map(Ipv4Net::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "host-gw: peer {} (PublicIP {}) is not on a connected subnet of {iface} ({nets}); \
         host-gw needs every host on one layer-2 segment; not routed",
        r.subnet, r.public_ip
    )
}

pub struct HostGwBackend {
    tun: String,
    iface: Option<String>,
    /// Peers already logged as unreachable (logged again once they recover and fail again).
    reported: HashSet<(Ipv4Net, Ipv4Addr)>,
}

impl HostGwBackend {
    pub fn new(tun: &str) -> Self {
        HostGwBackend {
            tun: tun.to_string(),
            iface: None,
            reported: HashSet::new(),
        }
    }

    /// The underlay interface once a snapshot has been applied.
    pub fn device(&self) -> Option<&str> {
        self.iface.as_deref()
    }

    pub async fn apply(&mut self, s: &ValidSnapshot, k: &dyn Kernel) -> Result<Outcome, SyncError> {
        let iface = s.iface.as_str();
        let no_iface = || SyncError::NoIface(iface.to_string());
        let kerr = |source| SyncError::Kernel {
            what: format!("reading {iface}"),
            source,
        };
        let (index, _) = k.link(iface).await.map_err(kerr)?.ok_or_else(no_iface)?;
        let nets = connected(&k.ipv4_addresses(index).await.map_err(kerr)?);
        let (routed, skipped) = split_peers(&s.routes, &nets);

        let mut warnings = Vec::new();
        let mut now = HashSet::new();
        for r in &skipped {
            let msg = unreachable_peer(r, iface, &nets);
            if !self.reported.contains(&(r.subnet, r.public_ip)) {
                tracing::error!(peer = %r.subnet, public_ip = %r.public_ip, iface, "{msg}");
            }
            now.insert((r.subnet, r.public_ip));
            warnings.push(msg);
        }
        self.reported = now;

        let d = Desired {
            tun: self.tun.clone(),
            keep_tun: false,
            vxlan: None,
            routes: routed
                .iter()
                .flat_map(|r| {
                    std::iter::once(r.subnet)
                        .chain(r.blocks.iter().copied())
                        .map(|dst| KRoute {
                            dst,
                            via: r.public_ip,
                            oif: index,
                            onlink: false,
                        })
                })
                .collect(),
        };
        let report = sync(k, &d).await?;
        self.iface = Some(iface.to_string());
        warnings.extend(report.errors);
        Ok(Outcome {
            warnings,
            routes: routed.len(),
        })
    }
}
