//! controld SIGKILLed in the middle of 50 concurrent ADDs, then started
//! again: no address is handed out twice, every ADD that succeeded keeps its
//! address (CHECK passes, `kolachctl addresses` lists it), and every ADD that
//! failed succeeds when the runtime tries again. Then 200 pods vanish without
//! DEL (their namespaces deleted behind the plugin's back): `kolachctl ipam
//! check` finds exactly them and `--release` frees them.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use kolach_testkit::cni::{Answer, Call};
use kolach_testkit::lab::pods::CniPod;
use kolach_testkit::{netns, run, Backend, Lab};

use super::{
    add_all, addresses, addresses_by_container, codes, log_count, own_blocks, pod_namespaces,
};
use super::{wait_ipam, Held};

const PODS: usize = 50;
/// The kill comes once controld has logged this many allocations (an ADD
/// that has its address needs controld no more).
const KILL_AFTER: usize = 10;
const VANISHED: usize = 200;
const ALLOCATED: &str = " allocated container=";

#[test]
fn controld_killed_mid_add_then_pods_gone_without_del() {
    run("podkill", |lab| {
        lab.mesh_for_pods(1, &Backend::Udp.config())?;
        lab.create_pool(1, "blue", "203.0.113.0/24", &["--block-len", "28"])?;
        killed_mid_add(lab)?;
        vanished_without_del(lab)
    });
}

fn check(lab: &Lab, p: &CniPod) -> Result<Answer> {
    let config = lab.cni_config(p.host);
    let path = p.netns_path();
    lab.cni(
        p.host,
        &Call {
            command: "CHECK",
            container_id: &p.container_id,
            netns: &path,
            ifname: &p.ifname,
            args: "",
            config: &config,
        },
    )
}

fn killed_mid_add(lab: &mut Lab) -> Result<()> {
    let tags: Vec<String> = (0..PODS).map(|i| format!("k{i}")).collect();
    pod_namespaces(lab, 1, &tags)?;
    let pid = lab.host(1).controld.pid().context("controld runs")?;
    let (succeeded, finished) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let started = Instant::now();
    let lab_ref: &Lab = lab;
    let (answers, killed) = std::thread::scope(|s| {
        let hs: Vec<_> = tags
            .iter()
            .map(|t| {
                let (succeeded, finished) = (&succeeded, &finished);
                s.spawn(move || {
                    let a = lab_ref.cni_add_answer(1, t, Some("blue"));
                    if a.as_ref().is_ok_and(Answer::ok) {
                        succeeded.fetch_add(1, Ordering::SeqCst);
                    }
                    finished.fetch_add(1, Ordering::SeqCst);
                    a
                })
            })
            .collect();
        let before = log_count(lab_ref, 1, ALLOCATED);
        while log_count(lab_ref, 1, ALLOCATED) < before + KILL_AFTER
            && finished.load(Ordering::SeqCst) < PODS
            && started.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: kill(2) on the lab's own child, not reaped yet.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        let killed = (
            started.elapsed(),
            log_count(lab_ref, 1, ALLOCATED) - before,
            succeeded.load(Ordering::SeqCst),
        );
        let answers: Vec<Result<Answer>> = hs
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect();
        (answers, killed)
    });
    let answers = answers.into_iter().collect::<Result<Vec<_>>>()?;
    let mut ok: Vec<CniPod> = Vec::new();
    let mut failed: Vec<(&String, &Answer)> = Vec::new();
    for (t, a) in tags.iter().zip(&answers) {
        if a.ok() {
            ok.push(lab.cni_pod(1, t, a)?);
        } else {
            failed.push((t, a));
        }
    }
    eprintln!(
        "controld SIGKILLed {:?} into {PODS} concurrent ADDs, after {} allocations ({} ADDs complete): {} succeeded, {} failed (CNI codes {:?})",
        killed.0,
        killed.1,
        killed.2,
        ok.len(),
        failed.len(),
        codes(&failed.iter().map(|(_, a)| *a).collect::<Vec<_>>()),
    );
    ensure!(
        !failed.is_empty(),
        "the kill came after every ADD had finished"
    );
    for (t, a) in &failed {
        ensure!(
            a.code() == Some(11),
            "ADD of {t} failed with other than 11 (try again later): {:?} {}",
            a.code(),
            a.msg()
        );
    }

    // Started again: what was answered is on disk.
    let host = lab.host_mut(1);
    host.controld.kill();
    host.controld.start()?;
    let back = wait_ipam(lab, 1, Duration::from_secs(20), "ready", |s| {
        s["ready"] == true
    })?;
    let after = addresses_by_container(lab, 1)?;
    for p in &ok {
        ensure!(
            after.get(&p.container_id) == Some(&p.ip),
            "{} got {} before the kill, controld now says {:?}",
            p.container_id,
            p.ip,
            after.get(&p.container_id)
        );
        let c = check(lab, p)?;
        ensure!(
            c.ok(),
            "CHECK of {}: {} {}",
            p.container_id,
            c.output.stdout,
            c.output.stderr
        );
    }
    // An ADD whose answer the kill swallowed may have its address on disk:
    // the retry gets that one back.
    let journaled: Vec<_> = failed
        .iter()
        .filter_map(|(t, _)| after.get(&lab.cni_container_id(1, t)).map(|ip| (*t, *ip)))
        .collect();
    let retry_tags: Vec<String> = failed.iter().map(|(t, _)| (*t).clone()).collect();
    let t = Instant::now();
    let retried = add_all(lab, 1, &retry_tags, Some("blue"), 8)?;
    let retry_took = t.elapsed();
    for (tag, a) in retry_tags.iter().zip(&retried) {
        ensure!(a.ok(), "retried ADD of {tag}: {:?} {}", a.code(), a.msg());
        if let Some((_, ip)) = journaled.iter().find(|(t, _)| *t == tag) {
            ensure!(
                a.ip() == Some(*ip),
                "retried ADD of {tag} gave {:?}, not its journaled {ip}",
                a.ip()
            );
        }
    }
    let all = addresses(lab, 1)?;
    let distinct: BTreeSet<_> = all.iter().map(|h| h.address).collect();
    ensure!(
        all.len() == PODS && distinct.len() == PODS,
        "{} allocations, {} distinct addresses for {PODS} pods",
        all.len(),
        distinct.len()
    );
    let blocks = own_blocks(lab, 1, "blue")?;
    ensure!(blocks.len() <= PODS.div_ceil(16) + 1, "blocks: {blocks:?}");
    eprintln!(
        "controld back (IPAM ready) {back:?} after its start; {} kept their addresses and pass CHECK; \
         {} of the {} failed ADDs had an address on disk and got it back; \
         the {} retries took {retry_took:?}; {PODS} pods, {PODS} distinct addresses, {} blocks of /28",
        ok.len(),
        journaled.len(),
        failed.len(),
        retry_tags.len(),
        blocks.len()
    );
    Ok(())
}

fn vanished_without_del(lab: &mut Lab) -> Result<()> {
    let tags: Vec<String> = (0..VANISHED).map(|i| format!("v{i}")).collect();
    let t = Instant::now();
    pod_namespaces(lab, 1, &tags)?;
    let answers = add_all(lab, 1, &tags, None, 8)?;
    for (tag, a) in tags.iter().zip(&answers) {
        ensure!(a.ok(), "ADD of {tag}: {:?} {}", a.code(), a.msg());
    }
    let added = t.elapsed();
    // The runtime goes without DEL, and so do the namespaces: the veths and
    // /32 routes vanish with them, the allocations stay.
    let t = Instant::now();
    for tag in &tags {
        netns::delete(&lab.cni_pod_ns(1, tag))?;
    }
    let removed = t.elapsed();
    let gone: BTreeSet<String> = tags.iter().map(|t| lab.cni_container_id(1, t)).collect();

    let t = Instant::now();
    let (ok, report) = lab.kolachctl_json(1, &["ipam", "check", "--min-age", "0"])?;
    let checked = t.elapsed();
    ensure!(!ok, "ipam check passed with {VANISHED} stale allocations");
    let stale: BTreeSet<String> = report["stale"]
        .as_array()
        .context("no stale list")?
        .iter()
        .filter_map(|s| s["container_id"].as_str().map(String::from))
        .collect();
    ensure!(
        stale == gone,
        "ipam check found {} stale, {} vanished; extra {:?}, missed {:?}",
        stale.len(),
        gone.len(),
        stale.difference(&gone).take(5).collect::<Vec<_>>(),
        gone.difference(&stale).take(5).collect::<Vec<_>>()
    );

    let t = Instant::now();
    let (ok, report) = lab.kolachctl_json(1, &["ipam", "check", "--min-age", "0", "--release"])?;
    let released = t.elapsed();
    ensure!(ok, "ipam check --release failed: {report}");
    let freed = report["stale"]
        .as_array()
        .map_or(0, |s| s.iter().filter(|r| r["released"] == true).count());
    ensure!(freed == VANISHED, "released {freed}: {report}");
    let left: Vec<Held> = addresses(lab, 1)?;
    ensure!(
        left.len() == PODS && left.iter().all(|h| !gone.contains(&h.container_id)),
        "after --release: {} allocations left",
        left.len()
    );
    let (ok, report) = lab.kolachctl_json(1, &["ipam", "check", "--min-age", "0"])?;
    ensure!(ok, "still stale after --release: {report}");
    eprintln!(
        "{VANISHED} pods added in {added:?}, their namespaces deleted in {removed:?}; \
         ipam check found all {VANISHED} stale (and nothing else) in {checked:?}; \
         --release freed {freed} in {released:?}; {} live allocations untouched",
        left.len()
    );
    Ok(())
}
