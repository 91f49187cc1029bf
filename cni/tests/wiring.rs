//! The built `kolach` plugin against a fake controld, run in a host namespace
//! as a runtime runs it; assertions on what the kernel shows (`ip -j`).
//! Needs root and network namespaces.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn addr_of(reply: &Reply) -> String {
    reply.ok()["ips"][0]["address"]
        .as_str()
        .expect("address")
        .to_string()
}

fn find(list: &[Value], pred: impl Fn(&Value) -> bool) -> Option<&Value> {
    list.iter().find(|v| pred(v))
}

fn ping(from: &kolach_testkit::netns::Netns, to: &str) -> bool {
    // A few tries: the host resolves the destination pod's MAC on the first packet.
    for _ in 0..3 {
        if from.exec(&["ping", "-c1", "-W1", to]).status.success() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Everything ADD makes, for one pod: pod end, its /32, routes, neighbour;
/// host end, its sysctls, the proto-108 route.
fn assert_wired(w: &World, pod: &kolach_testkit::netns::Netns, container: &str, reply: &Value) {
    let address = reply["ips"][0]["address"].as_str().unwrap();
    let ip = address.strip_suffix("/32").expect("a /32");
    let hname = host_end(container, "eth0");

    let hlink = &ip_json(&w.host, &["link", "show", "dev", &hname])[0];
    let hmac = hlink["address"].as_str().unwrap();
    assert_eq!(hlink["mtu"], MTU);
    assert!(
        hlink["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{hlink}"
    );
    assert_eq!(reply["interfaces"][0]["name"], hname.as_str());
    assert_eq!(reply["interfaces"][0]["mac"], hmac);
    assert!(reply["interfaces"][0].get("sandbox").is_none());

    let plink = &ip_json(pod, &["link", "show", "dev", "eth0"])[0];
    assert_eq!(plink["mtu"], MTU);
    assert!(
        plink["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{plink}"
    );
    assert_eq!(reply["interfaces"][1]["name"], "eth0");
    assert_eq!(reply["interfaces"][1]["mac"], plink["address"]);
    assert_eq!(reply["interfaces"][1]["sandbox"], netns_path(pod).as_str());
    assert_eq!(reply["ips"][0]["interface"], 1);
    assert_eq!(
        reply["routes"],
        serde_json::json!([{"dst":"0.0.0.0/0","gw":"169.254.1.1"}])
    );

    let addrs = ip_json(pod, &["-4", "addr", "show", "dev", "eth0"]);
    let infos = addrs[0]["addr_info"].as_array().unwrap();
    assert!(
        infos
            .iter()
            .any(|a| a["local"] == ip && a["prefixlen"] == 32),
        "{infos:?}"
    );

    let routes = ip_json(pod, &["-4", "route", "show"]);
    assert!(
        find(&routes, |r| r["dst"] == "169.254.1.1"
            && r["dev"] == "eth0"
            && r["scope"] == "link")
        .is_some(),
        "{routes:?}"
    );
    assert!(
        find(&routes, |r| r["dst"] == "default"
            && r["gateway"] == "169.254.1.1"
            && r["dev"] == "eth0")
        .is_some(),
        "{routes:?}"
    );

    let neigh = ip_json(pod, &["neigh", "show", "dev", "eth0"]);
    let gw = find(&neigh, |n| n["dst"] == "169.254.1.1").expect("neighbour 169.254.1.1");
    assert_eq!(gw["lladdr"], hmac);
    assert!(
        gw["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "PERMANENT"),
        "{gw}"
    );

    let host_routes = ip_json(&w.host, &["-4", "route", "show", "proto", "108"]);
    assert!(
        find(&host_routes, |r| r["dst"] == ip
            && r["dev"] == hname.as_str()
            && r["scope"] == "link")
        .is_some(),
        "{host_routes:?}"
    );
    assert_eq!(
        proc_sys(
            &w.host,
            &format!("/proc/sys/net/ipv4/conf/{hname}/proxy_arp")
        ),
        "1"
    );
    assert_eq!(
        proc_sys(
            &w.host,
            &format!("/proc/sys/net/ipv4/neigh/{hname}/proxy_delay")
        ),
        "0"
    );
    assert_eq!(proc_sys(&w.host, "/proc/sys/net/ipv4/ip_forward"), "1");
}

#[test]
fn add_wires_two_pods_that_reach_each_other() {
    let w = World::new("add");
    let ipam = w.controld();
    let (p1, p2) = (w.pod(1), w.pod(2));
    assert_eq!(proc_sys(&w.host, "/proc/sys/net/ipv4/ip_forward"), "0");

    let r1 = w.add("c1", &p1, "1.0.0");
    let r2 = w.add("c2", &p2, "1.0.0");
    assert_eq!(r1.ok()["cniVersion"], "1.0.0");
    assert!(r1.ok()["ips"][0].get("version").is_none());
    assert_eq!(
        addr_of(&r1),
        format!("{}/32", ipam.address_of("c1", "eth0").unwrap())
    );
    assert_ne!(addr_of(&r1), addr_of(&r2));
    assert_wired(&w, &p1, "c1", r1.ok());
    assert_wired(&w, &p2, "c2", r2.ok());
    assert_eq!(
        ipam.with(|s| s.allocs[&("c1".into(), "eth0".into())]
            .pod_namespace
            .clone()),
        "default",
        "CNI_ARGS reach controld"
    );

    let ip2 = addr_of(&r2).trim_end_matches("/32").to_string();
    let ip1 = addr_of(&r1).trim_end_matches("/32").to_string();
    assert!(ping(&p1, &ip2), "pod 1 cannot ping pod 2 at {ip2}");
    assert!(ping(&p2, &ip1), "pod 2 cannot ping pod 1 at {ip1}");
}

#[test]
fn add_twice_gives_the_same_answer() {
    let w = World::new("again");
    let _ipam = w.controld();
    let p = w.pod(1);
    let first = w.add("c1", &p, "0.3.1");
    assert_eq!(first.ok()["ips"][0]["version"], "4");
    let second = w.add("c1", &p, "0.3.1");
    assert_eq!(first.ok(), second.ok());
    assert_wired(&w, &p, "c1", second.ok());
    // The pod still has one address.
    let addrs = ip_json(&p, &["-4", "addr", "show", "dev", "eth0"]);
    assert_eq!(addrs[0]["addr_info"].as_array().unwrap().len(), 1);
}

#[test]
fn check_passes_then_names_what_is_missing() {
    let w = World::new("check");
    let _ipam = w.controld();
    let p = w.pod(1);
    w.add("c1", &p, "1.1.0").ok();
    for v in ["0.4.0", "1.0.0", "1.1.0"] {
        let r = w.simple("CHECK", "c1", &p, v);
        assert_eq!(r.code, Some(0), "{v}: {}", r.stdout);
        assert!(r.stdout.trim().is_empty());
    }
    p.ip(&["route", "del", "default"]);
    let (code, msg) = w.simple("CHECK", "c1", &p, "1.0.0").err();
    assert_eq!(code, 111);
    assert!(msg.contains("default via 169.254.1.1"), "{msg}");

    // An attachment controld does not know.
    let (code, msg) = w.simple("CHECK", "c9", &p, "1.0.0").err();
    assert_eq!(code, 101);
    assert_eq!(msg, "no address for container c9 ifname eth0");
}

#[test]
fn del_removes_everything_and_may_repeat() {
    let w = World::new("del");
    let ipam = w.controld();
    let p = w.pod(1);
    let r = w.add("c1", &p, "1.0.0");
    let ip = addr_of(&r).trim_end_matches("/32").to_string();
    let hname = host_end("c1", "eth0");
    assert!(has_link(&w.host, &hname));

    let d = w.simple("DEL", "c1", &p, "1.0.0");
    assert_eq!(d.code, Some(0), "{}", d.stdout);
    assert!(!has_link(&w.host, &hname));
    assert!(!has_link(&p, "eth0"));
    let host_routes = ip_json(&w.host, &["-4", "route", "show", "proto", "108"]);
    assert!(
        find(&host_routes, |r| r["dst"] == ip.as_str()).is_none(),
        "{host_routes:?}"
    );
    assert_eq!(ipam.address_of("c1", "eth0"), None);

    // Again, and for something never added, and without a namespace.
    assert_eq!(w.simple("DEL", "c1", &p, "1.0.0").code, Some(0));
    assert_eq!(w.simple("DEL", "never", &p, "0.3.0").code, Some(0));
    let r = w.run(
        &Call {
            command: "DEL",
            container: "c1",
            ifname: "eth0",
            netns: "",
            args: "",
        },
        &w.conf("1.0.0", ""),
    );
    assert_eq!(r.code, Some(0), "{}", r.stdout);
}

#[test]
fn del_without_controld_removes_links_and_asks_to_retry() {
    let w = World::new("delnoctl");
    let ipam = w.controld();
    let p = w.pod(1);
    w.add("c1", &p, "1.0.0").ok();
    drop(ipam);
    let (code, msg) = w.simple("DEL", "c1", &p, "1.0.0").err();
    assert_eq!(code, 11);
    assert_eq!(
        msg,
        format!(
            "kolach-controld is not running (no socket at {}/controld.sock)",
            w.run_dir.path().display()
        )
    );
    assert!(!has_link(&w.host, &host_end("c1", "eth0")));
    assert!(!has_link(&p, "eth0"));
}

#[test]
fn add_without_controld_is_try_again_later() {
    let w = World::new("addnoctl");
    let p = w.pod(1);
    let (code, msg) = w.add("c1", &p, "1.0.0").err();
    assert_eq!(code, 11);
    assert_eq!(
        msg,
        format!(
            "kolach-controld is not running (no socket at {}/controld.sock)",
            w.run_dir.path().display()
        )
    );
    assert!(!has_link(&w.host, &host_end("c1", "eth0")));
    assert!(!has_link(&p, "eth0"));
}

#[test]
fn failed_add_undoes_the_veth_and_the_address() {
    let w = World::new("undo");
    let ipam = w.controld();
    let p = w.pod(1);
    // Something else already holds eth0 in the pod.
    p.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
    ]);
    let (code, msg) = w.add("c1", &p, "1.0.0").err();
    assert_eq!(code, 110);
    assert!(msg.contains("eth0 already exists"), "{msg}");
    assert!(!has_link(&w.host, &host_end("c1", "eth0")));
    assert_eq!(ipam.address_of("c1", "eth0"), None, "released");
    assert!(ipam.with(|s| s.released.contains(&("c1".into(), "eth0".into()))));
}

#[test]
fn exhausted_pool_is_reported_with_controlds_words() {
    let w = World::new("full");
    let ipam = w.controld();
    let p = w.pod(1);
    ipam.with(|s| s.exhausted = true);
    let (code, msg) = w.add("c1", &p, "1.0.0").err();
    assert_eq!(code, 100);
    assert_eq!(msg, "no free address in pool default (198.19.18.0/24)");
    assert!(!has_link(&w.host, &host_end("c1", "eth0")));
}

#[test]
fn gc_frees_and_unwires_what_is_not_listed() {
    let w = World::new("gc");
    let ipam = w.controld();
    let pods = [w.pod(1), w.pod(2), w.pod(3)];
    for (i, p) in pods.iter().enumerate() {
        w.add(&format!("c{i}"), p, "1.1.0").ok();
    }
    let conf = w.conf(
        "1.1.0",
        r#""cni.dev/valid-attachments":[{"containerID":"c0","ifname":"eth0"}]"#,
    );
    let r = w.run(
        &Call {
            command: "GC",
            container: "",
            ifname: "",
            netns: "",
            args: "",
        },
        &conf,
    );
    assert_eq!(r.code, Some(0), "{} {}", r.stdout, r.stderr);
    assert!(ipam.address_of("c0", "eth0").is_some());
    assert_eq!(ipam.address_of("c1", "eth0"), None);
    assert_eq!(ipam.address_of("c2", "eth0"), None);
    assert!(has_link(&w.host, &host_end("c0", "eth0")));
    assert!(!has_link(&w.host, &host_end("c1", "eth0")));
    assert!(!has_link(&w.host, &host_end("c2", "eth0")));
    assert!(!has_link(&pods[1], "eth0"));
}

#[test]
fn status_follows_controld() {
    let w = World::new("status");
    let call = Call {
        command: "STATUS",
        container: "",
        ifname: "",
        netns: "",
        args: "",
    };
    let (code, msg) = w.run(&call, &w.conf("1.1.0", "")).err();
    assert_eq!(code, 50);
    assert!(msg.contains("kolach-controld is not running"), "{msg}");

    let ipam = w.controld();
    let r = w.run(&call, &w.conf("1.1.0", ""));
    assert_eq!(r.code, Some(0), "{}", r.stdout);
    assert!(r.stdout.trim().is_empty());

    ipam.with(|s| {
        s.ready = false;
        s.reason = "this host holds no lease yet".into();
    });
    let (code, msg) = w.run(&call, &w.conf("1.1.0", "")).err();
    assert_eq!((code, msg.as_str()), (50, "this host holds no lease yet"));

    // STATUS is a 1.1.0 command.
    let (code, _) = w.run(&call, &w.conf("1.0.0", "")).err();
    assert_eq!(code, 1);
}

#[test]
fn version_answers_with_a_dummy_netns() {
    let w = World::new("version");
    let r = w.run(
        &Call {
            command: "VERSION",
            container: "",
            ifname: "",
            netns: "dummy",
            args: "",
        },
        r#"{"cniVersion":"0.1.0"}"#,
    );
    let j = r.ok();
    assert_eq!(
        j["supportedVersions"],
        serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
fn config_mtu_wins_and_a_stale_host_end_is_replaced() {
    let w = World::new("mtu");
    let _ipam = w.controld();
    let p = w.pod(1);
    // A leftover with the host end's name whose peer is no pod's.
    let hname = host_end("c1", "eth0");
    w.host.ip(&[
        "link", "add", &hname, "type", "veth", "peer", "name", "stale0",
    ]);
    let r = w.run(
        &Call {
            command: "ADD",
            container: "c1",
            ifname: "eth0",
            netns: &netns_path(&p),
            args: "",
        },
        &w.conf("1.1.0", r#""mtu":1300"#),
    );
    let j = r.ok();
    assert_eq!(j["interfaces"][0]["mtu"], 1300);
    assert_eq!(j["interfaces"][1]["mtu"], 1300);
    assert_eq!(
        ip_json(&w.host, &["link", "show", "dev", &hname])[0]["mtu"],
        1300
    );
    assert_eq!(
        ip_json(&p, &["link", "show", "dev", "eth0"])[0]["mtu"],
        1300
    );
    assert!(!has_link(&w.host, "stale0"), "the leftover pair is gone");
    assert_eq!(w.simple("CHECK", "c1", &p, "1.1.0").code, Some(0));
}
