//! A host whose daemons stop (SIGTERM) or crash (SIGKILL) and start again gets
//! the same subnet back, and its pod is reachable again.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{ensure, Context, Result};
use kolach_testkit::process::Stopped;
use kolach_testkit::{lab, query, run, Lab};

#[test]
fn restarted_host_keeps_its_subnet() {
    run("restart", |lab| restart_keeps_subnet(lab, false));
}

#[test]
fn crashed_host_keeps_its_subnet() {
    run("crash", |lab| restart_keeps_subnet(lab, true));
}

fn restart_keeps_subnet(lab: &mut Lab, crash: bool) -> Result<()> {
    lab.mesh(2)?;
    let h = lab.host(2);
    let env_before = std::fs::read_to_string(h.subnet_file())?;
    let subnet = h.subnet_env().context("subnet.env")?.lease();
    let key = format!(
        "{}{}",
        lab::subnets_prefix(),
        kolach_testkit::subnet_env::lease_key(subnet)
    );
    let kv_before = lab.etcdctl().get_prefix(&key)?;

    let stopped_at = SystemTime::now();
    let host = lab.host_mut(2);
    if crash {
        host.controld.kill();
        host.dataplaned.kill();
    } else {
        // controld first, as systemd would order them; each gets 10 s.
        for p in [&mut host.controld, &mut host.dataplaned] {
            let t = Instant::now();
            let how = p.stop_within(Duration::from_secs(10));
            eprintln!("{} stopped in {:?}: {how:?}", p.label, t.elapsed());
            ensure!(
                matches!(how, Stopped::Graceful(_)),
                "{} did not exit within 10s of SIGTERM: {how:?}",
                p.label
            );
        }
    }
    let restarted = Instant::now();
    lab.host_mut(2).start()?;

    // Ready again: subnet.env rewritten, or controld reports its lease applied.
    let file = lab.host(2).subnet_file();
    let deadline = restarted + lab::READY_WITHIN;
    loop {
        let rewritten = std::fs::metadata(&file)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t > stopped_at);
        let applied = lab.cd_status(2).is_ok_and(|s| {
            query::control_subnet(&s).is_some() && s.dataplane_connected && s.applied_generation > 0
        });
        if rewritten || applied {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "host2 not ready {:?} after restart",
            lab::READY_WITHIN
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("host2 ready {:?} after restart", restarted.elapsed());

    let env_after = std::fs::read_to_string(&file)?;
    ensure!(
        env_after == env_before,
        "subnet.env changed:\n{env_before}\n---\n{env_after}"
    );
    let status = lab.cd_status(2)?;
    ensure!(
        query::control_subnet(&status) == Some(subnet),
        "controld reports {:?}, had {subnet}",
        status.subnet
    );
    let kv_after = lab.etcdctl().get_prefix(&key)?;
    ensure!(
        kv_after.len() == 1,
        "lease {key} after restart: {kv_after:?}"
    );
    ensure!(
        kv_after[0].value == kv_before[0].value,
        "lease value changed: {:?} -> {:?}",
        kv_before[0].value,
        kv_after[0].value
    );
    ensure!(kv_after[0].lease != 0, "lease key lost its etcd lease");
    if kv_after[0].lease != kv_before[0].lease {
        eprintln!(
            "note: etcd lease id changed {:x} -> {:x} (same subnet)",
            kv_before[0].lease, kv_after[0].lease
        );
    }
    let all = lab.etcdctl().get_prefix(&lab::subnets_prefix())?;
    ensure!(all.len() == 2, "expected 2 leases after restart: {all:?}");

    lab.wait_converged(Duration::from_secs(10))?;
    lab.assert_all_pairs_ping(3)
}
