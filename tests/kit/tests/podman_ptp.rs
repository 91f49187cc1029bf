//! The podman harness ([`kolach_testkit::podman`]) proved with Debian's
//! reference CNI plugins: two hosts on the underlay, each running podman with
//! a `ptp` + `host-local` network of its own subnet (10.77.<k>.0/24), routes
//! between the hosts over the underlay (host-gw style), a busybox container
//! on each, ping across. The `ptp` is reached through a wrapper in each host's
//! own plugin dir that logs what podman handed it, the way the kolach plugin
//! will be installed, so the test also shows how a pool reaches the plugin
//! (`CNI_ARGS` in podman's environment, for ADD and DEL alike).
//!
//! Needs root and Debian's podman, runc, containernetworking-plugins and
//! busybox-static (`make deps`).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Instant;

use kolach_testkit::names;
use kolach_testkit::netns;
use kolach_testkit::podman::{self, Engine, PodmanHost, PodmanLab, IMAGE};

const NETWORK: &str = "kpm";
/// What the wrapper plugin is called in the conflist and the plugin dir.
const WRAPPER: &str = "ptp-logged";

/// Host `k`'s pod subnet.
fn subnet(k: u8) -> String {
    format!("10.77.{k}.0/24")
}

/// A `ptp` network (through [`WRAPPER`]) with host-local addresses from
/// host `k`'s subnet, kept under the host's dir, and portmap as kolach's
/// conflist will have it.
fn conflist(k: u8, host: &PodmanHost) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [
            {
                "type": WRAPPER,
                "ipMasq": false,
                "mtu": 1500,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet(k)}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": host.dir.join("ipam").display().to_string(),
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
    .to_string()
}

/// Installs the wrapper: one line per call to `<dir>/cni-calls.log`
/// (command, CNI_ARGS), then Debian's ptp.
fn install_wrapper(host: &PodmanHost) -> std::path::PathBuf {
    let log = host.dir.join("cni-calls.log");
    let script = format!(
        "#!/bin/sh\necho \"$CNI_COMMAND $CNI_CONTAINERID $CNI_ARGS\" >> '{}'\nexec {}/ptp \"$@\"\n",
        log.display(),
        podman::SYSTEM_CNI_DIR
    );
    let tmp = host.dir.join("wrapper.sh");
    std::fs::write(&tmp, script).unwrap();
    host.install_plugin(&tmp, WRAPPER).unwrap();
    log
}

fn calls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn ping(host: &PodmanHost, container: &str, to: Ipv4Addr) {
    let t = Instant::now();
    let out = host
        .exec(
            container,
            &["ping", "-c", "3", "-i", "0.2", "-W", "2", &to.to_string()],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        out.success() && out.stdout.contains("3 packets received"),
        "{container} on {} cannot ping {to}: {}{}",
        host.ns,
        out.stdout,
        out.stderr
    );
    eprintln!("ping {container} -> {to}: ok ({:?})", t.elapsed());
}

/// The cgroups of one container, one per hierarchy, as this process sees them.
fn container_cgroups(host: &PodmanHost, id: &str) -> Vec<std::path::PathBuf> {
    host.cgroup_dirs()
        .iter()
        .map(|d| d.join(format!("libpod-{id}")))
        .collect()
}

#[test]
fn two_hosts_ptp_ping_across() {
    let t0 = Instant::now();
    let lab = PodmanLab::new("pmptp", 2).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "lab with two podman hosts up, image imported: {:?}",
        t0.elapsed()
    );
    let (h1, h2) = (lab.host(1), lab.host(2));
    // host-gw: each host reaches the other's pods through its underlay address.
    for (from, to) in [(1u8, 2u8), (2, 1)] {
        let via = PodmanLab::host_ip(to).to_string();
        netns::ip(
            &lab.names.host(from),
            &["route", "add", &subnet(to), "via", &via],
        )
        .unwrap();
    }
    let logs: Vec<_> = [h1, h2]
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let log = install_wrapper(h);
            h.install_conflist(&conflist(i as u8 + 1, h)).unwrap();
            log
        })
        .collect();

    let t = Instant::now();
    let c1 = h1
        .run_detached(
            "c1",
            NETWORK,
            &[("CNI_ARGS", "K8S_POD_NAMESPACE=pool-a")],
            &[IMAGE, "sleep", "1000"],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("run c1 on h1: {:?}", t.elapsed());
    let t = Instant::now();
    let c2 = h2
        .run_detached("c2", NETWORK, &[], &[IMAGE, "sleep", "1000"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("run c2 on h2: {:?}", t.elapsed());
    let ip1 = h1.inspect_ip("c1", NETWORK).unwrap();
    let ip2 = h2.inspect_ip("c2", NETWORK).unwrap();
    eprintln!("c1 {ip1} ({c1}), c2 {ip2} ({c2})");
    assert_eq!(ip1.octets()[..3], [10, 77, 1]);
    assert_eq!(ip2.octets()[..3], [10, 77, 2]);

    ping(h1, "c1", ip2);
    ping(h2, "c2", ip1);

    // The container's processes live in this host's cgroup parent.
    let cgroups = container_cgroups(h1, c1.as_str());
    let mut pids: Vec<u32> = Vec::new();
    for cg in &cgroups {
        let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
        pids.extend(procs.lines().filter_map(|l| l.parse::<u32>().ok()));
    }
    assert!(!pids.is_empty(), "no process in {cgroups:?}");

    // A second container on h1 takes the next address, and removing the
    // first one (DEL) leaves the second reachable.
    let t = Instant::now();
    h1.run_detached("c3", NETWORK, &[], &[IMAGE, "sleep", "1000"])
        .unwrap();
    eprintln!("run c3 on h1 (next run): {:?}", t.elapsed());
    let ip3 = h1.inspect_ip("c3", NETWORK).unwrap();
    assert_ne!(ip3, ip1);
    let t = Instant::now();
    h1.rm("c1").unwrap();
    eprintln!("rm c1: {:?}", t.elapsed());
    assert_eq!(h1.containers().unwrap(), vec!["c3".to_string()]);
    for cg in &cgroups {
        assert!(!cg.exists(), "{} left after rm", cg.display());
    }
    ping(h2, "c2", ip3);

    // What the plugin was handed: VERSION (no container) before each ADD and
    // DEL, podman's own IgnoreUnknown and K8S_POD_NAME, the pool from
    // CNI_ARGS on ADD and, from libcni's cache, on DEL too (rm ran without it).
    let h1_calls = calls(&logs[0]);
    eprintln!("h1's plugin calls:\n{}", h1_calls.join("\n"));
    let of = |cmd: &str, id: &str| -> Vec<&String> {
        h1_calls
            .iter()
            .filter(|l| l.starts_with(&format!("{cmd} {id} ")))
            .collect()
    };
    let add = of("ADD", c1.as_str());
    let del = of("DEL", c1.as_str());
    assert_eq!(add.len(), 1, "{h1_calls:?}");
    assert_eq!(del.len(), 1, "{h1_calls:?}");
    for l in [add[0], del[0]] {
        assert!(
            l.ends_with("IgnoreUnknown=1;K8S_POD_NAME=c1;K8S_POD_NAMESPACE=pool-a"),
            "{l}"
        );
    }
    assert!(h1_calls.iter().any(|l| l.starts_with("VERSION  ")));
    assert!(calls(&logs[1])
        .iter()
        .any(|l| l.starts_with("ADD ") && l.ends_with("K8S_POD_NAME=c2")));

    // Teardown: nothing of either host's podman is left on the machine.
    let holders = [h1.holder_pid(), h2.holder_pid()];
    let host_dirs = [h1.dir.clone(), h2.dir.clone()];
    let host_cgroups: Vec<_> = [h1, h2].iter().flat_map(|h| h.cgroup_dirs()).collect();
    let namespaces = [lab.names.underlay(), lab.names.host(1), lab.names.host(2)];
    let t = Instant::now();
    drop(lab);
    eprintln!("teardown: {:?}", t.elapsed());
    for pid in holders.iter().chain(&pids) {
        assert!(!names::pid_alive(*pid), "pid {pid} outlived the lab");
    }
    for ns in &namespaces {
        assert!(!netns::exists(ns), "{ns} left");
    }
    if !kolach_testkit::tempdir::keep() {
        for d in &host_dirs {
            assert!(!d.exists(), "{} left", d.display());
        }
    }
    for cg in &host_cgroups {
        assert!(!cg.exists(), "{} left", cg.display());
    }
    eprintln!("total: {:?}", t0.elapsed());
}

/// A test that panics with containers running still leaves nothing behind:
/// the lab's drop removes the containers, kills each holder (and with it its
/// pid namespace: conmon, the containers), the cgroups, dirs and namespaces.
#[test]
fn panic_leaves_nothing_behind() {
    struct Seen {
        pids: Vec<u32>,
        cgroups: Vec<std::path::PathBuf>,
        dirs: Vec<std::path::PathBuf>,
        namespaces: Vec<String>,
    }
    let seen = std::sync::Mutex::new(None::<Seen>);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = PodmanLab::new("pmpanic", 1).unwrap_or_else(|e| panic!("{e:#}"));
        let h = lab.host(1);
        h.install_conflist(&conflist(1, h)).unwrap();
        install_wrapper(h);
        let id = h
            .run_detached("doomed", NETWORK, &[], &[IMAGE, "sleep", "1000"])
            .unwrap();
        let mut pids = vec![h.holder_pid()];
        for cg in container_cgroups(h, id.as_str()) {
            let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
            pids.extend(procs.lines().filter_map(|l| l.parse::<u32>().ok()));
        }
        assert!(pids.len() > 1, "the container has no process");
        *seen.lock().unwrap() = Some(Seen {
            pids,
            cgroups: h.cgroup_dirs(),
            dirs: vec![h.dir.clone()],
            namespaces: vec![lab.names.underlay(), lab.names.host(1)],
        });
        panic!("test failure with a container running");
    }));
    assert!(result.is_err());
    let seen = seen.lock().unwrap().take().expect("the lab came up");
    for pid in &seen.pids {
        assert!(!names::pid_alive(*pid), "pid {pid} outlived the lab");
    }
    for ns in &seen.namespaces {
        assert!(!netns::exists(ns), "{ns} left");
    }
    for cg in &seen.cgroups {
        assert!(!cg.exists(), "{} left", cg.display());
    }
    if !kolach_testkit::tempdir::keep() {
        for d in &seen.dirs {
            assert!(!d.exists(), "{} left", d.display());
        }
    }
}
