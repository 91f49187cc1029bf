//! The aws-vpc backend (DESIGN §11) against the EC2 emulator moto
//! ([`kolach_testkit::aws`]), three hosts whose instances sit at their
//! underlay addresses, one lab for every case:
//!
//! - every host's subnet routed to its instance's interface in both kept
//!   tables (`RouteTableID` a list) within 5 s of its subnet.env (printed);
//!   leases say `"BackendType":"aws-vpc"`, no kernel objects, MTU 1500,
//!   `kolachctl status` shows `aws-vpc  ok: ...`;
//! - a route pointed at another instance by hand is put back (ReplaceRoute);
//! - a blackhole inside Network (a route to a deleted interface) is removed,
//!   one outside Network stays;
//! - a controld restart with everything right makes no write call;
//! - EC2 away for 30 s: every lease stays, and a route deleted meanwhile is
//!   back once EC2 is;
//! - a wrong secret (a second moto with authentication on): a clear error in
//!   `kolachctl status`, the lease kept.
//!
//! Needs root and the venv with moto that `make deps` makes. The hosts run
//! with a 2 s resync (`KOLACH_AWS_RESYNC`); the times printed are upper
//! bounds: each look at the tables is a helper call of ~0.5 s.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ipnet::Ipv4Net;
use kolach_testkit::aws::{Emulator, BASE_PORT};
use kolach_testkit::{lab, run, Backend, Lab};
use serde_json::json;

const HOSTS: u8 = 3;
/// A host's subnet in every table after its subnet.env.
const ROUTED_WITHIN: Duration = Duration::from_secs(5);
/// A route spoiled by hand put right: the backend's resync period decides
/// (2 s in the lab, `aws::RESYNC_SECS`), plus its retry after an error.
const REPAIRED_WITHIN: Duration = Duration::from_secs(15);
const OUTAGE: Duration = Duration::from_secs(30);
/// The spare instance routes are pointed at by hand.
const SPARE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

#[test]
fn aws_vpc_keeps_every_hosts_subnet_in_the_route_tables() {
    run("awsvpc", |lab| {
        let hosts: Vec<Ipv4Addr> = (0..HOSTS)
            .map(|_| lab.add_host().map(|n| lab.host(n).ip))
            .collect::<Result<_>>()?;
        let mut emu = Emulator::start(
            &lab.names.underlay(),
            &lab.dir.join("aws"),
            BASE_PORT,
            &hosts,
            &[SPARE],
        )?;
        let result = cases(lab, &mut emu);
        if result.is_err() {
            eprintln!("{}", emu.log_tails(40));
        }
        result
    });
}

/// Sets `pairs` in `env`, replacing earlier values of the same keys.
fn set_env(env: &mut Vec<(String, String)>, pairs: Vec<(String, String)>) {
    env.retain(|(k, _)| !pairs.iter().any(|(p, _)| p == k));
    env.extend(pairs);
}

fn subnet(lab: &Lab, n: u8) -> Result<Ipv4Net> {
    Ok(lab
        .host(n)
        .subnet_env()
        .with_context(|| format!("host{n} has no subnet.env"))?
        .lease())
}

/// Whether host `n`'s subnet goes to its instance's interface in `table`.
fn routed(lab: &Lab, emu: &Emulator, n: u8, table: &str) -> Result<bool> {
    Ok(routed_hosts(lab, emu, &[table.to_string()])?.contains(&n))
}

/// The hosts whose subnet goes to their instance's interface in every one
/// of `tables` (one DescribeRouteTables for all).
fn routed_hosts(lab: &Lab, emu: &Emulator, tables: &[String]) -> Result<Vec<u8>> {
    let all = emu.tables_routes(tables)?;
    let mut hosts = Vec::new();
    for n in lab.host_ids() {
        let want = &emu.instance(lab.host(n).ip)?.eni;
        let dest = subnet(lab, n)?.to_string();
        let ok = tables.iter().all(|t| {
            all.get(t).is_some_and(|routes| {
                routes.iter().any(|r| {
                    r.destination == dest && r.eni.as_ref() == Some(want) && r.state == "active"
                })
            })
        });
        if ok {
            hosts.push(n);
        }
    }
    Ok(hosts)
}

fn all_routed(lab: &Lab, emu: &Emulator) -> Result<bool> {
    Ok(routed_hosts(lab, emu, &emu.seed.tables)?.len() == lab.host_ids().len())
}

/// Polls `cond` until it holds; the time it took.
fn wait(what: &str, within: Duration, mut cond: impl FnMut() -> Result<bool>) -> Result<Duration> {
    let t = Instant::now();
    loop {
        if cond()? {
            return Ok(t.elapsed());
        }
        if t.elapsed() >= within {
            bail!("{what}: not within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every subnet key: its value and etcd lease.
fn leases(lab: &Lab) -> Result<BTreeMap<String, (String, i64)>> {
    Ok(lab
        .etcdctl()
        .get_prefix(&lab::subnets_prefix())?
        .into_iter()
        .map(|kv| (kv.key, (kv.value, kv.lease)))
        .collect())
}

/// Subnet keys and values only: a restarted controld may attach its key to
/// a new etcd lease.
fn values(lab: &Lab) -> Result<BTreeMap<String, String>> {
    Ok(leases(lab)?.into_iter().map(|(k, (v, _))| (k, v)).collect())
}

/// The `aws-vpc` line of `kolachctl status` on host `n`.
fn status_line(lab: &Lab, n: u8) -> Result<String> {
    let out = lab.kolachctl(n, &["status"])?;
    out.stdout
        .lines()
        .find(|l| l.trim_start().starts_with("aws-vpc"))
        .map(|l| l.trim().to_string())
        .with_context(|| format!("host{n}: no aws-vpc line in\n{}", out.stdout))
}

fn cases(lab: &mut Lab, emu: &mut Emulator) -> Result<()> {
    lab.start_etcd()?;
    let tables = emu.seed.tables.clone();
    lab.put_config(
        &json!({"Network": "10.50.0.0/16", "Backend": {"Type": "aws-vpc", "RouteTableID": tables}})
            .to_string(),
    )?;
    for n in lab.host_ids() {
        // host1 learns its region from the metadata stub, the others from AWS_REGION.
        let env = emu.host_env(n != 1);
        set_env(&mut lab.host_mut(n).controld.env, env);
        lab.start_host(n)?;
    }

    // Routed in both tables within 5 s of each host's subnet.env.
    let mut ready = BTreeMap::new();
    for n in lab.host_ids() {
        lab.wait_ready(n)?;
        ready.insert(n, Instant::now());
    }
    let mut routed_at = BTreeMap::new();
    let deadline = Instant::now() + ROUTED_WITHIN;
    while routed_at.len() < ready.len() {
        for n in routed_hosts(lab, emu, &tables)? {
            routed_at.entry(n).or_insert_with(|| ready[&n].elapsed());
        }
        if Instant::now() >= deadline {
            bail!(
                "not every subnet routed in {tables:?} within {ROUTED_WITHIN:?} of subnet.env: routed {routed_at:?}; {:?}",
                tables.iter().map(|t| emu.routes(t)).collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("aws-vpc: subnet.env to routed in both tables, by host: {routed_at:?}");
    lab.wait_subnet_env_mtu(Backend::AwsVpc.mtu(), Duration::from_secs(1))?;
    lab.wait_kernel_converged(Backend::AwsVpc, Duration::from_secs(5))?;
    for n in lab.host_ids() {
        lab.check_lease_value(n, Backend::AwsVpc)?;
        let me = emu.instance(lab.host(n).ip)?;
        wait(
            &format!("host{n} status ok"),
            Duration::from_secs(5),
            || Ok(lab.cd_status(n)?.aws.is_some_and(|a| a.ok)),
        )?;
        let line = status_line(lab, n)?;
        ensure!(
            line.contains("ok: instance")
                && line.contains(&me.instance_id)
                && line.contains(&me.eni)
                && tables.iter().all(|t| line.contains(t.as_str())),
            "host{n}: {line}"
        );
        let (_, json) = lab.kolachctl_json(n, &["status"])?;
        ensure!(
            json["controld"]["aws"]["instance_id"] == me.instance_id.as_str(),
            "host{n} --json: {}",
            json["controld"]
        );
    }
    eprintln!("aws-vpc: host1 {}", status_line(lab, 1)?);
    let values_before = values(lab)?;
    ensure!(
        values_before.len() == usize::from(HOSTS),
        "{values_before:?}"
    );

    // Pointed elsewhere by hand: put back with ReplaceRoute.
    let (t0, s1) = (&tables[0], subnet(lab, 1)?.to_string());
    let spare = emu.instance(SPARE)?.eni.clone();
    let replaces = |emu: &Emulator| -> Result<u64> {
        Ok(emu
            .counts()?
            .get(&lab.host(1).ip)
            .and_then(|c| c.get("ReplaceRoute"))
            .copied()
            .unwrap_or(0))
    };
    let replaced_before = replaces(emu)?;
    emu.ec2(
        "ReplaceRoute",
        json!({"RouteTableId": t0, "DestinationCidrBlock": s1, "NetworkInterfaceId": spare}),
    )?;
    // (Not checked in between: with the lab's 2 s resync the backend may
    // put it back before a helper call could look; the ReplaceRoute count
    // shows it did.)
    let took = wait("route pointed elsewhere put back", REPAIRED_WITHIN, || {
        routed(lab, emu, 1, t0)
    })?;
    ensure!(
        replaces(emu)? > replaced_before,
        "put back without ReplaceRoute: {:?}",
        emu.counts()?
    );
    eprintln!("aws-vpc: route pointed at another instance put back in {took:.1?}");

    // A blackhole inside Network goes; one outside stays.
    let t1 = &tables[1];
    let eni = emu.ec2(
        "CreateNetworkInterface",
        json!({"SubnetId": emu.seed.subnet}),
    )?["NetworkInterface"]["NetworkInterfaceId"]
        .as_str()
        .context("new ENI")?
        .to_string();
    for dest in ["10.50.250.0/24", "192.0.2.0/24"] {
        emu.ec2(
            "CreateRoute",
            json!({"RouteTableId": t1, "DestinationCidrBlock": dest, "NetworkInterfaceId": eni}),
        )?;
    }
    emu.ec2("DeleteNetworkInterface", json!({"NetworkInterfaceId": eni}))?;
    let took = wait("blackhole inside Network removed", REPAIRED_WITHIN, || {
        Ok(emu.route(t1, "10.50.250.0/24")?.is_none())
    })?;
    let outside = emu.route(t1, "192.0.2.0/24")?;
    ensure!(
        outside.as_ref().is_some_and(|r| r.state == "blackhole"),
        "the blackhole outside Network was touched: {outside:?}"
    );
    eprintln!("aws-vpc: blackhole inside Network removed in {took:.1?}");
    ensure!(all_routed(lab, emu)?, "a host route went missing");

    // A restart with everything right writes nothing.
    let h2 = lab.host(2).ip;
    let writes_before = emu.writes(h2)?;
    let t = Instant::now();
    lab.host_mut(2).controld.restart()?;
    let settled = wait(
        "host2 checked after its restart",
        Duration::from_secs(20),
        || {
            Ok(lab
                .cd_status(2)
                .ok()
                .and_then(|s| s.aws)
                .is_some_and(|a| a.ok && a.checked_unix > 0))
        },
    )?;
    let st = lab.cd_status(2)?.aws.context("no aws status")?;
    ensure!(
        emu.writes(h2)? == writes_before && st.writes == 0,
        "host2 wrote after a restart with everything right: proxy {} -> {}, status {}",
        writes_before,
        emu.writes(h2)?,
        st.writes
    );
    eprintln!(
        "aws-vpc: controld restart, check done {settled:.1?} after ({:.1?} in all), 0 writes",
        t.elapsed()
    );

    // EC2 away for 30 s: no lease lost; a route deleted meanwhile comes back.
    let s3 = subnet(lab, 3)?.to_string();
    let leases_before = leases(lab)?;
    emu.suspend();
    emu.ec2(
        "DeleteRoute",
        json!({"RouteTableId": t0, "DestinationCidrBlock": s3}),
    )?;
    let away = Instant::now();
    while away.elapsed() < OUTAGE {
        std::thread::sleep(Duration::from_secs(1));
        for n in lab.host_ids() {
            ensure!(
                lab.host_mut(n).controld.is_running(),
                "host{n}'s controld died with EC2 away"
            );
        }
    }
    eprintln!(
        "aws-vpc: with EC2 away 30 s, host3 {}",
        status_line(lab, 3)?
    );
    ensure!(
        leases(lab)? == leases_before,
        "leases changed with EC2 away: {leases_before:?} -> {:?}",
        leases(lab)?
    );
    emu.resume()?;
    let took = wait("routes right after EC2 came back", REPAIRED_WITHIN, || {
        all_routed(lab, emu)
    })?;
    eprintln!("aws-vpc: EC2 back after 30 s away: routes right again in {took:.1?}");

    // A wrong secret: a clear error, the lease kept.
    let h3 = lab.host(3).ip;
    let auth_dir = lab.dir.join("aws-auth");
    let strict = Emulator::start(&lab.names.underlay(), &auth_dir, BASE_PORT + 10, &[h3], &[])?;
    strict.require_auth()?;
    let good_env = lab.host(3).controld.env.clone();
    let mut env = strict.host_env(true);
    set_env(
        &mut env,
        vec![("AWS_SECRET_ACCESS_KEY".into(), "not-the-secret".into())],
    );
    set_env(&mut lab.host_mut(3).controld.env, env);
    lab.host_mut(3).controld.restart()?;
    let took = wait(
        "host3 reports the refused secret",
        Duration::from_secs(20),
        || {
            Ok(lab
                .cd_status(3)
                .ok()
                .and_then(|s| s.aws)
                .is_some_and(|a| !a.ok && !a.message.is_empty()))
        },
    )?;
    let line = status_line(lab, 3)?;
    eprintln!("aws-vpc: wrong secret, after {took:.1?}: {line}");
    ensure!(
        line.contains("ERROR")
            && ["AuthFailure", "credentials", "signature", "Signature"]
                .iter()
                .any(|w| line.contains(w)),
        "host3: {line}"
    );
    ensure!(!line.contains("not-the-secret"), "the secret shows: {line}");
    ensure!(
        values(lab)? == values_before,
        "leases changed with a wrong secret: {values_before:?} -> {:?}",
        values(lab)?
    );
    lab.host_mut(3).controld.env = good_env;
    lab.host_mut(3).controld.restart()?;
    drop(strict);
    wait("every route right at the end", REPAIRED_WITHIN, || {
        all_routed(lab, emu)
    })?;
    Ok(())
}
