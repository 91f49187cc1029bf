use std::collections::HashMap;

use kolach_proto::dataplane::{Counters, DataplaneStatus, SnapshotVersion};

use super::*;

fn running() -> Figures {
    Figures {
        view: View {
            phase: "running",
            subnet: Some("10.5.3.0/24".parse().unwrap()),
            etcd_reachable: true,
            watched_revision: 42,
            etcd_errors: 3,
            generation: 7,
            applied_generation: 7,
            peer_count: 2,
            ..View::default()
        },
        lease_ttl_seconds: 3600,
        dataplane: Ok(DataplaneStatus {
            has_snapshot: true,
            applied_version: Some(SnapshotVersion {
                epoch: 1,
                generation: 7,
                etcd_revision: 42,
            }),
            counters: Some(Counters {
                tun_rx_packets: 10,
                tun_rx_bytes: 840,
                dropped: HashMap::from([("no-route".to_string(), 3), ("malformed".into(), 1)]),
                ..Counters::default()
            }),
            handover_pause_us: 1500,
            ..DataplaneStatus::default()
        }),
        ipam: Some((
            StatusReport::default(),
            vec![
                PoolReport {
                    name: "default".into(),
                    is_default: true,
                    addresses_in_use: 4,
                    ..PoolReport::default()
                },
                PoolReport {
                    name: "big".into(),
                    addresses_in_use: 2,
                    blocks_mine: 1,
                    ..PoolReport::default()
                },
            ],
        )),
    }
}

#[test]
fn renders_both_daemons() {
    let f = running();
    let body = render(&f);
    for line in [
        "kolach_controld_lease_held{subnet=\"10.5.3.0/24\"} 1\n",
        "kolach_controld_lease_expiry_seconds 3600\n",
        "kolach_controld_peers 2\n",
        "kolach_controld_watched_revision 42\n",
        "kolach_controld_etcd_request_errors_total 3\n",
        "kolach_controld_snapshot_generation 7\n",
        "kolach_controld_healthy 1\n",
        "kolach_dataplane_up 1\n",
        "kolach_dataplane_packets_total{path=\"tun_rx\"} 10\n",
        "kolach_dataplane_bytes_total{path=\"tun_rx\"} 840\n",
        "kolach_dataplane_dropped_packets_total{reason=\"malformed\"} 1\n",
        "kolach_dataplane_dropped_packets_total{reason=\"no-route\"} 3\n",
        "kolach_dataplane_last_upgrade_pause_seconds 0.0015\n",
        "kolach_dataplane_applied_generation 7\n",
        "kolach_ipam_addresses_in_use{pool=\"default\"} 4\n",
        "kolach_ipam_blocks_held{pool=\"big\"} 1\n",
    ] {
        assert!(body.contains(line), "missing {line:?} in\n{body}");
    }
    // Every family has HELP and TYPE, and every counter ends in _total.
    for l in body.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut w = l.split(' ').skip(2);
        let (name, kind) = (w.next().unwrap(), w.next().unwrap());
        assert!(body.contains(&format!("# HELP {name} ")), "{name}");
        if kind == "counter" {
            assert!(name.ends_with("_total"), "{name}");
        }
    }
}

#[test]
fn a_dataplane_that_is_down_is_up_0_and_nothing_else() {
    let mut f = running();
    f.dataplane = Err("kolach-dataplaned is not running".into());
    let body = render(&f);
    assert!(body.contains("kolach_dataplane_up 0\n"));
    assert!(!body.contains("kolach_dataplane_packets_total"));
    assert!(body.contains("kolach_controld_healthy 0\n"));
    let why = health(&f).unwrap_err();
    assert!(why.contains("kolach-dataplaned cannot be reached"), "{why}");
}

#[test]
fn health_needs_the_lease_and_an_applied_snapshot() {
    let mut f = running();
    assert_eq!(health(&f), Ok(()));
    if let Ok(dp) = &mut f.dataplane {
        dp.has_snapshot = false;
    }
    assert!(health(&f).unwrap_err().contains("no snapshot"));
    f.view.subnet = None;
    f.view.phase = "claiming";
    let why = health(&f).unwrap_err();
    assert!(
        why.contains("no subnet lease") && why.contains("claiming"),
        "{why}"
    );
    assert!(render(&f).contains("kolach_controld_lease_held 0\n"));
}
