//! Three hosts, real etcd, real daemons: every pod reaches every other pod, and
//! what each host got (subnet.env, leases, TUN device) follows the contracts.

use std::collections::BTreeSet;

use anyhow::{ensure, Context, Result};
use kolach_testkit::{kernel, lab, run, subnet_env::lease_key, Lab};

#[test]
fn three_hosts_reach_each_other_pod_to_pod() {
    run("mesh", |lab| {
        lab.mesh(3)?;
        check_host_state(lab)?;
        lab.assert_all_pairs_ping(3)?;
        // Seconds after the TUNs came up: nothing but the pods' IPv4 went
        // into them (no router solicitation, no MLD report).
        for n in lab.host_ids() {
            let st = lab.dp_status(n)?;
            let not_ipv4 = kolach_testkit::query::dropped(&st, "not-ipv4");
            ensure!(
                not_ipv4 == 0,
                "host{n}: {not_ipv4} packets dropped as not-ipv4"
            );
        }
        Ok(())
    });
}

fn check_host_state(lab: &Lab) -> Result<()> {
    let mut subnets = BTreeSet::new();
    let leases = lab.etcdctl().get_prefix(&lab::subnets_prefix())?;
    for n in lab.host_ids() {
        let h = lab.host(n);
        let env = h.subnet_env().context("subnet.env")?;
        ensure!(
            env.network.to_string() == "10.50.0.0/16",
            "host{n}: {env:?}"
        );
        ensure!(env.subnet.prefix_len() == 24, "host{n}: {env:?}");
        ensure!(env.network.contains(&env.lease()), "host{n}: {env:?}");
        ensure!(
            env.subnet.addr() == kolach_testkit::subnet_env::nth(env.lease(), 1),
            "host{n}: KOLACH_SUBNET must be the subnet's first address: {env:?}"
        );
        ensure!(
            env.mtu == 1500 - 28,
            "host{n}: KOLACH_MTU {} != 1472",
            env.mtu
        );
        ensure!(!env.ipmasq, "host{n}: KOLACH_IPMASQ");
        ensure!(
            subnets.insert(env.lease()),
            "host{n}: subnet {} twice",
            env.lease()
        );

        let key = format!("{}{}", lab::subnets_prefix(), lease_key(env.lease()));
        let kv = leases
            .iter()
            .find(|kv| kv.key == key)
            .with_context(|| format!("host{n}: no lease {key} in etcd: {leases:?}"))?;
        let value: serde_json::Value = serde_json::from_str(&kv.value)?;
        ensure!(
            value["PublicIP"] == h.ip.to_string(),
            "host{n}: lease value {}",
            kv.value
        );
        ensure!(
            value["BackendType"] == "udp",
            "host{n}: lease value {}",
            kv.value
        );
        ensure!(kv.lease != 0, "host{n}: lease key {key} has no etcd lease");

        // DESIGN §5: TUN kolach0 with <subnet>.0/<Network prefix>, MTU underlay − 28, up.
        let tun = kernel::link(&h.ns, "kolach0")?.context("no kolach0 device")?;
        let want: ipnet::Ipv4Net = format!("{}/16", env.lease().network()).parse()?;
        ensure!(
            tun.v4 == vec![want],
            "host{n}: kolach0 addresses {:?}",
            tun.v4
        );
        ensure!(tun.mtu == env.mtu, "host{n}: kolach0 mtu {}", tun.mtu);
        ensure!(tun.up, "host{n}: kolach0 is down");
        // IPv4 only: no link-local address, so the kernel sends no router
        // solicitations or MLD reports into the TUN (dropped as not-ipv4).
        ensure!(
            tun.v6.is_empty(),
            "host{n}: kolach0 has IPv6 addresses {:?}",
            tun.v6
        );

        let st = lab.dp_status(n)?;
        ensure!(st.has_snapshot, "host{n}: dataplane has no snapshot");
        ensure!(
            st.route_count == 2,
            "host{n}: route_count {}",
            st.route_count
        );
        let cs = lab.cd_status(n)?;
        ensure!(
            kolach_testkit::query::control_subnet(&cs) == Some(env.lease()),
            "host{n}: controld subnet {:?}",
            cs.subnet
        );
        ensure!(cs.config_error.is_empty(), "host{n}: {}", cs.config_error);
    }
    ensure!(leases.len() == 3, "expected 3 leases: {leases:?}");
    Ok(())
}
