//! `kolachctl status`: both daemons side by side. A daemon that does not answer
//! is reported in a sentence and makes the exit status non-zero.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use kolach_proto::control::StatusRequest as ControlStatusRequest;
use kolach_proto::dataplane::StatusRequest as DataplaneStatusRequest;
use serde::Serialize;

use crate::cli::{print_json, Cli};
use crate::view::{duration, Controld, Dataplane};

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
    dataplane: Answer<Dataplane>,
}

pub async fn run(cli: &Cli) -> Result<bool> {
    let (controld, dataplane) = tokio::join!(controld(cli), dataplane(cli));
    let ok = matches!((&controld, &dataplane), (Answer::Ok(_), Answer::Ok(_)));
    let report = Report {
        controld,
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
            kv(
                "dataplaned",
                format!(
                    "pid {}, version {}, up {}, {} upgrades",
                    d.pid,
                    d.version,
                    duration(now - d.start_time_unix),
                    d.upgrades
                ),
            );
            match &d.applied_version {
                Some(v) if d.has_snapshot => kv(
                    "snapshot",
                    format!(
                        "generation {} (epoch {}, etcd revision {}), applied {} ago, {} routes",
                        v.generation,
                        v.epoch,
                        v.etcd_revision,
                        duration(now - d.applied_at_unix),
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

    #[test]
    fn down_daemons_are_sentences() {
        let r = Report {
            controld: Answer::Down {
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
}
