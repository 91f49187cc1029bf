//! The harness itself, without kolach: three hosts on the underlay, a pod on
//! each, a real etcd; everything reachable that should be, and nothing left
//! behind after teardown.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use kolach_tests::{etcd, lab, names::Names, netns, topology, traffic, Lab};

#[test]
fn lab_without_kolach_builds_connects_and_tears_down() {
    let mut lab = Lab::new("harness").expect("creating lab");
    let stem = lab.names.stem.clone();
    let dir = lab.dir.clone();
    let result = exercise(&mut lab);
    if result.is_err() {
        lab.dump_logs();
    }
    let etcd_pid = lab.etcd.as_ref().and_then(|e| e.proc.pid());
    drop(lab);
    result.unwrap();

    let names = Names::new(&stem);
    let left: Vec<String> = netns::list()
        .unwrap()
        .into_iter()
        .filter(|ns| names.owns(ns))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(!dir.exists(), "{} left behind", dir.display());
    if let Some(pid) = etcd_pid {
        assert!(
            !kolach_tests::names::pid_alive(pid),
            "etcd {pid} still running"
        );
    }
}

fn exercise(lab: &mut Lab) -> Result<()> {
    let ctl = lab.start_etcd()?;
    for n in 1..=3u8 {
        assert_eq!(lab.add_host()?, n);
        let bip = format!("10.50.{n}.1/24").parse()?;
        lab.add_pod_with(n, bip, Ipv4Addr::new(10, 50, n, 2), 1472)?;
    }

    // etcd: put/get/lease/del, and reachable from a host at the underlay address.
    lab.put_config(lab::NETWORK_CONFIG)?;
    ensure!(ctl.get(&lab::config_key())?.as_deref() == Some(lab::NETWORK_CONFIG));
    let lease = ctl.lease_grant(30)?;
    let key = format!("{}10.50.99.0-24", lab::subnets_prefix());
    ctl.put_with_lease(&key, r#"{"PublicIP":"198.18.0.99"}"#, &lease)?;
    let kvs = ctl.get_prefix(&lab::subnets_prefix())?;
    ensure!(kvs.len() == 1 && kvs[0].key == key, "{kvs:?}");
    ensure!(
        format!("{:x}", kvs[0].lease) == lease,
        "lease {} vs {lease}",
        kvs[0].lease
    );
    ensure!(ctl.del(&key)? == 1);
    ensure!(ctl.get_prefix(&lab::subnets_prefix())?.is_empty());
    ctl.lease_revoke(&lease)?;
    let health = netns::exec(
        &lab.host(2).ns,
        "env",
        &[
            "ETCDCTL_API=3",
            "etcdctl",
            &format!("--endpoints={}", etcd::endpoint()),
            "endpoint",
            "health",
        ],
        Duration::from_secs(8),
    )?;
    ensure!(health.success(), "etcd from host2: {}", health.stderr);

    // Pods reach their own host's bridge; hosts reach each other on the underlay.
    for n in 1..=3u8 {
        let pod = lab.pod(n).clone();
        let r = traffic::ping(&pod.ns, pod.gateway, 2, 1.0)?;
        ensure!(r.lossless(), "pod{n} -> {}: {}", pod.gateway, r.output);
        let peer = topology::host_ip(n % 3 + 1);
        let r = traffic::ping(&lab.host(n).ns, peer, 1, 1.0)?;
        ensure!(r.lossless(), "host{n} -> {peer}: {}", r.output);
    }
    // Without kolach there is no path between pods.
    let r = traffic::ping(&lab.pod(1).ns, lab.pod(2).ip, 1, 0.3)?;
    ensure!(
        r.received == 0,
        "pods must not reach each other without kolach"
    );

    // UDP from a namespace-bound socket to a socket in another namespace.
    let rx = traffic::udp_bind_in(&lab.pod(3).ns, SocketAddrV4::new(lab.pod(3).ip, 5555))?;
    traffic::udp_send_from(
        &lab.host(3).ns,
        SocketAddrV4::new(topology::host_ip(3), 0),
        SocketAddrV4::new(lab.pod(3).ip, 5555),
        b"over the bridge",
    )?;
    let (got, from) = traffic::recv_within(&rx, Duration::from_secs(2))?.context("no datagram")?;
    ensure!(got == b"over the bridge", "{got:?}");
    ensure!(
        from.ip() == std::net::IpAddr::V4(topology::host_ip(3)),
        "from {from}"
    );

    // An outsider is on the underlay too.
    let x = lab.add_outsider("1", 200)?;
    let r = traffic::ping(&x, topology::host_ip(1), 1, 1.0)?;
    ensure!(r.lossless(), "outsider -> host1: {}", r.output);
    Ok(())
}
