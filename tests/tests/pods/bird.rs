//! Export (DESIGN §10) read by a real routing daemon: on each of two kolach
//! hosts (backend alloc: no overlay at all) BIRD 2 learns table 119 with its
//! kernel protocol and advertises it by eBGP to a third namespace, a plain
//! router with no kolach. The router learns every subnet and block within
//! 5 s of its claim, reaches a pod on each host (default pool and a named
//! pool outside the Network) by those routes alone, keeps them across a
//! restart of either daemon (not one BGP update or withdrawal) and a
//! refused `ExportTable: 254`, loses a given-back block within 5 s, and every
//! route within 5 s of `ExportTable: 0`, and has them back as soon after the
//! default returns. The times are printed.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Result};
use ipnet::Ipv4Net;
use kolach_testkit::bird::{self, Bird};
use kolach_testkit::kernel::monitor::KernelMonitor;
use kolach_testkit::lab::pods::CniPod;
use kolach_testkit::lab::topology::host_ip;
use kolach_testkit::{netns, query, run, Lab};

const CONFIG: &str = r#"{"Network":"10.50.0.0/16","Backend":{"Type":"alloc"}}"#;
const CONFIG_OFF: &str = r#"{"Network":"10.50.0.0/16","Backend":{"Type":"alloc"},"ExportTable":0}"#;
const POOL: &str = "203.0.113.0/24";
const ROUTER_AS: u32 = 65000;
const ROUTER_OCTET: u8 = 100;
/// The bound the issue sets on every export change reaching the router.
const WITHIN: Duration = Duration::from_secs(5);

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("a prefix")
}

/// The router's BGP-learned routes, as BIRD has them.
fn at_router(router: &Bird) -> Result<Vec<(Ipv4Net, Option<Ipv4Addr>)>> {
    router.routes("master4")
}

/// Polls the router until `done` holds for its routes; the time from `since`.
fn until_router(
    router: &Bird,
    since: Instant,
    what: &str,
    done: impl Fn(&[(Ipv4Net, Option<Ipv4Addr>)]) -> bool,
) -> Result<Duration> {
    let deadline = since + WITHIN * 3;
    loop {
        let routes = at_router(router)?;
        if done(&routes) {
            return Ok(since.elapsed());
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "router: {what} not seen in {:?}: {routes:?}",
                WITHIN * 3
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn has(routes: &[(Ipv4Net, Option<Ipv4Addr>)], prefix: Ipv4Net, via: Ipv4Addr) -> bool {
    routes.contains(&(prefix, Some(via)))
}

/// A host's subnet on its way to the router: (host, subnet, from the claim
/// as controld's status first shows it, from the daemons' start).
type SubnetTimes = (u8, Ipv4Net, Duration, Duration);

/// Starts both hosts' daemons and times, per host, its subnet from the claim
/// (seen in controld's status, polled: a lower bound) and from the start of
/// its daemons (an upper bound) to the subnet at the router.
fn start_and_time_subnets(lab: &mut Lab, router: &Bird) -> Result<Vec<SubnetTimes>> {
    let started = Instant::now();
    for n in lab.host_ids() {
        lab.start_host(n)?;
    }
    let mut claimed: Vec<Option<(Ipv4Net, Instant)>> = vec![None; lab.hosts.len()];
    let mut seen: Vec<Option<(Duration, Duration)>> = vec![None; lab.hosts.len()];
    loop {
        for n in lab.host_ids() {
            let i = usize::from(n) - 1;
            if claimed[i].is_none() {
                if let Some(s) = lab
                    .cd_status(n)
                    .ok()
                    .as_ref()
                    .and_then(query::control_subnet)
                {
                    claimed[i] = Some((s, Instant::now()));
                }
            }
        }
        let routes = at_router(router)?;
        for (i, c) in claimed.iter().enumerate() {
            if let (Some((subnet, at)), None) = (c, seen[i]) {
                if has(&routes, *subnet, host_ip(i as u8 + 1)) {
                    seen[i] = Some((at.elapsed(), started.elapsed()));
                }
            }
        }
        if seen.iter().all(Option::is_some) {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(40),
            "subnets not at the router 40 s after the start: claimed {claimed:?}, router {routes:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for n in lab.host_ids() {
        lab.wait_ready(n)?;
    }
    Ok(claimed
        .into_iter()
        .zip(seen)
        .enumerate()
        .map(|(i, (c, s))| {
            let (claimed, started) = s.expect("seen");
            (i as u8 + 1, c.expect("claimed").0, claimed, started)
        })
        .collect())
}

/// `ip route` of the router's kernel: BIRD's routes and the underlay only.
fn router_kernel_routes(ns: &str) -> Result<Vec<String>> {
    Ok(netns::ip(ns, &["route", "show"])?
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

fn router_pings(ns: &str, to: Ipv4Addr) -> bool {
    (0..3).any(|_| {
        netns::exec(
            ns,
            "ping",
            &["-c1", "-W1", &to.to_string()],
            Duration::from_secs(3),
        )
        .is_ok_and(|o| o.success())
    })
}

/// The router's count of updates and withdrawals received from BGP peer
/// `name` (`show protocols all`, "Import updates/withdraws", received): a
/// route withdrawn and announced again moves them, a quiet session does not.
fn import_counts(router: &Bird, name: &str) -> Result<(u64, u64)> {
    let text = router.birdc(&["show", "protocols", "all", name])?;
    let received = |what: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(what))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow!("router: no {what:?} for {name}: {text}"))
    };
    Ok((received("Import updates:")?, received("Import withdraws:")?))
}

#[test]
fn bird_learns_the_export_table_and_a_plain_router_reaches_the_pods() {
    run("podsbird", |lab| {
        // A block empty for a second is given back (default 10 min).
        lab.opts
            .controld_args
            .extend(["--block-grace".into(), "1s".into()]);
        lab.start_etcd()?;
        lab.put_config(CONFIG)?;
        let hosts = [lab.add_host()?, lab.add_host()?];
        let router_ns = lab.add_outsider("r", ROUTER_OCTET)?;
        let router_ip = host_ip(ROUTER_OCTET);
        let host_as = |n: u8| ROUTER_AS + u32::from(n);

        // BIRD everywhere, sessions up before kolach starts: every route
        // then reaches the router as an update, timed from its claim.
        let peers: Vec<(Ipv4Addr, u32)> =
            hosts.iter().map(|n| (host_ip(*n), host_as(*n))).collect();
        let router = Bird::start(
            &router_ns,
            &lab.dir,
            "router",
            &bird::router_config(router_ip, ROUTER_AS, &peers),
        )?;
        let mut birds = Vec::new();
        for n in hosts {
            let conf = bird::exporter_config(host_ip(n), host_as(n), router_ip, ROUTER_AS, 119);
            birds.push(Bird::start(
                &lab.host(n).ns,
                &lab.dir,
                &format!("h{n}"),
                &conf,
            )?);
        }
        for i in 0..hosts.len() {
            router.wait_established(&format!("peer{i}"), Duration::from_secs(20))?;
        }
        ensure!(
            at_router(&router)?.is_empty(),
            "the router knows routes before kolach runs"
        );

        // Subnets: claim -> router.
        let subnets = start_and_time_subnets(lab, &router)?;
        for (n, subnet, t, from_start) in &subnets {
            println!(
                "host{n}: subnet {subnet} claimed -> at the router in {t:.2?} \
                 ({from_start:.2?} from the daemons' start)"
            );
            ensure!(
                *t < WITHIN,
                "host{n}: subnet {subnet} took {t:?} to reach the router"
            );
        }

        // Blocks: the first ADD into pool "blue" claims one per host.
        lab.create_pool(1, "blue", POOL, &["--block-len", "28"])?;
        let mut pods: Vec<CniPod> = Vec::new();
        let mut blocks = Vec::new();
        for n in hosts {
            let t0 = Instant::now();
            let b = lab.cni_add(n, "b", Some("blue"))?;
            let block = Ipv4Net::new(b.ip, 28)?.trunc();
            ensure!(net(POOL).contains(&block), "host{n}: pool pod got {}", b.ip);
            let t = until_router(&router, t0, &format!("host{n}'s block {block}"), |r| {
                has(r, block, host_ip(n))
            })?;
            println!(
                "host{n}: block {block} claimed (first ADD into blue) -> at the router in {t:.2?}"
            );
            ensure!(
                t < WITHIN,
                "host{n}: block {block} took {t:?} to reach the router"
            );
            blocks.push(block);
            let a = lab.cni_add(n, "a", None)?;
            let subnet = subnets[usize::from(n) - 1].1;
            ensure!(
                subnet.contains(&a.ip),
                "host{n}: default-pool pod got {} outside {subnet}",
                a.ip
            );
            pods.extend([a, b]);
        }

        // The router reaches every pod by BGP routes alone: it has nothing
        // else but its underlay subnet.
        let kernel = router_kernel_routes(&router_ns)?;
        ensure!(
            kernel
                .iter()
                .all(|l| l.contains("proto bird") || l.starts_with("198.18.0.0/24 ")),
            "router routes other than BGP's: {kernel:#?}"
        );
        ensure!(
            kernel.len() == 5,
            "router: 4 BGP routes + underlay expected: {kernel:#?}"
        );
        for p in &pods {
            let via = host_ip(p.host);
            let bgp = kernel.iter().any(|l| {
                l.contains("proto bird") && l.contains(&format!("via {via} ")) && {
                    let dst = l.split_whitespace().next().unwrap_or_default();
                    dst.parse::<Ipv4Net>().is_ok_and(|d| d.contains(&p.ip))
                }
            });
            ensure!(
                bgp,
                "router: no BGP route via {via} covers pod {}: {kernel:#?}",
                p.ip
            );
            ensure!(
                router_pings(&router_ns, p.ip),
                "router cannot ping pod {} on host{}",
                p.ip,
                p.host
            );
        }
        println!(
            "router pinged {} pods on 2 hosts over BGP routes only",
            pods.len()
        );

        // A restart of either daemon leaves the export alone: no kernel
        // change in table 119, and the router's routes keep their age.
        let before = import_counts(&router, "peer0")?;
        let mon = KernelMonitor::start(&lab.host(1).ns, &lab.dir, "bird-restart")?;
        lab.restart_controld(1)?;
        lab.host_mut(1).dataplaned.restart()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !lab.dp_status(1).is_ok_and(|s| s.has_snapshot) {
            ensure!(
                Instant::now() < deadline,
                "host1's dataplaned has no snapshot 5 s after its restart"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_secs(2));
        let events = mon.stop()?;
        ensure!(
            events.is_empty(),
            "kolach changed the kernel across the restarts: {events:#?}"
        );
        let after = import_counts(&router, "peer0")?;
        ensure!(
            after.0 >= 2,
            "router: host1's session shows {after:?} updates, not its 2 routes"
        );
        ensure!(
            before == after,
            "router got updates or withdrawals from host1 across the restarts: \
             (updates, withdraws) {before:?} -> {after:?}"
        );
        println!(
            "restarts of controld and dataplaned on host1: no kernel change in table 119, \
             router's (updates, withdraws) from host1 stay {after:?}"
        );

        // A block given back is withdrawn.
        let t0 = Instant::now();
        lab.cni_del(&pods[1])?;
        let t = until_router(&router, t0, &format!("withdrawal of {}", blocks[0]), |r| {
            !r.iter().any(|(p, _)| *p == blocks[0])
        })?;
        println!("host1: block {} DEL of its last pod -> withdrawn at the router in {t:.2?} (block grace 1 s)", blocks[0]);
        ensure!(
            t < WITHIN,
            "block {} took {t:?} to leave the router",
            blocks[0]
        );

        // A broken ExportTable (the main table) is refused: the last good
        // config stays, and so does every route at the router.
        let routes_before = at_router(&router)?;
        let counts_before = import_counts(&router, "peer1")?;
        lab.put_config(
            r#"{"Network":"10.50.0.0/16","Backend":{"Type":"alloc"},"ExportTable":254}"#,
        )?;
        for n in hosts {
            let s =
                lab.wait_control(n, Duration::from_secs(5), "reported a config error", |s| {
                    !s.config_error.is_empty()
                })?;
            ensure!(
                s.config_error.contains("ExportTable 254"),
                "host{n}: config_error {:?} does not name ExportTable 254",
                s.config_error
            );
        }
        std::thread::sleep(Duration::from_millis(500));
        ensure!(
            at_router(&router)? == routes_before
                && import_counts(&router, "peer1")? == counts_before,
            "a refused ExportTable changed the router's routes"
        );
        println!("ExportTable 254 refused by both controlds; the router's routes unchanged");

        // ExportTable 0 withdraws everything, on every host.
        let t0 = Instant::now();
        lab.put_config(CONFIG_OFF)?;
        let t = until_router(&router, t0, "no routes", <[_]>::is_empty)?;
        println!("ExportTable 0 -> every route withdrawn at the router in {t:.2?}");
        ensure!(t < WITHIN, "ExportTable 0 took {t:?} to empty the router");
        for n in hosts {
            let left = netns::ip(
                &lab.host(n).ns,
                &["route", "show", "table", "all", "proto", "107"],
            )?;
            ensure!(left.trim().is_empty(), "host{n} still exports: {left}");
            ensure!(
                lab.dp_status(n)?.export_table == 0,
                "host{n}: status export_table not 0"
            );
        }

        // And back (the default, 119): both subnets and host2's block return.
        let t0 = Instant::now();
        lab.put_config(CONFIG)?;
        let want = [
            (subnets[0].1, host_ip(1)),
            (subnets[1].1, host_ip(2)),
            (blocks[1], host_ip(2)),
        ];
        let t = until_router(&router, t0, "the routes back", |r| {
            r.len() == want.len() && want.iter().all(|(p, via)| has(r, *p, *via))
        })?;
        println!("ExportTable back to 119 -> both subnets and the remaining block at the router in {t:.2?}");
        ensure!(
            t < WITHIN,
            "ExportTable 119 again took {t:?} to reach the router"
        );
        drop(birds);
        drop(router);
        Ok(())
    });
}
