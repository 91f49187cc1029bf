//! A host cut off from etcd (nftables in its namespace) for longer than its
//! lease TTL, twice: first nobody wants its subnet meanwhile, and it gets the
//! same subnet back; then a new host joins during the cut and takes that
//! subnet, and the returning host moves to another one, rewrites
//! subnet.env and says so loudly in its log and status. All along, a
//! sampler checks etcd and every controld: never two hosts claiming one
//! subnet, never a host claiming a subnet etcd gives to another.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ipnet::Ipv4Net;
use kolach_testkit::etcd::lease_watch::{LeaseWatch, Watched};
use kolach_testkit::subnet_env::lease_key;
use kolach_testkit::{etcd, lab, lab::topology, query, run, traffic::cutoff, Lab};

const TTL: Duration = Duration::from_secs(6);
/// Three subnets: two hosts, and one a phantom holds until the end.
const CONFIG: &str = r#"{"Network":"10.50.0.0/16","SubnetMin":"10.50.1.0","SubnetMax":"10.50.3.0","Backend":{"Type":"udp"}}"#;

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("valid")
}

fn key(subnet: Ipv4Net) -> String {
    format!("{}{}", lab::subnets_prefix(), lease_key(subnet))
}

fn subnet_of(lab: &Lab, n: u8) -> Result<Option<Ipv4Net>> {
    Ok(query::control_subnet(&lab.cd_status(n)?))
}

fn wait_subnet(lab: &Lab, n: u8, want: Option<Ipv4Net>, within: Duration) -> Result<Duration> {
    let t = Instant::now();
    loop {
        if subnet_of(lab, n)? == want {
            return Ok(t.elapsed());
        }
        ensure!(
            t.elapsed() < within,
            "host{n} does not claim {want:?} within {within:?}: {:?}",
            lab.cd_status(n)?
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every host routes to every other host, and to `extra` (the phantom).
fn converged_with(lab: &Lab, extra: &[(Ipv4Net, Ipv4Addr)]) -> Result<()> {
    for n in lab.host_ids() {
        let mut want: Vec<_> = lab.expected_routes(n);
        want.extend_from_slice(extra);
        want.sort();
        lab.wait_routes(
            n,
            Duration::from_secs(10),
            &format!("became {want:?}"),
            |r| {
                let mut r = r.to_vec();
                r.sort();
                r == want
            },
        )?;
    }
    Ok(())
}

/// Whether host `n`'s controld logged `what` (waiting up to 2 s for it).
fn log_has(lab: &Lab, n: u8, what: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if std::fs::read_to_string(&lab.host(n).controld.log).is_ok_and(|l| l.contains(what)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Cuts host `n` off from etcd until its lease is gone on both sides, and
/// checks the host let go of it no later than etcd did.
fn cut_until_expired(lab: &Lab, n: u8, subnet: Ipv4Net) -> Result<()> {
    cutoff::cut(&lab.host(n).ns, &[etcd::ETCD_IP.to_string()])?;
    let t = Instant::now();
    let limit = TTL + Duration::from_secs(8);
    let (mut local, mut etcd_side) = (None, None);
    while local.is_none() || etcd_side.is_none() {
        if local.is_none() && subnet_of(lab, n)?.is_none() {
            local = Some(t.elapsed());
        }
        if etcd_side.is_none() && lab.etcdctl().get(&key(subnet))?.is_none() {
            etcd_side = Some(t.elapsed());
        }
        ensure!(
            t.elapsed() < limit,
            "after {limit:?}: host{n} let go: {local:?}, etcd expired the key: {etcd_side:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (local, etcd_side) = (local.expect("set"), etcd_side.expect("set"));
    let st = lab.cd_status(n)?;
    ensure!(st.phase == "reclaiming", "phase {:?}", st.phase);
    eprintln!(
        "host{n} cut off: it let go of {subnet} after {local:?}; etcd expired the key after {etcd_side:?} (TTL {TTL:?})"
    );
    // Polling both takes a few ms per round.
    ensure!(
        local <= etcd_side + Duration::from_millis(100),
        "host{n} held {subnet} after etcd had expired it"
    );
    Ok(())
}

#[test]
fn a_host_cut_off_longer_than_its_ttl_never_shares_its_subnet() {
    run("partition", partition);
}

fn partition(lab: &mut Lab) -> Result<()> {
    let ctl = lab.start_etcd()?;
    lab.put_config(CONFIG)?;
    // The phantom holds 10.50.3.0/24 so the two hosts take the other two.
    let phantom_lease = ctl.lease_grant(600)?;
    let phantom = net("10.50.3.0/24");
    ctl.put_with_lease(
        &key(phantom),
        r#"{"PublicIP":"198.18.0.99","BackendType":"udp","BackendData":null}"#,
        &phantom_lease,
    )?;
    lab.opts.lease_ttl = Some(format!("{}s", TTL.as_secs()));
    for _ in 0..2 {
        let n = lab.add_host()?;
        lab.start_host(n)?;
    }
    for n in [1, 2] {
        lab.wait_ready(n)?;
        lab.add_pod(n)?;
    }
    let phantom_route = [(phantom, Ipv4Addr::new(198, 18, 0, 99))];
    converged_with(lab, &phantom_route)?;
    let s1 = lab.host(1).subnet_env().context("host1")?.lease();

    let watched = (1u8..=3)
        .map(|n| Watched {
            n,
            public_ip: topology::host_ip(n),
            controld_socket: lab
                .dir
                .join(format!("host{n}"))
                .join(kolach_proto::CONTROLD_SOCKET),
        })
        .collect();
    let watch = LeaseWatch::start(lab.etcdctl(), lab::subnets_prefix(), watched);

    // 1. Nobody takes host1's subnet while it is away: it gets it back.
    cut_until_expired(lab, 1, s1)?;
    let t = Instant::now();
    cutoff::heal(&lab.host(1).ns)?;
    wait_subnet(lab, 1, Some(s1), Duration::from_secs(30))?;
    eprintln!(
        "host1 back: reclaimed {s1} {:?} after the cut healed",
        t.elapsed()
    );
    ensure!(log_has(lab, 1, "RECLAIMED this host's subnet"));
    converged_with(lab, &phantom_route)?;
    lab.assert_all_pairs_ping(2)?;

    // 2. A new host joins while host1 is away and takes its subnet.
    cut_until_expired(lab, 1, s1)?;
    let n3 = lab.join_host()?;
    let s3 = lab.host(n3).subnet_env().context("host3")?.lease();
    ensure!(s3 == s1, "host3 took {s3}, not the only free subnet {s1}");
    eprintln!("host3 joined and holds {s3}");
    // The phantom leaves, so there is a subnet for host1 to move to.
    ctl.lease_revoke(&phantom_lease)?;
    let t = Instant::now();
    cutoff::heal(&lab.host(1).ns)?;
    wait_subnet(lab, 1, Some(phantom), Duration::from_secs(30))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.host(1).subnet_env().map(|e| e.lease()) != Some(phantom) {
        ensure!(
            Instant::now() < deadline,
            "host1's subnet.env not rewritten"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "host1 back: moved to {phantom} and rewrote subnet.env {:?} after the cut healed",
        t.elapsed()
    );
    ensure!(log_has(lab, 1, "MOVED to a new subnet"), "no MOVED line");
    ensure!(log_has(lab, 1, "REWROTE subnet.env"), "no REWROTE line");
    let st = lab.cd_status(1)?;
    let moved = format!("moved from subnet {s1} to {phantom}");
    ensure!(
        st.warnings.iter().any(|w| w.starts_with(&moved)),
        "status warnings lack {moved:?}: {:?}",
        st.warnings
    );
    ensure!(st.phase == "running", "phase {}", st.phase);

    let report = watch.finish()?;
    eprintln!("lease watch: {}", report.describe());
    ensure!(report.samples > 50, "too few samples: {}", report.samples);
    ensure!(
        report.violations.is_empty(),
        "two live leases for one subnet:\n{}",
        report.describe()
    );

    // The mesh works with the new layout.
    lab.add_pod(1)?;
    lab.wait_converged(Duration::from_secs(10))?;
    let routes = lab.dp_routes(2)?;
    ensure!(
        routes.contains(&(phantom, Ipv4Addr::new(198, 18, 0, 1)))
            && routes.contains(&(s1, Ipv4Addr::new(198, 18, 0, 3))),
        "host2 routes {routes:?}"
    );
    lab.assert_all_pairs_ping(2)
}
