//! An operator deletes a host's lease from etcd (`etcdctl del`), or revokes
//! its etcd lease: the host notices at once, says so loudly, claims its
//! subnet back (with the same etcd lease when that still lives), and every
//! peer converges to the same table as before; pods ping throughout.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use kolach_testkit::etcd::Kv;
use kolach_testkit::{lab, run, subnet_env::lease_key, Lab};

fn own_key(lab: &Lab, n: u8) -> Result<String> {
    let env = lab.host(n).subnet_env().context("no subnet.env")?;
    Ok(format!(
        "{}{}",
        lab::subnets_prefix(),
        lease_key(env.lease())
    ))
}

fn get(lab: &Lab, key: &str) -> Result<Option<Kv>> {
    Ok(lab
        .etcdctl()
        .get_prefix(key)?
        .into_iter()
        .find(|kv| kv.key == key))
}

/// Waits for `key` to hold a lease of host `n` again; returns it and how long.
fn wait_back(lab: &Lab, n: u8, key: &str, since: Instant) -> Result<(Kv, Duration)> {
    let want = format!("\"PublicIP\":\"{}\"", lab.host(n).ip);
    loop {
        if let Some(kv) = get(lab, key)? {
            if kv.value.contains(&want) {
                return Ok((kv, since.elapsed()));
            }
        }
        ensure!(
            since.elapsed() < Duration::from_secs(10),
            "{key} not back within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log_has(lab: &Lab, n: u8, what: &str) -> bool {
    std::fs::read_to_string(&lab.host(n).controld.log).is_ok_and(|l| l.contains(what))
}

/// Waits until every peer of `owner` applied a snapshot at least as new as
/// etcd revision `rev` (the reclaimed key's). Routes alone cannot tell: a
/// reclaimed lease gives back the same routes, so a peer that has not yet
/// seen the delete looks converged and drops the route a moment later.
/// (The owner's own table does not change, so it need not push again.)
fn wait_seen(lab: &Lab, owner: u8, rev: i64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    for n in lab.host_ids().into_iter().filter(|&n| n != owner) {
        loop {
            let seen = lab
                .dp_status(n)?
                .applied_version
                .map_or(0, |v| v.etcd_revision);
            if seen >= rev {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "host{n} applied etcd revision {seen}, not {rev}, within 5s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

#[test]
fn a_deleted_lease_is_reclaimed_and_peers_converge() {
    run("leasedel", |lab| {
        lab.mesh(3)?;
        let key = own_key(lab, 2)?;
        let before = get(lab, &key)?.context("host2's key")?;
        let routes_before: Vec<_> = lab
            .host_ids()
            .iter()
            .map(|&n| lab.dp_routes(n))
            .collect::<Result<_>>()?;

        // 1. `etcdctl del`: the key goes, the etcd lease stays.
        let t = Instant::now();
        ensure!(lab.etcdctl().del(&key)? == 1, "nothing deleted");
        let (after, took) = wait_back(lab, 2, &key, t)?;
        eprintln!("deleted key {key}: back after {took:?}");
        ensure!(
            after.lease == before.lease,
            "reclaimed with another etcd lease ({:x} -> {:x}); the old one still lived",
            before.lease,
            after.lease
        );
        ensure!(after.create_revision > before.create_revision);
        wait_seen(lab, 2, after.mod_revision)?;
        lab.wait_converged(Duration::from_secs(5))?;
        let took = t.elapsed();
        let routes_after: Vec<_> = lab
            .host_ids()
            .iter()
            .map(|&n| lab.dp_routes(n))
            .collect::<Result<_>>()?;
        ensure!(routes_after == routes_before, "routes differ after reclaim");
        eprintln!("deleted key: every host converged after {took:?}");
        ensure!(log_has(lab, 2, "LOST this host's subnet lease"));
        ensure!(log_has(lab, 2, "RECLAIMED this host's subnet"));
        let st = lab.cd_status(2)?;
        ensure!(
            st.warnings
                .iter()
                .any(|w| w.starts_with("reclaimed subnet")),
            "status warnings: {:?}",
            st.warnings
        );

        // 2. `etcdctl lease revoke`: key and etcd lease gone.
        let before = get(lab, &key)?.context("host2's key")?;
        let t = Instant::now();
        lab.etcdctl().lease_revoke(&format!("{:x}", before.lease))?;
        let (after, took) = wait_back(lab, 2, &key, t)?;
        eprintln!("revoked lease: {key} back after {took:?}");
        ensure!(after.lease != before.lease, "a revoked lease came back");
        wait_seen(lab, 2, after.mod_revision)?;
        lab.wait_converged(Duration::from_secs(5))?;
        eprintln!(
            "revoked lease: every host converged after {:?}",
            t.elapsed()
        );
        lab.assert_all_pairs_ping(3)
    });
}
