//! Garbage under `<prefix>/pools/` and `<prefix>/blocks/` (wrong types, a
//! bad name, overlapping subnets, a block in the Network or over another
//! host's block, values of 100 KB): each is told once in controld's log on
//! every host, in a line of reasonable length; no daemon crashes, no route
//! changes, and pods keep their addresses and reach each other.

use std::time::Duration;

use anyhow::{ensure, Result};
use kolach_testkit::lab::PREFIX;
use kolach_testkit::{netns, run, Backend, Lab};

/// Every IPv4 route of host `n`, all tables.
fn routes(lab: &Lab, n: u8) -> Result<String> {
    netns::ip(&lab.host(n).ns, &["-4", "route", "show", "table", "all"])
}

/// What host `n`'s controld logged since byte `from`.
fn logged_since(lab: &Lab, n: u8, from: u64) -> String {
    let text = std::fs::read(&lab.host(n).controld.log).unwrap_or_default();
    String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default()).into_owned()
}

fn log_len(lab: &Lab, n: u8) -> u64 {
    std::fs::metadata(&lab.host(n).controld.log).map_or(0, |m| m.len())
}

#[test]
fn garbage_in_pools_and_blocks_is_told_once_and_changes_nothing() {
    run("podsgbg", |lab| {
        lab.mesh_for_pods(2, &Backend::Udp.config())?;
        lab.create_pool(1, "blue", "203.0.113.0/24", &["--block-len", "28"])?;
        let a = lab.cni_add(1, "a", Some("blue"))?;
        let b = lab.cni_add(2, "b", Some("blue"))?;
        for n in [1, 2] {
            lab.wait_dp_blocks(n, 1)?;
        }
        ensure!(
            lab.pod_pings(&a, b.ip),
            "pods do not reach each other before"
        );
        let before = [routes(lab, 1)?, routes(lab, 2)?];
        let logs = [log_len(lab, 1), log_len(lab, 2)];
        let host2 = lab.host(2).ip.to_string();

        let deep = "[".repeat(100_000);
        let long = format!(
            r#"{{"Pool":"blue","PublicIP":"{host2}","Note":"{}"}}"#,
            "x".repeat(100_000)
        );
        let block_value = format!(r#"{{"Pool":"blue","PublicIP":"{host2}"}}"#);
        // (key under the prefix, value, what the log line names)
        let garbage: Vec<(&str, String, &str)> = vec![
            (
                "pools/wrongtype",
                r#"{"Subnets":"192.0.2.0/24","BlockLen":"28"}"#.into(),
                "pool=wrongtype",
            ),
            (
                "pools/overlap",
                r#"{"Subnets":["203.0.113.128/25"]}"#.into(),
                "pool=overlap",
            ),
            (
                "pools/innet",
                r#"{"Subnets":["10.50.200.0/24"]}"#.into(),
                "pool=innet",
            ),
            ("pools/deep", deep.clone(), "pool=deep"),
            (
                "pools/Bad_Name",
                r#"{"Subnets":["192.0.2.0/24"]}"#.into(),
                "pool=Bad_Name",
            ),
            ("blocks/not-a-block", block_value.clone(), "key=not-a-block"),
            ("blocks/192.0.2.0-28", "not json".into(), "key=192.0.2.0-28"),
            (
                "blocks/192.0.2.16-28",
                r#"{"Pool":5,"PublicIP":[]}"#.into(),
                "key=192.0.2.16-28",
            ),
            ("blocks/192.0.2.32-28", deep, "key=192.0.2.32-28"),
            // Valid JSON, but 100 KB: refused or not, never echoed whole.
            ("blocks/192.0.2.48-28", long, "192.0.2.48"),
            // Over host 1's block, claimed later: host 1's stays routed.
            (
                "blocks/203.0.113.0-27",
                block_value.clone(),
                "203.0.113.0/27",
            ),
            // Inside the overlay Network.
            ("blocks/10.50.250.0-28", block_value, "10.50.250.0/28"),
        ];
        let etcd = lab.etcdctl();
        for (key, value, _) in &garbage {
            etcd.put(&format!("{PREFIX}/{key}"), value)?;
        }
        // Events that make controld look at everything again: a good pool
        // appears, a pod comes and goes.
        etcd.put(
            &format!("{PREFIX}/pools/green"),
            r#"{"Subnets":["198.51.100.0/24"]}"#,
        )?;
        let c = lab.cni_add(1, "c", Some("blue"))?;
        lab.cni_del(&c)?;
        std::thread::sleep(Duration::from_secs(3));

        for n in [1, 2] {
            let out = lab.kolachctl(n, &["status"])?;
            ensure!(out.success(), "host{n}: kolachctl status: {}", out.stderr);
            let log = logged_since(lab, n, logs[n as usize - 1]);
            for (key, _, needle) in &garbage {
                let lines: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
                ensure!(
                    lines.len() == 1,
                    "host{n}: {key}: {} log lines naming {needle}, want 1:\n{}",
                    lines.len(),
                    lines.join("\n")
                );
            }
            let longest = log.lines().map(str::len).max().unwrap_or(0);
            ensure!(longest < 2_000, "host{n}: a log line of {longest} bytes");
            ensure!(
                !log.contains("panicked"),
                "host{n}: controld panicked:\n{log}"
            );
        }
        let after = [routes(lab, 1)?, routes(lab, 2)?];
        ensure!(
            before == after,
            "routes changed:\nbefore {before:#?}\nafter {after:#?}"
        );
        ensure!(
            lab.pod_pings(&a, b.ip),
            "pods do not reach each other after"
        );
        // The good pool next to the garbage is in use.
        let d = lab.cni_add(2, "d", Some("green"))?;
        ensure!(
            "198.51.100.0/24".parse::<ipnet::Ipv4Net>()?.contains(&d.ip),
            "pool green gave {}",
            d.ip
        );
        Ok(())
    });
}
