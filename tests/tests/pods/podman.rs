//! A real runtime: Debian's podman 4.3 (CNI backend) on two hosts of a udp
//! mesh runs a container on a `kolach` network on each (one in pool "blue",
//! picked by K8S_POD_NAMESPACE in podman's CNI_ARGS, one in the default
//! pool), and they ping each other; `podman rm` (DEL) frees the address.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use kolach_testkit::podman::{self, Engine, PodmanHost, IMAGE};
use kolach_testkit::{bins, cni, run, Backend};

const NETWORK: &str = "kolach";

fn conflist(run_dir: &std::path::Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [
            {"type": "kolach", "runDir": run_dir.display().to_string()},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
    .to_string()
}

fn pings(host: &PodmanHost, container: &str, to: std::net::Ipv4Addr) -> Result<()> {
    let out = host.exec(
        container,
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", &to.to_string()],
    )?;
    ensure!(
        out.success() && out.stdout.contains("3 packets received"),
        "{container} on {} cannot ping {to}: {}{}",
        host.ns,
        out.stdout,
        out.stderr
    );
    Ok(())
}

#[test]
fn podman_containers_on_two_hosts_ping_each_other() {
    run("podsman", |lab| {
        podman::require_tools()?;
        lab.mesh_for_pods(2, &Backend::Udp.config())?;
        lab.create_pool(1, "blue", "203.0.113.0/24", &[])?;
        let plugin: PathBuf = bins::find(cni::PLUGIN).context("the kolach plugin is built")?;
        let cache = podman::default_cache_dir();
        let mut hosts = Vec::new();
        for n in lab.host_ids() {
            let h = PodmanHost::start(&lab.host(n).ns, &lab.dir.join(format!("podman{n}")))?;
            h.install_plugin(&plugin, cni::PLUGIN)?;
            h.install_conflist(&conflist(&lab.host(n).dir))?;
            h.import_busybox(&cache)?;
            hosts.push(h);
        }
        let (h1, h2) = (&hosts[0], &hosts[1]);
        h1.run_detached(
            "c1",
            NETWORK,
            &[("CNI_ARGS", "K8S_POD_NAMESPACE=blue")],
            &[IMAGE, "sleep", "1000"],
        )?;
        h2.run_detached("c2", NETWORK, &[], &[IMAGE, "sleep", "1000"])?;
        let ip1 = h1.inspect_ip("c1", NETWORK)?;
        let ip2 = h2.inspect_ip("c2", NETWORK)?;
        eprintln!("c1 (pool blue, host1) {ip1}; c2 (default pool, host2) {ip2}");
        ensure!(
            "203.0.113.0/24".parse::<ipnet::Ipv4Net>()?.contains(&ip1),
            "c1 got {ip1}, not an address of pool blue"
        );
        let env2 = lab.host(2).subnet_env().context("host2 ready")?;
        ensure!(
            env2.lease().contains(&ip2),
            "c2 got {ip2} outside {}",
            env2.lease()
        );
        lab.wait_dp_blocks(2, 1)?;
        pings(h1, "c1", ip2)?;
        pings(h2, "c2", ip1)?;

        // podman rm runs DEL: host1's address is free again.
        h1.rm("c1")?;
        let out = lab.kolachctl(1, &["--json", "addresses"])?;
        let left: Vec<serde_json::Value> = serde_json::from_str(&out.stdout)?;
        ensure!(left.is_empty(), "allocations after podman rm: {left:?}");
        drop(hosts);
        Ok(())
    });
}
