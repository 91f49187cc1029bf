//! Three hosts on the kernel backends (vxlan, host-gw): every pod reaches
//! every other pod, and each host's kernel holds exactly the objects ISSUE3
//! calls for: no more (no TUN, nothing of another backend), no less. A
//! host-gw peer off the layer-2 segment is not routed and named as an error
//! (dataplane status, `kolachctl status`); alloc makes leases and nothing else.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kolach_testkit::kernel::expected::diff;
use kolach_testkit::{bins, cmd, lab, query, run, subnet_env::lease_key, Backend, Lab};

#[test]
fn vxlan_three_hosts_reach_each_other_pod_to_pod() {
    run("vxmesh", |lab| mesh(lab, Backend::Vxlan));
}

#[test]
fn host_gw_three_hosts_reach_each_other_pod_to_pod() {
    run("gwmesh", |lab| mesh(lab, Backend::HostGw));
}

#[test]
fn alloc_hosts_get_leases_and_nothing_else() {
    run("allocmesh", |lab| {
        lab.mesh_with(2, &Backend::Alloc.config())?;
        lab.wait_kernel_converged(Backend::Alloc, Duration::from_secs(5))?;
        for n in lab.host_ids() {
            let env = lab.host(n).subnet_env().context("subnet.env")?;
            ensure!(env.mtu == 1500, "host{n}: KOLACH_MTU {}", env.mtu);
            lab.check_lease_value(n, Backend::Alloc)?;
            let o = lab.kernel_objects(n)?;
            ensure!(o.links.is_empty() && o.routes.is_empty(), "host{n}: {o:#?}");
        }
        Ok(())
    });
}

fn mesh(lab: &mut Lab, backend: Backend) -> Result<()> {
    lab.mesh_with(3, &backend.config())?;
    let took = lab.wait_kernel_converged(backend, Duration::from_secs(5))?;
    eprintln!("{backend}: kernel objects complete on every host after {took:?}");
    for n in lab.host_ids() {
        check_host(lab, n, backend)?;
    }
    lab.assert_all_pairs_ping(3)?;
    if backend == Backend::HostGw {
        off_segment_peer(lab)?;
    }
    Ok(())
}

/// A host-gw peer whose PublicIP is on no connected subnet of eth0 (written
/// as a phantom lease): routed nowhere, and every dataplane names it in its
/// status errors, which `kolachctl status` shows.
fn off_segment_peer(lab: &Lab) -> Result<()> {
    let subnet = lab.free_subnets(1)[0];
    let ip = Ipv4Addr::new(198, 19, 0, 77);
    let ctl = lab.etcdctl();
    let lease = ctl.lease_grant(60)?;
    let key = format!("{}{}", lab::subnets_prefix(), lease_key(subnet));
    ctl.put_with_lease(
        &key,
        &format!(r#"{{"PublicIP":"{ip}","BackendType":"host-gw","BackendData":null}}"#),
        &lease,
    )?;
    let deadline = Instant::now() + Duration::from_secs(5);
    for n in lab.host_ids() {
        let errors = loop {
            let errors = lab.dp_status(n).map(|s| s.errors).unwrap_or_default();
            if errors.iter().any(|e| e.contains(&ip.to_string())) {
                break errors;
            }
            if Instant::now() >= deadline {
                bail!(
                    "host{n}: dataplane errors never named the off-segment peer {ip}: {errors:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        eprintln!("host{n}: dataplane errors {errors:?}");
        let want = lab.expected_objects(n, Backend::HostGw);
        let got = lab.kernel_objects(n)?;
        ensure!(
            got.same_as(&want),
            "host{n} with an off-segment peer around:\n{}",
            diff(&got, &want)
        );
        let dir = lab.host(n).dir.display().to_string();
        let bin = bins::require(bins::KOLACHCTL);
        let out = cmd::run(
            &bin.to_string_lossy(),
            &["--run-dir", &dir, "status"],
            Duration::from_secs(10),
        )?;
        ensure!(
            out.stdout.contains(&ip.to_string()),
            "host{n}: kolachctl status does not show the off-segment peer {ip}:\n{}{}",
            out.stdout,
            out.stderr
        );
    }
    ensure!(ctl.del(&key)? == 1, "phantom lease vanished early");
    let _ = ctl.lease_revoke(&lease);
    // The error goes with the peer.
    let deadline = Instant::now() + Duration::from_secs(2);
    for n in lab.host_ids() {
        while !lab.dp_status(n).is_ok_and(|s| s.errors.is_empty()) {
            if Instant::now() >= deadline {
                bail!(
                    "host{n}: dataplane errors stay after the off-segment peer left: {:?}",
                    lab.dp_status(n)?.errors
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    lab.assert_all_pairs_ping(1)
}

fn check_host(lab: &Lab, n: u8, backend: Backend) -> Result<()> {
    let env = lab.host(n).subnet_env().context("subnet.env")?;
    ensure!(
        env.mtu == backend.mtu(),
        "host{n}: KOLACH_MTU {} != {} ({backend})",
        env.mtu,
        backend.mtu()
    );
    lab.check_lease_value(n, backend)?;
    if backend == Backend::Vxlan {
        lab.check_vxlan_device(n)?;
    }
    let st = lab.dp_status(n)?;
    ensure!(st.has_snapshot, "host{n}: dataplane has no snapshot");
    ensure!(
        st.route_count == 2,
        "host{n}: route_count {}",
        st.route_count
    );
    ensure!(
        st.errors.is_empty(),
        "host{n}: dataplane errors {:?}",
        st.errors
    );
    let cs = lab.cd_status(n)?;
    ensure!(
        cs.backend == backend.name(),
        "host{n}: controld backend {:?}",
        cs.backend
    );
    ensure!(cs.mtu == backend.mtu(), "host{n}: controld mtu {}", cs.mtu);
    ensure!(
        query::control_subnet(&cs) == Some(env.lease()),
        "host{n}: controld subnet {:?}",
        cs.subnet
    );
    // Every peer route carries the peer's VTEP MAC on vxlan, none elsewhere.
    let sock = lab.host(n).dataplaned_socket();
    let reply = lab.block_on(async move { query::dataplane_routes(&sock).await })?;
    for r in &reply.routes {
        let ip = std::net::Ipv4Addr::try_from(r.public_ip.as_ref().context("public_ip")?)?;
        let want: Vec<u8> = match backend {
            Backend::Vxlan => kolach_testkit::lab::backend::vtep_mac(ip)
                .split(':')
                .map(|b| u8::from_str_radix(b, 16))
                .collect::<Result<_, _>>()?,
            _ => Vec::new(),
        };
        ensure!(
            r.vtep_mac == want,
            "host{n}: route to {ip} has vtep_mac {:02x?}, want {want:02x?}",
            r.vtep_mac
        );
    }
    Ok(())
}
