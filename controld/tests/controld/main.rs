//! controld against a real etcd (/usr/bin/etcd on loopback): claiming,
//! restarts, reservations, races, config changes, lost leases, outages.
//! Hosts use `--iface lo --public-ip 198.18.0.x`; no packets are sent.

mod backends;
mod binary;
mod common;
mod config;
mod ipam;
mod ipam_blocks;
mod leases;
mod outage;
mod skipped;

use ipnet::Ipv4Net;

pub const NET16: &str = r#"{"Network":"10.50.0.0/16"}"#;

pub fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}
