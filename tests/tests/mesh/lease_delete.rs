//! A lease that disappears from etcd disappears from every peer's routes within
//! 2 s. The lease is a phantom host the test writes itself, flannel-style.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ipnet::Ipv4Net;
use kolach_testkit::{lab, run, subnet_env::lease_key, Lab};

#[test]
fn deleted_lease_leaves_every_route_table_within_two_seconds() {
    run("leasedel", phantom);
}

/// A /24 of the overlay no host holds, preferring 10.50.99.0/24.
fn free_subnet(lab: &Lab) -> Result<Ipv4Net> {
    let taken: Vec<Ipv4Net> = lab
        .host_ids()
        .into_iter()
        .filter_map(|n| lab.host(n).subnet_env().map(|e| e.lease()))
        .collect();
    (99u8..=254)
        .chain(2..99)
        .map(|c| Ipv4Net::new(Ipv4Addr::new(10, 50, c, 0), 24).expect("valid"))
        .find(|s| !taken.contains(s))
        .context("no free subnet")
}

fn phantom(lab: &mut Lab) -> Result<()> {
    lab.mesh(3)?;
    let subnet = free_subnet(lab)?;
    let phantom_ip = Ipv4Addr::new(198, 18, 0, 99);
    let key = format!("{}{}", lab::subnets_prefix(), lease_key(subnet));
    let ctl = lab.etcdctl();
    let lease = ctl.lease_grant(60)?;
    ctl.put_with_lease(
        &key,
        r#"{"PublicIP":"198.18.0.99","BackendType":"udp"}"#,
        &lease,
    )?;

    let entry = (subnet, phantom_ip);
    let took = lab.wait_all_routes(Duration::from_secs(5), "gained the phantom", |r| {
        r.contains(&entry)
    })?;
    eprintln!("phantom lease {subnet} appeared after {took:?}");

    // controld lists it with its time to expiry.
    let leases = lab.cd_leases(1)?;
    let l = leases
        .leases
        .iter()
        .find(|l| {
            l.subnet
                .as_ref()
                .and_then(|s| Ipv4Net::try_from(s).ok())
                .is_some_and(|s| s == subnet)
        })
        .with_context(|| format!("Control.Leases lacks {subnet}: {leases:?}"))?;
    ensure!(!l.is_self && !l.reservation, "phantom lease: {l:?}");
    ensure!(
        (1..=60).contains(&l.expires_in_seconds),
        "phantom expires_in_seconds {} not in 1..=60",
        l.expires_in_seconds
    );

    ensure!(ctl.del(&key)? == 1, "phantom key was not there to delete");
    let took = lab.wait_all_routes(Duration::from_secs(2), "dropped the phantom", |r| {
        !r.contains(&entry)
    })?;
    eprintln!("phantom lease {subnet} gone after {took:?}");

    // Every real host is still routed.
    lab.wait_converged(Duration::from_secs(1))?;
    let _ = ctl.lease_revoke(&lease);
    lab.assert_all_pairs_ping(2)
}
