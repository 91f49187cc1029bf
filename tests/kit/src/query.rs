//! Asking the daemons what they think, straight over their Unix sockets (not
//! network-namespaced, so the test process reaches every host's run dir).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use kolach_proto::control::control_client::ControlClient;
use kolach_proto::control::{self, ControlStatus, LeasesReply};
use kolach_proto::dataplane::dataplane_client::DataplaneClient;
use kolach_proto::dataplane::{self, DataplaneStatus, RoutesReply};
use kolach_proto::uds;

pub async fn dataplane_status(sock: &Path) -> Result<DataplaneStatus> {
    let ch = uds::connect(sock, "kolach-dataplaned").await?;
    let reply = DataplaneClient::new(ch)
        .status(dataplane::StatusRequest {})
        .await
        .context("Dataplane.Status")?;
    Ok(reply.into_inner())
}

pub async fn dataplane_routes(sock: &Path) -> Result<RoutesReply> {
    let ch = uds::connect(sock, "kolach-dataplaned").await?;
    let reply = DataplaneClient::new(ch)
        .routes(dataplane::RoutesRequest {})
        .await
        .context("Dataplane.Routes")?;
    Ok(reply.into_inner())
}

pub async fn control_status(sock: &Path) -> Result<ControlStatus> {
    let ch = uds::connect(sock, "kolach-controld").await?;
    let reply = ControlClient::new(ch)
        .status(control::StatusRequest {})
        .await
        .context("Control.Status")?;
    Ok(reply.into_inner())
}

pub async fn control_leases(sock: &Path) -> Result<LeasesReply> {
    let ch = uds::connect(sock, "kolach-controld").await?;
    let reply = ControlClient::new(ch)
        .leases(control::LeasesRequest {})
        .await
        .context("Control.Leases")?;
    Ok(reply.into_inner())
}

/// A dataplane route as plain values: (peer subnet, peer PublicIP).
pub type RouteEntry = (Ipv4Net, Ipv4Addr);

/// The routes of a Routes reply as plain values, in reply order.
pub fn route_entries(reply: &RoutesReply) -> Result<Vec<RouteEntry>> {
    reply
        .routes
        .iter()
        .map(|r| {
            let subnet = Ipv4Net::try_from(r.subnet.as_ref().context("route without subnet")?)?;
            let ip = Ipv4Addr::try_from(r.public_ip.as_ref().context("route without public_ip")?)?;
            Ok((subnet, ip))
        })
        .collect()
}

/// A drop counter by reason (0 when absent).
pub fn dropped(status: &DataplaneStatus, reason: &str) -> u64 {
    status
        .counters
        .as_ref()
        .and_then(|c| c.dropped.get(reason).copied())
        .unwrap_or(0)
}

/// All drop counters (empty when the dataplane reports none).
pub fn dropped_all(status: &DataplaneStatus) -> BTreeMap<String, u64> {
    status
        .counters
        .as_ref()
        .map(|c| c.dropped.iter().map(|(k, v)| (k.clone(), *v)).collect())
        .unwrap_or_default()
}

/// Packets written to the TUN device (delivered to this host).
pub fn tun_tx(status: &DataplaneStatus) -> u64 {
    status.counters.as_ref().map_or(0, |c| c.tun_tx_packets)
}

/// The subnet controld says it holds.
pub fn control_subnet(status: &ControlStatus) -> Option<Ipv4Net> {
    status
        .subnet
        .as_ref()
        .and_then(|s| Ipv4Net::try_from(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kolach_proto::dataplane::{Counters, Route};

    #[test]
    fn routes_and_counters_as_values() {
        let net: Ipv4Net = "10.50.7.0/24".parse().unwrap();
        let reply = RoutesReply {
            version: None,
            routes: vec![Route {
                subnet: Some(net.into()),
                public_ip: Some(Ipv4Addr::new(198, 18, 0, 2).into()),
                vtep_mac: vec![],
                blocks: vec![],
            }],
            ..Default::default()
        };
        assert_eq!(
            route_entries(&reply).unwrap(),
            vec![(net, Ipv4Addr::new(198, 18, 0, 2))]
        );
        let mut status = DataplaneStatus::default();
        assert_eq!(dropped(&status, "unknown-sender"), 0);
        let mut c = Counters {
            tun_tx_packets: 5,
            ..Default::default()
        };
        c.dropped.insert("unknown-sender".into(), 3);
        status.counters = Some(c);
        assert_eq!(dropped(&status, "unknown-sender"), 3);
        assert_eq!(tun_tx(&status), 5);
        assert_eq!(dropped_all(&status).len(), 1);
    }
}
