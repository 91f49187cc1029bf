//! Pods through the CNI plugin (DESIGN §10): `n` pods ADDed, then DELeted,
//! `parallel` calls at a time, on a one-host udp lab of their own; the
//! plugin is executed the way a runtime does (a fresh process in the host's
//! namespace, `CNI_*` in its environment, the config on stdin), so each
//! latency is the plugin's whole call: exec, controld's answer, the wiring.
//! Then `allocations` addresses are taken straight from controld's IPAM
//! service (no wiring) out of a pool big enough for them, to read its
//! resident memory with that many.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::bench::procfs;
use crate::bench::stats;
use kolach_testkit::cni;
use kolach_testkit::lab::backend::Backend;
use kolach_testkit::{netns, Lab};

/// Pods ADDed and DELeted one at a time first.
const SERIAL: usize = 50;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PodBench {
    pub pods: u32,
    pub parallel: u32,
    pub add: Latency,
    pub del: Latency,
    /// The first `serial` pods ADDed and DELeted one at a time before: what
    /// one call costs with no other competing for the two CPUs.
    pub serial: u32,
    pub add_serial: Latency,
    pub del_serial: Latency,
    /// Pods added per second, the ADD phase's wall time.
    pub add_pods_per_s: f64,
    pub del_pods_per_s: f64,
    pub allocations: u32,
    /// controld's resident memory with `allocations` addresses given out.
    pub controld_rss_kb: u64,
    pub controld_hwm_kb: u64,
}

fn latency(mut ms: Vec<f64>) -> Latency {
    ms.sort_by(f64::total_cmp);
    Latency {
        p50_ms: stats::percentile(&ms, 50.0).unwrap_or(f64::NAN),
        p99_ms: stats::percentile(&ms, 99.0).unwrap_or(f64::NAN),
        max_ms: ms.last().copied().unwrap_or(f64::NAN),
    }
}

/// One plugin call from a thread inside the host's namespace.
fn call(command: &str, id: &str, netns: &str, config: &[u8], cni_path: &str) -> Result<Duration> {
    let exe = format!(
        "{}/{}",
        cni_path.split(':').next().unwrap_or("."),
        cni::PLUGIN
    );
    let started = Instant::now();
    let mut child = Command::new(&exe)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", "")
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {exe}"))?;
    use std::io::Write;
    child.stdin.take().expect("piped").write_all(config)?;
    let out = child.wait_with_output()?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "CNI {command} {id}: {} {}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

/// Runs `command` for every pod, `parallel` at a time; returns each call's
/// time and the phase's wall time.
fn phase(
    lab: &Lab,
    command: &str,
    pods: &[(String, String)],
    parallel: u32,
) -> Result<(Vec<f64>, Duration)> {
    let config = serde_json::to_vec(&lab.cni_config(1))?;
    let cni_path = cni::cni_path()?;
    let next = AtomicUsize::new(0);
    let times = Mutex::new(Vec::with_capacity(pods.len()));
    let host = lab.host(1).ns.clone();
    let started = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..parallel)
            .map(|_| {
                s.spawn(|| {
                    netns::within(&host, || loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((id, path)) = pods.get(i) else {
                            return Ok(());
                        };
                        let t = call(command, id, path, &config, &cni_path)?;
                        times.lock().expect("no panic").push(t.as_secs_f64() * 1e3);
                    })
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow!("worker panicked"))??;
        }
        Ok(())
    })?;
    let wall = started.elapsed();
    Ok((times.into_inner().expect("no panic"), wall))
}

/// The whole measurement on a lab of its own (torn down on return).
pub fn run(pods: u32, parallel: u32, allocations: u32) -> Result<PodBench> {
    let mut lab = Lab::new("benchpods")?;
    lab.mesh_for_pods(1, &Backend::Udp.config())?;
    let list: Vec<(String, String)> = (0..pods)
        .map(|i| {
            let tag = format!("b{i}");
            let ns = lab.cni_pod_ns(1, &tag);
            (format!("bench-{i}"), ns)
        })
        .collect();
    for (_, ns) in &list {
        netns::create(ns)?;
        lab.adopt_namespace(ns.clone());
    }
    let with_paths: Vec<(String, String)> = list
        .iter()
        .map(|(id, ns)| (id.clone(), netns::netns_path(ns).display().to_string()))
        .collect();
    let serial = with_paths.len().min(SERIAL);
    let (add_serial, _) = phase(&lab, "ADD", &with_paths[..serial], 1)?;
    let (del_serial, _) = phase(&lab, "DEL", &with_paths[..serial], 1)?;
    let (add, add_wall) = phase(&lab, "ADD", &with_paths, parallel)?;
    let (del, del_wall) = phase(&lab, "DEL", &with_paths, parallel)?;
    let (rss, hwm) = allocate_many(&lab, allocations)?;
    let n = f64::from(pods);
    Ok(PodBench {
        pods,
        parallel,
        add: latency(add),
        del: latency(del),
        serial: serial as u32,
        add_serial: latency(add_serial),
        del_serial: latency(del_serial),
        add_pods_per_s: n / add_wall.as_secs_f64(),
        del_pods_per_s: n / del_wall.as_secs_f64(),
        allocations,
        controld_rss_kb: rss,
        controld_hwm_kb: hwm,
    })
}

/// `k` addresses from controld directly; returns its (VmRSS, VmHWM) then.
fn allocate_many(lab: &Lab, k: u32) -> Result<(u64, u64)> {
    use kolach_proto::ipam::{
        ipam_client::IpamClient, AllocateRequest, Attachment, CreatePoolRequest,
    };
    let sock = lab.host(1).controld_socket();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let ch = kolach_proto::uds::connect(&sock, "kolach-controld").await?;
        let mut c = IpamClient::new(ch);
        // /24 blocks of a /18: 64 blocks, room for 16,384 addresses.
        let pool: ipnet::Ipv4Net = "100.64.0.0/18".parse()?;
        c.create_pool(CreatePoolRequest {
            name: "bench".into(),
            subnets: vec![pool.into()],
            block_len: 24,
            max_blocks_per_host: 64,
        })
        .await
        .context("creating the bench pool")?;
        for i in 0..k {
            c.allocate(AllocateRequest {
                attachment: Some(Attachment {
                    container_id: format!("rss-{i}"),
                    ifname: "eth0".into(),
                }),
                network: "bench".into(),
                pool: "bench".into(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("allocation {i} of {k}"))?;
        }
        anyhow::Ok(())
    })?;
    let pid = lab
        .host(1)
        .controld
        .pid()
        .ok_or_else(|| anyhow!("controld has no pid"))?;
    let (hwm, rss) = procfs::process_rss_kb(pid)?;
    Ok((rss, hwm))
}
