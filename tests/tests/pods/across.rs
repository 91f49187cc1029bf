//! Three hosts, two pods each (one in the default pool, one in pool "blue"
//! chosen by its Kubernetes namespace): every pod reaches every other pod,
//! on one host and across, on udp, vxlan and host-gw.

use anyhow::{ensure, Result};
use kolach_testkit::lab::pods::CniPod;
use kolach_testkit::{query, run, Backend, Lab};

fn pods_everywhere(lab: &mut Lab, backend: Backend) -> Result<Vec<CniPod>> {
    lab.mesh_for_pods(3, &backend.config())?;
    lab.create_pool(1, "blue", "203.0.113.0/24", &["--block-len", "28"])?;
    let mut pods = Vec::new();
    for n in lab.host_ids() {
        let env = lab.host(n).subnet_env().expect("ready");
        let a = lab.cni_add(n, "a", None)?;
        ensure!(
            env.lease().contains(&a.ip),
            "host{n}: default-pool pod got {} outside {}",
            a.ip,
            env.lease()
        );
        let b = lab.cni_add(n, "b", Some("blue"))?;
        ensure!(
            "203.0.113.0/24".parse::<ipnet::Ipv4Net>()?.contains(&b.ip),
            "host{n}: pool pod got {}",
            b.ip
        );
        pods.extend([a, b]);
    }
    Ok(pods)
}

/// Every ordered pair pings (same host included); waits for the blocks to
/// reach every dataplane first.
fn all_pairs(lab: &Lab, pods: &[CniPod]) -> Result<()> {
    for n in lab.host_ids() {
        lab.wait_dp_blocks(n, 2)?;
    }
    let mut failed = Vec::new();
    for a in pods {
        for b in pods {
            if a.ns != b.ns && !lab.pod_pings(a, b.ip) {
                failed.push(format!("{} ({}) -> {} ({})", a.ns, a.ip, b.ns, b.ip));
            }
        }
    }
    ensure!(
        failed.is_empty(),
        "pods that cannot reach each other: {failed:#?}"
    );
    Ok(())
}

#[test]
fn pods_reach_each_other_on_udp_and_spoofed_sources_are_dropped() {
    run("podsudp", |lab| {
        let pods = pods_everywhere(lab, Backend::Udp)?;
        all_pairs(lab, &pods)?;
        // Pod a of host 1 sends with a source in host 2's block: host 3
        // drops it (the sender's subnet and blocks only).
        let spoofed = pods[3].ip; // host 2's pool pod
        let from = &pods[0];
        let before = query::dropped(&lab.dp_status(3)?, "spoofed-source");
        lab.spoof_ping(from, spoofed, pods[4].ip)?;
        let after = query::dropped(&lab.dp_status(3)?, "spoofed-source");
        ensure!(
            after > before,
            "host3 did not count the spoofed datagrams (spoofed-source {before} -> {after})"
        );
        Ok(())
    });
}

#[test]
fn pods_reach_each_other_on_vxlan() {
    run("podsvx", |lab| {
        let pods = pods_everywhere(lab, Backend::Vxlan)?;
        all_pairs(lab, &pods)
    });
}

#[test]
fn pods_reach_each_other_on_host_gw() {
    run("podshgw", |lab| {
        let pods = pods_everywhere(lab, Backend::HostGw)?;
        all_pairs(lab, &pods)
    });
}
