//! The host firewall kolach keeps (issue 18: flannel's `-ip-masq` and
//! `-iptables-forward-rules`), on one 2-host udp mesh with an outsider at
//! 198.18.0.200, in phases:
//!
//! 1. `--ip-masq`: pod1 → outsider arrives from host1's underlay address,
//!    pod1 → pod2 keeps the pod's address; table `ip kolach` survives a
//!    dataplaned and a controld restart unchanged (same handles: never
//!    rewritten); a foreign nft table and an untagged FORWARD rule planted
//!    in host1 stay as they were; status says so.
//! 2. controld restarted without `--ip-masq`: the table goes, the outsider
//!    (with a route back to the pods) sees pod1's own address.
//! 3. `iptables -P FORWARD DROP` in both hosts: forward rules (on by
//!    default) let the pods ping across; with `--iptables-forward-rules=false`
//!    the tagged rules go and nothing gets through (0/3).
//! 4. `kolach-dataplaned --cleanup` (with ip-masq and forward rules back on)
//!    removes the table and the tagged rules, nothing else.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kolach_testkit::lab::topology;
use kolach_testkit::{bins, netns, run, traffic, Lab};

const PORT: u16 = 7411;

#[test]
fn firewall_masquerade_and_forward_rules() {
    run("firewall", firewall);
}

fn sh(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    netns::exec_ok(ns, program, args)
}

/// `nft -j list table ip kolach` (handles included), None when absent.
fn kolach_table(ns: &str) -> Result<Option<String>> {
    let out = netns::exec(
        ns,
        "nft",
        &["-j", "list", "table", "ip", "kolach"],
        Duration::from_secs(10),
    )?;
    Ok(out.success().then_some(out.stdout))
}

fn tagged_rules(ns: &str) -> Result<Vec<String>> {
    Ok(sh(ns, "iptables", &["-S", "FORWARD"])?
        .lines()
        .filter(|l| l.contains("\"kolach:"))
        .map(str::to_string)
        .collect())
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if f()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One datagram from the pod of host `n` to `to`; the source address the
/// receiver in `to_ns` saw.
fn seen_source(lab: &Lab, n: u8, to_ns: &str, to: Ipv4Addr, port: u16) -> Result<Ipv4Addr> {
    let pod = lab.pod(n).clone();
    let rx = traffic::udp_bind_in(to_ns, SocketAddrV4::new(to, port))?;
    for _ in 0..5 {
        traffic::udp_send_from(
            &pod.ns,
            SocketAddrV4::new(pod.ip, port),
            SocketAddrV4::new(to, port),
            b"who am I",
        )?;
        if let Some((_, from)) = traffic::recv_within(&rx, Duration::from_secs(1))? {
            match from.ip() {
                std::net::IpAddr::V4(a) => return Ok(a),
                other => bail!("IPv6 sender {other}"),
            }
        }
    }
    bail!("nothing from pod{n} reached {to}")
}

fn restart_dataplaned(lab: &mut Lab, n: u8) -> Result<()> {
    lab.host_mut(n).dataplaned.restart()?;
    wait_for("dataplaned restored", Duration::from_secs(10), || {
        Ok(lab.dp_status(n).is_ok_and(|s| s.has_snapshot))
    })
}

fn set_controld_flag(lab: &mut Lab, n: u8, flags: &[&str]) -> Result<()> {
    let args = &mut lab.host_mut(n).controld.args;
    args.retain(|a| a != "--ip-masq" && !a.starts_with("--iptables-forward-rules"));
    args.extend(flags.iter().map(|f| f.to_string()));
    lab.restart_controld(n)?;
    Ok(())
}

fn firewall(lab: &mut Lab) -> Result<()> {
    lab.opts.controld_args.push("--ip-masq".into());
    lab.mesh(2)?;
    let outsider = lab.add_outsider("o", 200)?;
    let outsider_ip = topology::host_ip(200);
    let (h1, h2) = (lab.host(1).ns.clone(), lab.host(2).ns.clone());

    // Bystanders: not kolach's, never touched.
    sh(&h1, "nft", &["add", "table", "inet", "bystander"])?;
    sh(&h1, "nft", &["add", "chain", "inet", "bystander", "keep"])?;
    sh(
        &h1,
        "iptables",
        &["-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "ACCEPT"],
    )?;
    let bystander = || sh(&h1, "nft", &["-j", "list", "table", "inet", "bystander"]);
    let bystander_before = bystander()?;

    // 1. ip-masq on.
    wait_for("table ip kolach in host1", Duration::from_secs(10), || {
        Ok(kolach_table(&h1)?.is_some())
    })?;
    let status = lab.dp_status(1)?;
    let fw = status.firewall.context("no firewall in the status")?;
    ensure!(fw.ip_masq && fw.forward_rules, "{fw:?}");
    ensure!(status.errors.is_empty(), "{:?}", status.errors);
    let line = lab.kolachctl(1, &["status"])?.stdout;
    ensure!(
        line.contains("masquerade on (table ip kolach), forward rules on (FORWARD chain)"),
        "{line}"
    );
    let seen = seen_source(lab, 1, &outsider, outsider_ip, PORT)?;
    ensure!(
        seen == topology::host_ip(1),
        "outsider saw {seen}, not host1's underlay address"
    );
    let pod1 = lab.pod(1).ip;
    let (pod2_ns, pod2) = (lab.pod(2).ns.clone(), lab.pod(2).ip);
    let seen = seen_source(lab, 1, &pod2_ns, pod2, PORT + 1)?;
    ensure!(seen == pod1, "pod2 saw {seen}, not pod1 {pod1}");

    // Restarts leave the table exactly as it was (same handles).
    let table = kolach_table(&h1)?;
    restart_dataplaned(lab, 1)?;
    std::thread::sleep(Duration::from_secs(1));
    ensure!(
        kolach_table(&h1)? == table,
        "dataplaned restart rewrote table ip kolach"
    );
    lab.restart_controld(1)?;
    std::thread::sleep(Duration::from_secs(1));
    ensure!(
        kolach_table(&h1)? == table,
        "controld restart rewrote table ip kolach"
    );
    ensure!(
        bystander()? == bystander_before,
        "the bystander table changed"
    );
    ensure!(
        sh(&h1, "iptables", &["-S", "FORWARD"])?.contains("-A FORWARD -s 192.0.2.0/24 -j ACCEPT"),
        "the untagged FORWARD rule is gone"
    );

    // 2. ip-masq off: the table goes, pods are seen as themselves.
    sh(
        &outsider,
        "ip",
        &["route", "add", "10.50.0.0/16", "via", "198.18.0.1"],
    )?;
    set_controld_flag(lab, 1, &[])?;
    wait_for("table ip kolach gone", Duration::from_secs(10), || {
        Ok(kolach_table(&h1)?.is_none())
    })?;
    let seen = seen_source(lab, 1, &outsider, outsider_ip, PORT + 2)?;
    ensure!(seen == pod1, "outsider saw {seen}, not pod1 {pod1}");
    ensure!(!lab.dp_status(1)?.firewall.unwrap_or_default().ip_masq);

    // 3. Forward rules against a DROP policy (Docker's).
    for ns in [&h1, &h2] {
        sh(ns, "iptables", &["-P", "FORWARD", "DROP"])?;
    }
    for ns in [&h1, &h2] {
        wait_for("tagged FORWARD rules", Duration::from_secs(10), || {
            Ok(tagged_rules(ns)?.len() == 2)
        })?;
    }
    let p = lab.ping_pods(1, 2, 3)?;
    ensure!(p.received == 3, "with forward rules: {p:?}");
    for n in [1, 2] {
        set_controld_flag(lab, n, &["--iptables-forward-rules=false"])?;
    }
    for ns in [&h1, &h2] {
        wait_for("tagged FORWARD rules gone", Duration::from_secs(10), || {
            Ok(tagged_rules(ns)?.is_empty())
        })?;
    }
    let p = lab.ping_pods(1, 2, 3)?;
    ensure!(
        p.received == 0,
        "without forward rules, FORWARD DROP: {p:?}"
    );

    // 4. --cleanup removes both, nothing else.
    set_controld_flag(lab, 1, &["--ip-masq"])?;
    wait_for("table and rules back", Duration::from_secs(10), || {
        Ok(kolach_table(&h1)?.is_some() && tagged_rules(&h1)?.len() == 2)
    })?;
    lab.host_mut(1).stop();
    let dir = lab.host(1).dir.display().to_string();
    let bin = bins::require(bins::DATAPLANED);
    let out = netns::exec(
        &h1,
        &bin.to_string_lossy(),
        &["--cleanup", "--run-dir", &dir],
        Duration::from_secs(30),
    )?;
    ensure!(
        out.success(),
        "--cleanup failed: {}{}",
        out.stdout,
        out.stderr
    );
    ensure!(
        kolach_table(&h1)?.is_none(),
        "table ip kolach left by --cleanup"
    );
    ensure!(
        tagged_rules(&h1)?.is_empty(),
        "tagged rules left by --cleanup"
    );
    ensure!(
        bystander()? == bystander_before,
        "the bystander table changed"
    );
    ensure!(
        sh(&h1, "iptables", &["-S", "FORWARD"])?.contains("-A FORWARD -s 192.0.2.0/24 -j ACCEPT"),
        "the untagged FORWARD rule is gone"
    );
    Ok(())
}
