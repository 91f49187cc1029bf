//! Two hosts (namespaces joined by a veth pair), each with an in-process
//! engine, a "pod" address in its subnet and one in a pool block it holds
//! (DESIGN §10): pings cross through the kernel, subnet to subnet and block
//! to block, over udp, then vxlan, then host-gw (each a backend switch), and
//! restarting both engines under a fast ping loses no packet with vxlan or
//! host-gw.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use common::{kolach_routes, snapshot, with_blocks, Netns, NsRuntime, TempDir};
use kolach_dataplaned::engine::{Engine, Origin};
use kolach_dataplaned::kernel::{Kernel, RtNetlink};
use kolach_proto::dataplane::{self as pb, BackendType};

struct Host {
    ns: Netns,
    rt: NsRuntime,
    dir: TempDir,
    engine: Option<Arc<Engine>>,
    local: &'static str,
    public_ip: &'static str,
    peer: (&'static str, &'static str),
    /// (this host's pool block, the peer's).
    blocks: (&'static str, &'static str),
}

impl Host {
    fn new(
        ns: Netns,
        tag: &str,
        local: &'static str,
        public_ip: &'static str,
        peer: (&'static str, &'static str),
        blocks: (&'static str, &'static str),
    ) -> Host {
        let rt = ns.runtime();
        let mut h = Host {
            ns,
            rt,
            dir: TempDir::new(tag),
            engine: None,
            local,
            public_ip,
            peer,
            blocks,
        };
        h.start();
        h
    }

    /// A fresh engine (as a restarted daemon) restoring the saved snapshot.
    fn start(&mut self) {
        let d = self.dir.0.clone();
        let e = self.rt.run(async move {
            let k: Arc<dyn Kernel> = Arc::new(RtNetlink::connect().unwrap());
            let e = Arc::new(Engine::new(
                d,
                "kolach0".into(),
                k,
                Arc::new(kolach_dataplaned::firewall::System),
            ));
            e.restore().await;
            e
        });
        self.engine = Some(e);
    }

    fn stop(&mut self) {
        if let Some(e) = self.engine.take() {
            self.rt.run(async move { e.shutdown().await });
        }
    }

    fn apply(&self, kind: BackendType, generation: u64) {
        let s: pb::Snapshot = with_blocks(
            snapshot(kind, generation, self.local, self.public_ip, &[self.peer]),
            &[self.blocks.0],
            &[&[self.blocks.1]],
        );
        let e = self.engine.clone().expect("running");
        let r = self
            .rt
            .run(async move { e.apply(s, Origin::Controld).await });
        assert!(r.applied, "{}: {}", self.ns.name, r.reason);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Pod to pod: A's 10.50.18.1 to B's 10.50.7.1.
fn ping_args(count: &str, interval: &str) -> Vec<String> {
    [
        "ping",
        "-n",
        "-q",
        "-c",
        count,
        "-i",
        interval,
        "-W",
        "2",
        "-I",
        "10.50.18.1",
        "10.50.7.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Pod to pod, subnet to subnet and block to block (A's 203.0.113.1 to B's
/// 203.0.113.17).
fn ping_ok(a: &Netns, what: &str) {
    let subnets = ping_args("3", "0.2");
    let mut blocks = subnets.clone();
    let n = blocks.len();
    blocks[n - 2] = "203.0.113.1".into();
    blocks[n - 1] = "203.0.113.17".into();
    for args in [subnets, blocks] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = a.exec(&args);
        assert!(
            out.status.success(),
            "{what}: {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// 400 pings at 200 per second, in the background.
fn ping_flow(a: &Netns) -> Child {
    Command::new("timeout")
        .args(["20", "ip", "netns", "exec", &a.name])
        .args(ping_args("400", "0.005"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ping")
}

fn lossless(flow: Child, what: &str) {
    let out = flow.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("400 packets transmitted, 400 received"),
        "{what}: packets lost: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn restart_under_traffic(a: &mut Host, b: &mut Host, what: &str) {
    let flow = ping_flow(&a.ns);
    std::thread::sleep(std::time::Duration::from_millis(300));
    for h in [&mut *a, &mut *b] {
        h.stop();
        h.start();
        let st = h.engine.as_ref().unwrap().status();
        assert!(st.has_snapshot && st.errors.is_empty(), "{st:?}");
    }
    lossless(flow, what);
}

#[test]
fn pods_talk_over_udp_vxlan_and_host_gw_and_survive_restarts() {
    let a_ns = Netns::new("fw-a");
    let b_ns = Netns::new("fw-b");
    a_ns.ip(&[
        "link", "add", "u0", "type", "veth", "peer", "name", "u0", "netns", &b_ns.name,
    ]);
    for (ns, underlay, pod, block_pod) in [
        (&a_ns, "198.18.0.1/24", "10.50.18.1/24", "203.0.113.1/28"),
        (&b_ns, "198.18.0.2/24", "10.50.7.1/24", "203.0.113.17/28"),
    ] {
        ns.ip(&["addr", "add", underlay, "dev", "u0"]);
        ns.ip(&["link", "set", "u0", "up"]);
        ns.ip(&[
            "link", "add", "pod", "type", "veth", "peer", "name", "pod-peer",
        ]);
        ns.ip(&["addr", "add", pod, "dev", "pod"]);
        ns.ip(&["addr", "add", block_pod, "dev", "pod"]);
        ns.ip(&["link", "set", "pod", "up"]);
        ns.ip(&["link", "set", "pod-peer", "up"]);
    }
    let mut a = Host::new(
        a_ns,
        "fw-a-run",
        "10.50.18.0/24",
        "198.18.0.1",
        ("10.50.7.0/24", "198.18.0.2"),
        ("203.0.113.0/28", "203.0.113.16/28"),
    );
    let mut b = Host::new(
        b_ns,
        "fw-b-run",
        "10.50.7.0/24",
        "198.18.0.2",
        ("10.50.18.0/24", "198.18.0.1"),
        ("203.0.113.16/28", "203.0.113.0/28"),
    );

    let mut generation = 0;
    for kind in [BackendType::Udp, BackendType::Vxlan, BackendType::HostGw] {
        generation += 1;
        a.apply(kind, generation);
        b.apply(kind, generation);
        let what = format!("{kind:?}");
        // The peer's block is routed as its backend routes the peer's subnet.
        let block_route = match kind {
            BackendType::Udp => "203.0.113.16/28 via - dev kolach0",
            BackendType::Vxlan => "203.0.113.16/28 via 10.50.7.0 dev kolach.1 onlink",
            _ => "203.0.113.16/28 via 198.18.0.2 dev u0",
        };
        assert!(
            kolach_routes(&a.ns).iter().any(|r| r == block_route),
            "{what}: {:?}",
            kolach_routes(&a.ns)
        );
        ping_ok(&a.ns, &what);
        let tun = a.ns.has_link("kolach0");
        let vxlan = a.ns.has_link("kolach.1");
        assert_eq!(
            (tun, vxlan),
            (kind == BackendType::Udp, kind == BackendType::Vxlan),
            "{what}: only the current backend's devices remain"
        );
        if kind != BackendType::Udp {
            restart_under_traffic(&mut a, &mut b, &what);
        }
    }

    // Back to vxlan from host-gw: the routes are replaced, traffic flows.
    generation += 1;
    a.apply(BackendType::Vxlan, generation);
    b.apply(BackendType::Vxlan, generation);
    ping_ok(&a.ns, "host-gw -> vxlan");
}
