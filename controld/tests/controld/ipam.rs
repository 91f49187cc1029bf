//! Pod addresses against a real etcd: the default pool, named pools and
//! their blocks, idempotence, no reuse, concurrency, durability across a
//! restart, GC, pool edits, and blocks given back.

use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use kolach_proto::ipam::ipam_client::IpamClient;
use kolach_proto::ipam::{
    AddPoolSubnetRequest, AllocateRequest, Attachment, BlocksRequest, CheckRequest,
    CreatePoolRequest, DeletePoolRequest, GcRequest, PoolsRequest, ReleaseRequest, StatusRequest,
};
use tonic::transport::Channel;
use tonic::Code;

use crate::common::{wait_for, Etcd, Host, TempDir};
use crate::{net, NET16};

pub(crate) const PREFIX: &str = "/coreos.com/network";

pub(crate) fn att(c: &str) -> Option<Attachment> {
    Some(Attachment {
        container_id: c.into(),
        ifname: "eth0".into(),
    })
}

pub(crate) fn add(c: &str, ns: &str) -> AllocateRequest {
    AllocateRequest {
        attachment: att(c),
        network: "kolach".into(),
        pod_namespace: ns.into(),
        ..Default::default()
    }
}

pub(crate) async fn addr(ipam: &mut IpamClient<Channel>, c: &str, ns: &str) -> (Ipv4Addr, bool) {
    let r = ipam.allocate(add(c, ns)).await.unwrap().into_inner();
    let a = r.allocation.unwrap();
    (
        Ipv4Addr::try_from(a.address.as_ref().unwrap()).unwrap(),
        r.existing,
    )
}

pub(crate) async fn create_pool(
    ipam: &mut IpamClient<Channel>,
    name: &str,
    subnet: &str,
    block_len: u32,
) {
    ipam.create_pool(CreatePoolRequest {
        name: name.into(),
        subnets: vec![net(subnet).into()],
        block_len,
        max_blocks_per_host: 0,
    })
    .await
    .unwrap();
}

/// The etcd store's current revision (any write moves it).
async fn revision(etcd: &Etcd) -> i64 {
    etcd.client()
        .await
        .get("/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

pub(crate) async fn blocks_in_etcd(etcd: &Etcd) -> Vec<(String, String, i64)> {
    let resp = etcd
        .client()
        .await
        .get(
            format!("{PREFIX}/blocks/"),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    resp.kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
                kv.value_str().unwrap().to_string(),
                kv.lease(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_pool_order_idempotence_no_reuse_and_concurrency() {
    let etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
    let a = Host::start(&etcd, "198.18.0.1", true).await;
    let subnet = a.ready().await;
    let mut ipam = a.ipam().await;

    let st = ipam.status(StatusRequest {}).await.unwrap().into_inner();
    assert!(st.ready, "{}", st.reason);
    assert_eq!(st.mtu, 65508);

    // .0 (kolach device) and .1 (KOLACH_SUBNET) are never handed out.
    let first = Ipv4Addr::from(u32::from(subnet.network()) + 2);
    let (a1, existing) = addr(&mut ipam, "c1", "").await;
    assert_eq!((a1, existing), (first, false));
    // ADD again for the same (container, ifname): the same address.
    assert_eq!(addr(&mut ipam, "c1", "").await, (first, true));
    // Another ifname of the same container is another attachment.
    let r = ipam
        .allocate(AllocateRequest {
            attachment: Some(Attachment {
                container_id: "c1".into(),
                ifname: "net1".into(),
            }),
            ..add("c1", "")
        })
        .await
        .unwrap()
        .into_inner();
    let second = Ipv4Addr::try_from(r.allocation.unwrap().address.as_ref().unwrap()).unwrap();
    assert_eq!(u32::from(second), u32::from(first) + 1);

    // Freed, and not handed out again next.
    let rel = ipam
        .release(ReleaseRequest {
            attachment: att("c1"),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(rel.released);
    let (a3, _) = addr(&mut ipam, "c3", "").await;
    assert_ne!(a3, first, "a freed address is not reused at once");
    // DEL of something unknown succeeds.
    let rel = ipam
        .release(ReleaseRequest {
            attachment: att("nobody"),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!rel.released);
    // CHECK knows who holds what.
    let e = ipam
        .check(CheckRequest {
            attachment: att("c1"),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // 100 ADDs, 10 at a time: 100 distinct addresses in the subnet, and no
    // etcd write for any of them.
    let rev = revision(&etcd).await;
    let mut got = BTreeSet::new();
    for round in 0..10 {
        let mut tasks = Vec::new();
        for i in 0..10 {
            let mut c = ipam.clone();
            tasks.push(tokio::spawn(async move {
                addr(&mut c, &format!("p{round}-{i}"), "").await.0
            }));
        }
        for t in tasks {
            assert!(got.insert(t.await.unwrap()), "an address handed out twice");
        }
    }
    assert_eq!(got.len(), 100);
    assert!(got.iter().all(|a| subnet.contains(a)));
    assert_eq!(
        revision(&etcd).await,
        rev,
        "ADDs in the default pool write nothing to etcd"
    );

    // GC with a valid list frees exactly the others.
    let valid: Vec<Attachment> = (0..10)
        .map(|i| Attachment {
            container_id: format!("p0-{i}"),
            ifname: "eth0".into(),
        })
        .collect();
    let freed = ipam
        .gc(GcRequest {
            network: "kolach".into(),
            valid: valid.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .freed;
    // c1/net1, c3 and p1..p9 (90) go; p0-* (10) stay.
    assert_eq!(freed.len(), 92);
    let left: HashSet<String> = ipam
        .addresses(kolach_proto::ipam::AddressesRequest {})
        .await
        .unwrap()
        .into_inner()
        .allocations
        .into_iter()
        .map(|a| a.attachment.unwrap().container_id)
        .collect();
    assert_eq!(left, valid.iter().map(|v| v.container_id.clone()).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_pools_blocks_restart_and_give_back() {
    let etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
    let dir = std::sync::Arc::new(TempDir::new("ipam-pools"));
    let grace = ["--block-grace", "2s"];
    let a = Host::start_in(&etcd, dir.clone(), "198.18.0.1", true, &grace).await;
    let b = Host::start(&etcd, "198.18.0.2", true).await;
    a.ready().await;
    b.ready().await;
    let mut ipam = a.ipam().await;

    // Pool edits are validated before anything is written.
    let e = ipam
        .create_pool(CreatePoolRequest {
            name: "inside".into(),
            subnets: vec![net("10.50.200.0/24").into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "pool inside: Subnets 10.50.200.0/24 overlaps the overlay Network 10.50.0.0/16"
    );
    create_pool(&mut ipam, "blue", "203.0.113.0/24", 28).await;
    let e = ipam
        .create_pool(CreatePoolRequest {
            name: "blue".into(),
            subnets: vec![net("198.51.100.0/24").into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);

    // A pod of namespace "blue" gets an address in a block claimed for A,
    // attached to A's etcd lease.
    let (p1, _) = addr(&mut ipam, "b1", "blue").await;
    assert!(net("203.0.113.0/24").contains(&p1), "{p1}");
    let blocks = blocks_in_etcd(&etcd).await;
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!(blocks[0].0, "203.0.113.0-28");
    assert_eq!(blocks[0].1, r#"{"Pool":"blue","PublicIP":"198.18.0.1"}"#);
    assert_ne!(blocks[0].2, 0, "the block rides on the host's etcd lease");
    // The next ADD fits the block: no etcd write.
    let rev = revision(&etcd).await;
    let (p2, _) = addr(&mut ipam, "b2", "blue").await;
    assert_eq!(revision(&etcd).await, rev);
    assert_ne!(p1, p2);

    // B's pods of the pool get B's own block; each host routes the other's.
    let mut ipam_b = b.ipam().await;
    let (q1, _) = addr(&mut ipam_b, "x1", "blue").await;
    assert!(net("203.0.113.16/28").contains(&q1), "{q1}");
    wait_for(Duration::from_secs(5), "A routes B's block", || async {
        a.snapshot().is_some_and(|s| {
            s.routes.iter().any(|r| {
                r.blocks
                    .iter()
                    .any(|b| Ipv4Net::try_from(b).unwrap() == net("203.0.113.16/28"))
            }) && s
                .local_blocks
                .iter()
                .any(|b| Ipv4Net::try_from(b).unwrap() == net("203.0.113.0/28"))
        })
    })
    .await;

    // A pool with blocks held cannot be deleted; a pool's subnet can be added.
    let e = ipam
        .delete_pool(DeletePoolRequest {
            name: "blue".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    let p = ipam
        .add_pool_subnet(AddPoolSubnetRequest {
            name: "blue".into(),
            subnet: Some(net("198.51.100.0/24").into()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.subnets.len(), 2);
    let pools = ipam
        .pools(PoolsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pools;
    let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["default", "blue"]);
    assert_eq!(pools[1].blocks_held, 2);
    assert_eq!(pools[1].blocks_mine, 1);
    assert_eq!(pools[1].addresses_in_use, 2);

    // controld restarts between ADD and DEL: the allocation survives, and
    // DEL frees it.
    drop(ipam);
    let dir = a.stop().await;
    let a = Host::start_in(&etcd, dir, "198.18.0.1", true, &grace).await;
    a.ready().await;
    let mut ipam = a.ipam().await;
    assert_eq!(addr(&mut ipam, "b1", "blue").await, (p1, true));
    for c in ["b1", "b2"] {
        assert!(
            ipam.release(ReleaseRequest { attachment: att(c) })
                .await
                .unwrap()
                .into_inner()
                .released
        );
    }
    // Empty for the grace period (2 s here): A gives its block back; B keeps its.
    wait_for(
        Duration::from_secs(15),
        "A's empty block given back",
        || async {
            let b = blocks_in_etcd(&etcd).await;
            b.len() == 1 && b[0].0 == "203.0.113.16-28"
        },
    )
    .await;
    let blocks = ipam
        .blocks(BlocksRequest {})
        .await
        .unwrap()
        .into_inner()
        .blocks;
    assert_eq!(blocks.len(), 1);
    assert!(!blocks[0].is_self);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_problem() {
    let etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
    // A broken pool in etcd: named in status, and its pods are refused
    // rather than silently given a default address.
    etcd.client()
        .await
        .put(
            format!("{PREFIX}/pools/broken"),
            r#"{"Subnets":["x"]}"#,
            None,
        )
        .await
        .unwrap();
    etcd.client()
        .await
        .put(
            format!("{PREFIX}/pools/tiny"),
            r#"{"Subnets":["192.0.2.0/29"],"BlockLen":30,"MaxBlocksPerHost":1}"#,
            None,
        )
        .await
        .unwrap();
    let a = Host::start(&etcd, "198.18.0.1", true).await;
    a.ready().await;
    let mut ipam = a.ipam().await;
    wait_for(Duration::from_secs(5), "pools listed", || {
        let mut c = ipam.clone();
        async move {
            c.pools(PoolsRequest {})
                .await
                .unwrap()
                .into_inner()
                .pools
                .len()
                == 3
        }
    })
    .await;
    let e = ipam.allocate(add("p", "broken")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        "pool broken is not usable: pool broken: Subnets x is not an IPv4 CIDR"
    );
    let e = ipam
        .allocate(AllocateRequest {
            pool: "nope".into(),
            ..add("p", "")
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(
        e.message(),
        "pool nope does not exist (named by the CNI config's \"pool\"); create it with kolachctl pool create"
    );
    // tiny: one block of 4 per host; the 5th pod has nowhere to go.
    for i in 0..4 {
        addr(&mut ipam, &format!("t{i}"), "tiny").await;
    }
    let e = ipam.allocate(add("t4", "tiny")).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(
        e.message(),
        "pool tiny: this host's blocks are full and it may hold no more (MaxBlocksPerHost 1; \
         1 of 2 blocks of 192.0.2.0/29 held, by 1 host; this host: 1 block, 4 addresses in use); \
         raise MaxBlocksPerHost in the pool's key or free addresses"
    );
    // Another host takes the pool's last block: a third finds none.
    etcd.client()
        .await
        .put(
            format!("{PREFIX}/blocks/192.0.2.4-30"),
            r#"{"Pool":"tiny","PublicIP":"198.18.0.9"}"#,
            None,
        )
        .await
        .unwrap();
    let b = Host::start(&etcd, "198.18.0.2", true).await;
    b.ready().await;
    let mut ipam_b = b.ipam().await;
    wait_for(Duration::from_secs(5), "B read pools and blocks", || {
        let mut c = ipam_b.clone();
        async move { c.status(StatusRequest {}).await.unwrap().into_inner().ready }
    })
    .await;
    let e = ipam_b.allocate(add("u0", "tiny")).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(
        e.message(),
        "pool tiny is exhausted: no free block (2 of 2 blocks of 192.0.2.0/29 held, by 2 hosts; \
         this host: 0 blocks, 0 addresses in use); add a subnet (kolachctl pool add-subnet) or free addresses"
    );
    let e = ipam
        .allocate(AllocateRequest {
            attachment: None,
            ..add("", "")
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

/// From a thread running as uid 65534 (per-thread setresuid; the rest of the
/// test stays root): Control answers, every Ipam call is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipam_answers_root_only() {
    use std::os::unix::fs::PermissionsExt;
    let etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
    let a = Host::start(&etcd, "198.18.0.1", true).await;
    a.ready().await;
    let sock = a.dir.path().join(kolach_proto::CONTROLD_SOCKET);
    // Let the other uid open the socket at all; the gate is what is tested.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (status_ok, codes) = kolach_testkit::process::as_uid(65534, || async {
        let ch = kolach_proto::uds::connect(&sock, "kolach-controld")
            .await
            .unwrap();
        let mut control = kolach_proto::control::control_client::ControlClient::new(ch.clone());
        let status_ok = control
            .status(kolach_proto::control::StatusRequest {})
            .await
            .is_ok();
        let mut ipam = IpamClient::new(ch);
        let codes = vec![
            ipam.allocate(add("x", "")).await.unwrap_err().code(),
            ipam.status(StatusRequest {}).await.unwrap_err().code(),
            ipam.pools(PoolsRequest {}).await.unwrap_err().code(),
        ];
        (status_ok, codes)
    });
    assert!(
        status_ok,
        "Control.Status is for everyone the socket lets in"
    );
    assert_eq!(codes, vec![Code::PermissionDenied; 3]);
    // Nothing was allocated for the refused caller.
    let mut ipam = a.ipam().await;
    let all = ipam
        .addresses(kolach_proto::ipam::AddressesRequest {})
        .await
        .unwrap()
        .into_inner()
        .allocations;
    assert!(all.is_empty());
}

/// A block that still holds pod addresses comes back when its key is lost
/// (deleted here; an expired etcd lease does the same), and a block of this
/// host on another etcd lease is moved onto the host's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_in_use_are_kept_on_the_hosts_lease() {
    let etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
    let dir = std::sync::Arc::new(TempDir::new("ipam-keep"));
    let a = Host::start_in(&etcd, dir, "198.18.0.1", true, &["--block-grace", "2s"]).await;
    let subnet = a.ready().await;
    let (_, host_lease) = etcd.subnet(subnet).await.expect("the host's lease");
    let mut ipam = a.ipam().await;
    create_pool(&mut ipam, "blue", "203.0.113.0/24", 28).await;
    let (p1, _) = addr(&mut ipam, "k1", "blue").await;
    assert!(net("203.0.113.0/28").contains(&p1));
    let key = format!("{PREFIX}/blocks/203.0.113.0-28");

    // The key is lost while the block still holds k1's address.
    etcd.client().await.delete(key.clone(), None).await.unwrap();
    wait_for(Duration::from_secs(5), "the block claimed back", || async {
        let b = blocks_in_etcd(&etcd).await;
        b.len() == 1 && b[0].0 == "203.0.113.0-28" && b[0].2 == host_lease
    })
    .await;

    // Someone puts it on another etcd lease: it moves back onto the host's.
    let mut c = etcd.client().await;
    let other = c.lease_grant(300, None).await.unwrap().id();
    c.put(
        key.clone(),
        r#"{"Pool":"blue","PublicIP":"198.18.0.1"}"#,
        Some(etcd_client::PutOptions::new().with_lease(other)),
    )
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(5),
        "the block back on the host's lease",
        || async {
            let b = blocks_in_etcd(&etcd).await;
            b.len() == 1 && b[0].2 == host_lease
        },
    )
    .await;
    // The address stayed k1's throughout.
    assert_eq!(addr(&mut ipam, "k1", "blue").await, (p1, true));
}
