//! A block's life past the happy path, against a real etcd: a block lost to
//! another host and a block left outside its pool by an edit are reported
//! in status with their pods until resolved, hand out nothing, and the one
//! still held is given back as soon as it is empty; giving back is a
//! transaction on the key's mod revision.

use std::net::Ipv4Addr;
use std::time::Duration;

use kolach_controld::etcd::kv::Written;
use kolach_controld::etcd::{EtcdOptions, Registry};
use kolach_proto::ipam::ipam_client::IpamClient;
use kolach_proto::ipam::{
    BlockTrouble, BlocksRequest, IpamStatus, PoolsRequest, ReleaseRequest, StatusRequest,
    TroubledBlock,
};
use tonic::transport::Channel;

use crate::common::{wait_for, Etcd, Host, TempDir};
use crate::ipam::{addr, att, blocks_in_etcd, create_pool, PREFIX};
use crate::{net, NET16};

async fn status(ipam: &IpamClient<Channel>) -> IpamStatus {
    ipam.clone()
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// (block, trouble, holder, container IDs) of each troubled block.
fn troubles(st: &IpamStatus) -> Vec<(String, BlockTrouble, Option<Ipv4Addr>, Vec<String>)> {
    st.troubled_blocks
        .iter()
        .map(|t: &TroubledBlock| {
            (
                ipnet::Ipv4Net::try_from(t.block.as_ref().unwrap())
                    .unwrap()
                    .to_string(),
                t.trouble(),
                t.holder.as_ref().map(|h| Ipv4Addr::try_from(h).unwrap()),
                t.allocations
                    .iter()
                    .map(|a| a.attachment.as_ref().unwrap().container_id.clone())
                    .collect(),
            )
        })
        .collect()
}

async fn release(ipam: &mut IpamClient<Channel>, c: &str) {
    let r = ipam
        .release(ReleaseRequest { attachment: att(c) })
        .await
        .unwrap()
        .into_inner();
    assert!(r.released, "{c} was not allocated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_and_stray_blocks_are_reported_until_resolved() {
    let etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
    // Grace 6 s (ticks every 1.5 s): a stray block goes back at the first
    // tick after it empties, an ordinary one only after the grace.
    let dir = std::sync::Arc::new(TempDir::new("ipam-trouble"));
    let a = Host::start_in(&etcd, dir, "198.18.0.1", true, &["--block-grace", "6s"]).await;
    a.ready().await;
    let mut ipam = a.ipam().await;
    create_pool(&mut ipam, "blue", "203.0.113.0/24", 28).await;
    let mut c = etcd.client().await;
    c.put(
        format!("{PREFIX}/pools/red"),
        r#"{"Subnets":["198.51.100.0/28","192.0.2.0/28"],"BlockLen":28}"#,
        None,
    )
    .await
    .unwrap();
    wait_for(Duration::from_secs(5), "pool red in use", || async {
        ipam.clone()
            .pools(PoolsRequest {})
            .await
            .unwrap()
            .into_inner()
            .pools
            .iter()
            .any(|p| p.name == "red" && p.error.is_empty())
    })
    .await;
    let (r1, _) = addr(&mut ipam, "r1", "red").await;
    assert_eq!(r1, Ipv4Addr::new(198, 51, 100, 0));
    addr(&mut ipam, "a1", "blue").await;
    addr(&mut ipam, "a2", "blue").await;
    assert!(troubles(&status(&ipam).await).is_empty());

    // Another host's claim of blue's block (this host's lease expired while
    // it was away): reported with both pods, never written over.
    let key = format!("{PREFIX}/blocks/203.0.113.0-28");
    let theirs = r#"{"Pool":"blue","PublicIP":"198.18.0.9"}"#;
    c.put(key.clone(), theirs, None).await.unwrap();
    let lost = (
        "203.0.113.0/28".to_string(),
        BlockTrouble::Lost,
        Some(Ipv4Addr::new(198, 18, 0, 9)),
        vec!["a1".to_string(), "a2".to_string()],
    );
    wait_for(
        Duration::from_secs(5),
        "the lost block in status",
        || async { troubles(&status(&ipam).await) == vec![lost.clone()] },
    )
    .await;
    let blocks = ipam
        .blocks(BlocksRequest {})
        .await
        .unwrap()
        .into_inner()
        .blocks;
    let b = blocks
        .iter()
        .find(|b| b.trouble() == BlockTrouble::Lost)
        .expect("the lost block in blocks");
    assert!(!b.is_self);
    assert_eq!(b.in_use, 2);
    // The next pod of blue gets a block of its own, not the lost one.
    let (a3, _) = addr(&mut ipam, "a3", "blue").await;
    assert!(net("203.0.113.16/28").contains(&a3), "{a3}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = blocks_in_etcd(&etcd).await;
    assert!(
        held.iter()
            .any(|(k, v, _)| k == "203.0.113.0-28" && v == theirs),
        "the other host's block was touched: {held:?}"
    );
    // Its pods gone, the trouble is over.
    release(&mut ipam, "a1").await;
    release(&mut ipam, "a2").await;
    wait_for(Duration::from_secs(5), "the lost block cleared", || async {
        troubles(&status(&ipam).await).is_empty()
    })
    .await;

    // red shrinks by an edit in etcd: its block outside the new subnets is
    // reported, hands out nothing, and goes back once empty.
    c.put(
        format!("{PREFIX}/pools/red"),
        r#"{"Subnets":["192.0.2.0/28"],"BlockLen":28}"#,
        None,
    )
    .await
    .unwrap();
    let stray = (
        "198.51.100.0/28".to_string(),
        BlockTrouble::OutsidePool,
        None,
        vec!["r1".to_string()],
    );
    wait_for(
        Duration::from_secs(5),
        "the stray block in status",
        || async { troubles(&status(&ipam).await) == vec![stray.clone()] },
    )
    .await;
    let (r2, _) = addr(&mut ipam, "r2", "red").await;
    assert!(net("192.0.2.0/28").contains(&r2), "{r2}");
    // Both empty at once: the stray block goes at the next tick, blue's
    // own keeps its grace.
    release(&mut ipam, "r1").await;
    release(&mut ipam, "a3").await;
    wait_for(
        Duration::from_secs(4),
        "the stray block given back",
        || async {
            !blocks_in_etcd(&etcd)
                .await
                .iter()
                .any(|(k, _, _)| k == "198.51.100.0-28")
        },
    )
    .await;
    assert!(
        blocks_in_etcd(&etcd)
            .await
            .iter()
            .any(|(k, _, _)| k == "203.0.113.16-28"),
        "an empty block in its pool went back before its grace"
    );
    assert!(troubles(&status(&ipam).await).is_empty());
}

/// Giving back deletes the key only if its mod revision is the one this
/// host saw: a key another host claimed (or re-created) meanwhile stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn giving_back_is_a_transaction_on_the_mod_revision() {
    let etcd = Etcd::start().await;
    let reg = Registry::connect(&EtcdOptions {
        endpoints: vec![etcd.url.clone()],
        prefix: PREFIX.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let key = format!("{PREFIX}/blocks/203.0.113.0-28");
    let mine = r#"{"Pool":"blue","PublicIP":"198.18.0.1"}"#;
    let Written::At(seen) = reg
        .create_if_absent(key.clone(), mine.into(), 0)
        .await
        .unwrap()
    else {
        panic!("the key existed");
    };
    assert_eq!(
        reg.create_if_absent(key.clone(), mine.into(), 0)
            .await
            .unwrap(),
        Written::Conflict
    );
    // Expired and claimed by another host since this host saw it.
    let mut c = etcd.client().await;
    c.delete(key.clone(), None).await.unwrap();
    c.put(
        key.clone(),
        r#"{"Pool":"blue","PublicIP":"198.18.0.2"}"#,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        reg.delete_if_unchanged(key.clone(), seen).await.unwrap(),
        Written::Conflict
    );
    let kv = reg
        .get_raw(&format!("{PREFIX}/blocks/"), "203.0.113.0-28")
        .await
        .unwrap()
        .expect("the other host's block stays");
    assert!(String::from_utf8_lossy(&kv.value).contains("198.18.0.2"));
    // Unchanged since seen: deleted.
    assert!(matches!(
        reg.delete_if_unchanged(key.clone(), kv.mod_revision)
            .await
            .unwrap(),
        Written::At(_)
    ));
    assert!(blocks_in_etcd(&etcd).await.is_empty());
}
