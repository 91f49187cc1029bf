//! Three hosts on the kernel backends (vxlan, host-gw): every pod reaches
//! every other pod, and each host's kernel holds exactly the objects ISSUE3
//! calls for: no more (no TUN, nothing of another backend), no less.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use kolach_tests::{query, run, Backend, Lab};

#[test]
fn vxlan_three_hosts_reach_each_other_pod_to_pod() {
    run("vxmesh", |lab| mesh(lab, Backend::Vxlan));
}

#[test]
fn host_gw_three_hosts_reach_each_other_pod_to_pod() {
    run("gwmesh", |lab| mesh(lab, Backend::HostGw));
}

fn mesh(lab: &mut Lab, backend: Backend) -> Result<()> {
    lab.mesh_with(3, &backend.config())?;
    let took = lab.wait_kernel_converged(backend, Duration::from_secs(5))?;
    eprintln!("{backend}: kernel objects complete on every host after {took:?}");
    for n in lab.host_ids() {
        check_host(lab, n, backend)?;
    }
    lab.assert_all_pairs_ping(3)
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
            Backend::Vxlan => kolach_tests::backend::vtep_mac(ip)
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
