//! The harness itself, without kolach: three hosts on the underlay, a pod on
//! each, a real etcd; everything reachable that should be, and nothing left
//! behind after teardown.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use kolach_testkit::{etcd, lab, lab::topology, names::Names, netns, traffic, Lab};

#[test]
fn lab_without_kolach_builds_connects_and_tears_down() {
    let mut lab = Lab::new("harness").expect("creating lab");
    let stem = lab.names.stem.clone();
    let dir = lab.dir.clone();
    let result = exercise(&mut lab);
    if result.is_err() {
        lab.dump_logs();
    }
    let etcd_pid = lab.etcd.as_ref().and_then(|e| e.proc.pid());
    drop(lab);
    result.unwrap();

    let names = Names::new(&stem);
    let left: Vec<String> = netns::list()
        .unwrap()
        .into_iter()
        .filter(|ns| names.owns(ns))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(!dir.exists(), "{} left behind", dir.display());
    if let Some(pid) = etcd_pid {
        assert!(
            !kolach_testkit::names::pid_alive(pid),
            "etcd {pid} still running"
        );
    }
}

fn exercise(lab: &mut Lab) -> Result<()> {
    let ctl = lab.start_etcd()?;
    for n in 1..=3u8 {
        assert_eq!(lab.add_host()?, n);
        let bip = format!("10.50.{n}.1/24").parse()?;
        lab.add_pod_with(n, bip, Ipv4Addr::new(10, 50, n, 2), 1472)?;
    }

    // etcd: put/get/lease/del, and reachable from a host at the underlay address.
    lab.put_config(lab::NETWORK_CONFIG)?;
    ensure!(ctl.get(&lab::config_key())?.as_deref() == Some(lab::NETWORK_CONFIG));
    let lease = ctl.lease_grant(30)?;
    let key = format!("{}10.50.99.0-24", lab::subnets_prefix());
    ctl.put_with_lease(&key, r#"{"PublicIP":"198.18.0.99"}"#, &lease)?;
    let kvs = ctl.get_prefix(&lab::subnets_prefix())?;
    ensure!(kvs.len() == 1 && kvs[0].key == key, "{kvs:?}");
    ensure!(
        format!("{:x}", kvs[0].lease) == lease,
        "lease {} vs {lease}",
        kvs[0].lease
    );
    ensure!(ctl.del(&key)? == 1);
    ensure!(ctl.get_prefix(&lab::subnets_prefix())?.is_empty());
    ctl.lease_revoke(&lease)?;
    let health = netns::exec(
        &lab.host(2).ns,
        "env",
        &[
            "ETCDCTL_API=3",
            "etcdctl",
            &format!("--endpoints={}", etcd::endpoint()),
            "endpoint",
            "health",
        ],
        Duration::from_secs(8),
    )?;
    ensure!(health.success(), "etcd from host2: {}", health.stderr);

    // Pods reach their own host's bridge; hosts reach each other on the underlay.
    for n in 1..=3u8 {
        let pod = lab.pod(n).clone();
        let r = traffic::ping(&pod.ns, pod.gateway, 2, 1.0)?;
        ensure!(r.lossless(), "pod{n} -> {}: {}", pod.gateway, r.output);
        let peer = topology::host_ip(n % 3 + 1);
        let r = traffic::ping(&lab.host(n).ns, peer, 1, 1.0)?;
        ensure!(r.lossless(), "host{n} -> {peer}: {}", r.output);
    }
    // Without kolach there is no path between pods.
    let r = traffic::ping(&lab.pod(1).ns, lab.pod(2).ip, 1, 0.3)?;
    ensure!(
        r.received == 0,
        "pods must not reach each other without kolach"
    );

    // UDP from a namespace-bound socket to a socket in another namespace.
    let rx = traffic::udp_bind_in(&lab.pod(3).ns, SocketAddrV4::new(lab.pod(3).ip, 5555))?;
    traffic::udp_send_from(
        &lab.host(3).ns,
        SocketAddrV4::new(topology::host_ip(3), 0),
        SocketAddrV4::new(lab.pod(3).ip, 5555),
        b"over the bridge",
    )?;
    let (got, from) = traffic::recv_within(&rx, Duration::from_secs(2))?.context("no datagram")?;
    ensure!(got == b"over the bridge", "{got:?}");
    ensure!(
        from.ip() == std::net::IpAddr::V4(topology::host_ip(3)),
        "from {from}"
    );

    // An outsider is on the underlay too.
    let x = lab.add_outsider("1", 200)?;
    let r = traffic::ping(&x, topology::host_ip(1), 1, 1.0)?;
    ensure!(r.lossless(), "outsider -> host1: {}", r.output);
    Ok(())
}

#[test]
fn processes_start_stop_restart_inside_a_namespace() {
    use kolach_testkit::process::{read_pid_file, Proc, Stopped};
    let ns = format!("{}-u", kolach_testkit::names::test_stem("proc"));
    netns::create(&ns).unwrap();
    let dir = std::env::temp_dir().join(&ns);
    std::fs::create_dir_all(&dir).unwrap();
    let result = (|| -> Result<()> {
        let log = dir.join("sleep.log");
        let sleep = etcd::which("sleep").context("sleep")?;
        let mut p = Proc::new("sleeper", &ns, &sleep, vec!["30".into()], log.clone());
        p.start()?;
        let pid = p.pid().context("pid")? as i32;
        // `ip netns exec` execs the program: the pid we hold is in the namespace.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !netns::pids(&ns)?.contains(&pid) {
            ensure!(
                std::time::Instant::now() < deadline,
                "pid {pid} not in {ns}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        ensure!(matches!(p.restart()?, Stopped::Graceful(_)));
        ensure!(p.is_running());
        p.kill();
        ensure!(!p.is_running());
        ensure!(matches!(p.stop(), Stopped::NotRunning));
        let starts = std::fs::read_to_string(&log)?
            .matches("=== kolach-tests: start")
            .count();
        ensure!(starts == 2, "{starts} start markers");

        // Detached: survives being forgotten, found again by pid file and namespace.
        let mut d =
            Proc::new("detached", &ns, &sleep, vec!["30".into()], log).detached(dir.join("d.pid"));
        d.start()?;
        let pid = read_pid_file(&dir.join("d.pid")).context("pid file")?;
        d.forget();
        drop(d);
        ensure!(
            kolach_testkit::names::pid_alive(pid as u32),
            "detached process died"
        );
        // Its start time tells it apart from a later process given the same pid.
        let started = |stat: &str| {
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(19))
                .map(String::from)
        };
        let before = started(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?);
        kolach_testkit::lab::destroy_namespaces(std::slice::from_ref(&ns))?;
        // Reaped by whoever inherits it; at least it must be gone or a zombie.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        ensure!(
            state.is_empty() || state.contains(") Z") || started(&state) != before,
            "detached process survived: {state}"
        );
        Ok(())
    })();
    let _ = netns::delete(&ns);
    let _ = std::fs::remove_dir_all(&dir);
    result.unwrap();
}

#[test]
fn sweep_removes_namespaces_of_dead_test_processes() {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let ns = format!("kt{dead}-0sweep-u");
    netns::create(&ns).unwrap();
    let removed = kolach_tests::demo::sweep().unwrap();
    let still = netns::exists(&ns);
    let _ = netns::delete(&ns);
    assert!(removed.contains(&ns), "sweep removed {removed:?}");
    assert!(!still);
}
