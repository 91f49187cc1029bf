//! `kolachctl status`: both daemons side by side. A daemon that does not answer
//! is reported in a sentence and makes the exit status non-zero.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use kolach_proto::control::StatusRequest as ControlStatusRequest;
use kolach_proto::dataplane::StatusRequest as DataplaneStatusRequest;
use kolach_proto::ipam::StatusRequest as IpamStatusRequest;
use serde::Serialize;

use crate::cli::Cli;
use crate::clients::{print_json, Connect};
use crate::ipam_view::IpamLine;
use crate::view::{duration, size, Controld, Dataplane};

/// One daemon's answer, or why there is none.
#[derive(Serialize)]
#[serde(untagged)]
enum Answer<T> {
    Ok(T),
    Down { error: String },
}

#[derive(Serialize)]
struct Report {
    controld: Answer<Controld>,
    /// Pod addresses (root only; its absence does not fail the status).
    ipam: Answer<IpamLine>,
    dataplane: Answer<Dataplane>,
}

pub async fn run(cli: &Cli) -> Result<bool> {
    let (controld, ipam, dataplane) = tokio::join!(controld(cli), ipam(cli), dataplane(cli));
    let ok = matches!((&controld, &dataplane), (Answer::Ok(_), Answer::Ok(_)));
    let report = Report {
        controld,
        ipam,
        dataplane,
    };
    if cli.json {
        print_json(&report);
    } else {
        print!("{}", render(&report, now()));
    }
    Ok(ok)
}

async fn controld(cli: &Cli) -> Answer<Controld> {
    let reply = async {
        let mut client = cli.controld().await?;
        anyhow::Ok(client.status(ControlStatusRequest {}).await?.into_inner())
    };
    match reply.await {
        Ok(s) => Answer::Ok(s.into()),
        Err(e) => Answer::Down { error: describe(e) },
    }
}

async fn ipam(cli: &Cli) -> Answer<IpamLine> {
    let reply = async {
        let mut client = cli.ipam().await?;
        anyhow::Ok(client.status(IpamStatusRequest {}).await?.into_inner())
    };
    match reply.await {
        Ok(s) => Answer::Ok(s.into()),
        Err(e) => Answer::Down { error: describe(e) },
    }
}

async fn dataplane(cli: &Cli) -> Answer<Dataplane> {
    let reply = async {
        let mut client = cli.dataplaned().await?;
        anyhow::Ok(client.status(DataplaneStatusRequest {}).await?.into_inner())
    };
    match reply.await {
        Ok(s) => Answer::Ok(s.into()),
        Err(e) => Answer::Down { error: describe(e) },
    }
}

fn describe(e: anyhow::Error) -> String {
    match e.downcast_ref::<tonic::Status>() {
        Some(s) => format!("{}: {}", s.code(), s.message()),
        None => format!("{e:#}"),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn or_dash(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

fn render(r: &Report, now: i64) -> String {
    let mut out = String::new();
    let mut kv = |k: &str, v: String| out.push_str(&format!("  {k:<12} {v}\n"));
    match &r.controld {
        Answer::Down { error } => kv("controld", error.clone()),
        Answer::Ok(c) => {
            kv(
                "controld",
                format!(
                    "{} (pid {}, version {}, up {})",
                    c.phase,
                    c.pid,
                    c.version,
                    duration(now - c.start_time_unix)
                ),
            );
            let lease = if c.reservation {
                "reservation".to_string()
            } else {
                format!("lease, ttl {}", duration(c.lease_ttl_seconds))
            };
            kv("subnet", format!("{} ({lease})", or_dash(&c.subnet)));
            kv(
                "public ip",
                format!("{} on {}", or_dash(&c.public_ip), c.iface),
            );
            kv(
                "network",
                format!(
                    "{}, backend {}, mtu {}",
                    or_dash(&c.network),
                    c.backend,
                    c.mtu
                ),
            );
            kv(
                "etcd",
                format!(
                    "{} {}, watched revision {}",
                    c.etcd_endpoints.join(","),
                    if c.etcd_reachable {
                        "reachable"
                    } else {
                        "UNREACHABLE"
                    },
                    c.watched_revision
                ),
            );
            kv(
                "push",
                format!(
                    "dataplane {}, generation {} (applied {}), {} peers",
                    if c.dataplane_connected {
                        "connected"
                    } else {
                        "DISCONNECTED"
                    },
                    c.generation,
                    c.applied_generation,
                    c.peer_count
                ),
            );
            if let Some(a) = &c.aws {
                kv("aws-vpc", a.render());
            }
            match &r.ipam {
                Answer::Ok(i) => {
                    kv("ipam", i.render());
                    for t in &i.troubled_blocks {
                        kv(t.key(), t.render());
                    }
                }
                Answer::Down { error } => kv("ipam", error.clone()),
            }
            if let Some(e) = &c.config_error {
                kv("config", format!("INVALID, keeping the last good one: {e}"));
            }
            for w in &c.warnings {
                kv("warning", w.clone());
            }
        }
    }
    match &r.dataplane {
        Answer::Down { error } => kv("dataplaned", error.clone()),
        Answer::Ok(d) => {
            let last = match (d.upgraded_at_unix, d.handover_pause_us) {
                (Some(at), Some(us)) => format!(
                    " (last {} ago, packet loop paused {:.1} ms)",
                    duration(now - at),
                    us as f64 / 1000.0
                ),
                _ => String::new(),
            };
            kv(
                "dataplaned",
                format!(
                    "pid {}, version {}, up {}, {} upgrades{last}",
                    d.pid,
                    d.version,
                    duration(now - d.start_time_unix),
                    d.upgrades
                ),
            );
            if let Some(b) = &d.binary {
                let replaced = if b.changed_on_disk {
                    "; REPLACED on disk since it started: `kolachctl dataplane upgrade` runs the new file"
                } else {
                    ""
                };
                kv(
                    "binary",
                    format!(
                        "{} (inode {}, {}, modified {} ago){replaced}",
                        b.path,
                        b.inode,
                        size(b.size),
                        duration(now - b.mtime_unix)
                    ),
                );
            }
            if let Some(e) = &d.upgrade_error {
                kv(
                    "upgrade",
                    format!("FAILED, still running the old binary: {e}"),
                );
            }
            match &d.applied_version {
                Some(v) if d.has_snapshot => kv(
                    "snapshot",
                    format!(
                        "generation {} (epoch {}, etcd revision {}), applied {} ago{}, {} routes",
                        v.generation,
                        v.epoch,
                        v.etcd_revision,
                        duration(now - d.applied_at_unix),
                        d.last_apply_us
                            .map(|us| format!(" in {:.1} ms", us as f64 / 1000.0))
                            .unwrap_or_default(),
                        d.route_count
                    ),
                ),
                _ => kv("snapshot", "none yet (waiting for controld)".into()),
            }
            if let Some(b) = &d.backend {
                let port = d.port.map(|p| format!(" port {p}")).unwrap_or_default();
                kv(
                    "backend",
                    format!("{b}{port} on {} mtu {}, mode {}", d.device, d.mtu, d.mode),
                );
            }
            if d.has_snapshot {
                kv(
                    "export",
                    match d.export_table {
                        0 => "off (ExportTable 0)".to_string(),
                        t => format!("subnet and blocks in table {t} (dev lo proto 107)"),
                    },
                );
            }
            if let Some(f) = &d.firewall {
                kv("firewall", f.line());
            }
            let c = &d.counters;
            kv(
                "packets",
                format!(
                    "out {} ({} B), in {} ({} B), icmp unreachable {}",
                    c.udp_tx_packets,
                    c.udp_tx_bytes,
                    c.tun_tx_packets,
                    c.tun_tx_bytes,
                    c.icmp_unreachable_sent
                ),
            );
            let dropped: Vec<String> = c
                .dropped
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            if !dropped.is_empty() {
                kv("dropped", dropped.join(", "));
            }
            for e in &d.errors {
                kv("error", e.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report with both controld and the IPAM down and this dataplane.
    fn dataplane_only(st: kolach_proto::dataplane::DataplaneStatus) -> Report {
        fn down<T>() -> Answer<T> {
            Answer::Down {
                error: "down".into(),
            }
        }
        Report {
            controld: down(),
            ipam: down(),
            dataplane: Answer::Ok(st.into()),
        }
    }

    #[test]
    fn down_daemons_are_sentences() {
        let r = Report {
            controld: Answer::Down {
                error: "kolach-controld is not running (no socket at /x/controld.sock)".into(),
            },
            ipam: Answer::Down {
                error: "kolach-controld is not running (no socket at /x/controld.sock)".into(),
            },
            dataplane: Answer::Down {
                error: "kolach-dataplaned is not running (no socket at /x/dataplaned.sock)".into(),
            },
        };
        let text = render(&r, 0);
        assert!(text.contains("controld     kolach-controld is not running"));
        assert!(text.contains("dataplaned   kolach-dataplaned is not running"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["dataplane"]["error"],
            "kolach-dataplaned is not running (no socket at /x/dataplaned.sock)"
        );
    }

    #[test]
    fn dataplane_shows_upgrades_and_a_replaced_binary() {
        use kolach_proto::dataplane::{Binary, DataplaneStatus};
        let st = DataplaneStatus {
            pid: 4242,
            version: "0.1.0".into(),
            start_time_unix: 1000,
            upgrades: 3,
            upgraded_at_unix: 1090,
            handover_pause_us: 4200,
            binary: Some(Binary {
                path: "/usr/bin/kolach-dataplaned".into(),
                device: 2049,
                inode: 777,
                size: 12_500_000,
                mtime_unix: 500,
                changed_on_disk: true,
            }),
            upgrade_error: "cannot execute /usr/bin/kolach-dataplaned: ENOENT".into(),
            ..Default::default()
        };
        let r = dataplane_only(st);
        let text = render(&r, 1100);
        assert!(
            text.contains("pid 4242, version 0.1.0, up 1m40s, 3 upgrades (last 10s ago, packet loop paused 4.2 ms)"),
            "{text}"
        );
        assert!(
            text.contains("binary       /usr/bin/kolach-dataplaned (inode 777, 12.5 MB, modified 10m00s ago); REPLACED"),
            "{text}"
        );
        assert!(
            text.contains("upgrade      FAILED, still running the old binary: cannot execute"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["dataplane"]["binary"]["inode"], 777);
        assert_eq!(json["dataplane"]["binary"]["changed_on_disk"], true);
        assert_eq!(json["dataplane"]["upgrades"], 3);
    }

    #[test]
    fn snapshot_line_says_how_long_the_apply_took() {
        use kolach_proto::dataplane::{DataplaneStatus, SnapshotVersion};
        let report = |last_apply_us| {
            dataplane_only(DataplaneStatus {
                has_snapshot: true,
                applied_version: Some(SnapshotVersion {
                    epoch: 1,
                    generation: 4,
                    etcd_revision: 30,
                }),
                applied_at_unix: 90,
                last_apply_us,
                route_count: 2,
                ..Default::default()
            })
        };
        let text = render(&report(1240), 100);
        assert!(
            text.contains(
                "generation 4 (epoch 1, etcd revision 30), applied 10s ago in 1.2 ms, 2 routes"
            ),
            "{text}"
        );
        // An older dataplane does not say.
        assert!(render(&report(0), 100).contains("applied 10s ago, 2 routes"));
        let json = serde_json::to_value(report(1240)).unwrap();
        assert_eq!(json["dataplane"]["last_apply_us"], 1240);
    }

    #[test]
    fn dataplane_shows_the_export_table() {
        use kolach_proto::dataplane::DataplaneStatus;
        let report = |export_table| {
            dataplane_only(DataplaneStatus {
                has_snapshot: true,
                export_table,
                ..Default::default()
            })
        };
        let text = render(&report(119), 0);
        assert!(
            text.contains("export       subnet and blocks in table 119 (dev lo proto 107)"),
            "{text}"
        );
        assert!(render(&report(0), 0).contains("export       off (ExportTable 0)"));
        let json = serde_json::to_value(report(119)).unwrap();
        assert_eq!(json["dataplane"]["export_table"], 119);
    }

    #[test]
    fn dataplane_shows_the_firewall() {
        use kolach_proto::dataplane::{DataplaneStatus, Firewall};
        let report = |firewall| {
            dataplane_only(DataplaneStatus {
                has_snapshot: true,
                firewall,
                ..Default::default()
            })
        };
        let on = Firewall {
            ip_masq: true,
            masq_table: "ip kolach".into(),
            forward_rules: true,
            forward_chain: "FORWARD".into(),
        };
        let text = render(&report(Some(on.clone())), 0);
        assert!(
            text.contains(
                "firewall     masquerade on (table ip kolach), forward rules on (FORWARD chain)"
            ),
            "{text}"
        );
        let off = Firewall {
            ip_masq: false,
            forward_rules: false,
            ..on.clone()
        };
        assert!(render(&report(Some(off)), 0)
            .contains("masquerade off (table ip kolach), forward rules off (FORWARD chain)"));
        // An older dataplane does not say: no line.
        assert!(!render(&report(None), 0).contains("firewall"));
        let json = serde_json::to_value(report(Some(on))).unwrap();
        assert_eq!(json["dataplane"]["firewall"]["ip_masq"], true);
        assert_eq!(json["dataplane"]["firewall"]["forward_chain"], "FORWARD");
    }
}
