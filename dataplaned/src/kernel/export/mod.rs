//! Export (DESIGN §10, coil's table 119): this host's subnet and each of its
//! pool blocks as `<prefix> dev lo proto 107` in the routing table the
//! snapshot names, so a routing daemon (BIRD's kernel protocol with `learn`)
//! can advertise them. Every backend exports the same way, alloc included:
//! these routes are not on the forwarding path (no rule looks the table up),
//! they only say what this host holds.
//!
//! Reconciled like the main table, never flushed: [`plan`] (pure) compares
//! what is wanted with kolach's proto-107 routes outside the main table and
//! returns the changes, table by table; [`sync`] reads and carries them out.
//! A proto-107 route in any table but main and the export table is a stale
//! export (an earlier `ExportTable`, or export since turned off) and goes;
//! routes of other protocols are never read, so never touched.

use ipnet::Ipv4Net;

use crate::kernel::kobjects::KRoute;
use crate::kernel::reconcile::{self, Objects, Op};
use crate::kernel::sync::Report;
use crate::kernel::Kernel;

/// The main table: the backends' routes, never the export's business.
pub const MAIN: u32 = 254;
/// The device every exported route names.
pub const LOOPBACK: &str = "lo";

/// The route that exports `prefix`: `<prefix> dev lo` (scope link).
pub fn route(prefix: Ipv4Net, lo: u32) -> KRoute {
    KRoute::device(prefix, lo)
}

/// The changes, as (table, op), that leave exactly `prefixes` in `table`
/// (none when `table` is 0) of kolach's routes outside the main table:
/// the export table's additions and replacements first, then its stale
/// routes, then every other table's, so a moved `ExportTable` is filled
/// before the old one is emptied. `actual` is kolach's routes of every
/// table, as [`Kernel::routes_all_tables`] lists them.
pub fn plan(table: u32, prefixes: &[Ipv4Net], lo: u32, actual: &[(u32, KRoute)]) -> Vec<(u32, Op)> {
    let mut ops = Vec::new();
    if table != 0 {
        let want = Objects {
            routes: prefixes.iter().map(|p| route(*p, lo)).collect(),
            ..Default::default()
        };
        let have = Objects {
            routes: actual
                .iter()
                .filter(|(t, _)| *t == table)
                .map(|(_, r)| *r)
                .collect(),
            ..Default::default()
        };
        ops.extend(
            reconcile::plan(&want, &have)
                .into_iter()
                .map(|op| (table, op)),
        );
    }
    ops.extend(
        actual
            .iter()
            .filter(|(t, _)| *t != MAIN && *t != table)
            .map(|(t, r)| (*t, Op::DelRoute(*r))),
    );
    ops
}

/// Makes the kernel's export match (`table`, `prefixes`). Never fails the
/// apply: forwarding does not depend on it, so what cannot be done is
/// reported (log + status errors) and the next snapshot tries again.
pub async fn sync(k: &dyn Kernel, table: u32, prefixes: &[Ipv4Net]) -> Report {
    let mut report = Report::default();
    let actual = match k.routes_all_tables().await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list routes for the export table");
            report.errors.push(format!("export: listing routes: {e}"));
            return report;
        }
    };
    // Looked up when off too, only to name it in the log.
    let lo = match (k.link(LOOPBACK).await, table) {
        (Ok(Some((index, _))), _) => index,
        (_, 0) => 0,
        (Ok(None), _) => {
            report.errors.push(format!(
                "export to table {table}: there is no {LOOPBACK} device"
            ));
            return report;
        }
        (Err(e), _) => {
            report
                .errors
                .push(format!("export to table {table}: reading {LOOPBACK}: {e}"));
            return report;
        }
    };
    for (t, op) in plan(table, prefixes, lo, &actual) {
        let result = match op {
            Op::AddRoute(r) => k.add_route_in(t, r, false).await,
            Op::ReplaceRoute(r) => k.add_route_in(t, r, true).await,
            Op::DelRoute(r) => k.del_route_in(t, r).await,
            // The plan holds routes only.
            _ => continue,
        };
        let text = op.to_string().replace(&format!("dev #{lo}"), "dev lo");
        match result {
            Ok(()) => {
                report.changes += 1;
                tracing::info!(op = %text, table = t, "export updated");
            }
            Err(e) => {
                tracing::warn!(op = %text, table = t, error = %e, "kernel refused an export change");
                report.errors.push(match op {
                    Op::AddRoute(r) if e.errno() == Some(libc::EEXIST) => format!(
                        "export: table {t} has a route to {} that kolach did not make (not proto 107); left alone",
                        r.dst
                    ),
                    _ => format!("export: {text} (table {t}): {e}"),
                });
            }
        }
    }
    report
}

#[cfg(test)]
mod tests;
