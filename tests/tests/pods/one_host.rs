//! Many pods on one host: 100 ADDs, 10 at a time, get 100 addresses and DEL
//! leaves nothing behind; GC frees exactly what the runtime no longer lists;
//! controld and dataplaned restarts keep pods reachable and their addresses
//! theirs.

use std::collections::BTreeSet;

use anyhow::{anyhow, ensure, Result};
use kolach_testkit::cni::Call;
use kolach_testkit::lab::pods::CniPod;
use kolach_testkit::{netns, run, Backend, Lab};
use serde_json::json;

/// Links named `kol*` and routes of protocol 108 on host `n`.
fn leftovers(lab: &Lab, n: u8) -> Result<(Vec<String>, String)> {
    let ns = &lab.host(n).ns;
    let links = netns::ip(ns, &["-br", "link"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|l| l.split('@').next().unwrap_or(l))
        .filter(|l| l.starts_with("kol") && !l.starts_with("kolach"))
        .map(String::from)
        .collect();
    let routes = netns::ip(ns, &["route", "show", "proto", "108"])?;
    Ok((links, routes))
}

fn addresses(lab: &Lab, n: u8) -> Result<Vec<serde_json::Value>> {
    let out = lab.kolachctl(n, &["--json", "addresses"])?;
    ensure!(out.success(), "kolachctl addresses: {}", out.stderr);
    Ok(serde_json::from_str::<Vec<serde_json::Value>>(&out.stdout)?)
}

#[test]
fn a_hundred_pods_ten_at_a_time_then_gone() {
    run("pods100", |lab| {
        lab.mesh_for_pods(1, &Backend::Udp.config())?;
        let mut pods: Vec<CniPod> = Vec::new();
        for round in 0..10 {
            // Namespaces first (the lab records them), then 10 ADDs at once.
            let tags: Vec<String> = (0..10).map(|i| format!("{round}x{i}")).collect();
            for t in &tags {
                let ns = lab.cni_pod_ns(1, t);
                netns::create(&ns)?;
                lab.adopt_namespace(ns);
            }
            let lab_ref: &Lab = lab;
            let got: Vec<Result<CniPod>> = std::thread::scope(|s| {
                let hs: Vec<_> = tags
                    .iter()
                    .map(|t| s.spawn(move || lab_ref.cni_add_existing(1, t, None)))
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().expect("no panic"))
                    .collect()
            });
            for p in got {
                pods.push(p?);
            }
        }
        let distinct: BTreeSet<_> = pods.iter().map(|p| p.ip).collect();
        ensure!(
            distinct.len() == 100,
            "{} distinct addresses for 100 pods",
            distinct.len()
        );
        ensure!(
            addresses(lab, 1)?.len() == 100,
            "controld does not list 100 addresses"
        );
        // Two pods of the lot reach each other through their /32 routes.
        ensure!(
            lab.pod_pings(&pods[0], pods[99].ip),
            "pod to pod on one host"
        );

        for p in &pods {
            lab.cni_del(p)?;
        }
        let (links, routes) = leftovers(lab, 1)?;
        ensure!(links.is_empty(), "veths left after DEL: {links:?}");
        ensure!(
            routes.trim().is_empty(),
            "proto 108 routes left after DEL:\n{routes}"
        );
        ensure!(addresses(lab, 1)?.is_empty(), "allocations left after DEL");
        // DEL again, and DEL of something never added: both succeed.
        lab.cni_del(&pods[0])?;
        let mut never = pods[1].clone();
        never.container_id = "never-added".into();
        lab.cni_del(&never)?;
        Ok(())
    });
}

#[test]
fn gc_frees_exactly_what_the_runtime_no_longer_lists() {
    run("podsgc", |lab| {
        lab.mesh_for_pods(1, &Backend::Udp.config())?;
        let pods: Vec<CniPod> = (0..3)
            .map(|i| lab.cni_add(1, &format!("g{i}"), None))
            .collect::<Result<_>>()?;
        let mut config = lab.cni_config(1);
        config["cniVersion"] = json!("1.1.0");
        config["cni.dev/valid-attachments"] =
            json!([{"containerID": pods[0].container_id, "ifname": "eth0"}]);
        lab.cni(
            1,
            &Call {
                command: "GC",
                container_id: "",
                netns: "",
                ifname: "",
                args: "",
                config: &config,
            },
        )?
        .require("GC")?;
        let left = addresses(lab, 1)?;
        ensure!(left.len() == 1, "after GC: {left:?}");
        ensure!(
            left[0]["container_id"] == pods[0].container_id.as_str(),
            "GC kept {left:?}"
        );
        let (links, _) = leftovers(lab, 1)?;
        ensure!(
            links == vec![pods[0].host_end.clone()],
            "veths after GC: {links:?}"
        );
        Ok(())
    });
}

#[test]
fn restarts_keep_pods_reachable_and_del_still_frees() {
    run("podsrst", |lab| {
        lab.mesh_for_pods(2, &Backend::Udp.config())?;
        lab.create_pool(1, "red", "198.51.100.0/24", &[])?;
        let a = lab.cni_add(1, "a", Some("red"))?;
        let b = lab.cni_add(2, "b", None)?;
        lab.wait_dp_blocks(2, 1)?;
        ensure!(
            lab.pod_pings(&a, b.ip) && lab.pod_pings(&b, a.ip),
            "before the restarts"
        );

        lab.restart_controld(1)?;
        ensure!(
            lab.pod_pings(&a, b.ip) && lab.pod_pings(&b, a.ip),
            "after controld restarted"
        );
        // ADD again after the restart: the same address (allocations survive).
        let again = lab.cni_add(1, "a", Some("red"))?;
        ensure!(
            again.ip == a.ip,
            "ADD after restart gave {} instead of {}",
            again.ip,
            a.ip
        );

        let dp = &mut lab.host_mut(1).dataplaned;
        dp.stop_within(std::time::Duration::from_secs(5));
        dp.start()?;
        lab.wait_dp_blocks(2, 1)?;
        let mut ok = false;
        for _ in 0..10 {
            if lab.pod_pings(&a, b.ip) && lab.pod_pings(&b, a.ip) {
                ok = true;
                break;
            }
        }
        ensure!(
            ok,
            "pods do not reach each other after dataplaned restarted"
        );

        // controld restarted between ADD and DEL: DEL still frees.
        lab.restart_controld(1)?;
        lab.cni_del(&a)?;
        let left = addresses(lab, 1)?;
        ensure!(left.is_empty(), "after DEL: {left:?}");
        let (links, _) = leftovers(lab, 1)?;
        ensure!(links.is_empty(), "veths after DEL: {links:?}");
        lab.cni_del(&b).map_err(|e| anyhow!("{e:#}"))
    });
}

/// `kolachctl ipam check --min-age 0 <args>` on host 1: (passed, report).
fn check(lab: &Lab, args: &[&str]) -> Result<(bool, serde_json::Value)> {
    let mut full = vec!["ipam", "check", "--min-age", "0"];
    full.extend_from_slice(args);
    lab.kolachctl_json(1, &full)
}

#[test]
fn ipam_check_finds_and_releases_what_a_crashed_runtime_left() {
    run("podschk", |lab| {
        lab.mesh_for_pods(1, &Backend::Udp.config())?;
        let kept = lab.cni_add(1, "kept", None)?;
        let lost = lab.cni_add(1, "lost", None)?;
        // The runtime dies without DEL, and the pod's namespace goes (with it
        // the veth and the /32 route); the allocation stays.
        netns::delete(&lost.ns)?;
        let (ok, report) = check(lab, &[])?;
        ensure!(!ok, "ipam check passed with a stale allocation: {report}");
        let stale = report["stale"].as_array().cloned().unwrap_or_default();
        ensure!(stale.len() == 1, "stale: {report}");
        ensure!(
            stale[0]["address"] == lost.ip.to_string().as_str(),
            "stale: {report}"
        );
        let (ok, report) = check(lab, &["--release"])?;
        ensure!(ok, "ipam check --release failed: {report}");
        let left = addresses(lab, 1)?;
        ensure!(
            left.len() == 1 && left[0]["container_id"] == kept.container_id.as_str(),
            "after --release: {left:?}"
        );
        let (ok, report) = check(lab, &[])?;
        ensure!(ok, "still stale after --release: {report}");

        // A host end and a /32 route no allocation explains (a DEL that freed
        // the address but left the link): reported, and the check fails.
        let ns = &lab.host(1).ns;
        netns::ip(
            ns,
            &[
                "link",
                "add",
                "kol0123456789a",
                "type",
                "veth",
                "peer",
                "name",
                "kolorphanpeer",
            ],
        )?;
        netns::ip(ns, &["link", "set", "kol0123456789a", "up"])?;
        netns::ip(
            ns,
            &[
                "route",
                "add",
                "10.50.250.250/32",
                "dev",
                "kol0123456789a",
                "scope",
                "link",
            ],
        )?;
        let (ok, report) = check(lab, &[])?;
        ensure!(!ok, "ipam check passed with an orphan host end: {report}");
        ensure!(
            report["orphans"]["links"] == serde_json::json!(["kol0123456789a"]),
            "orphans: {report}"
        );
        ensure!(
            report["orphans"]["routes"][0]["address"] == "10.50.250.250",
            "orphans: {report}"
        );
        netns::ip(ns, &["link", "del", "kol0123456789a"])?;
        let (ok, report) = check(lab, &[])?;
        ensure!(ok, "orphans left after the link went: {report}");

        // etcd gives a block holding a pod's address to another host (a
        // blind write, as a broken tool or an operator would do it): the
        // pod is reported by name, nothing is released; the block put back
        // as this host's makes the check pass again.
        lab.create_pool(1, "grey", "198.51.100.0/24", &[])?;
        let grey = lab.cni_add(1, "grey", Some("grey"))?;
        let key = format!("{}/blocks/198.51.100.0-28", kolach_testkit::lab::PREFIX);
        let etcd = lab.etcdctl();
        let mine = etcd
            .get(&key)?
            .ok_or_else(|| anyhow!("no block key {key} after the ADD"))?;
        etcd.put(&key, r#"{"Pool":"grey","PublicIP":"198.18.250.1"}"#)?;
        let mut taken = serde_json::Value::Null;
        for _ in 0..50 {
            let (ok, report) = check(lab, &[])?;
            if !ok && report["blocks"][0]["problem"] == "other_host" {
                taken = report;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let issue = &taken["blocks"][0];
        ensure!(
            issue["etcd"] == "198.18.250.1"
                && issue["addresses"][0]
                    .as_str()
                    .is_some_and(|a| a.starts_with(&format!("{} ", grey.ip))),
            "block given to another host not reported: {taken}"
        );
        ensure!(addresses(lab, 1)?.len() == 2, "check released something");
        etcd.put(&key, &mine)?;
        let mut ok = false;
        for _ in 0..50 {
            if check(lab, &[])?.0 {
                ok = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        ensure!(ok, "block put back, still reported: {:?}", check(lab, &[])?);
        Ok(())
    });
}
