//! Claiming, keeping and getting back subnets; peers in the snapshot.

use std::collections::BTreeSet;
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::common::{wait_for, Etcd, Host, TempDir};
use crate::{net, NET16};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_claim_different_subnets_and_route_to_each_other() {
    let etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
    let a = Host::start(&etcd, "198.18.0.1", true).await;
    let b = Host::start(&etcd, "198.18.0.2", true).await;
    let sa = a.ready().await;
    let sb = b.ready().await;
    assert_ne!(sa, sb);
    assert!(net("10.50.0.0/16").contains(&sa) && sa.prefix_len() == 24);
    assert_ne!(
        sa,
        net("10.50.0.0/24"),
        "SubnetMin defaults to the second subnet"
    );

    // subnet.env per the contract (lo's MTU is 65536; udp takes 28).
    let env = a.subnet_env().unwrap();
    assert_eq!(
        env,
        format!(
            "KOLACH_NETWORK=10.50.0.0/16\nKOLACH_SUBNET={}/24\nKOLACH_MTU=65508\nKOLACH_IPMASQ=false\n",
            std::net::Ipv4Addr::from(u32::from(sa.network()) + 1)
        )
    );

    wait_for(Duration::from_secs(5), "A routes to B", || async {
        a.routes() == vec![sb]
    })
    .await;
    wait_for(Duration::from_secs(5), "B routes to A", || async {
        b.routes() == vec![sa]
    })
    .await;

    let snap = a.dp.as_ref().unwrap().rec.last().unwrap();
    assert_eq!(snap.mtu, 65508);
    assert_eq!(snap.iface, "lo");
    assert_eq!(snap.backend.unwrap().port, 8285);
    assert_eq!(
        Ipv4Net::try_from(snap.local_subnet.as_ref().unwrap()).unwrap(),
        sa
    );
    let v = snap.version.unwrap();
    assert!(v.epoch > 0 && v.generation >= 1 && v.etcd_revision > 0);

    // The keys hold flannel's JSON, attached to etcd leases.
    let keys = etcd.subnets().await;
    let (_, value, lease) = keys.iter().find(|(s, _, _)| *s == sa).unwrap();
    assert_eq!(
        value,
        r#"{"PublicIP":"198.18.0.1","BackendType":"udp","BackendData":null}"#
    );
    assert_ne!(*lease, 0);

    let st = a.status().await;
    assert_eq!(st.phase, "running");
    assert!(st.etcd_reachable && st.dataplane_connected);
    assert_eq!(st.backend, "udp");
    assert_eq!(st.mtu, 65508);
    assert_eq!(st.iface, "lo");
    assert_eq!(st.peer_count, 1);
    assert!(!st.reservation);
    assert!(st.applied_generation >= 1 && st.applied_generation <= st.generation);
    assert!(st.config_error.is_empty());
    assert!(st.watched_revision > 0);
    wait_for(
        Duration::from_secs(10),
        "keepalive TTL in status",
        || async {
            let t = a.status().await.lease_ttl_seconds;
            t > 20 && t <= 30
        },
    )
    .await;

    let leases = a.leases().await;
    assert_eq!(leases.leases.len(), 2);
    let me = leases.leases.iter().find(|l| l.is_self).unwrap();
    assert_eq!(Ipv4Net::try_from(me.subnet.as_ref().unwrap()).unwrap(), sa);
    assert!(me.expires_in_seconds > 0 && me.expires_in_seconds <= 30);
    assert_eq!(me.backend_type, "udp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_gets_the_same_subnet() {
    let etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
    let a = Host::start(&etcd, "198.18.0.1", true).await;
    let first = a.ready().await;
    let dir = a.stop().await;

    // Same host again: its lease (by PublicIP) is still there.
    std::fs::remove_file(dir.path().join("subnet.env")).unwrap();
    let a = Host::start_in(&etcd, dir.clone(), "198.18.0.1", true, &[]).await;
    assert_eq!(a.ready().await, first);
    assert_eq!(etcd.subnets().await.len(), 1, "no second lease");
    let dir = a.stop().await;

    // Lease gone (expired) and a new PublicIP: subnet.env still brings it back.
    etcd.delete_subnet(first).await;
    let a = Host::start_in(&etcd, dir, "198.18.0.9", true, &[]).await;
    assert_eq!(a.ready().await, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_are_honoured() {
    let etcd = Etcd::start().await;
    etcd.put_config(
        r#"{"Network":"10.50.0.0/16","SubnetMin":"10.50.1.0","SubnetMax":"10.50.2.0"}"#,
    )
    .await;
    // 10.50.1.0/24 is reserved for .5; 10.50.200.0/24 (outside Min/Max) for .6.
    etcd.reserve("10.50.1.0/24", "198.18.0.5").await;
    etcd.reserve("10.50.200.0/24", "198.18.0.6").await;

    let other = Host::start(&etcd, "198.18.0.7", true).await;
    assert_eq!(
        other.ready().await,
        net("10.50.2.0/24"),
        "never the reserved subnet"
    );

    let owner = Host::start(&etcd, "198.18.0.6", true).await;
    assert_eq!(owner.ready().await, net("10.50.200.0/24"));
    let st = owner.status().await;
    assert!(st.reservation);
    assert_eq!(st.lease_ttl_seconds, 0);
    let leases = owner.leases().await;
    let me = leases.leases.iter().find(|l| l.is_self).unwrap();
    assert!(me.reservation);
    assert_eq!(me.expires_in_seconds, -1);
    // The reservation is used as is: still no etcd lease on it.
    let keys = etcd.subnets().await;
    assert!(keys
        .iter()
        .any(|(s, _, l)| *s == net("10.50.200.0/24") && *l == 0));
    wait_for(Duration::from_secs(5), "routes both ways", || async {
        owner.routes().contains(&net("10.50.2.0/24"))
            && other.routes().contains(&net("10.50.200.0/24"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_for_the_same_subnet_all_end_distinct() {
    let etcd = Etcd::start().await;
    etcd.put_config(
        r#"{"Network":"10.50.0.0/16","SubnetMin":"10.50.1.0","SubnetMax":"10.50.4.0"}"#,
    )
    .await;
    // Every host believes 10.50.3.0/24 was its subnet before: they all race
    // for that key first, and the losers must list again and pick again.
    let mut dirs = Vec::new();
    for _ in 0..4 {
        let d = std::sync::Arc::new(TempDir::new("race"));
        std::fs::write(
            d.path().join("subnet.env"),
            "KOLACH_NETWORK=10.50.0.0/16\nKOLACH_SUBNET=10.50.3.1/24\nKOLACH_MTU=1472\nKOLACH_IPMASQ=false\n",
        )
        .unwrap();
        dirs.push(d);
    }
    let starts = dirs.iter().enumerate().map(|(i, d)| {
        let ip = format!("198.18.0.{}", 10 + i);
        let etcd = &etcd;
        async move { Host::start_in(etcd, d.clone(), &ip, true, &[]).await }
    });
    let hosts = futures::future::join_all(starts).await;
    let mut got = BTreeSet::new();
    for h in &hosts {
        wait_for(Duration::from_secs(20), "a subnet", || async {
            h.subnet().await.is_some()
        })
        .await;
        got.insert(h.subnet().await.unwrap());
    }
    assert_eq!(got.len(), 4, "every host got its own subnet: {got:?}");
    assert_eq!(etcd.subnets().await.len(), 4);
    for h in &hosts {
        h.ready().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_or_revoked_own_lease_is_reclaimed() {
    let etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
    let a = Host::start(&etcd, "198.18.0.1", true).await;
    let sa = a.ready().await;

    etcd.delete_subnet(sa).await;
    wait_for(Duration::from_secs(5), "key back", || async {
        etcd.subnets()
            .await
            .iter()
            .any(|(s, v, _)| *s == sa && v.contains("198.18.0.1"))
    })
    .await;
    assert_eq!(a.subnet().await, Some(sa), "same subnet: its key was free");
    assert!(a
        .status()
        .await
        .warnings
        .iter()
        .any(|w| w.contains("lost lease")));

    // Revoking the etcd lease deletes the key and ends the keepalive.
    let lease = etcd.subnets().await.iter().find(|k| k.0 == sa).unwrap().2;
    etcd.client().await.lease_revoke(lease).await.unwrap();
    wait_for(
        Duration::from_secs(5),
        "key back on a new lease",
        || async {
            etcd.subnets()
                .await
                .iter()
                .any(|(s, _, l)| *s == sa && *l != lease && *l != 0)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_and_garbage_are_watched() {
    let etcd = Etcd::start().await;
    // Away from the fake peers' keys, which are plain puts.
    etcd.put_config(r#"{"Network":"10.50.0.0/16","SubnetMin":"10.50.100.0"}"#)
        .await;
    let a = Host::start(&etcd, "198.18.0.1", true).await;
    a.ready().await;
    // A flannel udp peer (no BackendType), a vxlan peer (other backend), garbage.
    etcd.fake_peer("10.50.77.0/24", r#"{"PublicIP":"198.18.0.77"}"#)
        .await;
    etcd.fake_peer("10.50.78.0/24", r#"{"PublicIP":"198.18.0.78","BackendType":"vxlan","BackendData":{"VtepMAC":"aa:bb:cc:dd:ee:ff"}}"#).await;
    etcd.fake_peer("10.50.79.0/24", r#"{"PublicIP":"nonsense"}"#)
        .await;
    wait_for(Duration::from_secs(5), "flannel peer routed", || async {
        a.routes() == vec![net("10.50.77.0/24")]
    })
    .await;
    let leases = a.leases().await;
    let vx = leases
        .leases
        .iter()
        .find(|l| l.backend_type == "vxlan")
        .expect("vxlan lease listed");
    assert_eq!(vx.backend_data, r#"{"VtepMAC":"aa:bb:cc:dd:ee:ff"}"#);
    assert_eq!(leases.leases.len(), 3, "garbage is not listed as a lease");

    etcd.delete_subnet(net("10.50.77.0/24")).await;
    wait_for(Duration::from_secs(2), "deleted peer unrouted", || async {
        a.routes().is_empty()
    })
    .await;
}
