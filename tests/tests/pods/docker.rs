//! The README's Docker recipe between hosts, as a new user runs it: Debian's
//! dockerd on two udp hosts, each started with `--bip=${KOLACH_SUBNET}
//! --mtu=${KOLACH_MTU}` from its subnet.env and Docker's defaults otherwise
//! (iptables on; forwarding turned on by dockerd, so the FORWARD policy is
//! DROP). One lab, two phases:
//!
//! 1. The recipe as written, controld `--iptables-forward-rules=false`: the
//!    premise, measured. Docker's DROP takes every packet from a peer to a
//!    container (0/3 pings each way), and Docker's MASQUERADE has already
//!    rewritten the sender's container address (tcpdump on the receiving
//!    host's `kolach0`).
//! 2. controld restarted with its defaults (forward rules on) and
//!    `--ip-masq`, dockerd again with `--ip-masq=false`: the containers ping
//!    each other 3/3 both ways, each sees the other's own container address
//!    (tcpdump in the receiver's network namespace), a container reaches an
//!    outsider on the underlay, which sees the host's underlay address
//!    (kolach masqueraded), and subnet.env says `KOLACH_IPMASQ=true`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use kolach_testkit::docker::{self, DockerHost, DockerOpts, Engine, IMAGE};
use kolach_testkit::traffic::background::Background;
use kolach_testkit::{netns, podman, Backend, Lab};

const OUTSIDER: u8 = 200;

/// Pings `to` 3 times from `container`; returns the replies received.
fn ping(host: &DockerHost, container: &str, to: Ipv4Addr) -> Result<u32> {
    let out = host.exec(
        container,
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", &to.to_string()],
    )?;
    // busybox: "3 packets transmitted, 3 packets received, 0% packet loss"
    let received = out
        .stdout
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once("transmitted, ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .with_context(|| {
            format!(
                "ping from {container} to {to}: {}{}",
                out.stdout, out.stderr
            )
        })?;
    Ok(received)
}

/// Pings `to` from `container`, one probe a second, until one is answered
/// (kolach's rules appear a moment after controld's restart).
fn wait_pings(host: &DockerHost, container: &str, to: Ipv4Addr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let ok = host
            .exec(container, &["ping", "-c", "1", "-W", "1", &to.to_string()])
            .is_ok_and(|o| o.success());
        if ok {
            return true;
        }
    }
    false
}

/// The sources of the ICMP echo requests for `to` that a tcpdump started in
/// `ns` (on `ifname`) sees while `send` runs.
fn sources_seen(
    lab: &Lab,
    ns: &str,
    ifname: &str,
    to: Ipv4Addr,
    send: impl FnOnce() -> Result<u32>,
) -> Result<(u32, Vec<Ipv4Addr>)> {
    let file = lab.dir.join(format!("tcpdump-{ns}.txt"));
    let filter = format!("icmp[icmptype] == icmp-echo and dst host {to}");
    let mut cap = Background::spawn(ns, "tcpdump", &["-n", "-l", "-i", ifname, &filter], &file)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cap.read()?.contains("listening on") {
        ensure!(
            cap.is_running() && Instant::now() < deadline,
            "tcpdump in {ns}: {}",
            cap.read()?
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let received = send();
    std::thread::sleep(Duration::from_millis(200));
    let text = cap.stop()?;
    // "12:00:00.000000 IP 10.50.7.2 > 10.50.9.2: ICMP echo request, ..."
    let sources = text
        .lines()
        .filter_map(|l| {
            l.split_once(" IP ")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    Ok((received?, sources))
}

/// `iptables -S FORWARD` and Docker's nat POSTROUTING in host `ns`, for the report.
fn firewall(ns: &str) -> String {
    let mut s = String::new();
    for args in [
        &["-S", "FORWARD"][..],
        &["-t", "nat", "-S", "POSTROUTING"][..],
    ] {
        match netns::exec(ns, "iptables", args, Duration::from_secs(5)) {
            Ok(o) => s.push_str(&o.stdout),
            Err(e) => s.push_str(&format!("{e:#}\n")),
        }
    }
    s
}

/// dockerd by the recipe on every host of `lab` (`--ip-masq=false` unless
/// `ip_masq`), the image imported and container `c<n>` running on host n;
/// returns the hosts and c1's and c2's addresses.
fn start_docker(lab: &Lab, ip_masq: bool) -> Result<(Vec<DockerHost>, Ipv4Addr, Ipv4Addr)> {
    let cache = podman::default_cache_dir();
    let mut hosts = Vec::new();
    for n in lab.host_ids() {
        let env = std::fs::read_to_string(lab.host(n).subnet_file())?;
        let mut opts = DockerOpts::from_subnet_env(&env)?;
        if !ip_masq {
            opts = opts.without_ip_masq();
        }
        let started = Instant::now();
        let h = DockerHost::start(&lab.host(n).ns, &lab.dir.join(format!("docker{n}")), opts)?;
        eprintln!(
            "host{n}: dockerd --bip={} --mtu={}{} answering after {:.1?}",
            h.opts.bip,
            h.opts.mtu,
            if ip_masq { "" } else { " --ip-masq=false" },
            started.elapsed()
        );
        h.import_busybox(&cache)?;
        h.run_detached(&format!("c{n}"), &[IMAGE, "sleep", "1000"])?;
        let ip = h.ip(&format!("c{n}"))?;
        let lease = lab.host(n).subnet_env().context("subnet.env")?.lease();
        ensure!(
            lease.contains(&ip),
            "c{n} got {ip}, outside {lease} (--bip)"
        );
        ensure!(
            firewall(&h.ns).contains("-P FORWARD DROP"),
            "host{n}: dockerd left the FORWARD policy alone:\n{}",
            firewall(&h.ns)
        );
        hosts.push(h);
    }
    let (ip1, ip2) = (hosts[0].ip("c1")?, hosts[1].ip("c2")?);
    eprintln!("c1 (host1) {ip1}; c2 (host2) {ip2}");
    Ok((hosts, ip1, ip2))
}

#[test]
fn docker_recipe_between_hosts() {
    kolach_testkit::run("podsdock", |lab| {
        docker::require_tools()?;
        // Phase 1's controld: no forward rules.
        lab.opts.controld_args = vec!["--iptables-forward-rules=false".into()];
        lab.mesh_for_pods(2, &Backend::Udp.config())?;
        let outsider = lab.add_outsider("o", OUTSIDER)?;
        let outsider_ip = kolach_testkit::lab::topology::host_ip(OUTSIDER);

        // Phase 1: the recipe as written, no kolach rules: the premise.
        let (hosts, ip1, ip2) = start_docker(lab, true)?;
        let (h1, h2) = (&hosts[0], &hosts[1]);
        let (p12, seen) = sources_seen(lab, &h2.ns, "kolach0", ip2, || ping(h1, "c1", ip2))?;
        let p21 = ping(h2, "c2", ip1)?;
        eprintln!(
            "Docker's defaults, forward rules off: c1 -> c2 {p12}/3 (host2's kolach0 saw \
             sources {seen:?}), c2 -> c1 {p21}/3"
        );
        ensure!(
            p12 == 0 && p21 == 0,
            "with --iptables-forward-rules=false Docker's DROP should take every ping, \
             got c1 -> c2 {p12}/3, c2 -> c1 {p21}/3:\n{}",
            firewall(&h2.ns)
        );
        ensure!(
            !seen.is_empty() && !seen.contains(&ip1),
            "Docker's MASQUERADE should hide c1's {ip1} from host2, which saw {seen:?}"
        );
        docker::shutdown_all(hosts)?;
        // dockerd leaves its MASQUERADE rule behind when it stops, and
        // started again with --ip-masq=false it does not remove it: gone by
        // hand, as a user switching a host must.
        for n in lab.host_ids() {
            let lease = lab.host(n).subnet_env().context("subnet.env")?.lease();
            let rule = [
                "-s",
                &lease.to_string(),
                "!",
                "-o",
                "docker0",
                "-j",
                "MASQUERADE",
            ];
            let mut args = vec!["-t", "nat", "-D", "POSTROUTING"];
            args.extend(rule);
            let out = netns::exec(&lab.host(n).ns, "iptables", &args, Duration::from_secs(5))?;
            eprintln!(
                "host{n}: Docker's MASQUERADE rule {}",
                if out.success() {
                    "left by dockerd, deleted"
                } else {
                    "not there"
                }
            );
        }

        // Phase 2: kolach's defaults (forward rules on) and --ip-masq;
        // dockerd --ip-masq=false.
        for n in lab.host_ids() {
            let args = &mut lab.host_mut(n).controld.args;
            args.retain(|a| a != "--iptables-forward-rules=false");
            args.push("--ip-masq".into());
            lab.restart_controld(n)?;
        }
        let (hosts, ip1, ip2) = start_docker(lab, false)?;
        let (h1, h2) = (&hosts[0], &hosts[1]);
        // c2's network namespace by name, for tcpdump.
        let c2_ns = format!("{}-d2", lab.names.stem);
        let pid2 = h2.pid("c2")?.to_string();
        kolach_testkit::cmd::run_ok("ip", &["netns", "attach", &c2_ns, &pid2])?;
        lab.adopt_namespace(c2_ns.clone());
        let reached = wait_pings(h1, "c1", ip2, Duration::from_secs(10));
        eprintln!(
            "host1 with kolach's rules:\n{}host2:\n{}",
            firewall(&h1.ns),
            firewall(&h2.ns)
        );
        ensure!(
            reached,
            "c1 cannot reach c2 within 10 s of controld's restart with its forward rules on"
        );
        let (p12, seen) = sources_seen(lab, &c2_ns, "eth0", ip2, || ping(h1, "c1", ip2))?;
        let p21 = ping(h2, "c2", ip1)?;
        eprintln!("forward rules on: c1 -> c2 {p12}/3 (c2 saw sources {seen:?}), c2 -> c1 {p21}/3");
        ensure!(p12 == 3 && p21 == 3, "c1 -> c2 {p12}/3, c2 -> c1 {p21}/3");
        ensure!(
            !seen.is_empty() && seen.iter().all(|s| *s == ip1),
            "c2 saw c1's pings from {seen:?}, not from c1's own {ip1}"
        );
        let (p1o, seen) = sources_seen(lab, &outsider, "eth0", outsider_ip, || {
            ping(h1, "c1", outsider_ip)
        })?;
        let host1_ip = lab.host(1).ip;
        eprintln!("c1 -> outsider {outsider_ip}: {p1o}/3, the outsider saw sources {seen:?}");
        ensure!(
            !seen.is_empty() && seen.iter().all(|s| *s == host1_ip),
            "the outsider saw c1's pings from {seen:?}, not host1's {host1_ip} (kolach's --ip-masq)"
        );
        ensure!(p1o == 3, "c1 -> outsider {p1o}/3");
        // What tells a wrapper script to start dockerd with --ip-masq=false.
        for n in lab.host_ids() {
            let env = lab.host(n).subnet_env().context("subnet.env")?;
            ensure!(
                env.ipmasq,
                "host{n}: subnet.env does not say KOLACH_IPMASQ=true under controld --ip-masq"
            );
        }
        docker::shutdown_all(hosts)
    });
}
