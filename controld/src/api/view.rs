//! What the state task publishes for the control API: a plain copy of the
//! model, replaced as a whole after every event.

use std::net::Ipv4Addr;
use std::time::Instant;

use ipnet::Ipv4Net;

use crate::model::lease::Lease;

#[derive(Debug, Clone, Default)]
pub struct View {
    /// "waiting-for-etcd", "waiting-for-config", "listing", "claiming",
    /// "waiting-for-dataplane", "running".
    pub phase: &'static str,
    pub subnet: Option<Ipv4Net>,
    pub reservation: bool,
    pub lease_id: i64,
    pub public_ip: Option<Ipv4Addr>,
    pub iface: String,
    pub backend: String,
    pub network: Option<Ipv4Net>,
    /// Overlay MTU (KOLACH_MTU); 0 until there is a config.
    pub mtu: u32,
    /// The last keepalive answer: TTL seconds and when it came.
    pub keepalive: Option<(i64, Instant)>,
    pub etcd_reachable: bool,
    /// Failed etcd requests (watch, keepalive, list or write) since start.
    pub etcd_errors: u64,
    pub watched_revision: i64,
    pub dataplane_connected: bool,
    pub epoch: u64,
    pub generation: u64,
    pub applied_generation: u64,
    /// Snapshots the dataplane answered as applied (a resend after a
    /// reconnect included), and those it refused, since controld started.
    pub snapshots_pushed: u64,
    pub snapshot_push_errors: u64,
    pub peer_count: u32,
    pub config_error: String,
    pub warnings: Vec<String>,
    /// Every key under `<prefix>/subnets/` that holds a lease, this host's included.
    pub leases: Vec<Lease>,
}

impl View {
    /// Seconds until this host's etcd lease expires if not kept alive.
    pub fn lease_ttl_seconds(&self, now: Instant) -> i64 {
        match self.keepalive {
            Some((ttl, at)) => (ttl - now.saturating_duration_since(at).as_secs() as i64).max(0),
            None => 0,
        }
    }
}
