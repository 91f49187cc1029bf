//! The udp backend against a real kernel, inside a network namespace this test
//! makes: the TUN device, its address and MTU, subnet changes, restart with a
//! restored snapshot, ICMP answers, and --cleanup.

mod common;

use std::sync::Arc;

use common::{addresses, default_mode, eventually, udp_snapshot, Netns, TempDir, OFFLOAD};
use kolach_dataplaned::backend::udp::Options;
use kolach_dataplaned::datapath::offload::Offload;
use kolach_dataplaned::datapath::tun::{self, Framing};
use kolach_dataplaned::engine::{Engine, Origin};
use kolach_dataplaned::handover::inherit::{Carried, Inherited};
use kolach_dataplaned::kernel::{Kernel, RtNetlink};

fn underlay(ns: &Netns, ip: &str) {
    // No dummy module on every kernel; a veth pair with one end unused will do.
    ns.ip(&["link", "add", "u0", "type", "veth", "peer", "name", "u1"]);
    ns.ip(&["addr", "add", ip, "dev", "u0"]);
    ns.ip(&["link", "set", "u0", "up"]);
    ns.ip(&["link", "set", "u1", "up"]);
}

fn new_engine(rt: &common::NsRuntime, dir: &TempDir) -> Arc<Engine> {
    let dir = dir.0.clone();
    rt.run(async move {
        let k: Arc<dyn Kernel> = Arc::new(RtNetlink::connect().unwrap());
        Arc::new(Engine::new(
            dir,
            "kolach0".into(),
            k,
            Arc::new(kolach_dataplaned::firewall::System),
        ))
    })
}

/// The one-peer snapshot most tests apply: this host 10.50.18.0/24 on
/// 198.18.0.1, the peer 10.50.7.0/24 on 198.18.0.2.
fn one_peer(generation: u64) -> kolach_proto::dataplane::Snapshot {
    udp_snapshot(
        generation,
        "10.50.18.0/24",
        "198.18.0.1",
        &[("10.50.7.0/24", "198.18.0.2")],
    )
}

fn apply(rt: &common::NsRuntime, e: &Arc<Engine>, snap: kolach_proto::dataplane::Snapshot) {
    let e = e.clone();
    let r = rt.run(async move { e.apply(snap, Origin::Controld).await });
    assert!(r.applied, "{}", r.reason);
}

fn shutdown(rt: &common::NsRuntime, e: &Arc<Engine>) {
    let e = e.clone();
    rt.run(async move { e.shutdown().await });
}

/// A ping from the host to an unleased overlay address is answered with
/// ICMP net unreachable (written back into the TUN by the dataplane).
fn assert_unreachable_answered(ns: &Netns) {
    let out = ns.exec(&["ping", "-n", "-c", "1", "-W", "2", "10.50.99.1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Destination Net Unreachable"),
        "ping said: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn vnet_hdr(ns: &Netns) -> serde_json::Value {
    ns.ip_json(&["-d", "link", "show", "dev", "kolach0"])[0]["linkinfo"]["info_data"]["vnet_hdr"]
        .clone()
}

#[test]
fn tun_lifecycle_address_change_restart_and_cleanup() {
    let ns = Netns::new("tun");
    let rt = ns.runtime();
    let dir = TempDir::new("tun-run");
    underlay(&ns, "198.18.0.1/24");

    let e = new_engine(&rt, &dir);
    let snap = udp_snapshot(
        1,
        "10.50.18.0/24",
        "198.18.0.1",
        &[("10.50.7.0/24", "198.18.0.2")],
    );
    let e2 = e.clone();
    let r = rt.run(async move { e2.apply(snap, Origin::Controld).await });
    assert!(r.applied, "{}", r.reason);

    let link = &ns.ip_json(&["-d", "link", "show", "dev", "kolach0"])[0];
    assert_eq!(link["linkinfo"]["info_kind"], "tun");
    assert_eq!(link["linkinfo"]["info_data"]["persist"], true);
    assert_eq!(link["linkinfo"]["info_data"]["pi"], false);
    assert_eq!(link["linkinfo"]["info_data"]["vnet_hdr"], true, "{link}");
    assert_eq!(link["txqlen"], 1000, "{link}");
    assert_eq!(link["mtu"], 1472);
    assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    assert_eq!(addresses(&ns, "kolach0"), ["10.50.18.0/16"]);
    let routes = ns.ip(&["route", "show", "dev", "kolach0"]);
    assert!(routes.contains("10.50.0.0/16"), "{routes}");
    let st = e.status();
    assert_eq!(
        (st.device.as_str(), st.mode.as_str(), st.route_count),
        ("kolach0", default_mode(OFFLOAD).as_str(), 1)
    );

    // A changed subnet replaces the address; a changed MTU is applied.
    let mut snap = udp_snapshot(
        2,
        "10.50.9.0/24",
        "198.18.0.1",
        &[("10.50.7.0/24", "198.18.0.2")],
    );
    snap.mtu = 1400;
    let e2 = e.clone();
    let r = rt.run(async move { e2.apply(snap, Origin::Controld).await });
    assert!(r.applied, "{}", r.reason);
    assert_eq!(addresses(&ns, "kolach0"), ["10.50.9.0/16"]);
    assert_eq!(
        ns.ip_json(&["link", "show", "dev", "kolach0"])[0]["mtu"],
        1400
    );

    // Switching to alloc stops the loop and removes the device (a backend
    // switch removes the old backend's objects); back to udp makes it again.
    let mut alloc = udp_snapshot(3, "10.50.9.0/24", "198.18.0.1", &[]);
    alloc.backend.as_mut().unwrap().r#type = kolach_proto::dataplane::BackendType::Alloc as i32;
    let e2 = e.clone();
    assert!(
        rt.run(async move { e2.apply(alloc, Origin::Controld).await })
            .applied
    );
    let st = e.status();
    assert_eq!((st.mode.as_str(), st.device.as_str()), ("none", ""));
    assert!(!ns.has_link("kolach0"));
    let mut snap = udp_snapshot(
        4,
        "10.50.9.0/24",
        "198.18.0.1",
        &[("10.50.7.0/24", "198.18.0.2")],
    );
    snap.mtu = 1400;
    let e2 = e.clone();
    assert!(
        rt.run(async move { e2.apply(snap, Origin::Controld).await })
            .applied
    );
    assert_eq!(e.status().mode, default_mode(OFFLOAD));
    assert_eq!(addresses(&ns, "kolach0"), ["10.50.9.0/16"]);

    // Graceful stop: the device and its address stay.
    let e2 = e.clone();
    rt.run(async move { e2.shutdown().await });
    drop(e);
    assert!(ns.has_link("kolach0"));
    assert_eq!(addresses(&ns, "kolach0"), ["10.50.9.0/16"]);

    // A new process reattaches and restores the saved snapshot.
    let e = new_engine(&rt, &dir);
    let e2 = e.clone();
    rt.run(async move { e2.restore().await });
    let st = e.status();
    assert!(st.has_snapshot);
    assert_eq!(st.applied_version.unwrap().generation, 4);
    assert_eq!(addresses(&ns, "kolach0"), ["10.50.9.0/16"]);
    // The same snapshot from controld is a no-op.
    let snap = udp_snapshot(
        4,
        "10.50.9.0/24",
        "198.18.0.1",
        &[("10.50.7.0/24", "198.18.0.2")],
    );
    let e2 = e.clone();
    let r = rt.run(async move { e2.apply(snap, Origin::Controld).await });
    assert_eq!((r.applied, r.reason.as_str()), (true, "already applied"));
    let e2 = e.clone();
    rt.run(async move { e2.shutdown().await });

    // --cleanup removes the device and the saved snapshot.
    let d = dir.0.clone();
    rt.run(async move {
        let k = RtNetlink::connect().unwrap();
        kolach_dataplaned::daemon::cleanup::cleanup(
            Ok(&k),
            &kolach_dataplaned::firewall::System,
            "kolach0",
            &d,
        )
        .await
    })
    .unwrap();
    assert!(!ns.has_link("kolach0"));
    assert!(!kolach_dataplaned::engine::store::path(&dir.0).exists());
}

#[test]
fn unleased_destination_gets_net_unreachable_from_the_kernel() {
    let ns = Netns::new("icmp");
    let rt = ns.runtime();
    let dir = TempDir::new("icmp-run");
    underlay(&ns, "198.18.0.1/24");
    let e = new_engine(&rt, &dir);
    apply(&rt, &e, one_peer(1));

    // ping from the host itself: source is the TUN address, and the answer
    // (from that same address) must get past the martian-source check.
    assert_unreachable_answered(&ns);
    eventually("icmp_unreachable_sent", || {
        e.status().counters.unwrap().icmp_unreachable_sent >= 1
    });
    let c = e.status().counters.unwrap();
    assert!(c.dropped["unleased"] >= 1);

    // TTL 1 to a leased peer: time exceeded, and nothing sent.
    let out = ns.exec(&["ping", "-n", "-c", "1", "-W", "2", "-t", "1", "10.50.7.1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Time to live exceeded"), "ping said: {text}");
    let c = e.status().counters.unwrap();
    assert!(c.dropped["ttl-exceeded"] >= 1);
    assert_eq!(c.udp_tx_packets, 0);

    // Outside the Network is not ours: the kernel never routes it to us, and
    // the TUN sees only our own overlay traffic.
    shutdown(&rt, &e);
}

#[test]
fn offload_off_frames_plainly_and_auto_turns_the_offloads_back_on() {
    let ns = Netns::new("tunoff");
    let rt = ns.runtime();
    let dir = TempDir::new("tunoff-run");
    underlay(&ns, "198.18.0.1/24");
    let engine = |offload| {
        let d = dir.0.clone();
        rt.run(async move {
            let k: Arc<dyn Kernel> = Arc::new(RtNetlink::connect().unwrap());
            let udp = Options {
                offload,
                ..Options::default()
            };
            Arc::new(
                Engine::new(
                    d,
                    "kolach0".into(),
                    k,
                    Arc::new(kolach_dataplaned::firewall::System),
                )
                .with_udp(udp),
            )
        })
    };

    let e = engine(Offload::Off);
    apply(&rt, &e, one_peer(1));
    assert_eq!(e.status().mode, default_mode("batch (sendmmsg, recvmmsg)"));
    assert_eq!(vnet_hdr(&ns), false);
    // The plain path still answers.
    assert_unreachable_answered(&ns);
    shutdown(&rt, &e);
    drop(e);

    // The next process, with offloads, reattaches with the vnet header.
    let e = engine(Offload::Auto);
    let e2 = e.clone();
    rt.run(async move { e2.restore().await });
    assert_eq!(e.status().mode, default_mode(OFFLOAD));
    assert_eq!(vnet_hdr(&ns), true);
    assert_unreachable_answered(&ns);
    shutdown(&rt, &e);
}

#[test]
fn a_handed_down_tun_fd_without_offloads_is_reopened_with_them() {
    // What an upgrade from an image without offloads hands over: a TUN fd
    // attached without IFF_VNET_HDR. Its framing cannot change, so the new
    // image reopens the device (and says so) rather than run without.
    let ns = Netns::new("tunreopen");
    let rt = ns.runtime();
    let dir = TempDir::new("tunreopen-run");
    underlay(&ns, "198.18.0.1/24");
    let (plain, framing) =
        rt.run(async { tun::open_persistent("kolach0", Framing::Plain).unwrap() });
    assert_eq!(framing, Framing::Plain);
    assert_eq!(tun::framing(&plain).unwrap(), Framing::Plain);
    let d = dir.0.clone();
    let e = rt.run(async move {
        let k: Arc<dyn Kernel> = Arc::new(RtNetlink::connect().unwrap());
        let fds = Inherited {
            tun: vec![plain],
            udp: vec![],
        };
        Arc::new(
            Engine::new(
                d,
                "kolach0".into(),
                k,
                Arc::new(kolach_dataplaned::firewall::System),
            )
            .resuming(&Carried::default(), fds),
        )
    });
    apply(&rt, &e, one_peer(1));
    // The device was made single-queue (as by an image from before
    // queues): it stays so, with one queue.
    assert_eq!(e.status().mode, OFFLOAD);
    assert_eq!(vnet_hdr(&ns), true);
    assert_unreachable_answered(&ns);
    shutdown(&rt, &e);
}

#[test]
fn icmp_answers_are_rate_limited_like_the_kernels() {
    let ns = Netns::new("icmprate");
    let rt = ns.runtime();
    let dir = TempDir::new("icmprate-run");
    underlay(&ns, "198.18.0.1/24");
    let e = new_engine(&rt, &dir);
    apply(&rt, &e, one_peer(1));
    // 5000 datagrams to an unleased overlay address as fast as we can; the
    // TUN queue (1000) takes at least a thousand of them.
    let start = std::time::Instant::now();
    rt.run(async {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..5000 {
            let _ = s.send_to(b"x", "10.50.99.1:9");
        }
    });
    // Until the dataplane has read all that reached it: the window in which
    // it could answer.
    let mut last = u64::MAX;
    let c = loop {
        let c = e.status().counters.unwrap();
        if c.dropped["unleased"] == last && last > 0 {
            break c;
        }
        assert!(start.elapsed().as_secs() < 10, "the dataplane read nothing");
        last = c.dropped["unleased"];
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let window = start.elapsed();
    let unleased = c.dropped["unleased"];
    // Burst 50, then 1000/s over that window.
    let bound = 50 + window.as_millis() as u64 + 1;
    eprintln!(
        "{unleased} of 5000 reached the dataplane within {window:?}, {} answered (bound {bound})",
        c.icmp_unreachable_sent
    );
    assert!(unleased >= 1000, "the TUN queue alone holds 1000");
    assert!(c.icmp_unreachable_sent >= 1, "nothing answered at all");
    assert!(c.icmp_unreachable_sent <= bound);
    shutdown(&rt, &e);
}
