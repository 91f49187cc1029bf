//! `--metrics-addr` (DESIGN §12): `/metrics` in the Prometheus text format
//! and `/healthz`, like flannel's `--healthz-port`.
//!
//! - [`text`]: the exposition format, pure.
//! - [`serve`]: the small HTTP server.
//!
//! Here: [`Figures`], what one scrape reads (the same view the control API
//! serves to `kolachctl status`, the dataplane's status over its socket and
//! the IPAM task's reports), and the two pure functions over it that the
//! server answers with: [`render`] and [`health`].

pub mod serve;
pub mod text;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kolach_proto::dataplane::dataplane_client::DataplaneClient;
use kolach_proto::dataplane::{self as pb, DataplaneStatus, StatusRequest};
use kolach_proto::uds;
use tokio::sync::watch;
use tracing::warn;

use self::text::{Histogram, Kind, Text};
use crate::api::view::View;
use crate::ipam::{IpamHandle, PoolReport, StatusReport};

/// How long a scrape waits for the dataplane or the IPAM task: a stuck one
/// shows as down rather than hanging the scraper (Prometheus' default
/// scrape timeout is 10 s).
const ASK_WITHIN: Duration = Duration::from_secs(3);

/// What a scrape needs to reach.
#[derive(Clone)]
pub struct Sources {
    pub view: watch::Receiver<Arc<View>>,
    pub ipam: IpamHandle,
    pub dataplane_socket: PathBuf,
}

/// One scrape's values.
#[derive(Debug, Clone)]
pub struct Figures {
    pub view: View,
    pub lease_ttl_seconds: i64,
    /// `Err` holds why the dataplane could not be asked.
    pub dataplane: Result<DataplaneStatus, String>,
    pub ipam: Option<(StatusReport, Vec<PoolReport>)>,
}

impl Sources {
    pub async fn gather(&self) -> Figures {
        let view = self.view.borrow().as_ref().clone();
        let lease_ttl_seconds = view.lease_ttl_seconds(Instant::now());
        let dataplane = async {
            let ch = uds::connect(&self.dataplane_socket, "kolach-dataplaned").await?;
            anyhow::Ok(
                DataplaneClient::new(ch)
                    .status(StatusRequest {})
                    .await?
                    .into_inner(),
            )
        };
        let ipam = async {
            Some((
                self.ipam.status().await.ok()?,
                self.ipam.pools().await.ok()?,
            ))
        };
        let (dataplane, ipam) = tokio::join!(
            tokio::time::timeout(ASK_WITHIN, dataplane),
            tokio::time::timeout(ASK_WITHIN, ipam)
        );
        let dataplane = dataplane
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no status answer within {ASK_WITHIN:?}")));
        let ipam = ipam.ok().flatten();
        Figures {
            view,
            lease_ttl_seconds,
            dataplane: dataplane.map_err(|e| format!("{e:#}")),
            ipam,
        }
    }
}

/// `Ok` when this host is healthy, else the reason for a 503: the lease is
/// held and the dataplane, reachable, has applied a snapshot.
pub fn health(f: &Figures) -> Result<(), String> {
    if f.view.subnet.is_none() {
        return Err(format!("no subnet lease held (phase {})", f.view.phase));
    }
    let dp = f
        .dataplane
        .as_ref()
        .map_err(|e| format!("kolach-dataplaned cannot be reached: {e}"))?;
    if !dp.has_snapshot {
        return Err("kolach-dataplaned has applied no snapshot yet".into());
    }
    Ok(())
}

fn b(v: bool) -> f64 {
    if v {
        1.0
    } else {
        0.0
    }
}

/// The `/metrics` body.
pub fn render(f: &Figures) -> String {
    let mut t = Text::default();
    let v = &f.view;
    let subnet = v.subnet.map(|s| s.to_string());
    let mut held = t.family(
        "kolach_controld_lease_held",
        "Whether this host holds its subnet lease (label: the subnet).",
        Kind::Gauge,
    );
    match &subnet {
        Some(s) => held.sample(&[("subnet", s)], 1.0),
        None => held.sample(&[], 0.0),
    };
    t.single(
        "kolach_controld_lease_expiry_seconds",
        "Seconds until this host's etcd lease expires if not kept alive.",
        Kind::Gauge,
        f.lease_ttl_seconds as f64,
    );
    t.single(
        "kolach_controld_etcd_reachable",
        "Whether etcd answered the last request.",
        Kind::Gauge,
        b(v.etcd_reachable),
    );
    t.single(
        "kolach_controld_etcd_request_errors_total",
        "etcd requests (watch, keepalive, list, write) that failed since controld started.",
        Kind::Counter,
        v.etcd_errors as f64,
    );
    t.single(
        "kolach_controld_watched_revision",
        "The etcd revision of the subnet watch.",
        Kind::Gauge,
        v.watched_revision as f64,
    );
    t.single(
        "kolach_controld_peers",
        "Other hosts' leases routed to.",
        Kind::Gauge,
        v.peer_count as f64,
    );
    t.single(
        "kolach_controld_snapshot_generation",
        "Generation of the last route-table snapshot pushed to the dataplane.",
        Kind::Gauge,
        v.generation as f64,
    );
    t.single(
        "kolach_controld_dataplane_applied_generation",
        "Generation the dataplane last reported applied.",
        Kind::Gauge,
        v.applied_generation as f64,
    );
    t.single(
        "kolach_controld_snapshots_pushed_total",
        "Snapshots pushed to the dataplane that it answered as applied (a resend after a reconnect included).",
        Kind::Counter,
        v.snapshots_pushed as f64,
    );
    t.single(
        "kolach_controld_snapshot_push_errors_total",
        "Snapshots pushed to the dataplane that it refused (invalid, older than the applied one, or the backend failed).",
        Kind::Counter,
        v.snapshot_push_errors as f64,
    );
    t.single(
        "kolach_controld_dataplane_connected",
        "Whether the snapshot stream to the dataplane is up.",
        Kind::Gauge,
        b(v.dataplane_connected),
    );
    t.single(
        "kolach_controld_config_error",
        "Whether the network config in etcd is unusable.",
        Kind::Gauge,
        b(!v.config_error.is_empty()),
    );
    t.single(
        "kolach_controld_healthy",
        "What /healthz answers: 1 for 200, 0 for 503.",
        Kind::Gauge,
        b(health(f).is_ok()),
    );
    if let Some((st, pools)) = &f.ipam {
        render_ipam(&mut t, st, pools);
    }
    t.single(
        "kolach_dataplane_up",
        "Whether kolach-dataplaned answered its status request.",
        Kind::Gauge,
        b(f.dataplane.is_ok()),
    );
    if let Ok(dp) = &f.dataplane {
        render_dataplane(&mut t, dp);
    }
    t.finish()
}

fn render_ipam(t: &mut Text, st: &StatusReport, pools: &[PoolReport]) {
    t.single(
        "kolach_ipam_ready",
        "Whether the IPAM task hands out addresses.",
        Kind::Gauge,
        b(st.ready),
    );
    per_pool(
        t,
        "kolach_ipam_addresses_in_use",
        "Pod addresses allocated on this host, by pool.",
        pools.iter(),
        |p| p.addresses_in_use as f64,
    );
    per_pool(
        t,
        "kolach_ipam_addresses_free",
        "Pod addresses still free on this host, by pool: in the blocks it holds (the default pool: in its subnet).",
        pools.iter(),
        |p| p.addresses_free as f64,
    );
    per_pool(
        t,
        "kolach_ipam_blocks_held",
        "Pool blocks this host holds, by pool.",
        pools.iter().filter(|p| !p.is_default),
        |p| p.blocks_mine as f64,
    );
    t.single(
        "kolach_ipam_troubled_blocks",
        "Blocks this host's pods have addresses in that it can no longer use.",
        Kind::Gauge,
        st.troubled.len() as f64,
    );
}

/// A gauge family with one sample per pool, labelled `pool`.
fn per_pool<'a>(
    t: &mut Text,
    name: &str,
    help: &str,
    pools: impl Iterator<Item = &'a PoolReport>,
    value: impl Fn(&PoolReport) -> f64,
) {
    let mut f = t.family(name, help, Kind::Gauge);
    for p in pools {
        f.sample(&[("pool", &p.name)], value(p));
    }
}

fn render_dataplane(t: &mut Text, dp: &DataplaneStatus) {
    let c = dp.counters.clone().unwrap_or_default();
    // The four places a packet passes: read from or written to the TUN
    // device, sent or received over the UDP underlay.
    let paths = [
        ("tun_rx", c.tun_rx_packets, c.tun_rx_bytes),
        ("tun_tx", c.tun_tx_packets, c.tun_tx_bytes),
        ("udp_rx", c.udp_rx_packets, c.udp_rx_bytes),
        ("udp_tx", c.udp_tx_packets, c.udp_tx_bytes),
    ];
    let mut f = t.family(
        "kolach_dataplane_packets_total",
        "Packets through the dataplane, by path (tun_rx, tun_tx, udp_rx, udp_tx).",
        Kind::Counter,
    );
    for (p, n, _) in paths {
        f.sample(&[("path", p)], n as f64);
    }
    let mut f = t.family(
        "kolach_dataplane_bytes_total",
        "Bytes through the dataplane, by path (tun_rx, tun_tx, udp_rx, udp_tx).",
        Kind::Counter,
    );
    for (p, _, n) in paths {
        f.sample(&[("path", p)], n as f64);
    }
    let mut f = t.family(
        "kolach_dataplane_dropped_packets_total",
        "Packets the dataplane dropped, by reason.",
        Kind::Counter,
    );
    let mut drops: Vec<_> = c.dropped.iter().collect();
    drops.sort();
    for (reason, n) in drops {
        f.sample(&[("reason", reason)], *n as f64);
    }
    t.single(
        "kolach_dataplane_icmp_unreachable_sent_total",
        "ICMP destination-unreachable answers the dataplane sent.",
        Kind::Counter,
        c.icmp_unreachable_sent as f64,
    );
    t.single(
        "kolach_dataplane_upgrades_total",
        "Hot upgrades since the dataplane was first started.",
        Kind::Counter,
        dp.upgrades as f64,
    );
    t.single(
        "kolach_dataplane_last_upgrade_pause_seconds",
        "How long the packet loop paused in the last hot upgrade.",
        Kind::Gauge,
        dp.handover_pause_us as f64 / 1e6,
    );
    t.single(
        "kolach_dataplane_has_snapshot",
        "Whether the dataplane has applied a snapshot.",
        Kind::Gauge,
        b(dp.has_snapshot),
    );
    let gen = dp.applied_version.as_ref().map_or(0, |v| v.generation);
    t.single(
        "kolach_dataplane_applied_generation",
        "Generation of the snapshot the dataplane applied, as it reports it.",
        Kind::Gauge,
        gen as f64,
    );
    t.single(
        "kolach_dataplane_snapshot_applied_timestamp_seconds",
        "When the dataplane applied its snapshot (Unix time).",
        Kind::Gauge,
        dp.applied_at_unix as f64,
    );
    // Absent from a dataplane older than the field: then no family at all.
    if let Some(h) = &dp.snapshot_apply_seconds {
        match histogram(h) {
            Ok(h) => t.histogram(
                "kolach_dataplane_snapshot_apply_duration_seconds",
                "How long the dataplane took to apply each snapshot, from its receipt to the backend having applied it (since the dataplane's image started).",
                &h,
            ),
            Err(e) => warn!(error = %e, "not rendering the dataplane's snapshot apply histogram"),
        }
    }
    t.single(
        "kolach_dataplane_routes",
        "Routes in the applied snapshot.",
        Kind::Gauge,
        dp.route_count as f64,
    );
    t.single(
        "kolach_dataplane_snapshot_errors",
        "Problems with the applied snapshot.",
        Kind::Gauge,
        dp.errors.len() as f64,
    );
    t.single(
        "kolach_dataplane_start_time_seconds",
        "When the dataplane process started (Unix time).",
        Kind::Gauge,
        dp.start_time_unix as f64,
    );
}

/// The dataplane's histogram, checked.
fn histogram(h: &pb::Histogram) -> Result<Histogram, String> {
    Histogram::new(
        h.buckets
            .iter()
            .map(|b| (b.upper_bound, b.cumulative_count))
            .collect(),
        h.sum,
        h.count,
    )
}

#[cfg(test)]
mod tests;
