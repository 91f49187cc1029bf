//! Leases a vxlan host cannot route are ignored and reported: leases of
//! another backend (udp, flannel's udp without BackendType, host-gw) and a
//! vxlan lease without a VtepMAC appear in no host's routes (dataplane or
//! kernel), and controld's status warnings name each one.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use ipnet::Ipv4Net;
use kolach_testkit::kernel::expected::diff;
use kolach_testkit::{lab, run, subnet_env::lease_key, Backend, Lab};

#[test]
fn leases_of_another_backend_are_ignored_and_reported() {
    run("foreign", foreign);
}

fn foreign(lab: &mut Lab) -> Result<()> {
    lab.mesh_with(2, &Backend::Vxlan.config())?;
    lab.wait_kernel_converged(Backend::Vxlan, Duration::from_secs(5))?;

    let free = lab.free_subnets(4);
    let phantoms: Vec<(Ipv4Net, Ipv4Addr, String)> = [
        (96u8, r#""BackendType":"udp","BackendData":null"#),
        (97, ""),
        (98, r#""BackendType":"host-gw","BackendData":null"#),
        (99, r#""BackendType":"vxlan","BackendData":null"#),
    ]
    .into_iter()
    .zip(free)
    .map(|((c, rest), subnet)| {
        let ip = Ipv4Addr::new(198, 18, 0, c);
        let sep = if rest.is_empty() { "" } else { "," };
        (subnet, ip, format!(r#"{{"PublicIP":"{ip}"{sep}{rest}}}"#))
    })
    .collect();
    let ctl = lab.etcdctl();
    let lease = ctl.lease_grant(60)?;
    for (subnet, _, value) in &phantoms {
        let key = format!("{}{}", lab::subnets_prefix(), lease_key(*subnet));
        ctl.put_with_lease(&key, value, &lease)?;
    }
    let revision = ctl
        .get_prefix(&lab::subnets_prefix())?
        .iter()
        .map(|kv| kv.mod_revision)
        .max()
        .unwrap_or(0);

    // Every controld has seen them, and says so.
    let start = Instant::now();
    for n in lab.host_ids() {
        let st = lab.wait_control(n, Duration::from_secs(5), "saw the phantoms", |s| {
            s.watched_revision >= revision
        })?;
        let seen = wait_warnings(lab, n, &phantoms, start + Duration::from_secs(5));
        eprintln!(
            "host{n} warnings: {:?}",
            seen.as_ref().unwrap_or(&st.warnings)
        );
        seen?;
    }
    // Give a wrongly routed phantom time to show up, then look everywhere.
    std::thread::sleep(Duration::from_millis(300));
    for n in lab.host_ids() {
        let routes = lab.dp_routes(n)?;
        for (subnet, ip, value) in &phantoms {
            ensure!(
                !routes.iter().any(|(s, i)| s == subnet || i == ip),
                "host{n}: the dataplane routes {subnet} ({value}): {routes:?}"
            );
        }
        let want = lab.expected_objects(n, Backend::Vxlan);
        let got = lab.kernel_objects(n)?;
        ensure!(
            got.same_as(&want),
            "host{n}: kernel objects with the phantoms around:\n{}",
            diff(&got, &want)
        );
    }
    lab.assert_all_pairs_ping(2)?;
    let _ = ctl.lease_revoke(&lease);
    Ok(())
}

/// Waits until host `n`'s controld status warnings name every phantom subnet.
fn wait_warnings(
    lab: &Lab,
    n: u8,
    phantoms: &[(Ipv4Net, Ipv4Addr, String)],
    deadline: Instant,
) -> Result<Vec<String>> {
    loop {
        let warnings = lab.cd_status(n).map(|s| s.warnings).unwrap_or_default();
        let missing: Vec<String> = phantoms
            .iter()
            .map(|(s, _, _)| s.to_string())
            .filter(|s| !warnings.iter().any(|w| w.contains(s.as_str())))
            .collect();
        if missing.is_empty() {
            return Ok(warnings);
        }
        if Instant::now() >= deadline {
            bail!("host{n}: controld status warnings never named {missing:?}: {warnings:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
