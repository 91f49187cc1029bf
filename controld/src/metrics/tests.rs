use std::collections::HashMap;

use kolach_proto::dataplane::{
    Counters, DataplaneStatus, Histogram as HistogramPb, HistogramBucket, SnapshotVersion,
};

use super::*;

fn apply_seconds(buckets: &[(f64, u64)], sum: f64, count: u64) -> HistogramPb {
    HistogramPb {
        buckets: buckets
            .iter()
            .map(|&(upper_bound, cumulative_count)| HistogramBucket {
                upper_bound,
                cumulative_count,
            })
            .collect(),
        sum,
        count,
    }
}

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
            snapshots_pushed: 9,
            snapshot_push_errors: 1,
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
            snapshot_apply_seconds: Some(apply_seconds(
                &[(0.001, 2), (0.01, 5), (0.1, 6)],
                0.21,
                7,
            )),
            last_apply_us: 800,
            ..DataplaneStatus::default()
        }),
        ipam: Some((
            StatusReport::default(),
            vec![
                PoolReport {
                    name: "default".into(),
                    is_default: true,
                    addresses_in_use: 4,
                    addresses_free: 249,
                    ..PoolReport::default()
                },
                PoolReport {
                    name: "big".into(),
                    addresses_in_use: 2,
                    addresses_free: 14,
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
        "kolach_ipam_addresses_free{pool=\"default\"} 249\n",
        "kolach_ipam_addresses_free{pool=\"big\"} 14\n",
        "kolach_controld_snapshots_pushed_total 9\n",
        "kolach_controld_snapshot_push_errors_total 1\n",
        "# TYPE kolach_dataplane_snapshot_apply_duration_seconds histogram\n",
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

#[test]
fn the_apply_histogram_is_rendered_cumulative_with_inf_equal_to_count() {
    let body = render(&running());
    let name = "kolach_dataplane_snapshot_apply_duration_seconds";
    let lines: Vec<&str> = body.lines().filter(|l| l.starts_with(name)).collect();
    assert_eq!(
        lines,
        [
            format!("{name}_bucket{{le=\"0.001\"}} 2"),
            format!("{name}_bucket{{le=\"0.01\"}} 5"),
            format!("{name}_bucket{{le=\"0.1\"}} 6"),
            format!("{name}_bucket{{le=\"+Inf\"}} 7"),
            format!("{name}_sum 0.21"),
            format!("{name}_count 7"),
        ]
    );
    assert!(body.contains(&format!("# HELP {name} ")));
}

#[test]
fn an_older_dataplane_or_a_bad_histogram_leaves_only_the_histogram_out() {
    for h in [
        None,
        // Counts that fall: not a cumulative histogram.
        Some(apply_seconds(&[(0.001, 3), (0.01, 2)], 0.1, 3)),
        // More in a bucket than observed.
        Some(apply_seconds(&[(0.001, 4)], 0.1, 3)),
    ] {
        let mut f = running();
        if let Ok(dp) = &mut f.dataplane {
            dp.snapshot_apply_seconds = h.clone();
        }
        let body = render(&f);
        assert!(
            !body.contains("kolach_dataplane_snapshot_apply_duration_seconds"),
            "{h:?}:\n{body}"
        );
        assert!(body.contains("kolach_dataplane_routes "), "{h:?}");
    }
}
