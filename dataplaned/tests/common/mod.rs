//! Helpers for kernel tests. Network namespaces the test made (removed on
//! drop, also when the test panics), a tokio runtime whose threads live inside
//! one, and the kernel's objects as `ip -j`/`bridge -j` show them come from the
//! test kit; here are the snapshots, run dirs and waits of dataplaned's tests.

#![allow(dead_code)]

pub mod daemon;
pub mod recording;

use std::net::Ipv4Addr;
use std::process::Command;

use ipnet::Ipv4Net;
use kolach_proto::dataplane as pb;
use kolach_testkit::{kernel, kernel::objects};

// Not every test binary runs code in-process.
#[allow(unused_imports)]
pub use kolach_testkit::netns::{Netns, NsRuntime};
/// A run dir under the temp dir, removed on drop (kept with `KDP_KEEP=1`).
pub use kolach_testkit::tempdir::TempDir;

/// A udp snapshot for a host holding `local` at `public_ip`, with `peers`.
pub fn udp_snapshot(
    generation: u64,
    local: &str,
    public_ip: &str,
    peers: &[(&str, &str)],
) -> pb::Snapshot {
    let net = |s: &str| Some(s.parse::<Ipv4Net>().unwrap().into());
    let ip = |s: &str| Some(s.parse::<Ipv4Addr>().unwrap().into());
    pb::Snapshot {
        version: Some(pb::SnapshotVersion {
            epoch: 1,
            generation,
            etcd_revision: 10 + generation as i64,
        }),
        backend: Some(pb::Backend {
            r#type: pb::BackendType::Udp as i32,
            port: 8285,
            vni: 0,
        }),
        network: net("10.50.0.0/16"),
        local_subnet: net(local),
        public_ip: ip(public_ip),
        iface: "u0".into(),
        mtu: 1472,
        local_vtep_mac: vec![],
        local_blocks: vec![],
        // controld's default: every kernel test also exports.
        export_table: 119,
        // Host firewall off: these tests are about routes.
        ip_masq: false,
        iptables_forward_rules: false,
        routes: peers
            .iter()
            .map(|(subnet, pip)| pb::Route {
                subnet: net(subnet),
                public_ip: ip(pip),
                vtep_mac: vec![],
                blocks: vec![],
            })
            .collect(),
    }
}

/// `s` with pool blocks (DESIGN §10): `local` this host's, `peers[i]` those
/// of its i-th route.
pub fn with_blocks(mut s: pb::Snapshot, local: &[&str], peers: &[&[&str]]) -> pb::Snapshot {
    let nets = |v: &[&str]| -> Vec<kolach_proto::netpb::IpNetwork> {
        v.iter()
            .map(|n| n.parse::<Ipv4Net>().unwrap().into())
            .collect()
    };
    s.local_blocks = nets(local);
    for (r, b) in s.routes.iter_mut().zip(peers) {
        r.blocks = nets(b);
    }
    s
}

/// The IPv4 addresses of `dev` as "a.b.c.d/len".
pub fn addresses(ns: &Netns, dev: &str) -> Vec<String> {
    let link = kernel::link(&ns.name, dev).unwrap().expect("link exists");
    link.v4.iter().map(ToString::to_string).collect()
}

/// Polls `f` for up to 3 s.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// The VTEP MAC controld derives from a PublicIP a.b.c.d: 0e:6b:a:b:c:d.
pub fn vtep_mac(public_ip: &str) -> Vec<u8> {
    let ip: Ipv4Addr = public_ip.parse().unwrap();
    let mut m = vec![0x0e, 0x6b];
    m.extend_from_slice(&ip.octets());
    m
}

/// A snapshot of `kind` (default port/VNI, iface `u0`, the overlay MTU of a
/// 1500-byte underlay) for a host holding `local` at `public_ip`, with
/// `peers` (subnet, PublicIP) whose VTEP MACs follow [`vtep_mac`].
pub fn snapshot(
    kind: pb::BackendType,
    generation: u64,
    local: &str,
    public_ip: &str,
    peers: &[(&str, &str)],
) -> pb::Snapshot {
    let mut s = udp_snapshot(generation, local, public_ip, peers);
    let b = s.backend.as_mut().unwrap();
    b.r#type = kind as i32;
    b.port = 0;
    let vxlan = kind == pb::BackendType::Vxlan;
    s.mtu = match kind {
        pb::BackendType::Udp => 1472,
        pb::BackendType::Vxlan => 1450,
        _ => 1500,
    };
    if vxlan {
        b.vni = 1;
        s.local_vtep_mac = vtep_mac(public_ip);
        for (r, (_, pip)) in s.routes.iter_mut().zip(peers) {
            r.vtep_mac = vtep_mac(pip);
        }
    }
    s
}

/// `ip -j route show proto 107` as "dst via gw dev d [onlink]" lines, sorted.
pub fn kolach_routes(ns: &Netns) -> Vec<String> {
    objects::lines(objects::kolach_routes(&ns.name).unwrap())
}

/// `ip -j neigh show dev <dev>` as "ip lladdr mac STATE" lines, sorted.
pub fn neighbours(ns: &Netns, dev: &str) -> Vec<String> {
    objects::lines(objects::neighbours(&ns.name, dev).unwrap())
}

/// `bridge -j fdb show dev <dev>` as "mac dst ip flags state" lines, sorted.
pub fn fdb(ns: &Netns, dev: &str) -> Vec<String> {
    objects::lines(objects::fdb(&ns.name, dev).unwrap())
}

/// Names of the `kolach.*` links in the namespace.
pub fn vxlan_devices(ns: &Netns) -> Vec<String> {
    objects::links(&ns.name)
        .unwrap()
        .into_keys()
        .filter(|n| n.starts_with("kolach."))
        .collect()
}

/// `ip monitor` in the namespace, started before a step and read after it:
/// every kernel change in between, as the kernel announces it.
pub struct Monitor {
    child: Option<std::process::Child>,
}

impl Monitor {
    pub fn start(ns: &Netns) -> Monitor {
        let child = Command::new("ip")
            .args([
                "-n", &ns.name, "monitor", "link", "address", "route", "neigh",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("ip monitor");
        // Let it subscribe before the step runs.
        std::thread::sleep(std::time::Duration::from_millis(300));
        Monitor { child: Some(child) }
    }

    /// Stops the monitor; returns what it printed.
    pub fn finish(mut self) -> String {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let out = child.wait_with_output().expect("ip monitor output");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The offloads of a udp backend with the default flags.
pub const OFFLOAD: &str = "offload (tun-tso, tun-uso, udp-gso, udp-gro)";

/// The status mode of a udp backend with the default flags on this
/// machine: `io` (the offloads) and, with several CPUs, a TUN queue per CPU
/// (at most 8) steered by CPU.
pub fn default_mode(io: &str) -> String {
    match auto_queues() {
        1 => io.to_string(),
        n => format!("{io}, {n} queues by cpu"),
    }
}

/// How many queues `--queues auto` makes for a process with our CPUs.
pub fn auto_queues() -> usize {
    use kolach_dataplaned::datapath::steer::{allowed_cpus, Queues};
    Queues::Auto.count(allowed_cpus().len())
}
