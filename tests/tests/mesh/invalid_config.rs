//! An invalid network config written while the mesh runs changes nothing: same
//! routes, same leases, same subnet.env, pings still work, and controld says
//! what is wrong. A valid config afterwards clears the complaint.

use std::time::Duration;

use anyhow::{ensure, Result};
use kolach_testkit::{lab, run, Lab};

#[test]
fn invalid_config_changes_nothing() {
    run("badconf", bad_config);
}

struct Seen {
    routes: Vec<Vec<kolach_testkit::query::RouteEntry>>,
    leases: Vec<kolach_testkit::etcd::Kv>,
    envs: Vec<String>,
}

fn observe(lab: &Lab) -> Result<Seen> {
    let mut routes = Vec::new();
    let mut envs = Vec::new();
    for n in lab.host_ids() {
        routes.push(lab.dp_routes(n)?);
        envs.push(std::fs::read_to_string(lab.host(n).subnet_file())?);
    }
    let leases = lab.etcdctl().get_prefix(&lab::subnets_prefix())?;
    Ok(Seen {
        routes,
        leases,
        envs,
    })
}

fn bad_config(lab: &mut Lab) -> Result<()> {
    lab.mesh(2)?;
    let before = observe(lab)?;

    let cases = [
        (
            r#"{"Network":"10.50.0.0/16","SubnetLen":40,"Backend":{"Type":"udp"}}"#,
            "SubnetLen",
        ),
        // A live switch to aws-vpc with a table ID that is none: nothing moves.
        (
            r#"{"Network":"10.50.0.0/16","Backend":{"Type":"aws-vpc","RouteTableID":["rtb-0a1b2c3d","subnet-0a1b"]}}"#,
            "RouteTableID",
        ),
        (r#"{"Network":"10.50.0.0/16","Backend":{"Type":"#, ""),
    ];
    for (config, must_name) in cases {
        lab.put_config(config)?;
        for n in lab.host_ids() {
            let s =
                lab.wait_control(n, Duration::from_secs(5), "reported a config error", |s| {
                    !s.config_error.is_empty() && s.config_error.contains(must_name)
                })?;
            ensure!(
                s.config_error.contains(must_name),
                "host{n}: config_error {:?} should name {must_name}",
                s.config_error
            );
            eprintln!("host{n} config_error: {}", s.config_error);
        }
        // Give a wrongly reacting daemon time to do damage.
        std::thread::sleep(Duration::from_millis(700));
        let after = observe(lab)?;
        ensure!(
            after.routes == before.routes,
            "routes changed after {config}: {:?} -> {:?}",
            before.routes,
            after.routes
        );
        ensure!(
            after.leases == before.leases,
            "leases changed after {config}: {:?} -> {:?}",
            before.leases,
            after.leases
        );
        ensure!(
            after.envs == before.envs,
            "subnet.env changed after {config}"
        );
        lab.assert_all_pairs_ping(2)?;
    }

    lab.put_config(lab::NETWORK_CONFIG)?;
    for n in lab.host_ids() {
        lab.wait_control(n, Duration::from_secs(5), "cleared config_error", |s| {
            s.config_error.is_empty()
        })?;
    }
    let after = observe(lab)?;
    ensure!(
        after.envs == before.envs,
        "subnet.env changed after the good config came back"
    );
    lab.assert_all_pairs_ping(2)
}
