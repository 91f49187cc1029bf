//! vxlan: a peer's lease removed from etcd takes its route, neighbour and FDB
//! entries out of every other host's kernel within 2 s. Shown twice: for a
//! phantom peer the test writes itself (with a VtepMAC), and for a real host
//! whose controld was stopped first so it cannot reclaim its lease. Before
//! that, every host holds exactly the objects ISSUE3 calls for and its vxlan
//! device is on contract (learning off, VNI, port, MTU, MAC).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ipnet::Ipv4Net;
use kolach_testkit::kernel::expected::{diff, expected};
use kolach_testkit::lab::backend::vtep_mac;
use kolach_testkit::process::Stopped;
use kolach_testkit::{lab, run, subnet_env::lease_key, Backend, Lab};

const GONE_WITHIN: Duration = Duration::from_secs(2);

#[test]
fn removed_vxlan_lease_leaves_every_kernel_within_two_seconds() {
    run("vxleasedel", removed);
}

fn key_of(subnet: Ipv4Net) -> String {
    format!("{}{}", lab::subnets_prefix(), lease_key(subnet))
}

/// Waits until no host in `hosts` holds anything of the peer (subnet, ip).
fn wait_gone(lab: &Lab, hosts: &[u8], subnet: Ipv4Net, ip: Ipv4Addr, since: Instant) -> Result<()> {
    let mac = vtep_mac(ip);
    let offset = since.elapsed();
    let left = GONE_WITHIN.saturating_sub(offset);
    let took = lab
        .wait_kernels(
            hosts,
            left,
            &format!("forgot {subnet} ({ip}, {mac})"),
            |_, o| o.mentions(subnet, ip, &mac).is_empty(),
        )
        .with_context(|| {
            format!("{subnet}'s objects still there {GONE_WITHIN:?} after its lease went")
        })?;
    let took: Vec<Duration> = took.into_iter().map(|t| t + offset).collect();
    eprintln!("peer {subnet} ({ip}) gone from hosts {hosts:?} after {took:?}");
    Ok(())
}

fn removed(lab: &mut Lab) -> Result<()> {
    lab.mesh_with(3, &Backend::Vxlan.config())?;
    lab.wait_kernel_converged(Backend::Vxlan, Duration::from_secs(5))?;
    for n in lab.host_ids() {
        lab.check_vxlan_device(n)?;
    }
    lab.assert_all_pairs_ping(2)?;
    let all = lab.host_ids();

    // 1. A phantom vxlan peer: routed everywhere, then its lease deleted.
    let subnet: Ipv4Net = lab.free_subnets(1)[0];
    let ip = Ipv4Addr::new(198, 18, 0, 99);
    let ctl = lab.etcdctl();
    let lease = ctl.lease_grant(60)?;
    let value = format!(
        r#"{{"PublicIP":"{ip}","BackendType":"vxlan","BackendData":{{"VtepMAC":"{}"}}}}"#,
        vtep_mac(ip)
    );
    ctl.put_with_lease(&key_of(subnet), &value, &lease)?;
    let took = lab.wait_kernels(
        &all,
        Duration::from_secs(5),
        "routed the phantom",
        |n, o| {
            let mut peers = lab.expected_routes(n);
            peers.push((subnet, ip));
            o.same_as(&expected(Backend::Vxlan, &peers))
        },
    )?;
    eprintln!("phantom {subnet} routed, neighboured and in the FDB everywhere after {took:?}");
    ensure!(ctl.del(&key_of(subnet))? == 1, "phantom key vanished early");
    wait_gone(lab, &all, subnet, ip, Instant::now())?;
    let _ = ctl.lease_revoke(&lease);

    // 2. A real host: controld stopped (so nothing reclaims), lease deleted.
    let gone = 3u8;
    let g_subnet = lab
        .host(gone)
        .subnet_env()
        .context("host3 subnet.env")?
        .lease();
    let g_ip = lab.host(gone).ip;
    let how = lab.host_mut(gone).controld.stop();
    ensure!(
        matches!(how, Stopped::Graceful(_)),
        "host3/controld: {how:?}"
    );
    // Stopping controld changes nobody's kernel: host3 is still a peer.
    lab.wait_kernel_converged(Backend::Vxlan, Duration::from_secs(1))?;
    ensure!(
        ctl.del(&key_of(g_subnet))? == 1,
        "host3's lease was not in etcd"
    );
    let deleted = Instant::now();
    let rest = [1u8, 2];
    wait_gone(lab, &rest, g_subnet, g_ip, deleted)?;

    // The others still hold each other, exactly.
    for n in rest {
        let peers: Vec<_> = lab
            .expected_routes(n)
            .into_iter()
            .filter(|(s, _)| *s != g_subnet)
            .collect();
        let want = expected(Backend::Vxlan, &peers);
        let got = lab.kernel_objects(n)?;
        ensure!(
            got.same_as(&want),
            "host{n} after host3 left:\n{}",
            diff(&got, &want)
        );
    }
    for (a, b) in [(1, 2), (2, 1)] {
        let r = lab.ping_pods(a, b, 2)?;
        ensure!(r.lossless(), "pod{a} -> pod{b}: {}", r.output);
    }
    Ok(())
}
