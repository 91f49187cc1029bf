//! The docker harness ([`kolach_testkit::docker`]) without kolach: two hosts
//! on the underlay, dockerd on each with a `--bip` of its own (10.78.<k>.1/24)
//! and Docker's defaults otherwise, routes between the hosts over the
//! underlay (host-gw style), a busybox container on each. Docker's FORWARD
//! policy DROP takes the pings across until the FORWARD chain accepts the
//! containers' subnets; the container's network namespace (entered through
//! the pid docker reports, translated) holds the address docker reports.
//! Teardown leaves no process, cgroup, mount or dir.
//!
//! Needs root and Debian's docker.io and busybox-static (`make deps`).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kolach_testkit::docker::{self, DockerHost, DockerOpts, Engine, IMAGE};
use kolach_testkit::lab::{destroy_namespaces, topology};
use kolach_testkit::names::{self, Names};
use kolach_testkit::{cmd, netns, podman};

/// The namespaces, removed on drop (also while the test panics).
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        if let Err(e) = destroy_namespaces(&self.0) {
            eprintln!("{e:#}");
        }
    }
}

fn received(host: &DockerHost, container: &str, to: Ipv4Addr) -> u32 {
    let out = host
        .exec(
            container,
            &["ping", "-c", "3", "-i", "0.2", "-W", "1", &to.to_string()],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    out.stdout
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once("transmitted, ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("ping output: {}{}", out.stdout, out.stderr))
}

#[test]
fn two_hosts_ping_across_once_forward_accepts() {
    docker::require_tools().unwrap_or_else(|e| panic!("{e:#}"));
    let names = Names::new(names::test_stem("dkharn"));
    let dir = std::env::temp_dir().join(&names.stem);
    let mut namespaces = Namespaces(vec![names.underlay()]);
    topology::create_underlay(&names.underlay()).unwrap();
    let cache = podman::default_cache_dir();
    let mut hosts = Vec::new();
    for k in 1..=2u8 {
        let ns = names.host(k);
        namespaces.0.push(ns.clone());
        topology::create_host(&names.underlay(), &ns, k).unwrap();
        let env = format!("KOLACH_SUBNET=10.78.{k}.1/24\nKOLACH_MTU=1500\n");
        let opts = DockerOpts::from_subnet_env(&env).unwrap();
        let t = Instant::now();
        let h = DockerHost::start(&ns, &dir.join(format!("h{k}")), opts)
            .unwrap_or_else(|e| panic!("{e:#}"));
        eprintln!("dockerd on h{k} answering after {:?}", t.elapsed());
        h.import_busybox(&cache).unwrap();
        h.run_detached(&format!("c{k}"), &[IMAGE, "sleep", "1000"])
            .unwrap_or_else(|e| panic!("{e:#}"));
        let via = topology::host_ip(3 - k).to_string();
        let other = format!("10.78.{}.0/24", 3 - k);
        netns::ip(&ns, &["route", "add", &other, "via", &via]).unwrap();
        hosts.push(h);
    }
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let (ip1, ip2) = (h1.ip("c1").unwrap(), h2.ip("c2").unwrap());
    assert_eq!((ip1.octets()[2], ip2.octets()[2]), (1, 2), "{ip1} {ip2}");

    // The pid docker reports, translated, is the container's: its network
    // namespace holds the address.
    let pid = h2.pid("c2").unwrap().to_string();
    let addrs = cmd::run_ok("nsenter", &["-t", &pid, "-n", "ip", "-br", "addr"]).unwrap();
    assert!(addrs.contains(&format!("{ip2}/24")), "{addrs}");

    // Docker turned forwarding on, so the FORWARD policy is DROP.
    for h in [h1, h2] {
        let fw = netns::exec_ok(&h.ns, "iptables", &["-S", "FORWARD"]).unwrap();
        assert!(fw.contains("-P FORWARD DROP"), "{}: {fw}", h.ns);
    }
    assert_eq!(received(h1, "c1", ip2), 0, "through Docker's DROP");
    for h in [h1, h2] {
        for d in ["-s", "-d"] {
            netns::exec_ok(
                &h.ns,
                "iptables",
                &["-A", "FORWARD", d, "10.78.0.0/16", "-j", "ACCEPT"],
            )
            .unwrap();
        }
    }
    assert_eq!(received(h1, "c1", ip2), 3);
    assert_eq!(received(h2, "c2", ip1), 3);

    // Everything goes at shutdown.
    let holders: Vec<u32> = hosts.iter().map(DockerHost::holder_pid).collect();
    let cgroups: Vec<PathBuf> = hosts.iter().flat_map(DockerHost::cgroup_dirs).collect();
    let t = Instant::now();
    docker::shutdown_all(hosts).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("both hosts shut down in {:?}", t.elapsed());
    std::thread::sleep(Duration::from_millis(50));
    for pid in holders {
        assert!(!names::pid_alive(pid), "holder {pid} alive");
    }
    for cg in cgroups {
        assert!(!cg.exists(), "{} left", cg.display());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.display().to_string();
    assert!(!mounts.contains(&d), "mounts under {d} left");
    for k in 1..=2 {
        let h = dir.join(format!("h{k}"));
        assert!(
            !h.exists() || kolach_testkit::tempdir::keep(),
            "{} left",
            h.display()
        );
    }
    let _ = std::fs::remove_dir(&dir);
    drop(namespaces);
}
