//! Backends (issue 3): the lease value per backend, the VTEP MAC, live
//! backend switches, old lease values rewritten on restart, and leases of
//! another backend ignored and reported.

use std::time::Duration;

use ipnet::Ipv4Net;
use kolach_proto::dataplane::{BackendType, Snapshot};

use crate::common::{self, wait_for, Etcd, Host};
use crate::{net, NET16};

/// lo's MTU (65536) minus each backend's overhead.
const MTU_UDP: u32 = 65508;
const MTU_VXLAN: u32 = 65486;
const MTU_PLAIN: u32 = 65536;

pub fn mac(last: u8) -> Vec<u8> {
    vec![0x0e, 0x6b, 198, 18, 0, last]
}

pub fn value(ip: &str, backend: &str) -> String {
    match backend {
        "vxlan" => {
            let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
            format!(
                r#"{{"PublicIP":"{ip}","BackendType":"vxlan","BackendData":{{"VtepMAC":"0e:6b:c6:12:00:{last:02x}"}}}}"#
            )
        }
        other => format!(r#"{{"PublicIP":"{ip}","BackendType":"{other}","BackendData":null}}"#),
    }
}

pub fn config(backend: &str) -> String {
    format!(r#"{{"Network":"10.50.0.0/16","Backend":{{"Type":"{backend}"}}}}"#)
}

pub fn routes(s: &Snapshot) -> Vec<(Ipv4Net, Vec<u8>)> {
    s.routes
        .iter()
        .map(|r| {
            (
                Ipv4Net::try_from(r.subnet.as_ref().unwrap()).unwrap(),
                r.vtep_mac.clone(),
            )
        })
        .collect()
}

/// Waits until `h`'s key holds `want` and its last snapshot satisfies `snap`.
async fn settled(
    etcd: &Etcd,
    h: &Host,
    subnet: Ipv4Net,
    want: &str,
    what: &str,
    snap: impl Fn(&Snapshot) -> bool,
) {
    wait_for(Duration::from_secs(10), what, || async {
        etcd.subnet(subnet).await.is_some_and(|(v, _)| v == want)
            && h.snapshot().is_some_and(|s| snap(&s))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_switch_rewrites_the_lease_and_keeps_the_subnet() {
    let etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
    let a = Host::start(&etcd, "198.18.0.1", true).await;
    let b = Host::start(&etcd, "198.18.0.2", true).await;
    let sa = a.ready().await;
    let sb = b.ready().await;
    let (v, lease_a) = etcd.subnet(sa).await.unwrap();
    assert_eq!(v, value("198.18.0.1", "udp"));

    // udp → vxlan: the lease gets the VTEP MAC, the snapshot both MACs.
    etcd.put_config(&config("vxlan")).await;
    settled(
        &etcd,
        &a,
        sa,
        &value("198.18.0.1", "vxlan"),
        "A on vxlan",
        |s| routes(s) == vec![(sb, mac(2))] && s.mtu == MTU_VXLAN,
    )
    .await;
    let s = a.snapshot().unwrap();
    let be = s.backend.unwrap();
    assert_eq!(
        (be.r#type, be.port, be.vni),
        (BackendType::Vxlan as i32, 8472, 1)
    );
    assert_eq!(s.local_vtep_mac, mac(1));
    assert_eq!(etcd.subnet(sa).await.unwrap().1, lease_a, "same etcd lease");
    assert_eq!(
        etcd.subnet(sb).await.unwrap().0,
        value("198.18.0.2", "vxlan")
    );
    wait_for(
        Duration::from_secs(5),
        "subnet.env with the vxlan MTU",
        || async {
            a.subnet_env()
                .is_some_and(|e| e.contains(&format!("KOLACH_MTU={MTU_VXLAN}\n")))
        },
    )
    .await;
    let st = a.status().await;
    assert_eq!((st.backend.as_str(), st.mtu), ("vxlan", MTU_VXLAN));
    assert_eq!(a.subnet().await, Some(sa));

    // Another VNI and port: a new snapshot, the same lease value.
    etcd.put_config(
        r#"{"Network":"10.50.0.0/16","Backend":{"Type":"vxlan","VNI":42,"Port":4789}}"#,
    )
    .await;
    wait_for(Duration::from_secs(5), "VNI 42 pushed", || async {
        a.snapshot()
            .and_then(|s| s.backend)
            .is_some_and(|b| b.vni == 42 && b.port == 4789)
    })
    .await;
    assert_eq!(
        etcd.subnet(sa).await.unwrap().0,
        value("198.18.0.1", "vxlan")
    );

    // vxlan → host-gw: no MACs, no overhead.
    etcd.put_config(&config("host-gw")).await;
    settled(
        &etcd,
        &a,
        sa,
        &value("198.18.0.1", "host-gw"),
        "A on host-gw",
        |s| routes(s) == vec![(sb, vec![])] && s.mtu == MTU_PLAIN,
    )
    .await;
    let s = a.snapshot().unwrap();
    assert_eq!(s.backend.unwrap().r#type, BackendType::HostGw as i32);
    assert!(s.local_vtep_mac.is_empty());
    wait_for(
        Duration::from_secs(5),
        "subnet.env with the host-gw MTU",
        || async {
            a.subnet_env()
                .is_some_and(|e| e.contains(&format!("KOLACH_MTU={MTU_PLAIN}\n")))
        },
    )
    .await;

    // host-gw → alloc: still a snapshot (the dataplane does nothing), still running.
    etcd.put_config(&config("alloc")).await;
    settled(
        &etcd,
        &a,
        sa,
        &value("198.18.0.1", "alloc"),
        "A on alloc",
        |s| s.backend.as_ref().unwrap().r#type == BackendType::Alloc as i32 && s.mtu == MTU_PLAIN,
    )
    .await;
    wait_for(Duration::from_secs(5), "alloc applied", || async {
        let st = a.status().await;
        st.phase == "running" && st.applied_generation == st.generation && st.backend == "alloc"
    })
    .await;

    // And back to udp.
    etcd.put_config(NET16).await;
    settled(
        &etcd,
        &a,
        sa,
        &value("198.18.0.1", "udp"),
        "A on udp",
        |s| routes(s) == vec![(sb, vec![])] && s.mtu == MTU_UDP,
    )
    .await;
    wait_for(
        Duration::from_secs(5),
        "subnet.env with the udp MTU",
        || async {
            a.subnet_env()
                .is_some_and(|e| e.contains(&format!("KOLACH_MTU={MTU_UDP}\n")))
        },
    )
    .await;

    // Never a second key, never another subnet or etcd lease.
    let keys = etcd.subnets().await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(etcd.subnet(sa).await.unwrap().1, lease_a);
    assert_eq!(a.subnet().await, Some(sa));
    assert_eq!(b.subnet().await, Some(sb));
    // Peers in the middle of a switch were skipped for a moment; none is now.
    wait_for(
        Duration::from_secs(5),
        "no standing skip warning",
        || async {
            !a.status()
                .await
                .warnings
                .iter()
                .any(|w| w.contains("of another backend"))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_rewrites_an_old_lease_value_and_keeps_the_subnet() {
    let etcd = Etcd::start().await;
    etcd.put_config(&config("vxlan")).await;
    // An older kolach's lease (udp, before the switch) and flannel's vxlan
    // lease (VNI, a random MAC, its IPv6 fields).
    let old_a = etcd
        .fake_peer("10.50.33.0/24", &value("198.18.0.1", "udp"))
        .await;
    let old_b = etcd
        .fake_peer(
            "10.50.34.0/24",
            r#"{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"},"BackendV6Data":null}"#,
        )
        .await;
    let a = Host::start(&etcd, "198.18.0.1", true).await;
    let b = Host::start(&etcd, "198.18.0.2", true).await;
    assert_eq!(a.ready().await, net("10.50.33.0/24"));
    assert_eq!(b.ready().await, net("10.50.34.0/24"));
    assert_eq!(
        etcd.subnet(net("10.50.33.0/24")).await.unwrap(),
        (value("198.18.0.1", "vxlan"), old_a)
    );
    assert_eq!(
        etcd.subnet(net("10.50.34.0/24")).await.unwrap(),
        (value("198.18.0.2", "vxlan"), old_b)
    );
    wait_for(
        Duration::from_secs(5),
        "A routes to B by its new MAC",
        || async {
            a.snapshot()
                .is_some_and(|s| routes(&s) == vec![(net("10.50.34.0/24"), mac(2))])
        },
    )
    .await;

    // A restart with the value already right writes nothing.
    let dir = a.stop().await;
    let before = etcd.client().await.get("x", None).await.unwrap();
    let rev = before.header().unwrap().revision();
    let a = Host::start_in(&etcd, dir, "198.18.0.1", true, &[]).await;
    assert_eq!(a.ready().await, net("10.50.33.0/24"));
    let kv = etcd
        .client()
        .await
        .get(format!("{}/subnets/10.50.33.0-24", common::PREFIX), None)
        .await
        .unwrap();
    assert!(kv.kvs()[0].mod_revision() <= rev, "not rewritten again");
    assert_eq!(a.snapshot().unwrap().local_vtep_mac, mac(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_gets_the_vxlan_value_and_stays_a_reservation() {
    let etcd = Etcd::start().await;
    etcd.put_config(&config("vxlan")).await;
    etcd.reserve("10.50.40.0/24", "198.18.0.1").await;
    let a = Host::start(&etcd, "198.18.0.1", true).await;
    assert_eq!(a.ready().await, net("10.50.40.0/24"));
    assert_eq!(
        etcd.subnet(net("10.50.40.0/24")).await.unwrap(),
        (value("198.18.0.1", "vxlan"), 0)
    );
    assert!(a.status().await.reservation);
}
