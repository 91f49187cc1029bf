//! Export (DESIGN §10) against a real kernel, in a namespace this test
//! makes, asserting on what `ip -j route show table N` shows: this host's
//! subnet and blocks as `dev lo proto 107` in the export table on the alloc
//! backend (which forwards nothing), a released block withdrawn, a restart
//! from the saved snapshot changing nothing, a moved ExportTable, 0 turning
//! it off, another protocol's routes in that table untouched, and
//! `--cleanup` removing the rest.

mod common;

use std::sync::Arc;

use common::recording::Recording;
use common::{snapshot, with_blocks, Monitor, Netns, NsRuntime, TempDir};
use kolach_dataplaned::engine::{Engine, Origin};
use kolach_dataplaned::kernel::{Kernel, RtNetlink};
use kolach_proto::dataplane::{self as pb, BackendType};

const B: (&str, &str) = ("10.50.7.0/24", "198.18.0.2");

/// An alloc snapshot exporting to `table`, with this host's `blocks`.
fn alloc(generation: u64, table: u32, blocks: &[&str]) -> pb::Snapshot {
    let mut s = with_blocks(
        snapshot(
            BackendType::Alloc,
            generation,
            "10.50.18.0/24",
            "198.18.0.1",
            &[B],
        ),
        blocks,
        &[&[]],
    );
    s.export_table = table;
    s
}

/// `ip -j route show table <table>` as "dst dev d proto p" lines, sorted.
fn table(ns: &Netns, table: u32) -> Vec<String> {
    let t = table.to_string();
    let v = ns.ip_json(&["route", "show", "table", &t]);
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} dev {} proto {}",
                r["dst"].as_str().unwrap(),
                r["dev"].as_str().unwrap_or("-"),
                r["protocol"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| r["protocol"].to_string())
            )
        })
        .collect();
    out.sort();
    out
}

fn apply(rt: &NsRuntime, e: &Arc<Engine>, s: pb::Snapshot) {
    let e = e.clone();
    let r = rt.run(async move { e.apply(s, Origin::Controld).await });
    assert!(r.applied, "{}", r.reason);
    assert!(r.reason.is_empty(), "{}", r.reason);
}

#[test]
fn export_table_follows_the_snapshot_survives_a_restart_and_is_cleaned_up() {
    let ns = Netns::new("kexp");
    let rt = ns.runtime();
    let dir = TempDir::new("kexp-run");
    // A routing daemon's route in the export table: never touched.
    ns.ip(&[
        "route",
        "add",
        "192.0.2.0/24",
        "dev",
        "lo",
        "proto",
        "bird",
        "table",
        "119",
    ]);
    let e = {
        let d = dir.0.clone();
        rt.run(async move {
            let k: Arc<dyn Kernel> = Arc::new(RtNetlink::connect().unwrap());
            Arc::new(Engine::new(
                d,
                "kolach0".into(),
                k,
                Arc::new(kolach_dataplaned::firewall::System),
            ))
        })
    };
    apply(
        &rt,
        &e,
        alloc(1, 119, &["203.0.113.0/28", "198.51.100.64/28"]),
    );
    assert_eq!(
        table(&ns, 119),
        [
            "10.50.18.0/24 dev lo proto 107",
            "192.0.2.0/24 dev lo proto bird",
            "198.51.100.64/28 dev lo proto 107",
            "203.0.113.0/28 dev lo proto 107",
        ]
    );
    assert!(e.status().errors.is_empty(), "{:?}", e.status().errors);
    assert_eq!(e.status().export_table, 119);
    // Nothing in the main table: alloc forwards nothing, export is apart.
    let main = ns.ip(&["route", "show", "proto", "107"]);
    assert!(main.trim().is_empty(), "{main}");

    // A block given back is withdrawn; the rest stays as it is.
    let mon = Monitor::start(&ns);
    apply(&rt, &e, alloc(2, 119, &["203.0.113.0/28"]));
    let events = mon.finish();
    let lines: Vec<&str> = events.lines().collect();
    assert_eq!(lines.len(), 1, "{events}");
    assert!(
        lines[0].starts_with("Deleted 198.51.100.64/28 dev lo table 119 proto 107"),
        "{events}"
    );

    // A restart restores the saved snapshot: not one change.
    let e2 = {
        let d = dir.0.clone();
        rt.run(async move { e.shutdown().await });
        rt.run(async move {
            let rec = Arc::new(Recording::new(RtNetlink::connect().unwrap()));
            let k: Arc<dyn Kernel> = rec.clone();
            let e = Arc::new(Engine::new(
                d,
                "kolach0".into(),
                k,
                Arc::new(kolach_dataplaned::firewall::System),
            ));
            e.restore().await;
            assert!(rec.changes().is_empty(), "{:?}", rec.changes());
            e
        })
    };
    assert_eq!(e2.status().export_table, 119);

    // ExportTable moved: the new table is filled, the old one emptied of
    // kolach's routes only.
    apply(&rt, &e2, alloc(3, 1000, &["203.0.113.0/28"]));
    assert_eq!(table(&ns, 119), ["192.0.2.0/24 dev lo proto bird"]);
    assert_eq!(
        table(&ns, 1000),
        [
            "10.50.18.0/24 dev lo proto 107",
            "203.0.113.0/28 dev lo proto 107"
        ]
    );
    // 0: off.
    apply(&rt, &e2, alloc(4, 0, &["203.0.113.0/28"]));
    let all = ns.ip(&["route", "show", "table", "all", "proto", "107"]);
    assert!(all.trim().is_empty(), "{all}");
    assert_eq!(e2.status().export_table, 0);

    // --cleanup removes the export too.
    apply(&rt, &e2, alloc(5, 119, &["203.0.113.0/28"]));
    assert_eq!(table(&ns, 119).len(), 3);
    rt.run(async move { e2.shutdown().await });
    let d = dir.0.clone();
    rt.run(async move {
        let k = RtNetlink::connect().unwrap();
        kolach_dataplaned::daemon::cleanup::cleanup(
            Ok(&k),
            &kolach_dataplaned::firewall::System,
            "kolach0",
            &d,
        )
        .await
    })
    .unwrap();
    assert_eq!(table(&ns, 119), ["192.0.2.0/24 dev lo proto bird"]);
}
