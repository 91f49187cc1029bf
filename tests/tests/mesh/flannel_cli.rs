//! A host switched from flannel by renaming the binary (issue 18): its
//! controld runs with a flannel command line (one dash, `=`, Go booleans,
//! flannel's `-subnet-file`) and `FLANNELD_*` variables only, its dataplaned
//! with Go-style flags; it joins a mesh of ordinary hosts, pods ping across,
//! and its flannel-format subnet.env is exactly what flanneld writes for the
//! same lease. It keeps the subnet flanneld's file named.

use anyhow::{bail, ensure, Context, Result};
use kolach_testkit::lab::topology;
use kolach_testkit::{etcd, lab, run, Lab};

#[test]
fn flannel_command_line_joins_the_mesh() {
    run("flcli", flannel_host);
}

fn flannel_host(lab: &mut Lab) -> Result<()> {
    lab.mesh(2)?;
    let n = lab.add_host()?;
    let dir = lab.host(n).dir.clone();
    let d = dir.display().to_string();
    let flannel_file = dir.join("flannel/subnet.env");
    {
        let h = lab.host_mut(n);
        h.dataplaned.args = vec![format!("-run-dir={d}"), "-v=0".into()];
        h.controld.args = vec![
            format!("-etcd-endpoints={}", etcd::endpoint()),
            format!("-iface={}", topology::ETH),
            "-ip-masq".into(),
            format!("-subnet-file={}", flannel_file.display()),
            // kolach's own file, where the lab looks: two dashes.
            "--subnet-file".into(),
            dir.join("subnet.env").display().to_string(),
            "-run-dir".into(),
            d.clone(),
            "-v=1".into(),
        ];
        h.controld.env.extend(
            [
                (
                    "FLANNELD_STATE_DIR",
                    dir.join("state").display().to_string(),
                ),
                // The command line wins over this one.
                ("FLANNELD_IFACE", "nosuch0".to_string()),
                ("FLANNELD_SUBNET_LEASE_RENEW_MARGIN", "60".to_string()),
                ("FLANNELD_HEALTHZ_IP", "127.0.0.1".to_string()),
                ("FLANNELD_HEALTHZ_PORT", "9465".to_string()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
    }
    // flanneld's file from before the switch: the host gets that subnet back
    // (it is free; flannel's lease would be found first if it were kept).
    let taken: Vec<_> = [1u8, 2]
        .iter()
        .filter_map(|h| lab.host(*h).subnet_env().map(|e| e.lease()))
        .collect();
    let old: ipnet::Ipv4Net = ["10.50.77.0/24", "10.50.78.0/24"]
        .iter()
        .map(|s| s.parse().unwrap())
        .find(|s| !taken.contains(s))
        .context("both candidate subnets taken")?;
    std::fs::create_dir_all(flannel_file.parent().unwrap())?;
    std::fs::write(
        &flannel_file,
        format!(
            "FLANNEL_NETWORK=10.50.0.0/16\nFLANNEL_SUBNET={}/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n",
            old.hosts().next().unwrap()
        ),
    )?;
    lab.start_host(n)?;
    let env = lab.wait_ready(n)?;
    ensure!(
        env.lease() == old,
        "the switched host took {} instead of its flannel subnet {old}",
        env.lease()
    );
    lab.add_pod(n)?;
    lab.wait_converged(lab::mesh::CONVERGE_WITHIN)?;
    lab.assert_all_pairs_ping(2)?;

    ensure!(env.ipmasq, "KOLACH_IPMASQ should follow -ip-masq: {env:?}");
    // What flanneld's WriteSubnetFile writes for this lease, from etcd's
    // config and this host's lease in kolach's own subnet.env.
    let lease = env.lease();
    let first = lease.hosts().next().context("subnet has no host address")?;
    let want = format!(
        "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={first}/{}\nFLANNEL_MTU={}\nFLANNEL_IPMASQ=true\n",
        env.network,
        lease.prefix_len(),
        env.mtu
    );
    let got = std::fs::read_to_string(&flannel_file)
        .with_context(|| format!("reading {}", flannel_file.display()))?;
    ensure!(
        got == want,
        "flannel's subnet.env:\n{got:?}\nwant:\n{want:?}"
    );

    let log = std::fs::read_to_string(&lab.host(n).controld.log)?;
    for line in [
        "using FLANNELD_STATE_DIR for --state-dir",
        "ignoring FLANNELD_IFACE: --iface is on the command line",
        "FLANNELD_SUBNET_LEASE_RENEW_MARGIN=60 has no effect",
        "FLANNELD_HEALTHZ_PORT=9465: /healthz (and /metrics) at 127.0.0.1:9465",
        "wrote flannel's subnet.env",
    ] {
        if !log.contains(line) {
            bail!(
                "controld's log lacks {line:?}:\n{}",
                lab.host(n).log_tails(40)
            );
        }
    }
    // -v=1 is debug.
    ensure!(log.contains("DEBUG"), "-v=1 should log debug lines");
    Ok(())
}
