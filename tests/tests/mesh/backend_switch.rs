//! Switching Backend.Type in etcd while the mesh runs, udp → vxlan → host-gw:
//! after each switch every ordered pod pair pings, every host keeps its
//! subnet (its lease value follows the backend), the old backend's objects are
//! gone (no kolach0 after udp, no kolach.1 after vxlan), and subnet.env's
//! KOLACH_MTU follows (1472, 1450, 1500). The same through aws-vpc (udp →
//! aws-vpc → vxlan): on aws-vpc the hosts hold no kernel objects of kolach's
//! and the pods do not ping (the VPC's router would carry them; the hosts'
//! AWS settings point nowhere), and vxlan after it brings the mesh back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ipnet::Ipv4Net;
use kolach_testkit::{kernel, run, Backend, Lab};

#[test]
fn backend_switch_udp_vxlan_host_gw_keeps_the_mesh() {
    run("switch", |lab| {
        switch(lab, &[Backend::Vxlan, Backend::HostGw])
    });
}

#[test]
fn backend_switch_to_and_from_aws_vpc_keeps_the_subnets() {
    run("switchaws", |lab| {
        switch(lab, &[Backend::AwsVpc, Backend::Vxlan])
    });
}

const SWITCH_WITHIN: Duration = Duration::from_secs(15);

fn subnets(lab: &Lab) -> Result<BTreeMap<u8, Ipv4Net>> {
    lab.host_ids()
        .into_iter()
        .map(|n| {
            let s = lab.host(n).subnet_env().context("subnet.env")?.lease();
            Ok((n, s))
        })
        .collect()
}

fn check_backend(lab: &Lab, backend: Backend, subnets: &BTreeMap<u8, Ipv4Net>) -> Result<()> {
    ensure!(
        &self::subnets(lab)? == subnets,
        "subnets changed: {subnets:?} -> {:?}",
        self::subnets(lab)?
    );
    for n in lab.host_ids() {
        lab.check_lease_value(n, backend)?;
        let ns = &lab.host(n).ns;
        let tun = kernel::link(ns, "kolach0")?;
        ensure!(
            (backend == Backend::Udp) == tun.is_some(),
            "host{n} on {backend}: kolach0 is {}",
            if tun.is_some() { "there" } else { "missing" }
        );
        let vx = kernel::link(ns, "kolach.1")?;
        ensure!(
            (backend == Backend::Vxlan) == vx.is_some(),
            "host{n} on {backend}: kolach.1 is {}",
            if vx.is_some() { "there" } else { "missing" }
        );
        if backend == Backend::Vxlan {
            lab.check_vxlan_device(n)?;
        }
        let st = lab.dp_status(n)?;
        ensure!(
            st.errors.is_empty(),
            "host{n}: dataplane errors {:?}",
            st.errors
        );
    }
    if backend == Backend::AwsVpc {
        // Nobody carries the packets in the lab: no VPC router.
        return Ok(());
    }
    lab.assert_all_pairs_ping(3)
}

fn switch(lab: &mut Lab, order: &[Backend]) -> Result<()> {
    lab.mesh(3)?;
    lab.wait_kernel_converged(Backend::Udp, Duration::from_secs(5))?;
    lab.wait_subnet_env_mtu(Backend::Udp.mtu(), Duration::from_secs(1))?;
    let subnets = subnets(lab)?;
    check_backend(lab, Backend::Udp, &subnets)?;

    for &backend in order {
        let t = Instant::now();
        lab.put_config(&backend.config())?;
        lab.wait_subnet_env_mtu(backend.mtu(), SWITCH_WITHIN)
            .with_context(|| format!("switching to {backend}"))?;
        let env_at = t.elapsed();
        lab.wait_kernel_converged(backend, SWITCH_WITHIN.saturating_sub(t.elapsed()))
            .with_context(|| format!("switching to {backend}"))?;
        let kernel_at = t.elapsed();
        lab.wait_converged(Duration::from_secs(5))?;
        check_backend(lab, backend, &subnets)
            .with_context(|| format!("after switching to {backend}"))?;
        eprintln!(
            "switch to {backend}: KOLACH_MTU {} after {env_at:?}, kernel objects after {kernel_at:?}, mesh pings after {:?}",
            backend.mtu(),
            t.elapsed()
        );
    }
    Ok(())
}
