//! The export plan on values, and the sync against the fake kernel.

use super::*;
use crate::kernel::fake::FakeKernel;

fn n(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn nets(v: &[&str]) -> Vec<Ipv4Net> {
    v.iter().map(|s| n(s)).collect()
}

const LO: u32 = 1;

fn lo(s: &str) -> KRoute {
    route(n(s), LO)
}

fn text(ops: &[(u32, Op)]) -> Vec<String> {
    ops.iter()
        .map(|(t, op)| format!("table {t}: {op}"))
        .collect()
}

#[test]
fn fresh_export_adds_subnet_and_blocks() {
    let ops = plan(119, &nets(&["10.50.18.0/24", "203.0.113.0/28"]), LO, &[]);
    assert_eq!(
        text(&ops),
        [
            "table 119: add route 10.50.18.0/24 dev #1",
            "table 119: add route 203.0.113.0/28 dev #1",
        ]
    );
}

#[test]
fn nothing_to_do_when_in_place_and_main_is_never_touched() {
    let actual = [
        (119, lo("10.50.18.0/24")),
        (119, lo("203.0.113.0/28")),
        // The backends' routes: not the export's business.
        (MAIN, KRoute::device(n("203.0.113.16/28"), 3)),
    ];
    let ops = plan(
        119,
        &nets(&["10.50.18.0/24", "203.0.113.0/28"]),
        LO,
        &actual,
    );
    assert!(ops.is_empty(), "{:?}", text(&ops));
    // Off: only the export table's routes go.
    let ops = plan(0, &nets(&["10.50.18.0/24"]), LO, &actual);
    assert_eq!(
        text(&ops),
        [
            "table 119: delete route 10.50.18.0/24 dev #1",
            "table 119: delete route 203.0.113.0/28 dev #1",
        ]
    );
}

#[test]
fn released_block_is_withdrawn_and_wrong_shape_replaced() {
    let actual = [
        (119, lo("10.50.18.0/24")),
        (119, lo("203.0.113.0/28")),
        // Same prefix, but via a gateway: replaced in one step.
        (
            119,
            KRoute {
                dst: n("203.0.113.16/28"),
                via: "198.18.0.9".parse().unwrap(),
                oif: 2,
                onlink: false,
            },
        ),
    ];
    let ops = plan(
        119,
        &nets(&["10.50.18.0/24", "203.0.113.16/28"]),
        LO,
        &actual,
    );
    assert_eq!(
        text(&ops),
        [
            "table 119: replace route 203.0.113.16/28 dev #1",
            "table 119: delete route 203.0.113.0/28 dev #1",
        ]
    );
}

#[test]
fn moved_table_fills_the_new_one_before_emptying_the_old() {
    let actual = [(119, lo("10.50.18.0/24")), (77, lo("10.50.9.0/24"))];
    let ops = plan(200, &nets(&["10.50.18.0/24"]), LO, &actual);
    assert_eq!(
        text(&ops),
        [
            "table 200: add route 10.50.18.0/24 dev #1",
            "table 119: delete route 10.50.18.0/24 dev #1",
            "table 77: delete route 10.50.9.0/24 dev #1",
        ]
    );
}

/// The fake kernel with `lo` and an underlay device.
fn kernel() -> FakeKernel {
    let k = FakeKernel::default();
    k.add_link("lo", LO, "", &["127.0.0.1/8"]);
    k.add_link("eth0", 2, "veth", &["198.18.0.1/24"]);
    k
}

#[tokio::test]
async fn sync_reconciles_and_a_second_sync_changes_nothing() {
    let k = kernel();
    let want = nets(&["10.50.18.0/24", "203.0.113.0/28"]);
    let r = sync(&k, 119, &want).await;
    assert_eq!((r.changes, r.errors.len()), (2, 0), "{r:?}");
    assert_eq!(
        k.table(119),
        [
            "10.50.18.0/24 dev lo proto 107",
            "203.0.113.0/28 dev lo proto 107"
        ]
    );
    k.take_calls();
    // A restart of either daemon re-applies the same snapshot: no change,
    // so BIRD never sees a withdrawal.
    let r = sync(&k, 119, &want).await;
    assert_eq!(r, Report::default());
    assert!(k.take_calls().is_empty());
    // Nothing went to the main table.
    assert!(k.objects().is_empty());
}

#[tokio::test]
async fn sync_leaves_other_protocols_and_main_alone() {
    let k = kernel();
    let other = |dst: &str| KRoute {
        dst: n(dst),
        via: "198.18.0.254".parse().unwrap(),
        oif: 2,
        onlink: false,
    };
    // BIRD's own route in the export table, a static one in another table,
    // a kolach route in main, and someone's route to our subnet in 119.
    k.other_tables.lock().unwrap().extend([
        (119, other("192.0.2.0/24"), 12),
        (50, other("192.0.2.0/24"), 4),
        (119, other("10.50.18.0/24"), 4),
    ]);
    k.add_foreign_route(other("10.50.7.0/24"), 107);
    let r = sync(&k, 119, &nets(&["10.50.18.0/24", "203.0.113.0/28"])).await;
    assert_eq!(r.changes, 1);
    assert_eq!(
        r.errors,
        ["export: table 119 has a route to 10.50.18.0/24 that kolach did not make (not proto 107); left alone"]
    );
    assert_eq!(
        k.table(119),
        [
            "10.50.18.0/24 via 198.18.0.254 dev eth0 proto 4",
            "192.0.2.0/24 via 198.18.0.254 dev eth0 proto 12",
            "203.0.113.0/28 dev lo proto 107",
        ]
    );
    assert_eq!(
        k.table(50),
        ["192.0.2.0/24 via 198.18.0.254 dev eth0 proto 4"]
    );
    assert_eq!(
        k.objects(),
        ["10.50.7.0/24 via 198.18.0.254 dev eth0 proto 107"]
    );
    // Off: our route goes, nothing else.
    let r = sync(&k, 0, &[]).await;
    assert_eq!((r.changes, r.errors.len()), (1, 0), "{r:?}");
    assert_eq!(k.table(119).len(), 2);
    assert_eq!(k.objects().len(), 1);
}

#[tokio::test]
async fn sync_moves_to_a_new_table() {
    let k = kernel();
    sync(&k, 119, &nets(&["10.50.18.0/24"])).await;
    k.take_calls();
    let r = sync(&k, 1000, &nets(&["10.50.18.0/24"])).await;
    assert_eq!(r.changes, 2);
    assert_eq!(
        k.take_calls(),
        [
            "route add 10.50.18.0/24 dev lo table 1000",
            "route del 10.50.18.0/24 dev lo table 119",
        ]
    );
    assert!(k.table(119).is_empty());
    assert_eq!(k.table(1000), ["10.50.18.0/24 dev lo proto 107"]);
}
