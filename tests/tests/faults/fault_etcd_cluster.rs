//! A 3-member etcd cluster whose leader is SIGKILLed again and again (and
//! brought back each time), with every controld given all three endpoints
//! and a short lease TTL: no lease is lost (same keys, same etcd leases, no
//! "lost lease" in any status), and after each kill a lease written through
//! the surviving members reaches every dataplane within seconds.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ipnet::Ipv4Net;
use kolach_testkit::etcd::cluster::EtcdCluster;
use kolach_testkit::subnet_env::lease_key;
use kolach_testkit::{lab, run, Lab};

const KILLS: usize = 4;
const TTL: &str = "10s";
/// How long a new lease may take to reach every dataplane after a kill.
const FOLLOW_WITHIN: Duration = Duration::from_secs(10);

#[test]
fn leader_killed_repeatedly_loses_no_lease() {
    run("etcd3", cluster);
}

fn own_leases(c: &mut EtcdCluster) -> Result<Vec<(String, i64, i64)>> {
    let mut v: Vec<(String, i64, i64)> = c
        .ctl()
        .get_prefix(&lab::subnets_prefix())?
        .into_iter()
        .filter(|kv| kv.value.contains("\"PublicIP\":\"198.18.0."))
        .filter(|kv| !kv.value.contains("\"PublicIP\":\"198.18.0.9"))
        .map(|kv| (kv.key, kv.lease, kv.create_revision))
        .collect();
    v.sort();
    Ok(v)
}

fn cluster(lab: &mut Lab) -> Result<()> {
    let mut c = EtcdCluster::start(&lab.names.underlay(), &lab.names.stem, &lab.dir)?;
    // The hosts lease below 10.50.240.0/24: the leases this test writes
    // after each kill (10.50.241.0/24, ...) must never be a host's own.
    c.ctl().put(
        &lab::config_key(),
        r#"{"Network":"10.50.0.0/16","SubnetMax":"10.50.239.0","Backend":{"Type":"udp"}}"#,
    )?;
    lab.opts.lease_ttl = Some(TTL.to_string());
    let endpoints = c.endpoints();
    for _ in 0..3 {
        let n = lab.add_host()?;
        lab.host_mut(n).use_etcd_endpoints(&endpoints);
        lab.start_host(n)?;
    }
    for n in lab.host_ids() {
        lab.wait_ready(n)?;
        lab.add_pod(n)?;
    }
    lab.wait_converged(Duration::from_secs(10))?;
    let before = own_leases(&mut c)?;
    ensure!(before.len() == 3, "leases {before:?}");

    for kill in 1..=KILLS {
        let leader = c.wait_leader(Duration::from_secs(10))?;
        let t = Instant::now();
        c.kill(leader);
        let new = c.wait_leader(Duration::from_secs(15))?;
        let elected = t.elapsed();
        // A lease written through the survivors must reach every dataplane.
        let subnet = Ipv4Net::new(Ipv4Addr::new(10, 50, 240 + kill as u8, 0), 24)?;
        let ip = Ipv4Addr::new(198, 18, 0, 90 + kill as u8);
        let key = format!("{}{}", lab::subnets_prefix(), lease_key(subnet));
        c.ctl().put(
            &key,
            &format!(r#"{{"PublicIP":"{ip}","BackendType":"udp","BackendData":null}}"#),
        )?;
        let written = t.elapsed();
        let took = lab.wait_all_routes(FOLLOW_WITHIN, "followed the new leader", |r| {
            r.contains(&(subnet, ip))
        })?;
        let slowest = took.iter().max().copied().unwrap_or_default();
        eprintln!(
            "kill {kill}: leader m{leader} SIGKILLed; m{new} elected after {elected:?}; \
             a lease written {written:?} after the kill reached every dataplane {slowest:?} later"
        );
        c.restart(leader, Duration::from_secs(20))
            .with_context(|| c.log_tails(10))?;
        // Past the TTL since the kill, so a lease that was not kept alive is gone.
        std::thread::sleep(Duration::from_secs(2));
    }
    // Let a full TTL pass with everything up: a lease whose keepalive broke
    // for good would expire now.
    std::thread::sleep(Duration::from_secs(11));
    let after = own_leases(&mut c)?;
    ensure!(
        after == before,
        "hosts' leases changed across the kills: {before:?} -> {after:?}"
    );
    for n in lab.host_ids() {
        let s = lab.cd_status(n)?;
        ensure!(
            !s.warnings.iter().any(|w| w.contains("lost lease")),
            "host{n} lost its lease: {:?}",
            s.warnings
        );
        ensure!(s.phase == "running" && s.etcd_reachable, "host{n}: {s:?}");
    }
    eprintln!("{KILLS} leader kills: the 3 hosts kept their keys and etcd leases ({TTL} TTL)");
    for kill in 1..=KILLS {
        let subnet = Ipv4Net::new(Ipv4Addr::new(10, 50, 240 + kill as u8, 0), 24)?;
        c.ctl()
            .del(&format!("{}{}", lab::subnets_prefix(), lease_key(subnet)))?;
    }
    lab.wait_converged(Duration::from_secs(5))?;
    lab.assert_all_pairs_ping(2)
}
