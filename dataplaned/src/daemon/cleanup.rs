//! `--cleanup`: remove everything kolach-dataplaned made (proto-107 routes,
//! `kolach.*` vxlan devices, the TUN, table `ip kolach` and the tagged
//! FORWARD rules, the saved snapshot), going on past
//! failures and reporting all of them at the end.

use std::fmt;
use std::path::Path;

use crate::engine::store;
use crate::firewall::{self, Runner};
use crate::kernel::reconcile;
use crate::kernel::Kernel;

/// Every failure of one cleanup run.
#[derive(Debug)]
pub struct CleanupErrors(pub Vec<String>);

impl fmt::Display for CleanupErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cleanup finished with {} error(s): ", self.0.len())?;
        f.write_str(&self.0.join("; "))
    }
}

impl std::error::Error for CleanupErrors {}

/// Deletes every proto-107 route (in any table), every `kolach.*` vxlan
/// device, the TUN device `tun` (only if it is a TUN device) and the saved
/// snapshot in `run_dir`. `kernel` is Err when no netlink socket could be
/// opened; that failure is reported with the others.
pub async fn cleanup(
    kernel: Result<&dyn Kernel, String>,
    fw: &dyn Runner,
    tun: &str,
    run_dir: &Path,
) -> Result<(), CleanupErrors> {
    let mut errors = Vec::new();
    match kernel {
        Err(e) => errors.push(e),
        Ok(k) => {
            kernel_objects(k, tun, &mut errors).await;
        }
    }
    errors.extend(firewall::cleanup(fw).await);
    match store::remove(run_dir) {
        Ok(()) => tracing::info!(path = %store::path(run_dir).display(), "saved snapshot removed"),
        Err(e) => errors.push(e.to_string()),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CleanupErrors(errors))
    }
}

async fn kernel_objects(k: &dyn Kernel, tun: &str, errors: &mut Vec<String>) {
    // Routes first (every table): host-gw routes go through a device that stays.
    match k.routes_all_tables().await {
        Ok(routes) => {
            for (table, r) in routes {
                match k.del_route_in(table, r).await {
                    Ok(()) => tracing::info!(route = %r, table, "route removed"),
                    Err(e) => errors.push(format!("removing route {r} (table {table}): {e}")),
                }
            }
        }
        Err(e) => errors.push(format!("listing routes: {e}")),
    }
    let links = match k.links().await {
        Ok(l) => l,
        Err(e) => {
            errors.push(format!("listing links: {e}"));
            return;
        }
    };
    for l in reconcile::stale_devices(&links, None, tun, false) {
        match k.delete_link(l.index).await {
            Ok(()) => tracing::info!(device = %l.name, kind = %l.kind, "device removed"),
            Err(e) => errors.push(format!("removing {}: {e}", l.name)),
        }
    }
    match links.iter().find(|l| l.name == tun) {
        None => tracing::info!(device = tun, "no TUN device to remove"),
        Some(l) if l.kind == "tun" => {}
        Some(l) => errors.push(format!(
            "{tun} is a {} device, not a TUN; left alone",
            if l.kind.is_empty() {
                "non-TUN"
            } else {
                &l.kind
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::fake::FakeRunner;
    use crate::kernel::fake::FakeKernel;

    #[tokio::test]
    async fn removes_tun_and_snapshot_and_reports_all_errors() {
        let d = std::env::temp_dir().join(format!("kdp-cleanup-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        store::save(&d, &crate::snapshot::tests::good()).unwrap();
        let k = FakeKernel::with_link("kolach0", 4);
        let fw = FakeRunner::default();
        cleanup(Ok(&k), &fw, "kolach0", &d).await.unwrap();
        assert_eq!(k.take_calls(), ["delete-link 4"]);
        assert!(store::load(&d).unwrap().is_none());
        // Nothing left: still fine.
        cleanup(Ok(&k), &fw, "kolach0", &d).await.unwrap();

        // Two failures (no netlink; snapshot.pb is a directory), both reported.
        std::fs::create_dir_all(store::path(&d)).unwrap();
        let e = cleanup(Err("no netlink".into()), &fw, "kolach0", &d)
            .await
            .unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert!(e
            .to_string()
            .starts_with("cleanup finished with 2 error(s): no netlink; "));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn removes_kolach_routes_and_vxlan_devices_only() {
        use crate::kernel::kobjects::KRoute;
        let d = std::env::temp_dir().join(format!("kdp-cleanup-all-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let k = FakeKernel::default();
        let fw = FakeRunner::default();
        k.add_link("eth0", 2, "veth", &["198.18.0.1/24"]);
        k.add_link("kolach0", 3, "tun", &[]);
        k.add_link("vxlan0", 4, "vxlan", &[]);
        for (name, index) in [("kolach.1", 5), ("kolach.7", 6)] {
            k.add_link(name, index, "vxlan", &[]);
        }
        let r = |dst: &str, via: &str| KRoute {
            dst: dst.parse().unwrap(),
            via: via.parse().unwrap(),
            oif: 2,
            onlink: false,
        };
        k.add_foreign_route(r("10.50.7.0/24", "198.18.0.2"), 107);
        // The udp backend's route for a peer's pool block, into the TUN.
        k.add_foreign_route(KRoute::device("203.0.113.16/28".parse().unwrap(), 3), 107);
        k.add_foreign_route(r("192.0.2.0/24", "198.18.0.254"), 4);
        k.other_tables.lock().unwrap().extend([
            (100, r("10.50.9.0/24", "198.18.0.3"), 107),
            (100, r("10.50.8.0/24", "198.18.0.3"), 4),
        ]);
        cleanup(Ok(&k), &fw, "kolach0", &d).await.unwrap();
        assert_eq!(
            k.take_calls(),
            [
                "route del 10.50.7.0/24 via 198.18.0.2 dev eth0",
                "route del 203.0.113.16/28 dev kolach0",
                "route del 10.50.9.0/24 via 198.18.0.3 dev eth0 table 100",
                "delete-link 5",
                "delete-link 6",
                "delete-link 3",
            ]
        );
        assert_eq!(
            k.links.lock().unwrap().keys().collect::<Vec<_>>(),
            ["eth0", "vxlan0"]
        );
        assert_eq!(k.routes.lock().unwrap().len(), 1);
        assert_eq!(k.other_tables.lock().unwrap().len(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
