//! A host cut off from etcd past its lease TTL while a joiner takes its
//! block (pool "solo" has one block only): etcd never holds two live owners
//! of the block (a sampler reads the block keys all along), the joiner's pod
//! gets an address from it, and when the cut heals the old host reports the
//! lost block loudly (an error line, and `status` listing its two pods) and
//! never writes the key; once its pods are deleted the report is gone.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use ipnet::Ipv4Net;
use kolach_testkit::etcd::{Etcdctl, ETCD_IP};
use kolach_testkit::{lab, run, traffic::cutoff, Backend};

use super::{add_all, ipam_status, log_has, pod_namespaces, wait_ipam};

const TTL: Duration = Duration::from_secs(6);
const BLOCK: &str = "192.0.2.0/28";

fn blocks_prefix() -> String {
    format!("{}/blocks/", lab::PREFIX)
}

/// What the sampler saw of the block keys.
#[derive(Debug, Default)]
struct Seen {
    samples: usize,
    /// Every (block, PublicIP) in the order first seen.
    owners: Vec<(Ipv4Net, Ipv4Addr)>,
    violations: Vec<String>,
}

/// Reads `<prefix>/blocks/` every 100 ms until stopped; a sample with two
/// overlapping keys, or a key written over by another host (same create
/// revision, another PublicIP), or a block going back to an owner it had
/// before another took it, is a violation.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Seen>,
}

impl Sampler {
    fn start(ctl: Etcdctl) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut seen = Seen::default();
            let mut by_create: BTreeMap<(String, i64), Ipv4Addr> = BTreeMap::new();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(kvs) = ctl.get_prefix(&blocks_prefix()) {
                    seen.samples += 1;
                    let mut now: Vec<(Ipv4Net, Ipv4Addr)> = Vec::new();
                    for kv in &kvs {
                        let name = kv.key.rsplit('/').next().unwrap_or_default();
                        let net: Option<Ipv4Net> = name.replacen('-', "/", 1).parse().ok();
                        let ip: Option<Ipv4Addr> =
                            serde_json::from_str::<serde_json::Value>(&kv.value)
                                .ok()
                                .and_then(|v| v["PublicIP"].as_str()?.parse().ok());
                        let (Some(net), Some(ip)) = (net, ip) else {
                            seen.violations.push(format!("unreadable block key {kv:?}"));
                            continue;
                        };
                        if let Some(before) =
                            by_create.insert((kv.key.clone(), kv.create_revision), ip)
                        {
                            if before != ip {
                                seen.violations.push(format!(
                                    "{net} written over: {before} -> {ip} (create revision {})",
                                    kv.create_revision
                                ));
                            }
                        }
                        if let Some((other, _)) = now
                            .iter()
                            .find(|(o, _)| o.contains(&net.network()) || net.contains(&o.network()))
                        {
                            seen.violations
                                .push(format!("{net} overlaps {other} in one sample"));
                        }
                        now.push((net, ip));
                        match seen.owners.iter().rposition(|(b, _)| *b == net) {
                            Some(i) if seen.owners[i].1 == ip => {}
                            _ => {
                                if seen.owners.contains(&(net, ip)) {
                                    seen.violations.push(format!(
                                        "{net} went back to {ip} after another host held it"
                                    ));
                                }
                                seen.owners.push((net, ip));
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        });
        Sampler { stop, handle }
    }

    fn finish(self) -> Result<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().map_err(|_| anyhow!("sampler panicked"))
    }
}

#[test]
fn a_host_cut_off_past_its_ttl_reports_the_block_a_joiner_took() {
    run("podpart", |lab| {
        lab.opts.lease_ttl = Some(format!("{}s", TTL.as_secs()));
        // Ticks every second: a lost block is looked at soon after the heal.
        lab.opts.controld_args = vec!["--block-grace".into(), "4s".into()];
        lab.mesh_for_pods(1, &Backend::Udp.config())?;
        lab.create_pool(1, "solo", BLOCK, &["--block-len", "28"])?;
        let mine: Vec<String> = vec!["s0".into(), "s1".into()];
        pod_namespaces(lab, 1, &mine)?;
        let answers = add_all(lab, 1, &mine, Some("solo"), 1)?;
        let ips: Vec<Ipv4Addr> = answers
            .iter()
            .map(|a| a.ip().context("ADD in solo failed"))
            .collect::<Result<_>>()?;
        let key = format!("{}{}", blocks_prefix(), BLOCK.replace('/', "-"));
        ensure!(lab.etcdctl().get(&key)?.is_some(), "host1 holds no block");
        let sampler = Sampler::start(lab.etcdctl());

        // Cut off past the TTL: the lease, and with it the block, expire.
        cutoff::cut(&lab.host(1).ns, &[ETCD_IP.to_string()])?;
        let t = Instant::now();
        while lab.etcdctl().get(&key)?.is_some() {
            ensure!(
                t.elapsed() < TTL + Duration::from_secs(10),
                "the block outlived host1's lease"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let expired = t.elapsed();
        // A joiner takes the pool's only block.
        let n2 = lab.add_host()?;
        lab.start_host(n2)?;
        lab.wait_ready(n2)?;
        wait_ipam(lab, n2, Duration::from_secs(10), "ready", |s| {
            s["ready"] == true
        })?;
        let j = vec!["j0".to_string()];
        pod_namespaces(lab, n2, &j)?;
        let a = add_all(lab, n2, &j, Some("solo"), 1)?.remove(0);
        ensure!(a.ok(), "host2 ADD in solo: {:?} {}", a.code(), a.msg());
        let jip = a.ip().context("no address")?;
        let kv = lab
            .etcdctl()
            .get_prefix(&key)?
            .into_iter()
            .next()
            .context("no block key")?;
        ensure!(
            kv.value.contains("198.18.0.2"),
            "block {key} = {}",
            kv.value
        );
        let claimed = (kv.create_revision, kv.mod_revision);
        eprintln!(
            "host1 cut off: its block expired {expired:?} after the cut (TTL {TTL:?}); \
             host2 joined and took it, its pod got {jip} (host1's pods hold {ips:?})"
        );

        // Healed: host1 sees the block gone to host2 and says so.
        cutoff::heal(&lab.host(1).ns)?;
        let lost = |s: &serde_json::Value| {
            s["troubled_blocks"].as_array().is_some_and(|t| {
                t.len() == 1
                    && t[0]["trouble"] == "lost"
                    && t[0]["block"] == BLOCK
                    && t[0]["holder"] == "198.18.0.2"
                    && t[0]["pods"].as_array().is_some_and(|p| p.len() == 2)
            })
        };
        let reported = wait_ipam(
            lab,
            1,
            Duration::from_secs(30),
            "reporting the lost block",
            lost,
        )?;
        let st = ipam_status(lab, 1)?;
        let pods: Vec<&str> = st["troubled_blocks"][0]["pods"]
            .as_array()
            .context("pods")?
            .iter()
            .filter_map(|p| p["container_id"].as_str())
            .collect();
        let want: Vec<String> = mine.iter().map(|t| lab.cni_container_id(1, t)).collect();
        ensure!(pods == want, "status names {pods:?}, not {want:?}");
        ensure!(
            log_has(lab, 1, "LOST a block"),
            "no error line for the lost block"
        );
        let text = lab.kolachctl(1, &["status"])?.stdout;
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("lost block"))
            .with_context(|| format!("no lost block line in\n{text}"))?;
        eprintln!("host1 back: reported the lost block {reported:?} after the heal:\n{line}");

        // Its pods deleted, the report goes; the key stayed host2's throughout.
        std::thread::sleep(Duration::from_secs(2));
        for (t, a) in mine.iter().zip(&answers) {
            lab.cni_del(&lab.cni_pod(1, t, a)?)?;
        }
        wait_ipam(lab, 1, Duration::from_secs(10), "clear of troubles", |s| {
            s["troubled_blocks"].as_array().is_none_or(|t| t.is_empty())
        })?;
        ensure!(
            log_has(lab, 1, "block no longer troubled"),
            "no line for the resolved block"
        );
        let seen = sampler.finish()?;
        let kv = lab.etcdctl().get_prefix(&key)?;
        let kv = kv.first().context("host2's block vanished")?;
        ensure!(
            (kv.create_revision, kv.mod_revision) == claimed,
            "the block key was written after host2 claimed it: {kv:?}"
        );
        eprintln!(
            "block sampler: {} samples, owners in order {:?}, violations {:?}",
            seen.samples, seen.owners, seen.violations
        );
        ensure!(seen.samples > 50, "too few samples: {}", seen.samples);
        ensure!(
            seen.violations.is_empty(),
            "violations: {:?}",
            seen.violations
        );
        ensure!(
            seen.owners
                == vec![
                    (BLOCK.parse()?, Ipv4Addr::new(198, 18, 0, 1)),
                    (BLOCK.parse()?, Ipv4Addr::new(198, 18, 0, 2)),
                ],
            "owners {:?}",
            seen.owners
        );
        Ok(())
    });
}
