//! Pools running out, pods failing and etcd away, on two hosts:
//!
//! - Pool "tiny" (192.0.2.0/29, BlockLen 30: two blocks; MaxBlocksPerHost 1):
//!   host1's fifth pod fails with the MaxBlocks error, and once a third host
//!   (a block key written by hand) holds the other block, host2's first pod
//!   fails with the pool-exhausted error; both CNI code 100, naming the pool
//!   and its usage.
//! - 30 ADDs that fail after Allocate (the pod's namespace already has an
//!   `eth0` of its own) release their addresses: the pool's block is held at
//!   most once and no allocation is left.
//! - etcd stopped: ADDs that fit a block the host holds go on working; one
//!   that needs a new block fails with CNI code 11 (try again later) and
//!   succeeds once etcd is back.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use kolach_testkit::cni::Answer;
use kolach_testkit::{lab, netns, run, Backend, Lab};

use super::{add_all, addresses, codes, own_blocks, pod_namespaces};

/// Failing ADDs in a row.
const FAILING: usize = 30;

#[test]
fn exhausted_pools_failing_pods_and_etcd_away() {
    run("podexh", |lab| {
        lab.mesh_for_pods(2, &Backend::Udp.config())?;
        lab.create_pool(
            1,
            "tiny",
            "192.0.2.0/29",
            &["--block-len", "30", "--max-blocks-per-host", "1"],
        )?;
        lab.create_pool(1, "blue", "203.0.113.0/24", &["--block-len", "28"])?;
        lab.create_pool(1, "green", "198.51.100.0/24", &["--block-len", "28"])?;
        exhausted(lab)?;
        failing_adds(lab)?;
        etcd_away(lab)
    });
}

fn tags(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

/// ADDs of pods `tags` on host `n` in `pool` that must all succeed.
fn add_ok(lab: &mut Lab, n: u8, tags: &[String], pool: &str) -> Result<Vec<Answer>> {
    pod_namespaces(lab, n, tags)?;
    let answers = add_all(lab, n, tags, Some(pool), 4)?;
    for (t, a) in tags.iter().zip(&answers) {
        ensure!(a.ok(), "host{n}: ADD of {t}: {:?} {}", a.code(), a.msg());
    }
    Ok(answers)
}

/// One ADD that must fail; returns it.
fn add_fails(lab: &mut Lab, n: u8, tag: &str, pool: &str) -> Result<Answer> {
    pod_namespaces(lab, n, &[tag.to_string()])?;
    let a = lab.cni_add_answer(n, tag, Some(pool))?;
    ensure!(!a.ok(), "host{n}: ADD of {tag} in {pool} succeeded");
    Ok(a)
}

fn exhausted(lab: &mut Lab) -> Result<()> {
    add_ok(lab, 1, &tags("t", 0..4), "tiny")?;
    let e = add_fails(lab, 1, "t4", "tiny")?;
    eprintln!("host1, 5th pod of tiny: code {:?}: {}", e.code(), e.msg());
    ensure!(e.code() == Some(100), "code {:?}", e.code());
    ensure!(
        e.msg()
            == "pool tiny: this host's blocks are full and it may hold no more (MaxBlocksPerHost 1; \
                1 of 2 blocks of 192.0.2.0/29 held, by 1 host; this host: 1 block, 4 addresses in use); \
                raise MaxBlocksPerHost in the pool's key or free addresses",
        "msg: {}",
        e.msg()
    );
    // A host outside the lab takes the other block.
    lab.etcdctl().put(
        &format!("{}/blocks/192.0.2.4-30", lab::PREFIX),
        r#"{"Pool":"tiny","PublicIP":"198.18.0.99"}"#,
    )?;
    let e = add_fails(lab, 2, "t0", "tiny")?;
    eprintln!("host2, 1st pod of tiny: code {:?}: {}", e.code(), e.msg());
    ensure!(e.code() == Some(100), "code {:?}", e.code());
    ensure!(
        e.msg()
            == "pool tiny is exhausted: no free block (2 of 2 blocks of 192.0.2.0/29 held, by 2 hosts; \
                this host: 0 blocks, 0 addresses in use); add a subnet (kolachctl pool add-subnet) or free addresses",
        "msg: {}",
        e.msg()
    );
    Ok(())
}

fn failing_adds(lab: &mut Lab) -> Result<()> {
    // One namespace whose eth0 is not kolach's: every ADD into it gets an
    // address, then fails to wire (code 110) and must give it back.
    let ns = lab.cni_pod_ns(1, "broken");
    netns::create(&ns)?;
    lab.adopt_namespace(ns.clone());
    netns::ip(
        &ns,
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "foreign",
        ],
    )?;
    let config = lab.cni_config(1);
    let path = netns::netns_path(&ns).display().to_string();
    let t = Instant::now();
    let mut answers = Vec::new();
    for i in 0..FAILING {
        let id = format!("{}-broken{i}", lab.names.stem);
        answers.push(lab.cni(
            1,
            &kolach_testkit::cni::Call {
                command: "ADD",
                container_id: &id,
                netns: &path,
                ifname: "eth0",
                args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=blue;K8S_POD_NAME=broken",
                config: &config,
            },
        )?);
    }
    let took = t.elapsed();
    let failed: Vec<&Answer> = answers.iter().filter(|a| !a.ok()).collect();
    ensure!(
        failed.len() == FAILING,
        "{} of {FAILING} ADDs into a namespace with a foreign eth0 succeeded",
        FAILING - failed.len()
    );
    ensure!(
        failed.iter().all(|a| a.code() == Some(110)),
        "codes {:?}: {}",
        codes(&failed),
        failed[0].msg()
    );
    let blocks = own_blocks(lab, 1, "blue")?;
    let left = addresses(lab, 1)?
        .into_iter()
        .filter(|h| h.pool == "blue")
        .count();
    eprintln!(
        "{FAILING} ADDs failing after Allocate (code 110: {}) in {took:?}: host1 holds {} block(s) of blue, {left} allocations left",
        failed[0].msg(),
        blocks.len()
    );
    ensure!(blocks.len() <= 1, "blocks of blue: {blocks:?}");
    ensure!(left == 0, "{left} allocations of blue left behind");
    Ok(())
}

fn etcd_away(lab: &mut Lab) -> Result<()> {
    // host1 holds one block of green (16 addresses) with one in use.
    add_ok(lab, 1, &tags("g", 0..1), "green")?;
    let fill = tags("g", 1..16);
    pod_namespaces(lab, 1, &fill)?;
    pod_namespaces(lab, 1, &["g16".to_string(), "d0".to_string()])?;
    pod_namespaces(lab, 2, &["g0".to_string()])?;

    lab.etcd.as_mut().context("no etcd")?.proc.stop();
    let down = Instant::now();
    let t = Instant::now();
    let answers = add_all(lab, 1, &fill, Some("green"), 4)?;
    let fill_took = t.elapsed();
    for (tag, a) in fill.iter().zip(&answers) {
        ensure!(
            a.ok(),
            "etcd down: ADD of {tag} fitting the held block: {:?} {}",
            a.code(),
            a.msg()
        );
    }
    let d = lab.cni_add_answer(1, "d0", None)?;
    ensure!(
        d.ok(),
        "etcd down: default-pool ADD: {:?} {}",
        d.code(),
        d.msg()
    );
    let t = Instant::now();
    let need = lab.cni_add_answer(1, "g16", Some("green"))?;
    let need_took = t.elapsed();
    let other = lab.cni_add_answer(2, "g0", Some("green"))?;
    eprintln!(
        "etcd down: 15 ADDs into host1's block of green in {fill_took:?}, a default-pool ADD ok; \
         the ADD needing a new block failed in {need_took:?} with code {:?}: {}",
        need.code(),
        need.msg()
    );
    for (who, a) in [("host1 g16", &need), ("host2 g0", &other)] {
        ensure!(
            !a.ok() && a.code() == Some(11),
            "etcd down: {who} needing a block: ok {} code {:?} {}",
            a.ok(),
            a.code(),
            a.msg()
        );
        ensure!(a.msg().contains("pool green"), "{who}: {}", a.msg());
    }

    lab.etcd
        .as_mut()
        .context("no etcd")?
        .start(Duration::from_secs(20))?;
    let up = Instant::now();
    eprintln!("etcd back after {:?}", down.elapsed());
    for (n, tag) in [(1u8, "g16"), (2, "g0")] {
        let a = loop {
            let a = lab.cni_add_answer(n, tag, Some("green"))?;
            if a.ok() || up.elapsed() > Duration::from_secs(30) {
                break a;
            }
            ensure!(
                a.code() == Some(11),
                "host{n} {tag}: {:?} {}",
                a.code(),
                a.msg()
            );
            std::thread::sleep(Duration::from_millis(250));
        };
        ensure!(
            a.ok(),
            "host{n}: {tag} after etcd returned: {:?} {}",
            a.code(),
            a.msg()
        );
        eprintln!(
            "host{n}: {tag} got {:?} (a new block) {:?} after etcd was started again",
            a.ip(),
            up.elapsed()
        );
    }
    Ok(())
}
